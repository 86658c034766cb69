/*
 * SQL classifier: data/classify.tsv (route, SQL, optional rule and flags per line) run without and
 * with the cache, plus tests of the cache on its own (hits, LRU eviction, bound, exact keys), of
 * the configured function lists, of object names, and of the callback's use.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "route/classify.h"
#include "route/normalize.h"

#define TSV_PATH "data/classify.tsv"

/* ---- Fake catalog --------------------------------------------------------------------------- */

struct fake_catalog {
	unsigned calls; /* how many lookups the classifier made */
};

static int fake_volatility(void *arg, const char *schema, const char *name)
{
	static const struct {
		const char *schema; /* NULL: any schema */
		const char *name;
		int v;
	} table[] = {
		{ NULL, "my_stable_func", 's' },
		{ NULL, "my_immutable_func", 'i' },
		{ NULL, "my_volatile_func", 'v' },
		{ NULL, "random", 'v' },
		{ NULL, "pg_sleep", 'v' },
		{ NULL, "nextval", 'v' },
		{ NULL, "now", 's' },
		{ "app", "qualified_stable", 's' },
		{ NULL, "ro_volatile", 'v' },
		{ NULL, "ro_func", 'v' },
		{ NULL, "my_stable_writer", 's' },
		{ NULL, "log_stable", 's' },
	};
	struct fake_catalog *cat = arg;

	cat->calls++;
	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
		if (strcmp(table[i].name, name) != 0)
			continue;
		if (table[i].schema && (!schema || strcmp(table[i].schema, schema) != 0))
			continue;
		return table[i].v;
	}
	return 0;
}

static const char *const read_only_list[] = { "ro_volatile", "app.ro_func" };
static const char *const write_list[] = { "my_stable_writer", "audit.log_stable" };

static struct classifier *make_classifier(struct fake_catalog *cat, size_t cache_entries)
{
	struct classify_options o = {
		.read_only_functions = read_only_list,
		.n_read_only_functions = 2,
		.write_functions = write_list,
		.n_write_functions = 2,
		.volatility = fake_volatility,
		.volatility_arg = cat,
		.cache_entries = cache_entries,
	};
	struct classifier *c = classify_new(&o);

	assert_non_null(c);
	return c;
}

/* ---- The table ------------------------------------------------------------------------------ */

struct tsv_case {
	unsigned line;
	enum classify_route route;
	char *sql;   /* owned, unescaped */
	char *rule;  /* owned, NULL when not checked */
	char *flags; /* owned, NULL when not checked */
	/* owned, NULL when not checked; "-" expects "". Then "!flag,..." lists flags that must be
	 * absent: the fifth column is "object" or "object!flag1,flag2". */
	char *object;
	char *absent;
};

static const struct {
	const char *name;
	uint32_t bit;
} flag_names[] = {
	{ "write", CLASSIFY_WRITE },
	{ "txn_begin", CLASSIFY_TXN_BEGIN },
	{ "txn_end", CLASSIFY_TXN_END },
	{ "read_only", CLASSIFY_TXN_READ_ONLY },
	{ "read_write", CLASSIFY_TXN_READ_WRITE },
	{ "serializable", CLASSIFY_TXN_SERIALIZABLE },
	{ "savepoint", CLASSIFY_TXN_SAVEPOINT },
	{ "2pc", CLASSIFY_TXN_2PC },
	{ "set", CLASSIFY_SET },
	{ "set_local", CLASSIFY_SET_LOCAL },
	{ "session_reset", CLASSIFY_SESSION_RESET },
	{ "cursor", CLASSIFY_CURSOR_DECLARE },
	{ "prepare", CLASSIFY_PREPARE },
	{ "multi", CLASSIFY_MULTI },
	{ "parse_error", CLASSIFY_PARSE_ERROR },
	{ "empty", CLASSIFY_EMPTY },
	{ "hint", CLASSIFY_HINT },
	{ "session_state", CLASSIFY_SESSION_STATE },
	{ "set_tracked", CLASSIFY_SET_TRACKED },
	{ "discard_all", CLASSIFY_DISCARD_ALL },
	{ "reset_all", CLASSIFY_RESET_ALL },
	{ "deallocate", CLASSIFY_DEALLOCATE },
	{ "cursor_hold", CLASSIFY_CURSOR_HOLD },
	{ "cursor_close", CLASSIFY_CURSOR_CLOSE },
	{ "node_local", CLASSIFY_NODE_LOCAL },
	{ "admin", CLASSIFY_ADMIN },
};

static bool parse_route(const char *s, enum classify_route *out)
{
	static const enum classify_route all[] = { ROUTE_PRIMARY, ROUTE_ANY, ROUTE_ALL,
						   ROUTE_FOLLOW };

	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
		if (strcmp(s, classify_route_name(all[i])) == 0) {
			*out = all[i];
			return true;
		}
	}
	return false;
}

/* The flag bits named in a comma list ("-" is none); fails the test on an unknown name. */
static uint32_t parse_flags(const char *list, unsigned line)
{
	uint32_t bits = 0;
	char buf[256];

	if (strcmp(list, "-") == 0)
		return 0;
	snprintf(buf, sizeof(buf), "%s", list);
	for (char *save, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		size_t i = 0;

		while (i < sizeof(flag_names) / sizeof(flag_names[0]) &&
		       strcmp(flag_names[i].name, tok) != 0)
			i++;
		if (i == sizeof(flag_names) / sizeof(flag_names[0]))
			fail_msg("%s:%u: unknown flag '%s'", TSV_PATH, line, tok);
		bits |= flag_names[i].bit;
	}
	return bits;
}

/* \n, \t, \\ escapes, in place. */
static void unescape(char *s)
{
	char *d = s;

	for (; *s; s++) {
		if (*s == '\\' && (s[1] == 'n' || s[1] == 't' || s[1] == '\\')) {
			s++;
			*d++ = *s == 'n' ? '\n' : *s == 't' ? '\t' : '\\';
		} else {
			*d++ = *s;
		}
	}
	*d = '\0';
}

static char *dup_or_null(const char *s)
{
	char *d;

	if (!s || !*s)
		return NULL;
	d = strdup(s);
	assert_non_null(d);
	return d;
}

/* Reads the whole table; *n gets the count. */
static struct tsv_case *load_tsv(size_t *n)
{
	FILE *f = fopen(TSV_PATH, "r");
	struct tsv_case *cases = NULL;
	size_t cap = 0;
	char line[4096];
	unsigned lineno = 0;

