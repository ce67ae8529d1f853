"""Data set folders: the manifest, integrity checks, and publishing a build atomically.

A data set is a folder `<root>/<name>/` holding `<split>/*.parquet` and a
`manifest.json` written last. Builds happen in a hidden sibling folder that is
renamed into place only when complete, so a folder with a manifest is always
a finished build; the manifest lists every file with its row count, size and
sha256, so a truncated or edited shard is caught before it is used.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterable, Iterator

import pyarrow.parquet as pq

from components.errors import PartitaError

MANIFEST = "manifest.json"
FORMAT = 1
# Bump when the same recipe would now produce different rows, so existing builds
# stop counting as up to date (2: renders through fluid_synth_write_float, no dither).
PIPELINE_VERSION = 2


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def recipe_hash(recipe: dict) -> str:
    """Hash of what decides a data set's content (canonical JSON) and of the pipeline version."""
    return sha256_bytes(json.dumps({"pipeline": PIPELINE_VERSION, **recipe}, sort_keys=True, default=str).encode())[:16]


def file_records(split_dir: Path, root: Path) -> list[dict]:
    records = []
    for path in sorted(split_dir.glob("*.parquet")):
        records.append(
            {
                "path": str(path.relative_to(root)),
                "rows": pq.ParquetFile(path).metadata.num_rows,
                "bytes": path.stat().st_size,
                "sha256": sha256_file(path),
            }
        )
    return records


def content_hash(digests_by_split: dict[str, Iterable[tuple[int, str]]]) -> str:
    """Hash of the rows themselves, independent of how they were sharded into files.

    `digests_by_split`: split -> (example_id, per-row digest) pairs in any order.
    """
    digest = hashlib.sha256()
    for split in sorted(digests_by_split):
        digest.update(f"[{split}]".encode())
        for example_id, row_digest in sorted(digests_by_split[split]):
            digest.update(f"{example_id}:{row_digest};".encode())
    return digest.hexdigest()


def read_manifest(dataset_dir: Path) -> dict:
    dataset_dir = Path(dataset_dir)
    path = dataset_dir / MANIFEST
    if not path.is_file():
        if dataset_dir.is_dir():
            raise PartitaError(
                f"{dataset_dir} is not a complete data set (no {MANIFEST})",
                f"rebuild it: partita data build {dataset_dir.name} --out {dataset_dir.parent}",
            )
        raise PartitaError(
            f"data set {dataset_dir.name!r} not found at {dataset_dir}",
            f"build it first: partita data build {dataset_dir.name} --out {dataset_dir.parent}",
        )
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise PartitaError(f"{path} is unreadable ({err})", f"rebuild the data set: partita data build {dataset_dir.name} --force") from None
    if manifest.get("format") != FORMAT:
        raise PartitaError(
            f"{path} has format {manifest.get('format')!r}, this partita reads format {FORMAT}",
            f"rebuild the data set: partita data build {dataset_dir.name} --force",
        )
    return manifest


def check_file(dataset_dir: Path, record: dict, data: bytes | None = None) -> None:
    """Raise if a listed file is missing, resized or changed. `data`: its bytes, if already read."""
    path = Path(dataset_dir) / record["path"]
    fix = f"rebuild the data set: partita data build {Path(dataset_dir).name} --force"
    if not path.is_file():
        raise PartitaError(f"data file {path} listed in the manifest is missing", fix)
    if path.stat().st_size != record["bytes"]:
        raise PartitaError(f"data file {path} has {path.stat().st_size} bytes, the manifest says {record['bytes']} (truncated or edited)", fix)
    actual = sha256_bytes(data) if data is not None else sha256_file(path)
    if actual != record["sha256"]:
        raise PartitaError(f"data file {path} does not match its checksum in the manifest (edited or corrupt)", fix)


def verify(dataset_dir: Path) -> dict:
    """Check every file of a data set against its manifest; returns the manifest."""
    manifest = read_manifest(dataset_dir)
    for split in manifest["splits"].values():
        for record in split["files"]:
            check_file(dataset_dir, record)
    return manifest


def write_manifest(directory: Path, manifest: dict) -> None:
    path = Path(directory) / MANIFEST
    with open(path, "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def staging(final: Path) -> Iterator[Path]:
    """A fresh hidden folder beside `final`, renamed to `final` when the block succeeds.

    Holds an exclusive lock for the data set while building, clears staging
    folders left by killed builds, and replaces an older `final` only once the new
    one is complete.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.parent / f".{final.name}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PartitaError(f"another build of {final} is running", "wait for it to finish") from None
        for stale in final.parent.glob(f".{final.name}.building-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = final.parent / f".{final.name}.building-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if final.exists():
            old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(final)
