"""Logging keys MLflow would refuse: they arrive with the offending characters replaced, and the rest of the key intact.
A data set two trials register at once is logged all the same, and so is an experiment two processes create at once."""

from __future__ import annotations

import pytest
from mlflow.exceptions import MlflowException
from mlflow.utils.validation import _validate_metric_name, _validate_param_name

from orchestration.tracking import RunLogger, client, ensure_experiment, find_or_create_run, mlflow_key


def test_keys_from_user_names_are_made_acceptable_to_mlflow():
    assert mlflow_key("sweep.variants.pTS(s).model.schedule") == "sweep.variants.pTS_s_.model.schedule"
    assert mlflow_key("test/T'/f1") == "test/T_/f1"
    assert mlflow_key("val/si_sdri_bass: 1-2") == "val/si_sdri_bass: 1-2"  # already acceptable: unchanged
    for key in ("a(b)", "x'y", "é", "k=v"):
        _validate_param_name(mlflow_key(key))
        _validate_metric_name(mlflow_key(key))


def test_a_run_logs_params_metrics_and_tags_under_such_keys(isolated_home):
    run_id = find_or_create_run(ensure_experiment("tracking-keys"), "keys", "keys", {})
    logger = RunLogger(run_id)
    logger.params({"sweep.variants.pTS(s).model.schedule": "joint"})
    logger.metrics({"test/T'/f1": 0.5}, 0)
    logger.tags({"note(1)": "x"})
    data = client().get_run(run_id).data
    assert data.params["sweep.variants.pTS_s_.model.schedule"] == "joint"
    assert data.metrics["test/T_/f1"] == 0.5 and data.tags["note_1_"] == "x"


def test_a_data_set_logged_by_a_concurrent_trial_first_is_still_logged(isolated_home, monkeypatch):
    """Two trials register the same data set at once: the slower insert breaks MLflow's unique key; it is tried again."""

    manifest = {"name": "chords", "content_hash": "abc123" * 4, "splits": {"train": {"rows": 16}}}
    run_id = find_or_create_run(ensure_experiment("tracking-datasets"), "ds", "ds", {})
    logger = RunLogger(run_id)
    real, failures = logger.client.log_inputs, []

    def racing(run, inputs, error="(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id, datasets.name, datasets.digest"):
        if not failures:
            failures.append(error)
            raise MlflowException(error)
        return real(run, inputs)

    monkeypatch.setattr(logger.client, "log_inputs", racing)
    logger.dataset(manifest, isolated_home)
    assert len(failures) == 1 and [d.dataset.name for d in client().get_run(run_id).inputs.dataset_inputs] == ["chords"]

    failures.clear()
    monkeypatch.setattr(logger.client, "log_inputs", lambda run, inputs: racing(run, inputs, "database is locked"))
    with pytest.raises(MlflowException, match="database is locked"):  # anything else is not retried
        logger.dataset(manifest, isolated_home)


def test_an_experiment_created_by_another_process_after_the_lookup_is_used(isolated_home, monkeypatch):
    experiment_id = ensure_experiment("tracking-race")
    real, lookups = client, []

    def racing_client(uri=None):
        mlflow_client = real(uri)
        real_lookup = mlflow_client.get_experiment_by_name

        def lookup(name):  # the first lookup runs before the other process's insert
            lookups.append(name)
            return None if len(lookups) == 1 else real_lookup(name)

        monkeypatch.setattr(mlflow_client, "get_experiment_by_name", lookup)
        return mlflow_client

    monkeypatch.setattr("orchestration.tracking.client", racing_client)
    assert ensure_experiment("tracking-race") == experiment_id and len(lookups) == 2
