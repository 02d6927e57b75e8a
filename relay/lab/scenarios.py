"""The two field reports, replayed in the lab with real daemons and clients.

``bootp-reconcile`` (first report, Q184344): the DHCP server's lease database is deleted and rebuilt
from the configuration by ``boothop-server reconcile``; the BOOTP client must still get its reserved
address, and the rebuilt reservation must carry the client's own MAC.

``pxe-misconfig`` (second report, KB259670): the DHCP server is given options 60 "PXEClient", 66 and
67 while the PXE server is on another host. A client that chooses offers as the PXE 2.1 ROMs do
(``boothop.relay.lab.pxe_client``) takes that offer, asks the DHCP server on port 4011 and fails
with PXE-E55; the relay logs why. The real firmware is booted too, each QEMU machine to a
kernel that reports back: the NIC's iPXE ROM (BIOS) and OVMF's own UEFI PXE client; the scenario
says what each did. With the fix (the options removed, the PXE server in the helper list) the
same client boots, and so does each firmware.

Each scenario prints its steps and returns whether the report's claim held; the lab is always
taken down at the end.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from . import servers
from .lab import Lab, lan_if
from .locations import boot_program, program
from .processes import Process, wait_for
from .servers import read_events
from .spec import ClientSpec, LabSpec

Say = Callable[[str], None]

def misconfiguration(spec: LabSpec) -> dict[str, str]:
    """The second field report's options 60/66/67, by boothop-server's names; 66 names the
    PXE/TFTP host, as an administrator pointing clients "at the boot server" would."""
    return {
        "vendor-class-identifier": "PXEClient",
        "tftp-server-name": str(spec.pxe_address.ip),
        "bootfile-name": "undionly.kpxe",
    }


WARNING_EVENT = "relay.pxe.dhcp_server_sends_pxeclient"
PXE_SPEC_CLIENT = "pxespec"
OVMF_CLIENT = "ovmf"
#: The real firmware the scenario boots, by its key in the scenario's data, and its chain.
FIRMWARE = {"ipxe": "bios-ipxe", "ovmf": "uefi-pxe"}
FIRMWARE_NAMES = {"ipxe": "QEMU iPXE ROM (BIOS)", "ovmf": "QEMU OVMF (UEFI PXE)"}


@dataclasses.dataclass
class ScenarioResult:
    name: str
    ok: bool
    #: Machine-readable evidence, for the tests.
    data: dict[str, Any] = dataclasses.field(default_factory=dict)


def _run(argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False
    )


def _indent(text: str, prefix: str = "      ") -> str:
    return "\n".join(prefix + line for line in text.rstrip().splitlines()) or prefix + "(nothing)"


def leases(lab: Lab) -> list[dict[str, Any]]:
    return servers.lease_rows(lab.workdir)


def _bootp(lab: Lab, client: ClientSpec) -> dict[str, Any] | None:
    """One BOOTP exchange; the reply as the client saw it (None when no reply came)."""
    completed = lab.runner.run(
        lab.topology.netns(client.name),
        [
            sys.executable,
            "-m",
            "boothop.relay.lab.bootp_client",
            "--ifname",
            "eth0",
            "--mac",
            client.mac,
            "--timeout",
            "2",
            "--attempts",
            "3",
        ],
        timeout=30,
    )
    reply: dict[str, Any] | None = json.loads(completed.stdout or "null")
    return reply


# -- 1. bootp-reconcile ---------------------------------------------------------------------------
def bootp_reconcile(spec: LabSpec, say: Say) -> ScenarioResult:
    client = next((c for c in spec.clients if c.kind == "bootp"), None)
    if client is None or client.address is None:
        raise ValueError(
            f"{spec.path}: bootp-reconcile needs a [[client]] of kind bootp with an address"
        )
    data: dict[str, Any] = {
        "client": client.name,
        "mac": client.mac,
        "reserved": str(client.address),
    }
    lab = Lab(spec)
    lab.down()
    try:
        say(f"bootp-reconcile: BOOTP client {client.name} ({client.mac}) reserved {client.address}")
        lab.up()
        say("  1. lab up: relay, DHCP server, PXE server running")
        first = _bootp(lab, client)
        data["first"] = first
        say(f"  2. BOOTP request: {_bootp_outcome(first, client)}")
        data["leases_before"] = leases(lab)
        say(f"     lease database: {_lease_line(data['leases_before'], client)}")

        lab.stop_daemon("dhcp")
        database = Path(_lease_db(lab))
        removed = [p.name for p in database.parent.glob(database.name + "*") if p.is_file()]
        for path in database.parent.glob(database.name + "*"):
            path.unlink()
        data["deleted"] = removed
        say(
            "  3. DHCP server stopped; lease database deleted "
            f"({', '.join(removed) or 'nothing there'})"
        )

        config = str(lab.workdir / "dhcp.toml")
        reconcile = _run([program("boothop-server"), "reconcile", "-c", config])
        data["reconcile"] = {
            "exit": reconcile.returncode,
            "output": reconcile.stdout + reconcile.stderr,
        }
        say(f"  4. boothop-server reconcile (exit {reconcile.returncode}):")
        say(_indent(reconcile.stdout + reconcile.stderr))
        data["leases_reconciled"] = leases(lab)
        say(f"     lease database: {_lease_line(data['leases_reconciled'], client)}")
        check = _run([program("boothop-server"), "check", "-c", config])
        data["check"] = {"exit": check.returncode, "output": check.stdout + check.stderr}
        say(
            f"     boothop-server check (exit {check.returncode}): "
            f"{(check.stdout + check.stderr).strip()}"
        )

        lab.restart_daemon("dhcp")
        say("  5. DHCP server started again")
        second = _bootp(lab, client)
        data["second"] = second
        say(f"  6. BOOTP request again: {_bootp_outcome(second, client)}")
        data["leases_after"] = leases(lab)
        row = _row(data["leases_after"], client)
        say(f"     lease database: {_lease_line(data['leases_after'], client)}")

        held = (
            _got_reservation(first, client) and _got_reservation(second, client)
            and row is not None and row["mac"] == client.mac and reconcile.returncode == 0
        )
        say(f"  outcome: {'HELD' if held else 'FAILED'}: the BOOTP client "
            + ("kept its reserved address and the rebuilt reservation has its MAC"
               if held else "did not keep its reservation (see above)"))
        return ScenarioResult("bootp-reconcile", held, data)
    finally:
        lab.down()


def _lease_db(lab: Lab) -> str:
    match = re.search(r'^lease_db = "(.*)"$', (lab.workdir / "dhcp.toml").read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError("the lab's dhcp.toml names no lease_db")
    return match.group(1)


def _got_reservation(reply: dict[str, Any] | None, client: ClientSpec) -> bool:
    return reply is not None and reply["address"] == str(client.address) and not reply["dhcp"]


def _bootp_outcome(reply: dict[str, Any] | None, client: ClientSpec) -> str:
    if reply is None:
        return "no BOOTREPLY (the field report's symptom)"
    verdict = "its reserved address" if _got_reservation(reply, client) else f"NOT {client.address}"
    return f"BOOTREPLY with {reply['address']} ({verdict})"


def _row(rows: list[dict[str, Any]], client: ClientSpec) -> dict[str, Any] | None:
    return next((r for r in rows if r["address"] == str(client.address)), None)


def _lease_line(rows: list[dict[str, Any]], client: ClientSpec) -> str:
    row = _row(rows, client)
    if row is None:
        return f"no row for {client.address} ({len(rows)} rows)"
    return f"{row['address']} {row['state']} mac={row['mac']} hostname={row['hostname']}"


# -- 2. pxe-misconfig -----------------------------------------------------------------------------
def with_spec_client(spec: LabSpec) -> tuple[LabSpec, ClientSpec]:
    """The spec plus a namespace host for the PXE 2.1 client, on the QEMU client's subnet.

    The scenario runs it itself (boothop.relay.lab.pxe_client) to read every step it took."""
    qemu = next((c for c in spec.clients if c.kind == "pxe"), None)
    subnet = qemu.subnet if qemu else spec.subnets[0].name
    taken = {c.mac for c in spec.clients}
    mac = next(m for m in (f"02:b0:07:00:00:{i:02x}" for i in range(1, 256)) if m not in taken)
    client = ClientSpec(PXE_SPEC_CLIENT, "pxe-spec", subnet, mac)
    return dataclasses.replace(spec, clients=(*spec.clients, client)), client


def with_firmware(spec: LabSpec) -> tuple[LabSpec, dict[str, ClientSpec]]:
    """The spec plus, where it has none, a QEMU client with OVMF (UEFI PXE) on the subnet of
    its iPXE ROM client; the QEMU clients by firmware ("ipxe", "ovmf")."""
    firmware = {key: c for key, chain in FIRMWARE.items() for c in spec.clients
                if c.kind == "pxe" and c.chain == chain}
    if "ovmf" not in firmware:
        subnet = firmware["ipxe"].subnet if "ipxe" in firmware else spec.subnets[0].name
        taken = {c.mac for c in spec.clients}
        mac = next(m for m in (f"52:54:00:0e:f1:{i:02x}" for i in range(1, 256)) if m not in taken)
        firmware["ovmf"] = ClientSpec(OVMF_CLIENT, "pxe", subnet, mac, chain="uefi-pxe")
        spec = dataclasses.replace(spec, clients=(*spec.clients, firmware["ovmf"]))
    return spec, firmware


def _spec_client(lab: Lab, client: ClientSpec) -> dict[str, Any]:
    completed = lab.runner.run(
        lab.topology.netns(client.name),
        [
            sys.executable,
            "-m",
            "boothop.relay.lab.pxe_client",
            "--ifname",
            "eth0",
            "--mac",
            client.mac,
        ],
        timeout=60,
    )
    try:
        result: dict[str, Any] = json.loads(completed.stdout)
    except json.JSONDecodeError:
        result = {
            "booted": False,
            "error": f"pxe_client crashed: {completed.stderr[-500:]}",
            "steps": [],
        }
    return result


def _say_steps(result: dict[str, Any], say: Say) -> None:
    for step in result.get("steps", []):
        name = step["step"]
        details = {k: v for k, v in step.items() if k not in ("step", "t") and v is not None}
        say(
            f"       {step['t']:6.2f}s {name:13} "
            + " ".join(f"{k}={v}" for k, v in details.items())
        )


def _capture_4011(lab: Lab, client: ClientSpec, part: str) -> Process:
    """tcpdump on the router's client LAN: the 4011 requests are routed, not relayed."""
    capture = lab.runner.start(
        lab.topology.netns("router"),
        ["tcpdump", "-n", "-l", "-i", lan_if(client.subnet), "udp", "port", "4011"],
        f"tcpdump-4011-{part}",
    )
    wait_for(lambda: "listening on" in capture.output(), 5)
    return capture


