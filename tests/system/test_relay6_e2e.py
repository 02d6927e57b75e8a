"""DHCPv6 relaying end to end: real clients on two links get addresses from Kea's kea-dhcp6
through the relay under test, boothop-relay -6 and, as the reference, ISC dhcrelay -6.

```
 bh6-ca-N (dhclient -6) ──[2001:db8:1::/64]──┐
                                             bh6-rt-N (relay -6 -l ra -l rb -u S%rs -u R%rs) ──
 bh6-cb-N (dhcpcd -6)   ──[2001:db8:2::/64]──┘      [2001:db8:99::/64]── bh6-sv-N (kea-dhcp6 on
                                                     S = ::2, a UDP recorder on R = ::3, port 547)
```

The relay is run with dhcrelay's own command line. Each client must get an address of its own
link's subnet (Kea picks it by the link-address), which the reply reaches only through the
Interface-ID; the recorder, the second server, must receive a Relay-forward for every one Kea
got. Then boothop's Interface-ID is shown to win over the link-address, and a Relay-reply from a
host that is no configured server is shown to be dropped and counted. Namespaces of our own
(prefix ``bh6``), every process stopped by PID and every namespace deleted in ``finally``.
"""

from __future__ import annotations

import json
import signal
import sys
from ipaddress import IPv6Address
from pathlib import Path
from typing import Any

import pytest
from conftest import need, relay_program, require_system
from routed import wait_for
from routed6 import PREFIXES, Lab6, clients_bound6, dhclient6, dhclient6_bound
from servers import start_recorder

from boothop.relay.lab.processes import Process, ProcessRunner
from boothop.relay.lab.processes import wait_for as until
from boothop.relay.wire.dhcpv6 import (
    Dhcp6Message,
    MessageType6,
    Opt6,
    RelayMessage,
    decode6,
    encode6,
)

KEA = "2001:db8:99::2"
RECORDER = "2001:db8:99::3"
ROGUE = "2001:db8:99::66"
RELAY_UP = "2001:db8:99::1"
#: Receives one UDP datagram on [::]:546 (what the relay delivers to a client) and prints it.
LISTEN_546 = """
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind(("::", 546))
s.settimeout(float(sys.argv[1]))
print("listening", flush=True)
try:
    data, source = s.recvfrom(4096)
    print("got", source[0], data.hex(), flush=True)
except socket.timeout:
    print("nothing", flush=True)
"""


def relay_lab(tmp: Path) -> Lab6:
    """The lab drawn above: the relay's upper link to the servers, one lower link a client."""
    return Lab6(tmp, "bh6", [("sv", "s", "rt", "rs"), ("ca", "a", "rt", "ra"),
                             ("cb", "b", "rt", "rb")],
                [("rt", "rs", f"{RELAY_UP}/64"),
                 *(("sv", "s", f"{address}/64") for address in (KEA, RECORDER, ROGUE)),
                 *(("rt", f"r{name}", f"{prefix}::1/64") for name, prefix in PREFIXES.items())])


def kea_config(lab: Lab6) -> dict[str, object]:
    return {"Dhcp6": {
        "interfaces-config": {"interfaces": [f"{lab.link('s')}/{KEA}"]},
        "lease-database": {"type": "memfile", "persist": False},
        "server-id": {"type": "EN", "enterprise-id": 2495, "identifier": "b007", "persist": False},
        "preferred-lifetime": 300, "valid-lifetime": 600, "renew-timer": 150,
        "rebind-timer": 240,
        "subnet6": [
            {"id": n, "subnet": f"{prefix}::/64",
             "pools": [{"pool": f"{prefix}::100-{prefix}::1ff"}]}
            for n, prefix in enumerate(PREFIXES.values(), 1)
        ],
        "loggers": [{"name": "kea-dhcp6", "output_options": [{"output": "stdout"}],
                     "severity": "INFO"}],
    }}


def relay_argv(implementation: str, lab: Lab6) -> list[str]:
    """dhcrelay -6's command line, the same for both (-l per client link, -u per server); or,
    for "boothop-toml", a file running the IPv4 relay and the DHCPv6 relay in one process."""
    flags = ["-6", "-d", "-l", lab.link("ra"), "-l", lab.link("rb"),
             "-u", f"{KEA}%{lab.link('rs')}", "-u", f"{RECORDER}%{lab.link('rs')}"]
    program = relay_program("dhcrelay" if implementation == "dhcrelay" else "boothop")
    stats = ["--log-format", "json", "--stats-file", str(lab.tmp / "stats.json")]
    if implementation == "dhcrelay":
        return [program, *flags, "-pf", str(lab.tmp / "dhcrelay6.pid")]
    if implementation == "boothop-toml":
        config = lab.tmp / "relay.toml"
        config.write_text(
            f'helpers = ["{lab.server}"]\n[dhcpv6]\n'
            + "".join(f'[[dhcpv6.lower]]\nname = "{lab.link(f"r{name}")}"\n' for name in PREFIXES)
            + "".join(f'[[dhcpv6.upper]]\ninterface = "{lab.link("rs")}"\naddress = "{to}"\n'
                      for to in (KEA, RECORDER)))
        return [program, "--config", str(config), *stats]
    return [program, *flags, "-I", *stats]


