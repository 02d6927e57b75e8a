"""The CI rule of tests/conftest.py, run on a throwaway test file with pytester."""

from __future__ import annotations

from pathlib import Path

import pytest

CONFTEST = (Path(__file__).resolve().parents[1] / "conftest.py").read_text()
TESTS = """
import pytest

def test_skips():
    pytest.skip("dhcrelay not installed")

def test_passes():
    pass

@pytest.mark.xfail(reason="known")
def test_expected_failure():
    assert False
"""
MODULE_SKIP = 'import pytest\npytest.skip("no namespaces here", allow_module_level=True)\n'


@pytest.mark.parametrize("ci", ["true", ""])
def test_a_skip_fails_in_ci_and_stays_a_skip_outside(pytester: pytest.Pytester,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      ci: str) -> None:
    monkeypatch.setenv("CI", ci)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_throwaway=TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider")
    if ci:
        result.assert_outcomes(passed=1, failed=1, xfailed=1)
        result.stdout.fnmatch_lines(["*skipped in CI*dhcrelay not installed*"])
    else:
        result.assert_outcomes(passed=1, skipped=1, xfailed=1)


@pytest.mark.parametrize("ci", ["true", ""])
def test_a_module_level_skip_fails_in_ci(pytester: pytest.Pytester,
                                         monkeypatch: pytest.MonkeyPatch, ci: str) -> None:
    monkeypatch.setenv("CI", ci)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_module_skip=MODULE_SKIP)
    result = pytester.runpytest("-p", "no:cacheprovider")
    if ci:
        result.assert_outcomes(errors=1)
        result.stdout.fnmatch_lines(["*skipped in CI*no namespaces here*"])
    else:
        result.assert_outcomes(skipped=1)
