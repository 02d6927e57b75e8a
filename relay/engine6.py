"""The DHCPv6 relay engine (sans-IO): a received datagram in, the actions to take out.

RFC 8415 §19 (relaying a client message or a Relay-forward: a Relay-forward of our own) and §20
(relaying a Relay-reply: unwrap and send to the peer), RFC 4649 (Remote-ID), RFC 4580
(Subscriber-ID), RFC 6939 (Client Link-Layer Address). No sockets, clock or logging: the shell
executes the actions, counts and logs, as for the IPv4 engine whose counters and drop reasons
this one shares.
"""

from __future__ import annotations

from ipaddress import IPv6Address

from .actions import Deliver6, DeliveryMode, Drop, Forward6, Outcome6
from .config import LowerInterface6, Relay6Config
from .drops import DropReason
from .enginebase import EngineBookkeeping
from .interfaces import Interface, is_link_local6, is_routable6
from .wire import Datagram6, WireError
from .wire.dhcpv6 import (
    HOP_COUNT_LIMIT,
    UNSPECIFIED,
    ClientLinkLayer,
    Message6,
    MessageType6,
    Opt6,
    RelayMessage,
    RemoteId,
    decode6,
    encode_options,
)

#: Messages only a server sends towards clients: never relayed upward.
SERVER_TO_CLIENT = frozenset(
    (MessageType6.ADVERTISE, MessageType6.REPLY, MessageType6.RECONFIGURE)
)
ETHERNET = 1


