"""Benchmark (not a test): DORA exchanges per second against boothop-server and kea-dhcp4, or
with ``-6`` Solicit-Advertise-Request-Reply exchanges against boothop-server's [dhcp6] and
kea-dhcp6 (perfdhcp -6 on the link, to ff02::1:2; the same figures, "DORA" meaning SARR).

    python3 tests/bench/server_dora.py [-6] [--runs 3] [--duration 4] [--servers boothop,kea]
        [--ladder 2000,4000,...] [--cpu-rate 2000] [--commit-window SECONDS]
        [--lone 200 [--lone-only]]

The same generator drives both servers in the same run: ISC perfdhcp (kea-admin) which, given a
server address, sends relayed traffic itself (giaddr = its own address, hops 1, replies to its
port 67), with 60,000 simulated clients (``-R 60000``), bounded by ``-r RATE -p SECONDS`` and a
``timeout``. Every measurement gets a fresh namespace pair (``bhk-<random>-gen`` with perfdhcp at
10.52.0.1/16, ``bhk-<random>-srv`` with the server at 10.52.0.2/16, one veth between, so giaddr is
on-link for the server and selects its subnet) and a fresh, empty lease database: no state leaks
from one rate to the next or from one server to the other. perfdhcp runs on CPU 0, the server
(all its threads) on CPU 1 (taskset). The servers take turns within each run.

Servers, both with per-packet logging off (boothop ``--log-level warning``, kea severity WARN):
- boothop-server from this checkout, SQLite WAL with synchronous=FULL: each group commit is
  fsynced before the ACKs that depend on it leave. Its [dhcp] commit_window is the server's
  default unless ``--commit-window SECONDS`` is given (to measure the trade: fewer wake-ups and
  fsyncs under steady traffic against replies up to that much later).
- kea-dhcp4 2.2, memfile with persist true and lfc-interval 0: leases appended to a CSV file with
  no fsync, so an ACKed lease can be lost on power failure. The durability is not the same:
  boothop's is stronger.

Figures, per server: the lossless rate (highest rate of an ascending ladder at which perfdhcp
reports no drop in either exchange and completes at least 95 % of the DORAs asked for; the ladder
stops at the first failure), and the server's CPU time per DORA (utime+stime of the server process,
all threads, from /proc/PID/stat before and after the perfdhcp run, divided by the DORAs perfdhcp
completed) at a common fixed rate (``--cpu-rate``, a ladder step) and at the server's own lossless
rate; and per ladder rate, the CPU per DORA, the server CPU's busy time per DORA and the DORA
latency (perfdhcp's average DISCOVER-OFFER plus REQUEST-ACK delay; a low first step, e.g.
100/s, is a lone client's DORA). The busy time (the run's length less the CPU's idle time in
/proc/stat, ``cpustat.idle_seconds``) holds what the CPU ran for the server outside its own
times: the block layer's flush work in kworkers and the interrupts its syncs bring (Kea syncs
nothing), and whatever else the machine ran there, which the interleaved runs share out.
Medians of ``--runs`` runs, then the boothop/kea ratios. Each ladder step also says where
datagrams were dropped for a full socket buffer: at the server's, or at perfdhcp's.

``--lone N`` (IPv4) adds a lone client's row to every run: N DORAs one after another, each from a
new client and LONE_PAUSE apart (so no two share a commit), sent by a relay socket in the
generator namespace (giaddr, hops 1, option 55, as perfdhcp sends them; the messages pre-encoded,
only xid, chaddr and the requested address patched). Each exchange is timed from the send to the
reply's arrival: the median and p99 of DISCOVER-OFFER, REQUEST-ACK and their sum (the DORA, the
client's own turnaround left out). Beside it, the floor that fsync-before-ACK puts under
REQUEST-ACK on this disk: a 4 KiB overwrite and fdatasync, a one-row SQLite autocommit (WAL,
synchronous=FULL) into a new database, and a lease row written by the server's own store (its
WAL grown, as the server opens it: a lone REQUEST's commit), each timed N times per run in a
directory beside the server's, half just before the lone rows and half just after, with the CPU
time each took (the bench's utime + stime: what a server's CPU per DORA counts of its commit).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import os
import re
import secrets
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
import perfdhcp_shim  # noqa: E402 - beside this script (sys.path[0])
from cpustat import cpu_seconds, idle_seconds  # noqa: E402 - beside it too

from boothop.relay.lab.processes import (  # noqa: E402
    Process,
    ProcessRunner,
    exit_on_sigterm,
    udp_counters,
    wait_for,
)

GENERATOR = "10.52.0.1"
SERVER = "10.52.0.2"
PREFIX = 16
SUBNET = "10.52.0.0/16"
POOL = ("10.52.1.0", "10.52.255.250")
CLIENTS = 60000
GENERATOR_CPU = "0"
SERVER_CPU = "1"
LADDER = [1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000, 10000, 12000, 14000]
#: IPv6 (``-6``): the link's prefix, the generator's and the server's addresses, the pool.
PREFIX6 = "2001:db8:52::"
POOL6 = ("2001:db8:52::1:0", "2001:db8:52::ffff:ffff")
#: Set by ``-6``.
FAMILY = 4


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=20)


def link_up(namespace: str, ifname: str) -> bool:
    return "state UP" in subprocess.run(["ip", "-n", namespace, "-o", "link", "show", ifname],
                                        capture_output=True, text=True, timeout=10).stdout


@contextlib.contextmanager
def namespace_pair() -> Iterator[tuple[str, str, str, str]]:
    """(generator netns, its ifname, server netns, its ifname), joined by one veth; removed
    afterwards."""
    tag = secrets.token_hex(3)
    gen, srv = f"bhk-{tag}-gen", f"bhk-{tag}-srv"
    gen_if, srv_if = f"bhk{tag}g", f"bhk{tag}s"
    try:
        sh("ip", "netns", "add", gen)
        sh("ip", "netns", "add", srv)
        sh(
            "ip",
            "link",
            "add",
            gen_if,
            "netns",
            gen,
            "type",
            "veth",
            "peer",
            "name",
            srv_if,
            "netns",
            srv,
        )
        for ns, ifname, address, address6 in ((gen, gen_if, GENERATOR, f"{PREFIX6}1"),
                                              (srv, srv_if, SERVER, f"{PREFIX6}2")):
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "addr", "add", f"{address}/{PREFIX}", "dev", ifname)
            if FAMILY == 6:  # no duplicate address detection: the link-local is usable at once
                for key in ("all", "default", ifname):
                    sh("ip", "netns", "exec", ns, "sysctl", "-qw",
                       f"net.ipv6.conf.{key}.accept_dad=0")
                sh("ip", "-n", ns, "addr", "add", f"{address6}/64", "dev", ifname, "nodad")
            sh("ip", "-n", ns, "link", "set", ifname, "up")
        # kea opens no socket on an interface without carrier yet ("is not running").
        for ns, ifname in ((gen, gen_if), (srv, srv_if)):
            if not wait_for(functools.partial(link_up, ns, ifname), 10):
                raise RuntimeError(f"{ifname} in {ns} did not come up")
        yield gen, gen_if, srv, srv_if
    finally:
        for ns in (gen, srv):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)


#: boothop's [dhcp] commit_window for the run (``--commit-window``); None: the server's default.
COMMIT_WINDOW: float | None = None


def boothop_argv(workdir: Path, ifname: str) -> tuple[list[str], dict[str, str]]:
    config = workdir / "server.toml"
    window = "" if COMMIT_WINDOW is None else f"commit_window = {COMMIT_WINDOW}"
    config.write_text(f"""
