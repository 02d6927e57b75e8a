"""The long fuzz campaign: every target of tests/fuzz/targets.py under atheris, in parallel.

    python tests/bench/fuzz_campaign.py [--minutes 60] [--targets codec,relay,...]

Each target runs niced (``nice -n 19``) as ``tests/fuzz/run.py TARGET -max_total_time=...``, its
log in /tmp/fuzz-TARGET.log, its corpus kept in /tmp/fuzz-corpus-TARGET (a later campaign goes
on from it) and any crashing input in /tmp/fuzz-artifacts-TARGET/. At the end it prints, per
target, the inputs executed, libFuzzer's coverage (``cov:`` edges, ``ft:`` features), the corpus,
the time and the findings. ``--report`` only reads the logs of a campaign run earlier.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

RUN = Path(__file__).resolve().parent.parent / "fuzz" / "run.py"
TARGETS = ("codec", "codec6", "relay", "dhcp", "proxy", "tftp")
STATS = re.compile(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\S+)")
FINAL = re.compile(r"^stat::(\w+):\s+(\d+)")


def log_of(target: str) -> Path:
    return Path(f"/tmp/fuzz-{target}.log")


def start(target: str, seconds: int) -> subprocess.Popen[bytes]:
    corpus = Path(f"/tmp/fuzz-corpus-{target}")
    artifacts = Path(f"/tmp/fuzz-artifacts-{target}")
    corpus.mkdir(exist_ok=True)
    artifacts.mkdir(exist_ok=True)
    command = [
        "nice", "-n", "19", sys.executable, str(RUN), target,
        f"-max_total_time={seconds}", "-max_len=2048", "-print_final_stats=1",
        "-print_pcs=0", f"-artifact_prefix={artifacts}/", str(corpus),
    ]
    with log_of(target).open("wb") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


def report(target: str) -> str:
    text = log_of(target).read_text(errors="replace") if log_of(target).exists() else ""
    runs = cov = ft = 0
    corpus = "-"
    final: dict[str, int] = {}
    for line in text.splitlines():
        if match := STATS.match(line):
            runs, cov, ft, corpus = int(match[1]), int(match[2]), int(match[3]), match[4]
        elif match := FINAL.match(line):
            final[match[1]] = int(match[2])
    runs = final.get("number_of_executed_units", runs)
    seconds = final.get("average_exec_per_sec", 0) and runs / final["average_exec_per_sec"]
    crashes = sorted(Path(f"/tmp/fuzz-artifacts-{target}").glob("*"))
    findings = ", ".join(p.name for p in crashes) or "none"
    if "Uncaught Python exception" in text or "==ERROR" in text:
        findings += " (the log shows a crash)"
    return (f"{target:6} runs {runs:>11,}  cov {cov:>5}  ft {ft:>6}  corp {corpus:>12}  "
            f"{seconds:>7.0f} s  findings: {findings}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--report", action="store_true", help="only summarise the logs")
    args = parser.parse_args()
    chosen = args.targets.split(",")
    if not args.report:
        started = time.monotonic()
        running = [start(t, int(args.minutes * 60)) for t in chosen]
        for process in running:
            process.wait()
        print(f"campaign: {len(chosen)} targets, {time.monotonic() - started:.0f} s wall")
    for target in chosen:
        print(report(target))


if __name__ == "__main__":
    main()
