"""Data: every kind of data set in the same shape, and what they share.

Each kind is a package with the same four modules:
    recipe   what decides a set's content (a typed config the manifest records)
    plan     the build plan: work items per split and the worker that renders them
    render   the worker: synthesis and features of a batch of work items
    reader   reading a built set back
Kinds:
    chords       the MusicSlots chord sets (JSB, JazzNet)
    multitrack   slakh-like pieces with stems, rolls and notes (plus their sources:
                 music21 scores, the arranger, instruments, taxonomies, segments)
    pianos       MAPS-like piano domains (Kelz)
Shared:
    catalog      data set names, DataConfig, dispatch to each kind's plan and reader
    build_plan   the BuildPlan that orchestration.data_build runs on Ray Data
    manifest     data set folders, integrity checks, atomic publishing
    splits       a split's Parquet files and rows, as the manifest lists them
    synthesis    FluidSynth rendering; soundfonts: finding and fingerprinting them
    features     dB mel spectrograms (torchaudio)
Dependencies point one way: kinds import the shared modules (pianos also multitrack's
pieces and rolls), the catalog imports the kinds, nothing imports the catalog but
orchestration.
"""
