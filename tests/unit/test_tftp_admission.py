"""Request handling on the listening port: packets, negotiation, limits, paths, netascii."""

from __future__ import annotations

import contextlib
import os
import stat

import pytest
from hypothesis import given
from hypothesis import strategies as st

from boothop.relay.settings import ConfigError
from boothop.server.tftp import packet
from boothop.server.tftp.admission import Accepted, Admission, Refusal, Refused
from boothop.server.tftp.config import TftpConfig, parse_tftp
from boothop.server.tftp.negotiation import negotiate
from boothop.server.tftp.packet import ErrorCode, Opcode
from boothop.server.tftp.paths import FileRefused, open_file, resolve
from boothop.server.tftp.source import BytesSource, NetasciiSource

CLIENT = ("10.61.1.5", 50000)
CONFIG = TftpConfig(root="/srv/tftp", max_transfers=3, max_per_client=2)
FILES = {"boot.bin": b"\x01" * 1000, "menu.txt": b"a\nb\rc"}


def opener(name: str) -> BytesSource:
    if name not in FILES:
        raise FileRefused(ErrorCode.FILE_NOT_FOUND, "file not found")
    return BytesSource(FILES[name])


def rrq(name: str, mode: str = "octet", **options: str) -> bytes:
    return packet.encode_request(Opcode.RRQ, name, mode, options)


def error_of(result: Refused) -> packet.Error:
    assert result.reply is not None
    decoded = packet.decode(result.reply)
    assert isinstance(decoded, packet.Error)
    return decoded


# -- packets ----------------------------------------------------------------------------------
def test_request_decodes_with_lowercased_options() -> None:
    pkt = packet.decode(rrq("a/b", "OCTET", BLKSIZE="1024"))
    assert pkt == packet.Request(Opcode.RRQ, "a/b", "octet", {"blksize": "1024"})


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\x01name",
        b"\x00\x01\x00octet\x00",
        b"\x00\x01a\x00octet\x00blksize\x00",
        b"\x00\x07ab",
    ],
)
def test_malformed_packets_raise_packet_error(data: bytes) -> None:
    with pytest.raises(packet.TftpPacketError):
        packet.decode(data)


@given(st.binary(max_size=600))
def test_any_bytes_decode_or_raise_packet_error(data: bytes) -> None:
    with contextlib.suppress(packet.TftpPacketError):
        packet.decode(data)


# -- negotiation ------------------------------------------------------------------------------
def test_blksize_and_windowsize_are_clamped_to_the_configured_maximum() -> None:
    params, oack = negotiate({"blksize": "65464", "windowsize": "1000"}, 10, TftpConfig(root="/"))
    assert (params.blksize, params.windowsize) == (1468, 64)
    assert oack == {"blksize": "1468", "windowsize": "64"}


def test_rfc2347_invalid_or_unknown_options_are_left_out_of_the_oack() -> None:
    requested = {"blksize": "7", "windowsize": "0", "timeout": "256", "multicast": "", "tsize": "x"}
    params, oack = negotiate(requested, 10, CONFIG)
    assert oack == {}
    assert (params.blksize, params.windowsize, params.timeout) == (512, 1, CONFIG.timeout)


def test_rfc2349_timeout_is_echoed_and_tsize_carries_the_file_size() -> None:
    params, oack = negotiate({"timeout": "3", "tsize": "0"}, 12345, CONFIG)
    assert params.timeout == 3.0
    assert oack == {"timeout": "3", "tsize": "12345"}


def test_rfc2349_timeout_above_max_timeout_is_refused_not_lowered() -> None:
    """The OACK's timeout "must match" the request: one above tftp.max_timeout (default 10) is
    left out, and the server's own timeout is used."""
    params, oack = negotiate({"timeout": "255"}, 10, CONFIG)
    assert oack == {} and params.timeout == CONFIG.timeout
    params, oack = negotiate({"timeout": "10"}, 10, CONFIG)
    assert oack == {"timeout": "10"} and params.timeout == 10.0
    params, oack = negotiate({"timeout": "3"}, 10, TftpConfig(root="/", max_timeout=2))
    assert oack == {} and params.timeout == 1.0


def test_negotiated_transfers_carry_the_time_limit() -> None:
    params, _ = negotiate({}, 10, TftpConfig(root="/", max_transfer_time=30))
    assert params.max_time == 30 and TftpConfig(root="/").max_transfer_time == 600


