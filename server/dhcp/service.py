"""The DHCP server's shell: one UDP socket on port 67, the core called inline, group commit.

The shell ring's receive thread (``boothop.relay.shell.DatagramLoop``, as the relay uses it)
blocks in recvmsg, drains whatever else is queued (at most MAX_BURST) and hands every datagram
to the core;
OFFERs and NAKs leave at once. The burst's lease rows are then written in one synced transaction
and only after that are the replies that promised them (ACK, BOOTREPLY) sent: a lease is durable
before its ACK leaves. Whatever arrives while one transaction syncs waits in the kernel's socket
buffer and makes the next burst, so one fsync covers many requests under load; under steady
traffic arriving a packet at a time, ``commit_window`` lets a burst wait that long for company,
as long as such waits find some.
The trio thread runs the timers (offer and lease expiry), the summary line and the stop; it
shares the core with the receive thread under a lock.

Why the commit in the receive
thread and not in one of its own: on one CPU, a second Python thread taking batches and sending
the ACKs cost more in GIL hand-offs and context switches than it saved (an fsync is mostly
waiting, and the next burst queues in the kernel meanwhile): 250 against 330 µs of CPU per DORA
at 2,000 DORA/s, 115 against 196 at 9,000 (tests/bench/server_dora.py, same run).
"""

from __future__ import annotations

import gc
import socket
import sqlite3
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from ipaddress import IPv4Address
from typing import Any

import structlog
import trio

from boothop.relay.metrics import BATCH_BUCKETS, COMMIT_BUCKETS, Family, Histogram, Metrics, part
from boothop.relay.settings import DaemonError
from boothop.relay.shell import (
    DatagramLoop,
    Logger,
    RateLimiter,
    address_text,
    open_udp,
    per_packet_logging,
    send_datagram,
)
from boothop.relay.wire import Datagram
from boothop.server.leasestore import LeaseStore, open_store
from boothop.server.reconcile import Plan, format_plan, plan_reconcile

from .actions import Commit, CommitEvent, Drop, ReplyKind, Send
from .config import DhcpConfig
from .core import DhcpServerCore

#: Upper bound of one burst (one transaction): the core's lock is released between bursts, so
#: timers run under a flood.
MAX_BURST = 128
STATS_INTERVAL = 10.0
#: With a commit window: a commit this soon after the previous one, of a burst of at most
#: COALESCE_BELOW datagrams, means steady traffic arriving a packet at a time.
BUSY_GAP = 0.01
COALESCE_BELOW = 4
#: A wait in the commit window costs the receive thread one more wake-up (on this machine some
#: 45 µs of CPU). It pays for it when it catches a datagram, which then needs no wake-up of its
#: own, and more when that brings a lease row to share the synced commit. After WAITS_IN_VAIN
#: waits in a row caught nothing (steady traffic spaced wider than the window: a client every
#: 2 ms against a 1 ms window) the receiver stops waiting, but for every PROBE_EVERY-th commit
#: that would have waited; a wait that catches something starts it again.
WAITS_IN_VAIN = 3
PROBE_EVERY = 16
#: Longest sleep of the timer task: offers and leases expire at most this late.
TIMER_TICK = 1.0
#: Shortest sleep of the timer task. Under steady load an offer or a lease ends every few hundred
#: µs (a DISCOVER's offer stays in the timers after its REQUEST): waking the trio thread for each
#: cost a scheduler pass and a lock hand-off apiece; this many seconds' worth are handled at once.
TIMER_GRAIN = 0.05

