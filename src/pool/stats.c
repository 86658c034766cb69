/* stats.h: counting is a few additions and a short bucket scan per unit or wait. */
#include "pool/stats.h"

const uint64_t stats_bucket_bounds_us[STATS_BUCKETS] = {
	500,	1000,	2500,	5000,	 10000,	  25000,   50000,
	100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000,
};

static int stats_bucket(uint64_t us)
{
	int i = 0;
	while (i < STATS_BUCKETS && us > stats_bucket_bounds_us[i])
		i++;
	return i;
}

void stats_unit_done(struct relay_stats *s, struct pool_stats *ps, bool txn_ended, uint64_t dur_us,
		     uint64_t xact_us)
{
	s->query_cnt++;
	if (txn_ended)
		s->xact_cnt++;
	if (ps) {
		ps->query_count++;
		if (txn_ended) {
			ps->xact_count++;
			if (xact_us != UINT64_MAX)
				ps->xact_time_us += xact_us;
		}
		if (dur_us != UINT64_MAX)
			ps->query_time_us += dur_us;
	}
	if (dur_us == UINT64_MAX)
		return;
	s->dur_bucket[stats_bucket(dur_us)]++;
	s->dur_count++;
	s->dur_sum_us += dur_us;
}

void stats_wait_done(struct relay_stats *s, struct pool_stats *ps, uint64_t wait_us)
{
	s->wait_bucket[stats_bucket(wait_us)]++;
	s->wait_count++;
	s->wait_sum_us += wait_us;
	if (ps)
		ps->wait_time_us += wait_us;
}

void stats_pool_add(struct pool_stats *a, const struct pool_stats *b)
{
	a->server_assignment_count += b->server_assignment_count;
	a->xact_count += b->xact_count;
	a->query_count += b->query_count;
	a->bytes_in += b->bytes_in;
	a->bytes_out += b->bytes_out;
	a->xact_time_us += b->xact_time_us;
	a->query_time_us += b->query_time_us;
	a->wait_time_us += b->wait_time_us;
}

/* Counters only grow, but a pool's totals restart when it is reaped and made again. */
static uint64_t stats_delta(uint64_t cur, uint64_t older)
{
	return cur > older ? cur - older : 0;
}

void stats_pool_average(struct pool_stats *avg, const struct pool_stats *cur,
			const struct pool_stats *older, uint64_t dur_us)
{
	*avg = (struct pool_stats){ 0 };
	if (!dur_us)
		return;
	uint64_t queries = stats_delta(cur->query_count, older->query_count);
	uint64_t xacts = stats_delta(cur->xact_count, older->xact_count);
	uint64_t assigns =
		stats_delta(cur->server_assignment_count, older->server_assignment_count);
	avg->query_count = queries * 1000000u / dur_us;
	avg->xact_count = xacts * 1000000u / dur_us;
	avg->server_assignment_count = assigns * 1000000u / dur_us;
	avg->bytes_in = stats_delta(cur->bytes_in, older->bytes_in) * 1000000u / dur_us;
	avg->bytes_out = stats_delta(cur->bytes_out, older->bytes_out) * 1000000u / dur_us;
	if (queries)
		avg->query_time_us =
			stats_delta(cur->query_time_us, older->query_time_us) / queries;
	if (xacts)
		avg->xact_time_us = stats_delta(cur->xact_time_us, older->xact_time_us) / xacts;
	if (assigns)
		avg->wait_time_us = stats_delta(cur->wait_time_us, older->wait_time_us) / assigns;
}
