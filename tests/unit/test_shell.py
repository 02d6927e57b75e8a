"""The shell ring every daemon uses, on real loopback sockets: receive, the loop, its guard."""

from __future__ import annotations

import datetime
import io
import json
import os
import socket
import threading
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest
import structlog
import trio
from structlog.testing import capture_logs

from boothop.relay.shell import (
    DatagramLoop,
    IsoUtcStamper,
    RateLimiter,
    SocketUnavailable,
    configure_logging,
    open_peer_udp,
    open_tcp,
    open_udp,
    pktinfo_cmsg,
    receive,
    send_datagram,
)
from boothop.relay.wire import Datagram

LOOPBACK = IPv4Address("127.0.0.1")


@pytest.fixture
def sock() -> Iterator[socket.socket]:
    opened = open_udp(0, "127.0.0.1")
    yield opened
    opened.close()


@pytest.fixture
def client() -> Iterator[socket.socket]:
    opened = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    opened.bind(("127.0.0.1", 0))
    yield opened
    opened.close()


def test_receive_reports_ingress_interface_addresses_and_port(sock: socket.socket,
                                                              client: socket.socket) -> None:
    client.sendto(b"hello", sock.getsockname())
    sock.settimeout(2)  # the daemons' sockets are non-blocking; here, wait for the one datagram
    port = sock.getsockname()[1]
    datagram = receive(sock, port, names=True)
    assert datagram == Datagram(b"hello", LOOPBACK, client.getsockname()[1], destination=LOOPBACK,
                                ifindex=socket.if_nametoindex("lo"), local=LOOPBACK, port=port,
                                ifname="lo")
    sock.setblocking(False)
    with pytest.raises(BlockingIOError):
        receive(sock, port)


def test_rate_limiter_allows_burst_then_counts_suppressed() -> None:
    limiter = RateLimiter(burst=2, period=10.0)
    assert [limiter.allow("k", 0.0) for _ in range(5)] == [0, 0, None, None, None]
    assert limiter.allow("other", 1.0) == 0
    assert limiter.allow("k", 10.0) == 3  # a new window reports what the last one suppressed
    assert limiter.allow("k", 10.5) == 0


def test_a_taken_port_is_refused_naming_the_port(sock: socket.socket) -> None:
    """No SO_REUSEADDR: a second daemon on the port would split its traffic with the first."""
    port = sock.getsockname()[1]
    with pytest.raises(SocketUnavailable) as raised:
        open_udp(port, "127.0.0.1")
    assert f"UDP port {port} on 127.0.0.1 is taken" in str(raised.value)


def test_a_peer_socket_gets_its_peer_and_the_second_socket_everyone_else(
        client: socket.socket) -> None:
    """The kernel prefers the connected socket for its peer's datagrams and gives the rest to
    the unconnected one on the same port; once both are open, the port is taken for anyone."""
    connected, strays = open_peer_udp("127.0.0.1", client.getsockname())
    stray = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stray.bind(("127.0.0.1", 0))
    with connected, strays, stray:
        port = connected.getsockname()[1]
        assert strays.getsockname() == ("127.0.0.1", port)
        for n in range(8):
            client.sendto(b"peer%d" % n, ("127.0.0.1", port))
            stray.sendto(b"stray%d" % n, ("127.0.0.1", port))
        for sock in (connected, strays):
            sock.settimeout(2)
        assert [connected.recv(16) for _ in range(8)] == [b"peer%d" % n for n in range(8)]
        assert [strays.recvfrom(16) for _ in range(8)] == [
            (b"stray%d" % n, stray.getsockname()) for n in range(8)]
        connected.send(b"to the peer")
        assert client.recvfrom(16) == (b"to the peer", ("127.0.0.1", port))
        with pytest.raises(SocketUnavailable):
            open_udp(port, "127.0.0.1", share=True)


def test_a_foreign_address_is_refused_naming_it() -> None:
    with pytest.raises(SocketUnavailable, match=r"192\.0\.2\.1 is not an address of this host"):
        open_udp(0, "192.0.2.1")


