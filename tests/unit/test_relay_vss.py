"""RFC 6607 Virtual Subnet Selection: option 82 sub-options 151 (VSS) and 152 (VSS-Control).

The relay adds both per interface (TOML ``vss``): VSS is a type octet (0 NVT ASCII VPN
identifier, 1 RFC 2685 VPN-ID of 7 octets, 255 the global default VPN, with no information) and
the information; VSS-Control has length 0. A server that processed VSS does not echo VSS-Control,
so a reply carrying it comes from a server that ignored VSS and is dropped; the relay removes its
option 82 (and so 151/152) from replies it delivers (RFC 3046 §2.1). scapy's RFC 6607 VSS
(DHCPv6 option 68, the same type-and-information layout) and its BOOTP decoder are the
independent oracle for the bytes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.dhcp6 import DHCP6OptVSS
from test_relay_engine import (
    LAN1,
    delivery,
    drop_reason,
    forwarded,
    from_client,
    from_server,
    make_engine,
    reply,
    request,
    with_agent,
)

from boothop.relay.configfile import load
from boothop.relay.drops import DropReason
from boothop.relay.engine import RelayEngine
from boothop.relay.settings import ConfigError
from boothop.relay.wire import AgentInfo, AgentSub, FieldError, Opt, VssType, decode, vss_value

BLUE = vss_value(VssType.NVT_ASCII, b"blue")
VPN_ID = bytes.fromhex("00000d00000001")


def rfc6607_vss(kind: int, info: bytes) -> bytes:
    """The VSS type and information as scapy encodes them (its option 68: code, length, then
    the same fields as sub-option 151)."""
    return bytes(DHCP6OptVSS(type=kind, data=info))[4:]


def scapy_option82(payload: bytes) -> bytes:
    options = dict(o for o in DHCP(BOOTP(payload).payload.original).options  # type: ignore[union-attr]
                   if isinstance(o, tuple))
    value = options["relay_agent_information"]
    assert isinstance(value, bytes)
    return value


def vss_engine(vss: bytes = BLUE, **changes: object) -> RelayEngine:
    return make_engine({"lan1": {"vss": vss}}, **changes)


@pytest.mark.parametrize(("kind", "info"), [
    (VssType.NVT_ASCII, b"blue"), (VssType.VPN_ID, VPN_ID), (VssType.GLOBAL, b"")])
def test_rfc6607_vss_suboption_151_and_vss_control_152_bytes_match_scapy(
        kind: VssType, info: bytes) -> None:
    """§3.2: VSS is code 151, length, type, information; §3.3: VSS-Control is code 152,
    length 0."""
    engine = vss_engine(vss_value(kind, info))
    outcome = engine.handle(from_client(request()), 0.0)
    sent = outcome.actions[0].payload  # type: ignore[union-attr]
    body = rfc6607_vss(kind, info)
    assert scapy_option82(sent) == bytes((151, len(body))) + body + b"\x98\x00"
    agent = AgentInfo.decode(forwarded(outcome).get(Opt.RELAY_AGENT_INFO) or b"")
    assert agent.vss == body and agent.vss_control


def test_vss_goes_after_circuit_and_remote_id() -> None:
    engine = vss_engine(agent_info=True, remote_id=b"r1")
    agent = AgentInfo.decode(forwarded(engine.handle(from_client(request()), 0.0))
                             .get(Opt.RELAY_AGENT_INFO) or b"")
    assert [code for code, _ in agent.suboptions] == [
        AgentSub.CIRCUIT_ID, AgentSub.REMOTE_ID, AgentSub.VSS, AgentSub.VSS_CONTROL]


def test_vss_only_on_the_interfaces_configured() -> None:
    engine = vss_engine()
    assert forwarded(engine.handle(from_client(request(), 4), 0.0)).get(Opt.RELAY_AGENT_INFO) \
        is None


def test_rfc6607_reply_carrying_vss_control_is_dropped_the_server_ignored_vss() -> None:
    """§3.3: a server that processed VSS does not return VSS-Control; a reply with it holds an
    address from outside the client's VPN and must not reach the client."""
    engine = vss_engine()
    echoed = with_agent(reply(), (AgentSub.VSS, BLUE), (AgentSub.VSS_CONTROL, b""))
    assert drop_reason(engine.handle(from_server(echoed), 0.0)) is DropReason.VSS_NOT_UNDERSTOOD
    assert engine.counters.dropped[DropReason.VSS_NOT_UNDERSTOOD] == 1


