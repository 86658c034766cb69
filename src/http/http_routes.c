/*
 * The health paths with Patroni's meanings, /node/N, /cluster and the dispatch to /metrics and
 * /status (doc/http.md). Every answer comes from the worker's router view (the cluster manager's
 * latest published view, already copied onto the loop) and its counters; nothing blocks, and
 * nothing secret is written (command lines and their output never leave the process).
 */
#include "http/http_routes.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/config.h"
#include "failover/cluster.h"
#include "failover/watchdog.h"
#include "pool/worker.h"
#include "route/router.h"

#define JSON "application/json"
#define TEXT "text/plain; charset=utf-8"

static bool http_path_is(const struct http_request *req, const char *p)
{
	size_t n = strlen(p);
	return req->path_len == n && memcmp(req->path, p, n) == 0;
}

/* A standby that may take reads now: usable, standby role, not the primary. */
static bool http_standby_up(const struct router *r, int i)
{
	return router_node_usable(r, i) && i != r->view.primary &&
	       r->view.nodes[i].role == NODE_ROLE_STANDBY;
}

/*
 * lag < 0: no limit. is_time: lag in seconds, else bytes. As in the router (delay_threshold_by_
 * time), a standby that replayed everything has no time lag, however old its last replayed
 * commit is: on an idle primary, now() - pg_last_xact_replay_timestamp() only grows.
 */
static bool http_standby_within(const struct router *r, int i, bool is_time, double lag)
{
	if (!http_standby_up(r, i))
		return false;
	if (lag < 0)
		return true;
	const struct cluster_node *n = &r->view.nodes[i];
	if (is_time)
		return n->replication_delay == 0 || (n->has_delay_time && n->delay_s <= lag);
	return (double)n->replication_delay <= lag;
}

static bool http_any_standby(const struct router *r, bool is_time, double lag)
{
	for (int i = 0; i < r->view.n_nodes; i++)
		if (http_standby_within(r, i, is_time, lag))
			return true;
	return false;
}

bool http_parse_lag(const char *text, bool *is_time, double *value)
{
	size_t n = strlen(text);
	if (n == 0 || !isdigit((unsigned char)text[0]))
		return false;
	uint64_t bytes;
	uint32_t ms;
	const char *p = text;
	while (isdigit((unsigned char)*p))
		p++;
	/* A bare number or a size unit (B, kB, MB, GB) is bytes, as in Patroni; else a duration. */
	if (!*p || p[strlen(p) - 1] == 'B') {
		if (!config_parse_size(text, &bytes))
			return false;
		*is_time = false;
		*value = (double)bytes;
		return true;
	}
	if (!config_parse_duration(text, &ms))
		return false;
	*is_time = true;
	*value = ms / 1000.0;
	return true;
}

/* The value of key in the query string (copied, NUL-terminated), or false if absent. */
static bool http_query_get(const struct http_request *req, const char *key, char *out, size_t cap)
{
	size_t klen = strlen(key);
	const char *q = req->query, *end = req->query ? req->query + req->query_len : NULL;
	while (q && q < end) {
		const char *amp = memchr(q, '&', (size_t)(end - q));
		const char *stop = amp ? amp : end;
		if ((size_t)(stop - q) > klen && memcmp(q, key, klen) == 0 && q[klen] == '=') {
			size_t vlen = (size_t)(stop - q) - klen - 1;
			if (vlen >= cap)
				vlen = cap - 1;
			memcpy(out, q + klen + 1, vlen);
			out[vlen] = '\0';
			return true;
		}
		q = amp ? amp + 1 : NULL;
	}
	return false;
}

static void http_status_text(struct http_response *out, int status, const char *text)
{
	out->status = status;
	out->content_type = JSON;
	textbuf_printf(&out->body, "{\"status\": %d, \"result\": ", status);
	textbuf_json_string(&out->body, text);
	textbuf_puts(&out->body, "}\n");
}

static void http_replica(struct worker *w, const struct http_request *req,
			 struct http_response *out)
{
	char lagtext[64];
	bool is_time = false;
	double lag = -1;
	if (http_query_get(req, "lag", lagtext, sizeof(lagtext)) &&
	    !http_parse_lag(lagtext, &is_time, &lag)) {
		http_status_text(out, 400,
				 "lag must be bytes (1024, 16MB) or a duration (500ms, 1s)");
		return;
	}
	if (http_any_standby(&w->router, is_time, lag))
		http_status_text(out, 200, "a standby is up");
	else
		http_status_text(out, 503,
				 lag < 0 ? "no standby is up" : "no standby is up within lag");
}

