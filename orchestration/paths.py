"""Where partita reads and writes on this machine.

Everything lives under one folder, PARTITA_HOME (default: the current working
directory, i.e. the project folder when you run `make demo` there):

    $PARTITA_HOME/data/         built data sets (PARTITA_DATA overrides)
    $PARTITA_HOME/runs/         Ray Train/Tune storage: checkpoints, trial state
    $PARTITA_HOME/mlflow.db     the embedded MLflow tracking database
    $PARTITA_HOME/mlartifacts/  its artifacts

`ray job submit --working-dir .` runs the script in a temporary copy of the
project, so submit with PARTITA_HOME set to an absolute path (`make submit`
does this) or everything written there is lost with the copy.
"""

import os
from pathlib import Path


def home() -> Path:
    return Path(os.environ.get("PARTITA_HOME") or os.getcwd()).resolve()


def data_root() -> Path:
    return Path(os.environ.get("PARTITA_DATA") or home() / "data").resolve()


def runs_root() -> Path:
    return home() / "runs"


def project_root() -> Path:
    """The source checkout (holds pyproject.toml, experiments/, k8s/)."""
    return Path(__file__).resolve().parent.parent
