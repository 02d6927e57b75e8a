"""The service runner: every configured service in one nursery; SIGTERM/SIGINT stop them; the
metrics endpoint, when configured, scrapes each while it runs."""

from __future__ import annotations

import functools
import gc
import signal

import structlog
import trio

from boothop.relay.metrics import Metrics
from boothop.server.config import ServerConfig


async def _stop_on_signal(cancel_scope: trio.CancelScope,
                          task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        async for signum in signals:
            structlog.get_logger().info("server.stopping", signal=signal.Signals(signum).name)
            cancel_scope.cancel()
            return


#: Allocations between two young-generation collections (CPython's default is 700). Every
#: packet allocates a few dozen short-lived objects and almost no cycles: collecting every
#: 700 allocations cost ~7 % of the DHCP server's CPU per DORA, every 20,000 it is noise.
GC_THRESHOLD = (20_000, 20, 20)


async def run_services(config: ServerConfig,
                       task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Every configured service in one nursery, until SIGTERM/SIGINT; started (the daemon is
    ready) once every service's sockets are bound."""
    gc.set_threshold(*GC_THRESHOLD)
    log = structlog.get_logger()
    for warning in config.warnings:
        log.warning("server.config.warning", message=warning)
    metrics = Metrics() if config.metrics is not None else None
    async with trio.open_nursery() as nursery:
        await nursery.start(_stop_on_signal, nursery.cancel_scope)
        if metrics is not None and config.metrics is not None:
            await nursery.start(metrics.run, config.metrics)
        if config.dhcp is not None:
            from boothop.server.dhcp.service import serve_dhcp
            colocated = config.pxe is not None and config.pxe.colocated
            await nursery.start(functools.partial(serve_dhcp, config.dhcp, pxe_colocated=colocated,
                                                  metrics=metrics))
        if config.pxe is not None:
            from boothop.server.pxe.service import serve_proxydhcp
            await nursery.start(functools.partial(serve_proxydhcp, config.pxe, metrics=metrics))
        if config.tftp is not None:
            from boothop.server.tftp.service import serve_tftp
            await nursery.start(functools.partial(serve_tftp, config.tftp, metrics=metrics))
        log.info("server.started", config=config.path)
        task_status.started()
    log.info("server.stopped")
