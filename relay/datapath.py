"""What the kernel datapath (``relay/bpf/relay.bpf.c``) is told: its map entries, from the engine.

The program does a subset of what ``RelayEngine`` does and passes everything else up to the
daemon. Every value here comes from the engine's own functions (giaddr, option 82, circuit-id,
which servers and sides count), so the two cannot disagree about them. An interface whose
configuration asks for what the program does not implement (RFC 3527 link selection, RFC 5107
server identifier override, the RFC 8357 relay port, values too long for its fixed fields) is
left out of the subset: its packets go up. Pure: the daemon writes these into the maps.

Per-MAC rate limits (``relay/throttle.py``) are kept in the program as GCRA over its
``buckets`` map, the same token bucket: a request is admitted while the client's theoretical
arrival time (TAT) is at most ``(burst - 1) / rate`` ahead of now, and moves it ``1 / rate`` on;
the bucket is full again when TAT <= now. Each path keeps its own buckets: a request the
program passes up took no kernel token, the engine's bucket counts it.
"""

from __future__ import annotations

import dataclasses
import struct
import zlib
from collections import Counter
from ipaddress import IPv4Address
from typing import Any

from .actions import DeliveryMode
from .config import GiaddrMode
from .counters import RelayCounters
from .drops import DropReason
from .engine import RFC1542_MAX_HOPS, RelayEngine, _circuit_of
from .interfaces import Interface, Role

#: The program's limits (MAX_HELPERS, MAX_AGENT, MAX_CIRCUIT, MAX_CONNECTED in relay.bpf.c).
MAX_HELPERS = 8
MAX_AGENT = 64
MAX_CIRCUIT = 32
MAX_CONNECTED = 4
#: MAX_CLIENTS in relay.bpf.c: the clients the program keeps buckets for. A configured
#: table_size above it keeps requests in the engine (the kernel would forget clients sooner).
MAX_CLIENTS = 16384

#: struct iface, struct settings, struct server of relay.bpf.c (little-endian host, x86-64).
IFACE = struct.Struct("<I4s4s6sBBI32s64s32s")
SETTINGS = struct.Struct("<IIIHH4sI12QIIQQ")
#: struct event of relay.bpf.c: one relayed packet, for the daemon's per-step log line (op 1
#: request, 2 reply), or a client's throttling started (3) or stopped (4, with ``dropped``).
EVENT = struct.Struct("<BBBB4s4s4sHBBII4s32sq16sQ")
#: An event's fields, as ``EVENT`` unpacks them (op first).
Event = tuple[Any, ...]
#: The same event as its step line is rendered from it (``kernel.steps``, ``StepLines``): op,
#: hlen, hops and type, xid, the flow (giaddr, source and its port, mode, helpers, ingress and
#: delivery interfaces: what a relay's lines mostly share), destination, servers, latency,
#: chaddr. Fewer objects an event, and the flow one key.
STEP = struct.Struct("<BB2s4s20s4s32sq16s8x")
Step = tuple[Any, ...]


def event_of(step: Step) -> Event:
    """A step's event, field by field (the rare path: a throttled client, a lean log's miss)."""
    return EVENT.unpack(STEP.pack(*step))
EVENT_FORWARDED = 1
EVENT_DELIVERED = 2
EVENT_THROTTLE_STARTED = 3
EVENT_THROTTLE_STOPPED = 4
#: struct client and struct allowance of relay.bpf.c: a key and a value of ``buckets``.
CLIENT = struct.Struct("<IIB16s3x")
ALLOWANCE = struct.Struct("<QQ")
#: LATENCY_BOUNDS in relay.bpf.c: the most reply latency buckets the program counts into.
LATENCY_BOUNDS = 12
SERVER = struct.Struct("<II4I")
#: struct peer of relay.bpf.c: a value of ``peers`` (one per CPU).
PEER = struct.Struct(f"<3Q{LATENCY_BOUNDS + 1}QQ")
U32 = struct.Struct("<I")

IF_CLIENTS = 1
IF_UP = 2
IF_TRUSTED = 4
IF_DOWNSTREAM = 8
IF_ADDS_AGENT = 16
IF_ADDS_CIRCUIT = 32
IF_REQUESTS = 64
IF_REPLIES = 128

SERVER_OURS = 1
SERVER_CONNECTED = 2
SERVER_ROUTED = 3

#: The program's counters array (the enum in relay.bpf.c), in order.
COUNTERS = ("received", "requests", "replies", "agent_info_added", "agent_info_omitted_oversize",
            "delivered_broadcast", "delivered_chaddr", "redirect_errors", "rate_limited_mac",
            "throttled_mac", "events_lost", "passed_up")
