"""``boothop-relay``: a command line a dhcrelay user recognizes, plus a TOML file.

    boothop-relay [options] [server ...]
    boothop-relay check -c FILE
    boothop-relay status [--metrics HOST:PORT | --config FILE]

boothop-relay always runs in the foreground (``-d`` is accepted for dhcrelay compatibility):
run it under systemd or another supervisor. Servers must be IPv4 addresses (not host names).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from ipaddress import AddressValueError, IPv4Address
from pathlib import Path
from typing import Any

from . import metrics, shell
from .config import AgentPolicy
from .configfile import MAX_HOPS_LIMIT, MAX_PACKET_LIMIT, RelaySettings, load, parse
from .interfaces import Role
from .service import run_relay
from .settings import (
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    ConfigError,
    parse_listen,
    read_toml,
)
from .wire import DHCP_MIN_MAX_SIZE

COMMAND_LINE = "<command line>"


def _ipv4(value: str) -> str:
    try:
        IPv4Address(value)
    except AddressValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an IPv4 address") from None
    return value


def _listen(value: str) -> str:
    try:
        parse_listen(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return value


def _bounded(low: int, high: int) -> Any:
    def convert(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
        if not low <= number <= high:
            raise argparse.ArgumentTypeError(f"{number} out of range {low}..{high}")
        return number
    return convert


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="boothop-relay",
        description="DHCP/BOOTP relay agent forwarding to DHCP and PXE helper addresses. "
        "Flags follow ISC dhcrelay; see also `boothop-relay check -c FILE`.",
        allow_abbrev=False,
    )
    add = parser.add_argument
    add("servers", nargs="*", metavar="server", type=_ipv4,
        help="helper addresses (replace the file's `helpers`)")
    add("-4", dest="ipv4", action="store_true", help="IPv4 (accepted; boothop relays IPv4 only)")
    add("-d", dest="foreground", action="store_true",
        help="foreground (accepted; boothop-relay always runs in the foreground)")
    add("-q", dest="quiet", action="store_true", help="quiet: log warnings and errors only")
    add("-i", dest="interfaces", action="append", default=[], metavar="IF",
        type=lambda name: (name, Role.BOTH), help="interface facing clients and servers")
    add("-iu", dest="interfaces", action="append", metavar="IF",
        type=lambda name: (name, Role.UPSTREAM), help="upstream interface (towards servers)")
    add("-id", dest="interfaces", action="append", metavar="IF",
        type=lambda name: (name, Role.DOWNSTREAM), help="downstream interface (client-facing)")
    add("-c", dest="max_hops", type=_bounded(1, MAX_HOPS_LIMIT), metavar="COUNT",
        help="drop requests with hops >= COUNT (default 10)")
    add("-a", dest="agent_info", action="store_true", help="add relay agent information (82)")
    add("-m", dest="agent_policy", choices=[p.value for p in AgentPolicy],
        help="requests already carrying option 82 (default replace)")
    add("-A", dest="max_packet_size", type=_bounded(DHCP_MIN_MAX_SIZE, MAX_PACKET_LIMIT),
        metavar="LENGTH", help="largest request once option 82 is added (default 576)")
    add("-D", dest="drop_mismatch", action="store_true",
        help="drop replies whose circuit-id names no interface of ours (accepted; always on "
        "when this relay adds option 82)")
    add("-pf", dest="pid_file", type=Path, metavar="FILE", help="write the process id to FILE")
    add("--config", type=Path, metavar="FILE", help="TOML configuration (see config/relay.toml)")
    add("--log-format", choices=shell.FORMATS, help="default: console on a terminal, else json")
    add("--log-level", choices=shell.LEVELS)
    add("--stats-file", type=Path, metavar="FILE",
        help="keep the counters in FILE as JSON (refreshed as they change, and on SIGUSR1)")
    add("--stats-interval", type=float, metavar="SECONDS",
        help="seconds between relay.stats log lines (0: never; default 60)")
    add("--metrics", type=_listen, metavar="HOST:PORT",
        help="serve the counters to Prometheus at http://HOST:PORT/metrics")
    return parser


def settings_from_args(args: argparse.Namespace) -> RelaySettings:
    """The file (if any) with the command line merged in, validated as one."""
    file = read_toml(args.config) if args.config else None
    raw: dict[str, Any] = dict(file.data) if file else {}
    if args.servers:
        raw["helpers"] = list(args.servers)
    if args.interfaces:
        raw["interface"] = _merge_interfaces(raw.get("interface", []), args.interfaces)
    for key in ("max_hops", "agent_policy", "max_packet_size", "stats_interval", "metrics"):
        if getattr(args, key) is not None:
            raw[key] = getattr(args, key)
    if args.agent_info:
        raw["agent_info"] = True
    # The file's line numbers hold only while the flags changed nothing of it.
    text = file.text if file and raw == file.data else None
    return parse(raw, args.config or COMMAND_LINE, text)


def _merge_interfaces(from_file: object, flags: list[tuple[str, Role]]) -> list[dict[str, Any]]:
    """-i/-iu/-id replace the file's list; a name given with both -iu and -id plays both roles."""
    tables = {t.get("name"): t for t in from_file if isinstance(t, dict)} if isinstance(
        from_file, list) else {}
    roles: dict[str, Role] = {}
    for name, role in flags:
        previous = roles.get(name)
        roles[name] = role if previous is None or previous is role else Role.BOTH
    return [{**tables.get(name, {}), "name": name, "role": role.value}
            for name, role in roles.items()]


