/*
 * TLS under a conn; see conn_tls.h for the shape. The invariants:
 *  - the output scratch is empty between OpenSSL calls: every call on a conn's SSL is followed
 *    by conn_tls_flush(), so the scratch never mixes two connections' bytes;
 *  - plaintext is decrypted only while the owner wants bytes, no forward is in flight out of
 *    rbuf and rbuf has room (the same rule as plaintext reading), so memory stays bounded;
 *  - what waits inside the TLS layer when reading resumes is decrypted from an idle callback,
 *    never re-entering the owner from inside its own call.
 */
#include "net/conn_tls.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "net/tls_ctx.h"

#define TLS_OUT_CAP                                                                                \
	(64u * 1024u) /* holds the ciphertext of one full rbuf and a handshake flight              \
		       */

struct conn_tls {
	SSL *ssl;	    /* owned */
	struct conn *c;	    /* the conn this layer belongs to */
	uv_idle_t drain;    /* decrypts buffered input once the owner wants bytes again */
	const uint8_t *in;  /* borrowed during conn_tls_on_read: the read scratch */
	uint32_t in_len;    /* bytes at in */
	uint32_t in_off;    /* consumed by OpenSSL */
	uint8_t *left;	    /* owned: ciphertext received and not yet taken by OpenSSL */
	uint32_t left_len;  /* bytes at left */
	uint32_t left_off;  /* consumed */
	int write_error;    /* a libuv error from flushing inside OpenSSL's write, 0 if none */
	bool established;   /* the handshake finished */
	bool drain_started; /* the idle handle is running */
	bool drain_open;    /* the idle handle was initialised and is not closed */
	char error[256];    /* why the handshake or a record failed, for the owner's log */
};

/*
 * The TLS layer's per-thread scratch: the ciphertext read from a socket at once, and the records
 * OpenSSL writes, gathered into one socket write. Made when a thread starts its first TLS
 * connection (conn_start_tls) and freed when the thread ends: as static thread-local storage its
 * 96 KB were resident in every thread, the health and cluster threads and every thread of a
 * plaintext deployment included.
 */
struct tls_scratch {
	uint8_t read[CONN_TLS_READ_SCRATCH];
	struct {
		uint8_t data[TLS_OUT_CAP];
		uint32_t len;
		struct conn *owner; /* the conn whose SSL produced data */
	} out;
};

static _Thread_local struct tls_scratch *scratch; /* this thread's, NULL before its first TLS */
static pthread_key_t scratch_key;		  /* frees a thread's scratch when it ends */
static pthread_once_t scratch_key_once = PTHREAD_ONCE_INIT;
static bool scratch_key_made;

static void tls_scratch_key_init(void)
{
	scratch_key_made = pthread_key_create(&scratch_key, free) == 0;
}

/* This thread's scratch, made at the first call; NULL when out of memory. */
static struct tls_scratch *tls_scratch_get(void)
{
	if (scratch)
		return scratch;
	pthread_once(&scratch_key_once, tls_scratch_key_init);
	struct tls_scratch *s = malloc(sizeof(*s));
	if (!s)
		return NULL;
	s->out.len = 0;
	s->out.owner = NULL;
	/* Without the key (never seen) a thread that ends leaks its one scratch. */
	if (scratch_key_made)
		(void)pthread_setspecific(scratch_key, s);
	scratch = s;
	return s;
}

/* ---- the BIO between OpenSSL and the conn ---- */

static int tls_flush(struct conn *c, struct conn *src, uint32_t src_len);

static int tls_bio_read(BIO *bio, char *out, int cap)
{
	struct conn_tls *t = BIO_get_data(bio);
	BIO_clear_retry_flags(bio);
	const uint8_t *from = NULL;
	uint32_t avail = 0, *off = NULL;
	if (t->left_off < t->left_len) { /* older bytes first */
		from = t->left;
		avail = t->left_len;
		off = &t->left_off;
	} else if (t->in && t->in_off < t->in_len) {
		from = t->in;
		avail = t->in_len;
		off = &t->in_off;
	} else {
		BIO_set_retry_read(bio);
		return -1;
	}
	uint32_t n = avail - *off;
	if (n > (uint32_t)cap)
		n = (uint32_t)cap;
	memcpy(out, from + *off, n);
	*off += n;
	return (int)n;
}

