"""Two-source separation: a BLSTM mask-inference model on mixtures of two salient stems of slakh-like pieces.

Examples are made and featurised on Ray Data CPU actors and streamed into Ray Train;
trained with the tPSA loss through Tune (seeds x grid) into MLflow; SI-SDRi on the
fixed test segments (the mixture itself scores 0 dB).

    python experiments/separation_two_source.py --preset smoke --seeds 0
    python experiments/separation_two_source.py --preset cpu --set model.view.featurise_on=trainer
"""

from __future__ import annotations

from orchestration.experiment import CONFIGS, experiment_parser, main_guard, run_table_sweep


def build_parser():
    return experiment_parser(__doc__, default_dataset="slakh-like")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_table_sweep("separation_two_source", args, "mask_inference", CONFIGS / "separation_two_source.yaml", CONFIGS / "paper" / "separation_two_source.yaml")


if __name__ == "__main__":
    main_guard(main)()
