"""Jointist, Table 2: instrument-conditioned transcription by training schedule, on slakh-like pieces.

T (f_T alone), pTS(s) / pTS(c) (f_T pretrained for model.pretrain_steps, then trained with f_MSS merging
its roll by sum / concat) and TS(s) (both from scratch), teacher-forced with the true instruments; note
and note-with-offset F1, flat, piece-wise and instrument-wise, on the fixed test clips.
The i- rows (f_IR's instruments at inference, flat F1 on whole pieces) score a trained run against an f_IR
run's instruments: `partita evaluate RUN --recognizer F_IR_RUN` (an f_IR run from jointist_recognition.py).

    python experiments/jointist_transcription.py --preset smoke --seeds 0
    python experiments/jointist_transcription.py --preset cpu --set model.pretrain_steps=1000
"""

from __future__ import annotations

from orchestration.experiment import CONFIGS, experiment_parser, main_guard, run_table_sweep


def build_parser():
    return experiment_parser(__doc__, default_dataset="slakh-like")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_table_sweep("jointist_transcription", args, "jointist", CONFIGS / "jointist_transcription.yaml", CONFIGS / "paper" / "jointist_transcription.yaml")


if __name__ == "__main__":
    main_guard(main)()
