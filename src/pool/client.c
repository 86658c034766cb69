/*
 * Client side of a session: accept, startup packet, the work-phase relay to the linked server,
 * and the single exit (client_disconnect). Authentication steps live in client_auth.c.
 *
 * Invariants:
 *  - c->server, when set, links back (c->server->client == c);
 *  - a client in CL_ACTIVE without a server has no unsent bytes forwarded anywhere: its first
 *    message waits in its buffer (reading paused) until a backend login completes;
 *  - the client's buffer is only scanned by one function per state.
 */
#include "pool/client.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pool/pool.h"
#include "pool/relay.h"
#include "pool/server.h"
#include "pool/worker.h"
#include "protocol/builder.h"
#include "protocol/pqmsg.h"
#include "protocol/reader.h"
#include "util/log.h"

#define CLIENT_AUTH_MSG_MAX 8192 /* bound on a password / SASL message during login */

static void client_on_data(struct conn *conn);
static void client_on_event(struct conn *conn, enum conn_event ev, int status);
static void client_on_closed(struct conn *conn);

static const struct conn_ops client_conn_ops = {
	.on_data = client_on_data,
	.on_event = client_on_event,
	.on_closed = client_on_closed,
};

static struct list_node *client_list_for(struct worker *w, enum client_state st)
{
	switch (st) {
	case CL_LOGIN:
	case CL_CANCEL:
		return &w->login_clients;
	case CL_ACTIVE:
		return &w->active_clients;
	case CL_CLOSING:
		return &w->closing_clients;
	}
	abort();
}

void client_set_state(struct client *c, enum client_state st)
{
	list_del(&c->node);
	c->state = st;
	c->since_ms = uv_now(&c->w->loop);
	list_append(client_list_for(c->w, st), &c->node);
}

bool client_send(struct client *c, const void *data, size_t len)
{
	int rc = conn_send(&c->conn, data, len);
	if (rc < 0) {
		client_disconnect(c, NULL, "could not write to client: %s", uv_strerror(rc));
		return false;
	}
	return true;
}

/* Sends one FATAL ErrorResponse; failures are ignored because the connection is closing anyway. */
static void client_send_fatal(struct client *c, const char *sqlstate, const char *message)
{
	uint8_t store[512];
	struct builder b;
	builder_init(&b, store, sizeof(store));
	builder_error(&b, "FATAL", sqlstate, message);
	if (builder_ok(&b)) {
		int rc = conn_send(&c->conn, b.data, b.len);
		(void)rc;
	}
	builder_free(&b);
}

