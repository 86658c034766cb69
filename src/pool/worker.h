/*
 * A worker: one libuv loop in one thread that owns its listeners, its clients, its backend
 * connections and its pools. All data-plane state lives here (no file-scope mutable globals), so
 * running N workers is a configuration change. Nothing on a worker's loop blocks.
 *
 * Lists (each object is on exactly one, chosen by its state; see client.h and server.h):
 *   login_clients     CL_LOGIN: startup and authentication, swept for authentication_timeout
 *   active_clients    CL_ACTIVE: logged in
 *   closing_clients   CL_CLOSING: close started, waiting for the handle to close
 *   servers by state  SV_CONNECTING / SV_LOGIN / SV_ACTIVE / SV_CLOSING
 */
#ifndef PGRELAY_POOL_WORKER_H
#define PGRELAY_POOL_WORKER_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "conf/config.h"
#include "net/iobuf.h"
#include "net/listener.h"
#include "pool/client_authq.h"
#include "pool/cancel.h"
#include "pool/stats.h"
#include "route/router.h"
#include "util/list.h"

struct http_server;

#define WORKER_MAX_LISTENERS 32
#define WORKER_PAUSE_MAX     64 /* databases paused by name at once (console PAUSE / KILL) */

/* pgpool-II's pool_backend_stats kinds of a unit that is not a read. */
enum worker_cmd_kind { CMD_INSERT, CMD_UPDATE, CMD_DELETE, CMD_DDL, CMD_OTHER, WORKER_CMD_KINDS };
#define WORKER_FD_RESERVE 32 /* descriptors kept free for backends, logs and cancels */

enum worker_shutdown { WS_RUNNING, WS_SMART, WS_FAST };

struct worker {
	uv_loop_t loop;
	struct config *cfg; /* owned: the config in force; replaced whole on reload */
	struct listener listeners[WORKER_MAX_LISTENERS];
	int n_listeners;
	struct iobuf_pool bufs;	   /* read buffers for every conn of this worker */
	struct cancel_map cancels; /* our BackendKeyData -> client */
	struct sockaddr_storage node_addr[CONFIG_MAX_BACKENDS]; /* resolved at start */
	int n_nodes;		  /* backends known at start (a restart applies changes) */
	struct router router;	  /* routing decisions and the cluster view (route/router.h) */
	cluster_t *cluster;	  /* owned: the cluster manager thread, or NULL */
	uv_async_t cluster_async; /* the manager's "new view" wake-up */
	bool cluster_async_open;
	struct list_node nodeless_clients; /* CL_WAITING for a node to exist (no primary) */
	int n_nodeless;
	uint64_t error_cnt[CONFIG_MAX_BACKENDS]; /* ErrorResponses relayed per node (ERROR) */
	uint64_t fatal_cnt[CONFIG_MAX_BACKENDS]; /* ... with severity FATAL */
	uint64_t panic_cnt[CONFIG_MAX_BACKENDS]; /* ... with severity PANIC */
	/* Units routed as writes per node by their kind (SHOW pool_backend_stats; client_cmd_kind).
	 */
	uint64_t cmd_cnt[CONFIG_MAX_BACKENDS][WORKER_CMD_KINDS];
	struct relay_stats stats; /* queries, transactions, durations (stats.h) */
	/* worker_now_us()'s reading for this pass over the events, 0 once the loop may wait. */
	uint64_t clock_us;
	uv_prepare_t clock_reset; /* clears clock_us before each wait for events (unref'd) */
	struct http_server *http; /* owned: the HTTP listener, or NULL (http.port 0) */
	int64_t started_wall_ms;  /* CLOCK_REALTIME ms at start */
	/* Loop time until which a node counts as down after a failed connect (fail fast). */
	uint64_t node_down_until_ms[CONFIG_MAX_BACKENDS];
	struct authq_sched authq; /* auth_query lookups and their cache (client_authq.c) */
	/*
	 * The last statement text classified in a client's read buffer: client memo_client's text
	 * at memo_sql while that buffer's gen is memo_gen. The routing decision, the look-ahead,
	 * the relay and the bookkeeping of one Query or Parse share one lookup through it. One per
	 * worker, not per client: they all run within one pass over that client's buffer, and an
	 * idle client then costs nothing for it (client_sql.c).
	 */
	uint64_t memo_client;
	const char *memo_sql;
	uint64_t memo_gen;
	struct route_facts memo_facts;

