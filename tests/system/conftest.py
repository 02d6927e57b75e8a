"""Fixtures for the end-to-end relay tests: a routed lab in network namespaces.

```
 clienta ──[LAN a]── lana0 ┐                  ┌─ srv0  server  (kea-dhcp4, 10.41.100.10)
 clientb ──[LAN b]── lanb0 ┤ router (relay)  up0 ──[LAN srv]──┤
                           ┘ 10.41.100.1      └─ hlp0  helper  (UDP recorder :67, 10.41.100.20)
```

Each test gets its own namespaces, named ``bhr-<random>-<host>``, torn down (and every process
stopped by PID) in ``finally`` blocks, whatever the test does.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import Pool, start_kea, start_recorder

from boothop.relay.lab.locations import find_program
from boothop.relay.lab.processes import Process, ProcessRunner, wait_for
from boothop.relay.lab.topology import Host, Lan, Port, Route, Topology, reap_stale

BASE = "bhr"
SERVER = "10.41.100.10"
HELPER = "10.41.100.20"
ROUTER_UP = "10.41.100.1"
UPSTREAM = "up0"
TOOLS = ("ip", "ss", "tcpdump", "kea-dhcp4", "dhclient", "busybox", "ethtool")


@dataclasses.dataclass(frozen=True)
class ClientLan:
    """One client LAN: the router's interface and address on it, the client host, its pool."""

    name: str
    router_if: str
    router_address: str
    client_host: str
    client_mac: str
    pool: Pool


LANS = {
    "a": ClientLan("a", "lana0", "10.41.1.1", "clienta", "02:41:00:00:01:10",
                   Pool("10.41.1.0/24", "10.41.1.100", "10.41.1.199", "10.41.1.1")),
    "b": ClientLan("b", "lanb0", "10.41.2.1", "clientb", "02:41:00:00:02:10",
                   Pool("10.41.2.0/24", "10.41.2.100", "10.41.2.199", "10.41.2.1")),
}


#: boothop's own commands: the programs under test, never a reason to skip.
OURS = ("boothop-relay", "boothop-server", "boothop-lab")


def need(binary: str) -> str:
    """The path of a program the test runs (boothop's own beside the running Python first);
    skip, with the reason, when a peer is not installed, fail when one of ours is missing."""
    path = find_program(binary)
    if path is None:
        if binary in OURS:
            pytest.fail(f"{binary} is not installed: run `bash .ci/install`")
        pytest.skip(f"{binary} is not installed")
    return path


