/*
 * Read/write splitting on the client side: which backend link each unit of a session's work
 * goes to (doc/routing.md). The decisions are the router's (route/router.h); this file applies
 * them to connections:
 *
 *  - A unit is one Query or FunctionCall, or the extended-protocol messages up to a Sync. Its node
 *    is decided at its first message; an extended unit is classified as a whole by looking ahead
 *    in the buffer up to its Sync (all of it must be there, else it goes to the primary), so one
 *    pipeline never spans nodes.
 *  - A session holds at most one link per node (c->links); c->server is the active one. Only the
 *    active link's answers reach the client. The active link changes only when it is at a
 *    boundary (nothing outstanding, its last word ReadyForQuery), so answers never interleave; a
 *    pipelining client whose next unit goes elsewhere waits for that boundary.
 *  - Session state follows the session: tracked parameters are synced with a hidden SET when a
 *    link becomes active; prepared statements are re-prepared where used (prepared.h); a
 *    transaction that started on a standby is joined by the primary at its first write, with
 *    the BEGIN and savepoints replayed there (c->ext->txn_log); when the transaction ends, the
 * other links that took part get a hidden ROLLBACK (they only read).
 *  - Admin statements (SHOW pool_nodes, PGRELAY ..., SET pgrelay.route) are answered here, in
 *    order, once the active link is at a boundary.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "admin/admin.h"
#include "pool/client.h"
#include "pool/server.h"
#include "pool/worker.h"
#include "protocol/pqmsg.h"
#include "protocol/reader.h"
#include "util/log.h"

/* ---- links ------------------------------------------------------------------------------- */

void client_link_add(struct client *c, struct server *s)
{
	bool found = false;
	for (int i = 0; i < c->n_links; i++)
		found |= c->links[i] == s;
	if (!found && c->n_links < CLIENT_MAX_LINKS)
		c->links[c->n_links++] = s;
	c->server = s;
}

void client_link_remove(struct client *c, struct server *s)
{
	for (int i = 0; i < c->n_links; i++) {
		if (c->links[i] == s) {
			c->links[i] = c->links[--c->n_links];
			c->links[c->n_links] = NULL;
			break;
		}
	}
	if (c->server == s)
		c->server = NULL;
}

static struct server *client_link_for(const struct client *c, int node)
{
	for (int i = 0; i < c->n_links; i++)
		if (c->links[i]->node_id == node)
			return c->links[i];
	return NULL;
}

/* Lets go of links other than the active one that are idle (for a pin, or to make room). */
static void client_drop_idle_links(struct client *c, int keep_free)
{
	for (int i = c->n_links - 1; i >= 0 && CLIENT_MAX_LINKS - c->n_links < keep_free; i--) {
		struct server *s = c->links[i];
		if (s == c->server || !server_at_boundary(s) || s->txn_status != TXN_IDLE)
			continue;
		server_client_left(s, false);
	}
}

void client_link_lost(struct client *c, int node, enum link_loss how, const char *sqlstate,
		      const char *reason)
{
	if (c->state != CL_ACTIVE && c->state != CL_WAITING) {
		client_on_server_lost(c, sqlstate, reason);
		return;
	}
	bool idle = how == LINK_LOST_IDLE;
	/*
	 * A connect that failed carried nothing: with a cluster manager the node has just been
	 * reported, so the unit waits for the next views (bounded by query_wait_timeout) and is
	 * decided again, on the new primary after a failover. Without one, fail as before.
	 */
	if (how == LINK_LOST_UNUSED && c->w->cluster && !c->pinned && c->state == CL_ACTIVE &&
	    !c->route.in_txn && !c->server && client_tracks_statements(c)) {
		log_info("client", c->id,
			 "backend %d refused a connection (%s); waiting for the "
			 "cluster's next view",
			 node, reason);
		c->route_pending = false;
		if (c->hold == HOLD_SWITCH)
			c->hold = HOLD_NONE;
		if (c->route.read_node == node)
			c->route.read_node = -1;
		client_wait_for_node(c, -1);
		return;
	}
	/*
	 * A link that was idle outside a transaction holds nothing the session cannot rebuild
	 * (tracked settings are synced, prepared statements re-prepared), unless the session
	 * pinned session state to it. Then the session goes on, elsewhere.
	 */
	/* Only a session whose state pgrelay follows (statements, settings) can move. */
	if (idle && !c->pinned && !c->route.in_txn && client_tracks_statements(c)) {
		log_info("client", c->id, "lost its idle connection to backend %d (%s); goes on",
			 node, reason);
		if (c->route.read_node == node)
			c->route.read_node = -1;
		client_kick(c);
		return;
	}
	client_on_server_lost(c, sqlstate, reason);
}

/* ---- classification of a unit ----------------------------------------------------------- */

static void client_txn_log_reset(struct client *c)
{
	if (c->ext)
		c->ext->txn_log_len = 0;
}

/*
 * Makes a buffer of at least need bytes (need <= max) out of *buf (cap bytes): from 64 bytes,
 * doubled until it fits, so that a session keeps what its longest use needed and reallocates a
 * few times at most. False when out of memory (the old buffer is kept).
 */
