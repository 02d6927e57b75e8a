"""boothop-relay as a drop-in for ISC dhcrelay: each of dhcrelay(8)'s flags means what it means
there, or is refused with its reason (exit 2); none is read as another."""

from __future__ import annotations

import gzip
import re
import socket
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest

from boothop.relay.actions import Deliver, DeliveryMode, Forward
from boothop.relay.cli import build_parser, main, parse_args, settings_from_args
from boothop.relay.config import InterfaceConfig, LowerInterface6, Relay6Config, Upstream6
from boothop.relay.interfaces import Role
from boothop.relay.settings import EXIT_FAILURE
from boothop.relay.sockets import Sender
from boothop.relay.wire.dhcpv6 import ALL_SERVERS

DHCRELAY_MAN = Path("/usr/share/man/man8/dhcrelay.8.gz")


def usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as caught:
        parse_args(argv)
    assert caught.value.code == 2
    return capsys.readouterr().err


def dhcrelay_flags() -> set[str]:
    """Every flag of dhcrelay(8)'s SYNOPSIS (DHCPv4 and DHCPv6), -dqaD spelled out."""
    if not DHCRELAY_MAN.exists():
        pytest.skip("dhcrelay(8) is not installed (Debian package isc-dhcp-relay)")
    text = gzip.decompress(DHCRELAY_MAN.read_bytes()).decode()
    synopsis = text.split(".SH SYNOPSIS", 1)[1].split(".SH DESCRIPTION", 1)[0]
    flags: set[str] = set()
    for flag in re.findall(r"^\.B (?:dhcrelay )?(-\S+)$", synopsis, re.MULTILINE):
        if flag.startswith("--") or flag in ("-rp", "-pf", "-iu", "-id"):
            flags.add(flag)
        else:
            flags.update(f"-{letter}" for letter in flag[1:])
    return flags


def test_every_dhcrelay_flag_is_known_to_the_parser() -> None:
    flags = dhcrelay_flags()
    assert {"-p", "-rp", "-pf", "--no-pid", "-U", "-g", "-c", "-6", "-l", "-u"} <= flags
    known = set(build_parser()._option_string_actions)
    assert flags - known == set()


def test_p_is_the_port_and_never_the_pid_file() -> None:
    """dhcrelay(8): "-p port  Listen and transmit on port PORT"; argparse read it as -pf."""
    args = parse_args(["-p", "1067", "10.9.0.1"])
    assert (args.port, args.pid_file) == (1067, None)
    args = parse_args(["-pf", "/run/r.pid", "10.9.0.1"])
    assert (args.port, args.pid_file) == (67, Path("/run/r.pid"))


@pytest.mark.parametrize("argv", [["-r"], ["-p1067"], ["-ieth0"], ["-c3"], ["-P"], ["--no-p"],
                                  ["--conf"]])
