"""VAE beta ablation (the paper's Table 16): beta in {0.5, 1, 2, 4} x seeds, each VAE probed.

Each trial trains a VAE on Ray Train, then fits the linear note-property probe
on its frozen latent; the table compares chord accuracy (every note's pitch and
instrument right) beside the paper's. `--search optuna` searches beta on a log
scale instead of the grid.

    python experiments/ablation_beta.py --preset smoke --dataset jazznet-multi --seeds 0
"""

from __future__ import annotations

from orchestration.experiment import CONFIGS, experiment_parser, main_guard, run_table_sweep


def build_parser():
    return experiment_parser(__doc__, default_dataset="jsb-multi")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_table_sweep("ablation_beta", args, "vae", CONFIGS / "ablation_beta.yaml", CONFIGS / "paper" / "vae_beta.yaml")


if __name__ == "__main__":
    main_guard(main)()
