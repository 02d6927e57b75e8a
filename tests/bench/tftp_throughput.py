"""TFTP throughput: boothop's server against tftpd-hpa, same machine, same run, same client.

    python3 tests/bench/tftp_throughput.py [--size-mib 64]

Both servers serve one random file on loopback; a small windowsize-aware client (our packet
module, blocking sockets) downloads it at blksize 512, 1468, and 1468 with windowsize 16, and
checks the SHA-256. tftpd-hpa does not implement windowsize (RFC 7440): it ignores the option, so
its row is plain lock-step at that block size. Not collected by pytest (no test_ prefix).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from server.tftp import packet

CASES = [("blksize 512", {}), ("blksize 1468", {"blksize": "1468"}),
         ("blksize 1468 windowsize 16", {"blksize": "1468", "windowsize": "16"})]


def download(port: int, name: str, options: dict[str, str]) -> bytes:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(1.0)
    sock.sendto(packet.encode_request(packet.Opcode.RRQ, name, "octet", options), ("127.0.0.1", port))
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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=64)
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
            subprocess.Popen([sys.executable, "-m", "server.pxe", "-c", str(config)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
            subprocess.Popen([tftpd, "-L", "-s", str(root), "-a", f"127.0.0.1:{hpa_port}"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        ]
        try:
            wait_port(ours_port)
            wait_port(hpa_port)
            print(f"{args.size_mib} MiB over loopback, MiB/s (higher is better)")
            print(f"{'case':<28} {'boothop':>9} {'tftpd-hpa':>10} {'ratio':>6}")
            for label, options in CASES:
                rates = []
                for port in (ours_port, hpa_port):
                    start = time.perf_counter()
                    data = download(port, "big.bin", options)
                    elapsed = time.perf_counter() - start
                    if hashlib.sha256(data).digest() != digest:
                        raise RuntimeError(f"{label}: checksum mismatch from port {port}")
                    rates.append(args.size_mib / elapsed)
                print(f"{label:<28} {rates[0]:>9.1f} {rates[1]:>10.1f} {rates[0] / rates[1]:>6.2f}")
        finally:
            for proc in procs:  # our own children, by PID
                proc.terminate()
                proc.wait(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
