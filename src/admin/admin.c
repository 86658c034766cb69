/*
 * SQL admin interface; see admin.h and doc/admin.md. Parsing is a small word scanner (the
 * commands are few and fixed); results are built as text columns with builder.h.
 */
#include "admin/admin.h"

#include <ctype.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "failover/cluster.h"
#include "failover/watchdog.h"
#include "pool/client.h"
#include "pool/pool.h"
#include "pool/server.h"
#include "pool/worker.h"
#include "protocol/pqmsg.h"
#include "util/log.h"
#include "protocol/reader.h"

#define ADMIN_MAX_COLS	     24
#define ADMIN_PGPOOL_VERSION "4.4.0" /* the pgpool-II whose SHOW columns pgrelay answers */

/* ---- scanning ----------------------------------------------------------------------------- */

/* Skips blanks and comments. */
static size_t admin_skip(const char *s, size_t len, size_t i)
{
	for (;;) {
		while (i < len && isspace((unsigned char)s[i]))
			i++;
		if (i + 1 < len && s[i] == '-' && s[i + 1] == '-') {
			while (i < len && s[i] != '\n')
				i++;
		} else if (i + 1 < len && s[i] == '/' && s[i + 1] == '*') {
			size_t j = i + 2;
			while (j + 1 < len && !(s[j] == '*' && s[j + 1] == '/'))
				j++;
			i = j + 2 < len ? j + 2 : len;
		} else {
			return i;
		}
	}
}

/* Matches word (case-insensitive, then a non-identifier character) at i; advances past it. */
static bool admin_word(const char *s, size_t len, size_t *i, const char *word)
{
	size_t j = admin_skip(s, len, *i), n = strlen(word);
	if (j + n > len || strncasecmp(s + j, word, n) != 0)
		return false;
	if (j + n < len && (isalnum((unsigned char)s[j + n]) || s[j + n] == '_'))
		return false;
	*i = j + n;
	return true;
}

/* True if only blanks, comments and semicolons remain. */
static bool admin_end(const char *s, size_t len, size_t i)
{
	for (;;) {
		i = admin_skip(s, len, i);
		if (i < len && s[i] == ';') {
			i++;
			continue;
		}
		return i >= len || s[i] == 0;
	}
}

int admin_match_route_setting(const char *sql, size_t len, enum route_force *out)
{
	size_t i = 0;
	bool reset = false;
	if (admin_word(sql, len, &i, "reset"))
		reset = true;
	else if (!admin_word(sql, len, &i, "set"))
		return 0;
	(void)admin_word(sql, len, &i, "session");
	i = admin_skip(sql, len, i);
	if (i + 13 > len || strncasecmp(sql + i, "pgrelay.route", 13) != 0)
		return 0;
	i += 13;
	if (reset) {
		*out = ROUTE_FORCE_AUTO;
		return admin_end(sql, len, i) ? 2 : -1;
	}
	i = admin_skip(sql, len, i);
	if (i < len && sql[i] == '=')
		i++;
	else if (!admin_word(sql, len, &i, "to"))
		return -1;
	i = admin_skip(sql, len, i);
	bool quoted = i < len && sql[i] == '\'';
	i += quoted;
	static const struct {
		const char *name;
		enum route_force force;
	} values[] = { { "primary", ROUTE_FORCE_PRIMARY },
		       { "standby", ROUTE_FORCE_STANDBY },
		       { "auto", ROUTE_FORCE_AUTO },
		       { "default", ROUTE_FORCE_AUTO } };
	for (size_t k = 0; k < sizeof(values) / sizeof(values[0]); k++) {
		size_t n = strlen(values[k].name);
		if (i + n <= len && strncasecmp(sql + i, values[k].name, n) == 0) {
			size_t j = i + n;
			if (quoted && (j >= len || sql[j] != '\''))
				continue;
			j += quoted;
			if (!admin_end(sql, len, j))
				continue;
			*out = values[k].force;
			return 1;
		}
	}
	return -1;
}

/* ---- result sets -------------------------------------------------------------------------- */

struct admin_table {
	struct builder *out;
	int ncols;
	int nrows;
};

