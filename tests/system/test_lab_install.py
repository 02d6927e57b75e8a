"""boothop-lab as an installed program: a fresh, non-editable install into a temporary venv, run
from an empty directory with neither the source tree nor the venv on its paths.

The lab file has no QEMU client (a udhcpc and a BOOTP client), so ``up``, ``status``, ``down`` and
the demo take seconds. The test's prefix is ``bhli<4 random>``; namespaces and processes it leaves,
and the namespace it makes by hand, are removed in ``finally`` by name and PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import string
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require_system
from installs import fresh_install

from boothop.relay.lab.topology import namespace_pids, remove_recorded

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[2]

LAB_TOML = """\
prefix = "{prefix}"
relay = "boothop"
client_timeout = 30

[servers]
router = "10.92.0.1/24"
dhcp = "10.92.0.10/24"
pxe = "10.92.0.20/24"

[[subnet]]
name = "a"
router = "10.92.1.1/24"
pool = ["10.92.1.100", "10.92.1.199"]

[[client]]
name = "dhcp1"
kind = "udhcpc"
subnet = "a"
mac = "02:00:00:92:01:01"

[[client]]
name = "bootp1"
kind = "bootp"
subnet = "a"
mac = "02:00:00:92:01:10"
address = "10.92.1.10"
"""


def _namespaces(prefix: str) -> list[str]:
    listed = subprocess.run(
        ["ip", "netns", "list"], check=True, capture_output=True, text=True, timeout=10
    )
    lines = listed.stdout.splitlines()
    return [line.split()[0] for line in lines if line.startswith(f"{prefix}-")]


def _delete_namespace(name: str) -> None:
    subprocess.run(["ip", "netns", "delete", name], check=False, capture_output=True, timeout=10)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin directory of a venv with boothop installed from this tree (not editable)."""
    require_system("busybox")
    return fresh_install(tmp_path_factory.mktemp("install") / "venv")


@pytest.fixture
def prefix() -> Iterator[str]:
    """The test's lab prefix; whatever of it is left afterwards is removed, then reported."""
    alphabet = string.ascii_lowercase + string.digits
    name = "bhli" + "".join(secrets.choice(alphabet) for _ in range(4))
    try:
        yield name
    finally:
        leftover = _namespaces(name)
        remove_recorded(name)
        for namespace in _namespaces(name):
            for pid in namespace_pids(namespace):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            _delete_namespace(namespace)
        shutil.rmtree(Path("/run/boothop-lab") / name, ignore_errors=True)
    assert leftover == [], f"namespaces left behind: {leftover}"


def _run(bin_dir: Path, cwd: Path, state: Path, *args: str, timeout: float = 120) -> str:
    """Run the installed boothop-lab as a person would: PATH without the venv, no PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if p and Path(p) != bin_dir
    )
    env["XDG_STATE_HOME"] = str(state)
    completed = subprocess.run(
        [str(bin_dir / "boothop-lab"), *args],
        check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    command = " ".join(args)
    assert completed.returncode == 0, f"{command}:\n{completed.stdout}{completed.stderr}"
    return completed.stdout


def test_installed_lab_runs_from_an_empty_directory_and_leaves_it_empty(
    installed: Path, prefix: str, tmp_path: Path
) -> None:
    cwd, state = tmp_path / "cwd", tmp_path / "state"
    cwd.mkdir()
    lab_file = tmp_path / "lab.toml"
    lab_file.write_text(LAB_TOML.format(prefix=prefix))
    handmade = f"{prefix}-handmade"
    try:
        assert "--run-dir" in _run(installed, cwd, state, "demo", "--help")
        assert "boothop-lab/runs" in _run(installed, cwd, state, "--help")
        # The default lab file is found from the install.
        assert json.loads(_run(installed, cwd, state, "status"))["prefix"] == "bhlab"

        subprocess.run(["ip", "netns", "add", handmade], check=True, timeout=10)
        _run(installed, cwd, state, "-c", str(lab_file), "up")
        status = json.loads(_run(installed, cwd, state, "-c", str(lab_file), "status"))
        assert status["built"] and all(status["daemons"].values()), status
        assert handmade not in status["namespaces"]
        _run(installed, cwd, state, "-c", str(lab_file), "down")
        assert _namespaces(prefix) == [handmade]
        _delete_namespace(handmade)

        output = _run(installed, cwd, state, "-c", str(lab_file), "demo", timeout=240)
        run_dir = Path(output.strip().splitlines()[-1].removeprefix("Run directory: "))
        assert run_dir.parent == state / "boothop-lab" / "runs", output
        assert run_dir.name.endswith(f"-{prefix}")
        assert "<svg" in (run_dir / "report.html").read_text()
        assert (run_dir / "logs" / "relay.log").is_file()
        assert "FAILED" not in output, output
    finally:
        _delete_namespace(handmade)
    assert list(cwd.iterdir()) == []
    assert _namespaces(prefix) == []
