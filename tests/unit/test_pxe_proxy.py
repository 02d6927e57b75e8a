"""Every proxyDHCP decision: who is answered, with which boot file, and where the reply goes."""

from __future__ import annotations

import uuid
from ipaddress import IPv4Address, IPv4Network
from types import MappingProxyType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from boothop.relay.wire import (
    ZERO,
    AgentInfo,
    Datagram,
    DhcpMessage,
    MessageType,
    Op,
    Opt,
    PxeSub,
    decode,
    encode,
)
from boothop.relay.wire.pxe import PxeVendorOptions
from boothop.server.pxe.config import BootFiles, MenuItem, PxeConfig, SubnetBoot
from boothop.server.pxe.proxy import Drop, Dropped, Reply, handle

SERVER = IPv4Address("10.61.2.10")
GIADDR = IPv4Address("10.61.1.1")
UUID = uuid.UUID("12345678-1234-5678-9abc-def012345678")
CHADDR = bytes.fromhex("026100000110") + bytes(10)


def files(ipxe: str | None = None, **by_arch: str) -> BootFiles:
    codes = {"bios": 0, "efi_x64": 7, "efi_ia32": 6, "efi_arm64": 11, "efi_x64_http": 16}
    return BootFiles(MappingProxyType({codes[k]: v for k, v in by_arch.items()}), ipxe)


CONFIG = PxeConfig(
    server_address=SERVER,
    boot=files(ipxe="boot.ipxe", bios="undionly.kpxe", efi_x64="ipxe.efi", efi_ia32="ipxe32.efi",
               efi_arm64="arm64.efi", efi_x64_http="http://10.61.2.10/ipxe.efi"),
    subnets=(SubnetBoot(IPv4Network("10.61.3.0/24"), files(efi_x64="lab/grubx64.efi")),),
)


def request(
    message_type: int = MessageType.DISCOVER,
    vendor: bytes | None = b"PXEClient:Arch:00007:UNDI:003016",
    arch: int | None = 7,
    giaddr: IPv4Address = IPv4Address(0),
    extra: tuple[tuple[int, bytes], ...] = (),
    ciaddr: IPv4Address = IPv4Address(0),
) -> bytes:
    options: list[tuple[int, bytes]] = [(Opt.MESSAGE_TYPE, bytes((message_type,)))]
    if vendor is not None:
        options.append((Opt.VENDOR_CLASS_ID, vendor))
    if arch is not None:
        options.append((Opt.CLIENT_ARCH, arch.to_bytes(2, "big")))
    options.append((Opt.CLIENT_UUID, b"\x00" + UUID.bytes))
    options.extend(extra)
    msg = DhcpMessage(op=Op.BOOTREQUEST, xid=0x61616161, chaddr=CHADDR, flags=0x8000,
                      giaddr=giaddr, ciaddr=ciaddr, options=tuple(options))
    return encode(msg)


def received(payload: bytes, source: tuple[str, int], port: int, local: IPv4Address = ZERO,
             ifindex: int = 0) -> Datagram:
    """What the shell hands the core: from ``source``, arrived on ``local:port``."""
    return Datagram(payload, IPv4Address(source[0]), source[1], ifindex=ifindex, local=local,
                    port=port)


def local(payload: bytes, port: int = 67) -> Datagram:
    return received(payload, ("0.0.0.0", 68), port, IPv4Address("10.61.2.10"), ifindex=3)


def relayed(payload: bytes) -> Datagram:
    return received(payload, (str(GIADDR), 67), 67, SERVER, ifindex=2)


def answer(datagram: Datagram, config: PxeConfig = CONFIG) -> tuple[DhcpMessage, Reply]:
    result = handle(datagram, config)
    assert isinstance(result, Reply), result
    return decode(result.payload), result


def dropped(datagram: Datagram, config: PxeConfig = CONFIG) -> Drop:
    result = handle(datagram, config)
    assert isinstance(result, Dropped), result
    return result.reason


