"""Jointist, Table 3: transcription-informed separation, on slakh-like pieces.

S only (f_MSS told the instrument alone), T sum S and T cat S (f_T pretrained, its posteriorgram merged
by sum / concat) and the upper bound fed the ground-truth rolls; SDR of the drawn instruments that
play in the fixed test clips, averaged by instrument, by piece and by source as in the paper, and its
gain over the mixture. Table 8's merge x roll-form grid: --set or a `grid:` in the sweep file.

    python experiments/jointist_separation.py --preset smoke --seeds 0
    python experiments/jointist_separation.py --preset cpu --set model.separator.roll=binary
"""

from __future__ import annotations

from orchestration.experiment import CONFIGS, experiment_parser, main_guard, run_table_sweep


def build_parser():
    return experiment_parser(__doc__, default_dataset="slakh-like")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_table_sweep("jointist_separation", args, "jointist", CONFIGS / "jointist_separation.yaml", CONFIGS / "paper" / "jointist_separation.yaml")


if __name__ == "__main__":
    main_guard(main)()
