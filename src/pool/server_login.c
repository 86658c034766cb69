/*
 * Backend login (SV_LOGIN): the startup packet from the pool's login template, the authentication
 * the backend asks for (SASL/SCRAM-SHA-256, md5, cleartext), answered with the pool's credentials,
 * the welcome (ParameterStatus values recorded for the pool, BackendKeyData) up to ReadyForQuery,
 * and a refused login. server.c connects and hands the server over here; at ReadyForQuery the
 * server is parked or handed to its client, and the relay takes over.
 *
 * Invariants:
 *  - during SV_LOGIN nothing from the backend reaches the client except a login ErrorResponse;
 *  - no backend message before ReadyForQuery may be longer than SERVER_LOGIN_MSG_MAX.
 */
#include "pool/server_login.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "auth/md5.h"
#include "conf/config.h"
#include "pool/client.h"
#include "pool/pool.h"
#include "pool/server.h"
#include "pool/worker.h"
#include "protocol/builder.h"
#include "protocol/frame.h"
#include "protocol/pqmsg.h"
#include "protocol/reader.h"
#include "util/log.h"

void server_send_startup(struct server *s)
{
	const struct pool *p = s->pool;
	struct builder b;
	uint8_t store[1024];
	builder_init(&b, store, sizeof(store));
	builder_start(&b, 0);
	builder_put_u32(&b, PG_PROTOCOL_3_0);
	/* The first client's parameters, already validated and terminated. */
	builder_put_bytes(&b, p->startup, p->startup_len);
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

void server_begin_login(struct server *s)
{
	const struct config *cfg = s->w->cfg;
	if (!cfg->tls_backends[s->node_id]) {
		server_send_startup(s);
		return;
	}
	uint8_t req[8];
	uint32_t len = htonl(8), code = htonl(NEGOTIATE_SSL_CODE);
	memcpy(req, &len, 4);
	memcpy(req + 4, &code, 4);
	if (conn_send(&s->conn, req, sizeof(req)) < 0) {
		server_fail(s, "08006", "could not send SSLRequest to server");
		return;
	}
	s->tls_asked = true;
	conn_want_read(&s->conn, true);
}

/*
 * 'S': TLS handshake (verify-full also checks the host name); 'N': plaintext unless the mode
 * requires TLS. More than the one byte is refused: bytes sent before the handshake could be
 * injected by a man in the middle (CVE-2021-23222).
 */
void server_tls_answer(struct server *s)
{
	struct iobuf *b = s->conn.rbuf;
	const struct config *cfg = s->w->cfg;
	if (!s->tls_asked || conn_is_tls(&s->conn) || !b || iobuf_empty(b))
		return;
	char msg[160];
	uint8_t answer = b->data[b->parsed];
	if ((answer != 'S' && answer != 'N') || b->recv - b->parsed != 1) {
		snprintf(msg, sizeof(msg), "backend %d sent an unexpected answer to SSLRequest",
			 s->node_id);
		server_fail_link(s, "08P01", msg, LINK_LOST_UNUSED);
		return;
	}
	iobuf_consume(b, 1);
	enum tls_mode mode = config_backend_tls_mode(cfg, s->node_id);
	if (answer == 'N') {
		if (mode >= TLS_REQUIRE) {
			snprintf(msg, sizeof(msg), "backend %d does not support TLS (tls mode %s)",
				 s->node_id, tls_mode_names[mode]);
			server_fail_link(s, "08006", msg, LINK_LOST_UNUSED);
			return;
		}
		server_send_startup(s);
		return;
	}
	int rc = conn_start_tls(&s->conn, cfg->tls_backends[s->node_id], false,
				cfg->backends[s->node_id].host, mode == TLS_VERIFY_FULL);
	if (rc < 0)
		server_fail(s, "08006", "could not start TLS with server");
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
	const struct client_creds *cr = &s->pool->creds;
	bool found = false;
	const char *mech;
	size_t mlen;
	if (s->scram) {
		/* A second AuthenticationSASL in one login: a broken or hostile backend. */
		server_fail(s, "08P01", "server sent AuthenticationSASL twice");
		return false;
	}
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
	const struct client_creds *cr = &s->pool->creds;
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
	const struct client_creds *cr = &s->pool->creds;
	char md5[MD5_PASSWD_LEN + 1], resp[MD5_PASSWD_LEN + 1];
	if (cr->kind == CRED_PLAIN)
		md5_secret_from_password(cr->secret, s->pool->user, md5);
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
	const struct client_creds *cr = &s->pool->creds;
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

/* The backend refused the login: pass its own error on, then end the session. */
static void server_login_error(struct server *s, const uint8_t *msg, uint32_t total)
{
	struct client *c = s->client;
	log_info("server", s->id, "backend %d refused the login", s->node_id);
	/* A refused login says nothing about the node's health, only about this login. */
	if (c && conn_send(&c->conn, msg, total) < 0)
		log_debug("server", s->id, "could not pass the login error to the client");
	server_close(s, "login refused");
	if (c)
		client_on_server_lost(c, NULL, "server refused the login");
}

static void server_login_done(struct server *s)
{
	struct client *c = s->client;
	bool first = !s->pool->have_welcome;
	s->ready = true;
	s->pool->have_welcome = true;
	if (first)
		client_pool_login_settled(s->w, s->pool);
	s->w->node_down_until_ms[s->node_id] = 0;
	log_debug("server", s->id, "logged in to backend %d, pid %u", s->node_id, s->be_pid);
	if (!c) {
		server_park(s);
		return;
	}
	server_set_state(s, SV_ACTIVE);
	if (!server_sync_params(s, c))
		return;
	client_on_server_ready(c);
}

/* Handles one whole login-phase message; false when the server was closed or is done. */
static bool server_login_message(struct server *s, const struct frame *f, const uint8_t *raw)
{
	switch (f->type) {
	case PqMsg_AuthenticationRequest:
		return server_handle_auth(s, f->body, f->len);
	case PqMsg_ErrorResponse:
		server_login_error(s, raw, f->total);
		return false;
	case PqMsg_ParameterStatus:
		server_record_param(s, f->body, f->len, true);
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

void server_login_scan(struct server *s)
{
	while (s->state == SV_LOGIN && s->conn.rbuf) {
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
		/* Finished before the handler runs: what it starts sees only the bytes behind. The
		 * bytes stay in place until the buffer is tidied, after the handler returned. */
		iobuf_consume(b, f.total);
		bool more = server_login_message(s, &f, raw);
		if (s->state == SV_CLOSING)
			return;
		if (!more)
			break;
	}
}
