"""Query-by-example hierarchical separation: the examples and their queries, the query pool, training, apply. No Ray.

The set is written by hand: every stem a tone of its own frequency, so a query's int16 samples name the one piece,
stem and time it was cut from."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile
import torch

from components.data.manifest import FORMAT, MANIFEST
from components.data.multitrack.examples import stack
from components.data.multitrack.fixed import make_fixed
from components.data.multitrack.reader import pieces
from components.data.multitrack.render import FULL_SCALE
from components.data.multitrack.taxonomy import load_hierarchy
from components.models.base import ViewSpec
from components.models.hierarchical import HIERARCHICAL, HierarchicalConfig, query_pool
from orchestration.apply import apply_run
from orchestration.cli import main
from orchestration.config import load_config
from orchestration.experiment import CONFIGS
from orchestration.tracking import RunLogger, ensure_experiment, find_or_create_run
from orchestration.trainer import CHECKPOINT_TAG
from tests.fitting import fit

RATE, SECONDS, PIECE_SECONDS = 8000, 0.5, 3.0
SEGMENT = int(RATE * SECONDS)
VIEW = {"segment": {"seconds": SECONDS, "hop_seconds": SECONDS}, "stft": {"n_fft": 128, "hop_length": 64}, "examples_per_segment": 2}
QBE = {"conditioning": "qbe", "hidden": 8, "layers": 1, "dropout": 0.0, "query": {"hidden": 8, "layers": 1, "embedding": 4, "dropout": 0.0}, "view": VIEW}
GUITAR, EFFECTED, PIANO, BASS, DRUMS, BRASS = "clean guitars", "effected guitars", "acoustic pianos", "electric and synth basses", "drums", "brass"
# split -> example_id -> the leaf of each stem. Valid has one piece with pianos and one with effected guitars, test one
# with clean guitars and one with brass: those leaves have no query from another piece of the split.
PIECES = {
    "train": {0: [GUITAR, EFFECTED, PIANO, BASS], 1: [GUITAR, PIANO, DRUMS], 2: [EFFECTED, BASS, GUITAR]},
    "valid": {3: [GUITAR, PIANO, BASS], 4: [GUITAR, BASS, EFFECTED]},
    "test": {5: [PIANO, GUITAR], 6: [PIANO, BRASS]},
}
SILENT = (0, GUITAR, slice(2 * SEGMENT, 4 * SEGMENT))  # piece 0's clean guitar rests in its third and fourth segments


def stems_of(example_id: int, leaves: list[str]) -> np.ndarray:
    """int16 [stems, samples]: a tone per stem, its frequency unique in the set, swelling so no two windows are alike."""
    t = np.arange(int(RATE * PIECE_SECONDS)) / RATE
    stems = np.stack([0.1 * (1 + t) * np.sin(2 * np.pi * (200.0 + 37.0 * (7 * example_id + s)) * t) for s in range(len(leaves))])
    piece, leaf, silent = SILENT
    if example_id == piece:
        stems[leaves.index(leaf), silent] = 0.0
    return np.round(stems * FULL_SCALE).astype(np.int16)


def row(example_id: int, leaves: list[str]) -> dict:
    return {
        "example_id": example_id, "piece": f"piece-{example_id}", "source": "test", "sample_rate": RATE, "seconds": PIECE_SECONDS,
        "stem_names": [f"stem {s}" for s in range(len(leaves))], "programs": [0] * len(leaves), "is_drum": [leaf == DRUMS for leaf in leaves],
        "soundfonts": ["none"] * len(leaves), "stem_classes": ["Piano"] * len(leaves), "stem_leaves": leaves,
        "stems": stems_of(example_id, leaves).tobytes(), "note_part": [0], "note_pitch": [60], "note_velocity": [90],
        "note_start": [0.0], "note_end": [1.0], "roll_classes": [], "rolls": b"", "n_frames": 0, "midi": b"",
    }  # fmt: skip


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A multitrack set as the reader sees one: a manifest and a Parquet file per split."""
    root = tmp_path_factory.mktemp("qbe-set")
    splits = {}
    for split, by_id in PIECES.items():
        (root / split).mkdir()
        pq.write_table(pa.Table.from_pylist([row(i, leaves) for i, leaves in by_id.items()]), root / split / "part.parquet")
        splits[split] = {"files": [{"path": f"{split}/part.parquet"}], "rows": len(by_id)}
    (root / MANIFEST).write_text(json.dumps({"format": FORMAT, "kind": "multitrack", "content_hash": "qbe-test", "splits": splits}))
    return root


