"""The benchmark harness: every benchmark registers, targets are judged right, A and B run in turns."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from components.errors import PartitaError
from orchestration import benchmarks
from orchestration.benchmarks import Figure, interleave


def test_every_benchmark_module_imports_and_registers():
    assert set(benchmarks.load_all()) == {"synth", "datasets", "eval", "train", "sweep", "multitrack", "kelz", "ingest"}


@pytest.mark.parametrize(
    "value, target, met",
    [(50.0, ">= 50", True), (49.9, ">= 50", False), (10.0, "<= 10", True), (10.1, "<= 10", False), (3.0, None, None)],
)
def test_a_figure_is_judged_against_its_target(value, target, met):
    assert Figure("b", "f", value, "x", target).met is met


def test_interleave_runs_the_functions_in_turns_and_keeps_each_median():
    calls = []
    medians = interleave([lambda: calls.append("a"), lambda: calls.append("b")], repeats=3)
    assert calls == ["a", "b"] * 3
    assert len(medians) == 2 and all(m >= 0 for m in medians)


def test_an_unknown_benchmark_is_a_user_error():
    with pytest.raises(PartitaError, match="unknown benchmark.*synht"):
        benchmarks.run(["synht"], quick=True)


def test_the_table_marks_missed_targets():
    rows = benchmarks.table([Figure("eval", "speed-up", 2.5, "x", ">= 20"), Figure("eval", "time", 1.0, "s")]).splitlines()
    assert "| eval | speed-up | 2.5 x | >= 20 | NO |" in rows[2]
    assert rows[3].startswith("| eval | time | 1 s |  |  |")



MONITORED = """
import subprocess, sys
from orchestration.benchmarks.monitor import TreeMonitor
child = "import time; x = bytearray(300 << 20); x[::4096] = b'1' * len(x[::4096]); t = time.process_time()\\nwhile time.process_time() - t < 1.5: pass"
with TreeMonitor() as idle:
    pass
with TreeMonitor() as busy:
    subprocess.run([sys.executable, "-c", child], check=True)
print(busy.peak_mb - idle.peak_mb, busy.cpu_seconds)
"""


def test_tree_monitor_counts_the_memory_and_cpu_of_child_processes():
    import subprocess
    import sys

    # in a fresh interpreter: this test process may have Ray's processes as children
    result = subprocess.run([sys.executable, "-c", MONITORED], capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1])
    grown_mb, cpu_seconds = map(float, result.stdout.split())
    assert grown_mb > 250  # the child's 300 MB, touched page by page
    assert cpu_seconds >= 1.0  # its busy loop, kept after it exited


def test_the_plain_loop_trains_on_the_data_set_its_config_names(small_chords):
    """`bench train` and `bench sweep` time this loop against Ray Train on the built folder (name + recipe hash)."""
    from components.data.catalog import DataConfig, open_dataset
    from orchestration.benchmarks.training import _config, plain_run
    from orchestration.data_build import dataset_dir
    from tests.conftest import SMALL_CHORDS_LIMIT

    data = DataConfig(name="jazznet-multi", root=str(small_chords.parent), chords={"limit_chords": SMALL_CHORDS_LIMIT})
    config = _config("musicslots", "smoke", data, ["train.log_every=2"])
    rates, model = plain_run(config, open_dataset(dataset_dir(config.data)), windows=2, threads=1)
    assert len(rates) == 2 and all(rate > 0 for rate in rates)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_the_sweeps_fixed_cost_counts_what_runs_do_not_log(tmp_path, monkeypatch):
    """Two slots for 120 s hold 240 slot-seconds; four runs of 40 s steps + 5 s evaluation leave 60: 15 s per trial,
    though each run's own clock (50 s, 45 of them work) shows 5 s of fixed cost. The first runs start 8 s after the
    sweep, the last ends 6 s before it does."""
    from orchestration.benchmarks.training import trial_phases
    from orchestration.sweep import SweepResult
    from orchestration.tracking import PARENT_TAG, client

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow = client()
    experiment = mlflow.create_experiment("bench", artifact_location=str(tmp_path / "artifacts"))
    parent = mlflow.create_run(experiment).info.run_id
    started_at = 1_000_000.0
    for slot_start in (8, 9, 60, 64):
        run = mlflow.create_run(experiment, start_time=int((started_at + slot_start) * 1000), tags={PARENT_TAG: parent}).info.run_id
        mlflow.set_terminated(run, end_time=int((started_at + slot_start + 50) * 1000))
        for phase, seconds in {"run": 50.0, "steps": 40.0, "eval": 5.0, "start": 3.0, "figure": 1.5}.items():
            mlflow.log_metric(run, f"time/{phase}_s", seconds)
    figures = {f.name: f.value for f in trial_phases(SweepResult("s", parent, experiment, []), started_at, sweep_seconds=120.0, slots=2)}
    assert figures["per trial: fixed cost within its run (run minus steps and evaluation)"] == 5.0
    assert figures["per trial: fixed cost over the sweep (2 slots x wall time, minus all steps and evaluation)"] == 15.0
    assert figures["per trial: start-up until the first step (processes, imports, MLflow run, data, model)"] == 3.0
    assert figures["from the sweep's start to its first run's start (Tune start-up, a cold trial process)"] == 8.0
    assert figures["from the last run's end to the sweep's end"] == 6.0
