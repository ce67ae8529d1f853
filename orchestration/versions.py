"""What code produced a result: git commit and package versions."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
from functools import lru_cache

from orchestration.paths import project_root

PACKAGES = ("partita", "torch", "torchaudio", "ray", "mlflow", "optuna", "numpy", "pyarrow", "mir_eval", "pyfluidsynth")


@lru_cache(maxsize=1)
def code_version() -> str:
    """The git commit of the source tree ('+dirty' with uncommitted changes), or 'unknown'.

    PARTITA_CODE_VERSION wins: the driver sets it for Ray workers and jobs whose
    copy of the code carries no git metadata.
    """
    if os.environ.get("PARTITA_CODE_VERSION"):
        return os.environ["PARTITA_CODE_VERSION"]
    try:
        run = lambda *args: subprocess.run(  # noqa: E731
            ["git", *args], cwd=project_root(), capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        commit = run("rev-parse", "HEAD")
        dirty = bool(run("status", "--porcelain", "--untracked-files=no"))
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions
