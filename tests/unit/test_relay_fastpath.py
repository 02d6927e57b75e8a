"""The relay's fast path (relay.fastpath) is the engine, byte for byte, or it steps aside.

Two engines with the same configuration and interfaces take the same stream of datagrams: one
through ``FastPath`` first (as ``RelayService.handle`` does), the engine taking what it returns
None for; the other through the engine alone. After every datagram the actions (bytes
included), the counters and the state that outlives a packet (rate limiter buckets, throttling
changes, the PXE boot watch, smart giaddr) must be the same. The configurations cover what the
fast path handles and what it must leave to the engine; the datagrams, clients' requests and
servers' replies near the cases that matter, in canonical and unusual encodings.
"""

from __future__ import annotations

import dataclasses
import re
from ipaddress import IPv4Address, IPv4Interface
from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from structlog.testing import capture_logs
from test_relay_service_shell import FakeSender
from test_wire_properties import PROPERTY, messages

from boothop.relay.actions import Deliver, Forward, Outcome
from boothop.relay.classes import ForwardingClass
from boothop.relay.config import AgentPolicy, GiaddrMode, InterfaceConfig, RelayConfig
from boothop.relay.engine import RelayEngine
from boothop.relay.fastpath import FastPath
from boothop.relay.interfaces import Interface, InterfaceTable, Role
from boothop.relay.service import RelayService
from boothop.relay.shell import configure_logging
from boothop.relay.throttle import BucketLimit, RateLimits
from boothop.relay.wire import (
    MAGIC_COOKIE,
    AgentInfo,
    AgentSub,
    Datagram,
    DhcpMessage,
    Frame,
    Opt,
    WireError,
    encode,
)
from boothop.relay.wire.frame import option_offsets

LAN = Interface(3, "lan0", True, (IPv4Interface("10.71.1.1/24"), IPv4Interface("10.71.2.1/24")),
                b"\x02\x00\x00\x00\x00\x03")
LAN_DOWN = Interface(5, "lan1", False, (IPv4Interface("10.72.1.1/24"),), b"\x02" * 6)
UPLINK = Interface(4, "up0", True, (IPv4Interface("10.71.100.1/24"),), b"\x02\x00\x00\x00\x00\x04")
INTERFACES = InterfaceTable.of([LAN, LAN_DOWN, UPLINK])
CONNECTED = IPv4Address("10.71.100.10")
ROUTED = IPv4Address("10.99.0.5")
OTHER = IPv4Address("192.0.2.7")
GIADDRS = (IPv4Address(0), IPv4Address("10.71.1.1"), IPv4Address("10.71.2.1"),
           IPv4Address("10.72.1.1"), IPv4Address("10.71.100.1"), IPv4Address("10.50.0.1"))
SOURCES = (IPv4Address(0), CONNECTED, ROUTED, OTHER, IPv4Address("10.71.1.1"),
           IPv4Address("10.71.1.50"))
MACS = (bytes.fromhex("02aa00000001"), bytes.fromhex("02aa00000002"), LAN.mac)
AGENTS = (
    AgentInfo(((AgentSub.CIRCUIT_ID, b"lan0"),)).encode(),
    AgentInfo(((AgentSub.CIRCUIT_ID, b"lan0"), (AgentSub.REMOTE_ID, b"r"))).encode(),
    AgentInfo(((AgentSub.CIRCUIT_ID, b"up0"),)).encode(),
    AgentInfo(((AgentSub.CIRCUIT_ID, b"lan0"), (AgentSub.LINK_SELECTION,
                                                 bytes((10, 71, 1, 0))))).encode(),
    AgentInfo(((AgentSub.RELAY_SOURCE_PORT, b""),)).encode(),
    b"\x01\x09lan0",  # malformed
)


