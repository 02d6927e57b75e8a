"""The seed-2 diagnosis learns from classes: PXE clients sent to no PXE server while their DHCP
server offers no boot information either.

KB259670 (the second field report): PXE clients boot when the PXE server is in the router's
helper table, and "When the initial DHCP offer from the DHCP server contains these boot options,
an attempt is made to connect to port 4011 on the DHCP server" (the first half, PXE-E55, in
test_relay_engine.py). A class that leaves the PXE server out, with a DHCP server rightly
configured without 60/66/67, gives the other half: an address and nothing to boot (PXE-E53). The
relay learns it from what comes back (relay.bootwatch) and ``boothop-relay check`` says so.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import pytest
from test_relay_classes import PXE_CLASS, pxe_request
from test_relay_engine import (
    DHCP_SERVER,
    PXE_SERVER,
    delivery,
    from_client,
    from_server,
    make_engine,
    reply,
    request,
    warnings,
)

from boothop.relay import cli, metrics
from boothop.relay.actions import Warn
from boothop.relay.bootwatch import DEFAULT_WINDOW, BootWatch, has_boot_information
from boothop.relay.classes import ForwardingClass
from boothop.relay.engine import RelayEngine
from boothop.relay.wire import ZERO, Opt

#: The misconfiguration: PXE clients go to the DHCP server only.
DHCP_ONLY = ForwardingClass("pxe", (DHCP_SERVER,), vendor_class=(b"PXEClient",))
EVENT = "relay.pxe.no_boot_server"


def pxe_transaction(engine: RelayEngine, *answers: tuple[IPv4Address, object],
                    xid: int = 0x1234ABCD, now: float = 0.0) -> None:
    """A PXE client's DISCOVER relayed, and each (server, reply) delivered back."""
    engine.handle(from_client(pxe_request(xid=xid)), now)
    for server, message in answers:
        delivery(engine.handle(from_server(message.replace(xid=xid), source=server),  # type: ignore[attr-defined]
                               now + 0.1))


def unbootable(engine: RelayEngine, now: float) -> list[Warn]:
    return [a for a in engine.sweep(now) if isinstance(a, Warn) and a.event == EVENT]


def proxy_offer() -> object:
    """A proxyDHCP offer: no address, option 60 "PXEClient" (PXE spec 2.1 §2.2.1)."""
    return reply(yiaddr="0.0.0.0", extra=((Opt.VENDOR_CLASS_ID, b"PXEClient"),))


def test_seed2_a_class_sending_pxe_clients_to_no_pxe_server_with_a_plain_dhcp_server_warns_once(
) -> None:
    engine = make_engine(helpers=(DHCP_SERVER,), classes=(DHCP_ONLY,))
    pxe_transaction(engine, (DHCP_SERVER, reply()))
    assert unbootable(engine, DEFAULT_WINDOW - 0.1) == []  # a proxyDHCP offer may still come
    (warning,) = unbootable(engine, DEFAULT_WINDOW)
    assert warning.server == DHCP_SERVER
    for words in ("class 'pxe'", "lan1", str(DHCP_SERVER), "PXE-E53", "no boot file",
                  "add the PXE server to class 'pxe'"):
        assert words in warning.message, warning.message
    assert engine.counters.pxe_unbootable == {"pxe": 1}
    # Counted each time, warned once per class.
    pxe_transaction(engine, (DHCP_SERVER, reply()), xid=7, now=20.0)
    assert unbootable(engine, 40.0) == []
    assert engine.counters.snapshot()["pxe_unbootable_by_class"] == {"pxe": 2}


def test_with_the_pxe_server_among_the_class_helpers_its_proxy_offer_is_boot_information(
) -> None:
    engine = make_engine(helpers=(DHCP_SERVER,), classes=(PXE_CLASS,))
    pxe_transaction(engine, (DHCP_SERVER, reply()), (PXE_SERVER, proxy_offer()))
    assert unbootable(engine, 60.0) == [] and engine.counters.pxe_unbootable == {}


@pytest.mark.parametrize("extra", [((Opt.BOOTFILE_NAME, b"undionly.kpxe"),),
                                   ((Opt.VENDOR_CLASS_ID, b"PXEClient"),)])
def test_a_dhcp_server_offering_boot_information_itself_is_not_this_diagnosis(
        extra: tuple[tuple[int, bytes], ...]) -> None:
    """A boot file (option 67) is enough for a PXE ROM; option 60 "PXEClient" is the other
    half of the report (PXE-E55), warned apart."""
    engine = make_engine(helpers=(DHCP_SERVER,), classes=(DHCP_ONLY,))
    pxe_transaction(engine, (DHCP_SERVER, reply(extra=extra)))
    assert unbootable(engine, 60.0) == []


