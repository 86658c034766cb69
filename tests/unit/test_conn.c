/*
 * Unit tests of conn.c's own contract (src/net/conn.h) over real sockets and a real uv loop. The
 * conn under test owns one end of a socketpair(AF_UNIX) or of a loopback TCP connection (taken
 * with conn_accept, or made by conn_connect); the test plays the peer with plain system calls on
 * the other end, non-blocking so that a peer read or write never hangs.
 *
 * What is checked: bytes sent arrive intact and in order, through the write queue when the socket
 * is full, with CONN_MAX_QUEUED enforced; a close after flush delivers everything, then EOF; a
 * close runs on_closed once, from the loop, and no event follows it; a connect reports its outcome
 * from the loop; reading follows want_read and ends with EOF or an error after the data; a peer
 * that is gone gives an error, not SIGPIPE (conn.c sends with MSG_NOSIGNAL and the tests leave
 * SIGPIPE at its default, so a send without it would kill the test).
 *
 * Every wait has a deadline; every test ends with on_closed run once, the loop closed and every
 * buffer back in the pool.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "net/conn.h"
#include "net/iobuf.h"

#define DEADLINE_MS   20000 /* any single wait longer than this is a hang */
#define SMALL_SOCKBUF 4096  /* SO_SNDBUF / SO_RCVBUF that push sends onto the write queue */
#define N_EVENTS      (CONN_EV_TLS_ERROR + 1)
#define QUIET_TURNS   20 /* loop iterations during which "nothing happens" is checked */

/* ---- byte strings ---- */

struct bytes {
	uint8_t *p; /* owned */
	size_t len;
	size_t cap;
};

static void bytes_add(struct bytes *b, const void *data, size_t n)
{
	if (b->cap - b->len < n) {
		size_t cap = b->cap * 2 + n + 4096;
		uint8_t *p = realloc(b->p, cap);
		assert_non_null(p);
		b->p = p;
		b->cap = cap;
	}
	if (n)
		memcpy(b->p + b->len, data, n);
	b->len += n;
}

static void bytes_free(struct bytes *b)
{
	free(b->p);
	memset(b, 0, sizeof(*b));
}

/* A packet whose bytes depend on its index: reordering, loss or duplication shows. */
static void fill_packet(uint8_t *p, size_t n, uint32_t index)
{
	for (size_t j = 0; j < n; j++)
		p[j] = (uint8_t)(index * 131u + j * 7u + (j >> 8) + 1u);
}

/* ---- fixture: a loop, the conn under test and its peer ---- */

enum pair_kind {
	PAIR_UNIX, /* socketpair(AF_UNIX, SOCK_STREAM) */
	PAIR_TCP,  /* a loopback TCP connection */
};

static const char *const kind_names[] = { "unix", "tcp" };

struct fixture {
	uv_loop_t loop;
	uv_timer_t tick; /* wakes uv_run(UV_RUN_ONCE) so waits can check their deadline */
	struct iobuf_pool pool;
	struct conn c; /* the conn under test; owner is this fixture */
	bool inited;   /* conn_init ran */
	int peer;      /* the other end of c's socket, -1 when none or closed */
	int other;     /* a listening or bound socket the test made, or -1 */

	/* What the owner saw. */
	bool in_call;	   /* the test is inside a conn_* call */
	bool close_called; /* conn_close or conn_close_after_flush was called */
	bool input_ended;  /* CONN_EV_EOF or CONN_EV_READ_ERROR came */
	bool stop_reading; /* on_data turns want_read off (as client.c does while it waits) */
	unsigned ev[N_EVENTS];
	int ev_status[N_EVENTS]; /* status of the latest of each event */
	unsigned events;	 /* on_event calls */
	unsigned data_calls;	 /* on_data calls */
	unsigned closed;	 /* on_closed calls */
	unsigned cb_in_call;	 /* callbacks that ran inside the test's conn_* call */
	unsigned cb_after_close; /* on_data / on_event after the close call */
	unsigned data_after_end; /* on_data after EOF or READ_ERROR */
	struct bytes got;	 /* bytes on_data was given, in order */

	/* The peer. */
	struct bytes peer_got; /* bytes the peer read */
	bool peer_eof;	       /* the peer read 0 */
	int peer_errno;	       /* a peer read failed (ECONNRESET...) */
	struct bytes peer_out; /* bytes the peer writes, as its socket takes them */
	size_t peer_out_off;
	bool peer_fin; /* shutdown(SHUT_WR) once peer_out is written */
	int peer_write_errno;
};

static void fx_note_callback(struct fixture *fx)
{
	if (fx->in_call)
		fx->cb_in_call++;
	if (fx->close_called)
		fx->cb_after_close++;
}

static void fx_on_data(struct conn *c)
{
	struct fixture *fx = c->owner;
	fx_note_callback(fx);
	fx->data_calls++;
	if (fx->input_ended)
		fx->data_after_end++;
	struct iobuf *b = c->rbuf;
	if (!b || b->recv <= b->parsed)
		fail_msg("on_data without new bytes");
	/* The owner scans everything and answers it itself: nothing stays buffered. */
	bytes_add(&fx->got, b->data + b->parsed, b->recv - b->parsed);
	iobuf_consume(b, b->recv - b->parsed);
	if (fx->stop_reading)
		conn_want_read(c, false);
}

static void fx_on_event(struct conn *c, enum conn_event ev, int status)
{
	struct fixture *fx = c->owner;
	fx_note_callback(fx);
	if ((unsigned)ev >= N_EVENTS) {
		fail_msg("unknown event %d", ev);
		return;
	}
	fx->events++;
	fx->ev[ev]++;
	fx->ev_status[ev] = status;
	if (ev == CONN_EV_EOF || ev == CONN_EV_READ_ERROR)
		fx->input_ended = true;
}

static void fx_on_closed(struct conn *c)
{
	struct fixture *fx = c->owner;
	if (fx->in_call)
		fx->cb_in_call++;
	fx->closed++;
}

