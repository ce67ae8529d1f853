"""Faults with real processes: a killed training worker, failing trials, a killed data build."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from components.data.manifest import read_manifest
from orchestration.config import load_config
from orchestration.experiment import CONFIGS
from orchestration.tracking import PARENT_TAG, client, ensure_experiment
from tests.conftest import SMALL_CHORDS_LIMIT



def worker_pids() -> set[int]:
    """Ray Train worker processes (their title replaces the command line)."""
    pids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if Path(f"/proc/{entry}/cmdline").read_bytes().startswith(b"ray::RayTrainWorker"):
                    pids.add(int(entry))
            except OSError:
                continue
    return pids


@pytest.mark.slow
def test_a_killed_training_worker_resumes_from_its_checkpoint(ray_session, small_chords, tmp_path):
    from orchestration.trainer import train

    config = load_config(
        [CONFIGS / "musicslots" / "smoke.yaml"],
        ["train.steps=40", "train.eval_every=10", "train.log_every=5", "train.max_failures=2", f"train.storage_path={tmp_path}"],
        base={"data": {"name": "jazznet-multi", "root": str(small_chords.parent), "chords": {"limit_chords": SMALL_CHORDS_LIMIT}}},
    )
    experiment_id = ensure_experiment("reliability")
    before = worker_pids()
    outcome: dict = {}
    runner = threading.Thread(target=lambda: outcome.update(train(config, run_key="kill-a-worker", run_name="kill-a-worker", experiment_id=experiment_id)))
    runner.start()
    # Kill once the controller has registered a checkpoint (it writes its snapshot then); a
    # checkpoint the worker reported but the controller had not yet polled would be lost.
    snapshot, deadline = tmp_path / "kill-a-worker" / "checkpoint_manager_snapshot.json", time.time() + 300
    while not (snapshot.is_file() and "checkpoint_" in snapshot.read_text()) and time.time() < deadline:
        time.sleep(0.2)
    victims = worker_pids() - before
    assert len(victims) == 1, "expected one training worker"
    victim = victims.pop()
    os.kill(victim, signal.SIGKILL)
    replacements: set[int] = set()
    while runner.is_alive():
        replacements |= worker_pids() - before - {victim}
        runner.join(timeout=0.5)
    assert replacements, "Ray Train did not start a new worker"
    assert outcome["status"] == "finished" and outcome["step"] == 40

    history = sorted(client().get_metric_history(outcome["run_id"], "train/loss"), key=lambda m: (m.timestamp, m.step))
    steps = [m.step for m in history]
    assert steps[-1] == 40
    # the curve continues from the checkpoint: no point after the kill goes back below the first checkpoint
    drops = [later for earlier, later in zip(steps, steps[1:]) if later < earlier]
    assert all(step > 10 for step in drops), steps
    assert max(steps) == 40 and 5 in steps


@pytest.mark.slow
def test_failing_trials_leave_the_sweep_going_and_are_marked_failed(ray_session, capsys):
    from tests.entry_points import script_module

    script = script_module("experiments/ablation_masks.py")
    variants = '{"ok": {}, "crash": {"train.batch_size": 100000}, "nan": {"train.lr": 1.0e9, "train.grad_clip": null}}'
    code = script.main(
        ["--preset", "smoke", "--dataset", "jazznet-single", "--seeds", "0", "--set", "data.chords.limit_chords=16",
         "--set", "sweep.grid.model.mask_norm=[none]", "--set", f"sweep.variants={variants}", "--name", "faulty-sweep"]
    )
    printed = capsys.readouterr().out
    assert code == 0  # one trial finished, so the sweep reports
    assert "variant=ok" in printed and "| 1/1 |" in printed and "| 0/1 |" in printed
    assert "2 trial(s) failed" in printed

    mlflow = client()
    experiment = mlflow.get_experiment_by_name("musicslots-ablation-masks")
    parent = next(r for r in mlflow.search_runs([experiment.experiment_id]) if r.info.run_name == "faulty-sweep")
    children = {
        r.data.tags["partita.run_key"].split("variant=")[1]: r
        for r in mlflow.search_runs([experiment.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'")
    }
    assert children["ok"].info.status == "FINISHED"
    assert children["crash"].info.status == "FAILED" and "fewer than one batch" in children["crash"].data.tags["partita.error"]
    assert children["nan"].info.status == "FAILED" and "training loss became" in children["nan"].data.tags["partita.error"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_probed_sweep_whose_trials_hold_every_cpu_finishes(ray_session, small_chords, capsys):
    """Two trials on the session's 2 CPUs, each probed after training: a probe that asked Ray for a CPU of its
    own waited forever, every CPU being held by a trial (it hung Table 2 on the 2-core machine)."""
    from tests.entry_points import script_module

    script = script_module("experiments/ablation_beta.py")
    code = script.main(
        ["--preset", "smoke", "--dataset", "jazznet-multi", "--seeds", "0", "--set", f"data.root={small_chords.parent}",
         "--set", f"data.chords.limit_chords={SMALL_CHORDS_LIMIT}", "--set", "sweep.grid.model.beta=[0.5, 2.0]", "--name", "probed-sweep"]
    )
    printed = capsys.readouterr().out
    assert code == 0 and printed.count("| 1/1 |") == 2  # both cells finished, probe included
    parent = next(r for r in client().search_runs([ensure_experiment("vae-ablation-beta")]) if r.info.run_name == "probed-sweep")
    probes = client().search_runs([parent.info.experiment_id], filter_string="tags.`partita.kind` = 'probe'")
    assert len(probes) == 2 and all(0 <= p.data.metrics["probe/test/chord_accuracy"] <= 1 for p in probes)


@pytest.mark.slow
def test_a_killed_data_build_leaves_nothing_complete_and_rebuilds_identically(ray_session, small_chords, tmp_path):
    import ray

    command = [sys.executable, "-m", "orchestration.cli", "data", "build", "jazznet-multi", "--set", f"chords.limit_chords={SMALL_CHORDS_LIMIT}", "--out", str(tmp_path)]
    # both builds join the session's Ray instance, as builds submitted to a cluster do (and two
    # Ray start-ups fewer); the killed driver's tasks die with it
    env = os.environ | {"PARTITA_HOME": str(tmp_path / "home"), "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    folder = small_chords.name  # the same recipe: jazznet-multi-<recipe hash>
    build = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not list(tmp_path.glob(f".{folder}.building-*/*/*.parquet")) and time.time() < deadline and build.poll() is None:
        time.sleep(0.1)
    assert build.poll() is None, "the build finished before it could be killed"
    os.killpg(build.pid, signal.SIGKILL)
    build.wait()
    assert not (tmp_path / folder).exists()  # nothing that looks complete

    rebuilt = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert rebuilt.returncode == 0, rebuilt.stderr[-2000:]
    assert read_manifest(tmp_path / folder)["content_hash"] == read_manifest(small_chords)["content_hash"]
    assert not list(tmp_path.glob(f".{folder}.building-*"))  # the killed build's staging folder is gone
