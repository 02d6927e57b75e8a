"""boothop-relay's command line: dhcrelay's flags, the file merge, and `check -c FILE`."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import pytest

from boothop.relay.cli import build_parser, main, settings_from_args
from boothop.relay.config import AgentPolicy, InterfaceConfig, RelayConfig
from boothop.relay.configfile import RelaySettings
from boothop.relay.interfaces import Role
from boothop.relay.settings import EXIT_CONFIG, ConfigError

EXAMPLE = Path(__file__).parents[2] / "config" / "relay.toml"


def settings(argv: str) -> RelaySettings:
    return settings_from_args(build_parser().parse_intermixed_args(argv.split()))


def test_dhcrelay_command_line_parses_to_relay_config() -> None:
    relay = settings("-d -id eth1 -iu eth0 -a 10.9.0.10 10.9.0.20").relay
    assert relay == RelayConfig(
        helpers=(IPv4Address("10.9.0.10"), IPv4Address("10.9.0.20")),
        interfaces=(
            InterfaceConfig("eth1", Role.DOWNSTREAM),
            InterfaceConfig("eth0", Role.UPSTREAM),
        ),
        agent_info=True,
    )


def test_single_dash_multi_letter_flags_are_not_split() -> None:
    """-id is not "-i d" and -iu is not "-i u"."""
    args = build_parser().parse_intermixed_args(["-id", "lan0", "-iu", "up0", "-i", "both0",
                                                "10.9.0.1"])
    assert args.interfaces == [("lan0", Role.DOWNSTREAM), ("up0", Role.UPSTREAM),
                               ("both0", Role.BOTH)]


def test_all_dhcrelay_flags() -> None:
    result = settings("-4 -d -q -D -i eth1 10.9.0.10 -i eth2 -c 4 -m append -A 1400 10.9.0.20")
    relay = result.relay
    assert relay.helpers == (IPv4Address("10.9.0.10"), IPv4Address("10.9.0.20"))
    assert [(i.name, i.role) for i in relay.interfaces] == [
        ("eth1", Role.BOTH),
        ("eth2", Role.BOTH),
    ]
    assert relay.max_hops == 4
    assert relay.agent_policy is AgentPolicy.APPEND
    assert relay.max_packet_size == 1400
    assert relay.agent_info is False


def test_same_interface_upstream_and_downstream_plays_both_roles() -> None:
    relay = settings("-iu eth0 -id eth0 10.9.0.1").relay
    assert relay.interfaces == (InterfaceConfig("eth0", Role.BOTH),)


def test_no_interface_flags_means_every_interface() -> None:
    relay = settings("10.9.0.1").relay
    assert relay.interfaces == ()
    assert relay.interface("anything") == InterfaceConfig("anything", Role.BOTH)


@pytest.mark.parametrize("argv", [
    "-c 17 10.9.0.1", "-c 0 10.9.0.1", "-c x 10.9.0.1", "-A 100 10.9.0.1",
    "-m keep 10.9.0.1", "10.9.0", "bad_host!", "-6 -l eth1#2 -u eth0",
])
def test_bad_flags_exit_with_usage_error(argv: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_intermixed_args(argv.split())
    assert caught.value.code == 2
    assert "boothop-relay: error:" in capsys.readouterr().err


def test_no_server_anywhere_is_a_configuration_error_exit_78(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-id", "eth1"]) == EXIT_CONFIG == 78
    assert capsys.readouterr().err.startswith("boothop-relay: <command line>: helpers: missing")


def test_bad_config_file_given_to_the_daemon_exits_78_with_the_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "relay.toml"
    path.write_text('helpers = ["10.9.0.1"]\n[[interface]]\nname = "eth1"\ngiaddr = "10.0.0"\n')
    assert main(["--config", str(path)]) == EXIT_CONFIG
    assert capsys.readouterr().err == (
        f"boothop-relay: {path}:4: interface[0].giaddr: not an IPv4 address: '10.0.0'\n")


def test_flags_that_change_the_file_drop_its_line_numbers(tmp_path: Path) -> None:
    """Once the command line replaced part of the file, a line of the file could mislead."""
    path = tmp_path / "relay.toml"
    path.write_text('helpers = ["10.9.0.1"]\n[[interface]]\nname = "eth1"\ngiaddr = "x"\n')
    with pytest.raises(ConfigError) as caught:
        settings(f"--config {path} 10.9.0.2")
    assert (caught.value.key, caught.value.line) == ("interface[0].giaddr", None)


def test_command_line_overrides_file(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text('helpers = ["10.9.0.10"]\nmax_hops = 3\n[[interface]]\nname = "eth1"\n'
                    'giaddr = "10.1.0.1"\ncircuit_id = "c1"\n[[interface]]\nname = "eth9"\n')
    result = settings(f"--config {path} -c 5 -id eth1 -iu eth0 10.9.0.99")
    relay = result.relay
    assert relay.helpers == (IPv4Address("10.9.0.99"),)
    assert relay.max_hops == 5
    # -i/-iu/-id replace the file's list; the file's settings of a named interface are kept.
    assert relay.interfaces == (
        InterfaceConfig("eth1", Role.DOWNSTREAM, giaddr=IPv4Address("10.1.0.1"), circuit_id=b"c1"),
        InterfaceConfig("eth0", Role.UPSTREAM),
    )


def test_file_values_used_when_flags_absent(tmp_path: Path) -> None:
    result = settings(f"--config {EXAMPLE}")
    assert result.relay.helpers == (IPv4Address("10.9.0.10"), IPv4Address("10.9.0.20"))
    assert len(result.relay.interfaces) == 3


def test_invalid_file_named_in_error(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text('helpers = ["10.9.0.10"]\nmax_hop = 3\n')
    with pytest.raises(ConfigError) as caught:
        settings(f"--config {path}")
    assert str(caught.value).startswith(f"{path}:2: max_hop: unknown key")


def test_check_valid_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "-c", str(EXAMPLE)]) == 0
    assert f"{EXAMPLE}: ok" in capsys.readouterr().out


@pytest.mark.parametrize(("text", "expected"), [
    ('helpers = ["10.9.0.10"]\nbogus = 1\n', ":2: bogus: unknown key"),
    ('helpers = ["10.9.0.1"]\n[[interface]]\nname = "eth1"\ngiaddr = "x"\n',
     ":4: interface[0].giaddr: not an IPv4 address: 'x'"),
    ('max_hops = 3\n', ": helpers: missing"),
    ('helpers = ["10.9.0.1"]\nmax_hops = 3 3\n', ":2: toml: syntax error"),
    ('helpers = [\n', ":1: toml: syntax error: Invalid value (at end of document)"),
])
def test_check_invalid_file_exits_78_and_reports_file_line_key_reason(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    assert main(["check", "-c", str(path)]) == EXIT_CONFIG
    assert capsys.readouterr().err.startswith(f"boothop-relay: {path}{expected}")


def test_check_unreadable_file_exits_78(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "absent.toml"
    assert main(["check", "-c", str(path)]) == EXIT_CONFIG
    assert capsys.readouterr().err.startswith(f"boothop-relay: {path}: file: cannot read: ")


def test_check_requires_file(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["check"])
    assert caught.value.code == 2
