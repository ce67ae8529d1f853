"""Data set names, their config, and the dispatch to each data kind's plan and reader."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from components.data.build_plan import BuildPlan
from components.data.chords.recipe import CHORD_DATASETS, ChordRecipe
from components.data.manifest import recipe_hash
from components.data.multitrack.recipe import MultitrackRecipe
from components.data.pianos.recipe import PianoDomainsRecipe
from components.errors import PartitaError
from components.schema import StrictModel

SLAKH_LIKE, PIANO_DOMAINS = "slakh-like", "piano-domains"
KNOWN_DATASETS = (*CHORD_DATASETS, SLAKH_LIKE, PIANO_DOMAINS)


class DataConfig(StrictModel):
    name: str = Field(description="data set name: " + ", ".join(KNOWN_DATASETS))
    root: str | None = Field(None, description="folder of built data sets (default $PARTITA_HOME/data)")
    jsb_json: str | None = Field(None, description="path of czhuang's jsb-chorales-quarter.json")
    chords: ChordRecipe = ChordRecipe()
    multitrack: MultitrackRecipe = MultitrackRecipe()
    pianos: PianoDomainsRecipe = PianoDomainsRecipe()

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in KNOWN_DATASETS:
            raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(KNOWN_DATASETS)}")
        return name

    def recipe(self) -> StrictModel:
        """The recipe section this kind of set is built from."""
        return {SLAKH_LIKE: self.multitrack, PIANO_DOMAINS: self.pianos}.get(self.name, self.chords)

    def folder_name(self) -> str:
        """`name` for the default recipe, `name-<recipe hash>` for any other.

        Sets of one kind built to different recipes (a smoke preset's six pieces, a resized cpu set, the default)
        then live side by side: running a smoke test never replaces the default build, and switching back to a
        recipe finds its set still built.
        """
        recipe = self.recipe()
        if recipe == type(recipe)():
            return self.name
        return f"{self.name}-{recipe_hash(recipe.model_dump(mode='json'))[:8]}"


def plan(config: DataConfig, sources: Path) -> BuildPlan:
    """The build plan of a data set; `sources` caches downloaded or derived source files."""
    # each kind's planner loads only when used: music21 and pretty_midi are slow to import
    if config.name == SLAKH_LIKE:
        from components.data.multitrack.plan import plan_slakh_like

        return plan_slakh_like(config.name, config.multitrack, sources)
    if config.name == PIANO_DOMAINS:
        from components.data.pianos.plan import plan_piano_domains

        return plan_piano_domains(config.name, config.pianos, sources)
    from components.data.chords.plan import plan_chords

    return plan_chords(config.name, config.chords, config.jsb_json, sources)


def open_dataset(path: Path):
    """A built data set ready for training: `.spec` (DataSpec) and `.split(name)`.

    Each data kind has its reader; a split has `len()`, `batch(index)` and
    `batches(batch_size, limit)` yielding the dict-of-tensors batches its model
    families consume.
    """
    from components.data.chords.reader import ChordData
    from components.data.manifest import read_manifest

    readers = {"chords": ChordData}
    kind = read_manifest(path).get("kind")
    if kind not in readers:
        raise PartitaError(f"{path} holds a {kind!r} data set, which no trainable reader handles yet", "train on a chord data set")
    return readers[kind](path)
