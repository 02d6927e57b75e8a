// SPDX-License-Identifier: GPL-2.0
/*
 * boothop-relay's kernel datapath: a tc clsact ingress program (direct action).
 *
 * It relays, in the kernel, the DHCP packets it can handle exactly as the Python engine
 * (relay/engine.py, the specification) would, and passes everything else up untouched
 * (TC_ACT_OK) to the daemon, which stays the slow path and the reference:
 *
 *  - a BOOTREQUEST broadcast by a client on a client-facing interface: hops + 1, giaddr, our
 *    option 82 appended (a value the daemon computed with the engine), a copy to every helper
 *    (bpf_fib_lookup, bpf_clone_redirect for all but the last, bpf_redirect for the last);
 *    A request over its client's rate (relay/throttle.py, the MAC's token bucket) is dropped
 *    and counted here, as the engine drops it;
 *  - a BOOTREPLY from a configured server to one of our addresses: checked as the engine
 *    checks it, our option 82 removed, delivered per RFC 2131 §4.1 (broadcast, or unicast to
 *    chaddr/yiaddr) out of the client's interface.
 *
 * The message must be what the engine's Frame patches in place (END present, no pad, no
 * repeated or overloaded option, zeros after END); the UDP checksum must verify (a packet the
 * kernel would drop, or one still CHECKSUM_PARTIAL from a local sender, goes up and the stack
 * decides). The daemon pushes its configuration into the maps below (relay/kernel.py).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define MAX_HELPERS 8
#define MAX_AGENT 64
#define MAX_CIRCUIT 32
#define MAX_CONNECTED 4
/* Clients whose token buckets the program keeps (datapath.MAX_CLIENTS). */
#define MAX_CLIENTS 16384
/* The largest DHCP message in one Ethernet frame (1500 - 20 - 8). */
#define MAX_PAYLOAD 1472
#define BUF_SIZE 2048
#define MASK (BUF_SIZE - 1)
#define HEADERS (sizeof(struct ethhdr) + sizeof(struct iphdr) + sizeof(struct udphdr))
#define BOOTP_MIN 300
#define OPTIONS 240
#define GIADDR 24

/* struct iface.flags */
#define IF_CLIENTS 1        /* faces clients (role downstream or both) */
#define IF_UP 2             /* up and running */
#define IF_TRUSTED 4        /* RFC 3046 trusted circuit */
#define IF_DOWNSTREAM 8     /* role downstream only: never takes replies */
#define IF_ADDS_AGENT 16    /* we add option 82 to requests from here (and strip it from replies) */
#define IF_ADDS_CIRCUIT 32  /* our option 82 from here carries a circuit-id */
#define IF_REQUESTS 64      /* requests from here are within this program's subset */
#define IF_REPLIES 128      /* replies delivered here are within this program's subset */

struct iface {
	__u32 flags;
	__be32 giaddr;    /* giaddr for a request with giaddr 0 */
	__be32 source;    /* IP source of replies delivered here (0: the reply's giaddr) */
	__u8 mac[6];
	__u8 agent_len;
	__u8 circuit_len;
	__u32 helper_count;
	__be32 helpers[MAX_HELPERS];
	__u8 agent[MAX_AGENT];     /* our option 82 value */
	__u8 circuit[MAX_CIRCUIT]; /* our circuit-id */
};

#define LATENCY_BOUNDS 12

struct settings {
	__u32 enabled;
	__u32 hop_limit;
	__u32 max_packet_size;
	__u16 server_port;
	__u16 client_port;
	__be32 reply_giaddr;
	__u32 bound_count;
	__u64 bounds[LATENCY_BOUNDS]; /* the reply latency histogram's bucket bounds, ns */
	__u32 events; /* send an event per relayed packet (the daemon logs each step at info) */
	/* The per-MAC token bucket (relay/throttle.py) as GCRA: a request is admitted while the
	 * client's theoretical arrival time is at most tolerance = (burst - 1) * interval ahead
	 * of now, and moves it one interval = 1 / rate on. mac_limit names the limit (a changed
	 * one starts every client afresh, as the engine does); 0: no per-MAC limit. */
	__u32 mac_limit;
	__u64 mac_interval;  /* ns */
	__u64 mac_tolerance; /* ns */
};

/* What the daemon's per-step log line says of a packet relayed here. */
struct event {
	__u8 op;       /* 1: a request forwarded, 2: a reply delivered */
	__u8 hlen;
	__u8 hops;     /* as relayed (request), as received (reply) */
	__u8 type;     /* option 53, 0 without */
	__u32 xid;
	__be32 giaddr; /* as relayed (request), as received (reply) */
	__be32 source;
	__u16 source_port;
	__u8 mode;     /* reply: 0 broadcast, 1 unicast to chaddr */
	__u8 helpers;
	__u32 ifindex;
	__u32 delivery;
	__be32 destination;
	__be32 servers[MAX_HELPERS];
	__s64 latency; /* reply: ns since the request was forwarded, -1 if unknown */
	__u8 chaddr[16];
	__u64 dropped; /* throttling stopped: the requests dropped meanwhile */
};

/* What the daemon counts per helper or server (its counters and reply tracker), one value
 * per CPU: one lookup a packet, where a map per count took three on a reply. */
struct peer {
	__u64 forwarded; /* requests forwarded to it */
	__u64 untracked; /* of those, forwarded while their set of the pending table was full */
	__u64 answered;  /* replies from it that answered a pending pair */
	__u64 latency[LATENCY_BOUNDS + 1]; /* theirs: counts per histogram bucket */
	__u64 latency_sum; /* ns */
};

/* A client of relay/throttle.py's MAC table: (ingress, chaddr[:hlen]), under one limit. */
struct client {
	__u32 ifindex;
	__u32 limit; /* settings.mac_limit when it was seen */
	__u8 hlen;
	__u8 chaddr[16];
	__u8 zero[3];
};

