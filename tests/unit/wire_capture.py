"""Regenerate tests/unit/captures/*.bin: real DHCP packets from real clients, as UDP payloads.

Run as root: ``python3 tests/unit/wire_capture.py [--ipxe]``. Not a test: the committed captures are
data, so the unit tests need neither root nor these programs.

Topology: namespaces ``bhw-srv`` (dnsmasq on 10.31.0.1/24, veth ``bhw-s0``) and ``bhw-cli`` (veth
``bhw-c0``). tcpdump in ``bhw-srv`` records UDP 67/68 while dhclient, udhcpc, dhcpcd and a udhcpc
posing as a PXE client (options 60/93/94/97) run one after the other in ``bhw-cli``. With
``--ipxe``, qemu (TCG) boots iPXE from its e1000 ROM on a tap ``bhw-tap0`` in ``bhw-srv``.
Everything is bounded by timeouts, processes are stopped by PID and the namespaces are deleted
on exit.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

SRV, CLI = "bhw-srv", "bhw-cli"
SRV_IF, CLI_IF, TAP = "bhw-s0", "bhw-c0", "bhw-tap0"
CAPTURES = Path(__file__).parent / "captures"
DHCPCD_LEASE = Path("/var/lib/dhcpcd") / f"{CLI_IF}.lease"
DHCPCD_DUID = Path("/var/lib/dhcpcd/duid")
PXE_UUID = "00" + "4d1f6a2c9b3e4f70a1b2c3d4e5f60718"


def run(*argv: str, timeout: float = 10) -> None:
    subprocess.run(argv, check=True, timeout=timeout)


def in_ns(ns: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


@contextlib.contextmanager
def topology() -> Iterator[None]:
    try:
        run("ip", "netns", "add", SRV)
        run("ip", "netns", "add", CLI)
        run("ip", "link", "add", SRV_IF, "netns", SRV, "type", "veth", "peer", CLI_IF, "netns", CLI)
        run(*in_ns(SRV, "ip", "addr", "add", "10.31.0.1/24", "dev", SRV_IF))
        for ns, dev in ((SRV, SRV_IF), (CLI, CLI_IF), (SRV, "lo"), (CLI, "lo")):
            run(*in_ns(ns, "ip", "link", "set", dev, "up"))
        yield
    finally:
        for ns in (SRV, CLI):
            subprocess.run(["ip", "netns", "del", ns], check=False, timeout=10)


@contextlib.contextmanager
def process(argv: list[str], grace: float = 3) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def client_runs(work: Path) -> list[tuple[str, list[str]]]:
    """(label, argv) for each real client, run in turn in the client namespace."""
    return [
        ("dhclient", ["dhclient", "-1", "-d", "-sf", "/bin/true",
                      "-lf", str(work / "dhclient.leases"), "-pf", str(work / "dhclient.pid"),
                      CLI_IF]),
        ("udhcpc", ["udhcpc", "-i", CLI_IF, "-f", "-q", "-n", "-t", "3", "-T", "1",
                    "-s", "/bin/true"]),
        ("dhcpcd", ["dhcpcd", "-4", "-B", "-1", "-t", "8", "--nohook", "resolv.conf",
                    "-c", "/bin/true", CLI_IF]),
        ("udhcpc-pxe", ["udhcpc", "-i", CLI_IF, "-f", "-q", "-n", "-t", "3", "-T", "1",
                        "-s", "/bin/true", "-V", "PXEClient:Arch:00000:UNDI:002001",
                        "-x", "0x5d:0000", "-x", "0x5e:010201", "-x", f"0x61:{PXE_UUID}"]),
    ]


def capture(work: Path, ipxe: bool) -> list[tuple[str, float, bytes]]:
    """Run the clients under tcpdump; returns (label, timestamp, UDP payload) in capture order."""
    from scapy.all import UDP, rdpcap  # imported here: only the capture needs scapy's pcap reader

    pcap = work / "dhcp.pcap"
    dnsmasq = ["dnsmasq", "--keep-in-foreground", "--port=0", "--bind-interfaces",
               f"--interface={SRV_IF}", "--dhcp-range=10.31.0.100,10.31.0.150,1h",
               *([f"--interface={TAP}", "--dhcp-range=10.31.1.100,10.31.1.150,1h"] if ipxe else []),
               f"--dhcp-leasefile={work / 'leases'}", f"--pid-file={work / 'dnsmasq.pid'}",
               "--dhcp-boot=pxelinux.0", "--pxe-service=x86PC,Network boot,pxelinux",
               "--pxe-prompt=Press F8,5", "--dhcp-authoritative", "--log-dhcp"]
    if ipxe:
        run(*in_ns(SRV, "ip", "tuntap", "add", TAP, "mode", "tap"))
        run(*in_ns(SRV, "ip", "addr", "add", "10.31.1.1/24", "dev", TAP))
        run(*in_ns(SRV, "ip", "link", "set", TAP, "up"))
    marks: list[tuple[str, float]] = []
    dump = in_ns(SRV, "timeout", "120", "tcpdump", "-n", "-U", "-c", "200", "-i", "any",
                 "-w", str(pcap), "udp port 67 or udp port 68")
    with process(dump), process(in_ns(SRV, *dnsmasq)):
        time.sleep(1.5)
        for label, argv in client_runs(work):
            DHCPCD_LEASE.unlink(missing_ok=True)  # else dhcpcd skips DISCOVER (INIT-REBOOT)
            marks.append((label, time.time()))
            subprocess.run(in_ns(CLI, "timeout", "15", *argv), check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            run(*in_ns(CLI, "ip", "addr", "flush", "dev", CLI_IF))
            time.sleep(0.5)
        DHCPCD_LEASE.unlink(missing_ok=True)
        if ipxe:
            marks.append(("ipxe", time.time()))
            qemu = in_ns(SRV, "timeout", "90", "qemu-system-x86_64", "-accel", "tcg", "-nographic",
                         "-m", "128", "-boot", "n", "-no-reboot", "-netdev",
                         f"tap,id=n0,ifname={TAP},script=no,downscript=no",
                         "-device", "e1000,netdev=n0,mac=52:54:00:31:00:01")
            with process(qemu):
                time.sleep(45)
        time.sleep(1)
    out: list[tuple[str, float, bytes]] = []
    for pkt in rdpcap(str(pcap)):
        if UDP not in pkt:
            continue
        when = float(pkt.time)
        label = next((name for name, start in reversed(marks) if when >= start), "none")
        out.append((label, when, bytes(pkt[UDP].payload)))
    return out


def save(packets: list[tuple[str, float, bytes]]) -> list[str]:
    """Keep the first packet of each (client, sender, message type); write them as .bin files.

    Files of this run replace those of the same name; others already there are kept.
    """
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from boothop.relay.wire import MessageType, decode

    CAPTURES.mkdir(exist_ok=True)
    written = []
    for label, _, payload in packets:
        msg = decode(payload)
        kind = MessageType(msg.message_type).name.lower()
        sender = label if msg.op == 1 else f"dnsmasq-{label}"
        name = f"{sender}-{kind}.bin"
        if name not in written:
            (CAPTURES / name).write_bytes(payload)
            written.append(name)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ipxe", action="store_true", help="also boot iPXE in qemu (slow)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces)")
    had_duid = DHCPCD_DUID.exists()
    try:
        with tempfile.TemporaryDirectory(prefix="bhw-") as tmp, topology():
            packets = capture(Path(tmp), args.ipxe)
    finally:
        if not had_duid:  # dhcpcd creates it on first use; leave the machine as found
            DHCPCD_DUID.unlink(missing_ok=True)
    for name in save(packets):
        print(name, (CAPTURES / name).stat().st_size)


if __name__ == "__main__":
    main()
