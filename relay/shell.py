"""The shell ring, written once: what every boothop daemon does around its sans-IO core.

The relay, the DHCP server, proxyDHCP and the TFTP listener all use this module and nothing
else for: opening a UDP socket (with the error a person can act on when it cannot be opened),
receiving a datagram together with its ingress interface (IP_PKTINFO) as a ``wire.Datagram``,
the receive loop that calls a core inline and contains a core's exception to one packet
(``DatagramLoop``), the log rate limiter and the structlog set-up.

The server may import this module as it imports the codec; it imports nothing of the relay's
engine, and the relay never imports the server.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import functools
import json
import logging
import os
import select
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterator
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any, Generic, TextIO, TypeVar, cast

import orjson
import structlog
import trio

from .settings import EXIT_FAILURE, ConfigError, DaemonError
from .wire import ZERO, Datagram, Datagram6, address_of

# -- logging ---------------------------------------------------------------------------------
LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("auto", "console", "json")
Logger = structlog.typing.FilteringBoundLogger
T = TypeVar("T")


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Configure structlog once per process: to stderr, console renderer on a TTY, else JSON
    (one event per line, for journald and log shippers)."""
    out = stream if stream is not None else sys.stderr
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r} (expected one of: {', '.join(FORMATS)})")
    if level not in LEVELS:
        raise ValueError(f"unknown log level {level!r} (expected one of: {', '.join(LEVELS)})")
    json_output = fmt == "json" or (fmt == "auto" and not out.isatty())
    # The relay writes a line per relayed step at info, so the JSON pipeline is lean: orjson
    # renders (some 40 % less CPU than the standard library), straight to bytes written to the
    # stream's descriptor in one write (no text layer, no flush), and the timestamp is formatted
    # once per second (IsoUtcStamper). Measured: 11 -> 6.5 µs per line.
    fd = _descriptor(out) if json_output else None
    renderer: structlog.typing.Processor
    factory: Callable[..., Any]
    if fd is not None:
        renderer = structlog.processors.JSONRenderer(serializer=_orjson_line)
        factory = functools.partial(DescriptorLogger, fd)
    else:
        renderer = (structlog.processors.JSONRenderer(serializer=_orjson_text) if json_output
                    else structlog.dev.ConsoleRenderer(colors=out.isatty()))
        factory = structlog.PrintLoggerFactory(file=out)
    global _LEAN_JSON, _LEAN_PIPELINE
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _STAMPER,
        structlog.processors.format_exc_info,
        renderer,
    ]
    _LEAN_JSON = processors if fd is not None else None
    _LEAN_PIPELINE = tuple(processors)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )


def _descriptor(stream: TextIO) -> int | None:
    """The file descriptor under a text stream (flushed first), None for one without (a
    StringIO)."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        return None
    stream.flush()
    return fd


class IsoUtcStamper:
    """structlog's ``TimeStamper(fmt="iso", utc=True)``, the same text (``datetime.isoformat``
    of the UTC time, ``Z`` for ``+00:00``) at a third of its cost: the date and time of day are
    formatted once per second, the microseconds per event."""

    def __init__(self, clock: Callable[[], int] = time.time_ns) -> None:
        self._clock = clock
        #: (second, its text): one tuple, so that threads logging at once read a matching pair.
        self._second: tuple[int, str] = (-1, "")

    def __call__(self, logger: object, name: str, event_dict: structlog.typing.EventDict
                 ) -> structlog.typing.EventDict:
        event_dict["timestamp"] = self.text()
        return event_dict

    def text(self) -> str:
        """Now, as the timestamp of a line."""
        second, micro = divmod(self._clock() // 1000, 1_000_000)
        cached = self._second
        if cached[0] != second:
            cached = self._second = (second, time.strftime("%Y-%m-%dT%H:%M:%S",
                                                           time.gmtime(second)))
        # isoformat leaves the fraction out when it is zero.
        return f"{cached[1]}.{micro:06d}Z" if micro else f"{cached[1]}Z"


class DescriptorLogger:
    """structlog's output for rendered bytes: one ``write`` per line to a file descriptor.

    One system call per line keeps lines whole between threads (as the print logger's lock
    did) and flushed as they are written.
    """

    def __init__(self, fd: int, *args: object) -> None:
        self._fd = fd

    def msg(self, message: bytes | memoryview) -> None:
        written = os.write(self._fd, message)
        while written < len(message):  # a short write (a signal): the rest
            message = message[written:]
            written = os.write(self._fd, message)

    log = debug = info = warn = warning = error = critical = exception = fatal = failure = msg


#: The one timestamp processor of the process (``LineBatch`` stamps with it too).
_STAMPER = IsoUtcStamper()
#: The processors ``configure_logging`` installed for JSON to a descriptor (None for the
#: others): what ``LineBatch`` may render for them.
_LEAN_JSON: list[structlog.typing.Processor] | None = None
#: Its processors, as installed.
_LEAN_PIPELINE: tuple[structlog.typing.Processor, ...] = ()


class LineBatch:
    """Info lines that come in bursts (the kernel datapath's step events, read 20 times a
    second), written together: each is the line ``log.info`` writes, but they go out in writes
    of whole lines of up to ``PIPE_BUF`` bytes (atomic on a pipe: another thread's line never
    lands inside one) instead of a write per line. With ``configure_logging``'s JSON to a
    descriptor, no bound context and no context variables (``lean``), a line is the dict those
    processors would build (the fields, then event, level and timestamp) rendered by the same
    orjson call without the bound logger's machinery (63k -> 48k instructions a kernel step
    line), or bytes the caller rendered (``write``). Otherwise the logger's processors render
    it; without a descriptor (the console renderer, a StringIO) each line goes through ``log``."""

    def __init__(self, log: Logger) -> None:
        self._log = log
        self._bound = cast(structlog.BoundLoggerBase, log)
        output = self._bound._logger
        self._output = output if isinstance(output, DescriptorLogger) else None
        self._enabled = logging_enabled(log, "info")
        #: Whether a line may be rendered without the logger (``write``): JSON to a descriptor
        #: by ``configure_logging``'s processors, no bound context, no context variables.
        self.lean = (self._output is not None and _LEAN_JSON is not None
                     and _lean_processors(self._bound)
                     and not structlog.get_context(self._bound)
                     and not structlog.contextvars.get_contextvars())
        self._lines: list[bytes] = []
        self._size = 0

    def still_lean(self) -> bool:
        """Whether ``lean`` still holds for a long-lived batch (the user path's step lines)."""
        return self.lean and _lean_processors(self._bound)

    def info(self, event: str, fields: dict[str, Any]) -> None:
        if not self._enabled:
            return
        if self.lean:
            line = orjson.dumps({**fields, "event": event, "level": "info",
                                 "timestamp": _STAMPER.text()},
                                option=orjson.OPT_APPEND_NEWLINE)
        elif self._output is None:
            self._log.info(event, **fields)
            return
        else:
            try:
                (line,), _ = self._bound._process_event("info", event, fields)
            except structlog.DropEvent:
                return
        self.write(line)

    def write(self, line: bytes) -> None:
        """A line rendered by the caller (only while ``lean``), as ``info`` would render it, or
        whole lines of at most ``PIPE_BUF`` bytes together."""
        if self._size + len(line) > select.PIPE_BUF:
            self.flush()
        self._lines.append(line)
        self._size += len(line)

    def write_whole(self, lines: memoryview, cuts: list[int]) -> None:
        """Whole lines rendered by the caller (only while ``lean``), written now, after those
        before: a write up to each of ``cuts`` (offsets, at most PIPE_BUF apart), one for the
        rest."""
        self.flush()
        if self._output is None:
            return
        start = 0
        for cut in (*cuts, len(lines)):
            self._output.msg(lines[start:cut])
            start = cut

    @staticmethod
    def stamp() -> str:
        """Now, as a line's timestamp."""
        return _STAMPER.text()

    def flush(self) -> None:
        if self._output is not None and self._lines:
            self._output.msg(b"".join(self._lines))
        self._lines.clear()
        self._size = 0


def _lean_processors(bound: structlog.BoundLoggerBase) -> bool:
    """Whether ``bound`` renders with ``configure_logging``'s lean JSON processors, as they were
    installed (``structlog.testing.capture_logs`` replaces a list's processors in place)."""
    return bound._processors is _LEAN_JSON and tuple(bound._processors) == _LEAN_PIPELINE


def _orjson_line(event: object, **options: Any) -> bytes:
    """orjson's rendering, one line of bytes."""
    return orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE, **options)


