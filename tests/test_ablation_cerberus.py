"""The Cerberus loss-weight ablation through Tune into a temporary MLflow, and its refusals."""

from __future__ import annotations

import math

import pytest

from components.errors import PartitaError
from tests.entry_points import script_module
from tests.test_view_stream import small_slakh  # noqa: F401 (the smoke presets' six-piece set, a fixture)


def script():
    return script_module("experiments/ablation_cerberus.py")


@pytest.mark.slow
def test_smoke_ablation_runs_two_weightings_through_tune_into_mlflow(small_slakh, ray_session):  # noqa: F811
    from orchestration.tracking import PARENT_TAG, client

    two = "sweep.variants={MI: {model.weights: {dc: 0, mi: 1, tr: 0}}, Cerberus: {model.weights: {dc: 0.1, mi: 0.1, tr: 0.8}}}"
    args = ["--preset", "smoke", "--seeds", "0", "--set", f"data.root={small_slakh.parent}", "--set", two]  # the preset's piano and guitar
    assert script().main(args) == 0

    mlflow = client()
    runs = mlflow.search_runs([mlflow.get_experiment_by_name("cerberus-ablation-weights").experiment_id])
    children = [r for r in runs if PARENT_TAG in r.data.tags]
    assert len(children) == 2 and all(r.info.status == "FINISHED" for r in children)
    for run in children:
        for name in ("test/si_sdri", "test/sdr", "test/dc_sdr", "test/note_f1", "train/loss_tr"):
            assert math.isfinite(run.data.metrics[name]), name


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        (["model.weights.dc=0", "model.weights.mi=0", "model.weights.tr=0"], "all loss weights are 0.*fix: "),
        (["model.weights.dc=-0.5"], "model.weights.dc = -0.5: Input should be greater than or equal to 0; fix: "),
    ],
)
def test_all_zero_or_negative_weights_are_refused_at_load(weights, message, capsys):
    with pytest.raises(PartitaError, match=message):
        script().main(["--preset", "smoke", "--dry-run", *[arg for w in weights for arg in ("--set", w)]])
    assert "dry run" not in capsys.readouterr().out
