"""End to end: real DHCP clients get leases through the relay from kea, in network namespaces.

One client on each of two LANs at once, so the pool kea picks by giaddr is checked for both. The
second helper (a UDP recorder on port 67) sees exactly what the relay forwarded; a capture on each
client LAN sees exactly what the relay delivered. dhclient leaves the broadcast flag clear (the
relay must unicast to yiaddr at chaddr); udhcpc -B sets it (the relay must broadcast).
"""

from __future__ import annotations

import json
import os
import subprocess
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from conftest import BASE, Lab
from servers import (
    Frame,
    Received,
    bound_address,
    read_pcap,
    read_recorded,
    start_capture,
    start_dhclient,
    start_udhcpc,
)

from boothop.relay.lab.processes import Process, wait_for
from boothop.relay.lab.topology import OWNER_DIR, Host, Topology, reap_stale
from boothop.relay.wire import AgentInfo, DhcpMessage, MessageType, Op, Opt

pytestmark = pytest.mark.system

LEASE_TIMEOUT = 30.0
BROADCAST_MAC = "ff:ff:ff:ff:ff:ff"


def _start_client(lab: Lab, kind: str, lan: str) -> tuple[Process, Path]:
    plan = lab.lans[lan]
    start = start_dhclient if kind == "dhclient" else start_udhcpc
    return start(lab.runner, lab.ns(plan.client_host), "eth0", lab.workdir / "clients",
                 f"{kind}-{lan}")


def _from_client(frames: list[Frame], mac: str) -> list[Frame]:
    return [f for f in frames if f.message.op == Op.BOOTREQUEST and f.message.mac == mac]


def _to_client(frames: list[Frame], mac: str) -> list[Frame]:
    return [f for f in frames if f.message.op == Op.BOOTREPLY and f.message.mac == mac]


def _forwarded(received: list[Received], mac: str) -> list[Received]:
    return [r for r in received if r.message.mac == mac]


def _key(message: DhcpMessage) -> tuple[int, int | None]:
    return (message.xid, message.message_type)


@pytest.mark.parametrize("client", ["dhclient", "udhcpc"])
def test_clients_lease_from_their_subnet_through_relay(
    lab: Lab, relay: Process, client: str
) -> None:
    captures = {lan: lab.workdir / f"lan-{lan}.pcap" for lan in lab.lans}
    tcpdumps = {
        lan: start_capture(lab.runner, lab.ns(plan.client_host), "eth0", captures[lan],
                           f"tcpdump-{lan}")
        for lan, plan in lab.lans.items()
    }
    upstream_pcap = lab.workdir / "upstream.pcap"
    tcpdumps["up"] = start_capture(lab.runner, lab.ns("router"), "up0", upstream_pcap,
                                   "tcpdump-up", count=120)
    clients = {lan: _start_client(lab, client, lan) for lan in lab.lans}

    def all_bound() -> bool:
        return all(bound_address(events) for _, events in clients.values())

    bound = wait_for(all_bound, LEASE_TIMEOUT, interval=0.1)
    for process, _ in clients.values():
        lab.runner.stop(process)
    context = "\n".join(
        f"--- {p.name}\n{p.output()[-3000:]}" for p in lab.runner.processes
    )
    assert bound, f"not every client got a lease within {LEASE_TIMEOUT} s\n{context}"

    # The helper receives every request the relay saw; wait briefly for the last one.
    def helper_saw_all() -> bool:
        got = {_key(r.message) for r in read_recorded(lab.recorded)}
        return all(
            {_key(f.message) for f in _from_client(read_pcap(captures[lan]), plan.client_mac)}
            <= got
            for lan, plan in lab.lans.items()
        )

    wait_for(helper_saw_all, 3.0)
    for process in tcpdumps.values():
        lab.runner.stop(process)
    received = read_recorded(lab.recorded)
    upstream = read_pcap(upstream_pcap)

    for lan, plan in lab.lans.items():
        address = bound_address(clients[lan][1])
        assert address is not None
        # The pool is chosen by giaddr: each client leases from its own LAN's subnet.
        assert plan.pool.contains(address), f"LAN {lan}: {address} not in {plan.pool}"

        frames = read_pcap(captures[lan])
        sent = _from_client(frames, plan.client_mac)
        replies = _to_client(frames, plan.client_mac)
        forwarded = _forwarded(received, plan.client_mac)
        sent_types = {f.message.message_type for f in sent}
        assert {MessageType.DISCOVER, MessageType.REQUEST} <= sent_types, context

        # What the client sent on its LAN: the flag that selects the delivery method.
        broadcast_flag = client == "udhcpc"
        assert all(f.message.broadcast == broadcast_flag for f in sent), sent
        assert all(f.message.giaddr == IPv4Address(0) and f.message.hops == 0 for f in sent)

        # The second helper got a copy of every request, relayed by the router.
        assert {_key(f.message) for f in sent} <= {_key(r.message) for r in forwarded}, (
            f"LAN {lan}: helper missed requests: sent {[_key(f.message) for f in sent]}, "
            f"got {[_key(r.message) for r in forwarded]}"
        )
        for r in forwarded:
            assert (r.source, r.sport) == (lab.router_up, 67), r
            assert r.message.giaddr == IPv4Address(plan.router_address), r.message
            assert r.message.hops == 1, r.message
            agent = r.message.get(Opt.RELAY_AGENT_INFO)
            assert agent is not None, f"no option 82 in {r.message}"
            assert AgentInfo.decode(agent).circuit_id == plan.router_if.encode()

        # The server echoed option 82 (RFC 3046 §2.2), so the stripping below is the relay's work.
        from_server = [f for f in _to_client(upstream, plan.client_mac) if f.ip_src == lab.server]
        assert from_server, "no reply from the server seen upstream"
        for f in from_server:
            agent = f.message.get(Opt.RELAY_AGENT_INFO)
            assert (
                agent is not None and AgentInfo.decode(agent).circuit_id == plan.router_if.encode()
            )

        # What the relay delivered to the client: no option 82, port 67 -> 68, and the RFC 2131
        # §4.1 delivery: broadcast flag set -> broadcast, clear -> unicast to yiaddr at chaddr.
        reply_types = {f.message.message_type for f in replies}
        assert {MessageType.OFFER, MessageType.ACK} <= reply_types, replies
        for f in replies:
            assert not f.message.has(Opt.RELAY_AGENT_INFO), f"option 82 leaked to client: {f}"
            assert (f.ip_src, f.sport, f.dport) == (plan.router_address, 67, 68), f
            assert f.message.giaddr == IPv4Address(plan.router_address)
            if broadcast_flag:
                assert (f.eth_dst, f.ip_dst) == (BROADCAST_MAC, "255.255.255.255"), f
            else:
                assert (f.eth_dst, f.ip_dst) == (plan.client_mac, str(f.message.yiaddr)), f
        ack = [f for f in replies if f.message.message_type == MessageType.ACK][-1]
        assert str(ack.message.yiaddr) == address
    if relay.name.startswith("relay-boothop"):
        _check_step_lines(lab, relay)
        # The kernel datapath's lines are written by a thread that runs only when the CPU has
        # nothing else to do; the user path writes its lines as it relays.
        assert idle_threads(relay.pid) == (1 if relay.name == "relay-boothop-kernel" else 0)


