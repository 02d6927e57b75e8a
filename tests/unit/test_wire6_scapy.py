"""Cross-check of the DHCPv6 codec against an independent builder and parser: scapy.layers.dhcp6.

Each check builds the same option (or message) twice, once with scapy from its fields and once
with our typed values, and compares the bytes; then scapy parses our bytes and its fields must be
the values we encoded.
"""

from __future__ import annotations

import logging
from ipaddress import IPv6Address
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_wire6_properties import addresses6, domain_names, u32
from test_wire_properties import PROPERTY

from boothop.relay.wire import dhcpv6 as v6
from boothop.relay.wire.dhcpv6 import (
    ClientLinkLayer,
    Dhcp6Message,
    IaAddress,
    IaNa,
    IaPd,
    IaPrefix,
    NetworkInterfaceId,
    Opt6,
    RelayMessage,
    RemoteId,
    StatusCode,
    VendorClass,
    decode6,
    encode6,
    encode_options,
)

logging.getLogger("scapy").setLevel(logging.ERROR)
d6 = pytest.importorskip("scapy.layers.dhcp6")

CHECK = settings(PROPERTY, max_examples=100)
short_text = st.text("abcdefghijklmnopqrstuvwxyz:/.[]0123456789", max_size=30)


def ours(code: int, value: bytes) -> bytes:
    return encode_options([(code, value)])


@CHECK
@given(u32, u32, u32, addresses6, u32, u32)
def test_ia_na_with_an_address(
    iaid: int, t1: int, t2: int, address: IPv6Address, preferred: int, valid: int
) -> None:
    ia = IaNa(iaid, t1, t2, (IaAddress(address, preferred, valid).option(),))
    theirs = d6.DHCP6OptIA_NA(
        iaid=iaid, T1=t1, T2=t2,
        ianaopts=[d6.DHCP6OptIAAddress(addr=str(address), preflft=preferred, validlft=valid)],
    )
    assert bytes(theirs) == ours(*ia.option())
    parsed = d6.DHCP6OptIA_NA(ours(*ia.option()))
    assert (parsed.iaid, parsed.T1, parsed.T2) == (iaid, t1, t2)
    assert IPv6Address(parsed.ianaopts[0].addr) == address


@CHECK
@given(u32, u32, u32, st.integers(0, 128), addresses6, u32, u32)
def test_ia_pd_with_a_prefix(
    iaid: int, t1: int, t2: int, length: int, prefix: IPv6Address, preferred: int, valid: int
) -> None:
    ia = IaPd(iaid, t1, t2, (IaPrefix(length, prefix, preferred, valid).option(),))
    theirs = d6.DHCP6OptIA_PD(
        iaid=iaid, T1=t1, T2=t2,
        iapdopt=[
            d6.DHCP6OptIAPrefix(preflft=preferred, validlft=valid, plen=length, prefix=str(prefix))
        ],
    )
    assert bytes(theirs) == ours(*ia.option())
    parsed = d6.DHCP6OptIA_PD(ours(*ia.option())).iapdopt[0]
    assert (parsed.plen, IPv6Address(parsed.prefix)) == (length, prefix)


@CHECK
@given(st.integers(0, 0xFFFF), short_text)
def test_status_code(status: int, message: str) -> None:
    value = StatusCode(status, message)
    theirs = d6.DHCP6OptStatusCode(statuscode=status, statusmsg=message.encode())
    assert bytes(theirs) == ours(*value.option())
    assert StatusCode.decode(bytes(theirs)[4:]) == value


@CHECK
@given(u32, st.binary(max_size=40))
def test_remote_id(enterprise: int, remote_id: bytes) -> None:
    theirs = d6.DHCP6OptRemoteID(enterprisenum=enterprise, remoteid=remote_id)
    assert bytes(theirs) == ours(*RemoteId(enterprise, remote_id).option())


@CHECK
@given(st.binary(min_size=6, max_size=6))
def test_client_link_layer_address(mac: bytes) -> None:
    """RFC 6939: scapy's field is an Ethernet MAC (link-layer type 1)."""
    theirs = d6.DHCP6OptClientLinkLayerAddr(lltype=1, clladdr=mac.hex(":"))
    assert bytes(theirs) == ours(*ClientLinkLayer(1, mac).option())
    assert ClientLinkLayer.decode(bytes(theirs)[4:]) == ClientLinkLayer(1, mac)


@CHECK
@given(u32, st.lists(st.binary(min_size=1, max_size=20), max_size=3))
def test_vendor_class(enterprise: int, data: list[bytes]) -> None:
    theirs = d6.DHCP6OptVendorClass(
        enterprisenum=enterprise, vcdata=[d6.VENDOR_CLASS_DATA(data=item) for item in data]
    )
    assert bytes(theirs) == ours(*VendorClass(enterprise, tuple(data)).option())


