"""DHCP option names users write in the config (the ISC dhcpd / Kea names) and their value types.

A value is encoded once, when the configuration is loaded; the core only copies bytes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from ipaddress import IPv4Address


class Kind(enum.Enum):
    IP = "an IPv4 address"
    IPS = "a list of IPv4 addresses"
    U8 = "an integer 0..255"
    U16 = "an integer 0..65535"
    U32 = "an integer 0..4294967295"
    I32 = "a signed 32-bit integer"
    TEXT = "a string"
    FLAG = "true or false"
    RAW = 'a string, or "hex:0a0b..." for raw bytes'


@dataclass(frozen=True)
class OptionDef:
    code: int
    kind: Kind


OPTIONS: dict[str, OptionDef] = {
    "subnet-mask": OptionDef(1, Kind.IP),
    "time-offset": OptionDef(2, Kind.I32),
    "routers": OptionDef(3, Kind.IPS),
    "time-servers": OptionDef(4, Kind.IPS),
    "dns-servers": OptionDef(6, Kind.IPS),
    "log-servers": OptionDef(7, Kind.IPS),
    "host-name": OptionDef(12, Kind.TEXT),
    "domain-name": OptionDef(15, Kind.TEXT),
    "root-path": OptionDef(17, Kind.TEXT),
    "ip-forwarding": OptionDef(19, Kind.FLAG),
    "default-ip-ttl": OptionDef(23, Kind.U8),
    "interface-mtu": OptionDef(26, Kind.U16),
    "broadcast-address": OptionDef(28, Kind.IP),
    "ntp-servers": OptionDef(42, Kind.IPS),
    "vendor-encapsulated-options": OptionDef(43, Kind.RAW),
    "netbios-name-servers": OptionDef(44, Kind.IPS),
    "vendor-class-identifier": OptionDef(60, Kind.TEXT),
    "tftp-server-name": OptionDef(66, Kind.TEXT),
    "bootfile-name": OptionDef(67, Kind.TEXT),
    "domain-search": OptionDef(119, Kind.RAW),
    "classless-static-routes": OptionDef(121, Kind.RAW),
}

#: Codes the server computes itself per message; a config may not set them.
MANAGED_CODES: dict[int, str] = {
    0: "pad", 255: "end", 50: "requested address", 51: "set by lease-time",
    52: "option overload", 53: "message type", 54: "set by server-id",
    55: "parameter request list", 57: "max message size", 58: "set by renewal-time",
    59: "set by rebinding-time", 61: "client identifier", 82: "relay agent information",
}


def resolve_name(name: str) -> OptionDef | None:
    """``routers`` or ``option-250`` (any code, raw value) -> its definition; None if unknown."""
    if name in OPTIONS:
        return OPTIONS[name]
    if name.startswith("option-") and name[7:].isdigit():
        code = int(name[7:])
        for definition in OPTIONS.values():
            if definition.code == code:
                return definition
        if 0 <= code <= 255:
            return OptionDef(code, Kind.RAW)
    return None


def encode_value(kind: Kind, value: object) -> bytes:
    """Encode a TOML value; raises ValueError saying what was expected."""
    def bad() -> ValueError:
        return ValueError(f"expected {kind.value}, got {value!r}")

    if kind is Kind.IP:
        if not isinstance(value, str):
            raise bad()
        return IPv4Address(value).packed
    if kind is Kind.IPS:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items or not all(isinstance(i, str) for i in items):
            raise bad()
        return b"".join(IPv4Address(i).packed for i in items)
    if kind is Kind.FLAG:
        if not isinstance(value, bool):
            raise bad()
        return bytes((int(value),))
    if kind in (Kind.U8, Kind.U16, Kind.U32, Kind.I32):
        if not isinstance(value, int) or isinstance(value, bool):
            raise bad()
        size = {Kind.U8: 1, Kind.U16: 2, Kind.U32: 4, Kind.I32: 4}[kind]
        try:
            return value.to_bytes(size, "big", signed=kind is Kind.I32)
        except OverflowError:
            raise bad() from None
    if not isinstance(value, str):
        raise bad()
    if kind is Kind.RAW and value.startswith("hex:"):
        try:
            return bytes.fromhex(value[4:].replace(":", ""))
        except ValueError:
            raise bad() from None
    data = value.encode()
    if not data:
        raise bad()
    return data
