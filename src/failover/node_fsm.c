/*
 * The cluster manager's decisions (see node_fsm.h). Pure: no clock, no I/O, no locks; every
 * input arrives as an argument and every outcome is a field of struct fsm.
 *
 * Invariants: primary is -1 or a node whose role is NODE_ROLE_PRIMARY and whose status is up or
 * quarantine; at most one command is running (cmd_running); failing_over is true exactly from
 * the loss of the primary to the publication of a new one (or the end of the search).
 */
#include "failover/node_fsm.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "conf/config.h"
#include "health/probe.h"

#define BIT(i) (UINT64_C(1) << (i))

/* ----------------------------------------------------------------------------------------------
 * Helpers.
 */

static void add_event(struct fsm *f, int64_t wall_ms, const char *event, int node, const char *fmt,
		      ...) __attribute__((format(printf, 5, 6)));

static void add_event(struct fsm *f, int64_t wall_ms, const char *event, int node, const char *fmt,
		      ...)
{
	struct cluster_event *e;
	va_list ap;

	if (f->n_events == FSM_EVENTS_MAX) {
		memmove(&f->events[0], &f->events[1], sizeof(f->events[0]) * (FSM_EVENTS_MAX - 1));
		f->n_events--;
	}
	e = &f->events[f->n_events++];
	memset(e, 0, sizeof(*e));
	e->at_ms = wall_ms;
	snprintf(e->event, sizeof(e->event), "%s", event);
	e->node = node;
	e->exit_status = -1;
	va_start(ap, fmt);
	vsnprintf(e->detail, sizeof(e->detail), fmt, ap);
	va_end(ap);
}

static void set_status(struct fsm *f, int i, enum node_status st, int64_t wall_ms, const char *fmt,
		       ...) __attribute__((format(printf, 5, 6)));

/* Moves node i to st (the time of change only moves when the status does) with a reason. */
static void set_status(struct fsm *f, int i, enum node_status st, int64_t wall_ms, const char *fmt,
		       ...)
{
	struct fsm_node *nd = &f->nodes[i];
	va_list ap;

	if (nd->status != st)
		nd->last_status_change = wall_ms;
	nd->status = st;
	va_start(ap, fmt);
	vsnprintf(nd->reason, sizeof(nd->reason), fmt, ap);
	va_end(ap);
	f->changed = true;
}

static void set_role(struct fsm *f, int i, enum node_role r)
{
	if (f->nodes[i].role != r) {
		f->nodes[i].role = r;
		f->changed = true;
	}
}

static bool attached(enum node_status s)
{
	return s == NODE_UP || s == NODE_WAITING || s == NODE_QUARANTINE;
}

/* An answer that came after the node entered its current waiting period. */
static bool fresh(const struct fsm *f, int i)
{
	const struct fsm_obs *o = &f->last_obs[i];

	return o->checked && o->at_ms >= f->nodes[i].waiting_since;
}

static int always_primary_node(const struct fsm *f)
{
	for (int i = 0; i < f->set.n; i++) {
		if (f->set.flags[i] & BACKEND_FLAG_ALWAYS_PRIMARY)
			return i;
	}
	return -1;
}

int fsm_main_node(const struct fsm *f)
{
	for (int i = 0; i < f->set.n; i++) {
		if (attached(f->nodes[i].status))
			return i;
	}
	return -1;
}

int fsm_pick_new_main(const struct fsm *f, int exclude)
{
	int best = -1;

	for (int i = 0; i < f->set.n; i++) {
		const struct fsm_obs *o = &f->last_obs[i];
		const struct fsm_obs *b;

		if (i == exclude || !attached(f->nodes[i].status) || !o->ok || !o->in_recovery)
			continue;
		if (best < 0) {
			best = i;
			continue;
		}
		b = &f->last_obs[best];
		if (o->receive_lsn > b->receive_lsn ||
		    (o->receive_lsn == b->receive_lsn && o->replay_lsn > b->replay_lsn))
			best = i;
	}
	return best;
}