struct allowance {
	__u64 tat;     /* theoretical arrival time (CLOCK_MONOTONIC ns): full when <= now */
	__u64 dropped; /* requests dropped since its throttling started; 0: not throttled */
};

/* struct server.kind: how a reply from it must arrive (engine._wrong_side) */
#define SERVER_OURS 1      /* one of our addresses: any ingress */
#define SERVER_CONNECTED 2 /* on a connected subnet: only through that subnet's interface */
#define SERVER_ROUTED 3    /* routed: never through the interface the reply is delivered on */

struct server {
	__u32 kind;
	__u32 connected_count;
	__u32 connected[MAX_CONNECTED];
};

/* Counters: the engine's, plus which path and why a packet went up. */
enum {
	C_RECEIVED,
	C_REQUESTS,
	C_REPLIES,
	C_AGENT_ADDED,
	C_AGENT_OMITTED,
	C_DELIVERED_BROADCAST,
	C_DELIVERED_CHADDR,
	C_REDIRECT_ERRORS,
	C_RATE_LIMITED_MAC, /* requests dropped over their MAC's rate */
	C_THROTTLED_MAC,    /* clients whose throttling started */
	C_EVENTS_LOST,      /* events the ring had no room for: the daemon fell behind */
	C_PASSED_UP, /* DHCP datagrams to our port left to the daemon */
	C_UP_FIRST,  /* C_UP_FIRST + reason: why */
};

enum {
	UP_DISABLED,
	UP_HEADERS,     /* IP options, fragments, VLAN, lengths, a broadcast request's destination */
	UP_CHECKSUM,    /* UDP checksum does not verify (bad, or CHECKSUM_PARTIAL) */
	UP_MESSAGE,     /* not what Frame patches in place (or malformed) */
	UP_INTERFACE,   /* not a configured interface in this program's subset */
	UP_CHECKS,      /* an engine check would drop or log it */
	UP_AGENT,       /* option 82 handling outside this program's subset */
	UP_ROUTE,       /* no route, no neighbour, local or MTU: the socket path resolves it */
	UP_REPLY,       /* a reply outside this program's subset */
	UP_CONTENDED,   /* its client's bucket kept changing under it (other CPUs) */
	UP_REASONS,
};

#define COUNTERS (C_UP_FIRST + UP_REASONS)

struct route {
	__u32 ifindex;
	__be32 source;
	__u8 smac[6];
	__u8 dmac[6];
};

struct headers {
	struct ethhdr eth;
	struct iphdr ip;
	struct udphdr udp;
} __attribute__((packed, aligned(2)));

/* Per-CPU working memory: the message, the options seen, each helper's route. */
struct scratch {
	__u8 data[BUF_SIZE];
	__u64 seen[4];
	struct route routes[MAX_HELPERS];
	struct headers in;  /* as received */
	struct headers out; /* as sent */
	struct event event;
	struct peer fresh; /* a new peers entry (too big for the stack) */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct settings);
} settings SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, struct iface);
} ifaces SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __be32);
	__type(value, __u32);
} addresses SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __be32);
	__type(value, struct server);
} servers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u64);
} received_on SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 256);
	__type(key, __be32);
	__type(value, struct peer);
} peers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch SEC(".maps");

/* The forwarded (helper, xid) pairs awaiting a reply (relay/replies.py's), shared with the
 * daemon, which puts the pairs it forwards here too, so that a reply on either path finds its
 * request, and counts the pairs past the reply timeout unanswered (KernelReplies.expire).
 *
 * A set-associative table, not a hash map: a pair's set (a hash of it) is one cache line of
 * PENDING_WAYS ways, found by an array index the verifier inlines. A hash map's insert and
 * lookup-and-delete took two fifths of the program's time on a reply (bucket locks, a chain
 * walk, a free list, and cache lines moving between the CPU that forwards and the one that
 * delivers). A way is free when its pair is 0 (helper 0.0.0.0 is never a helper); a CPU claims
 * one by compare-and-swap of the pair, and the reply that takes it frees it the same way, so
 * two CPUs never both own one. A set full of waiting pairs evicts nothing: the new pair goes on
 * untracked and is counted so, as it did when a hash map was full. The daemon maps the array
 * (BPF_F_MMAPABLE) and reads and writes it in place (relay/kernel.py, PendingPairs). */
#define PENDING_WAYS 4
#define PENDING_SET_BITS 13

struct waiting {
	__u64 pair; /* helper (network order) | xid (as on the wire) << 32; 0: free */
	__u64 sent; /* when it was forwarded (CLOCK_MONOTONIC ns) */
};

struct ways {
	struct waiting way[PENDING_WAYS];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1 << PENDING_SET_BITS);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct ways);
} pending SEC(".maps");

static __always_inline __u64 pair_of(__be32 helper, __u32 xid)
{
	return (__u64)helper | ((__u64)xid << 32);
}

/* The set of a pair: PendingPairs.set_of computes the same. */
static __always_inline struct ways *set_of(__u64 pair)
{
	__u32 index = ((__u32)(pair ^ (pair >> 32)) * 0x9E3779B1u) >> (32 - PENDING_SET_BITS);
	return bpf_map_lookup_elem(&pending, &index);
}