static bool client_buf_reserve(char **buf, uint32_t *cap, uint32_t need, uint32_t max)
{
	if (need <= *cap)
		return true;
	uint32_t n = 64;
	while (n < need)
		n *= 2;
	if (n > max)
		n = max;
	char *p = realloc(*buf, n);
	if (!p)
		return false;
	*buf = p;
	*cap = n;
	return true;
}

/* Keeps transaction-control text for the replay on the primary (bounded; see header). */
static void client_txn_log_add(struct client *c, const char *sql, size_t len)
{
	struct client_extras *x = client_extras(c);
	if (!x)
		return; /* out of memory: replayed as a plain BEGIN */
	if (x->txn_log_len + len + 2 > CLIENT_TXN_LOG_MAX)
		return; /* doc/routing.md: savepoints beyond the bound are not replayed */
	uint32_t need = x->txn_log_len + (uint32_t)len + 2;
	if (!client_buf_reserve(&x->txn_log, &x->txn_log_cap, need, CLIENT_TXN_LOG_MAX))
		return;
	memcpy(x->txn_log + x->txn_log_len, sql, len);
	x->txn_log_len += (uint32_t)len;
	x->txn_log[x->txn_log_len++] = ';';
	x->txn_log[x->txn_log_len] = 0;
}

static bool client_is_txn_control(uint32_t flags)
{
	return flags & (CLASSIFY_TXN_BEGIN | CLASSIFY_TXN_SAVEPOINT | CLASSIFY_SET_LOCAL);
}

/* Not provably read-only, and not known to write either (no read-your-writes wait). */
static void client_facts_primary(struct route_facts *f, const char *why)
{
	f->route = ROUTE_PRIMARY;
	f->flags = 0;
	f->rule = why;
	f->pattern_primary = false;
	f->stay = false;
	f->cmd = CLASSIFY_CMD_NONE;
	f->effect = NULL;
	f->object[0] = 0;
}

/* The facts of the statement a Bind names, as recorded at its Parse; false if unknown. */
/*
 * A prepared FETCH, MOVE, CLOSE or EXECUTE follows the cursor (or statement) its text names, and
 * only the text has the name: it is read again from the kept Parse. Cursor statements only, so
 * the hot path never comes here (pgx prepares "fetch ... from c" once, then binds it alone).
 */
static void client_statement_object(struct client *c, const uint8_t *msg, uint32_t len,
				    struct route_facts *out)
{
	struct reader r;
	const char *name, *query;
	size_t qlen;
	if (!msg || len <= FRAME_HEADER_LEN)
		return;
	reader_init(&r, msg + FRAME_HEADER_LEN, len - FRAME_HEADER_LEN);
	if (!reader_cstr(&r, &name, NULL) || !reader_cstr(&r, &query, &qlen))
		return;
	struct route_facts again;
	router_classify_in(&c->w->router, c->route.db, query, qlen, &again);
	if (again.route == ROUTE_FOLLOW)
		memcpy(out->object, again.object, sizeof(out->object));
}

static bool client_statement_facts(struct client *c, const char *name, struct route_facts *out)
{
	uint8_t route = c->unnamed_route;
	uint32_t flags = c->unnamed_flags;
	const uint8_t *msg = c->ext ? c->ext->unnamed_msg : NULL;
	uint32_t msg_len = c->ext ? c->ext->unnamed_len : 0;
	if (name[0]) {
		const struct stmt *st = stmt_map_find(&c->stmts, name);
		route = st ? st->route : 0;
		flags = st ? st->route_flags : 0;
		msg = st ? st->msg : NULL;
		msg_len = st ? st->msg_len : 0;
	}
	if (!route)
		return false;
	*out = (struct route_facts){ .route = (enum classify_route)(route - 1),
				     .flags = flags,
				     .rule = "prepared statement" };
	if (out->route == ROUTE_FOLLOW)
		client_statement_object(c, msg, msg_len, out);
	return true;
}

/* Remembers where a statement Parse defines may run, for the Binds that use it later. */
static void client_note_statement_route(struct client *c, const char *name,
					const struct route_facts *f)
{
	if (!name[0]) {
		c->unnamed_route = (uint8_t)(f->route + 1);
		c->unnamed_flags = f->flags;
		return;
	}
	struct stmt *st = stmt_map_find(&c->stmts, name);
	if (st) {
		st->route = (uint8_t)(f->route + 1);
		st->route_flags = f->flags;
	}
}

/* A prepared BEGIN/SAVEPOINT being run: its text (kept with its Parse) goes to the log. */
static void client_txn_log_bound(struct client *c, const char *name)
{
	const struct stmt *st = name[0] ? stmt_map_find(&c->stmts, name) : NULL;
	if (!st || !st->msg || st->msg_len <= FRAME_HEADER_LEN)
		return;
	struct reader r;
	const char *stmt_name, *query;
	size_t qlen;
	reader_init(&r, st->msg + FRAME_HEADER_LEN, st->msg_len - FRAME_HEADER_LEN);
	if (reader_cstr(&r, &stmt_name, NULL) && reader_cstr(&r, &query, &qlen))
		client_txn_log_add(c, query, qlen);
}

