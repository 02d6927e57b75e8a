"""The HTTP service on loopback, driven by raw sockets: keep-alive, the header deadline
(slowloris), connection limits, a client that stops reading, malformed requests, metrics."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import trio
from prometheus_client import generate_latest

from boothop.relay.metrics import Metrics
from boothop.server.http.config import HttpConfig
from boothop.server.http.service import serve_http

BIG = 32 * 1024 * 1024


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("httproot")
    (base / "small.txt").write_bytes(b"hello\n")
    with open(base / "big.bin", "wb") as out:
        out.truncate(BIG)  # sparse: sendfile reads zeros from the page cache
    return base


async def serving(nursery: trio.Nursery, root: Path, metrics: Metrics | None = None,
                  **overrides: Any) -> int:
    config = dataclasses.replace(
        HttpConfig(root=str(root), address="127.0.0.1", port=0, header_timeout=0.5,
                   send_timeout=0.5), **overrides)
    port: int = await nursery.start(lambda task_status: serve_http(
        config, metrics=metrics, task_status=task_status))
    return port


async def read_until_closed(stream: trio.SocketStream, limit: float = 5) -> bytes:
    data = b""
    with trio.fail_after(limit):
        while chunk := await stream.receive_some(65536):
            data += chunk
    return data


def metric(metrics: Metrics, name: str) -> str:
    return "\n".join(line for line in generate_latest(metrics.registry).decode().splitlines()
                     if line.startswith(name))


async def test_keep_alive_serves_pipelined_requests_on_one_connection(root: Path) -> None:
    async with trio.open_nursery() as nursery:
        port = await serving(nursery, root)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        request = b"GET /small.txt HTTP/1.1\r\nhost: x\r\n\r\n"
        await stream.send_all(request * 2 + b"GET /small.txt HTTP/1.1\r\nhost: x\r\n"
                              b"connection: close\r\n\r\n")
        data = await read_until_closed(stream)
        nursery.cancel_scope.cancel()
    assert data.count(b"HTTP/1.1 200 OK") == 3 and data.count(b"hello\n") == 3


async def test_a_slow_request_head_gets_408_at_the_deadline(root: Path) -> None:
    """The slowloris bound: a head still incomplete after header_timeout ends the connection."""
    metrics = Metrics()
    async with trio.open_nursery() as nursery:
        port = await serving(nursery, root, metrics)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        started = trio.current_time()
        await stream.send_all(b"GET /small.txt HTTP/1.1\r\nhost: x\r\n")
        with trio.move_on_after(0.3):  # dribble, but never finish the head
            while True:
                await stream.send_all(b"x-a: b\r\n")
                await trio.sleep(0.05)
        data = await read_until_closed(stream)
        elapsed = trio.current_time() - started
        text = metric(metrics, "boothop_server_http_timeouts_total")
        nursery.cancel_scope.cancel()
    assert data.startswith(b"HTTP/1.1 408 ")
    assert 0.4 < elapsed < 3
    assert 'boothop_server_http_timeouts_total{kind="header"} 1.0' in text


async def test_an_idle_connection_is_closed_without_a_word(root: Path) -> None:
    async with trio.open_nursery() as nursery:
        port = await serving(nursery, root)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        data = await read_until_closed(stream)
        nursery.cancel_scope.cancel()
    assert data == b""


async def test_connections_over_the_per_client_limit_get_503(root: Path) -> None:
    metrics = Metrics()
    async with trio.open_nursery() as nursery:
        port = await serving(nursery, root, metrics, max_per_client=2, header_timeout=5.0)
        held = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(2)]
        await trio.sleep(0.1)  # both accepted
        refused = await trio.open_tcp_stream("127.0.0.1", port)
        data = await read_until_closed(refused)
        assert data.startswith(b"HTTP/1.1 503 ")
        # A held connection still works, and once one closes a new one is served.
        await held[0].send_all(b"GET /small.txt HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        assert (await read_until_closed(held[0])).startswith(b"HTTP/1.1 200 ")
        await held[0].aclose()
        await trio.sleep(0.1)
        again = await trio.open_tcp_stream("127.0.0.1", port)
        await again.send_all(b"HEAD /small.txt HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        assert (await read_until_closed(again)).startswith(b"HTTP/1.1 200 ")
        text = metric(metrics, "boothop_server_http_connections_total")
        nursery.cancel_scope.cancel()
    assert 'outcome="refused"} 1.0' in text and 'outcome="accepted"} 3.0' in text


async def test_a_client_that_stops_reading_is_dropped_after_send_timeout(root: Path) -> None:
    metrics = Metrics()
    async with trio.open_nursery() as nursery:
        port = await serving(nursery, root, metrics)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"GET /big.bin HTTP/1.1\r\nhost: x\r\n\r\n")
        await trio.sleep(2.0)  # read nothing: the server's buffers fill, then it waits
        text = metric(metrics, "boothop_server_http_")
        received = len(await read_until_closed(stream, limit=10))
        nursery.cancel_scope.cancel()
    assert 'boothop_server_http_timeouts_total{kind="send"} 1.0' in text
    assert "boothop_server_http_open_connections 0.0" in text
    assert received < BIG  # cut short


@pytest.mark.parametrize(("request_bytes", "status"), [
    # max_head (16 KiB) reached before the head ends: 431 without waiting for the rest.
    (b"GET /small.txt HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 20000, b"431"),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n", b"400"),
    (b"GET /small.txt HTTP/1.1\r\n\r\n", b"400"),  # HTTP/1.1 without Host
], ids=["head-too-large", "not-http", "no-host"])
async def test_malformed_requests_are_answered_and_closed(
        root: Path, request_bytes: bytes, status: bytes) -> None:
    async with trio.open_nursery() as nursery:
        port = await serving(nursery, root)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(request_bytes)
        data = await read_until_closed(stream)
        nursery.cancel_scope.cancel()
    assert data.startswith(b"HTTP/1.1 " + status + b" ")


async def test_requests_and_octets_are_counted(root: Path) -> None:
    metrics = Metrics()
    async with trio.open_nursery() as nursery:
        port = await serving(nursery, root, metrics)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"GET /small.txt HTTP/1.1\r\nhost: x\r\n\r\n"
                              b"GET /missing HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        await read_until_closed(stream)
        text = metric(metrics, "boothop_server_http_")
        nursery.cancel_scope.cancel()
    assert 'boothop_server_http_requests_total{status="200"} 1.0' in text
    assert 'boothop_server_http_requests_total{status="404"} 1.0' in text
    assert "boothop_server_http_bytes_total 6.0" in text
