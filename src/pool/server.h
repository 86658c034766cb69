/*
 * Server connections: the backend side of a session.
 *
 * States (each is exactly one worker list; server_set_state() is the only way to move):
 *   SV_CONNECTING  TCP connect in progress; swept for pool.server_connect_timeout.
 *   SV_LOGIN       startup sent; authenticating as the client's user and collecting the welcome
 *                  (ParameterStatus, BackendKeyData) until ReadyForQuery; also swept.
 *   SV_ACTIVE      linked to a client; messages are relayed.
 *   SV_RESET       unlinked, running a hidden reset (reset_query_list, or ROLLBACK) before it
 *                  may be parked; any error closes it.
 *   SV_IDLE        parked on its pool's idle list, clean and outside a transaction.
 *   SV_CLOSING     close started; waits for the handle.
 * A server changes hands only at a boundary: nothing outstanding (outstanding.h), nothing
 * half-sent in either direction, transaction idle, and (session mode) after the reset query. On
 * any doubt it is closed instead.
 */
#ifndef PGRELAY_POOL_SERVER_H
#define PGRELAY_POOL_SERVER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "auth/scram.h"
#include "net/conn.h"
#include "pool/outstanding.h"
#include "pool/pool.h"
#include "pool/prepared.h"
#include "util/list.h"

struct worker;
struct client;
struct pool;

enum server_state { SV_CONNECTING, SV_LOGIN, SV_ACTIVE, SV_RESET, SV_IDLE, SV_CLOSING };

struct server {
	struct conn conn;      /* embedded; conn.owner == this */
	struct worker *w;      /* borrowed */
	struct list_node node; /* in the worker list of its state */
	enum server_state state;
	uint64_t id;
	uint64_t since_ms;	      /* loop time of the last state change */
	int node_id;		      /* index into cfg->backends */
	struct sockaddr_storage addr; /* the backend's address */
	struct pool *pool;	      /* borrowed */
	struct client *client;	      /* borrowed link, NULL once unlinked */
	/* The client it served last (weak: cleared when either ends), for backend affinity. */
	struct client *last_client;
	uint64_t unnamed_of; /* id of the client whose unnamed Parse it ran last, 0 none */
	uint32_t be_pid;     /* the backend's real BackendKeyData */
	uint32_t be_key;
	struct scram_client *scram; /* owned during SASL login */
	char txn_status;	    /* from the last ReadyForQuery */
	struct req_queue reqs;	    /* requests sent and not yet fully answered */
	struct stmt_map stmts;	    /* named statements prepared on this backend */
	char *param[TP_COUNT];	    /* owned: the backend's current tracked parameter values */
	/* The client whose settings param[] last matched (0: none), with its and its pool's
	 * params_gen then: while all three hold, a link compares nothing. */
	uint64_t synced_client;
	uint32_t synced_gen, synced_pool_gen;
	uint64_t created_ms;  /* loop time the connection was opened (server_lifetime) */
	uint64_t stmt_tick;   /* LRU clock of stmts */
	bool dirty;	      /* must never be reused (error in a reset, partial message) */
	bool ready;	      /* its last word was ReadyForQuery, and nothing was sent since */
	bool stmts_unsure;    /* stmts may miss names the backend has: Close before Parse */
	bool goodbye_pending; /* an unsolicited error waits for the answer before it to be sent */
	bool params_unsure;   /* unreported settings were synced inside a transaction, which may
				 roll back: all are sent again at the next sync outside one */
	bool retry_watch;     /* the client's Query may be retried: watching its first answer */
	bool retry_swallow;   /* it was refused (25006): its answer is hidden up to ReadyForQuery */
	bool retry_fire;   /* ... and that ReadyForQuery came: the client retries on the primary */
	bool tls_asked;	   /* SSLRequest sent; its answer is read in SV_CONNECTING */
	bool close_needed; /* console RECONNECT: closed instead of parked when released */
	/* Its node was detached while it was reachable and this link was busy: the work in
	 * flight finishes, then the link closes (doc/failover.md, "Detach"). */
	bool draining;
	/* Cancel requests sent to it and not yet closed by PostgreSQL: it stays with its client
	 * (cancel.h). */
	uint16_t cancels_in_flight;
	uint64_t drain_ms; /* loop time draining began (bounded by shutdown_timeout) */
};

/*
 * Opens a backend connection of pool p to node_id with the pool's login template; if c is not
 * NULL they are linked and progress is reported via client_on_server_ready / _lost, else the
 * connection is parked when logged in (min_pool_size). False if it could not even start.
 */
bool server_connect(struct worker *w, struct pool *p, int node_id, struct client *c)
	__attribute__((warn_unused_result));
/* Unlinks the client and closes the connection (Terminate first when it is logged in). */
void server_close(struct server *s, const char *reason);
/*
 * Its node was detached while reachable and s is busy (a statement or a transaction runs): s
 * closes at its next boundary outside a transaction (the client goes on elsewhere), or after
 * shutdown_timeout (server_end_drain, from the janitor).
 */
void server_start_drain(struct server *s);
/* The last cancel request for s is over: it may be released to other clients again. */
void server_cancels_done(struct server *s);
/*
 * A draining s is closed now, telling its client why (how: "its work did not end within
 * shutdown_timeout", ...); what it runs is cancelled.
 */
void server_end_drain(struct server *s, const char *how);
/*
 * Sends one hidden SET of the tracked parameters whose value on s differs from what c expects
 * (nothing when they agree). False if the server failed (the client was told).
 */
bool server_sync_params(struct server *s, struct client *c) __attribute__((warn_unused_result));
/* Nothing outstanding and nothing half-sent from the server side: it may change hands. */
bool server_at_boundary(const struct server *s);
/* Links an idle server to c, syncing c's tracked parameters with a hidden SET when needed. */
void server_link(struct server *s, struct client *c);
/* c ends: no backend keeps it as its last client (backend affinity). */
void server_forget_client(struct client *c);
/*
 * The linked client is gone. partial: a message from it reached the server only in part. The
 * server is reset and parked when that is provably safe, else closed.
 */
void server_client_left(struct server *s, bool partial);
/* Makes sure statement name of client c exists on s as c prepared it (injects Close/Parse). */
bool server_ensure_statement(struct server *s, struct client *c, const char *name)
	__attribute__((warn_unused_result));
/* Closes statement name on s with a hidden Close (it belongs to no one who may use it). */
bool server_inject_close(struct server *s, const char *name) __attribute__((warn_unused_result));
/* Sends sql (len bytes) as one hidden Query; its answers never reach a client. */
bool server_inject_query(struct server *s, const char *sql, size_t len)
	__attribute__((warn_unused_result));
/*
 * Ends the extended-protocol unit the client left open with Flush on s by a hidden Sync, so that
 * s reaches a boundary and the session may move on to another node. False on a send failure.
 */
bool server_inject_sync(struct server *s) __attribute__((warn_unused_result));
/* Sends sql as one Query of the linked client (its answers reach it), for a retry. */
bool server_send_client_query(struct server *s, const char *sql, size_t len)
	__attribute__((warn_unused_result));
/* Records that the client's Parse of name (hash) goes to s; closes what was there. */
bool server_note_parse(struct server *s, const char *name, uint64_t hash)
	__attribute__((warn_unused_result));
void server_set_state(struct server *s, enum server_state st);

/* Resolves a backend's host once (numeric or via getaddrinfo at config load time). */
bool server_resolve(const char *host, int port, struct sockaddr_storage *out)
	__attribute__((warn_unused_result));

#endif
