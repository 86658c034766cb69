/*
 * Statement maps (src/pool/prepared.c): insert, replace, remove with tombstones, growth, LRU; the
 * 63-byte name limit, the per-client byte budget and the keyed name hash (src/util/siphash.c);
 * the Query/Parse body checks the relay applies before anyone reads those bodies as C strings.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "pool/prepared.h"
#include "protocol/reader.h"
#include "util/siphash.h"

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

/* The reference implementation's vectors_sip64: key 00..0f, message 00..n-1. */
static void test_siphash_reference_vectors(void **state)
{
	(void)state;
	static const uint64_t expect[48] = {
		0x726fdb47dd0e0e31, 0x74f839c593dc67fd, 0x0d6c8009d9a94f5a, 0x85676696d7fb7e2d,
		0xcf2794e0277187b7, 0x18765564cd99a68d, 0xcbc9466e58fee3ce, 0xab0200f58b01d137,
		0x93f5f5799a932462, 0x9e0082df0ba9e4b0, 0x7a5dbbc594ddb9f3, 0xf4b32f46226bada7,
		0x751e8fbc860ee5fb, 0x14ea5627c0843d90, 0xf723ca908e7af2ee, 0xa129ca6149be45e5,
		0x3f2acc7f57c29bdb, 0x699ae9f52cbe4794, 0x4bc1b3f0968dd39c, 0xbb6dc91da77961bd,
		0xbed65cf21aa2ee98, 0xd0f2cbb02e3b67c7, 0x93536795e3a33e88, 0xa80c038ccd5ccec8,
		0xb8ad50c6f649af94, 0xbce192de8a85b8ea, 0x17d835b85bbb15f3, 0x2f2e6163076bcfad,
		0xde4daaaca71dc9a5, 0xa6a2506687956571, 0xad87a3535c49ef28, 0x32d892fad841c342,
		0x7127512f72f27cce, 0xa7f32346f95978e3, 0x12e0b01abb051238, 0x15e034d40fa197ae,
		0x314dffbe0815a3b4, 0x027990f029623981, 0xcadcd4e59ef40c4d, 0x9abfd8766a33735c,
		0x0e3ea96b5304a7d0, 0xad0c42d6fc585992, 0x187306c89bc215a9, 0xd4a60abcf3792b95,
		0xf935451de4f21df2, 0xa9538f0419755787, 0xdb9acddff56ca510, 0xd06c98cd5c0975eb,
	};
	uint8_t key[SIPHASH_KEY_LEN], msg[48];
	for (int i = 0; i < SIPHASH_KEY_LEN; i++)
		key[i] = (uint8_t)i;
	for (int i = 0; i < 48; i++)
		msg[i] = (uint8_t)i;
	for (size_t n = 0; n < 48; n++)
		assert_true(siphash24(key, msg, n) == expect[n]);
	/* The process key is random: not the reference key, stable within the process. */
	assert_true(siphash_process(msg, 0) != expect[0]);
	assert_true(siphash_process(msg, 15) == siphash_process(msg, 15));
}

/*
 * Guards: names longer than 63 bytes were tracked whole while PostgreSQL truncates them, so two
 * names the server sees as one ("already exists") were two here, and each name could be 30 KB.
 */
static void test_names_truncated_like_postgres(void **state)
{
	(void)state;
	struct stmt_map m;
	stmt_map_init(&m);
	char a[128], b[128], c[128];
	memset(a, 'n', 100);
	a[100] = 0;
	memcpy(b, a, sizeof(b));
	b[63] = 'X'; /* differs after the 63 bytes PostgreSQL keeps */
	memcpy(c, a, sizeof(c));
	c[62] = 'X'; /* differs within them */
	assert_true(stmt_map_put(&m, a, 1, NULL, 0, 1));
	struct stmt *s = stmt_map_find(&m, b);
	assert_non_null(s);
	assert_int_equal(strlen(s->name), STMT_NAME_MAX);
	assert_null(stmt_map_find(&m, c));
	assert_true(stmt_map_put(&m, b, 2, NULL, 0, 2)); /* replaces, as the server would refuse */
	assert_int_equal(m.count, 1);
	assert_int_equal(stmt_map_find(&m, a)->hash, 2);
	a[63] = 0; /* exactly the kept bytes */
	assert_non_null(stmt_map_find(&m, a));
	stmt_map_remove(&m, c);
	assert_int_equal(m.count, 1);
	stmt_map_remove(&m, b);
	assert_int_equal(m.count, 0);
	stmt_map_free(&m);
}

