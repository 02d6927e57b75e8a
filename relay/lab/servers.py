"""The lab's daemons: the relay on the router, boothop-server on the DHCP and PXE hosts.

Writes their configuration from the LabSpec, gives their command lines, and reads what they saw
back from their JSON logs and the relay's stats file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Collection, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, TypedDict

from . import containers, initramfs
from .initramfs import KERNEL_ARGS, REPORT_PREFIX
from .locations import BOOT_PROGRAMS, boot_program, cache_dir, program
from .processes import wait_for
from .spec import ClientSpec, LabSpec, ipv6_twin, is_ipv6_client

BOOT_SCRIPT = "boot.ipxe"
KERNEL, INITRD = "vmlinuz", "initrd.gz"
#: Where the booted kernels' reports land: the PXE host's TFTP upload directory.
REPORTS = "reports"
#: Every iPXE (the NIC's ROM, undionly.kpxe, ipxe.efi) runs this script; it hands over to the
#: one the lab wrote for the client's MAC, which boots the kernel for the client's chain.
IPXE_SCRIPT = """#!ipxe
echo boothop lab: boot script running on ${net0/ip} (${platform}, ${net0/chip})
chain tftp://${next-server}/boot-${net0/mac:hexhyp}.ipxe
"""
#: The kernel reports to the PXE host (next-server) which chain it was booted by. iPXE loads
#: the kernel and the initramfs from the PXE host's HTTP server (the same files as its TFTP
#: root): TCP's window against TFTP's one block per round trip, which under emulation (and
#: through undionly.kpxe's UNDI calls most of all) is most of a boot's time.
CLIENT_SCRIPT = """#!ipxe
kernel http://${next-server}/%(kernel)s initrd=%(initrd)s %(args)s boothop.chain=%(chain)s \
boothop.server=${next-server}
initrd http://${next-server}/%(initrd)s
boot
"""
#: A client of an IPv6 chain: OVMF gets ipxe.efi by DHCPv6's Bootfile-URL, iPXE this script
#: (the DHCPv6 server's URL for User Class "iPXE"); everything by HTTP from the PXE host's IPv6
#: address, the kernel's second initramfs (dhcpcd, see initramfs) included.
BOOT_SCRIPT6, INITRD6 = "boot6.ipxe", "dhcp6.gz"
IPXE_SCRIPT6 = """#!ipxe
echo boothop lab: boot script running on ${net0/ip6} (${platform}, ${net0/chip})
chain %(base)s/boot-${net0/mac:hexhyp}.ipxe
"""
CLIENT_SCRIPT6 = """#!ipxe
kernel %(base)s/%(kernel)s initrd=%(initrd)s initrd=%(initrd6)s %(args)s \
boothop.chain=%(chain)s boothop.server=%(server)s
initrd %(base)s/%(initrd)s
initrd %(base)s/%(initrd6)s
boot
"""
#: The DHCPv6 server's pools: these offsets in each managed link's /64.
POOL6 = (0x1000, 0x1FFF)


def pxe_address6(spec: LabSpec) -> str:
    """The PXE host's IPv6 address (a lab with a managed IPv6 link has one)."""
    return str(ipv6_twin(spec.pxe_address).ip)


def http_base6(spec: LabSpec) -> str:
    return f"http://[{pxe_address6(spec)}]"


def _log(workdir: Path, name: str) -> Path:
    return workdir / "logs" / f"{name}.log"


def relay_argv(spec: LabSpec, workdir: Path, contained: bool = False) -> list[str]:
    downstream = [arg for s in spec.subnets for arg in ("-id", f"lan-{s.name}")]
    servers = [str(spec.dhcp_address.ip), str(spec.pxe_address.ip)]
    if spec.relay == "dhcrelay":
        return ["dhcrelay", "-d", "-4", "-a", *downstream, "-iu", "up",
                "-pf", str(workdir / "dhcrelay.pid.file"), *servers]
    relay = "boothop-relay" if contained else program("boothop-relay")
    # The DHCPv6 relay (managed IPv6 links only) from the file, the IPv4 one from the command
    # line, in one process.
    config = ["--config", str(workdir / RELAY6_CONFIG)] if spec.ipv6_subnets else []
    return [relay, "-d", *config, *downstream, "-iu", "up", "-a",
            "--log-format", "json", "--log-level", "debug",
            "--stats-file", str(workdir / "relay-stats.json"), *servers]


