/* Statement maps (src/pool/prepared.c): insert, replace, remove with tombstones, growth, LRU. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "pool/prepared.h"

static void test_put_find_replace(void **state)
{
	(void)state;
	struct stmt_map m;
	stmt_map_init(&m);
	assert_null(stmt_map_find(&m, "s1"));
	const uint8_t msg[] = { 'P', 0, 0, 0, 4 };
	assert_true(stmt_map_put(&m, "s1", 11, msg, sizeof(msg), 1));
	struct stmt *s = stmt_map_find(&m, "s1");
	assert_non_null(s);
	assert_int_equal(s->hash, 11);
	assert_memory_equal(s->msg, msg, sizeof(msg));
	assert_true(stmt_map_put(&m, "s1", 22, NULL, 0, 2));
	assert_int_equal(m.count, 1);
	assert_int_equal(stmt_map_find(&m, "s1")->hash, 22);
	assert_null(stmt_map_find(&m, "s1")->msg);
	stmt_map_free(&m);
}

static void test_remove_keeps_probe_chains(void **state)
{
	(void)state;
	struct stmt_map m;
	stmt_map_init(&m);
	char name[32];
	for (int i = 0; i < 500; i++) {
		snprintf(name, sizeof(name), "S_%d", i);
		assert_true(stmt_map_put(&m, name, (uint64_t)i, NULL, 0, (uint64_t)i));
	}
	for (int i = 0; i < 500; i += 2) {
		snprintf(name, sizeof(name), "S_%d", i);
		stmt_map_remove(&m, name);
	}
	assert_int_equal(m.count, 250);
	for (int i = 0; i < 500; i++) {
		snprintf(name, sizeof(name), "S_%d", i);
		struct stmt *s = stmt_map_find(&m, name);
		if (i % 2)
			assert_true(s && s->hash == (uint64_t)i);
		else
			assert_null(s);
	}
	/* Reinsert over tombstones; removing what is absent is harmless. */
	stmt_map_remove(&m, "absent");
	for (int i = 0; i < 500; i += 2) {
		snprintf(name, sizeof(name), "S_%d", i);
		assert_true(stmt_map_put(&m, name, 7, NULL, 0, 1000));
	}
	assert_int_equal(m.count, 500);
	stmt_map_clear(&m);
	assert_int_equal(m.count, 0);
	assert_null(stmt_map_find(&m, "S_1"));
	stmt_map_free(&m);
}

static void test_oldest(void **state)
{
	(void)state;
	struct stmt_map m;
	stmt_map_init(&m);
	assert_null(stmt_map_oldest(&m));
	assert_true(stmt_map_put(&m, "a", 1, NULL, 0, 30));
	assert_true(stmt_map_put(&m, "b", 2, NULL, 0, 10));
	assert_true(stmt_map_put(&m, "c", 3, NULL, 0, 20));
	assert_string_equal(stmt_map_oldest(&m)->name, "b");
	stmt_map_find(&m, "b")->used = 40;
	assert_string_equal(stmt_map_oldest(&m)->name, "c");
	stmt_map_free(&m);
}

static void test_hash_separates_text(void **state)
{
	(void)state;
	const char *a = "select 1\0\0\0", *b = "select 2\0\0\0";
	assert_int_not_equal(stmt_hash((const uint8_t *)a, 11), stmt_hash((const uint8_t *)b, 11));
	assert_int_equal(stmt_hash((const uint8_t *)a, 11), stmt_hash((const uint8_t *)a, 11));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_put_find_replace),
		cmocka_unit_test(test_remove_keeps_probe_chains),
		cmocka_unit_test(test_oldest),
		cmocka_unit_test(test_hash_separates_text),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
