/*
 * SQL statement classifier: text -> route, rule, flags (see classify.h for the contract and
 * doc/routing-classifier.md for the decisions).
 *
 * The text is parsed by libpg_query into its protobuf form and unpacked with protobuf-c. The top
 * statement is dispatched on its node type; statements that may be reads are then walked
 * generically through the protobuf descriptors, so every nested node is seen (CTEs, subqueries,
 * FROM functions, WHERE, ORDER BY, window and filter clauses...) without one walker per node
 * type. The walk stops at the first thing that needs the primary: a data-modifying statement, a
 * locking clause, SELECT INTO, or a function that is not known to be read-only.
 *
 * The same walk (continued past the routing decision, but without consulting the catalog again)
 * collects the session effects (classify.h, CLASSIFY_SESSION_STATE and after): advisory locks,
 * set_config(), temporary relations, node-local statistics. It runs on reads, on DML, CALL and
 * CREATE TABLE AS; other statements' effects are decided by their node type alone.
 *
 * Invariant: every path fills a complete struct classify_result whose rule and effect are static
 * strings; anything unexpected (parse error, out of memory, an unknown node) lands on the
 * primary.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <pg_query.h>
#include <pg_query/pg_query.pb-c.h>

#include "route/classify.h"
#include "route/normalize.h"

/* Deeper trees are routed to the primary rather than walked (the parser's own stack limit makes
 * this unreachable in practice; it bounds our recursion whatever libpg_query accepts). */
#define WALK_MAX_DEPTH 10000

/* One entry of a configured function list, lower case. */
struct func_name {
	char *schema; /* owned; NULL matches any schema */
	char *name;   /* owned */
};

struct func_list {
	struct func_name *items; /* owned array of n */
	size_t n;
};

struct classifier {
	struct func_list read_only; /* read_only_function_list */
	struct func_list write;	    /* write_function_list */
	classify_volatility_fn volatility;
	void *volatility_arg;	      /* borrowed */
	struct classify_cache *cache; /* owned; NULL when caching is off */
	size_t cache_max_len;	      /* the cache's max_len: longer texts are not hashed */
	uint64_t misses;	      /* counted here when there is no cache */
};

/* Bits of DeclareCursorStmt.options (PostgreSQL's parsenodes.h). */
#define CURSOR_OPT_HOLD 0x0020

/* ---- Built-in function knowledge ------------------------------------------------------------ */

/*
 * Functions of pg_catalog that write or hold state on the backend that runs them, matched
 * case-insensitively (matching too much only costs load balancing). A trailing '*' is a prefix.
 */
static const struct {
	const char *name;
	const char *rule;
} builtin_writers[] = {
	{ "nextval", "sequence function" },
	{ "setval", "sequence function" },
	{ "currval", "sequence function" },
	{ "lastval", "sequence function" },
	{ "lo_*", "large-object function" },
	{ "loread", "large-object function" },
	{ "lowrite", "large-object function" },
	{ "pg_advisory_*", "advisory lock function" },
	{ "pg_try_advisory_*", "advisory lock function" },
	{ "pg_notify", "write function" },
	{ "txid_current", "write function" },
	{ "pg_current_xact_id", "write function" },
	{ "set_config", "write function" },
	{ "pg_switch_wal", "write function" },
	{ "pg_create_restore_point", "write function" },
};

/* Volatile in the catalog but harmless on a standby: nothing else varies between nodes. */
static const char *const builtin_volatile_reads[] = { "pg_sleep", "pg_sleep_for",
						      "pg_sleep_until" };

/*
 * Common immutable or stable functions of pg_catalog, consulted when the volatility callback is
 * absent or does not know the function. Sorted (strcmp) for bsearch; matched exactly, because a
 * quoted "Lower" is another function. Kept small on purpose: the callback is the real source.
 */
static const char *const builtin_reads[] = {
	"abs",
	"age",
	"array_agg",
	"array_length",
	"array_to_string",
	"avg",
	"bool_and",
	"bool_or",
	"btrim",
	"ceil",
	"char_length",
	"concat",
	"concat_ws",
	"count",
	"current_database",
	"current_schema",
	"current_setting",
	"date_part",
	"date_trunc",
	"dense_rank",
	"extract",
	"floor",
	"format",
	"generate_series",
	"inet_server_addr",
	"inet_server_port",
	"json_agg",
	"json_build_object",
	"jsonb_agg",
	"jsonb_build_object",
	"lag",
	"lead",
	"left",
	"length",
	"lower",
	"ltrim",
	"max",
	"md5",
	"min",
	"now",
	"pg_backend_pid",
	"pg_is_in_recovery",
	"pg_last_wal_receive_lsn",
	"pg_last_wal_replay_lsn",
	"pg_postmaster_start_time",
	"pg_typeof",
	"position",
	"rank",
	"replace",
	"right",
	"round",
	"row_number",
	"rtrim",
	"split_part",
	"statement_timestamp",
	"string_agg",
	"strpos",
	"substr",
	"substring",
	"sum",
	"timezone",
	"to_char",
	"to_json",
	"to_jsonb",
	"transaction_timestamp",
	"unnest",
	"upper",
	"version",
};

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

/*
 * Settings pgrelay tracks and replays (the order of enum tracked_param, src/pool/pool.h). SET of
 * any other setting stays on its backend: CLASSIFY_SESSION_STATE.
 */
static const char *const tracked_settings[CLASSIFY_N_TRACKED] = {
	"client_encoding",
	"DateStyle",
	"TimeZone",
	"IntervalStyle",
	"standard_conforming_strings",
	"application_name",
	"default_transaction_read_only",
	"extra_float_digits",
	"search_path",
	"statement_timeout",
	"lock_timeout",
	"idle_in_transaction_session_timeout",
};

/* Session-level advisory locks (the _xact_ ones die with the transaction). Exact names. */
static const char *const session_lock_functions[] = {
	"pg_advisory_lock",
	"pg_advisory_lock_shared",
	"pg_try_advisory_lock",
	"pg_try_advisory_lock_shared",
};

/*
 * Relations and functions whose answer is node-local (statistics, locks, memory) or needs the
 * session's temporary schema, which a standby cannot create. Matched on the name in any schema
 * (a user table called pg_stat_x only loses load balancing); a trailing '*' is a prefix.
 */
static const struct {
	const char *name;
	bool function; /* a function name, else a relation name */
	const char *rule;
} node_local_names[] = {
	{ "pg_stat_*", false, "node-local statistics" },
	{ "pg_statio_*", false, "node-local statistics" },
	{ "pg_locks", false, "node-local statistics" },
	{ "pg_prepared_xacts", false, "node-local statistics" },
	{ "pg_backend_memory_contexts", false, "node-local statistics" },
	{ "pg_replication_slots", false, "node-local statistics" },
	{ "pg_replication_origin_status", false, "node-local statistics" },
	{ "pg_stat_*", true, "node-local statistics" },
	{ "pg_lock_status", true, "node-local statistics" },
	{ "pg_prepared_xact", true, "node-local statistics" },
	{ "pg_get_backend_memory_contexts", true, "node-local statistics" },
	{ "pg_get_replication_slots", true, "node-local statistics" },
	{ "pg_current_xact_id_if_assigned", true, "node-local statistics" },
	{ "txid_current_if_assigned", true, "node-local statistics" },
	{ "pg_blocking_pids", true, "node-local statistics" },
	{ "pg_safe_snapshot_blocking_pids", true, "node-local statistics" },
	{ "pg_isolation_test_session_is_blocked", true, "node-local statistics" },
	{ "current_schema", true, "temp schema" },
	{ "current_schemas", true, "temp schema" },
	{ "pg_my_temp_schema", true, "temp schema" },
	{ "pg_is_other_temp_schema", true, "temp schema" },
};

/* Settings whose list elements PostgreSQL quotes as identifiers (GUC_LIST_QUOTE). */
static const char *const list_quote_settings[] = {
	"search_path",
	"temp_tablespaces",
	"session_preload_libraries",
	"shared_preload_libraries",
	"local_preload_libraries",
};

