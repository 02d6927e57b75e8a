"""The relay's kernel datapath: build, load and feed the tc program of ``relay/bpf/relay.bpf.c``.

The object is compiled from the source shipped in the package (``relay/compiled.py``). It is
loaded with libbpf through ctypes: Debian ships no maintained Python binding of libbpf, and bcc
needs the running kernel's headers, which this kind of machine (a kernel without modules or
headers) does not have; libbpf.so.1 with plain BPF C against the uapi headers needs neither.
Attaching it (clsact + a direct-action bpf filter) is pyroute2's, in ``relay/netlink.py``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import mmap
import os
import select
import struct
from collections import Counter
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path

from .compiled import PROGRAM_SOURCE, STEP_LINES_SOURCE, Unavailable, build
from .datapath import (
    ALLOWANCE,
    CLIENT,
    COUNTERS,
    EVENT_DELIVERED,
    EVENT_FORWARDED,
    PASSED_UP_REASONS,
    PEER,
    STEP,
    U32,
    KernelClient,
    KernelCounts,
    KernelPeer,
    Step,
    Tables,
)
from .replies import ReplyTracker
from .steplines import StepLines

PROGRAM = "relay"
#: TC_ACT_OK, TC_ACT_SHOT and TC_ACT_REDIRECT (linux/pkt_cls.h).
TC_ACT_OK = 0
TC_ACT_SHOT = 2
TC_ACT_REDIRECT = 7
_U64 = struct.Struct("<Q")
#: struct __sk_buff (linux/bpf.h): its size and where ifindex and ingress_ifindex sit.
_SKB_SIZE = 192
_SKB_INGRESS_IFINDEX = 36
_SKB_IFINDEX = 40


class _TestRunOpts(ctypes.Structure):
    """struct bpf_test_run_opts (bpf/bpf.h, libbpf 1.1)."""

    _fields_ = [("sz", ctypes.c_size_t), ("data_in", ctypes.c_void_p),
                ("data_out", ctypes.c_void_p), ("data_size_in", ctypes.c_uint32),
                ("data_size_out", ctypes.c_uint32), ("ctx_in", ctypes.c_void_p),
                ("ctx_out", ctypes.c_void_p), ("ctx_size_in", ctypes.c_uint32),
                ("ctx_size_out", ctypes.c_uint32), ("retval", ctypes.c_uint32),
                ("repeat", ctypes.c_int), ("duration", ctypes.c_uint32),
                ("flags", ctypes.c_uint32), ("cpu", ctypes.c_uint32),
                ("batch_size", ctypes.c_uint32)]


def _libbpf() -> ctypes.CDLL:
    name = ctypes.util.find_library("bpf") or "libbpf.so.1"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError as error:
        raise Unavailable(f"libbpf is not installed ({error})") from error
    pointer, c_int, c_char_p, c_void_p = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, \
        ctypes.c_void_p
    for function, restype, argtypes in (
        ("bpf_object__open_file", pointer, [c_char_p, c_void_p]),
        ("bpf_object__load", c_int, [pointer]),
        ("bpf_object__close", None, [pointer]),
        ("bpf_object__find_program_by_name", pointer, [pointer, c_char_p]),
        ("bpf_program__fd", c_int, [pointer]),
        ("bpf_object__find_map_fd_by_name", c_int, [pointer, c_char_p]),
        ("bpf_map_update_elem", c_int, [c_int, c_void_p, c_void_p, ctypes.c_uint64]),
        ("bpf_map_lookup_elem", c_int, [c_int, c_void_p, c_void_p]),
        ("bpf_map_delete_elem", c_int, [c_int, c_void_p]),
        ("bpf_map_get_next_key", c_int, [c_int, c_void_p, c_void_p]),
        ("bpf_map_lookup_and_delete_elem", c_int, [c_int, c_void_p, c_void_p]),
        ("bpf_map_lookup_batch", c_int, [c_int, c_void_p, c_void_p, c_void_p, c_void_p,
                                         ctypes.POINTER(ctypes.c_uint32), c_void_p]),
        ("bpf_map_delete_batch", c_int, [c_int, c_void_p, ctypes.POINTER(ctypes.c_uint32),
                                         c_void_p]),
        ("bpf_prog_test_run_opts", c_int, [c_int, ctypes.POINTER(_TestRunOpts)]),
        ("libbpf_num_possible_cpus", c_int, []),
        ("bpf_object__find_map_by_name", pointer, [pointer, c_char_p]),
        ("bpf_map__max_entries", ctypes.c_uint32, [pointer]),
        ("bpf_map__value_size", ctypes.c_uint32, [pointer]),
    ):
        bound = getattr(lib, function)
        bound.restype = restype
        bound.argtypes = argtypes
    return lib


def _failed(what: str, code: int | None = None) -> OSError:
    number = -code if code is not None and code < 0 else ctypes.get_errno()
    return OSError(number, f"{what}: {os.strerror(number)}")


class Program:
    """A loaded relay.bpf.o: its program's fd and its maps."""

    def __init__(self, path: Path) -> None:
        self._lib = lib = _libbpf()
        obj = lib.bpf_object__open_file(str(path).encode(), None)
        if not obj:
            raise Unavailable(f"libbpf cannot open {path}: {_failed('open')}")
        self._obj = obj
        code = lib.bpf_object__load(obj)
        if code:
            lib.bpf_object__close(obj)
            self._obj = None
            error = _failed("load", code)
            needs = (" (loading it needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN)"
                     if error.errno in (errno.EPERM, errno.EACCES) else "")
            raise Unavailable(f"the kernel refused {path.name}: {error}{needs}")
        self.fd = lib.bpf_program__fd(lib.bpf_object__find_program_by_name(obj, PROGRAM.encode()))
        self.cpus = lib.libbpf_num_possible_cpus()

    def close(self) -> None:
        if self._obj:
            self._lib.bpf_object__close(self._obj)
            self._obj = None

    def _map(self, name: str) -> int:
        fd = self._lib.bpf_object__find_map_fd_by_name(self._obj, name.encode())
        if fd < 0:
            raise KeyError(name)
        return int(fd)

    def max_entries(self, name: str) -> int:
        return int(self._lib.bpf_map__max_entries(
            self._lib.bpf_object__find_map_by_name(self._obj, name.encode())))

    def value_size(self, name: str) -> int:
        return int(self._lib.bpf_map__value_size(
            self._lib.bpf_object__find_map_by_name(self._obj, name.encode())))

    def update(self, name: str, key: bytes, value: bytes) -> None:
        code = self._lib.bpf_map_update_elem(self._map(name), key, value, 0)
        if code:
            raise _failed(f"update {name}", code)

    def delete(self, name: str, key: bytes) -> None:
        code = self._lib.bpf_map_delete_elem(self._map(name), key)
        if code and -code != errno.ENOENT:
            raise _failed(f"delete from {name}", code)

    def keys(self, name: str, size: int) -> list[bytes]:
        fd, found = self._map(name), []
        key, following = ctypes.create_string_buffer(size), ctypes.create_string_buffer(size)
        current: ctypes.Array[ctypes.c_char] | None = None
        while self._lib.bpf_map_get_next_key(fd, current, following) == 0:
            found.append(following.raw)
            key.raw = following.raw
            current = key
        return found

    def take(self, name: str, key: bytes, size: int) -> bytes | None:
        """Look up and delete one entry (None if absent)."""
        value = ctypes.create_string_buffer(size)
        if self._lib.bpf_map_lookup_and_delete_elem(self._map(name), key, value):
            return None
        return value.raw

    def entries(self, name: str, key_size: int, value_size: int) -> list[tuple[bytes, bytes]]:
        """Every entry, read in batches (one system call per 4096, not two per entry)."""
        fd, batch = self._map(name), 4096
        found: list[tuple[bytes, bytes]] = []
        keys = ctypes.create_string_buffer(key_size * batch)
        values = ctypes.create_string_buffer(value_size * batch)
        token, following = ctypes.c_uint32(0), ctypes.c_uint32(0)
        first = True
        while True:
            count = ctypes.c_uint32(batch)
            code = self._lib.bpf_map_lookup_batch(
                fd, None if first else ctypes.byref(token), ctypes.byref(following), keys,
                values, ctypes.byref(count), None)
            # One copy of each buffer per batch (``.raw`` copies the whole buffer).
            key_bytes, value_bytes = keys.raw, values.raw
            found += ((key_bytes[index * key_size:(index + 1) * key_size],
                       value_bytes[index * value_size:(index + 1) * value_size])
                      for index in range(count.value))
            if code:
                if ctypes.get_errno() == errno.ENOENT or -code == errno.ENOENT:
                    return found
                raise _failed(f"read {name}", code)
            token.value, first = following.value, False

    def per_cpu_sum(self, name: str, key: bytes) -> int:
        """A per-CPU u64 summed over the CPUs (0 if the key is absent)."""
        return sum(value for (value,) in map(_U64.unpack, self.per_cpu_values(name, key, 8)))

    def per_cpu_values(self, name: str, key: bytes, size: int) -> list[bytes]:
        """A per-CPU map's value of ``size`` bytes, one per CPU (none if the key is absent)."""
        stride = (size + 7) // 8 * 8  # the kernel pads each CPU's copy to 8 bytes
        values = ctypes.create_string_buffer(stride * self.cpus)
        if self._lib.bpf_map_lookup_elem(self._map(name), key, values):
            return []
        raw = values.raw
        return [raw[cpu * stride:cpu * stride + size] for cpu in range(self.cpus)]

    def replace(self, name: str, entries: dict[bytes, bytes], key_size: int) -> None:
        """Make the map hold exactly ``entries`` (new and changed first, then the stale gone)."""
        for key, value in entries.items():
            self.update(name, key, value)
        for key in self.keys(name, key_size):
            if key not in entries:
                self.delete(name, key)

    def test_run(self, frame: bytes, ifindex: int) -> tuple[int, bytes]:
        """BPF_PROG_TEST_RUN: the program on ``frame`` as received on ``ifindex``; its return
        code and the frame as it left the program (a clone it redirected is sent for real)."""
        code, out, _ = self.timed_run(frame, ifindex)
        return code, out

    def timed_run(self, frame: bytes, ifindex: int) -> tuple[int, bytes, int]:
        """``test_run``, and how long the program ran (ns, the kernel's clock). One run per
        call: the kernel's repeat would run it again on the frame it has just rewritten."""
        out = ctypes.create_string_buffer(len(frame) + 2048)
        ctx = bytearray(_SKB_SIZE)
        U32.pack_into(ctx, _SKB_INGRESS_IFINDEX, ifindex)
        U32.pack_into(ctx, _SKB_IFINDEX, ifindex)
        ctx_in = (ctypes.c_char * _SKB_SIZE).from_buffer(ctx)
        data_in = ctypes.create_string_buffer(frame, len(frame))
        opts = _TestRunOpts(sz=ctypes.sizeof(_TestRunOpts),
                            data_in=ctypes.cast(data_in, ctypes.c_void_p),
                            data_out=ctypes.cast(out, ctypes.c_void_p),
                            data_size_in=len(frame), data_size_out=len(out),
                            ctx_in=ctypes.cast(ctx_in, ctypes.c_void_p), ctx_size_in=_SKB_SIZE,
                            repeat=1)
        code = self._lib.bpf_prog_test_run_opts(self.fd, ctypes.byref(opts))
        if code:
            raise _failed("test run", code)
        return opts.retval, out.raw[: opts.data_size_out], opts.duration


