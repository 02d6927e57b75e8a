"""The DHCP/BOOTP server as a sans-IO state machine (RFC 2131 §4.3, RFC 951/1542 for BOOTP).

``handle(datagram, now)`` returns actions: ``Commit`` lease rows (the shell makes them durable
before sending anything that follows), ``Send`` replies, or one ``Drop`` with its reason. Offers
live in memory only; leases are the rows the shell loaded from the store. Timers:
``next_deadline()`` / ``on_timer(now)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv6Address
from typing import Any, ClassVar

from boothop.relay.wire import (
    DHCP_MIN_MAX_SIZE,
    ETHERNET_MAX_MESSAGE,
    SERVER_PORT,
    ZERO,
    AgentInfo,
    CapacityError,
    Datagram,
    DhcpMessage,
    MessageType,
    Op,
    Opt,
    WireError,
    address_of,
    decode_options,
    encode,
)
from boothop.relay.wire.pxe import HTTP_TWINS

from .actions import Action, Commit, CommitEvent, Drop, DropReason, ReplyKind, Send
from .addressing import reply_destination
from .config import DhcpConfig, Reservation, Subnet
from .deadlines import Deadlines
from .lease import Lease, LeaseState, client_key
from .leasebook import LeaseBook
from .reply import ReplyTemplate

#: Enum members and option codes the per-packet path reads, as module constants: on Python 3.11
#: every ``Opt.X`` or ``ReplyKind.X`` goes through the hook of ``EnumType.__getattr__`` (0.2 µs
#: a read, some thirty per DORA), a global read costs 15 ns.
_BOOTREQUEST = int(Op.BOOTREQUEST)
_MESSAGE_TYPE, _CLIENT_ID, _RELAY_AGENT_INFO, _SUBNET_SELECTION = (
    int(Opt.MESSAGE_TYPE), int(Opt.CLIENT_ID), int(Opt.RELAY_AGENT_INFO), int(Opt.SUBNET_SELECTION))
_SERVER_ID, _REQUESTED_ADDRESS, _MAX_MESSAGE_SIZE = (
    int(Opt.SERVER_ID), int(Opt.REQUESTED_ADDRESS), int(Opt.MAX_MESSAGE_SIZE))
_OFFER, _ACK, _NAK, _BOOTREPLY_KIND = (ReplyKind.OFFER, ReplyKind.ACK, ReplyKind.NAK,
                                      ReplyKind.BOOTREPLY)
_BOUND, _DECLINED = LeaseState.BOUND, LeaseState.DECLINED
#: States whose rows end at ``expires`` (a tuple: identity, no Enum.__hash__).
_TIMED_STATES = (LeaseState.BOUND, LeaseState.DECLINED)
_RENEWED, _BOUND_EVENT = CommitEvent.RENEWED, CommitEvent.BOUND
#: RFC 2132 §9.2: 0xffffffff is an infinite lease.
INFINITE = 0xFFFFFFFF
#: Options a BOOTREPLY may carry: the RFC 1497 vendor extensions (codes below the DHCP-only range).
_BOOTP_MAX_CODE = 49
#: Bound of the cache of addresses (giaddr, link selection) already matched to a subnet.
_SUBNET_CACHE = 4096
#: Bound of the cache of reply templates (per subnet, reply kind and server identifier).
_TEMPLATE_CACHE = 1024


@dataclass(slots=True)
class Request:
    """A decoded client message and the facts about it every handler needs, each worked out once.

    Not frozen: it lives for one call of ``handle``, and a frozen dataclass costs a
    ``object.__setattr__`` per field for every packet.
    """

    msg: DhcpMessage
    dgram: Datagram
    subnet: Subnet
    key: str
    client_id: bytes | None
    agent_raw: bytes | None
    server_id: IPv4Address
    #: The message's options by code (the decoder has concatenated repeated codes: RFC 3396).
    options: dict[int, bytes]
    #: chaddr cut to hlen.
    mac: bytes
    #: The relay agent's port for replies: 67, or the request's UDP source port (RFC 8357).
    relay_port: int
    #: giaddr is set: a relay agent's request.
    relayed: bool


@dataclass(frozen=True, slots=True)
class _Ranges:
    """A subnet as integers, for the per-packet address checks (IPv4Address compares are slow)."""

    #: The first and last assignable addresses (the network and broadcast addresses excluded).
    first: int
    last: int
    pools: tuple[tuple[int, int], ...]

    @classmethod
    def of(cls, subnet: Subnet) -> _Ranges:
        network = subnet.network
        return cls(int(network.network_address) + 1, int(network.broadcast_address) - 1,
                   tuple((int(pool.first), int(pool.last)) for pool in subnet.pools))


@dataclass(slots=True)
class _Offer:
    """Not frozen: one per DISCOVER, never changed (see actions.py)."""

    subnet: str
    key: str
    expires: float


class DhcpServerCore(LeaseBook[int, Lease, Action]):
    """The tables are keyed by the address as an integer (a row's ``Lease.address`` stays an
    IPv4Address): hashing an IPv4Address is a Python call (formatting it as hex text), and so is
    comparing two, where an int is hashed and compared in C. Some eight lookups per DORA."""

    def __init__(self, config: DhcpConfig, leases: Iterable[Lease] = (), *,
                 pxe_colocated: bool = False) -> None:
        self.pxe_colocated = pxe_colocated
        #: The lease rows by address (as an int).
        self.leases: dict[int, Lease] = {}
        #: (subnet, client key) -> the address of that client's latest lease row there.
        self.by_client: dict[tuple[str, str], int] = {}
        self.offers: dict[int, _Offer] = {}
        self.offer_by_client: dict[tuple[str, str], int] = {}
        self._timers: Deadlines[int] = Deadlines(self._due, self.leases, self.offers)
        #: (subnet, pool index) -> where the next pool scan starts.
        self._cursors: dict[tuple[str, int], int] = {}
        self._local_addresses: set[IPv4Address] = set()
        self._last_local: IPv4Address | None = None
        self._configure(config)
        for lease in leases:
            self._store(lease)

    def _configure(self, config: DhcpConfig) -> None:
        """What the core derives from its configuration (built again on reload)."""
        self.config = config
        self._cursors.clear()
        self._reserved: dict[int, Reservation] = {}
        self._reservation_by_ident: dict[tuple[str, str, bytes], Reservation] = {}
        self._static_options: dict[tuple[str, ReplyKind], tuple[tuple[int, bytes], ...]] = {}
        self._templates: dict[tuple[str, ReplyKind, int], tuple[IPv4Address, ReplyTemplate]] = {}
        self._ranges = {subnet.name: _Ranges.of(subnet) for subnet in config.subnets}
        #: Addresses seen (giaddr, link selection...) -> the subnet holding them: bounded cache,
        #: and the last one looked up.
        self._subnet_of: dict[IPv4Address, Subnet | None] = {}
        self._last_address: IPv4Address | None = None
        self._last_subnet: Subnet | None = None
        for subnet in config.subnets:
            net = str(subnet.network)
            for reservation in subnet.reservations:
                self._reserved[int(reservation.address)] = reservation
                if reservation.mac is not None:
                    self._reservation_by_ident[(net, "mac", reservation.mac)] = reservation
                if reservation.client_id is not None:
                    self._reservation_by_ident[(net, "id", reservation.client_id)] = reservation

    def reconfigure(self, config: DhcpConfig, upserts: Iterable[Lease],
                    deletes: Iterable[IPv4Address]) -> None:
        """Swap in a reloaded configuration, keeping the lease table but for the reconcile
        plan's changes (already written by the shell). An offer of an address that is reserved
        now is withdrawn; the others are checked again when the client requests them."""
        self._configure(config)
        self._apply_plan(upserts, deletes)

    def usage(self, now: float) -> dict[str, dict[str, int]]:
        """Per subnet: active leases (bound, unexpired), pool addresses taken (by a lease or a
        quarantine) and pool size."""
        usage = {subnet.name: {"leases": 0, "pool_used": 0,
                               "pool_size": sum(pool.size for pool in subnet.pools)}
                 for subnet in self.config.subnets}
        subnets = {subnet.name: subnet for subnet in self.config.subnets}
        for lease in self.leases.values():
            entry, subnet = usage.get(lease.subnet), subnets.get(lease.subnet)
            if entry is None or subnet is None or not lease.holds(now):
                continue
            entry["leases"] += lease.is_active(now)
            entry["pool_used"] += subnet.in_pool(lease.address)
        return usage

    # -- entry point -------------------------------------------------------------------------
    def handle(self, dgram: Datagram, now: float) -> list[Action]:
        """Any bytes in, actions out: a malformed datagram is a Drop, never an exception."""
        try:
            msg, options = decode_options(dgram.payload)
        except WireError as exc:
            return [Drop(DropReason.MALFORMED, str(exc))]
        if msg.op != _BOOTREQUEST:
            return [Drop(DropReason.NOT_A_REQUEST)]
        try:
            request = self._request(msg, options, dgram)
        except _Dropped as dropped:
            return [dropped.drop]
        raw_type = request.options.get(_MESSAGE_TYPE)
        if raw_type is None or len(raw_type) != 1:
            return self._bootp(request, now)
        handler = self._HANDLERS.get(raw_type[0])
        if handler is None:
            return [Drop(DropReason.UNEXPECTED_MESSAGE_TYPE, f"message type {msg.message_type}")]
        return handler(self, request, now)

    def _request(self, msg: DhcpMessage, options: dict[int, bytes], dgram: Datagram) -> Request:
        relayed = msg.giaddr is not ZERO  # decode gives ZERO itself for 0.0.0.0 (no __eq__ call)
        if self.config.interfaces and not relayed and dgram.ifname not in self.config.interfaces:
            raise _Dropped(DropReason.INTERFACE_NOT_SERVED, dgram.ifname)
        mac = msg.chaddr[:msg.hlen]  # the codec refuses hlen > 16
        client_id = options.get(_CLIENT_ID) or None
        if client_id is None and (msg.hlen == 0 or not any(mac)):
            raise _Dropped(DropReason.NO_CLIENT_IDENTITY)
        agent_raw = options.get(_RELAY_AGENT_INFO)
        link: IPv4Address | None = None
        override: IPv4Address | None = None
        relay_port = SERVER_PORT
        if agent_raw is not None and relayed:
            try:
                agent = AgentInfo.decode(agent_raw)
                link = agent.link_selection
                override = agent.server_id_override
                # RFC 8357 §5.2: a server receiving the "Relay Source Port" sub-option "MUST
                # use the UDP source port from the UDP packet of the received message as the
                # UDP destination port" of its reply to the relay agent.
                if agent.relay_source_port:
                    relay_port = dgram.source_port
            except WireError as exc:
                raise _Dropped(DropReason.BAD_RELAY_INFO, str(exc)) from None
        selection = options.get(_SUBNET_SELECTION)
        if relayed and link is None and selection is None and msg.giaddr is self._last_address:
            subnet = self._last_subnet  # _subnet_containing's memo, without its two calls
        else:
            subnet = self._select_subnet(msg, dgram, link, selection, relayed)
        if subnet is None:
            where: object = link or (
                (IPv4Address(selection) if len(selection) == 4 else selection.hex())
                if selection is not None else msg.giaddr)
            raise _Dropped(DropReason.NO_SUBNET,
                           f"no subnet for {where if relayed else dgram.ifname or dgram.local}")
        # RFC 5107 §4: the server "MUST use the value of the Server Identifier Override
        # sub-option in the Server Identifier option (54) of its replies".
        server_id = override or self.config.server_id or dgram.local
        if dgram.local is not self._last_local:  # the shell reuses one object per address
            self._local_addresses.add(dgram.local)
            self._last_local = dgram.local
        return Request(msg, dgram, subnet, client_key(client_id, msg.htype, mac), client_id,
                       agent_raw, server_id, options, mac, relay_port, relayed)

    def _select_subnet(self, msg: DhcpMessage, dgram: Datagram, link: IPv4Address | None,
                       selection: bytes | None, relayed: bool) -> Subnet | None:
        """RFC 3527 link selection, then RFC 3011 option 118, then giaddr; ciaddr or the
        receiving interface for a directly attached client."""
        if link is not None:
            return self._subnet_containing(link)
        if selection is not None:
            return self._subnet_containing(IPv4Address(selection)) if len(selection) == 4 else None
        if relayed:
            return self._subnet_containing(msg.giaddr)
        if msg.ciaddr != ZERO and dgram.source == msg.ciaddr:
            return self._subnet_containing(msg.ciaddr)
        for subnet in self.config.subnets:
            if subnet.interface is not None and subnet.interface == dgram.ifname:
                return subnet
        return self._subnet_containing(dgram.local)

    def _subnet_containing(self, address: IPv4Address) -> Subnet | None:
        if address is self._last_address:  # the codec's memo: a relay's giaddr is one object
            return self._last_subnet
        try:
            found = self._subnet_of[address]
        except KeyError:
            found = self._find_subnet(address)
        self._last_address, self._last_subnet = address, found
        return found

    def _find_subnet(self, address: IPv4Address) -> Subnet | None:
        found = None
        for subnet in self.config.subnets:
            if address in subnet.network:
                found = subnet
                break
        if len(self._subnet_of) >= _SUBNET_CACHE:
            self._subnet_of.clear()  # addresses come from the network: bound what they can fill
        self._subnet_of[address] = found
        return found

    # -- address bookkeeping -----------------------------------------------------------------
    def _key(self, address: IPv4Address | IPv6Address) -> int:
        return int(address)

    def _store(self, lease: Lease) -> Lease | None:
        """Put ``lease`` in the table: the row it replaces."""
        number = int(lease.address)
        return self._put(number, lease, self.leases.get(number))

    def _put(self, number: int, lease: Lease, old: Lease | None) -> Lease | None:
        """``_store`` where the caller has ``lease.address`` as ``number`` and has looked up
        ``old``, the row at the address already."""
        if (old is not None and old.client_key != lease.client_key
                and self.by_client.get((old.subnet, old.client_key)) == number):
            del self.by_client[(old.subnet, old.client_key)]
        self.leases[number] = lease
        if lease.client_key:
            self.by_client[(lease.subnet, lease.client_key)] = number
        if lease.expires is not None and lease.state in _TIMED_STATES:
            self._timers.add(lease.expires, number)
        return old

    def _unstore(self, address: int) -> None:
        lease = self.leases.pop(address, None)
        if lease is not None and self.by_client.get((lease.subnet, lease.client_key)) == address:
            del self.by_client[(lease.subnet, lease.client_key)]

    def _forget_offer(self, address: int) -> None:
        offer = self.offers.pop(address, None)
        if offer is not None and self.offer_by_client.get((offer.subnet, offer.key)) == address:
            del self.offer_by_client[(offer.subnet, offer.key)]

    def _commit(self, lease: Lease, event: CommitEvent, previous: Lease | None) -> Action:
        return Commit(lease, event, previous)

    def reservation_for(self, request: Request) -> Reservation | None:
        if not self._reservation_by_ident:
            return None
        net = request.subnet.name
        found = None
        if request.client_id is not None:
            found = self._reservation_by_ident.get((net, "id", request.client_id))
        if found is None:
            found = self._reservation_by_ident.get((net, "mac", request.mac))
        return found

    def available(self, number: int, request: Request, now: float) -> bool:
        """Whether the address ``number`` may be bound to this client now: never one address to
        two clients."""
        ranges = self._ranges[request.subnet.name]
        # Inside the subnet, and neither its network nor its broadcast address.
        if not ranges.first <= number <= ranges.last:
            return False
        lease = self.leases.get(number)
        if lease is not None and lease.holds(now) and (
                lease.state is _DECLINED or lease.client_key != request.key):
            return False
        offer = self.offers.get(number)
        if offer is not None and offer.expires > now and offer.key != request.key:
            return False
        reservation = self._reserved.get(number) if self._reserved else None
        if reservation is not None:
            return reservation is self.reservation_for(request)
        for first, last in ranges.pools:  # noqa: SIM110 - any() builds a generator per call
            if first <= number <= last:
                return True
        return False

    def _fresh(self, number: int, now: float) -> bool:
        """Free and never used: preferred, so a released address stays its last client's."""
        if number in self.leases or (self._reserved and number in self._reserved):
            return False
        offer = self.offers.get(number)
        return offer is None or offer.expires <= now

    def _scan(self, request: Request, now: float) -> int | None:
        net = request.subnet.name
        pools = self._ranges[net].pools
        for fresh_only in (True, False):
            for pool_index, (first, last) in enumerate(pools):
                start = self._cursors.get((net, pool_index), 0)
                size = last - first + 1
                for step in range(size):
                    offset = (start + step) % size
                    number = first + offset
                    if (self._fresh(number, now) if fresh_only
                            else self.available(number, request, now)):
                        self._cursors[(net, pool_index)] = (offset + 1) % size
                        return number
        return None

    def _choose(self, request: Request, now: float) -> int | Drop:
        """RFC 2131 §4.3.1: the client's binding, else its previous address, else the requested
        address if valid, else a new address from the pool."""
        reservation = self.reservation_for(request)
        if reservation is not None:
            reserved = int(reservation.address)
            if self.available(reserved, request, now):
                return reserved
            return Drop(DropReason.RESERVED_ADDRESS_HELD, str(reservation.address))
        net = request.subnet.name
        for number in (self.offer_by_client.get((net, request.key)),
                       self.by_client.get((net, request.key))):
            if number is not None and self.available(number, request, now):
                return number
        requested = request.options.get(_REQUESTED_ADDRESS)
        if requested is not None and len(requested) == 4:
            number = int.from_bytes(requested, "big")
            if self.available(number, request, now):
                return number
        found = self._scan(request, now)
        if found is None:
            return Drop(DropReason.POOL_EXHAUSTED, net)
        return found

    def _bind(self, request: Request, number: int, address: IPv4Address, now: float,
              infinite: bool = False) -> list[Action]:
        """Bind ``address`` (``number``, as an int) to the client; its other lease on this subnet,
        if any, is superseded."""
        net = request.subnet.name
        actions: list[Action] = []
        previous = self.by_client.get((net, request.key))
        if previous is not None and previous != number:
            old = self.leases[previous]
            if old.client_key == request.key and old.state is LeaseState.BOUND:
                released = _with(old, state=LeaseState.RELEASED, expires=now)
                actions.append(Commit(released, CommitEvent.SUPERSEDED, self._store(released)))
        current = self.leases.get(number)
        renewing = (current is not None and current.client_key == request.key
                    and current.is_active(now))
        reservation = self._reserved.get(number) if self._reserved else None
        hostname = reservation.hostname if reservation is not None else None
        lease = Lease(address, _BOUND, request.key, request.mac, request.client_id, net, now,
                      None if infinite else now + request.subnet.lease_time, hostname)
        replaced = self._put(number, lease, current)
        self._forget_offer(number)
        actions.append(Commit(lease, _RENEWED if renewing else _BOUND_EVENT,
                              replaced))
        return actions

    # -- message handlers --------------------------------------------------------------------
    def _discover(self, request: Request, now: float) -> list[Action]:
        choice = self._choose(request, now)
        if isinstance(choice, Drop):
            return [choice]
        net = request.subnet.name
        stale = self.offer_by_client.get((net, request.key))
        if stale is not None and stale != choice:
            self._forget_offer(stale)
        expires = now + self.config.offer_hold
        self.offers[choice] = _Offer(net, request.key, expires)
        self.offer_by_client[(net, request.key)] = choice
        self._timers.add(expires, choice)
        return [self._reply(request, _OFFER, choice)]

    def _request_message(self, request: Request, now: float) -> list[Action]:
        msg = request.msg
        server_id = request.options.get(_SERVER_ID)
        requested_raw = request.options.get(_REQUESTED_ADDRESS)
        requested = (
            int.from_bytes(requested_raw, "big") if requested_raw and len(requested_raw) == 4
            else None
        )
        net = request.subnet.name
        if server_id is not None:
            # SELECTING. RFC 2131 §4.3.2: the server identifier says which server the client chose;
            # "Servers not chosen by the DHCPREQUEST message use the message as notification that
            # the client has declined that server's offer."
            if len(server_id) != 4 or not self._is_ours(address_of(server_id), request):
                offered = self.offer_by_client.get((net, request.key))
                if offered is not None:
                    self._forget_offer(offered)
                return [Drop(DropReason.OTHER_SERVER_SELECTED)]
            if requested is None:
                return [Drop(DropReason.NO_REQUESTED_ADDRESS)]
            if (not self.available(requested, request, now)
                    or not self._may_have(requested, request)):
                return [self._nak(request, "requested address not available")]
            return self._acked(request, requested, now)
        if requested is not None:
            # INIT-REBOOT. RFC 2131 §4.3.2: "Server SHOULD send a DHCPNAK message to the client if
            # the 'requested IP address' is incorrect, or is on the wrong network."
            if IPv4Address(requested) not in request.subnet.network:
                return [self._nak(request, "requested address is on the wrong network")]
            # RFC 2131 §4.3.2: "If the DHCP server has no record of this client, then it MUST
            # remain silent".
            reservation = self.reservation_for(request)
            recorded = self.by_client.get((net, request.key))
            if reservation is None and recorded is None:
                return [Drop(DropReason.NO_RECORD, str(IPv4Address(requested)))]
            expected = int(reservation.address) if reservation is not None else recorded
            if requested != expected or not self.available(requested, request, now):
                return [self._nak(request, "requested address is not this client's")]
            return self._acked(request, requested, now)
        if msg.ciaddr != ZERO:
            # RENEWING (unicast) or REBINDING (broadcast). RFC 2131 §4.3.2: "the DHCP server
            # SHOULD check 'ciaddr' for correctness before replying".
            number = int(msg.ciaddr)
            if not self.available(number, request, now) or not self._may_have(number, request):
                return [self._nak(request, "address is not this client's")]
            return self._acked(request, number, now, msg.ciaddr)
        return [Drop(DropReason.NO_REQUESTED_ADDRESS)]

    def _acked(self, request: Request, number: int, now: float,
               address: IPv4Address | None = None) -> list[Action]:
        """Bind the address ``number`` (``address``, when the caller has it) and ACK it."""
        if address is None:
            address = IPv4Address(number)
        actions = self._bind(request, number, address, now)
        actions.append(self._reply(request, _ACK, number))
        return actions

    def _may_have(self, number: int, request: Request) -> bool:
        """A client with a reservation on this subnet gets that address and no other."""
        reservation = self.reservation_for(request)
        return reservation is None or int(reservation.address) == number

    def _is_ours(self, server_id: IPv4Address, request: Request) -> bool:
        # ``is`` first: both come from the codec's memo, where ``==`` is a Python call.
        return (server_id is request.server_id or server_id == request.server_id
                or server_id == self.config.server_id
                or server_id in self._local_addresses)

    def _decline(self, request: Request, now: float) -> list[Action]:
        requested_raw = request.options.get(Opt.REQUESTED_ADDRESS)
        if requested_raw is None or len(requested_raw) != 4:
            return [Drop(DropReason.NO_REQUESTED_ADDRESS)]
        number = int.from_bytes(requested_raw, "big")
        address = IPv4Address(number)
        lease = self.leases.get(number)
        offer = self.offers.get(number)
        held = (lease is not None and lease.client_key == request.key and lease.is_active(now)) or (
            offer is not None and offer.key == request.key)
        if not held:
            return [Drop(DropReason.DECLINE_NOT_HELD, str(address))]
        # RFC 2131 §4.3.3: "the server MUST mark the network address as not available".
        declined = Lease(address, LeaseState.DECLINED, request.key, request.mac,
                         request.client_id, request.subnet.name, now,
                         now + self.config.decline_time)
        self._forget_offer(number)
        return [Commit(declined, CommitEvent.DECLINED, self._store(declined))]

    def _release(self, request: Request, now: float) -> list[Action]:
        lease = self.leases.get(int(request.msg.ciaddr))
        if lease is None or lease.client_key != request.key or not lease.is_active(now):
            return [Drop(DropReason.RELEASE_NOT_HELD, str(request.msg.ciaddr))]
        # RFC 2131 §4.3.4: the server marks the address not allocated and "SHOULD retain a
        # record of the client's initialization parameters for possible reuse".
        released = _with(lease, state=LeaseState.RELEASED, expires=now)
        return [Commit(released, CommitEvent.RELEASED, self._store(released))]

    def _inform(self, request: Request, now: float) -> list[Action]:
        msg = request.msg
        if msg.ciaddr == ZERO and request.dgram.source == ZERO:
            return [Drop(DropReason.INFORM_NO_ADDRESS)]
        if msg.ciaddr == ZERO:
            request = replace(request, msg=msg.replace(ciaddr=request.dgram.source))
        return [self._reply(request, ReplyKind.INFORM_ACK, 0)]

    def _bootp(self, request: Request, now: float) -> list[Action]:
        """RFC 951 BOOTREQUEST: the reserved address, or a pool address if dynamic BOOTP is on."""
        reservation = self.reservation_for(request)
        if reservation is not None:
            number = int(reservation.address)
            if not self.available(number, request, now):
                return [Drop(DropReason.RESERVED_ADDRESS_HELD, str(reservation.address))]
        elif request.subnet.dynamic_bootp:
            choice = self._choose(request, now)
            if isinstance(choice, Drop):
                return [choice]
            number = choice
        else:
            return [Drop(DropReason.BOOTP_NO_RESERVATION, request.msg.mac)]
        address = IPv4Address(number)
        # RFC 1534 §2: a BOOTP client has no lease to renew, so its binding is infinite.
        return [
            *self._bind(request, number, address, now, infinite=True),
            self._reply(request, ReplyKind.BOOTREPLY, number),
        ]

    #: By message type (option 53's byte; MessageType is an IntEnum, so either is a key).
    _HANDLERS: ClassVar[dict[int, Callable[[DhcpServerCore, Request, float], list[Action]]]] = {
        MessageType.DISCOVER: _discover,
        MessageType.REQUEST: _request_message,
        MessageType.DECLINE: _decline,
        MessageType.RELEASE: _release,
        MessageType.INFORM: _inform,
    }

    # -- replies -----------------------------------------------------------------------------
    def _nak(self, request: Request, why: str) -> Send | Drop:
        return self._reply(request, ReplyKind.NAK, 0, message=why)

    def _reply(self, request: Request, kind: ReplyKind, yiaddr: int,
               message: str = "") -> Send | Drop:
        """The reply of ``kind`` offering or binding the address ``yiaddr`` (an int, 0 for
        none: an IPv4Address is made only where one is sent to)."""
        msg, subnet = request.msg, request.subnet
        nak = kind is _NAK
        address, port, flags, to_chaddr = reply_destination(msg, yiaddr, nak, request.relay_port)
        # Keyed by the server identifier's identity (hashing an address is a Python call); the
        # entry holds the object, so its id is not reused while the entry lives.
        key = (subnet.name, kind, id(request.server_id))
        entry = self._templates.get(key)
        if entry is None:
            if len(self._templates) >= _TEMPLATE_CACHE:
                self._templates.clear()  # server identifiers can come from option 82 (RFC 5107)
            entry = self._templates[key] = (request.server_id, ReplyTemplate.of(
                self._leading_options(subnet, kind, request.server_id),
                *self._boot_fields(subnet, nak)))
        template = entry[1]
        # RFC 2131 table 3: ciaddr is the request's for an ACK (RENEWING, REBINDING, INFORM),
        # else 0.
        ciaddr = msg.ciaddr if kind in _CIADDR_ECHOED else ZERO
        http_options, http_file = (self._http_boot(request, kind) if subnet.http_boot
                                   else _NO_HTTP_BOOT)
        options = self._client_options(request, kind, yiaddr, message, http_options)
        capacity = (DHCP_MIN_MAX_SIZE if _MAX_MESSAGE_SIZE not in request.options
                    else self._capacity(request.options))
        payload = None if http_file is not None else template.fill(
            msg, flags, ciaddr, yiaddr, options, capacity)
        if payload is None:  # a boot URL in the file field, or file and/or sname overloaded
            siaddr, file = self._boot_fields(subnet, nak)
            file = file if http_file is None else http_file
            reply = DhcpMessage(
                op=Op.BOOTREPLY, xid=msg.xid, chaddr=msg.chaddr, htype=msg.htype, hlen=msg.hlen,
                flags=flags, ciaddr=ciaddr, yiaddr=IPv4Address(yiaddr), siaddr=siaddr,
                giaddr=msg.giaddr, file=file,
                options=(*self._leading_options(subnet, kind, request.server_id), *options))
            try:
                payload = encode(reply, capacity)
            except CapacityError as exc:
                return Drop(DropReason.REPLY_TOO_LARGE, str(exc))
        # Replies to a client leave by the interface its request came in on; relayed ones (to
        # giaddr, at 67 or the RFC 8357 relay port) are routed.
        return Send(kind, payload, address, port, request.dgram.local,
                    0 if request.relayed else request.dgram.ifindex, to_chaddr)

    def _leading_options(self, subnet: Subnet, kind: ReplyKind,
                         server_id: IPv4Address) -> tuple[tuple[int, bytes], ...]:
        """53 and 54 (not in a BOOTREPLY), then the static options of ``kind`` on ``subnet``."""
        static = self._static_options.get((subnet.name, kind))
        if static is None:
            static = self._static_options[(subnet.name, kind)] = _static_options(subnet, kind)
        if kind is ReplyKind.BOOTREPLY:
            return static
        return (_MESSAGE_TYPE_OPTION[kind], (Opt.SERVER_ID, server_id.packed), *static)

    @staticmethod
    def _boot_fields(subnet: Subnet, nak: bool) -> tuple[IPv4Address, bytes]:
        """siaddr and file: the subnet's next server and boot file, none in a NAK."""
        if nak:
            return ZERO, b""
        return (subnet.next_server if subnet.next_server is not None else ZERO,
                subnet.boot_file.encode() if subnet.boot_file else b"")

    def _http_boot(self, request: Request, kind: ReplyKind
                   ) -> tuple[tuple[tuple[int, bytes], ...], bytes | None]:
        """UEFI HTTP boot: an offer counts as a boot offer only with "HTTPClient" echoed in
        option 60 and the URI as the boot file name: the options, and the URI for the file field
        (None: it goes in option 67, where the field's 128 octets would cut it, or no boot)."""
        if not request.subnet.http_boot:
            return (), None
        vendor = request.options.get(Opt.VENDOR_CLASS_ID) or b""
        if kind in (ReplyKind.BOOTREPLY, ReplyKind.NAK) or not vendor.startswith(HTTP_CLIENT):
            return (), None
        boot_url = http_boot_url(request.subnet, request.options.get(Opt.CLIENT_ARCH))
        if boot_url is None:
            return (), None
        url = boot_url.encode()
        if len(url) > 127:
            return ((Opt.VENDOR_CLASS_ID, HTTP_CLIENT), (Opt.BOOTFILE_NAME, url)), None
        return ((Opt.VENDOR_CLASS_ID, HTTP_CLIENT),), url

    def _client_options(self, request: Request, kind: ReplyKind, yiaddr: int,
                        message: str, http_options: tuple[tuple[int, bytes], ...] = ()
                        ) -> list[tuple[int, bytes]]:
        """The options of this client's reply after the leading ones."""
        bootp = kind is _BOOTREPLY_KIND
        options: list[tuple[int, bytes]] = []
        if kind is _NAK:
            options.append((Opt.MESSAGE, message.encode()))
        else:
            reservation = self._reserved.get(yiaddr) if self._reserved else None
            if reservation is not None and reservation.hostname and not any(
                    c == Opt.HOST_NAME for c, _ in request.subnet.options):
                options.append((Opt.HOST_NAME, reservation.hostname.encode()))
            if self.pxe_colocated and not bootp and (
                    request.options.get(Opt.VENDOR_CLASS_ID) or b"").startswith(b"PXEClient"):
                options.append((Opt.VENDOR_CLASS_ID, b"PXEClient"))
            if http_options:
                options.extend(http_options)
        if request.client_id is not None and not bootp:
            # RFC 6842 §3: "the server MUST include the Client Identifier option in replies"
            # when the client sent one.
            options.append((Opt.CLIENT_ID, request.client_id))
        if request.agent_raw is not None:
            # RFC 3046 §2.2: "DHCP servers claiming to support the Relay Agent Information
            # option SHALL echo the entire contents of the Relay Agent Information option in
            # all replies."
            options.append((Opt.RELAY_AGENT_INFO, request.agent_raw))
        return options

    @staticmethod
    def _capacity(options: dict[int, bytes]) -> int:
        """RFC 2132 §9.10: the client's maximum DHCP message size, never below 576."""
        raw = options.get(Opt.MAX_MESSAGE_SIZE)
        if raw is None or len(raw) != 2:
            return DHCP_MIN_MAX_SIZE
        return max(DHCP_MIN_MAX_SIZE, min(int.from_bytes(raw, "big"), ETHERNET_MAX_MESSAGE))