void client_disconnect(struct client *c, const char *sqlstate, const char *fmt, ...)
{
	if (c->state == CL_CLOSING)
		return;
	char msg[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (sqlstate)
		log_info("client", c->id, "closing: %s (SQLSTATE %s)", msg, sqlstate);
	else
		log_debug("client", c->id, "closing: %s", msg);
	if (sqlstate)
		client_send_fatal(c, sqlstate, msg);
	if (c->server) {
		struct server *s = c->server;
		c->server = NULL;
		s->client = NULL;
		server_close(s, "client session ended");
	}
	if (c->cancel_pid) {
		cancel_map_remove(&c->w->cancels, c->cancel_pid);
		c->cancel_pid = 0;
	}
	client_free_login_state(c);
	client_set_state(c, CL_CLOSING);
	conn_close_after_flush(&c->conn);
}

static void client_on_closed(struct conn *conn)
{
	struct client *c = conn->owner;
	struct worker *w = c->w;
	list_del(&c->node);
	if (c->cancel_pid)
		cancel_map_remove(&w->cancels, c->cancel_pid);
	client_free_login_state(c);
	free(c->creds.secret);
	free(c->startup);
	free(c);
	w->n_clients--;
	worker_check_shutdown_done(w);
}

static bool client_refuse_if_over_limit(struct client *c)
{
	struct worker *w = c->w;
	if (w->shutdown != WS_RUNNING) {
		client_disconnect(c, "57P03", "the database system is shutting down");
		return true;
	}
	if (w->n_clients > w->cfg->pool.max_client_conn) {
		client_disconnect(c, "53300",
				  "sorry, too many clients already (max_client_conn %d)",
				  w->cfg->pool.max_client_conn);
		return true;
	}
	if (!worker_fd_available(w)) {
		client_disconnect(
			c, "53300",
			"sorry, too many clients already (file descriptor limit reached)");
		return true;
	}
	return false;
}

void client_accept(struct worker *w, uv_stream_t *listener)
{
	struct client *c = calloc(1, sizeof(*c));
	if (!c) {
		log_error("client", 0, "out of memory accepting a client");
		return;
	}
	if (conn_init(&c->conn, &w->loop, &w->bufs, &client_conn_ops, c) < 0) {
		free(c);
		return;
	}
	c->w = w;
	c->id = ++w->next_conn_id;
	c->txn_status = TXN_IDLE;
	list_init(&c->node);
	c->state = CL_LOGIN;
	c->since_ms = uv_now(&w->loop);
	list_append(&w->login_clients, &c->node);
	w->n_clients++;
	int rc = conn_accept(&c->conn, listener);
	if (rc < 0) {
		log_debug("client", c->id, "accept failed: %s", uv_strerror(rc));
		client_set_state(c, CL_CLOSING);
		conn_close(&c->conn);
		return;
	}
	if (log_enabled(LOG_LVL_DEBUG)) {
		char peer[80];
		conn_peer_name(&c->conn, peer, sizeof(peer));
		log_debug("client", c->id, "accepted from %s", peer);
	}
	if (client_refuse_if_over_limit(c))
		return;
	conn_want_read(&c->conn, true);
}

/* ---- startup packet ---- */

static void client_handle_cancel(struct client *c, const struct frame *f)
{
	struct reader r;
	uint32_t pid, key;
	reader_init(&r, f->body, f->len);
	if (!reader_u32(&r, &pid) || !reader_u32(&r, &key) || !reader_end(&r)) {
		client_disconnect(c, NULL, "malformed cancel request");
		return;
	}
	struct client *target = cancel_map_find(&c->w->cancels, pid, key);
	if (target && target->server && target->server->state == SV_ACTIVE) {
		struct server *s = target->server;
		log_debug("client", target->id, "forwarding cancel to backend pid %u", s->be_pid);
		cancel_send(c->w, (const struct sockaddr *)&s->addr, s->be_pid, s->be_key);
	} else {
		log_debug("client", c->id, "cancel request for unknown or idle session ignored");
	}
	client_set_state(c, CL_CANCEL);
	client_disconnect(c, NULL, "cancel request handled");
}

/* Keeps the startup parameters pgrelay forwards to backends; returns false with a message. */
static bool client_parse_startup_params(struct client *c, const struct frame *f, char *err,
					size_t errcap)
{
	c->startup = malloc(f->len ? f->len : 1);
	if (!c->startup) {
		snprintf(err, errcap, "out of memory");
		return false;
	}
	memcpy(c->startup, f->body, f->len);
	c->startup_len = f->len;
	c->application_name = "";
	struct reader r;
	reader_init(&r, c->startup, c->startup_len);
	for (;;) {
		const char *name, *value;
		size_t nlen;
		if (!reader_cstr(&r, &name, &nlen)) {
			snprintf(err, errcap, "invalid startup packet layout: expected terminator");
			return false;
		}
		if (nlen == 0)
			break;
		if (!reader_cstr(&r, &value, NULL)) {
			snprintf(err, errcap,
				 "invalid startup packet layout: missing value for \"%.60s\"",
				 name);
			return false;
		}
		if (strcmp(name, "user") == 0)
			c->user = value;
		else if (strcmp(name, "database") == 0)
			c->database = value;
		else if (strcmp(name, "application_name") == 0)
			c->application_name = value;
		else if (strcmp(name, "replication") == 0 && strcmp(value, "false") != 0 &&
			 strcmp(value, "0") != 0 && strcmp(value, "off") != 0) {
			snprintf(err, errcap,
				 "replication connections are not supported by pgrelay");
			return false;
		}
	}
	if (!reader_end(&r)) {
		snprintf(err, errcap,
			 "invalid startup packet layout: expected terminator as last byte");
		return false;
	}
	if (!c->user || !c->user[0]) {
		snprintf(err, errcap, "no PostgreSQL user name specified in startup packet");
		return false;
	}
	if (!c->database || !c->database[0])
		c->database = c->user;
	return true;
}

/*
 * The pool key: database, user, then every other startup parameter except application_name
 * (which does not change what a backend connection is) in the order the client sent them.
 */
static bool client_find_pool(struct client *c)
{
	char key[2048];
	size_t n = (size_t)snprintf(key, sizeof(key), "%s%c%s%c", c->database, 0, c->user, 0);
	struct reader r;
	reader_init(&r, c->startup, c->startup_len);
	const char *name, *value;
	size_t nlen, vlen;
	while (reader_cstr(&r, &name, &nlen) && nlen && reader_cstr(&r, &value, &vlen)) {
		if (!strcmp(name, "user") || !strcmp(name, "database") ||
		    !strcmp(name, "application_name"))
			continue;
		if (n + nlen + vlen + 2 >= sizeof(key))
			return false;
		memcpy(key + n, name, nlen + 1);
		n += nlen + 1;
		memcpy(key + n, value, vlen + 1);
		n += vlen + 1;
	}
	c->pool = pool_get(c->w, key, n);
	return c->pool != NULL;
}

static void client_handle_startup(struct client *c, const struct frame *f)
{
	uint32_t major = f->code >> 16, minor = f->code & 0xffff;
	if (major != 3) {
		char msg[128];
		snprintf(msg, sizeof(msg),
			 "unsupported frontend protocol %u.%u: server supports 3.0 to 3.0", major,
			 minor);
		client_disconnect(c, "0A000", "%s", msg);
		return;
	}
	char err[160];
	if (!client_parse_startup_params(c, f, err, sizeof(err))) {
		bool unsupported = strstr(err, "replication") != NULL;
		bool nouser = strstr(err, "user name") != NULL;
		client_disconnect(c, unsupported ? "0A000" : nouser ? "28000" : "08P01", "%s", err);
		return;
	}
	if (!client_find_pool(c)) {
		client_disconnect(c, "53200", "out of memory or startup parameters too long");
		return;
	}
	if (minor > 0) {
		/* We speak 3.0: tell the client, as PostgreSQL does, before authentication. */
		uint8_t store[64];
		struct builder b;
		builder_init(&b, store, sizeof(store));
		builder_start(&b, PqMsg_NegotiateProtocolVersion);
		builder_put_u32(&b, 0x00030000u);
		builder_put_u32(&b, 0);
		builder_finish(&b);
		bool ok = builder_ok(&b) && client_send(c, b.data, b.len);
		builder_free(&b);
		if (!ok)
			return;
	}
	log_debug("client", c->id, "login user=%s database=%s application_name=%s", c->user,
		  c->database, c->application_name);
	client_auth_start(c);
}

/* Handles one complete length-first packet in the startup step. */
static void client_startup_packet(struct client *c, const struct frame *f)
{
	struct iobuf *b = c->conn.rbuf;
	switch (f->code) {
	case NEGOTIATE_SSL_CODE:
	case NEGOTIATE_GSS_CODE: {
		bool ssl = f->code == NEGOTIATE_SSL_CODE;
		if (f->len != 0 || (ssl ? c->ssl_answered : c->gss_answered)) {
			client_disconnect(c, "08P01", "invalid %s negotiation packet",
					  ssl ? "SSL" : "GSSAPI");
			return;
		}
		/* Bytes sent before our answer would be read as if they came over TLS/GSS. */
		if (b->recv > b->parsed) {
			client_disconnect(c, "08P01", "received unencrypted data after %s request",
					  ssl ? "SSL" : "GSSAPI encryption");
			return;
		}
		if (ssl)
			c->ssl_answered = true;
		else
			c->gss_answered = true;
		if (!client_send(c, "N", 1))
			return;
		return;
	}
	case CANCEL_REQUEST_CODE:
		client_handle_cancel(c, f);
		return;
	default:
		client_handle_startup(c, f);
		return;
	}
}

/* ---- login phase: whole packets only ---- */

static void client_login_scan(struct client *c)
{
	while (c->state == CL_LOGIN && c->conn.rbuf && !iobuf_empty(c->conn.rbuf)) {
		struct iobuf *b = c->conn.rbuf;
		const uint8_t *p = b->data + b->parsed;
		uint32_t avail = b->recv - b->parsed;
		struct frame f;
		if (c->login == CLS_WAIT_SERVER) {
			/* A pipelining client: keep its bytes until the backend is ready. */
			conn_want_read(&c->conn, false);
			return;
		}
		enum frame_status st;
		if (c->login == CLS_STARTUP) {
			st = frame_parse_startup(p, avail, &f);
			if (st == FRAME_BAD) {
				client_disconnect(c, "08P01", "invalid length of startup packet");
				return;
			}
		} else {
			st = frame_parse(p, avail, FRAME_FROM_CLIENT, CLIENT_AUTH_MSG_MAX, &f);
			if (st == FRAME_BAD ||
			    (st == FRAME_OK && f.type != PqMsg_PasswordMessage)) {
				client_disconnect(c, "08P01",
						  "expected password response, got message type %d",
						  p[0]);
				return;
			}
			if (st == FRAME_OK && f.body_avail < f.len)
				st = FRAME_NEED_MORE;
		}
		if (st == FRAME_NEED_MORE)
			return;
		/*
		 * Consumed before the handler runs, so that a login finished inside it sees only the
		 * bytes pipelined behind this packet. The bytes stay in place until the read callback
		 * tidies the buffer, after the handler returned; handlers copy what they keep.
		 */
		b->parsed += f.total;
		b->done = b->parsed;
		if (c->login == CLS_STARTUP)
			client_startup_packet(c, &f);
		else
			client_auth_message(c, f.type, f.body, f.len);
	}
}

/* ---- work phase ---- */

static enum relay_verdict client_relay_message(void *owner, const struct frame *f)
{
	struct client *c = owner;
	switch (f->type) {
	case PqMsg_Terminate:
		/* Everything before it must reach the server first (fire-and-forget writes). */
		c->terminating = true;
		return RELAY_STOP;
	case PqMsg_PasswordMessage:
		client_disconnect(c, "08P01", "unexpected password message after authentication");
		return RELAY_GONE;
	default:
		return RELAY_SEND;
	}
}

static const struct relay_ops client_relay_ops = {
	.side = FRAME_FROM_CLIENT,
	.needs_whole = NULL,
	.on_message = client_relay_message,
};

static void client_report_bad_message(struct client *c)
{
	struct iobuf *b = c->conn.rbuf;
	const uint8_t *p = b->data + b->parsed;
	struct frame f;
	if (frame_parse(p, b->recv - b->parsed, FRAME_FROM_CLIENT, 0x7fffffffu, &f) == FRAME_BAD)
		client_disconnect(c, "08P01", "invalid frontend message type %d", p[0]);
	else
		client_disconnect(c, "08P01", "invalid message length %u for message type \"%c\"",
				  f.len + 4, p[0]);
}

static void client_relay(struct client *c)
{
	if (!c->conn.rbuf || iobuf_empty(c->conn.rbuf))
		return;
	if (!c->server) {
		/* First message of a session whose backend is opened lazily. */
		conn_want_read(&c->conn, false);
		if (!server_connect_for(c, c->w->primary_node))
			client_disconnect(c, "08006", "could not connect to server");
		return;
	}
	if (c->server->state != SV_ACTIVE) {
		conn_want_read(&c->conn, false);
		return;
	}
	enum relay_result r = relay_scan(&c->conn, &c->server->conn, c->w->cfg->max_message_size,
					 &client_relay_ops, c);
	switch (r) {
	case RELAY_STOPPED:
		if (c->terminating && !conn_forward_busy(&c->conn))
			client_disconnect(c, NULL, "client sent Terminate");
		return;
	case RELAY_DRAINED:
	case RELAY_WRITING:
	case RELAY_CLOSED:
		return;
	case RELAY_BAD_MESSAGE:
		client_report_bad_message(c);
		return;
	case RELAY_WRITE_FAILED:
		client_on_server_lost(c, "08006", "could not send data to server");
		return;
	}
}

static void client_on_data(struct conn *conn)
{
	struct client *c = conn->owner;
	switch (c->state) {
	case CL_LOGIN:
		client_login_scan(c);
		return;
	case CL_ACTIVE:
		client_relay(c);
		return;
	case CL_CLOSING:
	case CL_CANCEL:
		return;
	}
}

static void client_on_event(struct conn *conn, enum conn_event ev, int status)
{
	struct client *c = conn->owner;
	switch (ev) {
	case CONN_EV_EOF:
		client_disconnect(c, NULL,
				  c->txn_status == TXN_IDLE
					  ? "client closed the connection"
					  : "client closed the connection inside a transaction");
		return;
	case CONN_EV_READ_ERROR:
	case CONN_EV_WRITE_ERROR:
		client_disconnect(c, NULL, "client connection error: %s", uv_strerror(status));
		return;
	case CONN_EV_FORWARD_DONE:
		if (c->state == CL_ACTIVE)
			client_relay(c);
		return;
	case CONN_EV_FORWARD_FAILED:
		client_on_server_lost(c, "08006", "could not send data to server");
		return;
	case CONN_EV_CONNECTED:
	case CONN_EV_CONNECT_FAILED:
		return;
	}
}

void client_on_server_ready(struct client *c)
{
	if (c->state == CL_LOGIN && c->login == CLS_WAIT_SERVER) {
		client_send_welcome(c);
		if (c->state != CL_ACTIVE)
			return;
	}
	if (c->state != CL_ACTIVE)
		return;
	conn_want_read(&c->conn, true);
	client_relay(c);
}

void client_on_server_lost(struct client *c, const char *sqlstate, const char *reason)
{
	client_disconnect(c, sqlstate, "%s", reason);
}