# -- the proxy offer --------------------------------------------------------------------------
def test_proxy_offer_carries_boot_information_and_no_address() -> None:
    msg, _reply = answer(local(request()))
    assert msg.op == Op.BOOTREPLY and msg.message_type == MessageType.OFFER
    assert msg.xid == 0x61616161 and msg.chaddr == CHADDR and msg.flags == 0x8000
    assert msg.yiaddr == IPv4Address(0)
    assert msg.siaddr == SERVER and msg.get(Opt.SERVER_ID) == SERVER.packed
    assert msg.get(Opt.VENDOR_CLASS_ID) == b"PXEClient"
    assert msg.get(Opt.CLIENT_UUID) == b"\x00" + UUID.bytes
    assert msg.file == b"ipxe.efi"
    vendor = PxeVendorOptions.decode(msg.get(Opt.VENDOR_SPECIFIC))  # type: ignore[arg-type]
    assert vendor.discovery_control == 0x08


def test_local_client_gets_a_broadcast_on_its_interface() -> None:
    _, reply = answer(local(request()))
    assert reply.to == ("255.255.255.255", 68) and reply.ifindex == 3


def test_rfc2131_relayed_request_is_answered_to_giaddr_port_67() -> None:
    msg, reply = answer(relayed(request(giaddr=GIADDR)))
    assert reply.to == (str(GIADDR), 67) and reply.ifindex == 0
    assert msg.giaddr == GIADDR


def test_rfc3046_relay_agent_information_is_copied_as_the_last_option() -> None:
    agent = AgentInfo(((1, b"lana0"), (2, b"router"))).encode()
    msg, _ = answer(relayed(request(giaddr=GIADDR, extra=((Opt.RELAY_AGENT_INFO, agent),))))
    assert msg.options[-1] == (Opt.RELAY_AGENT_INFO, agent)


def test_tftp_server_and_server_name_go_in_siaddr_and_sname() -> None:
    config = PxeConfig(server_address=SERVER, tftp_server=IPv4Address("10.61.2.20"),
                       server_name="boot1", boot=CONFIG.boot)
    msg, _ = answer(local(request()), config)
    assert msg.siaddr == IPv4Address("10.61.2.20") and msg.sname == b"boot1"
    assert msg.get(Opt.SERVER_ID) == SERVER.packed


def test_uuid_is_not_invented_when_absent() -> None:
    payload = encode(decode(request()).without_option(Opt.CLIENT_UUID))
    msg, _ = answer(local(payload))
    assert not msg.has(Opt.CLIENT_UUID)


# -- boot file selection ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("arch", "expected"),
    [
        (0, b"undionly.kpxe"),
        (6, b"ipxe32.efi"),
        (7, b"ipxe.efi"),
        (9, None),
        (11, b"arm64.efi"),
        (None, b"undionly.kpxe"),
    ],
)
def test_boot_file_by_architecture(arch: int | None, expected: bytes | None) -> None:
    result = handle(local(request(arch=arch)), CONFIG)
    if expected is None:
        assert isinstance(result, Dropped) and result.reason is Drop.NO_BOOT_FILE
    else:
        assert isinstance(result, Reply) and decode(result.payload).file == expected


def test_first_configured_architecture_of_the_list_wins() -> None:
    payload = encode(decode(request()).with_option(Opt.CLIENT_ARCH, b"\x00\x09\x00\x07"))
    assert answer(local(payload))[0].file == b"ipxe.efi"


@pytest.mark.parametrize("user_class", [b"iPXE", b"\x04iPXE", b"\x03abc\x04iPXE"])
def test_ipxe_user_class_gets_the_script_not_the_loader(user_class: bytes) -> None:
    msg, _ = answer(local(request(extra=((Opt.USER_CLASS, user_class),))))
    assert msg.file == b"boot.ipxe"


def test_other_user_class_gets_the_loader() -> None:
    assert answer(local(request(extra=((Opt.USER_CLASS, b"\x05other"),))))[0].file == b"ipxe.efi"


def test_subnet_selected_by_giaddr_overrides_per_architecture() -> None:
    lab = IPv4Address("10.61.3.1")
    assert answer(relayed(request(giaddr=lab)))[0].file == b"lab/grubx64.efi"
    # Keys the subnet does not set fall back to the global table.
    assert answer(relayed(request(giaddr=lab, arch=0)))[0].file == b"undionly.kpxe"
    assert answer(relayed(request(giaddr=GIADDR)))[0].file == b"ipxe.efi"


def test_local_client_subnet_is_the_ingress_address() -> None:
    datagram = received(request(), ("0.0.0.0", 68), 67, IPv4Address("10.61.3.1"), ifindex=4)
    assert answer(datagram)[0].file == b"lab/grubx64.efi"


