"""Real DHCPv6 messages from real clients, through the codec and through scapy.

The files in captures6/ were recorded by the second server of
tests/system/test_relay6_e2e.py (a UDP recorder on port 547) behind boothop-relay -6, with
kea-dhcp6 2.2 answering: the messages of ISC dhclient 4.4.3 (``dhclient -6``) and dhcpcd 9.4.1,
carried in boothop's Relay-forwards, and one whole Relay-forward as boothop sent it. Rerunning
that test (with its tmp_path kept) and copying the recorded payloads regenerates them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from boothop.relay.wire.dhcpv6 import (
    Dhcp6Message,
    IaNa,
    MessageType6,
    Opt6,
    RelayMessage,
    VendorClass,
    decode6,
    decode_codes,
    decode_u16,
    duid_link_layer,
    encode6,
)

logging.getLogger("scapy").setLevel(logging.ERROR)
d6 = pytest.importorskip("scapy.layers.dhcp6")

CAPTURES = Path(__file__).parent / "captures6"
CLIENT_FILES = sorted(p for p in CAPTURES.glob("*.bin") if not p.name.startswith("boothop"))
KINDS = {"solicit": MessageType6.SOLICIT, "request": MessageType6.REQUEST}


def test_the_captures_are_there() -> None:
    assert {p.stem for p in CLIENT_FILES} == {
        "dhclient-solicit", "dhclient-request", "dhcpcd-solicit", "dhcpcd-request",
    }


@pytest.mark.parametrize("path", CLIENT_FILES, ids=lambda p: p.stem)
def test_client_messages_decode_and_reencode_byte_for_byte(path: Path) -> None:
    data = path.read_bytes()
    message = decode6(data)
    assert isinstance(message, Dhcp6Message)
    assert encode6(message) == data
    assert message.msg_type == KINDS[path.stem.split("-")[1]]
    duid = message.get(Opt6.CLIENTID)
    assert duid is not None and duid_link_layer(duid) is not None  # DUID-LLT or DUID-LL
    ia = IaNa.decode(message.get(Opt6.IA_NA) or b"")
    assert ia.encode() == message.get(Opt6.IA_NA)
    assert decode_codes(message.get(Opt6.ORO) or b"")
    decode_u16(message.get(Opt6.ELAPSED_TIME) or b"")
    if message.msg_type == MessageType6.REQUEST:
        assert message.has(Opt6.SERVERID)  # Kea's, from its Advertise
    if path.stem.startswith("dhcpcd"):
        vendor = VendorClass.decode(message.get(Opt6.VENDOR_CLASS) or b"")
        assert vendor.data and vendor.data[0].startswith(b"dhcpcd")


@pytest.mark.parametrize("path", CLIENT_FILES, ids=lambda p: p.stem)
def test_scapy_reads_the_same_message(path: Path) -> None:
    message = decode6(path.read_bytes())
    assert isinstance(message, Dhcp6Message)
    kind = d6.DHCP6_Solicit if message.msg_type == MessageType6.SOLICIT else d6.DHCP6_Request
    theirs = kind(path.read_bytes())
    assert (theirs.msgtype, theirs.trid) == (message.msg_type, message.transaction_id)
    assert bytes(theirs[d6.DHCP6OptClientId].duid) == message.get(Opt6.CLIENTID)
    assert theirs[d6.DHCP6OptIA_NA].iaid == IaNa.decode(message.get(Opt6.IA_NA) or b"").iaid
    assert list(theirs[d6.DHCP6OptOptReq].reqopts) == list(
        decode_codes(message.get(Opt6.ORO) or b""))


def test_boothops_relay_forward_carries_dhclients_solicit_untouched() -> None:
    data = (CAPTURES / "boothop-relay-forward-dhclient-solicit.bin").read_bytes()
    forward = decode6(data)
    assert isinstance(forward, RelayMessage) and encode6(forward) == data
    assert forward.msg_type == MessageType6.RELAY_FORW and forward.hop_count == 0
    assert forward.link_address.exploded.startswith("2001:0db8:0001:")
    assert forward.peer_address.is_link_local
    assert forward.get(Opt6.INTERFACE_ID)
    assert forward.relayed == (CAPTURES / "dhclient-solicit.bin").read_bytes()
    theirs = d6.DHCP6_RelayForward(data)
    assert (theirs.hopcount, theirs.linkaddr, theirs.peeraddr) == (
        0, str(forward.link_address), str(forward.peer_address),
    )
    assert bytes(theirs[d6.DHCP6OptRelayMsg].message) == forward.relayed
