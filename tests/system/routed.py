"""A routed lab of three namespaces for a client, a relay and a server, shared by system tests.

```
 PREFIX-ca-N ──[NET.1.0/24]── PREFIX-rt-N (NET.1.1, NET.0.1) ──[NET.0.0/24]── PREFIX-sv-N (NET.0.2)
```

Links: ``PREFIX-aN``/``PREFIX-raN`` (client side), ``PREFIX-sN``/``PREFIX-rsN`` (server side). Each
test passes a namespace prefix of its own; every process is stopped by PID and every namespace
deleted by ``close``. Other ``roles`` make other namespaces (routed6.py's IPv6 labs).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

Labels = tuple[tuple[str, str], ...]
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


class RoutedLab:
    def __init__(self, tmp: Path, prefix: str, net: str,
                 roles: Sequence[str] = ("sv", "rt", "ca")) -> None:
        self.tag = secrets.token_hex(2)
        self.tmp = tmp
        self.prefix = prefix
        self.net = net
        self.server = f"{net}.0.2"
        self.ns = {role: f"{prefix}-{role}-{self.tag}" for role in roles}
        self.procs: list[subprocess.Popen[bytes]] = []

    def link(self, name: str) -> str:
        """A link's name: ``a`` (client), ``ra`` (relay, client side), ``s``, ``rs``."""
        return f"{self.prefix}-{name}{self.tag}"

    def ex(self, role: str, *args: str, check: bool = True,
           timeout: float = 20) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.ns[role], *args, check=check, timeout=timeout)

    def build(self) -> None:
        for role, ns in self.ns.items():
            sh("ip", "netns", "add", ns)
            self.ex(role, "ip", "link", "set", "lo", "up")
        for peer, here, there, prefix in (("sv", "s", "rs", f"{self.net}.0"),
                                          ("ca", "a", "ra", f"{self.net}.1")):
            sh("ip", "link", "add", self.link(here), "netns", self.ns[peer], "type", "veth",
               "peer", "name", self.link(there), "netns", self.ns["rt"])
            self.ex("rt", "ip", "addr", "add", f"{prefix}.1/24", "dev", self.link(there))
            self.ex("rt", "ip", "link", "set", self.link(there), "up")
            self.ex(peer, "ip", "link", "set", self.link(here), "up")
        self.ex("sv", "ip", "addr", "add", f"{self.server}/24", "dev", self.link("s"))
        self.ex("sv", "ip", "route", "add", "default", "via", f"{self.net}.0.1")
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


def server_config(directory: Path, subnet: str, pool: str, router: str,
                  metrics: str | None = None) -> Path:
    """A boothop-server configuration serving ``subnet`` from ``pool`` (``FIRST-LAST``), its
    lease database in ``directory``, with a metrics endpoint when given: the file's path."""
    endpoint = f'[metrics]\nlisten = "{metrics}"\n' if metrics else ""
    config = directory / "server.toml"
    config.write_text(f'{endpoint}[dhcp]\nlease_db = "{directory / "leases.sqlite3"}"\n'
                      f'[[dhcp.subnets]]\nsubnet = "{subnet}"\npools = ["{pool}"]\n'
                      f'options = {{ routers = ["{router}"] }}\n')
    return config