void fsm_obs_from_health(const struct health_node_state *s, const char (*app_names)[FSM_NAME_MAX],
			 int n, struct fsm_obs *out)
{
	const struct node_observation *o = &s->obs;
	bool any_name = false;

	memset(out, 0, sizeof(*out));
	/* No observation, or a node that refused the check's login: nothing is known about it. */
	if (!s->has_observation || s->obs.rejected)
		return;
	out->checked = true;
	out->ok = o->reachable;
	out->successes = s->consecutive_successes;
	out->at_ms = o->observed_at;
	/* postmaster gone, seen by a check somebody asked for: no retries needed to believe it */
	out->failed = s->failed || (!o->reachable && o->status == PROBE_CONNECT_FAILED &&
				    o->refused && !o->connection_reused && s->session_requested);
	if (!o->reachable)
		return;
	out->in_recovery = o->in_recovery;
	out->current_lsn = o->current_lsn;
	out->replay_lsn = o->replay_lsn;
	out->receive_lsn = o->receive_lsn;
	if (s->has_lsn && s->lsn_observed_at > o->observed_at) {
		out->in_recovery = s->lsn_in_recovery;
		out->current_lsn = s->lsn_current;
		out->replay_lsn = s->lsn_replay;
		out->receive_lsn = s->lsn_receive;
		out->at_ms = s->lsn_observed_at;
	}
	for (int j = 0; j < n; j++)
		any_name |= app_names[j][0] != '\0';
	for (int r = 0; r < o->n_replicas; r++) {
		const struct replica_row *row = &o->replicas[r];

		if (strcmp(row->state, "streaming") != 0)
			continue;
		if (!any_name) {
			out->n_streaming++;
			continue;
		}
		for (int j = 0; j < n; j++) {
			if (app_names[j][0] != '\0' &&
			    strcmp(row->application_name, app_names[j]) == 0) {
				out->replicas |= BIT(j);
				out->n_streaming++;
				break;
			}
		}
	}
}

/* ----------------------------------------------------------------------------------------------
 * The op and the command slot.
 */

static void want(struct fsm *f, enum fsm_cmd_kind kind, int node)
{
	f->cmd = f->op_cmd;
	f->cmd.kind = kind;
	f->cmd.node = node;
	if (kind == FSM_CMD_FOLLOW)
		f->cmd.new_main = f->primary;
	if (kind == FSM_CMD_FAILBACK) {
		f->cmd.new_main = f->primary;
		f->cmd.old_main = fsm_main_node(f);
		f->cmd.old_primary = f->primary;
	}
	f->want_cmd = true;
	f->cmd_running = true;
}

static void begin_failover(struct fsm *f, int failed, int target, int64_t wall_ms, uint64_t mono_ms,
			   const char *reason);

/* Starts whatever comes next when the command slot is free. */
static void advance(struct fsm *f, int64_t wall_ms, uint64_t mono_ms)
{
	if (f->cmd_running)
		return;
	switch (f->op) {
	case FSM_OP_FAILOVER_CMD:
		if (!f->op_cmd_started) {
			f->op_cmd_started = true;
			want(f, FSM_CMD_FAILOVER, f->op_cmd.node);
		}
		return;
	case FSM_OP_SEARCH:
		return;
	case FSM_OP_FOLLOW:
		if (f->pending_failover)
			f->follow_todo = 0;
		for (int i = 0; i < f->set.n; i++) {
			if (f->follow_todo & BIT(i)) {
				f->follow_todo &= ~BIT(i);
				want(f, FSM_CMD_FOLLOW, i);
				return;
			}
		}
		f->op = FSM_OP_IDLE;
		f->switchover_target = -1;
		memset(&f->op_cmd, 0, sizeof(f->op_cmd));
		break;
	case FSM_OP_IDLE:
		break;
	}
	if (f->pending_failover) {
		f->pending_failover = false;
		if (f->primary >= 0 && attached(f->nodes[f->primary].status)) {
			char reason[CLUSTER_REASON_MAX];

			snprintf(reason, sizeof(reason), "%s", f->pending_reason);
			begin_failover(f, f->primary, -1, wall_ms, mono_ms, reason);
			return;
		}
	}
	for (int i = 0; i < f->set.n; i++) {
		if (f->failback_todo & BIT(i)) {
			f->failback_todo &= ~BIT(i);
			f->op_cmd = (struct fsm_cmd){ FSM_CMD_NONE, -1, -1, -1, -1 };
			want(f, FSM_CMD_FAILBACK, i);
			return;
		}
	}
}

/*
 * The primary `failed` is lost: detach it, pick the node to promote (target, or the most advanced
 * live standby) and start the failover op.
 */
