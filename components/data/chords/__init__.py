"""The MusicSlots chord data sets: recipe (which chords), plan, render (notes -> chord spectrograms), reader."""
