/*
 * The pgbouncer console's SHOW commands (console.h, doc/admin.md): row descriptions carry
 * PgBouncer 1.25's column names and type OIDs (text, int4, int8, numeric), values are text. A
 * reply stops growing at CONSOLE_REPLY_MAX bytes (later rows are left out), so it always fits the
 * connection's bound on queued bytes. Everything is read on the worker's loop.
 */
#include "admin/console.h"
#include "admin/console_int.h"
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <uv.h>
#include "conf/config.h"
#include "pool/cancel.h"
#include "pool/client.h"
#include "pool/pool.h"
#include "pool/server.h"
#include "pool/worker.h"
#include "protocol/pqmsg.h"
#include "util/log.h"

#define CONSOLE_REPLY_MAX (768u * 1024u) /* rows stop here: below CONN_MAX_QUEUED */
#define CONSOLE_COLS_MAX  32
#define CONSOLE_VERSION	  "PgBouncer 1.25.2 (pgrelay " PGRELAY_VERSION ")"

/* ---- result sets with PgBouncer's column types ------------------------------------------- */

/*
 * Column types as PgBouncer's pktbuf_write_RowDescription letters: s text, i int4, q int8,
 * N numeric (uint64 statistics), T a time shown as text.
 */
struct ctab {
	struct builder *out;
	const char *types;
	int ncols;
	int nrows;
	bool full; /* CONSOLE_REPLY_MAX reached: further rows are dropped */
};

struct crow {
	const char *v[CONSOLE_COLS_MAX];
	char buf[CONSOLE_COLS_MAX][48];
	int n;
};

static void ctab_begin(struct ctab *t, struct builder *out, const char *types,
		       const char *const *names)
{
	t->out = out;
	t->types = types;
	t->ncols = (int)strlen(types);
	t->nrows = 0;
	t->full = false;
	builder_start(out, PqMsg_RowDescription);
	builder_put_u16(out, (uint16_t)t->ncols);
	for (int i = 0; i < t->ncols; i++) {
		uint32_t oid = 25;
		uint16_t size = 0xffff;
		switch (types[i]) {
		case 'i':
			oid = 23;
			size = 4;
			break;
		case 'q':
			oid = 20;
			size = 8;
			break;
		case 'N':
			oid = 1700;
			break;
		default:
			break;
		}
		builder_put_cstr(out, names[i]);
		builder_put_u32(out, 0); /* table oid */
		builder_put_u16(out, 0); /* column number */
		builder_put_u32(out, oid);
		builder_put_u16(out, size);
		builder_put_u32(out, 0xffffffffu); /* typmod -1 */
		builder_put_u16(out, 0);	   /* text format */
	}
	builder_finish(out);
}

static void crow_s(struct crow *r, const char *s)
{
	if (r->n < CONSOLE_COLS_MAX)
		r->v[r->n++] = s;
}

static void crow_i(struct crow *r, int64_t v)
{
	if (r->n >= CONSOLE_COLS_MAX)
		return;
	snprintf(r->buf[r->n], sizeof(r->buf[0]), "%" PRId64, v);
	r->v[r->n] = r->buf[r->n];
	r->n++;
}

static void crow_u(struct crow *r, uint64_t v)
{
	if (r->n >= CONSOLE_COLS_MAX)
		return;
	snprintf(r->buf[r->n], sizeof(r->buf[0]), "%" PRIu64, v);
	r->v[r->n] = r->buf[r->n];
	r->n++;
}

/* A wall-clock time (ms) as PgBouncer prints its 'T' columns. */
static void crow_t(struct crow *r, int64_t wall_ms)
{
	if (r->n >= CONSOLE_COLS_MAX)
		return;
	time_t t = (time_t)(wall_ms / 1000);
	struct tm tm;
	localtime_r(&t, &tm);
	strftime(r->buf[r->n], sizeof(r->buf[0]), "%Y-%m-%d %H:%M:%S %Z", &tm);
	r->v[r->n] = r->buf[r->n];
	r->n++;
}

static void ctab_row(struct ctab *t, struct crow *r)
{
	if (t->full || r->n != t->ncols)
		return;
	if (t->out->len > CONSOLE_REPLY_MAX) {
		t->full = true;
		return;
	}
	builder_data_row(t->out, r->v, t->ncols);
	t->nrows++;
	r->n = 0;
}

