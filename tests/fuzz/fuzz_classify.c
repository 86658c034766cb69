/*
 * libFuzzer harness for the SQL normaliser (src/route/normalize.c) and the classifier
 * (src/route/classify.c with libpg_query, and its cache classify_cache.c) on arbitrary bytes.
 *
 * The input is a Query body's bytes; like client_route.c, the normaliser and the classifier see
 * the text up to the first NUL (the classifier's contract: len == strlen). Then what
 * router_classify_in does: classify the normalised text when normalisation succeeded.
 *
 * Checks:
 *  - normalize_sql's output is NUL-terminated, of the length it says, within cap, and, for a
 *    statement that parses, normalising it again gives it back (one cache entry per shape);
 *  - a cached classifier (small, so entries are evicted all the time) answers exactly as one
 *    without a cache, for the original and for the normalised text;
 *  - the result is well-formed (route in range, rule not NULL, object within its buffer);
 *  - a statement the parser accepts and routes anywhere but to a standby (ROUTE_ANY) is never
 *    sent to a standby after normalisation: a write must not disappear (normalize.h). With
 *    FUZZ_STRICT set in the environment, any change of route or flags between the
 *    original and the normalised text of a statement that parses is a failure, and so is
 *    normalize_sql accepting the raw bytes when they hold a NUL (normalize.h says false), and
 *    so is a normalised text that normalises differently, even for text that does not parse.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "route/classify.h"
#include "route/normalize.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond))                                                                       \
			__builtin_trap();                                                          \
	} while (0)

#define NORMALIZE_CAP (16384 + 1) /* router.h ROUTER_NORMALIZE_MAX + 1 */

/* A fake catalog, deterministic in the name (as tests/unit/test_classify.c's is). */
static int volatility(void *arg, const char *schema, const char *name)
{
	(void)arg;
	unsigned h = 5381;
	for (const char *p = name; *p; p++)
		h = h * 33 + (unsigned char)*p;
	if (schema)
		for (const char *p = schema; *p; p++)
			h = h * 33 + (unsigned char)*p;
	static const int kinds[] = { 'i', 's', 'v', 0 };
	return kinds[h % 4];
}

static struct classifier *cached, *uncached, *cached_raw; /* cached_raw: classify_sql_raw only */
static bool strict;

static void init_once(void)
{
	static const char *const ro[] = { "ro_volatile", "app.ro_func" };
	static const char *const wr[] = { "my_stable_writer", "audit.log_stable" };
	if (cached)
		return;
	struct classify_options o = {
		.read_only_functions = ro,
		.n_read_only_functions = 2,
		.write_functions = wr,
		.n_write_functions = 2,
		.volatility = volatility,
		.cache_entries = 8,
		.cache_max_len = 512,
	};
	cached = classify_new(&o);
	cached_raw = classify_new(&o);
	o.cache_entries = 0;
	uncached = classify_new(&o);
	CHECK(cached && cached_raw && uncached);
	const char *e = getenv("FUZZ_STRICT");
	strict = e && e[0];
}

static void check_result(const struct classify_result *r)
{
	CHECK(r->route >= ROUTE_PRIMARY && r->route <= ROUTE_FOLLOW);
	CHECK(r->inner_route >= ROUTE_PRIMARY && r->inner_route <= ROUTE_FOLLOW);
	CHECK(r->rule != NULL);
#ifdef CLASSIFY_EFFECT_MASK
	CHECK(r->effect != NULL);
	if (!(r->flags & CLASSIFY_SESSION_STATE))
		CHECK(r->effect[0] == '\0');
#endif
	CHECK(memchr(r->object, '\0', sizeof(r->object)) != NULL);
	if ((r->flags & CLASSIFY_PARSE_ERROR) && !(r->flags & CLASSIFY_HINT))
		CHECK(r->route == ROUTE_PRIMARY); /* a hint forces the route even then */
}

static void check_same(const struct classify_result *a, const struct classify_result *b)
{
	CHECK(a->route == b->route && a->inner_route == b->inner_route && a->flags == b->flags);
	CHECK(strcmp(a->rule, b->rule) == 0 && strcmp(a->object, b->object) == 0);
#ifdef CLASSIFY_EFFECT_MASK
	CHECK(strcmp(a->effect, b->effect) == 0);
#endif
}

#ifdef CLASSIFY_EFFECT_MASK
/*
 * The session-effect API of issue 9 (classify.h defines CLASSIFY_EFFECT_MASK with it; the harness
 * builds against older trees without it): classify_sql_raw answers as classify_sql of the
 * normalised text (expect), classify_sql_each gives well-formed per-statement results, and
 * classify_set_value(_nth) stays within its buffers.
 */
