/*
 * Users file: the fixture data/users_ok.txt holds every secret kind (PostgreSQL-made md5 and SCRAM
 * values included), data/users_bad.txt one mistake per line with the exact messages expected.
 * Files that cannot be kept as fixtures (over-long lines, NUL bytes) are written to a temp file.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "auth/users.h"

static const struct user_entry *find_ok(const struct userlist *l, const char *name)
{
	const struct user_entry *u = users_find(l, name);

	if (!u)
		fail_msg("user %s not found", name);
	return u;
}

static void test_load_ok(void **state)
{
	char err[1024] = "untouched";
	struct userlist *l = users_load("data/users_ok.txt", err, sizeof(err));
	const struct user_entry *u;
	char md5[MD5_PASSWD_LEN + 1];

	(void)state;
	if (!l)
		fail_msg("%s", err);
	assert_string_equal(err, "");
	assert_int_equal(l->count, 8);
	for (size_t i = 1; i < l->count; i++)
		assert_true(strcmp(l->users[i - 1].name, l->users[i].name) < 0);

	u = find_ok(l, "alice");
	assert_int_equal(u->kind, SECRET_PLAIN);
	assert_string_equal(u->plain, "wonderland");
	md5_secret_from_password("wonderland", "alice", md5);
	assert_string_equal(u->md5, md5);
	assert_true(u->has_scram);
	assert_true(scram_secret_check_password(&u->scram, "wonderland"));

	u = find_ok(l, "carol");
	assert_string_equal(u->plain, "pass:with:colons and spaces");
	u = find_ok(l, "md5lookalike");
	assert_int_equal(u->kind, SECRET_PLAIN);
	u = find_ok(l, "dave");
	assert_string_equal(u->plain, "crlf"); /* CR of a CRLF line is not part of the secret */
	u = find_ok(l, "bob");
	assert_string_equal(u->plain, "builder"); /* last line without newline */
	u = find_ok(l, "\xc3\xa9mile");
	assert_string_equal(u->plain, "na\xc3\xafve");

	u = find_ok(l, "z");
	assert_int_equal(u->kind, SECRET_MD5);
	assert_null(u->plain);
	assert_false(u->has_scram);
	assert_string_equal(u->md5, "md5d246fccfddef6d33431ccc1f896cc184");

	u = find_ok(l, "x");
	assert_int_equal(u->kind, SECRET_SCRAM);
	assert_null(u->plain);
	assert_true(u->has_scram);
	assert_int_equal(u->scram.iterations, 4096);
	assert_true(scram_secret_check_password(&u->scram, "secret"));

	assert_null(users_find(l, "nobody"));
	assert_null(users_find(l, ""));
	assert_null(users_find(l, "alic"));
	users_free(l);
}

static void test_load_errors(void **state)
{
	static const char expected[] =
		"data/users_bad.txt:2: expected \"user:secret\"\n"
		"data/users_bad.txt:3: empty user name\n"
		"data/users_bad.txt:4: user name starts or ends with white space\n"
		"data/users_bad.txt:5: empty secret for user \"emptysecret\"\n"
		"data/users_bad.txt:6: malformed SCRAM-SHA-256 verifier for user \"w\"\n"
		"data/users_bad.txt:7: malformed md5 secret for user \"v\" (need \"md5\" and 32 "
		"lower-case hex digits)\n"
		"data/users_bad.txt:11: user name longer than 63 bytes\n"
		"data/users_bad.txt:12: control character in user name\n"
		"data/users_bad.txt:10: duplicate user \"dup\" (first defined at line 8)\n"
		"data/users_bad.txt:13: duplicate user \"dup\" (first defined at line 8)";
	char err[2048];

	(void)state;
	assert_null(users_load("data/users_bad.txt", err, sizeof(err)));
	assert_string_equal(err, expected);
	/* A small buffer is cut but stays a C string. */
	assert_null(users_load("data/users_bad.txt", err, 40));
	assert_int_equal(strlen(err), 39);
	assert_null(users_load("data/users_bad.txt", NULL, 0));
}

static void test_load_missing_and_empty(void **state)
{
	char err[256];
	struct userlist *l;

	(void)state;
	assert_null(users_load("data/no-such-file.txt", err, sizeof(err)));
	assert_string_equal(err,
			    "data/no-such-file.txt: could not open: No such file or directory");
	l = users_load("data/users_empty.txt", err, sizeof(err));
	assert_non_null(l);
	assert_int_equal(l->count, 0);
	assert_null(users_find(l, "x"));
	users_free(l);
	users_free(NULL);
}