def _orjson_text(event: object, **options: Any) -> str:
    """orjson's rendering as text (structlog's print logger writes str)."""
    return orjson.dumps(event, **options).decode()


def set_log_level(level: str) -> bool:
    """Change the level of a configured process (a reload): whether it changed. Loggers bound
    before keep the old one: bind again."""
    if level not in LEVELS:
        raise ValueError(f"unknown log level {level!r} (expected one of: {', '.join(LEVELS)})")
    wrapper = structlog.make_filtering_bound_logger(getattr(logging, level.upper()))
    if structlog.get_config()["wrapper_class"] is wrapper:
        return False
    structlog.configure(wrapper_class=wrapper)
    return True


def logging_enabled(log: Logger, level: str) -> bool:
    """Whether ``log`` writes ``level`` lines: per-packet events are built only then."""
    is_enabled = getattr(log, "is_enabled_for", None)
    return bool(is_enabled(getattr(logging, level.upper()))) if is_enabled is not None else True


def per_packet_logging(log: Logger) -> bool:
    """Whether debug lines are written: per-packet events are built only then."""
    return logging_enabled(log, "debug")


class RateLimiter:
    """At most ``burst`` log lines per key per ``period`` seconds; the rest are counted.

    For events a remote party can trigger (drops, refusals, send errors): a flood must not
    become a flood of log lines.
    """

    def __init__(self, burst: int = 10, period: float = 10.0) -> None:
        self.burst = burst
        self.period = period
        self._windows: dict[Hashable, tuple[float, int, int]] = {}

    def allow(self, key: Hashable, now: float) -> int | None:
        """None if this line must be suppressed, else how many were suppressed before it."""
        start, used, suppressed = self._windows.get(key, (now, 0, 0))
        if now - start >= self.period:
            start, used = now, 0
        if used >= self.burst:
            self._windows[key] = (start, used, suppressed + 1)
            return None
        self._windows[key] = (start, used + 1, 0)
        return suppressed


def escaped(text: str) -> str:
    """Client-supplied text, safe for a log line."""
    return text.encode("unicode_escape").decode("ascii")


def errno_name(error: OSError) -> str:
    """``ECONNREFUSED`` rather than a sentence: what counters and log lines key on."""
    return errno.errorcode.get(error.errno or 0, type(error).__name__)


# -- sockets ---------------------------------------------------------------------------------
#: Room for any UDP payload a link can carry unfragmented, and then some; larger is truncated.
RECEIVE_BUFFER = 8192
#: The kernel buffer is the back-pressure of a loop with no task per packet: make it deep. The
#: kernel charges a datagram its buffer's true size, 1.25 KiB for a DHCP message of 300 octets
#: (2.25 KiB for a full frame; measured on Linux 6), against twice the requested size: 4 MiB
#: queues some 6,500 DHCP messages, over a second of the 5,000/s a mass reboot brings, while the
#: loop catches up; a full queue costs at most 8 MiB of kernel memory per socket. It needs
#: CAP_NET_ADMIN (SO_RCVBUFFORCE); without, net.core.rmem_max caps it (often 208 KiB).
RECEIVE_QUEUE = 4 * 1024 * 1024
#: Linux <netinet/in.h> and <asm-generic/socket.h>; the socket module does not export them all.
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
#: With it on, a datagram carries the socket's count of datagrams the kernel dropped (a u32).
SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40)
_PKTINFO = struct.Struct("=I4s4s")  # struct in_pktinfo: ifindex, spec_dst, addr (header dst)
#: <netinet/in.h>: receive struct in6_pktinfo (header destination, ingress index) per datagram.
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
_PKTINFO6 = struct.Struct("=16sI")  # struct in6_pktinfo, and struct ipv6_mreq: address, ifindex
#: Hops a Relay-forward multicast to ff05::1:3 may cross (the kernel's default is 1: the link).
MULTICAST_HOPS6 = 32
_U32 = struct.Struct("=I")
ANCILLARY_SIZE = socket.CMSG_SPACE(_PKTINFO6.size) + socket.CMSG_SPACE(_U32.size)
#: Plain ints: the enum's ``&`` costs microseconds per packet.
_MSG_TRUNC = int(socket.MSG_TRUNC)
_DONTWAIT = int(socket.MSG_DONTWAIT)


