"""The model registry: every name resolves to its family, unknown names fail clearly, one family imports alone."""

import subprocess
import sys

import pytest

from components.errors import PartitaError
from components.models.base import ModelConfig, ModelFamily
from components.models.registry import FAMILY_NAMES, all_families, get_family


def test_every_registered_name_is_its_familys_own():
    families = all_families()
    assert tuple(families) == FAMILY_NAMES and len(FAMILY_NAMES) == 10
    for name, family in families.items():
        assert isinstance(family, ModelFamily) and family.name == name
        assert issubclass(family.config_class, ModelConfig) and family.config_class.model_fields["family"].default == name


def test_unknown_family_names_the_choices():
    with pytest.raises(PartitaError, match="unknown model family 'musicslot'") as err:
        get_family("musicslot")
    assert "musicslots" in err.value.fix


def test_a_process_that_uses_one_family_imports_no_other():
    """Each trial and worker is a fresh process: importing every family cost ~1.5 s in each."""
    code = (
        "import sys; from orchestration.config import load_config; from orchestration.experiment import CONFIGS; "
        "from components.models.registry import get_family; "
        "get_family(load_config([CONFIGS / 'musicslots' / 'smoke.yaml'], ['data.name=jsb-multi']).model.family); "
        "print(sorted(m for m in sys.modules if m.startswith('components.models.') and m != 'components.models.base'))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "components.models.musicslots" in loaded
    assert all(other not in loaded for other in ("cerberus", "jointist", "kelz", "hierarchical", "score_informed", "mask_inference"))
