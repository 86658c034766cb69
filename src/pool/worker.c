/*
 * The worker: listeners, the janitor (timeouts), shutdown and reload. See worker.h.
 *
 * Reload reads files and may resolve names, so it runs on libuv's thread pool; only the swap of
 * the finished config happens on the loop. Listen addresses, ports and backends are fixed at start.
 */
#include "pool/worker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "pool/client.h"
#include "pool/outstanding.h"
#include "protocol/pqmsg.h"
#include "pool/pool.h"
#include "pool/server.h"
#include "util/log.h"

#define CLOSING_GRACE_MS 5000 /* a peer that does not read our last bytes is cut after this */

static void worker_on_connection(struct listener *l, int status)
{
	struct worker *w = l->owner;
	if (status < 0) {
		/* libuv already drained the backlog with its reserve descriptor on EMFILE. */
		log_warning("listener", 0, "accept on %s failed: %s", l->name, uv_strerror(status));
		return;
	}
	client_accept(w, (uv_stream_t *)&l->tcp);
}

bool worker_fd_available(const struct worker *w)
{
	uint64_t used = (uint64_t)w->n_clients + (uint64_t)w->n_servers +
			(uint64_t)w->n_cancel_conns + (uint64_t)w->n_listeners;
	return used + WORKER_FD_RESERVE < w->fd_limit;
}

static void worker_sweep_clients(struct worker *w, uint64_t now)
{
	struct list_node *pos, *tmp;
	uint64_t login_timeout = w->cfg->authentication_timeout_ms;
	list_for_each_safe(pos, tmp, &w->login_clients)
	{
		struct client *c = list_entry(pos, struct client, node);
		if (login_timeout && now - c->since_ms >= login_timeout)
			client_disconnect(c, "08P01", "authentication timeout expired");
	}
	list_for_each_safe(pos, tmp, &w->closing_clients)
	{
		struct client *c = list_entry(pos, struct client, node);
		if (now - c->since_ms >= CLOSING_GRACE_MS)
			conn_close(&c->conn);
	}
}

static void worker_sweep_servers(struct worker *w, uint64_t now)
{
	struct list_node *pos, *tmp;
	uint64_t connect_timeout = w->cfg->pool.server_connect_timeout_ms;
	struct list_node *lists[3] = { &w->connecting_servers, &w->login_servers,
				       &w->reset_servers };
	for (int i = 0; i < 3; i++) {
		list_for_each_safe(pos, tmp, lists[i])
		{
			struct server *s = list_entry(pos, struct server, node);
			if (!connect_timeout || now - s->since_ms < connect_timeout)
				continue;
			struct client *c = s->client;
			log_info("server", s->id, "backend %d: %s timed out", s->node_id,
				 i == 2 ? "reset query" : "connection or login");
			if (i < 2)
				w->node_down_until_ms[s->node_id] = now + NODE_DOWN_HOLD_MS;
			server_close(s, "connect timeout");
			if (c)
				client_on_server_lost(c, "08006", "server connection timed out");
		}
	}
	list_for_each_safe(pos, tmp, &w->closing_servers)
	{
		struct server *s = list_entry(pos, struct server, node);
		if (now - s->since_ms >= CLOSING_GRACE_MS)
			conn_close(&s->conn);
	}
}

/* Timeouts of logged-in clients: waiting for a server, idle, idle inside a transaction. */
static void worker_sweep_pool_clients(struct worker *w, struct pool *p, uint64_t now)
{
	uint64_t wait = w->cfg->pool.query_wait_timeout_ms;
	struct list_node *pos, *tmp;
	list_for_each_safe(pos, tmp, &p->waiting_clients)
	{
		struct client *c = list_entry(pos, struct client, node);
		if (wait && now - c->since_ms >= wait)
			client_disconnect(c, "53300",
					  "query_wait_timeout: no server connection became free "
					  "within %llu ms",
					  (unsigned long long)wait);
	}
}

static void worker_sweep_idle_clients(struct worker *w, uint64_t now)
{
	uint64_t idle = w->cfg->pool.client_idle_timeout_ms;
	uint64_t in_txn = w->cfg->pool.idle_transaction_timeout_ms;
	if (!idle && !in_txn)
		return;
	struct list_node *pos, *tmp;
	list_for_each_safe(pos, tmp, &w->active_clients)
	{
		struct client *c = list_entry(pos, struct client, node);
		/* Only a client the server waits for is idle: a running query is not. */
		if (c->server && !req_queue_empty(&c->server->reqs))
			continue;
		uint64_t quiet = now - c->last_active_ms;
		if (c->txn_status == TXN_IDLE) {
			if (idle && quiet >= idle)
				client_disconnect(
					c, "57P05",
					"terminating connection due to client_idle_timeout");
		} else if (in_txn && quiet >= in_txn) {
			client_disconnect(c, "25P03",
					  "terminating connection due to idle_transaction_timeout");
		}
	}
}

