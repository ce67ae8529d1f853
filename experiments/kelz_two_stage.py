"""Kelz and Widmer: denoise any piano onto the canonical one (U-Net), then demix linearly on its note dictionary.

1. Trains the denoiser per split scheme (All, No Overlap) through the generic trainer on Ray
   Train, as Tune trials under one MLflow parent run.
2. Denoises every rendering with the scheme's best weights (T'), beside the raw renderings (S)
   and the canonical ones (T), and scores V_T' against V_T per piece (MSE, SSIM).
3. Demixes S, T and T' of every split on the set's canonical dictionary, fits per-pitch
   thresholds on train + valid, and scores every split: the preset's demixing settings and each
   point of model.demix_grid are Tune trials (child runs of the same parent).
   The preset's demixing settings and T' thresholds go to each denoiser's run (`partita apply` reads them).
4. Prints the paper's table (median framewise P / R / F1 per split and input) beside the paper's
   F1, and logs it with the figures (V_S, V_T', V_T, activations and the true roll of a test excerpt).

    python experiments/kelz_two_stage.py --preset cpu
    python experiments/kelz_two_stage.py --preset smoke --set 'sweep.grid.model.snippets.scheme=[all]'
"""

from __future__ import annotations

from pathlib import Path

from orchestration.experiment import CONFIGS, dry_run_plan, experiment_parser, load_experiment, main_guard, scale_note, sweep_name

SCRIPT = "kelz_two_stage"
FAMILY = "kelz"


def build_parser():
    return experiment_parser(__doc__, default_dataset="piano-domains")


