/*
 * tests/unit/test_pool.c — pool accounting: how many connections a pool
 * starts, and which backend gets the next one.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "engine.h"

static size_t plan(size_t idle, size_t active, size_t connecting, size_t waiting, uint32_t min_idle,
                   uint32_t max_conn)
{
	struct pool_counts c = {idle, active, connecting, waiting, min_idle, max_conn};
	return pool_plan_connects(&c);
}

static void test_plan_fills_floor_from_empty(void **state)
{
	(void)state;
	assert_int_equal(plan(0, 0, 0, 0, 4, 64), 4);
}

static void test_plan_counts_connecting_toward_floor(void **state)
{
	(void)state;
	assert_int_equal(plan(1, 0, 2, 0, 4, 64), 1);
	assert_int_equal(plan(2, 0, 2, 0, 4, 64), 0);
}

static void test_plan_active_does_not_count_as_idle(void **state)
{
	(void)state;
	/* 3 sessions running with 1 idle: the floor of 4 idle wants 3 more. */
	assert_int_equal(plan(1, 3, 0, 0, 4, 64), 3);
}

static void test_plan_one_per_waiting_client(void **state)
{
	(void)state;
	assert_int_equal(plan(0, 10, 0, 5, 2, 64), 7);
	assert_int_equal(plan(0, 10, 7, 5, 2, 64), 0);
}

static void test_plan_never_beyond_max_connections(void **state)
{
	(void)state;
	assert_int_equal(plan(0, 0, 0, 0, 8, 8), 8);
	assert_int_equal(plan(0, 6, 0, 10, 2, 8), 2);
	assert_int_equal(plan(0, 8, 0, 10, 2, 8), 0);
	assert_int_equal(plan(1, 6, 1, 0, 4, 8), 0);
}

static void test_plan_zero_floor_idle_pool(void **state)
{
	(void)state;
	assert_int_equal(plan(0, 0, 0, 0, 0, 8), 0);
	assert_int_equal(plan(0, 0, 0, 1, 0, 8), 1);
}

static void test_plan_surplus_idle_starts_nothing(void **state)
{
	(void)state;
	assert_int_equal(plan(9, 0, 0, 0, 4, 64), 0);
}

static void test_pick_round_robin(void **state)
{
	(void)state;
	struct backend bs[3] = {{0}};
	size_t cur = 0;
	assert_int_equal(pool_pick_backend(bs, 3, &cur, 10.0), 0);
	assert_int_equal(pool_pick_backend(bs, 3, &cur, 10.0), 1);
	assert_int_equal(pool_pick_backend(bs, 3, &cur, 10.0), 2);
	assert_int_equal(pool_pick_backend(bs, 3, &cur, 10.0), 0);
}

static void test_pick_skips_backoff(void **state)
{
	(void)state;
	struct backend bs[3] = {{0}};
	bs[1].failures = 2;
	bs[1].next_attempt = 15.0;
	size_t cur = 1;
	assert_int_equal(pool_pick_backend(bs, 3, &cur, 10.0), 2);
	assert_int_equal(pool_pick_backend(bs, 3, &cur, 10.0), 0);
	assert_int_equal(pool_pick_backend(bs, 3, &cur, 10.0), 2);
	/* Once its delay has passed it is tried again. */
	cur = 1;
	assert_int_equal(pool_pick_backend(bs, 3, &cur, 15.0), 1);
}

static void test_pick_one_probe_while_failing(void **state)
{
	(void)state;
	struct backend bs[1] = {{0}};
	size_t cur = 0;
	bs[0].failures = 1;
	bs[0].next_attempt = 1.0;
	assert_int_equal(pool_pick_backend(bs, 1, &cur, 2.0), 0);
	bs[0].n_unproven = 1; /* the probe is in flight (or connected, not yet proven) */
	assert_int_equal(pool_pick_backend(bs, 1, &cur, 2.0), -1);
	/* A healthy backend is not limited that way. */
	bs[0].failures = 0;
	assert_int_equal(pool_pick_backend(bs, 1, &cur, 2.0), 0);
}

static void test_pick_none_available(void **state)
{
	(void)state;
	struct backend bs[2] = {{0}};
	bs[0].next_attempt = bs[1].next_attempt = 100.0;
	size_t cur = 0;
	assert_int_equal(pool_pick_backend(bs, 2, &cur, 50.0), -1);
	assert_int_equal(cur, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_plan_fills_floor_from_empty),
	    cmocka_unit_test(test_plan_counts_connecting_toward_floor),
	    cmocka_unit_test(test_plan_active_does_not_count_as_idle),
	    cmocka_unit_test(test_plan_one_per_waiting_client),
	    cmocka_unit_test(test_plan_never_beyond_max_connections),
	    cmocka_unit_test(test_plan_zero_floor_idle_pool),
	    cmocka_unit_test(test_plan_surplus_idle_starts_nothing),
	    cmocka_unit_test(test_pick_round_robin),
	    cmocka_unit_test(test_pick_skips_backoff),
	    cmocka_unit_test(test_pick_one_probe_while_failing),
	    cmocka_unit_test(test_pick_none_available),
	};
	return cmocka_run_group_tests_name("pool", tests, NULL, NULL);
}
