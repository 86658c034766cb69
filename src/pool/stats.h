/*
 * Relay statistics, plain integers written only by the worker's loop (no locks, no atomics: they
 * are on the hot path) and read by the HTTP server and the admin consoles on the same loop.
 *
 * struct relay_stats: the worker's totals for /metrics: queries, transactions, a query-duration
 * histogram and a histogram of the time clients waited for a server connection.
 * struct pool_stats: the same kind of totals per pool (database, user), PgBouncer's SHOW STATS
 * fields. Each is bumped at most once per unit, per transaction, per wait or per server
 * assignment; bytes are counted by the connection layer per read or write call (conn.h) and
 * added to a pool's totals when its client leaves (pool_stats_refresh adds those still here).
 *
 * A "query" is one unit answered by a ReadyForQuery (a simple Query, or an extended-protocol
 * batch up to its Sync); a "transaction" ends at each ReadyForQuery with status idle (an
 * autocommit statement counts as one, as in PgBouncer). The duration runs from the unit being
 * sent to its ReadyForQuery; when a client pipelines units, only the first of a batch is timed.
 * A transaction's time runs from its first unit being sent to the ReadyForQuery that ends it;
 * a transaction whose first unit was pipelined behind the previous one's end is not timed.
 *
 * Averages (SHOW STATS avg_*, SHOW STATS_AVERAGES) are PgBouncer's: per second over the last
 * whole stats_period for counts and bytes, per transaction / query / assignment for times. The
 * janitor snapshots every pool's totals once per period (stats_period_tick).
 */
#ifndef PGRELAY_POOL_STATS_H
#define PGRELAY_POOL_STATS_H

#include <stdbool.h>
#include <stdint.h>

#define STATS_BUCKETS 14 /* finite upper bounds in stats_bucket_bounds_us; +Inf is one more */

struct relay_stats {
	uint64_t query_cnt;			 /* ReadyForQuery relayed to clients */
	uint64_t xact_cnt;			 /* of which with status idle */
	uint64_t dur_bucket[STATS_BUCKETS + 1];	 /* timed units per bucket (not cumulative) */
	uint64_t dur_count;			 /* timed units */
	uint64_t dur_sum_us;			 /* their total duration */
	uint64_t wait_bucket[STATS_BUCKETS + 1]; /* ended waits for a server, per bucket */
	uint64_t wait_count;			 /* ended waits */
	uint64_t wait_sum_us;			 /* their total duration */
	uint64_t bytes_in;  /* bytes received from clients that have left (live: conn.h) */
	uint64_t bytes_out; /* bytes sent to clients that have left */
};

/* PgBouncer's PgStats fields, per pool; times in microseconds. */
struct pool_stats {
	uint64_t server_assignment_count; /* a backend connection linked to a client */
	uint64_t xact_count;
	uint64_t query_count;
	uint64_t bytes_in;  /* received from clients (of clients that left; see above) */
	uint64_t bytes_out; /* sent to clients */
	uint64_t xact_time_us;
	uint64_t query_time_us;
	uint64_t wait_time_us; /* clients waiting for a backend connection */
};

extern const uint64_t stats_bucket_bounds_us[STATS_BUCKETS];

/*
 * A unit ended; dur_us is its duration, or UINT64_MAX when it was not timed; xact_us the time of
 * the transaction it ended, or UINT64_MAX. ps may be NULL.
 */
void stats_unit_done(struct relay_stats *s, struct pool_stats *ps, bool txn_ended, uint64_t dur_us,
		     uint64_t xact_us);
/* A client stopped waiting for a backend connection after wait_us. ps may be NULL. */
void stats_wait_done(struct relay_stats *s, struct pool_stats *ps, uint64_t wait_us);
/* a += b, field by field. */
void stats_pool_add(struct pool_stats *a, const struct pool_stats *b);
/* PgBouncer's averages of cur over older, dur_us apart (zeros when dur_us is 0). */
void stats_pool_average(struct pool_stats *avg, const struct pool_stats *cur,
			const struct pool_stats *older, uint64_t dur_us);

#endif
