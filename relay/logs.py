"""structlog configuration for the relay (called once, from the CLI) and a log rate limiter."""

from __future__ import annotations

import logging
import sys
from collections.abc import Hashable
from typing import TextIO

import structlog

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("auto", "console", "json")


def configure(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Configure structlog: one logger, to stderr, console renderer on a TTY, JSON otherwise."""
    out = stream if stream is not None else sys.stderr
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r}")
    if level not in LEVELS:
        raise ValueError(f"unknown log level {level!r}")
    json_output = fmt == "json" or (fmt == "auto" and not out.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if json_output
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )


class RateLimiter:
    """At most ``burst`` log lines per key per ``period`` seconds; the rest are counted.

    For events a remote party can trigger (drops, send errors): a flood must not become a
    flood of log lines.
    """

    def __init__(self, burst: int = 10, period: float = 10.0) -> None:
        self.burst = burst
        self.period = period
        self._windows: dict[Hashable, tuple[float, int, int]] = {}

    def allow(self, key: Hashable, now: float) -> int | None:
        """None if this line must be suppressed, else how many were suppressed before it."""
        start, used, suppressed = self._windows.get(key, (now, 0, 0))
        if now - start >= self.period:
            start, used = now, 0
        if used >= self.burst:
            self._windows[key] = (start, used, suppressed + 1)
            return None
        self._windows[key] = (start, used + 1, 0)
        return suppressed
