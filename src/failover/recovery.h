/*
 * Online recovery of a down node (PGRELAY RECOVER NODE n, pgpool-II's pcp_recovery_node): the
 * cluster manager's thread runs it beside its health digestion and failover commands, never a
 * worker loop. Stages, each logged and kept in the failover history:
 *   1st_stage     recovery_1st_stage_command makes the node a standby of the current primary
 *   remote_start  recovery_remote_start_command starts it (skipped when unset)
 *   wait_standby  the node answers in recovery, the primary's pg_stat_replication shows it
 *                 streaming, and its replay lag is within load_balance.delay_threshold
 *   attach        the node is attached (as PGRELAY ATTACH NODE) and up as a standby after a check
 * The whole recovery is bounded by recovery_timeout: a command still running then is killed
 * with its process group (SIGTERM, SIGKILL 2 s later), a wait ends, and the node stays down.
 * A failover (the primary it follows changes) ends it too. One recovery at a time.
 *
 * Requests arrive from any thread through cluster_recover() (cluster.h) into a one-slot mailbox
 * under the cluster's mutex; the status row (SHOW pool_recovery) is published back under it.
 */
#ifndef PGRELAY_FAILOVER_RECOVERY_H
#define PGRELAY_FAILOVER_RECOVERY_H

#include <poll.h>
#include <stdbool.h>
#include <stdint.h>

#include "failover/cluster.h"
#include "failover/failover_cmd.h"

struct cluster;

#define RECOVERY_PROBE_EVERY 500 /* ms between requested checks while waiting for the node */

enum recovery_stage {
	REC_IDLE,	  /* nothing runs */
	REC_FIRST_STAGE,  /* recovery_1st_stage_command runs */
	REC_REMOTE_START, /* recovery_remote_start_command runs */
	REC_WAIT,	  /* waiting until the node streams from the primary within the lag bound */
	REC_ATTACH,	  /* attached; waiting for it to be up as a standby */
};

/* A request handed from cluster_recover() to the thread. Guarded by the cluster's mutex. */
struct recovery_request {
	bool pending; /* not yet taken by the thread */
	int node;
	char reason[CLUSTER_REASON_MAX];
};

/* What SHOW pool_recovery shows. Guarded by the cluster's mutex. */
struct recovery_status {
	bool valid;	       /* a recovery was accepted since start (row holds it) */
	bool active;	       /* accepted and not over: another request is refused */
	uint64_t started_mono; /* monotonic ms it was accepted: elapsed while active */
	struct cluster_recovery row;
};

/* The recovery in progress. Owned by the manager's thread. */
struct recovery {
	enum recovery_stage stage;
	int node;		  /* the node recovered */
	int primary;		  /* the primary it follows; a change ends the recovery */
	uint64_t started_mono;	  /* monotonic ms it was taken */
	uint64_t deadline;	  /* started_mono + recovery_timeout */
	uint64_t wait_since;	  /* monotonic ms the wait (or attach) stage began: older
				     observations do not count */
	uint64_t next_probe;	  /* monotonic ms of the next requested check (wait, attach) */
	int64_t started_wall;	  /* CLOCK_REALTIME ms it was accepted */
	int64_t cmd_started_wall; /* CLOCK_REALTIME ms the running command started */
	struct cmd_run run;	  /* the running command */
	char cmdline[CLUSTER_COMMAND_MAX]; /* its expanded command line */
	char detail[CLUSTER_REASON_MAX];   /* the wait condition, for SHOW and the timeout */
};

/*
 * One turn of the manager's loop: takes a request, steps the running command, checks the wait
 * conditions, attaches, ends the recovery on success, failure, timeout or a primary change.
 * Called after fsm_update so that it sees the latest observations and primary.
 */
void recovery_step(struct cluster *c, uint64_t now_ms);

/* The running command's output pipe to poll; false when none. */
bool recovery_pollfd(const struct cluster *c, struct pollfd *pfd);

/* Milliseconds until recovery_step must run again at the latest; -1 when idle. */
int recovery_next_ms(const struct cluster *c, uint64_t now_ms);

/* At cluster_stop: kills a running command's group and reaps it (bounded). */
void recovery_abort(struct cluster *c);

/* "1st_stage", "remote_start", "wait_standby", "attach"; "idle". */
const char *recovery_stage_name(enum recovery_stage s);

#endif
