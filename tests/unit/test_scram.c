/*
 * SCRAM-SHA-256: verifiers made by a real PostgreSQL 15, the RFC 7677 exchange for the client
 * side, full exchanges between our two sides (password and ClientKey modes), and tables of
 * malformed messages that each side must refuse.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <pthread.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "auth/scram.h"

/* CREATE ROLE x PASSWORD 'secret' with password_encryption = 'scram-sha-256' (PostgreSQL 15). */
#define PG_VERIFIER_X                                                                              \
	"SCRAM-SHA-256$4096:xrxMJeow+CBtSWraH1aT5A==$C7MEiUAcpR6S/i9bhOvpkV1S/"                    \
	"NJSGtSc+fiNn4w6qqM=:"                                                                     \
	"qyPsLOd9SteTKe/RBikLtEd23K5W3uSaPnvmuiuh90A="
/* ClientKey = HMAC(PBKDF2("secret", salt, 4096), "Client Key") for that verifier (Python hashlib).
 */
static const char *const pg_client_key_x_hex =
	"169a442ceba6985ae55170f73bc33428ac6d6c7d615740e5ba0d0e19c137870b";
/* CREATE ROLE y PASSWORD 'p"c,=;: é' (UTF-8, already SASLprep-normal). */
#define PG_VERIFIER_Y                                                                              \
	"SCRAM-SHA-256$4096:3Q8rFiqZujYpfkWa2soEbA==$Fxa7eMjvwTDzCJVZIjcu8UKb18sF9XCvICrwNjmuJ0c=" \
	":"                                                                                        \
	"p9hs5na8/3ZicVpGp5L8CCEg0kz2ifDM2LcDmHSDLus="
/* RFC 7677's user "user", password "pencil", as a verifier (keys computed with Python hashlib). */
#define RFC_VERIFIER                                                                               \
	"SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=" \
	":"                                                                                        \
	"wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
#define RFC_CLIENT_NONCE "rOprNGfwEbeRWgbNEkqO"
#define RFC_NONCE	 RFC_CLIENT_NONCE "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
#define RFC_SERVER_FIRST "r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
#define RFC_CLIENT_FINAL "c=biws,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
#define RFC_SERVER_FINAL "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="

static void hex_decode(const char *hex, uint8_t *out, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned v;

		assert_int_equal(sscanf(hex + 2 * i, "%2x", &v), 1);
		out[i] = (uint8_t)v;
	}
}

static void parse_ok(const char *text, struct scram_secret *s)
{
	assert_true(scram_secret_parse(text, s));
}

/* ---- verifiers ---- */

static void test_parse_pg_verifier(void **state)
{
	struct scram_secret s;
	uint8_t ck[SCRAM_KEY_LEN], stored[SCRAM_KEY_LEN];
	unsigned n;

	(void)state;
	parse_ok(PG_VERIFIER_X, &s);
	assert_int_equal(s.iterations, 4096);
	assert_int_equal(s.salt_len, 16);
	assert_int_equal(s.salt[0], 0xc6); /* 'xrxM' */
	hex_decode(pg_client_key_x_hex, ck, sizeof(ck));
	assert_int_equal(EVP_Digest(ck, sizeof(ck), stored, &n, EVP_sha256(), NULL), 1);
	assert_memory_equal(stored, s.stored_key, SCRAM_KEY_LEN);
	assert_true(scram_secret_check_password(&s, "secret"));
	assert_false(scram_secret_check_password(&s, "Secret"));
	assert_false(scram_secret_check_password(&s, ""));

	parse_ok(PG_VERIFIER_Y, &s);
	assert_true(scram_secret_check_password(&s, "p\"c,=;: \xc3\xa9"));
}

