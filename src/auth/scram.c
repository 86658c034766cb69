/*
 * SCRAM-SHA-256 for both ends of pgrelay, following the message formats of PostgreSQL's
 * src/backend/libpq/auth-scram.c (server) and src/interfaces/libpq/fe-auth-scram.c (client).
 *
 * Every message from the network is untrusted: it is copied into a bounded NUL-terminated buffer
 * (rejecting embedded NULs and anything of SCRAM_MAX_MSG bytes or more, as PostgreSQL rejects a
 * length mismatch), then walked attribute by attribute with a cursor that fails on anything
 * unexpected. Base64 is decoded strictly: canonical padding only, no whitespace, so one value has
 * exactly one spelling and comparisons can be done on the encoded form.
 *
 * State outside the exchange structs: the SaltedPassword cache (process-wide, mutex-protected,
 * because the worker and the health thread both log into backends) and the random key behind mock
 * salts (set once under pthread_once). Secrets are wiped from the stack with OPENSSL_cleanse.
 */
#include "auth/scram.h"

#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#define SCRAM_RAW_NONCE_LEN 18 /* random bytes per nonce; base64 of 18 bytes is SCRAM_NONCE_B64 */
#define SCRAM_SALT_LEN	    16 /* salt length for verifiers we create, as PostgreSQL's default */
#define SCRAM_PREFIX	    "SCRAM-SHA-256$"
#define SP_CACHE_SIZE	    64

_Static_assert((SCRAM_RAW_NONCE_LEN + 2) / 3 * 4 == SCRAM_NONCE_B64, "nonce size mismatch");

/* ---- base64 (RFC 4648 alphabet, padded) ---- */

static const char b64_alphabet[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static size_t b64_encoded_len(size_t n)
{
	return (n + 2) / 3 * 4;
}

/* Writes the encoding of src plus a NUL into dst; false if it does not fit in cap. */
static bool b64_encode(const uint8_t *src, size_t len, char *dst, size_t cap)
{
	size_t o = 0;

	if (b64_encoded_len(len) + 1 > cap)
		return false;
	for (size_t i = 0; i < len; i += 3) {
		uint32_t v = (uint32_t)src[i] << 16;
		size_t rest = len - i;

		if (rest > 1)
			v |= (uint32_t)src[i + 1] << 8;
		if (rest > 2)
			v |= src[i + 2];
		dst[o++] = b64_alphabet[(v >> 18) & 63];
		dst[o++] = b64_alphabet[(v >> 12) & 63];
		dst[o++] = rest > 1 ? b64_alphabet[(v >> 6) & 63] : '=';
		dst[o++] = rest > 2 ? b64_alphabet[v & 63] : '=';
	}
	dst[o] = '\0';
	return true;
}

static int b64_value(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/*
 * Decodes exactly len characters of src into dst. Accepts only canonical base64: a length that is
 * a non-zero multiple of 4, '=' only as one or two final characters, and zero bits under the
 * padding. False on anything else or if the result exceeds cap.
 */
static bool b64_decode(const char *src, size_t len, uint8_t *dst, size_t cap, size_t *out_len)
{
	size_t pad = 0, o = 0;

	if (len == 0 || len % 4 != 0)
		return false;
	if (src[len - 1] == '=')
		pad = src[len - 2] == '=' ? 2 : 1;
	if (len / 4 * 3 - pad > cap)
		return false;
	for (size_t i = 0; i < len; i += 4) {
		bool last = i + 4 == len;
		uint32_t v = 0;

		for (size_t j = 0; j < 4; j++) {
			int d = b64_value(src[i + j]);

			if (d < 0 && !(last && src[i + j] == '=' && j >= 4 - pad))
				return false;
			v = v << 6 | (uint32_t)(d < 0 ? 0 : d);
		}
		dst[o++] = (uint8_t)(v >> 16);
		if (last && pad == 2) {
			if (v & 0xffff)
				return false;
			break;
		}
		dst[o++] = (uint8_t)(v >> 8);
		if (last && pad == 1) {
			if (v & 0xff)
				return false;
			break;
		}
		dst[o++] = (uint8_t)v;
	}
	*out_len = o;
	return true;
}

/* ---- crypto primitives ---- */

static bool scram_sha256(const void *data, size_t len, uint8_t out[SCRAM_KEY_LEN])
{
	unsigned int n = 0;

	return EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) == 1 && n == SCRAM_KEY_LEN;
}

static bool scram_hmac(const uint8_t key[SCRAM_KEY_LEN], const void *data, size_t len,
		       uint8_t out[SCRAM_KEY_LEN])
{
	unsigned int n = 0;

	return HMAC(EVP_sha256(), key, SCRAM_KEY_LEN, data, len, out, &n) != NULL &&
	       n == SCRAM_KEY_LEN;
}

static bool scram_pbkdf2(const char *password, const uint8_t *salt, size_t salt_len, int iterations,
			 uint8_t out[SCRAM_KEY_LEN])
{
	return PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, (int)salt_len, iterations,
				 EVP_sha256(), SCRAM_KEY_LEN, out) == 1;
}

