"""A DHCPv6 lease row: one per address, keyed to the client's DUID and IA."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv6Address

from boothop.server.dhcp.lease import HOLDING_STATES, LeaseState


@dataclass(frozen=True, slots=True)
class Lease6:
    address: IPv6Address
    state: LeaseState
    duid: bytes
    iaid: int
    subnet: str
    starts: float
    #: None: never (a reserved row).
    expires: float | None
    #: The client's link-layer address when known (option 79, DUID-LL/LLT).
    mac: bytes | None = None

    def holds(self, now: float) -> bool:
        """Whether the address is taken (by its client, or quarantined) at ``now``."""
        return self.state in HOLDING_STATES and (self.expires is None or self.expires > now)

    def is_active(self, now: float) -> bool:
        return self.state is LeaseState.BOUND and (self.expires is None or self.expires > now)
