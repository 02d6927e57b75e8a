"""The kernel datapath's step lines, rendered from its events straight to JSON bytes.

At info the daemon writes a line per step the program relayed (``RelayService._kernel_events``),
some 10,000 a second at 2,500 DORA/s. Built as a dict and rendered by orjson, such a line costs
the daemon about 48k instructions; most of it is Python building fields that, for a relay,
barely change (the interface, the helpers, the type). Rendered here as bytes: what a batch's
lines of one flow share (all but the xid, chaddr, a reply's destination and latency) once per
batch (``pieces``), then a line a format of those few (``render``): some 15k a line. The daemon
has relay/native/steplines.c put those few around the pieces (``kernel.NativeStepLines``: 838 a
line) and renders here only what it leaves. Hand-written, so property tests require the bytes
``LineBatch`` renders from the dict the daemon builds for the same events (same keys, order,
values and escaping: tests/unit/test_relay_service_shell.py), and the C side's bytes to be these
(tests/unit/test_relay_native_steplines.py)."""

from __future__ import annotations

import socket
from binascii import hexlify
from collections.abc import Callable

import orjson

from .actions import DeliveryMode, type_name
from .classes import DEFAULT_CLASS
from .datapath import EVENT_FORWARDED, Step, event_of
from .wire.message import message_type_of

#: A DHCP message type's name in a step line, by option 53's value (0: none, plain BOOTP), as
#: ``Outcome.message_type`` names it.
STEP_TYPES = ("BOOTP", *(type_name(message_type_of(bytes((kind,)))) for kind in range(1, 256)))
#: Each of STEP_TYPES as JSON.
TYPES_JSON = tuple(orjson.dumps(name) for name in STEP_TYPES)
_MODES = (DeliveryMode.BROADCAST.value.encode(), DeliveryMode.UNICAST_CHADDR.value.encode())
_CLASS = orjson.dumps(DEFAULT_CLASS)
_HEAD = b'{"xid":"0x%s","chaddr":"%s",'
_FLOW = b'"iface":%s,"giaddr":"%s","hops":%d,"type":%s,"source":"%s:%d",'
_REQUEST = (b'"servers":%s,"forwarding_class":' + _CLASS
            + b',"event":"relay.request.forwarded","level":"info","timestamp":"%s"}\n')
_MODE = b'"mode":"%s",'
_DESTINATION = b'"destination":"%s",'
_IFNAME = b'"ifname":%s,"latency_ms":'
_REPLY = b',"event":"relay.reply.delivered","level":"info","timestamp":"%s"}\n'
_FORWARDED = _HEAD + _FLOW + _REQUEST
_DELIVERED = _HEAD + _FLOW + _MODE + _DESTINATION + _IFNAME + b"%s" + _REPLY
#: The same lines with what a batch's steps of one flow share rendered once (``render``).
_FORWARDED_STEP = _HEAD + b"%s"
_DELIVERED_STEP = _HEAD + b"%s" + _DESTINATION + b"%s%s%s"


#: The fields every step line starts with, encoded: xid (hex), chaddr, iface (JSON), giaddr,
#: hops, type (JSON), source address and port.
Common = tuple[bytes, bytes, bytes, bytes, int, bytes, bytes, int]


