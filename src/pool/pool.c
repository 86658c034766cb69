/*
 * Pools: found by key with a linear scan of the worker's list (a handful of database/user pairs
 * in practice). A pool exists while an authenticated client or a backend connection uses it.
 * Scheduling lives here: whether a pool may open one more backend connection under the limits,
 * eviction under a shared cap, and serving the clients waiting on its queues. The moves between
 * lists stay with server.c and client.c, which own the state transitions.
 */
#include "pool/pool.h"

#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "pool/client.h"
#include "pool/server.h"
#include "pool/worker.h"
#include "route/classify.h"

/* The classifier holds the one table of followed settings, in enum tracked_param's order. */
_Static_assert(CLASSIFY_N_TRACKED == TP_COUNT, "tracked settings: classify.c and pool.h differ");

int pool_tracked_param(const char *name)
{
	return classify_tracked_setting(name);
}

const char *pool_tracked_name(int i)
{
	return classify_tracked_name(i);
}

struct pool *pool_get(struct worker *w, const char *key, size_t key_len)
{
	struct list_node *pos, *tmp;
	list_for_each_safe(pos, tmp, &w->pools)
	{
		struct pool *p = list_entry(pos, struct pool, node);
		if (p->key_len == key_len && memcmp(p->key, key, key_len) == 0)
			return p;
	}
	struct pool *p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->key = malloc(key_len);
	if (!p->key) {
		free(p);
		return NULL;
	}
	memcpy(p->key, key, key_len);
	p->key_len = key_len;
	p->database = p->key;
	p->user = p->key + strlen(p->key) + 1;
	for (int i = 0; i < CONFIG_MAX_BACKENDS; i++) {
		list_init(&p->nodes[i].idle_servers);
		list_init(&p->nodes[i].waiting_clients);
	}
	p->paused = pool_db_paused(w, p->database);
	list_append(&w->pools, &p->node);
	return p;
}

const char *pool_get_param(const struct pool *p, const char *name)
{
	for (int i = 0; i < p->n_params; i++)
		if (strcmp(p->params[i].name, name) == 0)
			return p->params[i].value;
	return NULL;
}

void pool_set_param(struct pool *p, const char *name, const char *value)
{
	for (int i = 0; i < p->n_params; i++) {
		if (strcmp(p->params[i].name, name) == 0) {
			if (strcmp(p->params[i].value, value) == 0)
				return;
			char *v = strdup(value);
			if (!v)
				return;
			free(p->params[i].value);
			p->params[i].value = v;
			int t = pool_tracked_param(name);
			if (t >= 0) {
				p->tracked[t] = v;
				p->params_gen++;
			}
			return;
		}
	}
	if (p->n_params >= POOL_MAX_PARAMS)
		return;
	char *n = strdup(name), *v = strdup(value);
	if (!n || !v) {
		free(n);
		free(v);
		return;
	}
	p->params[p->n_params].name = n;
	p->params[p->n_params].value = v;
	p->n_params++;
	int t = pool_tracked_param(name);
	if (t >= 0) {
		p->tracked[t] = v;
		p->params_gen++;
	}
}

void pool_creds_free(struct client_creds *c)
{
	if (c->secret) {
		OPENSSL_cleanse(c->secret, strlen(c->secret));
		free(c->secret);
	}
	OPENSSL_cleanse(c, sizeof(*c));
}

void pool_creds_copy(struct client_creds *dst, const struct client_creds *src)
{
	pool_creds_free(dst);
	*dst = *src;
	dst->secret = src->secret ? strdup(src->secret) : NULL;
	if (src->secret && !dst->secret)
		dst->kind = CRED_NONE;
}

/* c's application_name in p's copy of c's startup packet: at the same offset when it points into
 * the packet (startup_parse), else "". */
static const char *pool_app_name_in_copy(const struct pool *p, const struct client *c)
{
	/* The name points into the startup packet, or is a constant "" (none sent): compared as
	 * addresses, since ordering pointers into different objects is undefined in C. */
	uintptr_t name = (uintptr_t)c->application_name;
	uintptr_t base = (uintptr_t)c->startup;
	if (!name || !base || name < base || name >= base + c->lg->startup_len)
		return "";
	return (const char *)p->startup + (name - base);
}

void pool_adopt_login(struct pool *p, const struct client *c)
{
	if (!p->startup) {
		uint32_t len = c->lg->startup_len;
		p->startup = malloc(len ? len : 1);
		if (p->startup) {
			memcpy(p->startup, c->startup, len);
			p->startup_len = len;
			p->app_name = pool_app_name_in_copy(p, c);
		}
	}
	/*
	 * A trust login carries no secret; a password login supplies one, and the latest is the
	 * freshest (a password changed on the server and fetched again by auth_query): new backend
	 * connections use it.
	 */
	if (c->lg->creds.kind != CRED_NONE)
		pool_creds_copy(&p->creds, &c->lg->creds);
}

