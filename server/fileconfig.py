"""What the [tftp] and [http] tables share: the served root, the listening address and port, and
integer limits in ranges of which the per-client cap may not exceed the service's total."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from ipaddress import ip_address
from typing import Any

from boothop.relay.settings import Validator

#: The ranges of ``port``, and of the total and per-client limits (connections, transfers).
PORT_RANGE = (1, 65535)
COUNT_RANGE = (1, 100_000)


@dataclasses.dataclass(frozen=True)
class FileServiceConfig:
    #: The directory served.
    root: str
    address: str = "0.0.0.0"
    #: Each service sets its own (69, 80).
    port: int = 0


def directory(value: Any) -> str:
    """An absolute directory path (the served root, the upload root)."""
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError(f"must be an absolute directory path, not {value!r}")
    return value


def any_address(value: Any) -> str:
    """An IPv4 or IPv6 address to listen on."""
    if not isinstance(value, str):
        raise TypeError(f"must be an IPv4 or IPv6 address string, not {value!r}")
    try:
        return str(ip_address(value))
    except ValueError:
        raise ValueError(f"not an IPv4 or IPv6 address: {value!r}") from None


def read_file_service(v: Validator, kind: type[FileServiceConfig],
                      ranges: Mapping[str, tuple[int, int]], *, root: str | None,
                      missing_root: str, ipv6: bool) -> dict[str, Any]:
    """Refuse keys ``kind`` has no field for; read ``root`` (``root`` when absent, else the
    problem ``missing_root``), the integer keys of ``ranges`` (their defaults ``kind``'s) and
    ``address`` (IPv4, or with ``ipv6`` either family): ``kind``'s keyword arguments so far."""
    fields = {f.name: f.default for f in dataclasses.fields(kind)}
    v.unknown_keys(fields)
    if "root" in v.data:
        root = v.convert("root", directory)
    elif root is None:
        v.fail("root", missing_root)
    values: dict[str, Any] = {
        key: v.integer(key, fields[key], low, high) for key, (low, high) in ranges.items()
    }
    address = v.convert("address", any_address) if ipv6 else v.address("address")
    return {"root": root or "/", **values, "address": str(address or "0.0.0.0")}


def check_per_client(v: Validator, per_client: int, total: str, limit: int) -> None:
    """``max_per_client`` (``per_client``) may not exceed the service's ``total`` key
    (``limit``); not checked when either was refused already."""
    if not v.failed("max_per_client", total) and per_client > limit:
        v.fail("max_per_client", f"cannot exceed {v.key(total)}")
