/*
 * The outstanding-request FIFO (src/pool/outstanding.c): table-driven conversations. Each case
 * is what pgrelay sent to the backend (requests, '*' marking injected ones) and what the backend
 * answered, with the verdict expected for each answer: f forward, s skip, v violation.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "pool/outstanding.h"

struct conversation {
	const char *name;
	const char *sent;     /* frontend types; '*' before a type marks it injected */
	const char *answers;  /* backend types */
	const char *verdicts; /* one per answer: f, s, v */
	int left;	      /* entries still outstanding at the end */
};

static const struct conversation cases[] = {
	{ "simple query", "Q", "TDDCZ", "fffff", 0 },
	{ "simple query, two statements", "Q", "TDCTDCZ", "fffffff", 0 },
	{ "error in simple query", "Q", "EZ", "ff", 0 },
	{ "extended", "PBDES", "12TDCZ", "ffffff", 0 },
	{ "extended, describe statement", "PDS", "1tTZ", "ffff", 0 },
	{ "extended, no data", "PBDES", "12nCZ", "fffff", 0 },
	{ "portal suspended", "BEES", "2DsDCZ", "ffffff", 0 },
	{ "injected parse hidden", "*PBES", "12DCZ", "sffff", 0 },
	{ "injected close then parse", "*C*PBES", "312CZ", "ssfff", 0 },
	{ "error drops the rest until sync", "PBES", "EZ", "ff", 0 },
	{ "error in injected parse reaches the client", "*PBES", "EZ", "ff", 0 },
	{ "pipelined syncs", "PBESBES", "12CZ2CZ", "fffffff", 0 },
	{ "error then next pipeline answered", "PBESBES", "EZ2CZ", "fffff", 0 },
	{ "hidden set query", "*QQ", "CZCZ", "ssff", 0 },
	{ "hidden query error stays hidden", "*Q", "EZ", "ss", 0 },
	{ "copy in", "Q", "GCZ", "fff", 0 },
	{ "copy out", "Q", "HddcCZ", "ffffff", 0 },
	{ "function call", "F", "VZ", "ff", 0 },
	{ "async messages", "Q", "NASCZ", "fffff", 0 },
	{ "unasked ready", "", "Z", "v", 0 },
	{ "unasked parse complete", "", "1", "v", 0 },
	{ "fatal with nothing asked", "", "E", "f", 0 },
	{ "wrong completion", "P", "2", "v", 1 },
	{ "outstanding left", "PB", "1", "f", 1 },
};

static void run_conversation(const struct conversation *cv)
{
	struct req_queue q;
	req_queue_init(&q);
	for (const char *p = cv->sent; *p; p++) {
		bool skip = false;
		if (*p == '*') {
			skip = true;
			p++;
		}
		uint8_t target = *p == 'D' ? (p[1] == 'S' || p[1] == 0 ? 'S' : 'P') : 0;
		/* 'D' in these strings is a portal Describe unless a statement describe is meant:
		 * the statement case is written "PDS" (Describe right after Parse). */
		if (*p == 'D')
			target = p > cv->sent && p[-1] == 'P' ? 'S' : 'P';
		int kind = req_kind_for_frontend((uint8_t)*p, target);
		if (kind >= 0)
			assert_true(req_push(&q, (enum req_kind)kind, skip));
	}
	size_t n = strlen(cv->answers);
	assert_int_equal(n, strlen(cv->verdicts));
	for (size_t i = 0; i < n; i++) {
		enum req_verdict v = req_on_backend_message(&q, (uint8_t)cv->answers[i]);
		char got = v == REQ_FORWARD ? 'f' : v == REQ_SKIP ? 's' : 'v';
		if (got != cv->verdicts[i])
			fail_msg("%s: answer %zu '%c': got %c, want %c", cv->name, i,
				 cv->answers[i], got, cv->verdicts[i]);
	}
	if ((int)q.count != cv->left)
		fail_msg("%s: %u outstanding, want %d", cv->name, q.count, cv->left);
	req_queue_free(&q);
}

static void test_conversations(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		run_conversation(&cases[i]);
}

