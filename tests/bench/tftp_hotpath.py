"""Benchmark (not a test): instructions per lock-step block in boothop's TFTP server, by callgrind.

    python3 tests/bench/tftp_hotpath.py [--blocks 4000] [--blksize 512]

The real server (``python -m boothop.server run``, as tftp_throughput.py runs it) under callgrind on
loopback serves one download by curl (outside valgrind) of ``--blocks`` lock-step blocks, and in
a second run one of a fifth as many; the totals are subtracted, so start-up, imports, the
request and the transfer's set-up cancel out and what remains is the per-block path: the
transfer thread's recv, the core, the file read, the send. callgrind counts instructions, not
seconds, so the figure does not follow the machine's load, as tests/bench/tftp_throughput.py's
MiB/s do. Needs valgrind and curl.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tftp_throughput import free_port, wait_port


def instructions(blocks: int, blksize: int) -> int:
    """callgrind's instruction total for a server run that serves one ``blocks``-block file."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # One octet short of whole blocks: the last block is short, no empty block to send.
        (root / "file.bin").write_bytes(os.urandom(blocks * blksize - 1))
        (root / "probe").write_bytes(b"x")
        port = free_port()
        config = root / "bench.toml"
        config.write_text(f'[tftp]\nroot = "{root}"\n'
                          f'address = "127.0.0.1"\nport = {port}\nmax_blksize = 65464\n')
        out = root / "callgrind.out"
        server = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
             "-m", "boothop.server", "run", "-c", str(config)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            wait_port(port, limit=300)
            argv = ["curl", "-s", "--max-time", "900", "-o", "/dev/null",
                    f"tftp://127.0.0.1:{port}/file.bin"]
            if blksize != 512:
                argv[4:4] = ["--tftp-blksize", str(blksize)]
            subprocess.run(argv, check=True, timeout=1000)
            time.sleep(1)  # the last ACK handled
            server.send_signal(signal.SIGTERM)
            _, stderr = server.communicate(timeout=300)
        finally:
            if server.poll() is None:  # our own child, by PID
                server.kill()
                server.wait()
    found = re.search(r"Collected : (\d+)", stderr)
    assert found, stderr[-2000:]
    return int(found.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", type=int, default=4000)
    parser.add_argument("--blksize", type=int, default=512)
    args = parser.parse_args()
    for tool in ("valgrind", "curl"):
        if shutil.which(tool) is None:
            print(f"{tool} not installed", file=sys.stderr)
            return 2
    small = args.blocks // 5
    per_block = (instructions(args.blocks, args.blksize)
                 - instructions(small, args.blksize)) / (args.blocks - small)
    print(f"tftp hot path: {per_block:,.0f} instructions per {args.blksize}-octet lock-step "
          f"block (callgrind, {args.blocks} - {small} blocks, curl)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
