"""The relay engine, sans IO: decoded messages in, actions and counters out.

Every rule of issue 2's "Relay engine" section, written from RFC 1542 §4, RFC 2131 §4.1,
RFC 3046, RFC 3527, RFC 5010 and RFC 5107. A test named ``test_rfcNNNN_...`` holds that RFC's
rule (``must``/``shall`` in the name for a MUST or SHALL); the quote stands in its docstring.

The host used throughout:

=====  ======  ====  =============================  ==========
index  name    up    addresses                      role
=====  ======  ====  =============================  ==========
2      up0     yes   10.99.0.1/24                   upstream (servers 10.99.0.10 DHCP, .20 PXE)
3      lan1    yes   10.1.0.1/24, 10.11.0.1/24      client-facing (a secondary subnet)
4      lan2    yes   10.2.0.1/24                    client-facing
5      lan3    no    10.3.0.1/24                    client-facing, down
6      lan4    yes   (none)                         client-facing, no address
=====  ======  ====  =============================  ==========
"""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

import pytest

from boothop.relay.actions import Deliver, DeliveryMode, Drop, Forward, Outcome, Warn
from boothop.relay.config import AgentPolicy, InterfaceConfig, RelayConfig
from boothop.relay.drops import DropReason
from boothop.relay.engine import RelayEngine
from boothop.relay.interfaces import Interface, InterfaceTable, Role
from boothop.relay.wire import (
    BROADCAST_FLAG,
    FLAG_UNICAST,
    MAGIC_COOKIE,
    ZERO,
    AgentInfo,
    AgentSub,
    Datagram,
    DhcpMessage,
    MessageType,
    Op,
    Opt,
    decode,
    encode,
    encoded_size,
)

CAPTURES = Path(__file__).parent / "captures"

DHCP_SERVER = IPv4Address("10.99.0.10")
PXE_SERVER = IPv4Address("10.99.0.20")
ROGUE = IPv4Address("10.99.0.66")
UP0_ADDR = IPv4Address("10.99.0.1")
LAN1_ADDR = IPv4Address("10.1.0.1")
LAN1_SECONDARY = IPv4Address("10.11.0.1")
LAN2_ADDR = IPv4Address("10.2.0.1")
LIMITED_BROADCAST = IPv4Address("255.255.255.255")
MAC = bytes.fromhex("525400a1b2c3")
OTHER_RELAY = IPv4Address("10.50.0.1")

UP0, LAN1, LAN2, LAN3, LAN4 = 2, 3, 4, 5, 6


def ip(text: str) -> IPv4Address:
    return IPv4Address(text)


def host_interfaces(*extra: Interface) -> InterfaceTable:
    return InterfaceTable.of(
        [
            Interface(UP0, "up0", True, (IPv4Interface("10.99.0.1/24"),)),
            Interface(
                LAN1, "lan1", True, (IPv4Interface("10.1.0.1/24"), IPv4Interface("10.11.0.1/24"))
            ),
            Interface(LAN2, "lan2", True, (IPv4Interface("10.2.0.1/24"),)),
            Interface(LAN3, "lan3", False, (IPv4Interface("10.3.0.1/24"),)),
            Interface(LAN4, "lan4", True, ()),
            *extra,
        ]
    )


def interface_configs(**per_interface: dict[str, object]) -> tuple[InterfaceConfig, ...]:
    """up0 upstream, lan1..lan4 client-facing; keyword arguments change one interface's settings."""
    configs = [InterfaceConfig("up0", Role.UPSTREAM)] + [
        InterfaceConfig(name) for name in ("lan1", "lan2", "lan3", "lan4")
    ]
    return tuple(
        dataclasses.replace(c, **per_interface.get(c.name, {}))
        for c in configs  # type: ignore[arg-type]
    )


def make_config(
    per_interface: dict[str, dict[str, object]] | None = None, **changes: object
) -> RelayConfig:
    fields: dict[str, object] = {
        "helpers": (DHCP_SERVER, PXE_SERVER),
        "interfaces": interface_configs(**(per_interface or {})),
    }
    fields.update(changes)
    return RelayConfig(**fields)  # type: ignore[arg-type]


def make_engine(
    per_interface: dict[str, dict[str, object]] | None = None, **changes: object
) -> RelayEngine:
    return RelayEngine(make_config(per_interface, **changes), host_interfaces())


def client_options(kind: int | None = MessageType.DISCOVER) -> tuple[tuple[int, bytes], ...]:
    head = ((Opt.MESSAGE_TYPE, bytes((kind,))),) if kind is not None else ()
    return (
        *head,
        (Opt.CLIENT_ID, b"\x01" + MAC),
        (Opt.HOST_NAME, b"pc-1"),
        (Opt.PARAMETER_REQUEST_LIST, bytes((1, 3, 6, 15))),
    )


def request(
    kind: int | None = MessageType.DISCOVER,
    *,
    extra: tuple[tuple[int, bytes], ...] = (),
    **fields: object,
) -> DhcpMessage:
    message = DhcpMessage(
        op=Op.BOOTREQUEST,
        xid=0x1234ABCD,
        chaddr=MAC + bytes(10),
        secs=3,
        options=client_options(kind) + extra,
    )
    return message.replace(**fields)


def reply(
    kind: int | None = MessageType.OFFER,
    *,
    yiaddr: str = "10.1.0.50",
    giaddr: IPv4Address = LAN1_ADDR,
    extra: tuple[tuple[int, bytes], ...] = (),
    **fields: object,
) -> DhcpMessage:
    head = ((Opt.MESSAGE_TYPE, bytes((kind,))),) if kind is not None else ()
    message = DhcpMessage(
        op=Op.BOOTREPLY,
        xid=0x1234ABCD,
        chaddr=MAC + bytes(10),
        hops=1,
        yiaddr=ip(yiaddr),
        giaddr=giaddr,
        options=(
            *head,
            (Opt.SERVER_ID, DHCP_SERVER.packed),
            (Opt.LEASE_TIME, (3600).to_bytes(4, "big")),
            (Opt.SUBNET_MASK, bytes((255, 255, 255, 0))),
            *extra,
        ),
    )
    return message.replace(**fields)


def from_client(
    message: DhcpMessage | bytes,
    ifindex: int = LAN1,
    *,
    source: IPv4Address = ZERO,
    destination: IPv4Address = LIMITED_BROADCAST,
) -> Datagram:
    payload = message if isinstance(message, bytes) else encode(message)
    return Datagram(payload, source, 68, destination, ifindex)


def from_server(
    message: DhcpMessage | bytes, source: IPv4Address = DHCP_SERVER, ifindex: int = UP0
) -> Datagram:
    payload = message if isinstance(message, bytes) else encode(message)
    return Datagram(payload, source, 67, LAN1_ADDR, ifindex, port=67)


def drop_reason(outcome: Outcome) -> DropReason:
    """The one Drop of an outcome that must be a drop and nothing else."""
    assert len(outcome.actions) == 1, outcome.actions
    (action,) = outcome.actions
    assert isinstance(action, Drop), action
    return action.reason


def forwards(outcome: Outcome) -> list[Forward]:
    assert outcome.actions and all(isinstance(a, Forward) for a in outcome.actions), outcome.actions
    return [a for a in outcome.actions if isinstance(a, Forward)]


def forwarded(outcome: Outcome) -> DhcpMessage:
    """The message sent to the helpers (the same payload to each)."""
    sent = forwards(outcome)
    assert len({f.payload for f in sent}) == 1
    return decode(sent[0].payload)


def delivery(outcome: Outcome) -> Deliver:
    delivers = [a for a in outcome.actions if isinstance(a, Deliver)]
    assert len(delivers) == 1 and not any(isinstance(a, Drop) for a in outcome.actions), (
        outcome.actions
    )
    return delivers[0]


def warnings(outcome: Outcome) -> list[Warn]:
    return [a for a in outcome.actions if isinstance(a, Warn)]


