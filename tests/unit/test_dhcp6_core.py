"""The DHCPv6 server core (server/dhcp6/core.py), one RFC 8415 rule per test where it has one."""

from __future__ import annotations

from ipaddress import IPv6Address

import pytest
from dhcp6_helpers import (
    LINK_LOCAL,
    RELAY,
    SERVER_DUID,
    M,
    addresses,
    config,
    core,
    direct,
    duid,
    ia,
    ia_status,
    link_layer,
    message,
    relayed,
    reply,
    sends,
    status,
)
from hypothesis import given
from hypothesis import strategies as st

from boothop.relay.settings import ConfigError
from boothop.relay.wire import Datagram6
from boothop.relay.wire.dhcpv6 import (
    IaAddress,
    IaNa,
    Opt6,
    RelayMessage,
    Status6,
    VendorClass,
    decode6,
    decode_data_list,
    encode_codes,
    encode_data_list,
)
from boothop.server.dhcp.actions import CommitEvent
from boothop.server.dhcp.deadlines import SLACK
from boothop.server.dhcp.lease import LeaseState
from boothop.server.dhcp6.actions import Commit6, Drop6, Drop6Reason, Send6
from boothop.server.dhcp6.core import Dhcp6ServerCore

POOL1 = (IPv6Address("2001:db8:1::100"), IPv6Address("2001:db8:1::1ff"))


def test_solicit_gets_an_advertise_from_the_interfaces_pool_and_nothing_is_committed() -> None:
    server = core()
    actions = server.handle(direct(message(M.SOLICIT, duid(1), ia(5))), 0.0)
    msg = reply(actions)
    assert msg.msg_type == M.ADVERTISE and msg.transaction_id == 0x1234
    assert msg.get(Opt6.SERVERID) == SERVER_DUID and msg.get(Opt6.CLIENTID) == duid(1)
    [address] = addresses(msg)
    assert POOL1[0] <= address <= POOL1[1]
    assert not any(isinstance(a, Commit6) for a in actions)
    send = sends(actions)[0]
    assert (send.destination, send.port, send.ifindex) == (LINK_LOCAL, 546, 7)


def test_request_commits_the_advertised_address_before_the_reply() -> None:
    server = core()
    advertised = addresses(reply(server.handle(direct(message(M.SOLICIT, duid(1), ia(5))), 0.0)))
    actions = server.handle(direct(message(M.REQUEST, duid(1), ia(5, *advertised),
                                           server=SERVER_DUID)), 1.0)
    assert [type(a) for a in actions] == [Commit6, Send6]
    commit = actions[0]
    assert isinstance(commit, Commit6) and commit.event is CommitEvent.BOUND
    assert commit.lease.address == advertised[0] and commit.lease.expires == 1.0 + 7200
    assert reply(actions).msg_type == M.REPLY and addresses(reply(actions)) == advertised


def test_rapid_commit_solicit_gets_a_committed_reply_with_rapid_commit() -> None:
    """RFC 8415 §18.3.1: with Rapid Commit (and the server configured for it), a Reply."""
    actions = core().handle(direct(message(M.SOLICIT, duid(1), ia(), (14, b""))), 0.0)
    assert isinstance(actions[0], Commit6)
    msg = reply(actions)
    assert msg.msg_type == M.REPLY and msg.has(Opt6.RAPID_COMMIT)
    off = core(rapid_commit=False).handle(direct(message(M.SOLICIT, duid(1), ia(), (14, b""))),
                                          0.0)
    assert reply(off).msg_type == M.ADVERTISE and not any(isinstance(a, Commit6) for a in off)


@pytest.mark.parametrize(("kind", "server", "reason"), [
    (M.SOLICIT, SERVER_DUID, Drop6Reason.SERVER_ID_NOT_ALLOWED),  # §16.2
    (M.REBIND, SERVER_DUID, Drop6Reason.SERVER_ID_NOT_ALLOWED),  # §16.7
    (M.CONFIRM, SERVER_DUID, Drop6Reason.SERVER_ID_NOT_ALLOWED),  # §16.5
    (M.REQUEST, None, Drop6Reason.NO_SERVER_ID),  # §16.4
    (M.RENEW, None, Drop6Reason.NO_SERVER_ID),  # §16.6
    (M.RELEASE, b"\x00\x03\x00\x01other", Drop6Reason.OTHER_SERVER_SELECTED),
])
def test_server_identifier_rules(kind: int, server: bytes | None, reason: Drop6Reason) -> None:
    actions = core().handle(direct(message(kind, duid(1), ia(), server=server)), 0.0)
    assert [a.reason for a in actions if isinstance(a, Drop6)] == [reason]
    assert not sends(actions)