/* ClientKey and ServerKey from SaltedPassword (RFC 5802 section 3). */
static bool scram_derive_keys(const uint8_t salted[SCRAM_KEY_LEN],
			      uint8_t client_key[SCRAM_KEY_LEN], uint8_t server_key[SCRAM_KEY_LEN])
{
	return scram_hmac(salted, "Client Key", 10, client_key) &&
	       scram_hmac(salted, "Server Key", 10, server_key);
}

/* HMAC over AuthMessage = client-first-bare "," server-first "," client-final-without-proof. */
static bool scram_hmac_auth_message(const uint8_t key[SCRAM_KEY_LEN], const char *first_bare,
				    const char *server_first, const char *final_no_proof,
				    size_t final_len, uint8_t out[SCRAM_KEY_LEN])
{
	char msg[3 * SCRAM_MAX_MSG + 2];
	int n = snprintf(msg, sizeof(msg), "%s,%s,%.*s", first_bare, server_first, (int)final_len,
			 final_no_proof);

	if (n < 0 || (size_t)n >= sizeof(msg))
		return false;
	return scram_hmac(key, msg, (size_t)n, out);
}

static bool scram_iterations_valid(int iterations)
{
	return iterations >= 1 && iterations <= SCRAM_MAX_ITERATIONS;
}

static bool scram_salt_valid(const struct scram_secret *s)
{
	return s->salt_len >= 1 && s->salt_len <= SCRAM_MAX_SALT &&
	       scram_iterations_valid(s->iterations);
}

/* ---- SaltedPassword cache (client side only) ---- */

struct sp_cache_entry {
	/* SHA-256 of (iterations, salt length, salt, password): the password is not kept. */
	uint8_t key[SCRAM_KEY_LEN];
	uint8_t salted[SCRAM_KEY_LEN]; /* PBKDF2 result for that triple */
	uint64_t last_used;	       /* value of sp_cache.clock at the last hit; 0 = empty slot */
};

/*
 * Process-wide on purpose: the whole point is to survive across backend connections and threads.
 * Holds nothing the config owns, so a reload needs no flush; stale entries age out (LRU).
 */
static struct {
	pthread_mutex_t lock;
	uint64_t clock;
	uint64_t hits;
	uint64_t misses;
	struct sp_cache_entry entries[SP_CACHE_SIZE];
} sp_cache = { .lock = PTHREAD_MUTEX_INITIALIZER };

static bool sp_cache_key(const char *password, const uint8_t *salt, size_t salt_len, int iterations,
			 uint8_t out[SCRAM_KEY_LEN])
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	uint8_t head[5] = { (uint8_t)(iterations >> 24), (uint8_t)(iterations >> 16),
			    (uint8_t)(iterations >> 8), (uint8_t)iterations, (uint8_t)salt_len };
	unsigned int n = 0;
	bool ok;

	if (!ctx)
		return false;
	/* Fixed-size fields first and the password last keep the encoding unambiguous. */
	ok = EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 &&
	     EVP_DigestUpdate(ctx, head, sizeof(head)) == 1 &&
	     EVP_DigestUpdate(ctx, salt, salt_len) == 1 &&
	     EVP_DigestUpdate(ctx, password, strlen(password)) == 1 &&
	     EVP_DigestFinal_ex(ctx, out, &n) == 1 && n == SCRAM_KEY_LEN;
	EVP_MD_CTX_free(ctx);
	return ok;
}

