"""``Tally``: a Counter with a dict's increment, counting as a Counter does."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from boothop.relay.counters import RelayCounters, Tally

keys = st.sampled_from(("a", "b", 3, None))


@given(steps=st.lists(st.tuples(keys, st.integers(-3, 5)), max_size=40),
       other=st.dictionaries(keys, st.integers(0, 5)))
def test_a_tally_counts_sums_and_reads_as_a_counter(
        steps: list[tuple[object, int]], other: dict[object, int]) -> None:
    tally: Tally[object] = Tally()
    counter: Counter[object] = Counter()
    for key, amount in steps:
        tally[key] += amount
        counter[key] += amount
    assert tally == counter and tally["missing"] == counter["missing"] == 0
    assert tally + Counter(other) == counter + Counter(other)
    assert sorted(tally.items(), key=repr) == sorted(counter.items(), key=repr)


def test_relay_counters_add_up_tallies() -> None:
    daemon, kernel = RelayCounters(), RelayCounters()
    daemon.received_on[3] += 2
    kernel.received_on[3] += 1
    kernel.forwarded["10.0.0.1"] += 4  # type: ignore[index]
    summed = daemon.plus(kernel)
    assert summed.received_on == {3: 3} and summed.forwarded == {"10.0.0.1": 4}
    assert isinstance(daemon.received_on, Tally)
