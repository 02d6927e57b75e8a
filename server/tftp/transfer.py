"""The state machine of one read transfer (RFC 1350, with RFC 2347 OACK and RFC 7440 windows).

Pure: datagrams and ``now`` go in, the datagrams to send to the peer come out (plain bytes: no
object per block); ``next_deadline``/``on_timer`` drive retransmission. Block numbers are counted
without bound inside and sent modulo 65536, so a transfer rolls over from 65535 to 0 as tftp-hpa,
curl and iPXE expect.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable
from typing import NamedTuple

from . import packet
from .negotiation import TransferParams
from .packet import ACK, ACK_OPCODE, DATA, ErrorCode, pack_header
from .source import FileSource

Address = tuple[str, int]


@functools.cache
def _numbered() -> tuple[list[bytes], list[bytes]]:
    """The 4 octets that start the DATA and the ACK of every block number (RFC 1350 §5), built
    once, on the first read transfer (12 ms, 6 MB): a list's item per block where a struct pack
    built a bytes object (callgrind: some 950 of 10,000 instructions a lock-step block)."""
    numbers = range(65536)
    return [pack_header(DATA, n) for n in numbers], [pack_header(ACK, n) for n in numbers]


class Outcome(enum.Enum):
    COMPLETED = "completed"
    TIMED_OUT = "timed_out"
    CLIENT_ERROR = "client_error"
    PROTOCOL_ERROR = "protocol_error"
    #: We ended it with an error of our own: upload too large, disk full, file appeared meanwhile.
    LOCAL_ERROR = "local_error"
    #: It ran past tftp.max_transfer_time.
    TIME_LIMIT = "time_limit"


class Ignored(enum.Enum):
    """Datagrams a transfer counts and drops without changing state."""

    MALFORMED = "malformed"
    DUPLICATE_ACK = "duplicate_ack"
    STALE_ACK = "stale_ack"
    WRONG_TID = "wrong_tid"
    AFTER_END = "after_end"
    DUPLICATE_DATA = "duplicate_data"
    OUT_OF_ORDER = "out_of_order"


#: What the shell may do before its next call into a transfer's core (``expect``): the ACK
#: of the whole window (None while none is awaited), the datagrams that answer exactly that
#: datagram, and the next deadline (None: none).
Expectation = tuple[bytes | None, list[bytes], float | None]


class LockStep(NamedTuple):
    """Where a read transfer in lock-step stands, for a loop outside the core that serves the
    ACKs itself as ``ReadTransfer._block_acked`` would, reading the file on from where the
    core's source stands (``ReadTransfer.lock_stepped`` tells the core what it did)."""

    #: The internal number (unbounded) of the block in flight: its ACK is awaited.
    block: int
    #: The DATA read ahead: the answer to that ACK.
    ahead: bytes
    #: The source gave its short block: nothing more to read.
    ended: bool
    timeout: float
    #: The time limit, on the clock of ``now``.
    expires: float


