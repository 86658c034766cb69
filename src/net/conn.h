/*
 * A connection: one socket watched by a uv_poll_t, one read buffer, and the owner's callbacks
 * (PgBouncer's sbuf). conn.c does the socket's reads and writes itself (read, send, sendmsg) and
 * keeps its own write queue: a uv_tcp_t would do the same work but weighs 248 bytes per
 * connection against the poll handle's 160 (doc/performance.md, "Memory at rest").
 *
 * Reading: bytes land in rbuf's free tail; the owner's on_data scans them and decides. Reading is
 * on only while the owner wants it, no forward from rbuf is in flight, and rbuf has room: that is
 * the whole backpressure story (a slow destination stops its source, memory stays bounded).
 *
 * Writing: conn_forward() sends rbuf[done, parsed) of one connection to another without copying
 * (one send, then a queued request pointing at the same bytes); conn_send() copies what the
 * socket did not take of a small synthesised packet into an owned request. Requests wait in one
 * queue per destination and nothing is sent past a waiting one, so injected packets and forwarded
 * ranges reach the peer in the order they were issued.
 *
 * Lifetime: a conn is embedded in its owner (client or server). It holds one reference for its
 * handle and one per forward in flight out of its buffer; on_closed runs when the last goes, and
 * only then may the owner free itself. Callbacks never run after on_closed, and never from inside
 * the conn_* call that caused them (write completions come from the loop).
 */
#ifndef PGRELAY_NET_CONN_H
#define PGRELAY_NET_CONN_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "net/iobuf.h"

#define CONN_MAX_QUEUED (1u << 20) /* bound on copied (injected) bytes waiting to be written */

struct conn;
struct conn_tls;
struct conn_wreq;
typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_st SSL;

enum conn_event {
	CONN_EV_EOF,		/* peer closed its side */
	CONN_EV_READ_ERROR,	/* status holds the libuv error */
	CONN_EV_WRITE_ERROR,	/* a write to this conn failed */
	CONN_EV_CONNECTED,	/* outgoing connect finished */
	CONN_EV_CONNECT_FAILED, /* status holds the libuv error */
	CONN_EV_FORWARD_DONE,	/* a forward out of this conn's buffer completed; rescan */
	CONN_EV_FORWARD_FAILED, /* a forward out of this conn's buffer could not be written */
	CONN_EV_TLS_READY,	/* the TLS handshake finished (conn_ssl() tells the details) */
	CONN_EV_TLS_ERROR,	/* the handshake or a record failed; conn_tls_error() says why */
};

struct conn_ops {
	void (*on_data)(struct conn *c);				  /* new bytes */
	void (*on_event)(struct conn *c, enum conn_event ev, int status); /* see enum */
	void (*on_closed)(struct conn *c); /* handle closed and no write references it */
};

struct conn {
	/* Watches fd once it exists (poll.data points at this conn; poll.loop is set by
	 * conn_init already). Connect and shutdown need no request objects of their own. */
	uv_poll_t poll;
	const struct conn_ops *ops; /* borrowed, static */
	void *owner;		    /* borrowed: the object this conn is embedded in */
	struct iobuf_pool *bufs;    /* borrowed: the worker's buffer pool */
	struct iobuf *rbuf;	    /* owned; NULL while nothing is buffered */
	struct conn_tls *tls;	    /* owned; NULL for plaintext (conn_tls.c) */
	struct conn_wreq *wq_head;  /* writes the socket has not taken yet, oldest first */
	struct conn_wreq **wq_tail; /* where the next one is linked */
	uint64_t rx_bytes; /* bytes read from the socket (ciphertext with TLS), one add per read */
	uint64_t tx_bytes; /* bytes handed to conn_send / conn_forward towards this peer */
	uint32_t fwd_len;  /* bytes of rbuf in the forward in flight */
	uint32_t queued;   /* injected bytes waiting in write requests */
	uint32_t pkt_remaining;	 /* bytes of the current message not yet scanned */
	int refs;		 /* handle + forwards in flight; on_closed at 0 */
	int fd;			 /* the socket; -1 before conn_accept / conn_connect */
	int16_t delayed_error;	 /* a connect that failed at once, reported from the loop */
	uint8_t events;		 /* UV_READABLE / UV_WRITABLE the poll handle watches */
	bool want_read : 1;	 /* the owner wants bytes */
	bool reading : 1;	 /* reads are on (the poll watches UV_READABLE) */
	bool pkt_skip : 1;	 /* the current message is skipped, not sent */
	bool closing : 1;	 /* close started; no more callbacks but on_closed */
	bool open : 1;		 /* conn_init ran and close has not */
	bool connecting : 1;	 /* a connect is in flight */
	bool close_flushed : 1;	 /* close once the write queue is empty (conn_close_after_flush) */
	bool handle_closing : 1; /* uv_close was called on poll (or the stand-in handle) */
};

