"""The relay engine (sans-IO): a received datagram in, the actions to take out.

RFC 1542 §4 (relay agents), RFC 2131 §4.1 (reply delivery), RFC 3046 (option 82), RFC 3527 (link
selection), RFC 5010 (flags), RFC 5107 (server identifier override), RFC 6607 (virtual subnet
selection), RFC 8357 (relay source port).
No sockets, clock or logging here: the shell executes the actions, counts and logs.
"""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address
from typing import Any

from .actions import Deliver, DeliveryMode, Drop, Forward, Outcome, RogueServer, Throttle, Warn
from .bootwatch import BootWatch, Unbootable
from .classes import DEFAULT_CLASS, classify
from .config import AgentPolicy, GiaddrMode, InterfaceConfig, RelayConfig
from .drops import DropReason
from .enginebase import EngineBookkeeping
from .giaddr import SmartGiaddr
from .interfaces import Interface, InterfaceTable, Role
from .throttle import BucketLimit, ThrottleChange, TokenBuckets
from .wire import (
    ETHERNET_MAX_MESSAGE,
    FLAG_UNICAST,
    ZERO,
    AgentInfo,
    AgentSub,
    Datagram,
    DhcpMessage,
    Frame,
    MessageType,
    Opt,
    WireError,
)
from .wire.pxe import is_pxe_client

LIMITED_BROADCAST = IPv4Address("255.255.255.255")
#: Where giaddr sits in the fixed BOOTP header (op htype hlen hops xid secs flags ciaddr yiaddr
#: siaddr, RFC 951).
GIADDR_OFFSET = 24
#: A rogue server is logged again after this many seconds; at most ROGUES_TRACKED are
#: remembered (their addresses are chosen by whoever sends).
ROGUE_REPEAT = 3600.0
ROGUES_TRACKED = 1024
#: RFC 1542 §4.1.1: requests whose hops exceed this are discarded whatever the configuration.
RFC1542_MAX_HOPS = 16
BROADCAST_MAC = b"\xff" * 6
ETHERNET = 1
#: What the reply path reads of option 82: circuit-id, link selection, VSS, VSS-Control.
AgentFields = tuple[bytes | None, IPv4Address | None, bytes | None, bool]


