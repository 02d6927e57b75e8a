"""The relay's shell without namespaces: frames, pktinfo on loopback, action execution, logs."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import re
import select
import socket
import struct
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

import pytest
import structlog
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from structlog.testing import capture_logs

from boothop.relay.actions import Deliver, DeliveryMode, Forward, Outcome, Warn
from boothop.relay.config import InterfaceConfig, RelayConfig
from boothop.relay.configfile import ConfigError, RelaySettings
from boothop.relay.datapath import EVENT, STEP, Event
from boothop.relay.drops import DropReason
from boothop.relay.engine import RelayEngine
from boothop.relay.interfaces import Interface, InterfaceTable, Role
from boothop.relay.netlink import table_from
from boothop.relay.service import RelayService
from boothop.relay.shell import LineBatch, configure_logging, open_udp
from boothop.relay.sockets import Sender, checksum, ipv4_udp
from boothop.relay.steplines import StepLines
from boothop.relay.throttle import BucketLimit, RateLimits
from boothop.relay.wire import Datagram, DhcpMessage, MessageType, Op, Opt, decode, encode

SERVER = IPv4Address("10.71.100.10")
LAN = Interface(7, "bhnd0", True, (IPv4Interface("10.71.1.1/24"),), b"\x02" * 6)
#: The server's side: replies from SERVER are accepted only here (engine's trust rules).
UPLINK = Interface(9, "bhnu0", True, (IPv4Interface("10.71.100.1/24"),), b"\x02" * 6)
CONFIG = RelayConfig(helpers=(SERVER,), interfaces=(InterfaceConfig("bhnd0", Role.DOWNSTREAM),
                                                    InterfaceConfig("bhnu0", Role.UPSTREAM)))


def test_ipv4_udp_frame_checksums_agree_with_scapy() -> None:
    for size in (0, 1, 300, 301, 1400):
        payload = bytes(range(256)) * 6
        frame = ipv4_udp(IPv4Address("10.71.1.1"), IPv4Address("10.71.1.50"), 67, 68,
                         payload[:size])
        parsed = IP(frame)
        assert (parsed.src, parsed.dst, parsed.ttl, parsed.len) == (
            "10.71.1.1", "10.71.1.50", 64, 28 + size)
        assert (parsed[UDP].sport, parsed[UDP].dport, parsed[UDP].len) == (67, 68, 8 + size)
        assert bytes(parsed[UDP].payload) == payload[:size]
        recomputed = IP(frame)
        del recomputed.chksum
        del recomputed[UDP].chksum
        rebuilt = IP(bytes(recomputed))
        assert (parsed.chksum, parsed[UDP].chksum) == (rebuilt.chksum, rebuilt[UDP].chksum)


def _reference_ipv4_udp(source: IPv4Address, destination: IPv4Address, sport: int, dport: int,
                        payload: bytes) -> bytes:
    """The datagram built field by field, each checksum over its whole span (RFC 768, 791)."""
    length = 8 + len(payload)
    pseudo = source.packed + destination.packed + bytes((0, 17)) + length.to_bytes(2, "big")
    udp = sport.to_bytes(2, "big") + dport.to_bytes(2, "big") + length.to_bytes(2, "big")
    udp_sum = _word_sum_checksum(pseudo + udp + b"\0\0" + payload) or 0xFFFF
    udp += udp_sum.to_bytes(2, "big") + payload
    header = bytes((0x45, 0x10)) + (20 + length).to_bytes(2, "big") + bytes((0, 0, 0x40, 0, 64, 17))
    header += bytes(2) + source.packed + destination.packed
    header = header[:10] + _word_sum_checksum(header).to_bytes(2, "big") + header[12:]
    return header + udp


@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 65535),
       st.integers(0, 65535), st.binary(max_size=1500))
def test_ipv4_udp_equals_field_by_field_construction(src: int, dst: int, sport: int, dport: int,
                                                     payload: bytes) -> None:
    source, destination = IPv4Address(src), IPv4Address(dst)
    assert ipv4_udp(source, destination, sport, dport, payload) == _reference_ipv4_udp(
        source, destination, sport, dport, payload)


def test_ipv4_udp_zero_checksum_sent_as_all_ones() -> None:
    """RFC 768: "If the computed checksum is zero, it is transmitted as all ones"."""
    source, destination = IPv4Address("10.71.1.1"), IPv4Address("10.71.1.50")
    length = 8 + 2
    # Choose the payload word that brings the one's-complement sum to 0xFFFF (checksum 0).
    words = [*(int.from_bytes(a.packed[i:i + 2], "big") for a in (source, destination)
               for i in (0, 2)), 17, length, 67, 68, length]
    partial = sum(words) % 0xFFFF
    payload = (0xFFFF - partial).to_bytes(2, "big")
    frame = ipv4_udp(source, destination, 67, 68, payload)
    assert frame[26:28] == b"\xff\xff"
    assert _word_sum_checksum(frame[12:20] + bytes((0, 17)) + frame[24:26] + frame[20:]) == 0


def test_checksum_rfc1071_example() -> None:
    # RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (one's complement: 220d).
    assert checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D
    assert checksum(b"\x01") == ~0x0100 & 0xFFFF


def _word_sum_checksum(data: bytes) -> int:
    """RFC 1071 as written: add 16-bit words, fold the carries, complement."""
    if len(data) % 2:
        data += b"\0"
    total = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


@given(st.binary(max_size=1600))
def test_checksum_equals_rfc1071_word_sum(data: bytes) -> None:
    assert checksum(data) == _word_sum_checksum(data)


def test_checksum_one_complement_zeros() -> None:
    for data in (b"", b"\0\0", b"\xff\xff", b"\xff\xff\xff\xff", b"\xff\xfe\x00\x01"):
        assert checksum(data) == _word_sum_checksum(data)


class FakeSender:
    def __init__(self, error: OSError | None = None,
                 upstream: socket.socket | None = None) -> None:
        self.sent: list[object] = []
        self.error = error
        self.upstream = upstream

    def forward(self, action: Forward) -> None:
        if self.error:
            raise self.error
        self.sent.append(action)

    def deliver(self, action: Deliver) -> None:
        if self.error:
            raise self.error
        self.sent.append(action)

    def forward_to(self, server: IPv4Address, payload: bytes) -> None:
        self.forward(Forward(server, payload))

    def send_frame(self, ifname: str, mac: bytes, source: IPv4Address,
                   destination: IPv4Address, payload: bytes) -> None:
        mode = (DeliveryMode.BROADCAST if mac == b"\xff" * 6 else DeliveryMode.UNICAST_CHADDR)
        self.deliver(Deliver(0, ifname, payload, mode, destination, mac, source))


def request(xid: int = 0x42) -> Datagram:
    msg = DhcpMessage(op=Op.BOOTREQUEST, xid=xid, chaddr=bytes.fromhex("02710000010a") + bytes(10),
                      options=((Opt.MESSAGE_TYPE, bytes([MessageType.DISCOVER])),))
    return Datagram(encode(msg), IPv4Address("0.0.0.0"), 68, IPv4Address("255.255.255.255"),
                    LAN.index)


def service(sender: FakeSender, stats_file: Path | None = None) -> RelayService:
    engine = RelayEngine(CONFIG, InterfaceTable.of([LAN, UPLINK]))
    return RelayService(engine, None, sender, stats_file)  # type: ignore[arg-type]


def test_forward_executed_and_logged_with_bound_context() -> None:
    sender = FakeSender()
    relay = service(sender)
    relay.steps = True
    with capture_logs() as logs:
        relay.handle(request(), 1.0)
    assert [type(a) for a in sender.sent] == [Forward]
    assert sender.sent[0].server == SERVER  # type: ignore[attr-defined]
    (event,) = [e for e in logs if e["event"] == "relay.request.forwarded"]
    assert event["xid"] == "0x00000042" and event["iface"] == "bhnd0"
    assert event["chaddr"] == "02:71:00:00:01:0a" and event["servers"] == [str(SERVER)]
    # The giaddr and hops the server was sent, not the client's 0.0.0.0 and 0.
    assert event["giaddr"] == "10.71.1.1" and event["hops"] == 1 and event["log_level"] == "info"


def test_send_error_counted_logged_rate_limited_never_raised() -> None:
    relay = service(FakeSender(OSError(errno.ENETUNREACH, "unreachable")))
    # 50 requests of one client in one instant: past its rate limit, unless lifted.
    relay.engine.update_config(dataclasses.replace(CONFIG, rate_limits=RateLimits(
        mac=BucketLimit(1, 0))))
    with capture_logs() as logs:
        for n in range(50):
            relay.handle(request(n), 1.0)
    assert relay.shell.send_errors == {"ENETUNREACH": 50}
    failures = [e for e in logs if e["event"] == "relay.send.failed"]
    assert len(failures) == relay.limiter.burst
    assert failures[0]["server"] == str(SERVER) and failures[0]["log_level"] == "warning"


def test_drops_logged_with_reason_and_rate_limited() -> None:
    relay = service(FakeSender())
    relay.steps = True
    junk = Datagram(b"\x01\x02", IPv4Address("10.71.1.9"), 68, IPv4Address("10.71.1.1"), 7)
    with capture_logs() as logs:
        for _ in range(100):
            relay.handle(junk, 5.0)
    drops = [e for e in logs if e["event"] == "relay.drop"]
    assert len(drops) == relay.limiter.burst
    assert drops[0]["reason"] == DropReason.MALFORMED.value and drops[0]["log_level"] == "info"
    assert relay.engine.counters.dropped[DropReason.MALFORMED] == 100


def test_step_logging_skipped_when_not_enabled() -> None:
    relay = service(FakeSender())
    relay.steps = False
    with capture_logs() as logs:
        relay.handle(request(), 1.0)
    assert logs == []


def test_warn_action_logged_at_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    relay = service(FakeSender())
    warn = Warn("relay.pxe.dhcp_server_sends_pxeclient", "fix it", SERVER)
    monkeypatch.setattr(relay.fast, "handle", lambda d, now: None)  # the engine decides
    monkeypatch.setattr(relay.engine, "handle", lambda d, now: Outcome((warn,)))
    with capture_logs() as logs:
        relay.handle(request(), 1.0)
    assert logs == [{"event": "relay.pxe.dhcp_server_sends_pxeclient", "message": "fix it",
                     "server": str(SERVER), "log_level": "warning"}]


def test_stats_file_written_atomically_as_json(tmp_path: Path) -> None:
    stats = tmp_path / "stats.json"
    relay = service(FakeSender(), stats)
    relay.handle(request(), 1.0)
    relay.write_stats()
    data = json.loads(stats.read_text())
    assert data["received"] == 1 and data["forwarded"] == {str(SERVER): 1}
    assert data["interfaces"]["bhnd0"] == {"index": 7, "up": True, "addresses": ["10.71.1.1/24"]}
    assert data["helpers"] == [str(SERVER)]
    assert not (tmp_path / "stats.json.tmp").exists()


async def test_reload_swaps_valid_config_and_keeps_old_on_error() -> None:
    relay = service(FakeSender())
    other = IPv4Address("10.71.100.11")
    await relay.reload(lambda: RelaySettings(RelayConfig(helpers=(other,),
                                                         interfaces=CONFIG.interfaces)))
    assert relay.engine.config.helpers == (other,) and relay.shell.reloads == 1

    def invalid() -> RelaySettings:
        raise ConfigError("/etc/relay.toml", "max_hopz", "unknown key")

    with capture_logs() as logs:
        await relay.reload(invalid)
    assert relay.engine.config.helpers == (other,)
    assert relay.shell.reload_failures == 1
    assert logs[0]["event"] == "relay.config.invalid" and logs[0]["key"] == "max_hopz"
    assert logs[0]["log_level"] == "error"


def test_missing_configured_interface_warned_once_per_change() -> None:
    relay = service(FakeSender())
    relay.engine.update_config(RelayConfig(helpers=(SERVER,), interfaces=(
        InterfaceConfig("bhnd0"), InterfaceConfig("bhnx0"))))
    with capture_logs() as logs:
        relay.on_interfaces(InterfaceTable.of([LAN]))
        relay.on_interfaces(InterfaceTable.of([LAN]))
        relay.on_interfaces(InterfaceTable.of([LAN, Interface(8, "bhnx0", True, ())]))
    assert [e["ifnames"] for e in logs if e["event"] == "relay.interface.missing"] == [["bhnx0"]]
    assert relay.engine.interfaces.by_name("bhnx0") is not None


def test_table_from_orders_primary_first_and_reads_state() -> None:
    links = [
        {"index": 1, "flags": 0x10049, "IFLA_IFNAME": "lo", "IFLA_ADDRESS": "00:00:00:00:00:00"},
        {"index": 3, "flags": 0x1003, "IFLA_IFNAME": "bhnd0", "IFLA_ADDRESS": "02:71:00:00:00:01"},
    ]
    addresses = [
        {"index": 3, "IFA_LOCAL": "10.71.1.2", "prefixlen": 24, "IFA_FLAGS": 0x81},  # secondary
        {"index": 3, "IFA_LOCAL": "10.71.1.1", "prefixlen": 24, "IFA_FLAGS": 0x80},
        {"index": 1, "IFA_ADDRESS": "127.0.0.1", "prefixlen": 8, "flags": 0x80},
    ]
    table = table_from(links, addresses)
    lan = table.by_name("bhnd0")
    assert lan is not None and lan.mac == bytes.fromhex("027100000001")
    assert lan.addresses == (IPv4Interface("10.71.1.1/24"), IPv4Interface("10.71.1.2/24"))
    assert not lan.up, "IFF_UP without IFF_RUNNING (no carrier) is not usable"
    assert table.by_name("lo").up
    assert table.by_address(IPv4Address("127.0.0.1")).index == 1


async def test_receive_thread_relays_from_a_real_socket_and_stops_when_cancelled() -> None:
    sock = open_udp(0, "127.0.0.1")
    loopback = Interface(socket.if_nametoindex("lo"), "bhnd0", True,
                         (IPv4Interface("10.71.1.1/24"),))
    engine = RelayEngine(CONFIG, InterfaceTable.of([loopback]))
    sender = FakeSender()
    relay = RelayService(engine, sock, sender)  # type: ignore[arg-type]
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(relay.loop.run)
                for xid in range(3):
                    client.sendto(request(xid).payload, sock.getsockname())
                while len(sender.sent) < 3:
                    await trio.sleep(0.01)
                nursery.cancel_scope.cancel()
    finally:
        client.close()
        sock.close()
    assert [decode(a.payload).xid for a in sender.sent] == [0, 1, 2]  # type: ignore[attr-defined]
    assert relay.loop.stopping and engine.counters.received == 3


async def test_relay_port_forwards_leave_from_it_and_replies_on_it_reach_the_engine() -> None:
    """RFC 8357 §5.1: with a relay port the relay sends its requests from that port and listens
    there for the replies, beside its client-facing socket, into the same engine and lock."""
    udp, upstream = open_udp(0, "127.0.0.1"), open_udp(0, "127.0.0.1")
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.settimeout(5)
    sender = Sender(udp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM),
                    server.getsockname()[1], upstream)
    try:
        sender.forward(Forward(IPv4Address("127.0.0.1"), b"relayed"))
        assert server.recvfrom(64) == (b"relayed", upstream.getsockname())
        engine = RelayEngine(CONFIG, InterfaceTable.of([LAN, UPLINK]))
        relay = RelayService(engine, udp, sender)
        assert [loop.sock for loop in relay.loops] == [udp, upstream]
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for loop in relay.loops:
                    nursery.start_soon(loop.run)
                server.sendto(b"junk", upstream.getsockname())
                while engine.counters.received < 1:
                    await trio.sleep(0.01)
                nursery.cancel_scope.cancel()
        ports = set(relay.metrics_snapshot()["loops"])
        assert ports == {udp.getsockname()[1], upstream.getsockname()[1]}
    finally:
        sender.close()
        server.close()


def test_reload_keeps_the_relay_port_its_socket_was_bound_to() -> None:
    relay = service(FakeSender())
    with capture_logs() as logs:
        relay.apply_config(RelaySettings(dataclasses.replace(CONFIG, relay_port=1067)))
    assert relay.engine.config.relay_port is None
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == [
        "relay.config.relay_port_kept"]


RECORD_HEADER = struct.Struct("<II")


def kernel_event(op: int, sent: DhcpMessage, source: IPv4Address, port: int, ifindex: int,
                 *, servers: tuple[IPv4Address, ...] = (), delivery: int = 0,
                 destination: IPv4Address = IPv4Address(0), latency_ns: int = -1) -> bytes:
    """The event relay.bpf.c sends for a packet it relayed (``sent``: as relayed, a request, or
    as received, a reply), as ``describe`` and its callers fill ``struct event``."""
    kind = sent.message_type
    return EVENT.pack(op, sent.hlen, sent.hops, 0 if kind is None else int(kind),
                      sent.xid.to_bytes(4, "big"), sent.giaddr.packed, source.packed, port,
                      1 if destination != IPv4Address("255.255.255.255") else 0, len(servers),
                      ifindex, delivery, destination.packed,
                      b"".join(s.packed for s in servers).ljust(32, b"\0"), latency_ns,
                      sent.chaddr, 0)


def records(*events: bytes, flags: int = 0) -> bytes:
    """Events as the ring holds them (``Events.records``): each after its 8-byte header, its
    length's top byte holding ``flags``."""
    return b"".join(RECORD_HEADER.pack(len(event) | flags << 24, 0) + event
                    for event in events)


