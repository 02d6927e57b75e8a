"""Soak (not a test): boothop-relay and boothop-server under a steady client load for a long time.

    python3 tests/bench/soak.py [--minutes 60] [--rate PER_SECOND] [--clients 2000]
        [--sample SECONDS] [--nice 19]

Topology (namespaces ``bhs-<random>-*``): ``gen`` (the client population, this process) on the
client LAN 10.46.128.0/17, ``router`` (boothop-relay -id lanc0 -iu up0 -a) and ``server``
(boothop-server, SQLite lease database) on 10.46.100.0/24. Both daemons run from this checkout
(``python -m boothop.relay``/``boothop.server`` of this interpreter), logging JSON at info, under
``nice -n --nice``.

The load: ``--clients`` simulated clients (one MAC each) on one socket created in ``gen``. At
``--rate`` exchanges per second one client is picked at random: an unbound one joins (DISCOVER,
OFFER, REQUEST, ACK), a bound one renews (REQUEST with ciaddr, ACK) or, one time in five, leaves
(RELEASE, no answer); one still waiting for an answer is skipped (counted as busy). Every message
carries the broadcast flag, so the relay broadcasts each reply on the client LAN. An exchange
without its reply within ``--timeout`` seconds is lost. The default rate is half the lossless
rate, found first by a short ascending ladder of the same load (lossless: nothing lost, no NAK,
and under 5 % of the picks finding their client still waiting).

Printed: every ``--sample`` seconds the RSS and open file descriptors of both daemons (from
/proc/PID/status and /proc/PID/fd) and the exchanges so far; at the end the growth of both, the
exchanges per kind, the lost ones, and every log line of either daemon at warning or above. Needs
root and ``ip``.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import itertools
import json
import os
import random
import secrets
import socket
import sys
import tempfile
import threading
import time
from ipaddress import IPv4Address
from pathlib import Path

from pyroute2 import netns

from boothop.relay.lab.processes import Process, ProcessRunner, exit_on_sigterm, wait_for
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

SERVER = "10.46.100.10"
ROUTER_UP = "10.46.100.1"
ROUTER_DOWN = "10.46.128.1"
GENERATOR = "10.46.128.2"
LADDER = (25, 50, 100, 200, 400, 800, 1600)
WARNING_LEVELS = {"warning", "error", "critical", "exception"}


def topology(prefix: str) -> Topology:
    return Topology(
        prefix,
        [Host("router", forwarding=True),
         Host("server", routes=(Route("10.46.0.0/16", ROUTER_UP),)), Host("gen")],
        [Lan("c", (Port("router", "lanc0", f"{ROUTER_DOWN}/17"),
                   Port("gen", "eth0", f"{GENERATOR}/17"))),
         Lan("srv", (Port("router", "up0", f"{ROUTER_UP}/24"),
                     Port("server", "srv0", f"{SERVER}/24")))],
    )


def server_config(workdir: Path) -> Path:
    config = workdir / "server.toml"
    config.write_text(f"""
