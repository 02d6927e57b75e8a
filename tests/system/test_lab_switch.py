"""The lab's switch forwards frames and runs no firewall (br_netfilter's hooks off)."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

import pytest
from conftest import require_system

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
