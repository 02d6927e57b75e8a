"""The TFTP server: sans-IO core (packet, negotiation, admission; transfer for reads, write for
uploads, with source/sink as their file interfaces), path safety (paths) and the trio service."""
