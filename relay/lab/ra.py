"""A minimal IPv6 router advertiser for the lab's client LANs.

iPXE waits about 16 s for IPv6 autoconfiguration on a link with no IPv6 router. A Router
Advertisement with router lifetime 0, no prefix and the M and O flags clear (RFC 4861 §4.2) tells
it at once that there is nothing to configure, so the boot goes on. On a managed IPv6 link
(``--managed IF=PREFIX``, where a client boots over IPv6) the RA says the opposite: M and O set
(addresses and other configuration by DHCPv6, RFC 4861 §4.2), a router lifetime, so that the
clients route to the servers' subnet through it, and the link's prefix as on-link but not for
autonomous configuration (§4.6.2: L set, A clear), so that no address comes from SLAAC. iPXE
(Debian's, of 2019) routes through the router only for an address inside an advertised prefix.
Run in the router namespace: ``python -m boothop.relay.lab.ra lan-a --managed
lan-b=fd00:a5a:200::/64``. It sends one RA per interface per second until stopped.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import sys
import time

ALL_NODES = "ff02::1"
#: type 134, code 0, checksum (the kernel fills it in), hop limit 64, flags 0, lifetime 0,
#: reachable time 0, retransmission timer 0.
ROUTER_ADVERTISEMENT = bytes((134, 0, 0, 0, 64, 0, 0, 0)) + bytes(8)
#: The same with the M and O flags (0xc0) and a router lifetime of 1800 s.
MANAGED_ADVERTISEMENT = bytes((134, 0, 0, 0, 64, 0xC0)) + (1800).to_bytes(2, "big") + bytes(8)


def prefix_information(prefix: ipaddress.IPv6Network) -> bytes:
    """RFC 4861 §4.6.2: type 3, length 4 (in 8-octet units), prefix length, flags (L), valid and
    preferred lifetimes, reserved, the prefix."""
    return (bytes((3, 4, prefix.prefixlen, 0x80)) + (86400).to_bytes(4, "big")
            + (14400).to_bytes(4, "big") + bytes(4) + prefix.network_address.packed)


def managed(value: str) -> tuple[str, bytes]:
    """``IF=PREFIX``: the interface and its managed RA."""
    ifname, _, prefix = value.partition("=")
    return ifname, MANAGED_ADVERTISEMENT + prefix_information(ipaddress.IPv6Network(prefix))


def enable_ipv6(ifname: str) -> None:
    with open(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6", "w") as f:
        f.write("0")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("interfaces", nargs="*")
    parser.add_argument("--managed", nargs="+", type=managed, default=[],
                        metavar="IF=PREFIX",
                        help="managed IPv6 links: advertise a router, DHCPv6 and the prefix")
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--count", type=int, default=3600, help="stop after this many rounds")
    args = parser.parse_args(argv)
    adverts = [(ifname, ROUTER_ADVERTISEMENT) for ifname in args.interfaces]
    adverts += args.managed
    for ifname, _ in adverts:
        enable_ipv6(ifname)
    time.sleep(2.0)  # duplicate address detection of the link-local addresses
    sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    # RFC 4861 §6.1.2: an RA must arrive with hop limit 255, or receivers discard it.
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
    indexes = [(socket.if_nametoindex(name), advert) for name, advert in adverts]
    for _ in range(args.count):
        for index, advert in indexes:
            try:
                sock.sendto(advert, (ALL_NODES, 0, 0, index))
            except OSError as error:
                print(f"ra: {error}", file=sys.stderr, flush=True)
        time.sleep(args.interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