/* The per-MAC token buckets. One map shared by the CPUs (not per-CPU: a client's requests
 * may arrive on either), updated with atomics: compare-and-swap of the arrival time, an atomic
 * add and exchange of the dropped count. The daemon reads it each sweep: a throttled client
 * whose bucket is full again has stopped (relay.client.unthrottled). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_CLIENTS);
	__type(key, struct client);
	__type(value, struct allowance);
} buckets SEC(".maps");

/* Events are written with the ring buffer's adaptive notification (flags 0): one wakes the
 * daemon only if the daemon had read every event before it; the daemon then reads a batch
 * (KERNEL_STEPS_PERIOD later). An idle daemon is never woken. 4 MiB (some 40,000 events): 2.5 s
 * of a daemon that stopped reading at 4,000 DORA/s before a line is lost (events_lost); 1 MiB
 * held 0.3 s at 8,000. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} events SEC(".maps");

static __always_inline void describe(struct scratch *buf, struct headers *in, __u8 op,
				     __u8 type, __u8 hops, __be32 giaddr, __u32 ifindex)
{
	struct event *e = &buf->event;
	e->op = op;
	e->hlen = buf->data[2];
	e->hops = hops;
	e->type = type;
	e->xid = *(__u32 *)&buf->data[4];
	e->giaddr = giaddr;
	e->source = in->ip.saddr;
	e->source_port = bpf_ntohs(in->udp.source);
	e->ifindex = ifindex;
	e->latency = -1;
	__builtin_memcpy(e->chaddr, &buf->data[28], 16);
}

/* x & MASK, done where the verifier sees it (clang drops a mask it can prove useless). */
static __always_inline __u64 masked(__u64 x)
{
	asm volatile("%0 &= 2047" : "+r"(x));
	return x;
}

static __always_inline void count(__u32 index)
{
	__u64 *value = bpf_map_lookup_elem(&counters, &index);
	if (value)
		*value += 1;
}

static __always_inline void count_key(void *map, __u32 key)
{
	__u64 *value = bpf_map_lookup_elem(map, &key);
	if (value) {
		*value += 1;
	} else {
		__u64 one = 1;
		bpf_map_update_elem(map, &key, &one, BPF_NOEXIST);
	}
}

/* This CPU's counts of a helper or server, made (zero) on its first packet. */
static __always_inline struct peer *peer_of(struct scratch *buf, __be32 address)
{
	struct peer *found = bpf_map_lookup_elem(&peers, &address);
	if (found)
		return found;
	__builtin_memset(&buf->fresh, 0, sizeof(buf->fresh));
	bpf_map_update_elem(&peers, &address, &buf->fresh, BPF_NOEXIST);
	return bpf_map_lookup_elem(&peers, &address);
}

static __always_inline int up(__u32 reason)
{
	count(C_PASSED_UP);
	count(C_UP_FIRST + reason);
	return TC_ACT_OK;
}

/* -- the message: one pass over the options, as wire/message.py's _decode and scan_tlvs ---- */

struct scan {
	struct scratch *buf;
	__u32 len;      /* the DHCP message's length */
	__u32 pos;
	__u32 end;      /* END's offset, once found */
	__u32 fail;     /* not exact (or malformed): the engine would not patch it in place */
	__u32 o82;      /* option 82's offset (0: absent) */
	__u32 o82_len;
	__u32 type;     /* option 53's value when it is one byte, else 0 */
	__u32 has60;    /* option 60 (vendor class) present */
};

static long scan_option(__u64 index, struct scan *s)
{
	__u32 pos = s->pos;
	__u8 *data = s->buf->data;
	if (pos >= s->len) { /* no END */
		s->fail = 1;
		return 1;
	}
	__u8 code = data[pos & MASK];
	if (code == 255) {
		s->end = pos;
		return 1;
	}
	if (code == 0 || code == 52 || pos + 1 >= s->len) { /* pad, overload, truncated */
		s->fail = 1;
		return 1;
	}
	__u32 length = data[(pos + 1) & MASK];
	__u32 next = pos + 2 + length;
	if (next > s->len) {
		s->fail = 1;
		return 1;
	}
	__u64 bit = 1ULL << (code & 63);
	__u64 *seen = &s->buf->seen[(code >> 6) & 3];
	if (*seen & bit) { /* repeated: RFC 3396 concatenation, the encoder re-writes it */
		s->fail = 1;
		return 1;
	}
	*seen |= bit;
	if (code == 82) {
		s->o82 = pos;
		s->o82_len = length;
	} else if (code == 53 && length == 1) {
		s->type = data[(pos + 2) & MASK];
	} else if (code == 60) {
		s->has60 = 1;
	}
	s->pos = next;
	return 0;
}

struct zeros {
	struct scratch *buf;
	__u32 from;
	__u32 to;
	__u32 fail;
};

/* The first count bytes of a little-endian word (all of it from 8 on). */
static __always_inline __u64 first_bytes(__u64 word, __u32 count)
{
	if (count >= 8)
		return word;
	return word & ((1ULL << (8 * count)) - 1);
}

/* Eight bytes a step: a message's tail after END is most of it (perfdhcp pads to 300). The
 * word past the tail's end reads into the scratch buffer (BUF_SIZE > MAX_PAYLOAD), masked off. */
static long check_zero(__u64 index, struct zeros *z)
{
	__u32 pos = z->from + 8 * (__u32)index;
	if (pos >= z->to)
		return 1;
	if (first_bytes(*(__u64 *)&z->buf->data[pos & MASK], z->to - pos)) {
		z->fail = 1;
		return 1;
	}
	return 0;
}

/* Eight bytes a step too, the last word's bytes past the range kept. */
static long set_zero(__u64 index, struct zeros *z)
{
	__u32 pos = z->from + 8 * (__u32)index;
	if (pos >= z->to)
		return 1;
	__u64 *word = (__u64 *)&z->buf->data[pos & MASK];
	*word &= ~first_bytes(~0ULL, z->to - pos);
	return 0;
}

/* Scan the message in buf (len bytes): 0 when Frame would patch it in place. */
static __always_inline int scan_message(struct scan *s)
{
	__u8 *data = s->buf->data;
	if (data[236] != 0x63 || data[237] != 0x82 || data[238] != 0x53 || data[239] != 0x63)
		return -1; /* no magic cookie: an RFC 951 vendor area */
	if (data[2] > 16)
		return -1; /* hlen beyond chaddr: malformed */
	s->buf->seen[0] = s->buf->seen[1] = s->buf->seen[2] = s->buf->seen[3] = 0;
	s->pos = OPTIONS;
	bpf_loop(MAX_PAYLOAD, scan_option, s, 0);
	if (s->fail || s->end < OPTIONS)
		return -1;
	/* Exact: data.ljust(300) == encode(message): zeros after END, never beyond 300 bytes. */
	__u32 stop = s->end + 1 > BOOTP_MIN ? s->end + 1 : BOOTP_MIN;
	if (s->len > stop)
		return -1;
	struct zeros z = {.buf = s->buf, .from = s->end + 1, .to = s->len};
	bpf_loop(MAX_PAYLOAD / 8 + 1, check_zero, &z, 0);
	return z.fail ? -1 : 0;
}

