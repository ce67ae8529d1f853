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