	if (!f)
		fail_msg("cannot open %s (tests run with workdir tests/unit)", TSV_PATH);
	*n = 0;
	while (fgets(line, sizeof(line), f)) {
		char *fields[5] = { NULL, NULL, NULL, NULL, NULL };
		char *p = line;
		size_t nf = 0;
		struct tsv_case *tc;

		lineno++;
		line[strcspn(line, "\n")] = '\0';
		if (line[0] == '#' || line[0] == '\0')
			continue;
		while (nf < 5) {
			fields[nf++] = p;
			p = strchr(p, '\t');
			if (!p)
				break;
			*p++ = '\0';
		}
		if (nf < 2)
			fail_msg("%s:%u: need at least route TAB sql", TSV_PATH, lineno);
		if (*n == cap) {
			cap = cap ? 2 * cap : 256;
			cases = realloc(cases, cap * sizeof(*cases));
			assert_non_null(cases);
		}
		tc = &cases[(*n)++];
		tc->line = lineno;
		if (!parse_route(fields[0], &tc->route))
			fail_msg("%s:%u: bad route '%s'", TSV_PATH, lineno, fields[0]);
		unescape(fields[1]);
		tc->sql = strdup(fields[1]);
		assert_non_null(tc->sql);
		tc->rule = dup_or_null(fields[2]);
		tc->flags = dup_or_null(fields[3]);
		tc->object = dup_or_null(fields[4]);
		tc->absent = NULL;
		if (tc->object) {
			char *bang = strchr(tc->object, '!');

			if (bang) {
				*bang = '\0';
				tc->absent = dup_or_null(bang + 1);
				if (tc->object[0] == '\0') {
					free(tc->object);
					tc->object = NULL;
				}
			}
		}
	}
	fclose(f);
	return cases;
}

static void free_tsv(struct tsv_case *cases, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(cases[i].sql);
		free(cases[i].rule);
		free(cases[i].flags);
		free(cases[i].object);
		free(cases[i].absent);
	}
	free(cases);
}

/* Checks one result against its line; returns false (and prints why) on a mismatch. */
static bool check_case(const struct tsv_case *tc, const struct classify_result *r)
{
	bool ok = true;

	if (r->route != tc->route) {
		print_error("%s:%u: route %s, expected %s (rule '%s', object '%s'): %s\n", TSV_PATH,
			    tc->line, classify_route_name(r->route), classify_route_name(tc->route),
			    r->rule, r->object, tc->sql);
		ok = false;
	}
	if (tc->rule && strcmp(tc->rule, r->rule) != 0) {
		print_error("%s:%u: rule '%s', expected '%s': %s\n", TSV_PATH, tc->line, r->rule,
			    tc->rule, tc->sql);
		ok = false;
	}
	if (tc->flags) {
		uint32_t want = parse_flags(tc->flags, tc->line);

		if (want == 0 ? r->flags != 0 : (r->flags & want) != want) {
			print_error("%s:%u: flags 0x%x, expected %s: %s\n", TSV_PATH, tc->line,
				    r->flags, tc->flags, tc->sql);
			ok = false;
		}
	}
	if (tc->object && strcmp(tc->object, "-") == 0
		    ? r->object[0] != '\0'
		    : tc->object && strcmp(tc->object, r->object) != 0) {
		print_error("%s:%u: object '%s', expected '%s': %s\n", TSV_PATH, tc->line,
			    r->object, tc->object, tc->sql);
		ok = false;
	}
	if (tc->absent && (r->flags & parse_flags(tc->absent, tc->line))) {
		print_error("%s:%u: flags 0x%x, none of %s expected: %s\n", TSV_PATH, tc->line,
			    r->flags, tc->absent, tc->sql);
		ok = false;
	}
	if (!r->effect || ((r->flags & CLASSIFY_SESSION_STATE) != 0) != (r->effect[0] != '\0')) {
		print_error("%s:%u: effect '%s' and flags 0x%x disagree: %s\n", TSV_PATH, tc->line,
			    r->effect ? r->effect : "(null)", r->flags, tc->sql);
		ok = false;
	}
	return ok;
}

static void run_table(size_t cache_entries)
{
	struct fake_catalog cat = { 0 };
	struct classifier *c = make_classifier(&cat, cache_entries);
	size_t n, failures = 0;
	struct tsv_case *cases = load_tsv(&n);
	struct classify_stats st;

	assert_true(n >= 200);
	for (int pass = 0; pass < (cache_entries ? 2 : 1); pass++) {
		for (size_t i = 0; i < n; i++) {
			struct classify_result r;

			memset(&r, 0xa5, sizeof(r)); /* every field must be written */
			classify_sql(c, cases[i].sql, strlen(cases[i].sql), &r);
			assert_non_null(r.rule);
			assert_non_null(memchr(r.object, '\0', sizeof(r.object)));
			if (!check_case(&cases[i], &r))
				failures++;
		}
	}
	classify_get_stats(c, &st);
	if (cache_entries) {
		/* Every text of the second pass is cached (the table has no duplicates). */
		assert_int_equal(st.hits, n);
		assert_int_equal(st.misses, n);
	} else {
		assert_int_equal(st.hits, 0);
		assert_int_equal(st.misses, n);
	}
	print_message("%zu statements, %zu failures\n", n, failures);
	free_tsv(cases, n);
	classify_free(c);
	assert_int_equal(failures, 0);
}

/*
 * The router classifies normalised text (constants replaced, comments dropped; normalize.h): every
 * line of the table must get the same answer from its normalised form.
 */
static void test_table_normalized(void **state)
{
	(void)state;
	struct fake_catalog cat = { 0 };
	struct classifier *c = make_classifier(&cat, 0);
	size_t n, failures = 0, normalized = 0;
	struct tsv_case *cases = load_tsv(&n);
	static char buf[65536];
	for (size_t i = 0; i < n; i++) {
		struct classify_result r;
		size_t len;
		const char *sql = cases[i].sql;
		if (normalize_sql(sql, strlen(sql), buf, sizeof(buf), &len)) {
			normalized++;
			sql = buf;
		}
		classify_sql(c, sql, strlen(sql), &r);
		if (!check_case(&cases[i], &r)) {
			print_message("  normalised: %s\n", sql);
			failures++;
		}
	}
	print_message("%zu statements, %zu normalised, %zu failures\n", n, normalized, failures);
	free_tsv(cases, n);
	classify_free(c);
	assert_int_equal(failures, 0);
}

/*
 * The router's path (classify_sql_raw(): raw key, then normalised key, then parse): three rounds
 * over the table, so every line is seen as a miss, then as a raw text admitted on its second
 * sighting, then as a raw hit; each answer must match the line.
 */
static void test_table_raw(void **state)
{
	(void)state;
	struct fake_catalog cat = { 0 };
	struct classifier *c = make_classifier(&cat, 4096);
	size_t n, failures = 0;
	struct tsv_case *cases = load_tsv(&n);
	static char scratch[16385];
	struct classify_stats st;

	for (int pass = 0; pass < 3; pass++) {
		for (size_t i = 0; i < n; i++) {
			struct classify_result r;

			memset(&r, 0xa5, sizeof(r));
			classify_sql_raw(c, cases[i].sql, strlen(cases[i].sql), scratch,
					 sizeof(scratch), &r);
			if (!check_case(&cases[i], &r))
				failures++;
		}
	}
	classify_get_stats(c, &st);
	print_message("%zu statements x 3, %zu failures, %llu hits (%llu raw), %llu misses\n", n,
		      failures, (unsigned long long)st.hits, (unsigned long long)st.raw_hits,
		      (unsigned long long)st.misses);
	/* The third pass is all raw hits; the first all misses except texts whose normalised
	 * form an earlier line already had. */
	assert_true(st.raw_hits >= n);
	assert_int_equal(st.hits + st.misses, 3 * n);
	free_tsv(cases, n);
	classify_free(c);
	assert_int_equal(failures, 0);
}