@st.composite
def configs(draw: st.DrawFn) -> RelayConfig:
    lan = InterfaceConfig(
        "lan0", draw(st.sampled_from((Role.DOWNSTREAM, Role.BOTH))), trusted=draw(st.booleans()),
        giaddr=draw(st.sampled_from((None, None, None, IPv4Address("10.71.2.1"),
                                     IPv4Address("10.9.9.9")))),
        giaddr_mode=draw(st.sampled_from((*[GiaddrMode.PRIMARY] * 3, *GiaddrMode))),
        helpers=draw(st.sampled_from(((), (ROUTED,)))),
        circuit_id=draw(st.sampled_from((None, b"port-7"))),
        link_selection=draw(st.sampled_from((None, None, None, "up0"))),
        server_id_override=draw(st.booleans()) and draw(st.booleans()),
        vss=draw(st.sampled_from((None, None, None, b"\x00vpn"))))
    up = InterfaceConfig("up0", draw(st.sampled_from((Role.UPSTREAM, Role.BOTH))))
    listed = draw(st.sampled_from(((lan, up), (lan, up, InterfaceConfig("lan1")), ())))
    classes = draw(st.sampled_from((
        (), (), (), (ForwardingClass("pxe", (OTHER,), vendor_class=(b"PXEClient",)),),
        (ForwardingClass("elsewhere", (OTHER,), interfaces=frozenset({"lan1"})),))))
    mac = draw(st.sampled_from((BucketLimit(0.0, 0.0), BucketLimit(2.0, 1.0),
                                BucketLimit(1e9, 1.0))))
    circuit = draw(st.sampled_from((*[BucketLimit(0.0, 0.0)] * 4, BucketLimit(3.0, 1.0))))
    return RelayConfig(
        helpers=draw(st.sampled_from(((CONNECTED,), (CONNECTED, ROUTED), ()))),
        interfaces=listed, max_hops=draw(st.sampled_from((4, 10, 30))),
        agent_info=draw(st.booleans()), agent_policy=draw(st.sampled_from(AgentPolicy)),
        remote_id=draw(st.sampled_from((None, b"relay-1"))),
        max_packet_size=draw(st.sampled_from((300, 576, 1472))),
        reply_giaddr=draw(st.sampled_from((None, None, IPv4Address("10.71.1.254")))),
        relay_port=draw(st.sampled_from((None, None, None, 1067))), classes=classes,
        rate_limits=RateLimits(mac=mac, circuit=circuit))


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    """A request or reply near the cases the relay tells apart, encoded canonically, unpadded
    (as Kea sends) or not canonically at all."""
    options: list[tuple[int, bytes]] = []
    kind = draw(st.sampled_from((None, 1, 2, 3, 5, 6)))
    if kind is not None:
        options.append((Opt.MESSAGE_TYPE, bytes((kind,))))
    if draw(st.integers(0, 4)) == 0:
        options.append((Opt.VENDOR_CLASS_ID, draw(st.sampled_from((b"PXEClient:Arch:00000",
                                                                   b"MSFT 5.0", b"PXE")))))
    if draw(st.integers(0, 3)) == 0:
        options.append((Opt.RELAY_AGENT_INFO, draw(st.sampled_from(AGENTS))))
    if draw(st.booleans()):
        options.append((Opt.PARAMETER_REQUEST_LIST, draw(st.binary(max_size=300))))
    flags = draw(st.sampled_from((0, 0x8000, 1)))
    msg = DhcpMessage(
        op=draw(st.sampled_from((1, 2))), xid=draw(st.sampled_from((1, 2, 0xDEADBEEF))),
        chaddr=draw(st.sampled_from(MACS)) + bytes(10), htype=draw(st.sampled_from((1, 1, 6))),
        hlen=draw(st.sampled_from((6, 6, 6, 16, 0))),
        hops=draw(st.sampled_from((0, 0, 0, 1, 3, 9, 16, 255))),
        flags=flags, ciaddr=draw(st.sampled_from((IPv4Address(0), IPv4Address("10.71.1.9")))),
        yiaddr=draw(st.sampled_from((IPv4Address(0), IPv4Address("10.71.1.50")))),
        giaddr=draw(st.sampled_from((*GIADDRS[:2], *GIADDRS))), options=tuple(options))
    if draw(st.integers(0, 9)) == 0:
        msg = draw(messages(max_options=6))
    data = encode(msg, 1 << 16)
    change = draw(st.sampled_from((*["none"] * 6, "unpad", "unpad", "zeros", "pad", "repeat",
                                   "junk", "overload")))
    if data[236:240] != MAGIC_COOKIE or change == "none":
        return data
    body = data.rstrip(b"\0")[:-1]  # without END and padding
    return body + {"unpad": b"\xff", "zeros": b"\xff" + bytes(400), "pad": b"\0\xff",
                   "repeat": b"\x0c\x01a\x0c\x01b\xff", "junk": b"\xff\0x",
                   "overload": b"\x34\x01\x03\xff"}[change]


