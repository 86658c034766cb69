/*
 * What pgrelay answers itself, without a backend, and the one look-ahead over a unit.
 *
 *  - The unit walk (client_unit_next): the messages from the scan cursor up to the unit's Sync,
 *    never past ROUTE_LOOKAHEAD_MAX of them nor past the bytes received. Every look-ahead of the
 *    session layer (routing a unit, preparing its statements, keeping a copy for a retry, the
 *    local answers below) walks a unit this way.
 *  - The local answer (client_answer_unit): walks the unit at the cursor, lets a per-message
 *    answerer build what PostgreSQL would reply, skips to the Sync after an error as PostgreSQL
 *    does, ends with ReadyForQuery, consumes the unit (iobuf_consume: only src/net/ moves the
 *    buffer's cursors) and sends the reply in one write.
 *  - Its two answerers: a transaction-mode client with no backend preparing or closing statements
 *    (pgbench's PQprepare must not wait for a backend), and an admin statement sent over the
 *    extended protocol (SHOW pool_nodes from a driver that prepares everything).
 *  - Admin statements over the simple protocol (client_answer_admin).
 *
 * Which statements are admin statements is the classifier's fact (CLASSIFY_ADMIN): no text is
 * matched here.
 */
#include <stdlib.h>
#include <string.h>

#include "admin/admin.h"
#include "admin/console.h"
#include "pool/client.h"
#include "pool/server.h"
#include "pool/worker.h"
#include "protocol/builder.h"
#include "protocol/pqmsg.h"
#include "protocol/reader.h"

#define ROUTE_ADMIN_MARK 0xff /* stmt->route of a statement that is an admin command */

/* ---- the unit walk ---------------------------------------------------------------------- */

void client_unit_walk_start(const struct client *c, struct unit_walk *w, bool partial_ok)
{
	w->pos = c->conn.rbuf->parsed;
	w->n = 0;
	w->partial_ok = partial_ok;
	w->ended = false;
}

bool client_unit_next(const struct client *c, struct unit_walk *w, struct frame *f)
{
	const struct iobuf *b = c->conn.rbuf;
	if (w->ended || w->n >= ROUTE_LOOKAHEAD_MAX || w->pos > b->recv)
		return false;
	if (frame_parse(b->data + w->pos, b->recv - w->pos, FRAME_FROM_CLIENT,
			c->w->cfg->max_message_size, f) != FRAME_OK)
		return false;
	bool whole = f->body_avail == f->len;
	if (!whole && !w->partial_ok)
		return false;
	w->n++;
	w->pos += f->total;
	/* Nothing after a message that has not all arrived is in the buffer yet. */
	w->ended = f->type == PqMsg_Sync || !whole;
	return true;
}

/* ---- the local answer ------------------------------------------------------------------- */

/*
 * Adds to out the answer to message f (raw: its bytes, header included). Sets *failed after
 * an error (the rest of the unit up to Sync is then skipped); false if c was closed.
 */
typedef bool (*local_answer_fn)(struct client *c, const struct frame *f, const uint8_t *raw,
				struct builder *out, bool *failed, void *ctx);

static void client_answer_unit(struct client *c, local_answer_fn answer, void *ctx)
{
	struct iobuf *b = c->conn.rbuf;
	struct builder out;
	uint8_t store[2048];
	builder_init(&out, store, sizeof(store));
	bool failed = false, synced = false;
	while (!synced) {
		struct frame f;
		if (!client_whole_frame_at(c, b->parsed, &f))
			break;
		if (f.type == PqMsg_Sync) {
			builder_ready(&out, c->txn_status);
			synced = true;
		} else if (!failed && !answer(c, &f, b->data + b->parsed, &out, &failed, ctx)) {
			builder_free(&out);
			return;
		}
		iobuf_consume(b, f.total);
	}
	if (!builder_ok(&out)) {
		builder_free(&out);
		client_disconnect(c, "53200", "out of memory answering locally");
		return;
	}
	bool ok = client_send(c, out.data, out.len); /* on failure c is closing */
	builder_free(&out);
	if (ok)
		conn_settle(&c->conn);
}

/* ---- statements prepared and closed without a backend ---------------------------------- */

