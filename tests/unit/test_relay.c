/*
 * Unit tests of the relay scanner (src/net/relay.c) over real sockets: the destination conn is one
 * end of a socketpair(AF_UNIX) taken with conn_accept, and a uv_pipe_t on the other end collects
 * what arrives. Bytes are put into the source conn's read buffer the way conn_read_some does (into
 * the free tail, then scan, then conn_settle), and reading is "off" while a forward is in flight,
 * as in conn.c. The owner's verdict for each message, and how much of its body it needs to see
 * (needs_bytes), come from the test.
 *
 * The central property: whatever the split of the input into reads, exactly the messages marked
 * RELAY_SEND arrive, in order and byte-identical, the RELAY_SKIP ones never do, each message is
 * presented to the owner once and in order, and at the end the source holds no buffer.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "net/conn.h"
#include "net/iobuf.h"
#include "net/relay.h"
#include "protocol/frame.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define DEADLINE_MS  20000 /* any single wait longer than this is a hang */
#define NO_INDEX     SIZE_MAX

/* ---- test streams ---- */

/* One message of a test stream: type, body length and what the owner answers for it. */
struct tmsg {
	uint8_t type;
	uint32_t body_len;
	enum relay_verdict verdict;
};

/* A stream built from a tmsg list: the wire bytes and what must arrive at the peer. */
struct stream {
	uint8_t *bytes; /* owned */
	size_t len;
	const struct tmsg *msgs; /* borrowed */
	size_t *off;		 /* owned: offset of each message in bytes */
	size_t n;
	uint8_t *expect; /* owned: concatenation of the RELAY_SEND messages */
	size_t expect_len;
};

static void put_u32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/* Bodies get a pattern that depends on the message index, so reordering or mixing shows. */
static void stream_build(struct stream *s, const struct tmsg *msgs, size_t n)
{
	s->msgs = msgs;
	s->n = n;
	s->len = 0;
	s->expect_len = 0;
	for (size_t i = 0; i < n; i++) {
		s->len += FRAME_HEADER_LEN + msgs[i].body_len;
		if (msgs[i].verdict == RELAY_SEND)
			s->expect_len += FRAME_HEADER_LEN + msgs[i].body_len;
	}
	s->bytes = malloc(s->len ? s->len : 1);
	s->expect = malloc(s->expect_len ? s->expect_len : 1);
	s->off = malloc(n * sizeof(*s->off) + 1);
	assert_non_null(s->bytes);
	assert_non_null(s->expect);
	assert_non_null(s->off);
	size_t at = 0, e = 0;
	for (size_t i = 0; i < n; i++) {
		uint8_t *m = s->bytes + at;
		s->off[i] = at;
		m[0] = msgs[i].type;
		put_u32(m + 1, msgs[i].body_len + 4);
		for (uint32_t j = 0; j < msgs[i].body_len; j++)
			m[FRAME_HEADER_LEN + j] = (uint8_t)(i * 131 + j * 7 + (j >> 8) + 1);
		size_t total = FRAME_HEADER_LEN + msgs[i].body_len;
		if (msgs[i].verdict == RELAY_SEND) {
			memcpy(s->expect + e, m, total);
			e += total;
		}
		at += total;
	}
}

static void stream_free(struct stream *s)
{
	free(s->bytes);
	free(s->expect);
	free(s->off);
	memset(s, 0, sizeof(*s));
}

/* ---- fixture: a loop, a source conn, a destination conn and its peer ---- */

struct fixture {
	uv_loop_t loop;
	uv_timer_t tick; /* wakes uv_run(UV_RUN_ONCE) so waits can check their deadline */
	struct iobuf_pool pool;
	struct conn src; /* the relay's source: never opened, the test fills its rbuf */
	struct conn dst; /* the relay's destination: sv[0] */
	uv_pipe_t peer;	 /* sv[1]: collects what dst was sent */
	bool peer_open;
	uint8_t *got; /* owned: bytes received by peer */
	size_t got_len, got_cap;
	int src_closed, dst_closed;

	/* The owner. */
	struct relay_ops ops;
	const char *whole_types;  /* types needs_bytes asks the whole body of */
	const char *prefix_types; /* types needs_bytes asks prefix_len body bytes of */
	uint32_t prefix_len;
	uint32_t max_len;
	const struct stream *st; /* the stream being relayed */
	size_t next;		 /* index of the next message to be presented */
	size_t presented;	 /* on_message calls */
	size_t stop_once_at;	 /* answer RELAY_STOP once for this message */
	bool stopped_once;
	size_t gone_at;		/* answer RELAY_GONE (after closing src) for this message */
	enum relay_result last; /* latest relay_scan result (driver or FORWARD_DONE rescan) */
	unsigned writing;	/* scans that returned RELAY_WRITING */
	unsigned forward_done, forward_failed;
};

static void fx_on_data(struct conn *c)
{
	(void)c;
	fail_msg("on_data: the test never reads from src or dst");
}

static void fx_record(struct fixture *fx, enum relay_result r)
{
	fx->last = r;
	if (r == RELAY_WRITING)
		fx->writing++;
}

static void fx_src_event(struct conn *c, enum conn_event ev, int status)
{
	struct fixture *fx = c->owner;
	(void)status;
	switch (ev) {
	case CONN_EV_FORWARD_DONE:
		/* What client.c and server.c do: rescan. */
		fx->forward_done++;
		fx_record(fx, relay_scan(&fx->src, &fx->dst, fx->max_len, &fx->ops, fx));
		return;
	case CONN_EV_FORWARD_FAILED:
		fx->forward_failed++;
		return;
	default:
		fail_msg("unexpected src event %d", ev);
	}
}

static void fx_dst_event(struct conn *c, enum conn_event ev, int status)
{
	(void)c;
	(void)ev;
	(void)status;
}

static void fx_src_closed(struct conn *c)
{
	((struct fixture *)c->owner)->src_closed++;
}

static void fx_dst_closed(struct conn *c)
{
	((struct fixture *)c->owner)->dst_closed++;
}

static const struct conn_ops src_ops = {
	.on_data = fx_on_data,
	.on_event = fx_src_event,
	.on_closed = fx_src_closed,
};

