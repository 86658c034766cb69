/*
 * The worker: listeners, cluster views, shutdown and reload; it starts the janitor (timeouts,
 * janitor.c). See worker.h.
 *
 * Reload reads files and may resolve names, so it runs on libuv's thread pool; only the swap of
 * the finished config happens on the loop. Listen addresses, ports and backends are fixed at start.
 */
#include "pool/worker.h"

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "http/http_server.h"
#include "pool/client.h"
#include "pool/janitor.h"
#include "protocol/pqmsg.h"
#include "pool/pool.h"
#include "pool/server.h"
#include "util/log.h"

static void worker_on_connection(struct listener *l, int fd, const struct sockaddr_storage *peer)
{
	struct worker *w = l->owner;
	if (fd < 0) {
		/* At EMFILE the listener already drained the backlog with its reserve descriptor.
		 */
		log_warning("listener", 0, "accept on %s failed: %s", l->name, uv_strerror(fd));
		return;
	}
	client_accept(w, fd, peer, l->role);
}

bool worker_fd_available(const struct worker *w)
{
	uint64_t used = (uint64_t)w->n_clients + (uint64_t)w->n_servers +
			(uint64_t)w->n_cancel_conns + (uint64_t)w->n_listeners +
			(uint64_t)http_server_conn_count(w->http);
	return used + WORKER_FD_RESERVE < w->fd_limit;
}

static void worker_cluster_async_cb(uv_async_t *a)
{
	struct worker *w = a->data;
	struct cluster_view *v = malloc(sizeof(*v));
	if (!v) {
		log_error("main", 0, "out of memory reading a cluster view");
		return;
	}
	cluster_view_copy(w->cluster, v);
	if (v->seq != w->router.view.seq)
		worker_apply_view(w, v);
	free(v);
}

/* Called on the cluster manager's thread: only uv_async_send is allowed here. */
static void worker_cluster_notify(void *arg)
{
	struct worker *w = arg;
	uv_async_send(&w->cluster_async);
}

bool worker_start_cluster(struct worker *w)
{
	if (uv_async_init(&w->loop, &w->cluster_async, worker_cluster_async_cb) < 0)
		return false;
	w->cluster_async.data = w;
	w->cluster_async_open = true;
	w->cluster = cluster_start(w->cfg, worker_cluster_notify, w);
	if (!w->cluster)
		return false;
	/* Discover the primary before taking clients, bounded by one check (and a little). */
	uint32_t wait = w->cfg->health_check.timeout_ms + 500;
	if (!cluster_wait_discovery(w->cluster, wait))
		log_warning("main", 0,
			    "no primary node found within %u ms; writes fail (08006) until one is",
			    wait);
	worker_cluster_async_cb(&w->cluster_async);
	return true;
}

void worker_report_backend_error(struct worker *w, int node)
{
	if (w->cluster && w->cfg->failover_on_backend_error)
		cluster_report_backend_error(w->cluster, node);
}

#define CATALOG_RETRY_MS 60000 /* a failed pg_proc load is tried again after this */

struct catalog_job {
	uv_work_t req;
	struct worker *w; /* borrowed */
	int db;
	uint64_t generation;
	char *host, *user, *password, *dbname; /* owned copies: the config may be reloaded */
	struct libpq_tls tls;		       /* owned copies */
	int port;
	uint32_t timeout_ms;
	struct func_catalog *catalog; /* result, owned until installed */
	char err[256];
};

static void worker_catalog_job_free(struct catalog_job *job)
{
	free(job->host);
	free(job->user);
	free(job->password);
	free(job->dbname);
	libpq_tls_free(&job->tls);
	free(job);
}

