"""The DHCP server's trio shell: one UDP socket on port 67, the core called inline, group commit.

Each wake-up drains the socket (non-blocking recvmsg until BlockingIOError), hands every datagram
to the core, writes all lease rows of the burst in one synced transaction, and only then sends the
replies: a lease is durable before its ACK leaves, and one fsync covers the whole burst.
"""

from __future__ import annotations

import socket
import sqlite3
import struct
import time
from collections import Counter
from ipaddress import IPv4Address

import structlog
import trio

from server.leasestore import LeaseStore, open_store
from server.reconcile import format_plan, plan_reconcile

from .actions import Commit, Datagram, DropReason, Send
from .config import DhcpConfig
from .core import DhcpServerCore

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
_PKTINFO = struct.Struct("=I4s4s")
_ANCILLARY = socket.CMSG_SPACE(_PKTINFO.size)
#: Upper bound of one burst, so timers and other tasks still run under a flood.
MAX_BURST = 256
STATS_INTERVAL = 60.0
_DROP_LOG_PER_SECOND = 5


def open_socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.setblocking(False)
    sock.bind(("0.0.0.0", port))
    return sock


def _pktinfo(ancillary: list[tuple[int, int, bytes]]) -> tuple[int, IPv4Address]:
    for level, kind, data in ancillary:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= _PKTINFO.size:
            ifindex, spec_dst, _ = _PKTINFO.unpack_from(data)
            return ifindex, IPv4Address(spec_dst)
    return 0, IPv4Address(0)


class _DropLog:
    """At most a few log lines per reason per second: a remote party can trigger drops."""

    def __init__(self) -> None:
        self.window: dict[DropReason, tuple[int, int]] = {}

    def allow(self, reason: DropReason, now: float) -> bool:
        second, count = self.window.get(reason, (int(now), 0))
        if second != int(now):
            second, count = int(now), 0
        self.window[reason] = (second, count + 1)
        return count < _DROP_LOG_PER_SECOND


def startup_reconcile(config: DhcpConfig, store: LeaseStore, log: structlog.typing.FilteringBoundLogger) -> None:
    plan = plan_reconcile(config, store.load(), time.time())
    for finding in plan.findings:
        log.warning("server.reconcile.fixed", address=str(finding.address), problem=finding.problem,
                    action=finding.action)
    if plan.changes:
        store.delete(plan.deletes)
        store.write(plan.upserts)
    log.info("server.reconcile.done", summary=format_plan(plan, dry_run=False).splitlines()[0])


async def serve_dhcp(config: DhcpConfig, *, pxe_colocated: bool = False,
                     task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve until cancelled; ``task_status.started`` gets the bound port."""
    log = structlog.get_logger().bind(service="dhcp")
    store = open_store(config.lease_db)
    try:
        startup_reconcile(config, store, log)
        core = DhcpServerCore(config, store.load(), pxe_colocated=pxe_colocated)
        with open_socket(config.port) as sock:
            port = sock.getsockname()[1]
            log.info("server.listening", port=port, leases=len(core.leases), lease_db=config.lease_db,
                     subnets=[str(s.network) for s in config.subnets])
            task_status.started(port)
            await _loop(core, store, sock, log)
    finally:
        store.close()


async def _loop(core: DhcpServerCore, store: LeaseStore, sock: socket.socket,
                log: structlog.typing.FilteringBoundLogger) -> None:
    counts: Counter[str] = Counter()
    drop_log = _DropLog()
    names: dict[int, str] = {}
    next_stats = time.monotonic() + STATS_INTERVAL
    while True:
        commits: list[Commit] = []
        sends: list[tuple[Send, Datagram]] = []
        received = 0
        while received < MAX_BURST:
            try:
                payload, ancillary, _flags, (host, source_port) = sock.recvmsg(4096, _ANCILLARY)
            except BlockingIOError:
                break
            except OSError as exc:
                log.warning("server.receive.failed", error=exc.strerror)
                break
            received += 1
            ifindex, local = _pktinfo(ancillary)
            if ifindex not in names:
                try:
                    names[ifindex] = socket.if_indextoname(ifindex)
                except OSError:
                    names[ifindex] = ""
            dgram = Datagram(payload, IPv4Address(host), source_port, local, ifindex, names[ifindex])
            now = time.time()
            for action in core.handle(dgram, now):
                if isinstance(action, Commit):
                    commits.append(action)
                elif isinstance(action, Send):
                    sends.append((action, dgram))
                else:
                    counts[f"drop.{action.reason.value}"] += 1
                    if drop_log.allow(action.reason, now):
                        log.info("server.drop", reason=action.reason.value, detail=action.detail,
                                 source=host, ifname=names[ifindex])
        deadline = core.next_deadline()
        if deadline is not None and deadline <= time.time():
            commits.extend(a for a in core.on_timer(time.time()) if isinstance(a, Commit))
        if commits:
            try:
                # Group commit: one transaction, synced, for every lease change of this burst.
                await trio.to_thread.run_sync(store.write, [c.lease for c in commits])
            except sqlite3.Error as exc:
                log.error("server.store.failed", error=str(exc), withheld_replies=len(sends))
                counts["store.failed"] += 1
                sends = []
            for commit in commits:
                lease = commit.lease
                counts[f"lease.{commit.event.value}"] += 1
                log.debug("server.lease." + commit.event.value, address=str(lease.address),
                          chaddr=lease.mac.hex(":"), subnet=lease.subnet)
        for send, dgram in sends:
            _send(sock, send, log, counts)
            counts[send.kind.value] += 1
            log.info("server." + send.kind.value.replace("-", "_"), xid=f"{send.message.xid:#010x}",
                     chaddr=send.message.mac, yiaddr=str(send.message.yiaddr),
                     giaddr=str(send.message.giaddr), to=f"{send.destination}:{send.port}")
        if time.monotonic() >= next_stats:
            next_stats = time.monotonic() + STATS_INTERVAL
            log.info("server.stats", leases=len(core.leases), **dict(counts))
        if received >= MAX_BURST:
            await trio.lowlevel.checkpoint()
            continue
        deadline = core.next_deadline()
        wake = trio.current_time() + max(0.0, deadline - time.time()) if deadline is not None else float("inf")
        with trio.move_on_at(min(wake, trio.current_time() + STATS_INTERVAL)):
            await trio.lowlevel.wait_readable(sock)


def _send(sock: socket.socket, send: Send, log: structlog.typing.FilteringBoundLogger,
          counts: Counter[str]) -> None:
    destination = send.destination
    if send.to_chaddr:
        # No packet socket here: broadcast on the client's link instead of unicasting to an
        # address it does not have yet (clients accept either, RFC 2131 §4.1).
        destination = IPv4Address("255.255.255.255")
    # Replies to a client leave by the interface its request came in on; relayed ones are routed.
    pktinfo = _PKTINFO.pack(send.ifindex if send.port != 67 else 0, send.source.packed, bytes(4))
    try:
        sock.sendmsg([send.payload], [(socket.IPPROTO_IP, IP_PKTINFO, pktinfo)],
                       0, (str(destination), send.port))
    except OSError as exc:
        counts["send.failed"] += 1
        log.warning("server.send.failed", to=f"{destination}:{send.port}", error=exc.strerror)
