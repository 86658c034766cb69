/*
 * The HTTP listener and its connections (http_server.h). A connection owns two handles, its TCP
 * stream and its deadline timer, and is freed when both have closed. Bytes go straight from the
 * read buffer into http_parser (node's classic callback parser, Debian's libhttp-parser), which
 * keeps no copy; only the request target is copied (bounded). Each complete request is answered
 * at once with one uv_write of headers and body; responses are therefore written in request
 * order, which is all HTTP/1.1 pipelining asks.
 *
 * Deadline: the timer starts when a connection opens and again after each response, and is not
 * pushed back by incoming bytes, so a client dripping a request byte by byte (slowloris) is
 * closed after http.idle_timeout like a silent one.
 */
#include "http/http_server.h"

#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "conf/config.h"
#include "http/http_routes.h"
#include "net/listener.h"
#include "pool/worker.h"
#include "util/cidr.h"
#include "util/list.h"
#include "util/log.h"

#define HTTP_MAX_LISTENERS 8
#define HTTP_READ_BYTES	   4096
#define HTTP_LINGER_MS	   1000 /* after the last response: read and drop this long, then close */

struct http_server {
	struct worker *w; /* borrowed: the worker whose state is served */
	struct listener ls[HTTP_MAX_LISTENERS];
	int n_ls;
	struct cidr_list allow; /* parsed http.allow */
	struct list_node conns; /* struct http_conn, by link */
	int n_conns;
	int max_conns;	     /* http.max_connections */
	uint64_t timeout_ms; /* http.idle_timeout */
	bool closing;	     /* http_server_close ran: no new connection */
	uint64_t next_id;    /* for log lines */
};

struct http_conn {
	uv_tcp_t tcp;		 /* tcp.data points here */
	uv_timer_t timer;	 /* the current request's deadline; timer.data points here */
	struct http_server *srv; /* borrowed */
	struct list_node link;	 /* in srv->conns */
	uint64_t id;		 /* for log lines */
	http_parser parser;	 /* parser.data points here */
	char rbuf[HTTP_READ_BYTES];
	char url[HTTP_MAX_URL_BYTES + 1]; /* the request target being read, NUL-terminated */
	size_t url_len;
	bool url_too_long;	/* the target passed HTTP_MAX_URL_BYTES: answer 414 */
	bool allowed;		/* the peer is inside http.allow */
	int n_requests;		/* answered so far */
	int pending;		/* uv_write requests not yet completed */
	bool last;		/* the last response is queued: close once it is written */
	bool lingering;		/* written; our side shut down, reading and dropping until EOF */
	uv_shutdown_t shutdown; /* the write-side shutdown of a lingering close */
	bool closing;		/* uv_close started */
	int open_handles;	/* tcp and timer not yet closed; freed at 0 */
};

struct http_write {
	uv_write_t req;	     /* req.data unused */
	struct http_conn *c; /* borrowed: the connection outlives its writes (close waits) */
	struct textbuf head; /* owned: status line and headers */
	struct textbuf body; /* owned: the body, empty for HEAD and OPTIONS */
};

static void http_conn_handle_closed(uv_handle_t *h)
{
	struct http_conn *c = h->data;
	if (--c->open_handles > 0)
		return;
	c->srv->n_conns--;
	list_del(&c->link);
	free(c);
}

/* The one exit of a connection: stops reading and closes both handles. */
static void http_conn_close(struct http_conn *c, const char *why)
{
	if (c->closing)
		return;
	c->closing = true;
	log_debug("http", c->id, "closing: %s", why);
	uv_close((uv_handle_t *)&c->tcp, http_conn_handle_closed);
	uv_close((uv_handle_t *)&c->timer, http_conn_handle_closed);
}

static void http_conn_timeout(uv_timer_t *t)
{
	struct http_conn *c = t->data;
	http_conn_close(c, c->lingering ? "lingering close over"
					: "request not finished within http.idle_timeout");
}

static void http_conn_arm(struct http_conn *c)
{
	uv_timer_start(&c->timer, http_conn_timeout, c->srv->timeout_ms, 0);
}