int classify_tracked_setting(const char *name)
{
	for (int i = 0; i < CLASSIFY_N_TRACKED; i++)
		if (strcasecmp(tracked_settings[i], name) == 0)
			return i;
	return -1;
}

const char *classify_tracked_name(int i)
{
	return i >= 0 && i < CLASSIFY_N_TRACKED ? tracked_settings[i] : NULL;
}

static bool name_matches(const char *name, const char *pat)
{
	size_t plen = strlen(pat);

	return pat[plen - 1] == '*' ? strncmp(name, pat, plen - 1) == 0 : strcmp(name, pat) == 0;
}

/* The rule of a node-local relation or function name, NULL if it is none. */
static const char *node_local_rule(const char *name, bool function)
{
	for (size_t i = 0; i < N_ELEMS(node_local_names); i++)
		if (node_local_names[i].function == function &&
		    name_matches(name, node_local_names[i].name))
			return node_local_names[i].rule;
	return NULL;
}

static bool is_session_lock_function(const char *name)
{
	for (size_t i = 0; i < N_ELEMS(session_lock_functions); i++)
		if (strcmp(name, session_lock_functions[i]) == 0)
			return true;
	return false;
}

static int cmp_name(const void *key, const void *elem)
{
	return strcmp((const char *)key, *(const char *const *)elem);
}

/* True when schema is absent or pg_catalog: only then can a built-in table apply. */
static bool is_catalog_schema(const char *schema)
{
	return !schema || strcmp(schema, "pg_catalog") == 0;
}

static const char *builtin_writer_rule(const char *name)
{
	for (size_t i = 0; i < N_ELEMS(builtin_writers); i++) {
		const char *pat = builtin_writers[i].name;
		size_t plen = strlen(pat);

		if (pat[plen - 1] == '*' ? strncasecmp(name, pat, plen - 1) == 0
					 : strcasecmp(name, pat) == 0)
			return builtin_writers[i].rule;
	}
	return NULL;
}

static bool builtin_is_volatile_read(const char *name)
{
	for (size_t i = 0; i < N_ELEMS(builtin_volatile_reads); i++)
		if (strcmp(name, builtin_volatile_reads[i]) == 0)
			return true;
	return false;
}

static bool builtin_is_read(const char *name)
{
	return bsearch(name, builtin_reads, N_ELEMS(builtin_reads), sizeof(builtin_reads[0]),
		       cmp_name) != NULL;
}

/* ---- Configured function lists -------------------------------------------------------------- */

static char *dup_lower(const char *s, size_t len)
{
	char *d = malloc(len + 1);

	if (!d)
		return NULL;
	for (size_t i = 0; i < len; i++)
		d[i] = (s[i] >= 'A' && s[i] <= 'Z') ? (char)(s[i] - 'A' + 'a') : s[i];
	d[len] = '\0';
	return d;
}

static void func_list_free(struct func_list *l)
{
	for (size_t i = 0; i < l->n; i++) {
		free(l->items[i].schema);
		free(l->items[i].name);
	}
	free(l->items);
	l->items = NULL;
	l->n = 0;
}

/* Copies names ("name" or "schema.name", split at the last dot) into l. False on OOM. */
static bool func_list_init(struct func_list *l, const char *const *names, size_t n)
{
	l->items = NULL;
	l->n = 0;
	if (n == 0)
		return true;
	l->items = calloc(n, sizeof(*l->items));
	if (!l->items)
		return false;
	for (size_t i = 0; i < n; i++) {
		const char *s = names[i] ? names[i] : "";
		const char *dot = strrchr(s, '.');
		struct func_name *f = &l->items[l->n++];

		if (dot) {
			f->schema = dup_lower(s, (size_t)(dot - s));
			f->name = dup_lower(dot + 1, strlen(dot + 1));
			if (!f->schema)
				return false;
		} else {
			f->name = dup_lower(s, strlen(s));
		}
		if (!f->name)
			return false;
	}
	return true;
}

/*
 * Does the call schema.name (schema NULL when unqualified) match an entry of l? An unqualified
 * entry matches any schema. A qualified entry matches the same schema, and an unqualified call
 * only when unqualified_matches (write list: the search_path is unknown, so err to the primary).
 */
static bool func_list_match(const struct func_list *l, const char *schema, const char *name,
			    bool unqualified_matches)
{
	for (size_t i = 0; i < l->n; i++) {
		const struct func_name *f = &l->items[i];

		if (strcasecmp(f->name, name) != 0)
			continue;
		if (!f->schema)
			return true;
		if (schema ? strcasecmp(f->schema, schema) == 0 : unqualified_matches)
			return true;
	}
	return false;
}

/*
 * The rule that sends a call of schema.name to the primary, or NULL when the call is read-only.
 * Order: configured lists, built-in writers, built-in harmless volatiles and reads of
 * pg_catalog, the catalog callback; anything still unknown is treated as volatile.
 */
static const char *function_rule(const struct classifier *c, const char *schema, const char *name)
{
	const char *rule;

	if (func_list_match(&c->write, schema, name, true))
		return "write_function_list";
	if (func_list_match(&c->read_only, schema, name, false))
		return NULL;
	if (is_catalog_schema(schema)) {
		rule = builtin_writer_rule(name);
		if (rule)
			return rule;
		if (builtin_is_volatile_read(name))
			return NULL;
		/* pg_catalog functions known to only read (pg_is_in_recovery, pg_backend_pid...)
		 * are reads even where pg_proc calls them volatile; an unqualified name resolves
		 * to pg_catalog first. */
		if (builtin_is_read(name))
			return NULL;
	}
	if (c->volatility) {
		switch (c->volatility(c->volatility_arg, schema, name)) {
		case 'i':
		case 's':
			return NULL;
		case 'v':
			return "volatile function";
		default:
			break;
		}
	}
	return "unknown function";
}

/* ---- Result helpers ------------------------------------------------------------------------- */

static void result_init(struct classify_result *r)
{
	r->route = ROUTE_PRIMARY;
	r->inner_route = ROUTE_PRIMARY;
	r->flags = 0;
	r->cmd = CLASSIFY_CMD_OTHER;
	r->rule = "";
	r->effect = "";
	r->object[0] = '\0';
}

/* Marks r as creating session state for reason effect (the first reason is kept). */
static void add_session_state(struct classify_result *r, const char *effect)
{
	if (!(r->flags & CLASSIFY_SESSION_STATE))
		r->effect = effect;
	r->flags |= CLASSIFY_SESSION_STATE;
}

/* Lower-cases a NUL-terminated string in place. */
static void lower_in_place(char *s)
{
	for (; *s; s++)
		if (*s >= 'A' && *s <= 'Z')
			*s = (char)(*s - 'A' + 'a');
}

static void set_object(struct classify_result *r, const char *schema, const char *name)
{
	if (!name)
		name = "";
	if (schema)
		snprintf(r->object, sizeof(r->object), "%s.%s", schema, name);
	else
		snprintf(r->object, sizeof(r->object), "%s", name);
}

static void route_to(struct classify_result *r, enum classify_route route, const char *rule,
		     uint32_t flags)
{
	r->route = route;
	r->rule = rule;
	r->flags |= flags;
}

static void route_write(struct classify_result *r, const char *rule)
{
	route_to(r, ROUTE_PRIMARY, rule, CLASSIFY_WRITE);
}

/* ---- Tree helpers --------------------------------------------------------------------------- */

/* The string value of a String node, NULL for any other node. */
static const char *node_string(const PgQuery__Node *n)
{
	if (n && n->node_case == PG_QUERY__NODE__NODE_STRING && n->string)
		return n->string->sval;
	return NULL;
}

/* protobuf-c leaves an absent string as "", PostgreSQL would have NULL. */
static bool str_empty(const char *s)
{
	return !s || !*s;
}

/* The value of a DefElem as a boolean, PostgreSQL's defGetBoolean rules; absent means true.
 * Unrecognised values count as true (the caller's safe side). */
