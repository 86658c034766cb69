/*
 * Function volatility catalog (route/catalog.h): lookups by qualified and unqualified name, the
 * most volatile overload winning, growth past the initial table, and the classifier using it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "route/catalog.h"
#include "route/classify.h"

static void test_qualified_and_unqualified(void **state)
{
	(void)state;
	struct func_catalog *c = catalog_new();
	assert_non_null(c);
	assert_true(catalog_add(c, "app", "f", 's'));
	assert_true(catalog_add(c, "other", "f", 'v'));
	assert_true(catalog_add(c, "app", "g", 'i'));
	assert_int_equal(catalog_volatility(c, "app", "f"), 's');
	assert_int_equal(catalog_volatility(c, "other", "f"), 'v');
	/* Unqualified: the search_path is unknown, so the most volatile one answers. */
	assert_int_equal(catalog_volatility(c, NULL, "f"), 'v');
	assert_int_equal(catalog_volatility(c, NULL, "g"), 'i');
	assert_int_equal(catalog_volatility(c, NULL, "nope"), 0);
	assert_int_equal(catalog_volatility(c, "nope", "g"), 0);
	catalog_free(c);
}

static void test_overloads_keep_most_volatile(void **state)
{
	(void)state;
	struct func_catalog *c = catalog_new();
	assert_true(catalog_add(c, "s", "h", 'i'));
	assert_true(catalog_add(c, "s", "h", 'v'));
	assert_true(catalog_add(c, "s", "h", 's'));
	assert_int_equal(catalog_volatility(c, "s", "h"), 'v');
	catalog_free(c);
}

static void test_grows(void **state)
{
	(void)state;
	struct func_catalog *c = catalog_new();
	char name[32];
	for (int i = 0; i < 20000; i++) {
		snprintf(name, sizeof(name), "fn%d", i);
		assert_true(catalog_add(c, "public", name, i % 2 ? 's' : 'v'));
	}
	assert_int_equal(catalog_size(c), 40000);
	assert_int_equal(catalog_volatility(c, "public", "fn12345"), 's');
	assert_int_equal(catalog_volatility(c, NULL, "fn12344"), 'v');
	catalog_free(c);
}

static void test_classifier_consults_catalog(void **state)
{
	(void)state;
	struct func_catalog *c = catalog_new();
	assert_true(catalog_add(c, "public", "my_stable", 's'));
	assert_true(catalog_add(c, "public", "my_vol", 'v'));
	struct classify_options o = { .volatility = catalog_volatility, .volatility_arg = c };
	struct classifier *cls = classify_new(&o);
	assert_non_null(cls);
	struct classify_result r;
	const char *q1 = "select my_stable(1)";
	classify_sql(cls, q1, strlen(q1), &r);
	assert_int_equal(r.route, ROUTE_ANY);
	const char *q2 = "select my_vol(1)";
	classify_sql(cls, q2, strlen(q2), &r);
	assert_int_equal(r.route, ROUTE_PRIMARY);
	const char *q3 = "select unknown_fn(1)";
	classify_sql(cls, q3, strlen(q3), &r);
	assert_int_equal(r.route, ROUTE_PRIMARY);
	classify_free(cls);
	catalog_free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_qualified_and_unqualified),
		cmocka_unit_test(test_overloads_keep_most_volatile),
		cmocka_unit_test(test_grows),
		cmocka_unit_test(test_classifier_consults_catalog),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