/* Idle backend connections: server_idle_timeout and server_lifetime, keeping min_pool_size. */
static void worker_sweep_idle_servers(struct worker *w, struct pool *p, uint64_t now)
{
	const struct pool_conf *pc = &w->cfg->pool;
	struct list_node *pos, *tmp;
	list_for_each_safe(pos, tmp, &p->idle_servers)
	{
		struct server *s = list_entry(pos, struct server, node);
		bool too_old =
			pc->server_lifetime_ms && now - s->created_ms >= pc->server_lifetime_ms;
		bool too_idle = pc->server_idle_timeout_ms &&
				now - s->since_ms >= pc->server_idle_timeout_ms &&
				p->n_servers > pc->min_pool_size;
		if (too_old || too_idle)
			server_close(s,
				     too_old ? "server_lifetime reached" : "server_idle_timeout");
	}
	/* min_pool_size: open connections ahead of demand once the pool can log in. */
	int want = pc->min_pool_size < pc->pool_size ? pc->min_pool_size : pc->pool_size;
	int connecting = 0;
	while (p->have_welcome && p->startup && p->n_servers < want && connecting < 4 &&
	       now >= w->node_down_until_ms[w->primary_node] &&
	       server_may_open(w, p, w->primary_node)) {
		if (!server_connect(w, p, w->primary_node, NULL))
			break;
		connecting++;
	}
}

static void worker_sweep_pools(struct worker *w, uint64_t now)
{
	struct list_node *pos, *tmp;
	list_for_each_safe(pos, tmp, &w->pools)
	{
		struct pool *p = list_entry(pos, struct pool, node);
		worker_sweep_pool_clients(w, p, now);
		worker_sweep_idle_servers(w, p, now);
	}
}

static void worker_close_idle_servers(struct worker *w)
{
	struct list_node *pos, *tmp;
	list_for_each_safe(pos, tmp, &w->pools)
	{
		struct pool *p = list_entry(pos, struct pool, node);
		struct list_node *spos, *stmp;
		list_for_each_safe(spos, stmp, &p->idle_servers)
		{
			server_close(list_entry(spos, struct server, node), "shutting down");
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
		while (p->n_waiting)
			client_disconnect(
				list_entry(list_first(&p->waiting_clients), struct client, node),
				"57P01", "terminating connection due to administrator command");
	}
	worker_close_idle_servers(w);
}

static void worker_janitor_cb(uv_timer_t *t)
{
	struct worker *w = t->data;
	uint64_t now = uv_now(&w->loop);
	worker_sweep_clients(w, now);
	worker_sweep_servers(w, now);
	worker_sweep_pools(w, now);
	/* Idle-client timeouts are in whole seconds or more: once every ten rounds is plenty. */
	if (++w->janitor_rounds % 10 == 0)
		worker_sweep_idle_clients(w, now);
	if (w->shutdown == WS_SMART)
		worker_close_idle_servers(w);
	if (w->shutdown == WS_SMART &&
	    now - w->shutdown_started_ms >= w->cfg->shutdown_timeout_ms) {
		log_info("main", 0, "shutdown_timeout reached with %d clients: closing them",
			 w->n_clients);
		worker_begin_shutdown(w, WS_FAST);
	}
	worker_check_shutdown_done(w);
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
	w->primary_node = config_primary_backend(cfg);
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

bool worker_init(struct worker *w, struct config *cfg, char *err, size_t errcap)
{
	memset(w, 0, sizeof(*w));
	w->cfg = cfg;
	list_init(&w->login_clients);
	list_init(&w->active_clients);
	list_init(&w->closing_clients);
	list_init(&w->connecting_servers);
	list_init(&w->login_servers);
	list_init(&w->active_servers);
	list_init(&w->reset_servers);
	list_init(&w->closing_servers);
	list_init(&w->pools);
	iobuf_pool_init(&w->bufs);
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
	if (!worker_resolve_nodes(w, cfg, err, errcap))
		return false;
	for (int i = 0; i < cfg->n_listen; i++) {
		int n = 0;
		rc = listener_open_all(&w->listeners[w->n_listeners],
				       WORKER_MAX_LISTENERS - w->n_listeners, &n, &w->loop,
				       cfg->listen_addresses[i], cfg->port, worker_on_connection, w,
				       err, errcap);
		if (rc < 0)
			return false;
		w->n_listeners += n;
	}
	uv_timer_init(&w->loop, &w->janitor);
	w->janitor.data = w;
	uv_timer_start(&w->janitor, worker_janitor_cb, JANITOR_MS, JANITOR_MS);
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
	pool_free_all(w);
	cancel_map_destroy(&w->cancels);
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
	config_free(w->cfg);
	w->cfg = cfg;
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
