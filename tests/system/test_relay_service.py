"""The relay's shell, for real, in network namespaces (the full DHCP clients are in test_relay_e2e).

```
 client ──[LAN c]── bhnd0 ┐ router (boothop-relay)  bhnu0 ──[LAN s]── server (10.71.100.10/.11)
                10.71.1.1 ┘                         10.71.100.1
```

The relay runs as ``boothop-relay`` in the router namespace; the test plays client and server
with sockets it opens inside the other namespaces: the client sends and receives through a
packet socket (it has no address, like a real DHCP client), the server is a UDP socket on :67.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from conftest import require_system

from boothop.relay.sockets import ETH_P_IP, checksum, ipv4_udp
from boothop.relay.wire import AgentInfo, DhcpMessage, MessageType, Op, Opt, decode, encode

pytestmark = pytest.mark.system

PREFIX = "bhn"
CLIENT_MAC = bytes.fromhex("02710000010a")
ROUTER_DOWN = "10.71.1.1"
ROUTER_UP = "10.71.100.1"
SERVER = "10.71.100.10"
SERVER2 = "10.71.100.11"
YIADDR = "10.71.1.50"
RELAY_MAIN = "from boothop.relay.cli import main; raise SystemExit(main())"


@contextlib.contextmanager
def inside(namespace: str) -> Iterator[None]:
    """Open sockets inside a namespace: they stay there after the thread switches back."""
    from pyroute2 import netns

    netns.pushns(namespace)
    try:
        yield
    finally:
        netns.popns()


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True,
                          timeout=10).stdout


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Net:
    """The three namespaces, the test's sockets in them, and the relay process."""

    def __init__(self, tmp_path: Path) -> None:
        from boothop.relay.lab.topology import Host, Lan, Port, Route, Topology

        self.tmp = tmp_path
        self.topology = Topology(f"{PREFIX}-{secrets.token_hex(3)}", [
            Host("client"), Host("router", forwarding=True),
            Host("server", routes=(Route("10.71.0.0/16", ROUTER_UP),)),
        ], [
            Lan("c", (Port("router", "bhnd0", f"{ROUTER_DOWN}/24"),
                      Port("client", "bhnc0", mac=CLIENT_MAC.hex(":")))),
            Lan("s", (Port("router", "bhnu0", f"{ROUTER_UP}/24"),
                      Port("server", "bhns0", f"{SERVER}/24"))),
        ])
        self.sockets: list[socket.socket] = []
        self.relay: subprocess.Popen[bytes] | None = None
        self.stats = tmp_path / "stats.json"
        self.stderr = tmp_path / "relay.stderr"

    def ns(self, host: str) -> str:
        return self.topology.netns(host)

    def _keep(self, sock: socket.socket) -> socket.socket:
        self.sockets.append(sock)
        return sock

    def client_socket(self, ifname: str = "bhnc0", host: str = "client") -> socket.socket:
        with inside(self.ns(host)):
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
        sock.bind((ifname, ETH_P_IP))
        sock.settimeout(3)
        return self._keep(sock)

    def server_socket(self, address: str = SERVER) -> socket.socket:
        with inside(self.ns("server")):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((address, 67))
        sock.settimeout(3)
        return self._keep(sock)

    def start_relay(self, *args: str) -> None:
        argv = ["ip", "netns", "exec", self.ns("router"), sys.executable, "-c", RELAY_MAIN,
                "--stats-file", str(self.stats), "--log-format", "json", "--log-level", "debug",
                *args]
        with open(self.stderr, "wb") as err:
            self.relay = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
        wait_for(lambda: self.stats.exists() or self.relay.poll() is not None, 20, "relay start")
        assert self.relay.poll() is None, self.stderr.read_text()

    def counters(self) -> dict:
        return json.loads(self.stats.read_text())

    def logs(self) -> list[dict]:
        return [json.loads(line) for line in self.stderr.read_text().splitlines()
                if line.startswith("{")]

    def signal(self, signum: int) -> None:
        assert self.relay is not None
        os.kill(self.relay.pid, signum)

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        if self.relay is not None and self.relay.poll() is None:
            self.relay.kill()
            self.relay.wait(5)


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    require_system()
    net = Net(tmp_path)
    try:
        net.topology.up()
        yield net
    finally:
        try:
            net.close()
        finally:
            net.topology.down()


