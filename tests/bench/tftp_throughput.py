"""TFTP throughput: boothop's server against tftpd-hpa, same machine, same run, same client.

    python3 tests/bench/tftp_throughput.py [--size-mib 64] [--runs 3]
        [--blksizes 512,1428,8192,65464] [--server-cpu 1] [--client-cpu 0] [--floor]

Both servers serve one random file on loopback, pinned to one CPU (``--server-cpu``, taskset)
and the client to another (``--client-cpu``), so a lock-step transfer's two ends do not take
turns on one core. Lock-step (no windowsize) with curl (C) at each of ``--blksizes``, then a
small windowsize-aware Python client (our packet module) at 1468 with windowsize 16; every
download's SHA-256 is checked. The servers take turns within each run (order alternating), each
case ``--runs`` times; medians are printed, and the ratio is the median of each run's pair
(boothop's MiB/s over tftpd-hpa's in the same run), with the load average at the start and the
end (other work on the machine shows there). ``--floor`` adds two servers, the floors a
CPython server can reach: a bare lock-step loop (``floor_serve``) with read-ahead and nothing
else, on a socket connected to the client (``floor-conn``: recv and send, the system calls
tftpd-hpa and boothop make per block; boothop answers strays on a second socket) and on an
unconnected one (``floor``: recvfrom and sendto, what boothop made before it connected).

Figures per server and case: MiB/s, and the server's CPU milliseconds per MiB: each server runs
in a cpuacct cgroup of its own (cgroup v1, /sys/fs/cgroup/cpuacct), read before and after each
download, so tftpd-hpa's forked transfer children count. tftpd-hpa does not implement windowsize
(RFC 7440): it ignores the option, so its row there is plain lock-step at that block size. Not
collected by pytest (no test_ prefix).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from boothop.server.tftp import packet
from boothop.server.tftp.config import BLKSIZE_MAX


def download(port: int, name: str, options: dict[str, str]) -> bytes:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(1.0)
    sock.sendto(
        packet.encode_request(packet.Opcode.RRQ, name, "octet", options), ("127.0.0.1", port)
    )
    data: bytes | None
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


def floor_serve(port: int, root: str, connected: bool) -> None:
    """The bare CPython lock-step loop (``--floor``): one transfer at a time, octet mode, the
    blksize and tsize options, no retransmission (loopback loses nothing at one transfer)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", port))
    while True:
        data, peer = listener.recvfrom(65536)
        request = packet.decode(data)
        assert isinstance(request, packet.Request)
        with open(os.path.join(root, request.filename), "rb") as file, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            blksize = int(request.options.get("blksize", 512))
            oack = {k: v for k, v in request.options.items() if k == "blksize"}
            if "tsize" in request.options:
                oack["tsize"] = str(os.fstat(file.fileno()).st_size)
            if oack:
                sock.sendto(packet.encode_oack(oack), peer)
                sock.recvfrom(65536)
            if connected:
                sock.connect(peer)
            block = 1
            payload = file.read(blksize)
            out = b"\0\3\0\1" + payload
            while True:
                if connected:
                    sock.send(out)
                else:
                    sock.sendto(out, peer)
                if len(payload) < blksize:
                    break
                block += 1
                payload = file.read(blksize)  # read ahead, while the client answers
                out = b"\0\3" + (block & 0xFFFF).to_bytes(2, "big") + payload
                expected = b"\0\4" + ((block - 1) & 0xFFFF).to_bytes(2, "big")
                while True:
                    if connected:
                        if sock.recv(516) == expected:
                            break
                        continue
                    ack, source = sock.recvfrom(516)
                    if ack == expected and source == peer:
                        break
            sock.recvfrom(65536)  # the last ACK


def curl_download(port: int, name: str, options: dict[str, str]) -> bytes:
    argv = ["taskset", "-c", CLIENT_CPU, "curl", "-s", "--max-time", "120", "-o", "-",
            f"tftp://127.0.0.1:{port}/{name}"]
    if "blksize" in options:
        argv[5:5] = ["--tftp-blksize", options["blksize"]]
    return subprocess.run(argv, capture_output=True, check=True, timeout=150).stdout


#: taskset CPUs of the client (curl; the Python client pins itself) and of both servers.
CLIENT_CPU, SERVER_CPU = "0", "1"


CPUACCT = Path("/sys/fs/cgroup/cpuacct")


class CpuAccount:
    """A server's CPU time, its forked children included (tftpd-hpa serves each transfer in a
    child and ignores SIGCHLD, so no cutime ever counts them): a cgroup-v1 cpuacct group of
    its own, which the process and every child it forks are in."""

    def __init__(self, pid: int) -> None:
        self.path = CPUACCT / f"bhk-tftp-{pid}-{secrets.token_hex(3)}"
        self.path.mkdir()
        (self.path / "cgroup.procs").write_text(f"{pid}\n")

    def seconds(self) -> float:
        return int((self.path / "cpuacct.usage").read_text()) / 1e9

    def remove(self) -> None:
        """Once its processes are gone (rmdir of a cgroup with tasks fails)."""
        with contextlib.suppress(OSError):
            self.path.rmdir()


