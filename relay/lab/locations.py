"""Where the lab finds what it ships and what it runs, and where it keeps its demo runs.

Nothing here looks at the source tree or the current directory: the default lab file is package
data of ``boothop.config``, boothop's own commands are looked up in the bin directory of the Python
that runs the lab (a venv that is not on PATH works), and demo runs go to a state directory.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from importlib.resources import files
from pathlib import Path

#: Demo runs as root, when $XDG_STATE_HOME is not set.
SYSTEM_RUNS_DIR = Path("/var/lib/boothop-lab/runs")


def default_lab_file() -> Path:
    """The lab.toml installed with boothop (package data of ``boothop.config``).

    pip installs packages as plain files, so the resource is a path on disk."""
    return Path(str(files("boothop.config") / "lab.toml"))


def find_program(name: str) -> str | None:
    """``name`` from the running Python's bin directory (the same install), else from PATH."""
    beside = Path(sys.executable).parent / name  # not resolved: a venv's python is a symlink
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


def program(name: str) -> str:
    """The path to run for ``name``; the bare name when it is nowhere (the start then fails)."""
    return find_program(name) or name


def runs_dir() -> Path:
    """``$XDG_STATE_HOME/boothop-lab/runs``; without it /var/lib/boothop-lab/runs for root and
    ``~/.local/state/boothop-lab/runs`` for anyone else."""
    state_home = os.environ.get("XDG_STATE_HOME")
    if state_home:
        return Path(state_home) / "boothop-lab" / "runs"
    if os.geteuid() == 0:
        return SYSTEM_RUNS_DIR
    return Path.home() / ".local" / "state" / "boothop-lab" / "runs"


def new_run_dir(prefix: str) -> Path:
    """A fresh ``<runs_dir>/<YYYYmmdd-HHMMSS>-<prefix>`` (``.2``, ``.3`` ... within one second)."""
    base = runs_dir() / f"{time.strftime('%Y%m%d-%H%M%S')}-{prefix}"
    base.parent.mkdir(parents=True, exist_ok=True)
    candidate, number = base, 1
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            number += 1
            candidate = base.with_name(f"{base.name}.{number}")
