/*
 * The cluster manager thread (see cluster.h for the contract, doc/failover.md for the behaviour).
 *
 * Ownership: struct cluster is shared between the callers' threads and the manager thread.
 * Fields marked "mu" are touched only under c->mu; fields marked "thread" belong to the manager
 * thread after cluster_start returned (cluster_stop reads them only after the join). The health
 * thread (health.h) runs beside it: its notify callback only writes the wake pipe.
 *
 * One loop: poll() on the wake pipe and the running commands' output pipes, then
 *   1. take operator commands and reloads from the mailbox,
 *   2. digest the latest health snapshot into struct fsm_obs and run the pure core (node_fsm.c),
 *   3. step the running command (failover_cmd.c); start the one the core wants; step the online
 *      recovery (recovery.c: its own command slot, so a long pg_basebackup never delays a
 *      failover command),
 *   4. ask the health thread for the checks the core wants (attach, search every 100 ms),
 *   5. move the core's events to the history and the log,
 *   6. rebuild the view; publish it and notify when it differs from the last one.
 * Nothing in the loop blocks: probes run on the health thread, commands are watched, not waited.
 */
#include "failover/cluster.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "conf/config.h"
#include "failover/cluster_int.h"
#include "failover/failover_cmd.h"
#include "failover/history.h"
#include "failover/node_fsm.h"
#include "failover/wd_policy.h"
#include "failover/recovery.h"
#include "util/log.h"

#define COMPONENT   "cluster"
#define LSN_POLL_MS 100	 /* light WAL-position poll of every node (health.h) */
#define MAX_WAIT_MS 1000 /* the loop wakes at least this often */

/* ----------------------------------------------------------------------------------------------
 * Small helpers.
 */

static int64_t wall_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void wake(struct cluster *c)
{
	char b = 1;

	while (write(c->wake_wr, &b, 1) < 0 && errno == EINTR) {
	}
}

static void on_health(void *arg)
{
	wake(arg);
}

const char *cluster_status_name(enum node_status s)
{
	switch (s) {
	case NODE_UP:
		return "up";
	case NODE_DOWN:
		return "down";
	case NODE_WAITING:
		return "waiting";
	case NODE_UNUSED:
		return "unused";
	case NODE_QUARANTINE:
		return "quarantine";
	}
	return "unknown";
}

const char *cluster_role_name(enum node_role r)
{
	switch (r) {
	case NODE_ROLE_PRIMARY:
		return "primary";
	case NODE_ROLE_STANDBY:
		return "standby";
	case NODE_ROLE_UNKNOWN:
		break;
	}
	return "unknown";
}

static char *dup_or_null(const char *s)
{
	return s != NULL && s[0] != '\0' ? strdup(s) : NULL;
}

static void settings_free(struct cluster_settings *s)
{
	free(s->failover_command);
	free(s->follow_primary_command);
	free(s->failback_command);
	free(s->recovery_1st_stage_command);
	free(s->recovery_remote_start_command);
	memset(s, 0, sizeof(*s));
}

static bool settings_from_conf(struct cluster_settings *s, const struct config *cfg)
{
	memset(s, 0, sizeof(*s));
	s->failover_command = dup_or_null(cfg->failover_command);
	s->follow_primary_command = dup_or_null(cfg->follow_primary_command);
	s->failback_command = dup_or_null(cfg->failback_command);
	s->recovery_1st_stage_command = dup_or_null(cfg->recovery_1st_stage_command);
	s->recovery_remote_start_command = dup_or_null(cfg->recovery_remote_start_command);
	if ((cfg->failover_command != NULL && cfg->failover_command[0] && !s->failover_command) ||
	    (cfg->recovery_1st_stage_command != NULL && cfg->recovery_1st_stage_command[0] &&
	     !s->recovery_1st_stage_command) ||
	    (cfg->recovery_remote_start_command != NULL && cfg->recovery_remote_start_command[0] &&
	     !s->recovery_remote_start_command) ||
	    (cfg->follow_primary_command != NULL && cfg->follow_primary_command[0] &&
	     !s->follow_primary_command) ||
	    (cfg->failback_command != NULL && cfg->failback_command[0] && !s->failback_command)) {
		settings_free(s);
		return false;
	}
	s->command_timeout_ms = cfg->failover_command_timeout_ms;
	s->recovery_timeout_ms = cfg->recovery_timeout_ms;
	s->delay_threshold = cfg->load_balance.delay_threshold;
	s->fsm.n = cfg->n_backends;
	for (int i = 0; i < cfg->n_backends; i++)
		s->fsm.flags[i] = cfg->backends[i].flags;
	s->fsm.checks_enabled = cfg->health_check.period_ms > 0;
	s->fsm.rise = cfg->health_check.rise < 1 ? 1 : cfg->health_check.rise;
	s->fsm.detach_false_primary = cfg->detach_false_primary;
	s->fsm.auto_failback = cfg->auto_failback;
	s->fsm.auto_failback_interval_ms = cfg->auto_failback_interval_ms;
	s->fsm.search_primary_node_timeout_ms = cfg->search_primary_node_timeout_ms;
	s->fsm.failover_command_timeout_ms = cfg->failover_command_timeout_ms;
	s->fsm.has_failover_cmd = s->failover_command != NULL;
	s->fsm.has_follow_cmd = s->follow_primary_command != NULL;
	s->fsm.has_failback_cmd = s->failback_command != NULL;
	return true;
}