static bool def_bool(const PgQuery__Node *arg)
{
	const char *s;

	if (!arg)
		return true;
	switch (arg->node_case) {
	case PG_QUERY__NODE__NODE_INTEGER:
		return arg->integer->ival != 0;
	case PG_QUERY__NODE__NODE_BOOLEAN:
		return arg->boolean->boolval;
	case PG_QUERY__NODE__NODE_STRING:
		s = arg->string->sval;
		return !(strcasecmp(s, "false") == 0 || strcasecmp(s, "off") == 0 ||
			 strcmp(s, "0") == 0);
	default:
		return true;
	}
}

/* Flags of a transaction mode list (BEGIN, START TRANSACTION, SET TRANSACTION ...). */
static uint32_t txn_mode_flags(PgQuery__Node *const *opts, size_t n)
{
	uint32_t flags = 0;

	for (size_t i = 0; i < n; i++) {
		const PgQuery__DefElem *d;
		const PgQuery__AConst *v;

		if (!opts[i] || opts[i]->node_case != PG_QUERY__NODE__NODE_DEF_ELEM)
			continue;
		d = opts[i]->def_elem;
		v = (d->arg && d->arg->node_case == PG_QUERY__NODE__NODE_A_CONST) ? d->arg->a_const
										  : NULL;
		if (!v)
			continue;
		if (strcmp(d->defname, "transaction_isolation") == 0 &&
		    v->val_case == PG_QUERY__A__CONST__VAL_SVAL &&
		    strcmp(v->sval->sval, "serializable") == 0)
			flags |= CLASSIFY_TXN_SERIALIZABLE;
		else if (strcmp(d->defname, "transaction_read_only") == 0 &&
			 v->val_case == PG_QUERY__A__CONST__VAL_IVAL)
			flags |= v->ival->ival ? CLASSIFY_TXN_READ_ONLY : CLASSIFY_TXN_READ_WRITE;
	}
	return flags;
}

/* ---- Generic walk --------------------------------------------------------------------------- */

struct walk {
	const struct classifier *c;
	struct classify_result *r; /* borrowed; route_write() on the first primary-only finding */
	/* The statement needs the primary (rule and object are set): the walk goes on only to
	 * collect session effects, without asking the catalog about functions. */
	bool decided;
	bool aborted;		/* too deep: stop walking altogether */
	unsigned in_with;	/* depth of WithClause nodes around the current node */
	const char *local_rule; /* first node-local finding ("node-local statistics", "temp
				 * schema"), NULL if none; static */
	char local_object[CLASSIFY_OBJECT_MAX]; /* ... and its relation or function */
};

static void walk_decide(struct walk *w, const char *rule)
{
	if (w->decided)
		return;
	route_write(w->r, rule);
	w->decided = true;
}

static void walk_node_local(struct walk *w, const char *rule, const char *schema, const char *name)
{
	w->r->flags |= CLASSIFY_NODE_LOCAL;
	if (w->local_rule)
		return;
	w->local_rule = rule;
	if (schema)
		snprintf(w->local_object, sizeof(w->local_object), "%s.%s", schema, name);
	else
		snprintf(w->local_object, sizeof(w->local_object), "%s", name);
}

/* set_config(name, value, is_local): session state unless is_local is the literal TRUE. */
static bool set_config_is_local(const PgQuery__FuncCall *fc)
{
	const PgQuery__Node *a = fc->n_args == 3 ? fc->args[2] : NULL;

	return a && a->node_case == PG_QUERY__NODE__NODE_A_CONST &&
	       a->a_const->val_case == PG_QUERY__A__CONST__VAL_BOOLVAL && a->a_const->boolval &&
	       a->a_const->boolval->boolval;
}

/* Session effects of a call of schema.name (schema NULL when unqualified). */
static void walk_func_effects(struct walk *w, const PgQuery__FuncCall *fc, const char *schema,
			      const char *name)
{
	const char *rule;

	if (!is_catalog_schema(schema))
		return;
	if (is_session_lock_function(name))
		add_session_state(w->r, "advisory lock");
	else if (strcmp(name, "set_config") == 0 && !set_config_is_local(fc))
		add_session_state(w->r, "set_config");
	rule = node_local_rule(name, true);
	if (rule)
		walk_node_local(w, rule, schema, name);
}

static void walk_func_call(struct walk *w, const PgQuery__FuncCall *fc)
{
	const char *name, *schema = NULL, *rule;

	if (fc->n_funcname == 0)
		return;
	name = node_string(fc->funcname[fc->n_funcname - 1]);
	if (fc->n_funcname >= 2)
		schema = node_string(fc->funcname[fc->n_funcname - 2]);
	if (!name) {
		walk_decide(w, "unknown function");
		return;
	}
	walk_func_effects(w, fc, schema, name);
	if (w->decided)
		return;
	/* A node-local function of pg_catalog reads (statistics, locks, the temp schema), even
	 * where pg_proc calls it volatile; only the write list overrides that. */
	if (is_catalog_schema(schema) && node_local_rule(name, true) &&
	    !func_list_match(&w->c->write, schema, name, true))
		return;
	rule = function_rule(w->c, schema, name);
	if (rule) {
		walk_decide(w, rule);
		set_object(w->r, schema, name);
	}
}

/* A relation: temporary (being created) or in pg_temp, or node-local statistics. */
static void walk_range_var(struct walk *w, const PgQuery__RangeVar *rv)
{
	const char *rule;

	if (strcmp(rv->relpersistence, "t") == 0) {
		add_session_state(w->r, "temporary object");
		return;
	}
	if (str_empty(rv->relname))
		return;
	if (!str_empty(rv->schemaname) && strcmp(rv->schemaname, "pg_temp") == 0) {
		walk_node_local(w, "temp schema", rv->schemaname, rv->relname);
		return;
	}
	rule = node_local_rule(rv->relname, false);
	if (rule)
		walk_node_local(w, rule, str_empty(rv->schemaname) ? NULL : rv->schemaname,
				rv->relname);
}

static const char *locking_rule(const PgQuery__LockingClause *lc)
{
	switch (lc->strength) {
	case PG_QUERY__LOCK_CLAUSE_STRENGTH__LCS_FORKEYSHARE:
		return "FOR KEY SHARE";
	case PG_QUERY__LOCK_CLAUSE_STRENGTH__LCS_FORSHARE:
		return "FOR SHARE";
	case PG_QUERY__LOCK_CLAUSE_STRENGTH__LCS_FORNOKEYUPDATE:
		return "FOR NO KEY UPDATE";
	default:
		return "FOR UPDATE";
	}
}

/* Looks at one message; may decide. */
static void walk_visit(struct walk *w, const ProtobufCMessage *m)
{
	const ProtobufCMessageDescriptor *d = m->descriptor;

	if (d == &pg_query__func_call__descriptor) {
		walk_func_call(w, (const PgQuery__FuncCall *)m);
	} else if (d == &pg_query__range_var__descriptor) {
		walk_range_var(w, (const PgQuery__RangeVar *)m);
	} else if (d == &pg_query__sqlvalue_function__descriptor) {
		/* CURRENT_SCHEMA without parentheses. */
		if (((const PgQuery__SQLValueFunction *)m)->op ==
		    PG_QUERY__SQLVALUE_FUNCTION_OP__SVFOP_CURRENT_SCHEMA)
			walk_node_local(w, "temp schema", NULL, "current_schema");
	} else if (d == &pg_query__insert_stmt__descriptor ||
		   d == &pg_query__update_stmt__descriptor ||
		   d == &pg_query__delete_stmt__descriptor ||
		   d == &pg_query__merge_stmt__descriptor) {
		walk_decide(w, w->in_with ? "data-modifying WITH" : "write statement");
	} else if (d == &pg_query__locking_clause__descriptor) {
		walk_decide(w, locking_rule((const PgQuery__LockingClause *)m));
	} else if (d == &pg_query__select_stmt__descriptor) {
		if (((const PgQuery__SelectStmt *)m)->into_clause)
			walk_decide(w, "SELECT INTO");
	}
}

/*
 * Visits m and every message below it, through the protobuf-c descriptors: a singular message
 * field is a pointer at field->offset; a repeated one is a count at quantifier_offset and an array
 * of pointers at offset; a oneof member is valid only when the case at quantifier_offset is its id.
 */
