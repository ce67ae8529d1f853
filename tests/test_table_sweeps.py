"""The hierarchy ablation and a Jointist table script, as users run them: a smoke sweep through Tune into a temporary
MLflow, one parent run holding the table and a finished child per cell with finite test metrics and its figure."""

from __future__ import annotations

import json
import math

import pytest

from tests.entry_points import script_module
from tests.test_view_stream import TINY, small_slakh  # noqa: F401 (the smoke presets' six-piece set, a fixture)


def trials(experiment: str) -> tuple[object, list]:
    """(the parent run, its finished children) of the experiment's only sweep."""
    from orchestration.tracking import PARENT_TAG, client

    mlflow = client()
    runs = mlflow.search_runs([mlflow.get_experiment_by_name(experiment).experiment_id])
    parents = [r for r in runs if PARENT_TAG not in r.data.tags]
    assert len(parents) == 1
    return parents[0], [r for r in runs if PARENT_TAG in r.data.tags and r.info.status == "FINISHED"]


def artifacts(run) -> set[str]:
    from orchestration.tracking import client

    listed = client().list_artifacts(run.info.run_id)
    return {a.path for a in listed} | {a.path for folder in listed if folder.is_dir for a in client().list_artifacts(run.info.run_id, folder.path)}


@pytest.mark.slow
def test_the_hierarchy_ablation_scores_every_level_of_each_cell(small_slakh, ray_session, capsys):  # noqa: F811
    # SSS only: a QBE query comes from another piece of the example's split, and this set has one validation piece
    args = ["--preset", "smoke", "--seeds", "0", "--set", f"data.root={small_slakh.parent}", "--set", f"data.multitrack={json.dumps(TINY)}"]
    args += ["--set", "sweep.grid.model.conditioning=[sss]"]
    assert script_module("experiments/ablation_hierarchy.py").main(args) == 0
    parent, children = trials("hierarchical-ablation-constraint")
    assert sorted(r.data.params["model.hierarchy_constraint"] for r in children) == ["max", "off"]
    for run in children:
        for level in ("", "_leaf", "_family", "_group"):
            assert math.isfinite(run.data.metrics[f"test/si_sdri{level}"]), level
        assert {"config.json", "figures/test_decomposition.png"} <= artifacts(run)
    assert "results.md" in artifacts(parent)
    assert "SSS multi-level, constraint" in capsys.readouterr().out  # the table's rows name the paper's


@pytest.mark.slow
def test_the_transcription_table_trains_two_schedules_and_scores_their_transcriber(small_slakh, ray_session, capsys):  # noqa: F811
    two = 'sweep.variants={"T": {"model.schedule": "transcription"}, "pTS(s)": {"model.schedule": "joint", "model.separator.merge": "sum"}}'
    args = ["--preset", "smoke", "--seeds", "0", "--set", f"data.root={small_slakh.parent}", "--set", two]
    assert script_module("experiments/jointist_transcription.py").main(args) == 0
    parent, children = trials("jointist-transcription")
    assert sorted(r.data.params["model.schedule"] for r in children) == ["joint", "transcription"]
    for run in children:
        for name in ("test/t_flat_note_f1", "test/t_frame_ap", "test/t_onset_ap"):
            assert math.isfinite(run.data.metrics[name]), name
        assert {"config.json", "figures/test_decomposition.png"} <= artifacts(run)
    assert "test/sdr_gain" in next(r for r in children if r.data.params["model.schedule"] == "joint").data.metrics  # f_MSS ran too
    assert "results.md" in artifacts(parent)
    assert "pTS(s)" in capsys.readouterr().out
