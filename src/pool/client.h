/*
 * Client connections: the frontend side of a session.
 *
 * States (each is exactly one worker list; client_set_state() is the only way to move):
 *   CL_LOGIN    startup packet, SSL/GSS negotiation, authentication, waiting for the first
 *               backend welcome; on worker->login_clients, swept for authentication_timeout.
 *   CL_ACTIVE   logged in; messages are relayed to the linked server, which is connected lazily
 *               at the first message when the welcome is already known (a console client's are
 *               answered by admin/console.c); on active_clients.
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
#include <sys/socket.h>

#include "auth/scram.h"
#include "net/conn.h"
#include "pool/client_authq.h"
#include "pool/pool.h"
#include "pool/prepared.h"
#include "net/relay.h"
#include "route/router.h"
#include "util/list.h"

#define CLIENT_MAX_LINKS   4	/* backend connections one session holds at once (one per node) */
#define CLIENT_TXN_LOG_MAX 2048 /* transaction-control text kept for replay on the primary */

struct builder;
struct worker;
struct server;
struct pool;

/* The enums a client stores are packed to one byte each (GNU C, gcc and clang): struct client is
 * most of an idle instance's memory. */
enum __attribute__((packed)) client_state {
	CL_LOGIN,
	CL_ACTIVE,
	CL_WAITING,
	CL_CLOSING,
	CL_CANCEL
};

/*
 * Why an active session's relay is holding the message at its read cursor (doc/architecture.md
 * has the diagram). Changed only by client_set_hold(), which refuses impossible moves; the relay
 * loop (client_relay) is the one place that acts on a hold and resumes.
 *   HOLD_NONE         relaying.
 *   HOLD_BOUNDARY     the next unit goes elsewhere (or is answered here): it waits until the
 *                     active link has answered everything (server.c kicks the client then).
 *   HOLD_SWITCH       the next unit's node is decided (c->pending): the relay moves the session
 *                     to that node's link, getting one if needed, then presents the unit again.
 *   HOLD_ADMIN_UNIT   an extended-protocol unit at the cursor is an admin statement: answered
 *                     here as a whole.
 *   HOLD_TERMINATING  Terminate seen: everything before it is flushed, then the session ends.
 *                     Terminal.
 * Waiting for a backend connection or for a node to exist is the client state CL_WAITING.
 */
enum __attribute__((packed)) client_hold {
	HOLD_NONE,
	HOLD_BOUNDARY,
	HOLD_SWITCH,
	HOLD_ADMIN_UNIT,
	HOLD_TERMINATING
};

/*
 * The unit being relayed. A unit is one Query or FunctionCall (with its COPY data), or
 * extended-protocol messages up to a Sync; it never spans two backend links. A Query, a
 * FunctionCall or a Sync ends an extended unit; so does losing the active link.
 */
enum __attribute__((packed)) client_unit { UNIT_NONE, UNIT_EXTENDED };

/*
 * A read a standby may refuse (SQLSTATE 25006, e.g. a view over a function that writes) is run
 * again on the primary when no byte of its answer has reached the client (doc/routing.md).
 *   RETRY_NONE   nothing to watch.
 *   RETRY_ARMED  a simple Query went to a standby outside a transaction; its text is kept and the
 *                link watches the first message of the answer. The next unit waits meanwhile.
 *   RETRY_SEND   the standby refused it: the Query goes to the primary as soon as a link to it is
 *                ready (client_relay sends it before anything else).
 */
enum __attribute__((packed)) client_retry { RETRY_NONE, RETRY_ARMED, RETRY_SEND };
#define CLIENT_RETRY_MAX 8192 /* longest Query kept for a retry (bytes, with its NUL) */

/*
 * What a logged-in connection talks to. A client of the virtual database "pgbouncer" talks to
 * pgrelay's PgBouncer-compatible console (admin/console.h), never to a backend: it has no pool.
 *   CK_SESSION        a normal session, relayed to backends.
 *   CK_CONSOLE_STATS  console, user in stats_users: SHOW commands only.
 *   CK_CONSOLE_ADMIN  console, user in admin_users: every command.
 */
