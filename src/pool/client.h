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
#include "pool/relay.h"
#include "route/router.h"
#include "util/list.h"

#define CLIENT_MAX_LINKS   4	/* backend connections one session holds at once (one per node) */
#define CLIENT_TXN_LOG_MAX 2048 /* transaction-control text kept for replay on the primary */

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
	struct server *server;	      /* borrowed: the active link, where messages go now */
	struct server *links[CLIENT_MAX_LINKS]; /* borrowed: every server linked to it (server
						   included); each links back (s->client) */
	int n_links;
	struct route_session route;  /* where its statements go (router.h) */
	int want_node;		     /* CL_WAITING: the node it waits for; -1 for any primary */
	uint64_t node_wait_since_ms; /* loop time it began to wait for a node to exist, 0 if not */
	int unit_node;		     /* the node of the unit being sent, -1 between units */
	bool in_unit;		     /* an extended-protocol unit is open (until its Sync) */
	uint8_t unnamed_route;	     /* 1 + route of the unnamed statement, 0 unknown */
	uint32_t unnamed_flags;	     /* its CLASSIFY_* flags */
	char *txn_log;		     /* owned: BEGIN/SAVEPOINT/SET LOCAL text of the open
					transaction, replayed when the primary joins it */
	uint32_t txn_log_len;
	bool wait_boundary;	 /* its next unit waits for the active link's boundary */
	bool switch_pending;	 /* the relay stopped to move to pending.node */
	bool admin_unit_pending; /* the relay stopped at an extended admin unit */
	bool plain_read;    /* the Query being relayed was classified a read (no session state) */
	bool route_pending; /* pending holds the decision for the message at the cursor */
	struct route_decision pending;

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
/* role: enum listener_role of the port it came in on. */
void client_accept(struct worker *w, uv_stream_t *listener, int role);
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

/* Link bookkeeping, called by server.c when s->client is set to c or cleared. */
void client_link_add(struct client *c, struct server *s);
void client_link_remove(struct client *c, struct server *s);
/* How a link was lost, for client_link_lost(). */
enum link_loss {
	LINK_LOST_BUSY,	  /* in a request or a transaction: the session cannot go on */
	LINK_LOST_IDLE,	  /* at a boundary outside a transaction */
	LINK_LOST_UNUSED, /* never carried anything of the client (its connect failed) */
};
/*
 * A linked server to node failed and is closed. The session goes on when it can do without it
 * (an unused link: its unit waits for the cluster's verdict when a manager runs), else it ends
 * with sqlstate.
 */
void client_link_lost(struct client *c, int node, enum link_loss how, const char *sqlstate,
		      const char *reason);
/* A ReadyForQuery of the active link s reached the client (routing bookkeeping). */
void client_on_ready(struct client *c, struct server *s);
/* Routing (client_route.c): decides the node of a unit starting with f; see there. */
enum relay_verdict client_route_message(struct client *c, const struct frame *f);
/* Sends c on to node now: switches its active link or gets one. True if it may relay now. */
bool client_use_node(struct client *c, int node);
/* Answers the admin unit the relay stopped at; true if the relay may go on. */
bool client_apply_admin_unit(struct client *c);
/* Carries out a switch the relay stopped for; true if the relay may go on now. */
bool client_apply_switch(struct client *c);
/*
 * Bind/Describe of statement name is about to reach c->server: makes sure it exists there as c
 * prepared it (hidden Close/Parse). RELAY_STOP: call again once a forward finished.
 */
enum relay_verdict client_use_statement(struct client *c, const char *name);
/* True if c's statements are followed across backend connections (pooled or split). */
bool client_tracks_statements(const struct client *c);
/* Records where a Parse's statement may run, for the Binds that use it later. */
void client_route_note_parse(struct client *c, const struct frame *f);
/* Gets c a backend connection to node (idle, new, or a place in the queue); true if ready. */
bool client_acquire_server(struct client *c, int node);
/* Parks c until a cluster view offers a node for it (node -1: its primary/standby). */
void client_wait_for_node(struct client *c, int node);
/* The node c's first backend login goes to (its pool's welcome). */
int client_login_node(struct client *c);
/* Runs c's relay if it is active (bytes may be waiting in its buffer). */
void client_kick(struct client *c);
/* A whole message (body included) at offset pos of c's read buffer, parsed into f. */
bool client_whole_frame_at(const struct client *c, uint32_t pos, struct frame *f);
/* SQL that creates session state (pins in transaction mode; primary-only when split). */
bool client_sql_needs_session(struct client *c, const char *sql, size_t len);
/* The worker's cluster view changed: waiting clients may go on, lost nodes are dropped. */
void client_view_changed(struct client *c);

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
