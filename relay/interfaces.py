"""The relay's view of the host's interfaces: an immutable snapshot the netlink module replaces."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Iterator
from ipaddress import IPv4Address, IPv4Interface


class Role(enum.Enum):
    """dhcrelay's -id / -iu / -i: client-facing, server-facing, or both."""

    DOWNSTREAM = "downstream"
    UPSTREAM = "upstream"
    BOTH = "both"

    @property
    def faces_clients(self) -> bool:
        return self is not Role.UPSTREAM


@dataclasses.dataclass(frozen=True, slots=True)
class Interface:
    index: int
    name: str
    up: bool
    addresses: tuple[IPv4Interface, ...]
    mac: bytes = b""

    @property
    def primary(self) -> IPv4Interface | None:
        return self.addresses[0] if self.addresses else None

    def owns(self, address: IPv4Address) -> bool:
        return any(a.ip == address for a in self.addresses)


@dataclasses.dataclass(frozen=True)
class InterfaceTable:
    """All interfaces the kernel reported, indexed for the lookups the relay makes per packet."""

    interfaces: tuple[Interface, ...] = ()
    _by_index: dict[int, Interface] = dataclasses.field(init=False, repr=False, compare=False)
    _by_name: dict[str, Interface] = dataclasses.field(init=False, repr=False, compare=False)
    _by_address: dict[IPv4Address, Interface] = dataclasses.field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_index", {i.index: i for i in self.interfaces})
        object.__setattr__(self, "_by_name", {i.name: i for i in self.interfaces})
        object.__setattr__(
            self, "_by_address", {a.ip: i for i in self.interfaces for a in i.addresses}
        )

    @classmethod
    def of(cls, interfaces: Iterable[Interface]) -> InterfaceTable:
        return cls(tuple(sorted(interfaces, key=lambda i: i.index)))

    def by_index(self, index: int) -> Interface | None:
        return self._by_index.get(index)

    def by_name(self, name: str) -> Interface | None:
        return self._by_name.get(name)

    def by_address(self, address: IPv4Address) -> Interface | None:
        return self._by_address.get(address)

    def connected(self, address: IPv4Address) -> frozenset[int]:
        """The indexes of the interfaces with a subnet that holds ``address`` (connected routes)."""
        return frozenset(
            i.index for i in self.interfaces for a in i.addresses if address in a.network
        )

    def __iter__(self) -> Iterator[Interface]:
        return iter(self.interfaces)
