/*
 * Connection I/O on a uv_poll_t; see conn.h for the contract. The invariants that keep this safe:
 *  - rbuf is only moved (compacted, reset, returned) when no forward is in flight out of it;
 *  - reading is on iff want_read && !fwd_len && !closing && rbuf has room;
 *  - the poll watches UV_READABLE iff reading, UV_WRITABLE iff a write waits or a connect runs;
 *  - nothing is sent while an older request waits (wq_head), so bytes keep their order;
 *  - the conn outlives every write that points into its buffer (refs).
 */
#include "net/conn.h"
#include "net/conn_tls.h"
#include "net/sockcall.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define CONN_READS_PER_EVENT 32 /* full-buffer reads in a row before the loop runs others */
#define CONN_IOV_MAX	     16 /* queued requests gathered into one sendmsg */

static void conn_poll_cb(uv_poll_t *h, int status, int events);

void conn_unref(struct conn *c)
{
	if (--c->refs > 0)
		return;
	conn_tls_free(c);
	if (c->rbuf) {
		iobuf_put(c->bufs, c->rbuf);
		c->rbuf = NULL;
	}
	c->ops->on_closed(c);
}

/* What the poll must watch: UV_READABLE while reading, UV_WRITABLE while a write or connect
 * waits. */
static uint8_t conn_poll_need(const struct conn *c)
{
	uint8_t ev = 0;
	if (c->reading)
		ev |= UV_READABLE;
	if (c->wq_head || c->connecting)
		ev |= UV_WRITABLE;
	return ev;
}

static void conn_set_poll(struct conn *c, uint8_t ev)
{
	c->events = ev;
	if (ev)
		uv_poll_start(&c->poll, ev, conn_poll_cb); /* only fails on a closing handle */
	else
		uv_poll_stop(&c->poll);
}

/*
 * Makes the poll watch what conn_poll_need says. Every change costs system calls (libuv's
 * uv_poll_start removes the descriptor from epoll and adds it again), so a UV_READABLE that is no
 * longer needed stays watched until it fires (conn_poll_cb drops it then): a client that stops
 * reading while it waits for a server and then resumes costs none, unless bytes came meanwhile.
 * A stale UV_WRITABLE would fire at once, so it goes now.
 */
static void conn_update_poll(struct conn *c)
{
	if (c->fd < 0 || c->handle_closing)
		return;
	uint8_t need = conn_poll_need(c);
	uint8_t stale = c->events & (uint8_t)~need;
	if ((need & ~c->events) || (stale & UV_WRITABLE))
		conn_set_poll(c, need);
}

/* ---- the write queue ---- */

static void conn_forward_finish(struct conn *src, int status);

/* A request left the queue: written (status 0) or given up (status < 0). */
static void conn_wreq_done(struct conn *c, struct conn_wreq *r, int status)
{
	struct conn *src = r->src;
	if (r->copy_len) {
		if (!src)
			c->queued -= r->copy_len;
		free(r);
	}
	if (src) {
		conn_forward_finish(src, status);
		return;
	}
	if (status < 0 && !c->closing)
		c->ops->on_event(c, CONN_EV_WRITE_ERROR, status);
}

static struct conn_wreq *conn_queue_pop(struct conn *c)
{
	struct conn_wreq *r = c->wq_head;
	c->wq_head = r->next;
	if (!c->wq_head)
		c->wq_tail = &c->wq_head;
	return r;
}

static void conn_queue_push(struct conn *c, struct conn_wreq *r)
{
	r->next = NULL;
	*c->wq_tail = r;
	c->wq_tail = &r->next;
	conn_update_poll(c);
}

/* Every waiting request fails with status (the socket failed or is being closed). */
static void conn_fail_queue(struct conn *c, int status)
{
	while (c->wq_head)
		conn_wreq_done(c, conn_queue_pop(c), status);
}

