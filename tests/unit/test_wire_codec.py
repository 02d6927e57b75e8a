"""Example tests of the wire codec: header, options, overload, RFC 3396, BOOTP, 82, PXE, errors."""

from __future__ import annotations

import uuid
from ipaddress import IPv4Address

import pytest

from boothop.relay.wire import (
    MAGIC_COOKIE,
    AgentInfo,
    AgentSub,
    CapacityError,
    ClientArch,
    DhcpMessage,
    FieldError,
    MessageType,
    Op,
    Opt,
    PxeSub,
    TruncatedError,
    WireError,
    decode,
    encode,
    encoded_size,
)
from boothop.relay.wire.pxe import (
    BootServerType,
    NetworkInterfaceId,
    PxeVendorOptions,
    client_architectures,
    client_uuid,
    encode_boot_menu,
    encode_boot_servers,
    is_pxe_client,
)

CHADDR = bytes.fromhex("52540031abcd") + bytes(10)


def header(
    op: int = 1,
    htype: int = 1,
    hlen: int = 6,
    hops: int = 0,
    xid: int = 0x12345678,
    sname: bytes = b"",
    file: bytes = b"",
) -> bytes:
    """A hand-built 236-byte BOOTP header (RFC 2131 §2, figure 1)."""
    return (
        bytes((op, htype, hlen, hops))
        + xid.to_bytes(4, "big")
        + (7).to_bytes(2, "big")
        + (0x8000).to_bytes(2, "big")
        + IPv4Address("10.31.0.5").packed
        + IPv4Address("10.31.0.6").packed
        + IPv4Address("10.31.0.7").packed
        + IPv4Address("10.31.0.1").packed
        + CHADDR
        + sname.ljust(64, b"\0")
        + file.ljust(128, b"\0")
    )


def dhcp(options: bytes, **fields: object) -> bytes:
    """Header + magic cookie + a raw options area, padded to 300 bytes like a real client."""
    return (header(**fields) + MAGIC_COOKIE + options).ljust(300, b"\0")  # type: ignore[arg-type]


# -- header and framing ---------------------------------------------------------------------------


def test_header_fields_round_trip_at_their_offsets() -> None:
    msg = DhcpMessage(
        op=Op.BOOTREPLY, xid=0xDEADBEEF, chaddr=CHADDR, htype=6, hlen=6, hops=3, secs=513,
        flags=0x8000, ciaddr=IPv4Address("10.31.1.2"), yiaddr=IPv4Address("10.31.1.3"),
        siaddr=IPv4Address("10.31.1.4"), giaddr=IPv4Address("10.31.1.5"),
        sname=b"tftp.example", file=b"pxelinux.0", options=((Opt.MESSAGE_TYPE, b"\x02"),),
    )
    data = encode(msg)
    assert data[:4] == bytes((2, 6, 6, 3))
    assert data[4:8] == bytes.fromhex("deadbeef")
    assert data[8:12] == bytes.fromhex("02018000")
    assert data[12:28] == bytes((10, 31, 1, 2, 10, 31, 1, 3, 10, 31, 1, 4, 10, 31, 1, 5))
    assert data[28:44] == CHADDR
    assert data[44:108] == b"tftp.example".ljust(64, b"\0")
    assert data[108:236] == b"pxelinux.0".ljust(128, b"\0")
    decoded = decode(data)
    assert decoded == msg
    assert decoded.broadcast and decoded.mac == "52:54:00:31:ab:cd"
    assert decoded.message_type is MessageType.OFFER


def test_magic_cookie_follows_the_header() -> None:
    data = encode(DhcpMessage(1, 1, options=((Opt.MESSAGE_TYPE, b"\x01"),)))
    assert data[236:240] == MAGIC_COOKIE == bytes((99, 130, 83, 99))
    assert data[240:244] == bytes((53, 1, 1, 255))


