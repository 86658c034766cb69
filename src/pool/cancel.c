/*
 * Cancel keys and outgoing cancel requests; see cancel.h.
 */
#include "pool/cancel.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "pool/client.h"
#include "pool/outstanding.h"
#include "pool/server.h"
#include "pool/worker.h"
#include "util/log.h"

#define CANCEL_TIMEOUT_MS  5000
#define CANCEL_MAP_INITIAL 1024

/* A removed entry: keeps probe chains intact until the next rebuild. Never dereferenced. */
static char cancel_tombstone_mark;
#define CANCEL_TOMBSTONE ((struct client *)(void *)&cancel_tombstone_mark)

static bool cancel_slot_live(const struct client *c)
{
	return c && c != CANCEL_TOMBSTONE;
}

bool cancel_map_init(struct cancel_map *m)
{
	m->slots = calloc(CANCEL_MAP_INITIAL, sizeof(*m->slots));
	m->cap = CANCEL_MAP_INITIAL;
	m->used = m->live = 0;
	m->n_keys = 0;
	uint32_t start;
	if (RAND_bytes((uint8_t *)&start, sizeof(start)) != 1)
		start = 1;
	/* Looks like a pid and varies between runs, so keys from an old run do not match. */
	m->next_pid = (start % 4000000u) + 1000u;
	return m->slots != NULL;
}

void cancel_map_destroy(struct cancel_map *m)
{
	free(m->slots);
	m->slots = NULL;
	m->cap = m->used = m->live = 0;
}

static size_t cancel_hash(uint32_t pid, size_t cap)
{
	return (size_t)(pid * 2654435761u) & (cap - 1);
}

/* Rebuilds the table without tombstones, twice as large when a quarter or more is live. */
static bool cancel_map_grow(struct cancel_map *m)
{
	size_t ncap = m->live * 4 > m->cap ? m->cap * 2 : m->cap;
	struct client **ns = calloc(ncap, sizeof(*ns));
	if (!ns)
		return false;
	for (size_t i = 0; i < m->cap; i++) {
		struct client *c = m->slots[i];
		if (!cancel_slot_live(c))
			continue;
		size_t j = cancel_hash(c->cancel_pid, ncap);
		while (ns[j])
			j = (j + 1) & (ncap - 1);
		ns[j] = c;
	}
	free(m->slots);
	m->slots = ns;
	m->cap = ncap;
	m->used = m->live;
	return true;
}

/* The slot of the live entry for pid, or NULL. */
static struct client **cancel_map_slot(const struct cancel_map *m, uint32_t pid)
{
	size_t i = cancel_hash(pid, m->cap);
	while (m->slots[i]) {
		if (cancel_slot_live(m->slots[i]) && m->slots[i]->cancel_pid == pid)
			return &m->slots[i];
		i = (i + 1) & (m->cap - 1);
	}
	return NULL;
}

bool cancel_map_add(struct cancel_map *m, struct client *client)
{
	/* At most 70 % full (tombstones count): pids are consecutive and the multiplicative hash
	 * spreads them, so probes stay short; at half full the table was 26 bytes per client. */
	if ((m->used + 1) * 10 > m->cap * 7 && !cancel_map_grow(m))
		return false;
	if (m->n_keys == 0) {
		if (RAND_bytes((uint8_t *)m->keys, sizeof(m->keys)) != 1)
			return false;
		m->n_keys = CANCEL_KEYS_BATCH;
	}
	uint32_t k = m->keys[--m->n_keys];
	m->keys[m->n_keys] = 0; /* a used key does not stay in memory */
	uint32_t p;
	do {
		p = m->next_pid++;
		if (m->next_pid > 0x7ffffff0u)
			m->next_pid = 1000;
	} while (cancel_map_slot(m, p)); /* a session of an earlier lap still has it */
	size_t i = cancel_hash(p, m->cap);
	while (m->slots[i])
		i = (i + 1) & (m->cap - 1); /* the chain's end: tombstones stay until a rebuild */
	client->cancel_pid = p;
	client->cancel_key = k;
	m->slots[i] = client;
	m->used++;
	m->live++;
	return true;
}

void cancel_map_remove(struct cancel_map *m, struct client *client)
{
	struct client **s = cancel_map_slot(m, client->cancel_pid);
	if (!s || *s != client)
		return;
	*s = CANCEL_TOMBSTONE;
	m->live--;
}