/* Accounts n bytes the socket took from the head of the queue. */
static void conn_queue_consume(struct conn *c, size_t n)
{
	while (n > 0 && c->wq_head) {
		struct conn_wreq *r = c->wq_head;
		if (n < r->len) {
			r->ptr += n;
			r->len -= (uint32_t)n;
			return;
		}
		n -= r->len;
		conn_wreq_done(c, conn_queue_pop(c), 0);
	}
}

static void conn_close_handle(struct conn *c);

/* The queue is empty after conn_close_after_flush: FIN after the last byte, then close. */
static void conn_finish_flush_close(struct conn *c)
{
	shutdown(c->fd, SHUT_WR);
	conn_close_handle(c);
}

/* The socket is writable: sends what waits, gathered, until it is all out or the socket is full. */
static void conn_flush_queue(struct conn *c)
{
	while (c->wq_head && !c->handle_closing) {
		struct iovec iov[CONN_IOV_MAX];
		size_t total = 0;
		int k = 0;
		for (struct conn_wreq *r = c->wq_head; r && k < CONN_IOV_MAX; r = r->next, k++) {
			iov[k].iov_base = (void *)r->ptr;
			iov[k].iov_len = r->len;
			total += r->len;
		}
		struct msghdr msg = { .msg_iov = iov, .msg_iovlen = (size_t)k };
		ssize_t n = sock_sendmsg(c->fd, &msg, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				conn_fail_queue(c, -errno);
			break;
		}
		conn_queue_consume(c, (size_t)n);
		if ((size_t)n < total)
			break;
	}
	if (!c->wq_head && c->close_flushed && !c->handle_closing)
		conn_finish_flush_close(c);
}

/* ---- reading ---- */

/* Where the next read goes: the TLS read scratch, or rbuf's free tail (len 0: no buffer). */
static void conn_read_buffer(struct conn *c, uv_buf_t *buf)
{
	if (c->tls) { /* ciphertext: decrypted into rbuf right away */
		conn_tls_read_buffer(buf);
		return;
	}
	if (!c->rbuf) {
		c->rbuf = iobuf_get(c->bufs);
		if (!c->rbuf) {
			buf->base = NULL;
			buf->len = 0;
			return;
		}
	}
	buf->base = (char *)c->rbuf->data + c->rbuf->recv;
	buf->len = c->rbuf->cap - c->rbuf->recv;
}

void conn_update_reading(struct conn *c)
{
	bool room = !c->rbuf || c->rbuf->recv < c->rbuf->cap;
	bool want = c->want_read && !c->fwd_len && !c->closing && room;
	if (c->tls) {
		if (want && conn_tls_has_pending(c))
			conn_tls_schedule_drain(c);
		want = want && !conn_tls_backlogged(c);
	}
	if (want == c->reading)
		return;
	c->reading = want;
	conn_update_poll(c);
}

/* End of input: EOF (UV_EOF) or an error; the owner decides what follows. */
static void conn_read_failed(struct conn *c, int status)
{
	if (c->rbuf && iobuf_empty(c->rbuf) && !c->fwd_len) {
		iobuf_put(c->bufs, c->rbuf);
		c->rbuf = NULL;
	}
	c->reading = false;
	conn_update_poll(c);
	c->ops->on_event(c, status == UV_EOF ? CONN_EV_EOF : CONN_EV_READ_ERROR, status);
}

static void conn_got_bytes(struct conn *c, const uv_buf_t *buf, size_t n)
{
	c->rx_bytes += n;
	if (c->tls) {
		conn_tls_on_read(c, (const uint8_t *)buf->base, n);
	} else {
		c->rbuf->recv += (uint32_t)n;
		c->ops->on_data(c);
	}
	conn_settle(c);
}

