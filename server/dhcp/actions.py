"""What the DHCP server core hands its shell: datagrams in, sends, lease commits and drops out.

The actions are made per packet and only read after: not frozen, as a frozen dataclass sets each
field through ``object.__setattr__`` (the shell ring's ``Datagram`` is not frozen either).
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address

from boothop.relay.wire import DhcpMessage, decode

from .lease import IdentityEnum, Lease


class DropReason(IdentityEnum):
    MALFORMED = "malformed"
    NOT_A_REQUEST = "not-a-request"
    UNEXPECTED_MESSAGE_TYPE = "unexpected-message-type"
    NO_CLIENT_IDENTITY = "no-client-identity"
    BAD_RELAY_INFO = "bad-relay-info"
    INTERFACE_NOT_SERVED = "interface-not-served"
    NO_SUBNET = "no-subnet"
    POOL_EXHAUSTED = "pool-exhausted"
    RESERVED_ADDRESS_HELD = "reserved-address-held"
    OTHER_SERVER_SELECTED = "other-server-selected"
    NO_REQUESTED_ADDRESS = "no-requested-address"
    NO_RECORD = "no-record"
    BOOTP_NO_RESERVATION = "bootp-no-reservation"
    DECLINE_NOT_HELD = "decline-not-held"
    RELEASE_NOT_HELD = "release-not-held"
    INFORM_NO_ADDRESS = "inform-no-address"
    REPLY_TOO_LARGE = "reply-too-large"


class ReplyKind(IdentityEnum):
    OFFER = "offer"
    ACK = "ack"
    NAK = "nak"
    INFORM_ACK = "inform-ack"
    BOOTREPLY = "bootreply"


@dataclass(slots=True)
class Send:
    """Send ``payload`` from ``source`` to ``destination:port``.

    ``ifindex`` names the link for a broadcast or a link-local unicast (0: routed, a reply to a
    relay agent). ``to_chaddr`` means RFC 2131 §4.1 asks for a unicast to yiaddr at the
    link-layer address chaddr (the client has no address yet); a shell without a packet socket
    may broadcast instead, which clients accept.
    """

    kind: ReplyKind
    payload: bytes
    destination: IPv4Address
    port: int
    source: IPv4Address
    ifindex: int
    to_chaddr: bool = False

    @property
    def message(self) -> DhcpMessage:
        """The reply decoded (for debug lines and tests: the core builds bytes, not messages)."""
        return decode(self.payload)


class CommitEvent(IdentityEnum):
    BOUND = "bound"
    RENEWED = "renewed"
    RELEASED = "released"
    DECLINED = "declined"
    EXPIRED = "expired"
    SUPERSEDED = "superseded"


@dataclass(slots=True)
class Commit:
    """Write this lease row (keyed by address) durably before any Send that follows it.

    ``previous`` is the row it replaces in memory (None: the address had none), so the shell can
    roll the core back when the store cannot write it.
    """

    lease: Lease
    event: CommitEvent
    previous: Lease | None


@dataclass(slots=True)
class Drop:
    reason: DropReason
    detail: str = ""


Action = Send | Commit | Drop
