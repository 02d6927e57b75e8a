"""The DHCP server's trio shell: one UDP socket on port 67, the core called inline, group commit.

Each wake-up drains the socket (non-blocking recvmsg until BlockingIOError) and hands every
datagram to the core. OFFERs and NAKs leave at once; lease rows go to the group committer, which
writes everything queued in one synced transaction and only then sends the ACKs that depend on it:
a lease is durable before its ACK leaves, one fsync covers every request that arrived meanwhile,
and the socket is read while the disk syncs.
"""

from __future__ import annotations

import logging
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

from .actions import Commit, Datagram, DropReason, ReplyKind, Send
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


_pktinfos: dict[bytes, tuple[int, IPv4Address]] = {}


def _pktinfo(ancillary: list[tuple[int, int, bytes]]) -> tuple[int, IPv4Address]:
    """(ifindex, ipi_spec_dst); the few distinct values are cached, not rebuilt per packet."""
    for level, kind, data in ancillary:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= _PKTINFO.size:
            key = data[:8]
            found = _pktinfos.get(key)
            if found is None:
                if len(_pktinfos) >= 256:
                    _pktinfos.clear()
                ifindex, spec_dst, _ = _PKTINFO.unpack_from(data)
                found = _pktinfos[key] = (ifindex, IPv4Address(spec_dst))
            return found
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
            counts: Counter[str] = Counter()
            committer = _GroupCommit(store, sock, log, counts)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(committer.run)
                await _loop(core, committer, sock, log, counts)
    finally:
        store.close()


class _GroupCommit:
    """Makes lease rows durable in batches, then sends the replies that promised them.

    The receive loop hands each burst's commits and promises (ACK, BOOTREPLY) here and goes on
    receiving while a batch is being written and synced: a slow fsync delays ACKs, never the
    reading of the socket, and everything that arrived meanwhile shares the next sync. Batches are
    written in order, and a promise is sent only after the batch holding every commit handed in
    before it (its own included) has returned from the store.
    """

    def __init__(self, store: LeaseStore, sock: socket.socket,
                 log: structlog.typing.FilteringBoundLogger, counts: Counter[str]) -> None:
        self.store, self.sock, self.log, self.counts = store, sock, log, counts
        self.commits: list[Commit] = []
        self.promises: list[Send] = []
        self._work = trio.Event()
        self._done = trio.Event()
        self.per_packet = log.is_enabled_for(logging.DEBUG)

    def add(self, commits: list[Commit], promises: list[Send]) -> None:
        self.commits.extend(commits)
        self.promises.extend(promises)
        self._work.set()

    async def wait_below(self, limit: int) -> None:
        """Back-pressure: wait while more than ``limit`` rows are queued (the disk is behind)."""
        while len(self.commits) > limit:
            await self._done.wait()

    async def run(self) -> None:
        while True:
            await self._work.wait()
            self._work = trio.Event()
            while self.commits or self.promises:
                commits, promises = self.commits, self.promises
                self.commits, self.promises = [], []
                await self._write(commits, promises)
                self._done.set()
                self._done = trio.Event()

    async def _write(self, commits: list[Commit], promises: list[Send]) -> None:
        if commits:
            try:
                await trio.to_thread.run_sync(self.store.write, [c.lease for c in commits])
            except sqlite3.Error as exc:
                self.log.error("server.store.failed", error=str(exc), withheld_replies=len(promises))
                self.counts["store.failed"] += 1
                return
            for commit in commits:
                self.counts[f"lease.{commit.event.value}"] += 1
                if self.per_packet:
                    lease = commit.lease
                    self.log.debug("server.lease." + commit.event.value, address=str(lease.address),
                                   chaddr=lease.mac.hex(":"), subnet=lease.subnet)
        for send in promises:
            _send(self.sock, send, self.log, self.counts)


