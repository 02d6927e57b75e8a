"""Benchmark (not a test): nanoseconds per packet in the kernel datapath's tc program.

    python3 tests/bench/relay_program.py [--repeat 20000] [--rounds 5] [--no-agent]
        [--baseline OLD.bpf.c]

The program (relay/bpf/relay.bpf.c) as the daemon loads it, its maps filled from an engine the
way the daemon fills them (``datapath.tables``), in a namespace of its own (``bhpp-<random>``:
``c0`` clients 10.46.1.1/24, ``u0`` servers 10.46.100.1/24, the helper 10.46.100.10 a static
neighbour). BPF_PROG_TEST_RUN runs each packet of a DORA ``--repeat`` times (a run per call: the
kernel's own repeat would run the program again on the frame it rewrote), each run timed by the
kernel; the mean is printed: a DISCOVER and a REQUEST as perfdhcp sends them (300 octets, the
broadcast flag), relayed with option 82 added (``-a``), and the OFFER and ACK as kea answers
(option 82 echoed, which the program strips), from ``--clients`` clients in turn, each within
its MAC's rate limit (the default); ``--no-agent``: without option 82 (no ``-a``), the replies
then left as the server sent them. One helper, so no clone is sent. Medians of ``--rounds``
rounds. Program time is what the relay_dora benchmark's "tc program" column counts per DORA
(BPF_ENABLE_STATS), without the redirect that follows; it moves little with the machine's
load, and ``--baseline`` takes what is left out: another version of the source (``git show
REV:relay/bpf/relay.bpf.c > old.bpf.c``) is loaded beside this one and run in turns with it,
round by round, on the same packets, and the ratios are the change's. Needs root and the
kernel datapath's build tools (clang, libbpf).
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path

from pyroute2 import netns as pyroute2_netns

from boothop.relay import datapath, netlink
from boothop.relay.actions import Forward
from boothop.relay.compiled import PROGRAM_SOURCE, build, compile_file
from boothop.relay.config import InterfaceConfig, RelayConfig
from boothop.relay.engine import RelayEngine
from boothop.relay.interfaces import Role
from boothop.relay.kernel import TC_ACT_REDIRECT, KernelDatapath, Program
from boothop.relay.lab.processes import exit_on_sigterm
from boothop.relay.sockets import ipv4_udp
from boothop.relay.wire import Datagram, DhcpMessage, MessageType, Op, Opt, decode, encode

HELPER = IPv4Address("10.46.100.10")
C0, U0 = IPv4Address("10.46.1.1"), IPv4Address("10.46.100.1")
CLIENT_MAC = bytes.fromhex("024600000001")


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=20)


@contextlib.contextmanager
def namespace() -> Iterator[str]:
    name = f"bhpp-{secrets.token_hex(3)}"
    sh("ip", "netns", "add", name)
    try:
        def ip(*argv: str) -> None:
            sh("ip", "-n", name, *argv)
        ip("link", "add", "c0", "type", "veth", "peer", "c1")
        ip("link", "add", "u0", "type", "veth", "peer", "u1")
        for link in ("c0", "c1", "u0", "u1", "lo"):
            ip("link", "set", link, "up")
        ip("addr", "add", f"{C0}/24", "dev", "c0")
        ip("addr", "add", f"{U0}/24", "dev", "u0")
        ip("neigh", "replace", str(HELPER), "lladdr", "02:46:00:00:00:0a", "dev", "u0",
           "nud", "permanent")
        # A router: bpf_fib_lookup finds no route where forwarding is off.
        sh("ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        pyroute2_netns.pushns(name)
        try:
            yield name
        finally:
            pyroute2_netns.popns()
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=20)


def packets(engine: RelayEngine, clients: int) -> dict[str, tuple[list[bytes], int]]:
    """A DORA's frames as they reach the program, each with the interface it arrives on: for
    ``clients`` clients (MACs), as perfdhcp's reach it, each taking a token of its own bucket."""
    c0, u0 = engine.interfaces.by_name("c0"), engine.interfaces.by_name("u0")
    assert c0 is not None and u0 is not None
    # The server echoes the option 82 the relay added (RFC 3046 §2.2).
    probe = request(MessageType.DISCOVER, 0)
    relayed = engine.handle(Datagram(probe, IPv4Address(0), 68, IPv4Address("255.255.255.255"),
                                     c0.index, C0, 67), 0.0)
    forward = next(a for a in relayed.actions if isinstance(a, Forward))
    agent = decode(forward.payload).get(Opt.RELAY_AGENT_INFO)
    assert (agent is not None) == engine.config.agent_info
    frames: dict[str, tuple[list[bytes], int]] = {}
    for kind in (MessageType.DISCOVER, MessageType.REQUEST):
        frames[kind.name] = ([b"\xff" * 6 + client_mac(n) + b"\x08\x00"
                              + ipv4_udp(IPv4Address(0), IPv4Address("255.255.255.255"), 68, 67,
                                         request(kind, n))
                              for n in range(clients)], c0.index)
    for kind, asked in ((MessageType.OFFER, MessageType.DISCOVER),
                        (MessageType.ACK, MessageType.REQUEST)):
        frames[kind.name] = ([u0.mac + b"\x02\x46\x00\x00\x00\x0a\x08\x00" + ipv4_udp(
            HELPER, C0, 67, 67, reply(kind, asked, n, agent)) for n in range(clients)],
            u0.index)
    return frames


