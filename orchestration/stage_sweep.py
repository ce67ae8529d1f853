"""A Tune grid over a stage that follows training (evaluation settings, not weights), one MLflow child run per trial.

Some experiments sweep what happens after a model is trained (Kelz: the demixing
weights, lags and steps applied to the same denoised spectrograms), where a trial is
a function of its values, not a training run. `run_stage_sweep` runs such a function
for every point of a grid as Tune trials, each logged as a child of the experiment's
parent run (its values as params, its returned metrics), and returns the metrics per
point. Inputs shared by every trial go through Ray's object store once (`ray.put`)
rather than being pickled into each trial. Names are deterministic, so a rerun finds
its child runs again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from orchestration import paths
from orchestration.tracking import PARENT_TAG, RunLogger, find_or_create_run, tracking_uri


def run_stage_sweep(
    name: str,
    points: list[dict[str, Any]],
    stage: Callable[[dict[str, Any]], dict[str, float]],
    *,
    experiment_id: str,
    parent_run_id: str,
    cpus_per_trial: float = 1,
) -> list[tuple[dict[str, Any], dict[str, float] | None, str | None]]:
    """(values, metrics or None, error or None) for each point, in the order given."""
    import ray
    from ray import tune

    uri = tracking_uri()

    def trial(config: dict[str, Any]) -> None:
        values = points[config["point"]]
        key = f"{name}/" + ",".join(f"{k}={v}" for k, v in sorted(values.items()))
        run_id = find_or_create_run(experiment_id, key, key.split("/", 1)[1], {PARENT_TAG: parent_run_id, "partita.kind": "stage"}, uri)
        logger = RunLogger(run_id, uri)
        logger.params({k: str(v) for k, v in values.items()})
        try:
            metrics = stage(values)
        except Exception as err:
            logger.finish("FAILED", f"{type(err).__name__}: {err}")
            raise
        logger.metrics(metrics, 0)
        logger.finish("FINISHED")
        tune.report(metrics | {"done": 1})

    tuner = tune.Tuner(
        tune.with_resources(trial, {"cpu": cpus_per_trial}),
        param_space={"point": tune.grid_search(list(range(len(points))))},
        tune_config=tune.TuneConfig(max_concurrent_trials=max(1, int(ray.cluster_resources().get("CPU", 1) // cpus_per_trial))),
        run_config=tune.RunConfig(name=name.replace("/", "_"), storage_path=str(paths.runs_root() / "tune"), verbose=1),
    )
    outcomes: dict[int, tuple[dict[str, float] | None, str | None]] = {}
    for result in tuner.fit():
        metrics = {k: v for k, v in (result.metrics or {}).items() if "/" in k}
        error = None if result.error is None else str(result.error).strip().splitlines()[-1][:2000]
        outcomes[result.config["point"]] = (metrics if error is None else None, error)
    return [(point, *outcomes.get(i, (None, "the trial did not run"))) for i, point in enumerate(points)]
