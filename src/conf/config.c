/*
 * Loading a configuration. libconfig reads the file; then every setting is matched against the key
 * table (config_keys.c): known keys are converted and stored over the defaults, unknown ones are
 * reported with a "did you mean" hint. Then come the checks that span keys (required keys, one
 * ALWAYS_PRIMARY backend, min_pool_size <= pool_size) and the users and hba files.
 * Every problem is collected as one "FILE:LINE: key.path: message" line; a config is returned
 * only when there was none. A returned config is never modified again: reload builds a new one.
 */
#include "conf/config.h"
#include "conf/config_keys.h"

#include <assert.h>
#include <errno.h>
#include <libconfig.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_KEYS 128 /* room for config_key_count; checked at load */

/* The error lines of one load: whole lines only, '\n'-separated, always NUL-terminated. */
struct errs {
	char *buf; /* borrowed: the caller's err, may be NULL */
	size_t cap;
	size_t len;
	int count;	/* problems found, including those that did not fit */
	bool truncated; /* a line did not fit; "..." was written if it could be */
};

struct loader {
	struct config *cfg; /* the config being built; owned until returned */
	struct errs errs;
	const char *path;   /* borrowed: the main file, for settings libconfig has no file for */
	int seen[MAX_KEYS]; /* line of each non-backend key found in the file, 0 if absent */
};

static void errs_line(struct errs *e, const char *line)
{
	e->count++;
	if (!e->buf || e->cap == 0 || e->truncated)
		return;
	size_t need = strlen(line) + (e->len ? 1 : 0);
	if (e->len + need + 1 > e->cap) {
		e->truncated = true;
		const char *more = e->len ? "\n..." : "...";
		if (e->len + strlen(more) + 1 <= e->cap) {
			memcpy(e->buf + e->len, more, strlen(more) + 1);
			e->len += strlen(more);
		}
		return;
	}
	if (e->len)
		e->buf[e->len++] = '\n';
	memcpy(e->buf + e->len, line, strlen(line) + 1);
	e->len += strlen(line);
}

__attribute__((format(printf, 4, 5))) static void errs_add(struct errs *e, const char *file,
							   int line, const char *fmt, ...)
{
	char msg[1024];
	int n = line > 0 ? snprintf(msg, sizeof(msg), "%s:%d: ", file, line)
			 : snprintf(msg, sizeof(msg), "%s: ", file);
	if (n < 0 || (size_t)n >= sizeof(msg))
		n = 0;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg + n, sizeof(msg) - (size_t)n, fmt, ap);
	va_end(ap);
	errs_line(e, msg);
}

/* Appends the lines of another module's error text (users_load, hba_load). */
static void errs_add_text(struct errs *e, const char *text)
{
	const char *p = text;
	while (*p) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);
		if (len > 0) {
			char line[1024];
			snprintf(line, sizeof(line), "%.*s", (int)len, p);
			errs_line(e, line);
		}
		p += len + (nl ? 1 : 0);
	}
}

static const char *setting_file(const struct loader *L, const config_setting_t *s)
{
	const char *f = config_setting_source_file(s);
	return f ? f : L->path;
}

static int setting_line(const config_setting_t *s)
{
	return (int)config_setting_source_line(s);
}

static const char *type_desc(const config_setting_t *s)
{
	switch (config_setting_type(s)) {
	case CONFIG_TYPE_INT:
	case CONFIG_TYPE_INT64:
		return "an integer";
	case CONFIG_TYPE_FLOAT:
		return "a float";
	case CONFIG_TYPE_STRING:
		return "a string";
	case CONFIG_TYPE_BOOL:
		return "a boolean";
	case CONFIG_TYPE_GROUP:
		return "a group";
	case CONFIG_TYPE_ARRAY:
		return "an array";
	case CONFIG_TYPE_LIST:
		return "a list";
	}
	return "nothing";
}

