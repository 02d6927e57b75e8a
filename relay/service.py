"""The relay daemon: the sans-IO RelayEngine wired to the shell ring.

The shell ring's receive thread (``shell.DatagramLoop``) calls ``RelayService.handle`` inline for
each datagram, which runs the engine, executes the actions, counts and logs (one info line per
relayed step: forwarded to which helpers, delivered how; drops at info, rate-limited). Beside
it: the netlink follower, the stats line, the stats file, the metrics endpoint (the same
snapshot) and the signal handler (SIGHUP reload, SIGUSR1 counters, SIGTERM/SIGINT stop).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import structlog
import trio

from . import metrics
from .actions import Deliver, Drop, Forward, Outcome, RogueServer, Throttle, Warn
from .config import RelayConfig
from .configfile import RelaySettings
from .drops import DropReason
from .engine import RelayEngine
from .interfaces import InterfaceTable
from .metrics import LATENCY_BUCKETS, Family, Histogram, Metrics
from .netlink import follow_interfaces
from .replies import ReplyTracker
from .settings import Listen
from .shell import (
    DAEMON_SIGNALS,
    DatagramLoop,
    RateLimiter,
    address_text,
    errno_name,
    logging_enabled,
    open_reply_listener,
    open_udp,
    receive_frame,
    reload_config,
    set_log_level,
    signal_loop,
)
from .sockets import Sender, open_packet
from .wire import SERVER_PORT, Datagram

#: Drops of a throttled client: counted, logged once as relay.client.throttled.
THROTTLED = frozenset({DropReason.RATE_LIMITED_MAC, DropReason.RATE_LIMITED_CIRCUIT})
#: Seconds between two sweeps of the engine (``RelayEngine.sweep``).
SWEEP_PERIOD = 1.0
#: How often the stats file is refreshed when a counter changed.
STATS_FILE_PERIOD = 0.25

log = structlog.get_logger("relay")

#: The relay's metrics: each a value of ``RelayService.snapshot`` (the stats file's numbers).
FAMILIES = (
    Family("boothop_relay_received", "counter", "Datagrams received on port 67",
           ("received",)),
    Family("boothop_relay_received_by_interface", "counter",
           "Datagrams received on port 67, per ingress interface",
           ("received_by_interface", "{interface}")),
    Family("boothop_relay_requests", "counter", "BOOTREQUESTs received", ("requests",)),
    Family("boothop_relay_replies", "counter", "BOOTREPLYs received", ("replies",)),
    Family("boothop_relay_replies_by_port", "counter",
           "BOOTREPLYs received, per local port (67, or the RFC 8357 relay port)",
           ("replies_by_port", "{port}")),
    Family("boothop_relay_forwarded", "counter", "Requests forwarded, per helper",
           ("forwarded", "{server}")),
    Family("boothop_relay_class_relayed", "counter",
           "Requests relayed, per forwarding class (default: no class matched)",
           ("relayed_by_class", "{class}")),
    Family("boothop_relay_delivered", "counter", "Replies delivered to clients, per mode",
           ("delivered", "{mode}")),
    Family("boothop_relay_dropped", "counter", "Datagrams dropped, per reason",
           ("dropped", "{reason}")),
    Family("boothop_relay_clients_throttled", "counter",
           "Clients whose requests started being dropped over their rate, per kind (mac, "
           "circuit)", ("throttled_clients", "{kind}")),
    Family("boothop_relay_clients_throttled_now", "gauge",
           "Clients whose requests are being dropped over their rate now, per kind",
           ("throttled_now", "{kind}")),
    Family("boothop_relay_pxe_unbootable", "counter",
           "PXE clients' transactions with an address offer and no boot information, per "
           "forwarding class", ("pxe_unbootable_by_class", "{class}")),
    Family("boothop_relay_rogue_replies", "counter",
           "DHCP server answers from a server that is no helper, on a client-facing interface",
           ("rogue_replies_by_interface", "{interface}")),
    Family("boothop_relay_agent_info_added", "counter", "Requests given option 82",
           ("agent_info_added",)),
    Family("boothop_relay_send_errors", "counter", "Failed sends, per errno",
           ("send_errors", "{error}")),
    Family("boothop_relay_reloads", "counter", "Configurations reloaded", ("reloads",)),
    Family("boothop_relay_reload_failures", "counter", "Reloads refused (invalid file)",
           ("reload_failures",)),
    *(Family(f"boothop_relay_helper_{key}", "counter" if key != "waiting" else "gauge", help,
             ("helper_replies", "{server}", key))
      for key, help in (
          ("answered", "Forwarded requests the helper answered in time"),
          ("unanswered", "Forwarded requests with no reply from the helper in time"),
          ("untracked", "Forwarded requests given up unanswered as the table was full"),
          ("waiting", "Forwarded requests awaiting the helper's reply"))),
    Family("boothop_relay_helper_reply_seconds", "histogram",
           "From forwarding a request to the helper's reply", ("reply_latency",
                                                                "{server}")),
)


@dataclasses.dataclass
class ShellCounters:
    """What happens around the engine besides receiving: send errors and reloads."""

    send_errors: Counter[str] = dataclasses.field(default_factory=Counter)
    reloads: int = 0
    reload_failures: int = 0

    def snapshot(self) -> dict[str, object]:
        return {
            "send_errors": dict(self.send_errors),
            "reloads": self.reloads,
            "reload_failures": self.reload_failures,
        }


class RelayService:
    """The running relay: its engine, sockets, counters and logger."""

    def __init__(self, engine: RelayEngine, udp: socket.socket, sender: Sender,
                 stats_file: Path | None = None, listener: socket.socket | None = None) -> None:
        """``udp`` faces clients (67 or -p); the sender's ``upstream`` socket, bound to the
        RFC 8357 relay port, gets a receive loop of its own into the same engine and lock, and
        so does ``listener`` (``shell.open_reply_listener``: server answers to the clients'
        port, for rogue server detection)."""
        self.engine = engine
        self.udp = udp
        self.sender = sender
        self.stats_file = stats_file
        self.shell = ShellCounters()
        self.replies = ReplyTracker()
        self.latency: dict[IPv4Address, Histogram] = {}
        self.limiter = RateLimiter()
        #: Held by the receive thread for each datagram, and by trio tasks to swap or read state.
        self.lock = threading.Lock()
        self.loop = DatagramLoop(udp, self.receive, log=log, lock=self.lock)
        self.loops = [self.loop] + ([] if sender.upstream is None else [
            DatagramLoop(sender.upstream, self.receive, log=log, lock=self.lock)])
        if listener is not None:
            self.loops.append(DatagramLoop(listener, self.observe, log=log, lock=self.lock,
                                           reader=receive_frame, port=sender.client_port))
        self.bind_logger()
        self._missing: set[str] = set()
        self._written: dict[str, Any] | None = None

    def bind_logger(self) -> None:
        """Take the logging configuration as it is now (at start, and after a level change)."""
        # A concrete bound logger (not the lazy proxy): a filtered-out call is a no-op.
        self.log = log.bind()
        for loop in self.loops:
            loop.log = self.log
        #: Whether the per-step info lines are written: they are built only then.
        self.steps = logging_enabled(self.log, "info")

    # -- per packet --------------------------------------------------------------------------
    def receive(self, datagram: Datagram) -> None:
        """The receive thread's handler (under ``lock``)."""
        self.handle(datagram, time.monotonic())

    def observe(self, datagram: Datagram) -> None:
        """The reply listener's handler (under ``lock``): a server's answer on a client LAN."""
        for action in self.engine.observe_client_lan(datagram, time.monotonic()).actions:
            if isinstance(action, RogueServer):
                self._log_rogue(action)

    def _log_rogue(self, action: RogueServer) -> None:
        self.log.warning("relay.rogue_server", server=address_text(action.server),
                         server_mac=action.mac or None, ifname=action.ifname,
                         server_id=action.server_id, offered=address_text(action.yiaddr),
                         note="a DHCP server that is not a configured helper answers on a "
                         "client LAN")

    def handle(self, datagram: Datagram, now: float) -> None:
        """Run one datagram through the engine and execute what it says."""
        outcome = self.engine.handle(datagram, now)
        xid = outcome.xid or 0  # a Forward or a Deliver always comes with its message
        latency = None
        for action in outcome.actions:
            if isinstance(action, Forward):
                try:
                    self.sender.forward(action)
                except OSError as error:
                    self._send_failed("forward", error, now, server=str(action.server))
                else:
                    self.replies.forwarded(action.server, xid, now)
            elif isinstance(action, Deliver):
                latency = self.replies.replied(datagram.source, xid, now)
                if latency is not None:
                    self._observe(datagram.source, latency)
                try:
                    self.sender.deliver(action)
                except OSError as error:
                    self._send_failed(action.mode.value, error, now, ifname=action.ifname,
                                      destination=str(action.destination))
            elif isinstance(action, Warn):
                self.log.warning(action.event, message=action.message, server=str(action.server))
            elif isinstance(action, Throttle):
                self._log_throttle(action)
            elif isinstance(action, RogueServer):
                self._log_rogue(action)
        if self.steps:
            self._log_outcome(datagram, outcome, now, latency)

    def _log_throttle(self, action: Throttle) -> None:
        """One line when a client's throttling starts, one when it stops (its dropped requests
        are counted, not logged)."""
        limits = self.engine.config.rate_limits
        limit = limits.mac if action.kind == "mac" else limits.circuit
        if action.started:
            self.log.warning("relay.client.throttled", kind=action.kind, client=action.client,
                             ifname=action.ifname, burst=limit.burst, rate=limit.rate)
        else:
            self.log.info("relay.client.unthrottled", kind=action.kind, client=action.client,
                          ifname=action.ifname, dropped=action.dropped)

    def _observe(self, helper: IPv4Address, latency: float) -> None:
        histogram = self.latency.get(helper)
        if histogram is None:
            histogram = self.latency[helper] = Histogram(LATENCY_BUCKETS)
        histogram.observe(latency)

    def _log_outcome(self, datagram: Datagram, outcome: Outcome, now: float,
                     latency: float | None) -> None:
        """One info line per relayed step (all helpers of a request in one), drops with their
        reason; the packet's context is bound once."""
        packet = None
        servers = []
        for action in outcome.actions:
            if isinstance(action, Forward):
                servers.append(address_text(action.server))
                continue
            if isinstance(action, Drop):
                if action.reason in THROTTLED:
                    continue  # relay.client.throttled said it once
                suppressed = self.limiter.allow(("drop", action.reason), now)
                if suppressed is None:
                    continue
            packet = packet or self._bind(datagram, outcome)
            if isinstance(action, Deliver):
                packet.info("relay.reply.delivered", mode=action.mode.value,
                            destination=address_text(action.destination), ifname=action.ifname,
                            latency_ms=None if latency is None else round(latency * 1e3, 3))
            elif isinstance(action, Drop):
                packet.info("relay.drop", reason=action.reason.value, detail=action.detail,
                            suppressed=suppressed)
        if servers:
            (packet or self._bind(datagram, outcome)).info(
                "relay.request.forwarded", servers=servers,
                forwarding_class=outcome.forwarding_class)

    def _bind(self, datagram: Datagram, outcome: Outcome) -> Any:
        ingress = self.engine.interfaces.by_index(datagram.ifindex)
        return self.log.bind(
            xid=None if outcome.xid is None else f"0x{outcome.xid:08x}",
            chaddr=outcome.mac,
            iface=ingress.name if ingress else datagram.ifindex,
            giaddr=None if outcome.giaddr is None else address_text(outcome.giaddr),
            hops=outcome.hops,
            type=outcome.message_type,
            source=f"{address_text(datagram.source)}:{datagram.source_port}",
        )

    def _send_failed(self, what: str, error: OSError, now: float, **context: object) -> None:
        name = errno_name(error)
        self.shell.send_errors[name] += 1
        suppressed = self.limiter.allow(("send", what, name), now)
        if suppressed is not None:
            self.log.warning("relay.send.failed", action=what, error=name, suppressed=suppressed,
                             **context)

    # -- around the packets ------------------------------------------------------------------
    def on_interfaces(self, table: InterfaceTable) -> None:
        with self.lock:
            self.engine.update_interfaces(table)
        self._check_configured_interfaces()

    def _check_configured_interfaces(self) -> None:
        known = {interface.name for interface in self.engine.interfaces}
        missing = {i.name for i in self.engine.config.interfaces} - known
        if missing != self._missing and missing:
            self.log.warning("relay.interface.missing", ifnames=sorted(missing),
                             note="configured but not present; used as soon as it appears")
        self._missing = missing

    def apply_config(self, settings: RelaySettings) -> None:
        config = settings.relay
        running = self.engine.config.relay_port
        if config.relay_port != running:
            # The relay port's socket is bound at start and kept, as the client-facing one is.
            self.log.warning("relay.config.relay_port_kept", relay_port=running,
                             configured=config.relay_port, note="takes effect on restart")
            config = dataclasses.replace(config, relay_port=running)
        relevel = settings.log_level is not None and set_log_level(settings.log_level)
        with self.lock:
            if relevel:
                self.bind_logger()
            self.engine.update_config(config)
        self.shell.reloads += 1
        self.log.info("relay.config.reloaded", helpers=[str(h) for h in config.helpers],
                      interfaces=[i.name for i in config.interfaces])
        self._check_configured_interfaces()

    def snapshot(self) -> dict[str, Any]:
        """Counters and state, as logged by relay.stats and written to the stats file."""
        with self.lock:
            return self._snapshot()

    def _snapshot(self) -> dict[str, Any]:
        self.replies.expire(time.monotonic())
        received_on = self.engine.counters.received_on
        return {
            **self.engine.counters.snapshot(),
            "received_by_interface": {self._ifname(index): count
                                      for index, count in received_on.items()},
            **_summed(loop.counters.snapshot() for loop in self.loops),
            **self.shell.snapshot(),
            "throttled_now": self.engine.throttled_now(),
            "rogue_replies_by_interface": {
                self._ifname(index): count
                for index, count in self.engine.counters.rogue_replies.items()},
            "helper_replies": self.replies.snapshot(),
            "reply_latency": {str(helper): histogram.snapshot()
                              for helper, histogram in self.latency.items()},
            "helpers": [str(h) for h in self.engine.config.helpers],
            "interfaces": {
                i.name: {"index": i.index, "up": i.up, "addresses": [str(a) for a in i.addresses]}
                for i in self.engine.interfaces
            },
            "pid": os.getpid(),
        }

    def _ifname(self, index: int) -> str:
        interface = self.engine.interfaces.by_index(index)
        return interface.name if interface is not None else f"#{index}"

    def metrics_snapshot(self) -> dict[str, Any]:
        """The snapshot as the metrics families read it (the loop's counters apart)."""
        with self.lock:
            return {**self._snapshot(),
                    "loops": {loop.port: loop.counters.snapshot() for loop in self.loops}}

    def write_stats(self) -> None:
        """Write the snapshot as JSON, atomically (readers never see half a file)."""
        if self.stats_file is None:
            return
        snapshot = self.snapshot()
        temporary = self.stats_file.with_name(self.stats_file.name + ".tmp")
        try:
            temporary.write_text(json.dumps(snapshot, indent=1, sort_keys=True) + "\n")
            os.replace(temporary, self.stats_file)
        except OSError as error:
            self.log.error("relay.stats_file.failed", path=str(self.stats_file),
                           error=errno_name(error))
            return
        self._written = snapshot

    async def stats_file_loop(self) -> None:
        while True:
            await trio.sleep(STATS_FILE_PERIOD)
            if self.snapshot() != self._written:
                self.write_stats()

    async def sweep_loop(self) -> None:
        """Tell what time alone tells (a throttled client gone quiet, PXE clients left without
        boot information), though no packet follows to tell it."""
        while True:
            await trio.sleep(SWEEP_PERIOD)
            self.sweep(time.monotonic())

    def sweep(self, now: float) -> None:
        with self.lock:
            for action in self.engine.sweep(now):
                if isinstance(action, Throttle):
                    self._log_throttle(action)
                else:
                    self.log.warning(action.event, message=action.message,
                                     server=str(action.server))

    async def stats_loop(self, interval: float) -> None:
        while True:
            await trio.sleep(interval)
            self.log.info("relay.stats", **self.snapshot())

    async def signal_loop(self, signals: Any, reload: Callable[[], RelaySettings] | None,
                          stop: trio.CancelScope) -> None:
        await signal_loop(signals, reload=functools.partial(self.reload, reload),
                          counters=self.log_counters, stop=stop, log=self.log,
                          stopping="relay.stopping")

    def log_counters(self) -> None:
        self.log.info("relay.stats", **self.snapshot())
        self.write_stats()

    async def reload(self, reload: Callable[[], RelaySettings] | None) -> None:
        """Re-read and validate the configuration (and the log level); keep the running one if
        the new is bad."""
        if reload is None:
            self.log.info("relay.config.reload_skipped", reason="no configuration source")
            return
        if not await reload_config(reload, self.apply_config, log=self.log,
                                   event="relay.config.invalid"):
            self.shell.reload_failures += 1


