"""Per-client rate limiting: a flooding MAC or circuit is throttled while others are served.

The token buckets (relay.throttle), the engine's rules around them (relay.engine), the log lines
(one when throttling starts, one when it stops) and the TOML ``[rate_limit]`` table. The host and
helpers are those of test_relay_engine.py.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from structlog.testing import capture_logs
from test_relay_engine import (
    LAN2,
    MAC,
    OTHER_RELAY,
    drop_reason,
    from_client,
    make_config,
    make_engine,
    request,
    with_agent,
)
from test_relay_service_shell import FakeSender, service
from test_relay_service_shell import request as shell_request

from boothop.relay.actions import Drop, Forward, Outcome, Throttle
from boothop.relay.configfile import load
from boothop.relay.drops import DropReason
from boothop.relay.engine import RelayEngine
from boothop.relay.settings import ConfigError
from boothop.relay.throttle import (
    DEFAULT_MAC_BURST,
    DEFAULT_MAC_RATE,
    BucketLimit,
    RateLimits,
    ThrottleChange,
    TokenBuckets,
)
from boothop.relay.wire import AgentSub, DhcpMessage

OTHER_MAC = bytes.fromhex("525400ffeedd")


def client(mac: bytes = MAC, **fields: object) -> DhcpMessage:
    return request(chaddr=mac + bytes(10), **fields)


#: Small limits for the engine tests: 3 requests at once, 1 a second; circuits unlimited.
MAC_LIMIT = BucketLimit(3, 1.0)
NO_LIMIT = BucketLimit(1, 0)


def limited_engine(mac: BucketLimit = MAC_LIMIT, circuit: BucketLimit = NO_LIMIT) -> RelayEngine:
    return make_engine(rate_limits=RateLimits(mac, circuit, 64))


def relayed(outcome: Outcome) -> bool:
    return any(isinstance(a, Forward) for a in outcome.actions)


def drops(outcome: Outcome) -> list[DropReason]:
    return [a.reason for a in outcome.actions if isinstance(a, Drop)]


def throttles(outcome: Outcome) -> list[Throttle]:
    return [a for a in outcome.actions if isinstance(a, Throttle)]


# -- the buckets --------------------------------------------------------------------------------


def taken(buckets: TokenBuckets) -> list[ThrottleChange]:
    """The changes told so far, as the engine takes them."""
    changes = list(buckets.changes)
    buckets.changes.clear()
    return changes


def test_token_bucket_admits_a_burst_then_its_rate() -> None:
    buckets = TokenBuckets(kind="t", limit=BucketLimit(3, 0.5))
    assert [buckets.admit("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert not buckets.admit("a", 1.0)  # half a token
    assert buckets.admit("a", 2.0)  # one token after 2 s at 0.5/s
    assert not buckets.admit("a", 2.0)
    assert buckets.admit("b", 2.0)  # another client has a bucket of its own


def test_throttling_starts_at_the_first_drop_and_stops_when_the_bucket_is_full_again() -> None:
    buckets = TokenBuckets(kind="t", limit=BucketLimit(2, 1.0))
    for _ in range(10):
        buckets.admit("a", 0.0)
    assert taken(buckets) == [ThrottleChange("t", "a", True, 0)]
    assert buckets.throttled == 1 and buckets.throttled_now == 1
    # A trickle at the rate passes but does not end the episode (no start/stop line per packet).
    assert buckets.admit("a", 1.0) and not buckets.admit("a", 1.0)
    assert taken(buckets) == []
    # Quiet for burst/rate seconds: full again, the next request ends it.
    assert buckets.admit("a", 3.5)
    assert taken(buckets) == [ThrottleChange("t", "a", False, 9)]
    assert buckets.throttled_now == 0


def test_a_quiet_throttled_client_is_forgotten_and_its_stop_reported_by_expire() -> None:
    buckets = TokenBuckets(kind="t", limit=BucketLimit(2, 1.0))
    for _ in range(5):
        buckets.admit("a", 0.0)
    buckets.admit("b", 1.0)
    taken(buckets)
    buckets.expire(1.9)
    assert len(buckets) == 2 and taken(buckets) == []
    buckets.expire(2.0)
    assert len(buckets) == 1 and taken(buckets) == [ThrottleChange("t", "a", False, 3)]


def test_the_table_is_bounded_and_forgets_the_client_seen_least_recently() -> None:
    buckets = TokenBuckets(kind="t", limit=BucketLimit(1, 0.001), capacity=3)
    for name in "abc":
        buckets.admit(name, 0.0)
    assert not buckets.admit("a", 1.0)  # a is throttled, and now the most recently seen
    buckets.admit("d", 2.0)  # b is forgotten
    assert len(buckets) == 3
    assert not buckets.admit("c", 3.0)  # c still remembered: its bucket is empty
    buckets.admit("e", 4.0)
    buckets.admit("f", 5.0)  # a (throttled) forgotten: its stop is reported
    assert ThrottleChange("t", "a", False, 1) in taken(buckets)
    assert len(buckets) == 3


# -- the engine ----------------------------------------------------------------------------------


def test_a_flooding_mac_is_dropped_while_another_mac_is_served() -> None:
    engine = limited_engine()
    outcomes = [engine.handle(from_client(client()), 0.5) for _ in range(100)]
    assert sum(relayed(o) for o in outcomes) == 3
    assert drop_reason(outcomes[-1]) is DropReason.RATE_LIMITED_MAC
    assert relayed(engine.handle(from_client(client(OTHER_MAC)), 0.5))
    assert engine.counters.dropped[DropReason.RATE_LIMITED_MAC] == 97


def test_throttle_actions_once_when_it_starts_and_once_when_it_stops() -> None:
    engine = limited_engine()
    actions: list[Throttle] = []
    for n in range(20):
        actions += throttles(engine.handle(from_client(client()), n * 0.1))
    assert actions == [Throttle("mac", "52:54:00:a1:b2:c3", "lan1", True, 0)]
    assert engine.throttled_now() == {"mac": 1}
    assert engine.counters.throttled_clients == {"mac": 1}
    # Quiet for 3 s (burst 3 at 1/s): the shell's sweep tells it stopped, with no request.
    assert engine.sweep(4.8) == []
    (stopped,) = engine.sweep(4.9)
    assert (stopped.started, stopped.client, stopped.dropped) == (False, "52:54:00:a1:b2:c3",
                                                                  16)
    assert engine.throttled_now() == {"mac": 0}
    # Or the client's next request, once it kept under its rate long enough.
    for n in range(20):
        engine.handle(from_client(client()), 10 + n * 0.1)
    (again,) = throttles(engine.handle(from_client(client()), 20.0))
    assert (again.started, again.dropped) == (False, 16)


def test_a_flooding_mac_takes_nothing_from_its_circuit() -> None:
    """The MAC is checked first: one flooding client cannot empty its LAN's bucket."""
    engine = limited_engine(circuit=BucketLimit(5, 0.001))
    for _ in range(1000):
        engine.handle(from_client(client()), 0.0)
    served = [relayed(engine.handle(from_client(client(bytes([2, 0, 0, 0, 0, n]))), 0.0))
              for n in range(2)]
    assert served == [True, True]


