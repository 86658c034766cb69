/*
 * The failover history: a ring of the last CLUSTER_HISTORY_MAX events (struct cluster_event),
 * written by the manager thread and copied by any thread (SHOW pool_failover_history). Guarded by
 * its own mutex so a reader never waits on the manager's work.
 */
#ifndef PGRELAY_FAILOVER_HISTORY_H
#define PGRELAY_FAILOVER_HISTORY_H

#include <pthread.h>

#include "failover/cluster.h"

struct history {
	pthread_mutex_t mu;
	/*
	 * mu. Only the count entries from head on (wrapping) are defined: history_init does not
	 * clear the ring, so its 88 kB stay untouched (not resident) until events come.
	 */
	struct cluster_event ring[CLUSTER_HISTORY_MAX];
	int head;  /* mu: index of the oldest entry */
	int count; /* mu: entries in use */
};

/* An empty history; the ring's entries are not written (see ring). */
void history_init(struct history *h);
void history_destroy(struct history *h);
/* Appends e (copied), dropping the oldest entry when full. */
void history_add(struct history *h, const struct cluster_event *e);
/* Copies up to cap entries, oldest first; returns how many. */
int history_copy(struct history *h, struct cluster_event *out, int cap);

#endif
