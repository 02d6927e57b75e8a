"""Parts of the lab the benchmarks build on: a switch that runs no firewall (br_netfilter's hooks
off) and has no host of its own on its LANs, and a program stopped by SIGTERM that still removes
what it started."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import require_system

from boothop.relay.lab.processes import in_netns, snmp_counters, udp_counters
from boothop.relay.lab.topology import Host, Lan, Port, Topology

pytestmark = pytest.mark.system

HOOKS = ("iptables", "ip6tables", "arptables")


def bridge_hooks(namespace: str) -> dict[str, str]:
    """bridge-nf-call-* as seen inside ``namespace`` (empty: no br_netfilter in this kernel)."""
    script = ("import pathlib; d = pathlib.Path('/proc/sys/net/bridge'); "
              "print(*(f'{t}={(d / f\"bridge-nf-call-{t}\").read_text().strip()}' "
              f"for t in {HOOKS!r} if (d / f'bridge-nf-call-{{t}}').exists()))")
    out = subprocess.run(["ip", "netns", "exec", namespace, "python3", "-c", script],
                         check=True, capture_output=True, text=True, timeout=20).stdout
    return dict(item.split("=") for item in out.split())


def test_the_switch_passes_no_frame_through_iptables() -> None:
    require_system()
    prefix = f"bhp-{secrets.token_hex(3)}"
    topo = Topology(prefix, [Host("a"), Host("b")],
                    [Lan("x", (Port("a", "eth0", "10.47.0.1/24"),
                               Port("b", "eth0", "10.47.0.2/24")))])
    with topo:
        # A namespace starts with the hooks on wherever br_netfilter is: what up() undoes.
        fresh = bridge_hooks(topo.netns("a"))
        assert set(fresh.values()) <= {"1"}
        assert bridge_hooks(topo.switch_netns) == dict.fromkeys(fresh, "0")
        if Path("/proc/sys/net/bridge").exists():
            assert set(fresh) == set(HOOKS)



BROADCASTS = 20
_RECEIVE = f"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 9999))
s.settimeout(5)
print("bound", flush=True)
count = 0
try:
    while count < {BROADCASTS}:
        s.recv(2048)
        count += 1
except TimeoutError:
    pass
print(count)
"""
_SEND = f"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")  # no route: the port's LAN
for _ in range({BROADCASTS}):
    s.sendto(b"x", ("255.255.255.255", 9999))
"""


def test_the_switch_floods_broadcasts_to_its_ports_and_takes_none_itself() -> None:
    """A switch has no host on its LANs: its bridges pass no frame up to its own IPv4 stack,
    which would route (and free through RCU) every limited broadcast on the sender's CPU."""
    require_system()
    topo = Topology(f"bhp-{secrets.token_hex(3)}", [Host("a"), Host("b")],
                    [Lan("x", (Port("a", "eth0", "10.47.0.1/24"),
                               Port("b", "eth0", "10.47.0.2/24")))])
    with topo:
        before = snmp_counters(topo.switch_netns, "Ip")["InReceives"]
        with subprocess.Popen(in_netns(topo.netns("b"), [sys.executable, "-c", _RECEIVE]),
                              stdout=subprocess.PIPE, text=True) as receiver:
            assert receiver.stdout is not None
            try:
                assert receiver.stdout.readline().strip() == "bound"
                subprocess.run(in_netns(topo.netns("a"), [sys.executable, "-c", _SEND]),
                               check=True, timeout=20)
                received = int(receiver.stdout.readline())
            finally:
                receiver.kill()
        assert received == BROADCASTS
        assert snmp_counters(topo.switch_netns, "Ip")["InReceives"] == before


def test_a_missing_interface_is_reported_with_those_present() -> None:
    require_system()
    topo = Topology(f"bhp-{secrets.token_hex(3)}", [Host("a"), Host("b")],
                    [Lan("x", (Port("a", "eth0", "10.47.0.1/24"),
                               Port("b", "eth0", "10.47.0.2/24")))])
    with topo:
        assert topo.mac("a", "eth0")
        with pytest.raises(LookupError, match=r"no interface 'gone0' \(present: eth0, lo\)"):
            topo.mac("a", "gone0")