class KernelDatapath:
    """The daemon's kernel datapath: the loaded program, the tables pushed into its maps, and
    the renderer of its step lines (None: StepLines renders them, ``step_lines_missing`` says
    why)."""

    def __init__(self, program: Program, step_lines: NativeStepLines | None = None,
                 step_lines_missing: str = "") -> None:
        self.program = program
        self.step_lines = step_lines
        self.step_lines_missing = step_lines_missing

    @classmethod
    def load(cls, directory: Path | None = None) -> KernelDatapath:
        """Build (if needed) and load the program; Unavailable says why it cannot."""
        program = Program(build(PROGRAM_SOURCE, directory))
        try:
            return cls(program, NativeStepLines.load(directory))
        except (Unavailable, OSError) as error:
            return cls(program, None, str(error))

    def push(self, tables: Tables) -> None:
        program = self.program
        program.replace("ifaces", tables.ifaces, 4)
        program.replace("addresses", tables.addresses, 4)
        program.replace("servers", tables.servers, 4)
        program.update("settings", bytes(4), tables.settings)

    def counts(self) -> KernelCounts:
        program = self.program
        counters = {name: program.per_cpu_sum("counters", U32.pack(index))
                    for index, name in enumerate(COUNTERS)}
        passed_up = {name: program.per_cpu_sum("counters", U32.pack(len(COUNTERS) + index))
                     for index, name in enumerate(PASSED_UP_REASONS)}
        received_on = {U32.unpack(key)[0]: program.per_cpu_sum("received_on", key)
                       for key in program.keys("received_on", 4)}
        forwarded = {address: peer.forwarded for address, peer in self.peers().items()
                     if peer.forwarded}
        return KernelCounts(counters, passed_up, received_on, forwarded)

    def peers(self) -> dict[IPv4Address, KernelPeer]:
        """What the program counted per helper and server."""
        found = {}
        for key in self.program.keys("peers", 4):
            per_cpu = self.program.per_cpu_values("peers", key, PEER.size)
            if per_cpu:  # else removed meanwhile
                found[IPv4Address(key)] = KernelPeer.summed(per_cpu)
        return found

    def events(self) -> Events:
        """The program's ring buffer of relayed packets and throttled clients."""
        return Events(self.program)

    def latency(self) -> dict[IPv4Address, tuple[list[int], float]]:
        """Per server, the kernel's reply latency histogram: counts per bucket, sum (s)."""
        return {server: (list(peer.latency), peer.latency_sum / 1e9)
                for server, peer in self.peers().items() if peer.answered}

    def clients(self) -> list[KernelClient]:
        """The program's token buckets, one per client it has seen (``datapath.KernelClient``)."""
        return [KernelClient.decode(key, value)
                for key, value in self.program.entries("buckets", CLIENT.size, ALLOWANCE.size)]

    def events_lost(self) -> int:
        """Events the program had no room for in the ring, ever (its counter): step lines and
        throttled clients never told, the daemon having fallen behind."""
        return self.program.per_cpu_sum("counters", U32.pack(COUNTERS.index("events_lost")))

    def throttled_started(self) -> int:
        """Clients whose throttling started in the program, ever (its counter)."""
        return self.program.per_cpu_sum("counters", U32.pack(COUNTERS.index("throttled_mac")))

    def expire_clients(self, limit: int, now_ns: int) -> tuple[list[KernelClient], int]:
        """As ``TokenBuckets.expire`` for the throttled clients: those whose buckets are full
        again have stopped (they are forgotten: a full bucket is as a new one), as have those of
        a limit no longer configured; returns the stopped ones and how many stay throttled. The
        others are left to the map's LRU (one read of the map, not a write per client). A
        request the program admits between the read and the removal is forgotten with the
        bucket: at most one more request for a client that sends just as it is full again."""
        stopped, throttled = [], 0
        for client in self.clients():
            if not client.dropped:
                continue
            if client.limit == limit and client.tat > now_ns:
                throttled += 1
                continue
            key = CLIENT.pack(client.ifindex, client.limit, len(client.hardware_address),
                              client.hardware_address)
            taken = self.program.take("buckets", key, ALLOWANCE.size)
            if taken is not None and client.limit == limit:
                gone = KernelClient.decode(key, taken)
                if gone.dropped:
                    stopped.append(gone)
        return stopped, throttled

    def close(self) -> None:
        self.program.close()