#: The DHCP server's metrics, read from ``_snapshot`` (the counters of the server.stats line).
FAMILIES = (
    Family("boothop_server_dhcp_replies", "counter", "DHCP replies sent, per kind",
           ("replies", "{kind}")),
    Family("boothop_server_dhcp_dropped", "counter", "DHCP requests dropped, per reason",
           ("dropped", "{reason}")),
    Family("boothop_server_dhcp_send_failures", "counter", "Replies that could not be sent",
           ("send_failures",)),
    Family("boothop_server_dhcp_lease_events", "counter", "Lease rows committed, per event",
           ("lease_events", "{event}")),
    Family("boothop_server_dhcp_commits", "counter", "Lease transactions committed",
           ("commits",)),
    Family("boothop_server_dhcp_store_failures", "counter", "Lease transactions that failed",
           ("store_failures",)),
    Family("boothop_server_dhcp_leases", "gauge", "Active (bound, unexpired) leases",
           ("subnets", "{subnet}", "leases")),
    Family("boothop_server_dhcp_pool_used", "gauge", "Pool addresses taken (leased or declined)",
           ("subnets", "{subnet}", "pool_used")),
    Family("boothop_server_dhcp_pool_size", "gauge", "Addresses in the subnet's pools",
           ("subnets", "{subnet}", "pool_size")),
    Family("boothop_server_dhcp_commit_seconds", "histogram",
           "One synced lease transaction (the ACKs of its burst wait for it)",
           ("commit_seconds",)),
    Family("boothop_server_dhcp_commit_batch", "histogram", "Lease rows per transaction",
           ("commit_batch",)),
    Family("boothop_server_dhcp_commit_waits", "counter",
           "Commit-window waits: caught a datagram, caught none, or skipped (waits were not "
           "catching any)", ("commit_waits", "{outcome}")),
)
#: The outcomes of a commit that could wait in the window, as counted (``commit_waits``).
WAIT_OUTCOMES = ("caught", "in_vain", "skipped")


def startup_reconcile(config: DhcpConfig, store: LeaseStore, log: Logger) -> None:
    """Bring the database in line with the configuration before serving; logged only once
    written, so the log never reports a repair that did not happen."""
    plan = plan_reconcile(config, store.load(), time.time())
    if plan.changes:
        try:
            store.write(plan.upserts, plan.deletes)
        except sqlite3.Error as error:
            raise DaemonError(f"lease database {config.lease_db}: the startup reconcile cannot "
                              f"be written ({error}); nothing was changed") from error
    _log_plan(log, plan)


def _log_plan(log: Logger, plan: Plan) -> None:
    for finding in plan.findings:
        log.warning("server.reconcile.fixed", address=str(finding.address), problem=finding.problem,
                    action=finding.action)
    log.info("server.reconcile.done", summary=format_plan(plan, dry_run=False).splitlines()[0])


class DhcpService:
    """The running DHCP service as the runner sees it: reload and counters."""

    def __init__(self, receiver: _Receiver, stats: _Stats, log: Logger) -> None:
        self.receiver, self.stats, self.log = receiver, stats, log

    def reload(self, config: DhcpConfig) -> bool:
        """Swap in ``config`` (a worker thread): the live lease table is reconciled against it and
        the changes written first; if they cannot be, the running configuration stays."""
        receiver, durable = self.receiver, self.receiver.durable
        # Both locks: no burst is handled meanwhile, and none being written is half-planned.
        with receiver.lock, durable.lock:
            core = receiver.core
            plan = plan_reconcile(config, list(core.leases.values()), time.time())
            if plan.changes:
                try:
                    durable.store.write(plan.upserts, plan.deletes)
                except sqlite3.Error as error:
                    self.log.error("server.config.reload_failed", error=str(error),
                                   reason="the reconciled leases cannot be written",
                                   note="keeping the running configuration")
                    return False
                # A burst handled before the reload and not yet written was planned under
                # the old configuration (it may bind an address reserved now): not written.
                durable.generation += 1
            core.reconfigure(config, plan.upserts, plan.deletes)
            receiver.window = config.commit_window
            leases = len(core.leases)
        _log_plan(self.log, plan)
        self.log.info("server.dhcp.reconfigured", leases=leases,
                      subnets=[str(s.network) for s in config.subnets])
        return True

    def log_counters(self) -> None:
        self.stats.log_now(self.receiver.lease_count())


async def serve_dhcp(config: DhcpConfig, *, pxe_colocated: bool = False,
                     metrics: Metrics | None = None,
                     task_status: trio.TaskStatus[DhcpService] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve until cancelled; ``task_status.started`` gets the running service. ``metrics``: the
    daemon's registry, scraping this service as the part ``dhcp``."""
    log = structlog.get_logger().bind(service="dhcp")
    store = open_store(config.lease_db)
    try:
        startup_reconcile(config, store, log)
        core = DhcpServerCore(config, store.load(), pxe_colocated=pxe_colocated)
        if (problem := store.prepare_to_serve()) is not None:
            log.warning("server.store.not_prepared", lease_db=config.lease_db, problem=problem)
        # The loaded leases and the configuration live as long as the process: out of the
        # collector's sight, so its full passes do not walk them again and again.
        gc.freeze()
        with open_udp(config.port) as sock:
            port = sock.getsockname()[1]
            log.info(
                "server.listening",
                port=port,
                leases=len(core.leases),
                lease_db=config.lease_db,
                subnets=[str(s.network) for s in config.subnets],
                commit_window=config.commit_window,
            )
            durable = _Durable(store, sock, log)
            receiver = _Receiver(core, durable, sock, log, window=config.commit_window)
            stats = _Stats(log, receiver.counts.copy, durable.counts.copy,
                           receiver.loop.counters.snapshot)
            task_status.started(DhcpService(receiver, stats, log))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_timers, receiver, stats)
                with part(metrics, "dhcp", lambda: _snapshot(receiver, durable), FAMILIES):
                    await receiver.loop.run()
                nursery.cancel_scope.cancel()
    finally:
        store.close()


