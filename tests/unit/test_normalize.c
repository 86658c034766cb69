/*
 * Statement normalisation (route/normalize.h): constants replaced, comments dropped, hints kept,
 * names untouched, unusable text refused. The classification equivalence over the whole table
 * is in test_classify.c (test_table_normalized).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "route/normalize.h"

static const struct {
	const char *in;
	const char *out; /* NULL: must be refused */
} cases[] = {
	{ "SELECT abalance FROM pgbench_accounts WHERE aid = 4711;",
	  "SELECT abalance FROM pgbench_accounts WHERE aid = 0;" },
	{ "select * from t where a = 'x''y' and b = 1.5e3",
	  "select * from t where a = '' and b = 0" },
	{ "select E'it\\'s', B'101', X'ff', N'n', U&'d\\0061t'",
	  "select E'', B'', X'', N'', U&''" },
	{ "select $$a ' b$$, $tag$ $$ x $tag$", "select '', ''" },
	{ "select $1, $2::int from t1", "select $1, $2::int from t1" },
	{ "select \"col 1\", \"a\"\"b\" from \"T'x\"",
	  "select \"col 1\", \"a\"\"b\" from \"T'x\"" },
	{ "/*+ pgrelay: primary */ select 1", "/*+ pgrelay: primary */ select 0" },
	{ "select /* 42 */ 1 -- trailing 7\n", "select   0  \n" },
	/* PostgreSQL ends a -- comment at \r too: what follows is SQL (found by fuzz_classify). */
	{ "select 1 -- c\rnextval('s')", "select 0  \rnextval('')" },
	{ "/* tracing 123 */ select 2", "  select 0" },
	{ "select nextval('seq'), t2.c3, a$1 from t2", "select nextval(''), t2.c3, a$1 from t2" },
	{ "select .5, 5., 1..2", "select 0, 0, 0. 0" },
	{ "with w as (delete from t where id = 3 returning *) select * from w",
	  "with w as (delete from t where id = 0 returning *) select * from w" },
	{ "insert into t values (1, 'a'), (2, 'b')", "insert into t values (0, ''), (0, '')" },
	{ "(select 1) union (select 2)", "(select 0) union (select 0)" },
	{ "select 'unterminated", NULL },
	{ "select \"unterminated", NULL },
	{ "select $x$ unterminated", NULL },
	{ "select /* unterminated", NULL },
	{ "EXPLAIN (ANALYZE 1) DELETE FROM t", NULL },
	{ "COPY t TO '/tmp/x'", NULL },
	{ "SET search_path = 'a'", NULL },
	{ "BEGIN", NULL },
	{ "select U&'d!0061t' UESCAPE '!'", NULL },
	{ "select u&\"d!0061t\" uescape '!' from t", NULL },
	/* Only the keyword UESCAPE stops it, not the word in a name, a literal or a comment. */
	{ "select myuescape, 'uescape' from t /* uescape */ where a = 1",
	  "select myuescape, '' from t   where a = 0" },
	/* What the session effects depend on survives (classify.h CLASSIFY_SESSION_STATE and
	 * NODE_LOCAL): function and relation names, the keyword TRUE of set_config, pg_temp. */
	{ "select set_config('a', 'b', true), pg_advisory_lock(42)",
	  "select set_config('', '', true), pg_advisory_lock(0)" },
	{ "select * from pg_temp.t, pg_stat_activity where current_schema() = 'x'",
	  "select * from pg_temp.t, pg_stat_activity where current_schema() = ''" },
	{ "/* /* nested */ LISTEN x */ select 1", "  select 0" },
	{ "select 1 into temp\ntable t", "select 0 into temp\ntable t" },
	{ "LISTEN x", NULL },
	{ "DECLARE c CURSOR WITH HOLD FOR SELECT 1", NULL },
	/* A literal's prefix letter counts only standing alone; right after a token handled on its
	 * own (a number, parameter, dollar-quoted string, quoted name, paren) it does. */
	{ "select(E'a\\'b')", "select(E'')" },
	{ "select xE'a\\', E'a\\'', 1e'x', $1b'1', a1n'x', \"q\"x'1'",
	  "select xE '', E'', 0e'', $1b'', a1n '', \"q\"x''" },
	{ "E'x'", NULL },
	/* Digits and '$' after a letter belong to the name; after a number, parameter or
	 * dollar-quoted string they start a new token. */
	{ "select t1, a$1, $1a2, $$x$$1, 1$$y$$, a$$b$$ from t",
	  "select t1, a$1, $1a2, ''0, 0 '', a$$b$$ from t" },
	{ "select au&'x', u&'y', 1u&'z'", "select au&'', U&'', 0U&''" },
	{ "select u&'x' uescape '!'", NULL },
	/* UESCAPE is syntax only after U&'' or U&"": without either, it is a name like any other.
	 * With one, the word anywhere refuses the text (the look for it is a plain text search). */
	{ "select uescape from t where a = 1", "select uescape from t where a = 0" },
	{ "select U&'x', 'uescape'", NULL },
	/* A hint may follow blanks and comments, nothing else. */
	{ "  \n\t/*+ hint */ select 1", "  \n\t/*+ hint */ select 0" },
	{ "/* c */ /*+ h */ select 1", "  /*+ h */ select 0" },
	{ "-- c\n/*+ h */ select 1", " \n/*+ h */ select 0" },
	{ "select /*+ h */ 1", "select   0" },
};