static void begin_failover(struct fsm *f, int failed, int target, int64_t wall_ms, uint64_t mono_ms,
			   const char *reason)
{
	int old_main = fsm_main_node(f);
	int new_main = target >= 0 ? target : fsm_pick_new_main(f, failed);

	f->op_cmd = (struct fsm_cmd){ FSM_CMD_FAILOVER, failed, new_main, old_main, f->primary };
	set_status(f, failed, NODE_DOWN, wall_ms, "%s", reason);
	set_role(f, failed, NODE_ROLE_UNKNOWN);
	f->nodes[failed].former_primary = true;
	f->nodes[failed].warned_false = false;
	f->primary = -1;
	f->failing_over = true;
	f->switchover_target = target;
	f->promote_only = false;
	f->op_cmd_started = false;
	f->follow_todo = 0;
	add_event(f, wall_ms, "detach", failed, "primary detached: %s; new main node %d", reason,
		  new_main);
	for (int i = 0; i < f->set.n; i++) {
		if (i != failed && attached(f->nodes[i].status))
			f->probe_now |= BIT(i);
	}
	if (f->set.has_failover_cmd) {
		f->op = FSM_OP_FAILOVER_CMD;
		advance(f, wall_ms, mono_ms);
	} else {
		f->op = FSM_OP_SEARCH;
		f->search_started = mono_ms;
	}
}

/* A primary was published: the search is over; follow_primary_command for the others. */
static void search_done(struct fsm *f, int64_t wall_ms, uint64_t mono_ms)
{
	bool after_failover = f->op_cmd.kind == FSM_CMD_FAILOVER;

	f->failing_over = false;
	if (f->op != FSM_OP_SEARCH)
		return;
	f->follow_todo = 0;
	if (after_failover)
		f->failovers_ok++;
	if (after_failover && f->set.has_follow_cmd && !f->promote_only) {
		for (int i = 0; i < f->set.n; i++) {
			if (i != f->primary && i != f->op_cmd.node && attached(f->nodes[i].status))
				f->follow_todo |= BIT(i);
		}
		/* A switchover's old primary is still running: it must follow too. */
		if (f->switchover_target >= 0 && f->op_cmd.node != f->primary)
			f->follow_todo |= BIT(f->op_cmd.node);
	}
	f->op = after_failover ? FSM_OP_FOLLOW : FSM_OP_IDLE;
	advance(f, wall_ms, mono_ms);
}

/* ----------------------------------------------------------------------------------------------
 * Roles: discovery, split brain.
 */

static void make_primary(struct fsm *f, int p, int64_t wall_ms, uint64_t mono_ms, const char *why)
{
	f->primary = p;
	set_role(f, p, NODE_ROLE_PRIMARY);
	if (f->nodes[p].status == NODE_WAITING || f->nodes[p].status == NODE_DOWN)
		set_status(f, p, NODE_UP, wall_ms, "primary: %s", why);
	else
		snprintf(f->nodes[p].reason, sizeof(f->nodes[p].reason), "primary: %s", why);
	f->discovered = true;
	f->changed = true;
	add_event(f, wall_ms, "primary_found", p, "node %d is the primary: %s", p, why);
	search_done(f, wall_ms, mono_ms);
}

/* Node i is not in recovery but p is the primary: i is a false primary (or p is). */
static void false_primary(struct fsm *f, int i, int64_t wall_ms, uint64_t mono_ms)
{
	int p = f->primary;
	const struct fsm_obs *oi = &f->last_obs[i], *op = &f->last_obs[p];

	if (!(f->set.flags[p] & BACKEND_FLAG_ALWAYS_PRIMARY) && op->ok &&
	    oi->n_streaming > op->n_streaming) {
		/* The standbys stream from i: p is the false one. */
		char why[CLUSTER_REASON_MAX];

		snprintf(why, sizeof(why), "%d standbys stream from it, %d from node %d",
			 oi->n_streaming, op->n_streaming, p);
		set_role(f, p, NODE_ROLE_UNKNOWN);
		f->nodes[p].former_primary = true;
		f->nodes[p].warned_false = true;
		if (f->set.detach_false_primary)
			set_status(f, p, NODE_DOWN, wall_ms,
				   "false primary: the standbys stream from node %d", i);
		add_event(f, wall_ms, "false_primary", p,
			  "node %d and node %d are both not in recovery; the standbys stream from "
			  "node %d%s",
			  p, i, i, f->set.detach_false_primary ? "; detached" : "");
		f->primary = -1;
		make_primary(f, i, wall_ms, mono_ms, why);
		return;
	}
	if (f->nodes[i].warned_false && !f->set.detach_false_primary)
		return;
	f->nodes[i].warned_false = true;
	set_role(f, i, NODE_ROLE_UNKNOWN);
	if (f->set.detach_false_primary) {
		f->nodes[i].former_primary = true;
		set_status(f, i, NODE_DOWN, wall_ms,
			   "false primary: not in recovery while node %d is the primary", p);
	}
	add_event(f, wall_ms, "false_primary", i, "not in recovery while node %d is the primary%s",
		  p, f->set.detach_false_primary ? "; detached" : " (detach_false_primary is off)");
}