static void admin_begin(struct admin_table *t, struct builder *out, const char *const *cols,
			int ncols)
{
	t->out = out;
	t->ncols = ncols;
	t->nrows = 0;
	builder_row_description(out, cols, ncols);
}

static void admin_row(struct admin_table *t, const char *const *values)
{
	builder_data_row(t->out, values, t->ncols);
	t->nrows++;
}

static void admin_finish(struct admin_table *t, char txn_status)
{
	char tag[32];
	snprintf(tag, sizeof(tag), "SELECT %d", t->nrows);
	builder_command_complete(t->out, tag);
	builder_ready(t->out, txn_status);
}

static void admin_error(struct builder *out, char txn_status, const char *sqlstate, const char *msg)
{
	builder_error(out, "ERROR", sqlstate, msg);
	builder_ready(out, txn_status);
}

static void admin_format_time(int64_t wall_ms, char *buf, size_t cap)
{
	if (wall_ms <= 0) {
		snprintf(buf, cap, "%s", "");
		return;
	}
	time_t t = (time_t)(wall_ms / 1000);
	struct tm tm;
	localtime_r(&t, &tm);
	strftime(buf, cap, "%Y-%m-%d %H:%M:%S", &tm);
}

static const char *admin_status_name(enum node_status s)
{
	static const char *const names[] = { "up", "down", "waiting", "unused", "quarantine" };
	return (unsigned)s < sizeof(names) / sizeof(names[0]) ? names[s] : "unknown";
}

static const char *admin_role_name(enum node_role r)
{
	return r == NODE_ROLE_PRIMARY ? "primary" : r == NODE_ROLE_STANDBY ? "standby" : "unknown";
}

/* ---- SHOW commands ------------------------------------------------------------------------ */

static void admin_show_nodes(struct client *c, struct builder *out)
{
	static const char *const cols[] = { "node_id",
					    "hostname",
					    "port",
					    "status",
					    "pg_status",
					    "lb_weight",
					    "role",
					    "pg_role",
					    "select_cnt",
					    "load_balance_node",
					    "replication_delay",
					    "replication_state",
					    "replication_sync_state",
					    "last_status_change" };
	struct worker *w = c->w;
	struct router *r = &w->router;
	const struct cluster_view *v = &r->view;
	if (c->route.read_node < 0 && w->cfg->load_balance.enabled)
		(void)router_read_node(r, &c->route);
	struct admin_table t;
	admin_begin(&t, out, cols, 14);
	for (int i = 0; i < w->n_nodes && i < v->n_nodes; i++) {
		const struct cluster_node *n = &v->nodes[i];
		char id[16], port[16], weight[32], cnt[32], delay[32], changed[32];
		snprintf(id, sizeof(id), "%d", i);
		snprintf(port, sizeof(port), "%d", w->cfg->backends[i].port);
		snprintf(weight, sizeof(weight), "%f", router_lb_weight(r, i));
		snprintf(cnt, sizeof(cnt), "%" PRIu64, r->select_cnt[i]);
		snprintf(delay, sizeof(delay), "%" PRIu64, n->replication_delay);
		admin_format_time(n->last_status_change ? n->last_status_change
							: w->started_wall_ms,
				  changed, sizeof(changed));
		const char *pg_status = !v->checks_enabled ? "unknown" : n->pg_up ? "up" : "down";
		const char *vals[] = { id,
				       w->cfg->backends[i].host,
				       port,
				       admin_status_name(n->status),
				       pg_status,
				       weight,
				       admin_role_name(n->role),
				       admin_role_name(n->pg_role),
				       cnt,
				       c->route.read_node == i ? "true" : "false",
				       delay,
				       n->replication_state,
				       n->sync_state,
				       changed };
		admin_row(&t, vals);
	}
	admin_finish(&t, c->txn_status);
}

static void admin_show_version(struct client *c, struct builder *out)
{
	static const char *const cols[] = { "pool_version" };
	/* pgpool2_exporter reads the leading pgpool-II version (^(\d+)(\.\d+)(\.\d+)?) to
	 * choose what to query: pgrelay answers every SHOW of pgpool-II 4.4. */
	const char *vals[] = { ADMIN_PGPOOL_VERSION " (pgrelay " PGRELAY_VERSION ")" };
	struct admin_table t;
	admin_begin(&t, out, cols, 1);
	admin_row(&t, vals);
	admin_finish(&t, c->txn_status);
}

