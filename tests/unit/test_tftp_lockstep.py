"""The TFTP lock-step loop in C (server/tftp/lockstep.c) against the Python loop, its
specification: a read transfer served by the transfer thread's loop with the C loop and without
it, on real sockets on loopback, to a scripted peer, must send the peer the same datagrams and
end the same way (outcome, octets sent, retransmissions, datagrams ignored)."""

from __future__ import annotations

import os
import random
import re
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from boothop.relay.compiled import LOCK_STEP_SOURCE, build, source_text
from boothop.relay.shell import open_peer_udp
from boothop.server.tftp import native, packet
from boothop.server.tftp.native import LockStepLoop
from boothop.server.tftp.negotiation import TransferParams
from boothop.server.tftp.paths import open_file
from boothop.server.tftp.service import _serve_transfer
from boothop.server.tftp.transfer import Outcome, ReadTransfer

#: Seconds the server waits for an ACK before it sends its block again.
TIMEOUT = 0.04
#: Seconds the peer waits for the server's next datagram before it takes the transfer as over.
QUIET = 0.5


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> native.Serve:
    os.environ.setdefault("BOOTHOP_BPF_CACHE", str(tmp_path_factory.mktemp("cache")))
    return native.load()


@dataclass(frozen=True)
class Turn:
    """What the peer does after a datagram of the server: the junk it sends first, then the
    ACK, silence (the server's timer sends the block again), an ERROR or going away."""

    junk: tuple[str, ...]
    then: str


JUNK = ("duplicate", "stale", "future", "garbage", "long", "empty_error")
#: Half the turns without junk: the C loop serves runs of ACKs in one call only between them.
turns = st.builds(Turn, st.one_of(st.just(()), st.lists(st.sampled_from(JUNK), min_size=1,
                                                        max_size=2).map(tuple)),
                  st.sampled_from(("ack",) * 12 + ("silent", "error")))


@dataclass
class Served:
    received: list[bytes]
    outcome: Outcome | None
    bytes_sent: int
    retransmissions: int
    ignored: dict[str, int]


def junk_datagram(kind: str, block: int) -> bytes:
    return {
        "duplicate": packet.encode_ack((block - 1) & 0xFFFF),
        "stale": packet.encode_ack((block - 7) & 0xFFFF),
        "future": packet.encode_ack((block + 3) & 0xFFFF),
        "garbage": b"\x00\x09garbage",
        "long": packet.encode_ack(block & 0xFFFF) + b"tail",  # not the ACK: four octets more
        "empty_error": b"",
    }[kind]


def run(root: Path, name: str, blksize: int, script: list[Turn], lock_step: native.Serve | None,
        *, oack: bool = False, max_time: float = 600.0, retries: int = 2) -> Served:
    """Serve ``name`` to a peer that plays ``script`` (turn after turn, the last one repeated)
    through ``_serve_transfer``, with the C loop or without it. The peer takes no more than
    three times the datagrams the file needs (and two for each turn): a loop that sends too
    many fails, it does not hang."""
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.settimeout(QUIET)
    sock, strays = open_peer_udp("127.0.0.1", peer.getsockname())
    peer.connect(sock.getsockname())
    params = TransferParams(blksize=blksize, timeout=TIMEOUT, retries=retries, max_time=max_time)
    transfer = ReadTransfer(peer.getsockname(), open_file(str(root), name), params,
                            {"blksize": str(blksize)} if oack else {})
    loop = LockStepLoop.open(lock_step, sock.fileno(), transfer) if lock_step else None
    assert (loop is None) == (lock_step is None)
    thread = threading.Thread(target=_serve_transfer,
                              args=(sock, transfer, threading.Event(), lambda: None, loop))
    received: list[bytes] = []
    bound = 3 * ((root / name).stat().st_size // blksize + 1) + 2 * len(script) + 10
    with peer, sock, strays:
        thread.start()
        turn, silent_for = 0, -1
        while len(received) < bound:
            try:
                data = peer.recv(70000)
            except TimeoutError:
                break
            received.append(data)
            if data[:2] == b"\x00\x05":  # ERROR: the transfer is over
                break
            block = 0 if data[:2] == b"\x00\x06" else int.from_bytes(data[2:4], "big")
            step = script[min(turn, len(script) - 1)]
            turn += 1
            for kind in step.junk:
                peer.send(junk_datagram(kind, block))
            if step.then == "silent" and silent_for != block:
                silent_for = block  # once per block: the retransmission is then acknowledged
                continue
            if step.then == "error":
                peer.send(packet.encode_error(0, "peer gave up"))
                break
            peer.send(packet.encode_ack(block))
            if len(data) - 4 < blksize and data[:2] == b"\x00\x03":  # the last block: done
                break
        thread.join(timeout=30)
    assert not thread.is_alive()
    return Served(received, transfer.outcome, transfer.bytes_sent, transfer.retransmissions,
                  {kind.value: count for kind, count in transfer.ignored.items()})


def contents(received: list[bytes]) -> bytes:
    blocks = {}
    for data in received:
        if data[:2] == b"\x00\x03":
            blocks.setdefault(int.from_bytes(data[2:4], "big"), data[4:])
    return b"".join(blocks[number] for number in sorted(blocks))


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blocks=st.integers(0, 40), short=st.sampled_from(("none", "one", "all but one", "some")),
       blksize=st.sampled_from((8, 13, 512, 1428, 8192)), oack=st.booleans(),
       script=st.lists(turns, min_size=1, max_size=40), seed=st.integers(0, 1 << 32))
