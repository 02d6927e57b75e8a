"""Fuzzing the relay engine (hypothesis).

The ARCHITECTURE's invariant: *any bytes given to handle return actions; anything else raised is a
bug*. Fed with random bytes, with mutations of valid requests and replies (real captures among
them), under configurations that switch on every optional path (option 82 with each policy, link
selection, server identifier override, trusted circuits).

And the forwarding property: a forwarded payload always decodes, its hops is the original's plus
one, and its giaddr is non-zero (the original's when that was non-zero, RFC 1542 §4.1.1).
"""

from __future__ import annotations

from ipaddress import IPv4Address

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_relay_engine import (
    CAPTURES,
    DHCP_SERVER,
    LAN1,
    LAN1_ADDR,
    LAN1_SECONDARY,
    LAN2,
    LAN2_ADDR,
    LIMITED_BROADCAST,
    OTHER_RELAY,
    PXE_SERVER,
    ROGUE,
    UP0,
    UP0_ADDR,
    make_engine,
    reply,
    request,
)

from boothop.relay.actions import Deliver, Drop, Forward, Outcome, RogueServer, Throttle, Warn
from boothop.relay.config import AgentPolicy, GiaddrMode
from boothop.relay.engine import RelayEngine
from boothop.relay.wire import (
    ZERO,
    AgentInfo,
    AgentSub,
    Datagram,
    MessageType,
    Op,
    Opt,
    decode,
    encode,
)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def engines() -> st.SearchStrategy[RelayEngine]:
    """Fresh engines under configurations that exercise every optional path."""
    plain = st.just(({}, {}))
    agent = st.builds(
        lambda policy, remote: (
            {"lan2": {"trusted": True}},
            {"agent_info": True, "agent_policy": policy, "remote_id": remote},
        ),
        st.sampled_from(AgentPolicy),
        st.sampled_from([None, b"router-7", b"r" * 200]),
    )
    link = st.just(
        (
            {
                "lan1": {
                    "link_selection": "up0",
                    "server_id_override": True,
                    "giaddr": LAN1_SECONDARY,
                }
            },
            {"max_packet_size": 1500},
        )
    )
    subnets = st.builds(
        lambda mode, vss: ({"lan1": {"giaddr_mode": mode, "vss": vss},
                            "lan2": {"giaddr_mode": mode}},
                           {"agent_info": True, "smart_retries": 1}),
        st.sampled_from(GiaddrMode),
        st.sampled_from([None, b"\x00blue", b"\xff"]),
    )
    return st.one_of(plain, agent, link, subnets).map(
        lambda choice: make_engine(choice[0], **choice[1]))


sources = st.sampled_from([ZERO, DHCP_SERVER, PXE_SERVER, ROGUE, LAN1_ADDR, OTHER_RELAY])
destinations = st.sampled_from([LIMITED_BROADCAST, LAN1_ADDR, UP0_ADDR, IPv4Address("10.1.0.255")])
ifindexes = st.sampled_from([UP0, LAN1, LAN2, 5, 6, 42])