class SocketUnavailable(OSError):
    """A socket the daemon needs cannot be had; the message says which and what to do."""

    def __str__(self) -> str:
        return str(self.strerror)


class ShutDown(Exception):
    """A blocked receive woken by ``shutdown(SHUT_RD)``: the daemon is stopping."""


class Truncated(Exception):
    """A datagram larger than the receive buffer: not a message any core could use whole."""


def open_udp(port: int, address: str = "0.0.0.0", *, broadcast: bool = True,
             pktinfo: bool = True, receive_queue: int = RECEIVE_QUEUE,
             family: socket.AddressFamily = socket.AF_INET,
             share: bool = False) -> socket.socket:
    """A non-blocking UDP socket bound to ``address:port``, with IP_PKTINFO and SO_RXQ_OVFL on
    received datagrams (unless ``pktinfo`` is False).

    ``family`` AF_INET6 (``address`` "::" then): IPv6 only, IPV6_RECVPKTINFO instead, multicast
    sent MULTICAST_HOPS6 far and not looped back; groups are joined per interface
    (``join_group``).

    No SO_REUSEADDR: a port another daemon holds (a second boothop, dhcrelay, dnsmasq) is
    refused, for two daemons on one port would split its traffic between them at random. (Only
    ``open_peer_udp`` shares a port, with ``share``, for the time of one bind.)
    """
    sock = socket.socket(family, socket.SOCK_DGRAM)
    v6 = family == socket.AF_INET6
    try:
        if v6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, MULTICAST_HOPS6)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
        elif broadcast:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        if pktinfo:  # the ancillary data ``receive`` reads
            if v6:
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
            else:
                sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            sock.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
        if receive_queue:
            # FORCE passes net.core.rmem_max with CAP_NET_ADMIN; without, the kernel caps it.
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, receive_queue)
            except PermissionError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_queue)
        if share:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setblocking(False)
        try:
            sock.bind((address, port))
        except OSError as error:
            raise _bind_error(error, address, port) from error
    except BaseException:
        sock.close()
        raise
    return sock


def open_peer_udp(address: str, peer: tuple[str, int]) -> tuple[socket.socket, socket.socket]:
    """Two non-blocking UDP sockets on one new port of ``address``: the first connected to
    ``peer``, the second unconnected, which receives every datagram from anyone else.

    The kernel hands a datagram to the socket whose bound and connected addresses match it
    best, so the peer's datagrams all reach the connected socket (``send`` and ``recv``: no
    address to convert per datagram, the peer filtered by the kernel) and the second socket
    gets only strays. The port is shared (SO_REUSEADDR) for the second bind only: the option is
    cleared on both after it, so no socket can bind the port later.
    """
    sock = open_udp(0, address, broadcast=False, pktinfo=False, receive_queue=0)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        strays = open_udp(sock.getsockname()[1], address, broadcast=False, pktinfo=False,
                          receive_queue=0, share=True)
        try:
            for shared in (sock, strays):
                shared.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
            sock.connect(peer)
        except BaseException:
            strays.close()
            raise
    except BaseException:
        sock.close()
        raise
    return sock, strays


#: Connections the kernel queues, completed, before the daemon accepts them.
LISTEN_BACKLOG = 128


def open_tcp(port: int, address: str = "0.0.0.0", *,
             backlog: int = LISTEN_BACKLOG) -> socket.socket:
    """A non-blocking TCP socket listening on ``address:port`` (IPv4, or IPv6 for an address
    with a colon: ``::`` takes IPv4 clients too, as mapped addresses).

    SO_REUSEADDR here, unlike UDP: on Linux it lets a restarted daemon bind while connections
    of the previous one linger in TIME_WAIT, and never lets two listeners share a port (that
    is SO_REUSEPORT), so a port another daemon holds is still refused and named.
    """
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.setblocking(False)
        try:
            sock.bind((address, port))
        except OSError as error:
            raise _bind_error(error, address, port, "TCP") from error
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def join_group(sock: socket.socket, group: IPv6Address, ifindex: int, join: bool = True) -> None:
    """Join (or leave) an IPv6 multicast group on one interface (IPV6_JOIN_GROUP)."""
    option = socket.IPV6_JOIN_GROUP if join else socket.IPV6_LEAVE_GROUP
    sock.setsockopt(socket.IPPROTO_IPV6, option, _PKTINFO6.pack(group.packed, ifindex))


def _bind_error(error: OSError, address: str, port: int, protocol: str = "UDP") -> OSError:
    where = f"{protocol} port {port} on {address}"
    if error.errno == errno.EADDRINUSE:
        suspects = ("another boothop, dhcrelay, dnsmasq, a DHCP server?" if protocol == "UDP"
                    else "another boothop, a web server?")
        return SocketUnavailable(error.errno, f"{where} is taken by another process "
                                 f"({suspects}): stop it or choose another port")
    if error.errno == errno.EACCES:
        return SocketUnavailable(error.errno, f"binding {where} needs CAP_NET_BIND_SERVICE "
                                 "(ports below 1024)")
    if error.errno == errno.EADDRNOTAVAIL:
        return SocketUnavailable(error.errno, f"{where}: {address} is not an address of this host")
    return SocketUnavailable(error.errno or 0, f"{where}: {error.strerror or error}")


_PKTINFOS: dict[bytes, tuple[int, IPv4Address, IPv4Address]] = {}
_NAMES: dict[int, str] = {}
_NO_PKTINFO = (0, IPv4Address(0), IPv4Address(0))


