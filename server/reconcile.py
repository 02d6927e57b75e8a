"""Check the lease database against the configuration, and repair it (the first field report).

The configuration is the source of truth for reservations: after the database is lost or edited,
every reservation is restored with its *configured* MAC/client-id, never one recovered from a
stale row. Leases that no longer fit the configuration are removed. Pure: rows in, a plan out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address

from boothop.server.dhcp.config import DhcpConfig, Reservation, Subnet
from boothop.server.dhcp.lease import Lease, LeaseState, client_key
from boothop.server.dhcp6.config import Dhcp6Config, Reservation6, Subnet6
from boothop.server.dhcp6.lease import Lease6


@dataclass(frozen=True)
class Finding:
    address: IPv4Address | IPv6Address
    problem: str
    action: str


@dataclass
class Plan:
    findings: list[Finding] = field(default_factory=list)
    upserts: list[Lease] = field(default_factory=list)
    deletes: list[IPv4Address] = field(default_factory=list)

    @property
    def changes(self) -> bool:
        return bool(self.upserts or self.deletes)


def reservation_key(reservation: Reservation) -> str:
    """The client key the core computes for this reservation's client (MAC as Ethernet)."""
    return client_key(reservation.client_id, 1, reservation.mac or b"")


def _owned_by(lease: Lease, reservation: Reservation) -> bool:
    if reservation.client_id is not None and lease.client_id == reservation.client_id:
        return True
    return reservation.mac is not None and lease.mac == reservation.mac


def _reserved_row(subnet: Subnet, reservation: Reservation, now: float) -> Lease:
    return Lease(reservation.address, LeaseState.RESERVED, reservation_key(reservation),
                 reservation.mac or b"", reservation.client_id, str(subnet.network), now, None,
                 reservation.hostname)


def plan_reconcile(config: DhcpConfig, leases: list[Lease], now: float) -> Plan:
    plan = Plan()
    by_address = {lease.address: lease for lease in leases}
    reserved: dict[IPv4Address, tuple[Subnet, Reservation]] = {}
    for subnet in config.subnets:
        for reservation in subnet.reservations:
            reserved[reservation.address] = (subnet, reservation)

    for address, (subnet, reservation) in reserved.items():
        row = by_address.get(address)
        if row is None:
            plan.findings.append(Finding(address, "reservation missing from the database",
                                         "restored with its configured identity"))
            plan.upserts.append(_reserved_row(subnet, reservation, now))
        elif not _owned_by(row, reservation) or row.subnet != str(subnet.network):
            plan.findings.append(
                Finding(
                    address,
                    f"row belongs to {row.mac.hex(':') or row.client_key} ({row.state.value}), "
                    f"not the reserved client",
                    "replaced by the reservation",
                )
            )
            plan.upserts.append(_reserved_row(subnet, reservation, now))

    for lease in leases:
        if lease.address in reserved:
            continue
        home = next((s for s in config.subnets if lease.address in s.network), None)
        if home is None or not home.in_pool(lease.address):
            plan.findings.append(
                Finding(lease.address, f"{lease.state.value} lease outside every pool", "removed")
            )
            plan.deletes.append(lease.address)
            continue
        if lease.state is LeaseState.RESERVED:
            plan.findings.append(Finding(lease.address, "reservation row no longer configured",
                                         "removed"))
            plan.deletes.append(lease.address)
            continue
        own = next((r for r in home.reservations if _owned_by(lease, r)), None)
        if own is not None and lease.is_active(now):
            plan.findings.append(Finding(
                lease.address, f"client {lease.mac.hex(':')} has reservation {own.address} but "
                "holds a pool lease", "removed (the client gets its reservation)"))
            plan.deletes.append(lease.address)
    return plan


@dataclass
class Plan6:
    """The DHCPv6 half of a reconcile: the same findings, rows of the leases6 table."""

    findings: list[Finding] = field(default_factory=list)
    upserts: list[Lease6] = field(default_factory=list)
    deletes: list[IPv6Address] = field(default_factory=list)

    @property
    def changes(self) -> bool:
        return bool(self.upserts or self.deletes)


def _owned_by6(lease: Lease6, reservation: Reservation6) -> bool:
    if reservation.duid is not None and lease.duid == reservation.duid:
        return True
    return reservation.mac is not None and lease.mac == reservation.mac


def _reserved_row6(subnet: Subnet6, reservation: Reservation6, now: float) -> Lease6:
    """A RESERVED row: the address and its configured owner (a MAC-only reservation has no DUID
    yet), holding nothing until the client binds it."""
    return Lease6(reservation.address, LeaseState.RESERVED, reservation.duid or b"", 0,
                  subnet.name, now, None, reservation.mac)


def plan_reconcile6(config: Dhcp6Config, leases: list[Lease6], now: float) -> Plan6:
    """The rules of ``plan_reconcile`` for DHCPv6: every reservation has its row, owned by its
    configured DUID or link-layer address; rows outside every pool go, and so do reservation rows
    no longer configured and pool bindings of a client that has a reservation."""
    plan = Plan6()
    by_address = {lease.address: lease for lease in leases}
    reserved = {r.address: (subnet, r) for subnet in config.subnets for r in subnet.reservations}
    for address, (subnet, reservation) in reserved.items():
        row = by_address.get(address)
        if row is None:
            plan.findings.append(Finding(address, "reservation missing from the database",
                                         "restored with its configured identity"))
            plan.upserts.append(_reserved_row6(subnet, reservation, now))
        elif not _owned_by6(row, reservation) or row.subnet != subnet.name:
            plan.findings.append(Finding(address, f"row belongs to DUID {row.duid.hex(':')} "
                                         f"({row.state.value}), not the reserved client",
                                         "replaced by the reservation"))
            plan.upserts.append(_reserved_row6(subnet, reservation, now))
    for lease in leases:
        if lease.address in reserved:
            continue
        home = next((s for s in config.subnets if lease.address in s.prefix), None)
        if home is None or not home.in_pool(lease.address):
            plan.findings.append(Finding(lease.address, f"{lease.state.value} lease outside "
                                         "every pool", "removed"))
            plan.deletes.append(lease.address)
        elif lease.state is LeaseState.RESERVED:
            plan.findings.append(Finding(lease.address, "reservation row no longer configured",
                                         "removed"))
            plan.deletes.append(lease.address)
        elif lease.is_active(now) and any(_owned_by6(lease, r) for r in home.reservations):
            plan.findings.append(Finding(lease.address, f"DUID {lease.duid.hex(':')} has a "
                                         "reservation but holds a pool lease",
                                         "removed (the client gets its reservation)"))
            plan.deletes.append(lease.address)
    return plan


def format_plan(plan: Plan | Plan6, dry_run: bool) -> str:
    if not plan.findings:
        return "reconcile: database agrees with the configuration, nothing to change"
    verb = "would be" if dry_run else "was"
    lines = [
        f"reconcile: {len(plan.findings)} finding(s)"
        f"{' (dry run, nothing changed)' if dry_run else ''}"
    ]
    for finding in plan.findings:
        lines.append(f"  {finding.address}: {finding.problem}; {verb} {finding.action}")
    return "\n".join(lines)
