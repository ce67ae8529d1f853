"""The hierarchical separation family: its full-mix examples, training, scoring per level, apply, config load."""

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from components.data.multitrack.reader import Piece
from components.data.multitrack.render import FULL_SCALE
from components.data.multitrack.rolls import NoteTable
from components.models.registry import get_family
from components.models.base import ViewSpec
from components.models.hierarchical import LEVELS, HierarchicalConfig, hierarchy_examples
from orchestration.reports import _effective, _paper_row, load_paper
from tests.fitting import fit

RATE, SECONDS = 8000, 0.5
SPEC = ViewSpec(sample_rate=RATE, classes=())
VIEW = {"segment": {"seconds": SECONDS, "hop_seconds": SECONDS}, "stft": {"n_fft": 128, "hop_length": 64}}
SMALL = {"hidden": 8, "layers": 1, "dropout": 0.0, "view": VIEW}
# Table 2.1's path and a stem under each level, plus one outside the group
LEAVES = ["clean guitars", "effected guitars", "acoustic pianos", "electric and synth basses"]  # leaf, sibling, cousin, outside


def tiny(**fields):
    family = get_family("hierarchical")
    config = HierarchicalConfig(**(SMALL | fields))
    torch.manual_seed(0)
    return family, config, family.build(config, SPEC)


def tones(samples: int) -> np.ndarray:
    t = np.arange(samples) / RATE
    return np.stack([0.2 * np.sin(2 * np.pi * f * t) for f in (440.0, 1250.0, 2300.0, 3300.0)]).astype(np.float32)


def batch(size: int = 2, levels: tuple[str, ...] = LEVELS) -> dict[str, torch.Tensor]:
    """What the family's examples hold: the mixture of all four tones and the submixes of the model's levels."""
    stems = torch.from_numpy(tones(int(RATE * SECONDS))).unsqueeze(0) * torch.linspace(0.5, 1.0, size).view(-1, 1, 1)
    submix = {"leaf": stems[:, 0], "family": stems[:, :2].sum(1), "group": stems[:, :3].sum(1)}
    return {"mixture": stems.sum(1), "sources": torch.stack([submix[level] for level in levels], dim=1)}


def piece(stems: np.ndarray) -> Piece:
    pcm = np.round(stems * FULL_SCALE).astype(np.int16)
    empty = np.zeros(0)
    return Piece(7, "", "", RATE, [""] * len(pcm), [], [], [], [], list(LEAVES), pcm, NoteTable(empty, empty, empty, empty, empty), [], np.zeros(0, np.uint8), b"")


def test_examples_mix_every_stem_and_target_the_submixes_of_the_path():
    segment = int(RATE * SECONDS)
    stems = tones(4 * segment)
    stems[0, 3 * segment :] = 0  # the leaf is silent in the last segment
    stems[1] = 0  # no sibling
    stems[2, segment : 3 * segment] = 0  # the cousin plays in the first and last segments only
    made = piece(stems)
    pcm = made.stems_pcm.astype(np.float64) / FULL_SCALE
    multi = hierarchy_examples(made, LEAVES, HierarchicalConfig(**SMALL))
    assert [int(e["start"]) for e in multi] == [0]  # the leaf with a cousin: the first segment only
    one = multi[0]
    np.testing.assert_allclose(one["mixture"], pcm[:, :segment].sum(0), atol=1e-6)  # every stem, the bass too
    np.testing.assert_allclose(one["sources"], np.stack([pcm[0], pcm[0] + pcm[1], pcm[:3].sum(0)])[:, :segment], atol=1e-6)
    # a single-level model needs the leaf alone: every segment where it plays; so does a multi-level one told so
    relaxed = hierarchy_examples(made, LEAVES, HierarchicalConfig(**SMALL, require_relative=False))
    assert [int(e["start"]) for e in relaxed] == [0, segment, 2 * segment]
    single = hierarchy_examples(made, LEAVES, HierarchicalConfig(**SMALL, levels="single", single_level="group"))
    assert [int(e["start"]) for e in single] == [0, segment, 2 * segment] and single[0]["sources"].shape == (1, segment)
    np.testing.assert_allclose(single[1]["sources"][0], pcm[:3, segment : 2 * segment].sum(0), atol=1e-6)


def test_a_segment_the_group_fills_alone_is_no_example():
    """Where nothing outside the group plays, the group is the mixture: nothing to separate, and SI-SDRi near -100 dB."""
    segment = int(RATE * SECONDS)
    stems = tones(3 * segment)
    stems[3, segment : 2 * segment] = 0  # the bass, the only stem outside the group, rests in the second segment
    for config in (HierarchicalConfig(**SMALL), HierarchicalConfig(**SMALL, levels="single")):
        assert [int(e["start"]) for e in hierarchy_examples(piece(stems), LEAVES, config)] == [0, 2 * segment]


