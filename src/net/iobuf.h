/*
 * Read buffers with three cursors: done <= parsed <= recv <= cap.
 *   [0, done)        finished: sent to the peer or skipped;
 *   [done, parsed)   scanned and decided "send", waiting for (or in) a write;
 *   [parsed, recv)   received, not yet scanned.
 * Buffers come from a per-worker free list (bounded) when bytes arrive and go back when a
 * connection has nothing buffered, so idle connections hold no buffer at all.
 */
#ifndef PGRELAY_NET_IOBUF_H
#define PGRELAY_NET_IOBUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define IOBUF_SIZE	 (32u * 1024u) /* must exceed FRAME_SHORT_MAX + 5: whole short messages fit */
#define IOBUF_POOL_KEEP	 1024 /* free buffers kept for reuse; more are returned to malloc */
#define IOBUF_POOL_FLOOR 32   /* free buffers kept however long they go unused */

struct conn;

/*
 * A write a socket did not take at once, waiting in its destination conn's queue (conn.c). With
 * src it stands for src's forward: src's done cursor moves when it completes.
 */
struct conn_wreq {
	struct conn_wreq *next;
	struct conn *src;   /* borrowed (a reference held), or NULL for an injected packet */
	const uint8_t *ptr; /* the next byte to write */
	uint32_t len;	    /* bytes left to write */
	uint32_t copy_len;  /* bytes of the owned copy after this struct; 0: bytes in src's rbuf */
};

struct iobuf {
	uint32_t done;
	uint32_t parsed;
	uint32_t recv;
	uint32_t cap;
	/* Changes whenever bytes may move or be replaced (handed out, compacted): a pointer into
	 * data with an equal gen still points at the same bytes. Unique per worker thread. */
	uint64_t gen;
	struct iobuf *next_free; /* link in the pool's free list while free */
	/* The write of a forward out of this buffer that the socket did not take at once
	 * (conn_forward). It lives here, not in struct conn, because a forward in flight always
	 * holds its buffer: an idle connection, which holds no buffer, pays nothing for it. */
	struct conn_wreq fwd_req;
	uint8_t data[];
};

struct iobuf_pool {
	struct iobuf *free; /* owned: singly linked free list */
	uint32_t n_free;
	uint32_t low_free;   /* the fewest free buffers since the last iobuf_pool_trim */
	uint64_t n_live;     /* buffers handed out and not yet returned */
	uint64_t n_released; /* buffers given back to malloc, ever */
};

void iobuf_pool_init(struct iobuf_pool *p);
void iobuf_pool_destroy(struct iobuf_pool *p);
/*
 * Called periodically (the janitor, every second): frees half of the free buffers that nobody
 * took since the last call, keeping IOBUF_POOL_FLOOR. After a burst (thousands of clients each
 * holding a buffer at once) the cache shrinks back within seconds instead of keeping up to
 * IOBUF_POOL_KEEP buffers (32 MB) for good. Returns how many it freed.
 */
uint32_t iobuf_pool_trim(struct iobuf_pool *p);
/* NULL when out of memory. */
struct iobuf *iobuf_get(struct iobuf_pool *p);
void iobuf_put(struct iobuf_pool *p, struct iobuf *b);

static inline bool iobuf_empty(const struct iobuf *b)
{
	return b->done == b->recv;
}

/*
 * Finishes the n bytes at the scan cursor without sending them: a message pgrelay answered or
 * dropped itself. Only for a buffer with nothing waiting to be written (done == parsed), which
 * holds whenever no backend is linked or the relay stopped at a boundary.
 */
static inline void iobuf_consume(struct iobuf *b, uint32_t n)
{
	b->parsed += n;
	b->done = b->parsed;
}

/* Moves [done, recv) to the front. A copy, done only when a partial message straddles the end. */
void iobuf_compact(struct iobuf *b);

#endif
