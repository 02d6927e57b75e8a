"""The metrics: the reply tracker (sans-IO), the histogram, the snapshot collectors, the endpoint,
``status``, the relay's wiring and its configuration key."""

from __future__ import annotations

import socket
import time
import urllib.request
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs
from test_relay_service_shell import SERVER, FakeSender, request, service

from boothop.relay import shell
from boothop.relay.actions import Deliver, Forward
from boothop.relay.cli import build_parser, log_level, main
from boothop.relay.configfile import ConfigError, RelaySettings, load, parse
from boothop.relay.metrics import (
    LOOP_FAMILIES,
    Family,
    Histogram,
    Metrics,
    status,
)
from boothop.relay.replies import ReplyTracker
from boothop.relay.service import FAMILIES
from boothop.relay.settings import Listen, parse_listen
from boothop.relay.wire import Datagram, DhcpMessage, MessageType, Op, Opt, encode

A, B = IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2")


# -- the reply tracker -------------------------------------------------------------------------
def test_a_reply_from_the_helper_with_the_xid_is_answered_with_its_latency() -> None:
    tracker = ReplyTracker(timeout=5)
    tracker.forwarded(A, 7, 10.0)
    tracker.forwarded(B, 7, 10.0)
    assert tracker.replied(A, 7, 10.25) == pytest.approx(0.25)
    assert tracker.replied(A, 7, 10.3) is None  # a second reply answers nothing
    assert tracker.replied(A, 8, 10.3) is None  # nor one with another xid
    assert tracker.answered == {A: 1}
    assert tracker.snapshot() == {
        str(A): {"answered": 1, "unanswered": 0, "untracked": 0, "waiting": 0},
        str(B): {"answered": 0, "unanswered": 0, "untracked": 0, "waiting": 1},
    }


def test_a_helper_silent_past_the_timeout_is_counted_unanswered() -> None:
    tracker = ReplyTracker(timeout=5)
    tracker.forwarded(A, 1, 0.0)
    tracker.forwarded(A, 2, 3.0)
    tracker.expire(4.9)
    assert tracker.unanswered == {}
    tracker.expire(5.0)
    assert tracker.unanswered == {A: 1}
    assert tracker.replied(A, 1, 5.1) is None  # too late: it stays unanswered
    assert tracker.replied(A, 2, 5.1) == pytest.approx(2.1)
    tracker.forwarded(B, 3, 20.0)  # forwarding expires the old ones too
    assert tracker.snapshot()[str(A)] == {"answered": 1, "unanswered": 1, "untracked": 0,
                                          "waiting": 0}


def test_forwarding_the_same_xid_again_restarts_its_clock() -> None:
    tracker = ReplyTracker(timeout=5)
    tracker.forwarded(A, 1, 0.0)
    tracker.forwarded(A, 2, 1.0)
    tracker.forwarded(A, 1, 4.0)  # the client retransmitted: now the newest
    tracker.expire(6.0)
    assert tracker.unanswered == {A: 1}  # xid 2, not xid 1
    assert tracker.replied(A, 1, 6.5) == pytest.approx(2.5)


def test_the_table_is_bounded_and_gives_up_the_oldest_as_untracked() -> None:
    tracker = ReplyTracker(timeout=5, capacity=3)
    for xid in range(10):
        tracker.forwarded(A if xid % 2 else B, xid, 1.0)
    assert sum(entry["waiting"] for entry in tracker.snapshot().values()) == 3
    assert tracker.untracked == {B: 4, A: 3}
    assert tracker.replied(A, 9, 1.5) == pytest.approx(0.5)  # the newest are kept
    assert tracker.replied(B, 0, 1.5) is None


# -- histogram and collectors ----------------------------------------------------------------
def test_histogram_buckets_hold_values_up_to_their_bound() -> None:
    histogram = Histogram((1, 2))
    for value in (0.5, 1, 1.5, 2, 3):
        histogram.observe(value)
    assert histogram.snapshot() == {"le": [1, 2], "counts": [2, 2, 1], "sum": 8.0}


