/*
 * Building OpenSSL contexts from the configuration, and the small per-connection queries the
 * session layer needs (peer CN, ALPN, verification result). All TLS itself is OpenSSL's.
 */
#include "net/tls_ctx.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

const char *const tls_mode_names[] = { "disable",   "allow",	   "prefer", "require",
				       "verify-ca", "verify-full", NULL };

static const unsigned char alpn_postgresql[] = "\012postgresql"; /* length-prefixed */

void tls_error_text(char *out, size_t cap)
{
	unsigned long e;
	size_t used = 0;
	out[0] = 0;
	while ((e = ERR_get_error()) != 0) {
		char one[256];
		ERR_error_string_n(e, one, sizeof(one));
		int n = snprintf(out + used, cap - used, "%s%s", used ? "; " : "", one);
		if (n < 0 || (size_t)n >= cap - used)
			break;
		used += (size_t)n;
	}
	if (!out[0])
		snprintf(out, cap, "unknown TLS error");
}

static bool tls_fail(char *err, size_t cap, const char *what, const char *file)
{
	char why[512];
	tls_error_text(why, sizeof(why));
	if (file)
		snprintf(err, cap, "%s \"%s\": %s", what, file, why);
	else
		snprintf(err, cap, "%s: %s", what, why);
	return false;
}

bool tls_key_file_private(const char *path, char *err, size_t cap)
{
	struct stat st;
	if (stat(path, &st) != 0) {
		snprintf(err, cap, "could not access private key file \"%s\": %s", path,
			 strerror(errno));
		return false;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(err, cap, "private key file \"%s\" is not a regular file", path);
		return false;
	}
	/* As PostgreSQL: 0600 for its owner, or 0640 when root owns it (a group of readers). */
	mode_t bad = st.st_uid == 0 ? (S_IWGRP | S_IXGRP | S_IRWXO) : (S_IRWXG | S_IRWXO);
	if (st.st_mode & bad) {
		snprintf(err, cap,
			 "private key file \"%s\" has group or world access; it must be u=rw "
			 "(0600) or less if owned by its user, or u=rw,g=r (0640) or less if "
			 "owned by root",
			 path);
		return false;
	}
	return true;
}

static int tls_parse_version(const char *name)
{
	static const struct {
		const char *name;
		int version;
	} versions[] = { { "TLSv1", TLS1_VERSION },
			 { "TLSv1.1", TLS1_1_VERSION },
			 { "TLSv1.2", TLS1_2_VERSION },
			 { "TLSv1.3", TLS1_3_VERSION } };
	for (size_t i = 0; i < sizeof(versions) / sizeof(versions[0]); i++)
		if (strcasecmp(name, versions[i].name) == 0)
			return versions[i].version;
	return 0;
}

/* What every context shares: protocol floor, ciphers, no renegotiation, lean idle buffers. */
static SSL_CTX *tls_ctx_common(const SSL_METHOD *method, const char *min_protocol,
			       const char *ciphers, char *err, size_t cap, const char **which)
{
	int version = tls_parse_version(min_protocol);
	*which = "min_protocol";
	if (!version) {
		snprintf(err, cap, "unknown TLS protocol version \"%s\" (TLSv1.2 or TLSv1.3)",
			 min_protocol);
		return NULL;
	}
	SSL_CTX *ctx = SSL_CTX_new(method);
	if (!ctx) {
		tls_fail(err, cap, "could not create TLS context", NULL);
		return NULL;
	}
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
					 SSL_OP_CIPHER_SERVER_PREFERENCE);
	/* Idle sessions give their record buffers back: memory per idle TLS client stays small. */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	if (!SSL_CTX_set_min_proto_version(ctx, version)) {
		tls_fail(err, cap, "could not set the TLS protocol floor", NULL);
		SSL_CTX_free(ctx);
		return NULL;
	}
	*which = "ciphers";
	if (ciphers && ciphers[0] && SSL_CTX_set_cipher_list(ctx, ciphers) != 1) {
		snprintf(err, cap, "no usable cipher in \"%s\"", ciphers);
		ERR_clear_error();
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

/* names: the configuration keys of cert and key, one of which *which gets on failure. */
static bool tls_load_pair(SSL_CTX *ctx, const char *cert, const char *key,
			  const char *const names[2], char *err, size_t cap, const char **which)
{
	*which = names[1];
	if (!tls_key_file_private(key, err, cap))
		return false;
	*which = names[0];
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1)
		return tls_fail(err, cap, "could not load certificate file", cert);
	*which = names[1];
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
		return tls_fail(err, cap, "could not load private key file", key);
	if (SSL_CTX_check_private_key(ctx) != 1)
		return tls_fail(err, cap, "private key does not match the certificate in", cert);
	return true;
}

