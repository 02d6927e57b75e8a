"""The systemd units in config/systemd: systemd-analyze verify finds nothing, each holds the
hardening the daemons are proven to run under, and each command line means what it says."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from boothop.relay.cli import parse_args
from boothop.server.cli import build_parser as server_parser

UNITS = Path(__file__).parents[2] / "config" / "systemd"
RELAY = UNITS / "boothop-relay.service"
TEMPLATE = UNITS / "boothop-relay@.service"
SERVER = UNITS / "boothop-server.service"
DHCRELAY = UNITS / "boothop-relay-dhcrelay.service"
ALL = (RELAY, TEMPLATE, SERVER, DHCRELAY)
ALLOWED_CAPABILITIES = {"CAP_NET_RAW", "CAP_NET_BIND_SERVICE", "CAP_NET_ADMIN", "CAP_BPF",
                        "CAP_PERFMON"}


def directives(unit: Path) -> dict[str, str]:
    """KEY=VALUE of a unit (continuation lines joined; no key is repeated in ours)."""
    text = unit.read_text().replace("\\\n", "")
    lines = [line for line in text.splitlines() if line and line[0] not in "#;["]
    pairs = [line.split("=", 1) for line in lines]
    assert len({key for key, _ in pairs}) == len(pairs), f"a key repeated in {unit.name}"
    return dict(pairs)


def test_the_units_are_shipped() -> None:
    assert sorted(p.name for p in UNITS.glob("*.service")) == sorted(p.name for p in ALL)


@pytest.mark.parametrize("unit", ALL, ids=lambda p: p.name)
def test_systemd_analyze_verify_finds_nothing(unit: Path, tmp_path: Path) -> None:
    """verify exits 0 on an unknown key or a bad value (it only warns): stderr must be empty.
    The template is verified as an instance."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    target = tmp_path / unit.name.replace("@.", "@blue.")
    shutil.copy(unit, target)
    result = subprocess.run([analyze, "verify", "--man=no", str(target)], capture_output=True,
                            text=True, timeout=60)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr


@pytest.mark.parametrize("unit", ALL, ids=lambda p: p.name)
def test_each_unit_is_a_hardened_notify_service(unit: Path) -> None:
    found = directives(unit)
    expected = {
        "Type": "notify", "NotifyAccess": "main", "ExecReload": "/bin/kill -HUP $MAINPID",
        "RestartPreventExitStatus": "78", "DynamicUser": "yes", "NoNewPrivileges": "yes",
        "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_NETLINK AF_PACKET AF_UNIX",
    }
    assert {key: found.get(key) for key in expected} == expected
    assert found["WatchdogSec"]
    capabilities = set(found["CapabilityBoundingSet"].split())
    assert capabilities <= ALLOWED_CAPABILITIES
    assert set(found["AmbientCapabilities"].split()) == capabilities


def test_the_server_needs_no_raw_socket_and_keeps_its_leases_in_its_state_directory() -> None:
    found = directives(SERVER)
    assert found["CapabilityBoundingSet"] == "CAP_NET_BIND_SERVICE"
    assert found["StateDirectory"] == "boothop"


def test_the_relay_units_differ_only_in_what_names_their_instance() -> None:
    """The three relay units are written out in full (systemd has no include): they must not
    drift apart."""
    relay = directives(RELAY)
    for other, differing in ((TEMPLATE, {"Description", "ExecStart"}),
                             (DHCRELAY, {"Description", "ExecStart", "Documentation",
                                         "Conflicts", "ConditionPathExists"})):
        found = directives(other)
        assert {k for k in relay.keys() | found.keys() if relay.get(k) != found.get(k)} \
            == differing, other.name


@pytest.mark.parametrize(("unit", "config"), [
    (RELAY, Path("/etc/boothop/relay.toml")), (TEMPLATE, Path("/etc/boothop/relay-%i.toml")),
])
def test_the_relay_units_command_line(unit: Path, config: Path) -> None:
    program, *argv = shlex.split(directives(unit)["ExecStart"])
    assert program == "/usr/local/bin/boothop-relay"
    args = parse_args(argv)
    assert (args.config, args.log_format, args.port) == (config, "json", 67)


def test_the_server_units_command_line() -> None:
    program, *argv = shlex.split(directives(SERVER)["ExecStart"])
    assert program == "/usr/local/bin/boothop-server"
    args = server_parser().parse_args(argv)
    assert (args.command, args.config, args.log_format) == ("run", "/etc/boothop/server.toml",
                                                             "json")


def test_the_dhcrelay_unit_builds_the_init_scripts_command_line(tmp_path: Path) -> None:
    """Its shell line, run on a /etc/default/isc-dhcp-relay of our own with the program's path
    swapped for one that prints its arguments: -i per interface, then the servers."""
    defaults = tmp_path / "isc-dhcp-relay"
    defaults.write_text('SERVERS="10.9.0.10 10.9.0.20"\nINTERFACES="lan0 lan1"\n'
                        'OPTIONS="-a -c 4"\n')
    printer = tmp_path / "boothop-relay"
    printer.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    printer.chmod(0o755)
    shell, flag, script = shlex.split(directives(DHCRELAY)["ExecStart"])
    assert (shell, flag) == ("/bin/sh", "-c")
    # systemd substitutes $NAME in ExecStart from its own environment (empty when unset) before
    # the shell runs: every "$" meant for the shell must be written "$$".
    assert "$" not in script.replace("$$", ""), script
    script = (script.replace("$$", "$").replace("/etc/default/isc-dhcp-relay", str(defaults))
              .replace("/usr/local/bin/boothop-relay", str(printer)))
    argv = subprocess.run([shell, flag, script], capture_output=True, text=True, check=True,
                          timeout=30).stdout.splitlines()
    assert argv == ["-q", "--log-format", "json", "-a", "-c", "4", "-i", "lan0", "-i", "lan1",
                    "10.9.0.10", "10.9.0.20"]
    args = parse_args(argv)
    assert (args.quiet, args.agent_info, args.max_hops, args.servers) == (
        True, True, 4, ["10.9.0.10", "10.9.0.20"])
