"""The DHCPv6 server's shell: one UDP socket on [::]:547, the core called inline, group commit.

As the IPv4 server's (``server/dhcp/service.py``): the shell ring's receive thread hands each
datagram of a burst to the core; Advertises and other replies that promise nothing leave at
once, and the burst's bindings are written in one synced transaction (the leases6 table of the
same store) before the Replies that announce them are sent. A write that fails withholds those
Replies and rolls the core back. Direct clients are heard on the interfaces named by the subnets
(ff02::1:2 joined there); relays reach the socket by unicast. The trio thread runs the timers.
"""

from __future__ import annotations

import socket
import sqlite3
import threading
import time
import uuid
from collections import Counter
from typing import Any

import structlog
import trio

from boothop.relay.metrics import Family, Metrics, part
from boothop.relay.settings import DaemonError
from boothop.relay.shell import (
    DatagramLoop,
    Logger,
    RateLimiter,
    address_text,
    errno_name,
    join_group,
    logging_enabled,
    open_udp,
    send_datagram6,
)
from boothop.relay.wire import Datagram6
from boothop.relay.wire.dhcpv6 import ALL_RELAY_AGENTS_AND_SERVERS, MessageType6
from boothop.server.leasestore import LeaseStore, open_store
from boothop.server.reconcile import format_plan, plan_reconcile6

from .actions import Action6, Commit6, Drop6, Send6
from .config import Dhcp6Config
from .core import Dhcp6ServerCore

MAX_BURST = 128
#: Longest sleep of the timer task: offers and bindings expire at most this late.
TIMER_TICK = 1.0

FAMILIES = (
    Family("boothop_server_dhcp6_replies", "counter", "DHCPv6 replies sent, per message type",
           ("replies", "{kind}")),
    Family("boothop_server_dhcp6_dropped", "counter", "DHCPv6 messages dropped, per reason",
           ("dropped", "{reason}")),
    Family("boothop_server_dhcp6_lease_events", "counter", "Bindings committed, per event",
           ("lease_events", "{event}")),
    Family("boothop_server_dhcp6_store_failures", "counter", "Binding transactions that failed",
           ("store_failures",)),
    Family("boothop_server_dhcp6_send_failures", "counter", "Replies that could not be sent",
           ("send_failures",)),
    Family("boothop_server_dhcp6_leases", "gauge", "Active bindings, per subnet",
           ("subnets", "{subnet}", "leases")),
)


def host_duid() -> bytes:
    """A DUID-UUID (RFC 6355) named after the host: the same across restarts, without a
    file to keep and whatever interfaces come and go."""
    return b"\x00\x04" + uuid.uuid5(uuid.NAMESPACE_DNS, f"boothop:{socket.gethostname()}").bytes


def interface_subnets(config: Dhcp6Config) -> dict[int, str]:
    """Interface index -> subnet name, for the subnets that serve direct clients."""
    found = {}
    for index, subnet in enumerate(config.subnets):
        if subnet.interface is None:
            continue
        try:
            found[socket.if_nametoindex(subnet.interface)] = subnet.name
        except OSError:
            raise DaemonError(f"dhcp6.subnets[{index}].interface: no interface "
                              f"{subnet.interface!r} on this host") from None
    return found


