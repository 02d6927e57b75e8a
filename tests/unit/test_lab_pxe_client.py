"""The PXE 2.1 client's decisions (relay.lab.pxe_client): offer types, the choice, the boot plan;
and its messages against the real proxyDHCP core with the lab's PXE configuration."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import pytest

from boothop.relay.lab import pxe_client as pc
from boothop.relay.lab.servers import pxe_config
from boothop.relay.lab.spec import parse_lab
from boothop.relay.wire import (
    BROADCAST_FLAG,
    ZERO,
    DhcpMessage,
    MessageType,
    Op,
    Opt,
    PxeSub,
    decode,
    encode,
)
from boothop.relay.wire.pxe import (
    BootServerType,
    PxeVendorOptions,
    encode_boot_menu,
    encode_boot_servers,
)

MAC = bytes.fromhex("02b007000001")
DHCP, PXE = IPv4Address("10.91.0.10"), IPv4Address("10.91.0.20")


def offer(
    server: IPv4Address, yiaddr: str, *extra: tuple[int, bytes], mtype: int = MessageType.OFFER
) -> DhcpMessage:
    return DhcpMessage(
        op=Op.BOOTREPLY, xid=1, chaddr=MAC.ljust(16, b"\0"), yiaddr=IPv4Address(yiaddr),
        options=((Opt.MESSAGE_TYPE, bytes((mtype,))), (Opt.SERVER_ID, server.packed), *extra),
    )


PXECLIENT = (Opt.VENDOR_CLASS_ID, b"PXEClient")
COMBINED = offer(DHCP, "10.91.1.100", PXECLIENT, (Opt.BOOTFILE_NAME, b"undionly.kpxe"))
IP_ONLY = offer(DHCP, "10.91.1.100")
MENU = PxeVendorOptions((
    (PxeSub.DISCOVERY_CONTROL, bytes((7,))),
    (PxeSub.BOOT_SERVERS, encode_boot_servers([BootServerType(8, (PXE,))])),
    (PxeSub.BOOT_MENU, encode_boot_menu([(8, b"lab boot")])),
)).encode()
PROXY = offer(PXE, "0.0.0.0", PXECLIENT, (Opt.VENDOR_SPECIFIC, MENU))


def test_offer_kinds_follow_address_and_option_60() -> None:
    assert pc.offer_kind(COMBINED) == pc.COMBINED
    assert pc.offer_kind(IP_ONLY) == pc.IP_ONLY
    assert pc.offer_kind(PROXY) == pc.PROXY
    assert pc.offer_kind(offer(DHCP, "0.0.0.0")) == pc.OTHER
    assert pc.offer_kind(offer(DHCP, "10.91.1.100", PXECLIENT, mtype=MessageType.ACK)) == pc.OTHER


@pytest.mark.parametrize(
    "offers", [[COMBINED, IP_ONLY, PROXY], [PROXY, IP_ONLY, COMBINED], [PROXY, COMBINED]]
)
def test_pxe_spec_dhcp_and_pxe_in_the_same_offer_beats_ip_only_plus_proxy(
    offers: list[DhcpMessage],
) -> None:
    choice = pc.choose_offer(offers)
    assert choice is not None and choice.rule == "DHCP and PXE in the same offer"
    assert choice.address_offer is COMBINED and choice.boot_offer is COMBINED


def test_ip_only_offer_is_paired_with_the_proxy_offer() -> None:
    choice = pc.choose_offer([PROXY, IP_ONLY])
    assert choice is not None and choice.rule == "IP-only offer + proxyDHCP offer"
    assert (choice.address_offer, choice.boot_offer) == (IP_ONLY, PROXY)


def test_ip_only_alone_gives_no_boot_offer_and_proxy_alone_no_choice() -> None:
    choice = pc.choose_offer([IP_ONLY])
    assert choice is not None and choice.boot_offer is None
    assert pc.choose_offer([PROXY]) is None and pc.choose_offer([]) is None


def test_combined_offer_without_pxe_options_asks_its_server_on_4011() -> None:
    """The second field report: "an attempt is made to connect to port 4011 on the DHCP server"."""
    assert pc.plan_boot(COMBINED) == pc.BootPlan("proxy-request", DHCP)


def test_proxy_offer_with_menu_means_boot_server_discovery_at_the_listed_server() -> None:
    elsewhere = offer(IPv4Address("10.91.0.99"), "0.0.0.0", PXECLIENT, (Opt.VENDOR_SPECIFIC, MENU))
    assert pc.plan_boot(elsewhere) == pc.BootPlan("discovery", PXE, (8, 0))


def test_use_boot_file_bit_downloads_at_once_from_siaddr() -> None:
    control = PxeVendorOptions(((PxeSub.DISCOVERY_CONTROL, bytes((pc.USE_BOOT_FILE,))),)).encode()
    msg = offer(PXE, "0.0.0.0", PXECLIENT, (Opt.VENDOR_SPECIFIC, control)).replace(
        siaddr=IPv4Address("10.91.0.30"), file=b"boot.0")
    assert pc.plan_boot(msg) == pc.BootPlan(
        "download", IPv4Address("10.91.0.30"), boot_file="boot.0"
    )


def test_malformed_option_43_falls_back_to_the_proxy_request() -> None:
    msg = offer(PXE, "0.0.0.0", PXECLIENT, (Opt.VENDOR_SPECIFIC, b"\x09\x05ab"))
    assert pc.plan_boot(msg) == pc.BootPlan("proxy-request", PXE)


def test_discover_carries_the_pxe_options_and_the_broadcast_flag() -> None:
    guid = bytes(range(16))
    msg = decode(encode(pc.discover(MAC, 7, guid)))
    assert msg.message_type == MessageType.DISCOVER and msg.flags == BROADCAST_FLAG
    assert msg.get(Opt.VENDOR_CLASS_ID) == b"PXEClient:Arch:00000:UNDI:002001"
    assert msg.get(Opt.CLIENT_ARCH) == b"\0\0" and msg.get(Opt.CLIENT_NDI) == bytes((1, 2, 1))
    assert msg.get(Opt.CLIENT_UUID) == b"\0" + guid and msg.hardware_address == MAC
    request = decode(encode(pc.request(MAC, 7, guid, IP_ONLY)))
    assert request.get(Opt.SERVER_ID) == DHCP.packed
    assert request.get(Opt.REQUESTED_ADDRESS) == IPv4Address("10.91.1.100").packed


def test_messages_against_the_proxydhcp_core_with_the_lab_configuration(tmp_path: Path) -> None:
    from boothop.relay.wire import Datagram
    from boothop.server.config import load_config
    from boothop.server.pxe.proxy import Reply, handle

    spec = parse_lab({
        "servers": {"router": "10.91.0.1/24", "dhcp": "10.91.0.10/24", "pxe": "10.91.0.20/24"},
        "subnet": [{"name": "a", "router": "10.91.1.1/24", "pool": ["10.91.1.100", "10.91.1.199"]}],
    }, "lab.toml")
    (tmp_path / "pxe.toml").write_text(pxe_config(spec, tmp_path))
    config = load_config(str(tmp_path / "pxe.toml")).pxe
    assert config is not None
    guid = bytes(16)
    relayed = pc.discover(MAC, 9, guid).replace(giaddr=IPv4Address("10.91.1.1"), hops=1)
    reply = handle(Datagram(encode(relayed), IPv4Address("10.91.0.1"), 67, port=67), config)
    assert isinstance(reply, Reply)
    proxy_offer = decode(reply.payload)
    assert pc.offer_kind(proxy_offer) == pc.PROXY and proxy_offer.yiaddr == ZERO
    plan = pc.plan_boot(proxy_offer)
    assert plan == pc.BootPlan("discovery", PXE, (8, 0))
    ask = pc.boot_request(MAC, 9, guid, IPv4Address("10.91.1.100"), plan.boot_item)
    answer = handle(Datagram(encode(ask), IPv4Address("10.91.1.100"), 68, port=4011), config)
    assert isinstance(answer, Reply) and answer.to == ("10.91.1.100", 68)
    ack = decode(answer.payload)
    assert ack.message_type == MessageType.ACK and pc.boot_file_of(ack) == "undionly.kpxe"
    assert ack.siaddr == PXE