static const struct conn_ops fx_ops = {
	.on_data = fx_on_data,
	.on_event = fx_on_event,
	.on_closed = fx_on_closed,
};

static void tick_cb(uv_timer_t *t)
{
	(void)t;
}

static void set_nonblocking(int fd)
{
	int flags = fcntl(fd, F_GETFL);
	assert_true(flags >= 0);
	assert_int_equal(fcntl(fd, F_SETFL, flags | O_NONBLOCK), 0);
}

/* A TCP socket bound to 127.0.0.1 on a free port, listening or not; *addr gets its address. */
static int tcp_socket_on_loopback(struct sockaddr_in *addr, bool listening, bool small)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	if (small) { /* inherited by accepted sockets: the window starts small too */
		int sz = SMALL_SOCKBUF;
		assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz)), 0);
	}
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = 0 };
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	if (listening)
		assert_int_equal(listen(fd, 8), 0);
	socklen_t len = sizeof(*addr);
	assert_int_equal(getsockname(fd, (struct sockaddr *)addr, &len), 0);
	return fd;
}

/* The loop, the pool and the tick; no conn yet. */
static struct fixture *fx_new_loop(void)
{
	struct fixture *fx = calloc(1, sizeof(*fx));
	assert_non_null(fx);
	assert_int_equal(uv_loop_init(&fx->loop), 0);
	iobuf_pool_init(&fx->pool);
	assert_int_equal(uv_timer_init(&fx->loop, &fx->tick), 0);
	assert_int_equal(uv_timer_start(&fx->tick, tick_cb, 10, 10), 0);
	uv_unref((uv_handle_t *)&fx->tick);
	fx->peer = -1;
	fx->other = -1;
	return fx;
}

static void fx_init_conn(struct fixture *fx)
{
	assert_int_equal(conn_init(&fx->c, &fx->loop, &fx->pool, &fx_ops, fx), 0);
	fx->inited = true;
}

/*
 * A connected pair of kind: the conn takes one end with conn_accept, the peer is the other.
 * small shrinks the conn's send buffer and the peer's receive buffer, so that sends of more than
 * a few KB go through the write queue.
 */
static struct fixture *fx_new(enum pair_kind kind, bool small)
{
	struct fixture *fx = fx_new_loop();
	int sv[2];
	if (kind == PAIR_UNIX) {
		assert_int_equal(
			socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
	} else {
		struct sockaddr_in addr;
		int l = tcp_socket_on_loopback(&addr, true, small);
		sv[0] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		assert_true(sv[0] >= 0);
		assert_int_equal(connect(sv[0], (struct sockaddr *)&addr, sizeof(addr)), 0);
		sv[1] = accept4(l, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		assert_true(sv[1] >= 0);
		close(l);
		set_nonblocking(sv[0]);
	}
	if (small) {
		int sz = SMALL_SOCKBUF;
		assert_int_equal(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz)), 0);
		assert_int_equal(setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz)), 0);
	}
	fx_init_conn(fx);
	assert_int_equal(conn_accept(&fx->c, sv[0]), 0);
	fx->peer = sv[1];
	return fx;
}

static void fx_close_peer(struct fixture *fx)
{
	if (fx->peer >= 0)
		close(fx->peer);
	fx->peer = -1;
}

/* ---- the test's calls into conn.c, marked so callbacks can tell they ran inside them ---- */

static int fx_send(struct fixture *fx, const void *data, size_t len)
{
	fx->in_call = true;
	int rc = conn_send(&fx->c, data, len);
	fx->in_call = false;
	return rc;
}

static int fx_connect(struct fixture *fx, const struct sockaddr_in *addr)
{
	fx->in_call = true;
	int rc = conn_connect(&fx->c, (const struct sockaddr *)addr);
	fx->in_call = false;
	return rc;
}

static void fx_want_read(struct fixture *fx, bool want)
{
	fx->in_call = true;
	conn_want_read(&fx->c, want);
	fx->in_call = false;
}

static void fx_close(struct fixture *fx)
{
	fx->close_called = true;
	fx->in_call = true;
	conn_close(&fx->c);
	fx->in_call = false;
}

static void fx_close_after_flush(struct fixture *fx)
{
	fx->close_called = true;
	fx->in_call = true;
	conn_close_after_flush(&fx->c);
	fx->in_call = false;
}

/* ---- the peer ---- */

/* Writes what the peer's socket takes of peer_out; then the FIN when asked for. */
static void peer_flush(struct fixture *fx)
{
	while (fx->peer >= 0 && !fx->peer_write_errno && fx->peer_out_off < fx->peer_out.len) {
		ssize_t n = send(fx->peer, fx->peer_out.p + fx->peer_out_off,
				 fx->peer_out.len - fx->peer_out_off, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n < 0) {
			fx->peer_write_errno = errno;
			return;
		}
		fx->peer_out_off += (size_t)n;
	}
	if (fx->peer >= 0 && fx->peer_fin && fx->peer_out_off == fx->peer_out.len) {
		assert_int_equal(shutdown(fx->peer, SHUT_WR), 0);
		fx->peer_fin = false;
	}
}

/* The peer writes data (now, or as its socket takes it while the loop runs). */
static void peer_write(struct fixture *fx, const void *data, size_t len)
{
	bytes_add(&fx->peer_out, data, len);
	peer_flush(fx);
}

/* Reads at most max bytes that wait at the peer, never blocking. Returns how many. */
static size_t peer_read(struct fixture *fx, size_t max)
{
	uint8_t buf[65536];
	if (fx->peer < 0 || fx->peer_eof || fx->peer_errno)
		return 0;
	if (max > sizeof(buf))
		max = sizeof(buf);
	ssize_t n;
	do
		n = read(fx->peer, buf, max);
	while (n < 0 && errno == EINTR);
	if (n > 0) {
		bytes_add(&fx->peer_got, buf, (size_t)n);
		return (size_t)n;
	}
	if (n == 0)
		fx->peer_eof = true;
	else if (errno != EAGAIN && errno != EWOULDBLOCK)
		fx->peer_errno = errno;
	return 0;
}