RELAY6_CONFIG = "relay.toml"


def relay6_config(spec: LabSpec) -> str:
    """boothop-relay's [dhcpv6]: the managed IPv6 links down, the DHCP host's IPv6 address up;
    the client's link-layer address (RFC 6939) goes along, so the server's bindings name the
    MAC."""
    lines = ["[dhcpv6]", "client_link_layer = true"]
    for subnet in spec.ipv6_subnets:
        lines += ["[[dhcpv6.lower]]", f'name = "lan-{subnet.name}"']
    lines += ["[[dhcpv6.upper]]", 'interface = "up"',
              f'address = "{ipv6_twin(spec.dhcp_address).ip}"', ""]
    return "\n".join(lines)


def dhcrelay6_argv(spec: LabSpec, workdir: Path) -> list[str]:
    """ISC dhcrelay's DHCPv6 relay (a process of its own: dhcrelay relays one family)."""
    lower = [arg for s in spec.ipv6_subnets for arg in ("-l", f"lan-{s.name}")]
    return ["dhcrelay", "-d", "-6", *lower, "-u", f"{ipv6_twin(spec.dhcp_address).ip}%up",
            "-pf", str(workdir / "dhcrelay6.pid.file")]


def write_configs(
    spec: LabSpec, workdir: Path, dhcp_options: Mapping[str, str] | None = None
) -> None:
    tftp_root = workdir / "tftp"
    tftp_root.mkdir(parents=True, exist_ok=True)
    reports = workdir / REPORTS
    reports.mkdir(exist_ok=True)
    owner = workdir.stat()
    os.chown(reports, owner.st_uid, owner.st_gid)  # the PXE host's server writes there
    (tftp_root / BOOT_SCRIPT).write_text(IPXE_SCRIPT)
    kinds = {client.kind for client in spec.clients}
    served: dict[str, Path] = {}
    if kinds & {"pxe", "pxe-spec"}:
        served.update((name, boot_program(name)) for name in BOOT_PROGRAMS)
    if "pxe" in kinds:
        served[KERNEL], served[INITRD] = initramfs.build(cache_dir())
    if spec.ipv6_subnets:
        served[INITRD6] = initramfs.build_dhcp6(cache_dir())
        (tftp_root / BOOT_SCRIPT6).write_text(IPXE_SCRIPT6 % {"base": http_base6(spec)})
        (workdir / RELAY6_CONFIG).write_text(relay6_config(spec))
    for client in spec.clients:
        if client.kind == "pxe":
            script = CLIENT_SCRIPT6 if is_ipv6_client(client) else CLIENT_SCRIPT
            (tftp_root / f"boot-{client.mac.replace(':', '-')}.ipxe").write_text(
                script % {"kernel": KERNEL, "initrd": INITRD, "args": KERNEL_ARGS,
                          "chain": client.chain, "initrd6": INITRD6,
                          "base": http_base6(spec) if is_ipv6_client(client) else "",
                          "server": pxe_address6(spec) if is_ipv6_client(client) else ""}
            )
    for name, source in served.items():
        target = tftp_root / name
        if not target.exists() or target.stat().st_size != source.stat().st_size:
            shutil.copyfile(source, target)
    (workdir / "dhcp.toml").write_text(dhcp_config(spec, workdir, dhcp_options))
    (workdir / "pxe.toml").write_text(pxe_config(spec, workdir))


def dhcp_config(
    spec: LabSpec, workdir: Path, extra_options: Mapping[str, str] | None = None
) -> str:
    """The DHCP server's configuration; ``extra_options`` (name: text) go to every subnet."""
    extra = "".join(
        f", {name} = {json.dumps(value)}" for name, value in (extra_options or {}).items()
    )
    lines = ["[dhcp]", f'lease_db = "{workdir / "leases.sqlite3"}"', ""]
    for subnet in spec.subnets:
        first, last = subnet.pool
        lines += [
            "[[dhcp.subnets]]",
            f'subnet = "{subnet.router.network}"',
            f'pools = ["{first}-{last}"]',
            "lease_time = 600",
            f'options = {{ routers = ["{subnet.router.ip}"]{extra} }}',
        ]
        for client in spec.clients:
            if client.subnet == subnet.name and client.address is not None:
                lines += [
                    "  [[dhcp.subnets.reservations]]",
                    f'  mac = "{client.mac}"',
                    f'  address = "{client.address}"',
                    f'  hostname = "{client.name}"',
                ]
        lines.append("")
    if spec.ipv6_subnets:
        lines += dhcp6_config(spec)
    return "\n".join(lines)


