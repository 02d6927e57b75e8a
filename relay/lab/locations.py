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

#: The lab's state (demo runs, the initramfs cache) as root, when $XDG_STATE_HOME is not set.
SYSTEM_STATE_DIR = Path("/var/lib/boothop-lab")


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


def state_dir() -> Path:
    """``$XDG_STATE_HOME/boothop-lab``; without it /var/lib/boothop-lab for root and
    ``~/.local/state/boothop-lab`` for anyone else."""
    state_home = os.environ.get("XDG_STATE_HOME")
    if state_home:
        return Path(state_home) / "boothop-lab"
    if os.geteuid() == 0:
        return SYSTEM_STATE_DIR
    return Path.home() / ".local" / "state" / "boothop-lab"


def runs_dir() -> Path:
    """Where demo runs are kept: ``runs`` in the state directory."""
    return state_dir() / "runs"


def cache_dir() -> Path:
    """Where the lab keeps what it builds once (the initramfs, by content hash)."""
    return state_dir() / "cache"


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


#: Debian's ipxe package: the network boot programs the PXE host serves, by the name it serves.
IPXE_DIR = Path("/usr/lib/ipxe")
BOOT_PROGRAMS = ("undionly.kpxe", "ipxe.efi", "snponly.efi")
#: Debian's ovmf package: UEFI firmware code (read-only) and the variable store a machine copies.
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS.fd")


def boot_program(name: str) -> Path:
    """The real boot program ``name`` from Debian's ipxe package (ipxe.efi is a symlink there)."""
    return (IPXE_DIR / name).resolve()


def missing_boot_files() -> list[str]:
    """What the lab's firmware chains need from Debian and is not installed, with the package."""
    needed = [(boot_program(n), "ipxe") for n in BOOT_PROGRAMS]
    needed += [(OVMF_CODE, "ovmf"), (OVMF_VARS, "ovmf")]
    return [f"{path} not found (Debian package {package})" for path, package in needed
            if not path.is_file()]