/* ---- what the commands look at ------------------------------------------------------------ */

static int64_t console_wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The wall-clock time of loop time t (ms). */
static int64_t console_loop_to_wall(const struct worker *w, uint64_t t, int64_t wall_now)
{
	uint64_t now = uv_now(&w->loop);
	return wall_now - (int64_t)(now > t ? now - t : 0);
}

static void console_addr(const struct sockaddr_storage *ss, char *host, size_t cap, int *port)
{
	snprintf(host, cap, "%s", "");
	*port = 0;
	if (ss->ss_family == AF_INET) {
		uv_ip4_name((const struct sockaddr_in *)ss, host, cap);
		*port = ntohs(((const struct sockaddr_in *)ss)->sin_port);
	} else if (ss->ss_family == AF_INET6) {
		uv_ip6_name((const struct sockaddr_in6 *)ss, host, cap);
		*port = ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
	}
}

static void console_sock_addr(const struct conn *c, bool peer, char *host, size_t cap, int *port)
{
	struct sockaddr_storage ss;
	int rc = peer ? conn_peer_addr(c, &ss) : conn_local_addr(c, &ss);
	if (rc < 0)
		ss.ss_family = AF_UNSPEC;
	console_addr(&ss, host, cap, port);
}

static const char *console_mode_name(const struct worker *w)
{
	switch (w->cfg->pool.mode) {
	case POOL_MODE_TRANSACTION:
		return "transaction";
	case POOL_MODE_STATEMENT:
		return "statement";
	default:
		return "session";
	}
}

/* True if an earlier pool has p's database (and user, when by_user). */
static bool console_pool_seen(const struct worker *w, const struct pool *p, bool by_user)
{
	const struct list_node *pos;
	for (pos = w->pools.next; pos != &w->pools; pos = pos->next) {
		const struct pool *q = list_entry(pos, struct pool, node);
		if (q == p)
			return false;
		if (strcmp(q->database, p->database) == 0 &&
		    (!by_user || strcmp(q->user, p->user) == 0))
			return true;
	}
	return false;
}

static bool console_same(const struct pool *a, const struct pool *b, bool by_user)
{
	return strcmp(a->database, b->database) == 0 && (!by_user || strcmp(a->user, b->user) == 0);
}

/* ---- SHOW commands ------------------------------------------------------------------------ */

struct pool_counts {
	int cl_active, cl_waiting;
	int sv_active, sv_idle, sv_used, sv_login;
	uint64_t maxwait_ms;
	int servers;
};

/* The counts of every pool of p's database and user (pools also split by startup options). */
static void console_pool_counts(struct worker *w, const struct pool *p, bool by_user,
				struct pool_counts *pc)
{
	memset(pc, 0, sizeof(*pc));
	uint64_t now = uv_now(&w->loop);
	struct list_node *pos, *tmp;
	list_for_each_safe(pos, tmp, &w->pools)
	{
		struct pool *q = list_entry(pos, struct pool, node);
		if (!console_same(q, p, by_user))
			continue;
		pc->cl_waiting += q->n_waiting;
		pc->cl_active += q->n_clients - q->n_waiting;
		pc->servers += q->n_servers;
		for (int i = 0; i < w->n_nodes; i++) {
			struct pool_node *pn = &q->nodes[i];
			pc->sv_idle += pn->n_idle;
			pc->sv_used += pn->n_resetting;
			pc->sv_active += pn->n_servers - pn->n_idle - pn->n_resetting;
			if (!list_empty(&pn->waiting_clients)) {
				const struct client *c = list_entry(
					list_first(&pn->waiting_clients), struct client, node);
				if (now - c->since_ms > pc->maxwait_ms)
					pc->maxwait_ms = now - c->since_ms;
			}
		}
	}
	struct list_node *lists[2] = { &w->connecting_servers, &w->login_servers };
	for (int k = 0; k < 2; k++) {
		list_for_each_safe(pos, tmp, lists[k])
		{
			struct server *s = list_entry(pos, struct server, node);
			if (s->pool && console_same(s->pool, p, by_user))
				pc->sv_login++;
		}
	}
	pc->sv_active -= pc->sv_login;
	if (pc->sv_active < 0)
		pc->sv_active = 0;
	/* Clients waiting for a node to exist (no primary) wait too. */
	list_for_each_safe(pos, tmp, &w->nodeless_clients)
	{
		struct client *c = list_entry(pos, struct client, node);
		if (c->pool && console_same(c->pool, p, by_user) &&
		    now - c->since_ms > pc->maxwait_ms)
			pc->maxwait_ms = now - c->since_ms;
	}
}

