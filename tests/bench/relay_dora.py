"""Benchmark (not a test): full DORA exchanges per second through a relay, perfdhcp -> relay -> kea.

    python3 tests/bench/relay_dora.py [--runs 3] [--duration 4] [--relays dhcrelay,boothop]

Topology (namespaces ``bhp-<random>-*``): ``gen`` (perfdhcp) on client LAN 10.45.128.0/17,
``router`` (the relay, -id lanc0 -iu up0 -a) and ``server`` (kea-dhcp4, memfile, a 32k pool) on
10.45.100.0/24. Cores: the relay alone on CPU 1, perfdhcp, kea and tcpdump on CPU 0 (taskset), so
both relays meet the same contention. The relays take turns (dhcrelay, boothop, dhcrelay, ...) so
that a change in the machine's load during the run hits both alike. boothop-relay runs as
``python3 -m boothop.relay`` of the interpreter running the benchmark (the checkout, when it is
installed editable), not from whatever ``boothop-relay`` the PATH holds. Needs root, perfdhcp
(kea-admin), kea-dhcp4, dhcrelay, tcpdump and a C compiler (``cc``, for the shim below).

perfdhcp (2.2) in DHCPv4 always acts as a relay itself, so it sends templates instead (giaddr 0,
hops 0, broadcast flag, no client-id; offsets of xid, MAC, secs, options 50 and 54 given with
-X -O -E -I -S). It binds its socket to the interface address and cannot see replies broadcast to
255.255.255.255:68, so a tiny LD_PRELOAD shim (compiled here with cc) binds port 68 to INADDR_ANY
and sets SO_BROADCAST. Every perfdhcp run is bounded by -r, -p and a timeout.

Printed per relay, medians of the runs: the lossless rate (highest rate of an ascending ladder with
no drop in either exchange); the relay's CPU time per DORA at a fixed rate (utime+stime of the relay
process from /proc/PID/stat, divided by completed DORAs); the latency the relay adds, measured where
it happens: tcpdump on both router interfaces (lanc0, up0) timestamps every DHCP packet as it enters
and leaves the router, packets are paired by (xid, message type), and each of the four relayed
packets of a DORA (DISCOVER, OFFER, REQUEST, ACK) gets its median transit time; their sum is the
latency added per DORA. That pass runs at a low rate, apart from the CPU pass (capturing costs CPU
in the kernel). Then the boothop/dhcrelay ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import re
import secrets
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from boothop.relay.lab.processes import ProcessRunner, wait_for
from boothop.relay.lab.topology import Host, Lan, Port, Route, Topology
from boothop.relay.wire import (
    BROADCAST_FLAG,
    DhcpMessage,
    MessageType,
    Opt,
    WireError,
    decode,
    encode,
)

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "system"))
from servers import Pool, start_kea  # noqa: E402 - found through the sys.path entry above

SERVER = "10.45.100.10"
ROUTER_UP = "10.45.100.1"
CLIENT_LAN = "10.45.128.0/17"
ROUTER_DOWN = "10.45.128.1"
GENERATOR = "10.45.128.2"
POOL = Pool(CLIENT_LAN, "10.45.129.0", "10.45.255.250", ROUTER_DOWN)
CLIENTS = 20000
#: The packets of a DORA, in the direction the relay carries them.
DORA = (MessageType.DISCOVER, MessageType.OFFER, MessageType.REQUEST, MessageType.ACK)
RELAY_CPU = "1"
OTHERS_CPU = "0"
CLK_TCK = os.sysconf("SC_CLK_TCK")

_SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
/* perfdhcp binds to the interface address; replies broadcast to 255.255.255.255:68 need ANY. */
int bind(int fd, const struct sockaddr *addr, socklen_t len) {
    static int (*real)(int, const struct sockaddr *, socklen_t);
    if (!real) real = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "bind");
    if (addr && addr->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        struct sockaddr_in a;
        memcpy(&a, addr, sizeof a);
        if (ntohs(a.sin_port) == 68) {
            int one = 1;
            setsockopt(fd, SOL_SOCKET, SO_BROADCAST, &one, sizeof one);
            a.sin_addr.s_addr = htonl(INADDR_ANY);
            return real(fd, (const struct sockaddr *)&a, sizeof a);
        }
    }
    return real(fd, addr, len);
}
"""