/* No primary: choose one among the attached nodes that are not in recovery. */
static void find_primary(struct fsm *f, int64_t wall_ms, uint64_t mono_ms)
{
	int ap = always_primary_node(f);
	int best = -1;
	bool all_checked = true;
	char why[CLUSTER_REASON_MAX];

	if (ap >= 0) {
		if (f->nodes[ap].status != NODE_DOWN && f->nodes[ap].status != NODE_UNUSED &&
		    f->last_obs[ap].ok)
			make_primary(f, ap, wall_ms, mono_ms, "ALWAYS_PRIMARY");
		return;
	}
	for (int i = 0; i < f->set.n; i++) {
		const struct fsm_obs *o = &f->last_obs[i];

		if (!attached(f->nodes[i].status))
			continue;
		if (!fresh(f, i)) {
			all_checked = false;
			continue;
		}
		if (!o->ok || o->in_recovery)
			continue;
		if (best < 0 || o->n_streaming > f->last_obs[best].n_streaming)
			best = i;
	}
	/* At start, wait for every node's first answer: the first to answer is not the primary
	 * just because it answered first (split brain at start). */
	if (best < 0 || (!f->discovered && !all_checked))
		return;
	snprintf(why, sizeof(why), "not in recovery, %d standbys streaming",
		 f->last_obs[best].n_streaming);
	make_primary(f, best, wall_ms, mono_ms, why);
	for (int i = 0; i < f->set.n; i++) {
		const struct fsm_obs *o = &f->last_obs[i];

		if (i != best && attached(f->nodes[i].status) && fresh(f, i) && o->ok &&
		    !o->in_recovery)
			false_primary(f, i, wall_ms, mono_ms);
	}
}

/* ----------------------------------------------------------------------------------------------
 * Per-node transitions.
 */

static void primary_failed(struct fsm *f, int i, int64_t wall_ms, uint64_t mono_ms)
{
	unsigned fl = f->set.flags[i];

	if (fl & (BACKEND_FLAG_ALWAYS_PRIMARY | BACKEND_FLAG_DISALLOW_TO_FAILOVER)) {
		set_status(f, i, NODE_QUARANTINE, wall_ms, "primary failed health checks; %s",
			   (fl & BACKEND_FLAG_ALWAYS_PRIMARY) ? "ALWAYS_PRIMARY: never failed over"
							      : "DISALLOW_TO_FAILOVER");
		add_event(f, wall_ms, "quarantine", i, "%s", f->nodes[i].reason);
		return;
	}
	if (f->op != FSM_OP_IDLE || f->cmd_running) {
		if (!f->pending_failover) {
			f->pending_failover = true;
			snprintf(f->pending_reason, sizeof(f->pending_reason),
				 "primary failed health checks");
			add_event(f, wall_ms, "failover_pending", i,
				  "primary failed health checks while a command runs; failover "
				  "follows");
		}
		return;
	}
	begin_failover(f, i, -1, wall_ms, mono_ms, "primary failed health checks");
}

