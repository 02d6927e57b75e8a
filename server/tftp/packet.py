"""TFTP packets (RFC 1350 §5, OACK from RFC 2347): bytes <-> small dataclasses.

TFTP is not DHCP, so this is not a second DHCP codec: it is the TFTP wire format, kept as small
as the server needs. ``decode`` raises only ``TftpPacketError`` (a ValueError).
"""

from __future__ import annotations

import dataclasses
import enum
import struct


class Opcode(enum.IntEnum):
    RRQ = 1
    WRQ = 2
    DATA = 3
    ACK = 4
    ERROR = 5
    OACK = 6


class ErrorCode(enum.IntEnum):
    """RFC 1350 Appendix "Error Codes", plus 8 from RFC 2347."""

    NOT_DEFINED = 0
    FILE_NOT_FOUND = 1
    ACCESS_VIOLATION = 2
    DISK_FULL = 3
    ILLEGAL_OPERATION = 4
    UNKNOWN_TID = 5
    FILE_EXISTS = 6
    NO_SUCH_USER = 7
    OPTION_NEGOTIATION = 8


class TftpPacketError(ValueError):
    """The datagram is not a well-formed TFTP packet."""


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    """RRQ or WRQ. Option names are lower-cased (RFC 2347: case-insensitive); values are text."""

    opcode: Opcode
    filename: str
    mode: str
    options: dict[str, str]


@dataclasses.dataclass(frozen=True, slots=True)
class Data:
    block: int
    payload: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class Ack:
    block: int


@dataclasses.dataclass(frozen=True, slots=True)
class Error:
    code: int
    message: str


@dataclasses.dataclass(frozen=True, slots=True)
class OptionAck:
    options: dict[str, str]


Packet = Request | Data | Ack | Error | OptionAck


#: The first two bytes of a read or a write request.
REQUEST_OPCODES = (Opcode.RRQ.to_bytes(2, "big"), Opcode.WRQ.to_bytes(2, "big"))
#: The first two bytes of an ACK: its block number follows (``decode`` reads it the same way).
ACK_OPCODE = Opcode.ACK.to_bytes(2, "big")
#: ``pack_header(opcode, block)``: the 4 octets that start a DATA or an ACK (RFC 1350 §5), in
#: one call and one bytes object (the read transfer builds one of each per block).
pack_header = struct.Struct(">HH").pack
DATA, ACK = int(Opcode.DATA), int(Opcode.ACK)  # plain ints: struct packs them without __index__


def _strings(body: bytes) -> list[str]:
    """NUL-terminated netascii strings; the last one must be terminated too."""
    if not body.endswith(b"\0"):
        raise TftpPacketError("string field is not NUL-terminated")
    try:
        return body[:-1].decode("ascii").split("\0")
    except UnicodeDecodeError as exc:
        raise TftpPacketError("string field is not ASCII") from exc


def _options(pairs: list[str]) -> dict[str, str]:
    if len(pairs) % 2:
        raise TftpPacketError("option name without a value")
    options: dict[str, str] = {}
    for i in range(0, len(pairs), 2):
        options.setdefault(pairs[i].lower(), pairs[i + 1])
    return options


def decode(data: bytes) -> Packet:
    if len(data) < 4:
        raise TftpPacketError(f"packet is {len(data)} bytes, at least 4 are needed")
    opcode = int.from_bytes(data[:2], "big")
    body = data[2:]
    if opcode in (Opcode.RRQ, Opcode.WRQ):
        fields = _strings(body)
        if len(fields) < 2 or not fields[0]:
            raise TftpPacketError("request without filename or mode")
        return Request(Opcode(opcode), fields[0], fields[1].lower(), _options(fields[2:]))
    if opcode == Opcode.DATA:
        return Data(int.from_bytes(body[:2], "big"), body[2:])
    if opcode == Opcode.ACK:
        return Ack(int.from_bytes(body[:2], "big"))
    if opcode == Opcode.ERROR:
        message = body[2:].split(b"\0", 1)[0].decode("ascii", "replace")
        return Error(int.from_bytes(body[:2], "big"), message)
    if opcode == Opcode.OACK:
        return OptionAck(_options(_strings(body)))
    raise TftpPacketError(f"unknown opcode {opcode}")


def encode_data(block: int, payload: bytes) -> bytes:
    return pack_header(DATA, block) + payload


def encode_ack(block: int) -> bytes:
    return pack_header(ACK, block)


def encode_error(code: int, message: str) -> bytes:
    return b"\x00\x05" + code.to_bytes(2, "big") + message.encode("ascii", "replace") + b"\0"


def encode_oack(options: dict[str, str]) -> bytes:
    body = b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in options.items())
    return b"\x00\x06" + body


def encode_request(opcode: Opcode, filename: str, mode: str, options: dict[str, str]) -> bytes:
    """Used by tests and the benchmark client."""
    parts = [filename, mode] + [s for kv in options.items() for s in kv]
    return opcode.to_bytes(2, "big") + b"".join(p.encode() + b"\0" for p in parts)
