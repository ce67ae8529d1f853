"""Registry of model families: name -> ModelFamily instance, each imported on first use.

A process that trains, evaluates or applies one family imports that family's module only:
every Tune trial, Ray Train worker and CLI call is a fresh process, and importing all of
them (Cerberus alone pulls in mir_eval and scipy.stats) cost about 1.5 s in each.

Adding a family: write its module (a ModelConfig and a ModelFamily subclass, and an
instance of it) and add one line to `_FAMILIES` below.
"""

import importlib

from components.errors import PartitaError
from components.models.base import ModelFamily

_FAMILIES: dict[str, str] = {  # name -> "module:instance"
    "musicslots": "components.models.musicslots:MUSICSLOTS",
    "autoencoder": "components.models.autoencoders:AUTOENCODER",
    "vae": "components.models.autoencoders:VAE_FAMILY",
    "supervised_cnn": "components.models.autoencoders:SUPERVISED_CNN",
    "mask_inference": "components.models.mask_inference:MASK_INFERENCE",
    "kelz": "components.models.kelz.family:KELZ",
    "cerberus": "components.models.cerberus:CERBERUS",
    "hierarchical": "components.models.hierarchical:HIERARCHICAL",
    "score_informed": "components.models.score_informed:SCORE_INFORMED",
    "jointist": "components.models.jointist.family:JOINTIST",
}

FAMILY_NAMES: tuple[str, ...] = tuple(_FAMILIES)


def get_family(name: str) -> ModelFamily:
    if name not in _FAMILIES:
        raise PartitaError(
            f"unknown model family {name!r}",
            f"set model.family to one of: {', '.join(sorted(_FAMILIES))}",
        )
    module, instance = _FAMILIES[name].split(":")
    return getattr(importlib.import_module(module), instance)


def all_families() -> dict[str, ModelFamily]:
    """Every family, imported (for listings that ask each family something)."""
    return {name: get_family(name) for name in _FAMILIES}
