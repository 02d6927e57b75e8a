"""The relay's trust boundaries under attack, boothop beside ISC dhcrelay in the same set-up.

```
 clienta ──[LAN a]── bhta0 ┐
            10.72.1.1      ├ router (relay)  bhtu0 ──[LAN s]── server 10.72.100.10 (:67)
 clientb ──[LAN b]── bhtb0 ┘ 10.72.100.1                        + victim 10.72.100.20 (:68)
            10.72.2.1
```

The test plays the attackers and the server with sockets in the namespaces: a host on LAN a
sends replies with the server's address as source (a packet socket, its own IP header); the
server sends replies whose circuit-id disagrees with giaddr and whose ciaddr is a host on the
server LAN. Each row of ``EXPECTED`` says where a reply went; boothop drops and counts what
dhcrelay delivers. The router runs without reverse-path filtering (asymmetric routing is common
on routers): the relay itself must refuse a spoofed reply.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import time
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from conftest import relay_program, require_system

from boothop.relay.lab.processes import ProcessRunner, wait_for
from boothop.relay.lab.topology import Host, Lan, Port, Route, Topology, reap_stale, sysctl
from boothop.relay.sockets import ETH_P_IP, ipv4_udp
from boothop.relay.wire import AgentInfo, AgentSub, DhcpMessage, MessageType, Op, Opt, encode

pytestmark = pytest.mark.system

PREFIX = "bht"
ROUTER_A, ROUTER_B, ROUTER_UP = "10.72.1.1", "10.72.2.1", "10.72.100.1"
SERVER, VICTIM = "10.72.100.10", "10.72.100.20"
CLIENT_A_MAC, CLIENT_B_MAC = bytes.fromhex("02720000010a"), bytes.fromhex("02720000020a")
QUIET = 0.8  # seconds to wait for a packet that must not come

#: Where each crafted reply went: the LAN it was delivered on, "victim", or None (dropped), by
#: implementation and whether interfaces have roles (-id/-iu) or none (every interface, both).
#: dhcrelay ignores ciaddr (it sends to yiaddr, here 0.0.0.0, at chaddr on LAN a).
EXPECTED: dict[tuple[str, bool], dict[str, str | None]] = {
    ("boothop", True): {"spoof-cross": None, "spoof-same": None, "mismatch": None,
                        "reflect": None},
    ("boothop", False): {"spoof-cross": None, "spoof-same": None, "mismatch": None,
                         "reflect": None},
    ("dhcrelay", True): {"spoof-cross": None, "spoof-same": None, "mismatch": "b",
                         "reflect": "a"},
    ("dhcrelay", False): {"spoof-cross": "b", "spoof-same": "a", "mismatch": "b",
                          "reflect": "a"},
}


@contextlib.contextmanager
def inside(namespace: str) -> Iterator[None]:
    from pyroute2 import netns

    netns.pushns(namespace)
    try:
        yield
    finally:
        netns.popns()


def topology() -> Topology:
    return Topology(f"{PREFIX}-{secrets.token_hex(3)}", [
        Host("router", forwarding=True), Host("clienta"), Host("clientb"),
        Host("server", routes=(Route("10.72.0.0/16", ROUTER_UP),)),
    ], [
        Lan("a", (Port("router", "bhta0", f"{ROUTER_A}/24"),
                  Port("clienta", "bhtca0", mac=CLIENT_A_MAC.hex(":")))),
        Lan("b", (Port("router", "bhtb0", f"{ROUTER_B}/24"),
                  Port("clientb", "bhtcb0", mac=CLIENT_B_MAC.hex(":")))),
        Lan("s", (Port("router", "bhtu0", f"{ROUTER_UP}/24"),
                  Port("server", "bhts0", f"{SERVER}/24"))),
    ])


class Sockets:
    def __init__(self) -> None:
        self.all: list[socket.socket] = []

    def open(self, namespace: str, family: int, kind: int, proto: int = 0) -> socket.socket:
        with inside(namespace):
            sock = socket.socket(family, kind, proto)
        self.all.append(sock)
        return sock

    def close(self) -> None:
        for sock in self.all:
            sock.close()


def reply(xid: int, giaddr: str, circuit: bytes, **fields: object) -> bytes:
    agent = AgentInfo(((AgentSub.CIRCUIT_ID, circuit),)).encode()
    message = DhcpMessage(op=Op.BOOTREPLY, xid=xid, hops=1, chaddr=CLIENT_B_MAC + bytes(10),
                          giaddr=IPv4Address(giaddr), flags=0x8000,
                          options=((Opt.MESSAGE_TYPE, bytes([MessageType.ACK])),
                                   (Opt.SERVER_ID, IPv4Address(SERVER).packed),
                                   (Opt.RELAY_AGENT_INFO, agent)))
    return encode(message.replace(**fields))


def received_xids(sock: socket.socket, packet_socket: bool) -> set[int]:
    """The xids of the DHCP replies that reached ``sock`` within QUIET seconds."""
    xids: set[int] = set()
    deadline = time.monotonic() + QUIET
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data = sock.recv(4096)
        except TimeoutError:
            break
        if packet_socket:
            if data[9] != socket.IPPROTO_UDP or int.from_bytes(data[22:24], "big") != 68:
                continue
            data = data[28:]
        if len(data) >= 8 and data[0] == Op.BOOTREPLY:
            xids.add(int.from_bytes(data[4:8], "big"))
    return xids


@pytest.mark.parametrize("roles", [True, False], ids=["roles", "no-roles"])
@pytest.mark.parametrize("implementation", ["boothop", "dhcrelay"])
def test_spoofed_crossed_and_reflected_replies(
    implementation: str, roles: bool, tmp_path: Path
) -> None:
    require_system()
    program = relay_program(implementation)
    reap_stale(PREFIX)
    net = topology()
    runner = ProcessRunner(tmp_path / "logs")
    sockets = Sockets()
    stats = tmp_path / "stats.json"
    try:
        net.up()
        for key in ("all", "default", "bhta0", "bhtb0", "bhtu0"):
            sysctl(net.netns("router"), f"net/ipv4/conf/{key}/rp_filter", "0")
        interfaces = ["-id", "bhta0", "-id", "bhtb0", "-iu", "bhtu0"] if roles else []
        if implementation == "dhcrelay":
            argv = [program, "-d", "-4", "-a", "-pf", str(tmp_path / "dhcrelay.pid"),
                    *interfaces, SERVER]
        else:
            argv = [program, "-d", *interfaces, "-a", "--stats-file", str(stats),
                    "--log-format", "json", SERVER]
        relay = runner.start(net.netns("router"), argv, implementation)

        def listening() -> bool:
            ss = ["ss", "-Hnul", "sport = :67"]
            return bool(runner.run(net.netns("router"), ss, timeout=10).stdout.strip())

        assert wait_for(lambda: listening() or not relay.running(), 10), relay.output()
        assert relay.running(), relay.output()

        lan = {}
        for name, ns, ifname in (("a", "clienta", "bhtca0"), ("b", "clientb", "bhtcb0")):
            lan[name] = sockets.open(net.netns(ns), socket.AF_PACKET, socket.SOCK_DGRAM,
                                     socket.htons(ETH_P_IP))
            lan[name].bind((ifname, ETH_P_IP))
        attacker = lan["a"]
        router_a_mac = bytes.fromhex(net.mac("router", "bhta0").replace(":", ""))
        server = sockets.open(net.netns("server"), socket.AF_INET, socket.SOCK_DGRAM)
        server.bind((SERVER, 67))
        ip_addr = ["ip", "addr", "add", f"{VICTIM}/24", "dev", "bhts0"]
        assert runner.run(net.netns("server"), ip_addr, timeout=10).returncode == 0
        victim = sockets.open(net.netns("server"), socket.AF_INET, socket.SOCK_DGRAM)
        victim.bind((VICTIM, 68))

        def spoof(payload: bytes) -> None:
            """From LAN a, with the server's address as source, to the relay's LAN a address."""
            frame = ipv4_udp(IPv4Address(SERVER), IPv4Address(ROUTER_A), 67, 67, payload)
            attacker.sendto(frame, ("bhtca0", ETH_P_IP, 0, 0, router_a_mac))

        sent = {
            # A host on LAN a, as the server, names LAN b by giaddr and circuit-id.
            "spoof-cross": (0x7201, lambda xid: spoof(reply(xid, ROUTER_B, b"bhtb0"))),
            # ... and its own LAN.
            "spoof-same": (0x7202, lambda xid: spoof(reply(xid, ROUTER_A, b"bhta0"))),
            # The server: giaddr LAN a, circuit-id LAN b.
            "mismatch": (0x7203, lambda xid: server.sendto(
                reply(xid, ROUTER_A, b"bhtb0"), (ROUTER_A, 67))),
            # The server answers an INFORM whose ciaddr is a host on the server LAN.
            "reflect": (0x7204, lambda xid: server.sendto(
                reply(xid, ROUTER_A, b"bhta0", flags=0, ciaddr=IPv4Address(VICTIM)),
                (ROUTER_A, 67))),
        }
        for xid, send in sent.values():
            send(xid)
        seen = {"a": received_xids(lan["a"], True), "b": received_xids(lan["b"], True),
                "victim": received_xids(victim, False)}
        where = {case: next((name for name, xids in seen.items() if xid in xids), None)
                 for case, (xid, _) in sent.items()}
        assert where == EXPECTED[implementation, roles], relay.output()

        if implementation == "boothop":
            expected = {"reply-wrong-interface": 2, "circuit-mismatch": 1, "ciaddr-off-link": 1}
            wait_for(lambda: stats.exists()
                     and json.loads(stats.read_text())["dropped"] == expected, 5)
            counters = json.loads(stats.read_text())
            assert counters["dropped"] == expected and counters["delivered"] == {}
            assert counters["kernel_drops"] == 0  # the shell's SO_RXQ_OVFL count is in the file
    finally:
        try:
            sockets.close()
            runner.stop_all()
        finally:
            net.down()
