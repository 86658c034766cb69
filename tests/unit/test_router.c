/*
 * Router decisions (src/route/router.c): read/write splitting and load balancing with pgpool-II
 * semantics, driven the way src/pool/client_route.c drives it: router_classify() the unit's SQL,
 * router_decide(), router_commit() the decision as it is sent, router_on_ready() with the
 * ReadyForQuery status the node answered. The config is built by hand (three nodes: 0 primary,
 * 1 and 2 standbys) and cluster views are installed with router_set_view().
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "conf/config.h"
#include "failover/cluster.h"
#include "route/classify.h"
#include "route/router.h"

#define N_NODES 3
#define T0	1000 /* CLOCK_MONOTONIC ms the tests start at */

/* ---- Fixture -------------------------------------------------------------------------------- */

struct fx {
	struct config cfg;	  /* built by hand; strings point to literals */
	struct router r;	  /* borrows cfg */
	struct cluster_view view; /* the view tests edit, then install with fx_view() */
	bool started;		  /* router_init() succeeded: teardown frees it */
	uint64_t now;		  /* the clock passed to router_on_ready() */
};

/*
 * Defaults: weights 0/1/1 (the primary takes no balanced reads), load balancing on, per-session
 * read node, disable_load_balance_on_write = transaction. read_your_writes is off here (its
 * default is on) so that tests about something else see reads balance right after a write; the
 * read-your-writes tests turn it on.
 */
static int fx_setup(void **state)
{
	struct fx *fx = calloc(1, sizeof(*fx));

	if (!fx)
		return -1;
	fx->cfg.n_backends = N_NODES;
	for (int i = 0; i < N_NODES; i++) {
		fx->cfg.backends[i].port = 5432 + i;
		fx->cfg.backends[i].weight = i == 0 ? 0.0 : 1.0;
	}
	fx->cfg.load_balance.enabled = true;
	fx->cfg.load_balance.statement_level = false;
	fx->cfg.load_balance.disable_on_write = LB_ON_WRITE_TRANSACTION;
	fx->cfg.load_balance.read_your_writes = false;
	fx->cfg.load_balance.classify_cache_size = 64;
	fx->now = T0;
	*state = fx;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *fx = *state;

	if (fx->started)
		router_free(&fx->r);
	free(fx);
	return 0;
}

/* Installs fx->view. */
static void fx_view(struct fx *fx)
{
	router_set_view(&fx->r, &fx->view);
	fx->view.seq++;
}

/* The healthy cluster: node 0 primary, 1 and 2 standbys, all up, checks on, no lag. */
static void fx_healthy_view(struct fx *fx)
{
	struct cluster_view *v = &fx->view;

	memset(v, 0, sizeof(*v));
	v->seq = 1;
	v->n_nodes = N_NODES;
	v->primary = 0;
	v->checks_enabled = true;
	for (int i = 0; i < N_NODES; i++) {
		v->nodes[i].status = NODE_UP;
		v->nodes[i].role = i == 0 ? NODE_ROLE_PRIMARY : NODE_ROLE_STANDBY;
		v->nodes[i].pg_role = v->nodes[i].role;
		v->nodes[i].pg_up = true;
	}
}

/* router_init() with fx->cfg as the test left it, then the healthy view. */
static void fx_start(struct fx *fx)
{
	char err[256] = "";

	if (!router_init(&fx->r, &fx->cfg, err, sizeof(err)))
		fail_msg("router_init: %s", err);
	fx->started = true;
	/* A fixed seed: the statistical tests are then reproducible. */
	fx->r.rng = 0x9e3779b97f4a7c15ull;
	fx_healthy_view(fx);
	fx_view(fx);
}

static void session(struct fx *fx, struct route_session *s)
{
	router_session_init(&fx->r, s, ROUTE_FORCE_AUTO, "app", "alice", "psql");
}

static void session_on(struct fx *fx, struct route_session *s, enum route_force listener)
{
	router_session_init(&fx->r, s, listener, "app", "alice", "psql");
}

static void decide(struct fx *fx, struct route_session *s, const char *sql,
		   struct route_decision *d)
{
	struct route_facts f;

	router_classify(&fx->r, sql, strlen(sql), &f);
	router_decide(&fx->r, s, &f, -1, d);
}

/* Decides sql and sends it (commits the decision); returns the node. */
static int send_sql(struct fx *fx, struct route_session *s, const char *sql)
{
	struct route_decision d;

	decide(fx, s, sql, &d);
	router_commit(&fx->r, s, &d);
	return d.node;
}

/* Sends sql, then the node answers ReadyForQuery with status (I, T or E); returns the node. */
static int run(struct fx *fx, struct route_session *s, const char *sql, char status)
{
	int node = send_sql(fx, s, sql);

	if (node >= 0)
		router_on_ready(&fx->r, s, node, status, fx->now);
	return node;
}

static bool is_standby(int node)
{
	return node == 1 || node == 2;
}

/* ---- Read/write split ----------------------------------------------------------------------- */

static void test_writes_go_to_primary(void **state)
{
	static const char *const writes[] = {
		"INSERT INTO t VALUES (1)",
		"UPDATE t SET a = a + 1 WHERE id = 3 RETURNING a",
		"SELECT * FROM t WHERE id = 1 FOR UPDATE",
		"SELECT nextval('s')",
		"DELETE FROM t",
	};
	struct fx *fx = *state;

	fx_start(fx);
	for (size_t i = 0; i < sizeof(writes) / sizeof(writes[0]); i++) {
		struct route_session s;
		struct route_decision d;

		session(fx, &s);
		decide(fx, &s, writes[i], &d);
		if (d.node != 0 || d.read || !d.wrote)
			fail_msg("\"%s\": node %d read %d wrote %d, expected the primary (0), a "
				 "write",
				 writes[i], d.node, d.read, d.wrote);
	}
}

static void test_select_goes_to_session_read_node(void **state)
{
	struct fx *fx = *state;
	struct route_session s;
	struct route_decision d;

	fx_start(fx);
	session(fx, &s);
	assert_int_equal(s.read_node, -1);
	decide(fx, &s, "SELECT * FROM t", &d);
	assert_true(is_standby(d.node));
	assert_true(d.read);
	assert_false(d.wrote);
	assert_int_equal(s.read_node, d.node);
}

static void test_read_node_chosen_once_per_session(void **state)
{
	struct fx *fx = *state;

	fx_start(fx);
	/* Several sessions, so that a per-statement choice could not pass by luck. */
	for (int k = 0; k < 10; k++) {
		struct route_session s;

		session(fx, &s);
		int first = run(fx, &s, "SELECT 1", 'I');
		assert_true(is_standby(first));
		for (int i = 0; i < 50; i++)
			assert_int_equal(run(fx, &s, "SELECT * FROM t", 'I'), first);
	}
}

static void test_statement_level_rebalances_each_read(void **state)
{
	struct fx *fx = *state;
	struct route_session s;
	int seen[N_NODES] = { 0 };

	fx->cfg.load_balance.statement_level = true;
	fx_start(fx);
	session(fx, &s);
	for (int i = 0; i < 200; i++)
		seen[run(fx, &s, "SELECT 1", 'I')]++;
	assert_int_equal(seen[0], 0);
	assert_true(seen[1] > 50);
	assert_true(seen[2] > 50);
}

