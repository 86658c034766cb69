/*
 * The /status page and the "pools" member of /cluster it reads (doc/http.md). The page is
 * src/http/status.html compiled into the binary (http_status_html.h): it has no external asset
 * and fetches /cluster once a second itself, so serving it is a copy of a constant. The pools
 * summary adds the worker's pools up per (database, user) into at most HTTP_POOLS_MAX rows, each
 * pool compared with the rows made so far: at most pools x HTTP_POOLS_MAX string compares, and a
 * bounded answer; its memory is sized for the pools and nodes there are.
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
	const char *database; /* borrowed from the first pool of the pair */
	const char *user;     /* borrowed from the first pool of the pair */
	int clients_active;   /* logged in and not waiting for a server connection */
	int clients_waiting;  /* waiting for a server connection */
	int *srv; /* borrowed: 3 counts per node (active: linked, connecting or logging in; idle;
		     reset: running the reset query), in one array shared by all rows */
};

/* The rows of one /cluster answer, sized for the pools and nodes there are (at most
 * HTTP_POOLS_MAX rows). */
struct pool_rows {
	struct pool_row *rows; /* owned */
	int *counts;	       /* owned: cap * n_nodes * 3 server counts */
	int n, cap, n_nodes;
};

/* Adds p into its row, making the row if there is room. False if there was none. */
static bool pool_row_add(struct pool_rows *t, const struct pool *p)
{
	struct pool_row *r = NULL;
	for (int i = 0; i < t->n && !r; i++)
		if (strcmp(t->rows[i].database, p->database) == 0 &&
		    strcmp(t->rows[i].user, p->user) == 0)
			r = &t->rows[i];
	if (!r) {
		if (t->n >= t->cap)
			return false;
		r = &t->rows[t->n];
		*r = (struct pool_row){ .database = p->database,
					.user = p->user,
					.srv = t->counts + (size_t)t->n * (size_t)t->n_nodes * 3 };
		t->n++;
	}
	r->clients_waiting += p->n_waiting;
	r->clients_active += p->n_clients - p->n_waiting;
	for (int i = 0; i < t->n_nodes; i++) {
		const struct pool_node *pn = &p->nodes[i];
		r->srv[i * 3] += pn->n_servers - pn->n_idle - pn->n_resetting;
		r->srv[i * 3 + 1] += pn->n_idle;
		r->srv[i * 3 + 2] += pn->n_resetting;
	}
	return true;
}

static void pool_row_write(struct textbuf *b, const struct pool_row *r, int n_nodes, bool first)
{
	int sum[3] = { 0, 0, 0 };
	for (int i = 0; i < n_nodes * 3; i++)
		sum[i % 3] += r->srv[i];
	textbuf_puts(b, first ? "{\"database\": " : ", {\"database\": ");
	textbuf_json_string(b, r->database);
	textbuf_puts(b, ", \"user\": ");
	textbuf_json_string(b, r->user);
	textbuf_printf(b,
		       ", \"clients_active\": %d, \"clients_waiting\": %d, \"servers_active\": %d"
		       ", \"servers_idle\": %d, \"servers_reset\": %d, \"servers\": [",
		       r->clients_active, r->clients_waiting, sum[0], sum[1], sum[2]);
	for (int i = 0; i < n_nodes; i++)
		textbuf_printf(
			b, "%s{\"node_id\": %d, \"active\": %d, \"idle\": %d, \"reset\": %d}",
			i ? ", " : "", i, r->srv[i * 3], r->srv[i * 3 + 1], r->srv[i * 3 + 2]);
	textbuf_puts(b, "]}");
}

void http_cluster_pools(struct worker *w, struct textbuf *b)
{
	struct pool_rows t = { .n_nodes = w->n_nodes < CONFIG_MAX_BACKENDS ? w->n_nodes
									   : CONFIG_MAX_BACKENDS };
	struct list_node *pos, *tmp;
	list_for_each_safe(pos, tmp, &w->pools)
	{
		if (t.cap == HTTP_POOLS_MAX)
			break;
		t.cap++;
	}
	/* calloc(0) may return NULL: ask for at least one of each. */
	t.rows = calloc((size_t)t.cap + 1, sizeof(*t.rows));
	t.counts = calloc((size_t)t.cap * (size_t)t.n_nodes * 3 + 1, sizeof(*t.counts));
	if (!t.rows || !t.counts) {
		free(t.rows);
		free(t.counts);
		b->failed = true;
		return;
	}
	bool truncated = false;
	list_for_each_safe(pos, tmp, &w->pools)
	{
		if (!pool_row_add(&t, list_entry(pos, struct pool, node)))
			truncated = true;
	}
	textbuf_puts(b, "\"pools\": [");
	for (int i = 0; i < t.n; i++)
		pool_row_write(b, &t.rows[i], t.n_nodes, i == 0);
	textbuf_printf(b, "], \"pools_truncated\": %s", truncated ? "true" : "false");
	free(t.rows);
	free(t.counts);
}
