"""A plain BOOTP client (RFC 951: no option 53) for the lab: one request, one reply, bounded.

Run inside a client namespace: ``python -m boothop.relay.lab.bootp_client --ifname eth0 --mac MAC``.
It sets the broadcast flag (RFC 1542 §3.1.1) because it has no address yet to receive a unicast
reply on, and prints the reply as JSON: the address the server assigned, the server and the file.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time

from boothop.relay.wire import (
    BROADCAST_FLAG,
    CLIENT_PORT,
    SERVER_PORT,
    DhcpMessage,
    Op,
    WireError,
    decode,
    encode,
)


def bootp_request(mac: bytes, xid: int) -> DhcpMessage:
    # RFC 1497 vendor extensions: the magic cookie and an empty option list.
    return DhcpMessage(
        op=Op.BOOTREQUEST, xid=xid, chaddr=mac.ljust(16, b"\0"), flags=BROADCAST_FLAG
    )


def run(ifname: str, mac: bytes, timeout: float, attempts: int) -> dict[str, object] | None:
    xid = int.from_bytes(os.urandom(4), "big")
    request = encode(bootp_request(mac, xid))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
        sock.bind(("0.0.0.0", CLIENT_PORT))
        for _ in range(attempts):
            sock.sendto(request, ("255.255.255.255", SERVER_PORT))
            deadline = time.monotonic() + timeout
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                try:
                    data, _ = sock.recvfrom(2048)
                except TimeoutError:
                    break
                try:
                    reply = decode(data)
                except WireError:
                    continue
                if reply.op == Op.BOOTREPLY and reply.xid == xid and reply.hardware_address == mac:
                    return {
                        "address": str(reply.yiaddr),
                        "server": str(reply.siaddr),
                        "file": reply.file.decode(errors="replace"),
                        "dhcp": reply.is_dhcp,
                    }
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ifname", required=True)
    parser.add_argument("--mac", required=True)
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds per attempt")
    parser.add_argument("--attempts", type=int, default=4)
    args = parser.parse_args(argv)
    result = run(args.ifname, bytes.fromhex(args.mac.replace(":", "")), args.timeout, args.attempts)
    print(json.dumps(result))
    return 0 if result else 1


if __name__ == "__main__":
    sys.exit(main())