/*
 * Looks at the extended-protocol messages buffered from the current one up to the Sync and sums
 * them up. A unit whose Sync is not in the buffer yet goes to the primary: its remaining
 * messages could write.
 */
static void client_facts_of_unit(struct client *c, struct route_facts *acc, bool collect_log)
{
	bool any = false, synced = false, flushed = false;
	const char *parsed[8]; /* statements this unit defines: its Binds need no lookup */
	int n_parsed = 0;
	acc->route = ROUTE_FOLLOW;
	acc->flags = 0;
	acc->rule = "extended protocol";
	acc->pattern_primary = false;
	acc->stay = false;
	acc->cmd = CLASSIFY_CMD_NONE;
	acc->effect = NULL;
	acc->object[0] = 0;
	struct unit_walk w;
	struct frame f;
	client_unit_walk_start(c, &w, true);
	while (!synced && client_unit_next(c, &w, &f)) {
		struct reader r;
		const char *name;
		struct route_facts one;
		reader_init(&r, f.body, f.body_avail);
		switch (f.type) {
		case PqMsg_Parse:
			if (!client_classify_parse(c, &f, &name, &one)) {
				client_facts_primary(&one, "malformed Parse");
			} else {
				if (n_parsed < 8)
					parsed[n_parsed++] = name;
				if (collect_log && client_is_txn_control(one.flags)) {
					const char *query = name + strlen(name) + 1;
					client_txn_log_add(c, query, strlen(query));
				}
			}
			router_facts_merge(acc, &one);
			any = true;
			break;
		case PqMsg_Bind: {
			const char *portal;
			if (!reader_cstr(&r, &portal, NULL) || !reader_cstr(&r, &name, NULL)) {
				client_facts_primary(&one, "malformed Bind");
			} else {
				bool known = false;
				for (int k = 0; k < n_parsed && !known; k++)
					if (strcmp(parsed[k], name) == 0) {
						/* Its Parse in this unit decides. */
						one = (struct route_facts){
							.route = ROUTE_FOLLOW,
							.rule = "prepared statement"
						};
						known = true;
					}
				if (!known && !client_statement_facts(c, name, &one))
					client_facts_primary(&one, "unknown prepared statement");
				else if (collect_log && client_is_txn_control(one.flags))
					client_txn_log_bound(c, name);
			}
			router_facts_merge(acc, &one);
			any = true;
			break;
		}
		case PqMsg_Sync:
			synced = true;
			break;
		case PqMsg_Query:
		case PqMsg_FunctionCall:
			synced = true; /* a new unit starts there */
			break;
		default:
			break;
		}
		flushed = f.type == PqMsg_Flush;
	}
	/*
	 * A prefix that ends with Flush and nothing behind it: the client waits for its answers
	 * before it sends the rest (asyncpg prepares with Parse, Describe, Flush), so the prefix
	 * decides. The rest then uses what the prefix prepared (doc/routing.md).
	 */
	bool waits = flushed && w.pos == c->conn.rbuf->recv;
	if (!synced && !waits) {
		client_facts_primary(acc, "pipeline not complete in the buffer");
	} else if (!any) {
		/* Describe/Execute/Close of what exists (a portal bound earlier): it stays. */
		acc->route = ROUTE_FOLLOW;
		acc->stay = true;
	}
}

/*
 * At the first message of an extended unit: every named statement its Binds and Describes use is
 * made to exist on the link before the unit starts. Prepared in the middle of the unit instead, a
 * statement would be lost if an earlier message of the unit failed (the server skips to Sync),
 * while units pipelined behind it already count on it.
 */
static enum relay_verdict client_prepare_unit_statements(struct client *c)
{
	struct unit_walk w;
	struct frame f;
	client_unit_walk_start(c, &w, false);
	while (client_unit_next(c, &w, &f)) {
		struct reader r;
		const char *portal, *name;
		uint8_t target;
		reader_init(&r, f.body, f.len);
		if (f.type == PqMsg_Sync || f.type == PqMsg_Query || f.type == PqMsg_Parse)
			break; /* a Parse may redefine what follows: in-unit handling takes over */
		bool uses = (f.type == PqMsg_Bind && reader_cstr(&r, &portal, NULL) &&
			     reader_cstr(&r, &name, NULL)) ||
			    (f.type == PqMsg_Describe && reader_u8(&r, &target) && target == 'S' &&
			     reader_cstr(&r, &name, NULL));
		if (uses && name[0]) {
			enum relay_verdict v = client_use_statement(c, name);
			if (v != RELAY_SEND)
				return v;
		}
	}
	return RELAY_SEND;
}

/* ---- switching ---------------------------------------------------------------------------- */

