/*
 * Pools: found by key with a linear scan of the worker's list (a handful of database/user pairs
 * in practice; a hash comes with connection pooling). Pools live until the worker stops.
 */
#include "pool/pool.h"

#include <stdlib.h>
#include <string.h>

#include "pool/worker.h"

struct pool *pool_get(struct worker *w, const char *key, size_t key_len)
{
	struct list_node *pos, *tmp;
	list_for_each_safe(pos, tmp, &w->pools)
	{
		struct pool *p = list_entry(pos, struct pool, node);
		if (p->key_len == key_len && memcmp(p->key, key, key_len) == 0)
			return p;
	}
	struct pool *p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->key = malloc(key_len);
	if (!p->key) {
		free(p);
		return NULL;
	}
	memcpy(p->key, key, key_len);
	p->key_len = key_len;
	list_append(&w->pools, &p->node);
	return p;
}

const char *pool_get_param(const struct pool *p, const char *name)
{
	for (int i = 0; i < p->n_params; i++)
		if (strcmp(p->params[i].name, name) == 0)
			return p->params[i].value;
	return NULL;
}

void pool_set_param(struct pool *p, const char *name, const char *value)
{
	for (int i = 0; i < p->n_params; i++) {
		if (strcmp(p->params[i].name, name) == 0) {
			if (strcmp(p->params[i].value, value) == 0)
				return;
			char *v = strdup(value);
			if (!v)
				return;
			free(p->params[i].value);
			p->params[i].value = v;
			return;
		}
	}
	if (p->n_params >= POOL_MAX_PARAMS)
		return;
	char *n = strdup(name), *v = strdup(value);
	if (!n || !v) {
		free(n);
		free(v);
		return;
	}
	p->params[p->n_params].name = n;
	p->params[p->n_params].value = v;
	p->n_params++;
}

void pool_free_all(struct worker *w)
{
	struct list_node *pos, *tmp;
	list_for_each_safe(pos, tmp, &w->pools)
	{
		struct pool *p = list_entry(pos, struct pool, node);
		list_del(&p->node);
		for (int i = 0; i < p->n_params; i++) {
			free(p->params[i].name);
			free(p->params[i].value);
		}
		free(p->key);
		free(p);
	}
}
