"""Forwarding classes end to end: the DHCP server gets everything, the PXE server only PXE clients.

```
 clienta (udhcpc) ──[LAN a]── lana0 ┐                     ┌─ srv0 kea-dhcp4 10.41.100.10
 clientb (PXE ROM) ─[LAN b]── lanb0 ┤ router (boothop-relay) up0 ─┤
                                    ┘                     └─ hlp0 UDP recorder :67 10.41.100.20
```

The relay's file sends every request to kea and, through ``[[class]] vendor_class =
["PXEClient"]``, PXE clients to the recorder too. udhcpc on LAN a leases from kea; the lab's PXE
2.1 client (``relay.lab.pxe_client``) on LAN b gets its address offer from kea (and, with no
proxyDHCP answering, stops with PXE-E53); the recorder holds the PXE client's requests and
nothing of udhcpc's; the relay's metrics count both classes. The lab fixture's namespaces and
processes are removed by PID in its ``finally``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import Lab, need
from routed import GET
from servers import bound_address, read_recorded, start_udhcpc

from boothop.relay.lab.processes import Process, wait_for
from boothop.relay.wire import Opt

pytestmark = pytest.mark.system

METRICS = "127.0.0.1:9467"


def relay_file(lab: Lab, pxe_helpers: list[str] | None = None) -> Path:
    """DHCP server for all; the class "pxe" to ``pxe_helpers`` (default: kea and the PXE
    helper)."""
    helpers = pxe_helpers or [lab.server, lab.helper]
    config = lab.workdir / "relay.toml"
    config.write_text(f"""\
helpers = ["{lab.server}"]
stats_interval = 0
log_format = "json"
metrics = "{METRICS}"

[[interface]]
name = "up0"
role = "upstream"

[[interface]]
name = "lana0"

[[interface]]
name = "lanb0"

[[class]]
name = "pxe"
vendor_class = ["PXEClient"]
helpers = {json.dumps(helpers)}
""")
    return config


def start_relay(lab: Lab, config: Path) -> Process:
    process = lab.runner.start(lab.ns("router"), [need("boothop-relay"), "--config", str(config)],
                               "relay")
    if not wait_for(lambda: scrape(lab) or not process.running(), 15):
        pytest.fail(f"the relay did not start:\n{process.output()}")
    return process


def scrape(lab: Lab) -> str:
    result = lab.runner.run(lab.ns("router"), [sys.executable, "-c", GET,
                                               f"http://{METRICS}/metrics"], timeout=10)
    return result.stdout if result.returncode == 0 else ""


def sample(text: str, line_start: str) -> float:
    """The value of the first exposition line starting with ``line_start`` (0 if none)."""
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.split()[-1])
    return 0.0


def pxe_boot(lab: Lab, lan: str = "b") -> dict[str, object]:
    """The lab's PXE 2.1 client on a LAN's client host: its JSON result."""
    plan = lab.lans[lan]
    result = lab.runner.run(lab.ns(plan.client_host), [
        sys.executable, "-m", "boothop.relay.lab.pxe_client", "--ifname", "eth0",
        "--mac", plan.client_mac, "--attempts", "2", "--offer-wait", "2"], timeout=60)
    assert result.stdout.strip(), result.stderr
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def test_classes_send_pxe_clients_to_the_pxe_server_and_everyone_to_the_dhcp_server(
        lab: Lab) -> None:
    need("busybox")
    start_relay(lab, relay_file(lab))
    plain, pxe = lab.lans["a"], lab.lans["b"]

    udhcpc, events = start_udhcpc(lab.runner, lab.ns(plain.client_host), "eth0",
                                  lab.workdir / "clients", "udhcpc-a")
    assert wait_for(lambda: bound_address(events) is not None, 30), udhcpc.output()
    assert plain.pool.contains(str(bound_address(events)))

    booted = pxe_boot(lab)
    offers = [s for s in booted["steps"] if s["step"] == "offer"]  # type: ignore[attr-defined]
    # kea offered the PXE client an address from LAN b's pool through the relay ...
    assert any(o["server"] == lab.server and pxe.pool.contains(o["yiaddr"]) for o in offers), \
        booted
    # ... and nobody answered as a PXE server (the recorder never does): PXE-E53.
    assert str(booted.get("error", "")).startswith("PXE-E53"), booted

    # The PXE helper got the PXE client's requests and nothing of the plain client's.
    assert wait_for(lambda: read_recorded(lab.recorded), 5)
    recorded = read_recorded(lab.recorded)
    assert {r.message.mac for r in recorded} == {pxe.client_mac}, recorded
    assert all((r.message.get(Opt.VENDOR_CLASS_ID) or b"").startswith(b"PXEClient")
               for r in recorded)

    metrics = scrape(lab)
    relayed_pxe = sample(metrics, 'boothop_relay_class_relayed_total{class="pxe"}')
    relayed_default = sample(metrics, 'boothop_relay_class_relayed_total{class="default"}')
    assert relayed_pxe >= 2 and relayed_default >= 2, metrics  # DISCOVER + REQUEST each
    # kea got every relayed request, the recorder only the PXE class's.
    assert sample(metrics, f'boothop_relay_forwarded_total{{server="{lab.server}"}}') == \
        relayed_pxe + relayed_default
    assert sample(metrics, f'boothop_relay_forwarded_total{{server="{lab.helper}"}}') == \
        relayed_pxe == len(recorded)


def test_seed2_a_class_sending_pxe_clients_to_no_pxe_server_is_logged_and_check_says_so(
        lab: Lab) -> None:
    """The class leaves the PXE server out and kea offers no boot information: the PXE client
    stops with PXE-E53, the relay logs relay.pxe.no_boot_server once it has seen no boot
    information come back, and ``boothop-relay check`` reports what the running relay learned."""
    config = relay_file(lab, pxe_helpers=[lab.server])
    relay = start_relay(lab, config)
    booted = pxe_boot(lab)
    assert str(booted.get("error", "")).startswith("PXE-E53"), booted
    assert wait_for(lambda: '"relay.pxe.no_boot_server"' in relay.output(), 20), relay.output()
    (line,) = [json.loads(text) for text in relay.output().splitlines()
               if '"relay.pxe.no_boot_server"' in text]
    assert "class 'pxe'" in line["message"] and line["server"] == lab.server
    assert read_recorded(lab.recorded) == []  # the PXE helper was never asked
    check = lab.runner.run(lab.ns("router"), [need("boothop-relay"), "check", "-c", str(config)],
                           timeout=30)
    assert check.returncode == 0, check.stderr
    assert "PXE clients (BIOS) on lanb0: class 'pxe' -> " + lab.server in check.stdout
    assert "PXE client(s) of class 'pxe' get an address and no boot information" in check.stderr