def test_encoder_pads_to_300_bytes_with_zeros_after_end() -> None:
    data = encode(DhcpMessage(1, 1, options=((Opt.MESSAGE_TYPE, b"\x01"),)))
    assert len(data) == 300
    assert data[244:] == bytes(56)


def test_pad_options_are_skipped() -> None:
    data = dhcp(b"\x00\x00\x35\x01\x03\x00\x0c\x03abc\x00\xff")
    assert decode(data).options == ((53, b"\x03"), (12, b"abc"))


def test_options_after_end_are_ignored() -> None:
    data = dhcp(b"\x35\x01\x01\xff\x0c\x03abc\x36\x04\x0a\x1f\x00\x01\xee")
    assert decode(data).options == ((53, b"\x01"),)


def test_options_area_without_end_is_accepted() -> None:
    data = header() + MAGIC_COOKIE + b"\x35\x01\x01"
    assert decode(data).options == ((53, b"\x01"),)


# -- option overload (52) -------------------------------------------------------------------------


def test_rfc2131_4_1_overload_reads_options_then_file_then_sname() -> None:
    """RFC 2131 §4.1: "the 'file' field MUST be interpreted next (...), followed by the 'sname'
    field"."""
    file_area = b"\x43\x08boot.efi\xc8\x02cd\xff"
    sname_area = b"\x42\x09tftp-host\xff"
    data = dhcp(b"\x34\x01\x03\x35\x01\x05\xc8\x02ab\xff", file=file_area, sname=sname_area)
    msg = decode(data)
    assert msg.options == (
        (53, b"\x05"), (200, b"abcd"), (67, b"boot.efi"), (66, b"tftp-host"),
    )
    assert msg.file == b"" and msg.sname == b""
    assert not msg.has(Opt.OVERLOAD)


def test_rfc2131_4_1_overload_must_appear_in_the_options_field() -> None:
    """An option 52 inside the overloaded file field does not make sname hold options."""
    data = dhcp(b"\x34\x01\x01\xff", file=b"\x34\x01\x02\x43\x01b\xff", sname=b"\x42\x01x\xff")
    msg = decode(data)
    assert msg.options == ((67, b"b"),)
    assert msg.sname == b"\x42\x01x\xff"


def test_overload_file_only_keeps_sname() -> None:
    data = dhcp(b"\x34\x01\x01\x35\x01\x05\xff", file=b"\x43\x04boot\xff", sname=b"server-a")
    msg = decode(data)
    assert msg.options == ((53, b"\x05"), (67, b"boot"))
    assert msg.sname == b"server-a" and msg.file == b""


def test_overload_sname_only_keeps_file() -> None:
    data = dhcp(b"\x34\x01\x02\x35\x01\x05\xff", file=b"pxelinux.0", sname=b"\x42\x01x\xff")
    msg = decode(data)
    assert msg.options == ((53, b"\x05"), (66, b"x"))
    assert msg.file == b"pxelinux.0" and msg.sname == b""


def many_options(count: int, size: int) -> tuple[tuple[int, bytes], ...]:
    return ((Opt.MESSAGE_TYPE, b"\x02"), *tuple((100 + i, bytes([i]) * size) for i in range(count)))


def test_encode_overloads_file_then_sname_when_capacity_is_small() -> None:
    msg = DhcpMessage(2, 9, chaddr=CHADDR, options=many_options(9, 20))  # 201 bytes of options
    assert encoded_size(msg) > 300
    data = encode(msg, capacity=300)
    assert len(data) == 300
    assert data[240:243] == bytes((52, 1, 3))
    assert data[108] in range(100, 110) and data[44] in range(100, 110)
    assert decode(data) == msg


def test_encode_overloads_only_the_empty_field() -> None:
    msg = DhcpMessage(2, 9, chaddr=CHADDR, file=b"boot.efi", options=many_options(4, 20))
    data = encode(msg, capacity=300)
    assert data[240:243] == bytes((52, 1, 2))
    assert data[108:116] == b"boot.efi"
    assert decode(data) == msg