/* The socket is readable: reads until it has no more, reading stops, or the bound is hit. */
static void conn_read_some(struct conn *c)
{
	for (int i = 0; i < CONN_READS_PER_EVENT && c->reading && !c->closing; i++) {
		uv_buf_t buf;
		conn_read_buffer(c, &buf);
		if (buf.len == 0) {
			conn_read_failed(c, UV_ENOBUFS);
			return;
		}
		ssize_t n = sock_read(c->fd, buf.base, buf.len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n <= 0) {
			conn_read_failed(c, n == 0 ? UV_EOF : -errno);
			return;
		}
		conn_got_bytes(c, &buf, (size_t)n);
		if ((size_t)n < buf.len) /* the socket had no more */
			return;
	}
}

/* ---- connecting, accepting, the poll ---- */

static void conn_connect_done(struct conn *c)
{
	int err = c->delayed_error;
	if (!err) {
		int so = 0;
		socklen_t len = sizeof(so);
		if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &so, &len) < 0)
			so = errno;
		err = -so;
	}
	c->connecting = false;
	if (c->closing)
		return;
	if (err < 0) {
		c->ops->on_event(c, CONN_EV_CONNECT_FAILED, err);
		return;
	}
	int one = 1;
	(void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->ops->on_event(c, CONN_EV_CONNECTED, 0);
}

static void conn_poll_cb(uv_poll_t *h, int status, int events)
{
	struct conn *c = h->data;
	if (status < 0) {
		/* POLLERR: libuv stopped the handle. A read or write reports the socket's error
		 * (after any bytes that arrived before it). */
		c->events = 0;
		events = UV_READABLE | UV_WRITABLE;
	}
	/* Watched, fired, but nobody waited for it when it came (a stale UV_READABLE). */
	bool unwanted = (events & c->events & ~conn_poll_need(c)) != 0;
	if (c->connecting) {
		if (events & UV_WRITABLE)
			conn_connect_done(c);
	} else {
		if ((events & UV_WRITABLE) && c->wq_head)
			conn_flush_queue(c);
		if ((events & UV_READABLE) && c->reading && !c->closing)
			conn_read_some(c);
	}
	if (unwanted && c->fd >= 0 && !c->handle_closing)
		conn_set_poll(c, conn_poll_need(c)); /* stop watching it: it would fire again */
	else
		conn_update_poll(c);
}

int conn_init(struct conn *c, uv_loop_t *loop, struct iobuf_pool *bufs, const struct conn_ops *ops,
	      void *owner)
{
	memset(c, 0, sizeof(*c));
	c->ops = ops;
	c->owner = owner;
	c->bufs = bufs;
	c->poll.loop = loop; /* known before the socket exists (conn_tls, the stand-in close) */
	c->fd = -1;
	c->wq_tail = &c->wq_head;
	c->refs = 1;
	c->open = true;
	return 0;
}

/* Puts fd under c's poll handle; on error fd is closed and c stays without a socket. */
static int conn_attach(struct conn *c, int fd)
{
	int rc = uv_poll_init_socket(c->poll.loop, &c->poll, fd);
	if (rc < 0) {
		close(fd);
		return rc;
	}
	c->poll.data = c;
	c->fd = fd;
	conn_update_poll(c); /* the owner may have asked for bytes before the socket existed */
	return 0;
}

int conn_accept(struct conn *c, int fd)
{
	return conn_attach(c, fd); /* TCP_NODELAY came from the listening socket (listener.c) */
}

int conn_connect(struct conn *c, const struct sockaddr *addr)
{
	int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	int rc = conn_attach(c, fd);
	if (rc < 0)
		return rc;
	socklen_t len = addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
						    : sizeof(struct sockaddr_in);
	int r;
	do
		r = connect(fd, addr, len);
	while (r < 0 && errno == EINTR);
	if (r < 0 && errno != EINPROGRESS) {
		/* A refused loopback connect fails at once; like libuv, report it from the loop. */
		if (errno != ECONNREFUSED)
			return -errno;
		c->delayed_error = UV_ECONNREFUSED;
	}
	c->connecting = true;
	conn_update_poll(c);
	return 0;
}

void conn_want_read(struct conn *c, bool want)
{
	c->want_read = want;
	conn_update_reading(c);
}