static void test_load_balance_off_reads_go_to_primary(void **state)
{
	struct fx *fx = *state;
	struct route_session s;

	fx->cfg.load_balance.enabled = false;
	fx_start(fx);
	session(fx, &s);
	for (int i = 0; i < 20; i++)
		assert_int_equal(run(fx, &s, "SELECT 1", 'I'), 0);
}

static void test_commit_counts_reads_and_writes(void **state)
{
	struct fx *fx = *state;
	struct route_session s;

	fx_start(fx);
	session(fx, &s);
	int rn = run(fx, &s, "SELECT 1", 'I');
	run(fx, &s, "SELECT 2", 'I');
	run(fx, &s, "INSERT INTO t VALUES (1)", 'I');
	assert_int_equal(fx->r.select_cnt[rn], 2);
	assert_int_equal(fx->r.write_cnt[0], 1);
	assert_int_equal(fx->r.select_cnt[0], 0);
	assert_int_equal(s.read_count, 2);
}

/* ---- Weights and node status ---------------------------------------------------------------- */

static void test_weights_split_sessions(void **state)
{
	struct fx *fx = *state;
	int seen[N_NODES] = { 0 };
	const int sessions = 3000;

	fx->cfg.backends[1].weight = 1;
	fx->cfg.backends[2].weight = 3;
	fx_start(fx);
	for (int i = 0; i < sessions; i++) {
		struct route_session s;

		session(fx, &s);
		seen[run(fx, &s, "SELECT 1", 'I')]++;
	}
	assert_int_equal(seen[0], 0);
	double p1 = 100.0 * seen[1] / sessions, p2 = 100.0 * seen[2] / sessions;
	if (p1 < 20 || p1 > 30 || p2 < 70 || p2 > 80)
		fail_msg("node 1 %.1f%%, node 2 %.1f%%; expected 25%% and 75%% (+-5)", p1, p2);
}

static void test_standbys_down_reads_go_to_primary(void **state)
{
	struct fx *fx = *state;
	struct route_session s;

	fx_start(fx);
	fx->view.nodes[1].status = NODE_DOWN;
	fx->view.nodes[2].status = NODE_DOWN;
	fx_view(fx);
	session(fx, &s);
	/* The primary's weight is 0, yet it is the only node left for reads. */
	assert_int_equal(run(fx, &s, "SELECT 1", 'I'), 0);
	assert_int_equal(run(fx, &s, "SELECT 1", 'I'), 0);
}

static void test_read_node_going_down_moves_reads(void **state)
{
	struct fx *fx = *state;
	struct route_session s;

	fx_start(fx);
	session(fx, &s);
	int rn = run(fx, &s, "SELECT 1", 'I');
	assert_true(is_standby(rn));
	fx->view.nodes[rn].status = NODE_DOWN;
	fx_view(fx);
	assert_int_equal(run(fx, &s, "SELECT 1", 'I'), 3 - rn);
	/* The other one too: the primary is left. */
	fx->view.nodes[3 - rn].status = NODE_DOWN;
	fx_view(fx);
	assert_int_equal(run(fx, &s, "SELECT 1", 'I'), 0);
}

static void test_quarantined_or_down_node_never_chosen(void **state)
{
	static const enum node_status bad[] = { NODE_QUARANTINE, NODE_DOWN, NODE_UNUSED };
	static const char *const bad_name[] = { "quarantine", "down", "unused" };
	struct fx *fx = *state;

	fx_start(fx);
	for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
		fx_healthy_view(fx);
		fx->view.nodes[1].status = bad[k];
		fx_view(fx);
		for (int i = 0; i < 300; i++) {
			struct route_session s;

			session(fx, &s);
			int node = run(fx, &s, "SELECT 1", 'I');
			if (node != 2)
				fail_msg("status %s: session %d read from node %d, expected 2",
					 bad_name[k], i, node);
		}
	}
}

static void test_quarantine_moves_session_off_its_read_node(void **state)
{
	struct fx *fx = *state;
	struct route_session s;

	fx_start(fx);
	session(fx, &s);
	int rn = run(fx, &s, "SELECT 1", 'I');
	fx->view.nodes[rn].status = NODE_QUARANTINE;
	fx_view(fx);
	for (int i = 0; i < 20; i++)
		assert_int_equal(run(fx, &s, "SELECT 1", 'I'), 3 - rn);
}

static void test_waiting_node_used_only_without_checks(void **state)
{
	struct fx *fx = *state;
	int seen[N_NODES] = { 0 };

	fx_start(fx);
	fx->view.nodes[1].status = NODE_WAITING;
	fx_view(fx);
	for (int i = 0; i < 200; i++) {
		struct route_session s;

		session(fx, &s);
		assert_int_equal(run(fx, &s, "SELECT 1", 'I'), 2);
	}
	fx->view.checks_enabled = false;
	fx_view(fx);
	for (int i = 0; i < 200; i++) {
		struct route_session s;

		session(fx, &s);
		seen[run(fx, &s, "SELECT 1", 'I')]++;
	}
	assert_true(seen[1] > 50);
	assert_true(seen[2] > 50);
}

static void test_lb_weight_normalised_over_usable_nodes(void **state)
{
	struct fx *fx = *state;

	fx->cfg.backends[1].weight = 1;
	fx->cfg.backends[2].weight = 3;
	fx_start(fx);
	assert_float_equal(router_lb_weight(&fx->r, 0), 0.0, 1e-9);
	assert_float_equal(router_lb_weight(&fx->r, 1), 0.25, 1e-9);
	assert_float_equal(router_lb_weight(&fx->r, 2), 0.75, 1e-9);
	assert_float_equal(router_lb_weight(&fx->r, -1), 0.0, 1e-9);
	assert_float_equal(router_lb_weight(&fx->r, N_NODES), 0.0, 1e-9);

	fx->view.nodes[2].status = NODE_DOWN;
	fx_view(fx);
	assert_float_equal(router_lb_weight(&fx->r, 1), 1.0, 1e-9);
	assert_float_equal(router_lb_weight(&fx->r, 2), 0.0, 1e-9);

	fx->cfg.backends[0].weight = 1;
	fx_healthy_view(fx);
	fx->view.nodes[1].status = NODE_QUARANTINE;
	fx_view(fx);
	assert_float_equal(router_lb_weight(&fx->r, 0), 0.25, 1e-9);
	assert_float_equal(router_lb_weight(&fx->r, 1), 0.0, 1e-9);
	assert_float_equal(router_lb_weight(&fx->r, 2), 0.75, 1e-9);
}

/* ---- Transactions --------------------------------------------------------------------------- */

/* BEGIN, answered T: returns the transaction's node. */
static int begin(struct fx *fx, struct route_session *s, const char *sql)
{
	struct route_decision d;

	decide(fx, s, sql, &d);
	assert_true(d.starts_txn);
	router_commit(&fx->r, s, &d);
	router_on_ready(&fx->r, s, d.node, 'T', fx->now);
	return d.node;
}