static void admin_show_health_stats(struct client *c, struct builder *out)
{
	static const char *const cols[] = { "node_id",
					    "hostname",
					    "port",
					    "status",
					    "role",
					    "last_status_change",
					    "total_count",
					    "success_count",
					    "fail_count",
					    "skip_count",
					    "retry_count",
					    "average_retry_count",
					    "max_retry_count",
					    "max_duration",
					    "min_duration",
					    "average_duration",
					    "last_health_check",
					    "last_successful_health_check",
					    "last_skip_health_check",
					    "last_failed_health_check" };
	struct worker *w = c->w;
	const struct cluster_view *v = &w->router.view;
	struct admin_table t;
	admin_begin(&t, out, cols, 20);
	for (int i = 0; i < w->n_nodes && i < v->n_nodes; i++) {
		const struct cluster_node *n = &v->nodes[i];
		const struct health_stats *st = &v->stats[i];
		char f[20][40];
		snprintf(f[0], 40, "%d", i);
		snprintf(f[2], 40, "%d", w->cfg->backends[i].port);
		admin_format_time(n->last_status_change ? n->last_status_change
							: w->started_wall_ms,
				  f[5], 40);
		snprintf(f[6], 40, "%" PRIu64, st->total_count);
		snprintf(f[7], 40, "%" PRIu64, st->success_count);
		snprintf(f[8], 40, "%" PRIu64, st->fail_count);
		snprintf(f[9], 40, "%" PRIu64, st->skip_count);
		snprintf(f[10], 40, "%" PRIu64, st->retry_count);
		snprintf(f[11], 40, "%f", health_stats_average_retry_count(st));
		snprintf(f[12], 40, "%u", st->max_retry_count);
		snprintf(f[13], 40, "%u", st->max_duration_ms);
		snprintf(f[14], 40, "%u", st->min_duration_ms);
		snprintf(f[15], 40, "%f", health_stats_average_duration_ms(st));
		admin_format_time(st->last_health_check, f[16], 40);
		admin_format_time(st->last_successful_health_check, f[17], 40);
		admin_format_time(st->last_skip_health_check, f[18], 40);
		admin_format_time(st->last_failed_health_check, f[19], 40);
		const char *vals[20];
		for (int k = 0; k < 20; k++)
			vals[k] = f[k];
		vals[1] = w->cfg->backends[i].host;
		vals[3] = admin_status_name(n->status);
		vals[4] = admin_role_name(n->role);
		admin_row(&t, vals);
	}
	admin_finish(&t, c->txn_status);
}

static void admin_show_history(struct client *c, struct builder *out)
{
	static const char *const cols[] = { "time",	   "event",	  "node_id", "command",
					    "exit_status", "duration_ms", "detail" };
	struct worker *w = c->w;
	struct admin_table t;
	admin_begin(&t, out, cols, 7);
	int n = 0;
	struct cluster_event *ev = NULL;
	if (w->cluster) {
		ev = calloc(CLUSTER_HISTORY_MAX, sizeof(*ev));
		if (ev)
			n = cluster_history_copy(w->cluster, ev, CLUSTER_HISTORY_MAX);
	}
	for (int i = 0; i < n; i++) {
		char when[32], node[16], status[16], dur[16];
		admin_format_time(ev[i].at_ms, when, sizeof(when));
		snprintf(node, sizeof(node), "%d", ev[i].node);
		if (ev[i].exit_status < 0)
			status[0] = 0;
		else
			snprintf(status, sizeof(status), "%d", ev[i].exit_status);
		snprintf(dur, sizeof(dur), "%u", ev[i].duration_ms);
		const char *vals[] = { when,	      ev[i].event, ev[i].node >= 0 ? node : "",
				       ev[i].command, status,	   dur,
				       ev[i].detail };
		admin_row(&t, vals);
	}
	free(ev);
	admin_finish(&t, c->txn_status);
}

