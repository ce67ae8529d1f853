"""MLflow: where runs go, creating experiments once, and what every run records.

The embedded default is a SQLite database under PARTITA_HOME with artifacts in
PARTITA_HOME/mlartifacts; MLFLOW_TRACKING_URI selects a tracking server
instead (artifacts then go through the server). Experiments are created on the
driver only: concurrent creation from trials collides on SQLite.
"""

from __future__ import annotations

import json
import os
import platform
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from components.errors import PartitaError
from orchestration import paths
from orchestration.config import flatten
from orchestration.versions import code_version, package_versions

PARENT_TAG = "mlflow.parentRunId"
RUN_KEY_TAG = "partita.run_key"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{paths.home() / 'mlflow.db'}"


def check_reachable(uri: str) -> None:
    """Fail now, naming the URI, if the tracking store cannot be used."""
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5) as response:
                response.read()
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise PartitaError(
                f"MLflow tracking server {uri} is unreachable ({reason})",
                "start it (partita mlflow serve) or unset MLFLOW_TRACKING_URI to use the embedded database",
            ) from None
    elif uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise PartitaError(f"cannot create the MLflow database folder {folder} ({err})", "set PARTITA_HOME to a writable folder") from None


def client(uri: str | None = None):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri or tracking_uri())


def ensure_experiment(name: str, uri: str | None = None) -> str:
    """The id of experiment `name`, created if needed (call on the driver, once)."""
    uri = uri or tracking_uri()
    check_reachable(uri)
    mlflow_client = client(uri)
    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        # next to the database, not in whatever the working directory happens to be
        location = (paths.home() / "mlartifacts" / name).as_uri()
    return mlflow_client.create_experiment(name, artifact_location=location)


def run_record(config: dict, manifest: dict | None) -> tuple[dict[str, str], dict[str, str]]:
    """(params, tags) every run logs: the resolved config, data identity, code and package versions."""
    params = {key: _param(value) for key, value in flatten(config).items()}
    tags = {
        "partita.code_version": code_version(),
        "partita.host": platform.node(),
        **{f"partita.version.{name}": version for name, version in package_versions().items()},
    }
    if manifest is not None:
        params["data.content_hash"] = manifest["content_hash"]
        params["data.recipe_hash"] = manifest["recipe_hash"]
    return params, tags


def _param(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text[:6000]  # MLflow's limit on a param value


def find_or_create_run(experiment_id: str, run_key: str, run_name: str, tags: dict[str, str], uri: str | None = None) -> str:
    """The run tagged `run_key` in the experiment (a resumed run continues it), else a new one."""
    mlflow_client = client(uri)
    existing = mlflow_client.search_runs(
        [experiment_id], filter_string=f"tags.`{RUN_KEY_TAG}` = '{run_key}'", max_results=1
    )
    if existing:
        run_id = existing[0].info.run_id
        mlflow_client.update_run(run_id, status="RUNNING")
        return run_id
    run = mlflow_client.create_run(experiment_id, run_name=run_name, tags={RUN_KEY_TAG: run_key, **tags})
    return run.info.run_id


class RunLogger:
    """Logs into one existing MLflow run by id (from any process: driver, trial or worker)."""

    def __init__(self, run_id: str, uri: str | None = None):
        self.run_id = run_id
        self.client = client(uri)

    def params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        logged = self.client.get_run(self.run_id).data.params
        fresh = [Param(k, v) for k, v in params.items() if k not in logged]
        for start in range(0, len(fresh), 100):  # MLflow's batch limit
            self.client.log_batch(self.run_id, params=fresh[start : start + 100])

    def tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def metrics(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in values.items()])

    def figure(self, figure, name: str) -> None:
        self.client.log_figure(self.run_id, figure, name)

    def json(self, data: Any, name: str) -> None:
        self.client.log_dict(self.run_id, data, name)

    def text(self, text: str, name: str) -> None:
        self.client.log_text(self.run_id, text, name)

    def file(self, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def finish(self, status: str = "FINISHED", error: str | None = None) -> None:
        if error:
            self.tags({"partita.error": error[:5000]})
        self.client.set_terminated(self.run_id, status=status)
