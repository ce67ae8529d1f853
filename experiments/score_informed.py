"""Score-informed separation (DSIS, Table 4.1) and source-informed transcription (DSIT, Table 4.2).

The three ways the condition enters (vanilla, roll_module, residual) x seeds on Ray Tune, each trial a Ray Train
run streaming the 4-source view (piano, guitar, bass, drums), under one MLflow parent run; prints SI-SDRi (DSIS)
or note F1 (DSIT) per source beside the paper's. `--controllability` then runs the chapter's test on the sweep's
best DSIS run: notes removed from the ground-truth rolls of the test segments in 5 nested subsets, Delta SI-SDRi
against the normalised Hamming distance, the figure and the points logged to the parent run.
The MI+TR baseline is a Cerberus run on the same view, so on the same fixed test segments (cpu preset, seed 0;
its segment rule, 1 onset per source, is the score_informed cpu preset's):
    python experiments/ablation_cerberus.py --preset cpu --seeds 0 --set model.view.sources=4 \
        --set 'model.view.classes=[Piano, Electric Guitar, Bass, Drums]' \
        --set 'model.view.segment={seconds: 5.0, hop_seconds: 2.5, min_onsets: 1, onset_velocity: 30}' \
        --set 'sweep.variants={MI+TR: {model.weights: {dc: 0, mi: 0.2, tr: 0.8}}}'

    python experiments/score_informed.py --preset smoke --seeds 0 --controllability
    python experiments/score_informed.py --preset cpu --task transcription
"""

from __future__ import annotations

from components.errors import PartitaError
from orchestration.experiment import CONFIGS, experiment_parser, load_experiment, main_guard, run_table_sweep, sweep_name

SCRIPT = "score_informed"
SWEEP_FILE = CONFIGS / "score_informed.yaml"


def build_parser():
    parser = experiment_parser(__doc__, default_dataset="slakh-like")
    parser.add_argument("--task", choices=["separation", "transcription"], default="separation", help="separation: DSIS, Table 4.1 (default); transcription: DSIT, Table 4.2")
    parser.add_argument("--controllability", action="store_true", help="after the sweep, the controllability test on its best DSIS run, logged to the parent run")
    parser.add_argument("--subsets", type=int, default=5, help="nested note subsets removed one by one (the chapter: 5)")
    return parser


def run_controllability(parent_run_id: str, subsets: int, data_path) -> None:
    """The controllability test on the best run of a sweep: points (JSON), figure and mean Delta SI-SDRi per step."""
    import numpy as np
    import torch

    from components.data.multitrack.featurize import ViewFeaturizer
    from components.data.multitrack.fixed import load_fixed
    from components.models.score_informed import controllability
    from orchestration import paths
    from orchestration.apply import load_trained
    from orchestration.tracking import RunLogger

    _, model, spec, run, _ = load_trained(parent_run_id)
    seed = int(run.data.params.get("train.seed", 0))  # the best run's own test segments
    view = model.config.view
    test = load_fixed(data_path, "test", view, seed, paths.data_root() / "cache")
    featurizer = ViewFeaturizer(view, spec.sample_rate, keep_waveforms=True)
    with torch.no_grad():
        result = controllability(model, (featurizer(batch) for batch in test.batches(16)), subsets, seed)
    logger = RunLogger(parent_run_id)
    logger.json({"run_id": run.info.run_id, "points": result.rows()}, "controllability.json")
    logger.figure(result.figure(), "controllability.png")
    print(f"\ncontrollability of run {run.info.run_id} ({model.config.variant}): mean Delta SI-SDRi (dB) by subsets removed")
    print("| source | " + " | ".join(f"{k} (d={np.mean(result.hamming[result.step == k]):.2f})" for k in range(subsets + 1)) + " |")
    print("|---|" + "---|" * (subsets + 1))
    for s, name in enumerate(result.names):
        means = [result.delta_si_sdri[(result.source == s) & (result.step == k)].mean() for k in range(subsets + 1)]
        print(f"| {name} | " + " | ".join(f"{m:.2f}" for m in means) + " |")
    print("logged to the parent run: controllability.json, controllability.png")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.controllability and args.task != "separation":
        raise PartitaError("the controllability test edits the score of a DSIS model", "drop --controllability, or run --task separation")
    if args.subsets < 1:
        raise PartitaError(f"--subsets {args.subsets} removes no notes", "pass --subsets 1 or more (the chapter: 5)")
    task = [f"model.task={args.task}"]
    code = run_table_sweep(SCRIPT, args, SCRIPT, SWEEP_FILE, CONFIGS / "paper" / f"score_informed_{args.task}.yaml", task)
    if code or args.dry_run or not args.controllability:
        return code
    from orchestration.data_build import dataset_dir
    from orchestration.tracking import RUN_KEY_TAG, client, ensure_experiment

    config = load_experiment(args, SCRIPT, SWEEP_FILE, task)
    key = f"sweep:{sweep_name(SCRIPT, args, config)}"  # the parent run run_table_sweep just finished
    parent = client().search_runs([ensure_experiment(config.experiment)], filter_string=f"tags.`{RUN_KEY_TAG}` = '{key}'", max_results=1)[0]
    run_controllability(parent.info.run_id, args.subsets, dataset_dir(config.data))
    return 0


if __name__ == "__main__":
    main_guard(main)()
