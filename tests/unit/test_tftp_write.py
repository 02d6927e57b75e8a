"""The write-transfer state machine: a fake clock, a scripted client and a lossy link."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from boothop.server.tftp import packet
from boothop.server.tftp.negotiation import TransferParams
from boothop.server.tftp.packet import Ack, ErrorCode
from boothop.server.tftp.sink import BytesSink, NetasciiSink, SinkError
from boothop.server.tftp.source import BytesSource, NetasciiSource
from boothop.server.tftp.transfer import Ignored, Outcome, ReadTransfer
from boothop.server.tftp.write import WriteTransfer

PEER = ("10.65.1.5", 40000)
SERVER = ("10.65.2.10", 50000)


def make(
    oack: dict[str, str] | None = None, max_size: int = 1 << 30, sink: BytesSink | None = None,
    **params: object,
) -> tuple[WriteTransfer, BytesSink]:
    sink = sink or BytesSink()
    transfer = WriteTransfer(PEER, sink, TransferParams(**params), oack or {}, max_size)  # type: ignore[arg-type]
    return transfer, sink


def data(block: int, payload: bytes) -> bytes:
    return packet.encode_data(block, payload)


def acks(sends: list[bytes]) -> list[int]:
    out = []
    for send in sends:
        pkt = packet.decode(send)
        assert isinstance(pkt, Ack), pkt
        out.append(pkt.block)
    return out


def error_code(sends: list[bytes]) -> int:
    [send] = sends
    pkt = packet.decode(send)
    assert isinstance(pkt, packet.Error)
    return pkt.code


# -- the lock-step exchange -------------------------------------------------------------------
def test_rfc2347_without_options_the_wrq_is_answered_with_ack_0() -> None:
    transfer, _ = make()
    assert acks(transfer.start(0.0)) == [0]


def test_rfc2347_accepted_options_are_answered_with_an_oack_and_data_1_follows() -> None:
    transfer, sink = make({"blksize": "16", "tsize": "20"}, blksize=16)
    [oack] = transfer.start(0.0)
    assert packet.decode(oack) == packet.OptionAck({"blksize": "16", "tsize": "20"})
    assert acks(transfer.receive(data(1, b"a" * 16), 0.1)) == [1]
    assert acks(transfer.receive(data(2, b"b" * 4), 0.2)) == [2]
    assert transfer.outcome is Outcome.COMPLETED
    assert sink.data == b"a" * 16 + b"b" * 4 and sink.committed and not sink.aborted


def test_lockstep_upload_acks_every_block_exactly_once() -> None:
    payload = bytes(range(256)) * 10  # 2560 octets: five full blocks and an empty one
    transfer, sink = make()
    sent = transfer.start(0.0)
    for i in range(0, len(payload) + 1, 512):
        block = i // 512 + 1
        reply = transfer.receive(data(block, payload[i : i + 512]), 0.01 * block)
        assert acks(reply) == [block]
        sent += reply
    assert len(sent) == 7  # ACK 0 and one ACK per block: no duplicate ever sent
    assert bytes(sink.data) == payload and sink.committed


def test_rfc1350_short_block_ends_the_transfer_and_commits() -> None:
    # RFC 1350 §6: "A data packet of less than 512 bytes signals termination of a transfer."
    transfer, sink = make()
    transfer.start(0.0)
    transfer.receive(data(1, b"x" * 512), 0.1)
    assert not sink.committed
    transfer.receive(data(2, b""), 0.2)
    assert sink.committed and transfer.outcome is Outcome.COMPLETED


def test_empty_upload_is_one_empty_block() -> None:
    transfer, sink = make()
    transfer.start(0.0)
    assert acks(transfer.receive(data(1, b""), 0.1)) == [1]
    assert sink.committed and sink.data == b""


# -- loss and duplicates ----------------------------------------------------------------------
def test_duplicate_data_is_reacked_and_not_written_twice() -> None:
    # The ACK of block 1 was lost: the client sends block 1 again.
    transfer, sink = make()
    transfer.start(0.0)
    assert acks(transfer.receive(data(1, b"1" * 512), 0.1)) == [1]
    assert acks(transfer.receive(data(1, b"1" * 512), 1.1)) == [1]
    assert acks(transfer.receive(data(1, b"1" * 512), 2.1)) == [1]
    assert transfer.ignored[Ignored.DUPLICATE_DATA] == 2
    assert acks(transfer.receive(data(2, b"2"), 2.2)) == [2]
    assert sink.data == b"1" * 512 + b"2"


def test_block_after_a_gap_is_not_written_and_draws_an_ack_of_the_last_good_block() -> None:
    transfer, sink = make()
    transfer.start(0.0)
    transfer.receive(data(1, b"1" * 512), 0.1)
    assert acks(transfer.receive(data(3, b"3" * 512), 0.2)) == [1]
    assert transfer.ignored[Ignored.OUT_OF_ORDER] == 1
    assert sink.data == b"1" * 512


def test_lost_data_retransmits_the_last_ack_on_timeout() -> None:
    transfer, _ = make(timeout=2.0)
    transfer.start(0.0)
    assert acks(transfer.receive(data(1, b"1" * 512), 1.0)) == [1]
    assert transfer.next_deadline() == 3.0
    assert transfer.on_timer(2.9) == []
    assert acks(transfer.on_timer(3.0)) == [1]
    assert transfer.retransmissions == 1


def test_lost_oack_is_retransmitted_on_timeout() -> None:
    transfer, _ = make({"blksize": "1024"}, blksize=1024, timeout=1.0)
    transfer.start(5.0)
    [again] = transfer.on_timer(6.0)
    assert packet.decode(again) == packet.OptionAck({"blksize": "1024"})


def test_retry_limit_times_out_and_discards_the_partial_file() -> None:
    transfer, sink = make(timeout=1.0, retries=3)
    transfer.start(0.0)
    transfer.receive(data(1, b"1" * 512), 0.5)
    for _ in range(3):
        assert acks(transfer.on_timer(transfer.next_deadline())) == [1]  # type: ignore[arg-type]
    assert transfer.on_timer(transfer.next_deadline()) == []  # type: ignore[arg-type]
    assert transfer.outcome is Outcome.TIMED_OUT and transfer.done
    assert sink.aborted and not sink.committed
    assert transfer.next_deadline() is None


def test_progress_resets_the_retry_count_but_duplicates_do_not() -> None:
    transfer, _ = make(timeout=1.0, retries=2)
    transfer.start(0.0)
    transfer.on_timer(1.0)
    transfer.on_timer(2.0)
    transfer.receive(data(1, b"1" * 512), 2.5)  # progress: two fresh retries
    transfer.on_timer(3.5)
    transfer.receive(data(1, b"1" * 512), 3.6)  # a duplicate does not re-arm the timer
    assert transfer.next_deadline() == 4.5
    transfer.on_timer(4.5)
    assert not transfer.done
    transfer.on_timer(5.5)
    assert transfer.outcome is Outcome.TIMED_OUT


# -- RFC 7440 windows -------------------------------------------------------------------------
def test_rfc7440_the_receiver_acks_only_the_last_block_of_each_window() -> None:
    transfer, sink = make({"windowsize": "4"}, blksize=8, windowsize=4)
    transfer.start(0.0)
    replies = [transfer.receive(data(n, bytes([n]) * 8), 0.0) for n in range(1, 9)]
    assert [acks(r) for r in replies] == [[], [], [], [4], [], [], [], [8]]
    assert acks(transfer.receive(data(9, b"end"), 0.0)) == [9]  # the short final window
    assert sink.committed and len(sink.data) == 67


def test_rfc7440_sequence_error_acks_the_last_block_correctly_received_once_per_window() -> None:
    transfer, sink = make({"windowsize": "4"}, blksize=8, windowsize=4)
    transfer.start(0.0)
    assert transfer.receive(data(1, b"1" * 8), 0.0) == []
    # Block 2 is lost; 3 and 4 arrive: one ACK 1 (restart the window at 2), not two.
    assert acks(transfer.receive(data(3, b"3" * 8), 0.0)) == [1]
    assert transfer.receive(data(4, b"4" * 8), 0.0) == []
    # The sender restarts at 2: a new window 2..5 counts from the ACK.
    for n in (2, 3, 4):
        assert transfer.receive(data(n, bytes([48 + n]) * 8), 0.1) == []
    assert acks(transfer.receive(data(5, b"5" * 8), 0.1)) == [5]
    assert sink.data == b"".join(bytes([48 + n]) * 8 for n in range(1, 6))


def test_rfc7440_retransmitted_window_draws_one_ack_per_window() -> None:
    transfer, _ = make({"windowsize": "4"}, blksize=8, windowsize=4)
    transfer.start(0.0)
    for n in range(1, 5):
        transfer.receive(data(n, b"x" * 8), 0.0)
    # ACK 4 was lost; the sender times out and sends blocks 1-4 again.
    replies = [transfer.receive(data(n, b"x" * 8), 1.0) for n in range(1, 5)]
    assert [acks(r) for r in replies] == [[4], [], [], []]
    assert transfer.ignored[Ignored.DUPLICATE_DATA] == 4


def test_rfc7440_receiver_timeout_inside_a_window_acks_the_last_block_in_order() -> None:
    transfer, _ = make({"windowsize": "8"}, blksize=8, windowsize=8, timeout=1.0)
    transfer.start(0.0)
    for n in range(1, 4):
        transfer.receive(data(n, b"x" * 8), 0.1 * n)
    assert transfer.next_deadline() == pytest.approx(1.3)  # re-armed by each block in order
    assert acks(transfer.on_timer(1.3)) == [3]


def test_block_numbers_roll_over_from_65535_to_0() -> None:
    blksize = 8
    payload = bytes(range(256)) * ((blksize * 70000) // 256) + b"tail"
    transfer, sink = make(blksize=blksize)
    transfer.start(0.0)
    wire_block = 0
    for i in range(0, len(payload) + 1, blksize):
        wire_block = (wire_block + 1) & 0xFFFF
        reply = transfer.receive(data(wire_block, payload[i : i + blksize]), 0.0)
        assert acks(reply) == [wire_block]
        if transfer.done or transfer.outcome:
            break
    assert transfer.outcome is Outcome.COMPLETED
    assert bytes(sink.data) == payload
    assert transfer.ignored == dict.fromkeys(Ignored, 0)


def test_after_rollover_old_and_future_blocks_are_told_apart() -> None:
    transfer, sink = make(blksize=8)
    transfer.start(0.0)
    for n in range(1, 65536 + 3):  # blocks 1..65535, 0, 1, 2
        transfer.receive(data(n & 0xFFFF, b"x" * 8), 0.0)
    assert acks(transfer.receive(data(65535, b"x" * 8), 0.0)) == [2]
    assert transfer.ignored[Ignored.DUPLICATE_DATA] == 1
    assert acks(transfer.receive(data(5, b"x" * 8), 0.0)) == [2]  # after a gap
    assert transfer.ignored[Ignored.OUT_OF_ORDER] == 1
    assert len(sink.data) == 8 * 65538


# -- limits and failures ----------------------------------------------------------------------
def test_upload_beyond_max_write_size_gets_error_3_and_is_discarded() -> None:
    transfer, sink = make(max_size=1000)
    transfer.start(0.0)
    transfer.receive(data(1, b"x" * 512), 0.1)
    reply = transfer.receive(data(2, b"x" * 512), 0.2)
    assert error_code(reply) == ErrorCode.DISK_FULL
    assert transfer.outcome is Outcome.LOCAL_ERROR and transfer.done
    assert sink.aborted and not sink.committed and len(sink.data) == 512


def test_upload_of_exactly_max_write_size_is_accepted() -> None:
    transfer, sink = make(max_size=1000)
    transfer.start(0.0)
    transfer.receive(data(1, b"x" * 512), 0.1)
    assert acks(transfer.receive(data(2, b"x" * 488), 0.2)) == [2]
    assert sink.committed


class FailingSink(BytesSink):
    def __init__(
        self, on_write: SinkError | None = None, on_commit: SinkError | None = None
    ) -> None:
        super().__init__()
        self._on_write, self._on_commit = on_write, on_commit

    def write(self, data: bytes) -> None:
        if self._on_write:
            raise self._on_write
        super().write(data)

    def commit(self) -> None:
        if self._on_commit:
            raise self._on_commit
        super().commit()


def test_disk_full_while_writing_is_sent_as_error_3() -> None:
    sink = FailingSink(on_write=SinkError(ErrorCode.DISK_FULL, "disk full or allocation exceeded"))
    transfer, _ = make(sink=sink)
    transfer.start(0.0)
    assert error_code(transfer.receive(data(1, b"x"), 0.1)) == ErrorCode.DISK_FULL
    assert sink.aborted and transfer.outcome is Outcome.LOCAL_ERROR


def test_file_that_appeared_during_the_upload_gets_error_6_instead_of_the_final_ack() -> None:
    sink = FailingSink(on_commit=SinkError(ErrorCode.FILE_EXISTS, "file already exists"))
    transfer, _ = make(sink=sink)
    transfer.start(0.0)
    assert error_code(transfer.receive(data(1, b"x"), 0.1)) == ErrorCode.FILE_EXISTS
    assert transfer.done and transfer.outcome is Outcome.LOCAL_ERROR


def test_block_larger_than_the_block_size_is_an_illegal_operation() -> None:
    transfer, sink = make(blksize=512)
    transfer.start(0.0)
    reply = transfer.receive(data(1, b"x" * 513), 0.1)
    assert error_code(reply) == ErrorCode.ILLEGAL_OPERATION
    assert transfer.outcome is Outcome.PROTOCOL_ERROR and sink.aborted


@pytest.mark.parametrize("stray", [packet.encode_ack(1), packet.encode_oack({"blksize": "8"})])
def test_anything_but_data_from_the_client_is_an_illegal_operation(stray: bytes) -> None:
    transfer, sink = make()
    transfer.start(0.0)
    assert error_code(transfer.receive(stray, 0.1)) == ErrorCode.ILLEGAL_OPERATION
    assert sink.aborted


def test_client_error_ends_the_upload_and_discards_it() -> None:
    transfer, sink = make()
    transfer.start(0.0)
    transfer.receive(data(1, b"x" * 512), 0.1)
    assert transfer.receive(packet.encode_error(0, "cancelled"), 0.2) == []
    assert transfer.outcome is Outcome.CLIENT_ERROR and sink.aborted and not sink.committed


def test_rfc1350_wrong_tid_gets_error_5_and_the_upload_goes_on() -> None:
    transfer, sink = make()
    transfer.start(0.0)
    reply = transfer.stray()  # the shell's answer to DATA 1 from ("10.65.1.6", 40000)
    assert packet.decode(reply) == packet.Error(ErrorCode.UNKNOWN_TID, "unknown transfer ID")
    assert sink.data == b"" and not transfer.done
    assert acks(transfer.receive(data(1, b"good"), 0.2)) == [1]
    assert sink.data == b"good"


@pytest.mark.parametrize("garbage", [b"", b"\x00", b"\x00\x03\x00", b"\x00\x09abcd"])
def test_malformed_packets_are_counted_and_ignored(garbage: bytes) -> None:
    transfer, _ = make()
    transfer.start(0.0)
    assert transfer.receive(garbage, 0.1) == []
    assert transfer.ignored[Ignored.MALFORMED] == 1 and not transfer.done


@given(st.lists(st.binary(max_size=40), max_size=20))
def test_any_datagrams_never_raise(datagrams: list[bytes]) -> None:
    transfer, _ = make(blksize=8, windowsize=2)
    transfer.start(0.0)
    for i, datagram in enumerate(datagrams):
        transfer.receive(datagram, float(i))
        transfer.on_timer(float(i))


def test_close_discards_an_unfinished_upload_but_not_a_finished_one() -> None:
    transfer, sink = make()
    transfer.start(0.0)
    transfer.receive(data(1, b"x" * 512), 0.1)
    transfer.close()
    assert sink.aborted
    finished, kept = make()
    finished.start(0.0)
    finished.receive(data(1, b"x"), 0.1)
    finished.close()
    assert kept.committed and not kept.aborted


# -- the end: dallying ------------------------------------------------------------------------
def test_rfc1350_dallying_retransmits_the_final_ack_for_a_duplicate_last_data() -> None:
    # RFC 1350 §6: the host sending the final ACK "will wait for a while before terminating in
    # order to retransmit the final ACK if it has been lost".
    transfer, sink = make(timeout=1.0, retries=2)
    transfer.start(0.0)
    transfer.receive(data(1, b"x" * 512), 0.1)
    assert acks(transfer.receive(data(2, b"end"), 0.2)) == [2]
    assert transfer.outcome is Outcome.COMPLETED and sink.committed
    assert not transfer.done  # dallying
    assert acks(transfer.receive(data(2, b"end"), 1.2)) == [2]
    assert transfer.receive(data(1, b"x" * 512), 1.3) == []
    assert transfer.ignored[Ignored.AFTER_END] == 1
    assert sink.data == b"x" * 512 + b"end"
    assert transfer.next_deadline() == pytest.approx(3.2)  # timeout * (retries + 1)
    assert transfer.on_timer(3.2) == [] and transfer.done
    assert transfer.next_deadline() is None


# -- a real sender over a lossy, reordering link ----------------------------------------------
def simulate(
    payload: bytes, *, blksize: int, windowsize: int, loss: float, seed: int, jitter: float = 0.0
) -> tuple[WriteTransfer, BytesSink, ReadTransfer, int]:
    """The server's WriteTransfer against our RFC 7440 sender (ReadTransfer) as the client."""
    rng = random.Random(seed)
    params = TransferParams(blksize, windowsize, 1.0, 10)
    server, sink = make(blksize=blksize, windowsize=windowsize, timeout=1.0, retries=10)
    client = ReadTransfer(SERVER, BytesSource(payload), params, {})
    flight: list[tuple[float, int, bool, bytes]] = []  # (arrival, order, to the server, datagram)
    sent = 0

    def post(sends: list[bytes], to_server: bool, now: float) -> None:
        nonlocal sent
        for send in sends:
            sent += 1
            if rng.random() >= loss:
                flight.append((now + 0.001 + rng.random() * jitter, sent, to_server, send))

    post(server.start(0.0), False, 0.0)  # ACK 0 ...
    post(client.start(0.0), True, 0.0)  # ... on which the client sends its first window
    for _ in range(1_000_000):
        deadlines = [d for d in (server.next_deadline(), client.next_deadline()) if d is not None]
        if not flight and not deadlines:
            break
        now = min([f[0] for f in flight] + deadlines)
        flight.sort()
        while flight and flight[0][0] <= now:
            _, _, to_server, datagram = flight.pop(0)
            if to_server:
                post(server.receive(datagram, now), False, now)
            else:
                post(client.receive(datagram, now), True, now)
        post(server.on_timer(now), False, now)
        post(client.on_timer(now), True, now)
    return server, sink, client, sent