def agent_info(message: DhcpMessage) -> AgentInfo:
    value = message.get(Opt.RELAY_AGENT_INFO)
    assert value is not None, "no option 82"
    return AgentInfo.decode(value)


def with_agent(message: DhcpMessage, *subs: tuple[int, bytes]) -> DhcpMessage:
    return message.with_option(Opt.RELAY_AGENT_INFO, AgentInfo(tuple(subs)).encode())


# ================================================================================================
# Requests: forwarding, hops and giaddr (RFC 1542 §4.1.1)
# ================================================================================================


def test_request_is_forwarded_to_every_helper() -> None:
    engine = make_engine()
    outcome = engine.handle(from_client(request()), now=0.0)
    sent = forwards(outcome)
    assert [f.server for f in sent] == [DHCP_SERVER, PXE_SERVER]
    assert sent[0].payload == sent[1].payload
    assert engine.counters.received == 1 and engine.counters.requests == 1
    assert engine.counters.forwarded == {DHCP_SERVER: 1, PXE_SERVER: 1}
    assert not engine.counters.dropped


def test_per_interface_helpers_override_the_global_list() -> None:
    own = (ip("10.99.0.30"), ip("10.99.0.31"))
    engine = make_engine({"lan2": {"helpers": own}})
    assert [f.server for f in forwards(engine.handle(from_client(request(), LAN2), 0.0))] == list(
        own
    )
    # lan1 keeps the global list.
    assert [f.server for f in forwards(engine.handle(from_client(request(), LAN1), 0.0))] == [
        DHCP_SERVER,
        PXE_SERVER,
    ]
    assert engine.counters.forwarded == {own[0]: 1, own[1]: 1, DHCP_SERVER: 1, PXE_SERVER: 1}


def test_no_helper_configured_drops() -> None:
    engine = make_engine(helpers=())
    assert drop_reason(engine.handle(from_client(request()), 0.0)) is DropReason.NO_HELPERS
    assert engine.counters.dropped[DropReason.NO_HELPERS] == 1


def test_rfc1542_must_fill_zero_giaddr_with_the_receiving_interface_address() -> None:
    """RFC 1542 §4.1.1: "If this field is zero, the relay agent MUST fill this field with the IP
    address of the interface on which the request was received." """
    engine = make_engine()
    assert forwarded(engine.handle(from_client(request(), LAN1), 0.0)).giaddr == LAN1_ADDR
    assert forwarded(engine.handle(from_client(request(), LAN2), 0.0)).giaddr == LAN2_ADDR


def test_configured_giaddr_selects_a_secondary_subnet() -> None:
    """RFC 1542 §4.1.1: with several addresses the relay "SHOULD choose one IP address associated
    with that interface and use it consistently"; the configuration picks which."""
    engine = make_engine({"lan1": {"giaddr": LAN1_SECONDARY}})
    for _ in range(2):
        assert forwarded(engine.handle(from_client(request()), 0.0)).giaddr == LAN1_SECONDARY


def test_configured_giaddr_that_the_interface_does_not_hold_drops() -> None:
    engine = make_engine({"lan1": {"giaddr": ip("10.12.0.1")}})
    assert (
        drop_reason(engine.handle(from_client(request()), 0.0)) is DropReason.NO_INTERFACE_ADDRESS
    )


def test_rfc1542_must_not_modify_a_nonzero_giaddr() -> None:
    """RFC 1542 §4.1.1: "If the 'giaddr' field contains some non-zero value, the 'giaddr' field
    MUST NOT be modified." Another relay, closer to the client, already set it."""
    engine = make_engine()
    relayed = forwarded(
        engine.handle(from_client(request(giaddr=OTHER_RELAY, hops=1), source=OTHER_RELAY), 0.0)
    )
    assert relayed.giaddr == OTHER_RELAY
    assert relayed.hops == 2


def test_rfc3046_shall_forward_a_nonzero_giaddr_request_without_adding_option82() -> None:
    """RFC 3046 §2.1.1: "the relay agent SHALL forward any received DHCP packet with a valid
    non-zero giaddr WITHOUT adding any relay agent options"."""
    engine = make_engine(agent_info=True)
    relayed = forwarded(
        engine.handle(from_client(request(giaddr=OTHER_RELAY), source=OTHER_RELAY), 0.0)
    )
    assert not relayed.has(Opt.RELAY_AGENT_INFO)
    assert engine.counters.agent_info_added == 0


def test_rfc3046_shall_discard_a_request_whose_giaddr_spoofs_our_address() -> None:
    """RFC 3046 §2.1.1: relay agents "SHALL discard the packet if the giaddr spoofs a giaddr
    address implemented by the local agent itself" (a request we relayed, coming back)."""
    engine = make_engine(agent_info=True)
    for ours in (LAN1_ADDR, LAN1_SECONDARY, UP0_ADDR, LAN2_ADDR):
        outcome = engine.handle(
            from_client(request(giaddr=ours, hops=1), source=ip("10.1.0.77")), 0.0
        )
        assert drop_reason(outcome) is DropReason.REQUEST_FROM_SELF
    assert engine.counters.forwarded == {}


def test_rfc1542_must_increment_hops_and_preserve_all_other_fields() -> None:
    """RFC 1542 §4.1.1: "The value of the 'hops' field MUST be incremented. All other BOOTP
    fields MUST be preserved intact." (giaddr excepted when it was zero)."""
    original = request(
        MessageType.REQUEST,
        hops=2,
        flags=BROADCAST_FLAG,
        ciaddr=ip("10.1.0.50"),
        siaddr=ip("10.99.0.5"),
        sname=b"boot-host",
        file=b"pxelinux.0",
        secs=17,
    )
    engine = make_engine()
    relayed = forwarded(engine.handle(from_client(original), 0.0))
    assert relayed == original.replace(hops=3, giaddr=LAN1_ADDR)


@pytest.mark.parametrize(
    "name", ["dhclient-discover", "dhcpcd-request", "udhcpc-pxe-discover", "ipxe-request"]
)
def test_real_client_requests_are_relayed_intact(name: str) -> None:
    payload = (CAPTURES / f"{name}.bin").read_bytes()
    engine = make_engine()
    relayed = forwarded(engine.handle(from_client(payload), 0.0))
    assert relayed == decode(payload).replace(hops=1, giaddr=LAN1_ADDR)


def test_rfc1542_must_preserve_the_fields_of_a_request_larger_than_a_frame() -> None:
    """RFC 1542 §4.1.1: "All other BOOTP fields MUST be preserved intact": a request that arrived
    larger than 1472 bytes is not repacked into 'file'/'sname' (option overload) to relay it."""
    big = request(extra=tuple((code, bytes(250)) for code in range(224, 229)))  # site-specific
    payload = encode(big, capacity=2000)
    assert len(payload) > 1472
    engine = make_engine()
    sent = forwards(engine.handle(from_client(payload), 0.0))[0].payload
    assert len(sent) == len(payload)
    assert sent[44:236] == payload[44:236]  # sname and file untouched
    assert decode(sent) == big.replace(hops=1, giaddr=LAN1_ADDR)


def test_hop_limit_defaults_to_10() -> None:
    engine = make_engine()
    assert forwarded(engine.handle(from_client(request(hops=9)), 0.0)).hops == 10
    assert drop_reason(engine.handle(from_client(request(hops=10)), 0.0)) is DropReason.HOP_LIMIT
    assert drop_reason(engine.handle(from_client(request(hops=200)), 0.0)) is DropReason.HOP_LIMIT
    assert engine.counters.dropped[DropReason.HOP_LIMIT] == 2


def test_hop_limit_is_configurable() -> None:
    engine = make_engine(max_hops=3)
    assert forwarded(engine.handle(from_client(request(hops=2)), 0.0)).hops == 3
    assert drop_reason(engine.handle(from_client(request(hops=3)), 0.0)) is DropReason.HOP_LIMIT


