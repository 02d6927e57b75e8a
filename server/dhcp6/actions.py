"""What the DHCPv6 server core hands its shell: sends, lease commits and drops."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from ipaddress import IPv6Address

from boothop.server.dhcp.actions import CommitEvent

from .lease import Lease6


class Drop6Reason(enum.Enum):
    MALFORMED = "malformed"
    UNEXPECTED_MESSAGE_TYPE = "unexpected-message-type"
    NO_CLIENT_ID = "no-client-id"
    SERVER_ID_NOT_ALLOWED = "server-id-not-allowed"
    NO_SERVER_ID = "no-server-id"
    OTHER_SERVER_SELECTED = "other-server-selected"
    NO_SUBNET = "no-subnet"
    CONFIRM_WITHOUT_ADDRESSES = "confirm-without-addresses"


@dataclass(frozen=True, slots=True)
class Send6:
    """Send ``payload`` to ``destination``:``port`` (out of ``ifindex`` for a link-local one)."""

    message_type: int
    payload: bytes
    destination: IPv6Address
    port: int
    ifindex: int
    #: The addresses the Reply or Advertise gives: for the log line.
    addresses: tuple[IPv6Address, ...] = ()
    #: The address to answer from: the one the request was sent to (None: the kernel's choice,
    #: for a multicast request).
    source: IPv6Address | None = None


@dataclass(frozen=True, slots=True)
class Commit6:
    """Write this lease row durably before any Send6 that follows it; ``previous`` is the row it
    replaced in memory (None: none), for a rollback when the store cannot write it."""

    lease: Lease6
    event: CommitEvent
    previous: Lease6 | None


@dataclass(frozen=True, slots=True)
class Drop6:
    reason: Drop6Reason
    detail: str = ""


Action6 = Send6 | Commit6 | Drop6
