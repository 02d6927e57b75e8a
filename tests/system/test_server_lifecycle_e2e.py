"""boothop-server's lifecycle with real processes in a network namespace of our own (``bhl-``).

```
 bhl-<tag>:  bhl0 10.60.1.1/24 (the "relay": giaddr, where the test's client listens on :67)
             bhl1 10.60.0.2/24 (the server's address)          veth pairs, peers up in the same
```

The client is a relay's view of DHCP: it sends relayed requests (giaddr 10.60.1.1) to the server
and takes the replies on 10.60.1.1:67, so the DHCP server listens on DHCP_PORT. Every process
is stopped by PID and the namespace deleted in ``finally``; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import need, require_system
from routed import sh, wait_for

GIADDR = "10.60.1.1"
SERVER = "10.60.0.2"
DHCP_PORT = 6767
RESERVED_MAC = "02:60:00:00:00:03"
RESERVED = "10.60.1.20"

CLIENT = r"""
import json, socket, sys, time
from ipaddress import IPv4Address
from boothop.relay.wire import DhcpMessage, MessageType, Op, decode, encode
server, port, giaddr, mac = sys.argv[1], int(sys.argv[2]), IPv4Address(sys.argv[3]), sys.argv[4]
chaddr = bytes.fromhex(mac.replace(':', '')).ljust(16, b'\0')
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((str(giaddr), 67))
s.settimeout(0.5)
xid = int.from_bytes(chaddr[3:6], 'big') << 4

def exchange(msg, want):
    s.sendto(encode(msg), (server, port))
    try:
        while True:
            reply = decode(s.recv(2048))
            if reply.xid == msg.xid and reply.message_type in (want, MessageType.NAK):
                return reply
    except socket.timeout:
        return None

result = {'mac': mac, 'address': None, 'nak': False}
base = DhcpMessage(op=Op.BOOTREQUEST, xid=xid, chaddr=chaddr, giaddr=giaddr, hops=1)
for attempt in range(int(sys.argv[5])):
    offer = exchange(base.replace(options=((53, bytes((MessageType.DISCOVER,))),)),
                     MessageType.OFFER)
    if offer is None or offer.message_type != MessageType.OFFER:
        continue
    ack = exchange(base.replace(options=((53, bytes((MessageType.REQUEST,))), (54, offer.get(54)),
                                         (50, offer.yiaddr.packed))), MessageType.ACK)
    if ack is not None:
        result['nak'] = ack.message_type == MessageType.NAK
        result['address'] = None if result['nak'] else str(ack.yiaddr)
        break
print(json.dumps(result))
"""


class Daemon:
    """A process started in the namespace; its output goes to a file."""

    def __init__(self, argv: list[str], log: Path, prefix: list[str]) -> None:
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen([*prefix, *argv], stdout=out, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def events(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.output().splitlines() if line.startswith("{")]

    def has(self, event: str) -> bool:
        return any(e.get("event") == event for e in self.events())

    def running(self) -> bool:
        return self.proc.poll() is None


class Ns:
    """One namespace with the two addresses, and everything started in it."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.name = f"bhl-{secrets.token_hex(3)}"
        self.daemons: list[Daemon] = []
        #: A process whose (private) mount namespace the daemons share: the small filesystem.
        self.mount_holder: int | None = None

    def build(self) -> None:
        sh("ip", "netns", "add", self.name)
        self.ex("ip", "link", "set", "lo", "up")
        for ifname, address in (("bhl0", GIADDR), ("bhl1", SERVER)):
            self.ex("ip", "link", "add", ifname, "type", "veth", "peer", "name", f"{ifname}p")
            self.ex("ip", "addr", "add", f"{address}/24", "dev", ifname)
            for name in (ifname, f"{ifname}p"):
                self.ex("ip", "link", "set", name, "up")

    def prefix(self) -> list[str]:
        mount = [] if self.mount_holder is None else ["nsenter", "-t", str(self.mount_holder),
                                                      "-m"]
        return [*mount, "ip", "netns", "exec", self.name]

    def ex(self, *args: str, check: bool = True,
           timeout: float = 20) -> subprocess.CompletedProcess[str]:
        return sh(*self.prefix(), *args, check=check, timeout=timeout)

    def start(self, argv: list[str], name: str) -> Daemon:
        daemon = Daemon(argv, self.tmp / f"{name}.log", self.prefix())
        self.daemons.append(daemon)
        return daemon

    def holds(self, daemon: Daemon, port: int) -> bool:
        bound = self.ex("ss", "-Hulpn", f"sport = :{port}", check=False).stdout
        # `ip netns exec` (and nsenter) exec the program: the daemon keeps the PID we started.
        return f"pid={daemon.proc.pid}," in bound

    def close(self) -> None:
        for daemon in self.daemons:
            if daemon.running():
                daemon.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                daemon.proc.wait(timeout=5)
        for pid in sh("ip", "netns", "pids", self.name, check=False).stdout.split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        sh("ip", "netns", "del", self.name, check=False)

    # -- the DHCP side -----------------------------------------------------------------------
    def client(self, mac: str, attempts: int = 3) -> dict[str, object]:
        out = self.ex(sys.executable, "-c", CLIENT, SERVER, str(DHCP_PORT), GIADDR, mac,
                      str(attempts), timeout=10 + 2 * attempts).stdout
        result: dict[str, object] = json.loads(out)
        return result

    def server(self, config: Path, name: str = "server") -> Daemon:
        server = self.start([need("boothop-server"), "run", "-c", str(config), "--log-format",
                             "json"], name)
        wait_for(lambda: server.has("server.started") or not server.running(), 15,
                 f"{name} to start")
        assert server.running(), server.output()
        return server


