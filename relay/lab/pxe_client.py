"""A PXE 2.1 client for the lab: the firmware behaviour of the second field report, on real sockets.

Run inside a client namespace: ``python -m boothop.relay.lab.pxe_client --ifname eth0 --mac MAC``.
It broadcasts a DHCPDISCOVER as a PXE ROM does (option 60 "PXEClient:Arch:00000:UNDI:002001", 93,
94, 97, broadcast flag), collects offers for a bounded time and chooses as the PXE 2.1 specification
(§2.2.1) orders them: an offer with an address *and* "PXEClient" ("DHCP and PXE in the same offer")
beats an address-only offer combined with a proxyDHCP offer. It then completes DHCP
(REQUEST/ACK), configures the address on its interface, asks for its boot file on port 4011 and
downloads it by TFTP. It prints one JSON object: every step, and the outcome with the PXE error
code a real ROM would show (PXE-E55 when nobody answers on port 4011).

The decisions (which offer, where to ask for the boot file) are pure functions; the socket loop
around them is small and bounded in time and packets.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import ipaddress
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address
from pathlib import Path

from boothop.relay.wire import (
    BROADCAST_FLAG,
    CLIENT_PORT,
    PXE_PORT,
    SERVER_PORT,
    ZERO,
    DhcpMessage,
    MessageType,
    Op,
    Opt,
    PxeSub,
    WireError,
    decode,
    encode,
)
from boothop.relay.wire.pxe import PxeVendorOptions, is_pxe_client

#: PXE spec 2.1 §2.4 (option 60 of a client): "PXEClient:Arch:xxxxx:UNDI:yyyzzz"; arch 0 is
#: x86 BIOS, UNDI 2.1.
VENDOR_CLASS = b"PXEClient:Arch:00000:UNDI:002001"
ARCH_BIOS = b"\x00\x00"
#: A UEFI HTTP boot client (UEFI 2.x "HTTP Boot"): option 60 "HTTPClient:Arch:00016:...", arch 16
#: (x64 UEFI HTTP); it takes the boot URI from an offer that echoes "HTTPClient", no port 4011.
HTTP_VENDOR_CLASS = b"HTTPClient:Arch:00016:UNDI:003000"
ARCH_X64_HTTP = b"\x00\x10"
NDI_UNDI_2_1 = bytes((1, 2, 1))
#: Options 1, 3, 43, 60, 66, 67, 128-135 as a PXE ROM asks for them.
PARAMETERS = bytes((1, 3, 43, 60, 66, 67, 128, 129, 130, 131, 132, 133, 134, 135))
#: PXE_DISCOVERY_CONTROL bit 3: "download the boot file (do not prompt/menu/discover)".
USE_BOOT_FILE = 0x08

COMBINED = "dhcp+pxe"
IP_ONLY = "ip-only"
PROXY = "proxy"
OTHER = "other"


# -- the pure part: what an offer is, which one wins, where the boot file comes from ----------
def offer_kind(offer: DhcpMessage, http: bool = False) -> str:
    """PXE spec 2.1 §2.2.1's offer types, from the address and option 60 of a DHCPOFFER (for an
    HTTP boot client, "HTTPClient" in option 60 makes a boot offer)."""
    if offer.message_type != MessageType.OFFER:
        return OTHER
    pxe = ((offer.get(Opt.VENDOR_CLASS_ID) or b"").startswith(b"HTTPClient") if http
           else is_pxe_client(offer))
    if offer.yiaddr != ZERO:
        return COMBINED if pxe else IP_ONLY
    return PROXY if pxe else OTHER


@dataclasses.dataclass(frozen=True)
class Choice:
    """The offer whose address the client takes, and the one that tells it how to boot."""

    rule: str
    address_offer: DhcpMessage
    boot_offer: DhcpMessage | None


def choose_offer(offers: Sequence[DhcpMessage], http: bool = False) -> Choice | None:
    """PXE spec 2.1 §2.2.1 priority: "DHCP and PXE in the same offer" first, then an IP-only
    offer with a proxyDHCP offer, then an IP-only offer alone (which gives no boot file)."""
    by_kind: dict[str, list[DhcpMessage]] = {}
    for offer in offers:
        by_kind.setdefault(offer_kind(offer, http), []).append(offer)
    if by_kind.get(COMBINED):
        offer = by_kind[COMBINED][0]
        return Choice("DHCP and PXE in the same offer", offer, offer)
    if by_kind.get(IP_ONLY) and by_kind.get(PROXY):
        return Choice("IP-only offer + proxyDHCP offer", by_kind[IP_ONLY][0], by_kind[PROXY][0])
    if by_kind.get(IP_ONLY):
        return Choice("IP-only offer, no PXE offer", by_kind[IP_ONLY][0], None)
    return None


@dataclasses.dataclass(frozen=True)
class BootPlan:
    """How to get the boot file: ask ``server`` on port 4011 (with ``boot_item`` for boot
    server discovery), or download ``boot_file`` from ``tftp_server`` at once."""

    kind: str  # "proxy-request" | "discovery" | "download"
    server: IPv4Address
    boot_item: tuple[int, int] | None = None
    boot_file: str | None = None


def server_id(msg: DhcpMessage) -> IPv4Address:
    value = msg.get(Opt.SERVER_ID)
    return IPv4Address(value) if value is not None and len(value) == 4 else msg.siaddr


def boot_file_of(msg: DhcpMessage) -> str | None:
    name = msg.get(Opt.BOOTFILE_NAME) or msg.file
    return name.rstrip(b"\0").decode(errors="replace") or None


def plan_boot(offer: DhcpMessage) -> BootPlan:
    """PXE spec 2.1 §2.2.1: with a boot menu and boot servers the client does boot server
    discovery; with "use the boot file" and a file it downloads it; a "PXEClient" offer without
    PXE options makes it ask the offering server's proxyDHCP service on port 4011."""
    try:
        pxe = PxeVendorOptions.decode(offer.get(Opt.VENDOR_SPECIFIC) or b"")
        menu, servers, control = pxe.boot_menu, pxe.boot_servers, pxe.discovery_control
    except WireError:
        menu, servers, control = [], [], None
    if menu and servers:
        item_type = menu[0][0]
        listed = next((s.addresses for s in servers if s.type == item_type and s.addresses), None)
        return BootPlan("discovery", listed[0] if listed else server_id(offer), (item_type, 0))
    file = boot_file_of(offer)
    if control is not None and control & USE_BOOT_FILE and file:
        return BootPlan("download", offer.siaddr if offer.siaddr != ZERO else server_id(offer),
                        boot_file=file)
    return BootPlan("proxy-request", server_id(offer))


