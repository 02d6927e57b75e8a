"""What the DHCPv4 and DHCPv6 relay engines keep alike (sans-IO): their counters, the running
configuration and interface table, and counting an outcome's drops.

Setting ``config`` or ``interfaces`` (a reload, a netlink change) calls the engine's
``_configure`` or ``_interfaces_changed``, which rebuild what the engine derives from them.
Nothing here runs per datagram but ``_dropped``.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from .actions import Drop, Outcome, Outcome6
from .counters import RelayCounters
from .interfaces import InterfaceTable

#: The engine's configuration: RelayConfig or Relay6Config.
C = TypeVar("C")
OutcomeT = TypeVar("OutcomeT", Outcome, Outcome6)


class EngineBookkeeping(Generic[C]):
    def __init__(self, config: C, interfaces: InterfaceTable | None = None) -> None:
        self.counters = RelayCounters()
        self.config = config
        self.interfaces = interfaces or InterfaceTable()

    @property
    def config(self) -> C:
        return self._config

    @config.setter
    def config(self, config: C) -> None:
        self._config = config
        self.generation = getattr(self, "generation", 0) + 1
        self._configure(config)

    def _configure(self, config: C) -> None:
        """Rebuild what the engine derives from its configuration."""

    @property
    def interfaces(self) -> InterfaceTable:
        return self._interfaces

    @interfaces.setter
    def interfaces(self, table: InterfaceTable) -> None:
        self._interfaces = table
        #: Counts configurations and interface tables set: what is derived from them (the
        #: relay's fast path) is rebuilt when it changes.
        self.generation += 1
        self._interfaces_changed()

    def _interfaces_changed(self) -> None:
        """Forget what the engine cached about the previous interface table."""

    def update_config(self, config: C) -> None:
        self.config = config

    def update_interfaces(self, table: InterfaceTable) -> None:
        self.interfaces = table

    def _dropped(self, outcome: OutcomeT) -> OutcomeT:
        """Count the outcome's drops by reason."""
        for action in outcome.actions:
            if isinstance(action, Drop):
                self.counters.dropped[action.reason] += 1
        return outcome
