"""Benchmark (not a test): instructions per relayed request on the relay's hot path, by callgrind.

    python3 tests/bench/relay_hotpath.py [--packets 2000] [--log-level warning] [--direction reply]

The relay's receive path, in one process on loopback: a client socket sends a DHCPDISCOVER, the
shell ring receives it (``DatagramLoop``'s reader, ``shell.receiver``: recvmsg, IP_PKTINFO, the
Datagram) and hands it to
``DatagramLoop``'s guarded handler, ``RelayService`` runs the engine and executes the Forward
(to a sender that drops it, so no routing is needed); ``--direction reply``: a DHCPOFFER from a
server to one of the relay's giaddrs, delivered (to the same sender). callgrind counts
instructions, not seconds: the figure repeats to within about 0.2 % whatever else the machine
is doing, which a DORA
benchmark on a shared machine cannot (tests/bench/relay_dora.py gives the end-to-end figures
against dhcrelay). Two runs, with ``--packets`` and with a fifth of it, are subtracted, so
interpreter start-up and imports cancel out. Needs valgrind.
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path


def relay_requests(count: int, level: str, rate_limit: bool = True,
                   direction: str = "request") -> None:
    """Relay ``count`` DHCPDISCOVERs (or, ``direction`` "reply", deliver ``count`` DHCPOFFERs)
    through the shell ring and the engine, logging at ``level`` (to stderr, which the parent
    discards)."""
    from boothop.relay.actions import Deliver, Forward
    from boothop.relay.config import InterfaceConfig, RelayConfig
    from boothop.relay.engine import RelayEngine
    from boothop.relay.interfaces import Interface, InterfaceTable, Role
    from boothop.relay.service import RelayService
    from boothop.relay.shell import configure_logging, open_udp
    from boothop.relay.throttle import BucketLimit, RateLimits
    from boothop.relay.wire import DhcpMessage, MessageType, Op, Opt, encode

    configure_logging(level, "json")  # info, the default, writes a line per relayed step

    class Discard:
        upstream = None  # no -rp socket

        def forward(self, action: Forward) -> None:
            pass

        def deliver(self, action: Deliver) -> None:
            pass

        def forward_to(self, server: IPv4Address, payload: bytes) -> None:
            pass

        def send_frame(self, ifname: str, mac: bytes, source: IPv4Address,
                       destination: IPv4Address, payload: bytes) -> None:
            pass

    # One client sends every request: its rate limit is lifted (a burst larger than the run) but
    # still checked, so the limiter's cost per request is in the figure (--no-rate-limit: not).
    limit = BucketLimit(0.0, 0.0) if not rate_limit else BucketLimit(1e12, 1.0)
    chaddr = bytes.fromhex("02710000010a") + bytes(10)
    index = socket.if_nametoindex("lo")
    if direction == "request":
        config = RelayConfig(helpers=(IPv4Address("10.71.100.10"),),
                             interfaces=(InterfaceConfig("lan", Role.DOWNSTREAM),),
                             rate_limits=RateLimits(mac=limit))
        interfaces = [Interface(index, "lan", True, (IPv4Interface("10.71.1.1/24"),),
                                b"\x02" * 6)]
        message = DhcpMessage(op=Op.BOOTREQUEST, xid=0x42, chaddr=chaddr,
                              options=((Opt.MESSAGE_TYPE, bytes([MessageType.DISCOVER])),))
    else:
        # The server answers from 127.0.0.1 on lo (the server-facing side, an address of ours:
        # no routing question), to giaddr 10.71.1.1 on a client-facing interface beside it.
        config = RelayConfig(helpers=(IPv4Address("127.0.0.1"),),
                             interfaces=(InterfaceConfig("lan", Role.DOWNSTREAM),
                                         InterfaceConfig("up", Role.UPSTREAM)),
                             rate_limits=RateLimits(mac=limit))
        interfaces = [Interface(index, "up", True, (IPv4Interface("127.0.0.1/8"),), b""),
                      Interface(index + 1000, "lan", True, (IPv4Interface("10.71.1.1/24"),),
                                b"\x02" * 6)]
        message = DhcpMessage(op=Op.BOOTREPLY, xid=0x42, chaddr=chaddr,
                              yiaddr=IPv4Address("10.71.1.50"), giaddr=IPv4Address("10.71.1.1"),
                              options=((Opt.MESSAGE_TYPE, bytes([MessageType.OFFER])),
                                       (Opt.SERVER_ID, bytes((10, 71, 100, 10)))))
    engine = RelayEngine(config, InterfaceTable.of(interfaces))
    sock = open_udp(0, "127.0.0.1")
    sock.setblocking(True)
    service = RelayService(engine, sock, Discard())  # type: ignore[arg-type]
    payload = encode(message)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    address = sock.getsockname()
    loop = service.loop
    take = loop._receive  # the loop's reader: ``shell.receiver`` bound to the socket
    for _ in range(count):
        client.sendto(payload, address)
        loop._handle(take(0))
    counters = engine.counters.snapshot()
    assert counters["received"] == count and not counters["dropped"], counters


def instructions(count: int, level: str, rate_limit: bool = True,
                 direction: str = "request") -> int:
    """callgrind's instruction total for a run relaying ``count`` requests (or replies)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        result = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
             sys.executable, __file__, "--child", str(count),
             *([] if rate_limit else ["--no-rate-limit"]),
             "--log-level", level, "--direction", direction],
            capture_output=True, text=True, timeout=900, check=True)
    found = re.search(r"Collected : (\d+)", result.stderr)
    assert found, result.stderr[-2000:]
    return int(found.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--packets", type=int, default=2000)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--no-rate-limit", dest="rate_limit", action="store_false",
                        help="without the per-client rate limiter (its cost is the difference)")
    parser.add_argument("--log-level", default="info", choices=("info", "warning"),
                        help="info (the default) writes a line per relayed step")
    parser.add_argument("--direction", default="request", choices=("request", "reply"),
                        help="requests relayed (the default), or replies delivered")
    args = parser.parse_args()
    if args.child is not None:
        relay_requests(args.child, args.log_level, args.rate_limit, args.direction)
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind not installed", file=sys.stderr)
        return 2
    small = max(args.packets // 5, 1)
    total = instructions(args.packets, args.log_level, args.rate_limit, args.direction)
    base = instructions(small, args.log_level, args.rate_limit, args.direction)
    per_packet = (total - base) / (args.packets - small)
    print(f"relay hot path: {per_packet:,.0f} instructions per relayed {args.direction} at log "
          f"level {args.log_level} (callgrind, {args.packets} - {small} of them)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