static void test_parse_rejects(void **state)
{
	static const char *const bad[] = {
		"",
		"SCRAM-SHA-256$",
		"scram-sha-256$4096:xrxMJeow+CBtSWraH1aT5A==$C7MEiUAcpR6S/i9bhOvpkV1S/"
		"NJSGtSc+fiNn4w6qqM=:"
		"qyPsLOd9SteTKe/RBikLtEd23K5W3uSaPnvmuiuh90A=",
		/* iteration count: zero, signed, not a number, too large, empty */
		"SCRAM-SHA-256$0:xrxMJeow+CBtSWraH1aT5A==$C7MEiUAcpR6S/i9bhOvpkV1S/"
		"NJSGtSc+fiNn4w6qqM=:"
		"qyPsLOd9SteTKe/RBikLtEd23K5W3uSaPnvmuiuh90A=",
		"SCRAM-SHA-256$-1:xrxMJeow+CBtSWraH1aT5A==$C7MEiUAcpR6S/i9bhOvpkV1S/"
		"NJSGtSc+fiNn4w6qqM=:"
		"qyPsLOd9SteTKe/RBikLtEd23K5W3uSaPnvmuiuh90A=",
		"SCRAM-SHA-256$+4096:xrxMJeow+CBtSWraH1aT5A==$C7MEiUAcpR6S/i9bhOvpkV1S/"
		"NJSGtSc+fiNn4w6qqM=:"
		"qyPsLOd9SteTKe/RBikLtEd23K5W3uSaPnvmuiuh90A=",
		"SCRAM-SHA-256$4096x:xrxMJeow+CBtSWraH1aT5A==$C7MEiUAcpR6S/i9bhOvpkV1S/"
		"NJSGtSc+fiNn4w6qqM=:"
		"qyPsLOd9SteTKe/RBikLtEd23K5W3uSaPnvmuiuh90A=",
		"SCRAM-SHA-256$99999999999:xrxMJeow+CBtSWraH1aT5A==$C7MEiUAcpR6S/i9bhOvpkV1S/"
		"NJSGtSc+fiNn4w6qqM=:"
		"qyPsLOd9SteTKe/RBikLtEd23K5W3uSaPnvmuiuh90A=",
		"SCRAM-SHA-256$20000000:xrxMJeow+CBtSWraH1aT5A==$C7MEiUAcpR6S/i9bhOvpkV1S/"
		"NJSGtSc+fiNn4w6qqM=:"
		"qyPsLOd9SteTKe/RBikLtEd23K5W3uSaPnvmuiuh90A=",
		"SCRAM-SHA-256$:xrxMJeow+CBtSWraH1aT5A==$C7MEiUAcpR6S/i9bhOvpkV1S/"
		"NJSGtSc+fiNn4w6qqM=:"
		"qyPsLOd9SteTKe/RBikLtEd23K5W3uSaPnvmuiuh90A=",
		/* salt: empty, not base64, bad padding, whitespace, non-zero pad bits, over 64
		   bytes */
		"SCRAM-SHA-256$4096:$C7MEiUAcpR6S/i9bhOvpkV1S/NJSGtSc+fiNn4w6qqM=:"
		"qyPsLOd9SteTKe/RBikLtEd23K5W3uSaPnvmuiuh90A=",
		"SCRAM-SHA-256$4096:xrxMJeow+CBtSWraH1aT5A=!$C7MEiUAcpR6S/i9bhOvpkV1S/"
		"NJSGtSc+fiNn4w6qqM=:"
		"qyPsLOd9SteTKe/RBikLtEd23K5W3uSaPnvmuiuh90A=",
		"SCRAM-SHA-256$4096:xrxMJeow+CBtSWraH1aT5A=$C7MEiUAcpR6S/i9bhOvpkV1S/"
		"NJSGtSc+fiNn4w6qqM=:"
		"qyPsLOd9SteTKe/RBikLtEd23K5W3uSaPnvmuiuh90A=",
		"SCRAM-SHA-256$4096:xrxMJeow+CBt "
		"SWraH1aT5A==$C7MEiUAcpR6S/i9bhOvpkV1S/NJSGtSc+fiNn4w6qqM=:"
		"qyPsLOd9SteTKe/RBikLtEd23K5W3uSaPnvmuiuh90A=",
		"SCRAM-SHA-256$4096:xrxMJeow+CBtSWraH1aT5B==$C7MEiUAcpR6S/i9bhOvpkV1S/"
		"NJSGtSc+fiNn4w6qqM=:"
		"qyPsLOd9SteTKe/RBikLtEd23K5W3uSaPnvmuiuh90A=",
		"SCRAM-SHA-256$4096:xr==xMJeow+CBtSWraH1aT5A$C7MEiUAcpR6S/i9bhOvpkV1S/"
		"NJSGtSc+fiNn4w6qqM=:"
		"qyPsLOd9SteTKe/RBikLtEd23K5W3uSaPnvmuiuh90A=",
		"SCRAM-SHA-256$4096:"
		"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
		"AAAAAA$"
		"C7MEiUAcpR6S/i9bhOvpkV1S/NJSGtSc+fiNn4w6qqM=:qyPsLOd9SteTKe/"
		"RBikLtEd23K5W3uSaPnvmuiuh90A=",
		/* keys: 31 and 33 bytes, missing, trailing garbage, extra separators */
		"SCRAM-SHA-256$4096:xrxMJeow+CBtSWraH1aT5A==$C7MEiUAcpR6S/i9bhOvpkV1S/"
		"NJSGtSc+fiNn4w6qg==:"
		"qyPsLOd9SteTKe/RBikLtEd23K5W3uSaPnvmuiuh90A=",
		"SCRAM-SHA-256$4096:xrxMJeow+CBtSWraH1aT5A==$C7MEiUAcpR6S/i9bhOvpkV1S/"
		"NJSGtSc+fiNn4w6qqM=:"
		"qyPsLOd9SteTKe/RBikLtEd23K5W3uSaPnvmuiuh90ABBB=",
		"SCRAM-SHA-256$4096:xrxMJeow+CBtSWraH1aT5A==$C7MEiUAcpR6S/i9bhOvpkV1S/"
		"NJSGtSc+fiNn4w6qqM=",
		"SCRAM-SHA-256$4096:xrxMJeow+CBtSWraH1aT5A==$C7MEiUAcpR6S/i9bhOvpkV1S/"
		"NJSGtSc+fiNn4w6qqM=:",
		"SCRAM-SHA-256$4096:xrxMJeow+CBtSWraH1aT5A==$C7MEiUAcpR6S/i9bhOvpkV1S/"
		"NJSGtSc+fiNn4w6qqM=:"
		"qyPsLOd9SteTKe/RBikLtEd23K5W3uSaPnvmuiuh90A=\n",
		"SCRAM-SHA-256$4096:xrxMJeow+CBtSWraH1aT5A==$C7MEiUAcpR6S/i9bhOvpkV1S/"
		"NJSGtSc+fiNn4w6qqM=:"
		"qyPsLOd9SteTKe/RBikLtEd23K5W3uSaPnvmuiuh90A=:x",
		"SCRAM-SHA-256$4096$xrxMJeow+CBtSWraH1aT5A==$C7MEiUAcpR6S/i9bhOvpkV1S/"
		"NJSGtSc+fiNn4w6qqM=:"
		"qyPsLOd9SteTKe/RBikLtEd23K5W3uSaPnvmuiuh90A=",
		"md5ac2b10d9871b8fe9d086b7652279ff79",
	};
	struct scram_secret s;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (scram_secret_parse(bad[i], &s))
			fail_msg("accepted bad verifier #%zu: %s", i, bad[i]);
	}
}

