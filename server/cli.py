"""boothop-server: run (default), check, leases, reconcile, status."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar

from boothop.relay.settings import (
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    ConfigError,
    DaemonError,
    Listen,
    parse_listen,
)
from boothop.server.config import ServerConfig, load_config
from boothop.server.dhcp.config import DhcpConfig
from boothop.server.dhcp.lease import Lease
from boothop.server.dhcp6.lease import Lease6

if TYPE_CHECKING:
    from boothop.server.leasestore import LeaseStore

T = TypeVar("T")

PROG = "boothop-server"
DEFAULT_CONFIG = "/etc/boothop/server.toml"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", default=argparse.SUPPRESS, help="the TOML file")
    parser.add_argument("-c", "--config", default=DEFAULT_CONFIG,
                        help=f"the TOML file (default {DEFAULT_CONFIG})")
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", parents=[common], help="serve (the default command)")
    run.add_argument("--log-format", choices=("auto", "json", "console"))
    run.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    run.add_argument("--metrics", type=_listen, metavar="HOST:PORT",
                     help="serve the counters to Prometheus (over [metrics] listen)")
    sub.add_parser(
        "check", parents=[common], help="validate the configuration (and the lease database)"
    )
    leases = sub.add_parser("leases", parents=[common], help="list leases")
    leases.add_argument("--json", action="store_true", help="one JSON array, for machines")
    reconcile = sub.add_parser("reconcile", parents=[common], help="repair the lease database")
    reconcile.add_argument("--dry-run", action="store_true", help="report, change nothing")
    status = sub.add_parser("status", parents=[common],
                            help="print a running server's counters (from its metrics endpoint)")
    status.add_argument("--metrics", type=_listen, metavar="HOST:PORT",
                        help="the endpoint (default: [metrics] listen of the file)")
    return parser


def _listen(value: str) -> Listen:
    try:
        return parse_listen(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _dhcp(config: ServerConfig) -> DhcpConfig:
    if config.dhcp is None:
        raise ConfigError(config.path, "dhcp", "this command needs a [dhcp] section")
    return config.dhcp


def _when(value: float | None) -> str:
    if value is None:
        return "never"
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S")


def cmd_check(config: ServerConfig) -> int:
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    errors = 0
    if config.dhcp is not None:
        path = config.dhcp.lease_db
        if not os.path.lexists(path) and (problem := _uncreatable(path)) is not None:
            print(f"{PROG}: lease database {path}: {problem}", file=sys.stderr)
            return EXIT_FAILURE
        leases = _read_leases(path, _load)
        now = time.time()
        for s_index, subnet in enumerate(config.dhcp.subnets):
            for r_index, reservation in enumerate(subnet.reservations):
                held = next((lease for lease in leases
                             if lease.address == reservation.address and lease.is_active(now)),
                            None)
                if held is None:
                    continue
                if (reservation.mac is not None and held.mac == reservation.mac) or (
                    reservation.client_id is not None and held.client_id == reservation.client_id
                ):
                    continue
                errors += 1
                print(
                    ConfigError(
                        config.path,
                        f"dhcp.subnets[{s_index}].reservations[{r_index}].address",
                        f"{reservation.address} is leased to another client "
                        f"({held.mac.hex(':')}) until {_when(held.expires)}; "
                        "run `boothop-server reconcile` to hand it back",
                    ).prefixed(PROG),
                    file=sys.stderr,
                )
    if errors:
        return EXIT_FAILURE
    print(f"{config.path}: ok")
    return EXIT_OK


def _uncreatable(path: str) -> str | None:
    """Why ``run`` could not create a lease database at ``path``, or None."""
    directory = os.path.dirname(os.path.abspath(path))
    while not os.path.lexists(directory):
        directory = os.path.dirname(directory)
    if not os.path.isdir(directory):
        return f"cannot be created: {directory} is not a directory"
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"cannot be created: {directory} is not writable"
    return None


def _read_leases(path: str, read: Callable[[LeaseStore], list[T]]) -> list[T]:
    """Rows on disk (``read``: the IPv4 or the DHCPv6 table), read only: a database that does
    not exist yet holds none (the daemon creates it; a command that only reads must not)."""
    if not os.path.lexists(path):
        return []
    from boothop.server.leasestore import open_store
    store = open_store(path, create=False)
    try:
        return read(store)
    finally:
        store.close()


def _load(store: LeaseStore) -> list[Lease]:
    return store.load()


def _load6(store: LeaseStore) -> list[Lease6]:
    return store.load6()


def _rows6(config: ServerConfig) -> list[dict[str, object]]:
    if config.dhcp6 is None:
        return []
    return [{"family": 6, "address": str(lease.address), "state": lease.state.value,
             "duid": lease.duid.hex(":"), "iaid": lease.iaid, "subnet": lease.subnet,
             "starts": lease.starts, "expires": lease.expires,
             "mac": lease.mac.hex(":") if lease.mac else None}
            for lease in _read_leases(config.dhcp6.lease_db, _load6)]


def cmd_leases(config: ServerConfig, as_json: bool) -> int:
    """The IPv4 leases and (with [dhcp6]) the DHCPv6 bindings; ``--json``: one array, the
    DHCPv6 rows marked ``"family": 6``."""
    if config.dhcp6 is None:
        _dhcp(config)
    leases = (_read_leases(config.dhcp.lease_db, _load) if config.dhcp is not None
              else [])
    rows: list[dict[str, object]] = [{
        "address": str(lease.address), "state": lease.state.value, "mac": lease.mac.hex(":"),
        "client_id": lease.client_id.hex(":") if lease.client_id else None,
        "subnet": lease.subnet, "starts": lease.starts, "expires": lease.expires,
        "hostname": lease.hostname,
    } for lease in leases]
    rows6 = _rows6(config)
    if as_json:
        print(json.dumps(rows + rows6, indent=1))
        return 0
    if config.dhcp is not None:
        print(f"{'address':<16}{'state':<10}{'mac':<19}{'client-id':<24}{'expires (UTC)':<21}"
              "hostname")
        for row, lease in zip(rows, leases, strict=True):
            print(f"{row['address']:<16}{row['state']:<10}{row['mac']:<19}"
                  f"{(row['client_id'] or '-'):<24}{_when(lease.expires):<21}"
                  f"{row['hostname'] or '-'}")
    if config.dhcp6 is not None:
        print(f"{'address (DHCPv6)':<28}{'state':<10}{'iaid':<12}{'expires (UTC)':<21}duid")
        for row6 in rows6:
            expires = row6["expires"]
            print(f"{row6['address']!s:<28}{row6['state']!s:<10}{row6['iaid']!s:<12}"
                  f"{_when(expires if isinstance(expires, float) else None):<21}{row6['duid']}")
    return 0


def cmd_reconcile(config: ServerConfig, dry_run: bool) -> int:
    """Both families: [dhcp]'s leases and [dhcp6]'s bindings against their reservations."""
    from boothop.server.leasestore import open_store
    from boothop.server.reconcile import format_plan, plan_reconcile, plan_reconcile6
    if config.dhcp6 is None:
        _dhcp(config)
    if config.dhcp is not None:
        store = open_store(config.dhcp.lease_db)
        try:
            plan = plan_reconcile(config.dhcp, store.load(), time.time())
            print(format_plan(plan, dry_run))
            if not dry_run and plan.changes:
                store.write(plan.upserts, plan.deletes)
        finally:
            store.close()
    if config.dhcp6 is not None:
        store = open_store(config.dhcp6.lease_db)
        try:
            plan6 = plan_reconcile6(config.dhcp6, store.load6(), time.time())
            print(format_plan(plan6, dry_run).replace("reconcile:", "reconcile (DHCPv6):", 1))
            if not dry_run and plan6.changes:
                store.write6(plan6.upserts, plan6.deletes)
        finally:
            store.close()
    return 0


def cmd_status(listen: Listen | None, path: str) -> int:
    from boothop.relay import metrics
    if listen is None:
        print(f"{PROG}: {path}: no metrics endpoint ([metrics] listen) and no --metrics",
              file=sys.stderr)
        return EXIT_USAGE
    return metrics.print_status(PROG, listen, "boothop_server_")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = args.command or "run"
    path = getattr(args, "config", DEFAULT_CONFIG)
    try:
        if command == "status" and args.metrics is not None:
            return cmd_status(args.metrics, path)
        config = load_config(path)
        if getattr(args, "metrics", None) is not None:
            config = dataclasses.replace(config, metrics=args.metrics)
        if command == "status":
            return cmd_status(config.metrics, path)
        if command == "check":
            return cmd_check(config)
        if command == "leases":
            return cmd_leases(config, args.json)
        if command == "reconcile":
            return cmd_reconcile(config, args.dry_run)
    except ConfigError as exc:
        print(exc.prefixed(PROG), file=sys.stderr)
        return EXIT_CONFIG
    except DaemonError as exc:  # the lease database (leasestore.LeaseDbError)
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    from boothop.relay.shell import configure_logging, run_daemon
    from boothop.server.app import run_services
    configure_logging(getattr(args, "log_level", "info"),
                      getattr(args, "log_format", None) or config.log_format)
    return run_daemon(PROG, functools.partial(run_services, config))