static int tls_bio_write(BIO *bio, const char *data, int len)
{
	struct conn_tls *t = BIO_get_data(bio);
	BIO_clear_retry_flags(bio);
	if (scratch->out.len && scratch->out.owner != t->c)
		(void)tls_flush(scratch->out.owner, NULL,
				0); /* defensive: never mix two conns' bytes */
	if (scratch->out.len + (uint32_t)len > TLS_OUT_CAP) {
		int rc = tls_flush(t->c, NULL, 0);
		if (rc >= 0 && (uint32_t)len > TLS_OUT_CAP)
			rc = conn_write_raw(t->c, (const uint8_t *)data, (size_t)len, NULL, 0);
		if (rc < 0) {
			t->write_error = rc;
			return -1;
		}
		if ((uint32_t)len > TLS_OUT_CAP)
			return len;
	}
	memcpy(scratch->out.data + scratch->out.len, data, (size_t)len);
	scratch->out.len += (uint32_t)len;
	scratch->out.owner = t->c;
	return len;
}

static long tls_bio_ctrl(BIO *bio, int cmd, long num, void *ptr)
{
	(void)bio;
	(void)num;
	(void)ptr;
	return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static BIO_METHOD *tls_bio_method;
static pthread_once_t tls_bio_once = PTHREAD_ONCE_INIT;

static void tls_bio_method_init(void)
{
	BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "pgrelay conn");
	if (!m)
		return;
	BIO_meth_set_read(m, tls_bio_read);
	BIO_meth_set_write(m, tls_bio_write);
	BIO_meth_set_ctrl(m, tls_bio_ctrl);
	tls_bio_method = m;
}

/* ---- output ---- */

/* Writes what the scratch holds for c; with src, as src's forward of src_len bytes. */
static int tls_flush(struct conn *c, struct conn *src, uint32_t src_len)
{
	if (!scratch->out.len || scratch->out.owner != c)
		return src ? conn_write_raw(c, NULL, 0, src, src_len) : 0;
	uint32_t len = scratch->out.len;
	scratch->out.len = 0;
	scratch->out.owner = NULL;
	return conn_write_raw(c, scratch->out.data, len, src, src_len);
}

/* ---- failures ---- */

static void tls_note_error(struct conn_tls *t, const char *what)
{
	char why[200];
	const char *verify = tls_verify_error(t->ssl);
	tls_error_text(why, sizeof(why));
	snprintf(t->error, sizeof(t->error), "%s: %s%s%s", what, why, verify[0] ? ": " : "",
		 verify);
}

static void tls_fail(struct conn *c, const char *what)
{
	tls_note_error(c->tls, what);
	c->ops->on_event(c, CONN_EV_TLS_ERROR, UV_EPROTO);
}

/* ---- input ---- */

/* Keeps the ciphertext OpenSSL did not take from the read scratch; false when out of memory. */
static bool tls_keep_input(struct conn_tls *t)
{
	const uint8_t *in = t->in;
	uint32_t rest = in ? t->in_len - t->in_off : 0;
	t->in = NULL;
	if (!rest)
		return true;
	uint32_t old = t->left_len - t->left_off;
	uint8_t *buf = malloc((size_t)old + rest);
	if (!buf)
		return false;
	if (old)
		memcpy(buf, t->left + t->left_off, old);
	memcpy(buf + old, in + t->in_off, rest);
	free(t->left);
	t->left = buf;
	t->left_len = old + rest;
	t->left_off = 0;
	return true;
}

static void tls_drop_consumed_left(struct conn_tls *t)
{
	if (t->left && t->left_off == t->left_len) {
		free(t->left);
		t->left = NULL;
		t->left_len = t->left_off = 0;
	}
}

/* Runs the handshake; true once it is done (CONN_EV_TLS_READY was sent). */
static bool tls_handshake(struct conn *c)
{
	struct conn_tls *t = c->tls;
	int r = SSL_do_handshake(t->ssl);
	int flushed = tls_flush(c, NULL, 0);
	if (r == 1) {
		t->established = true;
		if (flushed < 0) {
			c->ops->on_event(c, CONN_EV_WRITE_ERROR, flushed);
			return false;
		}
		c->ops->on_event(c, CONN_EV_TLS_READY, 0);
		return !c->closing;
	}
	int e = SSL_get_error(t->ssl, r);
	if (e == SSL_ERROR_WANT_READ && flushed >= 0)
		return false;
	if (flushed < 0 || t->write_error)
		c->ops->on_event(c, CONN_EV_WRITE_ERROR, flushed < 0 ? flushed : t->write_error);
	else
		tls_fail(c, "TLS handshake failed");
	return false;
}

