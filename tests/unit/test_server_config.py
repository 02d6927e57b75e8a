"""Config validation (file, key, reason), the lease store, reconcile and the CLI."""

from __future__ import annotations

import copy
import json
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from test_server_helpers import BASE_TOML, MT, config, dgram, reply_of, request

from boothop.relay.settings import EXIT_CONFIG, ConfigError
from boothop.relay.wire import Opt
from boothop.server.cli import main
from boothop.server.config import load_config
from boothop.server.dhcp.config import parse_dhcp
from boothop.server.dhcp.core import DhcpServerCore
from boothop.server.dhcp.lease import Lease, LeaseState
from boothop.server.leasestore import SqliteLeaseStore
from boothop.server.reconcile import plan_reconcile

RESERVED_MAC = bytes.fromhex("52540000010a")


def bad(mutate) -> ConfigError:  # type: ignore[no-untyped-def]
    table = copy.deepcopy(BASE_TOML)
    mutate(table)
    with pytest.raises(ConfigError) as info:
        parse_dhcp(table, "bad.toml")
    assert info.value.path == "bad.toml"
    return info.value


def test_overlapping_pools_refused() -> None:
    err = bad(lambda t: t["subnets"][0]["pools"].append("10.51.1.104-10.51.1.110"))
    assert err.key == "dhcp.subnets[0].pools[1]" and "overlaps" in err.reason


def test_overlapping_subnets_refused() -> None:
    err = bad(lambda t: t["subnets"].append({"subnet": "10.51.1.128/25"}))
    assert err.key == "dhcp.subnets[3].subnet"


def test_reservation_outside_subnet_refused() -> None:
    err = bad(
        lambda t: t["subnets"][0]["reservations"].append(
            {"mac": "02:00:00:00:00:01", "address": "10.51.2.5"}
        )
    )
    assert err.key == "dhcp.subnets[0].reservations[2].address" and "outside" in err.reason


def test_pool_outside_subnet_refused() -> None:
    err = bad(lambda t: t["subnets"][0]["pools"].__setitem__(0, "10.51.2.1-10.51.2.5"))
    assert err.key == "dhcp.subnets[0].pools[0]"


def test_unknown_option_name_refused() -> None:
    err = bad(lambda t: t["subnets"][0]["options"].__setitem__("router", ["10.51.1.1"]))
    assert err.key == "dhcp.subnets[0].options.router" and "unknown option" in err.reason


def test_managed_option_refused() -> None:
    err = bad(lambda t: t["options"].__setitem__("option-51", "hex:00000e10"))
    assert err.key == "dhcp.options.option-51" and "set by" in err.reason


def test_bad_option_value_refused() -> None:
    err = bad(lambda t: t["options"].__setitem__("dns-servers", ["not-an-ip"]))
    assert err.key == "dhcp.options.dns-servers"


def test_unknown_key_refused() -> None:
    err = bad(lambda t: t["subnets"][1].__setitem__("leasetime", 5))
    assert err.key == "dhcp.subnets[1].leasetime" and "unknown key" in err.reason


def test_duplicate_reservation_mac_refused() -> None:
    err = bad(
        lambda t: t["subnets"][0]["reservations"].append(
            {"mac": "52:54:00:00:01:0a", "address": "10.51.1.12"}
        )
    )
    assert err.key == "dhcp.subnets[0].reservations[2].mac"


def test_timers_must_be_ordered() -> None:
    err = bad(
        lambda t: t["subnets"][1].update(
            {"lease_time": 600, "renewal_time": 500, "rebinding_time": 400}
        )
    )
    assert err.key == "dhcp.subnets[1].renewal_time"


def test_any_option_by_code() -> None:
    cfg = config(options={"option-252": "http://wpad/x", "option-224": "hex:01:02"})
    options = dict(cfg.subnets[0].options)
    assert options[252] == b"http://wpad/x" and options[224] == b"\x01\x02"


def test_pxe_redirect_options_warn_without_colocated_pxe() -> None:
    cfg = config(options={"vendor-class-identifier": "PXEClient", "bootfile-name": "pxelinux.0"})
    assert any("PXE-E55" in w and "option 60" in w for w in cfg.warnings)
    assert any("option 67" in w for w in cfg.warnings)
    quiet = parse_dhcp({**BASE_TOML, "options": {"bootfile-name": "x"}}, "f", pxe_colocated=True)
    assert quiet.warnings == ()


