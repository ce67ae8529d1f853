"""MusicSlots mask-normalisation ablation (the paper's Tables 1 and 14; Table 15 with --architecture).

Sweeps model.mask_norm in {softmax, sigmoid, none} x seeds on Ray Tune, each
trial a Ray Train run, all tracked under one MLflow parent run, then prints the
note MSE / mIoU table beside the paper's numbers.

    python experiments/ablation_masks.py --preset smoke --dataset jazznet-single --seeds 0
    ray job submit --working-dir . -- python experiments/ablation_masks.py --preset paper
"""

from __future__ import annotations

import sys
from pathlib import Path

from orchestration.experiment import CONFIGS, experiment_parser, load_experiment, main_guard, scale_note, sweep_name

HERE = Path(__file__).resolve().parent


def build_parser():
    parser = experiment_parser(__doc__, default_dataset="jsb-multi")
    parser.add_argument("--architecture", action="store_true", help="also cross implicit differentiation and encoder stride (Table 15)")
    return parser


def main(argv: list[str] | None = None) -> int:
    from orchestration.reports import comparison_table, load_paper
    from orchestration.sweep import run_sweep
    from orchestration.tracking import RunLogger

    args = build_parser().parse_args(argv)
    extra = ['sweep.grid.model.implicit=[true, false]', "sweep.grid.model.encoder_stride=[[1, 1], [1, 2]]"] if args.architecture else []
    config = load_experiment(args, "musicslots", CONFIGS / "ablation_masks.yaml", extra)
    result = run_sweep(config, sweep_name("ablation_masks", args, config))
    table = comparison_table(result, config, load_paper(CONFIGS / "paper" / "musicslots.yaml"), scale_note(config, args.preset))
    print("\n" + table)
    parent = RunLogger(result.parent_run_id)
    parent.text(table, "results.md")
    finished = sum(t.status == "finished" for t in result.trials)
    parent.finish("FINISHED" if finished else "FAILED", None if finished else "no trial finished")
    print(f"MLflow: experiment {config.experiment!r}, parent run {result.parent_run_id}")
    return 0 if finished else 1


if __name__ == "__main__":
    main_guard(main)()
