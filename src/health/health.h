/*
 * Health thread: probes every backend node on its own schedule and publishes what it saw.
 *
 * One pthread runs all probes concurrently in one poll() loop (struct probe from probe.h), so a
 * dead or frozen node costs at most one timeout_ms of its own and never delays the others. Each
 * node runs "sessions" every period_ms: a first attempt, then up to max_retries retries, attempt
 * k started at session start + k * retry_delay_ms whether or not the earlier ones ended (they
 * overlap: a frozen node is confirmed in timeout_ms + max_retries * retry_delay_ms, not in
 * (1 + max_retries) timeouts). The first success ends the session (the other attempts are
 * abandoned); a node is reported failed when 1 + max_retries attempts of a session failed and
 * stays failed (probed once a period, without retries) until an attempt succeeds. At most
 * HEALTH_MAX_IN_FLIGHT attempts of one node run at once; a later retry waits for a free slot.
 * The thread never touches pool or worker objects: after any change it copies a whole
 * snapshot into a mailbox under a mutex and calls notify(arg) (the worker passes a function that
 * does uv_async_send; sends coalesce, hence whole snapshots, never deltas). The worker reads the
 * mailbox with health_snapshot_copy().
 *
 * Thread safety: every health_* function except health_start/health_stop may be called from any
 * thread while the health thread runs. notify is called from the health thread without any lock
 * held and never after health_stop() returned.
 */
#ifndef PGRELAY_HEALTH_HEALTH_H
#define PGRELAY_HEALTH_HEALTH_H

#include <stdbool.h>
#include <stdint.h>

#include "health/probe.h"

#define HEALTH_MAX_NODES 64 /* == CONFIG_MAX_BACKENDS (checked in health.c) */
/* Attempts of one node running at once (each holds a connection): bounds max_retries' overlap. */
#define HEALTH_MAX_IN_FLIGHT 8

struct health_check_conf;

/*
 * The health-check settings handed to health_start/health_update_config. Strings are borrowed
 * only for the duration of that call: the thread keeps its own copies (a reload frees the config).
 */
struct health_config_copy {
	uint32_t period_ms;	 /* time between session starts per node; 0 disables probing */
	uint32_t timeout_ms;	 /* bound on one attempt (connect + query); >= 1 */
	int max_retries;	 /* retries after a failed first attempt; >= 0 */
	uint32_t retry_delay_ms; /* between the starts of a session's attempts (they overlap) */
	const char *user;	 /* borrowed; NULL or "" means libpq's default */
	const char *password;	 /* borrowed; never logged or published */
	const char *database;	 /* borrowed */
	uint32_t lsn_poll_ms;	 /* light WAL-position poll on kept connections; 0 = none */
};

/* Fills out from the loaded config; out borrows hc's strings. */
void health_config_from_conf(const struct health_check_conf *hc, struct health_config_copy *out);

/*
 * Per-node counters with the meaning of pgpool's SHOW pool_health_check_stats columns. A session
 * is one first attempt plus its retries. Times are wall clock (CLOCK_REALTIME) milliseconds since
 * the epoch, 0 meaning never; durations run from the first attempt's start to the session's end.
 */
struct health_stats {
	uint64_t total_count;		      /* sessions started, skipped ones included */
	uint64_t success_count;		      /* sessions that ended with a successful attempt */
	uint64_t fail_count;		      /* sessions that ended with every attempt failed */
	uint64_t skip_count;		      /* periods not probed because of health_set_skip */
	uint64_t retry_count;		      /* retries started over all sessions (one abandoned
						 because an earlier attempt answered counts) */
	uint32_t max_retry_count;	      /* most retries started in one session */
	uint32_t max_duration_ms;	      /* longest completed session */
	uint32_t min_duration_ms;	      /* shortest completed session (0 before the first) */
	uint64_t duration_sum_ms;	      /* over completed sessions, for the average */
	int64_t last_health_check;	      /* last attempt (a retry counts) */
	int64_t last_successful_health_check; /* last successful attempt */
	int64_t last_skip_health_check;	      /* last skipped period */
	int64_t last_failed_health_check;     /* last failed session's final attempt */
};

/* retry_count / completed sessions; 0 before the first. */
double health_stats_average_retry_count(const struct health_stats *s);
/* duration_sum_ms / completed sessions; 0 before the first. */
double health_stats_average_duration_ms(const struct health_stats *s);

/*
 * The published state of one node. obs is the last member, so the part in use is one prefix ending
 * with obs's last used row (probe.h): copies stop there and never touch the unused rows.
 */