static void test_txn_begin_goes_to_read_node(void **state)
{
	struct fx *fx = *state;
	struct route_session s;
	struct route_decision d;

	fx_start(fx);
	session(fx, &s);
	decide(fx, &s, "BEGIN", &d);
	assert_true(is_standby(d.node));
	assert_int_equal(d.node, s.read_node);
	assert_true(d.starts_txn);
	assert_int_equal(d.txn_node, d.node);
	assert_false(d.primary_joins);
}

static void test_txn_reads_stay_on_txn_node(void **state)
{
	struct fx *fx = *state;
	struct route_session s;

	/* Even with a choice per statement, a transaction reads from one node. */
	fx->cfg.load_balance.statement_level = true;
	fx_start(fx);
	session(fx, &s);
	int tn = begin(fx, &s, "BEGIN");
	assert_true(is_standby(tn));
	for (int i = 0; i < 30; i++)
		assert_int_equal(run(fx, &s, "SELECT * FROM t", 'T'), tn);
}

static void test_txn_first_write_joins_primary(void **state)
{
	struct fx *fx = *state;
	struct route_session s;
	struct route_decision d;

	fx_start(fx);
	session(fx, &s);
	int tn = begin(fx, &s, "BEGIN");
	run(fx, &s, "SELECT 1", 'T');
	decide(fx, &s, "INSERT INTO t VALUES (1)", &d);
	assert_int_equal(d.node, 0);
	assert_true(d.join_primary);
	assert_true(d.wrote);
	assert_false(d.read);
	/* Deciding changed nothing: deciding again gives the same. */
	decide(fx, &s, "INSERT INTO t VALUES (1)", &d);
	assert_true(d.join_primary);
	assert_int_equal(run(fx, &s, "SELECT 1", 'T'), tn);
}

static void test_txn_reads_after_write_go_to_primary(void **state)
{
	struct fx *fx = *state;
	struct route_session s;
	struct route_decision d;

	fx_start(fx);
	session(fx, &s);
	begin(fx, &s, "BEGIN");
	assert_int_equal(run(fx, &s, "UPDATE t SET a = 1", 'T'), 0);
	for (int i = 0; i < 5; i++)
		assert_int_equal(run(fx, &s, "SELECT * FROM t", 'T'), 0);
	/* The primary has joined already. */
	decide(fx, &s, "INSERT INTO t VALUES (2)", &d);
	assert_int_equal(d.node, 0);
	assert_false(d.join_primary);
}

static void test_txn_end_balances_again(void **state)
{
	struct fx *fx = *state;
	struct route_session s;

	fx_start(fx);
	session(fx, &s);
	int tn = begin(fx, &s, "BEGIN");
	run(fx, &s, "INSERT INTO t VALUES (1)", 'T');
	assert_int_equal(run(fx, &s, "SELECT 1", 'T'), 0);
	assert_int_equal(run(fx, &s, "COMMIT", 'I'), 0);
	assert_false(s.in_txn);
	assert_false(s.primary_only);
	assert_int_equal(run(fx, &s, "SELECT 1", 'I'), tn);
	/* And the next transaction starts on the read node again. */
	assert_int_equal(begin(fx, &s, "BEGIN"), tn);
	assert_int_equal(run(fx, &s, "SELECT 1", 'T'), tn);
}

static void test_txn_begin_read_only_stays_on_standby(void **state)
{
	struct fx *fx = *state;
	struct route_session s;

	fx_start(fx);
	session(fx, &s);
	int tn = begin(fx, &s, "BEGIN READ ONLY");
	assert_true(is_standby(tn));
	assert_int_equal(run(fx, &s, "SELECT 1", 'T'), tn);
	assert_int_equal(run(fx, &s, "COMMIT", 'I'), tn);
}

static void test_txn_serializable_goes_to_primary(void **state)
{
	struct fx *fx = *state;
	struct route_session s;
	struct route_decision d;

	fx_start(fx);
	session(fx, &s);
	decide(fx, &s, "BEGIN ISOLATION LEVEL SERIALIZABLE", &d);
	assert_int_equal(d.node, 0);
	assert_int_equal(d.txn_node, 0);
	assert_true(d.primary_joins);
	router_commit(&fx->r, &s, &d);
	router_on_ready(&fx->r, &s, 0, 'T', fx->now);
	assert_int_equal(run(fx, &s, "SELECT 1", 'T'), 0);
}

static void test_txn_mode_off_reads_stay_after_write(void **state)
{
	struct fx *fx = *state;
	struct route_session s;
	struct route_decision d;

	fx->cfg.load_balance.disable_on_write = LB_ON_WRITE_OFF;
	fx_start(fx);
	session(fx, &s);
	int tn = begin(fx, &s, "BEGIN");
	decide(fx, &s, "INSERT INTO t VALUES (1)", &d);
	assert_int_equal(d.node, 0);
	assert_true(d.join_primary);
	assert_false(d.txn_moves);
	router_commit(&fx->r, &s, &d);
	router_on_ready(&fx->r, &s, 0, 'T', fx->now);
	for (int i = 0; i < 5; i++)
		assert_int_equal(run(fx, &s, "SELECT * FROM t", 'T'), tn);
	/* Later writes still go to the primary, which has joined. */
	decide(fx, &s, "INSERT INTO t VALUES (2)", &d);
	assert_int_equal(d.node, 0);
	assert_false(d.join_primary);
}

static void test_txn_mode_transaction_autocommit_write_keeps_balancing(void **state)
{
	struct fx *fx = *state;
	struct route_session s;
	struct route_decision d;

	fx_start(fx);
	session(fx, &s);
	int rn = run(fx, &s, "SELECT 1", 'I');
	decide(fx, &s, "INSERT INTO t VALUES (1)", &d);
	assert_false(d.primary_only_after);
	router_commit(&fx->r, &s, &d);
	router_on_ready(&fx->r, &s, 0, 'I', fx->now);
	assert_int_equal(run(fx, &s, "SELECT 1", 'I'), rn);
}

static void test_txn_mode_trans_transaction_later_txns_on_primary(void **state)
{
	struct fx *fx = *state;
	struct route_session s;
	struct route_decision d;

	fx->cfg.load_balance.disable_on_write = LB_ON_WRITE_TRANS_TRANSACTION;
	fx_start(fx);
	session(fx, &s);
	int tn = begin(fx, &s, "BEGIN");
	assert_true(is_standby(tn));
	decide(fx, &s, "INSERT INTO t VALUES (1)", &d);
	assert_int_equal(d.node, 0);
	assert_true(d.primary_only_after);
	router_commit(&fx->r, &s, &d);
	router_on_ready(&fx->r, &s, 0, 'T', fx->now);
	assert_true(s.primary_only);
	assert_int_equal(run(fx, &s, "COMMIT", 'I'), 0);
	/* The session's later transactions read from the primary. */
	assert_int_equal(begin(fx, &s, "BEGIN"), 0);
	assert_int_equal(run(fx, &s, "SELECT 1", 'T'), 0);
	assert_int_equal(run(fx, &s, "COMMIT", 'I'), 0);
	/* Other sessions are not affected. */
	struct route_session other;
	session(fx, &other);
	assert_true(is_standby(begin(fx, &other, "BEGIN")));
}