#: Why a DHCP datagram went up (UP_* in relay.bpf.c), in order; counted after COUNTERS.
PASSED_UP_REASONS = ("disabled", "headers", "checksum", "message", "interface", "checks",
                     "agent", "route", "reply", "contended")


@dataclasses.dataclass(frozen=True)
class Tables:
    """The map entries: keys and values as the program reads them."""

    settings: bytes
    ifaces: dict[bytes, bytes]
    addresses: dict[bytes, bytes]
    servers: dict[bytes, bytes]


def tables(engine: RelayEngine, port: int, latency_bounds: tuple[float, ...] = (),
           events: bool = False, enabled: bool = True) -> Tables:
    """The maps' contents for the engine's configuration and interfaces, the relay on ``port``;
    ``latency_bounds``: the reply latency histogram's bucket bounds (seconds); ``events``: an
    event per relayed packet (the daemon logs each step)."""
    config, interfaces = engine.config, engine.interfaces
    reply_giaddr = config.reply_giaddr.packed if config.reply_giaddr is not None else bytes(4)
    bounds = [round(bound * 1e9) for bound in latency_bounds[:LATENCY_BOUNDS]]
    mac = config.rate_limits.mac
    interval = tolerance = 0
    if mac.enabled:
        interval = round(1e9 / mac.rate)
        tolerance = round((mac.burst - 1) * 1e9 / mac.rate)
    settings = SETTINGS.pack(int(enabled), min(config.max_hops, RFC1542_MAX_HOPS + 1),
                             config.max_packet_size, port, port + 1, reply_giaddr, len(bounds),
                             *bounds, *[0] * (LATENCY_BOUNDS - len(bounds)), int(events),
                             mac_limit(engine), interval, tolerance)
    ifaces = {U32.pack(interface.index): _iface(engine, interface) for interface in interfaces}
    addresses = {}
    for interface in interfaces:
        for address in interface.addresses:
            owner = interfaces.by_address(address.ip)
            if owner is not None:
                addresses[address.ip.packed] = U32.pack(owner.index)
    servers = {}
    for server in config.all_servers:
        entry = _server(engine, server)
        if entry is not None:
            servers[server.packed] = entry
    return Tables(settings, ifaces, addresses, servers)


def mac_limit(engine: RelayEngine) -> int:
    """The program's name for the per-MAC limit (0: none): a changed limit (or table size)
    names new buckets, so every client starts afresh, as the engine's reload does."""
    limits = engine.config.rate_limits
    if not limits.mac.enabled:
        return 0
    return zlib.crc32(repr((limits.mac, limits.table_size)).encode()) or 1


def _iface(engine: RelayEngine, interface: Interface) -> bytes:
    config = engine.config
    settings = config.interface(interface.name)
    flags = IF_UP if interface.up else 0
    if settings is None:
        return IFACE.pack(flags, bytes(4), bytes(4), bytes(6), 0, 0, 0, b"", b"", b"")
    if settings.role.faces_clients:
        flags |= IF_CLIENTS
    if settings.role is Role.DOWNSTREAM:
        flags |= IF_DOWNSTREAM
    if settings.trusted:
        flags |= IF_TRUSTED
    helpers = config.helpers_for(settings)
    source = engine._link_address(interface, settings)
    giaddr = None if source is None else engine._giaddr_for(source, settings)
    agent = b""
    circuit = b""
    # Smart giaddr (retries move to a secondary) and one copy per address stay in the engine,
    # as do RFC 6607 VSS interfaces (a reply's VSS must be checked against ours).
    one_giaddr = settings.giaddr is not None or settings.giaddr_mode is GiaddrMode.PRIMARY
    in_subset = (settings.link_selection is None and not settings.server_id_override
                 and config.relay_port is None and len(interface.mac) == 6 and one_giaddr
                 and source is not None and settings.vss is None)
    if engine._adds_agent_info(settings) and source is not None:
        flags |= IF_ADDS_AGENT
        agent = engine._agent_info(interface, settings, False, source) or b""
        in_subset = in_subset and 0 < len(agent) <= MAX_AGENT
    if engine._adds_circuit(settings):
        flags |= IF_ADDS_CIRCUIT
        circuit = _circuit_of(interface, settings)
        in_subset = in_subset and len(circuit) <= MAX_CIRCUIT
    # A forwarding class that may take this interface's requests picks their helpers per
    # client (relay/classes.py): those requests stay in the engine.
    classified = engine.may_classify(interface.name)
    # The per-MAC limit is the program's too (its buckets map), within its table; a per-circuit
    # one (option 82's circuit-id of a downstream agent) stays the engine's.
    limits = config.rate_limits
    limited = limits.circuit.enabled or (limits.mac.enabled and limits.table_size > MAX_CLIENTS)
    if in_subset and not classified and not limited and 0 < len(helpers) <= MAX_HELPERS:
        flags |= IF_REQUESTS
    # Replies too: the PXE diagnosis per class (relay/bootwatch.py) learns from them.
    if in_subset and not classified:
        flags |= IF_REPLIES
    return IFACE.pack(
        flags,
        giaddr.packed if giaddr is not None else bytes(4),
        source.packed if source is not None else bytes(4),
        interface.mac if len(interface.mac) == 6 else bytes(6),
        len(agent), len(circuit), len(helpers) if len(helpers) <= MAX_HELPERS else 0,
        b"".join(h.packed for h in helpers[:MAX_HELPERS]), agent, circuit)


