"""Registry of model families: name -> ModelFamily instance (kept out of the package __init__, so
importing one family, or components.models.base, does not import every family).

Adding a family: write its module (a ModelConfig and a ModelFamily subclass)
and add one line to `_FAMILIES` below.
"""

from components.errors import PartitaError
from components.models.autoencoders import AUTOENCODER, SUPERVISED_CNN, VAE_FAMILY
from components.models.base import ModelFamily
from components.models.cerberus import CERBERUS
from components.models.jointist.family import JOINTIST
from components.models.kelz.family import KELZ
from components.models.hierarchical import HIERARCHICAL
from components.models.mask_inference import MASK_INFERENCE
from components.models.musicslots import MUSICSLOTS
from components.models.score_informed import SCORE_INFORMED

_FAMILIES: tuple[ModelFamily, ...] = (MUSICSLOTS, AUTOENCODER, VAE_FAMILY, SUPERVISED_CNN, MASK_INFERENCE, KELZ, CERBERUS, HIERARCHICAL, SCORE_INFORMED, JOINTIST)

FAMILIES: dict[str, ModelFamily] = {family.name: family for family in _FAMILIES}


def get_family(name: str) -> ModelFamily:
    if name not in FAMILIES:
        raise PartitaError(
            f"unknown model family {name!r}",
            f"set model.family to one of: {', '.join(sorted(FAMILIES)) or '(none registered)'}",
        )
    return FAMILIES[name]
