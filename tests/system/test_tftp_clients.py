"""The TFTP service against real clients (curl, tftp-hpa) on loopback, checksums compared.

Loopback rather than a namespace: these tests exercise the TFTP service and the clients, not
routing; the namespace path is covered by the PXE end-to-end test.
"""

from __future__ import annotations

import errno
import hashlib
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio
from conftest import need
from structlog.testing import capture_logs

from boothop.server.tftp import packet, service
from boothop.server.tftp.config import TftpConfig
from boothop.server.tftp.service import serve_tftp

pytestmark = pytest.mark.system
SMALL = 3000
LARGE = 40 * 1024 * 1024  # 81920 blocks of 512 bytes: block numbers roll over past 65535


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("tftproot")
    (base / "small.bin").write_bytes(os.urandom(SMALL))
    with open(base / "large.bin", "wb") as f:
        f.write(os.urandom(LARGE))
    (base / "exact.bin").write_bytes(os.urandom(512 * 8))
    (base / "text.txt").write_bytes(b"line one\nline two\n")
    (tmp_path_factory.getbasetemp() / "outside.txt").write_bytes(b"secret")
    (base / "escape").symlink_to(tmp_path_factory.getbasetemp() / "outside.txt")
    return base


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def fetch(argv: list[str], timeout: float) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(timeout):
        return await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)


async def serving(nursery: trio.Nursery, root: Path) -> int:
    config = TftpConfig(root=str(root), address="127.0.0.1", port=0, timeout=0.5, retries=3)
    return await nursery.start(serve_tftp, config)


@pytest.mark.parametrize("name", ["small.bin", "exact.bin", "large.bin"])
@pytest.mark.parametrize("blksize", [None, 1468, 8192])
async def test_curl_downloads_match(
    root: Path, tmp_path: Path, name: str, blksize: int | None
) -> None:
    """Lock-step downloads, served in C (server/tftp/lockstep.c) but for a block or two at the
    start and at the end: the transfer's log line counts the ACKs the C loop served."""
    curl = need("curl")
    out = tmp_path / "out"
    with capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            port = await serving(nursery, root)
            argv = [curl, "-sS", "--max-time", "40", "-o", str(out),
                    f"tftp://127.0.0.1:{port}/{name}"]
            if blksize:
                argv[1:1] = ["--tftp-blksize", str(blksize)]
            result = await fetch(argv, 45)
            nursery.cancel_scope.cancel()
    assert result.returncode == 0, result.stderr
    assert digest(out) == digest(root / name)
    [started] = [e for e in logs if e["event"] == "tftp.transfer.started"]
    [ended] = [e for e in logs if e["event"] == "tftp.transfer.ended"]
    blocks = (root / name).stat().st_size // started["blksize"] + 1
    assert ended["outcome"] == "completed" and blocks - 3 <= ended["acks_in_c"] < blocks


async def test_the_time_limit_ends_a_lock_step_transfer_whose_every_ack_is_on_time(
    root: Path, tmp_path: Path
) -> None:
    """The transfer thread answers the window's ACK before the core sees it; past
    max_transfer_time it does not, so the core ends the transfer (40 MiB by 512 octets takes
    curl over a second here)."""
    curl = need("curl")
    config = TftpConfig(root=str(root), address="127.0.0.1", port=0, max_transfer_time=1.0)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_tftp, config)
        result = await fetch([curl, "-sS", "--max-time", "20", "-o", str(tmp_path / "out"),
                              f"tftp://127.0.0.1:{port}/large.bin"], 25)
        nursery.cancel_scope.cancel()
    # curl's exit code for an ERROR of code 0 ("not defined", ours for the time limit).
    assert result.returncode == 71, result.stderr


