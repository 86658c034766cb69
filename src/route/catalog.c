/*
 * pg_proc volatility catalog; see catalog.h. An open-addressing hash of "schema.name" and
 * "name" keys (the unqualified key holds the most volatile overload in any schema).
 */
#include "route/catalog.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct catalog_entry {
	char *key; /* owned: "schema.name" or "name"; NULL = empty slot */
	char volatility;
};

struct func_catalog {
	struct catalog_entry *slots; /* owned */
	size_t cap;		     /* power of two */
	size_t count;
};

static uint64_t catalog_hash(const char *s)
{
	uint64_t h = 1469598103934665603ull;
	for (; *s; s++) {
		h ^= (uint8_t)*s;
		h *= 1099511628211ull;
	}
	return h;
}

static int catalog_rank(char v)
{
	return v == 'v' ? 3 : v == 's' ? 2 : v == 'i' ? 1 : 0;
}

struct func_catalog *catalog_new(void)
{
	struct func_catalog *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->cap = 1024;
	c->slots = calloc(c->cap, sizeof(*c->slots));
	if (!c->slots) {
		free(c);
		return NULL;
	}
	return c;
}

void catalog_free(struct func_catalog *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->cap; i++)
		free(c->slots[i].key);
	free(c->slots);
	free(c);
}

size_t catalog_size(const struct func_catalog *c)
{
	return c ? c->count : 0;
}

static struct catalog_entry *catalog_slot(const struct func_catalog *c, const char *key)
{
	size_t i = catalog_hash(key) & (c->cap - 1);
	while (c->slots[i].key && strcmp(c->slots[i].key, key) != 0)
		i = (i + 1) & (c->cap - 1);
	return &c->slots[i];
}

static bool catalog_grow(struct func_catalog *c)
{
	struct func_catalog bigger = { calloc(c->cap * 2, sizeof(*c->slots)), c->cap * 2, 0 };
	if (!bigger.slots)
		return false;
	for (size_t i = 0; i < c->cap; i++) {
		if (!c->slots[i].key)
			continue;
		*catalog_slot(&bigger, c->slots[i].key) = c->slots[i];
		bigger.count++;
	}
	free(c->slots);
	*c = bigger;
	return true;
}

/* Stores key with volatility v, keeping the more volatile of an existing entry's and v. */
static bool catalog_put(struct func_catalog *c, const char *key, char v)
{
	if ((c->count + 1) * 2 > c->cap && !catalog_grow(c))
		return false;
	struct catalog_entry *e = catalog_slot(c, key);
	if (e->key) {
		if (catalog_rank(v) > catalog_rank(e->volatility))
			e->volatility = v;
		return true;
	}
	e->key = strdup(key);
	if (!e->key)
		return false;
	e->volatility = v;
	c->count++;
	return true;
}

bool catalog_add(struct func_catalog *c, const char *schema, const char *name, char volatility)
{
	char key[160];
	if (snprintf(key, sizeof(key), "%s.%s", schema, name) >= (int)sizeof(key))
		return true; /* longer than NAMEDATALEN allows: never looked up */
	return catalog_put(c, key, volatility) && catalog_put(c, name, volatility);
}

int catalog_volatility(void *arg, const char *schema, const char *name)
{
	const struct func_catalog *c = arg;
	char key[160];
	if (schema)
		snprintf(key, sizeof(key), "%s.%s", schema, name);
	else
		snprintf(key, sizeof(key), "%s", name);
	const struct catalog_entry *e = catalog_slot(c, key);
	return e->key ? e->volatility : 0;
}

struct func_catalog *catalog_load(const struct catalog_source *src, char *err, size_t errcap)
{
	char port[16], timeout[16], options[64];
	snprintf(port, sizeof(port), "%d", src->port);
	/* libpq's connect_timeout counts whole seconds (at least 2 are honoured). */
	snprintf(timeout, sizeof(timeout), "%u", (src->timeout_ms + 999) / 1000);
	snprintf(options, sizeof(options), "-c statement_timeout=%u", src->timeout_ms);
	const char *keys[16] = { "host",    "port",
				 "user",    "password",
				 "dbname",  "connect_timeout",
				 "options", "application_name" };
	const char *vals[16] = { src->host,   port,    src->user, src->password,
				 src->dbname, timeout, options,	  "pgrelay catalog" };
	int n = 8;
	n += libpq_tls_params(&src->tls, keys + n, vals + n);
	keys[n] = vals[n] = NULL;
	PGconn *conn = PQconnectdbParams(keys, vals, 0);
	if (PQstatus(conn) != CONNECTION_OK) {
		snprintf(err, errcap, "%s", PQerrorMessage(conn));
		PQfinish(conn);
		return NULL;
	}
	PGresult *res = PQexec(conn, "SELECT n.nspname, p.proname, p.provolatile FROM pg_proc p "
				     "JOIN pg_namespace n ON n.oid = p.pronamespace");
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		snprintf(err, errcap, "%s", PQerrorMessage(conn));
		PQclear(res);
		PQfinish(conn);
		return NULL;
	}
	struct func_catalog *c = catalog_new();
	int rows = PQntuples(res);
	for (int i = 0; c && i < rows && i < CATALOG_MAX_FUNCTIONS; i++) {
		const char *v = PQgetvalue(res, i, 2);
		if (!catalog_add(c, PQgetvalue(res, i, 0), PQgetvalue(res, i, 1), v[0])) {
			catalog_free(c);
			c = NULL;
		}
	}
	if (!c)
		snprintf(err, errcap, "out of memory");
	PQclear(res);
	PQfinish(conn);
	return c;
}
