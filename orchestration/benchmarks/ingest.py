"""The `ingest` benchmark: the multi-track view stream (Ray Data -> Ray Train) for the BLSTM cpu preset.

Figures, from one run:
- examples per second the stream delivers (Ray Data actors cut, mix and featurise;
  the reader only takes batches) against what the trainer consumes (the cpu
  preset's training step on batches already in memory);
- the fraction of a step's wall time the trainer waits for its next batch, in a
  real Ray Train run of the cpu preset after its first log window (that one, the stream
  starting, is shown apart), with featurisation on the Ray Data actors and on the
  trainer (then the wait includes the trainer's own STFTs);
- peak memory of this process and its descendants (Ray and its workers) over the
  stream of a small and of a 4x larger set: streaming holds a few pieces, not the
  set, so the peaks should match.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path

from components.data.catalog import DataConfig
from orchestration.benchmarks import Figure, register
from orchestration.benchmarks.monitor import TreeMonitor
from orchestration.data_build import build
from orchestration.runtime import init_ray

NAME = "ingest"
# Short pieces (the set size, not their length, is what varies), every one played by the band, so each split has
# segments of the piano + electric guitar pair the cpu preset's view names.
PIECES = {"pieces": 100, "music21_fraction": 0.0, "band_fraction": 1.0, "min_seconds": 6.0, "max_seconds": 10.0}


@register(NAME)
def ingest(quick: bool) -> list[Figure]:
    import os

    from orchestration.tracking import client, ensure_experiment, tracking_uri
    from orchestration.trainer import train

    # steps: a Ray Train run long enough for several log windows after the stream's start-up
    small_pieces, steps = (25, 12) if quick else (100, 300)
    init_ray()
    root = Path(tempfile.mkdtemp(prefix="partita-bench-ingest-"))
    try:
        small = build(DataConfig(name="slakh-like", root=str(root / "small"), multitrack=PIECES | {"pieces": small_pieces}), workers=2)
        large = build(DataConfig(name="slakh-like", root=str(root / "large"), multitrack=PIECES | {"pieces": 4 * small_pieces}), workers=2)
        config = _cpu_config(small, steps)
        delivered, first_batch, examples_small, peak_small = _stream(config, small)
        _, _, examples_large, peak_large = _stream(_cpu_config(large, steps), large)
        consumed = _consumed(config, small)
        load = os.getloadavg()[0]
        waits, start_waits = {}, {}
        experiment = ensure_experiment("bench-ingest", tracking_uri())
        for where in ("data", "trainer"):
            run = config.with_values({"model.view.featurise_on": where})
            outcome = train(run, run_key=f"bench-ingest-{where}-{time.time_ns()}", run_name=f"featurise on {where}", experiment_id=experiment)
            history = [m.value for m in sorted(client().get_metric_history(outcome["run_id"], "train/data_wait_fraction"), key=lambda m: m.step)]
            start_waits[where], waits[where] = history[0], statistics.median(history[1:] or history)  # the first window holds the stream's start
    finally:
        shutil.rmtree(root, ignore_errors=True)
    batch = config.train.batch_size
    return [
        Figure(NAME, "examples/s the stream delivers (cpu preset view, 1 Ray Data actor)", round(delivered, 2), "ex/s", None,
               f"the stream of a {steps}-step run: {examples_small} examples over passes of {small_pieces} pieces, batches of {batch}, from its first batch on"),
        Figure(NAME, "seconds to the stream's first batch (actors start, buffers fill)", round(first_batch, 2), "s", None, "the same stream"),
        Figure(NAME, "examples/s the trainer consumes (cpu preset, 1 worker)", round(consumed, 2), "ex/s", None,
               f"training steps on batches in memory; load average {load:.1f} on 2 shared cores"),
        Figure(NAME, "delivered over consumed", round(delivered / consumed, 2), "x", ">= 1", "the stream keeps up when >= 1"),
        Figure(NAME, "fraction of step time waiting for data, featurised on Ray Data actors", round(waits["data"], 4), "", "<= 0.05",
               f"Ray Train run of {steps} steps, median of train/data_wait_fraction over the log windows after the first"),
        Figure(NAME, "the same in the first log window (the stream starting)", round(start_waits["data"], 4), "", None,
               f"{config.train.log_every} steps"),
        Figure(NAME, "fraction of step time waiting for data, featurised on the trainer", round(waits["trainer"], 4), "", None,
               "the wait includes the trainer's own STFTs"),
        Figure(NAME, f"peak memory streaming {small_pieces} pieces", round(peak_small), "MB", None, f"the same stream, {examples_small} examples"),
        Figure(NAME, f"peak memory, {4 * small_pieces} pieces over {small_pieces}", round(peak_large / peak_small, 2), "x", "<= 1.2",
               f"{peak_small:.0f} MB -> {peak_large:.0f} MB for {examples_large} vs {examples_small} examples"),
    ]


def _cpu_config(data_path: Path, steps: int):
    from orchestration.config import load_config
    from orchestration.experiment import CONFIGS

    files = [CONFIGS / "mask_inference" / "cpu.yaml", CONFIGS / "separation_two_source.yaml"]
    overrides = [f"data.root={data_path.parent}", f"train.steps={steps}", f"train.log_every={max(1, steps // 6)}", f"train.eval_every={steps}", "model.view.eval_examples=16"]
    return load_config(files, overrides, base={"data": {"name": "slakh-like", "multitrack": PIECES | {"pieces": _pieces(data_path)}}})


def _pieces(data_path: Path) -> int:
    import json

    return json.loads((data_path / "manifest.json").read_text())["recipe"]["multitrack"]["pieces"]


def _stream(config, data_path: Path) -> tuple[float, float, int, float]:
    """(examples/s from the first batch on, seconds to the first batch, examples, peak MB) of the run's whole train
    stream, batched as the trainer takes it."""
    from orchestration.view_stream import train_datasets

    stream = train_datasets(config, data_path)["train"]
    view, count, first = config.model.view, 0, None
    with TreeMonitor() as monitor:
        start = time.perf_counter()
        for batch in stream.iter_torch_batches(batch_size=config.train.batch_size, local_shuffle_buffer_size=view.shuffle_buffer, local_shuffle_seed=0):
            if first is None:
                first, first_size = time.perf_counter(), len(batch["mix_mag"])
            count += len(batch["mix_mag"])
        end = time.perf_counter()
    return (count - first_size) / (end - first), first - start, count, monitor.peak_mb


def _consumed(config, data_path: Path, steps: int = 8) -> float:
    """Examples/s of the cpu preset's training step (forward, backward, Adam) on one CPU, data in memory."""
    import torch

    from components.data.manifest import read_manifest
    from components.models.registry import get_family
    from components.models.base import ViewSpec
    from orchestration.train_loop import build_model
    from orchestration.view_stream import train_datasets

    torch.set_num_threads(config.train.cpus_per_worker)
    family = get_family(config.model.family)
    batch = next(iter(train_datasets(config, data_path)["train"].iter_torch_batches(batch_size=config.train.batch_size)))
    model = build_model(config, ViewSpec(sample_rate=read_manifest(data_path)["sample_rate"], classes=()))
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr)
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        loss, _ = family.loss(model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return len(batch["mix_mag"]) / statistics.median(times[1:])
