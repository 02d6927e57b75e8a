"""The daemons as their systemd units run them: an unprivileged user with only the capabilities
the units grant (setpriv), and readiness, watchdog, reload and stop told to a NOTIFY_SOCKET.

A client leases through boothop-relay (the unit's capabilities: the kernel datapath runs; or
only CAP_NET_RAW and CAP_NET_BIND_SERVICE: the user path, saying why) from boothop-server
(CAP_NET_BIND_SERVICE alone), both as nobody; without a capability each exits 1 naming it.
Namespaces are named ``bhs-<random>-<host>`` and removed, with every process (by PID), whatever
the test does.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import LANS, SERVER, UPSTREAM, lab_topology, need, require_system
from installs import fresh_install
from servers import bound_address, start_dhclient

from boothop.relay.lab.processes import Process, ProcessRunner, wait_for
from boothop.relay.lab.topology import reap_stale

pytestmark = pytest.mark.system

BASE = "bhs"
NOBODY = 65534
#: linux/capability.h: the bits of /proc/PID/status CapEff.
CAP_BITS = {"net_bind_service": 10, "net_admin": 12, "net_raw": 13, "perfmon": 38, "bpf": 39}
UNITS = Path(__file__).resolve().parents[2] / "config" / "systemd"
#: The user path's capabilities; the unit adds the kernel datapath's.
RELAY_USER_CAPS = ("net_raw", "net_bind_service")
SERVER_CAPS = ("net_bind_service",)


def unit_capabilities(unit: str) -> tuple[str, ...]:
    """The capabilities a unit file grants (AmbientCapabilities=), as setpriv names them."""
    for line in (UNITS / unit).read_text().splitlines():
        if line.startswith("AmbientCapabilities="):
            return tuple(cap.removeprefix("CAP_").lower() for cap in line.split("=", 1)[1].split())
    raise AssertionError(f"{unit} grants no capabilities")


RELAY_CAPS = unit_capabilities("boothop-relay.service")


def capability_mask(caps: tuple[str, ...]) -> int:
    return sum(1 << CAP_BITS[cap] for cap in caps)
LAN = LANS["a"]
TIMEOUT = 30.0


def setpriv(caps: tuple[str, ...], argv: list[str]) -> list[str]:
    """``argv`` as nobody with exactly ``caps`` (inheritable, ambient, bounding), as a unit's
    DynamicUser=, AmbientCapabilities= and CapabilityBoundingSet= run it."""
    spec = ",".join(("-all", *(f"+{cap}" for cap in caps)))
    return [need("setpriv"), "--reuid=nobody", "--regid=nogroup", "--clear-groups",
            f"--inh-caps={spec}", f"--ambient-caps={spec}", f"--bounding-set={spec}", *argv]


class World:
    """The lab topology (no kea: boothop-server serves), a directory nobody can read, a state
    directory nobody owns (StateDirectory=), and the processes, stopped by PID."""

    def __init__(self, root: Path, bin_dir: Path) -> None:
        self.root = root
        self.topology = lab_topology(f"{BASE}-{secrets.token_hex(3)}")
        self.runner = ProcessRunner(root / "logs")
        self.relay = str(bin_dir / "boothop-relay")
        self.server = str(bin_dir / "boothop-server")
        state = root / "state"
        state.mkdir()
        os.chown(state, NOBODY, NOBODY)
        self.config = root / "server.toml"
        self.config.write_text(f'[dhcp]\nlease_db = "{state}/leases.sqlite3"\n'
                               f'[[dhcp.subnets]]\nsubnet = "{LAN.pool.subnet}"\n'
                               f'pools = ["{LAN.pool.first}-{LAN.pool.last}"]\n'
                               f'options = {{ routers = ["{LAN.router_address}"] }}\n')

    def ns(self, host: str) -> str:
        return self.topology.netns(host)

    def relay_argv(self, *extra: str) -> list[str]:
        return [self.relay, "-d", "-id", LAN.router_if, "-iu", UPSTREAM, "-a", *extra, SERVER]

    def server_argv(self) -> list[str]:
        return [self.server, "run", "-c", str(self.config), "--log-format", "json"]

    def start(self, host: str, argv: list[str], name: str, port: int = 67,
              env: dict[str, str] | None = None) -> Process:
        process = self.runner.start(self.ns(host), argv, name, env=env)
        if not wait_for(lambda: self.listening(host, port) or not process.running(), 15):
            pytest.fail(f"{name} did not bind port {port}:\n{process.output()}")
        if not process.running():
            pytest.fail(f"{name} exited:\n{process.output()}")
        return process

    def listening(self, host: str, port: int) -> bool:
        result = self.runner.run(self.ns(host), ["ss", "-Hnul", f"sport = :{port}"], timeout=10)
        return bool(result.stdout.strip())


@pytest.fixture(scope="module")
def readable_install() -> Iterator[Path]:
    """boothop installed (not editable) where nobody can read it, wherever the checkout is: the
    bin directory. Its dependencies are the running interpreter's (.ci/install's /opt/boothop
    is readable by all)."""
    root = Path(tempfile.mkdtemp(prefix="boothop-install-"))
    root.chmod(0o755)
    try:
        yield fresh_install(root / "venv")
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def world(readable_install: Path) -> Iterator[World]:
    require_system("ss", "setpriv", "dhclient")
    reap_stale(BASE)
    root = Path(tempfile.mkdtemp(prefix="boothop-systemd-"))
    root.chmod(0o755)  # pytest's tmp_path is private to root; nobody reads this one
    try:
        world = World(root, readable_install)
        probe = subprocess.run(setpriv(RELAY_CAPS, [world.relay, "--version"]),
                               capture_output=True, text=True, timeout=30)
        if probe.returncode != 0:
            pytest.skip(f"{world.relay} cannot run as nobody (its Python or its dependencies "
                        f"are not readable by others; install as .ci/install does):\n"
                        f"{probe.stderr}")
        try:
            world.topology.up()
            yield world
        finally:
            try:
                world.runner.stop_all()
            finally:
                world.topology.down()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def credentials(pid: int) -> tuple[int, int]:
    """(real uid, effective capability set) of a running process."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text()
                  .splitlines())
    return int(fields["Uid"].split()[0]), int(fields["CapEff"].strip(), 16)


