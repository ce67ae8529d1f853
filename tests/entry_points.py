"""Entry points run in the test process as a shell runs them: argv, environment, exit code, output.

A real process per check costs a Python start-up that imports torch, Ray and MLflow (5-25 s on two
shared cores), and the refusals checked with this need none of it: `partita` goes through
orchestration.cli.main and an experiment script through the same main_guard its `__main__` calls,
so the exit code and the lines printed are the ones a user gets. test_ablation_masks keeps checks
through a real process, for what only a process shows.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]


def script_module(path: str | Path):
    """A script (relative to the project, or absolute) imported as a module once, as `python PATH` would run it."""
    name = f"entry_point_{Path(path).stem}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / path)
        module = sys.modules[name] = importlib.util.module_from_spec(spec)  # before it runs, as `import` does
        saved, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # no __pycache__ beside the scripts
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
        finally:
            sys.dont_write_bytecode = saved
    return sys.modules[name]


def run_entry_point(argv: list[str], env: dict[str, str], capsys) -> SimpleNamespace:
    """`partita ARGS...` or `experiments/NAME.py ARGS...` from the project folder, with `env` set.

    Returns returncode, stdout and stderr, like subprocess.run(..., capture_output=True, text=True).
    """
    from orchestration.cli import main as partita
    from orchestration.experiment import main_guard

    capsys.readouterr()  # only what this command prints
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(ROOT)
        for key, value in env.items():
            patch.setenv(key, value)
        patch.setattr(sys, "argv", argv)
        try:  # argparse and main_guard end with SystemExit, partita's main returns its code
            code = partita(argv[1:]) if argv[0] == "partita" else main_guard(script_module(argv[0]).main)()
        except SystemExit as exit:
            code = exit.code
    printed = capsys.readouterr()
    return SimpleNamespace(returncode=code, stdout=printed.out, stderr=printed.err)
