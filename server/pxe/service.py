"""The proxyDHCP trio shell: sockets on 67 (unless co-located) and 4011, answers via the core.

Each socket is drained until BlockingIOError, then ``trio.lowlevel.wait_readable``; the core is
called inline. IP_PKTINFO tells which interface and address a broadcast arrived on, and sends
the answer back out of that interface from that address.
"""

from __future__ import annotations

import contextlib
import socket
from ipaddress import IPv4Address

import structlog
import trio

from boothop.server.udp import IP_PKTINFO, RateLimit, datagrams, pktinfo, pktinfo_cmsg

from .config import PxeConfig
from .proxy import Datagram, Drop, Dropped, handle

STATS_INTERVAL = 300.0


def _socket(address: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        sock.setblocking(False)
        sock.bind((address, port))
    except OSError:
        sock.close()
        raise
    return sock


class _Counters:
    def __init__(self) -> None:
        self.replies = 0
        self.drops: dict[Drop, int] = {reason: 0 for reason in Drop}

    def snapshot(self) -> dict[str, int]:
        drops = {f"drop.{k.value}": v for k, v in self.drops.items() if v}
        return {"replies": self.replies, **drops}


async def _serve_socket(
    sock: socket.socket,
    port: int,
    config: PxeConfig,
    counters: _Counters,
    log: structlog.BoundLogger,
) -> None:
    limit = RateLimit()
    async with contextlib.aclosing(datagrams(sock, 4096, log, "pxe.receive.failed")) as received:
        async for data, ancdata, source in received:
            ifindex, local = pktinfo(ancdata) or (0, config.address)
            result = handle(Datagram(data, source, port, IPv4Address(local), ifindex), config)
            if isinstance(result, Dropped):
                counters.drops[result.reason] += 1
                # Other DHCP traffic is none of our business: counted, never logged per packet.
                if result.reason is not Drop.NOT_PXE_CLIENT and limit.allow():
                    log.info("pxe.drop", reason=result.reason.value, detail=result.detail,
                             source=source)
                continue
            counters.replies += 1
            try:
                sock.sendmsg([result.payload], [pktinfo_cmsg(result.ifindex, local)], 0, result.to)
            except OSError as exc:  # includes a full send buffer: the client retransmits
                log.warning("pxe.send.failed", error=exc.strerror, to=result.to)
                continue
            if limit.allow():
                log.info("pxe.reply.sent", to=f"{result.to[0]}:{result.to[1]}", port=port,
                         ifindex=result.ifindex)


async def serve_proxydhcp(
    config: PxeConfig, *, task_status: trio.TaskStatus[dict[int, int]] = trio.TASK_STATUS_IGNORED
) -> None:
    """Answer PXE clients until cancelled.

    ``task_status.started`` gets {configured port: bound port} (port 0 binds an ephemeral one).
    """
    log = structlog.get_logger().bind(service="pxe")
    # Co-located: the DHCP server on this host owns port 67 (PXE spec 2.1 §2.2.2).
    ports = [config.pxe_port] if config.colocated else [config.port, config.pxe_port]
    sockets: list[socket.socket] = []
    try:
        for port in ports:
            sockets.append(_socket(config.address, port))
        bound = {port: sock.getsockname()[1] for port, sock in zip(ports, sockets)}
        counters = _Counters()
        async with trio.open_nursery() as nursery:
            for port, sock in zip(ports, sockets):
                nursery.start_soon(_serve_socket, sock, port, config, counters, log)
            log.info("pxe.listening", address=config.address, ports=list(bound.values()),
                     colocated=config.colocated)
            task_status.started(bound)
            while True:
                await trio.sleep(STATS_INTERVAL)
                log.info("pxe.stats", **counters.snapshot())
    finally:
        for sock in sockets:
            sock.close()
