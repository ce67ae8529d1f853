"""The Parquet files and rows of a built data set's split, as its manifest lists them.

Rows stream from Parquet one at a time, so memory holds one row however large
the set is. Files are checked against the manifest by `partita data info --verify`,
not on every read (a 2-hour set is gigabytes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pyarrow.parquet as pq

from components.data.manifest import read_manifest
from components.errors import PartitaError


def files(dataset_dir: Path, split: str, kind: str) -> list[Path]:
    """The Parquet files of a split of a `kind` data set, as its manifest lists them."""
    dataset_dir = Path(dataset_dir)
    manifest = read_manifest(dataset_dir)
    if manifest.get("kind") != kind:
        raise PartitaError(f"{dataset_dir} is a {manifest.get('kind')} data set, not {kind}", f"choose a {kind} data set")
    if split not in manifest["splits"]:
        raise PartitaError(f"{dataset_dir} has no split {split!r}", f"choose one of: {', '.join(manifest['splits'])}")
    return [dataset_dir / record["path"] for record in manifest["splits"][split]["files"]]


def rows(dataset_dir: Path, split: str, kind: str) -> Iterator[dict]:
    """Rows of a split, one at a time, in file order."""
    for path in files(dataset_dir, split, kind):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1):
            yield batch.to_pylist()[0]


def row_at(dataset_dir: Path, split: str, kind: str, index: int) -> dict:
    """The `index`-th row of a split in example_id order."""
    paths = files(dataset_dir, split, kind)
    ids = [(i, path, n) for path in paths for n, i in enumerate(pq.read_table(path, columns=["example_id"])["example_id"].to_pylist())]
    if not 0 <= index < len(ids):
        raise PartitaError(f"{Path(dataset_dir).name}/{split} has {len(ids)} rows; index {index} is out of range", f"use 0..{len(ids) - 1}")
    _, path, n = sorted(ids)[index]
    parquet = pq.ParquetFile(path)
    for group in range(parquet.num_row_groups):  # read only the row group that holds the row
        size = parquet.metadata.row_group(group).num_rows
        if n < size:
            return parquet.read_row_group(group).slice(n, 1).to_pylist()[0]
        n -= size
    raise AssertionError("the row was counted in this file")
