/*
 * Relay totals of one worker for /metrics: queries, transactions and a query-duration
 * histogram. Plain integers written only by the worker's loop (no locks, no atomics: they are on
 * the hot path) and read by the HTTP server on the same loop.
 *
 * A "query" is one unit answered by a ReadyForQuery (a simple Query, or an extended-protocol
 * batch up to its Sync); a "transaction" ends at each ReadyForQuery with status idle (an
 * autocommit statement counts as one, as in PgBouncer). The duration runs from the unit being
 * sent to its ReadyForQuery; when a client pipelines units, only the first of a batch is timed.
 */
#ifndef PGRELAY_POOL_STATS_H
#define PGRELAY_POOL_STATS_H

#include <stdbool.h>
#include <stdint.h>

#define STATS_BUCKETS 14 /* finite upper bounds in stats_bucket_bounds_us; +Inf is one more */

struct relay_stats {
	uint64_t query_cnt;			/* ReadyForQuery relayed to clients */
	uint64_t xact_cnt;			/* of which with status idle */
	uint64_t dur_bucket[STATS_BUCKETS + 1]; /* timed units per bucket (not cumulative) */
	uint64_t dur_count;			/* timed units */
	uint64_t dur_sum_us;			/* their total duration */
};

extern const uint64_t stats_bucket_bounds_us[STATS_BUCKETS];

/* A unit ended; dur_us is its duration, or UINT64_MAX when it was not timed. */
void stats_unit_done(struct relay_stats *s, bool txn_ended, uint64_t dur_us);

#endif
