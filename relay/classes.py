"""Boot-aware forwarding classes (sans-IO): which helpers a request goes to, by what the client is.

Juniper's ``relay-option-60`` is the anchor: "If the option 60 string received in the DHCP client
packet does not match the ASCII or hexadecimal match string and match criteria that you specify
(exact match or partial match), the extended DHCP relay agent relays the client packets to the
specified default group of servers". Here a class matches on any of:

- ``vendor_class``: option 60 starts with one of the strings (``PXEClient``, ``HTTPClient``, ...);
- ``client_arch``: one of option 93's architectures (RFC 4578 §2.1) is listed;
- ``user_class``: one of option 77's classes (RFC 3004, or iPXE's bare string) starts with one
  of the strings;
- ``mac_prefix``: chaddr starts with one of the prefixes;
- ``interfaces``: the request arrived on one of them.

Within one criterion any listed value matches; a class matches when every criterion it sets
does. The classes are tried in the order of the file and the first that matches wins; a request
no class matches goes to the default helpers (the interface's list, else the global one), so
without classes every request goes to every helper, as before.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from ipaddress import IPv4Address

from .wire import DhcpMessage, Opt, WireError
from .wire.pxe import client_architectures, user_classes

#: The counter name of the requests no class matched.
DEFAULT_CLASS = "default"


@dataclasses.dataclass(frozen=True, slots=True)
class ForwardingClass:
    name: str
    helpers: tuple[IPv4Address, ...]
    vendor_class: tuple[bytes, ...] = ()
    client_arch: frozenset[int] = frozenset()
    user_class: tuple[bytes, ...] = ()
    mac_prefix: tuple[bytes, ...] = ()
    interfaces: frozenset[str] = frozenset()

    def matches(self, msg: DhcpMessage, ifname: str) -> bool:
        if self.interfaces and ifname not in self.interfaces:
            return False
        if self.mac_prefix and not msg.hardware_address.startswith(self.mac_prefix):
            return False
        if self.vendor_class:
            vendor = msg.get(Opt.VENDOR_CLASS_ID)
            if vendor is None or not vendor.startswith(self.vendor_class):
                return False
        if self.client_arch:
            try:
                arches = client_architectures(msg)
            except WireError:  # an odd length: no architecture can be read
                return False
            if self.client_arch.isdisjoint(arches):
                return False
        if self.user_class:
            value = msg.get(Opt.USER_CLASS)
            if value is None or not any(c.startswith(self.user_class)
                                        for c in user_classes(value)):
                return False
        return True


def classify(classes: Sequence[ForwardingClass], msg: DhcpMessage,
             ifname: str) -> ForwardingClass | None:
    """The first class that matches, or None (the default helpers)."""
    for forwarding_class in classes:
        if forwarding_class.matches(msg, ifname):
            return forwarding_class
    return None