/* Writes: 200 primary usable; reads only: 206; nothing: 503 (the runbook's xinetd contract). */
static int http_role_status(const struct router *r)
{
	if (router_primary(r) >= 0)
		return 200;
	return http_any_standby(r, false, -1) ? 206 : 503;
}

static void http_node(struct worker *w, const struct http_request *req, struct http_response *out)
{
	const char *p = req->path + 6; /* after "/node/" */
	size_t n = req->path_len - 6;
	if (n == 0 || n > 4) {
		http_status_text(out, 404, "no such path");
		return;
	}
	int id = 0;
	for (size_t i = 0; i < n; i++) {
		if (!isdigit((unsigned char)p[i])) {
			http_status_text(out, 404, "no such path");
			return;
		}
		id = id * 10 + (p[i] - '0');
	}
	const struct router *r = &w->router;
	if (id == router_primary(r))
		http_status_text(out, 200, "primary");
	else if (id < r->view.n_nodes && http_standby_up(r, id))
		http_status_text(out, 206, "standby");
	else
		http_status_text(out, 503, "down or unknown");
}

static void http_cluster_node(struct textbuf *b, struct worker *w, int i)
{
	const struct cluster_node *n = &w->router.view.nodes[i];
	const struct backend_conf *bc = &w->cfg->backends[i];
	textbuf_printf(b, "%s{\"node_id\": %d, \"host\": ", i ? ", " : "", i);
	textbuf_json_string(b, bc->host);
	textbuf_printf(b, ", \"port\": %d, \"status\": \"%s\", \"role\": \"%s\"", bc->port,
		       cluster_status_name(n->status), cluster_role_name(n->role));
	textbuf_printf(b, ", \"replication_delay_bytes\": %" PRIu64, n->replication_delay);
	if (n->has_delay_time)
		textbuf_printf(b, ", \"replication_delay_seconds\": %.3f",
			       n->replication_delay ? n->delay_s : 0.0);
	else
		textbuf_puts(b, ", \"replication_delay_seconds\": null");
	textbuf_printf(b, ", \"select_cnt\": %" PRIu64 "}", w->router.select_cnt[i]);
}

/* Failover history, oldest first; the command line and its output are left out (secrets). */
static void http_cluster_history(struct textbuf *b, struct worker *w)
{
	textbuf_puts(b, "\"failovers\": [");
	if (!w->cluster) {
		textbuf_puts(b, "]");
		return;
	}
	struct cluster_event *ev = malloc(sizeof(*ev) * CLUSTER_HISTORY_MAX);
	if (!ev) {
		b->failed = true;
		return;
	}
	int n = cluster_history_copy(w->cluster, ev, CLUSTER_HISTORY_MAX);
	for (int i = 0; i < n; i++) {
		textbuf_printf(b, "%s{\"at_ms\": %" PRId64 ", \"event\": ", i ? ", " : "",
			       ev[i].at_ms);
		textbuf_json_string(b, ev[i].event);
		textbuf_printf(b, ", \"node\": %d, \"exit_status\": %d, \"duration_ms\": %u",
			       ev[i].node, ev[i].exit_status, ev[i].duration_ms);
		textbuf_puts(b, ", \"detail\": ");
		textbuf_json_string(b, ev[i].command[0] ? "" : ev[i].detail);
		textbuf_puts(b, "}");
	}
	free(ev);
	textbuf_puts(b, "]");
}