def _requests_4011(capture: Process, servers: Collection[str]) -> dict[str, int]:
    """Server -> number of requests sent to its port 4011, from tcpdump's lines (a UEFI client
    sends from port 4011 too: the replies to it are not counted)."""
    counts: dict[str, int] = {}
    for match in re.finditer(r" > (\d+\.\d+\.\d+\.\d+)\.4011:", capture.output()):
        if match.group(1) in servers:
            counts[match.group(1)] = counts.get(match.group(1), 0) + 1
    return counts


def _console(lab: Lab, client: ClientSpec) -> list[str]:
    """The firmware's lines of interest from the serial console, control sequences removed."""
    try:
        raw = (lab.workdir / "logs" / f"{client.name}.serial").read_text(errors="replace")
    except FileNotFoundError:
        return []
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x08|\r", "", raw)
    keep = ("Configuring", "net0: 1", "Filename", "Nothing to boot", "boothop lab:", "PXE-E",
            "No bootable device", "Connection", "Operation", "Start PXE", "Station IP",
            "Server IP", "NBP file", "BdsDxe: failed", "boothop initramfs:")
    return [line.strip() for line in text.splitlines() if any(k in line for k in keep)]


def _firmware(
    lab: Lab, client: ClientSpec | None, part: str, timeout: float | None
) -> dict[str, Any]:
    """Boot one QEMU client; what it did, as the router (4011), the PXE host and its console
    saw it."""
    if client is None:
        return {"ran": False, "why": "no [[client]] of kind pxe in the lab file"}
    capture = _capture_4011(lab, client, part)
    tftp_before = _tftp_requests(lab)
    try:
        result = lab.boot(client, timeout=timeout)
    finally:
        time.sleep(0.2)
        lab.runner.stop(capture, grace=1.0)
    return {
        "ran": True, "booted": result.ok, "address": result.address, "boot_file": result.boot_file,
        "bytes": result.bytes_downloaded, "seconds": result.seconds,
        "requests_4011": _requests_4011(
            capture, {str(lab.spec.dhcp_address.ip), str(lab.spec.pxe_address.ip)}),
        "console": _console(lab, client),
        "tftp_requests_at_pxe_host": _tftp_requests(lab)[len(tftp_before):],
    }