def _pxe_options(guid: bytes, http: bool = False) -> list[tuple[int, bytes]]:
    return [
        (Opt.PARAMETER_REQUEST_LIST, PARAMETERS),
        (Opt.MAX_MESSAGE_SIZE, (1472).to_bytes(2, "big")),
        (Opt.CLIENT_ARCH, ARCH_X64_HTTP if http else ARCH_BIOS),
        (Opt.CLIENT_NDI, NDI_UNDI_2_1),
        (Opt.CLIENT_UUID, b"\x00" + guid),
        (Opt.VENDOR_CLASS_ID, HTTP_VENDOR_CLASS if http else VENDOR_CLASS),
    ]


def discover(mac: bytes, xid: int, guid: bytes, http: bool = False) -> DhcpMessage:
    return DhcpMessage(
        op=Op.BOOTREQUEST, xid=xid, chaddr=mac.ljust(16, b"\0"), flags=BROADCAST_FLAG,
        options=((Opt.MESSAGE_TYPE, bytes((MessageType.DISCOVER,))), *_pxe_options(guid, http)),
    )


def request(mac: bytes, xid: int, guid: bytes, offer: DhcpMessage,
            http: bool = False) -> DhcpMessage:
    return DhcpMessage(
        op=Op.BOOTREQUEST, xid=xid, chaddr=mac.ljust(16, b"\0"), flags=BROADCAST_FLAG,
        options=(
            (Opt.MESSAGE_TYPE, bytes((MessageType.REQUEST,))),
            (Opt.REQUESTED_ADDRESS, offer.yiaddr.packed),
            (Opt.SERVER_ID, server_id(offer).packed),
            *_pxe_options(guid, http),
        ),
    )


def boot_request(
    mac: bytes, xid: int, guid: bytes, address: IPv4Address, item: tuple[int, int] | None
) -> DhcpMessage:
    """The DHCPREQUEST a PXE client unicasts to port 4011 from its new address."""
    options = [(Opt.MESSAGE_TYPE, bytes((MessageType.REQUEST,))), *_pxe_options(guid)]
    if item is not None:
        value = item[0].to_bytes(2, "big") + item[1].to_bytes(2, "big")
        options.append(
            (Opt.VENDOR_SPECIFIC, PxeVendorOptions(((PxeSub.BOOT_ITEM, value),)).encode())
        )
    return DhcpMessage(
        op=Op.BOOTREQUEST, xid=xid, chaddr=mac.ljust(16, b"\0"), ciaddr=address,
        options=tuple(options),
    )


