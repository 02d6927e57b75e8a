"""The relay's view of the host's interfaces: an immutable snapshot the netlink module replaces."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Iterator
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface


class Role(enum.Enum):
    """dhcrelay's -id / -iu / -i: client-facing, server-facing, or both."""

    DOWNSTREAM = "downstream"
    UPSTREAM = "upstream"
    BOTH = "both"

    @property
    def faces_clients(self) -> bool:
        return self is not Role.UPSTREAM


def is_routable6(address: IPv6Address) -> bool:
    """Global or unique local (RFC 8415 §19.1: "a global or ULA address"): not link-local
    (fe80::/10), multicast (ff00::/8), loopback or unspecified. On the integer: ipaddress's
    ``is_link_local`` builds a network object per call, more than the rest of a relay decision."""
    number = int(address)
    return number > 1 and number >> 118 != 0x3FA and number >> 120 != 0xFF


def is_link_local6(address: IPv6Address) -> bool:
    return int(address) >> 118 == 0x3FA


@dataclasses.dataclass(frozen=True, slots=True)
class Interface:
    index: int
    name: str
    up: bool
    addresses: tuple[IPv4Interface, ...]
    mac: bytes = b""
    addresses6: tuple[IPv6Interface, ...] = ()
    #: The primary address's IP and every address's, computed once: they are read per relayed
    #: packet, and ``IPv4Interface.ip`` builds a new object per call.
    primary_ip: IPv4Address | None = dataclasses.field(init=False, repr=False, compare=False)
    _ips: frozenset[IPv4Address] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "primary_ip", self.addresses[0].ip if self.addresses else None)
        object.__setattr__(self, "_ips", frozenset(a.ip for a in self.addresses))

    @property
    def primary(self) -> IPv4Interface | None:
        return self.addresses[0] if self.addresses else None

    def owns(self, address: IPv4Address) -> bool:
        return address in self._ips

    @property
    def routable6(self) -> IPv6Interface | None:
        """The first global or unique local (ULA) IPv6 address: what names the link to a DHCPv6
        server (RFC 8415 §19.1.1); link-local, loopback and multicast never do."""
        for address in self.addresses6:
            if is_routable6(address.ip):
                return address
        return None


@dataclasses.dataclass(frozen=True)
class InterfaceTable:
    """All interfaces the kernel reported, indexed for the lookups the relay makes per packet."""

    interfaces: tuple[Interface, ...] = ()
    _by_index: dict[int, Interface] = dataclasses.field(init=False, repr=False, compare=False)
    _by_name: dict[str, Interface] = dataclasses.field(init=False, repr=False, compare=False)
    _by_address: dict[IPv4Address | IPv6Address, Interface] = dataclasses.field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_index", {i.index: i for i in self.interfaces})
        object.__setattr__(self, "_by_name", {i.name: i for i in self.interfaces})
        object.__setattr__(
            self,
            "_by_address",
            {
                **{a.ip: i for i in self.interfaces for a in i.addresses},
                **{a.ip: i for i in reversed(self.interfaces) for a in i.addresses6},
            },
        )

    @classmethod
    def of(cls, interfaces: Iterable[Interface]) -> InterfaceTable:
        return cls(tuple(sorted(interfaces, key=lambda i: i.index)))

    def by_index(self, index: int) -> Interface | None:
        return self._by_index.get(index)

    def by_name(self, name: str) -> Interface | None:
        return self._by_name.get(name)

    def by_address(self, address: IPv4Address | IPv6Address) -> Interface | None:
        """The interface holding ``address`` (for a link-local IPv6 address held by several, the
        lowest index)."""
        return self._by_address.get(address)

    def connected(self, address: IPv4Address) -> frozenset[int]:
        """The indexes of the interfaces with a subnet that holds ``address`` (connected routes)."""
        return frozenset(
            i.index for i in self.interfaces for a in i.addresses if address in a.network
        )

    def __iter__(self) -> Iterator[Interface]:
        return iter(self.interfaces)
