"""Multi-track data: Slakh-like pieces with stems, rolls and notes; MAPS-like piano domains.

Modules, from symbols to data:
    taxonomy     instrument classes and the source hierarchy (versioned YAML)
    pieces       music21 corpus scores, MIDI files, tidying for rendering
    arranger     seeded procedural pieces with band roles
    instruments  GM program and soundfont per part
    rolls        note tables and piano rolls
    render       stems and rolls of a piece (the slakh-like Ray Data worker)
    pianos       piano-domain renderings and the note dictionary (its worker)
    plans        build plans of both data sets
    segments     segmenting and saliency filters, on read
    data         reading built data sets
"""
