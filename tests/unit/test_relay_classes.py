"""Boot-aware forwarding classes: the engine's rules, their counters, and the TOML that sets them.

Juniper's relay-option-60 is the anchor: a client whose option 60 "does not match the ASCII or
hexadecimal match string ... (exact match or partial match)" goes to the default server group.
Here: the first class that matches names the helpers; a request no class matches goes to the
interface's (or the global) helpers, as before classes existed. The host and helpers are those
of test_relay_engine.py (DHCP server 10.99.0.10, PXE server 10.99.0.20, LANs lan1 and lan2).
"""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import pytest
import trio
from structlog.testing import capture_logs
from test_relay_engine import (
    DHCP_SERVER,
    LAN1,
    LAN2,
    MAC,
    PXE_SERVER,
    delivery,
    forwarded,
    forwards,
    from_client,
    from_server,
    make_config,
    make_engine,
    reply,
    request,
)

from boothop.relay.classes import DEFAULT_CLASS, ForwardingClass, classify
from boothop.relay.configfile import load, parse
from boothop.relay.engine import RelayEngine
from boothop.relay.settings import ConfigError
from boothop.relay.wire import Opt
from boothop.relay.wire.pxe import user_classes

EFI_SERVER = IPv4Address("10.99.0.30")
PXE_BIOS = b"PXEClient:Arch:00000:UNDI:002001"
PXE_EFI = b"PXEClient:Arch:00007:UNDI:003016"
HTTP_EFI = b"HTTPClient:Arch:00016:UNDI:003001"
ARCH_BIOS, ARCH_EFI_X64, ARCH_HTTP_X64 = 0, 7, 16

#: DHCP servers get everything, the PXE server only boot clients (the issue's example).
PXE_CLASS = ForwardingClass("pxe", (DHCP_SERVER, PXE_SERVER), vendor_class=(b"PXEClient",))


def engine_with(*classes: ForwardingClass) -> RelayEngine:
    return make_engine(helpers=(DHCP_SERVER,), classes=classes)


def pxe_request(vendor: bytes = PXE_BIOS, arch: int = ARCH_BIOS, **fields: object) -> object:
    return request(extra=((Opt.VENDOR_CLASS_ID, vendor),
                          (Opt.CLIENT_ARCH, arch.to_bytes(2, "big"))), **fields)


def helpers_of(engine: RelayEngine, message: object, ifindex: int = LAN1) -> list[IPv4Address]:
    outcome = engine.handle(from_client(message, ifindex), 0.0)  # type: ignore[arg-type]
    return [f.server for f in forwards(outcome)]


def test_without_classes_every_request_goes_to_every_helper() -> None:
    engine = make_engine()
    assert helpers_of(engine, pxe_request()) == [DHCP_SERVER, PXE_SERVER]
    assert engine.counters.relayed_by_class == {DEFAULT_CLASS: 1}


def test_juniper_option60_prefix_sends_pxe_clients_to_the_pxe_server_and_others_to_the_default(
) -> None:
    """relay-option-60 starts-with "PXEClient": PXE clients to the class's helpers; a client
    whose option 60 does not match (or has none) to the default helpers only."""
    engine = engine_with(PXE_CLASS)
    assert helpers_of(engine, pxe_request()) == [DHCP_SERVER, PXE_SERVER]
    assert helpers_of(engine, request()) == [DHCP_SERVER]
    assert helpers_of(engine, request(extra=((Opt.VENDOR_CLASS_ID, b"MSFT 5.0"),))) == [
        DHCP_SERVER]
    # A prefix, not a substring: "xPXEClient" is another vendor.
    assert helpers_of(engine, request(extra=((Opt.VENDOR_CLASS_ID, b"xPXEClient"),))) == [
        DHCP_SERVER]
    assert engine.counters.relayed_by_class == {"pxe": 1, DEFAULT_CLASS: 3}


