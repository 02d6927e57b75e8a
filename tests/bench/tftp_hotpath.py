"""Benchmark (not a test): instructions per lock-step block in boothop's TFTP server, by callgrind.

    python3 tests/bench/tftp_hotpath.py [--blocks 4000] [--blksize 512] [--queued [--python]]

The real server (``python -m boothop.server run``, as tftp_throughput.py runs it) under callgrind on
loopback serves one download by curl (outside valgrind) of ``--blocks`` lock-step blocks, and in
a second run one of a fifth as many; the totals are subtracted, so start-up, imports, the
request and the transfer's set-up cancel out and what remains is the per-block path: the
transfer thread's recv, the core, the file read, the send. callgrind counts instructions, not
seconds, so the figure does not follow the machine's load, as tests/bench/tftp_throughput.py's
MiB/s do; it still varies by some 5 % between runs (when each ACK arrives, before or after the
thread blocks, changes the path through the GIL). ``--queued`` counts the transfer thread's
loop alone, reproducible to 0.5 %: in one process under callgrind, ``_serve_transfer`` serves a
socket into which a child process has queued every ACK beforehand (no wake-ups; the DATA
overflow the client's socket), in the C loop the server runs lock-step reads in
(server/tftp/lockstep.c) or, with ``--python``, in the Python loop alone. Needs valgrind and
curl.
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


def queued_instructions(blocks: int, blksize: int, python: bool) -> int:
    """callgrind's total for ``--serve-queued``: this script serving ``blocks`` queued ACKs."""
    run = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
         __file__, "--serve-queued", str(blocks), str(blksize), str(int(python))],
        capture_output=True, text=True, timeout=900, check=True,
        env={**os.environ, "PYTHONHASHSEED": "0"})
    found = re.search(r"Collected : (\d+)", run.stderr)
    assert found, run.stderr[-2000:]
    return int(found.group(1))


def serve_queued(blocks: int, blksize: int, python: bool) -> None:
    """One lock-step read of ``blocks`` blocks by the transfer thread's loop, every ACK queued
    on its socket before it runs (``--queued``), with the C loop as the server runs it, or
    without (``--python``)."""
    import socket
    import threading

    from boothop.server.tftp import native
    from boothop.server.tftp.negotiation import TransferParams
    from boothop.server.tftp.paths import open_file
    from boothop.server.tftp.service import _serve_transfer
    from boothop.server.tftp.transfer import Outcome, ReadTransfer

    with tempfile.TemporaryDirectory() as root, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        (Path(root) / "file.bin").write_bytes(os.urandom(blocks * blksize - 1))
        server.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE: every ACK fits
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)  # the DATA are dropped
        server.bind(("127.0.0.1", 0))
        client.bind(("127.0.0.1", 0))
        server.connect(client.getsockname())
        client.connect(server.getsockname())
        # Sent from a child (not counted), on the client's socket, which stays open here.
        subprocess.run([sys.executable, "-c",
                        "import socket, struct, sys\n"
                        "s = socket.socket(fileno=int(sys.argv[1]))\n"
                        "for n in range(1, int(sys.argv[2]) + 1):\n"
                        "    s.send(struct.pack('>HH', 4, n & 0xFFFF))\n"
                        "s.detach()\n", str(client.fileno()), str(blocks)],
                       pass_fds=[client.fileno()], check=True, timeout=120)
        transfer = ReadTransfer(client.getsockname(), open_file(root, "file.bin"),
                                TransferParams(blksize=blksize), {})
        loop = None if python else native.LockStepLoop.open(native.load(), server.fileno(),
                                                             transfer)
        _serve_transfer(server, transfer, threading.Event(), lambda: None, loop)
        assert transfer.outcome is Outcome.COMPLETED, transfer.outcome
        assert transfer.bytes_sent == blocks * blksize - 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", type=int, default=4000)
    parser.add_argument("--blksize", type=int, default=512)
    parser.add_argument("--queued", action="store_true",
                        help="the transfer thread's loop alone, every ACK queued beforehand")
    parser.add_argument("--python", action="store_true",
                        help="with --queued: the Python loop alone, without the C loop "
                        "(server/tftp/lockstep.c) the server runs lock-step reads in")
    parser.add_argument("--serve-queued", nargs=3, type=int,
                        metavar=("BLOCKS", "BLKSIZE", "PYTHON"),
                        help=argparse.SUPPRESS)  # a --queued child, under callgrind
    args = parser.parse_args()
    if args.serve_queued:
        blocks, blksize, python = args.serve_queued
        serve_queued(blocks, blksize, bool(python))
        return 0
    for tool in ("valgrind", "curl"):
        if shutil.which(tool) is None:
            print(f"{tool} not installed", file=sys.stderr)
            return 2
    small = args.blocks // 5
    def count(blocks: int) -> int:
        if args.queued:
            return queued_instructions(blocks, args.blksize, args.python)
        return instructions(blocks, args.blksize)

    per_block = (count(args.blocks) - count(small)) / (args.blocks - small)
    how = ("ACKs queued, " + ("the Python loop" if args.python else "the C loop")
           if args.queued else "curl")
    print(f"tftp hot path: {per_block:,.0f} instructions per {args.blksize}-octet lock-step "
          f"block (callgrind, {args.blocks} - {small} blocks, {how})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
