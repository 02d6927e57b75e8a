"""The HTTP file server's shell: h11 on trio, one task per connection, files by sendfile(2).

UEFI HTTP boot and iPXE load kernels and images over HTTP; this serves the TFTP root (or its
own) with the same confinement (``tftp.paths.open_regular``). h11 parses and frames; the
decisions are ``respond.answer``'s; this module moves octets and enforces the bounds:
``max_connections`` and ``max_per_client`` (one more is answered 503 and closed), a deadline for
each request head (``header_timeout``, which is also the keep-alive idle time, so a slowloris
client holds a slot no longer than that), and ``send_timeout`` without progress while sending.
A file's octets go from the page cache to the socket by sendfile(2), never through memory:
h11 is told of them by ``send_with_data_passthrough`` (its documented way for sendfile).
"""

from __future__ import annotations

import contextlib
import dataclasses
import email.utils
import errno
import functools
import os
import threading
import time
from collections import Counter
from typing import Any, cast

import h11
import structlog
import trio

from boothop.relay.metrics import Family, Metrics, part
from boothop.relay.shell import Logger, RateLimiter, escaped, open_tcp
from boothop.server.tftp.packet import ErrorCode
from boothop.server.tftp.paths import FileRefused, open_regular

from .config import HttpConfig
from .respond import REASONS, Answer, ServedFile, Unavailable, answer, error

SERVER = b"boothop"
#: Octets asked of sendfile(2) per call: large enough to cost few calls, small enough that one
#: busy connection yields to others (each call is followed by a checkpoint).
SENDFILE_CHUNK = 1 << 20
RECEIVE_SIZE = 65536

FAMILIES = (
    Family("boothop_server_http_requests", "counter", "Requests answered, per status",
           ("requests", "{status}")),
    Family("boothop_server_http_bytes", "counter", "File octets sent", ("bytes",)),
    Family("boothop_server_http_connections", "counter",
           "Connections accepted, and refused with 503 over max_connections or max_per_client",
           ("connections", "{outcome}")),
    Family("boothop_server_http_timeouts", "counter",
           "Connections ended by a deadline: header (the request head did not arrive within "
           "header_timeout, keep-alive idling included) or send (the client stopped reading)",
           ("timeouts", "{kind}")),
    Family("boothop_server_http_open_connections", "gauge", "Connections open now", ("open",)),
)


class _Stalled(Exception):
    """The client took no octet for ``send_timeout`` seconds."""


class _File:
    """An open file as ``respond`` sees it (size, modification time) and sendfile reads it."""

    def __init__(self, fd: int, info: os.stat_result) -> None:
        self.fd, self.size, self.mtime = fd, info.st_size, info.st_mtime

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _Span:
    """``length`` octets of a file from ``offset``: passed through h11 in place of the data."""

    def __init__(self, file: _File, offset: int, length: int) -> None:
        self.file, self.offset, self.length = file, offset, length

    def __len__(self) -> int:
        return self.length


def open_served(root: str, path: str) -> ServedFile:
    """The confined opener: TFTP's "file not found" is 404, its access violations 403."""
    try:
        fd, info = open_regular(root, path)
    except FileRefused as refused:
        status = 404 if refused.code == ErrorCode.FILE_NOT_FOUND else 403
        raise Unavailable(status, refused.reason) from None
    return _File(fd, info)


