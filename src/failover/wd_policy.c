/*
 * The cluster manager's watchdog policy (see wd_policy.h, doc/watchdog.md). Manager thread only.
 */
#include "failover/wd_policy.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "conf/config.h"
#include "util/log.h"

#define COMPONENT "watchdog"
#define BIT(i)	  (UINT64_C(1) << (i))

static void note(struct history *h, int64_t wall_ms, const char *event, int node, const char *fmt,
		 ...) __attribute__((format(printf, 5, 6)));

static void note(struct history *h, int64_t wall_ms, const char *event, int node, const char *fmt,
		 ...)
{
	struct cluster_event e;
	va_list ap;
	memset(&e, 0, sizeof(e));
	e.at_ms = wall_ms;
	snprintf(e.event, sizeof(e.event), "%s", event);
	e.node = node;
	e.exit_status = -1;
	va_start(ap, fmt);
	vsnprintf(e.detail, sizeof(e.detail), fmt, ap);
	va_end(ap);
	history_add(h, &e);
	if (node >= 0)
		log_info(COMPONENT, 0, "%s: node %d: %s", event, node, e.detail);
	else
		log_info(COMPONENT, 0, "%s: %s", event, e.detail);
}

bool wdp_start(struct wd_policy *p, const struct config *cfg, void (*notify)(void *), void *arg)
{
	memset(p, 0, sizeof(*p));
	p->cmds_allowed = true;
	if (!cfg->watchdog.enabled)
		return true;
	p->require_consensus = cfg->watchdog.require_consensus;
	p->wd = watchdog_start(cfg, notify, arg);
	return p->wd != NULL;
}

void wdp_stop(struct wd_policy *p)
{
	watchdog_stop(p->wd);
	p->wd = NULL;
}

/* Whether this instance decides failovers now (the leader, in either mode). */
static bool decides(const struct wd_policy *p)
{
	return p->st.is_leader && p->st.fresh && !p->st.fenced;
}

/* Live instances (keys present; this one counted once) and those that see node failed. */
static void count_votes(const struct wd_policy *p, const struct fsm_obs *obs, int node, int *live,
			int *votes)
{
	*live = 1;
	*votes = obs[node].failed ? 1 : 0;
	for (int i = 0; i < p->st.n_members; i++) {
		const struct wd_member *m = &p->st.members[i];
		if (!m->present || strcmp(m->name, p->st.name) == 0)
			continue;
		(*live)++;
		if (m->down & BIT(node))
			(*votes)++;
	}
}

static void events(struct wd_policy *p, struct history *h, int64_t wall_ms)
{
	const struct wd_state *s = &p->st;
	if (s->is_leader && !p->prev_leader)
		note(h, wall_ms, "watchdog_leader", -1, "%s is the leader (election %llu)", s->name,
		     (unsigned long long)s->elections_won);
	if (!s->is_leader && p->prev_leader)
		note(h, wall_ms, "watchdog_leader_lost", -1, "%s is no longer the leader%s%s",
		     s->name, s->leader[0] ? "; leader: " : "", s->leader);
	if (s->fenced && !p->prev_fenced)
		note(h, wall_ms, "watchdog_fenced", -1,
		     "%s lost etcd for the lease TTL (%u ms) while other instances have it: writes "
		     "are refused",
		     s->name, s->lease_ttl_ms);
	if (!s->fenced && p->prev_fenced)
		note(h, wall_ms, "watchdog_unfenced", -1, "%s reaches etcd again: writes resume",
		     s->name);
	if (!s->connected && p->prev_connected && !s->fenced)
		note(h, wall_ms, "watchdog_lost", -1, "%s cannot renew its etcd lease%s", s->name,
		     s->etcd_down_everywhere ? " (etcd is down for every instance reached)" : "");
	if (s->connected && !p->prev_connected && p->ever_connected)
		note(h, wall_ms, "watchdog_joined", -1, "%s holds an etcd lease again", s->name);
	p->prev_leader = s->is_leader;
	p->prev_fenced = s->fenced;
	p->prev_connected = s->connected;
	p->ever_connected |= s->connected;
}