def config(**fields) -> HierarchicalConfig:
    return HierarchicalConfig(**(QBE | fields))


def split_of(example_id: int) -> str:
    return next(split for split, by_id in PIECES.items() if example_id in by_id)


def origin(query: np.ndarray) -> tuple[int, str, int]:
    """(piece, leaf, start) of the stem window a query was cut from."""
    pcm = np.round(query * FULL_SCALE).astype(np.int16)
    found = [
        (i, leaf, start)
        for by_id in PIECES.values()
        for i, leaves in by_id.items()
        for stem, leaf in zip(stems_of(i, leaves), leaves)
        for start in range(0, len(stem) - len(pcm) + 1, len(pcm))
        if np.array_equal(stem[start : start + len(pcm)], pcm)
    ]
    assert len(found) == 1, found
    return found[0]


def made(built: Path, model: HierarchicalConfig, split: str, seed: int = 0, draw: int = 0) -> list[dict]:
    make = HIERARCHICAL.example_maker(model, built).make
    return [example for piece in pieces(built, split) for example in make(piece, seed, draw)]


def test_a_query_is_a_clip_of_the_examples_leaf_from_another_piece_of_its_split(built):
    hierarchy = load_hierarchy("hierarchy-18")
    model = config(require_relative=False)  # the leaf alone decides, so every leaf with a query is a target
    for split in PIECES:
        examples = made(built, model, split, seed=1, draw=2)
        assert examples
        for example in examples:
            piece, start, leaf = int(example["piece"]), int(example["start"]), hierarchy.leaves[int(example["leaf"])]
            source_piece, source_leaf, _ = origin(example["query"])
            assert source_piece != piece and split_of(source_piece) == split and source_leaf == leaf
            leaves = PIECES[split][piece]
            pcm = stems_of(piece, leaves)[:, start : start + SEGMENT].astype(np.float64) / FULL_SCALE
            np.testing.assert_allclose(example["mixture"], pcm.sum(0), atol=1e-6)  # every stem of the piece
            submixes = [pcm[np.isin(leaves, hierarchy.leaves_under(node))].sum(0) for node in model.path_nodes(leaf)]
            np.testing.assert_allclose(example["sources"], np.stack(submixes), atol=1e-6)  # the leaf's path, leaf first
        kept = {(int(e["piece"]), hierarchy.leaves[int(e["leaf"])]) for e in examples}
        if split == "valid":  # pianos and effected guitars play in one valid piece only: no query, no example
            assert kept == {(3, GUITAR), (4, GUITAR), (3, BASS), (4, BASS)}
        if split == "test":  # piece 5 is all keys and guitars: its pianos' group is its mixture, nothing to separate
            assert kept == {(6, PIANO)}
    # a leaf is an example's target only in segments where it is salient...
    training = made(built, model, "train", draw=0) + made(built, model, "train", draw=1)
    assert not [e for e in training if int(e["piece"]) == 0 and int(e["leaf"]) == hierarchy.leaves.index(GUITAR) and 2 * SEGMENT <= int(e["start"]) < 4 * SEGMENT]
    # ...and, by ch. 2's rule as SSS applies it, with a sibling or cousin: the bass has none (its group is basses only)
    assert {int(e["leaf"]) for e in made(built, config(), "valid")} == {hierarchy.leaves.index(GUITAR)}


