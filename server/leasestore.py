"""Lease persistence behind a small interface; SQLite (WAL, synchronous=FULL) is the default.

``write`` is the group commit: every row of one receive burst in one transaction (one prepared
INSERT OR REPLACE, executemany; a single row as one autocommit statement), committed and synced
before it returns, so the shell can send the ACKs that depend on them afterwards.

A database that cannot be read whole (not SQLite, damaged, another program's schema, a row this
version does not understand, a directory) is refused with a LeaseDbError, never repaired or
replaced silently: the leases in it are promises to clients.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Sequence
from ipaddress import IPv4Address, IPv6Address
from typing import Protocol
from urllib.parse import quote

from boothop.relay.settings import DaemonError
from boothop.server.dhcp.lease import Lease, LeaseState
from boothop.server.dhcp6.lease import Lease6

_COLUMNS = ("address", "state", "client_key", "mac", "client_id", "subnet", "starts", "expires",
            "hostname")
#: DHCPv6 bindings, in the same file and under the same sync rule: one row per address.
_COLUMNS6 = ("address", "state", "duid", "iaid", "subnet", "starts", "expires", "mac")
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
CREATE TABLE IF NOT EXISTS leases6 (
    address   TEXT PRIMARY KEY,
    state     TEXT NOT NULL,
    duid      BLOB NOT NULL,
    iaid      INTEGER NOT NULL,
    subnet    TEXT NOT NULL,
    starts    REAL NOT NULL,
    expires   REAL,
    mac       BLOB
);
"""
#: A serving store's WAL file is kept at this many frames (see _grow_wal): SQLite's automatic
#: checkpoint (every 1000 pages, its default) lets the next commit start the WAL over from its
#: beginning; the rest is margin for a burst that crosses the checkpoint's threshold (up to 128
#: rows, a page each at worst).
WAL_FRAMES = 1200
#: The WAL file's header and each frame's, in bytes (https://sqlite.org/fileformat2.html#walformat).
WAL_HEADER, FRAME_HEADER = 32, 24


def _upsert(client_id: bool, hostname: bool) -> str:
    values = ("?, ?, ?, ?, " + ("?" if client_id else "NULL") + ", ?, ?, ?, "
              + ("?" if hostname else "NULL"))
    return f"INSERT OR REPLACE INTO leases VALUES ({values})"


#: The row's statement by whether it has a client identifier and a hostname: the absent ones are
#: NULL in the statement, not bound. The sqlite3 module binds int, float, str and bytearray
#: directly but runs its adapter lookup (about 3k instructions) for every other value, None and
#: bytes included: hence NULLs in the text and BLOBs as bytearray (stored and read back the same).
_UPSERTS = {(client_id, hostname): _upsert(client_id, hostname)
            for client_id in (False, True) for hostname in (False, True)}
#: ``LeaseState.value`` is a Python property: the column's text by state.
_STATE_TEXT = {state: state.value for state in LeaseState}


def _upsert_of(lease: Lease) -> tuple[str, tuple[object, ...]]:
    """The statement that writes ``lease`` (see _UPSERTS) and the row it binds, built as one
    tuple per shape (one allocation a row, not a tuple extended field by field)."""
    client_id, hostname = lease.client_id, lease.hostname
    address, state, mac = int(lease.address), _STATE_TEXT[lease.state], bytearray(lease.mac)
    if client_id is None:
        if hostname is None:
            return _UPSERTS[(False, False)], (address, state, lease.client_key, mac, lease.subnet,
                                             lease.starts, lease.expires)
        return _UPSERTS[(False, True)], (address, state, lease.client_key, mac, lease.subnet,
                                        lease.starts, lease.expires, hostname)
    if hostname is None:
        return _UPSERTS[(True, False)], (address, state, lease.client_key, mac,
                                        bytearray(client_id), lease.subnet, lease.starts,
                                        lease.expires)
    return _UPSERTS[(True, True)], (address, state, lease.client_key, mac, bytearray(client_id),
                                   lease.subnet, lease.starts, lease.expires, hostname)


class LeaseDbError(DaemonError):
    """The lease database cannot be used: which file, what is wrong, what to do."""

    def __init__(self, path: str, problem: str, *, unreadable: bool = True) -> None:
        self.path, self.problem = path, problem
        advice = (
            f"move it aside (mv {path} {path}.broken) and run `boothop-server reconcile` to start "
            "a new one with the configured reservations (dynamic leases are then forgotten)"
            if unreadable else "check dhcp.lease_db and the permissions of its directory")
        super().__init__(f"lease database {path}: {problem}; nothing was changed: {advice}")


