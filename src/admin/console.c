/*
 * The PgBouncer-compatible console; see console.h and doc/admin.md. This half parses commands,
 * runs those that act and logs consoles in; the SHOW commands are in console_show.c. Every answer
 * is built whole with builder.h and sent in one write. Commands that change pools act at once;
 * PAUSE and WAIT_CLOSE answer when their condition holds, polled by the janitor and bounded by
 * shutdown_timeout.
 */
#include "admin/console.h"
#include "admin/console_int.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <uv.h>

#include "conf/config.h"
#include "pool/cancel.h"
#include "pool/client.h"
#include "pool/pool.h"
#include "pool/server.h"
#include "pool/worker.h"
#include "protocol/pqmsg.h"
#include "util/log.h"
#include "protocol/reader.h"

#define CONSOLE_WORD_MAX 32

/* ---- answers ------------------------------------------------------------------------------ */

void console_done(struct builder *out, const char *tag)
{
	builder_command_complete(out, tag);
	builder_ready(out, TXN_IDLE);
}

void console_error(struct builder *out, const char *sqlstate, const char *msg)
{
	builder_error(out, "ERROR", sqlstate, msg);
	builder_ready(out, TXN_IDLE);
}

/* ---- commands that act -------------------------------------------------------------------- */

/* Servers of db's pools (every pool when db is ""). */
static int console_count_linked(struct worker *w, const char *db, bool close_needed_only)
{
	int n = 0;
	struct list_node *lists[5] = { &w->active_servers, &w->reset_servers,
				       &w->connecting_servers, &w->login_servers, NULL };
	struct list_node *pos, *tmp;
	for (int k = 0; lists[k]; k++) {
		list_for_each_safe(pos, tmp, lists[k])
		{
			struct server *s = list_entry(pos, struct server, node);
			if (!s->pool || !console_db_matches(db, s->pool->database))
				continue;
			if (close_needed_only ? s->close_needed : k == 0)
				n++;
		}
	}
	return n;
}

/* Closes the idle servers of db's pools (every pool when db is ""). */
static void console_close_idle(struct worker *w, const char *db, const char *why)
{
	struct list_node *pos, *tmp, *spos, *stmp;
	list_for_each_safe(pos, tmp, &w->pools)
	{
		struct pool *p = list_entry(pos, struct pool, node);
		if (!console_db_matches(db, p->database))
			continue;
		for (int i = 0; i < w->n_nodes; i++) {
			list_for_each_safe(spos, stmp, &p->nodes[i].idle_servers)
			{
				server_close(list_entry(spos, struct server, node), why);
			}
		}
	}
}

/* True if db names a database pgrelay has a pool for. */
static bool console_known_db(struct worker *w, const char *db)
{
	struct list_node *pos, *tmp;
	list_for_each_safe(pos, tmp, &w->pools)
	{
		struct pool *p = list_entry(pos, struct pool, node);
		if (strcmp(p->database, db) == 0)
			return true;
	}
	return false;
}

static void console_begin_wait(struct client *c, enum console_wait what, const char *db,
			       struct builder *out)
{
	struct client_extras *x = client_extras(c);
	if (x) {
		free(x->console_db);
		x->console_db = strdup(db);
	}
	if (!x || !x->console_db) {
		console_error(out, "53200", "out of memory");
		return;
	}
	c->console_wait = what;
	x->console_wait_until_ms = uv_now(&c->w->loop) + c->w->cfg->shutdown_timeout_ms;
	c->w->n_console_waits++;
	conn_want_read(&c->conn, false);
}

static bool console_wait_done(struct worker *w, enum console_wait what, const char *db)
{
	return console_count_linked(w, db, what == CW_WAIT_CLOSE) == 0;
}

