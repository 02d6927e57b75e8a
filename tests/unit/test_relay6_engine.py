"""The DHCPv6 relay engine against RFC 8415 §19 (and RFC 4649, 4580, 6939), one test per rule."""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Interface, IPv6Address, IPv6Interface

from hypothesis import given
from hypothesis import strategies as st
from test_wire6_properties import messages6
from test_wire_properties import PROPERTY

from boothop.relay.actions import Deliver6, DeliveryMode, Drop, Forward6, Outcome6
from boothop.relay.config import LowerInterface6, Relay6Config, Upstream6
from boothop.relay.drops import DropReason
from boothop.relay.engine6 import Relay6Engine, eui64_mac
from boothop.relay.interfaces import Interface, InterfaceTable
from boothop.relay.wire import Datagram6
from boothop.relay.wire.dhcpv6 import (
    ALL_RELAY_AGENTS_AND_SERVERS,
    ALL_SERVERS,
    UNSPECIFIED,
    ClientLinkLayer,
    Dhcp6Message,
    MessageType6,
    Opt6,
    RelayMessage,
    RemoteId,
    decode6,
    encode6,
)

UP0, UP1, LAN1, LAN2, LAN3 = 2, 3, 4, 5, 6
SERVER = IPv6Address("2001:db8:99::10")
SECOND_SERVER = IPv6Address("2001:db8:99::20")
ROGUE = IPv6Address("2001:db8:99::66")
LAN1_GLOBAL = IPv6Address("2001:db8:1::1")
LAN2_ULA = IPv6Address("fd00:2::1")
MAC = bytes.fromhex("525400a1b2c3")
#: The modified EUI-64 link-local address of MAC.
CLIENT = IPv6Address("fe80::5054:ff:fea1:b2c3")
LOWER_RELAY = IPv6Address("fe80::1:2")
SOLICIT = Dhcp6Message(
    MessageType6.SOLICIT,
    0x123456,
    ((Opt6.CLIENTID, b"\0\3\0\1" + MAC), (Opt6.ELAPSED_TIME, b"\0\0")),
)


def interface(index: int, name: str, *addresses: str, up: bool = True) -> Interface:
    return Interface(
        index, name, up, (IPv4Interface("10.0.0.1/8"),) if name == "up0" else (),
        addresses6=tuple(IPv6Interface(a) for a in (f"fe80::{index}/64", *addresses)),
    )


def host(*changed: Interface) -> InterfaceTable:
    table = {
        i.index: i
        for i in (
            interface(UP0, "up0", "2001:db8:99::1/64"),
            interface(UP1, "up1"),
            interface(LAN1, "lan1", "2001:db8:1::1/64"),
            interface(LAN2, "lan2", "fd00:2::1/64"),
            interface(LAN3, "lan3"),
        )
    }
    table.update({i.index: i for i in changed})
    return InterfaceTable.of(table.values())


def config(**changes: object) -> Relay6Config:
    fields: dict[str, object] = {
        "lower": (LowerInterface6("lan1"), LowerInterface6("lan2"), LowerInterface6("lan3")),
        "upper": (Upstream6("up0", SERVER), Upstream6("up0", SECOND_SERVER)),
    }
    fields.update(changes)
    return Relay6Config(**fields)  # type: ignore[arg-type]


def engine(**changes: object) -> Relay6Engine:
    return Relay6Engine(config(**changes), host())


def from_client(
    message: Dhcp6Message | RelayMessage | bytes = SOLICIT,
    ifindex: int = LAN1,
    source: IPv6Address = CLIENT,
) -> Datagram6:
    payload = message if isinstance(message, bytes) else encode6(message)
    return Datagram6(payload, source, 546, ALL_RELAY_AGENTS_AND_SERVERS, ifindex, 547)


def from_server(
    message: RelayMessage | bytes, source: IPv6Address = SERVER, ifindex: int = UP0
) -> Datagram6:
    payload = message if isinstance(message, bytes) else encode6(message)
    return Datagram6(payload, source, 547, IPv6Address("2001:db8:99::1"), ifindex, 547)


def drop_reason(outcome: Outcome6) -> DropReason:
    assert len(outcome.actions) == 1, outcome.actions
    (action,) = outcome.actions
    assert isinstance(action, Drop), action
    return action.reason


def relay_forward(outcome: Outcome6) -> RelayMessage:
    """The one Relay-forward sent (the same bytes to every server)."""
    sent = [a for a in outcome.actions if isinstance(a, Forward6)]
    assert sent and len(sent) == len(outcome.actions), outcome.actions
    assert len({f.payload for f in sent}) == 1
    message = decode6(sent[0].payload)
    assert isinstance(message, RelayMessage) and message.msg_type == MessageType6.RELAY_FORW
    return message