/* The largest salt and iteration count still load, and the server can still say them. */
static void test_parse_limits(void **state)
{
	static const char *const good[] = {
		"SCRAM-SHA-256$1:AA==$C7MEiUAcpR6S/i9bhOvpkV1S/NJSGtSc+fiNn4w6qqM=:"
		"qyPsLOd9SteTKe/RBikLtEd23K5W3uSaPnvmuiuh90A=",
		"SCRAM-SHA-256$10000000:"
		"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
		"AAAA==$"
		"C7MEiUAcpR6S/i9bhOvpkV1S/NJSGtSc+fiNn4w6qqM=:qyPsLOd9SteTKe/"
		"RBikLtEd23K5W3uSaPnvmuiuh90A=",
	};
	struct scram_secret s;
	struct scram_server srv;
	char out[SCRAM_MAX_MSG];
	size_t len;

	(void)state;
	parse_ok(good[0], &s);
	assert_int_equal(s.iterations, 1);
	assert_int_equal(s.salt_len, 1);
	parse_ok(good[1], &s);
	assert_int_equal(s.iterations, SCRAM_MAX_ITERATIONS);
	assert_int_equal(s.salt_len, SCRAM_MAX_SALT);
	assert_true(scram_server_first(
		&srv, &s, NULL,
		"n,,n=,r=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", 72, out,
		sizeof(out), &len));
}

static void test_secret_from_password(void **state)
{
	struct scram_secret a, b;

	(void)state;
	assert_true(scram_secret_from_password("hunter2", SCRAM_DEFAULT_ITERATIONS, &a));
	assert_true(scram_secret_from_password("hunter2", SCRAM_DEFAULT_ITERATIONS, &b));
	assert_int_equal(a.iterations, SCRAM_DEFAULT_ITERATIONS);
	assert_int_equal(a.salt_len, 16);
	assert_memory_not_equal(a.salt, b.salt, 16); /* random salt */
	assert_true(scram_secret_check_password(&a, "hunter2"));
	assert_false(scram_secret_check_password(&a, "hunter3"));
	assert_false(scram_secret_from_password("x", 0, &a));
	assert_false(scram_secret_from_password("x", SCRAM_MAX_ITERATIONS + 1, &a));
}

/* ---- exchanges between our two sides ---- */

struct exchange {
	struct scram_server srv;
	struct scram_client cli;
	char buf[SCRAM_MAX_MSG];
	size_t len;
};

/* Runs client-first and server-first; returns with the server-first message in ex->buf. */
static void exchange_start(struct exchange *ex, const struct scram_secret *secret)
{
	char first[SCRAM_MAX_MSG];
	size_t first_len;

	assert_true(scram_client_first(&ex->cli, first, sizeof(first), &first_len));
	assert_int_equal(first_len, strlen(first));
	assert_int_equal(strncmp(first, "n,,n=,r=", 8), 0);
	assert_int_equal(strlen(first), 8 + SCRAM_NONCE_B64);
	assert_true(scram_server_first(&ex->srv, secret, NULL, first, first_len, ex->buf,
				       sizeof(ex->buf), &ex->len));
}