def test_rfc1542_must_discard_hops_exceeding_16_whatever_the_configured_limit() -> None:
    """RFC 1542 §4.1.1: "The relay agent MUST silently discard BOOTREQUEST messages whose 'hops'
    field exceeds the value 16." A limit configured above 16 cannot lift it."""
    engine = make_engine(max_hops=64)
    assert forwarded(engine.handle(from_client(request(hops=16)), 0.0)).hops == 17
    assert drop_reason(engine.handle(from_client(request(hops=17)), 0.0)) is DropReason.HOP_LIMIT


# ================================================================================================
# Requests: where they may come from
# ================================================================================================


def test_request_on_an_upstream_only_interface_is_dropped() -> None:
    engine = make_engine()
    outcome = engine.handle(from_client(request(), UP0), 0.0)
    assert drop_reason(outcome) is DropReason.NOT_CLIENT_FACING
    assert engine.counters.dropped[DropReason.NOT_CLIENT_FACING] == 1


def test_request_on_an_interface_outside_the_configuration_is_dropped() -> None:
    extra = Interface(9, "mgmt0", True, (IPv4Interface("192.168.7.1/24"),))
    engine = RelayEngine(make_config(), host_interfaces(extra))
    assert (
        drop_reason(engine.handle(from_client(request(), 9), 0.0)) is DropReason.NOT_CLIENT_FACING
    )


def test_without_configured_interfaces_every_interface_faces_clients() -> None:
    """dhcrelay without -i: every interface with an address, in both roles."""
    engine = RelayEngine(RelayConfig(helpers=(DHCP_SERVER,)), host_interfaces())
    assert forwarded(engine.handle(from_client(request(), UP0), 0.0)).giaddr == UP0_ADDR


def test_request_on_an_unknown_interface_is_dropped() -> None:
    engine = make_engine()
    assert (
        drop_reason(engine.handle(from_client(request(), 42), 0.0)) is DropReason.UNKNOWN_INTERFACE
    )
    assert engine.counters.dropped[DropReason.UNKNOWN_INTERFACE] == 1


def test_request_on_an_interface_that_is_down_is_dropped() -> None:
    engine = make_engine()
    assert (
        drop_reason(engine.handle(from_client(request(), LAN3), 0.0)) is DropReason.INTERFACE_DOWN
    )


def test_request_from_one_of_our_own_addresses_is_dropped() -> None:
    engine = make_engine()
    for ours in (LAN1_ADDR, UP0_ADDR):
        outcome = engine.handle(from_client(request(), source=ours), 0.0)
        assert drop_reason(outcome) is DropReason.REQUEST_FROM_SELF
    assert engine.counters.dropped[DropReason.REQUEST_FROM_SELF] == 2


def test_request_on_an_interface_without_an_address_is_dropped() -> None:
    engine = make_engine()
    assert (
        drop_reason(engine.handle(from_client(request(), LAN4), 0.0))
        is DropReason.NO_INTERFACE_ADDRESS
    )


# ================================================================================================
# Option 82 on requests (RFC 3046)
# ================================================================================================


def test_option82_is_off_by_default() -> None:
    """RFC 3046 §2.1: adding it "SHOULD be configurable, and SHOULD be disabled by default"."""
    engine = make_engine()
    assert not forwarded(engine.handle(from_client(request()), 0.0)).has(Opt.RELAY_AGENT_INFO)
    assert engine.counters.agent_info_added == 0


def test_rfc3046_shall_add_option82_as_the_last_option() -> None:
    """RFC 3046 §2.1: "A DHCP relay agent adding a Relay Agent Information field SHALL add it as
    the last option (but before 'End Option' 255, if present)"; circuit-id defaults to the
    interface name (as dhcrelay -a), remote-id is configurable."""
    engine = make_engine(agent_info=True, remote_id=b"router-7")
    sent = forwards(engine.handle(from_client(request()), 0.0))[0].payload
    relayed = decode(sent)
    assert relayed.options[-1][0] == Opt.RELAY_AGENT_INFO
    assert relayed.options[:-1] == client_options()
    agent = agent_info(relayed)
    assert agent.circuit_id == b"lan1"
    assert agent.remote_id == b"router-7"
    # On the wire too: option 82 then END, nothing but padding after.
    value = relayed.get(Opt.RELAY_AGENT_INFO)
    assert value is not None
    tail = bytes((Opt.RELAY_AGENT_INFO, len(value))) + value + b"\xff"
    end = sent.index(tail) + len(tail)
    assert sent[end:] == bytes(len(sent) - end)
    assert engine.counters.agent_info_added == 1


def test_option82_without_remote_id_carries_only_the_circuit_id() -> None:
    engine = make_engine(agent_info=True)
    agent = agent_info(forwarded(engine.handle(from_client(request(), LAN2), 0.0)))
    assert agent.suboptions == ((AgentSub.CIRCUIT_ID, b"lan2"),)


def test_option82_circuit_and_remote_id_configured_per_interface() -> None:
    engine = make_engine(
        {"lan1": {"circuit_id": b"vlan-101", "remote_id": b"sw-3/port-7"}},
        agent_info=True,
        remote_id=b"global",
    )
    agent = agent_info(forwarded(engine.handle(from_client(request()), 0.0)))
    assert (agent.circuit_id, agent.remote_id) == (b"vlan-101", b"sw-3/port-7")
    other = agent_info(forwarded(engine.handle(from_client(request(), LAN2), 0.0)))
    assert (other.circuit_id, other.remote_id) == (b"lan2", b"global")


def test_rfc8357_5_1_relay_port_must_include_the_relay_source_port_suboption() -> None:
    """RFC 8357 §5.1: a relay agent using a UDP source port other than 67 "MUST include the
    'Relay Source Port' sub-option" (code 19, length 0) in option 82; without -a that
    sub-option is all it adds."""
    engine = make_engine(relay_port=1067)
    relayed = forwarded(engine.handle(from_client(request()), 0.0))
    assert relayed.options[-1][0] == Opt.RELAY_AGENT_INFO
    assert agent_info(relayed).suboptions == ((AgentSub.RELAY_SOURCE_PORT, b""),)
    assert relayed.get(Opt.RELAY_AGENT_INFO) == bytes((19, 0))
    assert engine.counters.agent_info_added == 1


def test_rfc8357_relay_source_port_goes_after_circuit_and_remote_id_with_a() -> None:
    engine = make_engine(agent_info=True, remote_id=b"router-7", relay_port=1067)
    agent = agent_info(forwarded(engine.handle(from_client(request(), LAN2), 0.0)))
    assert agent.suboptions == ((AgentSub.CIRCUIT_ID, b"lan2"), (AgentSub.REMOTE_ID, b"router-7"),
                                (AgentSub.RELAY_SOURCE_PORT, b""))


def test_rfc3046_2_1_untrusted_circuit_with_giaddr_zero_and_option82_shall_be_discarded() -> None:
    """RFC 3046 §2.1: "Relay agents receiving a DHCP packet from an untrusted circuit with giaddr
    set to zero (indicating that they are the first-hop router) but with a Relay Agent Information
    option already present in the packet SHALL discard the packet and increment an error count." """
    injected = with_agent(request(), (AgentSub.CIRCUIT_ID, b"spoofed"))
    for agent_on in (True, False):
        engine = make_engine(agent_info=agent_on)
        outcome = engine.handle(from_client(injected), 0.0)
        assert drop_reason(outcome) is DropReason.UNTRUSTED_AGENT_OPTION
        assert engine.counters.dropped[DropReason.UNTRUSTED_AGENT_OPTION] == 1
        assert engine.counters.forwarded == {}


def test_untrusted_circuit_still_relays_option82_of_a_downstream_relay() -> None:
    """The §2.1 discard is for giaddr 0 only; a relay closer to the client may add option 82."""
    engine = make_engine(agent_info=True)
    relayed_in = with_agent(request(giaddr=OTHER_RELAY), (AgentSub.CIRCUIT_ID, b"far"))
    relayed = forwarded(engine.handle(from_client(relayed_in, source=OTHER_RELAY), 0.0))
    assert agent_info(relayed).suboptions == ((AgentSub.CIRCUIT_ID, b"far"),)


