/*
 * What a statement does to its session, as the classifier reads it (route/classify.h): the one
 * place the session layer learns from SQL text. Nobody in src/pool/ looks at statement text
 * itself; the classifier's grammar decides, so comments, literals and quoted identifiers never
 * fool it, and one classification (cached by the raw text) serves routing and tracking.
 *
 * Effects applied here, when the text is about to run on c->server:
 *  - session state pgrelay cannot copy to another backend (LISTEN, SQL PREPARE, WITH HOLD
 *    cursors, temporary objects, session advisory locks, set_config, LOAD, settings it does not
 *    follow, search_path with pg_temp, roles): the session is pinned to its backend, reads from
 *    the primary from then on, and after LOAD the backend is never handed to anyone else;
 *  - SET/RESET of a setting pgrelay follows but PostgreSQL does not report: recorded, so that it
 *    follows the session to other backends (the reported ones come back as ParameterStatus);
 *  - DISCARD ALL, RESET ALL, DEALLOCATE: the prepared statements and settings pgrelay replays
 *    are forgotten as PostgreSQL forgets them.
 */
#include <stdlib.h>
#include <string.h>

#include "pool/client.h"
#include "pool/server.h"
#include "pool/worker.h"
#include "protocol/pqmsg.h"
#include "route/classify.h"
#include "util/log.h"
#include "protocol/reader.h"

void client_pin(struct client *c, const char *why)
{
	if (c->pinned)
		return;
	c->pinned = true;
	c->route.primary_only = true;
	log_debug("client", c->id, "pinned to its server connection: %s", why);
}

/* Follows the client's SET/RESET of an unreported setting on it and on the server it runs on. */
static void client_follow_set(struct client *c, int i, const char *value)
{
	char *mine = value ? strdup(value) : NULL;
	if (!client_param_put(c, i, mine))
		log_info("client", c->id, "out of memory: a SET is not followed");
	c->params_gen++;
	if (c->server) {
		c->server->synced_client = 0;
		free(c->server->param[i]);
		c->server->param[i] = value ? strdup(value) : NULL;
	}
}

static void client_snapshot_settings(struct client *c);

static void client_forget_unreported_settings(struct client *c)
{
	client_snapshot_settings(c);
	for (int t = TP_FIRST_UNREPORTED; t < TP_COUNT; t++)
		client_follow_set(c, t, NULL);
}

/* Before the first followed SET inside a transaction block: what a ROLLBACK brings back. */
static void client_snapshot_settings(struct client *c)
{
	if (c->set_snap_taken || c->txn_status == TXN_IDLE)
		return;
	struct client_extras *x = client_extras(c);
	if (x)
		x->set_snap = calloc(TP_COUNT, sizeof(*x->set_snap));
	if (!x || !x->set_snap) {
		log_info("client", c->id, "out of memory: a ROLLBACK will not restore settings");
		return;
	}
	for (int t = TP_FIRST_UNREPORTED; t < TP_COUNT; t++)
		x->set_snap[t] = c->param && c->param[t] ? strdup(c->param[t]) : NULL;
	c->set_snap_taken = true;
	c->txn_rolled_back = false;
}

void client_settings_txn_ended(struct client *c)
{
	if (!c->set_snap_taken)
		return;
	struct client_extras *x = c->ext; /* set_snap_taken: made with the snapshot */
	for (int t = TP_FIRST_UNREPORTED; t < TP_COUNT; t++) {
		if (c->txn_rolled_back) {
			if (!client_param_put(c, t, x->set_snap[t]))
				log_info("client", c->id,
					 "out of memory: a setting was not restored");
		} else {
			free(x->set_snap[t]);
		}
	}
	free(x->set_snap);
	x->set_snap = NULL;
	c->params_gen++;
	/* The backends rolled back too; what each holds is resent at the next sync. */
	if (c->txn_rolled_back)
		for (int i = 0; i < c->n_links; i++)
			c->links[i]->params_unsure = true;
	c->set_snap_taken = false;
	c->txn_rolled_back = false;
}

/* Every SET/RESET of a followed, unreported setting in sql (several in a multi-statement). */
static void client_follow_sets(struct client *c, const char *sql, size_t len)
{
	char name[64], value[1024];
	bool reset;
	for (unsigned nth = 0; nth < 64; nth++) {
		if (!classify_set_value_nth(sql, len, nth, name, sizeof(name), value, sizeof(value),
					    &reset))
			return;
		int t = pool_tracked_param(name);
		if (t < TP_FIRST_UNREPORTED)
			continue;
		client_snapshot_settings(c);
		client_follow_set(c, t, reset ? NULL : value);
	}
}

/*
 * DEALLOCATE name | ALL: SQL and protocol statements share one namespace in PostgreSQL, so the
 * client's protocol statement of that name is gone, on the backend that runs it too.
 */
static void client_note_deallocate(struct client *c, const char *name)
{
	if (!name[0]) {
		if (c->server)
			stmt_map_clear(&c->server->stmts);
		stmt_map_clear(&c->stmts);
		return;
	}
	if (c->server)
		stmt_map_remove(&c->server->stmts, name);
	stmt_map_remove(&c->stmts, name);
}

