/* The kernel datapath's step lines, rendered in C: the daemon's loop at info.
 *
 * At info the daemon writes a JSON line per packet the tc program relayed (relay/service.py,
 * RelayService._kernel_events). Rendered in Python (relay/steplines.py, StepLines.render) a line
 * costs the daemon some 10k instructions, 4 us: the kernel path's largest cost on the CPU it
 * shares with the DHCP server. Here it is a few hundred. What a flow's lines share (interface,
 * giaddr, hops, type, source, helpers, mode, delivery interface, timestamp) is still rendered by
 * StepLines, once per flow and batch, and handed in as pieces (struct flow); this file adds what
 * differs per line: xid, chaddr, a reply's destination and latency. StepLines stays the
 * specification: a property test requires the same bytes from both for generated events.
 *
 * Hand-written because no library renders these bytes from a ring record without Python per
 * line. Built at install by `boothop-relay build-datapath` (relay/kernel.py), as relay.bpf.c is.
 */

#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <string.h>

/* A ring record: the ring's 8-byte header (its length's top bits flag a discarded record),
 * then struct event of relay/bpf/relay.bpf.c (96 bytes; relay/datapath.py's EVENT). */
#define HEADER 8
#define EVENT_SIZE 96
#define RECORD_SIZE (HEADER + EVENT_SIZE)
#define DISCARD_FLAG 0x40 /* BPF_RINGBUF_DISCARD_BIT, in the header's fourth byte */
#define FORWARDED 1
#define DELIVERED 2

/* Offsets in struct event. */
#define OP 0
#define HLEN 1
#define HOPS_TYPE 2
#define XID 4
#define FLOW 8 /* giaddr, source, source_port, mode, helpers, ifindex, delivery: 20 bytes */
#define FLOW_SIZE 20
#define DESTINATION 28
#define SERVERS 32
#define SERVERS_SIZE 32
#define LATENCY 64
#define CHADDR 72
#define CHADDR_SIZE 16

/* A latency this long (ns) or longer is left to Python: below it, latency_ms's integer
 * rounding is Python's round() of the double (see there). */
#define LATENCY_LIMIT 1000000000000LL

/* What a flow's lines share, as StepLines renders it: the event it was rendered from (its flow
 * fields identify the flow), then pieces. A request's line is its xid and chaddr, then
 * piece[0]; a reply's puts its destination after piece[0] and its latency between piece[1] and
 * piece[2]. */
struct flow {
	uint8_t event[EVENT_SIZE];
	const char *piece[3];
	uint32_t length[3];
};

static int same_flow(const uint8_t *event, const uint8_t *known)
{
	if (event[OP] != known[OP] || memcmp(event + HOPS_TYPE, known + HOPS_TYPE, 2) != 0
	    || memcmp(event + FLOW, known + FLOW, FLOW_SIZE) != 0)
		return 0;
	return event[OP] != FORWARDED
	       || memcmp(event + SERVERS, known + SERVERS, SERVERS_SIZE) == 0;
}

static const char HEX[] = "0123456789abcdef";

static char *put(char *out, const char *text, size_t length)
{
	memcpy(out, text, length);
	return out + length;
}

#define PUT(out, literal) put(out, literal, sizeof(literal) - 1)

static char *hex_byte(char *out, uint8_t byte)
{
	out[0] = HEX[byte >> 4];
	out[1] = HEX[byte & 15];
	return out + 2;
}

static char *decimal(char *out, uint64_t value)
{
	char digits[20], *first = digits + sizeof(digits);

	do
		*--first = (char)('0' + value % 10);
	while (value /= 10);
	return put(out, first, (size_t)(digits + sizeof(digits) - first));
}

/* A reply's latency in milliseconds as the daemon writes it: orjson's text of Python's
 * round(ns / 1e6, 3), for 0 <= ns < LATENCY_LIMIT. round() rounds the double x = ns / 1e6 to
 * the nearest thousandth, ties to even. x is within 2^-53 x of ns / 1e6; below the limit that
 * is less than the 10^-6 between ns / 1e6 and a midpoint, so x rounds as ns / 1e6 does, except
 * when ns / 1e6 is a midpoint itself (ns % 1000 == 500): then x's side of it decides, which
 * fma gives exactly (x * 1e6 - ns, rounded once, keeps its sign), and x on it is a tie.
 * orjson writes the double nearest the result with the fewest digits that read back: the
 * thousandths less their trailing zeros (one digit kept after the point). No printf: its
 * "%.3f" costs more than the rest of the line. */
