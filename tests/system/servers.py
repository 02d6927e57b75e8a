"""The programs around the relay in the end-to-end tests: servers, a recording helper, clients.

Each helper writes its configuration into a per-test directory and starts the program in a
namespace through ``relay.lab.processes.ProcessRunner`` (which stops it by PID). Nothing here
writes outside that directory: the client scripts record what they are told instead of configuring
the system (the stock dhclient-script and udhcpc script would rewrite /etc/resolv.conf).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import struct
import sys
import textwrap
from pathlib import Path

from boothop.relay.lab.processes import Process, ProcessRunner, wait_for
from boothop.relay.wire import DhcpMessage, decode

# -- kea-dhcp4-server ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Pool:
    subnet: str  # "10.41.1.0/24"
    first: str
    last: str
    router: str

    def contains(self, address: str) -> bool:
        ip = ipaddress.IPv4Address(address)
        return ipaddress.IPv4Address(self.first) <= ip <= ipaddress.IPv4Address(self.last)


def kea_config(workdir: Path, interface: str, pools: list[Pool]) -> dict[str, object]:
    """A kea-dhcp4 configuration serving relayed clients; the subnet is chosen by giaddr."""
    return {
        "Dhcp4": {
            "interfaces-config": {"interfaces": [interface], "dhcp-socket-type": "udp"},
            "lease-database": {
                "type": "memfile",
                "persist": True,
                "name": str(workdir / "kea-leases4.csv"),
                "lfc-interval": 0,
            },
            "control-socket": {"socket-type": "unix", "socket-name": str(workdir / "kea4.sock")},
            "valid-lifetime": 600,
            "renew-timer": 300,
            "rebind-timer": 500,
            "subnet4": [
                {
                    "id": i + 1,
                    "subnet": pool.subnet,
                    "pools": [{"pool": f"{pool.first} - {pool.last}"}],
                    "option-data": [{"name": "routers", "data": pool.router}],
                }
                for i, pool in enumerate(pools)
            ],
            "loggers": [
                {
                    "name": "kea-dhcp4",
                    "output_options": [{"output": "stdout"}],
                    "severity": "INFO",
                }
            ],
        }
    }


def start_kea(
    runner: ProcessRunner, namespace: str, workdir: Path, interface: str, pools: list[Pool]
) -> Process:
    """Start kea-dhcp4 and wait until it listens (log line DHCP4_STARTED)."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "kea-dhcp4.json"
    config.write_text(json.dumps(kea_config(workdir, interface, pools), indent=2))
    env = {"KEA_LOCKFILE_DIR": str(workdir), "KEA_PIDFILE_DIR": str(workdir)}
    process = runner.start(namespace, ["kea-dhcp4", "-c", str(config)], "kea-dhcp4", env=env)
    if not wait_for(lambda: "DHCP4_STARTED" in process.output() or not process.running(), 10):
        raise RuntimeError(f"kea-dhcp4 did not start:\n{process.output()}")
    if not process.running():
        raise RuntimeError(f"kea-dhcp4 exited:\n{process.output()}")
    return process


# -- the second helper: a bounded UDP recorder on port 67 ------------------------------------

_RECORDER = textwrap.dedent(
    """
    import socket, sys, time
    out, port, limit, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    address = sys.argv[5]
    s = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((address, port))
    deadline = time.monotonic() + seconds
    with open(out, "w") as f:
        print("listening", flush=True)
        for _ in range(limit):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            s.settimeout(left)
            try:
                data, (host, sport, *_) = s.recvfrom(4096)
            except socket.timeout:
                break
            f.write(f"{host} {sport} {data.hex()}\\n")
            f.flush()
    """
)


@dataclasses.dataclass(frozen=True, slots=True)
class Received:
    source: str
    sport: int
    message: DhcpMessage


def start_recorder(
    runner: ProcessRunner,
    namespace: str,
    out: Path,
    *,
    port: int = 67,
    limit: int = 200,
    seconds: float = 50.0,
    address: str = "0.0.0.0",
) -> Process:
    """A UDP listener that records every datagram it gets (at most ``limit``, for ``seconds``)
    on ``address`` (an IPv6 one makes it an AF_INET6 socket)."""
    argv = [sys.executable, "-c", _RECORDER, str(out), str(port), str(limit), str(seconds),
            address]
    process = runner.start(namespace, argv, "recorder")
    if not wait_for(lambda: "listening" in process.output() or not process.running(), 10):
        raise RuntimeError(f"recorder did not start:\n{process.output()}")
    return process


