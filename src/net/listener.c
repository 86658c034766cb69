/*
 * Listening sockets; see listener.h. Name resolution happens once, at start or restart, before
 * the loop carries traffic, so the blocking getaddrinfo never stalls a client.
 */
#include "net/listener.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define LISTENER_ACCEPTS_PER_EVENT 64 /* connections taken per wake-up before others run */

/* A descriptor kept open to be given up at EMFILE, so that the backlog can still be drained. */
static int listener_reserve_fd = -1;

static void listener_reserve(void)
{
	if (listener_reserve_fd < 0)
		listener_reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

/* Out of descriptors: accept and close every pending connection with the reserve's slot. */
static void listener_drain_backlog(struct listener *l)
{
	if (listener_reserve_fd < 0)
		return;
	close(listener_reserve_fd);
	listener_reserve_fd = -1;
	for (int i = 0; i < LISTENER_ACCEPTS_PER_EVENT; i++) {
		int fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			break;
		close(fd);
	}
	listener_reserve();
}

static void listener_poll_cb(uv_poll_t *h, int status, int events)
{
	(void)events;
	struct listener *l = h->data;
	struct sockaddr_storage peer;
	if (status < 0) {
		peer.ss_family = AF_UNSPEC;
		l->cb(l, status, &peer);
		return;
	}
	for (int i = 0; i < LISTENER_ACCEPTS_PER_EVENT && l->open; i++) {
		socklen_t len = sizeof(peer);
		int fd = accept4(l->fd, (struct sockaddr *)&peer, &len,
				 SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd >= 0) {
			l->cb(l, fd, &peer);
			continue;
		}
		int err = errno;
		if (err == EAGAIN || err == EWOULDBLOCK)
			return;
		if (err == EINTR || err == ECONNABORTED)
			continue;
		if (err == EMFILE || err == ENFILE)
			listener_drain_backlog(l);
		peer.ss_family = AF_UNSPEC;
		l->cb(l, -err, &peer);
		return;
	}
}

static int listener_socket(const struct sockaddr *sa)
{
	int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	int one = 1;
	socklen_t len = sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
						  : sizeof(struct sockaddr_in);
	/* Linux copies TCP_NODELAY into every accepted socket: one setsockopt per port, not per
	 * client (conn_accept does not repeat it). */
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0 ||
	    (sa->sa_family == AF_INET6 &&
	     setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0) ||
	    bind(fd, sa, len) < 0 || listen(fd, 4096) < 0) {
		int err = errno;
		close(fd);
		return -err;
	}
	return fd;
}

static int listener_open_one(struct listener *l, uv_loop_t *loop, const struct sockaddr *sa,
			     listener_cb cb, void *owner, char *err, size_t errcap)
{
	memset(l, 0, sizeof(*l));
	l->cb = cb;
	l->owner = owner;
	l->fd = -1;
	char host[64] = "?";
	int port = 0;
	if (sa->sa_family == AF_INET6) {
		uv_ip6_name((const struct sockaddr_in6 *)sa, host, sizeof(host));
		port = ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
		snprintf(l->name, sizeof(l->name), "[%s]:%d", host, port);
	} else {
		uv_ip4_name((const struct sockaddr_in *)sa, host, sizeof(host));
		port = ntohs(((const struct sockaddr_in *)sa)->sin_port);
		snprintf(l->name, sizeof(l->name), "%s:%d", host, port);
	}
	listener_reserve();
	int rc = listener_socket(sa);
	if (rc < 0)
		goto fail;
	l->fd = rc;
	rc = uv_poll_init_socket(loop, &l->poll, l->fd);
	if (rc < 0) {
		close(l->fd);
		goto fail;
	}
	l->poll.data = l;
	l->open = true;
	rc = uv_poll_start(&l->poll, UV_READABLE, listener_poll_cb);
	if (rc < 0)
		goto fail;
	return 0;
fail:
	snprintf(err, errcap, "could not listen on %s: %s", l->name, uv_strerror(rc));
	listener_close(l);
	return rc;
}

int listener_open_all(struct listener *ls, int max, int *n, uv_loop_t *loop, const char *host,
		      int port, listener_cb cb, void *owner, char *err, size_t errcap)
{
	struct addrinfo hints, *res = NULL;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	char portbuf[16];
	snprintf(portbuf, sizeof(portbuf), "%d", port);
	const char *node = strcmp(host, "*") == 0 ? NULL : host;
	int gai = getaddrinfo(node, portbuf, &hints, &res);
	if (gai != 0) {
		snprintf(err, errcap, "could not resolve listen address \"%s\": %s", host,
			 gai_strerror(gai));
		return UV_EINVAL;
	}
	*n = 0;
	int rc = 0;
	for (struct addrinfo *ai = res; ai && *n < max; ai = ai->ai_next) {
		if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
			continue;
		rc = listener_open_one(&ls[*n], loop, ai->ai_addr, cb, owner, err, errcap);
		if (rc < 0)
			break;
		(*n)++;
	}
	freeaddrinfo(res);
	if (rc == 0 && *n == 0) {
		snprintf(err, errcap, "no usable address for \"%s\"", host);
		rc = UV_EINVAL;
	}
	return rc;
}

static void listener_closed(uv_handle_t *h)
{
	struct listener *l = h->data;
	close(l->fd);
	l->fd = -1;
}

void listener_close(struct listener *l)
{
	if (!l->open)
		return;
	l->open = false;
	uv_close((uv_handle_t *)&l->poll, listener_closed);
}
