"""The writer interface the write-transfer core writes through, and netascii decoding.

The core never touches the filesystem: it appends to a ``FileSink`` and, once the last block is in,
commits it (the shell's sink renames its temporary file into place, ``paths.create_file``) or, on
any failure, aborts it (the temporary file is removed: no partial file is ever visible). Tests pass
``BytesSink``.
"""

from __future__ import annotations

from typing import Protocol

from .packet import ErrorCode


class SinkError(Exception):
    """Writing or committing failed; ``code`` is the TFTP error to send (3 disk full, 6 exists…)."""

    def __init__(self, code: ErrorCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class FileSink(Protocol):
    def write(self, data: bytes) -> None:
        """Append ``data``; SinkError on failure."""
        ...

    def commit(self) -> None:
        """Make the file visible under its name; SinkError on failure (the file is then gone)."""
        ...

    def abort(self) -> None:
        """Discard everything written. Idempotent; never raises."""
        ...


class BytesSink:
    def __init__(self) -> None:
        self.data = bytearray()
        self.committed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.data += data

    def commit(self) -> None:
        self.committed = True

    def abort(self) -> None:
        self.aborted = True


class NetasciiSink:
    """RFC 1350 §5 / RFC 764 in reverse: CR LF becomes LF and CR NUL a bare CR.

    In valid netascii every CR starts a two-octet pair, so a CR that ends a block is held until the
    next block shows its partner. A CR left over at the end is written as it is.
    """

    def __init__(self, raw: FileSink) -> None:
        self._raw = raw
        self._held = b""

    def write(self, data: bytes) -> None:
        data = self._held + data
        self._held = b""
        if data.endswith(b"\r"):
            data, self._held = data[:-1], b"\r"
        # The pairs cannot overlap: their second octets (LF, NUL) are never a CR.
        self._raw.write(data.replace(b"\r\n", b"\n").replace(b"\r\0", b"\r"))

    def commit(self) -> None:
        if self._held:
            self._raw.write(self._held)
            self._held = b""
        self._raw.commit()

    def abort(self) -> None:
        self._raw.abort()
