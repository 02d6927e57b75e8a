"""A bounds-checked reader (the aioquic pattern)."""

from __future__ import annotations

from .errors import TruncatedError


class Reader:
    """Reads big-endian fields; every read checks the remaining length first."""

    __slots__ = ("_base", "_data", "_pos")

    def __init__(self, data: bytes, base_offset: int = 0) -> None:
        self._data = data
        self._pos = 0
        self._base = base_offset

    @property
    def offset(self) -> int:
        """Offset of the next byte, counted in the enclosing message."""
        return self._base + self._pos

    def remaining(self) -> int:
        return len(self._data) - self._pos

    def at_end(self) -> bool:
        return self._pos >= len(self._data)

    def read(self, count: int, what: str) -> bytes:
        if count > len(self._data) - self._pos:
            raise TruncatedError(
                f"{what}: needs {count} bytes, {len(self._data) - self._pos} left", self.offset
            )
        chunk = self._data[self._pos : self._pos + count]
        self._pos += count
        return chunk

    def u8(self, what: str) -> int:
        return self.read(1, what)[0]

    def u16(self, what: str) -> int:
        return int.from_bytes(self.read(2, what), "big")

    def u32(self, what: str) -> int:
        return int.from_bytes(self.read(4, what), "big")

    def rest(self) -> bytes:
        chunk = self._data[self._pos :]
        self._pos = len(self._data)
        return chunk
