/*
 * The /status page and the "pools" member of /cluster it reads (doc/http.md). The page is
 * src/http/status.html compiled into the binary (http_status_html.h): it has no external asset
 * and fetches /cluster once a second itself, so serving it is a copy of a constant. The pools
 * summary walks the worker's pools once, adding them up per (database, user) into at most
 * HTTP_POOLS_MAX slots, so its cost is linear in the pools and its size is bounded.
 */
#include <stdlib.h>
#include <string.h>

#include "conf/config.h"
#include "http/http_routes.h"
#include "http/http_status_html.h"
#include "pool/pool.h"
#include "pool/worker.h"

/*
 * Only what the page itself needs: inline script and style, fetches to its own origin, no
 * frames, forms or plugins. Data reaches the DOM through textContent only, so this is defence in
 * depth, not the escaping itself.
 */
#define STATUS_HEADERS                                                                             \
	"Content-Security-Policy: default-src 'none'; script-src 'unsafe-inline'; "                \
	"style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; "          \
	"form-action 'none'; frame-ancestors 'none'\r\n"                                           \
	"X-Content-Type-Options: nosniff\r\n"                                                      \
	"Referrer-Policy: no-referrer\r\n"

void http_status_page(struct http_response *out)
{
	out->status = 200;
	out->content_type = "text/html; charset=utf-8";
	out->extra_headers = STATUS_HEADERS;
	textbuf_append(&out->body, http_status_html, http_status_html_len);
}

/* One (database, user) pair: its pools' clients and backend connections added up. */
struct pool_row {
	const char *database;		     /* borrowed from the first pool of the pair */
	const char *user;		     /* borrowed from the first pool of the pair */
	int clients_active;		     /* logged in and not waiting for a server connection */
	int clients_waiting;		     /* waiting for a server connection */
	int srv_active[CONFIG_MAX_BACKENDS]; /* linked, connecting or logging in */
	int srv_idle[CONFIG_MAX_BACKENDS];   /* idle in the pool */
	int srv_reset[CONFIG_MAX_BACKENDS];  /* running the reset query */
};

/* Adds p into its row of rows[0..*n), making the row if there is room. False if there was none. */
static bool pool_row_add(struct pool_row *rows, int *n, int n_nodes, const struct pool *p)
{
	struct pool_row *r = NULL;
	for (int i = 0; i < *n && !r; i++)
		if (strcmp(rows[i].database, p->database) == 0 &&
		    strcmp(rows[i].user, p->user) == 0)
			r = &rows[i];
	if (!r) {
		if (*n >= HTTP_POOLS_MAX)
			return false;
		r = &rows[(*n)++];
		memset(r, 0, sizeof(*r));
		r->database = p->database;
		r->user = p->user;
	}
	r->clients_waiting += p->n_waiting;
	r->clients_active += p->n_clients - p->n_waiting;
	for (int i = 0; i < n_nodes; i++) {
		const struct pool_node *pn = &p->nodes[i];
		r->srv_idle[i] += pn->n_idle;
		r->srv_reset[i] += pn->n_resetting;
		r->srv_active[i] += pn->n_servers - pn->n_idle - pn->n_resetting;
	}
	return true;
}

static void pool_row_write(struct textbuf *b, const struct pool_row *r, int n_nodes, bool first)
{
	int active = 0, idle = 0, reset = 0;
	for (int i = 0; i < n_nodes; i++) {
		active += r->srv_active[i];
		idle += r->srv_idle[i];
		reset += r->srv_reset[i];
	}
	textbuf_puts(b, first ? "{\"database\": " : ", {\"database\": ");
	textbuf_json_string(b, r->database);
	textbuf_puts(b, ", \"user\": ");
	textbuf_json_string(b, r->user);
	textbuf_printf(b,
		       ", \"clients_active\": %d, \"clients_waiting\": %d, \"servers_active\": %d"
		       ", \"servers_idle\": %d, \"servers_reset\": %d, \"servers\": [",
		       r->clients_active, r->clients_waiting, active, idle, reset);
	for (int i = 0; i < n_nodes; i++)
		textbuf_printf(b,
			       "%s{\"node_id\": %d, \"active\": %d, \"idle\": %d, \"reset\": %d}",
			       i ? ", " : "", i, r->srv_active[i], r->srv_idle[i], r->srv_reset[i]);
	textbuf_puts(b, "]}");
}

void http_cluster_pools(struct worker *w, struct textbuf *b)
{
	struct pool_row *rows = malloc(sizeof(*rows) * HTTP_POOLS_MAX);
	if (!rows) {
		b->failed = true;
		return;
	}
	int n = 0, n_nodes = w->n_nodes < CONFIG_MAX_BACKENDS ? w->n_nodes : CONFIG_MAX_BACKENDS;
	bool truncated = false;
	struct list_node *pos, *tmp;
	list_for_each_safe(pos, tmp, &w->pools)
	{
		if (!pool_row_add(rows, &n, n_nodes, list_entry(pos, struct pool, node)))
			truncated = true;
	}
	textbuf_puts(b, "\"pools\": [");
	for (int i = 0; i < n; i++)
		pool_row_write(b, &rows[i], n_nodes, i == 0);
	textbuf_printf(b, "], \"pools_truncated\": %s", truncated ? "true" : "false");
	free(rows);
}