def check(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="boothop-relay check",
                                     description="validate a configuration file")
    parser.add_argument("-c", dest="config", required=True, type=Path, metavar="FILE")
    args = parser.parse_args(argv)
    try:
        settings = load(args.config)
    except ConfigError as error:
        print(error.prefixed("boothop-relay"), file=sys.stderr)
        return EXIT_CONFIG
    relay = settings.relay
    print(f"{args.config}: ok ({len(relay.helpers)} helpers, "
          f"{len(relay.interfaces) or 'all'} interfaces)")
    return EXIT_OK


def status(argv: Sequence[str]) -> int:
    """The running relay's counters for a person, read from its metrics endpoint."""
    parser = argparse.ArgumentParser(
        prog="boothop-relay status",
        description="print a running relay's counters (read from its metrics endpoint)")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--metrics", type=_listen, metavar="HOST:PORT")
    where.add_argument("--config", type=Path, metavar="FILE", help="the relay's TOML file")
    args = parser.parse_args(argv)
    try:
        listen = parse_listen(args.metrics) if args.metrics else load(args.config).metrics
    except ConfigError as error:
        print(error.prefixed("boothop-relay"), file=sys.stderr)
        return EXIT_CONFIG
    if listen is None:
        print(f"boothop-relay: {args.config}: no metrics endpoint configured "
              "(metrics = \"HOST:PORT\")", file=sys.stderr)
        return EXIT_USAGE
    try:
        text = metrics.scrape(listen)
    except OSError as error:  # urllib's URLError included
        print(f"boothop-relay: cannot read http://{listen}/metrics: {error}", file=sys.stderr)
        return EXIT_FAILURE
    print(metrics.status(text, "boothop_relay_"))
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["check"]:
        return check(argv[1:])
    if argv[:1] == ["status"]:
        return status(argv[1:])
    parser = build_parser()
    args = parser.parse_intermixed_args(argv)
    try:
        settings = settings_from_args(args)
    except ConfigError as error:
        print(error.prefixed("boothop-relay"), file=sys.stderr)
        return EXIT_CONFIG
    shell.configure_logging(log_level(args, settings),
                            args.log_format or settings.log_format or "auto")
    return run(args, settings)


def log_level(args: argparse.Namespace, settings: RelaySettings) -> str:
    """The command line's level, else the file's, else info."""
    return args.log_level or ("warning" if args.quiet else settings.log_level or "info")


def run(args: argparse.Namespace, settings: RelaySettings) -> int:
    def reload() -> RelaySettings:
        fresh = settings_from_args(args)
        return dataclasses.replace(fresh, log_level=log_level(args, fresh))

    if args.pid_file is not None:
        args.pid_file.write_text(f"{os.getpid()}\n")
    try:
        return shell.run_daemon("boothop-relay", lambda: run_relay(
            settings.relay, reload=reload, stats_interval=settings.stats_interval,
            stats_file=args.stats_file, metrics_listen=settings.metrics,
        ))
    finally:
        if args.pid_file is not None:
            args.pid_file.unlink(missing_ok=True)