static void health_cfg(const struct config *cfg, struct health_config_copy *hc)
{
	health_config_from_conf(&cfg->health_check, hc);
	hc->lsn_poll_ms = LSN_POLL_MS;
}

/* ----------------------------------------------------------------------------------------------
 * Commands (failover_command, follow_primary_command, failback_command).
 */

static void fill_vars(const struct cluster *c, const struct fsm_cmd *fc, struct cmd_vars *v)
{
	const struct node_conf *d = fc->node >= 0 ? &c->nodes[fc->node] : NULL;
	const struct node_conf *m = fc->new_main >= 0 ? &c->nodes[fc->new_main] : NULL;
	const struct node_conf *p = fc->old_primary >= 0 ? &c->nodes[fc->old_primary] : NULL;

	*v = (struct cmd_vars){
		.failed_id = fc->node,
		.failed_host = d ? d->host : NULL,
		.failed_port = d ? d->port : 0,
		.failed_dir = d ? d->data_dir : NULL,
		.new_main_id = fc->new_main,
		.new_main_host = m ? m->host : NULL,
		.new_main_port = m ? m->port : 0,
		.new_main_dir = m ? m->data_dir : NULL,
		.old_main_id = fc->old_main,
		.old_primary_id = fc->old_primary,
		.old_primary_host = p ? p->host : NULL,
		.old_primary_port = p ? p->port : 0,
	};
}

static const char *cmd_event_name(enum fsm_cmd_kind k)
{
	switch (k) {
	case FSM_CMD_FAILOVER:
		return "failover";
	case FSM_CMD_FOLLOW:
		return "follow_primary";
	case FSM_CMD_FAILBACK:
		return "failback";
	case FSM_CMD_NONE:
		break;
	}
	return "command";
}

static const char *cmd_template(const struct cluster *c, enum fsm_cmd_kind k)
{
	switch (k) {
	case FSM_CMD_FAILOVER:
		return c->cur.failover_command;
	case FSM_CMD_FOLLOW:
		return c->cur.follow_primary_command;
	case FSM_CMD_FAILBACK:
		return c->cur.failback_command;
	case FSM_CMD_NONE:
		break;
	}
	return NULL;
}

/* The running command ended (or could not start): history, log, core. */
static void command_ended(struct cluster *c, int exit_status, bool timed_out, uint32_t dur_ms,
			  const char *last_line)
{
	struct cluster_event e;
	const char *name = cmd_event_name(c->run_cmd.kind);

	memset(&e, 0, sizeof(e));
	e.at_ms = c->run_started_wall;
	snprintf(e.event, sizeof(e.event), "%s", name);
	e.node = c->run_cmd.node;
	snprintf(e.command, sizeof(e.command), "%s", c->run_cmdline);
	e.exit_status = exit_status;
	e.duration_ms = dur_ms;
	if (timed_out)
		snprintf(e.detail, sizeof(e.detail), "timed out after %u ms; %s", dur_ms,
			 last_line);
	else
		snprintf(e.detail, sizeof(e.detail), "%s", last_line);
	history_add(&c->history, &e);
	if (exit_status == 0 && !timed_out)
		log_info("failover", 0, "%s for node %d succeeded in %u ms%s%s", name, e.node,
			 dur_ms, last_line[0] ? ": " : "", last_line);
	else
		log_warning("failover", 0, "%s for node %d %s (exit status %d) after %u ms%s%s",
			    name, e.node, timed_out ? "timed out" : "failed", exit_status, dur_ms,
			    last_line[0] ? ": " : "", last_line);
	fsm_command_done(&c->fsm, exit_status, timed_out, wall_now_ms(), probe_now_ms());
}

/*
 * PGRELAY_LIVE_STANDBYS: "id,host,port,data_directory" of every attached node that answered its
 * last check in recovery, space-separated, so a failover script can compare their WAL positions
 * itself. The failed node and the new primary are left out once known.
 */