static char *latency_ms(char *out, int64_t ns)
{
	int64_t thousandths = ns / 1000, rest = ns % 1000;

	if (rest > 500) {
		thousandths++;
	} else if (rest == 500) {
		double x = (double)ns / 1e6, side = fma(x, 1e6, -(double)ns);
		if (side > 0 || (side == 0 && thousandths % 2 == 1))
			thousandths++;
	}
	out = decimal(out, (uint64_t)(thousandths / 1000));
	*out++ = '.';
	unsigned fraction = (unsigned)(thousandths % 1000);
	out[0] = (char)('0' + fraction / 100);
	out[1] = (char)('0' + fraction / 10 % 10);
	out[2] = (char)('0' + fraction % 10);
	return out + (fraction % 100 == 0 ? 1 : fraction % 10 == 0 ? 2 : 3);
}

/* The longest a line adds to its pieces: the xid and chaddr with their keys, a destination, a
 * latency. */
#define LINE_MAX_OWN 160

/* Renders the records region[*index .. count) as step lines into out (at most capacity bytes,
 * whole lines only), skipping discarded records, and says where to cut them into writes of at
 * most chunk bytes: each cut's offset into ends (at most *cuts of them; *cuts is set to those
 * made). Returns the bytes written and leaves *index at the first record not rendered. It
 * stops early at a record it leaves to the caller: one that is not a step (a throttled client),
 * one of a flow not in flows, a latency of LATENCY_LIMIT or more, a line that might not fit in
 * a chunk alone; and when out or ends are full. So 0 bytes with *index unmoved means the
 * record at *index is the caller's. */
size_t boothop_step_lines(const uint8_t *region, size_t count, size_t *index,
			  const struct flow *flows, size_t flow_count, char *out,
			  size_t capacity, size_t *ends, size_t *cuts, size_t chunk)
{
	char *start = out, *end = out + capacity, *cut = out;
	size_t at = *index, made = 0;

	for (; at < count; at++) {
		const uint8_t *record = region + at * RECORD_SIZE;
		const uint8_t *event = record + HEADER;
		const struct flow *flow = NULL;
		size_t need, i;
		int64_t latency;

		if (record[3] & DISCARD_FLAG)
			continue;
		if (event[OP] != FORWARDED && event[OP] != DELIVERED)
			break;
		for (i = 0; i < flow_count; i++) {
			if (same_flow(event, flows[i].event)) {
				flow = &flows[i];
				break;
			}
		}
		if (flow == NULL)
			break;
		memcpy(&latency, event + LATENCY, sizeof(latency));
		if (event[OP] == DELIVERED && latency >= LATENCY_LIMIT)
			break;
		need = LINE_MAX_OWN + flow->length[0] + flow->length[1] + flow->length[2];
		if (need > chunk || (size_t)(end - out) < need)
			break;
		if ((size_t)(out - cut) + need > chunk) {
			if (made == *cuts)
				break;
			ends[made++] = (size_t)(out - start);
			cut = out;
		}

		out = PUT(out, "{\"xid\":\"0x");
		for (i = 0; i < 4; i++)
			out = hex_byte(out, event[XID + i]);
		out = PUT(out, "\",\"chaddr\":\"");
		size_t hlen = event[HLEN] < CHADDR_SIZE ? event[HLEN] : CHADDR_SIZE;
		for (i = 0; i < hlen; i++) {
			if (i)
				*out++ = ':';
			out = hex_byte(out, event[CHADDR + i]);
		}
		out = PUT(out, "\",");
		out = put(out, flow->piece[0], flow->length[0]);
		if (event[OP] == FORWARDED)
			continue;

		out = PUT(out, "\"destination\":\"");
		for (i = 0; i < 4; i++) {
			if (i)
				*out++ = '.';
			out = decimal(out, event[DESTINATION + i]);
		}
		out = PUT(out, "\",");
		out = put(out, flow->piece[1], flow->length[1]);
		out = latency < 0 ? PUT(out, "null") : latency_ms(out, latency);
		out = put(out, flow->piece[2], flow->length[2]);
	}
	*index = at;
	*cuts = made;
	return (size_t)(out - start);
}
