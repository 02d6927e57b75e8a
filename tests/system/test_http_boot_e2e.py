"""UEFI HTTP boot over IPv4 through boothop-relay: an "HTTPClient" DISCOVER, a URL in the
answer, the file fetched over HTTP from the PXE host.

```
 client ──[LAN cli]── lan0  router (boothop-relay)  up0 ──[LAN srv]──┬─ dhcp  boothop-server [dhcp]
          10.62.1.0/24 10.62.1.1               10.62.100.1           │        10.62.100.10
                                                                     └─ pxe   boothop-server
                                                                              [pxe] [tftp] [http]
                                                                              10.62.100.20
```

The client is the lab's client emulator (``relay/lab/pxe_client.py --http``): option 60
"HTTPClient:Arch:00016", option 93 = 16 (x64 UEFI HTTP); it takes the offer echoing
"HTTPClient" with its URL, configures the leased address and fetches the URL with curl, routed
through the router. Two ways to be told the URL: by the proxyDHCP server (the DHCP server gives
only the address), or by the DHCP server itself (``http_boot`` of the subnet).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sys
from pathlib import Path

import pytest
from conftest import need, require_system

from boothop.relay.lab.processes import Process, ProcessRunner, wait_for
from boothop.relay.lab.topology import Host, Lan, Port, Route, Topology

pytestmark = pytest.mark.system
DHCP, PXE, ROUTER_UP = "10.62.100.10", "10.62.100.20", "10.62.100.1"
CLIENT_MAC = "02:62:00:00:01:10"
HERE = Path(__file__).parent


def topology(prefix: str) -> Topology:
    back = Route("10.62.0.0/16", ROUTER_UP)
    hosts = [Host("router", forwarding=True), Host("dhcp", routes=(back,)),
             Host("pxe", routes=(back,)), Host("client")]
    lans = [
        Lan("cli", (Port("router", "lan0", "10.62.1.1/24"),
                    Port("client", "eth0", mac=CLIENT_MAC))),
        Lan("srv", (Port("router", "up0", f"{ROUTER_UP}/24"), Port("dhcp", "srv0", f"{DHCP}/24"),
                    Port("pxe", "pxe0", f"{PXE}/24"))),
    ]
    return Topology(prefix, hosts, lans)


def start_server(runner: ProcessRunner, namespace: str, config: Path, name: str,
                 ready: str) -> Process:
    process = runner.start(namespace, [sys.executable, "-m", "boothop.server", "run", "-c",
                                       str(config)], name, cwd=HERE.parents[1])
    if not wait_for(lambda: ready in process.output() or not process.running(), 15):
        raise RuntimeError(f"{name} did not start:\n{process.output()}")
    assert process.running(), process.output()
    return process


@pytest.mark.parametrize("told_by", ["proxy", "dhcp"])
def test_uefi_http_boot_through_boothop_relay(tmp_path: Path, told_by: str) -> None:
    require_system("curl")
    lab = topology(f"bhh-{secrets.token_hex(3)}")
    runner = ProcessRunner(tmp_path / "logs")
    root = tmp_path / "root"
    (root / "efi").mkdir(parents=True)
    image = os.urandom(2_000_000)
    (root / "efi" / "ipxe.efi").write_bytes(image)
    http_boot = ('http_boot = { efi-x64-http = "http://10.62.100.20:8080/efi/ipxe.efi" }\n'
                 if told_by == "dhcp" else "")
    dhcp_config = tmp_path / "dhcp.toml"
    dhcp_config.write_text(
        f'[dhcp]\nlease_db = "{tmp_path / "leases.sqlite3"}"\n[[dhcp.subnets]]\n'
        f'subnet = "10.62.1.0/24"\npools = ["10.62.1.100-10.62.1.150"]\n'
        f'options = {{ routers = ["10.62.1.1"] }}\n{http_boot}'
        '[[dhcp.subnets]]\nsubnet = "10.62.100.0/24"\npools = ["10.62.100.100-10.62.100.110"]\n')
    pxe_config = tmp_path / "pxe.toml"
    # A PXE boot table: the proxy makes the URL from the efi-x64 entry and its own [http].
    pxe_config.write_text(
        f'[pxe]\nserver_address = "{PXE}"\n[pxe.boot]\nefi-x64 = "efi/ipxe.efi"\n'
        f'[tftp]\nroot = "{root}"\n[http]\nport = 8080\n')
    try:
        lab.up()
        dhcp = start_server(runner, lab.netns("dhcp"), dhcp_config, "dhcp", "server.started")
        pxe = start_server(runner, lab.netns("pxe"), pxe_config, "pxe", "server.started")
        relay = runner.start(lab.netns("router"), [need("boothop-relay"), "-d", "-id", "lan0",
                                                   "-iu", "up0", DHCP, PXE], "relay")
        assert wait_for(lambda: "relay.started" in relay.output() or not relay.running(), 15), (
            relay.output())
        done = runner.run(lab.netns("client"), [
            sys.executable, "-m", "boothop.relay.lab.pxe_client", "--ifname", "eth0", "--mac",
            CLIENT_MAC, "--http", "--offer-wait", "1.5"], timeout=60)
        logs = f"--- dhcp ---\n{dhcp.output()}\n--- pxe ---\n{pxe.output()}\n" \
               f"--- relay ---\n{relay.output()}"
        assert done.stdout, f"{done.stderr}\n{logs}"
        result = json.loads(done.stdout)
        assert result["booted"] is True, f"{json.dumps(result, indent=1)}\n{logs}"
        steps = {step["step"]: step for step in result["steps"]}
        assert steps["discover"]["option60"].startswith("HTTPClient")
        expected_rule = ("DHCP and PXE in the same offer" if told_by == "dhcp"
                         else "IP-only offer + proxyDHCP offer")
        assert steps["choose"]["rule"] == expected_rule
        assert steps["http"]["file"] == "http://10.62.100.20:8080/efi/ipxe.efi"
        assert steps["http"]["curl_exit"] == 0
        assert steps["http"]["sha256"] == hashlib.sha256(image).hexdigest()
        assert result["address"].startswith("10.62.1.")
        assert "http.request" in pxe.output()
    finally:
        try:
            runner.stop_all()
        finally:
            lab.down()
