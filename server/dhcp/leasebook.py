"""What the DHCP and DHCPv6 cores keep alike (sans-IO): the lease rows and the offers by address
with their deadlines (deadlines.py), applying a reload's reconcile plan, undoing the commits the
store could not write, and the timer that ends offers, bindings and quarantines.

Each core keeps its own client keys (a DHCPv4 client key, a DHCPv6 DUID and IAID) in ``_store``,
``_unstore`` and ``_forget_offer``, and makes its own commit action (``_commit``). Nothing here
runs per packet.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from ipaddress import IPv4Address, IPv6Address
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from .actions import CommitEvent
from .deadlines import Deadlines
from .lease import LeaseState

#: The tables' key: an IPv6Address, or an IPv4 address as its integer (hashing an IPv4Address
#: is a Python call, and the DHCPv4 core looks addresses up several times per packet).
A = TypeVar("A", int, IPv6Address)


class LeaseRow(Protocol):
    """A lease row (Lease, Lease6): a dataclass, never changed in place."""

    __dataclass_fields__: ClassVar[dict[str, Any]]

    @property
    def address(self) -> IPv4Address | IPv6Address: ...
    @property
    def state(self) -> LeaseState: ...
    @property
    def expires(self) -> float | None: ...


class OfferRow(Protocol):
    @property
    def expires(self) -> float: ...


L = TypeVar("L", bound=LeaseRow)
L_co = TypeVar("L_co", bound=LeaseRow, covariant=True)
#: The core's action type (Action, Action6): what ``on_timer`` returns.
Act = TypeVar("Act")


class CommitRow(Protocol[L_co]):
    """A commit action (Commit, Commit6): the row written and the one it replaced."""

    @property
    def lease(self) -> L_co: ...
    @property
    def previous(self) -> L_co | None: ...


class LeaseBook(ABC, Generic[A, L, Act]):
    leases: Mapping[A, L]
    offers: Mapping[A, OfferRow]
    #: Reserved addresses: an offer of one is withdrawn on reload.
    _reserved: Mapping[A, object]
    _timers: Deadlines[A]

    @abstractmethod
    def _store(self, lease: L) -> L | None:
        """Put ``lease`` in the table: the row it replaces."""

    @abstractmethod
    def _key(self, address: IPv4Address | IPv6Address) -> A:
        """The tables' key of a row's ``address``."""

    @abstractmethod
    def _unstore(self, address: A) -> None: ...

    @abstractmethod
    def _forget_offer(self, address: A) -> None: ...

    @abstractmethod
    def _commit(self, lease: L, event: CommitEvent, previous: L | None) -> Act: ...

    def _apply_plan(self, upserts: Iterable[L],
                    deletes: Iterable[IPv4Address] | Iterable[IPv6Address]) -> None:
        """A reload's reconcile plan (already written by the shell); an offer of an address that
        is reserved now is withdrawn."""
        for deleted in deletes:
            self._unstore(self._key(deleted))
        for lease in upserts:
            self._store(lease)
        for address in [a for a in self.offers if a in self._reserved]:
            self._forget_offer(address)

    def rollback(self, commits: Sequence[CommitRow[L]]) -> None:
        """Undo commits the store could not write, newest first, so memory agrees with disk
        again; a row changed since (by a later burst or a timer) is left as it is."""
        for commit in reversed(commits):
            address = self._key(commit.lease.address)
            if self.leases.get(address) is not commit.lease:
                continue
            if commit.previous is None:
                self._unstore(address)
            else:
                self._store(commit.previous)

    # -- timers ------------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        return self._timers.next()

    def _due(self, when: float, address: A) -> bool:
        """Whether on_timer at ``when`` would act on ``address``: its offer or lease ends then."""
        offer = self.offers.get(address)
        lease = self.leases.get(address)
        return (offer is not None and offer.expires == when) or (
            lease is not None and lease.expires == when
            and lease.state in (LeaseState.BOUND, LeaseState.DECLINED))

    def on_timer(self, now: float) -> list[Act]:
        """Forget expired offers; mark expired leases and finished quarantines EXPIRED."""
        actions: list[Act] = []
        for address in self._timers.until(now):
            offer = self.offers.get(address)
            if offer is not None and offer.expires <= now:
                self._forget_offer(address)
            lease = self.leases.get(address)
            if (lease is not None and lease.state in (LeaseState.BOUND, LeaseState.DECLINED)
                    and lease.expires is not None and lease.expires <= now):
                expired = replace(lease, state=LeaseState.EXPIRED)
                actions.append(self._commit(expired, CommitEvent.EXPIRED, self._store(expired)))
        return actions
