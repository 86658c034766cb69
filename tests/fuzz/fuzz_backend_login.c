/*
 * libFuzzer harness for backend login (src/pool/server_login.c, SV_LOGIN): what a PostgreSQL
 * server (or anything at its address) sends after pgrelay's StartupMessage: authentication requests
 * (cleartext, md5, SASL/SCRAM-SHA-256 with its continue and final messages), ParameterStatus,
 * BackendKeyData, notices, NegotiateProtocolVersion, ErrorResponse, ReadyForQuery.
 *
 * server.c drives login from the connection through static callbacks (server_on_data), so this
 * harness includes server.c itself, links server_login.c, and stubs what lies outside them: the
 * connection (conn_send records and checks the answers pgrelay sends), the client session and the
 * worker. The real framing, reader, builder, SCRAM, md5, pool parameter and outstanding-queue code
 * is linked.
 *
 * Input: a flags byte, a chunk-size byte, then the backend's bytes, delivered chunk by chunk
 * (chunk 0 = all at once) into the connection's read buffer, with server_on_data after each,
 * as libuv would. Flags: bits 0-1 the pool's credentials (none, plain "pencil", md5 of it,
 * SCRAM ClientKey of RFC 7677's verifier), bit 2 conn_send fails, bit 3 a client is linked.
 * RAND_bytes is replaced by a constant, so pgrelay's client nonce is always
 * "WlpaWlpaWlpaWlpaWlpaWlpa" and a seed can hold a complete SCRAM exchange.
 *
 * Checks: everything pgrelay sends is one well-formed frontend message; once closed the server
 * stays closed; after ReadyForQuery the server is logged in (idle or active); the welcome
 * parameters kept by the pool are NUL-terminated strings.
 */
#include "pool/server.c"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "protocol/frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond))                                                                       \
			__builtin_trap();                                                          \
	} while (0)

/* ---- deterministic randomness (the nonce; nothing here needs secrecy) ---- */

int RAND_bytes(unsigned char *buf, int num)
{
	memset(buf, 'Z', (size_t)num);
	return 1;
}

/* ---- stubs: connection ---- */

static bool send_fails;
static int sends;
static struct client *linked; /* the client of the current input, or NULL */

int conn_send(struct conn *c, const void *data, size_t len)
{
	struct frame f;
	/* One whole message: to the backend a frontend one (PasswordMessage, Terminate), to the
	 * client a backend one (the login ErrorResponse passed on). */
	bool to_client = linked && c == &linked->conn;
	CHECK(len >= 5);
	CHECK(frame_parse(data, len, to_client ? FRAME_FROM_SERVER : FRAME_FROM_CLIENT, 1u << 30,
			  &f) == FRAME_OK);
	CHECK(f.total == len && f.body_avail == f.len);
	sends++;
	return send_fails ? UV_EPIPE : 0;
}

void conn_want_read(struct conn *c, bool want)
{
	(void)c;
	(void)want;
}

void conn_close(struct conn *c)
{
	(void)c;
}

void conn_close_after_flush(struct conn *c)
{
	(void)c;
}

int conn_init(struct conn *c, uv_loop_t *loop, struct iobuf_pool *bufs, const struct conn_ops *ops,
	      void *owner)
{
	(void)c;
	(void)loop;
	(void)bufs;
	(void)ops;
	(void)owner;
	return UV_ENOMEM;
}

int conn_connect(struct conn *c, const struct sockaddr *addr)
{
	(void)c;
	(void)addr;
	return UV_ENOMEM;
}

/* TLS towards backends is off in this harness (no tls contexts in its config). */
int conn_start_tls(struct conn *c, SSL_CTX *ctx, bool server, const char *host, bool verify_host)
{
	(void)c;
	(void)ctx;
	(void)server;
	(void)host;
	(void)verify_host;
	CHECK(0);
	return UV_EINVAL;
}

SSL *conn_ssl(const struct conn *c)
{
	(void)c;
	return NULL;
}

const char *conn_tls_error(const struct conn *c)
{
	(void)c;
	return "TLS error";
}

const char *tls_version_name(SSL *ssl)
{
	(void)ssl;
	return "none";
}

const char *const tls_mode_names[] = { "disable",   "allow",	   "prefer", "require",
				       "verify-ca", "verify-full", NULL };

enum tls_mode config_backend_tls_mode(const struct config *cfg, int i)
{
	(void)cfg;
	(void)i;
	return TLS_DISABLE;
}

