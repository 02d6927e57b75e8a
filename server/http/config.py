"""The [http] table of the server configuration: the HTTP file server beside TFTP."""

from __future__ import annotations

import dataclasses

from boothop.relay.settings import Validator, validate_section
from boothop.server.fileconfig import (
    COUNT_RANGE,
    PORT_RANGE,
    FileServiceConfig,
    check_per_client,
    read_file_service,
)


@dataclasses.dataclass(frozen=True)
class HttpConfig(FileServiceConfig):
    """``root`` is [tftp]'s when not given, so both serve the same files; ``address`` is an IPv4
    or IPv6 address ("::" serves both families)."""

    port: int = 80
    #: Connections served at once; one more is answered 503 and closed.
    max_connections: int = 256
    #: Connections one client address may hold at once.
    max_per_client: int = 16
    #: Seconds for a whole request head (and any body) to arrive, counted from the connection's
    #: start or the end of the previous response: the slowloris bound, and the keep-alive idle
    #: time.
    header_timeout: float = 10.0
    #: Seconds a response may go without the client taking an octet before it is abandoned.
    send_timeout: float = 30.0
    #: Longest request target; a longer one gets 414.
    max_target: int = 2048
    #: Largest request head (request line and headers); a larger one gets 431.
    max_head: int = 16384


_INT_RANGES: dict[str, tuple[int, int]] = {
    "port": PORT_RANGE,
    "max_connections": COUNT_RANGE,
    "max_per_client": COUNT_RANGE,
    "max_target": (16, 65536),
    "max_head": (1024, 1 << 20),
}


def parse_http(table: object, path: str, tftp_root: str | None = None) -> HttpConfig:
    """Validate an [http] table on its own; ConfigError lists every problem."""
    return validate_section(path, "http", table, lambda v: read_http(v, tftp_root))


def read_http(v: Validator, tftp_root: str | None) -> HttpConfig | None:
    """The [http] table; None if it had problems (recorded in ``v``). ``tftp_root`` is the
    default root."""
    values = read_file_service(
        v, HttpConfig, _INT_RANGES, root=tftp_root,
        missing_root="required without [tftp]: the directory files are served from", ipv6=True)
    config = HttpConfig(
        header_timeout=v.number("header_timeout", 10.0, 0.1, 3600),
        send_timeout=v.number("send_timeout", 30.0, 0.1, 3600),
        **values,
    )
    check_per_client(v, config.max_per_client, "max_connections", config.max_connections)
    return None if v.failed() else config
