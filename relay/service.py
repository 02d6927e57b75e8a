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
import os
import select
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import orjson
import structlog
import trio

from . import metrics
from .actions import Deliver, DeliveryMode, Drop, Forward, Outcome, RogueServer, Throttle, Warn
from .broadcast import BroadcastForwarder, UdpDropped
from .classes import DEFAULT_CLASS
from .compiled import Unavailable
from .config import Relay6Config, RelayConfig
from .configfile import RelaySettings
from .counters import ShellCounters
from .datapath import (
    EVENT_DELIVERED,
    EVENT_FORWARDED,
    EVENT_THROTTLE_STARTED,
    Event,
    Step,
    event_of,
    mac_limit,
    tables,
)
from .drops import DropReason
from .engine import RelayEngine
from .fastpath import Delivered, FastPath, Relayed, message_type
from .interfaces import InterfaceTable
from .kernel import Events, KernelDatapath, KernelReplies, steps
from .metrics import LATENCY_BUCKETS, Family, Histogram, Metrics
from .netlink import attach_program, detach_program, detach_stale, follow_interfaces
from .replies import ReplyTracker
from .service6 import FAMILIES6, Relay6Service, open_relay6
from .settings import DaemonError, Listen
from .shell import (
    DAEMON_SIGNALS,
    DatagramLoop,
    LineBatch,
    RateLimiter,
    address_text,
    errno_name,
    logging_enabled,
    lowest_priority,
    open_reply_listener,
    open_udp,
    receive_frame,
    reload_config,
    run_in_own_thread,
    set_log_level,
    signal_loop,
    write_json,
)
from .sockets import Sender, open_packet, open_raw
from .steplines import STEP_TYPES, TYPES_JSON, StepLines
from .wire import SERVER_PORT, Datagram, address_of
from .wire.codes import Opt
from .wire.dhcpv6 import SERVER_PORT_V6

#: How long after the first of a batch the kernel datapath's events are read and logged. 10 ms
#: (smaller bursts of CPU beside a server on the same CPU) measured worse: the daemon's CPU per
#: DORA 17 -> 28 µs, and the lossless rate through it 0.85 -> 0.67x no relay's
#: (tests/bench/relay_dora.py, boothop-kernel against none-82).
KERNEL_STEPS_PERIOD = 0.05
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
    Family("boothop_relay_giaddr_fallbacks", "counter",
           "Smart giaddr: clients moved to the next address of an interface after unanswered "
           "DISCOVERs", ("giaddr_fallbacks", "{interface}")),
    Family("boothop_relay_udp_received", "counter",
           "UDP broadcast helper: datagrams received, per port", ("udp_received", "{port}")),
    Family("boothop_relay_udp_forwarded", "counter",
           "UDP broadcast helper: datagrams forwarded, per port and helper",
           ("udp_forwarded", "{port}", "{server}")),
    Family("boothop_relay_udp_dropped", "counter",
           "UDP broadcast helper: datagrams dropped, per reason", ("udp_dropped", "{reason}")),
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
    Family("boothop_relay_datapath_received", "counter",
           "Datagrams received, per datapath (kernel: relayed by the tc program; user: the "
           "daemon)", ("datapath", "received", "{path}")),
    Family("boothop_relay_datapath_requests", "counter",
           "BOOTREQUESTs received, per datapath (kernel: relayed or rate-limited by the tc "
           "program; user: the daemon)", ("datapath", "requests", "{path}")),
    Family("boothop_relay_kernel_events_lost", "counter",
           "Events (step lines, throttled clients) the kernel datapath had no room for in its "
           "ring: the daemon fell behind", ("datapath", "events_lost")),
    Family("boothop_relay_kernel_passed_up", "counter",
           "DHCP datagrams the kernel datapath left to the daemon, per reason",
           ("datapath", "passed_up", "{reason}")),
    Family("boothop_relay_helper_reply_seconds", "histogram",
           "From forwarding a request to the helper's reply", ("reply_latency",
                                                                "{server}")),
)


_MESSAGE_TYPE = Opt.MESSAGE_TYPE.value
#: A fast delivery's mode, as its step line names it.
_MODE_TEXT = {mode: mode.value.encode() for mode in DeliveryMode}


