"""The DHCPv6 relay (RFC 8415 §19): the sans-IO Relay6Engine wired to the shell ring.

One AF_INET6 socket on port 547 receives clients' and lower relays' messages (ff02::1:2, joined
on each client-facing interface as netlink reports it) and servers' Relay-replies; the shell's
receive thread calls ``Relay6Service.handle`` inline, which runs the engine, sends what it says
(``shell.send_datagram6``: out of the interface it names) and counts and logs as the IPv4
service does. It runs beside the IPv4 relay in one process, or alone (dhcrelay -6).
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import threading
import time
from collections.abc import Callable
from ipaddress import IPv6Address
from pathlib import Path
from typing import Any

import structlog
import trio

from . import metrics
from .actions import Deliver6, Drop, Forward6, Outcome6
from .config import Relay6Config
from .configfile import RelaySettings
from .counters import ShellCounters
from .engine6 import Relay6Engine
from .interfaces import InterfaceTable
from .metrics import Family, Metrics
from .netlink import follow_interfaces
from .settings import Listen
from .shell import (
    DAEMON_SIGNALS,
    DatagramLoop,
    RateLimiter,
    address_text,
    errno_name,
    join_group,
    logging_enabled,
    open_udp,
    reload_config,
    send_datagram6,
    set_log_level,
    signal_loop,
    write_json,
)
from .wire import Datagram6
from .wire.dhcpv6 import ALL_RELAY_AGENTS_AND_SERVERS, SERVER_PORT_V6

#: How often the stats file is refreshed when a counter changed (as the IPv4 relay's).
STATS_FILE_PERIOD = 0.25

log = structlog.get_logger("relay6")

FAMILIES6 = (
    Family("boothop_relay6_received", "counter", "DHCPv6 datagrams received on port 547",
           ("received",)),
    Family("boothop_relay6_requests", "counter",
           "Client messages and Relay-forwards received", ("requests",)),
    Family("boothop_relay6_replies", "counter", "Relay-replies received", ("replies",)),
    Family("boothop_relay6_forwarded", "counter", "Relay-forwards sent, per server",
           ("forwarded", "{server}")),
    Family("boothop_relay6_delivered", "counter", "Replies delivered, per peer kind",
           ("delivered", "{mode}")),
    Family("boothop_relay6_dropped", "counter", "DHCPv6 datagrams dropped, per reason",
           ("dropped", "{reason}")),
    Family("boothop_relay6_send_errors", "counter", "Failed DHCPv6 sends, per errno",
           ("send_errors", "{error}")),
)


class Relay6Service:
    """The running DHCPv6 relay: its engine, socket, memberships, counters and logger."""

    def __init__(self, engine: Relay6Engine, sock: socket.socket) -> None:
        self.engine = engine
        self.sock = sock
        self.shell = ShellCounters()
        self.limiter = RateLimiter()
        self.lock = threading.Lock()
        self.loop = DatagramLoop(sock, self.receive, log=log, lock=self.lock)
        self.loops = [self.loop]
        #: Interface indexes where ff02::1:2 is joined.
        self.joined: set[int] = set()
        self.bind_logger()

    def bind_logger(self) -> None:
        self.log = log.bind()
        self.loop.log = self.log
        self.steps = logging_enabled(self.log, "info")

    # -- per packet --------------------------------------------------------------------------
    def receive(self, datagram: Datagram6) -> None:
        self.handle(datagram, time.monotonic())

    def handle(self, datagram: Datagram6, now: float) -> None:
        outcome = self.engine.handle(datagram, now)
        for action in outcome.actions:
            if isinstance(action, Forward6):
                self._send(action.payload, action.server, 547, action.ifindex, now)
            elif isinstance(action, Deliver6):
                self._send(action.payload, action.destination, action.port, action.ifindex, now)
        if self.steps:
            self._log_outcome(datagram, outcome, now)

    def _send(self, payload: bytes, destination: IPv6Address, port: int, ifindex: int,
              now: float) -> None:
        try:
            send_datagram6(self.sock, payload, destination, port, ifindex)
        except OSError as error:
            name = errno_name(error)
            self.shell.send_errors[name] += 1
            if self.limiter.allow(("send", name), now) is not None:
                self.log.warning("relay6.send.failed", error=name,
                                 destination=address_text(destination), port=port)

    def _log_outcome(self, datagram: Datagram6, outcome: Outcome6, now: float) -> None:
        servers = [address_text(a.server) for a in outcome.actions if isinstance(a, Forward6)]
        packet = None
        log = self.log
        for action in outcome.actions:
            if isinstance(action, Forward6):
                continue
            suppressed = 0
            if isinstance(action, Drop):
                allowed = self.limiter.allow(("drop", action.reason), now)
                if allowed is None:
                    continue
                suppressed = allowed
            packet = packet or self._context(datagram, outcome)
            if isinstance(action, Deliver6):
                log.info("relay6.reply.delivered", **packet, mode=action.mode.value,
                         ifname=action.ifname, destination=address_text(action.destination),
                         port=action.port)
            elif isinstance(action, Drop):
                log.info("relay6.drop", **packet, reason=action.reason.value,
                         detail=action.detail, suppressed=suppressed)
        if servers:
            log.info("relay6.request.forwarded", **(packet or self._context(datagram, outcome)),
                     servers=servers, hop_count=outcome.hop_count,
                     link_address=None if outcome.link_address is None
                     else address_text(outcome.link_address))

    def _context(self, datagram: Datagram6, outcome: Outcome6) -> dict[str, Any]:
        """A packet's context for its step lines: passed with each line rather than bound, which
        would build a logger per packet (as the IPv4 service does)."""
        ingress = self.engine.interfaces.by_index(datagram.ifindex)
        xid = outcome.transaction_id
        return {
            "xid": None if xid is None else f"0x{xid:06x}",
            "type": outcome.message_type,
            "iface": ingress.name if ingress else datagram.ifindex,
            "source": f"[{address_text(datagram.source)}]:{datagram.source_port}",
        }

    # -- around the packets ------------------------------------------------------------------
    def on_interfaces(self, table: InterfaceTable) -> None:
        with self.lock:
            self.engine.update_interfaces(table)
        self._join()

    def _join(self) -> None:
        """Be in ff02::1:2 on every client-facing interface present, and only there.

        RFC 8415 §7.1: clients send to All_DHCP_Relay_Agents_and_Servers, link-scoped: a relay
        hears them only where it has joined. An interface that went away took its membership
        with it; one that came back has a new index and is joined again.
        """
        wanted = {
            interface.index
            for interface in self.engine.interfaces
            if self.engine.config.lower_interface(interface.name) is not None
        }
        for index in sorted(wanted - self.joined):
            try:
                join_group(self.sock, ALL_RELAY_AGENTS_AND_SERVERS, index)
            except OSError as error:
                self.log.warning("relay6.multicast.join_failed", ifindex=index,
                                 error=os.strerror(error.errno or 0))
                continue
            self.joined.add(index)
        present = {interface.index for interface in self.engine.interfaces}
        for index in sorted(self.joined - wanted):
            if index in present:
                with contextlib.suppress(OSError):  # gone with its interface meanwhile
                    join_group(self.sock, ALL_RELAY_AGENTS_AND_SERVERS, index, join=False)
            self.joined.discard(index)

    def apply_config(self, settings: RelaySettings) -> None:
        config = settings.relay6
        if config is None:
            self.log.warning("relay6.config.kept", note="the DHCPv6 relay stops only on restart")
            return
        if settings.log_level is not None:
            set_log_level(settings.log_level)  # (beside the IPv4 relay: already set by it)
        with self.lock:
            self.bind_logger()
            self.engine.update_config(config)
        self._join()
        self.shell.reloads += 1
        self.log.info("relay6.config.reloaded", **describe(config))

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            received_on = self.engine.counters.received_on
            return {
                **self.engine.counters.snapshot(),
                "received_by_interface": {self._ifname(i): n for i, n in received_on.items()},
                **self.loop.counters.snapshot(),
                **self.shell.snapshot(),
                **describe(self.engine.config),
                "joined": sorted(self._ifname(i) for i in self.joined),
            }

    def _ifname(self, index: int) -> str:
        interface = self.engine.interfaces.by_index(index)
        return interface.name if interface is not None else f"#{index}"

    def log_counters(self) -> None:
        self.log.info("relay6.stats", **self.snapshot())


def describe(config: Relay6Config) -> dict[str, Any]:
    """The configuration as log lines and the stats name it."""
    return {
        "lower": [lower.name for lower in config.lower],
        "upper": [f"{address_text(u.destination)}%{u.interface}" for u in config.upper],
    }


def open_relay6(config: Relay6Config, port: int = SERVER_PORT_V6) -> Relay6Service:
    """The service with its socket bound to [::]:``port`` (groups are joined as interfaces
    are reported)."""
    return Relay6Service(Relay6Engine(config), open_udp(port, "::", family=socket.AF_INET6))


async def run_relay6(
    config: Relay6Config,
    *,
    reload: Callable[[], RelaySettings] | None = None,
    stats_interval: float = 60.0,
    stats_file: Path | None = None,
    metrics_listen: Listen | None = None,
    port: int = SERVER_PORT_V6,
    task_status: trio.TaskStatus[Relay6Service] = trio.TASK_STATUS_IGNORED,
) -> Relay6Service:
    """Run the DHCPv6 relay alone (dhcrelay -6) until SIGTERM/SIGINT: the IPv4 relay's daemon
    around it (``service.run_relay``) but for its one socket and engine."""
    service = open_relay6(config, port)
    exporter = Metrics() if metrics_listen is not None else None

    def counters() -> None:
        service.log_counters()
        if stats_file is not None:
            write_json(stats_file, service.snapshot(), service.log)

    async def reload_settings() -> None:
        if reload is None:
            service.log.info("relay6.config.reload_skipped", reason="no configuration source")
        elif not await reload_config(reload, service.apply_config, log=service.log,
                                     event="relay.config.invalid"):
            service.shell.reload_failures += 1

    async def stats_line_loop() -> None:
        while True:
            await trio.sleep(stats_interval)
            service.log_counters()

    async def stats_file_loop(path: Path) -> None:
        written = None
        while True:
            await trio.sleep(STATS_FILE_PERIOD)
            snapshot = service.snapshot()
            if snapshot != written:
                written = snapshot if write_json(path, snapshot, service.log) else None

    try:
        with trio.open_signal_receiver(*DAEMON_SIGNALS) as signals, metrics.part(
                exporter, "relay6", service.snapshot, FAMILIES6):
            async with trio.open_nursery() as nursery:
                if exporter is not None and metrics_listen is not None:
                    await nursery.start(exporter.run, metrics_listen)
                await nursery.start(follow_interfaces, service.on_interfaces)
                nursery.start_soon(service.loop.run)
                if stats_interval > 0:
                    nursery.start_soon(stats_line_loop)
                if stats_file is not None:
                    nursery.start_soon(stats_file_loop, stats_file)
                nursery.start_soon(functools.partial(
                    signal_loop, signals, reload=reload_settings, counters=counters,
                    stop=nursery.cancel_scope, log=service.log, stopping="relay.stopping"))
                service.log.info("relay6.started", port=port, **describe(config))
                task_status.started(service)
    finally:
        service.sock.close()
        if stats_file is not None:
            write_json(stats_file, service.snapshot(), service.log)
        service.log.info("relay6.stopped", **service.snapshot())
    return service
