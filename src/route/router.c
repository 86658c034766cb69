/*
 * Router decisions; see router.h and doc/routing.md.
 */
#include "route/router.h"

#include "route/normalize.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

uint64_t router_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t router_random(struct router *r)
{
	uint64_t x = r->rng;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	r->rng = x;
	return x;
}

/* A uniform double in [0, 1). */
static double router_uniform(struct router *r)
{
	return (double)(router_random(r) >> 11) / (double)(1ull << 53);
}

/* ---- configuration ---------------------------------------------------------------------- */

/* Splits a comma-separated list into trimmed, owned strings. */
static size_t router_split_list(const char *text, char ***out)
{
	*out = NULL;
	if (!text || !*text)
		return 0;
	size_t cap = 1;
	for (const char *p = text; *p; p++)
		cap += *p == ',';
	char **v = calloc(cap, sizeof(*v));
	if (!v)
		return 0;
	size_t n = 0;
	for (const char *p = text; *p;) {
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		const char *s = p, *e = p + len;
		while (s < e && isspace((unsigned char)*s))
			s++;
		while (e > s && isspace((unsigned char)e[-1]))
			e--;
		if (e > s && n < cap)
			v[n++] = strndup(s, (size_t)(e - s));
		p = end ? end + 1 : p + len;
	}
	*out = v;
	return n;
}

