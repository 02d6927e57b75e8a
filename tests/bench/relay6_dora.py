"""Benchmark (not a test): DHCPv6 exchanges through a relay, perfdhcp -6 -> relay -> kea-dhcp6.

    python3 tests/bench/relay6_dora.py [--runs 3] [--duration 4] [--rate 1000]

relay_dora.py's IPv6 sibling, on its machinery (namespaces, CPU pinning, the relay's CPU from
/proc, the interleaved runs): ``gen`` (perfdhcp -6, Solicit-Advertise then Request-Reply, from
link-local addresses to ff02::1:2) on 2001:db8:46::/64, ``router`` (the relay: dhcrelay -6 -l
lanc0 -u SERVER%up0, the same flags for boothop-relay) and ``server`` (kea-dhcp6, memfile) on
2001:db8:45::/64. The relay alone on CPU 1, perfdhcp and kea on CPU 0. The relays take turns
(dhcrelay, boothop, dhcrelay, ...), so a change in the machine's load hits both alike.

Printed per relay, medians of the runs: the relay's CPU time per exchange (Solicit, Advertise,
Request, Reply: four relayed packets) at a fixed rate, the exchanges completed and perfdhcp's
round trips; then the boothop/dhcrelay ratios. Needs root, perfdhcp (kea-admin), kea-dhcp6 and
dhcrelay.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from relay_dora import (
    OTHERS_CPU,
    RELAY_CPU,
    RelaySpec,
    _number,
    _section,
    context_switches,
    cpu_seconds,
    running_relay,
)

from boothop.relay.lab.processes import ProcessRunner, exit_on_sigterm, wait_for
from boothop.relay.lab.topology import Host, Lan, Port, Topology

SERVER = "2001:db8:45::10"
ROUTER_UP = "2001:db8:45::1"
CLIENT_PREFIX = "2001:db8:46"
CLIENTS = 20000


@dataclasses.dataclass(frozen=True)
class Result6:
    sa_sent: int
    sa_drops: int
    rr_received: int
    rr_drops: int
    sa_delay_ms: float
    rr_delay_ms: float


def parse_perfdhcp6(text: str) -> Result6:
    sa, rr = _section(text, "SOLICIT-ADVERTISE"), _section(text, "REQUEST-REPLY")
    return Result6(
        sa_sent=int(_number(sa, "sent packets")),
        sa_drops=int(_number(sa, "drops")),
        rr_received=int(_number(rr, "received packets")),
        rr_drops=int(_number(rr, "drops")),
        sa_delay_ms=_number(sa, "avg delay"),
        rr_delay_ms=_number(rr, "avg delay"),
    )


def topology(prefix: str) -> Topology:
    """relay_dora's three namespaces with IPv6 on; the IPv6 addresses are added by ``address6``
    (the topology module holds IPv4 ones): placeholders of IPv4 here."""
    return Topology(
        prefix,
        [Host("router", forwarding=True), Host("server"), Host("gen")],
        [
            Lan("c", (Port("router", "lanc0", "10.46.0.1/24"),
                      Port("gen", "eth0", "10.46.0.2/24"))),
            Lan("srv", (Port("router", "up0", "10.45.0.1/24"),
                        Port("server", "srv0", "10.45.0.10/24"))),
        ],
        ipv6=True,
    )


def address6(runner: ProcessRunner, topo: Topology) -> None:
    for host, ifname, address in (("router", "lanc0", f"{CLIENT_PREFIX}::1/64"),
                                  ("router", "up0", f"{ROUTER_UP}/64"),
                                  ("server", "srv0", f"{SERVER}/64")):
        runner.run(topo.netns(host), ["ip", "-6", "addr", "add", address, "dev", ifname, "nodad"],
                   timeout=10)
    # perfdhcp sends from the link-local address: wait until it is no longer tentative.
    def settled() -> bool:
        shown = runner.run(topo.netns("gen"), ["ip", "-6", "addr", "show", "dev", "eth0",
                                               "scope", "link"], timeout=10).stdout
        return "inet6" in shown and "tentative" not in shown

    if not wait_for(settled, 10):
        raise RuntimeError("no usable link-local address on the generator")


def start_kea6(runner: ProcessRunner, topo: Topology, workdir: Path) -> int:
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "kea-dhcp6.json"
    config.write_text(json.dumps({"Dhcp6": {
        "interfaces-config": {"interfaces": [f"srv0/{SERVER}"]},
        "lease-database": {"type": "memfile", "persist": False},
        "server-id": {"type": "EN", "enterprise-id": 2495, "identifier": "b007", "persist": False},
        "subnet6": [{"id": 1, "subnet": f"{CLIENT_PREFIX}::/64",
                     "pools": [{"pool": f"{CLIENT_PREFIX}::1:0/112"}]}],
        "loggers": [{"name": "kea-dhcp6", "output_options": [{"output": "stdout"}],
                     "severity": "WARN"}],
    }}))
    env = {"KEA_LOCKFILE_DIR": str(workdir), "KEA_PIDFILE_DIR": str(workdir)}
    kea = runner.start(topo.netns("server"), ["taskset", "-c", OTHERS_CPU, "kea-dhcp6", "-c",
                                              str(config)], "kea-dhcp6", env=env)
    def listening() -> bool:
        out = runner.run(topo.netns("server"), ["ss", "-Hnul", "sport = :547"], timeout=10)
        return bool(out.stdout.strip()) or not kea.running()

    if not wait_for(listening, 10) or not kea.running():
        raise RuntimeError(f"kea-dhcp6 did not start:\n{kea.output()}")
    return kea.pid


def relay_spec6(name: str, workdir: Path, log_level: str = "info") -> RelaySpec:
    flags = ["-l", "lanc0", "-u", f"{SERVER}%up0"]
    if name == "dhcrelay":
        # Daemonized, as deployed (in the foreground it logs every packet): relay_dora's reason.
        pidfile = workdir / "dhcrelay6.pid"
        return RelaySpec(["dhcrelay", "-6", "-q", "-pf", str(pidfile), *flags], pidfile)
    if name == "boothop":
        # At its default level (info) boothop-relay writes a line per relayed step, as deployed.
        return RelaySpec([sys.executable, "-m", "boothop.relay", "-6", "-d", *flags,
                          "--log-level", log_level])
    raise ValueError(f"unknown relay {name!r} (dhcrelay, boothop)")


@dataclasses.dataclass
class Figures6:
    cpu_us: list[float] = dataclasses.field(default_factory=list)
    exchanges: list[int] = dataclasses.field(default_factory=list)
    round_trip_ms: list[float] = dataclasses.field(default_factory=list)


def perfdhcp6(runner: ProcessRunner, topo: Topology, rate: int, seconds: int) -> Result6:
    argv = ["taskset", "-c", OTHERS_CPU, "timeout", str(seconds + 15), "perfdhcp", "-6",
            "-l", "eth0", "-R", str(CLIENTS), "-r", str(rate), "-p", str(seconds),
            "-W", "500000"]
    done = runner.run(topo.netns("gen"), argv, timeout=seconds + 30)
    return parse_perfdhcp6(done.stdout + done.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=int, default=4, help="seconds per perfdhcp run")
    parser.add_argument("--rate", type=int, default=1000, help="exchanges/s for the CPU figure")
    parser.add_argument("--relays", default="dhcrelay,boothop")
    parser.add_argument("--log-level", default="info",
                        help="boothop-relay's (info, its default, writes a line per relayed step)")
    args = parser.parse_args()
    exit_on_sigterm()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    for tool in ("perfdhcp", "kea-dhcp6", "dhcrelay", "taskset", "ss"):
        if shutil.which(tool) is None:
            print(f"{tool} not installed", file=sys.stderr)
            return 2
    names = args.relays.split(",")
    figures = {name: Figures6() for name in names}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bh6-bench-") as tmp:
        workdir = Path(tmp)
        topo = topology(f"bh6b-{secrets.token_hex(3)}")
        with topo, ProcessRunner(workdir / "logs") as runner:
            address6(runner, topo)
            start_kea6(runner, topo, workdir / "kea")
            for run in range(args.runs):
                for name in names:
                    spec = relay_spec6(name, workdir, args.log_level)
                    with running_relay(runner, topo, spec, f"{name}-{run}", port=547) as pid:
                        assert pid is not None  # every row here runs a relay
                        perfdhcp6(runner, topo, min(args.rate, 200), 2)  # warm-up
                        before, switches = cpu_seconds(pid), context_switches(pid)
                        result = perfdhcp6(runner, topo, args.rate, args.duration)
                        used = sum(cpu_seconds(pid)) - sum(before)
                        voluntary = context_switches(pid)[0] - switches[0]
                    f = figures[name]
                    done = result.rr_received
                    f.exchanges.append(done)
                    if done:
                        f.cpu_us.append(used / done * 1e6)
                        f.round_trip_ms.append(result.sa_delay_ms + result.rr_delay_ms)
                    print(f"  {name} run {run + 1}: at {args.rate}/s {done} exchanges, drops "
                          f"{result.sa_drops}+{result.rr_drops}, relay CPU {used:.2f} s = "
                          f"{used / max(done, 1) * 1e6:.1f} us/exchange, round trips "
                          f"{result.sa_delay_ms + result.rr_delay_ms:.2f} ms, voluntary "
                          f"context switches per exchange {voluntary / max(done, 1):.2f}",
                          flush=True)
    print(f"\nresults (medians of {args.runs} runs, {args.duration} s at {args.rate} exchanges/s; "
          f"relay on CPU {RELAY_CPU}, perfdhcp+kea on CPU {OTHERS_CPU}):")
    for name, f in figures.items():
        print(f"  {name:9s} {statistics.median(f.cpu_us):>7.1f} us CPU/exchange  "
              f"{statistics.median(f.exchanges):>7.0f} exchanges  "
              f"{statistics.median(f.round_trip_ms):>6.2f} ms round trips")
    if "dhcrelay" in figures and "boothop" in figures:
        b, d = figures["boothop"], figures["dhcrelay"]
        print(f"  ratio boothop/dhcrelay: CPU per exchange "
              f"{statistics.median(b.cpu_us) / statistics.median(d.cpu_us):.2f}, round trips "
              f"{statistics.median(b.round_trip_ms) / statistics.median(d.round_trip_ms):.2f}")
    print(f"total {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
