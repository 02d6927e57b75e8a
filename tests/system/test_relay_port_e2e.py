"""RFC 8357 relay source port end to end: udhcpc -> boothop-relay -rp 1067 -> boothop-server.

```
 bhrp-ca-N (udhcpc) ──[10.61.1.0/24]── bhrp-rt-N (boothop-relay -rp 1067) ──[10.61.0.0/24]──
                                                                      bhrp-sv-N (boothop-server,
                                                                      tcpdump on its link)
```

The capture on the server's link shows the requests leaving the relay from port 1067 with the
Relay Source Port sub-option (19) in option 82, and the server's replies going to port 1067
(RFC 8357 §5.1, §5.2); the relay's counters show the replies arrived on that port. Namespaces
of our own (prefix ``bhrp``); every process is stopped by PID and every namespace deleted in
``finally``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import need, require_system
from prometheus_client.parser import text_string_to_metric_families
from scapy.layers.inet import IP, UDP
from scapy.utils import rdpcap

from boothop.relay.wire import AgentInfo, AgentSub, Op, Opt, decode

SERVER = "10.61.0.2"
RELAY_UP = "10.61.0.1"
SUBNET = "10.61.1.0/24"
RELAY_PORT = 1067
RELAY_METRICS = "127.0.0.1:9367"
SCRIPT = """#!/bin/sh
case "$1" in bound|renew) ip addr add "$ip/24" dev "$interface"; echo "$1 $ip" >> "$0.log";; esac
exit 0
"""
GET = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read()" \
      ".decode())"


def sh(*args: str, check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=check, timeout=timeout)


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Lab:
    def __init__(self, tmp: Path) -> None:
        self.tag = secrets.token_hex(2)
        self.tmp = tmp
        self.ns = {role: f"bhrp-{role}-{self.tag}" for role in ("sv", "rt", "ca")}
        self.procs: list[subprocess.Popen[bytes]] = []

    def ex(self, role: str, *args: str, check: bool = True,
           timeout: float = 20) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.ns[role], *args, check=check, timeout=timeout)

    def build(self) -> None:
        for role, ns in self.ns.items():
            sh("ip", "netns", "add", ns)
            self.ex(role, "ip", "link", "set", "lo", "up")
        t = self.tag
        for peer, here, there, prefix in (("sv", f"bhrp-s{t}", f"bhrp-rs{t}", "10.61.0"),
                                          ("ca", f"bhrp-a{t}", f"bhrp-ra{t}", "10.61.1")):
            sh("ip", "link", "add", here, "netns", self.ns[peer], "type", "veth", "peer", "name",
               there, "netns", self.ns["rt"])
            self.ex("rt", "ip", "addr", "add", f"{prefix}.1/24", "dev", there)
            self.ex("rt", "ip", "link", "set", there, "up")
            self.ex(peer, "ip", "link", "set", here, "up")
        self.ex("sv", "ip", "addr", "add", f"{SERVER}/24", "dev", f"bhrp-s{t}")
        self.ex("sv", "ip", "route", "add", "default", "via", RELAY_UP)
        self.ex("rt", "sysctl", "-qw", "net.ipv4.ip_forward=1")

    def spawn(self, role: str, *args: str, log: str) -> subprocess.Popen[bytes]:
        with open(self.tmp / log, "ab") as out:
            proc = subprocess.Popen(["ip", "netns", "exec", self.ns[role], *args], stdout=out,
                                    stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def scrape(self, role: str, listen: str) -> dict[tuple[str, tuple[tuple[str, str], ...]],
                                                     float]:
        result = self.ex(role, sys.executable, "-c", GET, f"http://{listen}/metrics", check=False)
        if result.returncode != 0:
            return {}
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(result.stdout)
                for s in family.samples}

    @staticmethod
    def stop(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    def close(self) -> None:
        for proc in self.procs:
            self.stop(proc)
        for ns in self.ns.values():
            for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        for ns in self.ns.values():
            sh("ip", "netns", "del", ns, check=False)


@pytest.mark.system
def test_rp_requests_leave_from_the_relay_port_with_suboption_19_and_replies_come_back_there(
        tmp_path: Path) -> None:
    require_system("udhcpc", "tcpdump")
    relay, server = need("boothop-relay"), need("boothop-server")
    lab = Lab(tmp_path)
    try:
        lab.build()
        t = lab.tag
        capture = tmp_path / "server-link.pcap"
        tcpdump = lab.spawn("sv", "tcpdump", "-n", "-U", "--immediate-mode", "-i", f"bhrp-s{t}",
                            "-w", str(capture), "udp", log="tcpdump.log")
        wait_for(lambda: "listening on" in (tmp_path / "tcpdump.log").read_text(), 15,
                 "tcpdump")
        config = tmp_path / "server.toml"
        config.write_text(f"""