class RelayEngine(EngineBookkeeping[RelayConfig]):
    def __init__(self, config: RelayConfig, interfaces: InterfaceTable | None = None) -> None:
        self._warned_pxe_misconfig: set[IPv4Address] = set()
        #: Survives reloads and interface changes: clients keep the address that works.
        self._smart = SmartGiaddr(config.smart_retries)
        self._boots = BootWatch()
        self._warned_unbootable: set[str] = set()
        #: Rogue server address -> when it was last logged.
        self._rogues: dict[IPv4Address, float] = {}
        self._macs: TokenBuckets | None = None
        self._circuit_buckets: TokenBuckets | None = None
        #: Throttling started or stopped, from either table, not yet told (Throttle actions).
        self._throttle_changes: list[ThrottleChange] = []
        super().__init__(config, interfaces)

    def _configure(self, config: RelayConfig) -> None:
        self._servers = config.all_servers
        self._agent_values: dict[tuple[int, bool, IPv4Address], bytes] = {}
        self._smart.retries = config.smart_retries
        self._circuits: dict[bytes, str] | None = None
        self._agent_decoded: dict[bytes, AgentFields | Drop] = {}
        self._classes = config.classes
        self._interface_settings: dict[str, InterfaceConfig | None] = {}
        limits = config.rate_limits
        self._macs = self._buckets(self._macs, "mac", limits.mac, limits.table_size)
        self._circuit_buckets = self._buckets(self._circuit_buckets, "circuit", limits.circuit,
                                              limits.table_size)

    def _buckets(self, running: TokenBuckets | None, kind: str, limit: BucketLimit,
                 capacity: int) -> TokenBuckets | None:
        """A reload that keeps a limit keeps its clients' buckets (and who is throttled); a
        changed limit starts afresh, a rate of 0 turns it off."""
        if not limit.enabled:
            return None
        if running is not None and (running.limit, running.capacity) == (limit, capacity):
            return running
        return TokenBuckets(limit, capacity, kind, self._throttle_changes)

    def _interfaces_changed(self) -> None:
        self._agent_values = {}
        self._circuits = None
        self._server_links: dict[IPv4Address, frozenset[int]] = {}

    def _settings(self, name: str) -> InterfaceConfig | None:
        """``config.interface(name)``, cached until the configuration changes (it is a scan of
        the interfaces, or a new object, and read a few times per packet)."""
        try:
            return self._interface_settings[name]
        except KeyError:
            if len(self._interface_settings) >= 4096:  # bounded: names come from netlink
                self._interface_settings.clear()
            settings = self._interface_settings[name] = self.config.interface(name)
            return settings

    def handle(self, datagram: Datagram, now: float) -> Outcome:
        """Decide what to do with one datagram. Any payload returns an Outcome."""
        self.counters.received += 1
        self.counters.received_on[datagram.ifindex] += 1
        try:
            frame = Frame(datagram.payload)
        except WireError as error:
            return self._dropped(Outcome((Drop(DropReason.MALFORMED, str(error)),)))
        msg = frame.message
        if msg.op == 1:  # Op.BOOTREQUEST
            self.counters.requests += 1
            return self._with_throttles(self._request(frame, datagram, now))
        self.counters.replies += 1
        self.counters.replies_on_port[datagram.port] += 1
        if datagram.source not in self._servers:
            drop = Drop(DropReason.REPLY_FROM_NON_SERVER, f"from {datagram.source}")
            rogue = self._rogue(msg, datagram, now, to_relay=True)
            return self._dropped(Outcome((drop,) if rogue is None else (drop, rogue), msg,
                                         msg.hops, msg.giaddr))
        return self._dropped(Outcome(tuple(self._reply(frame, datagram)), msg, msg.hops,
                                     msg.giaddr))

    def observe_client_lan(self, datagram: Datagram, now: float) -> Outcome:
        """A BOOTREPLY seen on its way to a client's port (the shell's packet listener): a
        server answering directly on a client LAN. Nothing is relayed; one that is not a
        configured helper is a rogue (``RogueServer``, counted)."""
        try:
            msg = Frame(datagram.payload).message
        except WireError:
            return Outcome(())
        rogue = self._rogue(msg, datagram, now, to_relay=False)
        return Outcome(() if rogue is None else (rogue,), msg, msg.hops, msg.giaddr)

    def _rogue(self, msg: DhcpMessage, datagram: Datagram, now: float,
               to_relay: bool) -> RogueServer | None:
        """Whether a reply from a non-helper arrived on a client-facing interface: a DHCP server
        there that is not ours. ``to_relay``: it came to the relay's port (else it was seen on
        its way to a client). Not counted: a configured server (or one at our own address), a
        reply another relay delivered (giaddr set: its server is elsewhere), one to the relay's
        port on an interface that also faces servers, and an answer to this host's own DHCP
        client (chaddr one of our interfaces')."""
        server = datagram.source
        if (msg.op != 2 or server == ZERO or server in self._servers
                or self.interfaces.by_address(server)):
            return None
        ingress = self.interfaces.by_index(datagram.ifindex)
        if ingress is None or (not to_relay and msg.giaddr != ZERO):
            return None
        settings = self._settings(ingress.name)
        if settings is None or not settings.role.faces_clients:
            return None
        if to_relay and settings.role is not Role.DOWNSTREAM:
            return None
        if any(msg.hardware_address == own.mac for own in self.interfaces if own.mac):
            return None
        self.counters.rogue_replies[ingress.index] += 1
        last = self._rogues.get(server)
        if last is not None and now - last < ROGUE_REPEAT:
            return None
        if len(self._rogues) >= ROGUES_TRACKED:
            self._rogues.clear()
        self._rogues[server] = now
        server_id = msg.get(Opt.SERVER_ID)
        return RogueServer(
            server, ":".join(f"{b:02x}" for b in datagram.source_mac), ingress.name,
            str(IPv4Address(server_id)) if server_id is not None and len(server_id) == 4
            else None, msg.yiaddr)

    def _with_throttles(self, outcome: Outcome) -> Outcome:
        """A request's outcome, with the throttling changes its rate check made (Throttle)."""
        if self._throttle_changes:
            return dataclasses.replace(outcome, actions=(*outcome.actions, *self._throttles()))
        return outcome

    def may_classify(self, ifname: str) -> bool:
        """Whether a forwarding class may take requests received on ``ifname`` (their helpers
        are then chosen per request, ``relay.classes``)."""
        return any(not c.interfaces or ifname in c.interfaces for c in self._classes)

    # -- client to server ----------------------------------------------------------------------
    def _request(self, frame: Frame, datagram: Datagram, now: float) -> Outcome:
        msg = frame.message
        checked = self._request_checks(msg, datagram)
        if isinstance(checked, Drop):
            return self._drop_request(msg, checked.reason, checked.detail)
        ingress, settings = checked
        if self._macs is not None or self._circuit_buckets is not None:
            limited = self._rate_limited(msg, ingress, settings, now)
            if limited is not None:
                return self._drop_request(msg, limited.reason, limited.detail)
        # The forwarding classes (relay.classes): the first that matches names the helpers;
        # none matching, the interface's (or the global) helpers, every one of them.
        matched = classify(self._classes, msg, ingress.name) if self._classes else None
        if matched is None:
            class_name, helpers = DEFAULT_CLASS, self.config.helpers_for(settings)
        else:
            class_name, helpers = matched.name, matched.helpers
        if not helpers:
            return self._drop_request(msg, DropReason.NO_HELPERS, ingress.name)
        hops = msg.hops + 1
        # RFC 1542 §4.1.1: "If the 'giaddr' field contains some non-zero value, the 'giaddr'
        # field MUST NOT be modified." (another relay is closer to the client).
        copies: list[tuple[IPv4Address, bytes | None]] = [(msg.giaddr, None)]
        if msg.giaddr == ZERO:
            agent_present = msg.has(Opt.RELAY_AGENT_INFO)
            # RFC 3046 §2.1: "relay agents receiving a DHCP packet from an untrusted circuit with
            # giaddr set to zero (indicating that they are the first-hop router) but with a Relay
            # Agent Information option already present in the packet SHALL discard the packet".
            if agent_present and not settings.trusted:
                return self._drop_request(msg, DropReason.UNTRUSTED_AGENT_OPTION, ingress.name)
            links = self._link_addresses(ingress, settings, msg)
            if not links:
                detail = f"no IPv4 address for giaddr on {ingress.name}"
                return self._drop_request(msg, DropReason.NO_INTERFACE_ADDRESS, detail)
            copies = []
            for link in links:
                ours = self._ours(frame, ingress, settings, datagram, link)
                if isinstance(ours, Drop):
                    return self._drop_request(msg, ours.reason, ours.detail)
                copies.append(ours)
        # Loops rather than comprehensions: this is the hot path, and a comprehension is a
        # function call of its own in CPython 3.11.
        capacity = self._capacity(datagram)
        payloads = []
        for giaddr, agent_value in copies:
            try:
                payloads.append(frame.relayed(hops, giaddr, agent_value, capacity))
            except WireError as error:
                return self._drop_request(msg, DropReason.OVERSIZE, str(error))
        forwarded = self.counters.forwarded
        forwards = []
        for payload in payloads:
            for server in helpers:
                forwarded[server] += 1
                forwards.append(Forward(server, payload))
        self.counters.relayed_by_class[class_name] += 1
        self._boots.forwarded(msg, class_name, helpers, ingress.name, now)
        return Outcome(tuple(forwards), msg, hops, copies[0][0], class_name)

    def _giaddr_for(self, link: IPv4Address, settings: InterfaceConfig) -> IPv4Address | None:
        """giaddr for the client's subnet ``link``: ``link`` itself, or with RFC 3527 link
        selection an address of the (server-facing) interface named (None: it has none)."""
        if settings.link_selection is None:
            return link
        upstream = self.interfaces.by_name(settings.link_selection)
        return None if upstream is None else upstream.primary_ip

    def _ours(self, frame: Frame, ingress: Interface, settings: InterfaceConfig,
              datagram: Datagram, link: IPv4Address) -> tuple[IPv4Address, bytes | None] | Drop:
        """giaddr and option 82 of a request we are the first relay of, relayed for the
        client's subnet ``link`` (one of the ingress interface's addresses)."""
        msg = frame.message
        # An RFC 951 vendor area (no magic cookie) has no options field to carry option 82,
        # so such a request is relayed as RFC 1542 says: giaddr = the client's link address.
        if msg.vendor is not None:
            return link, None
        # RFC 1542 §4.1.1: "If this field is zero, the relay agent MUST fill this field with
        # the IP address of the interface on which the request was received."
        giaddr = self._giaddr_for(link, settings)
        if giaddr is None:
            return Drop(DropReason.NO_INTERFACE_ADDRESS,
                        f"no IPv4 address for giaddr on {settings.link_selection}")
        if not self._adds_agent_info(settings):
            return giaddr, None
        ours = self._agent_value(ingress, settings, datagram, link)
        policy = self.config.agent_policy
        agent_value = None
        if not msg.has(Opt.RELAY_AGENT_INFO):
            agent_value = ours
        elif policy is AgentPolicy.DISCARD:
            return Drop(DropReason.AGENT_OPTION_DISCARD, "request already carries option 82")
        elif policy is AgentPolicy.APPEND:
            agent_value = (msg.get(Opt.RELAY_AGENT_INFO) or b"") + ours
        elif policy is AgentPolicy.REPLACE:
            agent_value = ours
        # (AgentPolicy.FORWARD: the client's option 82 goes on unchanged.)
        if agent_value is not None:
            # RFC 3046 §2.1: "Packets which, after appending the Relay Agent Information
            # option, would exceed this configured maximum size shall be forwarded
            # WITHOUT adding the Agent Information option."
            if frame.size_with_agent_info(agent_value) <= self.config.max_packet_size:
                self.counters.agent_info_added += 1
            else:
                self.counters.agent_info_omitted_oversize += 1
                agent_value = None
        return giaddr, agent_value

    def _rate_limited(self, msg: DhcpMessage, ingress: Interface, settings: InterfaceConfig,
                      now: float) -> Drop | None:
        """A flooding MAC, then a flooding circuit, is dropped while others are served. The MAC
        is checked first: its dropped requests take nothing from its circuit's bucket, so one
        flooding client does not starve its neighbours."""
        macs, circuits = self._macs, self._circuit_buckets
        if macs is not None and not macs.admit((ingress.index, msg.hardware_address), now):
            return self._mac_drop(msg, ingress)
        if circuits is not None:
            circuit = (ingress.index, *self._circuit_of_request(msg, settings))
            if not circuits.admit(circuit, now):
                return Drop(DropReason.RATE_LIMITED_CIRCUIT, _circuit_text(ingress.name, circuit))
        return None

    @staticmethod
    def _mac_drop(msg: DhcpMessage, ingress: Interface) -> Drop:
        """A request dropped as its MAC is over its rate."""
        return Drop(DropReason.RATE_LIMITED_MAC, f"{msg.mac} on {ingress.name}")

    @staticmethod
    def _circuit_of_request(msg: DhcpMessage, settings: InterfaceConfig
                            ) -> tuple[IPv4Address, bytes]:
        """The circuit a request came by, besides its interface: a downstream agent's giaddr and
        circuit-id, where that agent is believed (giaddr set, or a trusted interface; else a
        client could pick a fresh circuit-id per request)."""
        agent = msg.get(Opt.RELAY_AGENT_INFO)
        if agent is None or (msg.giaddr == ZERO and not settings.trusted):
            return msg.giaddr, b""
        try:
            return msg.giaddr, AgentInfo.decode(agent).circuit_id or b""
        except WireError:
            return msg.giaddr, b""

    def sweep(self, now: float) -> list[Throttle | Warn]:
        """What time alone tells, called by the shell every second or so: clients gone quiet
        (their buckets full again; a Throttle for those whose throttling so stopped) and PXE
        clients left without boot information (a Warn once per class, ``_unbootable``)."""
        for buckets in (self._macs, self._circuit_buckets):
            if buckets is not None:
                buckets.expire(now)
        actions: list[Throttle | Warn] = [*self._throttles()]
        for unbootable in self._boots.expire(now):
            warning = self._unbootable(unbootable)
            if warning is not None:
                actions.append(warning)
        return actions

    def _unbootable(self, found: Unbootable) -> Warn | None:
        """The seed-2 diagnosis, learned from classes: PXE clients sent to no PXE server while
        their DHCP server offers no boot information either (counted each, warned once per
        class)."""
        self.counters.pxe_unbootable[found.forwarding_class] += 1
        if found.forwarding_class in self._warned_unbootable:
            return None
        self._warned_unbootable.add(found.forwarding_class)
        which = (f"class {found.forwarding_class!r}" if found.forwarding_class != DEFAULT_CLASS
                 else "the default helpers (no class matched)")
        return Warn(
            "relay.pxe.no_boot_server",
            f"PXE clients on {found.ifname} go by {which} to "
            f"{', '.join(map(str, found.helpers))}: none answered as a PXE server (proxyDHCP) "
            f"and DHCP server {found.dhcp_server} offers an address without boot information "
            "(no option 60 PXEClient, no boot file): they get an address and nothing to boot "
            "(PXE-E53 No boot filename received). Fix: add the PXE server to "
            + (f"class {found.forwarding_class!r}'s helpers."
               if found.forwarding_class != DEFAULT_CLASS else "the helpers."),
            found.dhcp_server,
        )

    def _throttles(self) -> list[Throttle]:
        """The Throttle actions of the changes not yet told (and counted)."""
        actions: list[Throttle] = []
        for change in self._throttle_changes:
            key: tuple[Any, ...] = change.client  # type: ignore[assignment]
            interface = self.interfaces.by_index(key[0])
            ifname = interface.name if interface is not None else f"#{key[0]}"
            client = (":".join(f"{b:02x}" for b in key[1]) if change.kind == "mac"
                      else _circuit_text(ifname, key))
            if change.started:
                self.counters.throttled_clients[change.kind] += 1
            actions.append(Throttle(change.kind, client, ifname, change.started, change.dropped))
        self._throttle_changes.clear()
        return actions

    def throttled_now(self) -> dict[str, int]:
        """Clients being throttled now, per kind (a gauge)."""
        return {buckets.kind: buckets.throttled_now
                for buckets in (self._macs, self._circuit_buckets) if buckets is not None}

    def _drop_request(self, msg: DhcpMessage, reason: DropReason, detail: str) -> Outcome:
        self.counters.dropped[reason] += 1
        return Outcome((Drop(reason, detail),), msg, msg.hops, msg.giaddr)

    def _request_checks(
        self, msg: DhcpMessage, datagram: Datagram
    ) -> Drop | tuple[Interface, InterfaceConfig]:
        """The checks before any change: a Drop, or the ingress and its settings."""
        ingress = self.interfaces.by_index(datagram.ifindex)
        if ingress is None:
            return Drop(DropReason.UNKNOWN_INTERFACE, f"ifindex {datagram.ifindex}")
        settings = self._settings(ingress.name)
        if settings is None or not settings.role.faces_clients:
            return Drop(DropReason.NOT_CLIENT_FACING, f"request on {ingress.name}")
        if not ingress.up:
            return Drop(DropReason.INTERFACE_DOWN, ingress.name)
        if self.interfaces.by_address(datagram.source) is not None:
            return Drop(DropReason.REQUEST_FROM_SELF, f"source {datagram.source} is ours")
        # RFC 1542 §4.1.1: "The relay agent MUST silently discard BOOTREQUEST messages whose
        # 'hops' field exceeds the value 16"; the limit is configurable (dhcrelay -c, default 10)
        # but a configured limit above 16 cannot lift that MUST.
        limit = min(self.config.max_hops, RFC1542_MAX_HOPS + 1)
        if msg.hops >= limit:
            return Drop(DropReason.HOP_LIMIT, f"hops {msg.hops} >= limit {limit}")
        # RFC 3046 §2.1.1: relay agents "SHALL discard the packet if the giaddr spoofs a giaddr
        # address implemented by the local agent itself" (dhcrelay: "we just sent it").
        if msg.giaddr != ZERO and self.interfaces.by_address(msg.giaddr) is not None:
            return Drop(DropReason.REQUEST_FROM_SELF, f"giaddr {msg.giaddr} is ours")
        return ingress, settings

    def _capacity(self, datagram: Datagram) -> int:
        """The most a relayed message may take: what arrived, the configured maximum or Ethernet's.

        The size check of option 82 uses max_packet_size; this only keeps the encoder from refusing
        a message that arrived (or was allowed to grow to) larger than one Ethernet frame.
        """
        return max(ETHERNET_MAX_MESSAGE, self.config.max_packet_size, len(datagram.payload))

    def _link_addresses(self, ingress: Interface, settings: InterfaceConfig,
                        msg: DhcpMessage) -> tuple[IPv4Address, ...]:
        """The addresses naming the client's subnet that a request is relayed for: one, but
        every address of the interface in mode ``all`` (none: the interface has no usable one)."""
        mode = settings.giaddr_mode
        if settings.giaddr is not None or mode is GiaddrMode.PRIMARY or not ingress.addresses:
            link = self._link_address(ingress, settings)
            return () if link is None else (link,)
        if mode is GiaddrMode.ALL:
            return tuple(address.ip for address in ingress.addresses)
        discover = msg.message_type == MessageType.DISCOVER
        link, fallback = self._smart.choose(ingress.index, msg.hardware_address,
                                            ingress.addresses, discover=discover,
                                            names=None if discover else _named_address(msg))
        if fallback:
            self.counters.giaddr_fallbacks[ingress.name] += 1
        return (link,)

    @staticmethod
    def _link_address(ingress: Interface, settings: InterfaceConfig) -> IPv4Address | None:
        """The address that names the client's link: the configured giaddr, else the primary."""
        if settings.giaddr is not None:
            return settings.giaddr if ingress.owns(settings.giaddr) else None
        return ingress.primary_ip

    def _adds_agent_info(self, settings: InterfaceConfig) -> bool:
        """Whether this relay adds option 82 to requests from this interface (and so removes it
        from replies delivered there)."""
        return (self._adds_circuit(settings) or self.config.relay_port is not None
                or settings.vss is not None)

    def _adds_circuit(self, settings: InterfaceConfig) -> bool:
        """Whether our option 82 from this interface carries a circuit-id (not only RFC 8357's
        relay source port)."""
        return (
            self.config.agent_info
            or settings.link_selection is not None
            or settings.server_id_override
        )

    def _agent_value(
        self, ingress: Interface, settings: InterfaceConfig, datagram: Datagram,
        link: IPv4Address,
    ) -> bytes:
        """Our option 82 for a request received on ``ingress`` for the subnet of ``link``.

        It depends on the configuration, the interfaces and, with server identifier override,
        on whether the request was unicast: cached per (interface, unicast, link) until either
        changes.
        """
        unicast = settings.server_id_override and (
            datagram.destination != LIMITED_BROADCAST
            and not _is_subnet_broadcast(ingress, datagram.destination)
        )
        key = ingress.index, unicast, link
        try:
            return self._agent_values[key]
        except KeyError:
            value = self._agent_values[key] = self._agent_info(ingress, settings, unicast, link)
            return value

    def _agent_info(
        self, ingress: Interface, settings: InterfaceConfig, unicast: bool, link: IPv4Address
    ) -> bytes:
        subs: list[tuple[int, bytes]] = []
        if self._adds_circuit(settings):
            subs.append((AgentSub.CIRCUIT_ID, _circuit_of(ingress, settings)))
            remote_id = settings.remote_id or self.config.remote_id
            if remote_id:
                subs.append((AgentSub.REMOTE_ID, remote_id))
        if settings.link_selection is not None:
            subs.append((AgentSub.LINK_SELECTION, link.packed))
        if settings.server_id_override:
            subs.append((AgentSub.RELAY_AGENT_FLAGS, bytes((FLAG_UNICAST if unicast else 0,))))
            subs.append((AgentSub.SERVER_ID_OVERRIDE, link.packed))
        if self.config.relay_port is not None:
            # RFC 8357 §5.1: a relay agent using a UDP source port other than 67 "MUST include
            # the 'Relay Source Port' sub-option" in the Relay Agent Information option of the
            # messages it relays to the server (the sub-option has length 0, §4.1).
            subs.append((AgentSub.RELAY_SOURCE_PORT, b""))
        if settings.vss is not None:
            # RFC 6607 §3.3: the relay adds VSS-Control beside VSS; a server that processed the
            # VSS sub-option does not echo VSS-Control, so its return says the server ignored it.
            subs.append((AgentSub.VSS, settings.vss))
            subs.append((AgentSub.VSS_CONTROL, b""))
        return AgentInfo(tuple(subs)).encode()

    # -- server to client ----------------------------------------------------------------------
    def _reply(self, frame: Frame, datagram: Datagram) -> list[Deliver | Drop | Warn]:
        """A reply to relay (RFC 1542 §4.1.2), with the trust rules of ``_wrong_side``."""
        msg = frame.message
        # RFC 1542 §4.1.2: "If the content of the 'giaddr' field does not match one of the relay
        # agent's directly-connected logical interfaces, the BOOTREPLY message MUST be silently
        # discarded."
        by_giaddr = self.interfaces.by_address(msg.giaddr)
        if by_giaddr is None:
            return [Drop(DropReason.UNKNOWN_GIADDR, f"giaddr {msg.giaddr}")]
        target = self._reply_interface(msg, by_giaddr)
        if isinstance(target, Drop):
            return [target]
        interface, settings = target
        wrong_side = self._wrong_side(datagram, interface)
        if wrong_side is not None:
            return [wrong_side]
        if not interface.up:
            return [Drop(DropReason.INTERFACE_DOWN, interface.name)]
        mode, destination, mac = _delivery(msg)
        if mode is DeliveryMode.UNICAST_CIADDR and not _on_link(interface, destination):
            detail = f"ciaddr {destination} is not a host on {interface.name}'s subnets"
            return [Drop(DropReason.CIADDR_OFF_LINK, detail)]
        try:
            if self._adds_agent_info(settings):
                # RFC 3046 §2.1: "The Relay Agent Information option echoed by a server MUST be
                # removed by either the relay agent or the trusted downstream network element
                # which added it when forwarding a server-to-client response back to the client."
                payload = frame.without_option(Opt.RELAY_AGENT_INFO, self._capacity(datagram))
            else:
                payload = frame.encoded(self._capacity(datagram))
        except WireError as error:
            return [Drop(DropReason.OVERSIZE, str(error))]
        if self.config.reply_giaddr is not None:
            payload = b"".join((payload[:GIADDR_OFFSET], self.config.reply_giaddr.packed,
                                payload[GIADDR_OFFSET + 4:]))
        actions: list[Deliver | Drop | Warn] = []
        sent_to = self._boots.replied(msg, datagram.source)
        warning = self._pxe_misconfig_warning(msg, datagram.source,
                                              sent_to or self.config.helpers_for(settings))
        if warning is not None:
            actions.append(warning)
        # From the address the server answered for (with several subnets on the link, the
        # client's gateway), else the one naming the link (giaddr upstream: link selection).
        source = (msg.giaddr if interface.owns(msg.giaddr)
                  else self._link_address(interface, settings) or msg.giaddr)
        if settings.giaddr_mode is GiaddrMode.SMART:
            self._smart.answered(interface.index, msg.hardware_address)
        self.counters.delivered[mode] += 1
        actions.append(
            Deliver(interface.index, interface.name, payload, mode, destination, mac, source)
        )
        return actions

    def _wrong_side(self, datagram: Datagram, delivery: Interface) -> Drop | None:
        """A reply must arrive from the server's side of the relay, never from a client's.

        The ingress may not be a client-facing-only interface (role downstream). Beyond the
        roles, which may be absent (every interface plays both): a server on a connected subnet
        is reached only through that subnet's interface, and a routed server never through the
        interface the reply is delivered on. A server at one of our own addresses is exempt:
        the kernel drops packets from outside carrying a local source as martians.
        """
        ingress = self.interfaces.by_index(datagram.ifindex)
        server = datagram.source
        if ingress is None:
            return Drop(DropReason.REPLY_WRONG_INTERFACE,
                        f"reply from {server} on unknown ifindex {datagram.ifindex}")
        settings = self._settings(ingress.name)
        if settings is not None and settings.role is Role.DOWNSTREAM:
            return Drop(DropReason.REPLY_WRONG_INTERFACE,
                        f"reply from {server} on client-facing {ingress.name}")
        if self.interfaces.by_address(server) is not None:
            return None
        connected = self._server_links.get(server)
        if connected is None:  # bounded: sources are configured servers
            connected = self._server_links[server] = self.interfaces.connected(server)
        if connected and ingress.index not in connected:
            return Drop(DropReason.REPLY_WRONG_INTERFACE,
                        f"reply from {server} on {ingress.name}, not on its subnet's interface")
        if not connected and ingress.index == delivery.index:
            return Drop(DropReason.REPLY_WRONG_INTERFACE,
                        f"reply from routed {server} on {ingress.name}, where it is delivered")
        return None

    def _reply_interface(
        self, msg: DhcpMessage, by_giaddr: Interface
    ) -> tuple[Interface, InterfaceConfig] | Drop:
        """The client's interface: giaddr's, or the one RFC 3527 link selection names.

        Where this relay adds option 82 on that interface, an echoed circuit-id must be the one
        it adds there: a circuit-id naming another interface does not redirect the reply.
        """
        circuit: bytes | None = None
        link: IPv4Address | None = None
        vss: bytes | None = None
        vss_control = False
        agent_value = msg.get(Opt.RELAY_AGENT_INFO)
        if agent_value is not None:
            fields = self._agent_fields(agent_value)
            if isinstance(fields, Drop):
                return fields
            circuit, link, vss, vss_control = fields
        interface = by_giaddr
        if link is not None:
            linked = self.interfaces.by_address(link)
            if linked is None:
                return Drop(DropReason.UNKNOWN_CIRCUIT, f"link selection {link}")
            interface = linked
        settings = self._settings(interface.name)
        if settings is None or not settings.role.faces_clients:
            return Drop(DropReason.NOT_CLIENT_FACING, f"giaddr {msg.giaddr} on {interface.name}")
        if link is not None:
            # RFC 3527 §3: giaddr is the address of the interface link selection went through.
            through = settings.link_selection or interface.name
            if by_giaddr.name != through:
                return Drop(DropReason.CIRCUIT_MISMATCH,
                            f"link selection {link} names {interface.name}, giaddr {msg.giaddr} "
                            f"is on {by_giaddr.name}, not {through}")
        if (circuit is not None and self._adds_circuit(settings)
                and circuit != _circuit_of(interface, settings)):
            named = self._circuit_table().get(circuit)
            if named is None:
                return Drop(DropReason.UNKNOWN_CIRCUIT, f"circuit-id {circuit!r}")
            return Drop(DropReason.CIRCUIT_MISMATCH,
                        f"circuit-id {circuit!r} names {named}, the reply is for {interface.name}")
        if settings.vss is not None and agent_value is not None:
            vss_drop = _vss_check(settings.vss, vss, vss_control, interface.name)
            if vss_drop is not None:
                return vss_drop
        return interface, settings

    def _agent_fields(self, value: bytes) -> AgentFields | Drop:
        """Circuit-id, link selection, VSS and VSS-Control of option 82 in a reply, or a Drop if
        it is malformed.

        Servers echo the few values this relay sends: cached per value until the configuration
        or the interfaces change (bounded: a server could send any).
        """
        try:
            return self._agent_decoded[value]
        except KeyError:
            pass
        fields: AgentFields | Drop
        try:
            agent = AgentInfo.decode(value)
            fields = agent.circuit_id, agent.link_selection, agent.vss, agent.vss_control
        except WireError as error:
            fields = Drop(DropReason.MALFORMED, f"option 82 in reply: {error}")
        if len(self._agent_decoded) >= 1024:
            self._agent_decoded.clear()
        self._agent_decoded[value] = fields
        return fields

    def _circuit_table(self) -> dict[bytes, str]:
        """Circuit-id -> the name of a client-facing interface this relay adds it on."""
        if self._circuits is None:
            circuits: dict[bytes, str] = {}
            for interface in self.interfaces:
                settings = self._settings(interface.name)
                if (settings is not None and settings.role.faces_clients
                        and self._adds_circuit(settings)):
                    circuits.setdefault(_circuit_of(interface, settings), interface.name)
            self._circuits = circuits
        return self._circuits

    def _pxe_misconfig_warning(
        self, msg: DhcpMessage, server: IPv4Address, helpers: tuple[IPv4Address, ...]
    ) -> Warn | None:
        """The second field report (PXE-E55): a DHCP server answering as a PXE server too, while
        the client's request also went to other ``helpers`` (its class's, or the interface's)."""
        if msg.yiaddr == ZERO or not is_pxe_client(msg) or server in self._warned_pxe_misconfig:
            return None
        others = [h for h in helpers if h != server]
        if not others:
            return None
        self._warned_pxe_misconfig.add(server)
        return Warn(
            "relay.pxe.dhcp_server_sends_pxeclient",
            f"DHCP server {server} offers addresses with option 60 'PXEClient': PXE clients will "
            f"ask it for proxyDHCP on port 4011 and fail (PXE-E55) although the PXE server is "
            f"among this relay's helpers ({', '.join(map(str, others))}). Fix: remove options "
            f"60/66/67 on {server} and keep the PXE server in the helper list.",
            server,
        )


