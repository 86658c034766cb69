/*
 * The cluster manager's decisions as pure functions: node status (up/down/waiting/quarantine),
 * primary discovery, split brain, failover orchestration, operator commands, auto failback.
 *
 * No threads, no I/O, no clock: the manager thread (cluster.c) digests each health snapshot into
 * struct fsm_obs, hands it to fsm_update() with the time, runs the command the core asks for
 * (fsm->want_cmd) and reports its end with fsm_command_done(). Every decision is appended to
 * fsm->events (drained by the caller into the history and the log). Unit-tested from tables of
 * observations (tests/unit/test_cluster.c).
 *
 * Orchestration of one failover (op): FAILOVER_CMD (failover_command runs) -> SEARCH (look for a
 * node that is not in recovery, until search_primary_node_timeout) -> FOLLOW
 * (follow_primary_command once per remaining standby, one after another) -> IDLE. Stages without a
 * configured command are skipped. Failback commands (attach) run when no op needs the command slot.
 */
#ifndef PGRELAY_FAILOVER_NODE_FSM_H
#define PGRELAY_FAILOVER_NODE_FSM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "failover/cluster.h"

#define FSM_NAME_MAX	 64  /* application_name bytes kept, NUL included */
#define FSM_EVENTS_MAX	 32  /* events buffered between two drains (oldest dropped) */
#define FSM_SEARCH_EVERY 100 /* ms between candidate probes during a primary search */

/* What the latest health information says about one node (digested from health.h). */
struct fsm_obs {
	bool checked;	  /* at least one check attempt completed */
	bool ok;	  /* the latest attempt reached the node (and answered the query) */
	bool failed;	  /* failure confirmed: 1 + max_retries failed attempts, or a refused
			     fresh connection in a requested check (doc/failover.md) */
	int successes;	  /* consecutive successful attempts */
	bool in_recovery; /* from the freshest answer (attempt or light poll); valid when ok */
	uint64_t current_lsn, replay_lsn, receive_lsn; /* freshest answer; 0 unknown */
	uint64_t at_ms;	   /* monotonic ms of the freshest answer or failure; 0 never */
	uint64_t replicas; /* bit j: backend j (by application_name) is in this node's
			      pg_stat_replication in state streaming */
	int n_streaming;   /* streaming rows naming a configured backend (all rows if no
			      backend has an application_name) */
};

struct fsm_settings {
	int n;					 /* nodes, 1..CLUSTER_MAX_NODES */
	unsigned flags[CLUSTER_MAX_NODES];	 /* BACKEND_FLAG_* */
	bool checks_enabled;			 /* health_check.period > 0 */
	int rise;				 /* successes before a failed node is healthy */
	bool detach_false_primary;		 /* split brain: detach the false primary */
	bool auto_failback;			 /* re-attach streaming standbys */
	uint32_t auto_failback_interval_ms;	 /* least time between two of one node */
	uint32_t search_primary_node_timeout_ms; /* 0 = search forever */
	uint32_t failover_command_timeout_ms;	 /* also the grace of an inherited failover */
	bool has_failover_cmd, has_follow_cmd, has_failback_cmd;
};

enum fsm_cmd_kind { FSM_CMD_NONE, FSM_CMD_FAILOVER, FSM_CMD_FOLLOW, FSM_CMD_FAILBACK };

/* A command the core wants run now (placeholders, doc/failover.md). Ids are -1 when none. */
struct fsm_cmd {
	enum fsm_cmd_kind kind;
	int node;	 /* %d: failed node (failover), the standby (follow), attached (failback) */
	int new_main;	 /* %m: new main node (failover: the standby to promote) */
	int old_main;	 /* %M */
	int old_primary; /* %P */
};

enum fsm_op {
	FSM_OP_IDLE,
	FSM_OP_FAILOVER_CMD, /* failover_command runs */
	FSM_OP_SEARCH,	     /* looking for the new primary */
	FSM_OP_FOLLOW,	     /* follow_primary_command runs for one standby after another */
};

struct fsm_node {
	enum node_status status;
	enum node_role role;
	enum node_role pg_role;
	bool pg_up;
	bool former_primary;	    /* lost the primary role (failover, false primary): never
				       auto-attached; a returning one is held down until ATTACH */
	bool admin_down;	    /* detached by an operator: never auto-attached */
	bool warned_false;	    /* the false-primary event was recorded for this episode */
	uint64_t waiting_since;	    /* monotonic ms it entered NODE_WAITING */
	uint64_t last_failback;	    /* monotonic ms of its last automatic failback, 0 never */
	int64_t last_status_change; /* wall ms */
	char reason[CLUSTER_REASON_MAX];
};

struct fsm {
	struct fsm_settings set;
	struct fsm_node nodes[CLUSTER_MAX_NODES];
	int primary;	       /* -1 while none */
	bool failing_over;     /* the primary was lost and no new one is published yet */
	bool discovered;       /* the start-up discovery is over */
	bool changed;	       /* something in nodes/primary changed since the caller cleared it */
	uint64_t failovers_ok; /* failovers (and switchovers) that found a new primary */
	uint64_t failovers_failed; /* failovers whose search for a primary timed out */

