/*
 * pg_hba.conf subset: data/hba_ok.conf against a table of (database, user, address, tls) ->
 * method queries, and a table of one-line files that must fail with an exact message.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <cmocka.h>

#include "auth/hba.h"

/* Fills ss from a numeric IPv4 or IPv6 address. */
static const struct sockaddr *make_addr(const char *text, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (strchr(text, ':')) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;

		a->sin6_family = AF_INET6;
		assert_int_equal(inet_pton(AF_INET6, text, &a->sin6_addr), 1);
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)ss;

		a->sin_family = AF_INET;
		assert_int_equal(inet_pton(AF_INET, text, &a->sin_addr), 1);
	}
	return (const struct sockaddr *)ss;
}

static struct hba *load_ok(const char *path)
{
	char err[1024];
	struct hba *hba = hba_load(path, err, sizeof(err));

	if (!hba)
		fail_msg("%s", err);
	return hba;
}

static void test_match_table(void **state)
{
	static const struct {
		const char *db, *user, *addr;
		bool tls;
		enum hba_method expect;
		const char *why;
	} cases[] = {
		{ "postgres", "banned", "10.1.2.3", false, HBA_REJECT, "banned 0.0.0.0/0" },
		{ "postgres", "banned", "::1", false, HBA_TRUST, "0.0.0.0/0 is IPv4 only" },
		{ "secure", "a", "1.2.3.4", true, HBA_SCRAM, "hostssl with TLS" },
		{ "secure", "a", "1.2.3.4", false, HBA_REJECT, "hostnossl without TLS" },
		{ "all", "quoted", "127.0.0.1", false, HBA_TRUST, "database named all" },
		{ "postgres", "quoted", "127.0.0.1", false, HBA_NOMATCH, "quoted all is a name" },
		{ "all", "quoted", "::ffff:127.0.0.1", false, HBA_TRUST, "v4-mapped is IPv4" },
		{ "we#ird", "u", "127.0.0.2", false, HBA_TRUST, "quoted #" },
		{ "we", "u", "127.0.0.2", false, HBA_NOMATCH, "# inside quotes is not a comment" },
		{ "alice", "alice", "10.9.9.9", false, HBA_MD5, "sameuser" },
		{ "bob", "alice", "10.9.9.9", false, HBA_NOMATCH, "sameuser, other db" },
		{ "db2", "bob smith", "192.168.1.77", false, HBA_PASSWORD, "list and netmask" },
		{ "db3", "alice", "192.168.1.0", false, HBA_PASSWORD, "list after a blank" },
		{ "db1", "alice", "192.168.2.1", false, HBA_NOMATCH, "outside netmask" },
		{ "db4", "alice", "192.168.1.1", false, HBA_NOMATCH, "db not in list" },
		{ "db1", "bob", "192.168.1.1", false, HBA_NOMATCH, "user not in list" },
		{ "DB1", "alice", "192.168.1.1", false, HBA_NOMATCH, "names are case-sensitive" },
		{ "p", "u", "::1", false, HBA_TRUST, "::1/128" },
		{ "p", "u", "::2", false, HBA_NOMATCH, "::1/128, other address" },
		{ "p", "u", "2001:db8:1::5", false, HBA_SCRAM, "2001:db8::/32" },
		{ "p", "u", "2001:db9::", false, HBA_NOMATCH, "outside 2001:db8::/32" },
		{ "replication", "u", "172.16.0.1", false, HBA_SCRAM,
		  "replication keyword skipped" },
		{ "p", "u", "172.31.255.255", false, HBA_SCRAM, "172.16.0.0/12 top" },
		{ "p", "u", "172.32.0.0", false, HBA_NOMATCH, "172.16.0.0/12 above" },
		{ "x", "hostbits", "10.200.0.1", false, HBA_TRUST, "host bits ignored" },
		{ "p", "v6only", "fe80::1", false, HBA_TRUST, "::/0" },
		{ "p", "v6only", "1.2.3.4", false, HBA_NOMATCH, "::/0 is IPv6 only" },
		{ "postgres", "postgres", "1.2.3.4", false, HBA_NOMATCH,
		  "local lines never match" },
	};
	struct hba *hba = load_ok("data/hba_ok.conf");
	struct sockaddr_storage ss;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		enum hba_method got = hba_match(hba, cases[i].db, cases[i].user,
						make_addr(cases[i].addr, &ss), cases[i].tls);

		if (got != cases[i].expect)
			fail_msg("case #%zu (%s): got %s, want %s", i, cases[i].why,
				 hba_method_name(got), hba_method_name(cases[i].expect));
	}
	hba_free(hba);
}

