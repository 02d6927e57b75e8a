"""boothop.relay.settings: the problems of a file at once, their lines, and the locator."""

from __future__ import annotations

from pathlib import Path

import pytest

from boothop.relay.settings import (
    EXIT_CONFIG,
    ConfigError,
    Problem,
    Validator,
    key_lines,
    key_path,
    locate,
    read_toml,
)


def line_of(text: str, key: str) -> int | None:
    return locate(key_lines(text), key)


def test_key_path_splits_dotted_keys_and_indices() -> None:
    assert key_path("dhcp.subnets[0].pools[1]") == ("dhcp", "subnets", 0, "pools", 1)
    assert key_path("pxe.boot.efi-x64") == ("pxe", "boot", "efi-x64")


def test_array_of_tables_is_counted_per_parent_element() -> None:
    text = """[dhcp]
[[dhcp.subnets]]
subnet = "10.0.1.0/24"
  [[dhcp.subnets.reservations]]
  mac = "02:00:00:00:00:01"
[[dhcp.subnets]]
subnet = "10.0.2.0/24"
  [[dhcp.subnets.reservations]]
  mac = "02:00:00:00:00:02"
  [[dhcp.subnets.reservations]]
  mac = "02:00:00:00:00:03"
  [dhcp.subnets.options]
  routers = ["10.0.2.1"]
"""
    assert line_of(text, "dhcp.subnets[0].reservations[0].mac") == 5
    assert line_of(text, "dhcp.subnets[1].subnet") == 7
    assert line_of(text, "dhcp.subnets[1].reservations[0].mac") == 9
    assert line_of(text, "dhcp.subnets[1].reservations[1].mac") == 11
    assert line_of(text, "dhcp.subnets[1].options.routers") == 13
    assert line_of(text, "dhcp.subnets[1]") == 6


def test_dotted_and_quoted_keys_and_inline_tables() -> None:
    text = """title = "x"
servers = { router = "10.0.0.1/24", dhcp = "10.0.0.2/24" }
[pxe]
boot.efi-x64 = "ipxe.efi"
"boot"."bios" = 'undionly.kpxe'
[ log ]
format = "json"  # a comment
"""
    assert line_of(text, "servers.dhcp") == 2  # inside an inline table: its line
    assert line_of(text, "pxe.boot.efi-x64") == 4
    assert line_of(text, "pxe.boot.bios") == 5
    assert line_of(text, "log.format") == 7


def test_multiline_arrays_and_strings_are_not_read_as_keys() -> None:
    text = '''helpers = [
  "10.9.0.1",
  [ "not", "a header" ],
]
motd = """
[fake]
max_hops = 3
"""
max_hops = 4
pools = ["a",
  "b"]
'''
    assert line_of(text, "max_hops") == 9
    assert line_of(text, "fake") is None
    assert line_of(text, "helpers[1]") == 1  # an element of a value array: the array's line
    assert line_of(text, "pools[1]") == 10


def test_missing_key_points_at_its_table_and_top_level_at_nothing() -> None:
    text = 'x = 1\n[[interface]]\nname = "a"\n[[interface]]\nrole = "upstream"\n'
    assert line_of(text, "interface[1].name") == 4
    assert line_of(text, "helpers") is None


def test_problem_shape_with_and_without_line() -> None:
    assert str(Problem("r.toml", "interface[1].giaddr", "bad", 12)) == (
        "r.toml:12: interface[1].giaddr: bad")
    assert str(Problem("r.toml", "helpers", "missing")) == "r.toml: helpers: missing"


def test_config_error_keeps_the_first_problem_and_lists_all() -> None:
    error = ConfigError.of([Problem("f", "a", "one", 1), Problem("f", "b", "two")])
    assert (error.path, error.key, error.reason, error.line) == ("f", "a", "one", 1)
    assert str(error) == "f:1: a: one\nf: b: two"
    assert error.prefixed("boothop-relay") == "boothop-relay: f:1: a: one\nboothop-relay: f: b: two"
    assert isinstance(error, ValueError) and EXIT_CONFIG == 78


def test_validator_records_every_problem_and_returns_defaults() -> None:
    text = 'n = "4"\nflag = 1\n[sub]\nip = "10.0.0"\n'
    v = Validator("f.toml", {"n": "4", "flag": 1, "sub": {"ip": "10.0.0"}}, text)
    assert v.integer("n", 7, 1, 10) == 7
    assert v.boolean("flag", False) is False
    sub = v.table("sub")
    assert sub is not None and sub.address("ip") is None
    assert v.failed("sub") and not v.failed("other")
    with pytest.raises(ConfigError) as caught:
        v.finish()
    assert [(p.key, p.line) for p in caught.value.problems] == [
        ("n", 1), ("flag", 2), ("sub.ip", 4)]


def test_syntax_error_carries_the_line_from_tomllib(tmp_path: Path) -> None:
    path = tmp_path / "f.toml"
    path.write_text("a = 1\n\n[[x]]\nb = = 2\n")
    with pytest.raises(ConfigError) as caught:
        read_toml(path)
    assert (caught.value.key, caught.value.line) == ("toml", 4)
    assert caught.value.reason.startswith("syntax error: ")


def test_unreadable_file_names_strerror(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        read_toml(tmp_path / "absent.toml")
    assert str(caught.value) == (
        f"{tmp_path / 'absent.toml'}: file: cannot read: No such file or directory")
