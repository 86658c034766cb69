/*
 * Named prepared statements across pooled backends (transaction mode).
 *
 * A client's protocol-level statements are kept per client: name -> the Parse message it sent
 * (an owned copy, so it can be replayed) and a hash of what the name stands for (query text and
 * parameter types). Each backend connection keeps name -> hash of what is prepared on it, bounded
 * (STMT_SERVER_MAX, least recently used closed first). Before a Bind or Describe reaches a backend
 * that lacks the statement, or has another statement under that name, pgrelay injects Close and
 * Parse and hides their answers (see outstanding.h).
 *
 * Names are keyed by their first STMT_NAME_MAX bytes, as PostgreSQL's own table of prepared
 * statements does (a NAMEDATALEN key, compared with strncmp): two names that share those bytes are
 * one statement on the server and here. Both tables hash names with SipHash under a per-process
 * random key, so a client cannot pick names that pile up in one probe chain. A client's kept
 * Parse copies are bounded in number (STMT_CLIENT_MAX) and in bytes (STMT_CLIENT_BYTES_MAX); a
 * client over either limit is pinned to its backend instead (stmt_map_has_room).
 */
#ifndef PGRELAY_POOL_PREPARED_H
#define PGRELAY_POOL_PREPARED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STMT_SERVER_MAX 256   /* statements kept prepared per backend connection */
#define STMT_CLIENT_MAX 10000 /* statements a client may keep */
/* Bytes of Parse copies a client may keep (10,000 x 30 KB would be 300 MB per client). */
#define STMT_CLIENT_BYTES_MAX (4u * 1024u * 1024u)
#define STMT_NAME_MAX	      63 /* PostgreSQL's NAMEDATALEN - 1: longer names are truncated */
#define STMT_PARSE_MAX                                                                             \
	(30u * 1024u) /* largest Parse tracked; a larger named one pins the client                 \
		       */

struct stmt {
	char *name;    /* owned, at most STMT_NAME_MAX bytes; NULL for an empty slot */
	uint64_t hash; /* of the Parse body after the name */
	uint8_t *msg;  /* owned copy of the whole Parse message, or NULL (server maps) */
	uint32_t msg_len;
	uint64_t used;	      /* tick of last use, for LRU */
	bool tomb;	      /* removed; keeps probe chains intact */
	uint8_t route;	      /* client maps: 1 + enum classify_route of its query, 0 unknown */
	uint32_t route_flags; /* client maps: CLASSIFY_* flags of its query */
};

struct stmt_map {
	struct stmt *slots; /* owned */
	uint32_t cap;	    /* power of two or 0 */
	uint32_t count;	    /* live entries */
	uint32_t used;	    /* live + tombstones */
	uint32_t bytes;	    /* sum of msg_len of the kept copies (at most STMT_CLIENT_BYTES_MAX) */
};

void stmt_map_init(struct stmt_map *m);
void stmt_map_free(struct stmt_map *m);
void stmt_map_clear(struct stmt_map *m);
struct stmt *stmt_map_find(const struct stmt_map *m, const char *name);
/*
 * Inserts or replaces name; msg (may be NULL) is copied. False when out of memory, or when the
 * copy would take the map past STMT_CLIENT_BYTES_MAX (callers check stmt_map_has_room first).
 */
bool stmt_map_put(struct stmt_map *m, const char *name, uint64_t hash, const uint8_t *msg,
		  uint32_t msg_len, uint64_t tick) __attribute__((warn_unused_result));
void stmt_map_remove(struct stmt_map *m, const char *name);
/* The least recently used entry, or NULL when empty. */
struct stmt *stmt_map_oldest(const struct stmt_map *m);
/*
 * May a client map keep a copy of msg_len bytes under name (replacing what name holds)? False
 * past STMT_CLIENT_MAX statements or STMT_CLIENT_BYTES_MAX bytes: the caller pins the client.
 */
bool stmt_map_has_room(const struct stmt_map *m, const char *name, uint32_t msg_len);
/* Longest distance of a live entry from its home slot (tests and diagnostics). */
uint32_t stmt_map_longest_probe(const struct stmt_map *m);

/*
 * Keyed hash (SipHash-2-4, process key) of the part of a Parse body that defines the statement
 * (after the name): a client cannot craft two texts that pass for one statement.
 */
uint64_t stmt_hash(const uint8_t *p, size_t len);

#endif