static const struct conn_ops dst_ops = {
	.on_data = fx_on_data,
	.on_event = fx_dst_event,
	.on_closed = fx_dst_closed,
};

static uint32_t fx_needs_bytes(const void *owner, uint8_t type, uint32_t len)
{
	const struct fixture *fx = owner;
	if (fx->whole_types && type && strchr(fx->whole_types, type))
		return len;
	if (fx->prefix_types && type && strchr(fx->prefix_types, type))
		return len < fx->prefix_len ? len : fx->prefix_len;
	return 0;
}

static enum relay_verdict fx_on_message(void *owner, const struct frame *f)
{
	struct fixture *fx = owner;
	const struct stream *s = fx->st;
	fx->presented++;
	if (fx->next >= s->n)
		fail_msg("message presented after the last one (type 0x%02x)", f->type);
	size_t i = fx->next;
	const struct tmsg *m = &s->msgs[i];
	const uint8_t *wire = s->bytes + s->off[i];
	if (f->type != m->type || f->len != m->body_len)
		fail_msg("message %zu: presented '%c'/%u, expected '%c'/%u", i, f->type, f->len,
			 m->type, m->body_len);
	assert_int_equal(f->total, m->body_len + FRAME_HEADER_LEN);
	assert_true(f->body_avail <= f->len);
	/* The body pointer shows the right bytes (inside the source buffer). */
	if (memcmp(f->body, wire + FRAME_HEADER_LEN, f->body_avail) != 0)
		fail_msg("message %zu: body bytes differ", i);
	uint32_t need = fx_needs_bytes(fx, f->type, f->len);
	if (f->body_avail < need)
		fail_msg("message %zu: '%c' needs %u body bytes, got %u of %u", i, f->type, need,
			 f->body_avail, f->len);
	if (i == fx->stop_once_at && !fx->stopped_once) {
		fx->stopped_once = true;
		return RELAY_STOP;
	}
	if (i == fx->gone_at) {
		conn_close(&fx->src);
		return RELAY_GONE;
	}
	fx->next++;
	return m->verdict;
}

static void peer_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct fixture *fx = h->data;
	(void)suggested;
	if (fx->got_cap - fx->got_len < 65536) {
		fx->got_cap = fx->got_cap * 2 + 65536;
		fx->got = realloc(fx->got, fx->got_cap);
		assert_non_null(fx->got);
	}
	buf->base = (char *)fx->got + fx->got_len;
	buf->len = fx->got_cap - fx->got_len;
}

static void peer_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct fixture *fx = s->data;
	(void)buf;
	if (nread > 0)
		fx->got_len += (size_t)nread;
	else if (nread < 0)
		uv_read_stop(s);
}

static void tick_cb(uv_timer_t *t)
{
	(void)t;
}

/*
 * small_sockets shrinks the socket buffers so that forwards of more than a few KB go through
 * a queued write and RELAY_WRITING (the backpressure path) instead of one send.
 */
static struct fixture *fx_new(enum frame_side side, bool small_sockets)
{
	struct fixture *fx = calloc(1, sizeof(*fx));
	assert_non_null(fx);
	assert_int_equal(uv_loop_init(&fx->loop), 0);
	iobuf_pool_init(&fx->pool);
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	if (small_sockets) {
		int sz = 4096;
		assert_int_equal(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz)), 0);
		assert_int_equal(setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz)), 0);
	}
	assert_int_equal(conn_init(&fx->src, &fx->loop, &fx->pool, &src_ops, fx), 0);
	assert_int_equal(conn_init(&fx->dst, &fx->loop, &fx->pool, &dst_ops, fx), 0);
	assert_int_equal(conn_accept(&fx->dst, sv[0]), 0);
	assert_int_equal(uv_pipe_init(&fx->loop, &fx->peer, 0), 0);
	assert_int_equal(uv_pipe_open(&fx->peer, sv[1]), 0);
	fx->peer.data = fx;
	fx->peer_open = true;
	assert_int_equal(uv_read_start((uv_stream_t *)&fx->peer, peer_alloc, peer_read), 0);
	assert_int_equal(uv_timer_init(&fx->loop, &fx->tick), 0);
	assert_int_equal(uv_timer_start(&fx->tick, tick_cb, 10, 10), 0);
	uv_unref((uv_handle_t *)&fx->tick);

	fx->ops.side = side;
	fx->ops.needs_bytes = fx_needs_bytes;
	fx->ops.on_message = fx_on_message;
	fx->max_len = 0x3fffffffu;
	fx->stop_once_at = NO_INDEX;
	fx->gone_at = NO_INDEX;
	return fx;
}

static void fx_close_peer(struct fixture *fx)
{
	if (!fx->peer_open)
		return;
	uv_close((uv_handle_t *)&fx->peer, NULL);
	fx->peer_open = false;
	uv_run(&fx->loop, UV_RUN_NOWAIT);
}

static void fx_free(struct fixture *fx)
{
	conn_close(&fx->src);
	conn_close(&fx->dst);
	fx_close_peer(fx);
	uv_close((uv_handle_t *)&fx->tick, NULL);
	uv_run(&fx->loop, UV_RUN_DEFAULT);
	assert_int_equal(fx->src_closed, 1);
	assert_int_equal(fx->dst_closed, 1);
	assert_int_equal(uv_loop_close(&fx->loop), 0);
	assert_int_equal(fx->pool.n_live, 0); /* every buffer went back */
	iobuf_pool_destroy(&fx->pool);
	free(fx->got);
	free(fx);
}

/* Runs the loop once, failing the test if deadline (uv_now) has passed. */
static void fx_run_once(struct fixture *fx, uint64_t deadline, const char *what)
{
	uv_update_time(&fx->loop);
	if (uv_now(&fx->loop) > deadline)
		fail_msg("timed out waiting for %s", what);
	uv_run(&fx->loop, UV_RUN_ONCE);
}

