"""The server shell without sockets: replies that promise a lease leave only after its commit."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from ipaddress import IPv4Address

import structlog
from structlog.testing import capture_logs
from test_server_helpers import MT, RELAY_A, SERVER, config, mac, opt_addr, request

from boothop.relay.wire import Datagram, decode, encode
from boothop.server.dhcp.actions import Commit, Send
from boothop.server.dhcp.core import DhcpServerCore
from boothop.server.dhcp.lease import Lease
from boothop.server.dhcp.service import _Durable, _Receiver, _Stats


class FakeSocket:
    """Records what the shell sends."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def sendmsg(self, buffers: list[bytes], ancillary: object, flags: int,
                address: tuple[str, int]) -> int:
        self.sent.append((b"".join(buffers), address))
        return sum(map(len, buffers))


class FakeStore:
    """A lease store that notes, at each write, how many replies had already been sent."""

    def __init__(self, sock: FakeSocket, fail: bool = False) -> None:
        self.sock, self.fail = sock, fail
        self.writes: list[tuple[list[Lease], int]] = []

    def write(self, leases: Sequence[Lease]) -> None:
        if self.fail:
            raise sqlite3.OperationalError("disk I/O error")
        self.writes.append((list(leases), len(self.sock.sent)))


def received(payload: bytes) -> Datagram:
    """What the shell ring hands the core for a relayed request that reached SERVER."""
    return Datagram(payload, RELAY_A, 67, SERVER, 7, SERVER, 67, "srv0")


def shell(fail: bool = False) -> tuple[_Receiver, _Durable, FakeSocket, FakeStore]:
    sock = FakeSocket()
    store = FakeStore(sock, fail)
    log = structlog.get_logger()
    durable = _Durable(store, sock, log)  # type: ignore[arg-type]
    return _Receiver(DhcpServerCore(config()), durable, sock, log), durable, sock, store  # type: ignore[arg-type]


def dora(receiver: _Receiver, sock: FakeSocket, n: int) -> tuple[list[Commit], list[Send]]:
    """DISCOVER then REQUEST for client ``n``: the OFFER is sent at once, the ACK held back."""
    receiver.handle(received(encode(request(MT.DISCOVER, mac(n), xid=n))))
    offer = decode(sock.sent[-1][0])
    assert offer.message_type == MT.OFFER and receiver.take_burst() == ([], [])
    receiver.handle(received(encode(request(
        MT.REQUEST, mac(n), xid=n, options=(opt_addr(54, SERVER), opt_addr(50, offer.yiaddr))))))
    return receiver.take_burst()


def test_ack_leaves_only_after_its_lease_is_written() -> None:
    receiver, durable, sock, store = shell()
    commits, promises = [], []
    for n in (1, 2):
        c, p = dora(receiver, sock, n)
        commits += c
        promises += p
    offers = len(sock.sent)
    assert offers == 2 and [p.kind.value for p in promises] == ["ack", "ack"]
    durable.commit(commits, promises, durable.generation)
    # One transaction for both leases (group commit), written before either ACK was sent.
    assert len(store.writes) == 1 and store.writes[0][1] == offers
    assert [lease.address for lease in store.writes[0][0]] == [
        IPv4Address(decode(payload).yiaddr) for payload, _ in sock.sent[offers:]]
    assert [decode(payload).message_type for payload, _ in sock.sent[offers:]] == [MT.ACK, MT.ACK]
    assert durable.counts["commits"] == 1 and durable.counts["lease.bound"] == 2


def test_store_failure_withholds_the_acks() -> None:
    receiver, durable, sock, _ = shell(fail=True)
    commits, promises = dora(receiver, sock, 3)
    sent = len(sock.sent)
    with capture_logs() as logs:
        durable.commit(commits, promises, durable.generation)
    assert len(sock.sent) == sent, "an ACK left for a lease that is not in the database"
    assert durable.counts["store.failed"] == 1
    assert [e["event"] for e in logs] == ["server.store.failed"]


def test_per_packet_lines_are_debug_only() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(20))  # info
    try:
        with capture_logs() as logs:
            receiver, durable, sock, _ = shell()
            durable.commit(*dora(receiver, sock, 4), durable.generation)
        assert not [
            e for e in logs if e["event"] in ("server.offer", "server.ack", "server.lease.bound")
        ]
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(10))  # debug
        with capture_logs() as logs:
            receiver, durable, sock, _ = shell()
            durable.commit(*dora(receiver, sock, 5), durable.generation)
        events = [e["event"] for e in logs]
        assert (
            "server.offer" in events and "server.ack" in events and "server.lease.bound" in events
        )
    finally:
        structlog.reset_defaults()


def test_info_summary_line_counts_every_thread_and_repeats_only_on_change() -> None:
    receiver, durable, sock, _ = shell()
    durable.commit(*dora(receiver, sock, 6), durable.generation)
    stats = _Stats(structlog.get_logger(), receiver.counts.copy, durable.counts.copy)
    with capture_logs() as logs:
        stats.maybe_log(1)  # not yet due
        stats.next = 0.0
        stats.maybe_log(1)
        stats.next = 0.0
        stats.maybe_log(1)  # nothing changed: no second line
    assert len(logs) == 1 and logs[0]["event"] == "server.stats" and logs[0]["log_level"] == "info"
    assert logs[0]["offer"] == 1 and logs[0]["ack"] == 1 and logs[0]["lease.bound"] == 1
    assert logs[0]["commits"] == 1 and logs[0]["leases"] == 1