@pytest.mark.parametrize("name", ["small.bin", "large.bin"])
async def test_tftp_hpa_downloads_match(root: Path, tmp_path: Path, name: str) -> None:
    tftp = need("tftp")
    out = tmp_path / "out"
    async with trio.open_nursery() as nursery:
        port = await serving(nursery, root)
        result = await fetch(
            [tftp, "-m", "binary", "127.0.0.1", str(port), "-c", "get", name, str(out)], 45
        )
        nursery.cancel_scope.cancel()
    assert result.returncode == 0, result.stderr
    assert digest(out) == digest(root / name)


async def test_tftp_hpa_netascii(root: Path, tmp_path: Path) -> None:
    """Converted by the source in Python: no ACK of it is the C loop's."""
    tftp = need("tftp")
    out = tmp_path / "out"
    with capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            port = await serving(nursery, root)
            result = await fetch([tftp, "-m", "netascii", "127.0.0.1", str(port), "-c", "get",
                                  "text.txt", str(out)], 15)
            nursery.cancel_scope.cancel()
    assert result.returncode == 0, result.stderr
    assert [e["acks_in_c"] for e in logs if e["event"] == "tftp.transfer.ended"] == [0]
    # tftp-hpa converts CR LF back to the local LF convention: the file arrives unchanged.
    assert out.read_bytes() == b"line one\nline two\n"


@pytest.mark.parametrize(
    ("name", "code"), [("missing.bin", 68), ("escape", 69), ("../small.bin", 69)]
)
async def test_curl_gets_the_tftp_error(root: Path, tmp_path: Path, name: str, code: int) -> None:
    # curl's exit codes: 68 "TFTP file not found", 69 "TFTP permission problem".
    curl = need("curl")
    async with trio.open_nursery() as nursery:
        port = await serving(nursery, root)
        result = await fetch(
            [
                curl,
                "-sS",
                "--path-as-is",
                "--max-time",
                "10",
                "-o",
                str(tmp_path / "x"),
                f"tftp://127.0.0.1:{port}/{name}",
            ],
            15,
        )
        nursery.cancel_scope.cancel()
    assert result.returncode == code, result.stderr


async def test_malformed_requests_get_error_4_and_a_long_timeout_is_refused(root: Path) -> None:
    """A NUL inside the file name (and a traversal hidden after it) is answered at once with
    error 4; a client asking for timeout=255 gets an OACK without it."""
    client = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await client.bind(("127.0.0.1", 0))
    with client, trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await serving(nursery, root)
            for request in (b"\x00\x01small.bin\x00evil\x00octet\x00",
                            b"\x00\x01small.bin\x00/../../../etc/passwd\x00octet\x00"):
                await client.sendto(request, ("127.0.0.1", port))
                answer = packet.decode(await client.recv(600))
                assert isinstance(answer, packet.Error) and answer.code == 4, answer
            await client.sendto(packet.encode_request(
                packet.Opcode.RRQ, "small.bin", "octet", {"timeout": "255", "tsize": "0"}),
                ("127.0.0.1", port))
            data, source = await client.recvfrom(600)
            assert packet.decode(data) == packet.OptionAck({"tsize": str(SMALL)})
            await client.sendto(packet.encode_error(0, "done"), source)
            nursery.cancel_scope.cancel()