class TimeLimited:
    """The total time limit both transfers share: a client that stays alive (ACKs or DATA in
    time, however slowly) must not hold its slot for ever. A finished upload's dally is not
    limited; it is bounded by the retransmission parameters."""

    params: TransferParams
    peer: Address
    outcome: Outcome | None
    ignored: dict[Ignored, int]
    _deadline: float | None
    _expires = float("inf")

    @property
    def done(self) -> bool:
        raise NotImplementedError

    def expect(self) -> Expectation:
        """Nothing is answered before the core sees it (``ReadTransfer`` announces its window's
        ACK); the next deadline."""
        return None, [], self.next_deadline()

    def window_acked(self, now: float) -> Expectation:
        """The ACK ``expect`` announced arrived and its answer is sent (a read transfer)."""
        raise NotImplementedError

    def window_mover(self) -> Callable[[float], Expectation]:
        """What the shell calls for each ACK ``expect`` announced: ``window_acked`` or the
        same move made faster."""
        return self.window_acked

    def _start_clock(self, now: float) -> None:
        self._expires = now + self.params.max_time

    def next_deadline(self) -> float | None:
        if self.outcome is not None:  # ended, or an upload's dally
            return None if self.done else self._deadline
        deadline = self._deadline
        return self._expires if deadline is None or deadline > self._expires else deadline

    def _over_time(self, now: float) -> list[bytes] | None:
        """The ERROR that ends a running transfer past its time limit, or None."""
        if self.outcome is not None or now < self._expires:
            return None
        return self._error(Outcome.TIME_LIMIT, ErrorCode.NOT_DEFINED,
                           "transfer time limit exceeded")

    def stray(self) -> bytes:
        """The answer to a datagram from another source (address and port) than the peer, to
        send to that source.

        RFC 1350 §4: "If a source TID does not match, the packet should be discarded ... An
        error packet should be sent to the source of the incorrect packet, while not disturbing
        the transfer." Only the count changes: the shell may call this from another thread."""
        self.ignored[Ignored.WRONG_TID] += 1
        return packet.encode_error(ErrorCode.UNKNOWN_TID, "unknown transfer ID")

    def _error(self, outcome: Outcome, code: ErrorCode, message: str) -> list[bytes]:
        self._stop(outcome)
        return [packet.encode_error(code, message)]

    def _stop(self, outcome: Outcome) -> None:
        raise NotImplementedError


