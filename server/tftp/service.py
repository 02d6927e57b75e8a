"""The TFTP trio shell: a listening socket, and one socket (one task) per transfer.

Sockets are plain non-blocking sockets drained until BlockingIOError, then
``trio.lowlevel.wait_readable``: about 7 µs per packet, against about 50 µs when awaiting a trio
socket call per packet. The kernel socket buffer is the back-pressure.
"""

from __future__ import annotations

import contextlib
import functools
import socket

import structlog
import trio

from boothop.server.udp import FAIRNESS_BATCH, IP_PKTINFO, RateLimit, datagrams, escaped, pktinfo

from .admission import Accepted, Admission, Refused
from .config import TftpConfig
from .paths import create_file, open_file
from .transfer import Address, ReadTransfer, Send
from .write import WriteTransfer

#: Packets handled in a row before yielding to other tasks, so one busy socket cannot starve them.
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


def _udp_socket(address: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.bind((address, port))
    except OSError:
        sock.close()
        raise
    return sock


async def _run_transfer(
    sock: socket.socket, transfer: ReadTransfer | WriteTransfer, admission: Admission,
    log: structlog.BoundLogger,
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
                    _ended(transfer, admission, started, log)
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
            _ended(transfer, admission, started, log)


def _ended(
    transfer: ReadTransfer | WriteTransfer, admission: Admission, started: float,
    log: structlog.BoundLogger,
) -> None:
    admission.release(transfer.peer)
    octets = transfer.bytes_sent if isinstance(transfer, ReadTransfer) else transfer.bytes_received
    log.info(
        "tftp.transfer.ended",
        outcome=transfer.outcome.value if transfer.outcome else "cancelled",
        bytes=octets,
        seconds=round(trio.current_time() - started, 3),
        retransmissions=transfer.retransmissions,
        ignored={k.value: v for k, v in transfer.ignored.items() if v},
    )


async def serve_tftp(
    config: TftpConfig, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve read (and, if enabled, write) requests until cancelled.

    ``task_status.started`` gets the bound port.
    """
    log = structlog.get_logger().bind(service="tftp")
    listener = _udp_socket(config.address, config.port)
    listener.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
    port = listener.getsockname()[1]
    admission = Admission(config)
    opener = functools.partial(open_file, config.root)
    creator = (functools.partial(create_file, config.upload_root, overwrite=config.overwrite)
               if config.allow_write else None)
    refusals = RateLimit()
    with listener:
        async with trio.open_nursery() as nursery:
            log.info("tftp.listening", address=config.address, port=port, root=config.root,
                     write_root=config.upload_root if config.allow_write else None)
            task_status.started(port)
            received = datagrams(listener, 65536, log, "tftp.receive.failed")
            async with contextlib.aclosing(received):
                async for data, ancdata, client in received:
                    result = admission.admit(data, client, opener, creator)
                    if isinstance(result, Refused):
                        if refusals.allow():
                            log.info("tftp.request.refused", client=client,
                                     reason=result.reason.value, detail=escaped(result.detail))
                        if result.reply is not None:
                            await _send(listener, [Send(result.reply, client)])
                        continue
                    info = pktinfo(ancdata)
                    local = info[1] if info else config.address
                    _start_transfer(nursery, result, client, local, admission, log)


def _start_transfer(
    nursery: trio.Nursery, accepted: Accepted, client: Address, local: str,
    admission: Admission, log: structlog.BoundLogger,
) -> None:
    request, transfer = accepted.request, accepted.transfer
    try:
        # RFC 1350 §4: each end chooses a new TID (port) for the transfer, from the address the
        # request was sent to so the client sees the answer come from the server it asked.
        sock = _udp_socket(local, 0)
    except OSError as exc:
        admission.release(client)
        log.warning("tftp.transfer.socket_failed", error=exc.strerror)
        return
    transfer_log = log.bind(client=f"{client[0]}:{client[1]}", filename=escaped(request.filename),
                            mode=request.mode, blksize=transfer.params.blksize,
                            direction="write" if isinstance(transfer, WriteTransfer) else "read",
                            windowsize=transfer.params.windowsize)
    transfer_log.info("tftp.transfer.started")
    nursery.start_soon(_run_transfer, sock, transfer, admission, transfer_log)