static void worker_catalog_work(uv_work_t *req)
{
	struct catalog_job *job = req->data;
	struct catalog_source src = { job->host,   job->port,	    job->user, job->password,
				      job->dbname, job->timeout_ms, job->tls };
	job->catalog = catalog_load(&src, job->err, sizeof(job->err));
	/*
	 * libpq's result for pg_proc (a few thousand rows) was freed in this thread's malloc arena,
	 * where nothing else would reuse it: about 280 KB stay resident for the process's life.
	 * malloc_trim hands those pages back; it runs here, in the thread pool, never on the loop.
	 */
	malloc_trim(0);
}

static void worker_catalog_done(uv_work_t *req, int status)
{
	struct catalog_job *job = req->data;
	struct worker *w = job->w;
	if (status != 0 && job->catalog) {
		catalog_free(job->catalog);
		job->catalog = NULL;
	}
	if (job->catalog)
		log_info("main", 0, "read %zu function names from pg_proc of database \"%s\"",
			 catalog_size(job->catalog), job->dbname);
	else
		log_warning("main", 0,
			    "could not read pg_proc of database \"%s\" (as health_check.user): %s; "
			    "functions outside the built-in list go to the primary",
			    job->dbname, job->err[0] ? job->err : "cancelled");
	router_db_loaded(&w->router, job->db, job->generation, job->catalog, router_now_ms(),
			 CATALOG_RETRY_MS);
	worker_catalog_job_free(job);
}

void worker_want_catalog(struct worker *w, int db)
{
	struct router *r = &w->router;
	if (w->shutdown != WS_RUNNING || !r->cfg->load_balance.enabled || w->n_nodes < 2 ||
	    !router_db_wants_catalog(r, db, router_now_ms()))
		return;
	int node = worker_login_node(w);
	const struct backend_conf *b = &w->cfg->backends[node];
	const struct health_check_conf *hc = &w->cfg->health_check;
	struct catalog_job *job = calloc(1, sizeof(*job));
	if (!job)
		return;
	job->w = w;
	job->db = db;
	job->generation = r->generation;
	job->host = strdup(b->host);
	job->port = b->port;
	job->user = strdup(hc->user);
	job->password = strdup(hc->password);
	job->dbname = strdup(r->dbs[db].name);
	job->timeout_ms = hc->timeout_ms < 2000 ? 2000 : hc->timeout_ms;
	job->req.data = job;
	struct libpq_tls tls;
	config_backend_libpq_tls(w->cfg, node, &tls);
	bool tls_ok = libpq_tls_dup(&tls, &job->tls);
	if (!job->host || !job->user || !job->password || !job->dbname || !tls_ok ||
	    uv_queue_work(&w->loop, &job->req, worker_catalog_work, worker_catalog_done) < 0) {
		worker_catalog_job_free(job);
		return;
	}
	r->dbs[db].loading = true;
}

int worker_login_node(struct worker *w)
{
	int p = router_primary(&w->router);
	if (p >= 0)
		return p;
	for (int i = 0; i < w->n_nodes; i++)
		if (router_node_usable(&w->router, i))
			return i;
	return 0;
}

/* Closes the backend connections of a node that is no longer usable (or no longer what it was). */
/* The first server of node on list, or NULL. */
static struct server *worker_first_on_node(struct list_node *list, int node)
{
	struct list_node *pos, *tmp;
	list_for_each_safe(pos, tmp, list)
	{
		struct server *s = list_entry(pos, struct server, node);
		if (s->node_id == node && !s->draining)
			return s;
	}
	return NULL;
}

/*
 * Closes the connections to a node that left the view. drain: the node is a standby that still
 * answers (an operator's DETACH): busy links finish their statement or transaction first
 * (server_start_drain); idle ones go at once, their sessions move on.
 */