bool client_use_node(struct client *c, int node)
{
	if (c->server && c->server->node_id == node)
		return c->server->state == SV_ACTIVE;
	/* Transaction pooling: a link left idle outside a transaction goes back to its pool. */
	struct server *old = c->server;
	if (old && c->w->cfg->pool.mode != POOL_MODE_SESSION && !c->pinned &&
	    c->txn_status == TXN_IDLE && old->txn_status == TXN_IDLE && server_at_boundary(old))
		server_client_left(old, false);
	struct server *s = client_link_for(c, node);
	if (s) {
		c->server = s;
		if (!server_sync_params(s, c))
			return false;
		return s->state == SV_ACTIVE;
	}
	if (c->n_links >= CLIENT_MAX_LINKS)
		client_drop_idle_links(c, 1);
	if (c->n_links >= CLIENT_MAX_LINKS) {
		client_disconnect(c, "53000", "too many backend connections in one session");
		return false;
	}
	c->server = NULL; /* the old active link stays linked, silent */
	return client_acquire_server(c, node);
}

/* The primary joins the open transaction: its BEGIN (and savepoints) are replayed, hidden. */
static bool client_join_primary(struct client *c)
{
	const struct client_extras *x = c->ext;
	const char *sql = x && x->txn_log_len ? x->txn_log : "BEGIN";
	size_t len = x && x->txn_log_len ? x->txn_log_len : 5;
	log_debug("client", c->id, "primary joins the transaction: %.*s", (int)len, sql);
	if (!server_inject_query(c->server, sql, len)) {
		client_on_server_lost(c, "08006", "could not send data to server");
		return false;
	}
	/*
	 * The session's settings go after the BEGIN, inside the transaction: a SET made earlier
	 * in it on the standby is then rolled back on the primary too, which reports the old value
	 * to the client as PostgreSQL would. Unreported ones are resent after it (params_unsure).
	 */
	c->defer_param_sync = false;
	struct server *s = c->server;
	if (!server_sync_params(s, c) || c->server != s)
		return false;
	s->params_unsure = true;
	c->route.primary_in_txn = true; /* done once, even if this unit is decided again */
	return true;
}

/* Hidden ROLLBACK on links still inside the transaction that just ended on the active link. */
static void client_end_other_transactions(struct client *c)
{
	for (int i = 0; i < c->n_links; i++) {
		struct server *s = c->links[i];
		if (s == c->server || s->txn_status == TXN_IDLE || s->state != SV_ACTIVE)
			continue;
		if (!server_inject_query(s, "ROLLBACK", 8))
			server_close(s, "could not end its part of a transaction");
	}
}

void client_on_ready(struct client *c, struct server *s)
{
	/* The clock only when read-your-writes may use it: a write's transaction ended. The
	 * health thread's position samples compare with it, so it is read now, not cached. */
	uint64_t ended_ms = s->txn_status == TXN_IDLE && c->route.wrote ? router_now_ms() : 0;
	router_on_ready(&c->w->router, &c->route, s->node_id, s->txn_status, ended_ms);
	uint64_t dur_us = UINT64_MAX, xact_us = UINT64_MAX;
	uint64_t now_us = c->unit_sent_us || c->xact_start_us ? worker_now_us(c->w) : 0;
	if (c->unit_sent_us) {
		dur_us = now_us - c->unit_sent_us;
		c->unit_sent_us = 0;
	}
	bool ended = s->txn_status == TXN_IDLE;
	if (ended && c->xact_start_us) {
		xact_us = now_us - c->xact_start_us;
		c->xact_start_us = 0;
	}
	stats_unit_done(&c->w->stats, &c->pool->stats, ended, dur_us, xact_us);
	if (s->txn_status == TXN_IDLE) {
		client_settings_txn_ended(c);
		client_txn_log_reset(c);
		if (c->n_links > 1)
			client_end_other_transactions(c);
	}
}

/* ---- the decision at each unit's first message ------------------------------------------- */

/*
 * pgpool-II's pool_backend_stats kind of a unit that is not a read: for a classified Query or
 * Parse the classifier's (its parse tree, or the first word of a plain statement); for a text
 * too long to classify the first keyword (a look at a few bytes, once per such unit). Anything
 * else is "other".
 */
static enum worker_cmd_kind client_cmd_kind(const struct frame *f, const struct route_facts *qf)
{
	static const enum worker_cmd_kind of_classified[] = {
		[CLASSIFY_CMD_OTHER] = CMD_OTHER,   [CLASSIFY_CMD_INSERT] = CMD_INSERT,
		[CLASSIFY_CMD_UPDATE] = CMD_UPDATE, [CLASSIFY_CMD_DELETE] = CMD_DELETE,
		[CLASSIFY_CMD_DDL] = CMD_DDL,
	};
	if (qf && qf->cmd != CLASSIFY_CMD_NONE && qf->cmd <= CLASSIFY_CMD_DDL)
		return of_classified[qf->cmd]; /* the classifier's, from the parse tree */
	/* Not classified (a Parse, a Query too long to classify): its first keyword. */
	const uint8_t *p = f->body, *end = f->body + f->body_avail;
	if (f->type == PqMsg_Parse) {
		while (p < end && *p) /* the statement name */
			p++;
		if (p < end)
			p++;
	} else if (f->type != PqMsg_Query) {
		return CMD_OTHER;
	}
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == '('))
		p++;
	/* The first word, lower-cased in one pass over at most 8 bytes. */
	char word[8];
	size_t n = 0;
	while (p + n < end && (unsigned)((p[n] | 0x20) - 'a') < 26) {
		if (n == sizeof(word))
			return CMD_OTHER;
		word[n] = (char)(p[n] | 0x20);
		n++;
	}
	if (p + n >= end || isdigit(p[n]) || p[n] == '_' || p[n] >= 0x80)
		return CMD_OTHER; /* a longer name, or the text ends in the word */
