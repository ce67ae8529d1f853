"""Training benchmarks: Ray Train against a plain PyTorch loop, Tune against a sequential loop.

`train`: steady-state samples/s of the same model, batch and data through
orchestration.trainer (Ray Train, one worker) and through a plain
single-process loop, runs in turns. `sweep`: four short trials through Tune
against the same four trainings run one after another in a plain loop, on the
machine's cores, and where each trial's seconds go (the time/* its run logs).
"""

from __future__ import annotations

import statistics
import tempfile
import time

import torch

from components.data.catalog import DataConfig, open_dataset
from components.models.registry import get_family
from orchestration.benchmarks import Figure, register
from orchestration.config import ExperimentConfig, load_config
from orchestration.data_build import build, dataset_dir
from orchestration.experiment import CONFIGS
from orchestration.runtime import init_ray
from orchestration.tracking import client, ensure_experiment
from orchestration.train_loop import batch_indices, build_model, lr_factor

WINDOWS = 3  # throughput windows per run; the first (warm-up, lazy initialisation) is dropped


def _data(folder: str) -> DataConfig:
    config = DataConfig(name="jazznet-multi", root=folder, chords={"limit_chords": 24})
    build(config)
    return config


def _config(family: str, preset: str, data: DataConfig, overrides: list[str]) -> ExperimentConfig:
    return load_config([CONFIGS / family / f"{preset}.yaml"], overrides, base={"data": data.model_dump(mode="json")})


def plain_run(config: ExperimentConfig, data, windows: int, threads: int) -> tuple[list[float], torch.nn.Module]:
    """Samples/s per window of `log_every` steps in one process without Ray on `data` (open_dataset), and the trained model."""
    torch.set_num_threads(threads)
    train, split = config.train, data.split("train")
    model = build_model(config, data.spec)
    return plain_steps(config, model, lambda step: split.batch(batch_indices(len(split), train.batch_size, train.seed, step, 0, 1)), windows), model


def plain_view_run(config: ExperimentConfig, data_path, windows: int, threads: int) -> list[float]:
    """Samples/s per window of a multi-track family in one process without Ray Train, cycling through a few batches
    of its train stream taken beforehand: the steps alone, so the figure against Ray Train is what Ray Train and
    its streaming cost."""
    from components.data.manifest import read_manifest
    from components.models.base import ViewSpec
    from orchestration.view_stream import train_datasets

    torch.set_num_threads(threads)
    stream = train_datasets(config, data_path)["train"].iter_torch_batches(batch_size=config.train.batch_size, drop_last=True)
    batches = [{k: v for k, v in batch.items() if k not in ("piece", "start")} for batch, _ in zip(stream, range(4))]
    manifest = read_manifest(data_path)
    model = build_model(config, ViewSpec(manifest["sample_rate"], tuple(manifest["taxonomies"]["classes"]["classes"])))
    return plain_steps(config, model, lambda step: batches[step % len(batches)], windows)


def plain_steps(config: ExperimentConfig, model: torch.nn.Module, batch_at, windows: int) -> list[float]:
    """The trainer's step (loss, backward, clipping, Adam, the lr schedule) in a plain loop: samples/s per window."""
    train, family = config.train, get_family(config.model.family)
    optimizer = torch.optim.Adam(model.parameters(), lr=train.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, train.warmup_steps, train.decay_steps))
    rates, step = [], 0
    for _ in range(windows):
        start = time.perf_counter()
        for _ in range(train.log_every):
            loss, _ = family.loss(model, batch_at(step))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip or float("inf"))
            optimizer.step()
            schedule.step()
            step += 1
        rates.append(train.log_every * train.batch_size / (time.perf_counter() - start))
    return rates


def ray_windows(config: ExperimentConfig, run: str) -> list[float]:
    from orchestration.trainer import train

    experiment_id = ensure_experiment("benchmarks-scratch")
    outcome = train(config, run_key=f"bench:{run}", run_name=run, experiment_id=experiment_id)
    history = client().get_metric_history(outcome["run_id"], "train/samples_per_s")
    return [m.value for m in sorted(history, key=lambda m: m.step)]


@register("train")
def train_throughput(quick: bool) -> list[Figure]:
    init_ray()
    figures = []
    cases = [("musicslots", "cpu", 32, 4), ("musicslots", "paper", 4, 1), ("autoencoder", "cpu", 32, 4)]
    with tempfile.TemporaryDirectory() as folder:
        data = _data(folder)
        for family, preset, batch, per_window in cases:
            steps = per_window * WINDOWS
            config = _config(family, preset, data, [
                f"train.steps={steps}", f"train.batch_size={batch}", f"train.log_every={per_window}",
                f"train.eval_every={steps}", "train.eval_examples=8", "train.use_gpu=false", f"train.storage_path={folder}/runs",
            ])
            dataset = open_dataset(dataset_dir(data))
            figures += overhead_figures(family, preset, config, f"batch {batch}", lambda run: ray_windows(config, run), lambda: plain_run(config, dataset, WINDOWS, config.train.cpus_per_worker)[0], quick)
        figures += cpu_preset_before_after(quick, data)
    return figures + view_family_overhead(quick)


