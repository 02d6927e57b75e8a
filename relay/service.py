"""The relay daemon: the sans-IO RelayEngine wired to the shell ring.

The shell ring's receive thread (``shell.DatagramLoop``) calls ``RelayService.handle`` inline for
each datagram, which runs the engine, executes the actions, counts and logs. Beside it: the
netlink follower, the stats line, the stats file and the signal handler (SIGHUP reload, SIGUSR1
counters, SIGTERM/SIGINT stop).
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
import trio

from .actions import Deliver, Drop, Forward, Outcome, Warn
from .config import RelayConfig
from .engine import RelayEngine
from .interfaces import InterfaceTable
from .netlink import follow_interfaces
from .shell import (
    DAEMON_SIGNALS,
    DatagramLoop,
    RateLimiter,
    errno_name,
    open_udp,
    per_packet_logging,
    reload_config,
    signal_loop,
)
from .sockets import Sender, open_packet
from .wire import SERVER_PORT, Datagram

#: How often the stats file is refreshed when a counter changed.
STATS_FILE_PERIOD = 0.25

log = structlog.get_logger("relay")


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
                 stats_file: Path | None = None) -> None:
        self.engine = engine
        self.udp = udp
        self.sender = sender
        self.stats_file = stats_file
        self.shell = ShellCounters()
        self.limiter = RateLimiter()
        #: Held by the receive thread for each datagram, and by trio tasks to swap or read state.
        self.lock = threading.Lock()
        # A concrete bound logger (not the lazy proxy): a filtered-out debug call is a no-op.
        self.log = log.bind()
        self.debug = per_packet_logging(self.log)
        self.loop = DatagramLoop(udp, self.receive, log=self.log, lock=self.lock)
        self._missing: set[str] = set()
        self._written: dict[str, Any] | None = None

    # -- per packet --------------------------------------------------------------------------
    def receive(self, datagram: Datagram) -> None:
        """The receive thread's handler (under ``lock``)."""
        self.handle(datagram, time.monotonic())

    def handle(self, datagram: Datagram, now: float) -> None:
        """Run one datagram through the engine and execute what it says."""
        outcome = self.engine.handle(datagram, now)
        for action in outcome.actions:
            if isinstance(action, Forward):
                try:
                    self.sender.forward(action)
                except OSError as error:
                    self._send_failed("forward", error, now, server=str(action.server))
            elif isinstance(action, Deliver):
                try:
                    self.sender.deliver(action)
                except OSError as error:
                    self._send_failed(action.mode.value, error, now, ifname=action.ifname,
                                      destination=str(action.destination))
            elif isinstance(action, Warn):
                self.log.warning(action.event, message=action.message, server=str(action.server))
        if self.debug:
            self._log_outcome(datagram, outcome, now)

    def _log_outcome(self, datagram: Datagram, outcome: Outcome, now: float) -> None:
        ingress = self.engine.interfaces.by_index(datagram.ifindex)
        packet = self.log.bind(
            xid=None if outcome.xid is None else f"0x{outcome.xid:08x}",
            chaddr=outcome.mac,
            iface=ingress.name if ingress else datagram.ifindex,
            giaddr=None if outcome.giaddr is None else str(outcome.giaddr),
            hops=outcome.hops,
            type=outcome.message_type,
            source=f"{datagram.source}:{datagram.source_port}",
        )
        for action in outcome.actions:
            if isinstance(action, Forward):
                packet.debug("relay.request.forwarded", server=str(action.server))
            elif isinstance(action, Deliver):
                packet.debug("relay.reply.delivered", mode=action.mode.value,
                             destination=str(action.destination), ifname=action.ifname)
            elif isinstance(action, Drop):
                suppressed = self.limiter.allow(("drop", action.reason), now)
                if suppressed is not None:
                    packet.debug("relay.drop", reason=action.reason.value, detail=action.detail,
                                 suppressed=suppressed)

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

    def apply_config(self, config: RelayConfig) -> None:
        with self.lock:
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
        return {
            **self.engine.counters.snapshot(),
            **self.loop.counters.snapshot(),
            **self.shell.snapshot(),
            "helpers": [str(h) for h in self.engine.config.helpers],
            "interfaces": {
                i.name: {"index": i.index, "up": i.up, "addresses": [str(a) for a in i.addresses]}
                for i in self.engine.interfaces
            },
            "pid": os.getpid(),
        }

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

    async def stats_loop(self, interval: float) -> None:
        while True:
            await trio.sleep(interval)
            self.log.info("relay.stats", **self.snapshot())

    async def signal_loop(self, signals: Any, reload: Callable[[], RelayConfig] | None,
                          stop: trio.CancelScope) -> None:
        await signal_loop(signals, reload=functools.partial(self.reload, reload),
                          counters=self.log_counters, stop=stop, log=self.log,
                          stopping="relay.stopping")

    def log_counters(self) -> None:
        self.log.info("relay.stats", **self.snapshot())
        self.write_stats()

    async def reload(self, reload: Callable[[], RelayConfig] | None) -> None:
        """Re-read and validate the configuration; keep the running one if the new is bad."""
        if reload is None:
            self.log.info("relay.config.reload_skipped", reason="no configuration source")
            return
        if not await reload_config(reload, self.apply_config, log=self.log,
                                   event="relay.config.invalid"):
            self.shell.reload_failures += 1


async def run_relay(
    config: RelayConfig,
    *,
    reload: Callable[[], RelayConfig] | None = None,
    stats_interval: float = 60.0,
    stats_file: Path | None = None,
    port: int = SERVER_PORT,
    handle_signals: bool = True,
    task_status: trio.TaskStatus[RelayService] = trio.TASK_STATUS_IGNORED,
) -> RelayService:
    """Run the relay until cancelled or stopped by SIGTERM/SIGINT; returns the service.

    ``reload`` produces a validated configuration on SIGHUP (raising ConfigError if it is not
    valid). Ready (``task_status.started``) once the socket is bound and the first interface
    dump is in the engine. Stopping needs no grace period to drain anything: the relay keeps
    no state between packets, and whatever is still queued in the socket is left unread (as
    dhcrelay does); the stats file gets the final counters.
    """
    engine = RelayEngine(config)
    udp = open_udp(port)
    try:
        sender = Sender(udp, open_packet())
    except BaseException:
        udp.close()
        raise
    service = RelayService(engine, udp, sender, stats_file)
    try:
        receiver = (trio.open_signal_receiver(*DAEMON_SIGNALS) if handle_signals
                    else contextlib.nullcontext())
        with receiver as signals:
            async with trio.open_nursery() as nursery:
                await nursery.start(follow_interfaces, service.on_interfaces)
                nursery.start_soon(service.loop.run)
                if stats_interval > 0:
                    nursery.start_soon(service.stats_loop, stats_interval)
                if stats_file is not None:
                    nursery.start_soon(service.stats_file_loop)
                if handle_signals:
                    nursery.start_soon(service.signal_loop, signals, reload, nursery.cancel_scope)
                service.log.info("relay.started", port=port, helpers=[str(h) for h in
                                 config.helpers], interfaces=[i.name for i in config.interfaces])
                service.write_stats()
                task_status.started(service)
    finally:
        sender.close()
        service.write_stats()
        service.log.info("relay.stopped", **service.snapshot())
    return service