[dhcp]
lease_db = "{tmp_path / 'leases.sqlite3'}"
[[dhcp.subnets]]
subnet = "{SUBNET}"
pools = ["10.61.1.100-10.61.1.199"]
options = {{ routers = ["10.61.1.1"] }}
""")
        lab.spawn("sv", server, "run", "-c", str(config), "--log-format", "json",
                  log="server.log")
        lab.spawn("rt", relay, "-rp", str(RELAY_PORT), "-id", f"bhrp-ra{t}", "-iu", f"bhrp-rs{t}",
                  "--log-format", "json", "--metrics", RELAY_METRICS, "--stats-interval", "0",
                  SERVER, log="relay.log")
        wait_for(lambda: lab.scrape("rt", RELAY_METRICS), 15, "the relay's endpoint")
        wait_for(lambda: lab.ex("sv", "ss", "-Hulnp", "sport", "= :67", check=False).stdout, 15,
                 "the server's socket")

        script = tmp_path / "script"
        script.write_text(SCRIPT)
        script.chmod(0o755)
        client = lab.ex("ca", "udhcpc", "-q", "-n", "-f", "-i", f"bhrp-a{t}", "-s", str(script),
                        "-t", "5", "-T", "1", check=False, timeout=30)
        assert client.returncode == 0, client.stdout + client.stderr
        address = (tmp_path / "script.log").read_text().split()[1]
        assert address.startswith("10.61.1.")

        # The relay's counters: the replies (OFFER, ACK) arrived on the relay port and were
        # delivered; its second socket has a receive loop of its own.
        metrics = lab.scrape("rt", RELAY_METRICS)
        assert metrics[("boothop_relay_replies_by_port_total", (("port", "1067"),))] >= 2
        assert ("boothop_relay_replies_by_port_total", (("port", "67"),)) not in metrics
        assert sum(v for (name, _), v in metrics.items()
                   if name == "boothop_relay_delivered_total") >= 2
        assert ("boothop_loop_core_errors_total", (("port", "1067"), ("service", "relay"))) \
            in metrics, sorted(metrics)

        # The server's link: requests from RELAY_UP:1067 carrying sub-option 19, replies to 1067.
        time.sleep(1)  # tcpdump writes what it has read when stopped; let it read it all
        Lab.stop(tcpdump)
        requests, replies = [], []
        for packet in rdpcap(str(capture)):
            if UDP not in packet:
                continue
            message = decode(bytes(packet[UDP].payload))
            if message.op == Op.BOOTREQUEST:
                requests.append((packet[IP].src, packet[UDP].sport, packet[UDP].dport, message))
            else:
                replies.append((packet[IP].dst, packet[UDP].sport, packet[UDP].dport))
        assert len(requests) >= 2 and len(replies) >= 2, (requests, replies)
        for source, sport, dport, message in requests:
            assert (source, sport, dport) == (RELAY_UP, RELAY_PORT, 67)
            agent = message.get(Opt.RELAY_AGENT_INFO)
            assert agent is not None
            assert AgentInfo.decode(agent).suboptions == ((AgentSub.RELAY_SOURCE_PORT, b""),)
        assert set(replies) == {("10.61.1.1", 67, RELAY_PORT)}
    finally:
        lab.close()
