"""Benchmark (not a test): full DORA exchanges per second through a relay, perfdhcp -> relay -> kea.

    python3 tests/bench/relay_dora.py [--runs 3] [--duration 4]
        [--relays none,dhcrelay,boothop,boothop-kernel,dnsmasq]

Rows: ``none`` (no relay: perfdhcp relays itself, giaddr set, unicast to kea; the router only
routes), ISC ``dhcrelay`` (-q), ``boothop`` (boothop-relay ``--datapath user``: every packet
through the daemon), ``boothop-kernel`` (``--datapath kernel``: the tc-BPF program relays, the
daemon takes what it passes up and logs the per-step lines from the program's events, at the
default level info), ``boothop-kernel-quiet`` (the same at ``--log-level warning``: no per-step
line, as dhcrelay -q) and ``dnsmasq`` (``--dhcp-relay``; when installed); ``none-82`` (not a
default row) is ``none`` with option 82 in perfdhcp's requests as the -a relays add it, so that
kea gets the same bytes as through them: its lossless rate less a relay's is the relay's own
cost on the CPU it shares with kea, without kea's parsing of option 82. They take turns
(interleaved runs, in reversed order every other run: no row always first after the last run's
dhcrelay, or always last in a kea that has served the others) so that the machine's changing
load hits all alike. The kernel rows run
per-MAC rate limits on (their token buckets in the program), at BENCH_MAC_RATE a second after
BENCH_MAC_BURST: perfdhcp's 20,000 MACs each send a request a second at 10,000 DORA/s, a storm
the default (0.5/s after 10) is there to cut, and did cut (its drops, not a CPU, ended the kernel
rows' ladders at 9,000 where no relay held 12,000). The user row has them off. Each boothop run
prints which path took its requests (its metrics, read once at the end of each pass:
``boothop_relay_datapath_requests_total{path}``), how many were dropped over their MAC's rate
(to be 0) and why requests went up.

Topology (namespaces ``bhp-<random>-*``): ``gen`` (perfdhcp, and a C frame generator) on client
LAN 10.45.128.0/17, ``router`` (the relay, -id lanc0 -iu up0 -a), ``server`` (kea-dhcp4, memfile,
a 32k pool) and ``sink`` (a bound UDP socket that never reads) on 10.45.100.0/24. The senders'
veths (gen's eth0, the server's srv0) send complete UDP checksums (``ethtool -K tx off``), as a
NIC puts them on the wire: a veth otherwise leaves them CHECKSUM_PARTIAL, which the kernel
datapath passes up. Cores: perfdhcp on CPU 0; the relay **and kea share CPU 1**.

Printed per relay, medians of the runs:

- lossless DORA/s: the highest rate of an ascending ladder with no drop in either exchange,
  relay and kea on one CPU, refined by two bisections between the last step held and the one
  lost (``--refine``: to a quarter of a ladder step); a step that drops is run once more
  (``--retries``) before it counts as lost, and each step's line shows the share of the
  machine's CPU time stolen during it (by the hypervisor: a step with more than STALLED is void
  and run again);
- CPU per DORA at a fixed rate, counted so that work moved into the kernel still counts. Under
  this kernel's tick-based accounting (no IRQ_TIME_ACCOUNTING), softirq work is charged to the
  task that was running: a veth delivers a frame to its peer in the sender's context, so the
  router's receive path (the tc program included) lands in the system time of whoever sent the
  frame (perfdhcp for requests, kea for replies, the relay for what it sends), and deferred
  softirq work in ksoftirqd. The figure is therefore utime+stime of relay + kea + perfdhcp (its
  rusage as a child of this script) + ksoftirqd/*, per completed DORA, minus the same for the
  ``none`` row (median): what having the relay costs the machine. Other processes' time is not
  in it (the machine is shared), nor is softirq work a CPU ran in its idle task's context (what
  RPS, steered below, brings to an idle CPU: the shared CPU's busy figure holds it). Checked by
  the process-only figure printed beside it: for dhcrelay and boothop user the two agree within
  the receive work they cause at kea and perfdhcp; for the kernel datapath the process-only
  figure is ~0 but for the daemon's per-step log lines (it hides the work, the counted one does
  not), and the tc program's own run time (BPF_ENABLE_STATS, read with bpftool) is printed as a
  lower bound of what the kernel datapath costs. The process-only figure is the scheduler's
  exact run time of the relay's threads (schedstat, ns), not tick samples: on a shared machine
  (other helpers' load) the counted figure's noise is larger than a relay's cost, and the
  relay's own time is what the user path's rows (boothop, boothop-quiet, python-forwarder: a
  bare CPython recvfrom/sendto loop, the floor of any CPython relay) are compared by. A relay
  starved of CPU (drops, seconds of round trip) shows more CPU per completed DORA: compare rows
  at a rate where none drops;
- the server's CPU time per DORA at that rate: every thread allowed on the CPU kea and the relay
  share (kea, the relay, ksoftirqd and the kworkers of that CPU), the scheduler's exact run time
  (schedstat, ns), so with what the relay's tc program and its replies' delivery cost in kea's
  context. A row's figure over none's is what the relay costs the server's CPU (the issue's
  "less than 10 %"), measured where nothing is lost: its runs agree within some 10 % where
  the lossless rate, ended by a single drop, moves by 2-4 steps. Beside it, the time that CPU
  was busy (not idle, not stolen: /proc/stat), which also holds the softirq work it ran in its
  idle task's context;
- steered (``--no-steer`` to leave it): every row's CPU and lossless passes with the router's
  receive from the client LAN steered to the shared CPU (RPS on lanc0) and the client LAN's
  receive from the router to the other (RPS on the switch's port facing it). A veth delivers a
  frame in its sender's context, so otherwise the router's work on a request (the relay's, or
  the forwarding of the ``none`` rows) runs on the generator's CPU, and the switch's flood and
  the clients' receive of a reply on the server's: with it, the router and the server share
  one CPU and the clients and their switch have the other, as their own machines would (the
  transit pass is not steered: a frame's timestamp is taken before RPS moves it);
- the latency the relay adds: tcpdump on both router interfaces timestamps every DHCP packet as
  it enters and leaves the router, pairs by (xid, message type), medians per DORA packet, summed;
- the maximum relayed request rate on one CPU: the C generator sends DISCOVERs (raw frames,
  complete checksums) at ascending rates for 2 s each, from the switch's port facing lanc0 (as
  one plugged into the router's port: no bridge flooding on its CPU), and the relay forwards
  them to the sink (no DHCP server in the way). The router's receive processing is steered to
  the relay's CPU by RPS (rps_cpus of lanc0), so the relay's work, in the kernel or in the
  daemon, is on CPU 1; what follows the router's send goes to CPU 0 (rps_cpus of the switch's
  port facing up0), so CPU 1 does that work alone. There a tc program on the port's ingress
  counts and drops the requests for the sink (a few instructions a frame: the bridge and the
  sink's UDP receive would make CPU 0, which also runs the generator, the limit before the
  relay). The figure is the highest rate (requests sent / 2 s) at which every request sent
  left the router for the sink; where the generator sent less than 95 % of a step's rate, its
  CPU was the limit: the figure is then a lower bound of the relay's, and the step line says
  so. Before the ladder, at 1,000/s, every request must reach the sink's UDP layer itself
  (InDatagrams + RcvbufErrors: addresses and checksums right) or the figure is 0.

Then ratios against dhcrelay and against no relay. Needs root, perfdhcp (kea-admin), kea-dhcp4,
dhcrelay, tcpdump, ethtool, a C compiler (``cc``, for the shim and the generator), clang and
bpftool (the sink's counter).

perfdhcp (2.2) in DHCPv4 always acts as a relay itself, so it sends templates instead (giaddr 0,
hops 0, broadcast flag, no client-id; offsets of xid, MAC, secs, options 50 and 54 given with
-X -O -E -I -S). It binds its socket to the interface address and cannot see replies broadcast to
255.255.255.255:68, so an LD_PRELOAD shim (``perfdhcp_shim``, compiled with cc) binds port 68 to
INADDR_ANY and sets SO_BROADCAST, and gives its socket the 4 MiB receive queue a relay's has. Every
perfdhcp run is bounded by -r, -p and a timeout.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import functools
import json
import os
import re
import resource
import secrets
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from ipaddress import IPv4Address
from pathlib import Path

import perfdhcp_shim  # beside this script (sys.path[0])
from cpustat import CLK_TCK, cpu_seconds, idle_seconds  # beside it too

from boothop.relay.compiled import PROGRAM_SOURCE
from boothop.relay.lab.processes import (
    Process,
    ProcessRunner,
    exit_on_sigterm,
    udp_counters,
    wait_for,
)
from boothop.relay.lab.topology import Host, Lan, Port, Route, Topology
from boothop.relay.wire import (
    BROADCAST_FLAG,
    AgentInfo,
    AgentSub,
    DhcpMessage,
    MessageType,
    Opt,
    WireError,
    decode,
    encode,
)

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "system"))
from servers import Pool, start_kea  # noqa: E402 - found through the sys.path entry above

SERVER = "10.45.100.10"
SINK = "10.45.100.20"
ROUTER_UP = "10.45.100.1"
CLIENT_LAN = "10.45.128.0/17"
ROUTER_DOWN = "10.45.128.1"
GENERATOR = "10.45.128.2"
POOL = Pool(CLIENT_LAN, "10.45.129.0", "10.45.255.250", ROUTER_DOWN)
CLIENTS = 20000
#: The packets of a DORA, in the direction the relay carries them.
DORA = (MessageType.DISCOVER, MessageType.OFFER, MessageType.REQUEST, MessageType.ACK)
RELAY_CPU = "1"
#: kea shares the relay's CPU: the relay's cost shows as the server's lost rate.
SERVER_CPU = RELAY_CPU
OTHERS_CPU = "0"

_GENERATOR = r"""
/* blast IFNAME RATE SECONDS PAYLOAD.hex: DISCOVERs as raw frames (broadcast, complete checksums),
 * a new xid and chaddr each, paced to RATE per second, sent BATCH at a time (sendmmsg: one
 * system call per batch, so that the generator's own CPU is not what limits the ladder's top);
 * prints how many were sent. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#define BATCH 32
static uint32_t sum16(const uint8_t *p, size_t n, uint32_t s) {
    for (; n > 1; p += 2, n -= 2) s += (uint32_t)(p[0] << 8 | p[1]);
    if (n) s += (uint32_t)(p[0] << 8);
    return s;
}
static uint16_t fold(uint32_t s) {
    while (s >> 16) s = (s & 0xffff) + (s >> 16);
    return (uint16_t)~s;
}
static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}
int main(int argc, char **argv) {
    if (argc != 5) return 2;
    static uint8_t frames[BATCH][1514];
    uint8_t f[1514] = {0}, *ip = f + 14, *udp = f + 34, *dhcp = f + 42;
    FILE *in = fopen(argv[4], "r");
    size_t n = 0; unsigned b;
    while (n < 1400 && fscanf(in, "%2x", &b) == 1) dhcp[n++] = (uint8_t)b;
    memset(f, 0xff, 6); memcpy(f + 6, "\x02\x45\x80\x00\x00\x02", 6); f[12] = 8;
    ip[0] = 0x45; ip[2] = (uint8_t)((28 + n) >> 8); ip[3] = (uint8_t)(28 + n);
    ip[8] = 64; ip[9] = 17;
    memset(ip + 16, 0xff, 4);
    uint16_t c = fold(sum16(ip, 20, 0)); ip[10] = c >> 8; ip[11] = c & 0xff;
    udp[1] = 68; udp[3] = 67; udp[4] = (uint8_t)((8 + n) >> 8); udp[5] = (uint8_t)(8 + n);
    /* The UDP checksum of the template with its xid and chaddr's last four octets zeroed: each
     * frame adds its own (one's complement sums add). */
    memset(dhcp + 4, 0, 4); memset(dhcp + 30, 0, 4); udp[6] = udp[7] = 0;
    uint32_t base = sum16(udp, 8 + n, sum16(ip + 12, 8, 17 + 8 + (uint32_t)n));
    int fd = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_IP));
    int one = 1; setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof one);
    struct sockaddr_ll to = {.sll_family = AF_PACKET, .sll_halen = 6,
                             .sll_ifindex = (int)if_nametoindex(argv[1])};
    memset(to.sll_addr, 0xff, 6);
    struct iovec iov[BATCH];
    struct mmsghdr msgs[BATCH];
    for (int i = 0; i < BATCH; i++) {
        memcpy(frames[i], f, 42 + n);
        iov[i] = (struct iovec){.iov_base = frames[i], .iov_len = 42 + n};
        msgs[i] = (struct mmsghdr){.msg_hdr = {.msg_name = &to, .msg_namelen = sizeof to,
                                               .msg_iov = &iov[i], .msg_iovlen = 1}};
    }
    double rate = atof(argv[2]), seconds = atof(argv[3]), start = now(), t;
    unsigned long sent = 0;
    while ((t = now() - start) < seconds) {
        unsigned long due = (unsigned long)(rate * t);
        if (sent >= due) { struct timespec w = {0, 20000}; nanosleep(&w, 0); continue; }
        int count = due - sent < BATCH ? (int)(due - sent) : BATCH;
        for (int i = 0; i < count; i++) {
            uint8_t *d = frames[i] + 42, *u = frames[i] + 34;
            uint32_t x = htonl((uint32_t)(sent + i));
            memcpy(d + 4, &x, 4); memcpy(d + 30, &x, 4);
            c = fold(sum16(d + 4, 4, sum16(d + 30, 4, base))); if (!c) c = 0xffff;
            u[6] = c >> 8; u[7] = c & 0xff;
        }
        int done = sendmmsg(fd, msgs, count, 0);
        if (done > 0) sent += done;
    }
    printf("%lu\n", sent);
    return 0;
}
"""


_SINK_COUNTER = r"""
/* The sink pass's counter: on the ingress of the server LAN's switch port facing the router,
 * counts and drops the relayed requests (IPv4 to the sink, UDP port 67): the router's output,
 * counted as it reaches the wire, at a few instructions a frame. Anything else goes on. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u64);
} sink_arrivals SEC(".maps");
SEC("tc") int sink_counter(struct __sk_buff *skb) {
    void *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = (void *)(long)skb->data;
    struct iphdr *ip = (void *)(eth + 1);
    struct udphdr *udp = (void *)(ip + 1);
    if ((void *)(udp + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP) || ip->ihl != 5 ||
        ip->protocol != IPPROTO_UDP || ip->daddr != SINK_ADDRESS || udp->dest != bpf_htons(67))
        return TC_ACT_OK;
    __u32 zero = 0;
    __u64 *count = bpf_map_lookup_elem(&sink_arrivals, &zero);
    if (count)
        __sync_fetch_and_add(count, 1);
    return TC_ACT_SHOT;
}
char LICENSE[] SEC("license") = "GPL";
"""


@dataclasses.dataclass(frozen=True)
class Templates:
    discover: Path
    request: Path
    #: The same, as the client side's own relay sends them (giaddr, hops 1) for the none row,
    relayed: tuple[Path, Path]
    #: and for the none-82 row: with option 82 too, as the -a relays add it on lanc0.
    relayed_with_agent: tuple[Path, Path]
    xid: int
    mac_last: int
    secs: int
    requested_ip: int
    server_id: int


def write_templates(workdir: Path) -> Templates:
    """DISCOVER and REQUEST as a client behind a relay sends them; offsets found, not assumed."""
    mac = bytes.fromhex("024580000000") + bytes(10)
    base = DhcpMessage(op=1, xid=0, chaddr=mac, flags=BROADCAST_FLAG)
    discover = encode(base.replace(options=((Opt.MESSAGE_TYPE, b"\x01"),)))
    request = encode(base.replace(options=(
        (Opt.MESSAGE_TYPE, b"\x03"),
        (Opt.REQUESTED_ADDRESS, bytes(4)),
        (Opt.SERVER_ID, bytes(4)),
    )))
    paths = workdir / "discover.hex", workdir / "request.hex"
    paths[0].write_text(discover.hex())
    paths[1].write_text(request.hex())
    relayed = workdir / "relayed-discover.hex", workdir / "relayed-request.hex"
    with_agent = workdir / "agent-discover.hex", workdir / "agent-request.hex"
    agent = (Opt.RELAY_AGENT_INFO, AgentInfo(((AgentSub.CIRCUIT_ID, b"lanc0"),)).encode())
    for path, agent_path, message in zip(relayed, with_agent, (discover, request), strict=True):
        own = decode(message).replace(hops=1, giaddr=IPv4Address(GENERATOR))
        path.write_text(encode(own).hex())
        agent_path.write_text(encode(own.replace(options=(*own.options, agent))).hex())
    # perfdhcp's option offsets point at the option's code byte.
    return Templates(
        discover=paths[0],
        request=paths[1],
        relayed=relayed,
        relayed_with_agent=with_agent,
        xid=4,
        mac_last=28 + 5,
        secs=8,
        requested_ip=request.index(bytes([Opt.REQUESTED_ADDRESS, 4]), 240),
        server_id=request.index(bytes([Opt.SERVER_ID, 4]), 240),
    )


def build_generator(workdir: Path) -> Path:
    source, program = workdir / "blast.c", workdir / "blast"
    source.write_text(_GENERATOR)
    subprocess.run(["cc", "-O2", "-o", str(program), str(source)], check=True, timeout=60)
    return program


def build_sink_counter(workdir: Path) -> Path:
    source, program = workdir / "sink_counter.c", workdir / "sink_counter.o"
    source.write_text(_SINK_COUNTER)
    address = f"0x{int.from_bytes(IPv4Address(SINK).packed, 'little'):08x}"  # as __be32 reads
    # The relay's program's flags (they end with -c).
    subprocess.run(["clang", *PROGRAM_SOURCE.flags, f"-DSINK_ADDRESS={address}",
                    str(source), "-o", str(program)], check=True, timeout=60)
    return program


def topology(prefix: str) -> Topology:
    to_lan = Route("10.45.0.0/16", ROUTER_UP)
    return Topology(
        prefix,
        [Host("router", forwarding=True), Host("server", routes=(to_lan,)), Host("gen",
         routes=(Route("10.45.100.0/24", ROUTER_DOWN),)), Host("sink", routes=(to_lan,))],
        [
            Lan("c", (Port("router", "lanc0", f"{ROUTER_DOWN}/17"),
                      Port("gen", "eth0", f"{GENERATOR}/17"))),
            Lan("srv", (Port("router", "up0", f"{ROUTER_UP}/24"),
                        Port("server", "srv0", f"{SERVER}/24"),
                        Port("sink", "snk0", f"{SINK}/24"))),
        ],
    )


@dataclasses.dataclass(frozen=True)
class Result:
    do_sent: int
    do_drops: int
    ra_sent: int
    ra_received: int
    ra_drops: int
    do_delay_ms: float
    ra_delay_ms: float

    @property
    def lossless(self) -> bool:
        return self.do_sent > 0 and self.do_drops == 0 and self.ra_drops == 0


def _section(text: str, name: str) -> str:
    start = text.find(f"***Statistics for: {name}***")
    if start < 0:
        raise ValueError(f"perfdhcp output has no {name} section:\n{text[-2000:]}")
    end = text.find("***Statistics for:", start + 10)
    return text[start : end if end > 0 else len(text)]


def _number(section: str, label: str) -> float:
    match = re.search(rf"^{label}: ([0-9.]+|inf|n/a)", section, re.MULTILINE)
    if match is None or match.group(1) in ("inf", "n/a"):
        return float("nan")
    return float(match.group(1))


def parse_perfdhcp(text: str) -> Result:
    do, ra = _section(text, "DISCOVER-OFFER"), _section(text, "REQUEST-ACK")
    return Result(
        do_sent=int(_number(do, "sent packets")),
        do_drops=int(_number(do, "drops")),
        ra_sent=int(_number(ra, "sent packets")),
        ra_received=int(_number(ra, "received packets")),
        ra_drops=int(_number(ra, "drops")),
        do_delay_ms=_number(do, "avg delay"),
        ra_delay_ms=_number(ra, "avg delay"),
    )


class Bench:
    def __init__(self, topo: Topology, runner: ProcessRunner, templates: Templates, shim: Path,
                 generator: Path, counter: Path, duration: float, kea: int) -> None:
        self.topo, self.runner, self.templates, self.shim = topo, runner, templates, shim
        self.generator, self.counter = generator, counter
        self.duration, self.kea = duration, kea

    def perfdhcp(self, rate: int, duration: float | None = None,
                 own_relay: tuple[Path, Path] | None = None) -> Result:
        """One perfdhcp run; ``own_relay``: as its own relay sending these templates (giaddr
        set, unicast to kea: the none rows), else as clients broadcasting to the router."""
        t = self.templates
        seconds = self.duration if duration is None else duration
        discover, request = own_relay or (t.discover, t.request)
        relayed = own_relay is not None
        argv = [
            "env", f"LD_PRELOAD={self.shim}",
            "taskset", "-c", OTHERS_CPU,
            "timeout", str(int(seconds + 15)),
            "perfdhcp", "-4", "-g", "single", "-l", "eth0", "-L", "67" if relayed else "68",
            "-T", str(discover), "-T", str(request),
            "-X", str(t.xid), "-X", str(t.xid), "-O", str(t.mac_last), "-O", str(t.mac_last),
            "-E", "0", "-E", str(t.secs), "-I", str(t.requested_ip), "-S", str(t.server_id),
            "-R", str(CLIENTS), "-r", str(rate), "-p", str(int(seconds)), "-W", "500000",
            SERVER if relayed else "255.255.255.255",
        ]
        done = self.runner.run(self.topo.netns("gen"), argv, timeout=seconds + 30)
        return parse_perfdhcp(done.stdout + done.stderr)

    def lossless_rate(self, ladder: list[int], own_relay: tuple[Path, Path] | None = None,
                      retries: int = 1, refine: int = 0) -> int:
        """The ladder's highest step held without loss, refined by ``refine`` bisections between
        it and the step that lost (to REFINED_TO): a ladder's steps, 10-20 % apart, would
        otherwise be the resolution of every ratio of lossless rates. A step that loses is run
        again, up to ``retries`` times, before it counts as lost: the machine is shared, and a
        moment's stall costs any row a step, which a median of three runs does not absorb. A
        step during which the hypervisor kept more than STALLED of the machine's CPU time from
        it (steal time) is void: run again, up to VOID_STEPS times, without using a retry.
        Every row gets the same."""
        best, lost = 0, None
        for rate in ladder:
            if not self.holds(rate, own_relay, retries):
                lost = rate
                break
            best = rate
        for _ in range(refine):
            if lost is None or lost - best < 2 * REFINED_TO:
                break
            middle = (best + lost) // 2 // REFINED_TO * REFINED_TO
            if self.holds(middle, own_relay, retries):
                best = middle
            else:
                lost = middle
        return best

    def holds(self, rate: int, own_relay: tuple[Path, Path] | None, retries: int) -> bool:
        """Whether ``rate`` is held without loss in one of ``1 + retries`` runs (void runs, see
        ``lossless_rate``, not counted)."""
        failed = voided = 0
        while failed <= retries:
            held, stolen = self.ladder_step(rate, own_relay, failed + voided)
            if held:
                return True
            if stolen > STALLED and voided < VOID_STEPS:
                voided += 1
            else:
                failed += 1
        return False

    def ladder_step(self, rate: int, own_relay: tuple[Path, Path] | None, attempt: int
                    ) -> tuple[bool, float]:
        """Whether one perfdhcp run at ``rate`` was lossless, and the share of the machine's CPU
        time stolen meanwhile."""
        before = {host: self.udp_counters(host) for host in ("server", "gen")}
        stolen, started = steal_seconds(), time.monotonic()
        waits_before = shared_cpu_waits(self.kea)
        result = self.perfdhcp(rate, own_relay=own_relay)
        waited, softirqd, rcu = (after - before for after, before
                                 in zip(shared_cpu_waits(self.kea), waits_before, strict=True))
        share = ((steal_seconds() - stolen)
                 / ((time.monotonic() - started) * (os.cpu_count() or 1)))
        achieved = result.ra_received / self.duration
        # Where the drops were: a full socket buffer at kea (server) or perfdhcp (gen).
        full = {host: self.udp_counters(host)["RcvbufErrors"] - counts["RcvbufErrors"]
                for host, counts in before.items()}
        print(f"    ladder {rate}/s{f' (again, {attempt})' if attempt else ''}: "
              f"{achieved:.0f} DORA/s completed, drops "
              f"{result.do_drops}+{result.ra_drops} of {result.do_sent}+{result.ra_sent}; "
              f"full socket buffers: kea {full['server']}, perfdhcp {full['gen']}; kea waited "
              f"{waited * 1e3:.0f} ms for its CPU (ksoftirqd {softirqd * 1e3:.0f} ms, RCU "
              f"softirqs {rcu}); steal {share:.1%}{' (void)' if share > STALLED else ''}",
              flush=True)
        return result.lossless and achieved >= 0.95 * rate, share

    def udp_counters(self, host: str) -> dict[str, int]:
        """A host's UDP counters (/proc/net/snmp)."""
        return udp_counters(self.topo.netns(host))

    def sink_arrivals(self) -> int:
        """UDP datagrams that reached the sink's socket (read or dropped for a full buffer)."""
        udp = self.udp_counters("sink")
        return udp["InDatagrams"] + udp["RcvbufErrors"]

    def blast(self, rate: int, seconds: float, arrivals: Callable[[], int]) -> tuple[int, int]:
        """The generator at ``rate`` for ``seconds``: (sent, arrived by ``arrivals``). It sends
        from the client LAN's switch port facing lanc0, as a generator plugged into the router's
        port would: the bridge's flooding of each broadcast would otherwise cost its CPU (the
        other one) more than the sending, and make it the limit before the relay."""
        before = arrivals()
        port = self.topo.switch_port_name(self.topo.lans[0], 0)
        done = self.runner.run(self.topo.switch_netns, [
            "taskset", "-c", OTHERS_CPU, "timeout", str(int(seconds + 10)), str(self.generator),
            port, str(rate), str(seconds), str(self.templates.discover)], timeout=seconds + 20)
        sent = int(done.stdout.strip() or 0)
        time.sleep(0.3)  # the last frames through the relay
        return sent, arrivals() - before

    @contextlib.contextmanager
    def sink_counter(self) -> Iterator[Callable[[], int]]:
        """The counter (``_SINK_COUNTER``) on the ingress of the switch's port facing up0, for
        as long as the block runs: yields a reader of its count."""
        namespace = self.topo.switch_netns
        port = self.topo.switch_port_name(self.topo.lans[1], 0)
        self.runner.run(namespace, ["tc", "qdisc", "add", "dev", port, "clsact"], timeout=10)
        try:
            self.runner.run(namespace, ["tc", "filter", "add", "dev", port, "ingress", "bpf",
                                        "da", "obj", str(self.counter), "sec", "tc"], timeout=30)
            shown = subprocess.run(["bpftool", "-j", "prog", "show", "name", "sink_counter"],
                                   capture_output=True, text=True, timeout=20, check=True)
            found = json.loads(shown.stdout)
            (map_id,) = (found[0] if isinstance(found, list) else found)["map_ids"]

            def count() -> int:
                done = subprocess.run(["bpftool", "-j", "map", "lookup", "id", str(map_id),
                                       "key", "0", "0", "0", "0"], capture_output=True,
                                      text=True, timeout=20, check=True)
                return int.from_bytes(bytes(int(b, 16) for b in json.loads(done.stdout)["value"]),
                                      "little")

            yield count
        finally:
            self.runner.run(namespace, ["tc", "qdisc", "del", "dev", port, "clsact"], timeout=10)

    def max_relayed_rate(self, ladder: list[int]) -> int:
        """The highest generator rate at which every request the generator sent left the router
        for the sink, the router's receive processing steered to RELAY_CPU (RPS), and what
        follows the router's send (the switch's port, where the counter takes them) to the
        other CPU: RELAY_CPU does the relay's work alone, whichever relay it is. First, at a
        low rate, every request must reach the sink's UDP layer itself (checksums right)."""
        with self.steered(self.topo.lans[1]):
            self.blast(200, 1, self.sink_arrivals)  # warm-up: the sink's neighbour entry
            sent, arrived = self.blast(1000, 1, self.sink_arrivals)
            print(f"    sink 1000/s to its socket: sent {sent}, arrived {arrived}", flush=True)
            if arrived < sent:
                return 0
            best = 0
            with self.sink_counter() as counted:
                for rate in ladder:
                    sent, arrived = self.blast(rate, 2, counted)
                    print(f"    sink {rate}/s: sent {sent}, arrived {arrived}", flush=True)
                    if arrived < sent:
                        break
                    best = sent // 2
                    if sent < 0.95 * rate * 2:
                        # The generator's CPU, not the relay, is the limit: no loss at what it
                        # sent, a lower bound of the relay's.
                        print(f"    sink: the generator's limit, {best}/s, all relayed",
                              flush=True)
                        break
            return best

    @contextlib.contextmanager
    def steered(self, lan: Lan) -> Iterator[None]:
        """The router's receive processing on RELAY_CPU (RPS on lanc0) and what it sends to
        ``lan`` received on OTHERS_CPU (RPS on the switch's port facing the router there),
        undone after: a veth delivers a frame in its sender's context, so without this the
        router's receive from the client LAN runs on the generator's CPU and the client LAN's
        receive of what the router sends (the switch's flood, the clients' stacks) on the CPU
        that sent it."""
        steered = ((self.topo.netns("router"), "lanc0", RELAY_CPU),
                   (self.topo.switch_netns, self.topo.switch_port_name(lan, 0), OTHERS_CPU))
        for namespace, ifname, cpu in steered:
            self.runner.run(namespace, ["sh", "-c", f"echo {1 << int(cpu):x} > "
                                        f"/sys/class/net/{ifname}/queues/rx-0/rps_cpus"],
                            timeout=10)
        try:
            yield
        finally:
            for namespace, ifname, _ in steered:
                self.runner.run(namespace, ["sh", "-c", "echo 0 > "
                                            f"/sys/class/net/{ifname}/queues/rx-0/rps_cpus"],
                                timeout=10)

    def transit_us(self, rate: int, seconds: int, own_relay: tuple[Path, Path] | None = None
                   ) -> dict[MessageType, float]:
        """Median time (µs) each DORA packet spends in the router, from tcpdump on both sides."""
        router = self.topo.netns("router")
        workdir = self.shim.parent
        captures, processes = {}, []
        for interface in ("lanc0", "up0"):
            path = captures[interface] = workdir / f"{interface}.pcap"
            path.unlink(missing_ok=True)
            process = self.runner.start(router, [
                "taskset", "-c", OTHERS_CPU, "timeout", str(seconds + 30),
                "tcpdump", "-i", interface, "-n", "-s", "1600", "-B", "8192", "-U",
                "--time-stamp-precision", "nano", "-c", str(8 * rate * seconds + 100),
                "-w", str(path), "udp port 67 or udp port 68",
            ], f"tcpdump-{interface}-{secrets.token_hex(2)}")
            processes.append(process)
        try:
            for process in processes:
                if not wait_for(functools.partial(says, process, "listening on"), 10):
                    raise RuntimeError(f"tcpdump did not start:\n{process.output()}")
            self.perfdhcp(rate, seconds, own_relay)
        finally:
            for process in processes:
                self.runner.stop(process)
        return transit_medians(read_pcap(captures["lanc0"]), read_pcap(captures["up0"]))


def says(process: Process, text: str) -> bool:
    """Whether the process's output so far holds ``text``."""
    return text in process.output()


def read_pcap(path: Path) -> list[tuple[float, DhcpMessage]]:
    """(timestamp, message) of each DHCP packet in a pcap file (Ethernet, IPv4, UDP)."""
    data = path.read_bytes()
    if len(data) < 24:
        return []
    magic = data[:4]
    endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    scale = 1e-9 if magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d") else 1e-6
    record = struct.Struct(endian + "IIII")
    packets, offset = [], 24
    while offset + record.size <= len(data):
        seconds, fraction, captured, _ = record.unpack_from(data, offset)
        frame = data[offset + record.size : offset + record.size + captured]
        offset += record.size + captured
        if len(frame) < 42 or frame[12:14] != b"\x08\x00" or frame[23] != 17:
            continue
        udp = 14 + (frame[14] & 0x0F) * 4
        try:
            packets.append((seconds + fraction * scale, decode(frame[udp + 8 :])))
        except WireError:
            continue
    return packets


def transit_medians(lan: list[tuple[float, DhcpMessage]], up: list[tuple[float, DhcpMessage]]
                    ) -> dict[MessageType, float]:
    """Requests go lanc0 -> up0, replies up0 -> lanc0: pair first sightings by (xid, type)."""

    def first_seen(
        packets: list[tuple[float, DhcpMessage]], op: int
    ) -> dict[tuple[int, int], float]:
        seen: dict[tuple[int, int], float] = {}
        for stamp, msg in packets:
            if msg.op == op and msg.message_type is not None:
                seen.setdefault((msg.xid, int(msg.message_type)), stamp)
        return seen

    transits: dict[MessageType, list[float]] = {kind: [] for kind in DORA}
    for op, entering, leaving in ((1, lan, up), (2, up, lan)):
        ins, outs = first_seen(entering, op), first_seen(leaving, op)
        for key, stamp in ins.items():
            if key in outs and key[1] in transits:
                transits[MessageType(key[1])].append((outs[key] - stamp) * 1e6)
    return {kind: statistics.median(values) if values else float("nan")
            for kind, values in transits.items()}


@dataclasses.dataclass(frozen=True)
class RelaySpec:
    """How to run one relay; ``pidfile`` is set when it daemonizes (its PID is read from there)."""

    argv: list[str]
    pidfile: Path | None = None
    env: dict[str, str] = dataclasses.field(default_factory=dict)


#: The rows: no relay, the peers, boothop's two datapaths.
RELAYS = ("none", "dhcrelay", "boothop", "boothop-quiet", "boothop-kernel",
          "boothop-kernel-quiet", "dnsmasq")
#: Not a default row: the floor of a user-space relay in CPython (see ``_FORWARDER``).
FLOOR = "python-forwarder"

_FORWARDER = r"""
# The floor of a relay in CPython: a bare forwarder, one recvfrom and one send per packet, the
# same fan-out as the relays measured (one helper); no parsing, no checks, no option 82, no
# logging, no counters: what any CPython relay pays before doing a relay's work.
import socket, struct, sys
helper, giaddr = (sys.argv[1], 67), socket.inet_aton(sys.argv[2])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
sock.bind(("0.0.0.0", 67))
# Replies leave broadcast (the requests carry the broadcast flag) out of the client LAN.
out = [(socket.IPPROTO_IP, 8,  # IP_PKTINFO (not in the socket module)
        struct.pack("=I4s4s", socket.if_nametoindex(sys.argv[3]), giaddr, bytes(4)))]
client = ("255.255.255.255", 68)
recvfrom, sendto, sendmsg = sock.recvfrom, sock.sendto, sock.sendmsg
while True:
    data, _ = recvfrom(4096)
    if data[0] == 1:
        sendto(data[:3] + bytes((data[3] + 1,)) + data[4:24] + giaddr + data[28:], helper)
    else:
        sendmsg([data], out, 0, client)
"""


#: A row's name with this suffix runs that relay without -a: no option 82, whose parsing and
#: echo cost the server (kea) CPU too, which the ``none`` row's requests (giaddr, no option 82)
#: do not carry.
NO_AGENT = "-no82"


#: Not a default row: no relay, the client side relaying itself with option 82 as the -a relays
#: add it, so that kea gets the same bytes as through them and parses the same option: the
#: difference in lossless rate to it is the relay's own cost on the CPU it shares with kea.
NONE_AGENT = "none-82"


#: The kernel rows' per-MAC rate limit: above the 2 requests a second each of perfdhcp's MACs
#: sends at the default ladder's top (20,000 DORA/s), so that it never drops the bench's load.
BENCH_MAC_RATE = 5
BENCH_MAC_BURST = 20


def relay_spec(name: str, workdir: Path, helper: str = SERVER) -> RelaySpec:
    agent = [] if name.endswith(NO_AGENT) else ["-a"]
    name = name.removesuffix(NO_AGENT)
    common = ["-id", "lanc0", "-iu", "up0", *agent]
    if name in ("none", NONE_AGENT):
        return RelaySpec([])
    if name == "dhcrelay":
        # Daemonized, as deployed: in the foreground (-d) it writes every packet to stderr,
        # which would bill log formatting to its CPU time.
        pidfile = workdir / f"dhcrelay-{helper}.pid"
        return RelaySpec(["dhcrelay", "-q", "-4", "-pf", str(pidfile), *common, helper], pidfile)
    if name.startswith("boothop"):
        # At boothop-relay's default log level (info) one line per relayed step is written (to
        # the run's log file): measured here as deployed. --log-level warning writes none
        # (boothop-quiet, boothop-kernel-quiet: as dhcrelay -q, which logs no packet either).
        datapath = "kernel" if name.startswith("boothop-kernel") else "user"
        quiet = ["--log-level", "warning"] if name.endswith("-quiet") else []
        # The kernel rows run per-MAC rate limits (the program's token buckets: their cost is
        # in the figures) above the bench's per-MAC rate. The user row keeps them off, as it
        # was measured before (dhcrelay and dnsmasq have none).
        # Metrics on, read once at the end of each pass (which path took the requests).
        limits = ("mac_rate = 0" if datapath == "user"
                  else f"mac_rate = {BENCH_MAC_RATE}\nmac_burst = {BENCH_MAC_BURST}")
        config = workdir / f"{datapath}.toml"
        config.write_text(f'metrics = "{METRICS}"\n[rate_limit]\n{limits}\n')
        return RelaySpec([sys.executable, "-m", "boothop.relay", "-d", "--datapath", datapath,
                          "--config", str(config), *quiet, *common, helper])
    if name == FLOOR:
        return RelaySpec([sys.executable, "-c", _FORWARDER, helper, ROUTER_DOWN, "lanc0"])
    if name == "dnsmasq":
        # dnsmasq's relay adds no option 82 (it has no -a): a little less work per request.
        return RelaySpec(["dnsmasq", "-k", "-C", "/dev/null", "-p", "0", "--log-facility=-",
                          f"--pid-file={workdir / 'dnsmasq.pid'}",
                          f"--dhcp-relay={ROUTER_DOWN},{helper}"])
    raise ValueError(f"unknown relay {name!r} ({', '.join((*RELAYS, FLOOR))})")


#: boothop-relay's metrics endpoint in the router's namespace.
METRICS = "127.0.0.1:9468"
_SCRAPE = "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], " \
    "timeout=10).read().decode())"


def requests_by_path(bench: Bench, name: str) -> str:
    """Which path handled boothop's requests, from its metrics (one scrape: the relay's own
    snapshot once, not a stats file rewritten four times a second): the BOOTREQUESTs the kernel
    datapath took (relayed, or dropped over their MAC's rate) and the daemon's, the
    rate-limited drops, why requests went up, and the step events the ring had no room for
    (the daemon's lines run at idle priority: on a CPU kea keeps busy they wait)."""
    if not name.startswith("boothop"):
        return ""
    text = bench.runner.run(bench.topo.netns("router"), [sys.executable, "-c", _SCRAPE,
                                                         f"http://{METRICS}/metrics"],
                            timeout=20).stdout
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(("boothop_relay_datapath_requests_total",
                            'boothop_relay_dropped_total{reason="rate-limited-mac"}',
                            "boothop_relay_kernel_passed_up_total",
                            "boothop_relay_kernel_events_lost_total")):
            key, value = line.rsplit(" ", 1)
            if float(value):
                found[key] = float(value)
    kernel = found.get('boothop_relay_datapath_requests_total{path="kernel"}', 0)
    user = found.get('boothop_relay_datapath_requests_total{path="user"}', 0)
    limited = found.get('boothop_relay_dropped_total{reason="rate-limited-mac"}', 0)
    up = {k.split('"')[1]: int(v) for k, v in found.items() if "passed_up" in k}
    lost = found.get("boothop_relay_kernel_events_lost_total", 0)
    return (f"; requests: kernel {kernel:.0f}, daemon {user:.0f}, rate-limited {limited:.0f}"
            + (f", passed up {up}" if up else "")
            # Step lines the program had no room for: the daemon's log fell behind.
            + (f", step events lost {lost:.0f}" if lost else ""))


def ksoftirqd() -> list[int]:
    """The PIDs of the per-CPU softirq threads (deferred softirq work is charged to them)."""
    found = []
    for comm in Path("/proc").glob("[0-9]*/comm"):
        with contextlib.suppress(OSError):
            if comm.read_text().startswith("ksoftirqd/"):
                found.append(int(comm.parent.name))
    return found