@st.composite
def datagrams(draw: st.DrawFn) -> Datagram:
    """Mostly a request from a client on the LAN, or a reply from a server on the uplink."""
    payload = draw(payloads())
    usual = (IPv4Address(0), LAN.index) if payload[0] == 1 else (CONNECTED, UPLINK.index)
    source, ifindex = usual if draw(st.booleans()) else (
        draw(st.sampled_from(SOURCES)), draw(st.sampled_from((3, 4, 5, 9))))
    return Datagram(payload, source, 68,
                    draw(st.sampled_from((IPv4Address("255.255.255.255"),
                                          IPv4Address("10.71.1.1"), IPv4Address("10.71.1.255")))),
                    ifindex, IPv4Address("10.71.1.1"), draw(st.sampled_from((67, 1067))))


def state(engine: RelayEngine) -> Any:
    """What outlives a packet in the engine."""
    buckets = [None if table is None else [(key, bucket.tokens, bucket.last, bucket.dropped)
                                          for key, bucket in table._table.items()]
               for table in (engine._macs, engine._circuit_buckets)]
    return (engine.counters, buckets, list(engine._throttle_changes),
            {xid: dataclasses.astuple(t) for xid, t in engine._boots._watched.items()},
            engine._smart.__dict__)


def same_either_way(config: RelayConfig, stream: list[tuple[Datagram, float]]) -> list[str]:
    """Run ``stream`` through the fast path (then the engine) and through the engine alone,
    requiring the same after each datagram; which path took each one."""
    fast_engine = RelayEngine(config, INTERFACES)
    engine = RelayEngine(config, INTERFACES)
    fast = FastPath(fast_engine)
    now = 100.0
    paths = []
    for datagram, step in stream:
        now += step
        result = fast.handle(datagram, now)
        paths.append("engine" if result is None else "outcome" if isinstance(result, Outcome)
                     else "relayed" if len(result) == 3 else "delivered")
        expected = engine.handle(datagram, now)
        if result is None:
            result = fast_engine.handle(datagram, now)
        if isinstance(result, Outcome):
            assert result == expected
        else:
            msg = Frame(datagram.payload).message
            assert result[0] == msg.xid
            if len(result) == 3:
                _, payload, helpers = result
                assert expected.actions == tuple(Forward(server, payload) for server in helpers)
            else:
                _, ifname, mac, source, destination, payload, mode = result
                (deliver,) = expected.actions
                assert isinstance(deliver, Deliver)
                assert (deliver.ifname, deliver.mac, deliver.source, deliver.destination,
                        deliver.payload, deliver.mode) == (ifname, mac, source, destination,
                                                           payload, mode)
        assert state(fast_engine) == state(engine)
    return paths


@PROPERTY
@given(configs(), st.lists(st.tuples(datagrams(), st.floats(0, 3)), max_size=12))
def test_the_fast_path_is_the_engine_or_steps_aside(
        config: RelayConfig, stream: list[tuple[Datagram, float]]) -> None:
    for path in same_either_way(config, stream):
        event(path)


def test_throttling_starts_and_stops_alike_on_the_fast_path() -> None:
    """A client over its rate is dropped, told once, and told again when it is served again."""
    config = RelayConfig(helpers=(CONNECTED,), interfaces=(InterfaceConfig("lan0"),),
                         rate_limits=RateLimits(mac=BucketLimit(2.0, 1.0)))
    discover = Datagram(encode(DhcpMessage(op=1, xid=7, chaddr=MACS[0] + bytes(10),
                                           options=((Opt.MESSAGE_TYPE, b"\x01"),))),
                        IPv4Address(0), 68, IPv4Address("255.255.255.255"), LAN.index)
    paths = same_either_way(config, [(discover, 0.1)] * 4 + [(discover, 5.0)] * 2)
    assert paths == ["relayed", "relayed", "outcome", "outcome", "outcome", "relayed"]


