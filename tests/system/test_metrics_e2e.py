"""Both metrics endpoints scraped during a real lease: udhcpc -> boothop-relay -> boothop-server.

```
 bhm-ca-N (udhcpc) ──[10.53.1.0/24]── bhm-rt-N (boothop-relay) ──[10.53.0.0/24]── bhm-sv-N
                                        --metrics 127.0.0.1:9267       (boothop-server,
                                                                        [metrics] 127.0.0.1:9268)
```

Namespaces of our own (prefix ``bhm``); every process is stopped by PID and every namespace
deleted in ``finally``. Each endpoint is read with a plain HTTP GET (urllib) inside its namespace.
"""

from __future__ import annotations

import contextlib
import json
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

SERVER = "10.53.0.2"
SUBNET = "10.53.1.0/24"
Labels = tuple[tuple[str, str], ...]
RELAY_METRICS = "127.0.0.1:9267"
SERVER_METRICS = "127.0.0.1:9268"
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
        self.ns = {role: f"bhm-{role}-{self.tag}" for role in ("sv", "rt", "ca")}
        self.procs: list[subprocess.Popen[bytes]] = []

    def ex(self, role: str, *args: str, check: bool = True,
           timeout: float = 20) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.ns[role], *args, check=check, timeout=timeout)

    def build(self) -> None:
        for role, ns in self.ns.items():
            sh("ip", "netns", "add", ns)
            self.ex(role, "ip", "link", "set", "lo", "up")
        t = self.tag
        for peer, here, there, prefix in (("sv", f"bhm-s{t}", f"bhm-rs{t}", "10.53.0"),
                                          ("ca", f"bhm-a{t}", f"bhm-ra{t}", "10.53.1")):
            sh("ip", "link", "add", here, "netns", self.ns[peer], "type", "veth", "peer", "name",
               there, "netns", self.ns["rt"])
            self.ex("rt", "ip", "addr", "add", f"{prefix}.1/24", "dev", there)
            self.ex("rt", "ip", "link", "set", there, "up")
            self.ex(peer, "ip", "link", "set", here, "up")
        self.ex("sv", "ip", "addr", "add", f"{SERVER}/24", "dev", f"bhm-s{t}")
        self.ex("sv", "ip", "route", "add", "default", "via", "10.53.0.1")
        self.ex("rt", "sysctl", "-qw", "net.ipv4.ip_forward=1")

    def spawn(self, role: str, *args: str, log: str) -> subprocess.Popen[bytes]:
        with open(self.tmp / log, "ab") as out:
            proc = subprocess.Popen(["ip", "netns", "exec", self.ns[role], *args], stdout=out,
                                    stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def scrape(self, role: str, listen: str) -> dict[tuple[str, Labels], float]:
        result = self.ex(role, sys.executable, "-c", GET, f"http://{listen}/metrics", check=False)
        if result.returncode != 0:
            return {}
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(result.stdout)
                for s in family.samples}

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
        for ns in self.ns.values():
            for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        for ns in self.ns.values():
            sh("ip", "netns", "del", ns, check=False)


@pytest.mark.system
def test_both_endpoints_show_a_real_lease(tmp_path: Path) -> None:
    require_system("udhcpc")
    relay, server = need("boothop-relay"), need("boothop-server")
    lab = Lab(tmp_path)
    try:
        lab.build()
        t = lab.tag
        config = tmp_path / "server.toml"
        config.write_text(f"""
[metrics]
listen = "{SERVER_METRICS}"
[dhcp]
lease_db = "{tmp_path / 'leases.sqlite3'}"
[[dhcp.subnets]]
subnet = "{SUBNET}"
pools = ["10.53.1.100-10.53.1.199"]
options = {{ routers = ["10.53.1.1"] }}
""")
        lab.spawn("sv", server, "run", "-c", str(config), "--log-format", "json",
                  log="server.log")
        lab.spawn("rt", relay, "-id", f"bhm-ra{t}", "-iu", f"bhm-rs{t}", "--log-format", "json",
                  "--metrics", RELAY_METRICS, "--stats-interval", "0", SERVER, log="relay.log")
        wait_for(lambda: lab.scrape("sv", SERVER_METRICS), 15, "the server's endpoint")
        wait_for(lambda: lab.scrape("rt", RELAY_METRICS), 15, "the relay's endpoint")

        script = tmp_path / "script"
        script.write_text(SCRIPT)
        script.chmod(0o755)
        client = lab.ex("ca", "udhcpc", "-q", "-n", "-f", "-i", f"bhm-a{t}", "-s", str(script),
                        "-t", "5", "-T", "1", check=False, timeout=30)
        assert client.returncode == 0, client.stdout + client.stderr
        address = (tmp_path / "script.log").read_text().split()[1]
        assert address.startswith("10.53.1.")

        helper = (("server", SERVER),)
        relay_metrics = lab.scrape("rt", RELAY_METRICS)
        assert relay_metrics[("boothop_relay_forwarded_total", helper)] >= 2  # DISCOVER, REQUEST
        delivered = sum(v for (name, _), v in relay_metrics.items()
                        if name == "boothop_relay_delivered_total")
        assert delivered >= 2  # OFFER, ACK
        assert relay_metrics[("boothop_relay_helper_answered_total", helper)] >= 2
        assert relay_metrics[("boothop_relay_helper_reply_seconds_count", helper)] >= 2
        assert 0 < relay_metrics[("boothop_relay_helper_reply_seconds_sum", helper)] < 5
        assert relay_metrics[("boothop_relay_received_by_interface_total",
                              (("interface", f"bhm-ra{t}"),))] >= 2

        subnet = (("subnet", SUBNET),)
        server_metrics = lab.scrape("sv", SERVER_METRICS)
        assert server_metrics[("boothop_server_dhcp_leases", subnet)] == 1
        assert server_metrics[("boothop_server_dhcp_pool_used", subnet)] == 1
        assert server_metrics[("boothop_server_dhcp_pool_size", subnet)] == 100
        assert server_metrics[("boothop_server_dhcp_commit_seconds_count", ())] >= 1
        assert server_metrics[("boothop_server_dhcp_replies_total", (("kind", "ack"),))] >= 1

        # The status commands print the same for a person.
        status = lab.ex("rt", relay, "status", "--metrics", RELAY_METRICS).stdout
        assert "boothop_relay_helper_answered_total{server=10.53.0.2}" in status
        assert "boothop_relay_helper_reply_seconds{server=10.53.0.2}" in status
        status = lab.ex("sv", server, "status", "-c", str(config)).stdout
        assert f"boothop_server_dhcp_leases{{subnet={SUBNET}}}" in status

        # The relay's journal tells the story at the default level.
        events = [json.loads(line) for line in (tmp_path / "relay.log").read_text().splitlines()
                  if line.startswith("{")]
        steps = [(e["event"], e.get("type")) for e in events if e["level"] == "info"]
        for step in (("relay.request.forwarded", "DISCOVER"), ("relay.reply.delivered", "OFFER"),
                     ("relay.request.forwarded", "REQUEST"), ("relay.reply.delivered", "ACK")):
            assert step in steps, steps
    finally:
        lab.close()
