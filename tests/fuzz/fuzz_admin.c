/*
 * libFuzzer harness for the SQL admin interface (src/admin/admin.c): admin_match_route_setting
 * and admin_answer, on a Query body as a client sends it. Which statements reach them is the
 * classifier's fact (CLASSIFY_ADMIN), fuzzed by fuzz_classify.
 *
 * Input: a flags byte, then the statement bytes, passed in a buffer of exactly their size and
 * with exactly their length: no NUL is added, so a read past the text is an ASan error (the
 * admin module's contract: sql need not be NUL-terminated). Flags: bit 0 the client is in
 * admin_users, bit 1 in stats_users, bit 2 load balancing on, bit 3 a cluster manager exists,
 * bit 4 it accepts node commands, bit 5 the client is in a transaction.
 *
 * admin_answer runs against a minimal stub session: one worker with two nodes, one other active
 * client and one pool, and stubs for the cluster manager, the health statistics and the router
 * (their own modules; the classifier has fuzz_classify). Every answer must be a sequence of
 * well-formed backend messages (src/protocol/frame.c) ending in one ReadyForQuery with the
 * session's transaction status.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "admin/admin.h"
#include "failover/cluster.h"
#include "failover/watchdog.h"
#include "health/health.h"
#include "pool/client.h"
#include "pool/pool.h"
#include "pool/worker.h"
#include "protocol/builder.h"
#include "protocol/frame.h"
#include "protocol/pqmsg.h"
#include "route/classify.h"
#include "route/router.h"
#include "util/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond))                                                                       \
			__builtin_trap();                                                          \
	} while (0)

/* ---- stubs of the modules admin.c calls (not linked into this harness) ---- */

static bool cluster_accepts;

bool cluster_command(cluster_t *c, enum cluster_command cmd, int node, const char *reason,
		     char *msg, size_t msgcap)
{
	CHECK(c != NULL && node >= 0 && reason != NULL && msgcap > 0);
	CHECK(cmd == CLUSTER_ATTACH || cmd == CLUSTER_DETACH || cmd == CLUSTER_PROMOTE ||
	      cmd == CLUSTER_PROMOTE_ONLY);
	snprintf(msg, msgcap, "%s", cluster_accepts ? "accepted" : "refused");
	return cluster_accepts;
}

int cluster_history_copy(cluster_t *c, struct cluster_event *out, int cap)
{
	CHECK(c != NULL && cap >= 2);
	memset(out, 0, 2 * sizeof(*out));
	out[0].at_ms = 1700000000000;
	snprintf(out[0].event, sizeof(out[0].event), "failover");
	out[0].node = 0;
	snprintf(out[0].command, sizeof(out[0].command), "/bin/failover.sh 0");
	out[0].exit_status = 0;
	out[1].node = -1;
	out[1].exit_status = -1;
	snprintf(out[1].event, sizeof(out[1].event), "primary_found");
	return 2;
}

/* PGRELAY RECOVER NODE n: accepted or refused by the flag, like cluster_command. */
enum cluster_recover_result cluster_recover(cluster_t *c, int node, const char *reason, char *msg,
					    size_t msgcap)
{
	CHECK(c != NULL && node >= 0 && reason != NULL && msgcap > 0);
	snprintf(msg, msgcap, "%s", cluster_accepts ? "recovery accepted" : "refused");
	return cluster_accepts ? CLUSTER_RECOVER_STARTED : CLUSTER_RECOVER_REFUSED;
}

/* SHOW pool_recovery: one finished recovery with a detail line. */
bool cluster_recovery_copy(cluster_t *c, struct cluster_recovery *out)
{
	CHECK(c != NULL);
	memset(out, 0, sizeof(*out));
	out->node = 0;
	snprintf(out->stage, sizeof(out->stage), "done");
	out->started_ms = 1700000000000;
	out->elapsed_ms = 1234;
	snprintf(out->detail, sizeof(out->detail), "node 0 is up as a standby of primary node 1");
	return true;
}

/* SHOW pool_watchdog: this instance (leader) and one lost member. */
bool cluster_watchdog_state(cluster_t *c, struct wd_state *out)
{
	CHECK(c != NULL);
	memset(out, 0, sizeof(*out));
	snprintf(out->name, sizeof(out->name), "pgrelay-a");
	snprintf(out->leader, sizeof(out->leader), "pgrelay-a");
	out->status = WD_LEADER;
	out->is_leader = out->connected = out->fresh = true;
	out->lease_remaining_ms = 4000;
	out->lease_ttl_ms = 5000;
	out->n_members = 2;
	snprintf(out->members[0].name, sizeof(out->members[0].name), "pgrelay-a");
	out->members[0].present = true;
	out->members[0].primary = 0;
	snprintf(out->members[1].name, sizeof(out->members[1].name), "pgrelay-b");
	out->members[1].primary = -1;
	return true;
}

const char *watchdog_status_name(enum wd_status s)
{
	return s == WD_LEADER ? "leader" : "member";
}

double health_stats_average_retry_count(const struct health_stats *s)
{
	(void)s;
	return 0.5;
}

double health_stats_average_duration_ms(const struct health_stats *s)
{
	(void)s;
	return 12.0;
}

struct classifier *router_classifier(struct router *r, int db)
{
	(void)r;
	(void)db;
	return NULL;
}

