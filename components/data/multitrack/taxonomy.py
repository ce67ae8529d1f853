"""Instrument taxonomies over General MIDI programs, loaded from versioned YAML files.

Two kinds, both bundled in components/taxonomies/ (or given as a path):

- a class taxonomy (Jointist's 39 classes): class name -> programs;
- a hierarchy (hierarchical separation): group -> family -> leaf -> programs.

Programs are GM numbers 0..127 plus DRUMS (128) for the drum kit on channel 10.
Loading checks that every program 0..128 is mapped exactly once, so a mistyped
file fails when it is loaded, not as a silently unlabelled stem.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from numbers import Integral
from pathlib import Path

import yaml

from components.data.manifest import sha256_file
from components.errors import PartitaError

DRUMS = 128  # pseudo-program of the GM drum kit
PROGRAMS = range(DRUMS + 1)
BUNDLED = Path(__file__).resolve().parents[2] / "taxonomies"


def class_key(name: str) -> str:
    """A class name as a metric-key and file-name fragment: 'Electric Guitar' -> 'electric_guitar'."""
    return name.lower().replace(" ", "_")


def taxonomy_path(name_or_path: str) -> Path:
    """A bundled taxonomy by name ('jointist-39') or a YAML file by path."""
    path = Path(name_or_path).expanduser()
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise PartitaError(f"taxonomy file {str(path)!r} does not exist", "pass the path of an existing YAML file")
        return path.resolve()
    path = BUNDLED / f"{name_or_path}.yaml"
    if not path.is_file():
        bundled = ", ".join(sorted(p.stem for p in BUNDLED.glob("*.yaml")))
        raise PartitaError(f"unknown taxonomy {name_or_path!r}", f"use a bundled one ({bundled}) or a path to a YAML file")
    return path


@dataclass(frozen=True)
class ClassTaxonomy:
    name: str
    version: int
    sha256: str
    classes: tuple[str, ...]
    program_class: tuple[int, ...]  # program 0..128 -> class index

    def class_of(self, program: int) -> int:
        """Class index of a GM program (DRUMS for the kit)."""
        if not isinstance(program, Integral) or program not in PROGRAMS:
            raise PartitaError(f"unknown program {program!r} in taxonomy {self.name}", f"use a GM program 0..127, or {DRUMS} for drums")
        return self.program_class[int(program)]

    def index(self, name: str) -> int:
        if name not in self.classes:
            raise PartitaError(f"unknown instrument class {name!r} in taxonomy {self.name}", f"use one of: {', '.join(self.classes)}")
        return self.classes.index(name)


@dataclass(frozen=True)
class Hierarchy:
    name: str
    version: int
    sha256: str
    leaves: tuple[str, ...]
    parents: dict[str, str]  # leaf -> family, family -> group
    program_leaf: tuple[int, ...]  # program 0..128 -> leaf index

    @property
    def families(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.parents[leaf] for leaf in self.leaves))

    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.parents[family] for family in self.families))

    def leaf_of(self, program: int) -> str:
        if not isinstance(program, Integral) or program not in PROGRAMS:
            raise PartitaError(f"unknown program {program!r} in hierarchy {self.name}", f"use a GM program 0..127, or {DRUMS} for drums")
        return self.leaves[self.program_leaf[int(program)]]

    def path(self, leaf: str) -> tuple[str, str, str]:
        """(leaf, family, group): the levels a query for `leaf` is separated at."""
        self._check(leaf)
        family = self.parents[leaf]
        return leaf, family, self.parents[family]

    def leaves_under(self, node: str) -> tuple[str, ...]:
        """The leaves whose sum is `node` (a leaf, family or group)."""
        self._check(node)
        return tuple(leaf for leaf in self.leaves if node in self.path(leaf))

    def _check(self, node: str) -> None:
        if node not in self.parents and node not in self.groups:
            raise PartitaError(
                f"unknown hierarchy node {node!r} in {self.name}",
                f"use a leaf, family or group: {', '.join(self.leaves + self.families + self.groups)}",
            )


def load_classes(name_or_path: str = "jointist-39") -> ClassTaxonomy:
    path = taxonomy_path(name_or_path)
    return _load_classes(path, sha256_file(path))


def load_hierarchy(name_or_path: str = "hierarchy-18") -> Hierarchy:
    path = taxonomy_path(name_or_path)
    return _load_hierarchy(path, sha256_file(path))


@lru_cache(maxsize=None)  # keyed by content: an edited file is read again
def _load_classes(path: Path, sha256: str) -> ClassTaxonomy:
    content = _read(path, "classes")
    classes = content["classes"]
    owner = _assign(path, {str(name): programs for name, programs in classes.items()})
    names = tuple(str(name) for name in classes)
    return ClassTaxonomy(
        name=str(content["name"]),
        version=int(content["version"]),
        sha256=sha256,
        classes=names,
        program_class=tuple(names.index(owner[p]) for p in PROGRAMS),
    )


@lru_cache(maxsize=None)
def _load_hierarchy(path: Path, sha256: str) -> Hierarchy:
    content = _read(path, "groups")
    parents: dict[str, str] = {}
    leaves: dict[str, list] = {}
    seen: set[str] = set()

    def unique(node) -> str:
        if str(node) in seen:
            raise PartitaError(f"taxonomy {path.name}: node {node!r} appears twice", "give every group, family and leaf its own name")
        seen.add(str(node))
        return str(node)

    for group, families in content["groups"].items():
        group = unique(group)
        for family, members in _mapping(path, families, f"group {group!r}").items():
            family = unique(family)
            parents[family] = group
            for leaf, programs in _mapping(path, members, f"family {family!r}").items():
                leaf = unique(leaf)
                parents[leaf] = family
                leaves[leaf] = programs
    owner = _assign(path, leaves)
    names = tuple(leaves)
    return Hierarchy(
        name=str(content["name"]),
        version=int(content["version"]),
        sha256=sha256,
        leaves=names,
        parents=parents,
        program_leaf=tuple(names.index(owner[p]) for p in PROGRAMS),
    )


def _read(path: Path, body: str) -> dict:
    try:
        content = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise PartitaError(f"taxonomy {path.name} is not valid YAML ({err})", "fix the file's syntax") from None
    if not isinstance(content, dict) or not {"name", "version", body} <= set(content):
        raise PartitaError(f"taxonomy {path.name} needs the keys name, version and {body}", f"see {BUNDLED} for examples")
    _mapping(path, content[body], body)
    return content


def _mapping(path: Path, value, what: str) -> dict:
    if not isinstance(value, dict) or not value:
        raise PartitaError(f"taxonomy {path.name}: {what} must be a non-empty mapping", f"see {BUNDLED} for examples")
    return value


def _assign(path: Path, members: dict[str, list]) -> dict[int, str]:
    """program -> owning name; every program 0..128 exactly once."""
    owner: dict[int, str] = {}
    for name, programs in members.items():
        if not isinstance(programs, list) or not programs:
            raise PartitaError(f"taxonomy {path.name}: {name!r} must list its programs", "write e.g. [0, 1, 2, 3]")
        for program in programs:
            if not isinstance(program, int) or program not in PROGRAMS:
                raise PartitaError(f"taxonomy {path.name}: {name!r} lists unknown program {program!r}", f"use GM programs 0..127 and {DRUMS} for drums")
            if program in owner:
                raise PartitaError(f"taxonomy {path.name}: program {program} is in both {owner[program]!r} and {name!r}", "map every program once")
            owner[program] = name
    missing = [p for p in PROGRAMS if p not in owner]
    if missing:
        raise PartitaError(f"taxonomy {path.name}: programs {missing} are not mapped", "map every program 0..128 exactly once")
    return owner
