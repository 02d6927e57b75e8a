"""Reply templates: the bytes ``encode`` gives for a reply, worked out once per subnet, kind and
server identifier, and completed per client.

Every reply of one kind on one subnet has the same siaddr, file and leading options (53, 54, the
lease times, the configured options); only the client's header fields (htype, hlen, xid, flags,
ciaddr, yiaddr, giaddr, chaddr) and its own options (a NAK's message, a reservation's hostname,
PXEClient, client identifier, relay agent information) differ. Building a ``DhcpMessage`` and
encoding it whole cost a third of the server's instructions per DORA; a template packs the
client's 44 header bytes and appends the client's options. ``encode`` stays the specification: a
template is cut from its output, a property test holds a filled template equal to it, and a
reply that would need file/sname overloaded is left to it (``fill`` returns None).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address

from boothop.relay.wire import ZERO, DhcpMessage, Op, Option, encode, encoded_size
from boothop.relay.wire.options import encode_tlv

#: The header up to chaddr (RFC 2131 §2, figure 1): op, htype, hlen, hops, xid, secs, flags,
#: ciaddr, yiaddr (packed from its int), siaddr, giaddr, chaddr.
_CLIENT_HEADER = struct.Struct("!BBBBIHH4sI4s4s16s")
_BOOTREPLY = int(Op.BOOTREPLY)
_END = b"\xff"
#: 0.0.0.0 packed (``bytes(4)`` is a call per reply).
_NO_ADDRESS = bytes(4)
#: RFC 951: a BOOTP message is at least 300 octets (``encode`` pads to it).
_MIN_SIZE = 300


@dataclass(frozen=True, slots=True)
class ReplyTemplate:
    #: siaddr, packed.
    siaddr: bytes
    #: sname, file, the magic cookie and the leading options: the bytes after chaddr.
    rest: bytes
    #: Octets up to the end of the leading options (the reply's size without client options
    #: and END).
    size: int
    #: ``rest``, END and the zeros up to 300 octets: the end of a reply without client options
    #: (most replies), which then costs one concatenation.
    closed: bytes

    @classmethod
    def of(cls, options: tuple[Option, ...], siaddr: IPv4Address, file: bytes) -> ReplyTemplate:
        prototype = DhcpMessage(op=Op.BOOTREPLY, xid=0, siaddr=siaddr, file=file,
                                options=options)
        size = encoded_size(prototype) - 1  # without END
        after_header = encode(prototype, max(size + 1, _MIN_SIZE))[_CLIENT_HEADER.size:]
        return cls(siaddr.packed, after_header[:size - _CLIENT_HEADER.size], size, after_header)

    def fill(self, msg: DhcpMessage, flags: int, ciaddr: IPv4Address, yiaddr: int,
             options: list[Option], capacity: int) -> bytes | None:
        """``encode`` of the reply to ``msg`` with the client's ``options`` after the template's,
        or None when it would not fit ``capacity`` octets without overloading file/sname.
        ``yiaddr`` as an int: the core has the address as its tables' key."""
        tail = b"".join([encode_tlv(code, value) for code, value in options]) if options else b""
        if self.size + len(tail) + 1 > capacity:
            return None
        header = _CLIENT_HEADER.pack(
            _BOOTREPLY, msg.htype, msg.hlen, 0, msg.xid, 0, flags,
            ciaddr.packed if ciaddr is not ZERO else _NO_ADDRESS, yiaddr, self.siaddr,
            msg.giaddr.packed, msg.chaddr)
        if not tail:  # no client options (each would be two octets at least)
            return header + self.closed
        return b"".join((header, self.rest, tail, _END)).ljust(_MIN_SIZE, b"\0")
