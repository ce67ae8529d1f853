"""The `partita` command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from components.errors import PartitaError
from orchestration import mlflow_server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="partita", description="musical scene analysis research infrastructure")
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="build and inspect data sets").add_subparsers(dest="data_command", required=True)
    build = data.add_parser("build", help="synthesise a data set into Parquet (a no-op when it is up to date)")
    build.add_argument("name", help="data set name, e.g. jsb-multi")
    build.add_argument("--out", help="folder of data sets (default $PARTITA_HOME/data)")
    build.add_argument("--jsb-json", help="czhuang jsb-chorales-quarter.json (JSB sets)")
    build.add_argument("--jsb-source", choices=["czhuang", "music21"], help="music21: offline fallback, a different chord set")
    build.add_argument("--workers", type=int, help="Ray actors (default: all CPUs)")
    build.add_argument("--force", action="store_true", help="rebuild even if up to date")
    build.add_argument("--dry-run", action="store_true", help="check the recipe and its inputs (soundfonts, JSB file), print what would be built, and stop")
    build.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override, e.g. chords.note_seconds=0.5")
    build.add_argument("--pieces", type=int, help="number of pieces (slakh-like, piano-domains)")
    build.add_argument("--soundfonts", nargs="+", metavar="SOUNDFONT", help="names or .sf2/.sf3 paths the parts draw from (slakh-like)")
    build.set_defaults(run=_data_build)

    info = data.add_parser("info", help="counts, shapes and content hash of a built data set")
    info.add_argument("path", help="DIR/DATASET, e.g. data/jsb-multi")
    info.add_argument("--json", action="store_true", help="print the manifest summary as JSON")
    info.add_argument("--verify", action="store_true", help="also check every file against its checksum")
    info.set_defaults(run=_data_info)

    listen = data.add_parser("listen", help="write a piece's mix and stems (slakh-like) or a piano rendering as WAV")
    listen.add_argument("path", help="DIR/DATASET, e.g. data/slakh-like")
    listen.add_argument("--index", type=int, default=0, help="row of the split, in example_id order")
    listen.add_argument("--split", default="train")
    listen.add_argument("--out", required=True, help="FILE.wav: the mix; each stem goes beside it as FILE.<n>-<name>.wav")
    listen.set_defaults(run=_data_listen)

    train = commands.add_parser("train", help="one training run of a model family on Ray Train, tracked in MLflow")
    train.add_argument("--family", required=True, help="model family, e.g. musicslots, vae, supervised_cnn")
    train.add_argument("--preset", choices=["smoke", "cpu", "paper"], default="cpu")
    train.add_argument("--dataset", default="jsb-multi")
    train.add_argument("--jsb-json", help="czhuang jsb-chorales-quarter.json, for JSB data sets")
    train.add_argument("--jsb-source", choices=["czhuang", "music21"], help="music21: the offline fallback, a different chord set")
    train.add_argument("--dry-run", action="store_true", help="validate the config and the data's inputs, print the plan, and stop")
    train.add_argument("--config", action="append", default=[], metavar="FILE", help="extra YAML merged over the preset")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    train.add_argument("--name", help="run name (default: family, preset, data set, seed); the same name resumes")
    train.add_argument("--resume", action="store_true", help="require a checkpoint of this run to resume from")
    train.set_defaults(run=_train)

    probe = commands.add_parser("probe", help="note-property probe of a trained run (or a sweep's best run)")
    probe.add_argument("run_id", help="MLflow run id of a training run, or of a sweep's parent run")
    probe.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="probe settings, e.g. steps=2000")
    probe.set_defaults(run=_probe)

    apply = commands.add_parser("apply", help="turn a recording into stems / MIDI with a trained run (or a sweep's best run)")
    apply.add_argument("run_id", help="MLflow run id of a training run, or of a sweep's parent run")
    apply.add_argument("audio", help="the recording: WAV, FLAC or OGG, any sample rate, mixed down to mono")
    apply.add_argument("--out", help="folder to create for the outputs (default: AUDIO-FAMILY-RUN in the current folder)")
    apply.add_argument("--score", help="the recording's score as MIDI, for score-informed runs (score_informed)")
    apply.add_argument("--query", help="a recording of the instrument to separate, for query-by-example runs (hierarchical, model.conditioning=qbe)")
    apply.set_defaults(run=_apply)

    evaluate = commands.add_parser("evaluate", help="score a trained run (or a sweep's best run) on whole pieces of its data set")
    evaluate.add_argument("run_id", help="MLflow run id of a training run, or of a sweep's parent run")
    evaluate.add_argument("--split", default="test", choices=("train", "valid", "test"), help="default test")
    evaluate.add_argument("--limit", type=_positive, help="only the split's first N pieces")
    evaluate.add_argument("--recognizer", metavar="RUN_ID", help="another run of the family names the instruments (Jointist: an f_IR run, for the paper's i- rows)")
    evaluate.set_defaults(run=_evaluate)

    bench = commands.add_parser("bench", help="run the benchmark suite: figures and side-by-side ratios")
    bench.add_argument("names", nargs="*", help="benchmarks to run (default: all): synth, datasets, eval, train, sweep, multitrack, kelz, ingest")
    bench.add_argument("--quick", action="store_true", help="smaller sizes, one repeat: minutes instead of the better part of an hour")
    bench.add_argument("--json", help="where to write the figures (default $PARTITA_HOME/runs/benchmarks/<time>.json)")
    bench.set_defaults(run=_bench)

    doctor = commands.add_parser("doctor", help="check that this machine can run partita: one line per check, exit 1 if one fails")
    doctor.add_argument("--soundfont", action="append", metavar="NAME_OR_PATH", help="soundfonts to check (default: the three GM soundfonts partita uses)")
    doctor.set_defaults(run=_doctor)

    mlflow_server.add_commands(commands)

    args = parser.parse_args(argv)
    try:
        return args.run(args) or 0
    except PartitaError as err:
        print(f"partita: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("partita: interrupted", file=sys.stderr)
        return 130


def _apply(args: argparse.Namespace) -> None:
    from orchestration.apply import apply_run

    folder = apply_run(
        args.run_id, Path(args.audio), Path(args.out) if args.out else None,
        score=Path(args.score) if args.score else None, query=Path(args.query) if args.query else None,
    )
    print(f"wrote {', '.join(sorted(p.name for p in folder.iterdir()))} to {folder}")


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return int(text)


def _evaluate(args: argparse.Namespace) -> None:
    from orchestration.evaluate import PREFIX, evaluate_run

    metrics = evaluate_run(args.run_id, args.split, args.limit, recognizer_run=args.recognizer)
    for name, value in metrics.items():
        print(f"{PREFIX}{args.split}/{name:<32} {value:.4f}")


def _doctor(args: argparse.Namespace) -> int:
    from orchestration.doctor import DEFAULT_SOUNDFONTS, doctor

    return doctor(tuple(args.soundfont or DEFAULT_SOUNDFONTS))


def _bench(args: argparse.Namespace) -> None:
    import time

    from orchestration import benchmarks, paths

    target = Path(args.json) if args.json else paths.runs_root() / "benchmarks" / f"{time.strftime('%Y%m%d-%H%M%S')}.json"
    figures = benchmarks.run(args.names, args.quick)
    print(benchmarks.table(figures))
    print(f"figures written to {benchmarks.save(figures, target)}")


def _train(args: argparse.Namespace) -> None:
    from orchestration.config import load_config
    from orchestration.data_build import build
    from orchestration.experiment import CONFIGS
    from orchestration.runtime import init_ray
    from orchestration.tracking import ensure_experiment
    from orchestration.trainer import train

    preset = CONFIGS / args.family / f"{args.preset}.yaml"
    if not preset.is_file():
        known = sorted(p.parent.name for p in CONFIGS.glob(f"*/{args.preset}.yaml"))
        raise PartitaError(f"no {args.preset} preset for model family {args.family!r}", f"use one of: {', '.join(known)}")
    overrides = list(args.set) + ([f"data.jsb_json={Path(args.jsb_json).resolve()}"] if args.jsb_json else [])
    overrides += [f"data.chords.jsb_source={args.jsb_source}"] if args.jsb_source else []
    config = load_config([preset, *args.config], overrides, base={"data": {"name": args.dataset}, "experiment": f"{args.family}-runs"})
    name = args.name or f"{args.family}-{args.preset}-{config.data.name}-seed{config.train.seed}"
    if args.dry_run:
        from orchestration.data_build import check_inputs

        print(f"run {name}: config valid\ndata {check_inputs(config.data)}\ndry run: nothing trained; drop --dry-run to run it")
        return
    experiment_id = ensure_experiment(config.experiment)
    init_ray()
    build(config.data)
    outcome = train(config, run_key=f"train:{name}", run_name=name, experiment_id=experiment_id, resume_only=args.resume)
    print(json.dumps({"run_id": outcome["run_id"], "test": outcome["test"], "valid": outcome["valid"]}, indent=2))


def _probe(args: argparse.Namespace) -> None:
    from orchestration.config import parse_override
    from orchestration.probe import probe_run

    overrides = dict(parse_override(item) for item in args.set)
    print(json.dumps(probe_run(args.run_id, overrides), indent=2))


def _data_build(args: argparse.Namespace) -> None:
    from orchestration.config import load_data_config
    from orchestration.data_build import build

    from components.data.catalog import KNOWN_DATASETS

    if args.name not in KNOWN_DATASETS:
        raise PartitaError(f"unknown data set {args.name!r}", f"name one of: {', '.join(KNOWN_DATASETS)} (partita data build jsb-multi)")
    overrides = list(args.set) + ([f"chords.jsb_source={args.jsb_source}"] if args.jsb_source else [])
    recipe = {"slakh-like": "multitrack", "piano-domains": "pianos"}.get(args.name)
    if (args.pieces is not None or args.soundfonts) and recipe is None:
        raise PartitaError(f"--pieces and --soundfonts do not apply to {args.name}", "use them with slakh-like or piano-domains")
    if args.pieces is not None:
        overrides.append(f"{recipe}.pieces={args.pieces}")
    if args.soundfonts:
        if recipe != "multitrack":
            raise PartitaError("--soundfonts applies to slakh-like", "choose piano-domains' pianos with --set pianos.train_pianos=[SOUNDFONT:PROGRAM,...]")
        overrides.append(f"multitrack.soundfonts={json.dumps(args.soundfonts)}")
    config = load_data_config({"name": args.name, "root": args.out, "jsb_json": args.jsb_json}, overrides)
    if args.dry_run:
        from orchestration.data_build import check_inputs

        print(f"{check_inputs(config)}\ndry run: nothing built; drop --dry-run to build it")
        return
    build(config, force=args.force, workers=args.workers)


def _data_info(args: argparse.Namespace) -> None:
    from components.data.manifest import read_manifest, verify

    path = Path(args.path)
    manifest = verify(path) if args.verify else read_manifest(path)
    summary = {
        "name": manifest["name"],
        "path": str(path.resolve()),
        "kind": manifest["kind"],
        "splits": {split: entry["rows"] for split, entry in manifest["splits"].items()},
        "files": sum(len(entry["files"]) for entry in manifest["splits"].values()),
        "bytes": sum(f["bytes"] for entry in manifest["splits"].values() for f in entry["files"]),
        "shapes": manifest.get("shapes", {}),
        "content_hash": manifest["content_hash"],
        "recipe_hash": manifest["recipe_hash"],
        "built": manifest["built"],
        "code_version": manifest["code_version"],
        "verified": bool(args.verify),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"{summary['name']} ({summary['kind']}) at {summary['path']}")
    for split, rows in summary["splits"].items():
        print(f"  {split:>6}: {rows} rows")
    for column, shape in summary["shapes"].items():
        print(f"  {column}: {' x '.join(map(str, shape))}")
    for split, hours in manifest.get("hours", {}).items():
        print(f"  {split:>6}: {hours:.3f} hours of audio")
    print(f"  {summary['files']} files, {summary['bytes'] / 1e6:.1f} MB")
    print(f"  content hash {summary['content_hash']}" + ("  (all files verified)" if args.verify else ""))
    print(f"  built {summary['built']} by {summary['code_version']}")


def _data_listen(args: argparse.Namespace) -> None:
    import re

    import soundfile

    from components.data.manifest import read_manifest
    from components.data.multitrack.reader import piece_from_row
    from components.data.pianos.reader import rendering_from_row
    from components.data.splits import row_at

    path, out = Path(args.path), Path(args.out)
    kind = read_manifest(path).get("kind")
    out.parent.mkdir(parents=True, exist_ok=True)
    if kind == "multitrack":
        piece = piece_from_row(row_at(path, args.split, kind, args.index))
        soundfile.write(out, piece.mix(), piece.sample_rate, subtype="FLOAT")
        print(f"{piece.name} ({args.split} #{args.index}, {piece.stems_pcm.shape[1] / piece.sample_rate:.1f} s): mix -> {out}")
        for n, (name, audio) in enumerate(zip(piece.stem_names, piece.stems)):
            stem = out.with_name(f"{out.stem}.{n}-{re.sub(r'[^A-Za-z0-9]+', '-', name).strip('-')}.wav")
            soundfile.write(stem, audio, piece.sample_rate, subtype="FLOAT")
            print(f"  {name}: program {piece.programs[n]}{' (drum kit)' if piece.is_drum[n] else ''}, {piece.stem_classes[n]}, {piece.soundfonts[n]} -> {stem}")
    elif kind == "piano-domains":
        from components.data.pianos.render import PianoRenderer

        rendering = rendering_from_row(row_at(path, args.split, kind, args.index))
        renderer = PianoRenderer(read_manifest(path)["recipe"]["pianos"])
        audio = renderer.render_audio(rendering.notes, rendering.piano, rendering.seconds)
        soundfile.write(out, audio, renderer.recipe.sample_rate, subtype="FLOAT")
        print(f"{rendering.piece} on {rendering.piano} ({args.split} #{args.index}, re-rendered) -> {out}")
    else:
        raise PartitaError(f"{path} is a {kind} data set; listen plays slakh-like and piano-domains sets", "pass one of those")


if __name__ == "__main__":
    sys.exit(main())