enum relay_result relay_scan(struct conn *src, struct conn *dst, uint32_t max_len,
			     const struct relay_ops *ops, void *owner)
{
	(void)src;
	(void)dst;
	(void)max_len;
	(void)ops;
	(void)owner;
	CHECK(0); /* no relay during login */
	return RELAY_BAD_MESSAGE;
}

/* ---- stubs: client session ---- */

static int client_events;

void client_disconnect(struct client *c, const char *sqlstate, const char *fmt, ...)
{
	(void)c;
	(void)sqlstate;
	(void)fmt;
	client_events++;
}

void client_kick(struct client *c)
{
	(void)c;
}

void client_link_add(struct client *c, struct server *s)
{
	(void)c;
	(void)s;
}

void client_link_remove(struct client *c, struct server *s)
{
	(void)c;
	(void)s;
}

void client_link_lost(struct client *c, int node, enum link_loss how, const char *sqlstate,
		      const char *reason)
{
	(void)c;
	(void)node;
	(void)how;
	CHECK(reason != NULL && (sqlstate == NULL || strlen(sqlstate) == 5));
	client_events++;
}

void client_on_ready(struct client *c, struct server *s)
{
	(void)c;
	(void)s;
}

void client_on_server_ready(struct client *c)
{
	(void)c;
	client_events++;
}

void client_on_server_lost(struct client *c, const char *sqlstate, const char *reason)
{
	(void)c;
	CHECK(reason != NULL && (sqlstate == NULL || strlen(sqlstate) == 5));
	client_events++;
}

const char *client_param(const struct client *c, int i)
{
	(void)c;
	(void)i;
	return NULL;
}

bool client_param_put(struct client *c, int i, char *value)
{
	(void)c;
	CHECK(i >= 0 && i < TP_COUNT);
	free(value);
	return true;
}

void client_pool_login_settled(struct worker *w, struct pool *p)
{
	(void)w;
	CHECK(p->have_welcome);
}

void client_resume_with_server(struct client *c)
{
	(void)c;
}

/* ---- stubs: worker ---- */

void worker_check_shutdown_done(struct worker *w)
{
	(void)w;
}

bool worker_fd_available(const struct worker *w)
{
	(void)w;
	return true;
}

void worker_report_backend_error(struct worker *w, int node)
{
	(void)w;
	(void)node;
}

/* ---- stubs: cancel ---- */

void cancel_abandoned(struct worker *w, const struct server *s)
{
	(void)w;
	(void)s;
}

/* ---- the fixture ---- */

static const char verifier_text[] =
	"SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY="
	":wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";
static const char password[] = "pencil";
static struct scram_secret verifier;
static uint8_t client_key[SCRAM_KEY_LEN];

static void init_once(void)
{
	static bool done;
	uint8_t salted[SCRAM_KEY_LEN];
	unsigned int n = 0;
	if (done)
		return;
	log_set_level(LOG_LVL_ERROR);
	CHECK(scram_secret_parse(verifier_text, &verifier));
	CHECK(PKCS5_PBKDF2_HMAC(password, (int)strlen(password), verifier.salt,
				(int)verifier.salt_len, verifier.iterations, EVP_sha256(),
				SCRAM_KEY_LEN, salted) == 1);
	CHECK(HMAC(EVP_sha256(), salted, SCRAM_KEY_LEN, (const unsigned char *)"Client Key", 10,
		   client_key, &n) &&
	      n == SCRAM_KEY_LEN);
	done = true;
}

/* True if a SCRAM iteration count above 4096 appears: plain-password mode would run PBKDF2 that
 * long on every input, so such inputs use the ClientKey mode. */
static bool big_iterations(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i + 3 < n; i++) {
		if (p[i] != ',' || p[i + 1] != 'i' || p[i + 2] != '=')
			continue;
		unsigned long v = 0;
		for (size_t j = i + 3; j < n && p[j] >= '0' && p[j] <= '9' && v <= 4096; j++)
			v = v * 10 + (p[j] - '0');
		if (v > 4096)
			return true;
	}
	return false;
}

