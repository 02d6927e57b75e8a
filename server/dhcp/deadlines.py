"""When each address's offer or lease ends, for the DHCP and DHCPv6 cores (sans-IO)."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator, Sized
from ipaddress import IPv6Address
from typing import Generic, TypeVar

#: Stale entries tolerated beyond twice the live ones before a sweep.
SLACK = 1024

#: An address (IPv6), or an IPv4 address as its integer (the DHCPv4 core's table keys).
A = TypeVar("A", int, IPv6Address)


class Deadlines(Generic[A]):
    """A heap of (when, address). A renewal or a new offer leaves the address's earlier entry
    behind: harmless when it fires (``due`` says whether an entry still means anything), but a
    client renewing in a loop would grow the heap without bound until its lease time passed
    (found by tests/bench/soak.py). Once the heap holds more than twice ``live()`` entries plus
    SLACK, it is rebuilt from the entries ``due`` keeps: amortised O(1) per entry.

    ``leases`` and ``offers``: the core's tables, whose sizes are the live entries (the tables
    themselves, not a function counting them: ``add`` runs twice per DORA)."""

    def __init__(self, due: Callable[[float, A], bool], leases: Sized, offers: Sized) -> None:
        self._heap: list[tuple[float, A]] = []
        self._due: Callable[[float, A], bool] = due
        self._leases, self._offers = leases, offers

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, when: float, address: A) -> None:
        heapq.heappush(self._heap, (when, address))
        if len(self._heap) > 2 * (len(self._leases) + len(self._offers)) + SLACK:
            self._heap = [entry for entry in self._heap if self._due(*entry)]
            heapq.heapify(self._heap)

    def next(self) -> float | None:
        """The earliest deadline, None without any."""
        return self._heap[0][0] if self._heap else None

    def until(self, now: float) -> Iterator[A]:
        """Take the addresses whose deadline is ``now`` or earlier, in order."""
        while self._heap and self._heap[0][0] <= now:
            yield heapq.heappop(self._heap)[1]