def overhead_figures(family: str, preset: str, config: ExperimentConfig, what: str, ray_rates, plain_rates, quick: bool) -> list[Figure]:
    """Ray Train and the plain loop in turns (Ray, plain, Ray, plain), the first window of each run dropped."""
    rays, plains = [], []
    for repeat in range(1 if quick else 2):
        rays += ray_rates(f"{family}-{preset}-{repeat}-{time.time_ns()}")[1:]
        plains += plain_rates()[1:]
    ray_rate, plain_rate = statistics.median(rays), statistics.median(plains)
    note = f"{family} {preset} sizes, {what}, {config.train.cpus_per_worker} CPU thread(s), median of {len(rays)} windows of {config.train.log_every} steps"
    return [
        Figure("train", f"{family}/{preset} samples/s, Ray Train", round(ray_rate, 2), "samples/s", note=note),
        Figure("train", f"{family}/{preset} samples/s, plain PyTorch", round(plain_rate, 2), "samples/s", note=note),
        Figure("train", f"{family}/{preset} Ray Train overhead", round(100 * (plain_rate / ray_rate - 1), 1), "%", "<= 10", note),
    ]


def view_family_overhead(quick: bool) -> list[Figure]:
    """Jointist's cpu preset (joint schedule from its first step: f_T and f_MSS both train) on a 12-piece slakh-like
    set: Ray Train, its examples streamed from Ray Data actors, against the plain loop on batches in memory."""
    from orchestration.benchmarks.ingest import PIECES

    per_window = 4
    with tempfile.TemporaryDirectory() as folder:
        data = DataConfig(name="slakh-like", root=folder, multitrack=PIECES | {"pieces": 12})
        path = build(data, workers=2)
        steps = per_window * WINDOWS
        config = _config("jointist", "cpu", data, [
            "model.pretrain_steps=0", f"train.steps={steps}", f"train.log_every={per_window}", f"train.eval_every={steps}",
            "model.view.eval_examples=4", "train.use_gpu=false", f"train.storage_path={folder}/runs",
        ])
        threads = config.train.cpus_per_worker
        return overhead_figures("jointist", "cpu", config, f"batch {config.train.batch_size} streamed from {config.train.data_actors} Ray Data actor(s)",
                                lambda run: ray_windows(config, run), lambda: plain_view_run(config, path, WINDOWS, threads), quick)


# The MusicSlots cpu preset before issue 16: raw dB in and out, batch 32, the default weight layout. Everything else is
# today's preset, so the two differ only in what that work changed.
CPU_BEFORE = ["model.db_offset=0", "model.db_scale=1", "train.batch_size=32", "train.channels_last=false"]


def cpu_preset_before_after(quick: bool, data: DataConfig) -> list[Figure]:
    """Samples/s of the MusicSlots cpu preset before and after issue 16, plain loop, in turns, one thread."""
    rates = {"before": [], "after": []}
    per_window = 4
    runs = {
        name: _config("musicslots", "cpu", data, overrides + [f"train.log_every={per_window}"])
        for name, overrides in (("before", CPU_BEFORE), ("after", []))
    }
    dataset = open_dataset(dataset_dir(data))
    for _ in range(1 if quick else 3):
        for name, config in runs.items():
            rates[name] += plain_run(config, dataset, WINDOWS, 1)[0][1:]
    before, after = statistics.median(rates["before"]), statistics.median(rates["after"])
    note = f"musicslots cpu preset, plain loop, 1 thread, median of {len(rates['after'])} windows of {per_window} steps each"
    return [
        Figure("train", "musicslots/cpu samples/s, before issue 16", round(before, 2), "samples/s", note=note),
        Figure("train", "musicslots/cpu samples/s, after issue 16", round(after, 2), "samples/s", note=note),
    ]


