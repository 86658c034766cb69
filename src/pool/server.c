/*
 * Server side of a session: connect to a backend (server_login.c then logs in with the pool's
 * login template and collects the welcome), relay backend messages to the linked client, and
 * change hands only at a boundary.
 *
 * Invariants:
 *  - s->client, when set, links back (s->client->server == s);
 *  - every answer the backend sends is matched against s->reqs; answers to messages pgrelay
 *    injected (statement re-Parse, parameter sync, reset) never reach a client;
 *  - a server is parked only when nothing is outstanding, nothing is half-sent either way, its
 *    transaction is idle and (session mode, or after a pinned client) the reset query succeeded;
 *  - during SV_LOGIN nothing from the backend reaches the client except a login ErrorResponse
 *    (server_login.c).
 */
#include "pool/server.h"

#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "pool/cancel.h"
#include "pool/client.h"
#include "pool/pool.h"
#include "net/relay.h"
#include "pool/server_login.h"
#include "pool/worker.h"
#include "protocol/builder.h"
#include "protocol/pqmsg.h"
#include "protocol/reader.h"
#include "util/log.h"

static void server_on_data(struct conn *conn);
static void server_on_event(struct conn *conn, enum conn_event ev, int status);
static void server_on_closed(struct conn *conn);

static const struct conn_ops server_conn_ops = {
	.on_data = server_on_data,
	.on_event = server_on_event,
	.on_closed = server_on_closed,
};

static struct list_node *server_list_for(struct server *s, enum server_state st)
{
	struct worker *w = s->w;
	switch (st) {
	case SV_CONNECTING:
		return &w->connecting_servers;
	case SV_LOGIN:
		return &w->login_servers;
	case SV_ACTIVE:
		return &w->active_servers;
	case SV_RESET:
		return &w->reset_servers;
	case SV_IDLE:
		return &s->pool->nodes[s->node_id].idle_servers;
	case SV_CLOSING:
		return &w->closing_servers;
	}
	abort();
}

void server_set_state(struct server *s, enum server_state st)
{
	struct pool_node *pn = &s->pool->nodes[s->node_id];
	if (s->state == SV_IDLE)
		pn->n_idle--;
	if (s->state == SV_RESET)
		pn->n_resetting--;
	list_del(&s->node);
	s->state = st;
	s->since_ms = uv_now(&s->w->loop);
	list_append(server_list_for(s, st), &s->node);
	if (st == SV_IDLE)
		pn->n_idle++;
	if (st == SV_RESET)
		pn->n_resetting++;
}

bool server_resolve(const char *host, int port, struct sockaddr_storage *out)
{
	memset(out, 0, sizeof(*out));
	if (uv_ip4_addr(host, port, (struct sockaddr_in *)out) == 0)
		return true;
	if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)out) == 0)
		return true;
	struct addrinfo hints, *res = NULL;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	char portbuf[16];
	snprintf(portbuf, sizeof(portbuf), "%d", port);
	if (getaddrinfo(host, portbuf, &hints, &res) != 0 || !res)
		return false;
	memcpy(out, res->ai_addr, res->ai_addrlen);
	freeaddrinfo(res);
	return true;
}

/*
 * Backend affinity: client.last_server and server.last_client always form pairs (each points
 * at the other or is NULL), so either side clears the other when it ends and no pointer dangles.
 */
static void server_unpair(struct server *s)
{
	if (s->last_client)
		s->last_client->last_server = NULL;
	s->last_client = NULL;
}

static void server_pair(struct server *s, struct client *c)
{
	if (c->last_server)
		server_unpair(c->last_server);
	server_unpair(s);
	s->last_client = c;
	c->last_server = s;
}

void server_forget_client(struct client *c)
{
	if (c->last_server)
		server_unpair(c->last_server);
}

static void server_unlink(struct server *s)
{
	if (s->client) {
		server_pair(s, s->client);
		client_link_remove(s->client, s);
	}
	s->client = NULL;
}

static void server_free_state(struct server *s)
{
	free(s->scram);
	s->scram = NULL;
	req_queue_free(&s->reqs);
	stmt_map_free(&s->stmts);
	for (int i = 0; i < TP_COUNT; i++) {
		free(s->param[i]);
		s->param[i] = NULL;
	}
	s->synced_client = 0;
}

void server_close(struct server *s, const char *reason)
{
	if (s->state == SV_CLOSING)
		return;
	log_debug("server", s->id, "closing backend connection: %s", reason);
	server_unlink(s);
	bool polite = s->state == SV_ACTIVE || s->state == SV_IDLE || s->state == SV_RESET;
	server_set_state(s, SV_CLOSING);
	server_free_state(s);
	if (polite) {
		static const uint8_t terminate[5] = { PqMsg_Terminate, 0, 0, 0, 4 };
		if (conn_send(&s->conn, terminate, sizeof(terminate)) == 0) {
			conn_close_after_flush(&s->conn);
			return;
		}
	}
	conn_close(&s->conn);
}

