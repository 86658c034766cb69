/*
 * Classification cache: statement text -> struct classify_result, bounded, LRU.
 *
 * A fixed array of entries, chained into buckets (power of two, at least twice the capacity) by
 * index, and threaded on one doubly linked LRU list (head = most recently used). Lookups compare
 * the 64-bit hash, then the length, then the stored copy of the text, so a hash collision can
 * never return another statement's result. When all entries are used, the LRU tail is unlinked
 * from its bucket and reused. Every operation is O(1) plus the bucket chain, whose expected
 * length stays below one.
 *
 * Raw texts (classify_sql_raw()) share the entries with normalised ones: both map a text to the
 * class of that text. A raw text is admitted only the second time it is offered: doorkeeper[]
 * remembers the last hash offered per bucket slot, so a statement with ever-changing constants
 * costs no allocation and evicts nothing.
 *
 * The hash is seeded per cache from its address, which is enough to keep a client from building
 * long chains offline; it is not a cryptographic defence (a chain is still bounded by the
 * capacity). Not thread-safe: one cache per worker.
 */
#include <stdlib.h>
#include <string.h>

#include "route/classify.h"

#define NIL UINT32_MAX

struct cache_entry {
	uint64_t hash;
	/* Owned copy of the statement text (NUL-terminated), NULL when the entry is free. */
	char *text;
	size_t len;
	struct classify_result result;
	/* Next entry in the same bucket, NIL at the end. */
	uint32_t chain;
	/* Neighbours on the LRU list (prev is towards the head, the most recently used). */
	uint32_t prev, next;
};

struct classify_cache {
	struct cache_entry *entries; /* owned, capacity of them */
	uint32_t capacity;
	uint32_t used;	      /* entries[0 .. used) have held a text at least once */
	uint32_t *buckets;    /* owned, nbuckets heads of chains, NIL for empty */
	uint64_t *doorkeeper; /* owned, nbuckets hashes of raw texts offered once (0: none) */
	uint32_t nbuckets;    /* power of two */
	uint32_t lru_head, lru_tail;
	size_t max_len;
	size_t count; /* entries holding a text now */
	uint64_t seed;
	uint64_t hits, misses, evictions, raw_hits;
};

/* 64-bit multiply-xorshift hash over 8-byte words; good spread, about 1 ns per word. */
static uint64_t cache_hash(uint64_t seed, const char *text, size_t len)
{
	const uint64_t m = 0x9e3779b97f4a7c15ull;
	uint64_t h = seed ^ (len * m);
	size_t i = 0;

	for (; i + 8 <= len; i += 8) {
		uint64_t w;

		memcpy(&w, text + i, 8);
		h = (h ^ w) * m;
		h ^= h >> 29;
	}
	if (i < len) {
		/* The last 0-7 bytes: as the 8 bytes ending the text when it has 8 (overlapping the
		 * word before; len is in the seed), so the load has a fixed size and needs no call.
		 */
		uint64_t w = 0;

		if (len >= 8)
			memcpy(&w, text + len - 8, 8);
		else
			for (size_t k = 0; k < len; k++)
				w |= (uint64_t)(unsigned char)text[k] << (8 * k);
		h = (h ^ w) * m;
		h ^= h >> 29;
	}
	/* splitmix64 finaliser */
	h ^= h >> 30;
	h *= 0xbf58476d1ce4e5b9ull;
	h ^= h >> 27;
	h *= 0x94d049bb133111ebull;
	h ^= h >> 31;
	return h;
}

struct classify_cache *classify_cache_new(size_t entries, size_t max_len)
{
	struct classify_cache *cache;
	uint32_t nb = 2;

	if (entries == 0 || entries > (1u << 24))
		return NULL;
	while (nb < 2 * entries)
		nb <<= 1;
	cache = calloc(1, sizeof(*cache));
	if (!cache)
		return NULL;
	cache->entries = calloc(entries, sizeof(*cache->entries));
	cache->buckets = malloc(nb * sizeof(*cache->buckets));
	cache->doorkeeper = calloc(nb, sizeof(*cache->doorkeeper));
	if (!cache->entries || !cache->buckets || !cache->doorkeeper) {
		classify_cache_free(cache);
		return NULL;
	}
	cache->capacity = (uint32_t)entries;
	cache->nbuckets = nb;
	cache->max_len = max_len ? max_len : CLASSIFY_CACHE_MAX_LEN_DEFAULT;
	cache->seed = (uint64_t)(uintptr_t)cache * 0x9e3779b97f4a7c15ull;
	cache->lru_head = cache->lru_tail = NIL;
	for (uint32_t i = 0; i < nb; i++)
		cache->buckets[i] = NIL;
	return cache;
}

void classify_cache_clear_all(struct classify_cache *cache)
{
	for (uint32_t i = 0; i < cache->used; i++) {
		free(cache->entries[i].text);
		cache->entries[i].text = NULL;
	}
	for (uint32_t i = 0; i < cache->nbuckets; i++)
		cache->buckets[i] = NIL;
	memset(cache->doorkeeper, 0, cache->nbuckets * sizeof(*cache->doorkeeper));
	cache->used = 0;
	cache->count = 0;
	cache->lru_head = cache->lru_tail = NIL;
}

