"""`ray job submit` against a `ray start --head` cluster the test starts on loopback."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from orchestration.tracking import client
from tests.conftest import processes_mentioning

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(os.sys.executable).parent


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.fixture
def head_node():
    """A head node with its own temp dir and ports, stopped (only it) afterwards."""
    temp = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # short: Ray's unix socket paths are length-limited
    gcs, dashboard, agent_listen, agent_grpc, metrics, runtime_env, client_port = free_ports(7)
    env = os.environ | {"PATH": f"{VENV_BIN}:{os.environ['PATH']}"}  # the job's `python` is the one on this PATH
    env.pop("RAY_ADDRESS", None)
    subprocess.run(
        [
            str(VENV_BIN / "ray"), "start", "--head", f"--port={gcs}", "--num-cpus=2", f"--temp-dir={temp}",
            "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", f"--dashboard-agent-listen-port={agent_listen}",
            f"--dashboard-agent-grpc-port={agent_grpc}", f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={runtime_env}",
            f"--ray-client-server-port={client_port}", "--disable-usage-stats",
        ],
        env=env, check=True, capture_output=True, timeout=120,
    )
    try:
        yield f"http://127.0.0.1:{dashboard}"
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in processes_mentioning(temp):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.time() + 15
            while processes_mentioning(temp) and time.time() < deadline:
                time.sleep(0.5)
        leftover = processes_mentioning(temp)
        shutil.rmtree(temp, ignore_errors=True)
        assert not leftover, f"Ray processes of the test head node survived: {leftover}"


@pytest.mark.slow
def test_ablation_runs_as_a_submitted_job(head_node, tmp_path):
    home = tmp_path / "home"
    runtime_env = {"env_vars": {"PARTITA_HOME": str(home), "MLFLOW_TRACKING_URI": f"sqlite:///{home}/mlflow.db"}}
    env = os.environ | {"RAY_AUTH_MODE": "token"}
    submitted = subprocess.run(
        [
            str(VENV_BIN / "ray"), "job", "submit", "--address", head_node, "--working-dir", str(ROOT), "--no-wait",
            "--runtime-env-json", json.dumps(runtime_env), "--",
            "python", "experiments/ablation_masks.py", "--preset", "smoke", "--dataset", "jazznet-single", "--seeds", "0",
            "--set", "data.chords.limit_chords=16", "--set", "sweep.grid.model.mask_norm=[none]",
        ],
        env=env, capture_output=True, text=True, timeout=180, check=True,
    )
    job_id = re.search(r"raysubmit_[A-Za-z0-9]+", submitted.stdout + submitted.stderr).group()  # the CLI colours its output
    status, deadline = "", time.time() + 600
    while time.time() < deadline:
        # the job CLI writes its answer through logging, to stderr
        status = subprocess.run(
            [str(VENV_BIN / "ray"), "job", "status", "--address", head_node, job_id], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60
        ).stdout.lower()
        if any(f"' {state}" in status for state in ("succeeded", "failed", "stopped")):  # "Job '<id>' succeeded"
            break
        time.sleep(5)
    logs = subprocess.run(
        [str(VENV_BIN / "ray"), "job", "logs", "--address", head_node, job_id], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60
    ).stdout
    assert "' succeeded" in status, f"status: {status[-500:]}\nlogs: {logs[-3000:]}"
    assert "MusicSlots-none" in logs  # the comparison table was printed

    # everything landed under the PARTITA_HOME given to the job, not in its temporary working copy
    assert (home / "data" / "jazznet-single" / "manifest.json").is_file()
    mlflow = client(f"sqlite:///{home}/mlflow.db")
    experiment = mlflow.get_experiment_by_name("musicslots-ablation-masks")
    runs = mlflow.search_runs([experiment.experiment_id])
    assert {r.info.status for r in runs} == {"FINISHED"} and len(runs) == 2  # the sweep and its one trial