static void console_pause(struct client *c, const char *db, struct builder *out, bool may_wait)
{
	struct worker *w = c->w;
	if (console_is_database(db)) {
		char msg[CONSOLE_DB_MAX + 40];
		snprintf(msg, sizeof(msg), "cannot pause admin db: %s", db);
		console_error(out, "08P01", msg);
		return;
	}
	if (w->pause_all) {
		console_error(out, "08P01", "already suspended/paused");
		return;
	}
	if (!pool_set_paused(w, db[0] ? db : NULL, true)) {
		console_error(out, "54000", "too many paused databases");
		return;
	}
	log_info("admin", c->id, "PAUSE %s by user %s", db[0] ? db : "(all)", c->user);
	if (!may_wait || console_wait_done(w, CW_PAUSE, db)) {
		console_close_idle(w, db, "PAUSE");
		console_done(out, "PAUSE");
		return;
	}
	console_begin_wait(c, CW_PAUSE, db, out);
}

static void console_resume(struct client *c, const char *db, struct builder *out)
{
	struct worker *w = c->w;
	if (db[0] ? !pool_db_paused(w, db) : !w->pause_all && !w->n_paused_dbs) {
		if (db[0]) {
			char msg[CONSOLE_DB_MAX + 40];
			snprintf(msg, sizeof(msg), "database %s is not paused", db);
			console_error(out, "08P01", msg);
		} else {
			console_error(out, "08P01", "pooler is not paused/suspended");
		}
		return;
	}
	if (db[0] && w->pause_all) {
		console_error(out, "08P01", "every database is paused: RESUME without a database");
		return;
	}
	if (!pool_set_paused(w, db[0] ? db : NULL, false)) {
		console_error(out, "54000", "too many paused databases");
		return;
	}
	log_info("admin", c->id, "RESUME %s by user %s", db[0] ? db : "(all)", c->user);
	console_done(out, "RESUME");
}

static void console_reconnect(struct client *c, const char *db, struct builder *out)
{
	struct worker *w = c->w;
	if (db[0] && !console_known_db(w, db)) {
		char msg[CONSOLE_DB_MAX + 40];
		snprintf(msg, sizeof(msg), "no such database: %s", db);
		console_error(out, "08P01", msg);
		return;
	}
	int marked = 0;
	struct list_node *lists[5] = { &w->active_servers, &w->reset_servers,
				       &w->connecting_servers, &w->login_servers, NULL };
	struct list_node *pos, *tmp;
	for (int k = 0; lists[k]; k++) {
		list_for_each_safe(pos, tmp, lists[k])
		{
			struct server *s = list_entry(pos, struct server, node);
			if (s->pool && console_db_matches(db, s->pool->database)) {
				s->close_needed = true;
				marked++;
			}
		}
	}
	console_close_idle(w, db, "RECONNECT");
	log_info("admin", c->id, "RECONNECT %s by user %s: %d in use close when released",
		 db[0] ? db : "(all)", c->user, marked);
	console_done(out, "RECONNECT");
}

static void console_kill(struct client *c, const char *db, struct builder *out)
{
	struct worker *w = c->w;
	if (console_is_database(db)) {
		char msg[CONSOLE_DB_MAX + 40];
		snprintf(msg, sizeof(msg), "cannot kill admin db: %s", db);
		console_error(out, "08P01", msg);
		return;
	}
	if (db[0] && !console_known_db(w, db)) {
		char msg[CONSOLE_DB_MAX + 40];
		snprintf(msg, sizeof(msg), "no such database: %s", db);
		console_error(out, "08P01", msg);
		return;
	}
	if (!pool_set_paused(w, db[0] ? db : NULL, true)) {
		console_error(out, "54000", "too many paused databases");
		return;
	}
	log_info("admin", c->id, "KILL %s by user %s", db[0] ? db : "(all)", c->user);
	/* Clients first (their servers are closed with them, never reused), then idle servers. */
	struct list_node *lists[3] = { &w->active_clients, &w->nodeless_clients, NULL };
	struct list_node *pos, *tmp;
	for (int k = 0; lists[k]; k++) {
		list_for_each_safe(pos, tmp, lists[k])
		{
			struct client *o = list_entry(pos, struct client, node);
			if (o->kind == CK_SESSION && o->pool &&
			    console_db_matches(db, o->pool->database))
				client_disconnect(o, "57P01", "database killed by the console");
		}
	}
	struct list_node *ppos, *ptmp;
	list_for_each_safe(ppos, ptmp, &w->pools)
	{
		struct pool *p = list_entry(ppos, struct pool, node);
		if (!console_db_matches(db, p->database))
			continue;
		for (int i = 0; i < w->n_nodes; i++)
			while (!list_empty(&p->nodes[i].waiting_clients))
				client_disconnect(
					list_entry(list_first(&p->nodes[i].waiting_clients),
						   struct client, node),
					"57P01", "database killed by the console");
	}
	struct list_node *slists[4] = { &w->active_servers, &w->connecting_servers,
					&w->login_servers, NULL };
	for (int k = 0; slists[k]; k++) {
		list_for_each_safe(pos, tmp, slists[k])
		{
			struct server *s = list_entry(pos, struct server, node);
			if (s->pool && console_db_matches(db, s->pool->database))
				server_close(s, "KILL");
		}
	}
	console_close_idle(w, db, "KILL");
	console_done(out, "KILL");
}