static struct config fixture_cfg;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	init_once();
	if (size < 2 || size > 3 * SERVER_LOGIN_MSG_MAX)
		return 0;
	uint8_t flags = data[0];
	size_t chunk = data[1] ? data[1] : size;
	data += 2;
	size -= 2;

	/* The worker: zeroed, with the lists server.c moves servers between. */
	struct worker *wk = calloc(1, sizeof(*wk));
	CHECK(wk != NULL);
	memset(&fixture_cfg, 0, sizeof(fixture_cfg));
	wk->cfg = &fixture_cfg;
	wk->n_nodes = 1;
	list_init(&wk->connecting_servers);
	list_init(&wk->login_servers);
	list_init(&wk->active_servers);
	list_init(&wk->reset_servers);
	list_init(&wk->closing_servers);
	list_init(&wk->pools);

	struct pool *p = calloc(1, sizeof(*p));
	CHECK(p != NULL);
	static char key[] = "db\0user\0";
	p->key = key;
	p->database = key;
	p->user = key + 3;
	list_init(&p->nodes[0].idle_servers);
	list_init(&p->nodes[0].waiting_clients);
	int kind = flags & 3;
	if (kind == 3 && !big_iterations(data, size)) {
		p->creds.kind = CRED_SCRAM_KEY;
		p->creds.scram = verifier;
		memcpy(p->creds.client_key, client_key, SCRAM_KEY_LEN);
	} else if (kind == 1 || kind == 3) {
		p->creds.kind = big_iterations(data, size) ? CRED_SCRAM_KEY : CRED_PLAIN;
		p->creds.secret = strdup(password);
		if (p->creds.kind == CRED_SCRAM_KEY) {
			p->creds.scram = verifier;
			memcpy(p->creds.client_key, client_key, SCRAM_KEY_LEN);
			free(p->creds.secret);
			p->creds.secret = NULL;
		}
	} else if (kind == 2) {
		p->creds.kind = CRED_MD5;
		p->creds.secret = malloc(MD5_PASSWD_LEN + 1);
		CHECK(p->creds.secret != NULL);
		md5_secret_from_password(password, "user", p->creds.secret);
	}
	send_fails = flags & 4;
	sends = 0;
	client_events = 0;
	struct client *c = (flags & 8) ? calloc(1, sizeof(struct client)) : NULL;
	linked = c;

	struct server *s = calloc(1, sizeof(*s));
	CHECK(s != NULL);
	s->w = wk;
	s->pool = p;
	s->node_id = 0;
	s->client = c;
	s->conn.owner = s;
	s->id = 1;
	s->txn_status = TXN_IDLE; /* as server_connect sets it */
	req_queue_init(&s->reqs);
	stmt_map_init(&s->stmts);
	list_init(&s->node);
	s->state = SV_CONNECTING;
	list_append(&wk->connecting_servers, &s->node);
	server_set_state(s, SV_LOGIN);
	wk->n_servers = p->n_servers = p->nodes[0].n_servers = 1;

	struct iobuf *b = malloc(sizeof(*b) + IOBUF_SIZE);
	CHECK(b != NULL);
	memset(b, 0, sizeof(*b));
	b->cap = IOBUF_SIZE;
	s->conn.rbuf = b;

	size_t at = 0;
	bool ready_seen = false;
	while (at < size && s->state == SV_LOGIN) {
		size_t n = size - at < chunk ? size - at : chunk;
		if (n > b->cap - b->recv)
			n = b->cap - b->recv;
		if (n == 0)
			break; /* a full buffer and no progress: the relay would stop reading */
		memcpy(b->data + b->recv, data + at, n);
		b->recv += (uint32_t)n;
		at += n;
		server_on_data(&s->conn);
		CHECK(b->done <= b->parsed && b->parsed <= b->recv && b->recv <= b->cap);
	}
	if (s->state == SV_IDLE || s->state == SV_ACTIVE) {
		ready_seen = true;
		CHECK(s->ready && p->have_welcome);
		CHECK(s->state == (c ? SV_ACTIVE : SV_IDLE));
	}
	(void)ready_seen;
	for (int i = 0; i < p->n_params; i++)
		CHECK(p->params[i].name && p->params[i].value &&
		      strlen(p->params[i].value) < SERVER_LOGIN_MSG_MAX);
	for (int i = 0; i < TP_COUNT; i++)
		CHECK(!s->param[i] || strlen(s->param[i]) < SERVER_LOGIN_MSG_MAX);

	/* Tear down: close (idempotent), then what conn's close callback would do. */
	enum server_state before = s->state;
	server_close(s, "end of input");
	CHECK(s->state == SV_CLOSING);
	if (before == SV_CLOSING)
		CHECK(s->scram == NULL);
	s->conn.rbuf = NULL;
	free(b);
	list_del(&s->node);
	server_free_state(s);
	free(s);
	free(c);
	for (int i = 0; i < p->n_params; i++) {
		free(p->params[i].name);
		free(p->params[i].value);
	}
	pool_creds_free(&p->creds);
	free(p);
	free(wk);
	return 0;
}