def _tftp_requests(lab: Lab) -> list[str]:
    """The file names of the read requests the PXE host's TFTP server has logged so far."""
    return [str(e.get("filename")) for e in read_events(lab.workdir / "logs" / "pxe.log")
            if e.get("event") == "tftp.transfer.started"]


def _check(lab: Lab) -> dict[str, Any]:
    completed = _run([program("boothop-server"), "check", "-c", str(lab.workdir / "dhcp.toml")])
    warnings = [line for line in completed.stderr.splitlines() if line.startswith("warning:")]
    return {
        "exit": completed.returncode,
        "warnings": warnings,
        "output": completed.stdout + completed.stderr,
    }


def _relay_warnings(lab: Lab) -> list[dict[str, Any]]:
    return [
        e
        for e in read_events(lab.workdir / "logs" / "relay.log")
        if e.get("event") == WARNING_EVENT
    ]


def _part(
    lab: Lab,
    spec_client: ClientSpec,
    firmware: dict[str, ClientSpec],
    part: str,
    say: Say,
    timeout: float | None,
) -> dict[str, Any]:
    check = _check(lab)
    say(f"   boothop-server check -c dhcp.toml: exit {check['exit']}, "
        f"{len(check['warnings'])} warning(s)")
    for warning in check["warnings"]:
        say(_indent(warning))
    say(f"   PXE 2.1 client ({spec_client.name}, {spec_client.mac}, relay.lab.pxe_client):")
    client = _spec_client(lab, spec_client)
    _say_steps(client, say)
    say(f"     -> {'BOOTED' if client.get('booted') else 'FAILED: ' + str(client.get('error'))}")
    parts: dict[str, Any] = {"check": check, "client": client}
    for key, qemu in firmware.items():
        say(f"   {FIRMWARE_NAMES[key]} ({qemu.name}, {qemu.mac}):")
        booted = parts[key] = _firmware(lab, qemu, part, timeout)
        for line in booted.get("console", []):
            say(f"       console: {line}")
        asked = ", ".join(f"{d}:4011 x{n}" for d, n in booted["requests_4011"].items()) or "none"
        say(f"       4011 requests seen on the router: {asked}; TFTP requests at the PXE host: "
            + (", ".join(booted["tftp_requests_at_pxe_host"]) or "none"))
        say(
            f"     -> {'BOOTED' if booted['booted'] else 'did not boot'}"
            + (
                f" ({booted['boot_file']}; the kernel reported {booted['address']} after "
                f"{booted['seconds']:.1f} s)"
                if booted["booted"]
                else ""
            )
        )
    return parts