FAMILIES_UNDER_TEST = (
    Family("t_received", "counter", "received", ("received",)),
    Family("t_forwarded", "counter", "forwarded", ("forwarded", "{server}")),
    Family("t_helper", "gauge", "nested", ("helpers", "{server}", "waiting")),
    Family("t_latency", "histogram", "latency", ("latency", "{server}")),
)


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_collector_reads_the_snapshot_at_scrape_time() -> None:
    counts = {"received": 1, "forwarded": {"10.0.0.1": 2}, "helpers": {"10.0.0.1": {"waiting": 3}}}
    histogram = Histogram((0.1, 1.0))
    metrics = Metrics()
    with metrics.part("p", lambda: {**counts, "latency": {"10.0.0.1": histogram.snapshot()},
                                    "loops": {67: shell.LoopCounters(truncated=4).snapshot()}},
                      FAMILIES_UNDER_TEST):
        histogram.observe(0.05)
        histogram.observe(0.5)
        counts["received"] = 5  # changed after registering: the scrape sees the new value
        got = samples(metrics)
    assert got[("t_received_total", ())] == 5
    assert got[("t_forwarded_total", (("server", "10.0.0.1"),))] == 2
    assert got[("t_helper", (("server", "10.0.0.1"),))] == 3
    server = ("server", "10.0.0.1")
    assert got[("t_latency_bucket", (("le", "0.1"), server))] == 1
    assert got[("t_latency_bucket", (("le", "1.0"), server))] == 2
    assert got[("t_latency_bucket", (("le", "+Inf"), server))] == 2
    assert got[("t_latency_count", (server,))] == 2
    assert got[("t_latency_sum", (server,))] == pytest.approx(0.55)
    assert got[("boothop_loop_truncated_total", (("port", "67"), ("service", "p")))] == 4
    assert "process_cpu_seconds_total" in {name for name, _ in got}
    # Once the part is gone, nothing of it is left.
    assert ("t_received_total", ()) not in samples(metrics)


def test_every_loop_counter_has_a_family() -> None:
    names = {family.path[-1] for family in LOOP_FAMILIES}
    assert names == set(shell.LoopCounters().snapshot())


def test_status_prints_nonzero_samples_and_histogram_summaries() -> None:
    metrics = Metrics()
    histogram = Histogram((0.1, 1.0))
    for value in (0.05, 0.06, 0.5):
        histogram.observe(value)
    snapshot = {"received": 3, "forwarded": {"10.0.0.1": 0},
                "latency": {"10.0.0.1": histogram.snapshot()}}
    with metrics.part("p", lambda: snapshot, FAMILIES_UNDER_TEST):
        text = status(generate_latest(metrics.registry).decode(), "t_")
    lines = text.splitlines()
    assert lines[0].split() == ["t_received_total", "3"]
    assert not any("t_forwarded" in line for line in lines)  # zero: left out
    assert any(line.startswith("t_latency{server=10.0.0.1}") and "count 3" in line
               and "median <= 0.1" in line for line in lines)
    assert not any("process_" in line for line in lines)
    assert status("", "t_") == "(no counts yet)"


def test_the_endpoint_serves_over_http_and_refuses_a_taken_port() -> None:
    metrics = Metrics()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    listen = Listen("127.0.0.1", port)
    with metrics.part("p", lambda: {"received": 9}, FAMILIES_UNDER_TEST), metrics.serve(listen):
        body = urllib.request.urlopen(f"http://{listen}/metrics", timeout=5).read().decode()
        assert "t_received_total 9.0" in body
        with pytest.raises(OSError, match=f"metrics endpoint 127.0.0.1:{port}"), \
                Metrics().serve(listen):
            pass


# -- configuration -----------------------------------------------------------------------------
def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:9267") == Listen("127.0.0.1", 9267)
    assert str(parse_listen("0.0.0.0:80")) == "0.0.0.0:80"
    for bad in ("9267", "localhost:9267", "127.0.0.1:0", "127.0.0.1:70000", "127.0.0.1:x"):
        with pytest.raises(ValueError):
            parse_listen(bad)
    with pytest.raises(TypeError):
        parse_listen(9267)


def test_relay_file_metrics_key_validated_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text('helpers = ["10.0.0.1"]\nmetrics = "127.0.0.1:9267"\n')
    assert load(path).metrics == Listen("127.0.0.1", 9267)
    path.write_text('helpers = ["10.0.0.1"]\n\nmetrics = "nowhere"\n')
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert (caught.value.key, caught.value.line) == ("metrics", 3)
    assert parse({"helpers": ["10.0.0.1"]}, "x").metrics is None