def _vss_check(ours: bytes, echoed: bytes | None, control: bool, ifname: str) -> Drop | None:
    """RFC 6607 on a reply for an interface this relay adds VSS on."""
    # RFC 6607 §3.3: VSS-Control comes back only from a server that did not process the VSS
    # sub-option; the address it gives is from the global space, not the client's VPN, so the
    # reply must not reach the client.
    if control:
        return Drop(DropReason.VSS_NOT_UNDERSTOOD,
                    f"VSS-Control echoed: the server ignored VSS for {ifname}")
    # A server that processed VSS echoes it; another VPN's (or another relay's) must not be
    # delivered into this interface's.
    if echoed is not None and echoed != ours:
        return Drop(DropReason.VSS_MISMATCH, f"VSS {echoed!r} is not {ifname}'s {ours!r}")
    return None


def _named_address(msg: DhcpMessage) -> IPv4Address | None:
    """The address a request is about: ciaddr, else a REQUEST's option 50 (RFC 2131 §4.3.2)."""
    if msg.ciaddr != ZERO:
        return msg.ciaddr
    requested = msg.get(Opt.REQUESTED_ADDRESS)
    if msg.message_type == MessageType.REQUEST and requested is not None and len(requested) == 4:
        return IPv4Address(requested)
    return None