def delivered(outcome: Outcome6) -> Deliver6:
    (action,) = outcome.actions
    assert isinstance(action, Deliver6), action
    return action


def reply(
    inner: bytes | None = None, interface_id: bytes | None = b"lan1",
    link: IPv6Address = LAN1_GLOBAL, peer: IPv6Address = CLIENT,
) -> RelayMessage:
    options: tuple[tuple[int, bytes], ...] = ()
    if interface_id is not None:
        options += ((Opt6.INTERFACE_ID, interface_id),)
    if inner is None:
        inner = encode6(Dhcp6Message(MessageType6.ADVERTISE, 0x123456))
    options += ((Opt6.RELAY_MSG, inner),)
    return RelayMessage(MessageType6.RELAY_REPL, 0, link, peer, options)


# -- RFC 8415 §19.1.1: a client's message --------------------------------------------------------


def test_rfc8415_19_1_1_client_message_is_wrapped_and_sent_to_every_server() -> None:
    relay = engine()
    outcome = relay.handle(from_client(), 0.0)
    sent = [a for a in outcome.actions if isinstance(a, Forward6)]
    assert [(f.server, f.ifindex) for f in sent] == [(SERVER, UP0), (SECOND_SERVER, UP0)]
    message = relay_forward(outcome)
    assert (message.hop_count, message.link_address, message.peer_address) == (
        0, LAN1_GLOBAL, CLIENT,
    )
    assert message.relayed == encode6(SOLICIT)  # the client's bytes, untouched
    assert message.get(Opt6.INTERFACE_ID) == b"lan1"
    assert relay.counters.forwarded == {SERVER: 1, SECOND_SERVER: 1}


def test_rfc8415_19_1_1_link_address_is_a_ula_where_there_is_no_global_address() -> None:
    message = relay_forward(engine().handle(from_client(ifindex=LAN2), 0.0))
    assert message.link_address == LAN2_ULA


def test_link_address_is_unspecified_with_an_interface_id_when_the_link_has_no_routable_address(
) -> None:
    message = relay_forward(engine().handle(from_client(ifindex=LAN3), 0.0))
    assert message.link_address == UNSPECIFIED
    assert message.get(Opt6.INTERFACE_ID) == b"lan3"


def test_configured_link_address_and_interface_id() -> None:
    link = IPv6Address("2001:db8:77::1")
    relay = engine(lower=(LowerInterface6("lan1", link, b"port-7"),))
    message = relay_forward(relay.handle(from_client(), 0.0))
    assert (message.link_address, message.get(Opt6.INTERFACE_ID)) == (link, b"port-7")


def test_remote_id_subscriber_id_and_client_link_layer_address_when_configured() -> None:
    relay = engine(remote_id=(9, b"rack-1"), subscriber_id=b"sub", client_link_layer=True)
    message = relay_forward(relay.handle(from_client(), 0.0))
    assert RemoteId.decode(message.get(Opt6.REMOTE_ID) or b"") == RemoteId(9, b"rack-1")
    assert message.get(Opt6.SUBSCRIBER_ID) == b"sub"
    assert ClientLinkLayer.decode(message.get(Opt6.CLIENT_LINKLAYER_ADDR) or b"") == (
        ClientLinkLayer(1, MAC)
    )
    plain = relay_forward(engine().handle(from_client(), 0.0))
    assert not any(plain.has(c) for c in (Opt6.REMOTE_ID, 38, Opt6.CLIENT_LINKLAYER_ADDR))


def test_client_link_layer_address_only_from_an_eui64_source() -> None:
    relay = engine(client_link_layer=True)
    message = relay_forward(relay.handle(from_client(source=IPv6Address("fe80::1234")), 0.0))
    assert not message.has(Opt6.CLIENT_LINKLAYER_ADDR)
    assert eui64_mac(CLIENT) == MAC
    assert eui64_mac(IPv6Address("2001:db8::5054:ff:fea1:b2c3")) is None


def test_unknown_message_types_are_relayed() -> None:
    """RFC 8415 §19.1: a message type the relay does not recognize "MUST" be forwarded."""
    unknown = Dhcp6Message(200, 1)
    assert relay_forward(engine().handle(from_client(unknown), 0.0)).relayed == encode6(unknown)


def test_server_messages_from_a_client_link_are_not_relayed() -> None:
    relay = engine()
    for kind in (MessageType6.ADVERTISE, MessageType6.REPLY, MessageType6.RECONFIGURE):
        outcome = relay.handle(from_client(Dhcp6Message(kind, 1)), 0.0)
        assert drop_reason(outcome) is DropReason.NOT_RELAYABLE
    assert relay.counters.dropped[DropReason.NOT_RELAYABLE] == 3


