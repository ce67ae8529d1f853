"""The multi-track view stream on Ray Data: shards, seeded order, a smoke Tune run, refusals."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np
import pytest

from components.data.multitrack.examples import piece_examples
from components.data.multitrack.reader import pieces
from orchestration.config import load_config, read_yaml
from orchestration.experiment import CONFIGS
from tests.entry_points import run_entry_point, script_module

SMOKE = [CONFIGS / "mask_inference" / "smoke.yaml", CONFIGS / "separation_two_source.yaml"]
TINY = read_yaml(SMOKE[0])["data"]["multitrack"]  # the smoke presets' own six-piece set


@pytest.fixture(scope="module")
def small_slakh(ray_session, tmp_path_factory):
    """The smoke presets' set, six arranged pieces of 6-8 s (4 train, 1 valid, 1 test), built on Ray Data."""
    from components.data.catalog import DataConfig
    from orchestration.data_build import build

    root = tmp_path_factory.mktemp("slakh")
    return build(DataConfig(name="slakh-like", root=str(root), multitrack=TINY), workers=1)


def smoke_config(root, *overrides):
    return load_config(SMOKE, [f"data.root={root}", *overrides], base={"data": {"name": "slakh-like"}})


def keys(rows) -> set[tuple[int, int]]:
    return {(int(p), int(s)) for p, s in zip(rows["piece"], rows["start"])}


def test_two_workers_get_disjoint_examples_whose_union_is_the_epoch(small_slakh):
    from orchestration.view_stream import train_datasets

    config = smoke_config(small_slakh.parent)
    epoch = {(p.example_id, int(e["start"])) for p in pieces(small_slakh, "train") for e in piece_examples(p, config.model.view, seed=0)}
    assert len(epoch) >= 4
    stream = train_datasets(config, small_slakh, passes=1)["train"]
    shards = stream.streaming_split(2, equal=True)  # what ray.train.DataConfig does for two workers
    seen: list[set] = [set(), set()]

    def consume(rank: int) -> None:  # a streaming split is consumed by all its readers at once
        for batch in shards[rank].iter_batches(batch_size=1, batch_format="numpy"):
            seen[rank] |= keys(batch)

    threads = [threading.Thread(target=consume, args=(rank,)) for rank in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert seen[0] and seen[1] and not seen[0] & seen[1]
    # equal=True keeps the workers' shares the same size, dropping at most one example of an odd total
    assert seen[0] | seen[1] <= epoch and len(epoch - (seen[0] | seen[1])) == len(epoch) % 2


def test_one_execution_streams_the_whole_run_pass_after_pass(small_slakh):
    from orchestration.view_stream import stream_passes, train_datasets

    config = smoke_config(small_slakh.parent, "train.steps=10", "train.batch_size=4")
    assert stream_passes(config, pieces=3) == 27  # 40 examples needed, budgeted at half an example per piece
    epoch = [(p.example_id, int(e["start"])) for p in pieces(small_slakh, "train") for e in piece_examples(p, config.model.view, seed=0)]
    rows = train_datasets(config, small_slakh, passes=3)["train"].take_all()
    cut = [(int(row["piece"]), int(row["start"])) for row in rows]
    assert len(cut) == 3 * len(epoch) and set(cut) == set(epoch)  # every example once per pass, in one execution


def test_the_same_seed_gives_the_same_first_batch(small_slakh):
    from orchestration.view_stream import train_datasets

    def first_batch(seed: int) -> dict:
        stream = train_datasets(smoke_config(small_slakh.parent), small_slakh)["train"]
        batches = stream.iter_torch_batches(batch_size=3, local_shuffle_buffer_size=8, local_shuffle_seed=seed)
        return next(iter(batches))

    a, b, other = first_batch(1), first_batch(1), first_batch(2)
    assert a.keys() == b.keys() and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    assert keys(a) != keys(other) or not np.array_equal(a["start"].numpy(), other["start"].numpy())


def assert_refused(result, message: str, home: Path) -> None:
    """Exit 2, one line naming the problem and the fix, and nothing written but the MLflow database."""
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip() and "mlflow.store.db.utils" not in line]
    assert len(lines) == 1 and message in lines[0] and "fix:" in lines[0], result.stderr[-2000:]
    leftovers = [p for p in home.rglob("*") if p.is_file() and p.name != "mlflow.db"] if home.exists() else []
    assert not leftovers, leftovers


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["--set", "model.view.classes=[Kazoo, Piano]"], "the view asks for class 'Kazoo', which no stem of slakh-like"),
        (["--set", "model.view.segment.seconds=60", "--set", "model.view.segment.hop_seconds=60"], "segments are longer than every piece"),
    ],
)
def test_a_view_the_set_cannot_serve_is_refused_before_anything_is_written(small_slakh, tmp_path, overrides, message, capsys):
    args = ["experiments/separation_two_source.py", "--preset", "smoke", "--seeds", "0", "--set", f"data.root={small_slakh.parent}", *overrides]
    result = run_entry_point(args, {"PARTITA_HOME": str(tmp_path / "home")}, capsys)
    assert_refused(result, message, tmp_path / "home")


@pytest.mark.parametrize(
    "script, dataset, message",
    [
        ("experiments/separation_two_source.py", "jazznet-single", "model family mask_inference cannot train on jazznet-single; it needs multi-track pieces: pass --dataset slakh-like"),
        ("experiments/ablation_masks.py", "slakh-like", "model family musicslots cannot train on slakh-like"),
    ],
)
def test_a_data_set_of_the_wrong_kind_is_refused_at_load(tmp_path, script, dataset, message, capsys):
    result = run_entry_point([script, "--preset", "smoke", "--dataset", dataset, "--seeds", "0"], {"PARTITA_HOME": str(tmp_path / "home")}, capsys)
    assert_refused(result, message, tmp_path / "home")


@pytest.mark.slow
def test_smoke_sweep_trains_the_blstm_through_tune_into_mlflow_with_a_finite_si_sdri(small_slakh, ray_session):
    from orchestration.tracking import PARENT_TAG, client

    script = script_module("experiments/separation_two_source.py")
    assert script.main(["--preset", "smoke", "--seeds", "0", "--set", f"data.root={small_slakh.parent}"]) == 0

    mlflow = client()
    runs = mlflow.search_runs([mlflow.get_experiment_by_name("separation-two-source").experiment_id])
    children = [r for r in runs if PARENT_TAG in r.data.tags]
    assert len(children) == 1 and children[0].info.status == "FINISHED"
    metrics = children[0].data.metrics
    for name in ("test/si_sdri", "test/si_sdr", "val/si_sdri", "train/loss", "train/data_wait_fraction"):
        assert math.isfinite(metrics[name]), name
    assert -60 < metrics["test/si_sdri"] < 60
