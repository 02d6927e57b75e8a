"""The HTTP file server's decisions (server/http/respond.py), without sockets: status, headers,
which octets; and the shared confinement through the real opener over a temporary root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from boothop.server.http.respond import Answer, Unavailable, answer, validators
from boothop.server.http.service import open_served

SIZE = 1000


class FakeFile:
    def __init__(self, size: int = SIZE, mtime: float = 1_700_000_000.0) -> None:
        self.size, self.mtime, self.closed = size, mtime, False

    def close(self) -> None:
        self.closed = True


class Opener:
    """Files by path; records what it was asked for."""

    def __init__(self, files: dict[str, FakeFile] | None = None) -> None:
        self.files = files if files is not None else {"/boot/kernel": FakeFile()}
        self.asked: list[str] = []

    def __call__(self, path: str) -> FakeFile:
        self.asked.append(path)
        if path not in self.files:
            raise Unavailable(404, "file not found")
        return self.files[path]


def get(target: bytes = b"/boot/kernel", *headers: tuple[bytes, bytes], method: bytes = b"GET",
        opener: Opener | None = None) -> Answer:
    return answer(method, target, list(headers), opener or Opener(), max_target=256)


def header(reply: Answer, name: bytes) -> bytes | None:
    return next((value for key, value in reply.headers if key == name), None)


def test_a_whole_file_is_200_with_its_length_and_validators() -> None:
    reply = get()
    assert (reply.status, reply.offset, reply.length) == (200, 0, SIZE)
    assert header(reply, b"content-length") == b"1000"
    assert header(reply, b"accept-ranges") == b"bytes"
    etag, modified = validators(FakeFile())
    assert header(reply, b"etag") == etag and header(reply, b"last-modified") == modified
    assert modified == b"Tue, 14 Nov 2023 22:13:20 GMT"


def test_head_announces_the_length_and_sends_no_octet() -> None:
    reply = get(method=b"HEAD")
    assert reply.status == 200 and reply.length == 0
    assert header(reply, b"content-length") == b"1000"


@pytest.mark.parametrize("method", [b"POST", b"PUT", b"DELETE", b"OPTIONS", b"BREW"])
def test_other_methods_are_405_with_allow(method: bytes) -> None:
    """RFC 9110 §15.5.6: a 405 "MUST generate an Allow header field"."""
    opener = Opener()
    reply = get(method=method, opener=opener)
    assert reply.status == 405 and header(reply, b"allow") == b"GET, HEAD"
    assert opener.asked == []


def test_a_long_target_is_414_before_any_file_is_opened() -> None:
    opener = Opener()
    assert get(b"/" + b"a" * 300, opener=opener).status == 414
    assert opener.asked == []


@pytest.mark.parametrize("target", [b"*", b"boot/kernel", b"/a%00b", b"/%ff%fe"])
def test_a_target_that_is_no_path_is_400(target: bytes) -> None:
    assert get(target).status == 400


@pytest.mark.parametrize(("target", "path"), [
    (b"/boot/kernel?x=1", "/boot/kernel"),
    (b"/boot/%6bernel", "/boot/kernel"),
    (b"http://10.0.0.1:8080/boot/kernel", "/boot/kernel"),  # RFC 9112 §3.2.2 absolute-form
    (b"/%2e%2e/etc/passwd", "/../etc/passwd"),  # decoded once: the confinement sees ".."
])
def test_the_opener_gets_the_decoded_path(target: bytes, path: str) -> None:
    opener = Opener()
    get(target, opener=opener)
    assert opener.asked == [path]


def test_a_missing_file_is_the_openers_status() -> None:
    reply = get(b"/nothing")
    assert reply.status == 404 and b"file not found" in reply.body
    assert header(reply, b"content-length") == str(len(reply.body)).encode()


@pytest.mark.parametrize(("spec", "offset", "length"), [
    (b"bytes=0-0", 0, 1),
    (b"bytes=10-19", 10, 10),
    (b"bytes=990-", 990, 10),
    (b"bytes=990-5000", 990, 10),  # last-pos past the end: clipped (RFC 9110 §14.1.1)
    (b"bytes=-10", 990, 10),  # suffix
    (b"bytes=-5000", 0, SIZE),  # a suffix longer than the file is the whole file
    (b"BYTES = 5 - 6", 5, 2),
])
def test_one_range_is_206_with_content_range(spec: bytes, offset: int, length: int) -> None:
    reply = get(b"/boot/kernel", (b"range", spec))
    assert (reply.status, reply.offset, reply.length) == (206, offset, length)
    content_range = f"bytes {offset}-{offset + length - 1}/{SIZE}".encode()
    assert header(reply, b"content-range") == content_range
    assert header(reply, b"content-length") == str(length).encode()


@pytest.mark.parametrize("spec", [b"bytes=1000-", b"bytes=5000-6000", b"bytes=-0"])
def test_an_unsatisfiable_range_is_416_with_the_length_and_the_file_closed(spec: bytes) -> None:
    """RFC 9110 §15.5.17: Content-Range "bytes */length"."""
    opener = Opener()
    reply = get(b"/boot/kernel", (b"range", spec), opener=opener)
    assert reply.status == 416 and header(reply, b"content-range") == b"bytes */1000"
    assert reply.file is None and opener.files["/boot/kernel"].closed


@pytest.mark.parametrize("spec", [
    b"bytes=0-1,5-6",  # several ranges: the whole file (documented; RFC 9110 §14.2 "MAY ignore")
    b"items=0-1",  # another unit: "MUST ignore"
    b"bytes=9-5",  # invalid (last < first)
    b"bytes=x-",
    b"bytes=5",
    b"bytes=-",
    b"bytes=" + b"9" * 30 + b"-",
])
def test_ranges_not_served_as_one_give_the_whole_file(spec: bytes) -> None:
    reply = get(b"/boot/kernel", (b"range", spec))
    assert (reply.status, reply.length) == (200, SIZE)
    assert header(reply, b"content-range") is None


def test_head_ignores_range() -> None:
    """RFC 9110 §14.2: range handling is defined for GET only."""
    assert get(b"/boot/kernel", (b"range", b"bytes=0-9"), method=b"HEAD").status == 200


def test_if_range_applies_the_range_only_while_the_file_is_unchanged() -> None:
    etag, modified = validators(FakeFile())
    for validator in (etag, modified):
        reply = get(b"/boot/kernel", (b"range", b"bytes=0-9"), (b"if-range", validator))
        assert reply.status == 206
    stale = get(b"/boot/kernel", (b"range", b"bytes=0-9"), (b"if-range", b'"other"'))
    assert (stale.status, stale.length) == (200, SIZE)


def test_an_empty_file() -> None:
    opener = Opener({"/empty": FakeFile(size=0)})
    assert get(b"/empty", opener=opener).status == 200
    assert get(b"/empty", (b"range", b"bytes=0-"), opener=Opener({"/empty": FakeFile(0)})
               ).status == 416
    assert get(b"/empty", (b"range", b"bytes=-5"), opener=Opener({"/empty": FakeFile(0)})
               ).status == 200


@given(method=st.sampled_from([b"GET", b"HEAD", b"PUT"]), target=st.binary(max_size=300),
       spec=st.binary(max_size=40), size=st.integers(0, 5000))
def test_any_request_gets_an_answer_whose_octets_lie_inside_the_file(
        method: bytes, target: bytes, spec: bytes, size: int) -> None:
    opener = Opener({path: FakeFile(size) for path in ("/boot/kernel",)})
    reply = answer(method, b"/boot/kernel" if target[:1] != b"/" else target,
                   [(b"range", b"bytes=" + spec)], opener, max_target=256)
    kernel = opener.files["/boot/kernel"]
    if reply.status in (200, 206):
        assert reply.file is kernel and not kernel.closed
        assert reply.offset >= 0 and reply.offset + reply.length <= size
    else:  # an error answer leaves no file open
        assert reply.file is None and reply.length == 0
        assert kernel.closed or "/boot/kernel" not in opener.asked


# -- the shared confinement, through the opener the service uses --------------------------------
@pytest.fixture
def root(tmp_path: Path) -> Path:
    base = tmp_path / "root"
    (base / "sub").mkdir(parents=True)
    (base / "sub" / "file.bin").write_bytes(b"x" * 10)
    (tmp_path / "secret").write_bytes(b"secret")
    (base / "escape").symlink_to(tmp_path / "secret")
    os.mkfifo(base / "fifo")
    return base


@pytest.mark.parametrize(("target", "status"), [
    (b"/sub/file.bin", 200),
    (b"/sub/../sub/file.bin", 403),
    (b"/%2e%2e/secret", 403),
    (b"/..%2fsecret", 403),
    (b"/escape", 403),  # a symlink out of the root
    (b"/sub", 403),  # a directory
    (b"/fifo", 403),
    (b"/", 404),
    (b"/missing", 404),
])
def test_the_real_opener_confines_to_the_root(root: Path, target: bytes, status: int) -> None:
    reply = answer(b"GET", target, [], lambda path: open_served(str(root), path))
    assert reply.status == status
    if reply.file is not None:
        reply.file.close()
