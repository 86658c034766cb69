/*
 * Client authentication: pgrelay checks the client against the users file (and the hba rules),
 * then logs into backends itself with the credentials it keeps (struct client_creds).
 *
 * Methods: SCRAM-SHA-256 (verifier or plain-text secret; the verifier of a plain secret was
 * computed at load), md5 (md5 or plain secret), password (cleartext over the wire), trust,
 * reject. An unknown user goes through the same exchange as a known one with a made-up secret
 * and fails at the end with 28P01, so the reply does not tell which user names exist; its
 * method is the one most known users get under the same rule (users_stand_in).
 * Nothing secret is logged; client-supplied names are logged escaped (log_untrusted).
 *
 * The "password" method against a SCRAM verifier costs one PBKDF2 (4096 iterations or more): it
 * runs on libuv's thread pool (client_check_password_async), never on the loop. While it runs the
 * client stays in CLS_PASSWORD with c->lg->scram allocated as the "check running" mark (the
 * password method has no other use for it); the job finds its client again by id when it completes,
 * so a client that left meanwhile (timeout, disconnect) costs nothing but the job's own memory.
 */
#include <openssl/crypto.h>
#include <stdio.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

#include "admin/console.h"
#include "auth/hba.h"
#include "auth/md5.h"
#include "auth/scram.h"
#include "auth/users.h"
#include "net/tls_ctx.h"
#include "pool/client.h"
#include "pool/client_authq.h"
#include "pool/pool.h"
#include "pool/server.h"
#include "pool/worker.h"
#include "protocol/builder.h"
#include "protocol/pqmsg.h"
#include "protocol/reader.h"
#include "util/log.h"

/* The method this login uses, chosen by client_auth_start. */
static enum hba_method client_method(const struct client *c)
{
	return (enum hba_method)c->lg->auth_method;
}

void client_drop_scram(struct client *c)
{
	if (c->lg && c->lg->scram) {
		OPENSSL_cleanse(c->lg->scram, sizeof(*c->lg->scram));
		free(c->lg->scram);
		c->lg->scram = NULL;
	}
}

void client_free_login_state(struct client *c)
{
	if (!c->lg)
		return;
	client_drop_scram(c);
	client_authq_free(c);
	pool_creds_free(&c->lg->creds);
	free(c->lg);
	c->lg = NULL;
}

static void client_auth_fail(struct client *c)
{
	char user[LOG_UNTRUSTED_BUF];
	client_authq_login_failed(c);
	client_disconnect(c, "28P01", "password authentication failed for user \"%s\"",
			  log_untrusted(c->user, user, sizeof(user)));
}

static bool client_send_auth_request(struct client *c, uint32_t code, const void *extra,
				     size_t extra_len)
{
	uint8_t store[SCRAM_MAX_MSG + 32];
	struct builder b;
	builder_init(&b, store, sizeof(store));
	builder_auth_request(&b, code, extra, extra_len);
	bool ok = builder_ok(&b) && client_send(c, b.data, b.len);
	builder_free(&b);
	return ok;
}

/* Copies what later backend logins need out of the users entry (the config may be reloaded). */
static void client_copy_creds(struct client *c, const struct user_entry *e)
{
	c->lg->creds.kind = CRED_NONE;
	if (!e)
		return;
	if (e->kind == SECRET_PLAIN) {
		c->lg->creds.secret = strdup(e->plain);
		c->lg->creds.kind = c->lg->creds.secret ? CRED_PLAIN : CRED_NONE;
	} else if (e->kind == SECRET_MD5) {
		c->lg->creds.secret = strdup(e->md5);
		c->lg->creds.kind = c->lg->creds.secret ? CRED_MD5 : CRED_NONE;
	}
	if (e->has_scram)
		c->lg->creds.scram = e->scram;
	if (e->kind != SECRET_SCRAM)
		return;
	/* CRED_SCRAM_KEY becomes usable once the client's proof gave us its ClientKey. */
}