enum __attribute__((packed)) client_kind { CK_SESSION, CK_CONSOLE_STATS, CK_CONSOLE_ADMIN };

/*
 * A console command that answers once a condition holds (polled by the janitor, bounded by
 * shutdown_timeout); the console stops reading meanwhile.
 *   CW_NONE        nothing pending.
 *   CW_PAUSE       PAUSE: no server of the paused pools is linked to a client any more.
 *   CW_WAIT_CLOSE  WAIT_CLOSE: no server marked close_needed is left.
 */
enum __attribute__((packed)) console_wait { CW_NONE, CW_PAUSE, CW_WAIT_CLOSE };
#define CONSOLE_DB_MAX 64 /* bytes of a database name a console command names */

/* Where a client in CL_LOGIN is. */
enum __attribute__((packed)) client_login_step {
	CLS_STARTUP,	  /* waiting for the startup packet (or SSLRequest / GSSENCRequest) */
	CLS_PASSWORD,	  /* sent a password or md5 request; waiting for the PasswordMessage */
	CLS_SASL_INITIAL, /* sent the SASL mechanisms; waiting for SASLInitialResponse */
	CLS_SASL_FINAL,	  /* sent server-first; waiting for client-final */
	CLS_WAIT_SERVER,  /* authenticated; waiting for the first backend login (the welcome) */
	CLS_AUTH_QUERY,	  /* waiting for auth_query to fetch the user's secret (client_authq.c) */
};

/*
 * What only a login needs: the authentication exchange and the credentials the pool adopts. Kept
 * apart so that an idle logged-in client does not carry it (client_free_login_state).
 */
struct client_login_state {
	struct client_creds creds;
	struct sockaddr_storage
		peer;		    /* from accept4 (AF_UNSPEC if unknown): hba needs no syscall */
	struct scram_server *scram; /* owned during SASL, freed after */
	uint32_t startup_len;	    /* bytes of client.startup */
	uint8_t md5_salt[4];
	int auth_method;     /* enum hba_method chosen at client_auth_start */
	bool hba_known;	     /* hba_method and client.auth_clientcert hold the matching rule's */
	uint8_t hba_method;  /* enum hba_method of the matching hba rule */
	bool cancel_waiting; /* CL_CANCEL: a forwarded cancel closes this client (cancel.c) */
	bool auth_mock;	     /* unknown user or unusable secret: the exchange must fail */
	/* auth_query's part of the login (client_authq.c). */
	struct authq_login authq;
};

/*
 * One per client connection; 10,000 idle ones are most of a busy instance's memory. Members are
 * grouped by size to leave no padding (pointers and 64-bit counters, then 32-, 16- and 8-bit
 * members; the small enums are packed to one byte, node ids are 16 bits), and what few sessions
 * use is allocated when first used (param, route.cursors, the retry buffer, the SET snapshot,
 * ext): 568 bytes on x86-64, a 576-byte malloc chunk.
 */
struct client {
	struct conn conn;	 /* embedded; conn.owner == this */
	struct worker *w;	 /* borrowed */
	struct list_node node;	 /* in the worker list of its state */
	uint64_t id;		 /* for log lines */
	uint64_t since_ms;	 /* loop time of the last state change */
	uint64_t connect_ms;	 /* loop time it was accepted */
	uint64_t last_active_ms; /* loop time of the last client bytes or finished request */

