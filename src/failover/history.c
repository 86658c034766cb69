/*
 * The failover history ring (see history.h). Entries are whole structs; the ring never
 * allocates.
 */
#include "failover/history.h"

void history_init(struct history *h)
{
	pthread_mutex_init(&h->mu, NULL);
	h->head = 0;
	h->count = 0;
}

void history_destroy(struct history *h)
{
	pthread_mutex_destroy(&h->mu);
}

void history_add(struct history *h, const struct cluster_event *e)
{
	pthread_mutex_lock(&h->mu);
	if (h->count == CLUSTER_HISTORY_MAX) {
		h->ring[h->head] = *e;
		h->head = (h->head + 1) % CLUSTER_HISTORY_MAX;
	} else {
		h->ring[(h->head + h->count) % CLUSTER_HISTORY_MAX] = *e;
		h->count++;
	}
	pthread_mutex_unlock(&h->mu);
}

int history_copy(struct history *h, struct cluster_event *out, int cap)
{
	int n;

	if (cap <= 0)
		return 0;
	pthread_mutex_lock(&h->mu);
	n = h->count < cap ? h->count : cap;
	/* The newest n entries when cap is short would hide the latest events: keep the newest. */
	for (int i = 0; i < n; i++)
		out[i] = h->ring[(h->head + h->count - n + i) % CLUSTER_HISTORY_MAX];
	pthread_mutex_unlock(&h->mu);
	return n;
}