def test_encode_splits_a_long_option_over_the_overloaded_areas() -> None:
    options = ((Opt.MESSAGE_TYPE, b"\x01"), (224, bytes(range(200))))
    msg = DhcpMessage(1, 9, chaddr=CHADDR, options=options)
    data = encode(msg, capacity=300)
    assert data[240:243] == bytes((52, 1, 3))
    assert decode(data) == msg


def test_encode_does_not_overload_when_options_fit() -> None:
    msg = DhcpMessage(2, 9, options=many_options(10, 20))
    assert not decode(encode(msg)).has(Opt.OVERLOAD)
    assert encode(msg)[240] == 53


# -- RFC 3396 long options --------------------------------------------------------------------


def test_rfc3396_long_option_is_split_into_255_byte_instances() -> None:
    value = bytes(i % 251 for i in range(600))
    data = encode(DhcpMessage(1, 1, options=((224, value),)))
    assert data[240:242] == bytes((224, 255)) and data[240 + 257 : 242 + 257] == bytes((224, 255))
    assert data[240 + 514 : 242 + 514] == bytes((224, 90))
    assert data[240 + 514 + 92] == 255
    assert decode(data).options == ((224, value),)


def test_rfc3396_1_agents_must_concatenate_repeated_options_at_the_first_position() -> None:
    data = dhcp(b"\xe0\x02ab\x35\x01\x01\xe0\x02cd\x0c\x01h\xe0\x00\xe0\x01e\xff")
    assert decode(data).options == ((224, b"abcde"), (53, b"\x01"), (12, b"h"))


# -- maximum message size ---------------------------------------------------------------------


def test_encode_raises_capacity_error_when_the_message_cannot_fit() -> None:
    msg = DhcpMessage(1, 1, sname=b"s", file=b"f", options=((224, bytes(400)),))
    with pytest.raises(CapacityError):
        encode(msg, capacity=576)
    with pytest.raises(CapacityError):
        encode(DhcpMessage(1, 1, options=((224, bytes(2000)),)))


def test_encode_fits_exactly_at_capacity() -> None:
    msg = DhcpMessage(1, 1, sname=b"s", file=b"f", options=((224, bytes(400)),))
    size = encoded_size(msg)
    assert len(encode(msg, capacity=size)) == size
    with pytest.raises(CapacityError):
        encode(msg, capacity=size - 1)


# -- plain BOOTP (RFC 951 / RFC 1497) ---------------------------------------------------------


def test_bootp_without_cookie_keeps_the_vendor_area_raw() -> None:
    vendor = b"\x01\x02\x03\x04vendor-specific\x00\x07"
    data = (header(file=b"vmunix") + vendor).ljust(300, b"\0")
    msg = decode(data)
    assert msg.vendor == vendor and msg.options == () and not msg.is_dhcp
    assert msg.file == b"vmunix"
    assert encode(msg) == data


def test_bootp_header_only_round_trips() -> None:
    msg = decode(header())
    assert msg.vendor == b""
    assert decode(encode(msg)) == msg


def test_bootp_with_cookie_decodes_rfc1497_options() -> None:
    options = b"\x01\x04\xff\xff\xff\x00\x03\x04\x0a\x1f\x00\x01\x0c\x04host\xff"
    data = dhcp(options, op=2)
    msg = decode(data)
    assert msg.vendor is None and not msg.is_dhcp
    assert msg.options == ((1, b"\xff\xff\xff\x00"), (3, b"\x0a\x1f\x00\x01"), (12, b"host"))
    assert encode(msg) == data


def test_encode_refuses_options_on_a_raw_vendor_message() -> None:
    msg = DhcpMessage(1, 1, vendor=b"abc", options=((82, b"\x01\x01x"),))
    with pytest.raises(FieldError):
        encode(msg)


def test_encode_refuses_a_vendor_area_that_starts_with_the_cookie() -> None:
    with pytest.raises(FieldError):
        encode(DhcpMessage(1, 1, vendor=MAGIC_COOKIE + b"\x35\x01\x01"))


