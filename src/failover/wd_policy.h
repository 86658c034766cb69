/*
 * The cluster manager's side of the watchdog (doc/watchdog.md): how the manager thread
 * (cluster.c) uses what the watchdog thread (watchdog.h) reads from etcd. Runs on the manager
 * thread only; every function is a step of its loop and never blocks.
 *
 *  - consensus: a primary that fails its checks here is failed over only by the leader, and only
 *    when a majority of the live instances report it failed (failover_require_consensus); until
 *    then its failure is hidden from the core (node_fsm.c) and this instance's published view
 *    sends no writes to it (clients wait, bounded by their timeouts);
 *  - one view: the leader hands its view (primary, failover state, former primaries) to etcd,
 *    and every instance applies the views it reads (a former primary is detached everywhere);
 *  - commands: only the leader of a "manage" watchdog runs them; a failover command starts only
 *    once the view that announces it is stored in etcd;
 *  - fencing: a fenced instance publishes no primary.
 */
#ifndef PGRELAY_FAILOVER_WD_POLICY_H
#define PGRELAY_FAILOVER_WD_POLICY_H

#include <stdbool.h>
#include <stdint.h>

#include "failover/history.h"
#include "failover/node_fsm.h"
#include "failover/watchdog.h"

struct config;

struct wd_policy {
	watchdog_t *wd;		/* owned; NULL when the watchdog is off */
	bool require_consensus; /* watchdog.failover_require_consensus */
	struct wd_state st;	/* the latest copy of the watchdog's state */
	bool started;		/* st was copied at least once */
	bool prev_leader, prev_fenced, prev_connected;
	bool ever_connected;	 /* a lease was held once (later gains are "joined" events) */
	bool cmds_allowed;	 /* the core runs with its has_*_cmd settings as configured */
	uint64_t adopted_epoch;	 /* the last etcd view applied */
	uint64_t adopted_former; /* its former primaries, as applied */
	uint64_t epoch;		 /* highest epoch seen or written */
	uint64_t seq;		 /* of the last view handed to the watchdog */
	struct wd_view handed;	 /* that view (epoch and leader aside) */
	bool handed_valid;
	uint64_t consensus_noted; /* bit i: "no consensus" recorded for this failure of i */
	uint64_t consensus_done;  /* bit i: "consensus reached" recorded */
	struct fsm_obs masked[CLUSTER_MAX_NODES]; /* what the core sees */
};

/* Starts the watchdog when cfg enables it (p->wd stays NULL otherwise). False on failure. */
bool wdp_start(struct wd_policy *p, const struct config *cfg, void (*notify)(void *), void *arg)
	__attribute__((warn_unused_result));
void wdp_stop(struct wd_policy *p);

/*
 * Before the core's update: takes the watchdog's state, records its events, applies a new etcd
 * view, gives the core the command settings of this instance's role (set: as configured) and
 * returns the observations the core should see (obs itself when the watchdog is off).
 */
const struct fsm_obs *wdp_before(struct wd_policy *p, struct fsm *f, const struct fsm_settings *set,
				 const struct fsm_obs *obs, struct history *h, int64_t wall_ms,
				 uint64_t mono_ms);

/* After the core's update: this instance's report, and (leader) the view to write. */
void wdp_handoff(struct wd_policy *p, const struct fsm *f, const struct fsm_obs *obs);

/* The command the core wants: 1 run it, 0 not yet (its view is not in etcd), -1 refuse it. */
int wdp_command_gate(struct wd_policy *p, const struct fsm_cmd *cmd);

/* Adjusts a view before it is published to the data plane (fencing, no consensus yet). */
void wdp_overlay(const struct wd_policy *p, const struct fsm_obs *obs, struct cluster_view *v);

#endif