def write_config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "server.toml"
    path.write_text(f"""
[dhcp]
lease_db = "{tmp_path / 'leases.sqlite3'}"
[[dhcp.subnets]]
subnet = "10.51.1.0/24"
pools = ["10.51.1.100-10.51.1.110"]
  [[dhcp.subnets.reservations]]
  mac = "52:54:00:00:01:0a"
  address = "10.51.1.10"
{extra}
""")
    return path


def test_check_cli_exits_0_for_a_good_file_and_78_for_a_bad_one(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "-c", str(write_config(tmp_path))]) == 0
    path = write_config(tmp_path, 'bogus = 1')
    assert main(["check", "-c", str(path)]) == EXIT_CONFIG == 78
    assert capsys.readouterr().err.startswith(
        f"boothop-server: {path}:10: dhcp.subnets[0].reservations[0].bogus: unknown key")


def test_check_cli_reports_a_syntax_error_with_its_line_and_exits_78(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, 'hostname = "boot1')
    assert main(["check", "-c", str(path)]) == EXIT_CONFIG
    assert capsys.readouterr().err.startswith(f"boothop-server: {path}:10: toml: syntax error")


def test_run_with_an_unreadable_file_exits_78(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "absent.toml"
    assert main(["run", "-c", str(path)]) == EXIT_CONFIG
    assert capsys.readouterr().err.startswith(f"boothop-server: {path}: file: cannot read: ")


def test_every_problem_of_every_section_is_reported_at_once(tmp_path: Path) -> None:
    path = write_config(tmp_path, """  hostname = ""
[[dhcp.subnets]]
subnet = "10.51.1.128/25"
lease_time = 10
[tftp]
root = "srv"
[pxe]
server_address = "10.51.0.2"
colocated = true
port = 0
[log]
format = "xml"
""")
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert [(p.key, p.line) for p in info.value.problems] == [
        ("pxe.port", 19),
        ("tftp.root", 15),
        ("dhcp.subnets[0].reservations[0].hostname", 10),
        ("dhcp.subnets[1].lease_time", 13),
        ("log.format", 21),
    ]


def test_overlap_of_valid_subnets_is_reported_with_the_line_of_the_second(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[[dhcp.subnets]]\nsubnet = "10.51.1.128/25"\n')
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert (info.value.key, info.value.line) == ("dhcp.subnets[1].subnet", 11)
    assert "overlaps dhcp.subnets[0]" in info.value.reason


def test_check_reports_reservation_inside_another_clients_lease(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path)
    store = SqliteLeaseStore(str(tmp_path / "leases.sqlite3"))
    store.write([Lease(IPv4Address("10.51.1.10"), LeaseState.BOUND, "hw:1:020000000001",
                       bytes.fromhex("020000000001"), None, "10.51.1.0/24", 0.0, 4e9)])
    store.close()
    assert main(["check", "-c", str(path)]) == 1
    assert "reservations[0].address" in capsys.readouterr().err


def test_store_roundtrip_and_survives_reopen(tmp_path: Path) -> None:
    db = str(tmp_path / "l.sqlite3")
    store = SqliteLeaseStore(db)
    lease = Lease(IPv4Address("10.51.1.100"), LeaseState.BOUND, "id:01aa", b"\x01" * 6, b"\x01\xaa",
                  "10.51.1.0/24", 1.0, None, "h")
    store.write([lease])
    store.close()
    again = SqliteLeaseStore(db)
    assert again.load() == [lease]
    assert again._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert again._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    again.write([], [lease.address])
    assert again.load() == []


def test_store_roundtrips_every_row_shape_alone_and_in_one_burst(tmp_path: Path) -> None:
    """Rows with and without a client identifier and a hostname (the store's four statements),
    and a BOOTP row that never expires, read back as written: one row at a time (autocommit) and
    all in one transaction, each replacing the row at its address."""
    store = SqliteLeaseStore(str(tmp_path / "shapes.sqlite3"))

    def leases(starts: float) -> list[Lease]:
        return [Lease(IPv4Address(0x0A330164 + n), state, f"k{n}", bytes([n]) * 6, client_id,
                      "10.51.1.0/24", starts, expires, hostname)
                for n, (state, client_id, expires, hostname) in enumerate([
                    (LeaseState.BOUND, None, starts + 60, None),
                    (LeaseState.BOUND, b"\x01\xaa", starts + 60, None),
                    (LeaseState.DECLINED, None, starts + 60, "host-b"),
                    (LeaseState.RELEASED, b"\x00", starts, ""),
                    (LeaseState.BOUND, None, None, "bootp")])]

    for lease in leases(1.0):
        store.write([lease])
    assert store.load() == leases(1.0)
    store.write(leases(2.0))
    assert store.load() == leases(2.0)
    assert all(type(lease.mac) is bytes for lease in store.load())
    store.close()


def test_field_report_reconcile_restores_reservations_with_configured_mac(tmp_path: Path) -> None:
    """Q184344: delete the database, reconcile; the BOOTP client still gets its reserved address."""
    cfg = config()
    store = SqliteLeaseStore(str(tmp_path / "fresh.sqlite3"))  # the deleted database, rebuilt empty
    plan = plan_reconcile(cfg, store.load(), 100.0)
    store.write(plan.upserts)
    rows = {lease.address: lease for lease in store.load()}
    assert rows[IPv4Address("10.51.1.10")].mac == RESERVED_MAC
    assert rows[IPv4Address("10.51.1.10")].state is LeaseState.RESERVED
    assert rows[IPv4Address("10.51.1.11")].client_id == bytes.fromhex("ff00112233")
    core = DhcpServerCore(cfg, store.load())
    reply = reply_of(core.handle(dgram(request(None, RESERVED_MAC)), 101.0))
    assert reply.yiaddr == IPv4Address("10.51.1.10") and reply.message_type is None
    # and a DHCP client on that MAC is not NAKed in INIT-REBOOT
    ack = reply_of(core.handle(dgram(request(MT.REQUEST, RESERVED_MAC, options=(
        (Opt.REQUESTED_ADDRESS, IPv4Address("10.51.1.10").packed),))), 102.0))
    assert ack.message_type == MT.ACK


def test_reconcile_replaces_wrong_mac_and_removes_strays() -> None:
    cfg = config()
    wrong = Lease(IPv4Address("10.51.1.10"), LeaseState.BOUND, "hw:1:020000000009",
                  bytes.fromhex("020000000009"), None, "10.51.1.0/24", 0.0, 1e9)
    outside = Lease(IPv4Address("10.51.1.50"), LeaseState.BOUND, "hw:1:02", b"\x02", None,
                    "10.51.1.0/24", 0.0, 1e9)
    dup = Lease(IPv4Address("10.51.1.100"), LeaseState.BOUND, "hw:1:52540000010a", RESERVED_MAC,
                None, "10.51.1.0/24", 0.0, 1e9)
    plan = plan_reconcile(cfg, [wrong, outside, dup], 10.0)
    fixed = {lease.address: lease for lease in plan.upserts}
    assert fixed[IPv4Address("10.51.1.10")].mac == RESERVED_MAC
    assert set(plan.deletes) == {IPv4Address("10.51.1.50"), IPv4Address("10.51.1.100")}
    again = plan_reconcile(cfg, [fixed[a] for a in fixed], 10.0)
    assert not again.changes


def test_reconcile_cli_dry_run_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path)
    assert main(["reconcile", "-c", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "10.51.1.10: reservation missing" in out and "would be restored" in out
    assert main(["leases", "-c", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["reconcile", "-c", str(path)]) == 0
    capsys.readouterr()
    assert main(["leases", "-c", str(path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["address"] == "10.51.1.10" and rows[0]["mac"] == "52:54:00:00:01:0a"
    assert main(["leases", "-c", str(path)]) == 0
    assert "10.51.1.10" in capsys.readouterr().out


def test_example_config_is_valid() -> None:
    cfg = load_config(str(Path(__file__).parents[2] / "config" / "server.toml"))
    assert cfg.dhcp is not None and len(cfg.dhcp.subnets) == 2 and cfg.warnings == ()


def test_unknown_section_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.toml"
    path.write_text("[dhcpd]\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert info.value.key == "dhcpd"



def test_dhcp_and_non_colocated_pxe_on_one_port_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two services on UDP port 67 of one host: refused at load with the file, key and reason."""
    pxe = '\n[pxe]\nserver_address = "10.51.0.2"\n'
    path = write_config(tmp_path, pxe)
    assert main(["check", "-c", str(path)]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert str(path) in err and "pxe.colocated" in err and "UDP port 67" in err
    assert main(["check", "-c", str(write_config(tmp_path, pxe + "colocated = true\n"))]) == 0
    assert main(["check", "-c", str(write_config(tmp_path, pxe + "port = 1067\n"))]) == 0


def test_commit_window_default_and_bounds() -> None:
    assert config().commit_window == 0.001
    assert config(commit_window=0).commit_window == 0.0
    assert config(commit_window=0.002).commit_window == 0.002
    err = bad(lambda t: t.__setitem__("commit_window", 0.5))
    assert err.key == "dhcp.commit_window" and "at most 0.1" in err.reason
    err = bad(lambda t: t.__setitem__("commit_window", -1))
    assert err.key == "dhcp.commit_window"