static void test_table_uncached(void **state)
{
	(void)state;
	run_table(0);
}

static void test_table_cached(void **state)
{
	(void)state;
	run_table(1024);
}

/* ---- Objects, flags, inner routes ----------------------------------------------------------- */

static void classify_one(struct classifier *c, const char *sql, struct classify_result *r)
{
	classify_sql(c, sql, strlen(sql), r);
}

static void test_objects(void **state)
{
	static const struct {
		const char *sql;
		const char *object;
	} cases[] = {
		{ "DECLARE cur1 CURSOR FOR SELECT 1", "cur1" },
		{ "FETCH 5 FROM \"Cur 2\"", "Cur 2" },
		{ "MOVE NEXT IN cur1", "cur1" },
		{ "CLOSE cur1", "cur1" },
		{ "CLOSE ALL", "" },
		{ "PREPARE q1 AS SELECT 1", "q1" },
		{ "EXECUTE q1", "q1" },
		{ "DEALLOCATE q1", "q1" },
		{ "DEALLOCATE ALL", "" },
		{ "SELECT nextval('s')", "nextval" },
		{ "SELECT pg_catalog.setval('s', 1)", "pg_catalog.setval" },
		{ "SELECT x.my_volatile_func()", "x.my_volatile_func" },
		{ "SET search_path = a", "search_path" },
		{ "SAVEPOINT sp", "sp" },
		{ "PREPARE TRANSACTION 'g1'", "g1" },
		{ "SELECT 1", "" },
	};
	struct fake_catalog cat = { 0 };
	struct classifier *c = make_classifier(&cat, 0);

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct classify_result r;

		classify_one(c, cases[i].sql, &r);
		if (strcmp(r.object, cases[i].object) != 0)
			fail_msg("%s: object '%s', expected '%s'", cases[i].sql, r.object,
				 cases[i].object);
	}
	classify_free(c);
}

/* SHOW pool_backend_stats' kind: the parse tree of the first statement, whatever its text. */
static void test_command_kind(void **state)
{
	static const struct {
		const char *sql;
		uint8_t cmd;
	} cases[] = {
		{ "INSERT INTO t VALUES (1)", CLASSIFY_CMD_INSERT },
		{ "/* c */ update t set a = 1", CLASSIFY_CMD_UPDATE },
		{ "(DELETE FROM t)", CLASSIFY_CMD_OTHER }, /* a parse error */
		{ "DELETE FROM t WHERE a = 1; SELECT 1", CLASSIFY_CMD_DELETE },
		{ "SELECT 1; DELETE FROM t", CLASSIFY_CMD_OTHER },
		{ "WITH x AS (INSERT INTO t VALUES (1) RETURNING a) SELECT * FROM x",
		  CLASSIFY_CMD_OTHER },
		{ "CREATE TABLE t (a int)", CLASSIFY_CMD_DDL },
		{ "CREATE INDEX ON t (a)", CLASSIFY_CMD_DDL },
		{ "CREATE VIEW v AS SELECT 1", CLASSIFY_CMD_DDL },
		{ "ALTER TABLE t ADD b int", CLASSIFY_CMD_DDL },
		{ "ALTER TABLE t RENAME TO u", CLASSIFY_CMD_DDL },
		{ "DROP TABLE t", CLASSIFY_CMD_DDL },
		{ "TRUNCATE t", CLASSIFY_CMD_DDL },
		{ "COMMENT ON TABLE t IS 'x'", CLASSIFY_CMD_DDL },
		{ "GRANT SELECT ON t TO u", CLASSIFY_CMD_DDL },
		{ "REVOKE SELECT ON t FROM u", CLASSIFY_CMD_DDL },
		{ "SELECT * FROM t", CLASSIFY_CMD_OTHER },
		{ "EXPLAIN ANALYZE INSERT INTO t VALUES (1)", CLASSIFY_CMD_OTHER },
		{ "BEGIN", CLASSIFY_CMD_OTHER },
		{ "SET a = 1", CLASSIFY_CMD_OTHER },
		{ "VACUUM t", CLASSIFY_CMD_OTHER },
		{ "", CLASSIFY_CMD_OTHER },
	};
	struct fake_catalog cat = { 0 };
	struct classifier *c = make_classifier(&cat, 0);

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct classify_result r;

		classify_one(c, cases[i].sql, &r);
		if (r.cmd != cases[i].cmd)
			fail_msg("%s: kind %u, expected %u", cases[i].sql, r.cmd, cases[i].cmd);
	}
	classify_free(c);
}

/*
 * classify_plain_command: what it proves plain, and what it leaves to the classifier; every
 * text it calls plain (these and the whole table) has no session effect, is no admin statement
 * and is the same command in the full classification.
 */
static void check_plain_agrees(struct classifier *c, const char *sql, size_t *plain)
{
	uint8_t cmd = classify_plain_command(sql, strlen(sql));
	struct classify_result r;
	if (cmd == CLASSIFY_CMD_NONE)
		return;
	(*plain)++;
	classify_sql(c, sql, strlen(sql), &r);
	if (r.flags & (CLASSIFY_EFFECT_MASK | CLASSIFY_MULTI | CLASSIFY_HINT))
		fail_msg("%s: called plain, but the classifier sets flags %#x", sql, r.flags);
	if (!(r.flags & CLASSIFY_PARSE_ERROR) && r.cmd != cmd)
		fail_msg("%s: plain kind %u, classifier %u", sql, cmd, r.cmd);
	/* A plain write: the route and flags the session layer gives it without the classifier. */
	uint8_t w = classify_plain_write(sql, strlen(sql));
	if (w != (cmd == CLASSIFY_CMD_OTHER ? CLASSIFY_CMD_NONE : cmd))
		fail_msg("%s: plain write %u, plain command %u", sql, w, cmd);
	if (w != CLASSIFY_CMD_NONE && !(r.flags & CLASSIFY_PARSE_ERROR) &&
	    (r.route != ROUTE_PRIMARY ||
	     (r.flags & ~(uint32_t)CLASSIFY_NODE_LOCAL) != CLASSIFY_WRITE ||
	     strcmp(r.rule, "write statement") != 0))
		fail_msg("%s: a plain write, but the classifier says %s, flags %#x, rule %s", sql,
			 classify_route_name(r.route), r.flags, r.rule);
}