static size_t peer_pending(const struct fixture *fx)
{
	int pending = 0;
	assert_int_equal(ioctl(fx->peer, FIONREAD, &pending), 0);
	return (size_t)pending;
}

/* ---- running the loop, always bounded ---- */

static uint64_t fx_deadline(struct fixture *fx)
{
	uv_update_time(&fx->loop);
	return uv_now(&fx->loop) + DEADLINE_MS;
}

/* One loop iteration (waiting at most a tick), failing the test once deadline has passed. */
static void fx_run_once(struct fixture *fx, uint64_t deadline, const char *what)
{
	uv_update_time(&fx->loop);
	if (uv_now(&fx->loop) > deadline)
		fail_msg("timed out waiting for %s", what);
	peer_flush(fx);
	uv_run(&fx->loop, UV_RUN_ONCE);
}

/* One loop iteration that does not wait, failing the test once deadline has passed. */
static void fx_run_nowait(struct fixture *fx, uint64_t deadline, const char *what)
{
	uv_update_time(&fx->loop);
	if (uv_now(&fx->loop) > deadline)
		fail_msg("timed out waiting for %s", what);
	peer_flush(fx);
	uv_run(&fx->loop, UV_RUN_NOWAIT);
}

#define FX_WAIT(fx, cond, what)                                                                    \
	do {                                                                                       \
		uint64_t deadline_ = fx_deadline(fx);                                              \
		while (!(cond))                                                                    \
			fx_run_once((fx), deadline_, (what));                                      \
	} while (0)

/* Loop iterations that do not wait: for checking that nothing happens. */
static void fx_run_quiet(struct fixture *fx)
{
	for (int i = 0; i < QUIET_TURNS; i++) {
		peer_flush(fx);
		uv_run(&fx->loop, UV_RUN_NOWAIT);
	}
}

/*
 * The peer reads at most chunk bytes per loop iteration (a slow reader) until it holds want bytes,
 * or until its EOF or error when until_end.
 */
static void fx_pump_peer(struct fixture *fx, size_t chunk, size_t want, bool until_end,
			 const char *what)
{
	uint64_t deadline = fx_deadline(fx);
	while (fx->peer_got.len < want || (until_end && !fx->peer_eof && !fx->peer_errno)) {
		if (fx->peer_eof || fx->peer_errno)
			fail_msg("%s: peer got %s after %zu of %zu bytes", what,
				 fx->peer_eof ? "EOF" : strerror(fx->peer_errno), fx->peer_got.len,
				 want);
		uv_update_time(&fx->loop);
		if (uv_now(&fx->loop) > deadline)
			fail_msg("%s: timed out, peer got %zu of %zu bytes (queued %u)", what,
				 fx->peer_got.len, want, fx->c.queued);
		/* Nothing to read: wait for the conn to write (its poll wakes the loop). */
		peer_flush(fx);
		uv_run(&fx->loop, peer_read(fx, chunk) ? UV_RUN_NOWAIT : UV_RUN_ONCE);
	}
}

static void expect_bytes(const struct bytes *got, const struct bytes *want, const char *what)
{
	if (got->len != want->len)
		fail_msg("%s: %zu bytes, expected %zu", what, got->len, want->len);
	if (want->len && memcmp(got->p, want->p, want->len) != 0) {
		size_t i = 0;
		while (got->p[i] == want->p[i])
			i++;
		fail_msg("%s: bytes differ at offset %zu", what, i);
	}
}

static void expect_prefix(const struct bytes *got, const struct bytes *want, const char *what)
{
	if (got->len > want->len)
		fail_msg("%s: %zu bytes, more than the %zu sent", what, got->len, want->len);
	if (got->len && memcmp(got->p, want->p, got->len) != 0)
		fail_msg("%s: the %zu bytes are not a prefix of what was sent", what, got->len);
}

/* Queues packets of size bytes until the write queue holds at least min_queued. */
static void fx_fill_queue(struct fixture *fx, struct bytes *sent, size_t size, uint32_t min_queued)
{
	uint8_t *pkt = malloc(size);
	assert_non_null(pkt);
	for (uint32_t i = 0; fx->c.queued < min_queued; i++) {
		if (i > 10000)
			fail_msg("the write queue never reached %u bytes", min_queued);
		fill_packet(pkt, size, i);
		assert_int_equal(fx_send(fx, pkt, size), 0);
		bytes_add(sent, pkt, size);
	}
	free(pkt);
	assert_non_null(fx->c.wq_head);
}

/*
 * Closes the conn if the test did not, waits for on_closed, and checks what every test must end
 * with: on_closed once and from the loop, no handle left, every buffer back.
 */
static void fx_free(struct fixture *fx)
{
	if (fx->inited) {
		if (!fx->close_called)
			fx_close(fx);
		FX_WAIT(fx, fx->closed > 0, "on_closed");
		fx_run_quiet(fx);
		assert_int_equal(fx->closed, 1);
		assert_int_equal(fx->cb_in_call, 0);
		assert_int_equal(fx->cb_after_close, 0);
	}
	fx_close_peer(fx);
	if (fx->other >= 0)
		close(fx->other);
	uv_close((uv_handle_t *)&fx->tick, NULL);
	for (int i = 0; i < 100 && uv_loop_alive(&fx->loop); i++)
		uv_run(&fx->loop, UV_RUN_NOWAIT);
	assert_int_equal(uv_loop_close(&fx->loop), 0);
	assert_int_equal(fx->pool.n_live, 0); /* every buffer went back */
	iobuf_pool_destroy(&fx->pool);
	bytes_free(&fx->got);
	bytes_free(&fx->peer_got);
	bytes_free(&fx->peer_out);
	free(fx);
}