def test_the_model_featurises_the_levels_it_is_given():
    _, config, model = tiny()
    assert config.nodes == ("clean guitars", "guitars", "strings and keys")
    one = batch()
    levels = model.levels(one)
    assert levels["target_psa"].shape == (2, 3, 65, int(RATE * SECONDS) // 64 + 1)
    assert torch.equal(levels["sources"], one["sources"]) and torch.equal(levels["mixture"], one["mixture"])
    # the group's submix holds more of the mixture than the leaf's
    assert levels["target_psa"][:, 2].sum() > levels["target_psa"][:, 0].sum() > 0


def test_the_constraint_makes_coarser_masks_contain_finer_ones_in_the_family():
    _, _, model = tiny(hierarchy_constraint="max")
    masks = model(model.levels(batch())["mix_mag"])
    assert (masks[:, 1] >= masks[:, 0]).all() and (masks[:, 2] >= masks[:, 1]).all()
    _, _, free = tiny(hierarchy_constraint="off")
    free_masks = free(free.levels(batch())["mix_mag"])
    assert ((free_masks[:, 1] < free_masks[:, 0]) | (free_masks[:, 2] < free_masks[:, 1])).any()  # untrained masks break the order


@pytest.mark.parametrize("levels", ["multi", "single"])
def test_the_loss_decreases_and_the_family_scores_every_level(levels):
    family, config, model = tiny(levels=levels, single_level="family")
    one = batch(levels=config.level_names)
    losses = fit(family, model, one, steps=30, lr=1e-2)
    assert losses[-1] < 0.7 * losses[0]
    model.eval()
    with torch.no_grad():
        metrics = family.evaluate(model, [one, one])
    names = ("leaf", "family", "group") if levels == "multi" else ("family",)
    for name in names:
        assert np.isfinite(metrics[f"si_sdri_{name}"])
    assert not any(f"si_sdri_{name}" in metrics for name in {"leaf", "family", "group"} - set(names))
    assert metrics["si_sdri"] == pytest.approx(np.mean([metrics[f"si_sdri_{name}"] for name in names]))
    assert metrics["si_sdri"] > 0  # it learnt the tones: better than the mixture itself
    assert family.figure(model, one) is not None


@pytest.mark.parametrize("conditioning", ["sss", "qbe"])
def test_the_loss_works_through_a_ddp_style_wrapper(conditioning):
    """With several workers the trainer hands `loss` the DDP wrapper, which forwards calls but has no other methods."""

    class Wrapper(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, *args):
            return self.module(*args)

    family, _, model = tiny(conditioning=conditioning, query={"hidden": 8, "layers": 1, "embedding": 4})
    one = batch() | ({"query": batch()["sources"][:, 0].flip(0)} if conditioning == "qbe" else {})  # the leaf of another example
    assert family.loss(Wrapper(model), one)[1]["loss"] == pytest.approx(family.loss(model, one)[1]["loss"])


def test_apply_writes_one_wav_per_node_of_the_recording_length():
    family, config, model = tiny()
    model.eval()
    audio = batch(1)["mixture"][0, :3001]  # a length that is no whole number of hops
    with torch.no_grad():
        files = family.apply(model, audio, SPEC)
    assert list(files) == ["clean_guitars.wav", "guitars.wav", "strings_and_keys.wav"]
    for wav in files.values():
        assert isinstance(wav, np.ndarray) and wav.shape == (3001,) and np.isfinite(wav).all()


def test_config_load_refuses_bad_constraints_weights_and_classes():
    with pytest.raises(ValidationError, match="hierarchy_constraint"):
        HierarchicalConfig(**SMALL, hierarchy_constraint="min")
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        HierarchicalConfig(**SMALL, level_weights={"leaf": -1.0})
    with pytest.raises(ValidationError, match="all 0, so nothing would be trained"):
        HierarchicalConfig(**SMALL, level_weights={"leaf": 0.0, "family": 0.0, "group": 0.0})
    with pytest.raises(ValidationError, match="mixes every stem of a piece.*leave model.view.classes empty"):
        HierarchicalConfig(**SMALL | {"view": VIEW | {"sources": 1, "classes": ["Piano"]}})


def test_qbe_trains_on_the_configs_view_like_sss():
    qbe = HierarchicalConfig(**SMALL, conditioning="qbe")
    assert get_family("hierarchical").view(qbe) == qbe.view == HierarchicalConfig(**SMALL).view


def script():
    from tests.entry_points import script_module

    return script_module("experiments/ablation_hierarchy.py")


@pytest.mark.parametrize("preset", ["smoke", "cpu", "paper"])
def test_the_ablation_loads_every_preset_and_each_cell_is_a_valid_config(preset):
    from orchestration.experiment import CONFIGS, load_experiment
    from orchestration.sweep import trial_overrides

    args = script().build_parser().parse_args(["--preset", preset, "--seeds", "0", "1"])
    config = load_experiment(args, "hierarchical", CONFIGS / "ablation_hierarchy.yaml")
    assert config.sweep.grid == {"model.conditioning": ["sss", "qbe"], "model.hierarchy_constraint": ["off", "max"]} and config.sweep.seeds == [0, 1]
    paper = load_paper(CONFIGS / "paper" / "ablation_hierarchy.yaml")
    for conditioning in config.sweep.grid["model.conditioning"]:
        for constraint in config.sweep.grid["model.hierarchy_constraint"]:
            values = {"model.conditioning": conditioning, "model.hierarchy_constraint": constraint}
            cell = config.with_values(trial_overrides(config, values | {"train.seed": 0}))
            assert (cell.model.conditioning, cell.model.hierarchy_constraint, cell.model.levels) == (conditioning, constraint, "multi")
            # the query net is sized as the preset's masker
            assert (cell.model.query.hidden, cell.model.query.layers) == (cell.model.hidden, 2 if preset == "paper" else cell.model.layers)
            # each cell finds its own row of Table 2.3
            label, _ = _paper_row(paper, "slakh-like", _effective(config.to_dict(), values))
            assert label == f"{conditioning.upper()} multi-level, {'constraint' if constraint == 'max' else 'no constraint'}"
    # a variant the paper does not name finds the row of the cell its overrides make, not the base config's
    tree = config.to_dict()
    tree["sweep"]["variants"] = {"my QBE": {"model.conditioning": "qbe", "model.hierarchy_constraint": "max"}}
    assert _paper_row(paper, "slakh-like", _effective(tree, {"variant": "my QBE"}))[0] == "QBE multi-level, constraint"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.hierarchy_constraint=min", "hierarchy_constraint.*fix: "),
        ("model.level_weights.group=-1", "model.level_weights.group = -1.*greater than or equal to 0; fix: "),
        ("model.target_leaf=guitars", "not a leaf of hierarchy-18.*fix: "),
    ],
)
def test_the_script_refuses_a_bad_config_in_one_line_before_anything_runs(override, message, capsys):
    from components.errors import PartitaError

    with pytest.raises(PartitaError, match=message):
        script().main(["--preset", "smoke", "--dry-run", "--set", override])
    assert "dry run" not in capsys.readouterr().out


