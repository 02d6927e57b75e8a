"""relay/native/steplines.c against its specification, ``StepLines``: the same bytes for the same
ring records, whatever the C side renders itself and whatever it leaves to Python."""

from __future__ import annotations

import select
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from boothop.relay.compiled import STEP_LINES_SOURCE, build
from boothop.relay.datapath import EVENT, EVENT_DELIVERED, EVENT_THROTTLE_STARTED, STEP, Step
from boothop.relay.kernel import NativeStepLines
from boothop.relay.steplines import StepLines

HEADER = struct.Struct("<II")
LATENCY = struct.Struct("<q")
DISCARD = 0x40
INTERFACES = {7: "lan0", 9: 'we"ird\\\u00e9', 11: "uplink"}


@pytest.fixture(scope="module")
def native(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NativeStepLines]:
    if shutil.which("clang") is None:
        pytest.skip("clang is not installed (apt-get install clang)")
    yield NativeStepLines.load(tmp_path_factory.mktemp("native"))


def step_lines() -> StepLines:
    return StepLines(lambda index: INTERFACES.get(index, index),
                     lambda index: INTERFACES.get(index, f"#{index}"),
                     lambda: "2026-11-30T11:00:00.123456Z")


def event(op: int = 1, *, hlen: int = 6, hops: int = 1, kind: int = 1, xid: bytes = b"\1\2\3\4",
          giaddr: bytes = bytes((10, 71, 1, 1)), source: bytes = bytes(4), port: int = 68,
          mode: int = 0, servers: tuple[bytes, ...] = (bytes((10, 0, 0, 1)),), ifindex: int = 7,
          delivery: int = 0, destination: bytes = bytes(4), latency: int = -1,
          chaddr: bytes = bytes(range(16)), dropped: int = 0) -> bytes:
    return EVENT.pack(op, hlen, hops, kind, xid, giaddr, source, port, mode, len(servers),
                      ifindex, delivery, destination, b"".join(servers).ljust(32, b"\0"),
                      latency, chaddr, dropped)


def records(*events: bytes, discarded: frozenset[int] = frozenset()) -> bytes:
    return b"".join(HEADER.pack(len(each) | (DISCARD << 24 if n in discarded else 0), 0) + each
                    for n, each in enumerate(events))


def rendered(native: NativeStepLines, data: bytes) -> tuple[list[bytes], list[Step]]:
    """The writes ``native`` makes of ``data``, the Python lines in their place among them, and
    the steps it left to Python."""
    lines = step_lines()
    writes: list[bytes] = []
    left: list[Step] = []

    def python(step: Step) -> None:
        left.append(step)
        if step[0] <= EVENT_DELIVERED:
            writes.append(lines.render(step))

    def whole(rendered: memoryview, cuts: list[int]) -> None:
        writes.extend(bytes(rendered[start:end])
                      for start, end in zip([0, *cuts], [*cuts, len(rendered)], strict=True))

    native.render(data, lines, whole, python)
    return writes, left


def specified(*events: bytes) -> bytes:
    lines = step_lines()
    return b"".join(lines.render(STEP.unpack(each)) for each in events
                    if each[0] <= EVENT_DELIVERED)


addresses = st.binary(min_size=4, max_size=4)
flows = st.fixed_dictionaries({
    "op": st.sampled_from((1, 2)), "hops": st.integers(0, 255), "kind": st.integers(0, 255),
    "giaddr": addresses, "source": addresses, "port": st.integers(0, 65535),
    "mode": st.sampled_from((0, 1)), "ifindex": st.sampled_from((7, 9, 11, 99)),
    "delivery": st.sampled_from((7, 9, 98)),
    "servers": st.lists(addresses, min_size=1, max_size=8).map(tuple)})
own = st.fixed_dictionaries({
    "xid": st.binary(min_size=4, max_size=4), "hlen": st.integers(0, 255),
    "chaddr": st.binary(min_size=16, max_size=16), "destination": addresses,
    "latency": st.one_of(st.just(-1), st.integers(0, 10**6), st.integers(0, 2 * 10**12))})


@settings(max_examples=300, deadline=None)
@given(shared=st.lists(flows, min_size=1, max_size=4),
       steps=st.lists(st.tuples(st.integers(0, 3), own), min_size=1, max_size=40))
def test_the_native_lines_are_the_step_lines_byte_for_byte(
        native: NativeStepLines, shared: list[dict[str, object]],
        steps: list[tuple[int, dict[str, object]]]) -> None:
    """Generated batches, a few flows repeated: what the C side renders and what it leaves to
    StepLines, together, are StepLines's bytes, in order, in whole lines of at most PIPE_BUF."""
    events = [event(**shared[n % len(shared)], **fields) for n, fields in steps]  # type: ignore[arg-type]
    writes, left = rendered(native, records(*events))
    assert b"".join(writes) == specified(*events)
    assert all(len(data) <= select.PIPE_BUF and data.endswith(b"\n") for data in writes)
    assert len(left) == len(left_to_python(events))