# -- RFC 8415 §19.1.2: a lower relay's Relay-forward ---------------------------------------------


def lower_forward(hop_count: int) -> RelayMessage:
    return RelayMessage(
        MessageType6.RELAY_FORW, hop_count, IPv6Address("2001:db8:5::1"), CLIENT,
        ((Opt6.INTERFACE_ID, b"far"), (Opt6.RELAY_MSG, encode6(SOLICIT))),
    )


def test_rfc8415_19_1_2_relay_forward_is_wrapped_with_hop_count_plus_one() -> None:
    inner = lower_forward(3)
    message = relay_forward(engine().handle(from_client(inner, source=LOWER_RELAY), 0.0))
    assert (message.hop_count, message.peer_address) == (4, LOWER_RELAY)
    assert message.link_address == LAN1_GLOBAL  # the lower relay's source is link-local
    assert message.relayed == encode6(inner)
    assert not message.has(Opt6.CLIENT_LINKLAYER_ADDR)


def test_rfc8415_19_1_2_link_address_is_zero_for_a_relay_with_a_global_source() -> None:
    source = IPv6Address("2001:db8:1::77")
    message = relay_forward(engine().handle(from_client(lower_forward(0), source=source), 0.0))
    assert message.link_address == UNSPECIFIED
    assert message.get(Opt6.INTERFACE_ID) == b"lan1"


def test_rfc8415_19_1_2_hop_count_limit() -> None:
    relay = engine()
    allowed = relay_forward(relay.handle(from_client(lower_forward(7), source=LOWER_RELAY), 0.0))
    assert allowed.hop_count == 8
    dropped = relay.handle(from_client(lower_forward(8), source=LOWER_RELAY), 0.0)
    assert drop_reason(dropped) is DropReason.HOP_LIMIT
    assert relay.counters.dropped[DropReason.HOP_LIMIT] == 1


# -- where a request may come from ---------------------------------------------------------------


def test_requests_only_from_up_client_facing_interfaces_and_not_from_ourselves() -> None:
    relay = Relay6Engine(config(), host(interface(LAN2, "lan2", up=False)))
    assert drop_reason(relay.handle(from_client(ifindex=UP0), 0.0)) is DropReason.NOT_CLIENT_FACING
    assert drop_reason(relay.handle(from_client(ifindex=99), 0.0)) is DropReason.UNKNOWN_INTERFACE
    assert drop_reason(relay.handle(from_client(ifindex=LAN2), 0.0)) is DropReason.INTERFACE_DOWN
    ours = from_client(source=IPv6Address("fe80::4"))
    assert drop_reason(relay.handle(ours, 0.0)) is DropReason.REQUEST_FROM_SELF


def test_malformed_payloads_are_dropped_and_counted() -> None:
    relay = engine()
    for payload in (b"", b"\x01\x00", b"\x01\x00\x00\x01\x00\x01\x00\x09"):
        assert drop_reason(relay.handle(from_client(payload), 0.0)) is DropReason.MALFORMED
    assert relay.counters.dropped[DropReason.MALFORMED] == 3


def test_multicast_upstream_leaves_by_its_interface_and_is_skipped_while_it_is_down() -> None:
    relay = engine(upper=(Upstream6("up1", ALL_SERVERS),))
    (forward,) = relay.handle(from_client(), 0.0).actions
    assert forward == Forward6(ALL_SERVERS, UP1, forward.payload)  # type: ignore[union-attr]
    relay.update_interfaces(host(interface(UP1, "up1", up=False)))
    assert drop_reason(relay.handle(from_client(), 0.0)) is DropReason.NO_HELPERS


# -- RFC 8415 §19.2: Relay-reply -----------------------------------------------------------------


def test_rfc8415_19_2_reply_is_unwrapped_to_the_peer_on_the_interface_id_link() -> None:
    relay = engine()
    inner = encode6(Dhcp6Message(MessageType6.REPLY, 0x123456))
    deliver = delivered(relay.handle(from_server(reply(inner, b"lan2", link=LAN1_GLOBAL)), 0.0))
    # The Interface-ID wins over the link-address (lan1's).
    assert (deliver.ifindex, deliver.ifname, deliver.destination) == (LAN2, "lan2", CLIENT)
    assert (deliver.payload, deliver.mode, deliver.port) == (inner, DeliveryMode.PEER_CLIENT, 546)
    assert relay.counters.delivered[DeliveryMode.PEER_CLIENT] == 1


