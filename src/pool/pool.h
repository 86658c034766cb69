/*
 * A pool groups backend connections that are interchangeable: same node, database, user and
 * startup options (every startup parameter but application_name, which is synced per client).
 * A pool is created for an authenticated client only (client_attach_pool) and freed when it has
 * neither clients nor backend connections (pool_reap_if_unused). It holds
 *  - the welcome the backend sends at login (ParameterStatus values), so clients can be logged in
 *    without waiting for a backend connection;
 *  - the login template: the startup packet and credentials new backend connections use (copied
 *    from the first client that authenticated; the same user, so the same rights);
 *  - the idle backend connections (SV_IDLE, most recently used last) and the clients waiting for
 *    one (CL_WAITING, in arrival order).
 */
#ifndef PGRELAY_POOL_POOL_H
#define PGRELAY_POOL_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth/scram.h"
#include "conf/config.h"
#include "pool/stats.h"
#include "util/list.h"

#define POOL_MAX_PARAMS 64

struct worker;
struct client;
struct server;

struct pool_param {
	char *name;  /* owned */
	char *value; /* owned */
};

/* What pgrelay uses to log into backends as a user (owned copies). */
enum cred_kind { CRED_NONE, CRED_PLAIN, CRED_MD5, CRED_SCRAM_KEY };

struct client_creds {
	enum cred_kind kind;
	char *secret;			   /* owned: plain password or md5 hash, else NULL */
	struct scram_secret scram;	   /* CRED_SCRAM_KEY: the verifier pgrelay checked */
	uint8_t client_key[SCRAM_KEY_LEN]; /* CRED_SCRAM_KEY: recovered from the client's proof */
};

/*
 * Session parameters PostgreSQL reports with ParameterStatus and that a client may change with
 * SET: tracked per client and per backend connection, and synced with SET when a client moves
 * to another backend connection (transaction pooling).
 */
enum tracked_param {
	TP_CLIENT_ENCODING,
	TP_DATESTYLE,
	TP_TIMEZONE,
	TP_INTERVALSTYLE,
	TP_STANDARD_CONFORMING_STRINGS,
	TP_APPLICATION_NAME,
	TP_DEFAULT_TRANSACTION_READ_ONLY,
	/* Not reported by PostgreSQL 15: pgrelay follows the client's own SET and RESET of them. */
	TP_EXTRA_FLOAT_DIGITS,
	TP_SEARCH_PATH,
	TP_STATEMENT_TIMEOUT,
	TP_LOCK_TIMEOUT,
	TP_IDLE_IN_TRANSACTION_SESSION_TIMEOUT,
	TP_COUNT
};
#define TP_FIRST_UNREPORTED TP_EXTRA_FLOAT_DIGITS

/* The part of a pool on one node. */
struct pool_node {
	struct list_node idle_servers;	  /* struct server in SV_IDLE, oldest first */
	struct list_node waiting_clients; /* struct client in CL_WAITING for this node */
	int n_servers;			  /* backend connections to the node, any state */
	int n_idle;
	int n_resetting; /* in SV_RESET: parked in a moment */
	int n_waiting;
};

struct pool {
	struct list_node node; /* in worker->pools */
	char *key;	       /* owned: database \0 user \0 options */
	size_t key_len;
	const char *database;			   /* points into key */
	const char *user;			   /* points into key */
	struct pool_param params[POOL_MAX_PARAMS]; /* the backend's ParameterStatus values */
	int n_params;
	bool have_welcome; /* params come from a completed backend login */
	const char
		*tracked[TP_COUNT]; /* points into params: the welcome value of each tracked one */
	uint32_t params_gen;	    /* changes whenever tracked[] does */

	uint8_t *startup; /* owned: startup packet body for new backend connections, or NULL */
	uint32_t startup_len;
	/* Points into startup: the application_name of the login it was copied from ("" if none).
	 * Clients logging in with the same name point here instead of keeping a copy. */
	const char *app_name;
	struct client_creds creds; /* owned: credentials for new backend connections */