#: The finest step (DORA/s) a bisection of the lossless ladder goes to (``--refine``).
REFINED_TO = 100

#: A ladder step during which steal time took more than this share of the machine's CPU time
#: is void (a stall of the shared host, not the rows' doing), and VOID_STEPS times at most.
STALLED = 0.05
VOID_STEPS = 3


def steal_seconds() -> float:
    """CPU time the hypervisor gave to others while this machine wanted it (/proc/stat)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return int(fields[8]) / CLK_TCK


def cpu_total(pids: list[int]) -> float:
    """utime + stime of the processes, in seconds."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += sum(cpu_seconds(pid))
    return total


def tc_program_ns() -> int:
    """Run time (ns) of the tc programs named relay (boothop's kernel datapath), as the kernel
    counts it while BPF statistics are enabled (``enable_bpf_stats``)."""
    done = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True,
                          timeout=20, check=False)
    programs = json.loads(done.stdout or "[]")
    return sum(p.get("run_time_ns", 0) for p in programs
               if p.get("name") == "relay" and p.get("type") == "sched_cls")


@contextlib.contextmanager
def enable_bpf_stats() -> Iterator[None]:
    """BPF_ENABLE_STATS for this script's lifetime (libbpf's bpf_enable_stats: the kernel times
    each program run while the returned descriptor is open; closing it turns that off)."""
    try:
        lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
        fd = lib.bpf_enable_stats(0)  # BPF_STATS_RUN_TIME
    except OSError:
        fd = -1
    try:
        yield
    finally:
        if fd >= 0:
            os.close(fd)