/* Waits until no forward is in flight out of src (reading is off until then, see conn.c). */
static void fx_wait_forward(struct fixture *fx)
{
	uint64_t deadline = uv_now(&fx->loop) + DEADLINE_MS;
	while (conn_forward_busy(&fx->src))
		fx_run_once(fx, deadline, "a forward to finish");
}

static bool fx_failed(const struct fixture *fx)
{
	return fx->last == RELAY_BAD_MESSAGE || fx->last == RELAY_CLOSED ||
	       fx->last == RELAY_WRITE_FAILED;
}

/*
 * One read of up to n bytes into src, as conn_read_cb does: into the free tail of rbuf (taking a
 * buffer if there is none), then a scan, then conn_settle. Returns the bytes taken.
 */
static size_t fx_read(struct fixture *fx, const uint8_t *data, size_t n)
{
	struct conn *c = &fx->src;
	assert_false(conn_forward_busy(c));
	if (!c->rbuf) {
		c->rbuf = iobuf_get(c->bufs);
		assert_non_null(c->rbuf);
	}
	struct iobuf *b = c->rbuf;
	assert_true(b->done <= b->parsed && b->parsed <= b->recv && b->recv <= b->cap);
	uint32_t room = b->cap - b->recv;
	if (room == 0)
		fail_msg("relay stalled with a full buffer: done %u parsed %u recv %u remaining %u",
			 b->done, b->parsed, b->recv, c->pkt_remaining);
	size_t k = n < room ? n : room;
	memcpy(b->data + b->recv, data, k);
	b->recv += (uint32_t)k;
	fx_record(fx, relay_scan(c, &fx->dst, fx->max_len, &fx->ops, fx));
	if (!fx_failed(fx))
		conn_settle(c);
	return k;
}

/* Delivers n bytes in reads of at most max_read bytes, waiting out forwards in between. */
static void fx_deliver(struct fixture *fx, const uint8_t *data, size_t n, size_t max_read)
{
	size_t off = 0;
	while (off < n && !fx_failed(fx)) {
		fx_wait_forward(fx);
		if (fx_failed(fx))
			return;
		size_t want = n - off < max_read ? n - off : max_read;
		off += fx_read(fx, data + off, want);
	}
	fx_wait_forward(fx);
}

/* Waits until the peer holds want bytes, then checks that no more are pending. */
static void fx_wait_peer(struct fixture *fx, size_t want)
{
	uint64_t deadline = uv_now(&fx->loop) + DEADLINE_MS;
	while (fx->got_len < want)
		fx_run_once(fx, deadline, "bytes at the peer");
	uv_run(&fx->loop, UV_RUN_NOWAIT);
	int pending = 0;
	uv_os_fd_t fd;
	assert_int_equal(uv_fileno((uv_handle_t *)&fx->peer, &fd), 0);
	assert_int_equal(ioctl(fd, FIONREAD, &pending), 0);
	if (fx->got_len != want || pending != 0)
		fail_msg("peer got %zu bytes (+%d pending), expected %zu", fx->got_len, pending,
			 want);
}

static void fx_check_output(struct fixture *fx, const struct stream *s, const char *what)
{
	fx_wait_peer(fx, s->expect_len);
	if (memcmp(fx->got, s->expect, s->expect_len) != 0) {
		size_t i = 0;
		while (fx->got[i] == s->expect[i])
			i++;
		fail_msg("%s: peer bytes differ from the SEND messages at offset %zu", what, i);
	}
}

/* Starts a new round over stream s on a fixture whose previous round finished cleanly. */
static void fx_begin(struct fixture *fx, const struct stream *s)
{
	fx->st = s;
	fx->next = 0;
	fx->presented = 0;
	fx->stopped_once = false;
	fx->got_len = 0;
	fx->last = RELAY_DRAINED;
}

/* After a whole stream: every message presented once, nothing left buffered in src. */
static void fx_check_clean_end(struct fixture *fx, const char *what)
{
	if (fx->next != fx->st->n)
		fail_msg("%s: %zu of %zu messages presented", what, fx->next, fx->st->n);
	if (fx->last != RELAY_DRAINED)
		fail_msg("%s: last scan returned %d, expected RELAY_DRAINED", what, fx->last);
	assert_int_equal(fx->src.pkt_remaining, 0);
	assert_false(conn_forward_busy(&fx->src));
	if (fx->src.rbuf)
		fail_msg("%s: src still holds a buffer (done %u parsed %u recv %u)", what,
			 fx->src.rbuf->done, fx->src.rbuf->parsed, fx->src.rbuf->recv);
}

/* Relays s split into two deliveries at every offset (each further cut by the buffer size). */
static void relay_every_split(struct fixture *fx, const struct stream *s, size_t step)
{
	for (size_t k = 0; k <= s->len; k += step) {
		char what[64];
		snprintf(what, sizeof(what), "split at %zu", k);
		fx_begin(fx, s);
		fx_deliver(fx, s->bytes, k, SIZE_MAX);
		fx_deliver(fx, s->bytes + k, s->len - k, SIZE_MAX);
		fx_check_clean_end(fx, what);
		fx_check_output(fx, s, what);
		assert_int_equal(fx->presented, s->n);
	}
}

/* A small deterministic generator, so that a failure names a reproducible seed. */
static uint32_t lcg(uint32_t *state)
{
	*state = *state * 1103515245u + 12345u;
	return *state >> 8;
}

static void relay_random_reads(struct fixture *fx, const struct stream *s, uint32_t seed,
			       size_t max_read)
{
	char what[64];
	snprintf(what, sizeof(what), "seed %u", seed);
	fx_begin(fx, s);
	uint32_t rng = seed;
	size_t off = 0;
	while (off < s->len) {
		size_t n = 1 + lcg(&rng) % max_read;
		if (n > s->len - off)
			n = s->len - off;
		fx_deliver(fx, s->bytes + off, n, n);
		off += n;
	}
	fx_check_clean_end(fx, what);
	fx_check_output(fx, s, what);
}

/* ---- the streams ---- */

#define BIG (IOBUF_SIZE + 517) /* a body that cannot fit in one read buffer */

