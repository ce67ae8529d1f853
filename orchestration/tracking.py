"""MLflow: where runs go, creating experiments once, what every run records, and where to look.

The embedded default is a SQLite database under PARTITA_HOME with artifacts in
PARTITA_HOME/mlartifacts; MLFLOW_TRACKING_URI selects a tracking server
instead (artifacts then go through the server). Experiments are created on the
driver only: concurrent creation from trials collides on SQLite.

The links a sweep prints are checked against MLflow 3.17's UI in a real browser
(tests/test_mlflow_ui.py).
"""

from __future__ import annotations

import json
import os
import platform
import re
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from components.errors import PartitaError
from orchestration import paths
from orchestration.config import flatten
from orchestration.versions import code_version, package_versions

PARENT_TAG = "mlflow.parentRunId"
RUN_KEY_TAG = "partita.run_key"
NOTE_TAG = "mlflow.note.content"  # the run page's description (markdown)
# Without a kind MLflow 3 takes an experiment for a GenAI one; the UI's experiment-type
# selector reads and writes this tag.
KIND_TAG, TRAINING_KIND = "mlflow.experimentKind", "custom_model_development"
PRIMARY_METRIC_TAG = "mlflow.experiment.primaryMetric.name"  # leads the experiment's chart view
GREATER_IS_BETTER_TAG = "mlflow.experiment.primaryMetric.greaterIsBetter"
TAG_LIMIT = 8000  # MLflow's limit on a tag value
DIGEST_LENGTH = 16  # of the content hash, as the dataset digest (MLflow allows 36 characters)


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
        if KIND_TAG not in experiment.tags:  # created before partita set it; a kind chosen in the UI stays
            mlflow_client.set_experiment_tag(experiment.experiment_id, KIND_TAG, TRAINING_KIND)
        return experiment.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        # next to the database, not in whatever the working directory happens to be
        location = (paths.home() / "mlartifacts" / name).as_uri()
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.create_experiment(name, artifact_location=location, tags={KIND_TAG: TRAINING_KIND})
    except MlflowException:
        # two processes started at once (two sweeps of one experiment): the other created it after our lookup
        experiment = mlflow_client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


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


def source_tags(script: str | None = None) -> dict[str, str]:
    """MLflow's Source: the script that started the run (default: this process's), at its commit."""
    path, root = Path(script or sys.argv[0]).resolve(), paths.project_root()
    name = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
    tags = {"mlflow.source.name": name, "mlflow.source.type": "LOCAL"}
    commit = code_version().removesuffix("+dirty")
    if commit != "unknown":
        tags["mlflow.source.git.commit"] = commit
    return tags


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


def mlflow_key(name: str) -> str:
    """`name` with each character MLflow refuses in a param, metric or tag key replaced by "_".

    Config keys come from user YAML (a sweep variant named "pTS(s)" becomes the param
    "sweep.variants.pTS(s).model.schedule"), and MLflow accepts only alphanumerics and _ - . : / and space.
    """
    return re.sub(r"[^\w\-.:/ ]", "_", name, flags=re.ASCII)


class RunLogger:
    """Logs into one existing MLflow run by id (from any process: driver, trial or worker)."""

    def __init__(self, run_id: str, uri: str | None = None):
        self.run_id = run_id
        self.client = client(uri)

    def params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        logged = self.client.get_run(self.run_id).data.params
        fresh = [Param(mlflow_key(k), v) for k, v in params.items() if mlflow_key(k) not in logged]
        for start in range(0, len(fresh), 100):  # MLflow's batch limit
            self.client.log_batch(self.run_id, params=fresh[start : start + 100])

    def tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(mlflow_key(k), str(v)) for k, v in tags.items()])

    def dataset(self, manifest: dict, path: Path, context: str = "train") -> None:
        """The data set as an MLflow dataset input: name, content hash, the split trained on, its folder."""
        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.exceptions import MlflowException

        dataset = Dataset(
            name=manifest["name"],
            digest=manifest["content_hash"][:DIGEST_LENGTH],
            source_type="local",
            source=json.dumps({"uri": Path(path).resolve().as_uri()}),
            profile=json.dumps({"rows": {split: entry["rows"] for split, entry in manifest["splits"].items()}}),
        )
        inputs = [DatasetInput(dataset, [InputTag("mlflow.data.context", context)])]
        try:
            self.client.log_inputs(self.run_id, inputs)
        except MlflowException as err:
            # Concurrent trials of a sweep register the same data set: MLflow looks for the row, then inserts it, and
            # the slower insert breaks the table's unique key. Once the row exists, a second call finds it.
            if "unique constraint" not in str(err).lower():
                raise
            self.client.log_inputs(self.run_id, inputs)

    def metrics(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(mlflow_key(k), float(v), now, step) for k, v in values.items()])

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