static void walk_message(struct walk *w, const ProtobufCMessage *m, unsigned depth)
{
	const ProtobufCMessageDescriptor *d = m->descriptor;
	const char *base = (const char *)m;
	bool is_with = d == &pg_query__with_clause__descriptor;

	if (depth > WALK_MAX_DEPTH) {
		walk_decide(w, "too deeply nested");
		w->aborted = true;
		return;
	}
	walk_visit(w, m);
	if (d == &pg_query__node__descriptor) {
		/* The Node oneof has one member per node type (about 240 fields): go straight to
		 * the active one instead of scanning them all. */
		const PgQuery__Node *n = (const PgQuery__Node *)m;
		const ProtobufCFieldDescriptor *f =
			protobuf_c_message_descriptor_get_field(d, (unsigned)n->node_case);
		const ProtobufCMessage *sub;

		if (!f || f->type != PROTOBUF_C_TYPE_MESSAGE)
			return;
		memcpy(&sub, base + f->offset, sizeof(sub));
		if (sub)
			walk_message(w, sub, depth + 1);
		return;
	}
	w->in_with += is_with;
	for (unsigned i = 0; i < d->n_fields && !w->aborted; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];

		if (f->type != PROTOBUF_C_TYPE_MESSAGE)
			continue;
		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			size_t n;
			ProtobufCMessage *const *items;

			memcpy(&n, base + f->quantifier_offset, sizeof(n));
			memcpy(&items, base + f->offset, sizeof(items));
			for (size_t j = 0; j < n && !w->aborted; j++)
				if (items[j])
					walk_message(w, items[j], depth + 1);
		} else {
			const ProtobufCMessage *sub;

			if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
				uint32_t which;

				memcpy(&which, base + f->quantifier_offset, sizeof(which));
				if (which != f->id)
					continue;
			}
			memcpy(&sub, base + f->offset, sizeof(sub));
			if (sub)
				walk_message(w, sub, depth + 1);
		}
	}
	w->in_with -= is_with;
}

/* Routes a statement that reads unless something inside it says otherwise. A node-local
 * read goes to the primary but is no write. */
static void classify_read(const struct classifier *c, const PgQuery__Node *n,
			  struct classify_result *r, const char *rule)
{
	struct walk w = { .c = c, .r = r };

	route_to(r, ROUTE_ANY, rule, 0);
	walk_message(&w, &n->base, 0);
	if (!w.decided && w.local_rule) {
		route_to(r, ROUTE_PRIMARY, w.local_rule, 0);
		snprintf(r->object, sizeof(r->object), "%s", w.local_object);
	}
}

/* Collects the session effects of a statement already routed (a write): the route, rule and
 * object stay as they are. */
static void collect_effects(const struct classifier *c, const PgQuery__Node *n,
			    struct classify_result *r)
{
	struct walk w = { .c = c, .r = r, .decided = true };

	walk_message(&w, &n->base, 0);
}

/* ---- Statements ----------------------------------------------------------------------------- */

static void classify_stmt(const struct classifier *c, const PgQuery__Node *n,
			  struct classify_result *r);

static void classify_transaction(const PgQuery__TransactionStmt *t, struct classify_result *r)
{
	uint32_t chain = t->chain ? CLASSIFY_TXN_BEGIN : 0;

	switch (t->kind) {
	case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_BEGIN:
	case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_START:
		route_to(r, ROUTE_ALL, "BEGIN",
			 CLASSIFY_TXN_BEGIN | txn_mode_flags(t->options, t->n_options));
		break;
	case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_COMMIT:
		route_to(r, ROUTE_ALL, "COMMIT", CLASSIFY_TXN_END | chain);
		break;
	case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_ROLLBACK:
		route_to(r, ROUTE_ALL, "ROLLBACK", CLASSIFY_TXN_END | chain);
		break;
	case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_SAVEPOINT:
		route_to(r, ROUTE_ALL, "SAVEPOINT", CLASSIFY_TXN_SAVEPOINT);
		break;
	case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_RELEASE:
		route_to(r, ROUTE_ALL, "RELEASE SAVEPOINT", CLASSIFY_TXN_SAVEPOINT);
		break;
	case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_ROLLBACK_TO:
		route_to(r, ROUTE_ALL, "ROLLBACK TO SAVEPOINT", CLASSIFY_TXN_SAVEPOINT);
		break;
	case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_PREPARE:
		route_to(r, ROUTE_PRIMARY, "PREPARE TRANSACTION",
			 CLASSIFY_WRITE | CLASSIFY_TXN_2PC | CLASSIFY_TXN_END);
		break;
	case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_COMMIT_PREPARED:
		route_to(r, ROUTE_PRIMARY, "COMMIT PREPARED", CLASSIFY_WRITE | CLASSIFY_TXN_2PC);
		break;
	case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_ROLLBACK_PREPARED:
		route_to(r, ROUTE_PRIMARY, "ROLLBACK PREPARED", CLASSIFY_WRITE | CLASSIFY_TXN_2PC);
		break;
	default:
		route_write(r, "unknown transaction statement");
		break;
	}
	if (!str_empty(t->savepoint_name))
		set_object(r, NULL, t->savepoint_name);
	else if (!str_empty(t->gid))
		set_object(r, NULL, t->gid);
}

/* True if a string argument of SET search_path mentions pg_temp (any case: the safe side). */
static bool args_mention_pg_temp(PgQuery__Node *const *args, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const PgQuery__Node *a = args[i];

		if (a && a->node_case == PG_QUERY__NODE__NODE_A_CONST &&
		    a->a_const->val_case == PG_QUERY__A__CONST__VAL_SVAL &&
		    strcasestr(a->a_const->sval->sval, "pg_temp"))
			return true;
	}
	return false;
}

/* The session effects of SET/RESET (not LOCAL) of the setting r->object (lower case). */
static void set_effects(const PgQuery__VariableSetStmt *s, struct classify_result *r)
{
	const char *name = r->object;

	if (strncmp(name, "pgrelay.", 8) == 0) {
		r->flags |= CLASSIFY_ADMIN;
	} else if (strcmp(name, "role") == 0 || strcmp(name, "session_authorization") == 0) {
		add_session_state(r, "role");
	} else if (classify_tracked_setting(name) < 0) {
		add_session_state(r, "untracked setting");
	} else {
		r->flags |= CLASSIFY_SET_TRACKED;
		if (strcmp(name, "search_path") == 0 &&
		    s->kind == PG_QUERY__VARIABLE_SET_KIND__VAR_SET_VALUE &&
		    args_mention_pg_temp(s->args, s->n_args))
			add_session_state(r, "search_path with pg_temp");
	}
}

static void classify_set(const PgQuery__VariableSetStmt *s, struct classify_result *r)
{
	uint32_t local = s->is_local ? CLASSIFY_SET_LOCAL : 0;

	switch (s->kind) {
	case PG_QUERY__VARIABLE_SET_KIND__VAR_SET_MULTI:
		/* SET TRANSACTION ... and SET SESSION CHARACTERISTICS AS TRANSACTION ... */
		if (strcmp(s->name, "TRANSACTION") == 0) {
			route_to(r, ROUTE_ALL, "SET TRANSACTION",
				 CLASSIFY_SET | CLASSIFY_SET_LOCAL |
					 txn_mode_flags(s->args, s->n_args));
		} else {
			route_to(r, ROUTE_ALL, "SET SESSION CHARACTERISTICS",
				 CLASSIFY_SET | txn_mode_flags(s->args, s->n_args));
			add_session_state(r, "session characteristics");
		}
		return;
	case PG_QUERY__VARIABLE_SET_KIND__VAR_RESET:
		route_to(r, ROUTE_ALL, "RESET", CLASSIFY_SET);
		break;
	case PG_QUERY__VARIABLE_SET_KIND__VAR_RESET_ALL:
		route_to(r, ROUTE_ALL, "RESET ALL",
			 CLASSIFY_SET | CLASSIFY_SESSION_RESET | CLASSIFY_RESET_ALL);
		return;
	default:
		route_to(r, ROUTE_ALL, local ? "SET LOCAL" : "SET", CLASSIFY_SET | local);
		break;
	}
	set_object(r, NULL, s->name);
	lower_in_place(r->object);
	/* SET ... FROM CURRENT keeps the value in force: no effect. */
	if (!local && s->kind != PG_QUERY__VARIABLE_SET_KIND__VAR_SET_CURRENT)
		set_effects(s, r);
}