static void test_match_non_ip(void **state)
{
	struct hba *hba = load_ok("data/hba_ok.conf");
	struct sockaddr_un un = { .sun_family = AF_UNIX };
	struct sockaddr_storage ss;

	(void)state;
	/* Unix sockets match neither host nor local lines; no address or no rules match nothing. */
	assert_int_equal(hba_match(hba, "p", "u", (const struct sockaddr *)&un, false),
			 HBA_NOMATCH);
	assert_int_equal(hba_match(hba, "p", "banned", NULL, false), HBA_NOMATCH);
	assert_int_equal(hba_match(NULL, "p", "banned", make_addr("1.1.1.1", &ss), false),
			 HBA_NOMATCH);
	hba_free(hba);
	hba_free(NULL);
}

/* Writes text to a temp file and returns its path (static buffer). */
static const char *write_temp(const char *text)
{
	static char path[64];
	int fd;

	strcpy(path, "/tmp/pgrelay-test-hba-XXXXXX");
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	return path;
}

static void test_load_errors_table(void **state)
{
	static const struct {
		const char *line, *message;
	} cases[] = {
		{ "hots all all all trust", "unsupported connection type \"hots\"" },
		{ "hostgssenc all all all trust", "unsupported connection type \"hostgssenc\"" },
		{ "\"host\" all all all trust", "unsupported connection type \"host\"" },
		{ "host all all all ldap", "unsupported authentication method \"ldap\"" },
		{ "host all all all peer", "unsupported authentication method \"peer\"" },
		{ "host all all all \"md5\"", "unsupported authentication method \"md5\"" },
		{ "local all all unknown", "unsupported authentication method \"unknown\"" },
		{ "host all all all md5 clientcert=verify-full",
		  "clientcert can only be configured for hostssl rows" },
		{ "hostssl all all all md5 clientcert=maybe",
		  "invalid value for clientcert: \"maybe\"" },
		{ "hostssl all all all cert clientcert=verify-ca",
		  "invalid value for clientcert: \"verify-ca\"" },
		{ "hostssl all all all md5 map=x",
		  "authentication option \"map=x\" is not supported" },
		{ "host all all all cert",
		  "cert authentication is only supported on hostssl lines" },
		{ "host all all 10.0.0.0/33 md5", "invalid CIDR mask in address \"10.0.0.0/33\"" },
		{ "host all all ::/129 md5", "invalid CIDR mask in address \"::/129\"" },
		{ "host all all 10.0.0.0/ md5", "invalid CIDR mask in address \"10.0.0.0/\"" },
		{ "host all all 10.0.0.0/-1 md5", "invalid CIDR mask in address \"10.0.0.0/-1\"" },
		{ "host all all 10.0.0.0/0008 md5",
		  "invalid CIDR mask in address \"10.0.0.0/0008\"" },
		{ "host all all 10.0.0.256/32 md5",
		  "invalid IP address \"10.0.0.256\" (host names are not supported)" },
		{ "host all all db.example.com md5",
		  "invalid IP address \"db.example.com\" (host names are not supported)" },
		{ "host all all fe80::1%eth0/64 md5",
		  "invalid IP address \"fe80::1%eth0\" (host names are not supported)" },
		{ "host all all 10.0.0.0 255.255.0.0", "end of line before authentication method" },
		{ "host all all 10.0.0.0 md5", "invalid IP mask \"md5\"" },
		{ "host all all 10.0.0.0",
		  "missing fields (need TYPE DATABASE USER ADDRESS METHOD)" },
		{ "host all all 10.0.0.0 ffff:: md5", "invalid IP mask \"ffff::\"" },
		{ "host all all samenet md5", "\"samenet\" is not supported" },
		{ "host all all samehost md5", "\"samehost\" is not supported" },
		{ "host all +admins all md5",
		  "group membership (+role) is not supported: \"+admins\"" },
		{ "host @dbs all all md5", "file inclusion (@file) is not supported: \"@dbs\"" },
		{ "host samerole all all md5", "samerole is not supported: \"samerole\"" },
		{ "host /^db all all md5", "regular expressions are not supported: \"/^db\"" },
		{ "host all all all", "missing fields (need TYPE DATABASE USER ADDRESS METHOD)" },
		{ "local all all", "missing fields (need TYPE DATABASE USER METHOD)" },
		{ "host", "missing fields (need TYPE DATABASE USER ADDRESS METHOD)" },
		{ "host all all all md5,", "line ends with a comma" },
		{ "host all,,x all all md5", "empty item in a comma-separated list" },
		{ "host \"all all all md5", "unterminated quoted string" },
		{ "host all all all,10.0.0.0/8 md5", "address must be a single value" },
		{ "host all all all md5,trust", "authentication method must be a single value" },
		{ "host,hostssl all all all md5", "connection type must be a single value" },
		{ "host all \"\" all md5", "user name \"\" is empty or longer than 63 bytes" },
		{ "host d234567890123456789012345678901234567890123456789012345678901234 all all "
		  "md5",
		  "database name "
		  "\"d234567890123456789012345678901234567890123456789012345678901234\" is "
		  "empty or longer than 63 bytes" },
		{ "host a b c d e f g h i j k l m n o p q", "too many fields" },
	};
	char err[1024], expect[1024];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *path = write_temp(cases[i].line);

		if (hba_load(path, err, sizeof(err)))
			fail_msg("case #%zu loaded: %s", i, cases[i].line);
		snprintf(expect, sizeof(expect), "%s:1: %s", path, cases[i].message);
		if (strcmp(err, expect) != 0)
			fail_msg("case #%zu: %s\n got: %s\nwant: %s", i, cases[i].line, err,
				 expect);
		unlink(path);
	}
}