static void test_txn_mode_always_session_reads_on_primary(void **state)
{
	struct fx *fx = *state;
	struct route_session s;
	struct route_decision d;

	fx->cfg.load_balance.disable_on_write = LB_ON_WRITE_ALWAYS;
	fx_start(fx);
	session(fx, &s);
	assert_true(is_standby(run(fx, &s, "SELECT 1", 'I')));
	decide(fx, &s, "INSERT INTO t VALUES (1)", &d);
	assert_true(d.primary_only_after);
	router_commit(&fx->r, &s, &d);
	router_on_ready(&fx->r, &s, 0, 'I', fx->now);
	for (int i = 0; i < 5; i++)
		assert_int_equal(run(fx, &s, "SELECT 1", 'I'), 0);
	assert_int_equal(begin(fx, &s, "BEGIN"), 0);
	assert_int_equal(run(fx, &s, "SELECT 1", 'T'), 0);
	assert_int_equal(run(fx, &s, "COMMIT", 'I'), 0);
	/* Only this session. */
	struct route_session other;
	session(fx, &other);
	assert_true(is_standby(run(fx, &other, "SELECT 1", 'I')));
}

/* Same after a write inside an explicit transaction on a standby. */
static void test_txn_mode_always_write_in_txn(void **state)
{
	struct fx *fx = *state;
	struct route_session s;

	fx->cfg.load_balance.disable_on_write = LB_ON_WRITE_ALWAYS;
	fx_start(fx);
	session(fx, &s);
	assert_true(is_standby(begin(fx, &s, "BEGIN")));
	run(fx, &s, "INSERT INTO t VALUES (1)", 'T');
	run(fx, &s, "COMMIT", 'I');
	assert_true(s.primary_only);
	assert_int_equal(run(fx, &s, "SELECT 1", 'I'), 0);
}

/*
 * Bug guarded: a write in a transaction that already runs on the primary (here SERIALIZABLE) does
 * not set primary_only under trans_transaction/always, so the session balances again afterwards.
 */
static void test_write_in_primary_txn_sets_primary_only(void **state)
{
	static const enum lb_on_write modes[] = { LB_ON_WRITE_TRANS_TRANSACTION,
						  LB_ON_WRITE_ALWAYS };
	struct fx *fx = *state;

	fx_start(fx);
	for (size_t k = 0; k < sizeof(modes) / sizeof(modes[0]); k++) {
		struct route_session s;
		struct route_decision d;

		fx->cfg.load_balance.disable_on_write = modes[k];
		session(fx, &s);
		assert_int_equal(begin(fx, &s, "BEGIN ISOLATION LEVEL SERIALIZABLE"), 0);
		decide(fx, &s, "INSERT INTO t VALUES (1)", &d);
		assert_int_equal(d.node, 0);
		/* Intended: the write makes the rest of the session read from the primary. */
		assert_true(d.primary_only_after);
		router_commit(&fx->r, &s, &d);
		router_on_ready(&fx->r, &s, 0, 'T', fx->now);
		run(fx, &s, "COMMIT", 'I');
		assert_int_equal(begin(fx, &s, "BEGIN"), 0);
		run(fx, &s, "COMMIT", 'I');
	}
}

static void test_failed_txn_routes_to_failed_node(void **state)
{
	struct fx *fx = *state;
	struct route_session s;

	fx_start(fx);
	session(fx, &s);
	int tn = begin(fx, &s, "BEGIN");
	assert_int_equal(run(fx, &s, "SELECT 1/0", 'E'), tn);
	assert_true(s.txn_failed);
	assert_int_equal(s.failed_node, tn);
	assert_int_equal(run(fx, &s, "ROLLBACK", 'I'), tn);
	assert_false(s.in_txn);
	assert_int_equal(s.failed_node, -1);
}

static void test_failed_txn_on_primary_routes_to_primary(void **state)
{
	struct fx *fx = *state;
	struct route_session s;

	fx_start(fx);
	session(fx, &s);
	begin(fx, &s, "BEGIN");
	assert_int_equal(run(fx, &s, "INSERT INTO t VALUES (1)", 'E'), 0);
	assert_int_equal(s.failed_node, 0);
	/* Whatever the statement, it goes where the transaction failed. */
	assert_int_equal(send_sql(fx, &s, "SELECT 1"), 0);
	router_on_ready(&fx->r, &s, 0, 'E', fx->now);
	assert_int_equal(s.failed_node, 0);
	assert_int_equal(run(fx, &s, "ROLLBACK", 'I'), 0);
}

/* ---- Read your writes ----------------------------------------------------------------------- */

/* A session that read once (so its read node is known) and then wrote, idle at T0. */
static int ryw_session(struct fx *fx, struct route_session *s)
{
	session(fx, s);
	int rn = run(fx, s, "SELECT 1", 'I');
	assert_true(is_standby(rn));
	fx->now = T0;
	assert_int_equal(run(fx, s, "INSERT INTO t VALUES (1)", 'I'), 0);
	assert_int_equal(s->written_at, T0);
	return rn;
}

static void add_sample(struct fx *fx, uint64_t at_ms, uint64_t lsn)
{
	struct cluster_view *v = &fx->view;

	assert_true(v->n_lsn_samples < CLUSTER_LSN_SAMPLES);
	v->lsn_samples[v->n_lsn_samples].at_ms = at_ms;
	v->lsn_samples[v->n_lsn_samples].lsn = lsn;
	v->n_lsn_samples++;
}

static void test_ryw_reads_primary_until_standby_caught_up(void **state)
{
	struct fx *fx = *state;
	struct route_session s;

	fx->cfg.load_balance.read_your_writes = true;
	fx_start(fx);
	int rn = ryw_session(fx, &s);
	/* No sample after the write yet. */
	assert_int_equal(run(fx, &s, "SELECT 1", 'I'), 0);
	/* A sample after it, not replayed yet. */
	add_sample(fx, T0 + 5, 0x5000);
	fx->view.nodes[rn].replay_lsn = 0x4fff;
	fx_view(fx);
	assert_int_equal(run(fx, &s, "SELECT 1", 'I'), 0);
	assert_false(router_standby_fresh(&fx->r, &s, rn));
	/* Replayed. */
	fx->view.nodes[rn].replay_lsn = 0x5000;
	fx_view(fx);
	assert_true(router_standby_fresh(&fx->r, &s, rn));
	assert_int_equal(run(fx, &s, "SELECT 1", 'I'), rn);
}