struct client *cancel_map_find(const struct cancel_map *m, uint32_t pid, uint32_t key)
{
	struct client **s = cancel_map_slot(m, pid);
	if (!s || CRYPTO_memcmp(&(*s)->cancel_key, &key, sizeof(key)) != 0)
		return NULL;
	return *s;
}

/*
 * One outgoing cancel: connect, write 16 bytes, wait until PostgreSQL closes the connection (it
 * has signalled the backend by then), close; the timer bounds all of it.
 */
struct cancel_req {
	uv_tcp_t tcp;
	uv_connect_t connect;
	uv_write_t write;
	uv_timer_t timer;
	struct worker *w;      /* borrowed */
	struct list_node link; /* in w->cancel_reqs */
	struct server *held;   /* the backend kept from other clients meanwhile, or NULL */
	struct client *waiter; /* borrowed: the connection that asked, closed when this ends */
	char sink[16];	       /* what the server might send before closing (nothing) */
	int open_handles;      /* freed when both handles are closed */
	/* What the cancel is for, found again by key once connected (the objects may be gone). */
	uint32_t target_pid, target_key; /* pgrelay's BackendKeyData of the target session */
	uint64_t server_id;		 /* the backend connection that ran its request */
	bool recheck; /* false for an abandoned request: its backend connection is gone */
	uint8_t packet[16];
};

static void cancel_req_handle_closed(uv_handle_t *h)
{
	struct cancel_req *r = h->data;
	if (--r->open_handles > 0)
		return;
	r->w->n_cancel_conns--;
	struct worker *w = r->w;
	free(r);
	worker_check_shutdown_done(w);
}

/* The backend may serve other clients again: this cancel can no longer reach them. */
static void cancel_req_release(struct cancel_req *r)
{
	struct server *s = r->held;
	if (!s)
		return;
	r->held = NULL;
	if (--s->cancels_in_flight == 0)
		server_cancels_done(s);
}

static void cancel_req_finish(struct cancel_req *r)
{
	struct client *waiter = r->waiter;
	r->waiter = NULL;
	if (waiter) /* as PostgreSQL, which closes once it has signalled the backend */
		client_disconnect(waiter, NULL, "cancel request handled");
	if (!list_empty(&r->link)) {
		list_del(&r->link);
		list_init(&r->link);
	}
	cancel_req_release(r);
	if (!uv_is_closing((uv_handle_t *)&r->tcp))
		uv_close((uv_handle_t *)&r->tcp, cancel_req_handle_closed);
	if (!uv_is_closing((uv_handle_t *)&r->timer))
		uv_close((uv_handle_t *)&r->timer, cancel_req_handle_closed);
}

static void cancel_req_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	(void)suggested;
	struct cancel_req *r = h->data;
	*buf = uv_buf_init(r->sink, sizeof(r->sink));
}

static void cancel_req_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
	(void)buf;
	if (nread < 0) /* EOF: PostgreSQL handled it (or an error: nothing more will come) */
		cancel_req_finish(st->data);
}

static void cancel_req_written(uv_write_t *req, int status)
{
	struct cancel_req *r = req->data;
	/*
	 * PostgreSQL signals the backend, then closes: until then the backend may still be hit, so
	 * it is not handed to another client (the second race of PgBouncer's PR #717).
	 */
	if (status < 0 || !r->held ||
	    uv_read_start((uv_stream_t *)&r->tcp, cancel_req_alloc, cancel_req_read) < 0)
		cancel_req_finish(r);
}

static void cancel_req_connected(uv_connect_t *req, int status)
{
	struct cancel_req *r = req->data;
	if (status < 0) {
		log_info("cancel", 0, "could not connect to send a cancel request: %s",
			 uv_strerror(status));
		cancel_req_finish(r);
		return;
	}
	/* The session may have finished its request, and the backend moved to another client. */
	struct client *target =
		r->recheck ? cancel_map_find(&r->w->cancels, r->target_pid, r->target_key) : NULL;
	struct server *s = target ? cancel_target_backend(target) : NULL;
	if (r->recheck && (!s || s->id != r->server_id)) {
		log_debug("cancel", 0,
			  "cancel dropped: the request finished before it could be sent");
		cancel_req_finish(r);
		return;
	}
	uv_buf_t b = uv_buf_init((char *)r->packet, sizeof(r->packet));
	r->write.data = r;
	if (uv_write(&r->write, (uv_stream_t *)&r->tcp, &b, 1, cancel_req_written) < 0)
		cancel_req_finish(r);
}