/* The session cannot continue: tell the client (if any) and close. */
/* Closes s; its client is told, or goes on without it when the link was idle (see there). */
void server_fail_link(struct server *s, const char *sqlstate, const char *reason,
		      enum link_loss how)
{
	struct client *c = s->client;
	int node = s->node_id;
	log_info("server", s->id, "backend %d: %s", node, reason);
	server_close(s, reason);
	if (c)
		client_link_lost(c, node, how, sqlstate, reason);
}

void server_fail(struct server *s, const char *sqlstate, const char *reason)
{
	/* An idle link the session can do without (client_link_lost says) is just dropped. */
	bool idle = s->state == SV_ACTIVE && server_at_boundary(s) && s->txn_status == TXN_IDLE;
	server_fail_link(s, sqlstate, reason, idle ? LINK_LOST_IDLE : LINK_LOST_BUSY);
}

static void server_on_closed(struct conn *conn)
{
	struct server *s = conn->owner;
	struct worker *w = s->w;
	struct pool *p = s->pool;
	int node = s->node_id;
	if (s->draining)
		w->n_draining--;
	if (s->cancels_in_flight)
		cancel_forget_server(w, s);
	list_del(&s->node);
	server_unpair(s);
	server_free_state(s);
	free(s);
	w->n_servers--;
	p->n_servers--;
	p->nodes[node].n_servers--;
	/* A slot came free (for this pool, or under a shared cap): waiting clients may use it. */
	pool_kick_all(w);
	pool_reap_if_unused(w, p);
	worker_check_shutdown_done(w);
}

bool server_connect(struct worker *w, struct pool *p, int node_id, struct client *c)
{
	if (!p->startup || node_id < 0 || node_id >= w->n_nodes || !worker_fd_available(w))
		return false;
	struct server *s = calloc(1, sizeof(*s));
	if (!s)
		return false;
	if (conn_init(&s->conn, &w->loop, &w->bufs, &server_conn_ops, s) < 0) {
		free(s);
		return false;
	}
	s->w = w;
	s->id = ++w->next_conn_id;
	s->node_id = node_id;
	s->addr = w->node_addr[node_id];
	s->pool = p;
	p->n_servers++;
	p->nodes[node_id].n_servers++;
	s->txn_status = TXN_IDLE;
	s->created_ms = uv_now(&w->loop);
	req_queue_init(&s->reqs);
	stmt_map_init(&s->stmts);
	list_init(&s->node);
	s->state = SV_CONNECTING;
	s->since_ms = s->created_ms;
	list_append(&w->connecting_servers, &s->node);
	w->n_servers++;
	if (c) {
		s->client = c;
		client_link_add(c, s);
		p->stats.server_assignment_count++;
	}
	int rc = conn_connect(&s->conn, (const struct sockaddr *)&s->addr);
	if (rc < 0) {
		log_info("server", s->id, "connect to backend %d failed: %s", node_id,
			 uv_strerror(rc));
		server_close(s, "connect failed");
		return false;
	}
	log_debug("server", s->id, "connecting to backend %d%s", node_id,
		  c ? "" : " (min_pool_size)");
	return true;
}

/* Keeps a tracked parameter value of the backend, and of its client when it changed it. */
static void server_set_param(struct server *s, int i, const char *value, bool for_client)
{
	if (!s->param[i] || strcmp(s->param[i], value) != 0)
		s->synced_client = 0; /* compared again at the next link */
	char *v = strdup(value);
	if (!v)
		return;
	free(s->param[i]);
	s->param[i] = v;
	struct client *c = s->client;
	if (for_client && c) {
		char *cv = strdup(value);
		if (cv && client_param_put(c, i, cv))
			c->params_gen++;
	}
}

/* ParameterStatus: the pool's welcome during login, tracked values always. */
void server_record_param(struct server *s, const uint8_t *body, uint32_t len, bool login)
{
	struct reader r;
	const char *name, *value;
	reader_init(&r, body, len);
	if (!reader_cstr(&r, &name, NULL) || !reader_cstr(&r, &value, NULL) || !reader_end(&r))
		return;
	if (login)
		pool_set_param(s->pool, name, value);
	int i = pool_tracked_param(name);
	/* The client's view is what reached it: the active link's reports only. A hidden ROLLBACK
	 * on another link of a transaction that committed must not undo a SET the client made. */
	if (i >= 0)
		server_set_param(s, i, value,
				 !login && s->state == SV_ACTIVE && s->client &&
					 s->client->server == s);
}

