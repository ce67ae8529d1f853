"""The `multitrack` benchmark: building slakh-like audio (4-6 stems, rolls, 16 kHz) on Ray Data.

Figures:
- hours of audio built per minute with 2 workers, and minutes for the full set
  (2 hours unless quick): the whole `build()` call, planning and manifest included,
  Ray already started;
- the speed-up from 1 to 2 Ray workers on the full set, the two builds timed in
  turns (`alternate`). Starting an actor pool costs 6-20 s on this machine
  whatever the set, so a small set would measure start-up, not scaling;
- peak memory of this process and all its descendants (the Ray processes and
  workers) during a small and the full builds: a streamed build holds a few
  pieces, not the set, so the peak stays flat.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import threading
from pathlib import Path

from components.datasets import DataConfig, plan
from orchestration.benchmarks import Figure, alternate, register
from orchestration.data_build import build
from orchestration.runtime import init_ray

NAME = "multitrack"


@register(NAME)
def multitrack(quick: bool) -> list[Figure]:
    full_hours, small_hours = (0.25, 0.08) if quick else (2.0, 0.25)
    init_ray()
    load_before = os.getloadavg()[0]
    root = Path(tempfile.mkdtemp(prefix="partita-bench-multitrack-"))
    try:
        small, full = (_config(root, hours, f"set-{hours}") for hours in (small_hours, full_hours))
        idle = _tree_memory_mb()
        with PeakMemory() as small_peak:
            small_built = _hours(build(small, force=True, workers=2))
        # the full set with 1 and with 2 workers, in turns: the speed-up includes what does not
        # parallelise (planning, actor start-up, the manifest), as a user's build does
        with PeakMemory() as full_peak:
            seconds_1, seconds_2 = alternate(
                lambda: build(full, force=True, workers=1), lambda: build(full, force=True, workers=2), repeats=1
            )
        full_built = _hours(build(full))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    load = f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after (2 cores, shared)"
    return [
        Figure(NAME, "audio hours built per minute (2 workers)", round(full_built / (seconds_2 / 60), 3), "h/min", ">= 0.2",
               f"{full_built:.2f} h of 4-6-stem audio with rolls at 16 kHz in {seconds_2:.0f} s; {load}"),
        Figure(NAME, f"minutes to build {full_built:.2f} h (2 workers)", round(seconds_2 / 60, 2), "min",
               f"<= {10 * full_built / 2:.2f}", "target: 2 h in 10 min, scaled"),
        Figure(NAME, "speed-up from 1 to 2 Ray workers", round(seconds_1 / seconds_2, 2), "x", ">= 1.7",
               f"{full_built:.2f} h set: 1 worker {seconds_1:.0f} s, 2 workers {seconds_2:.0f} s; {load}"),
        Figure(NAME, "peak memory, full builds", round(full_peak.mb), "MB", None,
               f"this process, the Ray processes and workers (private memory + object store); idle Ray {idle:.0f} MB"),
        Figure(NAME, f"peak memory growth from {small_built:.2f} h to {full_built:.2f} h", round(full_peak.mb / small_peak.mb, 2), "x",
               "<= 1.25", f"{small_peak.mb:.0f} MB -> {full_peak.mb:.0f} MB: flat means streamed"),
    ]


def _config(root: Path, hours: float, name: str) -> DataConfig:
    """A slakh-like config with at least `hours` of audio; its music21 scores are derived here, untimed."""
    (root / "sources").mkdir(exist_ok=True)
    (root / name).mkdir()
    (root / name / "sources").symlink_to(root / "sources")
    probe = DataConfig(name="slakh-like", root=str(root / name), multitrack={"pieces": 4})
    config, planned = probe, sum(plan(probe, root / "sources").info["hours"].values())
    while planned < hours:  # grow the set until its plan reaches `hours`; also derives its scores untimed
        pieces = math.ceil(config.multitrack.pieces * hours / planned)
        config = config.model_copy(update={"multitrack": config.multitrack.model_copy(update={"pieces": pieces})})
        planned = sum(plan(config, root / "sources").info["hours"].values())
    return config


def _hours(path: Path) -> float:
    return sum(json.loads((path / "manifest.json").read_text())["hours"].values())


class PeakMemory:
    """Peak memory of this process and its descendants (the Ray processes and workers), every 0.5 s.

    Private anonymous memory summed over the processes, plus the largest shared-memory
    footprint once (Ray's object store, mapped by many). From /proc/<pid>/status, which is
    cheap to read: a PSS walk of the page tables would itself load the cores being measured.
    """

    def __enter__(self) -> "PeakMemory":
        self.mb, self._stop = _tree_memory_mb(), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            self.mb = max(self.mb, _tree_memory_mb())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.mb = max(self.mb, _tree_memory_mb())


def _tree_memory_mb() -> float:
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:  # the process ended meanwhile
                continue
    tree, frontier = {os.getpid()}, [os.getpid()]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        tree.update(children)
        frontier += children
    anonymous_kb, shared_kb = 0, 0
    for pid in tree:
        try:
            with open(f"/proc/{pid}/status") as f:
                fields = dict(line.split(":", 1) for line in f if line.startswith(("RssAnon", "RssShmem")))
        except OSError:
            continue
        anonymous_kb += int(fields.get("RssAnon", "0 kB").split()[0])
        shared_kb = max(shared_kb, int(fields.get("RssShmem", "0 kB").split()[0]))
    return (anonymous_kb + shared_kb) / 1024