/*
 * A secret that can never match, the same for the same name every time (as PostgreSQL's mock
 * authentication), so the exchange does not reveal whether a user exists.
 */
static void client_mock_secret(struct client *c)
{
	if (!scram_secret_mock(c->user, &c->lg->creds.scram))
		memset(&c->lg->creds.scram, 0, sizeof(c->lg->creds.scram));
	c->lg->auth_mock = true;
}

/*
 * Matches c against the hba rules once per login (as PostgreSQL does): the method of the matching
 * rule and its clientcert option stay in lg for a second pick (after auth_query answered). False
 * when the peer's address is unknown.
 */
static bool client_match_hba(struct client *c, const struct hba *hba)
{
	const struct sockaddr_storage *ss = &c->lg->peer;
	if (ss->ss_family == AF_UNSPEC && conn_peer_addr(&c->conn, &c->lg->peer) < 0)
		return false;
	enum hba_clientcert cert;
	enum hba_method m = hba_match_cert(hba, c->database, c->user, (const struct sockaddr *)ss,
					   conn_is_tls(&c->conn), &cert);
	c->auth_clientcert = (uint8_t)cert;
	c->lg->hba_method = (uint8_t)m;
	c->lg->hba_known = true;
	return true;
}

static enum hba_method client_pick_method(struct client *c, const struct user_entry *e)
{
	struct config *cfg = c->w->cfg;
	enum hba_method m;
	/* An unknown user gets the method most known users get: the challenge does not tell. */
	struct user_entry stand_in;
	if (!e) {
		users_stand_in(cfg->users, &stand_in);
		e = &stand_in;
	}
	if (cfg->hba) {
		if (!c->lg->hba_known && !client_match_hba(c, cfg->hba))
			return HBA_NOMATCH;
		m = (enum hba_method)c->lg->hba_method;
		enum hba_method picked = users_pick_method(e, m);
		/* An md5-only secret under a scram rule fails like a wrong password, as PostgreSQL.
		 */
		if (picked == HBA_REJECT && m != HBA_REJECT)
			picked = HBA_SCRAM;
		return picked;
	}
	return users_default_method(e);
}

/*
 * The client certificate checks the hba rule (clientcert, method cert) or tls.client_mode ask
 * for, PostgreSQL's wording. False after closing the client.
 */
static bool client_check_certificate(struct client *c, enum hba_method m)
{
	enum hba_clientcert need = (enum hba_clientcert)c->auth_clientcert;
	int mode = c->w->cfg->tls.client_mode;
	if (mode == TLS_VERIFY_CA && need < HBA_CLIENTCERT_VERIFY_CA)
		need = HBA_CLIENTCERT_VERIFY_CA;
	if (mode == TLS_VERIFY_FULL)
		need = HBA_CLIENTCERT_VERIFY_FULL;
	if (need == HBA_CLIENTCERT_NONE)
		return true;
	SSL *ssl = conn_ssl(&c->conn);
	char user[LOG_UNTRUSTED_BUF];
	log_untrusted(c->user, user, sizeof(user));
	if (!ssl || !tls_peer_verified(ssl)) {
		client_disconnect(c, "28000", "connection requires a valid client certificate");
		return false;
	}
	char cn[256];
	if (need == HBA_CLIENTCERT_VERIFY_FULL &&
	    (!tls_peer_cn(ssl, cn, sizeof(cn)) || strcmp(cn, c->user) != 0)) {
		if (m == HBA_CERT)
			client_disconnect(c, "28000",
					  "certificate authentication failed for user \"%s\"",
					  user);
		else
			client_disconnect(
				c, "28000",
				"certificate validation (clientcert=verify-full) failed for "
				"user \"%s\": CN mismatch",
				user);
		return false;
	}
	return true;
}

