"""The DHCP server's trio shell: one UDP socket on port 67, the core called inline, group commit.

A receive thread, as the relay has (relay/service.py): it blocks in recvmsg, drains whatever else
is queued (MSG_DONTWAIT until EAGAIN, at most MAX_BURST) and hands every datagram to the core;
OFFERs and NAKs leave at once. The burst's lease rows are then written in one synced transaction
and only after that are the replies that promised them (ACK, BOOTREPLY) sent: a lease is durable
before its ACK leaves. Whatever arrives while one transaction syncs waits in the kernel's socket
buffer and makes the next burst, so one fsync covers many requests under load; under steady
traffic arriving a packet at a time, ``commit_window`` lets a burst wait that long for company.
The trio thread runs the timers (offer and lease expiry), the summary line and the stop; it
shares the core with the receive thread under a lock.

Why a thread and not a trio task: DHCP requests mostly arrive one at a time, and each wake-up of a
trio task cost some 30 µs of CPU in its scheduler (measured: 45 µs per wake-up against 12 µs for
a thread blocked in recvmsg), more than the core spends on a packet. Why the commit in the receive
thread and not in one of its own: on one CPU, a second Python thread taking batches and sending
the ACKs cost more in GIL hand-offs and context switches than it saved (an fsync is mostly
waiting, and the next burst queues in the kernel meanwhile): 250 against 330 µs of CPU per DORA
at 2,000 DORA/s, 115 against 196 at 9,000 (tests/bench/server_dora.py, same run).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import socket
import sqlite3
import struct
import threading
import time
from collections import Counter
from ipaddress import IPv4Address

import structlog
import trio

from boothop.server.leasestore import LeaseStore, open_store
from boothop.server.reconcile import format_plan, plan_reconcile

from .actions import Commit, Datagram, Drop, DropReason, ReplyKind, Send
from .config import DhcpConfig
from .core import DhcpServerCore

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
_PKTINFO = struct.Struct("=I4s4s")
_ANCILLARY = socket.CMSG_SPACE(_PKTINFO.size)
#: Upper bound of one burst (one transaction): the core's lock is released between bursts, so
#: timers run under a flood.
MAX_BURST = 128
STATS_INTERVAL = 10.0
#: With a commit window: a wake-up this soon after the previous one, bringing at most
#: COALESCE_BELOW datagrams, means steady traffic arriving a packet at a time.
BUSY_GAP = 0.01
COALESCE_BELOW = 4
#: Longest sleep of the timer task: offers and leases expire at most this late.
TIMER_TICK = 1.0
_DROP_LOG_PER_SECOND = 5


def open_socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
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
        # The loaded leases and the configuration live as long as the process: out of the
        # collector's sight, so its full passes do not walk them again and again.
        gc.freeze()
        with open_socket(config.port) as sock:
            port = sock.getsockname()[1]
            log.info("server.listening", port=port, leases=len(core.leases), lease_db=config.lease_db,
                     subnets=[str(s.network) for s in config.subnets],
                     commit_window=config.commit_window)
            task_status.started(port)
            durable = _Durable(store, sock, log)
            receiver = _Receiver(core, durable, sock, log, window=config.commit_window)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_timers, receiver, _Stats(log, receiver.counts, durable.counts))
                await receiver.run()
                nursery.cancel_scope.cancel()
    finally:
        store.close()


class _Durable:
    """Writes lease rows in one synced transaction, then sends the replies that promised them.

    Called by the receive thread after each burst, and by the timer task for expiries: ``lock``
    serialises them on the store.
    """

    def __init__(self, store: LeaseStore, sock: socket.socket,
                 log: structlog.typing.FilteringBoundLogger) -> None:
        self.store, self.sock, self.log = store, sock, log
        self.lock = threading.Lock()
        #: Counted under ``lock``.
        self.counts: Counter[str] = Counter()
        self.per_packet = log.is_enabled_for(logging.DEBUG)

    def commit(self, commits: list[Commit], promises: list[Send]) -> None:
        counts, log = self.counts, self.log
        with self.lock:
            if commits:
                try:
                    self.store.write([c.lease for c in commits])
                except sqlite3.Error as exc:
                    log.error("server.store.failed", error=str(exc), withheld_replies=len(promises))
                    counts["store.failed"] += 1
                    return
                counts["commits"] += 1
                for commit in commits:
                    counts["lease." + commit.event.value] += 1
                    if self.per_packet:
                        lease = commit.lease
                        log.debug("server.lease." + commit.event.value, address=str(lease.address),
                                  chaddr=lease.mac.hex(":"), subnet=lease.subnet)
            for send in promises:
                _send(self.sock, send, log, counts, self.per_packet)


#: Replies that promise a durable binding: they leave only after their commit.
_PROMISES = frozenset({ReplyKind.ACK, ReplyKind.BOOTREPLY})


class _Receiver:
    """The receive thread: block in recvmsg, drain the rest of a burst, call the core inline.

    ``lock`` guards the core: the receive thread holds it while it handles a burst, the trio
    thread while it runs the core's timers.
    """

    def __init__(self, core: DhcpServerCore, durable: _Durable, sock: socket.socket,
                 log: structlog.typing.FilteringBoundLogger, *, window: float = 0.0) -> None:
        self.core, self.durable, self.sock, self.log = core, durable, sock, log
        self.window = window
        self.lock = threading.Lock()
        #: The receive thread's counters (``durable`` keeps its own, under its lock).
        self.counts: Counter[str] = Counter()
        self.stopping = False
        self._drop_log = _DropLog()
        self._per_packet = log.is_enabled_for(logging.DEBUG)
        self._names: dict[int, str] = {}
        self._sources: dict[str, IPv4Address] = {}

    async def run(self) -> None:
        """Run the receive thread until cancelled, then wake it and wait for it to return."""
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
            # (it returns no data and no address).
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RD)

    def serve(self) -> None:
        recvmsg, window, clock = self.sock.recvmsg, self.window, time.monotonic
        last = -1.0
        while not self.stopping:
            try:
                first = recvmsg(4096, _ANCILLARY)
            except OSError as exc:
                self.log.warning("server.receive.failed", error=exc.strerror)
                continue
            if first[3] is None:
                return  # woken by shutdown(SHUT_RD): stopping
            commits: list[Commit] = []
            promises: list[Send] = []
            with self.lock:
                self._handle(first, commits, promises)
                burst = 1 + self._drain(commits, promises)
            woken, last = last, clock()
            if window and burst <= COALESCE_BELOW and last - woken < BUSY_GAP:
                # Steady traffic arriving a packet at a time: let more requests join this burst
                # and its transaction. Fewer wake-ups and syncs, replies up to ``window`` later.
                # Never with a backlog (bursts are larger then), and a lone client never waits.
                time.sleep(window)
                with self.lock:
                    self._drain(commits, promises)
            if commits or promises:
                self.durable.commit(commits, promises)

    def _drain(self, commits: list[Commit], promises: list[Send]) -> int:
        """Handle what is queued on the socket, at most MAX_BURST datagrams: how many."""
        recvmsg = self.sock.recvmsg
        for count in range(MAX_BURST):
            try:
                received = recvmsg(4096, _ANCILLARY, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return count
            except OSError as exc:
                self.log.warning("server.receive.failed", error=exc.strerror)
                return count
            if received[3] is None:
                return count
            self._handle(received, commits, promises)
        return MAX_BURST

    def _handle(self, received: tuple[bytes, list[tuple[int, int, bytes]], int, tuple[str, int]],
                commits: list[Commit], promises: list[Send]) -> None:
        payload, ancillary, _flags, (host, source_port) = received
        ifindex, local = _pktinfo(ancillary)
        ifname = self._names.get(ifindex)
        if ifname is None:
            try:
                ifname = self._names[ifindex] = socket.if_indextoname(ifindex)
            except OSError:
                ifname = self._names[ifindex] = ""
        source = self._sources.get(host)
        if source is None:
            if len(self._sources) >= _ADDRESS_CACHE:
                self._sources.clear()
            source = self._sources[host] = IPv4Address(host)
        now = time.time()
        for action in self.core.handle(Datagram(payload, source, source_port, local, ifindex, ifname), now):
            if type(action) is Send:
                if action.kind in _PROMISES:
                    promises.append(action)
                else:
                    # An OFFER or a NAK promises nothing durable: it need not wait for a sync.
                    _send(self.sock, action, self.log, self.counts, self._per_packet)
            elif type(action) is Commit:
                commits.append(action)
            else:
                assert isinstance(action, Drop)
                self.counts["drop." + action.reason.value] += 1
                if self._drop_log.allow(action.reason, now):
                    self.log.info("server.drop", reason=action.reason.value, detail=action.detail,
                                  source=host, ifname=ifname)

    def on_timer(self) -> tuple[list[Commit], int]:
        """Run the core's timers (from the trio thread): the rows to write, and the lease count."""
        with self.lock:
            commits = [a for a in self.core.on_timer(time.time()) if isinstance(a, Commit)]
            return commits, len(self.core.leases)

    def next_deadline(self) -> float | None:
        with self.lock:
            return self.core.next_deadline()