/* Applies a newer etcd view: former primaries are detached here too. */
static void adopt(struct wd_policy *p, struct fsm *f, struct history *h, int64_t wall_ms,
		  uint64_t mono_ms)
{
	const struct wd_view *v = &p->st.view;
	if (!v->valid || v->epoch <= p->adopted_epoch)
		return;
	for (int i = 0; i < f->set.n; i++) {
		if ((v->former & BIT(i)) && f->nodes[i].status != NODE_DOWN) {
			char why[CLUSTER_REASON_MAX];
			bool resume = decides(p) && v->failing_over && v->failed == i;
			snprintf(why, sizeof(why),
				 "former primary per the watchdog view (epoch %llu, %s)",
				 (unsigned long long)v->epoch, v->leader);
			fsm_adopt_down(f, i, resume, why, wall_ms, mono_ms);
		} else if (!(v->former & BIT(i)) && (p->adopted_former & BIT(i)) &&
			   f->nodes[i].status == NODE_DOWN) {
			char msg[CLUSTER_REASON_MAX];
			(void)fsm_command(f, CLUSTER_ATTACH, i, "attached in the watchdog view",
					  wall_ms, mono_ms, msg, sizeof(msg));
		}
	}
	if (strcmp(v->leader, p->st.name) != 0)
		note(h, wall_ms, "watchdog_view", v->primary,
		     "view epoch %llu from %s: primary %d%s", (unsigned long long)v->epoch,
		     v->leader, v->primary, v->failing_over ? ", failing over" : "");
	p->adopted_former = v->former;
	p->adopted_epoch = v->epoch;
	if (v->epoch > p->epoch)
		p->epoch = v->epoch;
}

/*
 * A failover the previous leader announced and did not finish is this leader's now: the core
 * re-runs failover_command if no primary shows up in time (fsm_inherit_failover).
 */
static void inherit(struct wd_policy *p, struct fsm *f, struct history *h, int64_t wall_ms,
		    uint64_t mono_ms)
{
	(void)h;
	const struct wd_view *v = &p->st.view;
	if (!decides(p)) {
		fsm_inherit_drop(f);
		return;
	}
	if (v->valid && v->failing_over && v->failed >= 0 && v->failed < f->set.n &&
	    strcmp(v->leader, p->st.name) != 0 && f->primary < 0)
		fsm_inherit_failover(f, v->failed, v->new_main, wall_ms, mono_ms);
}

const struct fsm_obs *wdp_before(struct wd_policy *p, struct fsm *f, const struct fsm_settings *set,
				 const struct fsm_obs *obs, struct history *h, int64_t wall_ms,
				 uint64_t mono_ms)
{
	if (!p->wd)
		return obs;
	watchdog_state_copy(p->wd, &p->st);
	events(p, h, wall_ms);
	p->started = true;
	adopt(p, f, h, wall_ms, mono_ms);
	inherit(p, f, h, wall_ms, mono_ms);

	bool allowed = watchdog_may_run_commands(&p->st);
	if (allowed != p->cmds_allowed) {
		struct fsm_settings s = *set;
		if (!allowed)
			s.has_failover_cmd = s.has_follow_cmd = s.has_failback_cmd = false;
		fsm_set_settings(f, &s);
		p->cmds_allowed = allowed;
	}

	memcpy(p->masked, obs, sizeof(obs[0]) * (size_t)f->set.n);
	int pr = f->primary;
	if (pr < 0 || !obs[pr].failed) {
		if (pr >= 0) {
			p->consensus_noted &= ~BIT(pr);
			p->consensus_done &= ~BIT(pr);
		}
		return p->masked;
	}
	int live, votes;
	count_votes(p, obs, pr, &live, &votes);
	bool agreed = !p->require_consensus || 2 * votes > live;
	if (decides(p) && agreed) {
		if (!(p->consensus_done & BIT(pr)))
			note(h, wall_ms, "consensus_reached", pr,
			     "%d of %d live instances see the primary failed", votes, live);
		p->consensus_done |= BIT(pr);
		return p->masked;
	}
	/* Not (yet) failed over: the core keeps it; wdp_overlay keeps writes away from it. */
	p->masked[pr].failed = false;
	if (!(p->consensus_noted & BIT(pr)))
		note(h, wall_ms, "consensus_not_reached", pr,
		     "%d of %d live instances see the primary failed%s; writes here wait", votes,
		     live, decides(p) ? "" : " (the leader decides)");
	p->consensus_noted |= BIT(pr);
	return p->masked;
}

