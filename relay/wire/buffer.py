"""A bounds-checked reader and a capacity-limited writer (the aioquic pattern)."""

from __future__ import annotations

from .errors import CapacityError, TruncatedError


class Reader:
    """Reads big-endian fields; every read checks the remaining length first."""

    __slots__ = ("_data", "_pos", "_base")

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


class Writer:
    """Appends bytes up to a hard capacity; exceeding it raises CapacityError."""

    __slots__ = ("_parts", "_size", "capacity")

    def __init__(self, capacity: int) -> None:
        self._parts: list[bytes] = []
        self._size = 0
        self.capacity = capacity

    def __len__(self) -> int:
        return self._size

    def write(self, data: bytes) -> None:
        if self._size + len(data) > self.capacity:
            raise CapacityError(
                f"message would be {self._size + len(data)} bytes, capacity {self.capacity}",
                self._size,
            )
        self._parts.append(data)
        self._size += len(data)

    def getvalue(self) -> bytes:
        return b"".join(self._parts)