/* Sends what the socket takes now; returns the bytes taken or a libuv error (EAGAIN: 0). */
static ssize_t conn_try_send(struct conn *c, const uint8_t *data, size_t len)
{
	if (c->wq_head || c->connecting || c->fd < 0)
		return 0; /* never past a waiting request */
	ssize_t n;
	do
		n = sock_send(c->fd, data, len, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n >= 0)
		return n;
	return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno;
}

int conn_write_raw(struct conn *c, const uint8_t *data, size_t len, struct conn *src,
		   uint32_t src_len)
{
	if (c->closing)
		return UV_ECANCELED;
	if (len == 0)
		return 0;
	ssize_t n = conn_try_send(c, data, len);
	if (n == (ssize_t)len)
		return 0;
	if (n < 0)
		return (int)n;
	size_t rest = len - (size_t)n;
	if (!src && c->queued + rest > CONN_MAX_QUEUED)
		return UV_ENOBUFS;
	struct conn_wreq *r = malloc(sizeof(*r) + rest);
	if (!r)
		return UV_ENOMEM;
	uint8_t *copy = (uint8_t *)(r + 1);
	memcpy(copy, data + n, rest);
	r->src = src;
	r->ptr = copy;
	r->len = (uint32_t)rest;
	r->copy_len = (uint32_t)rest;
	conn_queue_push(c, r);
	if (!src) {
		c->queued += (uint32_t)rest;
		return 0;
	}
	src->fwd_len = src_len;
	src->refs++;
	conn_update_reading(src);
	return 1;
}

int conn_send(struct conn *c, const void *data, size_t len)
{
	if (c->closing)
		return UV_ECANCELED;
	c->tx_bytes += len;
	if (c->tls)
		return conn_tls_send(c, data, len);
	return conn_write_raw(c, data, len, NULL, 0);
}

static void conn_forward_finish(struct conn *src, int status)
{
	src->rbuf->done += src->fwd_len;
	src->fwd_len = 0;
	if (!src->closing) {
		if (status < 0) {
			src->ops->on_event(src, CONN_EV_FORWARD_FAILED, status);
		} else {
			src->ops->on_event(src, CONN_EV_FORWARD_DONE, 0);
			conn_settle(src);
		}
	}
	conn_unref(src);
}

int conn_forward(struct conn *src, struct conn *dst)
{
	struct iobuf *b = src->rbuf;
	if (src->fwd_len)
		return 1;
	if (dst->closing)
		return UV_ECANCELED;
	dst->tx_bytes += b->parsed - b->done;
	if (dst->tls)
		return conn_tls_forward(src, dst);
	uint32_t len = b->parsed - b->done;
	if (len == 0)
		return 0;
	ssize_t n = conn_try_send(dst, b->data + b->done, len);
	if (n == (ssize_t)len) {
		b->done += len;
		return 0;
	}
	if (n < 0)
		return (int)n;
	b->done += (uint32_t)n;
	len -= (uint32_t)n;
	struct conn_wreq *r = &b->fwd_req;
	r->src = src;
	r->ptr = b->data + b->done;
	r->len = len;
	r->copy_len = 0;
	conn_queue_push(dst, r);
	src->fwd_len = len;
	src->refs++;
	conn_update_reading(src);
	return 1;
}

void conn_tidy_buffer(struct conn *c)
{
	struct iobuf *b = c->rbuf;
	if (!b || c->fwd_len)
		return;
	if (iobuf_empty(b)) {
		iobuf_put(c->bufs, b);
		c->rbuf = NULL;
		return;
	}
	/* Compact only when the free tail is small: a message straddles the end of the buffer. */
	if (b->done > 0 && b->cap - b->recv < b->cap / 4)
		iobuf_compact(b);
}

void conn_settle(struct conn *c)
{
	if (c->closing)
		return;
	conn_tidy_buffer(c);
	conn_update_reading(c);
}

