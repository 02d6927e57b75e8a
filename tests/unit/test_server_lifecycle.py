"""The server's lifecycle without sockets: broken lease databases, a store that fails, reload."""

from __future__ import annotations

import io
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs
from test_server_config import write_config
from test_server_helpers import BASE_TOML, MT, config, mac, opt_addr, request
from test_server_service import FakeSocket, dora, received

from boothop.relay.settings import EXIT_FAILURE, ConfigError, DaemonError
from boothop.relay.wire import decode, encode
from boothop.server.cli import main
from boothop.server.config import check_reload, load_config
from boothop.server.dhcp.core import DhcpServerCore
from boothop.server.dhcp.lease import Lease, LeaseState
from boothop.server.dhcp.service import (
    DhcpService,
    _Durable,
    _Receiver,
    _Stats,
    startup_reconcile,
)
from boothop.server.leasestore import SqliteLeaseStore

# -- broken lease databases ------------------------------------------------------------------


def _random_bytes(db: Path) -> None:
    db.write_bytes(os.urandom(8192))


def _truncated(db: Path) -> None:
    store = SqliteLeaseStore(str(db))
    store.write([Lease(IPv4Address(0x0A000000 + i), LeaseState.BOUND, f"k{i}", b"\1" * 6, None,
                       "10.0.0.0/8", 1.0, 2.0, "h" * 50) for i in range(2000)])
    store.close()
    os.truncate(db, db.stat().st_size // 2)


def _foreign_schema(db: Path) -> None:
    with sqlite3.connect(db) as connection:
        connection.execute("CREATE TABLE hosts (name TEXT)")


def _bad_state(db: Path) -> None:
    SqliteLeaseStore(str(db)).close()
    with sqlite3.connect(db) as connection:
        connection.execute("INSERT INTO leases VALUES (167837962, 'haunted', 'k', x'01', NULL, "
                           "'10.1.1.0/24', 1, 2, NULL)")
        connection.commit()
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the row in the file itself


def _directory(db: Path) -> None:
    db.mkdir()


BROKEN: dict[str, tuple[Callable[[Path], None], str]] = {
    "random bytes": (_random_bytes, "file is not a database"),
    "truncated": (_truncated, "malformed"),
    "foreign schema": (_foreign_schema, "not a boothop lease database (tables: hosts)"),
    "bad state": (_bad_state, "the row of address 167837962 is not valid"),
    "directory": (_directory, "is a directory"),
}


def _snapshot(db: Path) -> object:
    return sorted(os.listdir(db)) if db.is_dir() else db.read_bytes()


def _command(command: str, config: Path) -> tuple[int, str]:
    """Exit status and stderr; ``run`` in a child with a bound (an ephemeral port, should it
    start serving after all)."""
    if command != "run":
        with pytest.MonkeyPatch.context() as patch:
            err = io.StringIO()
            patch.setattr(sys, "stderr", err)
            return main([command, "-c", str(config)]), err.getvalue()
    config.write_text(config.read_text().replace("[dhcp]\n", "[dhcp]\nport = 0\n"))
    try:
        done = subprocess.run([sys.executable, "-m", "boothop.server", "run", "-c", str(config)],
                              capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("run served a broken lease database")
    return done.returncode, done.stderr


@pytest.mark.parametrize("command", ["run", "check", "leases", "reconcile"])
@pytest.mark.parametrize("kind", list(BROKEN))
def test_a_broken_lease_database_is_one_clear_line_and_exit_1(
        tmp_path: Path, kind: str, command: str) -> None:
    make, problem = BROKEN[kind]
    path = write_config(tmp_path)
    db = tmp_path / "leases.sqlite3"
    make(db)
    before = _snapshot(db)
    code, err = _command(command, path)
    assert code == EXIT_FAILURE, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"boothop-server: lease database {db}: ") and problem in err
    assert f"mv {db} {db}.broken" in err and "boothop-server reconcile" in err
    assert _snapshot(db) == before, "a broken database was changed"


def test_check_refuses_a_lease_database_that_run_could_not_create(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("")
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace(str(tmp_path / "leases.sqlite3"),
                                             str(tmp_path / "file" / "sub" / "leases.sqlite3")))
    assert main(["check", "-c", str(path)]) == EXIT_FAILURE
    assert f"{tmp_path / 'file'} is not a directory" in capsys.readouterr().err
    assert main(["check", "-c", str(write_config(tmp_path))]) == 0
    assert not (tmp_path / "leases.sqlite3").exists(), "check created the database"


def test_leases_lists_none_without_creating_a_missing_database(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path)
    assert main(["leases", "--json", "-c", str(path)]) == 0
    assert capsys.readouterr().out.strip() == "[]"
    assert not (tmp_path / "leases.sqlite3").exists(), "leases created the database"


# -- a store that fails ----------------------------------------------------------------------


class FlakyStore:
    """A lease store that fails while ``full`` (a disk with no space) and records what it wrote."""

    def __init__(self) -> None:
        self.full = False
        self.rows: dict[IPv4Address, Lease] = {}

    def write(self, leases: Sequence[Lease], deletes: Sequence[IPv4Address] = ()) -> None:
        if self.full:
            raise sqlite3.OperationalError("database or disk is full")
        for address in deletes:
            self.rows.pop(address, None)
        self.rows.update((lease.address, lease) for lease in leases)


def flaky_shell(core: DhcpServerCore | None = None) -> tuple[_Receiver, FakeSocket, FlakyStore]:
    sock, store = FakeSocket(), FlakyStore()
    log = structlog.get_logger()
    durable = _Durable(store, sock, log)  # type: ignore[arg-type]
    receiver = _Receiver(core or DhcpServerCore(config()), durable, sock, log)  # type: ignore[arg-type]
    return receiver, sock, store


def by_address(core: DhcpServerCore) -> dict[IPv4Address, Lease]:
    """The core's lease table as the store keys it (the core keys its rows by integer)."""
    return {lease.address: lease for lease in core.leases.values()}


def test_a_failed_write_rolls_the_core_back_and_service_resumes_when_space_returns() -> None:
    receiver, sock, store = flaky_shell()
    store.full = True
    burst = dora(receiver, sock, 1)
    with capture_logs() as logs:
        receiver.commit(*burst, receiver.burst_generation)
    assert [decode(p).message_type for p, _ in sock.sent] == [MT.OFFER], "ACK without a lease"
    assert by_address(receiver.core) == {} == store.rows, "memory and disk disagree"
    assert receiver.core.by_client == {}
    assert [e["event"] for e in logs if e["log_level"] != "debug"] == ["server.store.failed"]
    store.full = False
    burst = dora(receiver, sock, 1)
    with capture_logs() as logs:
        receiver.commit(*burst, receiver.burst_generation)
    assert decode(sock.sent[-1][0]).message_type == MT.ACK
    assert by_address(receiver.core) == store.rows and len(store.rows) == 1
    assert [e["event"] for e in logs if e["log_level"] != "debug"] == ["server.store.recovered"]


def test_a_failed_renewal_restores_the_lease_it_replaced() -> None:
    receiver, sock, store = flaky_shell()
    receiver.commit(*dora(receiver, sock, 2), receiver.burst_generation)
    bound = by_address(receiver.core)
    (address,) = bound
    store.full = True
    receiver.handle(received(encode(request(MT.REQUEST, mac(2), xid=9, ciaddr=address))))
    receiver.commit(*receiver.take_burst(), receiver.burst_generation)
    assert by_address(receiver.core) == bound == store.rows
    assert receiver.core.by_client == {("10.51.1.0/24", next(iter(bound.values())).client_key):
                                       int(address)}


def test_startup_reconcile_that_cannot_be_written_reports_no_repair() -> None:
    store = FlakyStore()
    store.full = True
    store.load = list  # type: ignore[attr-defined]  # an empty database: reservations missing
    with capture_logs() as logs, pytest.raises(DaemonError, match="nothing was changed"):
        startup_reconcile(config(), store, structlog.get_logger())  # type: ignore[arg-type]
    assert logs == [], "the log reported repairs that were not written"


# -- reload ----------------------------------------------------------------------------------


def service(core: DhcpServerCore) -> tuple[DhcpService, _Receiver, FakeSocket, FlakyStore]:
    receiver, sock, store = flaky_shell(core)
    stats = _Stats(structlog.get_logger(), receiver.counts.copy)
    return DhcpService(receiver, stats, structlog.get_logger()), receiver, sock, store


def test_reload_swaps_pools_and_reservations_and_keeps_the_leases() -> None:
    dhcp, receiver, sock, store = service(DhcpServerCore(config()))
    receiver.commit(*dora(receiver, sock, 3), receiver.burst_generation)
    kept = by_address(receiver.core)
    subnets = [dict(s) for s in BASE_TOML["subnets"]]  # type: ignore[union-attr]
    subnets[0]["pools"] = ["10.51.1.100-10.51.1.104", "10.51.1.150-10.51.1.150"]
    subnets[0]["reservations"] = [{"mac": mac(4).hex(":"), "address": "10.51.1.20"}]
    with capture_logs() as logs:
        assert dhcp.reload(config(subnets=subnets))
    assert receiver.core.config.subnets[0].pools[1].first == IPv4Address("10.51.1.150")
    leases = by_address(receiver.core)
    assert {a: x for a, x in leases.items() if x.state is LeaseState.BOUND} == kept
    # The reconcile against the live table: the new reservation is written, the old ones gone.
    assert store.rows[IPv4Address("10.51.1.20")].state is LeaseState.RESERVED
    assert int(IPv4Address("10.51.1.10")) not in receiver.core.leases
    assert "server.dhcp.reconfigured" in [e["event"] for e in logs]
    receiver.commit(*dora(receiver, sock, 4), receiver.burst_generation)
    assert decode(sock.sent[-1][0]).yiaddr == IPv4Address("10.51.1.20")


def test_reload_keeps_the_running_configuration_when_its_leases_cannot_be_written() -> None:
    dhcp, receiver, _, store = service(DhcpServerCore(config()))
    running = receiver.core.config
    store.full = True
    subnets = [dict(s) for s in BASE_TOML["subnets"]]  # type: ignore[union-attr]
    subnets[0]["reservations"] = [{"mac": mac(4).hex(":"), "address": "10.51.1.20"}]
    with capture_logs() as logs:
        assert not dhcp.reload(config(subnets=subnets))
    assert receiver.core.config is running
    assert [e["event"] for e in logs] == ["server.config.reload_failed"]
    assert logs[0]["note"] == "keeping the running configuration"


def test_a_reload_cannot_change_what_needs_a_restart(tmp_path: Path) -> None:
    running = load_config(str(write_config(tmp_path)))
    check_reload(running, load_config(str(write_config(tmp_path, 'hostname = "x"'))))
    moved = write_config(tmp_path)
    moved.write_text(moved.read_text().replace("leases.sqlite3", "other.sqlite3"))
    with pytest.raises(ConfigError) as info:
        check_reload(running, load_config(str(moved)))
    assert info.value.key == "dhcp.lease_db" and "needs a restart" in info.value.reason


def test_reconfigure_withdraws_an_offer_of_a_newly_reserved_address() -> None:
    core = DhcpServerCore(config())
    offer = core.handle(received(encode(request(MT.DISCOVER, mac(5)))), 0.0)
    offered = decode(offer[0].payload).yiaddr  # type: ignore[union-attr]
    subnets = [dict(s) for s in BASE_TOML["subnets"]]  # type: ignore[union-attr]
    subnets[0]["reservations"] = [{"mac": mac(6).hex(":"), "address": str(offered)}]
    core.reconfigure(config(subnets=subnets), [], [])
    assert int(offered) not in core.offers
    actions = core.handle(received(encode(request(
        MT.REQUEST, mac(5), options=(opt_addr(54, "10.51.0.1"), opt_addr(50, offered))))), 1.0)
    assert decode(actions[0].payload).message_type == MT.NAK  # type: ignore[union-attr]


def test_a_burst_decided_before_a_reload_that_reserves_its_address_is_not_acked() -> None:
    dhcp, receiver, sock, store = service(DhcpServerCore(config()))
    commits, promises = dora(receiver, sock, 8)  # handled, its row not yet written
    address = commits[0].lease.address
    subnets = [dict(s) for s in BASE_TOML["subnets"]]  # type: ignore[union-attr]
    subnets[0]["reservations"] = [{"mac": mac(9).hex(":"), "address": str(address)}]
    assert dhcp.reload(config(subnets=subnets))
    receiver.commit(commits, promises, receiver.burst_generation)
    assert decode(sock.sent[-1][0]).message_type == MT.OFFER, "ACK of an address reserved now"
    assert store.rows[address].state is by_address(receiver.core)[address].state
    assert store.rows[address].state is LeaseState.RESERVED
    receiver.commit(*dora(receiver, sock, 9), receiver.burst_generation)
    assert decode(sock.sent[-1][0]).yiaddr == address  # the reserved client gets it, alone