class ReadTransfer(TimeLimited):
    def __init__(
        self,
        peer: Address,
        source: FileSource,
        params: TransferParams,
        oack: dict[str, str],
    ) -> None:
        self.peer = peer
        self.params = params
        self.source = source
        self._oack = packet.encode_oack(oack) if oack else None
        self._awaiting_oack_ack = bool(oack)
        self._blksize, self._windowsize, self._timeout = (
            params.blksize, params.windowsize, params.timeout)
        self._read = source.read
        self._headers, self._acks = _numbered()
        #: DATA sent and not yet acknowledged, in order.
        self._window: list[bytes] = []
        #: DATA read ahead of the window: the next window.
        self._ahead: list[bytes] = []
        #: DATA read ahead past the next window (after an ACK inside the window, RFC 7440).
        self._rest: list[bytes] = []
        self._base = 1  # internal number of the first unacknowledged block
        self._next_block = 1  # internal number of the next block to read
        self._eof = False  # the source gave its short block, or the transfer ended
        #: The short block's internal number and the octets it lacks (``bytes_sent``).
        self._last_block, self._shortfall = float("inf"), 0
        #: The ACK of the window's last block, which moves the whole window on: the packet of
        #: every block in lock-step, recognised by comparing bytes (None while none is awaited).
        self._window_ack: bytes | None = None
        self._deadline: float | None = None
        self._tries = 0
        self.outcome: Outcome | None = None
        self.ignored: dict[Ignored, int] = dict.fromkeys(Ignored, 0)
        self.retransmissions = 0

    @property
    def done(self) -> bool:
        return self.outcome is not None

    @property
    def bytes_sent(self) -> int:
        """File octets sent: every block before the window's end (``_stop`` moves the base past
        the window) is full but the short last one (a source gives fewer only at the end)."""
        sent = self._base - 1 + len(self._window)
        return sent * self._blksize - (self._shortfall if sent >= self._last_block else 0)

    def start(self, now: float) -> list[bytes]:
        self._start_clock(now)
        if self._oack is not None:
            self._deadline = now + self._timeout
            return [self._oack]
        return self._advance(0, now)

    def on_timer(self, now: float) -> list[bytes]:
        if self.done:
            return []
        over = self._over_time(now)
        if over is not None:
            return over
        if self._deadline is None or now < self._deadline:
            return []
        self._tries += 1
        if self._tries > self.params.retries:
            self._stop(Outcome.TIMED_OUT)
            return []
        self.retransmissions += 1
        pending = [self._oack] if self._awaiting_oack_ack and self._oack else list(self._window)
        self._deadline = now + self._timeout
        return pending

    def receive(self, data: bytes, now: float) -> list[bytes]:
        """A datagram from the peer (the shell gives one from anyone else to ``stray``)."""
        if data == self._window_ack:
            # The checks below pass for it and _on_ack would count the whole window acked.
            self.window_acked(now)
            return self._window
        if self.done:
            self.ignored[Ignored.AFTER_END] += 1
            return []
        if data[:2] == ACK_OPCODE and len(data) >= 4:
            # Read without building a packet object.
            return self._on_ack(int.from_bytes(data[2:4], "big"), now)
        try:
            pkt = packet.decode(data)
        except packet.TftpPacketError:
            self.ignored[Ignored.MALFORMED] += 1
            return []
        if isinstance(pkt, packet.Ack):
            return self._on_ack(pkt.block, now)
        if isinstance(pkt, packet.Error):
            # Includes RFC 2347's error 8: the client refused our OACK.
            self._stop(Outcome.CLIENT_ERROR)
            return []
        return self._error(Outcome.PROTOCOL_ERROR, ErrorCode.ILLEGAL_OPERATION, "expected an ACK")

    def expect(self) -> Expectation:
        """Read the next window while the peer is still answering this one (as tftpd-hpa's
        read_ahead does), and say what ``receive`` answers the ACK of the whole window with
        (the very list of the blocks read ahead) and the next deadline, until the next call
        into the core: the shell may send that answer the moment the ACK arrives, and then
        call ``window_acked``."""
        self._read_ahead()
        return self._window_ack, self._ahead, self.next_deadline()

    def window_acked(self, now: float) -> Expectation:
        """The ACK of the whole window arrived (``receive`` with it does this too) and the shell
        has sent the answer ``expect`` announced: move on, read the next window ahead and
        return what ``expect`` would."""
        window = self._ahead
        if not window:  # every block, the short one included, is acknowledged
            self._stop(Outcome.COMPLETED)
            return None, window, None
        self._base = base = self._base + len(self._window)
        self._tries = 0
        self._window = window
        ack = self._window_ack = self._acks[(base + len(window) - 1) & 0xFFFF]
        deadline = self._deadline = now + self._timeout
        ahead = self._ahead = self._rest
        self._rest = []
        self._read_ahead()
        return ack, ahead, deadline if deadline < self._expires else self._expires

    def window_mover(self) -> Callable[[float], Expectation]:
        """``window_acked``, or in lock-step (a window of one block, so no ACK inside it: RFC
        7440 §4's new window never starts there) ``_block_acked``, which moves the window with
        no window to split and no list to fill: 2,000 fewer instructions a block (callgrind)."""
        return self._block_acked if self._windowsize == 1 else self.window_acked

    def _block_acked(self, now: float) -> Expectation:
        """``window_acked`` in lock-step: the block read ahead is the window, the next block is
        read ahead."""
        window = self._ahead
        if not window:  # every block, the short one included, is acknowledged
            self._stop(Outcome.COMPLETED)
            return None, window, None
        block = self._next_block  # the one after the window's
        self._base = base = block - 1
        self._tries = 0
        self._window = window
        ack = self._window_ack = self._acks[base & 0xFFFF]
        deadline = self._deadline = now + self._timeout
        if self._eof:
            ahead = self._ahead = []
        else:
            # A local, not self._read(...): 3.11 does not specialise a method call on an
            # instance's attribute (a type and a dict lookup per call: 120 instructions a block).
            read = self._read
            payload = read(self._blksize)
            ahead = self._ahead = [self._headers[block & 0xFFFF] + payload]
            self._next_block = block + 1
            if len(payload) < self._blksize:
                self._ends_at(block, len(payload))
        return ack, ahead, deadline if deadline < self._expires else self._expires

    def lock_step(self) -> LockStep | None:
        """What a loop outside the core needs to serve the next ACKs itself; None unless the
        transfer is in lock-step and awaits the ACK of its block in flight with the next block
        read ahead."""
        if self._windowsize != 1 or self._window_ack is None or not self._ahead:
            return None
        return LockStep(self._base, self._ahead[0], self._eof, self._timeout, self._expires)

    def lock_stepped(self, acked: int, now: float, window: bytes, ahead: bytes | None) -> None:
        """A loop outside the core served ``acked`` ACKs from ``lock_step`` on, as as many
        ``_block_acked`` would, the last at ``now``, and read the source on: ``window`` is the
        block in flight, ``ahead`` the block read after it (None: none yet, or the source
        ended)."""
        self._base = base = self._base + acked
        self._tries = 0
        self._window = [window]
        self._window_ack = self._acks[base & 0xFFFF]
        self._deadline = now + self._timeout
        self._ahead = [] if ahead is None else [ahead]
        self._next_block = base + 1 + len(self._ahead)
        for block, datagram in zip((base, base + 1), (window, ahead), strict=True):
            if not self._eof and datagram is not None and len(datagram) - 4 < self._blksize:
                self._ends_at(block, len(datagram) - 4)

    def close(self) -> None:
        """The shell is giving up on the transfer (shutdown): release the file."""
        if not self.done:
            self.source.close()

    # -- internals --------------------------------------------------------------------------
    def _on_ack(self, block: int, now: float) -> list[bytes]:
        if self._awaiting_oack_ack:
            # RFC 2347: the client acknowledges an OACK for a read request with ACK 0.
            if block != 0:
                self.ignored[Ignored.STALE_ACK] += 1
                return []
            self._awaiting_oack_ack = False
            return self._advance(0, now)
        acked = (block - (self._base - 1)) & 0xFFFF
        if acked == 0:
            # RFC 1123 §4.2.3.1: "the sender ... must never resend the current DATA packet on
            # receipt of a duplicate ACK" (the Sorcerer's Apprentice Syndrome).
            self.ignored[Ignored.DUPLICATE_ACK] += 1
            return []
        if acked > len(self._window):
            self.ignored[Ignored.STALE_ACK] += 1
            return []
        return self._advance(acked, now)

    def _advance(self, acked: int, now: float) -> list[bytes]:
        """The window's first ``acked`` blocks are acknowledged: the next window, or the end."""
        self._read_ahead()
        if acked == len(self._window):
            self.window_acked(now)
            return self._window
        # RFC 7440 §4: after an ACK for a block inside the window, "the sender ... starts a new
        # window" beginning with the block after the acknowledged one: the acknowledged blocks
        # are the window acked, the rest and as many blocks read ahead the next window.
        rest, ahead = self._window[acked:], self._ahead
        moved = self._windowsize - len(rest)
        self._window, self._rest = self._window[:acked], ahead[moved:]
        self._ahead = rest + ahead[:moved]
        self.window_acked(now)
        return self._window

    def _read_ahead(self) -> None:
        """Read blocks ahead of the window until a window's worth is ready, or the end."""
        ahead, blksize, block, headers, read = (
            self._ahead, self._blksize, self._next_block, self._headers, self._read)
        end = block + self._windowsize - len(ahead)
        while block < end and not self._eof:
            payload = read(blksize)
            ahead.append(headers[block & 0xFFFF] + payload)
            if len(payload) < blksize:
                self._ends_at(block, len(payload))
            block += 1
        self._next_block = block

    def _ends_at(self, block: int, octets: int) -> None:
        """The source gave its short block: ``block``, of ``octets`` octets, is the last."""
        self._eof, self._last_block, self._shortfall = True, block, self._blksize - octets

    def _stop(self, outcome: Outcome) -> None:
        self.outcome = outcome
        self._eof = True  # nothing more to read
        self._deadline = None
        self._window_ack = None
        self._base += len(self._window)  # sent: still counted in bytes_sent
        self._window, self._ahead, self._rest = [], [], []
        self.source.close()
