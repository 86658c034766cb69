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
#include <unistd.h>

#include "pool/pool.h"
#include "net/relay.h"
#include "pool/server.h"
#include "pool/worker.h"
#include "protocol/builder.h"
#include "protocol/pqmsg.h"
#include "protocol/reader.h"
#include "protocol/startup.h"
#include "net/tls_ctx.h"
#include "util/log.h"

#define CLIENT_AUTH_MSG_MAX 8192 /* bound on a password / SASL message during login */

static void client_on_data(struct conn *conn);
static void client_on_event(struct conn *conn, enum conn_event ev, int status);
static void client_on_closed(struct conn *conn);
static void client_relay(struct client *c);
static void client_relay_result(struct client *c, enum relay_result r);

static const struct conn_ops client_conn_ops = {
	.on_data = client_on_data,
	.on_event = client_on_event,
	.on_closed = client_on_closed,
};

static struct list_node *client_list_for(struct client *c, enum client_state st)
{
	struct worker *w = c->w;
	switch (st) {
	case CL_WAITING:
		return c->want_node >= 0 ? &c->pool->nodes[c->want_node].waiting_clients
					 : &w->nodeless_clients;
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
	if (c->state == CL_WAITING) {
		uint64_t waited_ms = uv_now(&c->w->loop) - c->since_ms;
		stats_wait_done(&c->w->stats, &c->pool->stats, waited_ms * 1000u);
		c->pool->n_waiting--;
		if (c->want_node >= 0)
			c->pool->nodes[c->want_node].n_waiting--;
		else
			c->w->n_nodeless--;
	}
	list_del(&c->node);
	c->state = st;
	c->since_ms = uv_now(&c->w->loop);
	list_append(client_list_for(c, st), &c->node);
	if (st == CL_WAITING) {
		c->pool->n_waiting++;
		if (c->want_node >= 0)
			c->pool->nodes[c->want_node].n_waiting++;
		else
			c->w->n_nodeless++;
	}
}

static const char *const client_hold_names[] = {
	[HOLD_NONE] = "none",
	[HOLD_BOUNDARY] = "boundary",
	[HOLD_SWITCH] = "switch",
	[HOLD_ADMIN_UNIT] = "admin unit",
	[HOLD_TERMINATING] = "terminating",
};

/* The moves client_set_hold() allows: from a hold back to relaying, or from relaying to any hold,
 * and to HOLD_TERMINATING from anywhere; a terminating session never relays again. */
static bool client_hold_move_ok(enum client_hold from, enum client_hold to)
{
	if (from == HOLD_TERMINATING)
		return to == HOLD_TERMINATING;
	if (to == HOLD_TERMINATING || to == HOLD_NONE || from == to)
		return true;
	/* A unit waiting for a boundary is decided again when it is presented again. */
	return from == HOLD_NONE || from == HOLD_BOUNDARY;
}

bool client_set_hold(struct client *c, enum client_hold h)
{
	if (!client_hold_move_ok(c->hold, h)) {
		log_error("client", c->id, "internal error: relay hold %s -> %s refused",
			  client_hold_names[c->hold], client_hold_names[h]);
		client_disconnect(c, "XX000", "internal error in the session relay (hold %s -> %s)",
				  client_hold_names[c->hold], client_hold_names[h]);
		return false;
	}
	c->hold = h;
	return true;
}

/* An idle instance is mostly struct client (doc/performance.md, "Memory at rest"): a member
 * added here costs 10,000 sessions its size, so growing it is a decision, not an accident. */
_Static_assert(sizeof(void *) != 8 || sizeof(struct client) <= 568,
	       "struct client grew past 568 bytes (a 576-byte malloc chunk)");

struct client_extras *client_extras(struct client *c)
{
	if (!c->ext)
		c->ext = calloc(1, sizeof(*c->ext));
	return c->ext;
}

static void client_free_extras(struct client *c)
{
	struct client_extras *x = c->ext;
	if (!x)
		return;
	free(x->txn_log);
	free(x->retry_msg);
	free(x->unnamed_msg);
	for (int i = 0; x->set_snap && i < TP_COUNT; i++)
		free(x->set_snap[i]);
	free(x->set_snap);
	free(x->console_db);
	free(x);
	c->ext = NULL;
}

bool client_param_put(struct client *c, int i, char *value)
{
	if (!c->param) {
		if (!value)
			return true; /* already the welcome value */
		c->param = calloc(TP_COUNT, sizeof(*c->param));
		if (!c->param) {
			free(value);
			return false;
		}
	}
	free(c->param[i]);
	c->param[i] = value;
	return true;
}

const char *client_param(const struct client *c, int i)
{
	if (c->param && c->param[i])
		return c->param[i];
	if (i == TP_APPLICATION_NAME)
		return c->application_name;
	if (i >= TP_FIRST_UNREPORTED)
		return NULL;			     /* the server default */
	return c->pool ? c->pool->tracked[i] : NULL; /* O(1): this runs at every hand-over */
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
	/* A message forwarded only in part leaves the backend mid-message: never reuse it. */
	bool partial = c->conn.pkt_remaining != 0 && !c->conn.pkt_skip;
	while (c->n_links > 0) {
		struct server *s = c->links[c->n_links - 1];
		server_client_left(s, partial && s == c->server);
	}
	if (c->cancel_pid) {
		cancel_map_remove(&c->w->cancels, c);
		c->cancel_pid = 0;
	}
	client_drop_scram(c);
	client_set_state(c, CL_CLOSING);
	conn_close_after_flush(&c->conn);
}

static void client_on_closed(struct conn *conn)
{
	struct client *c = conn->owner;
	struct worker *w = c->w;
	list_del(&c->node);
	server_forget_client(c);
	if (c->cancel_pid)
		cancel_map_remove(&w->cancels, c);
	if (c->console_wait != CW_NONE)
		w->n_console_waits--;
	if (c->lg && c->lg->cancel_waiting)
		cancel_forget_waiter(w, c);
	client_free_login_state(c);
	w->stats.bytes_in += c->conn.rx_bytes;
	w->stats.bytes_out += c->conn.tx_bytes;
	if (c->pool) {
		c->pool->stats.bytes_in += c->conn.rx_bytes;
		c->pool->stats.bytes_out += c->conn.tx_bytes;
		c->pool->n_clients--;
		pool_reap_if_unused(w, c->pool);
	}
	stmt_map_free(&c->stmts);
	router_session_release(&c->route);
	for (int i = 0; c->param && i < TP_COUNT; i++)
		free(c->param[i]);
	free(c->param);
	client_free_extras(c);
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

void client_accept(struct worker *w, int fd, const struct sockaddr_storage *peer, int role)
{
	struct client *c = calloc(1, sizeof(*c));
	if (c)
		c->lg = calloc(1, sizeof(*c->lg));
	if (!c || !c->lg) {
		free(c);
		close(fd);
		log_error("client", 0, "out of memory accepting a client");
		return;
	}
	if (conn_init(&c->conn, &w->loop, &w->bufs, &client_conn_ops, c) < 0) {
		free(c->lg);
		free(c);
		close(fd);
		return;
	}
	c->lg->peer = *peer;
	c->w = w;
	c->id = ++w->next_conn_id;
	c->txn_status = TXN_IDLE;
	c->want_node = -1;
	c->unit_node = -1;
	c->route.listener = (uint8_t)role;
	list_init(&c->node);
	c->state = CL_LOGIN;
	c->since_ms = c->connect_ms = uv_now(&w->loop);
	list_append(&w->login_clients, &c->node);
	w->n_clients++;
	int rc = conn_accept(&c->conn, fd);
	if (rc < 0) {
		log_debug("client", c->id, "accept failed: %s", uv_strerror(rc));
		client_set_state(c, CL_CLOSING);
		conn_close(&c->conn);
		return;
	}
	if (log_enabled(LOG_LVL_DEBUG)) {
		char name[80];
		conn_peer_name(&c->conn, name, sizeof(name));
		log_debug("client", c->id, "accepted from %s", name);
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
	client_set_state(c, CL_CANCEL);
	/* Checks the target and its backend, now and once sent. */
	if (cancel_forward(c->w, pid, key, c)) {
		c->lg->cancel_waiting = true; /* closed by the cancel when it is over */
		conn_want_read(&c->conn, false);
		return;
	}
	client_disconnect(c, NULL, "cancel request handled");
}

/* Keeps the startup parameters pgrelay forwards to backends (an owned copy of the body). */
static enum startup_status client_parse_startup_params(struct client *c, const struct frame *f,
						       char *err, size_t errcap)
{
	c->startup = malloc(f->len ? f->len : 1);
	if (!c->startup) {
		snprintf(err, errcap, "out of memory");
		return STARTUP_BAD_LAYOUT;
	}
	memcpy(c->startup, f->body, f->len);
	c->lg->startup_len = f->len;
	struct startup_params sp;
	enum startup_status st = startup_parse(c->startup, f->len, &sp, err, errcap);
	c->user = sp.user;
	c->database = sp.database;
	c->application_name = sp.application_name;
	return st;
}

/* The pool key of c's startup packet (database, user, options); false if it does not fit. */
static bool client_pool_key(const struct client *c, char *key, size_t cap, size_t *n)
{
	struct startup_params sp = { c->user, c->database, c->application_name };
	return startup_pool_key(c->startup, c->lg->startup_len, &sp, key, cap, n);
}

void client_keep_only_app_name(struct client *c)
{
	if (!c->pool || !c->pool->startup)
		return; /* the pool has no copy yet (out of memory): keep ours */
	/* Most clients of a pool are the same application: they share the pool's copy (valid while
	 * attached, like user and database). Others get their own, an empty name none. */
	const char *shared = c->pool->app_name;
	bool share = shared && strcmp(shared, c->application_name) == 0;
	uint8_t *name = NULL;
	if (!share && c->application_name[0] != '\0') {
		size_t n = strlen(c->application_name) + 1;
		name = malloc(n);
		if (!name)
			return; /* keeps the whole packet, which works as well */
		memcpy(name, c->application_name, n);
	}
	c->user = c->pool->user;
	c->database = c->pool->database;
	c->application_name = share ? shared : name ? (const char *)name : "";
	free(c->startup);
	c->startup = name;
}

bool client_attach_pool(struct client *c)
{
	char key[CLIENT_POOL_KEY_MAX];
	size_t n;
	if (!client_pool_key(c, key, sizeof(key), &n) || !(c->pool = pool_get(c->w, key, n))) {
		client_disconnect(c, "53200", "out of memory or startup parameters too long");
		return false;
	}
	c->pool->n_clients++;
	c->pool->unused_since_ms = 0;
	router_session_init(&c->w->router, &c->route, (enum route_force)c->route.listener,
			    c->database, c->user, c->application_name);
	worker_want_catalog(c->w, c->route.db);
	return true;
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
	static const char *const sqlstates[] = {
		[STARTUP_OK] = "00000",
		[STARTUP_BAD_LAYOUT] = "08P01",
		[STARTUP_NO_USER] = "28000",
		[STARTUP_REPLICATION] = "0A000",
	};
	enum startup_status st = client_parse_startup_params(c, f, err, sizeof(err));
	if (st != STARTUP_OK) {
		client_disconnect(c, sqlstates[st], "%s", err);
		return;
	}
	/* Checked now, made after authentication: nothing a client sends before it has proved who
	 * it is may create lasting state (pools, router slots, catalog loads). */
	char key[CLIENT_POOL_KEY_MAX];
	size_t key_len;
	if (!client_pool_key(c, key, sizeof(key), &key_len)) {
		client_disconnect(c, "53200", "startup parameters too long");
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
	if (c->w->cfg->tls.client_mode >= TLS_REQUIRE && !conn_is_tls(&c->conn)) {
		client_disconnect(c, "28000", "TLS is required (tls.client_mode is %s)",
				  tls_mode_names[c->w->cfg->tls.client_mode]);
		return;
	}
	if (log_enabled(LOG_LVL_DEBUG)) {
		char user[LOG_UNTRUSTED_BUF], db[LOG_UNTRUSTED_BUF], app[LOG_UNTRUSTED_BUF];
		log_debug("client", c->id, "login user=%s database=%s application_name=%s",
			  log_untrusted(c->user, user, sizeof(user)),
			  log_untrusted(c->database, db, sizeof(db)),
			  log_untrusted(c->application_name, app, sizeof(app)));
	}
	client_auth_start(c);
}

/* The context clients may use TLS with, NULL when TLS is off towards clients. */
static SSL_CTX *client_tls_ctx(const struct client *c)
{
	const struct config *cfg = c->w->cfg;
	return cfg->tls.client_mode != TLS_DISABLE ? cfg->tls_clients.ctx : NULL;
}

static void client_start_tls(struct client *c, SSL_CTX *ctx)
{
	int rc = conn_start_tls(&c->conn, ctx, true, NULL, false);
	if (rc < 0)
		client_disconnect(c, NULL, "could not start TLS: %s", uv_strerror(rc));
}

/* SSLRequest: 'S' and a handshake when TLS is configured, else 'N' (plaintext goes on). */
static void client_answer_ssl_request(struct client *c)
{
	SSL_CTX *ctx = client_tls_ctx(c);
	if (!ctx) {
		if (!client_send(c, "N", 1))
			return; /* the client was closed */
		return;
	}
	if (client_send(c, "S", 1))
		client_start_tls(c, ctx);
}

/*
 * PostgreSQL 17's direct TLS: the first byte is a TLS handshake record instead of a length.
 * The bytes received so far are the start of the ClientHello; ALPN "postgresql" is checked once
 * the handshake is done.
 */
static void client_start_direct_tls(struct client *c)
{
	SSL_CTX *ctx = client_tls_ctx(c);
	if (!ctx) {
		log_info("client", c->id,
			 "closing: direct TLS connection but TLS is not configured");
		client_disconnect(c, NULL, "direct TLS without TLS configured");
		return;
	}
	c->ssl_answered = true;
	c->tls_direct = true;
	client_start_tls(c, ctx);
}

static void client_on_tls_ready(struct client *c)
{
	SSL *ssl = conn_ssl(&c->conn);
	if (c->tls_direct && !tls_alpn_agreed(ssl)) {
		log_info("client", c->id,
			 "closing: direct TLS connection without ALPN \"postgresql\"");
		client_disconnect(c, NULL, "direct TLS without ALPN");
		return;
	}
	log_debug("client", c->id, "TLS established (%s)", tls_version_name(ssl));
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
		if (!ssl) {
			c->gss_answered = true;
			if (!client_send(c, "N", 1))
				return; /* the client was closed */
			return;
		}
		c->ssl_answered = true;
		client_answer_ssl_request(c);
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
		if (c->login == CLS_STARTUP && !c->ssl_answered && p[0] == TLS_RECORD_HANDSHAKE) {
			client_start_direct_tls(c);
			return;
		}
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
		 * Consumed before the handler runs, so that a login finished inside it sees only
		 * the bytes pipelined behind this packet. The bytes stay in place until the read
		 * callback tidies the buffer, after the handler returned; handlers copy what they
		 * keep.
		 */
		iobuf_consume(b, f.total);
		if (c->login == CLS_STARTUP)
			client_startup_packet(c, &f);
		else
			client_auth_message(c, f.type, f.body, f.len);
	}
}

/* ---- work phase ---- */

/* Body bytes a handler must see: names of statements, and the text of queries for pinning. */
#define CLIENT_PEEK_MAX 4096
/* Query text classified for routing; a longer statement goes to the primary. */
#define CLIENT_ROUTE_PEEK_MAX 16384

/* Statements are followed across backend connections: pooled, or split over nodes. */
bool client_tracks_statements(const struct client *c)
{
	return c->w->cfg->pool.mode != POOL_MODE_SESSION || c->w->n_nodes > 1;
}

static uint32_t client_needs_bytes(const void *owner, uint8_t type, uint32_t len)
{
	const struct client *c = owner;
	if (type == PqMsg_Query)
		return len < CLIENT_ROUTE_PEEK_MAX ? len : CLIENT_ROUTE_PEEK_MAX;
	if (!client_tracks_statements(c))
		return 0;
	switch (type) {
	case PqMsg_Parse:
		/* Whole when it can be kept for replay; else enough to see the name and query
		 * start. */
		if (len <= STMT_PARSE_MAX)
			return len;
		return CLIENT_PEEK_MAX;
	case PqMsg_Bind:
		return len < CLIENT_PEEK_MAX ? len : CLIENT_PEEK_MAX;
	case PqMsg_Describe:
	case PqMsg_Close:
		return len < CLIENT_PEEK_MAX ? len : CLIENT_PEEK_MAX;
	default:
		return 0;
	}
}

/*
 * Sends what was scanned before the current message, so that an injected message lands right
 * before it. RELAY_STOP if a forward is still in flight (the message is handled again once it
 * completes), RELAY_SEND to go on, RELAY_GONE on failure.
 */
static enum relay_verdict client_flush_before_inject(struct client *c)
{
	int rc = conn_forward(&c->conn, &c->server->conn);
	if (rc == 1)
		return RELAY_STOP;
	if (rc < 0) {
		client_on_server_lost(c, "08006", "could not send data to server");
		return RELAY_GONE;
	}
	return RELAY_SEND;
}

/*
 * Before SQL text reaches c->server: a DEALLOCATE of a protocol-level statement the client has
 * (SQL and protocol statements share one namespace; psycopg deallocates its own this way) must
 * find it on this backend, which may not hold it (prepared elsewhere, or not yet): it is made to
 * exist there first, so that PostgreSQL answers as it would have.
 */
static enum relay_verdict client_before_sql(struct client *c, const struct route_facts *f)
{
	if (!(f->flags & CLASSIFY_DEALLOCATE) || (f->flags & CLASSIFY_MULTI) || !f->object[0] ||
	    !stmt_map_find(&c->stmts, f->object))
		return RELAY_SEND;
	return client_use_statement(c, f->object);
}

/*
 * The unnamed statement. Drivers Parse, Bind and Execute it in one unit, where it never outlives
 * its backend. A unit that prepares it without binding it (psql's \gdesc, describe-only flows)
 * means the next unit uses it, possibly on another pooled backend: only then is a copy of its
 * Parse kept (bounded by STMT_PARSE_MAX), and replayed, hidden, on a backend whose unnamed
 * statement is not this client's (client_use_statement). The common Parse/Bind unit copies
 * nothing; it only records which client's unnamed statement the backend holds.
 */
void client_forget_unnamed(struct client *c)
{
	if (!c->ext)
		return;
	free(c->ext->unnamed_msg);
	c->ext->unnamed_msg = NULL;
	c->ext->unnamed_len = 0;
}

static bool client_unit_binds_unnamed(const struct client *c)
{
	/* The usual unit: its next message binds the unnamed portal to the unnamed statement. */
	const struct iobuf *b = c->conn.rbuf;
	uint32_t next = b->parsed + frame_get_u32(b->data + b->parsed + 1) + 1;
	if (next + FRAME_HEADER_LEN + 2 <= b->recv && b->data[next] == PqMsg_Bind &&
	    b->data[next + FRAME_HEADER_LEN] == 0 && b->data[next + FRAME_HEADER_LEN + 1] == 0 &&
	    frame_get_u32(b->data + next + 1) >= 6)
		return true;
	struct unit_walk w;
	struct frame f;
	client_unit_walk_start(c, &w, false);
	if (!client_unit_next(c, &w, &f)) /* the Parse itself */
		return false;
	while (client_unit_next(c, &w, &f)) {
		struct reader r;
		const char *portal, *name;
		reader_init(&r, f.body, f.len);
		if (f.type == PqMsg_Parse || f.type == PqMsg_Query)
			return false;
		if (f.type == PqMsg_Bind && reader_cstr(&r, &portal, NULL) &&
		    reader_cstr(&r, &name, NULL) && !name[0])
			return true;
	}
	return false;
}

static void client_note_unnamed_parse(struct client *c, const struct frame *f)
{
	c->server->unnamed_of = c->id;
	client_forget_unnamed(c);
	if (f->body_avail < f->len || f->total > STMT_PARSE_MAX || client_unit_binds_unnamed(c))
		return;
	/* Out of memory, it is not replayed: PostgreSQL's own error if it is used elsewhere. */
	struct client_extras *x = client_extras(c);
	if (!x || !(x->unnamed_msg = malloc(f->total)))
		return;
	memcpy(x->unnamed_msg, f->body - FRAME_HEADER_LEN, f->total);
	x->unnamed_len = f->total;
}

/* Bind/Describe of the unnamed statement: replays the kept Parse where it is not this client's. */
static enum relay_verdict client_use_unnamed(struct client *c)
{
	const struct client_extras *x = c->ext;
	if (!x || !x->unnamed_msg || c->server->unnamed_of == c->id)
		return RELAY_SEND;
	enum relay_verdict v = client_flush_before_inject(c);
	if (v != RELAY_SEND)
		return v;
	if (!req_push(&c->server->reqs, REQ_PARSE, true) ||
	    conn_send(&c->server->conn, x->unnamed_msg, x->unnamed_len) != 0) {
		client_on_server_lost(c, "08006", "could not prepare a statement on the server");
		return RELAY_GONE;
	}
	c->server->unnamed_of = c->id;
	log_noise("client", c->id, "unnamed statement prepared again on backend %d",
		  c->server->node_id);
	return RELAY_SEND;
}

/* Parse of a named statement: remember it, and make room for it on the server. */
static enum relay_verdict client_on_parse(struct client *c, const struct frame *f)
{
	struct reader r;
	const char *name, *query;
	size_t qlen;
	reader_init(&r, f->body, f->body_avail);
	if (!reader_cstr(&r, &name, NULL))
		return RELAY_SEND; /* malformed: PostgreSQL will say so */
	const char *rest = (const char *)r.p;
	if (reader_cstr(&r, &query, &qlen)) {
		struct route_facts facts;
		client_classify_text(c, query, qlen + 1, true, &facts);
		enum relay_verdict v = client_before_sql(c, &facts);
		if (v != RELAY_SEND)
			return v;
		client_apply_sql_effects(c, query, qlen, &facts);
	}
	if (!name[0]) {
		client_note_unnamed_parse(c, f);
		return RELAY_SEND;
	}
	if (f->body_avail < f->len) {
		client_pin(c, "prepared statement too large to replay");
		return RELAY_SEND;
	}
	if (stmt_map_find(&c->stmts, name)) {
		/* PostgreSQL refuses a name still prepared (42P05): the client's statement is made
		 * to exist on this backend, which then says so itself; nothing is recorded. */
		return client_use_statement(c, name);
	}
	enum relay_verdict v = RELAY_SEND;
	/* Anything injected (Close of the old one, or of the least recently used) goes first. */
	if (stmt_map_find(&c->server->stmts, name) || c->server->stmts.count >= STMT_SERVER_MAX ||
	    c->server->stmts_unsure) {
		v = client_flush_before_inject(c);
		if (v != RELAY_SEND)
			return v;
	}
	uint64_t h =
		stmt_hash((const uint8_t *)rest, f->len - (size_t)(rest - (const char *)f->body));
	bool ok = server_note_parse(c->server, name, h);
	if (ok && stmt_map_has_room(&c->stmts, name, f->total))
		ok = stmt_map_put(&c->stmts, name, h, f->body - FRAME_HEADER_LEN, f->total,
				  c->server->stmt_tick);
	else if (ok)
		client_pin(c, "too many prepared statements to track");
	if (!ok) {
		client_disconnect(c, "53200", "out of memory tracking prepared statements");
		return RELAY_GONE;
	}
	return RELAY_SEND;
}

/*
 * Bind or Describe of statement name: make sure it exists on this server as the client made it,
 * or, if the client has no such statement, that the server does not answer with someone else's.
 */
enum relay_verdict client_use_statement(struct client *c, const char *name)
{
	if (!name[0])
		return client_use_unnamed(c);
	struct stmt *mine = stmt_map_find(&c->stmts, name);
	struct stmt *have = stmt_map_find(&c->server->stmts, name);
	if (!mine && !have && !c->server->stmts_unsure)
		return RELAY_SEND;
	if (mine && have && have->hash == mine->hash) {
		have->used = ++c->server->stmt_tick;
		return RELAY_SEND;
	}
	enum relay_verdict v = client_flush_before_inject(c);
	if (v != RELAY_SEND)
		return v;
	bool ok = mine ? server_ensure_statement(c->server, c, name)
		       : server_inject_close(c->server, name);
	if (!ok) {
		client_on_server_lost(c, "08006", "could not prepare a statement on the server");
		return RELAY_GONE;
	}
	return RELAY_SEND;
}

/* Statement bookkeeping for transaction pooling, before the message is forwarded. */
static enum relay_verdict client_track_statements(struct client *c, const struct frame *f)
{
	struct reader r;
	const char *portal, *name;
	uint8_t target;
	reader_init(&r, f->body, f->body_avail);
	switch (f->type) {
	case PqMsg_Parse:
		return client_on_parse(c, f);
	case PqMsg_Bind:
		if (!reader_cstr(&r, &portal, NULL) || !reader_cstr(&r, &name, NULL))
			return RELAY_SEND;
		return client_use_statement(c, name);
	case PqMsg_Describe:
		if (!reader_u8(&r, &target) || !reader_cstr(&r, &name, NULL) || target != 'S')
			return RELAY_SEND;
		return client_use_statement(c, name);
	case PqMsg_Close:
		if (reader_u8(&r, &target) && reader_cstr(&r, &name, NULL) && target == 'S') {
			stmt_map_remove(&c->stmts, name);
			stmt_map_remove(&c->server->stmts, name);
		}
		return RELAY_SEND;
	case PqMsg_Query: {
		/* Classified once, by the router's decision or here; then its effects applied. */
		/* The routing decision's classification, found again in the worker's memo. */
		struct route_facts qf;
		client_classify_query(c, f, &qf);
		enum relay_verdict v = client_before_sql(c, &qf);
		if (v != RELAY_SEND)
			return v; /* presented again: classified again */
		/* A simple Query drops the unnamed statement, on this backend and for the session.
		 */
		c->server->unnamed_of = 0;
		client_forget_unnamed(c);
		client_apply_sql_effects(c, (const char *)f->body, client_query_text_len(f), &qf);
		return RELAY_SEND;
	}
	default:
		return RELAY_SEND;
	}
}

static enum relay_verdict client_relay_message(void *owner, const struct frame *f)
{
	struct client *c = owner;
	/* Text later read as C strings (admin, classifier, statement names) must end in its NUL. */
	if (f->body_avail == f->len &&
	    ((f->type == PqMsg_Query && !msg_body_is_cstr(f->body, f->len)) ||
	     (f->type == PqMsg_Parse && !msg_body_is_parse(f->body, f->len)))) {
		client_disconnect(c, "08P01", "invalid message format");
		return RELAY_GONE;
	}
	switch (f->type) {
	case PqMsg_Terminate:
		/* Everything before it must reach the server first (fire-and-forget writes). */
		return client_set_hold(c, HOLD_TERMINATING) ? RELAY_STOP : RELAY_GONE;
	case PqMsg_PasswordMessage:
		client_disconnect(c, "08P01", "unexpected password message after authentication");
		return RELAY_GONE;
	default:
		break;
	}
	enum relay_verdict v = client_route_message(c, f);
	if (v != RELAY_SEND)
		return v;
	if (client_tracks_statements(c)) {
		v = client_track_statements(c, f);
		if (v != RELAY_SEND)
			return v;
		if (f->type == PqMsg_Parse)
			client_route_note_parse(c, f);
	}
	log_noise("client", c->id, "-> %c len %u (server c%llu)", f->type, f->len,
		  (unsigned long long)c->server->id);
	c->server->ready =
		false; /* whatever it is, the backend's state now belongs to this client */
	uint8_t target = f->type == PqMsg_Describe && f->body_avail ? f->body[0] : 'P';
	int kind = req_kind_for_frontend(f->type, target);
	if (kind >= 0 && !req_push(&c->server->reqs, (enum req_kind)kind, false)) {
		client_disconnect(c, "54000", "too many pipelined requests");
		return RELAY_GONE;
	}
	return RELAY_SEND;
}

/* The backend a unit's first message took while it was read (client_route_message). */
static struct conn *client_late_dst(void *owner)
{
	struct client *c = owner;
	return c->server && c->server->state == SV_ACTIVE ? &c->server->conn : NULL;
}

static const struct relay_ops client_relay_ops = {
	.side = FRAME_FROM_CLIENT,
	.needs_bytes = client_needs_bytes,
	.on_message = client_relay_message,
	.late_dst = client_late_dst,
};

static void client_report_bad_message(struct client *c)
{
	struct iobuf *b = c->conn.rbuf;
	const uint8_t *p = b->data + b->parsed;
	struct frame f = { 0 };
	if (frame_parse(p, b->recv - b->parsed, FRAME_FROM_CLIENT, 0x7fffffffu, &f) == FRAME_BAD)
		client_disconnect(c, "08P01", "invalid frontend message type %d", p[0]);
	else
		client_disconnect(c, "08P01", "invalid message length %u for message type \"%c\"",
				  f.len + 4, p[0]);
}

/*
 * Gets c a backend connection to node: an idle one of its pool, a new one within the limits, or
 * a place in the pool's wait queue for that node. Fails fast when the node is known to be down.
 * True if c now has a logged-in server (the relay can go on at once).
 */
bool client_acquire_server(struct client *c, int node)
{
	struct worker *w = c->w;
	struct pool *p = c->pool;
	struct pool_node *pn = &p->nodes[node];
	if (uv_now(&w->loop) < w->node_down_until_ms[node]) {
		/* Its last connect was refused and the cluster manager checks it now: a session
		 * that holds nothing there waits for the verdict (bounded by query_wait_timeout).
		 */
		if (w->cluster && !c->pinned && !c->route.in_txn && client_tracks_statements(c) &&
		    c->n_links == 0) {
			if (c->route.read_node == node)
				c->route.read_node = -1;
			client_wait_for_node(c, -1);
			return false;
		}
		client_disconnect(c, "08006",
				  "backend %d is down: its last connection attempt failed", node);
		return false;
	}
	if (!list_empty(&pn->idle_servers) && !p->paused) {
		/* The common case in transaction mode: reading stays on (no epoll_ctl churn). The
		 * backend the session used last when it is idle (affinity), else the newest idle.
		 */
		struct server *s = c->last_server;
		if (!s || s->state != SV_IDLE || s->pool != p || s->node_id != node)
			s = list_entry(pn->idle_servers.prev, struct server, node);
		server_link(s, c);
		return c->state == CL_ACTIVE && c->server == s;
	}
	/* From here the client waits for a connection: its bytes stay put until then. */
	conn_want_read(&c->conn, false);
	if (p->paused) {
		log_debug("client", c->id, "waiting: database %s is paused", p->database);
		c->want_node = node;
		client_set_state(c, CL_WAITING);
		return false;
	}
	/* A connection finishing its reset is parked within a round trip: wait for it. */
	if (pn->n_resetting == 0 && pool_may_open(w, p, node)) {
		if (!server_connect(w, p, node, c))
			client_disconnect(c, "08006", "could not connect to server");
		return false;
	}
	if (pn->n_resetting == 0 && pn->n_servers < w->cfg->pool.pool_size)
		(void)pool_evict_idle_for(w, p, node);
	log_debug("client", c->id, "waiting for a connection to backend %d (%d in pool)", node,
		  pn->n_servers);
	c->want_node = node;
	client_set_state(c, CL_WAITING);
	return false;
}

void client_wait_for_node(struct client *c, int node)
{
	conn_want_read(&c->conn, false);
	/* Views come every few hundred ms: the wait is timed from its first start. Without the
	 * extras (out of memory) it counts from since_ms. */
	struct client_extras *x = client_extras(c);
	if (x && !x->node_wait_since_ms)
		x->node_wait_since_ms = uv_now(&c->w->loop);
	log_debug("client", c->id, "waiting for a %s node",
		  c->route.listener == ROUTE_FORCE_STANDBY ? "standby" : "primary");
	c->want_node = node;
	client_set_state(c, CL_WAITING);
}

int client_login_node(struct client *c)
{
	/* A session pinned to standbys should not hold a primary connection for its welcome. */
	if (c->route.listener == ROUTE_FORCE_STANDBY) {
		int node = router_read_node(&c->w->router, &c->route);
		if (node >= 0)
			return node;
	}
	return worker_login_node(c->w);
}

void client_kick(struct client *c)
{
	if (c->state == CL_ACTIVE)
		client_relay(c);
}

bool client_whole_frame_at(const struct client *c, uint32_t pos, struct frame *f)
{
	const struct iobuf *b = c->conn.rbuf;
	return pos <= b->recv &&
	       frame_parse(b->data + pos, b->recv - pos, FRAME_FROM_CLIENT,
			   c->w->cfg->max_message_size, f) == FRAME_OK &&
	       f->body_avail == f->len;
}

void client_resume_with_server(struct client *c)
{
	if (c->state == CL_WAITING)
		client_set_state(c, CL_ACTIVE);
	if (c->server && c->server->state == SV_ACTIVE) {
		conn_want_read(&c->conn, true);
		c->conn.ops->on_data(&c->conn);
	}
}

static void client_relay(struct client *c)
{
	if (c->kind != CK_SESSION) {
		client_console_relay(c);
		return;
	}
	if (c->hold == HOLD_TERMINATING) {
		client_relay_result(c, RELAY_STOPPED);
		return;
	}
	/* A unit that waited for a boundary is decided again, from scratch. */
	if (!client_set_hold(c, HOLD_NONE))
		return;
	if (!client_relay_retry(c))
		return;
	if (!c->conn.rbuf || iobuf_empty(c->conn.rbuf))
		return;
	while (!c->server && client_tracks_statements(c) && c->txn_status == TXN_IDLE &&
	       c->state == CL_ACTIVE && c->conn.rbuf && !iobuf_empty(c->conn.rbuf) &&
	       client_answer_locally(c))
		;
	if (c->state != CL_ACTIVE || !c->conn.rbuf || iobuf_empty(c->conn.rbuf))
		return;
	if (!c->server && c->conn.rbuf->data[c->conn.rbuf->parsed] == PqMsg_Terminate &&
	    c->conn.pkt_remaining == 0) {
		/* No backend held: nothing to flush, no reason to take one just to say goodbye. */
		client_disconnect(c, NULL, "client sent Terminate");
		return;
	}
	for (int round = 0; round < 64; round++) {
		if (c->server && c->server->state != SV_ACTIVE) {
			conn_want_read(&c->conn, false);
			return;
		}
		/* Without a link the first message takes one as it is read (client_late_dst). */
		enum relay_result r = relay_scan(&c->conn, c->server ? &c->server->conn : NULL,
						 c->w->cfg->max_message_size, &client_relay_ops, c);
		if (r == RELAY_STOPPED && c->hold == HOLD_ADMIN_UNIT) {
			if (!client_apply_admin_unit(c))
				return;
			continue;
		}
		if (r == RELAY_STOPPED && c->hold == HOLD_SWITCH) {
			if (!client_apply_switch(c))
				return; /* waiting for a connection, or gone */
			continue;	/* present the message again, now to its node */
		}
		client_relay_result(c, r);
		return;
	}
}

static void client_relay_result(struct client *c, enum relay_result r)
{
	switch (r) {
	case RELAY_STOPPED:
		if (c->hold == HOLD_TERMINATING && !conn_forward_busy(&c->conn))
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
		c->last_active_ms = uv_now(&c->w->loop);
		client_relay(c);
		return;
	case CL_WAITING:
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
	case CONN_EV_TLS_READY:
		client_on_tls_ready(c);
		return;
	case CONN_EV_TLS_ERROR: {
		char peer[80];
		conn_peer_name(&c->conn, peer, sizeof(peer));
		log_info("client", c->id, "closing: %s (from %s)", conn_tls_error(&c->conn), peer);
		client_disconnect(c, NULL, "TLS error");
		return;
	}
	case CONN_EV_CONNECTED:
	case CONN_EV_CONNECT_FAILED:
		return;
	}
}

void client_on_server_ready(struct client *c)
{
	if (c->state == CL_LOGIN && c->login == CLS_WAIT_SERVER) {
		client_send_welcome(c, false);
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

void client_pool_login_settled(struct worker *w, struct pool *p)
{
	struct list_node *pos, *tmp;
	list_for_each_safe(pos, tmp, &w->login_clients)
	{
		struct client *c = list_entry(pos, struct client, node);
		if (c->pool != p || c->state != CL_LOGIN || c->login != CLS_WAIT_SERVER ||
		    c->server)
			continue;
		if (p->have_welcome) {
			client_send_welcome(c, false);
			continue;
		}
		/* The login that would have provided the welcome failed: the next one tries. */
		if (p->n_servers > 0)
			return;
		int node = client_login_node(c);
		if (!pool_may_open(w, p, node)) {
			(void)pool_evict_idle_for(w, p, node);
			return;
		}
		if (!server_connect(w, p, node, c))
			client_disconnect(c, "08006", "could not connect to server");
		return;
	}
}