def test_tsize_is_omitted_when_the_size_is_unknown() -> None:
    assert negotiate({"tsize": "0"}, None, CONFIG)[1] == {}


# -- admission --------------------------------------------------------------------------------
def test_read_request_is_accepted_with_its_options() -> None:
    admission = Admission(CONFIG)
    result = admission.admit(rrq("boot.bin", blksize="1024", tsize="0"), CLIENT, opener)
    assert isinstance(result, Accepted)
    assert result.transfer.params.blksize == 1024
    [oack] = result.transfer.start(0.0)
    assert packet.decode(oack) == packet.OptionAck({"blksize": "1024", "tsize": "1000"})
    assert admission.active == 1


def test_write_requests_are_refused_with_access_violation() -> None:
    admission = Admission(CONFIG)
    result = admission.admit(packet.encode_request(Opcode.WRQ, "x", "octet", {}), CLIENT, opener)
    assert isinstance(result, Refused) and result.reason is Refusal.WRITE_DISABLED
    assert error_of(result).code == ErrorCode.ACCESS_VIOLATION


def test_missing_file_is_error_1() -> None:
    result = Admission(CONFIG).admit(rrq("nope"), CLIENT, opener)
    assert isinstance(result, Refused) and error_of(result).code == ErrorCode.FILE_NOT_FOUND


def test_mail_mode_is_an_illegal_operation() -> None:
    result = Admission(CONFIG).admit(rrq("boot.bin", "mail"), CLIENT, opener)
    assert isinstance(result, Refused) and error_of(result).code == ErrorCode.ILLEGAL_OPERATION


@pytest.mark.parametrize("data", [b"junk", packet.encode_ack(1), packet.encode_data(1, b"x")])
def test_garbage_and_non_requests_get_no_reply(data: bytes) -> None:
    admission = Admission(CONFIG)
    result = admission.admit(data, CLIENT, opener)
    assert isinstance(result, Refused) and result.reply is None
    assert sum(admission.refused.values()) == 1


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\x01pxelinux.0\x00evil\x00octet\x00",  # a NUL inside the file name
        b"\x00\x01boot.bin\x00/../../etc/passwd\x00octet\x00",  # a traversal after the NUL
        b"\x00\x02up.bin\x00x\x00octet\x00",
        b"\x00\x01name",
        b"\x00\x01\x00octet\x00",
        b"\x00\x01",
    ],
)
def test_rfc1350_malformed_request_is_answered_with_error_4_at_once(data: bytes) -> None:
    admission = Admission(CONFIG)
    result = admission.admit(data, CLIENT, opener)
    assert isinstance(result, Refused) and result.reason is Refusal.MALFORMED
    assert error_of(result).code == ErrorCode.ILLEGAL_OPERATION
    assert admission.active == 0 and admission.refused[Refusal.MALFORMED] == 1


def test_per_client_and_total_limits() -> None:
    admission = Admission(CONFIG)
    for _ in range(2):
        assert isinstance(admission.admit(rrq("boot.bin"), CLIENT, opener), Accepted)
    third = admission.admit(rrq("boot.bin"), CLIENT, opener)
    assert isinstance(third, Refused) and third.reason is Refusal.CLIENT_LIMIT
    assert isinstance(admission.admit(rrq("boot.bin"), ("10.61.1.6", 1), opener), Accepted)
    busy = admission.admit(rrq("boot.bin"), ("10.61.1.7", 1), opener)
    assert isinstance(busy, Refused) and busy.reason is Refusal.BUSY
    admission.release(CLIENT)
    assert isinstance(admission.admit(rrq("boot.bin"), ("10.61.1.7", 1), opener), Accepted)


def test_netascii_request_converts_line_ends_and_omits_tsize() -> None:
    result = Admission(CONFIG).admit(rrq("menu.txt", "netascii", tsize="0"), CLIENT, opener)
    assert isinstance(result, Accepted)
    [data] = result.transfer.start(0.0)
    assert packet.decode(data) == packet.Data(1, b"a\r\nb\r\0c")


def test_netascii_conversion_across_chunk_boundaries() -> None:
    raw = b"line\n" * 100 + b"cr\r" * 50
    source = NetasciiSource(BytesSource(raw), chunk=7)
    out = b"".join(iter(lambda: source.read(13), b""))
    assert out == raw.replace(b"\r", b"\r\0").replace(b"\n", b"\r\n")