def test_the_pool_keeps_at_most_pool_per_leaf_clips_two_per_piece_and_only_salient_ones(built):
    pool = query_pool(pieces(built, "train"), config(query=QBE["query"] | {"seconds": 0.25}))
    assert set(pool.clips) == {GUITAR, EFFECTED, PIANO, BASS, DRUMS}
    for leaf, clips in pool.clips.items():
        owners = pool.pieces[leaf]
        assert clips.dtype == np.int16 and clips.shape[1] == RATE // 4 and len(clips) == len(owners)
        assert max(np.unique(owners, return_counts=True)[1]) == 2  # two per piece, every piece of the leaf
        assert sorted(set(owners)) == sorted(i for i, leaves in PIECES["train"].items() if leaf in leaves)
        level = 10 * np.log10(np.mean(np.square(clips / FULL_SCALE), axis=1))
        assert (level > -30.0).all()
    # a clip of piece 0's guitar comes from where it plays: each names its own stem and time
    for clip, owner in zip(pool.clips[GUITAR], pool.pieces[GUITAR]):
        piece, leaf, start = origin(clip.astype(np.float32) / FULL_SCALE)
        assert (piece, leaf) == (owner, GUITAR) and not (piece == 0 and 2 * SEGMENT <= start < 4 * SEGMENT)
    # a small pool takes one clip from each piece before a second from any
    small = query_pool(pieces(built, "train"), config(query=QBE["query"] | {"pool_per_leaf": 3}))
    assert {leaf: sorted(owners) for leaf, owners in small.pieces.items()} == {GUITAR: [0, 1, 2], EFFECTED: [0, 0, 2], PIANO: [0, 0, 1], BASS: [0, 0, 2], DRUMS: [1, 1]}


def test_eval_examples_are_the_same_for_every_seed_and_draw_and_training_ones_vary_with_the_draw(built):
    model = config()
    for split in ("valid", "test"):
        first = stack(made(built, model, split, seed=0, draw=0))
        for seed, draw in ((0, 3), (5, 0), (9, 4)):
            again = stack(made(built, model, split, seed=seed, draw=draw))
            assert first.keys() == again.keys() and all(np.array_equal(first[key], again[key]) for key in first)
    # the fixed sets the trainer caches, made through the same maker
    maker = HIERARCHICAL.example_maker(model, built)
    one, other = make_fixed(built, "valid", model.view, 0, maker), make_fixed(built, "valid", model.view, 7, maker)
    assert all(np.array_equal(one[key], other[key]) for key in one)

    def picks(seed: int, draw: int) -> list[tuple]:
        return [(int(e["piece"]), int(e["start"]), int(e["leaf"]), e["query"].tobytes()) for e in made(built, model, "train", seed, draw)]

    assert picks(0, 1) == picks(0, 1)  # deterministic...
    assert len({tuple(picks(0, draw)) for draw in range(4)}) == 4 and picks(0, 1) != picks(1, 1)  # ...and drawn anew per draw and seed
    for draw in range(3):  # at most examples_per_segment leaves per segment, distinct
        segments = [(p, s) for p, s, _, _ in picks(0, draw)]
        assert max(segments.count(key) for key in segments) == 2
        assert len(set((p, s, leaf) for p, s, leaf, _ in picks(0, draw))) == len(segments)