static void console_kill_client(struct client *c, const char *arg, struct builder *out)
{
	struct worker *w = c->w;
	uint64_t id = 0;
	const char *p = arg;
	if (*p == 'c' || *p == 'C')
		p++;
	bool ok = *p != 0;
	for (; *p && ok; p++) {
		ok = isdigit((unsigned char)*p) && id < UINT64_MAX / 10;
		id = id * 10 + (uint64_t)(*p - '0');
	}
	if (!ok) {
		console_error(out, "08P01", "invalid client pointer supplied");
		return;
	}
	struct client *victim = NULL;
	struct list_node *lists[3] = { &w->active_clients, &w->nodeless_clients, NULL };
	struct list_node *pos, *tmp;
	for (int k = 0; lists[k] && !victim; k++) {
		list_for_each_safe(pos, tmp, lists[k])
		{
			struct client *o = list_entry(pos, struct client, node);
			if (o->id == id) {
				victim = o;
				break;
			}
		}
	}
	list_for_each_safe(pos, tmp, &w->pools)
	{
		struct pool *pl = list_entry(pos, struct pool, node);
		for (int i = 0; i < w->n_nodes && !victim; i++) {
			struct list_node *cpos, *ctmp;
			list_for_each_safe(cpos, ctmp, &pl->nodes[i].waiting_clients)
			{
				struct client *o = list_entry(cpos, struct client, node);
				if (o->id == id) {
					victim = o;
					break;
				}
			}
		}
	}
	if (!victim) {
		console_error(out, "08P01", "client not found");
		return;
	}
	log_info("admin", c->id, "KILL_CLIENT c%" PRIu64 " by user %s", id, c->user);
	client_disconnect(victim, "57P01", "admin forced disconnect");
	console_done(out, "KILL_CLIENT");
}

static void console_wait_close(struct client *c, const char *db, struct builder *out, bool may_wait)
{
	struct worker *w = c->w;
	if (console_is_database(db)) {
		char msg[CONSOLE_DB_MAX + 40];
		snprintf(msg, sizeof(msg), "cannot wait in admin db: %s", db);
		console_error(out, "08P01", msg);
		return;
	}
	if (!may_wait || console_wait_done(w, CW_WAIT_CLOSE, db)) {
		console_done(out, "WAIT_CLOSE");
		return;
	}
	console_begin_wait(c, CW_WAIT_CLOSE, db, out);
}

