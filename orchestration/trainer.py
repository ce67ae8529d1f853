"""One training run of any model family on Ray Train, tracked as one MLflow run.

`train()` runs on the driver (or inside a Tune trial): it opens or resumes the
MLflow run, builds a TorchTrainer around `train_loop.train_loop_per_worker` and
turns the result into a dict of final metrics, or into an error the user can act on.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from components.data.manifest import read_manifest
from components.errors import PartitaError
from orchestration import paths
from orchestration.config import ExperimentConfig
from orchestration.data_build import dataset_dir
from orchestration.tracking import PARENT_TAG, RunLogger, find_or_create_run, run_record, tracking_uri
from orchestration.train_loop import OUTCOME, train_loop_per_worker

CHECKPOINT_TAG = "partita.checkpoint"  # the final checkpoint: best weights for probes and reports


class RunFailed(PartitaError):
    """A training run ended without finishing (non-finite loss, worker errors)."""


def storage_path(config: ExperimentConfig) -> str:
    return config.train.storage_path or str(paths.runs_root() / "train")


def run_folder_name(run_key: str) -> str:
    """Ray Train run name: deterministic in the run key, so a restart resumes it."""
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", run_key)[:200]


def train(
    config: ExperimentConfig,
    *,
    run_key: str,
    run_name: str,
    experiment_id: str,
    parent_run_id: str | None = None,
    in_tune: bool = False,
    resume_only: bool = False,
) -> dict:
    """Train to the end (or resume and finish); returns the run id and final metrics."""
    import ray.train
    from ray.train.torch import TorchTrainer

    data_path = dataset_dir(config.data)
    manifest = read_manifest(data_path)
    storage = storage_path(config)
    folder = run_folder_name(run_key)
    if resume_only and not _has_checkpoint(Path(storage) / folder):
        raise PartitaError(f"no checkpoint to resume for run {run_key!r} under {storage}", "drop --resume to start a fresh run")

    params, tags = run_record(config.to_dict(), manifest)
    tags |= {"partita.family": config.model.family, "partita.dataset": config.data.name, "partita.storage": f"{storage}/{folder}"}
    if parent_run_id:
        tags[PARENT_TAG] = parent_run_id
    uri = tracking_uri()
    run_id = find_or_create_run(experiment_id, run_key, run_name, tags, uri)
    logger = RunLogger(run_id, uri)
    logger.params(params)
    logger.dataset(manifest, data_path)
    logger.json(config.to_dict(), "config.json")

    callbacks = []
    if in_tune:
        from ray.tune.integration.ray_train import TuneReportCallback

        callbacks.append(TuneReportCallback())
    train_config = config.train
    resources = {"CPU": train_config.cpus_per_worker} | ({"GPU": 1} if train_config.use_gpu else {})
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": config.to_dict(), "data_path": str(data_path), "run_id": run_id, "tracking_uri": uri},
        scaling_config=ray.train.ScalingConfig(
            num_workers=train_config.num_workers, use_gpu=train_config.use_gpu, resources_per_worker=resources
        ),
        run_config=ray.train.RunConfig(
            name=folder,
            storage_path=storage,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            failure_config=ray.train.FailureConfig(max_failures=train_config.max_failures),
            callbacks=callbacks,
        ),
    )
    try:
        result = trainer.fit()
    except ray.train.TrainingFailedError as err:
        reason = _root_cause(err)
        logger.finish("FAILED", reason)
        raise RunFailed(f"run {run_name} failed: {reason}", f"see the run's log and MLflow run {run_id}") from None
    outcome = _outcome(result)
    if outcome.get("status") != "finished":
        reason = outcome.get("reason", "the run ended without a final checkpoint")
        logger.finish("FAILED", reason)
        raise RunFailed(f"run {run_name} stopped: {reason}", f"MLflow run {run_id} has the curves up to step {outcome.get('step')}")
    logger.tags({CHECKPOINT_TAG: f"{storage}/{folder}/{Path(result.checkpoint.path).name}"})
    logger.finish("FINISHED")
    return {"run_id": run_id, **outcome}


def _has_checkpoint(run_folder: Path) -> bool:
    return any(run_folder.glob("checkpoint_*/state.pt")) if run_folder.is_dir() else False


def _outcome(result) -> dict:
    if result.checkpoint is None:
        return {}
    with result.checkpoint.as_directory() as folder:
        path = Path(folder) / OUTCOME
        return json.loads(path.read_text()) if path.is_file() else {}


def _root_cause(error: BaseException) -> str:
    """The innermost worker error's message, without Ray's wrapping."""
    failures = getattr(error, "worker_failures", None)
    if failures:
        inner = next(iter(failures.values()))
        cause = getattr(inner, "cause", None) or inner
        return f"{type(cause).__name__}: {cause}".splitlines()[0][:2000]
    return str(error).splitlines()[0][:2000]