static bool sp_cache_lookup(const uint8_t key[SCRAM_KEY_LEN], uint8_t salted[SCRAM_KEY_LEN])
{
	bool found = false;

	pthread_mutex_lock(&sp_cache.lock);
	for (size_t i = 0; i < SP_CACHE_SIZE; i++) {
		struct sp_cache_entry *e = &sp_cache.entries[i];

		if (e->last_used && memcmp(e->key, key, SCRAM_KEY_LEN) == 0) {
			memcpy(salted, e->salted, SCRAM_KEY_LEN);
			e->last_used = ++sp_cache.clock;
			found = true;
			break;
		}
	}
	if (found)
		sp_cache.hits++;
	else
		sp_cache.misses++;
	pthread_mutex_unlock(&sp_cache.lock);
	return found;
}

/* Stores a result; a racing insert of the same key just refreshes it. Evicts the LRU entry. */
static void sp_cache_store(const uint8_t key[SCRAM_KEY_LEN], const uint8_t salted[SCRAM_KEY_LEN])
{
	struct sp_cache_entry *victim = &sp_cache.entries[0];

	pthread_mutex_lock(&sp_cache.lock);
	for (size_t i = 0; i < SP_CACHE_SIZE; i++) {
		struct sp_cache_entry *e = &sp_cache.entries[i];

		if (e->last_used && memcmp(e->key, key, SCRAM_KEY_LEN) == 0) {
			victim = e;
			break;
		}
		if (e->last_used < victim->last_used)
			victim = e;
	}
	memcpy(victim->key, key, SCRAM_KEY_LEN);
	memcpy(victim->salted, salted, SCRAM_KEY_LEN);
	victim->last_used = ++sp_cache.clock;
	pthread_mutex_unlock(&sp_cache.lock);
}

/* SaltedPassword through the cache. PBKDF2 runs outside the lock so other threads do not wait. */
static bool sp_cache_salted_password(const char *password, const uint8_t *salt, size_t salt_len,
				     int iterations, uint8_t salted[SCRAM_KEY_LEN])
{
	uint8_t key[SCRAM_KEY_LEN];

	if (!sp_cache_key(password, salt, salt_len, iterations, key))
		return false;
	if (sp_cache_lookup(key, salted))
		return true;
	if (!scram_pbkdf2(password, salt, salt_len, iterations, salted))
		return false;
	sp_cache_store(key, salted);
	return true;
}

void scram_cache_stats(uint64_t *hits, uint64_t *misses)
{
	pthread_mutex_lock(&sp_cache.lock);
	*hits = sp_cache.hits;
	*misses = sp_cache.misses;
	pthread_mutex_unlock(&sp_cache.lock);
}

/* ---- verifiers ---- */

/* Parses a decimal iteration count of exactly len characters (digits only, no sign). */
static bool scram_parse_iterations(const char *s, size_t len, int *out)
{
	long v = 0;

	if (len == 0 || len > 9)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	if (!scram_iterations_valid((int)v))
		return false;
	*out = (int)v;
	return true;
}

static bool scram_decode_key(const char *s, size_t len, uint8_t out[SCRAM_KEY_LEN])
{
	size_t n = 0;

	return b64_decode(s, len, out, SCRAM_KEY_LEN, &n) && n == SCRAM_KEY_LEN;
}