@dataclasses.dataclass(frozen=True)
class Templates:
    discover: Path
    request: Path
    xid: int
    mac_last: int
    secs: int
    requested_ip: int
    server_id: int


def write_templates(workdir: Path) -> Templates:
    """DISCOVER and REQUEST as a client behind a relay sends them; offsets found, not assumed."""
    mac = bytes.fromhex("024580000000") + bytes(10)
    base = DhcpMessage(op=1, xid=0, chaddr=mac, flags=BROADCAST_FLAG)
    discover = encode(base.replace(options=((Opt.MESSAGE_TYPE, b"\x01"),)))
    request = encode(base.replace(options=(
        (Opt.MESSAGE_TYPE, b"\x03"),
        (Opt.REQUESTED_ADDRESS, bytes(4)),
        (Opt.SERVER_ID, bytes(4)),
    )))
    paths = workdir / "discover.hex", workdir / "request.hex"
    paths[0].write_text(discover.hex())
    paths[1].write_text(request.hex())
    # perfdhcp's option offsets point at the option's code byte.
    return Templates(
        discover=paths[0],
        request=paths[1],
        xid=4,
        mac_last=28 + 5,
        secs=8,
        requested_ip=request.index(bytes([Opt.REQUESTED_ADDRESS, 4]), 240),
        server_id=request.index(bytes([Opt.SERVER_ID, 4]), 240),
    )


def build_shim(workdir: Path) -> Path:
    source, library = workdir / "bindany.c", workdir / "bindany.so"
    source.write_text(_SHIM)
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", str(library), str(source), "-ldl"],
                   check=True, timeout=60)
    return library


def topology(prefix: str) -> Topology:
    to_lan = Route("10.45.0.0/16", ROUTER_UP)
    return Topology(
        prefix,
        [Host("router", forwarding=True), Host("server", routes=(to_lan,)), Host("gen")],
        [
            Lan("c", (Port("router", "lanc0", f"{ROUTER_DOWN}/17"),
                      Port("gen", "eth0", f"{GENERATOR}/17"))),
            Lan("srv", (Port("router", "up0", f"{ROUTER_UP}/24"),
                        Port("server", "srv0", f"{SERVER}/24"))),
        ],
    )


@dataclasses.dataclass(frozen=True)
class Result:
    do_sent: int
    do_drops: int
    ra_sent: int
    ra_received: int
    ra_drops: int
    do_delay_ms: float
    ra_delay_ms: float

    @property
    def lossless(self) -> bool:
        return self.do_sent > 0 and self.do_drops == 0 and self.ra_drops == 0


def _section(text: str, name: str) -> str:
    start = text.find(f"***Statistics for: {name}***")
    if start < 0:
        raise ValueError(f"perfdhcp output has no {name} section:\n{text[-2000:]}")
    end = text.find("***Statistics for:", start + 10)
    return text[start : end if end > 0 else len(text)]


def _number(section: str, label: str) -> float:
    match = re.search(rf"^{label}: ([0-9.]+|inf|n/a)", section, re.MULTILINE)
    if match is None or match.group(1) in ("inf", "n/a"):
        return float("nan")
    return float(match.group(1))


def parse_perfdhcp(text: str) -> Result:
    do, ra = _section(text, "DISCOVER-OFFER"), _section(text, "REQUEST-ACK")
    return Result(
        do_sent=int(_number(do, "sent packets")),
        do_drops=int(_number(do, "drops")),
        ra_sent=int(_number(ra, "sent packets")),
        ra_received=int(_number(ra, "received packets")),
        ra_drops=int(_number(ra, "drops")),
        do_delay_ms=_number(do, "avg delay"),
        ra_delay_ms=_number(ra, "avg delay"),
    )