static void test_load_accepts(void **state)
{
	/* Edge cases that must load; each file also gets the query in the second column. */
	static const struct {
		const char *text, *db, *user, *addr;
		enum hba_method expect;
	} cases[] = {
		{ "", "d", "u", "1.1.1.1", HBA_NOMATCH },
		{ "# only a comment\n\n   \t\n", "d", "u", "1.1.1.1", HBA_NOMATCH },
		{ "host all all 0.0.0.0/0 trust\r\n", "d", "u", "1.1.1.1", HBA_TRUST },
		{ "\thost\tall\tall\t1.1.1.1/32\tmd5", "d", "u", "1.1.1.1", HBA_MD5 },
		{ "host all \"a\"\"b\" all password", "d", "a\"b", "1.1.1.1", HBA_PASSWORD },
		{ "host all \"a,b\" all password", "d", "a,b", "1.1.1.1", HBA_PASSWORD },
		{ "host all a,\"b c\",d all trust", "d", "b c", "::1", HBA_TRUST },
		{ "host d,sameuser all all trust", "u", "u", "::1", HBA_TRUST },
		{ "host all all 1.2.3.0/24 reject\nhost all all all trust", "d", "u", "1.2.3.4",
		  HBA_REJECT },
		{ "host all all 1.2.3.0/24 reject\nhost all all all trust", "d", "u", "1.2.4.4",
		  HBA_TRUST },
		{ "host all all ::ffff:0:0/96 trust", "d", "u", "::ffff:1.2.3.4", HBA_NOMATCH },
		{ "host all all 0.0.0.0/0 trust", "d", "u", "::ffff:1.2.3.4", HBA_TRUST },
		{ "hostssl all all all md5\nhost all all all reject", "d", "u", "1.1.1.1",
		  HBA_REJECT },
	};
	char err[512];
	struct sockaddr_storage ss;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *path = write_temp(cases[i].text);
		struct hba *hba = hba_load(path, err, sizeof(err));

		if (!hba)
			fail_msg("case #%zu: %s", i, err);
		if (hba_match(hba, cases[i].db, cases[i].user, make_addr(cases[i].addr, &ss),
			      false) != cases[i].expect)
			fail_msg("case #%zu: wrong method", i);
		hba_free(hba);
		unlink(path);
	}
}

