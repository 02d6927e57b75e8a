"""The serving store's WAL: grown once before serving, then overwritten, never grown by a commit.

What server/leasestore.py's ``prepare_to_serve`` (``_grow_wal``) relies on, held against the
SQLite this runs on: a commit into the grown file does not change its size (so its fdatasync
has no size to commit), also across SQLite's automatic checkpoints (the WAL started over from
its beginning, not truncated), and a large transaction's growth is given back
(journal_size_limit).
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from ipaddress import IPv4Address
from pathlib import Path

from boothop.server.dhcp.lease import Lease, LeaseState
from boothop.server.leasestore import (
    FRAME_HEADER,
    WAL_FRAMES,
    WAL_HEADER,
    SqliteLeaseStore,
)

PAGE = 4096  # SQLite's default page size
GROWN = WAL_HEADER + WAL_FRAMES * (PAGE + FRAME_HEADER)


def lease(n: int, hostname: str | None = None) -> Lease:
    return Lease(IPv4Address(0x0A340000 + n), LeaseState.BOUND, f"hw:1:{n:012x}",
                 n.to_bytes(6, "big"), None, "10.52.0.0/16", 1.0, 601.0, hostname)


def serving(path: Path) -> SqliteLeaseStore:
    """The store as a server opens it."""
    store = SqliteLeaseStore(str(path))
    assert store.prepare_to_serve() is None
    return store


def restarts(wal: Path) -> int:
    """The WAL header's checkpoint sequence number: SQLite adds one each time it starts the WAL
    over (https://sqlite.org/fileformat2.html#walformat)."""
    return int.from_bytes(wal.read_bytes()[12:16], "big")


def test_a_serving_stores_wal_is_grown_once_and_no_commit_grows_it(tmp_path: Path) -> None:
    """Grown and written (not sparse) before serving; a thousand lone rows later (past the
    automatic checkpoint, so the WAL was started over at least once) and after a burst, the same
    size, and every row is read back by another connection."""
    path = tmp_path / "leases.sqlite3"
    wal = Path(f"{path}-wal")
    store = serving(path)
    try:
        grown = wal.stat().st_size
        assert grown == GROWN
        assert wal.stat().st_blocks * 512 >= grown, "the WAL's blocks are not written"
        assert path.stat().st_size < 100 * PAGE, "the database file grew"
        store.write([lease(0)])
        first = restarts(wal)
        for n in range(1, 1100):
            store.write([lease(n)])
            assert wal.stat().st_size == grown, f"commit {n} grew the WAL"
        store.write([lease(n) for n in range(1100, 1228)])
        assert wal.stat().st_size == grown, "a burst grew the WAL"
        assert restarts(wal) > first, "no automatic checkpoint: the test did not cross one"
        with sqlite3.connect(path) as other:
            assert other.execute("SELECT count(*) FROM leases").fetchone() == (1228,)
    finally:
        store.close()


def test_a_large_transactions_growth_is_given_back_and_a_reopen_does_not_grow_again(
    tmp_path: Path,
) -> None:
    """A transaction larger than the grown WAL makes it larger; the commit that next starts the
    WAL over truncates it to the grown size (journal_size_limit), not below. A store opened
    again finds the WAL grown (kept while another connection holds it open) and leaves it so."""
    path = tmp_path / "leases.sqlite3"
    wal = Path(f"{path}-wal")
    store = serving(path)
    holder = sqlite3.connect(path)  # keeps the WAL file when the store closes
    try:
        holder.execute("SELECT count(*) FROM leases").fetchone()
        assert wal.stat().st_size == GROWN
        store.write([lease(n, hostname="h" * 400) for n in range(12000)])  # some 1,300 pages
        assert wal.stat().st_size > GROWN
        store.write([lease(0)])
        assert wal.stat().st_size == GROWN
        store.close()
        again = serving(path)
        assert wal.stat().st_size == GROWN
        again.write([lease(1)])
        assert wal.stat().st_size == GROWN
        assert len(again.load()) == 12000
        again.close()
    finally:
        holder.close()


def test_only_a_serving_store_grows_its_wal(tmp_path: Path) -> None:
    """`check`, `reconcile` and `leases` open the store without writing megabytes."""
    path = tmp_path / "leases.sqlite3"
    store = SqliteLeaseStore(str(path))
    try:
        assert Path(f"{path}-wal").stat().st_size < WAL_FRAMES * PAGE // 10
    finally:
        store.close()


def test_the_growth_waits_for_sqlites_write_lock_on_the_wal(tmp_path: Path) -> None:
    """The zeros are written past the WAL's end under SQLite's write lock: while another
    connection writes, the store does not grow the WAL (it would overwrite that connection's
    new frames) but says the database is locked; once the writer is done, it grows it, and the
    writer's row is intact."""
    path = tmp_path / "leases.sqlite3"
    serving(path).close()
    writer = sqlite3.connect(path, isolation_level=None)
    store = SqliteLeaseStore(str(path))
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("INSERT INTO leases VALUES (1, 'bound', 'k', x'01', NULL, '10.0.0.0/8', "
                       "1, 2, NULL)")
        store._db.execute("PRAGMA busy_timeout = 50")
        assert "database is locked" in str(store.prepare_to_serve())
        writer.execute("COMMIT")
        assert store.prepare_to_serve() is None
        assert Path(f"{path}-wal").stat().st_size == GROWN
        assert [lease.address for lease in store.load()] == [IPv4Address(1)]
    finally:
        writer.close()
        store.close()
    with sqlite3.connect(path) as reader:
        assert reader.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert reader.execute("SELECT address FROM leases").fetchall() == [(1,)]


GROW_UNDER_A_LIMIT = """
import os, resource, signal, sys
from ipaddress import IPv4Address
from boothop.server.dhcp.lease import Lease, LeaseState
from boothop.server.leasestore import SqliteLeaseStore
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
store = SqliteLeaseStore(sys.argv[1])
wal = os.path.getsize(sys.argv[1] + "-wal")
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
print(store.prepare_to_serve())
print(os.path.getsize(sys.argv[1] + "-wal") == wal)
store.write([Lease(IPv4Address("10.52.1.1"), LeaseState.BOUND, "k", bytes(6), None,
                   "10.52.0.0/16", 1.0, 2.0)])
"""


def test_a_wal_that_cannot_be_grown_is_given_back_and_the_store_works(tmp_path: Path) -> None:
    """No room for the growth (files limited to 1 MiB): the store says why, takes back what it
    wrote of the zeros (the room is for the frames that matter) and writes leases all the same."""
    path = tmp_path / "leases.sqlite3"
    done = subprocess.run([sys.executable, "-c", GROW_UNDER_A_LIMIT, str(path)],
                          capture_output=True, text=True, timeout=30, check=True)
    problem, given_back = done.stdout.splitlines()
    assert "write-ahead log was not grown" in problem and "File too large" in problem, problem
    assert given_back == "True"
    assert [lease.address for lease in SqliteLeaseStore(str(path)).load()] == [
        IPv4Address("10.52.1.1")]
