"""Giaddr on a LAN with several subnets: the per-interface modes primary, pinned, smart and all.

Host and helpers as in test_relay_engine.py: lan1 holds 10.1.0.1/24 (primary) and 10.11.0.1/24
(secondary). Smart giaddr's anchor is Cisco's ``ip dhcp smart-relay``: "the relay agent uses
secondary addresses as giaddr after three DISCOVER attempts without a DHCPOFFER" (the number is
``smart_retries``, default 3).
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

import pytest
from test_relay_engine import (
    DHCP_SERVER,
    LAN1,
    LAN1_ADDR,
    LAN1_SECONDARY,
    PXE_SERVER,
    UP0,
    agent_info,
    delivery,
    drop_reason,
    forwarded,
    forwards,
    from_client,
    from_server,
    host_interfaces,
    make_config,
    make_engine,
    reply,
    request,
)

from boothop.relay.config import GiaddrMode
from boothop.relay.configfile import load
from boothop.relay.drops import DropReason
from boothop.relay.engine import RelayEngine
from boothop.relay.giaddr import SmartGiaddr
from boothop.relay.interfaces import Interface, InterfaceTable
from boothop.relay.settings import ConfigError
from boothop.relay.wire import AgentSub, MessageType, Opt, decode

OTHER_MAC = bytes.fromhex("525400ffeedd")
LAN1_THIRD = IPv4Address("10.21.0.1")


def smart(**changes: object) -> RelayEngine:
    return make_engine({"lan1": {"giaddr_mode": GiaddrMode.SMART}}, **changes)


def giaddr_of(engine: RelayEngine, message: object = None) -> IPv4Address:
    return forwarded(engine.handle(from_client(message or request()), 0.0)).giaddr


def test_primary_mode_is_the_default_and_never_moves() -> None:
    engine = make_engine()
    assert [giaddr_of(engine) for _ in range(10)] == [LAN1_ADDR] * 10
    assert engine.counters.giaddr_fallbacks == {}


def test_pinned_giaddr_wins_over_a_mode() -> None:
    engine = make_engine({"lan1": {"giaddr": LAN1_SECONDARY, "giaddr_mode": GiaddrMode.SMART}})
    assert [giaddr_of(engine) for _ in range(5)] == [LAN1_SECONDARY] * 5


def test_smart_three_discovers_without_an_offer_move_the_client_to_the_secondary() -> None:
    """Cisco smart-relay: DISCOVERs 1-3 with the primary, the 4th with the next address."""
    engine = smart()
    seen = [giaddr_of(engine) for _ in range(4)]
    assert seen == [LAN1_ADDR, LAN1_ADDR, LAN1_ADDR, LAN1_SECONDARY]
    assert engine.counters.giaddr_fallbacks == {"lan1": 1}
    assert engine.counters.snapshot()["giaddr_fallbacks"] == {"lan1": 1}


def test_smart_retries_is_configurable() -> None:
    engine = smart(smart_retries=1)
    assert [giaddr_of(engine) for _ in range(3)] == [LAN1_ADDR, LAN1_SECONDARY, LAN1_ADDR]
    assert engine.counters.giaddr_fallbacks == {"lan1": 2}


def test_smart_after_the_last_secondary_comes_the_primary_again() -> None:
    engine = smart()
    seen = [giaddr_of(engine) for _ in range(9)]
    assert seen == [LAN1_ADDR] * 3 + [LAN1_SECONDARY] * 3 + [LAN1_ADDR] * 3


def test_smart_a_delivered_offer_keeps_the_address_that_worked() -> None:
    """The OFFER for the secondary subnet resets the count: the client stays there."""
    engine = smart()
    for _ in range(4):
        giaddr_of(engine)
    offer = reply(giaddr=LAN1_SECONDARY, yiaddr="10.11.0.50")
    assert delivery(engine.handle(from_server(offer), 0.0)).ifindex == LAN1
    assert [giaddr_of(engine) for _ in range(3)] == [LAN1_SECONDARY] * 3
    assert engine.counters.giaddr_fallbacks == {"lan1": 1}


def test_smart_a_reply_before_the_limit_resets_the_count() -> None:
    engine = smart()
    for _ in range(2):
        giaddr_of(engine)
    delivery(engine.handle(from_server(reply()), 0.0))
    assert [giaddr_of(engine) for _ in range(3)] == [LAN1_ADDR] * 3


def test_smart_only_discovers_count_a_requests_giaddr_never_moves() -> None:
    engine = smart()
    bare_request = request(MessageType.REQUEST)
    assert [giaddr_of(engine, bare_request) for _ in range(6)] == [LAN1_ADDR] * 6
    assert engine.counters.giaddr_fallbacks == {}


def test_smart_a_request_naming_its_address_goes_with_that_subnets_address() -> None:
    """RFC 2131 §4.3.2: a REQUEST names its address in option 50 (SELECTING, INIT-REBOOT) or in
    ciaddr (RENEWING, REBINDING): the giaddr is the interface address on that subnet, without
    any state (a restarted relay gets it right)."""
    engine = smart()
    selecting = request(MessageType.REQUEST,
                        extra=((Opt.REQUESTED_ADDRESS, IPv4Address("10.11.0.50").packed),))
    assert giaddr_of(engine, selecting) == LAN1_SECONDARY
    rebinding = request(MessageType.REQUEST, ciaddr=IPv4Address("10.11.0.50"))
    assert giaddr_of(engine, rebinding) == LAN1_SECONDARY
    elsewhere = request(MessageType.REQUEST,
                        extra=((Opt.REQUESTED_ADDRESS, IPv4Address("192.0.2.9").packed),))
    assert giaddr_of(engine, elsewhere) == LAN1_SECONDARY  # unknown subnet: where it was
    # A DISCOVER's option 50 is only a wish: DISCOVERs follow the count.
    wish = request(extra=((Opt.REQUESTED_ADDRESS, IPv4Address("10.1.0.9").packed),))
    assert giaddr_of(engine, wish) == LAN1_SECONDARY


def test_smart_clients_are_counted_apart() -> None:
    engine = smart()
    for _ in range(4):
        giaddr_of(engine)
    other = request(chaddr=OTHER_MAC + bytes(10))
    assert giaddr_of(engine, other) == LAN1_ADDR
    assert giaddr_of(engine) == LAN1_SECONDARY


def test_smart_on_a_single_address_interface_counts_no_fallback() -> None:
    engine = make_engine({"lan2": {"giaddr_mode": GiaddrMode.SMART}})
    for _ in range(7):
        assert forwarded(engine.handle(from_client(request(), 4), 0.0)).giaddr \
            == IPv4Address("10.2.0.1")
    assert engine.counters.giaddr_fallbacks == {}


def test_smart_state_survives_a_reload() -> None:
    engine = smart()
    for _ in range(4):
        giaddr_of(engine)
    engine.update_config(make_config({"lan1": {"giaddr_mode": GiaddrMode.SMART}}))
    engine.update_interfaces(host_interfaces())
    assert giaddr_of(engine) == LAN1_SECONDARY


def test_smart_follows_an_address_added_live() -> None:
    """The interface list comes from netlink: a third subnet added later is the next step."""
    engine = smart(smart_retries=1)
    assert [giaddr_of(engine) for _ in range(2)] == [LAN1_ADDR, LAN1_SECONDARY]
    table = InterfaceTable.of(
        [i if i.index != LAN1 else Interface(LAN1, "lan1", True, (*i.addresses,
                                                                    IPv4Interface("10.21.0.1/24")))
         for i in host_interfaces()])
    engine.update_interfaces(table)
    assert [giaddr_of(engine) for _ in range(2)] == [LAN1_THIRD, LAN1_ADDR]


def test_smart_table_is_bounded() -> None:
    chooser = SmartGiaddr(retries=1, capacity=4)
    addresses = (IPv4Interface("10.1.0.1/24"), IPv4Interface("10.11.0.1/24"))
    for n in range(10):
        chooser.choose(LAN1, bytes((n,)) * 6, addresses, discover=True)
    assert len(chooser) == 4


def test_all_mode_sends_one_copy_per_address_to_every_helper() -> None:
    engine = make_engine({"lan1": {"giaddr_mode": GiaddrMode.ALL}}, agent_info=True)
    outcome = engine.handle(from_client(request()), 0.0)
    sent = [(f.server, decode(f.payload)) for f in forwards(outcome)]
    assert [(server, message.giaddr) for server, message in sent] == [
        (DHCP_SERVER, LAN1_ADDR), (PXE_SERVER, LAN1_ADDR),
        (DHCP_SERVER, LAN1_SECONDARY), (PXE_SERVER, LAN1_SECONDARY)]
    assert all(agent_info(message).circuit_id == b"lan1" for _, message in sent)
    assert engine.counters.forwarded == {DHCP_SERVER: 2, PXE_SERVER: 2}
    assert outcome.giaddr == LAN1_ADDR


@pytest.mark.parametrize("giaddr", [LAN1_ADDR, LAN1_SECONDARY])
def test_replies_to_any_address_of_the_interface_are_delivered_from_that_address(
        giaddr: IPv4Address) -> None:
    """The client's gateway on a secondary subnet is the secondary address: the reply leaves
    from the address the server answered for."""
    for mode in GiaddrMode:
        engine = make_engine({"lan1": {"giaddr_mode": mode}})
        sent = delivery(engine.handle(from_server(reply(giaddr=giaddr)), 0.0))
        assert (sent.ifindex, sent.source) == (LAN1, giaddr)


def test_a_secondary_giaddr_keeps_the_trust_rules() -> None:
    """A reply for the secondary address arriving on the client side is still dropped."""
    engine = smart()
    wrong_side = from_server(reply(giaddr=LAN1_SECONDARY), ifindex=LAN1)
    assert drop_reason(engine.handle(wrong_side, 0.0)) is DropReason.REPLY_WRONG_INTERFACE
    assert delivery(engine.handle(from_server(reply(giaddr=LAN1_SECONDARY), ifindex=UP0),
                                  0.0)).ifindex == LAN1


def test_smart_with_link_selection_names_the_chosen_subnet_in_suboption_5() -> None:
    """RFC 3527: giaddr is the upstream address; the link-selection sub-option carries the
    client's subnet, which is the smart choice."""
    engine = make_engine({"lan1": {"giaddr_mode": GiaddrMode.SMART, "link_selection": "up0"}},
                         smart_retries=1)
    first, second = (forwarded(engine.handle(from_client(request()), 0.0)) for _ in range(2))
    assert first.giaddr == second.giaddr == IPv4Address("10.99.0.1")
    assert agent_info(first).get(AgentSub.LINK_SELECTION) == LAN1_ADDR.packed
    assert agent_info(second).get(AgentSub.LINK_SELECTION) == LAN1_SECONDARY.packed


