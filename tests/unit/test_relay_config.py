"""The relay's TOML configuration: loading, and every validation error naming file, key, reason."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest

from boothop.relay.config import (
    AgentPolicy,
    InterfaceConfig,
    LowerInterface6,
    Relay6Config,
    Upstream6,
)
from boothop.relay.configfile import RelaySettings, load, parse
from boothop.relay.interfaces import Role
from boothop.relay.settings import ConfigError
from boothop.relay.wire.dhcpv6 import ALL_SERVERS

EXAMPLE = Path(__file__).parents[2] / "config" / "relay.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "relay.toml"
    path.write_text(text)
    return path


def error_of(tmp_path: Path, text: str) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load(path)
    error = caught.value
    assert error.path == str(path)
    where = path if error.line is None else f"{path}:{error.line}"
    assert str(error).startswith(f"{where}: {error.key}: {error.reason}")
    return error


def test_example_file_loads() -> None:
    settings = load(EXAMPLE)
    relay = settings.relay
    assert relay.helpers == (IPv4Address("10.9.0.10"), IPv4Address("10.9.0.20"))
    assert [(i.name, i.role) for i in relay.interfaces] == [
        ("eth0", Role.UPSTREAM), ("eth1", Role.DOWNSTREAM), ("eth2", Role.DOWNSTREAM)]
    assert relay.interfaces[2].helpers == (IPv4Address("10.9.0.30"), IPv4Address("10.9.0.20"))
    assert relay.agent_info is True
    assert relay.agent_policy is AgentPolicy.REPLACE
    assert settings.stats_interval == 60.0
    assert settings.log_format == "auto"


def test_full_interface_table(tmp_path: Path) -> None:
    settings = load(write(tmp_path, """