static void conn_handle_closed(uv_handle_t *h)
{
	struct conn *c = h->data;
	if (c->fd >= 0) {
		close(c->fd);
		c->fd = -1;
	}
	conn_fail_queue(c, UV_ECANCELED); /* closing is set: forwards learn it, no events here */
	conn_unref(c);
}

static void conn_standin_closed(uv_handle_t *h)
{
	struct conn *c = h->data;
	free(h);
	conn_unref(c);
}

/* uv_close on the poll handle; a conn without a socket closes a stand-in, so that on_closed
 * still comes from the loop and never from inside conn_close. */
static void conn_close_handle(struct conn *c)
{
	if (c->handle_closing)
		return;
	c->handle_closing = true;
	if (c->fd >= 0) {
		uv_close((uv_handle_t *)&c->poll, conn_handle_closed);
		return;
	}
	uv_idle_t *standin = malloc(sizeof(*standin));
	if (!standin || uv_idle_init(c->poll.loop, standin) < 0) {
		free(standin);
		conn_unref(c); /* out of memory: the only synchronous on_closed */
		return;
	}
	standin->data = c;
	uv_close((uv_handle_t *)standin, conn_standin_closed);
}

/* Stops callbacks to the owner; the handle's close follows now or after the flush. */
static void conn_begin_close(struct conn *c)
{
	c->closing = true;
	c->want_read = false;
	c->reading = false; /* a stale UV_READABLE fires once at most (conn_poll_cb drops it) */
}

void conn_close(struct conn *c)
{
	if (!c->open || c->handle_closing)
		return;
	conn_begin_close(c);
	conn_tls_close(c);
	conn_close_handle(c);
}

void conn_close_after_flush(struct conn *c)
{
	if (!c->open || c->closing)
		return;
	conn_tls_notify_close(c); /* close_notify goes out before the FIN */
	conn_begin_close(c);
	conn_tls_close(c);
	/*
	 * Everything written already reached the kernel (the common case: a Terminate, or an error
	 * sent with one write): close() sends the FIN after it as shutdown() would, without that
	 * system call. A connect in flight closes at once: what was queued for that peer (a
	 * Terminate) is dropped, it never heard from us. Otherwise the queue drains first
	 * (conn_flush_queue); the caller bounds how long with a timer and conn_close.
	 */
	if (!c->wq_head || c->connecting || c->fd < 0) {
		if (c->tls && !c->connecting && c->fd >= 0)
			shutdown(c->fd, SHUT_WR); /* the FIN right behind close_notify */
		conn_close_handle(c);
		return;
	}
	c->close_flushed = true;
	conn_update_poll(c);
}

typedef int (*sock_name_fn)(int fd, struct sockaddr *sa, socklen_t *len);

static int conn_sock_addr(const struct conn *c, struct sockaddr_storage *ss, sock_name_fn get)
{
	socklen_t len = sizeof(*ss);
	memset(ss, 0, sizeof(*ss));
	if (c->fd < 0)
		return UV_ENOTCONN;
	return get(c->fd, (struct sockaddr *)ss, &len) < 0 ? -errno : 0;
}

int conn_peer_addr(const struct conn *c, struct sockaddr_storage *ss)
{
	return conn_sock_addr(c, ss, getpeername);
}

int conn_local_addr(const struct conn *c, struct sockaddr_storage *ss)
{
	return conn_sock_addr(c, ss, getsockname);
}

void conn_peer_name(const struct conn *c, char *out, size_t cap)
{
	struct sockaddr_storage ss;
	out[0] = 0;
	if (conn_peer_addr(c, &ss) < 0) {
		snprintf(out, cap, "?");
		return;
	}
	char host[64] = "?";
	int port = 0;
	if (ss.ss_family == AF_INET) {
		uv_ip4_name((struct sockaddr_in *)&ss, host, sizeof(host));
		port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
	} else if (ss.ss_family == AF_INET6) {
		uv_ip6_name((struct sockaddr_in6 *)&ss, host, sizeof(host));
		port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	}
	snprintf(out, cap, "%s:%d", host, port);
}
