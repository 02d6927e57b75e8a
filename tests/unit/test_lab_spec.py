"""The lab file's validation: every error names the file, the dotted key and the reason."""

from __future__ import annotations

import copy
import ipaddress
from pathlib import Path
from typing import Any

import pytest

from boothop.relay.lab.cli import main
from boothop.relay.lab.spec import CHAINS, IPV6_CHAINS, ipv6_twin, load_lab, parse_lab
from boothop.relay.settings import EXIT_CONFIG, ConfigError

ROOT = Path(__file__).resolve().parents[2]
PATH = "lab.toml"


def valid() -> dict[str, Any]:
    return {
        "prefix": "bhlt0000",
        "relay": "boothop",
        "client_timeout": 30,
        "servers": {"router": "10.91.0.1/24", "dhcp": "10.91.0.10/24", "pxe": "10.91.0.20/24"},
        "subnet": [
            {"name": "a", "router": "10.91.1.1/24", "pool": ["10.91.1.100", "10.91.1.199"]},
            {"name": "b", "router": "10.91.2.1/24", "pool": ["10.91.2.100", "10.91.2.199"]},
        ],
        "client": [
            {"name": "pxe1", "kind": "pxe", "subnet": "a", "mac": "52:54:00:91:01:01"},
            {"name": "bootp1", "kind": "bootp", "subnet": "b", "mac": "02:00:00:91:02:10",
             "address": "10.91.2.10"},
        ],
    }


def error_of(data: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse_lab(data, PATH)
    assert caught.value.path == PATH
    return caught.value


def changed(path: str, value: Any) -> dict[str, Any]:
    """A copy of the valid lab with one value changed (or removed, for value None)."""
    data = copy.deepcopy(valid())
    *parents, last = path.split(".")
    target: Any = data
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    if value is None:
        del target[last]
    else:
        target[last] = value
    return data


def test_a_valid_lab_parses_to_its_values() -> None:
    spec = parse_lab(valid(), PATH)
    assert spec.prefix == "bhlt0000" and spec.relay == "boothop" and spec.client_timeout == 30.0
    assert spec.dhcp_address == ipaddress.IPv4Interface("10.91.0.10/24")
    assert [s.name for s in spec.subnets] == ["a", "b"]
    assert spec.subnet("b").pool == (
        ipaddress.IPv4Address("10.91.2.100"),
        ipaddress.IPv4Address("10.91.2.199"),
    )
    assert spec.clients[1].address == ipaddress.IPv4Address("10.91.2.10")
    assert spec.with_relay("dhcrelay").relay == "dhcrelay"


def test_the_shipped_lab_file_is_valid() -> None:
    spec = load_lab(ROOT / "config" / "lab.toml")
    assert spec.prefix == "bhlab" and {c.kind for c in spec.clients} >= {"pxe", "bootp"}


@pytest.mark.parametrize(
    ("path", "value", "key", "reason"),
    [
        ("colour", "blue", "colour", "unknown key"),
        ("prefix", "Bad-Prefix", "prefix", "1-8 lower-case"),
        ("prefix", "bhlt00000", "prefix", "1-8 lower-case"),
        ("relay", "dnsmasq", "relay", "one of boothop, dhcrelay"),
        ("client_timeout", 1, "client_timeout", "out of range 5..600"),
        ("client_timeout", "slow", "client_timeout", "must be a number"),
        ("servers", None, "servers", "missing: a table"),
        ("servers.tftp", "10.91.0.30/24", "servers.tftp", "unknown key"),
        ("servers.router", "10.91.0.1", "servers.router", "prefix length"),
        ("servers.router", "ten", "servers.router", "not 'ten'"),
        (
            "servers.dhcp",
            "10.92.0.10/24",
            "servers.dhcp",
            "not in the router's network 10.91.0.0/24",
        ),
        ("subnet", [], "subnet", "at least one client subnet"),
        ("subnet", "a", "subnet", "must be an array of tables ([[subnet]])"),
        ("subnet.1.name", "a", "subnet", "unique"),
        ("subnet.1.router", "10.91.0.5/16", "subnet", "overlap"),
        ("subnet.0.name", "A", "subnet[0].name", "lower-case"),
        ("subnet.0.mtu", 1500, "subnet[0].mtu", "unknown key"),
        ("subnet.0.pool", ["10.91.1.100"], "subnet[0].pool", "first and the last"),
        (
            "subnet.0.pool",
            ["10.91.1.199", "10.91.1.100"],
            "subnet[0].pool",
            "ascending range inside 10.91.1.0/24",
        ),
        ("subnet.0.pool", ["10.91.1.100", "10.91.9.1"], "subnet[0].pool", "ascending range"),
        (
            "subnet.0.pool",
            ["10.91.1.1", "10.91.1.9"],
            "subnet[0].pool",
            "contains the router's address 10.91.1.1",
        ),
        ("subnet.0.pool", ["10.91.1.x", "10.91.1.9"], "subnet[0].pool", "not an IPv4 address"),
        (
            "client.0.kind",
            "windows",
            "client[0].kind",
            "one of pxe, pxe-spec, dhclient, udhcpc, bootp",
        ),
        ("client.0.subnet", "c", "client[0].subnet", "no subnet named 'c'"),
        ("client.0.mac", "01:00:5e:00:00:01", "client[0].mac", "unicast MAC"),
        ("client.0.mac", "52:54:00:91:01", "client[0].mac", "unicast MAC"),
        ("client.1.address", None, "client[1].address", "needs its reserved address"),
        ("client.1.address", "10.91.1.10", "client[1].address", "not in subnet b (10.91.2.0/24)"),
        ("client.1.name", "pxe1", "client", "names must be unique"),
        ("client.1.mac", "52:54:00:91:01:01", "client", "MAC addresses must be unique"),
        ("client.0.chain", "arm64-http", "client[0].chain", "one of bios-ipxe, bios-undionly"),
        ("client.1.chain", "uefi-pxe", "client[1].chain", "only a QEMU client"),
    ],
)
def test_invalid_lab_names_the_key_and_the_reason(
    path: str, value: Any, key: str, reason: str
) -> None:
    error = error_of(changed(path, value))
    assert error.key == key
    assert reason in error.reason
    assert str(error).startswith(f"{PATH}: {key}: ")  # parsed data: no text, no line


def test_unreadable_and_malformed_files_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError) as caught:
        load_lab(missing)
    assert (caught.value.path, caught.value.key) == (str(missing), "file")
    assert "cannot read" in caught.value.reason
    broken = tmp_path / "broken.toml"
    broken.write_text('relay = "boothop"\nprefix = \n')
    with pytest.raises(ConfigError) as caught:
        load_lab(broken)
    assert (caught.value.path, caught.value.key, caught.value.line) == (str(broken), "toml", 2)
    assert "syntax error" in caught.value.reason