# -- the shell: sockets, the interface, TFTP ------------------------------------------------------
class Client:
    def __init__(self, ifname: str, mac: bytes, offer_wait: float, started: float,
                 http: bool = False) -> None:
        self.http = http
        self.ifname = ifname
        self.mac = mac
        self.offer_wait = offer_wait
        self.started = started
        self.guid = uuid.uuid5(uuid.NAMESPACE_OID, mac.hex()).bytes
        self.steps: list[dict[str, object]] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
        self.sock.bind(("0.0.0.0", CLIENT_PORT))

    def step(self, name: str, **details: object) -> None:
        self.steps.append({"step": name, "t": round(time.monotonic() - self.started, 3), **details})

    def receive(
        self, xid: int, until: float, accept: Callable[[DhcpMessage], bool], limit: int = 32
    ) -> list[tuple[DhcpMessage, str]]:
        """Replies for ``xid`` that ``accept`` takes, until the deadline or one is accepted
        (when ``limit`` is 1); at most ``limit``."""
        got: list[tuple[DhcpMessage, str]] = []
        while len(got) < limit and (left := until - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data, source = self.sock.recvfrom(2048)
            except TimeoutError:
                break
            try:
                msg = decode(data)
            except WireError:
                continue
            if (
                msg.op == Op.BOOTREPLY
                and msg.xid == xid
                and msg.hardware_address == self.mac
                and accept(msg)
            ):
                got.append((msg, f"{source[0]}:{source[1]}"))
        return got

    def run(self, attempts: int) -> dict[str, object]:
        xid = int.from_bytes(os.urandom(4), "big")
        offers: list[tuple[DhcpMessage, str]] = []
        for attempt in range(attempts):
            self.sock.sendto(encode(discover(self.mac, xid, self.guid, self.http)),
                             ("255.255.255.255", SERVER_PORT))
            option60 = HTTP_VENDOR_CLASS if self.http else VENDOR_CLASS
            self.step("discover", attempt=attempt + 1, option60=option60.decode())
            offers = self.receive(xid, time.monotonic() + self.offer_wait,
                                  lambda m: m.message_type == MessageType.OFFER)
            if offers:
                break
        for offer, source in offers:
            self.step("offer", server=str(server_id(offer)), via=source, yiaddr=str(offer.yiaddr),
                      pxeclient=is_pxe_client(offer), kind=offer_kind(offer, self.http),
                      boot_file=boot_file_of(offer))
        choice = choose_offer([o for o, _ in offers], self.http)
        if choice is None:
            if any(offer_kind(o) == PROXY for o, _ in offers):
                return self.fail(
                    "PXE-E52", "proxyDHCP offers were received. No DHCP offers were received"
                )
            return self.fail("PXE-E51", "No DHCP or proxyDHCP offers were received")
        self.step("choose", rule=choice.rule, address_from=str(server_id(choice.address_offer)),
                  boot_info_from=str(server_id(choice.boot_offer)) if choice.boot_offer else None)
        ack = self.dhcp_request(xid, choice.address_offer, attempts)
        if ack is None:
            return self.fail("PXE-E51", f"no DHCPACK from {server_id(choice.address_offer)}")
        address = self.configure(ack)
        if choice.boot_offer is None:
            return self.fail("PXE-E53", "No boot filename received")
        if self.http:  # the URI is in the offer; HTTP boot has no port 4011 step
            uri = boot_file_of(choice.boot_offer)
            if uri is None:
                return self.fail("PXE-E53", "No boot URI received", address=address)
            return self.download(server_id(choice.boot_offer), uri, address)
        plan = plan_boot(choice.boot_offer)
        self.step("boot-plan", kind=plan.kind, server=str(plan.server),
                  boot_item=list(plan.boot_item) if plan.boot_item else None)
        if plan.kind == "download":
            assert plan.boot_file is not None
            return self.download(plan.server, plan.boot_file, address)
        reply = self.ask_4011(xid, address, plan, attempts)
        if reply is None:
            if plan.kind == "proxy-request":
                return self.fail(
                    "PXE-E55",
                    "Proxy DHCP Service did not reply to request on port 4011",
                    address=address,
                )
            return self.fail("PXE-E55", f"no reply from boot server {plan.server} on port 4011",
                             address=address)
        file = boot_file_of(reply)
        if file is None:
            return self.fail("PXE-E53", "No boot filename received", address=address)
        tftp = reply.siaddr if reply.siaddr != ZERO else plan.server
        return self.download(tftp, file, address)

    def dhcp_request(self, xid: int, offer: DhcpMessage, attempts: int) -> DhcpMessage | None:
        server = server_id(offer)
        for attempt in range(attempts):
            self.sock.sendto(
                encode(request(self.mac, xid, self.guid, offer, self.http)),
                ("255.255.255.255", SERVER_PORT)
            )
            self.step("request", attempt=attempt + 1, server=str(server), address=str(offer.yiaddr))
            replies = self.receive(
                xid,
                time.monotonic() + self.offer_wait,
                lambda m: (
                    m.message_type in (MessageType.ACK, MessageType.NAK) and server_id(m) == server
                ),
                limit=1,
            )
            if replies:
                reply, source = replies[0]
                self.step("ack" if reply.message_type == MessageType.ACK else "nak",
                          server=str(server), via=source, yiaddr=str(reply.yiaddr))
                return reply if reply.message_type == MessageType.ACK else None
        return None

    def configure(self, ack: DhcpMessage) -> IPv4Address:
        """Put the leased address (and the default route) on the interface."""
        from pyroute2 import IPRoute

        mask = ack.get(Opt.SUBNET_MASK) or IPv4Address("255.255.255.0").packed
        prefix = ipaddress.IPv4Network(f"0.0.0.0/{IPv4Address(mask)}").prefixlen
        router = ack.get(Opt.ROUTER)
        with IPRoute() as ipr:
            index = ipr.link_lookup(ifname=self.ifname)[0]
            ipr.flush_addr(index=index, family=socket.AF_INET)
            ipr.addr("add", index=index, address=str(ack.yiaddr), prefixlen=prefix)
            if router and len(router) >= 4:
                ipr.route("replace", dst="0.0.0.0/0", gateway=str(IPv4Address(router[:4])))
        self.step("configure", address=f"{ack.yiaddr}/{prefix}",
                  router=str(IPv4Address(router[:4])) if router and len(router) >= 4 else None)
        return ack.yiaddr

    def ask_4011(
        self, xid: int, address: IPv4Address, plan: BootPlan, attempts: int
    ) -> DhcpMessage | None:
        """PXE spec 2.1 §2.2.6: unicast DHCPREQUESTs to port 4011, with growing timeouts."""
        message = encode(boot_request(self.mac, xid, self.guid, address, plan.boot_item))
        for attempt in range(attempts):
            timeout = 0.5 * (attempt + 1)
            self.sock.sendto(message, (str(plan.server), PXE_PORT))
            replies = self.receive(xid, time.monotonic() + timeout,
                                   lambda m: m.message_type == MessageType.ACK, limit=1)
            self.step("boot-request", to=f"{plan.server}:{PXE_PORT}", attempt=attempt + 1,
                      timeout=timeout, answered=bool(replies))
            if replies:
                reply, source = replies[0]
                self.step("boot-ack", via=source, boot_file=boot_file_of(reply),
                          siaddr=str(reply.siaddr))
                return reply
        return None

    def download(self, server: IPv4Address, file: str, address: IPv4Address) -> dict[str, object]:
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / "nbp"
            url = file if file.startswith(("http://", "https://")) else f"tftp://{server}/{file}"
            completed = subprocess.run(
                ["curl", "-sf", "--max-time", "20", "-o", str(target), url],
                capture_output=True, text=True, timeout=30, check=False,
            )
            size = target.stat().st_size if target.exists() else 0
            digest = hashlib.sha256(target.read_bytes()).hexdigest() if size else None
        self.step("http" if url.startswith("http") else "tftp", server=str(server), file=file,
                  curl_exit=completed.returncode, bytes=size, sha256=digest)
        if completed.returncode != 0:
            code = "PXE-E3B" if completed.returncode == 68 else "PXE-E32"  # 68: file not found
            return self.fail(
                code,
                f"TFTP download of {file} from {server} failed (curl {completed.returncode})",
                address=address,
            )
        return self.result(
            True, address=str(address), tftp_server=str(server), boot_file=file, bytes=size
        )

    def fail(
        self, code: str, message: str, address: IPv4Address | None = None
    ) -> dict[str, object]:
        self.step("error", code=code, message=message)
        return self.result(False, address=str(address) if address else None,
                           error=f"{code}: {message}")

    def result(self, booted: bool, **details: object) -> dict[str, object]:
        return {"mac": self.mac.hex(":"), "booted": booted, **details,
                "seconds": round(time.monotonic() - self.started, 3), "steps": self.steps}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ifname", required=True)
    parser.add_argument("--mac", required=True)
    parser.add_argument("--offer-wait", type=float, default=1.5,
                        help="seconds to collect offers (and to wait for an ACK)")
    parser.add_argument("--attempts", type=int, default=4, help="tries per exchange")
    parser.add_argument("--http", action="store_true",
                        help='boot as a UEFI HTTP client (option 60 "HTTPClient", arch 16)')
    args = parser.parse_args(argv)
    client = Client(args.ifname, bytes.fromhex(args.mac.replace(":", "")), args.offer_wait,
                    time.monotonic(), http=args.http)
    try:
        result = client.run(args.attempts)
    finally:
        client.sock.close()
    print(json.dumps(result))
    return 0 if result["booted"] else 1


if __name__ == "__main__":
    sys.exit(main())
