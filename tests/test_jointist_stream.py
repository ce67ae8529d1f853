"""The view stream's family hook with Jointist: its own examples (every stem mixed, instruments drawn) reach
the model unfeaturised from the Ray Data stage and from the cached fixed examples, keyed by its recipe.

No Ray: the stage is called directly, as a Ray Data actor would call it."""

from __future__ import annotations

import functools

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from components.data.manifest import FORMAT, write_manifest
from components.data.multitrack.featurize import ExampleStage, piece_locations
from components.data.multitrack.fixed import cache_key, load_fixed, make_fixed
from components.models.base import ModelFamily
from orchestration.view_stream import family_maker
from components.models.jointist.family import JOINTIST, JointistConfig

RATE = 1600
CLASSES = ["Piano", "Bass", "Drums"]
TINY = {
    "instruments": {"classes": CLASSES},
    "segment": {"seconds": 0.5, "hop_seconds": 0.5},
    "audio": {"sample_rate": RATE, "hop_length": 16, "n_mels": 16, "mel_n_fft": 128, "f_max": 800.0, "n_fft": 64},
    "recognizer": {"channels": [4, 8], "d_model": 16, "heads": 2, "depth": 1, "ffn": 16},
    "transcriber": {"channels": [4, 4], "embedding": 16, "hidden": 8},
    "separator": {"channels": [4, 8, 8]},
    "sampler": {"present": 2, "absent": 1},
}


def config(**fields) -> JointistConfig:
    return JointistConfig.model_validate({**TINY, **fields})


def piece_row(example_id: int) -> dict:
    """2 s: a Piano stem (notes 0-1.5 s), a Bass stem (1-2 s), a Violin stem outside the model's classes."""
    t = np.arange(2 * RATE) / RATE
    stems = np.stack([0.2 * np.sin(2 * np.pi * f * t) for f in (220.0, 55.0, 330.0)])
    notes = {"part": [0, 0, 1, 2], "pitch": [60, 64, 33, 67], "velocity": [90] * 4, "start": [0.1, 0.6, 1.1, 0.2], "end": [0.4, 1.4, 1.9, 1.8]}
    return {
        "example_id": example_id,
        "sample_rate": RATE,
        "stems": np.round(stems * 32768).astype("<i2").tobytes(),
        "stem_names": ["p", "b", "v"],
        "stem_classes": ["Piano", "Bass", "Violin"],
    } | {f"note_{key}": value for key, value in notes.items()}


@pytest.fixture
def dataset(tmp_path):
    for split, ids in (("train", [1, 2]), ("valid", [3])):
        pq.write_table(pa.Table.from_pylist([piece_row(i) for i in ids]), tmp_path / f"{split}.parquet", row_group_size=1)
    splits = {split: {"files": [{"path": f"{split}.parquet"}]} for split in ("train", "valid")}
    write_manifest(tmp_path, {"format": FORMAT, "kind": "multitrack", "splits": splits, "content_hash": "tiny", "sample_rate": RATE})
    return tmp_path


def stage_batches(dataset, passes=(0,)) -> list[dict]:
    model = config()
    locations = piece_locations([dataset / "train.parquet"])
    columns = {key: np.array([loc[key] for loc in locations for _ in passes]) for key in ("path", "row_group")}
    columns["pass"] = np.array([p for _ in locations for p in passes])
    stage = ExampleStage(JOINTIST.view(model).model_dump(mode="json"), seed=0, sample_rate=RATE, own_maker=functools.partial(family_maker, "jointist", model.model_dump(mode="json"), str(dataset), str(dataset / "cache")))
    return list(stage(columns))


def test_other_families_keep_the_views_examples():
    assert ModelFamily.example_maker(JOINTIST, config(), None) is None  # the default: the view's piece_examples


def test_the_stage_yields_jointists_own_examples_unfeaturised(dataset):
    batches = stage_batches(dataset)
    assert len(batches) == 2  # one per piece
    first = batches[0]
    assert set(first) == {"mixture", "present", "instrument", "stems", "onsets", "frames", "piece", "start"}  # no view features
    assert first["piece"].tolist() == [1] * 4 and first["start"].tolist() == [0, 800, 1600, 2400]
    assert first["mixture"].shape == (4, 800) and first["stems"].shape == (4, 3, 800) and first["frames"].shape == (4, 3, 88, 51)
    # every stem is heard, the Violin's too, although it is not a class of the model
    row = piece_row(1)
    pcm = np.frombuffer(row["stems"], "<i2").reshape(3, -1).astype(np.int32)
    np.testing.assert_array_equal(first["mixture"][0], pcm[:, :800].sum(axis=0).astype(np.float32) / np.float32(32768))
    piano, bass = CLASSES.index("Piano"), CLASSES.index("Bass")
    assert first["present"][:, [piano, bass]].tolist() == [[1, 0], [1, 0], [1, 1], [0, 1]]


def test_stream_passes_draw_other_instruments_and_repeat_exactly(dataset):
    batches = stage_batches(dataset, passes=(0, 1, 2, 3))
    drawn = [b["instrument"].tolist() for b in batches]
    assert len({str(d) for d in drawn[:4]}) > 1  # piece 1 over four passes: not the same draws each time
    assert drawn == [b["instrument"].tolist() for b in stage_batches(dataset, passes=(0, 1, 2, 3))]


def test_fixed_examples_are_kept_as_made_and_keyed_by_the_recipe(dataset, tmp_path):
    model = config()
    view, own = JOINTIST.view(model), JOINTIST.example_maker(model, dataset)
    made = make_fixed(dataset, "valid", view, 0, own)
    fixed = load_fixed(dataset, "valid", view, 0, tmp_path / "cache", own)
    assert len(fixed) == 4 and len(list((tmp_path / "cache").iterdir())) == 1
    batch = fixed.batch(np.arange(4))
    for key, value in made.items():
        np.testing.assert_array_equal(batch[key].numpy(), value)
    # the same view without the family's maker, or another sampler, is another set of examples
    keys = {cache_key(dataset, view, 0, own), cache_key(dataset, view, 0), cache_key(dataset, view, 0, JOINTIST.example_maker(config(sampler={"present": 3}), dataset))}
    assert len(keys) == 3
    # and the model reads the cached batch as it is
    torch.manual_seed(0)
    net = JOINTIST.build(model, None)
    loss, logged = JOINTIST.loss(net, batch)
    assert torch.isfinite(loss) and {"loss_transcription", "loss_separation"} <= set(logged)


def test_the_jointist_view_carries_its_segments_and_stream_sizes():
    model = config(view={"shuffle_buffer": 8, "eval_examples": 16})
    view = JOINTIST.view(model)
    assert view.segment == model.segment and (view.shuffle_buffer, view.eval_examples) == (8, 16)
