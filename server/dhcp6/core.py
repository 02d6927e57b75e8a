"""The DHCPv6 server's decisions (RFC 8415 §18.3), sans-IO: a datagram and ``now`` in, actions out.

Stateful addresses (IA_NA) from pools chosen by the link: the link-address of the relay closest
to the client (§13.1), or the receiving interface of a direct client. Reservations by DUID and by
client link-layer address (RFC 6939 option 79 from the first relay, else the DUID-LL/LLT's).
Rapid Commit (§18.3.1). Bootfile-URL and Bootfile-Parameters (RFC 5970) by Client Architecture
and Vendor Class. Leases live in memory; every binding change is a Commit6 the shell writes
durably before the Reply that follows it leaves. Addresses are held by one DUID at a time: a
lease row, an advertised offer or a reservation, checked before any address is given.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv6Address

from boothop.relay.wire import Datagram6, WireError
from boothop.relay.wire.dhcpv6 import (
    ClientLinkLayer,
    Dhcp6Message,
    IaAddress,
    IaNa,
    MessageType6,
    Opt6,
    RelayMessage,
    Status6,
    StatusCode,
    VendorClass,
    decode6,
    decode_codes,
    decode_data_list,
    duid_link_layer,
    encode6,
    encode_data_list,
)
from boothop.relay.wire.pxe import HTTP_TWINS
from boothop.server.dhcp.actions import CommitEvent
from boothop.server.dhcp.deadlines import Deadlines
from boothop.server.dhcp.lease import LeaseState
from boothop.server.dhcp.leasebook import LeaseBook
from boothop.server.pxe.bootfile import IPXE_USER_CLASS

from .actions import Action6, Commit6, Drop6, Drop6Reason, Send6
from .config import Dhcp6Config, Reservation6, Subnet6
from .lease import Lease6

CLIENT_PORT = 546
SERVER_PORT = 547
M = MessageType6
#: RFC 8415 §16: the messages a server takes from clients.
CLIENT_TYPES = frozenset((M.SOLICIT, M.REQUEST, M.CONFIRM, M.RENEW, M.REBIND, M.RELEASE,
                          M.DECLINE, M.INFORMATION_REQUEST))
#: §16.2, §16.5, §16.7: "Servers MUST discard any Solicit/Confirm/Rebind messages that include
#: a Server Identifier option".
NO_SERVER_ID = frozenset((M.SOLICIT, M.CONFIRM, M.REBIND))
#: §16.4, §16.6, §16.8, §16.9: Request, Renew, Release and Decline "MUST include a Server
#: Identifier option" naming this server, else they are discarded.
OUR_SERVER_ID = frozenset((M.REQUEST, M.RENEW, M.RELEASE, M.DECLINE))
#: The client messages a server answers only received by multicast (§18.3.2 and the like):
#: without a Server Unicast option given out, a unicast one gets UseMulticast.
MULTICAST_ONLY = OUR_SERVER_ID
#: A UEFI HTTP boot client's Vendor Class (16) data begin with it (the enterprise number does
#: not matter), as its DHCPv4 option 60 does.
HTTP_CLIENT = b"HTTPClient"


@dataclass(frozen=True, slots=True)
class _Offer:
    duid: bytes
    iaid: int
    expires: float


@dataclass(slots=True)
class _Request:
    """One client message with what the core worked out about it."""

    dgram: Datagram6
    msg: Dhcp6Message
    #: The Relay-forward layers, outermost first (empty for a direct client).
    relays: list[RelayMessage]
    duid: bytes
    subnet: Subnet6 | None
    mac: bytes | None


class Dhcp6ServerCore(LeaseBook[IPv6Address, Lease6, Action6]):
    """``interfaces``: ingress interface index -> the subnet its direct clients belong to (the
    shell resolves ``subnet.interface`` names)."""

    def __init__(self, config: Dhcp6Config, server_duid: bytes, leases: Iterable[Lease6] = (), *,
                 interfaces: Mapping[int, str] | None = None) -> None:
        self.server_duid = server_duid
        self.leases: dict[IPv6Address, Lease6] = {}
        #: (subnet, DUID, IAID) -> the address of that IA's latest lease row there.
        self.by_client: dict[tuple[str, bytes, int], IPv6Address] = {}
        self.offers: dict[IPv6Address, _Offer] = {}
        self._timers = Deadlines(self._due, self.leases, self.offers)
        self._cursors: dict[str, int] = {}
        self._configure(config, interfaces or {})
        for lease in leases:
            self._store(lease)

    def _configure(self, config: Dhcp6Config, interfaces: Mapping[int, str]) -> None:
        self.config = config
        by_name = {subnet.name: subnet for subnet in config.subnets}
        self._by_interface = {index: by_name[name] for index, name in interfaces.items()
                              if name in by_name}
        self._reserved: dict[IPv6Address, Reservation6] = {}
        self._by_duid: dict[tuple[str, bytes], Reservation6] = {}
        self._by_mac: dict[tuple[str, bytes], Reservation6] = {}
        for subnet in config.subnets:
            for reservation in subnet.reservations:
                self._reserved[reservation.address] = reservation
                if reservation.duid is not None:
                    self._by_duid[(subnet.name, reservation.duid)] = reservation
                if reservation.mac is not None:
                    self._by_mac[(subnet.name, reservation.mac)] = reservation

    def reconfigure(self, config: Dhcp6Config, interfaces: Mapping[int, str],
                    upserts: Iterable[Lease6], deletes: Iterable[IPv6Address]) -> None:
        """Swap in a reloaded configuration and the reconcile plan's changes (written already)."""
        self._configure(config, interfaces)
        self._apply_plan(upserts, deletes)

    # -- the lease table ---------------------------------------------------------------------
    def _store(self, lease: Lease6) -> Lease6 | None:
        previous = self.leases.get(lease.address)
        if previous is not None:
            key = (previous.subnet, previous.duid, previous.iaid)
            if key != (lease.subnet, lease.duid, lease.iaid) and (
                    self.by_client.get(key) == lease.address):
                del self.by_client[key]  # the address passes to another IA
        self.leases[lease.address] = lease
        self.by_client[(lease.subnet, lease.duid, lease.iaid)] = lease.address
        if lease.expires is not None:
            self._timers.add(lease.expires, lease.address)
        return previous

    def _key(self, address: IPv4Address | IPv6Address) -> IPv6Address:
        assert isinstance(address, IPv6Address)
        return address

    def _unstore(self, address: IPv6Address) -> None:
        lease = self.leases.pop(address, None)
        if lease is not None and self.by_client.get((lease.subnet, lease.duid,
                                                     lease.iaid)) == address:
            del self.by_client[(lease.subnet, lease.duid, lease.iaid)]

    def _forget_offer(self, address: IPv6Address) -> None:
        self.offers.pop(address, None)

    def _commit(self, lease: Lease6, event: CommitEvent, previous: Lease6 | None) -> Action6:
        return Commit6(lease, event, previous)

    def usage(self, now: float) -> dict[str, dict[str, int]]:
        """Per subnet: active leases and pool size."""
        usage = {s.name: {"leases": 0, "pool_size": sum(p.size for p in s.pools)}
                 for s in self.config.subnets}
        for lease in self.leases.values():
            if lease.subnet in usage and lease.is_active(now):
                usage[lease.subnet]["leases"] += 1
        return usage

    # -- entry point -------------------------------------------------------------------------
    def handle(self, dgram: Datagram6, now: float) -> list[Action6]:
        """Any bytes in, actions out: a malformed datagram is a Drop6, never an exception."""
        try:
            request = self._parse(dgram)
        except WireError as exc:
            return [Drop6(Drop6Reason.MALFORMED, str(exc))]
        if isinstance(request, Drop6):
            return [request]
        msg = request.msg
        if request.subnet is None and msg.msg_type != M.INFORMATION_REQUEST:
            where = (f"link-address {request.relays[-1].link_address}" if request.relays
                     else f"interface {dgram.ifindex}")
            return [Drop6(Drop6Reason.NO_SUBNET, where)]
        if (not request.relays and not dgram.destination.is_multicast
                and msg.msg_type in MULTICAST_ONLY):
            # RFC 8415 §18.3.2 (and .4, .7, .8): a unicast Request from a client that was given
            # no Server Unicast option is answered with a Reply carrying UseMulticast.
            return self._answer(request, M.REPLY, [_status(Status6.USE_MULTICAST,
                                                           "send to ff02::1:2")])
        try:
            return _HANDLERS[M(msg.msg_type)](self, request, now)
        except WireError as exc:
            return [Drop6(Drop6Reason.MALFORMED, str(exc))]

    def _parse(self, dgram: Datagram6) -> _Request | Drop6:
        message = decode6(dgram.payload)
        relays: list[RelayMessage] = []
        while isinstance(message, RelayMessage):
            if message.msg_type != M.RELAY_FORW or len(relays) > 8:
                return Drop6(Drop6Reason.UNEXPECTED_MESSAGE_TYPE, f"type {message.msg_type}")
            relays.append(message)
            message = message.inner()
        if message.msg_type not in CLIENT_TYPES:
            return Drop6(Drop6Reason.UNEXPECTED_MESSAGE_TYPE, f"type {message.msg_type}")
        duid = message.get(Opt6.CLIENTID)
        if not duid and message.msg_type != M.INFORMATION_REQUEST:
            return Drop6(Drop6Reason.NO_CLIENT_ID, f"type {message.msg_type}")
        server_id = message.get(Opt6.SERVERID)
        if server_id is not None and message.msg_type in NO_SERVER_ID:
            return Drop6(Drop6Reason.SERVER_ID_NOT_ALLOWED, f"type {message.msg_type}")
        if server_id is None and message.msg_type in OUR_SERVER_ID:
            return Drop6(Drop6Reason.NO_SERVER_ID, f"type {message.msg_type}")
        if server_id is not None and server_id != self.server_duid:
            return Drop6(Drop6Reason.OTHER_SERVER_SELECTED, server_id.hex())
        return _Request(dgram, message, relays, duid or b"", self._subnet(dgram, relays),
                        _link_layer(relays, duid or b""))

    def _subnet(self, dgram: Datagram6, relays: list[RelayMessage]) -> Subnet6 | None:
        """RFC 8415 §13.1: the link of "the relay agent closest to the client" (its
        link-address), else the interface a direct client's message arrived on."""
        if relays:
            link = relays[-1].link_address
            return next((s for s in self.config.subnets if link in s.prefix), None)
        return self._by_interface.get(dgram.ifindex)

    # -- addresses ---------------------------------------------------------------------------
    def _free_for(self, address: IPv6Address, request: _Request, iaid: int,
                  now: float) -> bool:
        """Whether ``address`` may be given to the request's (DUID, IAID): nobody else holds
        it, was offered it, or has it reserved."""
        owner = (request.duid, iaid)
        lease = self.leases.get(address)
        if lease is not None and lease.holds(now) and (lease.duid, lease.iaid) != owner:
            return False
        offer = self.offers.get(address)
        if offer is not None and offer.expires > now and (offer.duid, offer.iaid) != owner:
            return False
        reservation = self._reserved.get(address)
        return reservation is None or reservation is self._reservation_of(request)

    def _reservation_of(self, request: _Request) -> Reservation6 | None:
        """The client's reservation on its link: by DUID, else by link-layer address."""
        subnet = request.subnet
        if subnet is None:
            return None
        found = self._by_duid.get((subnet.name, request.duid))
        if found is None and request.mac is not None:
            found = self._by_mac.get((subnet.name, request.mac))
        return found

    def _choose(self, request: _Request, ia: IaNa, now: float) -> IPv6Address | None:
        """The address for one IA_NA: its binding, its reservation, the client's hint, a free
        pool address; None when the pool is exhausted."""
        subnet, duid = request.subnet, request.duid
        assert subnet is not None
        reservation = self._reservation_of(request)
        if reservation is not None and self._free_for(reservation.address, request, ia.iaid, now):
            return reservation.address
        # Else the reserved address is another IA's of this client (one address, one IA), or
        # still held by a client from before the reservation: a pool address meanwhile.
        bound = self.by_client.get((subnet.name, duid, ia.iaid))
        candidates = [bound] if bound is not None else []
        candidates += [IaAddress.decode(v).address for v in ia.get_all(Opt6.IAADDR)]
        for address in candidates:
            if subnet.in_pool(address) and self._free_for(address, request, ia.iaid, now):
                return address
        return self._next_free(subnet, request, ia.iaid, now)

    def _next_free(self, subnet: Subnet6, request: _Request, iaid: int,
                   now: float) -> IPv6Address | None:
        """A pool scan from a cursor, so that freed addresses are not handed out again at once."""
        ordered = [(int(p.first), int(p.last)) for p in subnet.pools]
        total = sum(last - first + 1 for first, last in ordered)
        cursor = self._cursors.get(subnet.name, 0)
        for step in range(min(total, 65536)):
            offset = (cursor + step) % total
            for first, last in ordered:
                if offset <= last - first:
                    address = IPv6Address(first + offset)
                    break
                offset -= last - first + 1
            if self._free_for(address, request, iaid, now):
                self._cursors[subnet.name] = (cursor + step + 1) % total
                return address
        return None

    def _bind(self, request: _Request, iaid: int, address: IPv6Address, now: float,
              event: CommitEvent) -> list[Commit6]:
        subnet = request.subnet
        assert subnet is not None
        self.offers.pop(address, None)
        commits = []
        old = self.by_client.get((subnet.name, request.duid, iaid))
        if old is not None and old != address and self.leases[old].holds(now):
            # The IA moves to another address (its reservation, say): the old one is free again.
            freed = replace(self.leases[old], state=LeaseState.RELEASED, expires=now)
            commits.append(Commit6(freed, CommitEvent.SUPERSEDED, self._store(freed)))
        lease = Lease6(address, LeaseState.BOUND, request.duid, iaid, subnet.name, now,
                       now + subnet.valid_lifetime, request.mac)
        commits.append(Commit6(lease, event, self._store(lease)))
        return commits

    # -- the messages ------------------------------------------------------------------------
    def _solicit(self, request: _Request, now: float) -> list[Action6]:
        # §18.3.1: "If the client has included a Rapid Commit option and the server has been
        # configured to respond with committed address assignments", the server answers with a
        # Reply that carries Rapid Commit.
        rapid = self.config.rapid_commit and request.msg.has(Opt6.RAPID_COMMIT)
        return self._assign(request, now, commit=rapid)

    def _request(self, request: _Request, now: float) -> list[Action6]:
        return self._assign(request, now, commit=True)

    def _assign(self, request: _Request, now: float, *, commit: bool) -> list[Action6]:
        subnet = request.subnet
        assert subnet is not None
        actions: list[Action6] = []
        ias: list[tuple[int, bytes]] = []
        given: list[IPv6Address] = []
        for raw in request.msg.get_all(Opt6.IA_NA):
            ia = IaNa.decode(raw)
            address = self._choose(request, ia, now)
            if address is None:
                # §18.3.1/§18.3.2: an IA the server can give no address to carries NoAddrsAvail.
                ias.append(IaNa(ia.iaid, 0, 0, (_status(Status6.NO_ADDRS_AVAIL,
                                                        "no addresses available"),)).option())
                continue
            given.append(address)
            if commit:
                actions += self._bind(request, ia.iaid, address, now, CommitEvent.BOUND)
            else:
                self.offers[address] = _Offer(request.duid, ia.iaid, now + self.config.offer_hold)
                self._timers.add(now + self.config.offer_hold, address)
            ias.append(self._ia(subnet, ia.iaid, address))
        extra = ias
        if commit and request.msg.msg_type == M.SOLICIT:
            extra = [*ias, (int(Opt6.RAPID_COMMIT), b"")]
        kind = M.REPLY if commit else M.ADVERTISE
        if not given and request.msg.has(Opt6.IA_NA):
            extra.append(_status(Status6.NO_ADDRS_AVAIL, "no addresses available"))
        return [*actions, *self._answer(request, kind, extra, tuple(given))]

    def _ia(self, subnet: Subnet6, iaid: int, address: IPv6Address,
            lifetimes: tuple[int, int] | None = None) -> tuple[int, bytes]:
        preferred, valid = lifetimes or (subnet.preferred_lifetime, subnet.valid_lifetime)
        t1, t2 = (subnet.t1, subnet.t2) if lifetimes is None else (0, 0)
        return IaNa(iaid, t1, t2, (IaAddress(address, preferred, valid).option(),)).option()

    def _renew(self, request: _Request, now: float) -> list[Action6]:
        """§18.3.4 (Renew) and §18.3.5 (Rebind): extend the IA's binding; addresses the client
        lists that are not its binding (or not on this link) go back with lifetimes 0; an IA
        without a binding gets NoBinding."""
        subnet = request.subnet
        assert subnet is not None
        actions: list[Action6] = []
        ias: list[tuple[int, bytes]] = []
        kept: list[IPv6Address] = []
        for raw in request.msg.get_all(Opt6.IA_NA):
            ia = IaNa.decode(raw)
            listed = [IaAddress.decode(v).address for v in ia.get_all(Opt6.IAADDR)]
            bound = self.by_client.get((subnet.name, request.duid, ia.iaid))
            lease = self.leases.get(bound) if bound is not None else None
            if lease is None or not lease.holds(now) or lease.duid != request.duid:
                stale = [a for a in listed if a not in subnet.prefix]
                if stale:
                    ias.append(IaNa(ia.iaid, 0, 0, tuple(IaAddress(a, 0, 0).option()
                                                         for a in stale)).option())
                else:
                    ias.append(IaNa(ia.iaid, 0, 0, (_status(Status6.NO_BINDING,
                                                            "no binding"),)).option())
                continue
            actions += self._bind(request, ia.iaid, lease.address, now, CommitEvent.RENEWED)
            kept.append(lease.address)
            others = tuple(IaAddress(a, 0, 0).option() for a in listed if a != lease.address)
            ia_option = IaNa.decode(self._ia(subnet, ia.iaid, lease.address)[1])
            ias.append(replace(ia_option, options=ia_option.options + others).option())
        return [*actions, *self._answer(request, M.REPLY, ias, tuple(kept))]

    def _release(self, request: _Request, now: float) -> list[Action6]:
        """§18.3.7 (Release) and §18.3.8 (Decline): the client's bindings end (a declined
        address is quarantined for decline_time); an IA it has no binding for gets NoBinding;
        the Reply carries Success."""
        subnet = request.subnet
        assert subnet is not None
        decline = request.msg.msg_type == M.DECLINE
        actions: list[Action6] = []
        unknown: list[tuple[int, bytes]] = []
        for raw in request.msg.get_all(Opt6.IA_NA):
            ia = IaNa.decode(raw)
            for value in ia.get_all(Opt6.IAADDR):
                address = IaAddress.decode(value).address
                lease = self.leases.get(address)
                if lease is None or lease.duid != request.duid or lease.iaid != ia.iaid or (
                        not lease.holds(now)):
                    unknown.append(IaNa(ia.iaid, 0, 0, (_status(Status6.NO_BINDING,
                                                                "no binding"),)).option())
                    continue
                state, expires = ((LeaseState.DECLINED, now + self.config.decline_time) if decline
                                  else (LeaseState.RELEASED, now))
                changed = replace(lease, state=state, expires=expires, starts=now)
                event = CommitEvent.DECLINED if decline else CommitEvent.RELEASED
                actions.append(Commit6(changed, event, self._store(changed)))
        done = "declined" if decline else "released"
        return [*actions, *self._answer(request, M.REPLY,
                                        [*unknown, _status(Status6.SUCCESS, done)])]

    def _confirm(self, request: _Request, now: float) -> list[Action6]:
        """§18.3.3: Success when every address the client lists is on its link, else
        NotOnLink; a Confirm listing no address gets no Reply."""
        subnet = request.subnet
        assert subnet is not None
        listed = [IaAddress.decode(v).address for raw in request.msg.get_all(Opt6.IA_NA)
                  for v in IaNa.decode(raw).get_all(Opt6.IAADDR)]
        if not listed:
            return [Drop6(Drop6Reason.CONFIRM_WITHOUT_ADDRESSES)]
        on_link = all(address in subnet.prefix for address in listed)
        status = (_status(Status6.SUCCESS, "on link") if on_link
                  else _status(Status6.NOT_ON_LINK, "not on this link"))
        return self._answer(request, M.REPLY, [status])

    def _information(self, request: _Request, now: float) -> list[Action6]:
        return self._answer(request, M.REPLY, [])

    # -- the answer --------------------------------------------------------------------------
    def _answer(self, request: _Request, kind: int, body: list[tuple[int, bytes]],
                addresses: tuple[IPv6Address, ...] = ()) -> list[Action6]:
        """The reply, direct or wrapped for the relays; ``addresses``: what it gives, for the
        shell's log line."""
        msg = request.msg
        options: list[tuple[int, bytes]] = [(int(Opt6.SERVERID), self.server_duid)]
        if request.duid:
            options.append((int(Opt6.CLIENTID), request.duid))
        options += body
        options += self._requested(msg)
        reply = Dhcp6Message(kind, msg.transaction_id, tuple(options))
        payload = encode6(reply)
        dgram = request.dgram
        # A relay accepts Relay-replies only from the server address it sends to: answer from
        # the address the message reached.
        source = None if dgram.destination.is_multicast else dgram.destination
        if not request.relays:
            return [Send6(kind, payload, dgram.source, CLIENT_PORT, dgram.ifindex, addresses,
                          source)]
        # RFC 8415 §19.3 (and §18.3.10): the Reply goes back wrapped in one Relay-reply per
        # Relay-forward, each with the hop-count, link-address and peer-address of its
        # Relay-forward and a copy of its Interface-ID option, to the relay it came from.
        for relay in reversed(request.relays):
            layer = [(int(Opt6.RELAY_MSG), payload)]
            interface_id = relay.get(Opt6.INTERFACE_ID)
            if interface_id is not None:
                layer.append((int(Opt6.INTERFACE_ID), interface_id))
            payload = encode6(RelayMessage(M.RELAY_REPL, relay.hop_count, relay.link_address,
                                           relay.peer_address, tuple(layer)))
        # RFC 8357 §5.2: a Relay Source Port option in the outermost Relay-forward means its
        # Relay-reply goes to the UDP port the relay sent from.
        port = (dgram.source_port if request.relays[0].has(Opt6.RELAY_SOURCE_PORT)
                else SERVER_PORT)
        return [Send6(kind, payload, dgram.source, port, dgram.ifindex, addresses, source)]

    def _requested(self, msg: Dhcp6Message) -> list[tuple[int, bytes]]:
        """The configured options the client's Option Request (§21.7) asks for, and its boot
        URL (RFC 5970 §3.1) when it asks for Bootfile-URL."""
        raw = msg.get(Opt6.ORO)
        wanted = set(decode_codes(raw)) if raw is not None else set()
        options = [(code, value) for code, value in self.config.options if code in wanted]
        if Opt6.BOOTFILE_URL in wanted:
            url = self._boot_url(msg)
            if url is not None:
                options.append((int(Opt6.BOOTFILE_URL), url.encode()))
                http = _http_client(msg)
                if http is not None and url.startswith(("http://", "https://")):
                    # UEFI 2.x §24.7 (HTTP boot, DHCPv6): the offer of a boot URL carries the
                    # Vendor Class "HTTPClient", as DHCPv4's option 60 does; EDK2 takes an
                    # Advertise without it for an address only, and boots nothing.
                    options.append(VendorClass(http, (HTTP_CLIENT,)).option())
                if self.config.boot_params:
                    # RFC 5970 §3.2: each parameter as a 2-octet length and UTF-8 text.
                    options.append((int(Opt6.BOOTFILE_PARAM), encode_data_list(
                        p.encode() for p in self.config.boot_params)))
        return options

    def _boot_url(self, msg: Dhcp6Message) -> str | None:
        """The Bootfile-URL for the client's architectures (option 61, RFC 5970 §3.3), each
        tried as itself and then as its PXE twin; a client whose Vendor Class data begin with
        "HTTPClient" gets only an http(s) URL, any other only a tftp one. iPXE (User Class
        "iPXE", §21.15) gets the ``ipxe`` URL, if there is one, whatever it says."""
        if self.config.ipxe_url is not None and any(
                IPXE_USER_CLASS in decode_data_list(value, "User Class")
                for value in msg.get_all(Opt6.USER_CLASS)):
            return self.config.ipxe_url
        raw_arches = msg.get(Opt6.CLIENT_ARCH_TYPE)
        if not raw_arches or len(raw_arches) % 2:
            return None
        arches = [int.from_bytes(raw_arches[i:i + 2], "big")
                  for i in range(0, len(raw_arches), 2)]
        http = _http_client(msg) is not None
        urls = dict(self.config.boot_urls)
        for arch in [*arches, *(HTTP_TWINS[a] for a in arches if a in HTTP_TWINS)]:
            url = urls.get(arch)
            if url is not None and url.startswith(("http://", "https://")) == http:
                return url
        return None


