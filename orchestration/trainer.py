"""One training run of any model family on Ray Train, tracked as one MLflow run.

`train()` runs on the driver (or inside a Tune trial): it opens or resumes the
MLflow run, builds a TorchTrainer around `train_loop.train_loop_per_worker` (or, for
a single-worker sweep trial, runs `train_loop.run_loop` in the trial's own process)
and turns the result into a dict of final metrics, or into an error the user can act on.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import ray.train

from components.data.manifest import read_manifest
from components.errors import PartitaError
from orchestration import paths
from orchestration.config import ExperimentConfig
from orchestration.data_build import dataset_dir
from orchestration.runtime import check_capacity, check_visible_everywhere
from orchestration.tracking import PARENT_TAG, RunLogger, find_or_create_run, run_record, tracking_uri
from orchestration.train_loop import OUTCOME, run_loop, train_loop_per_worker
from orchestration.train_sessions import TrialSession, checkpoints
from orchestration.view_stream import check_data_kind, dataset_config, train_datasets

CHECKPOINT_TAG = "partita.checkpoint"  # the final checkpoint: best weights for probes and reports


class RunFailed(PartitaError):
    """A training run ended without finishing (non-finite loss, worker errors)."""


def storage_path(config: ExperimentConfig) -> str:
    return config.train.storage_path or str(paths.runs_root() / "train")


def run_folder_name(run_key: str) -> str:
    """Ray Train run name: deterministic in the run key, so a restart resumes it."""
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", run_key)[:200]


def trains_in_trial(config: ExperimentConfig) -> bool:
    """Whether a sweep trial runs its training in its own process rather than on a TorchTrainer.

    One worker needs no process group; sparing the controller and worker processes is most
    of a short trial's fixed cost. Checkpoints are then written by the trial itself, to a
    filesystem path (a shared volume on clusters); s3:// and the like stay with Ray Train.
    """
    return config.train.num_workers == 1 and "://" not in storage_path(config)


def preflight(config: ExperimentConfig, data_path: Path) -> None:
    """Before any training: the cluster has the workers' CPUs (or GPUs), and every node sees the data and storage."""
    train_config = config.train
    kind, each = ("GPU", 1) if train_config.use_gpu else ("CPU", train_config.cpus_per_worker)
    what = f"{train_config.num_workers * each} {kind} for train.num_workers={train_config.num_workers} x {each} {kind}"
    check_capacity(kind, each, train_config.num_workers, what, train_config.capacity_wait_s)
    check_visible_everywhere(
        data_path / "manifest.json", (data_path / "manifest.json").read_text(), "the data set folder",
        "build the data set on storage every node mounts (PARTITA_HOME or PARTITA_DATA on the shared volume)",
    )
    storage = storage_path(config)
    if "://" not in storage:
        marker = Path(storage) / f".visible-from-{ray.get_runtime_context().get_node_id()[:12]}"
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(str(time.time_ns()))
        try:
            check_visible_everywhere(
                marker, marker.read_text(), "the run storage",
                "set train.storage_path to a folder every node mounts (on KubeRay the shared volume, /mnt/partita/runs) or an s3:// URI",
            )
        finally:
            marker.unlink(missing_ok=True)


def record_failure(run_id: str, uri: str, what: str) -> None:
    """Count a failure the run recovers from (a lost node, a killed worker) and keep its cause on the run."""
    logger = RunLogger(run_id, uri)
    count = int(logger.client.get_run(run_id).data.tags.get("partita.failures", 0)) + 1
    logger.tags({"partita.failures": count, f"partita.failure.{count}": what[:5000]})


