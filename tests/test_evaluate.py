"""`partita evaluate RUN`: a trained run scored on whole pieces of its own data set, the metrics logged to the run."""

from __future__ import annotations

import json
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from components.data.manifest import FORMAT, write_manifest
from components.models.base import ViewSpec
from components.models.registry import get_family
from orchestration.cli import main
from orchestration.config import load_config
from orchestration.data_build import dataset_dir
from orchestration.experiment import CONFIGS
from orchestration.tracking import RunLogger, client, ensure_experiment, find_or_create_run
from orchestration.trainer import CHECKPOINT_TAG
from tests.test_jointist_family import CLIP, RATE, TINY


def piece_row(example_id: int) -> dict:
    """A 1 s piece as a built set stores it: a Piano stem (MIDI 60, 0.1-0.9 s) and a Violin stem outside the model's classes."""
    stems = np.round(np.random.default_rng(example_id).standard_normal((2, RATE)) * 0.05 * 32768).astype("<i2")
    notes = {"part": [0, 1], "pitch": [60, 67], "velocity": [90, 90], "start": [0.1, 0.2], "end": [0.9, 0.8]}
    return {
        "example_id": example_id, "piece": f"piece-{example_id}", "source": "test", "sample_rate": RATE,
        "stem_names": ["p", "v"], "programs": [0, 40], "is_drum": [False, False], "soundfonts": ["sf", "sf"],
        "stem_classes": ["Piano", "Violin"], "stem_leaves": ["acoustic piano", "bowed strings"], "stems": stems.tobytes(),
        "roll_classes": [], "rolls": b"", "n_frames": 101, "midi": b"",
    } | {f"note_{key}": value for key, value in notes.items()}


def recorded_run(family: str, config, spec, name: str | None = None) -> str:
    """A finished run as the trainer records one: config.json, family tag, a checkpoint with the data spec."""
    import tempfile
    from pathlib import Path

    torch.manual_seed(0)
    model = get_family(family).build(config.model, spec)
    checkpoint = Path(tempfile.mkdtemp()) / "checkpoint_000000"
    checkpoint.mkdir()
    torch.save({"model": model.state_dict(), "best_state": None, "spec": spec}, checkpoint / "state.pt")
    name = name or f"{family}-run"
    run_id = find_or_create_run(ensure_experiment("evaluate-test"), name, name, {"partita.family": family, CHECKPOINT_TAG: str(checkpoint)})
    logger = RunLogger(run_id)
    logger.json(config.to_dict(), "config.json")
    logger.finish()
    return run_id


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


def jointist_recorded(root, schedule: str) -> str:
    """A run of the tiny Jointist of the given schedule on a two-piece set under `root` (written once)."""
    model = TINY | CLIP | {"schedule": schedule, "instruments": {"classes": ["Piano", "Bass", "Drums"]}}
    overrides = [f"model.{key}={json.dumps(value)}" for key, value in model.items()]
    config = load_config([CONFIGS / "jointist" / "smoke.yaml"], overrides, base={"data": {"name": "slakh-like", "root": str(root)}})
    folder = dataset_dir(config.data)
    if not folder.exists():
        folder.mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist([piece_row(1), piece_row(2)]), folder / "test.parquet", row_group_size=1)
        write_manifest(folder, {"format": FORMAT, "kind": "multitrack", "splits": {"test": {"files": [{"path": "test.parquet"}]}}, "content_hash": "tiny", "sample_rate": RATE})
    return recorded_run("jointist", config, ViewSpec(RATE, ("Piano", "Bass", "Drums", "Violin")), f"jointist-{schedule}")


@pytest.fixture(scope="module")
def jointist_run(isolated_home, data_root) -> str:
    return jointist_recorded(data_root, "separation")


def test_a_run_is_scored_on_whole_pieces_and_the_metrics_are_logged_to_it(jointist_run, capsys):
    assert main(["evaluate", jointist_run, "--limit", "1"]) == 0
    out, err = capsys.readouterr()
    assert "piece 1/1: piece-1 (1 s)" in err  # progress, one line per piece
    logged = client().get_run(jointist_run).data.metrics
    assert logged["piece_test/pieces"] == 1.0 and np.isfinite(logged["piece_test/sdr_gain"])
    printed = dict(line.split() for line in out.splitlines())
    assert float(printed["piece_test/sdr_gain"]) == pytest.approx(logged["piece_test/sdr_gain"], abs=1e-4)
    rows = client().download_artifacts(jointist_run, "whole_pieces/test.json")
    assert '"instruments": [\n        "Piano"\n      ]' in open(rows).read()  # the Violin is not a class of the model


def test_bad_input_is_refused_in_one_line(jointist_run, capsys):
    config = load_config([CONFIGS / "mask_inference" / "smoke.yaml"], [], base={"data": {"name": "slakh-like"}})
    other = recorded_run("mask_inference", config, ViewSpec(16000, ("piano", "bass")))
    assert main(["evaluate", other]) == 2
    assert "model family mask_inference has no whole-piece evaluation" in capsys.readouterr().err
    assert main(["evaluate", jointist_run, "--split", "valid"]) == 2
    assert "has no split 'valid'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", jointist_run, "--limit", "0"])
    assert exit_.value.code == 2 and "'0' is not a positive whole number" in capsys.readouterr().err


def test_another_runs_recognizer_gives_the_i_rows_and_a_wrong_one_is_refused_before_anything_is_logged(jointist_run, data_root, capsys):
    transcriber, recognizer = jointist_recorded(data_root, "transcription"), jointist_recorded(data_root, "recognition")
    assert main(["evaluate", transcriber, "--recognizer", recognizer]) == 0
    logged = client().get_run(transcriber).data.metrics
    assert 0.0 <= logged["piece_test/i_t_flat_note_f1"] <= 1.0 and "piece_test/i_t_piece_note_f1" not in logged
    rows = json.load(open(client().download_artifacts(transcriber, "whole_pieces/test.json")))
    assert rows["recognizer_run"] == recognizer and all("recognised" in row for row in rows["pieces"])
    capsys.readouterr()
    assert main(["evaluate", jointist_run, "--recognizer", recognizer]) == 2  # a separation run: no f_T to ask
    assert "this run has no f_T (its schedule is separation); fix: evaluate a transcription or joint run" in capsys.readouterr().err
    assert not client().get_run(jointist_run).data.metrics.keys() & {"piece_test/i_t_flat_note_f1"}
    config = load_config([CONFIGS / "mask_inference" / "smoke.yaml"], [], base={"data": {"name": "slakh-like"}})
    other = recorded_run("mask_inference", config, ViewSpec(16000, ("piano", "bass")))
    assert main(["evaluate", transcriber, "--recognizer", other]) == 2
    assert f"--recognizer {other} is a mask_inference run, not jointist; fix: pass a jointist run" in capsys.readouterr().err
