"""The lab's IPv6 parts for chain 5 (uefi-http6): what it writes is what boothop's own validators
accept, and its router advertisements are what scapy (an independent decoder) reads."""

from __future__ import annotations

import dataclasses
import tomllib
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path

from scapy.layers.inet6 import ICMPv6ND_RA, ICMPv6NDOptPrefixInfo

from boothop.relay.configfile import parse
from boothop.relay.lab import ra, servers
from boothop.relay.lab.locations import default_lab_file
from boothop.relay.lab.spec import ClientSpec, LabSpec, load_lab
from boothop.server.config import parse_config


def lab6() -> LabSpec:
    spec = load_lab(default_lab_file())
    client = ClientSpec("v6", "pxe", "b", "52:54:00:90:02:06", chain="uefi-http6")
    return dataclasses.replace(spec, clients=(client,))


def test_the_dhcpv6_server_gives_uefi_http_ipxe_efi_and_ipxe_its_script(tmp_path: Path) -> None:
    config = parse_config(tomllib.loads(servers.dhcp_config(lab6(), tmp_path)), "dhcp.toml")
    assert config.dhcp6 is not None
    assert dict(config.dhcp6.boot_urls) == {16: "http://[fd00:a5a::14]/ipxe.efi"}
    assert config.dhcp6.ipxe_url == "http://[fd00:a5a::14]/boot6.ipxe"
    (subnet,) = config.dhcp6.subnets
    assert subnet.prefix == IPv6Network("fd00:a5a:200::/64")
    assert subnet.pools[0].first == IPv6Address("fd00:a5a:200::1000")
    # A lab without IPv6 chains runs no DHCPv6.
    plain = dataclasses.replace(lab6(), clients=())
    assert parse_config(tomllib.loads(servers.dhcp_config(plain, tmp_path)), "x").dhcp6 is None


def test_the_relay_relays_dhcpv6_from_the_managed_link_to_the_dhcp_host() -> None:
    settings = parse(tomllib.loads(servers.relay6_config(lab6())), "relay.toml")
    relay6 = settings.relay6
    assert relay6 is not None and relay6.client_link_layer
    assert [lower.name for lower in relay6.lower] == ["lan-b"]
    assert [(u.interface, u.destination) for u in relay6.upper] == [
        ("up", IPv6Address("fd00:a5a::a"))]


def test_a_managed_advertisement_offers_a_router_dhcpv6_and_an_on_link_prefix_only() -> None:
    ifname, advert = ra.managed("lan-b=fd00:a5a:200::/64")
    decoded = ICMPv6ND_RA(advert)
    assert ifname == "lan-b"
    assert (decoded.M, decoded.O, decoded.routerlifetime) == (1, 1, 1800)
    prefix = decoded[ICMPv6NDOptPrefixInfo]
    assert (prefix.prefix, prefix.prefixlen, prefix.L, prefix.A) == ("fd00:a5a:200::", 64, 1, 0)
    # The plain one tells iPXE there is nothing to configure.
    plain = ICMPv6ND_RA(ra.ROUTER_ADVERTISEMENT)
    assert (plain.M, plain.O, plain.routerlifetime) == (0, 0, 0)