static void worker_drop_node(struct worker *w, int node, const char *why, bool drain)
{
	struct list_node *lists[] = { &w->connecting_servers, &w->login_servers, &w->active_servers,
				      &w->reset_servers };
	for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++) {
		/*
		 * Rescanned from the head after each close: a session that ends closes its other
		 * links too, which may be the next entries of this very list. Each round closes one
		 * server (it leaves the list), so this ends.
		 */
		struct server *s;
		while ((s = worker_first_on_node(lists[i], node)) != NULL) {
			struct client *c = s->client;
			bool idle = s->state == SV_ACTIVE && server_at_boundary(s) &&
				    s->txn_status == TXN_IDLE;
			if (drain && c && s->state == SV_ACTIVE && !idle) {
				server_start_drain(s); /* skipped by worker_first_on_node now */
				continue;
			}
			server_close(s, why);
			if (c)
				client_link_lost(c, node, idle ? LINK_LOST_IDLE : LINK_LOST_BUSY,
						 "57P01", why);
		}
	}
	struct list_node *pos, *tmp;
	list_for_each_safe(pos, tmp, &w->pools)
	{
		struct pool *p = list_entry(pos, struct pool, node);
		struct list_node *spos, *stmp;
		list_for_each_safe(spos, stmp, &p->nodes[node].idle_servers)
			server_close(list_entry(spos, struct server, node), why);
	}
}

/* Draining links of node that stopped answering are closed now: their work cannot end. */
static void worker_end_drains(struct worker *w, int node)
{
	struct list_node *pos, *tmp;
	bool found = true;
	/* Searched again after each close: a session that ends closes its other links too. */
	while (found) {
		found = false;
		list_for_each_safe(pos, tmp, &w->active_servers)
		{
			struct server *s = list_entry(pos, struct server, node);
			if (s->draining && s->node_id == node) {
				server_end_drain(s, "stopped answering health checks");
				found = true;
				break;
			}
		}
	}
}

/* What worker_apply_view compares of a node in the view it replaces (not the whole view: it is
 * some 20 KB, and views come several times a second). */
struct node_before {
	enum node_status status;
	enum node_role role;
	bool pg_up;
};

void worker_apply_view(struct worker *w, const struct cluster_view *v)
{
	const struct cluster_view *cur = &w->router.view;
	struct {
		int n_nodes;
		uint64_t seq;
		struct node_before nodes[CLUSTER_MAX_NODES];
	} old = { .n_nodes = cur->n_nodes, .seq = cur->seq };
	for (int i = 0; i < old.n_nodes && i < CLUSTER_MAX_NODES; i++)
		old.nodes[i] = (struct node_before){ cur->nodes[i].status, cur->nodes[i].role,
						     cur->nodes[i].pg_up };
	router_set_view(&w->router, v);
	for (int i = 0; i < w->n_nodes && i < v->n_nodes; i++) {
		bool was = old.n_nodes > i &&
			   (old.nodes[i].status == NODE_UP || old.nodes[i].status == NODE_WAITING);
		bool lost =
			!router_node_usable(&w->router, i) && v->nodes[i].status != NODE_WAITING;
		/* A primary that became a standby (switchover, demotion) must not keep sessions
		 * that write; a standby promoted keeps its connections: they stay valid. */
		bool role_changed = old.n_nodes > i && old.seq &&
				    old.nodes[i].role == NODE_ROLE_PRIMARY &&
				    v->nodes[i].role == NODE_ROLE_STANDBY;
		if ((was && lost) || role_changed) {
			char why[CLUSTER_REASON_MAX + 64];
			snprintf(why, sizeof(why), "backend node %d %s%s%s", i,
				 role_changed ? "changed role" : "was detached",
				 v->nodes[i].reason[0] ? ": " : "", v->nodes[i].reason);
			/* A standby that still answers (an operator's DETACH) loses nothing by
			 * letting reads in flight end; a primary that changed role must stop now.
			 */
			bool drain = !role_changed && v->nodes[i].pg_up &&
				     v->nodes[i].role == NODE_ROLE_STANDBY;
			log_info("main", 0, "%s; closing its connections%s", why,
				 drain ? " (busy ones when their work ends)" : "");
			worker_drop_node(w, i, why, drain);
		}
		if (w->n_draining && old.n_nodes > i && old.nodes[i].pg_up && !v->nodes[i].pg_up)
			worker_end_drains(w, i);
	}
	/* Clients waiting for a primary or a standby try again. */
	/*
	 * Each gets one try: a client that still finds no node waits again at the tail of this
	 * very list, so walking it to its end would never end. Every try takes the head off.
	 */
	for (int n = w->n_nodeless; n > 0 && !list_empty(&w->nodeless_clients); n--)
		client_view_changed(
			list_entry(list_first(&w->nodeless_clients), struct client, node));
	pool_kick_all(w);
}