/* SCRAM-SHA-256-PLUS is offered over TLS when pgrelay's certificate has a binding hash. */
static bool client_offers_plus(const struct client *c)
{
	return conn_ssl(&c->conn) && c->w->cfg->tls_clients.endpoint_len > 0;
}

void client_auth_start(struct client *c)
{
	const struct user_entry *e = users_find(c->w->cfg->users, c->user);
	/* Not in users_file: auth_query may know the user (unless the hba rule needs no secret). */
	if (!e && client_authq_start(c, client_pick_method(c, NULL)))
		return; /* it calls client_auth_continue with the answer */
	client_auth_continue(c, e);
}

void client_auth_continue(struct client *c, const struct user_entry *e)
{
	enum hba_method m = client_pick_method(c, e);
	client_copy_creds(c, e);
	c->lg->auth_method = (int)m;
	if (m != HBA_NOMATCH && m != HBA_REJECT && !client_check_certificate(c, m))
		return;
	switch (m) {
	case HBA_NOMATCH:
	case HBA_REJECT: {
		char user[LOG_UNTRUSTED_BUF], db[LOG_UNTRUSTED_BUF];
		client_disconnect(c, "28000",
				  "pg_hba.conf rejects connection for user \"%s\", database \"%s\"",
				  log_untrusted(c->user, user, sizeof(user)),
				  log_untrusted(c->database, db, sizeof(db)));
		return;
	}
	case HBA_TRUST:
	case HBA_CERT: /* client_check_certificate matched the CN to the user */
		client_auth_ok(c);
		return;
	case HBA_PASSWORD:
		if (!e) {
			struct user_entry stand_in;
			users_stand_in(c->w->cfg->users, &stand_in);
			/* Where most users have a verifier, an unknown one costs a PBKDF2 too. */
			if (stand_in.kind == SECRET_SCRAM)
				client_mock_secret(c);
			c->lg->auth_mock = true;
		}
		c->login = CLS_PASSWORD;
		(void)client_send_auth_request(c, AUTH_REQ_PASSWORD, NULL, 0);
		return;
	case HBA_MD5:
		if (!e || e->kind == SECRET_SCRAM)
			c->lg->auth_mock = true;
		if (RAND_bytes(c->lg->md5_salt, 4) != 1) {
			client_disconnect(c, "XX000", "could not generate random salt");
			return;
		}
		c->login = CLS_PASSWORD;
		(void)client_send_auth_request(c, AUTH_REQ_MD5, c->lg->md5_salt, 4);
		return;
	case HBA_SCRAM: {
		if (!e || !e->has_scram)
			client_mock_secret(c);
		c->lg->scram = calloc(1, sizeof(*c->lg->scram));
		if (!c->lg->scram) {
			client_disconnect(c, "53200", "out of memory");
			return;
		}
		/* Lists end with an empty name; PLUS first, as PostgreSQL orders them. */
		static const char mechs[] = "SCRAM-SHA-256\0";
		static const char mechs_plus[] = "SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0";
		c->login = CLS_SASL_INITIAL;
		if (client_offers_plus(c))
			(void)client_send_auth_request(c, AUTH_REQ_SASL, mechs_plus,
						       sizeof(mechs_plus));
		else
			(void)client_send_auth_request(c, AUTH_REQ_SASL, mechs, sizeof(mechs));
		return;
	}
	}
}

static bool client_check_password(struct client *c, const char *pw, size_t len)
{
	if (c->lg->auth_mock)
		return false;
	if (client_method(c) == HBA_MD5) {
		if (c->lg->creds.kind != CRED_PLAIN && c->lg->creds.kind != CRED_MD5)
			return false;
		char md5[MD5_PASSWD_LEN + 1];
		if (c->lg->creds.kind == CRED_PLAIN)
			md5_secret_from_password(c->lg->creds.secret, c->user, md5);
		else
			memcpy(md5, c->lg->creds.secret, sizeof(md5));
		return md5_check_response(md5, c->lg->md5_salt, pw, len);
	}
	/* Cleartext password method. */
	if (c->lg->creds.kind == CRED_PLAIN) {
		size_t n = strlen(c->lg->creds.secret);
		return n == len && CRYPTO_memcmp(c->lg->creds.secret, pw, n) == 0;
	}
	if (c->lg->creds.kind == CRED_MD5) {
		char md5[MD5_PASSWD_LEN + 1];
		md5_secret_from_password(pw, c->user, md5);
		return CRYPTO_memcmp(md5, c->lg->creds.secret, MD5_PASSWD_LEN) == 0;
	}
	/* SCRAM verifier: client_check_password_async. */
	return false;
}

