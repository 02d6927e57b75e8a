"""TFTP throughput: boothop's server against tftpd-hpa, same machine, same run, same client.

    python3 tests/bench/tftp_throughput.py [--size-mib 64]

Both servers serve one random file on loopback. Two clients download it, each case ``--runs``
times (the median is printed, with the server's CPU seconds per run from /proc/PID/stat):
curl (C, lock-step) at blksize 512 and 1468, and a small windowsize-aware Python client (our
packet module) at 512, 1468, and 1468 with windowsize 16; every download's SHA-256 is checked.
tftpd-hpa does not implement windowsize (RFC 7440): it ignores the option, so its row is plain
lock-step at that block size. Not collected by pytest (no test_ prefix).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from boothop.server.tftp import packet

CASES = [("blksize 512", {}), ("blksize 1468", {"blksize": "1468"}),
         ("blksize 1468 windowsize 16", {"blksize": "1468", "windowsize": "16"})]


def download(port: int, name: str, options: dict[str, str]) -> bytes:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(1.0)
    sock.sendto(
        packet.encode_request(packet.Opcode.RRQ, name, "octet", options), ("127.0.0.1", port)
    )
    data, peer = sock.recvfrom(70000)
    first = packet.decode(data)
    blksize, windowsize = 512, 1
    if isinstance(first, packet.OptionAck):
        blksize = int(first.options.get("blksize", 512))
        windowsize = int(first.options.get("windowsize", 1))
        sock.sendto(packet.encode_ack(0), peer)
        data = None
    out = bytearray()
    expected, in_window = 1, 0
    while True:
        if data is None:
            try:
                data = sock.recvfrom(70000)[0]
            except TimeoutError:
                sock.sendto(packet.encode_ack((expected - 1) & 0xFFFF), peer)
                in_window = 0
                continue
        pkt, data = packet.decode(data), None
        if isinstance(pkt, packet.Error):
            raise RuntimeError(f"server error {pkt.code}: {pkt.message}")
        if not isinstance(pkt, packet.Data) or pkt.block != expected & 0xFFFF:
            continue
        out += pkt.payload
        expected += 1
        in_window += 1
        last = len(pkt.payload) < blksize
        if last or in_window == windowsize:
            sock.sendto(packet.encode_ack(pkt.block), peer)
            in_window = 0
        if last:
            sock.close()
            return bytes(out)


def curl_download(port: int, name: str, options: dict[str, str]) -> bytes:
    argv = ["curl", "-s", "--max-time", "120", "-o", "-", f"tftp://127.0.0.1:{port}/{name}"]
    if "blksize" in options:
        argv[1:1] = ["--tftp-blksize", options["blksize"]]
    return subprocess.run(argv, capture_output=True, check=True, timeout=150).stdout


def cpu_seconds(pid: int) -> float:
    """utime+stime of one process (tftpd-hpa serves each transfer in a forked child that this
    does not see, so only boothop's CPU is reported)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_port(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            download(port, "probe", {})
            return
        except (OSError, RuntimeError):
            time.sleep(0.1)
    raise RuntimeError(f"no TFTP server on port {port}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    tftpd = shutil.which("in.tftpd")
    if tftpd is None:
        print("in.tftpd (tftpd-hpa) is not installed", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        root.chmod(0o755)  # in.tftpd drops to its own user before reading
        payload = os.urandom(args.size_mib << 20)
        (root / "big.bin").write_bytes(payload)
        (root / "probe").write_bytes(b"x")
        digest = hashlib.sha256(payload).digest()
        ours_port, hpa_port = free_port(), free_port()
        config = root / "bench.toml"
        config.write_text(f'[tftp]\nroot = "{root}"\naddress = "127.0.0.1"\nport = {ours_port}\n')
        procs = [
            subprocess.Popen([sys.executable, "-m", "boothop.server", "run", "-c", str(config)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
            subprocess.Popen([tftpd, "-L", "-s", str(root), "-a", f"127.0.0.1:{hpa_port}"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        ]
        try:
            wait_port(ours_port)
            wait_port(hpa_port)
            print(
                f"{args.size_mib} MiB over loopback, MiB/s (higher is better), "
                f"median of {args.runs};"
                " boothop's CPU seconds per download in brackets"
            )
            print(f"{'client, case':<36} {'boothop':>16} {'tftpd-hpa':>16} {'ratio':>6}")
            clients = [("curl", curl_download, CASES[:2]), ("python", download, CASES)]
            servers = [(ours_port, procs[0].pid), (hpa_port, procs[1].pid)]
            for client, fetch, cases in clients:
                for label, options in cases:
                    cells = []
                    for port, pid in servers:
                        rates, cpu = [], []
                        for _ in range(args.runs):
                            before, start = cpu_seconds(pid), time.perf_counter()
                            data = fetch(port, "big.bin", options)
                            rates.append(args.size_mib / (time.perf_counter() - start))
                            cpu.append(cpu_seconds(pid) - before)
                            if hashlib.sha256(data).digest() != digest:
                                raise RuntimeError(f"{label}: checksum mismatch from port {port}")
                        cells.append((statistics.median(rates), statistics.median(cpu)))
                    (ours, ours_cpu), (hpa, _) = cells
                    print(f"{client + ', ' + label:<36} {ours:>7.1f} [{ours_cpu:>5.2f}s] "
                          f"{hpa:>16.1f} {ours / hpa:>6.2f}")
        finally:
            for proc in procs:  # our own children, by PID
                proc.terminate()
                proc.wait(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
