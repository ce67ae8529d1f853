"""Scheduled benchmark refresh: run the benchmark suite and log every figure to MLflow.

One run per refresh in the experiment `benchmarks`, tagged with the code
version and the machine; each figure is a metric named `<benchmark>/<figure>`,
so the MLflow UI charts them across refreshes (compare runs, or a metric's
history view). The JSON of the figures is attached as an artifact.

    python experiments/benchmark_refresh.py --quick
"""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path

from orchestration.experiment import main_guard


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes and one repeat")
    parser.add_argument("--experiment", default="benchmarks", help="MLflow experiment (default benchmarks)")
    return parser


def metric_name(benchmark: str, figure: str) -> str:
    """MLflow metric names allow letters, digits and _-./ and spaces."""
    return f"{benchmark}/" + re.sub(r"[^A-Za-z0-9_\-./ ]+", "_", figure)


def main(argv: list[str] | None = None) -> int:
    from orchestration import benchmarks
    from orchestration.tracking import RunLogger, client, ensure_experiment, tracking_uri
    from orchestration.versions import code_version

    args = build_parser().parse_args(argv)
    uri = tracking_uri()  # resolved before the suite points its scratch runs elsewhere
    experiment_id = ensure_experiment(args.experiment, uri)
    figures = benchmarks.run(args.names, args.quick)
    print(benchmarks.table(figures))
    run = client(uri).create_run(
        experiment_id,
        run_name=f"refresh {'quick' if args.quick else 'full'} {code_version()[:12]}",
        tags={"partita.code_version": code_version(), "partita.kind": "benchmark", "quick": str(args.quick)}
        | {f"machine.{k}": v for k, v in benchmarks.machine().items()},
    )
    logger = RunLogger(run.info.run_id, uri)
    logger.metrics({metric_name(f.benchmark, f.name): f.value for f in figures}, 0)
    logger.text(benchmarks.table(figures), "benchmarks.md")
    with tempfile.TemporaryDirectory() as folder:
        logger.file(benchmarks.save(figures, Path(folder) / "benchmarks.json"))
    missed = [f for f in figures if f.met is False]
    logger.tags({"targets_missed": str(len(missed))})
    logger.finish("FINISHED")
    print(f"logged {len(figures)} figures to MLflow run {run.info.run_id} ({args.experiment}); targets missed: {len(missed)}")
    return 0


if __name__ == "__main__":
    main_guard(main)()
