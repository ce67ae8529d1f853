"""`partita doctor`: is this machine able to run partita? One line per check.

Each check prints `OK` or `FAIL` with the problem and a fix that works where it is
printed; the exit code is 1 when any check fails. `make install` ends with it, so a
broken install fails at install time naming the package. The output is meant to be
pasted into a bug report: versions, machine, soundfont checksums.

Imports and Ray run in child processes: a native extension that does not load can
abort the interpreter (or leave it half-initialised), and the doctor must survive it.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from orchestration import paths

REINSTALL = "run `make install` in the project folder (it installs exactly what uv.lock pins)"

# module -> (distribution, a line that exercises its native part, a fix beyond reinstalling)
NATIVE_IMPORTS: dict[str, tuple[str, str, str]] = {
    "torch": ("torch", "torch.ones(2) @ torch.ones(2)", REINSTALL),
    "torchaudio": ("torchaudio", "torchaudio.transforms.MelSpectrogram(sample_rate=16000, n_mels=8)(torch.zeros(1, 1024))", REINSTALL),
    "fluidsynth": (
        "pyfluidsynth",
        "fluidsynth.Synth().delete()",
        "install the FluidSynth library (apt-get install libfluidsynth3, or `make install` as root)",
    ),
    "pyarrow": ("pyarrow", "pyarrow.array([1, 2]).sum()", REINSTALL),
    "ray": ("ray", "ray.__version__", REINSTALL),
    "mlflow": ("mlflow", "mlflow.__version__", REINSTALL),
    "soundfile": ("soundfile", "soundfile.__libsndfile_version__", "install libsndfile (apt-get install libsndfile1), then " + REINSTALL),
    "scipy": ("scipy", "scipy.optimize.nnls", REINSTALL),
    "mir_eval": ("mir_eval", "mir_eval.transcription", REINSTALL),
    "pretty_midi": ("pretty_midi", "pretty_midi.PrettyMIDI()", REINSTALL),
}
# Debian's three GM soundfonts (components' soundfont registry names them)
DEFAULT_SOUNDFONTS = ("FluidR3_GM", "TimGM6mb", "MuseScore_General_Lite")
MIN_FREE_DISK_GB = 5.0  # all four chord sets take 1.9 GB, a slakh-like set a few more
MIN_AVAILABLE_MEMORY_GB = 6.0  # a full chord build peaks at 4.4 GB (README, benchmarks)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{'OK  ' if self.ok else 'FAIL'}  {self.name}: {self.detail}"
        return text if self.ok or not self.fix else f"{text}; fix: {self.fix}"


def _child(code: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def check_import(module: str) -> Check:
    distribution, exercise, fix = NATIVE_IMPORTS[module]
    import importlib.metadata

    code = f"import torch, {module}\nimport {module}.transforms\n" if module == "torchaudio" else f"import {module}\n"
    if module == "scipy":
        code += "import scipy.optimize\n"
    if module == "mir_eval":
        code += "import mir_eval.transcription\n"
    code += f"{exercise}\n"
    try:
        version = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return Check(f"import {module}", False, f"package {distribution} is not installed", REINSTALL)
    try:
        result = _child(code, timeout=120)
    except subprocess.TimeoutExpired:
        return Check(f"import {module}", False, f"{distribution} {version} did not import within 120 s", fix)
    if result.returncode != 0:
        return Check(f"import {module}", False, f"{distribution} {version} does not load: {_last_line(result.stderr)}", fix)
    return Check(f"import {module}", True, f"{distribution} {version}")


def check_soundfont(name_or_path: str) -> Check:
    """The soundfont is found and renders an audible note through FluidSynth."""
    from components.errors import PartitaError
    from components.data.soundfonts import checksum, resolve

    try:
        path = resolve(name_or_path)
    except PartitaError as err:
        return Check(f"soundfont {name_or_path}", False, err.problem, err.fix or "")
    render = textwrap.dedent(
        f"""
        import numpy, fluidsynth
        synth = fluidsynth.Synth(samplerate=44100.0)
        font = synth.sfload({str(path)!r})
        assert font >= 0, "FluidSynth could not load the file"
        synth.program_select(0, font, 0, 0)
        synth.noteon(0, 60, 100)
        audio = numpy.asarray(synth.get_samples(22050), dtype=numpy.float32)
        synth.delete()
        print(float(numpy.abs(audio).max()))
        """
    )
    result = _child(render, timeout=120)
    if result.returncode != 0:
        return Check(f"soundfont {name_or_path}", False, f"{path} does not render: {_last_line(result.stderr)}", "reinstall the soundfont's package, or point to another .sf2 file")
    # pyfluidsynth may print where it found the library first; the figure is the last line.
    peak = float(_last_line(result.stdout)) if result.stdout.strip() else 0.0
    if peak <= 0:
        return Check(f"soundfont {name_or_path}", False, f"{path} renders silence for middle C on preset 0", "use a General MIDI soundfont with a piano on bank 0, preset 0")
    return Check(f"soundfont {name_or_path}", True, f"{path} sha256 {checksum(path)[:16]}, middle C peak {peak:.0f} (16-bit)")


def check_ray() -> Check:
    code = textwrap.dedent(
        """
        import time, ray
        start = time.time()
        ray.init(address="local", num_cpus=1, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        assert ray.get(ray.remote(lambda: 1 + 1).remote()) == 2
        ray.shutdown()
        print(f"{time.time() - start:.1f}")
        """
    )
    try:
        result = _child(code, timeout=180)
    except subprocess.TimeoutExpired:
        return Check("ray", False, "a local Ray instance did not start within 180 s", "check free memory and /tmp, then run `partita doctor` again")
    if result.returncode != 0:
        reason = _last_line(result.stderr)
        # Ray gives up on a node that does not come up in time: a busy or memory-short machine, not a broken install
        fix = "wait until the machine is less busy (uptime, free -g), then run `partita doctor` again" if "timed out" in reason else REINSTALL
        return Check("ray", False, f"a local Ray instance fails: {reason}", fix)
    return Check("ray", True, f"a local instance started, ran a task and stopped in {_last_line(result.stdout)} s")


def check_mlflow_store() -> Check:
    from components.errors import PartitaError
    from orchestration.tracking import check_reachable, tracking_uri

    uri = tracking_uri()
    try:
        check_reachable(uri)
    except PartitaError as err:
        return Check("mlflow store", False, err.problem, err.fix or "")
    if uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).parent
        if not os.access(folder, os.W_OK):
            return Check("mlflow store", False, f"{folder} is not writable", "set PARTITA_HOME to a writable folder")
    return Check("mlflow store", True, uri)


def check_disk() -> Check:
    home = paths.home()
    existing = next(p for p in (home, *home.parents) if p.exists())
    free = shutil.disk_usage(existing).free / 1e9
    ok = free >= MIN_FREE_DISK_GB
    return Check("free disk", ok, f"{free:.1f} GB free under {home}", f"free space or set PARTITA_HOME to a disk with at least {MIN_FREE_DISK_GB:.0f} GB")


def check_memory() -> Check:
    info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line)
    available = int(info["MemAvailable"].split()[0]) / 1e6
    total = int(info["MemTotal"].split()[0]) / 1e6
    ok = available >= MIN_AVAILABLE_MEMORY_GB
    return Check("memory", ok, f"{available:.1f} of {total:.1f} GB available", f"close other programs: a full data build peaks near {MIN_AVAILABLE_MEMORY_GB - 1.6:.1f} GB")


def machine_line() -> str:
    from orchestration.versions import code_version

    return f"partita {code_version()} on Python {platform.python_version()}, {platform.platform()}, {os.cpu_count()} CPUs"


def doctor(soundfonts: tuple[str, ...] = DEFAULT_SOUNDFONTS) -> int:
    """Print each check as it ends (imports and soundfonts run side by side); 1 if any failed."""
    print(machine_line(), flush=True)
    with ThreadPoolExecutor(max_workers=4) as pool:
        pending = [pool.submit(check_import, module) for module in NATIVE_IMPORTS]
        pending += [pool.submit(check_soundfont, font) for font in soundfonts]
        checks = []
        for future in pending:
            checks.append(future.result())
            print(checks[-1].line(), flush=True)
    for check in (check_ray, check_mlflow_store, check_disk, check_memory):
        checks.append(check())
        print(checks[-1].line(), flush=True)
    failed = sum(not check.ok for check in checks)
    print(f"{failed} check{'s' * (failed != 1)} failed" if failed else "all checks passed")
    return 1 if failed else 0
