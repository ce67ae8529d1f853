"""The bad-input table: each case gets a one-line error naming the problem and the fix, exit 2, and no output.

The entry points run in-process as a shell runs them (tests/entry_points.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from components.data.chords.reader import ChordData
from components.errors import PartitaError
from tests.entry_points import run_entry_point

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ["--preset", "smoke", "--dataset", "jazznet-single", "--seeds", "0"]
JSB_SMOKE = ["--preset", "smoke", "--dataset", "jsb-single", "--seeds", "0"]
GOOD_JSB = {split: [[[60, 64, 67], [62, 65, 69, 72]]] for split in ("train", "valid", "test")}

# name: (command, the message it must print, the command its printed fix names).
# The fix runs with --dry-run (config and inputs checked, nothing trained or built), or with
# the environment the fix names ({fonts}: a folder holding the font under the name asked for).
CASES = {
    "unknown data set": (["partita", "data", "build", "jsb-mutli"], "unknown data set 'jsb-mutli'", ["partita", "data", "build", "jazznet-single", "--dry-run"]),
    "unknown data set option": (["experiments/ablation_masks.py", "--dataset", "jazznet-singel"], "pass --dataset with one of", ["experiments/ablation_masks.py", *SMOKE, "--dry-run"]),
    "unknown model family": (
        ["partita", "train", "--family", "musicslots", "--preset", "smoke", "--dataset", "jazznet-single", "--set", "model.family=musicslot"],
        "unknown model family 'musicslot'",
        ["partita", "train", "--family", "musicslots", "--preset", "smoke", "--dataset", "jazznet-single", "--set", "model.family=musicslots", "--dry-run"],
    ),
    "unknown mask norm": (["experiments/ablation_masks.py", *SMOKE, "--set", "model.mask_norm=softmx"], "model.mask_norm = 'softmx'", ["experiments/ablation_masks.py", *SMOKE, "--set", "model.mask_norm=softmax", "--dry-run"]),
    "negative beta": (["experiments/ablation_beta.py", *SMOKE, "--set", "sweep.grid.model.beta=[0.5, -1]"], "beta must be > 0", ["experiments/ablation_beta.py", *SMOKE, "--set", "sweep.grid.model.beta=[0.5, 1]", "--dry-run"]),
    "malformed YAML": (["experiments/ablation_masks.py", *SMOKE, "--config", "{bad_yaml}"], "bad.yaml' is not valid YAML at line 3", ["experiments/ablation_masks.py", *SMOKE, "--config", "{good_yaml}", "--dry-run"]),
    "override of a missing key": (["experiments/ablation_masks.py", *SMOKE, "--set", "train.learning_rate=1e-3"], "config key 'train.learning_rate' does not exist", ["experiments/ablation_masks.py", *SMOKE, "--set", "train.lr=1e-3", "--dry-run"]),
    "missing soundfont": (
        ["partita", "data", "build", "jazznet-single", "--set", "chords.synth.soundfont=NoSuchFont"],
        "soundfont 'NoSuchFont' not found",
        ["PARTITA_SOUNDFONT_DIRS={fonts}", "partita", "data", "build", "jazznet-single", "--set", "chords.synth.soundfont=NoSuchFont", "--dry-run"],
    ),
    "JSB file of the wrong shape": (["partita", "data", "build", "jsb-single", "--jsb-json", "{bad_jsb}"], "has the wrong shape", ["partita", "data", "build", "jsb-single", "--jsb-json", "{good_jsb}", "--dry-run"]),
    "JSB file that cannot be downloaded": (["experiments/ablation_masks.py", *JSB_SMOKE], "could not download the JSB chorales", ["experiments/ablation_masks.py", *JSB_SMOKE, "--jsb-json", "{good_jsb}", "--dry-run"]),
    "probe of a run that does not exist": (["partita", "probe", "no-such-run"], "MLflow run 'no-such-run' does not exist", ["partita", "probe", "{trained_run}"]),
}


def _run(args: list[str], tmp_path: Path, home: Path, capsys) -> SimpleNamespace:
    files = {"bad_yaml": "bad.yaml", "good_yaml": "good.yaml", "bad_jsb": "bad.json", "good_jsb": "good.json", "fonts": "fonts"}
    args = [arg.replace("{trained_run}", _a_training_run(home)) if arg == "{trained_run}" else arg for arg in args]
    for key, name in files.items():
        args = [arg.replace("{" + key + "}", str(tmp_path / name)) for arg in args]
    env = {"PARTITA_HOME": str(home), "PARTITA_JSB_URL": "http://127.0.0.1:9/jsb-chorales-quarter.json"}
    while "=" in args[0]:  # leading NAME=value: the environment a fix asks for
        key, value = args.pop(0).split("=", 1)
        env[key] = value
    return run_entry_point(args, env, capsys)


def _a_training_run(home: Path) -> str:
    """A finished run in the home's MLflow store (what `pass the id of a training run` points at)."""
    import mlflow

    from orchestration.probe import CHECKPOINT_TAG

    tracking = mlflow.MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    run = tracking.create_run(tracking.create_experiment("fix-check"), tags={"partita.family": "supervised_cnn", CHECKPOINT_TAG: "file:///nowhere"})
    tracking.set_terminated(run.info.run_id)
    return run.info.run_id