static bool tls_may_decrypt(const struct conn *c)
{
	return !c->closing && c->want_read && !c->fwd_len;
}

/*
 * Decrypts into rbuf while the owner wants bytes and rbuf has room, then hands them over. Ends
 * with every byte of the read scratch either taken by OpenSSL or kept in left.
 */
static void tls_pump(struct conn *c)
{
	struct conn_tls *t = c->tls;
	if (!t->established && !tls_handshake(c)) {
		if (!c->closing && !tls_keep_input(t))
			c->ops->on_event(c, CONN_EV_READ_ERROR, UV_ENOMEM);
		return;
	}
	uint32_t got = 0;
	int e = SSL_ERROR_NONE;
	while (tls_may_decrypt(c)) {
		if (!c->rbuf && !(c->rbuf = iobuf_get(c->bufs))) {
			e = SSL_ERROR_SYSCALL;
			break;
		}
		uint32_t room = c->rbuf->cap - c->rbuf->recv;
		if (!room)
			break;
		int n = SSL_read(t->ssl, c->rbuf->data + c->rbuf->recv, (int)room);
		if (n > 0) {
			c->rbuf->recv += (uint32_t)n;
			got += (uint32_t)n;
			continue;
		}
		e = SSL_get_error(t->ssl, n);
		break;
	}
	int flushed = tls_flush(c, NULL, 0);
	tls_drop_consumed_left(t);
	bool kept = tls_keep_input(t);
	if (got && !c->closing)
		c->ops->on_data(c);
	if (c->closing)
		return;
	if (flushed < 0 || t->write_error)
		c->ops->on_event(c, CONN_EV_WRITE_ERROR, flushed < 0 ? flushed : t->write_error);
	else if (!kept || (e == SSL_ERROR_SYSCALL && !c->rbuf))
		c->ops->on_event(c, CONN_EV_READ_ERROR, UV_ENOMEM);
	else if (e == SSL_ERROR_ZERO_RETURN)
		c->ops->on_event(c, CONN_EV_EOF, UV_EOF);
	else if (e != SSL_ERROR_NONE && e != SSL_ERROR_WANT_READ)
		tls_fail(c, "TLS error");
}

void conn_tls_read_buffer(uv_buf_t *buf)
{
	buf->base = (char *)scratch->read; /* made by conn_start_tls on this thread */
	buf->len = sizeof(scratch->read);
}

void conn_tls_on_read(struct conn *c, const uint8_t *data, size_t len)
{
	struct conn_tls *t = c->tls;
	t->in = data;
	t->in_len = (uint32_t)len;
	t->in_off = 0;
	tls_pump(c);
	if (t->in) /* the owner closed the conn inside the pump: the scratch is not kept */
		t->in = NULL;
}

bool conn_tls_has_pending(const struct conn *c)
{
	const struct conn_tls *t = c->tls;
	return t->left_off < t->left_len || (t->established && SSL_pending(t->ssl) > 0);
}

bool conn_tls_backlogged(const struct conn *c)
{
	const struct conn_tls *t = c->tls;
	return t->left_len - t->left_off >= CONN_TLS_IN_LEFT_MAX;
}

static void tls_drain_cb(uv_idle_t *h)
{
	struct conn *c = h->data;
	struct conn_tls *t = c->tls;
	uv_idle_stop(h);
	t->drain_started = false;
	if (c->closing)
		return;
	tls_pump(c);
	conn_settle(c);
}

void conn_tls_schedule_drain(struct conn *c)
{
	struct conn_tls *t = c->tls;
	if (t->drain_started || !t->drain_open || c->closing)
		return;
	if (uv_idle_start(&t->drain, tls_drain_cb) == 0)
		t->drain_started = true;
}

/* ---- output ---- */

