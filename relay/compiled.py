"""The C shipped as source and compiled on the machine: the relay's tc program, its step-line
renderer, the TFTP server's lock-step loop.

``boothop-relay build-datapath`` (which ``.ci/install`` runs) builds them all; a daemon builds
what it lacks on demand. Each built file is kept in a cache directory, named by a hash of its
source and flags: no binary lives in git, and an edited source is rebuilt.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from importlib import resources
from pathlib import Path
from typing import NamedTuple

#: Where built files are kept (overridden by BOOTHOP_BPF_CACHE).
DEFAULT_CACHE = Path("/var/cache/boothop")
#: A shared library for ctypes, as the native helpers are built.
LIBRARY_FLAGS = ("-O2", "-g", "-Wall", "-Werror", "-shared", "-fPIC")


class Source(NamedTuple):
    """A shipped C source: the package and the path in it, clang's flags, the built file's
    suffix."""

    package: str
    path: str
    flags: tuple[str, ...]
    suffix: str


#: The relay's tc program. The default -mcpu (v1) has the token buckets' 64-bit atomics
#: (compare-and-swap, exchange, fetch-and-add; the kernel takes them since 5.12); v3 costs the
#: verifier a sixth more steps.
PROGRAM_SOURCE = Source("boothop.relay", "bpf/relay.bpf.c",
                        ("-O2", "-g", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu", "-c"),
                        ".bpf.o")
#: The relay daemon's step-line renderer.
STEP_LINES_SOURCE = Source("boothop.relay", "native/steplines.c", (*LIBRARY_FLAGS, "-lm"), ".so")
#: The TFTP server's lock-step loop.
LOCK_STEP_SOURCE = Source("boothop.server.tftp", "lockstep.c", LIBRARY_FLAGS, ".so")
#: Everything ``boothop-relay build-datapath`` builds.
SOURCES = (PROGRAM_SOURCE, STEP_LINES_SOURCE, LOCK_STEP_SOURCE)


class Unavailable(Exception):
    """A shipped source cannot be built or loaded here; the message says why."""


def source_text(source: Source) -> bytes:
    return resources.files(source.package).joinpath(source.path).read_bytes()


def cache_dir() -> Path:
    return Path(os.environ.get("BOOTHOP_BPF_CACHE") or DEFAULT_CACHE)


def built_path(source: Source, directory: Path | None = None) -> Path:
    """Where the file built from ``source`` is (or will be) cached."""
    digest = hashlib.sha256(source_text(source) + " ".join(source.flags).encode()).hexdigest()
    name = Path(source.path).name.split(".")[0]
    return (directory or cache_dir()) / f"{name}-{digest[:16]}{source.suffix}"


def build(source: Source, directory: Path | None = None) -> Path:
    """Compile ``source`` unless it is cached; returns the built file's path."""
    target = built_path(source, directory)
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with resources.as_file(resources.files(source.package).joinpath(source.path)) as path:
        compile_file(path, source.flags, target)
    return target


def compile_file(path: Path, flags: tuple[str, ...], target: Path) -> None:
    """clang ``flags`` on ``path`` into ``target`` (replaced whole, or not at all)."""
    clang = shutil.which("clang")
    if clang is None:
        raise Unavailable(f"{target} is not built and clang is not installed "
                          "(apt-get install clang llvm libbpf-dev)")
    temporary = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    result = subprocess.run([clang, *flags, str(path), "-o", str(temporary)],
                            capture_output=True, text=True, timeout=300, check=False)
    if result.returncode != 0:
        temporary.unlink(missing_ok=True)
        raise Unavailable(f"clang failed on {path.name}: {result.stderr.strip()[-2000:]}")
    os.replace(temporary, target)
