"""Real services for the tests, on loopback: an `mlflow server`, a `ray start --head` node, and the
smoke sweep submitted to that node as a user submits it (`ray job submit`).

The submitted sweep is expensive (a Ray head node, three trials, a tracking server over HTTP), so
one run serves every test that reads what a sweep leaves behind: the job's status and logs
(test_ray_job), the parent and child runs (test_ablation_masks), runs and artifacts over the REST
API (test_mlflow_server) and the pages a browser renders (test_mlflow_ui).
"""

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
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import yaml

from orchestration.tracking import PARENT_TAG

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(os.sys.executable).parent
CLUSTER_SERVER = ROOT / "k8s" / "base" / "mlflow" / "server.yaml"
SWEEP_ARGS = ["--preset", "smoke", "--dataset", "jazznet-single", "--seeds", "0", "--set", "data.chords.limit_chords=24"]
SWEEP_TRIALS = {"mask_norm=none,seed=0", "mask_norm=sigmoid,seed=0", "mask_norm=softmax,seed=0"}


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def cluster_allowed_hosts(namespace: str = "partita") -> str:
    """--allowed-hosts of the cluster's MLflow Deployment, as Kubernetes expands it in the pod."""
    deployment = next(d for d in yaml.safe_load_all(CLUSTER_SERVER.read_text()) if d and d["kind"] == "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    value = next(a.split("=", 1)[1] for a in args if a.startswith("--allowed-hosts="))
    return value.replace("$(POD_NAMESPACE)", namespace)


def rest(uri: str, endpoint: str, **query) -> dict:
    url = f"{uri}/api/2.0/mlflow/{endpoint}?{urllib.parse.urlencode(query)}"
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def search_runs(uri: str, experiment_id: str) -> list[dict]:
    request = urllib.request.Request(
        f"{uri}/api/2.0/mlflow/runs/search",
        data=json.dumps({"experiment_ids": [experiment_id], "max_results": 100}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["runs"]


def tags_of(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


@contextmanager
def mlflow_server_on_loopback(root: Path):
    """A real `mlflow server` with the cluster deployment's Host-header rules; stopped with every process it started."""
    from orchestration import mlflow_server

    [port] = free_ports(1)
    uri, log = f"http://127.0.0.1:{port}", root / "server.log"
    process = mlflow_server.start(
        host="127.0.0.1",
        port=port,
        backend_store_uri=f"sqlite:///{root / 'server.db'}",
        artifacts_destination=root / "artifacts",
        workers=1,
        allowed_hosts=cluster_allowed_hosts(),  # so that they are checked against real MLflow
        log_path=log,
    )
    try:
        mlflow_server.wait_ready(uri, process, timeout=180, log_path=log)
        yield SimpleNamespace(uri=uri, port=port, artifacts=root / "artifacts", process=process)
    finally:
        mlflow_server.stop(process)
        assert process.poll() is not None, "the mlflow server is still running"
        assert not group_alive(process.pid), "processes started by the mlflow server were left behind"


@contextmanager
def ray_head_node(processes_mentioning):
    """`ray start --head` with its own temp dir and ports; its dashboard address. Stopped (only it) afterwards."""
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
    )  # fmt: skip
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


def _job(head: str, command: str, *args: str, timeout: float = 180) -> str:
    """A `ray job` subcommand's output (the CLI writes its answers through logging, to stderr)."""
    env = os.environ | {"RAY_AUTH_MODE": "token"}
    done = subprocess.run(
        [str(VENV_BIN / "ray"), "job", command, "--address", head, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout
    )
    assert done.returncode == 0 or command == "submit", f"ray job {command} failed: {done.stdout[-3000:]}"
    return done.stdout


def submit_smoke_sweep(head: str, tracking_uri: str, home: Path) -> SimpleNamespace:
    """experiments/ablation_masks.py's smoke sweep through `ray job submit`, tracked by `tracking_uri`.

    Returns the job's final status line and logs, the links the sweep printed, and its runs as the
    tracking server's REST API returns them (parent and trials).
    """
    runtime_env = {"env_vars": {"PARTITA_HOME": str(home), "MLFLOW_TRACKING_URI": tracking_uri}}
    # As a user submits it: the CLI follows the job's logs until it ends (one process, where
    # polling `ray job status` every few seconds cost a Python start-up with Ray each time)
    submitted = _job(
        head, "submit", "--working-dir", str(ROOT), "--runtime-env-json", json.dumps(runtime_env), "--",
        "python", "experiments/ablation_masks.py", *SWEEP_ARGS, timeout=900,
    )  # fmt: skip
    job_id = re.search(r"raysubmit_[A-Za-z0-9]+", submitted).group()  # the CLI colours its output
    status = _job(head, "status", job_id).lower()
    logs = _job(head, "logs", job_id)
    found: dict = {"runs": []}
    if "' succeeded" in status:
        found["experiment"] = rest(tracking_uri, "experiments/get-by-name", experiment_name="musicslots-ablation-masks")["experiment"]
        found["runs"] = search_runs(tracking_uri, found["experiment"]["experiment_id"])
    parent = next((r for r in found["runs"] if tags_of(r).get("partita.kind") == "sweep"), None)
    trials = [r for r in found["runs"] if parent and tags_of(r).get(PARENT_TAG) == parent["info"]["run_id"]]
    return SimpleNamespace(
        status=status,
        logs=logs,
        printed=dict(re.findall(r"^  (compare the trials|the trials by \S+): (\S+)$", logs, re.M)),
        experiment=found.get("experiment"),
        runs=found["runs"],
        parent=parent,
        trials=trials,
        home=home,
        tracking_uri=tracking_uri,
    )
