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
 * Invariant: every path fills a complete struct classify_result whose rule is a static string;
 * anything unexpected (parse error, out of memory, an unknown node) lands on the primary.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <pg_query.h>
#include <pg_query/pg_query.pb-c.h>

#include "route/classify.h"

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
	uint64_t misses;	      /* counted here when there is no cache */
};

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
	r->rule = "";
	r->object[0] = '\0';
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
	bool decided;		   /* the statement needs the primary; stop walking */
	unsigned in_with;	   /* depth of WithClause nodes around the current node */
};

static void walk_decide(struct walk *w, const char *rule)
{
	route_write(w->r, rule);
	w->decided = true;
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
	rule = function_rule(w->c, schema, name);
	if (rule) {
		walk_decide(w, rule);
		set_object(w->r, schema, name);
	}
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
	for (unsigned i = 0; i < d->n_fields && !w->decided; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];

		if (f->type != PROTOBUF_C_TYPE_MESSAGE)
			continue;
		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			size_t n;
			ProtobufCMessage *const *items;

			memcpy(&n, base + f->quantifier_offset, sizeof(n));
			memcpy(&items, base + f->offset, sizeof(items));
			for (size_t j = 0; j < n && !w->decided; j++)
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

/* Routes a statement that reads unless something inside it says otherwise. */
static void classify_read(const struct classifier *c, const PgQuery__Node *n,
			  struct classify_result *r, const char *rule)
{
	struct walk w = { .c = c, .r = r };

	route_to(r, ROUTE_ANY, rule, 0);
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

static void classify_set(const PgQuery__VariableSetStmt *s, struct classify_result *r)
{
	uint32_t local = s->is_local ? CLASSIFY_SET_LOCAL : 0;

	switch (s->kind) {
	case PG_QUERY__VARIABLE_SET_KIND__VAR_SET_MULTI:
		/* SET TRANSACTION ... and SET SESSION CHARACTERISTICS AS TRANSACTION ... */
		if (strcmp(s->name, "TRANSACTION") == 0)
			route_to(r, ROUTE_ALL, "SET TRANSACTION",
				 CLASSIFY_SET | CLASSIFY_SET_LOCAL |
					 txn_mode_flags(s->args, s->n_args));
		else
			route_to(r, ROUTE_ALL, "SET SESSION CHARACTERISTICS",
				 CLASSIFY_SET | txn_mode_flags(s->args, s->n_args));
		return;
	case PG_QUERY__VARIABLE_SET_KIND__VAR_RESET:
		route_to(r, ROUTE_ALL, "RESET", CLASSIFY_SET);
		break;
	case PG_QUERY__VARIABLE_SET_KIND__VAR_RESET_ALL:
		route_to(r, ROUTE_ALL, "RESET ALL", CLASSIFY_SET | CLASSIFY_SESSION_RESET);
		return;
	default:
		route_to(r, ROUTE_ALL, local ? "SET LOCAL" : "SET", CLASSIFY_SET | local);
		break;
	}
	set_object(r, NULL, s->name);
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
	if (r->route == ROUTE_ANY) {
		r->rule = analyze ? "EXPLAIN ANALYZE" : "EXPLAIN";
	} else if (r->route == ROUTE_PRIMARY && !analyze) {
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
	set_object(r, NULL, d->portalname);
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
		break;
	case PG_QUERY__NODE__NODE_EXPLAIN_STMT:
		classify_explain(c, n->explain_stmt, r);
		break;
	case PG_QUERY__NODE__NODE_COPY_STMT:
		classify_copy(c, n->copy_stmt, r);
		break;
	case PG_QUERY__NODE__NODE_VARIABLE_SHOW_STMT:
		route_to(r, ROUTE_ANY, "SHOW", 0);
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
		route_to(r, ROUTE_ALL, "DISCARD", CLASSIFY_SESSION_RESET);
		break;
	case PG_QUERY__NODE__NODE_DEALLOCATE_STMT:
		route_to(r, ROUTE_ALL, "DEALLOCATE", CLASSIFY_SESSION_RESET);
		set_object(r, NULL, n->deallocate_stmt->name);
		break;
	case PG_QUERY__NODE__NODE_LOAD_STMT:
		route_to(r, ROUTE_ALL, "LOAD", 0);
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
			route_to(r, ROUTE_ALL, "CLOSE ALL", 0);
		} else {
			route_to(r, ROUTE_FOLLOW, "CLOSE", 0);
			set_object(r, NULL, n->close_portal_stmt->portalname);
		}
		break;
	case PG_QUERY__NODE__NODE_CREATE_TABLE_AS_STMT:
		route_write(r, "CREATE TABLE AS");
		break;
	case PG_QUERY__NODE__NODE_LOCK_STMT:
		route_write(r, "LOCK");
		break;
	case PG_QUERY__NODE__NODE_LISTEN_STMT:
		route_write(r, "LISTEN");
		break;
	case PG_QUERY__NODE__NODE_UNLISTEN_STMT:
		route_write(r, "UNLISTEN");
		break;
	case PG_QUERY__NODE__NODE_NOTIFY_STMT:
		route_write(r, "NOTIFY");
		break;
	case PG_QUERY__NODE__NODE_CALL_STMT:
		route_write(r, "CALL");
		break;
	case PG_QUERY__NODE__NODE_DO_STMT:
		route_write(r, "DO");
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

static void classify_parsed(const struct classifier *c, const PgQuery__ParseResult *tree,
			    struct classify_result *out)
{
	uint32_t flags = 0;

	if (tree->n_stmts == 0) {
		route_to(out, ROUTE_ANY, "empty query", CLASSIFY_EMPTY);
		out->inner_route = ROUTE_ANY;
		return;
	}
	if (tree->n_stmts == 1) {
		if (tree->stmts[0] && tree->stmts[0]->stmt)
			classify_stmt(c, tree->stmts[0]->stmt, out);
		else
			route_write(out, "parse error");
		if (!(out->flags & CLASSIFY_PREPARE))
			out->inner_route = out->route;
		return;
	}
	/* pgpool's default: a multi-statement string goes to the primary as a whole. The flags
	 * still tell the router what the parts do (a BEGIN inside, a SET...). */
	for (size_t i = 0; i < tree->n_stmts; i++) {
		struct classify_result part;

		result_init(&part);
		if (tree->stmts[i] && tree->stmts[i]->stmt)
			classify_stmt(c, tree->stmts[i]->stmt, &part);
		else
			route_write(&part, "parse error");
		flags |= part.flags;
	}
	route_to(out, ROUTE_PRIMARY, "multi-statement", flags | CLASSIFY_MULTI);
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