static void test_ryw_sample_not_after_write_does_not_count(void **state)
{
	struct fx *fx = *state;
	struct route_session s;

	fx->cfg.load_balance.read_your_writes = true;
	fx_start(fx);
	int rn = ryw_session(fx, &s);
	/* Samples older than the write, and one taken in its very millisecond. */
	add_sample(fx, T0 - 100, 0x100);
	add_sample(fx, T0, 0x200);
	fx->view.nodes[rn].replay_lsn = 0x10000;
	fx->view.nodes[3 - rn].replay_lsn = 0x10000;
	fx_view(fx);
	assert_int_equal(run(fx, &s, "SELECT 1", 'I'), 0);
	/* The first sample after the write is the one that counts. */
	add_sample(fx, T0 + 1, 0x300);
	fx_view(fx);
	assert_int_equal(run(fx, &s, "SELECT 1", 'I'), rn);
}

static void test_ryw_other_sessions_unaffected(void **state)
{
	struct fx *fx = *state;
	struct route_session s, other;

	fx->cfg.load_balance.read_your_writes = true;
	fx_start(fx);
	ryw_session(fx, &s);
	session(fx, &other);
	assert_true(is_standby(run(fx, &other, "SELECT 1", 'I')));
}

static void test_ryw_disabled(void **state)
{
	struct fx *fx = *state;
	struct route_session s;

	fx->cfg.load_balance.read_your_writes = false;
	fx_start(fx);
	session(fx, &s);
	int rn = run(fx, &s, "SELECT 1", 'I');
	run(fx, &s, "INSERT INTO t VALUES (1)", 'I');
	assert_int_equal(s.written_at, 0);
	assert_int_equal(run(fx, &s, "SELECT 1", 'I'), rn);
}

/* ---- Replication delay ---------------------------------------------------------------------- */

static void test_delay_threshold_lagging_standbys_get_no_reads(void **state)
{
	struct fx *fx = *state;

	fx->cfg.load_balance.delay_threshold = 1000;
	fx_start(fx);
	fx->view.nodes[1].replication_delay = 5000;
	fx->view.nodes[2].replication_delay = 1001;
	fx_view(fx);
	for (int i = 0; i < 50; i++) {
		struct route_session s;

		session(fx, &s);
		assert_int_equal(run(fx, &s, "SELECT 1", 'I'), 0);
	}
	/* At the threshold is fine. */
	fx->view.nodes[2].replication_delay = 1000;
	fx_view(fx);
	for (int i = 0; i < 50; i++) {
		struct route_session s;

		session(fx, &s);
		assert_int_equal(run(fx, &s, "SELECT 1", 'I'), 2);
	}
}

static void test_delay_threshold_read_node_lagging_reads_primary(void **state)
{
	struct fx *fx = *state;
	struct route_session s;

	fx->cfg.load_balance.delay_threshold = 1000;
	fx_start(fx);
	session(fx, &s);
	int rn = run(fx, &s, "SELECT 1", 'I');
	fx->view.nodes[rn].replication_delay = 5000;
	fx_view(fx);
	assert_int_equal(run(fx, &s, "SELECT 1", 'I'), 0);
	/* Caught up again: back to its read node. */
	fx->view.nodes[rn].replication_delay = 10;
	fx_view(fx);
	assert_int_equal(run(fx, &s, "SELECT 1", 'I'), rn);
}

static void test_delay_threshold_by_time(void **state)
{
	struct fx *fx = *state;
	struct route_session s;

	fx->cfg.load_balance.delay_threshold_by_time_ms = 2000;
	fx_start(fx);
	session(fx, &s);
	int rn = run(fx, &s, "SELECT 1", 'I');
	fx->view.nodes[rn].has_delay_time = true;
	fx->view.nodes[rn].delay_s = 2.5;
	fx->view.nodes[rn].replication_delay = 100; /* behind, and for 2.5 s */
	fx_view(fx);
	assert_int_equal(run(fx, &s, "SELECT 1", 'I'), 0);
	fx->view.nodes[rn].delay_s = 1.5;
	fx_view(fx);
	assert_int_equal(run(fx, &s, "SELECT 1", 'I'), rn);
	/* Caught up (no byte behind): an old last commit only means the primary is idle. */
	fx->view.nodes[rn].delay_s = 60;
	fx->view.nodes[rn].replication_delay = 0;
	fx_view(fx);
	assert_int_equal(run(fx, &s, "SELECT 1", 'I'), rn);
}

static void test_prefer_lower_delay_standby_uses_least_lagging(void **state)
{
	struct fx *fx = *state;
	struct route_session s;

	fx->cfg.load_balance.delay_threshold = 1000;
	fx->cfg.load_balance.prefer_lower_delay_standby = true;
	fx_start(fx);
	session(fx, &s);
	int rn = run(fx, &s, "SELECT 1", 'I');
	fx->view.nodes[rn].replication_delay = 5000;
	fx->view.nodes[3 - rn].replication_delay = 800;
	fx_view(fx);
	assert_int_equal(run(fx, &s, "SELECT 1", 'I'), 3 - rn);
	/* Both beyond the threshold: the primary. */
	fx->view.nodes[3 - rn].replication_delay = 1500;
	fx_view(fx);
	assert_int_equal(run(fx, &s, "SELECT 1", 'I'), 0);
}

/* ---- Forced routes -------------------------------------------------------------------------- */

static void test_listener_primary_sends_reads_to_primary(void **state)
{
	struct fx *fx = *state;
	struct route_session s;

	fx_start(fx);
	session_on(fx, &s, ROUTE_FORCE_PRIMARY);
	for (int i = 0; i < 10; i++)
		assert_int_equal(run(fx, &s, "SELECT 1", 'I'), 0);
	assert_int_equal(begin(fx, &s, "BEGIN READ ONLY"), 0);
	assert_int_equal(run(fx, &s, "SELECT 1", 'T'), 0);
}

static void test_listener_standby_sends_writes_to_standby(void **state)
{
	struct fx *fx = *state;
	struct route_session s;

	fx_start(fx);
	session_on(fx, &s, ROUTE_FORCE_STANDBY);
	int node = run(fx, &s, "INSERT INTO t VALUES (1)", 'I');
	assert_true(is_standby(node));
	assert_int_equal(run(fx, &s, "SELECT 1", 'I'), node);
	assert_int_equal(router_read_node(&fx->r, &s), node);
}

static void test_listener_standby_no_standby_gives_no_node(void **state)
{
	struct fx *fx = *state;
	struct route_session s;
	struct route_decision d;

	fx_start(fx);
	fx->view.nodes[1].status = NODE_DOWN;
	fx->view.nodes[2].status = NODE_QUARANTINE;
	fx_view(fx);
	session_on(fx, &s, ROUTE_FORCE_STANDBY);
	decide(fx, &s, "SELECT 1", &d);
	assert_int_equal(d.node, ROUTER_NO_NODE);
	decide(fx, &s, "INSERT INTO t VALUES (1)", &d);
	assert_int_equal(d.node, ROUTER_NO_NODE);
}

/*
 * Bug guarded: with a primary weight above 0, a standby-only session falls back to the weighted
 * choice over every node and is sent to the primary when no standby is usable.
 */
