"""A short, bounded pass of every atheris fuzz target (tests/fuzz/), as CI runs it.

Each target runs in its own process (atheris owns the process: libFuzzer exits on a finding) for
a few thousand inputs from the real captures; a finding fails the test with libFuzzer's report.
The long campaign is tests/bench/fuzz_campaign.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parent.parent / "fuzz"
sys.path.insert(0, str(FUZZ))

from targets import TARGETS, seeds  # noqa: E402

RUNS = 3000


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_seeds_hold_the_invariant(target: str) -> None:
    """Every seed runs through its target in-process, so a broken harness fails here first."""
    for seed in seeds(target):
        TARGETS[target](seed.data)


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_short_fuzzing_pass_finds_nothing(target: str, tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    result = subprocess.run(
        [sys.executable, str(FUZZ / "run.py"), target, f"-runs={RUNS}", "-seed=1",
         f"-artifact_prefix={tmp_path}/"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert f"#{RUNS}\tDONE" in result.stderr, result.stderr[-2000:]
