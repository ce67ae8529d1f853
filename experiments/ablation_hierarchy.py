"""Hierarchy-constraint ablation (Manilow's dissertation, Table 2.3).

Multi-level models (one mask per level of a leaf's path: leaf, family, group; tPSA
per level), source-specific (SSS) and query-by-example (QBE), with the hierarchy
constraint off and `max` (coarser masks contain finer ones) x seeds on Ray Tune,
each trial a Ray Train run streaming the hierarchical view, all under one MLflow
parent run; prints SI-SDRi per level (and pooled over levels) on the fixed test
segments beside the paper's.
`--single-level` trains Table 2.4's SSS rows instead: the two multi-level cells and
one single-level network per level.
`--data-reduction` trains Table 2.5 instead: 0, 50 or 90% of the training data
removed, either only the leaf's targets or whole examples (SSS, no constraint).

    python experiments/ablation_hierarchy.py --preset smoke --seeds 0
    python experiments/ablation_hierarchy.py --preset cpu --seeds 0 1 2 --single-level
    python experiments/ablation_hierarchy.py --preset cpu --seeds 0 --data-reduction
"""

from __future__ import annotations

import json

from components.models.hierarchical import LEVELS
from orchestration.experiment import CONFIGS, experiment_parser, main_guard, run_table_sweep


def build_parser():
    parser = experiment_parser(__doc__, default_dataset="slakh-like")
    study = parser.add_mutually_exclusive_group()
    study.add_argument("--single-level", action="store_true", help="also train one single-level network per level (Table 2.4's baseline)")
    study.add_argument("--data-reduction", action="store_true", help="Table 2.5: remove 0/50/90%% of the training leaf targets or whole examples")
    return parser


def level_variants() -> dict:
    """The two multi-level SSS cells and the three single-level SSS networks; a single-level model has one mask, which
    the constraint leaves unchanged, so it runs once (constraint off) rather than twice."""
    multi = {f"multi-level, constraint {c}": {"model.levels": "multi", "model.hierarchy_constraint": c} for c in ("off", "max")}
    single = {f"single-level {level}": {"model.levels": "single", "model.single_level": level, "model.hierarchy_constraint": "off"} for level in LEVELS}
    return {name: {"model.conditioning": "sss"} | cell for name, cell in (multi | single).items()}


def reduction_variants() -> dict:
    """Table 2.5's rows for SSS (which it trains without the constraint)."""
    cells = {"0%": (0.0, "leaf")} | {f"{int(f * 100)}% {what}": (f, what) for f in (0.5, 0.9) for what in ("all", "leaf")}
    return {name: {"model.conditioning": "sss", "model.hierarchy_constraint": "off", "model.data_reduction": {"fraction": f, "what": what}} for name, (f, what) in cells.items()}


def extra_overrides(args) -> list[str]:
    """--single-level or --data-reduction: their variants replace the conditioning x constraint grid; they name
    their conditioning (SSS, the rows they stand for) rather than take the preset's."""
    variants = level_variants() if args.single_level else reduction_variants() if args.data_reduction else None
    return ["sweep.grid={}", f"sweep.variants={json.dumps(variants)}"] if variants else []


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sweep, paper = CONFIGS / "ablation_hierarchy.yaml", CONFIGS / "paper" / "ablation_hierarchy.yaml"
    return run_table_sweep("ablation_hierarchy", args, "hierarchical", sweep, paper, extra_overrides(args))


if __name__ == "__main__":
    main_guard(main)()