/* Writes len bytes to a fresh temp file; returns its path (static buffer). */
static const char *write_temp(const void *data, size_t len)
{
	static char path[64];
	int fd;

	strcpy(path, "/tmp/pgrelay-test-users-XXXXXX");
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	close(fd);
	return path;
}

static void test_load_long_and_nul_lines(void **state)
{
	char *buf = malloc(2 * 4096 + 64);
	char err[512], expect[512];
	const char *path;
	size_t n = 0;
	struct userlist *l;

	(void)state;
	assert_non_null(buf);
	/* Line 1: exactly 4096 bytes (accepted); line 2: 4097 (refused); line 3: holds a NUL. */
	n += (size_t)sprintf(buf + n, "a:");
	memset(buf + n, 'p', 4094);
	n += 4094;
	buf[n++] = '\n';
	n += (size_t)sprintf(buf + n, "b:");
	memset(buf + n, 'p', 4095);
	n += 4095;
	buf[n++] = '\n';
	memcpy(buf + n, "c:x\0y\n", 6);
	n += 6;
	path = write_temp(buf, n);
	assert_null(users_load(path, err, sizeof(err)));
	snprintf(expect, sizeof(expect),
		 "%s:2: line longer than 4096 bytes\n%s:3: NUL byte in line", path, path);
	assert_string_equal(err, expect);
	unlink(path);

	path = write_temp(buf, 4097); /* only line 1 */
	l = users_load(path, err, sizeof(err));
	assert_non_null(l);
	assert_int_equal(strlen(find_ok(l, "a")->plain), 4094);
	users_free(l);
	unlink(path);
	free(buf);
}

static void test_pick_method(void **state)
{
	static const struct user_entry plain = { .name = "p",
						 .kind = SECRET_PLAIN,
						 .has_scram = true };
	static const struct user_entry md5 = { .name = "m", .kind = SECRET_MD5 };
	static const struct user_entry scram = { .name = "s",
						 .kind = SECRET_SCRAM,
						 .has_scram = true };
	static const struct {
		const struct user_entry *u;
		enum hba_method hba, expect;
	} cases[] = {
		{ &plain, HBA_MD5, HBA_MD5 },	      { &md5, HBA_MD5, HBA_MD5 },
		{ &scram, HBA_MD5, HBA_SCRAM },	      { NULL, HBA_MD5, HBA_SCRAM },
		{ &plain, HBA_SCRAM, HBA_SCRAM },     { &md5, HBA_SCRAM, HBA_REJECT },
		{ &scram, HBA_SCRAM, HBA_SCRAM },     { NULL, HBA_SCRAM, HBA_SCRAM },
		{ &md5, HBA_PASSWORD, HBA_PASSWORD }, { &scram, HBA_TRUST, HBA_TRUST },
		{ &plain, HBA_REJECT, HBA_REJECT },   { &plain, HBA_NOMATCH, HBA_NOMATCH },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (users_pick_method(cases[i].u, cases[i].hba) != cases[i].expect)
			fail_msg("case #%zu", i);
	}
	assert_int_equal(users_default_method(&plain), HBA_SCRAM);
	assert_int_equal(users_default_method(&md5), HBA_MD5);
	assert_int_equal(users_default_method(&scram), HBA_SCRAM);
	assert_int_equal(users_default_method(NULL), HBA_SCRAM);
}

static void test_check_password(void **state)
{
	static const struct {
		const char *user, *password;
		bool ok;
	} cases[] = {
		{ "alice", "wonderland", true },   { "alice", "wonderlan", false },
		{ "alice", "wonderland!", false }, { "alice", "", false },
		{ "z", "secret", true },				    /* md5 secret */
		{ "z", "Secret", false },	   { "x", "secret", true }, /* SCRAM verifier */
		{ "x", "secret ", false },
	};
	char err[256];
	struct userlist *l = users_load("data/users_ok.txt", err, sizeof(err));

	(void)state;
	assert_non_null(l);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (users_check_password(find_ok(l, cases[i].user), cases[i].password) !=
		    cases[i].ok)
			fail_msg("case #%zu", i);
	}
	users_free(l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_load_ok),
		cmocka_unit_test(test_load_errors),
		cmocka_unit_test(test_load_missing_and_empty),
		cmocka_unit_test(test_load_long_and_nul_lines),
		cmocka_unit_test(test_pick_method),
		cmocka_unit_test(test_check_password),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
