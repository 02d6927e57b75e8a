"""The server's rules that issue 9's mutation audit found untested: each test here failed on a
copy of the code with its rule removed (see the report of issue 9)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path
from types import SimpleNamespace

import pytest
import structlog
from test_server_core import dora
from test_server_helpers import (
    BASE_TOML,
    MT,
    SERVER,
    config,
    dgram,
    mac,
    opt_addr,
    reply_of,
    request,
)
from test_server_service import FakeSocket, FakeStore, received

from boothop.relay.wire import Opt, decode, encode
from boothop.server.dhcp import service
from boothop.server.dhcp.core import DhcpServerCore
from boothop.server.leasestore import SqliteLeaseStore

ZERO = IPv4Address(0)
#: BASE_TOML's reservation of 10.51.1.10 on the first subnet.
RESERVED_MAC = bytes.fromhex("52540000010a")
RESERVED = IPv4Address("10.51.1.10")


def first_subnet(**changes: object) -> list[dict[str, object]]:
    subnets = [dict(s) for s in BASE_TOML["subnets"]]  # type: ignore[attr-defined]
    subnets[0].update(changes)
    return subnets


# -- server/dhcp/core.py -----------------------------------------------------------------------
def test_reserved_client_renewing_a_pool_address_is_naked() -> None:
    """A client with a reservation gets that address and no other, also when it RENEWs a pool
    address it held before its reservation was configured."""
    before = DhcpServerCore(config(subnets=first_subnet(reservations=[])))
    pool_address = dora(before, RESERVED_MAC)
    assert pool_address != RESERVED
    core = DhcpServerCore(config(), before.leases.values())
    renew = request(MT.REQUEST, RESERVED_MAC, giaddr=ZERO, ciaddr=pool_address)
    nak = reply_of(core.handle(dgram(renew), 10.0))
    assert nak.message_type == MT.NAK
    assert reply_of(core.handle(dgram(request(MT.DISCOVER, RESERVED_MAC)), 11.0)).yiaddr == RESERVED


def test_rfc2132_max_message_size_below_576_is_taken_as_576() -> None:
    """RFC 2132 §9.10: "The minimum legal value is 576 octets": a smaller option 57 does not
    shrink the reply: one too large for 300 octets, even with option overload into sname and
    file, is still sent."""
    core = DhcpServerCore(config(options={"option-250": "x" * 240}))
    max_size = (Opt.MAX_MESSAGE_SIZE, (300).to_bytes(2, "big"))
    offer = reply_of(core.handle(dgram(request(MT.DISCOVER, mac(1), options=(max_size,))), 0.0))
    assert offer.message_type == MT.OFFER
    assert 300 < len(encode(offer)) <= 576


def test_rfc2131_nak_carries_no_siaddr_nor_boot_file() -> None:
    """RFC 2131 table 3: siaddr is 0 in a DHCPNAK (and 'file' unused), whatever the subnet's
    next-server."""
    core = DhcpServerCore(config(subnets=first_subnet(next_server="10.51.0.5",
                                                      boot_file="pxelinux.0")))
    offer = reply_of(core.handle(dgram(request(MT.DISCOVER, mac(1))), 0.0))
    assert offer.siaddr == IPv4Address("10.51.0.5")  # the next-server is configured
    wrong = request(MT.REQUEST, mac(1), options=(opt_addr(Opt.REQUESTED_ADDRESS, "10.99.9.9"),))
    nak = reply_of(core.handle(dgram(wrong), 1.0))
    assert nak.message_type == MT.NAK
    assert nak.siaddr == ZERO and nak.file == b""


def test_released_address_stays_its_clients_while_fresh_ones_remain() -> None:
    """A released address is offered to its last client again, and to nobody else while a
    never-used address remains, even where the pool's cursor points at it."""
    core = DhcpServerCore(config())
    second = IPv4Address("10.51.1.101")
    # mac 1 takes .101 by asking for it: the cursor stays on .100.
    asked = request(MT.DISCOVER, mac(1), options=(opt_addr(Opt.REQUESTED_ADDRESS, second),))
    assert reply_of(core.handle(dgram(asked), 0.0)).yiaddr == second
    selecting = request(MT.REQUEST, mac(1), options=(opt_addr(Opt.SERVER_ID, SERVER),
                                                     opt_addr(Opt.REQUESTED_ADDRESS, second)))
    assert reply_of(core.handle(dgram(selecting), 1.0)).message_type == MT.ACK
    core.handle(dgram(request(MT.RELEASE, mac(1), giaddr=ZERO, ciaddr=second)), 5.0)
    first = reply_of(core.handle(dgram(request(MT.DISCOVER, mac(2))), 6.0)).yiaddr
    assert first == IPv4Address("10.51.1.100")
    # The cursor now points at .101, released but not fresh.
    assert reply_of(core.handle(dgram(request(MT.DISCOVER, mac(3))), 7.0)).yiaddr != second
    assert reply_of(core.handle(dgram(request(MT.DISCOVER, mac(1))), 8.0)).yiaddr == second


