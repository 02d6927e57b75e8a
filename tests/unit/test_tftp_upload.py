"""Write requests on the listening port, upload path safety on a real filesystem, configuration."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from boothop.relay.settings import ConfigError
from boothop.server.tftp import packet, paths
from boothop.server.tftp.admission import Accepted, Admission, Refusal, Refused
from boothop.server.tftp.config import TftpConfig, parse_tftp
from boothop.server.tftp.packet import ErrorCode, Opcode
from boothop.server.tftp.paths import FileRefused, _FileWriter, create_file
from boothop.server.tftp.sink import BytesSink, NetasciiSink, SinkError
from boothop.server.tftp.write import WriteTransfer

CLIENT = ("10.65.1.5", 50000)
WRITABLE = TftpConfig(root="/srv/tftp", allow_write=True, max_write_size=10_000,
                      max_transfers=3, max_per_client=2)


def wrq(name: str, mode: str = "octet", **options: str) -> bytes:
    return packet.encode_request(Opcode.WRQ, name, mode, options)


def never_read(name: str) -> BytesSink:
    raise AssertionError("a write request must not open a file for reading")


class Creator:
    def __init__(self, refuse: FileRefused | None = None) -> None:
        self.refuse = refuse
        self.created: list[str] = []
        self.sinks: list[BytesSink] = []

    def __call__(self, name: str) -> BytesSink:
        if self.refuse:
            raise self.refuse
        self.created.append(name)
        self.sinks.append(BytesSink())
        return self.sinks[-1]


def refused_code(result: Accepted | Refused) -> int:
    assert isinstance(result, Refused) and result.reply is not None
    decoded = packet.decode(result.reply)
    assert isinstance(decoded, packet.Error)
    return decoded.code


# -- admission --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "config", [TftpConfig(root="/r"), TftpConfig(root="/r", allow_write=False)]
)
def test_writes_disabled_by_default_get_error_2_and_create_nothing(config: TftpConfig) -> None:
    creator = Creator()
    admission = Admission(config)
    result = admission.admit(wrq("up.bin"), CLIENT, never_read, creator)  # type: ignore[arg-type]
    assert refused_code(result) == ErrorCode.ACCESS_VIOLATION
    assert isinstance(result, Refused) and result.reason is Refusal.WRITE_DISABLED
    assert creator.created == [] and admission.active == 0


def test_enabled_write_without_a_creator_is_still_refused() -> None:
    result = Admission(WRITABLE).admit(wrq("up.bin"), CLIENT, never_read)  # type: ignore[arg-type]
    assert refused_code(result) == ErrorCode.ACCESS_VIOLATION


def test_enabled_write_is_accepted_and_answered_with_ack_0() -> None:
    creator = Creator()
    admission = Admission(WRITABLE)
    result = admission.admit(wrq("up.bin"), CLIENT, never_read, creator)  # type: ignore[arg-type]
    assert isinstance(result, Accepted) and isinstance(result.transfer, WriteTransfer)
    assert creator.created == ["up.bin"] and admission.active == 1
    [ack] = result.transfer.start(0.0)
    assert packet.decode(ack) == packet.Ack(0)


def test_rfc2349_write_tsize_is_echoed_with_the_other_options() -> None:
    result = Admission(WRITABLE).admit(
        wrq("up.bin", tsize="9000", blksize="1024", windowsize="8", timeout="2"), CLIENT,
        never_read, Creator(),  # type: ignore[arg-type]
    )
    assert isinstance(result, Accepted)
    [oack] = result.transfer.start(0.0)
    assert packet.decode(oack) == packet.OptionAck(
        {"tsize": "9000", "blksize": "1024", "windowsize": "8", "timeout": "2"})
    assert (result.transfer.params.blksize, result.transfer.params.windowsize) == (1024, 8)


def test_rfc2349_announced_size_over_the_limit_gets_error_3_before_any_file_is_made() -> None:
    creator = Creator()
    admission = Admission(WRITABLE)
    result = admission.admit(wrq("up.bin", tsize="10001"), CLIENT, never_read, creator)  # type: ignore[arg-type]
    assert refused_code(result) == ErrorCode.DISK_FULL
    assert isinstance(result, Refused) and result.reason is Refusal.TOO_LARGE
    assert creator.created == []
    assert isinstance(admission.admit(wrq("up.bin", tsize="10000"), CLIENT, never_read, creator),  # type: ignore[arg-type]
                      Accepted)


def test_existing_file_is_error_6() -> None:
    creator = Creator(FileRefused(ErrorCode.FILE_EXISTS, "file already exists"))
    result = Admission(WRITABLE).admit(wrq("up.bin"), CLIENT, never_read, creator)  # type: ignore[arg-type]
    assert refused_code(result) == ErrorCode.FILE_EXISTS


def test_netascii_write_is_decoded_on_its_way_to_the_file() -> None:
    creator = Creator()
    result = Admission(WRITABLE).admit(wrq("t.txt", "netascii"), CLIENT, never_read, creator)  # type: ignore[arg-type]
    assert isinstance(result, Accepted)
    result.transfer.start(0.0)
    result.transfer.receive(packet.encode_data(1, b"a\r\nb\r\0"), 0.1)
    assert creator.sinks[0].data == b"a\nb\r" and creator.sinks[0].committed


def test_write_in_mail_mode_is_an_illegal_operation() -> None:
    result = Admission(WRITABLE).admit(wrq("x", "mail"), CLIENT, never_read, Creator())  # type: ignore[arg-type]
    assert refused_code(result) == ErrorCode.ILLEGAL_OPERATION


def test_writes_count_against_the_transfer_limits() -> None:
    admission = Admission(WRITABLE)
    for name in ("a", "b"):
        assert isinstance(admission.admit(wrq(name), CLIENT, never_read, Creator()), Accepted)  # type: ignore[arg-type]
    third = admission.admit(wrq("c"), CLIENT, never_read, Creator())  # type: ignore[arg-type]
    assert isinstance(third, Refused) and third.reason is Refusal.CLIENT_LIMIT


# -- create_file: uploads on a real filesystem ------------------------------------------------
@pytest.fixture
def root(tmp_path: Path) -> Path:
    base = tmp_path / "root"
    (base / "sub").mkdir(parents=True)
    (base / "old.bin").write_bytes(b"old")
    (tmp_path / "outside").mkdir()
    (base / "out").symlink_to(tmp_path / "outside")  # a directory leading out
    (base / "dangling").symlink_to(tmp_path / "outside" / "new.bin")  # a file leading out
    (base / "inner").symlink_to(base / "sub")
    os.mkfifo(base / "fifo")
    return base


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_upload_is_invisible_until_commit_and_then_renamed_into_place(root: Path) -> None:
    writer = create_file(str(root), "sub/new.bin")
    writer.write(b"part one ")
    [temp] = listing(root / "sub")
    assert temp.startswith(".") and temp.endswith(".part")
    writer.write(b"part two")
    writer.commit()
    assert listing(root / "sub") == ["new.bin"]
    assert (root / "sub" / "new.bin").read_bytes() == b"part one part two"
    assert stat.S_IMODE((root / "sub" / "new.bin").stat().st_mode) & 0o044 == 0o044


def test_aborted_upload_leaves_no_file(root: Path) -> None:
    writer = create_file(str(root), "/sub\\new.bin")
    writer.write(b"x" * 100_000)
    writer.abort()
    writer.abort()  # idempotent
    assert listing(root / "sub") == []


def test_existing_file_is_refused_with_error_6(root: Path) -> None:
    with pytest.raises(FileRefused) as info:
        create_file(str(root), "old.bin")
    assert info.value.code == ErrorCode.FILE_EXISTS
    assert (root / "old.bin").read_bytes() == b"old"


def test_overwrite_replaces_an_existing_file_only_on_commit(root: Path) -> None:
    writer = create_file(str(root), "old.bin", overwrite=True)
    writer.write(b"new")
    assert (root / "old.bin").read_bytes() == b"old"
    writer.commit()
    assert (root / "old.bin").read_bytes() == b"new"


def test_file_created_during_the_upload_is_not_clobbered(root: Path) -> None:
    writer = create_file(str(root), "race.bin")
    writer.write(b"mine")
    (root / "race.bin").write_bytes(b"theirs")
    with pytest.raises(SinkError) as info:
        writer.commit()
    assert info.value.code == ErrorCode.FILE_EXISTS
    assert (root / "race.bin").read_bytes() == b"theirs"
    assert not [n for n in listing(root) if n.endswith(".part")]


@pytest.mark.parametrize("name", ["../x", "sub/../../x", "/../x", "..\\x", "sub/.."])
def test_dot_dot_is_refused(root: Path, name: str) -> None:
    with pytest.raises(FileRefused) as info:
        create_file(str(root), name)
    assert info.value.code == ErrorCode.ACCESS_VIOLATION


@pytest.mark.parametrize("name", ["out/new.bin", "dangling"])
def test_symlinks_leading_out_of_the_write_root_are_refused(root: Path, name: str) -> None:
    with pytest.raises(FileRefused, match="outside the root"):
        create_file(str(root), name)
    assert listing(root.parent / "outside") == []


def test_symlinked_directory_inside_the_root_is_followed(root: Path) -> None:
    writer = create_file(str(root), "inner/via-link.bin")
    writer.commit()
    assert listing(root / "sub") == ["via-link.bin"]


@pytest.mark.parametrize("name", ["fifo", "sub", "/", "", "."])
def test_non_regular_targets_are_refused_even_with_overwrite(root: Path, name: str) -> None:
    with pytest.raises(FileRefused) as info:
        create_file(str(root), name, overwrite=True)
    assert info.value.code in (ErrorCode.ACCESS_VIOLATION, ErrorCode.FILE_NOT_FOUND)


def test_missing_directory_is_not_created(root: Path) -> None:
    with pytest.raises(FileRefused) as info:
        create_file(str(root), "nodir/new.bin")
    assert info.value.code == ErrorCode.FILE_NOT_FOUND
    assert not (root / "nodir").exists()


def test_a_full_disk_is_error_3(tmp_path: Path) -> None:
    # /dev/full fails every write with ENOSPC, as a full filesystem does.
    dir_fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    writer = _FileWriter(dir_fd, "x", "x.part", os.open("/dev/full", os.O_WRONLY), False)
    try:
        with pytest.raises(SinkError) as info:
            writer.write(b"x" * (1 << 17))
        assert info.value.code == ErrorCode.DISK_FULL
    finally:
        writer.abort()


def test_netascii_sink_over_a_real_file(root: Path) -> None:
    sink = NetasciiSink(create_file(str(root), "t.txt"))
    sink.write(b"one\r")
    sink.write(b"\ntwo\r\n")
    sink.commit()
    assert (root / "t.txt").read_bytes() == b"one\ntwo\n"


# -- configuration ----------------------------------------------------------------------------
def test_write_config_defaults() -> None:
    config = parse_tftp({"root": "/srv/tftp"}, "x.toml")
    assert (config.allow_write, config.overwrite, config.write_root) == (False, False, None)
    assert config.max_write_size == 64 * 1024 * 1024
    assert config.upload_root == "/srv/tftp"


def test_write_config_values() -> None:
    config = parse_tftp({"root": "/srv/tftp", "allow_write": True, "write_root": "/srv/up",
                         "max_write_size": 1024, "overwrite": True}, "x.toml")
    assert (config.allow_write, config.overwrite, config.max_write_size) == (True, True, 1024)
    assert config.upload_root == "/srv/up"


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"root": "/r", "allow_write": "yes"}, "tftp.allow_write"),
        ({"root": "/r", "allow_write": 1}, "tftp.allow_write"),
        ({"root": "/r", "overwrite": 0}, "tftp.overwrite"),
        ({"root": "/r", "write_root": "up"}, "tftp.write_root"),
        ({"root": "/r", "write_root": 5}, "tftp.write_root"),
        ({"root": "/r", "max_write_size": 0}, "tftp.max_write_size"),
        ({"root": "/r", "max_write_size": True}, "tftp.max_write_size"),
    ],
)
def test_write_config_errors_name_the_key(table: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_tftp(table, "x.toml")
    assert info.value.key == key


def swapped_after_resolve(monkeypatch: pytest.MonkeyPatch, directory: Path, target: Path) -> None:
    """Between create_file's check (resolve) and its open, ``directory`` becomes a symlink to
    ``target``: the race of an attacker with write access inside the root."""
    checked = paths.resolve

    def racing(root: str, filename: str) -> str:
        real = checked(root, filename)
        directory.rename(directory.with_name(directory.name + ".moved"))
        directory.symlink_to(target)
        return real

    monkeypatch.setattr(paths, "resolve", racing)


@pytest.mark.parametrize("swapped", ["sub", "deep"])
def test_directory_swapped_for_a_symlink_after_the_check_writes_nothing_outside(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, swapped: str
) -> None:
    """The upload's directory ("sub"), or one above it ("deep" of deep/sub), replaced by a
    symlink leading out of the root between check and open: refused, nothing written outside."""
    (root / "deep" / "sub").mkdir(parents=True)
    outside = tmp_path / "outside"
    (outside / "sub").mkdir()
    swapped_after_resolve(monkeypatch, root / swapped, outside / "sub" if swapped == "sub"
                          else outside)
    with pytest.raises(FileRefused):
        writer = create_file(str(root), f"{'deep/' if swapped == 'deep' else ''}sub/new.bin")
        writer.write(b"escaped")
        writer.commit()
    assert listing(outside / "sub") == []
