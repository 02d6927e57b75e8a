"""The lab: a routed network boot on one machine, built from a LabSpec.

Hosts are namespaces (``<prefix>-router``, ``-dhcp``, ``-pxe`` and one per client); a PXE client is
a QEMU machine whose NIC is a tap device on its subnet's bridge in the switch namespace. Daemons run
in sessions of their own so they outlive ``boothop-lab up``; ``down`` kills whatever runs in the
namespaces the lab recorded as its own (see topology), by PID, and deletes them. Daemons and clients
run with the lab's work directory as their current directory, so nothing lands in the caller's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from ipaddress import IPv4Interface
from pathlib import Path

from pyroute2 import IPRoute

from . import containers, servers
from .locations import OVMF_CODE, OVMF_VARS
from .processes import ProcessRunner, wait_for
from .report import render
from .results import ClientResult
from .spec import ClientSpec, LabSpec, ipv6_twin, is_ipv6_client
from .topology import Host, Lan, Port, Route, Topology, alive, recorded_namespaces

RUN_DIR = Path("/run/boothop-lab")
#: What the firmware prints on the serial console when its network boot failed: SeaBIOS when no
#: boot device (iPXE included) worked, OVMF when its PXE boot option did not load.
FIRMWARE_GAVE_UP = ("No bootable device", "BdsDxe: failed to load")
#: uefi-http6 fails its first boot option (PXEv6) on purpose (see ``_qemu_argv``): its firmware
#: has given up when it starts the boot option after the network ones, its shell.
OVMF_GAVE_UP = ('"EFI Internal Shell"',)
UPSTREAM_IF = "up"


def lan_if(subnet: str) -> str:
    return f"lan-{subnet}"


def tap_name(client: ClientSpec) -> str:
    return f"tap-{client.name}"


def build_topology(spec: LabSpec) -> Topology:
    """The lab's hosts and LANs; with a managed IPv6 link (a client of an IPv6 chain), IPv6
    addresses (``ipv6_twin``) on the router's side of it and on the server LAN too."""
    ipv6 = bool(spec.ipv6_subnets)

    def twin(address: IPv4Interface) -> str | None:
        return str(ipv6_twin(address)) if ipv6 else None

    def routes(*via: IPv4Interface) -> tuple[Route, ...]:
        return tuple(Route("default", str(v.ip)) for v in via)

    up6 = ipv6_twin(spec.router_upstream)
    server_routes = routes(spec.router_upstream, *((up6,) if ipv6 else ()))
    hosts = [
        Host("router", forwarding=True),
        Host("dhcp", routes=server_routes),
        Host("pxe", routes=server_routes),
    ]
    lans = [
        Lan("srv", (
            Port("router", UPSTREAM_IF, str(spec.router_upstream), None,
                 twin(spec.router_upstream)),
            Port("dhcp", "eth0", str(spec.dhcp_address), None, twin(spec.dhcp_address)),
            Port("pxe", "eth0", str(spec.pxe_address), None, twin(spec.pxe_address)),
        ))
    ]
    for subnet in spec.subnets:
        managed = subnet in spec.ipv6_subnets
        ports = [Port("router", lan_if(subnet.name), str(subnet.router), None,
                      twin(subnet.router) if managed else None)]
        for client in spec.clients:
            if client.subnet == subnet.name and client.kind != "pxe":
                hosts.append(Host(client.name))
                ports.append(Port(client.name, "eth0", None, client.mac))
        lans.append(Lan(subnet.name, tuple(ports)))
    return Topology(spec.prefix, hosts, lans, ipv6=ipv6)