static void test_cases(void **state)
{
	(void)state;
	char out[256];
	size_t len;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		bool ok = normalize_sql(cases[i].in, strlen(cases[i].in), out, sizeof(out), &len);
		if (!cases[i].out) {
			if (ok)
				fail_msg("case %zu accepted: %s -> %s", i, cases[i].in, out);
			continue;
		}
		if (!ok)
			fail_msg("case %zu refused: %s", i, cases[i].in);
		if (strcmp(out, cases[i].out) != 0 || len != strlen(out))
			fail_msg("case %zu: %s\n   got: %s\n  want: %s", i, cases[i].in, out,
				 cases[i].out);
	}
}

static void test_values_share_one_text(void **state)
{
	(void)state;
	char a[128], b[128];
	size_t la, lb;
	const char *x = "SELECT abalance FROM pgbench_accounts WHERE aid = 17";
	const char *y = "SELECT abalance FROM pgbench_accounts WHERE aid = 998877";
	assert_true(normalize_sql(x, strlen(x), a, sizeof(a), &la));
	assert_true(normalize_sql(y, strlen(y), b, sizeof(b), &lb));
	assert_string_equal(a, b);
}

static void test_bounds(void **state)
{
	(void)state;
	char out[8];
	size_t len;
	const char *s = "select 12345678";
	assert_false(normalize_sql(s, strlen(s), out, sizeof(out), &len)); /* does not fit */
	const char nul[] = "select 1\0; delete";
	assert_false(normalize_sql(nul, sizeof(nul) - 1, out, sizeof(out), &len));
}

/* The text ends at len, and what follows it in memory is not looked at (no NUL sentinel). */
static void test_cut_text(void **state)
{
	(void)state;
	static const struct {
		const char *text;
		size_t len;
		const char *out; /* NULL: must be refused */
	} cuts[] = {
		{ "select 1'", 8, "select 0" },
		{ "select a--x", 9, "select a-" },
		{ "select /* x */", 8, "select /" },
		{ "select 1e5", 9, "select 0e" },
		{ "select 1.5", 9, "select 0" },
		{ "select $$x$$", 8, "select $" },
		{ "select E'x'", 8, "select E" },
		{ "select u&'x'", 9, "select u&" },
		{ "select t1", 8, "select t" },
		{ "select 'abc'", 10, NULL },
		{ "select \"abc\"", 10, NULL },
		{ "select 1234 from t_where_a_is_long", 9, "select 0" },
	};
	char out[64];
	size_t len;
	for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
		bool ok = normalize_sql(cuts[i].text, cuts[i].len, out, sizeof(out), &len);
		if (!cuts[i].out) {
			if (ok)
				fail_msg("cut %zu accepted: %s -> %s", i, cuts[i].text, out);
			continue;
		}
		if (!ok)
			fail_msg("cut %zu refused: %s", i, cuts[i].text);
		if (strcmp(out, cuts[i].out) != 0 || len != strlen(out))
			fail_msg("cut %zu: %s\n   got: %s\n  want: %s", i, cuts[i].text, out,
				 cuts[i].out);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cases),
		cmocka_unit_test(test_values_share_one_text),
		cmocka_unit_test(test_bounds),
		cmocka_unit_test(test_cut_text),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
