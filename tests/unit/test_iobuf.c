/*
 * The read-buffer cache (src/net/iobuf.c): buffers a load no longer takes leave the cache
 * over a few periods (iobuf_pool_trim), down to IOBUF_POOL_FLOOR; those over IOBUF_POOL_KEEP
 * go back to malloc at once; n_released counts both.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>

#include "net/iobuf.h"

static void take_and_return(struct iobuf_pool *p, uint32_t n)
{
	struct iobuf **held = calloc(n, sizeof(*held));
	assert_non_null(held);
	for (uint32_t i = 0; i < n; i++)
		assert_non_null(held[i] = iobuf_get(p));
	for (uint32_t i = 0; i < n; i++)
		iobuf_put(p, held[i]);
	free(held);
}

static void test_unused_buffers_leave_over_a_few_periods(void **state)
{
	(void)state;
	struct iobuf_pool p;
	iobuf_pool_init(&p);
	take_and_return(&p, 200); /* a burst: 200 at once */
	assert_int_equal(p.n_free, 200);
	assert_int_equal(p.n_live, 0);
	/* The burst's period needed them all: nothing leaves yet. */
	assert_int_equal(iobuf_pool_trim(&p), 0);
	/* Then nobody takes any: half of what is over the floor leaves each period. */
	assert_int_equal(iobuf_pool_trim(&p), (200 - IOBUF_POOL_FLOOR + 1) / 2);
	uint32_t left = p.n_free;
	for (int i = 0; i < 20; i++)
		(void)iobuf_pool_trim(&p);
	assert_int_equal(p.n_free, IOBUF_POOL_FLOOR);
	assert_int_equal(p.n_released, 200 - IOBUF_POOL_FLOOR);
	assert_true(left > IOBUF_POOL_FLOOR);
	iobuf_pool_destroy(&p);
}

static void test_buffers_in_use_are_kept(void **state)
{
	(void)state;
	struct iobuf_pool p;
	iobuf_pool_init(&p);
	take_and_return(&p, 100);
	(void)iobuf_pool_trim(&p);
	/* A steady load takes 80 at once every period: at most 20 were unused, under the floor
	 * plus what it needs, so the 80 it uses stay. */
	for (int i = 0; i < 10; i++) {
		take_and_return(&p, 80);
		(void)iobuf_pool_trim(&p);
	}
	assert_true(p.n_free >= 80);
	iobuf_pool_destroy(&p);
}

static void test_over_keep_goes_back_at_once(void **state)
{
	(void)state;
	struct iobuf_pool p;
	iobuf_pool_init(&p);
	take_and_return(&p, IOBUF_POOL_KEEP + 10);
	assert_int_equal(p.n_free, IOBUF_POOL_KEEP);
	assert_int_equal(p.n_released, 10);
	iobuf_pool_destroy(&p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_unused_buffers_leave_over_a_few_periods),
		cmocka_unit_test(test_buffers_in_use_are_kept),
		cmocka_unit_test(test_over_keep_goes_back_at_once),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