static void test_plain_command(void **state)
{
	static const struct {
		const char *sql;
		uint8_t cmd;
	} cases[] = {
		{ "SELECT abalance FROM pgbench_accounts WHERE aid = 42", CLASSIFY_CMD_OTHER },
		{ "  update t set a = a + -5 where b = 'x';  \n", CLASSIFY_CMD_UPDATE },
		{ "UPDATE pgbench_tellers SET tbalance = tbalance + 1 WHERE tid = 2;",
		  CLASSIFY_CMD_UPDATE },
		{ "DELETE FROM t WHERE a = $1 RETURNING *", CLASSIFY_CMD_DELETE },
		{ "INSERT INTO t SELECT * FROM u", CLASSIFY_CMD_INSERT },
		{ "select a/2 from t", CLASSIFY_CMD_OTHER },
		{ "SELECT interval, point_into FROM t", CLASSIFY_CMD_OTHER },
		{ "SELECT 1\tINTO\rx", CLASSIFY_CMD_NONE },
		/* Function calls, INTO, comments, several statements: the classifier decides. */
		{ "SELECT pg_advisory_lock(1)", CLASSIFY_CMD_NONE },
		{ "SELECT set_config('a.b', 'c', false)", CLASSIFY_CMD_NONE },
		{ "SELECT * INTO TEMP t FROM u", CLASSIFY_CMD_NONE },
		{ "select * into t from u", CLASSIFY_CMD_NONE },
		{ "INSERT INTO t VALUES (1)", CLASSIFY_CMD_INSERT },
		{ "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 2, 3, -4, "
		  "CURRENT_TIMESTAMP);",
		  CLASSIFY_CMD_INSERT },
		{ "insert into s.\"T(\" (\"a\",b) values(1,'x'),  ($1, (2)) returning *",
		  CLASSIFY_CMD_INSERT },
		{ "INSERT INTO t VALUES (now())", CLASSIFY_CMD_NONE },
		{ "INSERT INTO t VALUES (1, pg_advisory_lock (1))", CLASSIFY_CMD_NONE },
		{ "INSERT INTO t VALUES (1, \"set_config\"('a', 'b', false))", CLASSIFY_CMD_NONE },
		{ "INSERT INTO t SELECT pg_catalog.set_config('a', 'b', false)",
		  CLASSIFY_CMD_NONE },
		{ "INSERT INTO t (a) SELECT (x) FROM u WHERE b IN (1)", CLASSIFY_CMD_NONE },
		{ "INSERT INTO t VALUES (1) ON CONFLICT (a) DO NOTHING", CLASSIFY_CMD_NONE },
		{ "INSERT INTO \"a\"\"b\" VALUES (1)", CLASSIFY_CMD_NONE },
		{ "INSERT INTO t VALUES (1); SELECT 2", CLASSIFY_CMD_NONE },
		{ "INSERT t VALUES 1", CLASSIFY_CMD_NONE },
		{ "SELECT 1; SELECT 2", CLASSIFY_CMD_NONE },
		{ "SELECT 1;;", CLASSIFY_CMD_NONE },
		{ "SELECT 1 -- c", CLASSIFY_CMD_NONE },
		{ "SELECT 1 /* c */", CLASSIFY_CMD_NONE },
		{ "/*+ standby */ SELECT 1", CLASSIFY_CMD_NONE },
		{ "SELECT ';'", CLASSIFY_CMD_NONE },
		{ "(SELECT 1)", CLASSIFY_CMD_NONE },
		{ "selected", CLASSIFY_CMD_NONE },
		{ "select_x FROM t", CLASSIFY_CMD_NONE },
		{ "SHOW pool_nodes", CLASSIFY_CMD_NONE },
		{ "WITH x AS (SELECT 1) SELECT * FROM x", CLASSIFY_CMD_NONE },
		{ "BEGIN", CLASSIFY_CMD_NONE },
		{ "", CLASSIFY_CMD_NONE },
	};
	struct fake_catalog cat = { 0 };
	struct classifier *c = make_classifier(&cat, 0);
	size_t plain = 0, n;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint8_t cmd = classify_plain_command(cases[i].sql, strlen(cases[i].sql));
		if (cmd != cases[i].cmd)
			fail_msg("%s: plain kind %u, expected %u", cases[i].sql, cmd, cases[i].cmd);
		check_plain_agrees(c, cases[i].sql, &plain);
	}
	/* A byte that needs a look at every offset of texts of every length up to 40 bytes (the
	 * scan goes 16 bytes at a time, the last 16 overlapping): never missed. */
	static const char *const bad[] = { "(", ";x", "--", "/*", " into " };
	for (size_t total = 8; total <= 40; total++) {
		for (size_t b = 0; b < sizeof(bad) / sizeof(bad[0]); b++) {
			size_t blen = strlen(bad[b]);
			for (size_t at = 7; at + blen <= total; at++) {
				char text[48];
				memset(text, 'a', total);
				memcpy(text, "SELECT ", 7);
				memcpy(text + at, bad[b], blen);
				text[total] = 0;
				if (classify_plain_command(text, total) != CLASSIFY_CMD_NONE)
					fail_msg("\"%s\" proved plain", text);
			}
			char text[48];
			memset(text, 'a', total);
			memcpy(text, "SELECT ", 7);
			text[total] = 0;
			assert_int_equal(classify_plain_command(text, total), CLASSIFY_CMD_OTHER);
		}
	}
	struct tsv_case *table = load_tsv(&n);
	size_t plain_before = plain;
	for (size_t i = 0; i < n; i++)
		check_plain_agrees(c, table[i].sql, &plain);
	print_message("%zu of %zu table statements proved plain\n", plain - plain_before, n);
	free_tsv(table, n);
	classify_free(c);
}

static void test_object_long_names(void **state)
{
	char sql[512], name[101], expect[2 * 63 + 2];
	struct classify_result r;
	struct classifier *c = classify_new(NULL);

	(void)state;
	assert_non_null(c);
	memset(name, 'f', sizeof(name) - 1);
	name[sizeof(name) - 1] = '\0';
	/* The parser truncates identifiers to 63 bytes, so schema.name always fits. */
	snprintf(sql, sizeof(sql), "SELECT \"%s\".\"%s\"()", name, name);
	classify_one(c, sql, &r);
	assert_int_equal(r.route, ROUTE_PRIMARY);
	assert_string_equal(r.rule, "unknown function");
	memset(expect, 'f', sizeof(expect) - 1);
	expect[63] = '.';
	expect[sizeof(expect) - 1] = '\0';
	assert_string_equal(r.object, expect);
	classify_free(c);
}