def test_a_boot_file_in_the_file_field_is_boot_information() -> None:
    assert has_boot_information(reply(file=b"pxelinux.0"))  # type: ignore[arg-type]
    assert not has_boot_information(reply())  # type: ignore[arg-type]


def test_clients_that_are_not_pxe_clients_are_not_watched() -> None:
    engine = make_engine(helpers=(DHCP_SERVER,), classes=(DHCP_ONLY,))
    engine.handle(from_client(request()), 0.0)
    delivery(engine.handle(from_server(reply()), 0.1))
    assert unbootable(engine, 60.0) == []


def test_no_answer_at_all_is_not_this_diagnosis() -> None:
    """Nobody answering is the helpers' unanswered count (relay.replies), not a boot problem."""
    engine = make_engine(helpers=(DHCP_SERVER,), classes=(DHCP_ONLY,))
    engine.handle(from_client(pxe_request()), 0.0)
    assert unbootable(engine, 60.0) == []


def test_without_a_matching_class_the_default_helpers_are_named() -> None:
    engine = make_engine(helpers=(DHCP_SERVER,),
                         classes=(ForwardingClass("efi", (PXE_SERVER,),
                                                  client_arch=frozenset({7})),))
    pxe_transaction(engine, (DHCP_SERVER, reply()))
    (warning,) = unbootable(engine, 60.0)
    assert "the default helpers (no class matched)" in warning.message
    assert engine.counters.pxe_unbootable == {"default": 1}


def test_the_pxe_e55_warning_names_the_class_helpers_the_client_went_to() -> None:
    """The first half of the report, with classes: the helpers named are those of the PXE
    client's class (here the PXE server, which the interface's list lacks)."""
    engine = make_engine(helpers=(DHCP_SERVER,), classes=(PXE_CLASS,))
    engine.handle(from_client(pxe_request()), 0.0)
    pxe_offer = reply(extra=((Opt.VENDOR_CLASS_ID, b"PXEClient"),))
    (warning,) = warnings(engine.handle(from_server(pxe_offer), 0.1))
    assert warning.event == "relay.pxe.dhcp_server_sends_pxeclient"
    assert str(PXE_SERVER) in warning.message


def test_the_watch_is_bounded() -> None:
    watch = BootWatch(capacity=3)
    for xid in range(10):
        watch.forwarded(pxe_request(xid=xid), "pxe", (DHCP_SERVER,), "lan1", 0.0)  # type: ignore[arg-type]
    assert len(watch._watched) == 3
    assert watch.replied(reply(xid=0), DHCP_SERVER) is None  # type: ignore[arg-type]
    assert watch.replied(reply(xid=9), DHCP_SERVER) == (DHCP_SERVER,)  # type: ignore[arg-type]
    assert [u.dhcp_server for u in watch.expire(DEFAULT_WINDOW)] == [DHCP_SERVER]
    assert ZERO not in watch._watched


# -- boothop-relay check ---------------------------------------------------------------------------

FILE = """\
helpers = ["10.99.0.10"]
metrics = "127.0.0.1:9"
[[interface]]
name = "up0"
role = "upstream"
[[interface]]
name = "lan1"
[[class]]
name = "efi"
client_arch = [7]
helpers = ["10.99.0.10", "10.99.0.30"]
"""

EXPOSITION = """\
# HELP boothop_relay_pxe_unbootable_total PXE clients' transactions
# TYPE boothop_relay_pxe_unbootable_total counter
boothop_relay_pxe_unbootable_total{class="efi"} 3.0
boothop_relay_pxe_unbootable_total{class="default"} 0.0
"""


def test_check_shows_where_pxe_clients_go_and_what_the_running_relay_learned(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "relay.toml"
    path.write_text(FILE)
    monkeypatch.setattr(metrics, "scrape", lambda listen, timeout: EXPOSITION)
    assert cli.main(["check", "-c", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "PXE clients (BIOS) on lan1: no class (the default helpers) -> 10.99.0.10" in out
    assert "PXE clients (EFI x64) on lan1: class 'efi' -> 10.99.0.10, 10.99.0.30" in out
    (warning,) = err.splitlines()
    assert warning.startswith("warning: the running relay (127.0.0.1:9) saw 3 PXE client(s) of "
                              "class 'efi' get an address and no boot information")
    assert "PXE-E53" in warning


def test_check_without_a_running_relay_warns_of_nothing(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    path = tmp_path / "relay.toml"
    path.write_text(FILE)  # port 9 (discard): nothing listens there
    assert cli.main(["check", "-c", str(path)]) == 0
    assert capsys.readouterr().err == ""