static void console_show_pools(struct client *c, struct builder *out)
{
	static const char *const cols[] = { "database",
					    "user",
					    "cl_active",
					    "cl_waiting",
					    "cl_active_cancel_req",
					    "cl_waiting_cancel_req",
					    "sv_active",
					    "sv_active_cancel",
					    "sv_being_canceled",
					    "sv_idle",
					    "sv_used",
					    "sv_tested",
					    "sv_login",
					    "maxwait",
					    "maxwait_us",
					    "pool_mode",
					    "load_balance_hosts" };
	struct worker *w = c->w;
	struct ctab t;
	ctab_begin(&t, out, "ssiiiiiiiiiiiiiss", cols);
	struct crow r = { .n = 0 };
	struct list_node *pos, *tmp;
	list_for_each_safe(pos, tmp, &w->pools)
	{
		struct pool *p = list_entry(pos, struct pool, node);
		if (console_pool_seen(w, p, true))
			continue;
		struct pool_counts pc;
		console_pool_counts(w, p, true, &pc);
		crow_s(&r, p->database);
		crow_s(&r, p->user);
		crow_i(&r, pc.cl_active);
		crow_i(&r, pc.cl_waiting);
		crow_i(&r, 0);
		crow_i(&r, 0);
		crow_i(&r, pc.sv_active);
		crow_i(&r, 0);
		crow_i(&r, 0);
		crow_i(&r, pc.sv_idle);
		crow_i(&r, pc.sv_used);
		crow_i(&r, 0);
		crow_i(&r, pc.sv_login);
		crow_i(&r, (int64_t)(pc.maxwait_ms / 1000));
		crow_i(&r, (int64_t)(pc.maxwait_ms % 1000) * 1000);
		crow_s(&r, console_mode_name(w));
		crow_s(&r, NULL);
		ctab_row(&t, &r);
	}
	console_done(out, "SHOW");
}

static const char *const console_socket_cols[] = { "type",
						   "user",
						   "database",
						   "replication",
						   "state",
						   "addr",
						   "port",
						   "local_addr",
						   "local_port",
						   "connect_time",
						   "request_time",
						   "wait",
						   "wait_us",
						   "close_needed",
						   "ptr",
						   "link",
						   "remote_pid",
						   "tls",
						   "application_name",
						   "prepared_statements",
						   "id" };
#define CONSOLE_SOCKET_TYPES "ssssssisiTTiiississii"

static void console_client_row(struct ctab *t, const struct client *o, int64_t wall_now)
{
	const struct worker *w = o->w;
	struct crow r = { .n = 0 };
	char addr[64], laddr[64], ptr[24], link[24];
	int port, lport;
	console_sock_addr(&o->conn, true, addr, sizeof(addr), &port);
	console_sock_addr(&o->conn, false, laddr, sizeof(laddr), &lport);
	snprintf(ptr, sizeof(ptr), "c%" PRIu64, o->id);
	link[0] = 0;
	if (o->server)
		snprintf(link, sizeof(link), "s%" PRIu64, o->server->id);
	uint64_t now = uv_now(&w->loop);
	uint64_t wait_ms = o->state == CL_WAITING ? now - o->since_ms : 0;
	const char *state = o->state == CL_WAITING ? "waiting" : o->server ? "active" : "idle";
	if (o->kind != CK_SESSION)
		state = "active";
	crow_s(&r, "C");
	crow_s(&r, o->user);
	crow_s(&r, o->database);
	crow_s(&r, "none");
	crow_s(&r, state);
	crow_s(&r, addr);
	crow_i(&r, port);
	crow_s(&r, laddr);
	crow_i(&r, lport);
	crow_t(&r, console_loop_to_wall(w, o->connect_ms, wall_now));
	crow_t(&r, console_loop_to_wall(w, o->last_active_ms ? o->last_active_ms : o->connect_ms,
					wall_now));
	crow_i(&r, (int64_t)(wait_ms / 1000));
	crow_i(&r, (int64_t)(wait_ms % 1000) * 1000);
	crow_i(&r, 0);
	crow_s(&r, ptr);
	crow_s(&r, link);
	crow_i(&r, 0);
	crow_s(&r, conn_is_tls(&o->conn) ? "TLS" : "");
	crow_s(&r, o->application_name ? o->application_name : "");
	crow_i(&r, o->stmts.count);
	crow_u(&r, o->id);
	ctab_row(t, &r);
}