#: ``_http_boot``'s answer where the subnet has no HTTP boot URL.
_NO_HTTP_BOOT: tuple[tuple[tuple[int, bytes], ...], bytes | None] = ((), None)
_MESSAGE_TYPE_OPTION = {
    ReplyKind.OFFER: (Opt.MESSAGE_TYPE, bytes((MessageType.OFFER,))),
    ReplyKind.ACK: (Opt.MESSAGE_TYPE, bytes((MessageType.ACK,))),
    ReplyKind.INFORM_ACK: (Opt.MESSAGE_TYPE, bytes((MessageType.ACK,))),
    ReplyKind.NAK: (Opt.MESSAGE_TYPE, bytes((MessageType.NAK,))),
}
#: A tuple, not a set: membership is by identity, where a set would hash (Enum.__hash__ is Python).
_CIADDR_ECHOED = (ReplyKind.ACK, ReplyKind.INFORM_ACK, ReplyKind.BOOTREPLY)


def _static_options(subnet: Subnet, kind: ReplyKind) -> tuple[tuple[int, bytes], ...]:
    """The options every reply of ``kind`` on ``subnet`` carries after 53 and 54: built once."""
    if kind is ReplyKind.NAK:
        return ()
    options: list[tuple[int, bytes]] = []
    if kind in (ReplyKind.OFFER, ReplyKind.ACK):
        # RFC 2131 §4.3.5: the DHCPACK to a DHCPINFORM carries no lease time (options 51, 58,
        # 59 are added only here, for OFFER and ACK).
        options.append((Opt.LEASE_TIME, subnet.lease_time.to_bytes(4, "big")))
        options.append((Opt.RENEWAL_TIME, subnet.t1.to_bytes(4, "big")))
        options.append((Opt.REBINDING_TIME, subnet.t2.to_bytes(4, "big")))
    bootp = kind is ReplyKind.BOOTREPLY
    options.extend((code, value) for code, value in subnet.options
                   if not bootp or code <= _BOOTP_MAX_CODE)
    return tuple(options)


class _Dropped(Exception):
    def __init__(self, reason: DropReason, detail: str = "") -> None:
        self.drop = Drop(reason, detail)


def _with(lease: Lease, **changes: Any) -> Lease:
    return replace(lease, **changes)


#: UEFI HTTP boot clients send option 60 "HTTPClient:Arch:..." and expect "HTTPClient" back.
HTTP_CLIENT = b"HTTPClient"


def http_boot_url(subnet: Subnet, arch_option: bytes | None) -> str | None:
    """The subnet's HTTP boot URL for the client's architectures (option 93, RFC 4578 §2.1: a
    list of 16-bit types), each tried as itself and then as its PXE twin; None without one."""
    if not arch_option or len(arch_option) % 2:
        return None
    arches = [int.from_bytes(arch_option[i:i + 2], "big") for i in range(0, len(arch_option), 2)]
    urls = dict(subnet.http_boot)
    for arch in [*arches, *(HTTP_TWINS[a] for a in arches if a in HTTP_TWINS)]:
        if arch in urls:
            return urls[arch]
    return None
