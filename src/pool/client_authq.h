/*
 * auth_query on a worker: which logins need a lookup, the bounded set of lookups running on
 * libuv's thread pool, the clients queued for one, the cache of fetched secrets, and the way
 * back to the waiting client (doc/auth.md, "auth_query").
 *
 * A client whose user is not in users_file, when auth.auth_user is set and its hba rule needs a
 * secret, is served from the cache or waits in the login step CLS_AUTH_QUERY while a lookup
 * runs; the lookup's answer then goes through the normal method selection
 * (client_auth_continue). At most AUTHQ_MAX_INFLIGHT lookups run at once per worker; logins of
 * the same user share one; up to AUTHQ_MAX_WAITING further clients queue in arrival order, and
 * a client beyond that is refused with 53300. A lookup finds its clients again by id, so a
 * client that left meanwhile costs nothing.
 */
#ifndef PGRELAY_POOL_CLIENT_AUTHQ_H
#define PGRELAY_POOL_CLIENT_AUTHQ_H

#include <stdbool.h>
#include <stdint.h>

#include "auth/auth_cache.h"
#include "auth/hba.h"
#include "auth/users.h"
#include "util/list.h"

/* Lookups on the thread pool at once, per worker. */
#define AUTHQ_MAX_INFLIGHT 4
/* Clients queued for a free lookup slot; one more is refused with 53300. */
#define AUTHQ_MAX_WAITING 128
/* Clients one lookup answers (same user and database). */
#define AUTHQ_MAX_SHARED 32
/* libuv's pool size: lookups never take all of it (PBKDF2 checks, reloads, catalog loads). */
#define AUTHQ_THREADPOOL_SIZE "8"

struct client;
struct worker;

/* A worker's auth_query state; lives in struct worker. */
struct authq_sched {
	struct auth_cache *cache; /* owned; NULL when it could not be made (no caching then) */
	struct list_node jobs; /* lookups on the thread pool (struct authq_job, client_authq.c) */
	int n_jobs;
	uint64_t waiting[AUTHQ_MAX_WAITING]; /* ids of queued clients, a ring in arrival order */
	int wait_head;			     /* index of the oldest */
	int n_waiting;
	uint64_t generation; /* changes with the config: lookups of an older one are not cached */
	uint64_t lookups;    /* lookups started since start */
};

/* What auth_query brought to one login (a field of struct client). */
struct authq_login {
	struct user_entry *fetched; /* owned: the secret a lookup found for this login; moves
				       into the cache once the client authenticated with it */
	uint64_t fetched_ms; /* loop time the lookup started: the cache's TTL counts from it */
	uint64_t generation; /* the authq_sched generation of the lookup */
	bool from_cache;     /* the secret came from the cache: a failed login drops it */
};

/* Sets q up (and sizes libuv's thread pool: call before any work is queued). */
void authq_sched_init(struct authq_sched *q);
/* Frees the cache; the loop has run every lookup's completion by then. */
void authq_sched_destroy(struct authq_sched *q);
/* The config was replaced: forget every cached secret (auth_query may mean something else). */
void authq_sched_config_changed(struct authq_sched *q);

/*
 * Login of a user not in users_file, whose hba rule gives method m: true if auth_query takes it
 * over (the cache answered, a lookup runs or is queued, or the client was refused); it then calls
 * client_auth_continue or disconnects the client. False if auth_query is off or m needs no
 * secret (trust, reject, no rule): the caller goes on as without auth_query.
 */
bool client_authq_start(struct client *c, enum hba_method m) __attribute__((warn_unused_result));
/* c authenticated: a fetched secret goes into the cache (when auth_query_cache is not 0). */
void client_authq_login_ok(struct client *c);
/* c failed authentication: a cached secret it was checked against is dropped (it may be stale). */
void client_authq_login_failed(struct client *c);
/* Frees c's part (the client is being freed). */
void client_authq_free(struct client *c);

#endif