static void update_node(struct fsm *f, int i, int64_t wall_ms, uint64_t mono_ms)
{
	struct fsm_node *nd = &f->nodes[i];
	const struct fsm_obs *o = &f->last_obs[i];
	int p = f->primary;

	switch (nd->status) {
	case NODE_WAITING:
		if (!fresh(f, i))
			break;
		if (o->ok && o->in_recovery) {
			set_status(f, i, NODE_UP, wall_ms, "standby: check succeeded");
			set_role(f, i, NODE_ROLE_STANDBY);
		} else if (o->ok && p >= 0 && p != i) {
			false_primary(f, i, wall_ms, mono_ms);
		} else if (o->failed) {
			set_status(f, i, NODE_DOWN, wall_ms, "failed health checks");
			if (f->discovered)
				add_event(f, wall_ms, "detach", i, "failed health checks");
		}
		break;
	case NODE_UP:
		if (o->failed) {
			if (i == p) {
				primary_failed(f, i, wall_ms, mono_ms);
			} else if (f->set.flags[i] & BACKEND_FLAG_DISALLOW_TO_FAILOVER) {
				set_status(f, i, NODE_QUARANTINE, wall_ms,
					   "failed health checks; DISALLOW_TO_FAILOVER");
				add_event(f, wall_ms, "quarantine", i, "%s", nd->reason);
			} else {
				set_status(f, i, NODE_DOWN, wall_ms, "failed health checks");
				add_event(f, wall_ms, "detach", i, "standby failed health checks");
			}
		} else if (o->ok && i == p && o->in_recovery &&
			   !(f->set.flags[i] & BACKEND_FLAG_ALWAYS_PRIMARY)) {
			/* Demoted behind our back: look for the primary again (no command). */
			set_role(f, i, NODE_ROLE_STANDBY);
			snprintf(nd->reason, sizeof(nd->reason),
				 "standby: the primary went into "
				 "recovery");
			add_event(f, wall_ms, "primary_lost", i, "the primary reports in recovery");
			f->primary = -1;
			f->failing_over = true;
			if (f->op == FSM_OP_IDLE) {
				f->op = FSM_OP_SEARCH;
				f->op_cmd.kind = FSM_CMD_NONE;
				f->search_started = mono_ms;
			}
		} else if (o->ok && i != p && !o->in_recovery && p >= 0) {
			false_primary(f, i, wall_ms, mono_ms);
		} else if (o->ok && i != p && o->in_recovery) {
			set_role(f, i, NODE_ROLE_STANDBY);
		}
		break;
	case NODE_QUARANTINE:
		if (o->ok && o->successes >= f->set.rise) {
			set_status(f, i, NODE_UP, wall_ms, "%s: %d successful checks",
				   i == p ? "primary" : "standby", o->successes);
			add_event(f, wall_ms, "up", i, "back from quarantine after %d checks",
				  o->successes);
		}
		break;
	case NODE_DOWN:
		if (o->checked && !o->ok) {
			nd->warned_false = false;
			break;
		}
		if (!o->ok)
			break;
		if (!o->in_recovery && p >= 0 && p != i && !nd->warned_false) {
			nd->warned_false = true;
			nd->former_primary = true;
			set_role(f, i, NODE_ROLE_UNKNOWN);
			snprintf(nd->reason, sizeof(nd->reason),
				 "false primary: not in recovery while node %d is the primary; "
				 "re-sync it, then attach it by hand",
				 p);
			f->changed = true;
			add_event(f, wall_ms, "false_primary", i,
				  "down node answers not in recovery while node %d is the primary; "
				  "not used",
				  p);
			break;
		}
		if (f->set.auto_failback && !nd->former_primary && !nd->admin_down &&
		    o->in_recovery && o->successes >= f->set.rise && p >= 0 && p != i &&
		    (f->last_obs[p].replicas & BIT(i)) && f->op == FSM_OP_IDLE &&
		    (nd->last_failback == 0 ||
		     mono_ms - nd->last_failback >= f->set.auto_failback_interval_ms)) {
			nd->last_failback = mono_ms;
			set_status(f, i, NODE_UP, wall_ms,
				   "standby: auto_failback (streaming from node %d)", p);
			set_role(f, i, NODE_ROLE_STANDBY);
			add_event(f, wall_ms, "failback", i,
				  "auto_failback: streams from primary node %d", p);
			if (f->set.has_failback_cmd)
				f->failback_todo |= BIT(i);
		}
		break;
	case NODE_UNUSED:
		break;
	}
}

/* A live standby (its last check reached it in recovery), attached. */
static bool live_standby(const struct fsm *f, int i)
{
	return i >= 0 && i < f->set.n && attached(f->nodes[i].status) && f->last_obs[i].ok &&
	       f->last_obs[i].in_recovery;
}

/* The inherited failover found no primary in time: run failover_command again, once. */
static void rerun_inherited(struct fsm *f, int64_t wall_ms, uint64_t mono_ms)
{
	int failed = f->inherit_failed;
	f->inherited = false;
	if (!f->set.has_failover_cmd)
		return; /* observer mode: the search goes on for an outside promotion */
	int nm = live_standby(f, f->inherit_new_main) ? f->inherit_new_main
						      : fsm_pick_new_main(f, failed);
	f->op_cmd = (struct fsm_cmd){ FSM_CMD_FAILOVER, failed, nm, fsm_main_node(f), failed };
	f->op = FSM_OP_FAILOVER_CMD;
	f->op_cmd_started = false;
	f->failing_over = true;
	f->switchover_target = -1;
	f->promote_only = false;
	f->follow_todo = 0;
	f->search_started = mono_ms;
	add_event(f, wall_ms, "failover_rerun", failed,
		  "no primary within failover_command_timeout (%u ms) of inheriting the failover: "
		  "running failover_command again, new main node %d",
		  f->set.failover_command_timeout_ms, nm);
}

/* ----------------------------------------------------------------------------------------------
 * API.
 */

