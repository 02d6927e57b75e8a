"""boothop-lab with --containers: the relay and the servers as podman containers of boothop's
image (config/container/), in the lab's namespaces, booting a udhcpc and a BOOTP client.

The image is built by config/container/build-image from this checkout, once per machine and
source state (the script skips the build when the image carries the current source hash), and
kept: it is a cache, like pip's. Each test has its own lab prefix ``bhlc<4 random>`` and removes
its namespaces, processes and containers (by the IDs the lab recorded) whatever happens.
"""

from __future__ import annotations

import json
import os
import secrets
import string
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require_system

from boothop.relay.lab import containers
from boothop.relay.lab.lab import Lab
from boothop.relay.lab.servers import read_events
from boothop.relay.lab.spec import LabSpec, load_lab
from boothop.relay.lab.topology import remove_recorded

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "config" / "container" / "build-image"
#: The first build on a machine makes a Debian rootfs and the wheels (about a minute here).
BUILD_TIMEOUT = 900

LAB_TOML = """\
prefix = "{prefix}"
relay = "boothop"
client_timeout = 30

[servers]
router = "10.95.0.1/24"
dhcp = "10.95.0.10/24"
pxe = "10.95.0.20/24"

[[subnet]]
name = "a"
router = "10.95.1.1/24"
pool = ["10.95.1.100", "10.95.1.199"]

[[client]]
name = "dhcp1"
kind = "udhcpc"
subnet = "a"
mac = "02:00:00:95:01:01"

[[client]]
name = "bootp1"
kind = "bootp"
subnet = "a"
mac = "02:00:00:95:01:10"
address = "10.95.1.10"
"""


@pytest.fixture(scope="module")
def image() -> str:
    require_system("podman", "runc", "mmdebstrap")
    built = subprocess.run(
        [str(BUILD), containers.DEFAULT_IMAGE], capture_output=True, text=True,
        timeout=BUILD_TIMEOUT, env={**os.environ, "PYTHON": sys.executable}, check=False,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    assert built.stdout.strip() == containers.DEFAULT_IMAGE
    return containers.DEFAULT_IMAGE


def test_the_image_carries_the_shipped_c_built_for_its_own_sources(image: str) -> None:
    """The image has no compiler: build-image builds the TFTP lock-step loop and the kernel
    datapath's C on the host, and the image's boothop finds each by the hash of its own source
    (a server there serves lock-step reads in C)."""
    shown = subprocess.run(
        [*containers.PODMAN, "run", "--rm", *containers.LIMITS, "--network", "none", image,
         "python", "-c",
         "import shutil\n"
         "from boothop.relay import compiled\n"
         "from boothop.server.tftp import native\n"
         "native.load()\n"
         "print(shutil.which('clang'), *(compiled.built_path(s).is_file() "
         "for s in compiled.SOURCES))"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert shown.stdout.split() == ["None", "True", "True", "True"]


def _containers(ids: list[str]) -> list[str]:
    """Those of ``ids`` that podman still knows."""
    listed = subprocess.run(
        [*containers.PODMAN, "ps", "--all", "--no-trunc", "--format", "{{.ID}}"],
        capture_output=True, text=True, timeout=30, check=True,
    )
    return [i for i in ids if i in listed.stdout.split()]


def _inspect(container: str) -> dict[str, object]:
    shown = subprocess.run(
        [*containers.PODMAN, "inspect", "--format", "json", container],
        capture_output=True, text=True, timeout=30, check=True,
    )
    return dict(json.loads(shown.stdout)[0])


@pytest.fixture
def spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LabSpec]:
    require_system("busybox", "podman")
    prefix = "bhlc" + "".join(
        secrets.choice(string.ascii_lowercase + string.digits) for _ in range(4)
    )
    path = tmp_path / "lab.toml"
    path.write_text(LAB_TOML.format(prefix=prefix))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    loaded = load_lab(path)
    lab = Lab(loaded)
    try:
        yield loaded
    finally:
        lab.down()  # stops and removes the containers the lab recorded, then the namespaces
        assert remove_recorded(prefix) == []


def test_demo_with_containers_boots_both_clients(image: str, spec: LabSpec, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    demo = subprocess.run(
        [sys.executable, "-m", "boothop.relay.lab", "-c", spec.path,
         "demo", "--containers", image, "--run-dir", str(run_dir)],
        capture_output=True, text=True, timeout=180, check=False,
    )
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
    table = [line.split() for line in demo.stdout.splitlines()]
    rows = {cells[0]: cells for cells in table if len(cells) == 8}  # client ... result
    assert rows["dhcp1"][3].startswith("10.95.1.") and rows["dhcp1"][-1] == "ok"
    assert rows["bootp1"][3] == "10.95.1.10" and rows["bootp1"][-1] == "ok"
    relay = {e.get("event") for e in read_events(run_dir / "logs" / "relay.log")}
    assert {"relay.started", "relay.request.forwarded", "relay.reply.delivered"} <= relay
    assert not Path(f"/run/boothop-lab/{spec.prefix}").exists()


def test_daemons_run_confined_and_stop_on_sigterm(image: str, spec: LabSpec) -> None:
    lab = Lab(spec, image=image)
    lab.up()
    recorded = {name: containers.cid_file(lab.workdir, name).read_text().strip()
                for name in containers.recorded(lab.workdir)}
    assert set(recorded) == {"dhcp", "pxe", "relay"}
    uid, gid = containers.image_user(image)
    assert uid != 0
    for name, container in recorded.items():
        shown = _inspect(container)
        config = shown["Config"]
        host_config = shown["HostConfig"]
        assert isinstance(config, dict) and isinstance(host_config, dict)
        assert config["User"] == f"{uid}:{gid}", name
        assert sorted(shown["EffectiveCaps"]) == ["CAP_NET_BIND_SERVICE", "CAP_NET_RAW"], name
        host = "router" if name == "relay" else name
        assert host_config["NetworkMode"] == f"ns:/run/netns/{lab.topology.netns(host)}"
    assert all(result.ok for result in lab.boot_clients())
    # SIGTERM to `podman run` reaches the daemon through tini, and it stops cleanly, at once.
    relay = next(p for p in lab.runner.processes if p.name == "relay")
    lab.stop_daemon("relay", grace=5)
    assert relay.popen.returncode == 0  # not killed
    events = read_events(lab.workdir / "logs" / "relay.log")
    assert any(e.get("event") == "relay.stopped" for e in events)
    assert _containers(list(recorded.values())) == [recorded["dhcp"], recorded["pxe"]]
    lab.down()
    assert _containers(list(recorded.values())) == []
