"""The bad-input table: each case gets a one-line error naming the problem and the fix, exit 2, and no output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from components.data.chords.reader import ChordData
from components.errors import PartitaError

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ["--preset", "smoke", "--dataset", "jazznet-single", "--seeds", "0"]

CASES = {
    "unknown data set": (["partita", "data", "build", "jsb-mutli"], "unknown data set 'jsb-mutli'"),
    "unknown model family": (["partita", "train", "--family", "musicslots", "--preset", "smoke", "--set", "model.family=musicslot"], "unknown model family 'musicslot'"),
    "unknown mask norm": (["experiments/ablation_masks.py", *SMOKE, "--set", "model.mask_norm=softmx"], "model.mask_norm = 'softmx'"),
    "negative beta": (["experiments/ablation_beta.py", *SMOKE, "--set", "sweep.grid.model.beta=[0.5, -1]"], "beta must be > 0"),
    "malformed YAML": (["experiments/ablation_masks.py", *SMOKE, "--config", "{bad_yaml}"], "bad.yaml' is not valid YAML at line 3"),
    "override of a missing key": (["experiments/ablation_masks.py", *SMOKE, "--set", "train.learning_rate=1e-3"], "config key 'train.learning_rate' does not exist"),
    "missing soundfont": (["partita", "data", "build", "jazznet-single", "--set", "chords.synth.soundfont=NoSuchFont"], "soundfont 'NoSuchFont' not found"),
    "JSB file of the wrong shape": (["partita", "data", "build", "jsb-single", "--jsb-json", "{bad_jsb}"], "has the wrong shape"),
    "probe of a model without a representation": (["partita", "probe", "no-such-run"], "MLflow run 'no-such-run' does not exist"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_fails_with_one_line_and_writes_nothing(case, tmp_path):
    args, message = CASES[case]
    (tmp_path / "bad.yaml").write_text("model:\n  family: [musicslots\n")
    (tmp_path / "bad.json").write_text(json.dumps({"train": [[60, 64]], "valid": []}))
    args = [a.replace("{bad_yaml}", str(tmp_path / "bad.yaml")).replace("{bad_jsb}", str(tmp_path / "bad.json")) for a in args]
    command = [sys.executable, "-m", "orchestration.cli", *args[1:]] if args[0] == "partita" else [sys.executable, *args]
    home = tmp_path / "home"
    result = subprocess.run(command, cwd=ROOT, env=os.environ | {"PARTITA_HOME": str(home)}, capture_output=True, text=True, timeout=180)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip() and "mlflow.store.db.utils" not in line]
    assert len(lines) == 1, result.stderr
    assert message in lines[0] and "fix:" in lines[0]
    leftovers = [p for p in home.rglob("*") if p.is_file() and p.name != "mlflow.db"] if home.exists() else []
    assert not leftovers, leftovers


def test_an_empty_split_is_refused_by_name(small_chords, tmp_path):
    import shutil

    copy = tmp_path / small_chords.name
    shutil.copytree(small_chords, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["splits"]["valid"] = {"rows": 0, "files": []}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PartitaError, match="split 'valid' of jazznet-multi is empty"):
        ChordData(copy).split("valid")


def test_a_dataset_folder_without_manifest_is_not_mistaken_for_a_build(tmp_path):
    (tmp_path / "jsb-multi" / "train").mkdir(parents=True)
    with pytest.raises(PartitaError, match="not a complete data set"):
        ChordData(tmp_path / "jsb-multi")


def test_a_probe_of_a_family_without_a_representation_names_the_families_that_have_one(tmp_path):
    import mlflow

    from orchestration.probe import CHECKPOINT_TAG, probe_run

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking = mlflow.MlflowClient(uri)
    experiment = tracking.create_experiment("probe-refusal")
    run = tracking.create_run(experiment, tags={"partita.family": "supervised_cnn", CHECKPOINT_TAG: "file:///nowhere"})
    tracking.set_terminated(run.info.run_id)
    with pytest.raises(PartitaError, match="supervised_cnn model, which has no representation to probe") as error:
        probe_run(run.info.run_id, uri=uri)
    assert "musicslots, autoencoder, vae" in str(error.value)