static void live_standbys_env(const struct cluster *c, char *out, size_t cap)
{
	size_t len = (size_t)snprintf(out, cap, "PGRELAY_LIVE_STANDBYS=");

	for (int i = 0; i < c->n && len < cap; i++) {
		const struct fsm_node *nd = &c->fsm.nodes[i];

		if (i == c->run_cmd.node || i == c->fsm.primary || nd->status == NODE_DOWN ||
		    nd->status == NODE_UNUSED || !c->obs[i].ok || !c->obs[i].in_recovery)
			continue;
		len += (size_t)snprintf(out + len, cap - len, "%s%d,%s,%d,%s",
					out[len - 1] == '=' ? "" : " ", i, c->nodes[i].host,
					c->nodes[i].port, c->nodes[i].data_dir);
	}
}

/* Starts the command the core asked for; a missing template or a failed start ends it at once. */
static void start_wanted(struct cluster *c)
{
	while (c->fsm.want_cmd) {
		const char *tmpl;
		struct cmd_vars v;
		char envbuf[CMD_ENV_VARS][CLUSTER_COMMAND_MAX];
		char live[2048], why[64], app[FSM_NAME_MAX + 40];
		char *env[CMD_ENV_VARS + 3];
		int gate = wdp_command_gate(&c->wdp, &c->fsm.cmd);

		if (gate == 0)
			return; /* the view announcing it is not in etcd yet */
		c->fsm.want_cmd = false;
		if (gate < 0) {
			c->run_cmd = c->fsm.cmd;
			c->run_started_wall = wall_now_ms();
			c->run_cmdline[0] = '\0';
			command_ended(c, -1, false, 0,
				      "not run: this instance is not the watchdog leader");
			continue;
		}
		c->run_cmd = c->fsm.cmd;
		c->run_started_wall = wall_now_ms();
		tmpl = cmd_template(c, c->run_cmd.kind);
		fill_vars(c, &c->run_cmd, &v);
		if (tmpl == NULL) {
			c->run_cmdline[0] = '\0';
			command_ended(c, -1, false, 0, "not configured");
			continue;
		}
		if (!cmd_expand(tmpl, &v, c->run_cmdline, sizeof(c->run_cmdline))) {
			command_ended(c, -1, false, 0, "command line too long");
			continue;
		}
		cmd_build_env(&v, envbuf, env);
		live_standbys_env(c, live, sizeof(live));
		env[CMD_ENV_VARS] = live;
		snprintf(why, sizeof(why), "PGRELAY_FAILOVER_REASON=%s",
			 c->run_cmd.kind != FSM_CMD_FAILOVER	    ? ""
			 : c->fsm.switchover_target >= 0	    ? "switchover"
			 : c->fsm.nodes[c->run_cmd.node].admin_down ? "operator_detach"
								    : "health_check");
		env[CMD_ENV_VARS + 1] = why;
		snprintf(app, sizeof(app), "PGRELAY_FAILED_APPLICATION_NAME=%s",
			 c->run_cmd.node >= 0 ? c->app_names[c->run_cmd.node] : "");
		env[CMD_ENV_VARS + 2] = app;
		if (c->run_cmd.kind == FSM_CMD_FAILOVER)
			log_info("failover", 0,
				 "failover: node %d failed; new main node %d, old primary %d",
				 v.failed_id, v.new_main_id, v.old_primary_id);
		if (!cmd_start(&c->run, cmd_event_name(c->run_cmd.kind), c->run_cmdline, env,
			       CMD_ENV_VARS + 3, c->cur.command_timeout_ms, probe_now_ms()))
			command_ended(c, -1, false, 0, "could not start /bin/sh");
		explicit_bzero(envbuf, sizeof(envbuf));
	}
}

static void step_command(struct cluster *c)
{
	char last[CLUSTER_REASON_MAX];

	if (!c->run.running || !cmd_step(&c->run, probe_now_ms()))
		return;
	cmd_last_line(&c->run, last, sizeof(last));
	command_ended(c, c->run.exit_status, c->run.timed_out, c->run.duration_ms, last);
}

/* ----------------------------------------------------------------------------------------------
 * Views.
 */

/* The primary's pg_stat_replication row for node i (by application_name), or NULL. */
static const struct replica_row *replica_row_of(const struct cluster *c, int primary, int i)
{
	const struct health_node_state *ps;

	if (primary < 0 || c->app_names[i][0] == '\0' || c->snap == NULL)
		return NULL;
	ps = &c->snap->nodes[primary];
	if (!ps->has_observation || !ps->obs.reachable)
		return NULL;
	for (int r = 0; r < ps->obs.n_replicas; r++) {
		if (strcmp(ps->obs.replicas[r].application_name, c->app_names[i]) == 0)
			return &ps->obs.replicas[r];
	}
	return NULL;
}