void classify_cache_free(struct classify_cache *cache)
{
	if (!cache)
		return;
	if (cache->entries && cache->buckets && cache->doorkeeper)
		classify_cache_clear_all(cache);
	free(cache->entries);
	free(cache->buckets);
	free(cache->doorkeeper);
	free(cache);
}

static void lru_unlink(struct classify_cache *cache, uint32_t i)
{
	struct cache_entry *e = &cache->entries[i];

	if (e->prev != NIL)
		cache->entries[e->prev].next = e->next;
	else
		cache->lru_head = e->next;
	if (e->next != NIL)
		cache->entries[e->next].prev = e->prev;
	else
		cache->lru_tail = e->prev;
	e->prev = e->next = NIL;
}

static void lru_push_head(struct classify_cache *cache, uint32_t i)
{
	struct cache_entry *e = &cache->entries[i];

	e->prev = NIL;
	e->next = cache->lru_head;
	if (cache->lru_head != NIL)
		cache->entries[cache->lru_head].prev = i;
	cache->lru_head = i;
	if (cache->lru_tail == NIL)
		cache->lru_tail = i;
}

static uint32_t *bucket_of(struct classify_cache *cache, uint64_t hash)
{
	return &cache->buckets[hash & (cache->nbuckets - 1)];
}

/* Index of the entry holding text, NIL if none. */
static uint32_t cache_find(struct classify_cache *cache, uint64_t hash, const char *text,
			   size_t len)
{
	for (uint32_t i = *bucket_of(cache, hash); i != NIL; i = cache->entries[i].chain) {
		const struct cache_entry *e = &cache->entries[i];

		if (e->hash == hash && e->len == len && memcmp(e->text, text, len) == 0)
			return i;
	}
	return NIL;
}

uint64_t classify_cache_hash(const struct classify_cache *cache, const char *text, size_t len)
{
	return cache_hash(cache->seed, text, len);
}

bool classify_cache_get_hashed(struct classify_cache *cache, uint64_t hash, const char *text,
			       size_t len, struct classify_result *out)
{
	uint32_t i;

	if (len > cache->max_len)
		return false;
	i = cache_find(cache, hash, text, len);
	if (i == NIL)
		return false;
	if (cache->lru_head != i) {
		lru_unlink(cache, i);
		lru_push_head(cache, i);
	}
	*out = cache->entries[i].result;
	return true;
}

void classify_cache_count(struct classify_cache *cache, bool hit, bool raw)
{
	if (hit) {
		cache->hits++;
		cache->raw_hits += raw;
	} else {
		cache->misses++;
	}
}

bool classify_cache_get(struct classify_cache *cache, const char *text, size_t len,
			struct classify_result *out)
{
	bool hit = len <= cache->max_len &&
		   classify_cache_get_hashed(cache, cache_hash(cache->seed, text, len), text, len,
					     out);

	classify_cache_count(cache, hit, false);
	return hit;
}

/* Frees the least recently used entry and returns its index. */
static uint32_t cache_evict(struct classify_cache *cache)
{
	uint32_t victim = cache->lru_tail;
	struct cache_entry *e = &cache->entries[victim];
	uint32_t *link = bucket_of(cache, e->hash);

	while (*link != victim)
		link = &cache->entries[*link].chain;
	*link = e->chain;
	lru_unlink(cache, victim);
	free(e->text);
	e->text = NULL;
	cache->count--;
	cache->evictions++;
	return victim;
}

static void cache_put(struct classify_cache *cache, uint64_t hash, const char *text, size_t len,
		      const struct classify_result *res)
{
	uint32_t i, *bucket;
	struct cache_entry *e;
	char *copy;

	i = cache_find(cache, hash, text, len);
	if (i != NIL) {
		cache->entries[i].result = *res;
		return;
	}
	copy = malloc(len + 1);
	if (!copy)
		return;
	memcpy(copy, text, len);
	copy[len] = '\0';
	if (cache->used < cache->capacity)
		i = cache->used++;
	else
		i = cache_evict(cache);
	e = &cache->entries[i];
	e->hash = hash;
	e->text = copy;
	e->len = len;
	e->result = *res;
	bucket = bucket_of(cache, hash);
	e->chain = *bucket;
	*bucket = i;
	lru_push_head(cache, i);
	cache->count++;
}

void classify_cache_put(struct classify_cache *cache, const char *text, size_t len,
			const struct classify_result *res)
{
	if (len > cache->max_len)
		return;
	cache_put(cache, cache_hash(cache->seed, text, len), text, len, res);
}

void classify_cache_put_raw(struct classify_cache *cache, uint64_t hash, const char *text,
			    size_t len, const struct classify_result *res)
{
	uint64_t *slot = &cache->doorkeeper[hash & (cache->nbuckets - 1)];

	if (len > cache->max_len)
		return;
	if (*slot != hash) {
		*slot = hash; /* first sighting: remember it, store nothing */
		return;
	}
	*slot = 0;
	cache_put(cache, hash, text, len, res);
}

void classify_cache_get_stats(const struct classify_cache *cache, struct classify_stats *out)
{
	out->hits = cache->hits;
	out->raw_hits = cache->raw_hits;
	out->misses = cache->misses;
	out->evictions = cache->evictions;
	out->entries = cache->count;
	out->capacity = cache->capacity;
}