def read_recorded(path: Path) -> list[Received]:
    """The datagrams the recorder got; anything the codec rejects fails loudly."""
    received: list[Received] = []
    if not path.exists():
        return received
    for line in path.read_text().splitlines():
        host, sport, payload = line.split()
        received.append(Received(host, int(sport), decode(bytes.fromhex(payload))))
    return received


# -- clients ---------------------------------------------------------------------------------

_DHCLIENT_SCRIPT = """#!/bin/sh
echo "$reason ${new_ip_address:-}" >> "%s"
exit 0
"""

_UDHCPC_SCRIPT = """#!/bin/sh
echo "$1 ${ip:-}" >> "%s"
exit 0
"""


def start_dhclient(
    runner: ProcessRunner, namespace: str, ifname: str, workdir: Path, name: str
) -> tuple[Process, Path]:
    """ISC dhclient in the foreground; it leaves the broadcast flag clear (unicast delivery)."""
    workdir.mkdir(parents=True, exist_ok=True)
    events = workdir / f"{name}.events"
    script = workdir / f"{name}.sh"
    script.write_text(_DHCLIENT_SCRIPT % events)
    script.chmod(0o755)
    config = workdir / f"{name}.conf"
    config.write_text("timeout 30;\nretry 1;\n")
    argv = [
        "dhclient", "-4", "-d", "-1", "-v",
        "-cf", str(config),
        "-sf", str(script),
        "-lf", str(workdir / f"{name}.leases"),
        "-pf", str(workdir / f"{name}.pid"),
        ifname,
    ]
    return runner.start(namespace, argv, name), events


def start_udhcpc(
    runner: ProcessRunner, namespace: str, ifname: str, workdir: Path, name: str
) -> tuple[Process, Path]:
    """busybox udhcpc with -B: the broadcast flag set (broadcast delivery); exits once bound."""
    workdir.mkdir(parents=True, exist_ok=True)
    events = workdir / f"{name}.events"
    script = workdir / f"{name}.sh"
    script.write_text(_UDHCPC_SCRIPT % events)
    script.chmod(0o755)
    argv = [
        "busybox", "udhcpc", "-f", "-q", "-n", "-B",
        "-i", ifname, "-s", str(script), "-t", "6", "-T", "2", "-A", "1",
    ]
    return runner.start(namespace, argv, name), events


def bound_address(events: Path) -> str | None:
    """The address a client script was told it is bound to (dhclient BOUND, udhcpc bound)."""
    if not events.exists():
        return None
    for line in events.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in ("BOUND", "bound"):
            return parts[1]
    return None


# -- capture on a client LAN -----------------------------------------------------------------


def start_capture(
    runner: ProcessRunner, namespace: str, ifname: str, out: Path, name: str, count: int = 60
) -> Process:
    """tcpdump of DHCP traffic, bounded by ``count`` packets; written per packet (-U)."""
    argv = [
        "tcpdump", "-i", ifname, "-n", "-U", "--immediate-mode", "-s", "2048", "-c", str(count),
        "-w", str(out), "udp and (port 67 or port 68)",
    ]
    process = runner.start(namespace, argv, name)
    if not wait_for(lambda: "listening on" in process.output() or not process.running(), 10):
        raise RuntimeError(f"tcpdump did not start:\n{process.output()}")
    return process


@dataclasses.dataclass(frozen=True, slots=True)
class Frame:
    eth_dst: str
    ip_src: str
    ip_dst: str
    sport: int
    dport: int
    message: DhcpMessage


def read_pcap(path: Path) -> list[Frame]:
    """Ethernet/IPv4/UDP frames of a classic pcap file, DHCP payload decoded with relay.wire."""
    data = path.read_bytes() if path.exists() else b""
    if len(data) < 24:
        return []
    magic = data[:4]
    endian = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">"}[magic]
    frames = []
    offset = 24
    while offset + 16 <= len(data):
        _, _, caplen, _ = struct.unpack(endian + "IIII", data[offset : offset + 16])
        frame = data[offset + 16 : offset + 16 + caplen]
        offset += 16 + caplen
        if len(frame) < 14 + 20 + 8 or frame[12:14] != b"\x08\x00":
            continue
        ihl = (frame[14] & 0x0F) * 4
        udp = 14 + ihl
        sport, dport = struct.unpack("!HH", frame[udp : udp + 4])
        frames.append(
            Frame(
                eth_dst=":".join(f"{b:02x}" for b in frame[0:6]),
                ip_src=str(ipaddress.IPv4Address(frame[26:30])),
                ip_dst=str(ipaddress.IPv4Address(frame[30:34])),
                sport=sport,
                dport=dport,
                message=decode(frame[udp + 8 :]),
            )
        )
    return frames