static void classify_explain(const struct classifier *c, const PgQuery__ExplainStmt *e,
			     struct classify_result *r)
{
	bool analyze = false;

	for (size_t i = 0; i < e->n_options; i++) {
		const PgQuery__Node *o = e->options[i];

		if (o && o->node_case == PG_QUERY__NODE__NODE_DEF_ELEM &&
		    strcmp(o->def_elem->defname, "analyze") == 0)
			analyze = def_bool(o->def_elem->arg);
	}
	if (!e->query) {
		route_write(r, "EXPLAIN without a query");
		return;
	}
	classify_stmt(c, e->query, r);
	if (!analyze) {
		/* Planned, not run: nothing of the query's session effects happens. */
		r->flags &= ~(uint32_t)(CLASSIFY_SESSION_STATE | CLASSIFY_CURSOR_DECLARE |
					CLASSIFY_CURSOR_HOLD);
		r->effect = "";
	}
	if (r->route == ROUTE_ANY) {
		r->rule = analyze ? "EXPLAIN ANALYZE" : "EXPLAIN";
	} else if (r->route == ROUTE_PRIMARY && !analyze && (r->flags & CLASSIFY_WRITE)) {
		/* Not executed, but planned against the primary's catalog like pgpool does. */
		r->flags &= ~(uint32_t)CLASSIFY_WRITE;
		r->rule = "EXPLAIN of a write";
	} else if (r->route == ROUTE_PRIMARY && strcmp(r->rule, "write statement") == 0) {
		r->rule = "EXPLAIN ANALYZE of a write";
	}
}

static void classify_copy(const struct classifier *c, const PgQuery__CopyStmt *cp,
			  struct classify_result *r)
{
	if (cp->is_from) {
		route_write(r, "COPY FROM");
	} else if (cp->is_program || !str_empty(cp->filename)) {
		/* Writes a file (or runs a program) on the server's host: keep that on one host. */
		route_write(r, "COPY TO file or program");
	} else if (cp->query) {
		classify_read(c, cp->query, r, "COPY TO STDOUT");
	} else {
		route_to(r, ROUTE_ANY, "COPY TO STDOUT", 0);
	}
}

static void classify_prepare(const struct classifier *c, const PgQuery__PrepareStmt *p,
			     struct classify_result *r)
{
	struct classify_result inner;

	result_init(&inner);
	if (p->query)
		classify_stmt(c, p->query, &inner);
	else
		route_write(&inner, "PREPARE without a query");
	/* Session state like SET: every backend gets it, so EXECUTE may go where inner_route says.
	 * The flags of the query (e.g. WRITE) describe EXECUTE, not PREPARE. */
	route_to(r, ROUTE_ALL, "PREPARE", CLASSIFY_PREPARE);
	add_session_state(r, "PREPARE");
	r->inner_route = inner.route;
	set_object(r, NULL, p->name);
}

static void classify_declare(const struct classifier *c, const PgQuery__DeclareCursorStmt *d,
			     struct classify_result *r)
{
	if (d->query)
		classify_stmt(c, d->query, r);
	else
		route_write(r, "DECLARE without a query");
	if (r->route == ROUTE_ANY)
		r->rule = "DECLARE CURSOR";
	r->flags |= CLASSIFY_CURSOR_DECLARE;
	if (d->options & CURSOR_OPT_HOLD) {
		r->flags |= CLASSIFY_CURSOR_HOLD;
		add_session_state(r, "cursor WITH HOLD");
	}
	set_object(r, NULL, d->portalname);
}

/*
 * A DO block runs code the grammar does not parse (its body is a string), so its effects are
 * guessed from words in the body, erring towards session state (a false positive only pins the
 * session): advisory locks, set_config, LISTEN, PREPARE, LOAD, temporary objects. A SET inside
 * the body is not recognised.
 */
static bool do_body_has_session_state(const PgQuery__DoStmt *d)
{
	static const char *const words[] = { "advisory_lock", "set_config", "listen", "prepare",
					     "load ",	      "temporary",  "temp ",  "temp\n",
					     "temp\t",	      "with hold" };

	for (size_t i = 0; i < d->n_args; i++) {
		const PgQuery__Node *a = d->args[i];
		const char *body;

		if (!a || a->node_case != PG_QUERY__NODE__NODE_DEF_ELEM ||
		    strcmp(a->def_elem->defname, "as") != 0)
			continue;
		body = node_string(a->def_elem->arg);
		for (size_t k = 0; body && k < N_ELEMS(words); k++)
			if (strcasestr(body, words[k]))
				return true;
	}
	return false;
}

/* Is the relation being created temporary (TEMP/TEMPORARY, or qualified with pg_temp)? */
static bool creates_temp(const PgQuery__RangeVar *rv)
{
	return rv && (strcmp(rv->relpersistence, "t") == 0 ||
		      (!str_empty(rv->schemaname) && strcmp(rv->schemaname, "pg_temp") == 0));
}

static void classify_discard(const PgQuery__DiscardStmt *d, struct classify_result *r)
{
	switch (d->target) {
	case PG_QUERY__DISCARD_MODE__DISCARD_ALL:
		route_to(r, ROUTE_ALL, "DISCARD", CLASSIFY_SESSION_RESET | CLASSIFY_DISCARD_ALL);
		set_object(r, NULL, "all");
		break;
	case PG_QUERY__DISCARD_MODE__DISCARD_PLANS:
		route_to(r, ROUTE_ALL, "DISCARD", CLASSIFY_SESSION_RESET);
		set_object(r, NULL, "plans");
		break;
	case PG_QUERY__DISCARD_MODE__DISCARD_SEQUENCES:
		route_to(r, ROUTE_ALL, "DISCARD", CLASSIFY_SESSION_RESET);
		set_object(r, NULL, "sequences");
		break;
	case PG_QUERY__DISCARD_MODE__DISCARD_TEMP:
		route_to(r, ROUTE_ALL, "DISCARD", CLASSIFY_SESSION_RESET);
		set_object(r, NULL, "temp");
		break;
	default:
		route_to(r, ROUTE_ALL, "DISCARD", CLASSIFY_SESSION_RESET);
		break;
	}
}

