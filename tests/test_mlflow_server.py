"""A real `mlflow server` on a free loopback port (conftest.tracking_server): runs logged over HTTP by
the submitted smoke sweep's Ray Train workers, read back through the REST API; its Host rules; the
`partita mlflow` commands.
"""

from __future__ import annotations

import argparse
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from components.errors import PartitaError
from orchestration import mlflow_server, tracking
from tests.services import free_ports, rest, tags_of

pytestmark = pytest.mark.timeout(600)


def _a_trial(sweep) -> dict:
    """One trial of the submitted sweep: a Ray Train run whose workers logged to the server over HTTP."""
    assert sweep.trials, f"the submitted sweep left no trials: {sweep.status[-500:]}"
    return sweep.trials[0]


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_training_run_over_http_reads_back_through_rest(tracking_server, submitted_sweep):
    run_id = _a_trial(submitted_sweep)["info"]["run_id"]
    run = rest(tracking_server.uri, "runs/get", run_id=run_id)["run"]
    assert run["info"]["status"] == "FINISHED"
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params["model.family"] == "musicslots" and params["train.steps"] == "20" and len(params["data.content_hash"]) == 64
    assert tags_of(run)[tracking.RUN_KEY_TAG].endswith("/" + run["info"]["run_name"])  # the sweep's key, then the trial's
    history = rest(tracking_server.uri, "metrics/get-history", run_id=run_id, metric_key="train/loss")["metrics"]
    assert sorted(m["step"] for m in history) == [5, 10, 15, 20]
    assert "test/miou" in {m["key"] for m in run["data"]["metrics"]}


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_artifacts_are_proxied_into_the_servers_destination(tracking_server, submitted_sweep):
    run_id = _a_trial(submitted_sweep)["info"]["run_id"]
    run = rest(tracking_server.uri, "runs/get", run_id=run_id)["run"]
    # the workers were given a proxied location, not a path on their own disk
    assert run["info"]["artifact_uri"].startswith("mlflow-artifacts:/"), run["info"]["artifact_uri"]
    listed = rest(tracking_server.uri, "artifacts/list", run_id=run_id, path="figures")
    assert [f["path"] for f in listed.get("files", [])] == ["figures/test_decomposition.png"]
    assert list(tracking_server.artifacts.rglob("test_decomposition.png"))  # stored in the server's destination


def _status_with_host(uri: str, host: str) -> int:
    request = urllib.request.Request(f"{uri}/api/2.0/mlflow/experiments/search?max_results=1", headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def test_cluster_host_rules_admit_the_service_names_and_port_forwards_only(tracking_server):
    # Ray pods use http://mlflow:5000; a port-forward arrives as localhost / 127.0.0.1
    for host in ("mlflow:5000", "mlflow.partita.svc:5000", "mlflow.partita.svc.cluster.local:5000", "localhost:5000", f"127.0.0.1:{tracking_server.port}"):
        assert _status_with_host(tracking_server.uri, host) == 200, host
    # DNS rebinding: any other name is refused
    for host in ("evil.example.com", "mlflow.evil.example.com:5000", "10.0.0.7:5000"):
        assert _status_with_host(tracking_server.uri, host) == 403, host


def test_port_in_use_is_a_user_error(tracking_server):
    with pytest.raises(PartitaError, match=f"127.0.0.1:{tracking_server.port}"):
        mlflow_server.start(host="127.0.0.1", port=tracking_server.port)


def test_ui_without_embedded_database_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PARTITA_HOME", str(tmp_path))
    with pytest.raises(PartitaError, match="no embedded MLflow database"):
        mlflow_server.ui(port=free_ports(1)[0])


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
