"""The codec's one error family: a decoder raises nothing else, whatever the bytes."""

from __future__ import annotations


class WireError(ValueError):
    """Malformed or unencodable DHCP/BOOTP data; says what and at which offset."""

    def __init__(self, what: str, offset: int | None = None) -> None:
        self.what = what
        self.offset = offset
        super().__init__(what if offset is None else f"{what} (at offset {offset})")


class TruncatedError(WireError):
    """The data ends before a field or option it announces."""


class FieldError(WireError):
    """A field or option holds a value its definition does not allow."""


class CapacityError(WireError):
    """An encoded message would exceed the writer's capacity (the maximum message size)."""