def test_rfc6607_reply_with_the_vss_echoed_is_delivered_without_option82() -> None:
    """The relay strips 151/152 with its whole option 82 (RFC 3046 §2.1)."""
    engine = vss_engine()
    answered = with_agent(reply(), (AgentSub.VSS, BLUE))
    sent = delivery(engine.handle(from_server(answered), 0.0))
    assert sent.ifindex == LAN1
    assert decode(sent.payload).get(Opt.RELAY_AGENT_INFO) is None


def test_reply_with_another_vpns_vss_is_dropped() -> None:
    engine = vss_engine()
    other = with_agent(reply(), (AgentSub.VSS, vss_value(VssType.NVT_ASCII, b"red")))
    assert drop_reason(engine.handle(from_server(other), 0.0)) is DropReason.VSS_MISMATCH


def test_vss_control_is_left_alone_where_this_relay_adds_no_vss() -> None:
    """A downstream relay's VSS is its own business: a reply for lan1 without our VSS set."""
    engine = make_engine()
    echoed = with_agent(reply(), (AgentSub.VSS, BLUE), (AgentSub.VSS_CONTROL, b""))
    delivery(engine.handle(from_server(echoed), 0.0))


@pytest.mark.parametrize("subs", [((AgentSub.VSS, b""),), ((AgentSub.VSS_CONTROL, b"x"),)])
def test_malformed_vss_in_a_reply_is_dropped_as_malformed(subs: tuple[tuple[int, bytes]]) -> None:
    engine = vss_engine()
    assert drop_reason(engine.handle(from_server(with_agent(reply(), *subs)), 0.0)) \
        is DropReason.MALFORMED


@pytest.mark.parametrize(("kind", "info"), [
    (VssType.GLOBAL, b"x"), (VssType.VPN_ID, b"\x00" * 6), (VssType.NVT_ASCII, b""),
    (VssType.NVT_ASCII, "é".encode()), (VssType.NVT_ASCII, b"x" * 255)])
def test_rfc6607_vss_encoding_refuses_what_its_type_forbids(kind: VssType, info: bytes) -> None:
    with pytest.raises(FieldError):
        vss_value(kind, info)


def test_config_vss_per_interface(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text('helpers = ["10.9.0.10"]\n'
                    '[[interface]]\nname = "a"\nvss = { type = "nvt-ascii", id = "blue" }\n'
                    '[[interface]]\nname = "b"\nvss = { type = "vpn-id", id = "00000d:00000001" }\n'
                    '[[interface]]\nname = "c"\nvss = { type = "global" }\n')
    assert [i.vss for i in load(path).relay.interfaces] == [
        BLUE, b"\x01" + VPN_ID, b"\xff"]


@pytest.mark.parametrize(("vss", "key", "reason"), [
    ('{ type = "global", id = "x" }', "interface[0].vss.id",
     "type global (the default VPN) takes no id"),
    ('{ type = "vpn-id", id = "0001" }', "interface[0].vss.id",
     "an RFC 2685 VPN-ID is 7 octets, not 2"),
    ('{ id = "blue" }', "interface[0].vss.type", "missing: one of nvt-ascii, vpn-id, global"),
])
def test_config_bad_vss_names_file_line_key_reason(tmp_path: Path, vss: str, key: str,
                                                   reason: str) -> None:
    path = tmp_path / "relay.toml"
    path.write_text(f'helpers = ["10.9.0.10"]\n[[interface]]\nname = "a"\nvss = {vss}\n')
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert (caught.value.key, caught.value.reason) == (key, reason)
    assert str(caught.value).startswith(f"{path}:4: {key}: ")