#define CMD_WORD(w, k)                                                                             \
	{                                                                                          \
		w, sizeof(w) - 1, k                                                                \
	}
	static const struct {
		const char *word;
		size_t len;
		enum worker_cmd_kind kind;
	} words[] = { CMD_WORD("insert", CMD_INSERT), CMD_WORD("update", CMD_UPDATE),
		      CMD_WORD("delete", CMD_DELETE), CMD_WORD("create", CMD_DDL),
		      CMD_WORD("alter", CMD_DDL),     CMD_WORD("drop", CMD_DDL),
		      CMD_WORD("truncate", CMD_DDL),  CMD_WORD("comment", CMD_DDL),
		      CMD_WORD("grant", CMD_DDL),     CMD_WORD("revoke", CMD_DDL) };
#undef CMD_WORD
	for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
		if (words[i].len == n && memcmp(word, words[i].word, n) == 0)
			return words[i].kind;
	return CMD_OTHER;
}

static void client_arm_retry(struct client *c, const struct frame *f,
			     const struct route_decision *d);

static bool client_is_extended(uint8_t type)
{
	switch (type) {
	case PqMsg_Parse:
	case PqMsg_Bind:
	case PqMsg_Describe:
	case PqMsg_Execute:
	case PqMsg_Close:
	case PqMsg_Flush:
	case PqMsg_Sync:
		return true;
	default:
		return false;
	}
}

/*
 * Does a message of this type start a new unit (and so get a routing decision)? Without an
 * active link, always: nothing can be open on no link, and a message is never relayed without a
 * decision that gave it one.
 */
static bool client_starts_unit(const struct client *c, uint8_t type)
{
	if (!c->server)
		return true;
	if (type == PqMsg_Query || type == PqMsg_FunctionCall)
		return true;
	if (client_is_extended(type))
		return c->unit == UNIT_NONE;
	return false; /* CopyData/CopyDone/CopyFail of the unit in progress */
}

/* The unit state after message type was sent as part of a unit. */
static void client_note_unit_message(struct client *c, uint8_t type)
{
	if (type == PqMsg_Sync || type == PqMsg_Query || type == PqMsg_FunctionCall)
		c->unit = UNIT_NONE; /* a Query also ends an extended unit left open by Flush */
	else if (client_is_extended(type))
		c->unit = UNIT_EXTENDED;
}

/* The next unit waits until the active link has answered everything (server.c kicks it). */
static enum relay_verdict client_hold_for_boundary(struct client *c)
{
	return client_set_hold(c, HOLD_BOUNDARY) ? RELAY_STOP : RELAY_GONE;
}

/* qf: the facts of f when it is a Query. */
static void client_decide(struct client *c, const struct frame *f, const struct route_facts *qf,
			  struct route_decision *d)
{
	struct route_facts facts;
	if (f->type == PqMsg_Query)
		facts = *qf;
	else if (f->type == PqMsg_FunctionCall)
		client_facts_primary(&facts, "function call");
	else if (f->type == PqMsg_Sync || f->type == PqMsg_Flush)
		facts = (struct route_facts){ .route = ROUTE_FOLLOW, .rule = "sync" };
	else if (f->type == PqMsg_Parse || f->type == PqMsg_Bind || f->type == PqMsg_Describe ||
		 f->type == PqMsg_Execute || f->type == PqMsg_Close)
		client_facts_of_unit(c, &facts, false);
	else
		client_facts_primary(&facts, "other message");
	int current = c->server ? c->server->node_id : -1;
	router_decide(&c->w->router, &c->route, &facts, current, d);
}

/*
 * The unit decided as d is being sent. Inside a transaction that the primary has not joined,
 * its BEGIN, savepoints and SET LOCAL are kept for the replay there.
 */
static void client_log_txn_control(struct client *c, const struct frame *f,
				   const struct route_decision *d)
{
	if (d->starts_txn)
		client_txn_log_reset(c);
	if (d->node == router_primary(&c->w->router) || c->route.primary_in_txn ||
	    (!c->route.in_txn && !d->starts_txn))
		return;
	if (f->type == PqMsg_Query) {
		struct route_facts facts;
		size_t len = cstr_len((const char *)f->body, f->body_avail);
		if (len == f->body_avail)
			return;
		router_classify_in(&c->w->router, c->route.db, (const char *)f->body, len, &facts);
		if (client_is_txn_control(facts.flags))
			client_txn_log_add(c, (const char *)f->body, len);
	} else if (f->type != PqMsg_FunctionCall) {
		struct route_facts facts;
		client_facts_of_unit(c, &facts, true);
	}
}