void client_apply_sql_effects(struct client *c, const char *sql, size_t len,
			      const struct route_facts *f)
{
	uint32_t fl = f->flags;
	if (!(fl & CLASSIFY_EFFECT_MASK))
		return; /* the common case: one test */
	if (fl & CLASSIFY_SESSION_STATE) {
		client_pin(c, f->effect && f->effect[0] ? f->effect : "session state");
		/* A loaded library stays in the backend after any reset. */
		if (f->effect && strcmp(f->effect, "LOAD") == 0 && c->server)
			c->server->dirty = true;
	}
	if (fl & CLASSIFY_DISCARD_ALL) {
		/* The backend drops every statement: so do both maps. DISCARD PLANS, TEMP and
		 * SEQUENCES keep prepared statements. */
		if (c->server) {
			stmt_map_clear(&c->server->stmts);
			c->server->unnamed_of = 0;
		}
		stmt_map_clear(&c->stmts);
		client_forget_unnamed(c);
		client_forget_unreported_settings(c);
	}
	if (fl & CLASSIFY_RESET_ALL)
		client_forget_unreported_settings(c);
	if ((fl & CLASSIFY_DEALLOCATE) && !(fl & CLASSIFY_MULTI)) {
		client_note_deallocate(c, f->object);
	} else if (fl & CLASSIFY_DEALLOCATE) {
		/* Several in one string: the client's are forgotten (re-prepared if used), and
		 * what the backend still has is unsure (a Close goes before each Parse). */
		stmt_map_clear(&c->stmts);
		if (c->server) {
			stmt_map_clear(&c->server->stmts);
			c->server->stmts_unsure = true;
		}
	}
	if (fl & CLASSIFY_SET_TRACKED)
		client_follow_sets(c, sql, len);
}

/* The facts of the text at sql if it is the one classified last in c's read buffer. */
static bool client_memo_get(struct client *c, const char *sql, struct route_facts *out)
{
	const struct iobuf *b = c->conn.rbuf;
	struct worker *w = c->w;
	if (sql != w->memo_sql || c->id != w->memo_client || !b || b->gen != w->memo_gen)
		return false;
	*out = w->memo_facts;
	if (out->flags & CLASSIFY_SESSION_STATE)
		c->route.primary_only = true;
	return true;
}

/*
 * A plain statement (classify_plain_command) has no session effect and its kind is its first
 * word: one pass instead of the classifier's hashes, normalising and cache lookups, which a
 * statement with changing constants would cost. Its route is known for a write (the primary);
 * a plain SELECT is answered so only where routing is fixed and its route is not used, and
 * otherwise not looked at past its first word (the classifier reads it, once).
 */
static bool client_classify_plain(const struct client *c, const char *sql, size_t len,
				  struct route_facts *out)
{
	bool fixed = client_route_is_fixed(c);
	uint8_t cmd = fixed ? classify_plain_command(sql, len) : classify_plain_write(sql, len);
	if (cmd == CLASSIFY_CMD_NONE)
		return false;
	out->route = ROUTE_PRIMARY;
	out->flags = cmd == CLASSIFY_CMD_OTHER ? 0 : CLASSIFY_WRITE;
	out->rule = cmd == CLASSIFY_CMD_OTHER ? "plain statement, fixed route" : "write statement";
	out->pattern_primary = false;
	out->stay = false;
	out->cmd = cmd;
	return true;
}

/* Classifies text of len bytes (complete: all of it is here); the callers asked the memo. */
static void client_classify_sized(struct client *c, const char *sql, size_t len, bool complete,
				  struct route_facts *out)
{
	out->effect = NULL;
	out->object[0] = 0;
	if (!complete) {
		/* Only part of the text is here: nothing can be proved about the rest. Its session
		 * effects are not known either: a statement this long is data (doc/pooling.md). */
		out->route = ROUTE_PRIMARY;
		out->flags = CLASSIFY_WRITE;
		out->rule = "statement too long to classify";
		out->pattern_primary = false;
		out->stay = false;
		out->cmd = CLASSIFY_CMD_NONE;
		return;
	}
	if (!client_classify_plain(c, sql, len, out))
		router_classify_in(&c->w->router, c->route.db, sql, len, out);
	if (out->flags & CLASSIFY_SESSION_STATE) {
		/* Session state lives where it was created: the primary, from now on. */
		c->route.primary_only = true;
		if (out->route != ROUTE_PRIMARY) {
			out->route = ROUTE_PRIMARY;
			out->rule = "session state";
		}
	}
	/* Whole text in the read buffer: the same bytes give the same facts while they stay. */
	const struct iobuf *b = c->conn.rbuf;
	if (b && (const uint8_t *)sql >= b->data && (const uint8_t *)sql < b->data + b->recv) {
		struct worker *w = c->w;
		w->memo_client = c->id;
		w->memo_sql = sql;
		w->memo_gen = b->gen;
		w->memo_facts = *out;
	}
}

void client_classify_text(struct client *c, const char *sql, size_t avail, bool whole,
			  struct route_facts *out)
{
	if (client_memo_get(c, sql, out))
		return;
	size_t len = cstr_len(sql, avail);
	client_classify_sized(c, sql, len, whole && len < avail, out);
}

bool client_classify_parse(struct client *c, const struct frame *f, const char **name,
			   struct route_facts *out)
{
	struct reader r;
	reader_init(&r, f->body, f->body_avail);
	if (!reader_cstr(&r, name, NULL))
		return false;
	client_classify_text(c, (const char *)r.p, f->body_avail - (size_t)(r.p - f->body),
			     f->body_avail == f->len, out);
	return true;
}

void client_classify_query(struct client *c, const struct frame *f, struct route_facts *out)
{
	if (client_memo_get(c, (const char *)f->body, out))
		return;
	client_classify_sized(c, (const char *)f->body, client_query_text_len(f),
			      f->body_avail == f->len, out);
}
