"""Messages, datagrams and a configuration for the DHCPv6 server core's tests."""

from __future__ import annotations

from ipaddress import IPv6Address
from typing import Any

from boothop.relay.wire import Datagram6
from boothop.relay.wire.dhcpv6 import (
    ClientLinkLayer,
    Dhcp6Message,
    IaAddress,
    IaNa,
    MessageType6,
    Opt6,
    RelayMessage,
    StatusCode,
    decode6,
    encode6,
    innermost,
)
from boothop.server.dhcp6.actions import Send6
from boothop.server.dhcp6.config import Dhcp6Config, parse_dhcp6
from boothop.server.dhcp6.core import Dhcp6ServerCore

M = MessageType6
SERVER_DUID = bytes.fromhex("000400") + bytes(range(16))
LINK_LOCAL = IPv6Address("fe80::5054:ff:fe00:1")
MULTICAST = IPv6Address("ff02::1:2")
RELAY = IPv6Address("2001:db8:2::1")
DIRECT_IFINDEX = 7

TABLE: dict[str, Any] = {
    "lease_db": ":memory:",
    "options": {"dns-servers": ["2001:db8::53"], "domain-search": ["lab.test"]},
    "boot": {"efi-x64": "tftp://[2001:db8::20]/ipxe.efi",
             "efi-x64-http": "http://[2001:db8::20]/ipxe.efi"},
    "boot_params": ["console=ttyS0"],
    "subnets": [
        {"prefix": "2001:db8:1::/64", "pools": ["2001:db8:1::100-2001:db8:1::1ff"],
         "interface": "eth1",
         "reservations": [
             {"duid": "00:03:00:01:52:54:00:00:00:0a", "address": "2001:db8:1::10"},
             {"mac": "52:54:00:00:00:0b", "address": "2001:db8:1::11"},
         ]},
        {"prefix": "2001:db8:2::/64", "pools": ["2001:db8:2::100-2001:db8:2::103"],
         "preferred_lifetime": 600, "valid_lifetime": 900},
    ],
}


def config(**overrides: Any) -> Dhcp6Config:
    return parse_dhcp6({**TABLE, **overrides}, "test.toml", ":memory:")


def core(**overrides: Any) -> Dhcp6ServerCore:
    return Dhcp6ServerCore(config(**overrides), SERVER_DUID,
                           interfaces={DIRECT_IFINDEX: "2001:db8:1::/64"})


def duid(n: int) -> bytes:
    """A DUID-LL for the MAC 52:54:00:00:nn:nn."""
    return bytes.fromhex("00030001525400") + n.to_bytes(3, "big")


def ia(iaid: int = 1, *addresses: IPv6Address | str) -> tuple[int, bytes]:
    return IaNa(iaid, 0, 0, tuple(IaAddress(IPv6Address(a), 0, 0).option()
                                  for a in addresses)).option()


def message(kind: int, client: bytes | None, *options: tuple[int, bytes], xid: int = 0x1234,
            server: bytes | None = None) -> Dhcp6Message:
    head: list[tuple[int, bytes]] = []
    if client is not None:
        head.append((int(Opt6.CLIENTID), client))
    if server is not None:
        head.append((int(Opt6.SERVERID), server))
    return Dhcp6Message(kind, xid, (*head, *options))


def direct(msg: Dhcp6Message, destination: IPv6Address = MULTICAST,
           ifindex: int = DIRECT_IFINDEX) -> Datagram6:
    return Datagram6(encode6(msg), LINK_LOCAL, 546, destination, ifindex, 547)


def relayed(msg: Dhcp6Message, link: str = "2001:db8:2::1", *extra: tuple[int, bytes],
            outer: RelayMessage | None = None) -> Datagram6:
    layer = RelayMessage(M.RELAY_FORW, 0, IPv6Address(link), LINK_LOCAL,
                         ((int(Opt6.RELAY_MSG), encode6(msg)), (int(Opt6.INTERFACE_ID), b"lan0"),
                          *extra))
    if outer is not None:
        layer = outer.replace(options=((int(Opt6.RELAY_MSG), encode6(layer)), *outer.options))
    return Datagram6(encode6(layer), RELAY, 547, IPv6Address("2001:db8::1"), 3, 547)


def link_layer(mac: str) -> tuple[int, bytes]:
    return ClientLinkLayer(1, bytes.fromhex(mac.replace(":", ""))).option()


def sends(actions: list[Any]) -> list[Send6]:
    return [a for a in actions if isinstance(a, Send6)]


def reply(actions: list[Any]) -> Dhcp6Message:
    out = sends(actions)
    assert len(out) == 1, actions
    return innermost(decode6(out[0].payload))


def addresses(msg: Dhcp6Message) -> list[IPv6Address]:
    return [IaAddress.decode(v).address for raw in msg.get_all(Opt6.IA_NA)
            for v in IaNa.decode(raw).get_all(Opt6.IAADDR)]


def ia_status(msg: Dhcp6Message) -> list[int]:
    return [StatusCode.decode(s).status for raw in msg.get_all(Opt6.IA_NA)
            for s in IaNa.decode(raw).get_all(Opt6.STATUS_CODE)]


def status(msg: Dhcp6Message) -> int | None:
    raw = msg.get(Opt6.STATUS_CODE)
    return StatusCode.decode(raw).status if raw is not None else None

