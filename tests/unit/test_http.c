/*
 * The pure parts of the HTTP listener: allow lists (util/cidr.h), ?lag= values (http_routes.h)
 * and the bounded text buffer (util/textbuf.h). The network side is tested in
 * tests/integration/test_http.py.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "http/http_routes.h"
#include "util/cidr.h"
#include "util/textbuf.h"

static bool peer_in(const struct cidr_list *l, const char *addr)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	if (strchr(addr, ':')) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
		s6->sin6_family = AF_INET6;
		assert_int_equal(inet_pton(AF_INET6, addr, &s6->sin6_addr), 1);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
		s4->sin_family = AF_INET;
		assert_int_equal(inet_pton(AF_INET, addr, &s4->sin_addr), 1);
	}
	return cidr_list_match(l, (struct sockaddr *)&ss);
}

static void test_cidr_match(void **state)
{
	(void)state;
	struct cidr_list l;
	char why[256];
	assert_true(cidr_list_parse(" 10.0.0.0/8, 192.168.1.7 ,::1/128, 2001:db8::/32", &l, why,
				    sizeof(why)));
	assert_int_equal(l.n, 4);
	assert_true(peer_in(&l, "10.200.3.4"));
	assert_false(peer_in(&l, "11.0.0.1"));
	assert_true(peer_in(&l, "192.168.1.7"));
	assert_false(peer_in(&l, "192.168.1.8"));
	assert_true(peer_in(&l, "::1"));
	assert_true(peer_in(&l, "2001:db8:1::5"));
	/* An IPv4 client on a dual-stack socket arrives as ::ffff:a.b.c.d: IPv4 entries apply. */
	assert_true(peer_in(&l, "::ffff:10.1.2.3"));
	assert_false(peer_in(&l, "::ffff:127.0.0.1"));
	assert_true(cidr_list_parse("", &l, why, sizeof(why)));
	assert_int_equal(l.n, 0);
	assert_false(peer_in(&l, "127.0.0.1"));
	assert_true(cidr_list_parse("0.0.0.0/0", &l, why, sizeof(why)));
	assert_true(peer_in(&l, "8.8.8.8"));
	assert_false(peer_in(&l, "::1")); /* an IPv4 network never matches IPv6 */
}

static void test_cidr_reject(void **state)
{
	(void)state;
	static const char *const bad[] = { "10.0.0.0/33",      "10.0.0.0/",
					   "10.0.0/8",	       "host.example",
					   "1.2.3.4,,5.6.7.8", "::1/129",
					   "1.2.3.4/8x",       "*" };
	struct cidr_list l;
	char why[256];
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_false(cidr_list_parse(bad[i], &l, why, sizeof(why)));
}

static void test_lag(void **state)
{
	(void)state;
	static const struct {
		const char *text;
		bool ok, is_time;
		double value;
	} cases[] = {
		{ "0", true, false, 0 },
		{ "1024", true, false, 1024 },
		{ "16MB", true, false, 16 << 20 },
		{ "64kB", true, false, 64 << 10 },
		{ "1s", true, true, 1 },
		{ "500ms", true, true, 0.5 },
		{ "2min", true, true, 120 },
		{ "", false, false, 0 },
		{ "abc", false, false, 0 },
		{ "-1", false, false, 0 },
		{ "1.5s", false, false, 0 },
		{ "16XB", false, false, 0 },
		{ "99999999999999999999", false, false, 0 },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		bool is_time = false;
		double v = -1;
		bool ok = http_parse_lag(cases[i].text, &is_time, &v);
		assert_int_equal(ok, cases[i].ok);
		if (ok) {
			assert_int_equal(is_time, cases[i].is_time);
			assert_true(v == cases[i].value);
		}
	}
}

static void test_textbuf_ceiling(void **state)
{
	(void)state;
	struct textbuf b;
	textbuf_init(&b, 16);
	textbuf_puts(&b, "0123456789");
	assert_false(textbuf_failed(&b));
	textbuf_printf(&b, "%s", "abcdefghij"); /* 20 > 16: fails, and stays failed */
	assert_true(textbuf_failed(&b));
	textbuf_puts(&b, "x");
	assert_int_equal(b.len, 10);
	textbuf_reset(&b);
	textbuf_json_string(&b, "a\"\\\n");
	assert_string_equal(b.data, "\"a\\\"\\\\\\u000a\"");
	textbuf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cidr_match),
		cmocka_unit_test(test_cidr_reject),
		cmocka_unit_test(test_lag),
		cmocka_unit_test(test_textbuf_ceiling),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