class Bench:
    def __init__(self, topo: Topology, runner: ProcessRunner, templates: Templates, shim: Path,
                 duration: float) -> None:
        self.topo, self.runner, self.templates, self.shim = topo, runner, templates, shim
        self.duration = duration

    def perfdhcp(self, rate: int, duration: float | None = None) -> Result:
        t = self.templates
        seconds = self.duration if duration is None else duration
        argv = [
            "env", f"LD_PRELOAD={self.shim}",
            "taskset", "-c", OTHERS_CPU,
            "timeout", str(int(seconds + 15)),
            "perfdhcp", "-4", "-g", "single", "-l", "eth0", "-L", "68",
            "-T", str(t.discover), "-T", str(t.request),
            "-X", str(t.xid), "-X", str(t.xid), "-O", str(t.mac_last), "-O", str(t.mac_last),
            "-E", "0", "-E", str(t.secs), "-I", str(t.requested_ip), "-S", str(t.server_id),
            "-R", str(CLIENTS), "-r", str(rate), "-p", str(int(seconds)), "-W", "500000",
            "255.255.255.255",
        ]
        done = self.runner.run(self.topo.netns("gen"), argv, timeout=seconds + 30)
        return parse_perfdhcp(done.stdout + done.stderr)

    def lossless_rate(self, ladder: list[int]) -> int:
        best = 0
        for rate in ladder:
            result = self.perfdhcp(rate)
            achieved = result.ra_received / self.duration
            print(f"    ladder {rate}/s: {achieved:.0f} DORA/s completed, drops "
                  f"{result.do_drops}+{result.ra_drops} of {result.do_sent}+{result.ra_sent}",
                  flush=True)
            if not result.lossless or achieved < 0.95 * rate:
                break
            best = rate
        return best

    def transit_us(self, rate: int, seconds: int) -> dict[MessageType, float]:
        """Median time (µs) each DORA packet spends in the router, from tcpdump on both sides."""
        router = self.topo.netns("router")
        workdir = self.shim.parent
        captures, processes = {}, []
        for interface in ("lanc0", "up0"):
            path = captures[interface] = workdir / f"{interface}.pcap"
            path.unlink(missing_ok=True)
            process = self.runner.start(router, [
                "taskset", "-c", OTHERS_CPU, "timeout", str(seconds + 30),
                "tcpdump", "-i", interface, "-n", "-s", "1600", "-B", "8192", "-U",
                "--time-stamp-precision", "nano", "-c", str(8 * rate * seconds + 100),
                "-w", str(path), "udp port 67 or udp port 68",
            ], f"tcpdump-{interface}-{secrets.token_hex(2)}")
            processes.append(process)
        try:
            for process in processes:
                if not wait_for(lambda p=process: "listening on" in p.output(), 10):
                    raise RuntimeError(f"tcpdump did not start:\n{process.output()}")
            self.perfdhcp(rate, seconds)
        finally:
            for process in processes:
                self.runner.stop(process)
        return transit_medians(read_pcap(captures["lanc0"]), read_pcap(captures["up0"]))


def read_pcap(path: Path) -> list[tuple[float, DhcpMessage]]:
    """(timestamp, message) of each DHCP packet in a pcap file (Ethernet, IPv4, UDP)."""
    data = path.read_bytes()
    if len(data) < 24:
        return []
    magic = data[:4]
    endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    scale = 1e-9 if magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d") else 1e-6
    record = struct.Struct(endian + "IIII")
    packets, offset = [], 24
    while offset + record.size <= len(data):
        seconds, fraction, captured, _ = record.unpack_from(data, offset)
        frame = data[offset + record.size : offset + record.size + captured]
        offset += record.size + captured
        if len(frame) < 42 or frame[12:14] != b"\x08\x00" or frame[23] != 17:
            continue
        udp = 14 + (frame[14] & 0x0F) * 4
        try:
            packets.append((seconds + fraction * scale, decode(frame[udp + 8 :])))
        except WireError:
            continue
    return packets


def transit_medians(lan: list[tuple[float, DhcpMessage]], up: list[tuple[float, DhcpMessage]]
                    ) -> dict[MessageType, float]:
    """Requests go lanc0 -> up0, replies up0 -> lanc0: pair first sightings by (xid, type)."""

    def first_seen(
        packets: list[tuple[float, DhcpMessage]], op: int
    ) -> dict[tuple[int, int], float]:
        seen: dict[tuple[int, int], float] = {}
        for stamp, msg in packets:
            if msg.op == op and msg.message_type is not None:
                seen.setdefault((msg.xid, int(msg.message_type)), stamp)
        return seen

    transits: dict[MessageType, list[float]] = {kind: [] for kind in DORA}
    for op, entering, leaving in ((1, lan, up), (2, up, lan)):
        ins, outs = first_seen(entering, op), first_seen(leaving, op)
        for key, stamp in ins.items():
            if key in outs and key[1] in transits:
                transits[MessageType(key[1])].append((outs[key] - stamp) * 1e6)
    return {kind: statistics.median(values) if values else float("nan")
            for kind, values in transits.items()}