_Static_assert(offsetof(struct fsm, events) + sizeof(((struct fsm *)0)->events) ==
		       sizeof(struct fsm),
	       "events[] must be the last member of struct fsm (fsm_init does not clear it)");

void fsm_init(struct fsm *f, const struct fsm_settings *set, int64_t wall_ms, uint64_t mono_ms)
{
	memset(f, 0, offsetof(struct fsm, events)); /* n_events 0: events[] is left undefined */
	f->set = *set;
	f->primary = -1;
	f->switchover_target = -1;
	f->changed = true;
	for (int i = 0; i < set->n; i++) {
		struct fsm_node *nd = &f->nodes[i];

		nd->last_status_change = wall_ms;
		nd->waiting_since = mono_ms;
		if (set->checks_enabled) {
			nd->status = NODE_WAITING;
			snprintf(nd->reason, sizeof(nd->reason), "waiting for the first check");
		} else {
			nd->status = NODE_UP;
			nd->role = NODE_ROLE_STANDBY;
			snprintf(nd->reason, sizeof(nd->reason), "health checks are disabled");
		}
	}
	if (!set->checks_enabled) {
		int ap = always_primary_node(f);

		f->primary = ap >= 0 ? ap : 0;
		f->nodes[f->primary].role = NODE_ROLE_PRIMARY;
		f->discovered = true;
		return;
	}
	/* The start-up discovery is a search without a failover before it. */
	f->op = FSM_OP_SEARCH;
	f->search_started = mono_ms;
}

void fsm_set_settings(struct fsm *f, const struct fsm_settings *set)
{
	bool checks = f->set.checks_enabled;

	f->set = *set;
	f->set.checks_enabled = checks; /* turning checks on or off needs a restart */
}

void fsm_update(struct fsm *f, const struct fsm_obs *obs, int64_t wall_ms, uint64_t mono_ms)
{
	if (!f->set.checks_enabled)
		return;
	memcpy(f->last_obs, obs, sizeof(obs[0]) * (size_t)f->set.n);
	for (int i = 0; i < f->set.n; i++) {
		struct fsm_node *nd = &f->nodes[i];
		const struct fsm_obs *o = &obs[i];

		if (!o->checked)
			continue;
		if (nd->pg_up != o->ok) {
			nd->pg_up = o->ok;
			f->changed = true;
		}
		if (o->ok) {
			enum node_role r = o->in_recovery ? NODE_ROLE_STANDBY : NODE_ROLE_PRIMARY;

			if (nd->pg_role != r) {
				nd->pg_role = r;
				f->changed = true;
			}
		}
	}
	for (int i = 0; i < f->set.n; i++)
		update_node(f, i, wall_ms, mono_ms);
	if (f->primary < 0 && (f->op == FSM_OP_SEARCH || f->op == FSM_OP_IDLE))
		find_primary(f, wall_ms, mono_ms);
	if (f->op == FSM_OP_SEARCH && f->primary < 0 && f->set.search_primary_node_timeout_ms > 0 &&
	    mono_ms - f->search_started >= f->set.search_primary_node_timeout_ms) {
		add_event(f, wall_ms, "primary_not_found", -1,
			  "no primary found within search_primary_node_timeout (%u ms); still "
			  "checking every period",
			  f->set.search_primary_node_timeout_ms);
		if (f->op_cmd.kind == FSM_CMD_FAILOVER)
			f->failovers_failed++;
		f->failing_over = false;
		f->discovered = true;
		f->op = FSM_OP_IDLE;
		f->changed = true;
	}
	if (f->inherited && f->primary >= 0)
		f->inherited = false;
	if (f->inherited && !f->cmd_running && (f->op == FSM_OP_SEARCH || f->op == FSM_OP_IDLE) &&
	    mono_ms >= f->inherit_deadline)
		rerun_inherited(f, wall_ms, mono_ms);
	advance(f, wall_ms, mono_ms);
}

