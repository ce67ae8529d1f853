"""Shared fixtures: an isolated PARTITA_HOME, one Ray instance, small built data sets."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
JSB_REFERENCE = SHARED / "reference" / "jsb" / "jsb-chorales-quarter.json"
# chords per split of the session's small jazznet-multi: 1188 rows (the test split holds all 81
# instrument assignments of each tetrad), built in seconds; tests that rebuild it use the same recipe
SMALL_CHORDS_LIMIT = 12


@pytest.fixture(scope="session", autouse=True)
def isolated_home(tmp_path_factory):
    """Every test writes under a temporary PARTITA_HOME and the embedded SQLite MLflow."""
    home = tmp_path_factory.mktemp("partita-home")
    saved = {k: os.environ.get(k) for k in ("PARTITA_HOME", "PARTITA_DATA", "MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    os.environ["PARTITA_HOME"] = str(home)
    for key in ("PARTITA_DATA", "MLFLOW_TRACKING_URI", "RAY_ADDRESS"):
        os.environ.pop(key, None)
    yield home
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def ray_session(isolated_home):
    """One local Ray instance for the whole session (it takes 5-12 s to start)."""
    import ray

    from orchestration.runtime import init_ray

    init_ray(num_cpus=2)
    session = ray._private.worker._global_node.get_session_dir_path()
    yield
    ray.shutdown()
    # resource hygiene: every process of this Ray instance is gone (and with it its ports)
    deadline = time.time() + 30
    while processes_mentioning(session) and time.time() < deadline:
        time.sleep(0.5)
    leftover = processes_mentioning(session)
    assert not leftover, f"Ray processes outlived the test session: {leftover}"


def processes_mentioning(text: str) -> list[int]:
    """Pids whose command line contains `text` (Ray's processes name their session folder)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                if text in Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(entry))
            except OSError:
                continue
    return pids


@pytest.fixture(scope="session")
def jsb_reference() -> Path:
    if not JSB_REFERENCE.is_file():
        pytest.skip(f"the czhuang JSB reference file is absent ({JSB_REFERENCE}); it lies in ../shared on the project's machines")
    return JSB_REFERENCE


@pytest.fixture(scope="session")
def small_chords(ray_session, tmp_path_factory) -> Path:
    """A small jazznet-multi (SMALL_CHORDS_LIMIT chords per split, all instrument assignments), built on Ray Data."""
    from components.data.catalog import DataConfig
    from orchestration.data_build import build

    root = tmp_path_factory.mktemp("data")
    return build(DataConfig(name="jazznet-multi", root=str(root), chords={"limit_chords": SMALL_CHORDS_LIMIT}), workers=2)


@pytest.fixture(scope="session")
def tracking_server(tmp_path_factory):
    """A real `mlflow server` on a free loopback port for the session (15-40 s to start)."""
    from tests.services import mlflow_server_on_loopback

    with mlflow_server_on_loopback(tmp_path_factory.mktemp("mlflow-server")) as server:
        yield server


@pytest.fixture(scope="session")
def submitted_sweep(tracking_server, tmp_path_factory):
    """The smoke mask ablation as a user submits it to a cluster, tracked by the session's server.

    One run, read by every test of what a sweep leaves behind (tests/services.py says which);
    the head node is stopped as soon as the job has ended.
    """
    from tests.services import ray_head_node, submit_smoke_sweep

    with ray_head_node(processes_mentioning) as head:
        return submit_smoke_sweep(head, tracking_server.uri, tmp_path_factory.mktemp("sweep-home"))
