"""The benchmark suite behind `partita bench` and experiments/benchmark_refresh.py.

A benchmark is a function `(quick: bool) -> list[Figure]` registered under a
name. Comparisons are measured side by side in the same run: `alternate` times
A and B in turns and keeps the median of each, so a busy machine slows both.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
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


def alternate(a: Callable[[], object], b: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median seconds of `a` and of `b`, run in turns A B A B ... `repeats` times each."""
    times_a, times_b = [], []
    for _ in range(repeats):
        for function, times in ((a, times_a), (b, times_b)):
            start = time.perf_counter()
            function()
            times.append(time.perf_counter() - start)
    return statistics.median(times_a), statistics.median(times_b)