static bool client_answer_statement(struct client *c, const struct frame *f, const uint8_t *raw,
				    struct builder *out, bool *failed, void *ctx)
{
	(void)ctx;
	struct reader r;
	const char *name;
	uint8_t target;
	reader_init(&r, f->body, f->len);
	if (f->type == PqMsg_Parse && reader_cstr(&r, &name, NULL)) {
		if (stmt_map_find(&c->stmts, name)) {
			char msg[160];
			snprintf(msg, sizeof(msg), "prepared statement \"%.63s\" already exists",
				 name);
			builder_error(out, "ERROR", "42P05", msg);
			*failed = true;
			return true;
		}
		uint64_t h = stmt_hash(r.p, f->len - (size_t)(r.p - f->body));
		if (c->stmts.count >= STMT_CLIENT_MAX ||
		    !stmt_map_put(&c->stmts, name, h, raw, f->total, 0)) {
			client_disconnect(c, "53200", "too many prepared statements");
			return false;
		}
		client_route_note_parse(c, f);
		builder_start(out, PqMsg_ParseComplete);
		builder_finish(out);
	} else if (f->type == PqMsg_Close && reader_u8(&r, &target) &&
		   reader_cstr(&r, &name, NULL)) {
		stmt_map_remove(&c->stmts, name);
		builder_start(out, PqMsg_CloseComplete);
		builder_finish(out);
	}
	return true;
}

/* Is the unit at the cursor only named Parses without session effects, Close of statements and
 * Flush, up to a Sync that is in the buffer? */
static bool client_unit_prepares_only(struct client *c)
{
	/* Most units start with what cannot be answered here (an unnamed Parse, a Bind, a
	 * Query): told by their first bytes, before any walk. */
	const struct iobuf *b = c->conn.rbuf;
	if (b->recv - b->parsed <= FRAME_HEADER_LEN)
		return false;
	const uint8_t *at = b->data + b->parsed;
	if (!(at[0] == PqMsg_Parse && at[FRAME_HEADER_LEN] != 0) && at[0] != PqMsg_Close &&
	    at[0] != PqMsg_Flush)
		return false;
	struct unit_walk w;
	struct frame f;
	client_unit_walk_start(c, &w, false);
	while (client_unit_next(c, &w, &f)) {
		struct reader r;
		const char *name, *query;
		size_t qlen;
		uint8_t target;
		reader_init(&r, f.body, f.len);
		switch (f.type) {
		case PqMsg_Parse: {
			if (f.len > STMT_PARSE_MAX || !msg_body_is_parse(f.body, f.len) ||
			    !reader_cstr(&r, &name, NULL) || !name[0] ||
			    !reader_cstr(&r, &query, &qlen) ||
			    !stmt_map_has_room(&c->stmts, name, f.total))
				return false;
			/* A statement with session effects is prepared for real, where it runs. */
			struct route_facts facts;
			client_classify_text(c, query, qlen + 1, true, &facts);
			if (facts.flags & (CLASSIFY_EFFECT_MASK | CLASSIFY_SESSION_RESET))
				return false;
			break;
		}
		case PqMsg_Close:
			if (!reader_u8(&r, &target) || target != 'S')
				return false;
			break;
		case PqMsg_Flush:
			break;
		case PqMsg_Sync:
			return true;
		default:
			return false;
		}
	}
	return false;
}

/*
 * Transaction mode, no backend held: a pipeline of only named Parse, Close of statements and Flush
 * up to its Sync is answered by pgrelay itself. The statements are remembered and prepared on a
 * backend when first used (server_ensure_statement). Without this a client blocked in a
 * synchronous prepare (pgbench's PQprepare) could wait for a connection held by another client of
 * the same blocked thread, forever. Errors in the text then surface at first use.
 */
bool client_answer_locally(struct client *c)
{
	if (!client_unit_prepares_only(c))
		return false;
	client_answer_unit(c, client_answer_statement, NULL);
	return true;
}

/* ---- admin statements ------------------------------------------------------------------- */

