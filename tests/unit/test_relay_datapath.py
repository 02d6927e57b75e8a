"""What the kernel datapath is told (relay/datapath.py): the engine's values, the subset's edges.

The property test of the program itself (tests/system/test_relay_kernel_spec.py) needs root and a
namespace; these check the table builder alone: the values are the engine's, and a configuration
the program does not implement leaves the interface out of its subset (its packets go up).
"""

from __future__ import annotations

import dataclasses
import re
import struct
from ipaddress import IPv4Address, IPv4Interface

import pytest

from boothop.relay import datapath, kernel
from boothop.relay.classes import ForwardingClass
from boothop.relay.compiled import PROGRAM_SOURCE, source_text
from boothop.relay.config import InterfaceConfig, RelayConfig
from boothop.relay.drops import DropReason
from boothop.relay.engine import RelayEngine
from boothop.relay.interfaces import Interface, InterfaceTable, Role
from boothop.relay.throttle import BucketLimit, RateLimits

LAN = Interface(3, "lan0", True, (IPv4Interface("10.0.1.1/24"), IPv4Interface("10.0.9.1/24")),
                bytes.fromhex("020000000103"))
UP = Interface(4, "up0", True, (IPv4Interface("10.0.100.1/24"),), bytes.fromhex("020000000104"))
TABLE = InterfaceTable.of([LAN, UP])
NEAR, ROUTED = IPv4Address("10.0.100.10"), IPv4Address("10.7.0.5")


#: Per-client rate limits off (the program's buckets have tests of their own).
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


def test_requests_take_the_kernel_path_with_the_default_per_mac_limit() -> None:
    """The program keeps the per-MAC token buckets: told the engine's burst and rate as GCRA
    (interval 1 / rate, tolerance (burst - 1) / rate, in ns) under a name for the limit."""
    engine = RelayEngine(dataclasses.replace(config(), rate_limits=RateLimits()), TABLE)
    tables = datapath.tables(engine, 67)
    flags = unpack(tables, LAN)[0]
    assert flags & datapath.IF_REQUESTS and flags & datapath.IF_REPLIES
    limit, interval, tolerance = datapath.SETTINGS.unpack(tables.settings)[-3:]
    assert limit == datapath.mac_limit(engine) != 0
    assert (interval, tolerance) == (2_000_000_000, 18_000_000_000)  # burst 10, 0.5/s


def test_a_changed_limit_names_new_buckets_and_no_limit_none() -> None:
    """The engine starts every client afresh when the limit changes: the program's buckets are
    keyed by the limit's name."""
    names = {datapath.mac_limit(RelayEngine(dataclasses.replace(config(), rate_limits=limits),
                                            TABLE))
             for limits in (RateLimits(), RateLimits(mac=BucketLimit(10, 1)),
                            RateLimits(table_size=100))}
    assert len(names) == 3 and 0 not in names
    assert datapath.mac_limit(RelayEngine(config(), TABLE)) == 0


@pytest.mark.parametrize("limits", [
    RateLimits(circuit=BucketLimit(100, 10)),
    RateLimits(table_size=datapath.MAX_CLIENTS + 1),
], ids=["per-circuit", "table-beyond-the-programs"])
def test_requests_stay_in_the_engine_for_a_limit_the_program_does_not_keep(
        limits: RateLimits) -> None:
    """A per-circuit limit reads a downstream agent's option 82; a table larger than the
    program's would forget clients the engine remembers. Replies do not depend on either."""
    engine = RelayEngine(dataclasses.replace(config(), rate_limits=limits), TABLE)
    flags = unpack(datapath.tables(engine, 67), LAN)[0]
    assert not flags & datapath.IF_REQUESTS
    assert flags & datapath.IF_REPLIES


def test_kernel_counters_become_the_engines_drop_and_throttle_counters() -> None:
    counters = dict.fromkeys(datapath.COUNTERS, 0) | {"requests": 7, "received": 7,
                                                      "rate_limited_mac": 3, "throttled_mac": 1}
    relay = datapath.KernelCounts(counters, {}, {}, {}).as_relay_counters(67)
    assert relay.dropped == {DropReason.RATE_LIMITED_MAC: 3}
    assert relay.throttled_clients == {"mac": 1}


def test_a_bucket_entry_decodes_to_its_client() -> None:
    key = datapath.CLIENT.pack(3, 77, 6, LAN.mac)
    client = datapath.KernelClient.decode(key, datapath.ALLOWANCE.pack(123, 4))
    assert (client.ifindex, client.hardware_address, client.limit, client.tat,
            client.dropped) == (3, LAN.mac, 77, 123, 4)


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


def test_the_counter_names_match_the_programs_enums() -> None:
    """The program's counters array is indexed by its enums: the names here must be as many
    and in the same places (relay/bpf/relay.bpf.c is the other half)."""
    source = source_text(PROGRAM_SOURCE).decode()
    counters = re.search(r"enum \{\s*(C_RECEIVED.*?)C_UP_FIRST", source, re.DOTALL)
    reasons = re.search(r"enum \{\s*(UP_DISABLED.*?)UP_REASONS,", source, re.DOTALL)
    assert counters is not None and reasons is not None
    assert len(re.findall(r"^\s*C_\w+,", counters.group(1), re.MULTILINE)) == len(
        datapath.COUNTERS)
    assert len(re.findall(r"^\s*UP_\w+,", reasons.group(1), re.MULTILINE)) == len(
        datapath.PASSED_UP_REASONS)


def test_ring_records_are_committed_up_to_the_first_busy_one_and_unpacked_without_discards(
        ) -> None:
    """``Events.records`` stops at the first record the program is still writing (busy bit);
    ``steps`` leaves out those it discarded."""
    events = [datapath.EVENT.pack(1, 6, 1, 1, bytes((0, 0, 0, n)), bytes(4), bytes(4), 68, 0,
                                  1, 7, 0, bytes(4), bytes(32), -1, bytes(16), 0)
              for n in range(5)]
    flags = [0, 0x40, 0, 0x80, 0]  # committed, discarded, committed, busy, committed
    records = b"".join(struct.pack("<II", len(event) | flag << 24, 0) + event
                       for event, flag in zip(events, flags, strict=True))
    headers = memoryview(records)[3::kernel.RECORD_SIZE]
    assert kernel._committed(headers) == 3
    assert kernel._committed(headers[:3]) == 3 and kernel._committed(headers[:0]) == 0
    committed = records[:3 * kernel.RECORD_SIZE]
    assert [step[3][3] for step in kernel.steps(committed)] == [0, 2]
    assert kernel.steps(b"") == []
