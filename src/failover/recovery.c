/*
 * Online recovery (see recovery.h for the stages, doc/failover.md "Recovery" for the behaviour).
 *
 * Ownership: c->rec belongs to the manager's thread; c->rec_req and c->rec_pub are guarded by
 * c->mu (cluster_int.h). Invariants: c->rec_pub.active is true from the acceptance of a request
 * to the end of its recovery, so at most one recovery is queued or running; c->rec.run is
 * running only in REC_FIRST_STAGE and REC_REMOTE_START. Nothing here waits: commands are
 * stepped, conditions are re-read from the health observations at each turn of the loop.
 */
#include "failover/recovery.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "failover/cluster_int.h"
#include "health/probe.h"
#include "util/log.h"

#define COMPONENT "recovery"
#define BIT(i)	  (UINT64_C(1) << (i))

static int64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *recovery_stage_name(enum recovery_stage s)
{
	switch (s) {
	case REC_FIRST_STAGE:
		return "1st_stage";
	case REC_REMOTE_START:
		return "remote_start";
	case REC_WAIT:
		return "wait_standby";
	case REC_ATTACH:
		return "attach";
	case REC_IDLE:
		break;
	}
	return "idle";
}

/* ----------------------------------------------------------------------------------------------
 * Publication and the history.
 */

/* Publishes the running recovery's stage and detail (SHOW pool_recovery). */
static void publish(struct cluster *c, const char *stage, const char *detail)
{
	pthread_mutex_lock(&c->mu);
	snprintf(c->rec_pub.row.stage, sizeof(c->rec_pub.row.stage), "%s", stage);
	snprintf(c->rec_pub.row.detail, sizeof(c->rec_pub.row.detail), "%s", detail);
	pthread_mutex_unlock(&c->mu);
}

static void add_event(struct cluster *c, int64_t at, const char *event, const char *command,
		      int exit_status, uint32_t duration_ms, const char *fmt, ...)
	__attribute__((format(printf, 7, 8)));

static void add_event(struct cluster *c, int64_t at, const char *event, const char *command,
		      int exit_status, uint32_t duration_ms, const char *fmt, ...)
{
	struct cluster_event e;
	va_list ap;

	memset(&e, 0, sizeof(e));
	e.at_ms = at;
	snprintf(e.event, sizeof(e.event), "%s", event);
	e.node = c->rec.node;
	snprintf(e.command, sizeof(e.command), "%s", command != NULL ? command : "");
	e.exit_status = exit_status;
	e.duration_ms = duration_ms;
	va_start(ap, fmt);
	vsnprintf(e.detail, sizeof(e.detail), fmt, ap);
	va_end(ap);
	history_add(&c->history, &e);
}

