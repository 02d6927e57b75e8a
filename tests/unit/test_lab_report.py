"""The lab's report: the client table and the ladder diagram, from small synthetic logs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from boothop.relay.lab.report import (
    LANES,
    Arrow,
    comparison_table,
    ladder_svg,
    ladder_text,
    pxe_host_arrows,
    read_json_lines,
    relay_arrows,
    render,
    report_text,
)
from boothop.relay.lab.results import ClientResult
from boothop.relay.lab.servers import boot_seen, client_host, event_time, report
from boothop.relay.lab.spec import parse_lab

MAC = "52:54:00:91:01:01"
DHCP, PXE = "10.91.0.10", "10.91.0.20"
LANE_OF = {DHCP: "dhcp", PXE: "pxe"}


def forwarded(kind: str, server: str) -> dict[str, object]:
    return {"event": "relay.request.forwarded", "type": kind, "chaddr": MAC, "giaddr": "0.0.0.0",
            "forwarded_giaddr": "10.91.1.1", "server": server, "iface": "lan-a"}


def delivered(kind: str, source: str, mode: str) -> dict[str, object]:
    return {"event": "relay.reply.delivered", "type": kind, "chaddr": MAC, "source": f"{source}:67",
            "mode": mode, "ifname": "lan-a"}


RELAY_LOG = [
    {"event": "relay.started", "helpers": [DHCP, PXE]},
    forwarded("DISCOVER", DHCP),
    forwarded("DISCOVER", PXE),
    delivered("OFFER", DHCP, "unicast-chaddr"),
    delivered("OFFER", PXE, "broadcast"),
    forwarded("REQUEST", DHCP),
    forwarded("REQUEST", PXE),
    delivered("ACK", DHCP, "unicast-chaddr"),
]
PXE_LOG = [
    {"event": "pxe.reply.sent", "to": "10.91.1.100:68", "port": 4011},
    {"event": "tftp.transfer.started", "client": "10.91.1.100:2070", "filename": "boot.ipxe"},
    {
        "event": "tftp.transfer.ended",
        "client": "10.91.1.100:2070",
        "bytes": 142,
        "outcome": "completed",
    },
    {"event": "tftp.transfer.started", "client": "10.91.1.200:2071", "filename": "other"},
    {"event": "http.request", "client": "10.91.1.100", "method": "GET", "path": "/ipxe.efi",
     "status": 200, "bytes": 850528},
    {"event": "http.request", "client": "10.91.1.200", "method": "GET", "path": "/other",
     "status": 404},
]


def spec():
    return parse_lab({
        "prefix": "bhlt0000",
        "servers": {"router": "10.91.0.1/24", "dhcp": f"{DHCP}/24", "pxe": f"{PXE}/24"},
        "subnet": [{"name": "a", "router": "10.91.1.1/24", "pool": ["10.91.1.100", "10.91.1.199"]}],
        "client": [{"name": "pxe1", "kind": "pxe", "subnet": "a", "mac": MAC},
                   {"name": "dhcp1", "kind": "udhcpc", "subnet": "a", "mac": "02:00:00:91:01:02"}],
    }, "lab.toml")


def test_relay_arrows_follow_the_exchange_in_order() -> None:
    arrows = relay_arrows(RELAY_LOG, LANE_OF)
    assert [(a.source, a.target, a.label) for a in arrows] == [
        ("client", "relay", "DISCOVER"),
        ("relay", "dhcp", "DISCOVER giaddr=10.91.1.1"),
        ("relay", "pxe", "DISCOVER giaddr=10.91.1.1"),
        ("dhcp", "relay", "OFFER"),
        ("relay", "client", "OFFER unicast-chaddr"),
        ("pxe", "relay", "OFFER"),
        ("relay", "client", "OFFER broadcast"),
        ("client", "relay", "REQUEST"),
        ("relay", "dhcp", "REQUEST giaddr=10.91.1.1"),
        ("relay", "pxe", "REQUEST giaddr=10.91.1.1"),
        ("dhcp", "relay", "ACK"),
        ("relay", "client", "ACK unicast-chaddr"),
    ]


def test_relay_arrows_fall_back_to_the_logged_giaddr() -> None:
    event = {k: v for k, v in forwarded("DISCOVER", DHCP).items() if k != "forwarded_giaddr"}
    assert relay_arrows([event], LANE_OF)[1].label == "DISCOVER giaddr=0.0.0.0"


def test_pxe_host_arrows_keep_only_the_client_address() -> None:
    arrows = pxe_host_arrows(PXE_LOG, {"10.91.1.100"})
    assert [(a.source, a.target, a.label) for a in arrows] == [
        ("client", "pxe", "REQUEST :4011"),
        ("pxe", "client", "ACK :4011"),
        ("client", "pxe", "TFTP RRQ boot.ipxe"),
        ("pxe", "client", "TFTP 142 bytes completed"),
        ("client", "pxe", "HTTP GET /ipxe.efi"),
        ("pxe", "client", "HTTP 200 850528 bytes"),
    ]
    assert pxe_host_arrows(PXE_LOG, {None}) == []
    # An IPv6 client's HTTP requests, by its whole address (it has more than one colon).
    ipv6 = [{"event": "http.request", "client": client, "method": "GET", "path": "/vmlinuz",
             "status": 200, "bytes": 9, "timestamp": "2026-11-29T22:00:01Z"}
            for client in ("fd00:a5a:200::1003", "fd00:a5a:200::1009")]
    assert [a.label for a in pxe_host_arrows(ipv6, {"fd00:a5a:200::1003"})] == [
        "HTTP GET /vmlinuz", "HTTP 200 9 bytes"]


def test_ladder_text_draws_each_arrow_between_its_lanes() -> None:
    width = 20
    text = ladder_text(
        [Arrow(0, "client", "relay", "DISCOVER"), Arrow(1, "pxe", "relay", "OFFER")], width
    )
    header, rails, right, left = text.splitlines()
    assert header.split() == list(LANES)
    rail = [i for i, c in enumerate(rails) if c == "|"]
    assert rail == [i * width + (width - 1) // 2 for i in range(len(LANES))]
    lane = dict(zip(LANES, rail, strict=True))
    # client -> relay: leaves the client's rail, the head lands on the relay's rail.
    assert right[lane["client"]] == "|" and right[lane["relay"]] == ">"
    assert set(right[lane["client"] + 2:lane["relay"]]) <= set("- DISCOVER")
    assert "DISCOVER" in right[lane["client"]:lane["relay"]]
    # pxe -> relay: the head is beside the relay's rail; the body hides the dhcp rail and
    # ends on the pxe lane's rail.
    assert left[lane["relay"]] == "|" and left[lane["relay"] + 2] == "<"
    assert "OFFER" in left[lane["relay"]:lane["pxe"]] and "|" not in left[lane["relay"] + 1:]
    assert len(left) == lane["pxe"] + 1 and left.endswith("-")


def test_ladder_text_without_events_says_so() -> None:
    assert ladder_text([]) == "(no exchange recorded)"


def test_ladder_svg_escapes_labels() -> None:
    svg = ladder_svg([Arrow(0, "client", "relay", "<odd & label>")], "t<i>tle")
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert "&lt;odd &amp; label&gt;" in svg and "t&lt;i&gt;tle" in svg
    assert svg.count("marker-end") == 1


def test_report_table_lists_clients_and_failures() -> None:
    results = [
        ClientResult("pxe1", "pxe", "a", MAC, "10.91.1.100", "boot.ipxe", 176, 2.84, True),
        ClientResult("dhcp1", "udhcpc", "a", "02:00:00:91:01:02", detail="no lease", ok=False),
    ]
    lines = report_text(spec(), results).splitlines()
    assert lines[0] == "boothop lab 'bhlt0000': relay = boothop"
    assert lines[1].split() == [
        "client",
        "kind",
        "subnet",
        "address",
        "boot",
        "file",
        "bytes",
        "seconds",
        "result",
    ]
    assert lines[2].split() == ["pxe1", "pxe", "a", "10.91.1.100", "boot.ipxe", "176", "2.8", "ok"]
    assert lines[3].split() == ["dhcp1", "udhcpc", "a", "-", "-", "-", "-", "FAILED"]
    assert lines[4] == "  dhcp1: no lease"


def test_render_reads_the_logs_and_writes_html(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "relay.log").write_text(
        "not json\n" + "\n".join(json.dumps(e) for e in RELAY_LOG) + "\n{broken\n"
    )
    (logs / "pxe.log").write_text("\n".join(json.dumps(e) for e in PXE_LOG))
    assert len(read_json_lines(logs / "relay.log")) == len(RELAY_LOG)
    results = [ClientResult("pxe1", "pxe", "a", MAC, "10.91.1.100", "boot.ipxe", 142, 2.0, True),
               ClientResult("dhcp1", "udhcpc", "a", "02:00:00:91:01:02", "10.91.1.101", ok=True)]
    html_path = tmp_path / "report.html"
    text = render(spec(), tmp_path, results, html_path)
    pxe_part = text.split("pxe1 (pxe")[1].split("dhcp1 (udhcpc")[0]
    assert "as the relay and the PXE host saw it" in pxe_part
    assert "DISCOVER giaddr=10.91.1.1" in pxe_part and "TFTP RRQ boot.ipxe" in pxe_part
    assert pxe_part.count("OFFER") == 4  # two OFFERs, each server -> relay and relay -> client
    assert "(no exchange recorded)" in text.split("dhcp1 (udhcpc")[1]
    page = html_path.read_text()
    assert page.count("<svg") == 2 and "boothop lab bhlt0000" in page
    assert f"HTML report: {html_path.resolve()}" in text


def _chain_result(relay_seconds: float | None) -> ClientResult:
    return ClientResult("pxe1", "pxe", "a", MAC, address="10.91.1.100",
                        ok=relay_seconds is not None, seconds=relay_seconds, chain="uefi-pxe",
                        timeline={"dhcp": 3.25, "boot": 4.0, "kernel": 30.5,
                                  "report": relay_seconds})


def test_the_chain_table_has_the_firmware_address_and_each_step() -> None:
    text = report_text(spec(), [_chain_result(61.04)])
    table = text[text.index("Boot chains"):].splitlines()
    assert table[1].split() == ["client", "chain", "firmware", "address", "DHCP", "boot", "file",
                                "kernel", "report"]
    assert "OVMF PXE (IPv4), ipxe.efi" in table[2]
    assert table[2].split()[-5:] == ["10.91.1.100", "3.2", "4.0", "30.5", "61.0"]


def test_the_comparison_puts_each_clients_relays_side_by_side() -> None:
    udhcpc = ClientResult("dhcp1", "udhcpc", "b", "02:00:00:91:02:01", ok=True, seconds=0.8)
    rows = comparison_table({"boothop": [_chain_result(61.0), udhcpc],
                             "dhcrelay": [_chain_result(None), udhcpc]})
    cells = [row.split() for row in rows[1:]]
    assert [(c[0], c[2]) for c in cells] == [
        ("dhcp1", "boothop"), ("dhcp1", "dhcrelay"), ("pxe1", "boothop"), ("pxe1", "dhcrelay")]
    assert cells[2][-1] == "61.0" and cells[3][-1] == "FAILED"
    assert cells[0][3:] == ["-", "-", "-", "0.8"]


def test_boot_seen_takes_the_boot_file_fetched_first_by_http_or_tftp(tmp_path: Path) -> None:
    """A UEFI HTTP boot: ipxe.efi by HTTP (HEAD, then GET), then iPXE's files by TFTP."""
    logs = tmp_path / "logs"
    logs.mkdir()
    at = "2026-11-29T22:00:{:02d}Z".format
    (logs / "dhcp.log").write_text(json.dumps(
        {"event": "server.ack", "chaddr": MAC, "yiaddr": "10.91.1.100", "timestamp": at(1)}))
    tftp = [
        {"event": "tftp.transfer.started", "client": "10.91.1.100:2070", "filename": "initrd.gz",
         "direction": "read", "timestamp": at(9)},
        {"event": "tftp.transfer.ended", "client": "10.91.1.100:2070", "outcome": "completed",
         "bytes": 1000, "timestamp": at(12)},
    ]
    http = [{"event": "http.request", "client": "10.91.1.100", "method": method,
             "path": "/ipxe.efi", "status": 200, "bytes": size, "timestamp": at(second)}
            for method, size, second in (("HEAD", 0, 3), ("GET", 850528, 4))]
    (logs / "pxe.log").write_text("\n".join(json.dumps(e) for e in [*tftp, *http]))
    client = spec().clients[0]
    powered_on = event_time({"timestamp": at(0)})
    assert powered_on is not None
    seen = boot_seen(tmp_path, client, "10.91.1.100", powered_on)
    assert (seen["boot_file"], seen["bytes"]) == ("ipxe.efi", 851528)
    assert (seen["dhcp"], seen["boot"], seen["kernel"]) == (1.0, 4.0, 12.0)