@CHECK
@given(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255))
def test_client_network_interface_identifier(kind: int, major: int, minor: int) -> None:
    theirs = d6.DHCP6OptClientNetworkInterId(iitype=kind, iimajor=major, iiminor=minor)
    assert bytes(theirs) == ours(*NetworkInterfaceId(kind, major, minor).option())


@CHECK
@given(st.lists(st.integers(0, 0xFFFF), max_size=8))
def test_option_request_and_client_arch(codes: list[int]) -> None:
    assert bytes(d6.DHCP6OptOptReq(reqopts=codes)) == ours(Opt6.ORO, v6.encode_codes(codes))
    theirs = d6.DHCP6OptClientArchType(archtypes=codes)
    assert bytes(theirs) == ours(Opt6.CLIENT_ARCH_TYPE, v6.encode_codes(codes))
    assert v6.decode_codes(bytes(theirs)[4:]) == tuple(codes)


@CHECK
@given(st.lists(addresses6, max_size=4))
def test_dns_servers(servers: list[IPv6Address]) -> None:
    theirs = d6.DHCP6OptDNSServers(dnsservers=[str(server) for server in servers])
    assert bytes(theirs) == ours(Opt6.DNS_SERVERS, v6.encode_addresses(servers))


@CHECK
@given(st.lists(domain_names.filter(bool), max_size=4))
def test_domain_search_list(names: list[str]) -> None:
    theirs = d6.DHCP6OptDNSDomains(dnsdomains=[name + "." for name in names])
    assert bytes(theirs) == ours(Opt6.DOMAIN_LIST, v6.encode_domains(names))
    assert v6.decode_domains(bytes(theirs)[4:]) == tuple(names)


@CHECK
@given(short_text, st.integers(0, 255), st.integers(0, 0xFFFF), st.binary(max_size=20))
def test_single_value_options(url: str, preference: int, elapsed: int, interface: bytes) -> None:
    """Bootfile-URL (59), Preference (7), Elapsed Time (8), Interface-ID (18)."""
    pairs: list[tuple[Any, int, bytes]] = [
        (d6.DHCP6OptBootFileUrl(optdata=url.encode()), Opt6.BOOTFILE_URL, url.encode()),
        (d6.DHCP6OptPref(prefval=preference), Opt6.PREFERENCE, v6.encode_uint(preference, 1)),
        (
            d6.DHCP6OptElapsedTime(elapsedtime=elapsed),
            Opt6.ELAPSED_TIME,
            v6.encode_uint(elapsed, 2),
        ),
        (d6.DHCP6OptIfaceId(ifaceid=interface), Opt6.INTERFACE_ID, interface),
    ]
    for theirs, code, value in pairs:
        assert bytes(theirs) == ours(code, value)


@CHECK
@given(
    st.integers(0, 0xFFFFFF),
    st.binary(min_size=6, max_size=6),
    st.integers(0, 255),
    addresses6,
    addresses6,
    st.binary(min_size=1, max_size=16),
)
def test_relay_forward_carrying_a_solicit(
    xid: int, mac: bytes, hops: int, link: IPv6Address, peer: IPv6Address, interface: bytes
) -> None:
    """A whole Relay-forward built by scapy decodes to the fields it was built from, and our
    encoding of those fields is scapy's bytes."""
    duid = b"\x00\x03\x00\x01" + mac
    solicit = (
        d6.DHCP6_Solicit(trid=xid)
        / d6.DHCP6OptClientId(duid=d6.DUID_LL(lladdr=mac.hex(":")))
        / d6.DHCP6OptElapsedTime(elapsedtime=0)
        / d6.DHCP6OptRapidCommit()
    )
    theirs = (
        d6.DHCP6_RelayForward(hopcount=hops, linkaddr=str(link), peeraddr=str(peer))
        / d6.DHCP6OptIfaceId(ifaceid=interface)
        / d6.DHCP6OptRelayMsg(message=solicit)
    )
    message = decode6(bytes(theirs))
    assert isinstance(message, RelayMessage)
    assert (message.msg_type, message.hop_count, message.link_address, message.peer_address) == (
        12, hops, link, peer,
    )
    inner = Dhcp6Message(
        1, xid, ((Opt6.CLIENTID, duid), (Opt6.ELAPSED_TIME, b"\0\0"), (Opt6.RAPID_COMMIT, b""))
    )
    assert message.inner() == inner
    assert v6.duid_link_layer(duid) == (1, mac)
    built = RelayMessage(
        12, hops, link, peer, ((Opt6.INTERFACE_ID, interface), (Opt6.RELAY_MSG, encode6(inner)))
    )
    assert encode6(built) == bytes(theirs)