class Lab:
    def __init__(
        self,
        spec: LabSpec,
        workdir: Path | None = None,
        dhcp_options: Mapping[str, str] | None = None,
        image: str | None = None,
    ) -> None:
        self.spec = spec
        #: With an image, boothop's daemons run as containers of it (see containers).
        self.image = image
        self.topology = build_topology(spec)
        self.workdir = workdir or RUN_DIR / spec.prefix
        self.runner = ProcessRunner(self.workdir / "logs", cwd=self.workdir)
        #: Extra options (by name) for every subnet of the DHCP server, e.g. a scenario's
        #: misconfiguration; applied by ``up`` and ``restart_daemon("dhcp")``.
        self.dhcp_options: dict[str, str] = dict(dhcp_options or {})

    # -- lifecycle -------------------------------------------------------------------------------
    def up(self) -> None:
        """Build what is missing and start the daemons that are not running (idempotent)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.image is not None:
            os.chown(self.workdir, *containers.image_user(self.image))
        self.topology.up()
        self._add_taps()
        servers.write_configs(self.spec, self.workdir, self.dhcp_options)
        for name, _, _ in self._daemons():
            if not self._running(name):
                self._start_daemon(name)
        servers.wait_ready(self.spec, self.workdir, timeout=20)

    def _daemons(self) -> list[tuple[str, str, list[str]]]:
        contained = servers.in_image(self.spec) if self.image is not None else ()
        return servers.daemons(self.spec, self.workdir, contained)

    def _start_daemon(self, name: str) -> None:
        host, argv = next((host, argv) for daemon, host, argv in self._daemons() if daemon == name)
        namespace = self.topology.netns(host)
        if self.image is not None and name in servers.in_image(self.spec):
            argv = containers.run_argv(self.image, namespace, name, self.workdir, argv)
            process = self.runner.start(None, argv, name)
        else:
            process = self.runner.start(namespace, argv, name)
        (self.workdir / f"{name}.pid").write_text(f"{process.pid}\n")

    def stop_daemon(self, name: str, grace: float = 3.0) -> None:
        """Stop one daemon ("dhcp", "pxe", "relay", "ra") by the PID it was started with, and
        remove its container, if it has one."""
        try:
            pid = int((self.workdir / f"{name}.pid").read_text())
        except (FileNotFoundError, ValueError):
            containers.remove(self.workdir, name)
            return
        mine = next((p for p in self.runner.processes if p.pid == pid), None)
        if mine is not None:
            self.runner.stop(mine, grace)
        else:  # started by another `boothop-lab` process: its PID is its process group
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            if not wait_for(lambda: not alive(pid), grace):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                wait_for(lambda: not alive(pid), grace)
        containers.remove(self.workdir, name)
        (self.workdir / f"{name}.pid").unlink(missing_ok=True)

    def restart_daemon(self, name: str) -> None:
        """Stop one daemon, rewrite the configuration files, start it again and wait until ready.

        Its log starts afresh (the old one is kept as ``<name>.log.<n>``)."""
        self.stop_daemon(name)
        servers.write_configs(self.spec, self.workdir, self.dhcp_options)
        log = self.workdir / "logs" / f"{name}.log"
        if log.exists():
            log.rename(
                log.with_name(f"{log.name}.{len(list(log.parent.glob(log.name + '.*'))) + 1}")
            )
        self._start_daemon(name)
        servers.wait_ready(self.spec, self.workdir, timeout=20)

    def down(self) -> None:
        """Remove what ``up`` made: the daemons' containers, the recorded namespaces (processes and
        links in them go too) and the work directory."""
        for name in containers.recorded(self.workdir):
            self.stop_daemon(name)
        self.topology.down()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _running(self, name: str) -> bool:
        try:
            pid = int((self.workdir / f"{name}.pid").read_text())
        except (FileNotFoundError, ValueError):
            return False
        return Path(f"/proc/{pid}").exists()

    def _add_taps(self) -> None:
        with IPRoute(netns=self.topology.switch_netns) as switch:
            for client in self.spec.clients:
                if client.kind != "pxe" or switch.link_lookup(ifname=tap_name(client)):
                    continue
                bridge = switch.link_lookup(ifname=f"br-{client.subnet}")[0]
                switch.link("add", ifname=tap_name(client), kind="tuntap", mode="tap")
                index = switch.link_lookup(ifname=tap_name(client))[0]
                switch.link("set", index=index, master=bridge, state="up")

    def status(self) -> dict[str, object]:
        daemons = {name: self._running(name) for name, _, _ in self._daemons()}
        return {
            "prefix": self.spec.prefix,
            "built": self.topology.exists(),
            "namespaces": recorded_namespaces(self.spec.prefix),
            "relay": self.spec.relay,
            "daemons": daemons,
            "relay_counters": servers.relay_counters(self.workdir),
        }

    # -- clients ---------------------------------------------------------------------------------
    def boot_clients(self, parallel: int = 1) -> list[ClientResult]:
        """Boot every client, ``parallel`` at a time, in the spec's order. An emulated machine
        keeps one host core busy, so on a machine with N cores N at a time finish a set of QEMU
        clients sooner (each one's own seconds grow when the cores are shared)."""
        if parallel <= 1:
            return [self.boot(client) for client in self.spec.clients]
        with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="boot") as pool:
            return list(pool.map(self.boot, self.spec.clients))

    def boot(self, client: ClientSpec, timeout: float | None = None) -> ClientResult:
        """Boot one client; ``timeout`` overrides the spec's client_timeout."""
        started = time.monotonic()
        runner = {
            "pxe": self._boot_pxe,
            "udhcpc": self._boot_udhcpc,
            "dhclient": self._boot_dhclient,
            "bootp": self._boot_bootp,
            "pxe-spec": self._boot_pxe_spec,
        }[client.kind]
        result = ClientResult(client.name, client.kind, client.subnet, client.mac)
        saved = self.spec
        if timeout is not None:
            self.spec = dataclasses.replace(self.spec, client_timeout=timeout)
        try:
            runner(client, result)
        except (OSError, subprocess.SubprocessError) as error:
            result.detail = f"{type(error).__name__}: {error}"
        finally:
            self.spec = saved
        if result.seconds is None and result.ok:
            result.seconds = time.monotonic() - started
        return result

    def _boot_udhcpc(self, client: ClientSpec, result: ClientResult) -> None:
        script = self.workdir / f"{client.name}.sh"
        events = self.workdir / f"{client.name}.events"
        script.write_text(f'#!/bin/sh\n[ "$1" = bound ] && echo "$ip" >> {events}\nexit 0\n')
        script.chmod(0o755)
        completed = self.runner.run(
            self.topology.netns(client.name),
            ["busybox", "udhcpc", "-f", "-q", "-n", "-i", "eth0", "-s", str(script),
             "-t", "5", "-T", "3", "-A", "1"],
            timeout=self.spec.client_timeout,
        )
        address = events.read_text().split()[-1] if events.exists() else None
        result.address, result.ok = address, address is not None
        result.detail = "" if result.ok else completed.stdout[-300:]

    def _boot_dhclient(self, client: ClientSpec, result: ClientResult) -> None:
        script = self.workdir / f"{client.name}.sh"
        events = self.workdir / f"{client.name}.events"
        script.write_text(
            "#!/bin/sh\n"
            f'case "$reason" in BOUND|REBOOT) echo "$new_ip_address" >> {events};; esac\n'
            "exit 0\n"
        )
        script.chmod(0o755)
        conf = self.workdir / f"{client.name}.conf"
        conf.write_text(f"timeout {int(self.spec.client_timeout)};\n")
        process = self.runner.start(
            self.topology.netns(client.name),
            ["dhclient", "-4", "-d", "-1", "-cf", str(conf), "-sf", str(script),
             "-lf", str(self.workdir / f"{client.name}.leases"),
             "-pf", str(self.workdir / f"{client.name}.dhclient.pid"), "eth0"],
            client.name,
        )
        try:
            wait_for(events.exists, self.spec.client_timeout)
        finally:
            self.runner.stop(process)
        address = events.read_text().split()[-1] if events.exists() else None
        result.address, result.ok = address, address is not None

    def _boot_bootp(self, client: ClientSpec, result: ClientResult) -> None:
        completed = self.runner.run(
            self.topology.netns(client.name),
            [
                sys.executable,
                "-m",
                "boothop.relay.lab.bootp_client",
                "--ifname",
                "eth0",
                "--mac",
                client.mac,
            ],
            timeout=self.spec.client_timeout,
        )
        reply = json.loads(completed.stdout or "null")
        if reply:
            result.address = reply["address"]
            result.ok = reply["address"] == str(client.address) and not reply["dhcp"]
            result.detail = "" if result.ok else f"got {reply}"
        else:
            result.detail = "no BOOTREPLY"

    def _boot_pxe_spec(self, client: ClientSpec, result: ClientResult) -> None:
        """The PXE 2.1 client emulation (relay.lab.pxe_client): offers, 4011, TFTP."""
        completed = self.runner.run(
            self.topology.netns(client.name),
            [
                sys.executable,
                "-m",
                "boothop.relay.lab.pxe_client",
                "--ifname",
                "eth0",
                "--mac",
                client.mac,
            ],
            timeout=self.spec.client_timeout,
        )
        try:
            outcome = json.loads(completed.stdout or "null") or {}
        except json.JSONDecodeError:
            outcome = {}
        result.address = outcome.get("address")
        result.boot_file = outcome.get("boot_file")
        result.bytes_downloaded = int(outcome.get("bytes") or 0)
        result.ok = bool(outcome.get("booted"))
        result.detail = "" if result.ok else str(outcome.get("error") or completed.stderr[-300:])

    def _boot_pxe(self, client: ClientSpec, result: ClientResult) -> None:
        """Power on a QEMU machine with the client's firmware chain; it has booted when its
        kernel's report (address, MAC, chain) has arrived at the PXE host."""
        serial = self.workdir / "logs" / f"{client.name}.serial"
        serial.unlink(missing_ok=True)  # a previous boot's console must not be read as this one's
        result.chain = client.chain
        powered_on = time.time()
        process = self.runner.start(
            self.topology.switch_netns, self._qemu_argv(client, serial), client.name
        )
        try:
            if client.chain == "bios-undionly":
                as_pxe_rom(self.workdir / f"{client.name}.console", serial,
                           self.spec.client_timeout)
            # Once the firmware says it has given up there is no need to wait on.
            gave_up = OVMF_GAVE_UP if client.chain == "uefi-http6" else FIRMWARE_GAVE_UP
            wait_for(
                lambda: servers.report(self.workdir, client) is not None
                or any(line in _text(serial) for line in gave_up)
                or not process.running(),
                self.spec.client_timeout, interval=0.25,
            )
            reported = servers.report(self.workdir, client)
        finally:
            self.runner.stop(process, grace=1.0)
        address = reported.get("address") if reported else None
        addresses6 = (servers.bindings6(self.workdir, client) | {address or ""}
                      if is_ipv6_client(client) else frozenset())
        seen = servers.boot_seen(self.workdir, client, address, powered_on, addresses6)
        result.addresses6 = sorted(addresses6 - {""})
        result.address, result.boot_file = address, seen["boot_file"]
        result.bytes_downloaded = seen["bytes"]
        result.timeline = {"dhcp": seen["dhcp"], "boot": seen["boot"], "kernel": seen["kernel"],
                           "report": seen["report"]}
        result.ok = reported is not None and reported.get("chain") == client.chain
        if result.ok:
            result.seconds = seen["report"]
        else:
            tail = _text(serial)[-400:].replace("\r", "")
            result.detail = f"no report from the kernel ({reported}); console: {tail}"

    def _qemu_argv(self, client: ClientSpec, serial: Path) -> list[str]:
        nic = f"virtio-net-pci,netdev=n0,mac={client.mac}"
        argv = [
            "qemu-system-x86_64", "-accel", "tcg", "-m", "256", "-nographic", "-no-reboot",
            "-monitor", "none", "-display", "none",
            "-netdev", f"tap,id=n0,ifname={tap_name(client)},script=no,downscript=no",
        ]
        if client.chain.startswith("uefi-"):
            variables = self.workdir / f"{client.name}.OVMF_VARS.fd"
            shutil.copyfile(OVMF_VARS, variables)  # each machine writes its own
            # romfile= leaves the NIC to OVMF's own virtio-net driver and PXE client.
            argv += [
                "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
                "-drive", f"if=pflash,format=raw,unit=1,file={variables}",
                "-device", f"{nic},romfile=,bootindex=1",
            ]
            # OVMF offers the NIC as PXEv4, PXEv6, HTTPv4, HTTPv6 in that order (its fw_cfg
            # knobs take some away). uefi-http: without the PXE options, HTTP boot over IPv4
            # comes first. uefi-http6: without IPv4, PXEv6 then HTTPv6. PXEv6 gets no boot URL
            # (the DHCPv6 server has none for a PXE client) and gives up within seconds; without
            # it before, HTTPv6 starts IPv6 itself and its DHCPv6 Solicit never leaves (EDK2
            # 2022.11, seen in the lab: the link-local address is not ready yet).
            knobs = {"uefi-http": ["IPv4PXESupport", "IPv6PXESupport"],
                     "uefi-http6": ["IPv4Support"]}.get(client.chain, [])
            argv += [arg for knob in knobs for arg in (
                "-fw_cfg", f"name=opt/org.tianocore/{knob},string=n")]
        else:
            argv += ["-boot", "n", "-device", nic]
        if client.chain == "bios-undionly":
            console = self.workdir / f"{client.name}.console"
            console.unlink(missing_ok=True)
            argv += ["-chardev", f"socket,id=s0,path={console},server=on,wait=off,logfile={serial}",
                     "-serial", "chardev:s0"]
        else:
            argv += ["-serial", f"file:{serial}"]
        return argv


