"""A decoded message kept with the bytes it came from, re-encoded cheaply after a relay's edits.

A relay changes little in a message: hops, giaddr, option 82. When the received bytes are what
``encode`` would produce for the decoded message, but perhaps for the zeros that pad it to 300 bytes
(the usual case: no pad options, no repeated or overloaded options, zeros after END), the edited
message's encoding is the received bytes with those few bytes patched. Otherwise, and whenever a
patch could differ from ``encode`` (capacity, overload), the full encoder runs. Either way the
result is ``encode`` of the edited message, byte for byte; the decoder has validated the whole
message first.
"""

from __future__ import annotations

from ipaddress import IPv4Address

from .codes import BOOTP_HEADER_SIZE, BOOTP_MIN_SIZE, MAGIC_COOKIE, Opt
from .message import DhcpMessage, _decode, encode, encoded_size
from .options import encode_tlv, tlv_size

_AGENT = Opt.RELAY_AGENT_INFO.value
_OPTIONS = BOOTP_HEADER_SIZE + len(MAGIC_COOKIE)
#: One octet per value: ``bytes((n,))`` builds a tuple and iterates it, per relayed request.
_OCTETS = tuple(bytes((value,)) for value in range(256))


class Frame:
    """``message`` decoded from ``data``; raises only WireError, as ``decode`` does."""

    __slots__ = ("_end", "data", "message")

    def __init__(self, data: bytes) -> None:
        self.data = bytes(data)
        self.message: DhcpMessage
        #: Offset of END when ``data.ljust(300, b"\0") == encode(message)``, else -1.
        self._end: int
        self.message, self._end = _decode(self.data)

    @property
    def exact(self) -> bool:
        """Whether ``data`` is ``encode(message)`` but perhaps for its padding to 300 bytes."""
        return self._end >= 0

    def size_with_agent_info(self, value: bytes) -> int:
        """``encoded_size`` of the message with option 82 set to ``value`` as its last option."""
        msg = self.message
        if self._end >= 0 and not msg.has(_AGENT):
            return self._end + 1 + tlv_size(len(value))
        return encoded_size(_with_agent_info(msg, value))

    def relayed(self, hops: int, giaddr: IPv4Address, agent_info: bytes | None,
                capacity: int) -> bytes:
        """``encode(message with hops, giaddr and option 82 = agent_info as its last option)``;
        ``agent_info`` None leaves the options as they are."""
        msg = self.message
        if self._end >= 0 and 0 <= hops <= 255 and (agent_info is None or not msg.has(_AGENT)):
            agent = b"" if agent_info is None else encode_tlv(_AGENT, agent_info)
            if self._end + 1 + len(agent) <= capacity:
                return patched(self.data, self._end, hops, giaddr.packed, agent)
        edited = msg.replace(hops=hops, giaddr=giaddr)
        if agent_info is not None:
            edited = _with_agent_info(edited, agent_info)
        return encode(edited, capacity)

    def encoded(self, capacity: int) -> bytes:
        """``encode(message, capacity)``."""
        if 0 <= self._end < capacity:
            return self.data.ljust(BOOTP_MIN_SIZE, b"\0")
        return encode(self.message, capacity)

    def without_option(self, code: int, capacity: int) -> bytes:
        """``encode(message.without_option(code), capacity)``."""
        msg = self.message
        if self._end >= 0:
            data = self.data
            if self._end + 1 <= capacity:
                position = _OPTIONS
                for option, value in msg.options:
                    if option == code:
                        return cut(data, position, self._end)
                    position += 2 + len(value)
                return data.ljust(BOOTP_MIN_SIZE, b"\0")
        return encode(msg.without_option(code), capacity)


def _with_agent_info(msg: DhcpMessage, value: bytes) -> DhcpMessage:
    return msg.without_option(_AGENT).with_option(_AGENT, value)


def option_offsets(data: bytes) -> tuple[int, dict[int, int]] | None:
    """Where END and each option's TLV start, for a message ``Frame`` finds exact (``data`` is
    ``encode`` of its decoding but for zeros padding it to 300 bytes): the relay's fast path
    (``relay.fastpath``) reads and patches such a message without decoding it. None for any
    other (too short, no magic cookie, hlen over 16, a pad before END, a repeated or overload
    option, malformed, bytes after END): ``Frame`` decides those. The op is the caller's."""
    size = len(data)
    if size <= _OPTIONS or data[2] > 16 or data[BOOTP_HEADER_SIZE:_OPTIONS] != MAGIC_COOKIE:
        return None
    offsets: dict[int, int] = {}
    position = _OPTIONS
    try:
        while True:
            code = data[position]
            if code == 255:  # Opt.END
                break
            if code == 0 or code == 52 or code in offsets:  # Opt.PAD, Opt.OVERLOAD, repeated
                return None
            offsets[code] = position
            position += 2 + data[position + 1]
    except IndexError:  # no END, or a TLV cut short
        return None
    rest = size - position - 1
    if rest and (size > BOOTP_MIN_SIZE or data.count(0, position + 1) != rest):
        return None
    return position, offsets


def patched(data: bytes, end: int, hops: int, giaddr: bytes, agent: bytes) -> bytes:
    """An exact message (END at ``end``) with ``hops``, ``giaddr`` (packed) and the TLVs
    ``agent`` (b"": none) added last, padded to 300 bytes: ``Frame.relayed``'s encoding."""
    return b"".join((data[:3], _OCTETS[hops], data[4:24], giaddr, data[28:end], agent,
                     b"\xff")).ljust(BOOTP_MIN_SIZE, b"\0")


def cut(data: bytes, start: int, end: int) -> bytes:
    """An exact message (END at ``end``) without the TLV at ``start``, padded to 300 bytes:
    ``Frame.without_option``'s encoding."""
    stop = start + 2 + data[start + 1]
    return (data[:start] + data[stop : end + 1]).ljust(BOOTP_MIN_SIZE, b"\0")