/* Client side: small messages, skips right after sends, and one streamed message > IOBUF_SIZE. */
static const struct tmsg client_big_send[] = {
	{ 'Q', 9, RELAY_SEND },	 { 'H', 0, RELAY_SKIP },  { 'H', 0, RELAY_SKIP },
	{ 'P', 23, RELAY_SEND }, { 'B', 19, RELAY_SEND }, { 'D', 6, RELAY_SKIP },
	{ 'E', 9, RELAY_SEND },	 { 'S', 0, RELAY_SEND },  { 'd', BIG, RELAY_SEND },
	{ 'd', 1, RELAY_SKIP },	 { 'c', 0, RELAY_SEND },  { 'Q', 200, RELAY_SKIP },
	{ 'Q', 1, RELAY_SEND },	 { 'C', 4, RELAY_SEND },  { 'F', 30, RELAY_SKIP },
	{ 'X', 0, RELAY_SEND },
};

/* The same with the big message skipped while sent bytes wait in front of it. */
static const struct tmsg client_big_skip[] = {
	{ 'Q', 9, RELAY_SEND },	 { 'P', 40, RELAY_SEND }, { 'd', BIG, RELAY_SKIP },
	{ 'S', 0, RELAY_SEND },	 { 'H', 0, RELAY_SKIP },  { 'Q', 100, RELAY_SEND },
	{ 'f', 12, RELAY_SKIP },
};

static void test_client_big_send_every_split(void **state)
{
	(void)state;
	struct stream s;
	stream_build(&s, client_big_send, ARRAY_LEN(client_big_send));
	struct fixture *fx = fx_new(FRAME_FROM_CLIENT, false);
	relay_every_split(fx, &s, 1);
	fx_free(fx);
	stream_free(&s);
}

static void test_client_big_skip_every_split(void **state)
{
	(void)state;
	struct stream s;
	stream_build(&s, client_big_skip, ARRAY_LEN(client_big_skip));
	struct fixture *fx = fx_new(FRAME_FROM_CLIENT, false);
	relay_every_split(fx, &s, 1);
	fx_free(fx);
	stream_free(&s);
}

/*
 * Server side, needs_bytes asking the whole body of ReadyForQuery and ParameterStatus (as server.c
 * does): a 29000-byte ParameterStatus starts 4015 bytes into the buffer and does not fit behind the
 * DataRow: the scanner must make room for it.
 */
static const struct tmsg server_whole[] = {
	{ '1', 0, RELAY_SEND },	    { '2', 0, RELAY_SEND }, { 'D', 4000, RELAY_SEND },
	{ 'S', 29000, RELAY_SEND }, { 'Z', 1, RELAY_SEND }, { 'S', 30, RELAY_SKIP },
	{ 'C', 9, RELAY_SEND },	    { 'Z', 1, RELAY_SEND },
};

/* The same, then a DataRow larger than a buffer and one of nearly a buffer before ReadyForQuery. */
static const struct tmsg server_whole_long[] = {
	{ '1', 0, RELAY_SEND },
	{ '2', 0, RELAY_SEND },
	{ 'D', 4000, RELAY_SEND },
	{ 'S', 29000, RELAY_SEND },
	{ 'Z', 1, RELAY_SEND },
	{ 'D', BIG, RELAY_SEND },
	{ 'D', 32768 - 3 - 5, RELAY_SEND },
	{ 'Z', 1, RELAY_SEND },
	{ 'S', 30, RELAY_SKIP },
	{ 'C', 9, RELAY_SEND },
	{ 'Z', 1, RELAY_SEND },
};

static void test_server_needs_whole_every_split(void **state)
{
	(void)state;
	struct stream s;
	stream_build(&s, server_whole, ARRAY_LEN(server_whole));
	struct fixture *fx = fx_new(FRAME_FROM_SERVER, false);
	fx->whole_types = "ZS";
	relay_every_split(fx, &s, 1);
	fx_free(fx);
	stream_free(&s);
}

/*
 * Client side, needs_bytes asking a prefix of the largest allowed size (IOBUF_SIZE - 5) of long
 * types, as a classifier reading the start of a Query would: messages larger than a buffer must be
 * presented with that prefix present, then streamed.
 */
static const struct tmsg client_prefix[] = {
	{ 'Q', 9, RELAY_SEND },	  { 'H', 0, RELAY_SKIP },  { 'P', 23, RELAY_SEND },
	{ 'Q', BIG, RELAY_SEND }, { 'S', 0, RELAY_SEND },  { 'd', 100, RELAY_SKIP },
	{ 'Q', 300, RELAY_SEND }, { 'Q', 20, RELAY_SKIP }, { 'X', 0, RELAY_SEND },
};

static void test_client_max_prefix_every_split(void **state)
{
	(void)state;
	struct stream s;
	stream_build(&s, client_prefix, ARRAY_LEN(client_prefix));
	struct fixture *fx = fx_new(FRAME_FROM_CLIENT, false);
	fx->prefix_types = "Qd";
	fx->prefix_len = IOBUF_SIZE - FRAME_HEADER_LEN;
	relay_every_split(fx, &s, 1);
	fx_free(fx);
	stream_free(&s);
}

static void test_client_prefix_backpressure(void **state)
{
	(void)state;
	struct tmsg all[ARRAY_LEN(client_prefix) + ARRAY_LEN(client_big_skip)];
	memcpy(all, client_prefix, sizeof(client_prefix));
	memcpy(all + ARRAY_LEN(client_prefix), client_big_skip, sizeof(client_big_skip));
	struct stream s;
	stream_build(&s, all, ARRAY_LEN(all));
	static const uint32_t prefixes[] = { 1, 100, 5000, IOBUF_SIZE - FRAME_HEADER_LEN };
	for (size_t i = 0; i < ARRAY_LEN(prefixes); i++) {
		struct fixture *fx = fx_new(FRAME_FROM_CLIENT, true);
		fx->prefix_types = "QPd";
		fx->prefix_len = prefixes[i];
		for (uint32_t seed = 1; seed <= 12; seed++)
			relay_random_reads(fx, &s, seed, seed % 2 ? 2000 : 40000);
		relay_every_split(fx, &s, 997);
		fx_free(fx);
	}
	stream_free(&s);
}