[dhcp6]
lease_db = "{workdir / 'leases.sqlite3'}"
[[dhcp6.subnets]]
prefix = "{PREFIX6}/64"
pools = ["{POOL6[0]}-{POOL6[1]}"]
interface = "{ifname}"
preferred_lifetime = 300
valid_lifetime = 600
""" if FAMILY == 6 else f"""
[dhcp]
lease_db = "{workdir / 'leases.sqlite3'}"
{window}
[[dhcp.subnets]]
subnet = "{SUBNET}"
pools = ["{POOL[0]}-{POOL[1]}"]
lease_time = 600
""")
    return (
        [
            sys.executable,
            "-m",
            "boothop.server",
            "run",
            "-c",
            str(config),
            "--log-format",
            "json",
            "--log-level",
            "warning",
        ],
        {"PYTHONPATH": str(ROOT)},
    )


def kea_argv(workdir: Path, ifname: str) -> tuple[list[str], dict[str, str]]:
    if FAMILY == 6:
        return kea6_argv(workdir, ifname)
    config = workdir / "kea-dhcp4.json"
    config.write_text(json.dumps({"Dhcp4": {
        "interfaces-config": {"interfaces": [ifname], "dhcp-socket-type": "udp"},
        "lease-database": {"type": "memfile", "persist": True, "lfc-interval": 0,
                           "name": str(workdir / "kea-leases4.csv")},
        "valid-lifetime": 600, "renew-timer": 300, "rebind-timer": 500,
        "subnet4": [{"id": 1, "subnet": SUBNET, "pools": [{"pool": f"{POOL[0]} - {POOL[1]}"}]}],
        "loggers": [{"name": "kea-dhcp4", "output_options": [{"output": str(workdir / "kea.log")}],
                     "severity": "WARN"}],
    }}, indent=1))
    return ["kea-dhcp4", "-c", str(config)], {"KEA_LOCKFILE_DIR": str(workdir),
                                               "KEA_PIDFILE_DIR": str(workdir)}


def kea6_argv(workdir: Path, ifname: str) -> tuple[list[str], dict[str, str]]:
    """kea-dhcp6 2.2 as kea-dhcp4 above: memfile appended without fsync."""
    config = workdir / "kea-dhcp6.json"
    config.write_text(json.dumps({"Dhcp6": {
        "interfaces-config": {"interfaces": [ifname]},
        "server-id": {"type": "EN", "enterprise-id": 2495, "identifier": "b007",
                      "persist": False},
        "lease-database": {"type": "memfile", "persist": True, "lfc-interval": 0,
                           "name": str(workdir / "kea-leases6.csv")},
        "preferred-lifetime": 300, "valid-lifetime": 600, "renew-timer": 150,
        "rebind-timer": 240,
        "subnet6": [{"id": 1, "subnet": f"{PREFIX6}/64", "interface": ifname,
                     "pools": [{"pool": f"{POOL6[0]} - {POOL6[1]}"}]}],
        "loggers": [{"name": "kea-dhcp6", "output_options": [{"output": str(workdir / "kea.log")}],
                     "severity": "WARN"}],
    }}, indent=1))
    return ["kea-dhcp6", "-c", str(config)], {"KEA_LOCKFILE_DIR": str(workdir),
                                               "KEA_PIDFILE_DIR": str(workdir)}


SERVERS = {"boothop": boothop_argv, "kea": kea_argv}


@dataclasses.dataclass(frozen=True)
class Result:
    rate: int
    seconds: int
    do_sent: int
    do_drops: int
    ra_sent: int
    ra_received: int
    ra_drops: int
    cpu_s: float
    #: The time the server's CPU was busy meanwhile: the server's own CPU time and what the CPU
    #: ran for it outside it (the block layer's flush work in kworkers, interrupts), and
    #: anything else the machine ran there.
    busy_s: float
    #: perfdhcp's average DISCOVER-OFFER plus REQUEST-ACK delay: one DORA's latency.
    dora_ms: float
    #: Datagrams dropped for a full socket buffer: at the server's, and at perfdhcp's (its
    #: 60,000 clients share one socket, which a burst of replies can overflow).
    full_at_server: int
    full_at_generator: int

    @property
    def lossless(self) -> bool:
        return (self.do_sent > 0 and self.do_drops == 0 and self.ra_drops == 0
                and self.ra_received >= 0.95 * self.rate * self.seconds)

    @property
    def cpu_us_per_dora(self) -> float:
        return self.cpu_s / self.ra_received * 1e6 if self.ra_received else float("nan")

    @property
    def busy_us_per_dora(self) -> float:
        return self.busy_s / self.ra_received * 1e6 if self.ra_received else float("nan")


def _number(section: str, label: str) -> int:
    match = re.search(rf"^{label}: ([0-9]+)", section, re.MULTILINE)
    return int(match.group(1)) if match else 0


def _delay_ms(section: str) -> float:
    match = re.search(r"^avg delay: ([0-9.]+) ms", section, re.MULTILINE)
    return float(match.group(1)) if match else float("nan")


def _section(text: str, name: str) -> str:
    start = text.find(f"***Statistics for: {name}***")
    if start < 0:
        raise RuntimeError(f"perfdhcp output has no {name} section:\n{text[-2000:]}")
    end = text.find("***Statistics for:", start + 10)
    return text[start: end if end > 0 else len(text)]


#: The LD_PRELOAD library that deepens perfdhcp's receive queue (built by main: see
#: ``perfdhcp_shim``), or None.
DEEP_QUEUE_SHIM: Path | None = None


def perfdhcp_argv(gen_ifname: str, rate: int, seconds: int) -> list[str]:
    # IPv6: no server address, so perfdhcp sends to ff02::1:2 on the link, as clients do.
    target = ["-6", "-l", gen_ifname] if FAMILY == 6 else ["-4", "-l", gen_ifname]
    shim = [] if DEEP_QUEUE_SHIM is None else ["env", f"LD_PRELOAD={DEEP_QUEUE_SHIM}"]
    return [*shim, "taskset", "-c", GENERATOR_CPU, "timeout", str(seconds + 20),
            "perfdhcp", *target, "-R", str(CLIENTS), "-r", str(rate),
            "-p", str(seconds), "-W", "500000", *([] if FAMILY == 6 else [SERVER])]


def measure(name: str, rate: int, seconds: int, runner: ProcessRunner) -> Result:
    """One perfdhcp run at ``rate`` against a freshly started ``name`` in fresh namespaces."""
    with (
        namespace_pair() as (gen, gen_if, srv, srv_if),
        tempfile.TemporaryDirectory(prefix="bhk-") as tmp,
    ):
        workdir = Path(tmp)
        argv, env = SERVERS[name](workdir, srv_if)
        server: Process = runner.start(srv, ["taskset", "-c", SERVER_CPU, *argv],
                                       f"{name}-{rate}-{secrets.token_hex(2)}", env=env, cwd=ROOT)
        try:
            def listening() -> bool:
                port = 547 if FAMILY == 6 else 67
                out = runner.run(srv, ["ss", "-Hnulp", f"sport = :{port}"], timeout=10).stdout
                return f"pid={server.pid}," in out

            if (
                not wait_for(lambda: listening() or not server.running(), 20)
                or not server.running()
            ):
                raise RuntimeError(f"{name} did not start:\n{server.output()[-3000:]}")
            full_before = {ns: udp_counters(ns, FAMILY)["RcvbufErrors"] for ns in (srv, gen)}
            before = sum(cpu_seconds(server.pid))
            idle_before, started = idle_seconds(SERVER_CPU), time.monotonic()
            done = runner.run(gen, perfdhcp_argv(gen_if, rate, seconds), timeout=seconds + 30)
            busy = time.monotonic() - started - (idle_seconds(SERVER_CPU) - idle_before)
            used = sum(cpu_seconds(server.pid)) - before
            full = {ns: udp_counters(ns, FAMILY)["RcvbufErrors"] - full_before[ns]
                    for ns in (srv, gen)}
        finally:
            runner.stop(server)
    text = done.stdout + done.stderr
    first, second = (("SOLICIT-ADVERTISE", "REQUEST-REPLY") if FAMILY == 6
                     else ("DISCOVER-OFFER", "REQUEST-ACK"))
    do, ra = _section(text, first), _section(text, second)
    return Result(
        rate,
        seconds,
        _number(do, "sent packets"),
        _number(do, "drops"),
        _number(ra, "sent packets"),
        _number(ra, "received packets"),
        _number(ra, "drops"),
        used,
        busy,
        _delay_ms(do) + _delay_ms(ra),
        full[srv],
        full[gen],
    )




@dataclasses.dataclass
class Figures:
    lossless: list[int] = dataclasses.field(default_factory=list)
    cpu_fixed: list[float] = dataclasses.field(default_factory=list)
    cpu_at_lossless: list[float] = dataclasses.field(default_factory=list)
    #: Per ladder rate: CPU per DORA, the server's CPU busy per DORA and DORA latency, one per
    #: run that reached the rate.
    cpu_by_rate: dict[int, list[float]] = dataclasses.field(default_factory=dict)
    busy_by_rate: dict[int, list[float]] = dataclasses.field(default_factory=dict)
    ms_by_rate: dict[int, list[float]] = dataclasses.field(default_factory=dict)


def ladder_run(
    name: str, args: argparse.Namespace, runner: ProcessRunner, figures: Figures, run: int
) -> None:
    best: Result | None = None
    for rate in args.ladder:
        result = measure(name, rate, args.duration, runner)
        print(
            f"    {name:8s} {rate:>6}/s: {result.ra_received / args.duration:>7.0f} DORA/s done, "
            "drops "
            f"{result.do_drops}+{result.ra_drops}, server CPU {result.cpu_s:.2f} s = "
            f"{result.cpu_us_per_dora:.0f} us/DORA (CPU {SERVER_CPU} busy "
            f"{result.busy_us_per_dora:.0f}), DORA {result.dora_ms:.2f} ms, full socket "
            f"buffers: server {result.full_at_server}, perfdhcp {result.full_at_generator}"
            f"{'' if result.lossless else '  (lossy: ladder stops)'}",
            flush=True,
        )
        figures.cpu_by_rate.setdefault(rate, []).append(result.cpu_us_per_dora)
        figures.busy_by_rate.setdefault(rate, []).append(result.busy_us_per_dora)
        figures.ms_by_rate.setdefault(rate, []).append(result.dora_ms)
        if rate == args.cpu_rate:
            figures.cpu_fixed.append(result.cpu_us_per_dora)
        if not result.lossless:
            break
        best = result
    figures.lossless.append(best.rate if best else 0)
    if best is not None:
        figures.cpu_at_lossless.append(best.cpu_us_per_dora)
    print(f"  run {run + 1} {name}: lossless {figures.lossless[-1]}/s", flush=True)


#: Between two lone clients' DORAs: more than the server's BUSY_GAP, so none waits for company.
LONE_PAUSE = 0.02


def lone_client(count: int) -> None:
    """In the generator namespace: ``count`` DORAs, one client at a time; prints one JSON line
    with each exchange's seconds (D-O, R-A), or null where no reply came within a second."""
    import socket

    from server_hotpath import request_templates  # beside this script (sys.path[0])

    from boothop.relay.wire import MessageType, decode

    discover, request, requested_at = request_templates(GENERATOR, SERVER)
    relay = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    relay.bind((GENERATOR, 67))
    relay.settimeout(1.0)
    server = (SERVER, 67)

    def exchange(payload: bytearray, xid: int) -> tuple[float | None, bytes]:
        started = time.perf_counter()
        relay.sendto(payload, server)
        try:
            while True:
                reply = relay.recv(2048)
                if reply[4:8] == payload[4:8]:
                    return time.perf_counter() - started, reply
        except TimeoutError:
            return None, b""

    times: list[tuple[float | None, float | None]] = []
    for n in range(1, count + 1):
        for payload in (discover, request):
            payload[4:8] = n.to_bytes(4, "big")  # xid
            payload[28:34] = n.to_bytes(6, "big")  # chaddr
        offer_s, offer = exchange(discover, n)
        ack_s = None
        if offer_s is not None:
            request[requested_at:requested_at + 4] = offer[16:20]  # yiaddr
            ack_s, ack = exchange(request, n)
            if ack_s is not None and decode(ack).message_type != MessageType.ACK:
                ack_s = None
        times.append((offer_s, ack_s))
        time.sleep(LONE_PAUSE)
    print(json.dumps(times))