@dataclasses.dataclass(frozen=True)
class RelaySpec:
    """How to run one relay; ``pidfile`` is set when it daemonizes (its PID is read from there)."""

    argv: list[str]
    pidfile: Path | None = None
    env: dict[str, str] = dataclasses.field(default_factory=dict)


def relay_spec(name: str, workdir: Path) -> RelaySpec:
    common = ["-id", "lanc0", "-iu", "up0", "-a"]
    if name == "dhcrelay":
        # Daemonized, as deployed: in the foreground (-d) it writes every packet to stderr,
        # which would bill log formatting to its CPU time.
        pidfile = workdir / "dhcrelay.pid"
        return RelaySpec(["dhcrelay", "-q", "-4", "-pf", str(pidfile), *common, SERVER], pidfile)
    if name == "boothop":
        # At boothop-relay's default log level (info) one line per relayed step is written (to
        # the run's log file): measured here as deployed. --log-level warning writes none.
        return RelaySpec([sys.executable, "-m", "boothop.relay", "-d", *common, SERVER])
    raise ValueError(f"unknown relay {name!r} (dhcrelay, boothop)")


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU time of a process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK  # utime, stime (fields 14, 15)


def context_switches(pid: int) -> tuple[int, int]:
    """Voluntary (mostly: blocking, i.e. one wake-up each) and involuntary context switches of
    all the process's threads."""
    voluntary = involuntary = 0
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        with contextlib.suppress(OSError):
            for line in status.read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    voluntary += int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches:"):
                    involuntary += int(line.split()[1])
    return voluntary, involuntary


@contextlib.contextmanager
def running_relay(runner: ProcessRunner, topo: Topology, spec: RelaySpec, name: str,
                  port: int = 67) -> Iterator[int]:
    """Start the relay pinned to RELAY_CPU; yield its PID once it listens on UDP ``port``; stop
    it by PID."""
    if spec.pidfile is not None:
        spec.pidfile.unlink(missing_ok=True)
    process = runner.start(topo.netns("router"), ["taskset", "-c", RELAY_CPU, *spec.argv], name,
                           env=spec.env)
    pid = process.pid
    try:
        def listening() -> bool:
            out = runner.run(topo.netns("router"), ["ss", "-Hnul", f"sport = :{port}"],
                             timeout=10)
            return bool(out.stdout.strip())

        if not wait_for(listening, 10):
            raise RuntimeError(f"{name} did not start:\n{process.output()}")
        if spec.pidfile is not None:
            wait_for(lambda: spec.pidfile is not None and spec.pidfile.exists(), 5)
            pid = int(spec.pidfile.read_text().strip())
        yield pid
    finally:
        runner.stop(process)
        if pid != process.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            if not wait_for(lambda: not Path(f"/proc/{pid}").exists(), 3):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


@dataclasses.dataclass
class Figures:
    lossless: list[int] = dataclasses.field(default_factory=list)
    cpu_us: list[float] = dataclasses.field(default_factory=list)
    #: perfdhcp's round trips at the CPU rate: DISCOVER-OFFER + REQUEST-ACK average delays.
    round_trip_ms: list[float] = dataclasses.field(default_factory=list)
    transit_us: list[dict[MessageType, float]] = dataclasses.field(default_factory=list)

    def median_transit(self, kind: MessageType) -> float:
        return statistics.median(t[kind] for t in self.transit_us)

    @property
    def added_per_dora_us(self) -> float:
        return sum(self.median_transit(kind) for kind in DORA)