	int n_clients;		  /* authenticated clients whose c->pool is this pool */
	uint64_t unused_since_ms; /* loop time it last had neither clients nor servers, 0 if used */
	int n_servers;		  /* backend connections of this pool, all nodes, any state */
	int n_waiting;		  /* clients waiting, all nodes */
	/*
	 * PAUSE / KILL from the console (doc/admin.md): no backend connection is handed to a
	 * client while set; clients that need one wait (CL_WAITING, query_wait_timeout).
	 */
	bool paused;
	struct pool_stats stats; /* totals since the pool was made (stats.h) */
	struct pool_stats cur;	 /* stats plus live clients' bytes, by pool_stats_refresh() */
	struct pool_stats older; /* totals at the start of the last whole stats_period */
	struct pool_stats newer; /* totals at its end (averages are newer - older) */
	struct pool_node nodes[CONFIG_MAX_BACKENDS];
};

/* Finds or creates the pool for key (copied). NULL when out of memory. */
struct pool *pool_get(struct worker *w, const char *key, size_t key_len);
/* Records a ParameterStatus value from a backend login. */
void pool_set_param(struct pool *p, const char *name, const char *value);
const char *pool_get_param(const struct pool *p, const char *name);
void pool_free_all(struct worker *w);
/*
 * Frees p when nothing uses it any more (no client, no backend connection): pools are made only
 * for authenticated clients, and an application that stops using a database/user pair must not
 * leave its pool behind for ever.
 */
void pool_reap_if_unused(struct worker *w, struct pool *p);
/*
 * The janitor's part: a pool that knows its welcome is kept while unused for POOL_KEEP_MS, so that
 * clients still log in without a backend (during a failover, when none can be had); then freed.
 */
void pool_reap_idle(struct worker *w, struct pool *p, uint64_t now_ms);
#define POOL_KEEP_MS (10u * 60u * 1000u)

/* Takes the login template from an authenticated client if the pool has none yet. */
void pool_adopt_login(struct pool *p, const struct client *c);
void pool_creds_copy(struct client_creds *dst, const struct client_creds *src);
void pool_creds_free(struct client_creds *c);

/* The index of a tracked parameter name (case-insensitive), or -1. */
int pool_tracked_param(const char *name);
const char *pool_tracked_name(int i);

/* Backend connections of database or user across all pools on node (for the limits). */
int pool_count_servers(struct worker *w, const char *database, const char *user, int node);

/* True if a pool may open one more backend connection to node_id now. */
bool pool_may_open(struct worker *w, struct pool *p, int node_id);
/*
 * Under max_db_connections / max_user_connections, closes an idle connection of another pool
 * that counts against the cap p is blocked by. True if one was closed (its slot frees shortly).
 */
bool pool_evict_idle_for(struct worker *w, struct pool *p, int node);
/* Lets every pool's waiting clients try again (a slot came free somewhere). */
void pool_kick_all(struct worker *w);
/* Gives idle servers to waiting clients, or opens connections for them within the limits
 * (nothing while p is paused). */
void pool_serve_waiting(struct pool *p, struct worker *w);
/*
 * Every pool's totals now into p->cur: its counters plus the bytes of its clients still
 * connected (conn.h). One pass over pools and clients: for SHOW commands, /metrics and the
 * stats_period snapshot, never on the relay path.
 */
void pool_stats_refresh(struct worker *w);
/* The stats_period tick: older = newer, newer = the totals now. */
void pool_stats_period_tick(struct worker *w);

/* Is database db paused (console PAUSE or KILL of it or of every database)? */
bool pool_db_paused(const struct worker *w, const char *db);
/*
 * Console PAUSE/KILL (on) or RESUME (!on) of database db, or of every database when db is NULL;
 * updates the pools and serves their waiting clients on resume. False if WORKER_PAUSE_MAX names
 * are paused already.
 */
bool pool_set_paused(struct worker *w, const char *db, bool on) __attribute__((warn_unused_result));

#endif