#: One floor sample: the operation's wall seconds and the CPU seconds the bench process spent
#: in it (utime + stime: what the server's own figure counts; waiting for the disk is neither).
Sample = tuple[float, float]


def timed(operation: Callable[[], object]) -> Sample:
    started, cpu = time.perf_counter(), time.process_time()
    operation()
    return time.perf_counter() - started, time.process_time() - cpu


def sync_floor(directory: Path, count: int) -> tuple[list[Sample], list[Sample], list[Sample]]:
    """``count`` 4 KiB overwrites + fdatasync, ``count`` one-row SQLite autocommits (WAL,
    synchronous=FULL) into a new database, and ``count`` lease rows written by the server's store
    (its WAL grown as the server grows it), in ``directory``, each ``timed``: LONE_PAUSE apart,
    as a lone client's commits come (a sync after an idle spell can cost more than one right
    after another)."""
    import sqlite3
    from ipaddress import IPv4Address

    from boothop.server.dhcp.lease import Lease, LeaseState
    from boothop.server.leasestore import SqliteLeaseStore

    def overwrite(fd: int, n: int) -> None:
        os.pwrite(fd, n.to_bytes(4, "big") * 1024, 4096 * n)
        os.fdatasync(fd)

    synced = []
    fd = os.open(directory / "floor.bin", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.write(fd, bytes(4096 * count))
        os.fsync(fd)
        for n in range(count):
            synced.append(timed(functools.partial(overwrite, fd, n)))
            time.sleep(LONE_PAUSE)
    finally:
        os.close(fd)
    db = sqlite3.connect(directory / "floor.sqlite3", isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE rows (n INTEGER PRIMARY KEY, body BLOB)")
        committed = []
        for n in range(count):
            committed.append(timed(functools.partial(
                db.execute, "INSERT OR REPLACE INTO rows VALUES (?, ?)", (n, bytearray(64)))))
            time.sleep(LONE_PAUSE)
    finally:
        db.close()
    store = SqliteLeaseStore(str(directory / "grown.sqlite3"))
    store.prepare_to_serve()
    try:
        stored = []
        for n in range(count):
            lease = Lease(IPv4Address(0x0A340100 + n), LeaseState.BOUND, f"hw:1:{n:012x}",
                          n.to_bytes(6, "big"), None, SUBNET, time.time(), time.time() + 600)
            stored.append(timed(functools.partial(store.write, [lease])))
            time.sleep(LONE_PAUSE)
    finally:
        store.close()
    return synced, committed, stored


def add_floor(floors: tuple[list[Sample], ...], count: int) -> None:
    """``sync_floor``'s samples, in a directory of their own, added to ``floors``."""
    with tempfile.TemporaryDirectory(prefix="bhk-floor-") as tmp:
        for samples, more in zip(floors, sync_floor(Path(tmp), count), strict=True):
            samples.extend(more)


@dataclasses.dataclass
class Lone:
    """A lone client's milliseconds per run: medians and p99s of D-O, R-A and the DORA."""

    rows: list[dict[str, float]] = dataclasses.field(default_factory=list)
    lost: list[int] = dataclasses.field(default_factory=list)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


def lone_run(name: str, count: int, runner: ProcessRunner, lone: Lone) -> None:
    """A lone client's DORAs against a freshly started ``name`` in fresh namespaces."""
    with (
        namespace_pair() as (gen, _gen_if, srv, srv_if),
        tempfile.TemporaryDirectory(prefix="bhk-") as tmp,
    ):
        argv, env = SERVERS[name](Path(tmp), srv_if)
        server = runner.start(srv, ["taskset", "-c", SERVER_CPU, *argv],
                              f"{name}-lone-{secrets.token_hex(2)}", env=env, cwd=ROOT)
        try:
            if not wait_for(lambda: f"pid={server.pid}," in runner.run(
                    srv, ["ss", "-Hnulp", "sport = :67"], timeout=10).stdout
                    or not server.running(), 20) or not server.running():
                raise RuntimeError(f"{name} did not start:\n{server.output()[-3000:]}")
            done = runner.run(gen, ["taskset", "-c", GENERATOR_CPU, sys.executable, __file__,
                                    "--lone-client", str(count)], timeout=count * 3 + 30)
        finally:
            runner.stop(server)
    if done.returncode != 0:
        raise RuntimeError(f"lone client failed:\n{done.stderr[-3000:]}")
    times = json.loads(done.stdout.splitlines()[-1])
    complete = [(o * 1e3, a * 1e3) for o, a in times if o is not None and a is not None]
    dora = [o + a for o, a in complete]
    offers, acks = [o for o, _ in complete], [a for _, a in complete]
    row = {"do_median": median(offers), "ra_median": median(acks), "ra_p99": percentile(acks, 0.99),
           "dora_median": median(dora), "dora_p99": percentile(dora, 0.99)}
    lone.rows.append(row)
    lone.lost.append(count - len(complete))
    print(f"    {name:8s} lone client: DORA median {row['dora_median']:.2f} ms, p99 "
          f"{row['dora_p99']:.2f} ms (D-O {row['do_median']:.2f}, R-A {row['ra_median']:.2f} "
          f"median, {row['ra_p99']:.2f} p99), {count - len(complete)} of {count} lost", flush=True)


def print_lone(args: argparse.Namespace, lones: dict[str, Lone],
               floors: tuple[list[Sample], ...]) -> None:
    print(f"\nlone client: {args.lone} DORAs per run, one at a time, {LONE_PAUSE * 1e3:.0f} ms "
          f"apart; medians over {args.runs} runs of each run's median and p99 (ms)")
    for name, lone in lones.items():
        cells = [f"{key.replace('_', ' ')} {median([r[key] for r in lone.rows]):.2f}"
                 for key in ("dora_median", "dora_p99", "do_median", "ra_median", "ra_p99")]
        print(f"  {name:8s} " + ", ".join(cells) + f", lost {lone.lost}")
    for label, samples in zip(("4 KiB overwrite + fdatasync",
                               "one-row SQLite autocommit (WAL, synchronous=FULL), new WAL",
                               "the server's store, one lease row (its WAL grown)"),
                              floors, strict=True):
        ms = [wall * 1e3 for wall, _ in samples]
        cpu = median([spent * 1e6 for _, spent in samples])
        print(f"  floor, {label}: median {median(ms):.2f} ms, p99 {percentile(ms, 0.99):.2f} ms, "
              f"CPU {cpu:.0f} us ({len(ms)} samples)")


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-6", dest="family", action="store_const", const=6, default=4,
                        help="DHCPv6: boothop-server [dhcp6] against kea-dhcp6")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=int, default=4, help="seconds per perfdhcp run (-p)")
    parser.add_argument("--cpu-rate", type=int, default=2000,
                        help="the ladder step (DORA/s) whose CPU per DORA is compared")
    parser.add_argument("--ladder", type=lambda s: [int(x) for x in s.split(",")], default=LADDER)
    parser.add_argument("--servers", default="boothop,kea")
    parser.add_argument("--commit-window", type=float, default=None,
                        help="boothop's [dhcp] commit_window in seconds (default: the server's)")
    parser.add_argument("--lone", type=int, default=0, metavar="N",
                        help="add a lone client's row: N DORAs one after another (IPv4)")
    parser.add_argument("--lone-only", action="store_true", help="the lone client's row alone")
    parser.add_argument("--lone-client", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--generator-queue", type=int, default=perfdhcp_shim.GENERATOR_QUEUE,
                        metavar="BYTES",
                        help="perfdhcp's socket receive queue (0: its default; see perfdhcp_shim)")
    args = parser.parse_args()
    exit_on_sigterm()
    if args.lone_client is not None:
        lone_client(args.lone_client)
        return 0
    global COMMIT_WINDOW, DEEP_QUEUE_SHIM, FAMILY
    COMMIT_WINDOW = args.commit_window
    FAMILY = args.family
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    for tool in ("perfdhcp", f"kea-dhcp{FAMILY}", "taskset", "ss", "timeout", "ip", "cc"):
        if shutil.which(tool) is None:
            print(f"{tool} not installed", file=sys.stderr)
            return 2
    if args.cpu_rate not in args.ladder:
        args.ladder = sorted({*args.ladder, args.cpu_rate})
    names = args.servers.split(",")
    print("command: " + shlex.join([sys.executable, *sys.argv]))
    started = time.monotonic()
    figures = {name: Figures() for name in names}
    lones = {name: Lone() for name in names}
    floors: tuple[list[Sample], ...] = ([], [], [])
    with (
        tempfile.TemporaryDirectory(prefix="bhk-logs-") as logs,
        ProcessRunner(Path(logs)) as runner,
    ):
        if args.generator_queue:
            DEEP_QUEUE_SHIM = perfdhcp_shim.build(Path(logs), queue=args.generator_queue)
        print(
            "generator: "
            + shlex.join(perfdhcp_argv("<veth>", 0, args.duration)).replace(" -r 0 ", " -r RATE ")
        )
        for run in range(args.runs):
            order = names if run % 2 == 0 else names[::-1]
            if args.lone:
                # The floor just before and just after the lone rows: a disk's sync time changes
                # by the minute.
                add_floor(floors, args.lone // 2)
                for name in order:
                    lone_run(name, args.lone, runner, lones[name])
                add_floor(floors, args.lone // 2)
            for name in [] if args.lone_only else order:
                ladder_run(name, args, runner, figures[name], run)
    if args.lone:
        print_lone(args, lones, floors)
    if args.lone_only:
        print(f"total {time.monotonic() - started:.0f} s")
        return 0
    print(
        f"\nresults: medians of {args.runs} runs, {args.duration} s per perfdhcp run, "
        f"{CLIENTS} clients, "
        f"perfdhcp on CPU {GENERATOR_CPU}, server on CPU {SERVER_CPU}, fresh namespaces and lease "
        "database per measurement"
    )
    print(f"  {'server':8s} {'lossless':>10s} {'runs':>20s} {f'CPU/DORA @{args.cpu_rate}/s':>18s} "
          f"{'CPU/DORA @lossless':>19s}")
    for name, f in figures.items():
        print(f"  {name:8s} {median(f.lossless):>8.0f}/s {f.lossless!s:>20s} "
              f"{median(f.cpu_fixed):>15.0f} us {median(f.cpu_at_lossless):>16.0f} us")
    print("  per rate (medians over the runs that reached it: the server's CPU per DORA, its CPU's "
          "busy time per DORA, the DORA's latency; ratios boothop/kea of both CPU figures):")
    for rate in args.ladder:
        cells = []
        for name, f in figures.items():
            cpu, ms = f.cpu_by_rate.get(rate, []), f.ms_by_rate.get(rate, [])
            cells.append(f"{name} {median(cpu):>4.0f} us/DORA busy "
                         f"{median(f.busy_by_rate.get(rate, [])):>4.0f} {median(ms):>6.2f} ms "
                         f"({len(cpu)} runs)")
        if "boothop" in figures and "kea" in figures:
            b, k = figures["boothop"], figures["kea"]
            ratios = (median(ours.get(rate, [])) / median(theirs.get(rate, []))
                      for ours, theirs in ((b.cpu_by_rate, k.cpu_by_rate),
                                           (b.busy_by_rate, k.busy_by_rate)))
            cells.append("ratio {:.2f} busy {:.2f}".format(*ratios))
        print(f"    {rate:>6}/s: " + ", ".join(cells))
    if "boothop" in figures and "kea" in figures:
        b, k = figures["boothop"], figures["kea"]
        print(
            "  ratio boothop/kea: lossless rate "
            f"{median(b.lossless) / max(median(k.lossless), 1):.2f} "
            f"(higher is better), CPU per DORA at {args.cpu_rate}/s "
            f"{median(b.cpu_fixed) / median(k.cpu_fixed):.2f} (lower is better)"
        )
    print(
        "  durability: boothop-server fsyncs every group commit (SQLite WAL, synchronous=FULL) "
        "before "
        "the ACKs leave;\n  kea memfile (persist true) appends to its CSV without fsync: a power "
        "failure can lose ACKed leases. boothop's guarantee is the stronger one."
    )
    print(f"total {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