def test_the_c_loop_sends_what_the_python_loop_sends(
    serve: native.Serve, tmp_path_factory: pytest.TempPathFactory, blocks: int, short: str,
    blksize: int, oack: bool, script: list[Turn], seed: int,
) -> None:
    """Files of whole blocks and one octet more or less (the last block empty, or short by
    one), served to peers that also send junk, fall silent, or give up."""
    root = tmp_path_factory.mktemp("files")
    last = {"none": 0, "one": 1, "all but one": blksize - 1, "some": seed % blksize}[short]
    data = random.Random(seed).randbytes(blocks * blksize + last)
    (root / "file").write_bytes(data)
    python = run(root, "file", blksize, script, None, oack=oack)
    c = run(root, "file", blksize, script, serve, oack=oack)
    assert c == python
    if python.outcome is Outcome.COMPLETED:
        assert contents(c.received) == data


@pytest.mark.parametrize("blksize", (8, 13, 512))
@pytest.mark.parametrize("last", (0, 1, -1))
def test_a_lossless_peer_gets_the_file_and_its_end_as_from_the_python_loop(
    serve: native.Serve, tmp_path: Path, blksize: int, last: int,
) -> None:
    """Whole blocks and an empty last one, one octet more, one octet short: the C loop finds
    the end of the file itself when no junk hands the turn back to Python between ACKs."""
    data = os.urandom(20 * blksize + last)
    (tmp_path / "file").write_bytes(data)
    python = run(tmp_path, "file", blksize, [Turn((), "ack")], None)
    c = run(tmp_path, "file", blksize, [Turn((), "ack")], serve)
    assert c == python
    assert c.outcome is Outcome.COMPLETED and contents(c.received) == data


def test_the_c_loop_reads_across_its_cache_and_rolls_block_numbers_over(
    serve: native.Serve, tmp_path: Path,
) -> None:
    """65,540 blocks of 8 octets: past block 65535 the numbers go on from 0, as the Python loop
    sends them; the file is read through eight fills of the C loop's 64 KiB cache."""
    data = os.urandom(8 * 65_540 + 3)
    (tmp_path / "file").write_bytes(data)
    python = run(tmp_path, "file", 8, [Turn((), "ack")], None)
    c = run(tmp_path, "file", 8, [Turn((), "ack")], serve)
    assert c == python
    assert c.outcome is Outcome.COMPLETED and c.bytes_sent == len(data)
    assert [int.from_bytes(d[2:4], "big") for d in c.received[65_534:65_538]] == [65535, 0, 1, 2]
    assert b"".join(d[4:] for d in c.received) == data