static const char *expected_desc(const struct key_def *k, char *buf, size_t cap)
{
	switch (k->type) {
	case KT_INT:
		return "an integer";
	case KT_DOUBLE:
		return "a number";
	case KT_BOOL:
		return "true or false";
	case KT_STRING:
	case KT_ADDRLIST:
	case KT_FLAGS:
		return "a string";
	case KT_ENUM: {
		size_t len = (size_t)snprintf(buf, cap, "one of");
		for (int i = 0; k->choices[i] && len < cap; i++)
			len += (size_t)snprintf(buf + len, cap - len, "%s \"%s\"", i ? "," : "",
						k->choices[i]);
		return buf;
	}
	case KT_DURATION:
		return "a duration such as \"5s\" (or an integer number of seconds)";
	case KT_SIZE:
		return "a size such as \"64MB\" (or an integer number of bytes)";
	case KT_BACKENDS:
		return "a list of groups ( { host = ...; }, ... )";
	case KT_LISTENERS:
		return "a list of groups ( { port = ...; role = ...; }, ... )";
	case KT_CIDRS:
		return "a list of strings ( \"10.0.0.0/8\", ... ) or a string";
	}
	return "?";
}

/*
 * A list or array of strings ( "a", "b" ) joined with ", " and stored like the one-string form.
 * *type_ok turns false when an element is not a string.
 */
static bool store_string_list(const struct key_def *k, const config_setting_t *s, void *base,
			      char *why, size_t cap, bool *type_ok)
{
	char joined[4096];
	size_t len = 0;
	joined[0] = '\0';
	int n = config_setting_length(s);
	if (n > k->max) {
		snprintf(why, cap, "more than %lld entries", (long long)k->max);
		return false;
	}
	for (int i = 0; i < n; i++) {
		const char *v = config_setting_get_string_elem(s, (unsigned)i);
		if (!v) {
			*type_ok = false;
			return false;
		}
		int w = snprintf(joined + len, sizeof(joined) - len, "%s%s", i ? ", " : "", v);
		if (w < 0 || (size_t)w >= sizeof(joined) - len) {
			snprintf(why, cap, "the list is too long");
			return false;
		}
		len += (size_t)w;
	}
	return key_set_text(k, base, joined, why, cap);
}

/* Converts one scalar setting and stores it into base; reports and returns false on problems. */
static bool store_setting(struct loader *L, const struct key_def *k, const config_setting_t *s,
			  void *base, const char *path)
{
	char why[512];
	bool ok = false;
	bool type_ok = true;
	switch (config_setting_type(s)) {
	case CONFIG_TYPE_INT:
	case CONFIG_TYPE_INT64: {
		long long v = config_setting_get_int64(s);
		if (k->type == KT_INT || k->type == KT_DOUBLE) {
			ok = key_set_int(k, base, v, why, sizeof(why));
		} else if (k->type == KT_DURATION || k->type == KT_SIZE) {
			long long mult = k->type == KT_DURATION ? 1000 : 1;
			if (v < 0) {
				snprintf(why, sizeof(why), "%lld is negative", v);
				ok = false;
			} else {
				ok = key_set_int(k, base,
						 v > INT64_MAX / mult ? INT64_MAX : v * mult, why,
						 sizeof(why));
			}
		} else {
			type_ok = false;
		}
		break;
	}
	case CONFIG_TYPE_FLOAT:
		if (k->type == KT_DOUBLE)
			ok = key_set_double(k, base, config_setting_get_float(s), why, sizeof(why));
		else
			type_ok = false;
		break;
	case CONFIG_TYPE_STRING:
		if (k->type == KT_STRING || k->type == KT_DURATION || k->type == KT_SIZE ||
		    k->type == KT_ENUM || k->type == KT_FLAGS || k->type == KT_ADDRLIST ||
		    k->type == KT_CIDRS)
			ok = key_set_text(k, base, config_setting_get_string(s), why, sizeof(why));
		else
			type_ok = false;
		break;
	case CONFIG_TYPE_LIST:
	case CONFIG_TYPE_ARRAY:
		if (k->type == KT_CIDRS)
			ok = store_string_list(k, s, base, why, sizeof(why), &type_ok);
		else
			type_ok = false;
		break;
	case CONFIG_TYPE_BOOL:
		if (k->type == KT_BOOL)
			ok = key_set_bool(k, base, config_setting_get_bool(s), why, sizeof(why));
		else
			type_ok = false;
		break;
	default:
		type_ok = false;
		break;
	}
	if (!type_ok) {
		char expected[256];
		snprintf(why, sizeof(why), "expected %s, got %s",
			 expected_desc(k, expected, sizeof(expected)), type_desc(s));
		ok = false;
	}
	if (!ok)
		errs_add(&L->errs, setting_file(L, s), setting_line(s), "%s: %s", path, why);
	return ok;
}