bool scram_secret_parse(const char *text, struct scram_secret *out)
{
	struct scram_secret s = { 0 };
	const char *iter, *salt, *stored, *server;

	if (strncmp(text, SCRAM_PREFIX, strlen(SCRAM_PREFIX)) != 0)
		return false;
	iter = text + strlen(SCRAM_PREFIX);
	salt = strchr(iter, ':');
	stored = salt ? strchr(salt, '$') : NULL;
	server = stored ? strchr(stored, ':') : NULL;
	if (!server)
		return false;
	salt++;
	stored++;
	server++;
	if (!scram_parse_iterations(iter, (size_t)(salt - 1 - iter), &s.iterations) ||
	    !b64_decode(salt, (size_t)(stored - 1 - salt), s.salt, SCRAM_MAX_SALT, &s.salt_len) ||
	    !scram_decode_key(stored, (size_t)(server - 1 - stored), s.stored_key) ||
	    !scram_decode_key(server, strlen(server), s.server_key))
		return false;
	*out = s;
	OPENSSL_cleanse(&s, sizeof(s));
	return true;
}

bool scram_secret_from_password(const char *password, int iterations, struct scram_secret *out)
{
	struct scram_secret s = { .iterations = iterations, .salt_len = SCRAM_SALT_LEN };
	uint8_t salted[SCRAM_KEY_LEN], client_key[SCRAM_KEY_LEN];
	bool ok;

	if (!scram_iterations_valid(iterations) || RAND_bytes(s.salt, SCRAM_SALT_LEN) != 1)
		return false;
	ok = scram_pbkdf2(password, s.salt, s.salt_len, iterations, salted) &&
	     scram_derive_keys(salted, client_key, s.server_key) &&
	     scram_sha256(client_key, SCRAM_KEY_LEN, s.stored_key);
	if (ok)
		*out = s;
	OPENSSL_cleanse(salted, sizeof(salted));
	OPENSSL_cleanse(client_key, sizeof(client_key));
	OPENSSL_cleanse(&s, sizeof(s));
	return ok;
}

bool scram_secret_check_password(const struct scram_secret *secret, const char *password)
{
	uint8_t salted[SCRAM_KEY_LEN], client_key[SCRAM_KEY_LEN], server_key[SCRAM_KEY_LEN];
	bool ok;

	if (!scram_salt_valid(secret))
		return false;
	/* PostgreSQL's scram_verify_plain_password compares ServerKey the same way. */
	ok = scram_pbkdf2(password, secret->salt, secret->salt_len, secret->iterations, salted) &&
	     scram_derive_keys(salted, client_key, server_key) &&
	     CRYPTO_memcmp(server_key, secret->server_key, SCRAM_KEY_LEN) == 0;
	OPENSSL_cleanse(salted, sizeof(salted));
	OPENSSL_cleanse(client_key, sizeof(client_key));
	OPENSSL_cleanse(server_key, sizeof(server_key));
	return ok;
}

static uint8_t mock_key[SCRAM_KEY_LEN]; /* written once by mock_key_init, read-only afterwards */
static bool mock_key_ok;
static pthread_once_t mock_key_once = PTHREAD_ONCE_INIT;

static void mock_key_init(void)
{
	mock_key_ok = RAND_bytes(mock_key, sizeof(mock_key)) == 1;
}

bool scram_secret_mock(const char *user, struct scram_secret *out)
{
	uint8_t digest[SCRAM_KEY_LEN];

	pthread_once(&mock_key_once, mock_key_init);
	if (!mock_key_ok || !scram_hmac(mock_key, user, strlen(user), digest))
		return false;
	memset(out, 0, sizeof(*out));
	out->iterations = SCRAM_DEFAULT_ITERATIONS;
	out->salt_len = SCRAM_SALT_LEN;
	memcpy(out->salt, digest, SCRAM_SALT_LEN);
	/* Random keys: no proof can hash to an unknown StoredKey. */
	return RAND_bytes(out->stored_key, SCRAM_KEY_LEN) == 1 &&
	       RAND_bytes(out->server_key, SCRAM_KEY_LEN) == 1;
}

/* ---- message parsing ---- */

/*
 * Copies an untrusted message into buf as a C string. PostgreSQL rejects a message whose length
 * does not match its strlen, and so do we: no embedded or trailing NUL, not empty.
 */
static bool msg_copy(const char *in, size_t len, char *buf, size_t cap)
{
	if (!in || len == 0 || len >= cap || memchr(in, '\0', len))
		return false;
	memcpy(buf, in, len);
	buf[len] = '\0';
	return true;
}

