"""The UDP broadcast helper's shell side: the datagram the raw socket sends (scapy as the
oracle), the service's sends and log lines, and a reload that keeps the bound ports."""

from __future__ import annotations

import dataclasses
import errno
import socket
from ipaddress import IPv4Address

from scapy.layers.inet import IP, UDP
from structlog.testing import capture_logs
from test_relay_service_shell import CONFIG, LAN, UPLINK

from boothop.relay.broadcast import ForwardUdp, UdpDrop
from boothop.relay.config import UdpForwarding
from boothop.relay.configfile import RelaySettings
from boothop.relay.engine import RelayEngine
from boothop.relay.interfaces import InterfaceTable
from boothop.relay.service import RelayService
from boothop.relay.sockets import Sender
from boothop.relay.wire import Datagram

HELPER = IPv4Address("10.71.100.69")
CLIENT = IPv4Address("10.71.1.50")
FORWARDING = UdpForwarding(ports=(69,), helpers=(HELPER,), rate_limit=3)


class RecordingSocket:
    """Stands in for the raw socket: what ``sendto`` was given (or the error to raise)."""

    def __init__(self, error: OSError | None = None) -> None:
        self.sent: list[tuple[bytes, int, tuple[str, int]]] = []
        self.error = error

    def sendto(self, data: bytes, flags: int, address: tuple[str, int]) -> int:
        if self.error is not None:
            raise self.error
        self.sent.append((data, flags, address))
        return len(data)

    def close(self) -> None:
        pass


def relay(raw: RecordingSocket) -> RelayService:
    engine = RelayEngine(dataclasses.replace(CONFIG, forward_udp=FORWARDING),
                         InterfaceTable.of([LAN, UPLINK]))
    sender = Sender(None, None, raw=raw)  # type: ignore[arg-type]
    return RelayService(engine, None, sender)  # type: ignore[arg-type]


def rrq(source: IPv4Address = CLIENT) -> Datagram:
    return Datagram(b"\x00\x01f\x00octet\x00", source, 40123, IPv4Address("10.71.1.255"),
                    LAN.index, port=69)


def test_forward_udp_sends_an_ipv4_datagram_with_the_clients_source() -> None:
    raw = RecordingSocket()
    Sender(None, None, raw=raw).forward_udp(  # type: ignore[arg-type]
        ForwardUdp(HELPER, 69, CLIENT, 40123, b"\x00\x01f\x00octet\x00"))
    ((data, flags, address),) = raw.sent
    assert address == (str(HELPER), 0) and flags & socket.MSG_DONTWAIT
    packet = IP(data)
    assert (packet.src, packet.dst, packet[UDP].sport, packet[UDP].dport) == (
        str(CLIENT), str(HELPER), 40123, 69)
    assert bytes(packet[UDP].payload) == b"\x00\x01f\x00octet\x00"
    bare = IP(data)
    del bare.chksum  # scapy computes both checksums again when they are deleted
    del bare[UDP].chksum
    recomputed = IP(bytes(bare))
    assert (packet.chksum, packet[UDP].chksum) == (recomputed.chksum, recomputed[UDP].chksum)


def test_service_forwards_logs_each_step_and_rate_limits() -> None:
    raw = RecordingSocket()
    service = relay(raw)
    service.steps = True
    with capture_logs() as logs:
        for _ in range(5):
            service.handle_udp(rrq(), 1.0)
    assert len(raw.sent) == 3  # rate_limit 3 a second
    forwarded = [e for e in logs if e["event"] == "relay.udp.forwarded"]
    assert forwarded[0]["servers"] == [str(HELPER)] and forwarded[0]["port"] == 69
    assert forwarded[0]["source"] == f"{CLIENT}:40123"
    drops = [e for e in logs if e["event"] == "relay.udp.drop"]
    assert [d["reason"] for d in drops] == [UdpDrop.RATE_LIMITED.value] * 2
    snapshot = service.snapshot()
    assert snapshot["udp_forwarded"] == {"69": {str(HELPER): 3}}
    assert snapshot["udp_dropped"] == {"rate-limited": 2}


def test_service_counts_a_send_error_and_goes_on() -> None:
    service = relay(RecordingSocket(OSError(errno.ENETUNREACH, "unreachable")))
    service.handle_udp(rrq(), 1.0)
    assert service.shell.send_errors == {"ENETUNREACH": 1}


def test_reload_keeps_the_bound_ports_and_takes_the_new_rate() -> None:
    raw = RecordingSocket()
    service = relay(raw)
    assert service.udp_ports == (69,)
    faster = dataclasses.replace(FORWARDING, ports=(69, 9), rate_limit=10)
    with capture_logs() as logs:
        service.apply_config(RelaySettings(dataclasses.replace(CONFIG, forward_udp=faster)))
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == [
        "relay.config.forward_udp_ports_kept"]
    for _ in range(12):
        service.handle_udp(rrq(), 2.0)
    assert len(raw.sent) == 10
