"""Score-informed separation (DSIS) and source-informed transcription (DSIT): shapes, the conditioning's effect,
learning on a tiny batch, config refusals, the controllability test and apply from a MIDI score. No Ray."""

from __future__ import annotations

import numpy as np
import pretty_midi
import pytest
import torch

from components.data.multitrack.featurize import ViewFeaturizer
from components.data.multitrack.rolls import KEYS
from components.data.multitrack.view import StftConfig
from components.errors import PartitaError
from components.models.registry import get_family
from components.models.base import ViewSpec
from components.models.score_informed import (
    SCORE_INFORMED,
    ScoreInformedConfig,
    controllability,
    hamming_distance,
    masks_of,
    removal_steps,
    score_informed_view,
)
from orchestration.config import load_config
from orchestration.experiment import CONFIGS
from tests.fitting import fit

RATE, SAMPLES, SOURCES = 1000, 400, 4
SPEC = ViewSpec(RATE, ())
VARIANTS = ("vanilla", "roll_module", "residual")


def tiny_config(**fields) -> ScoreInformedConfig:
    view = score_informed_view().model_copy(update={"stft": StftConfig(n_fft=32, hop_length=8)})
    sizes = dict(hidden=8, layers=1, condition_hidden=6, condition_layers=1, embedding=10, dropout=0.0)
    return ScoreInformedConfig(view=view, **(sizes | fields))


