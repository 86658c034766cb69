/*
 * libFuzzer harness for the password-message family a client sends during login: md5 responses
 * (src/auth/md5.c), cleartext passwords, and the SASLInitialResponse framing in front of SCRAM.
 *
 * The parsing around the crypto mirrors client_auth_password, client_check_password and
 * client_auth_sasl_initial (src/pool/client_auth.c, static and tied to a connection): the body is
 * read with the real reader (src/protocol/reader.c), then the real md5/scram functions run.
 *
 * Input: a mode byte, four salt bytes, then the message body exactly as sent ('p' message
 * without its header). Modes (byte % 4): 0 md5 response against an md5 secret, 1 md5 response
 * against a plain password, 2 cleartext against a plain password, 3 cleartext against an md5
 * secret, and, when bit 2 is set, the body is read as SASLInitialResponse instead.
 *
 * Checks: the right response (computed here independently with OpenSSL) is accepted, a response
 * of the wrong length never is, md5_response_from_secret writes 35 characters or nothing.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "auth/md5.h"
#include "auth/scram.h"
#include "protocol/reader.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond))                                                                       \
			__builtin_trap();                                                          \
	} while (0)

static const char user[] = "alice";
static const char plain[] = "secret";
/* A verifier so that the SASL mode reaches scram_server_first (RFC 7677's user). */
static const char verifier_text[] =
	"SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY="
	":wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";

/* "md5" + hex(md5(a || b)), independently of md5.c. */
static void md5_hex(const void *a, size_t alen, const void *b, size_t blen, char out[36])
{
	static const char hex[] = "0123456789abcdef";
	uint8_t d[16];
	unsigned int n = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	CHECK(ctx != NULL);
	CHECK(EVP_DigestInit_ex(ctx, EVP_md5(), NULL) == 1 && EVP_DigestUpdate(ctx, a, alen) == 1 &&
	      EVP_DigestUpdate(ctx, b, blen) == 1 && EVP_DigestFinal_ex(ctx, d, &n) == 1 &&
	      n == 16);
	EVP_MD_CTX_free(ctx);
	memcpy(out, "md5", 3);
	for (int i = 0; i < 16; i++) {
		out[3 + 2 * i] = hex[d[i] >> 4];
		out[4 + 2 * i] = hex[d[i] & 15];
	}
	out[35] = '\0';
}

/* client_check_password for the md5 and cleartext methods (no SCRAM verifier: PBKDF2). */
static bool check_password(int mode, const uint8_t salt[4], const char *pw, size_t len)
{
	char md5[MD5_PASSWD_LEN + 1];
	if (mode == 0 || mode == 1) {
		/* method md5: CRED_MD5 (mode 0) or CRED_PLAIN (mode 1) */
		md5_secret_from_password(plain, user, md5);
		return md5_check_response(md5, salt, pw, len);
	}
	if (mode == 2) {
		size_t n = strlen(plain);
		return n == len && CRYPTO_memcmp(plain, pw, n) == 0;
	}
	md5_secret_from_password(plain, user, md5);
	char got[MD5_PASSWD_LEN + 1];
	md5_secret_from_password(pw, user, got);
	return CRYPTO_memcmp(got, md5, MD5_PASSWD_LEN) == 0;
}

/* client_auth_password */
static void password_message(int mode, const uint8_t salt[4], const uint8_t *body, size_t len)
{
	struct reader r;
	const char *pw;
	size_t pwlen;
	reader_init(&r, body, (uint32_t)len);
	if (!reader_cstr(&r, &pw, &pwlen) || !reader_end(&r))
		return; /* "invalid password packet" */
	CHECK(pwlen == strlen(pw) && pwlen + 1 == len);
	bool ok = check_password(mode, salt, pw, pwlen);

	/* The expected answer, computed here. */
	char secret[36], expect[36];
	md5_hex(plain, strlen(plain), user, strlen(user), secret);
	bool want;
	if (mode <= 1) {
		md5_hex(secret + 3, 32, salt, 4, expect);
		want = pwlen == 35 && memcmp(pw, expect, 35) == 0;
	} else if (mode == 2) {
		want = strcmp(pw, plain) == 0;
	} else {
		md5_hex(pw, pwlen, user, strlen(user), expect);
		want = strcmp(expect, secret) == 0;
	}
	CHECK(ok == want);
}

/* client_auth_sasl_initial */
static void sasl_initial(const uint8_t *body, size_t len)
{
	static struct scram_secret secret;
	static bool have;
	if (!have) {
		CHECK(scram_secret_parse(verifier_text, &secret));
		have = true;
	}
	struct reader r;
	const char *mech;
	int32_t dlen;
	const uint8_t *d;
	reader_init(&r, body, (uint32_t)len);
	if (!reader_cstr(&r, &mech, NULL) || !reader_i32(&r, &dlen))
		return;
	if (strcmp(mech, "SCRAM-SHA-256") != 0)
		return;
	if (dlen < 0 || !reader_bytes(&r, (size_t)dlen, &d) || !reader_end(&r))
		return;
	struct scram_server st;
	char out[SCRAM_MAX_MSG];
	size_t outlen;
	if (scram_server_first(&st, &secret, NULL, (const char *)d, (size_t)dlen, out, sizeof(out),
			       &outlen))
		CHECK(outlen == strlen(out) && st.step == 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 5 || size > 4096)
		return 0;
	int mode = data[0] & 3;
	bool sasl = data[0] & 4;
	const uint8_t *salt = data + 1;
	/* The body in a buffer of its own size, as the frame reader hands it over. */
	size_t len = size - 5;
	uint8_t *body = malloc(len ? len : 1);
	CHECK(body != NULL);
	memcpy(body, data + 5, len);
	if (sasl)
		sasl_initial(body, len);
	else
		password_message(mode, salt, body, len);

	/* The body also as a stored secret: md5_secret_is_valid and md5_response_from_secret. */
	char *text = malloc(len + 1);
	CHECK(text != NULL);
	memcpy(text, body, len);
	text[len] = '\0';
	char resp[MD5_PASSWD_LEN + 1];
	md5_response_from_secret(text, salt, resp);
	CHECK(resp[0] == '\0' || (strlen(resp) == MD5_PASSWD_LEN && md5_secret_is_valid(resp)));
	CHECK((resp[0] != '\0') == md5_secret_is_valid(text));
	free(text);
	free(body);
	return 0;
}