def wait_port(port: int, limit: float = 10) -> None:
    deadline = time.monotonic() + limit
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
    global CLIENT_CPU
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--blksizes", default="512,1428,8192",
                        help="lock-step block sizes (curl)")
    parser.add_argument("--server-cpu", default=SERVER_CPU)
    parser.add_argument("--client-cpu", default=CLIENT_CPU)
    parser.add_argument("--floor", action="store_true",
                        help="add the bare CPython lock-step loop as a third server")
    parser.add_argument("--serve-floor", nargs=3, metavar=("PORT", "ROOT", "CONNECTED"),
                        help=argparse.SUPPRESS)  # a --floor child
    args = parser.parse_args()
    if args.serve_floor:
        floor_serve(int(args.serve_floor[0]), args.serve_floor[1], args.serve_floor[2] == "1")
        return 0
    CLIENT_CPU = args.client_cpu
    tftpd = shutil.which("in.tftpd")
    if tftpd is None or shutil.which("taskset") is None:
        print("in.tftpd (tftpd-hpa) or taskset is not installed", file=sys.stderr)
        return 2
    if not (CPUACCT / "cpuacct.usage").exists() or os.geteuid() != 0:
        print(f"needs root and the cgroup-v1 cpuacct controller at {CPUACCT}", file=sys.stderr)
        return 2
    os.sched_setaffinity(0, {int(args.client_cpu)})  # the Python client: this process
    cases = [("curl", curl_download, f"blksize {size}", {"blksize": size} if size != "512" else {})
             for size in args.blksizes.split(",")]
    cases.append(("python", download, "blksize 1468 windowsize 16",
                  {"blksize": "1468", "windowsize": "16"}))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        root.chmod(0o755)  # in.tftpd drops to its own user before reading
        payload = os.urandom(args.size_mib << 20)
        (root / "big.bin").write_bytes(payload)
        (root / "probe").write_bytes(b"x")
        digest = hashlib.sha256(payload).digest()
        ours_port, hpa_port = free_port(), free_port()
        config = root / "bench.toml"
        config.write_text(f'[tftp]\nroot = "{root}"\naddress = "127.0.0.1"\nport = {ours_port}\n'
                          f"max_blksize = {BLKSIZE_MAX}\n")
        pin = ["taskset", "-c", args.server_cpu]
        procs = [
            subprocess.Popen([*pin, sys.executable, "-m", "boothop.server", "run", "-c",
                              str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
            subprocess.Popen([*pin, tftpd, "-L", "-s", str(root), "-a", f"127.0.0.1:{hpa_port}",
                              "-B", str(BLKSIZE_MAX)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        ]
        names, ports = ["boothop", "tftpd-hpa"], [ours_port, hpa_port]
        if args.floor:
            for name, connected in (("floor", "0"), ("floor-conn", "1")):
                port = free_port()
                procs.append(subprocess.Popen([*pin, sys.executable, __file__, "--serve-floor",
                                               str(port), str(root), connected]))
                names.append(name)
                ports.append(port)
        accounts: list[CpuAccount] = []
        try:
            for port in ports:
                wait_port(port)
            for proc in procs:
                accounts.append(CpuAccount(proc.pid))
            servers = {name: (port, account)
                       for name, port, account in zip(names, ports, accounts, strict=True)}
            rates: dict[tuple[str, str], list[float]] = {}
            cpu: dict[tuple[str, str], list[float]] = {}
            load_before = os.getloadavg()
            for run in range(args.runs):
                for client, fetch, label, options in cases:
                    order = list(servers) if run % 2 == 0 else list(servers)[::-1]
                    for name in order:
                        port, account = servers[name]
                        before, start = account.seconds(), time.perf_counter()
                        data = fetch(port, "big.bin", options)
                        seconds = time.perf_counter() - start
                        time.sleep(0.05)  # the server's last ACK handled, its child exited
                        used = account.seconds() - before
                        if hashlib.sha256(data).digest() != digest:
                            raise RuntimeError(f"{label}: checksum mismatch from {name}")
                        key = (f"{client}, {label}", name)
                        rates.setdefault(key, []).append(args.size_mib / seconds)
                        cpu.setdefault(key, []).append(used * 1000 / args.size_mib)
            load_after = os.getloadavg()
            print(f"{args.size_mib} MiB over loopback, servers on CPU {args.server_cpu}, client "
                  f"on CPU {args.client_cpu}; medians of {args.runs} interleaved runs; load "
                  f"average {load_before[0]:.2f} at the start, {load_after[0]:.2f} at the end")
            header = f"{'client, case':<34}"
            for name in servers:
                header += f" {name + ' MiB/s':>15} {'ms CPU/MiB':>10}"
            print(header + f" {'ratio':>6} {'min-max':>9}")
            for client, _, label, _ in cases:
                case = f"{client}, {label}"
                line = f"{case:<34}"
                for name in servers:
                    line += (f" {statistics.median(rates[case, name]):>15.1f}"
                             f" {statistics.median(cpu[case, name]):>10.1f}")
                pairs = [ours / hpa for ours, hpa in
                         zip(rates[case, "boothop"], rates[case, "tftpd-hpa"], strict=True)]
                print(line + f" {statistics.median(pairs):>6.2f} "
                      f"{min(pairs):>4.2f}-{max(pairs):<4.2f}")
            print("ratio: the median over runs of boothop's MiB/s over tftpd-hpa's in the same run "
                  "(higher is better; min-max: the runs' spread); CPU/MiB: the server's CPU time "
                  "per MiB sent (lower is better)")
        finally:
            for proc in procs:  # our own children, by PID
                proc.terminate()
                proc.wait(5)
            for account in accounts:
                account.remove()
    return 0


if __name__ == "__main__":
    sys.exit(main())