/* Everything at once, with small socket buffers: forwards go through the write queue. */
static void test_backpressure_random_reads(void **state)
{
	(void)state;
	struct tmsg all[ARRAY_LEN(client_big_send) + ARRAY_LEN(client_big_skip)];
	memcpy(all, client_big_send, sizeof(client_big_send));
	memcpy(all + ARRAY_LEN(client_big_send), client_big_skip, sizeof(client_big_skip));
	struct stream s;
	stream_build(&s, all, ARRAY_LEN(all));
	struct fixture *fx = fx_new(FRAME_FROM_CLIENT, true);
	for (uint32_t seed = 1; seed <= 60; seed++)
		relay_random_reads(fx, &s, seed, seed % 3 == 0 ? 7 : seed % 3 == 1 ? 700 : 20000);
	assert_true(fx->writing > 0); /* the slow path did run */
	assert_true(fx->forward_done > 0);
	/* And the split sweep, on a stride, through the slow path. */
	relay_every_split(fx, &s, 97);
	fx_free(fx);
	stream_free(&s);
}

static void test_server_whole_backpressure(void **state)
{
	(void)state;
	struct stream s;
	stream_build(&s, server_whole_long, ARRAY_LEN(server_whole_long));
	struct fixture *fx = fx_new(FRAME_FROM_SERVER, true);
	fx->whole_types = "ZS";
	for (uint32_t seed = 1; seed <= 40; seed++)
		relay_random_reads(fx, &s, seed, seed % 2 ? 3000 : 40000);
	relay_every_split(fx, &s, 89);
	assert_true(fx->writing > 0);
	fx_free(fx);
	stream_free(&s);
}

/*
 * Many small messages per read, several buffers' worth, alternating verdicts: headers straddle
 * buffer ends at many alignments, and a skip follows a send thousands of times in one buffer.
 */
static void test_many_small_messages(void **state)
{
	(void)state;
	static const uint8_t types[] = { 'Q', 'P', 'B', 'E', 'S', 'H', 'D', 'C', 'd', 'c' };
	size_t n = 6000;
	struct tmsg *msgs = calloc(n, sizeof(*msgs));
	assert_non_null(msgs);
	uint32_t rng = 7;
	for (size_t i = 0; i < n; i++) {
		msgs[i].type = types[lcg(&rng) % sizeof(types)];
		msgs[i].body_len = i % 5 == 0 ? 0 : lcg(&rng) % 40;
		msgs[i].verdict = (i % 2 || lcg(&rng) % 3 == 0) ? RELAY_SEND : RELAY_SKIP;
	}
	struct stream s;
	stream_build(&s, msgs, n);
	for (int small = 0; small <= 1; small++) {
		struct fixture *fx = fx_new(FRAME_FROM_CLIENT, small);
		fx->whole_types = "S";
		relay_every_split(fx, &s, 2999);
		for (uint32_t seed = 100; seed < 110; seed++)
			relay_random_reads(fx, &s, seed, 1 + seed % 4 * 1500);
		fx_free(fx);
	}
	stream_free(&s);
	free(msgs);
}

/*
 * The scanner itself makes room for a body prefix that straddles the buffer end once everything
 * before it is sent (conn_tidy_buffer would only do it when the free tail is small).
 */
static void test_whole_message_makes_room(void **state)
{
	(void)state;
	/* 29000: well past the end; 28759: header + body end exactly one byte past the buffer. */
	static const uint32_t bodies[] = { 29000, IOBUF_SIZE - 4005 - FRAME_HEADER_LEN + 1 };
	for (size_t i = 0; i < ARRAY_LEN(bodies); i++) {
		struct tmsg msgs[] = { { 'D', 4000, RELAY_SEND }, { 'S', bodies[i], RELAY_SEND } };
		struct stream s;
		stream_build(&s, msgs, ARRAY_LEN(msgs));
		assert_int_equal(s.off[1] + FRAME_HEADER_LEN + bodies[i] > IOBUF_SIZE, 1);
		struct fixture *fx = fx_new(FRAME_FROM_SERVER, false);
		fx->whole_types = "S";
		fx_begin(fx, &s);
		struct conn *c = &fx->src;
		c->rbuf = iobuf_get(c->bufs);
		struct iobuf *b = c->rbuf;
		size_t first = 20000; /* the DataRow and part of the ParameterStatus */
		memcpy(b->data, s.bytes, first);
		b->recv = (uint32_t)first;
		/* The DataRow is sent; the ParameterStatus waits for its body where it is. */
		assert_int_equal(relay_scan(c, &fx->dst, fx->max_len, &fx->ops, fx), RELAY_DRAINED);
		assert_int_equal(fx->presented, 1);
		assert_int_equal(b->done, s.off[1]);
		assert_int_equal(b->parsed, s.off[1]);
		/* Scanning again (nothing sent in front of it now) moves it to the front. */
		assert_int_equal(relay_scan(c, &fx->dst, fx->max_len, &fx->ops, fx), RELAY_DRAINED);
		assert_int_equal(fx->presented, 1);
		assert_int_equal(b->done, 0);
		assert_int_equal(b->parsed, 0);
		assert_int_equal(b->recv, first - s.off[1]);
		assert_memory_equal(b->data, s.bytes + s.off[1], b->recv);
		fx_deliver(fx, s.bytes + first, s.len - first, SIZE_MAX);
		fx_check_clean_end(fx, "make room");
		fx_check_output(fx, &s, "make room");
		fx_free(fx);
		stream_free(&s);
	}
}

/*
 * A full buffer of 5-byte messages alternating send and skip, in one read: every skip waits for the
 * send before it to be flushed, thousands of times in one scan.
 */
