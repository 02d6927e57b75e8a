"""Benchmark (not a test): nanoseconds per packet in the kernel datapath's tc program.

    python3 tests/bench/relay_program.py [--repeat 20000] [--rounds 5]

The program (relay/bpf/relay.bpf.c) as the daemon loads it, its maps filled from an engine the
way the daemon fills them (``datapath.tables``), in a namespace of its own (``bhpp-<random>``:
``c0`` clients 10.46.1.1/24, ``u0`` servers 10.46.100.1/24, the helper 10.46.100.10 a static
neighbour). BPF_PROG_TEST_RUN runs each packet of a DORA ``--repeat`` times (a run per call: the
kernel's own repeat would run the program again on the frame it rewrote), each run timed by the
kernel; the mean is printed: a DISCOVER and a REQUEST as perfdhcp sends them (300 octets, the
broadcast flag), relayed with option 82 added (``-a``), and the OFFER and ACK as kea answers
(option 82 echoed, which the program strips), from ``--clients`` clients in turn, each
within its MAC's rate limit (the default). One helper, so no clone is sent. Medians of
``--rounds`` rounds. Program time is what the relay_dora benchmark's "tc program" column counts
per DORA (BPF_ENABLE_STATS), without the redirect that follows; it moves little with the
machine's load, so a change to the program can be measured on a busy machine. Needs root and
the kernel datapath's build tools (clang, libbpf).
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import statistics
import subprocess
import sys
from collections.abc import Iterator
from ipaddress import IPv4Address

from pyroute2 import netns as pyroute2_netns

from boothop.relay import datapath, netlink
from boothop.relay.actions import Forward
from boothop.relay.config import InterfaceConfig, RelayConfig
from boothop.relay.engine import RelayEngine
from boothop.relay.interfaces import Role
from boothop.relay.kernel import TC_ACT_REDIRECT, KernelDatapath
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
    assert agent is not None
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


def reply(kind: MessageType, asked: MessageType, n: int, agent: bytes) -> bytes:
    """The server's answer to client ``n``'s request ``asked`` (its xid)."""
    return encode(DhcpMessage(
        op=Op.BOOTREPLY, xid=(n << 8) + asked, chaddr=client_mac(n) + bytes(10), hops=1,
        flags=0x8000, yiaddr=IPv4Address("10.46.1.50"), giaddr=C0,
        options=((Opt.MESSAGE_TYPE, bytes((kind,))), (Opt.SERVER_ID, HELPER.packed),
                 (Opt.LEASE_TIME, (3600).to_bytes(4, "big")),
                 (Opt.SUBNET_MASK, bytes((255, 255, 255, 0))), (Opt.ROUTER, C0.packed),
                 (Opt.RELAY_AGENT_INFO, agent))))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=20_000,
                        help="MACs the requests take turns with (a token bucket each)")
    args = parser.parse_args()
    exit_on_sigterm()
    with namespace() as name:
        config = RelayConfig(helpers=(HELPER,), agent_info=True,
                             interfaces=(InterfaceConfig("c0", Role.DOWNSTREAM),
                                         InterfaceConfig("u0", Role.UPSTREAM)))
        engine = RelayEngine(config, netlink.dump(name))
        kernel = KernelDatapath.load()
        try:
            kernel.push(datapath.tables(engine, 67))
            frames = packets(engine, args.clients)
            times: dict[str, list[float]] = {label: [] for label in frames}
            for _ in range(args.rounds):
                for label, (each, ifindex) in frames.items():
                    total = 0
                    for n in range(args.repeat):
                        code, _, took = kernel.program.timed_run(each[n % len(each)], ifindex)
                        if code != TC_ACT_REDIRECT:
                            print(f"the program did not relay a {label} (code {code})",
                                  file=sys.stderr)
                            return 1
                        total += took
                    times[label].append(total / args.repeat)
        finally:
            kernel.close()
    print(f"tc program run time, ns per packet (medians of {args.rounds} rounds of "
          f"{args.repeat:,} runs each):")
    medians = {label: statistics.median(values) for label, values in times.items()}
    for label, value in medians.items():
        print(f"  {label:9s} {value:8.0f}   ({', '.join(f'{v:.0f}' for v in times[label])})")
    print(f"  per DORA  {sum(medians.values()):8.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