/* Adds the primary's latest WAL position to the samples (oldest dropped). */
static void sample_lsn(struct cluster *c)
{
	int p = c->fsm.primary;
	const struct health_node_state *s;
	uint64_t at = 0, lsn = 0;
	struct lsn_sample *last;

	if (p != c->samples_of) {
		c->n_samples = 0;
		c->samples_of = p;
	}
	if (p < 0 || c->snap == NULL)
		return;
	s = &c->snap->nodes[p];
	if (s->has_observation && s->obs.reachable && s->obs.current_lsn != 0) {
		/* The probe's start: earlier than its query, so still an upper bound's time. */
		at = s->obs.observed_at - s->obs.latency_ms;
		lsn = s->obs.current_lsn;
	}
	if (s->has_lsn && s->lsn_current != 0 && s->lsn_started_at >= at) {
		at = s->lsn_started_at;
		lsn = s->lsn_current;
	}
	if (lsn == 0)
		return;
	last = c->n_samples > 0 ? &c->samples[c->n_samples - 1] : NULL;
	if (last != NULL && at <= last->at_ms)
		return;
	if (last != NULL && lsn == last->lsn) {
		/* Same position, later time: an equally valid and fresher bound. */
		last->at_ms = at;
		return;
	}
	if (c->n_samples == CLUSTER_LSN_SAMPLES) {
		memmove(&c->samples[0], &c->samples[1],
			sizeof(c->samples[0]) * (CLUSTER_LSN_SAMPLES - 1));
		c->n_samples--;
	}
	c->samples[c->n_samples++] = (struct lsn_sample){ at, lsn };
}

/*
 * A view's bytes in use are two spans: the header with nodes[0 .. n-1], and stats[0 .. n-1]. The
 * views this thread builds and publishes (c->work, c->view) come zeroed from calloc, and nothing
 * writes their entries past c->n (which never changes), so clearing, comparing and copying the
 * two spans does what doing it to the whole view did, touching 2 of its 6 pages (3 backends).
 * cluster_view_copy hands out a whole view, zeroing the rest instead of reading it.
 */
_Static_assert(offsetof(struct cluster_view, stats) + sizeof(((struct cluster_view *)0)->stats) ==
		       sizeof(struct cluster_view),
	       "stats[] must end struct cluster_view (cluster_view_copy zeroes up to its end)");

static size_t view_head_size(int n)
{
	return offsetof(struct cluster_view, nodes) + (size_t)n * sizeof(struct cluster_node);
}

static size_t view_stats_size(int n)
{
	return (size_t)n * sizeof(struct health_stats);
}

static void build_view(struct cluster *c, struct cluster_view *v)
{
	const struct fsm *f = &c->fsm;
	int p = f->primary;
	uint64_t p_lsn = p >= 0 ? c->obs[p].current_lsn : 0;

	memset(v, 0, view_head_size(c->n));
	memset(v->stats, 0, view_stats_size(c->n));
	v->n_nodes = c->n;
	v->primary = p;
	v->failing_over = f->failing_over;
	v->failovers_ok = f->failovers_ok;
	v->failovers_failed = f->failovers_failed;
	v->checks_enabled = f->set.checks_enabled;
	memcpy(v->lsn_samples, c->samples, sizeof(c->samples[0]) * (size_t)c->n_samples);
	v->n_lsn_samples = c->n_samples;
	for (int i = 0; i < c->n; i++) {
		const struct fsm_node *nd = &f->nodes[i];
		const struct fsm_obs *o = &c->obs[i];
		struct cluster_node *vn = &v->nodes[i];
		const struct replica_row *row;

		vn->status = nd->status;
		vn->role = nd->role;
		vn->pg_role = nd->pg_role;
		vn->pg_up = nd->pg_up;
		vn->last_status_change = nd->last_status_change;
		snprintf(vn->reason, sizeof(vn->reason), "%s", nd->reason);
		if (c->snap == NULL || !o->checked)
			continue;
		if (o->ok) {
			vn->current_lsn = o->in_recovery ? 0 : o->current_lsn;
			vn->replay_lsn = o->in_recovery ? o->replay_lsn : 0;
			vn->receive_lsn = o->in_recovery ? o->receive_lsn : 0;
			vn->lsn_at_ms = o->at_ms;
		}
		if (p >= 0 && i != p && vn->replay_lsn != 0 && p_lsn > vn->replay_lsn)
			vn->replication_delay = p_lsn - vn->replay_lsn;
		if (c->snap->nodes[i].obs.has_replay_delay && o->ok && o->in_recovery) {
			vn->has_delay_time = true;
			vn->delay_s = c->snap->nodes[i].obs.replay_delay_s;
		}
		if (i != p && (row = replica_row_of(c, p, i)) != NULL) {
			snprintf(vn->replication_state, sizeof(vn->replication_state), "%s",
				 row->state);
			snprintf(vn->sync_state, sizeof(vn->sync_state), "%s", row->sync_state);
		}
		v->stats[i] = c->snap->nodes[i].stats;
	}
}

