"""Real DHCP packets from real clients and a real server, through the codec and through scapy.

The files in captures/ are UDP payloads recorded by ``tests/unit/wire_capture.py`` (run as root;
see its docstring): dhclient 4.4.3, busybox udhcpc 1.35.0, dhcpcd 9.4.1, udhcpc posing as a PXE
client (options 60/93/94/97) and iPXE (qemu's e1000 ROM) against dnsmasq 2.90 with a PXE service,
over a veth pair / tap in namespaces bhw-srv and bhw-cli. Names are ``<sender>-<type>.bin``;
dnsmasq's replies are named after the client they answer.

Canonical captures: all of them. Each sender writes every option as one TLV in the options field,
END, then zero padding to 300 bytes (dhclient, dnsmasq) or none past END (udhcpc over 300 bytes,
iPXE), with no PAD options and no overload, which is what our encoder writes; so
encode(decode(b)) == b exactly. A sender that pads further (to 548, say) differs only in trailing
zeros, since our encoder pads to the 300-byte BOOTP minimum and no more:
test_extra_trailing_padding_is_not_kept covers that with a capture padded by hand.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import pytest
from test_wire_scapy import BOOTP, assert_same_header, scapy_option_list, typed

from boothop.relay.wire import ClientArch, MessageType, Opt, PxeSub, decode, encode
from boothop.relay.wire.pxe import (
    BootServerType,
    NetworkInterfaceId,
    PxeVendorOptions,
    client_architectures,
    client_uuid,
    is_pxe_client,
)

CAPTURES = Path(__file__).parent / "captures"
FILES = sorted(CAPTURES.glob("*.bin"))
EXPECTED = {
    "dhclient-discover", "dhclient-request", "dnsmasq-dhclient-offer", "dnsmasq-dhclient-ack",
    "udhcpc-discover", "udhcpc-request", "dnsmasq-udhcpc-offer", "dnsmasq-udhcpc-ack",
    "dhcpcd-discover", "dhcpcd-request", "dnsmasq-dhcpcd-offer", "dnsmasq-dhcpcd-ack",
    "udhcpc-pxe-discover", "udhcpc-pxe-request", "dnsmasq-udhcpc-pxe-offer",
    "dnsmasq-udhcpc-pxe-ack", "ipxe-discover", "ipxe-request", "dnsmasq-ipxe-offer",
    "dnsmasq-ipxe-ack",
}


def load(name: str) -> bytes:
    return (CAPTURES / f"{name}.bin").read_bytes()


def test_every_expected_capture_is_present() -> None:
    assert {path.stem for path in FILES} == EXPECTED


@pytest.mark.parametrize("path", FILES, ids=lambda path: path.stem)
def test_capture_decodes_and_re_encodes_exactly(path: Path) -> None:
    data = path.read_bytes()
    msg = decode(data)
    kind = path.stem.rsplit("-", 1)[1]
    assert msg.message_type == MessageType[kind.upper()]
    assert msg.op == (2 if path.stem.startswith("dnsmasq") else 1)
    assert decode(encode(msg)) == msg
    assert encode(msg) == data


@pytest.mark.parametrize("path", FILES, ids=lambda path: path.stem)
def test_scapy_agrees_on_capture(path: Path) -> None:
    data = path.read_bytes()
    msg = decode(data)
    packet = BOOTP(data)
    assert_same_header(msg, packet)
    assert scapy_option_list(packet) == [(code, typed(code, value)) for code, value in msg.options]


def test_extra_trailing_padding_is_not_kept() -> None:
    data = load("dhclient-discover")
    padded = data.ljust(548, b"\0")
    assert decode(padded) == decode(data)
    assert encode(decode(padded)) == data


def test_dhclient_discover_fields() -> None:
    msg = decode(load("dhclient-discover"))
    assert msg.hlen == 6 and msg.htype == 1 and msg.giaddr == IPv4Address(0)
    assert msg.get(Opt.PARAMETER_REQUEST_LIST)
    request = decode(load("dhclient-request"))
    assert request.xid == msg.xid and request.chaddr == msg.chaddr
    offer = decode(load("dnsmasq-dhclient-offer"))
    assert offer.xid == msg.xid and offer.chaddr == msg.chaddr
    assert request.get(Opt.REQUESTED_ADDRESS) == offer.yiaddr.packed
    assert request.get(Opt.SERVER_ID) == offer.get(Opt.SERVER_ID) == IPv4Address("10.31.0.1").packed


def test_ipxe_discover_pxe_client_options() -> None:
    msg = decode(load("ipxe-discover"))
    assert is_pxe_client(msg)
    assert msg.get(Opt.VENDOR_CLASS_ID) == b"PXEClient:Arch:00000:UNDI:002001"
    assert client_architectures(msg) == [ClientArch.BIOS]
    assert NetworkInterfaceId.decode(msg.get(Opt.CLIENT_NDI) or b"") == NetworkInterfaceId(1, 2, 1)
    assert client_uuid(msg) is not None
    assert msg.get(Opt.MAX_MESSAGE_SIZE) is not None


def test_dnsmasq_pxe_offer_vendor_options() -> None:
    msg = decode(load("dnsmasq-ipxe-offer"))
    assert msg.get(Opt.VENDOR_CLASS_ID) == b"PXEClient"
    pxe = PxeVendorOptions.decode(msg.get(Opt.VENDOR_SPECIFIC) or b"")
    assert pxe.discovery_control == 3
    assert pxe.boot_servers == [BootServerType(0x8000, (IPv4Address("10.31.1.1"),))]
    assert pxe.boot_menu == [(0x8000, b"Network boot")]
    assert pxe.get(PxeSub.MENU_PROMPT) == b"\x05Press F8"
    assert pxe.encode() == msg.get(Opt.VENDOR_SPECIFIC)