helpers = ["10.9.0.10"]
extra_servers = ["10.9.0.11"]
max_hops = 4
agent_info = true
agent_policy = "append"
remote_id = "relay-1"
max_packet_size = 1400
stats_interval = 2.5
log_format = "json"
log_level = "debug"
[[interface]]
name = "up0"
role = "upstream"
[[interface]]
name = "lan0"
role = "both"
trusted = true
giaddr = "10.1.0.1"
helpers = ["10.9.0.30"]
circuit_id = "floor-2"
remote_id = "sw-7"
link_selection = "up0"
server_id_override = true
"""))
    relay = settings.relay
    assert relay.max_hops == 4 and relay.max_packet_size == 1400
    assert relay.agent_policy is AgentPolicy.APPEND
    assert relay.remote_id == b"relay-1"
    assert relay.extra_servers == (IPv4Address("10.9.0.11"),)
    assert relay.interfaces[1] == InterfaceConfig(
        name="lan0", role=Role.BOTH, trusted=True, giaddr=IPv4Address("10.1.0.1"),
        helpers=(IPv4Address("10.9.0.30"),), circuit_id=b"floor-2", remote_id=b"sw-7",
        link_selection="up0", server_id_override=True)
    assert settings == RelaySettings(relay, 2.5, "json", "debug")


def test_defaults_without_interfaces(tmp_path: Path) -> None:
    relay = load(write(tmp_path, 'helpers = ["10.9.0.10"]\n')).relay
    assert relay.interfaces == () and relay.max_hops == 10 and relay.agent_info is False
    assert relay.max_packet_size == 576
    assert relay.relay_port is None
    configured = load(write(tmp_path, 'helpers = ["10.9.0.10"]\nrelay_port = 1067\n')).relay
    assert configured.relay_port == 1067


@pytest.mark.parametrize(("text", "key", "reason"), [
    ('helpers = ["10.9.0.10"]\nhelper = ["10.9.0.20"]\n', "helper", "unknown key"),
    ('helpers = ["10.9.0.10"]\n[[interface]]\nname = "eth1"\ngiaddr_ = "10.1.0.1"\n',
     "interface[0].giaddr_", "unknown key"),
    ('helpers = ["10.9.0.300"]\n', "helpers[0]", "not an IPv4 address: '10.9.0.300'"),
    ('helpers = ["10.9.0.1", "10.9.0.1"]\n', "helpers[1]", "listed twice"),
    ('helpers = ["255.255.255.255"]\n', "helpers[0]", "broadcast"),
    ('helpers = "10.9.0.1"\n', "helpers", "must be a list of IPv4 addresses"),
    ('helpers = []\n', "helpers", "missing"),
    ('agent_info = true\n', "helpers", "missing"),
    ('[[interface]]\nname = "eth1"\nrole = "upstream"\n[[interface]]\nname = "eth2"\n',
     "helpers", "interface[1] (eth2) has no helpers"),
    ('helpers = ["10.9.0.1"]\nmax_hops = 17\n', "max_hops", "17 out of range 1..16"),
    ('helpers = ["10.9.0.1"]\nmax_hops = 0\n', "max_hops", "out of range"),
    ('helpers = ["10.9.0.1"]\nmax_hops = "4"\n', "max_hops", "must be an integer"),
    ('helpers = ["10.9.0.1"]\nmax_hops = true\n', "max_hops", "must be an integer"),
    ('helpers = ["10.9.0.1"]\nagent_policy = "keep"\n', "agent_policy",
     "'keep' is not one of append, replace, forward, discard"),
    ('helpers = ["10.9.0.1"]\nagent_info = 1\n', "agent_info", "must be true or false"),
    ('helpers = ["10.9.0.1"]\nmax_packet_size = 500\n', "max_packet_size", "out of range"),
    ('helpers = ["10.9.0.1"]\nrelay_port = 65536\n', "relay_port", "out of range 1..65535"),
    ('helpers = ["10.9.0.1"]\nstats_interval = -1\n', "stats_interval", ">= 0"),
    ('helpers = ["10.9.0.1"]\nlog_format = "xml"\n', "log_format", "not one of"),
    ('helpers = ["10.9.0.1"]\nremote_id = ""\n', "remote_id", "must not be empty"),
    (f'helpers = ["10.9.0.1"]\nremote_id = "{"x" * 256}"\n', "remote_id", "at most 255"),
    ('helpers = ["10.9.0.1"]\n[[interface]]\nname = "eth1"\ngiaddr = "10.1.0"\n',
     "interface[0].giaddr", "not an IPv4 address: '10.1.0'"),
    (('helpers = ["10.9.0.1"]\n[[interface]]\nname = "eth1"\n[[interface]]\nname = "eth2"\n'
      'giaddr = 10\n'), "interface[1].giaddr", "must be an IPv4 address string"),
    ('helpers = ["10.9.0.1"]\n[[interface]]\nrole = "downstream"\n', "interface[0].name",
     "missing"),
    ('helpers = ["10.9.0.1"]\n[[interface]]\nname = "eth1"\nrole = "client"\n',
     "interface[0].role", "'client' is not one of downstream, upstream, both"),
    ('helpers = ["10.9.0.1"]\n[[interface]]\nname = "eth1"\n[[interface]]\nname = "eth1"\n',
     "interface[1].name", "already configured as interface[0]"),
    ('helpers = ["10.9.0.1"]\n[[interface]]\nname = "a-very-long-interface"\n',
     "interface[0].name", "not a valid interface name"),
    ('helpers = ["10.9.0.1"]\n[[interface]]\nname = "eth1"\nlink_selection = "eth9"\n',
     "interface[0].link_selection", "'eth9' is not a configured interface"),
    ('helpers = ["10.9.0.1"]\n[[interface]]\nname = "eth1"\nrole = "upstream"\n',
     "interface", "no client-facing interface"),
    ('helpers = ["10.9.0.1"]\ninterface = "eth1"\n', "interface", "array of tables"),
    ('helpers = ["10.9.0.1"\n', "toml", "syntax error"),
])
def test_invalid_configuration_names_file_key_reason(
        tmp_path: Path, text: str, key: str, reason: str) -> None:
    error = error_of(tmp_path, text)
    assert error.key == key
    assert reason in error.reason


def test_max_hops_above_16_refused_rfc1542_4_1_1_must_discard_hops_exceeding_16() -> None:
    """RFC 1542 §4.1.1: a limit above 16 would forward requests the relay MUST discard."""
    parse({"helpers": ["10.9.0.1"], "max_hops": 16}, "x")
    with pytest.raises(ConfigError, match="max_hops"):
        parse({"helpers": ["10.9.0.1"], "max_hops": 17}, "x")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path / "absent.toml")
    assert caught.value.key == "file" and "cannot read" in caught.value.reason


def test_every_problem_of_a_file_is_reported_at_once_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, """helpers = ["10.9.0.1"]
max_hops = 17
[[interface]]
name = "eth1"
[[interface]]
name = "eth2"
giaddr = "10.0.0"
role = "client"
""")
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert [(p.key, p.line) for p in caught.value.problems] == [
        ("max_hops", 2), ("interface[1].role", 8), ("interface[1].giaddr", 7)]
    assert str(caught.value).splitlines() == [
        f"{path}:2: max_hops: 17 out of range 1..16",
        f"{path}:8: interface[1].role: 'client' is not one of downstream, upstream, both",
        f"{path}:7: interface[1].giaddr: not an IPv4 address: '10.0.0'",
    ]
    # The first problem stays available as .path/.key/.reason (the SIGHUP reload logs them).
    assert (caught.value.path, caught.value.key) == (str(path), "max_hops")


def test_cross_checks_are_skipped_when_the_field_they_need_was_bad(tmp_path: Path) -> None:
    """A bad helpers list is one problem, not also "helpers: missing"."""
    error = error_of(tmp_path, 'helpers = ["10.9.0.300"]\n')
    assert [p.key for p in error.problems] == ["helpers[0]"]


def test_syntax_error_reports_its_line(tmp_path: Path) -> None:
    error = error_of(tmp_path, 'helpers = ["10.9.0.1"]\nmax_hops = = 3\n')
    assert (error.key, error.line) == ("toml", 2)
    assert "syntax error" in error.reason and "column" in error.reason


def test_dhcpv6_table_beside_the_ipv4_relay(tmp_path: Path) -> None:
    settings = load(write(tmp_path, """
