/*
 * /metrics in Prometheus text format 0.0.4 (doc/http.md lists every family and its
 * pgbouncer_exporter / pgpool2_exporter counterpart). Read on the worker's loop from the
 * worker's own counters, pools and cluster view, so nothing is shared across threads; the
 * process figures come from /proc/self (procfs reads do not block on disk).
 */
#include <dirent.h>
#include <inttypes.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "failover/cluster.h"
#include "failover/watchdog.h"
#include "http/http_routes.h"
#include "pool/client.h"
#include "pool/pool.h"
#include "pool/stats.h"
#include "pool/worker.h"
#include "route/router.h"

static void prom_family(struct textbuf *b, const char *name, const char *type, const char *help)
{
	textbuf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void metrics_nodes(struct worker *w, struct textbuf *b)
{
	const struct router *r = &w->router;
	int n = r->view.n_nodes < w->cfg->n_backends ? r->view.n_nodes : w->cfg->n_backends;
	prom_family(b, "pgrelay_node_up", "gauge",
		    "1 if the node may take work for its role (SHOW pool_nodes status up).");
	for (int i = 0; i < n; i++) {
		textbuf_printf(b, "pgrelay_node_up{node_id=\"%d\",host=\"", i);
		textbuf_prom_label(b, w->cfg->backends[i].host);
		textbuf_printf(b, "\",port=\"%d\",role=\"%s\"} %d\n", w->cfg->backends[i].port,
			       cluster_role_name(r->view.nodes[i].role),
			       router_node_usable(r, i) ? 1 : 0);
	}
	prom_family(b, "pgrelay_node_replication_delay_bytes", "gauge",
		    "Bytes the standby's replay is behind the primary.");
	for (int i = 0; i < n; i++)
		textbuf_printf(b,
			       "pgrelay_node_replication_delay_bytes{node_id=\"%d\"} %" PRIu64 "\n",
			       i, r->view.nodes[i].replication_delay);
	prom_family(b, "pgrelay_node_replication_delay_seconds", "gauge",
		    "Replay delay of the standby in seconds, when known; 0 when it replayed "
		    "everything.");
	for (int i = 0; i < n; i++)
		if (r->view.nodes[i].has_delay_time)
			textbuf_printf(
				b, "pgrelay_node_replication_delay_seconds{node_id=\"%d\"} %.6f\n",
				i,
				r->view.nodes[i].replication_delay ? r->view.nodes[i].delay_s
								   : 0.0);
	prom_family(b, "pgrelay_node_selects_total", "counter",
		    "Reads routed to the node (SHOW pool_nodes select_cnt).");
	for (int i = 0; i < n; i++)
		textbuf_printf(b, "pgrelay_node_selects_total{node_id=\"%d\"} %" PRIu64 "\n", i,
			       r->select_cnt[i]);
	prom_family(b, "pgrelay_node_writes_total", "counter",
		    "Other units routed to the node (SHOW pool_backend_stats write_cnt).");
	for (int i = 0; i < n; i++)
		textbuf_printf(b, "pgrelay_node_writes_total{node_id=\"%d\"} %" PRIu64 "\n", i,
			       r->write_cnt[i]);
	prom_family(b, "pgrelay_health_checks_total", "counter",
		    "Health-check sessions by result (SHOW pool_health_check_stats).");
	for (int i = 0; i < n; i++) {
		const struct health_stats *s = &r->view.stats[i];
		textbuf_printf(b,
			       "pgrelay_health_checks_total{node_id=\"%d\",result=\"success\"} "
			       "%" PRIu64 "\n"
			       "pgrelay_health_checks_total{node_id=\"%d\",result=\"failure\"} "
			       "%" PRIu64 "\n"
			       "pgrelay_health_checks_total{node_id=\"%d\",result=\"skipped\"} "
			       "%" PRIu64 "\n",
			       i, s->success_count, i, s->fail_count, i, s->skip_count);
	}
}

/* True if an earlier pool in the list has p's database and user (pools also split by options;
 * the metrics add them up per pair). Quadratic in the number of pools, which is small. */
struct pool_sums {
	int clients_active, clients_waiting;
	struct pool_stats st; /* totals (pool->cur: pool_stats_refresh ran) */
	uint64_t maxwait_ms;  /* the longest current wait for a server connection */
	int srv_active[CONFIG_MAX_BACKENDS], srv_idle[CONFIG_MAX_BACKENDS],
		srv_reset[CONFIG_MAX_BACKENDS];
};

/* Adds pool q's clients, servers and statistics to s. */
static void pool_sum_add(struct worker *w, const struct pool *q, struct pool_sums *s)
{
	s->clients_waiting += q->n_waiting;
	s->clients_active += q->n_clients - q->n_waiting;
	stats_pool_add(&s->st, &q->cur);
	for (int i = 0; i < w->n_nodes; i++) {
		const struct pool_node *pn = &q->nodes[i];
		if (pn->n_waiting) {
			const struct client *c =
				list_entry(pn->waiting_clients.next, struct client, node);
			uint64_t waited = uv_now(&w->loop) - c->since_ms;
			if (waited > s->maxwait_ms)
				s->maxwait_ms = waited;
		}
		s->srv_idle[i] += pn->n_idle;
		s->srv_reset[i] += pn->n_resetting;
		s->srv_active[i] += pn->n_servers - pn->n_idle - pn->n_resetting;
	}
}

/* The pools of one (database, user), whatever their options: one series per family. */
struct pool_group {
	const struct pool *p; /* the first of them: its names label the series */
	struct pool_sums s;
};

static int pool_cmp_names(const void *a, const void *b)
{
	const struct pool *p = *(const struct pool *const *)a, *q = *(const struct pool *const *)b;
	int d = strcmp(p->database, q->database);
	return d ? d : strcmp(p->user, q->user);
}

/*
 * w's pools grouped by (database, user) with their sums, in name order: sorted once per scrape,
 * so that a scrape stays O(n log n) in the number of pools. NULL (and *n 0) when out of memory
 * or without pools; the caller frees.
 */
static struct pool_group *pool_groups(struct worker *w, size_t *n)
{
	size_t count = 0, k = 0;
	struct list_node *pos, *tmp;
	*n = 0;
	list_for_each_safe(pos, tmp, &w->pools) count++;
	if (count == 0)
		return NULL;
	const struct pool **sorted = malloc(count * sizeof(*sorted));
	struct pool_group *g = calloc(count, sizeof(*g));
	if (!sorted || !g) {
		free(sorted);
		free(g);
		return NULL;
	}
	list_for_each_safe(pos, tmp, &w->pools) sorted[k++] = list_entry(pos, struct pool, node);
	qsort(sorted, count, sizeof(*sorted), pool_cmp_names);
	for (size_t i = 0; i < count; i++) {
		if (*n == 0 || pool_cmp_names(&g[*n - 1].p, &sorted[i]) != 0)
			g[(*n)++].p = sorted[i];
		pool_sum_add(w, sorted[i], &g[*n - 1].s);
	}
	free(sorted);
	return g;
}

static void pool_labels(struct textbuf *b, const char *family, const struct pool *p)
{
	textbuf_printf(b, "%s{database=\"", family);
	textbuf_prom_label(b, p->database);
	textbuf_puts(b, "\",user=\"");
	textbuf_prom_label(b, p->user);
	textbuf_puts(b, "\",");
}

static void metrics_pools(struct textbuf *b, const struct pool_group *g, size_t n, int n_nodes)
{
	static const char *const srv_states[] = { "active", "idle", "reset" };
	prom_family(b, "pgrelay_pool_clients", "gauge",
		    "Logged-in clients per database and user: active (not waiting) or waiting for "
		    "a server connection.");
	for (size_t j = 0; j < n; j++) {
		pool_labels(b, "pgrelay_pool_clients", g[j].p);
		textbuf_printf(b, "state=\"active\"} %d\n", g[j].s.clients_active);
		pool_labels(b, "pgrelay_pool_clients", g[j].p);
		textbuf_printf(b, "state=\"waiting\"} %d\n", g[j].s.clients_waiting);
	}
	prom_family(b, "pgrelay_pool_servers", "gauge",
		    "Backend connections per database, user and node: active (linked, connecting "
		    "or logging in), idle, or reset (running the reset query).");
	for (size_t j = 0; j < n; j++) {
		const struct pool_sums *s = &g[j].s;
		for (int i = 0; i < n_nodes; i++) {
			const int v[3] = { s->srv_active[i], s->srv_idle[i], s->srv_reset[i] };
			for (int k = 0; k < 3; k++) {
				pool_labels(b, "pgrelay_pool_servers", g[j].p);
				textbuf_printf(b, "node_id=\"%d\",state=\"%s\"} %d\n", i,
					       srv_states[k], v[k]);
			}
		}
	}
}

/* The per-pool statistics of the pgbouncer console's SHOW STATS, per database and user. */
static void metrics_pool_stats(struct textbuf *b, const struct pool_group *g, size_t n)
{
	static const struct {
		const char *name, *type, *help;
	} fams[] = {
		{ "pgrelay_pool_transactions_total", "counter",
		  "Transactions ended (SHOW STATS total_xact_count)." },
		{ "pgrelay_pool_queries_total", "counter",
		  "Units answered (SHOW STATS total_query_count)." },
		{ "pgrelay_pool_received_bytes_total", "counter",
		  "Bytes received from clients (SHOW STATS total_received)." },
		{ "pgrelay_pool_sent_bytes_total", "counter",
		  "Bytes sent to clients (SHOW STATS total_sent)." },
		{ "pgrelay_pool_transaction_seconds_total", "counter",
		  "Time spent in transactions (SHOW STATS total_xact_time)." },
		{ "pgrelay_pool_query_seconds_total", "counter",
		  "Time spent in queries (SHOW STATS total_query_time)." },
		{ "pgrelay_pool_wait_seconds_total", "counter",
		  "Time clients waited for a server connection (SHOW STATS total_wait_time)." },
		{ "pgrelay_pool_server_assignments_total", "counter",
		  "Backend connections handed to clients (SHOW STATS "
		  "total_server_assignment_count)." },
		{ "pgrelay_pool_maxwait_seconds", "gauge",
		  "The longest current wait for a server connection (SHOW POOLS maxwait)." },
	};
	for (size_t k = 0; k < sizeof(fams) / sizeof(fams[0]); k++) {
		prom_family(b, fams[k].name, fams[k].type, fams[k].help);
		for (size_t j = 0; j < n; j++) {
			textbuf_printf(b, "%s{database=\"", fams[k].name);
			textbuf_prom_label(b, g[j].p->database);
			textbuf_puts(b, "\",user=\"");
			textbuf_prom_label(b, g[j].p->user);
			textbuf_puts(b, "\"");
			const struct pool_stats *st = &g[j].s.st;
			switch (k) {
			case 0:
				textbuf_printf(b, "} %" PRIu64 "\n", st->xact_count);
				break;
			case 1:
				textbuf_printf(b, "} %" PRIu64 "\n", st->query_count);
				break;
			case 2:
				textbuf_printf(b, "} %" PRIu64 "\n", st->bytes_in);
				break;
			case 3:
				textbuf_printf(b, "} %" PRIu64 "\n", st->bytes_out);
				break;
			case 4:
				textbuf_printf(b, "} %.6f\n", st->xact_time_us / 1e6);
				break;
			case 5:
				textbuf_printf(b, "} %.6f\n", st->query_time_us / 1e6);
				break;
			case 6:
				textbuf_printf(b, "} %.6f\n", st->wait_time_us / 1e6);
				break;
			case 7:
				textbuf_printf(b, "} %" PRIu64 "\n", st->server_assignment_count);
				break;
			default:
				textbuf_printf(b, "} %.3f\n", g[j].s.maxwait_ms / 1e3);
				break;
			}
		}
	}
}

/* Bytes of the clients still connected (the totals add those that left). */
static void metrics_live_bytes(struct worker *w, uint64_t *in, uint64_t *out)
{
	struct list_node *lists[4] = { &w->login_clients, &w->active_clients, &w->nodeless_clients,
				       &w->closing_clients };
	struct list_node *pos, *tmp;
	for (int k = 0; k < 4; k++) {
		list_for_each_safe(pos, tmp, lists[k])
		{
			const struct client *c = list_entry(pos, struct client, node);
			*in += c->conn.rx_bytes;
			*out += c->conn.tx_bytes;
		}
	}
	struct list_node *ppos, *ptmp;
	list_for_each_safe(ppos, ptmp, &w->pools)
	{
		struct pool *p = list_entry(ppos, struct pool, node);
		for (int i = 0; i < w->n_nodes; i++) {
			if (!p->nodes[i].n_waiting)
				continue;
			list_for_each_safe(pos, tmp, &p->nodes[i].waiting_clients)
			{
				const struct client *c = list_entry(pos, struct client, node);
				*in += c->conn.rx_bytes;
				*out += c->conn.tx_bytes;
			}
		}
	}
}

static void metrics_histogram(struct textbuf *b, const char *name, const uint64_t *bucket,
			      uint64_t sum_us, uint64_t count)
{
	uint64_t cum = 0;
	for (int i = 0; i <= STATS_BUCKETS; i++) {
		cum += bucket[i];
		if (i < STATS_BUCKETS)
			textbuf_printf(b, "%s_bucket{le=\"%g\"} %" PRIu64 "\n", name,
				       stats_bucket_bounds_us[i] / 1e6, cum);
		else
			textbuf_printf(b, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n", name, cum);
	}
	textbuf_printf(b, "%s_sum %.6f\n", name, sum_us / 1e6);
	textbuf_printf(b, "%s_count %" PRIu64 "\n", name, count);
}

static void metrics_totals(struct worker *w, struct textbuf *b)
{
	const struct relay_stats *st = &w->stats;
	prom_family(b, "pgrelay_transactions_total", "counter",
		    "Transactions ended (ReadyForQuery idle; an autocommit statement is one).");
	textbuf_printf(b, "pgrelay_transactions_total %" PRIu64 "\n", st->xact_cnt);
	prom_family(b, "pgrelay_queries_total", "counter",
		    "Units answered (a Query, or an extended batch up to Sync).");
	textbuf_printf(b, "pgrelay_queries_total %" PRIu64 "\n", st->query_cnt);
	prom_family(b, "pgrelay_query_duration_seconds", "histogram",
		    "From a unit being sent to its ReadyForQuery.");
	metrics_histogram(b, "pgrelay_query_duration_seconds", st->dur_bucket, st->dur_sum_us,
			  st->dur_count);
	prom_family(b, "pgrelay_client_wait_seconds", "histogram",
		    "How long clients waited for a server connection (or for a node), per wait.");
	metrics_histogram(b, "pgrelay_client_wait_seconds", st->wait_bucket, st->wait_sum_us,
			  st->wait_count);
	uint64_t in = st->bytes_in, out = st->bytes_out;
	metrics_live_bytes(w, &in, &out);
	prom_family(b, "pgrelay_client_received_bytes_total", "counter",
		    "Bytes received from clients (on the socket: TLS records included).");
	textbuf_printf(b, "pgrelay_client_received_bytes_total %" PRIu64 "\n", in);
	prom_family(b, "pgrelay_client_sent_bytes_total", "counter", "Bytes sent to clients.");
	textbuf_printf(b, "pgrelay_client_sent_bytes_total %" PRIu64 "\n", out);
	prom_family(b, "pgrelay_failovers_total", "counter",
		    "Failovers since start: success found a new primary, failure timed out.");
	textbuf_printf(b, "pgrelay_failovers_total{result=\"success\"} %" PRIu64 "\n",
		       w->router.view.failovers_ok);
	textbuf_printf(b, "pgrelay_failovers_total{result=\"failure\"} %" PRIu64 "\n",
		       w->router.view.failovers_failed);
	struct wd_state *wds = malloc(sizeof(*wds));
	if (wds && w->cluster && cluster_watchdog_state(w->cluster, wds)) {
		int live = 0;
		for (int i = 0; i < wds->n_members; i++)
			live += wds->members[i].present;
		prom_family(b, "pgrelay_watchdog_leader", "gauge",
			    "1 while this instance holds the watchdog leader key.");
		textbuf_printf(b, "pgrelay_watchdog_leader %d\n", wds->is_leader ? 1 : 0);
		prom_family(
			b, "pgrelay_watchdog_fenced", "gauge",
			"1 while this instance refuses writes (it lost etcd; doc/watchdog.md).");
		textbuf_printf(b, "pgrelay_watchdog_fenced %d\n", wds->fenced ? 1 : 0);
		prom_family(
			b, "pgrelay_watchdog_members", "gauge",
			"Instances holding a live etcd lease, as this instance last read them.");
		textbuf_printf(b, "pgrelay_watchdog_members %d\n", live);
	}
	free(wds);
	prom_family(b, "pgrelay_clients", "gauge", "Client connections, any state.");
	textbuf_printf(b, "pgrelay_clients %d\n", w->n_clients);
	prom_family(b, "pgrelay_servers", "gauge", "Backend connections, any state.");
	textbuf_printf(b, "pgrelay_servers %d\n", w->n_servers);
}

/* Open descriptors: entries of /proc/self/fd (bounded by the descriptor limit). */
static int metrics_count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		return -1;
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1; /* the descriptor opendir used */
}

/*
 * The count, at most a second old. Listing /proc/self/fd costs about 0.26 µs per descriptor, so
 * with thousands of clients it was most of a scrape's cost; a scraper polling every 100 ms now
 * pays it once a second. Per thread: the HTTP server answers on one loop.
 */
static int metrics_open_fds(struct worker *w)
{
	static _Thread_local int cached = -1;
	static _Thread_local uint64_t cached_at_ms;
	uint64_t now = uv_now(&w->loop);
	if (cached < 0 || now - cached_at_ms >= 1000) {
		cached = metrics_count_fds();
		cached_at_ms = now;
	}
	return cached;
}

static long metrics_rss_bytes(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	if (!f)
		return -1;
	long size = 0, rss = -1;
	if (fscanf(f, "%ld %ld", &size, &rss) != 2)
		rss = -1;
	fclose(f);
	return rss < 0 ? -1 : rss * sysconf(_SC_PAGESIZE);
}

static void metrics_process(struct worker *w, struct textbuf *b)
{
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	int64_t now_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
	prom_family(b, "pgrelay_uptime_seconds", "gauge", "Seconds since pgrelay started.");
	textbuf_printf(b, "pgrelay_uptime_seconds %.3f\n", (now_ms - w->started_wall_ms) / 1000.0);
	prom_family(b, "process_start_time_seconds", "gauge", "Start time, Unix seconds.");
	textbuf_printf(b, "process_start_time_seconds %.3f\n", w->started_wall_ms / 1000.0);
	int fds = metrics_open_fds(w);
	if (fds >= 0) {
		prom_family(b, "process_open_fds", "gauge", "Open file descriptors.");
		textbuf_printf(b, "process_open_fds %d\n", fds);
	}
	prom_family(b, "process_max_fds", "gauge", "Descriptor limit (RLIMIT_NOFILE).");
	textbuf_printf(b, "process_max_fds %" PRIu64 "\n", w->fd_limit);
	long rss = metrics_rss_bytes();
	if (rss >= 0) {
		prom_family(b, "process_resident_memory_bytes", "gauge", "Resident memory size.");
		textbuf_printf(b, "process_resident_memory_bytes %ld\n", rss);
	}
}

void http_metrics_write(struct worker *w, struct textbuf *b)
{
	prom_family(b, "pgrelay_up", "gauge", "1 while pgrelay serves.");
	textbuf_puts(b, "pgrelay_up 1\n");
	metrics_nodes(w, b);
	pool_stats_refresh(w);
	size_t n_groups;
	struct pool_group *groups = pool_groups(w, &n_groups);
	metrics_pools(b, groups, n_groups, w->n_nodes);
	metrics_pool_stats(b, groups, n_groups);
	free(groups);
	metrics_totals(w, b);
	metrics_process(w, b);
}
