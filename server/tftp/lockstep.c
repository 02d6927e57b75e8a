/* The TFTP server's lock-step loop for a read transfer in octet mode, called through ctypes by
 * the transfer's thread (server/tftp/native.py) while it waits for an ACK.
 *
 * ReadTransfer (server/tftp/transfer.py) is its specification: each time the ACK of the block
 * in flight arrives, the block read ahead is sent, it becomes the block in flight, the next
 * block is read ahead, and the deadline is the clock plus the timeout; that is all it does
 * (``ReadTransfer._block_acked``). Anything else returns to Python, which tells the core what
 * happened here (``ReadTransfer.lock_stepped``) and goes on as if its own loop had served
 * those ACKs: another datagram, a receive that failed or timed out, a send or a file read that
 * failed, the end of the file, a deadline the time limit would cut. A property test holds the
 * two loops to the same datagrams and the same transfer.
 *
 * Why hand-written and not Python: the CPython loop costs some 8,700 instructions a 512-octet
 * block besides its two system calls, and in lock-step the client waits for all of them.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

/* What ended a call: as Python's loop would see it next. */
enum served {
	/* The block in flight is the last (nothing is read ahead): its ACK is the core's. */
	SERVED_END = 0,
	/* A datagram other than the ACK awaited: received[0:received_length]. */
	SERVED_DATAGRAM = 1,
	/* The receive failed (EAGAIN: SO_RCVTIMEO ran out, the deadline): error. */
	SERVED_RECEIVE_FAILED = 2,
	/* Sending the block read ahead failed (error); the ACK was served all the same, and
	 * nothing is read ahead: Python reads it. */
	SERVED_SEND_FAILED = 3,
	/* Reading the next block failed (error): nothing is read ahead; Python reads it again. */
	SERVED_READ_FAILED = 4,
	/* The clock plus the timeout reaches the time limit: the core caps the deadline. */
	SERVED_TIME_LIMIT = 5,
};

/* As much of a datagram as Python's loop reads (service.py's _ACK_BUFSIZE). */
#define RECEIVED 479

struct lockstep {
	/* The transfer's socket, connected to the peer, blocking, SO_RCVTIMEO armed. */
	int32_t sock;
	/* The file, read with pread from ``offset`` (its descriptor's position is Python's). */
	int32_t file;
	uint32_t blksize;
	/* The file's short block is read (in flight or ahead): nothing more to read. */
	int32_t ended;
	double timeout;
	/* The transfer's time limit, on the clock of ``now``. */
	double expires;
	/* The internal number (unbounded, sent modulo 65536) of the block in flight. */
	uint64_t block;
	/* The file's offset of the block after the one read ahead. */
	int64_t offset;
	/* The DATA of the block in flight and of the one read ahead (each blksize + 4 octets of
	 * room; swapped at each ACK); ahead_length 0: none is read ahead. */
	uint8_t *flight, *ahead;
	uint32_t flight_length, ahead_length;
	/* The file's octets at cached_at, read ahead of the blocks (one pread per ``room``). */
	uint8_t *cache;
	uint32_t room, cached;
	int64_t cached_at;
	/* Out: the ACKs served, the clock when the last was (CLOCK_MONOTONIC, in seconds as
	 * Python's time.monotonic gives them), the datagram or the errno that ended the call. */
	uint64_t acked;
	double now;
	uint32_t received_length;
	int32_t error;
	uint8_t received[RECEIVED];
};

/* time.monotonic()'s value: CPython's _PyTime_AsSecondsDouble of the clock in nanoseconds. */
static double monotonic(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	int64_t ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
	volatile double seconds;
	if (ns % 1000000000 == 0)
		seconds = (double)(ns / 1000000000);
	else
		seconds = (double)ns / 1e9;
	return seconds;
}

/* Up to ``count`` of the file's octets at ``offset`` into ``out``: fewer only at its end; -1
 * with errno if a read fails. */
static int64_t read_block(struct lockstep *s, uint8_t *out, uint32_t count)
{
	uint32_t got = 0;
	while (got < count) {
		if (s->offset >= s->cached_at && s->offset < s->cached_at + s->cached) {
			uint32_t from = (uint32_t)(s->offset - s->cached_at);
			uint32_t take = s->cached - from;
			if (take > count - got)
				take = count - got;
			memcpy(out + got, s->cache + from, take);
			got += take;
			s->offset += take;
			continue;
		}
		ssize_t n = pread(s->file, s->cache, s->room, s->offset);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		s->cached_at = s->offset;
		s->cached = (uint32_t)n;
		if (n == 0)
			break;
	}
	return got;
}

static void header(uint8_t *out, uint16_t opcode, uint64_t block)
{
	out[0] = (uint8_t)(opcode >> 8);
	out[1] = (uint8_t)opcode;
	out[2] = (uint8_t)(block >> 8);
	out[3] = (uint8_t)block;
}

int boothop_tftp_lockstep(struct lockstep *s)
{
	uint8_t awaited[4];
	header(awaited, 4, s->block); /* RFC 1350 §5: opcode 4, ACK */
	s->acked = 0;
	for (;;) {
		ssize_t n = recv(s->sock, s->received, RECEIVED, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			s->error = errno;
			return SERVED_RECEIVE_FAILED;
		}
		if (n != 4 || memcmp(s->received, awaited, 4) != 0) {
			s->received_length = (uint32_t)n;
			return SERVED_DATAGRAM;
		}
		int sent;
		do
			sent = (int)send(s->sock, s->ahead, s->ahead_length, 0);
		while (sent < 0 && errno == EINTR);
		int send_error = sent < 0 ? errno : 0;
		s->now = monotonic();
		s->acked++;
		s->block++;
		uint8_t *flight = s->flight;
		s->flight = s->ahead;
		s->flight_length = s->ahead_length;
		s->ahead = flight;
		s->ahead_length = 0;
		header(awaited, 4, s->block);
		if (send_error) { /* Python logs it, and reads the next block itself */
			s->error = send_error;
			return SERVED_SEND_FAILED;
		}
		if (!s->ended) {
			int64_t got = read_block(s, s->ahead + 4, s->blksize);
			if (got < 0) {
				s->error = errno;
				return SERVED_READ_FAILED;
			}
			header(s->ahead, 3, s->block + 1); /* opcode 3, DATA */
			s->ahead_length = (uint32_t)got + 4;
			s->ended = got < s->blksize;
		}
		if (s->now + s->timeout >= s->expires)
			return SERVED_TIME_LIMIT;
		if (!s->ahead_length)
			return SERVED_END;
	}
}