def require_system(*binaries: str) -> None:
    """Skip, with the reason, when namespaces or a needed program are unavailable."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    if not os.path.exists("/proc/self/ns/net"):
        pytest.skip("kernel without network namespaces")
    for binary in ("ip", *binaries):
        need(binary)
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, timeout=10)
    if probe.returncode != 0:
        pytest.skip("`ip netns` unavailable")


def lab_topology(prefix: str) -> Topology:
    to_lan = Route("10.41.0.0/16", ROUTER_UP)
    hosts = [
        Host("router", forwarding=True),
        Host("server", routes=(to_lan,)),
        Host("helper", routes=(to_lan,)),
        Host("clienta"),
        Host("clientb"),
    ]
    lans = [
        Lan(lan.name, (Port("router", lan.router_if, f"{lan.router_address}/24"),
                       Port(lan.client_host, "eth0", mac=lan.client_mac)))
        for lan in LANS.values()
    ]
    lans.append(Lan("srv", (Port("router", UPSTREAM, f"{ROUTER_UP}/24"),
                            Port("server", "srv0", f"{SERVER}/24"),
                            Port("helper", "hlp0", f"{HELPER}/24"))))
    return Topology(prefix, hosts, lans)


@dataclasses.dataclass
class Lab:
    topology: Topology
    runner: ProcessRunner
    workdir: Path
    recorded: Path
    kea: Process
    lans: dict[str, ClientLan] = dataclasses.field(default_factory=lambda: dict(LANS))
    server: str = SERVER
    helper: str = HELPER
    router_up: str = ROUTER_UP

    def ns(self, host: str) -> str:
        return self.topology.netns(host)


def wire_checksums(netns: str, port: str) -> None:
    """Make ``port`` send complete UDP checksums, as a NIC puts on the wire (a veth leaves them
    to be completed: CHECKSUM_PARTIAL, which the kernel datapath passes up, for it cannot
    complete them)."""
    subprocess.run(["ip", "netns", "exec", netns, "ethtool", "-K", port, "tx", "off"],
                   check=True, capture_output=True, timeout=20)


@pytest.fixture(scope="session")
def _reaped() -> None:
    """Remove topologies left by crashed earlier runs (their owner PID is gone)."""
    require_system(*TOOLS)
    reap_stale(BASE)


@pytest.fixture
def lab(_reaped: None, tmp_path: Path) -> Iterator[Lab]:
    require_system(*TOOLS)
    topology = lab_topology(f"{BASE}-{secrets.token_hex(3)}")
    runner = ProcessRunner(tmp_path / "logs")
    try:
        topology.up()
        for host, port in (("server", "srv0"), ("helper", "hlp0")):
            wire_checksums(topology.netns(host), port)
        kea = start_kea(runner, topology.netns("server"), tmp_path / "kea", "srv0",
                        [lan.pool for lan in LANS.values()])
        recorded = tmp_path / "helper.recorded"
        start_recorder(runner, topology.netns("helper"), recorded)
        yield Lab(topology, runner, tmp_path, recorded, kea)
    finally:
        try:
            runner.stop_all()
        finally:
            topology.down()


# -- the relay under test --------------------------------------------------------------------


def _boothop_relay() -> str | None:
    path = find_program("boothop-relay")
    if path is None:
        return None
    try:
        ok = subprocess.run([path, "--help"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return None
    return path if ok else None


def relay_program(implementation: str) -> str:
    """The relay's executable; a failure when boothop-relay is missing or broken (it is the
    program under test, never a reason to skip)."""
    if implementation == "dhcrelay":
        require_system("dhcrelay")
        return "dhcrelay"
    path = _boothop_relay()
    if path is None:
        pytest.fail("boothop-relay is not installed or `boothop-relay --help` fails: "
                    "run `bash .ci/install`")
    return path


def relay_argv(implementation: str, program: str, workdir: Path) -> list[str]:
    """dhcrelay-style command line: -id per client LAN, -iu upstream, -a, both helpers; boothop
    with ``--datapath`` user or kernel (``boothop-user``, ``boothop-kernel``) and a stats file."""
    interfaces = [arg for lan in LANS.values() for arg in ("-id", lan.router_if)]
    interfaces += ["-iu", UPSTREAM]
    if implementation == "dhcrelay":
        pidfile = str(workdir / "dhcrelay.pid")
        return [program, "-d", "-4", "-a", "-pf", pidfile, *interfaces, SERVER, HELPER]
    datapath = implementation.removeprefix("boothop-") if "-" in implementation else "user"
    return [program, "-d", *interfaces, "-a", "--datapath", datapath,
            "--stats-file", str(workdir / "relay-stats.json"), SERVER, HELPER]


def kernel_relayed(workdir: Path) -> int:
    """How many datagrams boothop-relay's kernel datapath relayed, from its stats file."""
    stats = json.loads((workdir / "relay-stats.json").read_text())
    assert stats["datapath"]["mode"] == "kernel", stats["datapath"]
    return int(stats["datapath"]["received"]["kernel"])


def _listening_on_67(lab: Lab) -> bool:
    result = lab.runner.run(lab.ns("router"), ["ss", "-Hnul", "sport = :67"], timeout=10)
    return bool(result.stdout.strip())


@pytest.fixture(params=["dhcrelay", "boothop-user", "boothop-kernel"])
def relay(request: pytest.FixtureRequest) -> Iterator[Process]:
    """The relay running in the router namespace (stopped by the lab fixture). boothop runs
    with each datapath; with the kernel's, the test fails unless the kernel relayed some."""
    program = relay_program(request.param.split("-")[0])
    lab: Lab = request.getfixturevalue("lab")
    argv = relay_argv(request.param, program, lab.workdir)
    process = lab.runner.start(lab.ns("router"), argv, f"relay-{request.param}")
    if not wait_for(lambda: _listening_on_67(lab) or not process.running(), 10):
        pytest.fail(f"{request.param} did not bind port 67:\n{process.output()}")
    if not process.running():
        pytest.fail(f"{request.param} exited:\n{process.output()}")
    yield process
    if request.param == "boothop-kernel":
        assert wait_for(lambda: kernel_relayed(lab.workdir) > 0, 2), process.output()[-3000:]