def trained_denoisers(parent_run_id: str, experiment_id: str) -> dict[str, tuple[str, str]]:
    """scheme -> (training run id, checkpoint) of the sweep's finished training runs."""
    from orchestration.tracking import PARENT_TAG, client
    from orchestration.trainer import CHECKPOINT_TAG

    runs = client().search_runs([experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'")
    return {
        r.data.params["model.snippets.scheme"]: (r.info.run_id, r.data.tags[CHECKPOINT_TAG])
        for r in runs
        if r.info.status == "FINISHED" and CHECKPOINT_TAG in r.data.tags
    }


def load_denoiser(model_config, checkpoint: str):
    import ray.train
    import torch

    from components.models.registry import get_family

    model = get_family(FAMILY).build(model_config, None)  # the U-Net's shape depends on its config only
    with ray.train.Checkpoint(checkpoint).as_directory() as folder:
        state = torch.load(Path(folder) / "state.pt", map_location="cpu", weights_only=False)
    model.load_state_dict(state["best_state"] or state["model"])
    return model.eval()


def main(argv: list[str] | None = None) -> int:
    import ray
    import torch
    import yaml

    from components.data.pianos.reader import dictionary
    from components.models.kelz.demixing import DemixConfig
    from components.models.kelz.evaluation import collect_inputs, evaluate_inputs, excerpt_figure, metric_key, rows_from_metrics, table_markdown
    from components.data.pianos.recipe import PianoDomainsRecipe
    from components.data.pianos.snippets import check_piano_domains
    from components.models.kelz.family import APPLY_STATE, PianoTranscriber, denoise
    from orchestration.data_build import dataset_dir
    from orchestration.stage_sweep import run_stage_sweep
    from orchestration.sweep import run_sweep
    from orchestration.tracking import RunLogger

    args = build_parser().parse_args(argv)
    config = load_experiment(args, FAMILY, CONFIGS / f"{SCRIPT}.yaml")
    if args.dry_run:
        print(dry_run_plan(SCRIPT, args, config))
        return 0
    name = sweep_name(SCRIPT, args, config)
    trained = run_sweep(config, name)  # stage 1: one denoiser per scheme
    parent = RunLogger(trained.parent_run_id)
    denoisers = trained_denoisers(trained.parent_run_id, trained.experiment_id)
    if not denoisers:
        parent.finish("FAILED", "no denoiser finished training")
        print("no denoiser finished training")
        return 1

    model, path = config.model, dataset_dir(config.data)
    atoms = dictionary(path)
    recipe = PianoDomainsRecipe.model_validate(check_piano_domains(path, FAMILY)["recipe"]["pianos"])
    inputs = {}
    for scheme, (run_id, checkpoint) in sorted(denoisers.items()):
        network = load_denoiser(model, checkpoint)
        inputs[scheme] = collect_inputs(path, scheme, lambda mel: denoise(network, torch.from_numpy(mel)).numpy())
        print(f"denoised the {scheme} renderings with run {run_id}", flush=True)
    shared = {scheme: ray.put(collected) for scheme, collected in inputs.items()}

    base = model.demix.model_dump()
    grid = [{}]
    for key, values in model.demix_grid.items():
        grid = [point | {key: value} for point in grid for value in values]
    # each scheme at the preset's settings first (the paper's table), then the grid's other points
    points = [{"scheme": scheme} for scheme in inputs]
    points += [{"scheme": scheme, **point} for scheme in inputs for point in grid if base | point != base]
    parent_id = trained.parent_run_id

    def stage(values: dict) -> dict[str, float]:
        torch.set_num_threads(1)  # one trial per core
        overrides = {k: v for k, v in values.items() if k != "scheme"}
        collected = ray.get(shared[values["scheme"]])
        demix = DemixConfig.model_validate(base | overrides)
        result = evaluate_inputs(collected, atoms, demix, model.threshold_candidates)
        if not overrides:
            RunLogger(parent_id).figure(excerpt_figure(collected, result), f"figures/test_excerpt_{values['scheme']}.png")
            # what `partita apply` of the scheme's denoiser needs: the preset's demixing with T' thresholds
            transcriber = PianoTranscriber(recipe, atoms, result.thresholds["T'"], demix)
            RunLogger(denoisers[values["scheme"]][0]).json(transcriber.to_json(), APPLY_STATE)
        return result.metrics()

    outcomes = run_stage_sweep(f"{name}-demix", points, stage, experiment_id=trained.experiment_id, parent_run_id=parent_id)
    paper = yaml.safe_load((CONFIGS / "paper" / f"{FAMILY}.yaml").read_text())
    scale = scale_note(config, args.preset) + f"; {model.demix.steps} demixing steps"
    sections = []
    for values, metrics, error in outcomes[: len(inputs)]:
        scheme = values["scheme"]
        if metrics is None:
            sections.append(f"## {scheme}\n\nfailed: {error}")
            continue
        sections.append(f"## {scheme}\n\n" + table_markdown(rows_from_metrics(metrics), paper.get(scheme), inputs[scheme].quality, scale))
        parent.metrics({f"{scheme}/{key}": value for key, value in metrics.items()}, 0)
    sweep_lines = ["## Demixing sweep (median F1; thresholds refitted per point)", "", "| scheme | settings | valid S | valid T' | test S | test T | test T' |", "|---|---|---|---|---|---|---|"]
    for values, metrics, error in outcomes:
        settings = ", ".join(f"{k}={v}" for k, v in values.items() if k != "scheme") or "preset"
        if metrics is None:
            sweep_lines.append(f"| {values['scheme']} | {settings} | failed: {error} |||||")
            continue
        cells = [metrics.get(metric_key(split, kind, "f1")) for split, kind in (("valid", "S"), ("valid", "T'"), ("test", "S"), ("test", "T"), ("test", "T'"))]
        sweep_lines.append(f"| {values['scheme']} | {settings} | " + " | ".join("" if c is None else f"{c:.3f}" for c in cells) + " |")
    report = "\n\n".join(sections + (["\n".join(sweep_lines)] if len(outcomes) > len(inputs) else []))
    print("\n" + report)
    parent.text(report, "results.md")
    finished = all(metrics is not None for _, metrics, _ in outcomes)
    parent.finish("FINISHED" if finished else "FAILED", None if finished else "a demixing trial failed")
    print(f"MLflow: experiment {config.experiment!r}, parent run {trained.parent_run_id}")
    return 0 if finished else 1


if __name__ == "__main__":
    main_guard(main)()
