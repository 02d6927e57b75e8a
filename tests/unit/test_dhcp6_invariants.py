"""Property, as for IPv4 (test_server_invariants.py): whatever DHCPv6 clients do, in any order and
across restarts, no address is bound to two DUIDs at once (the Replies, seen from outside, never
overlap), and the core's table agrees with what the clients were told."""

from __future__ import annotations

from ipaddress import IPv6Address

from dhcp6_helpers import SERVER_DUID, M, config, duid, ia, link_layer, message, relayed
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from boothop.relay.wire.dhcpv6 import Dhcp6Message, IaAddress, IaNa, Opt6, decode6, innermost
from boothop.server.dhcp6.actions import Send6
from boothop.server.dhcp6.core import Dhcp6ServerCore

CLIENTS = st.integers(min_value=0, max_value=6)
IAIDS = st.integers(min_value=1, max_value=2)
ADDRESSES = st.sampled_from([IPv6Address(f"2001:db8:1::{n}")
                             for n in ("10", "11", "100", "101", "102", "103", "150")])
SUBNETS = [{
    "prefix": "2001:db8:1::/64", "pools": ["2001:db8:1::100-2001:db8:1::103"],
    "preferred_lifetime": 60, "valid_lifetime": 120,
    "reservations": [{"duid": duid(5).hex(), "address": "2001:db8:1::10"},
                     {"mac": "52:54:00:00:00:0b", "address": "2001:db8:1::11"}],
}]


class NoAddressForTwoDuids(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.config = config(subnets=SUBNETS, decline_time=50, offer_hold=10)
        self.core = Dhcp6ServerCore(self.config, SERVER_DUID)
        self.now = 0.0
        #: address -> (client, iaid, expiry) as Replies told the clients.
        self.granted: dict[IPv6Address, tuple[int, int, float]] = {}

    def run(self, client: int, kind: int, *options: tuple[int, bytes],
            server: bool = False) -> None:
        # Client 6 is known by the MAC of a reservation (its relay's option 79).
        extra = (link_layer("52:54:00:00:00:0b"),) if client == 6 else ()
        msg = message(kind, duid(client), *options, server=SERVER_DUID if server else None)
        for action in self.core.handle(relayed(msg, "2001:db8:1::1", *extra), self.now):
            if isinstance(action, Send6):
                self.told(client, innermost(decode6(action.payload)))

    def told(self, client: int, reply: Dhcp6Message) -> None:
        if reply.msg_type != M.REPLY:
            return
        for raw in reply.get_all(Opt6.IA_NA):
            ia_na = IaNa.decode(raw)
            for value in ia_na.get_all(Opt6.IAADDR):
                entry = IaAddress.decode(value)
                if entry.valid_lifetime == 0:
                    continue
                holder = self.granted.get(entry.address)
                assert holder is None or holder[:2] == (client, ia_na.iaid) or (
                    holder[2] <= self.now), (
                    f"{entry.address} given to {client} while {holder} holds it")
                for address, owner in list(self.granted.items()):
                    if owner[:2] == (client, ia_na.iaid) and address != entry.address:
                        del self.granted[address]  # an IA holds one address here
                self.granted[entry.address] = (client, ia_na.iaid,
                                               self.now + entry.valid_lifetime)

    @rule(client=CLIENTS, iaid=IAIDS, rapid=st.booleans(), hint=st.none() | ADDRESSES)
    def solicit(self, client: int, iaid: int, rapid: bool, hint: IPv6Address | None) -> None:
        options = [ia(iaid, *([hint] if hint else []))]
        if rapid:
            options.append((int(Opt6.RAPID_COMMIT), b""))
        self.run(client, M.SOLICIT, *options)

    @rule(client=CLIENTS, iaid=IAIDS, address=ADDRESSES)
    def request(self, client: int, iaid: int, address: IPv6Address) -> None:
        self.run(client, M.REQUEST, ia(iaid, address), server=True)

    @rule(client=CLIENTS, iaid=IAIDS, address=ADDRESSES, rebind=st.booleans())
    def renew(self, client: int, iaid: int, address: IPv6Address, rebind: bool) -> None:
        self.run(client, M.REBIND if rebind else M.RENEW, ia(iaid, address), server=not rebind)

    @rule(client=CLIENTS, iaid=IAIDS, address=ADDRESSES, decline=st.booleans())
    def release(self, client: int, iaid: int, address: IPv6Address, decline: bool) -> None:
        self.run(client, M.DECLINE if decline else M.RELEASE, ia(iaid, address), server=True)
        if self.granted.get(address, (None, None))[:2] == (client, iaid):
            del self.granted[address]

    @rule(seconds=st.floats(min_value=0, max_value=200))
    def wait(self, seconds: float) -> None:
        self.now += seconds
        self.core.on_timer(self.now)

    @rule()
    def restart(self) -> None:
        """Offers are lost; lease rows survive (the store)."""
        self.core = Dhcp6ServerCore(self.config, SERVER_DUID, list(self.core.leases.values()))

    @invariant()
    def the_core_holds_what_the_clients_were_told(self) -> None:
        for address, (client, iaid, expiry) in self.granted.items():
            if expiry > self.now:
                lease = self.core.leases[address]
                assert lease.is_active(self.now), lease
                assert (lease.duid, lease.iaid) == (duid(client), iaid), lease

    @invariant()
    def no_address_is_held_by_two_duids(self) -> None:
        holders: dict[IPv6Address, bytes] = {}
        for lease in self.core.leases.values():
            if lease.holds(self.now):
                assert holders.setdefault(lease.address, lease.duid) == lease.duid


TestNoAddressForTwoDuids = NoAddressForTwoDuids.TestCase
TestNoAddressForTwoDuids.settings = settings(max_examples=150, stateful_step_count=40,
                                             deadline=None)
