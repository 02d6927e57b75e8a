"""The lab's daemons: the relay on the router, boothop-server on the DHCP and PXE hosts.

Writes their configuration from the LabSpec, gives their command lines, and reads what they saw
back from their JSON logs and the relay's stats file.
"""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import NotRequired, TypedDict

from . import containers
from .locations import program
from .processes import wait_for
from .spec import ClientSpec, LabSpec

BOOT_SCRIPT = "boot.ipxe"
#: Network boot programs a PXE ROM (not iPXE) is offered; the lab serves stand-ins of this size,
#: which a PXE 2.1 client emulation downloads (nothing executes them).
NBP_NAMES = ("undionly.kpxe", "ipxe.efi")
NBP_SIZE = 70 * 1024
#: The iPXE script proves it ran by fetching a file whose name carries its own address.
IPXE_SCRIPT = """#!ipxe
echo boothop lab: boot script running on ${net0/ip}
imgfetch tftp://${next-server}/proof-${net0/ip} && echo boothop lab: proof fetched
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
    (tftp_root / BOOT_SCRIPT).write_text(IPXE_SCRIPT)
    pattern = b"boothop lab stand-in for a network boot program: downloaded, not executed\n"
    for name in NBP_NAMES:
        (tftp_root / name).write_bytes((pattern * (NBP_SIZE // len(pattern) + 1))[:NBP_SIZE])
    for subnet in spec.subnets:
        first, last = (int(a) for a in subnet.pool)
        for value in range(first, last + 1):
            (tftp_root / f"proof-{_ip(value)}").write_text(f"boothop lab proof for {_ip(value)}\n")
    for client in spec.clients:
        if client.address is not None:
            (tftp_root / f"proof-{client.address}").write_text(
                f"boothop lab proof for {client.address}\n"
            )
    (workdir / "dhcp.toml").write_text(dhcp_config(spec, workdir, dhcp_options))
    (workdir / "pxe.toml").write_text(pxe_config(spec, workdir))


def _ip(value: int) -> str:
    return socket.inet_ntoa(value.to_bytes(4, "big"))


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
        # The lab's PXE firmware is iPXE itself (user class "iPXE"): it gets the script.
        f'boot = {{ ipxe = "{BOOT_SCRIPT}", bios = "undionly.kpxe", efi-x64 = "ipxe.efi" }}',
        "[pxe.boot]",
        f'ipxe = "{BOOT_SCRIPT}"',
        'bios = "undionly.kpxe"',
        'efi-x64 = "ipxe.efi"',
        "",
        "[tftp]",
        f'root = "{workdir / "tftp"}"',
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
            >= {"pxe.listening", "tftp.listening"}
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


def _tftp_sent(workdir: Path) -> list[dict[str, object]]:
    """Completed TFTP transfers: the 'started' event (file, client) joined to its 'ended'."""
    started: dict[str, dict[str, object]] = {}
    done = []
    for event in read_events(_log(workdir, "pxe")):
        if event.get("event") == "tftp.transfer.started":
            started[str(event.get("client"))] = event
        elif event.get("event") == "tftp.transfer.ended" and event.get("outcome") == "completed":
            begin = started.get(str(event.get("client")), {})
            done.append({**begin, **event})
    return done


def proof_fetched(workdir: Path, client: ClientSpec) -> str | None:
    """The address in the name of a proof file the TFTP server sent, if any."""
    for transfer in _tftp_sent(workdir):
        name = str(transfer.get("filename", ""))
        address = str(transfer.get("client", "")).split(":")[0]
        if name == f"proof-{address}":
            return address
    return None


class BootSeen(TypedDict):
    """What :func:`pxe_boot_seen` returns."""

    address: str | None
    bytes: int
    boot_file: NotRequired[str | None]


def _as_int(value: object) -> int:
    """A number of a JSON log event (int, float or numeric string) as an int."""
    if isinstance(value, int | float | str):
        return int(value)
    raise TypeError(f"not a number: {value!r}")


def pxe_boot_seen(workdir: Path, client: ClientSpec) -> BootSeen:
    """What the PXE host saw of a client: its address, the boot file and the bytes sent to it."""
    address = proof_fetched(workdir, client)
    seen: BootSeen = {"address": address, "bytes": 0}
    for transfer in _tftp_sent(workdir):
        if str(transfer.get("client", "")).split(":")[0] == address:
            seen["bytes"] += _as_int(transfer.get("bytes", 0))
            if not str(transfer.get("filename", "")).startswith("proof-"):
                filename = transfer.get("filename")
                seen["boot_file"] = None if filename is None else str(filename)
    return seen