/*
 * Reads "<attr>=<value>" at *p, value running to the next ',' or the end. Leaves *p on that ',' or
 * NUL. attr 0 accepts any ASCII letter (an extension) and stores it in *got when got is not NULL.
 */
static bool msg_take_attr(const char **p, char attr, char *got, const char **val, size_t *len)
{
	const char *s = *p;
	char a = s[0];

	if (attr ? a != attr : !((a >= 'a' && a <= 'z') || (a >= 'A' && a <= 'Z')))
		return false;
	if (s[1] != '=')
		return false;
	if (got)
		*got = a;
	*val = s + 2;
	*len = strcspn(*val, ",");
	*p = *val + *len;
	return true;
}

static bool msg_take_comma(const char **p)
{
	if (**p != ',')
		return false;
	(*p)++;
	return true;
}

/* A nonce is printable ASCII except ',' (RFC 5802 "printable"), as PostgreSQL checks. */
static bool scram_nonce_valid(const char *s, size_t len)
{
	if (len == 0)
		return false;
	for (size_t i = 0; i < len; i++)
		if (s[i] < 0x21 || s[i] > 0x7e || s[i] == ',')
			return false;
	return true;
}

static bool scram_make_nonce(char out[SCRAM_NONCE_B64 + 1])
{
	uint8_t raw[SCRAM_RAW_NONCE_LEN];

	return RAND_bytes(raw, sizeof(raw)) == 1 &&
	       b64_encode(raw, sizeof(raw), out, SCRAM_NONCE_B64 + 1);
}

static bool scram_output(const char *msg, char *out, size_t cap, size_t *out_len)
{
	size_t n = strlen(msg);

	if (n + 1 > cap)
		return false;
	memcpy(out, msg, n + 1);
	*out_len = n;
	return true;
}

/* ---- server side ---- */

/*
 * client-first-message = gs2-header client-first-message-bare
 *   gs2-header = ("n" / "y" / "p=tls-server-end-point") "," "," (no authzid)
 *   bare = "n=" user "," "r=" nonce *("," ext)  (user ignored: it comes from the startup packet)
 * Leaves the flag, the bare part and the client nonce in st.
 */
static bool scram_server_read_first(struct scram_server *st, const char *msg, const char **cnonce,
				    size_t *cnonce_len, size_t *gs2_len)
{
	const char *p = msg, *v;
	size_t vlen;

	static const char plus[] = "p=tls-server-end-point";
	if (strncmp(p, plus, sizeof(plus) - 1) == 0) {
		st->cbind_flag = 'p';
		p += sizeof(plus) - 1;
	} else if (*p == 'n' || *p == 'y') {
		st->cbind_flag = *p++;
	} else {
		return false;
	}
	if (!msg_take_comma(&p) || !msg_take_comma(&p)) /* no authzid */
		return false;
	*gs2_len = (size_t)(p - msg);
	if (strlen(p) >= sizeof(st->client_first_bare))
		return false;
	strcpy(st->client_first_bare, p);
	/* n= must come first, which also refuses the reserved "m=" (mandatory extension). */
	if (!msg_take_attr(&p, 'n', NULL, &v, &vlen) || !msg_take_comma(&p) ||
	    !msg_take_attr(&p, 'r', NULL, cnonce, cnonce_len))
		return false;
	if (!scram_nonce_valid(*cnonce, *cnonce_len) || *cnonce_len > SCRAM_MAX_CLIENT_NONCE)
		return false;
	while (*p) {
		if (!msg_take_comma(&p) || !msg_take_attr(&p, 0, NULL, &v, &vlen))
			return false;
	}
	return true;
}

/*
 * The client's GS2 flag against what was offered (RFC 5802 section 6): 'p' only with the PLUS
 * mechanism and binding data; 'y' ("I could bind, you did not offer it") is a downgrade when we
 * did offer it; the PLUS mechanism needs 'p'. Stores what client-final's c= must be.
 */