/* Quotes value as a SQL string literal into b (standard_conforming_strings style, E'' safe). */
static void server_put_literal(struct builder *b, const char *value)
{
	builder_put_bytes(b, "E'", 2);
	for (const char *p = value; *p; p++) {
		if (*p == '\'' || *p == '\\')
			builder_put_u8(b, (uint8_t)*p);
		builder_put_u8(b, (uint8_t)*p);
	}
	builder_put_u8(b, '\'');
}

/*
 * Sends one hidden Query that SETs every tracked parameter whose value on this backend differs
 * from what the client expects; its answers are skipped. The values are taken as applied at once:
 * the backend confirms them with ParameterStatus before anything else of the client runs.
 */
bool server_sync_params(struct server *s, struct client *c)
{
	if (c->defer_param_sync)
		return true; /* client_join_primary syncs inside the transaction */
	uint32_t pool_gen = c->pool ? c->pool->params_gen : 0;
	if (!s->params_unsure && s->synced_client == c->id && s->synced_gen == c->params_gen &&
	    s->synced_pool_gen == pool_gen)
		return true; /* nothing changed on either side since they last matched */
	struct builder b;
	uint8_t store[1024];
	builder_init(&b, store, sizeof(store));
	bool any = false;
	bool in_txn = s->txn_status != TXN_IDLE;
	/* A hidden SET inside a transaction that then rolled back left the old value behind. */
	bool unsure = s->params_unsure && !in_txn;
	for (int i = 0; i < TP_COUNT; i++) {
		const char *want = client_param(c, i);
		bool unreported = i >= TP_FIRST_UNREPORTED;
		bool resend = unsure && unreported;
		if (!want && (!unreported || (!s->param[i] && !resend)))
			continue; /* reported: unknown yet; unreported: both at the default */
		if (want && s->param[i] && strcmp(s->param[i], want) == 0 && !resend)
			continue;
		if (!any) {
			builder_start(&b, PqMsg_Query);
			any = true;
		}
		const char *name = pool_tracked_name(i);
		if (!want) {
			builder_put_bytes(&b, "RESET ", 6);
			builder_put_bytes(&b, name, strlen(name));
			builder_put_bytes(&b, ";", 1);
			free(s->param[i]);
			s->param[i] = NULL;
			continue;
		}
		builder_put_bytes(&b, "SET ", 4);
		builder_put_bytes(&b, name, strlen(name));
		builder_put_bytes(&b, " TO ", 4);
		/* Values as PostgreSQL applies them (classify_set_value): one literal, except a
		 * search_path, which is a list already written the way SET takes it. */
		if (i == TP_SEARCH_PATH)
			builder_put_bytes(&b, want, strlen(want));
		else
			server_put_literal(&b, want);
		builder_put_bytes(&b, ";", 1);
		server_set_param(s, i, want, false);
	}
	if (unsure)
		s->params_unsure = false;
	if (!s->params_unsure && !in_txn) {
		s->synced_client = c->id;
		s->synced_gen = c->params_gen;
		s->synced_pool_gen = pool_gen;
	}
	if (!any)
		return true;
	if (in_txn)
		s->params_unsure = true;
	builder_put_u8(&b, 0);
	builder_finish(&b);
	bool ok = builder_ok(&b) && req_push(&s->reqs, REQ_QUERY, true) &&
		  conn_send(&s->conn, b.data, b.len) == 0;
	builder_free(&b);
	if (!ok)
		server_fail(s, "08006", "could not sync session parameters with the server");
	return ok;
}

void server_link(struct server *s, struct client *c)
{
	s->client = c;
	client_link_add(c, s);
	server_set_state(s, SV_ACTIVE);
	s->pool->stats.server_assignment_count++;
	log_debug("server", s->id, "serving client c%llu", (unsigned long long)c->id);
	bool synced = server_sync_params(s, c); /* on failure the client was told */
	(void)synced;
}

/* Parks a clean server on its pool's idle list and hands it on if a client waits. */
void server_park(struct server *s)
{
	struct worker *w = s->w;
	uint64_t lifetime = w->cfg->pool.server_lifetime_ms;
	if (s->dirty || s->txn_status != TXN_IDLE || !req_queue_empty(&s->reqs)) {
		server_close(s, "not clean");
		return;
	}
	if (s->close_needed) {
		server_close(s, "RECONNECT requested");
		return;
	}
	if (s->draining) {
		server_close(s, "its node was detached");
		return;
	}
	if (s->cancels_in_flight) {
		/* Its client left; a cancel on its way could hit the next client's query. */
		server_close(s, "a cancel request for it is still in flight");
		return;
	}
	if (lifetime && uv_now(&w->loop) - s->created_ms >= lifetime) {
		server_close(s, "server_lifetime reached");
		return;
	}
	if (w->shutdown != WS_RUNNING) {
		server_close(s, "shutting down");
		return;
	}
	server_set_state(s, SV_IDLE);
	if (s->pool->nodes[s->node_id].n_waiting)
		pool_serve_waiting(s->pool, w);
	/* Under a shared cap, clients of other pools may be waiting for exactly this slot. */
	if (s->state == SV_IDLE &&
	    (w->cfg->pool.max_db_connections || w->cfg->pool.max_user_connections))
		pool_kick_all(w);
}