def discover(xid: int, *, broadcast: bool = False) -> DhcpMessage:
    return DhcpMessage(op=Op.BOOTREQUEST, xid=xid, chaddr=CLIENT_MAC + bytes(10),
                       flags=0x8000 if broadcast else 0,
                       options=((Opt.MESSAGE_TYPE, bytes([MessageType.DISCOVER])),))


def send_from_client(sock: socket.socket, msg: DhcpMessage, ifname: str = "bhnc0") -> None:
    frame = ipv4_udp(IPv4Address("0.0.0.0"), IPv4Address("255.255.255.255"), 68, 67, encode(msg))
    sock.sendto(frame, (ifname, ETH_P_IP, 0, 0, b"\xff" * 6))


def receive_at_client(sock: socket.socket) -> tuple[bytes, int, DhcpMessage]:
    """The next IPv4/UDP datagram to port 68: (IP packet, packet type, decoded message)."""
    while True:
        packet, (_, _, pkttype, _, _) = sock.recvfrom(4096)
        if packet[9] != socket.IPPROTO_UDP or int.from_bytes(packet[22:24], "big") != 68:
            continue
        return packet, pkttype, decode(packet[28:])


def offer(xid: int, *, broadcast: bool, relayed: DhcpMessage) -> DhcpMessage:
    return relayed.replace(op=Op.BOOTREPLY, yiaddr=IPv4Address(YIADDR),
                           flags=0x8000 if broadcast else 0,
                           options=((Opt.MESSAGE_TYPE, bytes([MessageType.OFFER])),
                                    *((c, v) for c, v in relayed.options
                                      if c == Opt.RELAY_AGENT_INFO)))