static const char *http_reason(int status)
{
	switch (status) {
	case 200:
		return "OK";
	case 204:
		return "No Content";
	case 206:
		return "Partial Content";
	case 400:
		return "Bad Request";
	case 403:
		return "Forbidden";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 414:
		return "URI Too Long";
	case 431:
		return "Request Header Fields Too Large";
	case 503:
		return "Service Unavailable";
	}
	return "Internal Server Error";
}

static void http_write_free(struct http_write *wr)
{
	textbuf_free(&wr->head);
	textbuf_free(&wr->body);
	free(wr);
}

static void http_conn_shut(uv_shutdown_t *req, int status)
{
	(void)req;
	(void)status; /* the linger timer closes in any case */
}

/*
 * Closing with unread request bytes in the socket makes the kernel send RST, which can destroy
 * the response before the client reads it (an oversized or pipelined request). So the last
 * response is followed by a FIN, and what the client still sends is read and dropped until its
 * EOF or HTTP_LINGER_MS (Apache's lingering close).
 */
static void http_conn_linger(struct http_conn *c)
{
	c->lingering = true;
	if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, http_conn_shut) < 0) {
		http_conn_close(c, "response written, connection not kept");
		return;
	}
	uv_timer_start(&c->timer, http_conn_timeout, HTTP_LINGER_MS, 0);
}

static void http_conn_written(uv_write_t *req, int status)
{
	struct http_write *wr = (struct http_write *)req;
	struct http_conn *c = wr->c;
	http_write_free(wr);
	c->pending--;
	if (status < 0)
		http_conn_close(c, uv_strerror(status));
	else if (c->last && c->pending == 0 && !c->closing)
		http_conn_linger(c);
}

/*
 * Queues one response. method is HTTP_GET, HTTP_HEAD or HTTP_OPTIONS (others answer 405 with a
 * body). last closes the connection once it is written. body is taken over (freed here).
 */
static void http_conn_respond(struct http_conn *c, int method, int status, const char *content_type,
			      const char *extra_headers, struct textbuf *body, bool last)
{
	struct http_write *wr = calloc(1, sizeof(*wr));
	if (!wr) {
		textbuf_free(body);
		http_conn_close(c, "out of memory");
		return;
	}
	wr->c = c;
	wr->body = *body;
	textbuf_init(body, body->max);
	bool failed = textbuf_failed(&wr->body);
	/* HEAD says how long the GET body would be; OPTIONS has none. */
	size_t len = method == HTTP_OPTIONS ? 0 : wr->body.len;
	if (method == HTTP_HEAD || method == HTTP_OPTIONS)
		textbuf_reset(&wr->body);
	textbuf_init(&wr->head, 1024);
	textbuf_printf(&wr->head, "HTTP/1.1 %d %s\r\n", status, http_reason(status));
	textbuf_printf(&wr->head, "Content-Type: %s\r\nCache-Control: no-store\r\n", content_type);
	textbuf_printf(&wr->head, "Content-Length: %zu\r\n", len);
	if (extra_headers)
		textbuf_puts(&wr->head, extra_headers);
	if (method == HTTP_OPTIONS || status == 405)
		textbuf_puts(&wr->head, "Allow: GET, HEAD, OPTIONS\r\n");
	textbuf_printf(&wr->head, "Connection: %s\r\n\r\n", last ? "close" : "keep-alive");
	if (failed || textbuf_failed(&wr->head)) {
		http_write_free(wr);
		http_conn_close(c, "response too large");
		return;
	}
	uv_buf_t bufs[2] = { uv_buf_init(wr->head.data, (unsigned)wr->head.len),
			     uv_buf_init(wr->body.data, (unsigned)wr->body.len) };
	int rc = uv_write(&wr->req, (uv_stream_t *)&c->tcp, bufs, wr->body.len ? 2 : 1,
			  http_conn_written);
	if (rc < 0) {
		http_write_free(wr);
		http_conn_close(c, uv_strerror(rc));
		return;
	}
	c->pending++;
	c->n_requests++;
	if (last)
		c->last = true; /* reads go on, dropped, until the lingering close ends */
}