@pytest.mark.parametrize(("relay_caps", "datapath"), [
    (RELAY_CAPS, "kernel"), (RELAY_USER_CAPS, "user")], ids=["unit", "no-bpf"])
def test_a_client_leases_through_relay_and_server_running_with_only_their_capabilities(
        world: World, relay_caps: tuple[str, ...], datapath: str) -> None:
    server = world.start("server", setpriv(SERVER_CAPS, world.server_argv()), "server")
    relay = world.start("router", setpriv(relay_caps, world.relay_argv("--log-format", "json")),
                        "relay")
    assert credentials(server.pid) == (NOBODY, capability_mask(SERVER_CAPS))
    assert credentials(relay.pid) == (NOBODY, capability_mask(relay_caps))
    chosen = [json.loads(line) for line in relay.output().splitlines()
              if '"relay.datapath"' in line]
    assert [event["datapath"] for event in chosen] == [datapath], relay.output()
    if datapath == "user":
        assert "needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN" in chosen[0]["reason"], chosen

    _, events = start_dhclient(world.runner, world.ns(LAN.client_host), "eth0",
                               world.root / "clients", "dhclient")
    bound = wait_for(lambda: bound_address(events), TIMEOUT, interval=0.1)
    logs = "\n".join(f"--- {p.name}\n{p.output()[-3000:]}" for p in world.runner.processes)
    assert bound, f"no lease within {TIMEOUT} s\n{logs}"
    address = bound_address(events)
    assert address is not None and LAN.pool.contains(address), address
    assert relay.running() and server.running(), logs


@pytest.mark.parametrize(("daemon", "caps", "message"), [
    ("relay", (), "binding UDP port 67 on 0.0.0.0 needs CAP_NET_BIND_SERVICE (ports below 1024)"),
    ("relay", ("net_bind_service",), "a packet socket (to deliver replies to clients without an "
     "address) needs CAP_NET_RAW"),
    ("server", (), "binding UDP port 67 on 0.0.0.0 needs CAP_NET_BIND_SERVICE (ports below 1024)"),
])
def test_a_missing_capability_is_named_and_exits_1(
        world: World, daemon: str, caps: tuple[str, ...], message: str) -> None:
    argv = world.relay_argv() if daemon == "relay" else world.server_argv()
    result = world.runner.run(world.ns("router" if daemon == "relay" else "server"),
                              setpriv(caps, argv), timeout=30)
    assert result.returncode == 1, result
    assert result.stderr.splitlines()[-1] == f"boothop-{daemon}: {message}", result.stderr
    assert "Traceback" not in result.stderr


class Manager:
    """The service manager's end of sd_notify: a datagram socket at $NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        path.chmod(0o777)  # the daemon runs as nobody
        self.seen: list[str] = []

    def expect(self, state: str, timeout: float = 10.0) -> list[str]:
        """Messages up to and including the first that starts with ``state``, within
        ``timeout`` seconds however many others (WATCHDOG=1) arrive meanwhile."""
        deadline = time.monotonic() + timeout
        got: list[str] = []
        while True:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.001))
            try:
                message = self.sock.recv(4096).decode()
            except TimeoutError:
                pytest.fail(f"no {state} within {timeout} s; got {got}")
            got.append(message)
            if message.startswith(state):
                return got


@pytest.mark.parametrize("daemon", ["relay", "server"])
def test_ready_after_the_port_is_bound_watchdog_reload_and_stop(world: World,
                                                                daemon: str) -> None:
    manager = Manager(world.root / "notify")
    env = {"NOTIFY_SOCKET": str(world.root / "notify"), "WATCHDOG_USEC": "400000"}
    host, port = ("router", 1067) if daemon == "relay" else ("server", 67)
    argv = (setpriv(RELAY_CAPS, world.relay_argv("-p", str(port))) if daemon == "relay"
            else setpriv(SERVER_CAPS, world.server_argv()))
    process = world.runner.start(world.ns(host), argv, daemon, env=env)
    try:
        manager.expect("READY=1")
        assert world.listening(host, port), process.output()
        watchdog = manager.expect("WATCHDOG=1") + manager.expect("WATCHDOG=1")
        assert not any(m.startswith(("READY", "STOPPING")) for m in watchdog), watchdog
        if daemon == "relay":  # the server's SIGHUP reload is not in this branch
            os.kill(process.pid, signal.SIGHUP)
            reload = [m for m in manager.expect("READY=1") if m != "WATCHDOG=1"]
            assert [m.split("\n")[0] for m in reload] == ["RELOADING=1", "READY=1"], reload
        os.kill(process.pid, signal.SIGTERM)
        manager.expect("STOPPING=1")
        assert process.wait(10) == 0, process.output()
    finally:
        manager.sock.close()