def pxe_misconfig(spec: LabSpec, say: Say, timeout: float | None = None) -> ScenarioResult:
    """``timeout`` bounds each QEMU boot (default: the lab file's client_timeout)."""
    spec, spec_client = with_spec_client(spec)
    spec, firmware = with_firmware(spec)
    dhcp, pxe = str(spec.dhcp_address.ip), str(spec.pxe_address.ip)
    options = misconfiguration(spec)
    lab = Lab(spec, dhcp_options=options)
    lab.down()
    data: dict[str, Any] = {"dhcp": dhcp, "pxe": pxe, "relay": spec.relay}
    try:
        say(f"pxe-misconfig: DHCP server {dhcp}, PXE server {pxe}; the relay ({spec.relay}) "
            f"forwards to both")
        lab.up()
        say("A. the misconfiguration: the DHCP server also sends "
            + ", ".join(f"{k} = {v!r}" for k, v in options.items()))
        data["a"] = _part(lab, spec_client, firmware, "a", say, timeout)
        ipxe = data["a"].get("ipxe", {})
        asked_dhcp = ipxe.get("requests_4011", {}).get(dhcp, 0)
        if ipxe.get("ran") and asked_dhcp:
            file = next((line.split(":", 1)[1].strip() for line in ipxe["console"]
                         if line.startswith("Filename:")), "-")
            say(
                "   iPXE is not a PXE 2.1 ROM: it does not stop with PXE-E55. "
                f"It too asked {dhcp}:4011 "
                f"({asked_dhcp} unanswered requests), then went on with the DHCP ACK's file name "
                f"({file}) and {'booted' if ipxe['booted'] else 'found nothing to boot'}."
            )
        ovmf = data["a"]["ovmf"]
        asked_dhcp = ovmf["requests_4011"].get(dhcp, 0)
        error = next((line for line in ovmf["console"] if "PXE-E" in line), "no PXE error")
        if asked_dhcp:
            say(
                "   OVMF took the DHCP server's offer, whose option 60 'PXEClient' without boot "
                f"servers says \"ask me on port 4011\", asked {dhcp}:4011 ({asked_dhcp} "
                f"unanswered requests) and gave up ({error}): the report's symptom."
            )
        elif not ovmf["booted"]:
            say(
                "   OVMF found no offer it could boot from (the DHCP server's says 'PXEClient' "
                f"without boot servers) and gave up before asking port 4011 ({error})."
            )
        warnings = _relay_warnings(lab)
        data["a"]["relay_warnings"] = warnings
        if spec.relay == "boothop":
            say(f"   relay log, {WARNING_EVENT}: "
                + (str(warnings[0].get("message")) if warnings else "(none logged)"))
        else:
            say("   relay log: ISC dhcrelay does not warn about this")

        say("B. the fix: options 60/66/67 removed from the DHCP server (restarted), PXE server "
            "in the relay's helper list")
        lab.dhcp_options = {}
        lab.restart_daemon("dhcp")
        data["b"] = _part(lab, spec_client, firmware, "b", say, timeout)

        a_ok = (
            _failed_as_reported(data["a"]["client"], dhcp)
            and all(_firmware_failed_as_reported(data["a"][key], dhcp) for key in firmware)
            and (spec.relay != "boothop" or bool(warnings))
            and bool(data["a"]["check"]["warnings"])
        )
        b_ok = _booted_from(data["b"]["client"], pxe) and all(
            data["b"][key]["booted"] for key in firmware)
        data["a_as_reported"], data["b_booted"] = a_ok, b_ok
        for line in side_by_side(data):
            say(line)
        say(
            "  outcome: "
            f"{'as the field report says' if a_ok else 'A did NOT fail as the report says'}; "
            f"{'the fix boots' if b_ok else 'the fix did NOT boot'}"
        )
        return ScenarioResult("pxe-misconfig", a_ok and b_ok, data)
    finally:
        lab.down()


