/*
 * The cluster manager's private types, shared by cluster.c (the thread, views, failover
 * commands) and recovery.c (online recovery, PGRELAY RECOVER NODE). Nothing outside
 * src/failover/ includes this header.
 */
#ifndef PGRELAY_FAILOVER_CLUSTER_INT_H
#define PGRELAY_FAILOVER_CLUSTER_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "failover/cluster.h"
#include "failover/failover_cmd.h"
#include "failover/history.h"
#include "failover/node_fsm.h"
#include "failover/recovery.h"
#include "failover/wd_policy.h"
#include "health/health.h"

#define QUEUE_MAX 16 /* operator commands waiting for the thread */

/* Settings the thread uses; every string owned. Replaced whole on reload. */
struct cluster_settings {
	char *failover_command; /* owned or NULL */
	char *follow_primary_command;
	char *failback_command;
	uint32_t command_timeout_ms;
	char *recovery_1st_stage_command;    /* owned or NULL: recoveries are refused */
	char *recovery_remote_start_command; /* owned or NULL: the stage is skipped */
	uint32_t recovery_timeout_ms;	     /* the whole recovery */
	uint32_t delay_threshold;	     /* load_balance.delay_threshold: bytes, 0 = none */
	struct fsm_settings fsm;
};

struct node_conf {
	char *host; /* owned */
	int port;
	char *data_dir; /* owned, may be "" */
};

struct queued_cmd {
	enum cluster_command cmd;
	int node;
	char reason[CLUSTER_REASON_MAX];
};

struct cluster {
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t discovered_cv; /* signalled when discovery ends */
	int wake_rd, wake_wr;	      /* nonblocking self-pipe */
	void (*notify)(void *arg);
	void *notify_arg;
	int n;
	struct node_conf nodes[CLUSTER_MAX_NODES]; /* immutable after start */
	char app_names[CLUSTER_MAX_NODES][FSM_NAME_MAX];
	health_t *health; /* NULL when health checks are disabled */
	struct history history;
	atomic_bool report_enabled; /* failover_on_backend_error */

	/* mu */
	bool stop;
	bool discovery_done;
	struct cluster_view *view; /* owned: the published view */
	struct queued_cmd queue[QUEUE_MAX];
	int n_queued;
	struct cluster_settings *pending; /* owned: a reload not yet taken */
	bool fsm_busy;			  /* a failover op or command runs (the thread's latest) */
	bool rec_configured;		  /* recovery_1st_stage_command is set (latest config) */
	struct recovery_request rec_req;  /* PGRELAY RECOVER NODE, taken by the thread */
	struct recovery_status rec_pub;	  /* what SHOW pool_recovery shows */

	/* thread */
	struct cluster_settings cur;
	struct fsm fsm;
	struct health_snapshot *snap; /* owned */
	struct fsm_obs obs[CLUSTER_MAX_NODES];
	struct cmd_run run;
	char run_cmdline[CLUSTER_COMMAND_MAX];
	struct fsm_cmd run_cmd;
	int64_t run_started_wall;
	struct lsn_sample samples[CLUSTER_LSN_SAMPLES];
	int n_samples;
	int samples_of; /* the primary the samples belong to */
	uint64_t next_fast_probe;
	uint64_t seq;
	struct cluster_view *work; /* owned: the view being built */
	struct recovery rec;	   /* the online recovery in progress (recovery.c) */
	struct wd_policy wdp;	   /* the watchdog (doc/watchdog.md); wdp.wd NULL when off */
};

/* With the watchdog on: whether this instance is its leader (and not fenced). Any thread. */
bool cluster_watchdog_leader(cluster_t *c);

#endif