def test_a_kernel_step_is_logged_as_the_daemon_logs_the_same_step() -> None:
    """The program relays a DORA's requests and replies; the daemon writes, from its events,
    the lines the user path writes for the same packets (the timestamp apart)."""
    sender = FakeSender()
    relay = service(sender)
    relay.steps = True
    offer = DhcpMessage(op=Op.BOOTREPLY, xid=0x42, chaddr=bytes.fromhex("02710000010a")
                        + bytes(10), hops=1, yiaddr=IPv4Address("10.71.1.50"),
                        giaddr=IPv4Address("10.71.1.1"),
                        options=((Opt.MESSAGE_TYPE, bytes([MessageType.OFFER])),))
    reply = Datagram(encode(offer), SERVER, 67, IPv4Address("10.71.1.1"), UPLINK.index)
    with capture_logs() as daemon:
        relay.handle(request(), 1.0)
        relay.handle(reply, 1.25)
    forwarded, delivered = sender.sent
    assert isinstance(forwarded, Forward) and isinstance(delivered, Deliver)
    assert delivered.ifname == LAN.name
    with capture_logs() as kernel:
        relay._kernel_events(records(
            kernel_event(1, decode(forwarded.payload), IPv4Address(0), 68, LAN.index,
                         servers=(SERVER,)),
            kernel_event(2, offer, SERVER, 67, UPLINK.index, delivery=LAN.index,
                         destination=delivered.destination, latency_ns=250_000_000)))
    assert [e["event"] for e in kernel] == ["relay.request.forwarded", "relay.reply.delivered"]
    assert kernel == daemon
    assert kernel[1]["mode"] == "unicast-chaddr" and kernel[1]["latency_ms"] == 250.0