def test_the_query_pools_are_made_once_per_recipe_and_read_back_alike(built, tmp_path, monkeypatch):
    from components.models import hierarchical

    made_pools = []
    monkeypatch.setattr(hierarchical, "query_pool", lambda *args: made_pools.append(1) or query_pool(*args))
    first = HIERARCHICAL.example_maker(config(), built, tmp_path).make
    assert len(made_pools) == 3 and len(list(tmp_path.glob("*-queries-*.npz"))) == 1  # one per split, one file
    again = HIERARCHICAL.example_maker(config(), built, tmp_path).make
    assert len(made_pools) == 3  # read back
    compared = 0
    for piece in pieces(built, "train"):
        for a, b in zip(first(piece, 0, 1), again(piece, 0, 1), strict=True):
            assert "query" in a and a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
            compared += 1
    assert compared > 0
    HIERARCHICAL.example_maker(config(query=QBE["query"] | {"pool_per_leaf": 4}), built, tmp_path)
    assert len(made_pools) == 6 and len(list(tmp_path.glob("*-queries-*.npz"))) == 2  # another recipe, another pool


def test_the_recipe_keys_the_query_pool_and_the_example_rules(built):
    sss = HIERARCHICAL.example_maker(HierarchicalConfig(view=VIEW), built).recipe
    assert sss == {  # "rules": examples cached under an older rule are not read back as this one's
        "family": "hierarchical", "segment": {"seconds": SECONDS, "hop_seconds": SECONDS, "min_dbfs": -30.0, "min_onsets": 0, "onset_velocity": 30}, "rules": 2,
        "hierarchy": "hierarchy-18", "target_leaf": GUITAR, "levels": "multi", "single_level": "leaf", "require_relative": True,
        "data_reduction": {"fraction": 0.0, "what": "leaf"},
    }  # fmt: skip
    qbe = HIERARCHICAL.example_maker(config(), built).recipe
    assert "target_leaf" not in qbe and qbe["conditioning"] == "qbe" and qbe["examples_per_segment"] == 2
    assert qbe["query"] == {"seconds": SECONDS, "pool_per_leaf": 16, "clips_per_piece": 2}
    assert HIERARCHICAL.example_maker(config(query=QBE["query"] | {"pool_per_leaf": 4, "seconds": 0.25}), built).recipe["query"]["pool_per_leaf"] == 4


def test_query_leaves_restrict_the_targets_the_pool_and_the_recipe(built):
    from pydantic import ValidationError

    hierarchy = load_hierarchy("hierarchy-18")
    model = config(require_relative=False, query=QBE["query"] | {"leaves": [BASS]})
    examples = made(built, model, "train") + made(built, model, "valid")
    assert examples and {hierarchy.leaves[int(e["leaf"])] for e in examples} == {BASS}  # guitars play in every piece too
    assert set(query_pool(pieces(built, "train"), model).clips) == {BASS}
    assert HIERARCHICAL.example_maker(model, built).recipe["query"]["leaves"] == [BASS]
    with pytest.raises(ValidationError, match=r"query.leaves \['tubas'\] are not leaves of hierarchy-18; use some of: acoustic pianos"):
        config(query=QBE["query"] | {"leaves": ["tubas"]})


def test_the_qbe_family_trains_and_its_masks_change_with_the_query(built):
    torch.manual_seed(0)
    model_config = config()
    model = HIERARCHICAL.build(model_config, ViewSpec(sample_rate=RATE, classes=()))
    examples = made(built, model_config, "train")
    batch = {key: torch.from_numpy(value) for key, value in stack(examples).items()}
    assert batch["query"].shape == (len(examples), SEGMENT) and batch["leaf"].dtype == torch.int64
    losses = fit(HIERARCHICAL, model, batch, steps=30, lr=1e-2)
    assert losses[-1] < 0.7 * losses[0]
    model.eval()
    valid = {key: torch.from_numpy(value) for key, value in stack(made(built, model_config, "valid")).items()}
    with torch.no_grad():
        metrics = HIERARCHICAL.evaluate(model, [valid])
        assert all(np.isfinite(metrics[f"si_sdri_{level}"]) for level in ("leaf", "family", "group"))
        levels = model.levels(valid)
        swapped = model.query_mag(valid["query"].flip(0))  # each mixture with another example's query
        assert not torch.allclose(model(levels["mix_mag"], levels["query_mag"]), model(levels["mix_mag"], swapped), atol=1e-3)
    assert HIERARCHICAL.figure(model, valid) is not None