	/*
	 * The startup packet body (name\0value\0...\0, lg->startup_len bytes), owned until the
	 * pool has adopted it; then only the application_name is kept here, or nothing when it
	 * points into the pool's copy (client_keep_only_app_name), and user and database point
	 * into the pool's key.
	 */
	uint8_t *startup;
	const char *user;	      /* points into startup, then into the pool's key */
	const char *database;	      /* points into startup, then into the pool's key */
	const char *application_name; /* points into startup, or "" */
	struct pool *pool;	      /* borrowed: the pool for (database, user, options) */
	struct server *server;	      /* borrowed: the active link, where messages go now */
	struct server *links[CLIENT_MAX_LINKS]; /* borrowed: every server linked to it (server
						   included); each links back (s->client) */
	/* The backend this session used last (weak, see server.last_client): taken again when it
	 * is idle, so per-backend state (sequences' currval, loaded libraries, plan caches and the
	 * statements prepared there) follows a transaction-mode session when the pool allows. */
	struct server *last_server;
	uint64_t unit_sent_us;	/* worker_now_us() when the oldest unanswered unit was sent, 0 if
				   none is being timed (pool/stats.h) */
	uint64_t xact_start_us; /* worker_now_us() when the open transaction's first unit was sent,
				   0 outside one (pool/stats.h) */
	/* Owned while logging in (client_accept), freed once welcomed or gone. */
	struct client_login_state *lg;
	/* Owned: the tracked parameters it changed, TP_COUNT entries made at its first change
	 * (most sessions never change one), NULL = the pool's welcome value. Read with
	 * client_param(), written with client_param_put(). */
	char **param;
	/* Owned: state of features a session may never use, made at the first use. */
	struct client_extras *ext;
	struct route_session route;    /* where its statements go (router.h) */
	struct route_decision pending; /* while route_pending (below) */
	struct stmt_map stmts;	       /* its named prepared statements (transaction mode) */

	uint32_t params_gen;	/* changes whenever param[] does (server_sync_params) */
	uint32_t unnamed_flags; /* CLASSIFY_* flags of the unnamed statement */
	uint32_t cancel_pid;	/* pgrelay's BackendKeyData for this client */
	uint32_t cancel_key;
	int16_t want_node; /* CL_WAITING: the node it waits for; -1 for any primary */
	int16_t unit_node; /* the node of the unit being sent, -1 between units */

	enum client_state state;
	enum client_login_step login;
	enum client_kind kind;		/* session or console; set at login */
	enum console_wait console_wait; /* a console command waiting to complete (see ext) */
	enum client_unit unit;		/* the unit whose messages are being relayed */
	enum client_hold hold;		/* why the relay is holding; only client_set_hold() */
	enum client_retry retry;	/* the kept unit: ext->retry_msg */
	uint8_t unnamed_route;		/* 1 + route of the unnamed statement, 0 unknown */
	char txn_status;		/* from the last ReadyForQuery: I, T or E */
	uint8_t auth_clientcert;	/* enum hba_clientcert of the matching hba rule */
	uint8_t n_links;		/* entries of links[] in use */
	/* Flags, one bit each (an idle session is mostly this struct). */
	bool ssl_answered : 1; /* answered one SSLRequest already */
	bool gss_answered : 1; /* answered one GSSENCRequest already */
	bool tls_direct : 1;   /* TLS started without SSLRequest (needs ALPN postgresql) */
	bool pinned : 1; /* used a session feature: keeps its backend connection (transaction mode)
			  */
	/* The primary is joining the open transaction: its settings are synced inside it, after
	 * the replayed BEGIN, so that a ROLLBACK reverts them there too (client_route.c). */
	bool defer_param_sync : 1;
	bool set_snap_taken : 1;  /* see client_extras.set_snap */
	bool txn_rolled_back : 1; /* see client_extras.set_snap */
	bool route_pending : 1;	  /* pending holds the decision for the message at the cursor */
};

/*
 * What a session keeps only once it uses the feature: made by client_extras() at the first
 * use, freed with the session. Idle sessions that never did (most, in a pool of thousands)
 * carry one pointer instead.
 */
struct client_extras {
	/* The console command waiting (client.console_wait): when it gives up, and for which
	 * database (owned, "" for every database). */
	uint64_t console_wait_until_ms;
	/* Loop time a CL_WAITING session began to wait for a node to exist, 0 if it does not. */
	uint64_t node_wait_since_ms;
	/* Prepared an admin statement once: a unit's Bind may be one (client_unit_is_admin). */
	bool admin_stmts;
	char *console_db;
	/* Owned: BEGIN/SAVEPOINT/SET LOCAL text of the open transaction, replayed when the primary
	 * joins it; txn_log_cap bytes, grown as needed up to CLIENT_TXN_LOG_MAX. */
	char *txn_log;
	uint32_t txn_log_len;
	uint32_t txn_log_cap;
	/* Owned copy of the last unnamed Parse when its unit did not bind it (client.c). */
	uint8_t *unnamed_msg;
	uint32_t unnamed_len;
	/* The unit kept for a retry (client.retry): its messages, retry_cap bytes grown to the
	 * longest unit kept, at most CLIENT_RETRY_MAX (owned). */
	uint32_t retry_len;
	char *retry_msg;
	uint32_t retry_cap;
	/*
	 * Followed settings PostgreSQL does not report, as they were before the first SET of the
	 * open transaction block (owned copies; client_sql.c): restored if the block rolls back,
	 * as PostgreSQL restores them. client.set_snap_taken says the snapshot exists;
	 * client.txn_rolled_back that the block's end was a ROLLBACK (its CommandComplete tag).
	 * TP_COUNT entries while set_snap_taken, else NULL.
	 */
	char **set_snap;
};

