"""Kelz's two-stage experiment end to end at smoke size, into the session's temporary MLflow."""

from __future__ import annotations

import json
import math

import numpy as np
import pretty_midi
import pytest
import soundfile

from orchestration.apply import RECORD, apply_run
from orchestration.tracking import PARENT_TAG, client
from tests.entry_points import script_module

SMOKE = ["--preset", "smoke", "--set", "sweep.grid.model.snippets.scheme=[all]"]


@pytest.mark.slow
def test_smoke_run_prints_the_table_and_logs_runs_and_figures(ray_session, capsys, tmp_path):
    assert script_module("experiments/kelz_two_stage.py").main(SMOKE) == 0
    printed = capsys.readouterr().out
    for split, paper in (("train", "0.609"), ("valid", "0.535"), ("test", "0.489")):
        row = next(line for line in printed.splitlines() if line.startswith(f"| {split} | T' |"))
        assert row.endswith(f"| {paper} |")  # the paper's F1 beside ours
        f1 = float(row.split("|")[6])
        assert 0 <= f1 <= 1
    assert "| test | S |" in printed and "| test | T |" in printed and "SSIM" in printed

    mlflow = client()
    experiment = mlflow.get_experiment_by_name("kelz")
    runs = mlflow.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("partita.kind") == "sweep"]
    assert parent.info.status == "FINISHED"
    artifacts = {a.path for a in mlflow.list_artifacts(parent.info.run_id)} | {a.path for a in mlflow.list_artifacts(parent.info.run_id, "figures")}
    assert {"results.md", "figures/test_excerpt_all.png"} <= artifacts
    assert math.isfinite(parent.data.metrics["all/test/T_prime/f1"])
    children = [r for r in runs if r.data.tags.get(PARENT_TAG) == parent.info.run_id]
    training = [r for r in children if "model.snippets.scheme" in r.data.params]
    demixing = [r for r in children if r.data.tags.get("partita.kind") == "stage"]
    assert len(training) == 1 and math.isfinite(training[0].data.metrics["test/mse"])
    # the preset's settings, then the smoke grid's lambda_t in {0, 0.01}: each point its own child run
    assert sorted(r.data.params.get("lambda_t", "preset") for r in demixing) == ["0.0", "0.01", "preset"]
    assert all(r.info.status == "FINISHED" and 0 <= r.data.metrics["test/T_prime/f1"] <= 1 for r in demixing)

    # the denoiser's run carries stage 2 (thresholds fitted on T'), so `partita apply` transcribes with it
    recording = tmp_path / "a4.wav"
    soundfile.write(str(recording), 0.1 * np.sin(2 * np.pi * 440 * np.arange(44100) / 44100), 44100)
    out = apply_run(parent.info.run_id, recording, tmp_path / "applied")  # the parent resolves to its denoiser
    assert json.loads((out / RECORD).read_text())["files"] == ["transcription.mid", "denoised.png"]
    # the smoke denoiser may hear no note in a sine (a track without notes is not read back); the notes it
    # does write are piano notes inside the recording (known-value tests of the apply step: test_kelz.py)
    tracks = pretty_midi.PrettyMIDI(str(out / "transcription.mid")).instruments
    assert len(tracks) <= 1 and all(t.program == 0 and all(21 <= n.pitch <= 108 and n.end <= 1.1 for n in t.notes) for t in tracks)
