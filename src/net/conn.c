/*
 * Connection I/O over libuv; see conn.h for the contract. The invariants that keep this safe:
 *  - rbuf is only moved (compacted, reset, returned) when no forward is in flight out of it;
 *  - reading is active iff want_read && !fwd_len && !closing && rbuf has room;
 *  - the conn outlives every write that points into its buffer (refs).
 */
#include "net/conn.h"
#include "net/conn_tls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct send_req {
	uv_write_t req;
	struct conn *c;	  /* borrowed: the destination, alive until this callback (libuv order) */
	struct conn *src; /* borrowed (a reference held): the forward these bytes stand for */
	uint32_t len;
	uint8_t data[];
};

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

static void conn_close_cb(uv_handle_t *h)
{
	conn_unref(h->data);
}

static void conn_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	(void)suggested;
	struct conn *c = h->data;
	if (c->tls) { /* ciphertext: decrypted into rbuf right away */
		conn_tls_read_buffer(buf);
		return;
	}
	if (!c->rbuf) {
		c->rbuf = iobuf_get(c->bufs);
		if (!c->rbuf) {
			buf->base = NULL;
			buf->len = 0; /* libuv reports UV_ENOBUFS to read_cb */
			return;
		}
	}
	buf->base = (char *)c->rbuf->data + c->rbuf->recv;
	buf->len = c->rbuf->cap - c->rbuf->recv;
}

static void conn_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

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
	if (want) {
		/* alloc/read callbacks are static; uv_read_start only fails on a closing handle */
		if (uv_read_start((uv_stream_t *)&c->tcp, conn_alloc_cb, conn_read_cb) == 0)
			c->reading = true;
	} else {
		uv_read_stop((uv_stream_t *)&c->tcp);
		c->reading = false;
	}
}

static void conn_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	(void)buf;
	struct conn *c = s->data;
	if (c->closing)
		return;
	if (nread > 0)
		c->rx_bytes += (uint64_t)nread;
	if (nread > 0 && c->tls) {
		conn_tls_on_read(c, (const uint8_t *)buf->base, (size_t)nread);
		conn_settle(c);
		return;
	}
	if (nread > 0) {
		c->rbuf->recv += (uint32_t)nread;
		c->ops->on_data(c);
		conn_settle(c);
		return;
	}
	if (nread == 0) /* EAGAIN: not EOF */
		return;
	if (c->rbuf && iobuf_empty(c->rbuf) && !c->fwd_len) {
		iobuf_put(c->bufs, c->rbuf);
		c->rbuf = NULL;
	}
	uv_read_stop(s);
	c->reading = false;
	c->ops->on_event(c, nread == UV_EOF ? CONN_EV_EOF : CONN_EV_READ_ERROR, (int)nread);
}

int conn_init(struct conn *c, uv_loop_t *loop, struct iobuf_pool *bufs, const struct conn_ops *ops,
	      void *owner)
{
	memset(c, 0, sizeof(*c));
	c->ops = ops;
	c->owner = owner;
	c->bufs = bufs;
	int rc = uv_tcp_init(loop, &c->tcp);
	if (rc < 0)
		return rc;
	c->tcp.data = c;
	c->refs = 1;
	c->open = true;
	return 0;
}

int conn_accept(struct conn *c, uv_stream_t *server)
{
	int rc = uv_accept(server, (uv_stream_t *)&c->tcp);
	if (rc < 0)
		return rc;
	uv_tcp_nodelay(&c->tcp, 1);
	return 0;
}

static void conn_connect_cb(uv_connect_t *req, int status)
{
	struct conn *c = req->handle->data;
	free(req);
	c->connecting = false;
	if (c->closing)
		return;
	if (status < 0) {
		c->ops->on_event(c, CONN_EV_CONNECT_FAILED, status);
		return;
	}
	uv_tcp_nodelay(&c->tcp, 1);
	c->ops->on_event(c, CONN_EV_CONNECTED, 0);
}

int conn_connect(struct conn *c, const struct sockaddr *addr)
{
	uv_connect_t *req = malloc(sizeof(*req));
	if (!req)
		return UV_ENOMEM;
	int rc = uv_tcp_connect(req, &c->tcp, addr, conn_connect_cb);
	if (rc < 0)
		free(req);
	c->connecting = rc == 0;
	return rc;
}

void conn_want_read(struct conn *c, bool want)
{
	c->want_read = want;
	conn_update_reading(c);
}

static void conn_forward_finish(struct conn *src, int status);