def test_single_level_adds_one_network_per_level_and_no_duplicate_constraint_cell():
    from orchestration.experiment import CONFIGS, load_experiment, trial_count
    from orchestration.sweep import trial_overrides

    module = script()
    # the variants are Table 2.4's SSS rows, whatever conditioning the preset or --set gives
    args = module.build_parser().parse_args(["--preset", "smoke", "--seeds", "0", "--single-level", "--set", "model.conditioning=qbe"])
    config = load_experiment(args, "hierarchical", CONFIGS / "ablation_hierarchy.yaml", module.extra_overrides(args))
    assert trial_count(config) == 5  # multi x {off, max} + single x {leaf, family, group}
    cells = [config.with_values(trial_overrides(config, {"variant": name, "train.seed": 0})).model for name in config.sweep.variants]
    assert {m.conditioning for m in cells} == {"sss"}
    assert sorted((m.levels, m.level_names, m.hierarchy_constraint) for m in cells) == [
        ("multi", ("leaf", "family", "group"), "max"),
        ("multi", ("leaf", "family", "group"), "off"),
        ("single", ("family",), "off"),
        ("single", ("group",), "off"),
        ("single", ("leaf",), "off"),
    ]
    # every variant finds its own row (variant cells share the base config's values, so rows are keyed by variant)
    paper = load_paper(CONFIGS / "paper" / "ablation_hierarchy.yaml")
    labels = {name: _paper_row(paper, "slakh-like", _effective(config.to_dict(), {"variant": name}))[0] for name in config.sweep.variants}
    assert labels["multi-level, constraint max"] == "SSS multi-level, constraint (Table 2.3)"
    assert labels["multi-level, constraint off"] == "SSS multi-level, no constraint (Table 2.3)"
    assert all(labels[f"single-level {level}"].startswith("SSS single-level (Table 2.4") for level in LEVELS)