def dhcp6_config(spec: LabSpec) -> list[str]:
    """[dhcp6] for the managed IPv6 links: a pool each, and RFC 5970 boot URLs: UEFI HTTP boot
    (architecture 16, Vendor Class "HTTPClient") gets ipxe.efi, iPXE its script."""
    base = http_base6(spec)
    lines = ["[dhcp6]",
             f'boot = {{ efi-x64-http = "{base}/ipxe.efi", ipxe = "{base}/{BOOT_SCRIPT6}" }}', ""]
    for subnet in spec.ipv6_subnets:
        network = ipv6_twin(subnet.router).network
        first, last = (network.network_address + offset for offset in POOL6)
        lines += ["[[dhcp6.subnets]]", f'prefix = "{network}"', f'pools = ["{first}-{last}"]',
                  ""]
    return lines


def pxe_config(spec: LabSpec, workdir: Path) -> str:
    return "\n".join([
        "[pxe]",
        f'server_address = "{spec.pxe_address.ip}"',
        "colocated = false",
        # A one-item menu with no prompt time: the client picks it at once and asks the PXE
        # server for it on port 4011 (boot server discovery, routed, not relayed).
        'menu_prompt = "boothop lab"',
        "menu_timeout = 0",
        "[[pxe.menu]]",
        "type = 8",
        'description = "boothop lab boot"',
        # iPXE (user class "iPXE") gets the script, other PXE firmware iPXE by architecture.
        f'boot = {{ ipxe = "{BOOT_SCRIPT}", bios = "undionly.kpxe", efi-x64 = "ipxe.efi" }}',
        "[pxe.boot]",
        f'ipxe = "{BOOT_SCRIPT}"',
        'bios = "undionly.kpxe"',
        'efi-x64 = "ipxe.efi"',
        "",
        "[tftp]",
        f'root = "{workdir / "tftp"}"',
        # The booted kernels write their reports here (busybox tftp -p).
        "allow_write = true",
        f'write_root = "{workdir / REPORTS}"',
        "overwrite = true",
        "",
        # The same files by HTTP: a UEFI HTTP boot client (option 60 "HTTPClient") is offered
        # http://<server_address>/ipxe.efi by the proxy (pxe.http_url follows this table);
        # with a managed IPv6 link, over IPv6 too.
        "[http]",
        *(['address = "::"'] if spec.ipv6_subnets else []),
        "",
    ])


def in_image(spec: LabSpec) -> tuple[str, ...]:
    """The daemons that are boothop's own commands, which can run from its container image."""
    return ("dhcp", "pxe", "relay") if spec.relay == "boothop" else ("dhcp", "pxe")


def daemons(
    spec: LabSpec, workdir: Path, contained: Collection[str] = ()
) -> list[tuple[str, str, list[str]]]:
    """(name, host, argv) of every daemon the lab runs; those named in ``contained`` as they
    run in boothop's image (its commands on its PATH, the configuration file in /etc/boothop)."""

    def server(name: str) -> list[str]:
        if name in contained:
            command, config = "boothop-server", containers.config_path(name)
        else:
            command, config = program("boothop-server"), str(workdir / f"{name}.toml")
        return [command, "run", "--log-format", "json", "--log-level", "debug", "-c", config]

    return [
        ("dhcp", "dhcp", server("dhcp")),
        ("pxe", "pxe", server("pxe")),
        ("relay", "router", relay_argv(spec, workdir, "relay" in contained)),
        (
            "ra",
            "router",
            [
                sys.executable,
                "-m",
                "boothop.relay.lab.ra",
                *(f"lan-{s.name}" for s in spec.subnets if s not in spec.ipv6_subnets),
                *(["--managed", *(f"lan-{s.name}={ipv6_twin(s.router).network}"
                                  for s in spec.ipv6_subnets)]
                  if spec.ipv6_subnets else []),
            ],
        ),
        *([("relay6", "router", dhcrelay6_argv(spec, workdir))]
          if spec.ipv6_subnets and spec.relay == "dhcrelay" else []),
    ]