async def _timers(receiver: _Receiver, stats: _Stats) -> None:
    """Offer and lease expiry (the core's ``on_timer``) and the summary line, at most TIMER_TICK
    late."""
    while True:
        deadline = receiver.next_deadline()
        delay = TIMER_TICK if deadline is None else min(TIMER_TICK, deadline - time.time())
        await trio.sleep(max(0.0, delay))
        commits, leases = receiver.on_timer()
        if commits:
            await trio.to_thread.run_sync(receiver.durable.commit, commits, [])
        stats.maybe_log(leases)


class _Stats:
    """The info-level summary: every counter, every STATS_INTERVAL seconds when any changed.

    Per-packet lines (offer, ack, lease) are debug: at the default level a busy server pays for
    one summary line, not one line per packet.
    """

    def __init__(self, log: structlog.typing.FilteringBoundLogger, *counters: Counter[str]) -> None:
        self.log, self.counters = log, counters
        self.last: dict[str, int] = {}
        self.next = time.monotonic() + STATS_INTERVAL

    def maybe_log(self, leases: int) -> None:
        if time.monotonic() < self.next:
            return
        self.next = time.monotonic() + STATS_INTERVAL
        merged: Counter[str] = Counter()
        for counter in self.counters:
            merged.update(dict(counter))  # dict(): one atomic copy of a counter another thread writes
        if merged != self.last:
            self.last = merged
            self.log.info("server.stats", leases=leases, **merged)


