"""A minimal IPv6 router advertiser for the lab's client LANs.

iPXE waits about 16 s for IPv6 autoconfiguration on a link with no IPv6 router. A Router
Advertisement with router lifetime 0, no prefix and the M and O flags clear (RFC 4861 §4.2) tells
it at once that there is nothing to configure, so the boot goes on. Run in the router namespace:
``python -m boothop.relay.lab.ra lan-a lan-b``. It sends one RA per interface per second until
stopped.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time

ALL_NODES = "ff02::1"
#: type 134, code 0, checksum (the kernel fills it in), hop limit 64, flags 0, lifetime 0,
#: reachable time 0, retransmission timer 0.
ROUTER_ADVERTISEMENT = bytes((134, 0, 0, 0, 64, 0, 0, 0)) + bytes(8)


def enable_ipv6(ifname: str) -> None:
    with open(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6", "w") as f:
        f.write("0")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("interfaces", nargs="+")
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--count", type=int, default=3600, help="stop after this many rounds")
    args = parser.parse_args(argv)
    for ifname in args.interfaces:
        enable_ipv6(ifname)
    time.sleep(2.0)  # duplicate address detection of the link-local addresses
    sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    # RFC 4861 §6.1.2: an RA must arrive with hop limit 255, or receivers discard it.
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
    indexes = [socket.if_nametoindex(name) for name in args.interfaces]
    for _ in range(args.count):
        for index in indexes:
            try:
                sock.sendto(ROUTER_ADVERTISEMENT, (ALL_NODES, 0, 0, index))
            except OSError as error:
                print(f"ra: {error}", file=sys.stderr, flush=True)
        time.sleep(args.interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
