import numpy as np
import pytest
import torch

from components.training.autoclip import AutoClip


def test_autoclip_clips_to_the_percentile_of_past_norms():
    parameter = torch.nn.Parameter(torch.zeros(2))
    clip = AutoClip(percentile=10)
    norms = [5.0, 1.0, 3.0, 10.0, 2.0]
    for step, norm in enumerate(norms):
        parameter.grad = torch.tensor([0.6, 0.8]) * norm  # a gradient of exactly this norm
        seen, threshold = clip([parameter])
        assert seen == pytest.approx(norm)
        assert threshold == pytest.approx(np.percentile(norms[: step + 1], 10))
        assert float(parameter.grad.norm()) == pytest.approx(min(norm, threshold), rel=1e-5)
    assert float(parameter.grad.norm()) < norms[-1]  # later steps are clipped: 2.0 against a threshold near 1.4
    resumed = AutoClip()
    resumed.load_state_dict(clip.state_dict())
    assert resumed.history == pytest.approx(norms) and resumed.percentile == 10


def test_autoclip_rejects_a_percentile_outside_0_100():
    with pytest.raises(ValueError, match="percentile"):
        AutoClip(percentile=0)
