"""The read-transfer state machine, driven with a fake clock and a simulated client."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from boothop.server.tftp import packet
from boothop.server.tftp.negotiation import TransferParams
from boothop.server.tftp.packet import Data, ErrorCode
from boothop.server.tftp.source import BytesSource
from boothop.server.tftp.transfer import Ignored, Outcome, ReadTransfer

PEER = ("10.61.1.5", 40000)


def make(data: bytes, oack: dict[str, str] | None = None, **params: object) -> ReadTransfer:
    return ReadTransfer(PEER, BytesSource(data), TransferParams(**params), oack or {})  # type: ignore[arg-type]


def datas(sends: list) -> list[Data]:
    out = []
    for send in sends:
        pkt = packet.decode(send)
        assert isinstance(pkt, Data)
        out.append(pkt)
    return out


def run_client(transfer: ReadTransfer, now: float = 0.0) -> bytes:
    """A lossless client that acks the last block of each window it receives."""
    received = bytearray()
    sends = transfer.start(now)
    while sends:
        blocks = datas(sends)
        for block in blocks:
            received += block.payload
        sends = transfer.receive(packet.encode_ack(blocks[-1].block), now)
    assert transfer.outcome is Outcome.COMPLETED
    return bytes(received)


def test_small_file_is_one_short_block() -> None:
    transfer = make(b"hello")
    [first] = datas(transfer.start(0.0))
    assert first == Data(1, b"hello")
    assert transfer.receive(packet.encode_ack(1), 0.1) == []
    assert transfer.outcome is Outcome.COMPLETED
    assert transfer.next_deadline() is None


def test_rfc1350_exact_multiple_of_blksize_ends_with_an_empty_block() -> None:
    # RFC 1350 §6: "A data packet of less than 512 bytes signals termination of a transfer."
    transfer = make(b"x" * 1024)
    assert [d.block for d in datas(transfer.start(0.0))] == [1]
    assert [d.block for d in datas(transfer.receive(packet.encode_ack(1), 0))] == [2]
    last = datas(transfer.receive(packet.encode_ack(2), 0))
    assert last == [Data(3, b"")]
    transfer.receive(packet.encode_ack(3), 0)
    assert transfer.outcome is Outcome.COMPLETED


def test_empty_file_is_one_empty_block() -> None:
    transfer = make(b"")
    assert datas(transfer.start(0.0)) == [Data(1, b"")]


def test_oack_is_sent_first_and_ack_0_starts_data() -> None:
    transfer = make(b"abc", {"blksize": "1024"}, blksize=1024)
    [oack] = transfer.start(0.0)
    assert packet.decode(oack) == packet.OptionAck({"blksize": "1024"})
    # An ACK other than 0 while the OACK is outstanding changes nothing.
    assert transfer.receive(packet.encode_ack(1), 0.1) == []
    assert transfer.ignored[Ignored.STALE_ACK] == 1
    assert datas(transfer.receive(packet.encode_ack(0), 0.2)) == [Data(1, b"abc")]


def test_oack_is_retransmitted_on_timeout() -> None:
    transfer = make(b"abc", {"tsize": "3"}, timeout=2.0)
    transfer.start(10.0)
    assert transfer.next_deadline() == 12.0
    assert transfer.on_timer(11.9) == []
    [again] = transfer.on_timer(12.0)
    assert packet.decode(again) == packet.OptionAck({"tsize": "3"})


def test_client_refusing_the_oack_ends_the_transfer() -> None:
    transfer = make(b"abc", {"blksize": "1024"}, blksize=1024)
    transfer.start(0.0)
    transfer.receive(packet.encode_error(ErrorCode.OPTION_NEGOTIATION, "no"), 0.1)
    assert transfer.outcome is Outcome.CLIENT_ERROR


def test_lost_data_is_retransmitted_after_the_timeout() -> None:
    transfer = make(b"y" * 600, timeout=1.0)
    first = transfer.start(0.0)
    assert transfer.on_timer(0.5) == []
    assert transfer.on_timer(1.0) == first
    assert transfer.retransmissions == 1
    # An ACK resets the retry count: the next block gets its own full set of retries.
    second = datas(transfer.receive(packet.encode_ack(1), 1.2))
    assert second == [Data(2, b"y" * 88)]
    assert transfer.next_deadline() == pytest.approx(2.2)


def test_retry_limit_times_the_transfer_out() -> None:
    transfer = make(b"z" * 2000, timeout=1.0, retries=3)
    transfer.start(0.0)
    now = 0.0
    for _ in range(3):
        now = transfer.next_deadline()  # type: ignore[assignment]
        assert len(transfer.on_timer(now)) == 1
    assert transfer.on_timer(transfer.next_deadline()) == []  # type: ignore[arg-type]
    assert transfer.outcome is Outcome.TIMED_OUT
    assert transfer.next_deadline() is None


def test_an_ack_gives_the_next_window_its_own_retries() -> None:
    transfer = make(b"z" * 2000, timeout=1.0, retries=1)
    transfer.start(0.0)
    assert len(transfer.on_timer(1.0)) == 1  # block 1's one retry
    assert datas(transfer.receive(packet.encode_ack(1), 1.5))[0].block == 2
    assert len(transfer.on_timer(2.5)) == 1  # block 2's own retry, not a time-out
    assert transfer.outcome is None


def test_bytes_sent_counts_the_short_block_and_a_window_sent_before_the_end() -> None:
    complete = make(b"q" * 25, blksize=10)
    run_client(complete)
    assert complete.bytes_sent == 25
    aborted = make(b"q" * 100, blksize=10, windowsize=2, retries=0)
    aborted.start(0.0)  # blocks 1 and 2 sent, 3 and 4 read ahead
    assert aborted.on_timer(1.0) == [] and aborted.outcome is Outcome.TIMED_OUT
    assert aborted.bytes_sent == 20


def test_rfc1123_duplicate_ack_does_not_resend_data() -> None:
    # RFC 1123 §4.2.3.1: the sender "must never resend the current DATA packet on receipt of a
    # duplicate ACK" (Sorcerer's Apprentice Syndrome).
    transfer = make(b"q" * 2000)
    transfer.start(0.0)
    assert datas(transfer.receive(packet.encode_ack(1), 0.1))[0].block == 2
    assert transfer.receive(packet.encode_ack(1), 0.2) == []
    assert transfer.receive(packet.encode_ack(1), 0.3) == []
    assert transfer.ignored[Ignored.DUPLICATE_ACK] == 2
    assert datas(transfer.receive(packet.encode_ack(2), 0.4))[0].block == 3


def test_ack_from_the_future_is_ignored() -> None:
    transfer = make(b"q" * 2000)
    transfer.start(0.0)
    assert transfer.receive(packet.encode_ack(7), 0.1) == []
    assert transfer.ignored[Ignored.STALE_ACK] == 1


def acknowledge(transfer: ReadTransfer, block: int, now: float, shell_way: bool) -> list[bytes]:
    """The peer's ACK of ``block``, given to ``receive``, or the shell's way: the ACK ``expect``
    announced, answered with what it announced, then ``window_mover``'s move (in lock-step,
    not ``window_acked``)."""
    ack = packet.encode_ack(block)
    if not shell_way:
        return transfer.receive(ack, now)
    window_ack, following, _ = transfer.expect()
    assert window_ack == ack
    transfer.window_mover()(now)
    return following


@pytest.mark.parametrize("shell_way", [False, True])
def test_block_numbers_roll_over_from_65535_to_0(shell_way: bool) -> None:
    blksize = 8
    data = bytes(range(256)) * ((blksize * 70000) // 256) + b"tail"
    transfer = make(data, blksize=blksize)
    seen: list[int] = []
    received = bytearray()
    sends = transfer.start(0.0)
    while sends:
        [block] = datas(sends)
        seen.append(block.block)
        received += block.payload
        sends = acknowledge(transfer, block.block, 0.0, shell_way)
    assert transfer.outcome is Outcome.COMPLETED
    assert bytes(received) == data
    index = seen.index(65535)
    assert seen[index + 1 : index + 3] == [0, 1]


@pytest.mark.parametrize("shell_way", [False, True])
def test_each_block_is_retransmitted_retries_times(shell_way: bool) -> None:
    """The retry count is per block: the ACK of a block retransmitted once gives the next
    block ``retries`` retransmissions again."""
    transfer = make(b"r" * 20, blksize=8, timeout=1.0, retries=2)
    first = transfer.start(0.0)
    assert transfer.on_timer(1.0) == first and transfer.on_timer(2.0) == first
    second = acknowledge(transfer, 1, 2.5, shell_way)
    assert transfer.on_timer(3.5) == second and transfer.on_timer(4.5) == second
    assert transfer.on_timer(5.5) == [] and transfer.outcome is Outcome.TIMED_OUT


def test_windowsize_sends_a_window_and_slides_on_its_last_ack() -> None:
    data = bytes(range(100))
    transfer = make(data, {"windowsize": "4"}, blksize=10, windowsize=4)
    transfer.start(0.0)
    first = datas(transfer.receive(packet.encode_ack(0), 0.0))
    assert [d.block for d in first] == [1, 2, 3, 4]
    second = datas(transfer.receive(packet.encode_ack(4), 0.0))
    assert [d.block for d in second] == [5, 6, 7, 8]


def test_rfc7440_partial_ack_restarts_the_window_after_the_acked_block() -> None:
    transfer = make(bytes(100), {"windowsize": "4"}, blksize=10, windowsize=4)
    transfer.start(0.0)
    transfer.receive(packet.encode_ack(0), 0.0)
    # Block 3 was lost: the client acknowledges 2, the last block it received in order.
    again = datas(transfer.receive(packet.encode_ack(2), 0.1))
    assert [d.block for d in again] == [3, 4, 5, 6]


@settings(max_examples=200, deadline=None)
@given(size=st.integers(0, 200), blksize=st.sampled_from([8, 10, 16]),
       windowsize=st.integers(2, 5), kept=st.lists(st.integers(1, 5), max_size=40))
def test_rfc7440_partial_acks_still_deliver_the_whole_file_in_order(
    size: int, blksize: int, windowsize: int, kept: list[int]
) -> None:
    """A client that loses every block of a window after its first ``kept`` and acknowledges
    the last one it received in order gets each block once, in order, and the transfer ends."""
    data = bytes(range(256)) * 2
    transfer = make(data[:size], blksize=blksize, windowsize=windowsize, retries=100)
    losses, received = iter(kept), bytearray()
    sends = transfer.start(0.0)
    while sends:
        blocks = datas(sends)
        blocks = blocks[:next(losses, len(blocks))]
        for block in blocks:
            received += block.payload
        sends = transfer.receive(packet.encode_ack(blocks[-1].block), 0.0)
    assert transfer.outcome is Outcome.COMPLETED
    assert bytes(received) == data[:size]
    assert transfer.bytes_sent == size


def test_windowed_transfer_delivers_the_whole_file() -> None:
    data = bytes(range(256)) * 40 + b"end"
    transfer = make(data, {"windowsize": "8"}, blksize=64, windowsize=8)
    transfer.start(0.0)
    received = bytearray()
    sends = transfer.receive(packet.encode_ack(0), 0.0)
    while sends:
        blocks = datas(sends)
        received += b"".join(b.payload for b in blocks)
        sends = transfer.receive(packet.encode_ack(blocks[-1].block), 0.0)
    assert bytes(received) == data


def test_window_timeout_resends_the_whole_window() -> None:
    transfer = make(bytes(100), {"windowsize": "3"}, blksize=10, windowsize=3, timeout=1.0)
    transfer.start(0.0)
    first = transfer.receive(packet.encode_ack(0), 0.0)
    assert transfer.on_timer(1.0) == first


def test_rfc1350_wrong_tid_gets_error_5_and_the_transfer_goes_on() -> None:
    transfer = make(b"q" * 600)
    transfer.start(0.0)
    reply = transfer.stray()  # the shell's answer to an ACK 1 from ("10.61.1.5", 40001)
    assert packet.decode(reply) == packet.Error(ErrorCode.UNKNOWN_TID, "unknown transfer ID")
    assert transfer.ignored[Ignored.WRONG_TID] == 1 and not transfer.done
    assert datas(transfer.receive(packet.encode_ack(1), 0.2))[0].block == 2


def test_client_error_ends_the_transfer_silently() -> None:
    transfer = make(b"q" * 600)
    transfer.start(0.0)
    assert transfer.receive(packet.encode_error(0, "bye"), 0.1) == []
    assert transfer.outcome is Outcome.CLIENT_ERROR


def test_data_from_the_client_is_an_illegal_operation() -> None:
    transfer = make(b"q" * 600)
    transfer.start(0.0)
    [reply] = transfer.receive(packet.encode_data(1, b"no"), 0.1)
    assert packet.decode(reply).code == ErrorCode.ILLEGAL_OPERATION  # type: ignore[union-attr]
    assert transfer.outcome is Outcome.PROTOCOL_ERROR


@pytest.mark.parametrize("garbage", [b"", b"\x00", b"\x00\x04\x00", b"\x00\x09abcd"])
def test_malformed_packets_are_counted_and_ignored(garbage: bytes) -> None:
    transfer = make(b"q" * 600)
    transfer.start(0.0)
    assert transfer.receive(garbage, 0.1) == []
    assert transfer.ignored[Ignored.MALFORMED] == 1
    assert not transfer.done


def test_whole_file_with_default_params() -> None:
    data = bytes(range(256)) * 50
    assert run_client(make(data)) == data


def test_a_transfer_kept_alive_past_its_time_limit_ends_with_an_error() -> None:
    """A client that ACKs every block just before the timeout still loses its slot at
    max_time: the transfer ends with an ERROR and the outcome time_limit."""
    transfer = make(b"s" * 5000, timeout=5.0, max_time=12.0)
    block = datas(transfer.start(0.0))[0].block
    now = 0.0
    while transfer.next_deadline() != 12.0:
        now += 4.9
        assert now < 12.0
        block = datas(transfer.receive(packet.encode_ack(block), now))[0].block
    assert transfer.on_timer(11.9) == []
    [error] = transfer.on_timer(12.0)
    assert packet.decode(error) == packet.Error(ErrorCode.NOT_DEFINED,
                                                     "transfer time limit exceeded")
    assert transfer.outcome is Outcome.TIME_LIMIT and transfer.next_deadline() is None


class CountingSource(BytesSource):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.reads = 0

    def read(self, count: int) -> bytes:
        self.reads += 1
        return super().read(count)


def test_the_next_window_is_read_ahead_so_its_ack_reads_nothing() -> None:
    source = CountingSource(bytes(range(100)))
    transfer = ReadTransfer(PEER, source, TransferParams(blksize=10, windowsize=2), {})
    assert [d.block for d in datas(transfer.start(0.0))] == [1, 2]
    assert source.reads == 4  # the window sent, and the next read ahead
    window_ack, following, deadline = transfer.expect()
    assert source.reads == 4
    assert (window_ack, [d.block for d in datas(following)], deadline) == (
        packet.encode_ack(2), [3, 4], TransferParams().timeout)
    assert transfer.bytes_sent == 20  # sent, not read ahead
    window_ack, following, deadline = transfer.window_acked(0.1)  # blocks 3 and 4 were sent
    assert (window_ack, [d.block for d in datas(following)], deadline) == (
        packet.encode_ack(4), [5, 6], 0.1 + TransferParams().timeout)
    assert source.reads == 6  # read after the answer to the ACK is sent, not before


#: A client's moves: ACK the last block sent (as the shell gives it to the core, and once
#: through ``receive`` as past the deadline), an earlier one, a later one, from another port,
#: or let the timer run out.
MOVES = st.lists(st.sampled_from(["last", "last-receive", "back", "ahead", "stray", "timer"]),
                 max_size=60)


@settings(max_examples=200, deadline=None)
@given(size=st.integers(0, 130), blksize=st.sampled_from([8, 10, 16]),
       windowsize=st.integers(1, 4), oack=st.booleans(), moves=MOVES,
       retries=st.sampled_from([1, 2, 100]))
def test_window_acked_sends_what_the_decoded_ack_path_sends(
    size: int, blksize: int, windowsize: int, oack: bool, moves: list[str], retries: int
) -> None:
    """The shell's way (``expect`` between packets, the announced answer sent the moment the
    window's ACK arrives, then ``window_mover``'s call: in lock-step, not ``window_acked``)
    gives the same datagrams, counters, deadlines and outcome as the decoded ACK path (a padded
    ACK: RFC 1350 allows no padding, but the decoder reads the block number past it, so it
    bypasses the shortcut); the move announces what ``expect`` then does."""
    data = bytes(range(256)) * 2
    params = TransferParams(blksize=blksize, windowsize=windowsize, retries=retries)
    options = {"blksize": str(blksize)} if oack else {}
    fast = ReadTransfer(PEER, BytesSource(data[:size]), params, options)
    plain = ReadTransfer(PEER, BytesSource(data[:size]), params, options)
    last = 0 if oack else 1  # RFC 2347: ACK 0 acknowledges the OACK
    now = 0.0
    assert fast.start(now) == plain.start(now)
    for move in moves:
        now += 0.5
        window_ack, following, deadline = fast.expect()
        assert deadline == fast.next_deadline() == plain.next_deadline()
        if move == "timer":
            assert fast.on_timer(now + 1) == plain.on_timer(now + 1)
            continue
        if move == "stray":  # an ACK of the last block from another port
            assert fast.stray() == plain.stray()
            continue
        block = {"last": last, "last-receive": last, "back": last - 1, "ahead": last + 1}[move]
        ack = packet.encode_ack(block & 0xFFFF)
        expected = plain.receive(ack + b"\0", now)
        if ack == window_ack and move == "last":  # the shell sends following at once
            sent = list(following)
            assert fast.window_mover()(now) == fast.expect()
        else:
            sent = fast.receive(ack, now)
        assert sent == expected
        if sent:
            last = packet.decode(sent[-1]).block  # type: ignore[union-attr]
    assert (fast.outcome, fast.ignored, fast.bytes_sent, fast.next_deadline()) == (
        plain.outcome, plain.ignored, plain.bytes_sent, plain.next_deadline())
