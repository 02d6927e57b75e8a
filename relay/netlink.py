"""Interfaces and their IPv4 and IPv6 addresses from the kernel, followed live (pyroute2 only here).

pyroute2's async API is asyncio-only, so dumps run its sync ``IPRoute`` in a worker thread.
Live changes arrive on a plain rtnetlink socket subscribed to link and address groups; trio
waits on its file descriptor, and any event (or ENOBUFS: events were lost) triggers a debounced
full re-dump. The messages themselves are not parsed: the dump is the truth.
"""

from __future__ import annotations

import contextlib
import errno
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping
from ipaddress import IPv4Interface, IPv6Interface
from typing import Any

import structlog
import trio
from pyroute2 import IPRoute, NetlinkError
from pyroute2 import netns as pyroute2_netns

from .interfaces import Interface, InterfaceTable

RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV6_IFADDR = 0x100
IFF_UP = 0x1
IFF_RUNNING = 0x40
IFA_F_SECONDARY = 0x01
#: How long to wait after an event for the rest of a burst (an address flush, a link bounce).
DEBOUNCE = 0.05
RETRY_AFTER_FAILURE = 1.0

log = structlog.get_logger("relay.netlink")


@contextlib.contextmanager
def _in_netns(netns: str | None) -> Iterator[None]:
    """Switch the calling thread into ``netns`` (for tests that run the shell in-process)."""
    if netns is None:
        yield
        return
    pyroute2_netns.pushns(netns)
    try:
        yield
    finally:
        pyroute2_netns.popns()


