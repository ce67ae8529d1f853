"""Finding General MIDI soundfonts on disk and fingerprinting them."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from components.data.manifest import sha256_file
from components.errors import PartitaError

# Debian's soundfont packages (see README "Soundfonts"); PARTITA_SOUNDFONT_DIRS
# (os.pathsep-separated) is searched first.
SYSTEM_DIRS = ("/usr/share/sounds/sf2", "/usr/share/sounds/sf3", "/usr/share/soundfonts")
PACKAGES = {
    "FluidR3_GM": "fluid-soundfont-gm",
    "TimGM6mb": "timgm6mb-soundfont",
    "MuseScore_General_Lite": "musescore-general-soundfont-small",
}


def search_dirs() -> list[Path]:
    extra = os.environ.get("PARTITA_SOUNDFONT_DIRS", "")
    return [Path(p) for p in extra.split(os.pathsep) if p] + [Path(d) for d in SYSTEM_DIRS]


def resolve(name_or_path: str) -> Path:
    """A soundfont by file path, or by name ('FluidR3_GM') in the search dirs."""
    candidate = Path(name_or_path).expanduser()
    if candidate.suffix in (".sf2", ".sf3"):
        if candidate.is_file():
            return candidate.resolve()
        raise PartitaError(
            f"soundfont file {str(candidate)!r} does not exist",
            "pass the path of an existing .sf2/.sf3 file, or a soundfont name such as FluidR3_GM",
        )
    for directory in search_dirs():
        for suffix in (".sf2", ".sf3"):
            path = directory / f"{name_or_path}{suffix}"
            if path.is_file():
                return path.resolve()
    package = PACKAGES.get(name_or_path)
    how = f"install it (apt-get install {package})" if package else "put the .sf2 file in a searched folder"
    raise PartitaError(
        f"soundfont {name_or_path!r} not found in {', '.join(map(str, search_dirs()))}",
        f"{how}, or set PARTITA_SOUNDFONT_DIRS to the folder that holds it",
    )


@lru_cache(maxsize=None)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(Path(path))


def checksum(path: Path) -> str:
    """sha256 of a soundfont file (cached per path, size and mtime)."""
    stat = path.stat()
    return _sha256(str(path), stat.st_size, stat.st_mtime_ns)