/* One row per pgrelay instance of the watchdog (doc/watchdog.md); no rows when it is off. */
static void admin_show_watchdog(struct client *c, struct builder *out)
{
	static const char *const cols[] = { "name",	    "host",	"port",
					    "status",	    "leader",	"lease_remaining_ms",
					    "sees_primary", "last_seen" };
	struct admin_table t;
	struct wd_state *s = malloc(sizeof(*s));
	admin_begin(&t, out, cols, 8);
	if (s && c->w->cluster && cluster_watchdog_state(c->w->cluster, s)) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
		for (int i = 0; i < s->n_members; i++) {
			const struct wd_member *m = &s->members[i];
			bool is_leader =
				m->present && s->leader[0] && strcmp(m->name, s->leader) == 0;
			const char *status = i == 0	   ? watchdog_status_name(s->status)
					     : !m->present ? "lost"
					     : m->fenced   ? "fenced"
					     : is_leader   ? "leader"
							   : "member";
			int64_t left = i == 0	    ? s->lease_remaining_ms
				       : m->present ? (int64_t)s->lease_ttl_ms - (now - m->at_ms)
						    : 0;
			char port[16], lease[24], prim[16], seen[32];
			snprintf(port, sizeof(port), "%d", m->port);
			snprintf(lease, sizeof(lease), "%" PRId64, left > 0 ? left : 0);
			if (m->primary >= 0)
				snprintf(prim, sizeof(prim), "%d", m->primary);
			else
				prim[0] = '\0';
			admin_format_time(m->at_ms, seen, sizeof(seen));
			const char *vals[] = {
				m->name,
				m->host,
				port,
				status,
				is_leader || (i == 0 && s->status == WD_LEADER) ? "true" : "false",
				lease,
				prim,
				seen
			};
			admin_row(&t, vals);
		}
	}
	free(s);
	admin_finish(&t, c->txn_status);
}

/* The running online recovery, else the last one; no row before the first. */
static void admin_show_recovery(struct client *c, struct builder *out)
{
	static const char *const cols[] = { "node_id", "stage", "started", "elapsed_ms", "detail" };
	struct admin_table t;
	struct cluster_recovery rec;
	admin_begin(&t, out, cols, 5);
	if (c->w->cluster && cluster_recovery_copy(c->w->cluster, &rec)) {
		char node[16], started[32], elapsed[32];
		snprintf(node, sizeof(node), "%d", rec.node);
		admin_format_time(rec.started_ms, started, sizeof(started));
		snprintf(elapsed, sizeof(elapsed), "%" PRIu64, rec.elapsed_ms);
		const char *vals[] = { node, rec.stage, started, elapsed, rec.detail };
		admin_row(&t, vals);
	}
	admin_finish(&t, c->txn_status);
}

/* pgpool's per-process pool rows, one per (pool, node) here: pgrelay has one process. */
static void admin_show_pools(struct client *c, struct builder *out)
{
	static const char *const cols[] = { "pool_pid",	      "start_time",	"pool_id",
					    "backend_id",     "database",	"username",
					    "pool_size",      "pool_connected", "idle",
					    "waiting_clients" };
	struct worker *w = c->w;
	struct admin_table t;
	admin_begin(&t, out, cols, 10);
	char pid[16], start[32];
	snprintf(pid, sizeof(pid), "%d", (int)getpid());
	admin_format_time(w->started_wall_ms, start, sizeof(start));
	int pool_id = 0;
	struct list_node *pos, *tmp;
	list_for_each_safe(pos, tmp, &w->pools)
	{
		struct pool *p = list_entry(pos, struct pool, node);
		for (int i = 0; i < w->n_nodes; i++) {
			const struct pool_node *pn = &p->nodes[i];
			if (!pn->n_servers && !pn->n_waiting)
				continue;
			char id[16], node[16], size[16], conn[16], idle[16], wait[16];
			snprintf(id, sizeof(id), "%d", pool_id);
			snprintf(node, sizeof(node), "%d", i);
			snprintf(size, sizeof(size), "%d", w->cfg->pool.pool_size);
			snprintf(conn, sizeof(conn), "%d", pn->n_servers);
			snprintf(idle, sizeof(idle), "%d", pn->n_idle);
			snprintf(wait, sizeof(wait), "%d", pn->n_waiting);
			const char *vals[] = { pid,	start, id,   node, p->database,
					       p->user, size,  conn, idle, wait };
			admin_row(&t, vals);
		}
		pool_id++;
	}
	admin_finish(&t, c->txn_status);
}