static void test_listener_standby_never_falls_back_to_primary(void **state)
{
	struct fx *fx = *state;
	struct route_session s;
	struct route_decision d;

	fx->cfg.backends[0].weight = 1;
	fx_start(fx);
	fx->view.nodes[1].status = NODE_DOWN;
	fx->view.nodes[2].status = NODE_DOWN;
	fx_view(fx);
	session_on(fx, &s, ROUTE_FORCE_STANDBY);
	decide(fx, &s, "INSERT INTO t VALUES (1)", &d);
	/* Intended: a standby-only port never writes to (or reads from) the primary. */
	assert_int_equal(d.node, ROUTER_NO_NODE);
	decide(fx, &s, "SELECT 1", &d);
	assert_int_equal(d.node, ROUTER_NO_NODE);
}

/*
 * Bug guarded: standbys with weight 0 are up, yet a standby-only session is sent to
 * the primary (weight 1); the least-lagging-standby fallback is never reached.
 */
static void test_listener_standby_zero_weight_standbys_still_used(void **state)
{
	struct fx *fx = *state;
	struct route_session s;
	struct route_decision d;

	fx->cfg.backends[0].weight = 1;
	fx->cfg.backends[1].weight = 0;
	fx->cfg.backends[2].weight = 0;
	fx_start(fx);
	session_on(fx, &s, ROUTE_FORCE_STANDBY);
	decide(fx, &s, "INSERT INTO t VALUES (1)", &d);
	/* Intended: a standby (weights only shape the choice among standbys). */
	assert_true(is_standby(d.node));
}

static void test_hint_primary_sends_read_to_primary(void **state)
{
	struct fx *fx = *state;
	struct route_session s;

	fx_start(fx);
	session(fx, &s);
	int rn = run(fx, &s, "SELECT 1", 'I');
	assert_int_equal(run(fx, &s, "/*+ pgrelay: primary */ SELECT 1", 'I'), 0);
	assert_int_equal(run(fx, &s, "SELECT 1", 'I'), rn);
}

static void test_hint_standby_sends_write_to_standby(void **state)
{
	struct fx *fx = *state;
	struct route_session s;

	fx_start(fx);
	session(fx, &s);
	int rn = run(fx, &s, "SELECT 1", 'I');
	assert_int_equal(run(fx, &s, "/*+ pgrelay: standby */ SELECT nextval('s')", 'I'), rn);
	assert_int_equal(run(fx, &s, "/*+ pgrelay: standby */ SELECT 1", 'I'), rn);
}

static void test_hint_standby_on_primary_only_session(void **state)
{
	struct fx *fx = *state;
	struct route_session s;

	fx->cfg.load_balance.disable_on_write = LB_ON_WRITE_ALWAYS;
	fx_start(fx);
	session(fx, &s);
	run(fx, &s, "INSERT INTO t VALUES (1)", 'I');
	assert_int_equal(run(fx, &s, "SELECT 1", 'I'), 0);
	/* The hint is the user's explicit choice. */
	assert_true(is_standby(run(fx, &s, "/*+ pgrelay: standby */ SELECT 1", 'I')));
}

/*
 * Bug guarded: a primary hint inside a transaction that reads from a standby is sent to the
 * primary without the primary joining the transaction (no BEGIN replay), so it runs outside the
 * client's transaction.
 */
static void test_hint_primary_in_standby_txn_joins_primary(void **state)
{
	struct fx *fx = *state;
	struct route_session s;
	struct route_decision d;

	fx_start(fx);
	session(fx, &s);
	assert_true(is_standby(begin(fx, &s, "BEGIN")));
	decide(fx, &s, "/*+ pgrelay: primary */ INSERT INTO t VALUES (1)", &d);
	assert_int_equal(d.node, 0);
	/* Intended: like an unhinted write in the transaction. */
	assert_true(d.join_primary);
	assert_true(d.primary_joins);
}

/*
 * Bug guarded: the forced-primary branch also skips primary_only_after, so a write
 * hinted to the primary under disable_load_balance_on_write = always does not pin the session.
 */
static void test_hint_primary_write_under_always_pins_session(void **state)
{
	struct fx *fx = *state;
	struct route_session s;
	struct route_decision d;

	fx->cfg.load_balance.disable_on_write = LB_ON_WRITE_ALWAYS;
	fx_start(fx);
	session(fx, &s);
	decide(fx, &s, "/*+ pgrelay: primary */ INSERT INTO t VALUES (1)", &d);
	assert_int_equal(d.node, 0);
	/* Intended: like the same write without the hint. */
	assert_true(d.primary_only_after);
	router_commit(&fx->r, &s, &d);
	router_on_ready(&fx->r, &s, 0, 'I', fx->now);
	assert_int_equal(run(fx, &s, "SELECT 1", 'I'), 0);
}

/* ---- No primary ----------------------------------------------------------------------------- */

static void test_no_primary_writes_get_no_node(void **state)
{
	struct fx *fx = *state;
	struct route_session s;
	struct route_decision d;

	fx_start(fx);
	fx->view.primary = -1;
	fx->view.failing_over = true;
	fx->view.nodes[0].role = NODE_ROLE_UNKNOWN;
	fx->view.nodes[0].status = NODE_DOWN;
	fx_view(fx);
	assert_int_equal(router_primary(&fx->r), ROUTER_NO_NODE);
	session(fx, &s);
	decide(fx, &s, "INSERT INTO t VALUES (1)", &d);
	assert_int_equal(d.node, ROUTER_NO_NODE);
	/* Reads still have their standbys. */
	decide(fx, &s, "SELECT 1", &d);
	assert_true(is_standby(d.node));
}

static void test_primary_down_writes_get_no_node(void **state)
{
	struct fx *fx = *state;
	struct route_session s;
	struct route_decision d;

	fx_start(fx);
	fx->view.nodes[0].status = NODE_DOWN;
	fx_view(fx);
	assert_int_equal(router_primary(&fx->r), ROUTER_NO_NODE);
	session(fx, &s);
	decide(fx, &s, "UPDATE t SET a = 1", &d);
	assert_int_equal(d.node, ROUTER_NO_NODE);
	decide(fx, &s, "SELECT 1", &d);
	assert_true(is_standby(d.node));
}

/* ---- Redirect preference lists and patterns ---------------------------------------------------
 */

static void test_parse_redirects_accepts_pgpool_syntax(void **state)
{
	struct redirect_list l;
	char err[256] = "";

	(void)state;
	if (!router_parse_redirects("postgres:primary,app.*:standby,db2:2(0.5)", &l, err,
				    sizeof(err)))
		fail_msg("rejected: %s", err);
	assert_int_equal(l.n, 3);
	assert_int_equal(l.rules[0].target, REDIRECT_PRIMARY);
	assert_float_equal(l.rules[0].weight, 1.0, 1e-12);
	assert_int_equal(l.rules[1].target, REDIRECT_STANDBY);
	assert_int_equal(l.rules[2].target, 2);
	assert_float_equal(l.rules[2].weight, 0.5, 1e-12);
	router_free_redirects(&l);

	/* Blanks around entries, an empty entry, a pattern with a colon (the last one splits). */
	if (!router_parse_redirects(" a:1 , ,b:c:0(0) ", &l, err, sizeof(err)))
		fail_msg("rejected: %s", err);
	assert_int_equal(l.n, 2);
	assert_int_equal(l.rules[0].target, 1);
	assert_int_equal(l.rules[1].target, 0);
	assert_float_equal(l.rules[1].weight, 0.0, 1e-12);
	assert_int_equal(regexec(&l.rules[1].re, "b:c", 0, NULL, 0), 0);
	router_free_redirects(&l);

	assert_true(router_parse_redirects("", &l, err, sizeof(err)));
	assert_int_equal(l.n, 0);
	assert_true(router_parse_redirects(NULL, &l, err, sizeof(err)));
	assert_int_equal(l.n, 0);
}