/* ---- 1. sending ---- */

static void test_send_small_packet_arrives_intact(void **state)
{
	(void)state;
	for (int kind = PAIR_UNIX; kind <= PAIR_TCP; kind++) {
		struct fixture *fx = fx_new(kind, false);
		static const uint8_t ready[] = { 'Z', 0, 0, 0, 5, 'I' };
		struct bytes want = { 0 };
		bytes_add(&want, ready, sizeof(ready));
		assert_int_equal(fx_send(fx, ready, sizeof(ready)), 0);
		/* The socket took it at once: nothing was queued or copied. */
		assert_null(fx->c.wq_head);
		assert_int_equal(fx->c.queued, 0);
		assert_int_equal(fx->c.tx_bytes, sizeof(ready));
		fx_pump_peer(fx, 65536, want.len, false, kind_names[kind]);
		expect_bytes(&fx->peer_got, &want, kind_names[kind]);
		assert_int_equal(peer_pending(fx), 0);
		assert_int_equal(fx->events, 0);
		bytes_free(&want);
		fx_free(fx);
	}
}

/*
 * Packets far larger than the socket's buffers, sent while the peer does not read: the rest of
 * each goes to the write queue, later packets wait behind it, and small packets sent while the
 * queue drains (the socket may have room again) still wait their turn. The peer then reads 1000
 * bytes at a time: everything arrives once and in order, and the queue ends empty.
 */
static void test_send_larger_than_socket_queues_in_order(void **state)
{
	(void)state;
	enum { N_BIG = 48, BIG_LEN = 12000 };
	for (int kind = PAIR_UNIX; kind <= PAIR_TCP; kind++) {
		struct fixture *fx = fx_new(kind, true);
		struct bytes sent = { 0 };
		uint8_t *pkt = malloc(BIG_LEN);
		assert_non_null(pkt);
		for (uint32_t i = 0; i < N_BIG; i++) {
			fill_packet(pkt, BIG_LEN, i);
			assert_int_equal(fx_send(fx, pkt, BIG_LEN), 0);
			bytes_add(&sent, pkt, BIG_LEN);
		}
		/* The queued path did run, and only copies of what the socket did not take wait. */
		assert_non_null(fx->c.wq_head);
		assert_true(fx->c.queued > 0 && fx->c.queued < sent.len);
		assert_int_equal(fx->c.tx_bytes, sent.len);

		/* The slow peer; a small packet joins every 40 steps while bytes still wait. */
		uint64_t deadline = fx_deadline(fx);
		uint32_t small_index = 1000;
		for (unsigned step = 0; fx->c.wq_head; step++) {
			if (step % 40 == 0) {
				uint8_t small[7];
				fill_packet(small, sizeof(small), small_index++);
				assert_int_equal(fx_send(fx, small, sizeof(small)), 0);
				bytes_add(&sent, small, sizeof(small));
			}
			if (peer_read(fx, 1000))
				fx_run_nowait(fx, deadline, "the write queue to drain");
			else
				fx_run_once(fx, deadline, "the write queue to drain");
		}
		assert_true(small_index > 1001);
		fx_pump_peer(fx, 1000, sent.len, false, kind_names[kind]);
		expect_bytes(&fx->peer_got, &sent, kind_names[kind]);
		assert_int_equal(fx->c.queued, 0);
		assert_null(fx->c.wq_head);
		assert_int_equal(peer_pending(fx), 0);
		assert_int_equal(fx->events, 0); /* no WRITE_ERROR */
		free(pkt);
		bytes_free(&sent);
		fx_free(fx);
	}
}

/*
 * With the peer not reading, packets are queued until the next one would pass CONN_MAX_QUEUED:
 * that one is refused with UV_ENOBUFS and none of its bytes go out (so the stream stays whole);
 * a packet that still fits is accepted. Every accepted packet arrives, in order; once the queue
 * drained, sends work again.
 */
static void test_send_enforces_max_queued(void **state)
{
	(void)state;
	enum { LEN = 10000 };
	struct fixture *fx = fx_new(PAIR_UNIX, true);
	struct bytes sent = { 0 };
	uint8_t *pkt = malloc(LEN);
	assert_non_null(pkt);
	uint32_t i = 0;
	int rc = 0;
	for (;; i++) {
		if (i > 2 * CONN_MAX_QUEUED / LEN)
			fail_msg("%u packets of %d bytes accepted: CONN_MAX_QUEUED not enforced", i,
				 LEN);
		fill_packet(pkt, LEN, i);
		rc = fx_send(fx, pkt, LEN);
		if (rc != 0)
			break;
		bytes_add(&sent, pkt, LEN);
		assert_true(fx->c.queued <= CONN_MAX_QUEUED);
	}
	assert_int_equal(rc, UV_ENOBUFS);
	assert_true(fx->c.queued <= CONN_MAX_QUEUED);
	assert_true(fx->c.queued + LEN > CONN_MAX_QUEUED);
	uint32_t queued = fx->c.queued;
	/* Refused again while the queue is as full; nothing was queued by the refusals. */
	assert_int_equal(fx_send(fx, pkt, LEN), UV_ENOBUFS);
	assert_int_equal(fx->c.queued, queued);
	/* A packet that fits in what is left is accepted (the bound is on bytes). */
	uint8_t tiny[5];
	fill_packet(tiny, sizeof(tiny), 7777);
	if (queued + sizeof(tiny) <= CONN_MAX_QUEUED) {
		assert_int_equal(fx_send(fx, tiny, sizeof(tiny)), 0);
		bytes_add(&sent, tiny, sizeof(tiny));
	}
	assert_int_equal(fx->events, 0); /* a refusal is a return code, not an event */

	fx_pump_peer(fx, 4096, sent.len, false, "up to the refusal");
	expect_bytes(&fx->peer_got, &sent, "up to the refusal");
	assert_int_equal(peer_pending(fx), 0);
	assert_int_equal(fx->c.queued, 0);
	assert_null(fx->c.wq_head);

	fill_packet(pkt, LEN, i);
	assert_int_equal(fx_send(fx, pkt, LEN), 0);
	bytes_add(&sent, pkt, LEN);
	fx_pump_peer(fx, 65536, sent.len, false, "after the drain");
	expect_bytes(&fx->peer_got, &sent, "after the drain");
	assert_int_equal(fx->c.queued, 0);
	assert_int_equal(fx->events, 0);
	free(pkt);
	bytes_free(&sent);
	fx_free(fx);
}