helpers = ["10.9.0.1"]
[dhcpv6]
remote_id = "rack-1"
remote_id_enterprise = 9
[[dhcpv6.lower]]
name = "lan1"
link_address = "2001:db8:1::1"
interface_id = "port-1"
[[dhcpv6.upper]]
interface = "up0"
address = "2001:db8::10"
[[dhcpv6.upper]]
interface = "up1"
"""))
    assert settings.relay is not None and settings.relay.helpers == (IPv4Address("10.9.0.1"),)
    assert settings.relay6 == Relay6Config(
        lower=(LowerInterface6("lan1", IPv6Address("2001:db8:1::1"), b"port-1"),),
        upper=(Upstream6("up0", IPv6Address("2001:db8::10")), Upstream6("up1", ALL_SERVERS)),
        remote_id=(9, b"rack-1"),
    )


def test_dhcpv6_alone_runs_no_ipv4_relay(tmp_path: Path) -> None:
    settings = load(write(tmp_path, '[dhcpv6]\nlower = [{name = "a"}]\n'
                                    'upper = [{interface = "b"}]\n'))
    assert settings.relay is None and settings.relay6 is not None


def test_dhcpv6_problems_name_their_keys_and_lines(tmp_path: Path) -> None:
    error = error_of(tmp_path, """[dhcpv6]
colour = 1
[[dhcpv6.lower]]
name = "lan1"
link_address = "ff02::1"
[[dhcpv6.lower]]
name = "lan1"
[[dhcpv6.upper]]
interface = "up0"
address = "10.0.0.1"
""")
    text = str(error)
    assert ":2: dhcpv6.colour: unknown key" in text
    assert ":5: dhcpv6.lower[0].link_address: ff02::1 cannot name a link" in text
    assert "dhcpv6.lower[1].name: 'lan1' already configured as lower[0]" in text
    assert ":10: dhcpv6.upper[0].address: not an IPv6 address: '10.0.0.1'" in text
    missing = str(error_of(tmp_path, "[dhcpv6]\n"))
    assert "dhcpv6.lower: missing" in missing and "dhcpv6.upper: missing" in missing
