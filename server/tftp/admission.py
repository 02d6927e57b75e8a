"""What the listening port does with a datagram: refuse it, or start a transfer.

Pure apart from the injected ``opener`` and ``creator`` (the shell passes ``paths.open_file`` and
``paths.create_file``; tests pass fakes).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable

from . import packet
from .config import TftpConfig
from .negotiation import announced_size, negotiate
from .packet import ErrorCode, Opcode
from .paths import FileRefused
from .sink import FileSink, NetasciiSink
from .source import FileSource, NetasciiSource
from .transfer import Address, ReadTransfer
from .write import WriteTransfer

Opener = Callable[[str], FileSource]
Creator = Callable[[str], FileSink]


class Refusal(enum.Enum):
    MALFORMED = "malformed"
    NOT_A_REQUEST = "not_a_request"
    WRITE_DISABLED = "write_disabled"
    BAD_MODE = "bad_mode"
    BUSY = "busy"
    CLIENT_LIMIT = "client_limit"
    FILE_REFUSED = "file_refused"
    TOO_LARGE = "too_large"


@dataclasses.dataclass(frozen=True, slots=True)
class Refused:
    reason: Refusal
    #: The ERROR packet to send back, or None to stay silent (garbage is not answered).
    reply: bytes | None
    detail: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Accepted:
    transfer: ReadTransfer | WriteTransfer
    request: packet.Request


class Admission:
    """Counts running transfers, overall and per client address, against the configured limits."""

    def __init__(self, config: TftpConfig) -> None:
        self._config = config
        self.active = 0
        self._per_client: dict[str, int] = {}
        self.refused: dict[Refusal, int] = dict.fromkeys(Refusal, 0)

    def admit(
        self, data: bytes, client: Address, opener: Opener, creator: Creator | None = None
    ) -> Accepted | Refused:
        """``creator`` starts uploads; without it (or without ``allow_write``) WRQs are refused."""
        result = self._decide(data, client, opener, creator)
        if isinstance(result, Refused):
            self.refused[result.reason] += 1
        else:
            self.active += 1
            self._per_client[client[0]] = self._per_client.get(client[0], 0) + 1
        return result

    def release(self, client: Address) -> None:
        self.active -= 1
        left = self._per_client[client[0]] - 1
        if left:
            self._per_client[client[0]] = left
        else:
            del self._per_client[client[0]]

    def _decide(
        self, data: bytes, client: Address, opener: Opener, creator: Creator | None
    ) -> Accepted | Refused:
        try:
            request = packet.decode(data)
        except packet.TftpPacketError as exc:
            if data[:2] in packet.REQUEST_OPCODES:
                # RFC 1350 §5 error 4, "Illegal TFTP operation": the client learns at once that
                # its request (a NUL inside the file name, say) will never be served.
                return _error(Refusal.MALFORMED, ErrorCode.ILLEGAL_OPERATION,
                              f"malformed request: {exc}")
            return Refused(Refusal.MALFORMED, None, str(exc))
        if not isinstance(request, packet.Request):
            return Refused(Refusal.NOT_A_REQUEST, None)
        writing = request.opcode == Opcode.WRQ
        if writing and (creator is None or not self._config.allow_write):
            return _error(Refusal.WRITE_DISABLED, ErrorCode.ACCESS_VIOLATION, "writes are disabled")
        if request.mode not in ("octet", "netascii"):
            # RFC 1350 §5: mode "mail" is obsolete; anything else is not TFTP.
            return _error(Refusal.BAD_MODE, ErrorCode.ILLEGAL_OPERATION, "mode not supported")
        if self.active >= self._config.max_transfers:
            return _error(Refusal.BUSY, ErrorCode.NOT_DEFINED, "server busy, try again")
        if self._per_client.get(client[0], 0) >= self._config.max_per_client:
            return _error(Refusal.CLIENT_LIMIT, ErrorCode.NOT_DEFINED, "too many transfers")
        if writing and creator is not None:
            return self._write(request, client, creator)
        try:
            source = opener(request.filename)
        except FileRefused as exc:
            return _error(Refusal.FILE_REFUSED, exc.code, exc.reason)
        if request.mode == "netascii":
            source = NetasciiSource(source)
        params, oack = negotiate(request.options, source.size, self._config)
        return Accepted(ReadTransfer(client, source, params, oack), request)

    def _write(
        self, request: packet.Request, client: Address, creator: Creator
    ) -> Accepted | Refused:
        size = announced_size(request.options)
        if size is not None and size > self._config.max_write_size:
            # RFC 2349: "If the file is too large for the server to handle, it may abort the
            # transfer with an Error packet (error code 3)."
            return _error(Refusal.TOO_LARGE, ErrorCode.DISK_FULL,
                          "disk full or allocation exceeded")
        try:
            sink = creator(request.filename)
        except FileRefused as exc:
            return _error(Refusal.FILE_REFUSED, exc.code, exc.reason)
        if request.mode == "netascii":
            sink = NetasciiSink(sink)
        params, oack = negotiate(request.options, None, self._config, write=True)
        transfer = WriteTransfer(client, sink, params, oack, self._config.max_write_size)
        return Accepted(transfer, request)


def _error(reason: Refusal, code: ErrorCode, message: str) -> Refused:
    return Refused(reason, packet.encode_error(code, message), message)
