"""The proxyDHCP shell: sockets on 67 (unless co-located) and 4011, answers via the core.

Each socket has its own receive thread of the shell ring (``DatagramLoop``); the core is called
inline. IP_PKTINFO tells which interface and address a broadcast arrived on, and the answer goes
back out of that interface from that address.
"""

from __future__ import annotations

import functools
import socket
import threading
import time
from typing import Any

import structlog
import trio

from boothop.relay.metrics import Family, Metrics, part
from boothop.relay.shell import DatagramLoop, Logger, RateLimiter, open_udp, send_datagram
from boothop.relay.wire import Datagram

from .config import PxeConfig
from .proxy import Drop, Dropped, handle

STATS_INTERVAL = 300.0

FAMILIES = (
    Family("boothop_server_pxe_replies", "counter", "proxyDHCP replies sent", ("replies",)),
    Family("boothop_server_pxe_dropped", "counter", "proxyDHCP requests dropped, per reason",
           ("dropped", "{reason}")),
)


class _Responder:
    """The core's handler for every proxyDHCP socket; counters shared under one lock."""

    def __init__(self, config: PxeConfig, log: Logger) -> None:
        self.config, self.log = config, log
        self.lock = threading.Lock()
        self.replies = 0
        self.drops: dict[Drop, int] = dict.fromkeys(Drop, 0)
        self.limiter = RateLimiter(burst=20, period=1.0)

    def snapshot(self) -> dict[str, int]:
        drops = {f"drop.{k.value}": v for k, v in self.drops.items() if v}
        return {"replies": self.replies, **drops}

    def metrics(self, loops: list[DatagramLoop]) -> dict[str, Any]:
        with self.lock:
            return {"replies": self.replies,
                    "dropped": {k.value: v for k, v in self.drops.items()},
                    "loops": {loop.port: loop.counters.snapshot() for loop in loops}}

    def loop(self, sock: socket.socket) -> DatagramLoop:
        return DatagramLoop(sock, lambda datagram: self.handle(sock, datagram), log=self.log,
                            lock=self.lock)

    def handle(self, sock: socket.socket, datagram: Datagram) -> None:
        result = handle(datagram, self.config)
        now = time.monotonic()
        if isinstance(result, Dropped):
            self.drops[result.reason] += 1
            # Other DHCP traffic is none of our business: counted, never logged per packet.
            if (result.reason is not Drop.NOT_PXE_CLIENT
                    and self.limiter.allow(("drop", result.reason), now) is not None):
                self.log.info("pxe.drop", reason=result.reason.value, detail=result.detail,
                              source=f"{datagram.source}:{datagram.source_port}")
            return
        self.replies += 1
        try:
            send_datagram(sock, result.payload, result.to, result.ifindex, datagram.local)
        except OSError as exc:  # includes a full send buffer: the client retransmits
            self.log.warning("pxe.send.failed", error=exc.strerror, to=result.to)
            return
        if self.limiter.allow("sent", now) is not None:
            self.log.info("pxe.reply.sent", to=f"{result.to[0]}:{result.to[1]}",
                          port=datagram.port, ifindex=result.ifindex)


async def serve_proxydhcp(
    config: PxeConfig, *, metrics: Metrics | None = None,
    task_status: trio.TaskStatus[dict[int, int]] = trio.TASK_STATUS_IGNORED
) -> None:
    """Answer PXE clients until cancelled.

    ``task_status.started`` gets {configured port: bound port} (port 0 binds an ephemeral one);
    ``metrics`` scrapes this service as ``pxe``.
    """
    log = structlog.get_logger().bind(service="pxe")
    # Co-located: the DHCP server on this host owns port 67 (PXE spec 2.1 §2.2.2).
    ports = [config.pxe_port] if config.colocated else [config.port, config.pxe_port]
    sockets: list[socket.socket] = []
    try:
        for port in ports:
            sockets.append(open_udp(port, config.address))
        bound = {port: sock.getsockname()[1] for port, sock in zip(ports, sockets, strict=True)}
        responder = _Responder(config, log)
        loops = [responder.loop(sock) for sock in sockets]
        async with trio.open_nursery() as nursery:
            for loop in loops:
                nursery.start_soon(loop.run)
            log.info("pxe.listening", address=config.address, ports=list(bound.values()),
                     colocated=config.colocated)
            task_status.started(bound)
            with part(metrics, "pxe", functools.partial(responder.metrics, loops), FAMILIES):
                while True:
                    await trio.sleep(STATS_INTERVAL)
                    with responder.lock:
                        log.info("pxe.stats", **responder.snapshot())
    finally:
        for sock in sockets:
            sock.close()
