/*
 * Relay scanner; see relay.h. Cursor discipline (net/iobuf.h): a message decided "send" extends
 * [done, parsed); a skipped one may only be dropped once everything before it was sent, so a skip
 * behind unsent bytes first flushes them and resumes skipping when that forward completes.
 */
#include "net/relay.h"

/* Internal: scan once more (a skip could proceed after a flush that finished at once). */
#define RELAY_AGAIN ((enum relay_result) - 1)

static bool relay_consume_remaining(struct conn *src, bool *must_flush)
{
	struct iobuf *b = src->rbuf;
	uint32_t avail = b->recv - b->parsed;
	uint32_t n = src->pkt_remaining < avail ? src->pkt_remaining : avail;
	if (src->pkt_skip) {
		if (b->done < b->parsed) {
			*must_flush = true;
			return false;
		}
		b->done += n;
	}
	b->parsed += n;
	src->pkt_remaining -= n;
	return src->pkt_remaining == 0;
}

static enum relay_result relay_flush(struct conn *src, struct conn *dst)
{
	struct iobuf *b = src->rbuf;
	if (!b || b->done == b->parsed)
		return RELAY_DRAINED;
	int rc = conn_forward(src, dst);
	if (rc < 0)
		return RELAY_WRITE_FAILED;
	return rc == 1 ? RELAY_WRITING : RELAY_DRAINED;
}

static enum relay_result relay_scan_once(struct conn *src, struct conn *dst, uint32_t max_len,
					 const struct relay_ops *ops, void *owner)
{
	if (conn_forward_busy(src))
		return RELAY_WRITING;
	struct iobuf *b = src->rbuf;
	if (!b)
		return RELAY_DRAINED;
	enum relay_result stop = RELAY_DRAINED;
	for (;;) {
		if (src->pkt_remaining) {
			bool must_flush = false;
			/* Stops when the rest has not arrived, or a skip waits for a flush. */
			if (!relay_consume_remaining(src, &must_flush))
				break;
			continue;
		}
		struct frame f;
		enum frame_status st = frame_parse(b->data + b->parsed, b->recv - b->parsed,
						   ops->side, max_len, &f);
		if (st == FRAME_NEED_MORE)
			break;
		if (st == FRAME_BAD)
			return RELAY_BAD_MESSAGE;
		/* A message all here has whatever prefix its owner needs. */
		uint32_t need = f.body_avail < f.len && ops->needs_bytes
					? ops->needs_bytes(owner, f.type, f.len)
					: 0;
		if (f.body_avail < need) {
			/* The prefix always fits: make room if the message straddles the end. */
			if (b->parsed + FRAME_HEADER_LEN + need > b->cap &&
			    !conn_forward_busy(src) && b->done == b->parsed)
				iobuf_compact(b);
			break;
		}
		enum relay_verdict v = ops->on_message(owner, &f);
		if (v == RELAY_GONE)
			return RELAY_CLOSED;
		if (v == RELAY_STOP) {
			stop = RELAY_STOPPED;
			break;
		}
		/* The usual message, all here: passed over at once (relay_consume_remaining's
		 * arithmetic, with nothing left over). */
		if (b->recv - b->parsed >= f.total && (v == RELAY_SEND || b->done == b->parsed)) {
			b->parsed += f.total;
			if (v == RELAY_SKIP)
				b->done = b->parsed;
			continue;
		}
		src->pkt_remaining = f.total;
		src->pkt_skip = v == RELAY_SKIP;
	}
	if (!dst && ops->late_dst)
		dst = ops->late_dst(owner);
	enum relay_result fr = dst ? relay_flush(src, dst) : RELAY_DRAINED;
	if (fr != RELAY_DRAINED)
		return fr;
	/* A skip that waited for a flush can proceed now that the flush finished at once. */
	if (stop == RELAY_DRAINED && src->pkt_remaining && src->pkt_skip && b->done == b->parsed &&
	    b->parsed < b->recv)
		return RELAY_AGAIN;
	return stop;
}

enum relay_result relay_scan(struct conn *src, struct conn *dst, uint32_t max_len,
			     const struct relay_ops *ops, void *owner)
{
	enum relay_result r;
	do
		r = relay_scan_once(src, dst, max_len, ops, owner);
	while (r == RELAY_AGAIN);
	if (r != RELAY_CLOSED)
		conn_settle(src);
	return r;
}