void worker_close_idle_servers(struct worker *w)
{
	struct list_node *pos, *tmp;
	list_for_each_safe(pos, tmp, &w->pools)
	{
		struct pool *p = list_entry(pos, struct pool, node);
		for (int n = 0; n < w->n_nodes; n++) {
			struct list_node *spos, *stmp;
			list_for_each_safe(spos, stmp, &p->nodes[n].idle_servers) server_close(
				list_entry(spos, struct server, node), "shutting down");
		}
	}
}

static void worker_close_all_clients(struct worker *w)
{
	struct list_node *lists[2] = { &w->login_clients, &w->active_clients };
	for (int i = 0; i < 2; i++) {
		struct list_node *pos, *tmp;
		list_for_each_safe(pos, tmp, lists[i])
		{
			struct client *c = list_entry(pos, struct client, node);
			client_disconnect(c, "57P01",
					  "terminating connection due to administrator command");
		}
	}
	struct list_node *pos, *tmp;
	list_for_each_safe(pos, tmp, &w->pools)
	{
		struct pool *p = list_entry(pos, struct pool, node);
		for (int n = 0; n < w->n_nodes; n++)
			while (p->nodes[n].n_waiting)
				client_disconnect(
					list_entry(list_first(&p->nodes[n].waiting_clients),
						   struct client, node),
					"57P01",
					"terminating connection due to administrator command");
	}
	while (!list_empty(&w->nodeless_clients))
		client_disconnect(list_entry(list_first(&w->nodeless_clients), struct client, node),
				  "57P01", "terminating connection due to administrator command");
	worker_close_idle_servers(w);
}

static void worker_close_listeners(struct worker *w)
{
	for (int i = 0; i < w->n_listeners; i++)
		listener_close(&w->listeners[i]);
}

void worker_check_shutdown_done(struct worker *w)
{
	if (w->shutdown == WS_RUNNING)
		return;
	if (w->n_clients > 0 && w->shutdown == WS_SMART)
		return;
	if (w->n_clients == 0)
		worker_close_idle_servers(w);
	if (w->n_clients > 0 || w->n_servers > 0 || w->n_cancel_conns > 0)
		return;
	uv_stop(&w->loop);
}

void worker_begin_shutdown(struct worker *w, enum worker_shutdown mode)
{
	if (mode <= w->shutdown && w->shutdown != WS_RUNNING)
		return;
	if (w->shutdown == WS_RUNNING) {
		w->shutdown_started_ms = uv_now(&w->loop);
		worker_close_listeners(w);
	}
	w->shutdown = mode;
	if (mode == WS_SMART) {
		log_info("main", 0,
			 "smart shutdown: not accepting clients, waiting for %d to leave",
			 w->n_clients);
	} else {
		log_info("main", 0, "fast shutdown: closing %d clients", w->n_clients);
		worker_close_all_clients(w);
	}
	worker_check_shutdown_done(w);
}

static bool worker_resolve_nodes(struct worker *w, const struct config *cfg, char *err,
				 size_t errcap)
{
	for (int i = 0; i < cfg->n_backends; i++) {
		const struct backend_conf *b = &cfg->backends[i];
		if (!server_resolve(b->host, b->port, &w->node_addr[i])) {
			snprintf(err, errcap, "%s:%d: could not resolve backend host \"%s\"",
				 cfg->path, b->line, b->host);
			return false;
		}
	}
	w->n_nodes = cfg->n_backends;
	return true;
}