def test_a_circuit_flooding_with_random_macs_is_throttled_while_other_lans_are_served() -> None:
    """DHCP starvation: every request from a fresh MAC passes the MAC limit, not the circuit's."""
    engine = limited_engine(circuit=BucketLimit(10, 1.0))
    outcomes = [engine.handle(from_client(client(n.to_bytes(6, "big"))), 0.0)
                for n in range(1, 200)]
    assert sum(relayed(o) for o in outcomes) == 10
    assert drop_reason(outcomes[-1]) is DropReason.RATE_LIMITED_CIRCUIT
    (started,) = [t for o in outcomes for t in throttles(o)]
    assert (started.kind, started.client) == ("circuit", "lan1")
    assert relayed(engine.handle(from_client(client(), ifindex=LAN2), 0.0))


def test_circuits_behind_a_downstream_relay_are_its_giaddr_and_circuit_id() -> None:
    engine = limited_engine(circuit=BucketLimit(2, 0.001))

    def behind(circuit: bytes, mac: int) -> Outcome:
        message = with_agent(client(mac.to_bytes(6, "big"), giaddr=OTHER_RELAY),
                             (AgentSub.CIRCUIT_ID, circuit))
        return engine.handle(from_client(message, source=OTHER_RELAY,
                                         destination=OTHER_RELAY), 0.0)

    port1 = [behind(b"port1", n) for n in range(1, 5)]
    assert [relayed(o) for o in port1] == [True, True, False, False]
    assert throttles(port1[2])[0].client == f"lan1/{OTHER_RELAY}/port1"
    assert relayed(behind(b"port2", 9))