def test_the_relayed_request_is_the_same_whatever_the_class() -> None:
    """Classes choose the helpers, never the bytes: hops, giaddr and options as without them."""
    classed, plain = engine_with(PXE_CLASS), make_engine()
    sent = forwarded(classed.handle(from_client(pxe_request()), 0.0))
    assert sent == forwarded(plain.handle(from_client(pxe_request()), 0.0))


def test_option93_architecture_sends_efi_and_bios_clients_to_different_boot_servers() -> None:
    """RFC 4578 §2.1: option 93 lists the client's architecture types (0 BIOS, 7 EFI x64)."""
    efi = ForwardingClass("efi", (DHCP_SERVER, EFI_SERVER), client_arch=frozenset({7, 9}))
    bios = ForwardingClass("bios", (DHCP_SERVER, PXE_SERVER), client_arch=frozenset({0}))
    engine = engine_with(efi, bios)
    assert helpers_of(engine, pxe_request(PXE_EFI, ARCH_EFI_X64)) == [DHCP_SERVER, EFI_SERVER]
    assert helpers_of(engine, pxe_request(PXE_BIOS, ARCH_BIOS)) == [DHCP_SERVER, PXE_SERVER]
    assert helpers_of(engine, pxe_request(HTTP_EFI, ARCH_HTTP_X64)) == [DHCP_SERVER]


def test_option93_of_odd_length_matches_no_architecture_class_but_is_still_relayed() -> None:
    efi = ForwardingClass("efi", (EFI_SERVER,), client_arch=frozenset({7}))
    engine = engine_with(efi)
    bad = request(extra=((Opt.CLIENT_ARCH, b"\x00\x07\x00"),))
    assert helpers_of(engine, bad) == [DHCP_SERVER]


def test_option60_prefix_http_client_class() -> None:
    """UEFI HTTP boot clients send "HTTPClient" in option 60 (UEFI 2.x §24.7)."""
    http = ForwardingClass("http", (DHCP_SERVER, EFI_SERVER), vendor_class=(b"HTTPClient",))
    engine = engine_with(PXE_CLASS, http)
    assert helpers_of(engine, pxe_request(HTTP_EFI, ARCH_HTTP_X64)) == [DHCP_SERVER, EFI_SERVER]
    assert helpers_of(engine, pxe_request()) == [DHCP_SERVER, PXE_SERVER]


@pytest.mark.parametrize("value", [b"iPXE", b"\x04iPXE", b"\x03abc\x04iPXE"])
def test_option77_user_class_ipxe_bare_or_rfc3004(value: bytes) -> None:
    """RFC 3004 §4: option 77 is a list of length-prefixed classes; iPXE sends the bare string."""
    ipxe = ForwardingClass("ipxe", (EFI_SERVER,), user_class=(b"iPXE",))
    engine = engine_with(ipxe, PXE_CLASS)
    ipxe_request = request(extra=((Opt.VENDOR_CLASS_ID, PXE_BIOS), (Opt.USER_CLASS, value)))
    assert helpers_of(engine, ipxe_request) == [EFI_SERVER]
    assert helpers_of(engine, request(extra=((Opt.USER_CLASS, b"\x05gPXEx"),))) == [DHCP_SERVER]


def test_user_classes_of_rfc3004_and_bare_values() -> None:
    assert user_classes(b"\x03abc\x04iPXE") == (b"abc", b"iPXE")
    assert user_classes(b"iPXE") == (b"iPXE",)
    assert user_classes(b"\x09short") == (b"\x09short",)  # a length past the end: bare
    assert user_classes(b"\x00") == (b"\x00",)  # RFC 3004: UC_Len_i is at least 1


def test_mac_prefix_class() -> None:
    vms = ForwardingClass("vms", (EFI_SERVER,), mac_prefix=(MAC[:3],))
    engine = engine_with(vms)
    assert helpers_of(engine, request()) == [EFI_SERVER]
    other = request(chaddr=bytes.fromhex("001122334455") + bytes(10))
    assert helpers_of(engine, other) == [DHCP_SERVER]


