"""Note-property prediction from five representation sources (the paper's Table 2), one sweep.

Sources: the supervised CNN (scored on its own predictions), an autoencoder, a
VAE (beta 1), a beta-VAE (beta --beta, the paper's best 0.5) and MusicSlots
without masks, each trained with its family's preset, the four unsupervised
ones then probed with a linear classifier on their frozen representation.

    python experiments/property_prediction.py --preset smoke --dataset jazznet-multi --seeds 0
"""

from __future__ import annotations

import json

from orchestration.config import parse_override, read_yaml, set_key
from orchestration.experiment import CONFIGS, experiment_parser, main_guard, run_table_sweep

SOURCES = {
    "supervised_cnn": ("supervised_cnn", {}),
    "autoencoder": ("autoencoder", {}),
    "vae": ("vae", {"beta": 1.0}),
    "beta_vae": ("vae", None),  # beta from --beta
    "musicslots_none": ("musicslots", {"mask_norm": "none"}),
}


def build_parser():
    parser = experiment_parser(__doc__, default_dataset="jsb-multi")
    parser.add_argument("--beta", type=float, default=0.5, help="beta of the beta-VAE source (default 0.5, the paper's best)")
    return parser


def variants(preset: str, beta: float, overrides: list[str] = ()) -> dict[str, dict]:
    """Each source's whole model, train and probe sections, from its family's preset file, with the command
    line's train.* and probe.* overrides on top: `--set train.steps=1500` shortens every source's schedule
    (a variant's sections replace the base config's, so the overrides would otherwise be lost)."""
    shared = [(key, value) for key, value in map(parse_override, overrides) if key.split(".")[0] in ("train", "probe")]
    out = {}
    for name, (family, model_overrides) in SOURCES.items():
        tree = read_yaml(CONFIGS / family / f"{preset}.yaml")
        model = tree["model"] | (model_overrides if model_overrides is not None else {"beta": beta})
        out[name] = {"model": model, "train": tree.get("train", {}), "probe": tree.get("probe", {})}
        for key, value in shared:
            set_key(out[name], key, value)
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    extra = [f"sweep.variants={json.dumps(variants(args.preset, args.beta, args.set))}"]
    return run_table_sweep(
        "property_prediction", args, "musicslots", CONFIGS / "property_prediction.yaml", CONFIGS / "paper" / "property_prediction.yaml", extra
    )


if __name__ == "__main__":
    main_guard(main)()