def ui_address(uri: str | None = None) -> str:
    """Where a browser finds the runs: the tracking server itself, else `partita mlflow ui` (embedded store)."""
    from orchestration.mlflow_server import DEFAULT_HOST, DEFAULT_PORT, client_uri

    uri = uri or tracking_uri()
    return uri.rstrip("/") if uri.startswith(("http://", "https://")) else client_uri(DEFAULT_HOST, DEFAULT_PORT)


def compare_url(experiment_id: str, run_ids: list[str], uri: str | None = None) -> str:
    """MLflow's comparison page of `run_ids`: parallel coordinates, then params and metrics side by side."""
    query = "&".join(
        f"{key}={quote(json.dumps(value, separators=(',', ':')), safe='')}" for key, value in (("runs", run_ids), ("experiments", [experiment_id]))
    )
    return f"{ui_address(uri)}/#/compare-runs?{query}"


def ranked_url(experiment_id: str, parent_run_id: str, metric: str, mode: str, uri: str | None = None) -> str:
    """The experiment's training-runs view of one sweep's trials, best `metric` first."""
    query = {
        # MLflow 3.17 opens experiments on its GenAI overview whatever their kind tag, unless
        # the page is asked for the machine-learning workflow (the sidebar switch)
        "workflowType": "machine_learning",
        "searchFilter": f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
        "orderByKey": f"metrics.`{metric}`",
        "orderByAsc": "true" if mode == "min" else "false",
    }
    return f"{ui_address(uri)}/#/experiments/{experiment_id}/runs?{urlencode(query, quote_via=quote)}"


def publish_sweep(
    experiment_id: str, parent_run_id: str, metric: str, mode: str, table: str, manifest: dict, data_path: Path, uri: str | None = None
) -> dict[str, str]:
    """A finished sweep's links, description, data set and source on its parent run; returns the links.

    "compare": MLflow's comparison page of the trials; "ranked": the trials in the experiment's
    runs view, best `metric` first (the comparison page cannot be told which metric to plot).

    Run on the driver: the trials' source is the script that started the sweep.
    """
    mlflow_client = client(uri)
    trials = mlflow_client.search_runs(
        [experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'", order_by=["attributes.start_time ASC"], max_results=1000
    )
    links = {
        "compare": compare_url(experiment_id, [run.info.run_id for run in trials], uri),
        "ranked": ranked_url(experiment_id, parent_run_id, metric, mode, uri),
    }
    source = source_tags()
    for run in trials:
        RunLogger(run.info.run_id, uri).tags(source)
    # the comparison link of a hundred trials outgrows what a tag holds beside the table
    kept = {kind: url for kind, url in links.items() if len(url) <= TAG_LIMIT // 2}
    labels = {"compare": "compare the trials", "ranked": f"the trials by {metric}"}
    note = "\n".join(f"- [{labels[kind]}]({url})" for kind, url in kept.items()) + "\n\n" + table
    if len(note) > TAG_LIMIT:
        note = note[: TAG_LIMIT - 40] + "\n\n(cut: the whole table is results.md)"
    parent = RunLogger(parent_run_id, uri)
    parent.tags(source | {NOTE_TAG: note} | {f"partita.{kind}_url": url for kind, url in kept.items()})
    parent.dataset(manifest, data_path)
    mlflow_client.set_experiment_tag(experiment_id, PRIMARY_METRIC_TAG, metric)
    mlflow_client.set_experiment_tag(experiment_id, GREATER_IS_BETTER_TAG, str(mode == "max").lower())
    return links