/* ---- 2-4. closing ---- */

/*
 * conn_close_after_flush with a full write queue: on_closed does not run inside the call; the
 * peer, reading slowly, gets every byte and then EOF (a FIN, not a reset); on_closed runs once.
 */
static void test_close_after_flush_delivers_queued_then_eof(void **state)
{
	(void)state;
	for (int kind = PAIR_UNIX; kind <= PAIR_TCP; kind++) {
		struct fixture *fx = fx_new(kind, true);
		struct bytes sent = { 0 };
		fx_fill_queue(fx, &sent, 9000, 200000);
		fx_close_after_flush(fx);
		assert_int_equal(fx->closed, 0);
		fx_pump_peer(fx, 1500, sent.len, true, kind_names[kind]);
		assert_true(fx->peer_eof);
		assert_int_equal(fx->peer_errno, 0);
		expect_bytes(&fx->peer_got, &sent, kind_names[kind]);
		FX_WAIT(fx, fx->closed > 0, "on_closed");
		assert_int_equal(fx->c.queued, 0);
		assert_int_equal(fx->events, 0);
		bytes_free(&sent);
		fx_free(fx); /* checks on_closed once, never inside a call, no event after close */
	}
}

/* The same when the socket took everything already: EOF right behind the bytes. */
static void test_close_after_flush_with_nothing_queued(void **state)
{
	(void)state;
	for (int kind = PAIR_UNIX; kind <= PAIR_TCP; kind++) {
		struct fixture *fx = fx_new(kind, false);
		struct bytes sent = { 0 };
		uint8_t pkt[300];
		fill_packet(pkt, sizeof(pkt), 3);
		assert_int_equal(fx_send(fx, pkt, sizeof(pkt)), 0);
		bytes_add(&sent, pkt, sizeof(pkt));
		assert_null(fx->c.wq_head);
		fx_close_after_flush(fx);
		assert_int_equal(fx->closed, 0);
		fx_pump_peer(fx, 65536, sent.len, true, kind_names[kind]);
		assert_true(fx->peer_eof);
		expect_bytes(&fx->peer_got, &sent, kind_names[kind]);
		FX_WAIT(fx, fx->closed > 0, "on_closed");
		bytes_free(&sent);
		fx_free(fx);
	}
}

/* The owner's flush timer fires: conn_close during the flush still means one on_closed. */
static void test_close_during_flush_closes_once(void **state)
{
	(void)state;
	struct fixture *fx = fx_new(PAIR_UNIX, true);
	struct bytes sent = { 0 };
	fx_fill_queue(fx, &sent, 9000, 100000);
	fx_close_after_flush(fx);
	fx_run_quiet(fx); /* the peer does not read: the flush cannot finish */
	assert_int_equal(fx->closed, 0);
	fx_close(fx);
	assert_int_equal(fx->closed, 0);
	fx_close(fx);
	fx_close_after_flush(fx);
	FX_WAIT(fx, fx->closed > 0, "on_closed");
	assert_int_equal(fx->c.queued, 0);
	/* What the peer gets is a prefix of what was sent. */
	fx_pump_peer(fx, 65536, 0, true, "after close");
	expect_prefix(&fx->peer_got, &sent, "after close");
	bytes_free(&sent);
	fx_free(fx);
}

/*
 * conn_close with writes queued: they are cancelled (their copies freed, queued back to 0,
 * no WRITE_ERROR), on_closed runs once from the loop, and nothing the peer does afterwards
 * (writing, closing) reaches the owner.
 */
static void test_close_with_writes_queued_cancels_them(void **state)
{
	(void)state;
	for (int kind = PAIR_UNIX; kind <= PAIR_TCP; kind++) {
		struct fixture *fx = fx_new(kind, true);
		struct bytes sent = { 0 };
		fx_want_read(fx, true);
		fx_fill_queue(fx, &sent, 9000, 100000);
		fx_close(fx);
		assert_int_equal(fx->closed, 0);
		static const uint8_t late[] = "written after the close";
		peer_write(fx, late, sizeof(late));
		FX_WAIT(fx, fx->closed > 0, "on_closed");
		assert_int_equal(fx->c.queued, 0);
		assert_null(fx->c.wq_head);
		fx_close_peer(fx);
		fx_run_quiet(fx);
		assert_int_equal(fx->events, 0);
		assert_int_equal(fx->data_calls, 0);
		bytes_free(&sent);
		fx_free(fx);
	}
}

/* A conn that never got a socket: on_closed still comes from the loop, once. */
static void test_close_without_socket_from_loop(void **state)
{
	(void)state;
	for (int how = 0; how < 3; how++) {
		struct fixture *fx = fx_new_loop();
		fx_init_conn(fx);
		if (how == 1)
			fx_close_after_flush(fx);
		else
			fx_close(fx);
		assert_int_equal(fx->closed, 0);
		if (how == 2) { /* a second close changes nothing */
			fx_close(fx);
			fx_close_after_flush(fx);
			assert_int_equal(fx->closed, 0);
		}
		FX_WAIT(fx, fx->closed > 0, "on_closed");
		assert_int_equal(fx->events, 0);
		fx_free(fx);
	}
}

/* ---- 5. connecting ---- */