# -- server/dhcp/service.py --------------------------------------------------------------------
@pytest.fixture
def store(tmp_path: Path) -> Iterator[tuple[SqliteLeaseStore, Path]]:
    path = tmp_path / "leases.db"
    opened = SqliteLeaseStore(str(path))
    yield opened, path
    opened.close()


def on_disk(path: Path) -> set[IPv4Address]:
    with sqlite3.connect(path) as db:
        return {IPv4Address(a) for (a,) in db.execute("SELECT address FROM leases")}


def acks(sock: FakeSocket) -> list[IPv4Address]:
    return [m.yiaddr for m in (decode(p) for p, _ in sock.sent) if m.message_type == MT.ACK]


def refuse_inserts(path: Path, when: str = "") -> None:
    """A trigger that makes the database refuse lease rows (``when``: only those matching)."""
    with sqlite3.connect(path) as db:
        db.execute(f"CREATE TRIGGER refuse BEFORE INSERT ON leases{when}"
                   " BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END")


def durable_receiver(lease_store: SqliteLeaseStore, sock: FakeSocket) -> service._Receiver:
    """The server's receiver over ``lease_store``, sending on ``sock``."""
    log = structlog.get_logger()
    return service._Receiver(DhcpServerCore(config()),
                             service._Durable(lease_store, sock, log),  # type: ignore[arg-type]
                             sock, log)  # type: ignore[arg-type]


def test_a_failed_batch_sends_no_ack_and_leaves_none_of_its_leases(
    store: tuple[SqliteLeaseStore, Path],
) -> None:
    """No ACK without its lease on disk: the database refuses the second lease of a burst of two,
    so neither ACK leaves and neither row is kept (one transaction, all or nothing). Once the
    database accepts writes again, a retransmitted REQUEST is ACKed with its lease on disk."""
    lease_store, path = store
    refuse_inserts(path, " WHEN NEW.mac = X'525400000002'")
    sock = FakeSocket()
    receiver = durable_receiver(lease_store, sock)
    requests = []
    for n in (1, 2):
        receiver.handle(received(encode(request(MT.DISCOVER, mac(n), xid=n))))
        offered = decode(sock.sent[-1][0]).yiaddr
        requests.append(encode(request(MT.REQUEST, mac(n), xid=n, options=(
            opt_addr(Opt.SERVER_ID, SERVER), opt_addr(Opt.REQUESTED_ADDRESS, offered)))))
    for payload in requests:
        receiver.handle(received(payload))
    receiver.after_burst(2)
    assert acks(sock) == [], "an ACK left for a lease that is not in the database"
    assert on_disk(path) == set(), "part of a failed batch was committed"

    with sqlite3.connect(path) as db:
        db.execute("DROP TRIGGER refuse")
    receiver.handle(received(requests[0]))
    receiver.after_burst(1)
    assert len(acks(sock)) == 1
    assert set(acks(sock)) <= on_disk(path)


