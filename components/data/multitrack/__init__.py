"""Slakh-like multi-track data: pieces with stems, rolls and notes.

Modules, from symbols to data:
    taxonomy     instrument classes and the source hierarchy (versioned YAML in components/taxonomies)
    pieces       music21 corpus scores, MIDI files, tidying for rendering (pianos use them too)
    arranger     seeded procedural pieces with band roles
    instruments  GM program and soundfont per part
    rolls        note tables and piano rolls
    recipe       what decides a set's content
    plan         its build plan
    render       stems and rolls of a piece (the Ray Data worker)
    reader       reading a built set, a piece at a time
    segments     segmenting and saliency filters, on read
"""