/* Full exchange; true if both the server accepted the proof and the client the signature. */
static bool exchange_run(const struct scram_secret *server_secret, const char *password,
			 const uint8_t *client_key, const struct scram_secret *client_secret,
			 uint8_t recovered[SCRAM_KEY_LEN])
{
	struct exchange ex;
	char final[SCRAM_MAX_MSG], sfinal[SCRAM_MAX_MSG];
	size_t final_len, sfinal_len;

	exchange_start(&ex, server_secret);
	if (!scram_client_final(&ex.cli, password, client_key, client_secret, ex.buf, ex.len, final,
				sizeof(final), &final_len))
		return false;
	if (!scram_server_final(&ex.srv, final, final_len, sfinal, sizeof(sfinal), &sfinal_len))
		return false;
	assert_int_equal(ex.srv.step, 2);
	assert_int_equal(strncmp(sfinal, "v=", 2), 0);
	if (recovered)
		memcpy(recovered, ex.srv.client_key, SCRAM_KEY_LEN);
	return scram_client_verify(&ex.cli, sfinal, sfinal_len);
}

static void test_exchange_pg_verifier(void **state)
{
	struct scram_secret s;
	uint8_t ck[SCRAM_KEY_LEN], expect[SCRAM_KEY_LEN];

	(void)state;
	parse_ok(PG_VERIFIER_X, &s);
	assert_true(exchange_run(&s, "secret", NULL, NULL, ck));
	hex_decode(pg_client_key_x_hex, expect, sizeof(expect));
	assert_memory_equal(ck, expect, SCRAM_KEY_LEN);
	assert_false(exchange_run(&s, "secreT", NULL, NULL, NULL));
	assert_false(exchange_run(&s, "", NULL, NULL, NULL));

	parse_ok(PG_VERIFIER_Y, &s);
	assert_true(exchange_run(&s, "p\"c,=;: \xc3\xa9", NULL, NULL, NULL));
}

static void test_exchange_client_key(void **state)
{
	struct scram_secret s, other, more_iter;
	uint8_t ck[SCRAM_KEY_LEN], bad[SCRAM_KEY_LEN];

	(void)state;
	parse_ok(PG_VERIFIER_X, &s);
	assert_true(exchange_run(&s, "secret", NULL, NULL, ck));
	/* Pass-through: log into a "backend" holding the same verifier, with the ClientKey only. */
	assert_true(exchange_run(&s, NULL, ck, &s, NULL));
	/* A wrong ClientKey is refused by the server. */
	memcpy(bad, ck, sizeof(bad));
	bad[0] ^= 1;
	assert_false(exchange_run(&s, NULL, bad, &s, NULL));
	/* Different salt (same password): the client side must give up before sending anything. */
	assert_true(scram_secret_from_password("secret", 4096, &other));
	assert_false(exchange_run(&other, NULL, ck, &s, NULL));
	/* Same salt, different iteration count. */
	more_iter = s;
	more_iter.iterations = 4097;
	assert_false(exchange_run(&more_iter, NULL, ck, &s, NULL));
	/* Credentials: exactly one of password and client_key; client_key needs the secret. */
	assert_false(exchange_run(&s, "secret", ck, &s, NULL));
	assert_false(exchange_run(&s, NULL, NULL, &s, NULL));
	assert_false(exchange_run(&s, NULL, ck, NULL, NULL));
}

static void test_exchange_mock(void **state)
{
	struct scram_secret a, b, c;

	(void)state;
	assert_true(scram_secret_mock("nobody", &a));
	assert_true(scram_secret_mock("nobody", &b));
	assert_true(scram_secret_mock("somebody", &c));
	assert_int_equal(a.iterations, SCRAM_DEFAULT_ITERATIONS);
	assert_memory_equal(a.salt, b.salt, a.salt_len);
	assert_memory_not_equal(a.salt, c.salt, a.salt_len);
	assert_false(exchange_run(&a, "", NULL, NULL, NULL));
	assert_false(exchange_run(&a, "nobody", NULL, NULL, NULL));
}

/* ---- the client side against RFC 7677 ---- */

static void client_at_rfc_first(struct scram_client *cli)
{
	memset(cli, 0, sizeof(*cli));
	strcpy(cli->client_nonce, RFC_CLIENT_NONCE);
	strcpy(cli->client_first_bare, "n=user,r=" RFC_CLIENT_NONCE);
	cli->step = 1;
}