/* A port with a bound socket that does not listen: the connect is refused, reported by the loop. */
static void test_connect_refused_from_loop(void **state)
{
	(void)state;
	struct fixture *fx = fx_new_loop();
	struct sockaddr_in addr;
	fx->other = tcp_socket_on_loopback(&addr, false, false);
	fx_init_conn(fx);
	assert_int_equal(fx_connect(fx, &addr), 0);
	assert_int_equal(fx->events, 0);
	FX_WAIT(fx, fx->events > 0, "the connect's outcome");
	assert_int_equal(fx->ev[CONN_EV_CONNECT_FAILED], 1);
	assert_int_equal(fx->ev_status[CONN_EV_CONNECT_FAILED], UV_ECONNREFUSED);
	assert_int_equal(fx->ev[CONN_EV_CONNECTED], 0);
	assert_int_equal(fx->cb_in_call, 0);
	fx_run_quiet(fx);
	assert_int_equal(fx->events, 1);
	fx_free(fx);
}

/* Accepts the connection the conn made to fx->other, as the peer. */
static void fx_accept_peer(struct fixture *fx)
{
	uint64_t deadline = fx_deadline(fx);
	set_nonblocking(fx->other);
	while (fx->peer < 0) {
		fx->peer = accept4(fx->other, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fx->peer < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
			fail_msg("accept: %s", strerror(errno));
		if (fx->peer < 0)
			fx_run_once(fx, deadline, "the connection at the listener");
	}
}

/* A connect to a listener: CONNECTED from the loop, then bytes go both ways. */
static void test_connect_then_send_and_read(void **state)
{
	(void)state;
	struct fixture *fx = fx_new_loop();
	struct sockaddr_in addr;
	fx->other = tcp_socket_on_loopback(&addr, true, false);
	fx_init_conn(fx);
	assert_int_equal(fx_connect(fx, &addr), 0);
	assert_int_equal(fx->events, 0);
	FX_WAIT(fx, fx->events > 0, "the connect's outcome");
	assert_int_equal(fx->ev[CONN_EV_CONNECTED], 1);
	assert_int_equal(fx->ev_status[CONN_EV_CONNECTED], 0);
	assert_int_equal(fx->ev[CONN_EV_CONNECT_FAILED], 0);
	fx_accept_peer(fx);

	struct sockaddr_storage ss;
	assert_int_equal(conn_peer_addr(&fx->c, &ss), 0);
	assert_int_equal(((struct sockaddr_in *)&ss)->sin_port, addr.sin_port);

	static const uint8_t startup[] = { 0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f };
	struct bytes want = { 0 };
	bytes_add(&want, startup, sizeof(startup));
	assert_int_equal(fx_send(fx, startup, sizeof(startup)), 0);
	fx_pump_peer(fx, 65536, want.len, false, "the packet after CONNECTED");
	expect_bytes(&fx->peer_got, &want, "the packet after CONNECTED");

	static const uint8_t reply[] = { 'N' };
	fx_want_read(fx, true);
	peer_write(fx, reply, sizeof(reply));
	FX_WAIT(fx, fx->got.len >= sizeof(reply), "the reply");
	assert_int_equal(fx->got.len, sizeof(reply));
	assert_int_equal(fx->got.p[0], 'N');
	assert_int_equal(fx->events, 1);
	bytes_free(&want);
	fx_free(fx);
}

/* conn_send before CONNECTED is accepted and goes out once the connect finished. */
static void test_send_while_connecting_arrives_after_connect(void **state)
{
	(void)state;
	struct fixture *fx = fx_new_loop();
	struct sockaddr_in addr;
	fx->other = tcp_socket_on_loopback(&addr, true, false);
	fx_init_conn(fx);
	assert_int_equal(fx_connect(fx, &addr), 0);
	uint8_t pkt[500];
	fill_packet(pkt, sizeof(pkt), 11);
	struct bytes want = { 0 };
	bytes_add(&want, pkt, sizeof(pkt));
	assert_int_equal(fx_send(fx, pkt, sizeof(pkt)), 0);
	FX_WAIT(fx, fx->events > 0, "the connect's outcome");
	assert_int_equal(fx->ev[CONN_EV_CONNECTED], 1);
	fx_accept_peer(fx);
	fx_pump_peer(fx, 65536, want.len, false, "the packet sent while connecting");
	expect_bytes(&fx->peer_got, &want, "the packet sent while connecting");
	assert_int_equal(fx->c.queued, 0);
	assert_int_equal(fx->events, 1);
	bytes_free(&want);
	fx_free(fx);
}

/* Closed while the connect runs: no connect event at all, on_closed once. */
static void test_close_while_connecting(void **state)
{
	(void)state;
	for (int listening = 0; listening <= 1; listening++) {
		struct fixture *fx = fx_new_loop();
		struct sockaddr_in addr;
		fx->other = tcp_socket_on_loopback(&addr, listening, false);
		fx_init_conn(fx);
		assert_int_equal(fx_connect(fx, &addr), 0);
		fx_close(fx);
		assert_int_equal(fx->closed, 0);
		FX_WAIT(fx, fx->closed > 0, "on_closed");
		assert_int_equal(fx->events, 0);
		fx_free(fx);
	}
}

/* ---- 6. reading ---- */

/* Several buffers' worth from the peer, then its FIN: all bytes in order, then EOF once. */
static void test_read_delivers_bytes_then_eof(void **state)
{
	(void)state;
	for (int kind = PAIR_UNIX; kind <= PAIR_TCP; kind++) {
		struct fixture *fx = fx_new(kind, false);
		struct bytes sent = { 0 };
		uint8_t chunk[7001];
		for (uint32_t i = 0; i < 15; i++) {
			fill_packet(chunk, sizeof(chunk), i);
			bytes_add(&sent, chunk, sizeof(chunk));
		}
		assert_true(sent.len > 3 * IOBUF_SIZE);
		fx_want_read(fx, true);
		peer_write(fx, sent.p, sent.len);
		fx->peer_fin = true;
		peer_flush(fx);
		FX_WAIT(fx, fx->input_ended, "EOF");
		assert_int_equal(fx->ev[CONN_EV_EOF], 1);
		assert_int_equal(fx->ev_status[CONN_EV_EOF], UV_EOF);
		assert_int_equal(fx->ev[CONN_EV_READ_ERROR], 0);
		assert_int_equal(fx->data_after_end, 0);
		expect_bytes(&fx->got, &sent, kind_names[kind]);
		assert_int_equal(fx->c.rx_bytes, sent.len);
		assert_null(fx->c.rbuf); /* nothing buffered: the buffer went back */
		fx_run_quiet(fx);
		assert_int_equal(fx->events, 1); /* one EOF, however long the loop runs */
		bytes_free(&sent);
		fx_free(fx);
	}
}

/*
 * want_read off: bytes the peer writes stay in the socket, both before reading was ever on and
 * after it was on (a readable event may still be watched then); on again, they arrive.
 */
static void test_read_off_holds_bytes_until_on(void **state)
{
	(void)state;
	for (int kind = PAIR_UNIX; kind <= PAIR_TCP; kind++) {
		struct fixture *fx = fx_new(kind, false);
		static const uint8_t early[] = "early";
		static const uint8_t late[] = "late!";
		struct bytes want = { 0 };
		peer_write(fx, early, 5);
		bytes_add(&want, early, 5);
		fx_run_quiet(fx);
		assert_int_equal(fx->data_calls, 0);
		fx_want_read(fx, true);
		FX_WAIT(fx, fx->got.len >= 5, "the early bytes");
		expect_bytes(&fx->got, &want, kind_names[kind]);

		fx_want_read(fx, false);
		peer_write(fx, late, 5);
		bytes_add(&want, late, 5);
		fx_run_quiet(fx);
		uint64_t deadline = fx_deadline(fx);
		for (int i = 0; i < 3; i++)
			fx_run_once(fx, deadline, "a tick");
		assert_int_equal(fx->got.len, 5);
		fx_want_read(fx, true);
		FX_WAIT(fx, fx->got.len >= 10, "the late bytes");
		expect_bytes(&fx->got, &want, kind_names[kind]);
		assert_int_equal(fx->events, 0);
		assert_int_equal(fx->cb_in_call,
				 0); /* bytes come from the loop, not conn_want_read */
		bytes_free(&want);
		fx_free(fx);
	}
}

/* The owner turns reading off inside on_data (as client.c does): no more on_data until it is on. */
static void test_read_off_from_on_data(void **state)
{
	(void)state;
	for (int kind = PAIR_UNIX; kind <= PAIR_TCP; kind++) {
		struct fixture *fx = fx_new(kind, false);
		struct bytes sent = { 0 };
		uint8_t chunk[IOBUF_SIZE];
		for (uint32_t i = 0; i < 2; i++) {
			fill_packet(chunk, sizeof(chunk), i);
			bytes_add(&sent, chunk, sizeof(chunk));
		}
		fx->stop_reading = true;
		peer_write(fx, sent.p, sent.len);
		fx_want_read(fx, true);
		FX_WAIT(fx, fx->data_calls > 0, "the first bytes");
		fx_run_quiet(fx);
		assert_int_equal(fx->data_calls, 1);
		assert_true(fx->got.len <= IOBUF_SIZE);
		fx->stop_reading = false;
		fx_want_read(fx, true);
		FX_WAIT(fx, fx->got.len >= sent.len, "the rest");
		expect_bytes(&fx->got, &sent, kind_names[kind]);
		assert_int_equal(fx->events, 0);
		bytes_free(&sent);
		fx_free(fx);
	}
}

/* ---- 7. the peer resets the connection ---- */

/* The peer sends, then closes with SO_LINGER {1, 0}: a RST right behind its bytes. */
static void peer_reset(struct fixture *fx)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	assert_int_equal(setsockopt(fx->peer, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
	fx_close_peer(fx);
}

/* Reset with reading on: the bytes that can be read, then EOF or READ_ERROR, once. */
static void test_tcp_peer_reset_after_data(void **state)
{
	(void)state;
	struct fixture *fx = fx_new(PAIR_TCP, false);
	struct bytes sent = { 0 };
	uint8_t pkt[2000];
	fill_packet(pkt, sizeof(pkt), 5);
	bytes_add(&sent, pkt, sizeof(pkt));
	fx_want_read(fx, true);
	peer_write(fx, pkt, sizeof(pkt));
	assert_int_equal(fx->peer_out_off, sizeof(pkt));
	peer_reset(fx);
	FX_WAIT(fx, fx->input_ended, "the end of input");
	expect_prefix(&fx->got, &sent, "before the reset");
	if (fx->ev[CONN_EV_READ_ERROR])
		assert_true(fx->ev_status[CONN_EV_READ_ERROR] < 0);
	assert_int_equal(fx->data_after_end, 0);
	fx_run_quiet(fx);
	assert_int_equal(fx->ev[CONN_EV_EOF] + fx->ev[CONN_EV_READ_ERROR], 1);
	assert_int_equal(fx->events, 1);
	bytes_free(&sent);
	fx_free(fx);
}

/* Reset while reading is off: nothing breaks; reading on again gives the bytes, then the end. */
static void test_tcp_peer_reset_while_not_reading(void **state)
{
	(void)state;
	struct fixture *fx = fx_new(PAIR_TCP, false);
	struct bytes sent = { 0 };
	uint8_t pkt[3000];
	fill_packet(pkt, sizeof(pkt), 6);
	bytes_add(&sent, pkt, sizeof(pkt));
	peer_write(fx, pkt, sizeof(pkt));
	assert_int_equal(fx->peer_out_off, sizeof(pkt));
	peer_reset(fx);
	fx_run_quiet(fx);
	uint64_t deadline = fx_deadline(fx);
	for (int i = 0; i < 3; i++)
		fx_run_once(fx, deadline, "a tick");
	assert_int_equal(fx->data_calls, 0);
	fx_want_read(fx, true);
	FX_WAIT(fx, fx->input_ended, "the end of input");
	expect_prefix(&fx->got, &sent, "before the reset");
	fx_run_quiet(fx);
	assert_int_equal(fx->ev[CONN_EV_EOF] + fx->ev[CONN_EV_READ_ERROR], 1);
	bytes_free(&sent);
	fx_free(fx);
}

/* Reset while writes wait in the queue: WRITE_ERROR from the loop, the queue emptied. */
static void test_tcp_peer_reset_while_writes_queued(void **state)
{
	(void)state;
	struct fixture *fx = fx_new(PAIR_TCP, true);
	struct bytes sent = { 0 };
	fx_fill_queue(fx, &sent, 9000, 200000);
	peer_reset(fx);
	FX_WAIT(fx, fx->ev[CONN_EV_WRITE_ERROR] > 0, "WRITE_ERROR");
	assert_true(fx->ev_status[CONN_EV_WRITE_ERROR] < 0);
	assert_int_equal(fx->cb_in_call, 0);
	assert_int_equal(fx->c.queued, 0);
	assert_null(fx->c.wq_head);
	assert_true(fx_send(fx, "x", 1) < 0);
	bytes_free(&sent);
	fx_free(fx);
}

/* ---- 8. writing to a peer that is gone, with SIGPIPE at its default ---- */

/*
 * Negative control: in this process SIGPIPE is at its default, so a send without MSG_NOSIGNAL to
 * a closed peer kills (shown in a child). The tests below would die the same way if conn.c
 * forgot MSG_NOSIGNAL.
 */
static void expect_sigpipe_kills_plain_send(void)
{
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	close(sv[1]);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		ssize_t n = send(sv[0], "x", 1, 0);
		(void)n;
		_exit(0);
	}
	close(sv[0]);
	int st = 0;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFSIGNALED(st));
	assert_int_equal(WTERMSIG(st), SIGPIPE);
}