def run_time(pid: int) -> float:
    """On-CPU time of all the process's threads, in seconds, from the scheduler's own count
    (``/proc/PID/task/*/schedstat``, nanoseconds): exact where utime + stime are sampled at
    ticks; like them it holds the softirq work done while the process was running."""
    return schedstat_seconds(Path(f"/proc/{pid}/task").glob("*"))


def pinned_run_time(cpu: str) -> float:
    """On-CPU time (s, the scheduler's exact count as ``run_time``) of every thread allowed on
    ``cpu`` alone: kea, the relay and that CPU's kernel threads (ksoftirqd, kworkers), so all
    the work the shared CPU did but what ran in its idle task's context (no interrupt time is
    accounted apart on this kernel). A thread that ends meanwhile takes its time with it."""
    pinned = []
    for task in Path("/proc").glob("[0-9]*/task/[0-9]*"):
        with contextlib.suppress(OSError, IndexError):
            status = (task / "status").read_text()
            if status.split("Cpus_allowed_list:", 1)[1].split("\n", 1)[0].strip() == cpu:
                pinned.append(task)
    return schedstat_seconds(pinned)


def schedstat_seconds(tasks: Iterable[Path], field: int = 0) -> float:
    """The threads' on-CPU time, in seconds (``/proc/.../task/TID/schedstat``'s first field, ns),
    or with ``field`` 1 their time runnable but waiting for a CPU (run delay); a thread gone
    meanwhile counts 0."""
    total = 0
    for task in tasks:
        with contextlib.suppress(OSError, ValueError):
            total += int((task / "schedstat").read_text().split()[field])
    return total / 1e9