@pytest.mark.parametrize("windowsize", [1, 4, 16])
@pytest.mark.parametrize(("loss", "jitter"), [(0.0, 0.0), (0.1, 0.0), (0.25, 0.0), (0.1, 0.01)])
@pytest.mark.parametrize("seed", [1, 2])
def test_upload_survives_loss_and_reordering(
    windowsize: int, loss: float, jitter: float, seed: int
) -> None:
    payload = random.Random(seed).randbytes(64 * 100 + 17)
    server, sink, client, sent = simulate(payload, blksize=64, windowsize=windowsize, loss=loss,
                                          seed=seed, jitter=jitter)
    assert server.outcome is Outcome.COMPLETED and client.outcome is Outcome.COMPLETED
    assert bytes(sink.data) == payload and sink.committed and not sink.aborted
    if loss:
        assert server.retransmissions + client.retransmissions > 0
    elif windowsize == 1:
        assert sent == 2 * 101 + 1  # lock-step: one DATA and one ACK per block, plus ACK 0


# -- netascii ---------------------------------------------------------------------------------
def test_netascii_sink_turns_cr_lf_into_lf_and_cr_nul_into_cr() -> None:
    raw = BytesSink()
    sink = NetasciiSink(raw)
    sink.write(b"a\r\nb\r")
    sink.write(b"\0c\r")
    sink.write(b"\n")
    sink.commit()
    assert raw.data == b"a\nb\rc\n" and raw.committed


