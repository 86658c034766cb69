/*
 * Server side of a session: connect to a backend, log in as the client's user with the
 * credentials pgrelay holds, collect the welcome, then relay backend messages to the client.
 *
 * Invariants:
 *  - s->client, when set, links back (s->client->server == s);
 *  - a server is never reused by another client: when its session ends it is closed (pooling
 *    will only reuse one that is provably clean);
 *  - during SV_LOGIN nothing from the backend reaches the client except a login ErrorResponse.
 */
#include "pool/server.h"

#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/md5.h"
#include "pool/client.h"
#include "pool/pool.h"
#include "pool/relay.h"
#include "pool/worker.h"
#include "protocol/builder.h"
#include "protocol/pqmsg.h"
#include "protocol/reader.h"
#include "util/log.h"

#define SERVER_LOGIN_MSG_MAX 16384 /* bound on any backend message before ReadyForQuery */

static void server_on_data(struct conn *conn);
static void server_on_event(struct conn *conn, enum conn_event ev, int status);
static void server_on_closed(struct conn *conn);

static const struct conn_ops server_conn_ops = {
	.on_data = server_on_data,
	.on_event = server_on_event,
	.on_closed = server_on_closed,
};

static struct list_node *server_list_for(struct worker *w, enum server_state st)
{
	switch (st) {
	case SV_CONNECTING:
		return &w->connecting_servers;
	case SV_LOGIN:
		return &w->login_servers;
	case SV_ACTIVE:
		return &w->active_servers;
	case SV_CLOSING:
		return &w->closing_servers;
	}
	abort();
}

