"""Coverage-guided fuzz targets (atheris) for every core that takes bytes from the network.

One function per target, each taking the fuzzer's bytes and checking the ARCHITECTURE's invariant:
any bytes return actions or a Drop (the codec raises only WireError, TFTP's parser only
TftpPacketError); anything else escaping is a finding. The first bytes of an input choose the
datagram's fields (source, ingress, destination, port) from a small table, the rest is the
payload, so the real captures are seeds as they are. Inputs that carry several datagrams (the
DHCP core's and TFTP's, which keep state) split them at ``SPLIT``.

``python tests/fuzz/run.py TARGET [libFuzzer flags] [corpus dirs]`` runs one target;
``tests/unit/test_fuzz_targets.py`` runs each for a few thousand inputs in CI and
``tests/bench/fuzz_campaign.py`` runs the long campaign.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import TypeVar

UNIT = Path(__file__).resolve().parent.parent / "unit"
CAPTURES = UNIT / "captures"
sys.path.insert(0, str(UNIT))

import test_pxe_proxy as pxe_tests  # noqa: E402
import test_relay_engine as relay_tests  # noqa: E402
import test_server_helpers as server_tests  # noqa: E402
import test_wire6_properties as wire6_tests  # noqa: E402

from boothop.relay.actions import Deliver, Drop, Forward, Outcome  # noqa: E402
from boothop.relay.config import AgentPolicy  # noqa: E402
from boothop.relay.engine import RelayEngine  # noqa: E402
from boothop.relay.wire import (  # noqa: E402
    AgentSub,
    Datagram,
    MessageType,
    WireError,
    decode,
    encode,
)
from boothop.relay.wire import dhcpv6 as v6  # noqa: E402
from boothop.server.dhcp.core import DhcpServerCore  # noqa: E402
from boothop.server.pxe.proxy import Dropped, Reply, handle  # noqa: E402
from boothop.server.tftp import packet  # noqa: E402
from boothop.server.tftp.admission import Accepted, Admission, Refused  # noqa: E402
from boothop.server.tftp.config import TftpConfig  # noqa: E402
from boothop.server.tftp.packet import ErrorCode, Opcode  # noqa: E402
from boothop.server.tftp.paths import FileRefused  # noqa: E402
from boothop.server.tftp.sink import BytesSink  # noqa: E402
from boothop.server.tftp.source import BytesSource  # noqa: E402

#: Separates the datagrams of one input for the stateful targets.
SPLIT = b"\xfe\xed\xfa\xce"
#: The most datagrams one input feeds a stateful target.
MAX_DATAGRAMS = 8


T = TypeVar("T")


def pick(table: tuple[T, ...], selector: int) -> T:
    return table[selector % len(table)]


def datagrams(data: bytes) -> list[bytes]:
    return data.split(SPLIT, MAX_DATAGRAMS)[:MAX_DATAGRAMS]


# -- the codec ---------------------------------------------------------------------------------
def codec(data: bytes) -> None:
    """decode raises only WireError; what decodes encodes, and re-decodes to the same message."""
    try:
        message = decode(data)
    except WireError:
        return
    try:
        again = encode(message)
    except WireError:
        # encode may refuse what it cannot fit into a message (a long vendor area, say).
        return
    assert decode(again) == message, (data.hex(), again.hex())


#: The typed view of each option code that has one (IA_NA, IA Address, Status Code, ...).
_TYPED6 = {kind.code: kind for kind in wire6_tests.TYPED}
#: The typed options that carry DHCPv6 options inside (RFC 8415 §21.4-§21.6, §21.21-§21.22).
_OPTION_HOLDERS = (v6.IaNa, v6.IaTa, v6.IaPd, v6.IaAddress, v6.IaPrefix)


def codec6(data: bytes) -> None:
    """decode6 raises only WireError and re-encodes what it accepts to the same bytes; the typed
    view of every option it holds, down through relays and IAs, raises only WireError and
    round-trips."""
    wire6_tests.check_decode6(data)
    try:
        message = v6.decode6(data)
    except WireError:
        return
    holders: list[v6.Message6 | v6.IaNa | v6.IaTa | v6.IaPd | v6.IaAddress | v6.IaPrefix]
    holders = [message]
    while holders:
        holder = holders.pop()
        for code, value in holder.options:
            kind = _TYPED6.get(code)
            if kind is None:
                continue
            try:
                typed = kind.decode(value)
            except WireError:
                continue
            assert kind.decode(typed.encode()) == typed, (code, value.hex())
            if isinstance(typed, _OPTION_HOLDERS):
                holders.append(typed)
        if isinstance(holder, v6.RelayMessage):
            with contextlib.suppress(WireError):
                holders.append(holder.inner())


# -- the relay engine --------------------------------------------------------------------------
_RELAY_CONFIGS = (
    relay_tests.make_config(),
    *(
        relay_tests.make_config({"lan2": {"trusted": True}}, agent_info=True, agent_policy=policy,
                                remote_id=b"router-7")
        for policy in AgentPolicy
    ),
    relay_tests.make_config(
        {"lan1": {"link_selection": "up0", "server_id_override": True,
                  "giaddr": relay_tests.LAN1_SECONDARY}},
        max_packet_size=576,
    ),
)
_RELAY_SOURCES = (
    relay_tests.ZERO, relay_tests.DHCP_SERVER, relay_tests.PXE_SERVER, relay_tests.ROGUE,
    relay_tests.LAN1_ADDR, relay_tests.OTHER_RELAY, IPv4Address("10.1.0.77"),
)
_RELAY_DESTINATIONS = (
    relay_tests.LIMITED_BROADCAST, relay_tests.LAN1_ADDR, IPv4Address("10.1.0.255"),
    relay_tests.UP0_ADDR, relay_tests.ZERO,
)
_INTERFACES = relay_tests.host_interfaces()


def relay(data: bytes) -> None:
    """Any datagram on any interface from any source: an Outcome, never an exception."""
    if len(data) < 4:
        return
    engine = RelayEngine(pick(_RELAY_CONFIGS, data[0]), _INTERFACES)
    datagram = Datagram(data[4:], pick(_RELAY_SOURCES, data[1]), 68 - (data[1] & 1),
                        pick(_RELAY_DESTINATIONS, data[3]), data[2] % 8)
    outcome = engine.handle(datagram, 0.0)
    assert isinstance(outcome, Outcome)
    # A second look through the warm caches must decide the same (what is only told once, a
    # warning or a rogue server, aside).
    assert decisions(engine.handle(datagram, 0.0)) == decisions(outcome)


def decisions(outcome: Outcome) -> list[object]:
    return [a for a in outcome.actions if isinstance(a, Forward | Deliver | Drop)]


# -- the DHCP server core ----------------------------------------------------------------------
_DHCP_CONFIG = server_tests.config()
_DHCP_SOURCES = (
    (server_tests.RELAY_A, 67, server_tests.SERVER, ""),
    (server_tests.RELAY_B, 67, server_tests.SERVER, ""),
    (IPv4Address(0), 68, IPv4Address("10.51.0.1"), "bhs-srv0"),
    (IPv4Address("10.51.0.105"), 68, server_tests.SERVER, "bhs-srv0"),
)


def dhcp(data: bytes) -> None:
    """A fresh server fed a few datagrams, a minute apart: actions only, never an exception."""
    core = DhcpServerCore(_DHCP_CONFIG, pxe_colocated=bool(data[:1]) and data[0] & 0x80 != 0)
    for step, chunk in enumerate(datagrams(data)):
        if not chunk:
            continue
        source, port, local, ifname = pick(_DHCP_SOURCES, chunk[0])
        datagram = Datagram(chunk[1:], source, port, local=local, port=67, ifname=ifname)
        actions = core.handle(datagram, 60.0 * step)
        assert isinstance(actions, list)


# -- proxyDHCP ---------------------------------------------------------------------------------
_PXE_CONFIGS = (pxe_tests.CONFIG, pxe_tests.MENU_CONFIG)
_PXE_SOURCES = (IPv4Address(0), pxe_tests.GIADDR, IPv4Address("10.61.3.7"))


def proxy(data: bytes) -> None:
    """Port 67 and 4011, direct or relayed: a Reply or Dropped."""
    if len(data) < 2:
        return
    port = 4011 if data[0] & 1 else 67
    datagram = Datagram(data[2:], pick(_PXE_SOURCES, data[1]), 68, IPv4Address(0),
                        local=pxe_tests.SERVER, port=port)
    result = handle(datagram, pick(_PXE_CONFIGS, data[0] >> 1))
    assert isinstance(result, Reply | Dropped)
    if isinstance(result, Reply):
        decode(result.payload)


# -- TFTP --------------------------------------------------------------------------------------
_TFTP_CONFIG = TftpConfig(root="/srv/tftp", max_transfers=3, max_per_client=2, allow_write=True,
                          max_write_size=4096)
_TFTP_FILES = {"boot.bin": bytes(range(256)) * 6, "menu.txt": b"a\nb\rc\r\n" * 100, "empty": b""}
_PEER = ("10.61.1.5", 50000)


def _opener(name: str) -> BytesSource:
    if name not in _TFTP_FILES:
        raise FileRefused(ErrorCode.FILE_NOT_FOUND, "file not found")
    return BytesSource(_TFTP_FILES[name])


def _creator(name: str) -> BytesSink:
    if name.startswith("ro"):
        raise FileRefused(ErrorCode.ACCESS_VIOLATION, "read-only")
    return BytesSink()


def tftp(data: bytes) -> None:
    """The first datagram meets admission; the rest go to the transfer it started.

    Parsing raises only TftpPacketError; admission returns Accepted or Refused; a transfer answers
    every datagram and timer with sends, never an exception.
    """
    chunks = datagrams(data)
    for chunk in chunks:
        with contextlib.suppress(packet.TftpPacketError):
            packet.decode(chunk)
    admission = Admission(_TFTP_CONFIG)
    result = admission.admit(chunks[0], _PEER, _opener, _creator)
    if isinstance(result, Refused):
        return
    assert isinstance(result, Accepted)
    transfer = result.transfer
    now = 0.0
    sends = transfer.start(now)
    for chunk in chunks[1:]:
        if not chunk:
            # An empty chunk stands for silence: the retransmission timer fires.
            now += 100.0
            sends = transfer.on_timer(now)
        else:
            now += 0.01
            sends = [transfer.stray()] if chunk[0] == 0xFF else transfer.receive(chunk[1:], now)
        assert all(isinstance(s, bytes) for s in sends)
    transfer.close()


TARGETS: dict[str, Callable[[bytes], None]] = {
    "codec": codec, "codec6": codec6, "relay": relay, "dhcp": dhcp, "proxy": proxy, "tftp": tftp,
}


@dataclasses.dataclass(frozen=True)
class Seed:
    name: str
    data: bytes


def _captures() -> Iterator[tuple[str, bytes]]:
    for path in sorted(CAPTURES.glob("*.bin")):
        yield path.stem, path.read_bytes()


def _v6_seeds() -> list[tuple[str, v6.Message6]]:
    """A Solicit as dhclient -6 sends it, relayed once and twice, and a server's Reply."""
    client_id = (v6.Opt6.CLIENTID, bytes.fromhex("000300010241000001aa"))
    ia_na = v6.IaNa(1, 0, 0).option()
    solicit = v6.Dhcp6Message(v6.MessageType6.SOLICIT, 0x1A2B3C, (
        client_id, (v6.Opt6.ELAPSED_TIME, b"\0\0"), ia_na,
        (v6.Opt6.ORO, v6.encode_codes((23, 24, 59, 60))),
        v6.VendorClass(343, (b"PXEClient:Arch:00007",)).option(),
        (v6.Opt6.CLIENT_ARCH_TYPE, b"\0\x07"),
    ))
    def relayed(inner: v6.Message6, hops: int) -> v6.RelayMessage:
        return v6.RelayMessage(
            v6.MessageType6.RELAY_FORW, hops, IPv6Address("2001:db8:1::1"),
            IPv6Address("fe80::41:ff:fe00:1aa"),
            ((v6.Opt6.INTERFACE_ID, b"lana0"), v6.RemoteId(9, b"router-7").option(),
             v6.ClientLinkLayer(1, bytes.fromhex("024100 0001aa".replace(" ", ""))).option(),
             (v6.Opt6.RELAY_MSG, v6.encode6(inner))))
    address = v6.IaAddress(IPv6Address("2001:db8:1::100"), 3600, 7200,
                           (v6.StatusCode(0, "ok").option(),))
    reply = v6.Dhcp6Message(v6.MessageType6.REPLY, 0x1A2B3C, (
        client_id, (v6.Opt6.SERVERID, bytes.fromhex("0001000100000001024100000a0a")),
        v6.IaNa(1, 1800, 2880, (address.option(),)).option(),
        (v6.Opt6.BOOTFILE_URL, b"tftp://[2001:db8:100::20]/ipxe.efi"),
    ))
    return [("solicit", solicit), ("relay-forw", relayed(solicit, 0)),
            ("relay-forw-2", relayed(relayed(solicit, 0), 1)), ("reply", reply)]


