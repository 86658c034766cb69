/*
 * The auth_query cache; see auth_cache.h. A fixed array of slots, each a user entry (owned), the
 * database it was looked up in (owned), when it was fetched and a use stamp for LRU eviction.
 * A slot is free when its entry has no name.
 */
#include "auth/auth_cache.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

struct auth_cache_slot {
	struct user_entry entry; /* owned; entry.name == NULL: free slot */
	char *dbname;		 /* owned: the database the lookup ran in */
	uint64_t fetched_ms;	 /* when the server gave the secret; the TTL counts from here */
	uint64_t used;		 /* value of the cache's clock at the last get or put */
};

struct auth_cache {
	struct auth_cache_slot *slots; /* owned, cap of them */
	size_t cap;
	size_t count;
	uint64_t clock; /* ticks once per get or put: the LRU order */
};

struct auth_cache *auth_cache_new(size_t cap)
{
	struct auth_cache *cache = calloc(1, sizeof(*cache));
	if (!cache || cap == 0)
		goto fail;
	cache->slots = calloc(cap, sizeof(*cache->slots));
	if (!cache->slots)
		goto fail;
	cache->cap = cap;
	return cache;
fail:
	free(cache);
	return NULL;
}

static void auth_cache_slot_clear(struct auth_cache *cache, struct auth_cache_slot *s)
{
	if (!s->entry.name)
		return;
	users_entry_clear(&s->entry);
	free(s->dbname);
	memset(s, 0, sizeof(*s));
	cache->count--;
}

void auth_cache_clear(struct auth_cache *cache)
{
	for (size_t i = 0; cache && i < cache->cap; i++)
		auth_cache_slot_clear(cache, &cache->slots[i]);
}

void auth_cache_free(struct auth_cache *cache)
{
	if (!cache)
		return;
	auth_cache_clear(cache);
	free(cache->slots);
	free(cache);
}

static struct auth_cache_slot *auth_cache_find(struct auth_cache *cache, const char *dbname,
					       const char *user)
{
	for (size_t i = 0; i < cache->cap; i++) {
		struct auth_cache_slot *s = &cache->slots[i];
		if (s->entry.name && strcmp(s->entry.name, user) == 0 &&
		    strcmp(s->dbname, dbname) == 0)
			return s;
	}
	return NULL;
}

const struct user_entry *auth_cache_get(struct auth_cache *cache, const char *dbname,
					const char *user, uint64_t now_ms, uint64_t ttl_ms)
{
	struct auth_cache_slot *s = auth_cache_find(cache, dbname, user);
	if (!s)
		return NULL;
	/* A clock that went backwards (it should not) expires the entry rather than keep it. */
	if (now_ms < s->fetched_ms || now_ms - s->fetched_ms >= ttl_ms) {
		auth_cache_slot_clear(cache, s);
		return NULL;
	}
	s->used = ++cache->clock;
	return &s->entry;
}

/* The slot a new entry goes to: a free one, else the least recently used (cleared). */
static struct auth_cache_slot *auth_cache_victim(struct auth_cache *cache)
{
	struct auth_cache_slot *lru = &cache->slots[0];
	for (size_t i = 0; i < cache->cap; i++) {
		struct auth_cache_slot *s = &cache->slots[i];
		if (!s->entry.name)
			return s;
		if (s->used < lru->used)
			lru = s;
	}
	auth_cache_slot_clear(cache, lru);
	return lru;
}

bool auth_cache_put(struct auth_cache *cache, const char *dbname, struct user_entry *e,
		    uint64_t fetched_ms)
{
	struct auth_cache_slot *s = auth_cache_find(cache, dbname, e->name);
	if (s)
		auth_cache_slot_clear(cache, s);
	char *db = strdup(dbname);
	if (!db || !e->name) {
		free(db);
		users_entry_clear(e);
		return false;
	}
	s = auth_cache_victim(cache);
	s->entry = *e; /* the owned name and plain move here */
	OPENSSL_cleanse(e, sizeof(*e));
	s->dbname = db;
	s->fetched_ms = fetched_ms;
	s->used = ++cache->clock;
	cache->count++;
	return true;
}

void auth_cache_forget(struct auth_cache *cache, const char *dbname, const char *user)
{
	struct auth_cache_slot *s = auth_cache_find(cache, dbname, user);
	if (s)
		auth_cache_slot_clear(cache, s);
}

size_t auth_cache_count(const struct auth_cache *cache)
{
	return cache ? cache->count : 0;
}
