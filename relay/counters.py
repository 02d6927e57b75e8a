"""Counters for every outcome of the relay engine (Kea-style: one per drop reason)."""

from __future__ import annotations

import dataclasses
from collections import Counter
from ipaddress import IPv4Address, IPv6Address
from typing import TypeVar

from .actions import DeliveryMode
from .drops import DropReason

_K = TypeVar("_K")


class Tally(Counter[_K]):
    """A Counter whose ``c[key] += 1`` costs what a dict's does. Counter defines ``__delitem__``
    in Python, and CPython keeps item assignment and deletion in one type slot, so every
    increment of a Counter goes through a Python-level slot: 299 against 134 ns (timeit), a few
    increments per relayed packet. ``del`` of a missing key raises KeyError, as a dict's."""

    __delitem__ = dict.__delitem__  # type: ignore[assignment]


@dataclasses.dataclass
class RelayCounters:
    received: int = 0
    #: Per ingress interface index (the shell names them).
    received_on: Counter[int] = dataclasses.field(default_factory=Tally)
    requests: int = 0
    replies: int = 0
    #: Replies per local port they arrived on (67, or the RFC 8357 relay port).
    replies_on_port: Counter[int] = dataclasses.field(default_factory=Tally)
    agent_info_added: int = 0
    #: Requests forwarded without our option 82 because it would have exceeded the size limit.
    agent_info_omitted_oversize: int = 0
    #: Smart giaddr: per interface name, clients moved to the next address after unanswered
    #: DISCOVERs.
    giaddr_fallbacks: Counter[str] = dataclasses.field(default_factory=Tally)
    forwarded: Counter[IPv4Address | IPv6Address] = dataclasses.field(default_factory=Tally)
    #: Requests relayed, per forwarding class ("default": no class matched).
    relayed_by_class: Counter[str] = dataclasses.field(default_factory=Tally)
    #: PXE clients' transactions left with an address and no boot information, per class.
    pxe_unbootable: Counter[str] = dataclasses.field(default_factory=Tally)
    #: BOOTREPLYs from servers that are not helpers, seen on a client-facing interface (index).
    rogue_replies: Counter[int] = dataclasses.field(default_factory=Tally)
    #: Clients whose throttling started (relay.throttle), per kind ("mac", "circuit").
    throttled_clients: Counter[str] = dataclasses.field(default_factory=Tally)
    delivered: Counter[DeliveryMode] = dataclasses.field(default_factory=Tally)
    dropped: Counter[DropReason] = dataclasses.field(default_factory=Tally)

    def plus(self, other: RelayCounters) -> RelayCounters:
        """Both counts added up (the daemon's and the kernel datapath's)."""
        summed = RelayCounters()
        for field in dataclasses.fields(self):
            setattr(summed, field.name, getattr(self, field.name) + getattr(other, field.name))
        return summed

    def snapshot(self) -> dict[str, object]:
        """Plain values for a stats log line or a JSON dump."""
        return {
            "received": self.received,
            "requests": self.requests,
            "replies": self.replies,
            "replies_by_port": {str(k): v for k, v in sorted(self.replies_on_port.items())},
            "agent_info_added": self.agent_info_added,
            "agent_info_omitted_oversize": self.agent_info_omitted_oversize,
            "giaddr_fallbacks": dict(sorted(self.giaddr_fallbacks.items())),
            "forwarded": {str(k): v for k, v in sorted(self.forwarded.items())},
            "relayed_by_class": dict(sorted(self.relayed_by_class.items())),
            "throttled_clients": dict(self.throttled_clients),
            "pxe_unbootable_by_class": dict(sorted(self.pxe_unbootable.items())),
            "delivered": {k.value: v for k, v in self.delivered.items()},
            "dropped": {k.value: v for k, v in self.dropped.items()},
        }


@dataclasses.dataclass
class ShellCounters:
    """What happens around the engine besides receiving: send errors and reloads."""

    send_errors: Counter[str] = dataclasses.field(default_factory=Tally)
    reloads: int = 0
    reload_failures: int = 0

    def snapshot(self) -> dict[str, object]:
        return {
            "send_errors": dict(self.send_errors),
            "reloads": self.reloads,
            "reload_failures": self.reload_failures,
        }