def open_event_socket(netns: str | None = None) -> socket.socket:
    """A non-blocking rtnetlink socket receiving link and address events."""
    with _in_netns(netns):
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024 * 1024)
        sock.bind((0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def table_from(links: Iterable[Mapping[str, Any]],
               addresses: Iterable[Mapping[str, Any]]) -> InterfaceTable:
    """Build the snapshot from dumped links and addresses (dicts in pyroute2's shape)."""
    by_index: dict[int, list[tuple[bool, IPv4Interface]]] = {}
    by_index6: dict[int, list[IPv6Interface]] = {}
    for address in addresses:
        local = address.get("IFA_LOCAL") or address.get("IFA_ADDRESS")
        if local is None:
            continue
        if ":" in local:
            by_index6.setdefault(address["index"], []).append(
                IPv6Interface(f"{local}/{address['prefixlen']}"))
            continue
        secondary = bool((address.get("IFA_FLAGS") or address.get("flags") or 0) & IFA_F_SECONDARY)
        by_index.setdefault(address["index"], []).append(
            (secondary, IPv4Interface(f"{local}/{address['prefixlen']}"))
        )
    interfaces = []
    for link in links:
        flags = link.get("flags", 0)
        mac = link.get("IFLA_ADDRESS") or ""
        # Primary addresses first (the kernel's order within each group is kept): the engine
        # takes the first as giaddr unless one is configured.
        owned = sorted(by_index.get(link["index"], []), key=lambda item: item[0])
        interfaces.append(Interface(
            index=link["index"],
            name=link.get("IFLA_IFNAME") or f"if{link['index']}",
            up=bool(flags & IFF_UP) and bool(flags & IFF_RUNNING),
            addresses=tuple(a for _, a in owned),
            mac=bytes.fromhex(mac.replace(":", "")) if mac else b"",
            addresses6=tuple(by_index6.get(link["index"], ())),
        ))
    return InterfaceTable.of(interfaces)


def dump(netns: str | None = None) -> InterfaceTable:
    """Blocking: the current links and addresses (run it in a worker thread)."""
    kwargs = {"netns": netns} if netns is not None else {}
    with IPRoute(**kwargs) as ipr:
        links = [_plain(link) for link in ipr.get_links()]
        addresses = [_plain(address) for family in (socket.AF_INET, socket.AF_INET6)
                     for address in ipr.get_addr(family=family)]
    return table_from(links, addresses)


def _plain(message: Any) -> dict[str, Any]:
    """The fields table_from reads, out of a pyroute2 message."""
    return {
        "index": message["index"],
        "flags": message["flags"],
        "prefixlen": message.get("prefixlen"),
        "IFLA_IFNAME": message.get("IFLA_IFNAME"),
        "IFLA_ADDRESS": message.get("IFLA_ADDRESS"),
        "IFA_LOCAL": message.get("IFA_LOCAL"),
        "IFA_ADDRESS": message.get("IFA_ADDRESS"),
        "IFA_FLAGS": message.get("IFA_FLAGS"),
    }


def log_changes(old: InterfaceTable, new: InterfaceTable) -> None:
    """Info events for what appeared, changed or disappeared between two snapshots."""
    for interface in new:
        before = old.by_index(interface.index)
        if interface.up and (before is None or not before.up):
            log.info("relay.interface.up", ifname=interface.name, ifindex=interface.index)
        elif before is not None and before.up and not interface.up:
            log.info("relay.interface.down", ifname=interface.name, ifindex=interface.index)
        if before is not None and before.name != interface.name:
            log.info("relay.interface.renamed", ifindex=interface.index, old=before.name,
                     ifname=interface.name)
        old_addresses: set[IPv4Interface | IPv6Interface] = (
            {*before.addresses, *before.addresses6} if before else set())
        for address in (*interface.addresses, *interface.addresses6):
            if address not in old_addresses:
                log.info("relay.address.added", ifname=interface.name, address=str(address))
        for address in old_addresses - {*interface.addresses, *interface.addresses6}:
            log.info("relay.address.removed", ifname=interface.name, address=str(address))
    for before in old:
        if new.by_index(before.index) is None:
            for address in (*before.addresses, *before.addresses6):
                log.info("relay.address.removed", ifname=before.name, address=str(address))
            log.info("relay.interface.down", ifname=before.name, ifindex=before.index,
                     removed=True)


def _drain(sock: socket.socket) -> bool:
    """Read every queued event; True if any arrived or some were lost (ENOBUFS)."""
    seen = False
    while True:
        try:
            sock.recv(65536)
        except BlockingIOError:
            return seen
        except OSError as error:
            if error.errno != errno.ENOBUFS:
                raise
            log.info("relay.netlink.overrun")
        seen = True


async def follow_interfaces(
    on_change: Callable[[InterfaceTable], None],
    *,
    netns: str | None = None,
    debounce: float = DEBOUNCE,
    task_status: trio.TaskStatus[InterfaceTable] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Dump, report the table, then follow changes until cancelled.

    Started with ``nursery.start``: it is ready once the first table was handed to
    ``on_change``. Subscribing before the first dump means no change can fall in between.
    """
    sock = open_event_socket(netns)
    with sock:
        table = await trio.to_thread.run_sync(dump, netns, abandon_on_cancel=True)
        log_changes(InterfaceTable(), table)
        on_change(table)
        task_status.started(table)
        while True:
            await trio.lowlevel.wait_readable(sock)
            if not _drain(sock):
                continue
            new = await _redump(sock, netns, debounce)
            if new != table:
                log_changes(table, new)
                table = new
                on_change(table)


async def _redump(sock: socket.socket, netns: str | None, debounce: float) -> InterfaceTable:
    """After a burst of events has settled, dump again (retrying while the dump fails)."""
    while True:
        await trio.sleep(debounce)
        _drain(sock)
        try:
            return await trio.to_thread.run_sync(dump, netns, abandon_on_cancel=True)
        except Exception as error:  # a failed dump must not stop the relay
            log.error("relay.netlink.dump_failed", error=repr(error))
            await trio.sleep(RETRY_AFTER_FAILURE)


# -- the kernel datapath's attachment (tc clsact ingress, a direct-action bpf filter) ----------

#: The name our filters carry: how a stale one (left by a killed daemon) is found at start.
TC_FILTER_NAME = "boothop-relay"
TC_INGRESS = "ffff:fff2"
#: The filter's priority on the clsact ingress hook (tc's "pref").
TC_PRIORITY = 0xB007


def attach_program(ifindex: int, fd: int) -> None:
    """Attach the program ``fd`` on ``ifindex``'s ingress (adding the clsact qdisc if none),
    replacing a filter of ours already there (an update is atomic: no packet misses both)."""
    with IPRoute() as ipr:
        try:
            ipr.tc("add", "clsact", ifindex)
        except NetlinkError as error:
            if error.code != errno.EEXIST:
                raise
        ipr.tc("replace-filter", "bpf", ifindex, ":1", fd=fd, name=TC_FILTER_NAME,
               parent=TC_INGRESS, classid=1, direct_action=True, prio=TC_PRIORITY)


def detach_program(ifindex: int) -> None:
    """Remove our filter from ``ifindex`` (the clsact qdisc stays: others may use it)."""
    with IPRoute() as ipr:
        _detach(ipr, ifindex)


def _detach(ipr: IPRoute, ifindex: int) -> bool:
    removed = False
    try:
        filters = ipr.get_filters(ifindex, parent=TC_INGRESS)
    except NetlinkError:
        return False  # no clsact qdisc, or the link is gone
    for message in filters:
        options = message.get_attr("TCA_OPTIONS")
        name = options.get_attr("TCA_BPF_NAME") if options is not None else None
        if name == TC_FILTER_NAME:
            with contextlib.suppress(NetlinkError):
                ipr.tc("del-filter", "bpf", ifindex, ":1", parent=TC_INGRESS,
                       prio=message["info"] >> 16)
                removed = True
    return removed


def detach_stale() -> list[str]:
    """Remove our filters from every interface (what a daemon killed before its exit left);
    the names of the interfaces they were on."""
    cleaned = []
    with IPRoute() as ipr:
        for link in ipr.get_links():
            if _detach(ipr, link["index"]):
                cleaned.append(link.get_attr("IFLA_IFNAME"))
    return cleaned
