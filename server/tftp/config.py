"""The [tftp] table of the server configuration."""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any

from boothop.server.errors import ConfigError

#: RFC 2348 §"Block Size Option Specification": "valid values range between 8 and 65464".
BLKSIZE_MIN, BLKSIZE_MAX = 8, 65464
#: RFC 7440 §3: "valid values range between 1 and 65535 blocks, inclusive".
WINDOWSIZE_MAX = 65535


@dataclasses.dataclass(frozen=True)
class TftpConfig:
    root: str
    address: str = "0.0.0.0"
    port: int = 69
    #: 1468 fills a 1500-byte Ethernet frame: 1500 - 20 (IPv4) - 8 (UDP) - 4 (TFTP header).
    max_blksize: int = 1468
    max_windowsize: int = 64
    #: Retransmission timeout in seconds when the client does not negotiate one (RFC 2349).
    timeout: float = 1.0
    retries: int = 5
    max_transfers: int = 64
    max_per_client: int = 8
    #: Write requests (WRQ) are refused with error 2 unless this is set.
    allow_write: bool = False
    #: Where uploads land; None means ``root``.
    write_root: str | None = None
    #: Largest upload accepted, in octets: a bigger announced tsize or upload gets error 3.
    max_write_size: int = 64 * 1024 * 1024
    #: Replace an existing file; otherwise a WRQ for one gets error 6 "file already exists".
    overwrite: bool = False

    @property
    def upload_root(self) -> str:
        return self.write_root or self.root


_INT_RANGES: dict[str, tuple[int, int]] = {
    "port": (1, 65535),
    "max_blksize": (BLKSIZE_MIN, BLKSIZE_MAX),
    "max_windowsize": (1, WINDOWSIZE_MAX),
    "retries": (0, 100),
    "max_transfers": (1, 100_000),
    "max_per_client": (1, 100_000),
    "max_write_size": (1, 1 << 40),
}


def parse_tftp(table: dict[str, Any], path: str) -> TftpConfig:
    """Validate the [tftp] table; every problem is a ConfigError naming the dotted key."""
    known = {f.name for f in dataclasses.fields(TftpConfig)}
    for key in table:
        if key not in known:
            raise ConfigError(path, f"tftp.{key}", "unknown key")
    if "root" not in table:
        raise ConfigError(path, "tftp.root", "required: the directory files are served from")
    root = table["root"]
    if not isinstance(root, str) or not root.startswith("/"):
        raise ConfigError(path, "tftp.root", "must be an absolute directory path")
    values: dict[str, Any] = {"root": root}
    if "write_root" in table:
        write_root = table["write_root"]
        if not isinstance(write_root, str) or not write_root.startswith("/"):
            raise ConfigError(path, "tftp.write_root", "must be an absolute directory path")
        values["write_root"] = write_root
    for key in ("allow_write", "overwrite"):
        if key in table:
            if not isinstance(table[key], bool):
                raise ConfigError(path, f"tftp.{key}", "must be true or false")
            values[key] = table[key]
    address = table.get("address", "0.0.0.0")
    try:
        if not isinstance(address, str):
            raise TypeError(address)
        ipaddress.IPv4Address(address)
    except (ValueError, TypeError):
        raise ConfigError(path, "tftp.address", f"not an IPv4 address: {address!r}") from None
    values["address"] = address
    for key, (low, high) in _INT_RANGES.items():
        if key in table:
            value = table[key]
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ConfigError(path, f"tftp.{key}", f"must be an integer in {low}..{high}")
            values[key] = value
    if "timeout" in table:
        timeout = table["timeout"]
        number = isinstance(timeout, (int, float)) and not isinstance(timeout, bool)
        if not number or not 0.01 <= timeout <= 255:
            raise ConfigError(path, "tftp.timeout", "must be a number of seconds in 0.01..255")
        values["timeout"] = float(timeout)
    config = TftpConfig(**values)
    if config.max_per_client > config.max_transfers:
        raise ConfigError(path, "tftp.max_per_client", "cannot exceed tftp.max_transfers")
    return config