def test_no_option_is_read_from_a_prefix_or_with_its_value_attached(
        argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert "unrecognized arguments" in usage_error([*argv, "10.9.0.1"], capsys)


def test_p_sends_to_servers_on_port_and_to_clients_on_port_plus_one() -> None:
    """dhcrelay sends to its servers on its -p port and to clients on that port + 1."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as unused:
        server.bind(("127.0.0.1", 0))
        port = server.getsockname()[1]
        try:
            client.bind(("127.0.0.1", port + 1))
        except OSError:
            pytest.fail(f"port {port + 1} is taken: run again")
        server.settimeout(5)
        client.settimeout(5)
        sender = Sender(udp, unused, port)
        sender.forward(Forward(IPv4Address("127.0.0.1"), b"request"))
        assert server.recv(100) == b"request"
        sender.deliver(Deliver(1, "lo", b"reply", DeliveryMode.UNICAST_CIADDR,
                               IPv4Address("127.0.0.1"), bytes(6), IPv4Address("127.0.0.1")))
        assert client.recv(100) == b"reply"


@pytest.mark.parametrize(("count", "ok"), [("1", True), ("16", True), ("17", False),
                                            ("255", False), ("256", False), ("0", False)])
def test_c_hop_limit_up_to_dhcrelays_255_refuses_what_rfc_1542_forbids(
        count: str, ok: bool, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["-c", count, "10.9.0.1"]
    if ok:
        assert parse_args(argv).max_hops == int(count)
        return
    err = usage_error(argv, capsys)
    if 17 <= int(count) <= 255:
        assert "RFC 1542 §4.1.1" in err and "largest -c it honours is 16" in err
    else:
        assert "out of range 1..255" in err


V6 = ["-6", "-l", "eth1", "-u", "eth0"]


@pytest.mark.parametrize(("argv", "reason"), [
    ([*V6, "10.9.0.1"], "a server belongs to DHCPv4 mode only"),
    ([*V6, "-a"], "agent_info belongs to DHCPv4 mode only"),
    ([*V6, "-i", "eth2"], "interfaces belongs to DHCPv4 mode only"),
    (["-I", "10.9.0.1"], "interface_id belongs to DHCPv6 (-6) mode only"),
    (["-s", "sub", "10.9.0.1"], "subscriber_id belongs to DHCPv6 (-6) mode only"),
    (["-l", "eth0", "10.9.0.1"], "lower belongs to DHCPv6 (-6) mode only"),
    (["-u", "eth0", "10.9.0.1"], "upper belongs to DHCPv6 (-6) mode only"),
    (["-6", "-l", "eth1"], "-6 needs both -l (client-facing) and -u (upstream)"),
    (["-6", "-l", "10.0.0.1%eth1", "-u", "eth0"], "'10.0.0.1' is not an IPv6 address"),
    (["-6", "-l", "eth1#2", "-u", "eth0"], "the #index form is not supported"),
])
def test_dhcpv6_flags_belong_to_dhcpv6_mode_as_in_dhcrelay(
        argv: list[str], reason: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert reason in usage_error(argv, capsys)


def test_dhcrelay_6_command_line_runs_the_dhcpv6_relay_alone(tmp_path: Path) -> None:
    """dhcrelay(8): "-l [address%]ifname", "-u [address%]ifname" (without an address: the
    All_DHCP_Servers group), -s subscriber-id, -I accepted (boothop always sends
    Interface-ID), port 547; a file's IPv4 relay is not run with -6."""
    config = tmp_path / "relay.toml"
    config.write_text('helpers = ["10.9.0.1"]\n[dhcpv6]\nclient_link_layer = true\n')
    args = parse_args(["-6", "-d", "-I", "-s", "sub", "-l", "2001:db8:1::1%eth1", "-l", "eth2",
                       "-u", "2001:db8::10%eth0", "-u", "eth0", "--config", str(config)])
    settings = settings_from_args(args)
    assert args.port == 547 and settings.relay is None
    assert settings.relay6 == Relay6Config(
        lower=(LowerInterface6("eth1", IPv6Address("2001:db8:1::1")), LowerInterface6("eth2")),
        upper=(Upstream6("eth0", IPv6Address("2001:db8::10")), Upstream6("eth0", ALL_SERVERS)),
        subscriber_id=b"sub", client_link_layer=True,
    )


def test_rp_is_the_rfc_8357_relay_source_port_and_never_the_pid_file(
        capsys: pytest.CaptureFixture[str]) -> None:
    """dhcrelay(8): "-rp relay-port: Alternative source port for upstream (i.e toward the
    server) messages with DHCPv4 RAI relay-port sub-option"; -p stays the client-facing port."""
    args = parse_args(["-rp", "1067", "10.9.0.1"])
    assert (args.relay_port, args.port, args.pid_file) == (1067, 67, None)
    assert settings_from_args(args).relay.relay_port == 1067
    assert settings_from_args(parse_args(["10.9.0.1"])).relay.relay_port is None
    assert "out of range 1..65535" in usage_error(["-rp", "0", "10.9.0.1"], capsys)
    assert "the RFC 8357 relay port must be another" in usage_error(
        ["-p", "1067", "-rp", "1067", "10.9.0.1"], capsys)


def test_g_is_the_giaddr_written_into_replies_to_clients() -> None:
    """dhcrelay(8) -g: "When a package gets sent back to the client, replace the gateway's IP
    address (giaddr) with the given ipaddr"."""
    relay = settings_from_args(parse_args(["-g", "10.9.1.254", "10.9.0.1"])).relay
    assert relay.reply_giaddr == IPv4Address("10.9.1.254")
    assert settings_from_args(parse_args(["10.9.0.1"])).relay.reply_giaddr is None


def test_U_is_rfc_3527_link_selection_through_that_interface_and_implies_a() -> None:
    """dhcrelay(8) -U: giaddr is ifname's address, the link selection sub-option the address
    of the link the request came in on; "enabling this option automatically enables -a"."""
    relay = settings_from_args(parse_args(["-id", "lan0", "-iu", "up0", "-U", "up0",
                                           "10.9.0.1"])).relay
    assert relay.agent_info is True
    assert relay.interfaces == (
        InterfaceConfig("lan0", Role.DOWNSTREAM, link_selection="up0"),
        InterfaceConfig("up0", Role.BOTH, link_selection="up0"),
    )


def test_U_without_named_client_interfaces_is_refused(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert "-U needs the client interfaces named" in usage_error(["-U", "up0", "10.9.0.1"],
                                                                 capsys)


def test_no_pid_wins_over_pf() -> None:
    args = parse_args(["--no-pid", "-pf", "/run/x.pid", "10.9.0.1"])
    assert args.no_pid and args.pid_file == Path("/run/x.pid")


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        parse_args(["--version"])
    assert caught.value.code == 0
    assert re.fullmatch(r"boothop-relay \d+\.\d+\.\d+\S*\n", capsys.readouterr().out)


def test_server_names_resolve_to_their_first_ipv4_address() -> None:
    relay = settings_from_args(parse_args(["localhost", "10.9.0.2"])).relay
    assert relay.helpers == (IPv4Address("127.0.0.1"), IPv4Address("10.9.0.2"))


def test_a_server_name_that_does_not_resolve_exits_1_naming_it(
        capsys: pytest.CaptureFixture[str]) -> None:
    """A runtime failure (the name may resolve later: systemd restarts it), not exit 78."""
    assert main(["-p", "1067", "no-such-host.invalid"]) == EXIT_FAILURE == 1
    err = capsys.readouterr().err
    assert err.startswith("boothop-relay: <command line>: server: 'no-such-host.invalid' does "
                          "not resolve to an IPv4 address"), err


def test_default_config_is_read_only_without_config_and_servers(tmp_path: Path) -> None:
    default = tmp_path / "relay.toml"
    assert parse_args([], default).config is None  # absent
    default.write_text('helpers = ["10.9.0.1"]\n')
    assert parse_args([], default).config == default
    assert parse_args(["10.9.0.2"], default).config is None  # a dhcrelay command line
    other = tmp_path / "other.toml"
    assert parse_args(["--config", str(other)], default).config == other
