"""shell.run_in_own_thread and shell.lowest_priority: the kernel step lines' thread."""

from __future__ import annotations

import os
import threading
import time

import pytest
import structlog
import trio

from boothop.relay.shell import lowest_priority, run_in_own_thread


async def test_the_target_runs_in_a_thread_made_for_it_and_its_error_is_raised() -> None:
    seen: list[threading.Thread] = []

    def target() -> None:
        seen.append(threading.current_thread())
        raise LookupError("from the thread")

    with pytest.raises(LookupError, match="from the thread"):
        await run_in_own_thread(target, "probe")
    assert seen[0] is not threading.main_thread() and seen[0].name == "probe"
    # A thread of trio's cache would be reused by the next call; ours is made anew.
    await run_in_own_thread(lambda: seen.append(threading.current_thread()), "probe")
    assert seen[1] is not seen[0]


async def test_a_cancelled_caller_returns_only_once_the_target_has() -> None:
    finished = threading.Event()

    def target() -> None:
        time.sleep(0.3)
        finished.set()

    with trio.move_on_after(0.05) as scope:
        await run_in_own_thread(target, "slow")
    assert scope.cancelled_caught and finished.is_set()


def test_lowest_priority_changes_the_calling_thread_alone() -> None:
    policies: list[int] = []

    def probe() -> None:
        lowest_priority(structlog.get_logger())
        policies.append(os.sched_getscheduler(0))

    thread = threading.Thread(target=probe)
    thread.start()
    thread.join()
    assert policies == [os.SCHED_IDLE]
    assert os.sched_getscheduler(0) != os.SCHED_IDLE