class RelayService:
    """The running relay: its engine, sockets, counters and logger."""

    def __init__(self, engine: RelayEngine, udp: socket.socket, sender: Sender,
                 stats_file: Path | None = None, kernel: KernelDatapath | None = None,
                 broadcasts: Iterable[socket.socket] = (),
                 listener: socket.socket | None = None) -> None:
        """``udp`` faces clients (67 or -p); the sender's ``upstream`` socket, bound to the
        RFC 8357 relay port, gets a receive loop of its own into the same engine and lock;
        each of ``broadcasts`` (a port of the UDP broadcast helper) one into its forwarder, and
        ``listener`` (``shell.open_reply_listener``: server answers to the clients' port, for
        rogue server detection) one into the engine. ``kernel``: the tc program relaying the
        common cases, fed from the engine (the slow path and the reference stays here)."""
        self.engine = engine
        self.fast = FastPath(engine)
        self.kernel = kernel
        #: The interfaces the kernel datapath is attached to.
        self.attached: set[int] = set()
        self.udp = udp
        self.sender = sender
        self.stats_file = stats_file
        self.shell = ShellCounters()
        self.replies = ReplyTracker() if kernel is None else KernelReplies(kernel)
        #: The kernel datapath's clients being throttled, as of the last sweep, and those
        #: whose throttling ended (stopped, forgotten), of the program's count of starts.
        self.kernel_throttled = self.kernel_unthrottled = 0
        #: The program's events_lost as of the last sweep (told when it grows).
        self.kernel_events_lost = 0
        self.latency: dict[IPv4Address, Histogram] = {}
        self.limiter = RateLimiter()
        #: Held by the receive thread for each datagram, and by trio tasks to swap or read state.
        self.lock = threading.Lock()
        self.loop = DatagramLoop(udp, self.receive, log=log, lock=self.lock)
        self.loops = [self.loop] + ([] if sender.upstream is None else [
            DatagramLoop(sender.upstream, self.receive, log=log, lock=self.lock)])
        forwarding = engine.config.forward_udp
        self.broadcast = BroadcastForwarder(_udp_limiter(engine.config))
        #: The broadcast helper's ports, bound at start and kept (as the relay port).
        self.udp_ports = () if forwarding is None else forwarding.ports
        self.loops += [DatagramLoop(sock, self.receive_udp, log=log, lock=self.lock)
                       for sock in broadcasts]
        if listener is not None:
            self.loops.append(DatagramLoop(listener, self.observe, log=log, lock=self.lock,
                                           reader=receive_frame, port=sender.client_port))
        self.bind_logger()
        self._missing: set[str] = set()
        self._written: dict[str, Any] | None = None
        #: The DHCPv6 relay running beside this one in the process, if any: its counters go
        #: into this snapshot (under "dhcpv6"), reloads and interface changes to it too.
        self.v6: Relay6Service | None = None

    def bind_logger(self) -> None:
        """Take the logging configuration as it is now (at start, and after a level change)."""
        # A concrete bound logger (not the lazy proxy): a filtered-out call is a no-op.
        self.log = log.bind()
        for loop in self.loops:
            loop.log = self.log
        #: Whether the per-step info lines are written: they are built only then.
        self.steps = logging_enabled(self.log, "info")
        #: The fast path's step lines, written with the kernel datapath's templates where the
        #: log takes rendered bytes (``LineBatch.lean``), else by ``_log_fast``.
        self._fast_lines = LineBatch(self.log)
        self._fast_render: StepLines | None = None
        self._fast_generation = -1
        self._fast_servers: tuple[tuple[IPv4Address, ...] | None, bytes] = (None, b"")

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
        """Run one datagram through the fast path, else the engine, and execute what it says."""
        fast = self.fast.handle(datagram, now)
        if fast is None:
            outcome = self.engine.handle(datagram, now)
        elif isinstance(fast, tuple):
            self._fast(datagram, fast, now)
            return
        else:
            outcome = fast
        xid = outcome.xid or 0  # a Forward or a Deliver always comes with its message
        latency = None
        for action in outcome.actions:
            if isinstance(action, Forward):
                # Tracked before it leaves: a reply the kernel datapath delivers can be back
                # before this thread would have recorded the request.
                self.replies.forwarded(action.server, xid, now)
                try:
                    self.sender.forward(action)
                except OSError as error:
                    self._send_failed("forward", error, now, server=str(action.server))
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

    def _fast(self, datagram: Datagram, fast: Relayed | Delivered, now: float) -> None:
        """Execute what the fast path decided, as ``handle`` executes the engine's actions."""
        sender, replies = self.sender, self.replies
        if len(fast) == 3:
            xid, payload, helpers = fast
            for server in helpers:
                replies.forwarded(server, xid, now)
                try:
                    sender.forward_to(server, payload)
                except OSError as error:
                    self._send_failed("forward", error, now, server=str(server))
            if self.steps:
                self._line_fast(datagram, fast, None)
            return
        xid, ifname, mac, source, destination, payload, mode = fast
        latency = replies.replied(datagram.source, xid, now)
        if latency is not None:
            self._observe(datagram.source, latency)
        try:
            sender.send_frame(ifname, mac, source, destination, payload)
        except OSError as error:
            self._send_failed(mode.value, error, now, ifname=ifname,
                              destination=str(destination))
        if self.steps:
            self._line_fast(datagram, fast, latency)

    def _line_fast(self, datagram: Datagram, fast: Relayed | Delivered,
                   latency: float | None) -> None:
        """``_log_fast``'s line, rendered with ``StepLines``' templates (some 80k -> 25k
        instructions a line) where the log is lean JSON; the same bytes but the timestamp (a
        property test says so)."""
        lines = self._fast_lines
        data = datagram.payload
        scanned = self.fast.scanned
        assert scanned is not None
        at = scanned[1].get(_MESSAGE_TYPE)
        kind = 0 if at is None or data[at + 1] != 1 else data[at + 2]
        if not lines.still_lean() or (at is not None and data[at + 1] == 1 and not kind):
            self._log_fast(datagram, fast, latency)  # (type 0 is named "0", not "BOOTP")
            return
        render = self._fast_render
        if render is None or self._fast_generation != self.engine.generation:
            # Interface names may have changed with the table: rendered again.
            render = self._fast_render = StepLines(self._iface, self._ifname, lines.stamp)
            self._fast_generation = self.engine.generation
        relayed = fast[1] if len(fast) == 3 else data
        common = (data[4:8].hex().encode(), data[28:28 + data[2]].hex(":").encode(),
                  render.iface(datagram.ifindex), socket.inet_ntoa(relayed[24:28]).encode(),
                  relayed[3], TYPES_JSON[kind], address_text(datagram.source).encode(),
                  datagram.source_port)
        if len(fast) == 3:
            helpers = fast[2]
            cached = self._fast_servers
            if cached[0] is not helpers:
                cached = self._fast_servers = helpers, orjson.dumps(
                    [address_text(server) for server in helpers])
            lines.write(render.forwarded(common, cached[1], lines.stamp().encode()))
        else:
            _, ifname, _, _, destination, _, mode = fast
            lines.write(render.delivered(
                common, _MODE_TEXT[mode], address_text(destination).encode(),
                orjson.dumps(ifname),
                b"null" if latency is None else orjson.dumps(round(latency * 1e3, 3)),
                lines.stamp().encode()))
        lines.flush()

    def _log_fast(self, datagram: Datagram, fast: Relayed | Delivered,
                  latency: float | None) -> None:
        """``_log_outcome``'s line for what the fast path did, read off the bytes."""
        data = datagram.payload
        scanned = self.fast.scanned
        assert scanned is not None
        kind = message_type(data, scanned[1])
        mac = data[28:28 + data[2]].hex(":")  # hlen <= 16: the fast path checked
        if len(fast) == 3:
            payload, helpers = fast[1], fast[2]
            packet = self._packet(datagram, fast[0], mac, address_of(payload[24:28]),
                                  payload[3], kind)
            self.log.info("relay.request.forwarded", **packet,
                          servers=[address_text(server) for server in helpers],
                          forwarding_class=DEFAULT_CLASS)
            return
        _, ifname, _, _, destination, _, mode = fast
        packet = self._packet(datagram, fast[0], mac, address_of(data[24:28]), data[3], kind)
        self.log.info("relay.reply.delivered", **packet, mode=mode.value,
                      destination=address_text(destination), ifname=ifname,
                      latency_ms=None if latency is None else round(latency * 1e3, 3))

    def receive_udp(self, datagram: Datagram) -> None:
        """The broadcast helper's receive threads' handler (under ``lock``)."""
        self.handle_udp(datagram, time.monotonic())

    def handle_udp(self, datagram: Datagram, now: float) -> None:
        """Run one broadcast through the forwarder and send what it says."""
        outcome = self.broadcast.handle(datagram, self.engine.config, self.engine.interfaces, now)
        source = f"{address_text(datagram.source)}:{datagram.source_port}"
        if isinstance(outcome, UdpDropped):
            suppressed = self.limiter.allow(("udp-drop", outcome.reason), now)
            if self.steps and suppressed is not None:
                self.log.info("relay.udp.drop", port=datagram.port, source=source,
                              reason=outcome.reason.value, detail=outcome.detail,
                              suppressed=suppressed)
            return
        for action in outcome:
            try:
                self.sender.forward_udp(action)
            except OSError as error:
                self._send_failed("forward-udp", error, now, server=str(action.server),
                                  port=action.port)
        if self.steps:
            self.log.info("relay.udp.forwarded", port=datagram.port, source=source,
                          destination=address_text(datagram.destination),
                          servers=[address_text(action.server) for action in outcome])

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
        reason; each with the packet's context (its keys first, as if bound)."""
        packet = None
        servers = []
        log = self.log
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
            packet = packet or self._context(datagram, outcome)
            if isinstance(action, Deliver):
                log.info("relay.reply.delivered", **packet, mode=action.mode.value,
                         destination=address_text(action.destination), ifname=action.ifname,
                         latency_ms=None if latency is None else round(latency * 1e3, 3))
            elif isinstance(action, Drop):
                log.info("relay.drop", **packet, reason=action.reason.value,
                         detail=action.detail, suppressed=suppressed)
        if servers:
            log.info("relay.request.forwarded", **(packet or self._context(datagram, outcome)),
                     servers=servers, forwarding_class=outcome.forwarding_class)

    def _context(self, datagram: Datagram, outcome: Outcome) -> dict[str, Any]:
        """A packet's context for its step lines: passed with each line rather than bound, which
        would build a logger per packet."""
        return self._packet(datagram, outcome.xid, outcome.mac, outcome.giaddr, outcome.hops,
                            outcome.message_type)

    def _packet(self, datagram: Datagram, xid: int | None, mac: str | None,
                giaddr: IPv4Address | None, hops: int | None, kind: str | None
                ) -> dict[str, Any]:
        """The context keys of a step line of a packet the daemon relayed."""
        return self._step_context(
            None if xid is None else f"0x{xid:08x}", mac, datagram.ifindex,
            None if giaddr is None else address_text(giaddr), hops, kind,
            f"{address_text(datagram.source)}:{datagram.source_port}")

    def _step_context(self, xid: str | None, chaddr: str | None, ifindex: int,
                      giaddr: str | None, hops: int | None, kind: str | None,
                      source: str) -> dict[str, Any]:
        """The keys every step line starts with, from either path (``StepLines`` renders the
        same for the kernel's)."""
        return {"xid": xid, "chaddr": chaddr, "iface": self._iface(ifindex), "giaddr": giaddr,
                "hops": hops, "type": kind, "source": source}

    def _iface(self, ifindex: int) -> str | int:
        """A step line's ingress interface: its name, its index once gone."""
        ingress = self.engine.interfaces.by_index(ifindex)
        return ingress.name if ingress else ifindex

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
        if self.v6 is not None:
            self.v6.on_interfaces(table)
        self.push_kernel()

    def push_kernel(self) -> None:
        """Give the kernel datapath the engine's configuration and interfaces, and attach it to
        the interfaces the relay serves (at start, on every netlink change and reload)."""
        if self.kernel is None:
            return
        engine = self.engine
        self.kernel.push(tables(engine, self.sender.server_port, LATENCY_BUCKETS, self.steps))
        configured = {i.name for i in engine.config.interfaces}
        wanted = {i.index for i in engine.interfaces
                  if i.name != "lo" and (not configured or i.name in configured)}
        for index in sorted(wanted - self.attached):
            try:
                attach_program(index, self.kernel.program.fd)
            except Exception as error:  # that interface stays on the user path
                self.log.warning("relay.datapath.attach_failed", ifindex=index,
                                 ifname=self._ifname(index), error=repr(error))
                continue
            self.attached.add(index)
        present = {i.index for i in engine.interfaces}
        for index in sorted(self.attached - wanted):
            if index in present:
                with contextlib.suppress(Exception):
                    detach_program(index)
            self.attached.discard(index)

    async def kernel_steps(self) -> None:
        """Log each step the kernel datapath relayed, as ``handle`` logs the daemon's (the
        program sends an event per packet while info is enabled), from a thread of its own
        (``write_kernel_steps``) until cancelled."""
        if self.kernel is None:
            return
        events = self.kernel.events()
        stop_read, stop_write = os.pipe()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_write_on_cancel, stop_write)
                await run_in_own_thread(
                    functools.partial(self.write_kernel_steps, events, stop_read),
                    "kernel-steps")
                nursery.cancel_scope.cancel()
        finally:
            os.close(stop_read)
            os.close(stop_write)

    def write_kernel_steps(self, events: Events, stop: int) -> None:
        """The step lines' thread, at the lowest priority (``lowest_priority``): a relay's log
        waits for the CPU, never the packets, nor a server on the same CPU. On a CPU that is
        never idle the ring fills, and the program counts the events it had no room for
        (``events_lost``, told by the sweep) rather than wait. Woken by the first event after
        the last read (the ring buffer notifies a reader that had caught up: an idle daemon
        sleeps), then a batch: a wake-up per packet would cost more than its line. Ends when
        ``stop`` becomes readable, after the last batch."""
        lowest_priority(self.log)
        poller = select.poll()
        poller.register(events.fileno, select.POLLIN)
        poller.register(stop, select.POLLIN)
        try:
            while all(fd != stop for fd, _ in poller.poll()):
                time.sleep(KERNEL_STEPS_PERIOD)
                self._kernel_events(events.records())
        finally:
            self._kernel_events(events.records())
            events.close()

    def _kernel_events(self, records: bytes) -> None:
        """A batch of the program's events (``Events.records``): throttled clients told, the
        steps' lines written together (``LineBatch``), rendered straight to bytes where the log
        takes them so: by relay/native/steplines.c where it loaded, else by ``StepLines``."""
        lines = LineBatch(self.log)
        step_lines = StepLines(self._iface, self._ifname, lines.stamp) if lines.lean else None
        native = None if self.kernel is None else self.kernel.step_lines
        if step_lines is not None and native is not None:
            native.render(records, step_lines, lines.write_whole,
                          lambda step: self._kernel_left(lines, step, step_lines))
        else:
            for step in steps(records):
                self._kernel_left(lines, step, step_lines)
        lines.flush()

    def _kernel_left(self, lines: LineBatch, step: Step,
                     step_lines: StepLines | None = None) -> None:
        """A throttled client's event, or a step's line: rendered by ``step_lines`` if given,
        else from its fields' dict (``_kernel_step``: a log that is not lean)."""
        if step[0] <= EVENT_DELIVERED and step_lines is not None:
            lines.write(step_lines.render(step))
            return
        event = event_of(step)
        if event[0] > EVENT_DELIVERED:
            self._kernel_throttle(event[10], event[15][:event[1]],
                                  event[0] == EVENT_THROTTLE_STARTED, event[16])
        else:
            self._kernel_step(lines, event)

    def _kernel_step(self, lines: LineBatch, event: Event) -> None:
        """A step of the program: the line ``_log_outcome`` writes for the same step, built
        from the event's fields (no message, no actions: some 30 µs a line less)."""
        (op, hlen, hops, kind, xid, giaddr, source, source_port, mode, helpers, ifindex,
         delivery, destination, servers, latency, chaddr, _) = event
        packet = self._step_context(
            f"0x{xid.hex()}", chaddr[:hlen].hex(":"), ifindex,
            socket.inet_ntoa(giaddr), hops, STEP_TYPES[kind],
            f"{socket.inet_ntoa(source)}:{source_port}")
        if op == EVENT_FORWARDED:
            lines.info("relay.request.forwarded", {
                **packet, "servers": [socket.inet_ntoa(servers[i:i + 4])
                                      for i in range(0, 4 * helpers, 4)],
                # No class names the interface (those stay in the daemon): the default one.
                "forwarding_class": DEFAULT_CLASS})
        else:
            lines.info("relay.reply.delivered", {
                **packet, "mode": (DeliveryMode.UNICAST_CHADDR if mode
                                   else DeliveryMode.BROADCAST).value,
                "destination": socket.inet_ntoa(destination), "ifname": self._ifname(delivery),
                "latency_ms": None if latency < 0 else round(latency / 1e6, 3)})

    def _kernel_throttle(self, ifindex: int, mac: bytes, started: bool, dropped: int) -> None:
        """A client's throttling in the kernel datapath started or stopped: logged as the
        engine's Throttle actions are (the program counted it)."""
        self._log_throttle(Throttle("mac", mac.hex(":"), self._ifname(ifindex), started,
                                    dropped))
    def detach_kernel(self) -> None:
        """Remove the program from every interface (at exit)."""
        if self.kernel is None:
            return
        for index in sorted(self.attached):
            with contextlib.suppress(Exception):
                detach_program(index)
        self.attached.clear()
        self.kernel.close()

    def _check_configured_interfaces(self) -> None:
        known = {interface.name for interface in self.engine.interfaces}
        missing = {i.name for i in self.engine.config.interfaces} - known
        if missing != self._missing and missing:
            self.log.warning("relay.interface.missing", ifnames=sorted(missing),
                             note="configured but not present; used as soon as it appears")
        self._missing = missing

    def apply_config(self, settings: RelaySettings) -> None:
        """The new settings for the IPv4 relay, then for the DHCPv6 one beside it (if any)."""
        self._apply_config(settings)
        if self.v6 is not None:
            self.v6.apply_config(settings)

    def _apply_config(self, settings: RelaySettings) -> None:
        config = settings.relay
        if config is None:
            self.log.warning("relay.config.kept", note="the IPv4 relay stops only on restart")
            return
        running = self.engine.config.relay_port
        if config.relay_port != running:
            # The relay port's socket is bound at start and kept, as the client-facing one is.
            self.log.warning("relay.config.relay_port_kept", relay_port=running,
                             configured=config.relay_port, note="takes effect on restart")
            config = dataclasses.replace(config, relay_port=running)
        forwarding = config.forward_udp
        if (() if forwarding is None else forwarding.ports) != self.udp_ports:
            # Their sockets are bound at start; a port no longer listed is dropped and counted.
            self.log.warning("relay.config.forward_udp_ports_kept", ports=list(self.udp_ports),
                             configured=None if forwarding is None else list(forwarding.ports),
                             note="new ports take effect on restart")
        relevel = settings.log_level is not None and set_log_level(settings.log_level)
        with self.lock:
            if relevel:
                self.bind_logger()
            self.engine.update_config(config)
            self.broadcast.limiter = _udp_limiter(config)
        self.push_kernel()
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
        counters = self.engine.counters
        datapath: dict[str, Any] = {"mode": "user", "received": {"kernel": 0,
                                                                 "user": counters.received},
                                    "requests": {"kernel": 0, "user": counters.requests},
                                    "passed_up": {}, "events_lost": 0}
        if self.kernel is not None:
            counts = self.kernel.counts()
            datapath.update(mode="kernel", passed_up=counts.passed_up)
            datapath["received"]["kernel"] = counts.counters["received"]
            datapath["requests"]["kernel"] = counts.counters["requests"]
            datapath["events_lost"] = counts.counters["events_lost"]
            counters = counters.plus(counts.as_relay_counters(self.sender.server_port))
        received_on = counters.received_on
        return {
            **counters.snapshot(),
            "datapath": datapath,
            **self.broadcast.counters.snapshot(),
            "received_by_interface": {self._ifname(index): count
                                      for index, count in received_on.items()},
            **_summed(loop.counters.snapshot() for loop in self.loops),
            **self.shell.snapshot(),
            "throttled_now": self._throttled_now(),
            "rogue_replies_by_interface": {
                self._ifname(index): count
                for index, count in self.engine.counters.rogue_replies.items()},
            "helper_replies": self.replies.snapshot(),
            "reply_latency": self._latency(),
            "helpers": [str(h) for h in self.engine.config.helpers],
            "interfaces": {
                i.name: {"index": i.index, "up": i.up, "addresses": [str(a) for a in i.addresses]}
                for i in self.engine.interfaces
            },
            "pid": os.getpid(),
            **({} if self.v6 is None else {"dhcpv6": self.v6.snapshot()}),
        }

    def _throttled_now(self) -> dict[str, int]:
        """Clients being throttled now, per kind, the kernel datapath's (as of the last sweep)
        added in."""
        throttled = self.engine.throttled_now()
        if self.kernel is not None and self.kernel_throttled:
            throttled["mac"] = throttled.get("mac", 0) + self.kernel_throttled
        return throttled

    def _latency(self) -> dict[str, dict[str, Any]]:
        """The reply latency histograms per helper, the kernel datapath's added in."""
        merged = {helper: histogram.snapshot() for helper, histogram in self.latency.items()}
        if self.kernel is not None:
            for helper, (counts, total) in self.kernel.latency().items():
                entry = merged.setdefault(helper, Histogram(LATENCY_BUCKETS).snapshot())
                entry["counts"] = [a + b for a, b in zip(entry["counts"], counts, strict=True)]
                entry["sum"] += total
        return {str(helper): entry for helper, entry in sorted(merged.items())}

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
        if write_json(self.stats_file, snapshot, self.log):
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
            if self.kernel is not None:
                self._sweep_kernel(now)

    def _sweep_kernel(self, now: float) -> None:
        """The kernel datapath's events lost since the last sweep, and its throttled clients
        gone quiet (its map is read only while some client may be throttled: not each second
        of a flood of fresh MACs)."""
        assert self.kernel is not None
        lost = self.kernel.events_lost()
        if lost > self.kernel_events_lost:
            self.log.warning("relay.kernel.events_lost", lost=lost - self.kernel_events_lost,
                             total=lost)
            self.kernel_events_lost = lost
        started = self.kernel.throttled_started()
        if started <= self.kernel_unthrottled:
            return
        stopped, self.kernel_throttled = self.kernel.expire_clients(mac_limit(self.engine),
                                                                    round(now * 1e9))
        self.kernel_unthrottled = started - self.kernel_throttled
        for client in stopped:
            self._kernel_throttle(client.ifindex, client.hardware_address, False,
                                  client.dropped)

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
            for shell in (self.shell, *(() if self.v6 is None else (self.v6.shell,))):
                shell.reload_failures += 1


