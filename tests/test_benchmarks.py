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