CLIENT_AGENT = ((AgentSub.CIRCUIT_ID, b"bridge-port-4"), (77, b"keep-me"))


def trusted_engine(policy: AgentPolicy) -> RelayEngine:
    return make_engine({"lan1": {"trusted": True}}, agent_info=True, agent_policy=policy)


def test_trusted_circuit_policy_append_keeps_theirs_and_adds_ours_last() -> None:
    engine = trusted_engine(AgentPolicy.APPEND)
    relayed = forwarded(engine.handle(from_client(with_agent(request(), *CLIENT_AGENT)), 0.0))
    assert relayed.options[-1][0] == Opt.RELAY_AGENT_INFO
    assert agent_info(relayed).suboptions == (*CLIENT_AGENT, (AgentSub.CIRCUIT_ID, b"lan1"))
    assert relayed.giaddr == LAN1_ADDR


def test_trusted_circuit_policy_replace_puts_only_ours() -> None:
    engine = trusted_engine(AgentPolicy.REPLACE)
    relayed = forwarded(engine.handle(from_client(with_agent(request(), *CLIENT_AGENT)), 0.0))
    assert relayed.options[-1][0] == Opt.RELAY_AGENT_INFO
    assert agent_info(relayed).suboptions == ((AgentSub.CIRCUIT_ID, b"lan1"),)
    assert engine.counters.agent_info_added == 1


def test_trusted_circuit_policy_forward_leaves_theirs_untouched() -> None:
    """RFC 3046 §2.1: with a trusted bridge's option, "the relay agent does NOT add a 'second'
    relay agent option, but forwards the DHCP packet ... setting the giaddr field"."""
    engine = trusted_engine(AgentPolicy.FORWARD)
    original = with_agent(request(), *CLIENT_AGENT)
    relayed = forwarded(engine.handle(from_client(original), 0.0))
    assert relayed == original.replace(hops=1, giaddr=LAN1_ADDR)
    assert engine.counters.agent_info_added == 0
    assert engine.counters.agent_info_omitted_oversize == 0


def test_trusted_circuit_policy_forward_never_counts_an_omission() -> None:
    """Nothing was to be added, so nothing was omitted, however large the request."""
    engine = make_engine(
        {"lan1": {"trusted": True}},
        agent_info=True,
        agent_policy=AgentPolicy.FORWARD,
        max_packet_size=300,
    )
    big = with_agent(request(extra=((224, bytes(200)),)), *CLIENT_AGENT)
    assert forwarded(engine.handle(from_client(big), 0.0)) == big.replace(hops=1, giaddr=LAN1_ADDR)
    assert engine.counters.agent_info_omitted_oversize == 0


def test_trusted_circuit_policy_discard_drops() -> None:
    engine = trusted_engine(AgentPolicy.DISCARD)
    outcome = engine.handle(from_client(with_agent(request(), *CLIENT_AGENT)), 0.0)
    assert drop_reason(outcome) is DropReason.AGENT_OPTION_DISCARD
    # A request without option 82 gets ours as usual.
    assert agent_info(forwarded(engine.handle(from_client(request()), 0.0))).circuit_id == b"lan1"


def test_trusted_circuit_option82_kept_when_this_relay_adds_none() -> None:
    engine = make_engine({"lan1": {"trusted": True}})
    original = with_agent(request(), *CLIENT_AGENT)
    assert forwarded(engine.handle(from_client(original), 0.0)) == original.replace(
        hops=1, giaddr=LAN1_ADDR
    )


def test_rfc3046_shall_forward_without_option82_past_the_maximum_size() -> None:
    """RFC 3046 §2.1: "Packets which, after appending the Relay Agent Information option, would
    exceed this configured maximum size shall be forwarded WITHOUT adding the Agent Information
    option. An error counter SHOULD be incremented in this case." """
    base = request()
    with_ours = with_agent(base.replace(hops=1, giaddr=LAN1_ADDR), (AgentSub.CIRCUIT_ID, b"lan1"))
    exact = encoded_size(with_ours)
    # Just fits: added.
    engine = make_engine(agent_info=True, max_packet_size=exact)
    assert forwarded(engine.handle(from_client(base), 0.0)).has(Opt.RELAY_AGENT_INFO)
    # One byte short: forwarded to every helper without it, and counted.
    engine = make_engine(agent_info=True, max_packet_size=exact - 1)
    outcome = engine.handle(from_client(base), 0.0)
    assert len(forwards(outcome)) == 2
    assert forwarded(outcome) == base.replace(hops=1, giaddr=LAN1_ADDR)
    assert engine.counters.agent_info_omitted_oversize == 1
    assert engine.counters.agent_info_added == 0


def test_option82_never_grows_a_request_past_576_by_default() -> None:
    engine = make_engine(agent_info=True, remote_id=b"r" * 40)
    for padding in range(200, 330, 7):
        message = request(extra=((224, bytes(padding)),))
        # One request of the client every 7 s: under its rate limit.
        payload = forwards(engine.handle(from_client(message), float(padding)))[0].payload
        if decode(payload).has(Opt.RELAY_AGENT_INFO):
            assert len(payload) <= 576
    assert engine.counters.agent_info_added > 0
    assert engine.counters.agent_info_omitted_oversize > 0


# ================================================================================================
# Link selection (RFC 3527), server identifier override (RFC 5107) and flags (RFC 5010)
# ================================================================================================


def test_rfc3527_link_selection_puts_upstream_address_in_giaddr_and_client_link_in_suboption5() -> (
    None
):
    """RFC 3527 §3: the sub-option names the client's subnet when it must "be different from the
    IP address the DHCP server should use when communicating with the relay agent" (giaddr)."""
    engine = make_engine({"lan1": {"link_selection": "up0"}})
    relayed = forwarded(engine.handle(from_client(request()), 0.0))
    assert relayed.giaddr == UP0_ADDR
    agent = agent_info(relayed)
    assert agent.link_selection == LAN1_ADDR
    assert agent.circuit_id == b"lan1"
    assert relayed.options[-1][0] == Opt.RELAY_AGENT_INFO


def test_link_selection_names_the_configured_secondary_subnet() -> None:
    engine = make_engine({"lan1": {"link_selection": "up0", "giaddr": LAN1_SECONDARY}})
    relayed = forwarded(engine.handle(from_client(request()), 0.0))
    assert relayed.giaddr == UP0_ADDR
    assert agent_info(relayed).link_selection == LAN1_SECONDARY


def test_link_selection_through_an_interface_without_address_drops() -> None:
    engine = make_engine({"lan1": {"link_selection": "lan4"}})
    assert (
        drop_reason(engine.handle(from_client(request()), 0.0)) is DropReason.NO_INTERFACE_ADDRESS
    )


@pytest.mark.parametrize(
    ("destination", "flags"),
    [
        (LIMITED_BROADCAST, 0),
        (ip("10.1.0.255"), 0),  # the subnet's directed broadcast
        (ip("10.11.0.255"), 0),  # the secondary subnet's
        (LAN1_ADDR, FLAG_UNICAST),  # a RENEWING client unicasting to the override address
    ],
)
def test_rfc5107_server_id_override_with_rfc5010_unicast_flag(
    destination: IPv4Address, flags: int
) -> None:
    """RFC 5107 §4: relays using this sub-option "SHOULD also implement and use the DHCPv4 Relay
    Agent Flags Suboption in order to specify whether the DHCP relay agent received the original
    message as a broadcast or unicast". RFC 5010 §3: the unicast flag is the high bit (bit 0)."""
    engine = make_engine({"lan1": {"server_id_override": True}})
    source = ZERO if flags == 0 else ip("10.1.0.50")
    message = request(MessageType.REQUEST, ciaddr=source)
    agent = agent_info(
        forwarded(engine.handle(from_client(message, source=source, destination=destination), 0.0))
    )
    assert agent.server_id_override == LAN1_ADDR
    assert agent.flags == flags