static void check_effects(const char *text, size_t tlen, const struct classify_result *expect,
			  const struct classify_result *orig)
{
	static char scratch[NORMALIZE_CAP];
	struct classify_result raw, raw_again;
	classify_sql_raw(cached_raw, text, tlen, scratch, sizeof(scratch), &raw);
	check_result(&raw);
	check_same(&raw, expect);
	classify_sql_raw(cached_raw, text, tlen, scratch, sizeof(scratch), &raw_again);
	check_same(&raw_again, expect);
	classify_sql_raw(uncached, text, tlen, scratch, sizeof(scratch), &raw_again);
	check_same(&raw_again, expect);

	struct classify_result each[4];
	size_t n = classify_sql_each(uncached, text, tlen, each, 4);
	for (size_t i = 0; i < n && i < 4; i++) {
		check_result(&each[i]);
		CHECK(!(each[i].flags & CLASSIFY_MULTI));
	}
	if (n == 0)
		CHECK(orig->flags & CLASSIFY_EMPTY);

	char name[64], value[256];
	bool is_reset = false;
	for (unsigned nth = 0; nth < 3; nth++) {
		bool ok = nth == 0 ? classify_set_value(text, tlen, name, sizeof(name), value,
							sizeof(value), &is_reset)
				   : classify_set_value_nth(text, tlen, nth, name, sizeof(name),
							    value, sizeof(value), &is_reset);
		if (!ok)
			break;
		CHECK(memchr(name, '\0', sizeof(name)) && memchr(value, '\0', sizeof(value)));
		if (is_reset)
			CHECK(value[0] == '\0');
	}
}
#endif

/*
 * classify_plain_command's proof (classify.h): a text it calls plain has no session effect and
 * is no admin statement in the full classification, and is the same command.
 */
static void check_plain(const char *text, size_t len, const struct classify_result *full)
{
	uint8_t cmd = classify_plain_command(text, len);
	if (cmd == CLASSIFY_CMD_NONE)
		return;
	CHECK(!(full->flags & (CLASSIFY_EFFECT_MASK | CLASSIFY_MULTI | CLASSIFY_HINT)));
	if (!(full->flags & CLASSIFY_PARSE_ERROR))
		CHECK(full->cmd == cmd);
	/* A plain write goes to the primary as a write, whatever the routing. */
	uint8_t w = classify_plain_write(text, len);
	CHECK(w == (cmd == CLASSIFY_CMD_OTHER ? CLASSIFY_CMD_NONE : cmd));
	if (w != CLASSIFY_CMD_NONE && !(full->flags & CLASSIFY_PARSE_ERROR)) {
		CHECK(full->route == ROUTE_PRIMARY);
		CHECK((full->flags & ~(uint32_t)CLASSIFY_NODE_LOCAL) == CLASSIFY_WRITE);
		CHECK(strcmp(full->rule, "write statement") == 0);
	}
}

/* Both classifiers on text (len == strlen(text)); the answers must agree. */
static void classify_both(const char *text, size_t len, struct classify_result *out)
{
	struct classify_result a, b;
	classify_sql(cached, text, len, &a);
	classify_sql(uncached, text, len, &b);
	check_result(&a);
	check_result(&b);
	check_same(&a, &b);
	*out = b;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	init_once();
	if (size > 8192)
		return 0;
	static char norm[NORMALIZE_CAP], again[NORMALIZE_CAP];
	/* The raw bytes, in a buffer of exactly their size. */
	char *raw = malloc(size ? size : 1);
	CHECK(raw != NULL);
	memcpy(raw, data, size);
	size_t nlen = 0;
	/* The text as the protocol delivers it: up to the first NUL (client_route.c strnlen). */
	size_t tlen = strnlen(raw, size);
	if (strict && tlen < size) {
		/* normalize.h: false for text with a NUL byte. Known to fail for a NUL inside a
		 * literal, comment or quoted identifier (tests/fuzz/findings/fuzz_classify/);
		 * no caller passes one. */
		CHECK(!normalize_sql(raw, size, norm, sizeof(norm), &nlen));
	}
	bool normalized = normalize_sql(raw, tlen, norm, sizeof(norm), &nlen);
	if (normalized)
		CHECK(nlen < sizeof(norm) && norm[nlen] == '\0' && strlen(norm) == nlen);
	char *text = malloc(tlen + 1);
	CHECK(text != NULL);
	memcpy(text, raw, tlen);
	text[tlen] = '\0';
	struct classify_result orig, via_norm;
	classify_both(text, tlen, &orig);
	check_plain(text, tlen, &orig);
	/* A second time, now (probably) from the cache. */
	struct classify_result again_res;
	classify_both(text, tlen, &again_res);
	check_same(&orig, &again_res);
	if (normalized) {
		classify_both(norm, nlen, &via_norm);
		/*
		 * Normalising the normalised text gives it back, for a statement that parses.
		 * Text that does not parse may merge tokens (a literal then a dollar-quoted one,
		 * 'a'$q$b$q$, gives four quotes: one literal): checked only with FUZZ_STRICT
		 * (tests/fuzz/findings/fuzz_classify/).
		 */
		if (!(orig.flags & CLASSIFY_PARSE_ERROR) || strict) {
			size_t alen = 0;
			CHECK(normalize_sql(norm, nlen, again, sizeof(again), &alen));
			CHECK(alen == nlen && memcmp(again, norm, nlen) == 0);
		}
		if (!(orig.flags & CLASSIFY_PARSE_ERROR)) {
			/* Never a standby for a statement that must not run there. */
			if (orig.route != ROUTE_ANY)
				CHECK(via_norm.route != ROUTE_ANY);
			if (orig.flags & CLASSIFY_WRITE)
				CHECK(via_norm.flags & CLASSIFY_WRITE);
			if (strict)
				CHECK(via_norm.route == orig.route && via_norm.flags == orig.flags);
		}
	}
#ifdef CLASSIFY_EFFECT_MASK
	check_effects(text, tlen, normalized ? &via_norm : &orig, &orig);
#endif
	free(text);
	free(raw);
	return 0;
}
