"""The data a training run reads: a set in memory (chord sets, Kelz), or a multi-track view streamed by Ray Data.

For a family that declares a view (`family.view(config.model)`), Ray Data reads
the built pieces of the train split, and CPU actors cut, filter, mix and (by
default) featurise them (`ExampleStage`); Ray Train splits that stream across its
workers (`datasets=` + `get_dataset_shard`), and each worker batches it with a
seeded local shuffle buffer. Validation and test examples are fixed and cached
(components.data.multitrack.fixed). A family may make its own examples from the pieces
(`ModelFamily.example_maker`); the actors then rebuild its maker from the family's name and
model config, and its examples reach the model unfeaturised. The train loop sees one interface either way:

    spec                      what `family.build` receives (DataSpec or ViewSpec)
    train_batches(step)       an endless iterator of training batches on the device
    eval_splits[name]         rank 0: valid/test splits with `batches(size, limit)` and `batch(index)`
    prepare(batch)            an evaluation batch on the device, featurised
    state() / resume(state)   the data position, kept in checkpoints

Order: the pieces are read in the manifest's file order, pass after pass (`stream_passes`), examples
come out of the actors in that order (preserve_order), and each worker shuffles within a buffer of
`view.shuffle_buffer` examples seeded by (train.seed, epoch). A resumed run skips
the batches its epoch had consumed, so with one worker its order equals the
uninterrupted run's; with several, which worker receives which example is decided
by Ray Data at run time, so the order is not reproduced exactly.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Iterator

import torch

from components.data.manifest import read_manifest
from components.errors import PartitaError
from orchestration import paths

TRAIN = "train"
PASS_MARGIN = 2  # a run's stream budgets for views that keep only half an example per piece


def view_of(config):
    """The view of the run's family, or None for a chord-set family."""
    from components.models.registry import get_family

    return get_family(config.model.family).view(config.model)


def check_data_kind(config, data_path: Path) -> None:
    """A view family needs a multi-track set and a multi-track set a view family; the view must fit the set."""
    from components.data.multitrack.examples import check_view

    view, kind = view_of(config), read_manifest(data_path).get("kind")
    if view is not None and kind != "multitrack":
        raise PartitaError(
            f"model family {config.model.family} trains on multi-track pieces, but {data_path.name} is a {kind} data set",
            "pass --dataset slakh-like",
        )
    if view is None and kind == "multitrack":
        raise PartitaError(
            f"model family {config.model.family} declares no multi-track view, so it cannot train on {data_path.name}",
            "pass the data set the family trains on (a chord set such as jsb-multi), or a multi-track family such as mask_inference",
        )
    if view is not None:
        check_view(data_path, view)


def family_maker(family: str, model: dict, dataset_dir: str, cache_dir: str) -> "ExampleMaker | None":
    """A family's own example maker (`ModelFamily.example_maker`), rebuilt from its name and model config dump:
    what a Ray Data actor can be given (plain data, no live objects)."""
    from components.models.registry import get_family

    owner = get_family(family)
    return owner.example_maker(owner.config_class.model_validate(model), Path(dataset_dir), Path(cache_dir))


def cache_dir() -> Path:
    """Where fixed examples and what example makers derive from a whole set are kept between processes."""
    return paths.data_root() / "cache"


def stream_passes(config, pieces: int) -> int:
    """Passes over the train pieces that one Ray Data execution makes: enough for the whole run if each piece yields
    at least half an example (PASS_MARGIN).

    Restarting the stream every epoch restarted its actors, and on a 32-piece set the
    trainer then waited on data 74% of its time; a single execution over many passes
    starts them once. Passes beyond the run are never read (the stream is lazy), so the margin costs
    only the list of locations; a view keeping fewer examples than pieces (short pieces without a
    salient pair: 70 from 80 in the ingest benchmark) had exhausted a one-per-piece budget near the
    run's end and restarted its actors there. A run that still exhausts it starts another execution.
    """
    return max(1, math.ceil(PASS_MARGIN * config.train.steps * config.train.batch_size / max(1, pieces)))


def train_datasets(config, data_path: Path, passes: int | None = None) -> dict:
    """Ray Data datasets for the TorchTrainer's `datasets=`: {"train": the example stream}, or {} for chord sets.

    The stream makes `passes` passes over the pieces (default: `stream_passes`); each pass
    draws its own stems for the mixes (the seed is (train.seed, pass)), so later passes are
    new mixes of the same segments rather than repeats.
    """
    import ray.data

    from components.data.multitrack.featurize import ExampleStage, piece_locations
    from components.data.splits import files

    view = view_of(config)
    if view is None:
        return {}
    manifest = read_manifest(data_path)
    # the driver lists the pieces (no read tasks to schedule); each actor reads the pieces it is given
    locations = piece_locations(files(data_path, TRAIN, "multitrack"))
    passes = passes or stream_passes(config, len(locations))
    pieces = ray.data.from_items([location | {"pass": index} for index in range(passes) for location in locations])
    examples = pieces.map_batches(
        ExampleStage,
        fn_constructor_kwargs={
            "view": view.model_dump(mode="json"),
            "seed": config.train.seed,
            "sample_rate": manifest["sample_rate"],
            # plain data, so each actor rebuilds the family's own example maker, if it has one
            "own_maker": functools.partial(family_maker, config.model.family, config.model.model_dump(mode="json"), str(data_path), str(cache_dir())),
        },
        batch_size=1,  # a piece at a time: the actor yields its examples, memory holds one piece
        compute=ray.data.ActorPoolStrategy(size=config.train.data_actors),
        num_cpus=1,
    )
    examples.context.execution_options.preserve_order = True  # as dataset_config() sets it for Ray Train
    return {TRAIN: examples}