def test_http_boot_client_gets_a_url_and_httpclient_echoed() -> None:
    msg, _ = answer(local(request(vendor=b"HTTPClient:Arch:00016:UNDI:003000", arch=16)))
    assert msg.get(Opt.VENDOR_CLASS_ID) == b"HTTPClient"
    assert msg.file == b"http://10.61.2.10/ipxe.efi"
    assert not msg.has(Opt.VENDOR_SPECIFIC)


HTTP_VENDOR = b"HTTPClient:Arch:00016:UNDI:003000"


@pytest.mark.parametrize(("arch", "url"), [
    (16, "http://10.61.2.10/ipxe.efi"),  # its own entry, a URL as written
    (15, "http://10.61.2.10:8080/ipxe32.efi"),  # x86 UEFI HTTP: the efi-ia32 twin, made a URL
    (19, "http://10.61.2.10:8080/arm64.efi"),  # ARM64 UEFI HTTP: the efi-arm64 twin
])
def test_http_boot_clients_get_a_url_by_architecture(arch: int, url: str) -> None:
    config = PxeConfig(server_address=SERVER, boot=CONFIG.boot,
                       http_url="http://10.61.2.10:8080/")
    msg, _ = answer(local(request(vendor=HTTP_VENDOR, arch=arch)), config)
    assert msg.get(Opt.VENDOR_CLASS_ID) == b"HTTPClient"
    assert msg.file == url.encode() and msg.yiaddr == ZERO


def test_a_pxe_client_of_the_same_architecture_still_gets_the_plain_file() -> None:
    config = PxeConfig(server_address=SERVER, boot=CONFIG.boot, http_url="http://10.61.2.10/")
    assert answer(local(request(arch=11)), config)[0].file == b"arm64.efi"


def test_an_http_client_without_a_url_to_give_is_dropped() -> None:
    """A relative boot file and no http_url: a path is no use to a UEFI HTTP client."""
    drop = dropped(local(request(vendor=HTTP_VENDOR, arch=19)))
    assert drop is Drop.NO_BOOT_FILE


def test_boot_file_longer_than_the_file_field_goes_in_option_67() -> None:
    url = "http://10.61.2.10/" + "x" * 150
    config = PxeConfig(server_address=SERVER, boot=files(efi_x64=url))
    msg, _ = answer(local(request()), config)
    assert msg.file == b"" and msg.get(Opt.BOOTFILE_NAME) == url.encode()


# -- port 4011 --------------------------------------------------------------------------------
def test_port_4011_request_gets_an_ack_with_the_boot_file_unicast_back() -> None:
    client = IPv4Address("10.61.1.100")
    datagram = received(
        request(MessageType.REQUEST, ciaddr=client), (str(client), 68), 4011, SERVER
    )
    msg, reply = answer(datagram)
    assert msg.message_type == MessageType.ACK
    assert msg.file == b"ipxe.efi" and msg.ciaddr == client and msg.yiaddr == IPv4Address(0)
    assert reply.to == (str(client), 68) and reply.ifindex == 0


def test_port_4011_discover_is_ignored() -> None:
    datagram = received(request(MessageType.DISCOVER), ("10.61.1.100", 68), 4011, SERVER)
    assert dropped(datagram) is Drop.UNEXPECTED_TYPE


def test_port_67_request_is_for_the_dhcp_server() -> None:
    assert dropped(local(request(MessageType.REQUEST))) is Drop.UNEXPECTED_TYPE


def test_colocated_answers_on_4011_only() -> None:
    config = PxeConfig(server_address=SERVER, boot=CONFIG.boot, colocated=True)
    assert dropped(local(request()), config) is Drop.COLOCATED_PORT_67
    datagram = received(request(MessageType.REQUEST), ("10.61.1.100", 68), 4011, SERVER)
    assert answer(datagram, config)[0].file == b"ipxe.efi"


# -- boot menu --------------------------------------------------------------------------------
MENU_CONFIG = PxeConfig(
    server_address=SERVER,
    boot=CONFIG.boot,
    menu=(MenuItem(0, "Local disk", files()), MenuItem(8, "Install", files(efi_x64="install.efi"))),
    menu_prompt="Choose",
    menu_timeout=5,
)


