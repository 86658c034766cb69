/*
 * SQL statement classifier for read/write splitting (pgpool-II semantics). Pure: one statement
 * string (a simple-protocol Query body, possibly several statements) goes in, a route, the rule
 * that decided it and a set of flags come out. No I/O, no logging, no session state: what a
 * session has done before (open transaction, earlier writes, which backend holds a cursor or a
 * prepared statement) is the router's business, fed by the flags and the object name this module
 * returns. Because the answer depends only on the text and the classifier's options, it can be
 * cached by text; see classify_sql().
 *
 * The grammar is PostgreSQL's own (libpg_query): a statement the parser rejects goes to the
 * primary. The decisions and the built-in function tables are explained in
 * doc/routing-classifier.md.
 *
 * Not thread-safe: one struct classifier per worker (the cache and its counters are mutated by
 * every call). libpg_query itself keeps per-thread memory and may be used by several workers.
 */
#ifndef PGRELAY_ROUTE_CLASSIFY_H
#define PGRELAY_ROUTE_CLASSIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Where a statement may run. */
enum classify_route {
	/* Writes, or anything not provably read-only: the primary. */
	ROUTE_PRIMARY,
	/* Read-only: the primary or any standby. */
	ROUTE_ANY,
	/* Session or transaction state (SET, BEGIN, COMMIT, SAVEPOINT, PREPARE, DISCARD...): every
	 * backend the session uses now, and replayed (for session state) on one it attaches later.
	 */
	ROUTE_ALL,
	/* Uses an object created by an earlier statement (FETCH/MOVE/CLOSE a cursor, EXECUTE a
	 * prepared statement): the backend that ran that statement, found by the router from
	 * result.object. A router that does not know the name sends it to the primary. */
	ROUTE_FOLLOW,
};

/* Flags of struct classify_result; for a multi-statement string, the union over statements. */
enum {
	/* May modify data or schema or take locks: the router treats the transaction as written
	 * (read-your-writes). Set for every single statement routed to the primary except EXPLAIN
	 * without ANALYZE; a multi-statement string has it only when a part has it. */
	CLASSIFY_WRITE = 1u << 0,
	/* BEGIN, START TRANSACTION, or COMMIT/ROLLBACK AND CHAIN (which open the next one). */
	CLASSIFY_TXN_BEGIN = 1u << 1,
	/* COMMIT, END, ROLLBACK, ABORT, PREPARE TRANSACTION (which detaches the transaction). */
	CLASSIFY_TXN_END = 1u << 2,
	/* BEGIN/START/SET TRANSACTION/SET SESSION CHARACTERISTICS with READ ONLY. */
	CLASSIFY_TXN_READ_ONLY = 1u << 3,
	/* The same with READ WRITE. */
	CLASSIFY_TXN_READ_WRITE = 1u << 4,
	/* The same with ISOLATION LEVEL SERIALIZABLE. */
	CLASSIFY_TXN_SERIALIZABLE = 1u << 5,
	/* SAVEPOINT, RELEASE [SAVEPOINT], ROLLBACK TO [SAVEPOINT]. */
	CLASSIFY_TXN_SAVEPOINT = 1u << 6,
	/* PREPARE TRANSACTION, COMMIT PREPARED, ROLLBACK PREPARED. */
	CLASSIFY_TXN_2PC = 1u << 7,
	/* SET, SET LOCAL, RESET, SET TRANSACTION, SET SESSION CHARACTERISTICS, SET CONSTRAINTS. */
	CLASSIFY_SET = 1u << 8,
	/* SET LOCAL (and SET TRANSACTION, SET CONSTRAINTS): dies with the transaction. */
	CLASSIFY_SET_LOCAL = 1u << 9,
	/* DISCARD, DEALLOCATE, RESET ALL: drops session state the router may be replaying. */
	CLASSIFY_SESSION_RESET = 1u << 10,
	/* DECLARE CURSOR: result.object names the cursor; FETCH/MOVE/CLOSE will follow it. */
	CLASSIFY_CURSOR_DECLARE = 1u << 11,
	/* PREPARE name AS: result.object names it, result.inner_route is where EXECUTE may go. */
	CLASSIFY_PREPARE = 1u << 12,
	/* More than one statement in the string. */
	CLASSIFY_MULTI = 1u << 13,
	/* The parser rejected the string (or ran out of memory). */
	CLASSIFY_PARSE_ERROR = 1u << 14,
	/* Empty, blank or comment-only string. */
	CLASSIFY_EMPTY = 1u << 15,
	/* A leading pgrelay hint comment forced the route. */
	CLASSIFY_HINT = 1u << 16,
};

/* Longest object name kept, with its NUL; PostgreSQL's NAMEDATALEN plus room for "schema.". */
#define CLASSIFY_OBJECT_MAX 128