static void test_alternating_send_skip_one_read(void **state)
{
	(void)state;
	size_t n = IOBUF_SIZE / FRAME_HEADER_LEN;
	struct tmsg *msgs = calloc(n, sizeof(*msgs));
	assert_non_null(msgs);
	for (size_t i = 0; i < n; i++) {
		msgs[i].type = i % 2 ? 'H' : 'S';
		msgs[i].verdict = i % 2 ? RELAY_SKIP : RELAY_SEND;
	}
	struct stream s;
	stream_build(&s, msgs, n);
	for (int small = 0; small <= 1; small++) {
		struct fixture *fx = fx_new(FRAME_FROM_CLIENT, small);
		fx_begin(fx, &s);
		fx_deliver(fx, s.bytes, s.len, SIZE_MAX);
		fx_check_clean_end(fx, "alternating");
		fx_check_output(fx, &s, "alternating");
		fx_free(fx);
	}
	stream_free(&s);
	free(msgs);
}

/* ---- verdicts and errors ---- */

static const struct tmsg stop_msgs[] = {
	{ 'Q', 9, RELAY_SEND },
	{ 'X', 0, RELAY_SEND }, /* answered RELAY_STOP the first time */
	{ 'Q', 5, RELAY_SEND },
};

static void test_stop_leaves_message_unscanned(void **state)
{
	(void)state;
	struct stream s;
	stream_build(&s, stop_msgs, ARRAY_LEN(stop_msgs));
	struct fixture *fx = fx_new(FRAME_FROM_CLIENT, false);
	fx_begin(fx, &s);
	fx->stop_once_at = 1;
	fx_deliver(fx, s.bytes, s.len, SIZE_MAX);
	assert_int_equal(fx->last, RELAY_STOPPED);
	assert_int_equal(fx->presented, 2);
	/* The message before the stop went out; the stopped one is where parsing stands. */
	fx_wait_peer(fx, s.off[1]);
	assert_memory_equal(fx->got, s.bytes, s.off[1]);
	struct iobuf *b = fx->src.rbuf;
	assert_non_null(b);
	assert_int_equal(b->recv - b->parsed, s.len - s.off[1]);
	assert_int_equal(b->done, b->parsed);
	assert_int_equal(b->data[b->parsed], 'X');
	/* Resuming presents the same message again, then the rest; relay_scan returns the buffer.
	 */
	fx_record(fx, relay_scan(&fx->src, &fx->dst, fx->max_len, &fx->ops, fx));
	assert_int_equal(fx->presented, 4);
	fx_check_clean_end(fx, "after stop");
	fx_check_output(fx, &s, "after stop");
	fx_free(fx);
	stream_free(&s);
}

/*
 * A stop behind a send that could not be written at once: the scan reports RELAY_WRITING (the
 * pending write wins), and the rescan after CONN_EV_FORWARD_DONE presents the stopped message again
 * and reports RELAY_STOPPED. client.c relies on that re-presentation for Terminate.
 */
static void test_stop_behind_pending_write(void **state)
{
	(void)state;
	static const struct tmsg msgs[] = {
		{ 'd', 30000, RELAY_SEND },
		{ 'X', 0, RELAY_SEND }, /* answered RELAY_STOP on the first two presentations */
	};
	struct stream s;
	stream_build(&s, msgs, ARRAY_LEN(msgs));
	struct fixture *fx = fx_new(FRAME_FROM_CLIENT, true);
	fx_begin(fx, &s);
	fx->stop_once_at = 1;
	/* One read: the CopyData is more than the small socket takes at once. */
	assert_int_equal(fx_read(fx, s.bytes, s.len), s.len);
	assert_int_equal(fx->last, RELAY_WRITING);
	assert_int_equal(fx->presented, 2);
	fx->stopped_once = false; /* answer STOP again on the rescan */
	fx_wait_forward(fx);
	assert_int_equal(fx->forward_done, 1);
	assert_int_equal(fx->last, RELAY_STOPPED);
	assert_int_equal(fx->presented, 3);
	/* Nothing of the Terminate was scanned (the buffer may have been compacted meanwhile). */
	struct iobuf *b = fx->src.rbuf;
	assert_int_equal(b->recv - b->parsed, FRAME_HEADER_LEN);
	assert_int_equal(b->done, b->parsed);
	assert_int_equal(b->data[b->parsed], 'X');
	fx_wait_peer(fx, s.off[1]);
	/* The third presentation lets it through. */
	fx_record(fx, relay_scan(&fx->src, &fx->dst, fx->max_len, &fx->ops, fx));
	assert_int_equal(fx->presented, 4);
	fx_check_clean_end(fx, "stop behind write");
	fx_check_output(fx, &s, "stop behind write");
	fx_free(fx);
	stream_free(&s);
}

static void test_gone_stops_touching(void **state)
{
	(void)state;
	struct stream s;
	stream_build(&s, stop_msgs, ARRAY_LEN(stop_msgs));
	struct fixture *fx = fx_new(FRAME_FROM_CLIENT, false);
	fx_begin(fx, &s);
	fx->gone_at = 1;
	fx_read(fx, s.bytes, s.len);
	assert_int_equal(fx->last, RELAY_CLOSED);
	assert_int_equal(fx->presented, 2); /* nothing after the handler closed */
	fx_free(fx);
	stream_free(&s);
}

struct bad_case {
	const char *name;
	enum frame_side side;
	uint32_t max_len;
	const uint8_t *bad; /* the offending message (header at least) */
	size_t bad_len;
};

#define BAD(name, side, max, lit)                                                                  \
	{                                                                                          \
		name, side, max, (const uint8_t *)(lit), sizeof(lit) - 1                           \
	}

static const struct bad_case bad_cases[] = {
	BAD("length 0", FRAME_FROM_CLIENT, 0x3fffffffu, "Q\x00\x00\x00\x00"),
	BAD("length 3", FRAME_FROM_CLIENT, 0x3fffffffu, "Q\x00\x00\x00\x03xyz"),
	BAD("length 0xffffffff", FRAME_FROM_CLIENT, 0x3fffffffu, "d\xff\xff\xff\xff"),
	BAD("short type above ceiling", FRAME_FROM_CLIENT, 0x3fffffffu, "S\x00\x00\x75\x35"),
	BAD("above max_len", FRAME_FROM_CLIENT, 1000, "Q\x00\x00\x03\xed"),
	BAD("unknown client type", FRAME_FROM_CLIENT, 0x3fffffffu, "Z\x00\x00\x00\x05I"),
	BAD("server type from client", FRAME_FROM_CLIENT, 0x3fffffffu, "T\x00\x00\x00\x06\x00\x00"),
	BAD("client type from server", FRAME_FROM_SERVER, 0x3fffffffu, "Q\x00\x00\x00\x05x"),
	BAD("NUL type", FRAME_FROM_SERVER, 0x3fffffffu, "\x00\x00\x00\x00\x08\x00\x03\x00\x00"),
};

