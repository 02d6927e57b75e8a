"""The lab's daemons: the relay on the router, boothop-server on the DHCP and PXE hosts.

Writes their configuration from the LabSpec, gives their command lines, and reads what they saw
back from their JSON logs and the relay's stats file.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Collection, Mapping
from datetime import datetime
from pathlib import Path
from typing import TypedDict

from . import containers, initramfs
from .initramfs import KERNEL_ARGS, REPORT_PREFIX
from .locations import BOOT_PROGRAMS, boot_program, cache_dir, program
from .processes import wait_for
from .spec import ClientSpec, LabSpec

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


def _log(workdir: Path, name: str) -> Path:
    return workdir / "logs" / f"{name}.log"


def relay_argv(spec: LabSpec, workdir: Path, contained: bool = False) -> list[str]:
    downstream = [arg for s in spec.subnets for arg in ("-id", f"lan-{s.name}")]
    servers = [str(spec.dhcp_address.ip), str(spec.pxe_address.ip)]
    if spec.relay == "dhcrelay":
        return ["dhcrelay", "-d", "-4", "-a", *downstream, "-iu", "up",
                "-pf", str(workdir / "dhcrelay.pid.file"), *servers]
    relay = "boothop-relay" if contained else program("boothop-relay")
    return [relay, "-d", *downstream, "-iu", "up", "-a",
            "--log-format", "json", "--log-level", "debug",
            "--stats-file", str(workdir / "relay-stats.json"), *servers]


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
    for client in spec.clients:
        if client.kind == "pxe":
            (tftp_root / f"boot-{client.mac.replace(':', '-')}.ipxe").write_text(
                CLIENT_SCRIPT % {"kernel": KERNEL, "initrd": INITRD, "args": KERNEL_ARGS,
                                 "chain": client.chain}
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
    return "\n".join(lines)


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
        # http://<server_address>/ipxe.efi by the proxy (pxe.http_url follows this table).
        "[http]",
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
                *(f"lan-{s.name}" for s in spec.subnets),
            ],
        ),
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
    ready = {
        "dhcp": lambda: any(
            e.get("event") == "server.listening" or e.get("event") == "dhcp.listening"
            for e in read_events(_log(workdir, "dhcp"))
        ),
        "pxe": lambda: (
            {e.get("event") for e in read_events(_log(workdir, "pxe"))}
            >= {"pxe.listening", "tftp.listening", "http.listening"}
        ),
        "relay": (
            (
                lambda: any(
                    e.get("event") == "relay.started" for e in read_events(_log(workdir, "relay"))
                )
            )
            if spec.relay == "boothop"
            else (lambda: "Sending on" in _text(_log(workdir, "relay")))
        ),
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
    """What a booted kernel reported for ``client``'s MAC (the initramfs's TFTP upload), if it
    arrived."""
    path = workdir / REPORTS / f"{REPORT_PREFIX}{client.mac.replace(':', '-')}"
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return None
    fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    return fields if fields.get("mac") == client.mac else None


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
              powered_on: float) -> BootSeen:
    """A QEMU client's boot as the DHCP server and the PXE host logged it, timed from
    ``powered_on`` (wall-clock seconds)."""
    seen = BootSeen(address=address, boot_file=None, bytes=0, dhcp=None, boot=None, kernel=None,
                    report=None)

    def since(event: Mapping[str, object]) -> float | None:
        epoch = event_time(event)
        return None if epoch is None or epoch < powered_on else round(epoch - powered_on, 2)

    # Each stage (firmware, iPXE, the kernel) may lease its own address: UEFI PXE and iPXE send
    # different client identifiers. The client's transfers come from any of them.
    addresses = {address}
    for event in read_events(_log(workdir, "dhcp")):
        if event.get("event") == "server.ack" and event.get("chaddr") == client.mac:
            when = since(event)
            if when is not None:
                seen["dhcp"] = when if seen["dhcp"] is None else seen["dhcp"]
                addresses.add(str(event.get("yiaddr")))
    in_order = sorted([*_http_done(workdir), *_tftp_done(workdir)],
                      key=lambda transfer: str(transfer.get("timestamp")))
    for transfer in in_order:
        if str(transfer.get("client", "")).split(":")[0] not in addresses:
            continue
        when, name = since(transfer), str(transfer.get("filename", ""))
        if when is None:
            continue
        if transfer.get("direction") == "write":
            if name.startswith(REPORT_PREFIX):
                seen["report"] = when
            continue
        seen["bytes"] += _as_int(transfer.get("bytes", 0))
        if seen["boot_file"] is None:
            seen["boot_file"], seen["boot"] = name, when
        if name == INITRD:
            seen["kernel"] = when
    return seen


def _http_done(workdir: Path) -> list[dict[str, object]]:
    """Files the PXE host's HTTP server sent whole (a UEFI HTTP boot client's boot file), as
    transfers like :func:`_tftp_done`'s: client, filename, bytes, direction, timestamp."""
    return [
        {**event, "filename": str(event.get("path", "")).lstrip("/"), "direction": "read"}
        for event in read_events(_log(workdir, "pxe"))
        if event.get("event") == "http.request" and event.get("method") == "GET"
        and event.get("status") == 200
    ]


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