void wdp_handoff(struct wd_policy *p, const struct fsm *f, const struct fsm_obs *obs)
{
	if (!p->wd)
		return;
	struct wd_local l = { .primary = f->primary, .fenced = p->st.fenced };
	for (int i = 0; i < f->set.n; i++)
		if (obs[i].checked && obs[i].failed)
			l.down |= BIT(i);
	watchdog_set_local(p->wd, &l);
	if (!decides(p) || (!f->discovered && f->primary < 0))
		return;
	struct wd_view v = { .valid = true,
			     .primary = f->primary,
			     .failing_over = f->failing_over,
			     .failed = f->failing_over ? f->op_cmd.node : -1,
			     .new_main = f->failing_over ? f->op_cmd.new_main : -1 };
	for (int i = 0; i < f->set.n; i++)
		if (f->nodes[i].former_primary && f->nodes[i].status == NODE_DOWN)
			v.former |= BIT(i);
	/* A new leadership writes its view once even when nothing changed. */
	bool same = p->handed_valid && p->handed.primary == v.primary &&
		    p->handed.failing_over == v.failing_over && p->handed.failed == v.failed &&
		    p->handed.new_main == v.new_main && p->handed.former == v.former &&
		    p->st.view_written >= p->seq && p->st.view.valid &&
		    strcmp(p->st.view.leader, p->st.name) == 0;
	if (same)
		return;
	if (p->handed_valid && p->handed.primary == v.primary &&
	    p->handed.failing_over == v.failing_over && p->handed.failed == v.failed &&
	    p->handed.new_main == v.new_main && p->handed.former == v.former &&
	    p->st.view_written < p->seq)
		return; /* handed, not written yet */
	v.epoch = (p->epoch > p->adopted_epoch ? p->epoch : p->adopted_epoch) + 1;
	p->epoch = v.epoch;
	snprintf(v.leader, sizeof(v.leader), "%s", p->st.name);
	p->handed = v;
	p->handed_valid = true;
	watchdog_set_view(p->wd, &v, ++p->seq);
}

int wdp_command_gate(struct wd_policy *p, const struct fsm_cmd *cmd)
{
	if (!p->wd)
		return 1;
	watchdog_state_copy(p->wd, &p->st);
	if (!watchdog_may_run_commands(&p->st))
		return -1;
	if (cmd->kind == FSM_CMD_FAILOVER && p->st.view_written < p->seq)
		return 0;
	return 1;
}

void wdp_overlay(const struct wd_policy *p, const struct fsm_obs *obs, struct cluster_view *v)
{
	if (!p->wd)
		return;
	v->watchdog = true;
	int pr = v->primary;
	if (p->st.fenced) {
		v->fenced = true;
		if (pr >= 0) {
			v->nodes[pr].status = NODE_QUARANTINE;
			snprintf(v->nodes[pr].reason, sizeof(v->nodes[pr].reason),
				 "fenced: this instance lost etcd; no writes");
		}
		v->primary = -1;
		v->failing_over = false;
		return;
	}
	if (pr >= 0 && obs[pr].failed) {
		v->nodes[pr].status = NODE_QUARANTINE;
		snprintf(v->nodes[pr].reason, sizeof(v->nodes[pr].reason),
			 "unreachable from this instance; waiting for the watchdog consensus");
		v->primary = -1;
		v->failing_over = true;
		return;
	}
	const struct wd_view *w = &p->st.view;
	if (!decides(p) && w->valid && p->st.connected &&
	    (w->failing_over || (w->primary >= 0 && w->primary != pr))) {
		/* The leader moved the primary (or is moving it): wait until this instance sees
		 * the same one. */
		v->primary = -1;
		v->failing_over = true;
	}
}