static bool scram_server_check_cbind(struct scram_server *st, const struct scram_cbind *cb,
				     const char *msg, size_t gs2_len)
{
	bool offered = cb && cb->offered, selected = cb && cb->selected;
	uint8_t raw[64 + 64];
	if (selected != (st->cbind_flag == 'p') || (st->cbind_flag == 'y' && offered))
		return false;
	if (gs2_len > 64)
		return false;
	memcpy(raw, msg, gs2_len);
	size_t n = gs2_len;
	if (selected) {
		if (!cb->data || !cb->len || cb->len > 64)
			return false;
		memcpy(raw + n, cb->data, cb->len);
		n += cb->len;
	}
	return b64_encode(raw, n, st->cbind_b64, sizeof(st->cbind_b64));
}

bool scram_server_first(struct scram_server *st, const struct scram_secret *secret,
			const struct scram_cbind *cb, const char *client_first, size_t len,
			char *out, size_t cap, size_t *out_len)
{
	char msg[SCRAM_MAX_MSG], snonce[SCRAM_NONCE_B64 + 1], salt[SCRAM_MAX_MSG];
	const char *cnonce;
	size_t cnonce_len;
	int n;

	size_t gs2_len;

	memset(st, 0, sizeof(*st));
	st->step = -1;
	if (!secret || !scram_salt_valid(secret) ||
	    !msg_copy(client_first, len, msg, sizeof(msg)) ||
	    !scram_server_read_first(st, msg, &cnonce, &cnonce_len, &gs2_len) ||
	    !scram_server_check_cbind(st, cb, msg, gs2_len))
		return false;
	if (!scram_make_nonce(snonce) ||
	    !b64_encode(secret->salt, secret->salt_len, salt, sizeof(salt)))
		return false;
	n = snprintf(st->nonce, sizeof(st->nonce), "%.*s%s", (int)cnonce_len, cnonce, snonce);
	if (n < 0 || (size_t)n >= sizeof(st->nonce))
		return false;
	n = snprintf(st->server_first, sizeof(st->server_first), "r=%s,s=%s,i=%d", st->nonce, salt,
		     secret->iterations);
	if (n < 0 || (size_t)n >= sizeof(st->server_first))
		return false;
	if (!scram_output(st->server_first, out, cap, out_len))
		return false;
	st->secret = secret;
	st->step = 1;
	return true;
}

/*
 * client-final-message = "c=" b64(gs2-header) "," "r=" nonce *("," ext) "," "p=" b64(proof)
 * The proof must be last; *no_proof_len is the length of the part before ",p=".
 */
static bool scram_server_read_final(const struct scram_server *st, const char *msg,
				    uint8_t proof[SCRAM_KEY_LEN], size_t *no_proof_len)
{
	const char *p = msg, *v, *proof_at;
	size_t vlen, cblen = strlen(st->cbind_b64);
	char attr = 0;

	if (!msg_take_attr(&p, 'c', NULL, &v, &vlen) || vlen != cblen ||
	    CRYPTO_memcmp(v, st->cbind_b64, cblen) != 0)
		return false;
	if (!msg_take_comma(&p) || !msg_take_attr(&p, 'r', NULL, &v, &vlen))
		return false;
	if (vlen != strlen(st->nonce) || memcmp(v, st->nonce, vlen) != 0)
		return false;
	do {
		proof_at = p;
		if (!msg_take_comma(&p) || !msg_take_attr(&p, 0, &attr, &v, &vlen))
			return false;
	} while (attr != 'p');
	if (*p != '\0' || !scram_decode_key(v, vlen, proof))
		return false;
	*no_proof_len = (size_t)(proof_at - msg);
	return true;
}

/* Recovers ClientKey from the proof and checks H(ClientKey) == StoredKey in constant time. */
static bool scram_server_check_proof(struct scram_server *st, const uint8_t proof[SCRAM_KEY_LEN],
				     const char *final, size_t final_len)
{
	uint8_t sig[SCRAM_KEY_LEN], client_key[SCRAM_KEY_LEN], stored[SCRAM_KEY_LEN];
	bool ok = false;

	if (scram_hmac_auth_message(st->secret->stored_key, st->client_first_bare, st->server_first,
				    final, final_len, sig)) {
		for (size_t i = 0; i < SCRAM_KEY_LEN; i++)
			client_key[i] = proof[i] ^ sig[i];
		ok = scram_sha256(client_key, SCRAM_KEY_LEN, stored) &&
		     CRYPTO_memcmp(stored, st->secret->stored_key, SCRAM_KEY_LEN) == 0;
		if (ok)
			memcpy(st->client_key, client_key, SCRAM_KEY_LEN);
	}
	OPENSSL_cleanse(client_key, sizeof(client_key));
	OPENSSL_cleanse(sig, sizeof(sig));
	return ok;
}