void console_poll(struct worker *w, uint64_t now_ms)
{
	if (w->n_console_waits <= 0)
		return;
	struct list_node *pos, *tmp;
	list_for_each_safe(pos, tmp, &w->active_clients)
	{
		struct client *c = list_entry(pos, struct client, node);
		if (c->console_wait == CW_NONE)
			continue;
		const struct client_extras *x = c->ext; /* made by console_begin_wait */
		bool done = console_wait_done(w, c->console_wait, x->console_db);
		bool late = now_ms >= x->console_wait_until_ms;
		if (!done && !late)
			continue;
		const char *tag = c->console_wait == CW_PAUSE ? "PAUSE" : "WAIT_CLOSE";
		struct builder out;
		uint8_t store[256];
		builder_init(&out, store, sizeof(store));
		if (done) {
			if (c->console_wait == CW_PAUSE)
				console_close_idle(w, x->console_db, "PAUSE");
			console_done(&out, tag);
		} else {
			char msg[96];
			snprintf(msg, sizeof(msg), "%s did not complete within shutdown_timeout",
				 tag);
			console_error(&out, "57014", msg);
		}
		c->console_wait = CW_NONE;
		w->n_console_waits--;
		bool ok = builder_ok(&out) && client_send(c, out.data, out.len);
		builder_free(&out);
		if (!ok) {
			if (c->state != CL_CLOSING)
				client_disconnect(c, "53200", "out of memory");
			continue;
		}
		conn_want_read(&c->conn, true);
		client_kick(c);
	}
}

/* ---- parsing and dispatch ----------------------------------------------------------------- */

/* A command: a word, an optional argument (a word or a "quoted" name), an optional ';'. */
struct console_cmd {
	char word[CONSOLE_WORD_MAX];
	char arg[CONSOLE_DB_MAX];
};

static size_t console_blank(const char *s, size_t len, size_t i)
{
	while (i < len && isspace((unsigned char)s[i]))
		i++;
	return i;
}

static bool console_parse(const char *s, size_t len, struct console_cmd *cmd)
{
	memset(cmd, 0, sizeof(*cmd));
	size_t i = console_blank(s, len, 0), n = 0;
	while (i < len && (isalnum((unsigned char)s[i]) || s[i] == '_')) {
		if (n + 1 >= sizeof(cmd->word))
			return false;
		cmd->word[n++] = (char)tolower((unsigned char)s[i++]);
	}
	if (!n)
		return false;
	size_t j = console_blank(s, len, i);
	n = 0;
	if (j < len && s[j] == '"') {
		for (j++; j < len && s[j] != '"'; j++) {
			if (n + 1 >= sizeof(cmd->arg))
				return false;
			cmd->arg[n++] = s[j];
		}
		if (j >= len || !n)
			return false;
		j++;
	} else if (j > i) {
		while (j < len && (isalnum((unsigned char)s[j]) || s[j] == '_' || s[j] == '-' ||
				   s[j] == '.' || (unsigned char)s[j] >= 0x80)) {
			if (n + 1 >= sizeof(cmd->arg))
				return false;
			cmd->arg[n++] = s[j++];
		}
	}
	j = console_blank(s, len, j);
	if (j < len && s[j] == ';')
		j = console_blank(s, len, j + 1);
	return j >= len;
}

static void console_invalid(const char *sql, size_t len, struct builder *out)
{
	char msg[320];
	int shown = len < 200 ? (int)len : 200;
	snprintf(msg, sizeof(msg), "invalid command '%.*s', use SHOW HELP;", shown, sql);
	console_error(out, "08P01", msg);
}

bool console_is_show(const char *sql, size_t len)
{
	struct console_cmd cmd;
	len = cstr_len(sql, len);
	return len <= CONSOLE_QUERY_MAX && console_parse(sql, len, &cmd) &&
	       strcmp(cmd.word, "show") == 0;
}

