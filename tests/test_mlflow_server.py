"""A real `mlflow server` on a free loopback port: runs logged over HTTP, read back through the REST API.

One server for the module (it takes 15-40 s to start on two shared cores); it is always stopped,
with every process it started, even when a test fails.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import urllib.parse
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

from components.errors import PartitaError
from orchestration import mlflow_server, tracking

pytestmark = pytest.mark.timeout(240)


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


def _log_run(monkeypatch, uri: str) -> str:
    """Log one run through orchestration.tracking over HTTP, as a training run does; returns its id."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert tracking.tracking_uri() == uri
    experiment_id = tracking.ensure_experiment("server-smoke")
    assert tracking.ensure_experiment("server-smoke") == experiment_id  # found, not created twice
    run_id = tracking.find_or_create_run(experiment_id, "server-smoke/seed0", "smoke-seed0", {"partita.test": "server"})
    logger = tracking.RunLogger(run_id)
    logger.params({"train.lr": "0.0003", "model.family": "smoke"})
    for step, loss in enumerate([1.5, 0.75, 0.5]):
        logger.metrics({"train/loss": loss}, step=step)
    logger.text("hello from a worker\n", "notes/hello.txt")
    logger.finish()
    # a resumed run (same key) continues the same MLflow run
    assert tracking.find_or_create_run(experiment_id, "server-smoke/seed0", "smoke-seed0", {}) == run_id
    tracking.RunLogger(run_id).finish()
    return run_id


def test_run_logged_over_http_reads_back_through_rest(server, monkeypatch):
    run_id = _log_run(monkeypatch, server.uri)

    run = _rest(server.uri, "runs/get", run_id=run_id)["run"]
    assert run["info"]["status"] == "FINISHED"
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params == {"train.lr": "0.0003", "model.family": "smoke"}
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert tags[tracking.RUN_KEY_TAG] == "server-smoke/seed0"
    assert tags["partita.test"] == "server"

    history = _rest(server.uri, "metrics/get-history", run_id=run_id, metric_key="train/loss")["metrics"]
    assert [(m["step"], m["value"]) for m in sorted(history, key=lambda m: m["step"])] == [(0, 1.5), (1, 0.75), (2, 0.5)]


def test_artifacts_are_proxied_into_the_servers_destination(server, monkeypatch):
    run_id = _log_run(monkeypatch, server.uri)
    run = _rest(server.uri, "runs/get", run_id=run_id)["run"]
    # the client was given a proxied location, not a path on its own disk
    assert run["info"]["artifact_uri"].startswith("mlflow-artifacts:/"), run["info"]["artifact_uri"]
    listed = _rest(server.uri, "artifacts/list", run_id=run_id, path="notes")
    assert [f["path"] for f in listed.get("files", [])] == ["notes/hello.txt"]
    stored = list(server.artifacts.rglob("hello.txt"))
    assert len(stored) == 1 and run_id in stored[0].parts
    assert stored[0].read_text() == "hello from a worker\n"


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
