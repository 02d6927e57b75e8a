"""The state machine of one write transfer (RFC 1350, with RFC 2347 OACK and RFC 7440 windows).

Pure: datagrams and ``now`` go in, the datagrams to send to the peer come out;
``next_deadline``/``on_timer`` drive retransmission of the last ACK. The data goes to a
``FileSink``: committed after the last block, aborted on any failure, so a failed upload leaves no
file behind. Block numbers are counted without bound inside and compared modulo 65536, so uploads
roll over from 65535 to 0.
"""

from __future__ import annotations

from . import packet
from .negotiation import TransferParams
from .packet import ErrorCode
from .sink import FileSink, SinkError
from .transfer import Address, Ignored, Outcome, TimeLimited


class WriteTransfer(TimeLimited):
    def __init__(
        self,
        peer: Address,
        sink: FileSink,
        params: TransferParams,
        oack: dict[str, str],
        max_size: int,
    ) -> None:
        self.peer = peer
        self.params = params
        self._sink = sink
        self._max_size = max_size
        # RFC 2347: the server answers a WRQ with an OACK when it accepts options, else ACK 0.
        self._first = packet.encode_oack(oack) if oack else packet.encode_ack(0)
        self._expected = 1  # internal number of the next block to write
        self._in_window = 0  # in-order blocks since the last ACK sent
        self._out_of_sequence = 0  # out-of-sequence blocks since the last in-order one
        self._final_block: int | None = None
        self._dallying = False
        self._deadline: float | None = None
        self._tries = 0
        self.outcome: Outcome | None = None
        self.ignored: dict[Ignored, int] = dict.fromkeys(Ignored, 0)
        self.retransmissions = 0
        self.bytes_received = 0

    @property
    def done(self) -> bool:
        """Finished, including the dally after the final ACK; ``outcome`` is set before that."""
        return self.outcome is not None and not self._dallying

    def start(self, now: float) -> list[bytes]:
        self._start_clock(now)
        return self._arm(now, self._first)

    def on_timer(self, now: float) -> list[bytes]:
        if self.done:
            return []
        over = self._over_time(now)
        if over is not None:
            return over
        if self._deadline is None or now < self._deadline:
            return []
        if self._dallying:
            self._dallying = False
            self._deadline = None
            return []
        self._tries += 1
        if self._tries > self.params.retries:
            self._stop(Outcome.TIMED_OUT)
            return []
        self.retransmissions += 1
        if self._expected == 1:
            # Nothing arrived yet: most likely our OACK or ACK 0 was lost.
            return self._arm(now, self._first)
        return self._ack(now)

    def receive(self, data: bytes, now: float) -> list[bytes]:
        """A datagram from the peer (the shell gives one from anyone else to ``stray``)."""
        try:
            pkt = packet.decode(data)
        except packet.TftpPacketError:
            self.ignored[Ignored.MALFORMED] += 1
            return []
        if self.outcome is not None:
            if self._dallying and isinstance(pkt, packet.Data) and pkt.block == self._final_block:
                # RFC 1350 §6: the host sending the final ACK "will wait for a while before
                # terminating in order to retransmit the final ACK if it has been lost".
                self.retransmissions += 1
                return [packet.encode_ack(pkt.block)]
            self.ignored[Ignored.AFTER_END] += 1
            return []
        if isinstance(pkt, packet.Data):
            return self._on_data(pkt, now)
        if isinstance(pkt, packet.Error):
            # Includes RFC 2347's error 8: the client refused our OACK.
            self._stop(Outcome.CLIENT_ERROR)
            return []
        return self._error(Outcome.PROTOCOL_ERROR, ErrorCode.ILLEGAL_OPERATION, "expected DATA")

    def close(self) -> None:
        """The shell is giving up on the transfer (shutdown): discard a partial upload."""
        if self.outcome is None:
            self._sink.abort()

    # -- internals --------------------------------------------------------------------------
    def _on_data(self, pkt: packet.Data, now: float) -> list[bytes]:
        payload = pkt.payload
        if len(payload) > self.params.blksize:
            return self._error(Outcome.PROTOCOL_ERROR, ErrorCode.ILLEGAL_OPERATION,
                               "block larger than the block size")
        if pkt.block != self._expected & 0xFFFF:
            return self._out_of_sequence_block(pkt.block)
        if self.bytes_received + len(payload) > self._max_size:
            return self._error(Outcome.LOCAL_ERROR, ErrorCode.DISK_FULL,
                               "disk full or allocation exceeded")
        try:
            self._sink.write(payload)
        except SinkError as exc:
            return self._error(Outcome.LOCAL_ERROR, exc.code, exc.reason)
        self.bytes_received += len(payload)
        self._expected += 1
        self._out_of_sequence = 0
        self._tries = 0
        self._in_window += 1
        if len(payload) < self.params.blksize:
            return self._complete(pkt.block, now)
        if self._in_window >= self.params.windowsize:
            # RFC 7440 §4: the receiver sends "the ACK of the last data block of the window".
            return self._ack(now)
        # The sender is alive: wait a full timeout for the rest of the window.
        self._deadline = now + self.params.timeout
        return []

    def _out_of_sequence_block(self, block: int) -> list[bytes]:
        """A duplicate (lost ACK) or a block after a gap (lost DATA): nothing is written.

        RFC 7440 §4: on a sequence error the receiver SHOULD send "an ACK corresponding to the
        last data block correctly received", so the sender restarts its window after it. One such
        ACK per window's worth of stray blocks: a retransmitted window must not draw a burst of
        ACKs. With windowsize 1 every duplicate is re-acknowledged, as tftp-hpa does. The timer is
        not re-armed, so a peer that only repeats itself still runs out of retries.
        """
        behind = ((self._expected - 1 - block) & 0xFFFF) < 0x8000
        self.ignored[Ignored.DUPLICATE_DATA if behind else Ignored.OUT_OF_ORDER] += 1
        self._out_of_sequence += 1
        if (self._out_of_sequence - 1) % self.params.windowsize:
            return []
        self._in_window = 0
        return [packet.encode_ack((self._expected - 1) & 0xFFFF)]

    def _complete(self, block: int, now: float) -> list[bytes]:
        # RFC 1350 §6: "A data packet of less than 512 bytes signals termination of a transfer."
        # The file is renamed into place before the final ACK tells the client it is stored.
        try:
            self._sink.commit()
        except SinkError as exc:
            return self._error(Outcome.LOCAL_ERROR, exc.code, exc.reason)
        self.outcome = Outcome.COMPLETED
        self._final_block = block
        self._dallying = True
        # Dally as long as a peer with our parameters would keep retransmitting its last DATA.
        self._deadline = now + self.params.timeout * (self.params.retries + 1)
        return [packet.encode_ack(block)]

    def _ack(self, now: float) -> list[bytes]:
        self._in_window = 0
        return self._arm(now, packet.encode_ack((self._expected - 1) & 0xFFFF))

    def _arm(self, now: float, data: bytes) -> list[bytes]:
        self._deadline = now + self.params.timeout
        return [data]

    def _stop(self, outcome: Outcome) -> None:
        self.outcome = outcome
        self._deadline = None
        self._sink.abort()