def test_ingress_interface_class() -> None:
    lab = ForwardingClass("lab", (EFI_SERVER,), interfaces=frozenset({"lan2"}))
    engine = engine_with(lab)
    assert helpers_of(engine, request(), LAN2) == [EFI_SERVER]
    assert helpers_of(engine, request(), LAN1) == [DHCP_SERVER]


def test_every_criterion_of_a_class_must_match() -> None:
    """Criteria combine with "and"; the values of one criterion with "or"."""
    lab_pxe = ForwardingClass("lab-pxe", (EFI_SERVER,), vendor_class=(b"PXEClient",),
                              interfaces=frozenset({"lan2"}))
    engine = engine_with(lab_pxe)
    assert helpers_of(engine, pxe_request(), LAN2) == [EFI_SERVER]
    assert helpers_of(engine, pxe_request(), LAN1) == [DHCP_SERVER]
    assert helpers_of(engine, request(), LAN2) == [DHCP_SERVER]


def test_first_matching_class_wins_in_the_order_of_the_file() -> None:
    efi = ForwardingClass("efi", (EFI_SERVER,), client_arch=frozenset({7}))
    message = pxe_request(PXE_EFI, ARCH_EFI_X64)
    assert helpers_of(engine_with(efi, PXE_CLASS), message) == [EFI_SERVER]
    assert helpers_of(engine_with(PXE_CLASS, efi), message) == [DHCP_SERVER, PXE_SERVER]
    assert classify((PXE_CLASS, efi), message, "lan1") is PXE_CLASS  # type: ignore[arg-type]


def test_default_class_takes_the_interface_helpers_when_set() -> None:
    engine = make_engine({"lan2": {"helpers": (EFI_SERVER,)}}, helpers=(DHCP_SERVER,),
                         classes=(PXE_CLASS,))
    assert helpers_of(engine, request(), LAN2) == [EFI_SERVER]
    assert helpers_of(engine, pxe_request(), LAN2) == [DHCP_SERVER, PXE_SERVER]


def test_replies_from_a_helper_named_only_by_a_class_are_accepted() -> None:
    """A class's helpers are configured servers: their replies are relayed (and others' not)."""
    efi = ForwardingClass("efi", (EFI_SERVER,), client_arch=frozenset({7}))
    engine = engine_with(efi)
    delivery(engine.handle(from_server(reply(), source=EFI_SERVER), 0.0))


def test_a_class_counts_only_requests_it_relayed() -> None:
    engine = engine_with(PXE_CLASS)
    engine.handle(from_client(pxe_request(hops=12)), 0.0)  # hop limit: dropped, not relayed
    assert engine.counters.relayed_by_class == {}
    engine.handle(from_client(pxe_request()), 0.0)
    assert engine.counters.snapshot()["relayed_by_class"] == {"pxe": 1}


def test_a_reload_replaces_the_classes() -> None:
    engine = engine_with(PXE_CLASS)
    engine.update_config(make_config(helpers=(DHCP_SERVER,)))
    assert helpers_of(engine, pxe_request()) == [DHCP_SERVER]


# -- the TOML ---------------------------------------------------------------------------------

FILE = """\
helpers = ["10.99.0.10"]

[[interface]]
name = "up0"
role = "upstream"

[[interface]]
name = "lan1"

[[class]]
name = "efi"
client_arch = [7, 9]
helpers = ["10.99.0.10", "10.99.0.30"]

[[class]]
name = "pxe"
vendor_class = ["PXEClient", "HTTPClient"]
user_class = ["iPXE"]
mac_prefix = ["52:54:00"]
interfaces = ["lan1"]
helpers = ["10.99.0.10", "10.99.0.20"]
"""