def shared_cpu_waits(kea: int) -> tuple[float, float, int]:
    """What kept kea from its CPU, counted since boot: the run delay (s) of its main thread (the
    one that answers; its others wait behind it), the run time (s) of RELAY_CPU's ksoftirqd
    (softirq work deferred to a thread, which kea waits behind), and RELAY_CPU's RCU softirqs
    (RCU callbacks, such as the routes the receiving hosts' stacks allocate for each limited
    broadcast and free)."""
    softirqd = [Path(f"/proc/{pid}/task/{pid}") for pid in ksoftirqd()
                if Path(f"/proc/{pid}/comm").read_text().strip() == f"ksoftirqd/{RELAY_CPU}"]
    rcu = next(line.split()[1:] for line in Path("/proc/softirqs").read_text().splitlines()
               if line.split()[0] == "RCU:")
    return (schedstat_seconds([Path(f"/proc/{kea}/task/{kea}")], 1),
            schedstat_seconds(softirqd), int(rcu[int(RELAY_CPU)]))


def children_cpu() -> float:
    """utime + stime of this script's waited-for descendants (perfdhcp, through timeout)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def context_switches(pid: int) -> tuple[int, int]:
    """Voluntary (mostly: blocking, i.e. one wake-up each) and involuntary context switches of
    all the process's threads."""
    voluntary = involuntary = 0
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        with contextlib.suppress(OSError):
            for line in status.read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    voluntary += int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches:"):
                    involuntary += int(line.split()[1])
    return voluntary, involuntary


