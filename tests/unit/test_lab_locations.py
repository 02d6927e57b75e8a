"""Where the lab looks for its default lab file and boothop's commands, and where runs go."""

from __future__ import annotations

import sys
from importlib.resources import files
from pathlib import Path

import pytest

import boothop.config
from boothop.relay.lab import locations
from boothop.relay.lab.locations import default_lab_file, find_program, new_run_dir, runs_dir
from boothop.relay.lab.spec import load_lab


def test_the_default_lab_file_is_the_package_data(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # nothing relative to the current directory
    path = default_lab_file()
    assert path.is_absolute() and path.is_file()
    assert path == Path(str(files("boothop.config") / "lab.toml"))
    assert path.parent == Path(boothop.config.__file__).parent
    assert load_lab(path).clients


def _executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_programs_come_from_the_running_pythons_bin_before_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    venv_bin, other_bin = tmp_path / "venv" / "bin", tmp_path / "other"
    mine = _executable(venv_bin / "boothop-server")
    _executable(other_bin / "boothop-server")
    _executable(other_bin / "only-on-path")
    monkeypatch.setattr(sys, "executable", str(venv_bin / "python"))
    monkeypatch.setenv("PATH", str(other_bin))
    assert find_program("boothop-server") == str(mine)
    assert find_program("only-on-path") == str(other_bin / "only-on-path")
    assert find_program("nowhere-at-all") is None
    assert locations.program("nowhere-at-all") == "nowhere-at-all"


def test_a_non_executable_file_beside_python_is_not_a_program(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "boothop-relay").write_text("")
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert find_program("boothop-relay") is None


def test_runs_dir_follows_xdg_state_home_then_root_then_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert runs_dir() == tmp_path / "state" / "boothop-lab" / "runs"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setattr(locations.os, "geteuid", lambda: 0)
    assert runs_dir() == Path("/var/lib/boothop-lab/runs")
    monkeypatch.setattr(locations.os, "geteuid", lambda: 1000)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert runs_dir() == tmp_path / "home" / ".local" / "state" / "boothop-lab" / "runs"


def test_new_run_dirs_are_fresh_and_named_by_time_and_prefix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    monkeypatch.setattr(locations.time, "strftime", lambda fmt: "20250102-030405")
    first, second = new_run_dir("bhlab"), new_run_dir("bhlab")
    assert first == tmp_path / "boothop-lab" / "runs" / "20250102-030405-bhlab"
    assert second == first.with_name("20250102-030405-bhlab.2")
    assert first.is_dir() and second.is_dir() and not any(first.iterdir())