/* Ends the recovery: history, log, the final row; the next request may come. */
static void finish(struct cluster *c, bool ok, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void finish(struct cluster *c, bool ok, const char *fmt, ...)
{
	struct recovery *r = &c->rec;
	uint64_t took = probe_now_ms() - r->started_mono;
	char why[CLUSTER_REASON_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	if (r->run.running) {
		log_warning(COMPONENT, 0, "node %d: killing the running command (pid %d)", r->node,
			    (int)r->run.pid);
		cmd_abort(&r->run);
	}
	add_event(c, wall_ms(), ok ? "recovery_done" : "recovery_failed", NULL, -1, (uint32_t)took,
		  "%s", why);
	if (ok)
		log_info(COMPONENT, 0, "node %d recovered in %" PRIu64 " ms: %s", r->node, took,
			 why);
	else
		log_warning(COMPONENT, 0, "recovery of node %d failed after %" PRIu64 " ms: %s",
			    r->node, took, why);
	pthread_mutex_lock(&c->mu);
	snprintf(c->rec_pub.row.stage, sizeof(c->rec_pub.row.stage), "%s", ok ? "done" : "failed");
	snprintf(c->rec_pub.row.detail, sizeof(c->rec_pub.row.detail), "%s", why);
	c->rec_pub.row.elapsed_ms = took;
	c->rec_pub.active = false;
	pthread_mutex_unlock(&c->mu);
	r->stage = REC_IDLE;
}

/* ----------------------------------------------------------------------------------------------
 * Commands.
 */

static void fill_vars(const struct cluster *c, struct cmd_vars *v)
{
	const struct recovery *r = &c->rec;
	const struct node_conf *d = &c->nodes[r->node];
	const struct node_conf *p = &c->nodes[r->primary];

	*v = (struct cmd_vars){
		.failed_id = r->node,
		.failed_host = d->host,
		.failed_port = d->port,
		.failed_dir = d->data_dir,
		.new_main_id = r->primary,
		.new_main_host = p->host,
		.new_main_port = p->port,
		.new_main_dir = p->data_dir,
		.old_main_id = fsm_main_node(&c->fsm),
		.old_primary_id = r->primary,
		.old_primary_host = p->host,
		.old_primary_port = p->port,
	};
}

/*
 * Starts the command of stage st (its template tmpl, never NULL) with what is left of the
 * recovery's time as its timeout. False (the recovery finished as failed) if it could not
 * start.
 */
static bool start_stage(struct cluster *c, enum recovery_stage st, const char *tmpl,
			const char *label, uint64_t now)
{
	struct recovery *r = &c->rec;
	struct cmd_vars v;
	char envbuf[CMD_ENV_VARS][CLUSTER_COMMAND_MAX];
	char app[FSM_NAME_MAX + 40], tmo[64];
	char *env[CMD_ENV_VARS + 2];
	uint64_t left = r->deadline > now ? r->deadline - now : 1;
	bool ok;

	r->stage = st;
	memset(&r->run, 0, sizeof(r->run));
	r->run.out_fd = -1;
	r->cmd_started_wall = wall_ms();
	fill_vars(c, &v);
	if (!cmd_expand(tmpl, &v, r->cmdline, sizeof(r->cmdline))) {
		finish(c, false, "%s: command line too long", label);
		return false;
	}
	cmd_build_env(&v, envbuf, env);
	snprintf(app, sizeof(app), "PGRELAY_FAILED_APPLICATION_NAME=%s", c->app_names[r->node]);
	env[CMD_ENV_VARS] = app;
	snprintf(tmo, sizeof(tmo), "PGRELAY_RECOVERY_TIMEOUT_MS=%" PRIu64, left);
	env[CMD_ENV_VARS + 1] = tmo;
	log_info(COMPONENT, 0, "node %d: %s: %s", r->node, recovery_stage_name(st), r->cmdline);
	ok = cmd_start(&r->run, label, r->cmdline, env, CMD_ENV_VARS + 2,
		       left > UINT32_MAX ? UINT32_MAX : (uint32_t)left, now);
	explicit_bzero(envbuf, sizeof(envbuf));
	if (!ok) {
		add_event(c, r->cmd_started_wall,
			  st == REC_FIRST_STAGE ? "recovery_1st_stage" : "recovery_remote_start",
			  r->cmdline, -1, 0, "could not start /bin/sh");
		finish(c, false, "%s could not be started", label);
		return false;
	}
	publish(c, recovery_stage_name(st), "started");
	return true;
}

static void begin_wait(struct cluster *c, uint64_t now)
{
	struct recovery *r = &c->rec;

	r->stage = REC_WAIT;
	r->wait_since = now;
	r->next_probe = now;
	snprintf(r->detail, sizeof(r->detail), "waiting for node %d to answer", r->node);
	log_info(COMPONENT, 0,
		 "node %d: waiting until it streams from primary node %d (delay_threshold %u "
		 "bytes)",
		 r->node, r->primary, c->cur.delay_threshold);
	publish(c, recovery_stage_name(REC_WAIT), r->detail);
}

/* After the first stage: the second, or the wait when no start command is configured. */
static void after_first_stage(struct cluster *c, uint64_t now)
{
	if (c->cur.recovery_remote_start_command != NULL)
		(void)start_stage(c, REC_REMOTE_START, c->cur.recovery_remote_start_command,
				  "recovery_remote_start_command", now);
	else
		begin_wait(c, now);
}

/* Steps the running command; at its end records it and moves on (or fails). */
static void step_command(struct cluster *c, uint64_t now)
{
	struct recovery *r = &c->rec;
	enum recovery_stage st = r->stage;
	const char *event = st == REC_FIRST_STAGE ? "recovery_1st_stage" : "recovery_remote_start";
	char last[CLUSTER_REASON_MAX];

	if (!cmd_step(&r->run, now)) {
		cmd_last_line(&r->run, last, sizeof(last));
		publish(c, recovery_stage_name(st), last[0] ? last : "running, no output yet");
		return;
	}
	cmd_last_line(&r->run, last, sizeof(last));
	if (r->run.timed_out) {
		add_event(c, r->cmd_started_wall, event, r->cmdline, r->run.exit_status,
			  r->run.duration_ms, "timed out (recovery_timeout); %s", last);
		finish(c, false, "%s timed out: recovery_timeout (%u ms) reached%s%s",
		       recovery_stage_name(st), c->cur.recovery_timeout_ms, last[0] ? "; " : "",
		       last);
		return;
	}
	add_event(c, r->cmd_started_wall, event, r->cmdline, r->run.exit_status, r->run.duration_ms,
		  "%s", last);
	if (r->run.exit_status != 0) {
		finish(c, false, "%s failed (exit status %d)%s%s", recovery_stage_name(st),
		       r->run.exit_status, last[0] ? ": " : "", last);
		return;
	}
	log_info(COMPONENT, 0, "node %d: %s succeeded in %u ms%s%s", r->node,
		 recovery_stage_name(st), r->run.duration_ms, last[0] ? ": " : "", last);
	if (st == REC_FIRST_STAGE)
		after_first_stage(c, now);
	else
		begin_wait(c, now);
}

/* ----------------------------------------------------------------------------------------------
 * Waiting for the standby, attaching it.
 */

/* True once node streams from the primary within the lag bound; r->detail says where it is. */
static bool standby_ready(struct cluster *c, uint64_t *lag_out)
{
	struct recovery *r = &c->rec;
	const struct fsm_obs *o = &c->obs[r->node], *po = &c->obs[r->primary];
	bool named = c->app_names[r->node][0] != '\0';
	bool fresh = o->checked && o->at_ms >= r->wait_since;
	/* The primary's replication rows come from its full checks only (not the light WAL
	 * polls that also refresh po->at_ms): a row older than the wait may predate the stage. */
	const struct health_node_state *ps = c->snap != NULL ? &c->snap->nodes[r->primary] : NULL;
	bool pfresh = ps != NULL && ps->has_observation && ps->obs.reachable &&
		      ps->obs.observed_at >= r->wait_since;
	bool streaming;
	uint64_t lag = 0;

	if (!fresh || !o->ok) {
		snprintf(r->detail, sizeof(r->detail), "waiting for node %d to answer", r->node);
		return false;
	}
	if (!o->in_recovery) {
		snprintf(r->detail, sizeof(r->detail), "node %d answers but is not in recovery",
			 r->node);
		return false;
	}
	/* pg_stat_replication on the primary names it (backends[].application_name); without
	 * a name, a WAL receive position is the best sign of a WAL receiver. */
	streaming = named ? pfresh && po->ok && (po->replicas & BIT(r->node)) != 0
			  : o->receive_lsn != 0;
	if (!streaming) {
		snprintf(r->detail, sizeof(r->detail),
			 named ? "node %d in recovery, not streaming from node %d as '%s'"
			       : "node %d in recovery, no WAL received from node %d yet%s",
			 r->node, r->primary, named ? c->app_names[r->node] : "");
		return false;
	}
	if (po->current_lsn > o->replay_lsn)
		lag = po->current_lsn - o->replay_lsn;
	*lag_out = lag;
	if (c->cur.delay_threshold > 0 && (o->replay_lsn == 0 || lag > c->cur.delay_threshold)) {
		snprintf(r->detail, sizeof(r->detail),
			 "node %d streams from node %d; replay lag %" PRIu64
			 " > delay_threshold %u",
			 r->node, r->primary, lag, c->cur.delay_threshold);
		return false;
	}
	snprintf(r->detail, sizeof(r->detail),
		 "node %d streams from node %d, replay lag %" PRIu64 " bytes", r->node, r->primary,
		 lag);
	return true;
}

static void probe_again(struct cluster *c, uint64_t now)
{
	struct recovery *r = &c->rec;

	if (now < r->next_probe || c->health == NULL)
		return;
	r->next_probe = now + RECOVERY_PROBE_EVERY;
	health_request_probe_now(c->health, r->node);
	health_request_probe_now(c->health, r->primary);
}

static void step_wait(struct cluster *c, uint64_t now)
{
	struct recovery *r = &c->rec;
	uint64_t lag = 0;
	char msg[CLUSTER_REASON_MAX];
	const struct fsm_node *nd = &c->fsm.nodes[r->node];

	if (!standby_ready(c, &lag)) {
		publish(c, recovery_stage_name(REC_WAIT), r->detail);
		probe_again(c, now);
		return;
	}
	add_event(c, wall_ms(), "recovery_standby", NULL, -1, (uint32_t)(now - r->started_mono),
		  "%s", r->detail);
	log_info(COMPONENT, 0, "node %d: %s; attaching it", r->node, r->detail);
	r->stage = REC_ATTACH;
	r->wait_since = now;
	r->next_probe = now;
	/* auto_failback may have attached it already. */
	if (nd->status != NODE_UP && nd->status != NODE_WAITING &&
	    !fsm_command(&c->fsm, CLUSTER_ATTACH, r->node, "online recovery", wall_ms(), now, msg,
			 sizeof(msg))) {
		finish(c, false, "attach refused: %s", msg);
		return;
	}
	snprintf(r->detail, sizeof(r->detail), "attached; waiting for node %d to pass a check",
		 r->node);
	publish(c, recovery_stage_name(REC_ATTACH), r->detail);
}

static void step_attach(struct cluster *c, uint64_t now)
{
	struct recovery *r = &c->rec;
	const struct fsm_node *nd = &c->fsm.nodes[r->node];

	if (nd->status == NODE_UP && nd->role == NODE_ROLE_STANDBY) {
		finish(c, true, "node %d is up as a standby of primary node %d", r->node,
		       r->primary);
		return;
	}
	if (nd->status == NODE_DOWN) {
		finish(c, false, "node %d failed its check after the attach: %s", r->node,
		       nd->reason);
		return;
	}
	probe_again(c, now);
}

/* ----------------------------------------------------------------------------------------------
 * The thread's entry points.
 */

/* Takes a queued request: checks it again against the manager's own state, then starts. */
static void take_request(struct cluster *c, const struct recovery_request *q, uint64_t now)
{
	struct recovery *r = &c->rec;
	const struct fsm *f = &c->fsm;

	memset(r, 0, sizeof(*r));
	r->run.out_fd = -1;
	r->node = q->node;
	r->primary = f->primary;
	r->started_mono = now;
	r->deadline = now + c->cur.recovery_timeout_ms;
	r->started_wall = wall_ms();
	r->stage = REC_FIRST_STAGE; /* for finish() */
	if (f->primary < 0 || f->failing_over || f->op != FSM_OP_IDLE) {
		finish(c, false, "a failover is in progress");
		return;
	}
	if (q->node == f->primary) {
		finish(c, false, "node %d is the primary", q->node);
		return;
	}
	if (f->nodes[q->node].status != NODE_DOWN && f->nodes[q->node].status != NODE_UNUSED) {
		finish(c, false, "node %d is %s, not down", q->node,
		       cluster_status_name(f->nodes[q->node].status));
		return;
	}
	if (c->cur.recovery_1st_stage_command == NULL) {
		finish(c, false, "recovery_1st_stage_command is not set");
		return;
	}
	add_event(c, r->started_wall, "recovery_start", NULL, -1, 0,
		  "recovery of node %d from primary node %d started (%s); recovery_timeout %u ms",
		  r->node, r->primary, q->reason, c->cur.recovery_timeout_ms);
	log_info(COMPONENT, 0,
		 "recovery of node %d (%s:%d) from primary node %d (%s:%d) started (%s); "
		 "recovery_timeout %u ms",
		 r->node, c->nodes[r->node].host, c->nodes[r->node].port, r->primary,
		 c->nodes[r->primary].host, c->nodes[r->primary].port, q->reason,
		 c->cur.recovery_timeout_ms);
	(void)start_stage(c, REC_FIRST_STAGE, c->cur.recovery_1st_stage_command,
			  "recovery_1st_stage_command", now);
}

void recovery_step(struct cluster *c, uint64_t now)
{
	struct recovery *r = &c->rec;
	const struct fsm *f = &c->fsm;

	if (r->stage == REC_IDLE) {
		struct recovery_request q;

		pthread_mutex_lock(&c->mu);
		q = c->rec_req;
		c->rec_req.pending = false;
		pthread_mutex_unlock(&c->mu);
		if (!q.pending)
			return;
		take_request(c, &q, now);
		if (r->stage == REC_IDLE)
			return;
	}
	/* The primary it follows is gone (failover, demotion): what it cloned is stale. */
	if (f->primary != r->primary || f->failing_over) {
		finish(c, false, "the primary changed during the recovery (node %d, now %d)",
		       r->primary, f->primary);
		return;
	}
	switch (r->stage) {
	case REC_FIRST_STAGE:
	case REC_REMOTE_START:
		/* The command's own timeout is what is left of recovery_timeout. */
		step_command(c, now);
		return;
	case REC_WAIT:
	case REC_ATTACH:
		if (now >= r->deadline) {
			bool attached = r->stage == REC_ATTACH;
			char msg[CLUSTER_REASON_MAX];

			if (attached && f->nodes[r->node].status != NODE_DOWN)
				(void)fsm_command(&c->fsm, CLUSTER_DETACH, r->node,
						  "online recovery timed out", wall_ms(), now, msg,
						  sizeof(msg));
			finish(c, false, "recovery_timeout (%u ms) reached in %s: %s",
			       c->cur.recovery_timeout_ms, recovery_stage_name(r->stage),
			       r->detail);
			return;
		}
		if (r->stage == REC_WAIT)
			step_wait(c, now);
		else
			step_attach(c, now);
		return;
	case REC_IDLE:
		break;
	}
}

bool recovery_pollfd(const struct cluster *c, struct pollfd *pfd)
{
	return cmd_pollfd(&c->rec.run, pfd);
}

int recovery_next_ms(const struct cluster *c, uint64_t now)
{
	const struct recovery *r = &c->rec;
	int t;

	switch (r->stage) {
	case REC_FIRST_STAGE:
	case REC_REMOTE_START:
		return cmd_next_ms(&r->run, now);
	case REC_WAIT:
	case REC_ATTACH:
		t = r->next_probe > now ? (int)(r->next_probe - now) : 0;
		if (r->deadline > now && r->deadline - now < (uint64_t)t)
			t = (int)(r->deadline - now);
		return r->deadline <= now ? 0 : t;
	case REC_IDLE:
		break;
	}
	return -1;
}

void recovery_abort(struct cluster *c)
{
	if (c->rec.run.running) {
		log_info(COMPONENT, 0, "stopping: killing the running %s (pid %d)",
			 c->rec.run.label, (int)c->rec.run.pid);
		cmd_abort(&c->rec.run);
	}
}

/* ----------------------------------------------------------------------------------------------
 * API (any thread).
 */

enum cluster_recover_result cluster_recover(cluster_t *c, int node, const char *reason, char *msg,
					    size_t msgcap)
{
	enum cluster_recover_result res = CLUSTER_RECOVER_REFUSED;
	const struct cluster_view *v;

	if (node < 0 || node >= c->n) {
		snprintf(msg, msgcap, "no such node %d", node);
		return CLUSTER_RECOVER_NO_NODE;
	}
	/* With a watchdog, only the leader runs recovery commands (as it alone runs failovers). */
	if (c->wdp.wd != NULL && !cluster_watchdog_leader(c)) {
		snprintf(msg, msgcap,
			 "this instance is not the watchdog leader: send it to the leader");
		return CLUSTER_RECOVER_REFUSED;
	}
	pthread_mutex_lock(&c->mu);
	v = c->view;
	if (c->rec_pub.active || v->failing_over || c->fsm_busy) {
		res = CLUSTER_RECOVER_BUSY;
		if (c->rec_pub.active)
			snprintf(msg, msgcap, "the recovery of node %d is in progress (%s)",
				 c->rec_pub.row.node, c->rec_pub.row.stage);
		else
			snprintf(msg, msgcap, "a failover (or a failover command) is in progress");
	} else if (!v->checks_enabled)
		snprintf(msg, msgcap, "health checks are disabled: online recovery needs them");
	else if (!c->rec_configured)
		snprintf(msg, msgcap, "recovery_1st_stage_command is not set");
	else if (v->primary < 0)
		snprintf(msg, msgcap, "there is no primary to recover node %d from", node);
	else if (node == v->primary)
		snprintf(msg, msgcap, "node %d is the primary", node);
	else if (v->nodes[node].status != NODE_DOWN && v->nodes[node].status != NODE_UNUSED)
		snprintf(msg, msgcap, "node %d is %s: only a down node can be recovered", node,
			 cluster_status_name(v->nodes[node].status));
	else
		res = CLUSTER_RECOVER_STARTED;
	if (res == CLUSTER_RECOVER_STARTED) {
		c->rec_req.pending = true;
		c->rec_req.node = node;
		snprintf(c->rec_req.reason, sizeof(c->rec_req.reason), "%s",
			 reason != NULL && reason[0] ? reason : "operator request");
		c->rec_pub.valid = true;
		c->rec_pub.active = true;
		c->rec_pub.started_mono = probe_now_ms();
		c->rec_pub.row = (struct cluster_recovery){ .node = node, .started_ms = wall_ms() };
		snprintf(c->rec_pub.row.stage, sizeof(c->rec_pub.row.stage), "queued");
		snprintf(c->rec_pub.row.detail, sizeof(c->rec_pub.row.detail),
			 "from primary node %d", v->primary);
		snprintf(msg, msgcap,
			 "recovery of node %d from primary node %d started; follow it with SHOW "
			 "pool_recovery",
			 node, v->primary);
	}
	pthread_mutex_unlock(&c->mu);
	if (res == CLUSTER_RECOVER_STARTED) {
		char b = 1;

		log_info(COMPONENT, 0, "recover node %d accepted (%s)", node,
			 reason != NULL ? reason : "");
		while (write(c->wake_wr, &b, 1) < 0 && errno == EINTR) {
		}
	} else {
		log_warning(COMPONENT, 0, "recover node %d refused: %s", node, msg);
	}
	return res;
}

bool cluster_recovery_copy(cluster_t *c, struct cluster_recovery *out)
{
	bool valid;

	pthread_mutex_lock(&c->mu);
	valid = c->rec_pub.valid;
	*out = c->rec_pub.row;
	if (c->rec_pub.active)
		out->elapsed_ms = probe_now_ms() - c->rec_pub.started_mono;
	pthread_mutex_unlock(&c->mu);
	return valid;
}