/* pgpool's process rows: one per client session here. */
static void admin_show_processes(struct client *c, struct builder *out)
{
	static const char *const cols[] = { "pool_pid", "start_time",  "client_id", "database",
					    "username", "backend_ids", "status" };
	struct worker *w = c->w;
	struct admin_table t;
	admin_begin(&t, out, cols, 7);
	char pid[16];
	snprintf(pid, sizeof(pid), "%d", (int)getpid());
	struct list_node *pos, *tmp;
	int rows = 0;
	list_for_each_safe(pos, tmp, &w->active_clients)
	{
		if (++rows > 10000)
			break;
		struct client *o = list_entry(pos, struct client, node);
		char id[24], nodes[64] = "";
		snprintf(id, sizeof(id), "c%" PRIu64, o->id);
		size_t len = 0;
		for (int i = 0; i < o->n_links && len < sizeof(nodes); i++)
			len += (size_t)snprintf(nodes + len, sizeof(nodes) - len, "%s%d",
						i ? "," : "", o->links[i]->node_id);
		const char *status = o->txn_status == TXN_IDLE ? "idle" : "in transaction";
		const char *vals[] = { pid, "", id, o->database, o->user, nodes, status };
		admin_row(&t, vals);
	}
	admin_finish(&t, c->txn_status);
}

/* pgpool-II 4.3+'s columns; writes are split by their first keyword (client_route.c). */
static void admin_show_backend_stats(struct client *c, struct builder *out)
{
	static const char *const cols[] = { "node_id",	  "hostname",	"port",	      "status",
					    "role",	  "select_cnt", "insert_cnt", "update_cnt",
					    "delete_cnt", "ddl_cnt",	"other_cnt",  "panic_cnt",
					    "fatal_cnt",  "error_cnt" };
	struct worker *w = c->w;
	const struct router *r = &w->router;
	struct admin_table t;
	admin_begin(&t, out, cols, 14);
	for (int i = 0; i < w->n_nodes && i < r->view.n_nodes; i++) {
		char f[14][24];
		snprintf(f[0], sizeof(f[0]), "%d", i);
		snprintf(f[2], sizeof(f[0]), "%d", w->cfg->backends[i].port);
		snprintf(f[5], sizeof(f[0]), "%" PRIu64, r->select_cnt[i]);
		for (int k = 0; k < WORKER_CMD_KINDS; k++)
			snprintf(f[6 + k], sizeof(f[0]), "%" PRIu64, w->cmd_cnt[i][k]);
		snprintf(f[11], sizeof(f[0]), "%" PRIu64, w->panic_cnt[i]);
		snprintf(f[12], sizeof(f[0]), "%" PRIu64, w->fatal_cnt[i]);
		snprintf(f[13], sizeof(f[0]), "%" PRIu64, w->error_cnt[i]);
		const char *vals[14];
		for (int k = 0; k < 14; k++)
			vals[k] = f[k];
		vals[1] = w->cfg->backends[i].host;
		vals[3] = admin_status_name(r->view.nodes[i].status);
		vals[4] = admin_role_name(r->view.nodes[i].role);
		admin_row(&t, vals);
	}
	admin_finish(&t, c->txn_status);
}

/*
 * pgpool-II's query cache statistics. pgrelay has no query cache: one row (one process) of
 * zeros, so that pgpool2_exporter's pool_cache family reads.
 */
static void admin_show_cache(struct client *c, struct builder *out)
{
	static const char *const cols[] = { "num_cache_hits",
					    "num_selects",
					    "cache_hit_ratio",
					    "num_hash_entries",
					    "used_hash_entries",
					    "num_cache_entries",
					    "used_cache_entries_size",
					    "free_cache_entries_size",
					    "fragment_cache_entries_size" };
	const char *vals[] = { "0", "0", "0.00", "0", "0", "0", "0", "0", "0" };
	struct admin_table t;
	admin_begin(&t, out, cols, 9);
	admin_row(&t, vals);
	admin_finish(&t, c->txn_status);
}

/* ---- PGRELAY commands --------------------------------------------------------------------- */

