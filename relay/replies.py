"""Whether each helper answers, and how fast: the forwarded (helper, xid) pairs awaiting a reply.

The relay sees every transaction step go out to each helper and every reply come back. A reply
from a helper with the xid of a request forwarded to it within ``timeout`` seconds is *answered*
(and its latency returned to the caller); a pair left waiting longer is *unanswered*: a helper
that stops answering shows there first. Forwarding an xid already waiting for that helper (a
client's retransmission, or the REQUEST after its OFFER was seen) restarts its clock.

Bounded: at most ``capacity`` pairs wait; beyond, the oldest is given up as *untracked* (counted,
so a table too small for the traffic shows). Pure state: ``now`` comes from the caller.
"""

from __future__ import annotations

from collections import Counter
from ipaddress import IPv4Address

from .counters import Tally

#: Longer than any server takes to answer (a ping check before an offer is about a second),
#: shorter than a client's patience (RFC 2131 §4.1: retransmissions after 4, 8, ... seconds).
DEFAULT_TIMEOUT = 5.0
#: Pairs awaiting a reply: some 2,000 DORA/s to two helpers for DEFAULT_TIMEOUT seconds.
DEFAULT_CAPACITY = 32768


class ReplyTracker:
    def __init__(self, timeout: float = DEFAULT_TIMEOUT,
                 capacity: int = DEFAULT_CAPACITY) -> None:
        self.timeout = timeout
        self.capacity = capacity
        #: (helper, xid) -> when it was forwarded; insertion order is forwarding order.
        self._waiting: dict[tuple[IPv4Address, int], float] = {}
        self.answered: Counter[IPv4Address] = Tally()
        self.unanswered: Counter[IPv4Address] = Tally()
        self.untracked: Counter[IPv4Address] = Tally()
        #: When the oldest pair waiting may be due (a pair answered since: earlier than due).
        self._due = float("inf")

    def forwarded(self, helper: IPv4Address, xid: int, now: float) -> None:
        """A request with ``xid`` was sent to ``helper`` at ``now``."""
        waiting = self._waiting
        if now >= self._due:
            self.expire(now)
        key = helper, xid
        if waiting.pop(key, None) is None and len(waiting) >= self.capacity:
            oldest = next(iter(waiting))
            del waiting[oldest]
            self.untracked[oldest[0]] += 1
        if not waiting:
            self._due = now + self.timeout
        waiting[key] = now

    def replied(self, helper: IPv4Address, xid: int, now: float) -> float | None:
        """A reply from ``helper`` with ``xid`` was delivered: its latency, if it answers a
        request still waiting (else None: unsolicited, a second reply, or too late)."""
        sent = self._waiting.pop((helper, xid), None)
        if sent is None:
            return None
        self.answered[helper] += 1
        return now - sent

    def expire(self, now: float) -> None:
        """Count the pairs forwarded ``timeout`` seconds before ``now`` or earlier as
        unanswered."""
        waiting, deadline = self._waiting, now - self.timeout
        while waiting:
            key, sent = next(iter(waiting.items()))
            if sent > deadline:
                self._due = sent + self.timeout
                return
            del waiting[key]
            self.unanswered[key[0]] += 1
        self._due = float("inf")

    def snapshot(self) -> dict[str, dict[str, int]]:
        """Per helper: answered, unanswered, untracked and still waiting."""
        waiting: Counter[IPv4Address] = Counter(helper for helper, _ in self._waiting)
        helpers = set(self.answered) | set(self.unanswered) | set(self.untracked) | set(waiting)
        return {
            str(helper): {
                "answered": self.answered[helper],
                "unanswered": self.unanswered[helper],
                "untracked": self.untracked[helper],
                "waiting": waiting[helper],
            }
            for helper in sorted(helpers)
        }