/*
 * A framing violation after valid messages: RELAY_BAD_MESSAGE at every split, the valid messages
 * were presented, and parsed points at the bad header (client_report_bad_message reads it there).
 */
static void test_bad_message_every_split(void **state)
{
	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(bad_cases); i++) {
		const struct bad_case *bc = &bad_cases[i];
		static const struct tmsg client_good[] = { { 'Q', 9, RELAY_SEND },
							   { 'H', 0, RELAY_SKIP } };
		static const struct tmsg server_good[] = { { 'C', 9, RELAY_SEND },
							   { 'S', 4, RELAY_SKIP } };
		const struct tmsg *good = bc->side == FRAME_FROM_CLIENT ? client_good : server_good;
		struct stream s;
		stream_build(&s, good, 2);
		size_t len = s.len + bc->bad_len;
		uint8_t *all = malloc(len);
		assert_non_null(all);
		memcpy(all, s.bytes, s.len);
		memcpy(all + s.len, bc->bad, bc->bad_len);
		struct fixture *fx = fx_new(bc->side, false);
		fx->max_len = bc->max_len;
		for (size_t k = 0; k <= len; k++) {
			fx_begin(fx, &s);
			fx_deliver(fx, all, k, SIZE_MAX);
			fx_deliver(fx, all + k, len - k, SIZE_MAX);
			if (fx->last != RELAY_BAD_MESSAGE)
				fail_msg("%s, split %zu: result %d", bc->name, k, fx->last);
			assert_int_equal(fx->next, 2);
			struct iobuf *b = fx->src.rbuf;
			assert_non_null(b);
			/* Judged as soon as its header is there: the rest may not have been read.
			 */
			assert_true(b->recv - b->parsed >= FRAME_HEADER_LEN);
			assert_true(b->recv - b->parsed <= bc->bad_len);
			assert_memory_equal(b->data + b->parsed, bc->bad, b->recv - b->parsed);
			/* Start over: drop the buffer as a disconnect would. */
			iobuf_put(&fx->pool, b);
			fx->src.rbuf = NULL;
			fx->src.pkt_remaining = 0;
			uv_run(&fx->loop, UV_RUN_NOWAIT);
			fx->got_len = 0;
		}
		fx_free(fx);
		free(all);
		stream_free(&s);
	}
}

static void test_max_len_boundary(void **state)
{
	(void)state;
	static const struct tmsg msgs[] = { { 'Q', 1000, RELAY_SEND } };
	struct stream s;
	stream_build(&s, msgs, 1);
	struct fixture *fx = fx_new(FRAME_FROM_CLIENT, false);
	fx->max_len = 1000;
	fx_begin(fx, &s);
	fx_deliver(fx, s.bytes, s.len, SIZE_MAX);
	fx_check_clean_end(fx, "body == max_len");
	fx_check_output(fx, &s, "body == max_len");
	fx->max_len = 999;
	fx_begin(fx, &s);
	fx_deliver(fx, s.bytes, s.len, SIZE_MAX);
	assert_int_equal(fx->last, RELAY_BAD_MESSAGE);
	assert_int_equal(fx->presented, 0);
	fx_free(fx);
	stream_free(&s);
}

/* While a forward is in flight the scanner does not look at the buffer. */
static void test_scan_while_forward_busy(void **state)
{
	(void)state;
	static const struct tmsg msgs[] = { { 'd', 300000, RELAY_SEND }, { 'S', 0, RELAY_SEND } };
	struct stream s;
	stream_build(&s, msgs, ARRAY_LEN(msgs));
	struct fixture *fx = fx_new(FRAME_FROM_CLIENT, true);
	fx_begin(fx, &s);
	fx_read(fx, s.bytes, IOBUF_SIZE);
	assert_int_equal(fx->last, RELAY_WRITING);
	assert_true(conn_forward_busy(&fx->src));
	size_t presented = fx->presented;
	assert_int_equal(relay_scan(&fx->src, &fx->dst, fx->max_len, &fx->ops, fx), RELAY_WRITING);
	assert_int_equal(fx->presented, presented);
	fx_wait_forward(fx);
	fx_deliver(fx, s.bytes + IOBUF_SIZE, s.len - IOBUF_SIZE, SIZE_MAX);
	fx_check_clean_end(fx, "busy");
	fx_check_output(fx, &s, "busy");
	fx_free(fx);
	stream_free(&s);
}

static void test_write_to_closed_peer(void **state)
{
	(void)state;
	signal(SIGPIPE, SIG_IGN);
	static const struct tmsg msgs[] = { { 'Q', 9, RELAY_SEND } };
	struct stream s;
	stream_build(&s, msgs, 1);
	struct fixture *fx = fx_new(FRAME_FROM_CLIENT, false);
	fx_close_peer(fx);
	fx_begin(fx, &s);
	fx_read(fx, s.bytes, s.len);
	assert_int_equal(fx->last, RELAY_WRITE_FAILED);
	fx_free(fx);
	stream_free(&s);
}

static void test_write_to_closing_dst(void **state)
{
	(void)state;
	static const struct tmsg msgs[] = { { 'Q', 9, RELAY_SEND } };
	struct stream s;
	stream_build(&s, msgs, 1);
	struct fixture *fx = fx_new(FRAME_FROM_CLIENT, false);
	conn_close(&fx->dst);
	fx_begin(fx, &s);
	fx_read(fx, s.bytes, s.len);
	assert_int_equal(fx->last, RELAY_WRITE_FAILED);
	fx_free(fx);
	stream_free(&s);
}

/* The peer goes away while a forward is queued: CONN_EV_FORWARD_FAILED, and the range is dropped.
 */
