"""``boothop-relay``: a command line a dhcrelay user recognizes, plus a TOML file.

    boothop-relay [options] [server ...]
    boothop-relay -6 -l [address%]IF ... -u [address%]IF ... [options]
    boothop-relay check -c FILE
    boothop-relay status [--metrics HOST:PORT | --config FILE]

boothop-relay always runs in the foreground (``-d`` is accepted for dhcrelay compatibility):
run it under systemd or another supervisor. Every dhcrelay(8) flag either means what it means
to dhcrelay or is refused with its reason (exit 2): none is read as something else. Servers may
be host names, resolved (to their first IPv4 address, as dhcrelay does) at start and on reload.
With neither ``--config`` nor a server on the command line, /etc/boothop/relay.toml is read.
``-6`` selects the DHCPv6 relay alone, as it does for dhcrelay; a TOML file with a ``[dhcpv6]``
table and helpers runs both relays in one process.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import re
import socket
import sys
from collections.abc import Sequence
from importlib.metadata import version
from ipaddress import AddressValueError, IPv4Address, IPv6Address
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from . import compiled, metrics, shell
from .classes import DEFAULT_CLASS, classify
from .config import AgentPolicy, InterfaceConfig, RelayConfig
from .configfile import MAX_HOPS_LIMIT, MAX_PACKET_LIMIT, RelaySettings, load, parse
from .interfaces import Role
from .service import run_relay
from .service6 import run_relay6
from .settings import (
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    ConfigError,
    parse_listen,
    read_toml,
)
from .wire import DHCP_MIN_MAX_SIZE, SERVER_PORT, DhcpMessage, Op, Opt
from .wire.dhcpv6 import SERVER_PORT_V6

COMMAND_LINE = "<command line>"
DEFAULT_CONFIG = Path("/etc/boothop/relay.toml")
#: dhcrelay(8): "-c count ... Maximum is 255."
DHCRELAY_MAX_HOPS = 255
_HOST_NAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?"
                        r"(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*\.?")


class Unresolved(ConfigError):
    """A server name that does not resolve now: a runtime failure (exit 1, systemd restarts
    the relay), not a bad configuration; on reload the running configuration is kept."""


class _Parser(argparse.ArgumentParser):
    """Each option is matched whole, as dhcrelay matches its arguments (strcmp).

    ``allow_abbrev=False`` stops prefix matching for ``--long`` options only (CPython 3.11's
    argparse): ``-p 1067`` was read as ``-pf 1067``, ``-r`` would be ``-rp`` and ``-ieth0``
    ``-i eth0``. Here an argument that is not exactly an option is an error (exit 2).
    """

    def _get_option_tuples(self, option_string: str) -> list[tuple[Any, ...]]:
        return []


def _ipv4(value: str) -> str:
    try:
        IPv4Address(value)
    except AddressValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an IPv4 address") from None
    return value


def _server(value: str) -> str:
    """A helper: a dotted quad (all four parts: "10.9.0" is refused, not read as 10.9.0.0) or a
    host name, resolved later (``resolve``)."""
    if value.replace(".", "").isdigit():
        return _ipv4(value)
    if not _HOST_NAME.fullmatch(value):
        raise argparse.ArgumentTypeError(f"{value!r} is neither an IPv4 address nor a host name")
    return value


def _hops(value: str) -> int:
    count = _bounded(1, DHCRELAY_MAX_HOPS)(value)
    if count > MAX_HOPS_LIMIT:
        # RFC 1542 §4.1.1: "The relay agent MUST silently discard BOOTREQUEST messages whose
        # 'hops' field exceeds the value 16": dhcrelay's -c 17..255 would forward those.
        raise argparse.ArgumentTypeError(
            f"{count}: boothop discards requests with more than {MAX_HOPS_LIMIT} hops "
            f"(RFC 1542 §4.1.1 MUST); the largest -c it honours is {MAX_HOPS_LIMIT}")
    return count


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


def _split_at_percent(value: str, what: str) -> tuple[str | None, str]:
    address, _, name = value.rpartition("%")
    if not name or len(name) > 15 or "/" in name:
        raise argparse.ArgumentTypeError(f"{value!r}: expected [address%]{what}")
    if address:
        try:
            IPv6Address(address)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{address!r} is not an IPv6 address") from None
    return address or None, name


def _lower(value: str) -> dict[str, str]:
    if "#" in value:
        raise argparse.ArgumentTypeError(
            f"{value!r}: the #index form is not supported: boothop follows interfaces by name")
    link, name = _split_at_percent(value, "ifname")
    return {"name": name, **({"link_address": link} if link else {})}


def _upper(value: str) -> dict[str, str]:
    address, name = _split_at_percent(value, "ifname")
    return {"interface": name, **({"address": address} if address else {})}


#: dhcrelay flags of its DHCPv4 mode only (dhcrelay -6 refuses them too).
V4_ONLY = ("interfaces", "link_interface", "reply_giaddr", "max_hops", "agent_info",
           "agent_policy", "max_packet_size", "relay_port", "servers")
V6_ONLY = ("lower", "upper", "interface_id", "subscriber_id")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="boothop-relay",
        description="DHCP/BOOTP relay agent forwarding to DHCP and PXE helper addresses. "
        "Flags follow ISC dhcrelay(8); see also `boothop-relay check -c FILE`.",
        epilog=f"Without --config and without a server, {DEFAULT_CONFIG} is read. Exit status: "
        "0 stopped, 1 runtime failure (a port or a capability missing, a server name that does "
        "not resolve), 2 usage (including a dhcrelay flag boothop refuses), 78 configuration.",
        allow_abbrev=False,
    )
    add = parser.add_argument
    add("servers", nargs="*", metavar="server", type=_server,
        help="helper addresses or host names (replace the file's `helpers`)")
    add("--version", action="version", version=f"%(prog)s {version('boothop')}")
    add("-4", dest="ipv4", action="store_true", help="DHCPv4/BOOTP relay (the default)")
    add("-6", dest="ipv6", action="store_true",
        help="DHCPv6 relay (RFC 8415) instead: needs -l and -u; port 547 unless -p")
    add("-d", dest="foreground", action="store_true",
        help="foreground (accepted; boothop-relay always runs in the foreground)")
    add("-q", dest="quiet", action="store_true", help="quiet: log warnings and errors only")
    add("-p", dest="port", type=_bounded(1, 65535), metavar="PORT",
        help="listen on PORT and send to servers' PORT, to clients' PORT+1 (default 67; 547 "
        "with -6)")
    add("-rp", dest="relay_port", type=_bounded(1, 65535), metavar="PORT",
        help="alternative source port for upstream (toward the server) messages, with the "
        "DHCPv4 relay agent information relay-port sub-option (RFC 8357); replies come back "
        "to it")
    add("-i", dest="interfaces", action="append", default=[], metavar="IF",
        type=lambda name: (name, Role.BOTH), help="interface facing clients and servers")
    add("-iu", dest="interfaces", action="append", metavar="IF",
        type=lambda name: (name, Role.UPSTREAM), help="upstream interface (towards servers)")
    add("-id", dest="interfaces", action="append", metavar="IF",
        type=lambda name: (name, Role.DOWNSTREAM), help="downstream interface (client-facing)")
    add("-U", dest="link_interface", metavar="IF",
        help="RFC 3527 link selection: giaddr is IF's address, the link selection sub-option the "
        "client interface's; implies -a and -i IF; needs the client interfaces named (-i/-id)")
    add("-g", dest="reply_giaddr", metavar="ADDRESS",
        help="write ADDRESS as giaddr into replies delivered to clients (dhcrelay's workaround "
        "for clients that route via giaddr)")
    add("-c", dest="max_hops", type=_hops, metavar="COUNT",
        help=f"drop requests with hops >= COUNT (default 10; at most {MAX_HOPS_LIMIT}, for RFC "
        "1542 §4.1.1 discards more than 16 hops)")
    add("-a", dest="agent_info", action="store_true", help="add relay agent information (82)")
    add("-m", dest="agent_policy", choices=[p.value for p in AgentPolicy],
        help="requests already carrying option 82 (default replace)")
    add("-A", dest="max_packet_size", type=_bounded(DHCP_MIN_MAX_SIZE, MAX_PACKET_LIMIT),
        metavar="LENGTH", help="largest request once option 82 is added (default 576)")
    add("-D", dest="drop_mismatch", action="store_true",
        help="drop replies whose circuit-id names no interface of ours (accepted; always on "
        "when this relay adds option 82)")
    add("-pf", dest="pid_file", type=Path, metavar="FILE", help="write the process id to FILE")
    add("--no-pid", dest="no_pid", action="store_true",
        help="write no pid file (the default without -pf; with it, -pf is ignored)")
    add("-l", dest="lower", action="append", default=[], type=_lower, metavar="LOWER",
        help="-6: [ADDRESS%%]IF: client-facing interface; ADDRESS: the link-address of its "
        "Relay-forwards (default: its first global or ULA address)")
    add("-u", dest="upper", action="append", default=[], type=_upper, metavar="UPPER",
        help="-6: [ADDRESS%%]IF: relay to ADDRESS (default ff05::1:3, All_DHCP_Servers) out of "
        "IF")
    add("-I", dest="interface_id", action="store_true",
        help="-6: send the Interface-ID option (accepted; boothop always sends it)")
    add("-s", dest="subscriber_id", metavar="SUBSCRIBER-ID",
        help="-6: add this Subscriber-ID option (RFC 4580) to every Relay-forward")
    add("--config", type=Path, metavar="FILE",
        help=f"TOML configuration (see config/relay.toml; default {DEFAULT_CONFIG} when no "
        "server is given)")
    add("--log-format", choices=shell.FORMATS, help="default: console on a terminal, else json")
    add("--log-level", choices=shell.LEVELS)
    add("--stats-file", type=Path, metavar="FILE",
        help="keep the counters in FILE as JSON (refreshed as they change, and on SIGUSR1)")
    add("--stats-interval", type=float, metavar="SECONDS",
        help="seconds between relay.stats log lines (0: never; default 60)")
    add("--metrics", type=_listen, metavar="HOST:PORT",
        help="serve the counters to Prometheus at http://HOST:PORT/metrics")
    add("--datapath", choices=("auto", "kernel", "user"), default="auto",
        help="kernel: relay the common cases in a tc-BPF program, the daemon takes the rest "
        "(exit 1 if it cannot load); user: every packet through the daemon; auto (default): "
        "kernel where it loads, one log line says which and why")
    return parser


def parse_args(argv: Sequence[str], default_config: Path = DEFAULT_CONFIG) -> argparse.Namespace:
    """The command line, checked as a whole (exit 2 on misuse); ``default_config`` is read when
    neither --config nor a server is given and it exists."""
    parser = build_parser()
    args = parser.parse_intermixed_args(argv)
    other = V4_ONLY if args.ipv6 else V6_ONLY
    for key in other:
        if getattr(args, key):
            flag = "a server" if key == "servers" else f"the flag setting {key}"
            parser.error(f"{flag} belongs to {'DHCPv4' if args.ipv6 else 'DHCPv6 (-6)'} mode "
                         "only")
    if args.ipv6 and (bool(args.lower) != bool(args.upper)):
        parser.error("-6 needs both -l (client-facing) and -u (upstream) interfaces")
    if args.port is None:
        args.port = SERVER_PORT_V6 if args.ipv6 else SERVER_PORT
    if args.link_interface is not None and not args.interfaces:
        parser.error("-U needs the client interfaces named with -i or -id: boothop sets RFC 3527 "
                     "link selection per interface, and cannot pick them from every interface")
    if args.relay_port == args.port:
        parser.error(f"-rp {args.relay_port} is the port -p listens on for clients: the RFC 8357 "
                     "relay port must be another")
    if args.config is None and not args.servers and not args.lower and default_config.exists():
        args.config = default_config
    return args


def resolve(servers: Sequence[str]) -> list[str]:
    """Each server's first IPv4 address (dhcrelay takes gethostbyname()'s first); raises
    Unresolved naming the server that has none."""
    addresses = []
    for server in servers:
        try:
            found = socket.getaddrinfo(server, None, socket.AF_INET, socket.SOCK_DGRAM)
        except OSError as error:
            raise Unresolved(COMMAND_LINE, "server", f"{server!r} does not resolve to an IPv4 "
                             f"address: {error.strerror or error}") from None
        addresses.append(str(found[0][4][0]))
    return addresses


def settings_from_args(args: argparse.Namespace) -> RelaySettings:
    """The file (if any) with the command line merged in, validated as one."""
    file = read_toml(args.config) if args.config else None
    raw: dict[str, Any] = dict(file.data) if file else {}
    if args.ipv6:
        # dhcrelay -6 relays DHCPv6 only: the file's IPv4 relay is not run.
        raw.pop("helpers", None)
        raw.pop("interface", None)
        dhcpv6 = dict(raw.get("dhcpv6") or {})
        if args.lower:
            dhcpv6["lower"], dhcpv6["upper"] = args.lower, args.upper
        if args.subscriber_id is not None:
            dhcpv6["subscriber_id"] = args.subscriber_id
        raw["dhcpv6"] = dhcpv6
    if args.servers:
        raw["helpers"] = resolve(args.servers)
    flags = list(args.interfaces)
    if args.link_interface is not None:
        flags.append((args.link_interface, Role.BOTH))
    if flags:
        raw["interface"] = _merge_interfaces(raw.get("interface", []), flags,
                                             args.link_interface)
    for key in ("max_hops", "agent_policy", "max_packet_size", "stats_interval", "reply_giaddr",
                "metrics", "relay_port"):
        if getattr(args, key) is not None:
            raw[key] = getattr(args, key)
    if args.agent_info or args.link_interface is not None:
        raw["agent_info"] = True
    # The file's line numbers hold only while the flags changed nothing of it.
    text = file.text if file and raw == file.data else None
    return parse(raw, args.config or COMMAND_LINE, text)


def _merge_interfaces(from_file: object, flags: list[tuple[str, Role]],
                      link_selection: str | None) -> list[dict[str, Any]]:
    """-i/-iu/-id replace the file's list; a name given with both -iu and -id plays both roles;
    -U IF sets link selection through IF on every client-facing interface."""
    tables = {t.get("name"): t for t in from_file if isinstance(t, dict)} if isinstance(
        from_file, list) else {}
    roles: dict[str, Role] = {}
    for name, role in flags:
        previous = roles.get(name)
        roles[name] = role if previous is None or previous is role else Role.BOTH
    selection = {} if link_selection is None else {"link_selection": link_selection}
    return [{**tables.get(name, {}), "name": name, "role": role.value,
             **(selection if role.faces_clients else {})}
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
    relay, relay6 = settings.relay, settings.relay6
    parts = [] if relay is None else [
        f"{len(relay.helpers)} helpers, {len(relay.interfaces) or 'all'} interfaces"]
    if relay6 is not None:
        parts.append(f"DHCPv6: {len(relay6.lower)} lower, {len(relay6.upper)} upper")
    print(f"{args.config}: ok ({'; '.join(parts)})")
    if relay is not None and relay.classes:
        for line in pxe_routes(relay):
            print(line)
    for warning in learned_warnings(settings):
        print(f"warning: {warning}", file=sys.stderr)
    return EXIT_OK


#: PXE clients as a relay sees them (PXE spec 2.1 option 60, RFC 4578 option 93).
PXE_PROBES = (("BIOS", 0), ("EFI x64", 7))


def pxe_routes(relay: RelayConfig) -> list[str]:
    """Where the classes send PXE clients, per client-facing interface: what the seed-2
    diagnosis needs a person to see (a class that sends them to no PXE server)."""
    names = [i.name for i in relay.interfaces if i.role.faces_clients] or [""]
    lines = []
    for ifname in names:
        for arch_name, arch in PXE_PROBES:
            probe = DhcpMessage(op=Op.BOOTREQUEST, xid=0, options=(
                (Opt.VENDOR_CLASS_ID, f"PXEClient:Arch:{arch:05d}:UNDI:002001".encode()),
                (Opt.CLIENT_ARCH, arch.to_bytes(2, "big"))))
            matched = classify(relay.classes, probe, ifname)
            if matched is None:
                which = "no class (the default helpers)"
                helpers = relay.helpers_for(relay.interface(ifname) or InterfaceConfig(ifname))
            else:
                which, helpers = f"class {matched.name!r}", matched.helpers
            where = f"on {ifname}" if ifname else "on any interface"
            lines.append(f"  PXE clients ({arch_name}) {where}: {which} -> "
                         f"{', '.join(map(str, helpers))}")
    return lines


def learned_warnings(settings: RelaySettings) -> list[str]:
    """What the running relay (its metrics endpoint, when the file names one) learned: the
    forwarding classes whose PXE clients got an address and no boot information."""
    if settings.metrics is None:
        return []
    try:
        text = metrics.scrape(settings.metrics, timeout=2.0)
    except OSError:
        return []
    warnings = []
    for family in text_string_to_metric_families(text):
        if family.name != "boothop_relay_pxe_unbootable":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.value:
                name = sample.labels["class"]
                warnings.append(
                    f"the running relay ({settings.metrics}) saw {sample.value:g} PXE "
                    f"client(s) of {'class ' + repr(name) if name != DEFAULT_CLASS else 'no class'}"
                    " get an address and no boot information: their helpers include no PXE "
                    "server and the DHCP server offers no boot information either (PXE-E53); "
                    "add the PXE server to that class's helpers")
    return warnings


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
    return metrics.print_status("boothop-relay", listen, "boothop_relay_")


def build_datapath(argv: Sequence[str]) -> int:
    """``boothop-relay build-datapath [--cache DIR]``: compile the shipped C (at install)."""
    parser = _Parser(prog="boothop-relay build-datapath", allow_abbrev=False,
                     description="Compile the C shipped with boothop as source (the kernel "
                     "datapath's tc-BPF program and step-line renderer, the TFTP server's "
                     "lock-step loop) into its cache (clang); print the built files' paths.")
    parser.add_argument("--cache", type=Path, metavar="DIR",
                        help="where to keep it (default $BOOTHOP_BPF_CACHE or "
                        f"{compiled.DEFAULT_CACHE})")
    args = parser.parse_args(argv)
    try:
        for source in compiled.SOURCES:
            print(compiled.build(source, args.cache))
    except compiled.Unavailable as error:
        print(f"boothop-relay: {error}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["check"]:
        return check(argv[1:])
    if argv[:1] == ["status"]:
        return status(argv[1:])
    if argv[:1] == ["build-datapath"]:
        return build_datapath(argv[1:])
    args = parse_args(argv)
    try:
        settings = settings_from_args(args)
    except Unresolved as error:
        print(error.prefixed("boothop-relay"), file=sys.stderr)
        return EXIT_FAILURE
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

    pid_file = None if args.no_pid else args.pid_file
    if pid_file is not None:
        pid_file.write_text(f"{os.getpid()}\n")
    try:
        common = {"reload": reload, "stats_interval": settings.stats_interval,
                  "stats_file": args.stats_file, "metrics_listen": settings.metrics}
        if settings.relay is None:
            assert settings.relay6 is not None  # parse: one of them at least
            return shell.run_daemon("boothop-relay", functools.partial(
                run_relay6, settings.relay6, port=args.port, **common))
        return shell.run_daemon("boothop-relay", functools.partial(
            run_relay, settings.relay, config6=settings.relay6, port=args.port,
            datapath=args.datapath, **common))
    finally:
        if pid_file is not None:
            pid_file.unlink(missing_ok=True)
