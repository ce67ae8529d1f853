"""What every experiment script shares: its options, its config, its exit codes.

A script in experiments/ is a thin entry point: it names its model family, its
sweep file and its paper table, and calls `run()`. Scripts expose
`build_parser()` so tools (and tests) can check options without running anything.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import json
import sys
from pathlib import Path
from typing import Callable

from components.errors import PartitaError

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"
CONFIGS = EXPERIMENTS / "configs"
PRESETS = ("smoke", "cpu", "paper")


def experiment_parser(description: str, default_dataset: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=PRESETS, default="cpu", help="model size and schedule: smoke (seconds), cpu (this laptop), paper (GPU cluster); default cpu")
    parser.add_argument("--dataset", default=default_dataset, help=f"data set to train on (default {default_dataset}); built first if missing")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds per grid cell (default: the sweep file's, 5 as in the paper)")
    parser.add_argument("--search", choices=["grid", "optuna"], help="grid (default) or an Optuna search over sweep.space")
    parser.add_argument("--samples", type=int, help="Optuna trials")
    parser.add_argument("--jsb-json", help="czhuang jsb-chorales-quarter.json, for JSB data sets")
    parser.add_argument("--jsb-source", choices=["czhuang", "music21"], help="music21: the offline fallback, a different chord set derived from music21's chorales")
    parser.add_argument("--dry-run", action="store_true", help="validate the config and the inputs it names (data set, soundfonts, JSB file), print the plan, and stop")
    parser.add_argument("--config", action="append", default=[], metavar="FILE", help="extra YAML merged over the preset")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. train.lr=3e-4")
    parser.add_argument("--name", help="sweep name (default: script, data set, preset and a hash of the config, so a rerun resumes)")
    return parser


def load_experiment(args: argparse.Namespace, family: str, sweep_file: Path, extra_overrides: list[str] = ()):
    from orchestration.config import load_config

    from components.data.catalog import KNOWN_DATASETS

    if args.dataset not in KNOWN_DATASETS:
        raise PartitaError(f"unknown data set {args.dataset!r}", f"pass --dataset with one of: {', '.join(KNOWN_DATASETS)}")
    files = [CONFIGS / family / f"{args.preset}.yaml", sweep_file, *args.config]
    overrides = []
    if args.seeds:
        overrides.append(f"sweep.seeds={json.dumps(args.seeds)}")
    if args.search:
        overrides.append(f"sweep.search={args.search}")
    if args.samples:
        overrides.append(f"sweep.num_samples={args.samples}")
    if args.jsb_json:
        overrides.append(f"data.jsb_json={Path(args.jsb_json).resolve()}")
    if args.jsb_source:
        overrides.append(f"data.chords.jsb_source={args.jsb_source}")
    return load_config(files, [*extra_overrides, *overrides, *args.set], base={"data": {"name": args.dataset}})


def sweep_name(script: str, args: argparse.Namespace, config) -> str:
    digest = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()[:8]
    return args.name or f"{script}-{config.data.name}-{args.preset}-{digest}"


def scale_note(config, preset: str) -> str:
    """The preset, each distinct schedule (steps and batch) its trials train on, and the seeds."""
    from orchestration.sweep import trial_overrides

    # a variant may bring its own train section (property_prediction: each source its family's schedule)
    schedules: dict[str, list[str]] = {}
    for variant in config.sweep.variants or {None: {}}:
        train = config.with_values(trial_overrides(config, {"variant": variant})).train
        schedules.setdefault(f"{train.steps} steps, batch {train.batch_size}", []).append(variant)
    if len(schedules) == 1:
        schedule = next(iter(schedules))
    else:
        schedule = "; ".join(f"{text} ({', '.join(variants)})" for text, variants in schedules.items())
    seeds = len(config.sweep.seeds)
    return f"preset {preset}: {schedule}, {seeds} seed{'s' * (seeds > 1)}"


def trial_count(config) -> int:
    sweep = config.sweep
    if sweep.search == "optuna":
        return sweep.num_samples
    return max(1, len(sweep.variants)) * math.prod(len(values) for values in sweep.grid.values()) * len(sweep.seeds)


def dry_run_plan(script: str, args: argparse.Namespace, config) -> str:
    """What a run would do, after checking the config and the data's inputs: nothing is trained or built."""
    from orchestration.data_build import check_inputs

    return "\n".join([
        f"{script}: config valid ({config.model.family}, {scale_note(config, args.preset)})",
        f"sweep {sweep_name(script, args, config)}: {trial_count(config)} trials ({config.sweep.search})",
        f"data {check_inputs(config.data)}",
        "dry run: nothing trained; drop --dry-run to run it",
    ])


def run_table_sweep(script: str, args: argparse.Namespace, family: str, sweep_file: Path, paper_file: Path, extra_overrides: list[str] = ()) -> int:
    """Run the sweep, then print and log its table beside the paper's, and where to see it; 1 if no trial finished."""
    from components.data.manifest import read_manifest
    from orchestration.data_build import dataset_dir
    from orchestration.reports import comparison_table, load_paper
    from orchestration.sweep import run_sweep
    from orchestration.tracking import RunLogger, publish_sweep, tracking_uri

    config = load_experiment(args, family, sweep_file, extra_overrides)
    if args.dry_run:
        print(dry_run_plan(script, args, config))
        return 0
    result = run_sweep(config, sweep_name(script, args, config))
    learns_with = f"python experiments/{script}.py --preset cpu --dataset {config.data.name}" if args.preset == "smoke" else None
    table = comparison_table(result, config, load_paper(paper_file), scale_note(config, args.preset), learns_with)
    print("\n" + table)
    parent = RunLogger(result.parent_run_id)
    parent.text(table, "results.md")
    finished = sum(t.status == "finished" for t in result.trials)
    data_path = dataset_dir(config.data)
    links = publish_sweep(result.experiment_id, result.parent_run_id, result.metric, result.mode, table, read_manifest(data_path), data_path)
    parent.finish("FINISHED" if finished else "FAILED", None if finished else "no trial finished")
    print(f"MLflow: experiment {config.experiment!r}, parent run {result.parent_run_id}")
    print(f"  compare the trials: {links['compare']}")
    print(f"  the trials by {result.metric}: {links['ranked']}")
    if not tracking_uri().startswith(("http://", "https://")):
        print("  (the embedded store: start `partita mlflow ui` to open them)")
    return 0 if finished else 1


def main_guard(main: Callable[[list[str] | None], int]) -> Callable[[], None]:
    """Run `main` and exit: 0 done, 1 no trial finished, 2 a problem with the input (one line)."""

    def run() -> None:
        try:
            code = main(None)
        except PartitaError as err:
            print(f"error: {err}", file=sys.stderr)
            code = 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            code = 130
        sys.exit(code)

    return run
