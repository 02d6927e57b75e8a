"""DHCPv6 bindings in the lease store (the leases6 table of the same file) and reconcile."""

from __future__ import annotations

import json
from ipaddress import IPv6Address
from pathlib import Path

import pytest
from dhcp6_helpers import config, duid

from boothop.server.cli import main
from boothop.server.dhcp.lease import LeaseState
from boothop.server.dhcp6.lease import Lease6
from boothop.server.leasestore import SqliteLeaseStore
from boothop.server.reconcile import plan_reconcile6

RESERVED_DUID = bytes.fromhex("0003000152540000000a")


def lease(address: str, who: bytes = duid(1), state: LeaseState = LeaseState.BOUND) -> Lease6:
    return Lease6(IPv6Address(address), state, who, 1, "2001:db8:1::/64", 0.0, 7200.0, None)


def test_rows_survive_a_reopen_and_sit_beside_the_ipv4_leases(tmp_path: Path) -> None:
    path = str(tmp_path / "leases.sqlite3")
    store = SqliteLeaseStore(path)
    rows = [lease("2001:db8:1::101"), lease("2001:db8:1::100", duid(2))]
    store.write6(rows)
    store.write6([], [IPv6Address("2001:db8:1::101")])
    store.close()
    again = SqliteLeaseStore(path, create=False)
    assert again.load6() == [rows[1]] and again.load() == []
    again.close()


def test_reconcile_restores_reservations_and_removes_strays() -> None:
    leases = [lease("2001:db8:1::10", duid(3)),  # a reserved address held by someone else
              lease("2001:db8:9::1"),  # outside every pool
              lease("2001:db8:1::150")]  # a good pool binding
    plan = plan_reconcile6(config(), leases, 100.0)
    upserted = {row.address: row for row in plan.upserts}
    assert upserted[IPv6Address("2001:db8:1::10")].duid == RESERVED_DUID
    assert upserted[IPv6Address("2001:db8:1::11")].mac == bytes.fromhex("52540000000b")
    assert all(row.state is LeaseState.RESERVED for row in plan.upserts)
    assert plan.deletes == [IPv6Address("2001:db8:9::1")]


def test_reconcile_command_covers_dhcp6(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "leases.sqlite3"
    path = tmp_path / "server.toml"
    path.write_text(f'[dhcp6]\nlease_db = "{db}"\n[[dhcp6.subnets]]\n'
                    'prefix = "2001:db8:1::/64"\npools = ["2001:db8:1::100-2001:db8:1::1ff"]\n'
                    '[[dhcp6.subnets.reservations]]\nduid = "00:03:00:01:52:54:00:00:00:0a"\n'
                    'address = "2001:db8:1::10"\n')
    assert main(["reconcile", "-c", str(path)]) == 0
    assert "reconcile (DHCPv6): 1 finding(s)" in capsys.readouterr().out
    store = SqliteLeaseStore(str(db), create=False)
    assert [row.duid for row in store.load6()] == [RESERVED_DUID]
    store.close()
    assert main(["leases", "-c", str(path), "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["family"], row["address"], row["state"]) == (6, "2001:db8:1::10", "reserved")
    assert main(["leases", "-c", str(path)]) == 0
    assert "2001:db8:1::10" in capsys.readouterr().out
