/*
 * What each HTTP path answers (doc/http.md), from the worker's view of the cluster, its pools and
 * counters. Pure with respect to the network: a request in, a status and a body out; the server
 * (http_server.c) does the bytes. Runs on the worker's loop.
 */
#ifndef PGRELAY_HTTP_HTTP_ROUTES_H
#define PGRELAY_HTTP_HTTP_ROUTES_H

#include <stdbool.h>
#include <stddef.h>

#include "util/textbuf.h"

struct worker;

#define HTTP_BODY_MAX (4u << 20) /* ceiling of one response body (/metrics of many pools) */

struct http_request {
	const char *path; /* borrowed: the path, without the query */
	size_t path_len;
	const char *query; /* borrowed: the query string without '?', or NULL */
	size_t query_len;
	bool allowed; /* the peer is inside http.allow (/metrics, /cluster) */
};

struct http_response {
	int status;		   /* 200, 206, 400, 403, 404, 500, 503 */
	const char *content_type;  /* static string */
	const char *extra_headers; /* static string of "Name: value\r\n" lines, or NULL */
	struct textbuf body;	   /* owned by the caller (initialised and freed there) */
};

/* Fills out for a GET of req (HEAD and OPTIONS use the status and drop the body). */
void http_route(struct worker *w, const struct http_request *req, struct http_response *out);

/* Parses a ?lag= value: bytes ("1024", "16MB") or a duration ("1s", "500ms"). */
bool http_parse_lag(const char *text, bool *is_time, double *value)
	__attribute__((warn_unused_result));

/* The /status page: the HTML compiled into the binary (http_status.c). */
void http_status_page(struct http_response *out);

/*
 * The "pools" member of /cluster (http_status.c): logged-in clients and backend connections per
 * (database, user), as /metrics adds them up; at most HTTP_POOLS_MAX entries.
 */
void http_cluster_pools(struct worker *w, struct textbuf *b);
#define HTTP_POOLS_MAX 256

/* Writes the Prometheus text exposition of w's state into b (http_metrics.c). */
void http_metrics_write(struct worker *w, struct textbuf *b);

#endif
