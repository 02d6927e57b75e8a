"""A flooding MAC is throttled while a real client on the same LAN gets its lease.

In the lab of conftest.py (kea at 10.41.100.10, a UDP recorder as second helper), a scapy-built
DISCOVER of one fake MAC is sent 3,000 times (paced, about 1,000/s) from client a's namespace
while udhcpc leases on the same interface. The relay (``[rate_limit] mac_burst = 5, mac_rate =
1``) forwards the flooder's burst and then about one request a second, udhcpc's DORA in full;
it logs ``relay.client.throttled`` once for the flooder and ``relay.client.unthrottled`` once
when it has gone quiet. Both datapaths: the daemon's (``--datapath user``), and the kernel's,
whose tc program keeps the buckets and drops the flood itself (the test fails unless it did).
Bounded: 3,000 packets, 30 s; the lab fixture removes everything.
"""

from __future__ import annotations

import json
import sys
import time

import pytest
from conftest import Lab, need
from servers import bound_address, read_recorded, start_udhcpc
from test_relay_classes_e2e import sample, scrape

from boothop.relay.lab.processes import wait_for

pytestmark = pytest.mark.system

FLOOD_MAC = "02:66:00:00:00:01"
FLOOD_COUNT = 3000
FLOOD = """
import sys
from scapy.all import BOOTP, DHCP, IP, UDP, Ether, conf, sendp
mac, count = sys.argv[1], int(sys.argv[2])
frame = (Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / IP(src="0.0.0.0", dst="255.255.255.255")
         / UDP(sport=68, dport=67)
         / BOOTP(chaddr=bytes.fromhex(mac.replace(":", "")), xid=0x66, flags=0x8000)
         / DHCP(options=[("message-type", "discover"), "end"]))
sendp(frame, iface="eth0", count=count, inter=0.001, verbose=False)
print("sent", count, flush=True)
"""


@pytest.mark.parametrize(("datapath", "level"),
                         [("user", "info"), ("kernel", "info"), ("kernel", "warning")])
def test_a_flooding_mac_is_throttled_and_a_second_client_on_its_lan_gets_a_lease(
        lab: Lab, datapath: str, level: str) -> None:
    config = lab.workdir / "relay.toml"
    config.write_text(f"""\
helpers = ["{lab.server}", "{lab.helper}"]
stats_interval = 0
log_format = "json"
metrics = "127.0.0.1:9467"

[rate_limit]
mac_burst = 5
mac_rate = 1

[[interface]]
name = "up0"
role = "upstream"

[[interface]]
name = "lana0"
""")
    relay = lab.runner.start(lab.ns("router"), [need("boothop-relay"), "--config", str(config),
                                                "--datapath", datapath, "--log-level", level],
                             "relay")
    if not wait_for(lambda: scrape(lab) or not relay.running(), 15):
        pytest.fail(f"the relay did not start:\n{relay.output()}")
    plan = lab.lans["a"]
    started = time.monotonic()
    flood = lab.runner.start(lab.ns(plan.client_host),
                             [sys.executable, "-c", FLOOD, FLOOD_MAC, str(FLOOD_COUNT)], "flood")
    assert wait_for(lambda: '"relay.client.throttled"' in relay.output(), 15), relay.output()
    udhcpc, events = start_udhcpc(lab.runner, lab.ns(plan.client_host), "eth0",
                                  lab.workdir / "clients", "udhcpc-a")
    assert wait_for(lambda: bound_address(events) is not None, 30), udhcpc.output()
    assert plan.pool.contains(str(bound_address(events)))
    assert flood.running(), "the flood ended before the client was served: no proof"
    assert wait_for(lambda: not flood.running(), 30) and "sent 3000" in flood.output(), \
        flood.output()
    flooded = time.monotonic() - started

    # The helpers got the burst and about a request a second of the flooder, all of udhcpc's.
    recorded = read_recorded(lab.recorded)
    from_flood = [r for r in recorded if r.message.mac == FLOOD_MAC]
    assert 5 <= len(from_flood) <= 5 + flooded + 2, (len(from_flood), flooded)
    assert any(r.message.mac == plan.client_mac for r in recorded)

    metrics = scrape(lab)
    dropped = sample(metrics, 'boothop_relay_dropped_total{reason="rate-limited-mac"}')
    assert dropped == FLOOD_COUNT - len(from_flood), metrics
    assert sample(metrics, 'boothop_relay_clients_throttled_total{kind="mac"}') == 1
    in_kernel = sample(metrics, 'boothop_relay_datapath_received_total{path="kernel"}')
    if datapath == "kernel":
        assert in_kernel >= FLOOD_COUNT, metrics  # the flood never reached the daemon
    else:
        assert in_kernel == 0

    # Once quiet for burst / rate = 5 s, one line says it stopped (at info); one line said it
    # started (a warning: also told where the program sends no step events).
    told = [("relay.client.throttled", FLOOD_MAC)]
    if level == "info":
        assert wait_for(lambda: '"relay.client.unthrottled"' in relay.output(), 15), \
            relay.output()
        told.append(("relay.client.unthrottled", FLOOD_MAC))
    else:
        time.sleep(7)  # past the moment it stopped: nothing more is told at warning
    lines = [json.loads(line) for line in relay.output().splitlines() if line.startswith("{")]
    throttle_lines = [e for e in lines if e["event"].startswith("relay.client.")]
    assert [(e["event"], e["client"]) for e in throttle_lines] == told
    if level == "info":
        assert throttle_lines[1]["dropped"] == dropped
    else:
        assert not any(e["level"] == "info" for e in lines), "an info line at warning"
    assert not any(e["event"] == "relay.drop" and e.get("reason") == "rate-limited-mac"
                   for e in lines)
