/*
 * TLS contexts: the OpenSSL SSL_CTX objects pgrelay uses towards clients (as a server) and towards
 * backends (as a client), built from the `tls` configuration group when a configuration is loaded
 * and owned by that configuration. A reload builds new ones; a session keeps the context it
 * started with (OpenSSL counts the references), so rotating a certificate drops nobody.
 *
 * Modes use libpq's sslmode names on both sides. Towards clients they mean: disable answers 'N';
 * allow and prefer offer TLS and accept plaintext; require refuses plaintext; verify-ca also wants
 * a client certificate signed by ca_file; verify-full also wants its CN to be the user name.
 */
#ifndef PGRELAY_NET_TLS_CTX_H
#define PGRELAY_NET_TLS_CTX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_st SSL;

enum tls_mode {
	TLS_DISABLE,
	TLS_ALLOW,
	TLS_PREFER,
	TLS_REQUIRE,
	TLS_VERIFY_CA,
	TLS_VERIFY_FULL,
};

#define TLS_ENDPOINT_HASH_MAX 64 /* EVP_MAX_MD_SIZE */

/* The client-facing side: pgrelay's certificate, and what the channel binding hashes. */
struct tls_server_ctx {
	SSL_CTX *ctx;				      /* owned (one reference) */
	uint8_t endpoint_hash[TLS_ENDPOINT_HASH_MAX]; /* tls-server-end-point of our certificate */
	unsigned endpoint_len;
	bool want_client_cert; /* ca_file set: a client certificate is asked for, never required */
};

struct tls_server_settings {
	const char *cert_file, *key_file, *ca_file; /* ca_file may be NULL */
	const char *min_protocol, *ciphers;
};

struct tls_client_settings {
	enum tls_mode mode;
	const char *ca_file; /* NULL: no verification possible (modes below verify-ca) */
	const char *cert_file, *key_file; /* NULL: no client certificate */
	const char *min_protocol, *ciphers;
};

/* libpq's TLS connection parameters for one node (NULL: libpq's default). */
struct libpq_tls {
	const char *sslmode, *sslrootcert, *sslcert, *sslkey;
};
#define LIBPQ_TLS_KEYS 4 /* most keys libpq_tls_params adds */

/* Appends the set parameters to keys/vals (not terminated); returns how many. */
int libpq_tls_params(const struct libpq_tls *t, const char **keys, const char **vals);
/* Owned copies of src's strings in dst (free with libpq_tls_free); false when out of memory. */
bool libpq_tls_dup(const struct libpq_tls *src, struct libpq_tls *dst)
	__attribute__((warn_unused_result));
void libpq_tls_free(struct libpq_tls *t);

/* Names of the modes in enum order, NULL-terminated (for the configuration table). */
extern const char *const tls_mode_names[];

/*
 * A key file must not be readable by group or others, except group-readable when owned by root
 * (PostgreSQL's rule). False with the reason in err.
 */
bool tls_key_file_private(const char *path, char *err, size_t cap);

/*
 * Builds the client-facing context. False with an OpenSSL-derived reason in err and, in *which,
 * the tls key at fault ("key_file", "ca_file", "min_protocol", ...).
 */
bool tls_server_ctx_build(struct tls_server_ctx *out, const struct tls_server_settings *s,
			  char *err, size_t cap, const char **which)
	__attribute__((warn_unused_result));
void tls_server_ctx_free(struct tls_server_ctx *t);

/* Builds a backend-facing context for s->mode (> TLS_DISABLE). NULL with the reason in err and
 * the key at fault in *which ("server_ca_file", "server_key_file", ...). */
SSL_CTX *tls_client_ctx_build(const struct tls_client_settings *s, char *err, size_t cap,
			      const char **which);
void tls_ctx_release(SSL_CTX *ctx);

/*
 * A new SSL object for one connection. server: accept side (towards a client). For the connect
 * side, host names the backend: sent as SNI when it is a name, and checked against the
 * certificate when verify_host. NULL when out of memory.
 */
SSL *tls_ssl_new(SSL_CTX *ctx, bool server, const char *host, bool verify_host);

/* The certificate subject's CN of the peer, if it sent one that verified; false otherwise. */
bool tls_peer_cn(SSL *ssl, char *out, size_t cap);
/* The peer sent a certificate and it verified. */
bool tls_peer_verified(SSL *ssl);
/* ALPN "postgresql" was agreed. */
bool tls_alpn_agreed(SSL *ssl);
/* The last OpenSSL error queue entries as one line (the queue is cleared). */
void tls_error_text(char *out, size_t cap);
/* Why the peer's certificate failed verification, as OpenSSL words it ("" when it did not). */
const char *tls_verify_error(SSL *ssl);
/* "TLSv1.3" etc. */
const char *tls_version_name(SSL *ssl);

#endif