/* -- checksums ----------------------------------------------------------------------------- */

struct pseudo {
	__be32 source;
	__be32 destination;
	__u8 zero;
	__u8 protocol;
	__be16 length;
	struct udphdr udp;
};

static __always_inline __u16 fold(__s64 sum)
{
	__u64 folded = (__u32)sum;
	folded = (folded & 0xffff) + (folded >> 16);
	folded = (folded & 0xffff) + (folded >> 16);
	folded = (folded & 0xffff) + (folded >> 16);
	return (__u16)folded;
}

/* The one's complement sum of buf[0:len]. */
static __always_inline __s64 payload_sum(struct scratch *buf, __u32 len)
{
	__u32 padded = (len + 3) & ~3U;
	__s64 sum = 0;
	/* csum_diff takes whole words: the up to three bytes after the message count as zeros */
	buf->data[masked(len)] = 0;
	buf->data[masked(len + 1)] = 0;
	buf->data[masked(len + 2)] = 0;
	if (padded > 0) {
		__u32 n = padded > 512 ? 512 : padded;
		sum = bpf_csum_diff(0, 0, (__be32 *)&buf->data[0], n & 0x3fc, sum);
	}
	if (padded > 512) {
		__u32 n = padded - 512 > 512 ? 512 : padded - 512;
		sum = bpf_csum_diff(0, 0, (__be32 *)&buf->data[512], n & 0x3fc, sum);
	}
	if (padded > 1024) {
		__u32 n = padded - 1024 > 512 ? 512 : padded - 1024;
		sum = bpf_csum_diff(0, 0, (__be32 *)&buf->data[1024], n & 0x3fc, sum);
	}
	return sum;
}

static __always_inline __u16 udp_checksum(__s64 payload, struct pseudo *ph)
{
	__s64 sum = bpf_csum_diff(0, 0, (__be32 *)ph, sizeof(*ph), payload);
	__u16 check = ~fold(sum);
	return check ? check : 0xffff; /* RFC 768: a computed zero is sent as all ones */
}

static __always_inline __u16 ip_checksum(struct iphdr *ip)
{
	return ~fold(bpf_csum_diff(0, 0, (__be32 *)ip, sizeof(*ip), 0));
}

/* -- the frame ----------------------------------------------------------------------------- */

/* Write buf[0:len] as the UDP payload, growing or trimming the frame to fit. */
static __always_inline int put_payload(struct __sk_buff *skb, struct scratch *buf, __u32 len,
				       __u32 old_len)
{
	if (len != old_len && bpf_skb_change_tail(skb, HEADERS + len, 0))
		return -1;
	__u64 size = masked(len);
	if (size == 0)
		return -1;
	return bpf_skb_store_bytes(skb, HEADERS, buf->data, size, BPF_F_RECOMPUTE_CSUM);
}

static __always_inline void ip_header(struct iphdr *ip, __u8 tos, __be32 source,
				      __be32 destination, __u32 payload_len)
{
	ip->version = 4;
	ip->ihl = 5;
	ip->tos = tos;
	ip->tot_len = bpf_htons(sizeof(struct iphdr) + sizeof(struct udphdr) + payload_len);
	ip->id = 0;
	ip->frag_off = bpf_htons(0x4000); /* DF, as the kernel sends a UDP datagram */
	ip->ttl = 64;
	ip->protocol = IPPROTO_UDP;
	ip->check = 0;
	ip->saddr = source;
	ip->daddr = destination;
	ip->check = ip_checksum(ip);
}

static __always_inline void udp_header(struct headers *h, __s64 payload_sum_, __u16 sport,
				       __u16 dport, __u32 payload_len)
{
	struct pseudo ph = {
		.source = h->ip.saddr,
		.destination = h->ip.daddr,
		.protocol = IPPROTO_UDP,
		.length = bpf_htons(sizeof(struct udphdr) + payload_len),
	};
	ph.udp.source = bpf_htons(sport);
	ph.udp.dest = bpf_htons(dport);
	ph.udp.len = ph.length;
	ph.udp.check = 0;
	h->udp = ph.udp;
	h->udp.check = udp_checksum(payload_sum_, &ph);
}

/* -- per-client rate limits: relay/throttle.py's TokenBuckets.admit ------------------------ */

#define THROTTLE_STARTED 3
#define THROTTLE_STOPPED 4
/* Compare-and-swap attempts before a request goes up (only another CPU's update of the same
 * client's bucket in between fails one). */
#define CAS_TRIES 4
#define READ_ONCE_TAT(b) (*(volatile __u64 *)&(b)->tat)

static __always_inline void throttle_event(struct scratch *buf, __u8 op, struct client *key,
					   __u64 dropped)
{
	struct event *e = &buf->event;
	__builtin_memset(e, 0, sizeof(*e));
	e->op = op;
	e->hlen = key->hlen;
	e->ifindex = key->ifindex;
	e->dropped = dropped;
	__builtin_memcpy(e->chaddr, key->chaddr, 16);
	if (bpf_ringbuf_output(&events, e, sizeof(*e), 0))
		count(C_EVENTS_LOST);
}

enum { ADMITTED, THROTTLED, CONTENDED };

/* Whether the client (ingress, chaddr[:hlen], hlen <= 16) may send a request now, taking a
 * token if so. A global function, verified once on its own: called in line, its ways through
 * would multiply the request path's states past the verifier's limit. */
