"""The proxyDHCP decisions (PXE spec 2.1 §2.2, dnsmasq's proxy mode as the reference).

Pure: a ``Datagram`` goes in, a ``Reply`` or a ``Drop`` comes out. The service never hands out
addresses: it tells PXE clients where their boot file is.
"""

from __future__ import annotations

import dataclasses
import enum
from ipaddress import IPv4Address

from boothop.relay.wire import (
    DHCP_MIN_MAX_SIZE,
    ETHERNET_MAX_MESSAGE,
    SERVER_PORT,
    ZERO,
    Datagram,
    DhcpMessage,
    MessageType,
    Op,
    Opt,
    PxeSub,
    WireError,
    decode,
    encode,
)
from boothop.relay.wire.pxe import (
    BootServerType,
    PxeVendorOptions,
    client_architectures,
    client_uuid,
    encode_boot_menu,
    encode_boot_servers,
)

from .bootfile import choose, is_ipxe
from .config import PxeConfig

PXE_CLIENT = b"PXEClient"
#: UEFI HTTP boot clients (UEFI 2.5 §24.4) send "HTTPClient" and expect it echoed.
HTTP_CLIENT = b"HTTPClient"
BROADCAST = IPv4Address("255.255.255.255")
CLIENT_PORT = 68

#: PXE_DISCOVERY_CONTROL (PXE spec 2.1 table 2-1) bits.
DISABLE_BROADCAST = 0x01
DISABLE_MULTICAST = 0x02
ONLY_LISTED_SERVERS = 0x04
#: "If set, and a boot file name is present in the initial DHCP or ProxyDHCP offer packet,
#: download the boot file (do not prompt/menu/discover)."
USE_BOOT_FILE = 0x08


class Drop(enum.Enum):
    MALFORMED = "malformed"
    NOT_BOOTREQUEST = "not_bootrequest"
    NOT_DHCP = "not_dhcp"
    NOT_PXE_CLIENT = "not_pxe_client"
    UNEXPECTED_TYPE = "unexpected_type"
    COLOCATED_PORT_67 = "colocated_port_67"
    BAD_PXE_OPTION = "bad_pxe_option"
    NO_BOOT_FILE = "no_boot_file"
    UNKNOWN_MENU_ITEM = "unknown_menu_item"
    REPLY_TOO_LARGE = "reply_too_large"


@dataclasses.dataclass(frozen=True, slots=True)
class Reply:
    payload: bytes
    to: tuple[str, int]
    #: The interface to broadcast on; 0 for a routed unicast.
    ifindex: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class Dropped:
    reason: Drop
    detail: str = ""


def handle(datagram: Datagram, config: PxeConfig) -> Reply | Dropped:
    """Answer a PXE client, or say why not. Any bytes give a result; nothing is raised."""
    try:
        msg = decode(datagram.payload)
    except WireError as exc:
        return Dropped(Drop.MALFORMED, str(exc))
    if msg.op != Op.BOOTREQUEST:
        return Dropped(Drop.NOT_BOOTREQUEST)
    if not msg.is_dhcp:
        return Dropped(Drop.NOT_DHCP)
    vendor_class = msg.get(Opt.VENDOR_CLASS_ID) or b""
    if not vendor_class.startswith((PXE_CLIENT, HTTP_CLIENT)):
        # Not ours: the DHCP server answers it. Silently ignored, counted.
        return Dropped(Drop.NOT_PXE_CLIENT)
    on_pxe_port = datagram.port == config.pxe_port
    if not on_pxe_port and config.colocated:
        return Dropped(Drop.COLOCATED_PORT_67)
    expected = MessageType.REQUEST if on_pxe_port else MessageType.DISCOVER
    if msg.message_type != expected:
        detail = f"message type {msg.message_type} on port {datagram.port}"
        return Dropped(Drop.UNEXPECTED_TYPE, detail)
    try:
        arches = client_architectures(msg)
        client_uuid(msg)
        requested = PxeVendorOptions.decode(msg.get(Opt.VENDOR_SPECIFIC) or b"")
        boot_item = requested.boot_item if on_pxe_port else None
    except WireError as exc:
        return Dropped(Drop.BAD_PXE_OPTION, str(exc))
    menu_type = boot_item[0] if boot_item and config.menu else None
    if menu_type is not None and all(item.type != menu_type for item in config.menu):
        return Dropped(Drop.UNKNOWN_MENU_ITEM, f"boot server type {menu_type}")
    ipxe = is_ipxe(msg.get(Opt.USER_CLASS))
    # iPXE is past discovery: it gets its script in the offer, with discovery control's "use the
    # boot file" bit. iPXE builds without PXE menu support (ipxe.efi, snponly.efi) stop at a
    # menu with "Booting from PXE menu ... No more network devices".
    show_menu = (bool(config.menu) and not on_pxe_port and vendor_class.startswith(PXE_CLIENT)
                 and not ipxe)
    link = _link(msg, datagram, on_pxe_port)
    boot_file = None
    if not show_menu:
        # UEFI HTTP boot: the answer's file is a URL (choose() makes one or gives None).
        http = vendor_class.startswith(HTTP_CLIENT)
        boot_file = choose(config, arches, ipxe, link, menu_type, http=http)
        if boot_file is None:
            what = "boot URL (no pxe.http_url nor [http])" if http else "boot file"
            return Dropped(Drop.NO_BOOT_FILE, f"no {what} for architectures {arches or [0]}")
    reply = _reply(msg, config, on_pxe_port, vendor_class, boot_file, show_menu, boot_item)
    try:
        payload = encode(reply, _capacity(msg))
    except WireError as exc:
        return Dropped(Drop.REPLY_TOO_LARGE, str(exc))
    return Reply(payload, *_destination(msg, datagram, on_pxe_port))