static void worker_raise_fd_limit(struct worker *w)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
		w->fd_limit = 1024;
		return;
	}
	if (rl.rlim_cur < rl.rlim_max) {
		rlim_t old = rl.rlim_cur;
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
			log_info("main", 0, "raised the open file limit from %llu to %llu",
				 (unsigned long long)old, (unsigned long long)rl.rlim_cur);
		else
			getrlimit(RLIMIT_NOFILE, &rl);
	}
	w->fd_limit = rl.rlim_cur == RLIM_INFINITY ? (1u << 20) : (uint64_t)rl.rlim_cur;
}

/* The loop is about to wait for events: what it handles after the wait reads the clock anew. */
static void worker_clock_reset_cb(uv_prepare_t *h)
{
	struct worker *w = h->data;
	w->clock_us = 0;
}

/* Unref'd: the prepare handle never keeps the loop (and a shutdown) running. */
static void worker_start_clock(struct worker *w)
{
	w->clock_us = 0;
	uv_prepare_init(&w->loop, &w->clock_reset); /* cannot fail on an open loop */
	w->clock_reset.data = w;
	uv_prepare_start(&w->clock_reset, worker_clock_reset_cb);
	uv_unref((uv_handle_t *)&w->clock_reset);
}

bool worker_init(struct worker *w, struct config *cfg, char *err, size_t errcap)
{
	memset(w, 0, sizeof(*w));
	w->cfg = cfg;
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	w->started_wall_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
	list_init(&w->cancel_reqs);
	list_init(&w->login_clients);
	list_init(&w->active_clients);
	list_init(&w->closing_clients);
	list_init(&w->connecting_servers);
	list_init(&w->login_servers);
	list_init(&w->active_servers);
	list_init(&w->reset_servers);
	list_init(&w->closing_servers);
	list_init(&w->pools);
	list_init(&w->nodeless_clients);
	iobuf_pool_init(&w->bufs);
	authq_sched_init(&w->authq);
	worker_raise_fd_limit(w);
	if (!cancel_map_init(&w->cancels)) {
		snprintf(err, errcap, "out of memory");
		return false;
	}
	int rc = uv_loop_init(&w->loop);
	if (rc < 0) {
		snprintf(err, errcap, "uv_loop_init: %s", uv_strerror(rc));
		return false;
	}
	worker_start_clock(w);
	if (!worker_resolve_nodes(w, cfg, err, errcap))
		return false;
	if (!router_init(&w->router, cfg, err, errcap))
		return false;
	/* The main port splits; each listeners entry is pinned to its role. */
	for (int l = -1; l < cfg->n_listeners; l++) {
		int port = l < 0 ? cfg->port : cfg->listeners[l].port;
		int role = l < 0 ? LISTEN_ROLE_AUTO : cfg->listeners[l].role;
		for (int i = 0; i < cfg->n_listen; i++) {
			int n = 0;
			rc = listener_open_all(&w->listeners[w->n_listeners],
					       WORKER_MAX_LISTENERS - w->n_listeners, &n, &w->loop,
					       cfg->listen_addresses[i], port, worker_on_connection,
					       w, err, errcap);
			if (rc < 0)
				return false;
			for (int k = 0; k < n; k++)
				w->listeners[w->n_listeners + k].role = role;
			w->n_listeners += n;
		}
	}
	if (!http_server_start(w, &w->http, err, errcap))
		return false;
	janitor_start(w);
	for (int i = 0; i < w->n_listeners; i++)
		log_info("main", 0, "listening on %s", w->listeners[i].name);
	return true;
}