# -- option 82 --------------------------------------------------------------------------------


def test_relay_agent_information_sub_options() -> None:
    info = AgentInfo(
        (
            (AgentSub.CIRCUIT_ID, b"eth1"),
            (AgentSub.REMOTE_ID, b"\x00\x06relay1"),
            (AgentSub.LINK_SELECTION, bytes((10, 31, 2, 0))),
            (AgentSub.RELAY_AGENT_FLAGS, b"\x80"),
            (AgentSub.SERVER_ID_OVERRIDE, bytes((10, 31, 2, 1))),
            (151, b"\xde\xad"),
        )
    )
    raw = (
        b"\x01\x04eth1\x02\x08\x00\x06relay1\x05\x04\x0a\x1f\x02\x00\x0a\x01\x80"
        b"\x0b\x04\x0a\x1f\x02\x01\x97\x02\xde\xad"
    )
    assert info.encode() == raw
    msg = decode(dhcp(b"\x35\x01\x01\x52" + bytes((len(raw),)) + raw + b"\xff"))
    decoded = AgentInfo.decode(msg.get(Opt.RELAY_AGENT_INFO) or b"")
    assert decoded == info
    assert decoded.circuit_id == b"eth1" and decoded.remote_id == b"\x00\x06relay1"
    assert decoded.link_selection == IPv4Address("10.31.2.0")
    assert decoded.flags == 0x80
    assert decoded.server_id_override == IPv4Address("10.31.2.1")
    assert decoded.get(151) == b"\xde\xad"


def test_truncated_relay_agent_sub_option_is_a_truncated_error() -> None:
    with pytest.raises(TruncatedError) as error:
        AgentInfo.decode(b"\x01\x04eth1\x02\x05abc")
    assert error.value.offset == 8


# -- PXE options ------------------------------------------------------------------------------


def test_pxe_options_43_60_93_94_97() -> None:
    guid = uuid.UUID("4d1f6a2c-9b3e-4f70-a1b2-c3d4e5f60718")
    servers = [BootServerType(0x8000, (IPv4Address("10.31.0.10"), IPv4Address("10.31.0.11")))]
    menu = [(0x8000, b"Install"), (0, b"Local boot")]
    vendor = PxeVendorOptions(
        (
            (PxeSub.DISCOVERY_CONTROL, b"\x03"),
            (PxeSub.BOOT_SERVERS, encode_boot_servers(servers)),
            (PxeSub.BOOT_MENU, encode_boot_menu(menu)),
            (PxeSub.MENU_PROMPT, b"\x0aPress F8"),
            (PxeSub.BOOT_ITEM, b"\x80\x00\x00\x00"),
        )
    )
    msg = DhcpMessage(
        1, 7, chaddr=CHADDR,
        options=(
            (Opt.MESSAGE_TYPE, b"\x01"),
            (Opt.VENDOR_CLASS_ID, b"PXEClient:Arch:00007:UNDI:003016"),
            (Opt.CLIENT_ARCH, b"\x00\x07\x00\x00\x00\x0b"),
            (Opt.CLIENT_NDI, NetworkInterfaceId(1, 3, 16).encode()),
            (Opt.CLIENT_UUID, b"\x00" + guid.bytes),
            (Opt.VENDOR_SPECIFIC, vendor.encode()),
        ),
    )
    decoded = decode(encode(msg))
    assert decoded == msg
    assert is_pxe_client(decoded)
    archs = [ClientArch.EFI_X64, ClientArch.BIOS, ClientArch.EFI_ARM64]
    assert client_architectures(decoded) == archs
    ndi = decoded.get(Opt.CLIENT_NDI) or b""
    assert NetworkInterfaceId.decode(ndi) == NetworkInterfaceId(1, 3, 16)
    assert client_uuid(decoded) == guid
    pxe = PxeVendorOptions.decode(decoded.get(Opt.VENDOR_SPECIFIC) or b"")
    assert pxe == vendor
    assert pxe.discovery_control == 3
    assert pxe.boot_servers == servers
    assert pxe.boot_menu == menu
    assert pxe.get(PxeSub.MENU_PROMPT) == b"\x0aPress F8"
    assert pxe.boot_item == (0x8000, 0)