class StepLines:
    """Renders events for one batch: ``iface`` names an ingress interface as the step lines do
    (its name, or its index when gone), ``ifname`` a delivery's (its name, or ``#index``),
    ``stamp`` is the timestamp's text (read at the batch's first line). The user path's fast
    path writes its lines with the same templates (``forwarded``, ``delivered``, each with its
    own timestamp; ``RelayService._line_fast``)."""

    def __init__(self, iface: Callable[[int], str | int], ifname: Callable[[int], str],
                 stamp: Callable[[], str]) -> None:
        self._iface, self._ifname, self._stamp = iface, ifname, stamp
        self._ifaces: dict[int, bytes] = {}
        #: For ``render`` alone (a batch's: the user path's StepLines lives long, a client
        #: picks the giaddr and source it sends, and the timestamp is the batch's): by flow,
        #: what follows a request's chaddr, the pieces of a reply's line around its destination
        #: and latency; addresses as text.
        self._requests: dict[bytes, bytes] = {}
        self._replies: dict[bytes, tuple[bytes, bytes, bytes]] = {}
        self._addresses: dict[bytes, bytes] = {}
        self._stamped: bytes | None = None

    def render(self, step: Step) -> bytes:
        """The line of a relayed request (op 1) or reply (op 2): its xid, chaddr (and a
        reply's destination and latency) around what its flow's lines share (``pieces``)."""
        op, hlen, _, xid, _, destination, _, latency, chaddr = step
        pieces = self.pieces(step)
        if op == EVENT_FORWARDED:
            return _FORWARDED_STEP % (hexlify(xid), hexlify(chaddr[:hlen], b":"), pieces[0])
        before, between, after = pieces
        return _DELIVERED_STEP % (
            hexlify(xid), hexlify(chaddr[:hlen], b":"), before,
            self._addresses.get(destination) or self._address(destination), between,
            b"null" if latency < 0 else orjson.dumps(round(latency / 1e6, 3)), after)

    def pieces(self, step: Step) -> tuple[bytes, ...]:
        """What the lines of a step's flow share, rendered at the flow's first: a request's
        line after its chaddr; a reply's before its destination, between that and its latency,
        and after (relay/native/steplines.c puts the same around its own fields)."""
        op, _, hops_kind, _, flow, _, servers, _, _ = step
        if op == EVENT_FORWARDED:
            key = flow + hops_kind + servers
            return (self._requests.get(key) or self._request(key, step),)
        key = flow + hops_kind
        return self._replies.get(key) or self._reply(key, step)

    def _request(self, key: bytes, step: Step) -> bytes:
        (_, _, hops, kind, _, giaddr, source, source_port, _, helpers, ifindex, _, _, servers,
         _, _, _) = event_of(step)
        addresses = servers[:4 * helpers]
        listed = orjson.dumps([socket.inet_ntoa(addresses[i:i + 4])
                               for i in range(0, len(addresses), 4)])
        rest = self._requests[key] = (
            _FLOW % (self.iface(ifindex), self._address(giaddr), hops, TYPES_JSON[kind],
                     self._address(source), source_port)
            + _REQUEST % (listed, self._now()))
        return rest

    def _reply(self, key: bytes, step: Step) -> tuple[bytes, bytes, bytes]:
        (_, _, hops, kind, _, giaddr, source, source_port, mode, _, ifindex, delivery, _, _,
         _, _, _) = event_of(step)
        pieces = self._replies[key] = (
            _FLOW % (self.iface(ifindex), self._address(giaddr), hops, TYPES_JSON[kind],
                     self._address(source), source_port) + _MODE % _MODES[mode],
            _IFNAME % orjson.dumps(self._ifname(delivery)),
            _REPLY % self._now())
        return pieces

    def _address(self, packed: bytes) -> bytes:
        text = self._addresses.get(packed)
        if text is None:
            text = self._addresses[packed] = socket.inet_ntoa(packed).encode()
        return text

    def _now(self) -> bytes:
        if self._stamped is None:
            self._stamped = self._stamp().encode()
        return self._stamped

    def iface(self, ifindex: int) -> bytes:
        """An ingress interface as a line names it, JSON (cached)."""
        iface = self._ifaces.get(ifindex)
        if iface is None:
            iface = self._ifaces[ifindex] = orjson.dumps(self._iface(ifindex))
        return iface

    @staticmethod
    def forwarded(common: Common, servers: bytes, stamp: bytes) -> bytes:
        """``relay.request.forwarded``: the common fields, then the helpers (a JSON list) and
        the timestamp."""
        return _FORWARDED % (*common, servers, stamp)

    @staticmethod
    def delivered(common: Common, mode: bytes, destination: bytes, ifname: bytes,
                  latency: bytes, stamp: bytes) -> bytes:
        """``relay.reply.delivered``: the common fields, then the delivery's (``ifname`` and
        ``latency`` JSON, ``latency`` in milliseconds) and the timestamp."""
        return _DELIVERED % (*common, mode, destination, ifname, latency, stamp)