def _summed(snapshots: Iterable[dict[str, int]]) -> Counter[str]:
    """Loop counters added up over the relay's sockets (per socket in the metrics)."""
    total: Counter[str] = Counter()
    for snapshot in snapshots:
        total.update(snapshot)
    return total


async def run_relay(
    config: RelayConfig,
    *,
    reload: Callable[[], RelaySettings] | None = None,
    stats_interval: float = 60.0,
    stats_file: Path | None = None,
    metrics_listen: Listen | None = None,
    port: int = SERVER_PORT,
    handle_signals: bool = True,
    task_status: trio.TaskStatus[RelayService] = trio.TASK_STATUS_IGNORED,
) -> RelayService:
    """Run the relay until cancelled or stopped by SIGTERM/SIGINT; returns the service.

    ``reload`` produces validated settings on SIGHUP (raising ConfigError if they are not
    valid); ``metrics_listen``: serve the counters to Prometheus there. Ready
    (``task_status.started``) once the socket is bound and the first interface dump is in the
    engine. Stopping needs no grace period to drain anything: the relay keeps no state between
    packets but its reply tracking, and whatever is still queued in the socket is left unread
    (as dhcrelay does); the stats file gets the final counters.
    """
    engine = RelayEngine(config)
    udp = open_udp(port)
    upstream = listener = None
    try:
        # RFC 8357 §5.1: requests leave from the relay port, and replies come back to it.
        upstream = None if config.relay_port is None else open_udp(config.relay_port)
        sender = Sender(udp, open_packet(), port, upstream)
        listener = open_reply_listener(sender.client_port)
    except BaseException:
        udp.close()
        for sock in (upstream, listener):
            if sock is not None:
                sock.close()
        raise
    service = RelayService(engine, udp, sender, stats_file, listener)
    exporter = Metrics() if metrics_listen is not None else None
    try:
        receiver = (trio.open_signal_receiver(*DAEMON_SIGNALS) if handle_signals
                    else contextlib.nullcontext())
        with receiver as signals, metrics.part(exporter, "relay", service.metrics_snapshot,
                                               FAMILIES):
            async with trio.open_nursery() as nursery:
                if exporter is not None and metrics_listen is not None:
                    await nursery.start(exporter.run, metrics_listen)
                await nursery.start(follow_interfaces, service.on_interfaces)
                for loop in service.loops:
                    nursery.start_soon(loop.run)
                nursery.start_soon(service.sweep_loop)
                if stats_interval > 0:
                    nursery.start_soon(service.stats_loop, stats_interval)
                if stats_file is not None:
                    nursery.start_soon(service.stats_file_loop)
                if handle_signals:
                    nursery.start_soon(service.signal_loop, signals, reload, nursery.cancel_scope)
                service.log.info("relay.started", port=port, relay_port=config.relay_port,
                                 helpers=[str(h) for h in config.helpers],
                                 interfaces=[i.name for i in config.interfaces])
                service.write_stats()
                task_status.started(service)
    finally:
        sender.close()
        listener.close()
        service.write_stats()
        service.log.info("relay.stopped", **service.snapshot())
    return service