def seeds() -> list[bytes]:
    built = [
        encode(request()),
        encode(request(MessageType.REQUEST, flags=0x8000, ciaddr=IPv4Address("10.1.0.9"))),
        encode(request(giaddr=OTHER_RELAY, hops=3)),
        encode(request(kind=None)),
        encode(
            request().with_option(
                Opt.RELAY_AGENT_INFO, AgentInfo(((1, b"x"), (5, bytes(4)))).encode()
            )
        ),
        encode(reply()),
        encode(reply(MessageType.NAK, yiaddr="0.0.0.0")),
        encode(
            reply(giaddr=UP0_ADDR).with_option(
                Opt.RELAY_AGENT_INFO,
                AgentInfo(((AgentSub.LINK_SELECTION, LAN1_ADDR.packed),)).encode(),
            )
        ),
        encode(
            reply(giaddr=LAN2_ADDR).with_option(
                Opt.RELAY_AGENT_INFO, AgentInfo(((AgentSub.CIRCUIT_ID, b"lan1"),)).encode()
            )
        ),
        encode(reply(extra=((Opt.VENDOR_CLASS_ID, b"PXEClient"),))),
        encode(
            reply().with_option(Opt.RELAY_AGENT_INFO, AgentInfo((
                (AgentSub.VSS, b"\x00blue"), (AgentSub.VSS_CONTROL, b""))).encode())
        ),
    ]
    return built + [path.read_bytes() for path in sorted(CAPTURES.glob("*.bin"))]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid message with a few bytes changed, some inserted or deleted, or cut short."""
    data = bytearray(draw(st.sampled_from(seeds())))
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["set", "insert", "delete", "truncate"]))
        position = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "set" and data:
            data[position] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[position : position + draw(st.integers(1, 8))]
        else:
            del data[position:]
    return bytes(data)


def check_outcome(engine: RelayEngine, outcome: object, received_before: int) -> None:
    assert isinstance(outcome, Outcome)
    assert outcome.actions, "every datagram ends in at least one action"
    for action in outcome.actions:
        assert isinstance(action, Forward | Deliver | Drop | Warn | Throttle | RogueServer)
        if isinstance(action, Forward | Deliver):
            decode(action.payload)  # never send what we could not parse back
    assert engine.counters.received == received_before + 1
    drops = sum(isinstance(a, Drop) for a in outcome.actions)
    assert sum(engine.counters.dropped.values()) >= drops


@FUZZ
@given(engines(), st.binary(max_size=1600), sources, destinations, ifindexes)
def test_any_bytes_return_an_outcome(
    engine: RelayEngine, payload: bytes, source: IPv4Address, destination: IPv4Address, ifindex: int
) -> None:
    outcome = engine.handle(Datagram(payload, source, 68, destination, ifindex), 0.0)
    check_outcome(engine, outcome, 0)


@FUZZ
@given(
    engines(),
    st.lists(st.tuples(mutated(), sources, destinations, ifindexes), min_size=1, max_size=5),
)
def test_mutated_requests_and_replies_return_an_outcome(
    engine: RelayEngine, datagrams: list[tuple[bytes, IPv4Address, IPv4Address, int]]
) -> None:
    """Several datagrams through one engine: state (the PXE warnings) carried between them."""
    for count, (payload, source, destination, ifindex) in enumerate(datagrams):
        outcome = engine.handle(Datagram(payload, source, 67, destination, ifindex), float(count))
        check_outcome(engine, outcome, count)


@st.composite
def generated_requests(draw: st.DrawFn) -> bytes:
    """Well-formed requests of every kind, with arbitrary hops, giaddr and extra options."""
    codes = draw(
        st.lists(st.integers(1, 254).filter(lambda c: c not in (52, 53)), unique=True, max_size=6)
    )
    message = request(
        draw(st.sampled_from([None, *MessageType])),
        extra=tuple((code, draw(st.binary(max_size=300))) for code in codes),
        hops=draw(st.integers(0, 255)),
        giaddr=draw(st.sampled_from([ZERO, OTHER_RELAY, LAN1_ADDR])),
        flags=draw(st.sampled_from([0, 0x8000])),
    )
    return encode(message, capacity=4096)


@FUZZ
@given(
    engines(),
    st.one_of(st.sampled_from(seeds()), mutated(), generated_requests()),
    sources,
    destinations,
    st.sampled_from([LAN1, LAN2]),
)
def test_a_forwarded_payload_decodes_with_hops_plus_one_and_a_nonzero_giaddr(
    engine: RelayEngine, payload: bytes, source: IPv4Address, destination: IPv4Address, ifindex: int
) -> None:
    outcome = engine.handle(Datagram(payload, source, 68, destination, ifindex), 0.0)
    sent = [a for a in outcome.actions if isinstance(a, Forward)]
    event("forwarded" if sent else "not forwarded")
    if not sent:
        return
    original = decode(payload)
    assert original.op == Op.BOOTREQUEST
    for forward in sent:
        relayed = decode(forward.payload)
        assert relayed.hops == original.hops + 1
        assert relayed.giaddr != ZERO
        if original.giaddr != ZERO:
            assert relayed.giaddr == original.giaddr
        assert (relayed.xid, relayed.chaddr, relayed.ciaddr, relayed.flags) == (
            original.xid,
            original.chaddr,
            original.ciaddr,
            original.flags,
        )