static void console_show_clients(struct client *c, struct builder *out)
{
	struct worker *w = c->w;
	struct ctab t;
	ctab_begin(&t, out, CONSOLE_SOCKET_TYPES, console_socket_cols);
	int64_t wall_now = console_wall_ms();
	struct list_node *pos, *tmp, *cpos, *ctmp;
	list_for_each_safe(cpos, ctmp, &w->active_clients)
	{
		console_client_row(&t, list_entry(cpos, struct client, node), wall_now);
	}
	list_for_each_safe(pos, tmp, &w->pools)
	{
		struct pool *p = list_entry(pos, struct pool, node);
		for (int i = 0; i < w->n_nodes; i++) {
			if (!p->nodes[i].n_waiting)
				continue;
			list_for_each_safe(cpos, ctmp, &p->nodes[i].waiting_clients)
			{
				console_client_row(&t, list_entry(cpos, struct client, node),
						   wall_now);
			}
		}
	}
	list_for_each_safe(cpos, ctmp, &w->nodeless_clients)
	{
		console_client_row(&t, list_entry(cpos, struct client, node), wall_now);
	}
	console_done(out, "SHOW");
}

static void console_server_row(struct ctab *t, const struct server *s, const char *state,
			       int64_t wall_now)
{
	const struct worker *w = s->w;
	struct crow r = { .n = 0 };
	char addr[64], laddr[64], ptr[24], link[24];
	int port, lport;
	console_addr(&s->addr, addr, sizeof(addr), &port);
	console_sock_addr(&s->conn, false, laddr, sizeof(laddr), &lport);
	snprintf(ptr, sizeof(ptr), "s%" PRIu64, s->id);
	link[0] = 0;
	if (s->client)
		snprintf(link, sizeof(link), "c%" PRIu64, s->client->id);
	crow_s(&r, "S");
	crow_s(&r, s->pool ? s->pool->user : "");
	crow_s(&r, s->pool ? s->pool->database : "");
	crow_s(&r, "none");
	crow_s(&r, state);
	crow_s(&r, addr);
	crow_i(&r, port);
	crow_s(&r, laddr);
	crow_i(&r, lport);
	crow_t(&r, console_loop_to_wall(w, s->created_ms, wall_now));
	crow_t(&r, console_loop_to_wall(w, s->since_ms, wall_now));
	crow_i(&r, 0);
	crow_i(&r, 0);
	crow_i(&r, s->close_needed ? 1 : 0);
	crow_s(&r, ptr);
	crow_s(&r, link);
	crow_i(&r, (int64_t)s->be_pid);
	crow_s(&r, conn_is_tls(&s->conn) ? "TLS" : "");
	crow_s(&r, s->client && s->client->application_name ? s->client->application_name : "");
	crow_i(&r, s->stmts.count);
	crow_u(&r, s->id);
	ctab_row(t, &r);
}

static void console_show_servers(struct client *c, struct builder *out)
{
	struct worker *w = c->w;
	struct ctab t;
	ctab_begin(&t, out, CONSOLE_SOCKET_TYPES, console_socket_cols);
	int64_t wall_now = console_wall_ms();
	struct {
		struct list_node *list;
		const char *state;
	} lists[] = { { &w->active_servers, "active" },
		      { &w->reset_servers, "used" },
		      { &w->connecting_servers, "new" },
		      { &w->login_servers, "new" } };
	struct list_node *pos, *tmp;
	for (size_t k = 0; k < sizeof(lists) / sizeof(lists[0]); k++) {
		list_for_each_safe(pos, tmp, lists[k].list)
		{
			console_server_row(&t, list_entry(pos, struct server, node), lists[k].state,
					   wall_now);
		}
	}
	struct list_node *ppos, *ptmp;
	list_for_each_safe(ppos, ptmp, &w->pools)
	{
		struct pool *p = list_entry(ppos, struct pool, node);
		for (int i = 0; i < w->n_nodes; i++) {
			list_for_each_safe(pos, tmp, &p->nodes[i].idle_servers)
			{
				console_server_row(&t, list_entry(pos, struct server, node), "idle",
						   wall_now);
			}
		}
	}
	console_done(out, "SHOW");
}

