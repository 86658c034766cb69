/*
 * Micro-benchmark of the SQL classifier (src/route/classify.c): nanoseconds per classify_sql()
 * for about twenty representative statements, with the cache off (every call parses) and on
 * (every call after the first is a hit), plus libpg_query's parse alone for comparison.
 * Each figure is the best of TRIALS trials (thread CPU time), which filters out the noise of a
 * shared machine. Built and run by bench/classify_bench.sh; prints one Markdown table.
 *
 * Usage: classify_bench [uncached-rounds [cached-rounds]]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <pg_query.h>

#include "route/classify.h"

static const char *const queries[] = {
	"SELECT 1",
	"SELECT * FROM pgbench_accounts WHERE aid = $1",
	"SELECT abalance FROM pgbench_accounts WHERE aid = 42",
	"UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2",
	"INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ($1, $2, $3, $4, "
	"CURRENT_TIMESTAMP)",
	"DELETE FROM sessions WHERE expires < now()",
	"BEGIN",
	"COMMIT",
	"SET application_name = 'web'",
	"SHOW transaction_read_only",
	"SELECT * FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.created_at > "
	"now() "
	"- interval '1 day' ORDER BY o.created_at DESC LIMIT 50",
	"SELECT count(*), sum(amount), avg(amount) FROM payments GROUP BY currency HAVING count(*) "
	"> "
	"10",
	"SELECT * FROM t WHERE id = 1 FOR UPDATE",
	"SELECT nextval('orders_id_seq')",
	"WITH moved AS (DELETE FROM queue WHERE id IN (SELECT id FROM queue ORDER BY id LIMIT 10 "
	"FOR UPDATE SKIP LOCKED) RETURNING *) INSERT INTO done SELECT * FROM moved",
	"WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 100) SELECT "
	"sum(n) "
	"FROM r",
	"SELECT u.id, u.name, (SELECT count(*) FROM posts p WHERE p.user_id = u.id) AS posts, "
	"lower(u.email) FROM users u WHERE u.active AND u.id = ANY($1) ORDER BY u.name",
	"/*+ pgrelay: standby */ SELECT * FROM reports WHERE day = current_date",
	"EXPLAIN ANALYZE SELECT * FROM t WHERE a = 1",
	"SELECT 1; SELECT 2",
};

#define N_QUERIES (sizeof(queries) / sizeof(queries[0]))
#define TRIALS	  5

static int bench_volatility(void *arg, const char *schema, const char *name)
{
	(void)arg;
	(void)schema;
	if (strcmp(name, "now") == 0 || strcmp(name, "lower") == 0 || strcmp(name, "count") == 0)
		return 's';
	return 0;
}

/* CPU time of this thread: other processes on a busy machine do not count against us. */
static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* Best over TRIALS of the mean ns per classify_sql() of query q over rounds calls. */
static double time_classify(struct classifier *c, const char *q, long rounds)
{
	struct classify_result r;
	size_t len = strlen(q);
	volatile unsigned sink = 0;
	double best = 0;

	classify_sql(c, q, len, &r); /* warm up (and fill the cache) */
	for (int t = 0; t < TRIALS; t++) {
		double t0 = now_ns(), ns;

		for (long i = 0; i < rounds; i++) {
			classify_sql(c, q, len, &r);
			sink += (unsigned)r.route;
		}
		ns = (now_ns() - t0) / (double)rounds;
		if (t == 0 || ns < best)
			best = ns;
	}
	(void)sink;
	return best;
}

/* The same for libpg_query's parse to protobuf alone. */
static double time_parse(const char *q, long rounds)
{
	double best = 0;

	for (int t = 0; t < TRIALS; t++) {
		double t0 = now_ns(), ns;

		for (long i = 0; i < rounds; i++)
			pg_query_free_protobuf_parse_result(pg_query_parse_protobuf(q));
		ns = (now_ns() - t0) / (double)rounds;
		if (t == 0 || ns < best)
			best = ns;
	}
	return best;
}

int main(int argc, char **argv)
{
	long rounds_uncached = argc > 1 ? atol(argv[1]) : 400;
	long rounds_cached = argc > 2 ? atol(argv[2]) : 40000;
	struct classify_options o = { .volatility = bench_volatility };
	struct classifier *plain, *cached;
	double sum_u = 0, sum_c = 0, sum_p = 0;

	plain = classify_new(&o);
	o.cache_entries = 1024;
	cached = classify_new(&o);
	if (!plain || !cached || rounds_uncached <= 0 || rounds_cached <= 0) {
		fprintf(stderr, "classify_bench: bad arguments or out of memory\n");
		return 1;
	}
	printf("| # | route | rule | parse only ns | uncached ns | cached ns | statement |\n");
	printf("|---|---|---|---:|---:|---:|---|\n");
	for (size_t i = 0; i < N_QUERIES; i++) {
		struct classify_result r;
		double p = time_parse(queries[i], rounds_uncached);
		double u = time_classify(plain, queries[i], rounds_uncached);
		double c = time_classify(cached, queries[i], rounds_cached);

		classify_sql(plain, queries[i], strlen(queries[i]), &r);
		printf("| %zu | %s | %s | %.0f | %.0f | %.0f | `%.60s%s` |\n", i + 1,
		       classify_route_name(r.route), r.rule, p, u, c, queries[i],
		       strlen(queries[i]) > 60 ? "..." : "");
		sum_p += p;
		sum_u += u;
		sum_c += c;
	}
	printf("| | | **mean** | **%.0f** | **%.0f** | **%.0f** | %zu statements, best of %d x %ld "
	       "/ %ld rounds "
	       "|\n",
	       sum_p / N_QUERIES, sum_u / N_QUERIES, sum_c / N_QUERIES, N_QUERIES, TRIALS,
	       rounds_uncached, rounds_cached);
	classify_free(plain);
	classify_free(cached);
	return 0;
}