void fsm_command_done(struct fsm *f, int exit_status, bool timed_out, int64_t wall_ms,
		      uint64_t mono_ms)
{
	const struct fsm_cmd c = f->cmd;
	bool ok = exit_status == 0 && !timed_out;

	f->cmd_running = false;
	f->want_cmd = false;
	switch (c.kind) {
	case FSM_CMD_FAILOVER:
		/* Failed or not, look for a primary: an operator may promote one by hand. */
		if (f->op == FSM_OP_FAILOVER_CMD) {
			f->op = FSM_OP_SEARCH;
			f->search_started = mono_ms;
			for (int i = 0; i < f->set.n; i++) {
				if (attached(f->nodes[i].status))
					f->probe_now |= BIT(i);
			}
		}
		break;
	case FSM_CMD_FOLLOW:
		if (c.node < 0)
			break;
		if (ok && f->nodes[c.node].status == NODE_DOWN && !f->nodes[c.node].admin_down) {
			/* Re-synced (perhaps restarted) by the command: the next check decides. */
			f->nodes[c.node].former_primary = false;
			f->nodes[c.node].warned_false = false;
			f->nodes[c.node].waiting_since = mono_ms;
			set_status(f, c.node, NODE_WAITING, wall_ms,
				   "follow_primary_command succeeded; waiting for a check");
			f->probe_now |= BIT(c.node);
		} else if (!ok && attached(f->nodes[c.node].status)) {
			set_status(f, c.node, NODE_DOWN, wall_ms, "follow_primary_command %s",
				   timed_out ? "timed out" : "failed");
			add_event(f, wall_ms, "detach", c.node,
				  "standby could not follow the new primary");
		}
		break;
	case FSM_CMD_FAILBACK:
	case FSM_CMD_NONE:
		break;
	}
	advance(f, wall_ms, mono_ms);
}

bool fsm_command(struct fsm *f, enum cluster_command cmd, int node, const char *reason,
		 int64_t wall_ms, uint64_t mono_ms, char *msg, size_t msgcap)
{
	struct fsm_node *nd;
	const char *why = reason != NULL && reason[0] != '\0' ? reason : "no reason given";
	char r[CLUSTER_REASON_MAX];

	if (node < 0 || node >= f->set.n) {
		snprintf(msg, msgcap, "no such node %d", node);
		return false;
	}
	nd = &f->nodes[node];
	switch (cmd) {
	case CLUSTER_DETACH:
		if (nd->status == NODE_DOWN) {
			snprintf(msg, msgcap, "node %d is already down", node);
			return false;
		}
		if (node == f->primary) {
			if (!f->set.checks_enabled) {
				snprintf(msg, msgcap,
					 "health checks are disabled: cannot fail over");
				return false;
			}
			if (f->op != FSM_OP_IDLE || f->cmd_running) {
				snprintf(msg, msgcap, "a failover or command is in progress");
				return false;
			}
			if (f->set.flags[node] & BACKEND_FLAG_ALWAYS_PRIMARY) {
				snprintf(msg, msgcap, "node %d is ALWAYS_PRIMARY", node);
				return false;
			}
			nd->admin_down = true;
			snprintf(r, sizeof(r), "detached by operator (%s)", why);
			begin_failover(f, node, -1, wall_ms, mono_ms, r);
			snprintf(msg, msgcap,
				 "primary node %d detached; failover to node %d started", node,
				 f->op_cmd.new_main);
			return true;
		}
		if (f->op != FSM_OP_IDLE && node == f->op_cmd.new_main) {
			snprintf(msg, msgcap, "node %d is being promoted", node);
			return false;
		}
		nd->admin_down = true;
		set_status(f, node, NODE_DOWN, wall_ms, "detached by operator (%s)", why);
		add_event(f, wall_ms, "detach", node, "detached by operator (%s)", why);
		snprintf(msg, msgcap, "node %d detached", node);
		return true;
	case CLUSTER_ATTACH:
		if (nd->status == NODE_UP || nd->status == NODE_WAITING) {
			snprintf(msg, msgcap, "node %d is already attached", node);
			return false;
		}
		nd->admin_down = false;
		nd->former_primary = false;
		nd->warned_false = false;
		nd->waiting_since = mono_ms;
		if (f->set.checks_enabled) {
			set_status(f, node, NODE_WAITING, wall_ms,
				   "attached by operator (%s); waiting for a check", why);
			f->probe_now |= BIT(node);
		} else {
			set_status(f, node, NODE_UP, wall_ms, "attached by operator (%s)", why);
		}
		add_event(f, wall_ms, "attach", node, "attached by operator (%s)", why);
		if (f->set.has_failback_cmd)
			f->failback_todo |= BIT(node);
		advance(f, wall_ms, mono_ms);
		snprintf(msg, msgcap, "node %d attached; it is up after a successful check", node);
		return true;
	case CLUSTER_PROMOTE:
	case CLUSTER_PROMOTE_ONLY:
		if (!f->set.checks_enabled) {
			snprintf(msg, msgcap, "health checks are disabled: cannot switch over");
			return false;
		}
		if (f->op != FSM_OP_IDLE || f->cmd_running || f->failing_over) {
			snprintf(msg, msgcap, "a failover or command is in progress");
			return false;
		}
		if (f->primary < 0) {
			snprintf(msg, msgcap, "there is no primary to switch over from");
			return false;
		}
		if (node == f->primary) {
			snprintf(msg, msgcap, "node %d is already the primary", node);
			return false;
		}
		if (nd->status != NODE_UP || nd->role != NODE_ROLE_STANDBY) {
			snprintf(msg, msgcap, "node %d is not an up standby", node);
			return false;
		}
		if (f->set.flags[f->primary] & BACKEND_FLAG_ALWAYS_PRIMARY) {
			snprintf(msg, msgcap, "node %d is ALWAYS_PRIMARY", f->primary);
			return false;
		}
		if (cmd == CLUSTER_PROMOTE_ONLY) {
			add_event(f, wall_ms, "promote", node,
				  "promotion of node %d, node %d detached, the others left as they "
				  "are (%s)",
				  node, f->primary, why);
			snprintf(r, sizeof(r), "promotion of node %d by operator (%s)", node, why);
			snprintf(msg, msgcap,
				 "promotion of node %d started; node %d is detached, the other "
				 "nodes "
				 "do not follow",
				 node, f->primary);
		} else {
			add_event(f, wall_ms, "promote", node,
				  "switchover from node %d to node %d (%s)", f->primary, node, why);
			snprintf(r, sizeof(r), "switchover to node %d by operator (%s)", node, why);
			snprintf(msg, msgcap, "switchover from node %d to node %d started",
				 f->primary, node);
		}
		begin_failover(f, f->primary, node, wall_ms, mono_ms, r);
		f->promote_only = cmd == CLUSTER_PROMOTE_ONLY;
		return true;
	}
	snprintf(msg, msgcap, "unknown command");
	return false;
}