def _snapshot(receiver: _Receiver, durable: _Durable) -> dict[str, Any]:
    """The counters of both threads (each copied under its lock), the leases and pools, the
    commit histograms: what a scrape reads."""
    with receiver.lock:
        counts = Counter(receiver.counts)
        subnets = receiver.core.usage(time.time())
        loop = receiver.loop.counters.snapshot()
    with durable.lock:
        counts.update(durable.counts)
        commit_seconds, commit_batch = durable.seconds.snapshot(), durable.batch.snapshot()

    def prefixed(prefix: str) -> dict[str, int]:
        return {k.removeprefix(prefix): v for k, v in counts.items() if k.startswith(prefix)}

    return {
        "replies": {kind.value: counts[kind.value] for kind in ReplyKind},
        "dropped": prefixed("drop."),
        "send_failures": counts["send.failed"],
        "lease_events": prefixed("lease."),
        "commits": counts["commits"],
        "store_failures": counts["store.failed"],
        "subnets": subnets,
        "commit_seconds": commit_seconds,
        "commit_batch": commit_batch,
        "commit_waits": {outcome: counts["wait." + outcome] for outcome in WAIT_OUTCOMES},
        "loops": {receiver.loop.port: loop},
    }


class _Durable:
    """Writes lease rows in one synced transaction, then sends the replies that promised them.

    Called by the receive thread after each burst, and by the timer task for expiries: ``lock``
    serialises them on the store.
    """

    def __init__(self, store: LeaseStore, sock: socket.socket,
                 log: Logger) -> None:
        self.store, self.sock, self.log = store, sock, log
        self.lock = threading.Lock()
        #: Counted under ``lock``. A defaultdict, not a Counter: Counter defines ``__delitem__``,
        #: which sends every ``counts[key] += 1`` through a Python-level slot (about 900
        #: instructions; four per DORA).
        self.counts: defaultdict[str, int] = defaultdict(int)
        #: Per committed transaction: how long its write and sync took, and its rows.
        self.seconds = Histogram(COMMIT_BUCKETS)
        self.batch = Histogram(BATCH_BUCKETS)
        self.per_packet = per_packet_logging(log)
        #: Writes failed since the last that succeeded: the next that succeeds says so.
        self.failing = 0
        #: Incremented by a reload that changed leases (under ``lock``).
        self.generation = 0
        self._fail_log = RateLimiter(burst=5, period=10.0)

    def commit(self, commits: list[Commit], promises: list[Send], generation: int) -> bool:
        """Whether the rows were written (the promises then sent); if not, nothing was sent.

        ``generation``: ``self.generation`` when the rows were decided; a reload since makes them
        stale."""
        counts, log = self.counts, self.log
        with self.lock:
            if commits and generation != self.generation:
                counts["store.stale"] += 1
                return False
            if commits:
                started = time.monotonic()
                try:
                    self.store.write([c.lease for c in commits])
                except sqlite3.Error as exc:
                    counts["store.failed"] += 1
                    self.failing += 1
                    suppressed = self._fail_log.allow("store", time.monotonic())
                    if suppressed is not None:
                        log.error("server.store.failed", error=str(exc), suppressed=suppressed,
                                  withheld_replies=len(promises),
                                  note="no ACK without a durable lease; clients retry")
                    return False
                if self.failing:
                    log.info("server.store.recovered", failed_writes=self.failing)
                    self.failing = 0
                self.seconds.observe(time.monotonic() - started)
                self.batch.observe(len(commits))
                counts["commits"] += 1
                for commit in commits:
                    counts[_LEASE_COUNTERS[commit.event]] += 1
                    if self.per_packet:
                        lease = commit.lease
                        log.debug("server.lease." + commit.event.value, address=str(lease.address),
                                  chaddr=lease.mac.hex(":"), subnet=lease.subnet)
            for send in promises:
                _send(self.sock, send, log, counts, self.per_packet)
        return True