def test_classes_read_from_the_file_in_order(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text(FILE)
    classes = load(path).relay.classes
    assert [c.name for c in classes] == ["efi", "pxe"]
    assert classes[0] == ForwardingClass("efi", (DHCP_SERVER, EFI_SERVER),
                                         client_arch=frozenset({7, 9}))
    assert classes[1] == ForwardingClass(
        "pxe", (DHCP_SERVER, PXE_SERVER), vendor_class=(b"PXEClient", b"HTTPClient"),
        user_class=(b"iPXE",), mac_prefix=(bytes.fromhex("525400"),),
        interfaces=frozenset({"lan1"}))


@pytest.mark.parametrize(("table", "key", "reason"), [
    ('vendor_class = ["PXEClient"]', "class[0].name", "missing"),
    ('name = "default"\nvendor_class = ["x"]', "class[0].name", "counts the requests no class"),
    ('name = "a"', "class[0]", "no match criterion"),
    ('name = "a"\nclient_arch = [65536]', "class[0].client_arch[0]", "0..65535"),
    ('name = "a"\nclient_arch = [true]', "class[0].client_arch[0]", "architecture type"),
    ('name = "a"\nmac_prefix = ["52:zz"]', "class[0].mac_prefix[0]", "not hex"),
    ('name = "a"\nvendor_class = [""]', "class[0].vendor_class[0]", "non-empty"),
    ('name = "a"\ninterfaces = ["up0"]', "class[0].interfaces[0]", "not a client-facing"),
    ('name = "a"\nvendor_class = ["x"]\nhelpers = ["0.0.0.0"]', "class[0].helpers[0]",
     "cannot be used"),
    ('name = "a"\nvendor_class = ["x"]\nmatch = 1', "class[0].match", "unknown key"),
])
def test_class_validation_names_file_line_key_and_reason(tmp_path: Path, table: str, key: str,
                                                         reason: str) -> None:
    base = 'helpers = ["10.99.0.10"]\n[[interface]]\nname = "up0"\nrole = "upstream"\n' \
           '[[interface]]\nname = "lan1"\n'
    text = base + "[[class]]\n" + (table if "helpers" in table else
                                   table + '\nhelpers = ["10.99.0.20"]') + "\n"
    path = tmp_path / "relay.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load(path)
    problem = next(p for p in caught.value.problems if p.key == key)
    assert reason in problem.reason
    assert problem.line is not None and problem.line > 6  # in the [[class]] table
    assert str(problem).startswith(f"{path}:{problem.line}: {key}: ")


def test_two_classes_of_one_name_are_refused() -> None:
    data = {"helpers": ["10.99.0.10"], "class": [
        {"name": "a", "vendor_class": ["x"], "helpers": ["10.99.0.10"]},
        {"name": "a", "vendor_class": ["y"], "helpers": ["10.99.0.10"]}]}
    with pytest.raises(ConfigError) as caught:
        parse(data, "relay.toml")
    assert (caught.value.key, caught.value.reason) == ("class[1].name",
                                                       "'a' already names class[0]")


def test_a_class_without_interfaces_configured_may_name_any_interface() -> None:
    data = {"helpers": ["10.99.0.10"], "class": [
        {"name": "a", "interfaces": ["eth7"], "helpers": ["10.99.0.20"]}]}
    assert parse(data, "relay.toml").relay.classes[0].interfaces == {"eth7"}


def test_a_bad_class_on_reload_keeps_the_running_classes(tmp_path: Path) -> None:
    """SIGHUP with a broken [[class]]: the relay keeps relaying by the classes it had."""
    from test_relay_service_shell import FakeSender, service

    relay = service(FakeSender())
    path = tmp_path / "relay.toml"
    path.write_text(FILE)
    relay.apply_config(load(path))
    running = relay.engine.config
    path.write_text(FILE.replace("client_arch = [7, 9]", "client_arch = [7, 99999]"))
    with capture_logs() as logs:
        trio.run(relay.reload, lambda: load(path))
    assert relay.engine.config is running and relay.shell.reload_failures == 1
    (event,) = [e for e in logs if e["event"] == "relay.config.invalid"]
    assert event["key"] == "class[0].client_arch[1]" and "0..65535" in event["reason"]
