"""The relay's fast path (sans-IO): ``RelayEngine.handle``'s common cases, on the received bytes.

Most datagrams a relay sees are alike: a client's request on a client-facing interface, relayed
with hops + 1, giaddr and our option 82 to the interface's helpers; a helper's reply to one of
our giaddrs, delivered with that option 82 removed. For those the engine's work is a few checks
and a byte patch, but decoding the message into a ``DhcpMessage`` and building its actions cost
more than the checks. ``FastPath`` does the same on the bytes (``wire.frame.option_offsets``,
``patched``, ``cut``: the encodings ``Frame`` produces), with the per-interface decisions taken
once by the engine's own functions and kept until the configuration or the interfaces change.

It is a subset, like the kernel datapath (``relay/datapath.py``): whatever it does not handle
exactly as the engine would (a drop, option 82 from a client, PXE clients (the boot
diagnosis), forwarding classes, smart or all giaddr modes, server identifier override, a
circuit rate limit, a reply to ciaddr, a malformed or unusual message) returns None before any
state changed, and the engine takes it. The engine stays the specification: a property test
(tests/unit/test_relay_fastpath.py) requires the same bytes, counters and state either way.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any

from .actions import DeliveryMode, Forward, Outcome, type_name
from .classes import DEFAULT_CLASS
from .config import GiaddrMode, InterfaceConfig
from .engine import BROADCAST_MAC, LIMITED_BROADCAST, RFC1542_MAX_HOPS, RelayEngine, _circuit_of
from .interfaces import Interface
from .wire import Datagram, Frame, address_of
from .wire.codes import BOOTP_MIN_SIZE, BROADCAST_FLAG, Opt
from .wire.frame import cut, option_offsets, patched
from .wire.message import message_type_of
from .wire.options import encode_tlv
from .wire.pxe import PXE_CLIENT_PREFIX

_AGENT = Opt.RELAY_AGENT_INFO.value
_VENDOR_CLASS = Opt.VENDOR_CLASS_ID.value
_MESSAGE_TYPE = Opt.MESSAGE_TYPE.value
_NAK = 6
_ZERO = bytes(4)
_PXE = len(PXE_CLIENT_PREFIX)

#: Not yet decided (a plan of None: not in the subset).
_UNKNOWN: Any = object()
#: A request relayed: its xid, the message as relayed, the helpers it goes to.
Relayed = tuple[int, bytes, tuple[IPv4Address, ...]]
#: A reply to deliver: its xid, then ``Sender.send_frame``'s arguments (ifname, mac, source,
#: destination, message) and the delivery mode (counted, logged).
Delivered = tuple[int, str, bytes, IPv4Address, IPv4Address, bytes, DeliveryMode]


class _Ingress:
    """What the engine decides for every request on one interface (None: not in the subset)."""

    __slots__ = ("agent", "giaddr", "helpers", "hop_limit", "interface", "max_size", "settings")

    def __init__(self, engine: RelayEngine, interface: Interface,
                 settings: InterfaceConfig) -> None:
        self.interface = interface
        self.settings = settings
        #: The memoized addresses (``address_of``): hashed once, and hashed per helper per
        #: request (its counter, its reply tracking).
        self.helpers = tuple(address_of(helper.packed)
                             for helper in engine.config.helpers_for(settings))
        self.hop_limit = min(engine.config.max_hops, RFC1542_MAX_HOPS + 1)
        self.max_size = engine.config.max_packet_size
        link = engine._link_address(interface, settings)
        giaddr = None if link is None else engine._giaddr_for(link, settings)
        #: giaddr for a first-hop request, packed (None: the engine drops it).
        self.giaddr = None if giaddr is None else giaddr.packed
        #: Our option 82 as TLVs (b"": none added here).
        self.agent = b""
        if link is not None and engine._adds_agent_info(settings):
            self.agent = encode_tlv(_AGENT, engine._agent_info(interface, settings, False, link))


class _Delivery:
    """What the engine decides for replies from one server, on one ingress, to one giaddr."""

    __slots__ = ("circuit", "interface", "source", "strips")

    def __init__(self, engine: RelayEngine, interface: Interface,
                 settings: InterfaceConfig, giaddr: IPv4Address) -> None:
        self.interface = interface
        #: The circuit-id an echoed one must be (None: any; this relay adds none here).
        self.circuit = (_circuit_of(interface, settings) if engine._adds_circuit(settings)
                        else None)
        self.strips = engine._adds_agent_info(settings)
        self.source = giaddr


class FastPath:
    """The engine's common cases; ``request`` and ``reply`` return None for the rest."""

    def __init__(self, engine: RelayEngine) -> None:
        self.engine = engine
        self._generation = -1
        self._ingress: dict[int, _Ingress | None] = {}
        self._deliveries: dict[tuple[int, bytes, int], tuple[IPv4Address, _Delivery | None]] = {}
        #: The last source address found not ours, and the last server found configured: the
        #: shell's addresses are memoized (``wire.address_of``), so identity mostly answers and
        #: ``IPv4Address`` hashes in Python.
        self._foreign: IPv4Address | None = None
        self._server: IPv4Address | None = None
        #: The last datagram's ``option_offsets``: its step line's message type.
        self.scanned: tuple[int, dict[int, int]] | None = None

    def handle(self, datagram: Datagram, now: float) -> Relayed | Delivered | Outcome | None:
        """A request relayed, a reply to deliver, an Outcome (a rate-limited request, or a
        throttling change to tell), or None: the engine's to handle."""
        data = datagram.payload
        scanned = self.scanned = option_offsets(data)
        if scanned is None:
            return None
        if self.engine.generation != self._generation:
            # Decisions taken for another configuration or interface table are forgotten.
            self._generation = self.engine.generation
            self._ingress = {}
            self._deliveries = {}
            self._foreign = self._server = None
        if data[0] == 1:
            return self._request(datagram, data, scanned, now)
        if data[0] == 2:
            return self._reply(datagram, data, scanned)
        return None

    # -- client to server ----------------------------------------------------------------------
    def _plan(self, ifindex: int) -> _Ingress | None:
        engine = self.engine
        plan = None
        interface = engine.interfaces.by_index(ifindex)
        settings = None if interface is None else engine._settings(interface.name)
        config = engine.config
        if (interface is not None and settings is not None and settings.role.faces_clients
                and interface.up and not engine.may_classify(interface.name)
                and not config.rate_limits.circuit.enabled
                and (settings.giaddr is not None or settings.giaddr_mode is GiaddrMode.PRIMARY)
                and not settings.server_id_override and config.helpers_for(settings)):
            plan = _Ingress(engine, interface, settings)
            if len(plan.agent) > 257:  # split over several TLVs: the encoder's
                plan = None
        if len(self._ingress) >= 4096:  # bounded: indexes come from netlink
            self._ingress.clear()
        self._ingress[ifindex] = plan
        return plan

    def _request(self, datagram: Datagram, data: bytes, scanned: tuple[int, dict[int, int]],
                 now: float) -> Relayed | Outcome | None:
        end, offsets = scanned
        plan = self._ingress.get(datagram.ifindex, _UNKNOWN)
        if plan is _UNKNOWN:
            plan = self._plan(datagram.ifindex)
        if plan is None:
            return None
        engine = self.engine
        hops = data[3]
        if hops >= plan.hop_limit or (_VENDOR_CLASS in offsets
                                      and _is_pxe(data, offsets[_VENDOR_CLASS])):
            return None
        source = datagram.source
        if source is not self._foreign:
            if engine.interfaces.by_address(source) is not None:
                return None
            self._foreign = source
        giaddr = data[24:28]
        agent = b""
        if giaddr == _ZERO:
            # A client's own option 82 goes by the configured policy: the engine's.
            if _AGENT in offsets or plan.giaddr is None:
                return None
            giaddr, agent = plan.giaddr, plan.agent
        elif engine.interfaces.by_address(address_of(giaddr)) is not None:
            return None
        # RFC 3046 §2.1: what would exceed the maximum size goes WITHOUT option 82.
        oversize = end + 1 + len(agent) > plan.max_size
        # Rate limiting last: past it the request is ours to the end (its token is taken).
        counters = engine.counters
        counters.received += 1
        counters.received_on[datagram.ifindex] += 1
        counters.requests += 1
        admitted = True
        macs = engine._macs
        if macs is not None:
            admitted = macs.admit((datagram.ifindex, data[28:28 + data[2]]), now)
            if not admitted:
                msg = Frame(data).message
                drop = engine._mac_drop(msg, plan.interface)
                return engine._with_throttles(engine._drop_request(msg, drop.reason,
                                                                   drop.detail))
        if agent:
            if oversize:
                counters.agent_info_omitted_oversize += 1
                agent = b""
            else:
                counters.agent_info_added += 1
        hops += 1
        payload = patched(data, end, hops, giaddr, agent)
        forwarded = counters.forwarded
        helpers = plan.helpers
        for server in helpers:
            forwarded[server] += 1
        counters.relayed_by_class[DEFAULT_CLASS] += 1
        if engine._throttle_changes:  # a client's throttling stopped: told with the forwards
            return engine._with_throttles(Outcome(
                tuple(Forward(server, payload) for server in helpers), Frame(data).message,
                hops, address_of(giaddr), DEFAULT_CLASS))
        return int.from_bytes(data[4:8], "big"), payload, helpers

    # -- server to client ----------------------------------------------------------------------
    def _delivery(self, datagram: Datagram, giaddr: bytes) -> _Delivery | None:
        source = datagram.source
        key = datagram.ifindex, giaddr, id(source)  # see _foreign
        cached = self._deliveries.get(key)
        if cached is not None and cached[0] is source:
            return cached[1]
        engine = self.engine
        plan = None
        address = IPv4Address(giaddr)
        interface = engine.interfaces.by_address(address)
        settings = None if interface is None else engine._settings(interface.name)
        if (interface is not None and settings is not None and settings.role.faces_clients
                and settings.vss is None and settings.giaddr_mode is not GiaddrMode.SMART
                and interface.up and engine._wrong_side(datagram, interface) is None):
            plan = _Delivery(engine, interface, settings, address)
        if len(self._deliveries) >= 4096:  # bounded: giaddrs come from servers
            self._deliveries.clear()
        self._deliveries[key] = source, plan
        return plan

    def _reply(self, datagram: Datagram, data: bytes,
               scanned: tuple[int, dict[int, int]]) -> Delivered | None:
        end, offsets = scanned
        engine = self.engine
        source = datagram.source
        if source is not self._server:
            if source not in engine._servers:
                return None  # the rogue server check: the engine's
            self._server = source
        plan = self._delivery(datagram, data[24:28])
        if plan is None:
            return None
        xid = int.from_bytes(data[4:8], "big")
        yiaddr = data[16:20]
        if engine._boots.watching(xid) or (
                yiaddr != _ZERO and _VENDOR_CLASS in offsets
                and _is_pxe(data, offsets[_VENDOR_CLASS])):
            return None  # the PXE diagnoses: the engine's
        start = offsets.get(_AGENT)
        if start is not None:
            fields = engine._agent_fields(data[start + 2:start + 2 + data[start + 1]])
            if isinstance(fields, tuple):
                circuit, link = fields[0], fields[1]
                if link is not None or (circuit is not None and plan.circuit is not None
                                        and circuit != plan.circuit):
                    return None
            else:
                return None
        # RFC 2131 §4.1 and §4.3.2 (engine._delivery): NAK or the broadcast bit: broadcast.
        kind = offsets.get(_MESSAGE_TYPE)
        if ((kind is not None and data[kind + 1] == 1 and data[kind + 2] == _NAK)
                or data[10] << 8 & BROADCAST_FLAG):
            mode, destination, mac = DeliveryMode.BROADCAST, LIMITED_BROADCAST, BROADCAST_MAC
        elif data[12:16] != _ZERO:
            return None  # unicast to ciaddr: the engine checks it is on the link
        elif yiaddr == _ZERO or data[1] != 1 or data[2] != 6:
            mode, destination, mac = DeliveryMode.BROADCAST, LIMITED_BROADCAST, BROADCAST_MAC
        else:
            mode, destination, mac = (DeliveryMode.UNICAST_CHADDR, IPv4Address(yiaddr),
                                      data[28:34])
        payload = (cut(data, start, end) if plan.strips and start is not None
                   else data.ljust(BOOTP_MIN_SIZE, b"\0"))
        reply_giaddr = engine.config.reply_giaddr
        if reply_giaddr is not None:
            payload = payload[:24] + reply_giaddr.packed + payload[28:]
        counters = engine.counters
        counters.received += 1
        counters.received_on[datagram.ifindex] += 1
        counters.replies += 1
        counters.replies_on_port[datagram.port] += 1
        counters.delivered[mode] += 1
        interface = plan.interface
        return xid, interface.name, mac, plan.source, destination, payload, mode


def _is_pxe(data: bytes, start: int) -> bool:
    """Whether option 60 at ``start`` starts with "PXEClient" (``wire.pxe.is_pxe_client``)."""
    return data[start + 1] >= _PXE and data[start + 2:start + 2 + _PXE] == PXE_CLIENT_PREFIX



def message_type(data: bytes, offsets: dict[int, int]) -> str:
    """The message type's name in the step lines (``Outcome.message_type``), from the bytes."""
    at = offsets.get(_MESSAGE_TYPE)
    return type_name(None if at is None else message_type_of(data[at + 2:at + 2 + data[at + 1]]))
