"""The TFTP shell: the listener in the shell ring's receive thread, one thread per transfer.

Requests on port 69 go through ``DatagramLoop`` like every daemon's; an admitted request gets
its own socket (RFC 1350 §4: a new TID) and a thread (under a trio task that stops it), blocked
in a read of its connected socket with SO_RCVTIMEO set to the transfer's next deadline: the
peer and the retransmission timer are waited on at once, in one system call, as tftpd-hpa
does. A trio task per transfer (an EAGAIN, epoll_ctl, epoll_wait and a scheduler pass per
block) served lock-step at 0.07-0.18x tftpd-hpa with client and server on different cores
(tests/bench/tftp_throughput.py). The kernel socket buffer is the back-pressure; transfers are
bounded by ``max_transfers``.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import structlog
import trio

from boothop.relay.compiled import Unavailable
from boothop.relay.metrics import Family, Metrics, part
from boothop.relay.shell import (
    DatagramLoop,
    Logger,
    RateLimiter,
    escaped,
    open_peer_udp,
    open_udp,
    send_datagram,
)
from boothop.relay.wire import ZERO, Datagram

from . import native
from .admission import Accepted, Admission, Refused
from .config import TftpConfig
from .native import LockStepLoop
from .paths import create_file, open_file
from .transfer import Address, ReadTransfer
from .write import WriteTransfer

FAMILIES = (
    Family("boothop_server_tftp_transfers_started", "counter", "Transfers started",
           ("started", "{direction}")),
    Family("boothop_server_tftp_transfers_ended", "counter",
           "Transfers ended, per outcome (completed, timed_out, client_error, ...)",
           ("ended", "{direction}", "{outcome}")),
    Family("boothop_server_tftp_bytes", "counter", "File octets sent (read) or received (write)",
           ("bytes", "{direction}")),
)


class _Transfers:
    """Transfers started and ended and octets moved, per direction: counted under the listener's
    lock (which the receive thread holds while a transfer starts)."""

    def __init__(self) -> None:
        self.started: Counter[str] = Counter()
        self.ended: Counter[tuple[str, str]] = Counter()
        self.octets: Counter[str] = Counter()

    def snapshot(self) -> dict[str, Any]:
        ended: dict[str, dict[str, int]] = {}
        for (direction, outcome), count in self.ended.items():
            ended.setdefault(direction, {})[outcome] = count
        return {"started": dict(self.started), "ended": ended, "bytes": dict(self.octets)}


def _direction(transfer: ReadTransfer | WriteTransfer) -> str:
    return "write" if isinstance(transfer, WriteTransfer) else "read"


#: SO_RCVTIMEO is set again only when the wait it should bound is shorter by more than this than
#: the one set (a longer one at worst wakes the thread early, for ``on_timer`` to find nothing
#: due): in lock-step every ACK moves the deadline a whole timeout on, so none is.
_REARM_SLACK = 0.01
_TIMEVAL = struct.Struct("@ll")
#: A read transfer's receive size: an ACK is 4 octets; a longer datagram is cut here (the core
#: reads an ERROR's code and an ACK's block number, both in the first 4). 479 octets and the
#: bytes object's header fit CPython's small-object allocator: 516 took a malloc and a free per
#: block (callgrind: 930 instructions of some 17,000 per block).
_ACK_BUFSIZE = 479


def _arm(sock: socket.socket, seconds: float) -> None:
    """Bound a blocking receive on ``sock`` to ``seconds`` (SO_RCVTIMEO; at least 1 ms, as 0
    would mean for ever)."""
    seconds = max(seconds, 0.001)
    whole = int(seconds)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                    _TIMEVAL.pack(whole, int((seconds - whole) * 1e6)))


def _serve_transfer(
    sock: socket.socket, transfer: ReadTransfer | WriteTransfer, stopping: threading.Event,
    ended: Callable[[], None], lock_step: LockStepLoop | None = None,
) -> None:
    """A transfer's thread: a blocking receive bounded by the transfer's next deadline, the core,
    the sends. Two system calls per block, as tftpd-hpa makes; ``ended`` is called once the
    transfer has an outcome (an upload then dallies, RFC 1350 §6, without holding its slot).

    ``sock`` is connected to the peer (``open_peer_udp``): the kernel delivers only the peer's
    datagrams here, so each is given to the core as the peer's. The ACK of the whole window
    (``expect`` says which, the core's answer to it and the deadline) is answered before the
    core sees it, and the core then sees it in one call (``window_mover``'s), which says the
    same for the next window: in lock-step, one comparison between ``read`` and ``write`` and
    one call into the core per block. With ``lock_step`` (a read of a file in octet mode, the
    loop in C) that comparison, the send and the read ahead are C's for as long as the ACKs
    awaited arrive; what ends its run comes back here as the receive's result. Returns when
    ``stopping`` is set: a receive blocked meanwhile, or entered after it, returns no data at
    once (Linux keeps SHUT_RD on a connected UDP socket)."""
    sock.setblocking(True)
    # read and write on the socket's descriptor: recv and send without flags (SO_RCVTIMEO and
    # SHUT_RD apply alike), through the fast call path (socket.recv and send parse a tuple of
    # arguments per call: 1,100 instructions per block, callgrind).
    fd, read, write, clock = sock.fileno(), os.read, os.write, time.monotonic
    receive, expect, window_acked = transfer.receive, transfer.expect, transfer.window_mover()
    bufsize = _ACK_BUFSIZE if isinstance(transfer, ReadTransfer) else 65536
    window_ack: bytes | None = None  # the ACK of the whole window, the answer, the deadline
    following: list[bytes] = []
    deadline: float | None = None
    acked = False  # the datagram received is window_ack, and following is sent
    rearm_below = math.inf  # SO_RCVTIMEO is set again when the wait gets shorter than this
    now = clock()
    datagrams = transfer.start(now)
    while True:
        for datagram in datagrams:  # to the peer: the socket is connected to it
            try:
                write(fd, datagram)
            except OSError as exc:  # e.g. no route, or ICMP port unreachable: the timer copes
                structlog.get_logger().debug("tftp.send.failed", error=exc.strerror)
        if acked:  # every lock-step ACK: answered above, now the core's one call
            now = clock()
            window_ack, following, deadline = window_acked(now)
            if deadline is not None and now >= deadline:  # ACKs in time, past the time limit
                datagrams, acked = transfer.on_timer(now), False
                continue
        if not acked or window_ack is None:
            if transfer.outcome is not None:
                ended()
                if transfer.done:
                    return
            window_ack, following, deadline = expect()
        wait = 3600.0 if deadline is None else deadline - now
        if wait < rearm_below:  # in lock-step, every ACK moves it a whole timeout on
            _arm(sock, wait)
            rearm_below = wait - _REARM_SLACK
        try:
            if lock_step is None or not following or window_ack is None:
                data = read(fd, bufsize)
            else:
                served, received = lock_step.read()
                if served:  # the core moved on: it says what it awaits next
                    window_ack, deadline = None, transfer.next_deadline()
                if received is None:  # C left the turn to the core (the end, a failure)
                    now, acked = lock_step.now, False
                    window_ack, following, deadline = expect()
                    datagrams = (transfer.on_timer(now)
                                 if deadline is not None and now >= deadline else [])
                    continue
                data = received
        except (BlockingIOError, TimeoutError):  # SO_RCVTIMEO ran out: the deadline
            acked, rearm_below = False, math.inf
            now = clock()
            datagrams = transfer.on_timer(now)
        except ConnectionRefusedError:  # ICMP port unreachable for a send: the timer decides
            acked = False
            now = clock()
            datagrams = []
        else:
            # Sent at once, the clock read after: an ACK past the deadline moves the window on
            # as receive would, and on_timer then finds nothing due but the time limit.
            acked = data == window_ack
            if acked:
                datagrams = following
                continue
            now = clock()
            if not data and stopping.is_set():  # not an empty datagram (malformed): shut down
                return
            datagrams = receive(data, now)
            if deadline is not None and now >= deadline:  # a stream of datagrams past the deadline
                datagrams = datagrams + transfer.on_timer(now)


async def _run_transfer(
    sock: socket.socket, strays: socket.socket, transfer: ReadTransfer | WriteTransfer,
    admission: Admission, lock: threading.Lock, transfers: _Transfers, log: Logger,
    lock_step: native.Serve | None,
) -> None:
    """Run a transfer in a thread of its own (as DatagramLoop runs a receive loop): in lock-step
    every block waits for its ACK, and waking a blocked thread costs less than a trio task's
    wake-up (an EAGAIN, epoll_ctl, epoll_wait and the scheduler per block). ``strays``, on the
    same port, gets every datagram not from the peer: a DatagramLoop answers each with the
    core's error 5. When the server stops, both threads are woken by shutdown(SHUT_RD) and
    waited for. ``lock_step`` is the C loop, if it loaded: a read in lock-step runs in it."""
    started = time.monotonic()
    loop = (LockStepLoop.open(lock_step, sock.fileno(), transfer)
            if isinstance(transfer, ReadTransfer) else None)
    stopping = threading.Event()
    done = threading.Event()

    def ended() -> None:
        if not done.is_set():
            done.set()
            _ended(transfer, admission, lock, transfers, started, log,
                   0 if loop is None else loop.served)

    def answer_stray(datagram: Datagram) -> None:
        source = (str(datagram.source), datagram.source_port)
        try:
            send_datagram(strays, transfer.stray(), source)
        except OSError as exc:
            log.debug("tftp.send.failed", error=exc.strerror, peer=source)

    async def stop_on_cancel() -> None:
        try:
            await trio.sleep_forever()
        finally:
            stopping.set()
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RD)

    try:
        with sock, strays:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(stop_on_cancel)
                nursery.start_soon(DatagramLoop(strays, answer_stray, log=log,
                                                bufsize=65536).run)
                await trio.to_thread.run_sync(_serve_transfer, sock, transfer, stopping, ended,
                                              loop, limiter=trio.CapacityLimiter(1))
                nursery.cancel_scope.cancel()
    finally:
        transfer.close()
        ended()


def _ended(
    transfer: ReadTransfer | WriteTransfer, admission: Admission, lock: threading.Lock,
    transfers: _Transfers, started: float, log: Logger, acks_in_c: int,
) -> None:
    """Release the transfer's slot, count and log it (from its thread, or the trio thread), with
    the ACKs the C loop served."""
    octets = transfer.bytes_sent if isinstance(transfer, ReadTransfer) else transfer.bytes_received
    outcome = transfer.outcome.value if transfer.outcome else "cancelled"
    with lock:  # the listener's thread admits under it
        admission.release(transfer.peer)
        transfers.ended[_direction(transfer), outcome] += 1
        transfers.octets[_direction(transfer)] += octets
    log.info(
        "tftp.transfer.ended",
        outcome=outcome,
        bytes=octets,
        seconds=round(time.monotonic() - started, 3),
        retransmissions=transfer.retransmissions,
        ignored={k.value: v for k, v in transfer.ignored.items() if v},
        acks_in_c=acks_in_c,
    )


class _Listener:
    """The admission core's handler in the listener's receive thread."""

    def __init__(self, config: TftpConfig, nursery: trio.Nursery, log: Logger,
                 lock_step: native.Serve | None) -> None:
        self.config, self.nursery, self.log, self.lock_step = config, nursery, log, lock_step
        self.admission = Admission(config)
        self.opener = functools.partial(open_file, config.root)
        self.creator = (functools.partial(create_file, config.upload_root,
                                          overwrite=config.overwrite)
                        if config.allow_write else None)
        self.refusals = RateLimiter(burst=20, period=1.0)
        #: Held by the receive thread while it admits, and by transfers when they release.
        self.lock = threading.Lock()
        self.transfers = _Transfers()

    def snapshot(self, loop: DatagramLoop) -> dict[str, Any]:
        with self.lock:
            return {**self.transfers.snapshot(), "loops": {loop.port: loop.counters.snapshot()}}

    def handle(self, sock: socket.socket, datagram: Datagram) -> None:
        client = (str(datagram.source), datagram.source_port)
        result = self.admission.admit(datagram.payload, client, self.opener, self.creator)
        if isinstance(result, Refused):
            if self.refusals.allow(result.reason, time.monotonic()) is not None:
                self.log.info("tftp.request.refused", client=client, reason=result.reason.value,
                              detail=escaped(result.detail))
            if result.reply is not None:
                try:
                    send_datagram(sock, result.reply, client)
                except OSError as exc:  # the client retransmits its request
                    self.log.debug("tftp.send.failed", error=exc.strerror, peer=client)
            return
        local = str(datagram.local) if datagram.local != ZERO else self.config.address
        try:
            # RFC 1350 §4: each end chooses a new TID (port) for the transfer, from the address
            # the request was sent to so the client sees the answer come from the server it asked.
            # The transfer's socket is connected to the client; a second one on its port
            # receives the strays.
            sockets = open_peer_udp(local, client)
        except OSError as exc:
            # Here, in the receive thread that holds ``lock``: not in the trio thread, which
            # would wait for the lock while this thread waits for it (a deadlock).
            self.admission.release(client)
            result.transfer.close()
            self.log.warning("tftp.transfer.socket_failed", error=str(exc))
            return
        trio.from_thread.run_sync(_start_transfer, self.nursery, sockets, result, client,
                                  self.admission, self.lock, self.transfers, self.log,
                                  self.lock_step)


async def serve_tftp(
    config: TftpConfig, *, metrics: Metrics | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve read (and, if enabled, write) requests until cancelled.

    ``task_status.started`` gets the bound port; ``metrics`` scrapes this service as ``tftp``.
    """
    log = structlog.get_logger().bind(service="tftp")
    try:
        lock_step: native.Serve | None = native.load()
    except (Unavailable, OSError) as error:
        lock_step = None
        log.warning("tftp.lock_step_in_python", reason=str(error),
                    note="read transfers in lock-step run in Python, slower")
    with open_udp(config.port, config.address, broadcast=False) as sock:
        port = sock.getsockname()[1]
        async with trio.open_nursery() as nursery:
            listener = _Listener(config, nursery, log, lock_step)
            loop = DatagramLoop(sock, functools.partial(listener.handle, sock), log=log,
                                lock=listener.lock, bufsize=65536)
            log.info("tftp.listening", address=config.address, port=port, root=config.root,
                     write_root=config.upload_root if config.allow_write else None)
            task_status.started(port)
            with part(metrics, "tftp", functools.partial(listener.snapshot, loop), FAMILIES):
                await loop.run()


def _start_transfer(
    nursery: trio.Nursery, sockets: tuple[socket.socket, socket.socket], accepted: Accepted,
    client: Address,
    admission: Admission, lock: threading.Lock, transfers: _Transfers, log: Logger,
    lock_step: native.Serve | None,
) -> None:
    request, transfer = accepted.request, accepted.transfer
    transfer_log = log.bind(client=f"{client[0]}:{client[1]}", filename=escaped(request.filename),
                            mode=request.mode, blksize=transfer.params.blksize,
                            direction=_direction(transfer),
                            windowsize=transfer.params.windowsize)
    transfer_log.info("tftp.transfer.started")
    transfers.started[_direction(transfer)] += 1  # the receive thread holds ``lock`` meanwhile
    nursery.start_soon(_run_transfer, *sockets, transfer, admission, lock, transfers,
                       transfer_log, lock_step)