bool client_route_is_fixed(const struct client *c)
{
	if (c->w->n_nodes == 1)
		return true;
	enum route_force force = c->route.forced != ROUTE_FORCE_AUTO
					 ? (enum route_force)c->route.forced
					 : (enum route_force)c->route.listener;
	return force != ROUTE_FORCE_AUTO || !c->w->cfg->load_balance.enabled;
}

/* A unit may start on the active link now: nothing of an earlier unit is in flight. */
static bool client_at_boundary(const struct client *c)
{
	return !c->server || (c->server->state == SV_ACTIVE && server_at_boundary(c->server));
}

/* Records the route of a Parse so that later Binds of the statement know where they may go. */
void client_route_note_parse(struct client *c, const struct frame *f)
{
	const char *name;
	struct route_facts one;
	if (client_classify_parse(c, f, &name, &one))
		client_note_statement_route(c, name, &one);
}

/* Everything read before the message being decided has gone to a backend or was answered. */
static bool client_nothing_unsent(const struct client *c)
{
	const struct iobuf *b = c->conn.rbuf;
	return b && b->done == b->parsed && !conn_forward_busy(&c->conn);
}

/*
 * A unit's first message without a link (every unit in transaction pooling): the link the
 * pending decision asks for is taken at once and the message goes on to it, read once. When
 * the link must be waited for, the message is presented again with the decision kept.
 */
static enum relay_verdict client_take_link_now(struct client *c)
{
	if (!client_use_node(c, c->pending.node))
		return c->state == CL_CLOSING ? RELAY_GONE : RELAY_STOP;
	c->route_pending = false;
	return RELAY_SEND;
}

