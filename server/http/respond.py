"""What the HTTP file server answers to one request: the sans-IO decisions (RFC 9110, RFC 9112).

h11 parses and frames the messages; this module takes a parsed request head and a file opener
and says which status, which headers and which octets of which file to send. It opens files only
through the opener it is given (the shell passes the confined ``open_file`` of the TFTP root), so
every rule here is tested without a socket or a file.

Only GET and HEAD. Ranges: one range per request (206 with Content-Range, 416 when it cannot be
satisfied); a request for several ranges gets the whole file (200), which RFC 9110 §14.2 allows
("A server MAY ignore the Range header field"), for boot loaders ask for one range at a time
and multipart/byteranges would be code no client here needs.
"""

from __future__ import annotations

import dataclasses
import email.utils
from collections.abc import Callable, Sequence
from typing import Protocol
from urllib.parse import unquote_to_bytes

Headers = Sequence[tuple[bytes, bytes]]

#: Methods served; RFC 9110 §15.5.6: a 405 "MUST generate an Allow header field".
ALLOWED = (b"GET", b"HEAD")
REASONS = {
    200: "OK", 206: "Partial Content", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 414: "URI Too Long",
    416: "Range Not Satisfiable", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 503: "Service Unavailable",
}
#: Digits of a byte position: 19 covers any file size (2**63), and bounds the parse.
_MAX_DIGITS = 19