def test_the_common_cases_take_the_fast_path() -> None:
    """Not a path that always steps aside: a client's DISCOVER and its server's OFFER."""
    config = RelayConfig(helpers=(CONNECTED,), interfaces=(
        InterfaceConfig("lan0", Role.DOWNSTREAM), InterfaceConfig("up0", Role.UPSTREAM)),
        agent_info=True)
    fast = FastPath(RelayEngine(config, INTERFACES))
    discover = DhcpMessage(op=1, xid=7, chaddr=MACS[0] + bytes(10),
                           options=((Opt.MESSAGE_TYPE, b"\x01"),))
    relayed = fast.handle(Datagram(encode(discover), IPv4Address(0), 68,
                                   IPv4Address("255.255.255.255"), LAN.index), 1.0)
    assert isinstance(relayed, tuple) and len(relayed) == 3
    offer = DhcpMessage(op=2, xid=7, chaddr=MACS[0] + bytes(10), giaddr=GIADDRS[1],
                        yiaddr=IPv4Address("10.71.1.50"),
                        options=((Opt.MESSAGE_TYPE, b"\x02"), (Opt.RELAY_AGENT_INFO, AGENTS[0])))
    delivered = fast.handle(Datagram(encode(offer).rstrip(b"\0"), CONNECTED, 67,
                                     IPv4Address("10.71.100.1"), UPLINK.index, port=67), 1.0)
    assert isinstance(delivered, tuple) and len(delivered) == 7


@PROPERTY
@given(payloads())
def test_option_offsets_are_where_frame_finds_the_options(data: bytes) -> None:
    """``option_offsets`` answers exactly for the messages ``Frame`` finds exact (and not
    overloaded), and points at their options."""
    scanned = option_offsets(data)
    try:
        frame = Frame(data)
    except WireError:
        assert scanned is None or data[0] not in (1, 2)
        return
    assert (scanned is not None) == frame.exact
    if scanned is not None:
        end, offsets = scanned
        assert end == frame._end
        assert [(code, data[at + 2:at + 2 + data[at + 1]]) for code, at in offsets.items()] == \
            list(frame.message.options)


@PROPERTY
@given(st.lists(datagrams(), max_size=6))
def test_step_lines_and_sends_are_the_same_on_either_path(stream: list[Datagram]) -> None:
    """The service logs (info) and sends what the fast path relays as it does the engine's."""
    config = RelayConfig(helpers=(CONNECTED, ROUTED), interfaces=(
        InterfaceConfig("lan0", Role.DOWNSTREAM), InterfaceConfig("up0", Role.UPSTREAM)),
        agent_info=True)
    runs = []
    for fast in (True, False):
        sender = FakeSender()
        relay = RelayService(RelayEngine(config, INTERFACES), None, sender)  # type: ignore[arg-type]
        relay.steps = True
        if not fast:
            relay.fast.handle = lambda datagram, now: None  # type: ignore[method-assign]
        with capture_logs() as logs:
            for datagram in stream:
                relay.handle(datagram, 1.0)
        # The fake sender records a fast delivery without its ifindex (the engine's has it).
        runs.append((logs, [dataclasses.replace(a, ifindex=0) if isinstance(a, Deliver) else a
                            for a in sender.sent], relay.snapshot()))
    assert runs[0] == runs[1]


@PROPERTY
@given(st.lists(datagrams(), max_size=6), st.booleans())
def test_fast_step_lines_from_templates_are_the_lines_of_their_fields(
        tmp_path_factory: pytest.TempPathFactory, stream: list[Datagram], replied: bool) -> None:
    """With JSON to a descriptor the fast path's step lines come from ``StepLines``' templates:
    byte for byte but the timestamp, the lines ``log.info`` renders from the fields' dict."""
    config = RelayConfig(helpers=(CONNECTED, ROUTED), interfaces=(
        InterfaceConfig("lan0", Role.DOWNSTREAM), InterfaceConfig("up0", Role.UPSTREAM)),
        agent_info=True)
    written = []
    for lean in (True, False):
        path = tmp_path_factory.mktemp("lines") / "log"
        with path.open("w") as out:
            configure_logging("info", "json", out)
            try:
                relay = RelayService(RelayEngine(config, INTERFACES), None,  # type: ignore[arg-type]
                                     FakeSender())
                assert relay._fast_lines.still_lean()
                relay._fast_lines.lean = lean
                for datagram in stream:
                    if replied:  # a reply answering a request: its latency in the line
                        relay.replies.forwarded(datagram.source, int.from_bytes(
                            datagram.payload[4:8], "big"), 0.3456789)
                    relay.handle(datagram, 1.0)
            finally:
                configure_logging("info", "json")
        written.append(path.read_bytes())
    stamp = re.compile(rb'"timestamp":"[^"]*"')
    assert stamp.sub(b"", written[0]) == stamp.sub(b"", written[1])
