"""The lab's report: per client what it got, and a ladder diagram of the exchange.

The ladder is drawn from the relay's JSON log (what it forwarded and delivered) and the PXE host's
log (the port 4011 request and the TFTP transfers, which are routed, not relayed).
"""

from __future__ import annotations

import html
import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .results import ClientResult
from .servers import client_host, event_time
from .spec import CHAINS, LabSpec

LANES = ("client", "relay", "dhcp", "pxe")


@dataclass(frozen=True)
class Arrow:
    time: float
    source: str
    target: str
    label: str


def read_json_lines(path: Path) -> list[dict[str, object]]:
    events = []
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return []
    for line in lines:
        line = line.strip()
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return events


def relay_arrows(
    events: Iterable[dict[str, object]], lane_of_server: dict[str, str]
) -> list[Arrow]:
    """Arrows for what the relay forwarded (client -> relay -> server) and delivered back."""
    arrows: list[Arrow] = []
    for index, event in enumerate(events):
        name = event.get("event")
        message = str(event.get("type") or "?")
        when = _when(event, index)
        if name == "relay.request.forwarded":
            server = lane_of_server.get(str(event.get("server")), "dhcp")
            previous = arrows[-1] if arrows else None
            if (
                previous is None
                or previous.target == "relay"
                or previous.label.split()[0] != message
            ):
                arrows.append(Arrow(when, "client", "relay", message))
            arrows.append(Arrow(when, "relay", server, f"{message} giaddr={_giaddr(event)}"))
        elif name == "relay.reply.delivered":
            server = lane_of_server.get(str(event.get("source", "")).split(":")[0], "dhcp")
            arrows.append(Arrow(when, server, "relay", message))
            arrows.append(Arrow(when, "relay", "client", f"{message} {event.get('mode')}"))
    return arrows


def _giaddr(event: dict[str, object]) -> object:
    """The giaddr as forwarded: the relay's own when the client's was 0.0.0.0."""
    return event.get("forwarded_giaddr") or event.get("giaddr")


def _when(event: dict[str, object], index: int) -> float:
    """An event's time: its log timestamp (seconds), else its place in the log."""
    when = event_time(event)
    return float(index) if when is None else when


def ladder_text(arrows: Sequence[Arrow], width: int = 30) -> str:
    if not arrows:
        return "(no exchange recorded)"
    header = "".join(lane.center(width) for lane in LANES)
    lines = [header, "".join("|".center(width) for _ in LANES)]
    for arrow in arrows:
        a, b = LANES.index(arrow.source), LANES.index(arrow.target)
        left, right = min(a, b), max(a, b)
        cells = ["|".center(width) for _ in LANES]
        row = "".join(cells)
        start = left * width + width // 2
        end = right * width + width // 2
        body = "-" * (end - start - 1)
        label = f" {arrow.label} "
        if len(label) < len(body):
            offset = (len(body) - len(label)) // 2
            body = body[:offset] + label + body[offset + len(label):]
        body = body[:-1] + ">" if b > a else "<" + body[1:]
        row = row[: start + 1] + body + row[end:]
        lines.append(row.rstrip())
    return "\n".join(lines)


def ladder_svg(arrows: Sequence[Arrow], title: str) -> str:
    lane_x = {lane: 100 + i * 220 for i, lane in enumerate(LANES)}
    height = 90 + 28 * len(arrows)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{lane_x[LANES[-1]] + 120}" '
        f'height="{height}" '
        'font-family="monospace" font-size="12">',
        '<defs><marker id="a" markerWidth="8" markerHeight="8" refX="8" refY="4" orient="auto">'
        '<path d="M0,0 L8,4 L0,8 z"/></marker></defs>',
        f'<text x="10" y="18" font-weight="bold">{html.escape(title)}</text>',
    ]
    for lane, x in lane_x.items():
        parts.append(f'<text x="{x}" y="45" text-anchor="middle" font-weight="bold">{lane}</text>')
        parts.append(f'<line x1="{x}" y1="52" x2="{x}" y2="{height - 10}" stroke="#888"/>')
    for i, arrow in enumerate(arrows):
        y = 75 + 28 * i
        x1, x2 = lane_x[arrow.source], lane_x[arrow.target]
        parts.append(
            f'<line x1="{x1}" y1="{y}" x2="{x2}" y2="{y}" stroke="#246" marker-end="url(#a)"/>'
        )
        parts.append(
            f'<text x="{(x1 + x2) / 2}" y="{y - 4}" text-anchor="middle">'
            f"{html.escape(arrow.label)}</text>"
        )
    parts.append("</svg>")
    return "\n".join(parts)


