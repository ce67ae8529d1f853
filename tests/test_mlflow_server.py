"""A real `mlflow server` on a free loopback port: runs logged over HTTP, read back through the REST API.

One server for the module (it takes 15-40 s to start on two shared cores); it is always stopped,
with every process it started, even when a test fails.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from components.errors import PartitaError
from orchestration import mlflow_server, tracking

pytestmark = pytest.mark.timeout(600)

REPO = Path(__file__).resolve().parents[1]
CLUSTER_SERVER = REPO / "k8s" / "base" / "mlflow" / "server.yaml"


def _cluster_allowed_hosts(namespace: str = "partita") -> str:
    """--allowed-hosts of the cluster's MLflow Deployment, as Kubernetes expands it in the pod."""
    deployment = next(d for d in yaml.safe_load_all(CLUSTER_SERVER.read_text()) if d and d["kind"] == "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    value = next(a.split("=", 1)[1] for a in args if a.startswith("--allowed-hosts="))
    return value.replace("$(POD_NAMESPACE)", namespace)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    log = root / "server.log"
    process = mlflow_server.start(
        host="127.0.0.1",
        port=port,
        backend_store_uri=f"sqlite:///{root / 'server.db'}",
        artifacts_destination=root / "artifacts",
        workers=1,
        # the cluster deployment's Host-header rules, so that they are checked against real MLflow
        allowed_hosts=_cluster_allowed_hosts(),
        log_path=log,
    )
    try:
        mlflow_server.wait_ready(uri, process, timeout=180, log_path=log)
        yield SimpleNamespace(uri=uri, port=port, artifacts=root / "artifacts", process=process)
    finally:
        mlflow_server.stop(process)
        assert process.poll() is not None, "the mlflow server is still running"
        assert not _group_alive(process.pid), "processes started by the mlflow server were left behind"


def _rest(uri: str, endpoint: str, **query) -> dict:
    url = f"{uri}/api/2.0/mlflow/{endpoint}?{urllib.parse.urlencode(query)}"
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def trained_run(server, ray_session, small_chords, tmp_path_factory):
    """A smoke MusicSlots training run (Ray Train) tracked by the server over HTTP; its run id."""
    from orchestration.config import load_config
    from orchestration.experiment import CONFIGS
    from orchestration.trainer import train

    saved = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = server.uri
    try:
        assert tracking.tracking_uri() == server.uri
        experiment_id = tracking.ensure_experiment("server-smoke")
        assert tracking.ensure_experiment("server-smoke") == experiment_id  # found, not created twice
        config = load_config(
            [CONFIGS / "musicslots" / "smoke.yaml"],
            ["train.steps=10", "train.eval_every=10", "train.log_every=5", f"train.storage_path={tmp_path_factory.mktemp('runs')}"],
            base={"data": {"name": "jazznet-multi", "root": str(small_chords.parent), "chords": {"limit_chords": 40}}},
        )
        outcome = train(config, run_key="server-smoke/train", run_name="smoke-seed0", experiment_id=experiment_id)
    finally:
        if saved is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved
    return outcome["run_id"]


def test_training_run_over_http_reads_back_through_rest(server, trained_run):
    run = _rest(server.uri, "runs/get", run_id=trained_run)["run"]
    assert run["info"]["status"] == "FINISHED"
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params["model.family"] == "musicslots" and params["train.steps"] == "10" and len(params["data.content_hash"]) == 64
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert tags[tracking.RUN_KEY_TAG] == "server-smoke/train"
    history = _rest(server.uri, "metrics/get-history", run_id=trained_run, metric_key="train/loss")["metrics"]
    assert sorted(m["step"] for m in history) == [5, 10]
    assert "test/miou" in {m["key"] for m in run["data"]["metrics"]}


def test_artifacts_are_proxied_into_the_servers_destination(server, trained_run):
    run = _rest(server.uri, "runs/get", run_id=trained_run)["run"]
    # the workers were given a proxied location, not a path on their own disk
    assert run["info"]["artifact_uri"].startswith("mlflow-artifacts:/"), run["info"]["artifact_uri"]
    listed = _rest(server.uri, "artifacts/list", run_id=trained_run, path="figures")
    assert [f["path"] for f in listed.get("files", [])] == ["figures/test_decomposition.png"]


def _status_with_host(uri: str, host: str) -> int:
    request = urllib.request.Request(f"{uri}/api/2.0/mlflow/experiments/search?max_results=1", headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def test_cluster_host_rules_admit_the_service_names_and_port_forwards_only(server):
    # Ray pods use http://mlflow:5000; a port-forward arrives as localhost / 127.0.0.1
    for host in ("mlflow:5000", "mlflow.partita.svc:5000", "mlflow.partita.svc.cluster.local:5000", "localhost:5000", f"127.0.0.1:{server.port}"):
        assert _status_with_host(server.uri, host) == 200, host
    # DNS rebinding: any other name is refused
    for host in ("evil.example.com", "mlflow.evil.example.com:5000", "10.0.0.7:5000"):
        assert _status_with_host(server.uri, host) == 403, host


def test_port_in_use_is_a_user_error(server):
    with pytest.raises(PartitaError, match=f"127.0.0.1:{server.port}"):
        mlflow_server.start(host="127.0.0.1", port=server.port)


def test_ui_without_embedded_database_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PARTITA_HOME", str(tmp_path))
    with pytest.raises(PartitaError, match="no embedded MLflow database"):
        mlflow_server.ui(port=_free_port())


def test_commands_and_default_locations(tmp_path, monkeypatch):
    monkeypatch.setenv("PARTITA_HOME", str(tmp_path))
    parser = argparse.ArgumentParser(prog="partita")
    mlflow_server.add_commands(parser.add_subparsers(dest="command", required=True))

    args = parser.parse_args(["mlflow", "serve"])
    assert (args.host, args.port, args.run) == ("127.0.0.1", 5000, mlflow_server._serve)
    args = parser.parse_args(["mlflow", "serve", "--port", "5055", "--artifacts-destination", "s3://bucket/mlflow"])
    assert (args.port, args.artifacts_destination) == (5055, "s3://bucket/mlflow")
    assert parser.parse_args(["mlflow", "ui", "--port", "5001"]).run == mlflow_server._ui
    with pytest.raises(SystemExit):
        parser.parse_args(["mlflow"])

    command = mlflow_server.server_command()
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert command[command.index("--backend-store-uri") + 1] == f"sqlite:///{Path(tmp_path).resolve() / 'mlflow-server.db'}"
    assert command[command.index("--artifacts-destination") + 1] == str(Path(tmp_path).resolve() / "mlartifacts")
    assert mlflow_server.client_uri("127.0.0.1", 5000) == "http://127.0.0.1:5000"
    assert mlflow_server.client_uri("0.0.0.0", 5001) == "http://127.0.0.1:5001"  # the export line works here


def test_serve_prints_the_uri_to_export(tmp_path, monkeypatch, capsys):
    """`partita mlflow serve` glue, without a second server: what it starts and what it prints."""
    monkeypatch.setenv("PARTITA_HOME", str(tmp_path))
    started = {}

    class FakeServer:
        returncode = None

        def poll(self):
            return None

    def fake_start(host, port, backend, destination, workers, allowed_hosts, foreground=False):
        started.update(host=host, port=port, backend=backend, destination=destination, foreground=foreground)
        return FakeServer()

    monkeypatch.setattr(mlflow_server, "start", fake_start)
    monkeypatch.setattr(mlflow_server, "wait_ready", lambda uri, process, timeout: started.update(probed=uri))
    monkeypatch.setattr(mlflow_server, "_run_foreground", lambda process: -2)  # Ctrl-C
    assert mlflow_server.serve(port=5123) == 0
    home = Path(tmp_path).resolve()
    assert started == {
        "host": "127.0.0.1",
        "port": 5123,
        "backend": f"sqlite:///{home / 'mlflow-server.db'}",
        "destination": str(home / "mlartifacts"),
        "foreground": True,
        "probed": "http://127.0.0.1:5123",
    }
    assert "export MLFLOW_TRACKING_URI=http://127.0.0.1:5123\n" in capsys.readouterr().out