#: Bound of the per-process caches of addresses seen (sources, local addresses).
_ADDRESS_CACHE = 4096
_destinations: dict[IPv4Address, str] = {}
_BROADCAST = IPv4Address("255.255.255.255")


def _send(sock: socket.socket, send: Send, log: structlog.typing.FilteringBoundLogger,
          counts: Counter[str], per_packet: bool) -> None:
    destination = send.destination
    if send.to_chaddr:
        # No packet socket here: broadcast on the client's link instead of unicasting to an
        # address it does not have yet (clients accept either, RFC 2131 §4.1).
        destination = _BROADCAST
    host = _destinations.get(destination)
    if host is None:
        if len(_destinations) >= _ADDRESS_CACHE:
            _destinations.clear()
        host = _destinations[destination] = str(destination)
    # Replies to a client leave by the interface its request came in on; relayed ones are routed.
    pktinfo = _PKTINFO.pack(send.ifindex if send.port != 67 else 0, send.source.packed, bytes(4))
    try:
        sock.sendmsg([send.payload], [(socket.IPPROTO_IP, IP_PKTINFO, pktinfo)], socket.MSG_DONTWAIT,
                     (host, send.port))
    except OSError as exc:
        counts["send.failed"] += 1
        log.warning("server.send.failed", to=f"{host}:{send.port}", error=exc.strerror)
        return
    counts[send.kind.value] += 1
    if per_packet:
        log.debug("server." + send.kind.value.replace("-", "_"), xid=f"{send.message.xid:#010x}",
                  chaddr=send.message.mac, yiaddr=str(send.message.yiaddr),
                  giaddr=str(send.message.giaddr), to=f"{host}:{send.port}")