/* SET / RESET pgrelay.route: answered by pgrelay. True if sql was one (answered or failed). */
static bool client_route_set(struct client *c, const char *sql, size_t len, struct builder *out)
{
	enum route_force force;
	int kind = admin_match_route_setting(sql, len, &force);
	if (kind == 0)
		return false;
	if (kind < 0) {
		builder_error(out, "ERROR", "22023",
			      "invalid value for parameter \"pgrelay.route\": expected primary, "
			      "standby or auto");
	} else {
		c->route.forced = (uint8_t)force;
		c->route.read_node = force == ROUTE_FORCE_STANDBY ? -1 : c->route.read_node;
		builder_command_complete(out, kind == 2 ? "RESET" : "SET");
	}
	builder_ready(out, c->txn_status);
	return true;
}

/* The answer to admin statement sql (with its ReadyForQuery) in out; false if it is not one. */
static bool client_admin_reply(struct client *c, const char *sql, size_t len, struct builder *out)
{
	return client_route_set(c, sql, len, out) || admin_answer(c, sql, len, out);
}

bool client_answer_admin(struct client *c, const char *sql, size_t len)
{
	struct builder out;
	uint8_t store[2048];
	builder_init(&out, store, sizeof(store));
	if (!client_admin_reply(c, sql, len, &out)) {
		builder_free(&out);
		return false;
	}
	if (!builder_ok(&out)) {
		builder_free(&out);
		client_disconnect(c, "53200", "out of memory answering an admin command");
		return true;
	}
	bool sent = client_send(c, out.data, out.len); /* on failure c is closing */
	builder_free(&out);
	(void)sent;
	return true;
}

/* The text of a Parse body if the classifier says it is an admin statement, or NULL. */
static const char *client_admin_in_parse(struct client *c, const uint8_t *body, uint32_t len)
{
	struct reader r;
	const char *name, *query;
	size_t qlen;
	reader_init(&r, body, len);
	if (!reader_cstr(&r, &name, NULL) || !reader_cstr(&r, &query, &qlen))
		return NULL;
	struct route_facts facts;
	client_classify_text(c, query, qlen + 1, true, &facts);
	return facts.flags & CLASSIFY_ADMIN ? query : NULL;
}

/* The admin text of a statement Parse'd earlier and marked, or NULL. */
static const char *client_admin_statement(struct client *c, const char *name)
{
	const struct stmt *st = name[0] ? stmt_map_find(&c->stmts, name) : NULL;
	if (!st || st->route != ROUTE_ADMIN_MARK || !st->msg || st->msg_len <= FRAME_HEADER_LEN)
		return NULL;
	return client_admin_in_parse(c, st->msg + FRAME_HEADER_LEN, st->msg_len - FRAME_HEADER_LEN);
}

bool client_unit_is_admin(struct client *c, const char **sql)
{
	struct unit_walk w;
	struct frame f;
	*sql = NULL;
	client_unit_walk_start(c, &w, false);
	while (client_unit_next(c, &w, &f)) {
		struct reader r;
		const char *name, *portal, *text;
		reader_init(&r, f.body, f.len);
		switch (f.type) {
		case PqMsg_Parse:
			text = client_admin_in_parse(c, f.body, f.len);
			if (!text || *sql)
				return false;
			*sql = text;
			break;
		case PqMsg_Bind:
			if (!reader_cstr(&r, &portal, NULL) || !reader_cstr(&r, &name, NULL))
				return false;
			if (!*sql && !(*sql = client_admin_statement(c, name)))
				return false;
			break;
		case PqMsg_Describe:
		case PqMsg_Execute:
		case PqMsg_Close:
		case PqMsg_Flush:
			break;
		case PqMsg_Sync:
			return *sql != NULL;
		default:
			return false;
		}
	}
	return false;
}

/* Appends the messages of src of type t (first match) or of all types but t when !match. */
static void client_copy_messages(struct builder *out, const struct builder *src, uint8_t t,
				 bool match)
{
	for (size_t i = 0; i + FRAME_HEADER_LEN <= src->len;) {
		uint32_t len = ((uint32_t)src->data[i + 1] << 24) |
			       ((uint32_t)src->data[i + 2] << 16) |
			       ((uint32_t)src->data[i + 3] << 8) | src->data[i + 4];
		uint8_t type = src->data[i];
		if (type != PqMsg_ReadyForQuery && (type == t) == match)
			builder_put_bytes(out, src->data + i, 1 + (size_t)len);
		i += 1 + (size_t)len;
	}
}

