"""Instrument taxonomies: the bundled files and the validation of broken ones."""

from __future__ import annotations

import pytest

from components.data.multitrack.taxonomy import DRUMS, load_classes, load_hierarchy
from components.errors import PartitaError


def test_jointist_classes_follow_the_table():
    classes = load_classes("jointist-39")
    assert len(classes.classes) == 39 and len(classes.program_class) == 129
    name = lambda program: classes.classes[classes.class_of(program)]  # noqa: E731
    assert [name(p) for p in (0, 3, 4, 21, 22, 23, 43, 55, 59, 69, 70, 127, DRUMS)] == [
        "Piano", "Piano", "Electric Piano", "Accordion", "Harmonica", "Accordion", "Contrabass",
        "Strings", "Trumpet", "Horn", "Bassoon", "Sound Effects", "Drums",
    ]


def test_hierarchy_shape_and_paths():
    hierarchy = load_hierarchy("hierarchy-18")
    assert (len(hierarchy.groups), len(hierarchy.families), len(hierarchy.leaves)) == (4, 7, 18)
    assert hierarchy.path(hierarchy.leaf_of(33)) == ("electric and synth basses", "basses", "bass")
    assert hierarchy.path(hierarchy.leaf_of(DRUMS)) == ("drums", "drums and percussion", "percussion")
    # every leaf lies under exactly one group, and the groups cover all leaves
    under = [leaf for group in hierarchy.groups for leaf in hierarchy.leaves_under(group)]
    assert sorted(under) == sorted(hierarchy.leaves)


def test_unknown_program_and_class_are_named():
    classes, hierarchy = load_classes(), load_hierarchy()
    with pytest.raises(PartitaError, match="unknown program 129"):
        classes.class_of(129)
    with pytest.raises(PartitaError, match="unknown program -1"):
        hierarchy.leaf_of(-1)
    with pytest.raises(PartitaError, match="unknown instrument class 'Kazoo'") as err:
        classes.index("Kazoo")
    assert "Piano" in err.value.fix
    with pytest.raises(PartitaError, match="unknown hierarchy node 'woodwind'"):
        hierarchy.leaves_under("woodwind")
    with pytest.raises(PartitaError, match="unknown taxonomy 'jointist-40'"):
        load_classes("jointist-40")


def _classes_file(tmp_path, body: str):
    path = tmp_path / "classes.yaml"
    path.write_text("name: test\nversion: 1\nclasses:\n" + body)
    return str(path)


def test_class_file_must_map_every_program_once(tmp_path):
    everything = "  Rest: [" + ", ".join(map(str, range(2, 129))) + "]\n"
    assert load_classes(_classes_file(tmp_path, "  A: [0]\n  B: [1]\n" + everything)).classes == ("A", "B", "Rest")
    with pytest.raises(PartitaError, match=r"program 1 is in both 'A' and 'B'"):
        load_classes(_classes_file(tmp_path, "  A: [0, 1]\n  B: [1]\n" + everything))
    with pytest.raises(PartitaError, match=r"programs \[1\] are not mapped"):
        load_classes(_classes_file(tmp_path, "  A: [0]\n" + everything))
    with pytest.raises(PartitaError, match="'A' lists unknown program 200"):
        load_classes(_classes_file(tmp_path, "  A: [0, 200]\n  B: [1]\n" + everything))


def test_hierarchy_file_needs_unique_nodes(tmp_path):
    path = tmp_path / "tree.yaml"
    rest = ", ".join(map(str, range(1, 129)))
    path.write_text(f"name: t\nversion: 1\ngroups:\n  bass:\n    bass:\n      low: [0]\n      other: [{rest}]\n")
    with pytest.raises(PartitaError, match="node 'bass' appears twice"):
        load_hierarchy(str(path))
    path.write_text(f"name: t\nversion: 1\ngroups:\n  g:\n    f:\n      low: [0]\n      other: [{rest}]\n")
    assert load_hierarchy(str(path)).leaves_under("g") == ("low", "other")


def test_class_keys_are_the_names_in_lower_snake_case():
    from components.data.multitrack.taxonomy import class_key

    assert [class_key(name) for name in ("Electric Guitar", "Piano", "Synth Pad")] == ["electric_guitar", "piano", "synth_pad"]