static void test_prepare_inner_route(void **state)
{
	struct fake_catalog cat = { 0 };
	struct classifier *c = make_classifier(&cat, 0);
	struct classify_result r;

	(void)state;
	classify_one(c, "PREPARE r AS SELECT * FROM t", &r);
	assert_int_equal(r.route, ROUTE_ALL);
	assert_int_equal(r.inner_route, ROUTE_ANY);
	assert_true(r.flags & CLASSIFY_PREPARE);
	assert_false(r.flags & CLASSIFY_WRITE);

	classify_one(c, "PREPARE w (int) AS UPDATE t SET a = $1", &r);
	assert_int_equal(r.route, ROUTE_ALL);
	assert_int_equal(r.inner_route, ROUTE_PRIMARY);
	assert_false(r.flags & CLASSIFY_WRITE);

	classify_one(c, "PREPARE v AS SELECT my_volatile_func()", &r);
	assert_int_equal(r.inner_route, ROUTE_PRIMARY);

	classify_one(c, "SELECT 1", &r);
	assert_int_equal(r.inner_route, ROUTE_ANY);
	classify_one(c, "/*+ pgrelay: primary */ SELECT 1", &r);
	assert_int_equal(r.inner_route, ROUTE_PRIMARY);
	classify_free(c);
}

/* ---- Function lists and the callback -------------------------------------------------------- */

static enum classify_route route_of(struct classifier *c, const char *sql)
{
	struct classify_result r;

	classify_one(c, sql, &r);
	return r.route;
}

static void test_function_lists(void **state)
{
	static const char *const ro[] = { "Report_Total", "stats.refresh_view", "" };
	static const char *const wr[] = { "AUDIT.Touch", "bump" };
	struct classify_options o = {
		.read_only_functions = ro,
		.n_read_only_functions = 3,
		.write_functions = wr,
		.n_write_functions = 2,
	};
	struct classifier *c = classify_new(&o);

	(void)state;
	assert_non_null(c);
	/* read-only list: case-insensitive, unqualified entry matches every schema */
	assert_int_equal(route_of(c, "SELECT report_total()"), ROUTE_ANY);
	assert_int_equal(route_of(c, "SELECT REPORT_TOTAL()"), ROUTE_ANY);
	assert_int_equal(route_of(c, "SELECT \"Report_Total\"()"), ROUTE_ANY);
	assert_int_equal(route_of(c, "SELECT s.report_total()"), ROUTE_ANY);
	/* qualified read-only entry: only that schema */
	assert_int_equal(route_of(c, "SELECT stats.refresh_view()"), ROUTE_ANY);
	assert_int_equal(route_of(c, "SELECT STATS.Refresh_View()"), ROUTE_ANY);
	assert_int_equal(route_of(c, "SELECT refresh_view()"), ROUTE_PRIMARY);
	assert_int_equal(route_of(c, "SELECT other.refresh_view()"), ROUTE_PRIMARY);
	/* write list: qualified entry matches that schema and unqualified calls */
	assert_int_equal(route_of(c, "SELECT audit.touch()"), ROUTE_PRIMARY);
	assert_int_equal(route_of(c, "SELECT touch()"), ROUTE_PRIMARY);
	assert_int_equal(route_of(c, "SELECT bump(), report_total()"), ROUTE_PRIMARY);
	assert_int_equal(route_of(c, "SELECT x.bump()"), ROUTE_PRIMARY);
	/* no callback: built-in table only; unknown is volatile */
	assert_int_equal(route_of(c, "SELECT lower('a'), now(), count(*)"), ROUTE_ANY);
	assert_int_equal(route_of(c, "SELECT my_stable_func()"), ROUTE_PRIMARY);
	assert_int_equal(route_of(c, "SELECT random()"), ROUTE_PRIMARY);
	assert_int_equal(route_of(c, "SELECT pg_sleep(0)"), ROUTE_ANY);
	/* built-in writers are not overridden by the callback, lists come first */
	assert_int_equal(route_of(c, "SELECT nextval('s')"), ROUTE_PRIMARY);
	classify_free(c);
}

static void test_user_list_overrides_builtin(void **state)
{
	static const char *const ro[] = { "nextval" };
	static const char *const wr[] = { "lower" };
	struct classify_options o = {
		.read_only_functions = ro,
		.n_read_only_functions = 1,
		.write_functions = wr,
		.n_write_functions = 1,
	};
	struct classifier *c = classify_new(&o);

	(void)state;
	assert_non_null(c);
	assert_int_equal(route_of(c, "SELECT nextval('s')"), ROUTE_ANY);
	assert_int_equal(route_of(c, "SELECT lower('x')"), ROUTE_PRIMARY);
	classify_free(c);
}

static void test_callback_not_called_on_hit(void **state)
{
	struct fake_catalog cat = { 0 };
	struct classifier *c = make_classifier(&cat, 8);
	struct classify_result r1, r2;
	unsigned after_first;

	(void)state;
	classify_one(c, "SELECT my_stable_func(), my_immutable_func()", &r1);
	after_first = cat.calls;
	assert_int_equal(after_first, 2);
	classify_one(c, "SELECT my_stable_func(), my_immutable_func()", &r2);
	assert_int_equal(cat.calls, after_first);
	assert_memory_equal(&r1, &r2, sizeof(r1));
	/* After a clear the catalog is asked again. */
	classify_cache_clear(c);
	classify_one(c, "SELECT my_stable_func(), my_immutable_func()", &r2);
	assert_int_equal(cat.calls, 2 * after_first);
	classify_free(c);
}

/* ---- The cache ------------------------------------------------------------------------------ */

static struct classify_result result_with(enum classify_route route, const char *rule)
{
	struct classify_result r;

	memset(&r, 0, sizeof(r));
	r.route = route;
	r.inner_route = route;
	r.rule = rule;
	return r;
}

static void test_cache_hit_miss(void **state)
{
	struct classify_cache *cache = classify_cache_new(4, 0);
	struct classify_result in = result_with(ROUTE_ANY, "read-only select"), out;
	struct classify_stats st;

	(void)state;
	assert_non_null(cache);
	assert_false(classify_cache_get(cache, "SELECT 1", 8, &out));
	classify_cache_put(cache, "SELECT 1", 8, &in);
	assert_true(classify_cache_get(cache, "SELECT 1", 8, &out));
	assert_int_equal(out.route, ROUTE_ANY);
	assert_string_equal(out.rule, "read-only select");
	/* Keys are the exact text: prefix, other length, one byte different. */
	assert_false(classify_cache_get(cache, "SELECT 1", 7, &out));
	assert_false(classify_cache_get(cache, "SELECT 1 ", 9, &out));
	assert_false(classify_cache_get(cache, "SELECT 2", 8, &out));
	assert_false(classify_cache_get(cache, "select 1", 8, &out));
	classify_cache_get_stats(cache, &st);
	assert_int_equal(st.hits, 1);
	assert_int_equal(st.misses, 5);
	assert_int_equal(st.entries, 1);
	assert_int_equal(st.capacity, 4);
	/* Putting the same text again replaces the result, not a second entry. */
	in = result_with(ROUTE_PRIMARY, "write statement");
	classify_cache_put(cache, "SELECT 1", 8, &in);
	assert_true(classify_cache_get(cache, "SELECT 1", 8, &out));
	assert_int_equal(out.route, ROUTE_PRIMARY);
	classify_cache_get_stats(cache, &st);
	assert_int_equal(st.entries, 1);
	classify_cache_free(cache);
}