/* clientcert and cert: what the matching rule asks of the client certificate. */
static void test_clientcert(void **state)
{
	char err[512];
	struct sockaddr_storage ss;
	enum hba_clientcert cert;
	const char *path = write_temp("hostssl a all all cert\n"
				      "hostssl b all all md5 clientcert=verify-ca\n"
				      "hostssl c all all scram-sha-256 clientcert=verify-full\n"
				      "hostnossl all all all md5\n"
				      "hostssl all all all trust\n");
	struct hba *hba = hba_load(path, err, sizeof(err));

	(void)state;
	if (!hba)
		fail_msg("%s", err);
	const struct sockaddr *addr = make_addr("10.0.0.1", &ss);
	assert_int_equal(hba_match_cert(hba, "a", "u", addr, true, &cert), HBA_CERT);
	assert_int_equal(cert, HBA_CLIENTCERT_VERIFY_FULL);
	assert_int_equal(hba_match_cert(hba, "b", "u", addr, true, &cert), HBA_MD5);
	assert_int_equal(cert, HBA_CLIENTCERT_VERIFY_CA);
	assert_int_equal(hba_match_cert(hba, "c", "u", addr, true, &cert), HBA_SCRAM);
	assert_int_equal(cert, HBA_CLIENTCERT_VERIFY_FULL);
	assert_int_equal(hba_match_cert(hba, "a", "u", addr, false, &cert), HBA_MD5);
	assert_int_equal(cert, HBA_CLIENTCERT_NONE);
	assert_int_equal(hba_match_cert(hba, "z", "u", addr, true, &cert), HBA_TRUST);
	assert_int_equal(cert, HBA_CLIENTCERT_NONE);
	hba_free(hba);
	unlink(path);
}

static void test_load_several_errors(void **state)
{
	char err[1024];

	(void)state;
	assert_null(hba_load("data/hba_bad.conf", err, sizeof(err)));
	assert_string_equal(err, "data/hba_bad.conf:2: unsupported connection type \"hots\"\n"
				 "data/hba_bad.conf:4: unsupported authentication method \"ldap\"");
	assert_null(hba_load("data/no-such-hba.conf", err, sizeof(err)));
	assert_string_equal(err,
			    "data/no-such-hba.conf: could not open: No such file or directory");
}

static void test_long_line(void **state)
{
	char *text = malloc(5000), err[256], expect[256];
	const char *path;

	(void)state;
	assert_non_null(text);
	memset(text, ' ', 4999);
	memcpy(text, "host all all all trust", 22);
	text[4999] = '\0';
	path = write_temp(text);
	assert_null(hba_load(path, err, sizeof(err)));
	snprintf(expect, sizeof(expect), "%s:1: line longer than 4096 bytes", path);
	assert_string_equal(err, expect);
	unlink(path);
	/* 600 names in one list exceed the item bound without overflowing anything. */
	strcpy(text, "host all ");
	for (int i = 0; i < 600; i++)
		strcat(text, "a,");
	strcat(text, "a all trust");
	path = write_temp(text);
	assert_null(hba_load(path, err, sizeof(err)));
	snprintf(expect, sizeof(expect), "%s:1: more than 512 items on one line", path);
	assert_string_equal(err, expect);
	unlink(path);
	free(text);
}

static void test_method_names(void **state)
{
	(void)state;
	assert_string_equal(hba_method_name(HBA_TRUST), "trust");
	assert_string_equal(hba_method_name(HBA_REJECT), "reject");
	assert_string_equal(hba_method_name(HBA_MD5), "md5");
	assert_string_equal(hba_method_name(HBA_SCRAM), "scram-sha-256");
	assert_string_equal(hba_method_name(HBA_PASSWORD), "password");
	assert_string_equal(hba_method_name(HBA_CERT), "cert");
	assert_string_equal(hba_method_name(HBA_NOMATCH), "no match");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_match_table),	    cmocka_unit_test(test_match_non_ip),
		cmocka_unit_test(test_load_errors_table),   cmocka_unit_test(test_load_accepts),
		cmocka_unit_test(test_load_several_errors), cmocka_unit_test(test_long_line),
		cmocka_unit_test(test_method_names),	    cmocka_unit_test(test_clientcert),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