void fsm_adopt_down(struct fsm *f, int node, bool resume_failover, const char *reason,
		    int64_t wall_ms, uint64_t mono_ms)
{
	if (node < 0 || node >= f->set.n || f->nodes[node].status == NODE_DOWN)
		return;
	bool was_primary = node == f->primary;
	int old_main = fsm_main_node(f);
	set_status(f, node, NODE_DOWN, wall_ms, "%s", reason);
	set_role(f, node, NODE_ROLE_UNKNOWN);
	f->nodes[node].former_primary = true;
	f->nodes[node].warned_false = false;
	add_event(f, wall_ms, "detach", node, "%s", reason);
	if (!was_primary && !resume_failover)
		return;
	if (was_primary)
		f->primary = -1;
	f->failing_over = true;
	for (int i = 0; i < f->set.n; i++) {
		if (i != node && attached(f->nodes[i].status))
			f->probe_now |= BIT(i);
	}
	if (f->op != FSM_OP_IDLE)
		return; /* a running op (search, follow) goes on and finds the primary */
	f->op = FSM_OP_SEARCH;
	f->search_started = mono_ms;
	f->switchover_target = -1;
	f->op_cmd = (struct fsm_cmd){ resume_failover ? FSM_CMD_FAILOVER : FSM_CMD_NONE, node, -1,
				      old_main, node };
}

void fsm_inherit_failover(struct fsm *f, int failed, int new_main, int64_t wall_ms,
			  uint64_t mono_ms)
{
	if (f->inherited || f->primary >= 0 || f->cmd_running || failed < 0 || failed >= f->set.n ||
	    (f->op != FSM_OP_SEARCH && f->op != FSM_OP_IDLE))
		return;
	f->inherited = true;
	f->inherit_deadline = mono_ms + f->set.failover_command_timeout_ms;
	f->inherit_failed = failed;
	f->inherit_new_main = new_main >= 0 && new_main < f->set.n ? new_main : -1;
	/* What the search finds ends this failover: follow commands run as after our own. */
	f->op_cmd = (struct fsm_cmd){ FSM_CMD_FAILOVER, failed, f->inherit_new_main,
				      fsm_main_node(f), failed };
	add_event(f, wall_ms, "failover_inherited", failed,
		  "the failover of node %d announced by the previous leader is unfinished; "
		  "failover_command runs again if no primary appears within %u ms",
		  failed, f->set.failover_command_timeout_ms);
}

void fsm_inherit_drop(struct fsm *f)
{
	f->inherited = false;
}

bool fsm_wants_fast_probe(const struct fsm *f, int node)
{
	return f->set.checks_enabled && f->op == FSM_OP_SEARCH && node >= 0 && node < f->set.n &&
	       attached(f->nodes[node].status);
}
