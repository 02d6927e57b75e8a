"""What the kernel datapath is told (relay/datapath.py): the engine's values, the subset's edges.

The property test of the program itself (tests/system/test_relay_kernel_spec.py) needs root and a
namespace; these check the table builder alone: the values are the engine's, and a configuration
the program does not implement leaves the interface out of its subset (its packets go up).
"""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address, IPv4Interface

import pytest

from boothop.relay import datapath
from boothop.relay.classes import ForwardingClass
from boothop.relay.config import InterfaceConfig, RelayConfig
from boothop.relay.engine import RelayEngine
from boothop.relay.interfaces import Interface, InterfaceTable, Role
from boothop.relay.throttle import BucketLimit, RateLimits

LAN = Interface(3, "lan0", True, (IPv4Interface("10.0.1.1/24"), IPv4Interface("10.0.9.1/24")),
                bytes.fromhex("020000000103"))
UP = Interface(4, "up0", True, (IPv4Interface("10.0.100.1/24"),), bytes.fromhex("020000000104"))
TABLE = InterfaceTable.of([LAN, UP])
NEAR, ROUTED = IPv4Address("10.0.100.10"), IPv4Address("10.7.0.5")


#: Per-client rate limits off: with one on, requests are the engine's (datapath.tables).
NO_LIMITS = RateLimits(mac=BucketLimit(1, 0))


def unpack(tables: datapath.Tables, interface: Interface) -> tuple:
    return datapath.IFACE.unpack(tables.ifaces[datapath.U32.pack(interface.index)])


def config(**changes: object) -> RelayConfig:
    lan = InterfaceConfig("lan0", Role.DOWNSTREAM, **changes.pop("lan", {}))  # type: ignore[arg-type]
    return RelayConfig(rate_limits=NO_LIMITS, helpers=(NEAR, ROUTED),
                       interfaces=(lan, InterfaceConfig("up0", Role.UPSTREAM)),
                       **changes)  # type: ignore[arg-type]


def test_the_interface_entry_holds_the_engines_giaddr_option_82_and_circuit() -> None:
    engine = RelayEngine(config(agent_info=True, remote_id=b"r-1",
                                lan={"giaddr": IPv4Address("10.0.9.1")}), TABLE)
    tables = datapath.tables(engine, 67)
    (flags, giaddr, source, mac, agent_len, circuit_len, helper_count, helpers, agent,
     circuit) = unpack(tables, LAN)
    settings = engine.config.interface("lan0")
    assert settings is not None
    expected_agent = engine._agent_info(LAN, settings, False, IPv4Address("10.0.9.1"))
    assert expected_agent is not None
    assert IPv4Address(giaddr) == IPv4Address("10.0.9.1") == IPv4Address(source)
    assert agent[:agent_len] == expected_agent
    assert circuit[:circuit_len] == b"lan0"
    assert mac == LAN.mac
    assert [IPv4Address(helpers[i:i + 4]) for i in range(0, 4 * helper_count, 4)] == [NEAR, ROUTED]
    for flag in (datapath.IF_CLIENTS, datapath.IF_DOWNSTREAM, datapath.IF_UP,
                 datapath.IF_ADDS_AGENT, datapath.IF_ADDS_CIRCUIT, datapath.IF_REQUESTS,
                 datapath.IF_REPLIES):
        assert flags & flag, flag
    up_flags = unpack(tables, UP)[0]
    assert not up_flags & datapath.IF_CLIENTS
    assert not up_flags & datapath.IF_DOWNSTREAM


@pytest.mark.parametrize("changes", [
    {"lan": {"link_selection": "up0"}},
    {"lan": {"server_id_override": True}},
    {"relay_port": 1067},
    {"agent_info": True, "remote_id": b"x" * 70},
], ids=["link-selection", "server-id-override", "relay-port", "agent-value-too-long"])
def test_what_the_program_does_not_implement_leaves_the_interface_to_the_daemon(
        changes: dict[str, object]) -> None:
    flags = unpack(datapath.tables(RelayEngine(config(**changes), TABLE), 67), LAN)[0]
    assert not flags & (datapath.IF_REQUESTS | datapath.IF_REPLIES)


def test_servers_are_told_how_their_replies_must_arrive() -> None:
    engine = RelayEngine(RelayConfig(rate_limits=NO_LIMITS,
                                     helpers=(NEAR, ROUTED, IPv4Address("10.0.100.1"))), TABLE)
    servers = datapath.tables(engine, 67).servers
    kinds = {IPv4Address(key): datapath.SERVER.unpack(value)[:3]
             for key, value in servers.items()}
    assert kinds == {NEAR: (datapath.SERVER_CONNECTED, 1, UP.index),
                     ROUTED: (datapath.SERVER_ROUTED, 0, 0),
                     IPv4Address("10.0.100.1"): (datapath.SERVER_OURS, 0, 0)}


def test_settings_carry_the_hop_limit_never_above_rfc_1542s() -> None:
    engine = RelayEngine(config(max_hops=40), TABLE)
    settings = datapath.SETTINGS.unpack(datapath.tables(engine, 1067).settings)
    assert settings[:5] == (1, 17, 576, 1067, 1068)


def test_requests_stay_in_the_engine_while_a_per_client_rate_limit_is_on() -> None:
    """The program keeps no token buckets: with the default per-MAC limit its requests go up
    (its replies do not depend on it)."""
    engine = RelayEngine(dataclasses.replace(config(), rate_limits=RateLimits()), TABLE)
    flags = unpack(datapath.tables(engine, 67), LAN)[0]
    assert not flags & datapath.IF_REQUESTS
    assert flags & datapath.IF_REPLIES


@pytest.mark.parametrize("interfaces", [frozenset(), frozenset({"lan0"})])
def test_a_classified_interface_stays_in_the_engine_both_ways(interfaces: frozenset[str]) -> None:
    """A forwarding class picks helpers per client, and the PXE diagnosis per class learns from
    the replies: neither is in the program."""
    pxe = ForwardingClass("pxe", (NEAR,), vendor_class=(b"PXEClient",), interfaces=interfaces)
    engine = RelayEngine(config(classes=(pxe,)), TABLE)
    flags = unpack(datapath.tables(engine, 67), LAN)[0]
    assert not flags & (datapath.IF_REQUESTS | datapath.IF_REPLIES)


def test_an_interface_no_class_names_keeps_the_kernel_path() -> None:
    other = ForwardingClass("other", (NEAR,), vendor_class=(b"PXEClient",),
                            interfaces=frozenset({"lan9"}))
    flags = unpack(datapath.tables(RelayEngine(config(classes=(other,)), TABLE), 67), LAN)[0]
    assert flags & datapath.IF_REQUESTS and flags & datapath.IF_REPLIES
