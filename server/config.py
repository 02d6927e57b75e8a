"""The server's TOML file: [dhcp], [dhcp6], [pxe], [tftp] and [http], each optional, parsed by its
own module; [log] and [metrics] for the daemon around them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from boothop.relay.settings import ConfigError, Listen, Validator, parse_listen, read_toml
from boothop.server.dhcp.config import DEFAULT_LEASE_DB, DhcpConfig, read_dhcp

if TYPE_CHECKING:
    from boothop.server.dhcp6.config import Dhcp6Config
    from boothop.server.http.config import HttpConfig
    from boothop.server.pxe.config import PxeConfig
    from boothop.server.tftp.config import TftpConfig

_SERVICES = ("dhcp", "dhcp6", "pxe", "tftp", "http")
LOG_FORMATS = ("auto", "json", "console")


@dataclass(frozen=True)
class ServerConfig:
    path: str
    dhcp: DhcpConfig | None = None
    pxe: PxeConfig | None = None
    tftp: TftpConfig | None = None
    http: HttpConfig | None = None
    dhcp6: Dhcp6Config | None = None
    log_format: str = "auto"
    #: Where Prometheus scrapes the counters ([metrics] listen = "HOST:PORT").
    metrics: Listen | None = None

    @property
    def warnings(self) -> tuple[str, ...]:
        return self.dhcp.warnings if self.dhcp is not None else ()


def parse_config(data: dict[str, Any], path: str, text: str | None = None) -> ServerConfig:
    """Validate the whole file: every problem of every section in one ConfigError."""
    v = Validator(path, data, text)
    v.unknown_keys((*_SERVICES, "log", "metrics"))
    pxe_table, tftp_table, http_table, dhcp_table, dhcp6_table, log_table, metrics_table = (
        v.table(name) for name in ("pxe", "tftp", "http", "dhcp", "dhcp6", "log", "metrics"))
    pxe = tftp = http = None
    if pxe_table is not None:
        from boothop.server.pxe.config import read_pxe
        pxe = read_pxe(pxe_table)
    if tftp_table is not None:
        from boothop.server.tftp.config import read_tftp
        tftp = read_tftp(tftp_table)
    if http_table is not None:
        from boothop.server.http.config import read_http
        tftp_root = tftp_table.data.get("root") if tftp_table is not None else None
        http = read_http(http_table, tftp_root if isinstance(tftp_root, str) else None)
    dhcp = None
    if dhcp_table is not None:
        dhcp = read_dhcp(dhcp_table, pxe_colocated=pxe.colocated if pxe is not None else None)
    dhcp6 = None
    if dhcp6_table is not None:
        from boothop.server.dhcp6.config import read_dhcp6
        dhcp6 = read_dhcp6(dhcp6_table, default_lease_db=(
            dhcp.lease_db if dhcp is not None else DEFAULT_LEASE_DB))
    log_format = "auto"
    if log_table is not None:
        log_table.unknown_keys({"format"})
        log_format = log_table.choice("format", LOG_FORMATS, "auto")
    metrics = None
    if metrics_table is not None:
        metrics_table.unknown_keys({"listen"})
        metrics = metrics_table.convert("listen", parse_listen, required='"HOST:PORT"')
    if pxe is not None and http is not None and not pxe.http_url:
        # UEFI HTTP boot clients fetch relative boot files from this host's [http].
        port = "" if http.port == 80 else f":{http.port}"
        pxe = dataclasses.replace(pxe, http_url=f"http://{pxe.server_address}{port}/")
    if dhcp is not None and pxe is not None and not pxe.colocated and pxe.port == dhcp.port:
        # Both would bind UDP port 67 on this host and the kernel would split the requests
        # between them at random.
        v.fail("pxe.colocated",
               f"[dhcp] and [pxe] would both listen on UDP port {dhcp.port}: on the DHCP "
               "server's host set colocated = true (proxyDHCP on port 4011 only), or run "
               "[pxe] on another host or port")
    if not any(name in data for name in _SERVICES):
        v.fail("dhcp", "no service configured: add [dhcp], [dhcp6], [pxe], [tftp] or [http]")
    v.finish()
    return ServerConfig(path, dhcp, pxe, tftp, http, dhcp6, log_format, metrics)


def check_reload(running: ServerConfig, new: ServerConfig) -> None:
    """A ConfigError for what a reload cannot change in a running server (it needs a restart):
    the set of services, the sockets and the lease database, and [pxe], [tftp] and [http]. A
    reload applies [dhcp]: pools, reservations, options, lease times."""
    for name in _SERVICES:
        if (getattr(running, name) is None) != (getattr(new, name) is None):
            _needs_restart(new.path, name, "adding or removing a service")
    if running.pxe != new.pxe:
        _needs_restart(new.path, "pxe", "changing [pxe]")
    if running.tftp != new.tftp:
        _needs_restart(new.path, "tftp", "changing [tftp]")
    if running.http != new.http:
        _needs_restart(new.path, "http", "changing [http]")
    if running.dhcp6 != new.dhcp6:
        _needs_restart(new.path, "dhcp6", "changing [dhcp6]")
    if running.dhcp is not None and new.dhcp is not None:
        for key in ("port", "lease_db"):
            if getattr(running.dhcp, key) != getattr(new.dhcp, key):
                _needs_restart(new.path, f"dhcp.{key}", f"changing dhcp.{key}")


def _needs_restart(path: str, key: str, what: str) -> NoReturn:
    raise ConfigError(path, key, f"{what} needs a restart (systemctl restart), not a reload")


def load_config(path: str) -> ServerConfig:
    data, text = read_toml(path)
    return parse_config(data, path, text)
