"""partita on a two-node Ray cluster (ray.cluster_utils.Cluster on loopback, 1 CPU per node).

DDP across nodes equals DDP on one node; a sweep's trials and a data build spread over
both nodes; a node lost mid-run is survived; storage one node cannot see and too few
CPUs are refused before training. Drivers are `partita` / experiment-script
subprocesses joined to the cluster through RAY_ADDRESS, as on a real cluster. The
module needs no session Ray (only the local-instance check uses it): its chord set is built on the cluster.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from components.data.catalog import DataConfig
from components.data.manifest import read_manifest
from orchestration.config import load_config
from orchestration.data_build import dataset_dir
from orchestration.experiment import CONFIGS
from orchestration.tracking import PARENT_TAG, RUN_KEY_TAG, client, ensure_experiment
from tests.conftest import SMALL_CHORDS_LIMIT, processes_mentioning
from tests.local_cluster import LocalCluster

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
STEPS = 20


@pytest.fixture(scope="module")
def cluster():
    nodes = LocalCluster("node-b")
    yield nodes
    nodes.close(processes_mentioning)


def build_chords(cluster: LocalCluster, out: Path, *options: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "orchestration.cli", "data", "build", "jazznet-multi", "--set", f"chords.limit_chords={SMALL_CHORDS_LIMIT}", "--out", str(out), *options]
    done = run(command, cluster.env())
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def built_folder(root: Path) -> Path:
    """Where `build_chords` puts the set under `root` (its name and recipe hash)."""
    return dataset_dir(DataConfig(name="jazznet-multi", root=str(root), chords={"limit_chords": SMALL_CHORDS_LIMIT}))


@pytest.fixture(scope="module")
def chords(cluster, tmp_path_factory) -> tuple[Path, str]:
    """A small jazznet-multi built on both nodes (one actor per node), and what the build printed."""
    out = tmp_path_factory.mktemp("cluster-data")
    return built_folder(out), build_chords(cluster, out).stdout


def data_settings(data: Path) -> list[str]:
    return [f"data.root={data.parent}", f"data.chords.limit_chords={SMALL_CHORDS_LIMIT}"]


def train_command(data: Path, name: str, settings: list[str]) -> list[str]:
    """`partita train` of a smoke MusicSlots run on the chord set in `data`."""
    settings = data_settings(data) + settings
    return [sys.executable, "-m", "orchestration.cli", "train", "--family", "musicslots", "--preset", "smoke",
            "--dataset", "jazznet-multi", "--name", name, *(f"--set={s}" for s in settings)]


def run(command: list[str], env: dict, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def training_run(name: str, experiment: str = "musicslots-runs"):
    mlflow = client()
    experiment_id = mlflow.get_experiment_by_name(experiment).experiment_id
    return mlflow.search_runs([experiment_id], filter_string=f"tags.`{RUN_KEY_TAG}` = 'train:{name}'")[0]


def final_metrics(run) -> dict[str, float]:
    return {k: v for k, v in run.data.metrics.items() if k.startswith(("test/", "best_val/"))}


def test_ddp_across_two_nodes_equals_ddp_on_one(cluster, chords, tmp_path):
    settings = ["train.num_workers=2", f"train.steps={STEPS}", "train.eval_every=10", f"train.storage_path={tmp_path}"]
    done = run(train_command(chords[0], "ddp-two-nodes", settings), cluster.env())
    assert done.returncode == 0, done.stderr[-3000:]
    across = training_run("ddp-two-nodes")
    assert set(across.data.tags["partita.nodes"].split(",")) == {cluster.nodes["head"], cluster.nodes["node-b"]}
    assert sorted(p.name for p in (tmp_path / "train_ddp-two-nodes").glob("checkpoint_*"))  # in storage both nodes see

    # the same run with both workers on one node: a one-node cluster of 2 CPUs
    one_node = LocalCluster(head_cpus=2)
    try:
        done = run(train_command(chords[0], "ddp-one-node", settings), one_node.env())
    finally:
        one_node.close(processes_mentioning)
    assert done.returncode == 0, done.stderr[-3000:]
    one = training_run("ddp-one-node")
    assert one.data.tags["partita.nodes"].split(",") == [one_node.nodes["head"]] * 2
    assert final_metrics(across) and final_metrics(across) == pytest.approx(final_metrics(one), rel=1e-5, abs=1e-6)


def test_a_sweep_spreads_its_trials_over_both_nodes(cluster, chords):
    settings = data_settings(chords[0]) + ["sweep.grid.model.mask_norm=[none, softmax]", f"train.steps={STEPS}"]
    command = [sys.executable, "experiments/ablation_masks.py", "--preset", "smoke", "--dataset", "jazznet-multi",
               "--seeds", "0", "1", "--name", "sweep-two-nodes", *(f"--set={s}" for s in settings)]
    done = run(command, cluster.env())
    assert done.returncode == 0, done.stderr[-3000:]

    mlflow = client()
    experiment_id = mlflow.get_experiment_by_name("musicslots-ablation-masks").experiment_id
    parents = [r for r in mlflow.search_runs([experiment_id]) if r.info.run_name == "sweep-two-nodes"]
    assert len(parents) == 1
    children = mlflow.search_runs([experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parents[0].info.run_id}'")
    assert len(children) == 4 and all(child.info.status == "FINISHED" for child in children)
    nodes = {child.data.tags["partita.nodes"] for child in children}
    assert nodes == {cluster.nodes["head"], cluster.nodes["node-b"]}


def test_a_chord_set_built_on_two_nodes_equals_the_one_node_build(cluster, chords, tmp_path):
    assert "with 2 workers" in chords[1]  # one actor per node (each has 1 CPU)
    assert "with 1 workers" in build_chords(cluster, tmp_path, "--workers", "1").stdout  # one actor: one node
    assert read_manifest(built_folder(tmp_path))["content_hash"] == read_manifest(chords[0])["content_hash"]


def test_storage_local_to_the_driver_is_refused_before_training(cluster, chords, tmp_path):
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode:
        pytest.skip("needs `unshare -m` (a private mount namespace) to give the driver a folder no node sees")
    storage = tmp_path / "local-to-the-driver"
    storage.mkdir()
    # the driver alone sees a fresh tmpfs at `storage`: a disk local to the head's pod, in effect
    private = ["unshare", "-m", "sh", "-c", 'mount -t tmpfs tmpfs "$0" && exec "$@"', str(storage)]
    done = run(private + train_command(chords[0], "invisible-storage", [f"train.storage_path={storage}"]), cluster.env())
    assert done.returncode == 2, done.stderr[-3000:]
    message = done.stderr.strip().splitlines()[-1]
    assert f"{storage}" in message and "is not visible from Ray node(s)" in message and "train.storage_path" in message
    assert "step 1" not in done.stdout


def test_too_few_cpus_for_the_workers_is_named_after_a_bounded_wait(cluster, chords, tmp_path):
    settings = ["train.num_workers=4", "train.capacity_wait_s=2", f"train.storage_path={tmp_path}"]
    done = run(train_command(chords[0], "too-many-workers", settings), cluster.env())
    assert done.returncode == 2, done.stderr[-3000:]
    assert "waiting up to 2 s for 4 CPU for train.num_workers=4" in done.stdout
    assert "the Ray cluster has 2 CPU, fewer than the 4 CPU for train.num_workers=4" in done.stderr
    assert "lower train.num_workers" in done.stderr


def test_too_few_cpus_on_a_local_instance_are_named_at_once(ray_session, chords, tmp_path):
    from components.errors import PartitaError
    from orchestration.trainer import train

    config = load_config([CONFIGS / "musicslots" / "smoke.yaml"], data_settings(chords[0]) + ["train.num_workers=4", f"train.storage_path={tmp_path}"],
                         base={"data": {"name": "jazznet-multi"}})
    experiment_id = ensure_experiment("musicslots-runs")
    with pytest.raises(PartitaError, match="the Ray cluster has 2 CPU, fewer than the 4 CPU for train.num_workers=4 x 1 CPU; fix: lower train.num_workers"):
        train(config, run_key="train:too-many-local-workers", run_name="too-many-local-workers", experiment_id=experiment_id)
    assert not client().search_runs([experiment_id], filter_string=f"tags.`{RUN_KEY_TAG}` = 'train:too-many-local-workers'")  # nothing written


@pytest.fixture
def fresh_cluster():
    """A cluster of its own: after the module's other runs on the shared one, this run's TrainController was
    cancelled before it started, twice (issue 17); this test replaces a node anyway."""
    nodes = LocalCluster("node-b")
    yield nodes
    nodes.close(processes_mentioning)


def test_a_run_survives_losing_a_node(fresh_cluster, chords, tmp_path):
    """node-b is removed after the first checkpoint; node-c joins once the failure is recorded."""
    cluster = fresh_cluster
    steps = 40
    settings = ["train.num_workers=2", f"train.steps={steps}", "train.eval_every=10", "train.log_every=5",
                "train.max_failures=2", f"train.storage_path={tmp_path}"]
    driver = subprocess.Popen(train_command(chords[0], "lose-a-node", settings), env=cluster.env(), cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        # Remove the node once the controller has registered a checkpoint (it writes its snapshot then)
        snapshot, deadline = tmp_path / "train_lose-a-node" / "checkpoint_manager_snapshot.json", time.time() + 600
        while not (snapshot.is_file() and "checkpoint_" in snapshot.read_text()) and time.time() < deadline and driver.poll() is None:
            time.sleep(0.2)
        assert driver.poll() is None, f"the run ended before its node could be removed: {driver.stderr.read()[-3000:]}"
        cluster.remove("node-b")
        # the run notices, records the failure and waits for capacity (2 workers, 1 CPU left)
        while "partita.failures" not in training_run("lose-a-node").data.tags and time.time() < deadline:
            time.sleep(0.5)
        cluster.add("node-c")
        _, stderr = driver.communicate(timeout=900)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, stderr[-3000:]

    finished = training_run("lose-a-node")
    assert finished.info.status == "FINISHED"
    assert int(finished.data.tags["partita.failures"]) >= 1 and finished.data.tags["partita.failure.1"].startswith("rank ")
    assert set(finished.data.tags["partita.nodes"].split(",")) == {cluster.nodes["head"], cluster.nodes["node-c"]}
    history = sorted(client().get_metric_history(finished.info.run_id, "train/loss"), key=lambda m: (m.timestamp, m.step))
    steps_logged = [m.step for m in history]
    assert steps_logged[-1] == steps and 5 in steps_logged
    # the curve continues from a checkpoint: whatever is logged again after the failure starts past the first one
    assert all(later > 10 for earlier, later in zip(steps_logged, steps_logged[1:]) if later < earlier), steps_logged