void console_answer(struct client *c, const char *sql, size_t len, struct builder *out,
		    bool may_wait)
{
	len = cstr_len(sql, len);
	struct console_cmd cmd;
	if (len > CONSOLE_QUERY_MAX || !console_parse(sql, len, &cmd)) {
		console_invalid(sql, len, out);
		return;
	}
	if (strcmp(cmd.word, "show") == 0) {
		if (!cmd.arg[0] || !console_show(c, cmd.arg, out))
			console_invalid(sql, len, out);
		return;
	}
	static const char *const acts[] = { "pause",	   "resume", "reconnect", "kill",
					    "kill_client", "reload", "shutdown",  "wait_close" };
	size_t k = 0;
	while (k < sizeof(acts) / sizeof(acts[0]) && strcmp(cmd.word, acts[k]) != 0)
		k++;
	if (k == sizeof(acts) / sizeof(acts[0])) {
		console_invalid(sql, len, out);
		return;
	}
	if (c->kind != CK_CONSOLE_ADMIN) {
		console_error(out, "42501", "admin access needed");
		return;
	}
	switch (k) {
	case 0:
		console_pause(c, cmd.arg, out, may_wait);
		return;
	case 1:
		console_resume(c, cmd.arg, out);
		return;
	case 2:
		console_reconnect(c, cmd.arg, out);
		return;
	case 3:
		console_kill(c, cmd.arg, out);
		return;
	case 4:
		if (!cmd.arg[0]) {
			console_invalid(sql, len, out);
			return;
		}
		console_kill_client(c, cmd.arg, out);
		return;
	case 5:
		if (cmd.arg[0]) {
			console_invalid(sql, len, out);
			return;
		}
		log_info("admin", c->id, "RELOAD by user %s", c->user);
		worker_reload(c->w);
		console_done(out, "RELOAD");
		return;
	case 6:
		if (cmd.arg[0]) {
			console_invalid(sql, len, out);
			return;
		}
		log_info("admin", c->id, "SHUTDOWN by user %s", c->user);
		console_done(out, "SHUTDOWN");
		worker_begin_shutdown(c->w, WS_SMART);
		return;
	default:
		console_wait_close(c, cmd.arg, out, may_wait);
		return;
	}
}

/* ---- login -------------------------------------------------------------------------------- */

bool console_is_database(const char *database)
{
	return database && strcmp(database, CONSOLE_DATABASE) == 0;
}

/* True if user is one of the comma-separated names in list (NULL: nobody). */
static bool console_user_in(const char *user, const char *list)
{
	size_t ulen = strlen(user);
	for (const char *p = list ? list : ""; *p;) {
		while (*p == ' ' || *p == ',')
			p++;
		const char *e = p;
		while (*e && *e != ',')
			e++;
		const char *t = e;
		while (t > p && t[-1] == ' ')
			t--;
		if ((size_t)(t - p) == ulen && ulen && strncmp(p, user, ulen) == 0)
			return true;
		p = e;
	}
	return false;
}

void console_login(struct client *c)
{
	struct worker *w = c->w;
	if (console_user_in(c->user, w->cfg->admin_users)) {
		c->kind = CK_CONSOLE_ADMIN;
	} else if (console_user_in(c->user, w->cfg->stats_users)) {
		c->kind = CK_CONSOLE_STATS;
	} else {
		client_disconnect(c, "28000",
				  "not allowed: the pgbouncer console needs a user in admin_users "
				  "or stats_users");
		return;
	}
	static const char *const params[][2] = {
		{ "server_version", "15.0" },
		{ "server_encoding", "UTF8" },
		{ "client_encoding", "UTF8" },
		{ "DateStyle", "ISO, MDY" },
		{ "TimeZone", "GMT" },
		{ "integer_datetimes", "on" },
		{ "standard_conforming_strings", "on" },
		{ "is_superuser", "off" },
		{ "in_hot_standby", "off" },
		{ "default_transaction_read_only", "off" },
	};
	struct builder b;
	uint8_t store[1024];
	builder_init(&b, store, sizeof(store));
	for (size_t i = 0; i < sizeof(params) / sizeof(params[0]); i++)
		builder_param_status(&b, params[i][0], params[i][1]);
	builder_param_status(&b, "application_name",
			     c->application_name ? c->application_name : "");
	if (client_finish_welcome(c, &b))
		log_info("admin", c->id, "console login user %s (%s)", c->user,
			 c->kind == CK_CONSOLE_ADMIN ? "admin" : "stats");
}
