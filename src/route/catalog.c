/*
 * pg_proc volatility catalog; see catalog.h. An open-addressing hash of "schema.name" and
 * "name" keys (the unqualified key holds the most volatile overload in any schema).
 */
#include "route/catalog.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Keys live one after the other in one buffer and slots hold their offsets: 8 bytes a slot and
 * no malloc chunk per key. pg_proc's 3,300 functions make 6,600 keys; with a strdup per key and
 * pointer slots the catalog was 0.47 MB, now 0.26 MB.
 */
struct catalog_entry {
	uint32_t key; /* offset of "schema.name" or "name" in names; 0 = empty slot */
	char volatility;
};

struct func_catalog {
	struct catalog_entry *slots; /* owned */
	size_t cap;		     /* power of two */
	size_t count;
	char *names;	  /* owned: the keys, each NUL-terminated; names[0] is unused */
	size_t names_len; /* bytes used */
	size_t names_cap;
};

#define CATALOG_NAMES_INITIAL (16u * 1024u)

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
	c->names = malloc(CATALOG_NAMES_INITIAL);
	if (!c->slots || !c->names) {
		catalog_free(c);
		return NULL;
	}
	c->names[0] = '\0';
	c->names_len = 1;
	c->names_cap = CATALOG_NAMES_INITIAL;
	return c;
}

void catalog_free(struct func_catalog *c)
{
	if (!c)
		return;
	free(c->slots);
	free(c->names);
	free(c);
}

size_t catalog_size(const struct func_catalog *c)
{
	return c ? c->count : 0;
}

/* The slot holding key, or the empty slot where it would go. */
static struct catalog_entry *catalog_find(struct catalog_entry *slots, size_t cap,
					  const char *names, const char *key)
{
	size_t i = catalog_hash(key) & (cap - 1);
	while (slots[i].key && strcmp(names + slots[i].key, key) != 0)
		i = (i + 1) & (cap - 1);
	return &slots[i];
}

static struct catalog_entry *catalog_slot(const struct func_catalog *c, const char *key)
{
	return catalog_find(c->slots, c->cap, c->names, key);
}

static bool catalog_grow(struct func_catalog *c)
{
	size_t cap = c->cap * 2;
	struct catalog_entry *slots = calloc(cap, sizeof(*slots));
	if (!slots)
		return false;
	for (size_t i = 0; i < c->cap; i++) {
		if (c->slots[i].key)
			*catalog_find(slots, cap, c->names, c->names + c->slots[i].key) =
				c->slots[i];
	}
	free(c->slots);
	c->slots = slots;
	c->cap = cap;
	return true;
}

/* Appends key to names; returns its offset, 0 when out of memory. */
static uint32_t catalog_intern(struct func_catalog *c, const char *key)
{
	size_t len = strlen(key) + 1;
	if (c->names_len + len > UINT32_MAX)
		return 0;
	if (c->names_len + len > c->names_cap) {
		size_t cap = c->names_cap * 2;
		while (cap < c->names_len + len)
			cap *= 2;
		char *names = realloc(c->names, cap);
		if (!names)
			return 0;
		c->names = names;
		c->names_cap = cap;
	}
	uint32_t off = (uint32_t)c->names_len;
	memcpy(c->names + off, key, len);
	c->names_len += len;
	return off;
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
	uint32_t off = catalog_intern(c, key);
	if (!off)
		return false;
	/* The slot pointer is still good: interning moves names, not slots. */
	e->key = off;
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
	/*
	 * As for health checks and auth_query: no GSSAPI encryption attempt. It may talk to a KDC
	 * with blocking calls, and merely trying it made Kerberos's libraries 0.6 MB resident.
	 */
	keys[n] = "gssencmode";
	vals[n++] = "disable";
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