struct classify_result {
	enum classify_route route;
	/* Route of the statement inside PREPARE (what its EXECUTE may use); equal to route
	 * otherwise. */
	enum classify_route inner_route;
	/* CLASSIFY_* bits. */
	uint32_t flags;
	/* Static string naming the rule that decided ("read-only select", "FOR UPDATE",
	 * "volatile function", "multi-statement", "parse error", "hint", ...). Never NULL. */
	const char *rule;
	/* The object the rule is about, "" if none: the function for function rules (as written,
	 * "schema.name" when qualified), the cursor for DECLARE/FETCH/MOVE/CLOSE, the prepared
	 * statement for PREPARE/EXECUTE/DEALLOCATE. Truncated to fit. */
	char object[CLASSIFY_OBJECT_MAX];
};

/*
 * Volatility of a function as the catalog knows it: 'i' immutable, 's' stable, 'v' volatile, 0
 * unknown. schema is NULL for an unqualified call; names are as the parser produced them (unquoted
 * identifiers folded to lower case). Called on a cache miss only.
 */
typedef int (*classify_volatility_fn)(void *arg, const char *schema, const char *name);

struct classify_options {
	/* Functions that never write, whatever their volatility (pgpool's read_only_function_list).
	 * "name" matches the function in any schema, "schema.name" only when the call is
	 * qualified with that schema. Compared case-insensitively. Borrowed: copied by
	 * classify_new(). */
	const char *const *read_only_functions;
	size_t n_read_only_functions;
	/* Functions that write (pgpool's write_function_list). "name" matches any schema;
	 * "schema.name" matches calls qualified with that schema and unqualified calls of name (the
	 * search_path is unknown here, so the safe side is the primary). Borrowed, copied. */
	const char *const *write_functions;
	size_t n_write_functions;
	/* Optional catalog lookup; NULL means only the built-in tables are known. */
	classify_volatility_fn volatility;
	/* Passed to volatility; borrowed, must outlive the classifier. */
	void *volatility_arg;
	/* Number of cached statements; 0 disables the cache. */
	size_t cache_entries;
	/* Longest statement text (bytes) that is cached; 0 means CLASSIFY_CACHE_MAX_LEN_DEFAULT.
	 * Bounds the cache's memory to about cache_entries * cache_max_len. */
	size_t cache_max_len;
};

#define CLASSIFY_CACHE_MAX_LEN_DEFAULT 4096

struct classifier; /* opaque; owns a copy of the options' lists and the cache */

/* NULL on out of memory. opts may be NULL (no lists, no callback, no cache). */
struct classifier *classify_new(const struct classify_options *opts)
	__attribute__((warn_unused_result));
void classify_free(struct classifier *c);

/*
 * Classifies sql, a NUL-terminated string of len bytes (len == strlen(sql); the protocol reader
 * knows it). Never fails: a parse error, an internal error or out of memory give ROUTE_PRIMARY.
 * With a cache, the same text is parsed only once until evicted; the volatility callback is
 * therefore not consulted again either (call classify_cache_clear() after DDL that changes a
 * function's volatility, or on reload).
 */
void classify_sql(struct classifier *c, const char *sql, size_t len, struct classify_result *out);

struct classify_stats {
	uint64_t hits;	    /* classify_sql() calls answered by the cache */
	uint64_t misses;    /* calls that parsed (cacheable or not) */
	uint64_t evictions; /* entries dropped to make room */
	size_t entries;	    /* entries held now */
	size_t capacity;    /* options.cache_entries */
};

void classify_get_stats(const struct classifier *c, struct classify_stats *out);
void classify_cache_clear(struct classifier *c);

/* "primary", "any", "all", "follow". */
const char *classify_route_name(enum classify_route route);

/*
 * The cache on its own (classify_cache.c): a bounded map from statement text to result with LRU
 * eviction. Exposed for the unit tests; classify_sql() is its only user in the daemon.
 */
struct classify_cache;

/* NULL on out of memory or entries == 0. Texts longer than max_len are never stored. */
struct classify_cache *classify_cache_new(size_t entries, size_t max_len)
	__attribute__((warn_unused_result));
void classify_cache_free(struct classify_cache *cache);
/* True and *out filled when text is cached; counts a hit or a miss. */
bool classify_cache_get(struct classify_cache *cache, const char *text, size_t len,
			struct classify_result *out);
/* Stores a copy of text and *res, evicting the least recently used entry when full. Silently
 * does nothing for a text over max_len or when out of memory (the cache is an optimisation). */
void classify_cache_put(struct classify_cache *cache, const char *text, size_t len,
			const struct classify_result *res);
void classify_cache_clear_all(struct classify_cache *cache);
void classify_cache_get_stats(const struct classify_cache *cache, struct classify_stats *out);

#endif
