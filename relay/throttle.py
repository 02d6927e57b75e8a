"""Per-client rate limiting (sans-IO): a token bucket per client, in a bounded table.

A client (a MAC, or a circuit: the ingress interface with a downstream agent's circuit-id) may
send ``burst`` requests at once and ``rate`` per second after; beyond, its requests are dropped
while every other client is served. A real DHCP client sends a few requests a minute (DISCOVER
and REQUEST, a PXE ROM's retries after 4, 8, 16 and 32 s, then iPXE's and the OS's own); a
flooding one thousands a second.

A client is *throttled* from its first dropped request until its bucket has filled up again (it
kept under its rate long enough): the relay logs both moments once, not each request in
between. Bounded: at most ``capacity`` clients are tracked; beyond, the one seen least recently
is forgotten (a client whose bucket is full again is forgotten anyway: it is as a new one).
Pure state: ``now`` comes from the caller.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Hashable

#: A flood is throttled to this; clients never reach it (see the module docstring).
DEFAULT_MAC_BURST = 10.0
DEFAULT_MAC_RATE = 0.5
#: A LAN (or a switch port behind a downstream relay) has no per-client truth: a mass reboot
#: brings thousands of requests a second to one interface. Off unless configured.
DEFAULT_CIRCUIT_BURST = 2000.0
DEFAULT_CIRCUIT_RATE = 0.0
DEFAULT_TABLE_SIZE = 4096


@dataclasses.dataclass(frozen=True, slots=True)
class BucketLimit:
    #: Requests a client may send at once (the bucket's size).
    burst: float
    #: Requests per second a client may keep sending (the refill); 0: no limit.
    rate: float

    @property
    def enabled(self) -> bool:
        return self.rate > 0


@dataclasses.dataclass(frozen=True, slots=True)
class RateLimits:
    """The relay's per-client limits (TOML ``[rate_limit]``)."""

    mac: BucketLimit = BucketLimit(DEFAULT_MAC_BURST, DEFAULT_MAC_RATE)
    circuit: BucketLimit = BucketLimit(DEFAULT_CIRCUIT_BURST, DEFAULT_CIRCUIT_RATE)
    #: Clients tracked per kind.
    table_size: int = DEFAULT_TABLE_SIZE


@dataclasses.dataclass(frozen=True, slots=True)
class ThrottleChange:
    """Throttling of ``client`` (of a table's ``kind``) started (its first dropped request) or
    stopped (with the number of requests dropped meanwhile)."""

    kind: str
    client: Hashable
    started: bool
    dropped: int


class _Bucket:
    __slots__ = ("dropped", "last", "tokens")

    def __init__(self, tokens: float, last: float) -> None:
        self.tokens = tokens
        self.last = last
        #: Requests dropped since throttling started; 0: not throttled.
        self.dropped = 0


class TokenBuckets:
    def __init__(self, limit: BucketLimit, capacity: int = DEFAULT_TABLE_SIZE, kind: str = "",
                 changes: list[ThrottleChange] | None = None) -> None:
        self.limit = limit
        self._burst, self._rate = limit.burst, limit.rate
        self.capacity = capacity
        self.kind = kind
        #: Least recently seen first.
        self._table: OrderedDict[Hashable, _Bucket] = OrderedDict()
        #: Where the starts and stops of throttling go, for the caller to take (several tables
        #: may share one list: the relay checks one list per request).
        self.changes: list[ThrottleChange] = [] if changes is None else changes
        #: Clients whose throttling started (each episode once).
        self.throttled = 0

    @property
    def throttled_now(self) -> int:
        return sum(1 for bucket in self._table.values() if bucket.dropped)

    def __len__(self) -> int:
        return len(self._table)

    def admit(self, client: Hashable, now: float) -> bool:
        """Whether ``client`` may send a request at ``now`` (taking a token if so)."""
        table = self._table
        bucket = table.get(client)
        if bucket is None:
            if len(table) >= self.capacity:
                self._forget(*table.popitem(last=False))
            bucket = table[client] = _Bucket(self._burst, now)
        else:
            table.move_to_end(client)
            tokens = bucket.tokens + (now - bucket.last) * self._rate
            bucket.tokens = tokens if tokens < self._burst else self._burst
            bucket.last = now
            if bucket.dropped and bucket.tokens >= self._burst:
                self._forget(client, bucket)  # kept under its rate long enough: stopped
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return True
        bucket.dropped += 1
        if bucket.dropped == 1:
            self.throttled += 1
            self.changes.append(ThrottleChange(self.kind, client, True, 0))
        return False

    def expire(self, now: float) -> None:
        """Forget the clients whose buckets are full again (quiet for ``burst / rate`` s)."""
        table, full = self._table, self.limit.burst / self.limit.rate
        while table:
            client, bucket = next(iter(table.items()))
            if now - bucket.last < full:
                return
            del table[client]
            self._forget(client, bucket)

    def _forget(self, client: Hashable, bucket: _Bucket) -> None:
        if bucket.dropped:
            self.changes.append(ThrottleChange(self.kind, client, False, bucket.dropped))
            bucket.dropped = 0