/*
 * One admin statement's messages, answered as PostgreSQL would: ParseComplete, BindComplete, the
 * row description for Describe, rows and the command tag for Execute, CloseComplete. res holds
 * the statement's answer as over the simple protocol; an error there is the unit's first answer.
 */
static bool client_answer_admin_message(struct client *c, const struct frame *f, const uint8_t *raw,
					struct builder *out, bool *failed, void *ctx)
{
	const struct builder *res = ctx;
	struct reader r;
	const char *name;
	uint8_t target = 0;
	if (res->len > 0 && res->data[0] == PqMsg_ErrorResponse) {
		client_copy_messages(out, res, PqMsg_ErrorResponse, true);
		*failed = true;
		return true;
	}
	reader_init(&r, f->body, f->len);
	switch (f->type) {
	case PqMsg_Parse:
		if (reader_cstr(&r, &name, NULL) && name[0] &&
		    (client_tracks_statements(c) || c->kind != CK_SESSION) &&
		    stmt_map_has_room(&c->stmts, name, f->total) &&
		    stmt_map_put(&c->stmts, name, 0, raw, f->total, 0)) {
			/* Out of memory, it is not marked: the backend then refuses it. */
			struct stmt *st = stmt_map_find(&c->stmts, name);
			struct client_extras *x = client_extras(c);
			if (x) {
				st->route = ROUTE_ADMIN_MARK;
				x->admin_stmts = true;
			}
		}
		builder_start(out, PqMsg_ParseComplete);
		builder_finish(out);
		break;
	case PqMsg_Bind:
		builder_start(out, PqMsg_BindComplete);
		builder_finish(out);
		break;
	case PqMsg_Describe:
		if (reader_u8(&r, &target)) {
			if (target == 'S') {
				builder_start(out, PqMsg_ParameterDescription);
				builder_put_u16(out, 0);
				builder_finish(out);
			}
			size_t before = out->len;
			client_copy_messages(out, res, PqMsg_RowDescription, true);
			if (out->len == before) { /* a command without rows */
				builder_start(out, PqMsg_NoData);
				builder_finish(out);
			}
		}
		break;
	case PqMsg_Execute:
		client_copy_messages(out, res, PqMsg_RowDescription, false);
		break;
	case PqMsg_Close:
		if (reader_u8(&r, &target) && target == 'S' && reader_cstr(&r, &name, NULL))
			stmt_map_remove(&c->stmts, name);
		builder_start(out, PqMsg_CloseComplete);
		builder_finish(out);
		break;
	default:
		break;
	}
	return true;
}

bool client_apply_admin_unit(struct client *c)
{
	if (!client_set_hold(c, HOLD_NONE))
		return false;
	const char *sql;
	if (!client_unit_is_admin(c, &sql))
		return true;
	struct builder res;
	uint8_t store[2048];
	builder_init(&res, store, sizeof(store));
	/* The text lives in the read buffer, which the answer consumes: answer from a copy. */
	char *text = strdup(sql);
	if (!text || !client_admin_reply(c, text, strlen(text), &res))
		builder_error(&res, "ERROR", "42601", "not an admin statement");
	free(text);
	client_answer_unit(c, client_answer_admin_message, &res);
	builder_free(&res);
	return c->state == CL_ACTIVE;
}

/* ---- the pgbouncer console (admin/console.h) --------------------------------------------- */

#define CONSOLE_MSG_MAX	    (CONSOLE_QUERY_MAX + 1024) /* largest message a console accepts */
#define CONSOLE_ROUND_UNITS 64 /* units answered per read event (then the loop goes on) */

/*
 * The command text of the extended unit at the cursor: its Parse's, or that of the statement its
 * Bind names (kept by client_answer_admin_message). *complete once its Sync is here; *executes
 * if it has an Execute.
 */