def test_a_lone_request_is_its_own_transaction_all_or_nothing(
    store: tuple[SqliteLeaseStore, Path],
) -> None:
    """A burst of one row is written as one autocommit statement: refused, it leaves no row and
    its ACK does not leave; accepted, the row is on disk (another connection reads it) before
    the ACK is sent."""
    lease_store, path = store
    refuse_inserts(path)
    sock = FakeSocket()
    seen_at_send: list[set[IPv4Address]] = []
    send = sock.sendmsg

    def sendmsg(*args: object) -> int:
        seen_at_send.append(on_disk(path))
        return send(*args)  # type: ignore[arg-type]

    sock.sendmsg = sendmsg  # type: ignore[method-assign]
    receiver = durable_receiver(lease_store, sock)
    receiver.handle(received(encode(request(MT.DISCOVER, mac(1), xid=1))))
    receiver.after_burst(1)
    offered = decode(sock.sent[-1][0]).yiaddr
    selecting = encode(request(MT.REQUEST, mac(1), xid=1, options=(
        opt_addr(Opt.SERVER_ID, SERVER), opt_addr(Opt.REQUESTED_ADDRESS, offered))))
    receiver.handle(received(selecting))
    receiver.after_burst(1)
    assert acks(sock) == [] and on_disk(path) == set()
    assert not receiver.core.leases, "the refused row stays in memory"
    with sqlite3.connect(path) as db:
        db.execute("DROP TRIGGER refuse")
    receiver.handle(received(selecting))
    receiver.after_burst(1)
    assert acks(sock) == [offered]
    assert seen_at_send[-1] == {offered}, "the ACK left before its lease was on disk"