/* The watchdog object of /cluster (doc/watchdog.md); nothing when the watchdog is off. */
static void http_cluster_watchdog(struct textbuf *b, struct worker *w)
{
	struct wd_state *s = malloc(sizeof(*s));
	if (!s) {
		b->failed = true;
		return;
	}
	if (!w->cluster || !cluster_watchdog_state(w->cluster, s)) {
		free(s);
		return;
	}
	textbuf_puts(b, ", \"watchdog\": {\"name\": ");
	textbuf_json_string(b, s->name);
	textbuf_puts(b, ", \"status\": ");
	textbuf_json_string(b, watchdog_status_name(s->status));
	textbuf_puts(b, ", \"leader\": ");
	if (s->leader[0])
		textbuf_json_string(b, s->leader);
	else
		textbuf_puts(b, "null");
	textbuf_printf(b,
		       ", \"is_leader\": %s, \"fenced\": %s, \"etcd\": \"%s\", "
		       "\"lease_remaining_ms\": %" PRId64 ", \"view_epoch\": %" PRIu64
		       ", \"members\": [",
		       s->is_leader ? "true" : "false", s->fenced ? "true" : "false",
		       s->connected ? "ok" : "lost", s->lease_remaining_ms,
		       s->view.valid ? s->view.epoch : 0);
	for (int i = 0; i < s->n_members; i++) {
		textbuf_puts(b, i ? ", {\"name\": " : "{\"name\": ");
		textbuf_json_string(b, s->members[i].name);
		textbuf_puts(b, ", \"host\": ");
		textbuf_json_string(b, s->members[i].host);
		textbuf_printf(b, ", \"port\": %d, \"live\": %s, \"sees_primary\": %d}",
			       s->members[i].port, s->members[i].present ? "true" : "false",
			       s->members[i].primary);
	}
	textbuf_puts(b, "]}");
	free(s);
}

static void http_cluster(struct worker *w, struct http_response *out)
{
	struct textbuf *b = &out->body;
	out->status = 200;
	out->content_type = JSON;
	int p = router_primary(&w->router);
	if (p >= 0)
		textbuf_printf(b, "{\"primary\": %d, \"nodes\": [", p);
	else
		textbuf_puts(b, "{\"primary\": null, \"nodes\": [");
	for (int i = 0; i < w->router.view.n_nodes && i < w->cfg->n_backends; i++)
		http_cluster_node(b, w, i);
	textbuf_puts(b, "], ");
	http_cluster_pools(w, b);
	textbuf_puts(b, ", ");
	http_cluster_history(b, w);
	http_cluster_watchdog(b, w);
	textbuf_puts(b, "}\n");
}

/* Started and routable: not shutting down, and some node can take work. */
static bool http_ready(struct worker *w)
{
	return w->shutdown == WS_RUNNING && http_role_status(&w->router) != 503;
}

void http_route(struct worker *w, const struct http_request *req, struct http_response *out)
{
	const struct router *r = &w->router;
	if (http_path_is(req, "/primary") || http_path_is(req, "/read-write") ||
	    http_path_is(req, "/master")) {
		if (router_primary(r) >= 0)
			http_status_text(out, 200, "a primary takes writes");
		else
			http_status_text(out, 503, "no primary");
	} else if (http_path_is(req, "/replica")) {
		http_replica(w, req, out);
	} else if (http_path_is(req, "/read-only")) {
		if (http_role_status(r) != 503)
			http_status_text(out, 200, "reads can be served");
		else
			http_status_text(out, 503, "no node can serve reads");
	} else if (http_path_is(req, "/health") || http_path_is(req, "/liveness")) {
		http_status_text(out, 200, "serving");
	} else if (http_path_is(req, "/readiness")) {
		if (http_ready(w))
			http_status_text(out, 200, "ready");
		else
			http_status_text(out, 503, "not routable");
	} else if (http_path_is(req, "/role")) {
		int st = http_role_status(r);
		http_status_text(out, st,
				 st == 200   ? "read-write"
				 : st == 206 ? "read-only"
					     : "unavailable");
	} else if (http_path_is(req, "/watchdog")) {
		/* The peer check of the watchdog's fencing (doc/watchdog.md): open like /health. */
		char body[256];
		if (w->cluster && cluster_watchdog_peer_json(w->cluster, body, sizeof(body))) {
			out->status = 200;
			out->content_type = JSON;
			textbuf_puts(&out->body, body);
		} else {
			http_status_text(out, 404, "the watchdog is off");
		}
	} else if (req->path_len > 6 && memcmp(req->path, "/node/", 6) == 0) {
		http_node(w, req, out);
	} else if (http_path_is(req, "/cluster") || http_path_is(req, "/metrics") ||
		   http_path_is(req, "/status")) {
		if (!req->allowed) {
			http_status_text(out, 403, "not in http.allow");
		} else if (http_path_is(req, "/cluster")) {
			http_cluster(w, out);
		} else if (http_path_is(req, "/status")) {
			http_status_page(out);
		} else {
			out->status = 200;
			out->content_type = "text/plain; version=0.0.4; charset=utf-8";
			http_metrics_write(w, &out->body);
		}
	} else {
		http_status_text(out, 404, "no such path");
	}
}