static void test_client_rfc7677(void **state)
{
	struct scram_client cli;
	struct scram_secret s;
	char out[SCRAM_MAX_MSG];
	size_t len;
	uint64_t hits0, misses0, hits1, misses1;

	(void)state;
	scram_cache_stats(&hits0, &misses0);
	for (int round = 0; round < 2; round++) {
		client_at_rfc_first(&cli);
		assert_true(scram_client_final(&cli, "pencil", NULL, NULL, RFC_SERVER_FIRST,
					       strlen(RFC_SERVER_FIRST), out, sizeof(out), &len));
		assert_string_equal(out, RFC_CLIENT_FINAL);
		assert_int_equal(len, strlen(RFC_CLIENT_FINAL));
		assert_true(scram_client_verify(&cli, RFC_SERVER_FINAL, strlen(RFC_SERVER_FINAL)));
		assert_int_equal(cli.step, 3);
	}
	/* The second round found SaltedPassword in the cache. */
	scram_cache_stats(&hits1, &misses1);
	assert_true(hits1 >= hits0 + 1);
	assert_true(misses1 <= misses0 + 1);

	/* ClientKey mode produces the very same message. */
	parse_ok(RFC_VERIFIER, &s);
	client_at_rfc_first(&cli);
	{
		uint8_t ck[SCRAM_KEY_LEN];
		struct exchange ex;

		/* Recover the ClientKey as the server would from RFC_CLIENT_FINAL. */
		memset(&ex, 0, sizeof(ex));
		ex.srv.secret = &s;
		strcpy(ex.srv.client_first_bare, "n=user,r=" RFC_CLIENT_NONCE);
		strcpy(ex.srv.server_first, RFC_SERVER_FIRST);
		strcpy(ex.srv.nonce, RFC_NONCE);
		ex.srv.cbind_flag = 'n';
		ex.srv.step = 1;
		assert_true(scram_server_final(&ex.srv, RFC_CLIENT_FINAL, strlen(RFC_CLIENT_FINAL),
					       out, sizeof(out), &len));
		assert_string_equal(out, RFC_SERVER_FINAL);
		memcpy(ck, ex.srv.client_key, sizeof(ck));
		assert_true(scram_client_final(&cli, NULL, ck, &s, RFC_SERVER_FIRST,
					       strlen(RFC_SERVER_FIRST), out, sizeof(out), &len));
		assert_string_equal(out, RFC_CLIENT_FINAL);
		assert_true(scram_client_verify(&cli, RFC_SERVER_FINAL, strlen(RFC_SERVER_FINAL)));
	}
}

static void test_client_rejects_server_first(void **state)
{
	static const char *const bad[] = {
		"",
		"r=" RFC_CLIENT_NONCE
		",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", /* no server nonce part */
		"r=rOprNGfwEbeRWgbNEkqX%hvYD,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", /* not our nonce */
		"r=" RFC_CLIENT_NONCE "a b,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", /* space in nonce */
		"r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ=,i=4096",	       /* bad padding */
		"r=" RFC_NONCE ",s=,i=4096",
		"r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=0",
		"r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=-1",
		"r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=",
		"r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096x",
		"r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=99999999999",
		"r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,x=ext",
		"r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,",
		"r=" RFC_NONCE ",i=4096,s=W22ZaJ0SNY7soEsUEjb6gQ==",
		"m=ext,r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
		"e=other-error",
		"r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==",
		"r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ",
		"r=" RFC_NONCE,
		"r=",
		"r",
		/* a 66-byte salt */
		"r=" RFC_NONCE ",s="
		"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
		"AAAAAAAAAAAAAAAAAAAAA,"
		"i=4096",
	};
	struct scram_client cli;
	char out[SCRAM_MAX_MSG];
	size_t len;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		client_at_rfc_first(&cli);
		if (scram_client_final(&cli, "pencil", NULL, NULL, bad[i], strlen(bad[i]), out,
				       sizeof(out), &len))
			fail_msg("accepted bad server-first #%zu: %s", i, bad[i]);
		assert_int_equal(cli.step, -1);
	}
	/* Embedded NUL, trailing NUL, huge length, output buffer too small, wrong step. */
	client_at_rfc_first(&cli);
	assert_false(scram_client_final(&cli, "pencil", NULL, NULL, RFC_SERVER_FIRST,
					strlen(RFC_SERVER_FIRST) + 1, out, sizeof(out), &len));
	client_at_rfc_first(&cli);
	assert_false(scram_client_final(&cli, "pencil", NULL, NULL, RFC_SERVER_FIRST, SIZE_MAX, out,
					sizeof(out), &len));
	client_at_rfc_first(&cli);
	assert_false(scram_client_final(&cli, "pencil", NULL, NULL, RFC_SERVER_FIRST,
					strlen(RFC_SERVER_FIRST), out, strlen(RFC_CLIENT_FINAL),
					&len));
	client_at_rfc_first(&cli);
	cli.step = 2;
	assert_false(scram_client_final(&cli, "pencil", NULL, NULL, RFC_SERVER_FIRST,
					strlen(RFC_SERVER_FIRST), out, sizeof(out), &len));
}

static void test_client_rejects_server_final(void **state)
{
	static const char *const bad[] = {
		"",
		"v=",
		"e=invalid-proof",
		"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G5=", /* wrong signature */
		"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4",  /* no padding */
		"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=,x=y",
		"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=\n",
		"V=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
		"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95",
	};
	struct scram_client cli;
	char out[SCRAM_MAX_MSG];
	size_t len;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		client_at_rfc_first(&cli);
		assert_true(scram_client_final(&cli, "pencil", NULL, NULL, RFC_SERVER_FIRST,
					       strlen(RFC_SERVER_FIRST), out, sizeof(out), &len));
		if (scram_client_verify(&cli, bad[i], strlen(bad[i])))
			fail_msg("accepted bad server-final #%zu: %s", i, bad[i]);
		/* A failed verify is final. */
		assert_false(scram_client_verify(&cli, RFC_SERVER_FINAL, strlen(RFC_SERVER_FINAL)));
	}
	/* Verify before client-final. */
	client_at_rfc_first(&cli);
	assert_false(scram_client_verify(&cli, RFC_SERVER_FINAL, strlen(RFC_SERVER_FINAL)));
}