static int tls_encrypt(struct conn *c, const void *data, size_t len)
{
	struct conn_tls *t = c->tls;
	if (!t->established || c->closing)
		return UV_ECANCELED;
	if (len == 0)
		return 0;
	int n = SSL_write(t->ssl, data, (int)len);
	if (n == (int)len)
		return 0;
	if (t->write_error)
		return t->write_error;
	tls_note_error(t, "TLS write failed");
	return UV_EPROTO;
}

int conn_tls_send(struct conn *c, const void *data, size_t len)
{
	int rc = tls_encrypt(c, data, len);
	int flushed = tls_flush(c, NULL, 0);
	return rc < 0 ? rc : flushed;
}

int conn_tls_forward(struct conn *src, struct conn *dst)
{
	struct iobuf *b = src->rbuf;
	uint32_t len = b->parsed - b->done;
	if (len == 0)
		return 0;
	int rc = tls_encrypt(dst, b->data + b->done, len);
	if (rc < 0) {
		(void)tls_flush(dst, NULL, 0);
		return rc;
	}
	rc = tls_flush(dst, src, len);
	if (rc == 0)
		b->done += len;
	return rc;
}

void conn_tls_notify_close(struct conn *c)
{
	struct conn_tls *t = c->tls;
	if (!t || !t->established)
		return;
	ERR_clear_error();
	(void)SSL_shutdown(t->ssl);
	(void)tls_flush(c, NULL, 0);
	ERR_clear_error();
}

/* ---- lifetime ---- */

static void tls_drain_closed(uv_handle_t *h)
{
	conn_unref(h->data);
}

void conn_tls_close(struct conn *c)
{
	struct conn_tls *t = c->tls;
	if (!t || !t->drain_open)
		return;
	t->drain_open = false;
	t->drain_started = false;
	c->refs++;
	uv_close((uv_handle_t *)&t->drain, tls_drain_closed);
}

void conn_tls_free(struct conn *c)
{
	struct conn_tls *t = c->tls;
	if (!t)
		return;
	if (scratch && scratch->out.owner == c) {
		scratch->out.len = 0;
		scratch->out.owner = NULL;
	}
	SSL_free(t->ssl);
	free(t->left);
	free(t);
	c->tls = NULL;
}

int conn_start_tls(struct conn *c, SSL_CTX *ctx, bool server, const char *host, bool verify_host)
{
	if (c->tls || c->closing)
		return UV_EINVAL;
	pthread_once(&tls_bio_once, tls_bio_method_init);
	/* Every TLS call on c happens on this thread, which then has its scratch. */
	if (!tls_bio_method || !tls_scratch_get())
		return UV_ENOMEM;
	struct conn_tls *t = calloc(1, sizeof(*t));
	if (!t)
		return UV_ENOMEM;
	t->c = c;
	t->ssl = tls_ssl_new(ctx, server, host, verify_host);
	BIO *bio = t->ssl ? BIO_new(tls_bio_method) : NULL;
	if (!bio) {
		SSL_free(t->ssl);
		free(t);
		return UV_ENOMEM;
	}
	BIO_set_data(bio, t);
	BIO_set_init(bio, 1);
	SSL_set_bio(t->ssl, bio, bio); /* one reference, owned by the SSL from now on */
	if (uv_idle_init(c->poll.loop, &t->drain) != 0) {
		SSL_free(t->ssl);
		free(t);
		return UV_ENOMEM;
	}
	t->drain.data = c;
	t->drain_open = true;
	c->tls = t;
	/* Bytes that came with the switch (direct TLS: the ClientHello itself) are TLS input. */
	struct iobuf *b = c->rbuf;
	if (b && b->recv > b->parsed) {
		t->in = b->data + b->parsed;
		t->in_len = b->recv - b->parsed;
		t->in_off = 0;
		bool kept = tls_keep_input(t);
		b->recv = b->parsed;
		if (!kept)
			return UV_ENOMEM;
	}
	conn_tls_schedule_drain(c); /* the connect side sends its ClientHello from there */
	return 0;
}

SSL *conn_ssl(const struct conn *c)
{
	return c->tls && c->tls->established ? c->tls->ssl : NULL;
}

const char *conn_tls_error(const struct conn *c)
{
	return c->tls && c->tls->error[0] ? c->tls->error : "TLS error";
}