def test_netascii_sink_writes_a_trailing_bare_cr_as_it_is() -> None:
    raw = BytesSink()
    sink = NetasciiSink(raw)
    sink.write(b"end\r")
    sink.commit()
    assert raw.data == b"end\r"


@given(st.binary(max_size=300), st.lists(st.integers(1, 20), min_size=1, max_size=40))
def test_netascii_sink_undoes_netascii_source_across_any_block_boundaries(
    original: bytes, cuts: list[int]
) -> None:
    encoded = NetasciiSource(BytesSource(original), chunk=7).read(10_000)
    raw = BytesSink()
    sink = NetasciiSink(raw)
    position = 0
    for cut in cuts * (len(encoded) // max(1, sum(cuts)) + 1):
        sink.write(encoded[position : position + cut])
        position += cut
        if position >= len(encoded):
            break
    sink.commit()
    assert bytes(raw.data) == original


def test_an_upload_kept_alive_past_its_time_limit_ends_with_an_error() -> None:
    sink = BytesSink()
    transfer, _ = make(sink=sink, timeout=5.0, max_time=12.0)
    transfer.start(0.0)
    for block, now in ((1, 4.0), (2, 8.0), (3, 11.5)):
        assert acks(transfer.receive(data(block, b"u" * 512), now)) == [block]
    assert transfer.next_deadline() == 12.0
    assert error_code(transfer.on_timer(12.0)) == ErrorCode.NOT_DEFINED
    assert transfer.outcome is Outcome.TIME_LIMIT and sink.aborted


def test_the_dally_after_the_final_ack_is_not_cut_by_the_time_limit() -> None:
    transfer, _ = make(timeout=1.0, retries=2, max_time=3.0)
    transfer.start(0.0)
    assert acks(transfer.receive(data(1, b"end"), 2.5)) == [1]
    assert transfer.outcome is Outcome.COMPLETED and transfer.next_deadline() == 5.5
    assert transfer.on_timer(3.0) == [] and not transfer.done