static void test_cache_lru_eviction(void **state)
{
	struct classify_cache *cache = classify_cache_new(3, 0);
	struct classify_result in = result_with(ROUTE_ANY, "x"), out;
	struct classify_stats st;

	(void)state;
	assert_non_null(cache);
	classify_cache_put(cache, "a", 1, &in);
	classify_cache_put(cache, "b", 1, &in);
	classify_cache_put(cache, "c", 1, &in);
	/* Touch a: b becomes the least recently used. */
	assert_true(classify_cache_get(cache, "a", 1, &out));
	classify_cache_put(cache, "d", 1, &in);
	assert_false(classify_cache_get(cache, "b", 1, &out));
	assert_true(classify_cache_get(cache, "a", 1, &out));
	assert_true(classify_cache_get(cache, "c", 1, &out));
	assert_true(classify_cache_get(cache, "d", 1, &out));
	/* Now a is the oldest use. */
	classify_cache_put(cache, "e", 1, &in);
	assert_false(classify_cache_get(cache, "a", 1, &out));
	assert_true(classify_cache_get(cache, "e", 1, &out));
	classify_cache_get_stats(cache, &st);
	assert_int_equal(st.evictions, 2);
	assert_int_equal(st.entries, 3);
	classify_cache_free(cache);
}

static void test_cache_bound(void **state)
{
	struct classify_cache *cache = classify_cache_new(16, 64);
	struct classify_result in = result_with(ROUTE_ANY, "x"), out;
	struct classify_stats st;
	char text[128];
	int hits = 0;

	(void)state;
	assert_non_null(cache);
	for (int i = 0; i < 1000; i++) {
		int len = snprintf(text, sizeof(text), "SELECT %d", i);

		classify_cache_put(cache, text, (size_t)len, &in);
	}
	classify_cache_get_stats(cache, &st);
	assert_int_equal(st.entries, 16);
	assert_int_equal(st.evictions, 1000 - 16);
	/* Exactly the 16 most recent are there. */
	for (int i = 0; i < 1000; i++) {
		int len = snprintf(text, sizeof(text), "SELECT %d", i);

		if (classify_cache_get(cache, text, (size_t)len, &out)) {
			assert_true(i >= 1000 - 16);
			hits++;
		}
	}
	assert_int_equal(hits, 16);
	/* A text over max_len is never stored. */
	memset(text, 'x', sizeof(text));
	classify_cache_put(cache, text, 65, &in);
	assert_false(classify_cache_get(cache, text, 65, &out));
	classify_cache_put(cache, text, 64, &in);
	assert_true(classify_cache_get(cache, text, 64, &out));
	/* Clear empties it and it fills again. */
	classify_cache_clear_all(cache);
	classify_cache_get_stats(cache, &st);
	assert_int_equal(st.entries, 0);
	assert_false(classify_cache_get(cache, text, 64, &out));
	classify_cache_put(cache, text, 64, &in);
	assert_true(classify_cache_get(cache, text, 64, &out));
	classify_cache_free(cache);
	assert_null(classify_cache_new(0, 0));
}

static void test_cache_through_classifier(void **state)
{
	struct classify_options o = { .cache_entries = 2, .cache_max_len = 16 };
	struct classifier *c = classify_new(&o);
	struct classify_result r;
	struct classify_stats st;
	const char *long_sql = "SELECT 1 AS a_rather_long_alias";

	(void)state;
	assert_non_null(c);
	classify_one(c, "SELECT 1", &r);
	classify_one(c, "SELECT 1", &r);
	classify_one(c, "SELECT 2", &r);
	classify_one(c, "SELECT 3", &r); /* evicts SELECT 1 */
	classify_one(c, "SELECT 1", &r);
	classify_one(c, long_sql, &r); /* too long to cache */
	classify_one(c, long_sql, &r);
	assert_int_equal(r.route, ROUTE_ANY);
	classify_get_stats(c, &st);
	assert_int_equal(st.hits, 1);
	assert_int_equal(st.misses, 6);
	assert_int_equal(st.entries, 2);
	assert_int_equal(st.capacity, 2);
	assert_true(st.evictions >= 2);
	classify_free(c);
}

static void test_no_cache_stats(void **state)
{
	struct classifier *c = classify_new(NULL);
	struct classify_result r;
	struct classify_stats st;

	(void)state;
	assert_non_null(c);
	classify_one(c, "SELECT 1", &r);
	classify_one(c, "SELECT 1", &r);
	classify_cache_clear(c); /* harmless without a cache */
	classify_get_stats(c, &st);
	assert_int_equal(st.hits, 0);
	assert_int_equal(st.misses, 2);
	assert_int_equal(st.capacity, 0);
	classify_free(c);
	classify_free(NULL);
}

static void test_route_names(void **state)
{
	(void)state;
	assert_string_equal(classify_route_name(ROUTE_PRIMARY), "primary");
	assert_string_equal(classify_route_name(ROUTE_ANY), "any");
	assert_string_equal(classify_route_name(ROUTE_ALL), "all");
	assert_string_equal(classify_route_name(ROUTE_FOLLOW), "follow");
}

static void test_deep_nesting(void **state)
{
	enum { DEPTH = 2000 };
	struct classifier *c = classify_new(NULL);
	struct classify_result r;
	char *sql = malloc(16 + 2 * DEPTH);
	size_t len = 0;

	(void)state;
	assert_non_null(c);
	assert_non_null(sql);
	len += (size_t)sprintf(sql, "SELECT ");
	for (int i = 0; i < DEPTH; i++)
		sql[len++] = '(';
	sql[len++] = '1';
	for (int i = 0; i < DEPTH; i++)
		sql[len++] = ')';
	sql[len] = '\0';
	classify_sql(c, sql, len, &r);
	/* Either walked (read) or refused by the parser's stack limit (primary): never a crash. */
	assert_true(r.route == ROUTE_ANY || r.route == ROUTE_PRIMARY);
	free(sql);
	classify_free(c);
}

/* ---- The raw-text path, per-statement results, SET values ---------------------------------- */