def recording(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """``os.write``, each write's bytes recorded (returned), until ``monkeypatch.undo()``."""
    writes: list[bytes] = []
    write = os.write

    def recorded(fd: int, data: bytes) -> int:
        writes.append(bytes(data))
        return write(fd, data)

    monkeypatch.setattr(os, "write", recorded)
    return writes


def test_a_line_batch_writes_the_lines_log_info_writes_in_whole_atomic_writes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The same bytes as a line per ``log.info`` (the timestamp apart), but in writes of whole
    lines of at most PIPE_BUF bytes, fewer than the lines, the last when flushed."""
    reader, writer = os.pipe()
    try:
        with os.fdopen(writer, "w", closefd=False) as stream:
            configure_logging("info", "json", stream)
            log = structlog.get_logger().bind(relay="r1")
            fields = [{"xid": f"0x{n:08x}", "servers": ["10.0.0.1"], "n": n} for n in range(40)]
            for each in fields:
                log.info("step", **each)
            one_by_one = os.read(reader, 1 << 20)
            writes = recording(monkeypatch)
            batch = LineBatch(log)
            for each in fields:
                batch.info("step", each)
            assert b"".join(writes).count(b"\n") < 40  # the last lines wait for the flush
            batch.flush()
            monkeypatch.undo()
            together = os.read(reader, 1 << 20)
    finally:
        os.close(reader)
        os.close(writer)
        configure_logging("info", "json")

    def lines(data: bytes) -> list[dict[str, object]]:
        return [{k: v for k, v in json.loads(line).items() if k != "timestamp"}
                for line in data.splitlines()]

    assert lines(together) == lines(one_by_one) and len(lines(together)) == 40
    assert lines(together)[0]["relay"] == "r1" and lines(together)[0]["level"] == "info"
    assert 1 < len(writes) < 40 and b"".join(writes) == together
    assert all(len(data) <= select.PIPE_BUF and data.endswith(b"\n") for data in writes)


@settings(max_examples=300, deadline=None)
@given(op=st.sampled_from((1, 2)), hlen=st.integers(0, 16), hops=st.integers(0, 255),
       kind=st.integers(0, 255), xid=st.binary(min_size=4, max_size=4),
       addresses=st.lists(st.binary(min_size=4, max_size=4), min_size=3, max_size=3),
       port=st.integers(0, 65535), mode=st.sampled_from((0, 1)),
       servers=st.lists(st.binary(min_size=4, max_size=4), min_size=1, max_size=8),
       ifindex=st.sampled_from((7, 9, 11, 99)), delivery=st.sampled_from((7, 11, 98)),
       latency=st.one_of(st.just(-1), st.integers(0, 10**11)),
       chaddr=st.binary(min_size=16, max_size=16))
def test_kernel_step_lines_rendered_to_bytes_are_the_lines_of_their_fields(
        tmp_path_factory: pytest.TempPathFactory, op: int, hlen: int, hops: int, kind: int,
        xid: bytes, addresses: list[bytes], port: int, mode: int, servers: list[bytes],
        ifindex: int, delivery: int, latency: int, chaddr: bytes) -> None:
    """``StepLines`` (a bytes template per line) writes, byte for byte but the timestamp, the
    line the daemon's dict of the same event renders to, odd interface names included; a batch
    of three (the event, again, and with its addresses and interfaces swapped) through one
    ``StepLines``, so that its caches are read as well as filled."""
    odd = Interface(11, 'we"ird\\\u00e9', True, (IPv4Interface("10.71.2.1/24"),), b"\x02" * 6)
    engine = RelayEngine(CONFIG, InterfaceTable.of([LAN, UPLINK, odd]))
    relay = RelayService(engine, None, FakeSender())  # type: ignore[arg-type]
    giaddr, source, destination = addresses

    def event(giaddr: bytes, source: bytes, destination: bytes, ifindex: int,
              delivery: int) -> Event:
        return (op, hlen, hops, kind, xid, giaddr, source, port, mode, len(servers), ifindex,
                delivery, destination, b"".join(servers).ljust(32, b"\0"), latency, chaddr, 0)

    batch = [event(giaddr, source, destination, ifindex, delivery)] * 2 + [
        event(destination, giaddr, source, delivery if delivery != 98 else 7, ifindex)]
    path = tmp_path_factory.mktemp("lines") / "log"
    with path.open("w") as stream:
        configure_logging("info", "json", stream)
        try:
            relay.bind_logger()
            lines = LineBatch(relay.log)
            assert lines.lean
            for each in batch:
                relay._kernel_step(lines, each)  # the fields' dict, as log.info renders it
            steps = StepLines(relay._iface, relay._ifname, lines.stamp)
            rendered = b"".join(steps.render(STEP.unpack(EVENT.pack(*each))) for each in batch)
            lines.flush()
        finally:
            configure_logging("info", "json")
    stamp = re.compile(rb'"timestamp":"[^"]*"')
    assert stamp.sub(b"", rendered) == stamp.sub(b"", path.read_bytes())
    assert len(set(re.findall(rb'"timestamp":"[^"]*"', rendered))) == 1  # one per batch
