/*
 * The pure parts of the HTTP listener: allow lists (util/cidr.h), ?lag= values (http_routes.h),
 * the bounded text buffer (util/textbuf.h), the /status page and the "pools" member of /cluster
 * (http_status.c). The network side is tested in tests/integration/test_http.py and
 * test_http_status.py.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "http/http_routes.h"
#include "http/http_status_html.h"
#include "pool/pool.h"
#include "pool/worker.h"
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

/* Bug guarded: /status served with a body other than the compiled page, or without its headers. */
static void test_status_page(void **state)
{
	(void)state;
	struct http_response out = { .status = 500 };
	textbuf_init(&out.body, HTTP_BODY_MAX);
	http_status_page(&out);
	assert_int_equal(out.status, 200);
	assert_string_equal(out.content_type, "text/html; charset=utf-8");
	assert_non_null(strstr(out.extra_headers, "Content-Security-Policy: default-src 'none';"));
	assert_int_equal(out.body.len, http_status_html_len);
	assert_memory_equal(out.body.data, http_status_html, http_status_html_len);
	assert_int_equal(http_status_html[http_status_html_len], '\0');
	assert_non_null(strstr(out.body.data, "</html>"));
	textbuf_free(&out.body);
}

static struct pool *fake_pool(struct worker *w, const char *db, const char *user, int clients,
			      int waiting)
{
	struct pool *p = calloc(1, sizeof(*p));
	assert_non_null(p);
	p->database = db;
	p->user = user;
	p->n_clients = clients;
	p->n_waiting = waiting;
	list_append(&w->pools, &p->node);
	return p;
}

static void free_pools(struct worker *w)
{
	while (w->pools.next != &w->pools) {
		struct list_node *n = w->pools.next;
		list_del(n);
		free(list_entry(n, struct pool, node));
	}
}

/*
 * Bug guarded: pools that differ only by startup options listed twice, servers summed on the
 * wrong node, or an unbounded list when there are many (database, user) pairs.
 */
static void test_cluster_pools(void **state)
{
	(void)state;
	struct worker *w = calloc(1, sizeof(*w));
	assert_non_null(w);
	list_init(&w->pools);
	w->n_nodes = 2;
	struct pool *a1 = fake_pool(w, "app", "app", 3, 1);
	fake_pool(w, "db\"x", "u", 1, 0);
	struct pool *a2 = fake_pool(w, "app", "app", 2, 0); /* same pair, other options */
	a1->nodes[0] = (struct pool_node){ .n_servers = 3, .n_idle = 1, .n_resetting = 1 };
	a2->nodes[1] = (struct pool_node){ .n_servers = 2, .n_idle = 2 };
	struct textbuf b;
	textbuf_init(&b, HTTP_BODY_MAX);
	http_cluster_pools(w, &b);
	assert_false(textbuf_failed(&b));
	assert_string_equal(
		b.data,
		"\"pools\": [{\"database\": \"app\", \"user\": \"app\", \"clients_active\": 4, "
		"\"clients_waiting\": 1, \"servers_active\": 1, \"servers_idle\": 3, "
		"\"servers_reset\": 1, \"servers\": [{\"node_id\": 0, \"active\": 1, \"idle\": 1, "
		"\"reset\": 1}, {\"node_id\": 1, \"active\": 0, \"idle\": 2, \"reset\": 0}]}, "
		"{\"database\": \"db\\\"x\", \"user\": \"u\", \"clients_active\": 1, "
		"\"clients_waiting\": 0, \"servers_active\": 0, \"servers_idle\": 0, "
		"\"servers_reset\": 0, \"servers\": [{\"node_id\": 0, \"active\": 0, \"idle\": 0, "
		"\"reset\": 0}, {\"node_id\": 1, \"active\": 0, \"idle\": 0, \"reset\": 0}]}], "
		"\"pools_truncated\": false");
	free_pools(w);

	/* More pairs than HTTP_POOLS_MAX: the first ones are listed, and the cut is said. */
	static char names[HTTP_POOLS_MAX + 5][16];
	for (int i = 0; i < HTTP_POOLS_MAX + 5; i++) {
		snprintf(names[i], sizeof(names[i]), "db%d", i);
		fake_pool(w, names[i], "u", 1, 0);
	}
	textbuf_reset(&b);
	http_cluster_pools(w, &b);
	assert_false(textbuf_failed(&b));
	int entries = 0;
	for (const char *p = b.data; (p = strstr(p, "\"database\": ")); p++)
		entries++;
	assert_int_equal(entries, HTTP_POOLS_MAX);
	assert_non_null(strstr(b.data, "\"pools_truncated\": true"));
	assert_null(strstr(b.data, "\"db256\""));
	free_pools(w);
	textbuf_free(&b);
	free(w);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cidr_match),  cmocka_unit_test(test_cidr_reject),
		cmocka_unit_test(test_lag),	    cmocka_unit_test(test_textbuf_ceiling),
		cmocka_unit_test(test_status_page), cmocka_unit_test(test_cluster_pools),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
