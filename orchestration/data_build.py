"""Building data sets on Ray Data: shard the work items over an actor pool, write Parquet.

Each worker actor is the plan's worker class (it holds the synthesiser and the
feature transform); output lands in a staging folder, split by split, and is
published with its manifest only when complete (components.data.manifest.staging).
"""

from __future__ import annotations

import datetime
import time
from pathlib import Path

import pyarrow.parquet as pq

from components.data.catalog import DataConfig, plan as build_plan
from components.data.manifest import FORMAT, content_hash, file_records, read_manifest, staging, write_manifest
from components.errors import PartitaError
from orchestration import paths
from orchestration.runtime import cluster_cpus, init_ray
from orchestration.versions import code_version


def dataset_dir(config: DataConfig) -> Path:
    root = Path(config.root).expanduser().resolve() if config.root else paths.data_root()
    return root / config.folder_name()


def check_inputs(config: DataConfig) -> str:
    """Resolve what a build of `config` needs (source files, soundfonts) without building; a summary line."""
    final = dataset_dir(config)
    plan = build_plan(config, sources=final.parent / "sources")
    built = (final / "manifest.json").is_file() and read_manifest(final).get("recipe_hash") == plan.recipe_hash
    return f"{config.name}: {sum(plan.counts.values())} rows {plan.counts}, {'up to date' if built else 'to be built'} at {final}"


def build(config: DataConfig, *, force: bool = False, workers: int | None = None) -> Path:
    """Build `config.name` unless an identical build exists; returns its folder."""
    final = dataset_dir(config)
    plan = build_plan(config, sources=final.parent / "sources")  # bad input fails here, before Ray starts
    if not force and (final / "manifest.json").is_file():
        existing = read_manifest(final)
        if existing.get("recipe_hash") == plan.recipe_hash:
            print(f"{config.name}: up to date at {final} (content {existing['content_hash'][:12]})", flush=True)
            return final
        print(f"{config.name}: the recipe changed since the build at {final}; rebuilding", flush=True)

    init_ray()
    import ray

    workers = workers or cluster_cpus()
    counts = plan.counts
    print(f"{config.name}: building {sum(counts.values())} rows {counts} with {workers} workers -> {final}", flush=True)
    started = time.perf_counter()
    with staging(final) as tmp:
        (
            ray.data.from_arrow(plan.items)
            .map_batches(
                plan.worker,
                fn_constructor_kwargs=plan.worker_kwargs,
                compute=ray.data.ActorPoolStrategy(size=workers),
                batch_size=plan.batch_size,
                batch_format="numpy",
            )
            # writes are I/O: take no CPU slot, or they wait forever behind the actor pool
            .write_parquet(
                str(tmp),
                partition_cols=["split"],
                ray_remote_args={"num_cpus": 0},
                min_bytes_per_file=plan.min_bytes_per_write,
                compression=plan.compression,
            )
        )
        for partition in tmp.glob("split=*"):
            partition.rename(tmp / partition.name.split("=", 1)[1])
        splits, digests = {}, {}
        for split, expected in counts.items():
            records = file_records(tmp / split, tmp)
            rows = sum(r["rows"] for r in records)
            if rows != expected:
                raise PartitaError(f"{config.name}/{split}: wrote {rows} rows, expected {expected}", "rerun the build")
            splits[split] = {"rows": rows, "files": records}
            table = pq.read_table(tmp / split, columns=["example_id", "digest"])
            digests[split] = zip(table["example_id"].to_pylist(), table["digest"].to_pylist())
        manifest = {
            "format": FORMAT,
            "name": config.name,
            "kind": plan.kind,
            "recipe": plan.recipe,
            "recipe_hash": plan.recipe_hash,
            "splits": splits,
            "content_hash": content_hash(digests),
            "built": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "build_seconds": round(time.perf_counter() - started, 1),
            "code_version": code_version(),
            **plan.info,
        }
        write_manifest(tmp, manifest)
    print(
        f"{config.name}: done in {manifest['build_seconds']} s, content {manifest['content_hash'][:12]}, at {final}",
        flush=True,
    )
    return final
