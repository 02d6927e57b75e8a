"""The HTTP file server against real curl on loopback: checksums, ranges, HEAD, keep-alive,
traversal attempts, a symlink out of the root, a slow client beside a fast one.

Loopback, as the TFTP client tests: these exercise the service and the client, not routing; the
routed path is the UEFI HTTP boot test's.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest
import trio
from conftest import need

from boothop.server.http.config import HttpConfig
from boothop.server.http.service import serve_http

pytestmark = pytest.mark.system
LARGE = 48 * 1024 * 1024 + 17


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("httproot")
    (base / "boot").mkdir()
    (base / "boot" / "small.bin").write_bytes(os.urandom(3000))
    with open(base / "boot" / "large.bin", "wb") as f:
        f.write(os.urandom(LARGE))
    (tmp_path_factory.getbasetemp() / "outside.txt").write_bytes(b"secret")
    (base / "escape").symlink_to(tmp_path_factory.getbasetemp() / "outside.txt")
    return base


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def curl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(timeout):
        return await trio.run_process([need("curl"), "-sS", "--max-time", str(timeout), *args],
                                      capture_stdout=True, capture_stderr=True, check=False)


async def serving(nursery: trio.Nursery, root: Path, address: str = "127.0.0.1") -> int:
    config = HttpConfig(root=str(root), address=address, port=0, header_timeout=2.0)
    port: int = await nursery.start(lambda task_status: serve_http(config,
                                                                   task_status=task_status))
    return port


@pytest.mark.parametrize("name", ["small.bin", "large.bin"])
@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]"])
async def test_curl_downloads_match(root: Path, tmp_path: Path, name: str, host: str) -> None:
    async with trio.open_nursery() as nursery:
        port = await serving(nursery, root, "::")
        out = tmp_path / "out"
        result = await curl("-o", str(out), "-w", "%{http_code}", f"http://{host}:{port}/boot/{name}")
        nursery.cancel_scope.cancel()
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"200"
    assert digest(out.read_bytes()) == digest((root / "boot" / name).read_bytes())


@pytest.mark.parametrize(("ranges", "status", "start", "end"), [
    ("100-199", b"206", 100, 200),
    ("-100", b"206", LARGE - 100, LARGE),
    ("48000000-", b"206", 48000000, LARGE),
    ("0-1,5-6", b"200", 0, LARGE),  # several ranges: the whole file (documented)
])
async def test_curl_ranges(root: Path, tmp_path: Path, ranges: str, status: bytes, start: int,
                           end: int) -> None:
    out = tmp_path / "part"
    async with trio.open_nursery() as nursery:
        port = await serving(nursery, root)
        result = await curl("-r", ranges, "-o", str(out), "-w", "%{http_code}",
                            f"http://127.0.0.1:{port}/boot/large.bin")
        nursery.cancel_scope.cancel()
    assert result.returncode == 0, result.stderr
    assert result.stdout == status
    with open(root / "boot" / "large.bin", "rb") as f:
        f.seek(start)
        assert digest(out.read_bytes()) == digest(f.read(end - start))


async def test_curl_resumes_an_interrupted_download(root: Path, tmp_path: Path) -> None:
    """``curl -C -``: the Range a real client sends to continue a partial file."""
    out = tmp_path / "resumed"
    out.write_bytes((root / "boot" / "large.bin").read_bytes()[:1_000_000])
    async with trio.open_nursery() as nursery:
        port = await serving(nursery, root)
        result = await curl("-C", "-", "-o", str(out), f"http://127.0.0.1:{port}/boot/large.bin")
        nursery.cancel_scope.cancel()
    assert result.returncode == 0, result.stderr
    assert digest(out.read_bytes()) == digest((root / "boot" / "large.bin").read_bytes())


async def test_unsatisfiable_range_and_head(root: Path) -> None:
    async with trio.open_nursery() as nursery:
        port = await serving(nursery, root)
        beyond = await curl("-D", "-", "-o", "/dev/null", "-r", f"{LARGE}-",
                            f"http://127.0.0.1:{port}/boot/large.bin")
        head = await curl("-I", f"http://127.0.0.1:{port}/boot/large.bin")
        nursery.cancel_scope.cancel()
    assert beyond.stdout.startswith(b"HTTP/1.1 416 ")
    assert f"content-range: bytes */{LARGE}".encode() in beyond.stdout.lower()
    assert head.stdout.startswith(b"HTTP/1.1 200 ")
    assert f"content-length: {LARGE}\r\n".encode() in head.stdout.lower()
    assert b"accept-ranges: bytes" in head.stdout.lower()


async def test_curl_keeps_the_connection_alive(root: Path) -> None:
    async with trio.open_nursery() as nursery:
        port = await serving(nursery, root)
        url = f"http://127.0.0.1:{port}/boot/small.bin"
        result = await curl("-v", "-o", "/dev/null", "-o", "/dev/null", url, url)
        nursery.cancel_scope.cancel()
    assert result.returncode == 0, result.stderr
    assert b"Re-using existing connection" in result.stderr


@pytest.mark.parametrize(("path", "status"), [
    ("/../outside.txt", b"403"),
    ("/boot/../../outside.txt", b"403"),
    ("/%2e%2e/outside.txt", b"403"),
    ("/boot/%2e%2e%2f%2e%2e%2foutside.txt", b"403"),
    ("/escape", b"403"),  # a symlink out of the root
    ("/boot", b"403"),  # a directory
    ("/boot/missing.bin", b"404"),
])
async def test_nothing_outside_the_root_is_served(root: Path, path: str, status: bytes) -> None:
    async with trio.open_nursery() as nursery:
        port = await serving(nursery, root)
        result = await curl("--path-as-is", "-o", "-", "-w", "\n%{http_code}",
                            f"http://127.0.0.1:{port}{path}")
        nursery.cancel_scope.cancel()
    assert result.stdout.endswith(b"\n" + status)
    assert b"secret" not in result.stdout


async def test_a_slow_client_does_not_hold_up_a_fast_one(root: Path, tmp_path: Path) -> None:
    """One client reading the large file at 200 kB/s (far more than the socket buffers hold, so
    the server waits on it) and giving up after 4 s; another fetches it whole meanwhile."""
    fast_out = tmp_path / "fast"
    async with trio.open_nursery() as nursery:
        port = await serving(nursery, root)
        url = f"http://127.0.0.1:{port}/boot/large.bin"
        slow: list[subprocess.CompletedProcess[bytes]] = []

        async def slow_fetch() -> None:
            with trio.fail_after(10):
                slow.append(await trio.run_process(
                    [need("curl"), "-sS", "--limit-rate", "200k", "--max-time", "4", "-o",
                     "/dev/null", url], capture_stdout=True, capture_stderr=True, check=False))

        nursery.start_soon(slow_fetch)
        await trio.sleep(0.5)
        fast = await curl("-o", str(fast_out), url)
        assert not slow, "the slow client ended before the fast one: nothing was proven"
        while not slow:
            await trio.sleep(0.1)
        # The server still serves after the slow client hung up mid-file.
        after = await curl("-o", "/dev/null", "-w", "%{http_code}", url)
        nursery.cancel_scope.cancel()
    assert fast.returncode == 0, fast.stderr
    assert digest(fast_out.read_bytes()) == digest((root / "boot" / "large.bin").read_bytes())
    assert slow[0].returncode == 28  # curl: "Operation timeout", still reading at 4 s
    assert after.stdout == b"200"
