/*
 * Client connections: the frontend side of a session.
 *
 * States (each is exactly one worker list; client_set_state() is the only way to move):
 *   CL_LOGIN    startup packet, SSL/GSS negotiation, authentication, waiting for the first
 *               backend welcome; on worker->login_clients, swept for authentication_timeout.
 *   CL_ACTIVE   logged in; messages are relayed to the linked server, which is connected lazily
 *               at the first message when the welcome is already known; on active_clients.
 *   CL_WAITING  logged in, has a message to send, but its pool has no backend connection free
 *               and may not open one: on pool->waiting_clients (arrival order), reading paused,
 *               swept for pool.query_wait_timeout.
 *   CL_CLOSING  close started (error sent or peer gone); waits for the handle to close;
 *               on closing_clients, swept so a peer that never reads cannot hold it open.
 *   CL_CANCEL   a connection that carried a CancelRequest; closed right after (login list).
 */
#ifndef PGRELAY_POOL_CLIENT_H
#define PGRELAY_POOL_CLIENT_H

#include <stdbool.h>
#include <stdint.h>

#include "auth/scram.h"
#include "net/conn.h"
#include "pool/pool.h"
#include "pool/prepared.h"
#include "util/list.h"

struct worker;
struct server;
struct pool;

enum client_state { CL_LOGIN, CL_ACTIVE, CL_WAITING, CL_CLOSING, CL_CANCEL };

/* Where a client in CL_LOGIN is. */
enum client_login_step {
	CLS_STARTUP,	  /* waiting for the startup packet (or SSLRequest / GSSENCRequest) */
	CLS_PASSWORD,	  /* sent a password or md5 request; waiting for the PasswordMessage */
	CLS_SASL_INITIAL, /* sent the SASL mechanisms; waiting for SASLInitialResponse */
	CLS_SASL_FINAL,	  /* sent server-first; waiting for client-final */
	CLS_WAIT_SERVER,  /* authenticated; waiting for the first backend login (the welcome) */
};

struct client {
	struct conn conn;      /* embedded; conn.owner == this */
	struct worker *w;      /* borrowed */
	struct list_node node; /* in the worker list of its state */
	enum client_state state;
	enum client_login_step login;
	uint64_t id;	   /* for log lines */
	uint64_t since_ms; /* loop time of the last state change */

	uint8_t *startup; /* owned: startup packet body (name\0value\0...\0) */
	uint32_t startup_len;
	const char *user;	      /* points into startup */
	const char *database;	      /* points into startup */
	const char *application_name; /* points into startup, or "" */
	struct pool *pool;	      /* borrowed: the pool for (database, user, options) */
	struct server *server;	      /* borrowed link; the server links back */

	uint32_t cancel_pid; /* pgrelay's BackendKeyData for this client */
	uint32_t cancel_key;
	struct client_creds creds;
	struct scram_server *scram; /* owned during SASL, freed after */
	uint8_t md5_salt[4];
	int auth_method;   /* enum hba_method chosen at client_auth_start */
	bool auth_mock;	   /* unknown user or unusable secret: the exchange must fail */
	char txn_status;   /* from the last ReadyForQuery: I, T or E */
	bool ssl_answered; /* answered one SSLRequest already */
	bool gss_answered; /* answered one GSSENCRequest already */
	bool terminating;  /* saw Terminate; closes once earlier bytes are sent */
	bool pinned; /* used a session feature: keeps its backend connection (transaction mode) */
	uint64_t last_active_ms; /* loop time of the last client bytes or finished request */
	struct stmt_map stmts;	 /* its named prepared statements (transaction mode) */
	char *param[TP_COUNT]; /* owned: tracked parameters it changed; NULL = pool's welcome value
				*/
};

/* Accepts a pending connection on the listener's handle. */
void client_accept(struct worker *w, uv_stream_t *listener);
/*
 * Ends the session: logs reason once, sends a FATAL ErrorResponse with sqlstate when sqlstate
 * is not NULL, closes after flushing, and releases the linked server (closed, never reused dirty).
 */
void client_disconnect(struct client *c, const char *sqlstate, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void client_set_state(struct client *c, enum client_state st);

/* The value a tracked parameter should have for this client (never NULL after login). */
const char *client_param(const struct client *c, int i);
/* Moves a CL_WAITING client onto server s (linked by the caller) and resumes its relay. */
void client_resume_with_server(struct client *c);

/* Called by server.c when the linked server finished logging in and may carry traffic. */
void client_on_server_ready(struct client *c);
/* Called by server.c when the linked server failed or closed; the session cannot continue. */
void client_on_server_lost(struct client *c, const char *sqlstate, const char *reason);

/* Sends a copy of a synthesised packet; on failure starts disconnect and returns false. */
bool client_send(struct client *c, const void *data, size_t len)
	__attribute__((warn_unused_result));

/*
 * A backend login of pool p finished (welcome known) or failed: clients that waited for the
 * pool's first login get their welcome, or one of them tries a login of its own.
 */
void client_pool_login_settled(struct worker *w, struct pool *p);

/* The login steps (client_auth.c). */
void client_auth_start(struct client *c);
void client_auth_message(struct client *c, uint8_t type, const uint8_t *body, uint32_t len);
/* Sends AuthenticationOk's tail: ParameterStatus, BackendKeyData, ReadyForQuery. */
void client_send_welcome(struct client *c);
/* Authentication succeeded: AuthenticationOk, then the welcome now or after a backend login. */
void client_auth_ok(struct client *c);
void client_free_login_state(struct client *c);

#endif