class Unavailable(Exception):
    """The opener's refusal: the status to answer (404, 403) and why, for the log."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class ServedFile(Protocol):
    """An open regular file: what the answer needs to know of it before sending it."""

    size: int
    mtime: float

    def close(self) -> None: ...


Opener = Callable[[str], ServedFile]


@dataclasses.dataclass(frozen=True)
class Answer:
    """The status line and headers to send, then ``body`` (errors) or ``length`` octets of
    ``file`` from ``offset`` (none for HEAD). ``reason`` says why, for the log line."""

    status: int
    headers: list[tuple[bytes, bytes]]
    reason: str
    body: bytes = b""
    file: ServedFile | None = None
    offset: int = 0
    length: int = 0
    path: str = ""


def error(status: int, reason: str, extra: Sequence[tuple[bytes, bytes]] = ()) -> Answer:
    """A short text/plain answer: the status and why (no client-supplied text in it)."""
    body = f"{status} {REASONS.get(status, '')}: {reason}\n".encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8"),
               (b"content-length", str(len(body)).encode()), *extra]
    return Answer(status, headers, reason, body)


def request_path(target: bytes, max_target: int) -> str | Answer:
    """The file path a request target names, or the error answer (414, 400).

    Origin-form (``/path?query``) and absolute-form (``http://host/path``, RFC 9112 §3.2.2: "A
    server MUST accept the absolute-form in requests"); the query is ignored; percent-escapes
    are decoded here, once, so that ``%2e%2e`` reaches the confinement as ``..``.
    """
    if len(target) > max_target:
        return error(414, f"request target longer than {max_target} octets")
    if target[:7].lower() == b"http://":
        slash = target.find(b"/", 7)
        target = target[slash:] if slash >= 0 else b"/"
    if not target.startswith(b"/"):
        return error(400, "request target is not a path")
    raw = unquote_to_bytes(target.partition(b"?")[0])
    if b"\0" in raw:
        return error(400, "NUL in request target")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return error(400, "request target is not UTF-8")


def answer(method: bytes, target: bytes, headers: Headers, opener: Opener, *,
           max_target: int = 2048) -> Answer:
    """The answer to one request head (h11's lower-cased header names)."""
    if method not in ALLOWED:
        return error(405, "only GET and HEAD", [(b"allow", b", ".join(ALLOWED))])
    path = request_path(target, max_target)
    if isinstance(path, Answer):
        return path
    try:
        opened = opener(path)
    except Unavailable as refused:
        return dataclasses.replace(error(refused.status, refused.reason), path=path)
    try:
        return _file_answer(method, headers, opened, path)
    except BaseException:
        opened.close()
        raise


def validators(opened: ServedFile) -> tuple[bytes, bytes]:
    """(ETag, Last-Modified) of a file: a strong tag from its size and modification time."""
    mtime_ns = int(opened.mtime * 1e9)
    etag = f'"{opened.size:x}-{mtime_ns:x}"'.encode()
    return etag, email.utils.formatdate(opened.mtime, usegmt=True).encode()


def _file_answer(method: bytes, headers: Headers, opened: ServedFile, path: str) -> Answer:
    size = opened.size
    etag, modified = validators(opened)
    common = [(b"content-type", b"application/octet-stream"), (b"accept-ranges", b"bytes"),
              (b"etag", etag), (b"last-modified", modified)]
    ranges = [value for name, value in headers if name == b"range"]
    # RFC 9110 §14.2: "A server MUST ignore a Range header field received with a request method
    # that is unrecognized or for which range handling is not defined": GET is the only one.
    ranged = method == b"GET" and _if_range(headers, etag, modified)
    try:
        wanted = _range(ranges, size) if ranged else None
    except _Unsatisfiable:
        opened.close()
        # RFC 9110 §15.5.17: the server "SHOULD generate a Content-Range header field
        # specifying the current length of the selected representation".
        return dataclasses.replace(
            error(416, "range not satisfiable", [(b"content-range", f"bytes */{size}".encode())]),
            path=path)
    if wanted is None:
        status, offset, length, reason = 200, 0, size, "whole file"
    else:
        offset, length = wanted
        status, reason = 206, "one range"
        common.append((b"content-range", f"bytes {offset}-{offset + length - 1}/{size}".encode()))
    sent = length if method == b"GET" else 0
    return Answer(status, [*common, (b"content-length", str(length).encode())], reason,
                  file=opened, offset=offset, length=sent, path=path)


def _if_range(headers: Headers, etag: bytes, modified: bytes) -> bool:
    """Whether a Range may be applied: RFC 9110 §13.1.5, a range is honoured only if the
    If-Range validator (when there is one) matches the file, by strong comparison of the entity
    tag or exactly the Last-Modified date; otherwise the whole file is sent."""
    conditions = [value for name, value in headers if name == b"if-range"]
    if not conditions:
        return True
    return len(conditions) == 1 and conditions[0].strip() in (etag, modified)


def _position(text: bytes) -> int | None:
    text = text.strip()
    if not text or len(text) > _MAX_DIGITS or not text.isdigit():
        return None
    return int(text)


class _Unsatisfiable(Exception):
    """A valid range outside the file: 416."""


def _range(values: Sequence[bytes], size: int) -> tuple[int, int] | None:
    """(offset, length) of the one byte range asked for, _Unsatisfiable when it lies outside
    the file, or None to send the whole file: no Range, another unit ("MUST ignore a Range header
    field that contains a range unit it does not understand", §14.2), several ranges, or an
    invalid one (§14.2: a server "MAY ignore or reject a Range header field that contains an
    invalid ranges-specifier")."""
    if len(values) != 1:
        return None
    unit, equals, spec = values[0].partition(b"=")
    if not equals or unit.strip().lower() != b"bytes" or b"," in spec:
        return None
    first_text, dash, last_text = spec.partition(b"-")
    if not dash:
        return None
    if not first_text.strip():
        # suffix-range: the last N octets; §14.1.1: satisfiable if N is non-zero, and "if the
        # selected representation is shorter than the specified suffix-length, the entire
        # representation is used".
        suffix = _position(last_text)
        if suffix is None:
            return None
        if suffix == 0:
            raise _Unsatisfiable
        if size == 0:
            return None
        length = min(suffix, size)
        return size - length, length
    first = _position(first_text)
    last = _position(last_text) if last_text.strip() else None
    if first is None or (last_text.strip() and (last is None or last < first)):
        return None
    # §14.1.1: an int-range "is satisfiable if ... first-pos is less than the current length".
    if first >= size:
        raise _Unsatisfiable
    end = size - 1 if last is None else min(last, size - 1)
    return first, end - first + 1
