/*
 * The router: decides which backend node a unit of client work runs on (read/write splitting and
 * load balancing, pgpool-II semantics; doc/routing.md).
 *
 * A "unit" is what may not be split across nodes: one simple Query, or an extended-protocol
 * pipeline up to its Sync. The caller (src/pool/client_route.c) classifies the unit's SQL
 * (classify.h), sums it up as struct route_facts and asks router_decide() where it goes, given
 * the session's routing state (struct route_session) and the latest cluster view. The router owns
 * no connections and does no I/O: it is pure decision logic plus the per-worker inputs it needs
 * (view, compiled redirect lists and patterns, counters, a random generator), so it is unit-tested
 * on its own (tests/unit/test_router.c).
 *
 * One router per worker, used only on that worker's loop.
 */
#ifndef PGRELAY_ROUTE_ROUTER_H
#define PGRELAY_ROUTE_ROUTER_H

#include <regex.h>
#include <stdbool.h>
#include <stdint.h>

#include "conf/config.h"
#include "failover/cluster.h"
#include "route/catalog.h"
#include "route/classify.h"

#define ROUTER_NO_NODE	     (-1)  /* no node can take the unit now (e.g. no primary) */
#define ROUTER_MAX_REDIRECTS 32	   /* entries per redirect preference list */
#define ROUTER_MAX_PATTERNS  32	   /* primary_routing_query_pattern_list entries */
#define ROUTER_MAX_DBS	     64	   /* databases with their own function catalog */
#define ROUTER_NORMALIZE_MAX 16384 /* statements normalised for the cache; longer: as they are */
#define ROUTER_MAX_CURSORS   8	   /* cursors of one transaction whose node is remembered */

/* A session's forced route: listeners entries, SET pgrelay.route. */
enum route_force { ROUTE_FORCE_AUTO, ROUTE_FORCE_PRIMARY, ROUTE_FORCE_STANDBY };

/* The target of a redirect preference list entry. */
enum redirect_target { REDIRECT_PRIMARY = -2, REDIRECT_STANDBY = -3 }; /* or a node id >= 0 */

struct redirect_rule {
	regex_t re;    /* anchored, case-sensitive like pgpool */
	int target;    /* node id, REDIRECT_PRIMARY or REDIRECT_STANDBY */
	double weight; /* probability of following the rule, 0..1 */
};

struct redirect_list {
	struct redirect_rule rules[ROUTER_MAX_REDIRECTS];
	int n;
};

/*
 * Cursors declared in the open transaction and the node holding each (FETCH, MOVE and CLOSE go
 * there, whatever the transaction did since): a hash of the name, a small ring (the oldest is
 * forgotten; its FETCH then follows the transaction). Emptied at the transaction's end.
 */
struct route_cursors {
	uint32_t hash[ROUTER_MAX_CURSORS];
	int8_t node[ROUTER_MAX_CURSORS];
	uint8_t n;    /* entries used, up to ROUTER_MAX_CURSORS; then the ring turns */
	uint8_t next; /* the entry the ring replaces next */
};

/* Per-session routing state: router_session_init(), router_session_release() at its end. */
struct route_session {
	/* Node ids are below CLUSTER_MAX_NODES: 16 bits keep an idle session small. */
	int16_t read_node;	 /* the session's load-balance node, -1 until chosen */
	int16_t redirect_target; /* from the preference lists: node, REDIRECT_*, or -1 none */
	int16_t failed_node;	 /* where the open transaction failed, -1 if it did not */
	int16_t txn_node;	 /* the node the open transaction reads from, -1 when idle */
	int db;			 /* index into router.dbs, -1 when the table is full */
	uint8_t listener;	 /* enum route_force of the listener the client came in on */
	uint8_t forced;		 /* enum route_force from SET pgrelay.route */
	bool primary_only;	 /* sticky: the rest of the session reads from the primary */
	bool in_txn;		 /* the client's transaction is open (last ReadyForQuery T or E) */
	bool txn_failed;	 /* ... and failed (E) */
	bool txn_on_primary;	 /* the open transaction moved to the primary (a write) */
	bool primary_in_txn;	 /* the primary takes part in the open transaction */
	bool wrote;		 /* a write was sent since the last ReadyForQuery idle */
	uint64_t written_at; /* read-your-writes: CLOCK_MONOTONIC ms after the last write ended */
	uint64_t read_count; /* reads routed, for SHOW */
	/* Owned, made at the session's first DECLARE routed with load balancing (most sessions
	 * never declare one) and kept until router_session_release(). */
	struct route_cursors *cursors;
};

