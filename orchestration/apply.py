"""`partita apply RUN AUDIO`: a trained run turned into the files a musician opens.

The run's logged config rebuilds its family's model, its final checkpoint gives the
best weights and the data spec, and `family.apply` maps the recording (mono, at the
spec's sample rate) to named outputs: WAV stems, MIDI, figures, JSON. They are
written to a staging folder that is renamed into place only when every file is
written, so an interrupted apply leaves nothing that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Callable, NamedTuple

import numpy as np
import torch

from components.data.audio import read_audio  # also read by families (a QBE model's query)
from components.errors import PartitaError

if TYPE_CHECKING:
    from components.models.base import ModelFamily

RECORD = "apply.json"  # what was applied to what, written last


def families_with_apply() -> list[str]:
    from components.models.base import ModelFamily
    from components.models.registry import all_families

    return sorted(name for name, family in all_families().items() if type(family).apply is not ModelFamily.apply)


def require_apply(family: "ModelFamily") -> None:
    if family.name not in families_with_apply():
        raise PartitaError(f"model family {family.name} has no apply step yet", f"apply a run of one of: {', '.join(families_with_apply()) or '(none yet)'}")


class Trained(NamedTuple):
    family: "ModelFamily"
    model: torch.nn.Module  # in eval mode, the best checkpoint's weights
    spec: object  # the data spec `apply` is given (ModelFamily.applied_spec)
    run: object  # the MLflow run
    config: object  # its ExperimentConfig


def load_trained(
    run_id: str, uri: str | None = None, score: Path | None = None, query: Path | None = None, check: "Callable[[ModelFamily], None] | None" = None
) -> Trained:
    """A finished training run, or a sweep's best run, rebuilt from its logged config and final checkpoint.

    `score`: a MIDI file for the families conditioned on a score (their `model.score`); `query`: an audio query
    for the families that separate what a query names (their `model.query_file`; the family refuses it when the
    run was not trained on queries). `check(family)` may refuse the run's family before any checkpoint is read.
    """
    import ray.train

    from components.models.registry import get_family
    from orchestration.config import validate
    from orchestration.probe import resolve_training_run
    from orchestration.tracking import client
    from orchestration.trainer import CHECKPOINT_TAG

    run = resolve_training_run(run_id, uri)
    family = get_family(run.data.tags["partita.family"])
    if check is not None:
        check(family)
    with tempfile.TemporaryDirectory() as folder:
        tree = json.loads(Path(client(uri).download_artifacts(run.info.run_id, "config.json", folder)).read_text())
    if score is not None:
        attach_file(tree, family, "score", score, "drop --score; it is for score-informed runs", "pass the MIDI file of the recording's score")
    if query is not None:
        attach_file(
            tree, family, "query_file", query, "drop --query; it is for query-by-example runs (hierarchical, model.conditioning=qbe)",
            "pass the path of a WAV, FLAC or OGG recording of the instrument to separate",
        )
    config = validate(tree)
    checkpoint = run.data.tags[CHECKPOINT_TAG]
    try:
        with ray.train.Checkpoint(checkpoint).as_directory() as folder:
            state = torch.load(Path(folder) / "state.pt", map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise PartitaError(f"the checkpoint of run {run.info.run_id} is gone ({checkpoint})", "apply a run whose storage path is still there, or train it again") from None
    if "spec" not in state:
        raise PartitaError(
            f"run {run.info.run_id} was trained before checkpoints kept the data spec, so its model cannot be rebuilt alone",
            "train it again (same command); its new checkpoint can be applied",
        )
    model = family.build(config.model, state["spec"])
    model.load_state_dict(state["best_state"] or state["model"])
    return Trained(family, model.eval(), family.applied_spec(state["spec"], lambda path: run_json(run.info.run_id, path, uri)), run, config)


def attach_file(tree: dict, family: "ModelFamily", field: str, path: Path, not_taken_fix: str, missing_fix: str) -> None:
    """Sets the logged config's `model.<field>` to a user's file, refusing a family without that field or a missing file."""
    noun = field.removesuffix("_file")
    if field not in family.config_class.model_fields:
        raise PartitaError(f"model family {family.name} takes no {noun}", not_taken_fix)
    if not Path(path).is_file():
        raise PartitaError(f"no {noun} file at {path}", missing_fix)
    tree["model"][field] = str(Path(path).resolve())


def run_json(run_id: str, path: str, uri: str | None = None) -> dict | None:
    """A JSON artifact of a run, None when the run has none at `path`."""
    from orchestration.tracking import client

    mlflow = client(uri)
    if path not in {a.path for a in mlflow.list_artifacts(run_id, os.path.dirname(path) or None)}:
        return None
    with tempfile.TemporaryDirectory() as folder:
        return json.loads(Path(mlflow.download_artifacts(run_id, path, folder)).read_text())


def write_outputs(outputs: dict, folder: Path, sample_rate: int) -> list[str]:
    """Each output by its kind: arrays as 16-bit WAV, PrettyMIDI as .mid, figures as PNG, dicts as JSON."""
    import pretty_midi
    import soundfile
    from matplotlib.figure import Figure

    written = []
    for name, content in outputs.items():
        path = folder / name
        if isinstance(content, pretty_midi.PrettyMIDI):
            content.write(str(path))
        elif isinstance(content, Figure):
            content.savefig(path, dpi=120)
        elif isinstance(content, dict):
            path.write_text(json.dumps(content, indent=2))
        else:
            audio = np.asarray(content, dtype=np.float32)
            # float stems may exceed full scale; scale the file rather than clip it
            peak = float(np.abs(audio).max(initial=0.0))
            soundfile.write(str(path), audio.T / max(1.0, peak), sample_rate, subtype="PCM_16")
        written.append(name)
    return written


def apply_run(run_id: str, audio_path: Path, out: Path | None = None, uri: str | None = None, score: Path | None = None, query: Path | None = None) -> Path:
    """Apply a trained run to one recording (and its score, for score-informed runs, or a query, for query-by-example
    runs); returns the folder of outputs."""
    audio_path = Path(audio_path)
    if not audio_path.is_file():  # before any MLflow or checkpoint work
        raise PartitaError(f"no audio file at {audio_path}", "pass the path of a WAV, FLAC or OGG recording")
    family, model, spec, run, _ = load_trained(run_id, uri, score, query, check=require_apply)
    target = Path(out) if out else Path.cwd() / f"{audio_path.stem}-{family.name}-{run.info.run_id[:8]}"
    if target.exists():
        raise PartitaError(f"{target} already exists", f"pass --out with a new folder, or remove {target}")
    audio = read_audio(audio_path, spec.sample_rate)
    with torch.no_grad():
        outputs = family.apply(model, audio, spec)
    staging = target.parent / f".{target.name}.partial-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        files = write_outputs(outputs, staging, spec.sample_rate)
        record = {
            "run_id": run.info.run_id,
            "family": family.name,
            "audio": str(audio_path.resolve()),
            "audio_sha256": hashlib.sha256(audio_path.read_bytes()).hexdigest(),
            "sample_rate": spec.sample_rate,
            "seconds": round(len(audio) / spec.sample_rate, 3),
            "files": files,
        }
        (staging / RECORD).write_text(json.dumps(record, indent=2))
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