/*
 * tls-server-end-point (RFC 5929): our certificate hashed with its signature's digest, SHA-256
 * in place of MD5 or SHA-1. A certificate without such a digest (Ed25519) gets no binding.
 */
static void tls_compute_endpoint(struct tls_server_ctx *t)
{
	X509 *cert = SSL_CTX_get0_certificate(t->ctx);
	int algo = NID_undef;
	t->endpoint_len = 0;
	if (!cert || !OBJ_find_sigid_algs(X509_get_signature_nid(cert), &algo, NULL))
		return;
	if (algo == NID_md5 || algo == NID_sha1)
		algo = NID_sha256;
	const EVP_MD *md = EVP_get_digestbynid(algo);
	if (!md || !X509_digest(cert, md, t->endpoint_hash, &t->endpoint_len))
		t->endpoint_len = 0;
}

/*
 * ALPN: agree "postgresql" when offered; a client offering only other protocols is refused
 * (PostgreSQL 17 does the same); no ALPN at all is fine for SSLRequest clients (direct TLS checks
 * it after the handshake).
 */
static int tls_alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
			   const unsigned char *in, unsigned int inlen, void *arg)
{
	(void)ssl;
	(void)arg;
	unsigned char *sel = NULL;
	if (SSL_select_next_proto(&sel, outlen, alpn_postgresql, sizeof(alpn_postgresql) - 1, in,
				  inlen) == OPENSSL_NPN_NEGOTIATED) {
		*out = sel;
		return SSL_TLSEXT_ERR_OK;
	}
	return SSL_TLSEXT_ERR_ALERT_FATAL;
}

bool tls_server_ctx_build(struct tls_server_ctx *out, const struct tls_server_settings *s,
			  char *err, size_t cap, const char **which)
{
	static const char *const names[2] = { "cert_file", "key_file" };
	memset(out, 0, sizeof(*out));
	SSL_CTX *ctx =
		tls_ctx_common(TLS_server_method(), s->min_protocol, s->ciphers, err, cap, which);
	if (!ctx)
		return false;
	if (!tls_load_pair(ctx, s->cert_file, s->key_file, names, err, cap, which))
		goto fail;
	*which = "ca_file";
	if (s->ca_file) {
		STACK_OF(X509_NAME) *ca_names = SSL_load_client_CA_file(s->ca_file);
		if (!ca_names || SSL_CTX_load_verify_locations(ctx, s->ca_file, NULL) != 1) {
			sk_X509_NAME_pop_free(ca_names, X509_NAME_free);
			tls_fail(err, cap, "could not load CA file", s->ca_file);
			goto fail;
		}
		SSL_CTX_set_client_CA_list(ctx, ca_names);
		/* Asked, not required: a client without one gets an ErrorResponse from the auth
		 * step, one with a bad one fails the handshake (PostgreSQL's behaviour). */
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
		out->want_client_cert = true;
	}
	static const unsigned char sid_ctx[] = "pgrelay";
	SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1);
	SSL_CTX_set_alpn_select_cb(ctx, tls_alpn_select, NULL);
	out->ctx = ctx;
	tls_compute_endpoint(out);
	return true;
fail:
	SSL_CTX_free(ctx);
	return false;
}

void tls_server_ctx_free(struct tls_server_ctx *t)
{
	if (t->ctx)
		SSL_CTX_free(t->ctx);
	memset(t, 0, sizeof(*t));
}