/* Totals and the last period's averages of every pool of p's database. */
static void console_db_stats(struct worker *w, const struct pool *p, struct pool_stats *total,
			     struct pool_stats *avg)
{
	struct pool_stats newer = { 0 }, older = { 0 };
	*total = (struct pool_stats){ 0 };
	struct list_node *pos, *tmp;
	list_for_each_safe(pos, tmp, &w->pools)
	{
		struct pool *q = list_entry(pos, struct pool, node);
		if (!console_same(q, p, false))
			continue;
		stats_pool_add(total, &q->cur);
		stats_pool_add(&newer, &q->newer);
		stats_pool_add(&older, &q->older);
	}
	stats_pool_average(avg, &newer, &older, (w->stats_newer_ms - w->stats_older_ms) * 1000u);
}

static void crow_stats(struct crow *r, const struct pool_stats *s)
{
	crow_u(r, s->server_assignment_count);
	crow_u(r, s->xact_count);
	crow_u(r, s->query_count);
	crow_u(r, s->bytes_in);
	crow_u(r, s->bytes_out);
	crow_u(r, s->xact_time_us);
	crow_u(r, s->query_time_us);
	crow_u(r, s->wait_time_us);
	crow_u(r, 0); /* client_parse_count: PgBouncer counts these with prepared statement */
	crow_u(r, 0); /* support; pgrelay follows statements its own way (doc/admin.md) */
	crow_u(r, 0); /* bind_count */
}

enum console_stats_kind { CS_BOTH, CS_TOTALS, CS_AVERAGES };

static void console_show_stats_kind(struct client *c, struct builder *out,
				    enum console_stats_kind kind)
{
	static const char *const both[] = { "database",
					    "total_server_assignment_count",
					    "total_xact_count",
					    "total_query_count",
					    "total_received",
					    "total_sent",
					    "total_xact_time",
					    "total_query_time",
					    "total_wait_time",
					    "total_client_parse_count",
					    "total_server_parse_count",
					    "total_bind_count",
					    "avg_server_assignment_count",
					    "avg_xact_count",
					    "avg_query_count",
					    "avg_recv",
					    "avg_sent",
					    "avg_xact_time",
					    "avg_query_time",
					    "avg_wait_time",
					    "avg_client_parse_count",
					    "avg_server_parse_count",
					    "avg_bind_count" };
	static const char *const totals[] = { "database",	    "server_assignment_count",
					      "xact_count",	    "query_count",
					      "bytes_received",	    "bytes_sent",
					      "xact_time",	    "query_time",
					      "wait_time",	    "client_parse_count",
					      "server_parse_count", "bind_count" };
	static const char *const averages[] = { "database",
						"server_assignment_count",
						"xact_count",
						"query_count",
						"bytes_received",
						"bytes_sent",
						"xact_time",
						"query_time",
						"wait_time",
						"avg_client_parse_count",
						"avg_server_parse_count",
						"avg_bind_count" };
	struct worker *w = c->w;
	pool_stats_refresh(w);
	struct ctab t;
	if (kind == CS_BOTH)
		ctab_begin(&t, out, "sNNNNNNNNNNNNNNNNNNNNNN", both);
	else
		ctab_begin(&t, out, "sNNNNNNNNNNN", kind == CS_TOTALS ? totals : averages);
	struct crow r = { .n = 0 };
	struct list_node *pos, *tmp;
	list_for_each_safe(pos, tmp, &w->pools)
	{
		struct pool *p = list_entry(pos, struct pool, node);
		if (console_pool_seen(w, p, false))
			continue;
		struct pool_stats total, avg;
		console_db_stats(w, p, &total, &avg);
		crow_s(&r, p->database);
		if (kind != CS_AVERAGES)
			crow_stats(&r, &total);
		if (kind != CS_TOTALS)
			crow_stats(&r, &avg);
		ctab_row(&t, &r);
	}
	console_done(out, "SHOW");
}

static void console_show_stats(struct client *c, struct builder *out)
{
	console_show_stats_kind(c, out, CS_BOTH);
}