static void conn_send_cb(uv_write_t *req, int status)
{
	struct send_req *sr = (struct send_req *)req;
	struct conn *c = sr->c, *src = sr->src;
	if (!src)
		c->queued -= sr->len;
	free(sr);
	if (src) {
		conn_forward_finish(src, status);
		return;
	}
	if (status < 0 && !c->closing)
		c->ops->on_event(c, CONN_EV_WRITE_ERROR, status);
}

int conn_write_raw(struct conn *c, const uint8_t *data, size_t len, struct conn *src,
		   uint32_t src_len)
{
	if (c->closing)
		return UV_ECANCELED;
	if (len == 0)
		return 0;
	uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
	int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
	if (n == (int)len)
		return 0;
	if (n < 0 && n != UV_EAGAIN)
		return n;
	size_t off = n > 0 ? (size_t)n : 0;
	size_t rest = len - off;
	if (!src && c->queued + rest > CONN_MAX_QUEUED)
		return UV_ENOBUFS;
	struct send_req *sr = malloc(sizeof(*sr) + rest);
	if (!sr)
		return UV_ENOMEM;
	memcpy(sr->data, data + off, rest);
	sr->c = c;
	sr->src = src;
	sr->len = (uint32_t)rest;
	b = uv_buf_init((char *)sr->data, (unsigned)rest);
	int rc = uv_write(&sr->req, (uv_stream_t *)&c->tcp, &b, 1, conn_send_cb);
	if (rc < 0) {
		free(sr);
		return rc;
	}
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

static void conn_forward_cb(uv_write_t *req, int status)
{
	conn_forward_finish(req->data, status);
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
	uv_buf_t ub = uv_buf_init((char *)b->data + b->done, len);
	int n = uv_try_write((uv_stream_t *)&dst->tcp, &ub, 1);
	if (n == (int)len) {
		b->done += len;
		return 0;
	}
	if (n < 0 && n != UV_EAGAIN)
		return n;
	if (n > 0) {
		b->done += (uint32_t)n;
		len -= (uint32_t)n;
		ub = uv_buf_init((char *)b->data + b->done, len);
	}
	b->fwd_req.data = src;
	int rc = uv_write(&b->fwd_req, (uv_stream_t *)&dst->tcp, &ub, 1, conn_forward_cb);
	if (rc < 0)
		return rc;
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

void conn_close(struct conn *c)
{
	if (!c->open)
		return;
	if (c->closing && uv_is_closing((uv_handle_t *)&c->tcp))
		return;
	c->closing = true;
	c->want_read = false;
	if (c->reading) {
		uv_read_stop((uv_stream_t *)&c->tcp);
		c->reading = false;
	}
	conn_tls_close(c);
	uv_close((uv_handle_t *)&c->tcp, conn_close_cb);
}

static void conn_shutdown_cb(uv_shutdown_t *req, int status)
{
	(void)status;
	struct conn *c = req->data;
	free(req);
	if (!uv_is_closing((uv_handle_t *)&c->tcp))
		uv_close((uv_handle_t *)&c->tcp, conn_close_cb);
}

void conn_close_after_flush(struct conn *c)
{
	if (!c->open || c->closing)
		return;
	conn_tls_notify_close(c); /* close_notify goes out before the FIN */
	c->closing = true;
	c->want_read = false;
	if (c->reading) {
		uv_read_stop((uv_stream_t *)&c->tcp);
		c->reading = false;
	}
	conn_tls_close(c);
	/*
	 * Everything written already reached the kernel (the common case: a Terminate, or an error
	 * sent with one write): close() sends the FIN after it as shutdown() would, without that
	 * system call and the loop iteration its callback waits for. A connect in flight has
	 * nothing to flush; without memory, queued writes are dropped.
	 */
	bool flushed = uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) == 0 && !c->tls;
	uv_shutdown_t *req = c->connecting || flushed ? NULL : malloc(sizeof(*req));
	if (!req) {
		uv_close((uv_handle_t *)&c->tcp, conn_close_cb);
		return;
	}
	req->data = c;
	if (uv_shutdown(req, (uv_stream_t *)&c->tcp, conn_shutdown_cb) < 0) {
		free(req);
		uv_close((uv_handle_t *)&c->tcp, conn_close_cb);
	}
}

void conn_peer_name(const struct conn *c, char *out, size_t cap)
{
	struct sockaddr_storage ss;
	int len = sizeof(ss);
	out[0] = 0;
	if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) < 0) {
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
