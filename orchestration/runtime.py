"""The one way partita starts or joins Ray."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from components.errors import PartitaError


def init_ray(num_cpus: int | None = None) -> None:
    """Join the cluster in RAY_ADDRESS (a `ray job submit` run), else start a local one.

    The local instance is sized to this machine (or `num_cpus`) and its dashboard
    listens on 127.0.0.1 only.
    """
    import ray

    from orchestration import paths
    from orchestration.tracking import tracking_uri
    from orchestration.versions import code_version

    if ray.is_initialized():
        return
    # Workers see the driver's resolved locations and code version, whatever their
    # working directory or copy of the code. Variables already set (a job's own
    # runtime_env) are left alone: Ray refuses conflicting values.
    env = {"PARTITA_HOME": str(paths.home()), "MLFLOW_TRACKING_URI": tracking_uri(), "PARTITA_CODE_VERSION": code_version()}
    common = {
        "runtime_env": {"env_vars": {k: v for k, v in env.items() if k not in os.environ}},
        "log_to_driver": True,
        "logging_level": logging.WARNING,
    }
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], **common)
    else:
        ray.init(
            # "local": always a fresh instance; without it ray.init() joins any head that
            # `ray start` left running on this machine, which is not the embedded default.
            address="local",
            num_cpus=num_cpus or os.cpu_count(),
            # the dashboard also serves the state API that Ray Train's clean-up monitor polls
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            **common,
        )


def cluster_cpus() -> int:
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def check_capacity(kind: str, each: float, workers: int, what: str, wait_s: float) -> None:
    """Fail with a message naming `what` when the cluster lacks `workers` x `each` of resource `kind`.

    A joined cluster (RAY_ADDRESS) may still grow (KubeRay autoscales workers from zero),
    so there the check asks the autoscaler for the workers' resources and waits up to
    `wait_s`, saying what for; a local instance never grows, so it fails at once. Without
    this, Ray Train waits silently for resources that never come.
    """
    import ray

    def have() -> float:
        return ray.cluster_resources().get(kind, 0)

    need = workers * each
    waited = bool(os.environ.get("RAY_ADDRESS")) and wait_s > 0 and have() < need
    if waited:
        from ray.autoscaler.sdk import request_resources

        print(f"waiting up to {wait_s:g} s for {what}: the cluster has {have():g} {kind} now", flush=True)
        request_resources(bundles=[{kind: each}] * workers)
        deadline = time.monotonic() + wait_s
        try:
            while have() < need and time.monotonic() < deadline:
                time.sleep(1)
        finally:
            request_resources(bundles=[])  # the workers' own requests keep the nodes from here on
    if have() < need:
        raise PartitaError(
            f"the Ray cluster has {have():g} {kind}, fewer than the {what}" + (f" (waited {wait_s:g} s)" if waited else ""),
            "lower train.num_workers (or train.cpus_per_worker), or add nodes to the cluster (train.capacity_wait_s sets the wait)",
        )


def check_visible_everywhere(path: Path, expected: str, what: str, fix: str) -> None:
    """Fail, naming `path`, unless every live Ray node reads `expected` from the file `path`.

    On one machine every node shares the disk; on a cluster a folder local to the head (or
    to the driver's pod) exists on no other node. Ray Train would notice only at the first
    checkpoint a remote worker uploads, after minutes of training.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [node for node in ray.nodes() if node["Alive"]]
    if len(nodes) < 2:
        return

    @ray.remote(num_cpus=0)
    def reads(file: str) -> str | None:
        try:
            return Path(file).read_text()
        except OSError:
            return None

    asked = {
        f"{node['NodeManagerAddress']} ({node['NodeID'][:12]})": reads.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
        ).remote(str(path))
        for node in nodes
    }
    blind = [name for name, ref in asked.items() if ray.get(ref, timeout=120) != expected]
    if blind:
        raise PartitaError(f"{what} {path.parent} is not visible from Ray node(s) {', '.join(blind)}", fix)
