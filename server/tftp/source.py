"""The reader interface the transfer core reads through, and netascii conversion.

The core never touches the filesystem: it reads sequentially from a ``FileSource``; the shell
opens real files (``paths.open_file``), tests pass ``BytesSource``.
"""

from __future__ import annotations

from typing import Protocol


class FileSource(Protocol):
    #: Octets the transfer will send, or None when unknown before sending (netascii).
    size: int | None

    def read(self, count: int) -> bytes:
        """The next ``count`` bytes; fewer only at the end of the file."""
        ...

    def close(self) -> None: ...


class BytesSource:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0
        self.size: int | None = len(data)

    def read(self, count: int) -> bytes:
        chunk = self._data[self._pos : self._pos + count]
        self._pos += len(chunk)
        return chunk

    def close(self) -> None:
        pass


class NetasciiSource:
    """RFC 1350 §5 / RFC 764: in netascii, LF is sent as CR LF and a bare CR as CR NUL."""

    def __init__(self, raw: FileSource, chunk: int = 65536) -> None:
        self._raw = raw
        self._chunk = chunk
        self._pending = bytearray()
        self._eof = False
        self.size: int | None = None

    def read(self, count: int) -> bytes:
        while len(self._pending) < count and not self._eof:
            data = self._raw.read(self._chunk)
            if len(data) < self._chunk:
                self._eof = True
            # CR first, so the CRs added for LF are not themselves expanded.
            self._pending += data.replace(b"\r", b"\r\0").replace(b"\n", b"\r\n")
        out = bytes(self._pending[:count])
        del self._pending[:count]
        return out

    def close(self) -> None:
        self._raw.close()
