"""Whether PXE clients get boot information through the relay (sans-IO): the second field
report's other half.

KB259670 (``/work/shared/seeds/003_...``): PXE clients boot when "the PXE server [is] in the
routers IP helper table", not when the DHCP server carries options 60/66/67. With forwarding
classes a relay can get that wrong the other way: a class that sends PXE clients to no PXE
server while the DHCP server, rightly, offers no boot information leaves them with an address
and nothing to boot ("PXE-E53 No boot filename received").

The relay sees both halves: which helpers a PXE client's request went to (its class) and what
came back for its xid. A transaction whose replies, ``window`` seconds on, held an address offer
but no boot information (no option 60 "PXEClient", which every proxyDHCP offer carries, no boot
file) is *unbootable*. Bounded: at most ``capacity`` transactions are watched (the oldest is let
go beyond). Pure state: ``now`` comes from the caller.
"""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address

from .wire import ZERO, DhcpMessage, Opt
from .wire.pxe import is_pxe_client

#: A PXE ROM collects offers for a few seconds (and retries its DISCOVER after 4 s): by then a
#: proxyDHCP offer would have come.
DEFAULT_WINDOW = 10.0
DEFAULT_CAPACITY = 4096


def has_boot_information(msg: DhcpMessage) -> bool:
    """What a PXE ROM can boot from: PXE options (option 60 "PXEClient": a proxyDHCP offer, or a
    DHCP server answering as a PXE server too) or a boot file (the ``file`` field, option 67)."""
    return is_pxe_client(msg) or bool(msg.file) or msg.has(Opt.BOOTFILE_NAME)


@dataclasses.dataclass
class Transaction:
    forwarding_class: str
    helpers: tuple[IPv4Address, ...]
    ifname: str
    started: float
    #: A server that offered an address without boot information, if one did.
    address_only: IPv4Address | None = None
    booted: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Unbootable:
    """A PXE client's transaction that got an address and no boot information."""

    forwarding_class: str
    helpers: tuple[IPv4Address, ...]
    ifname: str
    dhcp_server: IPv4Address


class BootWatch:
    def __init__(self, window: float = DEFAULT_WINDOW, capacity: int = DEFAULT_CAPACITY) -> None:
        self.window = window
        self.capacity = capacity
        #: xid -> its transaction, oldest first.
        self._watched: dict[int, Transaction] = {}

    def forwarded(self, msg: DhcpMessage, forwarding_class: str,
                  helpers: tuple[IPv4Address, ...], ifname: str, now: float) -> None:
        """A request was relayed: watched if it is a PXE client's DISCOVER (its first)."""
        if msg.xid in self._watched or not is_pxe_client(msg):
            return
        if len(self._watched) >= self.capacity:
            del self._watched[next(iter(self._watched))]
        self._watched[msg.xid] = Transaction(forwarding_class, helpers, ifname, now)

    def watching(self, xid: int) -> bool:
        """Whether the transaction ``xid`` is watched (its replies are looked at)."""
        return xid in self._watched

    def replied(self, msg: DhcpMessage, server: IPv4Address) -> tuple[IPv4Address, ...] | None:
        """A reply from ``server`` was delivered: the helpers its transaction went to, if
        watched."""
        transaction = self._watched.get(msg.xid)
        if transaction is None:
            return None
        if has_boot_information(msg):
            transaction.booted = True
        elif msg.yiaddr != ZERO and transaction.address_only is None:
            transaction.address_only = server
        return transaction.helpers

    def expire(self, now: float) -> list[Unbootable]:
        """The transactions ``window`` seconds old or older, let go: those left unbootable."""
        found: list[Unbootable] = []
        watched, deadline = self._watched, now - self.window
        while watched:
            xid, transaction = next(iter(watched.items()))
            if transaction.started > deadline:
                break
            del watched[xid]
            if transaction.address_only is not None and not transaction.booted:
                found.append(Unbootable(transaction.forwarding_class, transaction.helpers,
                                        transaction.ifname, transaction.address_only))
        return found