def _server(engine: RelayEngine, server: IPv4Address) -> bytes | None:
    """How a reply from ``server`` must arrive (engine._wrong_side), or None to leave it up."""
    interfaces = engine.interfaces
    if interfaces.by_address(server) is not None:
        return SERVER.pack(SERVER_OURS, 0, 0, 0, 0, 0)
    connected = sorted(interfaces.connected(server))
    if not connected:
        return SERVER.pack(SERVER_ROUTED, 0, 0, 0, 0, 0)
    if len(connected) > MAX_CONNECTED:
        return None
    padded = connected + [0] * (MAX_CONNECTED - len(connected))
    return SERVER.pack(SERVER_CONNECTED, len(connected), *padded)


@dataclasses.dataclass(frozen=True)
class KernelCounts:
    """The program's per-CPU counters, summed over CPUs."""

    counters: dict[str, int]
    passed_up: dict[str, int]
    received_on: dict[int, int]
    forwarded: dict[IPv4Address, int]

    def as_relay_counters(self, port: int) -> RelayCounters:
        """The engine's counters for what the kernel relayed (the daemon adds them to its own)."""
        counters = self.counters
        relay = RelayCounters(
            received=counters["received"], requests=counters["requests"],
            replies=counters["replies"], agent_info_added=counters["agent_info_added"],
            agent_info_omitted_oversize=counters["agent_info_omitted_oversize"])
        if counters["rate_limited_mac"]:
            relay.dropped[DropReason.RATE_LIMITED_MAC] = counters["rate_limited_mac"]
        if counters["throttled_mac"]:
            relay.throttled_clients["mac"] = counters["throttled_mac"]
        relay.received_on = Counter(self.received_on)
        relay.forwarded = Counter(self.forwarded)
        if counters["replies"]:
            relay.replies_on_port[port] = counters["replies"]
        for mode, key in ((DeliveryMode.BROADCAST, "delivered_broadcast"),
                          (DeliveryMode.UNICAST_CHADDR, "delivered_chaddr")):
            if counters[key]:
                relay.delivered[mode] = counters[key]
        return relay


@dataclasses.dataclass(frozen=True)
class KernelPeer:
    """One helper's or server's entry of the program's ``peers`` map, summed over CPUs."""

    forwarded: int
    untracked: int
    answered: int
    #: The latency of the replies that answered: counts per histogram bucket, and their sum (ns).
    latency: tuple[int, ...]
    latency_sum: int

    @classmethod
    def summed(cls, per_cpu: list[bytes]) -> KernelPeer:
        fields = [sum(column) for column in zip(*map(PEER.unpack, per_cpu), strict=True)]
        return cls(fields[0], fields[1], fields[2], tuple(fields[3:-1]), fields[-1])


@dataclasses.dataclass(frozen=True)
class KernelClient:
    """One entry of the program's ``buckets`` map."""

    ifindex: int
    hardware_address: bytes
    limit: int
    #: Theoretical arrival time (CLOCK_MONOTONIC ns): the bucket is full when it is <= now.
    tat: int
    #: Requests dropped since its throttling started; 0: not throttled.
    dropped: int

    @classmethod
    def decode(cls, key: bytes, value: bytes) -> KernelClient:
        ifindex, limit, hlen, chaddr = CLIENT.unpack(key)
        tat, dropped = ALLOWANCE.unpack(value)
        return cls(ifindex, chaddr[:hlen], limit, tat, dropped)
