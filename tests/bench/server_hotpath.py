"""Benchmark (not a test): instructions per DORA on the DHCP server's hot path, by callgrind.

    python3 tests/bench/server_hotpath.py [--doras 2000] [--burst 1] [--log-level warning]
        [--profile]

The server's receive path, in one process, in a network namespace of its own (``unshare -n``,
loopback up, 10.52.0.1 the relay's giaddr and 10.52.0.2 the server's address): a relay socket
on 10.52.0.1:67 sends the DISCOVERs and REQUESTs perfdhcp sends (relayed, hops 1, option 55),
each from a new client; the server's shell ring receives them as its receive thread does
(``DatagramLoop``'s bound reader, its handler under its lock and the non-blocking drain),
``_Receiver`` runs the core and ``after_burst`` commits each burst's leases in one synced SQLite
transaction before its ACKs leave; the relay socket reads every reply back. ``--burst N`` queues N
clients' messages before the server drains them (N requests per transaction, as under load).
The store and the collector are set up as the daemon sets them up: the WAL grown
(``prepare_to_serve``), server/app.py's GC_THRESHOLD, and what was loaded frozen.

callgrind counts instructions, not seconds: the figure repeats whatever else the machine is
doing, which tests/bench/server_dora.py (against Kea) cannot. Two runs, with ``--doras`` and a
fifth of it, are subtracted, so start-up and imports cancel out. ``--profile`` runs cProfile
instead and prints the costliest functions. Needs valgrind and unshare.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from ipaddress import IPv4Address
from pathlib import Path

RELAY = "10.52.0.1"
SERVER = "10.52.0.2"
#: What perfdhcp asks for (its default parameter request list).
PARAMETERS = bytes((1, 28, 2, 3, 15, 6, 12))


def request_templates(giaddr: str, server: str) -> tuple[bytearray, bytearray, int]:
    """A DISCOVER and a REQUEST as perfdhcp sends them through a relay at ``giaddr`` to
    ``server``, and the REQUEST's offset of the requested address: the client's xid, chaddr and
    requested address are patched in per client, so the client side costs next to nothing."""
    from boothop.relay.wire import DhcpMessage, MessageType, Op, Opt, encode

    def template(kind: MessageType, *options: tuple[int, bytes]) -> bytearray:
        return bytearray(encode(DhcpMessage(
            op=Op.BOOTREQUEST, xid=0, chaddr=bytes(16), hops=1, giaddr=IPv4Address(giaddr),
            options=((Opt.MESSAGE_TYPE, bytes((kind,))), *options,
                     (Opt.PARAMETER_REQUEST_LIST, PARAMETERS)))))

    discover = template(MessageType.DISCOVER)
    request = template(MessageType.REQUEST, (Opt.SERVER_ID, IPv4Address(server).packed),
                       (Opt.REQUESTED_ADDRESS, bytes(4)))
    return discover, request, bytes(request).index(bytes((Opt.REQUESTED_ADDRESS, 4))) + 2


def serve_doras(count: int, burst: int, level: str, profile: bool, workdir: Path) -> None:
    """``count`` DORAs through the server's shell ring, core and lease store, ``burst`` clients
    at a time, logging at ``level`` (to stderr, which the parent discards); the store in
    ``workdir``, which the parent made and removes (also when this child is killed)."""
    import structlog

    from boothop.relay.shell import configure_logging, open_udp
    from boothop.relay.wire import MessageType, decode
    from boothop.server.app import GC_THRESHOLD
    from boothop.server.dhcp import service
    from boothop.server.dhcp.config import parse_dhcp
    from boothop.server.dhcp.core import DhcpServerCore
    from boothop.server.leasestore import open_store

    configure_logging(level, "json")
    config = parse_dhcp({"lease_db": f"{workdir}/leases.sqlite3", "subnets": [{
        "subnet": "10.52.0.0/16", "pools": ["10.52.1.0-10.52.255.250"], "lease_time": 600}]},
        "bench.toml")
    store = open_store(config.lease_db)
    assert store.prepare_to_serve() is None
    sock = open_udp(0, SERVER)
    sock.setblocking(True)
    log = structlog.get_logger().bind(service="dhcp")
    durable = service._Durable(store, sock, log)
    receiver = service._Receiver(DhcpServerCore(config, store.load()), durable, sock, log,
                                 window=config.commit_window)
    # The collector as the daemon has it (server/app.py's threshold, serve_dhcp's freeze).
    gc.set_threshold(*GC_THRESHOLD)
    gc.freeze()
    loop = receiver.loop
    relay = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    relay.bind((RELAY, 67))
    server = sock.getsockname()
    discover, request, requested_at = request_templates(RELAY, SERVER)

    def message(payload: bytearray, n: int) -> bytearray:
        payload[4:8] = n.to_bytes(4, "big")  # xid
        payload[28:34] = n.to_bytes(6, "big")  # chaddr
        return payload

    take = loop._receive  # the reader bound once, as DatagramLoop.serve takes it

    def serve(queued: int) -> None:
        """What DatagramLoop.serve does for one wake-up: receive, drain, commit."""
        count = loop.handle_burst(take(0))
        assert count == queued, (count, queued)
        receiver.after_burst(count)

    receiver.window = 0.0  # the window sleeps; instructions are what is counted here

    def run() -> None:
        for first in range(1, count + 1, burst):
            clients = range(first, min(first + burst, count + 1))
            for n in clients:
                relay.sendto(message(discover, n), server)
            serve(len(clients))
            offers = [relay.recv(2048) for _ in clients]
            for offer in offers:
                request[requested_at:requested_at + 4] = offer[16:20]  # yiaddr
                relay.sendto(message(request, int.from_bytes(offer[4:8], "big")), server)
            serve(len(clients))
            acks = [relay.recv(2048) for _ in clients]
        assert decode(acks[-1]).message_type == MessageType.ACK

    if profile:
        import cProfile
        import pstats

        cProfile.runctx("run()", globals(), {"run": run}, f"{workdir}/profile")
        pstats.Stats(f"{workdir}/profile", stream=sys.stdout).sort_stats("tottime").print_stats(40)
    else:
        run()
    assert len(receiver.core.leases) == count
    store.close()


def in_namespace(argv: list[str]) -> list[str]:
    """``argv`` run in a new network namespace with loopback and the two addresses up."""
    setup = (f"ip link set lo up && ip addr add {RELAY}/16 dev lo && "
             f"ip addr add {SERVER}/16 dev lo && exec \"$@\"")
    return ["unshare", "-n", "sh", "-c", setup, "sh", *argv]


def child_argv(count: int, args: argparse.Namespace, workdir: str) -> list[str]:
    return [sys.executable, __file__, "--child", str(count), "--burst",
            str(args.burst), "--log-level", args.log_level, "--workdir", workdir]


def instructions(count: int, args: argparse.Namespace) -> int:
    """callgrind's instruction total for a run of ``count`` DORAs."""
    with tempfile.TemporaryDirectory(prefix="bhk-hotpath-") as tmp:
        out = Path(tmp) / "callgrind.out"
        result = subprocess.run(
            in_namespace(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                          *child_argv(count, args, tmp)]),
            capture_output=True, text=True, timeout=1800, check=True)
    found = re.search(r"Collected : (\d+)", result.stderr)
    assert found, result.stderr[-2000:]
    return int(found.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--doras", type=int, default=2000)
    parser.add_argument("--burst", type=int, default=1,
                        help="clients whose messages the server finds queued at each wake-up")
    parser.add_argument("--log-level", default="warning", choices=("info", "warning"))
    parser.add_argument("--profile", action="store_true", help="cProfile instead of callgrind")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        serve_doras(args.child, args.burst, args.log_level, False, args.workdir)
        return 0
    if args.profile:
        if os.environ.get("BHK_IN_NAMESPACE"):
            serve_doras(args.doras, args.burst, args.log_level, True, args.workdir)
            return 0
        with tempfile.TemporaryDirectory(prefix="bhk-hotpath-") as tmp:
            argv = [sys.executable, __file__, "--profile", "--doras", str(args.doras),
                    "--burst", str(args.burst), "--log-level", args.log_level, "--workdir", tmp]
            return subprocess.run(in_namespace(argv),
                                  env={**os.environ, "BHK_IN_NAMESPACE": "1"},
                                  check=False).returncode
    for tool in ("valgrind", "unshare"):
        if shutil.which(tool) is None:
            print(f"{tool} not installed", file=sys.stderr)
            return 2
    small = max(args.doras // 5, args.burst)
    total = instructions(args.doras, args)
    base = instructions(small, args)
    per_dora = (total - base) / (args.doras - small)
    print(f"server hot path: {per_dora:,.0f} instructions per DORA, {args.burst} client(s) per "
          f"wake-up, log level {args.log_level} (callgrind, {args.doras} - {small} DORAs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