def relay6_stats(lab: Lab6, implementation: str) -> dict[str, Any]:
    """boothop's DHCPv6 counters: the stats file, or its "dhcpv6" part beside the IPv4 relay."""
    stats: dict[str, Any] = json.loads((lab.tmp / "stats.json").read_text())
    return stats["dhcpv6"] if implementation == "boothop-toml" else stats


def start_kea6(lab: Lab6, runner: ProcessRunner) -> Process:
    """kea-dhcp6 on ``KEA`` once it has started."""
    config = lab.tmp / "kea-dhcp6.json"
    config.write_text(json.dumps(kea_config(lab)))
    env = {"KEA_LOCKFILE_DIR": str(lab.tmp), "KEA_PIDFILE_DIR": str(lab.tmp)}
    kea = runner.start(lab.ns["sv"], [need("kea-dhcp6"), "-c", str(config)], "kea6", env=env)
    assert wait_for_text(kea, "DHCP6_STARTED", 15), kea.output()
    return kea


def start_relay6(lab: Lab6, runner: ProcessRunner, implementation: str) -> Process:
    """The relay under test (``relay_argv``) once it listens on port 547."""
    relay = runner.start(lab.ns["rt"], relay_argv(implementation, lab), implementation)
    wait_for(lambda: "547" in lab.ex("rt", "ss", "-Hnul", "sport = :547").stdout
             or not relay.running(), 10, "the relay on port 547")
    assert relay.running(), relay.output()
    return relay


@pytest.mark.system
@pytest.mark.parametrize("implementation", ["dhcrelay", "boothop", "boothop-toml"])
def test_dhclient_and_dhcpcd_get_addresses_of_their_link_through_the_relay_from_kea(
    implementation: str, tmp_path: Path
) -> None:
    require_system("kea-dhcp6", "dhclient", "dhcpcd")
    lab = relay_lab(tmp_path)
    runner = ProcessRunner(tmp_path / "logs")
    try:
        lab.build()
        start_kea6(lab, runner)
        recorded = tmp_path / "recorded.txt"
        start_recorder(runner, lab.ns["sv"], recorded, port=547, address=RECORDER, seconds=60)
        relay = start_relay6(lab, runner, implementation)
        address_a, address_b, _ = clients_bound6(lab, runner, lambda: f"via {implementation}")
        assert address_a in _pool("2001:db8:1")
        assert address_b in _pool("2001:db8:2")

        # The second server received a Relay-forward for each client message Kea answered,
        # each naming its client's link by Interface-ID.
        forwards = [decode6(bytes.fromhex(line.split()[2]))
                    for line in recorded.read_text().splitlines()]
        assert forwards and all(isinstance(f, RelayMessage) and f.msg_type == 12
                                for f in forwards)
        seen_ids = {f.get(Opt6.INTERFACE_ID) for f in forwards}
        assert seen_ids >= {lab.link("ra").encode(), lab.link("rb").encode()} or (
            implementation == "dhcrelay")  # dhcrelay's Interface-ID is its own encoding
        kinds = {f.inner().msg_type for f in forwards}  # type: ignore[union-attr]
        assert {MessageType6.SOLICIT, MessageType6.REQUEST} <= kinds
        if implementation != "dhcrelay":
            wait_for(lambda: relay6_stats(lab, implementation)["forwarded"].get(RECORDER) == len(
                recorded.read_text().splitlines()), 5, "the stats file to count what was recorded")
            stats = relay6_stats(lab, implementation)
            assert stats["forwarded"][RECORDER] == stats["forwarded"][KEA] >= len(forwards)
            assert stats["delivered"]["peer-client"] >= 4  # two Advertises, two Replies
            assert stats["joined"] == sorted([lab.link("ra"), lab.link("rb")])
        if implementation == "boothop-toml":
            # SIGHUP: a bad file keeps the running configuration; a good one drops link b.
            config = tmp_path / "relay.toml"
            good = config.read_text()
            config.write_text(good.replace('address = "', 'address = "10.0.0.'))
            relay.popen.send_signal(signal.SIGHUP)
            wait_for(lambda: relay6_stats(lab, implementation)["reload_failures"] == 1, 5,
                     "the bad file refused")
            assert relay6_stats(lab, implementation)["lower"] == [lab.link("ra"), lab.link("rb")]
            lower_b = f'[[dhcpv6.lower]]\nname = "{lab.link("rb")}"\n'
            config.write_text(good.replace(lower_b, ""))
            relay.popen.send_signal(signal.SIGHUP)
            wait_for(lambda: relay6_stats(lab, implementation)["lower"] == [lab.link("ra")], 5,
                     "the reloaded DHCPv6 configuration")
            assert relay6_stats(lab, implementation)["joined"] == [lab.link("ra")]
            assert relay.running()
    finally:
        runner.stop_all()
        lab.close()