/* One statement (not the whole string) into r, which result_init() has prepared. */
static void classify_stmt(const struct classifier *c, const PgQuery__Node *n,
			  struct classify_result *r)
{
	switch (n->node_case) {
	case PG_QUERY__NODE__NODE_SELECT_STMT:
		classify_read(c, n, r, "read-only select");
		break;
	case PG_QUERY__NODE__NODE_INSERT_STMT:
	case PG_QUERY__NODE__NODE_UPDATE_STMT:
	case PG_QUERY__NODE__NODE_DELETE_STMT:
	case PG_QUERY__NODE__NODE_MERGE_STMT:
		route_write(r, "write statement");
		collect_effects(c, n, r);
		break;
	case PG_QUERY__NODE__NODE_EXPLAIN_STMT:
		classify_explain(c, n->explain_stmt, r);
		break;
	case PG_QUERY__NODE__NODE_COPY_STMT:
		classify_copy(c, n->copy_stmt, r);
		break;
	case PG_QUERY__NODE__NODE_VARIABLE_SHOW_STMT:
		route_to(r, ROUTE_ANY, "SHOW", 0);
		if (strncasecmp(n->variable_show_stmt->name, "pool_", 5) == 0) {
			r->flags |= CLASSIFY_ADMIN;
			set_object(r, NULL, n->variable_show_stmt->name);
			lower_in_place(r->object);
		}
		break;
	case PG_QUERY__NODE__NODE_VARIABLE_SET_STMT:
		classify_set(n->variable_set_stmt, r);
		break;
	case PG_QUERY__NODE__NODE_CONSTRAINTS_SET_STMT:
		route_to(r, ROUTE_ALL, "SET CONSTRAINTS", CLASSIFY_SET | CLASSIFY_SET_LOCAL);
		break;
	case PG_QUERY__NODE__NODE_TRANSACTION_STMT:
		classify_transaction(n->transaction_stmt, r);
		break;
	case PG_QUERY__NODE__NODE_DISCARD_STMT:
		classify_discard(n->discard_stmt, r);
		break;
	case PG_QUERY__NODE__NODE_DEALLOCATE_STMT:
		route_to(r, ROUTE_ALL, "DEALLOCATE", CLASSIFY_SESSION_RESET | CLASSIFY_DEALLOCATE);
		set_object(r, NULL, n->deallocate_stmt->name);
		break;
	case PG_QUERY__NODE__NODE_LOAD_STMT:
		route_to(r, ROUTE_ALL, "LOAD", 0);
		add_session_state(r, "LOAD");
		break;
	case PG_QUERY__NODE__NODE_PREPARE_STMT:
		classify_prepare(c, n->prepare_stmt, r);
		break;
	case PG_QUERY__NODE__NODE_EXECUTE_STMT:
		route_to(r, ROUTE_FOLLOW, "EXECUTE", 0);
		set_object(r, NULL, n->execute_stmt->name);
		break;
	case PG_QUERY__NODE__NODE_DECLARE_CURSOR_STMT:
		classify_declare(c, n->declare_cursor_stmt, r);
		break;
	case PG_QUERY__NODE__NODE_FETCH_STMT:
		route_to(r, ROUTE_FOLLOW, n->fetch_stmt->ismove ? "MOVE" : "FETCH", 0);
		set_object(r, NULL, n->fetch_stmt->portalname);
		break;
	case PG_QUERY__NODE__NODE_CLOSE_PORTAL_STMT:
		if (str_empty(n->close_portal_stmt->portalname)) {
			route_to(r, ROUTE_ALL, "CLOSE ALL", CLASSIFY_CURSOR_CLOSE);
		} else {
			route_to(r, ROUTE_FOLLOW, "CLOSE", CLASSIFY_CURSOR_CLOSE);
			set_object(r, NULL, n->close_portal_stmt->portalname);
		}
		break;
	case PG_QUERY__NODE__NODE_CREATE_TABLE_AS_STMT:
		route_write(r, "CREATE TABLE AS");
		/* The IntoClause's RangeVar says TEMP; the query runs. */
		collect_effects(c, n, r);
		if (n->create_table_as_stmt->into &&
		    creates_temp(n->create_table_as_stmt->into->rel))
			add_session_state(r, "temporary object");
		break;
	case PG_QUERY__NODE__NODE_CREATE_STMT:
		route_write(r, "DDL or utility statement");
		if (creates_temp(n->create_stmt->relation))
			add_session_state(r, "temporary object");
		break;
	case PG_QUERY__NODE__NODE_VIEW_STMT:
		route_write(r, "DDL or utility statement");
		if (creates_temp(n->view_stmt->view))
			add_session_state(r, "temporary object");
		break;
	case PG_QUERY__NODE__NODE_CREATE_SEQ_STMT:
		route_write(r, "DDL or utility statement");
		if (creates_temp(n->create_seq_stmt->sequence))
			add_session_state(r, "temporary object");
		break;
	case PG_QUERY__NODE__NODE_LOCK_STMT:
		route_write(r, "LOCK");
		break;
	case PG_QUERY__NODE__NODE_LISTEN_STMT:
		route_write(r, "LISTEN");
		add_session_state(r, "LISTEN");
		set_object(r, NULL, n->listen_stmt->conditionname);
		break;
	case PG_QUERY__NODE__NODE_UNLISTEN_STMT:
		route_write(r, "UNLISTEN");
		break;
	case PG_QUERY__NODE__NODE_NOTIFY_STMT:
		route_write(r, "NOTIFY");
		break;
	case PG_QUERY__NODE__NODE_CALL_STMT:
		route_write(r, "CALL");
		collect_effects(c, n, r);
		break;
	case PG_QUERY__NODE__NODE_DO_STMT:
		route_write(r, "DO");
		if (do_body_has_session_state(n->do_stmt))
			add_session_state(r, "DO block");
		break;
	case PG_QUERY__NODE__NODE_VACUUM_STMT:
		route_write(r, n->vacuum_stmt->is_vacuumcmd ? "VACUUM" : "ANALYZE");
		break;
	default:
		route_write(r, "DDL or utility statement");
		break;
	}
}

/* ---- Hints ---------------------------------------------------------------------------------- */

static const char *skip_space(const char *p)
{
	while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == '\f' || *p == '\v')
		p++;
	return p;
}

/*
 * A leading "/\*+ pgrelay: primary *\/" or "... standby ..." (case-insensitive, blanks allowed
 * around the words and before the comment) forces the route. False for anything else, including
 * an unknown target, which is then an ordinary comment.
 */
static bool parse_hint(const char *sql, enum classify_route *route)
{
	const char *p = skip_space(sql);
	size_t wlen;

	if (strncmp(p, "/*+", 3) != 0)
		return false;
	p = skip_space(p + 3);
	if (strncasecmp(p, "pgrelay", 7) != 0)
		return false;
	p = skip_space(p + 7);
	if (*p != ':')
		return false;
	p = skip_space(p + 1);
	if (strncasecmp(p, "primary", 7) == 0) {
		*route = ROUTE_PRIMARY;
		wlen = 7;
	} else if (strncasecmp(p, "standby", 7) == 0) {
		*route = ROUTE_ANY;
		wlen = 7;
	} else {
		return false;
	}
	p = skip_space(p + wlen);
	return strncmp(p, "*/", 2) == 0;
}

/* ---- Entry points --------------------------------------------------------------------------- */

/* The pool_backend_stats kind of one statement (enum classify_cmd). DDL by the node's protobuf
 * field name: every CREATE, ALTER and DROP form has its own node type. */
static uint8_t stmt_cmd(const PgQuery__Node *n)
{
	static const char *const ddl[] = { "create",
					   "alter",
					   "drop",
					   "truncate",
					   "comment",
					   "grant",
					   "view_stmt",
					   "index_stmt",
					   "rename_stmt",
					   "define_stmt",
					   "composite_type_stmt",
					   "rule_stmt" };
	switch (n->node_case) {
	case PG_QUERY__NODE__NODE_INSERT_STMT:
		return CLASSIFY_CMD_INSERT;
	case PG_QUERY__NODE__NODE_UPDATE_STMT:
		return CLASSIFY_CMD_UPDATE;
	case PG_QUERY__NODE__NODE_DELETE_STMT:
		return CLASSIFY_CMD_DELETE;
	default:
		break;
	}
	const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(
		&pg_query__node__descriptor, (unsigned)n->node_case);
	if (!f || !f->name)
		return CLASSIFY_CMD_OTHER;
	for (size_t i = 0; i < sizeof(ddl) / sizeof(ddl[0]); i++)
		if (strncmp(f->name, ddl[i], strlen(ddl[i])) == 0)
			return CLASSIFY_CMD_DDL;
	return CLASSIFY_CMD_OTHER;
}

static void classify_parsed(const struct classifier *c, const PgQuery__ParseResult *tree,
			    struct classify_result *out)
{
	uint32_t flags = 0;

