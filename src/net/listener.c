/*
 * Listening sockets; see listener.h. Name resolution happens once, at start or restart, before
 * the loop carries traffic, so the blocking getaddrinfo never stalls a client.
 */
#include "net/listener.h"

#include <netdb.h>
#include <stdio.h>
#include <string.h>

static void listener_connection_cb(uv_stream_t *s, int status)
{
	struct listener *l = s->data;
	l->cb(l, status);
}

static int listener_open_one(struct listener *l, uv_loop_t *loop, const struct sockaddr *sa,
			     listener_cb cb, void *owner, char *err, size_t errcap)
{
	memset(l, 0, sizeof(*l));
	l->cb = cb;
	l->owner = owner;
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
	int rc = uv_tcp_init(loop, &l->tcp);
	if (rc < 0)
		goto fail;
	l->tcp.data = l;
	l->open = true;
	rc = uv_tcp_bind(&l->tcp, sa, sa->sa_family == AF_INET6 ? UV_TCP_IPV6ONLY : 0);
	if (rc < 0)
		goto fail;
	rc = uv_listen((uv_stream_t *)&l->tcp, 4096, listener_connection_cb);
	if (rc < 0)
		goto fail;
	return 0;
fail:
	snprintf(err, errcap, "could not listen on %s: %s", l->name, uv_strerror(rc));
	if (l->open) {
		uv_close((uv_handle_t *)&l->tcp, NULL);
		l->open = false;
	}
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

void listener_close(struct listener *l)
{
	if (!l->open)
		return;
	l->open = false;
	uv_close((uv_handle_t *)&l->tcp, NULL);
}
