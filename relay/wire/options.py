"""Option areas: TLVs with pad/end, RFC 3396 long-option concatenation and splitting."""

from __future__ import annotations

from collections.abc import Iterable

from .buffer import Reader
from .codes import Opt
from .errors import FieldError

Option = tuple[int, bytes]


def read_tlvs(area: bytes, base_offset: int, what: str) -> tuple[list[Option], bool]:
    """Read TLVs from one option area up to END; returns the options and whether END was seen.

    Pad (0) is skipped. Bytes after END are ignored, as RFC 2131 allows padding there.
    """
    options, end_seen, _ = read_tlvs_at(area, base_offset, what)
    return options, end_seen


def read_tlvs_at(area: bytes, base_offset: int, what: str) -> tuple[list[Option], bool, list[int]]:
    """As read_tlvs, plus each option's offset in the enclosing message (for error reports)."""
    reader = Reader(area, base_offset)
    options: list[Option] = []
    offsets: list[int] = []
    while not reader.at_end():
        offset = reader.offset
        code = reader.u8(f"{what} option code")
        if code == Opt.PAD:
            continue
        if code == Opt.END:
            return options, True, offsets
        length = reader.u8(f"{what} option {code} length")
        options.append((code, reader.read(length, f"{what} option {code} value")))
        offsets.append(offset)
    return options, False, offsets


def concatenate(tlvs: Iterable[Option]) -> list[Option]:
    """Instances of one option code are concatenated, in order, at the first position.

    RFC 3396 §1: "DHCP protocol agents MUST use this method whenever they receive a DHCP packet
    containing more than one occurrence of a certain type of option."
    """
    merged: dict[int, bytearray] = {}
    order: list[int] = []
    for code, value in tlvs:
        if code in merged:
            merged[code] += value
        else:
            merged[code] = bytearray(value)
            order.append(code)
    return [(code, bytes(merged[code])) for code in order]


def encode_tlv(code: int, value: bytes) -> bytes:
    """One option as TLVs; values over 255 bytes are split into several (RFC 3396 §5)."""
    if not 0 < code < 255:
        raise FieldError(f"option code {code} cannot carry a value")
    if not value:
        return bytes((code, 0))
    out = bytearray()
    for start in range(0, len(value), 255):
        chunk = value[start : start + 255]
        out += bytes((code, len(chunk))) + chunk
    return bytes(out)


def tlv_size(value_length: int) -> int:
    """Encoded size of an option with a value of this length (split as encode_tlv does)."""
    chunks = max(1, -(-value_length // 255))
    return 2 * chunks + value_length


def parse_sub_tlvs(data: bytes, base_offset: int, what: str) -> list[Option]:
    """Sub-option lists without pad/end (option 82 sub-options, RFC 3046 §2.0)."""
    reader = Reader(data, base_offset)
    subs: list[Option] = []
    while not reader.at_end():
        code = reader.u8(f"{what} sub-option code")
        length = reader.u8(f"{what} sub-option {code} length")
        subs.append((code, reader.read(length, f"{what} sub-option {code} value")))
    return subs


def encode_sub_tlvs(subs: Iterable[Option]) -> bytes:
    out = bytearray()
    for code, value in subs:
        if not 0 <= code <= 255:
            raise FieldError(f"sub-option code {code} out of range")
        if len(value) > 255:
            raise FieldError(f"sub-option {code} is {len(value)} bytes, at most 255 fit")
        out += bytes((code, len(value))) + value
    return bytes(out)