def test_a_peer_that_goes_away_times_the_transfer_out_on_both_loops(
    serve: native.Serve, tmp_path: Path,
) -> None:
    """The peer's port closes mid-transfer: ICMP port unreachable fails the next receive (the
    C loop returns it as the receive's error), the timer sends the block again until the
    retries are spent."""
    (tmp_path / "file").write_bytes(os.urandom(512 * 40))
    served = {}
    for name, lock_step in (("python", None), ("c", serve)):
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        peer.bind(("127.0.0.1", 0))
        peer.settimeout(QUIET)
        sock, strays = open_peer_udp("127.0.0.1", peer.getsockname())
        peer.connect(sock.getsockname())
        transfer = ReadTransfer(peer.getsockname(), open_file(str(tmp_path), "file"),
                                TransferParams(timeout=TIMEOUT, retries=3), {})
        loop = LockStepLoop.open(lock_step, sock.fileno(), transfer)
        thread = threading.Thread(target=_serve_transfer,
                                  args=(sock, transfer, threading.Event(), lambda: None, loop))
        with sock, strays:
            thread.start()
            with peer:
                for block in range(1, 11):
                    assert int.from_bytes(peer.recv(600)[2:4], "big") == block
                    peer.send(packet.encode_ack(block))
            thread.join(timeout=30)
        assert not thread.is_alive()
        served[name] = (transfer.outcome, transfer.bytes_sent, transfer.retransmissions)
    assert served["c"] == served["python"] == (Outcome.TIMED_OUT, 512 * 11, 3)


def test_the_time_limit_ends_a_transfer_the_c_loop_serves(
    serve: native.Serve, tmp_path: Path,
) -> None:
    """A peer that keeps acknowledging is stopped by the time limit: the C loop hands the turn
    back when the next deadline would pass it, and the core sends its ERROR."""
    data = os.urandom(512 * 100_000)
    (tmp_path / "file").write_bytes(data)
    served = run(tmp_path, "file", 512, [Turn((), "ack")], serve, max_time=0.3)
    assert served.outcome is Outcome.TIME_LIMIT
    assert packet.decode(served.received[-1]) == packet.Error(0, "transfer time limit exceeded")
    blocks = served.received[:-1]
    assert 100 < len(blocks) < 100_000
    assert [int.from_bytes(d[2:4], "big") for d in blocks] == [
        n & 0xFFFF for n in range(1, len(blocks) + 1)]
    assert b"".join(d[4:] for d in blocks) == data[:512 * len(blocks)]


def test_only_a_lock_step_read_of_a_file_in_octet_mode_runs_in_c(
    serve: native.Serve, tmp_path: Path,
) -> None:
    (tmp_path / "file").write_bytes(b"x" * 100)
    octet = ReadTransfer(("127.0.0.1", 9), open_file(str(tmp_path), "file"), TransferParams(), {})
    window = ReadTransfer(("127.0.0.1", 9), open_file(str(tmp_path), "file"),
                          TransferParams(windowsize=4), {"windowsize": "4"})
    from boothop.server.tftp.source import NetasciiSource
    text = ReadTransfer(("127.0.0.1", 9), NetasciiSource(open_file(str(tmp_path), "file")),
                        TransferParams(), {})
    assert LockStepLoop.open(serve, 0, octet) is not None
    assert LockStepLoop.open(serve, 0, window) is None
    assert LockStepLoop.open(serve, 0, text) is None
    assert LockStepLoop.open(None, 0, octet) is None


def test_the_served_reasons_match_the_c_enum() -> None:
    source = source_text(LOCK_STEP_SOURCE).decode()
    names = re.findall(r"^\tSERVED_(\w+) = (\d+),", source, re.MULTILINE)
    assert [(name, int(value)) for name, value in names] == [
        (name, getattr(native, name)) for name in
        ("END", "DATAGRAM", "RECEIVE_FAILED", "SEND_FAILED", "READ_FAILED", "TIME_LIMIT")]
    assert f"#define RECEIVED {native.RECEIVED}" in source


def test_the_loop_is_built_once_by_its_source_hash(tmp_path: Path) -> None:
    built = build(LOCK_STEP_SOURCE, tmp_path)
    assert built.name.startswith("lockstep-") and built.suffix == ".so"
    assert build(LOCK_STEP_SOURCE, tmp_path) == built