/* One "password" check against a SCRAM verifier, on the thread pool. */
struct client_pw_job {
	uv_work_t req;
	struct worker *w;	    /* borrowed: outlives its loop's work requests */
	uint64_t client_id;	    /* the client is found again by id: it may be gone */
	struct scram_secret secret; /* copy: the config may be reloaded meanwhile */
	char *password;		    /* owned copy, cleansed before free */
	size_t password_len;
	bool mock; /* unknown user: run the same PBKDF2, then fail */
	bool ok;   /* result, written by the thread */
};

static bool client_pw_pending(const struct client *c)
{
	return client_method(c) == HBA_PASSWORD && c->login == CLS_PASSWORD && c->lg->scram;
}

static void client_pw_job_free(struct client_pw_job *job)
{
	OPENSSL_cleanse(job->password, job->password_len);
	free(job->password);
	OPENSSL_cleanse(job, sizeof(*job));
	free(job);
}

static void client_pw_work(uv_work_t *req)
{
	struct client_pw_job *job = req->data;
	job->ok = scram_secret_check_password(&job->secret, job->password) && !job->mock;
}

static void client_pw_done(uv_work_t *req, int status)
{
	struct client_pw_job *job = req->data;
	struct client *c = NULL;
	struct list_node *pos, *tmp;
	list_for_each_safe(pos, tmp, &job->w->login_clients)
	{
		struct client *o = list_entry(pos, struct client, node);
		if (o->id == job->client_id) {
			c = o;
			break;
		}
	}
	if (!c || c->state != CL_LOGIN || !client_pw_pending(c)) {
		client_pw_job_free(job); /* the client left while its password was checked */
		return;
	}
	client_drop_scram(c); /* clears the "check running" mark */
	if (status != 0 || !job->ok) {
		client_pw_job_free(job);
		client_auth_fail(c);
		return;
	}
	/* Backends need the cleartext password: the file only had a verifier. */
	c->lg->creds.secret = strndup(job->password, job->password_len);
	c->lg->creds.kind = c->lg->creds.secret ? CRED_PLAIN : CRED_NONE;
	client_pw_job_free(job);
	client_auth_ok(c);
}

/* Starts the PBKDF2 check of pw against c's verifier (or mock); false when out of resources. */
static bool client_check_password_async(struct client *c, const char *pw, size_t len)
{
	struct client_pw_job *job = calloc(1, sizeof(*job));
	c->lg->scram = calloc(1, sizeof(*c->lg->scram));
	if (!job || !c->lg->scram) {
		free(job);
		return false;
	}
	job->password = strndup(pw, len);
	if (!job->password) {
		free(job);
		return false;
	}
	job->req.data = job;
	job->w = c->w;
	job->client_id = c->id;
	job->secret = c->lg->creds.scram;
	job->password_len = len;
	job->mock = c->lg->auth_mock;
	if (uv_queue_work(&c->w->loop, &job->req, client_pw_work, client_pw_done) < 0) {
		client_pw_job_free(job);
		return false;
	}
	return true;
}

