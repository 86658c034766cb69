/*
 * The janitor: a timer on the worker's loop, every JANITOR_MS, for what no socket event reports:
 * timeouts, pool upkeep and the end of a smart shutdown. Each round it ends clients in login past
 * authentication_timeout; backend connections connecting or logging in past
 * pool.server_connect_timeout, or resetting as long; closes that wait on a peer that does not read
 * (cut after CLOSING_GRACE_MS); clients waiting for a node or a connection past
 * query_wait_timeout, while clients waiting for a node try again; idle backend connections past
 * server_idle_timeout or server_lifetime, while min_pool_size is opened ahead of demand; and pools
 * unused for long. Every tenth round it also ends idle clients (client_idle_timeout,
 * idle_transaction_timeout).
 */
#include "pool/janitor.h"

#include <malloc.h>
#include <stdint.h>

#include "admin/console.h"
#include "pool/client.h"
#include "pool/outstanding.h"
#include "pool/pool.h"
#include "pool/server.h"
#include "pool/worker.h"
#include "protocol/pqmsg.h"
#include "util/log.h"

#define CLOSING_GRACE_MS     5000 /* a peer that does not read our last bytes is cut after this */
#define JANITOR_TRIM_BUFFERS 256  /* read buffers (8 MB) back in malloc before a malloc_trim */

static void janitor_sweep_clients(struct worker *w, uint64_t now)
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

/*
 * The first draining link past shutdown_timeout. Searched again after each close: a session that
 * ends closes its other links too, which may be the next entries of the list. A closed link
 * leaves active_servers, so the search ends.
 */
static struct server *janitor_first_late_drain(struct worker *w, uint64_t now)
{
	struct list_node *pos, *tmp;
	list_for_each_safe(pos, tmp, &w->active_servers)
	{
		struct server *s = list_entry(pos, struct server, node);
		if (s->draining && now - s->drain_ms >= w->cfg->shutdown_timeout_ms)
			return s;
	}
	return NULL;
}

static void janitor_sweep_servers(struct worker *w, uint64_t now)
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
	/* Links of detached nodes finishing their work: bounded like a smart shutdown. */
	struct server *late;
	while (w->n_draining && (late = janitor_first_late_drain(w, now)) != NULL)
		server_end_drain(late, "its work did not end within shutdown_timeout");
	list_for_each_safe(pos, tmp, &w->closing_servers)
	{
		struct server *s = list_entry(pos, struct server, node);
		if (now - s->since_ms >= CLOSING_GRACE_MS)
			conn_close(&s->conn);
	}
}

/* Timeouts of logged-in clients: waiting for a server, idle, idle inside a transaction. */
#define NODE_RETRY_MS 250 /* a client waiting for a node tries again this often without a view */

static void janitor_sweep_waiting(struct worker *w, struct list_node *list, uint64_t now,
				  bool for_node)
{
	uint64_t wait = w->cfg->pool.query_wait_timeout_ms;
	struct list_node *pos, *tmp;
	list_for_each_safe(pos, tmp, list)
	{
		struct client *c = list_entry(pos, struct client, node);
		uint64_t node_since = c->ext ? c->ext->node_wait_since_ms : 0;
		uint64_t since = for_node && node_since ? node_since : c->since_ms;
		if (!wait || now - since < wait)
			continue;
		if (for_node)
			client_disconnect(c, "08006",
					  "query_wait_timeout: no %s node became available within "
					  "%llu ms",
					  c->route.listener == ROUTE_FORCE_STANDBY ? "standby"
										   : "primary",
					  (unsigned long long)wait);
		else
			client_disconnect(c, "53300",
					  "query_wait_timeout: no server connection became free "
					  "within %llu ms",
					  (unsigned long long)wait);
	}
}

