/* tests/unit/test_backoff.c — lib/backoff: validation, growth, cap and jitter spread. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>

#include "backoff.h"

/* Deterministic random sources injected through wp_random_fn. */
static double rnd_const(void *ctx)
{
	return *(const double *)ctx;
}

/* 64-bit LCG (Knuth MMIX constants), top 53 bits as a fraction in [0, 1). */
static double rnd_lcg(void *ctx)
{
	uint64_t *s = ctx;

	*s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
	return (double)(*s >> 11) / 9007199254740992.0;
}

static void check_rejects(struct wp_backoff b, const char *want)
{
	const char *why = NULL;

	assert_int_equal(wp_backoff_check(&b, &why), -EINVAL);
	assert_non_null(why);
	assert_string_equal(why, want);
}

static void check_accepts(struct wp_backoff b)
{
	const char *why = NULL;

	assert_int_equal(wp_backoff_check(&b, &why), 0);
}

static void test_check(void **state)
{
	const struct wp_backoff ok = {500, 30000, 1.6, 0.2};
	struct wp_backoff b;

	(void)state;
	check_accepts(ok);
	b = ok, b.initial_ms = 0;
	check_rejects(b, "initial must be greater than 0");
	b = ok, b.max_ms = 499;
	check_rejects(b, "max must be at least initial");
	b = ok, b.max_ms = 500;
	check_accepts(b);
	b = ok, b.multiplier = 0.999;
	check_rejects(b, "multiplier must be between 1.0 and 100.0");
	b = ok, b.multiplier = 100.001;
	check_rejects(b, "multiplier must be between 1.0 and 100.0");
	b = ok, b.multiplier = NAN;
	check_rejects(b, "multiplier must be between 1.0 and 100.0");
	b = ok, b.multiplier = INFINITY;
	check_rejects(b, "multiplier must be between 1.0 and 100.0");
	b = ok, b.multiplier = 1.0;
	check_accepts(b);
	b = ok, b.multiplier = 100.0;
	check_accepts(b);
	b = ok, b.jitter = -0.01;
	check_rejects(b, "jitter must be a fraction in [0, 1)");
	b = ok, b.jitter = 1.0;
	check_rejects(b, "jitter must be a fraction in [0, 1)");
	b = ok, b.jitter = NAN;
	check_rejects(b, "jitter must be a fraction in [0, 1)");
	b = ok, b.jitter = 0.0;
	check_accepts(b);
	b = ok, b.jitter = 0.999;
	check_accepts(b);
}

static void test_growth_and_cap(void **state)
{
	const struct wp_backoff b = {100, 10000, 2.0, 0.0};
	const struct wp_backoff g = {500, 30000, 1.6, 0.2};

	(void)state;
	assert_int_equal(wp_backoff_base(&b, 0), 100);
	assert_int_equal(wp_backoff_base(&b, 1), 200);
	assert_int_equal(wp_backoff_base(&b, 2), 400);
	assert_int_equal(wp_backoff_base(&b, 6), 6400);
	assert_int_equal(wp_backoff_base(&b, 7), 10000); /* 12800 capped */
	assert_int_equal(wp_backoff_base(&b, 8), 10000);

	assert_int_equal(wp_backoff_base(&g, 0), 500);
	assert_int_equal(wp_backoff_base(&g, 1), 800);
	assert_int_equal(wp_backoff_base(&g, 2), 1280);
	assert_int_equal(wp_backoff_base(&g, 3), 2048);
	/* Monotonic up to the cap, and the cap is reached. */
	for (unsigned n = 1; n < 64; n++)
		assert_true(wp_backoff_base(&g, n) >= wp_backoff_base(&g, n - 1));
	assert_int_equal(wp_backoff_base(&g, 63), 30000);
}

static void test_huge_attempts(void **state)
{
	const struct wp_backoff b = {500, 30000, 1.6, 0.2};
	const struct wp_backoff big = {1, UINT64_MAX / 2, 100.0, 0.0};
	const struct wp_backoff flat = {500, 500, 1.0, 0.0};
	double half = 0.5;

	(void)state;
	assert_int_equal(wp_backoff_base(&b, UINT_MAX), 30000);
	assert_int_equal(wp_backoff_base(&b, UINT_MAX - 1), 30000);
	assert_int_equal(wp_backoff_delay(&b, UINT_MAX, NULL, NULL), 30000);
	assert_int_equal(wp_backoff_delay(&b, UINT_MAX, rnd_const, &half), 30000);
	/* A cap near the top of uint64_t: no wrap-around to small delays. */
	assert_true(wp_backoff_base(&big, UINT_MAX) >= UINT64_MAX / 4);
	assert_true(wp_backoff_base(&big, 30) >= wp_backoff_base(&big, 3));
	/* initial == max with multiplier 1.0 is already at the cap. */
	assert_int_equal(wp_backoff_base(&flat, UINT_MAX), 500);
}