def left_to_python(events: list[bytes]) -> list[bytes]:
    """The events the C side leaves to Python: each flow's first (its pieces come from
    StepLines), and replies of a latency of 10^12 ns or more."""
    seen: set[bytes] = set()
    left = []
    for each in events:
        flow = shared_flow(each)
        if flow not in seen or (each[0] == 2 and LATENCY.unpack_from(each, 64)[0] >= 10**12):
            left.append(each)
        seen.add(flow)
    return left


def shared_flow(event: bytes) -> bytes:
    """What identifies an event's flow: op, hops and type, the flow's fields, a request's
    servers."""
    return event[:1] + event[2:4] + event[8:28] + (event[32:64] if event[0] == 1 else b"")


def test_latencies_are_the_milliseconds_orjson_writes_of_round(native: NativeStepLines) -> None:
    """The latency's text: Python's round(ns / 1e6, 3) as orjson writes it, ties (0.0625 ms)
    and the limit (10^12 ns, left to Python) included."""
    latencies = [-1, 0, 1, 499, 500, 501, 1_500, 2_500, 62_500, 187_500, 999_500, 1_000_000,
                 10**9, 123_456_789, 10**12 - 1, 10**12, 2**62]
    latencies += [n * 7_919_993 % 10**11 for n in range(3_000)]
    latencies += [n * 1_000 + 500 for n in range(0, 10**9, 499_979)]  # midpoints
    latencies += [10**12 - 500, 10**12 - 1_500, 2**40 + 500 - 2**40 % 1000]
    events = [event(2, mode=1, delivery=7, destination=bytes((10, 71, 1, n % 256)),
                    latency=latency) for n, latency in enumerate(latencies)]
    writes, left = rendered(native, records(*events))
    assert b"".join(writes) == specified(*events)
    assert [step[7] for step in left] == [latencies[0], 10**12, 2**62, 2**40 + 500 - 2**40 % 1000]


def test_throttled_clients_go_to_python_in_their_place_and_discarded_records_nowhere(
        native: NativeStepLines) -> None:
    requests = [event(xid=bytes((0, 0, 0, n))) for n in range(6)]
    throttled = event(EVENT_THROTTLE_STARTED, chaddr=b"\xaa" * 16)
    data = records(*requests[:3], throttled, *requests[3:], discarded=frozenset({1, 5}))
    writes, left = rendered(native, data)
    kept = [requests[n] for n in (0, 2, 3, 5)]
    assert b"".join(writes) == specified(*kept)
    assert [step[0] for step in left] == [1, EVENT_THROTTLE_STARTED]
    assert left[1][-1].startswith(b"\xaa")
    assert b"".join(writes).count(b"\n") == 4


def test_flows_past_the_table_are_rendered_by_python(native: NativeStepLines) -> None:
    """A batch of more flows than the table holds: the further flows' lines are StepLines's,
    every line as specified."""
    flows = NativeStepLines.FLOWS + 36
    events = [event(giaddr=flow.to_bytes(4, "big"), xid=bytes((0, 0, again, 1)))
              for again in range(3) for flow in range(flows)]
    writes, left = rendered(native, records(*events))
    assert b"".join(writes) == specified(*events)
    assert len(left) == NativeStepLines.FLOWS + 36 * 3


def test_a_large_batch_goes_out_in_few_whole_writes(native: NativeStepLines) -> None:
    events = [event(xid=n.to_bytes(4, "big")) for n in range(2_000)]
    writes, left = rendered(native, records(*events))
    assert b"".join(writes) == specified(*events) and len(left) == 1
    assert all(len(data) <= select.PIPE_BUF and data.endswith(b"\n") for data in writes)
    assert len(writes) < 2 * len(b"".join(writes)) // select.PIPE_BUF + 2


def test_the_library_is_built_once_by_its_source_hash(tmp_path: Path) -> None:
    if shutil.which("clang") is None:
        pytest.skip("clang is not installed (apt-get install clang)")
    built = build(STEP_LINES_SOURCE, tmp_path)
    assert built.name.startswith("steplines-") and built.suffix == ".so"
    assert build(STEP_LINES_SOURCE, tmp_path) == built
    assert sorted(tmp_path.iterdir()) == [built]


def test_flows_differing_only_in_helpers_hops_or_type_stay_apart(
        native: NativeStepLines) -> None:
    """A request's line lists its helpers, every line its hops and type: flows alike but for
    those render apart."""
    two = (bytes((10, 0, 0, 1)), bytes((10, 0, 0, 2)))
    variants = [event(servers=two[:1]), event(servers=two[1:]), event(hops=2), event(kind=3),
                event(2, servers=two, delivery=7), event(2, mode=1, delivery=7)]
    events = variants * 3
    writes, left = rendered(native, records(*events))
    assert b"".join(writes) == specified(*events)
    assert len(left) == len(variants)
