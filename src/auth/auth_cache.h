/*
 * The auth_query cache: secrets that auth_query fetched, kept per (lookup database, user) for a
 * time-to-live so that a login storm of one user runs one lookup, not one per login.
 *
 * Ground rules (doc/auth.md, "auth_query"):
 *  - an entry is put only after a client authenticated with that secret: nothing a client sends
 *    before authenticating creates lasting state, and user names that do not exist (or whose
 *    secret nobody proved) are never remembered; negative answers are never cached;
 *  - an entry's age counts from when the server answered, never from its last use, so a changed
 *    password or a VALID UNTIL that passed is seen at most ttl later;
 *  - the cache holds at most cap entries; a put into a full cache evicts the least recently used.
 *
 * Lookups are linear over at most cap entries (a few microseconds for the default 1024), which
 * is noise next to the login they serve. Single-threaded: one cache per worker, used on its loop.
 */
#ifndef PGRELAY_AUTH_AUTH_CACHE_H
#define PGRELAY_AUTH_AUTH_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth/users.h"

#define AUTH_CACHE_DEFAULT_CAP 1024

struct auth_cache; /* opaque */

/* An empty cache of at most cap entries (cap >= 1); NULL when out of memory. */
struct auth_cache *auth_cache_new(size_t cap) __attribute__((warn_unused_result));
void auth_cache_free(struct auth_cache *cache);

/*
 * The entry of (dbname, user) if it was fetched less than ttl_ms before now_ms, else NULL (an
 * expired entry is dropped). Marks it used. The pointer is borrowed until the next put, forget
 * or clear: copy what you keep.
 */
const struct user_entry *auth_cache_get(struct auth_cache *cache, const char *dbname,
					const char *user, uint64_t now_ms, uint64_t ttl_ms);
/*
 * Stores *e (its owned fields move into the cache; *e is wiped) as fetched at fetched_ms,
 * replacing an entry of the same key and evicting the least recently used one when full. False
 * when out of memory (then *e is cleared all the same).
 */
bool auth_cache_put(struct auth_cache *cache, const char *dbname, struct user_entry *e,
		    uint64_t fetched_ms);
/* Drops the entry of (dbname, user), if any. */
void auth_cache_forget(struct auth_cache *cache, const char *dbname, const char *user);
/* Drops every entry (the config that told what the entries mean changed). */
void auth_cache_clear(struct auth_cache *cache);
size_t auth_cache_count(const struct auth_cache *cache);

#endif