class WindowRig:
    """A receiver with a commit window on a fake clock: ``slept`` holds its waits, ``queued``
    the datagrams that arrive during one (a wait's drain handles them)."""

    def __init__(self, window: float, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 100.0
        self.slept: list[float] = []
        self.queued: list[bytes] = []
        monkeypatch.setattr(service, "time", SimpleNamespace(
            monotonic=lambda: self.now, time=time.time, sleep=self.slept.append))
        self.sock = FakeSocket()
        log = structlog.get_logger()
        pool = config(subnets=first_subnet(pools=["10.51.1.100-10.51.1.199"]))
        self.receiver = service._Receiver(DhcpServerCore(pool), service._Durable(
            FakeStore(self.sock), self.sock, log), self.sock, log,  # type: ignore[arg-type]
            window=window)
        self.receiver.loop.drain = self.drain  # type: ignore[method-assign]

    def drain(self, limit: int) -> int:
        taken, self.queued = self.queued[:limit], self.queued[limit:]
        for payload in taken:
            self.receiver.handle(received(payload))
        return len(taken)

    def step(self, payload: bytes, seconds: float, burst: int = 1) -> bytes:
        """One datagram ``seconds`` after the previous one, in a burst of ``burst``: the last
        reply sent."""
        self.now += seconds
        self.receiver.handle(received(payload))
        self.receiver.after_burst(burst)
        return self.sock.sent[-1][0]

    def selecting(self, n: int, gap: float) -> bytes:
        """Client ``n``'s DISCOVER, ``gap`` after the previous datagram: its REQUEST."""
        offer = decode(self.step(encode(request(MT.DISCOVER, mac(n), xid=n)), gap))
        return encode(request(MT.REQUEST, mac(n), xid=n, options=(
            opt_addr(Opt.SERVER_ID, SERVER), opt_addr(Opt.REQUESTED_ADDRESS, offer.yiaddr))))

    def client(self, n: int, gap: float, burst: int = 1) -> bytes:
        """Client ``n``'s DORA, its DISCOVER ``gap`` after the previous datagram: the ACK."""
        return self.step(self.selecting(n, gap), 0.0003, burst)


def test_a_lone_clients_dora_never_waits_for_the_commit_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With a commit window, only commits in a steady stream (bursts of a few datagrams, less
    than BUSY_GAP after the previous commit) wait for company. A lone client's REQUEST, right
    after its DISCOVER, is committed and ACKed at once: its DISCOVER committed nothing."""
    rig = WindowRig(0.05, monkeypatch)
    assert decode(rig.client(1, 0.5)).message_type == MT.ACK  # the first client since the start
    assert rig.slept == []
    assert decode(rig.client(2, 0.5)).message_type == MT.ACK  # a lone client after a pause
    assert rig.slept == []
    rig.client(3, service.BUSY_GAP / 4)  # its REQUEST follows a commit closely: it waits
    assert rig.slept == [0.05]
    rig.client(4, service.BUSY_GAP / 4, service.COALESCE_BELOW + 1)  # a backlog never waits
    assert rig.slept == [0.05]
    rig.client(5, service.BUSY_GAP / 4)
    assert rig.slept == [0.05, 0.05]


def test_the_commit_window_is_skipped_while_waiting_catches_nobody(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Steady requests spaced wider than the window (perfdhcp's periodic 500 DORA/s against a
    1 ms window): each wait is a wake-up that catches no datagram. After WAITS_IN_VAIN such
    waits the receiver stops waiting but for one probe every PROBE_EVERY commits; once a wait
    catches company again (the rate rose), it waits again. Every ACK still leaves after its
    commit, one per REQUEST while alone."""
    window = 0.001
    rig = WindowRig(window, monkeypatch)
    clients = 1 + service.WAITS_IN_VAIN + 2 * service.PROBE_EVERY
    for n in range(1, clients + 1):
        assert decode(rig.client(n, 2 * window)).message_type == MT.ACK
    # The first REQUEST follows no commit; the next WAITS_IN_VAIN wait, then two probes.
    assert len(rig.slept) == service.WAITS_IN_VAIN + 2
    assert rig.receiver.waits_in_vain == service.WAITS_IN_VAIN + 2
    waits = {k: v for k, v in rig.receiver.counts.items() if k.startswith("wait.")}
    assert waits == {"wait.caught": 0, "wait.in_vain": service.WAITS_IN_VAIN + 2,
                     "wait.skipped": 2 * (service.PROBE_EVERY - 1)}
    writes = rig.receiver.durable.store.writes  # type: ignore[attr-defined]
    assert [len(leases) for leases, _ in writes] == [1] * clients

    # Twice the rate: another client's REQUEST arrives within every window. The next probe
    # catches it, and from then on every commit waits and is shared by two.
    waits, n = len(rig.slept), clients
    for _ in range(service.PROBE_EVERY + 4):
        n += 2
        company = rig.selecting(n + 1, window / 4)
        rig.queued.append(company)
        rig.client(n, window / 4)
        rig.queued.clear()  # not caught by a wait: it would have come in the next burst
    caught_from = len(writes) - 4
    assert len(rig.slept) == waits + 5, "waiting did not resume once it caught company"
    assert [len(leases) for leases, _ in writes[caught_from:]] == [2] * 4
    assert rig.receiver.waits_in_vain == 0
    assert rig.receiver.counts["wait.caught"] == 5


def test_a_client_renewing_in_a_loop_does_not_grow_the_timers_and_still_expires() -> None:
    """Found by tests/bench/soak.py (the server's RSS grew with every renewal): each renewal left
    a timer behind until lease_time had passed. Now the timers stay proportional to the leases and
    offers, and the lease still expires lease_time after its last renewal."""
    core = DhcpServerCore(config())
    quiet = dora(core, mac(2))  # bound once, at 0: its timer must survive the sweeps
    address = dora(core, mac(1))
    renew = dgram(request(MT.REQUEST, mac(1), giaddr=ZERO, ciaddr=address))
    for n in range(20_000):
        assert reply_of(core.handle(renew, 1.0 + n * 0.001)).message_type == MT.ACK
    last = 1.0 + 19_999 * 0.001
    assert len(core._timers) <= 2 * (len(core.leases) + len(core.offers)) + 1024
    lease_time = 600  # the first subnet's
    assert [c.lease.address for c in core.on_timer(lease_time)] == [quiet]
    assert core.on_timer(last + lease_time - 1) == []
    assert [c.lease.address for c in core.on_timer(last + lease_time)] == [address]
    assert core.leases[int(address)].state.value == "expired"


def test_subnet_cache_of_the_core_is_bounded() -> None:
    """giaddr comes from the network: the core's address -> subnet cache stays at 4096 entries,
    and answers right after an eviction."""
    core = DhcpServerCore(config())
    for n in range(4096 + 100):
        giaddr = IPv4Address(0x0A330000 + 256 * 4 + n)  # 10.51.4.0 onwards: no subnet
        core.handle(dgram(request(MT.DISCOVER, mac(1), giaddr=giaddr)), 0.0)
        assert len(core._subnet_of) <= 4096
    assert reply_of(core.handle(dgram(request(MT.DISCOVER, mac(1))), 0.0)).message_type == MT.OFFER
