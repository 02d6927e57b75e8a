"""What booting one client came to: shared by the lab that boots and the report that shows it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ClientResult:
    name: str
    kind: str
    subnet: str
    mac: str
    address: str | None = None
    boot_file: str | None = None
    bytes_downloaded: int = 0
    seconds: float | None = None
    ok: bool = False
    detail: str = ""
    steps: list[str] = field(default_factory=list)
    #: A QEMU client's firmware boot chain (spec.CHAINS) and its timeline: seconds from power-on
    #: to the firmware's DHCP ACK ("dhcp"), the boot file ("boot"), the kernel and initramfs
    #: downloaded ("kernel") and the kernel's report ("report").
    chain: str | None = None
    timeline: dict[str, float | None] = field(default_factory=dict)
    #: An IPv6 chain's DHCPv6 bindings for its MAC (firmware, iPXE, kernel): the addresses the
    #: PXE host's log knows it by.
    addresses6: list[str] = field(default_factory=list)
