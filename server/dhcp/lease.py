"""A lease record: what the store keeps, one row per address."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from ipaddress import IPv4Address


class IdentityEnum(enum.Enum):
    """An Enum hashed by identity, as its members are singletons: ``Enum.__hash__`` is a Python
    call, and the server keys dicts and sets by these members for every packet."""

    __hash__ = object.__hash__


class LeaseState(IdentityEnum):
    BOUND = "bound"
    #: Restored by reconcile for a reservation: the address and its configured owner, not yet in
    #: use.
    RESERVED = "reserved"
    #: The client said the address is in use by someone else (DHCPDECLINE): quarantined until
    #: expiry.
    DECLINED = "declined"
    RELEASED = "released"
    EXPIRED = "expired"


#: States in which no other client may be given the address (until ``expires`` for timed ones).
HOLDING_STATES = frozenset({LeaseState.BOUND, LeaseState.DECLINED})


@dataclass(slots=True, unsafe_hash=True)
class Lease:
    """One row: never changed once made (``dataclasses.replace`` makes the next). Not frozen, as
    a frozen dataclass sets each field through ``object.__setattr__`` (see ``DhcpMessage``): a
    lease is made for every REQUEST."""

    address: IPv4Address
    state: LeaseState
    #: The identity the server keys the client on: ``id:<hex of option 61>`` or
    #: ``hw:<htype>:<hex>``.
    client_key: str
    mac: bytes
    client_id: bytes | None
    subnet: str
    starts: float
    #: None: never (a BOOTP binding or a reserved row).
    expires: float | None
    hostname: str | None = None

    def holds(self, now: float) -> bool:
        """Whether the address is taken (by its client, or quarantined) at ``now``."""
        return self.state in HOLDING_STATES and (self.expires is None or self.expires > now)

    def is_active(self, now: float) -> bool:
        return self.state is LeaseState.BOUND and (self.expires is None or self.expires > now)


def client_key(client_id: bytes | None, htype: int, mac: bytes) -> str:
    """RFC 2131 §4.2: the client identifier if supplied, else the hardware type and address."""
    if client_id:
        return "id:" + client_id.hex()
    return f"hw:{htype}:{mac.hex()}"