_V6_SEEDS = _v6_seeds()


def seeds(target: str) -> Iterator[Seed]:
    """The starting corpus: the real captures, prefixed with field selectors where needed."""
    captures = list(_captures())
    if target == "codec":
        yield from (Seed(name, data) for name, data in captures)
    elif target == "codec6":
        yield from (Seed(name, v6.encode6(message)) for name, message in _V6_SEEDS)
    elif target == "relay":
        for name, data in captures:
            # From a client on lan1 (broadcast), and from the DHCP server on up0.
            yield Seed(f"{name}-client", bytes((0, 0, relay_tests.LAN1, 0)) + data)
            yield Seed(f"{name}-server", bytes((1, 1, relay_tests.UP0, 1)) + data)
        # Option 82 both ways: a reply echoing circuit-id and link selection, a relayed request.
        agent = ((AgentSub.CIRCUIT_ID, b"lan1"), (AgentSub.LINK_SELECTION,
                                                    relay_tests.LAN1_ADDR.packed))
        yield Seed("reply-agent", bytes((1, 1, relay_tests.UP0, 1))
                   + encode(relay_tests.with_agent(relay_tests.reply(), *agent)))
        yield Seed("request-agent", bytes((1, 0, relay_tests.LAN2, 0))
                   + encode(relay_tests.with_agent(relay_tests.request(), *agent)))
    elif target == "dhcp":
        by_name = dict(captures)
        for client in ("dhclient", "dhcpcd", "udhcpc", "ipxe", "udhcpc-pxe"):
            discover, request = by_name[f"{client}-discover"], by_name[f"{client}-request"]
            yield Seed(client, b"\x02" + discover + SPLIT + b"\x02" + request)
        relayed = server_tests.request(MessageType.DISCOVER, server_tests.mac(1), options=(
            server_tests.agent((AgentSub.CIRCUIT_ID, b"port-1"),
                               (AgentSub.LINK_SELECTION, IPv4Address("10.51.2.1").packed),
                               (AgentSub.SERVER_ID_OVERRIDE, server_tests.RELAY_A.packed)),))
        yield Seed("relayed-agent", b"\x00" + encode(relayed))
    elif target == "proxy":
        for name, data in captures:
            yield Seed(f"{name}-67", b"\x00\x00" + data)
            yield Seed(f"{name}-4011", b"\x01\x00" + data)
    elif target == "tftp":
        ack = packet.encode_ack
        yield Seed("rrq", packet.encode_request(Opcode.RRQ, "boot.bin", "octet", {})
                   + SPLIT + b"\x00" + ack(1) + SPLIT + b"\x00" + ack(2))
        yield Seed("rrq-options", packet.encode_request(
            Opcode.RRQ, "menu.txt", "netascii",
            {"blksize": "512", "windowsize": "4", "tsize": "0", "timeout": "3"},
        ) + SPLIT + b"\x00" + ack(0) + SPLIT + SPLIT + b"\x00" + ack(4))
        yield Seed("wrq", packet.encode_request(Opcode.WRQ, "up.bin", "octet", {"tsize": "600"})
                   + SPLIT + b"\x00" + packet.encode_data(1, bytes(512))
                   + SPLIT + b"\x00" + packet.encode_data(2, b"end"))
        yield Seed("wrq-netascii", packet.encode_request(Opcode.WRQ, "n.txt", "netascii",
                                                         {"blksize": "8"})
                   + SPLIT + b"\x00" + packet.encode_data(1, b"ab\r\ncd\r")
                   + SPLIT + b"\x00" + packet.encode_data(2, b"\0"))
        yield Seed("error", packet.encode_error(ErrorCode.NOT_DEFINED, "x"))
    else:
        raise KeyError(target)


def write_seeds(target: str, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for seed in seeds(target):
        (directory / f"seed-{seed.name}").write_bytes(seed.data)