def _pktinfo(ancillary: list[tuple[int, int, bytes]]) -> tuple[int, IPv4Address, IPv4Address]:
    """(ifindex, spec_dst, header destination) of IP_PKTINFO; the few values seen are cached."""
    for level, kind, data in ancillary:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= _PKTINFO.size:
            found = _PKTINFOS.get(data)
            if found is None:
                if len(_PKTINFOS) >= 4096:  # bounded: header destinations come from senders
                    _PKTINFOS.clear()
                ifindex, spec_dst, destination = _PKTINFO.unpack_from(data)
                found = _PKTINFOS[data] = (ifindex, address_of(spec_dst), address_of(destination))
            return found
    return _NO_PKTINFO


_TEXTS: dict[IPv4Address | IPv6Address, str] = {}
#: The last address formatted and its text, one tuple (read and replaced whole by any thread).
_LAST_TEXT: tuple[IPv4Address | IPv6Address | None, str] = (None, "")


def address_text(address: IPv4Address | IPv6Address) -> str:
    """``str(address)``, memoized: formatting an address costs microseconds, and every relayed
    packet names a few (the destination of a send, its log line's giaddr and source). The last
    one is checked by identity first: a server's replies mostly go to one relay's giaddr (one
    object, ``address_of``), and hashing an address is a Python call."""
    global _LAST_TEXT
    last = _LAST_TEXT
    if last[0] is address:
        return last[1]
    text = _TEXTS.get(address)
    if text is None:
        if len(_TEXTS) >= 4096:  # bounded: ciaddr and source values come from clients
            _TEXTS.clear()
        text = _TEXTS[address] = str(address)
    _LAST_TEXT = address, text
    return text


def interface_name(ifindex: int) -> str:
    """The name of an interface index, cached ("" when it has none, or is gone)."""
    name = _NAMES.get(ifindex)
    if name is None:
        try:
            name = socket.if_indextoname(ifindex) if ifindex else ""
        except OSError:
            name = ""
        if len(_NAMES) >= 4096:
            _NAMES.clear()
        _NAMES[ifindex] = name
    return name


def receive(sock: socket.socket, port: int, *, flags: int = 0, bufsize: int = RECEIVE_BUFFER,
            names: bool = False, counters: LoopCounters | None = None) -> Datagram:
    """One datagram from ``sock`` (bound to ``port``), as the cores take it.

    BlockingIOError when a non-blocking receive finds the socket drained; ShutDown when a
    blocked receive was woken by ``shutdown(SHUT_RD)``; Truncated for an oversized datagram.
    ``names`` fills in the ingress interface's name (the relay keys on indexes and skips it).
    ``counters`` take the kernel's drop count when the datagram carries one (SO_RXQ_OVFL).
    """
    return receiver(sock, port, bufsize=bufsize, names=names, counters=counters)(flags)


def receiver(sock: socket.socket, port: int, *, bufsize: int = RECEIVE_BUFFER,
             names: bool = False, counters: LoopCounters | None = None
             ) -> Callable[[int], Datagram]:
    """``receive`` with its arguments bound once: ``take(flags)`` per datagram, what
    ``DatagramLoop`` calls. The usual datagram (IP_PKTINFO alone, a value seen before, no
    flags) costs the recvmsg, two memo lookups and the Datagram; anything else (shut down,
    truncated, the kernel's drop count with it, a new IP_PKTINFO) goes through ``_checked`` and
    ``_pktinfo``. No keyword arguments, no frame between the loop and recvmsg: 9k -> 4.5k
    instructions a datagram (tests/bench/relay_hotpath.py)."""
    recvmsg, pktinfos, known_names = sock.recvmsg, _PKTINFOS, _NAMES

    def take(flags: int = 0) -> Datagram:
        payload, ancillary, received_flags, source = recvmsg(bufsize, ANCILLARY_SIZE, flags)
        # IP_PKTINFO's values (12 bytes) are the memo's keys: no other message's data is one.
        found = (pktinfos.get(ancillary[0][2]) if len(ancillary) == 1 and not received_flags
                 else None)
        if found is None:
            _checked(ancillary, received_flags, source, bufsize, counters)
            found = _pktinfo(ancillary)
        ifindex, local, destination = found
        name = ""
        if names:  # interface_name's memo first: the call only for an index not seen yet
            name = known_names.get(ifindex) or interface_name(ifindex)
        return Datagram(payload, address_of(source[0]), source[1], destination, ifindex, local,
                        port, name)

    return take


def _recvmsg(sock: socket.socket, flags: int, bufsize: int, counters: LoopCounters | None
             ) -> tuple[bytes, list[tuple[int, int, bytes]], Any]:
    """recvmsg, with what ``receive`` and ``receive6`` both raise and count."""
    payload, ancillary, received_flags, source = sock.recvmsg(bufsize, ANCILLARY_SIZE, flags)
    _checked(ancillary, received_flags, source, bufsize, counters)
    return payload, ancillary, source


def _checked(ancillary: list[tuple[int, int, bytes]], received_flags: int, source: Any,
             bufsize: int, counters: LoopCounters | None) -> None:
    """What a received datagram raises (ShutDown, Truncated), and the kernel's drop count it
    carries."""
    if source is None:
        raise ShutDown("no datagram: the socket was shut down for reading")
    # SO_RXQ_OVFL comes after IP_PKTINFO, or alone (on a socket without it).
    if counters is not None and (len(ancillary) > 1
                                 or (ancillary and ancillary[0][1] == SO_RXQ_OVFL)):
        counters.kernel_dropped(ancillary)
    if received_flags & _MSG_TRUNC:
        raise Truncated(f"datagram from {source[0]} larger than {bufsize} octets")


_ADDRESSES6: dict[str | bytes, IPv6Address] = {}


def _address6(key: str | bytes) -> IPv6Address:
    """IPv6Address of a text or 16 packed bytes, memoized (bounded) as ``wire.address_of``."""
    try:
        return _ADDRESSES6[key]
    except KeyError:
        if len(_ADDRESSES6) >= 4096:
            _ADDRESSES6.clear()
        address = _ADDRESSES6[key] = IPv6Address(key)
        return address


