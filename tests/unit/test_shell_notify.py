"""sd_notify in the shell ring, against a NOTIFY_SOCKET the test binds (as systemd does)."""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from boothop.relay.shell import SocketUnavailable, notify, reloading, run_daemon, watchdog_period


class Manager:
    """The service manager's end: an AF_UNIX datagram socket named by $NOTIFY_SOCKET."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def messages(self) -> list[str]:
        found = []
        while True:
            try:
                found.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return found


@pytest.fixture(params=["path", "abstract"])
def manager(request: pytest.FixtureRequest, tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[Manager]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        if request.param == "path":
            sock.bind(str(tmp_path / "notify"))
            monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
        else:
            name = f"boothop-test-{secrets.token_hex(6)}"
            sock.bind("\0" + name)
            monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        sock.setblocking(False)
        monkeypatch.delenv("WATCHDOG_USEC", raising=False)
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
        yield Manager(sock)


def test_notify_sends_one_datagram_of_lines(manager: Manager) -> None:
    assert notify("READY=1", "STATUS=x")
    assert manager.messages() == ["READY=1\nSTATUS=x"]


def test_notify_without_a_manager_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", "/nonexistent/notify")
    assert notify("READY=1") is False  # the daemon serves all the same


@pytest.mark.parametrize(("usec", "pid", "period"), [
    ("3000000", None, 1.5), ("3000000", "self", 1.5), ("3000000", "1", None), ("0", None, None),
    ("x", None, None), (None, None, None),
])
def test_watchdog_period_is_half_of_watchdog_usec_for_this_process(
        monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None,
        period: float | None) -> None:
    for key, value in (("WATCHDOG_USEC", usec),
                       ("WATCHDOG_PID", str(os.getpid()) if pid == "self" else pid)):
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)
    assert watchdog_period() == period


def test_ready_once_started_then_watchdog_then_stopping(
        manager: Manager, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "100000")

    async def main(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        notify("BINDING=1")  # what the daemon does before it serves
        await trio.sleep(0.1)
        task_status.started()
        await trio.sleep(0.32)

    assert run_daemon("test", main) == 0
    messages = manager.messages()
    assert messages[0] == "BINDING=1"
    assert messages[1].startswith("READY=1\nSTATUS=serving")
    assert messages[-1] == "STOPPING=1"
    # every 50 ms (half of 100 ms) for 320 ms: 7 on an idle machine; fewer is a late loop
    assert 4 <= messages.count("WATCHDOG=1") <= 8, messages
    assert len(messages) == 3 + messages.count("WATCHDOG=1")


def test_no_ready_when_main_fails_before_serving(
        manager: Manager, capsys: pytest.CaptureFixture[str]) -> None:
    async def main(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        raise SocketUnavailable(13, "binding UDP port 67 needs CAP_NET_BIND_SERVICE")

    assert run_daemon("test", main) == 1
    assert capsys.readouterr().err == "test: binding UDP port 67 needs CAP_NET_BIND_SERVICE\n"
    assert manager.messages() == ["STOPPING=1"]


def test_reloading_is_framed_by_ready(manager: Manager) -> None:
    with reloading():
        notify("X=1")
    reload, inner, ready = manager.messages()
    state, stamp = reload.split("\n")
    assert state == "RELOADING=1" and stamp.startswith("MONOTONIC_USEC=")
    # CLOCK_MONOTONIC in microseconds, as systemd compares it with its own
    assert 0 <= time.monotonic_ns() // 1000 - int(stamp.split("=")[1]) < 5_000_000
    assert (inner, ready) == ("X=1", "READY=1")