static void worker_close_walk_cb(uv_handle_t *h, void *arg)
{
	(void)arg;
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

int worker_run(struct worker *w)
{
	uv_run(&w->loop, UV_RUN_DEFAULT);
	/* The HTTP connections' close callbacks free them: close them before the walk below. */
	http_server_close(w->http);
	/* No view may arrive once its handle is closed: stop the manager's thread first. */
	cluster_stop(w->cluster);
	w->cluster = NULL;
	/* Stopped: close what is left (listeners, timers, signal handles) and let callbacks run. */
	uv_walk(&w->loop, worker_close_walk_cb, NULL);
	uv_run(&w->loop, UV_RUN_DEFAULT);
	return w->exit_code;
}

void worker_destroy(struct worker *w)
{
	int rc = uv_loop_close(&w->loop);
	if (rc < 0)
		log_warning("main", 0, "event loop closed with handles open: %s", uv_strerror(rc));
	cluster_stop(w->cluster);
	w->cluster = NULL;
	http_server_free(w->http);
	w->http = NULL;
	pool_free_all(w);
	router_free(&w->router);
	cancel_map_destroy(&w->cancels);
	authq_sched_destroy(&w->authq);
	iobuf_pool_destroy(&w->bufs);
	config_free(w->cfg);
	w->cfg = NULL;
}

void worker_apply_config(struct worker *w, struct config *cfg)
{
	char restart[512];
	config_diff_restart_keys(w->cfg, cfg, restart, sizeof(restart));
	if (restart[0])
		log_warning("main", 0,
			    "reload: changes to %s need a restart and are not applied yet",
			    restart);
	char err[512];
	if (!router_reconfigure(&w->router, cfg, err, sizeof(err))) {
		log_error("config", 0, "reload: %s; routing keeps its previous lists", err);
		w->router.cfg = cfg;
	}
	if (w->cluster && !cluster_update_config(w->cluster, cfg))
		log_error("config", 0, "reload: the cluster manager kept its previous settings");
	config_free(w->cfg);
	w->cfg = cfg;
	authq_sched_config_changed(&w->authq);
	log_set_level(w->force_debug ? LOG_LVL_DEBUG : (enum log_level)cfg->log_level);
	log_info("main", 0, "reload: configuration %s applied", cfg->path);
}

struct reload_job {
	uv_work_t req;
	struct worker *w;   /* borrowed */
	char *path;	    /* owned copy: the running config may be freed meanwhile */
	struct config *cfg; /* owned until applied */
	char err[4096];
};

static void worker_reload_work(uv_work_t *req)
{
	struct reload_job *job = req->data;
	job->err[0] = 0;
	job->cfg = config_load(job->path, job->err, sizeof(job->err));
}

static void worker_reload_done(uv_work_t *req, int status)
{
	struct reload_job *job = req->data;
	struct worker *w = job->w;
	w->reloading = false;
	if (status == 0 && job->cfg) {
		worker_apply_config(w, job->cfg);
	} else {
		config_free(job->cfg);
		char *save = NULL;
		for (char *line = strtok_r(job->err, "\n", &save); line;
		     line = strtok_r(NULL, "\n", &save))
			log_error("config", 0, "%s", line);
		log_error("main", 0, "reload failed: keeping the previous configuration");
	}
	free(job->path);
	free(job);
	if (w->reload_again && w->shutdown == WS_RUNNING) {
		w->reload_again = false;
		worker_reload(w);
	}
}

void worker_reload(struct worker *w)
{
	if (w->reloading) {
		w->reload_again = true;
		return;
	}
	struct reload_job *job = calloc(1, sizeof(*job));
	if (!job || !(job->path = strdup(w->cfg->path))) {
		free(job);
		log_error("main", 0, "reload: out of memory");
		return;
	}
	job->w = w;
	job->req.data = job;
	log_info("main", 0, "reload: reading %s", job->path);
	if (uv_queue_work(&w->loop, &job->req, worker_reload_work, worker_reload_done) < 0) {
		free(job->path);
		free(job);
		return;
	}
	w->reloading = true;
}