bool scram_server_final(struct scram_server *st, const char *client_final, size_t len, char *out,
			size_t cap, size_t *out_len)
{
	char msg[SCRAM_MAX_MSG], reply[SCRAM_MAX_MSG];
	uint8_t proof[SCRAM_KEY_LEN], server_sig[SCRAM_KEY_LEN];
	size_t no_proof_len;
	bool ok;

	if (st->step != 1)
		return false;
	st->step = -1;
	ok = msg_copy(client_final, len, msg, sizeof(msg)) &&
	     scram_server_read_final(st, msg, proof, &no_proof_len) &&
	     scram_server_check_proof(st, proof, msg, no_proof_len) &&
	     scram_hmac_auth_message(st->secret->server_key, st->client_first_bare,
				     st->server_first, msg, no_proof_len, server_sig);
	if (ok) {
		memcpy(reply, "v=", 2);
		ok = b64_encode(server_sig, SCRAM_KEY_LEN, reply + 2, sizeof(reply) - 2) &&
		     scram_output(reply, out, cap, out_len);
	}
	if (!ok) {
		OPENSSL_cleanse(st->client_key, sizeof(st->client_key));
		return false;
	}
	st->step = 2;
	return true;
}

/* ---- client side ---- */

bool scram_client_first(struct scram_client *st, char *out, size_t cap, size_t *out_len)
{
	char msg[SCRAM_MAX_MSG];

	memset(st, 0, sizeof(*st));
	st->step = -1;
	if (!scram_make_nonce(st->client_nonce))
		return false;
	/* Empty user name: PostgreSQL takes it from the startup packet and ignores this one. */
	snprintf(st->client_first_bare, sizeof(st->client_first_bare), "n=,r=%s", st->client_nonce);
	snprintf(msg, sizeof(msg), "n,,n=,r=%s", st->client_nonce);
	if (!scram_output(msg, out, cap, out_len))
		return false;
	st->step = 1;
	return true;
}

/* server-first-message = "r=" nonce "," "s=" b64(salt) "," "i=" iterations, nothing after. */
_Static_assert((SCRAM_KEY_LEN + 2) / 3 * 4 < 48, "proof_b64 too small");

static bool scram_client_read_first(const struct scram_client *st, const char *msg,
				    const char **nonce, size_t *nonce_len, uint8_t *salt,
				    size_t *salt_len, int *iterations)
{
	const char *p = msg, *v;
	size_t vlen, clen = strlen(st->client_nonce);

	if (!msg_take_attr(&p, 'r', NULL, nonce, nonce_len) || !msg_take_comma(&p))
		return false;
	/* The server must extend our nonce with its own part. */
	if (*nonce_len <= clen || memcmp(*nonce, st->client_nonce, clen) != 0 ||
	    !scram_nonce_valid(*nonce, *nonce_len))
		return false;
	if (!msg_take_attr(&p, 's', NULL, &v, &vlen) ||
	    !b64_decode(v, vlen, salt, SCRAM_MAX_SALT, salt_len) || !msg_take_comma(&p))
		return false;
	if (!msg_take_attr(&p, 'i', NULL, &v, &vlen) ||
	    !scram_parse_iterations(v, vlen, iterations))
		return false;
	return *p == '\0';
}

/*
 * ClientKey and ServerKey for this login: from the password (through the cache) or from a
 * ClientKey recovered from a client plus the verifier that the backend must share with us.
 */