@pytest.fixture
def input_files(tmp_path):
    (tmp_path / "bad.yaml").write_text("model:\n  family: [musicslots\n")
    (tmp_path / "good.yaml").write_text("model:\n  family: musicslots\n")
    (tmp_path / "bad.json").write_text(json.dumps({"train": [[60, 64]], "valid": []}))
    (tmp_path / "good.json").write_text(json.dumps(GOOD_JSB))
    (tmp_path / "fonts").mkdir()
    (tmp_path / "fonts" / "NoSuchFont.sf2").symlink_to("/usr/share/sounds/sf2/FluidR3_GM.sf2")
    return tmp_path


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_fails_with_one_line_writes_nothing_and_its_fix_gets_past_it(case, input_files, capsys):
    args, message, fix = CASES[case]
    home = input_files / "home"
    result = _run(list(args), input_files, home, capsys)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip() and "mlflow.store.db.utils" not in line]
    assert len(lines) == 1, result.stderr
    assert message in lines[0] and "fix:" in lines[0]
    leftovers = [p for p in home.rglob("*") if p.is_file() and p.name != "mlflow.db"] if home.exists() else []
    assert not leftovers, leftovers

    fixed = _run(list(fix), input_files, input_files / "home-fixed", capsys)
    assert message not in fixed.stderr, f"the printed fix did not get past the error: {fixed.stderr[-2000:]}"
    if "{trained_run}" not in fix:  # probing a run without a checkpoint fails later, for its own reason
        assert fixed.returncode == 0, fixed.stderr[-2000:]
        assert "dry run: nothing" in fixed.stdout, fixed.stdout


def test_the_offline_jsb_fallback_is_an_option_of_every_entry_point(capsys):
    """The download error names --jsb-source music21: every entry point that can hit it accepts it."""
    from orchestration.cli import main
    from orchestration.experiment import experiment_parser, load_experiment

    args = experiment_parser("", "jsb-multi").parse_args(["--preset", "smoke", "--jsb-source", "music21"])
    config = load_experiment(args, "musicslots", ROOT / "experiments" / "configs" / "ablation_masks.yaml")
    assert config.data.chords.jsb_source == "music21"
    for command in (["data", "build", "jsb-multi"], ["train", "--family", "musicslots"]):
        with pytest.raises(SystemExit):
            main([*command, "--jsb-source", "no-such-source"])
        usage = capsys.readouterr().err
        assert "argument --jsb-source: invalid choice: 'no-such-source'" in usage, usage  # known option, bad value


def test_an_empty_split_is_refused_by_name(small_chords, tmp_path):
    import shutil

    copy = tmp_path / small_chords.name
    shutil.copytree(small_chords, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["splits"]["valid"] = {"rows": 0, "files": []}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PartitaError, match=r"split 'valid' of jazznet-multi-[0-9a-f]{8} is empty"):
        ChordData(copy).split("valid")


def test_a_dataset_folder_without_manifest_is_not_mistaken_for_a_build(tmp_path):
    (tmp_path / "jsb-multi" / "train").mkdir(parents=True)
    with pytest.raises(PartitaError, match="not a complete data set"):
        ChordData(tmp_path / "jsb-multi")


def test_a_probe_of_a_family_without_a_representation_names_the_families_that_have_one(tmp_path):
    import mlflow

    from orchestration.probe import CHECKPOINT_TAG, probe_run

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking = mlflow.MlflowClient(uri)
    experiment = tracking.create_experiment("probe-refusal")
    run = tracking.create_run(experiment, tags={"partita.family": "supervised_cnn", CHECKPOINT_TAG: "file:///nowhere"})
    tracking.set_terminated(run.info.run_id)
    with pytest.raises(PartitaError, match="supervised_cnn model, which has no representation to probe") as error:
        probe_run(run.info.run_id, uri=uri)
    assert "musicslots, autoencoder, vae" in str(error.value)


SCRIPTS = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "experiments").glob("*.py") if p.stem != "benchmark_refresh")


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_experiment_script_stops_at_its_dry_run_plan(script, input_files, capsys):
    """The fixes above name --dry-run: on every script it checks, prints the plan, and trains and writes nothing."""
    home = input_files / "home"
    args = [script, "--preset", "smoke", "--jsb-json", str(input_files / "good.json"), "--dry-run"]
    result = run_entry_point(args, {"PARTITA_HOME": str(home)}, capsys)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "dry run: nothing" in result.stdout, result.stdout
    assert not (home / "runs").exists() and not (home / "mlflow.db").exists()
