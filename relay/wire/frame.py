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

from .codes import BOOTP_MIN_SIZE, Opt
from .message import DhcpMessage, _decode, encode, encoded_size
from .options import encode_tlv, tlv_size

_AGENT = Opt.RELAY_AGENT_INFO.value


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
            data, end = self.data, self._end
            head = b"".join((data[:3], bytes((hops,)), data[4:24], giaddr.packed))
            if agent_info is None:
                if end + 1 <= capacity:
                    return (head + data[28:]).ljust(BOOTP_MIN_SIZE, b"\0")
            else:
                body = b"".join((head, data[28:end], encode_tlv(_AGENT, agent_info), b"\xff"))
                if len(body) <= capacity:
                    return body.ljust(BOOTP_MIN_SIZE, b"\0")
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
                position = 240
                for option, value in msg.options:
                    stop = position + 2 + len(value)
                    if option == code:
                        return (data[:position] + data[stop : self._end + 1]).ljust(
                            BOOTP_MIN_SIZE, b"\0")
                    position = stop
                return data.ljust(BOOTP_MIN_SIZE, b"\0")
        return encode(msg.without_option(code), capacity)


def _with_agent_info(msg: DhcpMessage, value: bytes) -> DhcpMessage:
    return msg.without_option(_AGENT).with_option(_AGENT, value)
