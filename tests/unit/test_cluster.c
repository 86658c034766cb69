/*
 * The cluster manager's pure core (src/failover/node_fsm.c) and the command helpers
 * (src/failover/failover_cmd.c): placeholder expansion, PGRELAY_* variables, the runner (real
 * /bin/sh: exit codes, output tail, timeout kills the group), node transitions, primary discovery,
 * split brain, failover orchestration, operator commands, auto failback, the history ring, and the
 * view a started manager hands out.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "conf/config.h"
#include "failover/cluster.h"
#include "failover/failover_cmd.h"
#include "failover/history.h"
#include "failover/node_fsm.h"
#include "health/probe.h"
#include "util/log.h"

/* ----------------------------------------------------------------------------------------------
 * Placeholders.
 */

static const struct cmd_vars vars = {
	.failed_id = 0,
	.failed_host = "10.0.0.1",
	.failed_port = 5432,
	.failed_dir = "/pg/node0",
	.new_main_id = 2,
	.new_main_host = "10.0.0.3",
	.new_main_port = 5434,
	.new_main_dir = "/pg/node2",
	.old_main_id = 0,
	.old_primary_id = 0,
	.old_primary_host = "10.0.0.1",
	.old_primary_port = 5432,
};

static void test_expand_table(void **state)
{
	static const struct {
		const char *tmpl, *want;
	} cases[] = {
		{ "failover.sh %d %h %p %D %m %H %M %P %r %R %N %S",
		  "failover.sh 0 10.0.0.1 5432 /pg/node0 2 10.0.0.3 0 0 5434 /pg/node2 10.0.0.1 "
		  "5432" },
		{ "", "" },
		{ "no placeholders", "no placeholders" },
		{ "100%% sure", "100% sure" },
		{ "%%d", "%d" },
		{ "a%xb", "ab" }, /* unknown: dropped, as pgpool does */
		{ "trailing %", "trailing " },
		{ "%d%d%d", "000" },
		{ "'%D'", "'/pg/node0'" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char out[256];

		assert_true(cmd_expand(cases[i].tmpl, &vars, out, sizeof(out)));
		assert_string_equal(out, cases[i].want);
	}
}

static void test_expand_missing_node_and_overflow(void **state)
{
	struct cmd_vars v = vars;
	char out[64], tiny[8];

	(void)state;
	v.new_main_id = -1;
	v.new_main_host = NULL;
	assert_true(cmd_expand("[%m][%H][%r][%R]", &v, out, sizeof(out)));
	assert_string_equal(out, "[-1][][][]");
	assert_false(cmd_expand("%D%D%D", &vars, tiny, sizeof(tiny)));
	assert_string_equal(tiny, "/pg/nod"); /* truncated, still terminated */
}

static void test_env(void **state)
{
	char buf[CMD_ENV_VARS][CLUSTER_COMMAND_MAX];
	char *env[CMD_ENV_VARS];

	(void)state;
	cmd_build_env(&vars, buf, env);
	assert_string_equal(env[0], "PGRELAY_FAILED_NODE_ID=0");
	assert_string_equal(env[1], "PGRELAY_FAILED_HOST=10.0.0.1");
	assert_string_equal(env[2], "PGRELAY_FAILED_PORT=5432");
	assert_string_equal(env[3], "PGRELAY_FAILED_DATA_DIR=/pg/node0");
	assert_string_equal(env[4], "PGRELAY_NEW_MAIN_NODE_ID=2");
	assert_string_equal(env[5], "PGRELAY_NEW_MAIN_HOST=10.0.0.3");
	assert_string_equal(env[6], "PGRELAY_NEW_MAIN_PORT=5434");
	assert_string_equal(env[7], "PGRELAY_NEW_MAIN_DATA_DIR=/pg/node2");
	assert_string_equal(env[8], "PGRELAY_OLD_MAIN_NODE_ID=0");
	assert_string_equal(env[9], "PGRELAY_OLD_PRIMARY_NODE_ID=0");
	assert_string_equal(env[10], "PGRELAY_OLD_PRIMARY_HOST=10.0.0.1");
	assert_string_equal(env[11], "PGRELAY_OLD_PRIMARY_PORT=5432");
}

/* ----------------------------------------------------------------------------------------------
 * The runner, with a real shell.
 */

static uint64_t mono(void)
{
	return probe_now_ms();
}

/* Runs cmdline to its end like the manager loop does; returns the elapsed ms. */
static uint64_t run(struct cmd_run *r, const char *cmdline, uint32_t timeout_ms)
{
	char *env[] = { "PGRELAY_FAILED_NODE_ID=7" };
	uint64_t t0 = mono();

	assert_true(cmd_start(r, "test", cmdline, env, 1, timeout_ms, t0));
	while (!cmd_step(r, mono())) {
		struct pollfd p;
		int n = cmd_pollfd(r, &p) ? 1 : 0;

		poll(n ? &p : NULL, (nfds_t)n, cmd_next_ms(r, mono()));
	}
	return mono() - t0;
}

static void test_runner_exit_and_output(void **state)
{
	struct cmd_run r;
	char last[64];

	(void)state;
	run(&r, "echo first; echo \"node=$PGRELAY_FAILED_NODE_ID\" >&2; exit 3", 5000);
	assert_int_equal(r.exit_status, 3);
	assert_false(r.timed_out);
	cmd_last_line(&r, last, sizeof(last));
	assert_string_equal(last, "node=7");
	run(&r, "kill -9 $$", 5000);
	assert_int_equal(r.exit_status, 128 + 9);
	/* More output than the tail keeps: the last bytes survive. */
	run(&r, "i=0; while [ $i -lt 300 ]; do echo line $i; i=$((i+1)); done", 5000);
	assert_int_equal(r.exit_status, 0);
	assert_true(r.tail_len == sizeof(r.tail) - 1);
	cmd_last_line(&r, last, sizeof(last));
	assert_string_equal(last, "line 299");
}

static void test_runner_timeout_kills_group(void **state)
{
	struct cmd_run r;
	uint64_t took;

	(void)state;
	/* A background child holding the pipe, and a shell ignoring SIGTERM: SIGKILL after grace.
	 */
	took = run(&r, "sleep 30 & trap '' TERM; sleep 30; sleep 30", 300);
	assert_true(r.timed_out);
	assert_int_equal(r.exit_status, 128 + 9);
	assert_true(took >= 300 + CMD_KILL_GRACE_MS && took < 300 + CMD_KILL_GRACE_MS + 2000);
	took = run(&r, "sleep 30", 200);
	assert_int_equal(r.exit_status, 128 + 15);
	assert_true(took < 2000);
	/* A backgrounded process that outlives a clean exit does not hold the command. */
	took = run(&r, "sleep 5 & echo done", 5000);
	assert_int_equal(r.exit_status, 0);
	assert_true(took < 2000);
}

/* ----------------------------------------------------------------------------------------------
 * The core: a three-node cluster driven by hand-made observations.
 */

struct sim {
	struct fsm f;
	struct fsm_obs obs[CLUSTER_MAX_NODES];
	uint64_t now;
};

static void sim_init(struct sim *s, int n, bool failover_cmd, bool follow_cmd)
{
	struct fsm_settings set = { .n = n,
				    .checks_enabled = true,
				    .rise = 2,
				    .detach_false_primary = true,
				    .auto_failback_interval_ms = 60000,
				    .search_primary_node_timeout_ms = 10000,
				    .has_failover_cmd = failover_cmd,
				    .has_follow_cmd = follow_cmd };

	memset(s, 0, sizeof(*s));
	s->now = 1000;
	fsm_init(&s->f, &set, 0, s->now);
}

/* Node i answered: in recovery (standby) or not, with receive/replay LSNs. */
static void ok(struct sim *s, int i, bool in_recovery, uint64_t recv, uint64_t replay)
{
	struct fsm_obs *o = &s->obs[i];

	o->checked = true;
	o->ok = true;
	o->failed = false;
	o->successes++;
	o->in_recovery = in_recovery;
	o->receive_lsn = recv;
	o->replay_lsn = replay;
	o->current_lsn = in_recovery ? 0 : recv;
	o->at_ms = ++s->now;
}

static void nok(struct sim *s, int i)
{
	struct fsm_obs *o = &s->obs[i];

	o->checked = true;
	o->ok = false;
	o->failed = true;
	o->successes = 0;
	o->at_ms = ++s->now;
}

static void step(struct sim *s)
{
	s->now += 10;
	fsm_update(&s->f, s->obs, 0, s->now);
}

static bool has_event(const struct fsm *f, const char *name, int node)
{
	for (int i = 0; i < f->n_events; i++) {
		if (strcmp(f->events[i].event, name) == 0 && f->events[i].node == node)
			return true;
	}
	return false;
}

/* Primary 0 streaming to 1 and 2, everything up. */
static void sim_healthy(struct sim *s, bool failover_cmd, bool follow_cmd)
{
	sim_init(s, 3, failover_cmd, follow_cmd);
	s->obs[0].replicas = 0x6;
	s->obs[0].n_streaming = 2;
	ok(s, 0, false, 100, 0);
	ok(s, 1, true, 100, 100);
	ok(s, 2, true, 100, 100);
	step(s);
	assert_int_equal(s->f.primary, 0);
	for (int i = 0; i < 3; i++)
		assert_int_equal(s->f.nodes[i].status, NODE_UP);
	assert_int_equal(s->f.nodes[1].role, NODE_ROLE_STANDBY);
	assert_int_equal(s->f.op, FSM_OP_IDLE);
	s->f.n_events = 0;
}

static void test_discovery_waits_for_every_node(void **state)
{
	struct sim s;

	(void)state;
	sim_init(&s, 3, false, false);
	/* Node 2 is the primary (config order does not matter); node 0 answers first. */
	ok(&s, 0, true, 50, 50);
	step(&s);
	assert_int_equal(s.f.primary, -1);
	assert_int_equal(s.f.nodes[0].status, NODE_UP);
	assert_true(fsm_wants_fast_probe(&s.f, 1));
	s.obs[2].n_streaming = 2;
	ok(&s, 2, false, 60, 0);
	step(&s);
	assert_int_equal(s.f.primary, -1); /* node 1 not checked yet */
	nok(&s, 1);
	step(&s);
	assert_int_equal(s.f.primary, 2);
	assert_int_equal(s.f.nodes[1].status, NODE_DOWN);
	assert_int_equal(s.f.nodes[2].role, NODE_ROLE_PRIMARY);
	assert_false(fsm_wants_fast_probe(&s.f, 0));
	assert_true(has_event(&s.f, "primary_found", 2));
}

static void test_split_brain_at_start_keeps_streamed_primary(void **state)
{
	struct sim s;

	(void)state;
	sim_init(&s, 3, false, false);
	ok(&s, 0, false, 100, 0); /* no standby streams from 0 */
	s.obs[1].replicas = 0x4;
	s.obs[1].n_streaming = 1;
	ok(&s, 1, false, 100, 0);
	ok(&s, 2, true, 100, 100);
	step(&s);
	assert_int_equal(s.f.primary, 1);
	assert_int_equal(s.f.nodes[0].status, NODE_DOWN); /* detach_false_primary */
	assert_true(s.f.nodes[0].former_primary);
	assert_true(has_event(&s.f, "false_primary", 0));
}

static void test_standby_loss_and_quarantine(void **state)
{
	struct sim s;

	(void)state;
	sim_healthy(&s, true, true);
	nok(&s, 2);
	step(&s);
	assert_int_equal(s.f.nodes[2].status, NODE_DOWN);
	assert_int_equal(s.f.primary, 0);
	assert_int_equal(s.f.op, FSM_OP_IDLE);
	assert_false(s.f.want_cmd);
	/* It answers again: stays down without auto_failback. */
	ok(&s, 2, true, 100, 100);
	ok(&s, 2, true, 100, 100);
	step(&s);
	assert_int_equal(s.f.nodes[2].status, NODE_DOWN);

	/* DISALLOW_TO_FAILOVER: quarantine, back to up after rise successes. */
	s.f.set.flags[1] = BACKEND_FLAG_DISALLOW_TO_FAILOVER;
	nok(&s, 1);
	step(&s);
	assert_int_equal(s.f.nodes[1].status, NODE_QUARANTINE);
	ok(&s, 1, true, 100, 100);
	step(&s);
	assert_int_equal(s.f.nodes[1].status, NODE_QUARANTINE);
	ok(&s, 1, true, 100, 100);
	step(&s);
	assert_int_equal(s.f.nodes[1].status, NODE_UP);
}

static void test_failover_orchestration(void **state)
{
	struct sim s;

	(void)state;
	sim_healthy(&s, true, true);
	ok(&s, 1, true, 200, 150);
	ok(&s, 2, true, 200, 180); /* same receive, more replayed: node 2 */
	nok(&s, 0);
	step(&s);
	assert_int_equal(s.f.primary, -1);
	assert_true(s.f.failing_over);
	assert_int_equal(s.f.nodes[0].status, NODE_DOWN);
	assert_int_equal(s.f.op, FSM_OP_FAILOVER_CMD);
	assert_true(s.f.want_cmd);
	assert_int_equal(s.f.cmd.kind, FSM_CMD_FAILOVER);
	assert_int_equal(s.f.cmd.node, 0);
	assert_int_equal(s.f.cmd.new_main, 2);
	assert_int_equal(s.f.cmd.old_main, 0);
	assert_int_equal(s.f.cmd.old_primary, 0);
	s.f.want_cmd = false;
	/* While the command runs, node 2 already reports promoted: not published before the end. */
	ok(&s, 2, false, 210, 0);
	step(&s);
	assert_int_equal(s.f.primary, -1);
	/* The command failed; the search goes on anyway and finds node 2. */
	fsm_command_done(&s.f, 1, false, 0, s.now);
	assert_int_equal(s.f.op, FSM_OP_SEARCH);
	step(&s);
	assert_int_equal(s.f.primary, 2);
	assert_false(s.f.failing_over);
	/* follow_primary for node 1 only. */
	assert_int_equal(s.f.op, FSM_OP_FOLLOW);
	assert_true(s.f.want_cmd);
	assert_int_equal(s.f.cmd.kind, FSM_CMD_FOLLOW);
	assert_int_equal(s.f.cmd.node, 1);
	assert_int_equal(s.f.cmd.new_main, 2);
	assert_int_equal(s.f.cmd.old_primary, 0);
	s.f.want_cmd = false;
	fsm_command_done(&s.f, 0, false, 0, s.now);
	assert_int_equal(s.f.op, FSM_OP_IDLE);
	assert_false(s.f.want_cmd);
	/* The old primary comes back not in recovery: held down, flagged once. */
	ok(&s, 0, false, 100, 0);
	step(&s);
	assert_int_equal(s.f.nodes[0].status, NODE_DOWN);
	assert_int_equal(s.f.primary, 2);
	assert_true(has_event(&s.f, "false_primary", 0));
}

static void test_search_timeout(void **state)
{
	struct sim s;

	(void)state;
	sim_healthy(&s, false, false);
	nok(&s, 0);
	step(&s);
	assert_int_equal(s.f.op, FSM_OP_SEARCH); /* no failover command: search at once */
	assert_true(fsm_wants_fast_probe(&s.f, 1));
	assert_false(fsm_wants_fast_probe(&s.f, 0));
	s.now += 10000;
	step(&s);
	assert_int_equal(s.f.op, FSM_OP_IDLE);
	assert_false(s.f.failing_over);
	assert_true(has_event(&s.f, "primary_not_found", -1));
	/* Promoted by hand later: found at the normal pace. */
	ok(&s, 1, false, 300, 0);
	step(&s);
	assert_int_equal(s.f.primary, 1);
}

static void test_flags(void **state)
{
	struct sim s;

	(void)state;
	sim_healthy(&s, true, false);
	s.f.set.flags[0] = BACKEND_FLAG_ALWAYS_PRIMARY;
	nok(&s, 0);
	step(&s);
	assert_int_equal(s.f.nodes[0].status, NODE_QUARANTINE);
	assert_int_equal(s.f.primary, 0);
	assert_false(s.f.want_cmd);
	s.f.set.flags[0] = BACKEND_FLAG_DISALLOW_TO_FAILOVER;
	ok(&s, 0, false, 100, 0);
	ok(&s, 0, false, 100, 0);
	step(&s);
	assert_int_equal(s.f.nodes[0].status, NODE_UP);
	nok(&s, 0);
	step(&s);
	assert_int_equal(s.f.nodes[0].status, NODE_QUARANTINE);
	assert_false(s.f.want_cmd);
}

static void test_operator_commands(void **state)
{
	struct sim s;
	char msg[128];

	(void)state;
	sim_healthy(&s, true, true);
	assert_false(fsm_command(&s.f, CLUSTER_ATTACH, 1, "x", 0, s.now, msg, sizeof(msg)));
	assert_false(fsm_command(&s.f, CLUSTER_PROMOTE, 0, "x", 0, s.now, msg, sizeof(msg)));
	assert_false(fsm_command(&s.f, CLUSTER_DETACH, 3, "x", 0, s.now, msg, sizeof(msg)));
	/* Standby: detach is just down; attach waits for a fresh check. */
	assert_true(fsm_command(&s.f, CLUSTER_DETACH, 1, "disk", 0, s.now, msg, sizeof(msg)));
	assert_int_equal(s.f.nodes[1].status, NODE_DOWN);
	assert_false(fsm_command(&s.f, CLUSTER_DETACH, 1, "x", 0, s.now, msg, sizeof(msg)));
	s.now += 10;
	assert_true(fsm_command(&s.f, CLUSTER_ATTACH, 1, "ok", 0, s.now, msg, sizeof(msg)));
	assert_int_equal(s.f.nodes[1].status, NODE_WAITING);
	assert_true(s.f.probe_now & 0x2);
	step(&s); /* the old observation is older than the attach */
	assert_int_equal(s.f.nodes[1].status, NODE_WAITING);
	ok(&s, 1, true, 100, 100);
	step(&s);
	assert_int_equal(s.f.nodes[1].status, NODE_UP);

	/* PROMOTE: switchover with the current primary as %d, the target as %m; both others
	 * follow, the old primary included. */
	assert_true(fsm_command(&s.f, CLUSTER_PROMOTE, 2, "planned", 0, s.now, msg, sizeof(msg)));
	assert_true(s.f.want_cmd);
	assert_int_equal(s.f.cmd.node, 0);
	assert_int_equal(s.f.cmd.new_main, 2);
	/* The node being promoted cannot be detached meanwhile. */
	assert_false(fsm_command(&s.f, CLUSTER_DETACH, 2, "x", 0, s.now, msg, sizeof(msg)));
	s.f.want_cmd = false;
	fsm_command_done(&s.f, 0, false, 0, s.now);
	ok(&s, 2, false, 300, 0);
	step(&s);
	assert_int_equal(s.f.primary, 2);
	uint64_t followed = 0;
	for (int k = 0; k < 2; k++) {
		assert_true(s.f.want_cmd);
		assert_int_equal(s.f.cmd.kind, FSM_CMD_FOLLOW);
		followed |= UINT64_C(1) << s.f.cmd.node;
		s.f.want_cmd = false;
		fsm_command_done(&s.f, 0, false, 0, s.now);
	}
	assert_int_equal(followed, 0x3);
	/* The old primary was re-synced by the follow command: waiting, up once in recovery. */
	assert_int_equal(s.f.nodes[0].status, NODE_WAITING);
	ok(&s, 0, true, 300, 300);
	step(&s);
	assert_int_equal(s.f.nodes[0].status, NODE_UP);
	assert_int_equal(s.f.nodes[0].role, NODE_ROLE_STANDBY);
}

static void test_promote_only(void **state)
{
	/*
	 * Bug guarded: PGRELAY PROMOTE NODE n without SWITCHOVER runs follow_primary_command for
	 * the other nodes (pcp_promote_node without -s leaves them as they are).
	 */
	struct sim s;
	char msg[160];

	(void)state;
	sim_healthy(&s, true, true);
	assert_true(
		fsm_command(&s.f, CLUSTER_PROMOTE_ONLY, 2, "planned", 0, s.now, msg, sizeof(msg)));
	assert_non_null(strstr(msg, "do not follow"));
	assert_true(s.f.want_cmd);
	assert_int_equal(s.f.cmd.kind, FSM_CMD_FAILOVER);
	assert_int_equal(s.f.cmd.node, 0);
	assert_int_equal(s.f.cmd.new_main, 2);
	assert_int_equal(s.f.nodes[0].status, NODE_DOWN);
	s.f.want_cmd = false;
	fsm_command_done(&s.f, 0, false, 0, s.now);
	ok(&s, 2, false, 300, 0);
	step(&s);
	assert_int_equal(s.f.primary, 2);
	assert_false(s.f.want_cmd); /* no follow_primary_command */
	assert_int_equal(s.f.op, FSM_OP_IDLE);
	assert_int_equal(s.f.nodes[1].status, NODE_UP);
	assert_int_equal(s.f.nodes[0].status, NODE_DOWN);
	/* The same refusals as a switchover: the primary itself, a down node. */
	assert_false(fsm_command(&s.f, CLUSTER_PROMOTE_ONLY, 2, "x", 0, s.now, msg, sizeof(msg)));
	assert_false(fsm_command(&s.f, CLUSTER_PROMOTE_ONLY, 0, "x", 0, s.now, msg, sizeof(msg)));
}

static void test_auto_failback(void **state)
{
	struct sim s;

	(void)state;
	sim_healthy(&s, false, false);
	s.f.set.auto_failback = true;
	s.f.set.has_failback_cmd = true;
	nok(&s, 2);
	step(&s);
	assert_int_equal(s.f.nodes[2].status, NODE_DOWN);
	/* Back, but not streaming from the primary yet: stays down. */
	s.obs[0].replicas = 0x2;
	ok(&s, 2, true, 100, 100);
	ok(&s, 2, true, 100, 100);
	step(&s);
	assert_int_equal(s.f.nodes[2].status, NODE_DOWN);
	s.obs[0].replicas = 0x6;
	step(&s);
	assert_int_equal(s.f.nodes[2].status, NODE_UP);
	assert_true(s.f.want_cmd);
	assert_int_equal(s.f.cmd.kind, FSM_CMD_FAILBACK);
	assert_int_equal(s.f.cmd.node, 2);
	s.f.want_cmd = false;
	fsm_command_done(&s.f, 0, false, 0, s.now);
	/* Down again at once: the interval holds it back. */
	nok(&s, 2);
	step(&s);
	ok(&s, 2, true, 100, 100);
	ok(&s, 2, true, 100, 100);
	step(&s);
	assert_int_equal(s.f.nodes[2].status, NODE_DOWN);
	s.now += 60000;
	step(&s);
	assert_int_equal(s.f.nodes[2].status, NODE_UP);
	/* An operator's detach is never undone automatically. */
	char msg[64];
	assert_true(fsm_command(&s.f, CLUSTER_DETACH, 2, "x", 0, s.now, msg, sizeof(msg)));
	s.now += 60000;
	step(&s);
	assert_int_equal(s.f.nodes[2].status, NODE_DOWN);
}

static void test_checks_disabled(void **state)
{
	struct fsm f;
	struct fsm_settings set = { .n = 3, .checks_enabled = false };
	char msg[64];

	(void)state;
	set.flags[1] = BACKEND_FLAG_ALWAYS_PRIMARY;
	fsm_init(&f, &set, 0, 0);
	assert_int_equal(f.primary, 1);
	assert_int_equal(f.nodes[0].status, NODE_UP);
	assert_int_equal(f.nodes[0].role, NODE_ROLE_STANDBY);
	assert_int_equal(f.nodes[1].role, NODE_ROLE_PRIMARY);
	assert_false(fsm_command(&f, CLUSTER_PROMOTE, 0, "", 0, 0, msg, sizeof(msg)));
	assert_false(fsm_command(&f, CLUSTER_DETACH, 1, "", 0, 0, msg, sizeof(msg)));
}

/* ----------------------------------------------------------------------------------------------
 * Digesting health states.
 */

static void test_obs_from_health(void **state)
{
	static struct health_node_state s;
	const char names[3][FSM_NAME_MAX] = { "node0", "node1", "node2" };
	struct fsm_obs o;

	(void)state;
	memset(&s, 0, sizeof(s));
	fsm_obs_from_health(&s, names, 3, &o);
	assert_false(o.checked);
	s.has_observation = true;
	s.obs.reachable = true;
	s.obs.status = PROBE_OK;
	s.obs.current_lsn = 500;
	s.obs.observed_at = 10;
	s.obs.n_replicas = 3;
	strcpy(s.obs.replicas[0].application_name, "node2");
	strcpy(s.obs.replicas[0].state, "streaming");
	strcpy(s.obs.replicas[1].application_name, "node1");
	strcpy(s.obs.replicas[1].state, "catchup");
	strcpy(s.obs.replicas[2].application_name, "pg_basebackup");
	strcpy(s.obs.replicas[2].state, "streaming");
	s.has_lsn = true;
	s.lsn_current = 700;
	s.lsn_observed_at = 20;
	fsm_obs_from_health(&s, names, 3, &o);
	assert_true(o.ok && !o.failed && !o.in_recovery);
	assert_int_equal(o.current_lsn, 700); /* the fresher light poll */
	assert_int_equal(o.at_ms, 20);
	assert_int_equal(o.replicas, 0x4);
	assert_int_equal(o.n_streaming, 1);
	/* A refused fresh connection confirms the failure only in a requested check. */
	s.obs.reachable = false;
	s.obs.status = PROBE_CONNECT_FAILED;
	s.obs.refused = true;
	fsm_obs_from_health(&s, names, 3, &o);
	assert_false(o.failed);
	s.session_requested = true;
	fsm_obs_from_health(&s, names, 3, &o);
	assert_true(o.failed);
	s.obs.status = PROBE_TIMEOUT;
	s.obs.refused = false;
	fsm_obs_from_health(&s, names, 3, &o);
	assert_false(o.failed); /* timeouts follow the retry counting */
	s.failed = true;
	fsm_obs_from_health(&s, names, 3, &o);
	assert_true(o.failed);
}

/*
 * The watchdog's view detaches a former primary (fsm_adopt_down, doc/watchdog.md). Bug guarded:
 * an instance that follows the leader's view promotes by itself, or the leader that takes over a
 * failover another instance began runs failover_command a second time.
 */
static void test_watchdog_adopt_down(void **state)
{
	struct sim s;

	(void)state;
	/* A member (no commands): the primary it still reaches is detached by the view. */
	sim_healthy(&s, false, false);
	fsm_adopt_down(&s.f, 0, false, "former primary per the watchdog view", 0, s.now);
	assert_int_equal(s.f.primary, -1);
	assert_true(s.f.failing_over);
	assert_int_equal(s.f.nodes[0].status, NODE_DOWN);
	assert_true(s.f.nodes[0].former_primary);
	assert_int_equal(s.f.op, FSM_OP_SEARCH);
	assert_false(s.f.want_cmd);
	ok(&s, 1, false, 120, 0); /* promoted by the leader's command */
	step(&s);
	assert_int_equal(s.f.primary, 1);
	assert_false(s.f.failing_over);
	assert_int_equal(s.f.op, FSM_OP_IDLE);
	assert_false(s.f.want_cmd);
	/* The old primary returns, still not in recovery: kept out. */
	ok(&s, 0, false, 100, 0);
	step(&s);
	assert_int_equal(s.f.nodes[0].status, NODE_DOWN);
	assert_int_equal(s.f.primary, 1);
	/* Adopting a node already down changes nothing. */
	s.f.n_events = 0;
	fsm_adopt_down(&s.f, 0, false, "again", 0, s.now);
	assert_int_equal(s.f.n_events, 0);

	/* The new leader resumes a failover: it searches (no second failover_command), then runs
	 * follow_primary_command for the remaining standby. */
	sim_healthy(&s, true, true);
	nok(&s, 0);
	fsm_adopt_down(&s.f, 0, true, "former primary per the watchdog view", 0, s.now);
	assert_int_equal(s.f.op, FSM_OP_SEARCH);
	assert_false(s.f.want_cmd);
	step(&s);
	assert_false(s.f.want_cmd);
	ok(&s, 2, false, 130, 0);
	step(&s);
	assert_int_equal(s.f.primary, 2);
	assert_int_equal(s.f.op, FSM_OP_FOLLOW);
	assert_true(s.f.want_cmd);
	assert_int_equal(s.f.cmd.kind, FSM_CMD_FOLLOW);
	assert_int_equal(s.f.cmd.node, 1);
	assert_int_equal(s.f.failovers_ok, 1);
}

/* Primary 0 lost; this instance (now the leader) inherits its failover, announced for node nm. */
static void sim_inherit(struct sim *s, bool follow_cmd, int nm)
{
	sim_healthy(s, true, follow_cmd);
	s->f.set.failover_command_timeout_ms = 5000;
	nok(s, 0);
	fsm_adopt_down(&s->f, 0, false, "former primary per the watchdog view", 0, s->now);
	fsm_inherit_failover(&s->f, 0, nm, 0, s->now);
}

/* Node p reports promoted: it becomes the primary and follower's follow command runs, ok. */
static void promoted_then_followed(struct sim *s, int p, int follower)
{
	ok(s, p, false, 130, 0);
	step(s);
	assert_int_equal(s->f.primary, p);
	assert_int_equal(s->f.op, FSM_OP_FOLLOW);
	assert_int_equal(s->f.cmd.kind, FSM_CMD_FOLLOW);
	assert_int_equal(s->f.cmd.node, follower);
	s->f.want_cmd = false;
	fsm_command_done(&s->f, 0, false, 0, s->now);
}

/*
 * A leader that inherits an unfinished failover (fsm_inherit_failover). Bug guarded: the previous
 * leader and its failover_command died before anything was promoted, and the new leader only
 * searched: no primary until an operator stepped in. It must run the command again after
 * failover_command_timeout, promoting the announced node when it is still a live standby, and
 * never while a primary appears in time or after it lost the leadership.
 */
static void test_watchdog_inherited_failover(void **state)
{
	struct sim s;

	(void)state;
	/* Nothing promoted: the command runs again after the grace, with the announced %m. */
	sim_inherit(&s, true, 2);
	assert_true(has_event(&s.f, "failover_inherited", 0));
	fsm_inherit_failover(&s.f, 0, 1, 0, s.now); /* once per inheritance */
	assert_int_equal(s.f.inherit_new_main, 2);
	step(&s);
	s.now += 4000;
	step(&s);
	assert_false(s.f.want_cmd);
	assert_int_equal(s.f.op, FSM_OP_SEARCH);
	s.now += 1000;
	step(&s);
	assert_true(has_event(&s.f, "failover_rerun", 0));
	assert_int_equal(s.f.op, FSM_OP_FAILOVER_CMD);
	assert_true(s.f.want_cmd);
	assert_int_equal(s.f.cmd.kind, FSM_CMD_FAILOVER);
	assert_int_equal(s.f.cmd.node, 0);
	assert_int_equal(s.f.cmd.new_main, 2);
	s.f.want_cmd = false;
	fsm_command_done(&s.f, 0, false, 0, s.now);
	promoted_then_followed(&s, 2, 1);
	s.now += 10000;
	step(&s);
	assert_false(s.f.want_cmd); /* no second re-run */

	/* The announced node is gone: the most advanced live standby instead. */
	sim_inherit(&s, false, 2);
	nok(&s, 2);
	s.now += 6000;
	step(&s);
	assert_true(s.f.want_cmd);
	assert_int_equal(s.f.cmd.new_main, 1);

	/* The old command promoted in time: no re-run, follow commands as after a failover. */
	sim_inherit(&s, true, 1);
	promoted_then_followed(&s, 1, 2);
	s.now += 6000;
	step(&s);
	assert_false(s.f.want_cmd);
	assert_false(has_event(&s.f, "failover_rerun", 0));

	/* Leadership lost before the grace ended: nothing runs here. */
	sim_inherit(&s, true, 1);
	fsm_inherit_drop(&s.f);
	s.now += 6000;
	step(&s);
	assert_false(s.f.want_cmd);
	assert_int_equal(s.f.op, FSM_OP_SEARCH);
}

static void test_history_ring(void **state)
{
	static struct history h;
	static struct cluster_event out[CLUSTER_HISTORY_MAX];
	struct cluster_event e = { 0 };
	int n;

	(void)state;
	history_init(&h);
	assert_int_equal(history_copy(&h, out, 10), 0);
	for (int i = 0; i < CLUSTER_HISTORY_MAX + 5; i++) {
		e.node = i;
		history_add(&h, &e);
	}
	n = history_copy(&h, out, CLUSTER_HISTORY_MAX);
	assert_int_equal(n, CLUSTER_HISTORY_MAX);
	assert_int_equal(out[0].node, 5);
	assert_int_equal(out[n - 1].node, CLUSTER_HISTORY_MAX + 4);
	n = history_copy(&h, out, 2); /* the newest two */
	assert_int_equal(out[0].node, CLUSTER_HISTORY_MAX + 3);
	assert_int_equal(out[1].node, CLUSTER_HISTORY_MAX + 4);
	history_destroy(&h);
}

static void test_view_copy_is_whole(void **state)
{
	/*
	 * Bug guarded: the manager builds, compares and publishes only the used part of its views
	 * (nodes and stats of the configured backends), so that the rest stays untouched; a copy
	 * handed out must still be the whole view, zero past n_nodes, as a full copy gave.
	 */
	static struct cluster_view v, zero;
	char err[4096];
	struct config *cfg = config_load("data/config/valid_full.conf", err, sizeof(err));
	cluster_t *c;

	(void)state;
	assert_non_null(cfg); /* 3 backends, node 2 ALWAYS_PRIMARY, health checks off */
	c = cluster_start(cfg, NULL, NULL);
	assert_non_null(c);
	memset(&v, 0xa5, sizeof(v));
	cluster_view_copy(c, &v);
	assert_true(v.seq >= 1);
	assert_int_equal(v.n_nodes, 3);
	assert_int_equal(v.primary, 2);
	assert_false(v.checks_enabled);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(v.nodes[i].status, NODE_UP);
		assert_string_equal(v.nodes[i].reason, "health checks are disabled");
	}
	assert_int_equal(v.nodes[2].role, NODE_ROLE_PRIMARY);
	assert_memory_equal(&v.nodes[3], &zero.nodes[3],
			    sizeof(v.nodes[0]) * (CLUSTER_MAX_NODES - 3));
	assert_memory_equal(&v.stats[0], &zero.stats[0], sizeof(v.stats));
	cluster_stop(c);
	config_free(cfg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_expand_table),
		cmocka_unit_test(test_expand_missing_node_and_overflow),
		cmocka_unit_test(test_env),
		cmocka_unit_test(test_runner_exit_and_output),
		cmocka_unit_test(test_runner_timeout_kills_group),
		cmocka_unit_test(test_discovery_waits_for_every_node),
		cmocka_unit_test(test_split_brain_at_start_keeps_streamed_primary),
		cmocka_unit_test(test_standby_loss_and_quarantine),
		cmocka_unit_test(test_failover_orchestration),
		cmocka_unit_test(test_search_timeout),
		cmocka_unit_test(test_flags),
		cmocka_unit_test(test_operator_commands),
		cmocka_unit_test(test_promote_only),
		cmocka_unit_test(test_auto_failback),
		cmocka_unit_test(test_checks_disabled),
		cmocka_unit_test(test_obs_from_health),
		cmocka_unit_test(test_watchdog_inherited_failover),
		cmocka_unit_test(test_history_ring),
		cmocka_unit_test(test_view_copy_is_whole),
		cmocka_unit_test(test_watchdog_adopt_down),
	};

	log_set_level(LOG_LVL_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