/* multiplier 1.0 with initial < max never reaches the cap: the base must
 * still be computed in constant time (a growth loop would spin 2^32 times). */
static void test_huge_attempt_multiplier_one(void **state)
{
	const struct wp_backoff b = {500, 30000, 1.0, 0.0};

	(void)state;
	assert_int_equal(wp_backoff_base(&b, UINT_MAX), 500);
}

static void test_no_jitter_without_rnd(void **state)
{
	const struct wp_backoff b = {500, 30000, 1.6, 0.9};
	const struct wp_backoff nj = {500, 30000, 1.6, 0.0};
	double one_ish = 0.999;

	(void)state;
	for (unsigned n = 0; n < 20; n++) {
		assert_int_equal(wp_backoff_delay(&b, n, NULL, NULL), wp_backoff_base(&b, n));
		/* jitter 0 ignores the random source */
		assert_int_equal(wp_backoff_delay(&nj, n, rnd_const, &one_ish), wp_backoff_base(&nj, n));
	}
}

static void test_jitter_endpoints(void **state)
{
	const struct wp_backoff b = {1000, 30000, 2.0, 0.2};
	double lo = 0.0, mid = 0.5, hi = nextafter(1.0, 0.0);

	(void)state;
	/* u = 2r - 1: r = 0 gives base * 0.8, r = 0.5 gives base, r -> 1 gives base * 1.2 */
	assert_int_equal(wp_backoff_delay(&b, 0, rnd_const, &lo), 800);
	assert_int_equal(wp_backoff_delay(&b, 0, rnd_const, &mid), 1000);
	assert_int_equal(wp_backoff_delay(&b, 0, rnd_const, &hi), 1200);
	assert_int_equal(wp_backoff_delay(&b, 10, rnd_const, &lo), 24000);
	assert_int_equal(wp_backoff_delay(&b, 10, rnd_const, &hi), 36000);
}

static void test_jitter_bounds_and_spread(void **state)
{
	const struct wp_backoff b = {500, 30000, 1.6, 0.2};
	uint64_t seed = 42;

	(void)state;
	for (unsigned n = 0; n < 16; n++) {
		double base = (double)wp_backoff_base(&b, n);
		uint64_t lo = (uint64_t)floor(base * (1.0 - b.jitter));
		uint64_t hi = (uint64_t)ceil(base * (1.0 + b.jitter));
		uint64_t min = UINT64_MAX, max = 0;
		double sum = 0;
		const int draws = 20000;

		for (int i = 0; i < draws; i++) {
			uint64_t d = wp_backoff_delay(&b, n, rnd_lcg, &seed);
			assert_true(d >= lo);
			assert_true(d <= hi);
			min = d < min ? d : min;
			max = d > max ? d : max;
			sum += (double)d;
		}
		/* The whole band is used, both ends within 0.5% of base... */
		assert_true((double)(min - lo) <= base * 0.005 + 1);
		assert_true((double)(hi - max) <= base * 0.005 + 1);
		/* ...and it is centred on the base. */
		assert_true(fabs(sum / draws - base) <= base * 0.01);
	}
}

static void test_delay_at_least_one(void **state)
{
	const struct wp_backoff b = {1, 10, 1.0, 0.99};
	double lo = 0.0;

	(void)state;
	assert_int_equal(wp_backoff_delay(&b, 0, rnd_const, &lo), 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_check),
	    cmocka_unit_test(test_growth_and_cap),
	    cmocka_unit_test(test_huge_attempts),
	    cmocka_unit_test(test_huge_attempt_multiplier_one),
	    cmocka_unit_test(test_no_jitter_without_rnd),
	    cmocka_unit_test(test_jitter_endpoints),
	    cmocka_unit_test(test_jitter_bounds_and_spread),
	    cmocka_unit_test(test_delay_at_least_one),
	};
	return cmocka_run_group_tests_name("backoff", tests, NULL, NULL);
}