async def _write_on_cancel(fd: int) -> None:
    """Sleep until cancelled, then write a byte to ``fd``: a thread polling it stops."""
    try:
        await trio.sleep_forever()
    finally:
        os.write(fd, b"\0")


def open_datapath(mode: str) -> KernelDatapath | None:
    """The kernel datapath for ``--datapath`` kernel or auto, None for user (or auto where it
    does not load); one log line says which and why. Our filters left by a daemon that did not
    exit cleanly are removed first, whatever the mode: they would relay with a stale table."""
    stale = detach_stale()
    if stale:
        log.warning("relay.datapath.stale_removed", ifnames=stale,
                    note="left by a relay that did not exit cleanly")
    if mode == "user":
        log.info("relay.datapath", datapath="user", reason="--datapath user")
        return None
    try:
        kernel = KernelDatapath.load()
    except (Unavailable, OSError) as error:
        if mode == "kernel":
            raise DaemonError(f"--datapath kernel: {error}") from error
        log.info("relay.datapath", datapath="user",
                 reason=f"the kernel datapath does not load: {error}")
        return None
    log.info("relay.datapath", datapath="kernel",
             reason=f"--datapath {mode}: the tc program loaded; the daemon takes what it "
             "passes up")
    if kernel.step_lines is None:
        log.warning("relay.datapath.step_lines_in_python", reason=kernel.step_lines_missing,
                    note="the kernel path's step lines at info cost the daemon more CPU")
    return kernel