def test_menu_offer_lists_items_and_servers_without_a_boot_file() -> None:
    msg, _ = answer(local(request()), MENU_CONFIG)
    assert msg.file == b""
    vendor = PxeVendorOptions.decode(msg.get(Opt.VENDOR_SPECIFIC))  # type: ignore[arg-type]
    assert vendor.boot_menu == [(0, b"Local disk"), (8, b"Install")]
    assert vendor.get(PxeSub.MENU_PROMPT) == b"\x05Choose"
    assert [(s.type, s.addresses) for s in vendor.boot_servers] == [(8, (SERVER,))]
    assert vendor.discovery_control == 0x07


def test_ipxe_gets_its_script_at_once_not_the_menu() -> None:
    """ipxe.efi has no PXE menu support: offered a menu, it stops ("Booting from PXE menu")."""
    msg, _ = answer(local(request(extra=((Opt.USER_CLASS, b"iPXE"),))), MENU_CONFIG)
    assert msg.file == b"boot.ipxe"
    vendor = PxeVendorOptions.decode(msg.get(Opt.VENDOR_SPECIFIC))  # type: ignore[arg-type]
    assert vendor.boot_menu == [] and vendor.discovery_control == 0x08


def test_menu_item_request_on_4011_gets_that_items_file_and_boot_item_echoed() -> None:
    item = PxeVendorOptions(((PxeSub.BOOT_ITEM, b"\x00\x08\x00\x00"),)).encode()
    payload = request(MessageType.REQUEST, extra=((Opt.VENDOR_SPECIFIC, item),))
    msg, _ = answer(received(payload, ("10.61.1.100", 68), 4011, SERVER), MENU_CONFIG)
    assert msg.file == b"install.efi"
    vendor = PxeVendorOptions.decode(msg.get(Opt.VENDOR_SPECIFIC))  # type: ignore[arg-type]
    assert vendor.boot_item == (8, 0)


def test_unknown_menu_item_is_dropped() -> None:
    item = PxeVendorOptions(((PxeSub.BOOT_ITEM, b"\x00\x09\x00\x00"),)).encode()
    payload = request(MessageType.REQUEST, extra=((Opt.VENDOR_SPECIFIC, item),))
    assert (
        dropped(received(payload, ("10.61.1.100", 68), 4011, SERVER), MENU_CONFIG)
        is Drop.UNKNOWN_MENU_ITEM
    )


# -- what is ignored --------------------------------------------------------------------------
def test_non_pxe_dhcp_traffic_is_ignored() -> None:
    assert dropped(local(request(vendor=None))) is Drop.NOT_PXE_CLIENT
    assert dropped(local(request(vendor=b"MSFT 5.0"))) is Drop.NOT_PXE_CLIENT


def test_replies_and_bootp_are_ignored() -> None:
    reply = encode(decode(request()).replace(op=Op.BOOTREPLY))
    assert dropped(local(reply)) is Drop.NOT_BOOTREQUEST
    bootp = encode(DhcpMessage(op=Op.BOOTREQUEST, xid=1, vendor=b""))
    assert dropped(local(bootp)) is Drop.NOT_DHCP


@pytest.mark.parametrize(
    ("code", "value"),
    [
        (Opt.CLIENT_ARCH, b"\x00"),
        (Opt.CLIENT_UUID, b"\x01" * 17),
        (Opt.VENDOR_SPECIFIC, b"\x47\x09"),
    ],
)
def test_malformed_pxe_options_are_dropped(code: int, value: bytes) -> None:
    payload = encode(decode(request(MessageType.REQUEST)).with_option(code, value))
    assert dropped(received(payload, ("10.61.1.100", 68), 4011, SERVER)) is Drop.BAD_PXE_OPTION


def test_truncated_message_is_malformed() -> None:
    assert dropped(local(request()[:100])) is Drop.MALFORMED


@given(st.binary(max_size=700), st.sampled_from([67, 4011]))
def test_any_bytes_give_a_result(data: bytes, port: int) -> None:
    assert isinstance(
        handle(received(data, ("10.61.1.5", 68), port, SERVER), CONFIG), (Reply, Dropped)
    )


@given(st.lists(st.tuples(st.integers(1, 254), st.binary(max_size=40)), max_size=8))
def test_any_options_on_a_pxe_discover_give_a_result(options: list[tuple[int, bytes]]) -> None:
    msg = decode(request())
    for code, value in options:
        msg = msg.with_option(code, value)
    assert isinstance(handle(local(encode(msg)), MENU_CONFIG), (Reply, Dropped))