void server_set_state(struct server *s, enum server_state st)
{
	list_del(&s->node);
	s->state = st;
	s->since_ms = uv_now(&s->w->loop);
	list_append(server_list_for(s->w, st), &s->node);
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

static void server_unlink(struct server *s)
{
	if (s->client && s->client->server == s)
		s->client->server = NULL;
	s->client = NULL;
}

void server_close(struct server *s, const char *reason)
{
	if (s->state == SV_CLOSING)
		return;
	log_debug("server", s->id, "closing backend connection: %s", reason);
	server_unlink(s);
	bool polite = s->state == SV_ACTIVE;
	server_set_state(s, SV_CLOSING);
	if (s->scram) {
		free(s->scram);
		s->scram = NULL;
	}
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
static void server_fail(struct server *s, const char *sqlstate, const char *reason)
{
	struct client *c = s->client;
	log_info("server", s->id, "backend %d: %s", s->node_id, reason);
	server_close(s, reason);
	if (c)
		client_on_server_lost(c, sqlstate, reason);
}

static void server_on_closed(struct conn *conn)
{
	struct server *s = conn->owner;
	struct worker *w = s->w;
	list_del(&s->node);
	if (s->pool)
		s->pool->n_servers--;
	free(s->scram);
	free(s);
	w->n_servers--;
	worker_check_shutdown_done(w);
}

bool server_connect_for(struct client *c, int node_id)
{
	struct worker *w = c->w;
	if (node_id < 0 || node_id >= w->n_nodes || !worker_fd_available(w))
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
	s->pool = c->pool;
	s->pool->n_servers++;
	s->txn_status = TXN_IDLE;
	list_init(&s->node);
	s->state = SV_CONNECTING;
	s->since_ms = uv_now(&w->loop);
	list_append(&w->connecting_servers, &s->node);
	w->n_servers++;
	s->client = c;
	c->server = s;
	int rc = conn_connect(&s->conn, (const struct sockaddr *)&s->addr);
	if (rc < 0) {
		log_info("server", s->id, "connect to backend %d failed: %s", node_id,
			 uv_strerror(rc));
		server_close(s, "connect failed");
		return false;
	}
	log_debug("server", s->id, "connecting to backend %d for client c%llu", node_id,
		  (unsigned long long)c->id);
	return true;
}

static void server_send_startup(struct server *s)
{
	struct client *c = s->client;
	struct builder b;
	uint8_t store[1024];
	builder_init(&b, store, sizeof(store));
	builder_start(&b, 0);
	builder_put_u32(&b, PG_PROTOCOL_3_0);
	/* The client's own parameters, already validated and terminated. */
	builder_put_bytes(&b, c->startup, c->startup_len);
	builder_finish(&b);
	int rc = builder_ok(&b) ? conn_send(&s->conn, b.data, b.len) : UV_ENOMEM;
	builder_free(&b);
	if (rc < 0) {
		server_fail(s, "08006", "could not send startup packet to server");
		return;
	}
	server_set_state(s, SV_LOGIN);
	conn_want_read(&s->conn, true);
}

/* Sends a PasswordMessage-family ('p') packet with body bytes. */
static bool server_send_password_msg(struct server *s, const void *a, size_t alen, const void *b2,
				     size_t blen)
{
	struct builder b;
	uint8_t store[SCRAM_MAX_MSG + 64];
	builder_init(&b, store, sizeof(store));
	builder_start(&b, PqMsg_PasswordMessage);
	builder_put_bytes(&b, a, alen);
	builder_put_bytes(&b, b2, blen);
	builder_finish(&b);
	int rc = builder_ok(&b) ? conn_send(&s->conn, b.data, b.len) : UV_ENOMEM;
	builder_free(&b);
	if (rc < 0)
		server_fail(s, "08006", "could not send authentication to server");
	return rc == 0;
}

static bool server_auth_sasl_start(struct server *s, struct reader *r)
{
	const struct client_creds *cr = &s->client->creds;
	bool found = false;
	const char *mech;
	size_t mlen;
	while (reader_cstr(r, &mech, &mlen) && mlen) {
		if (strcmp(mech, "SCRAM-SHA-256") == 0)
			found = true;
	}
	if (!found || (cr->kind != CRED_PLAIN && cr->kind != CRED_SCRAM_KEY)) {
		server_fail(s, "28000",
			    found ? "pgrelay has no usable credentials for this user on the server"
				  : "server asked for an unsupported SASL mechanism");
		return false;
	}
	s->scram = calloc(1, sizeof(*s->scram));
	char out[SCRAM_MAX_MSG];
	size_t outlen;
	if (!s->scram || !scram_client_first(s->scram, out, sizeof(out), &outlen)) {
		server_fail(s, "08006", "could not start SCRAM authentication");
		return false;
	}
	uint8_t head[32];
	static const char name[] = "SCRAM-SHA-256";
	memcpy(head, name, sizeof(name));
	head[sizeof(name)] = (uint8_t)(outlen >> 24);
	head[sizeof(name) + 1] = (uint8_t)(outlen >> 16);
	head[sizeof(name) + 2] = (uint8_t)(outlen >> 8);
	head[sizeof(name) + 3] = (uint8_t)outlen;
	return server_send_password_msg(s, head, sizeof(name) + 4, out, outlen);
}

static bool server_auth_sasl_continue(struct server *s, const uint8_t *data, size_t len)
{
	const struct client_creds *cr = &s->client->creds;
	char out[SCRAM_MAX_MSG];
	size_t outlen;
	bool ok =
		s->scram && scram_client_final(s->scram, cr->kind == CRED_PLAIN ? cr->secret : NULL,
					       cr->kind == CRED_SCRAM_KEY ? cr->client_key : NULL,
					       cr->kind == CRED_SCRAM_KEY ? &cr->scram : NULL,
					       (const char *)data, len, out, sizeof(out), &outlen);
	if (!ok) {
		server_fail(s, "28000",
			    "SCRAM exchange with the server failed (the stored verifier must match "
			    "the server's, or store the password)");
		return false;
	}
	return server_send_password_msg(s, out, outlen, NULL, 0);
}

static bool server_auth_md5(struct server *s, const uint8_t salt[4])
{
	const struct client_creds *cr = &s->client->creds;
	char md5[MD5_PASSWD_LEN + 1], resp[MD5_PASSWD_LEN + 1];
	if (cr->kind == CRED_PLAIN)
		md5_secret_from_password(cr->secret, s->client->user, md5);
	else if (cr->kind == CRED_MD5)
		memcpy(md5, cr->secret, sizeof(md5));
	else {
		server_fail(s, "28000", "pgrelay has no md5 or plain password for this user");
		return false;
	}
	md5_response_from_secret(md5, salt, resp);
	return server_send_password_msg(s, resp, MD5_PASSWD_LEN + 1, NULL, 0);
}

static bool server_handle_auth(struct server *s, const uint8_t *body, uint32_t len)
{
	struct reader r;
	uint32_t code;
	reader_init(&r, body, len);
	if (!reader_u32(&r, &code)) {
		server_fail(s, "08P01", "invalid authentication request from server");
		return false;
	}
	const struct client_creds *cr = &s->client->creds;
	switch (code) {
	case AUTH_REQ_OK:
		return true;
	case AUTH_REQ_PASSWORD:
		if (cr->kind != CRED_PLAIN) {
			server_fail(s, "28000", "pgrelay has no plain password for this user");
			return false;
		}
		return server_send_password_msg(s, cr->secret, strlen(cr->secret) + 1, NULL, 0);
	case AUTH_REQ_MD5: {
		const uint8_t *salt;
		if (!reader_bytes(&r, 4, &salt)) {
			server_fail(s, "08P01", "invalid md5 request from server");
			return false;
		}
		return server_auth_md5(s, salt);
	}
	case AUTH_REQ_SASL:
		return server_auth_sasl_start(s, &r);
	case AUTH_REQ_SASL_CONT:
		return server_auth_sasl_continue(s, r.p, reader_remaining(&r));
	case AUTH_REQ_SASL_FIN:
		if (!s->scram ||
		    !scram_client_verify(s->scram, (const char *)r.p, reader_remaining(&r))) {
			server_fail(s, "28000", "server's SCRAM signature is invalid");
			return false;
		}
		free(s->scram);
		s->scram = NULL;
		return true;
	default:
		server_fail(s, "28000",
			    "server requested an authentication method pgrelay does not "
			    "support");
		return false;
	}
}

static void server_record_param(struct server *s, const uint8_t *body, uint32_t len)
{
	struct reader r;
	const char *name, *value;
	reader_init(&r, body, len);
	if (reader_cstr(&r, &name, NULL) && reader_cstr(&r, &value, NULL) && reader_end(&r))
		pool_set_param(s->pool, name, value);
}

/* The backend refused the login: pass its own error on, then end the session. */
static void server_login_error(struct server *s, const uint8_t *msg, uint32_t total)
{
	struct client *c = s->client;
	log_info("server", s->id, "backend %d refused the login", s->node_id);
	if (c && conn_send(&c->conn, msg, total) < 0)
		log_debug("server", s->id, "could not pass the login error to the client");
	server_close(s, "login refused");
	if (c)
		client_on_server_lost(c, NULL, "server refused the login");
}

static void server_login_done(struct server *s)
{
	server_set_state(s, SV_ACTIVE);
	s->pool->have_welcome = true;
	log_debug("server", s->id, "logged in to backend %d, pid %u", s->node_id, s->be_pid);
	client_on_server_ready(s->client);
}

/* Handles one whole login-phase message; false when the server was closed. */
static bool server_login_message(struct server *s, const struct frame *f, const uint8_t *raw)
{
	switch (f->type) {
	case PqMsg_AuthenticationRequest:
		return server_handle_auth(s, f->body, f->len);
	case PqMsg_ErrorResponse:
		server_login_error(s, raw, f->total);
		return false;
	case PqMsg_ParameterStatus:
		server_record_param(s, f->body, f->len);
		return true;
	case PqMsg_BackendKeyData: {
		struct reader r;
		reader_init(&r, f->body, f->len);
		if (!reader_u32(&r, &s->be_pid) || !reader_u32(&r, &s->be_key)) {
			server_fail(s, "08P01", "invalid BackendKeyData from server");
			return false;
		}
		return true;
	}
	case PqMsg_NoticeResponse:
	case PqMsg_NegotiateProtocolVersion:
		return true;
	case PqMsg_ReadyForQuery:
		server_login_done(s);
		return false; /* the relay takes over */
	default:
		server_fail(s, "08P01", "unexpected message from server during login");
		return false;
	}
}

static void server_login_scan(struct server *s)
{
	while (s->state == SV_LOGIN && s->client && s->conn.rbuf) {
		struct iobuf *b = s->conn.rbuf;
		struct frame f;
		const uint8_t *raw = b->data + b->parsed;
		enum frame_status st = frame_parse(raw, b->recv - b->parsed, FRAME_FROM_SERVER,
						   SERVER_LOGIN_MSG_MAX, &f);
		if (st == FRAME_BAD) {
			server_fail(s, "08P01", "invalid message from server during login");
			return;
		}
		if (st == FRAME_NEED_MORE || f.body_avail < f.len) {
			if (b->done > 0)
				iobuf_compact(b);
			return;
		}
		b->parsed += f.total;
		bool more = server_login_message(s, &f, raw);
		if (s->state == SV_CLOSING)
			return;
		b->done = b->parsed;
		if (!more)
			break;
	}
	if (s->state == SV_LOGIN && !s->client)
		server_close(s, "client left during login");
}

/* ---- work phase ---- */

static bool server_needs_whole(const void *owner, uint8_t type)
{
	(void)owner;
	return type == PqMsg_ReadyForQuery;
}

static enum relay_verdict server_relay_message(void *owner, const struct frame *f)
{
	struct server *s = owner;
	if (f->type == PqMsg_ReadyForQuery && f->len == 1) {
		s->txn_status = (char)f->body[0];
		if (s->client)
			s->client->txn_status = s->txn_status;
	}
	return RELAY_SEND;
}

static const struct relay_ops server_relay_ops = {
	.side = FRAME_FROM_SERVER,
	.needs_whole = server_needs_whole,
	.on_message = server_relay_message,
};

static void server_relay(struct server *s)
{
	struct client *c = s->client;
	if (!c) {
		server_close(s, "no client");
		return;
	}
	enum relay_result r = relay_scan(&s->conn, &c->conn, 0x3fffffffu, &server_relay_ops, s);
	switch (r) {
	case RELAY_DRAINED:
	case RELAY_WRITING:
	case RELAY_STOPPED:
	case RELAY_CLOSED:
		return;
	case RELAY_BAD_MESSAGE:
		server_fail(s, "08P01", "server sent an invalid message");
		return;
	case RELAY_WRITE_FAILED:
		client_disconnect(c, NULL, "could not write to client");
		return;
	}
}

static void server_on_data(struct conn *conn)
{
	struct server *s = conn->owner;
	switch (s->state) {
	case SV_LOGIN:
		server_login_scan(s);
		return;
	case SV_ACTIVE:
		server_relay(s);
		return;
	case SV_CONNECTING:
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
		if (!s->client) {
			server_close(s, "client left while connecting");
			return;
		}
		server_send_startup(s);
		return;
	case CONN_EV_CONNECT_FAILED:
		snprintf(msg, sizeof(msg), "could not connect to server (backend %d): %s",
			 s->node_id, uv_strerror(status));
		server_fail(s, "08006", msg);
		return;
	case CONN_EV_EOF:
	case CONN_EV_READ_ERROR:
	case CONN_EV_WRITE_ERROR:
		snprintf(msg, sizeof(msg),
			 "server closed the connection unexpectedly (backend %d%s%s)", s->node_id,
			 ev == CONN_EV_EOF ? "" : ": ",
			 ev == CONN_EV_EOF ? "" : uv_strerror(status));
		server_fail(s, "08006", msg);
		return;
	case CONN_EV_FORWARD_DONE:
		if (s->state == SV_ACTIVE)
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