static void console_show_stats_totals(struct client *c, struct builder *out)
{
	console_show_stats_kind(c, out, CS_TOTALS);
}

static void console_show_stats_averages(struct client *c, struct builder *out)
{
	console_show_stats_kind(c, out, CS_AVERAGES);
}

static void console_show_totals(struct client *c, struct builder *out)
{
	static const char *const cols[] = { "name", "value" };
	static const char *const names[] = { "server_assignment_count",
					     "xact_count",
					     "query_count",
					     "received",
					     "sent",
					     "xact_time",
					     "query_time",
					     "wait_time",
					     "client_parse_count",
					     "server_parse_count",
					     "bind_count" };
	struct worker *w = c->w;
	pool_stats_refresh(w);
	struct pool_stats total = { 0 }, newer = { 0 }, older = { 0 }, avg;
	struct list_node *pos, *tmp;
	list_for_each_safe(pos, tmp, &w->pools)
	{
		struct pool *p = list_entry(pos, struct pool, node);
		stats_pool_add(&total, &p->cur);
		stats_pool_add(&newer, &p->newer);
		stats_pool_add(&older, &p->older);
	}
	stats_pool_average(&avg, &newer, &older, (w->stats_newer_ms - w->stats_older_ms) * 1000u);
	struct crow vals = { .n = 0 }, av = { .n = 0 };
	crow_stats(&vals, &total);
	crow_stats(&av, &avg);
	struct ctab t;
	ctab_begin(&t, out, "sN", cols);
	for (int pass = 0; pass < 2; pass++) {
		const struct crow *src = pass ? &av : &vals;
		for (int i = 0; i < 11; i++) {
			char name[64];
			snprintf(name, sizeof(name), "%s_%s", pass ? "avg" : "total", names[i]);
			struct crow r = { .n = 0 };
			crow_s(&r, name);
			crow_s(&r, src->v[i]);
			ctab_row(&t, &r);
		}
	}
	console_done(out, "SHOW");
}

static void console_show_databases(struct client *c, struct builder *out)
{
	static const char *const cols[] = { "name",
					    "host",
					    "port",
					    "database",
					    "force_user",
					    "pool_size",
					    "min_pool_size",
					    "reserve_pool_size",
					    "server_lifetime",
					    "pool_mode",
					    "load_balance_hosts",
					    "max_connections",
					    "current_connections",
					    "max_client_connections",
					    "current_client_connections",
					    "paused",
					    "disabled" };
	struct worker *w = c->w;
	const struct pool_conf *pc = &w->cfg->pool;
	int primary = worker_login_node(w);
	const struct backend_conf *b =
		primary >= 0 && primary < w->cfg->n_backends ? &w->cfg->backends[primary] : NULL;
	struct ctab t;
	ctab_begin(&t, out, "ssissiiiissiiiiii", cols);
	struct list_node *pos, *tmp;
	list_for_each_safe(pos, tmp, &w->pools)
	{
		struct pool *p = list_entry(pos, struct pool, node);
		if (console_pool_seen(w, p, false))
			continue;
		struct pool_counts counts;
		console_pool_counts(w, p, false, &counts);
		int clients = 0;
		struct list_node *qpos, *qtmp;
		list_for_each_safe(qpos, qtmp, &w->pools)
		{
			struct pool *q = list_entry(qpos, struct pool, node);
			if (console_same(q, p, false))
				clients += q->n_clients;
		}
		struct crow r = { .n = 0 };
		crow_s(&r, p->database);
		crow_s(&r, b ? b->host : NULL);
		crow_i(&r, b ? b->port : 0);
		crow_s(&r, p->database);
		crow_s(&r, NULL);
		crow_i(&r, pc->pool_size);
		crow_i(&r, pc->min_pool_size);
		crow_i(&r, 0);
		crow_i(&r, (int64_t)(pc->server_lifetime_ms / 1000));
		crow_s(&r, console_mode_name(w));
		crow_s(&r, NULL);
		crow_i(&r, pc->max_db_connections);
		crow_i(&r, counts.servers);
		crow_i(&r, 0);
		crow_i(&r, clients);
		crow_i(&r, pool_db_paused(w, p->database) ? 1 : 0);
		crow_i(&r, 0);
		ctab_row(&t, &r);
	}
	console_done(out, "SHOW");
}

