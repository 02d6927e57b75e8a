"""How the relay sends: forwards on its UDP socket, replies through a packet socket.

Replies to clients that have no usable IP address yet (broadcast, and unicast to yiaddr at
chaddr) leave through an AF_PACKET socket with an IPv4/UDP header built here and the link-layer
destination given explicitly, so the kernel never resolves (and never caches in its ARP table)
the client's address.
"""

from __future__ import annotations

import socket
import struct
from ipaddress import IPv4Address

from .actions import Deliver, DeliveryMode, Forward
from .broadcast import ForwardUdp
from .shell import SocketUnavailable, address_text
from .wire import SERVER_PORT

ETH_P_IP = 0x0800
_IP_HEADER = struct.Struct("!BBHHHBBH4s4s")
_UDP_HEADER = struct.Struct("!HHHH")
IPTOS_LOWDELAY = 0x10
#: The UDP socket blocks for the receive thread; a send must not (a full buffer is an error).
_DONTWAIT = int(socket.MSG_DONTWAIT)
TTL = 64


def open_packet() -> socket.socket:
    """A send-only AF_PACKET socket (protocol 0: the kernel queues nothing to it)."""
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0)
    except PermissionError as error:
        raise SocketUnavailable(error.errno, "a packet socket (to deliver replies to clients "
                                "without an address) needs CAP_NET_RAW") from error
    sock.setblocking(False)
    return sock


def open_raw() -> socket.socket:
    """A send-only raw IPv4 socket (IPPROTO_RAW: we write the header, the kernel routes it and
    queues nothing to it): the UDP broadcast helper sends with the client's source address."""
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    except PermissionError as error:
        raise SocketUnavailable(error.errno, "a raw socket (to forward UDP broadcasts with the "
                                "client's source address) needs CAP_NET_RAW") from error
    sock.setblocking(False)
    return sock


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``.

    The one's-complement sum of 16-bit words is the number the bytes spell, modulo 0xFFFF
    (2**16 = 1 modulo 0xFFFF), computed in C by the big-integer code: no per-word Python loop.
    """
    if len(data) % 2:
        data += b"\0"
    number = int.from_bytes(data, "big")
    total = number % 0xFFFF
    if total == 0 and number:
        total = 0xFFFF  # one's complement has two zeros; a non-zero sum is the "negative" one
    return ~total & 0xFFFF


_IP_HEADERS: dict[tuple[bytes, bytes, int], bytes] = {}


def _ip_header(src: bytes, dst: bytes, total: int) -> bytes:
    """The IPv4 header (checksum included) for a datagram: memoized, for it depends on nothing
    else and a relay delivers from few addresses, to few destinations, in few sizes."""
    key = src, dst, total
    try:
        return _IP_HEADERS[key]
    except KeyError:
        if len(_IP_HEADERS) >= 4096:  # bounded: unicast destinations come from servers
            _IP_HEADERS.clear()
        header = _IP_HEADER.pack(0x45, IPTOS_LOWDELAY, total, 0, 0x4000, TTL, socket.IPPROTO_UDP,
                                 0, src, dst)
        header = _IP_HEADERS[key] = header[:10] + checksum(header).to_bytes(2, "big") + header[12:]
        return header


def ipv4_udp(source: IPv4Address, destination: IPv4Address, source_port: int,
             destination_port: int, payload: bytes) -> bytes:
    """An IPv4 datagram carrying ``payload`` in UDP, both checksums computed.

    The UDP checksum is ``checksum`` of pseudo-header + UDP header + payload, summed in parts:
    the one's-complement sum is a sum modulo 0xFFFF, and every part starts on a 16-bit boundary.
    """
    udp_length = _UDP_HEADER.size + len(payload)
    src, dst = source.packed, destination.packed
    padded = payload + b"\0" if len(payload) % 2 else payload
    total = (int.from_bytes(src + dst, "big") + socket.IPPROTO_UDP + udp_length  # pseudo-header
             + source_port + destination_port + udp_length  # UDP header, its checksum 0
             + int.from_bytes(padded, "big")) % 0xFFFF
    # total is 0..0xFFFE, so its complement is never 0 (a sum of 0 gives 0xFFFF): RFC 768, "If
    # the computed checksum is zero, it is transmitted as all ones", holds by construction.
    udp_sum = 0xFFFF - total
    return b"".join((_ip_header(src, dst, _IP_HEADER.size + udp_length),
                     _UDP_HEADER.pack(source_port, destination_port, udp_length, udp_sum),
                     payload))


class Sender:
    """Executes Forward and Deliver actions; raises OSError for the caller to count and log.

    ``port`` is the relay's own (67; dhcrelay's ``-p``): servers are sent to it, and replies go
    from it to clients at ``port + 1``, as dhcrelay does. ``upstream``, the socket bound to the
    RFC 8357 relay port (dhcrelay's ``-rp``), if any, is the one forwards leave from.
    """

    def __init__(self, udp: socket.socket, packet: socket.socket, port: int = SERVER_PORT,
                 upstream: socket.socket | None = None, raw: socket.socket | None = None) -> None:
        self.udp = udp
        self.packet = packet
        self.upstream = upstream
        #: The UDP broadcast helper's raw socket, when it is configured.
        self.raw = raw
        self.server_port = port
        self.client_port = port + 1

    def forward(self, action: Forward) -> None:
        self.forward_to(action.server, action.payload)

    def forward_to(self, server: IPv4Address, payload: bytes) -> None:
        (self.upstream or self.udp).sendto(payload, _DONTWAIT,
                                           (address_text(server), self.server_port))

    def deliver(self, action: Deliver) -> None:
        if action.mode is DeliveryMode.UNICAST_CIADDR:
            # The client has an address and answers ARP for it: an ordinary unicast.
            self.udp.sendto(action.payload, _DONTWAIT,
                            (address_text(action.destination), self.client_port))
            return
        self.send_frame(action.ifname, action.mac, action.source, action.destination,
                        action.payload)

    def send_frame(self, ifname: str, mac: bytes, source: IPv4Address,
                   destination: IPv4Address, payload: bytes) -> None:
        """A reply to a client without a usable address: the frame addressed to ``mac``."""
        frame = ipv4_udp(source, destination, self.server_port, self.client_port, payload)
        self.packet.sendto(frame, (ifname, ETH_P_IP, 0, 0, mac))

    def forward_udp(self, action: ForwardUdp) -> None:
        """A UDP broadcast to a helper, its source the client's (as Cisco's IP helper)."""
        assert self.raw is not None, "forward_udp without the raw socket"
        datagram = ipv4_udp(action.source, action.server, action.source_port, action.port,
                            action.payload)
        self.raw.sendto(datagram, _DONTWAIT, (address_text(action.server), 0))

    def close(self) -> None:
        self.udp.close()
        self.packet.close()
        for extra in (self.upstream, self.raw):
            if extra is not None:
                extra.close()