def _link(msg: DhcpMessage, datagram: Datagram, on_pxe_port: bool) -> IPv4Address | None:
    """The address that names the client's subnet: giaddr when relayed, else its own address
    (on 4011 it has one), else the local address the broadcast arrived on."""
    if msg.giaddr != ZERO:
        return msg.giaddr
    if on_pxe_port:
        return msg.ciaddr if msg.ciaddr != ZERO else datagram.source
    return datagram.local if datagram.local != ZERO else None


def _capacity(msg: DhcpMessage) -> int:
    value = msg.get(Opt.MAX_MESSAGE_SIZE)
    size = int.from_bytes(value, "big") if value and len(value) == 2 else DHCP_MIN_MAX_SIZE
    # Never more than one Ethernet frame: replies through a relay are not fragmented well.
    return min(max(size, DHCP_MIN_MAX_SIZE), ETHERNET_MAX_MESSAGE)


def _vendor_options(config: PxeConfig, show_menu: bool, boot_item: tuple[int, int] | None) -> bytes:
    if boot_item is not None:
        # PXE spec 2.1 §2.2.6: the boot server's ACK carries PXE_BOOT_ITEM with the type and
        # layer the client asked for.
        item = boot_item[0].to_bytes(2, "big") + boot_item[1].to_bytes(2, "big")
        return PxeVendorOptions(((PxeSub.BOOT_ITEM, item),)).encode()
    if not show_menu:
        return PxeVendorOptions(((PxeSub.DISCOVERY_CONTROL, bytes((USE_BOOT_FILE,))),)).encode()
    servers = [
        BootServerType(item.type, (config.server_address,)) for item in config.menu if item.type
    ]
    menu = [(item.type, item.description.encode()) for item in config.menu]
    prompt = bytes((config.menu_timeout,)) + config.menu_prompt.encode()
    control = DISABLE_BROADCAST | DISABLE_MULTICAST | ONLY_LISTED_SERVERS
    subs = [(PxeSub.DISCOVERY_CONTROL, bytes((control,)))]
    if servers:
        subs.append((PxeSub.BOOT_SERVERS, encode_boot_servers(servers)))
    subs += [(PxeSub.BOOT_MENU, encode_boot_menu(menu)), (PxeSub.MENU_PROMPT, prompt)]
    return PxeVendorOptions(tuple(subs)).encode()


def _reply(
    msg: DhcpMessage,
    config: PxeConfig,
    on_pxe_port: bool,
    vendor_class: bytes,
    boot_file: str | None,
    show_menu: bool,
    boot_item: tuple[int, int] | None,
) -> DhcpMessage:
    http = vendor_class.startswith(HTTP_CLIENT)
    options: list[tuple[int, bytes]] = [
        (Opt.MESSAGE_TYPE, bytes((MessageType.ACK if on_pxe_port else MessageType.OFFER,))),
        (Opt.SERVER_ID, config.server_address.packed),
        (Opt.VENDOR_CLASS_ID, HTTP_CLIENT if http else PXE_CLIENT),
    ]
    uuid = msg.get(Opt.CLIENT_UUID)
    if uuid is not None:
        # PXE spec 2.1 §2.2.5: the client UUID is echoed in the server's replies.
        options.append((Opt.CLIENT_UUID, uuid))
    if not http:
        options.append((Opt.VENDOR_SPECIFIC, _vendor_options(config, show_menu, boot_item)))
    file = b""
    if boot_file is not None:
        file = boot_file.encode()
        if len(file) > 127:  # an HTTP boot URL may not fit the 128-byte 'file' field
            options.append((Opt.BOOTFILE_NAME, file))
            file = b""
    agent_info = msg.get(Opt.RELAY_AGENT_INFO)
    if agent_info is not None:
        # RFC 3046 §2.2: "DHCP servers ... MUST copy the Relay Agent Information option as the
        # last DHCP option in the response".
        options.append((Opt.RELAY_AGENT_INFO, agent_info))
    return DhcpMessage(
        op=Op.BOOTREPLY,
        xid=msg.xid,
        chaddr=msg.chaddr,
        htype=msg.htype,
        hlen=msg.hlen,
        flags=msg.flags,
        ciaddr=msg.ciaddr if on_pxe_port else ZERO,
        yiaddr=ZERO,  # a proxy never offers an address
        siaddr=config.next_server,
        giaddr=msg.giaddr,
        sname=config.server_name.encode(),
        file=file,
        options=tuple(options),
    )


def _destination(
    msg: DhcpMessage, datagram: Datagram, on_pxe_port: bool
) -> tuple[tuple[str, int], int]:
    if on_pxe_port:
        # The client asked from its own address: answer it there.
        return (str(datagram.source), datagram.source_port), 0
    if msg.giaddr != ZERO:
        # RFC 2131 §4.1: "If the 'giaddr' field in a DHCP message from a client is non-zero,
        # the server sends any return messages to the 'DHCP server' port on the BOOTP relay
        # agent whose address appears in 'giaddr'."
        return (str(msg.giaddr), SERVER_PORT), 0
    # A local PXE client has no address yet (yiaddr is 0): broadcast on its link.
    return (str(BROADCAST), CLIENT_PORT), datagram.ifindex