#: The counters' names (``Enum.value`` is a Python property, read for every packet otherwise).
_REPLY_COUNTERS = {kind: kind.value for kind in ReplyKind}
_LEASE_COUNTERS = {event: "lease." + event.value for event in CommitEvent}
#: Replies that promise a durable binding: they leave only after their commit.
_PROMISES = (ReplyKind.ACK, ReplyKind.BOOTREPLY)  # a tuple: identity, no Enum.__hash__


class _Receiver:
    """The core's handler in the shell ring's receive loop, and the burst's group commit.

    ``lock`` guards the core: the receive thread holds it while it handles a burst, the trio
    thread while it runs the core's timers.
    """

    def __init__(self, core: DhcpServerCore, durable: _Durable, sock: socket.socket,
                 log: Logger, *, window: float = 0.0) -> None:
        self.core, self.durable, self.sock, self.log = core, durable, sock, log
        self.window = window
        self.lock = threading.Lock()
        #: The receive thread's counters (``durable`` keeps its own, under its lock): a
        #: defaultdict, as ``_Durable.counts``.
        self.counts: defaultdict[str, int] = defaultdict(int)
        self.loop = DatagramLoop(sock, self.handle, log=log, lock=self.lock, burst=MAX_BURST,
                                 after_burst=self.after_burst, names=True)
        self._drop_log = RateLimiter(burst=5, period=1.0)
        self._per_packet = per_packet_logging(log)
        #: The current burst's lease rows and the replies that wait for them.
        self._commits: list[Commit] = []
        self._promises: list[Send] = []
        #: The durable generation when the burst's first row was decided.
        self.burst_generation = durable.generation
        #: When the last burst with something to commit was committed (monotonic).
        self._committed = -1.0
        #: Window waits in a row that caught no datagram (see WAITS_IN_VAIN), and the
        #: commits that would have waited since the last wait.
        self.waits_in_vain = 0
        self._skipped = 0
        # Counted in after_burst, outside ``lock``: made here, so that no key is added while a
        # scrape copies the counters under it.
        for outcome in WAIT_OUTCOMES:
            self.counts["wait." + outcome] = 0

    def handle(self, dgram: Datagram) -> None:
        """One datagram through the core (receive thread, under ``lock``)."""
        now = time.time()
        for action in self.core.handle(dgram, now):
            if type(action) is Send:
                if action.kind in _PROMISES:
                    self._promises.append(action)
                else:
                    # An OFFER or a NAK promises nothing durable: it need not wait for a sync.
                    _send(self.sock, action, self.log, self.counts, self._per_packet)
            elif type(action) is Commit:
                if not self._commits:
                    self.burst_generation = self.durable.generation
                self._commits.append(action)
            else:
                assert isinstance(action, Drop)
                self.counts["drop." + action.reason.value] += 1
                if self._drop_log.allow(action.reason, now) is not None:
                    self.log.info("server.drop", reason=action.reason.value, detail=action.detail,
                                  source=str(dgram.source), ifname=dgram.ifname)

    def after_burst(self, count: int) -> None:
        """Commit the burst's leases, then send the replies that promised them."""
        if not self._commits and not self._promises:
            return  # OFFERs and NAKs have left already: nothing waits for a sync
        previous, self._committed = self._committed, time.monotonic()
        if (self.window and count <= COALESCE_BELOW and self._committed - previous < BUSY_GAP
                and self._worth_waiting()):
            # Commits in a steady stream, a few requests each, and waiting has been catching
            # company: let more requests join this transaction. Fewer syncs, ACKs up to
            # ``window`` later. Never with a backlog (bursts are larger then), and never for a
            # lone client: its DISCOVER commits nothing, so its REQUEST is the first commit in
            # a while.
            time.sleep(self.window)
            if self.loop.drain(MAX_BURST):
                self.waits_in_vain = 0
                self.counts["wait.caught"] += 1
            else:
                self.waits_in_vain += 1
                self.counts["wait.in_vain"] += 1
        commits, promises = self.take_burst()
        self.commit(commits, promises, self.burst_generation)

    def _worth_waiting(self) -> bool:
        """Whether this commit waits in the window: while waits catch company, and every
        PROBE_EVERY-th time regardless."""
        if self.waits_in_vain < WAITS_IN_VAIN or self._skipped + 1 >= PROBE_EVERY:
            self._skipped = 0
            return True
        self._skipped += 1
        self.counts["wait.skipped"] += 1
        return False

    def commit(self, commits: list[Commit], promises: list[Send], generation: int) -> None:
        """Make the rows durable and send their promises; if the store fails (or a reload made
        them stale), the core forgets the rows again, so memory and disk agree and the clients'
        retries start afresh."""
        if not self.durable.commit(commits, promises, generation):
            with self.lock:
                self.core.rollback(commits)

    def take_burst(self) -> tuple[list[Commit], list[Send]]:
        """The burst's lease rows and held replies, leaving the next burst empty."""
        burst = self._commits, self._promises
        self._commits, self._promises = [], []
        return burst

    def on_timer(self) -> tuple[list[Commit], int, int]:
        """Run the core's timers (from the trio thread): the rows to write, their generation and
        the lease count."""
        with self.lock:
            commits = [a for a in self.core.on_timer(time.time()) if isinstance(a, Commit)]
            return commits, self.durable.generation, len(self.core.leases)

    def next_deadline(self) -> float | None:
        with self.lock:
            return self.core.next_deadline()

    def lease_count(self) -> int:
        with self.lock:
            return len(self.core.leases)