def dataset_config():
    """Split the train stream across workers, in a reproducible order."""
    import ray.train
    from ray.data import ExecutionOptions

    return ray.train.DataConfig(datasets_to_split=[TRAIN], execution_options=ExecutionOptions(preserve_order=True))


def training_data(loop_config: dict, config, session, per_worker: int):
    view = view_of(config)
    data_path = Path(loop_config["data_path"])
    if view is None:
        return InMemoryTrainingData(data_path, config, session, per_worker)
    return ViewTrainingData(data_path, config, view, session, per_worker)


class InMemoryTrainingData:
    """A set read into memory (chord sets; a family's own reader, `open_data`); batch `step` is a seeded function of the step, so resuming is exact."""

    def __init__(self, data_path: Path, config, session, per_worker: int):
        from components.data.catalog import open_dataset
        from components.models.registry import get_family

        data = get_family(config.model.family).open_data(config.model, data_path) or open_dataset(data_path)
        self.spec, self.train = data.spec, data.split(TRAIN)
        self.seed, self.session, self.per_worker = config.train.seed, session, per_worker
        if len(self.train) < per_worker * session.world:
            raise PartitaError(
                f"the train split has {len(self.train)} examples, fewer than one batch of {config.train.batch_size}",
                "lower train.batch_size or build a bigger data set",
            )
        self.eval_splits = {name: data.split(name) for name in ("valid", "test")} if session.rank == 0 else {}

    def train_batches(self, step: int) -> Iterator[dict]:
        from orchestration.train_loop import batch_indices, to_device

        while True:
            index = batch_indices(len(self.train), self.per_worker, self.seed, step, self.session.rank, self.session.world)
            yield to_device(self.train.batch(index), self.session.device)
            step += 1

    def prepare(self, batch: dict) -> dict:
        from orchestration.train_loop import to_device

        return to_device(batch, self.session.device)

    def state(self) -> None:
        return None

    def resume(self, state) -> None:
        pass


class ViewTrainingData:
    """A multi-track view: the train stream from Ray Data, fixed cached valid/test examples."""

    def __init__(self, data_path: Path, config, view, session, per_worker: int):
        from components.data.multitrack.featurize import ViewFeaturizer
        from components.data.multitrack.fixed import load_fixed
        from components.models.registry import get_family
        from components.models.base import ViewSpec

        manifest = read_manifest(data_path)
        rate = manifest["sample_rate"]
        self.spec = ViewSpec(sample_rate=rate, classes=tuple(manifest["taxonomies"]["classes"]["classes"]))
        self.view, self.seed, self.session, self.per_worker = view, config.train.seed, session, per_worker
        device = session.device
        cache = cache_dir()
        own = get_family(config.model.family).example_maker(config.model, data_path, cache)
        # a family's own examples are featurised by its model
        self.eval_featurizer = ViewFeaturizer(view, rate, keep_waveforms=True).to(device) if own is None else None
        self.train_featurizer = ViewFeaturizer(view, rate).to(device) if own is None and view.featurise_on == "trainer" else None
        self.eval_splits = {name: load_fixed(data_path, name, view, self.seed, cache, own) for name in ("valid", "test")} if session.rank == 0 else {}
        for name, split in self.eval_splits.items():
            if not len(split):
                kept = f"no segment with {view.sources} salient stems" if own is None else f"no segment that model family {config.model.family} makes an example of"
                raise PartitaError(f"the {name} split of {data_path.name} has no example for this view ({kept})", "build more pieces or relax model.view")
        self.epoch, self.consumed = 0, 0  # batches of this epoch already trained on

    def train_batches(self, step: int) -> Iterator[dict]:
        from orchestration.train_loop import to_device

        shard = self.session.dataset_shard(TRAIN)
        while True:
            seen = 0
            batches = shard.iter_torch_batches(
                batch_size=self.per_worker,
                local_shuffle_buffer_size=self.view.shuffle_buffer,
                local_shuffle_seed=self.seed * 1_000_003 + self.epoch,
                drop_last=True,
                device=self.session.device,
            )
            for batch in batches:
                seen += 1
                if seen <= self.consumed:  # resuming: these were trained on before the restart
                    continue
                self.consumed = seen
                batch = {key: value for key, value in batch.items() if key not in ("piece", "start")}
                yield self.train_featurizer(to_device(batch, self.session.device)) if self.train_featurizer else batch
            if seen == 0:
                raise PartitaError(
                    f"the train split yields no batch of {self.per_worker} examples for this view",
                    "build more pieces, lower train.batch_size or relax model.view",
                )
            self.epoch, self.consumed = self.epoch + 1, 0

    @torch.no_grad()
    def prepare(self, batch: dict) -> dict:
        from orchestration.train_loop import to_device

        batch = to_device(batch, self.session.device)
        return self.eval_featurizer(batch) if self.eval_featurizer else batch

    def state(self) -> dict:
        return {"epoch": self.epoch, "consumed": self.consumed}

    def resume(self, state: dict | None) -> None:
        if state:
            self.epoch, self.consumed = state["epoch"], state["consumed"]