/* Publishes the work view if it differs from the published one (seq aside). */
static void publish_if_changed(struct cluster *c)
{
	struct cluster_view *w = c->work;
	bool changed, done;
	const size_t off = offsetof(struct cluster_view, n_nodes);
	const size_t head = view_head_size(c->n), stats = view_stats_size(c->n);

	build_view(c, w);
	wdp_overlay(&c->wdp, c->obs, w);
	pthread_mutex_lock(&c->mu);
	/* The used spans only (see view_head_size); seq aside. */
	changed = memcmp((char *)w + off, (char *)c->view + off, head - off) != 0 ||
		  memcmp(w->stats, c->view->stats, stats) != 0;
	if (changed) {
		w->seq = ++c->seq;
		memcpy(c->view, w, head);
		memcpy(c->view->stats, w->stats, stats);
	}
	c->fsm_busy = c->fsm.op != FSM_OP_IDLE || c->fsm.cmd_running;
	done = c->fsm.primary >= 0 || c->fsm.discovered;
	if (!done && c->fsm.set.checks_enabled) {
		done = true;
		for (int i = 0; i < c->n; i++)
			done &= c->obs[i].checked;
	}
	if (done && !c->discovery_done) {
		c->discovery_done = true;
		pthread_cond_broadcast(&c->discovered_cv);
	}
	pthread_mutex_unlock(&c->mu);
	if (changed && c->notify != NULL)
		c->notify(c->notify_arg);
}

/* ----------------------------------------------------------------------------------------------
 * The thread.
 */

static void drain_events(struct cluster *c)
{
	for (int k = 0; k < c->fsm.n_events; k++) {
		const struct cluster_event *e = &c->fsm.events[k];

		history_add(&c->history, e);
		if (e->node >= 0)
			log_info(COMPONENT, 0, "%s: node %d (%s:%d): %s", e->event, e->node,
				 c->nodes[e->node].host, c->nodes[e->node].port, e->detail);
		else
			log_info(COMPONENT, 0, "%s: %s", e->event, e->detail);
	}
	c->fsm.n_events = 0;
}

static void request_probes(struct cluster *c, uint64_t now)
{
	if (c->health == NULL)
		return;
	for (int i = 0; i < c->n; i++) {
		if (c->fsm.probe_now & (UINT64_C(1) << i))
			health_request_probe_now(c->health, i);
	}
	c->fsm.probe_now = 0;
	if (now < c->next_fast_probe)
		return;
	c->next_fast_probe = now + FSM_SEARCH_EVERY;
	for (int i = 0; i < c->n; i++) {
		if (fsm_wants_fast_probe(&c->fsm, i))
			health_request_probe_now(c->health, i);
	}
}

static void take_snapshot(struct cluster *c)
{
	uint64_t seq = c->snap->seq;

	if (c->health == NULL)
		return;
	health_snapshot_copy(c->health, c->snap);
	if (c->snap->seq == seq)
		return;
	for (int i = 0; i < c->n; i++)
		fsm_obs_from_health(&c->snap->nodes[i], (const char(*)[FSM_NAME_MAX])c->app_names,
				    c->n, &c->obs[i]);
}

static void apply_settings(struct cluster *c, struct cluster_settings *ns)
{
	settings_free(&c->cur);
	c->cur = *ns;
	fsm_set_settings(&c->fsm, &c->cur.fsm);
	c->wdp.cmds_allowed = true; /* the watchdog's role mask is applied again next turn */
	log_info(COMPONENT, 0, "failover settings applied");
}

static void run_queued(struct cluster *c, const struct queued_cmd *q, int n)
{
	static const char *const names[] = { "attach", "detach", "promote", "promote" };

	for (int k = 0; k < n; k++) {
		char msg[CLUSTER_REASON_MAX];
		bool ok = fsm_command(&c->fsm, q[k].cmd, q[k].node, q[k].reason, wall_now_ms(),
				      probe_now_ms(), msg, sizeof(msg));

		if (ok) {
			log_info(COMPONENT, 0, "%s node %d (%s): %s", names[q[k].cmd], q[k].node,
				 q[k].reason, msg);
		} else {
			struct cluster_event e = { .at_ms = wall_now_ms(),
						   .node = q[k].node,
						   .exit_status = -1 };

			snprintf(e.event, sizeof(e.event), "%s_refused", names[q[k].cmd]);
			snprintf(e.detail, sizeof(e.detail), "%s", msg);
			history_add(&c->history, &e);
			log_warning(COMPONENT, 0, "%s node %d refused: %s", names[q[k].cmd],
				    q[k].node, msg);
		}
	}
}