#: Rows queued behind a running commit before the receive loop stops reading (the kernel's
#: socket buffer then holds the rest).
MAX_QUEUED_COMMITS = 8192
#: Replies that promise a durable binding: they leave only after their commit.
_PROMISES = frozenset({ReplyKind.ACK, ReplyKind.BOOTREPLY})


async def _loop(core: DhcpServerCore, committer: _GroupCommit, sock: socket.socket,
                log: structlog.typing.FilteringBoundLogger, counts: Counter[str]) -> None:
    drop_log = _DropLog()
    names: dict[int, str] = {}
    sources: dict[str, IPv4Address] = {}
    next_stats = time.monotonic() + STATS_INTERVAL
    while True:
        commits: list[Commit] = []
        promises: list[Send] = []
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
            source = sources.get(host)
            if source is None:
                if len(sources) >= _ADDRESS_CACHE:
                    sources.clear()
                source = sources[host] = IPv4Address(host)
            dgram = Datagram(payload, source, source_port, local, ifindex, names[ifindex])
            now = time.time()
            for action in core.handle(dgram, now):
                if isinstance(action, Commit):
                    commits.append(action)
                elif isinstance(action, Send):
                    if action.kind in _PROMISES:
                        promises.append(action)
                    else:
                        # An OFFER or a NAK promises nothing durable: it need not wait for a sync.
                        _send(sock, action, log, counts)
                else:
                    counts[f"drop.{action.reason.value}"] += 1
                    if drop_log.allow(action.reason, now):
                        log.info("server.drop", reason=action.reason.value, detail=action.detail,
                                 source=host, ifname=names[ifindex])
        deadline = core.next_deadline()
        if deadline is not None and deadline <= time.time():
            commits.extend(a for a in core.on_timer(time.time()) if isinstance(a, Commit))
        if commits or promises:
            committer.add(commits, promises)
        if time.monotonic() >= next_stats:
            next_stats = time.monotonic() + STATS_INTERVAL
            log.info("server.stats", leases=len(core.leases), **dict(counts))
        await committer.wait_below(MAX_QUEUED_COMMITS)
        if received >= MAX_BURST:
            await trio.lowlevel.checkpoint()
            continue
        deadline = core.next_deadline()
        wake = trio.current_time() + max(0.0, deadline - time.time()) if deadline is not None else float("inf")
        with trio.move_on_at(min(wake, trio.current_time() + STATS_INTERVAL)):
            await trio.lowlevel.wait_readable(sock)


#: Bound of the per-process caches of addresses seen (sources, local addresses).
_ADDRESS_CACHE = 4096
_destinations: dict[IPv4Address, str] = {}


def _send(sock: socket.socket, send: Send, log: structlog.typing.FilteringBoundLogger,
          counts: Counter[str]) -> None:
    destination = send.destination
    if send.to_chaddr:
        # No packet socket here: broadcast on the client's link instead of unicasting to an
        # address it does not have yet (clients accept either, RFC 2131 §4.1).
        destination = IPv4Address("255.255.255.255")
    host = _destinations.get(destination)
    if host is None:
        if len(_destinations) >= _ADDRESS_CACHE:
            _destinations.clear()
        host = _destinations[destination] = str(destination)
    # Replies to a client leave by the interface its request came in on; relayed ones are routed.
    pktinfo = _PKTINFO.pack(send.ifindex if send.port != 67 else 0, send.source.packed, bytes(4))
    try:
        sock.sendmsg([send.payload], [(socket.IPPROTO_IP, IP_PKTINFO, pktinfo)], 0, (host, send.port))
    except OSError as exc:
        counts["send.failed"] += 1
        log.warning("server.send.failed", to=f"{host}:{send.port}", error=exc.strerror)
        return
    counts[send.kind.value] += 1
    if log.is_enabled_for(logging.INFO):
        log.info("server." + send.kind.value.replace("-", "_"), xid=f"{send.message.xid:#010x}",
                 chaddr=send.message.mac, yiaddr=str(send.message.yiaddr),
                 giaddr=str(send.message.giaddr), to=f"{host}:{send.port}")
