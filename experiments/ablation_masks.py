"""MusicSlots mask-normalisation ablation (the paper's Tables 1 and 14; Table 15 with --architecture).

Sweeps model.mask_norm in {softmax, sigmoid, none} x seeds on Ray Tune, each
trial a Ray Train run, all tracked under one MLflow parent run, then prints the
note MSE / mIoU table beside the paper's numbers.

    python experiments/ablation_masks.py --preset smoke --dataset jazznet-single --seeds 0
    ray job submit --working-dir . -- python experiments/ablation_masks.py --preset paper
"""

from __future__ import annotations

from orchestration.experiment import CONFIGS, experiment_parser, main_guard, run_table_sweep


def build_parser():
    parser = experiment_parser(__doc__, default_dataset="jsb-multi")
    parser.add_argument("--architecture", action="store_true", help="also cross implicit differentiation and encoder stride (Table 15)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    extra = ["sweep.grid.model.implicit=[true, false]", "sweep.grid.model.encoder_stride=[[1, 1], [1, 2]]"] if args.architecture else []
    return run_table_sweep("ablation_masks", args, "musicslots", CONFIGS / "ablation_masks.yaml", CONFIGS / "paper" / "musicslots.yaml", extra)


if __name__ == "__main__":
    main_guard(main)()