def test_a_message_without_client_id_is_dropped() -> None:
    actions = core().handle(direct(message(M.SOLICIT, None, ia())), 0.0)
    assert [a.reason for a in actions if isinstance(a, Drop6)] == [Drop6Reason.NO_CLIENT_ID]


def test_a_direct_client_on_an_unserved_interface_is_dropped() -> None:
    actions = core().handle(direct(message(M.SOLICIT, duid(1), ia()), ifindex=99), 0.0)
    assert [a.reason for a in actions if isinstance(a, Drop6)] == [Drop6Reason.NO_SUBNET]


def test_a_relayed_solicit_takes_the_pool_of_the_relays_link_and_goes_back_wrapped() -> None:
    """RFC 8415 §13.1 (the link-address chooses the link) and §19.3 (Relay-reply with the
    Interface-ID copied, to the relay's port 547)."""
    actions = core().handle(relayed(message(M.SOLICIT, duid(1), ia())), 0.0)
    send = sends(actions)[0]
    assert (send.destination, send.port) == (RELAY, 547)
    assert send.source == IPv6Address("2001:db8::1")  # answered from the address asked
    outer = decode6(send.payload)
    assert isinstance(outer, RelayMessage) and outer.msg_type == M.RELAY_REPL
    assert outer.link_address == IPv6Address("2001:db8:2::1") and outer.peer_address == LINK_LOCAL
    assert outer.get(Opt6.INTERFACE_ID) == b"lan0"
    [address] = addresses(reply(actions))
    assert IPv6Address("2001:db8:2::100") <= address <= IPv6Address("2001:db8:2::103")


def test_nested_relays_get_nested_relay_replies() -> None:
    outer = RelayMessage(M.RELAY_FORW, 1, IPv6Address("::"), IPv6Address("2001:db8:9::1"),
                         ((int(Opt6.INTERFACE_ID), b"up1"),))
    actions = core().handle(relayed(message(M.SOLICIT, duid(1), ia()), outer=outer), 0.0)
    first = decode6(sends(actions)[0].payload)
    assert isinstance(first, RelayMessage) and first.hop_count == 1
    assert first.get(Opt6.INTERFACE_ID) == b"up1"
    second = first.inner()
    assert isinstance(second, RelayMessage) and second.get(Opt6.INTERFACE_ID) == b"lan0"
    assert addresses(reply(actions))  # the innermost relay's link chose subnet 2


def test_relay_source_port_gets_the_reply_on_the_port_it_came_from() -> None:
    """RFC 8357 §5.2."""
    dgram = relayed(message(M.SOLICIT, duid(1), ia()), "2001:db8:2::1", (135, b"\x0f\xa0"))
    dgram.source_port = 4000
    assert sends(core().handle(dgram, 0.0))[0].port == 4000


def test_reservations_by_duid_and_by_client_link_layer_address() -> None:
    server = core()
    by_duid = server.handle(direct(message(M.SOLICIT, bytes.fromhex("0003000152540000000a"),
                                           ia())), 0.0)
    assert addresses(reply(by_duid)) == [IPv6Address("2001:db8:1::10")]
    # RFC 6939: the relay's option 79 names the client's MAC; the prefix holds the relay link
    # 2001:db8:1::1 here.
    by_mac = server.handle(relayed(message(M.SOLICIT, duid(77), ia()), "2001:db8:1::1",
                                   link_layer("52:54:00:00:00:0b")), 0.0)
    assert addresses(reply(by_mac)) == [IPv6Address("2001:db8:1::11")]
    # Nobody else gets a reserved address, even asking for it.
    other = server.handle(direct(message(M.SOLICIT, duid(2), ia(1, "2001:db8:1::10"))), 0.0)
    assert addresses(reply(other)) != [IPv6Address("2001:db8:1::10")]


def test_pool_exhaustion_gives_no_addrs_avail() -> None:
    server = core()
    for n in range(4):
        server.handle(relayed(message(M.SOLICIT, duid(n), ia(), (14, b""))), 0.0)
    msg = reply(server.handle(relayed(message(M.SOLICIT, duid(9), ia())), 0.0))
    assert addresses(msg) == [] and ia_status(msg) == [Status6.NO_ADDRS_AVAIL]


def bound(server: Dhcp6ServerCore, client: int = 1) -> IPv6Address:
    """Bind an address to ``client`` by a Rapid Commit Solicit."""
    actions = server.handle(direct(message(M.SOLICIT, duid(client), ia(), (14, b""))), 0.0)
    return addresses(reply(actions))[0]