static void test_forward_fails_in_flight(void **state)
{
	(void)state;
	signal(SIGPIPE, SIG_IGN);
	static const struct tmsg msgs[] = { { 'd', 30000, RELAY_SEND } };
	struct stream s;
	stream_build(&s, msgs, 1);
	struct fixture *fx = fx_new(FRAME_FROM_CLIENT, true);
	fx_begin(fx, &s);
	uv_read_stop((uv_stream_t *)&fx->peer); /* the peer stops reading: the write must queue */
	fx_read(fx, s.bytes, s.len);
	assert_int_equal(fx->last, RELAY_WRITING);
	fx_close_peer(fx);
	fx_wait_forward(fx);
	assert_int_equal(fx->forward_failed, 1);
	assert_int_equal(fx->forward_done, 0);
	fx_free(fx);
	stream_free(&s);
}

/* Without a destination, a handler that only skips consumes everything. */
static void test_skip_only_without_destination(void **state)
{
	(void)state;
	static const struct tmsg msgs[] = {
		{ 'N', 40, RELAY_SKIP },
		{ 'd', BIG, RELAY_SKIP },
		{ 'Z', 1, RELAY_SKIP },
	};
	struct stream s;
	stream_build(&s, msgs, ARRAY_LEN(msgs));
	struct fixture *fx = fx_new(FRAME_FROM_SERVER, false);
	fx->whole_types = "Z";
	fx_begin(fx, &s);
	size_t off = 0;
	while (off < s.len) {
		struct conn *c = &fx->src;
		if (!c->rbuf)
			c->rbuf = iobuf_get(c->bufs);
		struct iobuf *b = c->rbuf;
		size_t k = s.len - off < b->cap - b->recv ? s.len - off : b->cap - b->recv;
		assert_true(k > 0);
		memcpy(b->data + b->recv, s.bytes + off, k);
		b->recv += (uint32_t)k;
		off += k;
		/* No conn_settle here: relay_scan makes room itself. */
		assert_int_equal(relay_scan(c, NULL, fx->max_len, &fx->ops, fx), RELAY_DRAINED);
	}
	fx_check_clean_end(fx, "no destination");
	fx_free(fx);
	stream_free(&s);
}

/* The owner picks the destination while it reads the first message (a pooled client taking its
 * backend): the scan began without one, so what it decided to send goes where late_dst says. */
static struct conn *fx_late_dst(void *owner)
{
	struct fixture *fx = owner;
	return fx->next > 0 ? &fx->dst : NULL;
}

static void test_late_destination(void **state)
{
	(void)state;
	static const struct tmsg msgs[] = {
		{ 'P', 30, RELAY_SEND }, { 'B', 12, RELAY_SEND }, { 'H', 0, RELAY_SKIP },
		{ 'E', 9, RELAY_SEND },	 { 'S', 0, RELAY_SEND },
	};
	struct stream s;
	stream_build(&s, msgs, ARRAY_LEN(msgs));
	struct fixture *fx = fx_new(FRAME_FROM_CLIENT, false);
	fx->ops.late_dst = fx_late_dst;
	fx->stop_once_at = 3; /* a stop later in the same scan: what came before still goes */
	fx_begin(fx, &s);
	struct conn *c = &fx->src;
	c->rbuf = iobuf_get(c->bufs);
	assert_non_null(c->rbuf);
	memcpy(c->rbuf->data, s.bytes, s.len);
	c->rbuf->recv = (uint32_t)s.len;
	assert_int_equal(relay_scan(c, NULL, fx->max_len, &fx->ops, fx), RELAY_STOPPED);
	fx_wait_forward(fx);
	fx_wait_peer(fx, s.off[2]); /* P and B arrived before the stop (H is skipped) */
	fx_record(fx, relay_scan(c, NULL, fx->max_len, &fx->ops, fx));
	fx_wait_forward(fx);
	fx_check_clean_end(fx, "late destination");
	fx_check_output(fx, &s, "late destination");
	assert_int_equal(fx->presented, s.n + 1); /* the stopped message twice */
	fx_free(fx);
	stream_free(&s);
}

static void test_empty_buffer(void **state)
{
	(void)state;
	struct fixture *fx = fx_new(FRAME_FROM_CLIENT, false);
	static const struct tmsg none[] = { { 'Q', 0, RELAY_SEND } };
	struct stream s;
	stream_build(&s, none, 0);
	fx_begin(fx, &s);
	assert_int_equal(relay_scan(&fx->src, &fx->dst, fx->max_len, &fx->ops, fx), RELAY_DRAINED);
	fx->src.rbuf = iobuf_get(&fx->pool);
	assert_int_equal(relay_scan(&fx->src, &fx->dst, fx->max_len, &fx->ops, fx), RELAY_DRAINED);
	assert_int_equal(fx->presented, 0);
	fx_free(fx);
	stream_free(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_client_big_send_every_split),
		cmocka_unit_test(test_client_big_skip_every_split),
		cmocka_unit_test(test_server_needs_whole_every_split),
		cmocka_unit_test(test_client_max_prefix_every_split),
		cmocka_unit_test(test_client_prefix_backpressure),
		cmocka_unit_test(test_backpressure_random_reads),
		cmocka_unit_test(test_server_whole_backpressure),
		cmocka_unit_test(test_many_small_messages),
		cmocka_unit_test(test_whole_message_makes_room),
		cmocka_unit_test(test_alternating_send_skip_one_read),
		cmocka_unit_test(test_stop_leaves_message_unscanned),
		cmocka_unit_test(test_stop_behind_pending_write),
		cmocka_unit_test(test_gone_stops_touching),
		cmocka_unit_test(test_bad_message_every_split),
		cmocka_unit_test(test_max_len_boundary),
		cmocka_unit_test(test_scan_while_forward_busy),
		cmocka_unit_test(test_write_to_closed_peer),
		cmocka_unit_test(test_write_to_closing_dst),
		cmocka_unit_test(test_forward_fails_in_flight),
		cmocka_unit_test(test_skip_only_without_destination),
		cmocka_unit_test(test_late_destination),
		cmocka_unit_test(test_empty_buffer),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