class FailureRecorder(ray.train.UserCallback):
    """Runs in the Ray Train controller: records each worker-group failure before Ray Train restarts from the last checkpoint."""

    def __init__(self, run_id: str, uri: str):
        self.run_id, self.uri = run_id, uri

    def after_exception(self, run_context, worker_exceptions: dict) -> None:
        what = "; ".join(f"rank {rank}: {_first_line(error)}" for rank, error in sorted(worker_exceptions.items()))
        record_failure(self.run_id, self.uri, what)


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
    started = time.time()
    data_path = dataset_dir(config.data)
    manifest = read_manifest(data_path)
    check_data_kind(config, data_path)
    storage = storage_path(config)
    folder = run_folder_name(run_key)
    if resume_only and not _has_checkpoint(Path(storage) / folder):
        raise PartitaError(f"no checkpoint to resume for run {run_key!r} under {storage}", "drop --resume to start a fresh run")
    if not in_tune:
        preflight(config, data_path)  # a sweep checks once, before its first trial

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

    loop_config = {"config": config.to_dict(), "data_path": str(data_path), "run_id": run_id, "tracking_uri": uri, "started": started}
    try:
        if in_tune and trains_in_trial(config):
            checkpoint = _fit_in_trial(loop_config, Path(storage) / folder, config.train.use_gpu, train_datasets(config, data_path))
        else:
            checkpoint = _fit_on_workers(config, loop_config, storage, folder, in_tune, train_datasets(config, data_path))
    except _Failed as err:
        logger.finish("FAILED", err.reason)
        raise RunFailed(f"run {run_name} failed: {err.reason}", f"see the run's log and MLflow run {run_id}") from None
    outcome = _outcome(checkpoint)
    if outcome.get("status") != "finished":
        reason = outcome.get("reason", "the run ended without a final checkpoint")
        logger.finish("FAILED", reason)
        raise RunFailed(f"run {run_name} stopped: {reason}", f"MLflow run {run_id} has the curves up to step {outcome.get('step')}")
    logger.tags({CHECKPOINT_TAG: f"{storage}/{folder}/{Path(checkpoint.path).name}"})
    logger.metrics({"time/run_s": time.time() - started}, outcome["step"])
    logger.finish("FINISHED")
    return {"run_id": run_id, **outcome}


class _Failed(Exception):
    def __init__(self, reason: str):
        self.reason = reason


def _fit_on_workers(config: ExperimentConfig, loop_config: dict, storage: str, folder: str, in_tune: bool, datasets: dict):
    from ray.train.torch import TorchTrainer

    callbacks = [FailureRecorder(loop_config["run_id"], loop_config["tracking_uri"])]
    if in_tune:
        from ray.tune.integration.ray_train import TuneReportCallback

        callbacks.append(TuneReportCallback())
    train_config = config.train
    resources = {"CPU": train_config.cpus_per_worker} | ({"GPU": 1} if train_config.use_gpu else {})
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        datasets=datasets,
        dataset_config=dataset_config() if datasets else None,
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
        return trainer.fit().checkpoint
    except ray.train.TrainingFailedError as err:
        raise _Failed(_root_cause(err)) from None


def _fit_in_trial(loop_config: dict, run_folder: Path, use_gpu: bool, datasets: dict):
    """The whole run in this Tune trial's process; a failure fails the trial, which Tune may retry."""
    try:
        run_loop(loop_config, TrialSession(run_folder, use_gpu, datasets))
    except Exception as err:  # the trial's error, reported like a Ray Train worker's
        raise _Failed(_first_line(err)) from None
    found = checkpoints(run_folder)
    return ray.train.Checkpoint.from_directory(str(found[-1])) if found else None


def _has_checkpoint(run_folder: Path) -> bool:
    return bool(checkpoints(run_folder))


def _outcome(checkpoint) -> dict:
    if checkpoint is None:
        return {}
    with checkpoint.as_directory() as folder:
        path = Path(folder) / OUTCOME
        return json.loads(path.read_text()) if path.is_file() else {}


def _first_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}".splitlines()[0][:2000]


def _root_cause(error: BaseException) -> str:
    """The innermost worker error's message, without Ray's wrapping."""
    failures = getattr(error, "worker_failures", None)
    if failures:
        inner = next(iter(failures.values()))
        return _first_line(getattr(inner, "cause", None) or inner)
    return str(error).splitlines()[0][:2000]