static void janitor_sweep_idle_clients(struct worker *w, uint64_t now)
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
static void janitor_sweep_idle_servers(struct worker *w, struct pool *p, uint64_t now)
{
	const struct pool_conf *pc = &w->cfg->pool;
	struct list_node *pos, *tmp;
	for (int n = 0; n < w->n_nodes; n++) {
		struct pool_node *pn = &p->nodes[n];
		list_for_each_safe(pos, tmp, &pn->idle_servers)
		{
			struct server *s = list_entry(pos, struct server, node);
			bool too_old = pc->server_lifetime_ms &&
				       now - s->created_ms >= pc->server_lifetime_ms;
			bool too_idle = pc->server_idle_timeout_ms &&
					now - s->since_ms >= pc->server_idle_timeout_ms &&
					pn->n_servers > pc->min_pool_size;
			if (too_old || too_idle)
				server_close(s, too_old ? "server_lifetime reached"
							: "server_idle_timeout");
		}
		/* min_pool_size: open connections ahead of demand once the pool can log in. */
		int want = pc->min_pool_size < pc->pool_size ? pc->min_pool_size : pc->pool_size;
		int connecting = 0;
		while (w->shutdown == WS_RUNNING && p->have_welcome && p->startup &&
		       pn->n_servers < want && connecting < 4 && now >= w->node_down_until_ms[n] &&
		       router_node_usable(&w->router, n) && pool_may_open(w, p, n)) {
			if (!server_connect(w, p, n, NULL))
				break;
			connecting++;
		}
	}
}

/* Clients waiting for a node try again now and then: a refusal may not change any view. */
static void janitor_retry_nodeless(struct worker *w, uint64_t now)
{
	/* Counted, not walked: a client that still waits goes back to the tail of this list. */
	for (int n = w->n_nodeless; n > 0 && !list_empty(&w->nodeless_clients); n--) {
		struct client *c =
			list_entry(list_first(&w->nodeless_clients), struct client, node);
		if (now - c->since_ms < NODE_RETRY_MS)
			break; /* oldest first: the rest waited less */
		client_view_changed(c);
	}
}

static void janitor_sweep_pools(struct worker *w, uint64_t now)
{
	janitor_sweep_waiting(w, &w->nodeless_clients, now, true);
	janitor_retry_nodeless(w, now);
	struct list_node *pos, *tmp;
	list_for_each_safe(pos, tmp, &w->pools)
	{
		struct pool *p = list_entry(pos, struct pool, node);
		for (int n = 0; n < w->n_nodes; n++)
			if (p->nodes[n].n_waiting)
				janitor_sweep_waiting(w, &p->nodes[n].waiting_clients, now, false);
		janitor_sweep_idle_servers(w, p, now);
		pool_reap_idle(w, p, now); /* last: may free p */
	}
}

/*
 * Once a second: read buffers nobody took for a second leave the cache (iobuf_pool_trim), and
 * once JANITOR_TRIM_BUFFERS of them went back to malloc since the last time, malloc_trim gives
 * their pages back to the kernel. Without it, the 32 KB buffers of a burst (thousands of clients
 * queueing a statement at once) stayed resident after it, in the cache or in malloc's heap:
 * about 5 KB per client of the burst. malloc_trim takes a few milliseconds after such a burst,
 * and only when the cache had unused buffers for a whole second, i.e. the burst is over.
 */
static void janitor_shrink_buffers(struct worker *w)
{
	if (iobuf_pool_trim(&w->bufs) == 0 ||
	    w->bufs.n_released - w->bufs_released_at_trim < JANITOR_TRIM_BUFFERS)
		return;
	w->bufs_released_at_trim = w->bufs.n_released;
	malloc_trim(0);
	log_debug("main", 0, "returned the memory of unused read buffers to the system");
}

static void janitor_cb(uv_timer_t *t)
{
	struct worker *w = t->data;
	uint64_t now = uv_now(&w->loop);
	janitor_sweep_clients(w, now);
	janitor_sweep_servers(w, now);
	janitor_sweep_pools(w, now);
	/* Idle-client timeouts are in whole seconds or more: once every ten rounds is plenty. */
	if (++w->janitor_rounds % 10 == 0) {
		janitor_sweep_idle_clients(w, now);
		janitor_shrink_buffers(w);
	}
	if (now - w->stats_newer_ms >= w->cfg->stats_period_ms) {
		pool_stats_period_tick(w);
		w->stats_older_ms = w->stats_newer_ms;
		w->stats_newer_ms = now;
	}
	console_poll(w, now);
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

void janitor_start(struct worker *w)
{
	uv_timer_init(&w->loop, &w->janitor);
	w->stats_older_ms = w->stats_newer_ms = uv_now(&w->loop);
	w->janitor.data = w;
	uv_timer_start(&w->janitor, janitor_cb, JANITOR_MS, JANITOR_MS);
}
