"""Peak memory and CPU time of this process and everything it started (Ray's processes and workers)."""

from __future__ import annotations

import os
import threading


class TreeMonitor:
    """Peak memory and CPU seconds of this process and its descendants (Ray's processes and workers).

    Samples /proc every 0.5 s. Memory: private anonymous memory summed over the
    processes, plus the largest shared-memory footprint once (Ray's object store,
    mapped by many); /proc/<pid>/status is cheap to read, where a PSS walk of the
    page tables would itself load the cores being measured. CPU: each process's
    time since it was first seen, kept after it exits (Ray does not reap its workers
    into cutime), so at most one interval of an ending process is lost.
    """

    def __enter__(self) -> "TreeMonitor":
        self.peak_mb, self._baseline, self._last, self._timeline = 0.0, {}, {}, []
        self._stop = threading.Event()
        self._observe(start=True)
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def peak_halves(self) -> tuple[float, float]:
        """Peak MB over the first and over the second half of the samples."""
        half = len(self._timeline) // 2
        return max(self._timeline[: half or 1]), max(self._timeline[half:])

    @property
    def cpu_seconds(self) -> float:
        return sum(self._last[pid] - self._baseline.get(pid, 0.0) for pid in self._last)

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            self._observe()

    def _observe(self, start: bool = False) -> None:
        anonymous_kb, shared_kb = 0, 0
        for pid in _tree():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                with open(f"/proc/{pid}/status") as f:
                    memory = dict(line.split(":", 1) for line in f if line.startswith(("RssAnon", "RssShmem")))
            except OSError:  # the process ended meanwhile
                continue
            seconds = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime
            if start:
                self._baseline[pid] = seconds
            self._last[pid] = seconds
            anonymous_kb += int(memory.get("RssAnon", "0 kB").split()[0])
            shared_kb = max(shared_kb, int(memory.get("RssShmem", "0 kB").split()[0]))
        self._timeline.append((anonymous_kb + shared_kb) / 1024)
        self.peak_mb = max(self.peak_mb, self._timeline[-1])

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._observe()


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _tree() -> set[int]:
    """This process and its descendants."""
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
    return tree