def test_config_giaddr_takes_a_mode_or_an_address(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text('helpers = ["10.9.0.10"]\nsmart_retries = 2\n'
                    '[[interface]]\nname = "a"\ngiaddr = "smart"\n'
                    '[[interface]]\nname = "b"\ngiaddr = "all"\n'
                    '[[interface]]\nname = "c"\ngiaddr = "10.1.0.1"\n'
                    '[[interface]]\nname = "d"\n')
    relay = load(path).relay
    assert [(i.giaddr_mode, i.giaddr) for i in relay.interfaces] == [
        (GiaddrMode.SMART, None), (GiaddrMode.ALL, None),
        (GiaddrMode.PRIMARY, IPv4Address("10.1.0.1")), (GiaddrMode.PRIMARY, None)]
    assert relay.smart_retries == 2


@pytest.mark.parametrize(("text", "key", "reason"), [
    ('giaddr = "clever"', "interface[0].giaddr", "not an IPv4 address: 'clever'"),
    ("giaddr = 3", "interface[0].giaddr", "must be an IPv4 address string, not int 3"),
])
def test_config_bad_giaddr_names_file_line_key_reason(tmp_path: Path, text: str, key: str,
                                                      reason: str) -> None:
    path = tmp_path / "relay.toml"
    path.write_text(f'helpers = ["10.9.0.10"]\n[[interface]]\nname = "a"\n{text}\n')
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert (caught.value.key, caught.value.line, caught.value.reason) == (key, 4, reason)


def test_config_smart_retries_out_of_range_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text('helpers = ["10.9.0.10"]\nsmart_retries = 0\n')
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert (caught.value.key, caught.value.line) == ("smart_retries", 2)