def idle_threads(pid: int) -> int:
    """How many threads of process ``pid`` run at SCHED_IDLE."""
    return sum(os.sched_getscheduler(int(task.name)) == os.SCHED_IDLE
               for task in Path(f"/proc/{pid}/task").iterdir())


def _check_step_lines(lab: Lab, relay: Process) -> None:
    """boothop's log tells each client's exchange, whichever path relayed it: an info line per
    step (the kernel datapath's come from its events, written a batch at a time)."""
    wanted = {("relay.request.forwarded", "DISCOVER"), ("relay.request.forwarded", "REQUEST"),
              ("relay.reply.delivered", "OFFER"), ("relay.reply.delivered", "ACK")}

    def steps(mac: str) -> set[tuple[str, str]]:
        lines = [json.loads(line) for line in relay.output().splitlines()
                 if line.startswith("{")]
        return {(e["event"], e["type"]) for e in lines
                if e.get("chaddr") == mac and e["level"] == "info"}

    assert wait_for(lambda: all(wanted <= steps(plan.client_mac)
                                for plan in lab.lans.values()), 3.0), relay.output()[-3000:]


def test_topology_up_is_idempotent(lab: Lab) -> None:
    """A second up() on a built topology changes nothing and fails nothing."""
    topology = lab.topology
    before = {h: topology.mac(h, "eth0") for h in ("clienta", "clientb")}
    topology.up()
    assert {h: topology.mac(h, "eth0") for h in ("clienta", "clientb")} == before
    assert before["clienta"] == lab.lans["a"].client_mac
    ping = lab.runner.run(lab.ns("server"), ["busybox", "ping", "-c", "1", "-W", "2",
                                             lab.lans["b"].router_address], timeout=10)
    assert ping.returncode == 0, ping.stdout + ping.stderr


def test_reap_stale_removes_topologies_of_dead_owners(lab: Lab) -> None:
    """A topology whose owner PID is gone (a crashed run) is removed; a live one is kept."""
    stale = Topology(f"{lab.topology.prefix}x", [Host("lonely")], [])
    stale.up()
    dead = subprocess.Popen(["true"])
    dead.wait()
    (OWNER_DIR / f"{stale.prefix}.pid").write_text(f"{dead.pid}\n")
    try:
        reaped = reap_stale(BASE)
        assert stale.prefix in reaped
        assert not stale.exists()
        assert lab.topology.exists()
    finally:
        stale.down()


def test_topology_down_removes_everything(lab: Lab) -> None:
    """down() leaves no namespace of the prefix behind, even with a process still inside."""
    lab.runner.start(lab.ns("clienta"), ["sleep", "30"], "stray")
    prefix = lab.topology.prefix
    lab.topology.down()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
    assert prefix not in listed.stdout
    assert not lab.topology.exists()
