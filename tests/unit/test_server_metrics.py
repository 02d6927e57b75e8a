"""The server's metrics: leases and pool use per subnet, commit histograms, proxyDHCP and TFTP
counters, the [metrics] table."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest
import structlog
from test_metrics import samples
from test_pxe_proxy import CONFIG as PXE_CONFIG
from test_server_helpers import config
from test_server_service import FakeSocket, dora, shell

from boothop.relay.metrics import Metrics
from boothop.relay.settings import ConfigError, Listen
from boothop.relay.shell import DatagramLoop
from boothop.relay.wire import Datagram
from boothop.server.config import parse_config
from boothop.server.dhcp import service as dhcp
from boothop.server.dhcp.core import DhcpServerCore
from boothop.server.pxe import service as pxe
from boothop.server.tftp import service as tftp


class BoundSocket(FakeSocket):
    def getsockname(self) -> tuple[str, int]:
        return ("0.0.0.0", 67)


def test_dhcp_families_show_leases_pool_use_and_commits() -> None:
    receiver, durable, _, _ = shell()
    receiver.sock = receiver.loop.sock = BoundSocket()  # type: ignore[assignment]
    commits, promises = [], []
    for n in range(3):
        more_commits, more_promises = dora(receiver, receiver.sock, n)  # type: ignore[arg-type]
        commits += more_commits
        promises += more_promises
    durable.commit(commits, promises, durable.generation)
    metrics = Metrics()
    with metrics.part("dhcp", lambda: dhcp._snapshot(receiver, durable), dhcp.FAMILIES):
        got = samples(metrics)
    subnet = (("subnet", "10.51.1.0/24"),)
    assert got[("boothop_server_dhcp_leases", subnet)] == 3
    assert got[("boothop_server_dhcp_pool_used", subnet)] == 3
    assert got[("boothop_server_dhcp_pool_size", subnet)] == 5
    assert got[("boothop_server_dhcp_replies_total", (("kind", "offer"),))] == 3
    assert got[("boothop_server_dhcp_replies_total", (("kind", "ack"),))] == 3
    assert got[("boothop_server_dhcp_replies_total", (("kind", "nak"),))] == 0
    assert got[("boothop_server_dhcp_lease_events_total", (("event", "bound"),))] == 3
    assert got[("boothop_server_dhcp_commit_seconds_count", ())] == 1
    assert got[("boothop_server_dhcp_commit_batch_sum", ())] == 3
    assert got[("boothop_server_dhcp_commit_batch_bucket", (("le", "4.0"),))] == 1
    assert got[("boothop_server_dhcp_commit_batch_bucket", (("le", "2.0"),))] == 0
    assert got[("boothop_loop_core_errors_total", (("port", "67"), ("service", "dhcp")))] == 0
    for outcome in dhcp.WAIT_OUTCOMES:  # each series there from the start (lone DORAs: 0)
        assert got[("boothop_server_dhcp_commit_waits_total", (("outcome", outcome),))] == 0


def test_usage_counts_only_holding_leases_in_their_pools() -> None:
    receiver, _, _, _ = shell()
    core: DhcpServerCore = receiver.core
    for n in range(2):
        dora(receiver, receiver.sock, n)  # type: ignore[arg-type]
    now = max(lease.starts for lease in core.leases.values())
    assert core.usage(now)["10.51.1.0/24"] == {"leases": 2, "pool_used": 2, "pool_size": 5}
    assert core.usage(now + 10_000)["10.51.1.0/24"]["leases"] == 0  # expired
    assert set(core.usage(now)) == {subnet.name for subnet in config().subnets}


def test_pxe_and_tftp_parts_count_drops_and_transfers() -> None:
    responder = pxe._Responder(PXE_CONFIG, structlog.get_logger())
    loop = DatagramLoop(BoundSocket(), lambda d: None, log=structlog.get_logger())  # type: ignore[arg-type]
    junk = Datagram(b"junk", IPv4Address("10.0.0.9"), 68, IPv4Address("255.255.255.255"), 3)
    responder.handle(None, junk)  # type: ignore[arg-type]
    transfers = tftp._Transfers()
    transfers.started["read"] += 2
    transfers.ended["read", "completed"] += 1
    transfers.octets["read"] += 1432
    metrics = Metrics()
    with metrics.part("pxe", lambda: responder.metrics([loop]), pxe.FAMILIES), \
            metrics.part("tftp", transfers.snapshot, tftp.FAMILIES):
        got = samples(metrics)
    assert got[("boothop_server_pxe_dropped_total", (("reason", "malformed"),))] == 1
    assert got[("boothop_server_pxe_replies_total", ())] == 0
    assert got[("boothop_loop_truncated_total", (("port", "67"), ("service", "pxe")))] == 0
    assert got[("boothop_server_tftp_transfers_started_total", (("direction", "read"),))] == 2
    assert got[("boothop_server_tftp_transfers_ended_total",
                (("direction", "read"), ("outcome", "completed")))] == 1
    assert got[("boothop_server_tftp_bytes_total", (("direction", "read"),))] == 1432


def test_metrics_table_of_the_server_file() -> None:
    tftp_table = {"root": "/srv/tftp"}
    parsed = parse_config({"tftp": tftp_table, "metrics": {"listen": "127.0.0.1:9268"}}, "s.toml")
    assert parsed.metrics == Listen("127.0.0.1", 9268)
    assert parse_config({"tftp": tftp_table}, "s.toml").metrics is None
    with pytest.raises(ConfigError) as caught:
        parse_config({"tftp": tftp_table, "metrics": {"listen": "x", "port": 1}}, "s.toml")
    assert {problem.key for problem in caught.value.problems} == {"metrics.listen",
                                                                  "metrics.port"}