def receive6(sock: socket.socket, port: int, *, flags: int = 0, bufsize: int = RECEIVE_BUFFER,
             names: bool = False, counters: LoopCounters | None = None) -> Datagram6:
    """``receive`` for an AF_INET6 socket: the ingress and header destination from
    IPV6_PKTINFO (``names`` is for the signature's sake: Datagram6 carries no name)."""
    payload, ancillary, source = _recvmsg(sock, flags, bufsize, counters)
    ifindex, destination = 0, IPv6Address(0)
    for level, kind, data in ancillary:
        if level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO and len(data) >= _PKTINFO6.size:
            packed, ifindex = _PKTINFO6.unpack_from(data)
            destination = _address6(packed)
    # A link-local source comes as "fe80::1%eth0": the scope is the ingress, kept apart.
    text = source[0]
    return Datagram6(payload, _address6(text.partition("%")[0]), source[1], destination, ifindex,
                     port)


def send_datagram6(sock: socket.socket, payload: bytes, destination: IPv6Address, port: int,
                   ifindex: int = 0, source: IPv6Address | None = None) -> None:
    """Send without blocking to ``destination`` out of ``ifindex`` (0: routed), as the IPV6_PKTINFO
    of ``sendmsg`` chooses it; a link-local or multicast destination needs the interface.
    ``source``: the address to send from (a server answers from the one it was asked at)."""
    packed = source.packed if source is not None else bytes(16)
    cmsg = [(socket.IPPROTO_IPV6, IPV6_PKTINFO, _PKTINFO6.pack(packed, ifindex))]
    # fe80::/10 or ff00::/8, on the integer: ipaddress's is_link_local builds a network per call.
    number = int(destination)
    scope = ifindex if number >> 118 == 0x3FA or number >> 120 == 0xFF else 0
    sock.sendmsg([payload], cmsg, _DONTWAIT, (address_text(destination), port, 0, scope))


# -- frames on a packet socket: the server answers on client LANs -------------------------------
ETH_P_IP = 0x0800
SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)
#: How long a packet socket's receive blocks: shutdown() cannot wake it, so the thread wakes
#: this often to see whether its loop is stopping.
PACKET_WAKE = 0.5
_BPF = struct.Struct("=HBBI")  # struct sock_filter: code, jt, jf, k
#: <linux/filter.h> opcodes: loads (absolute, or indexed by X), jumps, return.
_LDB_ABS, _LDH_ABS, _LDB_IND, _LDH_IND, _LDX_MSH = 0x30, 0x28, 0x50, 0x48, 0xB1
_JEQ, _JSET, _RET = 0x15, 0x45, 0x06


def _bootreply_filter(port: int) -> bytes:
    """Classic BPF (SO_ATTACH_FILTER) over the IPv4 header (a SOCK_DGRAM packet socket sees the
    packet from there): UDP, not a fragment, to ``port``, a BOOTREPLY (op 2). Written out rather
    than compiled by libpcap: eleven instructions, and the kernel leaves every other packet of a
    router where it is. What this host sends never reaches it: the kernel hands a packet socket
    outgoing frames only when it takes every protocol (ETH_P_ALL), and this one takes IPv4."""
    program = [
        (_LDB_ABS, 0, 0, 9),          # 0 A = protocol
        (_JEQ, 0, 7, 17),             # 1 UDP? else drop (9)
        (_LDH_ABS, 0, 0, 6),          # 2 A = flags, fragment offset
        (_JSET, 5, 0, 0x1FFF),        # 3 a fragment after the first? drop (9)
        (_LDX_MSH, 0, 0, 0),          # 4 X = header length
        (_LDH_IND, 0, 0, 2),          # 5 A = UDP destination port
        (_JEQ, 0, 2, port),           # 6 ours? else drop (9)
        (_LDB_IND, 0, 0, 8),          # 7 A = BOOTP op
        (_JEQ, 1, 0, 2),              # 8 BOOTREPLY? accept (10), else drop (9)
        (_RET, 0, 0, 0),              # 9 drop
        (_RET, 0, 0, 0xFFFF),         # 10 accept
    ]
    return b"".join(_BPF.pack(*instruction) for instruction in program)