def measure_once(name: str, spec: RelaySpec, bench: Bench, args: argparse.Namespace,
                 run: int, figures: Figures) -> None:
    with running_relay(bench.runner, bench.topo, spec, f"{name}-{run}") as pid:
        bench.perfdhcp(min(args.cpu_rate, 200), 2)  # warm-up: ARP, kea's lease table
        user, system = cpu_seconds(pid)
        switches = context_switches(pid)
        result = bench.perfdhcp(args.cpu_rate)
        user, system = (
            after - before for after, before in zip(cpu_seconds(pid), (user, system), strict=True)
        )
        voluntary, involuntary = (after - before for after, before in
                                  zip(context_switches(pid), switches, strict=True))
        used = user + system
        if result.ra_received:
            figures.cpu_us.append(used / result.ra_received * 1e6)
            figures.round_trip_ms.append(result.do_delay_ms + result.ra_delay_ms)
        figures.transit_us.append(bench.transit_us(args.latency_rate, 2))
        figures.lossless.append(bench.lossless_rate(args.ladder))
        transit = figures.transit_us[-1]
        print(
            f"  {name} run {run + 1}: lossless {figures.lossless[-1]}/s; at {args.cpu_rate}/s "
            f"{result.ra_received} DORA, drops {result.do_drops}+{result.ra_drops}, relay CPU "
            f"{used:.2f} s (user {user:.2f}) = "
            f"{figures.cpu_us[-1] if result.ra_received else 0:.1f} us/DORA, "
            f"round trips {result.do_delay_ms + result.ra_delay_ms:.2f} ms, context switches "
            f"per DORA {voluntary / max(result.ra_received, 1):.2f}+"
            f"{involuntary / max(result.ra_received, 1):.2f}; "
            "transit us " + " ".join(f"{k.name} {transit[k]:.0f}" for k in DORA),
            flush=True,
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=int, default=4, help="seconds per perfdhcp run")
    parser.add_argument("--cpu-rate", type=int, default=2000, help="DORA/s for the CPU figure")
    parser.add_argument("--latency-rate", type=int, default=500,
                        help="DORA/s for the latency pass (tcpdump on both router interfaces)")
    parser.add_argument("--ladder", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1000, 2000, 3000, 4000, 5000, 6000, 8000, 10000, 12000, 16000])
    parser.add_argument("--relays", default="dhcrelay,boothop")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    for tool in ("perfdhcp", "kea-dhcp4", "dhcrelay", "taskset", "cc", "ss", "tcpdump"):
        if shutil.which(tool) is None:
            print(f"{tool} not installed", file=sys.stderr)
            return 2
    names = args.relays.split(",")
    started = time.monotonic()
    figures = {name: Figures() for name in names}
    with tempfile.TemporaryDirectory(prefix="bhp-bench-") as tmp:
        workdir = Path(tmp)
        templates, shim = write_templates(workdir), build_shim(workdir)
        specs = {name: relay_spec(name, workdir) for name in names}
        topo = topology(f"bhp-{secrets.token_hex(3)}")
        with topo, ProcessRunner(workdir / "logs") as runner:
            kea = start_kea(runner, topo.netns("server"), workdir / "kea", "srv0", [POOL])
            subprocess.run(["taskset", "-pc", OTHERS_CPU, str(kea.pid)], check=True,
                           capture_output=True, timeout=10)
            bench = Bench(topo, runner, templates, shim, args.duration)
            for run in range(args.runs):
                for name in names:
                    measure_once(name, specs[name], bench, args, run, figures[name])
    print(f"\nresults (medians of {args.runs} runs, {args.duration:g} s per perfdhcp run, "
          f"relay on CPU {RELAY_CPU}, perfdhcp+kea on CPU {OTHERS_CPU}; CPU at {args.cpu_rate} "
          f"DORA/s, transit at {args.latency_rate} DORA/s):")
    print(f"  {'relay':9s} {'lossless':>9s} {'CPU/DORA':>9s} {'RTT@CPU':>8s}   median transit "
          "(us): " + " ".join(f"{k.name:>8s}" for k in DORA) + "  added/DORA")
    for name, f in figures.items():
        print(f"  {name:9s} {statistics.median(f.lossless):>7.0f}/s "
              f"{statistics.median(f.cpu_us):>6.1f}us {statistics.median(f.round_trip_ms):>6.2f}ms"
              "   " + " " * 21 + " ".join(f"{f.median_transit(k):>8.0f}" for k in DORA)
              + f"  {f.added_per_dora_us:>8.0f} us")
    if "dhcrelay" in figures and "boothop" in figures:
        b, d = figures["boothop"], figures["dhcrelay"]
        print(f"  ratio boothop/dhcrelay: lossless rate "
              f"{statistics.median(b.lossless) / max(statistics.median(d.lossless), 1):.2f}, "
              f"CPU per DORA {statistics.median(b.cpu_us) / statistics.median(d.cpu_us):.2f}, "
              f"latency added per DORA {b.added_per_dora_us / d.added_per_dora_us:.2f}")
    print(f"total {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