def test_pxe_vendor_options_hand_built_bytes() -> None:
    raw = (
        b"\x06\x01\x08\x08\x07\x80\x00\x01\x0a\x1f\x00\x0a\x09\x07\x80\x00\x04boot"
        b"\x0a\x03\x05go\x47\x04\x80\x00\x00\x01\xff"
    )
    pxe = PxeVendorOptions.decode(raw)
    assert pxe.discovery_control == 8
    assert pxe.boot_servers == [BootServerType(0x8000, (IPv4Address("10.31.0.10"),))]
    assert pxe.boot_menu == [(0x8000, b"boot")]
    assert pxe.boot_item == (0x8000, 1)
    assert pxe.encode() == raw


def test_odd_client_arch_length_is_a_field_error() -> None:
    msg = DhcpMessage(1, 1, options=((Opt.CLIENT_ARCH, b"\x00\x07\x00"),))
    with pytest.raises(FieldError):
        client_architectures(msg)


# -- unknown options --------------------------------------------------------------------------


def test_unknown_options_survive_byte_for_byte_in_order() -> None:
    options = b"\xfa\x03xyz\x35\x01\x03\x96\x00\xe0\x05\x00\x01\x02\x03\x04\x7b\x02\xff\xfe\xff"
    data = dhcp(options)
    msg = decode(data)
    assert [code for code, _ in msg.options] == [250, 53, 150, 224, 123]
    assert msg.get(123) == b"\xff\xfe"
    assert encode(msg) == data


# -- malformed input --------------------------------------------------------------------------


def assert_error(data: bytes, kind: type[WireError], offset: int) -> None:
    with pytest.raises(kind) as error:
        decode(data)
    assert error.value.offset == offset
    assert f"offset {offset}" in str(error.value)


def test_truncated_header_is_a_truncated_error() -> None:
    assert_error(header()[:100], TruncatedError, 100)


def test_option_length_past_the_end_is_a_truncated_error() -> None:
    assert_error(header() + MAGIC_COOKIE + b"\x35\x01\x01\x0c\x09abc", TruncatedError, 245)


def test_option_length_byte_missing_is_a_truncated_error() -> None:
    assert_error(header() + MAGIC_COOKIE + b"\x35\x01\x01\x0c", TruncatedError, 244)


def test_hlen_over_16_is_a_field_error() -> None:
    assert_error(dhcp(b"\xff", hlen=17), FieldError, 2)


def test_bad_op_is_a_field_error() -> None:
    assert_error(dhcp(b"\xff", op=3), FieldError, 0)


def test_bad_overload_value_is_a_field_error_at_the_option() -> None:
    assert_error(dhcp(b"\x35\x01\x01\x34\x01\x04\xff"), FieldError, 243)
    assert_error(dhcp(b"\x34\x02\x01\x01\xff"), FieldError, 240)


def test_truncated_option_in_overloaded_file_reports_its_offset() -> None:
    file_area = bytes(118) + b"\x43\x04boot\x0c\x0aab"  # option 12 announces 10 bytes, 2 remain
    assert_error(dhcp(b"\x34\x01\x01\xff", file=file_area), TruncatedError, 234)


def test_errors_are_value_errors() -> None:
    assert issubclass(WireError, ValueError)
    for kind in (TruncatedError, FieldError, CapacityError):
        assert issubclass(kind, WireError)


def test_decode_accepts_bytearray_and_memoryview() -> None:
    data = encode(DhcpMessage(1, 1, options=((Opt.MESSAGE_TYPE, b"\x01"),)))
    assert decode(bytearray(data)) == decode(memoryview(data)) == decode(data)