@contextlib.contextmanager
def running_relay(runner: ProcessRunner, topo: Topology, spec: RelaySpec, name: str,
                  port: int = 67) -> Iterator[int | None]:
    """Start the relay pinned to RELAY_CPU; yield its PID (None: no relay) once it listens on
    UDP ``port``; stop it by PID."""
    if not spec.argv:
        yield None
        return
    if spec.pidfile is not None:
        spec.pidfile.unlink(missing_ok=True)
    process = runner.start(topo.netns("router"), ["taskset", "-c", RELAY_CPU, *spec.argv], name,
                           env=spec.env)
    pid = process.pid
    try:
        def listening() -> bool:
            out = runner.run(topo.netns("router"), ["ss", "-Hnul", f"sport = :{port}"],
                             timeout=10)
            return bool(out.stdout.strip())

        # Generous: loading the tc program (the verifier) takes seconds on a busy machine.
        if not wait_for(listening, 60):
            raise RuntimeError(f"{name} did not start:\n{process.output()}")
        if spec.pidfile is not None:
            wait_for(lambda: spec.pidfile is not None and spec.pidfile.exists(), 5)
            pid = int(spec.pidfile.read_text().strip())
        yield pid
    finally:
        runner.stop(process)
        if "kernel" in spec.argv:
            # Killed before it detached (a busy machine, the grace period out), the relay leaves
            # its tc program relaying: the next rows would be relayed twice.
            for device in ("lanc0", "up0"):
                runner.run(topo.netns("router"), ["tc", "qdisc", "del", "dev", device, "clsact"],
                           timeout=10)
        if pid != process.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            if not wait_for(lambda: not Path(f"/proc/{pid}").exists(), 3):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


