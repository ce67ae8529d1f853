"""The benchmark suite behind `partita bench` and experiments/benchmark_refresh.py.

A benchmark is a function `(quick: bool) -> list[Figure]` registered under a
name. Comparisons are measured side by side in the same run: `alternate` times
A and B in turns and keeps the median of each, so a busy machine slows both.
"""

from __future__ import annotations

import datetime
import importlib
import json
import os
import platform
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

BENCHMARKS: dict[str, Callable[[bool], list["Figure"]]] = {}


@dataclass
class Figure:
    benchmark: str
    name: str
    value: float
    unit: str
    target: str | None = None  # e.g. ">= 50": the goal this figure is checked against
    note: str = ""

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        op, bound = self.target.split()
        return self.value >= float(bound) if op == ">=" else self.value <= float(bound)

    def as_dict(self) -> dict:
        return asdict(self) | {"met": self.met}


def register(name: str):
    def decorate(function: Callable[[bool], list[Figure]]):
        BENCHMARKS[name] = function
        return function

    return decorate


def interleave(functions: list[Callable[[], object]], repeats: int) -> list[float]:
    """Median seconds of each function, run in turns (A B C A B C ...) `repeats` times each."""
    times: list[list[float]] = [[] for _ in functions]
    for _ in range(repeats):
        for function, record in zip(functions, times):
            start = time.perf_counter()
            function()
            record.append(time.perf_counter() - start)
    return [statistics.median(record) for record in times]


def alternate(a: Callable[[], object], b: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median seconds of `a` and of `b`, run in turns A B A B ... `repeats` times each."""
    seconds_a, seconds_b = interleave([a, b], repeats)
    return seconds_a, seconds_b


# modules whose benchmarks register themselves on import
MODULES = ("chords", "evaluation", "training", "multitrack", "kelz", "ingest")


def load_all() -> dict[str, Callable[[bool], list[Figure]]]:
    for module in MODULES:
        importlib.import_module(f"orchestration.benchmarks.{module}")
    return BENCHMARKS


def machine() -> dict[str, str]:
    return {
        "host": platform.node(),
        "cpus": str(os.cpu_count()),
        "processor": platform.processor() or platform.machine(),
        "memory_gb": f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 1024**3:.0f}",
        "python": platform.python_version(),
        "load_average_1min": f"{os.getloadavg()[0]:.2f}",
    }


def run(names: list[str], quick: bool) -> list[Figure]:
    """Run benchmarks by name (all when empty), printing progress; scratch runs go to a temporary home."""
    from components.errors import PartitaError

    available = load_all()
    unknown = [n for n in names if n not in available]
    if unknown:
        raise PartitaError(f"unknown benchmark(s) {', '.join(unknown)}", f"choose from {', '.join(available)}")
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="partita-bench-") as scratch:
        saved = {k: os.environ.get(k) for k in ("PARTITA_HOME", "MLFLOW_TRACKING_URI")}
        os.environ["PARTITA_HOME"] = scratch  # scratch MLflow runs and checkpoints, gone afterwards
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        try:
            for name in names or list(available):
                print(f"[bench] {name} ({'quick' if quick else 'full'})...", flush=True)
                start = time.perf_counter()
                figures += available[name](quick)
                print(f"[bench] {name} done in {time.perf_counter() - start:.0f} s", flush=True)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    return figures


def table(figures: list[Figure]) -> str:
    lines = ["| benchmark | figure | value | target | met | note |", "|---|---|---|---|---|---|"]
    for f in figures:
        met = {True: "yes", False: "NO", None: ""}[f.met]
        lines.append(f"| {f.benchmark} | {f.name} | {f.value:g} {f.unit} | {f.target or ''} | {met} | {f.note} |")
    return "\n".join(lines)


def save(figures: list[Figure], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "figures": [f.as_dict() for f in figures],
    }
    path.write_text(json.dumps(record, indent=2))
    return path