enum relay_verdict client_route_message(struct client *c, const struct frame *f)
{
	if (!c->server)
		c->unit = UNIT_NONE;
	if (!client_starts_unit(c, f->type)) {
		client_note_unit_message(c, f->type);
		return RELAY_SEND;
	}
	/* A Query that may be retried elsewhere is answered before the next unit goes anywhere. */
	if (c->retry == RETRY_ARMED && c->server && c->server->retry_watch)
		return client_hold_for_boundary(c);
	if (c->retry == RETRY_ARMED)
		c->retry = RETRY_NONE; /* its link went away or answered: nothing to watch */
	/* The one classification of a Query or Parse text: admin, routing, statistics and tracking
	 * use it (the tracking through the worker's memo, client_classify_text). */
	struct route_facts qf;
	const char *name;
	if (f->type == PqMsg_Query)
		client_classify_query(c, f, &qf);
	else if (f->type == PqMsg_Parse && !client_classify_parse(c, f, &name, &qf))
		client_facts_primary(&qf, "malformed Parse");
	/* An admin statement over the extended protocol: Parse'd in this unit, or Bind of one
	 * prepared earlier (marked, client_local.c). */
	const char *admin_sql;
	if (((f->type == PqMsg_Parse && (qf.flags & CLASSIFY_ADMIN)) ||
	     (f->type == PqMsg_Bind && c->ext && c->ext->admin_stmts)) &&
	    client_unit_is_admin(c, &admin_sql)) {
		if (!client_at_boundary(c))
			return client_hold_for_boundary(c);
		/* client_relay answers the whole unit */
		return client_set_hold(c, HOLD_ADMIN_UNIT) ? RELAY_STOP : RELAY_GONE;
	}
	if (f->type == PqMsg_Query && f->body_avail == f->len && (qf.flags & CLASSIFY_ADMIN)) {
		if (!client_at_boundary(c))
			return client_hold_for_boundary(c);
		if (client_answer_admin(c, (const char *)f->body, f->body_avail))
			return c->state == CL_ACTIVE ? RELAY_SKIP : RELAY_GONE;
	}
	/* A decision survives only a switch it asked for, never a wait for a boundary. */
	struct route_decision d;
	if (c->route_pending) {
		d = c->pending;
	} else if (c->w->n_nodes == 1) {
		/* One node: nothing to split, no statement to classify. */
		memset(&d, 0, sizeof(d));
		d.node = router_node_usable(&c->w->router, 0) ? 0 : ROUTER_NO_NODE;
		d.txn_node = -1;
		d.why = "single node";
	} else if (client_route_is_fixed(c)) {
		/* Splitting off, or a role-pinned session: every unit goes to the same role. */
		static const struct route_facts none = { .route = ROUTE_FOLLOW,
							 .rule = "fixed route" };
		int current = c->server ? c->server->node_id : -1;
		router_decide(&c->w->router, &c->route, &none, current, &d);
	} else {
		client_decide(c, f, &qf, &d);
	}
	c->route_pending = false;
	/* Settings are synced at link time, unless this very decision joins the primary. */
	c->defer_param_sync = c->defer_param_sync && d.join_primary;
	if (d.node == ROUTER_NO_NODE) {
		if (!client_at_boundary(c))
			return client_hold_for_boundary(c);
		bool standby = c->route.listener == ROUTE_FORCE_STANDBY ||
			       c->route.forced == ROUTE_FORCE_STANDBY;
		/* Fenced by the watchdog (doc/watchdog.md): no writes until etcd is back. */
		if (c->w->router.view.fenced && !standby) {
			client_disconnect(
				c, "25006",
				"pgrelay watchdog: this instance lost etcd and is fenced; "
				"writes are refused until it reaches etcd again");
			return RELAY_GONE;
		}
		/* During a failover the new primary is minutes at most away: wait for it. Else
		 * there is nothing to wait for: say so at once. */
		if (!c->w->router.view.failing_over || standby) {
			client_disconnect(c, "08006", "no %s node is available",
					  standby ? "standby" : "primary");
			return RELAY_GONE;
		}
		client_wait_for_node(c, -1);
		return RELAY_STOP;
	}
	if (!c->server || c->server->node_id != d.node) {
		/*
		 * A unit left open by Flush (asyncpg prepares with Parse, Describe, Flush, and may
		 * then send a COPY Query) never reaches a boundary by itself: a hidden Sync closes
		 * it there. Named statements it prepared stay and are re-prepared where used.
		 */
		if (c->unit == UNIT_EXTENDED && c->server && c->server->state == SV_ACTIVE) {
			if (!server_inject_sync(c->server)) {
				client_on_server_lost(c, "08006", "could not send data to server");
				return RELAY_GONE;
			}
			c->unit = UNIT_NONE;
		}
		if (!client_at_boundary(c))
			return client_hold_for_boundary(c);
		c->pending = d;
		c->route_pending = true;
		c->defer_param_sync = d.join_primary;
		if (c->server || !client_nothing_unsent(c)) {
			/* client_relay switches and presents this message again. */
			return client_set_hold(c, HOLD_SWITCH) ? RELAY_STOP : RELAY_GONE;
		}
		enum relay_verdict v = client_take_link_now(c);
		if (v != RELAY_SEND)
			return v;
	}
	if (c->ext)
		c->ext->node_wait_since_ms = 0;
	if (d.join_primary && !client_join_primary(c))
		return RELAY_GONE;
	/* A unit that starts with Parse prepares as it goes (the walk would stop at once). */
	if (f->type != PqMsg_Query && f->type != PqMsg_FunctionCall && f->type != PqMsg_Sync &&
	    f->type != PqMsg_Parse && client_tracks_statements(c)) {
		enum relay_verdict v = client_prepare_unit_statements(c);
		if (v != RELAY_SEND) {
			/* Asked again once the forward finished; decided again then. */
			return v;
		}
	}
	client_log_txn_control(c, f, &d);
	router_commit(&c->w->router, &c->route, &d);
	if (!d.read && d.node >= 0 && d.node < CONFIG_MAX_BACKENDS)
		c->w->cmd_cnt[d.node][client_cmd_kind(
			f, f->type == PqMsg_Query || f->type == PqMsg_Parse ? &qf : NULL)]++;
	if (!c->unit_sent_us)
		c->unit_sent_us = worker_now_us(c->w);
	if (!c->xact_start_us)
		c->xact_start_us = c->unit_sent_us;
	client_arm_retry(c, f, &d);
	log_noise("client", c->id, "unit '%c' -> backend %d (%s)", f->type, d.node,
		  d.why ? d.why : "");
	client_note_unit_message(c, f->type);
	return RELAY_SEND;
}

/*
 * A read unit (a Query, or an extended unit up to its Sync) sent to a standby outside a
 * transaction, alone in the buffer and short: its messages are kept until the first message of
 * its answer, in case the standby refuses it (25006). The copy is bounded (CLIENT_RETRY_MAX) and
 * its buffer kept per client, sized to the longest unit kept (client_buf_reserve: most reads
 * are well under 1 KB); nothing is kept for units that go to the primary.
 */
static void client_arm_retry(struct client *c, const struct frame *f,
			     const struct route_decision *d)
{
	const struct iobuf *b = c->conn.rbuf;
	if (!d->read || d->node == router_primary(&c->w->router) || c->route.in_txn ||
	    c->txn_status != TXN_IDLE ||
	    (f->type != PqMsg_Query && f->type != PqMsg_Parse && f->type != PqMsg_Bind))
		return;
	struct unit_walk w;
	struct frame g;
	bool whole = false;
	client_unit_walk_start(c, &w, false);
	while (!whole && client_unit_next(c, &w, &g))
		whole = g.type == PqMsg_Query || g.type == PqMsg_Sync;
	uint32_t end = w.pos;
	if (!whole || end != b->recv || end - b->parsed > CLIENT_RETRY_MAX)
		return; /* more behind it (a pipeline: not held up), or too long */
	struct client_extras *x = client_extras(c);
	if (!x ||
	    !client_buf_reserve(&x->retry_msg, &x->retry_cap, end - b->parsed, CLIENT_RETRY_MAX))
		return; /* no retry; the unit still runs */
	memcpy(x->retry_msg, b->data + b->parsed, end - b->parsed);
	x->retry_len = end - b->parsed;
	c->retry = RETRY_ARMED;
	c->server->retry_watch = true;
	c->server->retry_swallow = false;
}