__attribute__((noinline)) int admit(__u32 ingress, __u32 hlen, __u64 low, __u64 high)
{
	__u32 zero = 0;
	struct settings *cfg = bpf_map_lookup_elem(&settings, &zero);
	struct scratch *buf = bpf_map_lookup_elem(&scratch, &zero);
	if (!cfg || !buf || hlen > 16)
		return CONTENDED;
	struct client key;
	__builtin_memset(&key, 0, sizeof(key));
	key.ifindex = ingress;
	key.limit = cfg->mac_limit;
	key.hlen = hlen;
	low = first_bytes(low, hlen);
	high = first_bytes(high, hlen > 8 ? hlen - 8 : 0);
	__builtin_memcpy(&key.chaddr[0], &low, 8);
	__builtin_memcpy(&key.chaddr[8], &high, 8);
	__u64 now = bpf_ktime_get_ns();
	struct allowance *bucket = bpf_map_lookup_elem(&buckets, &key);
	if (!bucket) {
		/* A new client: a full bucket, less this request's token. */
		struct allowance fresh = {.tat = now + cfg->mac_interval};
		if (!bpf_map_update_elem(&buckets, &key, &fresh, BPF_NOEXIST))
			return ADMITTED;
		bucket = bpf_map_lookup_elem(&buckets, &key); /* another CPU added it meanwhile */
		if (!bucket)
			return CONTENDED;
	}
	for (int attempt = 0; attempt < CAS_TRIES; attempt++) {
		__u64 tat = READ_ONCE_TAT(bucket);
		if (tat <= now && bucket->dropped) {
			/* Full again: its throttling stopped (the engine's admit forgets it). */
			__u64 dropped = __sync_lock_test_and_set(&bucket->dropped, 0);
			if (dropped)
				throttle_event(buf, THROTTLE_STOPPED, &key, dropped);
		}
		__u64 base = tat > now ? tat : now;
		if (base - now > cfg->mac_tolerance) {
			if (__sync_fetch_and_add(&bucket->dropped, 1) == 0) {
				count(C_THROTTLED_MAC);
				throttle_event(buf, THROTTLE_STARTED, &key, 0);
			}
			return THROTTLED;
		}
		if (__sync_val_compare_and_swap(&bucket->tat, tat, base + cfg->mac_interval) == tat)
			return ADMITTED;
	}
	return CONTENDED;
}

/* -- reply tracking: the pending table ------------------------------------------------------ */

/* Put a forwarded pair in its set (a pair already there restarts its clock): 0 when the set is
 * full, the pair untracked. */
static __always_inline int track(__u64 pair, __u64 now)
{
	struct ways *set = set_of(pair);
	if (!set)
		return 0;
	for (int k = 0; k < PENDING_WAYS; k++) {
		if (set->way[k].pair == pair) {
			set->way[k].sent = now;
			return 1;
		}
	}
	for (int k = 0; k < PENDING_WAYS; k++) {
		if (set->way[k].pair == 0 &&
		    __sync_val_compare_and_swap(&set->way[k].pair, 0, pair) == 0) {
			set->way[k].sent = now;
			return 1;
		}
	}
	return 0;
}

/* Take the pair a reply answers out of its set: when it was forwarded, 0 if not waiting. */
static __always_inline __u64 take(__u64 pair)
{
	struct ways *set = set_of(pair);
	if (!set)
		return 0;
	for (int k = 0; k < PENDING_WAYS; k++) {
		if (set->way[k].pair == pair) {
			__u64 sent = set->way[k].sent;
			if (__sync_val_compare_and_swap(&set->way[k].pair, pair, 0) == pair)
				return sent ? sent : 1;
			return 0;
		}
	}
	return 0;
}

/* -- requests: engine._request ------------------------------------------------------------- */

