"""Small real builds of slakh-like and piano-domains through Ray Data."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from components.data.catalog import DataConfig, plan
from components.data.manifest import verify
from components.data.multitrack.reader import pieces
from components.data.multitrack.render import MultitrackRenderer
from components.data.pianos.reader import dictionary as piano_dictionary, renderings
from components.data.pianos.render import PianoRenderer
from components.data.splits import row_at
from orchestration.data_build import build

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def slakh(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("multitrack")
    config = DataConfig(name="slakh-like", root=str(root), multitrack={"pieces": 3, "music21_fraction": 0, "min_seconds": 6, "max_seconds": 8})
    return config, build(config, workers=2)


def test_slakh_like_build(slakh):
    config, path = slakh
    manifest = verify(path)
    assert manifest["kind"] == "multitrack"
    assert {split: entry["rows"] for split, entry in manifest["splits"].items()} == {"train": 1, "valid": 1, "test": 1}
    assert set(manifest["soundfonts"]) == {"FluidR3_GM", "TimGM6mb", "MuseScore_General_Lite"}
    assert len(manifest["taxonomies"]["classes"]["classes"]) == 39
    names = set()
    for split in ("train", "valid", "test"):
        for piece in pieces(path, split):
            names.add(piece.name)
            assert 4 <= len(piece.stem_names) <= 6
            np.testing.assert_allclose(piece.mix(), piece.stems.sum(axis=0), rtol=0, atol=1e-6)
            assert piece.rolls.shape[:3] == (len(piece.roll_classes), 3, 88)
    assert len(names) == 3  # one piece per split, none shared


def test_stems_are_stored_uncompressed_and_the_rest_compressed(slakh):
    """The training stream memory-maps a piece's stems; decompressing them was most of its read time."""
    _, path = slakh
    for file in sorted(path.glob("*/*.parquet")):
        group = pq.ParquetFile(file).metadata.row_group(0)
        codecs = {group.column(i).path_in_schema.split(".")[0]: group.column(i).compression for i in range(group.num_columns)}
        assert codecs.pop("stems") == "UNCOMPRESSED"
        assert {name for name, codec in codecs.items() if codec != "ZSTD"} == set()


def test_rendering_does_not_depend_on_the_worker(slakh):
    config, path = slakh
    item = plan(config, path.parent / "sources").items[0]
    renderer = MultitrackRenderer(config.multitrack.model_dump(mode="json"))
    local = renderer({name: np.asarray(item.column(name).to_pylist(), dtype=object) for name in item.column_names})
    split = item.column("split")[0].as_py()
    built = pa.Table.from_pylist([row_at(path, split, "multitrack", 0)])
    assert local.column("digest").to_pylist() == built.column("digest").to_pylist()


def test_listen_writes_the_mix_and_its_stems(slakh, tmp_path):
    import soundfile

    from orchestration.cli import main

    _, path = slakh
    assert main(["data", "listen", str(path), "--split", "test", "--index", "0", "--out", str(tmp_path / "piece.wav")]) == 0
    mix, rate = soundfile.read(tmp_path / "piece.wav", dtype="float32")
    stems = [soundfile.read(f, dtype="float32")[0] for f in sorted(tmp_path.glob("piece.*-*.wav"))]
    assert rate == 16000 and 4 <= len(stems) <= 6
    np.testing.assert_allclose(mix, np.sum(stems, axis=0), rtol=0, atol=1e-6)
    assert main(["data", "listen", str(path), "--split", "test", "--index", "5", "--out", str(tmp_path / "x.wav")]) == 2


def test_rebuild_is_a_no_op(slakh, capsys):
    config, path = slakh
    before = (path / "manifest.json").read_bytes()
    assert build(config, workers=2) == path
    assert (path / "manifest.json").read_bytes() == before
    assert "up to date" in capsys.readouterr().out


def test_piano_domains_build(ray_session, tmp_path):
    config = DataConfig(
        name="piano-domains",
        root=str(tmp_path),
        pianos={
            "pieces": 3,
            "music21_fraction": 0,
            "max_seconds": 3,
            "dictionary_seconds": 0.5,
            "test_fraction": 0.34,
            "valid_fraction": 0.0,
            # pianos that load fast (MuseScore's take about 2 s each time a fresh synthesiser loads them)
            "train_pianos": ["FluidR3_GM:1", "FluidR3_GM:2", "TimGM6mb:1"],
            "valid_pianos": [],
            "test_pianos": ["TimGM6mb:0", "TimGM6mb:3"],
        },
    )
    path = build(config, workers=2)
    manifest = verify(path)
    assert {split: entry["rows"] for split, entry in manifest["splits"].items()} == {"canonical": 3, "dictionary": 88, "test": 2, "train": 6}
    dictionary = piano_dictionary(path)
    assert dictionary.shape == (256, 88) and (dictionary.sum(axis=0) > 0).all()
    # a high note's energy sits in higher mel bins than a low note's
    centroid = (np.arange(256)[:, None] * dictionary).sum(axis=0) / dictionary.sum(axis=0)
    assert centroid[80] > centroid[40] > centroid[0]
    canonical = {r.piece_id: r for r in renderings(path, "canonical")}
    for rendering in renderings(path, "test"):
        pair = canonical[rendering.piece_id]  # the same MIDI by the canonical piano, frame-aligned
        assert rendering.mel.shape == pair.mel.shape == (256, rendering.roll.shape[1])
        assert (rendering.roll == pair.roll).all() and not np.allclose(rendering.mel, pair.mel)
    # audio is not stored: a re-rendering reproduces the stored spectrogram
    renderer = PianoRenderer(config.pianos.model_dump(mode="json"))
    audio = renderer.render_audio(rendering.notes, rendering.piano, rendering.seconds)
    np.testing.assert_allclose(rendering.mel, renderer.mel(torch.from_numpy(audio)).numpy(), rtol=2e-3, atol=1e-6)
    overlap = [r.overlap for r in renderings(path, "train")]
    assert sum(overlap) == 2 and len(list(renderings(path, "train", "no-overlap"))) == 4