@dataclasses.dataclass
class Figures:
    lossless: list[int] = dataclasses.field(default_factory=list)
    #: CPU per DORA of relay + kea + perfdhcp + ksoftirqd (see the module's note).
    counted_us: list[float] = dataclasses.field(default_factory=list)
    #: Everything the shared CPU ran per DORA: kea, the relay, its kernel threads
    #: (``pinned_run_time``): what the relay costs the server's CPU is a row's less none's.
    server_cpu_us: list[float] = dataclasses.field(default_factory=list)
    #: The time the shared CPU was busy per DORA (``idle_seconds``): with what it ran in its
    #: idle task's context (softirq work an interrupt brought, which --steer makes most of the
    #: router's receive), which no thread's run time holds.
    busy_us: list[float] = dataclasses.field(default_factory=list)
    #: The relay process's own CPU time per DORA (the scheduler's run time: ``run_time``).
    process_us: list[float] = dataclasses.field(default_factory=list)
    #: The tc program's own run time per DORA (kernel datapath only).
    program_us: list[float] = dataclasses.field(default_factory=list)
    #: perfdhcp's round trips at the CPU rate: DISCOVER-OFFER + REQUEST-ACK average delays.
    round_trip_ms: list[float] = dataclasses.field(default_factory=list)
    transit_us: list[dict[MessageType, float]] = dataclasses.field(default_factory=list)
    max_relayed: list[int] = dataclasses.field(default_factory=list)

    def median_transit(self, kind: MessageType) -> float:
        return _median([t[kind] for t in self.transit_us])

    @property
    def added_per_dora_us(self) -> float:
        return sum(self.median_transit(kind) for kind in DORA)