async def _timers(receiver: _Receiver, stats: _Stats) -> None:
    """Offer and lease expiry (the core's ``on_timer``) and the summary line, at most TIMER_TICK
    late."""
    while True:
        deadline = receiver.next_deadline()
        delay = TIMER_TICK if deadline is None else min(TIMER_TICK, deadline - time.time())
        await trio.sleep(max(TIMER_GRAIN, delay))
        commits, generation, leases = receiver.on_timer()
        if commits:
            await trio.to_thread.run_sync(receiver.commit, commits, [], generation)
        stats.maybe_log(leases)


class _Stats:
    """The info-level summary: every counter, every STATS_INTERVAL seconds when any changed.

    Per-packet lines (offer, ack, lease) are debug: at the default level a busy server pays for
    one summary line, not one line per packet.
    """

    def __init__(self, log: Logger, *counters: Callable[[], Mapping[str, int]]) -> None:
        """``counters`` give a copy of each thread's counters (one atomic copy each)."""
        self.log, self.counters = log, counters
        self.last: Counter[str] = Counter()
        self.next = time.monotonic() + STATS_INTERVAL

    def maybe_log(self, leases: int) -> None:
        if time.monotonic() < self.next:
            return
        self.next = time.monotonic() + STATS_INTERVAL
        merged = self._merged()
        if merged != self.last:
            self.log_now(leases, merged)

    def log_now(self, leases: int, merged: Counter[str] | None = None) -> None:
        """Log every counter now (SIGUSR1; ``maybe_log`` when one changed)."""
        self.last = self._merged() if merged is None else merged
        self.log.info("server.stats", leases=leases, **self.last)

    def _merged(self) -> Counter[str]:
        merged: Counter[str] = Counter()
        for counter in self.counters:
            merged.update({name: value for name, value in counter().items() if value})
        return merged


_BROADCAST = IPv4Address("255.255.255.255")


def _send(sock: socket.socket, send: Send, log: Logger, counts: defaultdict[str, int],
          per_packet: bool) -> None:
    destination = send.destination
    if send.to_chaddr:
        # No packet socket here: broadcast on the client's link instead of unicasting to an
        # address it does not have yet (clients accept either, RFC 2131 §4.1).
        destination = _BROADCAST
    host = address_text(destination)
    try:
        send_datagram(sock, send.payload, (host, send.port), send.ifindex, send.source)
    except OSError as exc:
        counts["send.failed"] += 1
        log.warning("server.send.failed", to=f"{host}:{send.port}", error=exc.strerror)
        return
    counts[_REPLY_COUNTERS[send.kind]] += 1
    if per_packet:
        message = send.message
        log.debug("server." + send.kind.value.replace("-", "_"), xid=f"{message.xid:#010x}",
                  chaddr=message.mac, yiaddr=str(message.yiaddr), giaddr=str(message.giaddr),
                  to=f"{host}:{send.port}")