def test_renew_extends_and_an_unknown_ia_gets_no_binding() -> None:
    server = core()
    address = bound(server)
    actions = server.handle(direct(message(M.RENEW, duid(1), ia(1, address),
                                           server=SERVER_DUID)), 100.0)
    assert [c.event for c in actions if isinstance(c, Commit6)] == [CommitEvent.RENEWED]
    assert server.leases[address].expires == 100.0 + 7200
    unknown = reply(server.handle(direct(message(M.RENEW, duid(1), ia(2, address),
                                                 server=SERVER_DUID)), 100.0))
    assert ia_status(unknown) == [Status6.NO_BINDING]


def test_a_client_renewing_in_a_loop_does_not_grow_the_timers_and_still_expires() -> None:
    """The IPv4 core's soak finding, held for DHCPv6 by the same Deadlines: each renewal leaves
    its earlier deadline behind, and the heap is swept before it outgrows the bindings."""
    server = core()
    quiet = bound(server, 2)  # bound at 0: its deadline must survive the sweeps
    address = bound(server)
    renew = direct(message(M.RENEW, duid(1), ia(1, address), server=SERVER_DUID))
    for n in range(5_000):
        server.handle(renew, 1.0 + n * 0.001)
    last = 1.0 + 4_999 * 0.001
    assert len(server._timers) <= 2 * (len(server.leases) + len(server.offers)) + SLACK
    assert [c.lease.address for c in server.on_timer(7200)] == [quiet]
    assert server.on_timer(last + 7200 - 1) == []
    assert [c.lease.address for c in server.on_timer(last + 7200)] == [address]


def test_rebind_of_an_address_off_this_link_gets_lifetime_zero() -> None:
    """RFC 8415 §18.3.5: addresses not appropriate for the link come back with lifetimes 0."""
    msg = reply(core().handle(direct(message(M.REBIND, duid(1), ia(1, "2001:db8:99::5"))), 0.0))
    [raw] = msg.get_all(Opt6.IA_NA)
    [entry] = [IaAddress.decode(v) for v in IaNa.decode(raw).get_all(Opt6.IAADDR)]
    assert entry.valid_lifetime == 0 and entry.preferred_lifetime == 0


def test_release_frees_and_decline_quarantines() -> None:
    server = core()
    address = bound(server, 1)
    msg = reply(server.handle(direct(message(M.RELEASE, duid(1), ia(1, address),
                                             server=SERVER_DUID)), 10.0))
    assert status(msg) == Status6.SUCCESS
    assert server.leases[address].state is LeaseState.RELEASED
    second = bound(server, 2)
    server.handle(direct(message(M.DECLINE, duid(2), ia(1, second), server=SERVER_DUID)), 20.0)
    assert server.leases[second].state is LeaseState.DECLINED
    later = [bound(server, n) for n in range(3, 8)]
    assert second not in later


def test_confirm_on_and_off_link() -> None:
    """RFC 8415 §18.3.3."""
    on = reply(core().handle(direct(message(M.CONFIRM, duid(1), ia(1, "2001:db8:1::123"))), 0))
    off = reply(core().handle(direct(message(M.CONFIRM, duid(1), ia(1, "2001:db8:7::1"))), 0))
    assert (status(on), status(off)) == (Status6.SUCCESS, Status6.NOT_ON_LINK)
    empty = core().handle(direct(message(M.CONFIRM, duid(1), ia(1))), 0)
    assert [a.reason for a in empty if isinstance(a, Drop6)] == [
        Drop6Reason.CONFIRM_WITHOUT_ADDRESSES]


def test_a_unicast_request_from_a_direct_client_gets_use_multicast() -> None:
    """RFC 8415 §18.3.2: no Server Unicast option was given, so UseMulticast."""
    msg = reply(core().handle(direct(message(M.REQUEST, duid(1), ia(), server=SERVER_DUID),
                                     destination=IPv6Address("2001:db8:1::1")), 0.0))
    assert status(msg) == Status6.USE_MULTICAST and addresses(msg) == []


def oro(*codes: int) -> tuple[int, bytes]:
    return (int(Opt6.ORO), encode_codes(codes))


