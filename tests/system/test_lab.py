"""End-to-end tests of boothop-lab: the demo (with boothop-relay and with ISC dhcrelay) and the two
field-report scenarios, checked by what the servers and clients saw.

Each test builds its own lab from a temporary lab file with prefix ``bhlt<4 random>`` and the
10.91.0.0/16 address plan, so it never meets a person's running lab (``bhlab``), and removes its
namespaces and processes in ``finally`` whatever happens. The daemons run this checkout's code
(PYTHONPATH is set to it for the test's subprocesses).
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import shutil
import string
import subprocess
import sys
import time
from collections.abc import Iterator
from ipaddress import IPv6Address
from pathlib import Path
from typing import Any

import pytest
from conftest import require_system

from boothop.relay.lab.lab import Lab, run_demo
from boothop.relay.lab.locations import boot_program, missing_boot_files
from boothop.relay.lab.processes import Process, wait_for
from boothop.relay.lab.scenarios import WARNING_EVENT, leases, run_scenario
from boothop.relay.lab.servers import read_events, relay_counters, report
from boothop.relay.lab.spec import ClientSpec, LabSpec, ipv6_twin, load_lab
from boothop.relay.lab.topology import TopologyError, alive, namespace_pids, remove_recorded
from boothop.relay.wire import AgentInfo, Op, Opt, WireError, decode

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[2]
TOOLS = (
    "ip",
    "qemu-system-x86_64",
    "busybox",
    "tcpdump",
    "curl",
    "boothop-server",
    "boothop-relay",
)

LAB_TOML = """\
prefix = "{prefix}"
relay = "boothop"
client_timeout = 420

[servers]
router = "10.91.0.1/24"
dhcp = "10.91.0.10/24"
pxe = "10.91.0.20/24"

[[subnet]]
name = "a"
router = "10.91.1.1/24"
pool = ["10.91.1.100", "10.91.1.199"]

[[subnet]]
name = "b"
router = "10.91.2.1/24"
pool = ["10.91.2.100", "10.91.2.199"]

[[client]]
name = "pxe1"
kind = "pxe"
subnet = "a"
mac = "52:54:00:91:01:01"

[[client]]
name = "dhcp1"
kind = "udhcpc"
subnet = "b"
mac = "02:00:00:91:02:01"

