"""The property probe as a pipeline stage: a trained run's frozen model -> probe accuracy.

Finds the training run in MLflow (or the best child of a sweep), loads its best
weights from its final checkpoint, extracts representations of every split in a
Ray task (with the run's own CPU/GPU resources), trains the linear probe and logs
the accuracies into a child run linked to the training run.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

from components.errors import PartitaError
from orchestration.config import ExperimentConfig, flatten, validate
from orchestration.tracking import PARENT_TAG, RunLogger, client, find_or_create_run, tracking_uri
from orchestration.trainer import CHECKPOINT_TAG


def resolve_training_run(run_id: str, uri: str | None = None):
    """The MLflow training run behind `run_id`; for a sweep's parent, its best finished child."""
    from components.models.registry import get_family

    mlflow = client(uri)
    try:
        run = mlflow.get_run(run_id)
    except Exception:
        raise PartitaError(f"MLflow run {run_id!r} does not exist at {uri or tracking_uri()}", "pass the id of a training run or a sweep's parent run") from None
    if run.data.tags.get("partita.kind") == "sweep":
        children = [
            r for r in mlflow.search_runs([run.info.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{run_id}'")
            if r.info.status == "FINISHED" and CHECKPOINT_TAG in r.data.tags
        ]
        if not children:
            raise PartitaError(f"sweep run {run_id} has no finished training runs", "run the sweep to completion first")
        family = get_family(children[0].data.tags["partita.family"])
        key = f"val/{family.selection_metric}"
        scored = [r for r in children if key in r.data.metrics]
        pick = max if family.selection_mode == "max" else min
        return pick(scored, key=lambda r: r.data.metrics[key])
    if CHECKPOINT_TAG not in run.data.tags or "partita.family" not in run.data.tags:
        raise PartitaError(
            f"MLflow run {run_id} is not a finished partita training run (no checkpoint recorded)",
            "pass the id of a finished training run, or of a sweep's parent run to probe its best run",
        )
    return run


def _probe_task(config_tree: dict, checkpoint_uri: str, data_path: str) -> dict:
    """On a Ray worker or in a sweep trial's process: extract representations of every split, train and score the probe."""
    import ray.train

    from components.data.catalog import open_dataset
    from components.models.registry import get_family
    from components.probes import accuracy, check_probe_data, extract, train_probe

    config = validate(config_tree)
    family = get_family(config.model.family)
    data = open_dataset(Path(data_path))
    check_probe_data(data.spec, config.data.name)
    model = family.build(config.model, data.spec)
    with ray.train.Checkpoint(checkpoint_uri).as_directory() as folder:
        state = torch.load(Path(folder) / "state.pt", map_location="cpu", weights_only=False)
    model.load_state_dict(state["best_state"] or state["model"])
    device = torch.device("cuda" if config.train.use_gpu and torch.cuda.is_available() else "cpu")
    model.to(device).eval()
    torch.manual_seed(config.train.seed)
    splits = {name: extract(family, model, data.split(name).batches(256)) for name in ("train", "valid", "test")}
    probe = train_probe(splits["train"], data.spec, config.probe, seed=config.train.seed)
    return {name: accuracy(probe, splits[name]) for name in ("valid", "test")}


def probe_run(run_id: str, probe_overrides: dict | None = None, uri: str | None = None, in_process: bool = False) -> dict:
    """Probe a training run (or a sweep's best run); returns {"run_id", "valid", "test"} accuracies.

    `in_process`: probe here rather than in a Ray task of its own; a sweep trial that trained in its own
    process holds that CPU, and with every CPU held by such trials a task asking for one would wait forever."""
    import ray

    from components.models.registry import all_families, get_family
    from orchestration.data_build import dataset_dir
    from orchestration.runtime import init_ray

    uri = uri or tracking_uri()
    run = resolve_training_run(run_id, uri)
    family = get_family(run.data.tags["partita.family"])
    if not family.has_representation:
        raise PartitaError(
            f"run {run.info.run_id} is a {family.name} model, which has no representation to probe",
            f"probe a run of a family with a representation: {', '.join(n for n, f in all_families().items() if f.has_representation)}",
        )
    with tempfile.TemporaryDirectory() as folder:
        config_path = client(uri).download_artifacts(run.info.run_id, "config.json", folder)
        tree = json.loads(Path(config_path).read_text())
    for key, value in (probe_overrides or {}).items():
        tree.setdefault("probe", {})[key] = value
    config: ExperimentConfig = validate(tree)

    task = (config.to_dict(), run.data.tags[CHECKPOINT_TAG], str(dataset_dir(config.data)))
    if in_process:
        scores = _probe_task(*task)
    else:
        init_ray()
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        resources = {
            "num_cpus": config.train.cpus_per_worker,
            "num_gpus": 1 if config.train.use_gpu else 0,
            # inside a Tune trial: schedule outside the trial's own (memory-only) placement group
            "scheduling_strategy": PlacementGroupSchedulingStrategy(placement_group=None),
        }
        scores = ray.get(ray.remote(_probe_task).options(**resources).remote(*task))

    probe_id = find_or_create_run(
        run.info.experiment_id,
        f"probe:{run.info.run_id}",
        f"probe of {run.info.run_name}",
        {PARENT_TAG: run.info.run_id, "partita.kind": "probe", "partita.family": family.name},
        uri,
    )
    logger = RunLogger(probe_id, uri)
    logger.params({f"probe.{k}": str(v) for k, v in flatten(config.to_dict()["probe"]).items()} | {"probed_run": run.info.run_id})
    logger.metrics({f"probe/{split}/{name}": value for split, values in scores.items() for name, value in values.items()}, 0)
    logger.finish("FINISHED")
    return {"run_id": probe_id, "probed_run": run.info.run_id, **scores}