def test_data_reduction_trains_table_2_5s_five_cells():
    from orchestration.experiment import CONFIGS, load_experiment, trial_count
    from orchestration.sweep import trial_overrides

    module = script()
    args = module.build_parser().parse_args(["--preset", "smoke", "--seeds", "0", "--data-reduction", "--set", "model.conditioning=qbe"])
    config = load_experiment(args, "hierarchical", CONFIGS / "ablation_hierarchy.yaml", module.extra_overrides(args))
    assert trial_count(config) == 5
    cells = {name: config.with_values(trial_overrides(config, {"variant": name, "train.seed": 0})).model for name in config.sweep.variants}
    assert {name: (m.conditioning, m.data_reduction.fraction, m.data_reduction.what, m.hierarchy_constraint) for name, m in cells.items()} == {
        "0%": ("sss", 0.0, "leaf", "off"),
        "50% all": ("sss", 0.5, "all", "off"),
        "50% leaf": ("sss", 0.5, "leaf", "off"),
        "90% all": ("sss", 0.9, "all", "off"),
        "90% leaf": ("sss", 0.9, "leaf", "off"),
    }
    paper = load_paper(CONFIGS / "paper" / "ablation_hierarchy.yaml")
    for name in cells:
        assert _paper_row(paper, "slakh-like", _effective(config.to_dict(), {"variant": name}))[0] == f"SSS, {name} removed (Table 2.5)"


def test_data_reduction_removes_training_examples_or_only_their_leaf_targets():
    segment = int(RATE * SECONDS)
    made = piece(tones(8 * segment))
    every = hierarchy_examples(made, LEAVES, HierarchicalConfig(**SMALL), seed=0, training=True)
    assert len(every) == 8 and "leaf_known" not in every[0]
    half_all = HierarchicalConfig(**SMALL, data_reduction={"fraction": 0.5, "what": "all"})
    kept = hierarchy_examples(made, LEAVES, half_all, seed=0, training=True)
    assert 0 < len(kept) < 8 and {int(e["start"]) for e in kept} < {int(e["start"]) for e in every}
    assert len(hierarchy_examples(made, LEAVES, half_all, seed=0, training=False)) == 8  # validation and test pieces keep all
    half_leaf = HierarchicalConfig(**SMALL, data_reduction={"fraction": 0.5, "what": "leaf"})
    known = [float(e["leaf_known"]) for e in hierarchy_examples(made, LEAVES, half_leaf, seed=0, training=True)]
    assert len(known) == 8 and 0 < sum(known) < 8
    # the same examples are removed either way: the choice is fixed by seed, piece and segment
    assert [int(e["start"]) for e in kept] == [i * segment for i, k in enumerate(known) if k]
    with pytest.raises(ValidationError, match="needs a multi-level model"):
        HierarchicalConfig(**SMALL, levels="single", data_reduction={"fraction": 0.5})


def test_a_removed_leaf_target_gives_the_leaf_mask_no_gradient():
    _, _, model = tiny()
    levels = model.levels(batch())
    masks = torch.rand(2, 3, *levels["mix_mag"].shape[1:], requires_grad=True)
    model.level_loss(masks, levels, torch.tensor([0.0, 1.0])).backward()
    assert (masks.grad[0, 0] == 0).all() and (masks.grad[1, 0] != 0).any() and (masks.grad[0, 1:] != 0).any()


def test_stem_leaves_are_read_per_piece_and_a_set_of_another_hierarchy_is_refused(tmp_path):
    """The maker reads (example_id, stem_leaves) of every split: a minimal manifest and one file per split."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from components.data.manifest import FORMAT, MANIFEST
    from components.errors import PartitaError
    from components.models.hierarchical import stem_leaves_by_piece

    def built(leaves_by_split: dict) -> None:
        splits = {}
        for split, rows in leaves_by_split.items():
            (tmp_path / split).mkdir(exist_ok=True)
            pq.write_table(pa.table({"example_id": [i for i, _ in rows], "stem_leaves": [leaves for _, leaves in rows]}), tmp_path / split / "part.parquet")
            splits[split] = {"files": [{"path": f"{split}/part.parquet"}]}
        (tmp_path / MANIFEST).write_text(json.dumps({"format": FORMAT, "kind": "multitrack", "splits": splits}))

    built({"train": [(0, ["drums", "clean guitars"]), (1, ["drums"])], "valid": [(2, ["brass"])], "test": [(3, ["drums"])]})
    leaves, splits = stem_leaves_by_piece(tmp_path, "hierarchy-18")
    assert leaves == {0: ["drums", "clean guitars"], 1: ["drums"], 2: ["brass"], 3: ["drums"]} and splits == {0: "train", 1: "train", 2: "valid", 3: "test"}
    built({"train": [(0, ["bowed strings"])], "valid": [(2, ["brass"])], "test": [(3, ["drums"])]})  # the thesis' leaf name, not ours
    with pytest.raises(PartitaError, match="leaves \\['bowed strings'\\] that hierarchy-18 does not have.*fix: set model.hierarchy"):
        stem_leaves_by_piece(tmp_path, "hierarchy-18")