void classify_sql(struct classifier *c, const char *sql, size_t len, struct classify_result *out)
{
	CHECK(c == NULL && strlen(sql) == len);
	memset(out, 0, sizeof(*out));
	out->route = ROUTE_ANY;
	out->inner_route = ROUTE_ANY;
	out->rule = "stub";
	if (len)
		snprintf(out->object, sizeof(out->object), "%.*s", (int)(len < 20 ? len : 20), sql);
}

void router_classify_in(struct router *r, int db, const char *sql, size_t len,
			struct route_facts *out)
{
	(void)r;
	(void)db;
	CHECK(strlen(sql) == len);
	memset(out, 0, sizeof(*out));
	out->route = (enum classify_route)(len % 4);
	out->rule = "stub";
}

double router_lb_weight(const struct router *r, int node)
{
	(void)r;
	CHECK(node >= 0 && node < CONFIG_MAX_BACKENDS);
	return 1.0;
}

int router_read_node(struct router *r, struct route_session *s)
{
	(void)r;
	s->read_node = 1;
	return 1;
}

/* ---- the stub session ---- */

static struct config cfg;
static struct worker w;
static struct client me, other;
static struct pool pool;
static char admin_users[] = "postgres, admin";
static char stats_users[] = "monitor";
static char host0[] = "10.0.0.1", host1[] = "10.0.0.2";
static char pool_key[] = "appdb\0app\0";

/* PGRELAY RELOAD / STOP must not signal the fuzzer: count instead. */
static unsigned raised;

static int fake_raise(int sig)
{
	(void)sig;
	raised++;
	return 0;
}

static void setup(uint8_t flags)
{
	admin_raise_signal = fake_raise;
	memset(&cfg, 0, sizeof(cfg));
	memset(&w, 0, sizeof(w));
	memset(&me, 0, sizeof(me));
	memset(&other, 0, sizeof(other));
	memset(&pool, 0, sizeof(pool));
	cfg.n_backends = 2;
	cfg.backends[0].host = host0;
	cfg.backends[0].port = 5432;
	cfg.backends[1].host = host1;
	cfg.backends[1].port = 5433;
	cfg.admin_users = admin_users;
	cfg.stats_users = stats_users;
	cfg.load_balance.enabled = flags & 4;
	cfg.pool.pool_size = 20;
	w.cfg = &cfg;
	w.n_nodes = 2;
	w.router.view.n_nodes = 2;
	w.router.view.checks_enabled = true;
	w.router.view.nodes[0].role = NODE_ROLE_PRIMARY;
	w.router.view.nodes[1].role = NODE_ROLE_STANDBY;
	w.router.view.nodes[1].status = (enum node_status)7; /* out of the names table */
	w.started_wall_ms = 1700000000000;
	w.cluster = (flags & 8) ? (cluster_t *)&w : NULL; /* only compared and passed to stubs */
	cluster_accepts = flags & 16;
	list_init(&w.pools);
	list_init(&w.active_clients);
	pool.key = pool_key;
	pool.key_len = sizeof(pool_key) - 1;
	pool.database = pool_key;
	pool.user = pool_key + 6;
	pool.nodes[0].n_servers = 3;
	pool.nodes[1].n_waiting = 1;
	list_append(&w.pools, &pool.node);

	me.w = &w;
	me.id = 1;
	me.user = (flags & 1) ? "postgres" : (flags & 2) ? "monitor" : "app";
	me.database = "appdb";
	me.route.read_node = -1;
	me.route.db = -1;
	me.txn_status = (flags & 32) ? TXN_BLOCK : TXN_IDLE;
	other = me;
	other.id = 2;
	other.user = "other";
	list_append(&w.active_clients, &other.node);
	list_append(&w.active_clients, &me.node);
}

/* The answer: backend messages only, ending in ReadyForQuery(status), nothing after it. */
static void check_answer(const struct builder *b, char status)
{
	CHECK(builder_ok(b) && b->len > 0);
	size_t at = 0;
	bool ready = false;
	while (at < b->len) {
		struct frame f;
		CHECK(!ready);
		CHECK(frame_parse(b->data + at, b->len - at, FRAME_FROM_SERVER, 1u << 30, &f) ==
		      FRAME_OK);
		CHECK(f.body_avail == f.len && f.total <= b->len - at);
		if (f.type == PqMsg_ReadyForQuery) {
			CHECK(f.len == 1 && f.body[0] == (uint8_t)status);
			ready = true;
		}
		at += f.total;
	}
	CHECK(ready);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool init;
	if (!init) {
		log_set_level(LOG_LVL_ERROR); /* node commands log at LOG */
		init = true;
	}
	if (size < 1 || size > 65536)
		return 0;
	setup(data[0]);
	size_t len = size - 1;
	char *sql = malloc(len ? len : 1);
	CHECK(sql != NULL);
	memcpy(sql, data + 1, len);

	enum route_force force = (enum route_force)99;
	int kind = admin_match_route_setting(sql, len, &force);
	CHECK(kind >= -1 && kind <= 2);
	if (kind == 1)
		CHECK(force == ROUTE_FORCE_PRIMARY || force == ROUTE_FORCE_STANDBY ||
		      force == ROUTE_FORCE_AUTO);
	if (kind == 2)
		CHECK(force == ROUTE_FORCE_AUTO);

	struct builder out;
	uint8_t store[2048];
	builder_init(&out, store, sizeof(store));
	if (admin_answer(&me, sql, len, &out))
		check_answer(&out, me.txn_status);
	else
		CHECK(out.len == 0);
	builder_free(&out);
	free(sql);
	return 0;
}
