/*
 * SQL statement classifier for read/write splitting (pgpool-II semantics). Pure: one statement
 * string (a simple-protocol Query body, possibly several statements) goes in, a route, the rule
 * that decided it and a set of flags come out, with every session effect of the statement (the
 * one reader of SQL: nobody else looks at statement text). No I/O, no logging, no session
 * state: what a session has done before (open transaction, earlier writes, which backend holds a
 * cursor or a prepared statement) is the router's business, fed by the flags and the object name
 * this module returns. Because the answer depends only on the text and the classifier's
 * options, it can be cached by text; see classify_sql() and classify_sql_raw().
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
	 * without ANALYZE and NODE_LOCAL reads; a multi-statement string has it only when a part
	 * has it. */
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

	/* ---- Session effects: everything the session layer needs to know about a statement,
	 * so that no other module reads SQL text (issue 9). Decided by the grammar, so comments,
	 * nested comments, literals and quoted identifiers never fool them. */

	/* Creates state on its backend that pgrelay cannot copy to another backend; a session
	 * that runs it must keep its backend (pin). result.effect names the reason (static
	 * string): "LISTEN", "PREPARE", "cursor WITH HOLD", "temporary object", "advisory lock",
	 * "set_config", "LOAD", "untracked setting", "search_path with pg_temp", "role",
	 * "session characteristics", "DO block". Covers: LISTEN; SQL-level PREPARE; DECLARE ...
	 * WITH HOLD; CREATE TEMP/TEMPORARY TABLE/VIEW/SEQUENCE, CREATE TABLE AS / SELECT INTO
	 * TEMP, and CREATE of a relation qualified with schema pg_temp; calls (anywhere in the
	 * tree, also inside writes) of pg_advisory_lock, pg_advisory_lock_shared,
	 * pg_try_advisory_lock, pg_try_advisory_lock_shared (not the _xact_ ones);
	 * set_config(...) whose third argument is not the literal keyword TRUE; LOAD;
	 * SET/RESET (not LOCAL) of a setting that is not tracked (classify_tracked_setting());
	 * SET search_path whose value mentions pg_temp (SET_TRACKED is set too);
	 * SET/RESET ROLE and SESSION AUTHORIZATION; SET SESSION CHARACTERISTICS; a DO block whose
	 * body mentions one of these (a word search: the body is not parsed; "DO block"). */
	CLASSIFY_SESSION_STATE = 1u << 17,
	/* SET, SET ... TO DEFAULT or RESET (not LOCAL) of a tracked setting
	 * (classify_tracked_setting() >= 0): result.object is its lower-case name. The value is
	 * not in the result (the cache key may be normalised): get it with classify_set_value(). */
	CLASSIFY_SET_TRACKED = 1u << 18,
	/* DISCARD ALL (drops every session state: prepared statements, cursors, temp tables,
	 * LISTEN, advisory locks, settings back to defaults). Other DISCARDs (TEMP, PLANS,
	 * SEQUENCES) only have SESSION_RESET; result.object is the lower-case target word
	 * ("all", "temp", "plans", "sequences") for every DISCARD. */
	CLASSIFY_DISCARD_ALL = 1u << 19,
	/* RESET ALL (every setting back to its default; also has SET and SESSION_RESET). */
	CLASSIFY_RESET_ALL = 1u << 20,
	/* DEALLOCATE [PREPARE] name | ALL: result.object is the name, "" for ALL. */
	CLASSIFY_DEALLOCATE = 1u << 21,
	/* With CURSOR_DECLARE: the cursor is WITH HOLD (outlives the transaction); SESSION_STATE
	 * is set too. */
	CLASSIFY_CURSOR_HOLD = 1u << 22,
	/* CLOSE name (result.object is the name, route FOLLOW) or CLOSE ALL (object "", route
	 * ALL). FETCH/MOVE have no flag: route FOLLOW, object the cursor. */
	CLASSIFY_CURSOR_CLOSE = 1u << 23,
	/* Reads something whose answer differs per node, or that a standby cannot give: node-local
	 * statistics (relations pg_stat_*, pg_statio_*, pg_locks, pg_prepared_xacts,
	 * pg_backend_memory_contexts, pg_replication_slots...; functions pg_stat_get_*,
	 * pg_stat_clear_snapshot, pg_stat_force_next_flush, pg_current_xact_id_if_assigned...;
	 * rule "node-local statistics") or the session's temporary schema (current_schema(),
	 * current_schemas(), pg_my_temp_schema(), a relation qualified with pg_temp; rule "temp
	 * schema"). Routed to the PRIMARY without WRITE (it writes nothing); result.object is
	 * the relation or function. */
	CLASSIFY_NODE_LOCAL = 1u << 24,
	/* SHOW pool_*, SET/RESET [SESSION] pgrelay.* or a PGRELAY command (a parse error for
	 * PostgreSQL): a statement pgrelay answers itself (result.object is the lower-case name,
	 * "pool_nodes", "pgrelay.route" or "pgrelay"; a value comes from classify_set_value()).
	 * The route is what PostgreSQL would make of it. The session layer asks nothing else to
	 * know whether a statement is pgrelay's (src/pool/client_local.c). */
	CLASSIFY_ADMIN = 1u << 25,
};

