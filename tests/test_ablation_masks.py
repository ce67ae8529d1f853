"""The mask-normalisation ablation end to end (Tune + Ray Train, submitted as a job, tracked by an MLflow server), and its bad input."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from orchestration.tracking import PARENT_TAG, client
from tests.entry_points import run_entry_point

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ["--preset", "smoke", "--dataset", "jazznet-single", "--seeds", "0", "--set", "data.chords.limit_chords=24"]


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_smoke_sweep_logs_a_parent_run_and_one_child_per_mask_norm(submitted_sweep):
    printed = submitted_sweep.logs
    assert "MusicSlots-none" in printed and "44.49 ± 0.62" in printed  # the paper's number beside ours
    assert "A pipeline check, not a result" in printed and "ablation_masks.py --preset cpu" in printed  # smoke says so, and what learns

    mlflow = client(submitted_sweep.tracking_uri)
    experiment = mlflow.get_experiment_by_name("musicslots-ablation-masks")
    runs = mlflow.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("partita.kind") == "sweep"]
    assert len(parents) == 1
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get(PARENT_TAG) == parent.info.run_id]
    assert sorted(r.data.params["model.mask_norm"] for r in children) == ["none", "sigmoid", "softmax"]
    for child in children:
        assert child.info.status == "FINISHED"
        for metric in ("test/note_mse", "test/miou", "val/miou", "train/loss"):
            assert math.isfinite(child.data.metrics[metric]), metric
        assert 0 <= child.data.metrics["test/miou"] <= 1
        assert child.data.params["data.content_hash"] == parent.data.params["data.content_hash"]
        assert child.data.params["train.steps"] == "20"
        assert child.data.tags["partita.code_version"]
        artifacts = {a.path for a in mlflow.list_artifacts(child.info.run_id)} | {
            a.path for a in mlflow.list_artifacts(child.info.run_id, "figures")
        }
        assert {"config.json", "figures/test_decomposition.png"} <= artifacts
        # the loss curve has one point per log_every steps
        assert len(mlflow.get_metric_history(child.info.run_id, "train/loss")) == 4
    assert "results.md" in {a.path for a in mlflow.list_artifacts(parent.info.run_id)}
    assert parent.info.status == "FINISHED"


def test_bad_sweep_input_fails_before_any_training(tmp_path, capsys):
    cases = [
        (["--set", "model.mask_norm=soft"], "model.mask_norm = 'soft'"),
        (["--set", "sweep.grid.model.mask_norm=[none, softmx]"], "grid value 'softmx'"),
        (["--dataset", "jsb-mutli"], "unknown data set 'jsb-mutli'"),
        (["--set", "train.nope=1"], "config key 'train.nope' does not exist"),
    ]
    for extra, message in cases:
        result = run_entry_point(["experiments/ablation_masks.py", *SMOKE, *extra], {"PARTITA_HOME": str(tmp_path)}, capsys)
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and "fix:" in result.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()


def test_unreachable_tracking_server_fails_before_training(tmp_path):
    """Through a real process: the exit code and the one line a shell sees."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    env = os.environ | {"PARTITA_HOME": str(tmp_path), "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"}
    result = subprocess.run([sys.executable, "experiments/ablation_masks.py", *SMOKE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert f"MLflow tracking server http://127.0.0.1:{port} is unreachable" in result.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()