@register("sweep")
def sweep(quick: bool) -> list[Figure]:
    """Four trials of the same short MusicSlots training (seeds 0-3) through Tune, then one after another."""
    import ray

    from orchestration.sweep import concurrency, run_sweep

    init_ray()
    cores = int(ray.cluster_resources().get("CPU", 1))
    steps = 30 if quick else 120
    with tempfile.TemporaryDirectory() as folder:
        data = _data(folder)
        config = _config("musicslots", "smoke", data, [
            f"train.steps={steps}", f"train.log_every={steps}", f"train.eval_every={steps}", f"train.storage_path={folder}/runs",
            "sweep.seeds=[0, 1, 2, 3]", "sweep.grid={}", "experiment=benchmarks-scratch",
        ])
        start, started_at = time.perf_counter(), time.time()
        result = run_sweep(config, f"bench-sweep-{time.time_ns()}")
        tuned = time.perf_counter() - start
        assert all(t.status == "finished" for t in result.trials), [t.error for t in result.trials]
        start = time.perf_counter()
        family = get_family(config.model.family)
        dataset = open_dataset(dataset_dir(data))
        for seed in config.sweep.seeds:
            _, model = plain_run(config.with_values({"train.seed": seed}), dataset, 1, config.train.cpus_per_worker)
            with torch.no_grad():
                for split in ("valid", "test"):  # what a trial evaluates at its end
                    family.evaluate(model.eval(), dataset.split(split).batches(32, config.train.eval_examples))
        sequential = time.perf_counter() - start
    note = f"4 trials x {steps} steps of the smoke model, 1 CPU each, {cores} cores; Tune time includes its start-up, data check and MLflow"
    return [
        Figure("sweep", "Tune sweep of 4 trials", round(tuned, 1), "s", note=note),
        Figure("sweep", "the same 4 trainings in a plain loop", round(sequential, 1), "s", note=note),
        Figure("sweep", "Tune speed-up over sequential", round(sequential / tuned, 2), "x", ">= 1.3", note),
        *trial_phases(result, started_at, tuned, concurrency(config)),
    ]


# time/<phase>_s that a run logs (train_loop.PhaseClock, trainer.train), as benchmark rows
PHASES = {
    "start": "start-up until the first step (processes, imports, MLflow run, data, model)",
    "steps": "training steps",
    "eval": "validation and test evaluation",
    "checkpoint": "checkpoints",
    "log": "MLflow metric logging",
    "figure": "the decomposition figure",
}


def trial_phases(result, started_at: float, sweep_seconds: float, slots: int) -> list[Figure]:
    """Median seconds per phase over a sweep's trials, and the fixed cost: all but steps and evaluation.

    A run's own clock starts when its trial calls train(), after the trial's process started and
    imported torch, MLflow and partita, so the fixed cost counted over the whole sweep is the
    slot-seconds (concurrent slots x the sweep's wall time) not spent in steps or evaluation, per
    trial: it also holds Tune's start-up, the parent MLflow run and slots idle at the end.
    """
    mlflow = client()
    children = mlflow.search_runs([result.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{result.parent_run_id}'")
    seconds = [{k.removeprefix("time/").removesuffix("_s"): v for k, v in run.data.metrics.items() if k.startswith("time/")} for run in children]
    for trial in seconds:
        trial["rest"] = trial["run"] - sum(trial.get(phase, 0.0) for phase in PHASES)  # after the loop: outcome, MLflow run closed
        trial["fixed"] = trial["run"] - trial.get("steps", 0.0) - trial.get("eval", 0.0)
    note = f"median over {len(seconds)} trials of what each trial's run logged (time/*)"
    rows = PHASES | {"rest": "after the loop (outcome, closing the MLflow run)", "run": "the whole run (train() call to return)"}
    figures = [Figure("sweep", f"per trial: {what}", round(statistics.median(t.get(p, 0.0) for t in seconds), 2), "s", note=note) for p, what in rows.items()]
    fixed = round(statistics.median(t["fixed"] for t in seconds), 2)
    work = sum(t.get("steps", 0.0) + t.get("eval", 0.0) for t in seconds)
    whole = round((slots * sweep_seconds - work) / len(seconds), 2)
    # before any run: Tune's start-up and the first trial process's imports, which each slot's first trial pays
    first = min(run.info.start_time for run in children) / 1000 - started_at
    last = started_at + sweep_seconds - max(run.info.end_time for run in children) / 1000
    return figures + [
        Figure("sweep", "from the sweep's start to its first run's start (Tune start-up, a cold trial process)", round(first, 2), "s",
               note="paid once per slot: a slot's later trials reuse its process (reuse_actors)"),
        Figure("sweep", "from the last run's end to the sweep's end", round(last, 2), "s"),
        Figure("sweep", "per trial: fixed cost within its run (run minus steps and evaluation)", fixed, "s", "<= 5", note=note),
        Figure("sweep", f"per trial: fixed cost over the sweep ({slots} slots x wall time, minus all steps and evaluation)", whole, "s",
               note=f"{len(seconds)} trials; holds the per-slot start above, spread over the trials"),
    ]