static void router_free_list(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

static struct classifier *router_new_classifier(const struct config *cfg,
						struct func_catalog *catalog)
{
	char **ro, **wr;
	size_t n_ro = router_split_list(cfg->load_balance.read_only_function_list, &ro);
	size_t n_wr = router_split_list(cfg->load_balance.write_function_list, &wr);
	struct classify_options o = {
		.read_only_functions = (const char *const *)ro,
		.n_read_only_functions = n_ro,
		.write_functions = (const char *const *)wr,
		.n_write_functions = n_wr,
		.volatility = catalog ? catalog_volatility : NULL,
		.volatility_arg = catalog,
		.cache_entries = (size_t)cfg->load_balance.classify_cache_size,
	};
	struct classifier *c = classify_new(&o);
	router_free_list(ro, n_ro);
	router_free_list(wr, n_wr);
	return c;
}

/* Compiles ^(pattern)$ so that a pattern matches a whole string, as pgpool's do. */
static bool router_compile_anchored(regex_t *re, const char *pat, size_t len, int flags, char *err,
				    size_t errcap)
{
	char *full = malloc(len + 5);
	if (!full) {
		snprintf(err, errcap, "out of memory");
		return false;
	}
	snprintf(full, len + 5, "^(%.*s)$", (int)len, pat);
	int rc = regcomp(re, full, REG_EXTENDED | REG_NOSUB | flags);
	free(full);
	if (rc != 0) {
		char why[128];
		regerror(rc, re, why, sizeof(why));
		snprintf(err, errcap, "bad regular expression \"%.*s\": %s", (int)len, pat, why);
		return false;
	}
	return true;
}

void router_free_redirects(struct redirect_list *l)
{
	for (int i = 0; i < l->n; i++)
		regfree(&l->rules[i].re);
	l->n = 0;
}

/* One entry "pattern:target[(weight)]". */
static bool router_parse_redirect(const char *s, size_t len, struct redirect_rule *rule, char *err,
				  size_t errcap)
{
	const char *colon = NULL;
	for (size_t i = len; i > 0; i--)
		if (s[i - 1] == ':') {
			colon = s + i - 1;
			break;
		}
	if (!colon || colon == s) {
		snprintf(err, errcap, "\"%.*s\": expected pattern:node", (int)len, s);
		return false;
	}
	char target[64];
	size_t tlen = (size_t)(s + len - colon - 1);
	if (tlen == 0 || tlen >= sizeof(target)) {
		snprintf(err, errcap, "\"%.*s\": expected pattern:node", (int)len, s);
		return false;
	}
	memcpy(target, colon + 1, tlen);
	target[tlen] = 0;
	rule->weight = 1.0;
	char *paren = strchr(target, '(');
	if (paren) {
		char *end;
		rule->weight = strtod(paren + 1, &end);
		if (end == paren + 1 || *end != ')' || end[1] ||
		    !(rule->weight >= 0 && rule->weight <= 1)) {
			snprintf(err, errcap, "\"%.*s\": weight must be (0 .. 1)", (int)len, s);
			return false;
		}
		*paren = 0;
	}
	if (strcmp(target, "primary") == 0) {
		rule->target = REDIRECT_PRIMARY;
	} else if (strcmp(target, "standby") == 0) {
		rule->target = REDIRECT_STANDBY;
	} else {
		char *end;
		long id = strtol(target, &end, 10);
		if (end == target || *end || id < 0 || id >= CONFIG_MAX_BACKENDS) {
			snprintf(err, errcap,
				 "\"%.*s\": node must be primary, standby or a node id", (int)len,
				 s);
			return false;
		}
		rule->target = (int)id;
	}
	return router_compile_anchored(&rule->re, s, (size_t)(colon - s), 0, err, errcap);
}

/*
 * Walks the sep-separated items of text, trimmed and non-empty, calling item(arg, p, len, index)
 * for at most max of them. False (with a reason in err) on too many items or when item fails.
 */
static bool router_each_item(const char *text, char sep, int max, const char *what,
			     bool (*item)(void *arg, const char *p, size_t len, int index,
					  char *err, size_t errcap),
			     void *arg, int *count, char *err, size_t errcap)
{
	*count = 0;
	for (const char *p = text ? text : ""; *p;) {
		const char *end = strchr(p, sep);
		size_t len = end ? (size_t)(end - p) : strlen(p);
		const char *q = p;
		while (len && isspace((unsigned char)*q)) {
			q++;
			len--;
		}
		while (len && isspace((unsigned char)q[len - 1]))
			len--;
		if (len) {
			if (*count >= max) {
				snprintf(err, errcap, "more than %d %s", max, what);
				return false;
			}
			if (!item(arg, q, len, *count, err, errcap))
				return false;
			(*count)++;
		}
		if (!end)
			break;
		p = end + 1;
	}
	return true;
}

static bool router_redirect_item(void *arg, const char *p, size_t len, int index, char *err,
				 size_t errcap)
{
	struct redirect_list *out = arg;
	return router_parse_redirect(p, len, &out->rules[index], err, errcap);
}

bool router_parse_redirects(const char *text, struct redirect_list *out, char *err, size_t errcap)
{
	if (router_each_item(text, ',', ROUTER_MAX_REDIRECTS, "entries", router_redirect_item, out,
			     &out->n, err, errcap))
		return true;
	router_free_redirects(out);
	return false;
}

static void router_free_patterns(regex_t *v, int n)
{
	for (int i = 0; i < n; i++)
		regfree(&v[i]);
}

static bool router_pattern_item(void *arg, const char *p, size_t len, int index, char *err,
				size_t errcap)
{
	regex_t *out = arg;
	return router_compile_anchored(&out[index], p, len, REG_ICASE, err, errcap);
}

static bool router_parse_patterns(const char *text, regex_t *out, int *n, char *err, size_t errcap)
{
	if (router_each_item(text, ';', ROUTER_MAX_PATTERNS, "patterns", router_pattern_item, out,
			     n, err, errcap))
		return true;
	router_free_patterns(out, *n);
	return false;
}

/* Everything built from the config, as one unit so that a failure changes nothing. */
struct router_built {
	struct classifier *classifier;
	struct redirect_list by_database, by_app, by_user;
	regex_t patterns[ROUTER_MAX_PATTERNS];
	int n_patterns;
};

static bool router_build(const struct config *cfg, struct router_built *b, char *err, size_t errcap)
{
	const struct load_balance_conf *lb = &cfg->load_balance;
	char why[256];
	memset(b, 0, sizeof(*b));
	if (!router_parse_redirects(lb->database_redirect_preference_list, &b->by_database, why,
				    sizeof(why))) {
		snprintf(err, errcap, "load_balance.database_redirect_preference_list: %s", why);
		return false;
	}
	if (!router_parse_redirects(lb->app_name_redirect_preference_list, &b->by_app, why,
				    sizeof(why))) {
		snprintf(err, errcap, "load_balance.app_name_redirect_preference_list: %s", why);
		router_free_redirects(&b->by_database);
		return false;
	}
	if (!router_parse_redirects(lb->user_redirect_preference_list, &b->by_user, why,
				    sizeof(why))) {
		snprintf(err, errcap, "load_balance.user_redirect_preference_list: %s", why);
		router_free_redirects(&b->by_database);
		router_free_redirects(&b->by_app);
		return false;
	}
	if (!router_parse_patterns(lb->primary_routing_query_pattern_list, b->patterns,
				   &b->n_patterns, why, sizeof(why))) {
		snprintf(err, errcap, "load_balance.primary_routing_query_pattern_list: %s", why);
		router_free_redirects(&b->by_database);
		router_free_redirects(&b->by_app);
		router_free_redirects(&b->by_user);
		return false;
	}
	b->classifier = router_new_classifier(cfg, NULL);
	if (!b->classifier) {
		snprintf(err, errcap, "out of memory creating the SQL classifier");
		router_free_redirects(&b->by_database);
		router_free_redirects(&b->by_app);
		router_free_redirects(&b->by_user);
		router_free_patterns(b->patterns, b->n_patterns);
		return false;
	}
	return true;
}

/* Forgets every database's catalog and classifier (names stay: sessions hold indexes). */
static void router_drop_catalogs(struct router *r)
{
	for (int i = 0; i < r->n_dbs; i++) {
		classify_free(r->dbs[i].classifier);
		catalog_free(r->dbs[i].catalog);
		r->dbs[i].classifier = NULL;
		r->dbs[i].catalog = NULL;
		r->dbs[i].retry_at_ms = 0;
	}
}

static void router_release_built(struct router *r)
{
	classify_free(r->classifier);
	r->classifier = NULL;
	router_free_redirects(&r->by_database);
	router_free_redirects(&r->by_app);
	router_free_redirects(&r->by_user);
	router_free_patterns(r->patterns, r->n_patterns);
	r->n_patterns = 0;
}

static void router_install(struct router *r, const struct config *cfg, struct router_built *b)
{
	r->cfg = cfg;
	r->classifier = b->classifier;
	r->by_database = b->by_database;
	r->by_app = b->by_app;
	r->by_user = b->by_user;
	memcpy(r->patterns, b->patterns, sizeof(r->patterns));
	r->n_patterns = b->n_patterns;
}

bool router_init(struct router *r, const struct config *cfg, char *err, size_t errcap)
{
	memset(r, 0, sizeof(*r));
	struct router_built b;
	if (!router_build(cfg, &b, err, errcap))
		return false;
	router_install(r, cfg, &b);
	r->rng = router_now_ms() * 0x9e3779b97f4a7c15ull ^ (uint64_t)(uintptr_t)r;
	if (!r->rng)
		r->rng = 1;
	router_static_view(cfg, &r->view);
	return true;
}

bool router_reconfigure(struct router *r, const struct config *cfg, char *err, size_t errcap)
{
	struct router_built b;
	if (!router_build(cfg, &b, err, errcap))
		return false;
	router_release_built(r);
	router_install(r, cfg, &b);
	/* Function lists may have changed, and the catalogs are read again (a reload is the way
	 * to make pgrelay see new or altered functions). */
	router_drop_catalogs(r);
	r->generation++;
	return true;
}

void router_free(struct router *r)
{
	router_release_built(r);
	router_drop_catalogs(r);
	for (int i = 0; i < r->n_dbs; i++)
		free(r->dbs[i].name);
	r->n_dbs = 0;
}

int router_db_for(struct router *r, const char *database)
{
	for (int i = 0; i < r->n_dbs; i++)
		if (strcmp(r->dbs[i].name, database) == 0)
			return i;
	if (r->n_dbs >= ROUTER_MAX_DBS)
		return -1;
	char *name = strdup(database);
	if (!name)
		return -1;
	memset(&r->dbs[r->n_dbs], 0, sizeof(r->dbs[0]));
	r->dbs[r->n_dbs].name = name;
	return r->n_dbs++;
}

bool router_db_wants_catalog(const struct router *r, int db, uint64_t now_ms)
{
	if (db < 0 || db >= r->n_dbs)
		return false;
	const struct router_db *d = &r->dbs[db];
	return !d->catalog && !d->loading && now_ms >= d->retry_at_ms;
}

void router_db_loaded(struct router *r, int db, uint64_t generation, struct func_catalog *cat,
		      uint64_t now_ms, uint32_t retry_ms)
{
	struct router_db *d = &r->dbs[db];
	d->loading = false;
	if (!cat || generation != r->generation) {
		/* Failed, or read before a reload that asked for a fresh one. */
		d->retry_at_ms = now_ms + (cat ? 0 : retry_ms);
		catalog_free(cat);
		return;
	}
	struct classifier *cls = router_new_classifier(r->cfg, cat);
	if (!cls) {
		catalog_free(cat);
		d->retry_at_ms = now_ms + retry_ms;
		return;
	}
	classify_free(d->classifier);
	catalog_free(d->catalog);
	d->classifier = cls;
	d->catalog = cat;
}

struct classifier *router_classifier(struct router *r, int db)
{
	if (db >= 0 && db < r->n_dbs && r->dbs[db].classifier)
		return r->dbs[db].classifier;
	return r->classifier;
}

void router_static_view(const struct config *cfg, struct cluster_view *out)
{
	memset(out, 0, sizeof(*out));
	out->seq = 0;
	out->n_nodes = cfg->n_backends;
	out->primary = config_primary_backend(cfg);
	for (int i = 0; i < cfg->n_backends; i++) {
		struct cluster_node *n = &out->nodes[i];
		n->status = NODE_UP;
		n->role = i == out->primary ? NODE_ROLE_PRIMARY : NODE_ROLE_STANDBY;
		n->pg_role = NODE_ROLE_UNKNOWN;
	}
}

void router_set_view(struct router *r, const struct cluster_view *v)
{
	r->view = *v;
}

/* ---- node state ------------------------------------------------------------------------- */

static bool router_is_standby(const struct router *r, int node)
{
	return router_node_usable(r, node) && node != r->view.primary &&
	       r->view.nodes[node].role == NODE_ROLE_STANDBY;
}

/* Lag within delay_threshold / delay_threshold_by_time. */
static bool router_lag_ok(const struct router *r, int node)
{
	const struct load_balance_conf *lb = &r->cfg->load_balance;
	const struct cluster_node *n = &r->view.nodes[node];
	if (lb->delay_threshold && n->replication_delay > lb->delay_threshold)
		return false;
	/* now() - last replayed commit grows on an idle primary too: a standby that replayed all
	 * the primary wrote (no byte behind) is not late, however old its last commit is. */
	if (lb->delay_threshold_by_time_ms && n->has_delay_time && n->replication_delay > 0 &&
	    n->delay_s * 1000.0 > (double)lb->delay_threshold_by_time_ms)
		return false;
	return true;
}

/*
 * Read-your-writes: node has replayed past a primary position sampled after the session's last
 * write ended (that sample bounds the write's commit LSN from above).
 */
static bool router_caught_up(const struct router *r, const struct route_session *s, int node)
{
	if (!s->written_at || !r->cfg->load_balance.read_your_writes)
		return true;
	const struct cluster_view *v = &r->view;
	uint64_t replay = v->nodes[node].replay_lsn;
	for (int i = 0; i < v->n_lsn_samples; i++)
		if (v->lsn_samples[i].at_ms > s->written_at)
			return replay && replay >= v->lsn_samples[i].lsn;
	return false;
}

bool router_standby_fresh(const struct router *r, const struct route_session *s, int node)
{
	return router_is_standby(r, node) && router_lag_ok(r, node) && router_caught_up(r, s, node);
}

/* May node take this session's reads now? */
static bool router_read_ok(const struct router *r, const struct route_session *s, int node)
{
	if (node == r->view.primary)
		return router_node_usable(r, node);
	return router_standby_fresh(r, s, node);
}

double router_lb_weight(const struct router *r, int node)
{
	double sum = 0;
	for (int i = 0; i < r->view.n_nodes && i < r->cfg->n_backends; i++)
		if (router_node_usable(r, i))
			sum += r->cfg->backends[i].weight;
	if (sum <= 0 || node >= r->cfg->n_backends || !router_node_usable(r, node))
		return 0;
	return r->cfg->backends[node].weight / sum;
}

/* Weighted choice among usable nodes (standbys within lag, and the primary). */
static int router_pick_weighted(struct router *r, bool standbys_only)
{
	double sum = 0;
	int n = r->view.n_nodes < r->cfg->n_backends ? r->view.n_nodes : r->cfg->n_backends;
	for (int i = 0; i < n; i++) {
		bool ok = i == r->view.primary ? !standbys_only && router_node_usable(r, i)
					       : router_is_standby(r, i) && router_lag_ok(r, i);
		if (ok)
			sum += r->cfg->backends[i].weight;
	}
	if (sum <= 0)
		return ROUTER_NO_NODE;
	double x = router_uniform(r) * sum;
	int last = ROUTER_NO_NODE;
	for (int i = 0; i < n; i++) {
		bool ok = i == r->view.primary ? !standbys_only && router_node_usable(r, i)
					       : router_is_standby(r, i) && router_lag_ok(r, i);
		if (!ok || r->cfg->backends[i].weight <= 0)
			continue;
		last = i;
		if (x < r->cfg->backends[i].weight)
			return i;
		x -= r->cfg->backends[i].weight;
	}
	return last;
}

/* The usable standby with the least replay lag, or ROUTER_NO_NODE. */
static int router_least_lagging(const struct router *r, const struct route_session *s)
{
	int best = ROUTER_NO_NODE;
	for (int i = 0; i < r->view.n_nodes; i++) {
		if (!router_is_standby(r, i) || !router_caught_up(r, s, i))
			continue;
		if (best < 0 ||
		    r->view.nodes[i].replication_delay < r->view.nodes[best].replication_delay)
			best = i;
	}
	return best;
}

/* ---- sessions --------------------------------------------------------------------------- */

static int router_match_redirect(struct router *r, const struct redirect_list *l, const char *value)
{
	if (!value)
		return -1;
	for (int i = 0; i < l->n; i++) {
		const struct redirect_rule *rule = &l->rules[i];
		if (regexec(&rule->re, value, 0, NULL, 0) != 0)
			continue;
		/* pgpool: the weight is the chance of following the rule for this session. */
		if (rule->weight >= 1.0 || router_uniform(r) < rule->weight)
			return rule->target;
		return -1;
	}
	return -1;
}

void router_session_init(struct router *r, struct route_session *s, enum route_force listener,
			 const char *database, const char *user, const char *application_name)
{
	memset(s, 0, sizeof(*s));
	s->read_node = -1;
	s->txn_node = -1;
	s->failed_node = -1;
	s->listener = (uint8_t)listener;
	s->db = database ? router_db_for(r, database) : -1;
	/* pgpool's precedence: user, then application_name, then database. */
	int t = router_match_redirect(r, &r->by_user, user);
	if (t == -1)
		t = router_match_redirect(r, &r->by_app, application_name);
	if (t == -1)
		t = router_match_redirect(r, &r->by_database, database);
	s->redirect_target = t;
}

void router_session_release(struct route_session *s)
{
	free(s->cursors);
	s->cursors = NULL;
}

/* The session's read node for a new read, choosing or re-choosing it when needed. */
static int router_session_read_node(struct router *r, struct route_session *s, bool standby_only,
				    const char **why)
{
	int primary = router_primary(r);
	if (s->redirect_target == REDIRECT_PRIMARY && !standby_only) {
		*why = "redirect preference list";
		return primary;
	}
	bool per_statement = r->cfg->load_balance.statement_level;
	int node = s->read_node;
	bool keep = node >= 0 && !per_statement && router_node_usable(r, node) &&
		    (!standby_only || node != r->view.primary);
	if (!keep) {
		node = ROUTER_NO_NODE;
		if (s->redirect_target >= 0 && router_node_usable(r, s->redirect_target))
			node = s->redirect_target;
		else if (s->redirect_target == REDIRECT_STANDBY || standby_only)
			node = router_pick_weighted(r, true);
		if (node < 0 && !standby_only)
			node = router_pick_weighted(r, false);
		if (node < 0 && standby_only)
			node = router_least_lagging(r, s);
		/* A one-off standby choice (hint) does not replace the session's balanced node. */
		if (!standby_only || s->read_node < 0 || s->listener == ROUTE_FORCE_STANDBY ||
		    s->forced == ROUTE_FORCE_STANDBY)
			s->read_node = node;
	}
	if (node < 0)
		return standby_only ? ROUTER_NO_NODE : primary;
	if (router_read_ok(r, s, node)) {
		*why = "load balance node";
		return node;
	}
	if (r->cfg->load_balance.prefer_lower_delay_standby || standby_only) {
		int other = router_least_lagging(r, s);
		if (other >= 0 && (router_lag_ok(r, other) || standby_only)) {
			*why = "least lagging standby";
			return other;
		}
	}
	if (standby_only)
		return node;
	*why = router_caught_up(r, s, node) ? "standby lagging" : "read your writes";
	return primary;
}

int router_read_node(struct router *r, struct route_session *s)
{
	const char *why;
	return router_session_read_node(r, s, s->listener == ROUTE_FORCE_STANDBY, &why);
}

void router_classify(struct router *r, const char *sql, size_t len, struct route_facts *out)
{
	router_classify_in(r, -1, sql, len, out);
}

void router_classify_in(struct router *r, int db, const char *sql, size_t len,
			struct route_facts *out)
{
	struct classify_result res;
	/* The raw text is looked up first (one hash pass on a hit); only a miss is normalised
	 * (constants do not change a class: one entry serves every value, normalize.h). */
	classify_sql_raw(router_classifier(r, db), sql, len, r->scratch, sizeof(r->scratch), &res);
	out->route = res.route;
	out->flags = res.flags;
	out->rule = res.rule;
	out->pattern_primary = false;
	out->effect = res.effect;
	out->stay = false;
	out->cmd = res.cmd;
	if ((res.flags & (CLASSIFY_EFFECT_MASK | CLASSIFY_NODE_LOCAL)) || res.route == ROUTE_FOLLOW)
		memcpy(out->object, res.object, sizeof(out->object));
	else
		out->object[0] = 0;
	if (res.route == ROUTE_ANY && r->n_patterns && !(res.flags & CLASSIFY_HINT)) {
		for (int i = 0; i < r->n_patterns; i++)
			if (regexec(&r->patterns[i], sql, 0, NULL, 0) == 0) {
				out->pattern_primary = true;
				out->route = ROUTE_PRIMARY;
				out->rule = "primary_routing_query_pattern_list";
				break;
			}
	}
}

void router_remember_primary(struct router *r, int db, const char *sql, size_t len)
{
	classify_remember_primary(router_classifier(r, db), sql, len, r->scratch,
				  sizeof(r->scratch), "refused by a standby (25006)");
}

static int router_route_rank(enum classify_route route)
{
	switch (route) {
	case ROUTE_PRIMARY:
		return 3;
	case ROUTE_ANY:
		return 2;
	case ROUTE_ALL:
	case ROUTE_FOLLOW:
		return 1;
	}
	return 3;
}

void router_facts_merge(struct route_facts *acc, const struct route_facts *more)
{
	if (router_route_rank(more->route) > router_route_rank(acc->route)) {
		acc->route = more->route;
		acc->rule = more->rule;
	}
	/* The first object that matters: an effect's, or the cursor a FETCH/MOVE follows. */
	if (!(acc->flags & CLASSIFY_EFFECT_MASK) && !acc->object[0] &&
	    ((more->flags & CLASSIFY_EFFECT_MASK) ||
	     (more->route == ROUTE_FOLLOW && more->object[0]))) {
		acc->effect = more->effect;
		memcpy(acc->object, more->object, sizeof(acc->object));
	}
	acc->flags |= more->flags;
	acc->pattern_primary |= more->pattern_primary;
}

static void router_decided(struct route_decision *out, int node, bool read, const char *why)
{
	out->node = node;
	out->read = read;
	out->why = why;
}

uint32_t router_cursor_hash(const char *name)
{
	uint32_t h = 2166136261u; /* FNV-1a: names are the client's own, the ring is tiny */
	for (const unsigned char *p = (const unsigned char *)name; *p; p++)
		h = (h ^ *p) * 16777619u;
	return h ? h : 1;
}

/* The node holding cursor name in the open transaction, or -1. */
static int router_cursor_node(const struct route_session *s, const char *name)
{
	if (!name[0])
		return -1;
	const struct route_cursors *cur = s->cursors;
	if (!cur)
		return -1;
	uint32_t h = router_cursor_hash(name);
	for (int i = 0; i < cur->n; i++)
		if (cur->hash[i] == h)
			return cur->node[i];
	return -1;
}

/* Out of memory, the cursor is not remembered: its FETCH follows the transaction. */
static void router_remember_cursor(struct route_session *s, uint32_t h, int node)
{
	if (!s->cursors && !(s->cursors = calloc(1, sizeof(*s->cursors))))
		return;
	struct route_cursors *cur = s->cursors;
	for (int i = 0; i < cur->n; i++)
		if (cur->hash[i] == h) {
			cur->node[i] = (int8_t)node;
			return;
		}
	int i = cur->n < ROUTER_MAX_CURSORS ? cur->n++ : cur->next;
	cur->next = (uint8_t)((i + 1) % ROUTER_MAX_CURSORS);
	cur->hash[i] = h;
	cur->node[i] = (int8_t)node;
}

/* Inside an open transaction. */
static void router_decide_in_txn(struct router *r, const struct route_session *s,
				 const struct route_facts *f, int current,
				 struct route_decision *out)
{
	int primary = router_primary(r);
	int txn_node = s->txn_node >= 0 ? s->txn_node : current;
	out->wrote = f->flags & CLASSIFY_WRITE;
	if (s->txn_failed) {
		/* Only ROLLBACK works now, and it must reach where the error happened. */
		int node = s->failed_node >= 0 ? s->failed_node : txn_node;
		router_decided(out, node >= 0 ? node : primary, false, "failed transaction");
		return;
	}
	/* A cursor or a portal lives on the node that opened it. */
	int holder = f->route == ROUTE_FOLLOW ? router_cursor_node(s, f->object) : -1;
	if (holder < 0 && f->stay && current >= 0)
		holder = current;
	if (holder >= 0 && router_node_usable(r, holder)) {
		router_decided(out, holder, false, f->stay ? "portal" : "cursor");
		return;
	}
	int mode = r->cfg->load_balance.disable_on_write;
	bool pin_after = (mode == LB_ON_WRITE_TRANS_TRANSACTION || mode == LB_ON_WRITE_ALWAYS) &&
			 (f->flags & CLASSIFY_WRITE);
	if (txn_node < 0 || txn_node == primary || s->txn_on_primary) {
		out->primary_only_after = pin_after;
		router_decided(out, primary, false, "transaction on the primary");
		return;
	}
	if (f->route == ROUTE_PRIMARY) {
		out->join_primary = !s->primary_in_txn;
		out->primary_joins = true;
		out->txn_moves = mode != LB_ON_WRITE_OFF;
		out->primary_only_after = pin_after;
		router_decided(out, primary, false, f->rule);
		return;
	}
	/* Reads and transaction control stay where the transaction reads. After a write with
	 * disable_load_balance_on_write = off, control statements go to the primary, which holds
	 * what matters (the writes); reads keep going to the read node. */
	if (f->route == ROUTE_ANY || !s->primary_in_txn)
		router_decided(out, txn_node, f->route == ROUTE_ANY, "transaction read node");
	else
		router_decided(out, primary, false, "transaction on the primary");
}

void router_decide(struct router *r, struct route_session *s, const struct route_facts *f,
		   int current, struct route_decision *out)
{
	memset(out, 0, sizeof(*out));
	out->txn_node = -1;
	int primary = router_primary(r);
	bool lb = r->cfg->load_balance.enabled;
	enum route_force force =
		s->forced != ROUTE_FORCE_AUTO ? (enum route_force)s->forced : s->listener;
	bool hint = f->flags & CLASSIFY_HINT;
	/* A primary hint is a route like a write's (a transaction must move with it); a standby
	 * hint forces a standby outside transactions. */
	if (hint && f->route == ROUTE_ANY && !s->in_txn)
		force = ROUTE_FORCE_STANDBY;
	out->starts_txn = !s->in_txn && (f->flags & CLASSIFY_TXN_BEGIN);

	if (force == ROUTE_FORCE_PRIMARY) {
		router_decided(out, primary, false,
			       hint ? "hint" : "session routed to the primary");
		out->wrote = f->flags & CLASSIFY_WRITE;
		if (out->starts_txn) {
			out->txn_node = primary;
			out->primary_joins = true;
		}
		return;
	}
	if (force == ROUTE_FORCE_STANDBY) {
		if (s->in_txn && s->txn_node >= 0) {
			router_decided(out, s->txn_node, f->route == ROUTE_ANY,
				       "transaction read node");
			return;
		}
		const char *why = "standby";
		int node = router_session_read_node(r, s, true, &why);
		router_decided(out, node, f->route == ROUTE_ANY, hint ? "hint" : why);
		if (out->starts_txn)
			out->txn_node = node;
		return;
	}
	if ((f->flags & CLASSIFY_CURSOR_DECLARE) && !(f->flags & CLASSIFY_CURSOR_HOLD))
		out->declares_cursor = router_cursor_hash(f->object);
	if (s->in_txn) {
		router_decide_in_txn(r, s, f, current, out);
		return;
	}
	/* Outside a transaction. */
	if (f->route == ROUTE_PRIMARY || !lb || s->primary_only ||
	    (f->flags & (CLASSIFY_TXN_SERIALIZABLE | CLASSIFY_TXN_2PC))) {
		if (f->route == ROUTE_PRIMARY) {
			out->wrote = f->flags & CLASSIFY_WRITE;
			out->primary_only_after =
				out->wrote &&
				r->cfg->load_balance.disable_on_write == LB_ON_WRITE_ALWAYS;
		}
		const char *why = f->route == ROUTE_PRIMARY ? f->rule
				  : !lb			    ? "load balancing off"
				  : s->primary_only	    ? "session reads from the primary"
							    : "serializable";
		router_decided(out, primary, false, why);
		if (out->starts_txn) {
			out->txn_node = primary;
			out->primary_joins = true;
		}
		return;
	}
	if (f->route == ROUTE_ANY || out->starts_txn) {
		const char *why = "load balance node";
		int node = router_session_read_node(r, s, false, &why);
		router_decided(out, node, f->route == ROUTE_ANY, why);
		if (out->starts_txn) {
			out->txn_node = node;
			out->primary_joins = node == primary;
		}
		return;
	}
	/* SET, DISCARD, FETCH... outside a transaction: where the session is, else the primary. */
	router_decided(out, current >= 0 && router_node_usable(r, current) ? current : primary,
		       false, "session state");
}

void router_commit(struct router *r, struct route_session *s, const struct route_decision *d)
{
	if (d->wrote)
		s->wrote = true;
	if (d->primary_joins)
		s->primary_in_txn = true;
	if (d->txn_moves)
		s->txn_on_primary = true;
	if (d->primary_only_after)
		s->primary_only = true;
	if (d->txn_node >= 0)
		s->txn_node = d->txn_node;
	if (d->declares_cursor && d->node >= 0)
		router_remember_cursor(s, d->declares_cursor, d->node);
	if (d->node >= 0 && d->node < CONFIG_MAX_BACKENDS) {
		if (d->read) {
			r->select_cnt[d->node]++;
			s->read_count++;
		} else {
			r->write_cnt[d->node]++;
		}
	}
}

void router_on_ready(struct router *r, struct route_session *s, int node, char status,
		     uint64_t now_ms)
{
	(void)node;
	if (status == 'T' || status == 'E') {
		s->in_txn = true;
		if (status == 'E' && !s->txn_failed)
			s->failed_node = node;
		s->txn_failed = status == 'E';
		if (s->txn_node < 0)
			s->txn_node = node;
		if (node == r->view.primary)
			s->primary_in_txn = true;
		return;
	}
	/* Idle: the transaction (explicit or implicit) is over. */
	if (s->wrote && r->cfg->load_balance.read_your_writes)
		s->written_at = now_ms;
	s->wrote = false;
	s->in_txn = false;
	s->txn_failed = false;
	s->failed_node = -1;
	s->txn_node = -1;
	s->txn_on_primary = false;
	s->primary_in_txn = false;
	if (s->cursors)
		s->cursors->n = s->cursors->next = 0;
}
