"""The [pxe] table: values, defaults and errors that name the dotted key."""

from __future__ import annotations

import tomllib
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from boothop.relay.settings import ConfigError
from boothop.server.pxe.config import arch_code, parse_pxe
from boothop.server.tftp.config import parse_tftp

EXAMPLE = Path(__file__).parents[2] / "config" / "pxe-server.toml"


def test_example_config_parses() -> None:
    document = tomllib.loads(EXAMPLE.read_text())
    pxe = parse_pxe(document["pxe"], str(EXAMPLE))
    tftp = parse_tftp(document["tftp"], str(EXAMPLE))
    assert pxe.boot.by_arch[7] and pxe.boot.ipxe and not pxe.colocated
    assert tftp.root.startswith("/")


def test_values_and_defaults() -> None:
    config = parse_pxe(
        {
            "server_address": "10.61.2.10",
            "boot": {
                "bios": "undionly.kpxe",
                "efi-x64": "ipxe.efi",
                "arch-42": "x.efi",
                "ipxe": "boot.ipxe",
            },
            "subnets": [{"network": "10.61.3.0/24", "boot": {"efi-x64": "lab.efi"}}],
            "menu": [{"type": 0, "description": "Local", "boot": {}}],
        },
        "p.toml",
    )
    assert config.server_address == IPv4Address("10.61.2.10") == config.next_server
    assert dict(config.boot.by_arch) == {0: "undionly.kpxe", 7: "ipxe.efi", 42: "x.efi"}
    assert config.boot.ipxe == "boot.ipxe"
    assert config.subnets[0].network == IPv4Network("10.61.3.0/24")
    assert (config.port, config.pxe_port, config.colocated) == (67, 4011, False)
    assert config.menu[0].description == "Local"


def test_arch_names_are_the_codec_names() -> None:
    assert [arch_code(n) for n in ("bios", "efi-ia32", "efi-x64", "efi-arm64", "efi-x64-http")] == [
        0,
        6,
        7,
        11,
        16,
    ]
    assert arch_code("efi_x64") is None and arch_code("arch-70000") is None


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({}, "pxe.server_address"),
        ({"server_address": "x"}, "pxe.server_address"),
        ({"server_address": "10.61.2.10", "boot": {"efi-x65": "a"}}, "pxe.boot.efi-x65"),
        ({"server_address": "10.61.2.10", "boot": {"efi-x64": ""}}, "pxe.boot.efi-x64"),
        ({"server_address": "10.61.2.10", "colocated": "yes"}, "pxe.colocated"),
        (
            {"server_address": "10.61.2.10", "subnets": [{"network": "10.61.3.1/33"}]},
            "pxe.subnets[0].network",
        ),
        (
            {"server_address": "10.61.2.10", "menu": [{"type": 1, "description": "a"}] * 2},
            "pxe.menu[1].type",
        ),
        (
            {
                "server_address": "10.61.2.10",
                "menu": [
                    {"type": 1, "description": "d" * 200},
                    {"type": 2, "description": "e" * 60},
                ],
            },
            "pxe.menu",
        ),
        ({"server_address": "10.61.2.10", "tftp_server": 5}, "pxe.tftp_server"),
        ({"server_address": "10.61.2.10", "server_name": "n" * 64}, "pxe.server_name"),
        ({"server_address": "10.61.2.10", "pxe_port": 0}, "pxe.pxe_port"),
        ({"server_address": "10.61.2.10", "bootfile": "x"}, "pxe.bootfile"),
    ],
)
def test_errors_name_the_key(table: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_pxe(table, "p.toml")
    assert info.value.key == key and info.value.path == "p.toml"


def test_every_problem_of_the_pxe_and_tftp_tables_is_reported_at_once() -> None:
    table = {"server_address": "x", "boot": {"efi-x65": "a"}, "menu": [{"type": 1}],
             "pxe_port": 0}
    with pytest.raises(ConfigError) as info:
        parse_pxe(table, "p.toml")
    assert [p.key for p in info.value.problems] == [
        "pxe.server_address", "pxe.menu[0].description", "pxe.boot.efi-x65", "pxe.pxe_port"]
    with pytest.raises(ConfigError) as info:
        parse_tftp({"root": "srv", "port": 0, "timeout": "1"}, "x.toml")
    assert [p.key for p in info.value.problems] == ["tftp.root", "tftp.port", "tftp.timeout"]