	if (tree->n_stmts == 0) {
		route_to(out, ROUTE_ANY, "empty query", CLASSIFY_EMPTY);
		out->inner_route = ROUTE_ANY;
		return;
	}
	const PgQuery__Node *first = tree->stmts[0] ? tree->stmts[0]->stmt : NULL;
	out->cmd = first ? stmt_cmd(first) : CLASSIFY_CMD_OTHER;
	if (tree->n_stmts == 1) {
		if (first)
			classify_stmt(c, first, out);
		else
			route_write(out, "parse error");
		if (!(out->flags & CLASSIFY_PREPARE))
			out->inner_route = out->route;
		return;
	}
	/* pgpool's default: a multi-statement string goes to the primary as a whole. The flags
	 * still tell the router what the parts do (a BEGIN inside, a SET...); the object and the
	 * effect are those of the first part that has one. */
	for (size_t i = 0; i < tree->n_stmts; i++) {
		struct classify_result part;

		result_init(&part);
		if (tree->stmts[i] && tree->stmts[i]->stmt)
			classify_stmt(c, tree->stmts[i]->stmt, &part);
		else
			route_write(&part, "parse error");
		if ((part.flags & CLASSIFY_EFFECT_MASK) && !(flags & CLASSIFY_EFFECT_MASK))
			memcpy(out->object, part.object, sizeof(out->object));
		if ((part.flags & CLASSIFY_SESSION_STATE) && !(flags & CLASSIFY_SESSION_STATE))
			out->effect = part.effect;
		flags |= part.flags;
	}
	route_to(out, ROUTE_PRIMARY, "multi-statement", flags | CLASSIFY_MULTI);
}

/* Skips blanks, "--" comments and (nested) block comments, as PostgreSQL's lexer does. */
static const char *skip_blanks_and_comments(const char *p)
{
	for (;;) {
		p = skip_space(p);
		if (p[0] == '-' && p[1] == '-') {
			while (*p && *p != '\n' && *p != '\r')
				p++;
		} else if (p[0] == '/' && p[1] == '*') {
			int depth = 0;
			do {
				if (p[0] == '/' && p[1] == '*') {
					depth++;
					p += 2;
				} else if (p[0] == '*' && p[1] == '/') {
					depth--;
					p += 2;
				} else {
					p++;
				}
			} while (depth > 0 && *p);
		} else {
			return p;
		}
	}
}

/* The keyword word (lower case) at *p, blanks and comments before it; advances past it. */
static bool take_word(const char **p, const char *word)
{
	const char *q = skip_blanks_and_comments(*p);
	size_t n = strlen(word);
	if (strncasecmp(q, word, n) != 0)
		return false;
	unsigned char next = (unsigned char)q[n];
	if (isalnum(next) || next == '_' || next == '$')
		return false;
	*p = q + n;
	return true;
}

/*
 * Text PostgreSQL's grammar refuses but pgrelay answers: a PGRELAY command, and SET/RESET
 * [SESSION] pgrelay.* with a value the grammar does not take as a name ("= primary": PRIMARY is
 * a reserved word). The object names it as for the parsed forms.
 */
static void classify_admin_text(const char *sql, struct classify_result *out)
{
	const char *p = sql;
	if (take_word(&p, "pgrelay")) {
		out->flags |= CLASSIFY_ADMIN;
		set_object(out, NULL, "pgrelay");
		return;
	}
	if (!take_word(&p, "set") && !take_word(&p, "reset"))
		return;
	(void)take_word(&p, "session");
	p = skip_blanks_and_comments(p);
	if (strncasecmp(p, "pgrelay.", 8) == 0) {
		out->flags |= CLASSIFY_ADMIN;
		set_object(out, NULL, "pgrelay.route");
	}
}

static void classify_uncached(const struct classifier *c, const char *sql,
			      struct classify_result *out)
{
	PgQueryProtobufParseResult pr;
	PgQuery__ParseResult *tree;
	enum classify_route hint;

	result_init(out);
	pr = pg_query_parse_protobuf(sql);
	if (pr.error) {
		route_write(out, "parse error");
		out->flags |= CLASSIFY_PARSE_ERROR;
	} else {
		tree = pg_query__parse_result__unpack(NULL, pr.parse_tree.len,
						      (const uint8_t *)pr.parse_tree.data);
		if (tree) {
			classify_parsed(c, tree, out);
			pg_query__parse_result__free_unpacked(tree, NULL);
		} else {
			route_write(out, "parse error");
			out->flags |= CLASSIFY_PARSE_ERROR;
		}
	}
	pg_query_free_protobuf_parse_result(pr);
	if (out->flags & CLASSIFY_PARSE_ERROR)
		classify_admin_text(sql, out);
	if (parse_hint(sql, &hint)) {
		out->route = hint;
		out->inner_route = hint;
		out->rule = "hint";
		out->flags |= CLASSIFY_HINT;
	}
}

struct classifier *classify_new(const struct classify_options *opts)
{
	static const struct classify_options none;
	struct classifier *c = calloc(1, sizeof(*c));

	if (!opts)
		opts = &none;
	if (!c)
		return NULL;
	c->volatility = opts->volatility;
	c->volatility_arg = opts->volatility_arg;
	c->cache_max_len =
		opts->cache_max_len ? opts->cache_max_len : CLASSIFY_CACHE_MAX_LEN_DEFAULT;
	if (!func_list_init(&c->read_only, opts->read_only_functions,
			    opts->n_read_only_functions) ||
	    !func_list_init(&c->write, opts->write_functions, opts->n_write_functions))
		goto fail;
	if (opts->cache_entries) {
		c->cache = classify_cache_new(opts->cache_entries, opts->cache_max_len);
		if (!c->cache)
			goto fail;
	}
	return c;
fail:
	classify_free(c);
	return NULL;
}

void classify_free(struct classifier *c)
{
	if (!c)
		return;
	func_list_free(&c->read_only);
	func_list_free(&c->write);
	classify_cache_free(c->cache);
	free(c);
}

void classify_sql(struct classifier *c, const char *sql, size_t len, struct classify_result *out)
{
	if (c->cache) {
		if (classify_cache_get(c->cache, sql, len, out))
			return;
	} else {
		c->misses++;
	}
	classify_uncached(c, sql, out);
	if (c->cache)
		classify_cache_put(c->cache, sql, len, out);
}

/* Classifies a text that is its own only cache key (classify_sql()'s miss path). */
static void classify_and_put(struct classifier *c, const char *sql, size_t len,
			     struct classify_result *out)
{
	classify_cache_count(c->cache, false, false);
	classify_uncached(c, sql, out);
	classify_cache_put(c->cache, sql, len, out);
}

void classify_sql_raw(struct classifier *c, const char *sql, size_t len, char *scratch,
		      size_t scratchcap, struct classify_result *out)
{
	size_t nlen;
	uint64_t hash;
	bool normalized;

	if (!c->cache) {
		c->misses++;
		if (len < scratchcap && normalize_sql(sql, len, scratch, scratchcap, &nlen))
			classify_uncached(c, scratch, out);
		else
			classify_uncached(c, sql, out);
		return;
	}
	if (len > c->cache_max_len) {
		/* Not cacheable as it is; its normalised form may be shorter. */
		if (len < scratchcap && normalize_sql(sql, len, scratch, scratchcap, &nlen))
			classify_sql(c, scratch, nlen, out);
		else
			classify_sql(c, sql, len, out);
		return;
	}
	/* The hot path: one pass for the hash, an exact compare, no normaliser. */
	hash = classify_cache_hash(c->cache, sql, len);
	if (classify_cache_get_hashed(c->cache, hash, sql, len, out)) {
		classify_cache_count(c->cache, true, true);
		return;
	}
	normalized = len < scratchcap && normalize_sql(sql, len, scratch, scratchcap, &nlen);
	if (!normalized || (nlen == len && memcmp(scratch, sql, len) == 0)) {
		/* The raw text is the normalised one (or has none): one key. */
		classify_and_put(c, sql, len, out);
		return;
	}
	if (nlen <= c->cache_max_len &&
	    classify_cache_get_hashed(c->cache, classify_cache_hash(c->cache, scratch, nlen),
				      scratch, nlen, out)) {
		classify_cache_count(c->cache, true, false);
	} else {
		classify_and_put(c, scratch, nlen, out);
	}
	classify_cache_put_raw(c->cache, hash, sql, len, out);
}

