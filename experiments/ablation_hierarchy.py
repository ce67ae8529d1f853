"""Hierarchy-constraint ablation (Manilow's dissertation, Table 2.3).

A multi-level source-specific model (one mask per level of a leaf's path: leaf,
family, group; tPSA per level) with the hierarchy constraint off and `max` (coarser
masks contain finer ones) x seeds on Ray Tune, each trial a Ray Train run streaming
the hierarchical view, all under one MLflow parent run; prints SI-SDRi per level
(and pooled over levels) on the fixed test segments beside the paper's.

    python experiments/ablation_hierarchy.py --preset smoke --seeds 0
    python experiments/ablation_hierarchy.py --preset cpu --seeds 0 1 2
"""

from __future__ import annotations

from orchestration.experiment import CONFIGS, experiment_parser, main_guard, run_table_sweep


def build_parser():
    return experiment_parser(__doc__, default_dataset="slakh-like")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_table_sweep("ablation_hierarchy", args, "hierarchical", CONFIGS / "ablation_hierarchy.yaml", CONFIGS / "paper" / "ablation_hierarchy.yaml")


if __name__ == "__main__":
    main_guard(main)()
