"""The one way partita starts or joins Ray."""

from __future__ import annotations

import logging
import os


def init_ray(num_cpus: int | None = None) -> None:
    """Join the cluster in RAY_ADDRESS (a `ray job submit` run), else start a local one.

    The local instance is sized to this machine (or `num_cpus`) and its dashboard
    listens on 127.0.0.1 only.
    """
    import ray

    if ray.is_initialized():
        return
    quiet = {"log_to_driver": True, "logging_level": logging.WARNING}
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], **quiet)
    else:
        ray.init(
            num_cpus=num_cpus or os.cpu_count(),
            include_dashboard=os.environ.get("PARTITA_RAY_DASHBOARD", "1") == "1",
            dashboard_host="127.0.0.1",
            **quiet,
        )


def cluster_cpus() -> int:
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))