	struct list_node login_clients;
	struct list_node active_clients;
	struct list_node closing_clients;
	struct list_node connecting_servers;
	struct list_node login_servers;
	struct list_node active_servers;
	struct list_node reset_servers;
	struct list_node closing_servers;
	struct list_node pools; /* struct pool, one per (database, user, options) */

	int n_clients;		      /* clients not yet freed, any state */
	int n_servers;		      /* servers not yet freed, any state */
	int n_cancel_conns;	      /* outgoing cancel connections in flight */
	struct list_node cancel_reqs; /* outgoing cancels that hold their backend (cancel.c) */
	int n_draining;		      /* active servers of detached nodes finishing their work */
	uint64_t fd_limit;	      /* RLIMIT_NOFILE at start */
	uint64_t next_conn_id;	      /* for log lines: c1, c2, ... */

	uv_timer_t janitor; /* sweeps timeouts every JANITOR_MS (janitor.c) */
	uint64_t janitor_rounds;
	uint64_t bufs_released_at_trim; /* bufs.n_released at the last malloc_trim (janitor.c) */
	enum worker_shutdown shutdown;
	uint64_t shutdown_started_ms;
	int exit_code;
	bool force_debug; /* -d: debug logging whatever the config says */
	/*
	 * The pgbouncer console (admin/console.h): PAUSE/KILL of every database (pause_all) or of
	 * these names; pools made meanwhile start paused (pool_get). Console clients waiting for
	 * a PAUSE or WAIT_CLOSE to complete are polled by the janitor while n_console_waits > 0.
	 */
	bool pause_all;
	int n_paused_dbs;
	char *paused_dbs[WORKER_PAUSE_MAX]; /* owned */
	int n_console_waits;
	uint64_t stats_older_ms; /* loop time of the pools' older snapshot (stats.h) */
	uint64_t stats_newer_ms; /* loop time of their newer snapshot */
	bool reloading;		 /* a reload job is on the thread pool */
	bool reload_again;	 /* SIGHUP arrived during a reload: run another after it */
};

#define JANITOR_MS	  100
#define NODE_DOWN_HOLD_MS 1000 /* how long a refused connect marks a node down */

/* Opens listeners and timers. On error returns false with a message in err. */
bool worker_init(struct worker *w, struct config *cfg, char *err, size_t errcap)
	__attribute__((warn_unused_result));
/* Runs the loop until shutdown completes. */
int worker_run(struct worker *w);
void worker_destroy(struct worker *w);

/* Replaces the config (w takes ownership); restart-only changes are logged and not applied. */
void worker_apply_config(struct worker *w, struct config *cfg);
void worker_begin_shutdown(struct worker *w, enum worker_shutdown mode);
/* Re-reads cfg->path off the loop and applies it; a broken file keeps the old config. */
void worker_reload(struct worker *w);

/*
 * Starts the cluster manager (health checks, failover) and waits briefly for the primary's
 * discovery. False if it could not start: the worker then routes by the config alone.
 */
bool worker_start_cluster(struct worker *w);
/* A backend connection to node broke or was refused (failover_on_backend_error). */
void worker_report_backend_error(struct worker *w, int node);

/* Reads database db's pg_proc on the thread pool if the router wants it (route/catalog.h). */
void worker_want_catalog(struct worker *w, int db);

/* The node a first backend login (the pool's welcome) goes to: the primary, else any usable. */
int worker_login_node(struct worker *w);
/* Installs a new cluster view: drops connections to nodes no longer usable, wakes waiters. */
void worker_apply_view(struct worker *w, const struct cluster_view *v);

/*
 * CLOCK_MONOTONIC in microseconds, read once per pass of the loop over its events (as
 * PgBouncer's cached time): the statistics' durations time every statement without a clock call
 * per message. Everything one pass handles shares the reading taken by its first caller.
 */
static inline uint64_t worker_now_us(struct worker *w)
{
	if (!w->clock_us)
		w->clock_us = uv_hrtime() / 1000;
	return w->clock_us;
}

/* True if one more socket may be opened without nearing the descriptor limit. */
bool worker_fd_available(const struct worker *w);

/* Called by client/server code when an object is freed, to finish a shutdown in progress. */
void worker_check_shutdown_done(struct worker *w);
/* Closes the idle backend connections of every pool (shutting down). */
void worker_close_idle_servers(struct worker *w);

#endif