async def test_a_transfer_socket_that_cannot_be_opened_costs_that_request_only(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The listener's receive thread opens the transfer's socket under its lock; a failure there
    releases the client's slot in that thread and the listener goes on (it once did this in the
    trio thread, which waited for the lock the receive thread held: a deadlock)."""
    def no_transfer_sockets(*args: Any) -> tuple[socket.socket, socket.socket]:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(service, "open_peer_udp", no_transfer_sockets)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.setblocking(False)
    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                port = await serving(nursery, root)
                for _ in range(20):  # more than the 8 slots of one address, were any kept
                    client.sendto(b"\0\1small.bin\0octet\0", ("127.0.0.1", port))
                client.sendto(b"\0\1", ("127.0.0.1", port))  # malformed: answered at once
                await trio.lowlevel.wait_readable(client)
                answer = client.recv(600)
                nursery.cancel_scope.cancel()
    finally:
        client.close()
    assert answer[:2] == b"\0\5"  # ERROR: the listener still serves after 20 failures


async def test_a_stray_tid_gets_error_5_from_the_transfers_port_and_the_transfer_goes_on(
    root: Path,
) -> None:
    """RFC 1350 §4 through the sockets: the transfer's socket is connected to its client, so a
    datagram from another port reaches the second socket on the transfer's port, whose loop
    answers error 5 from there; the transfer neither moves nor stops, and completes."""
    client, stray = (trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
                     for _ in range(2))
    blocks: list[packet.Data] = []

    async def data_from(tid: tuple[str, int] | None) -> tuple[str, int]:
        datagram, source = await client.recvfrom(600)
        assert tid in (None, source)
        block = packet.decode(datagram)
        assert isinstance(block, packet.Data) and block.block == len(blocks) + 1, block
        blocks.append(block)
        return source  # type: ignore[no-any-return]

    with client, stray, trio.fail_after(10):
        for sock in (client, stray):
            await sock.bind(("127.0.0.1", 0))
        async with trio.open_nursery() as nursery:
            port = await serving(nursery, root)
            await client.sendto(b"\0\1small.bin\0octet\0", ("127.0.0.1", port))
            tid = await data_from(None)
            await stray.sendto(packet.encode_ack(1), tid)
            answer, source = await stray.recvfrom(600)
            assert source == tid
            assert packet.decode(answer) == packet.Error(packet.ErrorCode.UNKNOWN_TID,
                                                         "unknown transfer ID")
            with trio.move_on_after(0.2):  # within the 0.5 s timeout: no block 2 unasked for
                unasked = await client.recv(600)
                pytest.fail(f"the stray's ACK moved the transfer: {packet.decode(unasked)}")
            while len(blocks[-1].payload) == 512:
                await client.sendto(packet.encode_ack(len(blocks)), tid)
                await data_from(tid)
            await client.sendto(packet.encode_ack(len(blocks)), tid)
            nursery.cancel_scope.cancel()
    assert b"".join(block.payload for block in blocks) == (root / "small.bin").read_bytes()


async def test_a_server_stopping_mid_transfer_wakes_the_transfers_threads_at_once(
    root: Path,
) -> None:
    """shutdown(SHUT_RD) wakes the transfer's thread, blocked in recv on its connected socket,
    and the strays' loop: the server stops long before the transfer's 5 s timeout."""
    config = TftpConfig(root=str(root), address="127.0.0.1", port=0, timeout=5.0)
    client = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    with client:
        await client.bind(("127.0.0.1", 0))
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_tftp, config)
            await client.sendto(b"\0\1large.bin\0octet\0", ("127.0.0.1", port))
            with trio.fail_after(5):
                assert (await client.recv(600))[:4] == b"\0\3\0\1"  # DATA 1, never acked
            stopping = trio.current_time()
            nursery.cancel_scope.cancel()
    assert trio.current_time() - stopping < 2.0


async def test_a_client_gone_mid_transfer_is_timed_out_not_a_crash(root: Path) -> None:
    """The retransmissions to a closed port draw ICMP port unreachable, which a connected
    socket reports on the next recv (ECONNREFUSED): the thread goes on waiting, and the
    transfer ends by its retries."""
    config = TftpConfig(root=str(root), address="127.0.0.1", port=0, timeout=0.1, retries=3)
    client = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    with capture_logs() as logs, trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_tftp, config)
            with client:
                await client.bind(("127.0.0.1", 0))
                await client.sendto(b"\0\1large.bin\0octet\0", ("127.0.0.1", port))
                await client.recv(600)
            while not any(line["event"] == "tftp.transfer.ended" for line in logs):
                await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
    [ended] = [line for line in logs if line["event"] == "tftp.transfer.ended"]
    assert ended["outcome"] == "timed_out" and ended["retransmissions"] == 3