def test_request_forwarded_with_giaddr_and_reply_delivered_broadcast_and_unicast(net: Net) -> None:
    client, server = net.client_socket(), net.server_socket()
    pid_file = net.tmp / "relay.pid"
    net.start_relay("-d", "-pf", str(pid_file), "-id", "bhnd0", "-iu", "bhnu0", "-a", SERVER)
    assert net.relay is not None and pid_file.read_text() == f"{net.relay.pid}\n"

    # Client -> server: giaddr set to the client LAN's address, hops 1, option 82 added.
    send_from_client(client, discover(0x7101))
    payload, (source, port) = server.recvfrom(4096)
    relayed = decode(payload)
    assert (source, port) == (ROUTER_UP, 67)
    assert relayed.xid == 0x7101 and relayed.hops == 1
    assert relayed.giaddr == IPv4Address(ROUTER_DOWN)
    assert AgentInfo.decode(relayed.get(Opt.RELAY_AGENT_INFO)).circuit_id == b"bhnd0"

    # Server -> client, broadcast flag set: a link-layer broadcast to 255.255.255.255:68.
    server.sendto(encode(offer(0x7101, broadcast=True, relayed=relayed)), (ROUTER_DOWN, 67))
    packet, pkttype, delivered = receive_at_client(client)
    assert pkttype == socket.PACKET_BROADCAST
    assert packet[12:16] == IPv4Address(ROUTER_DOWN).packed
    assert packet[16:20] == IPv4Address("255.255.255.255").packed
    assert delivered.xid == 0x7101 and not delivered.has(Opt.RELAY_AGENT_INFO)
    assert checksum(packet[:20]) == 0, "IPv4 header checksum"
    pseudo = packet[12:20] + bytes([0, 17]) + packet[24:26]
    assert checksum(pseudo + packet[20:]) == 0, "UDP checksum"

    # Broadcast flag clear: unicast to yiaddr at chaddr, and no ARP entry left behind.
    server.sendto(encode(offer(0x7101, broadcast=False, relayed=relayed)), (ROUTER_DOWN, 67))
    packet, pkttype, delivered = receive_at_client(client)
    assert pkttype == socket.PACKET_HOST
    assert packet[16:20] == IPv4Address(YIADDR).packed
    assert int.from_bytes(packet[20:22], "big") == 67
    assert delivered.yiaddr == IPv4Address(YIADDR)
    assert YIADDR not in ip("-n", net.ns("router"), "neigh", "show", "dev", "bhnd0")

    # ciaddr set (a renewing client that has its address): ordinary unicast to ciaddr.
    ip("-n", net.ns("client"), "addr", "add", "10.71.1.60/24", "dev", "bhnc0")
    ack = offer(0x7101, broadcast=False, relayed=relayed).replace(
        ciaddr=IPv4Address("10.71.1.60"), yiaddr=IPv4Address("10.71.1.60"))
    server.sendto(encode(ack), (ROUTER_DOWN, 67))
    packet, pkttype, delivered = receive_at_client(client)
    assert pkttype == socket.PACKET_HOST and packet[16:20] == IPv4Address("10.71.1.60").packed
    assert delivered.ciaddr == IPv4Address("10.71.1.60")

    wait_for(lambda: net.counters()["delivered"].get("unicast-ciaddr") == 1, 5, "stats file")
    counters = net.counters()
    assert counters["forwarded"] == {SERVER: 1}
    assert counters["delivered"] == {"broadcast": 1, "unicast-chaddr": 1, "unicast-ciaddr": 1}
    assert counters["agent_info_added"] == 1 and counters["send_errors"] == {}

    # Spoofed reply from a non-server: dropped, counted, logged with the reason.
    with inside(net.ns("router")):
        spoofer = net._keep(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    spoofer.bind((ROUTER_UP, 0))
    spoofer.sendto(encode(offer(0x7102, broadcast=True, relayed=relayed)), (ROUTER_DOWN, 67))
    wait_for(lambda: net.counters()["dropped"].get("reply-from-non-server") == 1, 5, "drop")

    events = [line["event"] for line in net.logs()]
    assert "relay.request.forwarded" in events and "relay.reply.delivered" in events
    drops = [line for line in net.logs() if line["event"] == "relay.drop"]
    assert drops and drops[0]["reason"] == "reply-from-non-server"
    forwarded = next(line for line in net.logs() if line["event"] == "relay.request.forwarded")
    assert forwarded["xid"] == "0x00007101" and forwarded["iface"] == "bhnd0"
    assert forwarded["chaddr"] == CLIENT_MAC.hex(":") and forwarded["servers"] == [SERVER]

    # SIGTERM: a clean, prompt exit with the final counters written.
    started = time.monotonic()
    net.signal(signal.SIGTERM)
    assert net.relay is not None and net.relay.wait(5) == 0
    assert time.monotonic() - started < 3
    assert net.counters()["received"] == 5
    assert "relay.stopped" in [line["event"] for line in net.logs()]
    assert not pid_file.exists()


def test_sighup_reloads_without_dropping_and_refuses_invalid_config(net: Net) -> None:
    ip("-n", net.ns("server"), "addr", "add", f"{SERVER2}/24", "dev", "bhns0")
    client, server, server2 = net.client_socket(), net.server_socket(), net.server_socket(SERVER2)
    config = net.tmp / "relay.toml"
    # One client's stream of requests is the load here, not a flood: its rate limit is lifted.
    base = ('[rate_limit]\nmac_rate = 0\n'
            '[[interface]]\nname = "bhnd0"\n[[interface]]\nname = "bhnu0"\nrole = "upstream"\n')
    config.write_text(f'helpers = ["{SERVER}"]\nmax_hops = 4\n{base}')
    net.start_relay("--config", str(config))

    # A stream of requests while the configuration is reloaded several times: none lost.
    total = 120
    for n in range(total):
        send_from_client(client, discover(0x7200 + n))
        if n % 30 == 15:
            config.write_text(f'helpers = ["{SERVER}"]\nmax_hops = {3 + n % 4}\n{base}')
            net.signal(signal.SIGHUP)
        time.sleep(0.003)
    xids = set()
    while len(xids) < total:
        xids.add(decode(server.recv(4096)).xid)
    assert xids == {0x7200 + n for n in range(total)}
    wait_for(lambda: net.counters()["reloads"] == 4, 5, "four reloads")

    # A second helper added by reload: both get the next request.
    config.write_text(f'helpers = ["{SERVER}", "{SERVER2}"]\n{base}')
    net.signal(signal.SIGHUP)
    wait_for(lambda: net.counters()["helpers"] == [SERVER, SERVER2], 5, "reloaded helpers")
    send_from_client(client, discover(0x7301))
    assert decode(server.recv(4096)).xid == 0x7301
    assert decode(server2.recv(4096)).xid == 0x7301

    # An invalid file is refused; the running configuration stays.
    config.write_text(f'helpers = ["{SERVER}"]\nmax_hopz = 4\n{base}')
    net.signal(signal.SIGHUP)
    wait_for(lambda: net.counters()["reload_failures"] == 1, 5, "refused reload")
    invalid = [line for line in net.logs() if line["event"] == "relay.config.invalid"]
    assert invalid[0]["key"] == "max_hopz" and invalid[0]["path"] == str(config)
    assert net.counters()["helpers"] == [SERVER, SERVER2]
    send_from_client(client, discover(0x7302))
    assert decode(server2.recv(4096)).xid == 0x7302

    # SIGUSR1: the counters in the log.
    net.signal(signal.SIGUSR1)
    wait_for(lambda: any(line["event"] == "relay.stats" for line in net.logs()), 5, "stats line")
    stats = [line for line in net.logs() if line["event"] == "relay.stats"][-1]
    assert stats["forwarded"][SERVER2] == 2 and stats["reloads"] == 5

    net.signal(signal.SIGINT)
    assert net.relay is not None and net.relay.wait(5) == 0


def test_interface_and_address_added_after_start_are_used_without_restart(net: Net) -> None:
    server = net.server_socket()
    net.start_relay("-id", "bhnd0", "-id", "bhnx0", "-iu", "bhnu0", "--stats-interval", "0.2",
                    SERVER)
    assert "bhnx0" not in net.counters()["interfaces"]
    missing = [line for line in net.logs() if line["event"] == "relay.interface.missing"]
    assert missing and missing[0]["ifnames"] == ["bhnx0"]

    # A new client LAN appears: a veth pair between the router and a new client namespace.
    from boothop.relay.lab.topology import Host, Lan, Port, Topology

    net.topology = Topology(net.topology.prefix, [
        *net.topology.hosts.values(), Host("client2"),
    ], [*net.topology.lans, Lan("x", (Port("router", "bhnx0"), Port("client2", "bhnc2")))])
    net.topology.up()
    client2 = net.client_socket("bhnc2", host="client2")
    wait_for(lambda: net.counters()["interfaces"].get("bhnx0", {}).get("up"), 5, "bhnx0 up")

    # No address yet: the request cannot get a giaddr.
    send_from_client(client2, discover(0x7401), "bhnc2")
    wait_for(lambda: net.counters()["dropped"].get("no-interface-address") == 1, 5, "drop")

    ip("-n", net.ns("router"), "addr", "add", "10.71.2.1/24", "dev", "bhnx0")
    wait_for(lambda: net.counters()["interfaces"]["bhnx0"]["addresses"] == ["10.71.2.1/24"],
             5, "address in the engine")
    send_from_client(client2, discover(0x7402), "bhnc2")
    relayed = decode(server.recv(4096))
    assert relayed.xid == 0x7402 and relayed.giaddr == IPv4Address("10.71.2.1")

    ip("-n", net.ns("router"), "addr", "del", "10.71.2.1/24", "dev", "bhnx0")
    wait_for(lambda: net.counters()["interfaces"]["bhnx0"]["addresses"] == [], 5, "removal")
    events = [line["event"] for line in net.logs()]
    assert "relay.address.added" in events and "relay.address.removed" in events
    assert "relay.interface.up" in events
    # The periodic stats line, without any signal.
    assert any(line["event"] == "relay.stats" and "bhnx0" in line["interfaces"]
               for line in net.logs())