static void admin_explain_route(struct client *c, const char *sql, size_t len, struct builder *out)
{
	static const char *const cols[] = { "node_class", "rule", "object" };
	char *text = strndup(sql, len);
	if (!text) {
		admin_error(out, c->txn_status, "53200", "out of memory");
		return;
	}
	struct classify_result res;
	classify_sql(router_classifier(&c->w->router, c->route.db), text, strlen(text), &res);
	struct route_facts f;
	router_classify_in(&c->w->router, c->route.db, text, strlen(text), &f);
	free(text);
	const char *cls = f.route == ROUTE_PRIMARY ? "primary"
			  : f.route == ROUTE_ANY   ? "standby"
			  : f.route == ROUTE_ALL   ? "all"
						   : "follow";
	const char *vals[] = { cls, f.rule, res.object };
	struct admin_table t;
	admin_begin(&t, out, cols, 3);
	admin_row(&t, vals);
	admin_finish(&t, c->txn_status);
}

/* True if c's user is one of the comma-separated names in list (NULL: nobody). */
static bool admin_user_in_list(const struct client *c, const char *list)
{
	size_t ulen = strlen(c->user);
	for (const char *p = list ? list : ""; *p;) {
		while (*p == ' ' || *p == ',')
			p++;
		const char *e = p;
		while (*e && *e != ',')
			e++;
		const char *t = e;
		while (t > p && t[-1] == ' ')
			t--;
		if ((size_t)(t - p) == ulen && strncmp(p, c->user, ulen) == 0)
			return true;
		p = e;
	}
	return false;
}

static bool admin_is_admin_user(const struct client *c)
{
	return admin_user_in_list(c, c->w->cfg->admin_users);
}

/* SHOW commands other than pool_nodes and pool_version: admin_users or stats_users. */
static bool admin_may_see_stats(const struct client *c)
{
	return admin_is_admin_user(c) || admin_user_in_list(c, c->w->cfg->stats_users);
}

/* What every PGRELAY node command needs first: an admin user, a node, the cluster manager. False
 * (with the ErrorResponse in out) when one is missing. */
static bool admin_node_command_allowed(struct client *c, int node, struct builder *out)
{
	if (!admin_is_admin_user(c)) {
		admin_error(out, c->txn_status, "42501",
			    "permission denied: PGRELAY node commands need a user in admin_users");
		return false;
	}
	if (node < 0 || node >= c->w->n_nodes) {
		admin_error(out, c->txn_status, "22023", "no such backend node");
		return false;
	}
	if (!c->w->cluster) {
		admin_error(out, c->txn_status, "55000",
			    "node commands need the cluster manager (health checks)");
		return false;
	}
	return true;
}

static void admin_node_command(struct client *c, enum cluster_command cmd, int node,
			       struct builder *out)
{
	static const char *const names[] = { "ATTACH", "DETACH", "PROMOTE", "PROMOTE" };
	if (!admin_node_command_allowed(c, node, out))
		return;
	char reason[96], msg[256];
	snprintf(reason, sizeof(reason), "PGRELAY %s NODE by user %s", names[cmd], c->user);
	log_info("admin", c->id, "%s NODE %d requested by user %s", names[cmd], node, c->user);
	if (!cluster_command(c->w->cluster, cmd, node, reason, msg, sizeof(msg))) {
		admin_error(out, c->txn_status, "55000", msg);
		return;
	}
	builder_notice(out, "00000", msg);
	char tag[32];
	snprintf(tag, sizeof(tag), "PGRELAY %s", names[cmd]);
	builder_command_complete(out, tag);
	builder_ready(out, c->txn_status);
}

/*
 * PGRELAY RECOVER NODE n: accepted at once (the cluster manager runs the recovery; SHOW
 * pool_recovery follows it). Refusals: 42501 not an admin user, 22023 no such node, 55000 the
 * node or the cluster is not in a state to recover it, 55006 another recovery or a failover is
 * in progress (try again later).
 */