SSL_CTX *tls_client_ctx_build(const struct tls_client_settings *s, char *err, size_t cap,
			      const char **which)
{
	static const char *const names[2] = { "server_cert_file", "server_key_file" };
	SSL_CTX *ctx =
		tls_ctx_common(TLS_client_method(), s->min_protocol, s->ciphers, err, cap, which);
	if (!ctx)
		return NULL;
	if (s->cert_file && s->key_file &&
	    !tls_load_pair(ctx, s->cert_file, s->key_file, names, err, cap, which))
		goto fail;
	*which = "server_ca_file";
	if (s->mode >= TLS_VERIFY_CA) {
		if (!s->ca_file) {
			snprintf(err, cap, "sslmode %s needs a CA file", tls_mode_names[s->mode]);
			goto fail;
		}
		if (SSL_CTX_load_verify_locations(ctx, s->ca_file, NULL) != 1) {
			tls_fail(err, cap, "could not load CA file", s->ca_file);
			goto fail;
		}
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	} else {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	}
	if (SSL_CTX_set_alpn_protos(ctx, alpn_postgresql, sizeof(alpn_postgresql) - 1) != 0) {
		tls_fail(err, cap, "could not set ALPN", NULL);
		goto fail;
	}
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

void tls_ctx_release(SSL_CTX *ctx)
{
	if (ctx)
		SSL_CTX_free(ctx);
}

static bool tls_host_is_ip(const char *host)
{
	unsigned char buf[sizeof(struct in6_addr)];
	return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

SSL *tls_ssl_new(SSL_CTX *ctx, bool server, const char *host, bool verify_host)
{
	SSL *ssl = SSL_new(ctx);
	if (!ssl)
		return NULL;
	if (server) {
		SSL_set_accept_state(ssl);
		return ssl;
	}
	SSL_set_connect_state(ssl);
	if (!host)
		return ssl;
	bool ip = tls_host_is_ip(host);
	if (!ip)
		SSL_set_tlsext_host_name(ssl, host);
	if (verify_host) {
		X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
		int ok = ip ? X509_VERIFY_PARAM_set1_ip_asc(param, host)
			    : X509_VERIFY_PARAM_set1_host(param, host, 0);
		if (ok != 1) {
			SSL_free(ssl);
			return NULL;
		}
	}
	return ssl;
}

bool tls_peer_verified(SSL *ssl)
{
	X509 *peer = SSL_get0_peer_certificate(ssl);
	return peer && SSL_get_verify_result(ssl) == X509_V_OK;
}

bool tls_peer_cn(SSL *ssl, char *out, size_t cap)
{
	out[0] = 0;
	if (!tls_peer_verified(ssl))
		return false;
	X509_NAME *subject = X509_get_subject_name(SSL_get0_peer_certificate(ssl));
	int idx = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
	if (idx < 0)
		return false;
	ASN1_STRING *data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, idx));
	int len = ASN1_STRING_length(data);
	const unsigned char *bytes = ASN1_STRING_get0_data(data);
	/* A CN with an embedded NUL could pose as a shorter name: refuse it (as PostgreSQL). */
	if (len <= 0 || (size_t)len >= cap || memchr(bytes, 0, (size_t)len))
		return false;
	memcpy(out, bytes, (size_t)len);
	out[len] = 0;
	return true;
}

bool tls_alpn_agreed(SSL *ssl)
{
	const unsigned char *proto = NULL;
	unsigned len = 0;
	SSL_get0_alpn_selected(ssl, &proto, &len);
	return len == sizeof(alpn_postgresql) - 2 && memcmp(proto, alpn_postgresql + 1, len) == 0;
}

const char *tls_verify_error(SSL *ssl)
{
	long r = SSL_get_verify_result(ssl);
	return r == X509_V_OK ? "" : X509_verify_cert_error_string(r);
}

const char *tls_version_name(SSL *ssl)
{
	return SSL_get_version(ssl);
}

int libpq_tls_params(const struct libpq_tls *t, const char **keys, const char **vals)
{
	const char *const names[LIBPQ_TLS_KEYS] = { "sslmode", "sslrootcert", "sslcert", "sslkey" };
	const char *const values[LIBPQ_TLS_KEYS] = { t->sslmode, t->sslrootcert, t->sslcert,
						     t->sslkey };
	int n = 0;
	for (int i = 0; i < LIBPQ_TLS_KEYS; i++) {
		if (!values[i])
			continue;
		keys[n] = names[i];
		vals[n++] = values[i];
	}
	return n;
}

static bool dup_opt(const char *src, const char **dst)
{
	*dst = NULL;
	if (!src)
		return true;
	return (*dst = strdup(src)) != NULL;
}

bool libpq_tls_dup(const struct libpq_tls *src, struct libpq_tls *dst)
{
	memset(dst, 0, sizeof(*dst));
	if (dup_opt(src->sslmode, &dst->sslmode) && dup_opt(src->sslrootcert, &dst->sslrootcert) &&
	    dup_opt(src->sslcert, &dst->sslcert) && dup_opt(src->sslkey, &dst->sslkey))
		return true;
	libpq_tls_free(dst);
	return false;
}

void libpq_tls_free(struct libpq_tls *t)
{
	free((char *)t->sslmode);
	free((char *)t->sslrootcert);
	free((char *)t->sslcert);
	free((char *)t->sslkey);
	memset(t, 0, sizeof(*t));
}
