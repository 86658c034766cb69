/*
 * md5 secrets and challenge responses against values PostgreSQL 15 stored (CREATE ROLE with
 * password_encryption = 'md5') and responses computed independently with Python's hashlib.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "auth/md5.h"

static void test_secret_from_password(void **state)
{
	static const struct {
		const char *password, *user, *secret;
	} cases[] = {
		/* md5 + md5("secretx"), the value PostgreSQL stores for role x, password "secret"
		 */
		{ "secret", "x", "md5ac2b10d9871b8fe9d086b7652279ff79" },
		/* taken from pg_authid for roles z and x2 (password "secret") */
		{ "secret", "z", "md5d246fccfddef6d33431ccc1f896cc184" },
		{ "secret", "x2", "md5b63cef0bcf5ed83861b12a5b77bd59b6" },
		/* md5("") */
		{ "", "", "md5d41d8cd98f00b204e9800998ecf8427e" },
	};
	char out[MD5_PASSWD_LEN + 1];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		md5_secret_from_password(cases[i].password, cases[i].user, out);
		assert_string_equal(out, cases[i].secret);
		assert_true(md5_secret_is_valid(out));
	}
}

static void test_secret_is_valid(void **state)
{
	static const struct {
		const char *text;
		bool valid;
	} cases[] = {
		{ "md5ac2b10d9871b8fe9d086b7652279ff79", true },
		{ "md5AC2B10D9871B8FE9D086B7652279FF79", false }, /* PostgreSQL wants lower case */
		{ "MD5ac2b10d9871b8fe9d086b7652279ff79", false },
		{ "md5ac2b10d9871b8fe9d086b7652279ff7", false },
		{ "md5ac2b10d9871b8fe9d086b7652279ff790", false },
		{ "md5ac2b10d9871b8fe9d086b7652279ff7g", false },
		{ "md5ac2b10d9871b8fe9d086b7652279ff7 ", false },
		{ "xyzac2b10d9871b8fe9d086b7652279ff79", false },
		{ "ac2b10d9871b8fe9d086b7652279ff79", false },
		{ "md5", false },
		{ "", false },
		{ "SCRAM-SHA-256$4096:AA==$AA==:AA==", false },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (md5_secret_is_valid(cases[i].text) != cases[i].valid)
			fail_msg("case #%zu: %s", i, cases[i].text);
	}
}

static void test_response(void **state)
{
	static const struct {
		const char *secret;
		uint8_t salt[4];
		const char *response;
	} cases[] = {
		/* md5(hex(md5("secretx")) || 01 02 03 04), Python hashlib */
		{ "md5ac2b10d9871b8fe9d086b7652279ff79",
		  { 1, 2, 3, 4 },
		  "md5d487e53300f279b1b8736a3fd0b38d12" },
		/* salt bytes with the high bit set and a zero byte */
		{ "md5d246fccfddef6d33431ccc1f896cc184",
		  { 0xff, 0x00, 0xa5, 0x5a },
		  "md5428dbe00bed47770bd6268c878eec18c" },
	};
	char out[MD5_PASSWD_LEN + 1];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		md5_response_from_secret(cases[i].secret, cases[i].salt, out);
		assert_string_equal(out, cases[i].response);
		assert_true(md5_check_response(cases[i].secret, cases[i].salt, cases[i].response,
					       MD5_PASSWD_LEN));
	}
}

static void test_check_rejects(void **state)
{
	static const char secret[] = "md5ac2b10d9871b8fe9d086b7652279ff79";
	static const char good[] = "md5d487e53300f279b1b8736a3fd0b38d12";
	static const uint8_t salt[4] = { 1, 2, 3, 4 }, other_salt[4] = { 1, 2, 3, 5 };
	static const struct {
		const char *response;
		size_t len;
	} bad[] = {
		{ "md5d487e53300f279b1b8736a3fd0b38d13", MD5_PASSWD_LEN },
		{ "MD5d487e53300f279b1b8736a3fd0b38d12", MD5_PASSWD_LEN },
		{ "md5D487E53300F279B1B8736A3FD0B38D12", MD5_PASSWD_LEN },
		{ good, MD5_PASSWD_LEN - 1 }, /* truncated */
		{ good, MD5_PASSWD_LEN + 1 }, /* with its NUL: len must exclude it */
		{ good, 0 },
		{ "", 0 },
		{ "secret", 6 },	    /* a clear-text password is not a response */
		{ secret, MD5_PASSWD_LEN }, /* nor is the stored secret itself */
	};
	char out[MD5_PASSWD_LEN + 1];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (md5_check_response(secret, salt, bad[i].response, bad[i].len))
			fail_msg("accepted bad response #%zu", i);
	}
	assert_false(md5_check_response(secret, other_salt, good, MD5_PASSWD_LEN));
	/* An invalid stored secret gives an empty response and never matches. */
	md5_response_from_secret("md5nothex", salt, out);
	assert_string_equal(out, "");
	assert_false(md5_check_response("md5nothex", salt, good, MD5_PASSWD_LEN));
	assert_false(md5_check_response("", salt, "", 0));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_secret_from_password),
		cmocka_unit_test(test_secret_is_valid),
		cmocka_unit_test(test_response),
		cmocka_unit_test(test_check_rejects),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