/* ---- prepared statements on pooled backends ---- */

/* Sends a Close of a statement whose answer is hidden. */
bool server_inject_close(struct server *s, const char *name)
{
	struct builder b;
	uint8_t store[256];
	builder_init(&b, store, sizeof(store));
	builder_start(&b, PqMsg_Close);
	builder_put_u8(&b, 'S');
	builder_put_cstr(&b, name);
	builder_finish(&b);
	bool ok = builder_ok(&b) && req_push(&s->reqs, REQ_CLOSE, true) &&
		  conn_send(&s->conn, b.data, b.len) == 0;
	builder_free(&b);
	if (ok)
		stmt_map_remove(&s->stmts, name);
	return ok;
}

static bool server_send_query(struct server *s, const char *sql, size_t len, bool hidden)
{
	struct builder b;
	uint8_t store[512];
	builder_init(&b, store, sizeof(store));
	builder_start(&b, PqMsg_Query);
	builder_put_bytes(&b, sql, len);
	builder_put_u8(&b, 0);
	builder_finish(&b);
	bool ok = builder_ok(&b) && req_push(&s->reqs, REQ_QUERY, hidden) &&
		  conn_send(&s->conn, b.data, b.len) == 0;
	builder_free(&b);
	if (ok)
		s->ready = false;
	return ok;
}

bool server_inject_sync(struct server *s)
{
	static const uint8_t sync[5] = { PqMsg_Sync, 0, 0, 0, 4 };
	bool ok =
		req_push(&s->reqs, REQ_SYNC, true) && conn_send(&s->conn, sync, sizeof(sync)) == 0;
	if (ok)
		s->ready = false;
	return ok;
}

bool server_inject_query(struct server *s, const char *sql, size_t len)
{
	return server_send_query(s, sql, len, true);
}

bool server_send_client_query(struct server *s, const char *sql, size_t len)
{
	return server_send_query(s, sql, len, false);
}

/* Keeps the per-backend statement cache bounded: the least recently used one is closed. */
static bool server_make_room_for_statement(struct server *s)
{
	if (s->stmts.count < STMT_SERVER_MAX)
		return true;
	struct stmt *old = stmt_map_oldest(&s->stmts);
	if (!old)
		return true;
	char name[256];
	snprintf(name, sizeof(name), "%s", old->name);
	return server_inject_close(s, name);
}

bool server_note_parse(struct server *s, const char *name, uint64_t hash)
{
	if ((stmt_map_find(&s->stmts, name) || s->stmts_unsure) && !server_inject_close(s, name))
		return false;
	if (!server_make_room_for_statement(s))
		return false;
	return stmt_map_put(&s->stmts, name, hash, NULL, 0, ++s->stmt_tick);
}

bool server_ensure_statement(struct server *s, struct client *c, const char *name)
{
	struct stmt *mine = stmt_map_find(&c->stmts, name);
	if (!mine)
		return true; /* not one of the client's: the server answers as PostgreSQL would */
	struct stmt *have = stmt_map_find(&s->stmts, name);
	if (have && have->hash == mine->hash) {
		have->used = ++s->stmt_tick;
		return true;
	}
	if ((have || s->stmts_unsure) && !server_inject_close(s, name))
		return false;
	if (!server_make_room_for_statement(s))
		return false;
	/* Replays the client's own Parse; its ParseComplete is hidden. */
	if (!req_push(&s->reqs, REQ_PARSE, true) ||
	    conn_send(&s->conn, mine->msg, mine->msg_len) != 0)
		return false;
	log_noise("server", s->id, "prepared statement \"%s\" for client c%llu", name,
		  (unsigned long long)c->id);
	return stmt_map_put(&s->stmts, name, mine->hash, NULL, 0, ++s->stmt_tick);
}

/* ---- work phase ---- */

static uint32_t server_needs_bytes(const void *owner, uint8_t type, uint32_t len)
{
	const struct server *s = owner;
	/* ReadyForQuery's status byte; ParameterStatus for tracking (short types, they fit). */
	if (type == PqMsg_ReadyForQuery || type == PqMsg_ParameterStatus)
		return len;
	/* The tag of a command that may end a block whose settings must then be restored. */
	if (type == PqMsg_CommandComplete && s->client && s->client->set_snap_taken)
		return len < 16 ? len : 16;
	/* The SQLSTATE of an error that may start a retry (it comes early in the body). */
	if (type == PqMsg_ErrorResponse && s->retry_watch)
		return len < 512 ? len : 512;
	/* Its severity, first in the body, for pool_backend_stats (errors are rare). */
	if (type == PqMsg_ErrorResponse)
		return len < 16 ? len : 16;
	return 0;
}

