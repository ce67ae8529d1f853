"""Sweeps on Ray Tune: a grid (ablations x seeds) or an Optuna search, one MLflow parent run.

Each trial is a small driver function that trains one config through
`trainer.train` (in the trial's own process when it has one worker, else on a
TorchTrainer of its own), logged as a child run of the
sweep's parent run so MLflow's compare view lines the trials up. Names are
deterministic: running the same sweep again resumes unfinished trials from
their checkpoints and returns finished ones at once.
"""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass, field
from typing import Any

from components.errors import PartitaError
from components.models.registry import get_family
from orchestration import paths
from orchestration.config import ExperimentConfig, validate
from orchestration.data_build import build
from orchestration.runtime import init_ray
from orchestration.tracking import RUN_KEY_TAG, RunLogger, client, ensure_experiment, find_or_create_run, run_record, tracking_uri
from orchestration.view_stream import check_data_kind


@dataclass
class TrialOutcome:
    values: dict[str, Any]  # the swept values, seed included
    status: str  # "finished" or "failed"
    test: dict[str, float] = field(default_factory=dict)
    valid: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    @property
    def cell(self) -> tuple:
        """The grid cell: swept values except the seed."""
        return tuple(sorted((k, v) for k, v in self.values.items() if k != "train.seed"))


@dataclass
class SweepResult:
    name: str
    parent_run_id: str
    experiment_id: str
    trials: list[TrialOutcome]
    metric: str = ""  # the selection metric ("val/miou") and whether higher is better ("max")
    mode: str = "max"


def trial_key(sweep: str, values: dict[str, Any]) -> str:
    return f"{sweep}/" + ",".join(f"{k.split('.')[-1]}={v}" for k, v in sorted(values.items()))


def search_space(config: ExperimentConfig) -> dict[str, Any]:
    from ray import tune

    sweep = config.sweep
    variants = {"variant": tune.grid_search(list(sweep.variants))} if sweep.variants else {}
    if sweep.search == "grid":
        space = variants | {key: tune.grid_search(values) for key, values in sweep.grid.items()}
        space["train.seed"] = tune.grid_search(sweep.seeds)
        return space
    distributions = {
        "loguniform": lambda p: tune.loguniform(p.low, p.high),
        "uniform": lambda p: tune.uniform(p.low, p.high),
        "int": lambda p: tune.randint(int(p.low), int(p.high) + 1),
        "categorical": lambda p: tune.choice(p.choices),
    }
    if not sweep.space:
        raise PartitaError("an optuna search needs sweep.space", "add e.g. --set sweep.space.train.lr='{type: loguniform, low: 1e-5, high: 1e-3}'")
    space = {key: distributions[p.type](p) for key, p in sweep.space.items()}
    # Optuna tunes continuous knobs; grid keys still cross with it as fixed choices per trial
    space |= variants | {key: tune.choice(values) for key, values in sweep.grid.items()}
    space["train.seed"] = sweep.seeds[0]
    return space


def trial_overrides(config: ExperimentConfig, values: dict[str, Any]) -> dict[str, Any]:
    """A trial's dotted overrides: its variant's (if any), then its own swept values."""
    variant = config.sweep.variants.get(values.get("variant"), {})
    return variant | {k: v for k, v in values.items() if k != "variant"}