/* c's extras, made at the first call; NULL when out of memory (the caller does without). */
struct client_extras *client_extras(struct client *c) __attribute__((warn_unused_result));
/* Drops the kept copy of the unnamed statement's Parse, if any. */
void client_forget_unnamed(struct client *c);

#define CLIENT_POOL_KEY_MAX 2048 /* bytes of database \0 user \0 options */

/*
 * Authentication succeeded: finds or creates c's pool and its routing session. False if c was
 * disconnected (out of memory).
 */
bool client_attach_pool(struct client *c) __attribute__((warn_unused_result));
/*
 * After pool_adopt_login: frees c's startup packet, which the pool now holds, but for the
 * application_name, the only part of it a session reads after login. User and database then
 * point into the pool's key (the same strings), which lives as long as c is attached.
 */
void client_keep_only_app_name(struct client *c);

/* Accepts a pending connection on the listener's handle. */
/* role: enum listener_role of the port it came in on. */
void client_accept(struct worker *w, int fd, const struct sockaddr_storage *peer, int role);
/*
 * Ends the session: logs reason once, sends a FATAL ErrorResponse with sqlstate when sqlstate
 * is not NULL, closes after flushing, and releases the linked server (closed, never reused dirty).
 */
void client_disconnect(struct client *c, const char *sqlstate, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void client_set_state(struct client *c, enum client_state st);
/*
 * Moves c's relay hold to h. An impossible move (a bug) ends only this session, with SQLSTATE
 * XX000, and returns false: the process and every other session go on.
 */
bool client_set_hold(struct client *c, enum client_hold h) __attribute__((warn_unused_result));

/* The value a tracked parameter should have for this client (never NULL after login). */
const char *client_param(const struct client *c, int i);
/*
 * Makes value (owned, NULL for the pool's welcome value) c's own value of tracked parameter i,
 * freeing the one it replaces. False when out of memory: value is freed and i unchanged.
 */
bool client_param_put(struct client *c, int i, char *value) __attribute__((warn_unused_result));
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
/* ---- client_local.c: the unit walk, and what pgrelay answers without a backend ---- */
#define ROUTE_LOOKAHEAD_MAX 256 /* messages of one extended unit looked at before Sync */
struct unit_walk {
	uint32_t pos;	 /* offset of the next message in the read buffer */
	int n;		 /* messages returned so far */
	bool partial_ok; /* also return a last message whose body has not all arrived */
	bool ended;	 /* the Sync (or a partial message) was returned */
};
/* Starts a walk over the unit at the scan cursor of c's read buffer. */
void client_unit_walk_start(const struct client *c, struct unit_walk *w, bool partial_ok);
/* The next message of the unit in f; false past its Sync, at the end of the bytes received, at
 * a malformed message, or after ROUTE_LOOKAHEAD_MAX messages. */
bool client_unit_next(const struct client *c, struct unit_walk *w, struct frame *f);
/* Transaction mode, no backend: answers a unit of only Parse/Close/Flush; true if it did. */
bool client_answer_locally(struct client *c);
/* Is the extended unit at the cursor one admin statement (Parse of it, or Bind of a statement
 * that is one, then Describe/Execute/Close/Flush, up to a Sync in the buffer)? Sets *sql. */
bool client_unit_is_admin(struct client *c, const char **sql);
/* Answers the admin unit the relay stopped at; true if the relay may go on. */
bool client_apply_admin_unit(struct client *c);
/* A console client's bytes (simple and extended protocol), answered by admin/console.c. */
void client_console_relay(struct client *c);
/* Answers admin statement sql (simple protocol); false if it is not one. */
bool client_answer_admin(struct client *c, const char *sql, size_t len);
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
/* The standby c's Query went to refused it (25006) before any answer reached c: run it on the
 * primary (server.c calls this once the standby's ReadyForQuery was hidden). */
void client_retry_on_primary(struct client *c);
/* Sends a pending retry first; true if the relay may go on (client_route.c). */
bool client_relay_retry(struct client *c);
/* Runs c's relay if it is active (bytes may be waiting in its buffer). */
void client_kick(struct client *c);
/* A whole message (body included) at offset pos of c's read buffer, parsed into f. */
bool client_whole_frame_at(const struct client *c, uint32_t pos, struct frame *f);
/*
 * True when no statement can change where this session's units go, so none is classified for
 * its route: one node, load balancing off (everything on the primary), or a session pinned to
 * one role (client_route.c).
 */
bool client_route_is_fixed(const struct client *c);
/* ---- client_sql.c: what statements do to the session (the classifier's facts) ---- */
/*
 * The facts of one statement text (avail bytes, not necessarily NUL-terminated; whole: the
 * message is all here). Text that creates session state makes the session primary-only.
 */
void client_classify_text(struct client *c, const char *sql, size_t avail, bool whole,
			  struct route_facts *out);
/*
 * A Query message's text: its length without the NUL when the message is all here (then
 * client_relay_message has checked that the NUL is its only one, its last byte: no scan), else
 * the bytes that are here.
 */
static inline size_t client_query_text_len(const struct frame *f)
{
	return f->body_avail == f->len ? f->len - 1 : f->body_avail;
}
/* client_classify_text of a Query message's text, without scanning it for its end. */
void client_classify_query(struct client *c, const struct frame *f, struct route_facts *out);
/* client_classify_text of a Parse message's text; *name is its statement name. False (nothing
 * classified) if the name is not all here. */
bool client_classify_parse(struct client *c, const struct frame *f, const char **name,
			   struct route_facts *out) __attribute__((warn_unused_result));
/* Applies the session effects of sql (classified as f) that is about to run on c->server. */
void client_apply_sql_effects(struct client *c, const char *sql, size_t len,
			      const struct route_facts *f);
/* The transaction block ended (ReadyForQuery idle): a rollback restores followed settings. */
void client_settings_txn_ended(struct client *c);
/* c keeps its backend connection from now on, and reads from the primary (why: for the log). */
void client_pin(struct client *c, const char *why);
/* The worker's cluster view changed: waiting clients may go on, lost nodes are dropped. */
void client_view_changed(struct client *c);

/* Called by server_login.c when the linked server finished logging in and may carry traffic. */
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
/* Runs the login of c against e (users_file's or auth_query's entry; NULL: unknown user). */
void client_auth_continue(struct client *c, const struct user_entry *e);
void client_auth_message(struct client *c, uint8_t type, const uint8_t *body, uint32_t len);
/*
 * Sends AuthenticationOk's tail: ParameterStatus, BackendKeyData, ReadyForQuery; with auth_ok,
 * AuthenticationOk itself first, in the same write.
 */
void client_send_welcome(struct client *c, bool auth_ok);
/*
 * Ends a welcome whose ParameterStatus messages are in b: BackendKeyData and ReadyForQuery,
 * sent; the client becomes active and what it pipelined behind its login is relayed. False
 * when the client was disconnected instead (out of memory, send failed). b is freed.
 */
bool client_finish_welcome(struct client *c, struct builder *b);
/* Authentication succeeded: AuthenticationOk, then the welcome now or after a backend login. */
void client_auth_ok(struct client *c);
/* Drops the SCRAM exchange state (cleansed); the rest of the login state stays. */
void client_drop_scram(struct client *c);
/* Frees (cleansed) everything only a login needs; NULL-safe, called once welcomed or gone. */
void client_free_login_state(struct client *c);

#endif