/* An ErrorResponse (body bytes seen so far) with SQLSTATE 25006, read_only_sql_transaction. */
static bool server_error_is_read_only(const struct frame *f)
{
	struct reader r;
	reader_init(&r, f->body, f->body_avail);
	uint8_t code;
	const char *value;
	while (reader_u8(&r, &code) && code != 0 && reader_cstr(&r, &value, NULL))
		if (code == 'C')
			return strcmp(value, "25006") == 0;
	return false;
}

/*
 * The answer to a unit that may be retried on the primary: the first message that is not
 * ParseComplete, BindComplete, ParameterDescription, RowDescription or NoData decides (those
 * five carry no result and the primary sends them again). Looks ahead in the buffer from the
 * cursor: 1 if a 25006 error comes first, 0 if anything else does, -1 if the deciding message
 * has not arrived yet (the relay waits for it, holding what came before).
 */
static int server_retry_lookahead(const struct server *s)
{
	const struct iobuf *b = s->conn.rbuf;
	uint32_t pos = b->parsed;
	for (int n = 0; n < 64; n++) {
		struct frame f;
		if (frame_parse(b->data + pos, b->recv - pos, FRAME_FROM_SERVER, FRAME_LONG_MAX,
				&f) != FRAME_OK)
			return -1;
		/* Only whole messages are looked past; an error is short, so it is waited for, but
		 * a description too large to wait for decides "no retry" (it is forwarded). */
		if (f.body_avail < f.len)
			return f.type == PqMsg_ErrorResponse && f.len < 4096 ? -1 : 0;
		switch (f.type) {
		case PqMsg_ParseComplete:
		case PqMsg_BindComplete:
		case PqMsg_ParameterDescription:
		case PqMsg_RowDescription:
		case PqMsg_NoData:
			pos += f.total;
			continue;
		case PqMsg_ErrorResponse:
			return server_error_is_read_only(&f) ? 1 : 0;
		default:
			return 0;
		}
	}
	return 0;
}

/* Counts an ErrorResponse a client sees by its severity (SHOW pool_backend_stats). */
static void server_count_error(struct server *s, const struct frame *f)
{
	const uint8_t *b = f->body;
	size_t n = f->body_avail;
	int node = s->node_id;
	if (n >= 6 && b[0] == 'S' && memcmp(b + 1, "FATAL", 5) == 0)
		s->w->fatal_cnt[node]++;
	else if (n >= 6 && b[0] == 'S' && memcmp(b + 1, "PANIC", 5) == 0)
		s->w->panic_cnt[node]++;
	else
		s->w->error_cnt[node]++;
}

/* The oldest outstanding request is the client's own (not one pgrelay injected). */
static bool server_head_is_clients(const struct server *s)
{
	return s->reqs.count > 0 && !s->reqs.ring[s->reqs.head].skip;
}

/*
 * Watching the answer of a unit that may be retried. RELAY_STOP to wait for the deciding message,
 * RELAY_SEND to go on. Once refused, everything up to its ReadyForQuery is hidden (retry_swallow)
 * and retry_fire set there.
 */
static enum relay_verdict server_watch_retry(struct server *s)
{
	int v = server_retry_lookahead(s);
	if (v < 0)
		return RELAY_STOP;
	s->retry_watch = false;
	if (v == 1) {
		s->retry_swallow = true;
		log_info("server", s->id,
			 "backend %d refused a read as a write (25006): retrying on the primary",
			 s->node_id);
	} else if (s->client && s->client->retry == RETRY_ARMED) {
		s->client->retry = RETRY_NONE;
	}
	return RELAY_SEND;
}