/* What the caller knows about a unit. */
struct route_facts {
	enum classify_route route; /* combined over its statements (PRIMARY > ANY > ALL/FOLLOW) */
	uint32_t flags;		   /* CLASSIFY_* union */
	const char *rule;	   /* rule that decided (static string) */
	bool pattern_primary;	   /* matched primary_routing_query_pattern_list */
	/* The unit only uses what exists on the active link (Execute of a portal bound earlier,
	 * Describe, Close): it stays there, in or out of a transaction. */
	bool stay;
	uint8_t cmd; /* classify.h enum classify_cmd; CLASSIFY_CMD_NONE: not classified */
	/* Session effects (classify.h CLASSIFY_EFFECT_MASK): why SESSION_STATE is set (static
	 * string, "" if not; NULL in facts not made by the classifier) and the object of the first
	 * statement with an effect ("" if none). Only filled when flags has an effect bit. */
	const char *effect;
	char object[CLASSIFY_OBJECT_MAX];
};

/*
 * A decision and what it does to the session once the unit is really sent (router_commit()).
 * Deciding changes nothing but the session's choice of read node, so a unit that cannot be sent
 * yet (its node is busy) is simply decided again later, with fresher state.
 */
struct route_decision {
	const char *why;   /* the rule that decided the node, for logs and EXPLAIN */
	int16_t node;	   /* target node, or ROUTER_NO_NODE (node ids fit: CLUSTER_MAX_NODES) */
	bool read;	   /* counted as a read (select_cnt) */
	bool join_primary; /* the primary must first join the open transaction (replay) */
	bool starts_txn;   /* the unit opens a transaction (BEGIN) */
	/* Effects for router_commit(). */
	bool wrote;		  /* the unit may write */
	bool primary_joins;	  /* the primary takes part in the open transaction from now on */
	bool txn_moves;		  /* the rest of the transaction goes to the primary */
	bool primary_only_after;  /* the rest of the session reads from the primary */
	int16_t txn_node;	  /* the transaction's read node if it starts one, else -1 */
	uint32_t declares_cursor; /* hash of a cursor the unit declares (0: none) */
};

/*
 * A database's function catalog and the classifier that consults it. Until the catalog is
 * loaded (or when it cannot be), the router's default classifier answers: functions it does not
 * know go to the primary.
 */
struct router_db {
	char *name;		       /* owned */
	struct func_catalog *catalog;  /* owned, NULL until loaded */
	struct classifier *classifier; /* owned, NULL until loaded */
	bool loading;		       /* a load runs on the thread pool */
	uint64_t retry_at_ms;	       /* after a failed load: not before (monotonic ms) */
	uint64_t generation;	       /* r->generation when the load started */
};

struct router {
	const struct config *cfg; /* borrowed: the worker's config in force */
	struct cluster_view view; /* the latest cluster view */
	struct classifier *classifier;
	struct redirect_list by_database, by_app, by_user;
	regex_t patterns[ROUTER_MAX_PATTERNS];
	int n_patterns;
	uint64_t select_cnt[CONFIG_MAX_BACKENDS]; /* reads routed per node */
	uint64_t write_cnt[CONFIG_MAX_BACKENDS];  /* other units routed per node */
	uint64_t rng;				  /* xorshift64 state */
	struct router_db dbs[ROUTER_MAX_DBS];
	char scratch[ROUTER_NORMALIZE_MAX + 1]; /* normalize.h output for the cache key */
	int n_dbs;
	uint64_t generation; /* bumped by each reconfigure: catalogs loaded before are stale */
};

/* Builds everything from cfg (lists, patterns, classifier). False with a reason in err. */
bool router_init(struct router *r, const struct config *cfg, char *err, size_t errcap)
	__attribute__((warn_unused_result));
/* A reloaded config: rebuilds lists and patterns; keeps the old ones on error. */
bool router_reconfigure(struct router *r, const struct config *cfg, char *err, size_t errcap)
	__attribute__((warn_unused_result));
