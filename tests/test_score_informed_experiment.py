"""The score-informed script end to end at smoke size: Tune into the session's MLflow, the controllability test on
its best run, and that run applied to a rendered piece guided by the piece's own MIDI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile

from components.data.multitrack.reader import pieces
from orchestration.apply import RECORD, apply_run
from orchestration.tracking import PARENT_TAG, client
from tests.entry_points import script_module
from tests.test_view_stream import small_slakh  # noqa: F401 (the smoke presets' six-piece set, a fixture)


@pytest.mark.slow
def test_smoke_sweep_runs_the_controllability_test_and_its_run_separates_a_piece_by_its_own_score(small_slakh, ray_session, capsys, tmp_path):  # noqa: F811
    args = ["--preset", "smoke", "--seeds", "0", "--set", f"data.root={small_slakh.parent}", "--set", "sweep.grid.model.variant=[residual]",
            "--controllability", "--name", "smoke-score-informed"]  # fmt: skip
    assert script_module("experiments/score_informed.py").main(args) == 0
    printed = capsys.readouterr().out
    assert "| variant=residual" in printed and "controllability of run" in printed

    mlflow = client()
    runs = mlflow.search_runs([mlflow.get_experiment_by_name("score-informed").experiment_id])
    (parent,) = [r for r in runs if r.info.run_name == "smoke-score-informed"]
    (trial,) = [r for r in runs if r.data.tags.get(PARENT_TAG) == parent.info.run_id]
    assert trial.info.status == "FINISHED"
    for name in ("test/si_sdri", "test/si_sdri_bass", "test/si_sdri_drums"):
        assert math.isfinite(trial.data.metrics[name]), name
    assert {"controllability.json", "controllability.png"} <= {a.path for a in mlflow.list_artifacts(parent.info.run_id)}
    points = json.loads(Path(mlflow.download_artifacts(parent.info.run_id, "controllability.json", str(tmp_path))).read_text())
    assert points["run_id"] == trial.info.run_id and points["points"]

    # a rendered test piece and its own MIDI: one stem per source of the run, as long as the recording
    piece = next(iter(pieces(small_slakh, "test")))
    recording, score = tmp_path / "piece.wav", tmp_path / "piece.mid"
    soundfile.write(str(recording), piece.mix(), piece.sample_rate)
    score.write_bytes(piece.midi)
    out = apply_run(parent.info.run_id, recording, tmp_path / "stems", score=score)
    record = json.loads((out / RECORD).read_text())
    assert sorted(record["files"]) == ["bass.wav", "drums.wav", "score.json"]
    for name in ("bass.wav", "drums.wav"):
        audio, rate = soundfile.read(str(out / name))
        assert rate == piece.sample_rate and len(audio) == piece.stems_pcm.shape[1] and np.isfinite(audio).all()
    mapped = {track["source"] for track in json.loads((out / "score.json").read_text())["tracks"]}
    assert {"Bass", "Drums"} <= mapped  # the piece's own bass and drum tracks guided their sources
