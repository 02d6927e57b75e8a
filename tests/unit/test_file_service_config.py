"""The keys [tftp] and [http] share (server/fileconfig.py): the root, unknown keys, the integer
ranges and the per-client cap, each refused with the service's own key in the reason."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from boothop.relay.settings import ConfigError
from boothop.server.http.config import parse_http
from boothop.server.tftp.config import parse_tftp

PARSERS: dict[str, tuple[Callable[[object, str], object], str]] = {
    "tftp": (parse_tftp, "max_transfers"),
    "http": (parse_http, "max_connections"),
}


def problems(section: str, table: dict[str, object]) -> list[tuple[str, str]]:
    parse, _ = PARSERS[section]
    with pytest.raises(ConfigError) as info:
        parse(table, "x.toml")
    return [(p.key, p.reason) for p in info.value.problems]


@pytest.mark.parametrize("section", PARSERS)
def test_the_per_client_cap_may_not_exceed_the_total(section: str) -> None:
    total = PARSERS[section][1]
    assert problems(section, {"root": "/srv", "max_per_client": 9, total: 3}) == [
        (f"{section}.max_per_client", f"cannot exceed {section}.{total}")]
    PARSERS[section][0]({"root": "/srv", "max_per_client": 3, total: 3}, "x.toml")


@pytest.mark.parametrize("section", PARSERS)
def test_root_port_and_unknown_keys_are_checked_in_the_order_of_the_table(section: str) -> None:
    assert problems(section, {"root": "srv", "port": 0, "bogus": 1}) == [
        (f"{section}.bogus", f"unknown key (expected one of: {_known(section)})"),
        (f"{section}.root", "must be an absolute directory path, not 'srv'"),
        (f"{section}.port", "0 out of range 1..65535")]


def test_a_missing_root_is_named_by_each_service() -> None:
    assert problems("tftp", {}) == [
        ("tftp.root", "missing: the directory files are served from")]
    assert problems("http", {}) == [
        ("http.root", "required without [tftp]: the directory files are served from")]


def _known(section: str) -> str:
    config = PARSERS[section][0]({"root": "/"}, "x.toml")
    return ", ".join(sorted(field.name for field in dataclasses.fields(config)))  # type: ignore[arg-type]


def test_tftp_listens_on_ipv4_and_http_on_either_family() -> None:
    assert problems("tftp", {"root": "/srv", "address": "::"}) == [
        ("tftp.address", "not an IPv4 address: '::'")]
    assert problems("http", {"root": "/srv", "address": "10.0.0"}) == [
        ("http.address", "not an IPv4 or IPv6 address: '10.0.0'")]
    assert parse_http({"root": "/srv", "address": "::"}, "x.toml").address == "::"
    assert parse_tftp({"root": "/srv", "address": "127.0.0.1"}, "x.toml").address == "127.0.0.1"
    assert parse_tftp({"root": "/srv"}, "x.toml").address == "0.0.0.0"