def _udp_limiter(config: RelayConfig) -> RateLimiter:
    """The broadcast helper's allowance: ``rate_limit`` datagrams a second per interface and
    port (the shell's one rate limiter, keyed by the forwarder)."""
    forwarding = config.forward_udp
    return RateLimiter(burst=1 if forwarding is None else forwarding.rate_limit, period=1.0)


def _summed(snapshots: Iterable[dict[str, int]]) -> Counter[str]:
    """Loop counters added up over the relay's sockets (per socket in the metrics)."""
    total: Counter[str] = Counter()
    for snapshot in snapshots:
        total.update(snapshot)
    return total


async def run_relay(
    config: RelayConfig,
    *,
    config6: Relay6Config | None = None,
    port6: int = SERVER_PORT_V6,
    reload: Callable[[], RelaySettings] | None = None,
    stats_interval: float = 60.0,
    stats_file: Path | None = None,
    metrics_listen: Listen | None = None,
    port: int = SERVER_PORT,
    handle_signals: bool = True,
    datapath: str = "auto",
    task_status: trio.TaskStatus[RelayService] = trio.TASK_STATUS_IGNORED,
) -> RelayService:
    """Run the relay until cancelled or stopped by SIGTERM/SIGINT; returns the service.

    ``reload`` produces validated settings on SIGHUP (raising ConfigError if they are not
    valid); ``metrics_listen``: serve the counters to Prometheus there. Ready
    (``task_status.started``) once the socket is bound and the first interface dump is in the
    engine. Stopping needs no grace period to drain anything: the relay keeps no state between
    packets but its reply tracking, and whatever is still queued in the socket is left unread
    (as dhcrelay does); the stats file gets the final counters. ``datapath``: kernel (the tc
    program, or exit 1 if it cannot load), user (none) or auto (kernel where it loads). With
    ``config6`` the DHCPv6 relay runs beside it (on ``port6``).
    """
    engine = RelayEngine(config)
    kernel = await trio.to_thread.run_sync(open_datapath, datapath)
    service6 = None if config6 is None else open_relay6(config6, port6)
    udp = open_udp(port)
    opened: list[socket.socket] = [udp]
    try:
        # RFC 8357 §5.1: requests leave from the relay port, and replies come back to it.
        upstream = None if config.relay_port is None else open_udp(config.relay_port)
        if upstream is not None:
            opened.append(upstream)
        forwarding = config.forward_udp
        broadcasts: list[socket.socket] = []
        raw = None
        if forwarding is not None:  # the UDP broadcast helper: its ports, its raw socket
            for forwarded_port in forwarding.ports:
                broadcasts.append(open_udp(forwarded_port))
                opened.append(broadcasts[-1])
            raw = open_raw()
            opened.append(raw)
        sender = Sender(udp, open_packet(), port, upstream, raw)
        listener = open_reply_listener(sender.client_port)
        opened.append(listener)
    except BaseException:
        for sock in opened:
            sock.close()
        if kernel is not None:
            kernel.close()
        if service6 is not None:
            service6.sock.close()
        raise
    service = RelayService(engine, udp, sender, stats_file, kernel, broadcasts, listener)
    service.v6 = service6
    exporter = Metrics() if metrics_listen is not None else None
    try:
        receiver = (trio.open_signal_receiver(*DAEMON_SIGNALS) if handle_signals
                    else contextlib.nullcontext())
        with receiver as signals, metrics.part(exporter, "relay", service.metrics_snapshot,
                                               FAMILIES), metrics.part(
                exporter, "relay6", service6.snapshot if service6 else dict, FAMILIES6):
            async with trio.open_nursery() as nursery:
                if exporter is not None and metrics_listen is not None:
                    await nursery.start(exporter.run, metrics_listen)
                await nursery.start(follow_interfaces, service.on_interfaces)
                for loop in [*service.loops, *(service6.loops if service6 else ())]:
                    nursery.start_soon(loop.run)
                nursery.start_soon(service.kernel_steps)
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
        try:
            service.write_stats()
            service.log.info("relay.stopped", **service.snapshot())
        finally:
            service.detach_kernel()
            sender.close()
            listener.close()
            for sock in broadcasts:
                sock.close()
            if service6 is not None:
                service6.sock.close()
    return service