/* ---- the server side against malformed client messages ---- */

static void test_server_first_accepts(void **state)
{
	static const char *const good[] = {
		"n,,n=,r=abc",
		"y,,n=,r=abc",
		"n,,n=*,r=abc", /* JDBC sends "*" */
		("n,,n=user,r=" RFC_CLIENT_NONCE),
		"n,,n=,r=abc,x=extension",
		/* asyncpg's 32-character nonce */
		"n,,n=,r=MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
		/* 64 characters, the limit */
		"n,,n=,r=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
	};
	struct scram_server srv;
	struct scram_secret s;
	char out[SCRAM_MAX_MSG];
	size_t len;

	(void)state;
	parse_ok(PG_VERIFIER_X, &s);
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		const char *r = strstr(good[i], ",r=") + 3;
		size_t rlen = strcspn(r, ",");

		if (!scram_server_first(&srv, &s, NULL, good[i], strlen(good[i]), out, sizeof(out),
					&len))
			fail_msg("refused good client-first #%zu: %s", i, good[i]);
		/* r=<client nonce><24 chars>,s=<salt>,i=4096 */
		assert_int_equal(strncmp(out, "r=", 2), 0);
		assert_memory_equal(out + 2, r, rlen);
		assert_int_equal(out[2 + rlen + SCRAM_NONCE_B64], ',');
		assert_string_equal(out + 2 + rlen + SCRAM_NONCE_B64,
				    ",s=xrxMJeow+CBtSWraH1aT5A==,i=4096");
		assert_int_equal(len, strlen(out));
		assert_int_equal(srv.step, 1);
	}
}

static void test_server_first_rejects(void **state)
{
	static const char *const bad[] = {
		"",
		"n",
		"n,",
		"n,,",
		"n,,n=",
		"n,,n=,",
		"n,,n=,r=",
		"n,,n=,r",
		"p=tls-server-end-point,,n=,r=abc", /* channel binding requested */
		"p,,n=,r=abc",
		"x,,n=,r=abc",
		"N,,n=,r=abc",
		"n,a=bob,n=,r=abc", /* authzid */
		"n,,r=abc",
		"n,,m=ext,n=,r=abc",
		"n,,n=,r=ab c",
		"n,,n=,r=ab\x7f",
		"n,,n=,r=abc,",
		"n,,n=,r=abc,1=x",
		"n,,n=,r=abc,x",
		"n,,n=,x=abc",
		" n,,n=,r=abc",
		/* 65-character nonce */
		"n,,n=,r=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdefX",
	};
	struct scram_server srv;
	struct scram_secret s;
	char out[SCRAM_MAX_MSG], big[SCRAM_MAX_MSG + 16];
	size_t len;

	(void)state;
	parse_ok(PG_VERIFIER_X, &s);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (scram_server_first(&srv, &s, NULL, bad[i], strlen(bad[i]), out, sizeof(out),
				       &len))
			fail_msg("accepted bad client-first #%zu: %s", i, bad[i]);
		assert_int_equal(srv.step, -1);
	}
	/* Length not matching the string: embedded NUL, trailing NUL. */
	assert_false(
		scram_server_first(&srv, &s, NULL, "n,,n=\0,r=abc", 12, out, sizeof(out), &len));
	assert_false(scram_server_first(&srv, &s, NULL, "n,,n=,r=abc", 12, out, sizeof(out), &len));
	/* Huge lengths never get read. */
	assert_false(scram_server_first(&srv, &s, NULL, "n,,n=,r=abc", SIZE_MAX, out, sizeof(out),
					&len));
	memset(big, 'a', sizeof(big));
	memcpy(big, "n,,n=", 5);
	assert_false(
		scram_server_first(&srv, &s, NULL, big, SCRAM_MAX_MSG, out, sizeof(out), &len));
	/* No secret, or an output buffer too small. */
	assert_false(
		scram_server_first(&srv, NULL, NULL, "n,,n=,r=abc", 11, out, sizeof(out), &len));
	assert_false(scram_server_first(&srv, &s, NULL, "n,,n=,r=abc", 11, out, 40, &len));
}

/* Starts a server exchange with the client nonce "abc" ('n' or 'y' flag); fills nonce. */
static void server_at_first(struct scram_server *srv, const struct scram_secret *s, char flag,
			    char nonce[SCRAM_MAX_MSG])
{
	char first[32], out[SCRAM_MAX_MSG];
	size_t len;

	snprintf(first, sizeof(first), "%c,,n=,r=abc", flag);
	assert_true(scram_server_first(srv, s, NULL, first, strlen(first), out, sizeof(out), &len));
	snprintf(nonce, SCRAM_MAX_MSG, "%.*s", (int)strcspn(out + 2, ","), out + 2);
}

