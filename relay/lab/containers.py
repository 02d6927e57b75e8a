"""boothop's daemons as containers of its image (config/container/), run with podman.

A contained daemon joins its host's namespace (``--network ns:/run/netns/<namespace>``) with
only NET_RAW and NET_BIND_SERVICE, as the image's (non-root) user. Its configuration file, if it
has one, is mounted read-only at ``/etc/boothop/<name>.toml``; the lab's work directory is
mounted at its own path (lease database, TFTP root, the relay's stats file) and handed to the
image's user. ``podman run`` stays in the foreground, in the caller's namespaces: its output is
the daemon's log, and the SIGTERM that stops it reaches the daemon (podman forwards it to tini,
the image's PID 1). The container's ID goes to ``<workdir>/<name>.cid``; ``remove`` deletes the
container by that ID, whatever became of ``podman run``.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from .topology import NETNS_DIR

#: Measured on Debian 12: crun fails on a hybrid cgroup hierarchy, and podman's default rlimits
#: are refused there.
PODMAN = ("podman", "--runtime", "runc", "--cgroup-manager=cgroupfs")
LIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096")
#: What config/container/build-image builds.
DEFAULT_IMAGE = "localhost/boothop:latest"
CONFIG_DIR = "/etc/boothop"
CAPABILITIES = "NET_RAW,NET_BIND_SERVICE"


def config_path(name: str) -> str:
    """Where a contained daemon finds its configuration file."""
    return f"{CONFIG_DIR}/{name}.toml"


def _podman(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PODMAN, *args], capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL, check=False,
    )


def image_problem(image: str) -> str | None:
    """Why ``image`` cannot run here, or None."""
    try:
        found = _podman("image", "exists", image).returncode == 0
    except FileNotFoundError:
        return "podman not found (Debian packages podman and runc; `bash .ci/install`)"
    if not found:
        return f"image {image} not found (build it with config/container/build-image)"
    return None


def image_user(image: str) -> tuple[int, int]:
    """The image's numeric ``uid:gid`` (its USER)."""
    completed = _podman("image", "inspect", "--format", "{{.Config.User}}", image)
    user, _, group = completed.stdout.strip().partition(":")
    return int(user or 0), int(group or user or 0)


def cid_file(workdir: Path, name: str) -> Path:
    return workdir / f"{name}.cid"


def run_argv(
    image: str, namespace: str, name: str, workdir: Path, argv: Sequence[str]
) -> list[str]:
    """``podman run`` of ``argv`` (a command of the image) in the lab namespace ``namespace``."""
    mounts = ["--volume", f"{workdir}:{workdir}"]
    config = workdir / f"{name}.toml"
    if config.exists():
        mounts += ["--volume", f"{config}:{config_path(name)}:ro"]
    return [
        *PODMAN, "run", "--rm", "--name", f"{namespace}-{name}",
        "--cidfile", str(cid_file(workdir, name)),
        "--network", f"ns:{NETNS_DIR / namespace}",
        "--cap-drop=all", f"--cap-add={CAPABILITIES}", *LIMITS, *mounts,
        image, *argv,
    ]


def remove(workdir: Path, name: str, grace: int = 2) -> None:
    """Remove the container ``<workdir>/<name>.cid`` names (stopping it first), if any."""
    path = cid_file(workdir, name)
    try:
        container = path.read_text().strip()
    except FileNotFoundError:
        return
    if container:
        _podman("rm", "--force", "--ignore", "--time", str(grace), container)
    path.unlink()


def recorded(workdir: Path) -> list[str]:
    """The daemons that have a container ID file in ``workdir``."""
    return sorted(path.stem for path in workdir.glob("*.cid"))