static void admin_recover_node(struct client *c, int node, struct builder *out)
{
	if (!admin_node_command_allowed(c, node, out))
		return;
	char reason[96], msg[256];
	snprintf(reason, sizeof(reason), "PGRELAY RECOVER NODE by user %s", c->user);
	log_info("admin", c->id, "RECOVER NODE %d requested by user %s", node, c->user);
	switch (cluster_recover(c->w->cluster, node, reason, msg, sizeof(msg))) {
	case CLUSTER_RECOVER_STARTED:
		break;
	case CLUSTER_RECOVER_NO_NODE:
		admin_error(out, c->txn_status, "22023", msg);
		return;
	case CLUSTER_RECOVER_BUSY:
		admin_error(out, c->txn_status, "55006", msg);
		return;
	case CLUSTER_RECOVER_REFUSED:
	default:
		admin_error(out, c->txn_status, "55000", msg);
		return;
	}
	builder_notice(out, "00000", msg);
	builder_command_complete(out, "PGRELAY RECOVER");
	builder_ready(out, c->txn_status);
}

/* NODE n [SWITCHOVER]: *switchover (NULL where the word is not accepted) says if it was given. */
static bool admin_parse_node(const char *sql, size_t len, size_t i, int *node, bool *switchover)
{
	if (!admin_word(sql, len, &i, "node"))
		return false;
	i = admin_skip(sql, len, i);
	/* Digits within len only: sql need not be NUL-terminated (no strtol). */
	size_t start = i;
	long v = 0;
	while (i < len && i - start < 5 && isdigit((unsigned char)sql[i]))
		v = v * 10 + (sql[i++] - '0');
	if (i == start || v > 1000)
		return false;
	*node = (int)v;
	if (switchover != NULL)
		*switchover = admin_word(sql, len, &i, "switchover");
	return admin_end(sql, len, i);
}

static int admin_raise_self(int sig)
{
	return kill(getpid(), sig);
}

int (*admin_raise_signal)(int sig) = admin_raise_self;

/*
 * PGRELAY RELOAD and PGRELAY STOP [SMART|FAST]: the same as SIGHUP, SIGTERM and SIGINT. The
 * signal is raised, not acted on here: its handler runs on the next loop turn, after this answer
 * was queued, exactly as if it came from outside (a reload never swaps the config under this
 * session's feet). Returns false if sql is neither.
 */
static bool admin_signal_command(struct client *c, const char *sql, size_t len, size_t i,
				 struct builder *out)
{
	size_t j = i;
	int sig;
	const char *tag, *what;

	if (admin_word(sql, len, &j, "reload")) {
		sig = SIGHUP;
		tag = "PGRELAY RELOAD";
		what = "reload";
	} else if (j = i, admin_word(sql, len, &j, "stop")) {
		size_t k = j;

		sig = SIGTERM;
		what = "smart shutdown";
		if (admin_word(sql, len, &k, "fast")) {
			sig = SIGINT;
			what = "fast shutdown";
			j = k;
		} else if (admin_word(sql, len, &k, "smart")) {
			j = k;
		}
		tag = "PGRELAY STOP";
	} else {
		return false;
	}
	if (!admin_end(sql, len, j)) {
		admin_error(out, c->txn_status, "42601",
			    "syntax: PGRELAY RELOAD | PGRELAY STOP [SMART|FAST]");
		return true;
	}
	if (!admin_is_admin_user(c)) {
		char msg[128];
		snprintf(msg, sizeof(msg), "permission denied: %s needs a user in admin_users",
			 tag);
		admin_error(out, c->txn_status, "42501", msg);
		return true;
	}
	log_info("admin", c->id, "%s requested by user %s", what, c->user);
	if (admin_raise_signal(sig) != 0) {
		admin_error(out, c->txn_status, "58000", "could not signal the pgrelay process");
		return true;
	}
	char msg[64];
	snprintf(msg, sizeof(msg), "%s requested", what);
	builder_notice(out, "00000", msg);
	builder_command_complete(out, tag);
	builder_ready(out, c->txn_status);
	return true;
}