def test_a_taken_tcp_port_is_refused_naming_it() -> None:
    """SO_REUSEADDR on a TCP listener survives TIME_WAIT but never shares a listening port."""
    with open_tcp(0, "127.0.0.1") as listener:
        port = listener.getsockname()[1]
        with pytest.raises(SocketUnavailable) as raised:
            open_tcp(port, "127.0.0.1")
        assert f"TCP port {port} on 127.0.0.1 is taken" in str(raised.value)
        assert "web server" in str(raised.value)


def test_a_tcp_listener_on_the_ipv6_wildcard_takes_ipv4_clients() -> None:
    with open_tcp(0, "::") as listener:
        assert listener.family == socket.AF_INET6
        with socket.create_connection(("127.0.0.1", listener.getsockname()[1]), timeout=2):
            pass


def test_send_datagram_from_a_chosen_source(sock: socket.socket, client: socket.socket) -> None:
    send_datagram(sock, b"reply", client.getsockname(), 0, LOOPBACK)
    client.settimeout(2)
    assert client.recvfrom(100) == (b"reply", sock.getsockname())
    assert pktinfo_cmsg(0, LOOPBACK) is pktinfo_cmsg(0, LOOPBACK)  # built once per (if, source)


async def _serve(loop: DatagramLoop, client: socket.socket, payloads: list[bytes],
                 done: threading.Event) -> None:
    """Run ``loop`` until ``done`` is set (bounded), having sent ``payloads`` to it."""
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(loop.run)
            for payload in payloads:
                client.sendto(payload, loop.sock.getsockname())
            while not done.is_set():
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()


async def test_a_core_exception_costs_one_datagram_not_the_loop(sock: socket.socket,
                                                                client: socket.socket) -> None:
    handled: list[bytes] = []
    done = threading.Event()

    def core(datagram: Datagram) -> None:
        if datagram.payload == b"bad":
            raise RuntimeError("a bug in a core")
        handled.append(datagram.payload)
        if datagram.payload == b"last":
            done.set()

    loop = DatagramLoop(sock, core, log=structlog.get_logger())
    with capture_logs() as logs:
        await _serve(loop, client, [b"first", b"bad", b"last"], done)
    assert handled == [b"first", b"last"]
    assert loop.counters.core_errors == 1 and loop.stopping
    assert [e["event"] for e in logs] == ["shell.core.error"] and logs[0]["exc_info"]


async def test_a_burst_is_handled_under_one_lock_then_after_burst(sock: socket.socket,
                                                                  client: socket.socket) -> None:
    for n in range(5):  # queued before the loop starts: one wake-up finds all five
        client.sendto(bytes([n]), sock.getsockname())
    bursts: list[int] = []
    done = threading.Event()

    def after_burst(count: int) -> None:
        bursts.append(count)
        done.set()

    loop = DatagramLoop(sock, lambda datagram: None, log=structlog.get_logger(), burst=8,
                        after_burst=after_burst)
    await _serve(loop, client, [], done)
    assert bursts == [5]


async def test_a_truncated_datagram_is_counted_and_never_reaches_the_core(
        sock: socket.socket, client: socket.socket) -> None:
    handled: list[bytes] = []
    done = threading.Event()

    def core(datagram: Datagram) -> None:
        handled.append(datagram.payload)
        done.set()

    loop = DatagramLoop(sock, core, log=structlog.get_logger(), bufsize=16)
    await _serve(loop, client, [bytes(17), b"small"], done)
    assert handled == [b"small"] and loop.counters.truncated == 1


def _kernel_drops(sock: socket.socket) -> int:
    """The socket's drop count as /proc/net/udp shows it (the last column, by inode)."""
    inode = str(os.fstat(sock.fileno()).st_ino)
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[9] == inode:
            return int(fields[-1])
    raise AssertionError("socket not in /proc/net/udp")