/*
 * Initialises c for loop; the socket and its poll handle come with conn_accept or conn_connect
 * (conn_close works before either). Returns 0 or a libuv error code (none today).
 */
int conn_init(struct conn *c, uv_loop_t *loop, struct iobuf_pool *bufs, const struct conn_ops *ops,
	      void *owner) __attribute__((warn_unused_result));
/*
 * Takes over fd, an accepted socket (non-blocking; TCP_NODELAY is the listener's business), into
 * c (initialised). On error fd is closed.
 */
int conn_accept(struct conn *c, int fd) __attribute__((warn_unused_result));
/*
 * Starts a non-blocking TCP connect to addr (IPv4 or IPv6); CONN_EV_CONNECTED or
 * CONN_EV_CONNECT_FAILED follow from the loop, also when it was refused at once. Bytes sent
 * meanwhile wait in the queue. Returns 0 or a libuv error code (no socket, no descriptor).
 */
int conn_connect(struct conn *c, const struct sockaddr *addr) __attribute__((warn_unused_result));

void conn_want_read(struct conn *c, bool want);
/* Sends a copy of data (for synthesised packets). Returns a libuv error code or UV_ENOBUFS. */
int conn_send(struct conn *c, const void *data, size_t len) __attribute__((warn_unused_result));
/*
 * Sends src->rbuf[done, parsed) to dst. Returns 0 when everything was written at once (done is
 * advanced), 1 when a write is in flight (CONN_EV_FORWARD_DONE on src follows), <0 on error.
 */
int conn_forward(struct conn *src, struct conn *dst) __attribute__((warn_unused_result));
static inline bool conn_forward_busy(const struct conn *c)
{
	return c->fwd_len != 0;
}
/* Makes room for more bytes after a scan: resets or compacts rbuf, returns it when empty. */
void conn_tidy_buffer(struct conn *c);
/* Starts or stops reading to match want_read, forwards in flight and buffer room. */
void conn_update_reading(struct conn *c);
/*
 * Tidy + update reading: call after consuming bytes outside the read callback (which does it
 * itself), or a connection whose buffer was full when it was scanned never reads again.
 */
void conn_settle(struct conn *c);

/* Closes now; pending writes are cancelled. */
void conn_close(struct conn *c);
/* Closes after pending writes are flushed (the caller bounds how long with a timer). */
void conn_close_after_flush(struct conn *c);

/*
 * From now on the bytes on the wire are TLS: rbuf keeps receiving plaintext, conn_send and
 * conn_forward take plaintext. server: pgrelay accepts (towards a client); else it connects, with
 * host as SNI and, when verify_host, checked against the certificate. Bytes already received
 * and not yet scanned are TLS input (direct TLS). CONN_EV_TLS_READY or CONN_EV_TLS_ERROR follow.
 * Returns a libuv error code.
 */
int conn_start_tls(struct conn *c, SSL_CTX *ctx, bool server, const char *host, bool verify_host)
	__attribute__((warn_unused_result));
/* The TLS session once its handshake finished, else NULL. */
SSL *conn_ssl(const struct conn *c);
static inline bool conn_is_tls(const struct conn *c)
{
	return c->tls != NULL;
}
/* Why TLS failed (for logs; names no secret). */
const char *conn_tls_error(const struct conn *c);

/* The peer's / the local address of c's socket. Return 0 or a libuv error. */
int conn_peer_addr(const struct conn *c, struct sockaddr_storage *ss);
int conn_local_addr(const struct conn *c, struct sockaddr_storage *ss);
/* Peer address as text, for logs. */
void conn_peer_name(const struct conn *c, char *out, size_t cap);

#endif