def tiny_batch(config: ScoreInformedConfig, examples: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    """Sources that sound where their rolls say (a tone per active frame), mixed, featurised as the view asks."""
    g = torch.Generator().manual_seed(seed)
    frames = SAMPLES // config.view.stft.hop_length + 1
    active = torch.rand(examples, SOURCES, 1, frames, generator=g) > 0.5
    rolls = torch.zeros(examples, SOURCES, KEYS, frames, dtype=torch.uint8)
    keys = torch.randint(0, KEYS, (examples, SOURCES), generator=g)
    for b, s in np.ndindex(examples, SOURCES):
        rolls[b, s, keys[b, s]] = active[b, s, 0].to(torch.uint8) * 90
    envelope = torch.repeat_interleave(active.float().squeeze(2), config.view.stft.hop_length, dim=-1)[..., :SAMPLES]
    t = torch.arange(SAMPLES) / RATE
    tones = torch.sin(2 * torch.pi * (50.0 + 100.0 * torch.arange(SOURCES)).view(1, SOURCES, 1) * t)
    sources = 0.3 * envelope * tones + 0.01 * torch.randn(examples, SOURCES, SAMPLES, generator=g)
    batch = {"mixture": sources.sum(1), "sources": sources, "rolls": rolls}
    return ViewFeaturizer(config.view, RATE, keep_waveforms=True)(batch)


@pytest.mark.parametrize("task", ["separation", "transcription"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_gives_one_output_per_source_and_back_propagates(task, variant):
    torch.manual_seed(0)
    config = tiny_config(task=task, variant=variant)
    model = SCORE_INFORMED.build(config, SPEC)
    batch = tiny_batch(config)
    output = model(batch["mix_mag"], model.condition(batch))
    bins, frames = batch["mix_mag"].shape[1:]
    assert output.shape == (3, SOURCES, bins if task == "separation" else KEYS, frames)
    loss, logged = SCORE_INFORMED.loss(model, batch)
    loss.backward()
    assert logged["loss"] == pytest.approx(float(loss.detach()))
    # the condition path learns too: every parameter, the roll module's included, gets a gradient
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert all(p.grad.abs().sum() > 0 for name, p in model.named_parameters() if "condition" in name and "norm" not in name)


def test_masks_lie_in_the_unit_interval_though_the_leaky_output_does_not():
    output = torch.tensor([-0.5, 0.0, 0.4, 1.0, 3.0])
    assert torch.equal(masks_of(output), torch.tensor([0.0, 0.0, 0.4, 1.0, 1.0]))
    config = tiny_config()
    model = SCORE_INFORMED.build(config, SPEC).eval()
    batch = tiny_batch(config)
    with torch.no_grad():
        masks = masks_of(model(batch["mix_mag"], model.condition(batch)))
    assert masks.min() >= 0 and masks.max() <= 1


@pytest.mark.parametrize("variant", VARIANTS)
def test_removing_all_notes_of_a_source_changes_that_sources_mask(variant):
    torch.manual_seed(0)
    config = tiny_config(variant=variant)
    model = SCORE_INFORMED.build(config, SPEC).eval()
    batch = tiny_batch(config)
    rolls = model.condition(batch)
    without = rolls.clone()
    without[:, 0] = 0
    with torch.no_grad():
        changed = (model(batch["mix_mag"], rolls) - model(batch["mix_mag"], without))[:, 0].abs().amax()
    assert changed > 1e-4


@pytest.mark.parametrize("task", ["separation", "transcription"])
def test_loss_falls_on_a_tiny_batch_in_a_few_steps(task):
    torch.manual_seed(0)
    config = tiny_config(task=task, variant="residual")
    model = SCORE_INFORMED.build(config, SPEC)
    batch = tiny_batch(config)
    losses = fit(SCORE_INFORMED, model, batch, steps=40, lr=1e-2)
    assert losses[-1] < 0.6 * losses[0]


def test_evaluation_reports_the_tables_per_source_metrics():
    names = ("piano", "electric_guitar", "bass", "drums")
    for task, metric in (("separation", "si_sdri"), ("transcription", "note_f1")):
        config = tiny_config(task=task)
        model = SCORE_INFORMED.build(config, SPEC).eval()
        with torch.no_grad():
            metrics = SCORE_INFORMED.evaluate(model, [tiny_batch(config, seed=1), tiny_batch(config, seed=2)])
        assert {metric, *(f"{metric}_{name}" for name in names)} <= set(metrics)
        assert all(np.isfinite(value) for value in metrics.values())
    # DSIT also scores without a threshold: chance is the reference rolls' positive rate, per source and pooled
    batches = [tiny_batch(config, seed=1), tiny_batch(config, seed=2)]
    reference = torch.cat([model.binary_rolls(b["rolls"]) for b in batches])
    with torch.no_grad():
        metrics = SCORE_INFORMED.evaluate(model, batches)
    assert metrics["frame_ap_chance"] == pytest.approx(float(reference.float().mean()))
    for s, name in enumerate(names):
        assert metrics[f"frame_ap_chance_{name}"] == pytest.approx(float(reference[:, s].float().mean()))
        assert f"frame_ap_{name}" in metrics


def test_the_family_is_registered():
    assert get_family("score_informed") is SCORE_INFORMED


def write_config(tmp_path, **model) -> list:
    path = tmp_path / "bad.yaml"
    import yaml

    path.write_text(yaml.safe_dump({"model": {"family": "score_informed", **model}}))
    return [CONFIGS / "score_informed" / "smoke.yaml", path]


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [("variant", "film", "model.variant"), ("negative_slope", -0.1, "model.negative_slope"), ("task", "tagging", "model.task")],
)
def test_a_bad_value_is_refused_at_load_naming_the_key(tmp_path, field, value, named):
    with pytest.raises(PartitaError) as err:
        load_config(write_config(tmp_path, **{field: value}), base={"data": {"name": "slakh-like"}})
    assert named in str(err.value) and repr(value) in str(err.value)
    assert "allowed value" in str(err.value)


def test_a_view_without_the_tasks_target_is_refused_at_load(tmp_path):
    files = write_config(tmp_path, task="transcription")
    with pytest.raises(PartitaError, match="needs the view's 'magnitude' target"):
        load_config(files, ["model.view.targets=[phase_sensitive]"], base={"data": {"name": "slakh-like"}})


@pytest.mark.parametrize("preset", ["smoke", "cpu", "paper"])
def test_every_preset_loads_with_the_sweep_file(preset):
    config = load_config([CONFIGS / "score_informed" / f"{preset}.yaml", CONFIGS / "score_informed.yaml"], base={"data": {"name": "slakh-like"}})
    assert config.model.family == "score_informed" and config.sweep.grid["model.variant"] == list(VARIANTS)
    if preset == "paper":  # the chapter's schedule
        assert (config.train.steps, config.train.batch_size, config.train.lr) == (100_000, 64, 3e-4)
        assert (config.model.hidden, config.model.layers, config.model.embedding) == (600, 4, 512)


def test_removal_steps_are_nested_and_end_empty():
    rng = np.random.default_rng(0)
    rolls = (rng.random((SOURCES, KEYS, 50)) > 0.9).astype(np.float32)
    steps = removal_steps(rolls, 5, rng)
    assert steps.shape == (6, SOURCES, KEYS, 50)
    np.testing.assert_array_equal(steps[0], rolls)
    assert not steps[-1].any()
    assert all((steps[k + 1] <= steps[k]).all() for k in range(5))
    distance = hamming_distance(rolls[None], steps)  # [6, S]
    assert (np.diff(distance, axis=0) > 0).all()
    np.testing.assert_array_equal(distance[0], 0.0)
    np.testing.assert_array_equal(distance[-1], 1.0)  # removing every note: distance 1
    assert hamming_distance(np.zeros((KEYS, 5)), np.zeros((KEYS, 5))) == 0.0  # an empty reference: 0, by definition


def test_controllability_on_a_tiny_model_gives_points_per_step_and_a_figure():
    torch.manual_seed(0)
    config = tiny_config(variant="vanilla")
    model = SCORE_INFORMED.build(config, SPEC).eval()
    batches = [tiny_batch(config, examples=2, seed=3)]
    with torch.no_grad():
        result = controllability(model, batches, subsets=5, seed=0)
    assert len(result.source) == 2 * 6 * SOURCES  # examples x steps x sources (no silent source here)
    first, last = result.step == 0, result.step == 5
    np.testing.assert_array_equal(result.hamming[first], 0.0)
    np.testing.assert_array_equal(result.delta_si_sdri[first], 0.0)
    np.testing.assert_array_equal(result.hamming[last], 1.0)
    rows = result.rows()
    assert {row["source"] for row in rows} == set(config.view.classes)
    figure = result.figure()
    assert len(figure.axes) == SOURCES and all(len(ax.collections) == 1 for ax in figure.axes)


def noise_batch(config: ScoreInformedConfig, examples: int, seed: int) -> dict[str, torch.Tensor]:
    """Sources of white noise switched on and off in blocks of 5 frames: the mixture alone cannot tell them apart,
    only their rolls (one key each, where they sound) can."""
    g = torch.Generator().manual_seed(seed)
    hop = config.view.stft.hop_length
    frames = SAMPLES // hop + 1
    active = torch.repeat_interleave(torch.rand(examples, SOURCES, frames // 5 + 1, generator=g) > 0.5, 5, dim=-1)[..., :frames]
    rolls = torch.zeros(examples, SOURCES, KEYS, frames, dtype=torch.uint8)
    rolls[:, :, 40] = active.to(torch.uint8) * 90
    envelope = torch.repeat_interleave(active.float(), hop, dim=-1)[..., :SAMPLES]
    sources = envelope * torch.randn(examples, SOURCES, SAMPLES, generator=g) + 1e-3 * torch.randn(examples, SOURCES, SAMPLES, generator=g)
    return ViewFeaturizer(config.view, RATE, keep_waveforms=True)({"mixture": sources.sum(1), "sources": sources, "rolls": rolls})


def test_a_model_that_needs_the_score_loses_quality_as_notes_are_removed():
    torch.manual_seed(0)
    config = tiny_config(variant="vanilla")
    model = SCORE_INFORMED.build(config, SPEC)
    fit(SCORE_INFORMED, model, noise_batch(config, 6, seed=0), steps=60, lr=1e-2)
    with torch.no_grad():
        result = controllability(model.eval(), [noise_batch(config, 4, seed=1)], subsets=5, seed=0)
    by_step = [result.delta_si_sdri[result.step == k].mean() for k in range(6)]
    distance = [result.hamming[result.step == k].mean() for k in range(6)]
    assert all(later > earlier for earlier, later in zip(distance, distance[1:]))
    assert all(later < earlier + 0.5 for earlier, later in zip(by_step, by_step[1:]))  # falls with the distance
    assert by_step[-1] < -3.0  # without its score the model cannot tell the sources apart


def test_controllability_refuses_a_transcription_model():
    model = SCORE_INFORMED.build(tiny_config(task="transcription"), SPEC)
    with pytest.raises(PartitaError, match="DSIS"):
        controllability(model, [])


def score(tmp_path, programs: list[tuple[int, bool]], seconds: float = 0.3):
    midi = pretty_midi.PrettyMIDI()
    for program, drum in programs:
        instrument = pretty_midi.Instrument(program, is_drum=drum, name=f"track {program}")
        instrument.notes = [pretty_midi.Note(100, 40 + i, 0.1 * i, 0.1 * i + 0.08) for i in range(round(seconds / 0.1))]
        midi.instruments.append(instrument)
    path = tmp_path / "score.mid"
    midi.write(str(path))
    return path


def test_apply_separates_one_wav_per_source_guided_by_a_midi_score(tmp_path):
    path = score(tmp_path, [(0, False), (33, False), (73, False)], seconds=0.6)  # piano, bass, flute (no source)
    model = SCORE_INFORMED.build(tiny_config(score=str(path)), SPEC).eval()
    audio = torch.randn(SAMPLES)
    with torch.no_grad():
        out = SCORE_INFORMED.apply(model, audio, SPEC)
    assert sorted(out) == ["bass.wav", "drums.wav", "electric_guitar.wav", "piano.wav", "score.json"]
    assert all(out[name].shape == (SAMPLES,) for name in out if name.endswith(".wav"))
    report = out["score.json"]
    assert [track["source"] for track in report["tracks"]] == ["Piano", "Bass", None]
    # the score (notes at 0, 0.1 .. 0.5 s) outlasts the audio (0.4 s, its last frame): the note at 0.5 s of each
    # mapped track starts after the audio's end, so it is dropped, and said so
    assert report["dropped_notes"] == 2 and report["audio_seconds"] == pytest.approx(0.4)


def test_score_rolls_put_an_onset_at_t_in_frame_round_t_times_rate_and_drums_by_their_channel():
    from components.models.score_informed import score_rolls

    midi = pretty_midi.PrettyMIDI()
    for program, drum, pitch in ((26, False, 64), (0, True, 38)):  # electric guitar; program 0 on the drum channel
        instrument = pretty_midi.Instrument(program, is_drum=drum)
        instrument.notes = [pretty_midi.Note(90, pitch, 0.37, 0.6)]
        midi.instruments.append(instrument)
    fps = 62.5
    rolls, report = score_rolls(midi, tuple(score_informed_view().classes), 100, fps)
    assert [track["source"] for track in report["tracks"]] == ["Electric Guitar", "Drums"]
    onset = round(0.37 * fps)
    for source, pitch in ((1, 64), (3, 38)):
        active = np.flatnonzero(rolls[source, pitch - 21])
        assert active[0] == onset and active[-1] == round(0.6 * fps) - 1
    assert not rolls[[0, 2]].any()


def test_apply_refuses_a_score_with_no_track_of_the_models_sources(tmp_path):
    path = score(tmp_path, [(73, False), (40, False)])  # flute, violin
    model = SCORE_INFORMED.build(tiny_config(score=str(path)), SPEC).eval()
    with pytest.raises(PartitaError, match="no track of the score maps to a source"):
        SCORE_INFORMED.apply(model, torch.randn(SAMPLES), SPEC)


def test_apply_without_a_score_says_how_to_give_one():
    model = SCORE_INFORMED.build(tiny_config(), SPEC).eval()
    with pytest.raises(PartitaError, match="model.score"):
        SCORE_INFORMED.apply(model, torch.randn(SAMPLES), SPEC)


def script():
    from tests.entry_points import script_module

    return script_module("experiments/score_informed.py")


@pytest.mark.parametrize("task", ["separation", "transcription"])
def test_the_scripts_config_loads_through_load_config_with_its_task(task):
    from orchestration.experiment import load_experiment

    module = script()
    args = module.build_parser().parse_args(["--preset", "smoke", "--task", task, "--seeds", "0"])
    config = load_experiment(args, module.SCRIPT, module.SWEEP_FILE, [f"model.task={task}"])
    assert (config.model.family, config.model.task, config.sweep.seeds) == ("score_informed", task, [0])
    assert config.sweep.grid == {"model.variant": list(VARIANTS)}


def test_the_script_refuses_controllability_of_a_transcription_sweep_before_any_work():
    with pytest.raises(PartitaError, match="controllability"):
        script().main(["--preset", "smoke", "--task", "transcription", "--controllability"])