async def test_kernel_drops_are_counted_from_so_rxq_ovfl(client: socket.socket) -> None:
    """A small receive queue filled while the loop is not running: the kernel drops the rest.
    Once the loop runs, the next datagram queued carries the kernel's count, which the counters
    and a warning show."""
    small = open_udp(0, "127.0.0.1", receive_queue=4096)
    handled: list[bytes] = []
    done = threading.Event()

    def core(datagram: Datagram) -> None:
        handled.append(datagram.payload)
        if datagram.payload == b"after":
            done.set()

    try:
        loop = DatagramLoop(small, core, log=structlog.get_logger())
        for n in range(200):
            client.sendto(b"%03d" % n + bytes(300), small.getsockname())
        dropped = _kernel_drops(small)
        assert 0 < dropped < 200
        with capture_logs() as logs, trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(loop.run)
                while len(handled) < 200 - dropped:  # the queue drained: room for one more
                    await trio.sleep(0.01)
                client.sendto(b"after", small.getsockname())
                while not done.is_set():
                    await trio.sleep(0.01)
                nursery.cancel_scope.cancel()
    finally:
        small.close()
    assert len(handled) == 200 - dropped + 1
    assert loop.counters.kernel_drops == dropped
    assert loop.counters.snapshot()["kernel_drops"] == dropped
    warnings = [e for e in logs if e["event"] == "shell.receive.kernel_drops"]
    assert [(e["dropped"], e["total"]) for e in warnings] == [(dropped, dropped)]


@pytest.mark.parametrize("ns", [
    1_796_000_000_000_000_000,  # a whole second: isoformat leaves the fraction out
    1_796_000_000_000_000_999,  # under a microsecond past it: still none
    1_796_000_000_000_001_000,
    1_796_000_000_999_999_999,  # floored, as datetime.now is, never rounded up
    1_796_000_001_123_456_789,
])
def test_iso_utc_stamper_writes_what_structlog_timestamper_writes(ns: int) -> None:
    expected = (datetime.datetime.fromtimestamp(ns // 10**9, tz=datetime.UTC)
                .replace(microsecond=ns // 1000 % 10**6).isoformat().replace("+00:00", "Z"))
    stamper = IsoUtcStamper(clock=lambda: ns)
    assert stamper(None, "info", {})["timestamp"] == expected
    # The second is cached: the next event in it and one in the next second are both right.
    stamper._clock = lambda: ns + 10**9
    later = datetime.datetime.fromisoformat(stamper(None, "info", {})["timestamp"][:-1])
    assert later == datetime.datetime.fromisoformat(expected[:-1]) + datetime.timedelta(seconds=1)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put structlog's configuration back: a test's log file is closed after it."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def test_json_lines_to_a_descriptor_match_the_text_pipeline(tmp_path: Path,
                                                            restore_logging: None) -> None:
    """A stream with a descriptor gets bytes written in one write per line; the lines are the
    ones the text pipeline (a StringIO, no descriptor) writes, key for key, in order, threads
    writing at once included."""
    text = io.StringIO()
    configure_logging("info", "json", stream=text)
    structlog.get_logger("t").bind(xid="0x1").info("step", n=0, servers=["10.0.0.1"])
    (expected,) = [json.loads(line) for line in text.getvalue().splitlines()]
    with (tmp_path / "log").open("w") as out:
        configure_logging("info", "json", stream=out)

        def write_lines() -> None:
            log = structlog.get_logger("t")
            for n in range(200):
                log.bind(xid="0x1").info("step", n=n, servers=["10.0.0.1"])
            log.debug("hidden")

        threads = [threading.Thread(target=write_lines) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    lines = [json.loads(line) for line in (tmp_path / "log").read_text().splitlines()]
    assert len(lines) == 800
    assert sorted(line["n"] for line in lines) == sorted(list(range(200)) * 4)
    for line in lines:
        assert list(line) == list(expected)
        assert {**line, "n": 0, "timestamp": ""} == {**expected, "timestamp": ""}
        assert datetime.datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00"))
