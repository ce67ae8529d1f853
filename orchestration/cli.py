"""The `partita` command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from components.errors import PartitaError


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
    build.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override, e.g. chords.note_seconds=0.5")
    build.set_defaults(run=_data_build)

    info = data.add_parser("info", help="counts, shapes and content hash of a built data set")
    info.add_argument("path", help="DIR/DATASET, e.g. data/jsb-multi")
    info.add_argument("--json", action="store_true", help="print the manifest summary as JSON")
    info.add_argument("--verify", action="store_true", help="also check every file against its checksum")
    info.set_defaults(run=_data_info)

    args = parser.parse_args(argv)
    try:
        return args.run(args) or 0
    except PartitaError as err:
        print(f"partita: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("partita: interrupted", file=sys.stderr)
        return 130


def _data_build(args: argparse.Namespace) -> None:
    from orchestration.config import load_data_config
    from orchestration.data_build import build

    overrides = list(args.set) + ([f"chords.jsb_source={args.jsb_source}"] if args.jsb_source else [])
    config = load_data_config({"name": args.name, "root": args.out, "jsb_json": args.jsb_json}, overrides)
    build(config, force=args.force, workers=args.workers)


def _data_info(args: argparse.Namespace) -> None:
    from components.manifest import read_manifest, verify

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
    print(f"  {summary['files']} files, {summary['bytes'] / 1e6:.1f} MB")
    print(f"  content hash {summary['content_hash']}" + ("  (all files verified)" if args.verify else ""))
    print(f"  built {summary['built']} by {summary['code_version']}")


if __name__ == "__main__":
    sys.exit(main())
