"""The UDP broadcast helper end to end: a TFTP client (curl) broadcasts a read request on its
LAN, boothop-relay forwards it to tftpd-hpa on the server LAN, and the file arrives; a
Wake-on-LAN packet goes the same way; DHCP's ports are refused by the configuration.

```
 bhub-ca-N (curl, NET.1.50) ──[NET.1.0/24]── bhub-rt-N (boothop-relay, [forward_udp] 69, 9)
                                              ──[NET.0.0/24]── bhub-sv-N (in.tftpd :69,
                                                                          a recorder on :9)
```

Debian's TFTP clients (tftp-hpa, busybox, curl) never set SO_BROADCAST, so the kernel refuses
their send to a broadcast address (EACCES). The client host is therefore given its address as a
/32 with a route to its LAN and a permanent neighbour entry ``NET.1.255 -> ff:ff:ff:ff:ff:ff``:
the real client's datagram leaves as a link-layer broadcast to the subnet's broadcast address,
exactly what the router receives from a broadcasting client. The relay keeps the client's source
address (as Cisco's IP helper), so in.tftpd answers the client directly through the router.

curl, not tftp-hpa: tftp-hpa takes the server's new port from its first DATA but keeps the
broadcast address as its peer, so its ACKs go to NET.1.255:TID and the transfer stalls (seen in
a capture; a router forwards only port 69). curl answers the address the DATA came from.
Namespaces of our own; processes stopped by PID, namespaces deleted in ``finally``.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pytest
from conftest import need, require_system
from routed import RoutedLab, sh, wait_for
from servers import _RECORDER

RELAY_METRICS = "127.0.0.1:9267"
WOL = """
import socket, sys
mac = bytes.fromhex("525400c0ffee")
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.bind((sys.argv[1], 40009))
s.sendto(b"\\xff" * 6 + mac * 16, ("255.255.255.255", 9))
"""


def relay_config(lab: RoutedLab, forward_udp: str) -> Path:
    path = lab.tmp / "relay.toml"
    path.write_text(f'helpers = ["{lab.server}"]\nstats_interval = 0\n'
                    f'metrics = "{RELAY_METRICS}"\n'
                    f'[[interface]]\nname = "{lab.link("ra")}"\n'
                    f'[[interface]]\nname = "{lab.link("rs")}"\nrole = "upstream"\n'
                    f'{forward_udp}')
    return path


@pytest.mark.system
def test_tftp_client_broadcast_reaches_tftpd_on_the_server_lan_and_wol_too(
        tmp_path: Path) -> None:
    require_system("curl", "in.tftpd")
    relay = need("boothop-relay")
    lab = RoutedLab(tmp_path, "bhub", "10.65")
    try:
        lab.build()
        root = tmp_path / "tftproot"
        root.mkdir()
        (root / "boot.bin").write_bytes(os.urandom(5000))  # 10 blocks of 512
        lab.spawn("sv", "in.tftpd", "-L", "-v", "-u", "root", "-a", f"{lab.server}:69", "-s",
                  str(root), log="tftpd.log")
        wait_for(lambda: lab.ex("sv", "ss", "-Hulnp", "sport", "= :69", check=False).stdout, 15,
                 "tftpd's socket")
        wol_log = tmp_path / "wol.recorded"
        lab.spawn("sv", sys.executable, "-c", _RECORDER, str(wol_log), "9", "5", "40", "0.0.0.0",
                  log="recorder.log")
        wait_for(lambda: "listening" in (tmp_path / "recorder.log").read_text(), 15,
                 "the recorder")
        config = relay_config(lab, '[forward_udp]\nports = [69, 9]\nrate_limit = 20\n')
        lab.spawn("rt", relay, "--config", str(config), "--log-format", "json",
                  log="relay.log")
        wait_for(lambda: lab.scrape("rt", RELAY_METRICS), 15, "the relay's endpoint")

        client = lab.link("a")
        lab.ex("ca", "ip", "addr", "add", "10.65.1.50/32", "dev", client)
        lab.ex("ca", "ip", "route", "add", "10.65.1.0/24", "dev", client)
        lab.ex("ca", "ip", "route", "add", "default", "via", "10.65.1.1", "dev", client)
        lab.ex("ca", "ip", "neigh", "add", "10.65.1.255", "lladdr", "ff:ff:ff:ff:ff:ff", "dev",
               client, "nud", "permanent")
        out = tmp_path / "fetched.bin"
        fetched = lab.ex("ca", "curl", "-sS", "--max-time", "20", "-o", str(out),
                         "tftp://10.65.1.255/boot.bin", check=False, timeout=30)
        assert fetched.returncode == 0 and out.exists(), fetched.stdout + fetched.stderr
        assert hashlib.sha256(out.read_bytes()).digest() == \
            hashlib.sha256((root / "boot.bin").read_bytes()).digest()

        lab.ex("ca", sys.executable, "-c", WOL, "10.65.1.50")
        wait_for(lambda: wol_log.exists() and wol_log.read_text(), 10, "the WoL packet")
        source, sport, payload = wol_log.read_text().split()
        assert (source, sport) == ("10.65.1.50", "40009")  # the client's, kept
        assert bytes.fromhex(payload) == b"\xff" * 6 + bytes.fromhex("525400c0ffee") * 16

        metrics = lab.scrape("rt", RELAY_METRICS)
        assert metrics[("boothop_relay_udp_forwarded_total",
                        (("port", "69"), ("server", lab.server)))] == 1
        assert metrics[("boothop_relay_udp_forwarded_total",
                        (("port", "9"), ("server", lab.server)))] == 1
    finally:
        lab.close()


@pytest.mark.system
def test_forwarding_dhcp_ports_is_refused_with_file_line_key_reason(tmp_path: Path) -> None:
    relay = need("boothop-relay")
    path = tmp_path / "relay.toml"
    path.write_text('helpers = ["10.9.0.10"]\n[forward_udp]\nports = [69, 67]\n')
    result = sh(relay, "--config", str(path), check=False)
    assert result.returncode == 78
    assert result.stderr.strip().endswith(
        f"{path}:3: forward_udp.ports[1]: 67 is DHCP/BOOTP: never forwarded as a plain broadcast "
        "(DHCP goes through the relay itself)"), result.stderr