#: What iPXE prints when it starts, before its DHCP; Ctrl-B then opens its command line.
IPXE_PROMPT = "Press Ctrl-B for the iPXE command line"
#: The user class the NIC's iPXE ROM sends instead of "iPXE" when it plays a plain PXE ROM.
PXE_ROM_USER_CLASS = "boothop-lab-pxe-rom"


def as_pxe_rom(console: Path, serial: Path, timeout: float) -> None:
    """Make the NIC's iPXE ROM boot as a plain PXE ROM would: at its prompt, set its DHCP user
    class (option 77) to something other than "iPXE" and autoboot. The PXE server then offers it
    undionly.kpxe by architecture, which, being iPXE, is offered the script: option 77 ends the
    chain. (Debian has no other BIOS PXE ROM for QEMU.)"""
    if not wait_for(lambda: IPXE_PROMPT in _text(serial), timeout, interval=0.05):
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as line:
        line.connect(str(console))
        line.sendall(b"\x02")
        if not wait_for(lambda: "iPXE>" in _text(serial), 10, interval=0.05):
            return
        for command in (f"set user-class {PXE_ROM_USER_CLASS}", "autoboot"):
            # SeaBIOS polls its serial console for keys and drops what comes too fast: one
            # character at a time, each once iPXE has echoed the one before.
            for character in command.encode() + b"\r":
                echoed = len(_text(serial))
                line.sendall(bytes((character,)))
                wait_for(lambda: len(_text(serial)) > echoed, 5, interval=0.01)  # noqa: B023


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def run_demo(
    spec: LabSpec, run_dir: Path, image: str | None = None, parallel: int = 1
) -> tuple[list[ClientResult], str]:
    """up, boot every client (``parallel`` at a time), collect the report and the ladder, down
    (always).

    ``run_dir`` keeps the run: ``report.html`` and the daemons' and clients' ``logs/``; with an
    ``image``, boothop's daemons run as containers of it."""
    lab = Lab(spec, image=image)
    lab.down()
    try:
        lab.up()
        results = lab.boot_clients(parallel)
        time.sleep(0.3)  # the daemons' last log lines
        run_dir.mkdir(parents=True, exist_ok=True)
        report = render(spec, lab.workdir, results, run_dir / "report.html")
        shutil.copytree(lab.workdir / "logs", run_dir / "logs", dirs_exist_ok=True)
        return results, report
    finally:
        lab.down()