static void test_parse_redirects_rejects_bad_syntax(void **state)
{
	static const char *const bad[] = {
		"postgres",		/* no colon */
		"postgres:primary,db2", /* second entry has no colon */
		":primary",		/* no pattern */
		"db:",			/* no node */
		"db:1(1.5)",		/* weight > 1 */
		"db:1(-0.1)",		/* weight < 0 */
		"db:1(0.5",		/* unclosed */
		"db:1(0.5)x",		/* trailing text */
		"db:1()",		/* empty weight */
		"db:1(abc)",		/* not a number */
		"db:replica",		/* not primary, standby or an id */
		"db:-1",		/* negative id */
		"db:64",		/* beyond CONFIG_MAX_BACKENDS */
		"db:1x",		/* trailing text after the id */
		"db(:1",		/* bad regular expression */
	};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct redirect_list l;
		char err[256] = "";

		if (router_parse_redirects(bad[i], &l, err, sizeof(err))) {
			router_free_redirects(&l);
			fail_msg("\"%s\" accepted", bad[i]);
		}
		assert_int_equal(l.n, 0);
		assert_true(err[0] != '\0');
	}
}

/* Bug guarded: strtod() accepts "nan", and NaN passes "weight < 0 || weight > 1". */
static void test_parse_redirects_rejects_nan_weight(void **state)
{
	struct redirect_list l;
	char err[256] = "";

	(void)state;
	if (router_parse_redirects("db:1(nan)", &l, err, sizeof(err))) {
		router_free_redirects(&l);
		fail_msg("\"db:1(nan)\" accepted; the weight must be a number in 0 .. 1");
	}
}

static void test_bad_redirect_list_fails_init(void **state)
{
	struct fx *fx = *state;
	struct router r;
	char err[256] = "";

	fx->cfg.load_balance.database_redirect_preference_list = "postgres";
	assert_false(router_init(&r, &fx->cfg, err, sizeof(err)));
	assert_non_null(strstr(err, "database_redirect_preference_list"));
}

static void test_redirect_database_to_primary(void **state)
{
	struct fx *fx = *state;
	struct route_session s;

	fx->cfg.load_balance.database_redirect_preference_list = "postgres:primary";
	fx_start(fx);
	router_session_init(&fx->r, &s, ROUTE_FORCE_AUTO, "postgres", "alice", "psql");
	assert_int_equal(s.redirect_target, REDIRECT_PRIMARY);
	for (int i = 0; i < 10; i++)
		assert_int_equal(run(fx, &s, "SELECT 1", 'I'), 0);
	/* Matched whole: "postgres2" is another database. */
	router_session_init(&fx->r, &s, ROUTE_FORCE_AUTO, "postgres2", "alice", "psql");
	assert_int_equal(s.redirect_target, -1);
	assert_true(is_standby(run(fx, &s, "SELECT 1", 'I')));
}

static void test_redirect_app_name_precedes_database(void **state)
{
	struct fx *fx = *state;
	struct route_session s;

	fx->cfg.load_balance.database_redirect_preference_list = "postgres:primary";
	fx->cfg.load_balance.app_name_redirect_preference_list = "report.*:2";
	fx_start(fx);
	for (int i = 0; i < 20; i++) {
		router_session_init(&fx->r, &s, ROUTE_FORCE_AUTO, "postgres", "alice", "reporting");
		assert_int_equal(run(fx, &s, "SELECT 1", 'I'), 2);
	}
}

static void test_redirect_weight_is_chance_of_following(void **state)
{
	struct fx *fx = *state;
	int seen[N_NODES] = { 0 };
	const int sessions = 2000;

	fx->cfg.backends[2].weight = 0; /* without the rule, every read goes to node 1 */
	fx->cfg.load_balance.database_redirect_preference_list = "db2:2(0.5)";
	fx_start(fx);
	for (int i = 0; i < sessions; i++) {
		struct route_session s;

		router_session_init(&fx->r, &s, ROUTE_FORCE_AUTO, "db2", "alice", "psql");
		seen[run(fx, &s, "SELECT 1", 'I')]++;
	}
	assert_int_equal(seen[0], 0);
	double p2 = 100.0 * seen[2] / sessions;
	if (p2 < 45 || p2 > 55)
		fail_msg("node 2 %.1f%% of sessions, expected 50%% (+-5)", p2);
}

static void test_primary_routing_pattern_sends_select_to_primary(void **state)
{
	struct fx *fx = *state;
	struct route_session s;
	struct route_facts f;
	const char *sql = "SELECT relname FROM pg_class WHERE oid = 1259";

	fx->cfg.load_balance.primary_routing_query_pattern_list = ".*pg_class.*";
	fx_start(fx);
	router_classify(&fx->r, sql, strlen(sql), &f);
	assert_int_equal(f.route, ROUTE_PRIMARY);
	assert_true(f.pattern_primary);
	session(fx, &s);
	int rn = run(fx, &s, "SELECT 1", 'I');
	assert_int_equal(run(fx, &s, sql, 'I'), 0);
	assert_int_equal(run(fx, &s, "SELECT * FROM PG_CLASS", 'I'), 0); /* case-insensitive */
	assert_int_equal(run(fx, &s, "SELECT * FROM pg_attribute", 'I'), rn);
}

/*
 * Bug guarded: the router treats every ROUTE_PRIMARY unit as a write (d.wrote = route == PRIMARY)
 * instead of using CLASSIFY_WRITE, so a read sent to the primary by the pattern list starts a
 * read-your-writes wait, moves an open transaction and, under "always", pins the session.
 */
static void test_pattern_primary_read_is_not_a_write(void **state)
{
	struct fx *fx = *state;
	struct route_session s;
	struct route_decision d;
	const char *sql = "SELECT relname FROM pg_class";

	fx->cfg.load_balance.primary_routing_query_pattern_list = ".*pg_class.*";
	fx->cfg.load_balance.read_your_writes = true;
	fx->cfg.load_balance.disable_on_write = LB_ON_WRITE_ALWAYS;
	fx_start(fx);
	session(fx, &s);
	int rn = run(fx, &s, "SELECT 1", 'I');
	decide(fx, &s, sql, &d);
	assert_int_equal(d.node, 0);
	/* Intended: a read on the primary is not a write. */
	assert_false(d.wrote);
	assert_false(d.primary_only_after);
	router_commit(&fx->r, &s, &d);
	router_on_ready(&fx->r, &s, 0, 'I', fx->now);
	assert_int_equal(run(fx, &s, "SELECT 1", 'I'), rn);
}