static void test_raw_cache(void **state)
{
	struct fake_catalog cat = { 0 };
	struct classifier *c = make_classifier(&cat, 64);
	struct classify_result r;
	struct classify_stats st;
	char scratch[256];
	const char *a = "SELECT my_stable_func() FROM t WHERE id = 17";
	const char *b = "SELECT my_stable_func() FROM t WHERE id = 4711";

	(void)state;
	/* Miss: parsed once (the catalog asked once), normalised entry stored. */
	classify_sql_raw(c, a, strlen(a), scratch, sizeof(scratch), &r);
	assert_int_equal(r.route, ROUTE_ANY);
	assert_int_equal(cat.calls, 1);
	classify_get_stats(c, &st);
	assert_int_equal(st.misses, 1);
	assert_int_equal(st.entries, 1); /* the raw text waits for its second sighting */
	/* Other constants: a normalised hit, no parse. */
	classify_sql_raw(c, b, strlen(b), scratch, sizeof(scratch), &r);
	assert_int_equal(r.route, ROUTE_ANY);
	assert_int_equal(cat.calls, 1);
	classify_get_stats(c, &st);
	assert_int_equal(st.hits, 1);
	assert_int_equal(st.raw_hits, 0);
	/* a again: normalised hit, and now its raw text is admitted; then raw hits. */
	classify_sql_raw(c, a, strlen(a), scratch, sizeof(scratch), &r);
	classify_get_stats(c, &st);
	assert_int_equal(st.entries, 2);
	assert_int_equal(st.raw_hits, 0);
	memset(scratch, 'Z', sizeof(scratch)); /* a raw hit does not normalise */
	classify_sql_raw(c, a, strlen(a), scratch, sizeof(scratch), &r);
	assert_int_equal(scratch[0], 'Z');
	assert_int_equal(r.route, ROUTE_ANY);
	assert_string_equal(r.rule, "read-only select");
	classify_get_stats(c, &st);
	assert_int_equal(st.raw_hits, 1);
	assert_int_equal(st.hits, 3);
	assert_int_equal(st.misses, 1);
	/* A text without constants is its own normalised form: one entry, raw hit next time. */
	classify_sql_raw(c, "SELECT * FROM t", 15, scratch, sizeof(scratch), &r);
	classify_sql_raw(c, "SELECT * FROM t", 15, scratch, sizeof(scratch), &r);
	classify_get_stats(c, &st);
	assert_int_equal(st.entries, 3);
	assert_int_equal(st.raw_hits, 2);
	/* Not normalisable (SET): cached by its raw text right away. */
	classify_sql_raw(c, "SET work_mem = 1", 16, scratch, sizeof(scratch), &r);
	classify_sql_raw(c, "SET work_mem = 1", 16, scratch, sizeof(scratch), &r);
	assert_true(r.flags & CLASSIFY_SESSION_STATE);
	classify_get_stats(c, &st);
	assert_int_equal(st.raw_hits, 3);
	/* Exact compare: a one-byte difference is no raw hit. */
	classify_sql_raw(c, "SET work_mem = 2", 16, scratch, sizeof(scratch), &r);
	classify_get_stats(c, &st);
	assert_int_equal(st.raw_hits, 3);
	classify_free(c);
}

/* A statement whose constants change every time costs no raw entry (doorkeeper) and keeps
 * hitting its normalised entry; memory stays within the entry cap. */
static void test_raw_cache_bounded(void **state)
{
	struct classify_options o = { .cache_entries = 8, .cache_max_len = 64 };
	struct classifier *c = classify_new(&o);
	struct classify_result r;
	struct classify_stats st;
	char scratch[128], sql[64], big[200];

	(void)state;
	assert_non_null(c);
	for (int i = 0; i < 1000; i++) {
		int len = snprintf(sql, sizeof(sql), "SELECT * FROM t WHERE id = %d", i);

		classify_sql_raw(c, sql, (size_t)len, scratch, sizeof(scratch), &r);
		assert_int_equal(r.route, ROUTE_ANY);
	}
	classify_get_stats(c, &st);
	assert_int_equal(st.misses, 1);
	assert_int_equal(st.hits, 999);
	assert_true(st.entries <= 8);
	assert_int_equal(st.evictions, 0);
	/* Longer than the cache's max_len and the scratch: classified, never stored. */
	memset(big, ' ', sizeof(big));
	memcpy(big, "SELECT 1", 8);
	big[sizeof(big) - 1] = '\0';
	classify_sql_raw(c, big, strlen(big), scratch, sizeof(scratch), &r);
	classify_sql_raw(c, big, strlen(big), scratch, sizeof(scratch), &r);
	assert_int_equal(r.route, ROUTE_ANY);
	classify_free(c);
	/* Without a cache: classified through the normaliser all the same. */
	c = classify_new(NULL);
	assert_non_null(c);
	classify_sql_raw(c, "SELECT nextval('s')", 19, scratch, sizeof(scratch), &r);
	assert_int_equal(r.route, ROUTE_PRIMARY);
	assert_string_equal(r.object, "nextval");
	classify_get_stats(c, &st);
	assert_int_equal(st.misses, 1);
	classify_free(c);
}

static void test_sql_each(void **state)
{
	struct classifier *c = classify_new(NULL);
	struct classify_result r[4];
	const char *sql =
		"SET statement_timeout = 1; DEALLOCATE a; DEALLOCATE b; SELECT 1; LISTEN x";

	(void)state;
	assert_non_null(c);
	assert_int_equal(classify_sql_each(c, sql, strlen(sql), r, 4), 5);
	assert_true(r[0].flags & CLASSIFY_SET_TRACKED);
	assert_string_equal(r[0].object, "statement_timeout");
	assert_true(r[1].flags & CLASSIFY_DEALLOCATE);
	assert_string_equal(r[1].object, "a");
	assert_string_equal(r[2].object, "b");
	assert_int_equal(r[3].route, ROUTE_ANY);
	assert_false(r[3].flags & CLASSIFY_MULTI);
	assert_int_equal(classify_sql_each(c, "", 0, r, 4), 0);
	assert_int_equal(classify_sql_each(c, "SELEC 1", 7, r, 4), 1);
	assert_true(r[0].flags & CLASSIFY_PARSE_ERROR);
	assert_int_equal(classify_sql_each(c, "SELECT 1", 8, r, 0), 1);
	classify_free(c);
}

