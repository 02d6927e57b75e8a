"""Why the relay dropped a packet: one enum, one counter and one log event per reason."""

from __future__ import annotations

import enum


class DropReason(enum.Enum):
    MALFORMED = "malformed"
    HOP_LIMIT = "hop-limit"
    UNTRUSTED_AGENT_OPTION = "untrusted-agent-option"
    AGENT_OPTION_DISCARD = "agent-option-discard"
    NOT_CLIENT_FACING = "not-client-facing"
    NO_HELPERS = "no-helpers"
    NO_INTERFACE_ADDRESS = "no-interface-address"
    INTERFACE_DOWN = "interface-down"
    UNKNOWN_INTERFACE = "unknown-interface"
    REPLY_FROM_NON_SERVER = "reply-from-non-server"
    UNKNOWN_GIADDR = "unknown-giaddr"
    UNKNOWN_CIRCUIT = "unknown-circuit"
    #: A reply whose circuit-id or link selection names another interface than its giaddr's.
    CIRCUIT_MISMATCH = "circuit-mismatch"
    #: A reply from a server's address that arrived on a client-facing side of the relay.
    REPLY_WRONG_INTERFACE = "reply-wrong-interface"
    #: A reply to unicast to a ciaddr that is not a host on the delivery interface's subnets.
    CIADDR_OFF_LINK = "ciaddr-off-link"
    #: RFC 6607: a reply carrying VSS-Control (its server ignored the VSS sub-option).
    VSS_NOT_UNDERSTOOD = "vss-not-understood"
    #: A reply whose echoed VSS sub-option is not the one added on its interface.
    VSS_MISMATCH = "vss-mismatch"
    REQUEST_FROM_SELF = "request-from-self"
    #: A request from a MAC over its rate (relay.throttle), while others are served.
    RATE_LIMITED_MAC = "rate-limited-mac"
    #: A request from a circuit (interface, downstream agent's circuit-id) over its rate.
    RATE_LIMITED_CIRCUIT = "rate-limited-circuit"
    OVERSIZE = "oversize"
    #: DHCPv6: a server-to-client message (Advertise, Reply, Reconfigure) from a client's side.
    NOT_RELAYABLE = "not-relayable"
    #: DHCPv6: a Relay-reply whose Interface-ID and link-address name no client-facing link.
    UNKNOWN_LINK = "unknown-link"