/* The flags whose statement names an object the session layer follows: a multi-statement
 * string takes result.object (and effect) from the first statement having one of these.
 * NODE_LOCAL is not among them (it is a routing fact). */
#define CLASSIFY_EFFECT_MASK                                                                       \
	(CLASSIFY_SESSION_STATE | CLASSIFY_SET_TRACKED | CLASSIFY_DISCARD_ALL |                    \
	 CLASSIFY_RESET_ALL | CLASSIFY_DEALLOCATE | CLASSIFY_CURSOR_DECLARE |                      \
	 CLASSIFY_CURSOR_CLOSE | CLASSIFY_PREPARE | CLASSIFY_ADMIN)

/* Longest object name kept, with its NUL; PostgreSQL's NAMEDATALEN plus room for "schema.". */
#define CLASSIFY_OBJECT_MAX 128

/*
 * What SHOW pool_backend_stats counts a statement as (pgpool-II's insert/update/delete/ddl/other
 * columns), by the parse tree of the first statement of the string: INSERT, UPDATE, DELETE, or
 * DDL (CREATE ..., ALTER ..., DROP ..., TRUNCATE, COMMENT, GRANT, REVOKE); everything else,
 * and text that does not parse, is OTHER. NONE: not classified (never in a classifier result).
 */
enum classify_cmd {
	CLASSIFY_CMD_NONE,
	CLASSIFY_CMD_OTHER,
	CLASSIFY_CMD_INSERT,
	CLASSIFY_CMD_UPDATE,
	CLASSIFY_CMD_DELETE,
	CLASSIFY_CMD_DDL,
};