@contextlib.contextmanager
def namespace(tmp: Path) -> Iterator[Ns]:
    ns = Ns(tmp)
    try:
        ns.build()
        yield ns
    finally:
        ns.close()


def dhcp_config(path: Path, db: Path, pools: list[str], reservation: bool = False) -> Path:
    reserved = f"""
  [[dhcp.subnets.reservations]]
  mac = "{RESERVED_MAC}"
  address = "{RESERVED}"
""" if reservation else ""
    path.write_text(f"""
[dhcp]
lease_db = "{db}"
port = {DHCP_PORT}
offer_hold = 5
[[dhcp.subnets]]
subnet = "10.60.1.0/24"
pools = {json.dumps(pools)}
lease_time = 600
{reserved}""")
    return path


def mac(n: int) -> str:
    return f"02:60:00:00:00:{n:02x}"


# -- SIGHUP, SIGUSR1 -------------------------------------------------------------------------


@pytest.mark.system
def test_sighup_reloads_pools_and_reservations_and_keeps_leases_and_a_bad_file_changes_nothing(
        tmp_path: Path) -> None:
    require_system("ss")
    config, db = tmp_path / "server.toml", tmp_path / "leases.sqlite3"
    dhcp_config(config, db, ["10.60.1.100-10.60.1.100"])
    with namespace(tmp_path) as ns:
        server = ns.server(config)
        assert ns.client(mac(1))["address"] == "10.60.1.100"
        assert ns.client(mac(2), attempts=1)["address"] is None  # the one-address pool is used

        dhcp_config(config, db, ["10.60.1.100-10.60.1.100", "10.60.1.150-10.60.1.150"],
                    reservation=True)
        server.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: server.has("server.config.reloaded"), 10, "the reload")
        assert server.running()
        assert ns.client(mac(2))["address"] == "10.60.1.150", "the new pool is not used"
        assert ns.client(RESERVED_MAC)["address"] == RESERVED, "the new reservation is ignored"
        assert ns.client(mac(1))["address"] == "10.60.1.100", "the existing lease was lost"

        config.write_text(config.read_text().replace('pools = ["', 'pools = ["bogus", "'))
        server.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: server.has("server.config.invalid"), 10, "the refusal")
        invalid = next(e for e in server.events() if e["event"] == "server.config.invalid")
        assert invalid["path"] == str(config) and invalid["key"] == "dhcp.subnets[0].pools[0]"
        assert invalid["note"] == "keeping the running configuration" and invalid["reason"]
        assert server.running()
        assert ns.client(RESERVED_MAC)["address"] == RESERVED
        assert ns.client(mac(2))["address"] == "10.60.1.150"

        server.proc.send_signal(signal.SIGUSR1)
        wait_for(lambda: server.has("server.stats"), 5, "the counters")
        assert server.running()
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=10) == 0
    config.write_text(config.read_text().replace('pools = ["bogus", "', 'pools = ["'))
    leases = json.loads(sh(need("boothop-server"), "leases", "-c", str(config), "--json").stdout)
    assert {(row["address"], row["mac"]) for row in leases if row["state"] == "bound"} == {
        ("10.60.1.100", mac(1)), ("10.60.1.150", mac(2)), (RESERVED, RESERVED_MAC)}


# -- one daemon per port ---------------------------------------------------------------------


def refused(ns: Ns, argv: list[str], name: str, port: int) -> str:
    """Run a second daemon: it must exit non-zero within a bound, naming the port."""
    second = ns.start(argv, name)
    try:
        code = second.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{name} did not refuse the taken port:\n{second.output()}")
    output = second.output()
    assert code == 1, output
    assert f"UDP port {port} on 0.0.0.0 is taken by another process" in output, output
    assert "Traceback" not in output, output
    return output


