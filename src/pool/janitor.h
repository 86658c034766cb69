/*
 * The janitor: the worker's periodic sweep (every JANITOR_MS) for timeouts, min_pool_size, unused
 * pools and the end of a smart shutdown. See janitor.c.
 */
#ifndef PGRELAY_POOL_JANITOR_H
#define PGRELAY_POOL_JANITOR_H

struct worker;

/* Starts w's janitor timer on its loop; worker_run closes it with the loop's other handles. */
void janitor_start(struct worker *w);

#endif
