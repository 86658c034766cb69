/*
 * Internal to src/net: TLS under a conn (conn_tls.c), and the parts of conn.c it uses. The owner
 * of a conn sees none of this: it gets plaintext in rbuf and sends plaintext with conn_send and
 * conn_forward, with or without TLS.
 *
 * Shape: OpenSSL talks to a custom BIO. Ciphertext read from the socket goes to OpenSSL straight
 * from the read scratch (what OpenSSL does not take yet is kept in in_left); plaintext is
 * decrypted into the conn's rbuf. Ciphertext OpenSSL produces is gathered in a per-thread scratch
 * and written to the socket right after each OpenSSL call (one send, the rest copied into a
 * queued write request), so a TLS message costs the same system calls as a plaintext one.
 */
#ifndef PGRELAY_NET_CONN_TLS_H
#define PGRELAY_NET_CONN_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "net/conn.h"

#define CONN_TLS_READ_SCRATCH (32u * 1024u) /* ciphertext read from the socket at once */
#define CONN_TLS_IN_LEFT_MAX  (64u * 1024u) /* ciphertext kept beyond that stops reading */

/* conn.c */

/*
 * Writes raw bytes to c's socket: at once when it takes them, else a copy in a write request.
 * With src, the bytes stand for src's forward of src_len bytes: src's done cursor moves (and
 * CONN_EV_FORWARD_DONE fires on src) only when they are written; returns 1 then. 0 when written
 * or queued without src, <0 a libuv error.
 */
int conn_write_raw(struct conn *c, const uint8_t *data, size_t len, struct conn *src,
		   uint32_t src_len);
/* Drops one reference; the last one frees the buffer and calls on_closed. */
void conn_unref(struct conn *c);

/* conn_tls.c */

/* The read scratch for a TLS conn's socket reads (per thread; consumed in the read callback). */
void conn_tls_read_buffer(uv_buf_t *buf);
/* Ciphertext arrived: runs the handshake and decrypts into rbuf as far as the owner wants. */
void conn_tls_on_read(struct conn *c, const uint8_t *data, size_t len);
/* Ciphertext or plaintext waits inside the TLS layer (the socket may have nothing more). */
bool conn_tls_has_pending(const struct conn *c);
/* Too much ciphertext is held back: stop reading the socket until it is decrypted. */
bool conn_tls_backlogged(const struct conn *c);
/* Decrypts what waits on the next loop turn (never from inside the caller's stack). */
void conn_tls_schedule_drain(struct conn *c);
int conn_tls_send(struct conn *c, const void *data, size_t len);
int conn_tls_forward(struct conn *src, struct conn *dst);
/* Sends close_notify (best effort) before a graceful close. */
void conn_tls_notify_close(struct conn *c);
/* Closes the TLS layer's handle (takes a reference until its close callback). */
void conn_tls_close(struct conn *c);
/* Frees the TLS state (at the last reference). */
void conn_tls_free(struct conn *c);

#endif