def client_mac(n: int) -> bytes:
    return b"\x02\x46" + n.to_bytes(4, "big")


def request(kind: MessageType, n: int) -> bytes:
    return encode(DhcpMessage(
        op=Op.BOOTREQUEST, xid=(n << 8) + kind, chaddr=client_mac(n) + bytes(10), flags=0x8000,
        options=((Opt.MESSAGE_TYPE, bytes((kind,))),
                 (Opt.PARAMETER_REQUEST_LIST, bytes((1, 3, 6, 15))),
                 (Opt.REQUESTED_ADDRESS, bytes((10, 46, 1, 50))))))


def reply(kind: MessageType, asked: MessageType, n: int, agent: bytes | None) -> bytes:
    """The server's answer to client ``n``'s request ``asked`` (its xid), echoing ``agent``."""
    echoed = () if agent is None else ((Opt.RELAY_AGENT_INFO, agent),)
    return encode(DhcpMessage(
        op=Op.BOOTREPLY, xid=(n << 8) + asked, chaddr=client_mac(n) + bytes(10), hops=1,
        flags=0x8000, yiaddr=IPv4Address("10.46.1.50"), giaddr=C0,
        options=((Opt.MESSAGE_TYPE, bytes((kind,))), (Opt.SERVER_ID, HELPER.packed),
                 (Opt.LEASE_TIME, (3600).to_bytes(4, "big")),
                 (Opt.SUBNET_MASK, bytes((255, 255, 255, 0))), (Opt.ROUTER, C0.packed),
                 *echoed)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=20_000,
                        help="MACs the requests take turns with (a token bucket each)")
    parser.add_argument("--no-agent", action="store_true", help="no option 82 (no -a)")
    parser.add_argument("--baseline", type=Path,
                        help="another relay.bpf.c, run in turns with this one")
    args = parser.parse_args()
    exit_on_sigterm()
    with namespace() as name, tempfile.TemporaryDirectory(prefix="bhpp-") as scratch:
        config = RelayConfig(helpers=(HELPER,), agent_info=not args.no_agent,
                             interfaces=(InterfaceConfig("c0", Role.DOWNSTREAM),
                                         InterfaceConfig("u0", Role.UPSTREAM)))
        engine = RelayEngine(config, netlink.dump(name))
        objects = {"this": build(PROGRAM_SOURCE)}
        if args.baseline is not None:
            objects["baseline"] = Path(scratch) / "baseline.bpf.o"
            compile_file(args.baseline, PROGRAM_SOURCE.flags, objects["baseline"])
        kernels = {which: KernelDatapath(Program(path)) for which, path in objects.items()}
        try:
            for kernel in kernels.values():
                kernel.push(datapath.tables(engine, 67))
            frames = packets(engine, args.clients)
            times: dict[tuple[str, str], list[float]] = {
                (which, label): [] for which in kernels for label in frames}
            for round_ in range(args.rounds):
                for which, kernel in kernels.items():
                    for label, (each, ifindex) in frames.items():
                        total = 0
                        # Clients in turn across rounds: a client's bucket refills meanwhile.
                        first = round_ * args.repeat
                        for n in range(first, first + args.repeat):
                            code, _, took = kernel.program.timed_run(each[n % len(each)],
                                                                     ifindex)
                            if code != TC_ACT_REDIRECT:
                                print(f"{which}: the program did not relay a {label} "
                                      f"(code {code})", file=sys.stderr)
                                return 1
                            total += took
                        times[which, label].append(total / args.repeat)
        finally:
            for kernel in kernels.values():
                kernel.close()
    print(f"tc program run time, ns per packet (medians of {args.rounds} rounds of "
          f"{args.repeat:,} runs each{', without option 82' if args.no_agent else ''}):")
    medians = {key: statistics.median(values) for key, values in times.items()}
    for label in frames:
        rounds = ", ".join(f"{value:.0f}" for value in times["this", label])
        print(f"  {label:9s} {medians['this', label]:8.0f}   ({rounds})"
              + _against(medians["this", label], medians.get(("baseline", label))))
    dora = {which: sum(medians[which, label] for label in frames) for which in kernels}
    print(f"  per DORA  {dora['this']:8.0f}" + _against(dora["this"], dora.get("baseline")))
    return 0


def _against(this: float, baseline: float | None) -> str:
    return "" if baseline is None else f"   baseline {baseline:8.0f}: x{this / baseline:.2f}"


if __name__ == "__main__":
    sys.exit(main())