static __always_inline int request(struct __sk_buff *skb, struct settings *cfg,
				   struct headers *in, struct scratch *buf, __u32 len)
{
	struct scan s = {.buf = buf, .len = len};
	__u32 ingress = skb->ingress_ifindex;
	struct iface *iface = bpf_map_lookup_elem(&ifaces, &ingress);
	if (!iface || !(iface->flags & IF_CLIENTS) || !(iface->flags & IF_UP) ||
	    !(iface->flags & IF_REQUESTS))
		return up(UP_INTERFACE);
	/* The shell reads a request off a socket bound to the port; here: a client's broadcast. */
	if (in->ip.daddr != 0xffffffff)
		return up(UP_HEADERS);
	if (scan_message(&s))
		return up(UP_MESSAGE);
	__u8 *data = buf->data;
	__be32 source = in->ip.saddr;
	if (bpf_map_lookup_elem(&addresses, &source))
		return up(UP_CHECKS); /* REQUEST_FROM_SELF */
	/* RFC 1542 §4.1.1: the hop limit (dhcrelay -c, never above 16). */
	if (data[3] >= cfg->hop_limit)
		return up(UP_CHECKS);
	__be32 giaddr = *(__be32 *)&data[GIADDR];
	if (giaddr && bpf_map_lookup_elem(&addresses, &giaddr))
		return up(UP_CHECKS); /* RFC 3046 §2.1.1: a giaddr of ours */
	__u32 helpers = iface->helper_count;
	if (helpers == 0 || helpers > MAX_HELPERS)
		return up(UP_CHECKS);
	__u32 agent = 0, omitted = 0;
	if (!giaddr) {
		/* An option 82 the client sent (trusted or not: drop, append, replace, forward)
		 * is left to the daemon. */
		if (s.o82)
			return up(UP_AGENT);
		/* RFC 1542 §4.1.1: "the relay agent MUST fill this field with the IP address of
		 * the interface on which the request was received." */
		giaddr = iface->giaddr;
		if (!giaddr)
			return up(UP_CHECKS);
		if (iface->flags & IF_ADDS_AGENT) {
			agent = iface->agent_len;
			if (agent == 0 || agent > MAX_AGENT)
				return up(UP_AGENT);
			/* RFC 3046 §2.1: what would exceed the maximum size goes WITHOUT option 82. */
			if (s.end + 1 + 2 + agent > cfg->max_packet_size) {
				agent = 0;
				omitted = 1;
			}
		}
	}
	/* Every helper's route first: a request is relayed to all of them or left to the daemon. */
	struct route *routes = buf->routes;
	struct bpf_fib_lookup fib;
	__u32 out_len = s.end + 1 + (agent ? 2 + agent : 0);
	if (out_len < BOOTP_MIN)
		out_len = BOOTP_MIN;
	if (len > out_len)
		out_len = len;
	for (__u32 i = 0; i < MAX_HELPERS; i++) {
		if (i >= helpers)
			break;
		__builtin_memset(&fib, 0, sizeof(fib));
		fib.family = 2; /* AF_INET */
		fib.l4_protocol = IPPROTO_UDP;
		fib.sport = bpf_htons(cfg->server_port);
		fib.dport = bpf_htons(cfg->server_port);
		fib.tot_len = sizeof(struct iphdr) + sizeof(struct udphdr) + out_len;
		fib.ifindex = ingress;
		fib.ipv4_dst = iface->helpers[i];
		if (bpf_fib_lookup(skb, &fib, sizeof(fib), BPF_FIB_LOOKUP_SRC) !=
		    BPF_FIB_LKUP_RET_SUCCESS)
			return up(UP_ROUTE);
		routes[i].ifindex = fib.ifindex;
		routes[i].source = fib.ipv4_src;
		__builtin_memcpy(routes[i].smac, fib.smac, 6);
		__builtin_memcpy(routes[i].dmac, fib.dmac, 6);
	}
	/* engine._rate_limited, last: a request that went up above took no token here (the
	 * engine's own bucket counts it), one past this point is the kernel's to the end. */
	if (cfg->mac_limit) {
		int verdict = admit(ingress, data[2], *(__u64 *)&data[28], *(__u64 *)&data[36]);
		if (verdict == CONTENDED)
			return up(UP_CONTENDED);
		if (verdict == THROTTLED) {
			count(C_RECEIVED);
			count_key(&received_on, ingress);
			count(C_REQUESTS);
			count(C_RATE_LIMITED_MAC);
			return TC_ACT_SHOT;
		}
	}
	/* The message as Frame.relayed writes it: hops + 1, giaddr, option 82 last, END,
	 * zeros to 300 bytes. */
	count(C_RECEIVED);
	count_key(&received_on, ingress);
	count(C_REQUESTS);
	__u32 xid = *(__u32 *)&data[4];
	if (omitted)
		count(C_AGENT_OMITTED);
	data[3] += 1;
	*(__be32 *)&data[GIADDR] = giaddr;
	if (agent) {
		__u32 at = s.end;
		data[at & MASK] = 82;
		data[(at + 1) & MASK] = agent;
		for (__u32 k = 0; k < MAX_AGENT; k++) {
			if (k >= agent)
				break;
			data[(at + 2 + k) & MASK] = iface->agent[k];
		}
		data[(at + 2 + agent) & MASK] = 255;
		count(C_AGENT_ADDED);
	}
	/* zeros after END up to out_len (the message's own were zero already) */
	struct zeros z = {.buf = buf, .from = len, .to = out_len};
	if (agent && s.end + 3 + agent > len)
		z.from = s.end + 3 + agent;
	bpf_loop(MAX_PAYLOAD / 8 + 1, set_zero, &z, 0);
	if (out_len > MAX_PAYLOAD || put_payload(skb, buf, out_len, len))
		return TC_ACT_SHOT; /* cannot happen for a message that fit the frame it came in */
	__s64 sum = payload_sum(buf, out_len);
	if (cfg->events) {
		describe(buf, in, 1, s.type, data[3], giaddr, ingress);
		buf->event.helpers = helpers;
		for (__u32 i = 0; i < MAX_HELPERS; i++)
			buf->event.servers[i] = i < helpers ? iface->helpers[i] : 0;
		if (bpf_ringbuf_output(&events, &buf->event, sizeof(buf->event), 0))
			count(C_EVENTS_LOST);
	}
	struct headers *h = &buf->out;
	__u64 now = bpf_ktime_get_ns();
	for (__u32 i = 0; i < MAX_HELPERS; i++) {
		if (i >= helpers)
			break;
		__builtin_memcpy(h->eth.h_dest, routes[i].dmac, 6);
		__builtin_memcpy(h->eth.h_source, routes[i].smac, 6);
		h->eth.h_proto = bpf_htons(ETH_P_IP);
		ip_header(&h->ip, 0, routes[i].source, iface->helpers[i], out_len);
		udp_header(h, sum, cfg->server_port, cfg->server_port, out_len);
		if (bpf_skb_store_bytes(skb, 0, h, sizeof(*h), BPF_F_RECOMPUTE_CSUM))
			return TC_ACT_SHOT;
		int tracked = track(pair_of(iface->helpers[i], xid), now);
		struct peer *helper = peer_of(buf, iface->helpers[i]);
		if (helper) {
			helper->forwarded += 1;
			helper->untracked += !tracked;
		}
		if (i + 1 == helpers)
			return bpf_redirect(routes[i].ifindex, 0);
		if (bpf_clone_redirect(skb, routes[i].ifindex, 0))
			count(C_REDIRECT_ERRORS);
	}
	return TC_ACT_SHOT;
}

/* -- replies: engine._reply ---------------------------------------------------------------- */

struct subs {
	struct scratch *buf;
	__u32 pos;
	__u32 stop;
	__u32 fail;
	__u32 circuit;     /* circuit-id's value offset (0: absent) */
	__u32 circuit_len;
	__u32 link;        /* link selection present */
};

