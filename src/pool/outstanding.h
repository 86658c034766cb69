/*
 * Outstanding requests of one backend connection (PgBouncer's OutstandingRequest): a FIFO of the
 * messages sent to the server that will be answered, in the order they were sent. Each backend
 * message is matched against the head, which tells
 *  - whether the answer belongs to a message pgrelay injected (prepared statement re-Parse,
 *    parameter sync, reset) and must not reach the client;
 *  - when the backend is at a boundary (nothing outstanding): only then may a pooled connection
 *    change hands.
 * After an ErrorResponse in the extended protocol the server skips messages up to Sync, so their
 * entries are dropped. The queue is bounded: a client pipelining more than REQ_QUEUE_MAX
 * responses-to-be is a protocol abuse and is disconnected.
 */
#ifndef PGRELAY_POOL_OUTSTANDING_H
#define PGRELAY_POOL_OUTSTANDING_H

#include <stdbool.h>
#include <stdint.h>

#include "protocol/pqmsg.h"

#define REQ_QUEUE_MAX (1u << 20)

enum req_kind {
	REQ_PARSE,
	REQ_BIND,
	REQ_CLOSE,
	REQ_DESCRIBE_STMT,
	REQ_DESCRIBE_PORTAL,
	REQ_EXECUTE,
	REQ_SYNC,
	REQ_QUERY,
	REQ_FUNCTION,
};

struct req {
	uint8_t kind; /* enum req_kind */
	bool skip;    /* injected by pgrelay: its answers are not forwarded */
};

struct req_queue {
	struct req *ring; /* owned; cap entries */
	uint32_t head;	  /* index of the oldest entry */
	uint32_t count;	  /* entries in use */
	uint32_t cap;	  /* power of two, 0 before the first push */
	bool discarding;  /* an extended-protocol error with no Sync queued: ignore all but Sync */
	bool dropped_injected; /* an error made the server skip an injected request (sticky) */
};

enum req_verdict {
	REQ_FORWARD,   /* pass the message to the client */
	REQ_SKIP,      /* answer to an injected request: drop it */
	REQ_VIOLATION, /* the server answered something nobody asked: close it */
};

void req_queue_init(struct req_queue *q);
void req_queue_free(struct req_queue *q);
/* req_push when the queue is full or discarding. */
bool req_push_slow(struct req_queue *q, enum req_kind kind, bool skip)
	__attribute__((warn_unused_result));
/* False when out of memory or over REQ_QUEUE_MAX. Inline: every relayed request pushes one. */
static inline __attribute__((warn_unused_result)) bool req_push(struct req_queue *q,
								enum req_kind kind, bool skip)
{
	if (q->discarding || q->count == q->cap)
		return req_push_slow(q, kind, skip);
	struct req *r = &q->ring[(q->head + q->count) & (q->cap - 1)];
	r->kind = (uint8_t)kind;
	r->skip = skip;
	q->count++;
	return true;
}
/* Per frontend type byte: 1 + the request kind it creates, 0 if it is not answered on its own
 * (Flush, CopyData, CopyDone, CopyFail, Terminate). A Describe is REQ_DESCRIBE_PORTAL here. */
extern const uint8_t req_kind_of_type[256];
/* The request kind a frontend message type creates, or -1 if it is not answered on its own. */
static inline int req_kind_for_frontend(uint8_t type, uint8_t describe_target)
{
	if (describe_target == 'S' && type == PqMsg_Describe)
		return REQ_DESCRIBE_STMT;
	return (int)req_kind_of_type[type] - 1;
}
/* Matches one backend message against the queue and pops what it completes. */
enum req_verdict req_on_backend_message(struct req_queue *q, uint8_t type);

static inline bool req_queue_empty(const struct req_queue *q)
{
	return q->count == 0;
}

#endif