def test_server_id_override_names_the_configured_giaddr_and_combines_with_link_selection() -> None:
    engine = make_engine(
        {"lan1": {"server_id_override": True, "link_selection": "up0", "giaddr": LAN1_SECONDARY}}
    )
    relayed = forwarded(engine.handle(from_client(request()), 0.0))
    agent = agent_info(relayed)
    assert relayed.giaddr == UP0_ADDR
    assert agent.link_selection == LAN1_SECONDARY
    assert agent.server_id_override == LAN1_SECONDARY
    assert agent.flags == 0


# ================================================================================================
# BOOTP (no option 53) requests
# ================================================================================================


def test_bootp_request_with_magic_cookie_is_relayed_with_option82() -> None:
    """RFC 3046 §2.1: option 82 goes in "any recognized BOOTP or DHCP packet"."""
    engine = make_engine(agent_info=True)
    bootp = request(kind=None)
    outcome = engine.handle(from_client(bootp), 0.0)
    relayed = forwarded(outcome)
    assert relayed.message_type is None
    assert relayed.giaddr == LAN1_ADDR and relayed.hops == 1
    assert agent_info(relayed).circuit_id == b"lan1"
    assert outcome.message_type == "BOOTP"


def rfc951_request() -> DhcpMessage:
    """A BOOTP request with an RFC 1497-less vendor area: no magic cookie, no options field."""
    return DhcpMessage(
        op=Op.BOOTREQUEST, xid=77, chaddr=MAC + bytes(10), vendor=b"\x01\x02\x03\x04vend"
    )


@pytest.mark.parametrize("agent_on", [False, True])
def test_rfc951_bootp_request_without_cookie_is_relayed_unchanged_but_hops_and_giaddr(
    agent_on: bool,
) -> None:
    """It has no options field to carry option 82: relayed as RFC 1542 says, never dropped."""
    engine = make_engine(agent_info=agent_on)
    payload = encode(rfc951_request())
    assert payload[236:240] != MAGIC_COOKIE
    outcome = engine.handle(from_client(payload), 0.0)
    assert len(forwards(outcome)) == 2
    assert forwarded(outcome) == rfc951_request().replace(hops=1, giaddr=LAN1_ADDR)


def test_rfc951_bootp_request_under_link_selection_uses_the_client_link_address() -> None:
    engine = make_engine({"lan1": {"link_selection": "up0"}})
    assert forwarded(engine.handle(from_client(rfc951_request()), 0.0)).giaddr == LAN1_ADDR


# ================================================================================================
# Replies: who may send them, and to which giaddr (RFC 1542 §4.1.2)
# ================================================================================================


def test_reply_from_a_host_that_is_not_a_configured_server_is_dropped_and_counted() -> None:
    engine = make_engine()
    outcome = engine.handle(from_server(reply(), source=ROGUE), 0.0)
    assert drop_reason(outcome) is DropReason.REPLY_FROM_NON_SERVER
    assert engine.counters.dropped[DropReason.REPLY_FROM_NON_SERVER] == 1
    assert engine.counters.replies == 1 and not engine.counters.delivered


def test_replies_accepted_from_every_configured_server() -> None:
    per_interface = ip("10.99.0.30")
    extra = ip("10.99.0.40")
    engine = make_engine({"lan2": {"helpers": (per_interface,)}}, extra_servers=(extra,))
    for server in (DHCP_SERVER, PXE_SERVER, per_interface, extra):
        delivery(engine.handle(from_server(reply(), source=server), 0.0))


def test_rfc1542_must_discard_a_reply_whose_giaddr_is_not_ours() -> None:
    """RFC 1542 §4.1.2: "If the content of the 'giaddr' field does not match one of the relay
    agent's directly-connected logical interfaces, the BOOTREPLY message MUST be silently
    discarded." """
    engine = make_engine()
    for giaddr in (ZERO, OTHER_RELAY, ip("10.1.0.2")):
        outcome = engine.handle(from_server(reply(giaddr=giaddr)), 0.0)
        assert drop_reason(outcome) is DropReason.UNKNOWN_GIADDR
    assert engine.counters.dropped[DropReason.UNKNOWN_GIADDR] == 3


def test_reply_on_a_client_facing_interface_is_dropped_even_from_a_server_address() -> None:
    """A host on lan1 spoofing the server's address, its circuit-id naming lan2: not delivered
    anywhere (dhcrelay delivers it on lan2)."""
    engine = make_engine({"lan2": {"circuit_id": b"vlan-102"}}, agent_info=True)
    for spoofed in (
        reply(),
        with_agent(reply(giaddr=LAN2_ADDR, yiaddr="10.2.0.9"), (AgentSub.CIRCUIT_ID, b"vlan-102")),
    ):
        outcome = engine.handle(from_server(spoofed, ifindex=LAN1), 0.0)
        assert drop_reason(outcome) is DropReason.REPLY_WRONG_INTERFACE
    both = make_engine({"lan1": {"role": Role.BOTH}})
    both.handle(from_server(reply(giaddr=LAN2_ADDR), ifindex=LAN1), 0.0)
    assert both.counters.dropped == {DropReason.REPLY_WRONG_INTERFACE: 1}  # 10.99.0.10: up0's
    assert engine.counters.dropped == {DropReason.REPLY_WRONG_INTERFACE: 2}
    assert not engine.counters.delivered


def test_reply_on_an_unknown_interface_is_dropped() -> None:
    engine = make_engine()
    outcome = engine.handle(from_server(reply(), ifindex=99), 0.0)
    assert drop_reason(outcome) is DropReason.REPLY_WRONG_INTERFACE


def test_reply_without_roles_from_a_connected_server_must_arrive_on_its_subnet() -> None:
    """Every interface plays both roles: a server on up0's subnet is reached only via up0."""
    engine = RelayEngine(make_config(interfaces=()), host_interfaces())
    for wrong in (LAN1, LAN2):
        outcome = engine.handle(from_server(reply(giaddr=LAN2_ADDR), ifindex=wrong), 0.0)
        assert drop_reason(outcome) is DropReason.REPLY_WRONG_INTERFACE
    assert delivery(engine.handle(from_server(reply(giaddr=LAN2_ADDR)), 0.0)).ifindex == LAN2


def test_reply_without_roles_from_a_routed_server_must_not_arrive_where_it_is_delivered() -> None:
    routed = ip("192.0.2.10")
    engine = RelayEngine(make_config(interfaces=(), helpers=(routed,)), host_interfaces())
    outcome = engine.handle(from_server(reply(), source=routed, ifindex=LAN1), 0.0)
    assert drop_reason(outcome) is DropReason.REPLY_WRONG_INTERFACE
    assert delivery(engine.handle(from_server(reply(), source=routed), 0.0)).ifindex == LAN1


def test_reply_from_a_server_on_one_of_our_own_addresses_is_accepted_on_any_interface() -> None:
    """A server on the router answers through loopback; from outside, the kernel drops packets
    with a local source address (martians), so no ingress check is needed."""
    lo = Interface(1, "lo", True, (IPv4Interface("127.0.0.1/8"),))
    engine = RelayEngine(
        make_config(interfaces=(), helpers=(UP0_ADDR,)), host_interfaces(lo)
    )
    assert delivery(engine.handle(from_server(reply(), source=UP0_ADDR, ifindex=1), 0.0))


def test_reply_to_the_upstream_interface_address_without_option82_is_dropped() -> None:
    engine = make_engine()
    outcome = engine.handle(from_server(reply(giaddr=UP0_ADDR)), 0.0)
    assert drop_reason(outcome) is DropReason.NOT_CLIENT_FACING


def test_reply_for_an_interface_that_is_down_is_dropped() -> None:
    engine = make_engine()
    outcome = engine.handle(from_server(reply(giaddr=ip("10.3.0.1"))), 0.0)
    assert drop_reason(outcome) is DropReason.INTERFACE_DOWN