static bool scram_client_keys(const char *password, const uint8_t *client_key_in,
			      const struct scram_secret *secret, const uint8_t *salt,
			      size_t salt_len, int iterations, uint8_t client_key[SCRAM_KEY_LEN],
			      uint8_t server_key[SCRAM_KEY_LEN])
{
	uint8_t salted[SCRAM_KEY_LEN];
	bool ok;

	if (password && !client_key_in) {
		ok = sp_cache_salted_password(password, salt, salt_len, iterations, salted) &&
		     scram_derive_keys(salted, client_key, server_key);
		OPENSSL_cleanse(salted, sizeof(salted));
		return ok;
	}
	if (password || !client_key_in || !secret)
		return false;
	/* The ClientKey only fits a verifier derived with the same salt and iteration count. */
	if (secret->iterations != iterations || secret->salt_len != salt_len ||
	    memcmp(secret->salt, salt, salt_len) != 0)
		return false;
	memcpy(client_key, client_key_in, SCRAM_KEY_LEN);
	memcpy(server_key, secret->server_key, SCRAM_KEY_LEN);
	return true;
}

bool scram_client_final(struct scram_client *st, const char *password,
			const uint8_t client_key[SCRAM_KEY_LEN], const struct scram_secret *secret,
			const char *server_first, size_t len, char *out, size_t cap,
			size_t *out_len)
{
	char msg[SCRAM_MAX_MSG], reply[SCRAM_MAX_MSG], proof_b64[48];
	uint8_t salt[SCRAM_MAX_SALT], ckey[SCRAM_KEY_LEN], skey[SCRAM_KEY_LEN];
	uint8_t stored[SCRAM_KEY_LEN], proof[SCRAM_KEY_LEN];
	const char *nonce;
	size_t nonce_len, salt_len;
	int iterations, n;
	bool ok = false;

	if (st->step != 1)
		return false;
	st->step = -1;
	if (!msg_copy(server_first, len, msg, sizeof(msg)) ||
	    !scram_client_read_first(st, msg, &nonce, &nonce_len, salt, &salt_len, &iterations))
		return false;
	n = snprintf(reply, sizeof(reply), "c=biws,r=%.*s", (int)nonce_len, nonce);
	if (n < 0 || (size_t)n >= sizeof(reply))
		return false;
	if (scram_client_keys(password, client_key, secret, salt, salt_len, iterations, ckey,
			      skey) &&
	    scram_sha256(ckey, SCRAM_KEY_LEN, stored) &&
	    scram_hmac_auth_message(stored, st->client_first_bare, msg, reply, (size_t)n, proof) &&
	    scram_hmac_auth_message(skey, st->client_first_bare, msg, reply, (size_t)n,
				    st->server_signature)) {
		for (size_t i = 0; i < SCRAM_KEY_LEN; i++)
			proof[i] ^= ckey[i];
		ok = b64_encode(proof, SCRAM_KEY_LEN, proof_b64, sizeof(proof_b64)) &&
		     (size_t)n + 3 + strlen(proof_b64) < sizeof(reply);
	}
	if (ok) {
		snprintf(reply + n, sizeof(reply) - (size_t)n, ",p=%s", proof_b64);
		ok = scram_output(reply, out, cap, out_len);
	}
	OPENSSL_cleanse(ckey, sizeof(ckey));
	OPENSSL_cleanse(skey, sizeof(skey));
	OPENSSL_cleanse(proof, sizeof(proof));
	if (ok)
		st->step = 2;
	return ok;
}

bool scram_client_verify(struct scram_client *st, const char *server_final, size_t len)
{
	char msg[SCRAM_MAX_MSG];
	uint8_t sig[SCRAM_KEY_LEN];
	const char *p = msg, *v;
	size_t vlen;

	if (st->step != 2)
		return false;
	st->step = -1;
	/* "e=<error>" lands here too and fails like any other message that is not "v=". */
	if (!msg_copy(server_final, len, msg, sizeof(msg)) ||
	    !msg_take_attr(&p, 'v', NULL, &v, &vlen) || *p != '\0' ||
	    !scram_decode_key(v, vlen, sig))
		return false;
	if (CRYPTO_memcmp(sig, st->server_signature, SCRAM_KEY_LEN) != 0)
		return false;
	st->step = 3;
	return true;
}
