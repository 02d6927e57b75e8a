"""Lease persistence behind a small interface; SQLite (WAL, synchronous=FULL) is the default.

``write`` is the group commit: every row of one receive burst in one transaction (one prepared
INSERT OR REPLACE, executemany), committed and synced before it returns, so the shell can send the
ACKs that depend on them afterwards.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Sequence
from ipaddress import IPv4Address
from typing import Protocol

from boothop.server.dhcp.lease import Lease, LeaseState

_SCHEMA = """
CREATE TABLE IF NOT EXISTS leases (
    address   INTEGER PRIMARY KEY,
    state     TEXT NOT NULL,
    client_key TEXT NOT NULL,
    mac       BLOB NOT NULL,
    client_id BLOB,
    subnet    TEXT NOT NULL,
    starts    REAL NOT NULL,
    expires   REAL,
    hostname  TEXT
);
"""


class LeaseStore(Protocol):
    """What the server needs from a lease database; a networked backend implements the same."""

    def load(self) -> list[Lease]: ...

    def write(self, leases: Sequence[Lease]) -> None:
        """Upsert rows by address in one durable transaction."""

    def delete(self, addresses: Iterable[IPv4Address]) -> None: ...

    def close(self) -> None: ...


class SqliteLeaseStore:
    def __init__(self, path: str) -> None:
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        # check_same_thread=False: the shell commits from a worker thread, one call at a time.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a WAL commit is fsynced before COMMIT returns, so a lease survives power loss.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def load(self) -> list[Lease]:
        rows = self._db.execute(
            "SELECT address, state, client_key, mac, client_id, subnet, starts, expires, hostname"
            " FROM leases ORDER BY address"
        ).fetchall()
        return [
            Lease(IPv4Address(a), LeaseState(state), key, bytes(mac),
                  bytes(cid) if cid is not None else None, subnet, starts, expires, hostname)
            for a, state, key, mac, cid, subnet, starts, expires, hostname in rows
        ]

    def write(self, leases: Sequence[Lease]) -> None:
        if not leases:
            return
        with self._transaction():
            self._db.executemany(
                "INSERT OR REPLACE INTO leases VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(int(lease.address), lease.state.value, lease.client_key, lease.mac,
                  lease.client_id, lease.subnet, lease.starts, lease.expires, lease.hostname)
                 for lease in leases],
            )

    def delete(self, addresses: Iterable[IPv4Address]) -> None:
        with self._transaction():
            self._db.executemany("DELETE FROM leases WHERE address = ?",
                                 [(int(a),) for a in addresses])

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    def close(self) -> None:
        self._db.close()


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self._db.execute("ROLLBACK" if exc_type is not None else "COMMIT")


def open_store(path: str) -> LeaseStore:
    return SqliteLeaseStore(path)