struct classify_result {
	enum classify_route route;
	/* Route of the statement inside PREPARE (what its EXECUTE may use); equal to route
	 * otherwise. */
	enum classify_route inner_route;
	/* CLASSIFY_* bits. */
	uint32_t flags;
	uint8_t cmd; /* enum classify_cmd */
	/* Static string naming the rule that decided ("read-only select", "FOR UPDATE",
	 * "volatile function", "multi-statement", "parse error", "hint", ...). Never NULL. */
	const char *rule;
	/* Static string naming why CLASSIFY_SESSION_STATE is set (see that flag), "" when it is
	 * not. Never NULL. For logs ("pinned: LISTEN"). */
	const char *effect;
	/* The object the rule or effect is about, "" if none: the function for function rules (as
	 * written, "schema.name" when qualified), the cursor for DECLARE/FETCH/MOVE/CLOSE, the
	 * prepared statement for PREPARE/EXECUTE/DEALLOCATE, the lower-case setting for
	 * SET/RESET, the relation or function for NODE_LOCAL, the DISCARD target. In a
	 * multi-statement string: the object of the first statement with an effect flag
	 * (CLASSIFY_EFFECT_MASK), else "". Truncated to fit. */
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

/*
 * The classification of sql through two cache keys (issue 10): first the raw text itself (one
 * hash pass, then an exact compare: no normaliser on a hit), then, on a miss, its normalised form
 * (normalize.h, written into scratch of scratchcap bytes; ROUTER_NORMALIZE_MAX + 1 is right),
 * then a parse. On a miss both the raw and the normalised text are stored, in the same cache
 * (same entry and length caps: a raw text and a normalised one classify alike, normalize.h).
 * Without a cache this is classify_sql() of the normalised text. Same contract as classify_sql().
 */
void classify_sql_raw(struct classifier *c, const char *sql, size_t len, char *scratch,
		      size_t scratchcap, struct classify_result *out);

/*
 * Proves in one pass over sql (len bytes) that it is one plain SELECT, INSERT, UPDATE or DELETE:
 * no parenthesis (for an INSERT: none after a name, where it could open a call, so its column
 * list and VALUES (..), (..) pass), comment, INTO (besides INSERT's) or second statement anywhere
 * in its bytes, literals included. Such a statement calls no function, so it has none of the
 * session effects (CLASSIFY_EFFECT_MASK) and is no statement pgrelay answers (CLASSIFY_ADMIN):
 * what classify_sql() says of it in those flags, and its enum classify_cmd, are known without
 * parsing (for text that does not parse, the kind its first word says). Returns that command
 * (OTHER for a SELECT), or CLASSIFY_CMD_NONE when not proved (then only classify_sql() knows).
 * Says nothing of the route: for callers whose routing is fixed.
 */
uint8_t classify_plain_command(const char *sql, size_t len);
/*
 * classify_plain_command for INSERT, UPDATE and DELETE only (a SELECT is refused at its first
 * word). A plain write is, as classify_sql() says, ROUTE_PRIMARY with CLASSIFY_WRITE (rule "write
 * statement") whatever the routing, so it needs no classifier at all.
 */
uint8_t classify_plain_write(const char *sql, size_t len);

/*
 * Makes sql (and every text of its normalised shape) classify as ROUTE_PRIMARY with rule from now
 * on, until the cache evicts it: a standby refused it (SQLSTATE 25006) although the grammar saw a
 * read, e.g. a view over a function that writes. No effect without a cache.
 */
void classify_remember_primary(struct classifier *c, const char *sql, size_t len, char *scratch,
			       size_t scratchcap, const char *rule);

/*
 * One result per statement of sql (NUL-terminated, len == strlen(sql), as for classify_sql();
 * uncached, parses every time), for a multi-statement string
 * whose union in classify_sql() is not enough (several SETs, several DEALLOCATEs). Fills up
 * to cap results in order and returns the number of statements (may exceed cap); each result
 * is what classify_sql() gives that statement alone (no MULTI flag). A parse error gives one
 * result with CLASSIFY_PARSE_ERROR; an empty string gives 0.
 */
size_t classify_sql_each(struct classifier *c, const char *sql, size_t len,
			 struct classify_result *out, size_t cap);

/*
 * The value a SET would apply, parsed from the RAW text (NUL-terminated, len == strlen(sql);
 * libpg_query; uncached, so call it only
 * for a statement classified CLASSIFY_SET_TRACKED or CLASSIFY_ADMIN). Looks at the first SET,
 * SET SESSION, SET ... TO DEFAULT or RESET of a single setting in sql (SET LOCAL, SET
 * TRANSACTION, RESET ALL and SET ... FROM CURRENT are skipped). Fills name (lower case, as the
 * parser folds it: "timezone" for SET TIME ZONE, "client_encoding" for SET NAMES) and either
 * *is_reset = true (RESET, SET ... TO DEFAULT, SET TIME ZONE LOCAL/DEFAULT; value "") or the
 * value as PostgreSQL's flatten_set_variable_args() would make it: quoted strings unquoted,
 * numbers as written, a list joined with ", ", and for search_path (GUC_LIST_QUOTE) each
 * element double-quoted unless it is a plain lower-case identifier (approximate: PostgreSQL
 * also quotes keywords; "user" would stay unquoted here). An INTERVAL in SET TIME ZONE gives its
 * string. False if there is no such statement, on a parse error, or if name or value does not
 * fit (namecap, valcap include the NUL).
 */
bool classify_set_value(const char *sql, size_t len, char *name, size_t namecap, char *value,
			size_t valcap, bool *is_reset) __attribute__((warn_unused_result));
/* The same for the nth (0-based) such statement of a multi-statement string. */
bool classify_set_value_nth(const char *sql, size_t len, unsigned nth, char *name, size_t namecap,
			    char *value, size_t valcap, bool *is_reset)
	__attribute__((warn_unused_result));

/*
 * The settings pgrelay tracks per session and replays on another backend (hardcoded here, the
 * one table: the same names and order as enum tracked_param in src/pool/pool.h, so pool.c may
 * use these instead of its own table). SET of anything else is CLASSIFY_SESSION_STATE.
 */
#define CLASSIFY_N_TRACKED 12
/* Index of name (case-insensitive) in the table, or -1. */
int classify_tracked_setting(const char *name);
/* The name at index i (0 <= i < CLASSIFY_N_TRACKED) as PostgreSQL spells it ("DateStyle"). */
const char *classify_tracked_name(int i);

struct classify_stats {
	uint64_t hits;	    /* classify_sql() calls answered by the cache */
	uint64_t raw_hits;  /* of those, classify_sql_raw() calls answered by the raw text */
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
/*
 * The same with the text's hash computed once by the caller (classify_sql_raw()): a hit costs
 * one pass over the text for the hash plus the exact compare. get_hashed counts nothing; the
 * caller counts once per classification with classify_cache_count().
 */
uint64_t classify_cache_hash(const struct classify_cache *cache, const char *text, size_t len);
bool classify_cache_get_hashed(struct classify_cache *cache, uint64_t hash, const char *text,
			       size_t len, struct classify_result *out);
/* Stores like classify_cache_put(), but admits a raw text only the second time its hash is
 * offered (a small direct-mapped table of recently offered hashes, 8 bytes per bucket): a
 * statement whose constants change every time never evicts the normalised entries or costs an
 * allocation. */
void classify_cache_put_raw(struct classify_cache *cache, uint64_t hash, const char *text,
			    size_t len, const struct classify_result *res);
void classify_cache_count(struct classify_cache *cache, bool hit, bool raw);
void classify_cache_clear_all(struct classify_cache *cache);
void classify_cache_get_stats(const struct classify_cache *cache, struct classify_stats *out);

#endif