static const char *client_console_unit_text(struct client *c, bool *complete, bool *executes)
{
	struct unit_walk w;
	struct frame f;
	const char *text = NULL;
	*complete = *executes = false;
	client_unit_walk_start(c, &w, false);
	while (client_unit_next(c, &w, &f)) {
		struct reader r;
		const char *name, *portal, *query;
		reader_init(&r, f.body, f.len);
		if (f.type == PqMsg_Parse && !text && reader_cstr(&r, &name, NULL) &&
		    reader_cstr(&r, &query, NULL))
			text = query;
		if (f.type == PqMsg_Bind && !text && reader_cstr(&r, &portal, NULL) &&
		    reader_cstr(&r, &name, NULL)) {
			const struct stmt *st = name[0] ? stmt_map_find(&c->stmts, name) : NULL;
			struct reader pr;
			if (st && st->route == ROUTE_ADMIN_MARK && st->msg &&
			    st->msg_len > FRAME_HEADER_LEN) {
				reader_init(&pr, st->msg + FRAME_HEADER_LEN,
					    st->msg_len - FRAME_HEADER_LEN);
				if (reader_cstr(&pr, &name, NULL) && reader_cstr(&pr, &query, NULL))
					text = query;
			}
		}
		if (f.type == PqMsg_Execute)
			*executes = true;
		if (f.type == PqMsg_Sync) {
			*complete = true;
			return text;
		}
	}
	return NULL;
}

/*
 * Answers one extended-protocol unit of a console; false if it is not all here yet. A unit that
 * only prepares or describes a command runs it only if it is a SHOW (its rows describe it); other
 * commands run when executed.
 */
static bool client_console_unit(struct client *c)
{
	bool complete, executes;
	const char *sql = client_console_unit_text(c, &complete, &executes);
	if (!complete)
		return false;
	struct builder res;
	uint8_t store[2048];
	builder_init(&res, store, sizeof(store));
	char *text = sql ? strdup(sql) : NULL;
	if (text && (executes || console_is_show(text, strlen(text))))
		console_answer(c, text, strlen(text), &res, false);
	else if (text)
		builder_ready(&res, TXN_IDLE);
	else if (sql)
		builder_error(&res, "ERROR", "53200", "out of memory");
	else
		builder_error(&res, "ERROR", "08P01", "the console needs a statement to execute");
	free(text);
	client_answer_unit(c, client_answer_admin_message, &res);
	builder_free(&res);
	return true;
}

void client_console_relay(struct client *c)
{
	for (int round = 0; round < CONSOLE_ROUND_UNITS; round++) {
		struct iobuf *b = c->conn.rbuf;
		if (c->state != CL_ACTIVE || c->console_wait != CW_NONE || !b || iobuf_empty(b))
			return;
		struct frame f;
		enum frame_status st = frame_parse(b->data + b->parsed, b->recv - b->parsed,
						   FRAME_FROM_CLIENT, CONSOLE_MSG_MAX, &f);
		if (st == FRAME_NEED_MORE)
			return;
		if (st != FRAME_OK) {
			client_disconnect(c, "08P01", "invalid message for the admin console");
			return;
		}
		switch (f.type) {
		case PqMsg_Terminate:
			client_disconnect(c, NULL, "client sent Terminate");
			return;
		case PqMsg_Query: {
			if (f.body_avail != f.len)
				return;
			if (!msg_body_is_cstr(f.body, f.len)) {
				client_disconnect(c, "08P01", "invalid message format");
				return;
			}
			struct builder out;
			uint8_t store[2048];
			builder_init(&out, store, sizeof(store));
			console_answer(c, (const char *)f.body, f.len, &out, true);
			iobuf_consume(b, f.total);
			bool ok = builder_ok(&out);
			if (ok && out.len)
				ok = client_send(c, out.data, out.len);
			else if (!ok)
				client_disconnect(c, "53200",
						  "out of memory answering the console");
			builder_free(&out);
			if (!ok)
				return;
			conn_settle(&c->conn);
			break;
		}
		case PqMsg_Parse:
		case PqMsg_Bind:
		case PqMsg_Describe:
		case PqMsg_Execute:
		case PqMsg_Close:
		case PqMsg_Flush:
		case PqMsg_Sync:
			if (!client_console_unit(c))
				return;
			break;
		default:
			client_disconnect(c, "08P01",
					  "unsupported packet type for admin console: %c", f.type);
			return;
		}
		if (c->state == CL_ACTIVE && c->w->shutdown != WS_RUNNING) {
			/* SHUTDOWN: this console is answered; it does not hold the shutdown up. */
			client_disconnect(c, NULL, "pgrelay is shutting down");
			return;
		}
	}
	/* More units are waiting: go on in a later loop turn (the read callback comes again). */
}