def test_reply_delivered_on_the_interface_that_owns_giaddr() -> None:
    engine = make_engine()
    lan2 = delivery(engine.handle(from_server(reply(giaddr=LAN2_ADDR, yiaddr="10.2.0.9")), 0.0))
    assert (lan2.ifindex, lan2.ifname, lan2.source) == (LAN2, "lan2", LAN2_ADDR)
    secondary = delivery(
        engine.handle(from_server(reply(giaddr=LAN1_SECONDARY, yiaddr="10.11.0.9")), 0.0)
    )
    assert (secondary.ifindex, secondary.ifname) == (LAN1, "lan1")


def test_reply_source_is_the_configured_giaddr() -> None:
    engine = make_engine({"lan1": {"giaddr": LAN1_SECONDARY}})
    sent = delivery(
        engine.handle(from_server(reply(giaddr=LAN1_SECONDARY, yiaddr="10.11.0.9")), 0.0)
    )
    assert sent.source == LAN1_SECONDARY


# ================================================================================================
# Replies: option 82 (RFC 3046) and the choice of interface
# ================================================================================================


def test_rfc3046_2_1_relay_must_remove_the_echoed_option82() -> None:
    """RFC 3046 §2.1: "The Relay Agent Information option echoed by a server MUST be removed by
    either the relay agent or the trusted downstream network element which added it when
    forwarding a server-to-client response back to the client." """
    engine = make_engine(agent_info=True, remote_id=b"router-7")
    echoed = with_agent(reply(), (AgentSub.CIRCUIT_ID, b"lan1"), (AgentSub.REMOTE_ID, b"router-7"))
    sent = delivery(engine.handle(from_server(echoed), 0.0))
    client_sees = decode(sent.payload)
    assert not client_sees.has(Opt.RELAY_AGENT_INFO)
    assert client_sees == reply()


def test_rfc3046_2_1_relay_port_option82_echoed_is_removed_and_the_port_counted() -> None:
    """Our option 82 (only RFC 8357's sub-option 19 without -a) comes back on the relay port
    and is removed as RFC 3046 §2.1 says; the replies are counted per port they arrived on."""
    engine = make_engine(relay_port=1067)
    echoed = with_agent(reply(), (AgentSub.RELAY_SOURCE_PORT, b""))
    datagram = from_server(echoed)
    datagram.port = 1067
    assert decode(delivery(engine.handle(datagram, 0.0)).payload) == reply()
    assert engine.counters.snapshot()["replies_by_port"] == {"1067": 1}


def test_option82_of_a_trusted_bridge_is_left_for_the_bridge_to_remove() -> None:
    """This relay added no option 82 (-a off): the element that added it removes it (dhcrelay)."""
    engine = make_engine({"lan1": {"trusted": True}})
    echoed = with_agent(reply(), *CLIENT_AGENT)
    assert decode(delivery(engine.handle(from_server(echoed), 0.0)).payload) == echoed


def test_reply_circuit_id_must_name_the_interface_of_its_giaddr() -> None:
    """giaddr names lan1, the circuit-id lan2: dhcrelay delivers on lan2; boothop drops it."""
    engine = make_engine({"lan2": {"circuit_id": b"vlan-102"}}, agent_info=True)
    echoed = with_agent(reply(), (AgentSub.CIRCUIT_ID, b"vlan-102"))
    assert drop_reason(engine.handle(from_server(echoed), 0.0)) is DropReason.CIRCUIT_MISMATCH
    assert engine.counters.dropped[DropReason.CIRCUIT_MISMATCH] == 1
    # When both agree, the reply goes out there, without option 82.
    agreeing = with_agent(reply(giaddr=LAN2_ADDR, yiaddr="10.2.0.9"),
                          (AgentSub.CIRCUIT_ID, b"vlan-102"))
    sent = delivery(engine.handle(from_server(agreeing), 0.0))
    assert (sent.ifindex, sent.ifname) == (LAN2, "lan2")
    assert not decode(sent.payload).has(Opt.RELAY_AGENT_INFO)


def test_reply_circuit_id_of_a_downstream_element_does_not_steer_delivery() -> None:
    """Where this relay adds no option 82, the echoed one is a bridge's: giaddr decides."""
    engine = make_engine({"lan1": {"trusted": True}, "lan2": {"link_selection": "up0"}})
    echoed = with_agent(reply(), (AgentSub.CIRCUIT_ID, b"lan2"))
    assert delivery(engine.handle(from_server(echoed), 0.0)).ifindex == LAN1


def test_reply_link_selection_must_agree_with_giaddr() -> None:
    """RFC 3527: giaddr is the address of the interface the link-selection request went
    through; a reply whose link selection names lan1 but whose giaddr is lan2's is dropped."""
    engine = make_engine({"lan1": {"link_selection": "up0"}}, agent_info=True)
    wrong = with_agent(reply(giaddr=LAN2_ADDR), (AgentSub.LINK_SELECTION, LAN1_ADDR.packed))
    assert drop_reason(engine.handle(from_server(wrong), 0.0)) is DropReason.CIRCUIT_MISMATCH
    crossed = with_agent(
        reply(giaddr=UP0_ADDR),
        (AgentSub.CIRCUIT_ID, b"lan2"),
        (AgentSub.LINK_SELECTION, LAN1_ADDR.packed),
    )
    assert drop_reason(engine.handle(from_server(crossed), 0.0)) is DropReason.CIRCUIT_MISMATCH


def test_reply_with_a_circuit_id_naming_no_interface_of_ours_is_dropped() -> None:
    engine = make_engine(agent_info=True)
    for circuit in (b"eth9", b"up0"):  # unknown, and an upstream interface
        echoed = with_agent(reply(), (AgentSub.CIRCUIT_ID, circuit))
        assert drop_reason(engine.handle(from_server(echoed), 0.0)) is DropReason.UNKNOWN_CIRCUIT
    assert engine.counters.dropped[DropReason.UNKNOWN_CIRCUIT] == 2


def test_rfc3527_reply_interface_chosen_by_link_selection() -> None:
    """The server answers to giaddr (the upstream address); sub-option 5 names the client link."""
    engine = make_engine({"lan1": {"link_selection": "up0"}})
    echoed = with_agent(reply(giaddr=UP0_ADDR), (AgentSub.LINK_SELECTION, LAN1_ADDR.packed))
    sent = delivery(engine.handle(from_server(echoed), 0.0))
    assert (sent.ifindex, sent.source) == (LAN1, LAN1_ADDR)
    assert not decode(sent.payload).has(Opt.RELAY_AGENT_INFO)
    # With the circuit-id the engine itself adds, the same.
    echoed = with_agent(
        reply(giaddr=UP0_ADDR),
        (AgentSub.CIRCUIT_ID, b"lan1"),
        (AgentSub.LINK_SELECTION, LAN1_ADDR.packed),
    )
    assert delivery(engine.handle(from_server(echoed), 0.0)).ifindex == LAN1


def test_reply_with_link_selection_naming_no_interface_of_ours_is_dropped() -> None:
    engine = make_engine({"lan1": {"link_selection": "up0"}})
    echoed = with_agent(reply(giaddr=UP0_ADDR), (AgentSub.LINK_SELECTION, ip("10.77.0.1").packed))
    assert drop_reason(engine.handle(from_server(echoed), 0.0)) is DropReason.UNKNOWN_CIRCUIT


def test_reply_with_malformed_option82_is_dropped_as_malformed() -> None:
    engine = make_engine(agent_info=True)
    broken = reply().with_option(Opt.RELAY_AGENT_INFO, b"\x01\x09lan1")  # sub-option overruns
    assert drop_reason(engine.handle(from_server(broken), 0.0)) is DropReason.MALFORMED
    bad_link = with_agent(reply(), (AgentSub.LINK_SELECTION, b"\x0a\x01"))  # 2 bytes, not 4
    assert drop_reason(engine.handle(from_server(bad_link), 0.0)) is DropReason.MALFORMED


# ================================================================================================
# Replies: delivery (RFC 2131 §4.1, RFC 1542 §4.1.2)
# ================================================================================================