def test_udp_counters_are_the_namespace_s_own() -> None:
    require_system()
    topo = Topology(f"bhp-{secrets.token_hex(3)}", [Host("a"), Host("b")],
                    [Lan("x", (Port("a", "eth0", "10.47.0.1/24"),
                               Port("b", "eth0", "10.47.0.2/24")))], ipv6=True)
    with topo:
        before = udp_counters(topo.netns("b"))
        assert udp_counters(topo.netns("b"), 6)["RcvbufErrors"] == 0
        # Three datagrams to a port nobody listens on in b: b's NoPorts counts them, a's not.
        send = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                "[s.sendto(b'x', ('10.47.0.2', 9)) for _ in range(3)]")
        subprocess.run(["ip", "netns", "exec", topo.netns("a"), sys.executable, "-c", send],
                       check=True, timeout=20)
        deadline = time.monotonic() + 5
        while udp_counters(topo.netns("b"))["NoPorts"] < before["NoPorts"] + 3:
            assert time.monotonic() < deadline, udp_counters(topo.netns("b"))
            time.sleep(0.05)
        assert udp_counters(topo.netns("a"))["NoPorts"] == 0


#: Started as a shell starts a background job: SIGINT ignored (what exit_on_sigterm is for).
OWNER = """
import signal, sys, time
from pathlib import Path
from boothop.relay.lab.processes import ProcessRunner, exit_on_sigterm
signal.signal(signal.SIGINT, signal.SIG_IGN)
if sys.argv[2] == "handled":
    exit_on_sigterm()
with ProcessRunner(Path(sys.argv[1])) as runner:
    child = runner.start(None, ["sleep", "600"], "sleeper")
    print(child.pid, flush=True)
    time.sleep(600)
"""


@pytest.mark.parametrize("handled", [True, False])
def test_a_program_stopped_by_sigterm_stops_what_it_started(tmp_path: Path, handled: bool) -> None:
    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(tmp_path),
                              "handled" if handled else "default"],
                             stdout=subprocess.PIPE, text=True)
    assert owner.stdout is not None
    child = int(owner.stdout.readline())
    try:
        owner.send_signal(signal.SIGTERM)
        assert owner.wait(timeout=30) == (143 if handled else -signal.SIGTERM)
        deadline = time.monotonic() + 10
        while handled and alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        # Without the handler the default action kills the owner alone: its child lives on.
        assert alive(child) is not handled
    finally:
        if alive(child):
            os.kill(child, signal.SIGKILL)
        if owner.poll() is None:
            owner.kill()


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, reaped by init soon, counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


#: exit_on_sigterm, then a fork (as pyroute2 forks its helpers) stopped with SIGTERM while the
#: caller's clean-up is on its stack: the fork must exit, not run the caller's clean-up.
FORKED = """
import os, signal, sys, time
from boothop.relay.lab.processes import exit_on_sigterm
exit_on_sigterm()
try:
    child = os.fork()
    if child == 0:
        time.sleep(30)
        os._exit(0)
    time.sleep(0.2)
    os.kill(child, signal.SIGTERM)
    print("fork", os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]), flush=True)
finally:
    print("clean-up in", "caller" if os.getpid() == int(sys.argv[1]) else "fork", flush=True)
"""


def test_sigterm_stops_a_fork_without_the_caller_s_clean_up() -> None:
    script = f"import os, sys; sys.argv[1:] = [str(os.getpid())]\n{FORKED}"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["fork 143", "clean-up in caller"]


#: The benches' order: exit_on_sigterm, then a topology (pyroute2 forks a helper for each
#: namespace it creates and each socket it opens in one).
BUILDER = """
import sys
from boothop.relay.lab.processes import exit_on_sigterm
from boothop.relay.lab.topology import Host, Lan, Port, Topology
exit_on_sigterm()
topo = Topology(sys.argv[1], [Host("a"), Host("b"), Host("c")],
                [Lan("x", (Port("a", "eth0", "10.47.0.1/24"), Port("b", "eth0", "10.47.0.2/24"),
                           Port("c", "eth0", "10.47.0.3/24")))])
with topo:
    print(topo.mac("c", "eth0"), flush=True)
"""


def test_a_topology_builds_under_exit_on_sigterm() -> None:
    require_system()
    prefix = f"bhp-{secrets.token_hex(3)}"
    done = subprocess.run([sys.executable, "-c", BUILDER, prefix], capture_output=True,
                          text=True, timeout=120)
    left = [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                      check=True).stdout.split() if n.startswith(prefix)]
    for name in left:
        subprocess.run(["ip", "netns", "delete", name], check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert not left