static void test_set_value(void **state)
{
	static const struct {
		const char *sql;
		const char *name;  /* NULL: no SET found (false) */
		const char *value; /* NULL: is_reset */
	} cases[] = {
		{ "SET application_name = 'web'", "application_name", "web" },
		{ "SET application_name TO 'it''s'", "application_name", "it's" },
		{ "SET application_name = E'a\\tb'", "application_name", "a\tb" },
		{ "set SESSION statement_timeout to 0", "statement_timeout", "0" },
		{ "SET statement_timeout = '5s'", "statement_timeout", "5s" },
		{ "SET extra_float_digits = -2", "extra_float_digits", "-2" },
		{ "SET extra_float_digits = 2.5", "extra_float_digits", "2.5" },
		{ "SET search_path TO app, public", "search_path", "app, public" },
		{ "SET search_path = '$user', public", "search_path", "\"$user\", public" },
		{ "SET search_path = \"$user\", \"My Schema\"", "search_path",
		  "\"$user\", \"My Schema\"" },
		{ "SET search_path = 'a\"b'", "search_path", "\"a\"\"b\"" },
		{ "SET search_path = ''", "search_path", "\"\"" },
		{ "SET SCHEMA 'app'", "search_path", "app" },
		{ "SET DateStyle TO ISO, MDY", "datestyle", "iso, mdy" },
		{ "SET datestyle = 'ISO, MDY'", "datestyle", "ISO, MDY" },
		{ "SET TIME ZONE 'Europe/Paris'", "timezone", "Europe/Paris" },
		{ "SET TIME ZONE -7", "timezone", "-7" },
		{ "SET TIME ZONE LOCAL", "timezone", NULL },
		{ "SET NAMES 'UTF8'", "client_encoding", "UTF8" },
		{ "SET standard_conforming_strings = on", "standard_conforming_strings", "on" },
		{ "SET default_transaction_read_only = true", "default_transaction_read_only",
		  "true" },
		{ "SET lock_timeout TO DEFAULT", "lock_timeout", NULL },
		{ "RESET lock_timeout", "lock_timeout", NULL },
		{ "SET pgrelay.route = 'primary'", "pgrelay.route", "primary" },
		{ "SET SESSION pgrelay.route TO standby", "pgrelay.route", "standby" },
		{ "/* SET a = 1 */ SET b = '2' -- SET c = 3", "b", "2" },
		{ "SELECT 1; SET LOCAL x = 1; SET y = 2", "y", "2" },
		{ "SET LOCAL statement_timeout = 1", NULL, NULL },
		{ "SET TRANSACTION READ ONLY", NULL, NULL },
		{ "RESET ALL", NULL, NULL },
		{ "SET search_path FROM CURRENT", NULL, NULL },
		{ "SELECT 'SET a = 1'", NULL, NULL },
		{ "SET a = ", NULL, NULL },
	};
	char name[64], value[64];
	bool is_reset;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *sql = cases[i].sql;
		bool ok = classify_set_value(sql, strlen(sql), name, sizeof(name), value,
					     sizeof(value), &is_reset);

		if (!cases[i].name) {
			if (ok)
				fail_msg("%s: found %s = %s", sql, name, value);
			continue;
		}
		if (!ok)
			fail_msg("%s: no SET found", sql);
		if (strcmp(name, cases[i].name) != 0)
			fail_msg("%s: name '%s', expected '%s'", sql, name, cases[i].name);
		if (cases[i].value ? is_reset || strcmp(value, cases[i].value) != 0 : !is_reset)
			fail_msg("%s: value '%s' reset %d, expected '%s'", sql, value, is_reset,
				 cases[i].value ? cases[i].value : "(reset)");
	}
	/* The nth of several, and what does not fit. */
	assert_true(classify_set_value_nth("SET a = 1; RESET b; SET c = 'x'", 31, 2, name,
					   sizeof(name), value, sizeof(value), &is_reset));
	assert_string_equal(name, "c");
	assert_string_equal(value, "x");
	assert_true(classify_set_value_nth("SET a = 1; RESET b; SET c = 'x'", 31, 1, name,
					   sizeof(name), value, sizeof(value), &is_reset));
	assert_true(is_reset);
	assert_false(classify_set_value_nth("SET a = 1; RESET b; SET c = 'x'", 31, 3, name,
					    sizeof(name), value, sizeof(value), &is_reset));
	assert_false(classify_set_value("SET application_name = 'a rather long name'", 43, name,
					sizeof(name), value, 8, &is_reset));
	assert_false(classify_set_value("SET application_name = 'x'", 26, name, 4, value,
					sizeof(value), &is_reset));
}

static void test_tracked_settings(void **state)
{
	(void)state;
	assert_int_equal(classify_tracked_setting("search_path"), 8);
	assert_int_equal(classify_tracked_setting("DATESTYLE"), 1);
	assert_int_equal(classify_tracked_setting("timezone"), 2);
	assert_int_equal(classify_tracked_setting("work_mem"), -1);
	assert_string_equal(classify_tracked_name(0), "client_encoding");
	assert_string_equal(classify_tracked_name(CLASSIFY_N_TRACKED - 1),
			    "idle_in_transaction_session_timeout");
	assert_null(classify_tracked_name(CLASSIFY_N_TRACKED));
	assert_null(classify_tracked_name(-1));
}

/* Effects the table cannot show: the reason string and the multi-statement object. */
static void test_effects(void **state)
{
	static const struct {
		const char *sql;
		const char *effect;
		const char *object;
	} cases[] = {
		{ "LISTEN x", "LISTEN", "x" },
		{ "PREPARE p AS SELECT 1", "PREPARE", "p" },
		{ "DECLARE c CURSOR WITH HOLD FOR SELECT 1", "cursor WITH HOLD", "c" },
		{ "CREATE TEMP TABLE t (a int)", "temporary object", "" },
		{ "SELECT pg_try_advisory_lock(1)", "advisory lock", "pg_try_advisory_lock" },
		{ "SELECT set_config('a.b', 'c', false)", "set_config", "set_config" },
		{ "LOAD 'x'", "LOAD", "" },
		{ "SET work_mem = 1", "untracked setting", "work_mem" },
		{ "SET search_path = pg_temp", "search_path with pg_temp", "search_path" },
		{ "SET ROLE r", "role", "role" },
		{ "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
		  "session characteristics", "" },
		{ "SELECT 1; DEALLOCATE q; LISTEN x", "LISTEN", "q" },
		{ "SELECT 1; SELECT 2", "", "" },
		{ "SET statement_timeout = 1", "", "statement_timeout" },
	};
	struct classifier *c = classify_new(NULL);

	(void)state;
	assert_non_null(c);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct classify_result r;

		classify_one(c, cases[i].sql, &r);
		if (strcmp(r.effect, cases[i].effect) != 0 ||
		    strcmp(r.object, cases[i].object) != 0)
			fail_msg("%s: effect '%s' object '%s', expected '%s' '%s'", cases[i].sql,
				 r.effect, r.object, cases[i].effect, cases[i].object);
	}
	classify_free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table_uncached),
		cmocka_unit_test(test_table_normalized),
		cmocka_unit_test(test_table_cached),
		cmocka_unit_test(test_table_raw),
		cmocka_unit_test(test_raw_cache),
		cmocka_unit_test(test_raw_cache_bounded),
		cmocka_unit_test(test_sql_each),
		cmocka_unit_test(test_set_value),
		cmocka_unit_test(test_tracked_settings),
		cmocka_unit_test(test_effects),
		cmocka_unit_test(test_objects),
		cmocka_unit_test(test_command_kind),
		cmocka_unit_test(test_plain_command),
		cmocka_unit_test(test_object_long_names),
		cmocka_unit_test(test_prepare_inner_route),
		cmocka_unit_test(test_function_lists),
		cmocka_unit_test(test_user_list_overrides_builtin),
		cmocka_unit_test(test_callback_not_called_on_hit),
		cmocka_unit_test(test_cache_hit_miss),
		cmocka_unit_test(test_cache_lru_eviction),
		cmocka_unit_test(test_cache_bound),
		cmocka_unit_test(test_cache_through_classifier),
		cmocka_unit_test(test_no_cache_stats),
		cmocka_unit_test(test_route_names),
		cmocka_unit_test(test_deep_nesting),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
