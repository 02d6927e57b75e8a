"""Uploads (WRQ) to the TFTP service from real clients (tftp-hpa, curl), checksums compared.

Loopback, as in test_tftp_clients.py: these tests exercise the service and the clients, not routing.
Neither client implements windowsize (RFC 7440), so a small socket client driving our own RFC 7440
sender (``ReadTransfer``) covers windowed uploads through the real service.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio
from conftest import need

from boothop.server.tftp import packet
from boothop.server.tftp.config import TftpConfig
from boothop.server.tftp.negotiation import TransferParams
from boothop.server.tftp.service import serve_tftp
from boothop.server.tftp.source import BytesSource
from boothop.server.tftp.transfer import Outcome, ReadTransfer

pytestmark = pytest.mark.system
SIZES = {"small.bin": 3000, "large.bin": 3 * 1024 * 1024 + 123, "exact.bin": 512 * 8}


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("uploads")
    for name, size in SIZES.items():
        (base / name).write_bytes(os.urandom(size))
    (base / "text.txt").write_bytes(b"line one\nline two\r\n")
    return base


@pytest.fixture
def root(tmp_path: Path) -> Path:
    base = tmp_path / "root"
    base.mkdir()
    (base / "existing.bin").write_bytes(b"keep me")
    return base


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def leftovers(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.endswith(".part")]


async def run(argv: list[str], timeout: float) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(timeout):
        return await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)


async def serving(nursery: trio.Nursery, root: Path, **overrides: Any) -> int:
    config = TftpConfig(root=str(root), address="127.0.0.1", port=0, timeout=0.5, retries=3,
                        allow_write=True)
    return await nursery.start(serve_tftp, dataclasses.replace(config, **overrides))


@pytest.mark.parametrize("name", ["small.bin", "large.bin"])
async def test_tftp_hpa_uploads_match(sources: Path, root: Path, name: str) -> None:
    tftp = need("tftp")
    async with trio.open_nursery() as nursery:
        port = await serving(nursery, root)
        result = await run([tftp, "127.0.0.1", str(port), "-m", "binary", "-c", "put",
                            str(sources / name), "up.bin"], 30)
        nursery.cancel_scope.cancel()
    assert result.returncode == 0, result.stderr
    assert digest(root / "up.bin") == digest(sources / name)
    assert leftovers(root) == []


async def test_tftp_hpa_netascii_upload_arrives_unchanged(sources: Path, root: Path) -> None:
    tftp = need("tftp")
    async with trio.open_nursery() as nursery:
        port = await serving(nursery, root)
        result = await run([tftp, "127.0.0.1", str(port), "-m", "netascii", "-c", "put",
                            str(sources / "text.txt"), "text.txt"], 15)
        nursery.cancel_scope.cancel()
    assert result.returncode == 0, result.stderr
    assert (root / "text.txt").read_bytes() == (sources / "text.txt").read_bytes()


@pytest.mark.parametrize("name", ["small.bin", "exact.bin", "large.bin"])
@pytest.mark.parametrize("blksize", [None, 1468, 8192])
async def test_curl_uploads_match(
    sources: Path, root: Path, name: str, blksize: int | None
) -> None:
    curl = need("curl")
    argv = [curl, "-sS", "--max-time", "25", "-T", str(sources / name)]
    if blksize:
        argv += ["--tftp-blksize", str(blksize)]
    async with trio.open_nursery() as nursery:
        port = await serving(nursery, root)
        result = await run([*argv, f"tftp://127.0.0.1:{port}/up.bin"], 30)
        nursery.cancel_scope.cancel()
    assert result.returncode == 0, result.stderr
    assert digest(root / "up.bin") == digest(sources / name)
    assert leftovers(root) == []


async def test_uploads_land_in_the_write_root(sources: Path, root: Path) -> None:
    curl = need("curl")
    incoming = root / "incoming"
    incoming.mkdir()
    async with trio.open_nursery() as nursery:
        port = await serving(nursery, root, write_root=str(incoming))
        result = await run([curl, "-sS", "--max-time", "10", "-T", str(sources / "small.bin"),
                            f"tftp://127.0.0.1:{port}/up.bin"], 15)
        nursery.cancel_scope.cancel()
    assert result.returncode == 0, result.stderr
    assert digest(incoming / "up.bin") == digest(sources / "small.bin")
    assert not (root / "up.bin").exists()


async def windowed_upload(
    port: int, name: str, payload: bytes, options: dict[str, str], drop_every: int = 0
) -> Outcome | None:
    """Send a WRQ, then drive our RFC 7440 sender against the server's transfer port.

    With ``drop_every`` N, every Nth DATA datagram is "lost" (not sent).
    """
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        await sock.bind(("127.0.0.1", 0))
        await sock.sendto(packet.encode_request(packet.Opcode.WRQ, name, "octet", options),
                          ("127.0.0.1", port))
        reply, server = await sock.recvfrom(70000)
        oack = packet.decode(reply)
        assert isinstance(oack, packet.OptionAck), oack
        blksize, windowsize = int(oack.options["blksize"]), int(oack.options["windowsize"])
        params = TransferParams(blksize, windowsize, 0.5, 5)
        sender = ReadTransfer(server, BytesSource(payload), params, {})
        sends = sender.start(trio.current_time())
        sent = 0
        while not sender.done:
            for send in sends:
                sent += 1
                if drop_every and sent % drop_every == 0:
                    continue
                await sock.sendto(send, server)
            sends = []
            with trio.move_on_at(sender.next_deadline() or trio.current_time()):
                data, source = await sock.recvfrom(70000)
                assert source == server
                sends = sender.receive(data, trio.current_time())
                continue
            sends = sender.on_timer(trio.current_time())
        return sender.outcome


@pytest.mark.parametrize("windowsize", [4, 16])
async def test_windowed_upload_matches(sources: Path, root: Path, windowsize: int) -> None:
    payload = (sources / "large.bin").read_bytes()
    options = {"blksize": "1468", "windowsize": str(windowsize), "tsize": str(len(payload))}
    async with trio.open_nursery() as nursery:
        port = await serving(nursery, root)
        with trio.fail_after(20):
            outcome = await windowed_upload(port, "up.bin", payload, options)
        nursery.cancel_scope.cancel()
    assert outcome is Outcome.COMPLETED
    assert digest(root / "up.bin") == hashlib.sha256(payload).hexdigest()


@pytest.mark.parametrize("windowsize", [1, 8])
async def test_lossy_windowed_upload_matches(sources: Path, root: Path, windowsize: int) -> None:
    payload = (sources / "large.bin").read_bytes()[:100_000]
    options = {"blksize": "1024", "windowsize": str(windowsize)}
    async with trio.open_nursery() as nursery:
        port = await serving(nursery, root)
        with trio.fail_after(30):
            outcome = await windowed_upload(port, "up.bin", payload, options, drop_every=23)
        nursery.cancel_scope.cancel()
    assert outcome is Outcome.COMPLETED
    assert (root / "up.bin").read_bytes() == payload


# curl's exit codes: 69 "TFTP permission problem", 70 "disk full", 73 "file already exists".
@pytest.mark.parametrize(
    ("name", "overrides", "code"),
    [
        ("up.bin", {"allow_write": False}, 69),
        ("existing.bin", {}, 73),
        ("../up.bin", {}, 69),
        ("up.bin", {"max_write_size": 2999}, 70),  # curl announces the size with tsize
    ],
)
async def test_curl_upload_refusals(sources: Path, root: Path, name: str,
                                    overrides: dict[str, object], code: int) -> None:
    curl = need("curl")
    before = sorted(p.name for p in root.parent.rglob("*"))
    async with trio.open_nursery() as nursery:
        port = await serving(nursery, root, **overrides)
        result = await run([curl, "-sS", "--path-as-is", "--max-time", "10", "-T",
                            str(sources / "small.bin"), f"tftp://127.0.0.1:{port}/{name}"], 15)
        nursery.cancel_scope.cancel()
    assert result.returncode == code, result.stderr
    assert sorted(p.name for p in root.parent.rglob("*")) == before
    assert (root / "existing.bin").read_bytes() == b"keep me"


async def test_upload_over_the_limit_without_tsize_is_cut_and_leaves_no_file(
    sources: Path, root: Path
) -> None:
    # tftp-hpa sends no tsize: the limit is found mid-transfer, error 3, the partial file removed.
    tftp = need("tftp")
    async with trio.open_nursery() as nursery:
        port = await serving(nursery, root, max_write_size=100_000)
        result = await run([tftp, "127.0.0.1", str(port), "-m", "binary", "-c", "put",
                            str(sources / "large.bin"), "up.bin"], 15)
        nursery.cancel_scope.cancel()
    # tftp-hpa exits 0 after a refused put; it prints the server's error.
    assert b"Error code 3: disk full or allocation exceeded" in result.stdout + result.stderr
    assert sorted(p.name for p in root.iterdir()) == ["existing.bin"]
