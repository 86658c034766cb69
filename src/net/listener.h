/*
 * Listening sockets. One listener per resolved address of listen_addresses, watched by a uv_poll_t;
 * accept4 runs here and the owner's callback gets each accepted socket (non-blocking, close on
 * exec, TCP_NODELAY inherited from the listening socket) to hand to conn_accept, with its peer
 * address, or an accept error (fd < 0, a libuv error code). At the
 * descriptor limit the backlog is drained with a reserve descriptor (each pending connection is
 * accepted and closed at once, as libuv does for its own listeners), so the loop never spins on a
 * listener it cannot accept from; pgrelay itself refuses clients with SQLSTATE 53300 before that
 * limit (worker.c).
 */
#ifndef PGRELAY_NET_LISTENER_H
#define PGRELAY_NET_LISTENER_H

#include <stdbool.h>
#include <sys/socket.h>
#include <uv.h>

struct listener;
/* peer: the accepted socket's address (AF_UNSPEC when fd < 0). */
typedef void (*listener_cb)(struct listener *l, int fd_or_error,
			    const struct sockaddr_storage *peer);

struct listener {
	uv_poll_t poll; /* watches fd; poll.data points here */
	int fd;		/* the listening socket, owned */
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