/* Guards: one client could keep 10,000 Parse copies of 30 KB each (about 300 MB). */
static void test_client_byte_budget(void **state)
{
	(void)state;
	struct stmt_map m;
	stmt_map_init(&m);
	static uint8_t msg[STMT_PARSE_MAX];
	memset(msg, 'x', sizeof(msg));
	char name[32];
	int kept = 0;
	for (;; kept++) {
		snprintf(name, sizeof(name), "s%d", kept);
		if (!stmt_map_has_room(&m, name, sizeof(msg)))
			break;
		assert_true(stmt_map_put(&m, name, 1, msg, sizeof(msg), 1));
	}
	assert_int_equal(kept, STMT_CLIENT_BYTES_MAX / sizeof(msg));
	assert_true(m.bytes <= STMT_CLIENT_BYTES_MAX);
	assert_false(stmt_map_put(&m, name, 1, msg, sizeof(msg), 1)); /* refused, not kept */
	assert_null(stmt_map_find(&m, name));
	assert_true(stmt_map_has_room(&m, name, 100)); /* a small one still fits */
	/* Replacing counts the old copy out; removing gives the room back. */
	assert_true(stmt_map_has_room(&m, "s0", sizeof(msg)));
	assert_true(stmt_map_put(&m, "s0", 2, msg, 10, 2));
	assert_int_equal(m.bytes, (size_t)(kept - 1) * sizeof(msg) + 10);
	stmt_map_remove(&m, "s0");
	stmt_map_remove(&m, "s1");
	assert_int_equal(m.bytes, (size_t)(kept - 2) * sizeof(msg));
	assert_true(stmt_map_has_room(&m, name, sizeof(msg)));
	stmt_map_clear(&m);
	assert_int_equal(m.bytes, 0);
	/* Server maps keep no copies and are not limited by bytes. */
	for (int i = 0; i < 3000; i++) {
		snprintf(name, sizeof(name), "t%d", i);
		assert_true(stmt_map_put(&m, name, 1, NULL, 0, 1));
	}
	assert_int_equal(m.bytes, 0);
	stmt_map_free(&m);
}

static uint32_t fnv1a(const char *s)
{
	uint64_t h = 1469598103934665603ull;
	for (; *s; s++) {
		h ^= (uint8_t)*s;
		h *= 1099511628211ull;
	}
	return (uint32_t)h;
}

/*
 * Guards: names were placed by unkeyed FNV-1a with linear probing, so a client could choose
 * 1,000 names with one home slot and make every lookup walk a 1,000-entry chain (hash flooding).
 */
static void test_keyed_name_hash_resists_flooding(void **state)
{
	(void)state;
	struct stmt_map m;
	stmt_map_init(&m);
	char name[32];
	int n = 0;
	for (uint32_t i = 0; n < 1000; i++) {
		snprintf(name, sizeof(name), "q%u", i);
		if ((fnv1a(name) & 4095) != 0)
			continue; /* an attacker's pick: same low 12 bits under FNV-1a */
		assert_true(stmt_map_put(&m, name, 1, NULL, 0, 1));
		n++;
	}
	assert_int_equal(m.count, 1000);
	assert_true(m.cap <= 4096);
	assert_true(stmt_map_longest_probe(&m) < 64);
	stmt_map_free(&m);
}

/* Guards: a Query without its NUL ("SHOW pool_x") was read past its end as a C string. */
static void test_msg_body_checks(void **state)
{
	(void)state;
	assert_true(msg_body_is_cstr((const uint8_t *)"select 1", 9));
	assert_false(msg_body_is_cstr((const uint8_t *)"select 1", 8));
	assert_false(msg_body_is_cstr((const uint8_t *)"select 1\0x", 11));
	assert_false(msg_body_is_cstr((const uint8_t *)"", 0));
	assert_true(msg_body_is_cstr((const uint8_t *)"", 1));
	static const uint8_t ok[] = "s1\0select $1\0\0\1\0\0\0\x17";
	assert_true(msg_body_is_parse(ok, sizeof(ok) - 1));
	assert_false(msg_body_is_parse(ok, sizeof(ok) - 2));		   /* short type list */
	assert_false(msg_body_is_parse(ok, sizeof(ok)));		   /* trailing byte */
	assert_false(msg_body_is_parse((const uint8_t *)"s1\0select", 9)); /* no NUL */
	assert_true(msg_body_is_parse((const uint8_t *)"\0select 1\0\0\0", 12));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_put_find_replace),
		cmocka_unit_test(test_remove_keeps_probe_chains),
		cmocka_unit_test(test_oldest),
		cmocka_unit_test(test_hash_separates_text),
		cmocka_unit_test(test_siphash_reference_vectors),
		cmocka_unit_test(test_names_truncated_like_postgres),
		cmocka_unit_test(test_client_byte_budget),
		cmocka_unit_test(test_keyed_name_hash_resists_flooding),
		cmocka_unit_test(test_msg_body_checks),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
