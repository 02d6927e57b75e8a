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
    REQUEST_FROM_SELF = "request-from-self"
    OVERSIZE = "oversize"