class Events:
    """The ``events`` ring buffer, read in place: ``fileno`` (the map's) becomes readable when
    events wait; ``records`` copies out those committed, whole (``steps`` unpacks them as
    ``STEP`` reads them), and frees their room.

    Read through two mappings of the map, not libbpf's ``ring_buffer__consume``: libbpf (1.1)
    hands each record to a callback, and through ctypes that callback and the copy of its
    record cost 1.3 µs, a quarter of a step line. The protocol is the kernel's
    (Documentation/bpf/ringbuf.rst): the consumer's position on a writable page, the
    producer's on a read-only one followed by the data, mapped twice in a row so that a record
    across the end reads as one. Each record is an 8-byte header (its length, with a busy bit
    while the program is writing it and a discard bit) and the sample, padded to 8; the
    program writes nothing but ``struct event``, so the records sit at a fixed stride. The
    protocol wants an acquire load of the producer's position and of each header and a release
    store of the consumer's: on x86-64, the only target relay.bpf.c is built for (CLANG_FLAGS),
    plain loads and stores are ordered so, and the headers are read (``_committed``) before the
    samples are."""

    def __init__(self, program: Program) -> None:
        self.fileno = program._map("events")
        size = program.max_entries("events")
        page = mmap.PAGESIZE
        self._consumer = mmap.mmap(self.fileno, page, mmap.MAP_SHARED,
                                   mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._producer = mmap.mmap(self.fileno, page + 2 * size, mmap.MAP_SHARED,
                                   mmap.PROT_READ, offset=page)
        self._data = memoryview(self._producer)[page:]
        self._mask = size - 1

    def records(self) -> bytes:
        """The records committed since the last call, oldest first, copied out whole (their
        headers included: ``RECORD_SIZE`` bytes each; ``steps`` unpacks them), their room
        freed."""
        consumer = _U64.unpack_from(self._consumer)[0]
        waiting = _U64.unpack_from(self._producer)[0] - consumer
        if not waiting:
            return b""
        start = consumer & self._mask
        region = self._data[start:start + waiting]
        count = _committed(region[_HEADER_FLAGS::RECORD_SIZE])
        records = bytes(region[:count * RECORD_SIZE])
        _U64.pack_into(self._consumer, 0, consumer + count * RECORD_SIZE)
        return records

    def close(self) -> None:
        self._data.release()
        self._producer.close()
        self._consumer.close()


#: A record of the ring: its header (length and flags, page offset), then ``struct event``
#: (as STEP reads it).
_RECORD = struct.Struct("<8x" + STEP.format[1:])
RECORD_SIZE = _RECORD.size
_EVENT_AT = 8
#: Where a record's header has the top byte of its length, and that byte's flags
#: (BPF_RINGBUF_BUSY_BIT and BPF_RINGBUF_DISCARD_BIT, linux/bpf.h).
_HEADER_FLAGS = 3
_BUSY = 0x80
_DISCARD = 0x40


def _committed(flags: memoryview) -> int:
    """Of the records whose headers' flag bytes are ``flags``, how many are committed before
    the first still being written."""
    found = bytes(flags)
    if max(found, default=0) < _BUSY:  # the usual batch: all committed
        return len(found)
    return next(index for index, flag in enumerate(found) if flag & _BUSY)


def steps(records: bytes) -> list[Step]:
    """Committed records (``Events.records``) unpacked, the discarded ones left out."""
    flags = records[_HEADER_FLAGS::RECORD_SIZE]
    found = list(_RECORD.iter_unpack(records))
    if max(flags, default=0) >= _DISCARD:
        found = [step for step, flag in zip(found, flags, strict=True) if not flag & _DISCARD]
    return found


#: An event's bytes in C (c_ubyte: a c_char array's assignment stops at the first NUL).
_EventBytes = ctypes.c_ubyte * (RECORD_SIZE - _EVENT_AT)


class _Flow(ctypes.Structure):
    """struct flow of relay/native/steplines.c: a flow's event, the pieces its lines share."""

    _fields_ = [("event", _EventBytes),
                ("piece", ctypes.c_char_p * 3), ("length", ctypes.c_uint32 * 3)]


class NativeStepLines:
    """The kernel datapath's step lines rendered from a batch's records by
    relay/native/steplines.c (838 instructions a line in the daemon, where ``StepLines.render``
    takes some 15k): what a flow's lines share still comes from ``StepLines``, once per flow
    and batch, so the two render the same bytes (a property test says so)."""

    #: The flows a batch's table holds: the lines of any further flow are ``StepLines``'s.
    FLOWS = 64
    #: A call's room: a batch at 8,000 DORA/s (1,600 lines, 640 KB) in three calls.
    CAPACITY = 1 << 18
    #: Where its lines may be cut into writes of whole lines within PIPE_BUF: room for more
    #: cuts than CAPACITY needs.
    CUTS = 2 * CAPACITY // select.PIPE_BUF

    def __init__(self, library: Path) -> None:
        render = ctypes.CDLL(str(library)).boothop_step_lines
        render.restype = ctypes.c_size_t
        size, sizes = ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t)
        render.argtypes = [ctypes.c_char_p, size, sizes, ctypes.POINTER(_Flow), size,
                           ctypes.c_char_p, size, sizes, sizes, size]
        self._render = render
        self._out = ctypes.create_string_buffer(self.CAPACITY)
        self._lines = memoryview(self._out).cast("B")
        self._ends = (ctypes.c_size_t * self.CUTS)()

    @classmethod
    def load(cls, directory: Path | None = None) -> NativeStepLines:
        """Build (if needed) and load the library; Unavailable or OSError say why it
        cannot."""
        return cls(build(STEP_LINES_SOURCE, directory))

    def render(self, records: bytes, lines: StepLines,
               write: Callable[[memoryview, list[int]], None],
               left: Callable[[Step], None]) -> None:
        """The step lines of ``records`` (``Events.records``) to ``write``, with the offsets
        where to cut them into writes of whole lines within PIPE_BUF (``LineBatch.write_whole``).
        ``left`` takes, in their place among them, the records left to Python: throttled
        clients, and the lines of a flow the batch's table does not have yet (``left`` renders
        those with ``lines``, whose pieces then join the table)."""
        count = len(records) // RECORD_SIZE
        flows = (_Flow * self.FLOWS)()
        known: set[tuple[int, bytes, bytes, bytes]] = set()
        index, cuts = ctypes.c_size_t(0), ctypes.c_size_t()
        render, out, ends = self._render, self._out, self._ends
        while index.value < count:
            cuts.value = self.CUTS
            size = render(records, count, index, flows, len(known), out, self.CAPACITY, ends,
                          cuts, select.PIPE_BUF)
            if size:
                write(self._lines[:size], ends[:cuts.value])
                continue
            at = index.value * RECORD_SIZE + _EVENT_AT
            index.value += 1
            step = STEP.unpack_from(records, at)
            left(step)
            op, _, hops_kind, _, flow, _, servers, _, _ = step
            key = (op, hops_kind, flow, servers if op == EVENT_FORWARDED else b"")
            if op <= EVENT_DELIVERED and key not in known and len(known) < self.FLOWS:
                entry = flows[len(known)]
                entry.event = _EventBytes.from_buffer_copy(records, at)
                for number, piece in enumerate(lines.pieces(step)):
                    entry.piece[number] = piece
                    entry.length[number] = len(piece)
                known.add(key)


