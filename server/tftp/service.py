"""The TFTP shell: the listener in the shell ring's receive thread, one trio task per transfer.

Requests on port 69 go through ``DatagramLoop`` like every daemon's; an admitted request gets
its own socket (RFC 1350 §4: a new TID) and a trio task, because a transfer waits on its peer
and on its retransmission timer at once, which a task with a deadline does cheaply and a thread
per transfer would not. A transfer's socket is drained until BlockingIOError, then
``trio.lowlevel.wait_readable``: about 7 µs per packet, against about 50 µs when awaiting a trio
socket call per packet. The kernel socket buffer is the back-pressure.
"""

from __future__ import annotations

import functools
import socket
import threading
import time
from collections import Counter
from typing import Any

import structlog
import trio

from boothop.relay.metrics import Family, Metrics, part
from boothop.relay.shell import (
    DatagramLoop,
    Logger,
    RateLimiter,
    escaped,
    open_udp,
    send_datagram,
)
from boothop.relay.wire import ZERO, Datagram

from .admission import Accepted, Admission, Refused
from .config import TftpConfig
from .paths import create_file, open_file
from .transfer import Address, ReadTransfer, Send
from .write import WriteTransfer

#: Packets handled in a row before yielding to other tasks, so one busy socket cannot starve them.
FAIRNESS_BATCH = 64

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


async def _send(sock: socket.socket, sends: list[Send]) -> None:
    for send in sends:
        while True:
            try:
                sock.sendto(send.data, send.to)
                break
            except BlockingIOError:
                await trio.lowlevel.wait_writable(sock)
            except OSError as exc:  # e.g. no route: the retransmission timer copes
                structlog.get_logger().debug("tftp.send.failed", error=exc.strerror, peer=send.to)
                break


async def _run_transfer(
    sock: socket.socket, transfer: ReadTransfer | WriteTransfer, admission: Admission,
    lock: threading.Lock, transfers: _Transfers, log: Logger,
) -> None:
    started = trio.current_time()
    ended = False
    try:
        with sock:
            await _send(sock, transfer.start(started))
            handled = 0
            while not transfer.done:
                if transfer.outcome is not None and not ended:
                    # An upload that has ended dallies (RFC 1350 §6) without holding its slot.
                    ended = True
                    _ended(transfer, admission, lock, transfers, started, log)
                handled += 1
                if handled % FAIRNESS_BATCH == 0:
                    await trio.lowlevel.checkpoint()
                try:
                    data, source = sock.recvfrom(65536)
                except BlockingIOError:
                    with trio.move_on_at(transfer.next_deadline() or trio.current_time()):
                        await trio.lowlevel.wait_readable(sock)
                    await _send(sock, transfer.on_timer(trio.current_time()))
                    continue
                await _send(sock, transfer.receive(data, source, trio.current_time()))
    finally:
        transfer.close()
        if not ended:
            _ended(transfer, admission, lock, transfers, started, log)


def _ended(
    transfer: ReadTransfer | WriteTransfer, admission: Admission, lock: threading.Lock,
    transfers: _Transfers, started: float, log: Logger,
) -> None:
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
        seconds=round(trio.current_time() - started, 3),
        retransmissions=transfer.retransmissions,
        ignored={k.value: v for k, v in transfer.ignored.items() if v},
    )


class _Listener:
    """The admission core's handler in the listener's receive thread."""

    def __init__(self, config: TftpConfig, nursery: trio.Nursery, log: Logger) -> None:
        self.config, self.nursery, self.log = config, nursery, log
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
            sock = open_udp(0, local, broadcast=False, pktinfo=False, receive_queue=0)
        except OSError as exc:
            # Here, in the receive thread that holds ``lock``: not in the trio thread, which
            # would wait for the lock while this thread waits for it (a deadlock).
            self.admission.release(client)
            result.transfer.close()
            self.log.warning("tftp.transfer.socket_failed", error=str(exc))
            return
        trio.from_thread.run_sync(_start_transfer, self.nursery, sock, result, client,
                                  self.admission, self.lock, self.transfers, self.log)


async def serve_tftp(
    config: TftpConfig, *, metrics: Metrics | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve read (and, if enabled, write) requests until cancelled.

    ``task_status.started`` gets the bound port; ``metrics`` scrapes this service as ``tftp``.
    """
    log = structlog.get_logger().bind(service="tftp")
    with open_udp(config.port, config.address, broadcast=False) as sock:
        port = sock.getsockname()[1]
        async with trio.open_nursery() as nursery:
            listener = _Listener(config, nursery, log)
            loop = DatagramLoop(sock, functools.partial(listener.handle, sock), log=log,
                                lock=listener.lock, bufsize=65536)
            log.info("tftp.listening", address=config.address, port=port, root=config.root,
                     write_root=config.upload_root if config.allow_write else None)
            task_status.started(port)
            with part(metrics, "tftp", functools.partial(listener.snapshot, loop), FAMILIES):
                await loop.run()


def _start_transfer(
    nursery: trio.Nursery, sock: socket.socket, accepted: Accepted, client: Address,
    admission: Admission, lock: threading.Lock, transfers: _Transfers, log: Logger,
) -> None:
    request, transfer = accepted.request, accepted.transfer
    transfer_log = log.bind(client=f"{client[0]}:{client[1]}", filename=escaped(request.filename),
                            mode=request.mode, blksize=transfer.params.blksize,
                            direction=_direction(transfer),
                            windowsize=transfer.params.windowsize)
    transfer_log.info("tftp.transfer.started")
    transfers.started[_direction(transfer)] += 1  # the receive thread holds ``lock`` meanwhile
    nursery.start_soon(_run_transfer, sock, transfer, admission, lock, transfers, transfer_log)
