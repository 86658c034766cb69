/*
 * The HTTP listener (doc/http.md): health paths, /cluster and /metrics, served on the worker's
 * own loop. Every cost is bounded: connections (http.max_connections; beyond, closed at once),
 * header bytes (HTTP_MAX_HEADER_BYTES; beyond, 431), time to finish a request
 * (http.idle_timeout from its first byte or the previous response; then closed), requests per
 * kept-alive connection (HTTP_MAX_REQUESTS) and responses waiting to be written
 * (HTTP_MAX_PIPELINE; a client that pipelines more without reading is closed). Nothing here
 * blocks: responses are built from what the worker already holds (its cluster view, pools and
 * counters) and written with uv_write.
 */
#ifndef PGRELAY_HTTP_HTTP_SERVER_H
#define PGRELAY_HTTP_HTTP_SERVER_H

#include <stdbool.h>
#include <stddef.h>

struct worker;
struct http_server;

#define HTTP_MAX_HEADER_BYTES 8192 /* request line and headers; beyond: 431 */
#define HTTP_MAX_URL_BYTES    2048 /* request target; beyond: 414 */
#define HTTP_MAX_REQUESTS     100  /* per connection, then Connection: close */
#define HTTP_MAX_PIPELINE     16   /* responses queued but not yet written, per connection */

/*
 * Opens the listener(s) of w->cfg->http on w's loop. *out is NULL (and true returned) when
 * http.port is 0. False with a message in err when an address cannot be bound.
 */
bool http_server_start(struct worker *w, struct http_server **out, char *err, size_t errcap)
	__attribute__((warn_unused_result));

/*
 * Closes the listeners and every connection (NULL is fine). The handles finish closing on the
 * next loop run; only then may http_server_free() be called.
 */
void http_server_close(struct http_server *h);
void http_server_free(struct http_server *h);

/* Descriptors the server holds (listeners and connections), for the worker's fd budget. */
int http_server_conn_count(const struct http_server *h);

#endif