static enum relay_verdict server_relay_message(void *owner, const struct frame *f)
{
	struct server *s = owner;
	/*
	 * An error nobody asked for is the backend's goodbye (terminated, shut down, its postmaster
	 * gone): it must not reach the client as the answer to its next statement. The link is
	 * dropped now; the session goes on without it, or ends with its own message, as for EOF.
	 */
	if (f->type == PqMsg_ErrorResponse && s->state == SV_ACTIVE && s->ready &&
	    req_queue_empty(&s->reqs) && s->txn_status == TXN_IDLE) {
		/* The answer read together with it goes to the client first (the relay flushes
		 * what was scanned, then presents this message again). */
		if (s->conn.rbuf && s->conn.rbuf->done < s->conn.rbuf->parsed) {
			s->goodbye_pending = true;
			return RELAY_STOP;
		}
		s->goodbye_pending = false;
		worker_report_backend_error(s->w, s->node_id);
		server_fail_link(s, "57P01", "the server ended the idle session", LINK_LOST_IDLE);
		return RELAY_GONE;
	}
	if (s->retry_watch && s->client && s->client->server == s && server_head_is_clients(s) &&
	    server_watch_retry(s) == RELAY_STOP)
		return RELAY_STOP;
	enum req_verdict v = req_on_backend_message(&s->reqs, f->type);
	log_noise("server", s->id, "<- %c %s (client c%llu, %u outstanding)", f->type,
		  v == REQ_SKIP ? "hidden" : "",
		  s->client ? (unsigned long long)s->client->id : 0ull, s->reqs.count);
	if (v == REQ_VIOLATION) {
		char msg[96];
		snprintf(msg, sizeof(msg), "server sent an unexpected message \"%c\"", f->type);
		server_fail(s, "08P01", msg);
		return RELAY_GONE;
	}
	/* Only the client's active link speaks to it; the others only answer hidden requests. */
	bool visible = v != REQ_SKIP && s->client && s->client->server == s;
	bool hide_for_retry = visible && s->retry_swallow;
	if (hide_for_retry && f->type == PqMsg_ReadyForQuery) {
		s->retry_swallow = false;
		s->retry_fire = true;
	}
	switch (f->type) {
	case PqMsg_CommandComplete:
		if (visible && s->client->set_snap_taken)
			s->client->txn_rolled_back =
				f->body_avail >= 8 && memcmp(f->body, "ROLLBACK", 8) == 0;
		break;
	case PqMsg_ReadyForQuery:
		if (f->len == 1)
			s->txn_status = (char)f->body[0];
		s->ready = req_queue_empty(&s->reqs);
		if (visible) {
			s->client->txn_status = s->txn_status;
			s->client->last_active_ms = uv_now(&s->w->loop);
			client_on_ready(s->client, s);
		}
		break;
	case PqMsg_ParameterStatus:
		server_record_param(s, f->body, f->len, false);
		break;
	case PqMsg_ErrorResponse:
		if (visible)
			server_count_error(s, f);
		if (s->reqs.dropped_injected) {
			/* An injected Parse or Close was skipped: what the backend holds is
			 * unknown. */
			s->reqs.dropped_injected = false;
			stmt_map_clear(&s->stmts);
			s->stmts_unsure = true;
		}
		if (s->state == SV_RESET) {
			s->dirty = true; /* a reset that fails leaves unknown state behind */
			log_warning("server", s->id, "reset query failed on backend %d",
				    s->node_id);
		}
		break;
	default:
		break;
	}
	/* Answers to injected requests, and anything while no client is linked, are dropped. */
	return visible && !hide_for_retry ? RELAY_SEND : RELAY_SKIP;
}

static const struct relay_ops server_relay_ops = {
	.side = FRAME_FROM_SERVER,
	.needs_bytes = server_needs_bytes,
	.on_message = server_relay_message,
};

/* Nothing outstanding and nothing half-sent from the server side. */
bool server_at_boundary(const struct server *s)
{
	const struct iobuf *b = s->conn.rbuf;
	/*
	 * An empty queue is not enough: after Parse + Flush nothing is outstanding, yet the unnamed
	 * statement and the extended-protocol state belong to this client until its Sync.
	 */
	return s->ready && req_queue_empty(&s->reqs) && !conn_forward_busy(&s->conn) &&
	       s->conn.pkt_remaining == 0 && (!b || b->parsed == b->recv);
}

void server_start_drain(struct server *s)
{
	if (s->draining)
		return;
	s->draining = true;
	s->drain_ms = uv_now(&s->w->loop);
	s->w->n_draining++;
	log_info("server", s->id, "backend %d was detached: the work in flight finishes first",
		 s->node_id);
}

void server_end_drain(struct server *s, const char *how)
{
	char why[128];
	snprintf(why, sizeof(why), "backend node %d was detached and %s", s->node_id, how);
	/* Only standbys drain: what runs there writes nothing, and would run on unwatched. */
	cancel_abandoned(s->w, s);
	server_fail(s, "57P01", why);
}

/*
 * A draining link at a boundary outside a transaction closes now; its client goes on elsewhere
 * (or, if its session cannot move, ends as it would have at the detach). True if s closed.
 */
static bool server_drain_if_done(struct server *s)
{
	struct client *c = s->client;
	if (!s->draining || s->state != SV_ACTIVE || s->txn_status != TXN_IDLE ||
	    !server_at_boundary(s))
		return false;
	if (c && c->server == s && (c->conn.pkt_remaining != 0 || conn_forward_busy(&c->conn)))
		return false;
	char why[64];
	snprintf(why, sizeof(why), "backend node %d was detached", s->node_id);
	server_fail_link(s, "57P01", why, LINK_LOST_IDLE);
	return true;
}