def _http_client(msg: Dhcp6Message) -> int | None:
    """The enterprise number of the client's Vendor Class whose data begin with "HTTPClient"
    (a UEFI HTTP boot client), if it sent one."""
    for value in msg.get_all(Opt6.VENDOR_CLASS):
        vendor = VendorClass.decode(value)
        if any(item.startswith(HTTP_CLIENT) for item in vendor.data):
            return vendor.enterprise
    return None


def _status(code: int, message: str) -> tuple[int, bytes]:
    return StatusCode(code, message).option()


def _link_layer(relays: list[RelayMessage], duid: bytes) -> bytes | None:
    """RFC 6939: the first-hop relay's Client Link-Layer Address; else the DUID-LL/LLT's."""
    if relays:
        raw = relays[-1].get(Opt6.CLIENT_LINKLAYER_ADDR)
        if raw is not None:
            return ClientLinkLayer.decode(raw).address
    found = duid_link_layer(duid)
    return found[1] if found is not None else None


_HANDLERS = {
    M.SOLICIT: Dhcp6ServerCore._solicit,
    M.REQUEST: Dhcp6ServerCore._request,
    M.CONFIRM: Dhcp6ServerCore._confirm,
    M.RENEW: Dhcp6ServerCore._renew,
    M.REBIND: Dhcp6ServerCore._renew,
    M.RELEASE: Dhcp6ServerCore._release,
    M.DECLINE: Dhcp6ServerCore._release,
    M.INFORMATION_REQUEST: Dhcp6ServerCore._information,
}
