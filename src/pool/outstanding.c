/* Outstanding-request FIFO; see outstanding.h. Pure: no I/O, no logging, unit-tested. */
#include "pool/outstanding.h"

#include <stdlib.h>
#include <string.h>

#include "protocol/pqmsg.h"

void req_queue_init(struct req_queue *q)
{
	memset(q, 0, sizeof(*q));
}

void req_queue_free(struct req_queue *q)
{
	free(q->ring);
	memset(q, 0, sizeof(*q));
}

static bool req_grow(struct req_queue *q)
{
	uint32_t ncap = q->cap ? q->cap * 2 : 16;
	if (ncap > REQ_QUEUE_MAX)
		return false;
	struct req *n = malloc(sizeof(*n) * ncap);
	if (!n)
		return false;
	for (uint32_t i = 0; i < q->count; i++)
		n[i] = q->ring[(q->head + i) & (q->cap - 1)];
	free(q->ring);
	q->ring = n;
	q->cap = ncap;
	q->head = 0;
	return true;
}

bool req_push_slow(struct req_queue *q, enum req_kind kind, bool skip)
{
	/* The server skips everything up to Sync after an error: those messages get no answer. */
	if (q->discarding) {
		if (kind != REQ_SYNC)
			return true;
		q->discarding = false;
	}
	if (q->count == q->cap && !req_grow(q))
		return false;
	struct req *r = &q->ring[(q->head + q->count) & (q->cap - 1)];
	r->kind = (uint8_t)kind;
	r->skip = skip;
	q->count++;
	return true;
}

const uint8_t req_kind_of_type[256] = {
	[PqMsg_Parse] = 1 + REQ_PARSE,	   [PqMsg_Bind] = 1 + REQ_BIND,
	[PqMsg_Close] = 1 + REQ_CLOSE,	   [PqMsg_Describe] = 1 + REQ_DESCRIBE_PORTAL,
	[PqMsg_Execute] = 1 + REQ_EXECUTE, [PqMsg_Sync] = 1 + REQ_SYNC,
	[PqMsg_Query] = 1 + REQ_QUERY,	   [PqMsg_FunctionCall] = 1 + REQ_FUNCTION,
};

static struct req *req_head(struct req_queue *q)
{
	return q->count ? &q->ring[q->head] : NULL;
}

static void req_pop(struct req_queue *q)
{
	q->head = (q->head + 1) & (q->cap - 1);
	q->count--;
}

/* The kinds whose answers end with ReadyForQuery. */
static bool req_ends_with_ready(uint8_t kind)
{
	return kind == REQ_SYNC || kind == REQ_QUERY || kind == REQ_FUNCTION;
}

/* After an error in the extended protocol the server ignores everything up to the next Sync. */
static void req_drop_until_sync(struct req_queue *q)
{
	while (q->count && req_head(q)->kind != REQ_SYNC) {
		if (req_head(q)->skip)
			q->dropped_injected = true;
		req_pop(q); /* a Query or FunctionCall behind the error is skipped too */
	}
	if (q->count == 0)
		q->discarding = true;
}

static enum req_verdict req_verdict_of(const struct req *r)
{
	return r->skip ? REQ_SKIP : REQ_FORWARD;
}

/* Pops head if it has one of the kinds a and b (b may equal a). */
static enum req_verdict req_complete(struct req_queue *q, uint8_t a, uint8_t b)
{
	struct req *h = req_head(q);
	if (!h || (h->kind != a && h->kind != b))
		return REQ_VIOLATION;
	enum req_verdict v = req_verdict_of(h);
	req_pop(q);
	return v;
}

/* A message inside the answer to head (rows, copy data, ...): head stays. */
static enum req_verdict req_within(struct req_queue *q, uint8_t a, uint8_t b, uint8_t c)
{
	struct req *h = req_head(q);
	if (!h || (h->kind != a && h->kind != b && h->kind != c))
		return REQ_VIOLATION;
	return req_verdict_of(h);
}

enum req_verdict req_on_backend_message(struct req_queue *q, uint8_t type)
{
	struct req *h = req_head(q);
	switch (type) {
	case PqMsg_ParseComplete:
		return req_complete(q, REQ_PARSE, REQ_PARSE);
	case PqMsg_BindComplete:
		return req_complete(q, REQ_BIND, REQ_BIND);
	case PqMsg_CloseComplete:
		return req_complete(q, REQ_CLOSE, REQ_CLOSE);
	case PqMsg_ParameterDescription:
		return req_within(q, REQ_DESCRIBE_STMT, REQ_DESCRIBE_STMT, REQ_DESCRIBE_STMT);
	case PqMsg_RowDescription:
		if (h && h->kind == REQ_QUERY)
			return req_verdict_of(h);
		return req_complete(q, REQ_DESCRIBE_STMT, REQ_DESCRIBE_PORTAL);
	case PqMsg_NoData:
		return req_complete(q, REQ_DESCRIBE_STMT, REQ_DESCRIBE_PORTAL);
	case PqMsg_DataRow:
	case PqMsg_CopyInResponse:
	case PqMsg_CopyOutResponse:
	case PqMsg_CopyBothResponse:
	case PqMsg_CopyData:
	case PqMsg_CopyDone:
		return req_within(q, REQ_EXECUTE, REQ_QUERY, REQ_QUERY);
	case PqMsg_FunctionCallResponse:
		return req_within(q, REQ_FUNCTION, REQ_FUNCTION, REQ_FUNCTION);
	case PqMsg_CommandComplete:
	case PqMsg_EmptyQueryResponse:
		if (h && h->kind == REQ_QUERY)
			return req_verdict_of(h);
		return req_complete(q, REQ_EXECUTE, REQ_EXECUTE);
	case PqMsg_PortalSuspended:
		return req_complete(q, REQ_EXECUTE, REQ_EXECUTE);
	case PqMsg_ErrorResponse: {
		if (!h)
			return REQ_FORWARD; /* e.g. FATAL on termination: the client must see it */
		/* Errors are the client's business even when an injected request failed. */
		if (!req_ends_with_ready(h->kind)) {
			if (h->skip)
				q->dropped_injected = true;
			req_pop(q);
			req_drop_until_sync(q);
			return REQ_FORWARD;
		}
		return h->skip ? REQ_SKIP : REQ_FORWARD;
	}
	case PqMsg_ReadyForQuery:
		if (!h || !req_ends_with_ready(h->kind))
			return REQ_VIOLATION;
		{
			enum req_verdict v = req_verdict_of(h);
			req_pop(q);
			return v;
		}
	default:
		/* NoticeResponse, NotificationResponse, ParameterStatus: asynchronous. */
		return REQ_FORWARD;
	}
}