def _boot_requests(client: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in client.get("steps", []) if s["step"] == "boot-request"]


def _failed_as_reported(client: dict[str, Any], dhcp: str) -> bool:
    """The spec client chose the combined offer, asked the DHCP server on 4011, got nothing,
    and stopped with PXE-E55."""
    choose: dict[str, Any] = next((s for s in client.get("steps", []) if s["step"] == "choose"), {})
    requests = _boot_requests(client)
    return (
        not client.get("booted")
        and str(client.get("error", "")).startswith("PXE-E55")
        and choose.get("rule") == "DHCP and PXE in the same offer"
        and bool(requests)
        and all(r["to"] == f"{dhcp}:4011" and not r["answered"] for r in requests)
    )


def _firmware_failed_as_reported(booted: dict[str, Any], dhcp: str) -> bool:
    """A QEMU machine fetched nothing from the PXE host and did not boot, having asked the DHCP
    server on port 4011 or stopped with a PXE error. (OVMF does either from one run to the next:
    with the same offers it sometimes asks port 4011, sometimes refuses them all, PXE-E16.)"""
    gave_up = booted["requests_4011"].get(dhcp, 0) > 0 or any(
        "PXE-E" in line for line in booted.get("console", ()))
    return not booted["booted"] and gave_up and not booted["tftp_requests_at_pxe_host"]