/* Transaction pooling: give the server back once the client's transaction is over. */
static void server_maybe_release(struct server *s)
{
	struct client *c = s->client;
	if (!c || c->pinned || s->w->cfg->pool.mode == POOL_MODE_SESSION)
		return;
	if (s->txn_status != TXN_IDLE || !server_at_boundary(s) || s->cancels_in_flight)
		return;
	/* The active link: the client must not be in the middle of sending a message either. */
	if (c->server == s && (c->conn.pkt_remaining != 0 || conn_forward_busy(&c->conn)))
		return;
	/* Other links of the client follow its transaction: not while it is still open. */
	if (c->server != s && c->txn_status != TXN_IDLE)
		return;
	server_unlink(s);
	log_noise("server", s->id, "released by client c%llu", (unsigned long long)c->id);
	server_park(s);
}

void server_cancels_done(struct server *s)
{
	if (s->state == SV_ACTIVE && s->client)
		server_maybe_release(s);
}

static void server_reset_done(struct server *s)
{
	/* DISCARD ALL (or the end of a pinned session) drops every prepared statement. */
	stmt_map_clear(&s->stmts);
	s->stmts_unsure = false;
	s->unnamed_of = 0;
	server_park(s);
}

static void server_relay(struct server *s)
{
	struct client *c = s->client;
	if (s->state == SV_ACTIVE && !c) {
		server_close(s, "no client");
		return;
	}
	enum relay_result r =
		relay_scan(&s->conn, c ? &c->conn : NULL, FRAME_LONG_MAX, &server_relay_ops, s);
	/* Stopped at a goodbye behind an answer that is now sent: take the goodbye now. */
	if (r == RELAY_STOPPED && s->goodbye_pending)
		r = relay_scan(&s->conn, c ? &c->conn : NULL, FRAME_LONG_MAX, &server_relay_ops, s);
	switch (r) {
	case RELAY_DRAINED:
	case RELAY_STOPPED:
		break;
	case RELAY_WRITING:
	case RELAY_CLOSED:
		return;
	case RELAY_BAD_MESSAGE:
		server_fail(s, "08P01", "server sent an invalid message");
		return;
	case RELAY_WRITE_FAILED:
		if (c)
			client_disconnect(c, NULL, "could not write to client");
		return;
	}
	if (s->state == SV_RESET) {
		if (s->dirty)
			server_close(s, "reset query failed");
		else if (server_at_boundary(s))
			server_reset_done(s);
		return;
	}
	if (s->state == SV_ACTIVE)
		server_maybe_release(s);
	if (s->retry_fire) {
		s->retry_fire = false;
		if (c && c->state == CL_ACTIVE && c->retry == RETRY_ARMED) {
			client_retry_on_primary(c);
			return;
		}
	}
	/* Its client is told (and kicked) by client_link_lost if the link closes. */
	if (server_drain_if_done(s))
		return;
	/* The client's next unit waited for this link to finish: it may go now. */
	if (c && c->hold == HOLD_BOUNDARY && c->state == CL_ACTIVE &&
	    (!c->server || (c->server->state == SV_ACTIVE && server_at_boundary(c->server))))
		client_kick(c);
}

/*
 * Runs the statements of sql (separated by ';', as pgpool-II's reset_query_list) as hidden
 * queries before parking, one Query each: sent together in one string they would run as one
 * implicit transaction, where DISCARD ALL is refused. Their answers are skipped (SV_RESET).
 */
static void server_start_reset(struct server *s, const char *sql)
{
	struct builder b;
	uint8_t store[512];
	builder_init(&b, store, sizeof(store));
	bool ok = true;
	for (const char *p = sql; *p && ok;) {
		const char *end = strchr(p, ';');
		size_t n = end ? (size_t)(end - p) : strlen(p);
		const char *q = p;
		p = end ? end + 1 : p + n;
		while (n && (*q == ' ' || *q == '\t' || *q == '\n')) {
			q++;
			n--;
		}
		if (!n)
			continue;
		/* ABORT/ROLLBACK of an idle backend only makes PostgreSQL log a WARNING: skip it.
		 */
		if (s->txn_status == TXN_IDLE && ((n == 5 && strncasecmp(q, "abort", 5) == 0) ||
						  (n == 8 && strncasecmp(q, "rollback", 8) == 0)))
			continue;
		builder_start(&b, PqMsg_Query);
		builder_put_bytes(&b, q, n);
		builder_put_u8(&b, 0);
		builder_finish(&b);
		ok = req_push(&s->reqs, REQ_QUERY, true);
	}
	ok = ok && builder_ok(&b) && (b.len == 0 || conn_send(&s->conn, b.data, b.len) == 0);
	builder_free(&b);
	if (!ok) {
		server_close(s, "could not send the reset query");
		return;
	}
	server_set_state(s, SV_RESET);
	conn_want_read(&s->conn, true);
	if (req_queue_empty(&s->reqs))
		server_reset_done(s);
}