def measure_once(name: str, bench: Bench, args: argparse.Namespace, run: int, figures: Figures,
                 kea: int, workdir: Path) -> None:
    own_relay = {"none": bench.templates.relayed,
                 NONE_AGENT: bench.templates.relayed_with_agent}.get(name)
    relayed = own_relay is not None
    spec = relay_spec(name, workdir)

    def steered() -> contextlib.AbstractContextManager[None]:
        # Not the transit pass: a frame's timestamp is taken before RPS moves it (netdev's
        # tstamp_prequeue), so every row's transit would hold the hop to the other CPU.
        return bench.steered(bench.topo.lans[0]) if args.steer else contextlib.nullcontext()

    with running_relay(bench.runner, bench.topo, spec, f"{name}-{run}") as pid:
        with steered():
            bench.perfdhcp(min(args.cpu_rate, 200), 2, own_relay)  # warm-up: ARP, kea's leases
            watched = [p for p in (pid, kea, *ksoftirqd()) if p is not None]
            relay_before = run_time(pid) if pid else 0.0
            counted_before = cpu_total(watched) + children_cpu()
            program_before = tc_program_ns()
            shared_before = pinned_run_time(RELAY_CPU)
            idle_before, started = idle_seconds(RELAY_CPU), time.monotonic()
            result = bench.perfdhcp(args.cpu_rate, args.cpu_duration, own_relay)
            busy = time.monotonic() - started - (idle_seconds(RELAY_CPU) - idle_before)
            shared = pinned_run_time(RELAY_CPU) - shared_before
            counted = cpu_total(watched) + children_cpu() - counted_before
            used = (run_time(pid) if pid else 0.0) - relay_before
            program = tc_program_ns() - program_before
        if result.ra_received:
            figures.counted_us.append(counted / result.ra_received * 1e6)
            figures.server_cpu_us.append(shared / result.ra_received * 1e6)
            figures.busy_us.append(busy / result.ra_received * 1e6)
            figures.process_us.append(used / result.ra_received * 1e6)
            figures.program_us.append(program / result.ra_received / 1e3)
            figures.round_trip_ms.append(result.do_delay_ms + result.ra_delay_ms)
        if not args.cpu_only:
            figures.transit_us.append(bench.transit_us(args.latency_rate, 2, own_relay))
            with steered():
                figures.lossless.append(bench.lossless_rate(args.ladder, own_relay,
                                                            args.retries, args.refine))
        paths = requests_by_path(bench, name)
    sink_paths = ""
    if not relayed and not args.cpu_only:
        sink = relay_spec(name, workdir, SINK)
        with running_relay(bench.runner, bench.topo, sink, f"{name}-sink-{run}"):
            figures.max_relayed.append(bench.max_relayed_rate(args.sink_ladder))
            sink_paths = requests_by_path(bench, name)
    transit = figures.transit_us[-1] if figures.transit_us else dict.fromkeys(DORA, float("nan"))
    print(
        f"  {name} run {run + 1}: lossless {figures.lossless[-1] if figures.lossless else 0}/s; "
        f"at {args.cpu_rate}/s "
        f"{result.ra_received} DORA, drops {result.do_drops}+{result.ra_drops}, counted CPU "
        f"{figures.counted_us[-1] if result.ra_received else 0:.1f} us/DORA, on the server's CPU "
        f"{figures.server_cpu_us[-1] if result.ra_received else 0:.1f}, busy "
        f"{figures.busy_us[-1] if result.ra_received else 0:.1f} (relay process "
        f"{figures.process_us[-1] if result.ra_received else 0:.1f}, tc program "
        f"{figures.program_us[-1] if result.ra_received else 0:.2f}), round trips "
        f"{result.do_delay_ms + result.ra_delay_ms:.2f} ms; max relayed "
        f"{figures.max_relayed[-1] if figures.max_relayed else 0}/s; transit us "
        + " ".join(f"{k.name} {transit[k]:.0f}" for k in DORA)
        + (f"\n    DORA passes{paths}" if paths else "")
        + (f"\n    sink pass{sink_paths}" if sink_paths else ""),
        flush=True,
    )


def _median(values: list[float] | list[int]) -> float:
    return statistics.median(values) if values else float("nan")


