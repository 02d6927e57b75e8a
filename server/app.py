"""The service runner: every configured service in one nursery; signals as the relay takes them
(SIGHUP reload, SIGUSR1 counters, SIGTERM/SIGINT stop); the metrics endpoint, when configured,
scrapes each while it runs."""

from __future__ import annotations

import functools
import gc
from typing import TYPE_CHECKING

import structlog
import trio

from boothop.relay.metrics import Metrics
from boothop.relay.shell import DAEMON_SIGNALS, Logger, reload_config, signal_loop
from boothop.server.config import ServerConfig, check_reload, load_config

if TYPE_CHECKING:
    from boothop.server.dhcp.service import DhcpService

#: Allocations between two young-generation collections (CPython's default is 700). Every
#: packet allocates a few dozen short-lived objects and almost no cycles: collecting every
#: 700 allocations cost ~7 % of the DHCP server's CPU per DORA, every 20,000 it is noise.
GC_THRESHOLD = (20_000, 20, 20)


class _Running:
    """The running configuration and the services a reload reaches."""

    def __init__(self, config: ServerConfig, log: Logger) -> None:
        self.config, self.log = config, log
        self.dhcp: DhcpService | None = None

    def load(self) -> ServerConfig:
        """The file again, validated, and refused if it changes what only a restart can."""
        new = load_config(self.config.path)
        check_reload(self.config, new)
        return new

    def apply(self, new: ServerConfig) -> None:
        if new.dhcp is not None:
            if self.dhcp is None:
                self.log.warning("server.config.reload_skipped", reason="still starting")
                return
            if not self.dhcp.reload(new.dhcp):
                return
        self.config = new
        self.log.info("server.config.reloaded", path=new.path)
        for warning in new.warnings:
            self.log.warning("server.config.warning", message=warning)

    async def reload(self) -> None:
        await reload_config(self.load, self.apply, log=self.log, event="server.config.invalid")

    def log_counters(self) -> None:
        if self.dhcp is not None:
            self.dhcp.log_counters()


async def _signals(running: _Running, stop: trio.CancelScope,
                   task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    with trio.open_signal_receiver(*DAEMON_SIGNALS) as signals:
        task_status.started()
        await signal_loop(signals, reload=running.reload, counters=running.log_counters,
                          stop=stop, log=running.log, stopping="server.stopping")


async def run_services(config: ServerConfig,
                       task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Every configured service in one nursery, until SIGTERM/SIGINT; started (the daemon is
    ready) once every service's sockets are bound."""
    gc.set_threshold(*GC_THRESHOLD)
    log = structlog.get_logger()
    for warning in config.warnings:
        log.warning("server.config.warning", message=warning)
    metrics = Metrics() if config.metrics is not None else None
    running = _Running(config, log)
    async with trio.open_nursery() as nursery:
        await nursery.start(_signals, running, nursery.cancel_scope)
        if metrics is not None and config.metrics is not None:
            await nursery.start(metrics.run, config.metrics)
        if config.dhcp is not None:
            from boothop.server.dhcp.service import serve_dhcp
            colocated = config.pxe is not None and config.pxe.colocated
            running.dhcp = await nursery.start(
                functools.partial(serve_dhcp, config.dhcp, pxe_colocated=colocated,
                                  metrics=metrics))
        if config.dhcp6 is not None:
            from boothop.server.dhcp6.service import serve_dhcp6
            await nursery.start(functools.partial(serve_dhcp6, config.dhcp6, metrics=metrics))
        if config.pxe is not None:
            from boothop.server.pxe.service import serve_proxydhcp
            await nursery.start(functools.partial(serve_proxydhcp, config.pxe, metrics=metrics))
        if config.tftp is not None:
            from boothop.server.tftp.service import serve_tftp
            await nursery.start(functools.partial(serve_tftp, config.tftp, metrics=metrics))
        if config.http is not None:
            from boothop.server.http.service import serve_http
            await nursery.start(functools.partial(serve_http, config.http, metrics=metrics))
        log.info("server.started", config=config.path)
        task_status.started()
    log.info("server.stopped")
