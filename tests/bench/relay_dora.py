"""Benchmark (not a test): full DORA exchanges per second through a relay, perfdhcp -> relay -> kea.

    python3 tests/bench/relay_dora.py [--runs 3] [--duration 4] [--relays dhcrelay,boothop]

Topology (namespaces ``bhr-<random>-*``): ``gen`` (perfdhcp) on client LAN 10.41.128.0/17, ``router``
(the relay, -id lanc0 -iu up0) and ``server`` (kea-dhcp4, memfile, a 32k pool) on 10.41.100.0/24.
Cores: the relay alone on CPU 1, perfdhcp and kea on CPU 0 (taskset), so both relays meet the same
contention.

perfdhcp (2.2) in DHCPv4 always acts as a relay itself, so it sends templates instead (giaddr 0,
hops 0, broadcast flag, no client-id; offsets of xid, MAC, secs, options 50 and 54 given with
-X -O -E -I -S). It binds its socket to the interface address and cannot see replies broadcast to
255.255.255.255:68, so a tiny LD_PRELOAD shim (compiled here with cc) binds port 68 to INADDR_ANY and
sets SO_BROADCAST. Every perfdhcp run is bounded by -r, -p and a timeout.

Printed per relay: the lossless rate (highest rate of an ascending ladder with no drop in either
exchange, median of the runs), the relay's CPU time per DORA at a fixed rate (utime+stime of the
relay process from /proc/PID/stat, divided by completed DORAs), the average DO and RA delays
perfdhcp measured; then boothop/dhcrelay ratios.
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
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from relay.lab.processes import ProcessRunner, wait_for
from relay.lab.topology import Host, Lan, Port, Route, Topology
from relay.wire import BROADCAST_FLAG, DhcpMessage, Opt, encode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "system"))
from servers import Pool, start_kea  # noqa: E402

SERVER = "10.41.100.10"
ROUTER_UP = "10.41.100.1"
CLIENT_LAN = "10.41.128.0/17"
ROUTER_DOWN = "10.41.128.1"
GENERATOR = "10.41.128.2"
POOL = Pool(CLIENT_LAN, "10.41.129.0", "10.41.255.250", ROUTER_DOWN)
CLIENTS = 20000
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
    mac = bytes.fromhex("024180000000") + bytes(10)
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
    to_lan = Route("10.41.0.0/16", ROUTER_UP)
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

    def perfdhcp(self, rate: int) -> Result:
        t = self.templates
        argv = [
            "env", f"LD_PRELOAD={self.shim}",
            "taskset", "-c", OTHERS_CPU,
            "timeout", str(int(self.duration + 15)),
            "perfdhcp", "-4", "-g", "single", "-l", "eth0", "-L", "68",
            "-T", str(t.discover), "-T", str(t.request),
            "-X", str(t.xid), "-X", str(t.xid), "-O", str(t.mac_last), "-O", str(t.mac_last),
            "-E", "0", "-E", str(t.secs), "-I", str(t.requested_ip), "-S", str(t.server_id),
            "-R", str(CLIENTS), "-r", str(rate), "-p", str(int(self.duration)), "-W", "500000",
            "255.255.255.255",
        ]
        done = self.runner.run(self.topo.netns("gen"), argv, timeout=self.duration + 30)
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


@dataclasses.dataclass(frozen=True)
class RelaySpec:
    """How to run one relay; ``pidfile`` is set when it daemonizes (its PID is read from there)."""

    argv: list[str]
    pidfile: Path | None = None


def relay_spec(name: str, workdir: Path) -> RelaySpec | None:
    common = ["-id", "lanc0", "-iu", "up0"]
    if name == "dhcrelay":
        # Daemonized, as deployed: in the foreground (-d) it writes every packet to stderr,
        # which would bill log formatting to its CPU time.
        pidfile = workdir / "dhcrelay.pid"
        return RelaySpec(["dhcrelay", "-q", "-4", "-a", "-pf", str(pidfile), *common, SERVER],
                         pidfile)
    path = shutil.which("boothop-relay")
    if path is None:
        return None
    ok = subprocess.run([path, "--help"], capture_output=True, timeout=20).returncode == 0
    return RelaySpec([path, "-d", *common, "-a", SERVER]) if ok else None


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)


@contextlib.contextmanager
def running_relay(bench: Bench, spec: RelaySpec, name: str) -> Iterator[int]:
    """Start the relay pinned to RELAY_CPU; yield its PID; stop it by PID."""
    runner, topo = bench.runner, bench.topo
    if spec.pidfile is not None:
        spec.pidfile.unlink(missing_ok=True)
    process = runner.start(topo.netns("router"), ["taskset", "-c", RELAY_CPU, *spec.argv], name)
    pid = process.pid
    try:
        def listening() -> bool:
            out = runner.run(topo.netns("router"), ["ss", "-Hnul", "sport = :67"], timeout=10)
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


def measure(name: str, spec: RelaySpec, bench: Bench, args: argparse.Namespace
            ) -> dict[str, float]:
    lossless, cpu_per_dora, do_delay, ra_delay = [], [], [], []
    for run in range(args.runs):
        with running_relay(bench, spec, f"{name}-{run}") as pid:
            bench.perfdhcp(min(args.cpu_rate, 200))  # warm-up: ARP, kea's lease table
            before = cpu_seconds(pid)
            result = bench.perfdhcp(args.cpu_rate)
            used = cpu_seconds(pid) - before
            if result.ra_received:
                cpu_per_dora.append(used / result.ra_received * 1e6)
            do_delay.append(result.do_delay_ms)
            ra_delay.append(result.ra_delay_ms)
            lossless.append(bench.lossless_rate(args.ladder))
            print(f"  {name} run {run + 1}: lossless {lossless[-1]}/s; at {args.cpu_rate}/s "
                  f"{result.ra_received} DORA, drops {result.do_drops}+{result.ra_drops}, "
                  f"relay CPU {used:.2f} s = {cpu_per_dora[-1] if cpu_per_dora else 0:.1f} us/DORA",
                  flush=True)
    return {
        "lossless": statistics.median(lossless),
        "cpu_us": statistics.median(cpu_per_dora) if cpu_per_dora else float("nan"),
        "do_ms": statistics.median(do_delay),
        "ra_ms": statistics.median(ra_delay),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=int, default=4, help="seconds per perfdhcp run")
    parser.add_argument("--cpu-rate", type=int, default=2000, help="DORA/s for the CPU figure")
    parser.add_argument("--ladder", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1000, 2000, 3000, 4000, 5000, 6000, 8000, 12000, 16000])
    parser.add_argument("--relays", default="dhcrelay,boothop")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    for tool in ("perfdhcp", "kea-dhcp4", "dhcrelay", "taskset", "cc", "ss"):
        if shutil.which(tool) is None:
            print(f"{tool} not installed", file=sys.stderr)
            return 2
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bhr-bench-") as tmp:
        workdir = Path(tmp)
        templates, shim = write_templates(workdir), build_shim(workdir)
        topo = topology(f"bhr-{secrets.token_hex(3)}")
        with topo, ProcessRunner(workdir / "logs") as runner:
            kea = start_kea(runner, topo.netns("server"), workdir / "kea", "srv0", [POOL])
            subprocess.run(["taskset", "-pc", OTHERS_CPU, str(kea.pid)], check=True,
                           capture_output=True, timeout=10)
            bench = Bench(topo, runner, templates, shim, args.duration)
            figures: dict[str, dict[str, float]] = {}
            for name in args.relays.split(","):
                spec = relay_spec(name, workdir)
                if spec is None:
                    print(f"{name}: not available (boothop-relay not built yet), skipped")
                    continue
                print(f"{name}: {args.runs} runs", flush=True)
                figures[name] = measure(name, spec, bench, args)
    print(f"\nresults (medians of {args.runs} runs, {args.duration:g} s per perfdhcp run, "
          f"relay on CPU {RELAY_CPU}, perfdhcp+kea on CPU {OTHERS_CPU}):")
    for name, f in figures.items():
        print(f"  {name:9s} lossless {f['lossless']:>7.0f} DORA/s   relay CPU {f['cpu_us']:6.1f} "
              f"us/DORA   avg delay DO {f['do_ms']:.3f} ms RA {f['ra_ms']:.3f} ms")
    if "dhcrelay" in figures and "boothop" in figures:
        b, d = figures["boothop"], figures["dhcrelay"]
        print(f"  ratio boothop/dhcrelay: lossless rate {b['lossless'] / d['lossless']:.2f}, "
              f"CPU per DORA {b['cpu_us'] / d['cpu_us']:.2f}")
    print(f"total {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
