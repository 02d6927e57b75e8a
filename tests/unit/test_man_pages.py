"""The man pages .ci/man generates (what .ci/install puts in /usr/local/share/man/man8): one per
daemon, from the parser the command itself uses, every option documented."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from boothop.relay.cli import build_parser as relay_parser
from boothop.server.cli import build_parser as server_parser

SCRIPT = Path(__file__).parents[2] / ".ci" / "man"


def options(parser: argparse.ArgumentParser) -> set[str]:
    """Every option string of the parser and its subcommands' (argparse-manpage leaves out
    -h/--help)."""
    found: set[str] = set()
    for action in parser._actions:
        if not isinstance(action, argparse._HelpAction):
            found.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= options(sub)
    return found


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("man8")
    subprocess.run(["bash", str(SCRIPT), str(directory)], check=True, timeout=120,
                   env={**os.environ, "PYTHON": sys.executable})
    return directory


@pytest.mark.parametrize(("command", "parser"), [("boothop-relay", relay_parser),
                                                 ("boothop-server", server_parser)])
def test_each_command_has_a_section_8_page_naming_every_option(
        pages: Path, command: str, parser: Callable[[], argparse.ArgumentParser]) -> None:
    text = (pages / f"{command}.8").read_text()
    title = command.upper().replace("-", "\\-")
    assert text.startswith(f'.TH {title} "8" ')
    missing = {o for o in options(parser()) if o.replace("-", "\\-") not in text}
    assert missing == set()
