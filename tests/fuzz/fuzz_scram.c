/*
 * libFuzzer harness for SCRAM-SHA-256 (src/auth/scram.c), both ends of pgrelay.
 *
 * Input: one flags byte, then up to five NUL-separated messages
 *   client-first, client-final    what a client sends to pgrelay (server side, fixed verifier
 *                                 of RFC 7677's user, password "pencil")
 *   server-first, server-final    what a backend sends to pgrelay (client side)
 *   verifier                      fed to scram_secret_parse
 * The nonces are random, so placeholders stand for what only this run knows:
 *   client-final:  "%R" -> the combined nonce of server-first, "%P" -> the correct proof for the
 *                  message as it stands before "%P" (without a trailing ",p=")
 *   server-first:  "%C" -> pgrelay's client nonce
 *   server-final:  "%V" -> the correct server signature (base64)
 * With them the seeds are real exchanges, and the fuzzer reaches the success paths too.
 * Flags: bit 0 client side in ClientKey mode (else password mode when the iteration count is
 * small enough to run PBKDF2 on every input), bit 1 call each final step twice (the second
 * call must fail).
 *
 * Checks: a proof is accepted only when it recovers the real ClientKey; the server-final is
 * "v=" + base64 of 32 bytes; a signature is accepted only when it is the expected one.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "auth/scram.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond))                                                                       \
			__builtin_trap();                                                          \
	} while (0)

/* RFC 7677's user "user", password "pencil" (the same verifier as tests/unit/test_scram.c). */
static const char verifier_text[] =
	"SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY="
	":wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";
static const char password[] = "pencil";
#define PW_MODE_MAX_ITERATIONS 256 /* above this the client side uses ClientKey mode */

static struct scram_secret verifier;
static uint8_t client_key[SCRAM_KEY_LEN]; /* the real ClientKey behind verifier */
static bool ready;

static void init_once(void)
{
	uint8_t salted[SCRAM_KEY_LEN];
	unsigned int n = 0;
	if (ready)
		return;
	CHECK(scram_secret_parse(verifier_text, &verifier));
	CHECK(PKCS5_PBKDF2_HMAC(password, (int)strlen(password), verifier.salt,
				(int)verifier.salt_len, verifier.iterations, EVP_sha256(),
				SCRAM_KEY_LEN, salted) == 1);
	CHECK(HMAC(EVP_sha256(), salted, SCRAM_KEY_LEN, (const unsigned char *)"Client Key", 10,
		   client_key, &n) &&
	      n == SCRAM_KEY_LEN);
	ready = true;
}

static void b64(const uint8_t *src, size_t len, char *dst, size_t cap)
{
	CHECK((len + 2) / 3 * 4 < cap);
	int n = EVP_EncodeBlock((unsigned char *)dst, src, (int)len);
	CHECK(n >= 0);
}

/* An owned, growing string. */
struct text {
	char *p;
	size_t len, cap;
};

static void text_put(struct text *t, const char *s, size_t n)
{
	if (t->len + n + 1 > t->cap) {
		t->cap = (t->len + n + 1) * 2;
		t->p = realloc(t->p, t->cap);
		CHECK(t->p != NULL);
	}
	memcpy(t->p + t->len, s, n);
	t->len += n;
	t->p[t->len] = '\0';
}

/* Replaces each "%<key>" of msg by value; "%P" is left for the caller when key is not 'P'. */
static void substitute(struct text *out, const char *msg, size_t len, char key, const char *value)
{
	size_t i = 0;
	text_put(out, "", 0);
	while (i < len) {
		if (msg[i] == '%' && i + 1 < len && msg[i + 1] == key) {
			text_put(out, value, strlen(value));
			i += 2;
		} else {
			text_put(out, msg + i, 1);
			i++;
		}
	}
}

/* The proof for AuthMessage = first_bare "," server_first "," final_no_proof. */
static void make_proof(const struct scram_server *st, const char *final_no_proof, size_t fl,
		       char *out, size_t cap)
{
	uint8_t stored[SCRAM_KEY_LEN], sig[SCRAM_KEY_LEN], proof[SCRAM_KEY_LEN];
	unsigned int n = 0;
	struct text auth = { 0 };
	text_put(&auth, st->client_first_bare, strlen(st->client_first_bare));
	text_put(&auth, ",", 1);
	text_put(&auth, st->server_first, strlen(st->server_first));
	text_put(&auth, ",", 1);
	text_put(&auth, final_no_proof, fl);
	CHECK(EVP_Digest(client_key, SCRAM_KEY_LEN, stored, &n, EVP_sha256(), NULL) == 1);
	CHECK(HMAC(EVP_sha256(), stored, SCRAM_KEY_LEN, (const unsigned char *)auth.p, auth.len,
		   sig, &n) != NULL);
	for (size_t i = 0; i < SCRAM_KEY_LEN; i++)
		proof[i] = client_key[i] ^ sig[i];
	b64(proof, SCRAM_KEY_LEN, out, cap);
	free(auth.p);
}