struct health_node_state {
	bool has_observation;	     /* obs holds a completed attempt */
	bool failed;		     /* 1 + max_retries consecutive failures and no success since */
	bool skipped;		     /* health_set_skip(node, true) is in effect */
	bool in_session;	     /* a session is running (attempts in flight or still due) */
	int consecutive_failures;    /* failed attempts since the last success */
	int consecutive_successes;   /* successful attempts since the last failure */
	int session_attempts;	     /* attempts started in the running (or last) session */
	int session_failures;	     /* of those, the ones that ended failed */
	int session_retries;	     /* retries started so far in the running (or last) session */
	uint64_t session_started_at; /* monotonic ms of the running (or last) session's start */
	bool session_requested;	     /* the running (or last) session was asked for (a request, or
					a light poll failed or went unanswered), not periodic */
	/*
	 * The latest light poll (lsn_poll_ms): pg_is_in_recovery() and WAL positions read on the
	 * kept connection between sessions. Not a health check: no counter moves. A light poll that
	 * fails starts a requested session at once instead.
	 */
	bool has_lsn;		  /* the lsn_* fields hold an answer */
	bool lsn_in_recovery;	  /* pg_is_in_recovery() */
	uint64_t lsn_current;	  /* pg_current_wal_lsn() on a primary, else 0 */
	uint64_t lsn_replay;	  /* pg_last_wal_replay_lsn(), 0 on a primary */
	uint64_t lsn_receive;	  /* pg_last_wal_receive_lsn(), 0 on a primary */
	uint64_t lsn_started_at;  /* monotonic ms the light query was sent */
	uint64_t lsn_observed_at; /* monotonic ms its answer arrived */
	struct health_stats stats;
	struct node_observation obs; /* the latest completed attempt (failed ones included); last */
};

/* A whole, self-consistent view. Only nodes[0 .. n_nodes-1] are meaningful (and copied). */
struct health_snapshot {
	uint64_t seq;	       /* increases with every publication; 1 is the initial empty one */
	uint64_t published_at; /* monotonic ms */
	bool enabled;	       /* period_ms > 0 */
	int n_nodes;
	struct health_node_state nodes[HEALTH_MAX_NODES];
};

typedef struct health health_t; /* opaque handle */

/*
 * Copies cfg and targets (host, port; a non-empty user/password/dbname in a target overrides
 * cfg's for that node) and starts the thread, which publishes an initial snapshot (seq 1) and
 * probes every node at once. 1 <= n <= HEALTH_MAX_NODES. notify may be NULL. Returns NULL (and
 * logs why) if the arguments are invalid or a resource could not be had.
 */
health_t *health_start(const struct health_config_copy *cfg, const struct probe_target *targets,
		       int n, void (*notify)(void *arg), void *arg)
	__attribute__((warn_unused_result));

/*
 * Copies the latest published snapshot (header and n_nodes entries, each up to its observation's
 * last used row) into out.
 */
void health_snapshot_copy(health_t *h, struct health_snapshot *out);

/*
 * Asks for a session now on node (or every node if node < 0), e.g. after the data plane saw a
 * backend socket error. A node already in a session (probing or waiting to retry) is left alone:
 * that session answers the question. Ignored while probing is disabled.
 */
void health_request_probe_now(health_t *h, int node);

/*
 * Skips (skip = true) or resumes probing of node, e.g. while the failover module holds it down.
 * Each period of a skipped node counts in skip_count; a running session finishes first.
 */
void health_set_skip(health_t *h, int node, bool skip);

/*
 * Applies new settings (reload): timing at once (a shorter period brings the next session
 * forward), credentials from each node's next attempt on (kept connections are reopened).
 * Returns false, changing nothing, on invalid values or out of memory.
 */
bool health_update_config(health_t *h, const struct health_config_copy *cfg)
	__attribute__((warn_unused_result));

/*
 * Stops and joins the thread and frees h. Returns within one poll() wake-up: probes in flight are
 * abandoned (closed, not waited for). NULL is accepted.
 */
void health_stop(health_t *h);

/* ----------------------------------------------------------------------------------------------
 * The per-node state machine, as pure functions (used by the thread, exposed for tests).
 */

enum health_next {
	HEALTH_NEXT_PERIOD, /* the session is over: next session at session start + period */
	HEALTH_NEXT_RETRY,  /* the session goes on: attempts are in flight or still due */
};

/* A session starts (no attempt started yet). */
void health_fsm_session_begin(struct health_node_state *s, int64_t wall_ms, uint64_t mono_ms);
/*
 * When the session's next attempt is due (monotonic ms): attempt k at session start + k *
 * retry_delay_ms, for k < 1 + max_retries (k < 1 on a node already failed). UINT64_MAX when no
 * further attempt may start or no session runs. Earlier attempts need not have ended.
 */
uint64_t health_fsm_next_attempt_at(const struct health_node_state *s, int max_retries,
				    uint32_t retry_delay_ms);
/* An attempt of the running session starts; every attempt after the first is a retry. */
void health_fsm_attempt_started(struct health_node_state *s);
/*
 * Records one attempt's outcome (ok or not) at wall_ms/mono_ms and says whether the session goes
 * on. A success ends the session and clears failed (the caller abandons the attempts still in
 * flight). The failure that makes 1 + max_retries failed attempts in the session marks the node
 * failed and ends it; on a node already failed, the session ends when all its attempts failed.
 */
enum health_next health_fsm_record(struct health_node_state *s, bool ok, int max_retries,
				   int64_t wall_ms, uint64_t mono_ms);
/* A period passed without a session because the node is skipped. */
void health_fsm_skip(struct health_node_state *s, int64_t wall_ms);

#endif
