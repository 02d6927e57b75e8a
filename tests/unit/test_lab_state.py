"""The lab's record of what it created: ``up`` records its namespaces, ``down`` removes exactly
those, ``reap_stale`` only recorded topologies of dead owners. Namespaces are faked: no root."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from boothop.relay.lab import topology
from boothop.relay.lab.topology import (
    Host,
    Lan,
    Port,
    Topology,
    TopologyError,
    reap_stale,
    record_file,
    recorded_namespaces,
    remove_recorded,
)


class FakeNetns:
    """Stands in for pyroute2.netns: a set of names."""

    def __init__(self, *names: str) -> None:
        self.names = set(names)
        self.created: list[str] = []
        self.removed: list[str] = []

    def listnetns(self) -> list[str]:
        return sorted(self.names)

    def create(self, name: str) -> None:
        assert name not in self.names
        self.names.add(name)
        self.created.append(name)

    def remove(self, name: str) -> None:
        self.names.discard(name)
        self.removed.append(name)


class Stop(Exception):
    """Raised where up() would start configuring: everything after is netlink, not state."""


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeNetns:
    netns = FakeNetns()
    monkeypatch.setattr(topology, "OWNER_DIR", tmp_path / "state")
    monkeypatch.setattr(topology, "netns", netns)
    monkeypatch.setattr(topology, "namespace_pids", lambda name: [])

    def stop(self: Topology, host: Host) -> None:
        raise Stop

    monkeypatch.setattr(Topology, "_configure_host_base", stop)
    return netns


def two_hosts(prefix: str = "bhu-1") -> Topology:
    return Topology(prefix, [Host("a"), Host("b")], [Lan("l", (Port("a", "e0"), Port("b", "e0")))])


def build(topo: Topology) -> None:
    with pytest.raises(Stop):
        topo.up()


def test_up_records_the_namespaces_it_creates(fake: FakeNetns) -> None:
    topo = two_hosts()
    build(topo)
    assert fake.created == ["bhu-1-sw", "bhu-1-a", "bhu-1-b"]
    assert recorded_namespaces("bhu-1") == fake.created
    state = json.loads(record_file("bhu-1").read_text())
    assert state == {"prefix": "bhu-1", "namespaces": fake.created}
    assert int((topology.OWNER_DIR / "bhu-1.pid").read_text()) == os.getpid()


def test_up_again_creates_nothing_and_keeps_the_record(fake: FakeNetns) -> None:
    build(two_hosts())
    build(two_hosts())
    assert len(fake.created) == 3
    assert recorded_namespaces("bhu-1") == ["bhu-1-sw", "bhu-1-a", "bhu-1-b"]


def test_up_recreates_a_recorded_namespace_that_went_missing(fake: FakeNetns) -> None:
    build(two_hosts())
    fake.names.discard("bhu-1-a")
    build(two_hosts())
    assert fake.created.count("bhu-1-a") == 2
    assert recorded_namespaces("bhu-1") == ["bhu-1-sw", "bhu-1-a", "bhu-1-b"]


def test_up_refuses_a_namespace_it_did_not_create(fake: FakeNetns) -> None:
    fake.names.add("bhu-1-a")
    with pytest.raises(TopologyError, match="bhu-1-a exists but was not created"):
        two_hosts().up()
    assert fake.created == [] and recorded_namespaces("bhu-1") == []
    assert not (topology.OWNER_DIR / "bhu-1.pid").exists()


def test_down_removes_only_what_was_recorded(fake: FakeNetns) -> None:
    fake.names.update({"bhu-1-handmade", "bhu-10-a", "other"})
    topo = two_hosts()
    build(topo)
    topo.down()
    assert sorted(fake.removed) == ["bhu-1-a", "bhu-1-b", "bhu-1-sw"]
    assert fake.listnetns() == ["bhu-1-handmade", "bhu-10-a", "other"]
    assert not record_file("bhu-1").exists()
    assert not (topology.OWNER_DIR / "bhu-1.pid").exists()


def test_down_kills_what_runs_in_recorded_namespaces_only(
    fake: FakeNetns, monkeypatch: pytest.MonkeyPatch
) -> None:
    killed: list[list[int]] = []
    pids = {"bhu-1-a": [101], "bhu-1-sw": [102], "bhu-1-handmade": [103]}
    monkeypatch.setattr(topology, "namespace_pids", lambda name: pids.get(name, []))
    monkeypatch.setattr(topology, "_kill_pids", killed.append)
    fake.names.add("bhu-1-handmade")
    build(two_hosts())
    remove_recorded("bhu-1")
    assert sorted(pid for group in killed for pid in group) == [101, 102]


def test_remove_recorded_without_a_record_removes_nothing(fake: FakeNetns) -> None:
    fake.names.update({"bhu-1-a", "bhu-1-sw"})
    assert remove_recorded("bhu-1") == []
    assert fake.removed == []


def test_reap_stale_removes_recorded_topologies_of_dead_owners_only(fake: FakeNetns) -> None:
    build(two_hosts("bhu-dead"))
    build(two_hosts("bhu-live"))
    build(two_hosts("other-dead"))
    dead = subprocess.Popen(["true"])
    dead.wait()
    for prefix in ("bhu-dead", "other-dead"):
        (topology.OWNER_DIR / f"{prefix}.pid").write_text(f"{dead.pid}\n")
    fake.names.add("bhu-unrecorded-a")  # no record, no owner: not the lab's to reap
    assert reap_stale("bhu") == ["bhu-dead"]
    assert not any(n.startswith("bhu-dead-") for n in fake.names)
    assert {"bhu-live-a", "other-dead-a", "bhu-unrecorded-a"} <= fake.names
    assert recorded_namespaces("bhu-live") and recorded_namespaces("other-dead")