def test_rfc8415_19_2_a_relay_reply_inside_goes_to_the_lower_relay_on_port_547() -> None:
    inner = encode6(reply(interface_id=b"far", peer=CLIENT).replace(link_address=UNSPECIFIED))
    deliver = delivered(engine().handle(from_server(reply(inner, peer=LOWER_RELAY)), 0.0))
    assert (deliver.destination, deliver.mode, deliver.port) == (
        LOWER_RELAY, DeliveryMode.PEER_RELAY, 547,
    )
    assert deliver.payload == inner


def test_rfc8415_19_2_without_interface_id_the_link_address_names_the_link() -> None:
    relay = engine()
    deliver = delivered(relay.handle(from_server(reply(interface_id=None, link=LAN2_ULA)), 0.0))
    assert deliver.ifname == "lan2"
    unknown = reply(interface_id=None, link=UNSPECIFIED)
    assert drop_reason(relay.handle(from_server(unknown), 0.0)) is DropReason.UNKNOWN_LINK


def test_unknown_interface_id_is_dropped() -> None:
    outcome = engine().handle(from_server(reply(interface_id=b"lan9")), 0.0)
    assert drop_reason(outcome) is DropReason.UNKNOWN_LINK


def test_replies_only_from_configured_servers_on_an_upper_interface() -> None:
    relay = engine()
    spoofed = relay.handle(from_server(reply(), source=ROGUE), 0.0)
    assert drop_reason(spoofed) is DropReason.REPLY_FROM_NON_SERVER
    on_lan = relay.handle(from_server(reply(), ifindex=LAN2), 0.0)
    assert drop_reason(on_lan) is DropReason.REPLY_WRONG_INTERFACE
    assert relay.counters.dropped[DropReason.REPLY_FROM_NON_SERVER] == 1
    assert delivered(relay.handle(from_server(reply(), source=SECOND_SERVER), 0.0)).ifname == "lan1"


def test_with_a_multicast_upstream_any_server_on_that_interface_may_reply() -> None:
    relay = engine(upper=(Upstream6("up1", ALL_SERVERS),))
    assert delivered(relay.handle(from_server(reply(), source=ROGUE, ifindex=UP1), 0.0))
    elsewhere = relay.handle(from_server(reply(), source=ROGUE, ifindex=UP0), 0.0)
    assert drop_reason(elsewhere) is DropReason.REPLY_FROM_NON_SERVER


def test_reply_without_relay_message_and_to_a_down_link_are_dropped() -> None:
    relay = Relay6Engine(config(), host(interface(LAN1, "lan1", "2001:db8:1::1/64", up=False)))
    empty = RelayMessage(13, 0, LAN1_GLOBAL, CLIENT, ((Opt6.INTERFACE_ID, b"lan2"),))
    assert drop_reason(relay.handle(from_server(empty), 0.0)) is DropReason.MALFORMED
    assert drop_reason(relay.handle(from_server(reply()), 0.0)) is DropReason.INTERFACE_DOWN


def test_round_trip_through_the_relay_gives_the_client_the_server_message() -> None:
    """The server answers the Relay-forward as RFC 8415 §9 says: the Relay-reply copies its
    peer-address, link-address and Interface-ID."""
    relay = engine()
    forward = relay_forward(relay.handle(from_client(ifindex=LAN3), 0.0))
    answer = encode6(Dhcp6Message(MessageType6.ADVERTISE, SOLICIT.transaction_id))
    back = RelayMessage(
        MessageType6.RELAY_REPL, forward.hop_count, forward.link_address, forward.peer_address,
        ((Opt6.INTERFACE_ID, forward.get(Opt6.INTERFACE_ID) or b""), (Opt6.RELAY_MSG, answer)),
    )
    deliver = delivered(relay.handle(from_server(back), 0.0))
    assert (deliver.ifname, deliver.destination, deliver.payload) == ("lan3", CLIENT, answer)


@PROPERTY
@given(st.one_of(st.binary(max_size=120), messages6.map(encode6)), st.sampled_from((UP0, LAN1)),
       st.booleans())
def test_the_engine_never_raises(payload: bytes, ifindex: int, server: bool) -> None:
    relay = engine(client_link_layer=True, remote_id=(1, b"r"))
    source = SERVER if server else CLIENT
    outcome = relay.handle(Datagram6(payload, source, 547, ALL_SERVERS, ifindex, 547), 0.0)
    assert outcome.actions
    drops = sum(isinstance(a, Drop) for a in outcome.actions)
    assert sum(relay.counters.dropped.values()) == drops
    assert dataclasses.asdict(relay.counters)  # the snapshot-able counters stay plain