def test_every_problem_of_a_lab_is_reported_at_once() -> None:
    data = changed("prefix", "Bad-Prefix")
    data["client"][0]["kind"] = "windows"
    data["subnet"][1]["mtu"] = 1500
    keys = [problem.key for problem in error_of(data).problems]
    assert keys == ["prefix", "subnet[1].mtu", "client[0].kind"]


def test_lab_file_problem_names_the_line_of_the_key_in_its_array_table(tmp_path: Path) -> None:
    path = tmp_path / "lab.toml"
    text = (ROOT / "config" / "lab.toml").read_text()
    path.write_text(text + '\n[[client]]\nname = "extra"\nkind = "windows"\n')
    with pytest.raises(ConfigError) as caught:
        load_lab(path)
    clients = text.count("[[client]]")
    assert caught.value.key == f"client[{clients}].kind"
    assert caught.value.line == len(text.splitlines()) + 4


def test_bad_lab_file_exits_78(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "lab.toml"
    path.write_text('relay = "dnsmasq"\n')
    assert main(["-c", str(path), "status"]) == EXIT_CONFIG
    assert capsys.readouterr().err.startswith(f"boothop-lab: {path}:1: relay: ")


def test_a_qemu_clients_chain_defaults_to_the_bios_ipxe_rom() -> None:
    spec = parse_lab(changed("client.0.chain", "uefi-pxe"), PATH)
    assert spec.clients[0].chain == "uefi-pxe"
    assert parse_lab(valid(), PATH).clients[0].chain == "bios-ipxe"


def test_all_chains_adds_one_qemu_client_per_missing_chain_with_its_own_name_and_mac() -> None:
    spec = parse_lab(valid(), PATH).with_all_chains()
    qemu = [c for c in spec.clients if c.kind == "pxe"]
    assert sorted(c.chain for c in qemu) == sorted(CHAINS)
    assert len({c.name for c in spec.clients}) == len({c.mac for c in spec.clients}) == len(
        spec.clients)
    assert {c.subnet for c in qemu} == {"a", "b"}
    assert spec.with_all_chains() == spec  # nothing missing: nothing added


def test_all_chains_puts_the_ipv6_chains_on_a_subnet_of_their_own() -> None:
    """A managed IPv6 link (M flag, DHCPv6 boot URLs) would send the iPXE of an IPv4 chain to the
    IPv6 boot too: the IPv6 chains get the subnet no IPv4 QEMU client is on."""
    spec = parse_lab(valid(), PATH).with_all_chains()
    qemu = [c for c in spec.clients if c.kind == "pxe"]
    assert {c.subnet for c in qemu if c.chain in IPV6_CHAINS} == {"b"}
    assert {c.subnet for c in qemu if c.chain not in IPV6_CHAINS} == {"a"}
    assert [s.name for s in spec.ipv6_subnets] == ["b"]
    assert parse_lab(valid(), PATH).ipv6_subnets == ()


def test_an_ipv6_chain_may_not_share_a_subnet_with_an_ipv4_chain() -> None:
    data = valid()
    data["client"].append({"name": "v6", "kind": "pxe", "subnet": "a",
                           "mac": "52:54:00:91:01:06", "chain": "uefi-http6"})
    error = error_of(data)
    assert error.key == "client" and "subnet a" in error.reason
    data["client"][-1]["subnet"] = "b"
    assert [s.name for s in parse_lab(data, PATH).ipv6_subnets] == ["b"]


def test_a_hosts_ipv6_address_carries_its_ipv4_network_and_offset() -> None:
    assert ipv6_twin(ipaddress.IPv4Interface("10.90.1.1/24")) == ipaddress.IPv6Interface(
        "fd00:a5a:100::1/64")
    assert ipv6_twin(ipaddress.IPv4Interface("10.90.0.20/24")) == ipaddress.IPv6Interface(
        "fd00:a5a::14/64")
    assert ipv6_twin(ipaddress.IPv4Interface("10.90.1.129/25")).network != ipv6_twin(
        ipaddress.IPv4Interface("10.90.1.1/25")).network
