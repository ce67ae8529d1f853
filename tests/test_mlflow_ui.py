"""What a researcher sees in MLflow's UI after a sweep, checked in a real browser.

The smoke sweep submitted as a user submits it (conftest.submitted_sweep) logs into a real `mlflow
server` on a loopback port; Debian's headless Chromium then loads the links the sweep printed, and
the DOM it renders after a budget of virtual time is checked.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import unquote

import pytest

from components.models.registry import get_family
from orchestration import tracking
from tests.services import SWEEP_TRIALS as TRIALS
from tests.services import tags_of as _tags

pytestmark = pytest.mark.timeout(1200)


@pytest.fixture
def sweep(submitted_sweep):
    assert submitted_sweep.trials, f"the submitted sweep failed: {submitted_sweep.logs[-3000:]}"
    return submitted_sweep


CHROMIUM = next((path for path in ("/usr/bin/chromium", shutil.which("chromium")) if path and os.access(path, os.X_OK)), None)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (make install adds it when run as root; else: sudo apt-get install chromium)"
)
SELECTION_METRIC = f"val/{get_family('musicslots').selection_metric}"


class _Text(HTMLParser):
    """The visible text of a page and its <title> (scripts and styles left out)."""

    def __init__(self):
        super().__init__()
        self.parts: list[str] = []
        self.title = ""
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        self._skip += tag in ("script", "style")
        self._in_title = tag == "title"

    def handle_endtag(self, tag):
        self._skip -= tag in ("script", "style")
        self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.title += data
        elif not self._skip:
            self.parts.append(data)


def render(url: str, profile: Path, budget_ms: int = 20000) -> SimpleNamespace:
    """The page Chromium renders for `url`: its title and visible text.

    Bounded: virtual time (timers and network idle are fast-forwarded up to `budget_ms`), one
    renderer, a 512 MB JavaScript heap, and a wall-clock timeout after which the browser's whole
    process group is killed. A fresh profile, so no stored UI preference shapes what opens.
    """
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
        f"--user-data-dir={profile}", "--renderer-process-limit=1", "--js-flags=--max-old-space-size=512",
        "--window-size=1400,900", f"--virtual-time-budget={budget_ms}", "--dump-dom", url,
    ]  # fmt: skip
    browser = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        dom, _ = browser.communicate(timeout=180)
    finally:
        try:
            os.killpg(browser.pid, signal.SIGKILL)  # helpers (zygote, GPU, network) that outlived the browser
        except ProcessLookupError:
            pass
        browser.wait()
    parser = _Text()
    parser.feed(dom)
    return SimpleNamespace(title=parser.title.strip(), text=re.sub(r"\s+", " ", " ".join(parser.parts)))


@pytest.mark.slow
def test_sweep_prints_and_records_the_comparison_of_its_trials(tracking_server, sweep):
    assert {r["info"]["run_name"] for r in sweep.trials} == TRIALS
    compare = sweep.printed["compare the trials"]
    assert compare.startswith(f"{tracking_server.uri}/#/compare-runs?")
    runs_in_link = json.loads(unquote(compare.split("runs=", 1)[1].split("&", 1)[0]))
    assert sorted(runs_in_link) == sorted(r["info"]["run_id"] for r in sweep.trials)
    ranked = sweep.printed[f"the trials by {SELECTION_METRIC}"]
    parent_tags = _tags(sweep.parent)
    assert parent_tags["partita.compare_url"] == compare and parent_tags["partita.ranked_url"] == ranked
    note = parent_tags[tracking.NOTE_TAG]
    assert compare in note and "| mask_norm=none" in note  # the links, then the results table

    experiment_tags = {t["key"]: t["value"] for t in sweep.experiment["tags"]}
    assert experiment_tags[tracking.KIND_TAG] == "custom_model_development"
    assert experiment_tags[tracking.PRIMARY_METRIC_TAG] == SELECTION_METRIC


@pytest.mark.slow
def test_every_run_records_its_data_set_and_source(sweep):
    for run in [sweep.parent, *sweep.trials]:
        tags, params = _tags(run), {p["key"]: p["value"] for p in run["data"]["params"]}
        assert tags["mlflow.source.name"] == "experiments/ablation_masks.py"
        [dataset_input] = run["inputs"]["dataset_inputs"]
        dataset = dataset_input["dataset"]
        assert dataset["name"] == "jazznet-single"
        assert params["data.content_hash"].startswith(dataset["digest"])
        assert re.search(r"/data/jazznet-single-[0-9a-f]{8}$", json.loads(dataset["source"])["uri"])  # the smoke sweep's 24-chord recipe
        assert {t["key"]: t["value"] for t in dataset_input["tags"]}["mlflow.data.context"] == "train"
        assert set(json.loads(dataset["profile"])["rows"]) >= {"train", "valid", "test"}


@pytest.mark.slow
@needs_chromium
def test_comparison_page_shows_every_trial_and_the_selection_metric(sweep, tmp_path):
    page = render(sweep.printed["compare the trials"], tmp_path / "profile")
    assert page.title.startswith("Compare Runs"), page.title
    assert "Comparing 3 Runs" in page.text, page.text[:2000]
    for name in TRIALS:
        assert name in page.text, name
    assert SELECTION_METRIC in page.text


@pytest.mark.slow
@needs_chromium
def test_experiment_page_opens_on_the_training_runs_ranked_by_the_selection_metric(sweep, tmp_path):
    page = render(sweep.printed[f"the trials by {SELECTION_METRIC}"], tmp_path / "profile")
    # the training-runs view, not MLflow's GenAI overview (traces, latency, token usage)
    assert page.title.startswith(f"Runs - Experiment {sweep.experiment['experiment_id']}"), page.title
    assert "Token Usage" not in page.text and "Model registry" in page.text
    assert f"Sort: {SELECTION_METRIC}" in page.text
    assert "3 matching runs" in page.text
    for name in TRIALS:
        assert name in page.text, name


def test_experiments_get_the_training_kind_when_created_and_when_next_used(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow = tracking.client(uri)
    new = tracking.ensure_experiment("fresh", uri)
    assert mlflow.get_experiment(new).tags[tracking.KIND_TAG] == "custom_model_development"
    older = mlflow.create_experiment("made-before", artifact_location=(tmp_path / "a").as_uri())
    assert tracking.KIND_TAG not in mlflow.get_experiment(older).tags
    assert tracking.ensure_experiment("made-before", uri) == older
    assert mlflow.get_experiment(older).tags[tracking.KIND_TAG] == "custom_model_development"
    chosen = mlflow.create_experiment("chosen", artifact_location=(tmp_path / "b").as_uri(), tags={tracking.KIND_TAG: "genai_development"})
    tracking.ensure_experiment("chosen", uri)
    assert mlflow.get_experiment(chosen).tags[tracking.KIND_TAG] == "genai_development"  # a kind picked in the UI stays