def test_a_client_cannot_pick_a_circuit_with_its_own_option82_on_an_untrusted_interface() -> None:
    engine = limited_engine(circuit=BucketLimit(2, 0.001))
    for n in range(1, 4):
        message = with_agent(client(n.to_bytes(6, "big")), (AgentSub.CIRCUIT_ID, bytes([n])))
        outcome = engine.handle(from_client(message), 0.0)
    # Untrusted: option 82 with giaddr 0 is dropped by RFC 3046 §2.1, but only after the circuit
    # limit counted all three as the interface's: the third is over the limit.
    assert drops(outcome) == [DropReason.RATE_LIMITED_CIRCUIT]


def test_a_rate_of_zero_turns_a_limit_off() -> None:
    engine = limited_engine(mac=BucketLimit(1, 0))
    assert all(relayed(engine.handle(from_client(client()), 0.0)) for _ in range(50))
    assert engine.throttled_now() == {}


def test_defaults_throttle_a_flood_and_never_a_pxe_rom_retrying() -> None:
    """A PXE ROM: DISCOVER, retries after 4, 8, 16 and 32 s, REQUEST; then iPXE and the OS each
    DISCOVER and REQUEST: never throttled. 1,000 requests in a second: throttled."""
    assert (DEFAULT_MAC_BURST, DEFAULT_MAC_RATE) == (10, 0.5)
    engine = make_engine()
    boot = [0.0, 4.0, 12.0, 28.0, 60.0, 60.1, 62.0, 62.1, 70.0, 70.1]
    assert all(relayed(engine.handle(from_client(client()), t)) for t in boot)
    flood = [engine.handle(from_client(client(OTHER_MAC)), 100 + n / 1000) for n in range(1000)]
    assert sum(relayed(o) for o in flood) == 10


def test_a_reload_with_the_same_limits_keeps_who_is_throttled() -> None:
    engine = limited_engine()
    for _ in range(10):
        engine.handle(from_client(client()), 0.0)
    engine.update_config(dataclasses.replace(engine.config, max_hops=5))
    assert engine.throttled_now() == {"mac": 1}
    engine.update_config(make_config(rate_limits=RateLimits(BucketLimit(4, 1.0))))
    assert engine.throttled_now() == {"mac": 0}


# -- the log lines -------------------------------------------------------------------------------


def test_one_log_line_when_throttling_starts_and_one_when_it_stops() -> None:
    relay = service(FakeSender())
    with capture_logs() as logs:
        for n in range(200):
            relay.handle(shell_request(n), 1.0)
        relay.sweep(100.0)
    events = [e for e in logs if e["event"] != "relay.request.forwarded"]
    assert [e["event"] for e in events] == ["relay.client.throttled", "relay.client.unthrottled"]
    assert events[0]["client"] == "02:71:00:00:01:0a" and events[0]["ifname"] == "bhnd0"
    assert events[0]["log_level"] == "warning" and events[0]["rate"] == DEFAULT_MAC_RATE
    assert events[1]["dropped"] == 190
    snapshot = relay.snapshot()
    assert snapshot["dropped"]["rate-limited-mac"] == 190
    assert snapshot["throttled_clients"] == {"mac": 1}
    assert snapshot["throttled_now"] == {"mac": 0}


# -- the TOML ------------------------------------------------------------------------------------


def test_rate_limit_table_read_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text('helpers = ["10.9.0.10"]\n[rate_limit]\nmac_burst = 4\nmac_rate = 0.25\n'
                    'circuit_rate = 100\ntable_size = 100\n')
    limits = load(path).relay.rate_limits
    assert limits == RateLimits(BucketLimit(4, 0.25), BucketLimit(2000, 100), 100)


def test_without_the_table_the_defaults_apply(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text('helpers = ["10.9.0.10"]\n')
    assert load(path).relay.rate_limits == RateLimits()


@pytest.mark.parametrize(("line", "key", "reason"), [
    ("mac_rate = -1", "rate_limit.mac_rate", "must be >= 0"),
    ("mac_burst = 0.5", "rate_limit.mac_burst", "must be >= 1"),
    ('circuit_rate = "fast"', "rate_limit.circuit_rate", "must be a number"),
    ("table_size = 0", "rate_limit.table_size", "out of range"),
    ("per_mac = 3", "rate_limit.per_mac", "unknown key"),
])
def test_rate_limit_validation_names_file_line_key_and_reason(tmp_path: Path, line: str, key: str,
                                                              reason: str) -> None:
    path = tmp_path / "relay.toml"
    path.write_text(f'helpers = ["10.9.0.10"]\n\n[rate_limit]\n{line}\n')
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert (caught.value.key, caught.value.line) == (key, 4)
    assert reason in caught.value.reason


