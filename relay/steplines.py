"""The kernel datapath's step lines, rendered from its events straight to JSON bytes.

At info the daemon writes a line per step the program relayed (``RelayService._kernel_step``),
some 10,000 a second at 2,500 DORA/s. Built as a dict and rendered by orjson, such a line costs
the daemon about 48k instructions; most of it is Python building fields that, for a relay,
barely change (the interface, the helpers, the type). Rendered here with one bytes format per
line and per-batch caches of the encoded values (interfaces, helpers, addresses) and one
timestamp per batch (its lines are written at one moment): some 15k. Hand-written, so a
property test (tests/unit/test_relay_service_shell.py) requires the bytes ``LineBatch`` renders
from the dict the daemon builds for the same events: same keys, order, values and escaping.
"""

from __future__ import annotations

import binascii
import socket
from collections.abc import Callable

import orjson

from .actions import DeliveryMode, type_name
from .classes import DEFAULT_CLASS
from .datapath import EVENT
from .wire.message import message_type_of

#: A DHCP message type's name in a step line, by option 53's value (0: none, plain BOOTP), as
#: ``Outcome.message_type`` names it.
STEP_TYPES = ("BOOTP", *(type_name(message_type_of(bytes((kind,)))) for kind in range(1, 256)))
#: Each of STEP_TYPES as JSON.
TYPES_JSON = tuple(orjson.dumps(name) for name in STEP_TYPES)
_MODES = (DeliveryMode.BROADCAST.value.encode(), DeliveryMode.UNICAST_CHADDR.value.encode())
_CLASS = orjson.dumps(DEFAULT_CLASS)
_COMMON = (b'{"xid":"0x%s","chaddr":"%s","iface":%s,"giaddr":"%s","hops":%d,"type":%s,'
           b'"source":"%s:%d",')
_FORWARDED = (_COMMON + b'"servers":%s,"forwarding_class":' + _CLASS
              + b',"event":"relay.request.forwarded","level":"info","timestamp":"%s"}\n')
_DELIVERED = (_COMMON + b'"mode":"%s","destination":"%s","ifname":%s,"latency_ms":%s,'
              b'"event":"relay.reply.delivered","level":"info","timestamp":"%s"}\n')


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
        self._ifnames: dict[int, bytes] = {}
        self._servers: dict[bytes, bytes] = {}
        #: For ``render`` alone (a batch's: the user path's StepLines lives long, and a client
        #: picks the giaddr and source it sends).
        self._addresses: dict[bytes, bytes] = {}
        self._stamped: bytes | None = None

    def _address(self, packed: bytes) -> bytes:
        text = self._addresses.get(packed)
        if text is None:
            text = self._addresses[packed] = socket.inet_ntoa(packed).encode()
        return text

    def render(self, data: bytes) -> bytes:
        """The line of a relayed request (op 1) or reply (op 2) event."""
        (op, hlen, hops, kind, xid, giaddr, source, source_port, mode, helpers, ifindex,
         delivery, destination, servers, latency, chaddr, _) = EVENT.unpack(data)
        address = self._address
        common = (binascii.hexlify(xid), binascii.hexlify(chaddr[:hlen], b":"),
                  self.iface(ifindex), address(giaddr), hops, TYPES_JSON[kind], address(source),
                  source_port)
        stamp = self._stamped
        if stamp is None:
            stamp = self._stamped = self._stamp().encode()
        if op == 1:
            addresses = servers[:4 * helpers]
            listed = self._servers.get(addresses)
            if listed is None:
                listed = self._servers[addresses] = orjson.dumps(
                    [socket.inet_ntoa(addresses[i:i + 4]) for i in range(0, len(addresses), 4)])
            return self.forwarded(common, listed, stamp)
        name = self._ifnames.get(delivery)
        if name is None:
            name = self._ifnames[delivery] = orjson.dumps(self._ifname(delivery))
        took = b"null" if latency < 0 else orjson.dumps(round(latency / 1e6, 3))
        return self.delivered(common, _MODES[mode], address(destination), name, took, stamp)

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
