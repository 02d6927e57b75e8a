"""relay.netlink against a real kernel: the first dump, then live changes, in a namespace."""

from __future__ import annotations

import itertools
import secrets
import subprocess
from collections.abc import Callable, Iterator
from functools import partial
from ipaddress import IPv4Interface

import pytest
import trio
from conftest import require_system

from boothop.relay.interfaces import InterfaceTable
from boothop.relay.netlink import dump, follow_interfaces

pytestmark = pytest.mark.system


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@pytest.fixture
def namespace() -> Iterator[str]:
    require_system()
    name = f"bhn-nl-{secrets.token_hex(3)}"
    ip("netns", "add", name)
    try:
        ip("-n", name, "link", "add", "bhna0", "type", "veth", "peer", "name", "bhna1")
        ip("-n", name, "addr", "add", "10.71.50.1/24", "dev", "bhna0")
        ip("-n", name, "link", "set", "bhna0", "up")
        ip("-n", name, "link", "set", "bhna1", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10, check=False)


def test_dump_reads_links_addresses_and_state(namespace: str) -> None:
    ip("-n", namespace, "addr", "add", "10.71.51.1/24", "dev", "bhna0")
    ip("-n", namespace, "addr", "add", "10.71.50.2/24", "dev", "bhna0")  # a secondary
    table = dump(namespace)
    bhna0 = table.by_name("bhna0")
    assert bhna0 is not None and bhna0.up and len(bhna0.mac) == 6
    # Primary addresses first, so the engine's default giaddr is a primary address.
    assert bhna0.addresses[:2] == (IPv4Interface("10.71.50.1/24"), IPv4Interface("10.71.51.1/24"))
    assert set(bhna0.addresses) == {IPv4Interface(a) for a in
                                    ("10.71.50.1/24", "10.71.51.1/24", "10.71.50.2/24")}
    assert table.by_name("lo") is not None and not table.by_name("lo").up
    assert table.by_name("bhna1").addresses == ()


async def test_follower_sees_changes_without_restart(namespace: str) -> None:
    tables: list[InterfaceTable] = []
    changed = trio.Event()

    def on_change(table: InterfaceTable) -> None:
        nonlocal changed
        tables.append(table)
        changed.set()
        changed = trio.Event()

    async def until(predicate: Callable[[InterfaceTable], bool]) -> InterfaceTable:
        while not predicate(tables[-1]):
            await changed.wait()
        return tables[-1]

    async def run(*args: str) -> None:
        await trio.run_process(["ip", "-n", namespace, *args], capture_stdout=True)

    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            first = await nursery.start(partial(follow_interfaces, on_change, netns=namespace))
            assert tables == [first]
            assert first.by_name("bhna0").addresses == (IPv4Interface("10.71.50.1/24"),)

            await run("link", "add", "bhnb0", "type", "veth", "peer", "name", "bhnb1")
            await until(lambda t: t.by_name("bhnb0") is not None)

            await run("addr", "add", "10.71.52.1/24", "dev", "bhnb0")
            await run("link", "set", "bhnb0", "up")
            await run("link", "set", "bhnb1", "up")
            table = await until(lambda t: t.by_name("bhnb0").up and t.by_name("bhnb0").addresses)
            assert table.by_name("bhnb0").addresses == (IPv4Interface("10.71.52.1/24"),)
            assert table.by_address(IPv4Interface("10.71.52.1/24").ip).name == "bhnb0"

            await run("link", "set", "bhnb1", "down")  # carrier lost on bhnb0
            await until(lambda t: not t.by_name("bhnb0").up)

            await run("addr", "del", "10.71.50.1/24", "dev", "bhna0")
            await until(lambda t: t.by_name("bhna0").addresses == ())

            await run("link", "del", "bhnb0")
            await until(lambda t: t.by_name("bhnb0") is None)
            nursery.cancel_scope.cancel()
    # Every reported table differs from the one before it (no spurious callbacks).
    assert all(a != b for a, b in itertools.pairwise(tables))