/* The row for name in a scope: group "" (top), a group name, or KF_BACKEND rows. */
static int find_key(const char *group, unsigned backend_flag, const char *name)
{
	for (size_t i = 0; i < config_key_count; i++) {
		const struct key_def *k = &config_keys[i];
		if ((k->flags & KF_BACKEND) == backend_flag && strcmp(k->group, group) == 0 &&
		    strcmp(k->name, name) == 0)
			return (int)i;
	}
	return -1;
}

static bool is_group_name(const char *name)
{
	for (size_t i = 0; i < config_key_count; i++)
		if (!(config_keys[i].flags & KF_BACKEND) && config_keys[i].group[0] &&
		    strcmp(config_keys[i].group, name) == 0)
			return true;
	return false;
}

/* Edit distance, or a large number for names longer than 63 bytes. */
static int levenshtein(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	if (la > 63 || lb > 63)
		return 1000;
	int row[64];
	for (size_t j = 0; j <= lb; j++)
		row[j] = (int)j;
	for (size_t i = 1; i <= la; i++) {
		int diag = row[0];
		row[0] = (int)i;
		for (size_t j = 1; j <= lb; j++) {
			int up = row[j];
			int best = diag + (a[i - 1] != b[j - 1]);
			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	return row[lb];
}

/* One place a key name could have been meant: its name, how to show it, and whether in scope. */
struct candidate {
	const char *name;
	char shown[160];
	bool same_scope;
};

static void consider(const struct candidate *c, const char *name, int *best_d,
		     const struct candidate **best, bool same_scope)
{
	if (c->same_scope != same_scope)
		return;
	int d = levenshtein(name, c->name);
	if (d < *best_d && d < (int)strlen(c->name)) {
		*best_d = d;
		*best = c;
	}
}

/*
 * Writes `did you mean "x"?` into hint for an unknown name in a scope, or "" if nothing is close:
 * the same name in another scope first (a key put in the wrong group), then the closest name of
 * the same scope within distance 3, then of any scope within distance 2.
 */
static void suggest(const char *group, unsigned backend_flag, const char *name, char *hint,
		    size_t cap)
{
	struct candidate cands[MAX_KEYS + 8];
	size_t n = 0;
	bool top = !backend_flag && !group[0];
	for (size_t i = 0; i < config_key_count && n < MAX_KEYS; i++) {
		const struct key_def *k = &config_keys[i];
		struct candidate *c = &cands[n++];
		c->name = k->name;
		c->same_scope = (k->flags & KF_BACKEND) == backend_flag && !strcmp(k->group, group);
		if (k->flags & KF_BACKEND)
			snprintf(c->shown, sizeof(c->shown), "\"%s\" inside a backends entry",
				 k->name);
		else if (!k->group[0])
			snprintf(c->shown, sizeof(c->shown), "\"%s\" (a top-level key)", k->name);
		else
			snprintf(c->shown, sizeof(c->shown), "\"%s.%s\"", k->group, k->name);
		if (c->same_scope)
			snprintf(c->shown, sizeof(c->shown), "\"%s\"", k->name);
		/* A group's first row also makes the group name a top-level candidate. */
		if (!(k->flags & KF_BACKEND) && k->group[0] &&
		    (i == 0 || strcmp(config_keys[i - 1].group, k->group) != 0)) {
			struct candidate *g = &cands[n++];
			g->name = k->group;
			g->same_scope = top;
			snprintf(g->shown, sizeof(g->shown),
				 top ? "\"%s\"" : "\"%s\" (a top-level group)", k->group);
		}
	}
	const struct candidate *best = NULL;
	for (size_t i = 0; i < n && !best; i++)
		if (!cands[i].same_scope && strcmp(cands[i].name, name) == 0)
			best = &cands[i];
	for (int pass = 0; pass < 2 && !best; pass++) {
		int best_d = pass == 0 ? 4 : 3; /* same scope: distance <= 3; elsewhere <= 2 */
		for (size_t i = 0; i < n; i++)
			consider(&cands[i], name, &best_d, &best, pass == 0);
	}
	if (best)
		snprintf(hint, cap, "; did you mean %s?", best->shown);
	else
		hint[0] = '\0';
}

static void parse_backends(struct loader *L, const config_setting_t *list);
static void parse_listeners(struct loader *L, const config_setting_t *list);

/*
 * Walks the members of one group setting (the root, a named group or one backends entry) and
 * stores every known key into base. seen receives the line of each key found, by row index.
 */
static void parse_members(struct loader *L, const config_setting_t *grp, const char *group,
			  unsigned backend_flag, int backend_index, void *base, int *seen)
{
	int count = config_setting_length(grp);
	for (int i = 0; i < count; i++) {
		const config_setting_t *s = config_setting_get_elem(grp, (unsigned)i);
		const char *name = config_setting_name(s);
		char path[256];
		if (backend_flag)
			snprintf(path, sizeof(path), "backends[%d].%s", backend_index, name);
		else if (group[0])
			snprintf(path, sizeof(path), "%s.%s", group, name);
		else
			snprintf(path, sizeof(path), "%s", name);

		int ki = find_key(group, backend_flag, name);
		if (ki >= 0) {
			const struct key_def *k = &config_keys[ki];
			seen[ki] = setting_line(s);
			if (k->type == KT_BACKENDS)
				parse_backends(L, s);
			else if (k->type == KT_LISTENERS)
				parse_listeners(L, s);
			else
				store_setting(L, k, s, base, path);
		} else if (!group[0] && !backend_flag && is_group_name(name)) {
			if (config_setting_is_group(s))
				parse_members(L, s, name, 0, -1, base, seen);
			else
				errs_add(&L->errs, setting_file(L, s), setting_line(s),
					 "%s: expected a group { ... }, got %s", path,
					 type_desc(s));
		} else {
			char hint[256];
			suggest(group, backend_flag, name, hint, sizeof(hint));
			errs_add(&L->errs, setting_file(L, s), setting_line(s), "%s: unknown key%s",
				 path, hint);
		}
	}
}

/*
 * Reports the required rows of a scope that were absent (at the line of the enclosing group, or
 * line 1 when there is none) or given as an empty string.
 */
static void check_required(struct loader *L, const config_setting_t *root, unsigned backend_flag,
			   int backend_index, const config_setting_t *entry, const void *base,
			   const int *seen)
{
	for (size_t i = 0; i < config_key_count; i++) {
		const struct key_def *k = &config_keys[i];
		if ((k->flags & KF_BACKEND) != backend_flag || !(k->flags & KF_REQUIRED))
			continue;
		char path[256];
		key_path(k, backend_index, path, sizeof(path));
		if (!seen[i]) {
			const config_setting_t *where = entry;
			if (!where && k->group[0])
				where = config_setting_get_member(root, k->group);
			errs_add(&L->errs, where ? setting_file(L, where) : L->path,
				 where ? setting_line(where) : 1, "%s: required key is missing",
				 path);
		} else if (k->type == KT_STRING) {
			const char *v = *(char *const *)((const char *)base + k->offset);
			if (!v || !v[0])
				errs_add(&L->errs, L->path, seen[i], "%s: must not be empty", path);
		}
	}
}

static void parse_backends(struct loader *L, const config_setting_t *list)
{
	const char *file = setting_file(L, list);
	int line = setting_line(list);
	int count = config_setting_length(list);
	if (!config_setting_is_list(list) && !(config_setting_is_array(list) && count == 0)) {
		errs_add(&L->errs, file, line,
			 "backends: expected a list of groups "
			 "( { host = ...; }, ... ), got %s",
			 type_desc(list));
		return;
	}
	if (count == 0) {
		errs_add(&L->errs, file, line, "backends: at least one backend is required");
		return;
	}
	if (count > CONFIG_MAX_BACKENDS) {
		errs_add(&L->errs, file, line, "backends: %d entries, at most %d are supported",
			 count, CONFIG_MAX_BACKENDS);
		return;
	}
	const config_setting_t *root = list;
	while (config_setting_parent(root))
		root = config_setting_parent(root);
	for (int i = 0; i < count; i++) {
		const config_setting_t *e = config_setting_get_elem(list, (unsigned)i);
		struct backend_conf *b = &L->cfg->backends[i];
		config_keys_set_defaults(b, KF_BACKEND);
		L->cfg->n_backends = i + 1;
		b->line = setting_line(e);
		if (!config_setting_is_group(e)) {
			errs_add(&L->errs, setting_file(L, e), setting_line(e),
				 "backends[%d]: expected a group { host = ...; }, got %s", i,
				 type_desc(e));
			continue;
		}
		int seen[MAX_KEYS] = { 0 };
		parse_members(L, e, "backends", KF_BACKEND, i, b, seen);
		check_required(L, root, KF_BACKEND, i, e, b, seen);
	}
}

/* One listeners entry: { port = N; role = "primary" | "standby" | "auto"; }. */
static void parse_listener(struct loader *L, const config_setting_t *e, int i)
{
	static const char *const roles[] = { "auto", "primary", "standby" };
	struct listener_conf *l = &L->cfg->listeners[i];
	const char *file = setting_file(L, e);
	l->line = setting_line(e);
	l->role = LISTEN_ROLE_AUTO;
	if (!config_setting_is_group(e)) {
		errs_add(&L->errs, file, l->line,
			 "listeners[%d]: expected a group { port = ...; role = ...; }, got %s", i,
			 type_desc(e));
		return;
	}
	int count = config_setting_length(e);
	bool have_port = false;
	for (int j = 0; j < count; j++) {
		const config_setting_t *m = config_setting_get_elem(e, (unsigned)j);
		const char *name = config_setting_name(m);
		int line = setting_line(m);
		if (strcmp(name, "port") == 0) {
			int v = config_setting_get_int(m);
			if (config_setting_type(m) != CONFIG_TYPE_INT || v < 1 || v > 65535)
				errs_add(&L->errs, file, line,
					 "listeners[%d].port: expected an integer 1 .. 65535", i);
			l->port = v;
			have_port = true;
		} else if (strcmp(name, "role") == 0) {
			const char *v = config_setting_get_string(m);
			int r = -1;
			for (int k = 0; v && k < 3; k++)
				if (strcasecmp(v, roles[k]) == 0)
					r = k;
			if (r < 0)
				errs_add(&L->errs, file, line,
					 "listeners[%d].role: expected one of \"auto\", "
					 "\"primary\", "
					 "\"standby\"",
					 i);
			else
				l->role = r;
		} else {
			errs_add(&L->errs, file, line,
				 "listeners[%d].%s: unknown key (an entry has port and role)", i,
				 name);
		}
	}
	if (!have_port)
		errs_add(&L->errs, file, l->line, "listeners[%d].port: required key is missing", i);
	for (int j = 0; j < i; j++)
		if (have_port && L->cfg->listeners[j].port == l->port)
			errs_add(&L->errs, file, l->line,
				 "listeners[%d].port: %d is already used by listeners[%d]", i,
				 l->port, j);
}

static void parse_listeners(struct loader *L, const config_setting_t *list)
{
	int count = config_setting_length(list);
	if (!config_setting_is_list(list) && !(config_setting_is_array(list) && count == 0)) {
		errs_add(&L->errs, setting_file(L, list), setting_line(list),
			 "listeners: expected a list of groups ( { port = ...; role = ...; }, ... "
			 "), "
			 "got %s",
			 type_desc(list));
		return;
	}
	if (count > CONFIG_MAX_LISTENERS) {
		errs_add(&L->errs, setting_file(L, list), setting_line(list),
			 "listeners: %d entries, at most %d are supported", count,
			 CONFIG_MAX_LISTENERS);
		return;
	}
	for (int i = 0; i < count; i++) {
		L->cfg->n_listeners = i + 1;
		parse_listener(L, config_setting_get_elem(list, (unsigned)i), i);
	}
}

/* Checks that span keys; run after every key was stored. */
static void check_cross(struct loader *L)
{
	struct config *cfg = L->cfg;
	int primary = -1;
	for (int i = 0; i < cfg->n_backends; i++) {
		const struct backend_conf *b = &cfg->backends[i];
		if (b->flags & BACKEND_FLAG_ALWAYS_PRIMARY) {
			if (primary >= 0)
				errs_add(&L->errs, L->path, b->line,
					 "backends[%d].flag: ALWAYS_PRIMARY is already set on "
					 "backends[%d] (line %d); at most one backend may have it",
					 i, primary, cfg->backends[primary].line);
			else
				primary = i;
		}
		for (int j = 0; j < i; j++) {
			const struct backend_conf *o = &cfg->backends[j];
			if (b->host && o->host && b->port == o->port &&
			    strcmp(b->host, o->host) == 0)
				errs_add(&L->errs, L->path, b->line,
					 "backends[%d]: same host and port as backends[%d] (line "
					 "%d)",
					 i, j, o->line);
		}
	}
	if (cfg->watchdog.enabled && (!cfg->watchdog.endpoints || !cfg->watchdog.endpoints[0]))
		errs_add(&L->errs, L->path, 1,
			 "watchdog.endpoints: at least one etcd URL is needed when "
			 "watchdog.enabled");
	if (cfg->watchdog.enabled && !cfg->watchdog.when_quorum_exists)
		errs_add(
			&L->errs, L->path, 1,
			"watchdog.failover_when_quorum_exists: false is not supported: etcd is the "
			"quorum, and a failover without it could promote twice");
	if (cfg->watchdog.enabled && (!cfg->watchdog.prefix || cfg->watchdog.prefix[0] != '/'))
		errs_add(&L->errs, L->path, 1, "watchdog.prefix: must start with '/'");
	for (int i = 0; i < cfg->n_listeners; i++)
		if (cfg->listeners[i].port == cfg->port)
			errs_add(&L->errs, L->path, cfg->listeners[i].line,
				 "listeners[%d].port: %d is already the main port", i, cfg->port);
	if (cfg->pool.min_pool_size > cfg->pool.pool_size) {
		int ki = find_key("pool", 0, "min_pool_size");
		errs_add(&L->errs, L->path, ki >= 0 && L->seen[ki] ? L->seen[ki] : 1,
			 "pool.min_pool_size: %d is larger than pool.pool_size (%d)",
			 cfg->pool.min_pool_size, cfg->pool.pool_size);
	}
}

/* The folder of path ("" for a bare file name, meaning the current directory). */
static char *dir_of(const char *path)
{
	const char *slash = strrchr(path, '/');
	if (!slash)
		return strdup("");
	return strndup(path, slash == path ? 1 : (size_t)(slash - path));
}

/* Replaces *file by its resolution against dir when it is relative. */
static bool resolve_path(const char *dir, char **file)
{
	if (!*file || (*file)[0] == '/' || !dir[0])
		return true;
	size_t len = strlen(dir) + strlen(*file) + 2;
	char *full = malloc(len);
	if (!full)
		return false;
	snprintf(full, len, "%s%s%s", dir, dir[strlen(dir) - 1] == '/' ? "" : "/", *file);
	free(*file);
	*file = full;
	return true;
}

/* Loads the users and hba files named by the config and appends their problems. */
static void load_auth(struct loader *L, const char *dir)
{
	struct config *cfg = L->cfg;
	if (!resolve_path(dir, &cfg->users_file) || !resolve_path(dir, &cfg->hba_file)) {
		errs_add(&L->errs, L->path, 1, "out of memory");
		return;
	}
	char err[4096];
	if (cfg->users_file && cfg->users_file[0]) {
		err[0] = '\0';
		cfg->users = users_load(cfg->users_file, err, sizeof(err));
		if (!cfg->users) {
			if (!err[0])
				snprintf(err, sizeof(err), "%s: cannot load the users file",
					 cfg->users_file);
			errs_add_text(&L->errs, err);
		}
	}
	if (cfg->hba_file) {
		err[0] = '\0';
		cfg->hba = hba_load(cfg->hba_file, err, sizeof(err));
		if (!cfg->hba) {
			if (!err[0])
				snprintf(err, sizeof(err), "%s: cannot load the hba file",
					 cfg->hba_file);
			errs_add_text(&L->errs, err);
		}
	}
}

static void tls_error(struct loader *L, const char *key, const char *why)
{
	int ki = find_key("tls", 0, key);
	errs_add(&L->errs, L->path, ki >= 0 && L->seen[ki] ? L->seen[ki] : 1, "tls.%s: %s", key,
		 why);
}

/* The tls group's cross-key rules: what a mode needs must be configured. */
static bool check_tls(struct loader *L)
{
	const struct tls_conf *t = &L->cfg->tls;
	int before = L->errs.count;
	if (!t->cert_file != !t->key_file)
		tls_error(L, t->cert_file ? "key_file" : "cert_file",
			  "cert_file and key_file go together");
	if (t->client_mode >= TLS_REQUIRE && !t->cert_file)
		tls_error(L, "client_mode", "require and stronger need cert_file and key_file");
	if (t->client_mode >= TLS_VERIFY_CA && !t->ca_file)
		tls_error(L, "client_mode", "verify-ca and verify-full need ca_file");
	if (!t->server_cert_file != !t->server_key_file)
		tls_error(L, t->server_cert_file ? "server_key_file" : "server_cert_file",
			  "server_cert_file and server_key_file go together");
	for (int i = 0; i < L->cfg->n_backends; i++)
		if (config_backend_tls_mode(L->cfg, i) >= TLS_VERIFY_CA &&
		    !config_backend_tls_ca(L->cfg, i)) {
			char why[128];
			snprintf(why, sizeof(why),
				 "backends[%d] uses verify-ca or verify-full and has no CA file",
				 i);
			tls_error(L, "server_ca_file", why);
		}
	return L->errs.count == before;
}

/* Builds the contexts the tls group asks for (certificates and keys are read now). */
static void load_tls(struct loader *L, const char *dir)
{
	struct config *cfg = L->cfg;
	struct tls_conf *t = &cfg->tls;
	char **files[] = { &t->cert_file,      &t->key_file,	     &t->ca_file,
			   &t->server_ca_file, &t->server_cert_file, &t->server_key_file };
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
		if (!resolve_path(dir, files[i])) {
			errs_add(&L->errs, L->path, 1, "out of memory");
			return;
		}
	for (int i = 0; i < cfg->n_backends; i++)
		if (!resolve_path(dir, &cfg->backends[i].tls_ca_file)) {
			errs_add(&L->errs, L->path, 1, "out of memory");
			return;
		}
	if (!check_tls(L))
		return;
	char why[768];
	const char *which = "cert_file";
	if (t->cert_file && t->client_mode != TLS_DISABLE) {
		struct tls_server_settings ss = { t->cert_file, t->key_file, t->ca_file,
						  t->min_protocol, t->ciphers };
		if (!tls_server_ctx_build(&cfg->tls_clients, &ss, why, sizeof(why), &which)) {
			tls_error(L, which, why);
			return;
		}
	}
	for (int i = 0; i < cfg->n_backends; i++) {
		enum tls_mode m = config_backend_tls_mode(cfg, i);
		if (m <= TLS_ALLOW) /* allow: plaintext, as libpq tries first (no retry) */
			continue;
		struct tls_client_settings cs = { m,
						  config_backend_tls_ca(cfg, i),
						  t->server_cert_file,
						  t->server_key_file,
						  t->min_protocol,
						  t->ciphers };
		cfg->tls_backends[i] = tls_client_ctx_build(&cs, why, sizeof(why), &which);
		if (cfg->tls_backends[i])
			continue;
		if (cfg->backends[i].tls_ca_file && strcmp(which, "server_ca_file") == 0) {
			errs_add(&L->errs, L->path, cfg->backends[i].line,
				 "backends[%d].tls_ca_file: %s", i, why);
			return;
		}
		tls_error(L, which, why); /* the same for every backend: said once */
		return;
	}
}

enum tls_mode config_backend_tls_mode(const struct config *cfg, int i)
{
	int own = cfg->backends[i].tls_mode;
	return (enum tls_mode)(own > 0 ? own - 1 : cfg->tls.server_mode);
}

const char *config_backend_tls_ca(const struct config *cfg, int i)
{
	const char *own = cfg->backends[i].tls_ca_file;
	return own ? own : cfg->tls.server_ca_file;
}

void config_backend_libpq_tls(const struct config *cfg, int i, struct libpq_tls *out)
{
	enum tls_mode m = config_backend_tls_mode(cfg, i);
	memset(out, 0, sizeof(*out));
	out->sslmode = tls_mode_names[m];
	if (m == TLS_DISABLE)
		return;
	out->sslrootcert = config_backend_tls_ca(cfg, i);
	out->sslcert = cfg->tls.server_cert_file;
	out->sslkey = cfg->tls.server_key_file;
}

/* The line of key group.name in the file, or 1 when it was not written. */
static int key_line(const struct loader *L, const char *group, const char *name)
{
	int ki = find_key(group, 0, name);
	return ki >= 0 && L->seen[ki] ? L->seen[ki] : 1;
}

/*
 * auth_query needs auth_user, and auth_user's plain-text password: pgrelay logs in as it with
 * libpq, and a SCRAM verifier (or an md5 hash) cannot answer a server's SCRAM challenge. A
 * verifier copied from pg_authid into the users file is exactly what PgBouncer users report in
 * PgBouncer issue #1186 (the lookup connection fails at the server's last step); here the file
 * is refused up front, naming the fix.
 */
static void check_auth_query(struct loader *L)
{
	const struct config *cfg = L->cfg;
	if (!cfg->auth_user) {
		int ki = find_key("auth", 0, "auth_query");
		if (ki >= 0 && L->seen[ki])
			errs_add(&L->errs, L->path, key_line(L, "auth", "auth_query"),
				 "auth.auth_query: needs auth.auth_user (the role that runs it)");
		return;
	}
	int line = key_line(L, "auth", "auth_user");
	if (!cfg->auth_query || !cfg->auth_query[0])
		errs_add(&L->errs, L->path, key_line(L, "auth", "auth_query"),
			 "auth.auth_query: empty; unset auth.auth_user to turn auth_query off");
	if (!cfg->users)
		return; /* the users file's own errors were reported */
	const struct user_entry *e = users_find(cfg->users, cfg->auth_user);
	if (!e)
		errs_add(&L->errs, L->path, line,
			 "auth.auth_user: \"%s\" is not in users_file %s; pgrelay logs in as it "
			 "with the password found there",
			 cfg->auth_user, cfg->users_file);
	else if (e->kind != SECRET_PLAIN)
		errs_add(
			&L->errs, L->path, line,
			"auth.auth_user: \"%s\" has %s in users_file; running auth_query needs its "
			"plain-text password, since a stored hash cannot answer the server's "
			"challenge (PgBouncer issue #1186)",
			cfg->auth_user,
			e->kind == SECRET_SCRAM ? "a SCRAM verifier" : "an md5 hash");
}

struct config *config_load(const char *path, char *err, size_t errcap)
{
	struct loader L = { .errs = { .buf = err, .cap = errcap }, .path = path };
	if (err && errcap)
		err[0] = '\0';
	assert(config_key_count <= MAX_KEYS);

	struct config *cfg = calloc(1, sizeof(*cfg));
	char *dir = dir_of(path);
	if (!cfg || !dir || !(cfg->path = strdup(path))) {
		errs_add(&L.errs, path, 0, "out of memory");
		free(dir);
		config_free(cfg);
		return NULL;
	}
	L.cfg = cfg;
	config_keys_set_defaults(cfg, 0);

	config_t lc;
	config_init(&lc);
	if (dir[0])
		config_set_include_dir(&lc, dir);
	FILE *probe = fopen(path, "r");
	if (!probe) {
		errs_add(&L.errs, path, 0, "cannot open the configuration file: %s",
			 strerror(errno));
	} else {
		fclose(probe);
		if (!config_read_file(&lc, path)) {
			const char *file = config_error_file(&lc);
			if (config_error_type(&lc) == CONFIG_ERR_FILE_IO)
				errs_add(&L.errs, file ? file : path, config_error_line(&lc),
					 "cannot read: %s", config_error_text(&lc));
			else
				errs_add(&L.errs, file ? file : path, config_error_line(&lc), "%s",
					 config_error_text(&lc));
		} else {
			const config_setting_t *root = config_root_setting(&lc);
			parse_members(&L, root, "", 0, -1, cfg, L.seen);
			check_required(&L, root, 0, -1, NULL, cfg, L.seen);
			check_cross(&L);
			load_auth(&L, dir);
			load_tls(&L, dir);
			check_auth_query(&L);
		}
	}
	config_destroy(&lc);
	free(dir);
	if (L.errs.count) {
		config_free(cfg);
		return NULL;
	}
	return cfg;
}

void config_free(struct config *cfg)
{
	if (!cfg)
		return;
	config_keys_free(cfg, 0);
	for (int i = 0; i < cfg->n_backends; i++)
		config_keys_free(&cfg->backends[i], KF_BACKEND);
	if (cfg->users)
		users_free(cfg->users);
	if (cfg->hba)
		hba_free(cfg->hba);
	tls_server_ctx_free(&cfg->tls_clients);
	for (int i = 0; i < CONFIG_MAX_BACKENDS; i++)
		tls_ctx_release(cfg->tls_backends[i]);
	free(cfg->path);
	free(cfg);
}

void config_diff_restart_keys(const struct config *a, const struct config *b, char *out, size_t cap)
{
	size_t len = 0;
	if (cap)
		out[0] = '\0';
	for (size_t i = 0; i < config_key_count && len < cap; i++) {
		const struct key_def *k = &config_keys[i];
		if ((k->flags & KF_BACKEND) || !(k->flags & KF_RESTART) || key_equal(k, a, b))
			continue;
		char path[128];
		key_path(k, -1, path, sizeof(path));
		int n = snprintf(out + len, cap - len, "%s%s", len ? ", " : "", path);
		if (n < 0)
			break;
		len += (size_t)n;
	}
}

int config_primary_backend(const struct config *cfg)
{
	for (int i = 0; i < cfg->n_backends; i++)
		if (cfg->backends[i].flags & BACKEND_FLAG_ALWAYS_PRIMARY)
			return i;
	return 0;
}