static int loop_timeout(struct cluster *c, uint64_t now)
{
	int t = MAX_WAIT_MS, r = cmd_next_ms(&c->run, now);

	if (r >= 0 && r < t)
		t = r;
	r = recovery_next_ms(c, now);
	if (r >= 0 && r < t)
		t = r;
	if (c->fsm.op == FSM_OP_SEARCH) {
		int s = c->next_fast_probe > now ? (int)(c->next_fast_probe - now) : 0;

		if (s < t)
			t = s;
	}
	return t;
}

static void *cluster_main(void *arg)
{
	struct cluster *c = arg;

	for (;;) {
		struct queued_cmd q[QUEUE_MAX];
		struct cluster_settings *ns;
		struct pollfd pfd[3];
		int nq, npfd = 1;
		uint64_t now;

		pthread_mutex_lock(&c->mu);
		if (c->stop) {
			pthread_mutex_unlock(&c->mu);
			break;
		}
		nq = c->n_queued;
		memcpy(q, c->queue, sizeof(q[0]) * (size_t)nq);
		c->n_queued = 0;
		ns = c->pending;
		c->pending = NULL;
		pthread_mutex_unlock(&c->mu);

		if (ns != NULL) {
			apply_settings(c, ns);
			free(ns);
		}
		take_snapshot(c);
		fsm_update(&c->fsm,
			   wdp_before(&c->wdp, &c->fsm, &c->cur.fsm, c->obs, &c->history,
				      wall_now_ms(), probe_now_ms()),
			   wall_now_ms(), probe_now_ms());
		run_queued(c, q, nq);
		wdp_handoff(&c->wdp, &c->fsm, c->obs);
		step_command(c);
		start_wanted(c);
		now = probe_now_ms();
		recovery_step(c, now);
		request_probes(c, now);
		drain_events(c);
		sample_lsn(c);
		wdp_handoff(&c->wdp, &c->fsm, c->obs);
		publish_if_changed(c);

		pfd[0] = (struct pollfd){ .fd = c->wake_rd, .events = POLLIN };
		if (cmd_pollfd(&c->run, &pfd[npfd]))
			npfd++;
		if (recovery_pollfd(c, &pfd[npfd]))
			npfd++;
		if (poll(pfd, (nfds_t)npfd, loop_timeout(c, now)) < 0 && errno != EINTR) {
			log_error(COMPONENT, 0, "poll: %s", strerror(errno));
			(void)poll(NULL, 0, 100);
		}
		if (pfd[0].revents != 0) {
			char buf[64];

			while (read(c->wake_rd, buf, sizeof(buf)) > 0) {
			}
		}
	}
	return NULL;
}

/* ----------------------------------------------------------------------------------------------
 * API.
 */

static void free_cluster(struct cluster *c)
{
	for (int i = 0; i < c->n; i++) {
		free(c->nodes[i].host);
		free(c->nodes[i].data_dir);
	}
	settings_free(&c->cur);
	if (c->pending != NULL) {
		settings_free(c->pending);
		free(c->pending);
	}
	free(c->view);
	free(c->work);
	free(c->snap);
	if (c->wake_rd >= 0)
		close(c->wake_rd);
	if (c->wake_wr >= 0)
		close(c->wake_wr);
	history_destroy(&c->history);
	pthread_cond_destroy(&c->discovered_cv);
	pthread_mutex_destroy(&c->mu);
	free(c);
}