def test_rfc2131_reply_without_broadcast_flag_is_unicast_to_yiaddr_at_chaddr() -> None:
    """RFC 2131 §4.1: "If the broadcast bit is not set ... the server unicasts DHCPOFFER and
    DHCPACK messages to the client's hardware address and 'yiaddr' address." """
    engine = make_engine()
    sent = delivery(engine.handle(from_server(reply()), 0.0))
    assert sent.mode is DeliveryMode.UNICAST_CHADDR
    assert (sent.destination, sent.mac) == (ip("10.1.0.50"), MAC)
    assert (sent.ifindex, sent.ifname, sent.source) == (LAN1, "lan1", LAN1_ADDR)
    assert decode(sent.payload) == reply()
    assert engine.counters.delivered == {DeliveryMode.UNICAST_CHADDR: 1}


def test_rfc1542_reply_with_broadcast_flag_is_broadcast() -> None:
    """RFC 1542 §4.1.2: "If this flag is set to 1, the reply SHOULD be sent as an IP broadcast
    using the IP limited broadcast address 255.255.255.255 ... and the link-layer broadcast
    address"."""
    engine = make_engine()
    sent = delivery(engine.handle(from_server(reply(flags=BROADCAST_FLAG)), 0.0))
    assert (sent.mode, sent.destination, sent.mac) == (
        DeliveryMode.BROADCAST,
        LIMITED_BROADCAST,
        b"\xff" * 6,
    )
    assert engine.counters.delivered == {DeliveryMode.BROADCAST: 1}


def test_rfc2131_reply_to_a_client_with_ciaddr_is_unicast_to_ciaddr() -> None:
    """RFC 2131 §4.1: "If the 'giaddr' field is zero and the 'ciaddr' field is nonzero, then the
    server unicasts DHCPOFFER and DHCPACK messages to the address in 'ciaddr'." (the relay stands
    in for the server on the client's link; e.g. the ACK to a DHCPINFORM, yiaddr 0)."""
    engine = make_engine()
    ack = reply(MessageType.ACK, yiaddr="0.0.0.0", ciaddr=ip("10.1.0.77"))
    sent = delivery(engine.handle(from_server(ack), 0.0))
    assert (sent.mode, sent.destination) == (DeliveryMode.UNICAST_CIADDR, ip("10.1.0.77"))


def test_reply_unicast_to_ciaddr_only_on_the_delivery_interface_subnet() -> None:
    """A DHCPINFORM from lan1 with ciaddr set to a host elsewhere would make the relay unicast
    the server's answer there (reflection): dropped unless ciaddr is a host on lan1's subnets."""
    engine = make_engine()
    for elsewhere in (DHCP_SERVER, ip("10.2.0.7"), ip("10.1.0.255"), ip("10.1.0.0"), LAN1_ADDR):
        ack = reply(MessageType.ACK, yiaddr="0.0.0.0", ciaddr=elsewhere)
        assert drop_reason(engine.handle(from_server(ack), 0.0)) is DropReason.CIADDR_OFF_LINK
    assert engine.counters.dropped == {DropReason.CIADDR_OFF_LINK: 5}
    on_secondary = reply(MessageType.ACK, yiaddr="0.0.0.0", ciaddr=ip("10.11.0.7"))
    assert delivery(engine.handle(from_server(on_secondary), 0.0)).destination == ip("10.11.0.7")


def test_broadcast_flag_wins_over_ciaddr() -> None:
    """The relay's rule is RFC 1542 §4.1.2 (broadcast flag set: SHOULD broadcast); a broadcast
    reaches a client with ciaddr as well, a unicast may not reach one that asked for broadcast."""
    engine = make_engine()
    ack = reply(MessageType.ACK, ciaddr=ip("10.1.0.77"), flags=BROADCAST_FLAG)
    assert delivery(engine.handle(from_server(ack), 0.0)).mode is DeliveryMode.BROADCAST


def test_proxydhcp_offer_without_yiaddr_is_broadcast() -> None:
    """A proxyDHCP offer (PXE spec 2.1) carries no address: nothing to unicast to."""
    engine = make_engine()
    proxy = reply(yiaddr="0.0.0.0", extra=((Opt.VENDOR_CLASS_ID, b"PXEClient"),))
    sent = delivery(engine.handle(from_server(proxy, source=PXE_SERVER), 0.0))
    assert (sent.mode, sent.destination, sent.mac) == (
        DeliveryMode.BROADCAST,
        LIMITED_BROADCAST,
        b"\xff" * 6,
    )


def test_rfc2131_nak_is_broadcast_even_without_the_broadcast_flag() -> None:
    """RFC 2131 §4.3.2: through a relay "the client may not have a correct network address or
    subnet mask", so the DHCPNAK is broadcast by the relay agent."""
    engine = make_engine()
    nak = reply(MessageType.NAK, yiaddr="0.0.0.0", ciaddr=ip("10.1.0.77"))
    assert delivery(engine.handle(from_server(nak), 0.0)).mode is DeliveryMode.BROADCAST


@pytest.mark.parametrize(("htype", "hlen"), [(6, 6), (32, 16), (1, 0), (1, 8)])
def test_non_ethernet_hardware_address_is_broadcast(htype: int, hlen: int) -> None:
    """RFC 1542 §4.1.2: "If unicasting is not possible, the reply MAY be sent as a broadcast"."""
    engine = make_engine()
    odd = reply(htype=htype, hlen=hlen)
    assert delivery(engine.handle(from_server(odd), 0.0)).mode is DeliveryMode.BROADCAST


def test_bootp_replies_are_relayed_too() -> None:
    engine = make_engine()
    bootp = reply(kind=None)
    sent = delivery(engine.handle(from_server(bootp), 0.0))
    assert (sent.mode, sent.destination) == (DeliveryMode.UNICAST_CHADDR, ip("10.1.0.50"))
    rfc951 = DhcpMessage(
        op=Op.BOOTREPLY,
        xid=77,
        chaddr=MAC + bytes(10),
        yiaddr=ip("10.1.0.51"),
        giaddr=LAN1_ADDR,
        file=b"/tftpboot/vmunix",
        vendor=b"\x01\x04\xff\xff\xff\x00\xff",
    )
    sent = delivery(engine.handle(from_server(rfc951), 0.0))
    assert decode(sent.payload) == rfc951
    assert sent.destination == ip("10.1.0.51")


@pytest.mark.parametrize(
    "name", ["dnsmasq-dhclient-offer", "dnsmasq-udhcpc-ack", "dnsmasq-ipxe-offer"]
)
def test_real_server_replies_are_delivered(name: str) -> None:
    captured = decode((CAPTURES / f"{name}.bin").read_bytes())
    relayed_reply = captured.replace(giaddr=LAN1_ADDR)
    engine = make_engine(helpers=(DHCP_SERVER,))
    sent = delivery(engine.handle(from_server(relayed_reply), 0.0))
    assert decode(sent.payload) == relayed_reply
    expected = DeliveryMode.BROADCAST if captured.broadcast else DeliveryMode.UNICAST_CHADDR
    assert sent.mode is expected


# ================================================================================================
# The seed-2 diagnosis: a DHCP server answering as a PXE server too (PXE-E55)
# ================================================================================================


def pxe_answer_from_dhcp_server() -> DhcpMessage:
    """A real dnsmasq OFFER with yiaddr and option 60 "PXEClient", as it reaches the relay."""
    captured = decode((CAPTURES / "dnsmasq-udhcpc-pxe-offer.bin").read_bytes())
    assert captured.yiaddr != ZERO and captured.get(Opt.VENDOR_CLASS_ID) == b"PXEClient"
    return captured.replace(giaddr=LAN1_ADDR)


def test_pxeclient_answer_from_a_dhcp_server_beside_a_pxe_helper_warns_once_per_server() -> None:
    engine = make_engine()
    first = engine.handle(from_server(pxe_answer_from_dhcp_server()), 0.0)
    (warning,) = warnings(first)
    assert warning.server == DHCP_SERVER
    assert warning.event == "relay.pxe.dhcp_server_sends_pxeclient"
    for words in ("4011", "PXE-E55", "60/66/67", str(DHCP_SERVER), str(PXE_SERVER)):
        assert words in warning.message
    delivery(first)  # the reply itself is still delivered
    # Only once for that server ...
    assert warnings(engine.handle(from_server(pxe_answer_from_dhcp_server()), 1.0)) == []
    # ... and once for another server making the same mistake.
    (other,) = warnings(
        engine.handle(from_server(pxe_answer_from_dhcp_server(), source=PXE_SERVER), 2.0)
    )
    assert other.server == PXE_SERVER