def test_an_ipv6_boot_is_timed_by_its_dhcpv6_bindings_and_its_report_request(
        tmp_path: Path) -> None:
    """uefi-http6: the DHCPv6 reply that gave one of the MAC's bindings, the files by HTTP
    from IPv6 addresses, and the kernel's report, an HTTP request the PXE host answers 404."""
    logs = tmp_path / "logs"
    logs.mkdir()
    at = "2026-11-29T22:00:{:02d}Z".format
    firmware, kernel = "fd00:a5a:100::1000", "fd00:a5a:100::1002"
    (logs / "dhcp.log").write_text("\n".join(json.dumps(e) for e in [
        {"event": "server6.reply", "kind": "relay_repl", "addresses": ["fd00:a5a:100::99"],
         "timestamp": at(1)},  # another client's
        {"event": "server6.reply", "kind": "relay_repl", "addresses": [firmware],
         "timestamp": at(2)}]))
    report_path = (f"/report-{MAC.replace(':', '-')}/chain=uefi-http6/mac={MAC}/"
                   f"address={kernel}/router=fe80::1")
    (logs / "pxe.log").write_text("\n".join(json.dumps(e) for e in [
        {"event": "http.request", "client": firmware, "method": "GET", "path": "/ipxe.efi",
         "status": 200, "bytes": 100, "timestamp": at(5)},
        {"event": "http.request", "client": "fd00:a5a:100::1001", "method": "GET",
         "path": "/initrd.gz", "status": 200, "bytes": 10, "timestamp": at(9)},
        {"event": "http.request", "client": kernel, "method": "GET", "path": report_path,
         "status": 404, "bytes": 0, "timestamp": at(20)}]))
    client = dataclasses.replace(spec().clients[0], chain="uefi-http6")
    powered_on = event_time({"timestamp": at(0)})
    assert powered_on is not None
    seen = boot_seen(tmp_path, client, kernel, powered_on,
                     frozenset({firmware, "fd00:a5a:100::1001", kernel}))
    assert (seen["boot_file"], seen["bytes"]) == ("ipxe.efi", 110)
    assert (seen["dhcp"], seen["boot"], seen["kernel"], seen["report"]) == (2.0, 5.0, 9.0, 20.0)
    assert report(tmp_path, client) == {"chain": "uefi-http6", "mac": MAC, "address": kernel,
                                        "router": "fe80::1"}
    assert client_host("10.91.1.100:2070") == "10.91.1.100" and client_host(kernel) == kernel