static long scan_sub(__u64 index, struct subs *s)
{
	__u32 pos = s->pos;
	if (pos >= s->stop)
		return 1;
	if (pos + 1 >= s->stop) {
		s->fail = 1;
		return 1;
	}
	__u8 code = s->buf->data[pos & MASK];
	__u32 length = s->buf->data[(pos + 1) & MASK];
	if (pos + 2 + length > s->stop) {
		s->fail = 1;
		return 1;
	}
	if (code == 1 && !s->circuit) {
		s->circuit = pos + 2;
		s->circuit_len = length;
	} else if (code == 5) {
		s->link = 1;
	}
	s->pos = pos + 2 + length;
	return 0;
}

struct move {
	struct scratch *buf;
	__u32 to;
	__u32 from;
	__u32 count;
};

/* Eight bytes a step, front to back: the bytes move towards the start (to < from), so a step
 * never reads what an earlier one wrote. The last word's bytes past count are kept. */
static long move_word(__u64 index, struct move *m)
{
	__u32 done = 8 * (__u32)index;
	if (done >= m->count)
		return 1;
	__u64 *to = (__u64 *)&m->buf->data[(m->to + done) & MASK];
	__u64 from = *(__u64 *)&m->buf->data[(m->from + done) & MASK];
	__u64 moved = first_bytes(~0ULL, m->count - done);
	*to = (*to & ~moved) | (from & moved);
	return 0;
}

/* payload: the message's one's complement sum, if relay() verified a checksum with it (else
 * negative): a reply the program does not rewrite keeps it, and is not stored again. */
static __always_inline int reply(struct __sk_buff *skb, struct settings *cfg,
				 struct headers *in, struct scratch *buf, __u32 len, __s64 payload)
{
	struct scan s = {.buf = buf, .len = len};
	__be32 server_address = in->ip.saddr;
	__be32 local = in->ip.daddr;
	__u32 *by_local = bpf_map_lookup_elem(&addresses, &local);
	if (!by_local)
		return up(UP_HEADERS); /* not to one of our addresses: not the socket's */
	struct server *server = bpf_map_lookup_elem(&servers, &server_address);
	if (!server)
		return up(UP_CHECKS); /* REPLY_FROM_NON_SERVER */
	if (scan_message(&s))
		return up(UP_MESSAGE);
	__u8 *data = buf->data;
	__be32 giaddr = *(__be32 *)&data[GIADDR];
	/* RFC 1542 §4.1.2: a giaddr that is not one of ours is discarded. (A server answers to
	 * giaddr: its entry is the one found already.) */
	__u32 *by_giaddr = giaddr == local ? by_local : bpf_map_lookup_elem(&addresses, &giaddr);
	if (!by_giaddr)
		return up(UP_CHECKS);
	__u32 delivery = *by_giaddr;
	struct iface *iface = bpf_map_lookup_elem(&ifaces, &delivery);
	if (!iface || !(iface->flags & IF_CLIENTS) || !(iface->flags & IF_REPLIES))
		return up(UP_INTERFACE);
	if (s.o82) {
		struct subs sub = {.buf = buf, .pos = s.o82 + 2, .stop = s.o82 + 2 + s.o82_len};
		bpf_loop(256, scan_sub, &sub, 0);
		if (sub.fail || sub.link)
			return up(UP_AGENT); /* malformed, or RFC 3527 link selection */
		if (sub.circuit && (iface->flags & IF_ADDS_CIRCUIT)) {
			/* An echoed circuit-id must be the one we add on giaddr's interface. */
			if (sub.circuit_len != iface->circuit_len || sub.circuit_len > MAX_CIRCUIT)
				return up(UP_CHECKS);
			for (__u32 k = 0; k < MAX_CIRCUIT; k++) {
				if (k >= sub.circuit_len)
					break;
				if (data[(sub.circuit + k) & MASK] != iface->circuit[k])
					return up(UP_CHECKS);
			}
		}
	}
	/* engine._wrong_side: a reply must arrive from the server's side of the relay. */
	__u32 ingress = skb->ingress_ifindex;
	struct iface *from = bpf_map_lookup_elem(&ifaces, &ingress);
	if (!from || (from->flags & IF_DOWNSTREAM))
		return up(UP_CHECKS);
	if (server->kind == SERVER_CONNECTED) {
		int found = 0;
		for (__u32 k = 0; k < MAX_CONNECTED; k++)
			if (k < server->connected_count && server->connected[k] == ingress)
				found = 1;
		if (!found)
			return up(UP_CHECKS);
	} else if (server->kind == SERVER_ROUTED) {
		if (ingress == delivery)
			return up(UP_CHECKS);
	} else if (server->kind != SERVER_OURS) {
		return up(UP_CHECKS);
	}
	if (!(iface->flags & IF_UP))
		return up(UP_CHECKS);
	/* RFC 2131 §4.1 / RFC 1542 §4.1.2: how the reply reaches the client. */
	__u16 flags = ((__u16)data[10] << 8) | data[11];
	__be32 ciaddr = *(__be32 *)&data[12];
	__be32 yiaddr = *(__be32 *)&data[16];
	int broadcast = 1;
	if (s.type != 6 && !(flags & 0x8000)) { /* a NAK is always broadcast (RFC 2131 §4.3.2) */
		if (ciaddr)
			return up(UP_REPLY); /* unicast to ciaddr: the daemon's socket resolves it */
		if (yiaddr && data[1] == 1 && data[2] == 6)
			broadcast = 0;
	}
	/* The PXE misconfiguration diagnosis looks at offers with option 60. */
	if (yiaddr && s.has60)
		return up(UP_REPLY);
	__u32 out_len = len;
	int rewritten = 0;
	if (s.o82 && (iface->flags & IF_ADDS_AGENT)) {
		/* RFC 3046 §2.1: the option 82 we added is removed from the reply. */
		__u32 gone = 2 + s.o82_len;
		struct move m = {.buf = buf, .to = s.o82, .from = s.o82 + gone,
				 .count = s.end + 1 - (s.o82 + gone)};
		bpf_loop(MAX_PAYLOAD / 8 + 1, move_word, &m, 0);
		__u32 new_end = s.end - gone;
		out_len = new_end + 1;
		struct zeros z = {.buf = buf, .from = out_len, .to = s.end + 1};
		bpf_loop(MAX_PAYLOAD / 8 + 1, set_zero, &z, 0);
		rewritten = 1;
	}
	if (out_len < BOOTP_MIN) {
		struct zeros z = {.buf = buf, .from = out_len, .to = BOOTP_MIN};
		if (len > out_len)
			z.from = len; /* already zero up to len */
		bpf_loop(MAX_PAYLOAD / 8 + 1, set_zero, &z, 0);
		out_len = BOOTP_MIN;
		rewritten = 1;
	}
	__u32 xid = *(__u32 *)&data[4];
	__u8 hops = data[3];
	if (cfg->reply_giaddr) {
		*(__be32 *)&data[GIADDR] = cfg->reply_giaddr;
		rewritten = 1;
	}
	count(C_RECEIVED);
	count_key(&received_on, ingress);
	count(C_REPLIES);
	if (rewritten && (out_len > MAX_PAYLOAD || put_payload(skb, buf, out_len, len)))
		return TC_ACT_SHOT;
	struct headers *h = &buf->out;
	if (broadcast) {
		__builtin_memset(h->eth.h_dest, 0xff, 6);
	} else {
		for (int k = 0; k < 6; k++)
			h->eth.h_dest[k] = data[28 + k];
	}
	__builtin_memcpy(h->eth.h_source, iface->mac, 6);
	h->eth.h_proto = bpf_htons(ETH_P_IP);
	/* From giaddr, one of this interface's addresses (with several subnets on the link, the
	 * client's gateway), as engine._reply delivers. */
	ip_header(&h->ip, 0x10, giaddr, broadcast ? 0xffffffff : yiaddr, out_len);
	if (rewritten || payload < 0)
		payload = payload_sum(buf, out_len);
	udp_header(h, payload, cfg->server_port, cfg->client_port, out_len);
	if (bpf_skb_store_bytes(skb, 0, h, sizeof(*h), BPF_F_RECOMPUTE_CSUM))
		return TC_ACT_SHOT;
	count(broadcast ? C_DELIVERED_BROADCAST : C_DELIVERED_CHADDR);
	__u64 sent = take(pair_of(server_address, xid));
	__s64 latency_ns = -1;
	if (sent) {
		__u64 took = bpf_ktime_get_ns() - sent;
		latency_ns = took;
		__u32 bucket = LATENCY_BOUNDS;
		for (__u32 k = 0; k < LATENCY_BOUNDS; k++) {
			if (k < cfg->bound_count && took <= cfg->bounds[k]) {
				bucket = k;
				break;
			}
		}
		struct peer *answering = peer_of(buf, server_address);
		if (answering && bucket <= LATENCY_BOUNDS) {
			answering->answered += 1;
			answering->latency[bucket] += 1;
			answering->latency_sum += took;
		}
	}
	if (cfg->events) {
		describe(buf, in, 2, s.type, hops, giaddr, ingress);
		buf->event.xid = xid;
		buf->event.mode = !broadcast;
		buf->event.delivery = delivery;
		buf->event.destination = broadcast ? 0xffffffff : yiaddr;
		buf->event.latency = latency_ns;
		if (bpf_ringbuf_output(&events, &buf->event, sizeof(buf->event), 0))
			count(C_EVENTS_LOST);
	}
	return bpf_redirect(delivery, 0);
}