def _circuit_text(ifname: str, circuit: tuple[Any, ...]) -> str:
    """A circuit (ifindex, giaddr, circuit-id) for a person: the interface, and the downstream
    agent's giaddr and circuit-id where there are."""
    _, giaddr, circuit_id = circuit
    parts = [ifname, *([str(giaddr)] if giaddr != ZERO else []),
             *([circuit_id.decode("ascii", "backslashreplace")] if circuit_id else [])]
    return "/".join(parts)


def _circuit_of(interface: Interface, settings: InterfaceConfig) -> bytes:
    """The circuit-id this relay puts in option 82 for an interface: configured, else its name."""
    return settings.circuit_id or interface.name.encode()


def _on_link(interface: Interface, address: IPv4Address) -> bool:
    """Whether ``address`` is a host on one of the interface's subnets (not the interface's own,
    not a subnet's network or broadcast address: a reply unicast there would be reflected)."""
    if interface.owns(address):
        return False
    for own in interface.addresses:
        network = own.network
        if address in network and (
            network.prefixlen >= 31
            or address not in (network.network_address, network.broadcast_address)
        ):
            return True
    return False


def _is_subnet_broadcast(interface: Interface, address: IPv4Address) -> bool:
    return any(a.network.broadcast_address == address for a in interface.addresses)


def _delivery(msg: DhcpMessage) -> tuple[DeliveryMode, IPv4Address, bytes]:
    """RFC 1542 §4.1.2 and RFC 2131 §4.1: how a relayed reply reaches the client.

    The broadcast flag comes first: RFC 1542 §4.1.2 says the relay "SHOULD" then broadcast.
    """
    broadcast = (DeliveryMode.BROADCAST, LIMITED_BROADCAST, BROADCAST_MAC)
    # RFC 2131 §4.3.2: a NAK relayed through giaddr must be broadcast (the client may have
    # moved to another subnet and cannot receive unicast at its old address).
    if msg.message_type == MessageType.NAK or msg.broadcast:
        return broadcast
    if msg.ciaddr != ZERO:
        return DeliveryMode.UNICAST_CIADDR, msg.ciaddr, b""
    # A proxyDHCP offer (yiaddr 0) has no address to unicast to; nor has a non-Ethernet chaddr.
    if msg.yiaddr == ZERO or msg.htype != ETHERNET or msg.hlen != 6:
        return broadcast
    return DeliveryMode.UNICAST_CHADDR, msg.yiaddr, msg.hardware_address