/* A short text answer that ends the connection (errors of the request itself). */
static void http_conn_fail(struct http_conn *c, int status, const char *text)
{
	struct textbuf body;
	textbuf_init(&body, 256);
	textbuf_printf(&body, "%s\n", text);
	http_conn_respond(c, HTTP_GET, status, "text/plain; charset=utf-8", NULL, &body, true);
}

static int http_on_url(http_parser *p, const char *at, size_t len)
{
	struct http_conn *c = p->data;
	if (c->url_too_long || len > HTTP_MAX_URL_BYTES - c->url_len) {
		c->url_too_long = true;
		return 0;
	}
	memcpy(c->url + c->url_len, at, len);
	c->url_len += len;
	c->url[c->url_len] = '\0';
	return 0;
}

static int http_on_message_begin(http_parser *p)
{
	struct http_conn *c = p->data;
	c->url_len = 0;
	c->url[0] = '\0';
	c->url_too_long = false;
	return 0;
}

/* Splits the target into path and query and asks http_routes.c. */
static void http_conn_route(struct http_conn *c, int method, bool last)
{
	struct http_parser_url u;
	http_parser_url_init(&u);
	if (http_parser_parse_url(c->url, c->url_len, 0, &u) != 0 ||
	    !(u.field_set & (1 << UF_PATH))) {
		http_conn_fail(c, 400, "bad request target");
		return;
	}
	struct http_request req = {
		.path = c->url + u.field_data[UF_PATH].off,
		.path_len = u.field_data[UF_PATH].len,
		.allowed = c->allowed,
	};
	if (u.field_set & (1 << UF_QUERY)) {
		req.query = c->url + u.field_data[UF_QUERY].off;
		req.query_len = u.field_data[UF_QUERY].len;
	}
	struct http_response res = { .status = 500, .content_type = "text/plain; charset=utf-8" };
	textbuf_init(&res.body, HTTP_BODY_MAX);
	http_route(c->srv->w, &req, &res);
	http_conn_respond(c, method, res.status, res.content_type, res.extra_headers, &res.body,
			  last);
}

static int http_on_message_complete(http_parser *p)
{
	struct http_conn *c = p->data;
	int method = (int)p->method;
	bool last = !http_should_keep_alive(p) || c->n_requests + 1 >= HTTP_MAX_REQUESTS ||
		    c->pending + 1 >= HTTP_MAX_PIPELINE || c->srv->closing;
	if (c->url_too_long) {
		http_conn_fail(c, 414, "request target too long");
	} else if (method != HTTP_GET && method != HTTP_HEAD && method != HTTP_OPTIONS) {
		struct textbuf body;
		textbuf_init(&body, 256);
		textbuf_puts(&body, "only GET, HEAD and OPTIONS\n");
		http_conn_respond(c, HTTP_GET, 405, "text/plain; charset=utf-8", NULL, &body, last);
	} else {
		http_conn_route(c, method, last);
	}
	if (c->last || c->closing) {
		http_parser_pause(p, 1); /* the rest of the buffer is not read */
		return 0;
	}
	http_conn_arm(c); /* the next request has a fresh deadline */
	return 0;
}

static const http_parser_settings http_settings = {
	.on_message_begin = http_on_message_begin,
	.on_url = http_on_url,
	.on_message_complete = http_on_message_complete,
};

static void http_conn_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	(void)suggested;
	struct http_conn *c = h->data;
	*buf = uv_buf_init(c->rbuf, sizeof(c->rbuf));
}

static void http_conn_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct http_conn *c = s->data;
	(void)buf;
	if (nread == 0 || c->closing)
		return;
	if (nread < 0) {
		http_conn_close(c, nread == UV_EOF ? "peer closed" : uv_strerror((int)nread));
		return;
	}
	if (c->last)
		return; /* after the last response: dropped */
	size_t done = http_parser_execute(&c->parser, &http_settings, c->rbuf, (size_t)nread);
	enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
	if (c->last || c->closing || e == HPE_PAUSED)
		return;
	if (e == HPE_HEADER_OVERFLOW) {
		http_conn_fail(c, 431, "request headers too large");
	} else if (e != HPE_OK || done != (size_t)nread) {
		log_debug("http", c->id, "bad request: %s", http_errno_description(e));
		http_conn_fail(c, 400, "bad request");
	}
}