/* The kind each frontend type byte creates (a table in outstanding.c), for every byte. */
static void test_kind_for_every_type(void **state)
{
	(void)state;
	for (int t = 0; t < 256; t++) {
		for (int target = 0; target < 2; target++) {
			uint8_t tgt = target ? 'S' : 'P';
			int want = -1;
			switch (t) {
			case 'P':
				want = REQ_PARSE;
				break;
			case 'B':
				want = REQ_BIND;
				break;
			case 'C':
				want = REQ_CLOSE;
				break;
			case 'D':
				want = tgt == 'S' ? REQ_DESCRIBE_STMT : REQ_DESCRIBE_PORTAL;
				break;
			case 'E':
				want = REQ_EXECUTE;
				break;
			case 'S':
				want = REQ_SYNC;
				break;
			case 'Q':
				want = REQ_QUERY;
				break;
			case 'F':
				want = REQ_FUNCTION;
				break;
			default:
				break;
			}
			assert_int_equal(req_kind_for_frontend((uint8_t)t, tgt), want);
		}
	}
}

/* After an error with no Sync queued, what the client sends before its Sync gets no answer. */
static void test_discard_until_sync(void **state)
{
	(void)state;
	struct req_queue q;
	req_queue_init(&q);
	assert_true(req_push(&q, REQ_PARSE, false));
	assert_int_equal(req_on_backend_message(&q, 'E'), REQ_FORWARD);
	assert_true(q.discarding);
	assert_true(req_push(&q, REQ_BIND, false));
	assert_true(req_push(&q, REQ_EXECUTE, false));
	assert_int_equal(q.count, 0);
	assert_true(req_push(&q, REQ_SYNC, false));
	assert_false(q.discarding);
	assert_int_equal(req_on_backend_message(&q, 'Z'), REQ_FORWARD);
	assert_true(req_queue_empty(&q));
	req_queue_free(&q);
}

/* An error that makes the server skip an injected request is reported (stmt maps go unsure). */
static void test_error_drops_injected(void **state)
{
	(void)state;
	struct req_queue q;
	req_queue_init(&q);
	assert_true(req_push(&q, REQ_BIND, false));
	assert_true(req_push(&q, REQ_PARSE, true));
	assert_true(req_push(&q, REQ_BIND, false));
	assert_true(req_push(&q, REQ_SYNC, false));
	assert_int_equal(req_on_backend_message(&q, 'E'), REQ_FORWARD);
	assert_true(q.dropped_injected);
	assert_int_equal(req_on_backend_message(&q, 'Z'), REQ_FORWARD);
	req_queue_free(&q);
}

/* A Query behind a failed extended message is skipped by the server too. */
static void test_query_behind_error_dropped(void **state)
{
	(void)state;
	struct req_queue q;
	req_queue_init(&q);
	assert_true(req_push(&q, REQ_BIND, false));
	assert_true(req_push(&q, REQ_QUERY, false));
	assert_true(req_push(&q, REQ_SYNC, false));
	assert_int_equal(req_on_backend_message(&q, 'E'), REQ_FORWARD);
	assert_int_equal(q.count, 1);
	assert_int_equal(req_on_backend_message(&q, 'Z'), REQ_FORWARD);
	assert_true(req_queue_empty(&q));
	req_queue_free(&q);
}

/* The ring grows past its first size and keeps order across the wrap. */
static void test_growth_and_wrap(void **state)
{
	(void)state;
	struct req_queue q;
	req_queue_init(&q);
	for (int round = 0; round < 3; round++) {
		for (int i = 0; i < 100; i++)
			assert_true(req_push(&q, i % 2 ? REQ_SYNC : REQ_PARSE, i % 4 == 0));
		for (int i = 0; i < 100; i++) {
			enum req_verdict v = req_on_backend_message(&q, i % 2 ? 'Z' : '1');
			assert_int_equal(v, i % 4 == 0 ? REQ_SKIP : REQ_FORWARD);
		}
		assert_true(req_queue_empty(&q));
	}
	req_queue_free(&q);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_conversations),
		cmocka_unit_test(test_kind_for_every_type),
		cmocka_unit_test(test_discard_until_sync),
		cmocka_unit_test(test_query_behind_error_dropped),
		cmocka_unit_test(test_error_drops_injected),
		cmocka_unit_test(test_growth_and_wrap),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
