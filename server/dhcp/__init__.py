"""The DHCP/BOOTP server: configuration, the sans-IO core, reply addressing and the trio service."""
