"""CPU time as /proc counts it, for the benchmarks: a process's (all its threads), and a CPU's
idle time, against which the time it was busy is taken (the interrupts and kernel threads it ran
for a process, which no process's own time holds)."""

from __future__ import annotations

import os
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU time of a process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK  # utime, stime (fields 14, 15)


def idle_seconds(cpu: str) -> float:
    """Time ``cpu`` was idle or, wanting to run, kept from running by the hypervisor (steal),
    since boot: /proc/stat's idle and iowait are exact here (NO_HZ: from idle entry and exit,
    an interrupt's time not in them), steal is tick-sampled."""
    fields = next(line.split() for line in Path("/proc/stat").read_text().splitlines()
                  if line.split()[0] == f"cpu{cpu}")
    return (int(fields[4]) + int(fields[5]) + int(fields[8])) / CLK_TCK
