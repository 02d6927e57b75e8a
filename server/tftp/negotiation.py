"""Option negotiation for read and write requests (RFC 2347, 2348, 2349, 7440)."""

from __future__ import annotations

import dataclasses

from .config import BLKSIZE_MAX, BLKSIZE_MIN, WINDOWSIZE_MAX, TftpConfig

#: RFC 1350 §1: "data is sent in blocks of 512 bytes" when no blksize is negotiated.
DEFAULT_BLKSIZE = 512


@dataclasses.dataclass(frozen=True, slots=True)
class TransferParams:
    blksize: int = DEFAULT_BLKSIZE
    windowsize: int = 1
    timeout: float = 1.0
    retries: int = 5
    #: Seconds the whole transfer may take (tftp.max_transfer_time).
    max_time: float = 600.0


def _int(value: str) -> int | None:
    return int(value) if value.isdigit() and len(value) <= 10 else None


def announced_size(requested: dict[str, str]) -> int | None:
    """The size a write request announces with tsize, or None (absent or not a number)."""
    value = requested.get("tsize", "")
    return int(value) if value.isdigit() and len(value) <= 20 else None


def negotiate(
    requested: dict[str, str], file_size: int | None, config: TftpConfig, *, write: bool = False
) -> tuple[TransferParams, dict[str, str]]:
    """The parameters to use and the options to acknowledge (empty: no OACK; DATA 1 or ACK 0).

    Unknown or malformed options are left out of the OACK, as RFC 2347 allows
    ("Options which the server does not support should be ignored").
    """
    blksize, windowsize, timeout = DEFAULT_BLKSIZE, 1, config.timeout
    oack: dict[str, str] = {}
    for name, raw in requested.items():
        value = _int(raw)
        if value is None:
            continue
        if name == "blksize" and BLKSIZE_MIN <= value <= BLKSIZE_MAX:
            # RFC 2348: the server may answer with a smaller block size than requested.
            blksize = min(value, config.max_blksize)
            oack[name] = str(blksize)
        elif name == "windowsize" and 1 <= value <= WINDOWSIZE_MAX:
            # RFC 7440 §3: the server "MAY respond with a smaller value".
            windowsize = min(value, config.max_windowsize)
            oack[name] = str(windowsize)
        elif name == "timeout" and 1 <= value <= min(255, config.max_timeout):
            # RFC 2349 §"Timeout Interval Option": the OACK value "must match" the request, so
            # a timeout above max_timeout is refused (left out of the OACK), not lowered.
            timeout = float(value)
            oack[name] = str(value)
        elif name == "tsize" and write:
            # RFC 2349: in a write request the size "is specified in the request and echoed back
            # in the OACK" (the admission has already checked it against max_write_size).
            oack[name] = str(value)
        elif name == "tsize" and file_size is not None:
            # RFC 2349: in a read request the client sends 0 and the server returns the size.
            oack[name] = str(file_size)
    params = TransferParams(blksize, windowsize, timeout, config.retries,
                            config.max_transfer_time)
    return params, oack
