/*
 * The cancel-key map (src/pool/cancel.c): pids are unique among live sessions, a key must match,
 * removed sessions are not found, and the table keeps working through growth and tombstones.
 * The map reads pid and key from the client itself, so the clients here are zeroed structs that
 * nothing else touches.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>

#include "pool/cancel.h"
#include "pool/client.h"

#define N 5000

static struct client *clients;

static int setup(void **state)
{
	(void)state;
	clients = calloc(2 * N, sizeof(*clients));
	return clients ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	free(clients);
	return 0;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

static void test_add_find_remove(void **state)
{
	(void)state;
	struct cancel_map m;
	assert_true(cancel_map_init(&m));
	for (int i = 0; i < N; i++)
		assert_true(cancel_map_add(&m, &clients[i]));
	assert_int_equal(m.live, N);
	assert_true(m.cap * 7 >= m.used * 10); /* at most 70 % full */

	uint32_t *pids = malloc(N * sizeof(*pids));
	assert_non_null(pids);
	for (int i = 0; i < N; i++) {
		struct client *c = &clients[i];
		assert_int_not_equal(c->cancel_pid, 0);
		pids[i] = c->cancel_pid;
		assert_ptr_equal(cancel_map_find(&m, c->cancel_pid, c->cancel_key), c);
		assert_null(cancel_map_find(&m, c->cancel_pid, c->cancel_key ^ 1u));
	}
	qsort(pids, N, sizeof(*pids), cmp_u32);
	for (int i = 1; i < N; i++)
		assert_int_not_equal(pids[i - 1], pids[i]);
	free(pids);

	/* Every other one leaves: not found any more, the rest still are. */
	for (int i = 0; i < N; i += 2)
		cancel_map_remove(&m, &clients[i]);
	assert_int_equal(m.live, N / 2);
	for (int i = 0; i < N; i++) {
		struct client *c = &clients[i];
		struct client *found = cancel_map_find(&m, c->cancel_pid, c->cancel_key);
		if (i % 2)
			assert_ptr_equal(found, c);
		else
			assert_null(found);
	}
	/* Removing twice, or a client the map does not hold, changes nothing. */
	cancel_map_remove(&m, &clients[0]);
	assert_int_equal(m.live, N / 2);

	/* New sessions reuse the tombstoned table (rebuilt as it fills): all live ones found. */
	for (int i = N; i < 2 * N; i++)
		assert_true(cancel_map_add(&m, &clients[i]));
	assert_int_equal(m.live, N / 2 + N);
	for (int i = 1; i < 2 * N; i += (i < N ? 2 : 1)) {
		struct client *c = &clients[i];
		assert_ptr_equal(cancel_map_find(&m, c->cancel_pid, c->cancel_key), c);
	}
	assert_null(cancel_map_find(&m, 0, 0));
	cancel_map_destroy(&m);
}

/* Sessions come and go for a long time: the table does not grow with the total, only with the
 * live ones (tombstones are dropped when it is rebuilt). */
static void test_churn_keeps_the_table_small(void **state)
{
	(void)state;
	struct cancel_map m;
	assert_true(cancel_map_init(&m));
	size_t cap0 = m.cap;
	for (int round = 0; round < 200; round++) {
		for (int i = 0; i < 100; i++)
			assert_true(cancel_map_add(&m, &clients[i]));
		for (int i = 0; i < 100; i++)
			cancel_map_remove(&m, &clients[i]);
	}
	assert_int_equal(m.live, 0);
	assert_int_equal(m.cap, cap0);
	cancel_map_destroy(&m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_add_find_remove),
		cmocka_unit_test(test_churn_keeps_the_table_small),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