static bool http_peer_allowed(struct http_conn *c)
{
	struct sockaddr_storage ss;
	int len = sizeof(ss);
	if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) < 0)
		return false;
	return cidr_list_match(&c->srv->allow, (struct sockaddr *)&ss);
}

static void http_on_connection(struct listener *l, int fd, const struct sockaddr_storage *peer)
{
	struct http_server *h = l->owner;
	(void)peer;
	if (fd < 0) {
		log_warning("http", 0, "accept on %s failed: %s", l->name, uv_strerror(fd));
		return;
	}
	if (h->closing || h->n_conns >= h->max_conns || !worker_fd_available(h->w)) {
		log_debug("http", 0, "connection refused: %d open (http.max_connections %d)",
			  h->n_conns, h->max_conns);
		close(fd); /* accepted and dropped: the backlog drains even when nothing is kept */
		return;
	}
	struct http_conn *c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		return;
	}
	c->srv = h;
	c->id = ++h->next_id;
	uv_tcp_init(l->poll.loop, &c->tcp);
	uv_timer_init(l->poll.loop, &c->timer);
	c->tcp.data = c;
	c->timer.data = c;
	c->open_handles = 2;
	c->parser.data = c;
	http_parser_init(&c->parser, HTTP_REQUEST);
	list_append(&h->conns, &c->link);
	h->n_conns++;
	int rc = uv_tcp_open(&c->tcp, fd);
	if (rc < 0)
		close(fd);
	if (rc == 0)
		rc = uv_read_start((uv_stream_t *)&c->tcp, http_conn_alloc, http_conn_read);
	if (rc < 0) {
		http_conn_close(c, uv_strerror(rc));
		return;
	}
	c->allowed = http_peer_allowed(c);
	http_conn_arm(c);
}

bool http_server_start(struct worker *w, struct http_server **out, char *err, size_t errcap)
{
	const struct http_conf *cf = &w->cfg->http;
	*out = NULL;
	if (cf->port == 0)
		return true;
	struct http_server *h = calloc(1, sizeof(*h));
	if (!h) {
		snprintf(err, errcap, "out of memory");
		return false;
	}
	h->w = w;
	h->max_conns = cf->max_connections;
	h->timeout_ms = cf->idle_timeout_ms;
	list_init(&h->conns);
	char why[256];
	if (!cidr_list_parse(cf->allow, &h->allow, why, sizeof(why))) {
		snprintf(err, errcap, "http.allow: %s", why);
		free(h);
		return false;
	}
	http_parser_set_max_header_size(HTTP_MAX_HEADER_BYTES);
	*out = h; /* from here on, http_server_close undoes a partial start */
	char addrs[1024];
	snprintf(addrs, sizeof(addrs), "%s", cf->listen_addresses);
	char *save = NULL;
	for (char *a = strtok_r(addrs, ", ", &save); a; a = strtok_r(NULL, ", ", &save)) {
		int n = 0;
		int rc = listener_open_all(&h->ls[h->n_ls], HTTP_MAX_LISTENERS - h->n_ls, &n,
					   &w->loop, a, cf->port, http_on_connection, h, err,
					   errcap);
		h->n_ls += n;
		if (rc < 0)
			return false;
	}
	for (int i = 0; i < h->n_ls; i++)
		log_info("http", 0, "HTTP listening on %s", h->ls[i].name);
	return true;
}

void http_server_close(struct http_server *h)
{
	if (!h || h->closing)
		return;
	h->closing = true;
	for (int i = 0; i < h->n_ls; i++)
		listener_close(&h->ls[i]);
	struct list_node *pos, *tmp;
	list_for_each_safe(pos, tmp, &h->conns)
	{
		http_conn_close(list_entry(pos, struct http_conn, link), "shutting down");
	}
}

int http_server_conn_count(const struct http_server *h)
{
	return h ? h->n_conns + h->n_ls : 0;
}

void http_server_free(struct http_server *h)
{
	free(h);
}