static bool admin_pgrelay(struct client *c, const char *sql, size_t len, size_t i,
			  struct builder *out)
{
	static const struct {
		const char *word;
		enum cluster_command cmd;
	} cmds[] = { { "attach", CLUSTER_ATTACH },
		     { "detach", CLUSTER_DETACH },
		     { "promote", CLUSTER_PROMOTE } };
	size_t j = i;
	if (admin_signal_command(c, sql, len, i, out))
		return true;
	if (admin_word(sql, len, &j, "explain") && admin_word(sql, len, &j, "route")) {
		/* Blanks only: a leading comment of the statement may be a routing hint. */
		while (j < len && isspace((unsigned char)sql[j]))
			j++;
		admin_explain_route(c, sql + j, cstr_len(sql + j, len - j), out);
		return true;
	}
	for (size_t k = 0; k < sizeof(cmds) / sizeof(cmds[0]); k++) {
		j = i;
		if (!admin_word(sql, len, &j, cmds[k].word))
			continue;
		int node;
		bool switchover = false;
		bool promote = cmds[k].cmd == CLUSTER_PROMOTE;
		if (!admin_parse_node(sql, len, j, &node, promote ? &switchover : NULL)) {
			admin_error(out, c->txn_status, "42601",
				    "syntax: PGRELAY ATTACH|DETACH NODE n, PGRELAY PROMOTE NODE n "
				    "[SWITCHOVER]");
			return true;
		}
		/* Without SWITCHOVER only n is promoted; the other nodes do not follow it. */
		admin_node_command(c, promote && !switchover ? CLUSTER_PROMOTE_ONLY : cmds[k].cmd,
				   node, out);
		return true;
	}
	j = i;
	if (admin_word(sql, len, &j, "recover")) {
		int node;
		if (!admin_parse_node(sql, len, j, &node, NULL)) {
			admin_error(out, c->txn_status, "42601", "syntax: PGRELAY RECOVER NODE n");
			return true;
		}
		admin_recover_node(c, node, out);
		return true;
	}
	admin_error(
		out, c->txn_status, "42601",
		"unknown PGRELAY command; try PGRELAY EXPLAIN ROUTE <sql>, PGRELAY "
		"ATTACH|DETACH|PROMOTE|RECOVER NODE n, PGRELAY RELOAD, PGRELAY STOP [SMART|FAST]");
	return true;
}

bool admin_answer(struct client *c, const char *sql, size_t len, struct builder *out)
{
	len = cstr_len(sql, len);
	size_t i = 0;
	if (admin_word(sql, len, &i, "pgrelay"))
		return admin_pgrelay(c, sql, len, i, out);
	i = 0;
	if (!admin_word(sql, len, &i, "show"))
		return false;
	/*
	 * pool_nodes and pool_version are open to every user, as in pgpool-II (drivers and load
	 * balancers read them); the rest show other sessions' users and databases and the failover
	 * command lines, so they need admin_users or stats_users.
	 */
	static const struct {
		const char *name;
		void (*fn)(struct client *, struct builder *);
		bool open;
	} shows[] = {
		{ "pool_nodes", admin_show_nodes, true },
		{ "pool_version", admin_show_version, true },
		{ "pool_health_check_stats", admin_show_health_stats, false },
		{ "pool_failover_history", admin_show_history, false },
		{ "pool_recovery", admin_show_recovery, false },
		{ "pool_pools", admin_show_pools, false },
		{ "pool_processes", admin_show_processes, false },
		{ "pool_backend_stats", admin_show_backend_stats, false },
		{ "pool_cache", admin_show_cache, false },
		{ "pool_watchdog", admin_show_watchdog, false },
	};
	for (size_t k = 0; k < sizeof(shows) / sizeof(shows[0]); k++) {
		size_t j = i;
		if (admin_word(sql, len, &j, shows[k].name) && admin_end(sql, len, j)) {
			if (!shows[k].open && !admin_may_see_stats(c)) {
				char msg[160];
				snprintf(
					msg, sizeof(msg),
					"permission denied: SHOW %s needs a user in admin_users or "
					"stats_users",
					shows[k].name);
				admin_error(out, c->txn_status, "42501", msg);
				return true;
			}
			shows[k].fn(c, out);
			return true;
		}
	}
	size_t j = admin_skip(sql, len, i);
	/* sql need not be NUL-terminated: print at most its len - j remaining bytes. */
	int shown = len - j < 60 ? (int)(len - j) : 60;
	char msg[160];
	snprintf(msg, sizeof(msg), "unrecognized configuration parameter \"%.*s\"", shown, sql + j);
	char *semi = strchr(msg, ';');
	if (semi)
		*semi = 0;
	admin_error(out, c->txn_status, "42704", msg);
	return true;
}