void router_free(struct router *r);
/* Installs a cluster view (copied). */
void router_set_view(struct router *r, const struct cluster_view *v);
/* The view as the config alone says it (every node up, ALWAYS_PRIMARY or node 0 primary). */
void router_static_view(const struct config *cfg, struct cluster_view *out);

/* Parses a pgpool redirect preference list ("pat:node[(w)],..."). False with a reason. */
bool router_parse_redirects(const char *text, struct redirect_list *out, char *err, size_t errcap)
	__attribute__((warn_unused_result));
void router_free_redirects(struct redirect_list *l);

void router_session_init(struct router *r, struct route_session *s, enum route_force listener,
			 const char *database, const char *user, const char *application_name);
/* Frees what the session made as it went (its cursor ring); s may be zeroed or released. */
void router_session_release(struct route_session *s);

/* Classifies sql (NUL-terminated, len bytes) into facts (cached; patterns applied). */
void router_classify(struct router *r, const char *sql, size_t len, struct route_facts *out);
/* The same with database db's function catalog when it is loaded (db from route_session). */
void router_classify_in(struct router *r, int db, const char *sql, size_t len,
			struct route_facts *out);
/* A standby refused sql as a write (SQLSTATE 25006): its shape goes to the primary from now on. */
void router_remember_primary(struct router *r, int db, const char *sql, size_t len);
/* The classifier for database db (its catalog's, or the default one). */
struct classifier *router_classifier(struct router *r, int db);

/* The entry for database (created if new), or -1 when ROUTER_MAX_DBS are in use. */
int router_db_for(struct router *r, const char *database);
/* True if db's catalog should be loaded now (not loaded, not loading, retry time passed). */
bool router_db_wants_catalog(const struct router *r, int db, uint64_t now_ms);
/* Installs a loaded catalog (taken over; NULL records a failure, retried after retry_ms). */
void router_db_loaded(struct router *r, int db, uint64_t generation, struct func_catalog *cat,
		      uint64_t now_ms, uint32_t retry_ms);
/* Merges the facts of one more statement of the same unit into acc. */
void router_facts_merge(struct route_facts *acc, const struct route_facts *more);

/*
 * Where the unit goes. current is the node of the session's active backend connection (-1 if
 * none). Changes nothing in s but its read node choice; router_commit() applies the rest when
 * the unit is sent, and router_on_ready() what the server then said.
 */
void router_decide(struct router *r, struct route_session *s, const struct route_facts *f,
		   int current, struct route_decision *out);
/* The unit decided as d is being sent: applies d's effects to the session and counters. */
void router_commit(struct router *r, struct route_session *s, const struct route_decision *d);

/*
 * A ReadyForQuery reached the client from node with status (I, T, E). now_ms is
 * CLOCK_MONOTONIC ms. Closes the transaction bookkeeping and starts read-your-writes waits.
 */
void router_on_ready(struct router *r, struct route_session *s, int node, char status,
		     uint64_t now_ms);

/* The session's read node for a read now (choosing one if needed), or ROUTER_NO_NODE. */
int router_read_node(struct router *r, struct route_session *s);

/* True if node may take new work (status up, or waiting with health checks off). Inline, as
 * router_primary: every routing decision asks both. */
static inline bool router_node_usable(const struct router *r, int node)
{
	if (node < 0 || node >= r->view.n_nodes)
		return false;
	enum node_status st = r->view.nodes[node].status;
	return st == NODE_UP || (st == NODE_WAITING && !r->view.checks_enabled);
}

/* The primary node now, or ROUTER_NO_NODE. */
static inline int router_primary(const struct router *r)
{
	int p = r->view.primary;
	return router_node_usable(r, p) ? p : ROUTER_NO_NODE;
}
/* True if a standby node may serve this session's reads now (lag, read-your-writes). */
bool router_standby_fresh(const struct router *r, const struct route_session *s, int node);
/* Normalised load-balance weight of node among usable nodes (SHOW pool_nodes lb_weight). */
double router_lb_weight(const struct router *r, int node);

/* CLOCK_MONOTONIC milliseconds. */
uint64_t router_now_ms(void);
/* The hash by which a session remembers a cursor name (never 0). */
uint32_t router_cursor_hash(const char *name);

#endif