/*
 * May the request s still runs for a client that left be cancelled without changing what the
 * client's work did? On a standby nothing it runs can write; in a failed transaction nothing can
 * commit. Elsewhere the request may be a write or a COMMIT that PostgreSQL, on its own, would
 * finish before noticing that the client is gone, so it is left to finish.
 */
static bool server_abandoned_request_is_cancellable(const struct server *s)
{
	if (s->state != SV_ACTIVE || req_queue_empty(&s->reqs))
		return false;
	int primary = router_primary(&s->w->router); /* -1 while none is known: unsure */
	return s->txn_status == TXN_FAILED || (primary >= 0 && s->node_id != primary);
}

void server_client_left(struct server *s, bool partial)
{
	struct client *c = s->client;
	bool pinned = c && c->pinned;
	server_unlink(s);
	if (s->state != SV_ACTIVE || partial || s->dirty || !server_at_boundary(s)) {
		if (server_abandoned_request_is_cancellable(s))
			cancel_abandoned(s->w, s);
		server_close(s, "client left in the middle of a request");
		return;
	}
	const struct pool_conf *pc = &s->w->cfg->pool;
	if (pc->mode == POOL_MODE_SESSION || pinned) {
		if (!pc->connection_cache) {
			/* Nothing of a session survives it: not even what no reset undoes (loaded
			 * libraries, the temp schema, the backend's own statistics). */
			server_close(s, "session ended (connection_cache = false)");
			return;
		}
		if (pc->reset_query_list && pc->reset_query_list[0])
			server_start_reset(s, pc->reset_query_list);
		else if (s->txn_status != TXN_IDLE)
			server_start_reset(s, "ROLLBACK");
		else
			server_park(s);
		return;
	}
	if (s->txn_status != TXN_IDLE)
		server_start_reset(s, "ROLLBACK");
	else
		server_park(s);
}

static void server_on_data(struct conn *conn)
{
	struct server *s = conn->owner;
	switch (s->state) {
	case SV_LOGIN:
		server_login_scan(s);
		return;
	case SV_ACTIVE:
	case SV_RESET:
		server_relay(s);
		return;
	case SV_IDLE:
		/* Only asynchronous messages may come now; anything else makes it unusable. */
		server_relay(s);
		if (s->state == SV_IDLE && !req_queue_empty(&s->reqs))
			server_close(s, "unexpected data while idle");
		return;
	case SV_CONNECTING:
		server_tls_answer(s);
		return;
	case SV_CLOSING:
		return;
	}
}

static void server_on_event(struct conn *conn, enum conn_event ev, int status)
{
	struct server *s = conn->owner;
	char msg[160];
	switch (ev) {
	case CONN_EV_CONNECTED:
		server_begin_login(s);
		return;
	case CONN_EV_TLS_READY:
		log_debug("server", s->id, "TLS established with backend %d (%s)", s->node_id,
			  tls_version_name(conn_ssl(&s->conn)));
		server_send_startup(s);
		return;
	case CONN_EV_TLS_ERROR:
		worker_report_backend_error(s->w, s->node_id);
		snprintf(msg, sizeof(msg), "TLS with backend %d failed: %s", s->node_id,
			 conn_tls_error(&s->conn));
		server_fail_link(s, "08006", msg, LINK_LOST_UNUSED);
		return;
	case CONN_EV_CONNECT_FAILED:
		s->w->node_down_until_ms[s->node_id] = uv_now(&s->w->loop) + NODE_DOWN_HOLD_MS;
		worker_report_backend_error(s->w, s->node_id);
		snprintf(msg, sizeof(msg), "could not connect to server (backend %d): %s",
			 s->node_id, uv_strerror(status));
		/* Nothing of the client reached it: the unit may wait for the check's verdict. */
		server_fail_link(s, "08006", msg, LINK_LOST_UNUSED);
		return;
	case CONN_EV_EOF:
	case CONN_EV_READ_ERROR:
	case CONN_EV_WRITE_ERROR:
		worker_report_backend_error(s->w, s->node_id);
		snprintf(msg, sizeof(msg),
			 "server closed the connection unexpectedly (backend %d%s%s)", s->node_id,
			 ev == CONN_EV_EOF ? "" : ": ",
			 ev == CONN_EV_EOF ? "" : uv_strerror(status));
		server_fail(s, "08006", msg);
		return;
	case CONN_EV_FORWARD_DONE:
		if (s->state == SV_ACTIVE || s->state == SV_RESET || s->state == SV_IDLE)
			server_relay(s);
		return;
	case CONN_EV_FORWARD_FAILED:
		if (s->client)
			client_disconnect(s->client, NULL, "could not write to client");
		else
			server_close(s, "client gone");
		return;
	}
}
