/*
 * The auth_query cache (src/auth/auth_cache.c): TTL counted from the lookup, LRU eviction at the
 * cap, keys of (database, user), replacement, forget and clear. Entries hold plain-text secrets
 * too (a custom auth_query may return one), so ASan checks that every owned field is freed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "auth/auth_cache.h"

/* A fetched md5 entry for name (a real lookup gives the same shape). */
static struct user_entry make_entry(const char *name, const char *md5)
{
	struct user_entry e;
	memset(&e, 0, sizeof(e));
	e.name = strdup(name);
	assert_int_equal(users_secret_parse(name, md5, &e), USERS_SECRET_OK);
	return e;
}

static void put(struct auth_cache *c, const char *db, const char *name, const char *secret,
		uint64_t at)
{
	struct user_entry e = make_entry(name, secret);
	assert_true(auth_cache_put(c, db, &e, at));
	assert_null(e.name); /* moved */
}

#define MD5_A "md5aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define MD5_B "md5bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

static void test_ttl_counts_from_the_lookup(void **state)
{
	(void)state;
	struct auth_cache *c = auth_cache_new(4);
	put(c, "app", "alice", MD5_A, 1000);
	/* Use does not extend the life: gets at 1000+ttl-1 succeed, at 1000+ttl fail. */
	for (uint64_t t = 1000; t < 1000 + 500; t += 100)
		assert_non_null(auth_cache_get(c, "app", "alice", t, 500));
	assert_null(auth_cache_get(c, "app", "alice", 1500, 500));
	assert_int_equal(auth_cache_count(c), 0); /* an expired entry is dropped */
	/* A clock before the fetch expires rather than trusts. */
	put(c, "app", "alice", MD5_A, 1000);
	assert_null(auth_cache_get(c, "app", "alice", 999, 500));
	auth_cache_free(c);
}

static void test_key_is_database_and_user(void **state)
{
	(void)state;
	struct auth_cache *c = auth_cache_new(4);
	put(c, "app", "alice", MD5_A, 0);
	put(c, "other", "alice", MD5_B, 0);
	assert_int_equal(auth_cache_count(c), 2);
	const struct user_entry *e = auth_cache_get(c, "app", "alice", 1, 100);
	assert_non_null(e);
	assert_string_equal(e->md5, MD5_A);
	e = auth_cache_get(c, "other", "alice", 1, 100);
	assert_string_equal(e->md5, MD5_B);
	assert_null(auth_cache_get(c, "app", "bob", 1, 100));
	assert_null(auth_cache_get(c, "ap", "alice", 1, 100));
	/* A second put of a key replaces it (a newer lookup), without growing. */
	put(c, "app", "alice", MD5_B, 50);
	assert_int_equal(auth_cache_count(c), 2);
	assert_string_equal(auth_cache_get(c, "app", "alice", 51, 100)->md5, MD5_B);
	auth_cache_forget(c, "app", "alice");
	assert_null(auth_cache_get(c, "app", "alice", 51, 100));
	assert_non_null(auth_cache_get(c, "other", "alice", 51, 100));
	auth_cache_forget(c, "app", "nobody"); /* absent: nothing happens */
	auth_cache_clear(c);
	assert_int_equal(auth_cache_count(c), 0);
	auth_cache_free(c);
}

static void test_lru_eviction_at_the_cap(void **state)
{
	(void)state;
	struct auth_cache *c = auth_cache_new(3);
	put(c, "db", "u1", MD5_A, 0);
	put(c, "db", "u2", MD5_A, 0);
	put(c, "db", "u3", MD5_A, 0);
	assert_non_null(auth_cache_get(c, "db", "u1", 1, 100)); /* u2 is now the least recent */
	put(c, "db", "u4", MD5_A, 0);
	assert_int_equal(auth_cache_count(c), 3);
	assert_null(auth_cache_get(c, "db", "u2", 1, 100));
	assert_non_null(auth_cache_get(c, "db", "u1", 1, 100));
	assert_non_null(auth_cache_get(c, "db", "u3", 1, 100));
	assert_non_null(auth_cache_get(c, "db", "u4", 1, 100));
	/* A thousand distinct names never hold more than the cap. */
	for (int i = 0; i < 1000; i++) {
		char name[32];
		snprintf(name, sizeof(name), "n%d", i);
		put(c, "db", name, MD5_B, 0);
		assert_true(auth_cache_count(c) <= 3);
	}
	assert_non_null(auth_cache_get(c, "db", "n999", 1, 100));
	auth_cache_free(c);
}

static void test_plain_text_secret_is_owned(void **state)
{
	(void)state;
	struct auth_cache *c = auth_cache_new(1);
	put(c, "db", "carol", "plain password", 0);
	const struct user_entry *e = auth_cache_get(c, "db", "carol", 1, 100);
	assert_non_null(e);
	assert_int_equal(e->kind, SECRET_PLAIN);
	assert_string_equal(e->plain, "plain password");
	assert_true(e->has_scram);
	put(c, "db", "dave", "another", 0); /* evicts carol and frees her copy */
	assert_null(auth_cache_get(c, "db", "carol", 1, 100));
	auth_cache_free(c);
	auth_cache_free(NULL);
	assert_null(auth_cache_new(0));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ttl_counts_from_the_lookup),
		cmocka_unit_test(test_key_is_database_and_user),
		cmocka_unit_test(test_lru_eviction_at_the_cap),
		cmocka_unit_test(test_plain_text_secret_is_owned),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