@pytest.fixture(scope="module")
def runs(isolated_home, tmp_path_factory) -> dict[str, str]:
    """Finished hierarchical smoke runs (SSS and QBE) as the trainer records them: config.json, family tag, a checkpoint
    with the spec."""
    experiment = ensure_experiment("qbe-apply-test")
    ids = {}
    for conditioning in ("sss", "qbe"):
        run_config = load_config([CONFIGS / "hierarchical" / "smoke.yaml"], [f"model.conditioning={conditioning}"], base={"data": {"name": "slakh-like"}})
        spec = ViewSpec(sample_rate=RATE, classes=())
        torch.manual_seed(0)
        model = HIERARCHICAL.build(run_config.model, spec)
        checkpoint = tmp_path_factory.mktemp(conditioning) / "checkpoint_000000"
        checkpoint.mkdir()
        torch.save({"model": model.state_dict(), "best_state": None, "spec": spec}, checkpoint / "state.pt")
        name = f"qbe-apply-{conditioning}"
        ids[conditioning] = find_or_create_run(experiment, name, name, {"partita.family": "hierarchical", CHECKPOINT_TAG: str(checkpoint)})
        logger = RunLogger(ids[conditioning])
        logger.json(run_config.to_dict(), "config.json")
        logger.finish()
    return ids


def recording(path: Path, frequencies: tuple[float, ...], seconds: float = 1.0, rate: int = 16000) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    soundfile.write(str(path), sum(0.2 * np.sin(2 * np.pi * f * t) for f in frequencies).astype(np.float32), rate)
    return path


def test_a_qbe_run_separates_what_its_query_names(runs, tmp_path):
    mixture = recording(tmp_path / "mix.wav", (220.0, 660.0, 1500.0))
    low, high = recording(tmp_path / "low.wav", (220.0,), 0.6, 22050), recording(tmp_path / "high.wav", (1500.0,), 0.6, 22050)
    assert main(["apply", runs["qbe"], str(mixture), "--query", str(low), "--out", str(tmp_path / "low")]) == 0
    out = apply_run(runs["qbe"], mixture, tmp_path / "high", query=high)
    assert sorted(json.loads((out / "apply.json").read_text())["files"]) == ["family.wav", "group.wav", "leaf.wav"]
    for level in ("leaf", "family", "group"):
        by_low, rate = soundfile.read(str(tmp_path / "low" / f"{level}.wav"))
        by_high, _ = soundfile.read(str(out / f"{level}.wav"))
        assert rate == RATE and len(by_low) == RATE and np.abs(by_low - by_high).max() > 5e-4  # the query changes what comes out (16 LSBs)


@pytest.mark.parametrize(
    ("run", "query", "message"),
    [
        ("qbe", None, "a query-by-example run separates the instrument a query recording names, and none was given; fix: pass --query"),
        ("sss", "query.wav", "this run is source-specific: it separates 'drums' and its parents, and takes no query; fix: drop --query"),
        ("qbe", "missing.wav", "no query file at .*missing.wav; fix: pass the path of a WAV"),
    ],
    ids=["qbe run without a query", "sss run given one", "missing query file"],
)
def test_apply_refuses_a_missing_or_unwanted_query_in_one_line(runs, tmp_path, capsys, run, query, message):
    mixture = recording(tmp_path / "mix.wav", (220.0, 660.0))
    recording(tmp_path / "query.wav", (220.0,))
    args = ["apply", runs[run], str(mixture), "--out", str(tmp_path / "out")] + (["--query", str(tmp_path / query)] if query else [])
    assert main(args) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("partita: error:")]  # MLflow's progress bars aside
    assert len(errors) == 1 and re.search(message, errors[0])
    assert not (tmp_path / "out").exists()
