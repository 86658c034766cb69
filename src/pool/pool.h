/*
 * A pool groups backend connections that are interchangeable: same node set, database, user and
 * startup options. For now it holds the "welcome" the backend sends at login (ParameterStatus
 * values), so later clients can be logged in without waiting for a backend connection.
 */
#ifndef PGRELAY_POOL_POOL_H
#define PGRELAY_POOL_POOL_H

#include <stdbool.h>
#include <stddef.h>

#include "util/list.h"

#define POOL_MAX_PARAMS 64

struct worker;

struct pool_param {
	char *name;  /* owned */
	char *value; /* owned */
};

struct pool {
	struct list_node node; /* in worker->pools */
	char *key;	       /* owned: database \0 user \0 options (see pool_key_build) */
	size_t key_len;
	struct pool_param params[POOL_MAX_PARAMS]; /* the backend's ParameterStatus values */
	int n_params;
	bool have_welcome; /* params come from a completed backend login */
	int n_servers;	   /* backend connections of this pool */
};

/* Finds or creates the pool for key (copied). NULL when out of memory. */
struct pool *pool_get(struct worker *w, const char *key, size_t key_len);
/* Records a ParameterStatus value from a backend. */
void pool_set_param(struct pool *p, const char *name, const char *value);
const char *pool_get_param(const struct pool *p, const char *name);
void pool_free_all(struct worker *w);

#endif