SEC("tc")
int relay(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct headers *packet = data;
	if ((void *)(packet + 1) > data_end)
		return TC_ACT_OK;
	__u32 key = 0;
	struct scratch *buf = bpf_map_lookup_elem(&scratch, &key);
	if (!buf)
		return TC_ACT_OK;
	struct headers *in = &buf->in;
	*in = *packet;
	if (in->eth.h_proto != bpf_htons(ETH_P_IP) || in->ip.protocol != IPPROTO_UDP)
		return TC_ACT_OK;
	struct settings *cfg = bpf_map_lookup_elem(&settings, &key);
	if (!cfg || in->udp.dest != bpf_htons(cfg->server_port))
		return TC_ACT_OK;
	if (!cfg->enabled)
		return up(UP_DISABLED);
	/* No IP options, no fragment, the lengths agree with the frame. */
	__u32 ip_len = bpf_ntohs(in->ip.tot_len);
	if (in->ip.ihl != 5 || (in->ip.frag_off & bpf_htons(0x3fff)) ||
	    ip_len + sizeof(struct ethhdr) != skb->len ||
	    bpf_ntohs(in->udp.len) + sizeof(struct iphdr) != ip_len)
		return up(UP_HEADERS);
	__u32 len = ip_len - sizeof(struct iphdr) - sizeof(struct udphdr);
	if (len < OPTIONS || len > MAX_PAYLOAD)
		return up(UP_HEADERS);
	if (bpf_skb_load_bytes(skb, HEADERS, buf->data, len))
		return up(UP_HEADERS);
	/* A checksum that does not verify goes up: the stack drops it, or accepts it as
	 * CHECKSUM_PARTIAL from a local sender. */
	__s64 payload = -1;
	if (in->udp.check) {
		payload = payload_sum(buf, len);
		struct pseudo ph = {
			.source = in->ip.saddr,
			.destination = in->ip.daddr,
			.protocol = IPPROTO_UDP,
			.length = in->udp.len,
			.udp = in->udp,
		};
		__s64 sum = bpf_csum_diff(0, 0, (__be32 *)&ph, sizeof(ph), payload);
		if (fold(sum) != 0xffff)
			return up(UP_CHECKSUM);
	}
	__u8 op = buf->data[0];
	if (op == 1)
		return request(skb, cfg, in, buf, len);
	if (op == 2)
		return reply(skb, cfg, in, buf, len, payload);
	return up(UP_MESSAGE);
}

char LICENSE[] SEC("license") = "GPL";
