"""The install: the lock pins everything the code imports, and `partita doctor` says what is broken."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OWN_PACKAGES = {"components", "orchestration", "experiments", "tests"}


def _lock() -> dict[str, str]:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    return {package["name"]: package["version"] for package in lock["package"]}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imported_top_level_modules() -> dict[str, set[str]]:
    """Top-level module -> files importing it, over every Python file of the project."""
    found: dict[str, set[str]] = {}
    for folder in ("components", "orchestration", "experiments", "tests", "k8s", "mlflow"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


def test_the_lock_pins_every_package_the_code_imports():
    pinned = {_normalise(name) for name in _lock()}
    distributions = importlib.metadata.packages_distributions()
    unpinned = {}
    for module, files in _imported_top_level_modules().items():
        if module in sys.stdlib_module_names or module in OWN_PACKAGES or module == "__future__":
            continue
        owners = distributions.get(module)
        if not owners:
            unpinned[module] = f"no installed distribution provides it (imported by {sorted(files)[0]})"
        elif not any(_normalise(owner) in pinned for owner in owners):
            unpinned[module] = f"{owners} not in uv.lock (imported by {sorted(files)[0]})"
    assert not unpinned, unpinned


def test_torch_and_torchaudio_are_pinned_to_the_same_release():
    # torchaudio is built against one torch release; 2.11.1 against 2.11.0 fails to load
    lock = _lock()
    assert lock["torch"] == lock["torchaudio"], (lock["torch"], lock["torchaudio"])
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"torch=={lock['torch']}" in project and f"torchaudio=={lock['torchaudio']}" in project


def test_the_installed_environment_is_the_locked_one():
    lock = _lock()
    differ = {}
    for name in ("torch", "torchaudio", "ray", "mlflow", "pyarrow", "numpy", "pyfluidsynth", "optuna"):
        installed = importlib.metadata.version(name)
        if installed != lock[name]:
            differ[name] = (installed, lock[name])
    assert not differ, f"installed vs locked: {differ}; run make install"


def _doctor(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "orchestration.cli", "doctor", *args],
        cwd=ROOT, env=env or os.environ.copy(), capture_output=True, text=True, timeout=600,
    )


@pytest.mark.slow
def test_doctor_passes_on_this_machine_and_fails_a_missing_soundfont_with_its_fix(tmp_path):
    missing = tmp_path / "NoSuchFont.sf2"
    result = _doctor("--soundfont", "FluidR3_GM", "--soundfont", str(missing))
    lines = result.stdout.splitlines()
    assert result.returncode == 1, result.stdout + result.stderr
    failures = [line for line in lines if line.startswith("FAIL")]
    assert len(failures) == 1, result.stdout
    assert str(missing) in failures[0] and "does not exist" in failures[0] and "fix:" in failures[0]
    for name in ("import torch", "import torchaudio", "import fluidsynth", "soundfont FluidR3_GM", "ray", "mlflow store", "free disk", "memory"):
        assert any(line.startswith(f"OK    {name}") for line in lines), f"{name} not OK:\n{result.stdout}"
    assert "1 check failed" in lines[-1]


def test_doctor_names_a_native_extension_that_does_not_load_and_its_fix(tmp_path):
    # A stand-in for a broken build: the module raises as libtorchaudio did against the wrong torch
    (tmp_path / "fluidsynth.py").write_text("raise OSError('libfluidsynth.so.3: cannot open shared object file')\n")
    env = os.environ | {"PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    code = "from orchestration.doctor import check_import; print(check_import('fluidsynth').line())"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    line = result.stdout.strip()
    assert line.startswith("FAIL  import fluidsynth"), line + result.stderr
    assert "cannot open shared object file" in line and "fix: install the FluidSynth library" in line
