/* Statement maps: open addressing by (truncated) name with tombstones; see prepared.h. */
#include "pool/prepared.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util/siphash.h"
#include "protocol/reader.h"

void stmt_map_init(struct stmt_map *m)
{
	memset(m, 0, sizeof(*m));
}

static void stmt_free_slot(struct stmt_map *m, struct stmt *s)
{
	m->bytes -= s->msg ? s->msg_len : 0;
	free(s->name);
	free(s->msg);
	memset(s, 0, sizeof(*s));
}

void stmt_map_clear(struct stmt_map *m)
{
	for (uint32_t i = 0; i < m->cap; i++)
		stmt_free_slot(m, &m->slots[i]);
	m->count = m->used = 0;
	m->bytes = 0;
}

void stmt_map_free(struct stmt_map *m)
{
	stmt_map_clear(m);
	free(m->slots);
	memset(m, 0, sizeof(*m));
}

uint64_t stmt_hash(const uint8_t *p, size_t len)
{
	return siphash_process(p, len);
}

/*
 * The hash of name by the bytes PostgreSQL keeps of it. One message's name is looked up in
 * several maps (the client's, its backend's) by several steps, and SipHash costs some hundred
 * instructions on a short name: the last one hashed is kept, per thread.
 */
static uint64_t stmt_name_hash(const char *name)
{
	static _Thread_local struct {
		size_t len;
		uint64_t hash;
		char name[STMT_NAME_MAX];
	} last = { SIZE_MAX, 0, { 0 } };
	size_t len = cstr_len(name, STMT_NAME_MAX);
	if (len == last.len && memcmp(name, last.name, len) == 0)
		return last.hash;
	last.hash = siphash_process(name, len);
	last.len = len;
	memcpy(last.name, name, len);
	return last.hash;
}

/* Home slot of name. */
static uint32_t stmt_name_slot(const char *name, uint32_t cap)
{
	return (uint32_t)stmt_name_hash(name) & (cap - 1);
}

struct stmt *stmt_map_find(const struct stmt_map *m, const char *name)
{
	if (!m->cap)
		return NULL;
	for (uint32_t i = stmt_name_slot(name, m->cap), n = 0; n < m->cap;
	     i = (i + 1) & (m->cap - 1), n++) {
		struct stmt *s = &m->slots[i];
		if (!s->name && !s->tomb)
			return NULL;
		/* Stored names are truncated: equal on the bytes PostgreSQL compares. */
		if (s->name && strncmp(s->name, name, STMT_NAME_MAX) == 0)
			return s;
	}
	return NULL;
}

static bool stmt_map_rehash(struct stmt_map *m, uint32_t ncap)
{
	struct stmt *ns = calloc(ncap, sizeof(*ns));
	if (!ns)
		return false;
	for (uint32_t i = 0; i < m->cap; i++) {
		struct stmt *s = &m->slots[i];
		if (!s->name)
			continue;
		uint32_t j = stmt_name_slot(s->name, ncap);
		while (ns[j].name)
			j = (j + 1) & (ncap - 1);
		ns[j] = *s;
	}
	free(m->slots);
	m->slots = ns;
	m->cap = ncap;
	m->used = m->count;
	return true;
}

bool stmt_map_put(struct stmt_map *m, const char *name, uint64_t hash, const uint8_t *msg,
		  uint32_t msg_len, uint64_t tick)
{
	struct stmt *s = stmt_map_find(m, name);
	size_t old = s && s->msg ? s->msg_len : 0;
	if (msg && m->bytes - old + msg_len > STMT_CLIENT_BYTES_MAX)
		return false;
	uint8_t *copy = NULL;
	if (msg) {
		copy = malloc(msg_len);
		if (!copy)
			return false;
		memcpy(copy, msg, msg_len);
		m->bytes += msg_len;
	}
	if (s) {
		m->bytes -= old;
		free(s->msg);
		s->msg = copy;
		s->msg_len = msg_len;
		if (s->hash != hash) {
			s->route = 0;
			s->route_flags = 0;
		}
		s->hash = hash;
		s->used = tick;
		return true;
	}
	if ((m->used + 1) * 2 > m->cap) {
		uint32_t ncap = m->cap ? m->cap : 16;
		while ((m->count + 1) * 2 > ncap)
			ncap *= 2;
		if (!stmt_map_rehash(m, ncap)) {
			m->bytes -= copy ? msg_len : 0;
			free(copy);
			return false;
		}
	}
	char *n = strndup(name, STMT_NAME_MAX);
	if (!n) {
		m->bytes -= copy ? msg_len : 0;
		free(copy);
		return false;
	}
	uint32_t i = stmt_name_slot(name, m->cap);
	while (m->slots[i].name)
		i = (i + 1) & (m->cap - 1);
	s = &m->slots[i];
	if (!s->tomb)
		m->used++;
	s->tomb = false;
	s->name = n;
	s->route = 0;
	s->route_flags = 0;
	s->hash = hash;
	s->msg = copy;
	s->msg_len = msg_len;
	s->used = tick;
	m->count++;
	return true;
}

void stmt_map_remove(struct stmt_map *m, const char *name)
{
	struct stmt *s = stmt_map_find(m, name);
	if (!s)
		return;
	stmt_free_slot(m, s);
	s->tomb = true;
	m->count--;
}

struct stmt *stmt_map_oldest(const struct stmt_map *m)
{
	struct stmt *best = NULL;
	for (uint32_t i = 0; i < m->cap; i++) {
		struct stmt *s = &m->slots[i];
		if (s->name && (!best || s->used < best->used))
			best = s;
	}
	return best;
}

bool stmt_map_has_room(const struct stmt_map *m, const char *name, uint32_t msg_len)
{
	const struct stmt *s = stmt_map_find(m, name);
	size_t old = s && s->msg ? s->msg_len : 0;
	if (!s && m->count >= STMT_CLIENT_MAX)
		return false;
	return m->bytes - old + msg_len <= STMT_CLIENT_BYTES_MAX;
}

uint32_t stmt_map_longest_probe(const struct stmt_map *m)
{
	uint32_t longest = 0;
	for (uint32_t i = 0; i < m->cap; i++) {
		const struct stmt *s = &m->slots[i];
		if (!s->name)
			continue;
		uint32_t d = (i - stmt_name_slot(s->name, m->cap)) & (m->cap - 1);
		if (d > longest)
			longest = d;
	}
	return longest;
}