[dhcp]
lease_db = "{workdir / 'leases.sqlite3'}"
[[dhcp.subnets]]
subnet = "10.46.128.0/17"
pools = ["10.46.129.0-10.46.250.250"]
lease_time = 300
options = {{ routers = ["{ROUTER_DOWN}"] }}
""")
    return config


@dataclasses.dataclass
class Pending:
    client: int
    kind: str  # "join" (DISCOVER, then REQUEST), "renew"
    sent: float


class Population:
    """Simulated clients behind the relay: one socket in ``gen``, a receive thread, a pacer."""

    def __init__(self, namespace: str, clients: int, timeout: float) -> None:
        netns.pushns(namespace)
        try:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        finally:
            netns.popns()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        self.sock.bind(("0.0.0.0", 68))
        self.sock.settimeout(0.2)
        self.macs = [bytes((0x02, 0x46)) + n.to_bytes(4, "big") for n in range(clients)]
        self.bound: dict[int, IPv4Address] = {}
        self.timeout = timeout
        self.lock = threading.Lock()
        self.pending: dict[int, Pending] = {}
        self.xids = itertools.count(random.randrange(1 << 30))
        self.counts: collections.Counter[str] = collections.Counter()
        self.stopping = threading.Event()
        self.receiver = threading.Thread(target=self._receive, daemon=True)
        self.receiver.start()

    def _send(self, client: int, kind: MessageType, xid: int,
              options: tuple[tuple[int, bytes], ...] = (), ciaddr: IPv4Address | None = None,
              ) -> None:
        message = DhcpMessage(op=1, xid=xid, chaddr=self.macs[client] + bytes(10),
                              flags=BROADCAST_FLAG, ciaddr=ciaddr or IPv4Address(0),
                              options=((Opt.MESSAGE_TYPE, bytes((kind,))), *options))
        self.sock.sendto(encode(message), ("255.255.255.255", 67))

    def step(self, now: float) -> None:
        """One exchange of one client picked at random."""
        client = random.randrange(len(self.macs))
        xid = next(self.xids) & 0xFFFFFFFF
        with self.lock:
            if any(p.client == client for p in self.pending.values()):
                self.counts["busy"] += 1  # that client still waits for an answer
                return
            address = self.bound.get(client)
            if address is not None and random.random() < 0.2:
                del self.bound[client]
                self.counts["leave"] += 1
                self._send(client, MessageType.RELEASE, xid, ((Opt.SERVER_ID,
                           IPv4Address(SERVER).packed),), ciaddr=address)
                return
            kind = "join" if address is None else "renew"
            self.pending[xid] = Pending(client, kind, now)
            self.counts[f"{kind}.sent"] += 1
        if address is None:
            self._send(client, MessageType.DISCOVER, xid)
        else:
            self._send(client, MessageType.REQUEST, xid, ciaddr=address)

    def _receive(self) -> None:
        while not self.stopping.is_set():
            try:
                payload = self.sock.recv(4096)
            except TimeoutError:
                continue
            try:
                reply = decode(payload)
            except WireError:
                self.counts["malformed"] += 1
                continue
            with self.lock:
                pending = self.pending.get(reply.xid)
                if pending is None:
                    self.counts["unexpected"] += 1
                    continue
                if reply.message_type == MessageType.OFFER and pending.kind == "join":
                    self._send(pending.client, MessageType.REQUEST, reply.xid, (
                        (Opt.REQUESTED_ADDRESS, reply.yiaddr.packed),
                        (Opt.SERVER_ID, reply.get(Opt.SERVER_ID) or b"\0" * 4)))
                    continue
                del self.pending[reply.xid]
                if reply.message_type == MessageType.ACK:
                    self.bound[pending.client] = reply.yiaddr
                    self.counts[f"{pending.kind}.ok"] += 1
                else:
                    self.bound.pop(pending.client, None)
                    self.counts[f"{pending.kind}.nak"] += 1

    def expire(self, now: float) -> None:
        with self.lock:
            for xid in [x for x, p in self.pending.items() if now - p.sent > self.timeout]:
                pending = self.pending.pop(xid)
                self.bound.pop(pending.client, None)
                self.counts[f"{pending.kind}.lost"] += 1

    def run(self, rate: float, seconds: float, on_tick: object = None) -> collections.Counter[str]:
        """Paced load for ``seconds``; the counts of this run (lost ones included)."""
        before = self.counts.copy()
        start = time.monotonic()
        sent = 0
        next_expire = start
        while (now := time.monotonic()) - start < seconds:
            due = int((now - start) * rate)
            while sent < due:
                self.step(now)
                sent += 1
            if now >= next_expire:
                self.expire(now)
                next_expire = now + 0.25
                if callable(on_tick):
                    on_tick(now - start)
            time.sleep(min(0.002, 1 / rate))
        time.sleep(self.timeout)
        self.expire(time.monotonic() + self.timeout)
        return self.counts - before

    def close(self) -> None:
        self.stopping.set()
        self.receiver.join()
        self.sock.close()


def lost(counts: collections.Counter[str]) -> int:
    return counts["join.lost"] + counts["renew.lost"]


def lossless_rate(population: Population) -> int:
    best = 0
    for rate in LADDER:
        seconds = 5
        counts = population.run(rate, seconds)
        sent = counts["join.sent"] + counts["renew.sent"]
        print(f"  ladder {rate}/s: {sent} exchanges, {lost(counts)} lost, {counts['busy']} picks of"
              " a client still waiting", flush=True)
        # Lossless, and the clients kept up: a pick finding its client still waiting means the
        # answers come later than the load asks for them.
        if (lost(counts) or counts["join.nak"] + counts["renew.nak"]
                or counts["busy"] > 0.05 * rate * seconds):
            break
        best = rate
    return best


def memory_and_fds(pid: int) -> tuple[float, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kb = next(int(line.split()[1]) for line in status.splitlines()
                  if line.startswith("VmRSS:"))
    return rss_kb / 1024, len(os.listdir(f"/proc/{pid}/fd"))


def warnings_of(process: Process) -> list[str]:
    found = []
    for line in process.output().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            found.append(f"(not JSON) {line[:200]}")
            continue
        if str(event.get("level", "")).lower() in WARNING_LEVELS:
            found.append(line[:300])
    return found


def start_daemon(runner: ProcessRunner, namespace: str, argv: list[str], name: str,
                 listening: str, priority: int) -> Process:
    process = runner.start(namespace, ["nice", "-n", str(priority), *argv], name)
    if not wait_for(lambda: listening in process.output() or not process.running(), 20) or (
            not process.running()):
        raise RuntimeError(f"{name} did not start:\n{process.output()[-3000:]}")
    return process


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=None,
                        help="exchanges per second (default: half the lossless rate)")
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--sample", type=float, default=60.0, help="seconds between samples")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for a reply")
    parser.add_argument("--nice", type=int, default=19, help="niceness of both daemons")
    args = parser.parse_args()
    exit_on_sigterm()

    with tempfile.TemporaryDirectory(prefix="bhs-soak-") as tmp:
        workdir = Path(tmp)
        topo = topology(f"bhs-{secrets.token_hex(3)}")
        with topo, ProcessRunner(workdir / "logs") as runner:
            server = start_daemon(runner, topo.netns("server"), [
                sys.executable, "-m", "boothop.server", "run", "-c", str(server_config(workdir)),
                "--log-format", "json", "--log-level", "info",
            ], "server", "server.listening", args.nice)
            relay = start_daemon(runner, topo.netns("router"), [
                sys.executable, "-m", "boothop.relay", "-d", "-id", "lanc0", "-iu", "up0", "-a",
                "--log-format", "json", "--log-level", "info", SERVER,
            ], "relay", "relay.", args.nice)
            time.sleep(1)
            population = Population(topo.netns("gen"), args.clients, args.timeout)
            try:
                rate = args.rate
                if rate is None:
                    print("finding the lossless rate:", flush=True)
                    rate = max(1.0, lossless_rate(population) / 2)
                samples: list[tuple[float, float, int, float, int]] = []
                print(f"soak: {args.minutes:g} min at {rate:g} exchanges/s, "
                      f"{args.clients} clients, daemons at nice {args.nice}")
                print(f"  {'t(s)':>6} {'relay MB':>9} {'fds':>4} {'server MB':>10} {'fds':>4}"
                      f" {'ok':>8} {'lost':>6} {'bound':>6}", flush=True)
                next_sample = [0.0]

                def sample(elapsed: float, final: bool = False) -> None:
                    if elapsed < next_sample[0] and not final:
                        return
                    next_sample[0] = elapsed + args.sample
                    relay_mb, relay_fds = memory_and_fds(relay.pid)
                    server_mb, server_fds = memory_and_fds(server.pid)
                    samples.append((elapsed, relay_mb, relay_fds, server_mb, server_fds))
                    counts = population.counts - baseline
                    print(f"  {elapsed:>6.0f} {relay_mb:>9.1f} {relay_fds:>4} {server_mb:>10.1f} "
                          f"{server_fds:>4} {counts['join.ok'] + counts['renew.ok']:>8} "
                          f"{lost(counts):>6} {len(population.bound):>6}", flush=True)

                baseline = population.counts.copy()
                started = time.monotonic()
                counts = population.run(rate, args.minutes * 60, sample)
                sample(time.monotonic() - started, final=True)
            finally:
                population.close()
            alive = relay.running() and server.running()
            first, last = samples[0], samples[-1]
            exchanges = counts["join.sent"] + counts["renew.sent"]
            print(f"\nexchanges: {exchanges} ({counts['join.sent']} joins, {counts['renew.sent']}"
                  f" renewals) and {counts['leave']} releases; lost {lost(counts)} "
                  f"({counts['join.lost']} joins, {counts['renew.lost']} renewals); NAKs "
                  f"{counts['join.nak'] + counts['renew.nak']}; unexpected replies "
                  f"{counts['unexpected']}; picks of a client still waiting {counts['busy']}")
            print(f"relay:  RSS {first[1]:.1f} -> {last[1]:.1f} MB (max "
                  f"{max(s[1] for s in samples):.1f}), fds {first[2]} -> {last[2]} "
                  f"(max {max(s[2] for s in samples)})")
            print(f"server: RSS {first[3]:.1f} -> {last[3]:.1f} MB (max "
                  f"{max(s[3] for s in samples):.1f}), fds {first[4]} -> {last[4]} "
                  f"(max {max(s[4] for s in samples)})")
            print(f"both daemons still running: {alive}")
            for process in (relay, server):
                lines = warnings_of(process)
                print(f"{process.name}: {len(lines)} log lines at warning or above")
                for line in lines[:20]:
                    print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