[[client]]
name = "bootp1"
kind = "bootp"
subnet = "b"
mac = "02:00:00:91:02:10"
address = "10.91.2.10"
"""


def _require(*tools: str) -> None:
    require_system(*tools)
    if not Path("/usr/lib/ipxe/qemu").is_dir():
        pytest.skip("iPXE ROMs missing (/usr/lib/ipxe/qemu, Debian package ipxe-qemu)")
    if problems := missing_boot_files():
        pytest.skip("; ".join(problems))


def _namespaces(prefix: str) -> list[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return [line.split()[0] for line in listed.stdout.splitlines() if line.startswith(f"{prefix}-")]


def _pids(prefix: str) -> set[int]:
    return {pid for name in _namespaces(prefix) for pid in namespace_pids(name)}


@pytest.fixture
def spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LabSpec]:
    """A private lab file; afterwards, nothing of it may be left: namespaces, processes, files."""
    _require(*TOOLS)
    prefix = "bhlt" + "".join(
        secrets.choice(string.ascii_lowercase + string.digits) for _ in range(4)
    )
    path = tmp_path / "lab.toml"
    path.write_text(LAB_TOML.format(prefix=prefix))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    loaded = load_lab(path)
    try:
        yield loaded
    finally:
        leftover = _namespaces(prefix)
        remove_recorded(prefix)
        shutil.rmtree(Lab(loaded).workdir, ignore_errors=True)
    assert leftover == [], f"namespaces left behind: {leftover}"


def _capture(lab: Lab, host: str, ifname: str, name: str) -> Process:
    process = lab.runner.start(
        lab.topology.netns(host),
        ["tcpdump", "-n", "-U", "--immediate-mode", "-c", "500", "-i", ifname,
         "-w", str(lab.workdir / f"{name}.pcap"), "udp port 67 or udp port 68"],
        name,
    )
    assert wait_for(lambda: "listening on" in process.output(), 5), process.output()
    return process


def _dhcp_messages(pcap: Path) -> list[tuple[int, Any]]:
    """(destination port, decoded message) of every DHCP datagram in a capture."""
    from scapy.layers.inet import UDP
    from scapy.layers.l2 import Ether  # noqa: F401  (registers Ethernet captures for rdpcap)
    from scapy.utils import rdpcap

    messages = []
    for packet in rdpcap(str(pcap)):
        if UDP in packet:
            try:
                messages.append((packet[UDP].dport, decode(bytes(packet[UDP].payload))))
            except WireError:
                continue
    return messages


def _pxe_events(lab: Lab) -> list[dict[str, Any]]:
    return read_events(lab.workdir / "logs" / "pxe.log")


def _transfers(lab: Lab) -> list[dict[str, Any]]:
    return [e for e in _pxe_events(lab) if str(e.get("event", "")).startswith("tftp.transfer.")]


def test_demo_servers_and_clients_saw_the_whole_boot(spec: LabSpec) -> None:
    lab = Lab(spec)
    pxe, udhcpc, bootp = (
        next(c for c in spec.clients if c.kind == k) for k in ("pxe", "udhcpc", "bootp")
    )
    pids: set[int] = set()
    try:
        lab.up()
        captures = [
            _capture(lab, "dhcp", "eth0", "cap-dhcp"),
            _capture(lab, bootp.name, "eth0", "cap-bootp"),
            _capture(lab, udhcpc.name, "eth0", "cap-udhcpc"),
        ]
        results = {r.name: r for r in lab.boot_clients()}
        assert all(r.ok for r in results.values()), {
            n: (r.ok, r.detail) for n, r in results.items()
        }
        assert wait_for(lambda: (relay_counters(lab.workdir) or {}).get("delivered"), 5)
        time.sleep(0.5)  # tcpdump writes what it has received before it is stopped
        for capture in captures:
            lab.runner.stop(capture)
        pids = _pids(spec.prefix)

        # Leases in the DHCP server's database, one per client, with the client's MAC.
        rows = {row["mac"]: row for row in leases(lab)}
        assert rows[bootp.mac]["address"] == str(bootp.address)
        assert rows[udhcpc.mac]["address"] == results[udhcpc.name].address
        assert rows[pxe.mac]["address"] == results[pxe.name].address
        assert all(rows[c.mac]["state"] == "bound" for c in (bootp, udhcpc, pxe))

        # The kernel's report, and the TFTP transfers of the chain as the PXE host logged them.
        address = results[pxe.name].address
        _assert_booted_to_the_kernel(lab, pxe, address)
        assert results[pxe.name].boot_file == "boot.ipxe"

        # The relay's counters: every request went to both helpers, replies were delivered.
        counters = relay_counters(lab.workdir)
        assert counters is not None
        forwarded = counters["forwarded"]
        assert forwarded[str(spec.dhcp_address.ip)] == forwarded[str(spec.pxe_address.ip)] >= 5
        assert (
            sum(counters["delivered"].values()) >= 6
        )  # 2 OFFERs + ACK (pxe), OFFER + ACK, BOOTP reply
        assert counters["dropped"] == {} and counters["core_errors"] == 0
        assert counters["agent_info_added"] == counters["requests"]

        # Option 82 at the server, with the client LAN as circuit-id; not at the clients.
        at_server = [m for port, m in _dhcp_messages(lab.workdir / "cap-dhcp.pcap")
                     if port == 67 and m.op == Op.BOOTREQUEST]
        assert {m.mac for m in at_server} >= {pxe.mac, udhcpc.mac, bootp.mac}
        for message in at_server:
            agent = message.get(Opt.RELAY_AGENT_INFO)
            assert agent is not None, (
                f"request from {message.mac} reached the server without option 82"
            )
            assert AgentInfo.decode(agent).circuit_id in (b"lan-a", b"lan-b")
        for name in ("cap-bootp", "cap-udhcpc"):
            replies = [
                m
                for port, m in _dhcp_messages(lab.workdir / f"{name}.pcap")
                if m.op == Op.BOOTREPLY
            ]
            assert replies, f"{name}: no reply captured at the client"
            assert all(not m.has(Opt.RELAY_AGENT_INFO) for m in replies)
    finally:
        lab.down()
    assert _namespaces(spec.prefix) == []
    assert not [pid for pid in pids if alive(pid)], "processes outlived the lab"


def _assert_booted_to_the_kernel(lab: Lab, client: ClientSpec, address: str | None) -> None:
    """The report the client's kernel wrote names its MAC, chain and the address the DHCP server
    leased it; the PXE host served it the boot files and the kernel in order, and took the
    report as an upload."""
    reported = report(lab.workdir, client)
    assert reported is not None, f"no report from {client.name}"
    assert reported["mac"] == client.mac and reported["chain"] == client.chain
    # Firmware, iPXE and kernel may each lease an address (UEFI PXE sends a client identifier).
    leased = {row["address"] for row in leases(lab) if row["mac"] == client.mac}
    assert reported["address"] == address and address in leased
    assert reported["dhcp_server"] == str(lab.spec.dhcp_address.ip)
    assert reported["router"] == str(lab.spec.subnet(client.subnet).router.ip)
    mine = [e for e in _transfers(lab) if str(e.get("client", "")).split(":")[0] in leased]
    completed = {e["client"] for e in mine
                 if e["event"] == "tftp.transfer.ended" and e["outcome"] == "completed"}
    # Each file once, completed (OVMF first asks for the size only, and ends that transfer).
    names = [(e["direction"], e["filename"]) for e in mine
             if e["event"] == "tftp.transfer.started" and e["client"] in completed]
    first = {"bios-ipxe": [], "bios-undionly": ["undionly.kpxe"], "uefi-pxe": ["ipxe.efi"],
             "uefi-http": []}
    script = f"boot-{client.mac.replace(':', '-')}.ipxe"
    assert names == [("read", f) for f in (*first[client.chain], "boot.ipxe", script)] + [
        ("write", f"report-{client.mac.replace(':', '-')}")]
    # iPXE loads the kernel and the initramfs from the PXE host's HTTP server, whole; OVMF's
    # HTTP boot fetched ipxe.efi from it before (HEAD, then GET).
    fetched = [(e["method"], e["path"], e["status"], e["bytes"]) for e in _pxe_events(lab)
               if e["event"] == "http.request" and str(e.get("client")) in leased]
    served = lab.workdir / "tftp"
    efi = (served / "ipxe.efi").stat().st_size
    assert fetched == ([("HEAD", "/ipxe.efi", 200, 0), ("GET", "/ipxe.efi", 200, efi)]
                       if client.chain == "uefi-http" else []) + [
        ("GET", f"/{name}", 200, (served / name).stat().st_size)
        for name in ("vmlinuz", "initrd.gz")], fetched


@pytest.mark.parametrize("chain", ["bios-undionly", "uefi-pxe", "uefi-http"])
def test_a_firmware_chain_boots_a_kernel_that_reports_back(spec: LabSpec, chain: str) -> None:
    """Chains 2, 3 and 4 (chain 1, the NIC's iPXE ROM, is the demo's client above): the QEMU client
    alone, through boothop-relay, to a running kernel whose report arrives at the PXE host."""
    qemu = dataclasses.replace(next(c for c in spec.clients if c.kind == "pxe"), chain=chain)
    lab = Lab(dataclasses.replace(spec, clients=(qemu,)))
    try:
        lab.up()
        result = lab.boot(qemu)
        assert result.ok, result.detail
        _assert_booted_to_the_kernel(lab, qemu, result.address)
        assert result.boot_file == ("undionly.kpxe" if chain == "bios-undionly" else "ipxe.efi")
        _assert_timeline_in_order(result.timeline)
    finally:
        lab.down()
    assert _namespaces(spec.prefix) == []


def _assert_timeline_in_order(timeline: dict[str, float | None]) -> None:
    """Every step of a boot was seen, in the order a boot takes them."""
    steps = [timeline[k] for k in ("dhcp", "boot", "kernel", "report")]
    seen = [step for step in steps if step is not None]
    assert seen == steps and seen == sorted(seen), timeline


def test_uefi_http_boot_over_ipv6_boots_a_kernel_that_leases_by_dhcpv6_and_reports(
        spec: LabSpec) -> None:
    """Chain 5: OVMF's HTTP boot over IPv6 through boothop-relay's DHCPv6 relay: the firmware,
    iPXE and the kernel (dhcpcd) each lease an address from the DHCPv6 server on the other
    subnet, everything comes by HTTP over IPv6 from the PXE host, and the kernel's report (an
    HTTP request) names the address it leased."""
    qemu = dataclasses.replace(next(c for c in spec.clients if c.kind == "pxe"),
                               chain="uefi-http6")
    lab = Lab(dataclasses.replace(spec, clients=(qemu,)))
    try:
        lab.up()
        result = lab.boot(qemu)
        assert result.ok, result.detail
        reported = report(lab.workdir, qemu)
        assert reported is not None and reported["chain"] == "uefi-http6"
        prefix = ipv6_twin(spec.subnet(qemu.subnet).router).network
        # The DHCPv6 bindings of the MAC (the relay's RFC 6939 option names it): the
        # firmware's, iPXE's and the kernel's; the kernel reported the one it holds.
        bindings = {row["address"] for row in leases(lab)
                    if row.get("family") == 6 and row.get("mac") == qemu.mac}
        assert reported["address"] == result.address and result.address in bindings
        assert len(bindings) >= 3 and all(IPv6Address(a) in prefix for a in bindings)
        assert IPv6Address(reported["router"]).is_link_local
        # Everything by HTTP over IPv6 from the leased addresses, in order; no TFTP at all.
        fetched = [(e["method"], e["path"].split("/")[1], e["status"]) for e in _pxe_events(lab)
                   if e["event"] == "http.request"]
        assert all(e["client"] in bindings for e in _pxe_events(lab)
                   if e["event"] == "http.request"), _pxe_events(lab)
        script = f"boot-{qemu.mac.replace(':', '-')}.ipxe"
        assert fetched == [("HEAD", "ipxe.efi", 200), ("GET", "ipxe.efi", 200)] + [
            ("GET", name, 200) for name in ("boot6.ipxe", script, "vmlinuz", "initrd.gz",
                                            "dhcp6.gz")] + [
            ("GET", f"report-{qemu.mac.replace(':', '-')}", 404)], fetched
        assert _transfers(lab) == []
        # The relay relayed DHCPv6 both ways and dropped nothing.
        counters = relay_counters(lab.workdir)
        assert counters is not None
        relay6 = counters["dhcpv6"]
        assert relay6["requests"] >= 6 and sum(relay6["delivered"].values()) >= 6, relay6
        assert relay6["dropped"] == {} and relay6["core_errors"] == 0
        _assert_timeline_in_order(result.timeline)
    finally:
        lab.down()
    assert _namespaces(spec.prefix) == []


def test_demo_with_isc_dhcrelay_boots_every_client(spec: LabSpec, tmp_path: Path) -> None:
    _require("dhcrelay")
    run_dir = tmp_path / "run"
    results, report = run_demo(spec.with_relay("dhcrelay"), run_dir)
    assert all(r.ok for r in results), report
    pxe = next(r for r in results if r.kind == "pxe")
    assert pxe.boot_file == "boot.ipxe" and pxe.seconds is not None and pxe.bytes_downloaded > 0
    assert "relay = dhcrelay" in report and "TFTP RRQ boot.ipxe" in report
    assert "<svg" in (run_dir / "report.html").read_text()
    assert (run_dir / "logs" / "pxe.log").is_file()
    assert _namespaces(spec.prefix) == []


def test_down_leaves_a_namespace_of_the_prefix_it_did_not_create(spec: LabSpec) -> None:
    """A namespace named like the lab's but made by someone else survives ``down``, and ``up``
    will not build into one that has the name of a lab host."""
    handmade, squatter = f"{spec.prefix}-handmade", f"{spec.prefix}-router"
    lab = Lab(spec)
    try:
        subprocess.run(["ip", "netns", "add", handmade], check=True, timeout=10)
        lab.up()
        made = set(lab.status()["namespaces"])  # type: ignore[arg-type]
        assert made == set(lab.topology.namespaces()) and handmade not in made
        lab.down()
        assert _namespaces(spec.prefix) == [handmade]
        subprocess.run(["ip", "netns", "add", squatter], check=True, timeout=10)
        with pytest.raises(TopologyError, match=squatter):
            lab.up()
        assert sorted(_namespaces(spec.prefix)) == sorted([handmade, squatter])
    finally:
        lab.down()
        for name in (handmade, squatter):
            subprocess.run(
                ["ip", "netns", "delete", name], check=False, capture_output=True, timeout=10
            )
    assert _namespaces(spec.prefix) == []


def test_scenario_bootp_reconcile_keeps_the_reservation(spec: LabSpec) -> None:
    lines: list[str] = []
    result = run_scenario("bootp-reconcile", spec, lines.append)
    data = result.data
    assert result.ok, "\n".join(lines)
    assert data["deleted"], "the lease database was not there to delete"
    assert "restored" in data["reconcile"]["output"]
    reserved = [r for r in data["leases_reconciled"] if r["address"] == data["reserved"]]
    assert reserved and reserved[0]["mac"] == data["mac"] and reserved[0]["state"] == "reserved"
    assert data["second"]["address"] == data["reserved"]
    after = [r for r in data["leases_after"] if r["address"] == data["reserved"]]
    assert after[0]["mac"] == data["mac"] and after[0]["state"] == "bound"
    assert _namespaces(spec.prefix) == []


def test_scenario_pxe_misconfig_fails_like_the_report_and_the_fix_boots(spec: LabSpec) -> None:
    lines: list[str] = []
    result = run_scenario("pxe-misconfig", spec, lines.append)
    output = "\n".join(lines)
    data = result.data
    assert result.ok, output
    dhcp, pxe = str(spec.dhcp_address.ip), str(spec.pxe_address.ip)
    # A: the spec client's PXE-E55 after asking the DHCP server on 4011; the warnings shown.
    a = data["a"]
    assert a["client"]["error"].startswith("PXE-E55")
    assert any("PXE-E55" in w for w in a["check"]["warnings"])
    assert a["relay_warnings"] and a["relay_warnings"][0]["server"] == dhcp
    assert WARNING_EVENT in output and "PXE-E55" in output
    # A, with the real iPXE: it also asks the DHCP server on 4011 and does not boot.
    assert a["ipxe"]["ran"] and not a["ipxe"]["booted"]
    assert (
        a["ipxe"]["requests_4011"].get(dhcp, 0) >= 1
        and a["ipxe"]["tftp_requests_at_pxe_host"] == []
    )
    # A, with OVMF's UEFI PXE client: from one run to the next it asks the DHCP server on 4011
    # or refuses every offer (PXE-E16); either way it stops with a PXE error and never boots.
    assert not a["ovmf"]["booted"]
    assert a["ovmf"]["tftp_requests_at_pxe_host"] == [] and pxe not in a["ovmf"]["requests_4011"]
    assert any("PXE-E" in line for line in a["ovmf"]["console"])
    # B: boot file from the PXE server on 4011, downloaded whole; both firmware boot a kernel.
    b = data["b"]
    assert b["check"]["warnings"] == []
    assert (
        b["client"]["booted"]
        and b["client"]["tftp_server"] == pxe
        and b["client"]["bytes"] == boot_program("undionly.kpxe").stat().st_size
    )
    assert b["ipxe"]["booted"] and b["ovmf"]["booted"]
    assert b["ovmf"]["requests_4011"] == {pxe: 1} and b["ovmf"]["boot_file"] == "ipxe.efi"
    assert "A: DHCP server has 60/66/67" in output
    assert _namespaces(spec.prefix) == []


def test_pxe_client_prints_its_steps_as_json(spec: LabSpec) -> None:
    """The client on its own, against the fixed lab: one JSON object, every step, exit 0."""
    from boothop.relay.lab.scenarios import with_spec_client

    full, client = with_spec_client(spec)
    lab = Lab(full)
    try:
        lab.up()
        (lab.workdir / "tftp" / "undionly.kpxe").write_bytes(b"x" * 1000)
        completed = lab.runner.run(
            lab.topology.netns(client.name),
            [
                sys.executable,
                "-m",
                "boothop.relay.lab.pxe_client",
                "--ifname",
                "eth0",
                "--mac",
                client.mac,
                "--offer-wait",
                "1",
            ],
            timeout=30,
        )
        result = json.loads(completed.stdout)
        assert completed.returncode == 0, result
        assert [s["step"] for s in result["steps"]] == [
            "discover", "offer", "offer", "choose", "request", "ack", "configure", "boot-plan",
            "boot-request", "boot-ack", "tftp"]
        assert result["bytes"] == 1000 and result["boot_file"] == "undionly.kpxe"
    finally:
        lab.down()
