/*
 * libFuzzer harness for the outstanding-request FIFO (src/pool/outstanding.c).
 *
 * Each input byte is one operation:
 *   0x7f                 free and re-initialise the queue
 *   0x00-0x7e            a frontend message sent to the server: type = frontend[b & 15] (through
 *                        req_kind_for_frontend), bit 4 = injected by pgrelay (skip), bit 5 =
 *                        Describe of a statement ('S') rather than a portal
 *   0x80-0xff            a backend message: type = backend[(b & 127) % n] (includes types the
 *                        queue treats as asynchronous and bytes no server sends)
 * A shadow copy (a plain array) follows the queue: pushes are mirrored, and whatever the queue
 * pops is taken off the front of the shadow. After every step the ring must hold exactly the
 * shadow, in order, and the documented rules must hold (see check_step).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pool/outstanding.h"
#include "protocol/pqmsg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond))                                                                       \
			__builtin_trap();                                                          \
	} while (0)

static const uint8_t frontend[16] = { 'P', 'B', 'C', 'D', 'E', 'S', 'Q', 'F',
				      'H', 'd', 'c', 'f', 'X', 'p', 0,	 'Z' };
static const uint8_t backend[] = { '1', '2', '3', 't', 'T', 'n', 'D', 'G', 'H',
				   'W', 'd', 'c', 'V', 'C', 'I', 's', 'E', 'Z',
				   'N', 'A', 'S', 'K', 'R', 'v', 0,   'x', 0xff };

#define SHADOW_MAX 8192 /* more than the pushes of one input: the input is bounded below */

struct shadow {
	struct req r[SHADOW_MAX];
	size_t head, count; /* a plain sliding window */
};

static bool pow2(uint32_t v)
{
	return v && (v & (v - 1)) == 0;
}

/* The ring holds exactly the shadow, and its bookkeeping is sane. */
static void check_same(const struct req_queue *q, const struct shadow *s)
{
	CHECK(q->count == s->count);
	CHECK(req_queue_empty(q) == (s->count == 0));
	if (q->cap == 0) {
		CHECK(q->count == 0 && q->ring == NULL);
		return;
	}
	CHECK(pow2(q->cap) && q->cap >= 16 && q->cap <= REQ_QUEUE_MAX);
	CHECK(q->head < q->cap && q->count <= q->cap);
	for (uint32_t i = 0; i < q->count; i++) {
		const struct req *a = &q->ring[(q->head + i) & (q->cap - 1)];
		const struct req *b = &s->r[s->head + i];
		CHECK(a->kind == b->kind && a->skip == b->skip);
	}
	/* discarding means: an error emptied the queue and no Sync came since */
	if (q->discarding)
		CHECK(q->count == 0);
}

static bool ends_with_ready(uint8_t kind)
{
	return kind == REQ_SYNC || kind == REQ_QUERY || kind == REQ_FUNCTION;
}

static void frontend_message(struct req_queue *q, struct shadow *s, uint8_t b)
{
	uint8_t type = frontend[b & 15];
	bool skip = b & 0x10;
	int kind = req_kind_for_frontend(type, (b & 0x20) ? 'S' : 'P');
	if (kind < 0) {
		CHECK(type == 'H' || type == 'd' || type == 'c' || type == 'f' || type == 'X' ||
		      type == 'p' || type == 0 || type == 'Z');
		return;
	}
	CHECK(kind >= REQ_PARSE && kind <= REQ_FUNCTION);
	bool was_discarding = q->discarding;
	CHECK(req_push(q, (enum req_kind)kind, skip));
	if (was_discarding && kind != REQ_SYNC) {
		CHECK(q->discarding); /* the server skips it: no answer expected */
		return;
	}
	CHECK(!q->discarding);
	CHECK(s->head + s->count < SHADOW_MAX);
	s->r[s->head + s->count] = (struct req){ .kind = (uint8_t)kind, .skip = skip };
	s->count++;
}

static void backend_message(struct req_queue *q, struct shadow *s, uint8_t b)
{
	uint8_t type = backend[(b & 127) % sizeof(backend)];
	bool had_head = s->count > 0;
	struct req head = had_head ? s->r[s->head] : (struct req){ 0 };
	bool dropped_before = q->dropped_injected;
	size_t before = s->count;
	enum req_verdict v = req_on_backend_message(q, type);
	CHECK(v == REQ_FORWARD || v == REQ_SKIP || v == REQ_VIOLATION);
	CHECK(q->count <= before);
	size_t popped = before - q->count;
	if (dropped_before)
		CHECK(q->dropped_injected); /* sticky */
	if (v == REQ_VIOLATION)
		CHECK(popped == 0); /* the connection is closed; the queue is left as it was */
	if (v == REQ_SKIP)
		CHECK(had_head && head.skip); /* only answers to injected requests are hidden */
	if (type == PqMsg_ErrorResponse) {
		if (had_head && !ends_with_ready(head.kind)) {
			/* everything up to the next Sync is gone; the Sync stays */
			CHECK(popped >= 1);
			CHECK(q->count == 0 || q->ring[q->head].kind == REQ_SYNC);
			for (size_t i = 0; i < popped; i++)
				if (s->r[s->head + i].skip)
					CHECK(q->dropped_injected);
		} else {
			CHECK(popped == 0);
		}
	} else {
		CHECK(popped <= 1);
		if (popped && type == PqMsg_ReadyForQuery)
			CHECK(ends_with_ready(head.kind));
		if (type == PqMsg_ReadyForQuery && v != REQ_VIOLATION)
			CHECK(popped == 1);
	}
	s->head += popped;
	s->count -= popped;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > SHADOW_MAX / 2)
		return 0;
	struct req_queue q;
	static struct shadow s;
	req_queue_init(&q);
	memset(&s, 0, sizeof(s));
	for (size_t i = 0; i < size; i++) {
		uint8_t b = data[i];
		if (b == 0x7f) {
			req_queue_free(&q);
			CHECK(q.ring == NULL && q.count == 0 && q.cap == 0 && !q.discarding);
			req_queue_init(&q);
			s.head = s.count = 0;
		} else if (b & 0x80) {
			backend_message(&q, &s, b);
		} else {
			frontend_message(&q, &s, b);
		}
		check_same(&q, &s);
	}
	req_queue_free(&q);
	return 0;
}
