/*
 * Function volatility from pg_proc, for the classifier's volatility callback (classify.h): a
 * statement calling a user function goes to a standby only if the catalog says the function is
 * stable or immutable (pgpool-II looks pg_proc up the same way). One catalog per database, loaded
 * once with one query and kept; a reload (SIGHUP) loads it again.
 *
 * Loading blocks (libpq, bounded by timeout_ms) and so runs on libuv's thread pool, never on a
 * worker loop; the finished catalog is then only read, on the worker's loop.
 */
#ifndef PGRELAY_ROUTE_CATALOG_H
#define PGRELAY_ROUTE_CATALOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net/tls_ctx.h"

#define CATALOG_MAX_FUNCTIONS                                                                      \
	200000 /* rows kept; a larger catalog is cut (safe: unknown = 'v')                         \
		*/

struct func_catalog; /* opaque: name -> volatility */

struct catalog_source {
	const char *host; /* borrowed */
	int port;
	const char *user;     /* borrowed */
	const char *password; /* borrowed */
	const char *dbname;   /* borrowed */
	uint32_t timeout_ms;  /* connect and query */
	struct libpq_tls tls; /* borrowed strings */
};

/* Connects, reads pg_proc and returns the catalog; NULL with a reason in err. Blocking. */
struct func_catalog *catalog_load(const struct catalog_source *src, char *err, size_t errcap)
	__attribute__((warn_unused_result));

/* Builds a catalog from rows ("schema", "name", volatility 'i'/'s'/'v'); for tests. */
struct func_catalog *catalog_new(void) __attribute__((warn_unused_result));
bool catalog_add(struct func_catalog *c, const char *schema, const char *name, char volatility)
	__attribute__((warn_unused_result));
size_t catalog_size(const struct func_catalog *c);
void catalog_free(struct func_catalog *c);

/*
 * The classifier callback: arg is a struct func_catalog. A qualified call answers for that
 * schema; an unqualified one (search_path unknown) answers the most volatile function of that
 * name in any schema. 0 when unknown.
 */
int catalog_volatility(void *arg, const char *schema, const char *name);

#endif
