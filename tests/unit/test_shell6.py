"""The shell ring's IPv6 half on loopback: open_udp(AF_INET6), send_datagram6, receive6 and the
receive loop handing Datagram6 to its handler."""

from __future__ import annotations

import contextlib
import socket
import threading
from ipaddress import IPv6Address

import pytest
import structlog

from boothop.relay import shell
from boothop.relay.wire import Datagram6

LOOPBACK = IPv6Address("::1")


def loopback_socket() -> socket.socket:
    try:
        return shell.open_udp(0, "::1", family=socket.AF_INET6)
    except OSError as error:  # an IPv6-less host: the system tests need it anyway
        pytest.skip(f"no IPv6 loopback: {error}")


def test_a_datagram_sent_out_of_an_interface_arrives_with_its_ipv6_pktinfo() -> None:
    with loopback_socket() as receiver, loopback_socket() as sender:
        port = receiver.getsockname()[1]
        lo = socket.if_nametoindex("lo")
        shell.send_datagram6(sender, b"\x01\x00\x00\x07", LOOPBACK, port, lo)
        receiver.setblocking(True)
        receiver.settimeout(5)
        datagram = shell.receive6(receiver, port)
        assert datagram == Datagram6(b"\x01\x00\x00\x07", LOOPBACK, sender.getsockname()[1],
                                     LOOPBACK, lo, port)
        assert receiver.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1


def test_the_receive_loop_hands_datagram6_to_its_handler() -> None:
    got: list[Datagram6] = []
    arrived = threading.Event()

    def handle(datagram: Datagram6) -> None:
        got.append(datagram)
        arrived.set()

    with loopback_socket() as receiver, loopback_socket() as sender:
        loop = shell.DatagramLoop(receiver, handle, log=structlog.get_logger("test"))
        thread = threading.Thread(target=loop.serve)
        receiver.setblocking(True)
        thread.start()
        try:
            shell.send_datagram6(sender, b"\x0c\x00" + bytes(32), LOOPBACK, loop.port)
            assert arrived.wait(5)
        finally:
            loop.stopping = True
            with contextlib.suppress(OSError):  # Linux wakes the receive, then says ENOTCONN
                receiver.shutdown(socket.SHUT_RD)
            thread.join(5)
    assert got[0].payload == b"\x0c\x00" + bytes(32) and got[0].source == LOOPBACK


def test_joining_a_group_needs_a_multicast_interface() -> None:
    with loopback_socket() as sock, pytest.raises(OSError):
        shell.join_group(sock, IPv6Address("ff02::1:2"), 999999)