@given(st.binary(max_size=300))
def test_any_bytes_on_the_listening_port_never_raise(data: bytes) -> None:
    Admission(CONFIG).admit(data, CLIENT, opener)


# -- path safety ------------------------------------------------------------------------------
@pytest.fixture
def root(tmp_path):  # type: ignore[no-untyped-def]
    base = tmp_path / "root"
    (base / "sub").mkdir(parents=True)
    (base / "sub" / "file.bin").write_bytes(b"inside")
    (tmp_path / "secret").write_bytes(b"outside")
    (base / "escape").symlink_to(tmp_path / "secret")
    (base / "alias").symlink_to(base / "sub" / "file.bin")
    os.mkfifo(base / "fifo")
    return str(base)


@pytest.mark.parametrize(
    "name", ["sub/file.bin", "/sub/file.bin", "sub\\file.bin", "./sub//file.bin", "alias"]
)
def test_files_inside_the_root_are_served(root: str, name: str) -> None:
    source = open_file(root, name)
    assert source.read(100) == b"inside" and source.size == 6
    source.close()


@pytest.mark.parametrize(
    "name", ["../secret", "sub/../../secret", "/../secret", "sub/..", "..\\secret"]
)
def test_dot_dot_is_refused(root: str, name: str) -> None:
    with pytest.raises(FileRefused) as info:
        resolve(root, name)
    assert info.value.code == ErrorCode.ACCESS_VIOLATION


def test_symlink_leading_out_of_the_root_is_refused(root: str) -> None:
    with pytest.raises(FileRefused, match="outside the root"):
        open_file(root, "escape")


@pytest.mark.parametrize("name", ["fifo", "sub", "/"])
def test_non_regular_files_are_refused(root: str, name: str) -> None:
    with pytest.raises(FileRefused) as info:
        open_file(root, name)
    assert info.value.code in (ErrorCode.ACCESS_VIOLATION, ErrorCode.FILE_NOT_FOUND)


@pytest.mark.skipif(os.geteuid() != 0, reason="creating a device node needs root")
def test_device_files_are_refused(root: str) -> None:
    os.mknod(os.path.join(root, "null"), stat.S_IFCHR | 0o666, os.makedev(1, 3))
    with pytest.raises(FileRefused, match="not a regular file"):
        open_file(root, "null")


def test_missing_file_is_not_found(root: str) -> None:
    with pytest.raises(FileRefused) as info:
        open_file(root, "sub/missing")
    assert info.value.code == ErrorCode.FILE_NOT_FOUND


# -- configuration ----------------------------------------------------------------------------
def test_config_defaults_and_values() -> None:
    config = parse_tftp({"root": "/srv/tftp", "port": 6969, "timeout": 2}, "x.toml")
    assert (config.port, config.timeout, config.max_blksize) == (6969, 2.0, 1468)
    assert (config.max_timeout, config.max_transfer_time) == (10, 600.0)
    config = parse_tftp({"root": "/r", "max_timeout": 30, "max_transfer_time": 90}, "x.toml")
    assert (config.max_timeout, config.max_transfer_time) == (30, 90.0)


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({}, "tftp.root"),
        ({"root": "relative"}, "tftp.root"),
        ({"root": "/r", "port": 0}, "tftp.port"),
        ({"root": "/r", "max_blksize": 4}, "tftp.max_blksize"),
        ({"root": "/r", "address": "nope"}, "tftp.address"),
        ({"root": "/r", "address": 5}, "tftp.address"),
        ({"root": "/r", "timeout": "1"}, "tftp.timeout"),
        ({"root": "/r", "blocksize": 512}, "tftp.blocksize"),
        ({"root": "/r", "max_timeout": 0}, "tftp.max_timeout"),
        ({"root": "/r", "max_timeout": 256}, "tftp.max_timeout"),
        ({"root": "/r", "max_transfer_time": 0}, "tftp.max_transfer_time"),
        ({"root": "/r", "max_transfer_time": "1h"}, "tftp.max_transfer_time"),
        ({"root": "/r", "max_transfers": 2, "max_per_client": 3}, "tftp.max_per_client"),
    ],
)
def test_config_errors_name_the_key(table: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_tftp(table, "x.toml")
    assert info.value.key == key
