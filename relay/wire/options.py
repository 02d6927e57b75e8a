"""Option areas: TLVs with pad/end, RFC 3396 long-option concatenation and splitting."""

from __future__ import annotations

from collections.abc import Iterable

from .errors import FieldError, TruncatedError

Option = tuple[int, bytes]


def read_tlvs(area: bytes, base_offset: int, what: str) -> tuple[list[Option], bool]:
    """Read TLVs from one option area up to END; returns the options and whether END was seen.

    Pad (0) is skipped. Bytes after END are ignored, as RFC 2131 allows padding there.
    """
    options, end, _ = scan_tlvs(area, base_offset, what)
    return options, end >= 0


def scan_tlvs(area: bytes, base_offset: int, what: str) -> tuple[list[Option], int, bool]:
    """Read TLVs up to END: the options, END's index in ``area`` (-1 if absent), and whether a
    pad (0) came before END. One pass with plain indexing: this runs for every packet relayed.
    """
    options: list[Option] = []
    size = len(area)
    position = 0
    padded = False
    while position < size:
        code = area[position]
        if code == 0:  # Opt.PAD
            padded = True
            position += 1
            continue
        if code == 255:  # Opt.END
            return options, position, padded
        if position + 1 >= size:
            raise TruncatedError(
                f"{what} option {code} length: needs 1 bytes, 0 left", base_offset + position + 1
            )
        start = position + 2
        position = start + area[position + 1]
        if position > size:
            raise TruncatedError(
                f"{what} option {code} value: needs {position - start} bytes, {size - start} left",
                base_offset + start,
            )
        options.append((code, area[start:position]))
    return options, -1, padded


def option_offset(area: bytes, base_offset: int, code: int, occurrence: int = 0) -> int | None:
    """Where (in the enclosing message) the ``occurrence``-th TLV of ``code`` starts, in an area
    that ``scan_tlvs`` accepted: for error reports only."""
    position = 0
    while position < len(area) and area[position] != 255:
        if area[position] == code:
            if not occurrence:
                return base_offset + position
            occurrence -= 1
        position += 1 if area[position] == 0 else 2 + area[position + 1]
    return None


def concatenate(tlvs: Iterable[Option]) -> list[Option]:
    """Instances of one option code are concatenated, in order, at the first position.

    RFC 3396 §1: "DHCP protocol agents MUST use this method whenever they receive a DHCP packet
    containing more than one occurrence of a certain type of option."
    """
    if not isinstance(tlvs, list):
        tlvs = list(tlvs)
    if len(dict(tlvs)) == len(tlvs):
        return tlvs  # no code repeats: nothing to concatenate (the common case)
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
    if len(value) <= 255:
        return bytes((code, len(value))) + value
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
    subs: list[Option] = []
    size = len(data)
    position = 0
    while position < size:
        code = data[position]
        if position + 1 >= size:
            raise TruncatedError(
                f"{what} sub-option {code} length: needs 1 bytes, 0 left", base_offset + size
            )
        start = position + 2
        stop = start + data[position + 1]
        if stop > size:
            raise TruncatedError(
                f"{what} sub-option {code} value: needs {stop - start} bytes, {size - start} left",
                base_offset + start,
            )
        subs.append((code, bytes(data[start:stop])))
        position = stop
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