int pool_count_servers(struct worker *w, const char *database, const char *user, int node)
{
	int n = 0;
	struct list_node *pos, *tmp;
	list_for_each_safe(pos, tmp, &w->pools)
	{
		struct pool *p = list_entry(pos, struct pool, node);
		if ((!database || strcmp(p->database, database) == 0) &&
		    (!user || strcmp(p->user, user) == 0))
			n += p->nodes[node].n_servers;
	}
	return n;
}

static void pool_free_one(struct pool *p)
{
	list_del(&p->node);
	for (int i = 0; i < p->n_params; i++) {
		free(p->params[i].name);
		free(p->params[i].value);
	}
	pool_creds_free(&p->creds);
	free(p->startup);
	free(p->key);
	free(p);
}

void pool_reap_if_unused(struct worker *w, struct pool *p)
{
	if (p->n_clients > 0 || p->n_servers > 0)
		return;
	/* Its welcome lets clients log in without a backend: kept a while (pool_reap_idle). */
	if (p->have_welcome) {
		if (!p->unused_since_ms)
			p->unused_since_ms = uv_now(&w->loop);
		return;
	}
	pool_free_one(p);
}

void pool_reap_idle(struct worker *w, struct pool *p, uint64_t now_ms)
{
	(void)w;
	if (p->n_clients > 0 || p->n_servers > 0) {
		p->unused_since_ms = 0;
		return;
	}
	if (p->unused_since_ms && now_ms - p->unused_since_ms >= POOL_KEEP_MS)
		pool_free_one(p);
}

void pool_free_all(struct worker *w)
{
	for (int i = 0; i < w->n_paused_dbs; i++)
		free(w->paused_dbs[i]);
	w->n_paused_dbs = 0;
	struct list_node *pos, *tmp;
	list_for_each_safe(pos, tmp, &w->pools)
	{
		pool_free_one(list_entry(pos, struct pool, node));
	}
}

/* ---- scheduling: backend connections for waiting clients, within the limits ---- */

bool pool_may_open(struct worker *w, struct pool *p, int node_id)
{
	const struct pool_conf *pc = &w->cfg->pool;
	if (node_id < 0 || node_id >= w->n_nodes || !worker_fd_available(w))
		return false;
	/* A smart shutdown still serves the sessions it has, on any node they need. */
	if (w->shutdown == WS_FAST)
		return false;
	if (p->nodes[node_id].n_servers >= pc->pool_size)
		return false;
	if (pc->max_db_connections &&
	    pool_count_servers(w, p->database, NULL, node_id) >= pc->max_db_connections)
		return false;
	if (pc->max_user_connections &&
	    pool_count_servers(w, NULL, p->user, node_id) >= pc->max_user_connections)
		return false;
	return true;
}

bool pool_evict_idle_for(struct worker *w, struct pool *p, int node)
{
	const struct pool_conf *pc = &w->cfg->pool;
	bool db_cap = pc->max_db_connections &&
		      pool_count_servers(w, p->database, NULL, node) >= pc->max_db_connections;
	bool user_cap = pc->max_user_connections &&
			pool_count_servers(w, NULL, p->user, node) >= pc->max_user_connections;
	if (!db_cap && !user_cap)
		return false;
	struct list_node *pos, *tmp;
	list_for_each_safe(pos, tmp, &w->pools)
	{
		struct pool *q = list_entry(pos, struct pool, node);
		struct list_node *idle = &q->nodes[node].idle_servers;
		if (q == p || list_empty(idle))
			continue;
		if ((db_cap && strcmp(q->database, p->database) == 0) ||
		    (user_cap && strcmp(q->user, p->user) == 0)) {
			/* The least recently used: the one least likely to be wanted back soon. */
			server_close(list_entry(idle->next, struct server, node),
				     "evicted for a pool waiting under max_db/user_connections");
			return true;
		}
	}
	return false;
}

void pool_kick_all(struct worker *w)
{
	struct list_node *pos, *tmp;
	list_for_each_safe(pos, tmp, &w->pools)
	{
		struct pool *q = list_entry(pos, struct pool, node);
		if (q->n_waiting)
			pool_serve_waiting(q, w);
		if (!q->have_welcome)
			client_pool_login_settled(w, q);
	}
}