static void client_auth_password(struct client *c, const uint8_t *body, uint32_t len)
{
	struct reader r;
	const char *pw;
	size_t pwlen;
	reader_init(&r, body, len);
	if (!reader_cstr(&r, &pw, &pwlen) || !reader_end(&r)) {
		client_disconnect(c, "08P01", "invalid password packet");
		return;
	}
	if (client_method(c) == HBA_PASSWORD && c->lg->creds.kind == CRED_NONE &&
	    c->lg->creds.scram.iterations > 0) {
		/* A verifier (or an unknown user made to look like one): PBKDF2 off the loop. */
		if (!client_check_password_async(c, pw, pwlen))
			client_disconnect(c, "53200", "out of memory");
		return;
	}
	if (!client_check_password(c, pw, pwlen)) {
		client_auth_fail(c);
		return;
	}
	/* A cleartext password is what backends need when the file only had a verifier. */
	if (client_method(c) == HBA_PASSWORD && c->lg->creds.kind == CRED_NONE) {
		c->lg->creds.secret = strndup(pw, pwlen);
		c->lg->creds.kind = c->lg->creds.secret ? CRED_PLAIN : CRED_NONE;
	}
	client_auth_ok(c);
}

static void client_auth_sasl_initial(struct client *c, const uint8_t *body, uint32_t len)
{
	struct reader r;
	const char *mech;
	int32_t dlen;
	const uint8_t *data;
	reader_init(&r, body, len);
	if (!reader_cstr(&r, &mech, NULL) || !reader_i32(&r, &dlen)) {
		client_disconnect(c, "08P01", "invalid SASL initial response");
		return;
	}
	const struct tls_server_ctx *tc = &c->w->cfg->tls_clients;
	struct scram_cbind cb = { client_offers_plus(c), false, tc->endpoint_hash,
				  tc->endpoint_len };
	if (cb.offered && strcmp(mech, "SCRAM-SHA-256-PLUS") == 0) {
		cb.selected = true;
	} else if (strcmp(mech, "SCRAM-SHA-256") != 0) {
		client_disconnect(c, "08P01",
				  "client selected an invalid SASL authentication mechanism");
		return;
	}
	if (dlen < 0 || !reader_bytes(&r, (size_t)dlen, &data) || !reader_end(&r)) {
		client_disconnect(c, "08P01", "invalid SASL initial response");
		return;
	}
	char out[SCRAM_MAX_MSG];
	size_t outlen;
	if (!scram_server_first(c->lg->scram, &c->lg->creds.scram, &cb, (const char *)data,
				(size_t)dlen, out, sizeof(out), &outlen)) {
		client_disconnect(c, "08P01", "malformed SCRAM message");
		return;
	}
	c->login = CLS_SASL_FINAL;
	(void)client_send_auth_request(c, AUTH_REQ_SASL_CONT, out, outlen);
}

static void client_auth_sasl_final(struct client *c, const uint8_t *body, uint32_t len)
{
	char out[SCRAM_MAX_MSG];
	size_t outlen;
	if (!scram_server_final(c->lg->scram, (const char *)body, len, out, sizeof(out), &outlen) ||
	    c->lg->auth_mock) {
		client_auth_fail(c);
		return;
	}
	if (c->lg->creds.kind == CRED_NONE) {
		memcpy(c->lg->creds.client_key, c->lg->scram->client_key, SCRAM_KEY_LEN);
		c->lg->creds.kind = CRED_SCRAM_KEY;
	}
	if (!client_send_auth_request(c, AUTH_REQ_SASL_FIN, out, outlen))
		return;
	client_drop_scram(c);
	client_auth_ok(c);
}

void client_auth_message(struct client *c, uint8_t type, const uint8_t *body, uint32_t len)
{
	(void)type; /* the caller checked it is a password-family message */
	if (client_pw_pending(c)) {
		client_disconnect(c, "08P01", "unexpected message during login");
		return;
	}
	switch (c->login) {
	case CLS_PASSWORD:
		client_auth_password(c, body, len);
		return;
	case CLS_SASL_INITIAL:
		client_auth_sasl_initial(c, body, len);
		return;
	case CLS_SASL_FINAL:
		client_auth_sasl_final(c, body, len);
		return;
	case CLS_STARTUP:
	case CLS_WAIT_SERVER:
	case CLS_AUTH_QUERY:
		client_disconnect(c, "08P01", "unexpected message during login");
		return;
	}
}

