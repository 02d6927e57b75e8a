"""End to end through a relay: DHCP server and PXE+TFTP server on different hosts.

```
 client ──[LAN cli]── lan0  router (ISC dhcrelay -a)  up0 ──[LAN srv]──┬─ dhcp  kea-dhcp4
          10.61.1.0/24 10.61.1.1                 10.61.100.1           │        10.61.100.10
                                                                       └─ pxe   boothop-server run
                                                                                (proxyDHCP + TFTP)
                                                                                10.61.100.20
```

The client (``client_main``: this file run as a script in the client namespace) does the PXE
exchange over a raw AF_PACKET socket with the shared codec, since it has no address yet: DISCOVER
with 60/93/97, the two offers (address from kea, boot file from our proxy), REQUEST/ACK, the 4011
REQUEST/ACK, then the TFTP download of the boot file with curl, routed through the router. Uses the
shared relay/lab topology and the kea helper of tests/system/servers.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import select
import socket
import struct
import subprocess
import sys
import time
import uuid
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from conftest import require_system
from servers import Pool, start_kea

from boothop.relay.lab.processes import Process, ProcessRunner, wait_for
from boothop.relay.lab.topology import Host, Lan, Port, Route, Topology
from boothop.relay.wire import DhcpMessage, MessageType, Op, Opt, decode, encode

pytestmark = pytest.mark.system
DHCP, PXE, ROUTER_UP = "10.61.100.10", "10.61.100.20", "10.61.100.1"
CLIENT_MAC = "02:61:00:00:01:10"
BOOT_FILE = "efi/ipxe.efi"
HERE = Path(__file__).parent


def topology(prefix: str) -> Topology:
    back = Route("10.61.0.0/16", ROUTER_UP)
    hosts = [Host("router", forwarding=True), Host("dhcp", routes=(back,)),
             Host("pxe", routes=(back,)), Host("client")]
    lans = [
        Lan(
            "cli", (Port("router", "lan0", "10.61.1.1/24"), Port("client", "eth0", mac=CLIENT_MAC))
        ),
        Lan(
            "srv",
            (
                Port("router", "up0", f"{ROUTER_UP}/24"),
                Port("dhcp", "srv0", f"{DHCP}/24"),
                Port("pxe", "pxe0", f"{PXE}/24"),
            ),
        ),
    ]
    return Topology(prefix, hosts, lans)


def start_pxe(runner: ProcessRunner, namespace: str, workdir: Path) -> Process:
    root = workdir / "tftproot"
    config = workdir / "pxe.toml"
    config.write_text(
        f'[pxe]\nserver_address = "{PXE}"\n[pxe.boot]\nbios = "undionly.kpxe"\n'
        f'efi-x64 = "{BOOT_FILE}"\n[tftp]\nroot = "{root}"\ntimeout = 0.5\n'
    )
    process = runner.start(
        namespace,
        [sys.executable, "-m", "boothop.server", "run", "-c", str(config)],
        "pxe",
        cwd=HERE.parents[1],
    )
    if not wait_for(lambda: "tftp.listening" in process.output() or not process.running(), 15):
        raise RuntimeError(f"PXE server did not start:\n{process.output()}")
    if not process.running():
        raise RuntimeError(f"PXE server exited:\n{process.output()}")
    return process


# -- the client ------------------------------------------------------------------------------
UUID = uuid.UUID("6d9a2b1c-0000-4000-8000-000000000061")
VENDOR = b"PXEClient:Arch:00007:UNDI:003016"


def checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF


def frame(mac: bytes, payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", 68, 67, 8 + len(payload), 0) + payload
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, bytes(4), b"\xff" * 4
    )
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return b"\xff" * 6 + mac + b"\x08\x00" + ip + udp


def message(
    mac: bytes, xid: int, kind: int, *extra: tuple[int, bytes], ciaddr: str = "0.0.0.0"
) -> DhcpMessage:
    options = (
        (Opt.MESSAGE_TYPE, bytes((kind,))),
        *extra,
        (Opt.VENDOR_CLASS_ID, VENDOR),
        (Opt.CLIENT_ARCH, b"\x00\x07"),
        (Opt.CLIENT_UUID, b"\x00" + UUID.bytes),
        (Opt.PARAMETER_REQUEST_LIST, bytes((1, 3, 43, 60, 66, 67, 97))),
    )
    return DhcpMessage(op=Op.BOOTREQUEST, xid=xid, chaddr=mac.ljust(16, b"\0"), flags=0x8000,
                       ciaddr=IPv4Address(ciaddr), options=options)


def replies(sock: socket.socket, xid: int, wanted: int, seconds: float) -> list[DhcpMessage]:
    found: list[DhcpMessage] = []
    end = time.monotonic() + seconds
    while len(found) < wanted and (left := end - time.monotonic()) > 0:
        if not select.select([sock], [], [], left)[0]:
            break
        data = sock.recv(4096)
        if len(data) < 42 or data[12:14] != b"\x08\x00" or data[23] != 17:
            continue
        ihl = (data[14] & 0x0F) * 4
        udp = data[14 + ihl :]
        if struct.unpack("!H", udp[2:4])[0] != 68:
            continue
        try:
            msg = decode(udp[8:])
        except ValueError:
            continue
        if msg.op == Op.BOOTREPLY and msg.xid == xid:
            found.append(msg)
    return found


def client_main(iface: str, mac_text: str, outfile: str) -> None:
    """The PXE client, run by this file as a script inside the client namespace."""
    mac = bytes.fromhex(mac_text.replace(":", ""))
    xid = int.from_bytes(os.urandom(4), "big")
    result: dict[str, object] = {}
    raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
    raw.bind((iface, 0))
    raw.send(frame(mac, encode(message(mac, xid, MessageType.DISCOVER))))
    offers = replies(raw, xid, 2, 8.0)
    dhcp = next(m for m in offers if m.yiaddr != IPv4Address(0))
    proxy = next(m for m in offers if m.yiaddr == IPv4Address(0))
    result["offers"] = len(offers)
    result["address"] = str(dhcp.yiaddr)
    result["proxy_vendor_class"] = (proxy.get(Opt.VENDOR_CLASS_ID) or b"").decode()
    result["proxy_uuid_echoed"] = proxy.get(Opt.CLIENT_UUID) == b"\x00" + UUID.bytes
    result["proxy_file"] = proxy.file.decode()
    result["proxy_server"] = str(IPv4Address(proxy.get(Opt.SERVER_ID) or bytes(4)))
    result["proxy_has_agent_info"] = proxy.has(Opt.RELAY_AGENT_INFO)
    dhcp_server = dhcp.get(Opt.SERVER_ID) or bytes(4)
    request = message(mac, xid, MessageType.REQUEST, (Opt.REQUESTED_ADDRESS, dhcp.yiaddr.packed),
                      (Opt.SERVER_ID, dhcp_server))
    raw.send(frame(mac, encode(request)))
    acks = [m for m in replies(raw, xid, 1, 8.0) if m.message_type == MessageType.ACK]
    result["dhcp_ack"] = bool(acks)
    router = IPv4Address(acks[0].get(Opt.ROUTER)[:4])  # type: ignore[index]
    subprocess.run(["ip", "addr", "add", f"{dhcp.yiaddr}/24", "dev", iface], check=True)
    subprocess.run(["ip", "route", "add", "default", "via", str(router)], check=True)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind((str(dhcp.yiaddr), 68))
        udp.settimeout(4.0)
        boot = message(mac, xid + 1, MessageType.REQUEST, ciaddr=str(dhcp.yiaddr))
        udp.sendto(encode(boot), (result["proxy_server"], 4011))
        ack = decode(udp.recvfrom(4096)[0])
    result["pxe_ack"] = ack.message_type == MessageType.ACK
    result["pxe_file"] = ack.file.decode()
    curl = subprocess.run(
        [
            "curl",
            "-sS",
            "--max-time",
            "15",
            "--tftp-blksize",
            "1468",
            "-o",
            outfile,
            f"tftp://{ack.siaddr}/{ack.file.decode()}",
        ],
        capture_output=True,
        timeout=20,
    )
    result["tftp_rc"] = curl.returncode
    result["tftp_stderr"] = curl.stderr.decode()
    print(json.dumps(result))



# -- the test --------------------------------------------------------------------------------
def test_pxe_boot_through_dhcrelay(tmp_path: Path) -> None:
    require_system("kea-dhcp4", "dhcrelay", "curl")
    lab = topology(f"bht-{secrets.token_hex(3)}")
    runner = ProcessRunner(tmp_path / "logs")
    (tmp_path / "tftproot" / "efi").mkdir(parents=True)
    boot = os.urandom(700_000)
    (tmp_path / "tftproot" / BOOT_FILE).write_bytes(boot)
    try:
        lab.up()
        start_kea(runner, lab.netns("dhcp"), tmp_path / "kea", "srv0",
                  [Pool("10.61.1.0/24", "10.61.1.100", "10.61.1.199", "10.61.1.1")])
        pxe = start_pxe(runner, lab.netns("pxe"), tmp_path)
        relay = runner.start(
            lab.netns("router"),
            ["dhcrelay", "-d", "-4", "--no-pid", "-a", "-id", "lan0", "-iu", "up0", DHCP, PXE],
            "dhcrelay",
        )
        assert wait_for(lambda: "Sending on" in relay.output() or not relay.running(), 10), (
            relay.output()
        )
        out = tmp_path / "downloaded"
        done = runner.run(lab.netns("client"), [sys.executable, __file__, "eth0",
                                                CLIENT_MAC, str(out)], timeout=45)
        assert done.returncode == 0, (
            f"{done.stderr}\n--- pxe ---\n{pxe.output()}\n--- relay ---\n{relay.output()}"
        )
        result = json.loads(done.stdout)
        assert result["offers"] == 2
        assert result["address"].startswith("10.61.1.")
        assert result["proxy_vendor_class"] == "PXEClient"
        assert result["proxy_uuid_echoed"] is True
        assert result["proxy_file"] == BOOT_FILE and result["proxy_server"] == PXE
        assert result["proxy_has_agent_info"] is False  # dhcrelay stripped the echoed option 82
        assert result["dhcp_ack"] is True
        assert result["pxe_ack"] is True and result["pxe_file"] == BOOT_FILE
        assert result["tftp_rc"] == 0, result["tftp_stderr"]
        assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(boot).digest()
        assert "pxe.reply.sent" in pxe.output()
    finally:
        try:
            runner.stop_all()
        finally:
            lab.down()


if __name__ == "__main__":
    client_main(*sys.argv[1:4])