@pytest.mark.parametrize(("vendor", "arch", "url"), [
    (b"PXEClient:Arch:00007:UNDI:003016", 7, b"tftp://[2001:db8::20]/ipxe.efi"),
    (b"HTTPClient:Arch:00016:UNDI:003000", 16, b"http://[2001:db8::20]/ipxe.efi"),
    (None, 7, b"tftp://[2001:db8::20]/ipxe.efi"),
])
def test_bootfile_url_by_architecture_and_vendor_class(vendor: bytes | None, arch: int,
                                                       url: bytes) -> None:
    """RFC 5970: Bootfile-URL (59) and Bootfile-Parameters (60) when asked for in ORO."""
    extra = [oro(23, 59, 60), (int(Opt6.CLIENT_ARCH_TYPE), arch.to_bytes(2, "big"))]
    if vendor is not None:
        extra.append(VendorClass(343, (vendor,)).option())
    msg = reply(core().handle(direct(message(M.SOLICIT, duid(1), ia(), *extra)), 0.0))
    assert msg.get(Opt6.BOOTFILE_URL) == url
    # UEFI HTTP boot (EDK2) takes only an offer that names it an HTTPClient offer.
    assert [VendorClass.decode(v) for v in msg.get_all(Opt6.VENDOR_CLASS)] == (
        [VendorClass(343, (b"HTTPClient",))] if url.startswith(b"http") else [])
    assert decode_data_list(msg.get(Opt6.BOOTFILE_PARAM) or b"") == (b"console=ttyS0",)
    assert msg.get(Opt6.DNS_SERVERS) == IPv6Address("2001:db8::53").packed


def test_ipxe_gets_its_script_url_whatever_its_architecture() -> None:
    """An iPXE that was itself the boot file asks again with the same architecture: its User
    Class "iPXE" (RFC 8415 §21.15, items behind 2-octet lengths) gets the script, not iPXE."""
    script = "http://[2001:db8::20]/boot.ipxe"
    boot = {"efi-x64": "tftp://[2001:db8::20]/ipxe.efi", "ipxe": script}
    arch = (int(Opt6.CLIENT_ARCH_TYPE), (7).to_bytes(2, "big"))
    ipxe = (int(Opt6.USER_CLASS), encode_data_list([b"iPXE"]))
    other = (int(Opt6.USER_CLASS), encode_data_list([b"iPXEx", b"lab"]))
    asked = [
        reply(core(boot=boot).handle(direct(message(M.SOLICIT, duid(1), ia(), oro(59), arch,
                                                    *user)), 0.0)).get(Opt6.BOOTFILE_URL)
        for user in ([ipxe], [other], [])]
    assert asked == [script.encode(), b"tftp://[2001:db8::20]/ipxe.efi",
                     b"tftp://[2001:db8::20]/ipxe.efi"]


def test_no_bootfile_url_unasked_or_for_an_unknown_architecture() -> None:
    arch = (int(Opt6.CLIENT_ARCH_TYPE), (11).to_bytes(2, "big"))
    unasked = reply(core().handle(direct(message(M.SOLICIT, duid(1), ia(), arch)), 0.0))
    unknown = reply(core().handle(direct(message(M.SOLICIT, duid(1), ia(), oro(59), arch)), 0))
    assert not unasked.has(Opt6.BOOTFILE_URL) and not unknown.has(Opt6.BOOTFILE_URL)
    assert not unasked.has(Opt6.DNS_SERVERS)  # not in its ORO


def test_expiry_marks_the_lease_expired_by_the_timer() -> None:
    server = core()
    address = bound(server)
    deadline = server.next_deadline()
    assert deadline is not None
    actions = server.on_timer(7200.0)
    assert [c.event for c in actions if isinstance(c, Commit6)] == [CommitEvent.EXPIRED]
    assert server.leases[address].state is LeaseState.EXPIRED


def test_rollback_restores_memory_when_the_store_fails() -> None:
    server = core()
    actions = server.handle(direct(message(M.SOLICIT, duid(1), ia(), (14, b""))), 0.0)
    server.rollback([a for a in actions if isinstance(a, Commit6)])
    assert server.leases == {} and server.by_client == {}


def test_bad_configuration_is_refused_with_its_key() -> None:
    with pytest.raises(ConfigError) as info:
        config(subnets=[{"prefix": "2001:db8:1::/64", "pools": ["2001:db8:5::1-2001:db8:5::9"],
                         "reservations": [{"address": "2001:db8:1::5"}]}],
               server_duid="01")
    assert sorted(p.key for p in info.value.problems) == [
        "dhcp6.server_duid", "dhcp6.subnets[0].pools[0]",
        "dhcp6.subnets[0].reservations[0].duid"]


@given(st.binary(max_size=300), st.booleans())
def test_any_bytes_give_actions_never_an_exception(payload: bytes, relay: bool) -> None:
    dgram = Datagram6(payload, RELAY if relay else LINK_LOCAL, 547, IPv6Address("ff02::1:2"), 7,
                      547)
    assert all(isinstance(a, Drop6 | Send6 | Commit6) for a in core().handle(dgram, 0.0))