cluster_t *cluster_start(const struct config *cfg, void (*notify)(void *arg), void *arg)
{
	struct cluster *c;
	int fds[2], rc;
	sigset_t all, old;

	if (cfg == NULL || cfg->n_backends < 1 || cfg->n_backends > CLUSTER_MAX_NODES) {
		log_error(COMPONENT, 0, "cluster_start: invalid configuration");
		return NULL;
	}
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return NULL;
	c->wake_rd = c->wake_wr = -1;
	pthread_mutex_init(&c->mu, NULL);
	pthread_cond_init(&c->discovered_cv, NULL);
	history_init(&c->history);
	c->notify = notify;
	c->notify_arg = arg;
	c->n = cfg->n_backends;
	c->samples_of = -1;
	c->rec.run.out_fd = -1;
	atomic_store(&c->report_enabled, cfg->failover_on_backend_error);
	c->view = calloc(1, sizeof(*c->view));
	c->work = calloc(1, sizeof(*c->work));
	c->snap = calloc(1, sizeof(*c->snap));
	if (c->view == NULL || c->work == NULL || c->snap == NULL ||
	    !settings_from_conf(&c->cur, cfg))
		goto fail;
	c->rec_configured = c->cur.recovery_1st_stage_command != NULL;
	for (int i = 0; i < c->n; i++) {
		const struct backend_conf *b = &cfg->backends[i];

		c->nodes[i].host = strdup(b->host != NULL ? b->host : "");
		c->nodes[i].port = b->port;
		c->nodes[i].data_dir = strdup(b->data_directory != NULL ? b->data_directory : "");
		if (c->nodes[i].host == NULL || c->nodes[i].data_dir == NULL)
			goto fail;
		snprintf(c->app_names[i], sizeof(c->app_names[i]), "%s",
			 b->application_name != NULL ? b->application_name : "");
	}
	if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) {
		log_error(COMPONENT, 0, "pipe2: %s", strerror(errno));
		goto fail;
	}
	c->wake_rd = fds[0];
	c->wake_wr = fds[1];
	fsm_init(&c->fsm, &c->cur.fsm, wall_now_ms(), probe_now_ms());
	build_view(c, c->view);
	c->view->seq = c->seq = 1;
	if (!c->cur.fsm.checks_enabled) {
		c->discovery_done = true;
		log_info(COMPONENT, 0,
			 "health checks are disabled: node %d is the primary, no failover",
			 c->fsm.primary);
	} else {
		struct health_config_copy hc;
		struct probe_target t[CLUSTER_MAX_NODES];

		health_cfg(cfg, &hc);
		for (int i = 0; i < c->n; i++) {
			t[i] = (struct probe_target){ .host = c->nodes[i].host,
						      .port = c->nodes[i].port };
			config_backend_libpq_tls(cfg, i, &t[i].tls);
		}
		c->health = health_start(&hc, t, c->n, on_health, c);
		if (c->health == NULL)
			goto fail;
	}
	if (!wdp_start(&c->wdp, cfg, on_health, c)) {
		health_stop(c->health);
		goto fail;
	}
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(&c->thread, NULL, cluster_main, c);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		log_error(COMPONENT, 0, "pthread_create: %s", strerror(rc));
		wdp_stop(&c->wdp);
		health_stop(c->health);
		goto fail;
	}
	return c;
fail:
	free_cluster(c);
	return NULL;
}

void cluster_view_copy(cluster_t *c, struct cluster_view *out)
{
	const size_t head = view_head_size(c->n), stats = view_stats_size(c->n);

	/* The same bytes as a whole copy: c->view is zero outside its used spans. */
	memset((char *)out + head, 0, offsetof(struct cluster_view, stats) - head);
	memset((char *)out->stats + stats, 0, sizeof(out->stats) - stats);
	pthread_mutex_lock(&c->mu);
	memcpy(out, c->view, head);
	memcpy(out->stats, c->view->stats, stats);
	pthread_mutex_unlock(&c->mu);
}

bool cluster_wait_discovery(cluster_t *c, uint32_t timeout_ms)
{
	struct timespec ts;
	bool found;
	int rc = 0;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += timeout_ms / 1000;
	ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&c->mu);
	while (!c->discovery_done && rc != ETIMEDOUT)
		rc = pthread_cond_timedwait(&c->discovered_cv, &c->mu, &ts);
	found = c->view->primary >= 0;
	pthread_mutex_unlock(&c->mu);
	return found;
}

void cluster_report_backend_error(cluster_t *c, int node)
{
	if (c == NULL || node < 0 || node >= c->n || c->health == NULL ||
	    !atomic_load(&c->report_enabled))
		return;
	log_debug(COMPONENT, 0, "backend error reported on node %d: checking it now", node);
	health_request_probe_now(c->health, node);
}

/* Whether this instance may run commands as the watchdog leader. Any thread. */
bool cluster_watchdog_leader(cluster_t *c)
{
	struct wd_state *s = malloc(sizeof(*s));
	bool ok;

	if (s == NULL)
		return false;
	watchdog_state_copy(c->wdp.wd, s);
	ok = s->is_leader && s->fresh && !s->fenced;
	free(s);
	return ok;
}