/* Serves the clients waiting for node; false if some still wait for a slot. */
static bool pool_serve_node(struct pool *p, struct worker *w, int node)
{
	struct pool_node *pn = &p->nodes[node];
	while (pn->n_waiting) {
		struct client *c =
			list_entry(list_first(&pn->waiting_clients), struct client, node);
		if (!list_empty(&pn->idle_servers)) {
			/* Most recently used first: warm caches, and the oldest time out. */
			struct server *s = list_entry(pn->idle_servers.prev, struct server, node);
			server_link(s, c);
			if (s->state != SV_ACTIVE)
				continue;
			client_resume_with_server(c);
			continue;
		}
		if (!pool_may_open(w, p, node)) {
			if (pn->n_servers < w->cfg->pool.pool_size)
				(void)pool_evict_idle_for(w, p, node);
			return false;
		}
		if (!server_connect(w, p, node, c)) {
			client_disconnect(c, "08006", "could not connect to server");
			continue;
		}
		client_resume_with_server(c);
	}
	return true;
}

void pool_serve_waiting(struct pool *p, struct worker *w)
{
	if (p->paused)
		return;
	for (int i = 0; i < w->n_nodes && p->n_waiting; i++)
		if (p->nodes[i].n_waiting)
			(void)pool_serve_node(p, w, i);
}

/* ---- statistics (stats.h) ---- */

static void pool_stats_add_client(struct client *c)
{
	if (!c->pool)
		return;
	c->pool->cur.bytes_in += c->conn.rx_bytes;
	c->pool->cur.bytes_out += c->conn.tx_bytes;
}

void pool_stats_refresh(struct worker *w)
{
	struct list_node *pos, *tmp, *cpos, *ctmp;
	list_for_each_safe(pos, tmp, &w->pools)
	{
		struct pool *p = list_entry(pos, struct pool, node);
		p->cur = p->stats;
	}
	list_for_each_safe(cpos, ctmp, &w->active_clients)
	{
		pool_stats_add_client(list_entry(cpos, struct client, node));
	}
	list_for_each_safe(cpos, ctmp, &w->nodeless_clients)
	{
		pool_stats_add_client(list_entry(cpos, struct client, node));
	}
	/* Until their handle is closed (then client_on_closed adds their bytes for good). */
	list_for_each_safe(cpos, ctmp, &w->closing_clients)
	{
		pool_stats_add_client(list_entry(cpos, struct client, node));
	}
	list_for_each_safe(pos, tmp, &w->pools)
	{
		struct pool *p = list_entry(pos, struct pool, node);
		for (int i = 0; i < w->n_nodes; i++) {
			if (!p->nodes[i].n_waiting)
				continue;
			list_for_each_safe(cpos, ctmp, &p->nodes[i].waiting_clients)
			{
				pool_stats_add_client(list_entry(cpos, struct client, node));
			}
		}
	}
}

void pool_stats_period_tick(struct worker *w)
{
	pool_stats_refresh(w);
	struct list_node *pos, *tmp;
	list_for_each_safe(pos, tmp, &w->pools)
	{
		struct pool *p = list_entry(pos, struct pool, node);
		p->older = p->newer;
		p->newer = p->cur;
	}
}

/* ---- pause (console PAUSE, RESUME, KILL) ---- */

bool pool_db_paused(const struct worker *w, const char *db)
{
	if (w->pause_all)
		return true;
	for (int i = 0; i < w->n_paused_dbs; i++)
		if (strcmp(w->paused_dbs[i], db) == 0)
			return true;
	return false;
}

bool pool_set_paused(struct worker *w, const char *db, bool on)
{
	if (!db) {
		w->pause_all = on;
		if (!on) {
			for (int i = 0; i < w->n_paused_dbs; i++)
				free(w->paused_dbs[i]);
			w->n_paused_dbs = 0;
		}
	} else if (on && !pool_db_paused(w, db)) {
		char *copy = w->n_paused_dbs < WORKER_PAUSE_MAX ? strdup(db) : NULL;
		if (!copy)
			return false;
		w->paused_dbs[w->n_paused_dbs++] = copy;
	} else if (!on) {
		for (int i = 0; i < w->n_paused_dbs; i++) {
			if (strcmp(w->paused_dbs[i], db) != 0)
				continue;
			free(w->paused_dbs[i]);
			w->paused_dbs[i] = w->paused_dbs[--w->n_paused_dbs];
			break;
		}
	}
	struct list_node *pos, *tmp;
	list_for_each_safe(pos, tmp, &w->pools)
	{
		struct pool *p = list_entry(pos, struct pool, node);
		p->paused = pool_db_paused(w, p->database);
	}
	if (!on)
		pool_kick_all(w);
	return true;
}
