/*
 * The cluster manager: what pgrelay believes about its backend nodes, and the failover machinery
 * that keeps that belief true. It runs on its own thread (beside the health probes, health.h),
 * never on a worker loop, and talks to the data plane only through
 *  - views: whole, self-consistent copies of every node's status and role, published after each
 *    change; the worker is woken with notify(arg) (it passes a uv_async_send) and copies the
 *    latest view with cluster_view_copy(). Sends coalesce, hence whole views, never deltas.
 *  - thread-safe requests: cluster_report_backend_error() from the data plane, cluster_command()
 *    from the admin interface.
 *
 * What it does (doc/failover.md): reads every node's role and WAL positions from the health
 * probes; discovers the primary at start (never assumed from config order unless health checks
 * are off); keeps node states up/down/waiting/quarantine with rise/fall counting; when the
 * primary fails its checks it runs failover_command (pgpool-II's placeholders and PGRELAY_*
 * environment variables, under failover_command_timeout, without blocking its own probes),
 * searches for the new primary (search_primary_node_timeout), then runs follow_primary_command
 * for each remaining standby; losing a standby just detaches it. Split-brain guard:
 * detach_false_primary. failback_command / auto_failback. Every event goes to the history.
 * With watchdog.enabled (doc/watchdog.md, wd_policy.h) several pgrelay instances share these
 * decisions through etcd: one leader runs the commands, failovers need a majority, and the
 * published view follows the leader's (fenced: no primary at all).
 */
#ifndef PGRELAY_FAILOVER_CLUSTER_H
#define PGRELAY_FAILOVER_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "health/health.h"

#define CLUSTER_MAX_NODES   HEALTH_MAX_NODES
#define CLUSTER_LSN_SAMPLES 8	/* primary WAL position samples kept in a view */
#define CLUSTER_HISTORY_MAX 128 /* failover history entries kept (oldest dropped) */
#define CLUSTER_REASON_MAX  128
#define CLUSTER_COMMAND_MAX 512
#define CLUSTER_OUTPUT_MAX  512

struct config;

/* pgrelay's status of a node (SHOW pool_nodes "status"). */
enum node_status {
	NODE_UP,	 /* attached: may carry traffic for its role */
	NODE_DOWN,	 /* detached (failed checks, failover, or an operator's DETACH) */
	NODE_WAITING,	 /* attached, not yet confirmed by a check (start, attach) */
	NODE_UNUSED,	 /* not in use (e.g. health checks off and never seen) */
	NODE_QUARANTINE, /* failing checks but not failed over (DISALLOW_TO_FAILOVER, or a
			    failure still being confirmed): no new traffic; back to up on rise */
};

enum node_role { NODE_ROLE_UNKNOWN, NODE_ROLE_PRIMARY, NODE_ROLE_STANDBY };

struct cluster_node {
	enum node_status status;
	enum node_role role;	/* the role pgrelay routes by */
	enum node_role pg_role; /* what the node said at its last successful check */
	bool pg_up;		/* its last check reached it (SHOW pool_nodes pg_status) */
	uint64_t current_lsn;	/* pg_current_wal_lsn() at the last check of a primary, else 0 */
	uint64_t replay_lsn;	/* pg_last_wal_replay_lsn() at the last check of a standby */
	uint64_t receive_lsn;	/* pg_last_wal_receive_lsn() at the last check of a standby */
	uint64_t lsn_at_ms;	/* CLOCK_MONOTONIC ms when those were read */
	uint64_t replication_delay; /* bytes the standby's replay is behind the primary; 0 else */
	bool has_delay_time;	    /* delay_s is known */
	double delay_s;		    /* replay delay in seconds (now - last replayed commit) */
	char replication_state[16]; /* from the primary's pg_stat_replication, "" if unknown */
	char sync_state[16];	    /* same */
	int64_t last_status_change; /* CLOCK_REALTIME ms */
	char reason[CLUSTER_REASON_MAX]; /* why the last status change, for logs and SHOW */
};

/* One sample of the primary's WAL position: read-your-writes bounds (doc/routing.md). */
struct lsn_sample {
	uint64_t at_ms; /* CLOCK_MONOTONIC ms when the query that read it started */
	uint64_t lsn;	/* pg_current_wal_lsn() */
};

struct cluster_view {
	uint64_t seq;		   /* increases with every publication */
	int n_nodes;		   /* == cfg->n_backends */
	int primary;		   /* node id that takes writes, -1 while there is none */
	bool failing_over;	   /* the primary was lost and a new one is being set up */
	uint64_t failovers_ok;	   /* failovers that found a new primary, since start */
	uint64_t failovers_failed; /* failovers whose primary search timed out, since start */
	bool checks_enabled;
	bool watchdog; /* watchdog.enabled: the view follows the watchdog (doc/watchdog.md) */
	bool fenced;   /* the watchdog lost etcd: no writes from this instance (primary -1) */
	/* The primary's recent WAL positions, oldest first (n_lsn_samples used). A sample taken
	 * after a commit returned is an upper bound of that commit's LSN. */
	struct lsn_sample lsn_samples[CLUSTER_LSN_SAMPLES];
	int n_lsn_samples;
	struct cluster_node nodes[CLUSTER_MAX_NODES];
	struct health_stats stats[CLUSTER_MAX_NODES]; /* SHOW pool_health_check_stats */
};