/* pgrelay as the server: a client's client-first and client-final. */
static void server_side(const char *first, size_t flen, const char *final, size_t finlen,
			bool twice)
{
	struct scram_server st;
	char out[SCRAM_MAX_MSG];
	size_t out_len = 0;
	if (!scram_server_first(&st, &verifier, NULL, first, flen, out, sizeof(out), &out_len)) {
		CHECK(st.step == -1);
		return;
	}
	CHECK(st.step == 1 && out_len == strlen(out) && strcmp(out, st.server_first) == 0);
	CHECK(strncmp(out, "r=", 2) == 0);

	struct text a = { 0 }, b = { 0 };
	substitute(&a, final, finlen, 'R', st.nonce);
	/* "%P": the proof of what precedes it. */
	char *at = NULL;
	for (size_t i = 0; i + 1 < a.len; i++)
		if (a.p[i] == '%' && a.p[i + 1] == 'P') {
			at = a.p + i;
			break;
		}
	if (at) {
		size_t pre = (size_t)(at - a.p), fl = pre;
		if (fl >= 3 && memcmp(at - 3, ",p=", 3) == 0)
			fl -= 3;
		char proof[64];
		make_proof(&st, a.p, fl, proof, sizeof(proof));
		text_put(&b, a.p, pre);
		text_put(&b, proof, strlen(proof));
		text_put(&b, at + 2, a.len - pre - 2);
	} else {
		text_put(&b, a.p ? a.p : "", a.len);
	}
	/* The message as the network gives it: exactly its bytes, embedded NULs impossible here. */
	char *msg = malloc(b.len ? b.len : 1);
	CHECK(msg != NULL);
	memcpy(msg, b.p, b.len);
	bool ok = scram_server_final(&st, msg, b.len, out, sizeof(out), &out_len);
	if (ok) {
		CHECK(st.step == 2);
		CHECK(memcmp(st.client_key, client_key, SCRAM_KEY_LEN) == 0);
		CHECK(out_len == 2 + 44 && strncmp(out, "v=", 2) == 0 && out[out_len] == '\0');
	} else {
		CHECK(st.step == -1);
	}
	if (twice)
		CHECK(!scram_server_final(&st, msg, b.len, out, sizeof(out), &out_len));
	free(msg);
	free(a.p);
	free(b.p);
}

/* The iteration count a server-first names, or -1 (only to keep PBKDF2 cheap). */
static long iterations_of(const char *msg)
{
	const char *i = strstr(msg, ",i=");
	if (!i)
		return -1;
	return strtol(i + 3, NULL, 10);
}

/* pgrelay as a backend's client: the backend's server-first and server-final. */
static void client_side(const char *first, size_t flen, const char *final, size_t finlen,
			bool key_mode, bool twice)
{
	struct scram_client st;
	char out[SCRAM_MAX_MSG];
	size_t out_len = 0;
	CHECK(scram_client_first(&st, out, sizeof(out), &out_len));
	CHECK(st.step == 1 && out_len == strlen(out) && strncmp(out, "n,,n=,r=", 8) == 0);

	struct text a = { 0 }, b = { 0 };
	substitute(&a, first, flen, 'C', st.client_nonce);
	long iters = iterations_of(a.p ? a.p : "");
	if (iters < 0 || iters > PW_MODE_MAX_ITERATIONS)
		key_mode = true;
	char *msg = malloc(a.len ? a.len : 1);
	CHECK(msg != NULL);
	memcpy(msg, a.p, a.len);
	bool ok = key_mode ? scram_client_final(&st, NULL, client_key, &verifier, msg, a.len, out,
						sizeof(out), &out_len)
			   : scram_client_final(&st, password, NULL, NULL, msg, a.len, out,
						sizeof(out), &out_len);
	if (ok) {
		CHECK(st.step == 2 && out_len == strlen(out) && strncmp(out, "c=biws,r=", 9) == 0);
		CHECK(strstr(out, ",p=") != NULL);
	} else {
		CHECK(st.step == -1);
	}
	if (twice)
		CHECK(!scram_client_final(&st, password, NULL, NULL, msg, a.len, out, sizeof(out),
					  &out_len));
	free(msg);
	if (!ok) {
		free(a.p);
		return;
	}
	st.step = 2; /* undo the second call's failure: verify the final as if it had not run */

	char sig[64];
	b64(st.server_signature, SCRAM_KEY_LEN, sig, sizeof(sig));
	substitute(&b, final, finlen, 'V', sig);
	msg = malloc(b.len ? b.len : 1);
	CHECK(msg != NULL);
	memcpy(msg, b.p, b.len);
	bool verified = scram_client_verify(&st, msg, b.len);
	if (verified) {
		CHECK(st.step == 3);
		CHECK(b.len == 2 + 44 && memcmp(msg, "v=", 2) == 0 &&
		      memcmp(msg + 2, sig, 44) == 0);
	} else {
		CHECK(st.step == -1);
	}
	if (twice)
		CHECK(!scram_client_verify(&st, msg, b.len));
	free(msg);
	free(a.p);
	free(b.p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	init_once();
	if (size < 1 || size > 4 * SCRAM_MAX_MSG)
		return 0;
	uint8_t flags = data[0];
	const char *part[5] = { "", "", "", "", "" };
	size_t plen[5] = { 0 };
	size_t at = 1;
	for (int i = 0; i < 5 && at <= size; i++) {
		const char *p = (const char *)data + at;
		const char *z = memchr(p, '\0', size - at);
		part[i] = p;
		plen[i] = z ? (size_t)(z - p) : size - at;
		at += plen[i] + 1;
	}
	server_side(part[0], plen[0], part[1], plen[1], flags & 2);
	client_side(part[2], plen[2], part[3], plen[3], flags & 1, flags & 2);
	if (plen[4]) {
		char *v = malloc(plen[4] + 1);
		CHECK(v != NULL);
		memcpy(v, part[4], plen[4]);
		v[plen[4]] = '\0';
		struct scram_secret s;
		if (scram_secret_parse(v, &s))
			CHECK(s.iterations >= 1 && s.salt_len >= 1 && s.salt_len <= SCRAM_MAX_SALT);
		free(v);
	}
	return 0;
}