void client_auth_ok(struct client *c)
{
	client_authq_login_ok(c);
	if (log_enabled(LOG_LVL_DEBUG)) {
		char user[LOG_UNTRUSTED_BUF];
		log_debug("client", c->id, "authenticated user=%s method=%s",
			  log_untrusted(c->user, user, sizeof(user)),
			  hba_method_name(client_method(c)));
	}
	if (console_is_database(c->database)) {
		/* The virtual database: no pool, no backend. */
		if (client_send_auth_request(c, AUTH_REQ_OK, NULL, 0))
			console_login(c);
		return;
	}
	if (!client_attach_pool(c))
		return;
	pool_adopt_login(c->pool, c);
	client_keep_only_app_name(c);
	if (c->pool->have_welcome) {
		/* AuthenticationOk and the welcome in one write, as PostgreSQL sends them: a login
		 * costs one system call and one wakeup of the client less. */
		client_send_welcome(c, true);
		return;
	}
	if (!client_send_auth_request(c, AUTH_REQ_OK, NULL, 0))
		return;
	/* First client of this pool: its backend login provides the welcome. */
	c->login = CLS_WAIT_SERVER;
	if (c->pool->n_servers > 0)
		return; /* another client's login will provide it: client_pool_login_settled */
	int node = client_login_node(c);
	if (!pool_may_open(c->w, c->pool, node)) {
		/* A shared cap is full: wait for a slot, freeing an idle one elsewhere if possible.
		 */
		(void)pool_evict_idle_for(c->w, c->pool, node);
		return;
	}
	if (!server_connect(c->w, c->pool, node, c))
		client_disconnect(c, "08006", "could not connect to server");
}

void client_send_welcome(struct client *c, bool auth_ok)
{
	struct builder b;
	uint8_t store[2048];
	builder_init(&b, store, sizeof(store));
	if (auth_ok)
		builder_auth_request(&b, AUTH_REQ_OK, NULL, 0);
	const struct pool *p = c->pool;
	for (int i = 0; i < p->n_params; i++) {
		const char *value = p->params[i].value;
		/* application_name is per client, not per pool. */
		if (strcmp(p->params[i].name, "application_name") == 0)
			value = c->application_name;
		/* Whichever node gave the pool its welcome, a session is read-write unless it was
		 * pinned to standbys (libpq's target_session_attrs reads this). */
		if (strcmp(p->params[i].name, "in_hot_standby") == 0)
			value = c->route.listener == ROUTE_FORCE_STANDBY ? "on" : "off";
		builder_param_status(&b, p->params[i].name, value);
	}
	if (client_finish_welcome(c, &b))
		log_debug("client", c->id, "logged in");
}

bool client_finish_welcome(struct client *c, struct builder *b)
{
	if (!cancel_map_add(&c->w->cancels, c)) {
		builder_free(b);
		client_disconnect(c, "53200", "out of memory");
		return false;
	}
	builder_backend_key(b, c->cancel_pid, c->cancel_key);
	builder_ready(b, TXN_IDLE);
	bool ok = builder_ok(b) && client_send(c, b->data, b->len);
	builder_free(b);
	if (!ok) {
		if (c->state != CL_CLOSING)
			client_disconnect(c, "53200", "out of memory");
		return false;
	}
	client_set_state(c, CL_ACTIVE);
	client_free_login_state(c); /* the pool adopted the credentials before the welcome */
	/* Bytes the client pipelined behind its login are relayed now. */
	conn_want_read(&c->conn, true);
	if (c->conn.rbuf && !iobuf_empty(c->conn.rbuf))
		c->conn.ops->on_data(&c->conn);
	return true;
}
