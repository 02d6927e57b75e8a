"""A read transfer's lock-step loop in C (server/tftp/lockstep.c), for the transfer's thread.

In lock-step the client waits for the server at every block, so the server's time per block is
the transfer's speed. The CPython loop (service.py) spends some 8,700 instructions a 512-octet
block besides its two system calls; the C loop serves the ACKs it awaits with none of that,
and returns to Python for everything else, having told the core what it did
(``ReadTransfer.lock_stepped``). It reads the file itself (pread, from where the core's source
stands, into a cache of its own) and leaves the source's position after the blocks it read.
Built from the shipped source like the relay's (``relay/compiled.py``); where it does not
build or load, the transfer's thread runs the Python loop alone.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable

import structlog

from boothop.relay.compiled import LOCK_STEP_SOURCE, build

from .paths import FileReader
from .transfer import ReadTransfer

#: What ended a call (``enum served`` of lockstep.c).
END, DATAGRAM, RECEIVE_FAILED, SEND_FAILED, READ_FAILED, TIME_LIMIT = range(6)
#: As much of a datagram as the C loop reads: the Python loop's ACK buffer (service.py).
RECEIVED = 479
#: The C loop's read-ahead of the file: one pread per 64 KiB, as the Python source reads.
CACHE = 1 << 16


class _State(ctypes.Structure):
    """struct lockstep of lockstep.c."""

    _fields_ = [("sock", ctypes.c_int32), ("file", ctypes.c_int32),
                ("blksize", ctypes.c_uint32), ("ended", ctypes.c_int32),
                ("timeout", ctypes.c_double), ("expires", ctypes.c_double),
                ("block", ctypes.c_uint64), ("offset", ctypes.c_int64),
                ("flight", ctypes.c_void_p), ("ahead", ctypes.c_void_p),
                ("flight_length", ctypes.c_uint32), ("ahead_length", ctypes.c_uint32),
                ("cache", ctypes.c_void_p), ("room", ctypes.c_uint32),
                ("cached", ctypes.c_uint32), ("cached_at", ctypes.c_int64),
                ("acked", ctypes.c_uint64), ("now", ctypes.c_double),
                ("received_length", ctypes.c_uint32), ("error", ctypes.c_int32),
                ("received", ctypes.c_uint8 * RECEIVED)]


Serve = Callable[["ctypes._Pointer[_State]"], int]


def load() -> Serve:
    """Build (if needed) and load the loop; Unavailable or OSError say why it cannot."""
    serve = ctypes.CDLL(str(build(LOCK_STEP_SOURCE))).boothop_tftp_lockstep
    serve.restype = ctypes.c_int
    serve.argtypes = [ctypes.POINTER(_State)]
    return serve


class LockStepLoop:
    """One read transfer's C loop: ``read`` stands in for the Python loop's receive whenever the
    core awaits the ACK of its block in flight with the next read ahead (``lock_step``)."""

    def __init__(self, serve: Serve, sock: int, transfer: ReadTransfer, reader: FileReader) -> None:
        self._serve, self._transfer, self._reader = serve, transfer, reader
        blksize = transfer.params.blksize
        # The buffers live as long as the loop: the state points into them.
        self._buffers = [ctypes.create_string_buffer(blksize + 4) for _ in range(2)]
        self._cache = ctypes.create_string_buffer(CACHE)
        self._state = state = _State(
            sock=sock, file=reader.fileno(), blksize=blksize, room=CACHE,
            flight=ctypes.addressof(self._buffers[0]), ahead=ctypes.addressof(self._buffers[1]),
            cache=ctypes.addressof(self._cache))
        self._pointer = ctypes.pointer(state)
        self._received = ctypes.addressof(state) + _State.received.offset
        #: The clock when the last call's last ACK was served (if it served any).
        self.now = 0.0
        #: The ACKs served here, over the transfer (its log line says so).
        self.served = 0

    @classmethod
    def open(cls, serve: Serve | None, sock: int, transfer: ReadTransfer) -> LockStepLoop | None:
        """The loop for ``transfer``, if it is a lock-step read of a file in octet mode (netascii
        is converted by the source, a window is the Python loop's)."""
        reader = transfer.source
        if serve is None or type(reader) is not FileReader or transfer.params.windowsize != 1:
            return None
        return cls(serve, sock, transfer, reader)

    def read(self) -> tuple[int, bytes | None]:
        """Serve the ACKs awaited until something else happens: the ACKs served (the core
        knows) and the datagram that is not one of them (None: the loop stopped for another
        reason, and the core is where it should go on from). Raises the receive's OSError as
        ``os.read`` would (EAGAIN: the deadline). Only while the core is in lock-step."""
        step = self._transfer.lock_step()
        assert step is not None, "the transfer is not in lock-step"
        state, reader = self._state, self._reader
        state.block, state.ended = step.block, step.ended
        state.timeout, state.expires = step.timeout, step.expires
        state.offset = reader.tell()
        ctypes.memmove(state.ahead, step.ahead, len(step.ahead))
        state.ahead_length = len(step.ahead)
        served = self._serve(self._pointer)
        acked = state.acked
        if acked:
            self.now = state.now
            self.served += acked
            ahead = ctypes.string_at(state.ahead, state.ahead_length) if state.ahead_length \
                else None
            self._transfer.lock_stepped(acked, state.now,
                                        ctypes.string_at(state.flight, state.flight_length),
                                        ahead)
            reader.seek(state.offset)
        if served == DATAGRAM:
            return acked, ctypes.string_at(self._received, state.received_length)
        if served == RECEIVE_FAILED:
            raise OSError(state.error, os.strerror(state.error))
        if served == SEND_FAILED:  # as the Python loop logs it; the timer copes
            structlog.get_logger().debug("tftp.send.failed", error=os.strerror(state.error))
        # END, TIME_LIMIT; READ_FAILED: the core's source reads the block again, and fails as
        # it would have.
        return acked, None
