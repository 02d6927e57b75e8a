"""The DHCPv6 server (RFC 8415): its sans-IO core (core, actions, lease), its [dhcp6] table and
its service."""
