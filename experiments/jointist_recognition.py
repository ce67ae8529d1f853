"""Jointist, Table 1: instrument recognition (f_IR) by Transformer depth, on slakh-like pieces.

f_IR alone, 1 to 4 encoder layers; mAP and F1 at 0.5, macro and weighted by class support, on the
fixed test clips.

    python experiments/jointist_recognition.py --preset smoke --seeds 0
    python experiments/jointist_recognition.py --preset cpu
"""

from __future__ import annotations

from orchestration.experiment import CONFIGS, experiment_parser, main_guard, run_table_sweep


def build_parser():
    return experiment_parser(__doc__, default_dataset="slakh-like")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_table_sweep("jointist_recognition", args, "jointist", CONFIGS / "jointist_recognition.yaml", CONFIGS / "paper" / "jointist_recognition.yaml")


if __name__ == "__main__":
    main_guard(main)()