/*
 * The peer closed: conn_send fails (at once, or WRITE_ERROR from the loop after the kernel learnt
 * it from the peer's RST), and the process is still alive.
 */
static void test_send_to_closed_peer_fails_without_sigpipe(void **state)
{
	(void)state;
	assert_true(signal(SIGPIPE, SIG_DFL) != SIG_ERR);
	expect_sigpipe_kills_plain_send();
	for (int kind = PAIR_UNIX; kind <= PAIR_TCP; kind++) {
		struct fixture *fx = fx_new(kind, false);
		fx_close_peer(fx);
		uint8_t pkt[100];
		fill_packet(pkt, sizeof(pkt), 1);
		uint64_t deadline = fx_deadline(fx);
		int rc = 0;
		while ((rc = fx_send(fx, pkt, sizeof(pkt))) == 0 && !fx->ev[CONN_EV_WRITE_ERROR])
			fx_run_once(fx, deadline, "a failed send");
		if (kind == PAIR_UNIX)
			assert_int_equal(rc, UV_EPIPE); /* no RST to wait for: fails at once */
		assert_true(rc < 0 || fx->ev_status[CONN_EV_WRITE_ERROR] < 0);
		assert_int_equal(fx->c.queued, 0);
		assert_int_equal(fx->cb_in_call, 0);
		fx_free(fx);
	}
}

