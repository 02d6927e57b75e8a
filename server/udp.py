"""UDP helpers shared by the TFTP and proxyDHCP shells: receive loop, IP_PKTINFO, log hygiene."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

import trio

#: Linux <netinet/in.h>; the socket module does not export it.
IP_PKTINFO = 8
PKTINFO_SPACE = socket.CMSG_SPACE(12)


#: Packets handled back to back before the loop lets other trio tasks run.
FAIRNESS_BATCH = 64


async def datagrams(
    sock: socket.socket, bufsize: int, log: Any, error_event: str
) -> AsyncIterator[tuple[bytes, list[tuple[int, int, bytes]], Any]]:
    """(data, ancillary data, source) of each datagram, for as long as the caller iterates.

    Drains the non-blocking socket until it would block, then waits for readability: measured
    here at about 7 µs per packet, against about 50 µs when every receive is awaited. Receive
    errors are logged as ``error_event`` and skipped. Close it with ``contextlib.aclosing``.
    """
    handled = 0
    while True:
        handled += 1
        if handled % FAIRNESS_BATCH == 0:
            await trio.lowlevel.checkpoint()
        try:
            data, ancdata, _flags, source = sock.recvmsg(bufsize, PKTINFO_SPACE)
        except BlockingIOError:
            await trio.lowlevel.wait_readable(sock)
            continue
        except OSError as exc:
            log.warning(error_event, error=exc.strerror)
            await trio.lowlevel.checkpoint()
            continue
        yield data, ancdata, source


def escaped(text: str) -> str:
    """Client-supplied text, safe for a log line."""
    return text.encode("unicode_escape").decode("ascii")


class RateLimit:
    """At most ``burst`` events per second: anything a remote party triggers is rate-limited."""

    def __init__(self, burst: int = 20) -> None:
        self._burst = burst
        self._second = 0
        self._count = 0

    def allow(self) -> bool:
        second = int(time.monotonic())
        if second != self._second:
            self._second, self._count = second, 0
        self._count += 1
        return self._count <= self._burst


def pktinfo(ancdata: list[tuple[int, int, bytes]]) -> tuple[int, str] | None:
    """(interface index, local address) from a received IP_PKTINFO, or None."""
    for level, kind, data in ancdata:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= 12:
            return struct.unpack_from("=i", data)[0], socket.inet_ntoa(data[4:8])
    return None


def pktinfo_cmsg(ifindex: int, source: str) -> tuple[int, int, bytes]:
    """Ancillary data choosing the outgoing interface (for broadcasts) and source address."""
    info = struct.pack("=i4s4s", ifindex, socket.inet_aton(source), bytes(4))
    return socket.IPPROTO_IP, IP_PKTINFO, info