/* Each statement of the kept unit goes to the primary from now on (its text and its name). */
static void client_remember_refused(struct client *c)
{
	const struct client_extras *x = c->ext; /* made when the retry was armed */
	for (uint32_t pos = 0; pos + FRAME_HEADER_LEN <= x->retry_len;) {
		struct frame f;
		if (frame_parse((const uint8_t *)x->retry_msg + pos, x->retry_len - pos,
				FRAME_FROM_CLIENT, CLIENT_RETRY_MAX, &f) != FRAME_OK)
			return;
		struct reader r;
		const char *name = "", *portal, *sql = NULL;
		size_t len = 0;
		reader_init(&r, f.body, f.len);
		bool text = false;
		if (f.type == PqMsg_Query)
			text = reader_cstr(&r, &sql, &len);
		else if (f.type == PqMsg_Parse && reader_cstr(&r, &name, NULL))
			text = reader_cstr(&r, &sql, &len);
		else if (f.type == PqMsg_Bind && reader_cstr(&r, &portal, NULL) &&
			 !reader_cstr(&r, &name, NULL))
			name = "";
		if (text)
			router_remember_primary(&c->w->router, c->route.db, sql, len);
		if (f.type == PqMsg_Parse || f.type == PqMsg_Bind) {
			struct route_facts primary = { .route = ROUTE_PRIMARY,
						       .rule = "refused by a standby" };
			client_note_statement_route(c, name, &primary);
		}
		pos += f.total;
	}
}

/* Sends the kept unit to the primary link (active, idle): its answers reach the client. */
static void client_send_retry(struct client *c)
{
	struct server *s = c->server;
	const struct client_extras *x = c->ext; /* made when the retry was armed */
	bool ok = true;
	c->retry = RETRY_NONE;
	for (uint32_t pos = 0; ok && pos + FRAME_HEADER_LEN <= x->retry_len;) {
		struct frame f;
		if (frame_parse((const uint8_t *)x->retry_msg + pos, x->retry_len - pos,
				FRAME_FROM_CLIENT, CLIENT_RETRY_MAX, &f) != FRAME_OK)
			break;
		uint8_t target = f.type == PqMsg_Describe && f.len ? f.body[0] : 'P';
		int kind = req_kind_for_frontend(f.type, target);
		ok = kind < 0 || req_push(&s->reqs, (enum req_kind)kind, false);
		pos += f.total;
	}
	/* Its named Parse re-creates statements there: pgrelay no longer knows what s holds. */
	stmt_map_clear(&s->stmts);
	s->stmts_unsure = true;
	s->ready = false;
	if (!ok || conn_send(&s->conn, x->retry_msg, x->retry_len) != 0)
		client_on_server_lost(c, "08006", "could not send data to server");
}

void client_retry_on_primary(struct client *c)
{
	client_remember_refused(c);
	c->retry = RETRY_SEND;
	client_kick(c);
}

/* client_relay, first: a refused Query goes to the primary before anything else. True if the
 * relay may go on (nothing to retry, or it was sent). */
bool client_relay_retry(struct client *c)
{
	if (c->retry != RETRY_SEND)
		return true;
	int primary = router_primary(&c->w->router);
	if (primary < 0) {
		client_disconnect(c, "08006",
				  "no primary to run a statement a standby refused as a write");
		return false;
	}
	if (!c->server || c->server->node_id != primary) {
		if (!client_use_node(c, primary))
			return false; /* waiting for a connection: the relay comes back here */
	}
	if (c->server->state != SV_ACTIVE)
		return false; /* logging in: client_on_server_ready comes back here */
	if (!server_at_boundary(c->server)) {
		if (client_set_hold(c, HOLD_BOUNDARY)) /* server.c kicks it at the boundary */
			return false;
		return false;
	}
	log_debug("client", c->id, "running a unit the standby refused again on the primary");
	client_send_retry(c);
	return c->state == CL_ACTIVE;
}

/* After a pending switch: gets the link. True if the relay may go on now. */
bool client_apply_switch(struct client *c)
{
	if (!client_set_hold(c, HOLD_NONE))
		return false;
	int node = c->pending.node;
	if (!router_node_usable(&c->w->router, node)) {
		/* The node went away since the decision: decide again. */
		c->route_pending = false;
		return c->server == NULL || c->server->state == SV_ACTIVE;
	}
	if (!client_use_node(c, node)) {
		return false;
	}
	return c->server && c->server->state == SV_ACTIVE;
}

void client_view_changed(struct client *c)
{
	if (c->state == CL_WAITING && c->want_node < 0) {
		client_set_state(c, CL_ACTIVE);
		conn_want_read(&c->conn, true);
		client_kick(c);
	}
}