def _booted_from(client: dict[str, Any], pxe: str) -> bool:
    requests = _boot_requests(client)
    return (
        bool(client.get("booted"))
        and client.get("bytes") == boot_program(str(client.get("boot_file"))).stat().st_size
        and bool(requests) and requests[-1]["to"] == f"{pxe}:4011" and requests[-1]["answered"]
    )


def side_by_side(data: dict[str, Any]) -> list[str]:
    def client_cells(part: dict[str, Any]) -> list[str]:
        c = part["client"]
        choose: dict[str, Any] = next((s for s in c.get("steps", []) if s["step"] == "choose"), {})
        requests = _boot_requests(c)
        asked = (f"{requests[-1]['to']} x{len(requests)}, "
                 + ("answered" if requests[-1]["answered"] else "no reply")) if requests else "-"
        outcome = (f"booted: {c.get('boot_file')} {c.get('bytes')} B" if c.get("booted")
                   else str(c.get("error", "failed")))
        return [str(choose.get("rule", "-")), asked, outcome]

    def firmware_cell(part: dict[str, Any], key: str) -> str:
        booted = part.get(key, {})
        if not booted.get("ran"):
            return "not run"
        if booted["booted"]:
            return f"kernel reported in {booted['seconds']:.1f} s"
        asked = ", ".join(f"{d}:4011 x{n}" for d, n in booted["requests_4011"].items()) or "no 4011"
        return f"no boot ({asked})"

    rows = [("", "A: DHCP server has 60/66/67", "B: fixed")]
    a, b = client_cells(data["a"]), client_cells(data["b"])
    rows += [
        ("PXE 2.1 client: offer", a[0], b[0]),
        ("  boot request to", a[1], b[1]),
        ("  outcome", a[2], b[2]),
        *((FIRMWARE_NAMES[key], firmware_cell(data["a"], key), firmware_cell(data["b"], key))
          for key in FIRMWARE if key in data["a"]),
        ("server check warnings", str(len(data["a"]["check"]["warnings"])),
         str(len(data["b"]["check"]["warnings"]))),
        ("relay warning", "yes" if data["a"].get("relay_warnings") else "no", "-"),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return [
        "",
        *(
            "  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in rows
        ),
        "",
    ]


SCENARIOS: dict[str, Callable[[LabSpec, Say], ScenarioResult]] = {
    "bootp-reconcile": bootp_reconcile,
    "pxe-misconfig": pxe_misconfig,
}


def run_scenario(name: str, spec: LabSpec, say: Say | None = None) -> ScenarioResult:
    def default_say(line: str) -> None:
        print(line, flush=True)

    return SCENARIOS[name](spec, say or default_say)