void classify_remember_primary(struct classifier *c, const char *sql, size_t len, char *scratch,
			       size_t scratchcap, const char *rule)
{
	struct classify_result res;
	size_t nlen;
	if (!c->cache)
		return;
	classify_sql_raw(c, sql, len, scratch, scratchcap, &res);
	res.route = ROUTE_PRIMARY;
	res.inner_route = ROUTE_PRIMARY;
	res.rule = rule;
	/* Both keys: the raw text (its next lookup) and its shape (the same statement with other
	 * constants). The raw entry is stored at once, without the doorkeeper's second sighting. */
	classify_cache_put(c->cache, sql, len, &res);
	if (len < scratchcap && normalize_sql(sql, len, scratch, scratchcap, &nlen))
		classify_cache_put(c->cache, scratch, nlen, &res);
}

size_t classify_sql_each(struct classifier *c, const char *sql, size_t len,
			 struct classify_result *out, size_t cap)
{
	PgQueryProtobufParseResult pr;
	PgQuery__ParseResult *tree = NULL;
	size_t n = 0;

	(void)len;
	pr = pg_query_parse_protobuf(sql);
	if (!pr.error)
		tree = pg_query__parse_result__unpack(NULL, pr.parse_tree.len,
						      (const uint8_t *)pr.parse_tree.data);
	if (!tree) {
		if (cap > 0) {
			result_init(&out[0]);
			route_write(&out[0], "parse error");
			out[0].flags |= CLASSIFY_PARSE_ERROR;
		}
		pg_query_free_protobuf_parse_result(pr);
		return 1;
	}
	for (; n < tree->n_stmts; n++) {
		if (n >= cap)
			continue;
		result_init(&out[n]);
		if (tree->stmts[n] && tree->stmts[n]->stmt)
			classify_stmt(c, tree->stmts[n]->stmt, &out[n]);
		else
			route_write(&out[n], "parse error");
		if (!(out[n].flags & CLASSIFY_PREPARE))
			out[n].inner_route = out[n].route;
	}
	pg_query__parse_result__free_unpacked(tree, NULL);
	pg_query_free_protobuf_parse_result(pr);
	return n;
}

/* ---- SET values ----------------------------------------------------------------------------- */

/* Appends s (n bytes) to buf at *pos; false when it does not fit with the NUL. */
static bool buf_put(char *buf, size_t cap, size_t *pos, const char *s, size_t n)
{
	if (*pos + n + 1 > cap)
		return false;
	memcpy(buf + *pos, s, n);
	*pos += n;
	buf[*pos] = '\0';
	return true;
}

/* PostgreSQL's quote_identifier(), without its keyword check: quotes unless s is a plain
 * lower-case identifier. */
static bool buf_put_ident(char *buf, size_t cap, size_t *pos, const char *s)
{
	bool safe = (*s >= 'a' && *s <= 'z') || *s == '_';

	for (const char *p = s; *p && safe; p++)
		safe = (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_';
	if (safe)
		return buf_put(buf, cap, pos, s, strlen(s));
	if (!buf_put(buf, cap, pos, "\"", 1))
		return false;
	for (const char *p = s; *p; p++)
		if (!buf_put(buf, cap, pos, p, 1) || (*p == '"' && !buf_put(buf, cap, pos, p, 1)))
			return false;
	return buf_put(buf, cap, pos, "\"", 1);
}

/* One SET argument in flatten_set_variable_args()'s form. */
static bool set_arg_text(const PgQuery__Node *a, bool list_quote, char *buf, size_t cap,
			 size_t *pos)
{
	const PgQuery__AConst *k;
	char num[32];

	if (a && a->node_case == PG_QUERY__NODE__NODE_TYPE_CAST && a->type_cast->arg)
		a = a->type_cast->arg; /* SET TIME ZONE INTERVAL '...': its string, approximately */
	if (!a || a->node_case != PG_QUERY__NODE__NODE_A_CONST)
		return false;
	k = a->a_const;
	switch (k->val_case) {
	case PG_QUERY__A__CONST__VAL_IVAL:
		snprintf(num, sizeof(num), "%d", (int)k->ival->ival);
		return buf_put(buf, cap, pos, num, strlen(num));
	case PG_QUERY__A__CONST__VAL_FVAL:
		return buf_put(buf, cap, pos, k->fval->fval, strlen(k->fval->fval));
	case PG_QUERY__A__CONST__VAL_SVAL:
		if (list_quote)
			return buf_put_ident(buf, cap, pos, k->sval->sval);
		return buf_put(buf, cap, pos, k->sval->sval, strlen(k->sval->sval));
	case PG_QUERY__A__CONST__VAL_BOOLVAL:
		return buf_put(buf, cap, pos, k->boolval->boolval ? "true" : "false",
			       k->boolval->boolval ? 4 : 5);
	default:
		return false;
	}
}

static bool is_list_quote_setting(const char *name)
{
	for (size_t i = 0; i < N_ELEMS(list_quote_settings); i++)
		if (strcmp(name, list_quote_settings[i]) == 0)
			return true;
	return false;
}

/* Fills name, value and *is_reset from one SET/RESET; false if it does not fit or has an
 * argument of an unexpected form. */
static bool set_value_of(const PgQuery__VariableSetStmt *s, char *name, size_t namecap, char *value,
			 size_t valcap, bool *is_reset)
{
	size_t pos = 0;
	bool list_quote;

	if (strlen(s->name) + 1 > namecap || valcap == 0)
		return false;
	memcpy(name, s->name, strlen(s->name) + 1);
	lower_in_place(name);
	value[0] = '\0';
	*is_reset = s->kind != PG_QUERY__VARIABLE_SET_KIND__VAR_SET_VALUE;
	if (*is_reset)
		return true;
	list_quote = is_list_quote_setting(name);
	for (size_t i = 0; i < s->n_args; i++) {
		if (i > 0 && !buf_put(value, valcap, &pos, ", ", 2))
			return false;
		if (!set_arg_text(s->args[i], list_quote, value, valcap, &pos))
			return false;
	}
	return true;
}

bool classify_set_value_nth(const char *sql, size_t len, unsigned nth, char *name, size_t namecap,
			    char *value, size_t valcap, bool *is_reset)
{
	PgQueryProtobufParseResult pr;
	PgQuery__ParseResult *tree = NULL;
	bool found = false;

	(void)len;
	pr = pg_query_parse_protobuf(sql);
	if (!pr.error)
		tree = pg_query__parse_result__unpack(NULL, pr.parse_tree.len,
						      (const uint8_t *)pr.parse_tree.data);
	for (size_t i = 0; tree && i < tree->n_stmts; i++) {
		const PgQuery__Node *n = tree->stmts[i] ? tree->stmts[i]->stmt : NULL;
		const PgQuery__VariableSetStmt *s;

		if (!n || n->node_case != PG_QUERY__NODE__NODE_VARIABLE_SET_STMT)
			continue;
		s = n->variable_set_stmt;
		if (s->is_local || (s->kind != PG_QUERY__VARIABLE_SET_KIND__VAR_SET_VALUE &&
				    s->kind != PG_QUERY__VARIABLE_SET_KIND__VAR_SET_DEFAULT &&
				    s->kind != PG_QUERY__VARIABLE_SET_KIND__VAR_RESET))
			continue;
		if (nth-- > 0)
			continue;
		found = set_value_of(s, name, namecap, value, valcap, is_reset);
		break;
	}
	if (tree)
		pg_query__parse_result__free_unpacked(tree, NULL);
	pg_query_free_protobuf_parse_result(pr);
	return found;
}

bool classify_set_value(const char *sql, size_t len, char *name, size_t namecap, char *value,
			size_t valcap, bool *is_reset)
{
	return classify_set_value_nth(sql, len, 0, name, namecap, value, valcap, is_reset);
}

void classify_get_stats(const struct classifier *c, struct classify_stats *out)
{
	if (c->cache) {
		classify_cache_get_stats(c->cache, out);
		return;
	}
	memset(out, 0, sizeof(*out));
	out->misses = c->misses;
}

void classify_cache_clear(struct classifier *c)
{
	if (c->cache)
		classify_cache_clear_all(c->cache);
}

const char *classify_route_name(enum classify_route route)
{
	switch (route) {
	case ROUTE_PRIMARY:
		return "primary";
	case ROUTE_ANY:
		return "any";
	case ROUTE_ALL:
		return "all";
	case ROUTE_FOLLOW:
		return "follow";
	}
	return "?";
}
