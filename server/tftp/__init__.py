"""The TFTP server: sans-IO transfer core (packet, negotiation, transfer, admission), path
safety (paths) and the trio service (service)."""