def open_reply_listener(port: int) -> socket.socket:
    """A packet socket that takes the BOOTREPLYs to UDP ``port`` (the clients' 68) arriving on any
    interface: server answers on a client LAN, which no UDP socket of the relay sees. Needs
    CAP_NET_RAW (as the relay's delivery socket does)."""
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
    except PermissionError as error:
        raise SocketUnavailable(error.errno, "a packet socket (to see server answers on client "
                                "LANs) needs CAP_NET_RAW") from error
    try:
        program = _bootreply_filter(port)
        buffer = ctypes.create_string_buffer(program)
        fprog = struct.pack("HL", len(program) // _BPF.size, ctypes.addressof(buffer))
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
        # Whatever arrived between socket() and the filter was queued unfiltered (as libpcap
        # knows, which drains the same way): throw it away.
        with contextlib.suppress(BlockingIOError):
            while True:
                sock.recv(1, socket.MSG_DONTWAIT | socket.MSG_TRUNC)
        sock.settimeout(PACKET_WAKE)
    except BaseException:
        sock.close()
        raise
    return sock


_INDEXES: dict[str, int] = {}


def _ifindex(name: str) -> int:
    index = _INDEXES.get(name)
    if index is None:
        try:
            index = socket.if_nametoindex(name)
        except OSError:
            index = 0
        if len(_INDEXES) >= 4096:
            _INDEXES.clear()
        _INDEXES[name] = index
    return index


def receive_frame(sock: socket.socket, port: int, *, flags: int = 0,
                  bufsize: int = RECEIVE_BUFFER, names: bool = False,
                  counters: LoopCounters | None = None) -> Datagram:
    """One IPv4/UDP packet from a packet socket (``open_reply_listener``), as the cores take it:
    ``receive`` for frames, with the link-layer source. Truncated for a packet that does not
    hold the UDP datagram its headers announce."""
    try:
        packet, _, received_flags, address = sock.recvmsg(bufsize, 0, flags)
    except TimeoutError:
        raise BlockingIOError("no packet within the wake-up period") from None
    if received_flags & _MSG_TRUNC:
        raise Truncated(f"packet larger than {bufsize} octets")
    ifname, _, _, _, mac = address
    header = (packet[0] & 0x0F) * 4 if packet else 0
    if len(packet) < header + 8 or header < 20:
        raise Truncated(f"a {len(packet)}-octet packet on {ifname} holds no UDP header")
    source_port, _, length = struct.unpack_from("!HHH", packet, header)
    if length < 8 or len(packet) < header + length:
        raise Truncated(f"a UDP datagram of {length} octets in a {len(packet)}-octet packet")
    return Datagram(packet[header + 8:header + length], address_of(packet[12:16]), source_port,
                    address_of(packet[16:20]), _ifindex(ifname), ZERO, port,
                    ifname if names else "", mac)


_CMSGS: dict[tuple[int, IPv4Address], list[tuple[int, int, bytes]]] = {}


#: The last (ifindex, source, ancillary data), as ``_LAST_TEXT``.
_LAST_CMSG: tuple[int, IPv4Address | None, list[tuple[int, int, bytes]]] = (0, None, [])


def pktinfo_cmsg(ifindex: int, source: IPv4Address) -> list[tuple[int, int, bytes]]:
    """Ancillary data for ``sendmsg`` choosing the outgoing interface (0: routed) and the source
    address of a reply. A server sends from one address (``address_of``'s object): the last is
    checked by identity before the memo is looked up (the key's hash is a Python call)."""
    global _LAST_CMSG
    last = _LAST_CMSG
    if last[1] is source and last[0] == ifindex:
        return last[2]
    key = ifindex, source
    cmsg = _CMSGS.get(key)
    if cmsg is None:
        if len(_CMSGS) >= 4096:
            _CMSGS.clear()
        info = _PKTINFO.pack(ifindex, source.packed, bytes(4))
        cmsg = _CMSGS[key] = [(socket.IPPROTO_IP, IP_PKTINFO, info)]
    _LAST_CMSG = ifindex, source, cmsg
    return cmsg


def send_datagram(sock: socket.socket, payload: bytes, to: tuple[str, int],
                  ifindex: int = 0, source: IPv4Address | None = None) -> None:
    """Send without blocking (a full buffer raises: the peer retransmits), from ``source`` and out
    of ``ifindex`` when given."""
    if source is None:
        sock.sendto(payload, _DONTWAIT, to)
    else:
        sock.sendmsg([payload], pktinfo_cmsg(ifindex, source), _DONTWAIT, to)


def write_json(path: Path, snapshot: dict[str, Any], log: Logger) -> bool:
    """Write a snapshot as JSON, atomically (readers never see half a file): whether it was."""
    temporary = path.with_name(path.name + ".tmp")
    try:
        temporary.write_text(json.dumps(snapshot, indent=1, sort_keys=True) + "\n")
        os.replace(temporary, path)
    except OSError as error:
        log.error("relay.stats_file.failed", path=str(path), error=errno_name(error))
        return False
    return True


# -- the service manager -------------------------------------------------------------------
def notify(*states: str) -> bool:
    """Send ``states`` (``READY=1``, ``WATCHDOG=1``...) to systemd; False when not under it.

    Written here rather than taken from python-systemd: the sd_notify protocol is one datagram
    of ``KEY=VALUE`` lines to the AF_UNIX socket named by $NOTIFY_SOCKET (``@`` for the abstract
    namespace), and that package would bring libsystemd and a C build for these few lines. A
    failure to send is ignored, as sd_notify(3)'s callers do: the daemon serves all the same.
    """
    address = os.environ.get("NOTIFY_SOCKET")
    if not address or address[0] not in "/@":
        return False
    if address[0] == "@":
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto("\n".join(states).encode(), address)
    except OSError:
        return False
    return True


def watchdog_period() -> float | None:
    """Seconds between two WATCHDOG=1, half of $WATCHDOG_USEC (sd_watchdog_enabled(3)); None
    when the service has no watchdog, or it is meant for another process ($WATCHDOG_PID)."""
    pid = os.environ.get("WATCHDOG_PID")
    if pid is not None and pid != str(os.getpid()):
        return None
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2e6 if usec > 0 else None


@contextlib.contextmanager
def reloading() -> Iterator[None]:
    """RELOADING=1 before a configuration reload and READY=1 after it (sd_notify(3))."""
    notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
    try:
        yield
    finally:
        notify("READY=1")


async def _watchdog(period: float) -> None:
    """WATCHDOG=1 from the trio loop itself: a loop that hangs stops feeding systemd."""
    while True:
        notify("WATCHDOG=1")
        await trio.sleep(period)


async def _supervised(main: Callable[..., Awaitable[object]]) -> None:
    """Run ``main`` as ``nursery.start(main)``; READY=1 once it calls ``task_status.started()``
    (its sockets bound), the watchdog while it runs, STOPPING=1 when it returns."""
    async with trio.open_nursery() as nursery:

        async def serve(task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                await main(task_status=task_status)
            finally:
                notify("STOPPING=1")
                nursery.cancel_scope.cancel()

        await nursery.start(serve)
        notify("READY=1", f"STATUS=serving (pid {os.getpid()})")
        period = watchdog_period()
        if period is not None:
            nursery.start_soon(_watchdog, period)


# -- the process -----------------------------------------------------------------------------
def run_daemon(program: str, main: Callable[..., Awaitable[object]]) -> int:
    """Run a daemon's trio main until it returns: its exit status.

    ``main`` takes ``task_status`` and calls ``task_status.started()`` once it serves; systemd
    (Type=notify) hears READY=1 then, WATCHDOG=1 at half its WatchdogSec while it runs and
    STOPPING=1 when it returns. An OSError (a port taken, a capability missing) or a DaemonError,
    alone or inside the nursery's exception group, becomes one line on stderr and EXIT_FAILURE
    instead of a
    traceback."""
    try:
        trio.run(_supervised, main)
    except KeyboardInterrupt:
        pass
    except (OSError, DaemonError) as error:
        print(f"{program}: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except BaseExceptionGroup as group:
        errors, rest = group.split((OSError, DaemonError))
        if errors is None or rest is not None:
            raise
        for leaf in _leaves(errors):
            print(f"{program}: {leaf}", file=sys.stderr)
        return EXIT_FAILURE
    return 0


def _leaves(group: BaseExceptionGroup[Exception]) -> list[Exception]:
    found: list[Exception] = []
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            found.extend(_leaves(error))
        else:
            found.append(error)
    return found


#: What ``signal_loop`` serves: SIGHUP reload, SIGUSR1 counters, SIGTERM/SIGINT stop.
DAEMON_SIGNALS = (signal.SIGHUP, signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)


async def signal_loop(signals: AsyncIterator[int], *, reload: Callable[[], Awaitable[object]],
                      counters: Callable[[], object], stop: trio.CancelScope, log: Logger,
                      stopping: str) -> None:
    """Every daemon's signal handling: SIGHUP ``reload``, SIGUSR1 ``counters``, SIGTERM and
    SIGINT log ``stopping`` and cancel ``stop``."""
    async for signum in signals:
        if signum == signal.SIGHUP:
            await reload()
        elif signum == signal.SIGUSR1:
            counters()
        else:
            log.info(stopping, signal=signal.Signals(signum).name)
            stop.cancel()
            return


async def reload_config(load: Callable[[], T], apply: Callable[[T], object], *, log: Logger,
                        event: str) -> bool:
    """Re-read and validate a configuration and ``apply`` it, both in a thread (either may touch
    files); a ConfigError keeps the running one, logged as ``event`` with its path, key and
    reason. Whether it was applied."""
    with reloading():
        try:
            config = await trio.to_thread.run_sync(load)
        except ConfigError as error:
            log.error(event, path=error.path, key=error.key, reason=error.reason,
                      note="keeping the running configuration")
            return False
        await trio.to_thread.run_sync(apply, config)
        return True


# -- threads ---------------------------------------------------------------------------------
async def run_in_own_thread(target: Callable[[], None], name: str) -> None:
    """Run ``target`` in a thread made for it and wait until it returns; what it raises is
    raised here. Not trio's thread cache (``trio.to_thread``): ``target`` may change its thread
    for good (``lowest_priority``), which a cached thread would carry to the next job. The wait
    is shielded: a cancelled caller returns only once ``target`` has, so ``target`` must be
    told to stop by other means (a sibling task's ``finally``)."""
    token = trio.lowlevel.current_trio_token()
    ended = trio.Event()
    raised: list[BaseException] = []

    def body() -> None:
        try:
            target()
        except BaseException as error:
            raised.append(error)
        finally:
            token.run_sync_soon(ended.set)

    threading.Thread(target=body, name=name, daemon=True).start()
    with trio.CancelScope(shield=True):
        await ended.wait()
    if raised:
        raise raised[0]
    await trio.lowlevel.checkpoint()  # a cancellation that came meanwhile is raised now


def lowest_priority(log: Logger) -> None:
    """Run the calling thread only when its CPU has nothing else to do (SCHED_IDLE), for work
    that must never take a CPU from the packets, or from a service beside the daemon. Lowering a
    thread's priority needs no privilege; where it fails all the same, one warning says so."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # 0: the calling thread
    except OSError as error:
        log.warning("daemon.priority_unchanged", thread=threading.current_thread().name,
                    error=errno_name(error))


# -- the receive loop ------------------------------------------------------------------------
@dataclasses.dataclass
class LoopCounters:
    """What happens around the core: datagrams that never reached it, and its exceptions."""

    receive_errors: int = 0
    truncated: int = 0
    core_errors: int = 0
    #: Datagrams the kernel dropped before the socket (a full receive queue, a bad checksum).
    kernel_drops: int = 0

    def kernel_dropped(self, ancillary: list[tuple[int, int, bytes]]) -> None:
        """Take SO_RXQ_OVFL's count from a datagram's ancillary data, where it has one.

        The kernel stamps a datagram as it queues it with the socket's running total of drops,
        and only once that total is not 0: drops in a burst show with the next datagram queued
        after them.
        """
        for level, kind, data in ancillary:
            if kind == SO_RXQ_OVFL and level == socket.SOL_SOCKET and len(data) >= _U32.size:
                self.kernel_drops = _U32.unpack_from(data)[0]

    def snapshot(self) -> dict[str, int]:
        return dataclasses.asdict(self)


#: What a DatagramLoop hands its handler: an IPv4 or (from an AF_INET6 socket) an IPv6 datagram.
D = TypeVar("D", Datagram, Datagram6)


class DatagramLoop(Generic[D]):
    """The one receive loop: receive on one socket and call a core's handler inline, per datagram.

    A thread, not a trio task. DHCP packets mostly arrive one at a time: each wake-up of a trio
    task cost some 20 µs of CPU in its scheduler and an extra poll (measured in the relay
    benchmark, tests/bench/relay_dora.py), more than a core spends on a packet, while a thread
    blocked in recvmsg costs two system calls per packet (receive, send), as few as dhcrelay.
    No task per packet: the kernel socket buffer is the back-pressure.

    ``handle`` runs under ``lock``, which the daemon's trio tasks take to read or swap what the
    handler uses (configuration, counters, timers). An exception out of ``handle`` is a bug in a
    core; it costs that one datagram, is counted and logged (rate-limited), and the loop goes on.

    With ``burst`` > 1 the loop also drains up to ``burst - 1`` queued datagrams (without
    blocking) under the same lock, then calls ``after_burst(count)`` outside it: the DHCP server
    commits a burst's leases in one transaction there.
    """

    def __init__(
        self,
        sock: socket.socket,
        handle: Callable[[D], None],
        *,
        log: Logger,
        lock: threading.Lock | None = None,
        burst: int = 1,
        after_burst: Callable[[int], None] | None = None,
        names: bool = False,
        bufsize: int = RECEIVE_BUFFER,
        reader: Callable[..., D] | None = None,
        port: int | None = None,
    ) -> None:
        """``reader`` takes a datagram from ``sock`` (by default ``receive``, or ``receive6`` for
        an AF_INET6 socket; ``receive_frame`` for a packet socket, whose ``port`` must be given:
        it has none of its own)."""
        self.sock = sock
        self.handle: Callable[[D], None] = handle
        self.reader: Callable[..., D] | None = reader
        self._take: Callable[[int], D] | None = None
        self._poller: select.poll | None = None
        self._port = port
        self.log = log
        self.lock = lock if lock is not None else threading.Lock()
        self.burst = burst
        self.after_burst = after_burst
        self.names = names
        self.bufsize = bufsize
        self.counters = LoopCounters()
        self.limiter = RateLimiter()
        self.stopping = False
        self._drops_seen = self._drops_logged = 0

    @property
    def _receive(self) -> Callable[[int], D]:
        """``take(flags)``: a datagram from the socket, chosen and bound once (``socket.family``
        is a Python property building an enum, and ``_drain`` runs at every wake-up): the
        reader given, else ``receiver`` (``receive6`` for an AF_INET6 socket)."""
        take = self._take
        if take is None:
            take = self._take = self._reader()
        return take

    def _reader(self) -> Callable[[int], D]:
        sock, port, bufsize, names, counters = (self.sock, self.port, self.bufsize, self.names,
                                                self.counters)
        if self.reader is None and sock.family != socket.AF_INET6:
            bound: Callable[[int], Any] = receiver(sock, port, bufsize=bufsize, names=names,
                                                   counters=counters)
            return bound
        read = self.reader or cast(Callable[..., D], receive6)

        def take(flags: int = 0) -> D:
            return read(sock, port, flags=flags, bufsize=bufsize, names=names, counters=counters)

        return take

    @property
    def port(self) -> int:
        """The local port: the cores see it in each Datagram (proxyDHCP answers 67 and 4011).
        Kept once bound: ``_drain`` reads it at every wake-up, and getsockname is a system call."""
        if self._port is None:
            bound = int(self.sock.getsockname()[1])
            if not bound:
                return 0
            self._port = bound
        return self._port

    async def run(self) -> None:
        """Run the receive thread until cancelled, then wake it and wait for it to return."""
        if self.reader is None:  # a packet socket keeps its wake-up timeout
            self.sock.setblocking(True)  # the thread blocks in recvmsg; sends use MSG_DONTWAIT
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._stop_on_cancel)
            # Not abandoned on cancel: the thread is woken and waited for, so that it never
            # touches the socket or the core once they are gone.
            await trio.to_thread.run_sync(self.serve, limiter=trio.CapacityLimiter(1))
            nursery.cancel_scope.cancel()

    async def _stop_on_cancel(self) -> None:
        try:
            await trio.sleep_forever()
        finally:
            self.stopping = True
            # Linux wakes a recvmsg blocked on an unconnected UDP socket when it is shut down
            # (it returns no data and no address), though the call itself reports ENOTCONN.
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RD)

    def serve(self) -> None:
        """The receive thread's body: returns when the socket is shut down."""
        take = self._receive
        lock, handle, burst, after_burst = self.lock, self._handle, self.burst, self.after_burst
        while not self.stopping:
            try:
                datagram = take(0)
            except ShutDown:
                return
            except BlockingIOError:  # a packet socket's wake-up: see whether to stop
                continue
            except (Truncated, OSError) as error:
                with lock:
                    self._receive_failed(error)
                continue
            if burst > 1:
                count = self.handle_burst(datagram)
            else:
                with lock:
                    handle(datagram)
                count = 1
            if after_burst is not None:
                after_burst(count)

    def handle_burst(self, datagram: D) -> int:
        """Handle ``datagram`` and what is queued behind it, ``burst`` in all at most: how many.

        A zero-timeout poll first: most wake-ups find nothing more queued, and a receive that
        finds the socket empty raises (1.8 µs through the reader's frames, the poll 0.5)."""
        poller = self._poller
        if poller is None:
            poller = self._poller = select.poll()
            poller.register(self.sock, select.POLLIN)
        with self.lock:
            self._handle(datagram)
            return 1 + self._drain(self.burst - 1) if poller.poll(0) else 1

    def drain(self, limit: int) -> int:
        """Handle up to ``limit`` datagrams already queued, without blocking: how many."""
        with self.lock:
            return self._drain(limit)

    def _drain(self, limit: int) -> int:
        handle, take = self._handle, self._receive
        for count in range(limit):
            try:
                datagram = take(_DONTWAIT)
            except (BlockingIOError, ShutDown):
                return count
            except (Truncated, OSError) as error:
                self._receive_failed(error)
                continue
            handle(datagram)
        return limit

    def _handle(self, datagram: D) -> None:
        if self.counters.kernel_drops != self._drops_seen:
            self._kernel_drops_seen()
        try:
            self.handle(datagram)
        except Exception:  # a core must not raise (a bug): cost one packet, not the daemon
            self.counters.core_errors += 1
            if self.limiter.allow("core-error", time.monotonic()) is not None:
                self.log.exception("shell.core.error", source=f"{datagram.source}:"
                                   f"{datagram.source_port}", port=self.port)

    def _kernel_drops_seen(self) -> None:
        """Log (rate-limited) that the kernel dropped datagrams: a daemon with no stats line
        (the TFTP listener) shows them here."""
        total = self._drops_seen = self.counters.kernel_drops
        if self.limiter.allow("kernel-drops", time.monotonic()) is not None:
            self.log.warning("shell.receive.kernel_drops", dropped=total - self._drops_logged,
                             total=total, port=self.port)
            self._drops_logged = total

    def _receive_failed(self, error: Exception) -> None:
        now = time.monotonic()
        if isinstance(error, Truncated):
            self.counters.truncated += 1
            if self.limiter.allow("truncated", now) is not None:
                self.log.info("shell.receive.truncated", detail=str(error), port=self.port)
            return
        # e.g. ECONNREFUSED: an ICMP port unreachable for an earlier send.
        assert isinstance(error, OSError)
        self.counters.receive_errors += 1
        if self.limiter.allow(("receive", error.errno), now) is not None:
            self.log.info("shell.receive.error", error=errno_name(error), port=self.port)
