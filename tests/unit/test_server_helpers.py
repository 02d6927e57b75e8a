"""Builders shared by the server unit tests: a two-subnet config and client messages."""

from __future__ import annotations

from ipaddress import IPv4Address

from boothop.relay.wire import (
    AgentInfo,
    Datagram,
    DhcpMessage,
    MessageType,
    Op,
    Opt,
    decode,
    encode,
)
from boothop.server.dhcp.actions import Send
from boothop.server.dhcp.config import DhcpConfig, parse_dhcp

SERVER = IPv4Address("10.51.0.1")
RELAY_A = IPv4Address("10.51.1.1")
RELAY_B = IPv4Address("10.51.2.1")

BASE_TOML = {
    "lease_db": ":memory:",
    "offer_hold": 30,
    "decline_time": 600,
    "options": {"dns-servers": ["10.51.0.53"], "domain-name": "lab.test"},
    "subnets": [
        {
            "subnet": "10.51.1.0/24",
            "pools": ["10.51.1.100-10.51.1.104"],
            "lease_time": 600,
            "options": {"routers": ["10.51.1.1"]},
            "reservations": [
                {"mac": "52:54:00:00:01:0a", "address": "10.51.1.10", "hostname": "boot1"},
                {"client_id": "ff:00:11:22:33", "address": "10.51.1.11"},
            ],
        },
        {
            "subnet": "10.51.2.0/24",
            "pools": ["10.51.2.100-10.51.2.199"],
            "options": {"routers": ["10.51.2.1"]},
            "dynamic_bootp": True,
        },
        {"subnet": "10.51.0.0/24", "pools": ["10.51.0.100-10.51.0.110"], "interface": "bhs-srv0"},
    ],
}


def config(**overrides: object) -> DhcpConfig:
    table = dict(BASE_TOML)
    table.update(overrides)
    return parse_dhcp(table, "test.toml")


def mac(n: int) -> bytes:
    return bytes((0x52, 0x54, 0, 0, n >> 8, n & 0xFF))


def request(mtype: int | None, chaddr: bytes, *, xid: int = 1, giaddr: IPv4Address = RELAY_A,
            ciaddr: IPv4Address = IPv4Address(0), flags: int = 0,
            options: tuple[tuple[int, bytes], ...] = ()) -> DhcpMessage:
    opts = ((Opt.MESSAGE_TYPE, bytes((mtype,))),) if mtype is not None else ()
    return DhcpMessage(op=Op.BOOTREQUEST, xid=xid, chaddr=chaddr.ljust(16, b"\0"), giaddr=giaddr,
                       ciaddr=ciaddr, flags=flags, options=opts + options,
                       hops=1 if giaddr != IPv4Address(0) else 0)


def dgram(msg: DhcpMessage, *, source: IPv4Address | None = None, local: IPv4Address = SERVER,
          ifname: str = "bhs-srv0", ifindex: int = 7) -> Datagram:
    if source is None:
        source = msg.giaddr if msg.giaddr != IPv4Address(0) else msg.ciaddr
    return Datagram(encode(msg), source, 67 if msg.giaddr != IPv4Address(0) else 68,
                    ifindex=ifindex, local=local, port=67, ifname=ifname)


def sends(actions: list) -> list[Send]:
    return [a for a in actions if isinstance(a, Send)]


def reply_of(actions: list) -> DhcpMessage:
    out = sends(actions)
    assert len(out) == 1, actions
    return decode(out[0].payload)


def opt_addr(code: int, address: IPv4Address | str) -> tuple[int, bytes]:
    return (code, IPv4Address(address).packed)


def agent(*subs: tuple[int, bytes]) -> tuple[int, bytes]:
    return (Opt.RELAY_AGENT_INFO, AgentInfo(tuple(subs)).encode())


MT = MessageType