static void test_server_final_rejects(void **state)
{
	/* %s is replaced by the full nonce; p= is a well-formed proof that is simply wrong. */
	static const struct {
		char flag;
		const char *fmt;
	} bad[] = {
		{ 'n', "" },
		{ 'n',
		  "c=biws,r=%s,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=" }, /* wrong proof */
		{ 'n', "c=eSws,r=%s,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=" },
		{ 'y', "c=biws,r=%s,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=" },
		{ 'n', "c=biws,r=%sX,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=" },
		{ 'n', "c=biws,r=abc,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=" },
		{ 'n', "c=biws,r=%s" },
		{ 'n', "c=biws,r=%s," },
		{ 'n', "c=biws,r=%s,p=" },
		{ 'n', "c=biws,r=%s,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ" },
		{ 'n', "c=biws,r=%s,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=,x=y" },
		{ 'n', "c=biws,r=%s,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7And==" },
		{ 'n', "c=biws,r=%s,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=AAAA" },
		{ 'n', "r=%s,c=biws,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=" },
		{ 'n',
		  "c=cD10bHMtdW5pcXVlLCw=,r=%s,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=" },
		{ 'n', "c=biws,r=%s,1=x,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=" },
	};
	struct scram_server srv;
	struct scram_secret s;
	char nonce[SCRAM_MAX_MSG], msg[SCRAM_MAX_MSG], out[SCRAM_MAX_MSG];
	size_t len;

	(void)state;
	parse_ok(PG_VERIFIER_X, &s);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		server_at_first(&srv, &s, bad[i].flag, nonce);
		snprintf(msg, sizeof(msg), bad[i].fmt, nonce);
		if (scram_server_final(&srv, msg, strlen(msg), out, sizeof(out), &len))
			fail_msg("accepted bad client-final #%zu: %s", i, msg);
		assert_int_equal(srv.step, -1);
		/* A failed exchange cannot be resumed. */
		assert_false(scram_server_final(&srv, msg, strlen(msg), out, sizeof(out), &len));
	}
	/* Final before first. */
	memset(&srv, 0, sizeof(srv));
	assert_false(scram_server_final(&srv, "c=biws", 6, out, sizeof(out), &len));
}

/* Every strict prefix of a valid client-final is refused, and the whole message still works. */
static void test_server_final_truncated(void **state)
{
	struct scram_secret s;
	struct exchange ex;
	char final[SCRAM_MAX_MSG], out[SCRAM_MAX_MSG];
	size_t final_len, len;

	(void)state;
	parse_ok(PG_VERIFIER_X, &s);
	exchange_start(&ex, &s);
	assert_true(scram_client_final(&ex.cli, "secret", NULL, NULL, ex.buf, ex.len, final,
				       sizeof(final), &final_len));
	for (size_t cut = 0; cut < final_len; cut++) {
		struct scram_server srv = ex.srv;

		if (scram_server_final(&srv, final, cut, out, sizeof(out), &len))
			fail_msg("accepted client-final cut at %zu", cut);
	}
	{
		struct scram_server srv = ex.srv;

		assert_true(scram_server_final(&srv, final, final_len, out, sizeof(out), &len));
		/* Server-final does not fit a small buffer: refused, no key handed out. */
		srv = ex.srv;
		assert_false(scram_server_final(&srv, final, final_len, out, 10, &len));
	}
}

/*
 * An independent client-final for a server in step 1, written with OpenSSL directly from the
 * RFC 5802 formulas: "c=<cbind>,r=<nonce><ext>,p=<proof>". Also returns the server-final the
 * server must answer with.
 */
static void reference_final(const struct scram_server *srv, const char *cbind, const char *ext,
			    const uint8_t client_key[SCRAM_KEY_LEN], char *out, size_t cap,
			    char *server_final, size_t sf_cap)
{
	char no_proof[SCRAM_MAX_MSG], am[3 * SCRAM_MAX_MSG];
	uint8_t stored[SCRAM_KEY_LEN], sig[SCRAM_KEY_LEN], proof[SCRAM_KEY_LEN];
	unsigned char b64[64];
	unsigned n;

	snprintf(no_proof, sizeof(no_proof), "c=%s,r=%s%s", cbind, srv->nonce, ext);
	snprintf(am, sizeof(am), "%s,%s,%s", srv->client_first_bare, srv->server_first, no_proof);
	assert_int_equal(EVP_Digest(client_key, SCRAM_KEY_LEN, stored, &n, EVP_sha256(), NULL), 1);
	assert_non_null(HMAC(EVP_sha256(), stored, SCRAM_KEY_LEN, (const uint8_t *)am, strlen(am),
			     sig, &n));
	for (int i = 0; i < SCRAM_KEY_LEN; i++)
		proof[i] = client_key[i] ^ sig[i];
	EVP_EncodeBlock(b64, proof, SCRAM_KEY_LEN);
	assert_true((size_t)snprintf(out, cap, "%s,p=%s", no_proof, b64) < cap);
	assert_non_null(HMAC(EVP_sha256(), srv->secret->server_key, SCRAM_KEY_LEN,
			     (const uint8_t *)am, strlen(am), sig, &n));
	EVP_EncodeBlock(b64, sig, SCRAM_KEY_LEN);
	snprintf(server_final, sf_cap, "v=%s", b64);
}

