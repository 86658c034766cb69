/* stats.h: counting is a few additions and a short bucket scan per unit. */
#include "pool/stats.h"

const uint64_t stats_bucket_bounds_us[STATS_BUCKETS] = {
	500,	1000,	2500,	5000,	 10000,	  25000,   50000,
	100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000,
};

void stats_unit_done(struct relay_stats *s, bool txn_ended, uint64_t dur_us)
{
	s->query_cnt++;
	if (txn_ended)
		s->xact_cnt++;
	if (dur_us == UINT64_MAX)
		return;
	int i = 0;
	while (i < STATS_BUCKETS && dur_us > stats_bucket_bounds_us[i])
		i++;
	s->dur_bucket[i]++;
	s->dur_count++;
	s->dur_sum_us += dur_us;
}