@pytest.mark.system
def test_interface_id_wins_over_link_address_and_a_spoofed_relay_reply_is_dropped(
    tmp_path: Path
) -> None:
    """A Relay-reply from the configured server RECORDER with link b's Interface-ID and link a's
    link-address reaches link b; the same from ROGUE, no configured server, reaches no one and
    is counted as reply-from-non-server."""
    require_system()
    lab = relay_lab(tmp_path)
    runner = ProcessRunner(tmp_path / "logs")
    try:
        lab.build()
        peer = "2001:db8:2::77"
        lab.ex("cb", "ip", "addr", "add", f"{peer}/64", "dev", lab.link("b"), "nodad")
        lab.ex("ca", "ip", "addr", "add", "2001:db8:1::77/64", "dev", lab.link("a"), "nodad")
        start_relay6(lab, runner, "boothop")
        advertise = encode6(Dhcp6Message(MessageType6.ADVERTISE, 0xABCDEF))

        def relay_reply(source: str) -> tuple[str, str]:
            """Send a Relay-reply to the relay from ``source``: what links a and b received."""
            listeners = {
                name: runner.start(lab.ns[f"c{name}"], [sys.executable, "-c", LISTEN_546, "4"],
                                   f"listen-{name}-{source}")
                for name in ("a", "b")
            }
            for listener in listeners.values():
                assert wait_for_text(listener, "listening", 10), listener.output()
            message = RelayMessage(
                MessageType6.RELAY_REPL, 0, IPv6Address("2001:db8:1::1"), IPv6Address(peer),
                ((Opt6.INTERFACE_ID, lab.link("rb").encode()), (Opt6.RELAY_MSG, advertise)),
            )
            send = ("import socket, sys; s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); "
                    "s.bind((sys.argv[1], 547)); s.sendto(bytes.fromhex(sys.argv[2]), "
                    f"('{RELAY_UP}', 547))")
            lab.ex("sv", sys.executable, "-c", send, source, encode6(message).hex())
            for listener in listeners.values():
                assert wait_for_text(listener, "got", 6) or wait_for_text(
                    listener, "nothing", 6), listener.output()
            return listeners["a"].output(), listeners["b"].output()

        got_a, got_b = relay_reply(RECORDER)
        assert "nothing" in got_a
        assert f"got {peer} " not in got_b and advertise.hex() in got_b  # from the relay
        spoofed_a, spoofed_b = relay_reply(ROGUE)
        assert "nothing" in spoofed_a and "nothing" in spoofed_b
        stats = tmp_path / "stats.json"
        wait_for(lambda: json.loads(stats.read_text())["dropped"].get("reply-from-non-server")
                 == 1, 5, "the spoofed Relay-reply counted")
        assert json.loads(stats.read_text())["delivered"] == {"peer-client": 1}
    finally:
        runner.stop_all()
        lab.close()


def _pool(prefix: str) -> list[IPv6Address]:
    """Kea's pool on a link (``::100`` to ``::1ff``)."""
    first = int(IPv6Address(f"{prefix}::100"))
    return [IPv6Address(n) for n in range(first, first + 0x100)]


def wait_for_text(process: Process, text: str, timeout: float) -> bool:
    return bool(until(lambda: text in process.output(), timeout))


@pytest.mark.system
def test_a_client_link_that_comes_back_is_joined_again_and_served(tmp_path: Path) -> None:
    """Live interfaces: link b is deleted and created again while boothop-relay -6 runs; it
    leaves, then joins ff02::1:2 on the new interface (a new index), and a client there is
    served through it."""
    require_system("kea-dhcp6", "dhclient")
    lab = relay_lab(tmp_path)
    runner = ProcessRunner(tmp_path / "logs")
    try:
        lab.build()
        start_kea6(lab, runner)
        relay = start_relay6(lab, runner, "boothop")

        def joined() -> list[str]:
            try:
                return list(relay6_stats(lab, "boothop")["joined"])
            except (OSError, ValueError):
                return []

        both = sorted([lab.link("ra"), lab.link("rb")])
        wait_for(lambda: joined() == both, 10, "ff02::1:2 joined on both client links")
        lab.ex("rt", "ip", "link", "del", lab.link("rb"))
        wait_for(lambda: joined() == [lab.link("ra")], 10, "link b gone")
        lab.veth("cb", "b", "rt", "rb")
        lab.ex("rt", "ip", "addr", "add", f"{PREFIXES['b']}::1/64", "dev", lab.link("rb"), "nodad")
        wait_for(lambda: joined() == both, 10, "ff02::1:2 joined again on the new link b")
        lab.wait_link_local("cb", "b")
        runner.start(lab.ns["cb"], dhclient6(lab, "b", "-1", "-d"), "dhclient6")
        wait_for(lambda: dhclient6_bound(lab, PREFIXES["b"]), 30,
                 "dhclient -6 bound on the new link b")
        assert relay.running()
    finally:
        runner.stop_all()
        lab.close()