/* One line of SHOW pool_failover_history. */
struct cluster_event {
	int64_t at_ms;			   /* CLOCK_REALTIME ms when the event started */
	char event[32];			   /* "failover", "follow_primary", "failback", "detach",
					      "attach", "promote", "primary_found", "quarantine",
					      "false_primary", "recovery_start", "recovery_done",
					      ... */
	int node;			   /* the node it is about, -1 if none */
	char command[CLUSTER_COMMAND_MAX]; /* the command line run, "" if none */
	int exit_status;		   /* exit code; 128+signal if killed; -1 if none ran */
	uint32_t duration_ms;		   /* of the command (or the whole event) */
	char detail[CLUSTER_REASON_MAX];   /* reason, "timed out", output's last line, ... */
};

/*
 * CLUSTER_PROMOTE is a switchover (pcp_promote_node -s): the primary is detached, n promoted and
 * every other node, the old primary included, follows n (follow_primary_command).
 * CLUSTER_PROMOTE_ONLY promotes n the same way but runs no follow_primary_command: the other
 * nodes are left as they are (the old primary stays detached until ATTACH).
 */
enum cluster_command { CLUSTER_ATTACH, CLUSTER_DETACH, CLUSTER_PROMOTE, CLUSTER_PROMOTE_ONLY };

typedef struct cluster cluster_t; /* opaque */

/*
 * Starts the manager (and its health checks) for cfg's backends; cfg is copied as needed and
 * may be freed after the call. The first view (seq 1) has every node NODE_WAITING and primary
 * -1, unless health checks are disabled, in which case it is final at once: every node up, the
 * ALWAYS_PRIMARY node (or node 0) primary. notify(arg) is called from the manager's thread,
 * without locks held, after each publication. NULL (logged) on failure.
 */
cluster_t *cluster_start(const struct config *cfg, void (*notify)(void *arg), void *arg)
	__attribute__((warn_unused_result));

/* Copies the latest view. Any thread. */
void cluster_view_copy(cluster_t *c, struct cluster_view *out);

/*
 * Waits up to timeout_ms for the first discovery (a view with a primary, or every node checked
 * once). For start-up only, before any loop runs. True if a primary is known.
 */
bool cluster_wait_discovery(cluster_t *c, uint32_t timeout_ms);

/*
 * The data plane saw a backend connection to node break or be refused. With
 * failover_on_backend_error the node is checked at once (no wait for its period); the check,
 * not this report, decides. Cheap and non-blocking; any thread; repeated reports coalesce.
 */
void cluster_report_backend_error(cluster_t *c, int node);

/*
 * An operator's request (PGRELAY ATTACH/DETACH/PROMOTE NODE n [SWITCHOVER]), logged with reason.
 * Queued for the manager's thread; returns at once. False with a message in msg when refused
 * outright (no such node, already in that state, a failover in progress); true means accepted, msg
 * says what will happen. The outcome shows in views and the history.
 */
bool cluster_command(cluster_t *c, enum cluster_command cmd, int node, const char *reason,
		     char *msg, size_t msgcap);

/* Copies up to cap history entries, oldest first; returns how many. Any thread. */
int cluster_history_copy(cluster_t *c, struct cluster_event *out, int cap);

/*
 * Online recovery (doc/failover.md "Recovery"): PGRELAY RECOVER NODE n. One at a time; the
 * manager's thread runs recovery_1st_stage_command, recovery_remote_start_command, waits until
 * the node streams from the current primary within delay_threshold and attaches it, all within
 * recovery_timeout. The request returns when the recovery is accepted, not when it ends.
 */
enum cluster_recover_result {
	CLUSTER_RECOVER_STARTED, /* accepted: msg says so */
	CLUSTER_RECOVER_NO_NODE, /* no such node id */
	CLUSTER_RECOVER_REFUSED, /* the node's or the cluster's state forbids it (the primary, an
				    attached node, no primary, not configured, checks off) */
	CLUSTER_RECOVER_BUSY,	 /* another recovery or a failover is in progress: try later */
};

/* One row of SHOW pool_recovery: the recovery in progress, else the last one. */
struct cluster_recovery {
	int node;			 /* the node being (or last) recovered */
	char stage[16];			 /* queued, 1st_stage, remote_start, wait_standby, attach,
					    done, failed */
	int64_t started_ms;		 /* CLOCK_REALTIME ms when it was accepted */
	uint64_t elapsed_ms;		 /* so far, or its whole duration once over */
	char detail[CLUSTER_REASON_MAX]; /* last output line of the running command, the wait
					    condition, or the outcome */
};

/* Requests the recovery of node (reason logged). Any thread; never blocks on the recovery. */
enum cluster_recover_result cluster_recover(cluster_t *c, int node, const char *reason, char *msg,
					    size_t msgcap);

/* Copies the running (else the last) recovery's row; false if none was ever requested. */
bool cluster_recovery_copy(cluster_t *c, struct cluster_recovery *out);

/* Applies a reloaded config (health settings, commands, timeouts). False changes nothing. */
bool cluster_update_config(cluster_t *c, const struct config *cfg)
	__attribute__((warn_unused_result));

struct wd_state;

/* Copies the watchdog's state; false (out untouched) when the watchdog is off. Any thread. */
bool cluster_watchdog_state(cluster_t *c, struct wd_state *out);

/* The body of GET /watchdog (watchdog.h); false when the watchdog is off. Any thread. */
bool cluster_watchdog_peer_json(cluster_t *c, char *out, size_t cap);

/* Stops the thread (killing a running command's process group) and frees c. NULL is fine. */
void cluster_stop(cluster_t *c);

/* "up", "down", "waiting", "unused", "quarantine" / "primary", "standby", "unknown". */
const char *cluster_status_name(enum node_status s);
const char *cluster_role_name(enum node_role r);

#endif
