"""A `BuildPlan` says what to compute without saying how to distribute it.

The work items (one row each, with a `split` column), the worker class that turns
a batch of items into output rows, and the recipe that identifies the result.
Each data kind's `plan` module makes one; orchestration.data_build runs it on Ray Data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from components.data.manifest import recipe_hash


@dataclass
class BuildPlan:
    name: str
    kind: str
    recipe: dict  # everything that decides the content, source fingerprints included
    items: list[pa.Table]  # work items in blocks, each with a "split" column
    worker: type
    worker_kwargs: dict
    batch_size: int
    info: dict = field(default_factory=dict)  # extra manifest fields
    # output blocks combined per Parquet write (bytes in memory); None: one write per block.
    # Few large writes matter when the actors hold every CPU: each write task then needs a
    # freshly started worker process (about 2 s of CPU) once Ray has reaped the idle ones.
    min_bytes_per_write: int | None = None
    # Parquet codec: one for every column, or per column (a column left out of the dict is stored uncompressed)
    compression: str | dict[str, str] = "zstd"

    @property
    def recipe_hash(self) -> str:
        return recipe_hash(self.recipe)

    @property
    def counts(self) -> dict[str, int]:
        splits = pa.concat_tables(self.items).column("split").to_numpy(zero_copy_only=False)
        names, counts = np.unique(splits, return_counts=True)
        return {str(n): int(c) for n, c in zip(names, counts)}