	enum fsm_op op;
	struct fsm_cmd op_cmd;	 /* the op's failover values (node = failed, ...); kind
				    FSM_CMD_NONE for the start-up discovery */
	bool op_cmd_started;	 /* FAILOVER_CMD: the command was handed out */
	int switchover_target;	 /* PROMOTE: the node to promote, else -1 */
	bool promote_only;	 /* PROMOTE without SWITCHOVER: no follow_primary_command */
	uint64_t search_started; /* monotonic ms */
	uint64_t follow_todo;	 /* bit i: follow_primary_command still to run for i */
	uint64_t failback_todo;	 /* bit i: failback_command still to run for i */
	bool pending_failover;	 /* the primary failed while an op ran: fail over after */
	/* A failover another watchdog leader announced, now ours to finish (fsm_inherit_failover):
	 * without a primary by inherit_deadline, failover_command runs again. */
	bool inherited;
	uint64_t inherit_deadline; /* monotonic ms */
	int inherit_failed;	   /* the node being failed over */
	int inherit_new_main;	   /* the announced %m, -1 unknown */
	char pending_reason[CLUSTER_REASON_MAX];

	bool want_cmd;	    /* a command should start now (cmd); cleared by the caller */
	struct fsm_cmd cmd; /* the command to start, or the one running */
	bool cmd_running;   /* between want_cmd taken and fsm_command_done */

	uint64_t probe_now; /* bit i: check node i at once (attach, failover); the caller
			       requests the probes and clears it */
	struct fsm_obs last_obs[CLUSTER_MAX_NODES]; /* as given to the last fsm_update */

	int n_events;
	/*
	 * Not yet drained, oldest first: only events[0 .. n_events-1] are defined. Last member:
	 * fsm_init leaves these 22 kB alone (untouched, not resident until events come).
	 */
	struct cluster_event events[FSM_EVENTS_MAX];
};

/*
 * This instance became the watchdog leader while a failover of `failed` that another leader
 * announced is unfinished (no primary): that leader's command may have died with it before it
 * promoted anything. Unless a primary appears within failover_command_timeout (the longest the
 * old command was allowed), failover_command runs again, promoting the announced new_main when
 * it is still a live standby, else the most advanced one. Once per inheritance; no-op when a
 * primary is known or a command runs.
 */
void fsm_inherit_failover(struct fsm *f, int failed, int new_main, int64_t wall_ms,
			  uint64_t mono_ms);
/* Leadership lost: an inherited failover is no longer this instance's to re-run. */
void fsm_inherit_drop(struct fsm *f);

/* Initial state: every node waiting (checks on) or up with the static roles (checks off). */
void fsm_init(struct fsm *f, const struct fsm_settings *set, int64_t wall_ms, uint64_t mono_ms);

/* Applies new settings (reload); the node count must be unchanged. */
void fsm_set_settings(struct fsm *f, const struct fsm_settings *set);

/* Digests the latest observations (obs[0 .. n-1]) and advances every decision. */
void fsm_update(struct fsm *f, const struct fsm_obs *obs, int64_t wall_ms, uint64_t mono_ms);

/*
 * The command asked for by want_cmd ended (exit_status as in struct cluster_event; timed_out
 * when it was killed at failover_command_timeout). The caller records its history entry.
 */
void fsm_command_done(struct fsm *f, int exit_status, bool timed_out, int64_t wall_ms,
		      uint64_t mono_ms);

/*
 * An operator's command. Returns false (msg says why) when refused; true when accepted (msg
 * says what happens). Attach/detach/promote events go to fsm->events.
 */
bool fsm_command(struct fsm *f, enum cluster_command cmd, int node, const char *reason,
		 int64_t wall_ms, uint64_t mono_ms, char *msg, size_t msgcap);

/*
 * The watchdog's view (doc/watchdog.md) says node lost the primary role: detach it and keep it
 * out (former primary) like a failover here would, without running a command. When it was this
 * instance's primary a search starts; resume_failover (the leader taking over a failover another
 * instance began) makes the search count as that failover's, so follow_primary_command runs
 * after it. A no-op for a node already down.
 */
void fsm_adopt_down(struct fsm *f, int node, bool resume_failover, const char *reason,
		    int64_t wall_ms, uint64_t mono_ms);

/* Whether node should be probed every FSM_SEARCH_EVERY ms now (a primary search is on). */
bool fsm_wants_fast_probe(const struct fsm *f, int node);

/*
 * The live standby with the most advanced WAL (receive LSN, then replay LSN, then the lowest
 * id), excluding node `exclude`; -1 if none. Live: not down, reached by its last check, in
 * recovery.
 */
int fsm_pick_new_main(const struct fsm *f, int exclude);

/* pgpool's main node: the lowest id whose status is not down/unused; -1 if none. */
int fsm_main_node(const struct fsm *f);

/*
 * Digests one node's published health state. app_names[j] is backends[j].application_name
 * ("" when unset). Pure; exposed for tests.
 */
void fsm_obs_from_health(const struct health_node_state *s, const char (*app_names)[FSM_NAME_MAX],
			 int n, struct fsm_obs *out);

#endif