class Relay6Engine(EngineBookkeeping[Relay6Config]):
    def _configure(self, config: Relay6Config) -> None:
        self._servers = config.unicast_servers
        self._by_interface_id = {lower.id_value: lower for lower in config.lower}
        extra: list[tuple[int, bytes]] = []
        if config.remote_id is not None:
            extra.append(RemoteId(*config.remote_id).option())
        if config.subscriber_id is not None:
            extra.append((Opt6.SUBSCRIBER_ID, config.subscriber_id))
        #: Per lower interface: the options every Relay-forward from it starts with, encoded.
        self._options = {
            lower.name: encode_options([(Opt6.INTERFACE_ID, lower.id_value), *extra])
            for lower in config.lower
        }
        self._links: dict[int, IPv6Address] = {}

    def _interfaces_changed(self) -> None:
        self._links = {}

    def handle(self, datagram: Datagram6, now: float) -> Outcome6:
        """Decide what to do with one datagram. Any payload returns an Outcome6."""
        self.counters.received += 1
        self.counters.received_on[datagram.ifindex] += 1
        try:
            message = decode6(datagram.payload)
        except WireError as error:
            return self._dropped(Outcome6((Drop(DropReason.MALFORMED, str(error)),)))
        if message.msg_type == MessageType6.RELAY_REPL:
            self.counters.replies += 1
            self.counters.replies_on_port[datagram.port] += 1
            assert isinstance(message, RelayMessage)
            return self._dropped(Outcome6(self._reply(message, datagram), message))
        self.counters.requests += 1
        return self._dropped(self._forward(message, datagram))

    # -- client (or lower relay) to server: RFC 8415 §19.1 --------------------------------------
    def _forward(self, message: Message6, datagram: Datagram6) -> Outcome6:
        checked = self._forward_checks(message, datagram)
        if isinstance(checked, Drop):
            return Outcome6((checked,), message)
        ingress, lower = checked
        if isinstance(message, RelayMessage):
            # RFC 8415 §19.1.2: "If the message received by the relay agent is a Relay-forward
            # message and the hop-count in the message is greater than or equal to
            # HOP_COUNT_LIMIT, the relay agent discards the received message."
            if message.hop_count >= HOP_COUNT_LIMIT:
                detail = f"hop-count {message.hop_count} >= HOP_COUNT_LIMIT {HOP_COUNT_LIMIT}"
                return Outcome6((Drop(DropReason.HOP_LIMIT, detail),), message)
            hop_count = message.hop_count + 1
            # RFC 8415 §19.1.2: "If the source address from the IP datagram header of the
            # received message is a global or ULA address, the relay agent sets the link-address
            # field to 0; otherwise, the relay agent sets the link-address field to a global or
            # ULA address assigned to the interface on which the message was received, or includes
            # an Interface-ID option to identify the interface" (we always include one).
            link = UNSPECIFIED if is_routable6(datagram.source) else self._link(ingress, lower)
        else:
            # RFC 8415 §19.1.1: "the relay agent places a global or ULA address with a prefix
            # assigned to the link on which the client should be assigned an address in the
            # link-address field", and sets hop-count to 0.
            hop_count = 0
            link = self._link(ingress, lower)
        # RFC 8415 §19.1.1: "the relay agent copies the source address from the header of the IP
        # datagram in which the message was received into the peer-address field". Interface-ID
        # (RFC 8415 §21.18) always: it is what the reply is delivered by.
        options = [self._options[lower.name]]
        if self.config.client_link_layer and not isinstance(message, RelayMessage):
            # RFC 6939 §4: the first-hop relay "MAY include" the client's link-layer address.
            # A sans-IO engine sees no Ethernet header: the address comes from a modified
            # EUI-64 link-local source (RFC 4291 appendix A), the usual one; else none is sent.
            mac = eui64_mac(datagram.source)
            if mac is not None:
                options.append(encode_options((ClientLinkLayer(ETHERNET, mac).option(),)))
        try:
            options.append(encode_options(((Opt6.RELAY_MSG, datagram.payload),)))
        except WireError as error:
            return Outcome6((Drop(DropReason.OVERSIZE, str(error)),), message)
        # RFC 8415 §9: msg-type, hop-count, link-address, peer-address, options (the header
        # written here and the options encoded once per interface: this runs per packet).
        payload = b"".join((bytes((MessageType6.RELAY_FORW, hop_count)), link.packed,
                            datagram.source.packed, *options))
        forwards = []
        for upstream in self.config.upper:
            interface = self.interfaces.by_name(upstream.interface)
            if interface is None or not interface.up:
                continue
            self.counters.forwarded[upstream.destination] += 1
            forwards.append(Forward6(upstream.destination, interface.index, payload))
        if not forwards:
            detail = "no upstream interface is present and up"
            return Outcome6((Drop(DropReason.NO_HELPERS, detail),), message)
        return Outcome6(tuple(forwards), message, hop_count, link)

    def _forward_checks(
        self, message: Message6, datagram: Datagram6
    ) -> Drop | tuple[Interface, LowerInterface6]:
        ingress = self.interfaces.by_index(datagram.ifindex)
        if ingress is None:
            return Drop(DropReason.UNKNOWN_INTERFACE, f"ifindex {datagram.ifindex}")
        lower = self.config.lower_interface(ingress.name)
        if lower is None:
            return Drop(DropReason.NOT_CLIENT_FACING, f"request on {ingress.name}")
        if not ingress.up:
            return Drop(DropReason.INTERFACE_DOWN, ingress.name)
        if self.interfaces.by_address(datagram.source) is not None:
            return Drop(DropReason.REQUEST_FROM_SELF, f"source {datagram.source} is ours")
        if message.msg_type in SERVER_TO_CLIENT:
            # RFC 8415 §19.1: a relay agent relays "messages from clients and Relay-forward
            # messages from other relay agents"; a server's message from a client's link is not
            # one (an unknown type is relayed, as §19.1 asks).
            detail = f"{MessageType6(message.msg_type).name} from {datagram.source}"
            return Drop(DropReason.NOT_RELAYABLE, detail)
        return ingress, lower

    def _link(self, ingress: Interface, lower: LowerInterface6) -> IPv6Address:
        """The configured link-address, else the interface's first global or ULA address, else
        unspecified (the Interface-ID option names the link then); cached per interface until
        the interfaces or the configuration change."""
        link = self._links.get(ingress.index)
        if link is None:
            routable = ingress.routable6
            link = lower.link_address or (routable.ip if routable is not None else UNSPECIFIED)
            self._links[ingress.index] = link
        return link

    # -- server to client (or lower relay): RFC 8415 §19.2 --------------------------------------
    def _reply(self, message: RelayMessage, datagram: Datagram6) -> tuple[Deliver6 | Drop, ...]:
        ingress = self.interfaces.by_index(datagram.ifindex)
        if ingress is None:
            return (Drop(DropReason.UNKNOWN_INTERFACE, f"ifindex {datagram.ifindex}"),)
        if not self._from_server(datagram, ingress):
            return (Drop(DropReason.REPLY_FROM_NON_SERVER, f"from {datagram.source}"),)
        if not self.config.is_upper(ingress.name):
            detail = f"reply from {datagram.source} on client-facing {ingress.name}"
            return (Drop(DropReason.REPLY_WRONG_INTERFACE, detail),)
        inner = message.relayed
        if not inner:
            detail = "Relay-reply without a Relay Message option"
            return (Drop(DropReason.MALFORMED, detail),)
        target = self._reply_link(message)
        if isinstance(target, Drop):
            return (target,)
        interface = target
        if not interface.up:
            return (Drop(DropReason.INTERFACE_DOWN, interface.name),)
        # RFC 8415 §19.2: "The relay agent extracts the message from the Relay Message option
        # and relays it to the address contained in the peer-address field of the Relay-reply
        # message. [...] If the Relay-reply message includes a Relay Message option that
        # contains a Relay-reply message, the relay agent sends it to [...] port 547; otherwise
        # it sends it to the client on port 546."
        mode = (
            DeliveryMode.PEER_RELAY
            if inner[0] == MessageType6.RELAY_REPL
            else DeliveryMode.PEER_CLIENT
        )
        self.counters.delivered[mode] += 1
        return (Deliver6(interface.index, interface.name, inner, mode, message.peer_address),)

    def _from_server(self, datagram: Datagram6, ingress: Interface) -> bool:
        """A configured server's address, or any source on an upper interface whose destination
        is multicast (ff05::1:3 names no server: whoever answers there is one)."""
        if datagram.source in self._servers:
            return True
        return any(
            upstream.interface == ingress.name and upstream.destination.is_multicast
            for upstream in self.config.upper
        )

    def _reply_link(self, message: RelayMessage) -> Interface | Drop:
        """RFC 8415 §19.2: "If the Relay-reply message includes an Interface-ID option, the
        relay agent relays the message from the server to the client on the link identified by
        the Interface-ID option. Otherwise, if the link-address field is not set to zero, the
        relay agent relays the message on the link identified by the link-address field."
        """
        interface_id = message.get(Opt6.INTERFACE_ID)
        if interface_id is not None:
            lower = self._by_interface_id.get(interface_id)
            if lower is None:
                return Drop(DropReason.UNKNOWN_LINK, f"Interface-ID {interface_id!r}")
            interface = self.interfaces.by_name(lower.name)
            if interface is None:
                return Drop(DropReason.UNKNOWN_LINK, f"Interface-ID {interface_id!r}: no link")
            return interface
        link = message.link_address
        for lower in self.config.lower:
            interface = self.interfaces.by_name(lower.name)
            if interface is not None and link != UNSPECIFIED and (
                link == lower.link_address or self.interfaces.by_address(link) is interface
            ):
                return interface
        return Drop(DropReason.UNKNOWN_LINK, f"no Interface-ID, link-address {link}")


def eui64_mac(address: IPv6Address) -> bytes | None:
    """The MAC of a link-local address formed from it (modified EUI-64: ff:fe in the middle, the
    universal/local bit flipped), else None."""
    if not is_link_local6(address):
        return None
    identifier = address.packed[8:]
    if identifier[3:5] != b"\xff\xfe":
        return None
    return bytes((identifier[0] ^ 0x02,)) + identifier[1:3] + identifier[5:]