#: Seconds between two passes of ``KernelReplies.expire`` over the program's pending pairs.
EXPIRE_PERIOD = 1.0


#: A way of the pending table: its pair and when it was forwarded.
_WAY = struct.Struct("<QQ")


class PendingPairs:
    """The program's ``pending`` table of forwarded (helper, xid) pairs awaiting a reply
    (relay.bpf.c), mapped and read and written in place: sets of ways, a way a pair (the
    helper's four octets then the xid's as on the wire, read as a little-endian u64; 0: free)
    and when it was forwarded (CLOCK_MONOTONIC ns). The program claims and frees a way by
    compare-and-swap of its pair; the daemon (one thread) writes with plain stores, so the one
    race it can lose is the program claiming the same free way in the same instant, and then a
    pair goes unseen: its reply is counted unsolicited. Counts only: no delivery depends on the
    table."""

    def __init__(self, program: Program) -> None:
        sets = program.max_entries("pending")
        self._ways = program.value_size("pending") // _WAY.size
        self._bits = sets.bit_length() - 1
        self._mapping = mmap.mmap(program._map("pending"), sets * self._ways * _WAY.size,
                                  mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        #: Two words a way: its pair, then when it was forwarded.
        self._words = memoryview(self._mapping).cast("Q")

    @staticmethod
    def pair(helper: IPv4Address, xid: int) -> int:
        return int.from_bytes(helper.packed + xid.to_bytes(4, "big"), "little")

    def _ways_of(self, pair: int) -> range:
        """The word offsets of the pair's set's ways (the program's ``set_of``)."""
        folded = (pair ^ (pair >> 32)) & 0xFFFFFFFF
        first = ((folded * 0x9E3779B1) & 0xFFFFFFFF) >> (32 - self._bits)
        start = first * self._ways * 2
        return range(start, start + self._ways * 2, 2)

    def put(self, helper: IPv4Address, xid: int, sent_ns: int) -> bool:
        """Track a pair forwarded at ``sent_ns`` (one waiting restarts its clock); False when
        its set is full: the pair goes on untracked."""
        pair, words = self.pair(helper, xid), self._words
        free = None
        for at in self._ways_of(pair):
            if words[at] == pair:
                words[at + 1] = sent_ns
                return True
            if free is None and words[at] == 0:
                free = at
        if free is None:
            return False
        words[free + 1] = sent_ns  # the time first: the program reads it once the pair matches
        words[free] = pair
        return True

    def take(self, helper: IPv4Address, xid: int) -> int | None:
        """Remove a waiting pair: when it was forwarded (ns), None if it was not waiting."""
        pair, words = self.pair(helper, xid), self._words
        for at in self._ways_of(pair):
            if words[at] == pair:
                sent = words[at + 1]
                words[at] = 0
                return sent
        return None

    def waiting(self) -> list[tuple[IPv4Address, int, int]]:
        """Every pair waiting: (helper, xid, when it was forwarded)."""
        words = self._words.tolist()
        found = []
        for pair, sent in zip(words[::2], words[1::2], strict=True):
            if pair:
                octets = pair.to_bytes(8, "little")
                found.append((IPv4Address(octets[:4]), int.from_bytes(octets[4:], "big"), sent))
        return found

    def expire(self, deadline_ns: int) -> tuple[Counter[IPv4Address], Counter[IPv4Address]]:
        """Remove the pairs forwarded at ``deadline_ns`` or before: how many per helper, and
        how many are left waiting."""
        expired: Counter[IPv4Address] = Counter()
        waiting: Counter[IPv4Address] = Counter()
        for helper, xid, sent in self.waiting():
            if sent <= deadline_ns:
                if self.take(helper, xid) is not None:
                    expired[helper] += 1
            else:
                waiting[helper] += 1
        return expired, waiting


class KernelReplies(ReplyTracker):
    """The reply tracker with the kernel datapath: the forwarded (helper, xid) pairs live in its
    ``pending`` table (``PendingPairs``), where the program puts those it forwards and the
    daemon those it forwards, so that a reply on either path finds its request. Replies the
    kernel delivered are counted there (``answered``); the daemon counts the rest here. The
    table evicts nothing: when a pair's set is full, the pair is not tracked and is counted
    *untracked* (in the program's ``untracked`` map, or here), where the user path's tracker
    gives up the oldest pair instead; ``expire`` makes room."""

    def __init__(self, kernel: KernelDatapath) -> None:
        super().__init__()
        self.kernel = kernel
        self.pairs = PendingPairs(kernel.program)
        self._swept = -EXPIRE_PERIOD
        self._waiting_now: dict[IPv4Address, int] = {}

    def forwarded(self, helper: IPv4Address, xid: int, now: float) -> None:
        if not self.pairs.put(helper, xid, round(now * 1e9)):
            self.untracked[helper] += 1

    def replied(self, helper: IPv4Address, xid: int, now: float) -> float | None:
        sent = self.pairs.take(helper, xid)
        if sent is None:
            return None
        self.answered[helper] += 1
        return now - sent / 1e9

    def expire(self, now: float) -> None:
        """One pass over the ``pending`` table, at most once a second (it may hold tens of
        thousands of pairs, e.g. for a PXE helper that answers few clients, and each stats-file
        refresh asks): the expired counted and removed, the rest counted as waiting."""
        if now - self._swept < EXPIRE_PERIOD:
            return
        self._swept = now
        expired, waiting = self.pairs.expire(round((now - self.timeout) * 1e9))
        self.unanswered.update(expired)
        self._waiting_now = dict(waiting)

    def snapshot(self) -> dict[str, dict[str, int]]:
        """As the user path's, "waiting" as of the last pass over the table (``expire``)."""
        waiting = self._waiting_now
        peers = self.kernel.peers()
        answered = _plus(self.answered, {a: p.answered for a, p in peers.items() if p.answered})
        untracked = _plus(self.untracked,
                          {a: p.untracked for a, p in peers.items() if p.untracked})
        helpers = set(answered) | set(self.unanswered) | set(untracked) | set(waiting)
        return {
            str(helper): {"answered": answered.get(helper, 0),
                          "unanswered": self.unanswered[helper],
                          "untracked": untracked.get(helper, 0),
                          "waiting": waiting.get(helper, 0)}
            for helper in sorted(helpers)
        }


def _plus(daemon: Counter[IPv4Address], kernel: dict[IPv4Address, int]) -> dict[IPv4Address, int]:
    """The daemon's per-helper counts plus the program's."""
    total = dict(daemon)
    for helper, count in kernel.items():
        total[helper] = total.get(helper, 0) + count
    return total