def read_events(path: Path) -> list[dict[str, object]]:
    events = []
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return events


def wait_ready(spec: LabSpec, workdir: Path, timeout: float) -> None:
    """Wait until each daemon says it listens; raise with its log tail if one does not."""
    def logged(name: str, *events: str) -> bool:
        return {e.get("event") for e in read_events(_log(workdir, name))} >= set(events)

    ipv6 = bool(spec.ipv6_subnets)
    ready = {
        "dhcp": lambda: any(
            e.get("event") == "server.listening" or e.get("event") == "dhcp.listening"
            for e in read_events(_log(workdir, "dhcp"))
        ) and (not ipv6 or logged("dhcp", "server6.listening")),
        "pxe": lambda: (
            {e.get("event") for e in read_events(_log(workdir, "pxe"))}
            >= {"pxe.listening", "tftp.listening", "http.listening"}
        ),
        "relay": (
            (
                lambda: any(
                    e.get("event") == "relay.started" for e in read_events(_log(workdir, "relay"))
                )  # beside the IPv4 relay, the DHCPv6 one has no line of its own
            )
            if spec.relay == "boothop"
            else (lambda: "Sending on" in _text(_log(workdir, "relay")))
        ),
        **({"relay6": lambda: "Sending on" in _text(_log(workdir, "relay6"))}
           if ipv6 and spec.relay == "dhcrelay" else {}),
    }
    for name, predicate in ready.items():
        if not wait_for(predicate, timeout, interval=0.1):
            raise RuntimeError(
                f"{name} did not start; its log ends with:\n{_text(_log(workdir, name))[-1500:]}"
            )


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def relay_counters(workdir: Path) -> dict[str, object] | None:
    try:
        return json.loads((workdir / "relay-stats.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def report(workdir: Path, client: ClientSpec) -> dict[str, str] | None:
    """What a booted kernel reported for ``client``'s MAC, if it arrived: the initramfs's TFTP
    upload, or over IPv6 (where the PXE host's TFTP does not listen) its HTTP request
    ``/report-<MAC>/key=value/...``, as the PXE host's HTTP server logged it."""
    name = f"{REPORT_PREFIX}{client.mac.replace(':', '-')}"
    try:
        lines = (workdir / REPORTS / name).read_text(errors="replace").splitlines()
    except FileNotFoundError:
        lines = next((str(e["path"]).split("/")[2:] for e in _http_requests(workdir)
                      if str(e.get("path", "")).startswith(f"/{name}/")), [])
    fields = dict(line.split("=", 1) for line in lines if "=" in line)
    return fields if fields.get("mac") == client.mac else None


def lease_rows(workdir: Path) -> list[dict[str, Any]]:
    """The DHCP server's leases and DHCPv6 bindings (``boothop-server leases --json``)."""
    listed = subprocess.run(
        [program("boothop-server"), "leases", "--json", "-c", str(workdir / "dhcp.toml")],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, check=False)
    if listed.returncode != 0:
        raise RuntimeError(f"boothop-server leases failed: {listed.stderr.strip()}")
    rows: list[dict[str, Any]] = json.loads(listed.stdout)
    return rows


def bindings6(workdir: Path, client: ClientSpec) -> frozenset[str]:
    """The DHCPv6 bindings of ``client``'s MAC (the relay's RFC 6939 option names it): the
    firmware's, iPXE's and the kernel's, each with its own DUID."""
    return frozenset(str(row["address"]) for row in lease_rows(workdir)
                     if row.get("family") == 6 and row.get("mac") == client.mac)


def event_time(event: Mapping[str, object]) -> float | None:
    """A JSON log event's timestamp (structlog's ISO UTC) as seconds since the epoch."""
    try:
        return datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()
    except (KeyError, ValueError):
        return None


class BootSeen(TypedDict):
    """What the servers saw of one QEMU client's boot (see :func:`boot_seen`)."""

    address: str | None
    #: The first file the client's firmware fetched (the network boot program, or iPXE's script).
    boot_file: str | None
    #: Octets the PXE host's TFTP server sent to the client.
    bytes: int
    #: Seconds from power-on: the firmware's first DHCP ACK, the boot file, the kernel and its
    #: initramfs downloaded, the report written.
    dhcp: float | None
    boot: float | None
    kernel: float | None
    report: float | None


def boot_seen(workdir: Path, client: ClientSpec, address: str | None,
              powered_on: float, addresses6: frozenset[str] = frozenset()) -> BootSeen:
    """A QEMU client's boot as the DHCP server and the PXE host logged it, timed from
    ``powered_on`` (wall-clock seconds); ``addresses6``: the DHCPv6 bindings of its MAC (a
    DHCPv6 reply is known by the addresses it gives)."""
    seen = BootSeen(address=address, boot_file=None, bytes=0, dhcp=None, boot=None, kernel=None,
                    report=None)

    def since(event: Mapping[str, object]) -> float | None:
        epoch = event_time(event)
        return None if epoch is None or epoch < powered_on else round(epoch - powered_on, 2)

    # Each stage (firmware, iPXE, the kernel) may lease its own address: UEFI PXE and iPXE send
    # different client identifiers. The client's transfers come from any of them.
    addresses = {address, *addresses6}
    for event in read_events(_log(workdir, "dhcp")):
        ack = event.get("event") == "server.ack" and event.get("chaddr") == client.mac
        reply6 = event.get("event") == "server6.reply" and bool(
            addresses6 & {str(a) for a in _as_list(event.get("addresses"))})
        when = since(event)
        if (ack or reply6) and when is not None:
            seen["dhcp"] = when if seen["dhcp"] is None else seen["dhcp"]
            if ack:
                addresses.add(str(event.get("yiaddr")))
    in_order = sorted([*_http_done(workdir), *_tftp_done(workdir)],
                      key=lambda transfer: str(transfer.get("timestamp")))
    for transfer in in_order:
        if client_host(str(transfer.get("client", ""))) not in addresses:
            continue
        when, name = since(transfer), str(transfer.get("filename", ""))
        if when is None:
            continue
        if transfer.get("direction") == "write" or name.startswith(REPORT_PREFIX):
            if name.startswith(REPORT_PREFIX):
                seen["report"] = when
            continue
        seen["bytes"] += _as_int(transfer.get("bytes", 0))
        if seen["boot_file"] is None:
            seen["boot_file"], seen["boot"] = name, when
        if name == INITRD:
            seen["kernel"] = when
    return seen


def _http_requests(workdir: Path) -> list[dict[str, object]]:
    """The GET requests the PXE host's HTTP server answered."""
    return [event for event in read_events(_log(workdir, "pxe"))
            if event.get("event") == "http.request" and event.get("method") == "GET"]


def _http_done(workdir: Path) -> list[dict[str, object]]:
    """Files the PXE host's HTTP server sent whole (a UEFI HTTP boot client's boot file), and
    the IPv6 kernels' reports (their 404s), as transfers like :func:`_tftp_done`'s: client,
    filename, bytes, direction, timestamp."""
    return [
        {**event, "filename": str(event.get("path", "")).lstrip("/"), "direction": "read"}
        for event in _http_requests(workdir)
        if event.get("status") == 200
        or str(event.get("path", "")).startswith(f"/{REPORT_PREFIX}")
    ]


def client_host(client: str) -> str:
    """The address of a log's ``client``: an HTTP client's address, a TFTP client's
    "address:port"."""
    return client if client.count(":") != 1 else client.split(":")[0]


def _as_list(value: object) -> list[object]:
    return value if isinstance(value, list) else []


def _tftp_done(workdir: Path) -> list[dict[str, object]]:
    """Completed TFTP transfers: the 'started' event (file, client, direction) with the time and
    numbers of its 'ended'."""
    started: dict[str, dict[str, object]] = {}
    done = []
    for event in read_events(_log(workdir, "pxe")):
        if event.get("event") == "tftp.transfer.started":
            started[str(event.get("client"))] = event
        elif event.get("event") == "tftp.transfer.ended" and event.get("outcome") == "completed":
            done.append({**started.get(str(event.get("client")), {}), **event})
    return done


def _as_int(value: object) -> int:
    """A number of a JSON log event (int, float or numeric string) as an int."""
    if isinstance(value, int | float | str):
        return int(value)
    raise TypeError(f"not a number: {value!r}")