/* The peer closes while writes are queued: WRITE_ERROR from the loop, no SIGPIPE, queue empty. */
static void test_queued_write_to_closed_peer_reports_write_error(void **state)
{
	(void)state;
	assert_true(signal(SIGPIPE, SIG_DFL) != SIG_ERR);
	for (int kind = PAIR_UNIX; kind <= PAIR_TCP; kind++) {
		struct fixture *fx = fx_new(kind, true);
		struct bytes sent = { 0 };
		fx_fill_queue(fx, &sent, 9000, 100000);
		fx_close_peer(fx);
		FX_WAIT(fx, fx->ev[CONN_EV_WRITE_ERROR] > 0, "WRITE_ERROR");
		assert_true(fx->ev_status[CONN_EV_WRITE_ERROR] < 0);
		assert_int_equal(fx->cb_in_call, 0);
		assert_int_equal(fx->c.queued, 0);
		assert_null(fx->c.wq_head);
		assert_true(fx_send(fx, "x", 1) < 0);
		bytes_free(&sent);
		fx_free(fx);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_send_small_packet_arrives_intact),
		cmocka_unit_test(test_send_larger_than_socket_queues_in_order),
		cmocka_unit_test(test_send_enforces_max_queued),
		cmocka_unit_test(test_close_after_flush_delivers_queued_then_eof),
		cmocka_unit_test(test_close_after_flush_with_nothing_queued),
		cmocka_unit_test(test_close_during_flush_closes_once),
		cmocka_unit_test(test_close_with_writes_queued_cancels_them),
		cmocka_unit_test(test_close_without_socket_from_loop),
		cmocka_unit_test(test_connect_refused_from_loop),
		cmocka_unit_test(test_connect_then_send_and_read),
		cmocka_unit_test(test_send_while_connecting_arrives_after_connect),
		cmocka_unit_test(test_close_while_connecting),
		cmocka_unit_test(test_read_delivers_bytes_then_eof),
		cmocka_unit_test(test_read_off_holds_bytes_until_on),
		cmocka_unit_test(test_read_off_from_on_data),
		cmocka_unit_test(test_tcp_peer_reset_after_data),
		cmocka_unit_test(test_tcp_peer_reset_while_not_reading),
		cmocka_unit_test(test_tcp_peer_reset_while_writes_queued),
		cmocka_unit_test(test_send_to_closed_peer_fails_without_sigpipe),
		cmocka_unit_test(test_queued_write_to_closed_peer_reports_write_error),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
