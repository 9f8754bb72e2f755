/*
 * tests/unit/test_histogram.c — lib/histogram: Prometheus `le` buckets.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "histogram.h"

static const double bounds[] = {0.001, 0.01, 0.1, 1};

static void test_observe_le_buckets(void **state)
{
	(void)state;
	struct wp_histogram h;
	assert_int_equal(wp_histogram_init(&h, bounds, 4), 0);
	wp_histogram_observe(&h, 0.001); /* equal to a bound: in that bucket (le) */
	wp_histogram_observe(&h, 0.0005);
	wp_histogram_observe(&h, 0.05);
	wp_histogram_observe(&h, 1.0);
	wp_histogram_observe(&h, 7.5); /* above every bound: +Inf only */
	assert_int_equal(wp_histogram_cumulative(&h, 0), 2);
	assert_int_equal(wp_histogram_cumulative(&h, 1), 2);
	assert_int_equal(wp_histogram_cumulative(&h, 2), 3);
	assert_int_equal(wp_histogram_cumulative(&h, 3), 4);
	assert_int_equal(wp_histogram_cumulative(&h, 4), 5); /* +Inf == count */
	assert_int_equal(h.count, 5);
	assert_true(h.sum > 8.5514 && h.sum < 8.5516);
}

static void test_cumulative_never_decreases(void **state)
{
	(void)state;
	struct wp_histogram h;
	assert_int_equal(wp_histogram_init(&h, bounds, 4), 0);
	for (int i = 0; i < 1000; i++)
		wp_histogram_observe(&h, (double)((i * 7919) % 2000) / 1000.0);
	uint64_t prev = 0;
	for (size_t i = 0; i <= 4; i++) {
		uint64_t c = wp_histogram_cumulative(&h, i);
		assert_true(c >= prev);
		prev = c;
	}
	assert_int_equal(prev, 1000);
}

static void test_init_rejects_bad_bounds(void **state)
{
	(void)state;
	struct wp_histogram h;
	static const double down[] = {1, 0.5};
	static const double same[] = {1, 1};
	double many[WP_HIST_MAX_BUCKETS + 1];
	for (size_t i = 0; i < WP_HIST_MAX_BUCKETS + 1; i++)
		many[i] = (double)i;
	assert_int_equal(wp_histogram_init(&h, down, 2), -EINVAL);
	assert_int_equal(wp_histogram_init(&h, same, 2), -EINVAL);
	assert_int_equal(wp_histogram_init(&h, bounds, 0), -EINVAL);
	assert_int_equal(wp_histogram_init(&h, many, WP_HIST_MAX_BUCKETS + 1), -EINVAL);
	assert_int_equal(wp_histogram_init(&h, many, WP_HIST_MAX_BUCKETS), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_observe_le_buckets),
	    cmocka_unit_test(test_cumulative_never_decreases),
	    cmocka_unit_test(test_init_rejects_bad_bounds),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
