"""MAPS-like piano domains (Kelz): recipe, plan, render (renderings and the note dictionary), reader."""