class _Server6:
    """The core's handler in the receive loop, and the burst's group commit."""

    def __init__(self, core: Dhcp6ServerCore, store: LeaseStore, sock: socket.socket,
                 log: Logger) -> None:
        self.core, self.store, self.sock, self.log = core, store, sock, log
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.limiter = RateLimiter(burst=5, period=1.0)
        self._commits: list[Commit6] = []
        self._promises: list[Send6] = []
        self.steps = logging_enabled(log, "info")

    def handle(self, dgram: Datagram6) -> None:
        """One datagram through the core (receive thread, under ``lock``)."""
        now = time.time()
        actions = self.core.handle(dgram, now)
        committed = any(type(a) is Commit6 for a in actions)
        for action in actions:
            if type(action) is Send6:
                if committed:
                    self._promises.append(action)
                else:
                    self._send(action)
            elif type(action) is Commit6:
                self._commits.append(action)
            else:
                assert isinstance(action, Drop6)
                self.counts["drop." + action.reason.value] += 1
                if self.limiter.allow(action.reason, now) is not None:
                    self.log.info("server6.drop", reason=action.reason.value,
                                  detail=action.detail, source=address_text(dgram.source),
                                  ifindex=dgram.ifindex)

    def after_burst(self, count: int) -> None:
        """The burst's bindings, durable, then the Replies that announce them."""
        with self.lock:
            commits, promises = self._commits, self._promises
            self._commits, self._promises = [], []
        self.commit(commits, promises)

    def commit(self, commits: list[Commit6], promises: list[Send6]) -> None:
        if commits:
            try:
                self.store.write6([c.lease for c in commits])
            except sqlite3.Error as exc:
                with self.lock:
                    self.core.rollback(commits)
                    self.counts["store.failed"] += 1
                self.log.error("server6.store.failed", error=str(exc),
                               withheld_replies=len(promises),
                               note="no Reply without a durable binding; clients retry")
                return
            with self.lock:
                for commit in commits:
                    self.counts["lease." + commit.event.value] += 1
        for send in promises:
            self._send(send)

    def _send(self, send: Send6) -> None:
        kind = MessageType6(send.message_type).name.lower()
        try:
            send_datagram6(self.sock, send.payload, send.destination, send.port, send.ifindex,
                           send.source)
        except OSError as error:
            self.counts["send.failed"] += 1
            if self.limiter.allow(("send", errno_name(error)), time.monotonic()) is not None:
                self.log.warning("server6.send.failed", error=errno_name(error),
                                 destination=address_text(send.destination))
            return
        self.counts["reply." + kind] += 1
        if self.steps:  # built only when written: a line costs about as much as the decision
            self.log.info("server6.reply", kind=kind, to=address_text(send.destination),
                          port=send.port,
                          addresses=[address_text(a) for a in send.addresses])

    def on_timer(self) -> None:
        with self.lock:
            actions: list[Action6] = self.core.on_timer(time.time())
        self.commit([a for a in actions if isinstance(a, Commit6)], [])

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            counts = self.counts.copy()
            subnets = self.core.usage(time.time())

        def prefixed(prefix: str) -> dict[str, int]:
            return {k.removeprefix(prefix): v for k, v in counts.items() if k.startswith(prefix)}

        return {"replies": prefixed("reply."), "dropped": prefixed("drop."),
                "lease_events": prefixed("lease."), "store_failures": counts["store.failed"],
                "send_failures": counts["send.failed"], "subnets": subnets}


async def _timers(server: _Server6) -> None:
    while True:
        await trio.sleep(TIMER_TICK)
        await trio.to_thread.run_sync(server.on_timer)


async def serve_dhcp6(config: Dhcp6Config, *, metrics: Metrics | None = None,
                      task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve until cancelled; ``metrics`` scrapes this service as the part ``dhcp6``."""
    log = structlog.get_logger().bind(service="dhcp6")
    interfaces = interface_subnets(config)
    store = open_store(config.lease_db)
    try:
        plan = plan_reconcile6(config, store.load6(), time.time())
        if plan.changes:
            store.write6(plan.upserts, plan.deletes)
            log.info("server6.reconcile.done", summary=format_plan(plan, False).splitlines()[0])
        server_duid = config.server_duid or host_duid()
        core = Dhcp6ServerCore(config, server_duid, store.load6(), interfaces=interfaces)
        if (problem := store.prepare_to_serve()) is not None:
            log.warning("server.store.not_prepared", lease_db=config.lease_db, problem=problem)
        with open_udp(config.port, "::", family=socket.AF_INET6) as sock:
            for index in interfaces:
                # RFC 8415 §7.1: clients send to All_DHCP_Relay_Agents_and_Servers, ff02::1:2.
                join_group(sock, ALL_RELAY_AGENTS_AND_SERVERS, index)
            server = _Server6(core, store, sock, log)
            loop = DatagramLoop(sock, server.handle, log=log, lock=server.lock, burst=MAX_BURST,
                                after_burst=server.after_burst)
            log.info("server6.listening", port=sock.getsockname()[1], leases=len(core.leases),
                     lease_db=config.lease_db, server_duid=server_duid.hex(":"),
                     subnets=[s.name for s in config.subnets])
            task_status.started()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_timers, server)
                with part(metrics, "dhcp6", server.snapshot, FAMILIES):
                    await loop.run()
                nursery.cancel_scope.cancel()
    finally:
        store.close()