static void test_server_reference_client(void **state)
{
	static const struct {
		char flag;
		const char *cbind;
		const char *ext;
		bool ok;
	} cases[] = {
		{ 'n', "biws", "", true },
		{ 'y', "eSws", "", true }, /* client supports channel binding, thinks we do not */
		{ 'n', "biws", ",x=ext,z=", true },
		{ 'n', "eSws", "", false }, /* flag not echoed: downgrade detected */
		{ 'y', "biws", "", false },
	};
	struct scram_server srv;
	struct scram_secret s;
	uint8_t ck[SCRAM_KEY_LEN];
	char nonce[SCRAM_MAX_MSG], final[SCRAM_MAX_MSG], expect[SCRAM_MAX_MSG], out[SCRAM_MAX_MSG];
	size_t len;

	(void)state;
	parse_ok(PG_VERIFIER_X, &s);
	hex_decode(pg_client_key_x_hex, ck, sizeof(ck));
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		server_at_first(&srv, &s, cases[i].flag, nonce);
		reference_final(&srv, cases[i].cbind, cases[i].ext, ck, final, sizeof(final),
				expect, sizeof(expect));
		if (scram_server_final(&srv, final, strlen(final), out, sizeof(out), &len) !=
		    cases[i].ok)
			fail_msg("case #%zu: %s", i, final);
		if (cases[i].ok) {
			assert_string_equal(out, expect);
			assert_memory_equal(srv.client_key, ck, SCRAM_KEY_LEN);
		}
	}
}

/* ---- cache under two threads ---- */

static void *cache_thread(void *arg)
{
	bool *ok = arg;

	for (int i = 0; i < 20; i++) {
		struct scram_client cli;
		char out[SCRAM_MAX_MSG];
		size_t len;

		client_at_rfc_first(&cli);
		if (!scram_client_final(&cli, "pencil", NULL, NULL, RFC_SERVER_FIRST,
					strlen(RFC_SERVER_FIRST), out, sizeof(out), &len) ||
		    strcmp(out, RFC_CLIENT_FINAL) != 0)
			*ok = false;
	}
	return NULL;
}

static void test_cache_threads_and_eviction(void **state)
{
	pthread_t t[2];
	bool ok[2] = { true, true };
	uint64_t h0, m0, h1, m1;
	struct scram_client cli;
	char sfirst[SCRAM_MAX_MSG], out[SCRAM_MAX_MSG];
	size_t len;

	(void)state;
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&t[i], NULL, cache_thread, &ok[i]), 0);
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_join(t[i], NULL), 0);
	assert_true(ok[0] && ok[1]);

	/* 100 distinct iteration counts push the RFC entry out; the next RFC login misses. */
	for (int i = 0; i < 100; i++) {
		client_at_rfc_first(&cli);
		snprintf(sfirst, sizeof(sfirst), "r=%s,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=%d", RFC_NONCE,
			 i + 1);
		assert_true(scram_client_final(&cli, "pencil", NULL, NULL, sfirst, strlen(sfirst),
					       out, sizeof(out), &len));
	}
	scram_cache_stats(&h0, &m0);
	client_at_rfc_first(&cli);
	assert_true(scram_client_final(&cli, "pencil", NULL, NULL, RFC_SERVER_FIRST,
				       strlen(RFC_SERVER_FIRST), out, sizeof(out), &len));
	assert_string_equal(out, RFC_CLIENT_FINAL);
	scram_cache_stats(&h1, &m1);
	assert_int_equal(m1, m0 + 1);
	assert_int_equal(h1, h0);
	/* A different password with the same salt is a different entry, and gives another proof. */
	client_at_rfc_first(&cli);
	assert_true(scram_client_final(&cli, "pencil2", NULL, NULL, RFC_SERVER_FIRST,
				       strlen(RFC_SERVER_FIRST), out, sizeof(out), &len));
	assert_string_not_equal(out, RFC_CLIENT_FINAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_pg_verifier),
		cmocka_unit_test(test_parse_rejects),
		cmocka_unit_test(test_parse_limits),
		cmocka_unit_test(test_secret_from_password),
		cmocka_unit_test(test_exchange_pg_verifier),
		cmocka_unit_test(test_exchange_client_key),
		cmocka_unit_test(test_exchange_mock),
		cmocka_unit_test(test_client_rfc7677),
		cmocka_unit_test(test_client_rejects_server_first),
		cmocka_unit_test(test_client_rejects_server_final),
		cmocka_unit_test(test_server_first_accepts),
		cmocka_unit_test(test_server_first_rejects),
		cmocka_unit_test(test_server_final_rejects),
		cmocka_unit_test(test_server_final_truncated),
		cmocka_unit_test(test_server_reference_client),
		cmocka_unit_test(test_cache_threads_and_eviction),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