class _Stats:
    """Counters, kept in the trio thread and copied under a lock for a scrape."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.connections: Counter[str] = Counter()
        self.timeouts: Counter[str] = Counter()
        self.octets = 0
        self.open = 0

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"requests": dict(self.requests), "connections": dict(self.connections),
                    "timeouts": dict(self.timeouts), "bytes": self.octets, "open": self.open}


class _Server:
    def __init__(self, config: HttpConfig, log: Logger) -> None:
        self.config, self.log = config, log
        self.stats = _Stats()
        self.per_client: Counter[str] = Counter()
        self.limiter = RateLimiter(burst=20, period=1.0)
        self.opener = functools.partial(open_served, config.root)

    def _count(self, counter: Counter[str], key: str, amount: int = 1) -> None:
        with self.stats.lock:
            counter[key] += amount

    # -- connections ---------------------------------------------------------------------------
    async def accept(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:  # EMFILE and its kind: the backlog holds the clients a while
                if self.limiter.allow("accept", time.monotonic()) is not None:
                    self.log.warning("http.accept.failed", error=exc.strerror)
                await trio.sleep(0.1)
                continue
            client = _peer(stream)
            if (self.stats.open >= self.config.max_connections
                    or self.per_client[client] >= self.config.max_per_client):
                self._count(self.stats.connections, "refused")
                nursery.start_soon(self._refuse, stream, client)
                continue
            self._count(self.stats.connections, "accepted")
            self.per_client[client] += 1
            with self.stats.lock:
                self.stats.open += 1
            nursery.start_soon(self._serve, stream, client)

    async def _refuse(self, stream: trio.SocketStream, client: str) -> None:
        if self.limiter.allow("refused", time.monotonic()) is not None:
            self.log.info("http.connection.refused", client=client, reason="too many connections")
        # Answered before its request is read (h11 lets a server answer from IDLE), within a
        # second: the refused must not hold what the limit protects.
        refusal = error(503, "too many connections", [(b"connection", b"close")])
        conn = h11.Connection(h11.SERVER)
        events = (h11.Response(status_code=503, headers=_with_date(refusal.headers),
                               reason=REASONS[503]),
                  h11.Data(data=refusal.body), h11.EndOfMessage())
        with trio.move_on_after(1.0), contextlib.suppress(trio.BrokenResourceError, OSError):
            await stream.send_all(b"".join(conn.send(event) or b"" for event in events))
        await trio.aclose_forcefully(stream)

    async def _serve(self, stream: trio.SocketStream, client: str) -> None:
        log = self.log.bind(client=client)
        try:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await self._connection(stream, log)
        finally:
            self.per_client[client] -= 1
            if not self.per_client[client]:
                del self.per_client[client]
            with self.stats.lock:
                self.stats.open -= 1
            await trio.aclose_forcefully(stream)

    async def _connection(self, stream: trio.SocketStream, log: Logger) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.config.max_head)
        while True:
            head: h11.Request | Answer | None = None
            with trio.move_on_after(self.config.header_timeout) as waiting:
                head = await self._request(stream, conn)
            if waiting.cancelled_caught:
                self._count(self.stats.timeouts, "header")
                if conn.their_state is not h11.IDLE or conn.trailing_data[0]:
                    # A request begun and not finished in time: the slowloris bound.
                    await self._send_error(stream, conn, log, "-", "-",
                                           error(408, "request head too slow"))
                return  # else an idle keep-alive connection: closed without a word
            if head is None:
                return  # the client closed the connection
            if isinstance(head, Answer):  # a message h11 could not parse
                await self._send_error(stream, conn, log, "-", "-", head)
                return
            try:
                await self._respond(stream, conn, head, log)
            except _Stalled:
                self._count(self.stats.timeouts, "send")
                log.info("http.send.stalled", seconds=self.config.send_timeout)
                return
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return  # Connection: close, HTTP/1.0, or a body not read
            conn.start_next_cycle()

    async def _request(self, stream: trio.SocketStream,
                       conn: h11.Connection) -> h11.Request | Answer | None:
        """The next request head, its body (if any) read and discarded; an error answer for a
        message h11 refuses; None when the client closed the connection."""
        request = None
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint if exc.error_status_hint in REASONS else 400
                # The client's own bytes stay out of the answer; the log line has h11's detail.
                return dataclasses.replace(error(status, "malformed request"), reason=str(exc))
            if event is h11.NEED_DATA:
                data = await stream.receive_some(RECEIVE_SIZE)
                conn.receive_data(data)  # b"": the peer closed; h11 says so next
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.EndOfMessage):
                return request
            elif isinstance(event, h11.ConnectionClosed):
                return None
            # h11.Data: a body on a GET, read and dropped.

    async def _respond(self, stream: trio.SocketStream, conn: h11.Connection,
                       request: h11.Request, log: Logger) -> None:
        started = trio.current_time()
        method = request.method
        reply = answer(method, request.target, request.headers, self.opener,
                       max_target=self.config.max_target)
        path = escaped(reply.path) if reply.path else escaped(request.target.decode("latin-1"))
        try:
            await self._send(stream, conn, h11.Response(
                status_code=reply.status, reason=REASONS.get(reply.status, ""),
                headers=_with_date(reply.headers)))
            if reply.file is not None and reply.length:
                assert isinstance(reply.file, _File)
                # h11 frames the body and passes the span through untouched (its sendfile hook).
                span = cast(bytes, _Span(reply.file, reply.offset, reply.length))
                for chunk in conn.send_with_data_passthrough(h11.Data(data=span)) or ():
                    await (self._sendfile(stream, chunk) if isinstance(chunk, _Span)
                           else self._send_bytes(stream, bytes(chunk)))
                with self.stats.lock:
                    self.stats.octets += reply.length
            elif reply.body and method != b"HEAD":
                await self._send(stream, conn, h11.Data(data=reply.body))
            await self._send(stream, conn, h11.EndOfMessage())
        finally:
            if reply.file is not None:
                reply.file.close()
            self._count(self.stats.requests, str(reply.status))
            self._log(log, method, path, reply, request, trio.current_time() - started)

    def _log(self, log: Logger, method: bytes, path: str, reply: Answer,
             request: h11.Request, seconds: float) -> None:
        # A transfer is worth its line; refusals and errors, which any client can cause in
        # bulk, are rate-limited per status.
        if reply.status < 400 or self.limiter.allow(reply.status, time.monotonic()) is not None:
            range_ = next((value for name, value in request.headers if name == b"range"), None)
            log.info("http.request", method=escaped(method.decode("latin-1")), path=path,
                     status=reply.status, reason=reply.reason, bytes=reply.length,
                     offset=reply.offset,
                     range=escaped(range_.decode("latin-1")) if range_ else None,
                     seconds=round(seconds, 3))

    async def _send_error(self, stream: trio.SocketStream, conn: h11.Connection, log: Logger,
                          method: str, path: str, reply: Answer) -> None:
        """An error answer, then the connection closes (h11 may refuse to send in a state where
        no answer is possible: then it just closes)."""
        self._count(self.stats.requests, str(reply.status))
        if self.limiter.allow(reply.status, time.monotonic()) is not None:
            log.info("http.request", method=method, path=path, status=reply.status,
                     reason=escaped(reply.reason))
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        headers = _with_date([*reply.headers, (b"connection", b"close")])
        with contextlib.suppress(h11.LocalProtocolError, _Stalled):
            await self._send(stream, conn, h11.Response(
                status_code=reply.status, reason=REASONS.get(reply.status, ""), headers=headers))
            await self._send(stream, conn, h11.Data(data=reply.body))
            await self._send(stream, conn, h11.EndOfMessage())

    # -- sending -------------------------------------------------------------------------------
    async def _send(self, stream: trio.SocketStream, conn: h11.Connection,
                    event: h11.Event) -> None:
        data = conn.send(event)
        if data:
            await self._send_bytes(stream, data)

    async def _send_bytes(self, stream: trio.SocketStream, data: bytes) -> None:
        with trio.move_on_after(self.config.send_timeout) as scope:
            await stream.send_all(data)
        if scope.cancelled_caught:
            raise _Stalled

    async def _sendfile(self, stream: trio.SocketStream, span: _Span) -> None:
        """``span`` from the file to the socket by sendfile(2), waiting (at most
        ``send_timeout`` each time) whenever the socket's buffer is full."""
        sock = stream.socket
        offset, remaining = span.offset, span.length
        while remaining:
            try:
                sent = os.sendfile(sock.fileno(), span.file.fd, offset,
                                   min(remaining, SENDFILE_CHUNK))
            except BlockingIOError:
                sent = -1
            except OSError as exc:
                if exc.errno in (errno.EPIPE, errno.ECONNRESET):
                    raise trio.BrokenResourceError from exc
                raise
            if sent == 0:  # the file shrank under us: the client sees a short body
                raise trio.BrokenResourceError("file shorter than announced")
            if sent < 0:
                with trio.move_on_after(self.config.send_timeout) as scope:
                    await trio.lowlevel.wait_writable(sock)
                if scope.cancelled_caught:
                    raise _Stalled
                continue
            offset += sent
            remaining -= sent
            await trio.lowlevel.checkpoint()


def _peer(stream: trio.SocketStream) -> str:
    """The client's address (an IPv4 client on a dual-stack socket as plain IPv4)."""
    try:
        address = str(stream.socket.getpeername()[0])
    except OSError:
        return "?"
    return address.removeprefix("::ffff:") if "." in address else address


def _with_date(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The answer's headers and the ones every response has (Date: RFC 9110 §6.6.1, "An origin
    server with a clock ... MUST generate a Date header field" in a 2xx, 3xx or 4xx)."""
    return [*headers, (b"date", email.utils.formatdate(usegmt=True).encode()), (b"server", SERVER)]


async def serve_http(
    config: HttpConfig, *, metrics: Metrics | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve GET and HEAD of the files under ``config.root`` until cancelled; ``started`` gets
    the bound port; ``metrics`` scrapes this service as ``http``."""
    log = structlog.get_logger().bind(service="http")
    sock = open_tcp(config.port, config.address)
    listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
    port = sock.getsockname()[1]
    server = _Server(config, log)
    async with listener, trio.open_nursery() as nursery:
        log.info("http.listening", address=config.address, port=port, root=config.root)
        task_status.started(port)
        with part(metrics, "http", server.stats.snapshot, FAMILIES):
            await server.accept(listener, nursery)

