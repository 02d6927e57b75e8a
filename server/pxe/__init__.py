"""proxyDHCP (ports 67 and 4011): the sans-IO decisions, boot file choice and the trio shell."""