static void cancel_req_timeout(uv_timer_t *t)
{
	cancel_req_finish(t->data);
}

static void put_u32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

struct server *cancel_target_backend(struct client *target)
{
	struct server *s = target->server;
	if (!s || s->client != target || s->state != SV_ACTIVE || req_queue_empty(&s->reqs))
		return NULL;
	return s;
}

/*
 * Sends backend s its own CancelRequest on a new connection (fire and forget, bounded in time and
 * number). recheck: once connected, send only if session (pid, key) still has its request in
 * flight on s; else s's backend connection is being closed and nothing else can run there.
 */
static struct cancel_req *cancel_send(struct worker *w, const struct server *s, bool recheck,
				      uint32_t pid, uint32_t key)
{
	if (w->n_cancel_conns >= CANCEL_MAX_IN_FLIGHT) {
		log_info("cancel", s->id,
			 "cancel request dropped: %d cancel requests already in flight",
			 w->n_cancel_conns);
		return NULL;
	}
	if (!worker_fd_available(w))
		return NULL;
	struct cancel_req *r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->w = w;
	r->target_pid = pid;
	r->target_key = key;
	r->server_id = s->id;
	r->recheck = recheck;
	list_init(&r->link);
	const struct sockaddr *addr = (const struct sockaddr *)&s->addr;
	put_u32(r->packet, 16);
	put_u32(r->packet + 4, 80877102u);
	put_u32(r->packet + 8, s->be_pid);
	put_u32(r->packet + 12, s->be_key);
	if (uv_tcp_init(&w->loop, &r->tcp) < 0) {
		free(r);
		return NULL;
	}
	r->tcp.data = r;
	uv_timer_init(&w->loop, &r->timer);
	r->timer.data = r;
	r->open_handles = 2;
	w->n_cancel_conns++;
	if (recheck) {
		/* s stays with its client until the cancel is over (server_maybe_release). */
		r->held = (struct server *)s;
		r->held->cancels_in_flight++;
		list_append(&w->cancel_reqs, &r->link);
	}
	r->connect.data = r;
	uv_timer_start(&r->timer, cancel_req_timeout, CANCEL_TIMEOUT_MS, 0);
	if (uv_tcp_connect(&r->connect, &r->tcp, addr, cancel_req_connected) < 0) {
		cancel_req_finish(r);
		return NULL;
	}
	return r;
}

bool cancel_forward(struct worker *w, uint32_t pid, uint32_t key, struct client *waiter)
{
	struct client *target = cancel_map_find(&w->cancels, pid, key);
	struct server *s = target ? cancel_target_backend(target) : NULL;
	if (!s) {
		log_debug("cancel", 0, "cancel request for unknown or idle session not forwarded");
		return false;
	}
	log_debug("cancel", target->id, "forwarding cancel to backend pid %u", s->be_pid);
	struct cancel_req *r = cancel_send(w, s, true, pid, key);
	if (!r)
		return false;
	r->waiter = waiter;
	return waiter != NULL;
}

void cancel_forget_waiter(struct worker *w, const struct client *waiter)
{
	struct list_node *pos, *tmp;
	list_for_each_safe(pos, tmp, &w->cancel_reqs)
	{
		struct cancel_req *r = list_entry(pos, struct cancel_req, link);
		if (r->waiter == waiter)
			r->waiter = NULL;
	}
}

void cancel_forget_server(struct worker *w, struct server *s)
{
	struct list_node *pos, *tmp;
	list_for_each_safe(pos, tmp, &w->cancel_reqs)
	{
		struct cancel_req *r = list_entry(pos, struct cancel_req, link);
		if (r->held == s) {
			r->held = NULL;
			s->cancels_in_flight--;
		}
	}
}

void cancel_abandoned(struct worker *w, const struct server *s)
{
	if (!s->be_pid)
		return;
	log_debug("cancel", s->id, "cancelling the abandoned request on backend pid %u", s->be_pid);
	cancel_send(w, s, false, 0, 0);
}