def concurrency(config: ExperimentConfig) -> int:
    import ray

    if config.sweep.max_concurrent_trials:
        return config.sweep.max_concurrent_trials
    train = config.train
    resources = ray.cluster_resources()
    if train.use_gpu:
        return max(1, int(resources.get("GPU", 0)) // train.num_workers)
    # A trial that streams a multi-track view also needs its Ray Data actors' CPUs: counting only
    # the trainer's lets trials take every CPU while their streams wait for one, forever.
    streams = get_family(config.model.family).view(config.model) is not None
    per_trial = train.num_workers * train.cpus_per_worker + (train.data_actors if streams else 0)
    return max(1, int(resources.get("CPU", 1)) // per_trial)


def run_sweep(config: ExperimentConfig, name: str) -> SweepResult:
    """Run every trial of `config.sweep` and return their outcomes (failed ones included)."""
    from ray import tune

    uri = tracking_uri()
    experiment_id = ensure_experiment(config.experiment, uri)  # fails here, before any work, if MLflow is unreachable
    data_path = build(config.data)  # bad data input fails here, before Ray starts; build starts Ray if it builds
    check_data_kind(config, data_path)  # a view that does not fit the set fails before Ray starts or any run is written
    init_ray()
    from orchestration.trainer import preflight, record_failure, trains_in_trial

    preflight(config, data_path)
    from components.data.manifest import read_manifest

    manifest = read_manifest(data_path)
    params, tags = run_record(config.to_dict(), manifest)
    parent_id = find_or_create_run(experiment_id, f"sweep:{name}", name, tags | {"partita.kind": "sweep"}, uri)
    parent = RunLogger(parent_id, uri)
    parent.params(params)
    parent.json(config.to_dict(), "sweep_config.json")

    family = get_family(config.model.family)
    metric = config.sweep.metric or f"val/{family.selection_metric}"
    mode = config.sweep.mode or family.selection_mode
    base = config.to_dict()

    def trial(values: dict[str, Any]) -> None:
        from orchestration.probe import probe_run
        from orchestration.trainer import train

        base_config = validate(base)
        trial_config = base_config.with_values(trial_overrides(base_config, values))
        outcome = train(
            trial_config,
            run_key=trial_key(name, values),
            run_name=trial_key(name, values).split("/", 1)[1],
            experiment_id=experiment_id,
            parent_run_id=parent_id,
            in_tune=True,
        )
        test, valid = outcome["test"], outcome["valid"]
        if trial_config.sweep.probe and get_family(trial_config.model.family).has_representation:
            probed = probe_run(outcome["run_id"], in_process=trains_in_trial(trial_config))
            test, valid = test | probed["test"], valid | probed["valid"]
        tune.report({f"test/{k}": v for k, v in test.items()} | {f"val/{k}": v for k, v in valid.items()} | {"done": 1})

    search_alg = None
    if config.sweep.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        search_alg = OptunaSearch(metric=metric, mode=mode, seed=config.sweep.seeds[0])
        # the metric may arrive only with a trial's final report (probe accuracies)
        os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    train_config = config.train
    if trains_in_trial(config):
        resources = {"cpu": train_config.cpus_per_worker, "gpu": int(train_config.use_gpu)}
    else:
        # The trial driver only waits on its TorchTrainer, whose workers hold the CPUs;
        # a CPU for it too would leave one trial's workers unschedulable on 2 cores.
        # (Tune refuses an empty request, hence a token amount of memory.)
        resources = {"cpu": 0, "memory": 64 * 1024**2}

    class RecordRetries(tune.Callback):
        """A trial Tune restarts (its node was lost) resumes from its checkpoint; the failure is kept on its run."""

        def on_trial_recover(self, iteration, trials, trial, **info) -> None:
            runs = client(uri).search_runs([experiment_id], filter_string=f"tags.`{RUN_KEY_TAG}` = '{trial_key(name, trial.config)}'", max_results=1)
            if runs:
                record_failure(runs[0].info.run_id, uri, _error_line(trial.get_error()))

    tuner = tune.Tuner(
        tune.with_resources(trial, resources),
        param_space=search_space(config),
        tune_config=tune.TuneConfig(
            search_alg=search_alg,
            num_samples=config.sweep.num_samples if config.sweep.search == "optuna" else 1,
            max_concurrent_trials=concurrency(config),
            # A trial's process is kept for the next trial (same resources): torch, MLflow's
            # store and the family are imported once per slot, not once per trial. Each run
            # seeds itself and sets its threads (train_loop.run_loop), so nothing carries over.
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(paths.runs_root() / "tune"),
            verbose=1,
            # restarts of in-process trials; a TorchTrainer's workers restart within Ray Train
            failure_config=tune.FailureConfig(max_failures=train_config.max_failures if trains_in_trial(config) else 0),
            callbacks=[RecordRetries()],
        ),
    )
    results = tuner.fit()

    trials = []
    for result in results:
        values = {k: v for k, v in (result.config or {}).items()}
        metrics = result.metrics or {}
        if result.error is None and metrics.get("done"):
            trials.append(
                TrialOutcome(
                    values,
                    "finished",
                    test={k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith("test/")},
                    valid={k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith("val/")},
                )
            )
        else:
            error = _error_line(result.error)
            trials.append(TrialOutcome(values, "failed", error=error))
            _mark_failed(experiment_id, trial_key(name, values), error, uri)
    parent.metrics({"trials_finished": sum(t.status == "finished" for t in trials), "trials_failed": sum(t.status == "failed" for t in trials)}, 0)
    return SweepResult(name, parent_id, experiment_id, trials, metric, mode)


def _error_line(error: BaseException | None) -> str:
    if error is None:
        return "the trial ended without reporting results"
    text = str(error)
    # Ray wraps the trial's exception; the user's message is the last non-empty line that names it
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if "Error" in line or "error" in line:
            return line[:2000]
    return (lines[-1] if lines else type(error).__name__)[:2000]


def _mark_failed(experiment_id: str, run_key: str, error: str, uri: str) -> None:
    """A trial that died without closing its MLflow run (its process was killed) is marked failed."""
    runs = client(uri).search_runs([experiment_id], filter_string=f"tags.`{RUN_KEY_TAG}` = '{run_key}'", max_results=1)
    if runs and runs[0].info.status == "RUNNING":
        RunLogger(runs[0].info.run_id, uri).finish("FAILED", error)


def cell_statistics(trials: list[TrialOutcome], split: str = "test") -> dict[tuple, dict[str, tuple[float, float, int]]]:
    """cell -> metric -> (mean, std over seeds, number of finished seeds)."""
    cells: dict[tuple, list[TrialOutcome]] = {}
    for trial in trials:
        cells.setdefault(trial.cell, []).append(trial)
    stats = {}
    for cell, members in cells.items():
        finished = [getattr(t, split) for t in members if t.status == "finished"]
        names = sorted({name for metrics in finished for name in metrics})
        stats[cell] = {}
        for name in names:
            values = [m[name] for m in finished if name in m]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            stats[cell][name] = (statistics.fmean(values), std, len(values))
        stats[cell]["_trials"] = (float(len(members)), 0.0, len(finished))
    return stats
