/* Read buffer free list; see iobuf.h. Owned by one worker, so no locking. */
#include "net/iobuf.h"

#include <stdlib.h>
#include <string.h>

/* Buffers never change threads (one pool per worker), so a per-thread counter keeps gens unique. */
static _Thread_local uint64_t iobuf_next_gen;

void iobuf_pool_init(struct iobuf_pool *p)
{
	p->free = NULL;
	p->n_free = 0;
	p->low_free = 0;
	p->n_live = 0;
	p->n_released = 0;
}

void iobuf_pool_destroy(struct iobuf_pool *p)
{
	while (p->free) {
		struct iobuf *b = p->free;
		p->free = b->next_free;
		free(b);
	}
	p->n_free = 0;
}

struct iobuf *iobuf_get(struct iobuf_pool *p)
{
	struct iobuf *b = p->free;
	if (b) {
		p->free = b->next_free;
		p->n_free--;
		if (p->n_free < p->low_free)
			p->low_free = p->n_free;
	} else {
		b = malloc(sizeof(*b) + IOBUF_SIZE);
		if (!b)
			return NULL;
		b->cap = IOBUF_SIZE;
	}
	b->done = b->parsed = b->recv = 0;
	b->gen = ++iobuf_next_gen;
	b->next_free = NULL;
	p->n_live++;
	return b;
}

void iobuf_put(struct iobuf_pool *p, struct iobuf *b)
{
	p->n_live--;
	if (p->n_free >= IOBUF_POOL_KEEP) {
		free(b);
		p->n_released++;
		return;
	}
	b->next_free = p->free;
	p->free = b;
	p->n_free++;
}

uint32_t iobuf_pool_trim(struct iobuf_pool *p)
{
	/* low_free buffers sat in the list the whole period: the load did not need them. */
	uint32_t unused = p->low_free < p->n_free ? p->low_free : p->n_free;
	uint32_t drop = unused > IOBUF_POOL_FLOOR ? (unused - IOBUF_POOL_FLOOR + 1) / 2 : 0;
	for (uint32_t i = 0; i < drop; i++) {
		struct iobuf *b = p->free;
		p->free = b->next_free;
		free(b);
	}
	p->n_free -= drop;
	p->low_free = p->n_free;
	p->n_released += drop;
	return drop;
}

void iobuf_compact(struct iobuf *b)
{
	if (b->done == 0)
		return;
	uint32_t n = b->recv - b->done;
	if (n)
		memmove(b->data, b->data + b->done, n);
	b->parsed -= b->done;
	b->recv = n;
	b->done = 0;
	b->gen = ++iobuf_next_gen;
}
