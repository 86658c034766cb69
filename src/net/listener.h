/*
 * Listening sockets. One listener per resolved address of listen_addresses; the owner's callback
 * runs for each incoming connection (or accept error, status < 0) and accepts it with conn_accept.
 * Accept errors at the descriptor limit are handled by libuv (it drains the backlog with a reserve
 * descriptor); pgrelay itself refuses clients with SQLSTATE 53300 before that limit (worker.c).
 */
#ifndef PGRELAY_NET_LISTENER_H
#define PGRELAY_NET_LISTENER_H

#include <stdbool.h>
#include <uv.h>

struct listener;
typedef void (*listener_cb)(struct listener *l, int status);

struct listener {
	uv_tcp_t tcp;	/* the handle; tcp.data points here */
	listener_cb cb; /* borrowed */
	void *owner;	/* borrowed: the worker */
	char name[80];	/* "addr:port", for logs */
	int role;	/* owner's tag (pgrelay: enum listener_role of the port) */
	bool open;	/* handle initialised, not yet closed */
};

/*
 * Binds host:port (host is a numeric IPv4/IPv6 address, a name resolved once at start, or "*")
 * into up to max listeners starting at ls; *n gets how many. Returns 0 or a libuv error, with a
 * message in err.
 */
int listener_open_all(struct listener *ls, int max, int *n, uv_loop_t *loop, const char *host,
		      int port, listener_cb cb, void *owner, char *err, size_t errcap)
	__attribute__((warn_unused_result));
void listener_close(struct listener *l);

#endif