bool cluster_command(cluster_t *c, enum cluster_command cmd, int node, const char *reason,
		     char *msg, size_t msgcap)
{
	static const char *const names[] = { "attach", "detach", "promote", "promote" };
	const struct cluster_node *vn;
	bool promote = cmd == CLUSTER_PROMOTE || cmd == CLUSTER_PROMOTE_ONLY;
	bool ok = false;

	if ((int)cmd < 0 || cmd > CLUSTER_PROMOTE_ONLY) {
		snprintf(msg, msgcap, "unknown command");
		return false;
	}
	if (node < 0 || node >= c->n) {
		snprintf(msg, msgcap, "no such node %d", node);
		return false;
	}
	pthread_mutex_lock(&c->mu);
	vn = &c->view->nodes[node];
	if (cmd == CLUSTER_ATTACH && (vn->status == NODE_UP || vn->status == NODE_WAITING))
		snprintf(msg, msgcap, "node %d is already attached (%s)", node,
			 cluster_status_name(vn->status));
	else if (cmd == CLUSTER_DETACH && vn->status == NODE_DOWN)
		snprintf(msg, msgcap, "node %d is already down", node);
	else if (c->view->failing_over && (promote || node == c->view->primary))
		snprintf(msg, msgcap, "a failover is in progress");
	else if (promote && node == c->view->primary)
		snprintf(msg, msgcap, "node %d is already the primary", node);
	/* The thread checks again; refusing the obvious here lets the caller see it at once. */
	else if (promote && c->view->primary < 0)
		snprintf(msg, msgcap, "there is no primary to switch over from");
	else if (promote && (vn->status != NODE_UP || vn->role != NODE_ROLE_STANDBY))
		snprintf(msg, msgcap, "node %d is not an up standby", node);
	else if (c->wdp.wd != NULL && (promote || node == c->view->primary) &&
		 !cluster_watchdog_leader(c))
		snprintf(msg, msgcap,
			 "this instance is not the watchdog leader: send it to the leader");
	else if (c->n_queued == QUEUE_MAX)
		snprintf(msg, msgcap, "too many commands queued; try again");
	else
		ok = true;
	if (ok) {
		struct queued_cmd *q = &c->queue[c->n_queued++];

		q->cmd = cmd;
		q->node = node;
		snprintf(q->reason, sizeof(q->reason), "%s",
			 reason != NULL && reason[0] ? reason : "operator request");
		if (cmd == CLUSTER_PROMOTE_ONLY)
			snprintf(msg, msgcap,
				 "promote of node %d accepted (the primary is detached; the other "
				 "nodes do not follow)",
				 node);
		else if (cmd == CLUSTER_PROMOTE)
			snprintf(msg, msgcap,
				 "promote of node %d accepted (switchover: the other nodes follow "
				 "it)",
				 node);
		else
			snprintf(msg, msgcap, "%s of node %d accepted", names[cmd], node);
	}
	pthread_mutex_unlock(&c->mu);
	if (ok)
		wake(c);
	else
		log_warning(COMPONENT, 0, "%s node %d refused: %s", names[cmd], node, msg);
	return ok;
}

bool cluster_watchdog_state(cluster_t *c, struct wd_state *out)
{
	if (c == NULL || c->wdp.wd == NULL)
		return false;
	watchdog_state_copy(c->wdp.wd, out);
	return true;
}

bool cluster_watchdog_peer_json(cluster_t *c, char *out, size_t cap)
{
	if (c == NULL || c->wdp.wd == NULL)
		return false;
	watchdog_peer_json(c->wdp.wd, out, cap);
	return true;
}

int cluster_history_copy(cluster_t *c, struct cluster_event *out, int cap)
{
	return history_copy(&c->history, out, cap);
}

bool cluster_update_config(cluster_t *c, const struct config *cfg)
{
	struct cluster_settings *ns, *old;

	if (cfg == NULL || cfg->n_backends != c->n)
		return false;
	ns = malloc(sizeof(*ns));
	if (ns == NULL || !settings_from_conf(ns, cfg)) {
		free(ns);
		return false;
	}
	if (c->health != NULL) {
		struct health_config_copy hc;

		health_cfg(cfg, &hc);
		if (hc.period_ms == 0 || !health_update_config(c->health, &hc)) {
			settings_free(ns);
			free(ns);
			return false;
		}
	}
	atomic_store(&c->report_enabled, cfg->failover_on_backend_error);
	pthread_mutex_lock(&c->mu);
	old = c->pending;
	c->pending = ns;
	c->rec_configured = ns->recovery_1st_stage_command != NULL;
	pthread_mutex_unlock(&c->mu);
	if (old != NULL) {
		settings_free(old);
		free(old);
	}
	wake(c);
	return true;
}

void cluster_stop(cluster_t *c)
{
	if (c == NULL)
		return;
	pthread_mutex_lock(&c->mu);
	c->stop = true;
	pthread_mutex_unlock(&c->mu);
	wake(c);
	pthread_join(c->thread, NULL);
	if (c->run.running) {
		log_info("failover", 0, "stopping: killing the running %s (pid %d)", c->run.label,
			 (int)c->run.pid);
		cmd_abort(&c->run);
	}
	wdp_stop(&c->wdp);
	recovery_abort(c);
	health_stop(c->health);
	free_cluster(c);
}
