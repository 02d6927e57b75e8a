"""Smart giaddr (sans-IO): which of an interface's addresses a client's requests are relayed with.

On a LAN carrying several subnets (an interface with secondary addresses) a server may serve only
some of them. Cisco's ``ip dhcp smart-relay`` is the anchor: the relay uses the primary address
as giaddr, and "when the relay agent does not receive a DHCPOFFER after three DISCOVER
attempts" from a client it uses the next secondary address. Here, per (interface, chaddr):

- a DISCOVER is relayed with the client's current address; after ``retries`` DISCOVERs with no
  reply delivered to that client, the next address is taken (cycling back to the primary after
  the last secondary), and that step is counted as a fallback;
- any reply delivered to the client resets its count (the server answers on that subnet), so
  its REQUEST, and its later DISCOVERs, keep the address that worked;
- other messages (REQUEST, INFORM, DECLINE, RELEASE) never move it; one that names its address
  (ciaddr, or option 50 in a REQUEST) goes with the interface address on that address's subnet,
  which also holds across a relay restart.

Bounded: at most ``capacity`` clients are remembered, least recently seen forgotten first.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface

#: Clients remembered: a few thousand on a router's LANs; a forgotten one starts at the primary.
DEFAULT_CAPACITY = 4096


class SmartGiaddr:
    def __init__(self, retries: int, capacity: int = DEFAULT_CAPACITY) -> None:
        self.retries = retries
        self.capacity = capacity
        #: (ifindex, chaddr) -> (address index, DISCOVERs relayed with it since a reply);
        #: insertion order is recency.
        self._clients: dict[tuple[int, bytes], tuple[int, int]] = {}

    def __len__(self) -> int:
        return len(self._clients)

    def choose(self, ifindex: int, chaddr: bytes, addresses: tuple[IPv4Interface, ...], *,
               discover: bool, names: IPv4Address | None = None) -> tuple[IPv4Address, bool]:
        """The giaddr for this request and whether it is a fallback (a new address after
        ``retries`` unanswered DISCOVERs). ``addresses`` is not empty, primary first; ``names``
        is the address a non-DISCOVER request names (ciaddr, option 50), if any."""
        key = ifindex, chaddr
        index, unanswered = self._clients.pop(key, (0, 0))
        fallback = False
        named = None if names is None else _subnet_of(names, addresses)
        if named is not None:
            index = named
        elif discover:
            if unanswered >= self.retries:
                index, unanswered, fallback = index + 1, 0, len(addresses) > 1
            unanswered += 1
        index %= len(addresses)
        if len(self._clients) >= self.capacity:
            del self._clients[next(iter(self._clients))]
        self._clients[key] = index, unanswered
        return addresses[index].ip, fallback

    def answered(self, ifindex: int, chaddr: bytes) -> None:
        """A reply was delivered to the client: its address works, its count starts again."""
        key = ifindex, chaddr
        state = self._clients.get(key)
        if state is not None:
            self._clients[key] = state[0], 0


def _subnet_of(address: IPv4Address, addresses: tuple[IPv4Interface, ...]) -> int | None:
    for index, own in enumerate(addresses):
        if address in own.network:
            return index
    return None