/* Bug guarded: a SELECT hinted to the primary has no CLASSIFY_WRITE either. */
static void test_hint_primary_read_is_not_a_write(void **state)
{
	struct fx *fx = *state;
	struct route_session s;
	struct route_decision d;

	fx->cfg.load_balance.read_your_writes = true;
	fx_start(fx);
	session(fx, &s);
	int rn = run(fx, &s, "SELECT 1", 'I');
	decide(fx, &s, "/*+ pgrelay: primary */ SELECT 1", &d);
	assert_int_equal(d.node, 0);
	/* Intended: the hint moves the read, it does not make it a write. */
	assert_false(d.wrote);
	router_commit(&fx->r, &s, &d);
	router_on_ready(&fx->r, &s, 0, 'I', fx->now);
	assert_int_equal(run(fx, &s, "SELECT 1", 'I'), rn);
}

/* ---- Cursors -------------------------------------------------------------------------------- */

/* FETCH goes where the cursor was declared, even after a write moved the transaction. */
static void test_cursor_fetch_follows_its_node(void **state)
{
	struct fx *fx = *state;
	struct route_session s;

	fx_start(fx);
	session(fx, &s);
	assert_null(s.cursors); /* made at the first DECLARE only */
	int tn = begin(fx, &s, "BEGIN");
	assert_true(is_standby(tn));
	assert_int_equal(run(fx, &s, "DECLARE c CURSOR FOR SELECT * FROM t", 'T'), tn);
	assert_non_null(s.cursors);
	assert_int_equal(run(fx, &s, "INSERT INTO t VALUES (1)", 'T'), 0);
	assert_int_equal(run(fx, &s, "FETCH 5 FROM c", 'T'), tn);
	assert_int_equal(run(fx, &s, "COMMIT", 'I'), 0);
	/* The ring is emptied at the transaction's end but kept for the next one. */
	assert_non_null(s.cursors);
	assert_int_equal(s.cursors->n, 0);
	router_session_release(&s);
	assert_null(s.cursors);
	router_session_release(&s); /* twice is harmless */
}

/* The ring keeps the last ROUTER_MAX_CURSORS cursors; an older one's FETCH follows the
 * transaction (the primary, after a write). */
static void test_cursor_ring_forgets_the_oldest(void **state)
{
	struct fx *fx = *state;
	struct route_session s;
	char sql[64];

	fx_start(fx);
	session(fx, &s);
	int tn = begin(fx, &s, "BEGIN");
	for (int i = 0; i <= ROUTER_MAX_CURSORS; i++) {
		snprintf(sql, sizeof(sql), "DECLARE c%d CURSOR FOR SELECT * FROM t", i);
		assert_int_equal(run(fx, &s, sql, 'T'), tn);
	}
	assert_int_equal(s.cursors->n, ROUTER_MAX_CURSORS);
	assert_int_equal(run(fx, &s, "INSERT INTO t VALUES (1)", 'T'), 0);
	assert_int_equal(run(fx, &s, "FETCH 1 FROM c0", 'T'), 0);
	assert_int_equal(run(fx, &s, "FETCH 1 FROM c1", 'T'), tn);
	snprintf(sql, sizeof(sql), "FETCH 1 FROM c%d", ROUTER_MAX_CURSORS);
	assert_int_equal(run(fx, &s, sql, 'T'), tn);
	router_session_release(&s);
}

#define T(f) cmocka_unit_test_setup_teardown(f, fx_setup, fx_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		/* read/write split */
		T(test_writes_go_to_primary),
		T(test_select_goes_to_session_read_node),
		T(test_read_node_chosen_once_per_session),
		T(test_statement_level_rebalances_each_read),
		T(test_load_balance_off_reads_go_to_primary),
		T(test_commit_counts_reads_and_writes),
		/* weights and node status */
		T(test_weights_split_sessions),
		T(test_standbys_down_reads_go_to_primary),
		T(test_read_node_going_down_moves_reads),
		T(test_quarantined_or_down_node_never_chosen),
		T(test_quarantine_moves_session_off_its_read_node),
		T(test_waiting_node_used_only_without_checks),
		T(test_lb_weight_normalised_over_usable_nodes),
		/* transactions */
		T(test_txn_begin_goes_to_read_node),
		T(test_txn_reads_stay_on_txn_node),
		T(test_txn_first_write_joins_primary),
		T(test_txn_reads_after_write_go_to_primary),
		T(test_txn_end_balances_again),
		T(test_txn_begin_read_only_stays_on_standby),
		T(test_txn_serializable_goes_to_primary),
		T(test_txn_mode_off_reads_stay_after_write),
		T(test_txn_mode_transaction_autocommit_write_keeps_balancing),
		T(test_txn_mode_trans_transaction_later_txns_on_primary),
		T(test_txn_mode_always_session_reads_on_primary),
		T(test_txn_mode_always_write_in_txn),
		T(test_write_in_primary_txn_sets_primary_only),
		T(test_failed_txn_routes_to_failed_node),
		T(test_failed_txn_on_primary_routes_to_primary),
		/* read your writes */
		T(test_ryw_reads_primary_until_standby_caught_up),
		T(test_ryw_sample_not_after_write_does_not_count),
		T(test_ryw_other_sessions_unaffected),
		T(test_ryw_disabled),
		/* replication delay */
		T(test_delay_threshold_lagging_standbys_get_no_reads),
		T(test_delay_threshold_read_node_lagging_reads_primary),
		T(test_delay_threshold_by_time),
		T(test_prefer_lower_delay_standby_uses_least_lagging),
		/* forced routes */
		T(test_listener_primary_sends_reads_to_primary),
		T(test_listener_standby_sends_writes_to_standby),
		T(test_listener_standby_no_standby_gives_no_node),
		T(test_listener_standby_never_falls_back_to_primary),
		T(test_listener_standby_zero_weight_standbys_still_used),
		T(test_hint_primary_sends_read_to_primary),
		T(test_hint_standby_sends_write_to_standby),
		T(test_hint_standby_on_primary_only_session),
		T(test_hint_primary_in_standby_txn_joins_primary),
		T(test_hint_primary_write_under_always_pins_session),
		/* no primary */
		T(test_no_primary_writes_get_no_node),
		T(test_primary_down_writes_get_no_node),
		/* redirect lists and patterns */
		T(test_parse_redirects_accepts_pgpool_syntax),
		T(test_parse_redirects_rejects_bad_syntax),
		T(test_parse_redirects_rejects_nan_weight),
		T(test_bad_redirect_list_fails_init),
		T(test_redirect_database_to_primary),
		T(test_redirect_app_name_precedes_database),
		T(test_redirect_weight_is_chance_of_following),
		T(test_primary_routing_pattern_sends_select_to_primary),
		T(test_pattern_primary_read_is_not_a_write),
		T(test_hint_primary_read_is_not_a_write),
		/* cursors */
		T(test_cursor_fetch_follows_its_node),
		T(test_cursor_ring_forgets_the_oldest),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
