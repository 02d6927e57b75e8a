"""Property: whatever clients do, in any order and across restarts, no address is bound to two
clients at once (the ACKs, seen from outside, never overlap)."""

from __future__ import annotations

from ipaddress import IPv4Address

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from test_server_helpers import MT, SERVER, config, dgram, mac, opt_addr, request

from boothop.relay.wire import Opt, decode
from boothop.server.dhcp.actions import Send
from boothop.server.dhcp.core import DhcpServerCore

ZERO = IPv4Address(0)
CLIENTS = st.integers(min_value=0, max_value=7)
ADDRESSES = st.sampled_from(
    [IPv4Address(f"10.51.1.{n}") for n in (10, 11, 100, 101, 102, 103, 104, 150)]
)


class NoDoubleBinding(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.config = config(decline_time=50)
        self.core = DhcpServerCore(self.config)
        self.now = 0.0
        #: address -> (client, expiry) as the clients were told by ACKs.
        self.granted: dict[IPv4Address, tuple[int, float]] = {}

    def chaddr(self, client: int) -> bytes:
        return bytes.fromhex("52540000010a") if client == 7 else mac(client)

    def run(self, client: int, msg_type: int | None, **kw: object) -> None:
        msg = request(msg_type, self.chaddr(client), xid=client, **kw)  # type: ignore[arg-type]
        for action in self.core.handle(dgram(msg), self.now):
            if isinstance(action, Send):
                reply = decode(action.payload)
                if reply.message_type in (MT.ACK, None) and reply.yiaddr != ZERO:
                    holder = self.granted.get(reply.yiaddr)
                    assert holder is None or holder[0] == client or holder[1] <= self.now, (
                        f"{reply.yiaddr} given to {client} while client {holder[0]} holds it")
                    lease = int.from_bytes(reply.get(Opt.LEASE_TIME) or b"\xff\xff\xff\xff", "big")
                    expiry = float("inf") if lease == 0xFFFFFFFF else self.now + lease
                    for address, (owner, _) in list(self.granted.items()):
                        if owner == client and address != reply.yiaddr:
                            del self.granted[address]  # a client holds one address per subnet
                    self.granted[reply.yiaddr] = (client, expiry)

    @rule(client=CLIENTS)
    def discover(self, client: int) -> None:
        self.run(client, MT.DISCOVER)

    @rule(client=CLIENTS, address=ADDRESSES, ours=st.booleans())
    def select(self, client: int, address: IPv4Address, ours: bool) -> None:
        sid = SERVER if ours else IPv4Address("10.99.0.1")
        self.run(client, MT.REQUEST, options=(opt_addr(Opt.SERVER_ID, sid),
                                              opt_addr(Opt.REQUESTED_ADDRESS, address)))

    @rule(client=CLIENTS, address=ADDRESSES)
    def init_reboot(self, client: int, address: IPv4Address) -> None:
        self.run(client, MT.REQUEST, options=(opt_addr(Opt.REQUESTED_ADDRESS, address),))

    @rule(client=CLIENTS, address=ADDRESSES)
    def renew(self, client: int, address: IPv4Address) -> None:
        self.run(client, MT.REQUEST, ciaddr=address)

    @rule(client=CLIENTS, address=ADDRESSES)
    def release(self, client: int, address: IPv4Address) -> None:
        self.run(client, MT.RELEASE, ciaddr=address, giaddr=ZERO)
        if self.granted.get(address, (None,))[0] == client:
            del self.granted[address]

    @rule(client=CLIENTS, address=ADDRESSES)
    def decline(self, client: int, address: IPv4Address) -> None:
        self.run(client, MT.DECLINE, options=(opt_addr(Opt.REQUESTED_ADDRESS, address),))
        if self.granted.get(address, (None,))[0] == client:
            del self.granted[address]

    @rule(client=CLIENTS)
    def bootp(self, client: int) -> None:
        self.run(client, None)

    @rule(seconds=st.floats(min_value=0, max_value=400))
    def wait(self, seconds: float) -> None:
        self.now += seconds
        self.core.on_timer(self.now)

    @rule()
    def restart(self) -> None:
        """Offers are lost; lease rows survive (the store)."""
        self.core = DhcpServerCore(self.config, list(self.core.leases.values()))

    @invariant()
    def core_holds_one_client_per_address(self) -> None:
        for address, (client, expiry) in self.granted.items():
            if expiry > self.now:
                lease = self.core.leases[int(address)]
                assert lease.is_active(self.now) and lease.mac == self.chaddr(client), lease

    @invariant()
    def tables_are_keyed_by_their_rows(self) -> None:
        """The core keys its rows by the address as an integer: each key is its row's address,
        and each client's entry names a row of that client."""
        for number, lease in self.core.leases.items():
            assert number == int(lease.address), (number, lease)
        for (subnet, key), number in self.core.by_client.items():
            lease = self.core.leases[number]
            assert (lease.subnet, lease.client_key) == (subnet, key), lease


TestNoDoubleBinding = NoDoubleBinding.TestCase
TestNoDoubleBinding.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
