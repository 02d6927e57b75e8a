"""Run programs inside network namespaces, record their PIDs, stop them by PID.

Programs start through ``ip netns exec`` (which also bind-mounts ``/etc/netns/<ns>`` and a fresh
``/sys``), or with no namespace in the caller's (a program that enters one itself), in a session of
their own so that the PID is also the process group: stopping sends SIGTERM to that group, then
SIGKILL after a grace period. Output goes to ``<log_dir>/<name>.log``. Programs run in the runner's
``cwd`` (by default the caller's), where any file they write unasked lands.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType

IP = "/usr/sbin/ip" if os.path.exists("/usr/sbin/ip") else "/sbin/ip"


def exit_on_sigterm() -> None:
    """Make SIGTERM raise SystemExit in the main thread, so that the ``with`` blocks owning
    namespaces and processes clean up as they do on Ctrl-C. Needed because a program started in
    the background by a non-interactive shell (``cmd &``, a CI step, ``timeout``) inherits
    SIGINT ignored: SIGTERM is then the only polite way to stop it, and its default action
    would leave every namespace and child behind.

    Only in the process that called it: a fork inherits the handler, and pyroute2 forks helpers
    (a namespace's creation, a socket opened in one) that it stops with SIGTERM. Raising
    SystemExit there would unwind a copy of the caller's stack in the fork, running the
    caller's clean-up: a half-built topology's ``down`` removed the caller's namespaces and
    their record, so the caller found a namespace gone and left the rest behind."""
    owner = os.getpid()

    def stop(signum: int, _frame: FrameType | None) -> None:
        if os.getpid() != owner:
            os._exit(128 + signum)
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def udp_counters(namespace: str, family: int = 4) -> dict[str, int]:
    """A namespace's UDP counters, by /proc/net/snmp's names (InDatagrams, RcvbufErrors, ...);
    ``family`` 6: UDP over IPv6's, from /proc/net/snmp6, by the same names without ``Udp6``.
    The file is read inside the namespace (``ip netns exec``): /proc/net is the reader's."""
    if family == 6:
        text = subprocess.run(in_netns(namespace, ["cat", "/proc/net/snmp6"]),
                              capture_output=True, text=True, check=True, timeout=10).stdout
        return {name.removeprefix("Udp6"): int(value) for name, value in
                (line.split() for line in text.splitlines() if line.startswith("Udp6"))}
    return snmp_counters(namespace, "Udp")


def snmp_counters(namespace: str, group: str) -> dict[str, int]:
    """A namespace's IPv4 counters of one /proc/net/snmp group (Ip, Icmp, Udp, ...) by name,
    read inside the namespace (``ip netns exec``): /proc/net is the reader's."""
    text = subprocess.run(in_netns(namespace, ["cat", "/proc/net/snmp"]), capture_output=True,
                          text=True, check=True, timeout=10).stdout
    header, values = (line.split() for line in text.splitlines()
                      if line.startswith(f"{group}:"))
    return dict(zip(header[1:], map(int, values[1:]), strict=True))


def in_netns(namespace: str, argv: Sequence[str]) -> list[str]:
    """The command line that runs ``argv`` inside ``namespace``."""
    return [IP, "netns", "exec", namespace, *argv]


@dataclasses.dataclass(slots=True)
class Process:
    name: str
    namespace: str | None
    argv: tuple[str, ...]
    log: Path
    popen: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait(self, timeout: float) -> int:
        """Wait for the program to exit by itself; raises subprocess.TimeoutExpired."""
        return self.popen.wait(timeout)


class ProcessRunner:
    """Starts programs in namespaces and guarantees they are stopped (``stop_all`` / ``with``)."""

    def __init__(self, log_dir: Path, grace: float = 2.0, cwd: Path | None = None) -> None:
        self.log_dir = Path(log_dir)
        self.grace = grace
        self.cwd = cwd
        self.processes: list[Process] = []

    def start(
        self,
        namespace: str | None,
        argv: Sequence[str],
        name: str,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Process:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{name}.log"
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        with open(log, "wb") as out:
            popen = subprocess.Popen(
                in_netns(namespace, argv) if namespace else list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=full_env,
                cwd=cwd or self.cwd,
                start_new_session=True,
            )
        process = Process(name, namespace, tuple(argv), log, popen)
        self.processes.append(process)
        return process

    def run(
        self, namespace: str, argv: Sequence[str], timeout: float
    ) -> subprocess.CompletedProcess[str]:
        """Run a short command to completion inside a namespace, output captured."""
        return subprocess.run(
            in_netns(namespace, argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            cwd=self.cwd,
        )

    def stop(self, process: Process, grace: float | None = None) -> int:
        """SIGTERM the process group, SIGKILL it after ``grace`` seconds; return the exit code."""
        grace = self.grace if grace is None else grace
        if process.popen.poll() is None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                process.popen.wait(grace)
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                process.popen.wait(grace)
        # Children left in the group (a forked daemon) go too.
        _signal_group(process.pid, signal.SIGKILL)
        return process.popen.returncode

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            self.stop(process)

    def __enter__(self) -> ProcessRunner:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def wait_for(predicate: Callable[[], object], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate()`` until it is true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