def test_no_pxe_warning_for_a_proxydhcp_offer() -> None:
    engine = make_engine()
    proxy = pxe_answer_from_dhcp_server().replace(yiaddr=ZERO)
    assert warnings(engine.handle(from_server(proxy, source=PXE_SERVER), 0.0)) == []


def test_no_pxe_warning_with_a_single_helper() -> None:
    engine = make_engine(helpers=(DHCP_SERVER,))
    outcome = engine.handle(from_server(pxe_answer_from_dhcp_server()), 0.0)
    assert warnings(outcome) == []
    delivery(outcome)


def test_no_pxe_warning_for_a_plain_dhcp_answer() -> None:
    engine = make_engine()
    assert warnings(engine.handle(from_server(reply()), 0.0)) == []


# ================================================================================================
# Malformed input, counters, context, live updates
# ================================================================================================


def with_byte(payload: bytes, offset: int, value: int) -> bytes:
    return payload[:offset] + bytes((value,)) + payload[offset + 1 :]


MALFORMED = {
    "empty": b"",
    "one-byte": b"\x01",
    "short-header": bytes(235),
    "op-3": b"\x03" + bytes(299),
    "option-overruns": encode(request())[:240] + b"\x35\x05\x01",
    "overload-7": encode(request())[:240] + b"\x34\x01\x07\xff",
    "hlen-17": with_byte(encode(request()), 2, 17),
    "reply-hlen-17": with_byte(encode(reply()), 2, 17),
}


@pytest.mark.parametrize("payload", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_payloads_are_dropped_as_malformed(payload: bytes) -> None:
    engine = make_engine()
    outcome = engine.handle(from_client(payload), 0.0)
    assert drop_reason(outcome) is DropReason.MALFORMED
    assert outcome.xid is None
    assert engine.counters.received == 1
    assert engine.counters.requests == engine.counters.replies == 0
    assert engine.counters.dropped == {DropReason.MALFORMED: 1}


def test_outcome_carries_the_packet_context_as_relayed_for_logging() -> None:
    engine = make_engine()
    outcome = engine.handle(from_client(request(MessageType.REQUEST, hops=2)), 0.0)
    assert outcome.xid == 0x1234ABCD
    assert outcome.mac == "52:54:00:a1:b2:c3"
    assert outcome.message_type == "REQUEST"
    # What the servers were sent, not what the client sent (hops 2, giaddr 0.0.0.0).
    assert outcome.hops == 3
    assert outcome.giaddr == LAN1_ADDR
    relayed = decode(forwards(outcome)[0].payload)
    assert (relayed.hops, relayed.giaddr) == (outcome.hops, outcome.giaddr)


def test_outcome_of_a_dropped_request_carries_the_context_as_received() -> None:
    engine = make_engine()
    outcome = engine.handle(from_client(request(MessageType.REQUEST, hops=10)), 0.0)
    assert drop_reason(outcome) is DropReason.HOP_LIMIT
    assert (outcome.hops, outcome.giaddr, outcome.xid) == (10, ZERO, 0x1234ABCD)


def test_counters_add_up_over_a_mixed_run() -> None:
    engine = make_engine(agent_info=True)
    engine.handle(from_client(request()), 0.0)  # forwarded twice, option 82 added
    engine.handle(from_client(request(hops=10)), 0.0)  # hop limit
    engine.handle(from_client(b"junk"), 0.0)  # malformed
    engine.handle(from_server(with_agent(reply(), (AgentSub.CIRCUIT_ID, b"lan1"))), 0.0)
    engine.handle(from_server(reply(flags=BROADCAST_FLAG), source=ROGUE), 0.0)
    snapshot = engine.counters.snapshot()
    assert snapshot == {
        "received": 5,
        "requests": 2,
        "replies": 2,
        "replies_by_port": {"67": 2},
        "agent_info_added": 1,
        "agent_info_omitted_oversize": 0,
        "giaddr_fallbacks": {},
        "forwarded": {str(DHCP_SERVER): 1, str(PXE_SERVER): 1},
        "relayed_by_class": {"default": 1},
        "throttled_clients": {},
        "pxe_unbootable_by_class": {},
        "delivered": {"unicast-chaddr": 1},
        "dropped": {"hop-limit": 1, "malformed": 1, "reply-from-non-server": 1},
    }


def test_update_interfaces_an_interface_that_appears_later_is_used() -> None:
    config = make_config()
    config = dataclasses.replace(config, interfaces=(*config.interfaces, InterfaceConfig("lan5")))
    engine = RelayEngine(config, host_interfaces())
    assert (
        drop_reason(engine.handle(from_client(request(), 7), 0.0)) is DropReason.UNKNOWN_INTERFACE
    )
    engine.update_interfaces(
        host_interfaces(Interface(7, "lan5", True, (IPv4Interface("10.5.0.1/24"),)))
    )
    assert forwarded(engine.handle(from_client(request(), 7), 1.0)).giaddr == ip("10.5.0.1")
    assert delivery(engine.handle(from_server(reply(giaddr=ip("10.5.0.1"))), 1.0)).ifindex == 7


def test_update_interfaces_down_and_readdressed() -> None:
    engine = make_engine()
    table = host_interfaces()
    lan2 = table.by_name("lan2")
    assert lan2 is not None
    others = [i for i in table if i.name != "lan2"]
    engine.update_interfaces(InterfaceTable.of([*others, dataclasses.replace(lan2, up=False)]))
    assert (
        drop_reason(engine.handle(from_client(request(), LAN2), 0.0)) is DropReason.INTERFACE_DOWN
    )
    moved = dataclasses.replace(lan2, addresses=(IPv4Interface("10.22.0.1/24"),))
    engine.update_interfaces(InterfaceTable.of([*others, moved]))
    assert forwarded(engine.handle(from_client(request(), LAN2), 0.0)).giaddr == ip("10.22.0.1")
    # The old address is no longer ours: replies to it are dropped.
    assert (
        drop_reason(engine.handle(from_server(reply(giaddr=LAN2_ADDR)), 0.0))
        is DropReason.UNKNOWN_GIADDR
    )


def test_update_config_takes_effect_on_the_next_packet() -> None:
    engine = make_engine()
    assert forwarded(engine.handle(from_client(request(hops=5)), 0.0)).hops == 6
    new_server = ip("10.99.0.50")
    engine.update_config(make_config(helpers=(new_server,), max_hops=4, agent_info=True))
    assert drop_reason(engine.handle(from_client(request(hops=5)), 1.0)) is DropReason.HOP_LIMIT
    outcome = engine.handle(from_client(request()), 1.0)
    assert [f.server for f in forwards(outcome)] == [new_server]
    assert agent_info(forwarded(outcome)).circuit_id == b"lan1"
    # Replies from a server that was removed are no longer accepted.
    assert drop_reason(engine.handle(from_server(reply()), 1.0)) is DropReason.REPLY_FROM_NON_SERVER
    delivery(engine.handle(from_server(reply(), source=new_server), 1.0))


def test_reply_giaddr_dhcrelay_g_rewrites_giaddr_in_replies_to_clients_only() -> None:
    """dhcrelay -g: the reply delivered to the client carries the configured giaddr; the
    reply is still matched and delivered by its real giaddr, and requests are untouched."""
    engine = make_engine(reply_giaddr=ip("10.1.0.254"))
    delivered = decode(delivery(engine.handle(from_server(reply()), 0.0)).payload)
    assert delivered == decode(encode(reply())).replace(giaddr=ip("10.1.0.254"))
    assert forwarded(engine.handle(from_client(request()), 0.0)).giaddr == LAN1_ADDR