static bool console_user_seen(const struct worker *w, const struct pool *p)
{
	const struct list_node *pos;
	for (pos = w->pools.next; pos != &w->pools; pos = pos->next) {
		const struct pool *q = list_entry(pos, struct pool, node);
		if (q == p)
			return false;
		if (strcmp(q->user, p->user) == 0)
			return true;
	}
	return false;
}

static void console_show_users(struct client *c, struct builder *out)
{
	static const char *const cols[] = { "name",
					    "pool_size",
					    "reserve_pool_size",
					    "pool_mode",
					    "max_user_connections",
					    "current_connections",
					    "max_user_client_connections",
					    "current_client_connections" };
	struct worker *w = c->w;
	struct ctab t;
	ctab_begin(&t, out, "ssssiiii", cols);
	struct list_node *pos, *tmp;
	list_for_each_safe(pos, tmp, &w->pools)
	{
		struct pool *p = list_entry(pos, struct pool, node);
		if (console_user_seen(w, p))
			continue;
		int servers = 0, clients = 0;
		struct list_node *qpos, *qtmp;
		list_for_each_safe(qpos, qtmp, &w->pools)
		{
			struct pool *q = list_entry(qpos, struct pool, node);
			if (strcmp(q->user, p->user) == 0) {
				servers += q->n_servers;
				clients += q->n_clients;
			}
		}
		struct crow r = { .n = 0 };
		crow_s(&r, p->user);
		crow_s(&r, "");
		crow_s(&r, "");
		crow_s(&r, NULL);
		crow_i(&r, w->cfg->pool.max_user_connections);
		crow_i(&r, servers);
		crow_i(&r, 0);
		crow_i(&r, clients);
		ctab_row(&t, &r);
	}
	console_done(out, "SHOW");
}

static void console_config_row(void *arg, const char *key, const char *value, const char *def,
			       bool reloadable)
{
	struct crow r = { .n = 0 };
	crow_s(&r, key);
	crow_s(&r, value);
	crow_s(&r, def);
	crow_s(&r, reloadable ? "yes" : "no");
	ctab_row(arg, &r);
}

static void console_show_config(struct client *c, struct builder *out)
{
	static const char *const cols[] = { "key", "value", "default", "changeable" };
	struct ctab t;
	ctab_begin(&t, out, "ssss", cols);
	config_foreach_setting(c->w->cfg, console_config_row, &t);
	/* PgBouncer's names of the same settings, for tools that read them (pgbouncer_exporter's
	 * pgbouncer_config_* gauges). */
	const struct config *cfg = c->w->cfg;
	const struct {
		const char *key;
		int64_t value;
		const char *def;
	} aliases[] = {
		{ "listen_port", cfg->port, "9999" },
		{ "max_client_conn", cfg->pool.max_client_conn, "10000" },
		{ "default_pool_size", cfg->pool.pool_size, "20" },
		{ "min_pool_size", cfg->pool.min_pool_size, "0" },
		{ "max_db_connections", cfg->pool.max_db_connections, "0" },
		{ "max_user_connections", cfg->pool.max_user_connections, "0" },
		{ "query_wait_timeout", cfg->pool.query_wait_timeout_ms / 1000, "120" },
		{ "server_lifetime", cfg->pool.server_lifetime_ms / 1000, "3600" },
		{ "server_idle_timeout", cfg->pool.server_idle_timeout_ms / 1000, "600" },
	};
	for (size_t i = 0; i < sizeof(aliases) / sizeof(aliases[0]); i++) {
		struct crow r = { .n = 0 };
		crow_s(&r, aliases[i].key);
		crow_i(&r, aliases[i].value);
		crow_s(&r, aliases[i].def);
		crow_s(&r, "yes");
		ctab_row(&t, &r);
	}
	struct crow r = { .n = 0 };
	crow_s(&r, "pool_mode");
	crow_s(&r, console_mode_name(c->w));
	crow_s(&r, "session");
	crow_s(&r, "no");
	ctab_row(&t, &r);
	console_done(out, "SHOW");
}

static int console_list_len(const struct list_node *head)
{
	int n = 0;
	for (const struct list_node *p = head->next; p != head; p = p->next)
		n++;
	return n;
}

