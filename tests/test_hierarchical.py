"""Hierarchical separation components: the hierarchy constraint, SSS and QBE maskers, their config."""

import pytest
import torch
from pydantic import ValidationError

from components.errors import PartitaError
from components.models.hierarchical import HierarchicalConfig, HierarchicalMasker, hierarchy_constraint
from orchestration.config import parse_override

BINS, FRAMES = 9, 6
SMALL = {"hidden": 4, "layers": 2, "query": {"hidden": 4, "layers": 2, "embedding": 3}}


def naive_constraint(masks: torch.Tensor) -> list[torch.Tensor]:
    """M_1 = M'_1; M_l = max(M'_l, M_{l-1}): the thesis' definition, level by level."""
    out = [masks[:, 0]]
    for level in range(1, masks.shape[1]):
        out.append(torch.maximum(masks[:, level], out[-1]))
    return out


def test_max_constraint_is_the_cumulative_max_from_the_leaf_up():
    raw = torch.rand(4, 3, BINS, FRAMES, generator=torch.Generator().manual_seed(0))
    constrained = hierarchy_constraint(raw, "max")
    assert (constrained[:, 2] >= constrained[:, 1]).all() and (constrained[:, 1] >= constrained[:, 0]).all()
    assert torch.equal(constrained, torch.stack(naive_constraint(raw), dim=1))
    assert torch.equal(constrained[:, 0], raw[:, 0])  # the leaf is never changed
    assert (constrained[:, 1:] != raw[:, 1:]).any()  # random masks do violate the order: the constraint acts
    assert hierarchy_constraint(raw, "off") is raw


def test_multi_level_sss_masks_are_ordered_under_the_constraint_and_train():
    torch.manual_seed(0)
    model = HierarchicalMasker(HierarchicalConfig(hierarchy_constraint="max", **SMALL), BINS)
    masks = model(torch.rand(2, BINS, FRAMES) + 0.1)
    assert masks.shape == (2, 3, BINS, FRAMES) and ((masks >= 0) & (masks <= 1)).all()
    assert (masks[:, 2] >= masks[:, 1]).all() and (masks[:, 1] >= masks[:, 0]).all()
    masks.sum().backward()  # the cumulative max passes gradient to the unconstrained masks
    assert model.head.linear.weight.grad.abs().sum() > 0


def test_single_level_gives_one_mask():
    model = HierarchicalMasker(HierarchicalConfig(levels="single", single_level="family", **SMALL), BINS)
    assert model(torch.rand(2, BINS, FRAMES) + 0.1).shape == (2, 1, BINS, FRAMES)


def test_qbe_anchor_averages_the_loud_query_bins_and_conditions_the_masks():
    torch.manual_seed(0)
    model = HierarchicalMasker(HierarchicalConfig(conditioning="qbe", **SMALL), BINS).eval()
    query = torch.rand(1, BINS, FRAMES) + 0.5
    anchor = model.query(query)
    # only the loud bins count: zeroing one of them changes the anchor...
    louder = query.clone()
    louder[0, 0, 0] = 0.0
    assert not torch.allclose(model.query(louder), anchor)
    # ...while a bin 80 dB under the maximum is left out of the mean (its embedding still shifts through the BLSTM,
    # so compare against the mean over the loud bins computed by hand)
    quiet = query.clone()
    quiet[0, 0, 0] = query.max() * 1e-4
    stack = model.query.stack(torch.log(quiet + 1e-6).transpose(1, 2))
    per_bin = model.query.linear(stack).view(1, FRAMES, BINS, -1)
    loud = torch.ones(FRAMES, BINS, dtype=torch.bool)
    loud[0, 0] = False
    torch.testing.assert_close(model.query(quiet)[0], per_bin[0][loud].mean(0))
    mixture = torch.rand(1, BINS, FRAMES) + 0.1
    assert not torch.allclose(model(mixture, query), model(mixture, query * torch.rand_like(query)))
    with pytest.raises(PartitaError, match="without a query.*fix: pass a query"):
        model(mixture)


def test_config_rejects_an_unknown_constraint_and_a_leaf_outside_the_hierarchy():
    with pytest.raises(ValidationError, match="hierarchy_constraint"):
        HierarchicalConfig(hierarchy_constraint="min")
    with pytest.raises(ValidationError, match="hierarchy_constraint"):
        HierarchicalConfig(hierarchy_constraint=True)
    # a bare `off` in YAML or --set is read as false: it means the constraint is off
    assert HierarchicalConfig(hierarchy_constraint=parse_override("x=off")[1]).hierarchy_constraint == "off"
    with pytest.raises(ValidationError, match="'guitars' is not a leaf of hierarchy-18; use one of: .*clean guitars"):
        HierarchicalConfig(target_leaf="guitars")