# -- the relay's wiring ------------------------------------------------------------------------
def reply(xid: int) -> Datagram:
    msg = DhcpMessage(op=Op.BOOTREPLY, xid=xid, chaddr=bytes.fromhex("02710000010a") + bytes(10),
                      giaddr=IPv4Address("10.71.1.1"), yiaddr=IPv4Address("10.71.1.50"),
                      options=((Opt.MESSAGE_TYPE, bytes([MessageType.OFFER])),))
    return Datagram(encode(msg), SERVER, 67, IPv4Address("10.71.1.1"), 9)


def test_relay_counts_answers_latency_and_serves_them() -> None:
    sender = FakeSender()
    relay = service(sender)
    relay.steps = True
    now = time.monotonic()  # the snapshot expires unanswered requests by the clock
    with capture_logs() as logs:
        relay.handle(request(0x42), now - 1.0)
        relay.handle(reply(0x42), now - 0.996)
        relay.handle(request(0x43), now)
    assert [type(action) for action in sender.sent] == [Forward, Deliver, Forward]
    delivered = next(e for e in logs if e["event"] == "relay.reply.delivered")
    assert delivered["latency_ms"] == pytest.approx(4.0) and delivered["log_level"] == "info"
    assert relay.replies.answered == {SERVER: 1}
    metrics = Metrics()
    with metrics.part("relay", lambda: {**relay._snapshot(), "loops": {}}, FAMILIES):
        got = samples(metrics)
    server = (("server", str(SERVER)),)
    assert got[("boothop_relay_forwarded_total", server)] == 2
    assert got[("boothop_relay_delivered_total", (("mode", "unicast-chaddr"),))] == 1
    assert got[("boothop_relay_helper_answered_total", server)] == 1
    assert got[("boothop_relay_helper_reply_seconds_count", server)] == 1
    assert got[("boothop_relay_helper_waiting", server)] == 1  # 0x43, not yet expired
    assert got[("boothop_relay_received_by_interface_total", (("interface", "bhnd0"),))] == 2


def test_every_relay_family_reads_a_key_of_the_snapshot() -> None:
    relay = service(FakeSender())
    relay.handle(request(1), 1.0)
    relay.handle(reply(1), 1.1)
    snapshot = relay._snapshot()
    for family in FAMILIES:
        assert family.path[0] in snapshot, family.name


def test_a_reload_changes_the_log_level() -> None:
    shell.configure_logging("info")
    try:
        relay = service(FakeSender())
        assert relay.steps
        relay.apply_config(RelaySettings(relay.engine.config, log_level="warning"))
        assert not relay.steps and not relay.log.is_enabled_for(20)  # type: ignore[attr-defined]
        assert relay.loop.log is relay.log
        relay.apply_config(RelaySettings(relay.engine.config, log_level="debug"))
        assert relay.steps and relay.log.is_enabled_for(10)  # type: ignore[attr-defined]
    finally:
        shell.configure_logging("info")


def test_reload_takes_the_file_level_unless_the_command_line_set_one(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text('helpers = ["10.0.0.1"]\nlog_level = "debug"\n')
    settings = load(path)
    parser = build_parser()
    assert log_level(parser.parse_args(["--config", str(path)]), settings) == "debug"
    assert log_level(parser.parse_args(["--config", str(path), "-q"]), settings) == "warning"
    assert log_level(parser.parse_args(["--log-level", "error"]), settings) == "error"


def test_relay_status_command_reads_the_endpoint(capsys: pytest.CaptureFixture[str],
                                                 tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    metrics = Metrics()
    snapshot = {"forwarded": {"10.0.0.1": 4}}
    with metrics.part("relay", lambda: snapshot, FAMILIES), \
            metrics.serve(Listen("127.0.0.1", port)):
        assert main(["status", "--metrics", f"127.0.0.1:{port}"]) == 0
    assert "boothop_relay_forwarded_total{server=10.0.0.1}" in capsys.readouterr().out
    assert main(["status", "--metrics", f"127.0.0.1:{port}"]) == 1  # nobody listens now
    path = tmp_path / "relay.toml"
    path.write_text('helpers = ["10.0.0.1"]\n')
    assert main(["status", "--config", str(path)]) == 2  # no endpoint configured
