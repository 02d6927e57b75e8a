"""The server's TOML file: [dhcp], [pxe] and [tftp], each optional, parsed by its own module."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from boothop.server.dhcp.config import DhcpConfig, parse_dhcp
from boothop.server.errors import ConfigError

if TYPE_CHECKING:
    from boothop.server.pxe.config import PxeConfig
    from boothop.server.tftp.config import TftpConfig

_SECTIONS = ("dhcp", "pxe", "tftp", "log")


@dataclass(frozen=True)
class ServerConfig:
    path: str
    dhcp: DhcpConfig | None = None
    pxe: PxeConfig | None = None
    tftp: TftpConfig | None = None
    log_format: str = "auto"

    @property
    def warnings(self) -> tuple[str, ...]:
        return self.dhcp.warnings if self.dhcp is not None else ()


def _table(data: dict[str, Any], name: str, path: str) -> dict[str, Any] | None:
    value = data.get(name)
    if value is not None and not isinstance(value, dict):
        raise ConfigError(path, name, "expected a table")
    return value


def parse_config(data: dict[str, Any], path: str) -> ServerConfig:
    for name in data:
        if name not in _SECTIONS:
            raise ConfigError(path, name, f"unknown section (expected one of: {', '.join(_SECTIONS)})")
    pxe_table, tftp_table, dhcp_table = (_table(data, n, path) for n in ("pxe", "tftp", "dhcp"))
    pxe = tftp = None
    if pxe_table is not None:
        from boothop.server.pxe.config import parse_pxe
        pxe = parse_pxe(pxe_table, path)
    if tftp_table is not None:
        from boothop.server.tftp.config import parse_tftp
        tftp = parse_tftp(tftp_table, path)
    dhcp = None
    if dhcp_table is not None:
        dhcp = parse_dhcp(dhcp_table, path, pxe_colocated=pxe.colocated if pxe is not None else None)
    log_format = "auto"
    log_table = _table(data, "log", path)
    if log_table is not None:
        for key in log_table:
            if key != "format":
                raise ConfigError(path, f"log.{key}", "unknown key (expected: format)")
        log_format = log_table.get("format", "auto")
        if log_format not in ("auto", "json", "console"):
            raise ConfigError(path, "log.format", "expected auto, json or console")
    if dhcp is not None and pxe is not None and not pxe.colocated and pxe.port == dhcp.port:
        # Both would bind UDP port 67 on this host and the kernel would split the requests
        # between them at random.
        raise ConfigError(path, "pxe.colocated",
                          f"[dhcp] and [pxe] would both listen on UDP port {dhcp.port}: on the DHCP "
                          "server's host set colocated = true (proxyDHCP on port 4011 only), or run "
                          "[pxe] on another host or port")
    if dhcp is None and pxe is None and tftp is None:
        raise ConfigError(path, "dhcp", "no service configured: add [dhcp], [pxe] or [tftp]")
    return ServerConfig(path, dhcp, pxe, tftp, log_format)


def load_config(path: str) -> ServerConfig:
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(path, "-", f"cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "-", f"not valid TOML: {exc}") from None
    return parse_config(data, path)