static void console_show_lists(struct client *c, struct builder *out)
{
	static const char *const cols[] = { "list", "items" };
	struct worker *w = c->w;
	int dbs = 0, users = 0, pools = 0;
	struct list_node *pos, *tmp;
	list_for_each_safe(pos, tmp, &w->pools)
	{
		struct pool *p = list_entry(pos, struct pool, node);
		pools++;
		dbs += !console_pool_seen(w, p, false);
		users += !console_user_seen(w, p);
	}
	const struct {
		const char *name;
		int n;
	} rows[] = {
		{ "databases", dbs },
		{ "users", users },
		{ "peers", 0 },
		{ "pools", pools },
		{ "peer_pools", 0 },
		{ "free_clients", 0 },
		{ "used_clients", w->n_clients },
		{ "login_clients", console_list_len(&w->login_clients) },
		{ "free_servers", 0 },
		{ "used_servers", w->n_servers },
		{ "dns_names", 0 },
		{ "dns_zones", 0 },
		{ "dns_queries", 0 },
		{ "dns_pending", 0 },
	};
	struct ctab t;
	ctab_begin(&t, out, "si", cols);
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		struct crow r = { .n = 0 };
		crow_s(&r, rows[i].name);
		crow_i(&r, rows[i].n);
		ctab_row(&t, &r);
	}
	console_done(out, "SHOW");
}

static void console_show_version(struct client *c, struct builder *out)
{
	(void)c;
	static const char *const cols[] = { "version" };
	struct ctab t;
	ctab_begin(&t, out, "s", cols);
	struct crow r = { .n = 0 };
	crow_s(&r, CONSOLE_VERSION);
	ctab_row(&t, &r);
	console_done(out, "SHOW");
}

static void console_show_state(struct client *c, struct builder *out)
{
	static const char *const cols[] = { "key", "value" };
	struct worker *w = c->w;
	bool paused = w->pause_all || w->n_paused_dbs > 0;
	struct ctab t;
	ctab_begin(&t, out, "ss", cols);
	const char *vals[3][2] = { { "active", paused ? "no" : "yes" },
				   { "paused", w->pause_all ? "yes" : "no" },
				   { "suspended", "no" } };
	for (int i = 0; i < 3; i++) {
		struct crow r = { .n = 0 };
		crow_s(&r, vals[i][0]);
		crow_s(&r, vals[i][1]);
		ctab_row(&t, &r);
	}
	console_done(out, "SHOW");
}

static void console_show_help(struct client *c, struct builder *out)
{
	(void)c;
	builder_start(out, PqMsg_NoticeResponse);
	builder_put_u8(out, 'S');
	builder_put_cstr(out, "NOTICE");
	builder_put_u8(out, 'C');
	builder_put_cstr(out, "00000");
	builder_put_u8(out, 'M');
	builder_put_cstr(out, "Console usage");
	builder_put_u8(out, 'D');
	builder_put_cstr(out, "\n\tSHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|USERS|VERSION\n"
			      "\tSHOW LISTS|STATE\n"
			      "\tSHOW STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS\n"
			      "\tRELOAD\n"
			      "\tPAUSE [<db>]\n"
			      "\tRESUME [<db>]\n"
			      "\tRECONNECT [<db>]\n"
			      "\tKILL [<db>]\n"
			      "\tKILL_CLIENT <client_id>\n"
			      "\tSHUTDOWN\n"
			      "\tWAIT_CLOSE [<db>]");
	builder_put_u8(out, 0);
	builder_finish(out);
	console_done(out, "SHOW");
}

typedef void (*console_show_fn)(struct client *, struct builder *);

bool console_show(struct client *c, const char *what, struct builder *out)
{
	static const struct {
		const char *name;
		console_show_fn fn;
	} shows[] = {
		{ "pools", console_show_pools },
		{ "clients", console_show_clients },
		{ "servers", console_show_servers },
		{ "stats", console_show_stats },
		{ "stats_totals", console_show_stats_totals },
		{ "stats_averages", console_show_stats_averages },
		{ "totals", console_show_totals },
		{ "databases", console_show_databases },
		{ "users", console_show_users },
		{ "config", console_show_config },
		{ "lists", console_show_lists },
		{ "version", console_show_version },
		{ "state", console_show_state },
		{ "help", console_show_help },
	};
	for (size_t k = 0; k < sizeof(shows) / sizeof(shows[0]); k++) {
		if (strcasecmp(what, shows[k].name) == 0) {
			shows[k].fn(c, out);
			return true;
		}
	}
	return false;
}