class LeaseStore(Protocol):
    """What the server needs from a lease database; a networked backend implements the same."""

    def load(self) -> list[Lease]: ...

    def write(self, leases: Sequence[Lease], deletes: Iterable[IPv4Address] = ()) -> None:
        """Upsert rows by address and delete ``deletes`` in one durable transaction."""

    def load6(self) -> list[Lease6]: ...

    def write6(self, leases: Sequence[Lease6], deletes: Iterable[IPv6Address] = ()) -> None:
        """``write`` for the DHCPv6 bindings."""

    def prepare_to_serve(self) -> str | None:
        """Called by a server once it has read the rows (a database it refuses is left as it
        was), before the commits that replies wait for. None, or what could not be done: the
        store works all the same (the server logs it as a warning)."""

    def close(self) -> None: ...


class SqliteLeaseStore:
    """``create``: make the file (and its directory) when missing; ``check`` does not."""

    def __init__(self, path: str, *, create: bool = True) -> None:
        self.path = path
        if os.path.isdir(path):
            raise LeaseDbError(path, "is a directory, not a file")
        try:
            if create:
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            # check_same_thread=False: the shell commits from a worker thread, one call at a time.
            uri = f"file:{quote(os.path.abspath(path))}?mode={'rwc' if create else 'rw'}"
            self._db = sqlite3.connect(uri, uri=True, isolation_level=None,
                                       check_same_thread=False)
        except (OSError, sqlite3.Error) as error:
            raise LeaseDbError(path, f"cannot be opened ({error})", unreadable=False) from error
        try:
            self._verify()
            # FULL: a WAL commit is fsynced before COMMIT returns, so a lease survives power loss.
            self._db.execute("PRAGMA synchronous=FULL")
            if create:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.executescript(_SCHEMA)
        except sqlite3.Error as error:
            self._db.close()
            raise LeaseDbError(path, f"not a usable SQLite database ({error})") from error
        except LeaseDbError:
            self._db.close()
            raise

    def _verify(self) -> None:
        """Refuse a file that is not SQLite, is damaged, or holds another program's tables."""
        problems = [row[0] for row in self._db.execute("PRAGMA quick_check").fetchall()]
        if problems != ["ok"]:
            raise LeaseDbError(self.path, f"damaged ({'; '.join(problems[:3])})")
        tables = {row[0] for row in self._db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")}
        if tables and "leases" not in tables:
            raise LeaseDbError(self.path, "not a boothop lease database (tables: "
                               f"{', '.join(sorted(tables))})")
        for table, expected in (("leases", _COLUMNS), ("leases6", _COLUMNS6)):
            if table not in tables:
                continue
            columns = tuple(row[1] for row in self._db.execute(f"PRAGMA table_info({table})"))
            if columns != expected:
                raise LeaseDbError(self.path, f"its {table} table has the columns "
                                   f"{', '.join(columns)}, not boothop's")

    def prepare_to_serve(self) -> str | None:
        try:
            self._grow_wal()
        except (OSError, sqlite3.Error) as error:  # no room on the disk, most likely
            return f"its write-ahead log was not grown, commits are slower ({error})"
        return None

    def _grow_wal(self) -> None:
        """Grow the WAL file to WAL_FRAMES frames of zeros, written and synced, and keep it so.

        An fdatasync of a file that grew must also commit its new size (on ext4 a journal
        commit): on this machine's disk a lone lease row's synced write took 0.33 ms into a
        grown WAL against 0.46 ms into a growing one, and a lone client's REQUEST-ACK 0.48
        against 0.63 ms (medians of 6 interleaved pairs; ARCHITECTURE.md, "A lone client's
        DORA").
        Without this, every start begins with an empty WAL (the last connection to close deletes
        it) and a lone client's commits append to it for their first thousand pages. Once
        grown, the file is overwritten, not truncated, each time SQLite starts the WAL over
        ("SQLite reuses the existing file for subsequent WAL entries since overwriting is faster
        than appending", PRAGMA journal_size_limit), and a larger transaction's growth is given
        back down to journal_size_limit at the next start-over.

        The zeros go past the WAL's end, where SQLite reads nothing but in recovery, which stops
        at the first frame whose salt is not the header's (a zero header is an empty WAL): they
        are what a start-over leaves past its last frame, invalid frames. Written under SQLite's
        write lock on the WAL (an IMMEDIATE transaction, writing nothing itself), so no other
        connection appends meanwhile. One write and one sync: SQLite's own would be two writes
        a frame and a checkpoint of every page.
        """
        page = self._db.execute("PRAGMA page_size").fetchone()[0]
        size = WAL_HEADER + WAL_FRAMES * (page + FRAME_HEADER)
        self._db.execute(f"PRAGMA journal_size_limit={size}")
        with _Transaction(self._db):
            fd = os.open(f"{self.path}-wal", os.O_WRONLY)
            try:
                end = os.fstat(fd).st_size
                zeros = memoryview(bytes(max(0, size - end)))
                try:
                    while zeros:  # a write may take part: the rest goes on where it ended
                        zeros = zeros[os.pwrite(fd, zeros, size - len(zeros)):]
                    os.fsync(fd)
                except OSError:
                    os.ftruncate(fd, end)  # the space back, for the frames that matter
                    raise
            finally:
                os.close(fd)

    def load(self) -> list[Lease]:
        try:
            rows = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM leases ORDER BY address"
                                    ).fetchall()
        except sqlite3.Error as error:
            raise LeaseDbError(self.path, f"cannot be read ({error})") from error
        leases = []
        for row in rows:
            a, state, key, mac, cid, subnet, starts, expires, hostname = row
            try:
                leases.append(Lease(IPv4Address(a), LeaseState(state), key, bytes(mac),
                                    bytes(cid) if cid is not None else None, subnet, starts,
                                    expires, hostname))
            except (ValueError, TypeError) as error:
                raise LeaseDbError(self.path, f"the row of address {a!r} is not valid ({error})"
                                   ) from error
        return leases

    def write(self, leases: Sequence[Lease], deletes: Iterable[IPv4Address] = ()) -> None:
        if len(leases) == 1 and not deletes:  # the shell's commit passes no deletes: ()
            # One statement in autocommit: SQLite makes it a transaction of its own, committed
            # (and synced) before execute returns, without the two statements of an explicit
            # one (a lone client's REQUEST is such a burst: 53k -> 42k instructions).
            self._db.execute(*_upsert_of(leases[0]))
            return
        gone = [(int(a),) for a in deletes]
        if not leases and not gone:
            return
        # Rows by the statement that takes them: see _UPSERTS.
        shapes: dict[str, list[tuple[object, ...]]] = {}
        for lease in leases:
            statement, row = _upsert_of(lease)
            rows = shapes.get(statement)
            if rows is None:  # not setdefault: its default would be a new list per row
                rows = shapes[statement] = []
            rows.append(row)
        with _Transaction(self._db):
            if gone:
                self._db.executemany("DELETE FROM leases WHERE address = ?", gone)
            for statement, rows in shapes.items():
                self._db.executemany(statement, rows)

    def load6(self) -> list[Lease6]:
        try:
            rows = self._db.execute(f"SELECT {', '.join(_COLUMNS6)} FROM leases6").fetchall()
        except sqlite3.OperationalError as error:
            if "no such table" in str(error):  # a file written before DHCPv6, opened read-only
                return []
            raise LeaseDbError(self.path, f"cannot be read ({error})") from error
        except sqlite3.Error as error:
            raise LeaseDbError(self.path, f"cannot be read ({error})") from error
        leases = []
        for address, state, duid, iaid, subnet, starts, expires, mac in rows:
            try:
                leases.append(Lease6(IPv6Address(address), LeaseState(state), bytes(duid),
                                     int(iaid), subnet, starts, expires,
                                     bytes(mac) if mac is not None else None))
            except (ValueError, TypeError) as error:
                raise LeaseDbError(self.path, f"the row of address {address!r} is not valid "
                                   f"({error})") from error
        return sorted(leases, key=lambda lease: lease.address)

    def write6(self, leases: Sequence[Lease6], deletes: Iterable[IPv6Address] = ()) -> None:
        gone = [(str(a),) for a in deletes]
        if not leases and not gone:
            return
        with _Transaction(self._db):
            if gone:
                self._db.executemany("DELETE FROM leases6 WHERE address = ?", gone)
            self._db.executemany(
                f"INSERT OR REPLACE INTO leases6 VALUES ({', '.join('?' * len(_COLUMNS6))})",
                [(str(lease.address), lease.state.value, lease.duid, lease.iaid, lease.subnet,
                  lease.starts, lease.expires, lease.mac) for lease in leases],
            )

    def close(self) -> None:
        self._db.close()


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self._db.execute("COMMIT")
        elif self._db.in_transaction:
            # SQLite may have rolled back by itself (SQLITE_FULL): ROLLBACK would then fail
            # and hide the error that matters.
            self._db.execute("ROLLBACK")


def open_store(path: str, *, create: bool = True) -> LeaseStore:
    return SqliteLeaseStore(path, create=create)
