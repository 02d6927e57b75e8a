"""The DHCP server core, transition by transition, with a fake clock (plain floats)."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest
from test_server_helpers import (
    BASE_TOML,
    MT,
    RELAY_A,
    RELAY_B,
    SERVER,
    agent,
    config,
    dgram,
    mac,
    opt_addr,
    reply_of,
    request,
    sends,
)

from boothop.relay.settings import ConfigError
from boothop.relay.wire import BROADCAST_FLAG, AgentSub, DhcpMessage, MessageType, Op, Opt, encode
from boothop.server.dhcp.actions import Commit, CommitEvent, Drop, DropReason, ReplyKind, Send
from boothop.server.dhcp.config import DhcpConfig
from boothop.server.dhcp.core import DhcpServerCore
from boothop.server.dhcp.lease import LeaseState

ZERO = IPv4Address(0)


def drops(actions: list) -> list[DropReason]:
    return [a.reason for a in actions if isinstance(a, Drop)]


def commits(actions: list) -> list[Commit]:
    return [a for a in actions if isinstance(a, Commit)]


def dora(core: DhcpServerCore, chaddr: bytes, now: float = 0.0, giaddr: IPv4Address = RELAY_A,
         options: tuple = ()) -> IPv4Address:
    offer = reply_of(
        core.handle(dgram(request(MT.DISCOVER, chaddr, giaddr=giaddr, options=options)), now)
    )
    assert offer.message_type == MT.OFFER
    ack = reply_of(
        core.handle(
            dgram(
                request(
                    MT.REQUEST,
                    chaddr,
                    giaddr=giaddr,
                    options=(
                        *options,
                        opt_addr(Opt.SERVER_ID, SERVER),
                        opt_addr(Opt.REQUESTED_ADDRESS, offer.yiaddr),
                    ),
                )
            ),
            now,
        )
    )
    assert ack.message_type == MT.ACK, ack.get(Opt.MESSAGE)
    assert ack.yiaddr == offer.yiaddr
    return ack.yiaddr


def test_discover_offers_pool_address_with_options() -> None:
    core = DhcpServerCore(config())
    actions = core.handle(dgram(request(MT.DISCOVER, mac(1))), 0.0)
    assert commits(actions) == []  # offers are held in memory, not written
    offer = reply_of(actions)
    assert offer.op == Op.BOOTREPLY and offer.yiaddr == IPv4Address("10.51.1.100")
    assert offer.get(Opt.SERVER_ID) == SERVER.packed
    assert offer.get(Opt.SUBNET_MASK) == IPv4Address("255.255.255.0").packed
    assert offer.get(Opt.ROUTER) == IPv4Address("10.51.1.1").packed
    assert offer.get(Opt.DNS_SERVERS) == IPv4Address("10.51.0.53").packed
    assert offer.get(Opt.DOMAIN_NAME) == b"lab.test"
    assert offer.get(Opt.LEASE_TIME) == (600).to_bytes(4, "big")
    assert offer.get(Opt.RENEWAL_TIME) == (300).to_bytes(4, "big")
    assert offer.get(Opt.REBINDING_TIME) == (525).to_bytes(4, "big")


def test_subnet_selected_by_giaddr() -> None:
    core = DhcpServerCore(config())
    offer = reply_of(core.handle(dgram(request(MT.DISCOVER, mac(1), giaddr=RELAY_B)), 0.0))
    assert offer.yiaddr in config().subnets[1].network
    assert offer.get(Opt.ROUTER) == RELAY_B.packed


def test_link_selection_suboption_overrides_giaddr_rfc3527() -> None:
    core = DhcpServerCore(config())
    msg = request(MT.DISCOVER, mac(1), giaddr=IPv4Address("192.0.2.1"),
                  options=(agent((AgentSub.LINK_SELECTION, RELAY_B.packed)),))
    assert reply_of(core.handle(dgram(msg), 0.0)).yiaddr in config().subnets[1].network


def test_rfc8357_5_2_relay_source_port_reply_goes_to_the_requests_source_port() -> None:
    """RFC 8357 §5.2: with the "Relay Source Port" sub-option the server "MUST use the UDP source
    port from the UDP packet of the received message as the UDP destination port" of its reply
    (the relay listens there); without it, 67 as RFC 2131 §4.1 says. The option 82 is echoed."""
    core = DhcpServerCore(config())
    relay_agent = agent((AgentSub.CIRCUIT_ID, b"lan1"), (AgentSub.RELAY_SOURCE_PORT, b""))
    datagram = dgram(request(MT.DISCOVER, mac(1), giaddr=RELAY_A, options=(relay_agent,)))
    datagram.source_port = 1067
    send = sends(core.handle(datagram, 0.0))[0]
    assert (send.destination, send.port) == (RELAY_A, 1067)
    assert send.message.get(Opt.RELAY_AGENT_INFO) == relay_agent[1]
    plain = dgram(request(MT.DISCOVER, mac(2), giaddr=RELAY_A,
                          options=(agent((AgentSub.CIRCUIT_ID, b"lan1")),)))
    plain.source_port = 1067
    assert sends(core.handle(plain, 0.0))[0].port == 67


def test_relay_source_port_suboption_with_a_value_is_bad_relay_info() -> None:
    """RFC 8357 §4.1 gives the sub-option length 0."""
    core = DhcpServerCore(config())
    msg = request(MT.DISCOVER, mac(1), giaddr=RELAY_A,
                  options=(agent((AgentSub.RELAY_SOURCE_PORT, b"\x04\x2b")),))
    assert drops(core.handle(dgram(msg), 0.0)) == [DropReason.BAD_RELAY_INFO]


def test_subnet_selection_option_118() -> None:
    core = DhcpServerCore(config())
    msg = request(MT.DISCOVER, mac(1), giaddr=RELAY_A, options=(opt_addr(118, "10.51.2.0"),))
    assert reply_of(core.handle(dgram(msg), 0.0)).yiaddr in config().subnets[1].network


def test_direct_client_selected_by_receiving_interface() -> None:
    core = DhcpServerCore(config())
    msg = request(MT.DISCOVER, mac(1), giaddr=ZERO, flags=BROADCAST_FLAG)
    actions = core.handle(dgram(msg, source=ZERO, local=IPv4Address("192.0.2.9")), 0.0)
    assert reply_of(actions).yiaddr in config().subnets[2].network  # interface = "bhs-srv0"


def test_unknown_subnet_gets_no_answer() -> None:
    core = DhcpServerCore(config())
    msg = request(MT.DISCOVER, mac(1), giaddr=IPv4Address("192.0.2.1"))
    assert drops(core.handle(dgram(msg), 0.0)) == [DropReason.NO_SUBNET]


def test_malformed_and_reply_datagrams_are_dropped() -> None:
    core = DhcpServerCore(config())
    bad = dgram(request(MT.DISCOVER, mac(1)))
    assert drops(core.handle(bad.__class__(b"\x01\x02", bad.source, 67, SERVER), 0.0)) == [
        DropReason.MALFORMED
    ]
    reply = request(MT.OFFER, mac(1)).replace(op=Op.BOOTREPLY)
    assert drops(core.handle(dgram(reply), 0.0)) == [DropReason.NOT_A_REQUEST]
    assert drops(core.handle(dgram(request(MT.OFFER, mac(1))), 0.0)) == [
        DropReason.UNEXPECTED_MESSAGE_TYPE
    ]


def test_selecting_request_binds_and_commits_before_ack() -> None:
    core = DhcpServerCore(config())
    offer = reply_of(core.handle(dgram(request(MT.DISCOVER, mac(1))), 0.0))
    actions = core.handle(dgram(request(MT.REQUEST, mac(1), options=(
        opt_addr(Opt.SERVER_ID, SERVER), opt_addr(Opt.REQUESTED_ADDRESS, offer.yiaddr)))), 1.0)
    assert isinstance(actions[0], Commit) and isinstance(actions[-1], Send)
    lease = actions[0].lease
    assert lease.state is LeaseState.BOUND and lease.address == offer.yiaddr
    assert lease.expires == 601.0 and actions[0].event is CommitEvent.BOUND


def test_selecting_request_for_other_server_withdraws_offer() -> None:
    core = DhcpServerCore(config())
    offer = reply_of(core.handle(dgram(request(MT.DISCOVER, mac(1))), 0.0))
    actions = core.handle(dgram(request(MT.REQUEST, mac(1), options=(
        opt_addr(Opt.SERVER_ID, "10.99.0.1"), opt_addr(Opt.REQUESTED_ADDRESS, offer.yiaddr)))), 1.0)
    assert drops(actions) == [DropReason.OTHER_SERVER_SELECTED]
    assert int(offer.yiaddr) not in core.offers
    # the withdrawn offer is free for another client
    msg = request(MT.DISCOVER, mac(2), options=(opt_addr(Opt.REQUESTED_ADDRESS, offer.yiaddr),))
    assert reply_of(core.handle(dgram(msg), 2.0)).yiaddr == offer.yiaddr


def test_offered_address_is_held_for_its_client_only() -> None:
    core = DhcpServerCore(config())
    first = reply_of(core.handle(dgram(request(MT.DISCOVER, mac(1))), 0.0)).yiaddr
    second = reply_of(core.handle(dgram(request(MT.DISCOVER, mac(2))), 1.0)).yiaddr
    assert first != second
    # another client asking for the held address in SELECTING is NAKed
    nak = reply_of(core.handle(dgram(request(MT.REQUEST, mac(3), options=(
        opt_addr(Opt.SERVER_ID, SERVER), opt_addr(Opt.REQUESTED_ADDRESS, first)))), 2.0))
    assert nak.message_type == MT.NAK


def test_offer_expires_after_hold() -> None:
    core = DhcpServerCore(config())
    first = reply_of(core.handle(dgram(request(MT.DISCOVER, mac(1))), 0.0)).yiaddr
    assert core.next_deadline() == 30.0
    assert core.on_timer(30.0) == []
    assert int(first) not in core.offers
    assert core.next_deadline() is None


def test_same_client_gets_same_offer_again() -> None:
    core = DhcpServerCore(config())
    first = reply_of(core.handle(dgram(request(MT.DISCOVER, mac(1))), 0.0)).yiaddr
    assert reply_of(core.handle(dgram(request(MT.DISCOVER, mac(1), xid=2)), 1.0)).yiaddr == first


def test_requested_address_honoured_in_discover() -> None:
    core = DhcpServerCore(config())
    msg = request(MT.DISCOVER, mac(1), options=(opt_addr(Opt.REQUESTED_ADDRESS, "10.51.1.103"),))
    assert reply_of(core.handle(dgram(msg), 0.0)).yiaddr == IPv4Address("10.51.1.103")


def test_an_address_of_the_subnet_outside_its_pools_is_neither_offered_nor_bound() -> None:
    """RFC 2131 §4.3.1: the requested address is offered only "if that address is valid and not
    already allocated": an address of the subnet outside every pool is not the server's to give
    (``available``'s pool check)."""
    core = DhcpServerCore(config())
    outside = opt_addr(Opt.REQUESTED_ADDRESS, "10.51.1.50")
    offer = reply_of(core.handle(dgram(request(MT.DISCOVER, mac(1), options=(outside,))), 0.0))
    assert offer.yiaddr == IPv4Address("10.51.1.100")
    selecting = request(MT.REQUEST, mac(1), options=(opt_addr(Opt.SERVER_ID, SERVER), outside))
    actions = core.handle(dgram(selecting), 1.0)
    assert commits(actions) == [] and reply_of(actions).message_type == MT.NAK


def test_pool_exhausted_is_a_drop() -> None:
    core = DhcpServerCore(config())
    for n in range(5):
        dora(core, mac(n))
    assert drops(core.handle(dgram(request(MT.DISCOVER, mac(99))), 1.0)) == [
        DropReason.POOL_EXHAUSTED
    ]


def test_renewing_extends_lease_and_replies_to_ciaddr() -> None:
    core = DhcpServerCore(config())
    address = dora(core, mac(1))
    msg = request(MT.REQUEST, mac(1), giaddr=ZERO, ciaddr=address)
    actions = core.handle(dgram(msg, source=address, local=SERVER), 300.0)
    assert commits(actions)[0].event is CommitEvent.RENEWED
    assert commits(actions)[0].lease.expires == 900.0
    send = sends(actions)[0]
    assert send.kind is ReplyKind.ACK and send.destination == address and send.port == 68
    assert reply_of(actions).ciaddr == address


def test_rebinding_via_relay_is_acked_to_giaddr() -> None:
    core = DhcpServerCore(config())
    address = dora(core, mac(1))
    actions = core.handle(dgram(request(MT.REQUEST, mac(1), ciaddr=address)), 500.0)
    send = sends(actions)[0]
    assert send.kind is ReplyKind.ACK and (send.destination, send.port) == (RELAY_A, 67)


def test_rebinding_with_someone_elses_address_is_naked() -> None:
    core = DhcpServerCore(config())
    address = dora(core, mac(1))
    nak = reply_of(core.handle(dgram(request(MT.REQUEST, mac(2), ciaddr=address)), 10.0))
    assert nak.message_type == MT.NAK and nak.yiaddr == ZERO


def test_init_reboot_known_client_acked() -> None:
    core = DhcpServerCore(config())
    address = dora(core, mac(1))
    ack = reply_of(core.handle(dgram(request(MT.REQUEST, mac(1), options=(
        opt_addr(Opt.REQUESTED_ADDRESS, address),))), 100.0))
    assert ack.message_type == MT.ACK and ack.yiaddr == address


def test_init_reboot_wrong_network_naked_with_broadcast_bit_via_relay() -> None:
    core = DhcpServerCore(config())
    actions = core.handle(dgram(request(MT.REQUEST, mac(1), options=(
        opt_addr(Opt.REQUESTED_ADDRESS, "10.51.2.150"),))), 0.0)
    nak = reply_of(actions)
    assert nak.message_type == MT.NAK and nak.broadcast
    assert (sends(actions)[0].destination, sends(actions)[0].port) == (RELAY_A, 67)


def test_init_reboot_no_record_must_remain_silent() -> None:
    core = DhcpServerCore(config())
    actions = core.handle(dgram(request(MT.REQUEST, mac(1), options=(
        opt_addr(Opt.REQUESTED_ADDRESS, "10.51.1.101"),))), 0.0)
    assert drops(actions) == [DropReason.NO_RECORD]


def test_init_reboot_other_address_than_recorded_is_naked() -> None:
    core = DhcpServerCore(config())
    address = dora(core, mac(1))
    other = IPv4Address(int(address) + 1)
    nak = reply_of(core.handle(dgram(request(MT.REQUEST, mac(1), options=(
        opt_addr(Opt.REQUESTED_ADDRESS, other),))), 1.0))
    assert nak.message_type == MT.NAK


def test_release_frees_address_but_keeps_affinity() -> None:
    core = DhcpServerCore(config())
    address = dora(core, mac(1))
    actions = core.handle(dgram(request(MT.RELEASE, mac(1), giaddr=ZERO, ciaddr=address)), 5.0)
    assert [c.event for c in commits(actions)] == [CommitEvent.RELEASED]
    assert sends(actions) == []
    assert core.leases[int(address)].state is LeaseState.RELEASED
    # a new client prefers a never-used address; the old client gets its address back
    assert reply_of(core.handle(dgram(request(MT.DISCOVER, mac(2))), 6.0)).yiaddr != address
    assert reply_of(core.handle(dgram(request(MT.DISCOVER, mac(1))), 7.0)).yiaddr == address


def test_release_by_another_client_ignored() -> None:
    core = DhcpServerCore(config())
    address = dora(core, mac(1))
    actions = core.handle(dgram(request(MT.RELEASE, mac(2), giaddr=ZERO, ciaddr=address)), 5.0)
    assert drops(actions) == [DropReason.RELEASE_NOT_HELD]
    assert core.leases[int(address)].state is LeaseState.BOUND


def test_server_must_mark_declined_address_not_available() -> None:
    core = DhcpServerCore(config())
    address = dora(core, mac(1))
    actions = core.handle(dgram(request(MT.DECLINE, mac(1), options=(
        opt_addr(Opt.REQUESTED_ADDRESS, address), opt_addr(Opt.SERVER_ID, SERVER)))), 2.0)
    assert [c.event for c in commits(actions)] == [CommitEvent.DECLINED] and sends(actions) == []
    assert reply_of(core.handle(dgram(request(MT.DISCOVER, mac(1), xid=9)), 3.0)).yiaddr != address
    # quarantine ends after decline_time
    core.on_timer(602.0)
    assert core.leases[int(address)].state is LeaseState.EXPIRED


def test_decline_of_address_not_held_is_ignored() -> None:
    core = DhcpServerCore(config())
    actions = core.handle(dgram(request(MT.DECLINE, mac(1), options=(
        opt_addr(Opt.REQUESTED_ADDRESS, "10.51.1.100"),))), 0.0)
    assert drops(actions) == [DropReason.DECLINE_NOT_HELD]


def test_server_must_not_send_lease_time_in_inform_ack() -> None:
    core = DhcpServerCore(config())
    client = IPv4Address("10.51.1.50")
    actions = core.handle(
        dgram(
            request(MT.INFORM, mac(1), giaddr=ZERO, ciaddr=client),
            source=client,
            local=IPv4Address("10.51.1.2"),
        ),
        0.0,
    )
    ack = reply_of(actions)
    assert ack.message_type == MT.ACK and not ack.has(Opt.LEASE_TIME) and ack.yiaddr == ZERO
    assert ack.get(Opt.ROUTER) == RELAY_A.packed
    assert (sends(actions)[0].destination, sends(actions)[0].port) == (client, 68)
    assert commits(actions) == []


def test_lease_expiry_by_timer() -> None:
    core = DhcpServerCore(config())
    address = dora(core, mac(1))
    assert core.next_deadline() is not None
    actions = core.on_timer(600.0)
    assert [c.event for c in commits(actions)] == [CommitEvent.EXPIRED]
    assert core.leases[int(address)].state is LeaseState.EXPIRED


def test_expired_lease_reusable_by_other_client() -> None:
    core = DhcpServerCore(config())
    taken = [dora(core, mac(n)) for n in range(5)]
    core.on_timer(700.0)
    assert dora(core, mac(50), now=701.0) in taken


def test_reservation_by_mac_always_gets_reserved_address() -> None:
    core = DhcpServerCore(config())
    assert dora(core, bytes.fromhex("52540000010a")) == IPv4Address("10.51.1.10")


def test_reservation_by_client_id() -> None:
    core = DhcpServerCore(config())
    cid = (Opt.CLIENT_ID, bytes.fromhex("ff00112233"))
    assert dora(core, mac(77), options=(cid,)) == IPv4Address("10.51.1.11")


def test_reservation_only_on_its_subnet() -> None:
    core = DhcpServerCore(config())
    address = dora(core, bytes.fromhex("52540000010a"), giaddr=RELAY_B)
    assert address in config().subnets[1].network


def test_reserved_address_never_offered_to_others() -> None:
    core = DhcpServerCore(config())
    msg = request(MT.DISCOVER, mac(1), options=(opt_addr(Opt.REQUESTED_ADDRESS, "10.51.1.10"),))
    assert reply_of(core.handle(dgram(msg), 0.0)).yiaddr != IPv4Address("10.51.1.10")
    nak = reply_of(
        core.handle(dgram(request(MT.REQUEST, mac(1), ciaddr=IPv4Address("10.51.1.10"))), 1.0)
    )
    assert nak.message_type == MT.NAK


def test_reserved_client_cannot_take_a_pool_address() -> None:
    core = DhcpServerCore(config())
    nak = reply_of(core.handle(dgram(request(MT.REQUEST, bytes.fromhex("52540000010a"), options=(
        opt_addr(Opt.SERVER_ID, SERVER), opt_addr(Opt.REQUESTED_ADDRESS, "10.51.1.100")))), 0.0))
    assert nak.message_type == MT.NAK


def test_bootp_reserved_client_gets_bootreply_and_infinite_binding() -> None:
    core = DhcpServerCore(config())
    actions = core.handle(dgram(request(None, bytes.fromhex("52540000010a"))), 0.0)
    reply = reply_of(actions)
    assert reply.op == Op.BOOTREPLY and reply.yiaddr == IPv4Address("10.51.1.10")
    assert (
        reply.message_type is None
        and not reply.has(Opt.SERVER_ID)
        and not reply.has(Opt.LEASE_TIME)
    )
    assert reply.get(Opt.HOST_NAME) == b"boot1"
    assert reply.get(Opt.SUBNET_MASK) == IPv4Address("255.255.255.0").packed
    assert commits(actions)[0].lease.expires is None
    assert sends(actions)[0].kind is ReplyKind.BOOTREPLY


def test_bootp_without_magic_cookie_answered() -> None:
    core = DhcpServerCore(config())
    msg = request(None, bytes.fromhex("52540000010a")).replace(vendor=bytes(64))
    assert reply_of(core.handle(dgram(msg), 0.0)).yiaddr == IPv4Address("10.51.1.10")


def test_bootp_unreserved_dropped_unless_dynamic_bootp() -> None:
    core = DhcpServerCore(config())
    assert drops(core.handle(dgram(request(None, mac(5))), 0.0)) == [
        DropReason.BOOTP_NO_RESERVATION
    ]
    reply = reply_of(core.handle(dgram(request(None, mac(5), giaddr=RELAY_B)), 0.0))
    assert reply.yiaddr in config().subnets[1].network


def test_server_shall_echo_relay_agent_information() -> None:
    core = DhcpServerCore(config())
    info = agent((AgentSub.CIRCUIT_ID, b"port7"), (AgentSub.REMOTE_ID, b"sw1"))
    offer = reply_of(core.handle(dgram(request(MT.DISCOVER, mac(1), options=(info,))), 0.0))
    assert offer.get(Opt.RELAY_AGENT_INFO) == info[1]


def test_server_id_override_rfc5107() -> None:
    core = DhcpServerCore(config())
    override = IPv4Address("10.51.1.1")
    info = agent((AgentSub.SERVER_ID_OVERRIDE, override.packed))
    offer = reply_of(core.handle(dgram(request(MT.DISCOVER, mac(1), options=(info,))), 0.0))
    assert offer.get(Opt.SERVER_ID) == override.packed
    ack = reply_of(
        core.handle(
            dgram(
                request(
                    MT.REQUEST,
                    mac(1),
                    options=(
                        info,
                        opt_addr(Opt.SERVER_ID, override),
                        opt_addr(Opt.REQUESTED_ADDRESS, offer.yiaddr),
                    ),
                )
            ),
            1.0,
        )
    )
    assert ack.message_type == MT.ACK and ack.get(Opt.SERVER_ID) == override.packed


def test_malformed_relay_info_dropped() -> None:
    core = DhcpServerCore(config())
    msg = request(MT.DISCOVER, mac(1), options=((Opt.RELAY_AGENT_INFO, b"\x05\x02ab"),))
    assert drops(core.handle(dgram(msg), 0.0)) == [DropReason.BAD_RELAY_INFO]


def test_server_must_include_client_identifier_rfc6842() -> None:
    core = DhcpServerCore(config())
    cid = (Opt.CLIENT_ID, b"\x01" + mac(1))
    offer = reply_of(core.handle(dgram(request(MT.DISCOVER, mac(1), options=(cid,))), 0.0))
    assert offer.get(Opt.CLIENT_ID) == cid[1]


def test_client_id_is_the_identity() -> None:
    core = DhcpServerCore(config())
    cid = (Opt.CLIENT_ID, b"\x01abc")
    address = dora(core, mac(1), options=(cid,))
    # same client id, different chaddr: the same client
    offer = reply_of(core.handle(dgram(request(MT.DISCOVER, mac(2), options=(cid,))), 1.0))
    assert offer.yiaddr == address


def test_rebinding_to_new_address_supersedes_old_lease() -> None:
    core = DhcpServerCore(config())
    first = dora(core, mac(1))
    actions = core.handle(dgram(request(MT.REQUEST, mac(1), options=(
        opt_addr(Opt.SERVER_ID, SERVER), opt_addr(Opt.REQUESTED_ADDRESS, "10.51.1.104")))), 1.0)
    assert [c.event for c in commits(actions)] == [CommitEvent.SUPERSEDED, CommitEvent.BOUND]
    assert core.leases[int(first)].state is LeaseState.RELEASED


def test_leases_loaded_at_start_are_respected() -> None:
    core = DhcpServerCore(config())
    address = dora(core, mac(1))
    restarted = DhcpServerCore(config(), core.leases.values())
    assert reply_of(restarted.handle(dgram(request(MT.DISCOVER, mac(2))), 1.0)).yiaddr != address
    assert reply_of(restarted.handle(dgram(request(MT.DISCOVER, mac(1))), 1.0)).yiaddr == address


def test_interfaces_filter_for_direct_clients() -> None:
    core = DhcpServerCore(config(interfaces=["bhs-other"]))
    msg = request(MT.DISCOVER, mac(1), giaddr=ZERO, flags=BROADCAST_FLAG)
    assert drops(core.handle(dgram(msg, source=ZERO), 0.0)) == [DropReason.INTERFACE_NOT_SERVED]


def test_no_client_identity_dropped() -> None:
    core = DhcpServerCore(config())
    msg = request(MT.DISCOVER, bytes(6))
    assert drops(core.handle(dgram(msg), 0.0)) == [DropReason.NO_CLIENT_IDENTITY]


def test_reply_respects_max_message_size_and_drops_if_too_large() -> None:
    core = DhcpServerCore(config(options={"option-250": "x" * 900}))
    actions = core.handle(dgram(request(MT.DISCOVER, mac(1))), 0.0)
    assert drops(actions) == [DropReason.REPLY_TOO_LARGE]
    msg = request(MT.DISCOVER, mac(1), options=((Opt.MAX_MESSAGE_SIZE, (1400).to_bytes(2, "big")),))
    assert reply_of(core.handle(dgram(msg), 0.0)).get(250) == b"x" * 900


@pytest.mark.parametrize(
    "payload",
    [b"", b"\x01" * 240, bytes(300), b"\x01\x01\x06\x00" + bytes(232) + b"\x63\x82\x53\x63\x35"],
)
def test_garbage_never_raises(payload: bytes) -> None:
    core = DhcpServerCore(config())
    actions = core.handle(
        dgram(request(MT.DISCOVER, mac(1))).__class__(payload, RELAY_A, 67, SERVER), 0.0
    )
    assert all(isinstance(a, Drop) for a in actions)


def test_pxe_colocated_adds_vendor_class_for_pxe_clients() -> None:
    core = DhcpServerCore(config(), pxe_colocated=True)
    pxe = (Opt.VENDOR_CLASS_ID, b"PXEClient:Arch:00000:UNDI:002001")
    assert (
        reply_of(core.handle(dgram(request(MT.DISCOVER, mac(1), options=(pxe,))), 0.0)).get(60)
        == b"PXEClient"
    )
    assert not reply_of(core.handle(dgram(request(MT.DISCOVER, mac(2))), 0.0)).has(60)


def _http_boot_config() -> DhcpConfig:
    subnets = [dict(BASE_TOML["subnets"][0]), *BASE_TOML["subnets"][1:]]  # type: ignore[index]
    subnets[0]["http_boot"] = {"efi-x64-http": "http://10.51.0.5/ipxe.efi",
                               "efi-arm64": "http://10.51.0.5/arm64.efi"}
    return config(subnets=subnets)


@pytest.mark.parametrize(("arch", "url"), [
    (b"\x00\x10", b"http://10.51.0.5/ipxe.efi"),
    (b"\x00\x13", b"http://10.51.0.5/arm64.efi"),  # ARM64 HTTP: its efi-arm64 twin
])
def test_uefi_http_boot_client_gets_httpclient_and_its_url(arch: bytes, url: bytes) -> None:
    core = DhcpServerCore(_http_boot_config())
    http = ((Opt.VENDOR_CLASS_ID, b"HTTPClient:Arch:00016:UNDI:003000"), (Opt.CLIENT_ARCH, arch))
    offer = reply_of(core.handle(dgram(request(MT.DISCOVER, mac(1), options=http)), 0.0))
    assert offer.get(60) == b"HTTPClient" and offer.file == url
    assert offer.yiaddr != IPv4Address(0)


def test_http_boot_urls_go_only_to_http_clients_of_a_known_architecture() -> None:
    core = DhcpServerCore(_http_boot_config())
    pxe = ((Opt.VENDOR_CLASS_ID, b"PXEClient:Arch:00007:UNDI:003016"), (Opt.CLIENT_ARCH, b"\0\7"))
    plain = reply_of(core.handle(dgram(request(MT.DISCOVER, mac(1), options=pxe)), 0.0))
    assert not plain.has(60) and plain.file == b""
    bios = ((Opt.VENDOR_CLASS_ID, b"HTTPClient:Arch:00020"), (Opt.CLIENT_ARCH, b"\x00\x14"))
    other = reply_of(core.handle(dgram(request(MT.DISCOVER, mac(2), options=bios)), 0.0))
    assert not other.has(60) and other.file == b""


def test_http_boot_needs_urls() -> None:
    subnets = [dict(BASE_TOML["subnets"][0])]  # type: ignore[index]
    subnets[0]["http_boot"] = {"efi-x64-http": "ipxe.efi", "ipxe": "http://x/boot.ipxe"}
    with pytest.raises(ConfigError) as info:
        config(subnets=subnets)
    assert [p.key for p in info.value.problems] == [
        "dhcp.subnets[0].http_boot.ipxe", "dhcp.subnets[0].http_boot.efi-x64-http"]


def test_encode_roundtrip_of_request_helper() -> None:
    msg: DhcpMessage = request(MT.DISCOVER, mac(1))
    assert encode(msg)[:1] == b"\x01" and MessageType.DISCOVER == MT.DISCOVER
