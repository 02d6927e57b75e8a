"""The [tftp] table of the server configuration."""

from __future__ import annotations

import dataclasses

from boothop.relay.settings import Validator, validate_section
from boothop.server.fileconfig import (
    COUNT_RANGE,
    PORT_RANGE,
    FileServiceConfig,
    check_per_client,
    directory,
    read_file_service,
)

#: RFC 2348 §"Block Size Option Specification": "valid values range between 8 and 65464".
BLKSIZE_MIN, BLKSIZE_MAX = 8, 65464
#: RFC 7440 §3: "valid values range between 1 and 65535 blocks, inclusive".
WINDOWSIZE_MAX = 65535


@dataclasses.dataclass(frozen=True)
class TftpConfig(FileServiceConfig):
    port: int = 69
    #: 1468 fills a 1500-byte Ethernet frame: 1500 - 20 (IPv4) - 8 (UDP) - 4 (TFTP header).
    max_blksize: int = 1468
    max_windowsize: int = 64
    #: Retransmission timeout in seconds when the client does not negotiate one (RFC 2349).
    timeout: float = 1.0
    #: The largest timeout a client may negotiate (RFC 2349 allows up to 255 s): a larger one is
    #: left out of the OACK, so an abandoned transfer frees its slot within ~(retries + 1) * 10 s.
    max_timeout: int = 10
    #: Seconds a transfer may take in all, however alive its client: 600 s carries a 1 GiB image
    #: at under 2 MB/s, and bounds how long a client trickling ACKs can hold a slot.
    max_transfer_time: float = 600.0
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
    "port": PORT_RANGE,
    "max_blksize": (BLKSIZE_MIN, BLKSIZE_MAX),
    "max_windowsize": (1, WINDOWSIZE_MAX),
    "retries": (0, 100),
    "max_timeout": (1, 255),
    "max_transfers": COUNT_RANGE,
    "max_per_client": COUNT_RANGE,
    "max_write_size": (1, 1 << 40),
}


def parse_tftp(table: object, path: str) -> TftpConfig:
    """Validate a [tftp] table on its own; ConfigError lists every problem."""
    return validate_section(path, "tftp", table, read_tftp)


def read_tftp(v: Validator) -> TftpConfig | None:
    """The [tftp] table; None if it had problems (recorded in ``v``)."""
    values = read_file_service(v, TftpConfig, _INT_RANGES, root=None,
                               missing_root="missing: the directory files are served from",
                               ipv6=False)
    config = TftpConfig(
        timeout=v.number("timeout", 1.0, 0.01, 255),
        max_transfer_time=v.number("max_transfer_time", 600.0, 1, 86400),
        allow_write=v.boolean("allow_write", False),
        write_root=v.convert("write_root", directory),
        overwrite=v.boolean("overwrite", False),
        **values,
    )
    check_per_client(v, config.max_per_client, "max_transfers", config.max_transfers)
    return None if v.failed() else config