def report(figures: dict[str, Figures], args: argparse.Namespace) -> None:
    print(f"\nresults (medians of {args.runs} runs, {args.duration:g} s per perfdhcp run, "
          f"relay and kea on CPU {RELAY_CPU}, perfdhcp on CPU {OTHERS_CPU}"
          f"{', receive steered' if args.steer else ', receive on the sender CPU (--no-steer)'}"
          f"; CPU at "
          f"{args.cpu_rate} DORA/s, transit at {args.latency_rate} DORA/s):")
    baseline = _median(figures["none"].counted_us) if "none" in figures else float("nan")
    print(f"  {'relay':15s} {'lossless':>9s} {'counted':>9s} {'relay cost':>10s} "
          f"{'server CPU':>10s} {'busy':>8s} {'process':>8s} {'program':>8s} {'RTT@CPU':>8s} "
          f"{'max relayed':>11s}   "
          "median transit (us): "
          + " ".join(f"{k.name:>8s}" for k in DORA) + "  added/DORA")
    cost = {}
    for name, f in figures.items():
        cost[name] = _median(f.counted_us) - baseline
        print(f"  {name:15s} {_median(f.lossless):>7.0f}/s {_median(f.counted_us):>7.1f}us "
              f"{cost[name]:>8.1f}us {_median(f.server_cpu_us):>8.1f}us "
              f"{_median(f.busy_us):>6.1f}us "
              f"{_median(f.process_us):>6.1f}us "
              f"{_median(f.program_us):>6.2f}us "
              f"{_median(f.round_trip_ms):>6.2f}ms {_median(f.max_relayed):>9.0f}/s   "
              + " " * 21 + " ".join(f"{f.median_transit(k):>8.0f}" for k in DORA)
              + f"  {f.added_per_dora_us:>8.0f} us")
    below = [name for name, f in figures.items() if f.lossless and not _median(f.lossless)]
    if below:
        print(f"  lossless 0/s: {', '.join(below)} lost DORAs already at the ladder's first "
              f"step, {args.ladder[0]}/s")
    if "dhcrelay" in figures:
        d = figures["dhcrelay"]
        for name in figures:
            if name in ("dhcrelay", "none", NONE_AGENT):
                continue
            f = figures[name]
            print(f"  ratio {name}/dhcrelay: lossless rate "
                  f"{_median(f.lossless) / max(_median(d.lossless), 1):.2f}, relay cost per "
                  f"DORA {cost[name] / cost['dhcrelay']:.2f}, max relayed rate "
                  f"{_median(f.max_relayed) / max(_median(d.max_relayed), 1):.2f}, latency added "
                  f"{f.added_per_dora_us / d.added_per_dora_us:.2f}")
    for none in ("none", NONE_AGENT):
        if none not in figures:
            continue
        n = figures[none]
        for name in figures:
            if name not in ("none", NONE_AGENT):
                f = figures[name]
                print(f"  {name} lossless rate / {none}'s: "
                      f"{_median(f.lossless) / max(_median(n.lossless), 1):.2f}; "
                      f"median of the runs' ratios "
                      f"{_median(run_ratios(f.lossless, n.lossless)):.2f}; on the server's "
                      f"CPU {_median(f.server_cpu_us) / _median(n.server_cpu_us):.3f}x its "
                      "time per DORA (median of the runs' "
                      f"{_median(run_ratios(f.server_cpu_us, n.server_cpu_us)):.3f}x), busy "
                      f"{_median(f.busy_us) / _median(n.busy_us):.3f}x (runs' "
                      f"{_median(run_ratios(f.busy_us, n.busy_us)):.3f}x)")


def run_ratios(rows: Sequence[float], baseline: Sequence[float]) -> list[float]:
    """Each run's ratio of a row's figure to the baseline's in the same run: the machine's speed
    drifts over minutes (kea's own lossless rate by up to 4x in a session), and a run's rows are
    minutes closer together than its runs."""
    return [row / base for row, base in zip(rows, baseline, strict=True) if base]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=int, default=4, help="seconds per perfdhcp run")
    parser.add_argument("--cpu-rate", type=int, default=2000, help="DORA/s for the CPU figure")
    parser.add_argument("--cpu-duration", type=int, default=8,
                        help="seconds of the CPU pass (tick-sampled: longer is steadier)")
    parser.add_argument("--latency-rate", type=int, default=500,
                        help="DORA/s for the latency pass (tcpdump on both router interfaces)")
    parser.add_argument("--ladder", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1000, 2000, 3000, 4000, 5000, 6000, 8000, 10000, 12000, 14000,
                                 16000, 20000])
    parser.add_argument("--retries", type=int, default=1,
                        help="runs again of a ladder step that lost before it ends the ladder")
    parser.add_argument("--refine", type=int, default=2,
                        help="bisections between the ladder's last step held and the one lost")
    parser.add_argument("--sink-ladder", type=lambda s: [int(x) for x in s.split(",")],
                        # Steps of a quarter past 40,000/s: the 5x-dhcrelay line lies between
                        # doublings (dhcrelay holds 20,000/s here).
                        default=[5000, 10000, 20000, 40000, 50000, 60000, 80000, 100000,
                                 120000, 160000, 200000, 240000, 280000, 320000, 360000, 400000,
                                 480000, 640000])
    parser.add_argument("--relays", default=",".join(RELAYS),
                        help=f"rows, of: {', '.join(RELAYS)}, and {FLOOR} (a bare CPython "
                        "forwarder: the floor of any CPython relay); a relay's name with "
                        f"{NO_AGENT} runs it without -a (no option 82); {NONE_AGENT}: no relay, "
                        "the client side relaying itself with option 82")
    parser.add_argument("--steer", action=argparse.BooleanOptionalAction, default=True,
                        help="the DORA passes with the router's receive from the client LAN on "
                        f"CPU {RELAY_CPU} and the client LAN's receive from the router on CPU "
                        f"{OTHERS_CPU} (RPS), every row alike: the router and the server on one "
                        "CPU, the clients and their switch on the other (--no-steer: each "
                        "frame's receive on its sender's CPU, as before 2026-12-01)")
    parser.add_argument("--cpu-only", action="store_true",
                        help="only the CPU pass (no lossless ladder, transit or sink passes)")
    args = parser.parse_args()
    exit_on_sigterm()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    for tool in ("perfdhcp", "kea-dhcp4", "dhcrelay", "taskset", "cc", "clang", "bpftool", "ss",
                 "tcpdump", "ethtool"):
        if shutil.which(tool) is None:
            print(f"{tool} not installed", file=sys.stderr)
            return 2
    names = [n for n in args.relays.split(",") if n != "dnsmasq" or shutil.which("dnsmasq")]
    started, load = time.monotonic(), os.getloadavg()
    figures = {name: Figures() for name in names}
    with tempfile.TemporaryDirectory(prefix="bhp-bench-") as tmp:
        workdir = Path(tmp)
        templates = write_templates(workdir)
        shim = perfdhcp_shim.build(workdir, any_port=68)
        generator = build_generator(workdir)
        topo = topology(f"bhp-{secrets.token_hex(3)}")
        with topo, ProcessRunner(workdir / "logs") as runner, enable_bpf_stats():
            for host, port in (("gen", "eth0"), ("server", "srv0")):
                runner.run(topo.netns(host), ["ethtool", "-K", port, "tx", "off"], timeout=10)
            kea = start_kea(runner, topo.netns("server"), workdir / "kea", "srv0", [POOL])
            subprocess.run(["taskset", "-apc", SERVER_CPU, str(kea.pid)], check=True,
                           capture_output=True, timeout=10)
            runner.start(topo.netns("sink"), [sys.executable, "-c",
                         "import socket, time\ns = socket.socket(socket.AF_INET, "
                         "socket.SOCK_DGRAM)\ns.bind(('0.0.0.0', 67))\ntime.sleep(86400)"],
                         "sink")
            bench = Bench(topo, runner, templates, shim, generator,
                          build_sink_counter(workdir), args.duration, kea.pid)
            for run in range(args.runs):
                for name in names if run % 2 == 0 else names[::-1]:
                    measure_once(name, bench, args, run, figures[name], kea.pid, workdir)
    report(figures, args)
    print(f"total {time.monotonic() - started:.0f} s; load average at the start "
          f"{' '.join(f'{x:.2f}' for x in load)}, at the end "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} (the machine is shared)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