@pytest.mark.system
def test_a_second_boothop_server_refuses_the_port_and_the_first_keeps_serving(
        tmp_path: Path) -> None:
    require_system("ss")
    first = dhcp_config(tmp_path / "first.toml", tmp_path / "first.sqlite3",
                        ["10.60.1.100-10.60.1.110"])
    second = dhcp_config(tmp_path / "second.toml", tmp_path / "second.sqlite3",
                         ["10.60.1.100-10.60.1.110"])
    with namespace(tmp_path) as ns:
        server = ns.server(first)
        refused(ns, [need("boothop-server"), "run", "-c", str(second)], "second", DHCP_PORT)
        assert server.running() and ns.holds(server, DHCP_PORT)
        assert ns.client(mac(7))["address"] == "10.60.1.100"


@pytest.mark.system
def test_a_second_proxydhcp_server_refuses_the_port_and_the_first_keeps_serving(
        tmp_path: Path) -> None:
    require_system("ss")
    config = tmp_path / "pxe.toml"
    config.write_text(f'[pxe]\nserver_address = "{SERVER}"\n[pxe.boot]\nbios = "undionly.kpxe"\n')
    with namespace(tmp_path) as ns:
        first = ns.server(config, "first")
        wait_for(lambda: ns.holds(first, 67) and ns.holds(first, 4011), 10, "ports 67 and 4011")
        refused(ns, [need("boothop-server"), "run", "-c", str(config)], "second", 67)
        assert first.running() and ns.holds(first, 67) and ns.holds(first, 4011)


RELAY = ["-d", "-id", "bhl0", "-iu", "bhl1", "10.60.0.9"]


@pytest.mark.system
@pytest.mark.parametrize("incumbent", ["boothop-relay", "dhcrelay"])
def test_boothop_relay_refuses_a_port_another_relay_holds(tmp_path: Path, incumbent: str) -> None:
    require_system("ss", "dhcrelay")
    with namespace(tmp_path) as ns:
        if incumbent == "dhcrelay":
            argv = ["dhcrelay", "-4", "-pf", str(tmp_path / "dhcrelay.pid"), *RELAY]
        else:
            argv = [need("boothop-relay"), *RELAY]
        first = ns.start(argv, "first")
        wait_for(lambda: ns.holds(first, 67) or not first.running(), 10, f"{incumbent} to bind")
        assert first.running(), first.output()
        refused(ns, [need("boothop-relay"), *RELAY], "second", 67)
        assert first.running() and ns.holds(first, 67)


# -- a full disk -----------------------------------------------------------------------------


@contextlib.contextmanager
def small_filesystem(directory: Path, size: str) -> Iterator[int]:
    """A tmpfs of ``size`` on ``directory`` in a private mount namespace, held by a process (its
    PID is yielded): the host's mounts never see it, and it is gone with that process."""
    directory.mkdir()
    holder = subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", "sh", "-c",
         f'mount -t tmpfs -o size={size} boothop-test "{directory}" && echo ready && '
         "exec sleep 300"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait(timeout=5)


@pytest.mark.system
def test_disk_full_withholds_acks_says_so_and_service_resumes_when_space_returns(
        tmp_path: Path) -> None:
    require_system("ss", "unshare", "nsenter")
    small = tmp_path / "small"
    # The namespace first: the private mount namespace then has a copy of its /run/netns mount.
    with namespace(tmp_path) as ns, small_filesystem(small, "2m") as holder:
        ns.mount_holder = holder
        db = small / "leases.sqlite3"
        config = dhcp_config(tmp_path / "server.toml", db, ["10.60.1.100-10.60.1.199"])
        server = ns.server(config)
        # No room for the WAL's growth (leasestore.prepare_to_serve) on 2 MiB: said, not fatal.
        assert server.has("server.store.not_prepared"), server.output()[-2000:]
        assert ns.client(mac(1))["address"] == "10.60.1.100"
        # Fill the filesystem to the last block (dd stops at ENOSPC).
        fill = ns.ex("dd", "if=/dev/zero", f"of={small / 'fill'}", "bs=4k", check=False)
        assert "No space left on device" in fill.stderr, fill.stderr
        for n in range(2, 6):
            assert ns.client(mac(n), attempts=1)["address"] is None, "an ACK without its lease"
        failed = [e for e in server.events() if e["event"] == "server.store.failed"]
        assert failed and "full" in str(failed[0]["error"]), server.output()[-2000:]
        assert server.running()

        ns.ex("rm", str(small / "fill"))
        assert ns.client(mac(2))["address"] is not None, "service did not resume"
        assert server.has("server.store.recovered")
        rows = json.loads(ns.ex(need("boothop-server"), "leases", "-c", str(config),
                                "--json").stdout)
        bound = {row["mac"] for row in rows if row["state"] == "bound"}
        assert bound == {mac(1), mac(2)}, rows
        # Memory agrees with the disk: the leases whose writes failed were forgotten.
        server.proc.send_signal(signal.SIGUSR1)
        wait_for(lambda: server.has("server.stats"), 5, "the counters")
        stats = next(e for e in server.events() if e["event"] == "server.stats")
        assert stats["leases"] == len(rows) and stats["store.failed"] == 4, stats