def report_text(spec: LabSpec, results: Sequence[ClientResult]) -> str:
    rows = [("client", "kind", "subnet", "address", "boot file", "bytes", "seconds", "result")]
    for r in results:
        rows.append((
            r.name, r.kind, r.subnet, r.address or "-", r.boot_file or "-",
            str(r.bytes_downloaded) if r.bytes_downloaded else "-",
            f"{r.seconds:.1f}" if r.seconds is not None else "-",
            "ok" if r.ok else "FAILED",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [f"boothop lab {spec.prefix!r}: relay = {spec.relay}"]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    for r in results:
        if r.detail and not r.ok:
            lines.append(f"  {r.name}: {r.detail}")
    chains = [r for r in results if r.chain is not None]
    if chains:
        lines += ["", "Boot chains (seconds from power-on; the kernel's report is the proof):"]
        lines += timing_table(chains)
    return "\n".join(lines)


def timing_table(results: Sequence[ClientResult]) -> list[str]:
    """One row per QEMU client: chain, firmware, address, and the seconds from power-on to the
    firmware's DHCP ACK, the boot file, the kernel (and initramfs) downloaded, the report."""

    rows: list[tuple[str, ...]] = [
        ("client", "chain", "firmware", "address", "DHCP", "boot file", "kernel", "report")
    ]
    rows += [
        (r.name, r.chain or "-", CHAINS.get(r.chain or "", "-"), r.address or "-",
         *(_seconds(r.timeline.get(k)) for k in ("dhcp", "boot", "kernel", "report")))
        for r in results
    ]
    return _columns(rows)


def comparison_table(by_relay: Mapping[str, Sequence[ClientResult]]) -> list[str]:
    """The same clients booted through each relay: one row per client and relay."""
    rows: list[tuple[str, ...]] = [
        ("client", "chain", "relay", "DHCP", "boot file", "kernel", "success")
    ]
    for relay, results in by_relay.items():
        for r in results:
            rows.append((r.name, r.chain or r.kind, relay,
                         *(_seconds(r.timeline.get(k)) for k in ("dhcp", "boot", "kernel")),
                         _seconds(r.seconds) if r.ok else "FAILED"))
    rows[1:] = sorted(rows[1:], key=lambda row: (row[0], row[2]))
    return _columns(rows)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _columns(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in rows]


def report_html(spec: LabSpec, results: Sequence[ClientResult], ladders: dict[str, str]) -> str:
    table = html.escape(report_text(spec, results))
    body = [f"<h1>boothop lab {html.escape(spec.prefix)}</h1>", f"<pre>{table}</pre>"]
    for name, svg in ladders.items():
        body.append(f"<h2>{html.escape(name)}</h2>{svg}")
    return (
        "<!doctype html><html><meta charset='utf-8'><title>boothop lab</title><body>"
        + "".join(body)
        + "</body></html>"
    )


def pxe_host_arrows(
    events: Iterable[dict[str, object]], client_addresses: Collection[str | None]
) -> list[Arrow]:
    """The routed part of a PXE boot, as the PXE host saw it: port 4011, TFTP and HTTP, from any of
    the client's addresses (firmware, iPXE and kernel may each lease one)."""
    arrows = []
    for index, event in enumerate(events):
        when = _when(event, index)
        name = event.get("event")
        peer = client_host(str(event.get("to") or event.get("client") or ""))
        if peer not in client_addresses:
            continue
        if name == "pxe.reply.sent" and event.get("port") == 4011:
            arrows.append(Arrow(when, "client", "pxe", "REQUEST :4011"))
            arrows.append(Arrow(when, "pxe", "client", "ACK :4011"))
        elif name == "tftp.transfer.started":
            request = "WRQ" if event.get("direction") == "write" else "RRQ"
            arrows.append(Arrow(when, "client", "pxe", f"TFTP {request} {event.get('filename')}"))
        elif name == "tftp.transfer.ended":
            arrows.append(
                Arrow(
                    when,
                    "pxe",
                    "client",
                    f"TFTP {event.get('bytes')} bytes {event.get('outcome')}",
                )
            )
        elif name == "http.request":
            arrows.append(Arrow(when, "client", "pxe", f"HTTP {event.get('method')} "
                                                       f"{event.get('path')}"))
            arrows.append(Arrow(when, "pxe", "client", f"HTTP {event.get('status')} "
                                                       f"{event.get('bytes')} bytes"))
    return arrows


def render(
    spec: LabSpec, workdir: Path, results: Sequence[ClientResult], html_path: Path | None
) -> str:
    """The terminal report (table and one ladder per client); also HTML with SVG ladders."""
    lanes = {str(spec.dhcp_address.ip): "dhcp", str(spec.pxe_address.ip): "pxe"}
    relay_events = read_json_lines(workdir / "logs" / "relay.log")
    pxe_events = read_json_lines(workdir / "logs" / "pxe.log")
    dhcp_events = read_json_lines(workdir / "logs" / "dhcp.log")
    text = [report_text(spec, results)]
    ladders = {}
    for result in results:
        mine = [e for e in relay_events if e.get("chaddr") == result.mac]
        leased = {result.address, *result.addresses6} | {
            str(e.get("yiaddr")) for e in dhcp_events
            if e.get("event") == "server.ack" and e.get("chaddr") == result.mac
        }
        # In time order where the logs have times (both daemons' do).
        arrows = sorted(relay_arrows(mine, lanes) + pxe_host_arrows(pxe_events, leased),
                        key=lambda arrow: arrow.time)
        seen = (
            "the relay and the PXE host"
            if spec.relay == "boothop"
            else "the PXE host (dhcrelay logs no packets)"
        )
        title = f"{result.name} ({result.kind}, {result.mac}) as {seen} saw it"
        text += ["", title, ladder_text(arrows)]
        ladders[title] = ladder_svg(arrows, title)
    if html_path is not None:
        html_path.write_text(report_html(spec, results, ladders))
        text += ["", f"HTML report: {html_path.resolve()}"]
    return "\n".join(text)
