/*
 * tests/unit/test_pool.c — pool accounting: how many connections a pool
 * starts, which backend's idle connection a client gets and which backend
 * gets the next new connection.
 *
 * The pick functions only read the counts of each backend's lists, its
 * state, weight, backup flag and backoff fields, so a fake pool (no engine,
 * no event loop) is enough: list_init() on every list, then set `.n`.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "engine.h"

/* ---- pool_plan_connects ------------------------------------------------ */

static size_t plan_other(size_t idle, size_t active, size_t connecting, size_t waiting, uint32_t min_idle,
                         uint32_t max_conn, size_t other)
{
	struct pool_counts c = {
	    .idle = idle,
	    .active = active,
	    .connecting = connecting,
	    .waiting = waiting,
	    .min_idle = min_idle,
	    .max_connections = max_conn,
	    .other = other,
	};
	return pool_plan_connects(&c);
}

static size_t plan(size_t idle, size_t active, size_t connecting, size_t waiting, uint32_t min_idle,
                   uint32_t max_conn)
{
	return plan_other(idle, active, connecting, waiting, min_idle, max_conn, 0);
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

static void test_plan_other_counts_in_total_not_floor(void **state)
{
	(void)state;
	/* 4 idle on backups do not warm the preferred backends: 4 more wanted. */
	assert_int_equal(plan_other(0, 0, 0, 0, 4, 64, 4), 4);
	assert_int_equal(plan_other(1, 0, 1, 0, 4, 64, 10), 2);
	/* ... but they take room under max_connections. */
	assert_int_equal(plan_other(0, 0, 0, 0, 4, 8, 6), 2);
	assert_int_equal(plan_other(0, 2, 0, 1, 4, 8, 5), 1);
	assert_int_equal(plan_other(0, 0, 0, 0, 4, 8, 8), 0);
	assert_int_equal(plan_other(0, 0, 0, 3, 4, 8, 9), 0);
}

/* ---- a fake pool for the pick functions -------------------------------- */

#define MAX_FAKE 6

struct fake {
	struct cfg_pool cfg;
	struct cfg_backend bcfg[MAX_FAKE];
	struct backend be[MAX_FAKE];
	struct backend *bep[MAX_FAKE]; /* the pool's array of backends (pointers) */
	struct pool p;
};

/* `n` primaries, weight 1, all up, no connections; max_connecting 8. */
static void fake_init(struct fake *f, size_t n, enum cfg_balance balance)
{
	assert_true(n <= MAX_FAKE);
	memset(f, 0, sizeof *f);
	f->cfg.balance = balance;
	f->cfg.max_connecting = 8;
	f->cfg.backends = f->bcfg;
	f->cfg.n_backends = n;
	f->p.cfg = &f->cfg;
	f->p.name = "test";
	for (size_t i = 0; i < n; i++) {
		f->bep[i] = &f->be[i];
		f->be[i].slot = i;
	}
	f->p.backends = f->bep;
	f->p.n_backends = n;
	for (size_t i = 0; i < n; i++) {
		struct backend *be = &f->be[i];
		f->bcfg[i].weight = 1;
		be->pool = &f->p;
		be->cfg = &f->bcfg[i];
		be->name = "b";
		be->state = BACKEND_UP;
		be->hc.fd = -1;
		for (int k = 0; k < BCONN_NLISTS; k++)
			list_init(&be->conns[k]);
	}
	f->p.n_up_primary = (unsigned)n;
}

/* Recount n_up_primary / n_up_backup after changing states or backup flags. */
static void fake_recount(struct fake *f)
{
	f->p.n_up_primary = f->p.n_up_backup = 0;
	for (size_t i = 0; i < f->p.n_backends; i++)
		if (f->be[i].state == BACKEND_UP)
			*(f->bcfg[i].backup ? &f->p.n_up_backup : &f->p.n_up_primary) += 1;
}

static void set_idle(struct fake *f, size_t i, size_t n)
{
	f->be[i].conns[BCONN_IDLE].n = n;
}

static void set_active(struct fake *f, size_t i, size_t n)
{
	f->be[i].conns[BCONN_ACTIVE].n = n;
}

static void set_connecting(struct fake *f, size_t i, size_t n)
{
	f->be[i].conns[BCONN_CONNECTING].n = n;
}

/* Picks without changing any count: the handout sequence of the balance. */
static void expect_handouts(struct fake *f, const long *want, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		long got = pool_pick_handout(&f->p);
		if (got != want[i])
			fail_msg("handout #%zu: got backend %ld, want %ld", i, got, want[i]);
	}
}

/* ---- pool_backend_serves ----------------------------------------------- */

static void test_serves_states_and_backups(void **state)
{
	(void)state;
	struct fake f;
	fake_init(&f, 5, CFG_BALANCE_ROUND_ROBIN);
	f.be[1].state = BACKEND_DOWN;
	f.be[2].state = BACKEND_DRAINING;
	f.be[3].state = BACKEND_DISABLED;
	f.bcfg[4].backup = true;
	fake_recount(&f);
	assert_int_equal(f.p.n_up_primary, 1);
	assert_int_equal(f.p.n_up_backup, 1);
	assert_true(pool_backend_serves(&f.p, &f.be[0]));
	assert_false(pool_backend_serves(&f.p, &f.be[1]));
	assert_false(pool_backend_serves(&f.p, &f.be[2]));
	assert_false(pool_backend_serves(&f.p, &f.be[3]));
	assert_false(pool_backend_serves(&f.p, &f.be[4])); /* a primary is up */

	f.be[0].state = BACKEND_DOWN;
	fake_recount(&f);
	assert_false(pool_backend_serves(&f.p, &f.be[0]));
	assert_true(pool_backend_serves(&f.p, &f.be[4])); /* no primary up */
	f.be[4].state = BACKEND_DRAINING;                 /* a backup must be up too */
	fake_recount(&f);
	assert_false(pool_backend_serves(&f.p, &f.be[4]));
}

/* ---- pool_pick_handout -------------------------------------------------- */

static void test_handout_rr_equal_weights_alternate(void **state)
{
	(void)state;
	struct fake f;
	fake_init(&f, 2, CFG_BALANCE_ROUND_ROBIN);
	set_idle(&f, 0, 3);
	set_idle(&f, 1, 3);
	static const long want[] = {0, 1, 0, 1, 0, 1};
	expect_handouts(&f, want, 6);

	fake_init(&f, 3, CFG_BALANCE_ROUND_ROBIN);
	for (size_t i = 0; i < 3; i++)
		set_idle(&f, i, 1);
	static const long want3[] = {0, 1, 2, 0, 1, 2};
	expect_handouts(&f, want3, 6);
}

static void test_handout_wrr_3_to_1(void **state)
{
	(void)state;
	struct fake f;
	fake_init(&f, 2, CFG_BALANCE_ROUND_ROBIN);
	f.bcfg[0].weight = 3;
	set_idle(&f, 0, 5);
	set_idle(&f, 1, 5);
	/* Smooth WRR (nginx): credits 3,1 → pick 0 (-1,1); 2,2 → 0 (tie, first)
	 * (-2,2); 1,3 → 1 (1,-1); 4,0 → 0 (0,0): a period of 0 0 1 0. */
	static const long want[] = {0, 0, 1, 0, 0, 0, 1, 0};
	expect_handouts(&f, want, 8);
	/* A full period returns the credits to where they started. */
	assert_int_equal(f.be[0].wrr_current, 0);
	assert_int_equal(f.be[1].wrr_current, 0);
}

static void test_handout_wrr_2_to_1_interleaves(void **state)
{
	(void)state;
	struct fake f;
	fake_init(&f, 2, CFG_BALANCE_ROUND_ROBIN);
	f.bcfg[0].weight = 2;
	set_idle(&f, 0, 5);
	set_idle(&f, 1, 5);
	/* 2,1 → 0 (-1,1); 1,2 → 1 (1,-1); 3,0 → 0 (0,0): 0 1 0, never 0 0 0. */
	static const long want[] = {0, 1, 0, 0, 1, 0, 0, 1, 0};
	expect_handouts(&f, want, 9);

	/* 5:1:1 spreads the light ones out: nginx's a a b a c a a. */
	fake_init(&f, 3, CFG_BALANCE_ROUND_ROBIN);
	f.bcfg[0].weight = 5;
	for (size_t i = 0; i < 3; i++)
		set_idle(&f, i, 1);
	static const long want511[] = {0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0};
	expect_handouts(&f, want511, 14);
}

static void test_handout_skips_backends_without_idle(void **state)
{
	(void)state;
	struct fake f;
	fake_init(&f, 3, CFG_BALANCE_ROUND_ROBIN);
	set_idle(&f, 0, 1);
	set_idle(&f, 2, 1);
	set_active(&f, 1, 0);
	set_connecting(&f, 1, 4); /* connecting is not idle */
	static const long want[] = {0, 2, 0, 2};
	expect_handouts(&f, want, 4);
	assert_int_equal(f.be[1].wrr_current, 0); /* earns no credit while it has nothing to give */

	for (int b = CFG_BALANCE_ROUND_ROBIN; b <= CFG_BALANCE_FIRST; b++) {
		fake_init(&f, 3, (enum cfg_balance)b);
		set_idle(&f, 1, 1);
		set_active(&f, 0, 0);
		set_active(&f, 1, 50);
		set_active(&f, 2, 0);
		for (int i = 0; i < 3; i++)
			assert_int_equal(pool_pick_handout(&f.p), 1);
		set_idle(&f, 1, 0);
		assert_int_equal(pool_pick_handout(&f.p), -1);
	}
}

static void test_handout_least_conn_fewest_per_weight(void **state)
{
	(void)state;
	struct fake f;
	fake_init(&f, 3, CFG_BALANCE_LEAST_CONN);
	for (size_t i = 0; i < 3; i++)
		set_idle(&f, i, 1);
	set_active(&f, 0, 3);
	set_active(&f, 1, 1);
	set_active(&f, 2, 2);
	assert_int_equal(pool_pick_handout(&f.p), 1);
	assert_int_equal(pool_pick_handout(&f.p), 1);
	set_active(&f, 1, 5);
	assert_int_equal(pool_pick_handout(&f.p), 2);

	/* Per unit of weight: 4/3 < 2/1. */
	fake_init(&f, 2, CFG_BALANCE_LEAST_CONN);
	f.bcfg[1].weight = 3;
	set_idle(&f, 0, 1);
	set_idle(&f, 1, 1);
	set_active(&f, 0, 2);
	set_active(&f, 1, 4);
	assert_int_equal(pool_pick_handout(&f.p), 1);
	set_active(&f, 1, 7); /* 7/3 > 2/1 */
	assert_int_equal(pool_pick_handout(&f.p), 0);

	/* The fewest active but no idle connection: the next fewest. */
	fake_init(&f, 3, CFG_BALANCE_LEAST_CONN);
	set_idle(&f, 1, 1);
	set_idle(&f, 2, 1);
	set_active(&f, 0, 0);
	set_active(&f, 1, 9);
	set_active(&f, 2, 4);
	assert_int_equal(pool_pick_handout(&f.p), 2);
}

static void test_handout_least_conn_ties_rotate(void **state)
{
	(void)state;
	struct fake f;
	fake_init(&f, 3, CFG_BALANCE_LEAST_CONN);
	for (size_t i = 0; i < 3; i++) {
		set_idle(&f, i, 1);
		set_active(&f, i, 2);
	}
	static const long want[] = {0, 1, 2, 0, 1, 2};
	expect_handouts(&f, want, 6);

	/* Only the tied ones take turns. */
	set_active(&f, 1, 3);
	static const long want2[] = {0, 2, 0, 2};
	expect_handouts(&f, want2, 4);
}

static void test_handout_first_lowest_index_with_idle(void **state)
{
	(void)state;
	struct fake f;
	fake_init(&f, 3, CFG_BALANCE_FIRST);
	set_idle(&f, 1, 1);
	set_idle(&f, 2, 5);
	f.p.rr = 2; /* a cursor left by pool_pick_connect does not matter */
	for (int i = 0; i < 3; i++)
		assert_int_equal(pool_pick_handout(&f.p), 1);
	set_idle(&f, 0, 1);
	set_active(&f, 0, 100); /* load does not matter either */
	assert_int_equal(pool_pick_handout(&f.p), 0);
	set_idle(&f, 0, 0);
	set_idle(&f, 1, 0);
	assert_int_equal(pool_pick_handout(&f.p), 2);
}

static void test_handout_never_unavailable_backend(void **state)
{
	(void)state;
	static const enum backend_state bad[] = {BACKEND_DOWN, BACKEND_DRAINING, BACKEND_DISABLED};
	for (int b = CFG_BALANCE_ROUND_ROBIN; b <= CFG_BALANCE_FIRST; b++) {
		struct fake f;
		/* Backend 3 is up but later, heavier loaded and lighter weighted:
		 * every balance would prefer 0-2 were they up. */
		fake_init(&f, 4, (enum cfg_balance)b);
		for (size_t i = 0; i < 3; i++) {
			f.be[i].state = bad[i];
			f.bcfg[i].weight = 100;
			set_idle(&f, i, 10);
		}
		set_idle(&f, 3, 1);
		set_active(&f, 3, 50);
		fake_recount(&f);
		for (int i = 0; i < 10; i++)
			assert_int_equal(pool_pick_handout(&f.p), 3);
		f.be[3].state = BACKEND_DOWN;
		fake_recount(&f);
		assert_int_equal(pool_pick_handout(&f.p), -1);
	}
}

static void test_handout_backups_only_without_primary(void **state)
{
	(void)state;
	for (int b = CFG_BALANCE_ROUND_ROBIN; b <= CFG_BALANCE_FIRST; b++) {
		struct fake f;
		fake_init(&f, 3, (enum cfg_balance)b);
		f.bcfg[0].backup = true; /* a backup listed first */
		set_idle(&f, 0, 5);
		set_idle(&f, 1, 1);
		set_idle(&f, 2, 0);
		set_active(&f, 1, 20);
		fake_recount(&f);
		assert_int_equal(f.p.n_up_primary, 2);
		for (int i = 0; i < 4; i++)
			assert_int_equal(pool_pick_handout(&f.p), 1);
		/* A primary is up but has nothing idle: still not the backup. */
		set_idle(&f, 1, 0);
		assert_int_equal(pool_pick_handout(&f.p), -1);
		/* No primary up: the backup serves. */
		f.be[1].state = BACKEND_DOWN;
		f.be[2].state = BACKEND_DISABLED;
		set_idle(&f, 1, 1);
		fake_recount(&f);
		assert_int_equal(f.p.n_up_primary, 0);
		assert_int_equal(f.p.n_up_backup, 1);
		for (int i = 0; i < 4; i++)
			assert_int_equal(pool_pick_handout(&f.p), 0);
	}
}

static void test_handout_empty_pool(void **state)
{
	(void)state;
	struct fake f;
	fake_init(&f, 0, CFG_BALANCE_ROUND_ROBIN);
	assert_int_equal(pool_pick_handout(&f.p), -1);
	assert_int_equal(pool_pick_connect(&f.p, 1.0), -1);
}

/* ---- pool_pick_connect -------------------------------------------------- */

/* Pick and account the new connection as connecting, as pool_refill does. */
static long connect_one(struct fake *f, ev_tstamp now)
{
	long k = pool_pick_connect(&f->p, now);
	if (k >= 0)
		f->be[k].conns[BCONN_CONNECTING].n++;
	return k;
}

static void test_connect_fewest_per_weight(void **state)
{
	(void)state;
	struct fake f;
	fake_init(&f, 3, CFG_BALANCE_ROUND_ROBIN);
	/* Totals 3, 2, 4: idle, active and connecting all count. */
	set_idle(&f, 0, 3);
	set_active(&f, 1, 1);
	set_connecting(&f, 1, 1);
	set_idle(&f, 2, 1);
	set_active(&f, 2, 2);
	set_connecting(&f, 2, 1);
	assert_int_equal(pool_pick_connect(&f.p, 10.0), 1);

	/* Per unit of weight: 3/1 vs 4/2 → 1. */
	fake_init(&f, 2, CFG_BALANCE_LEAST_CONN);
	f.bcfg[1].weight = 2;
	set_idle(&f, 0, 3);
	set_idle(&f, 1, 4);
	assert_int_equal(pool_pick_connect(&f.p, 10.0), 1);
	set_idle(&f, 1, 7); /* 7/2 > 3/1 */
	assert_int_equal(pool_pick_connect(&f.p, 10.0), 0);
}

static void test_connect_spreads_floor_by_weight(void **state)
{
	(void)state;
	struct fake f;
	fake_init(&f, 3, CFG_BALANCE_ROUND_ROBIN);
	f.bcfg[0].weight = 2;
	f.bcfg[2].weight = 3;
	for (int i = 0; i < 12; i++)
		assert_true(connect_one(&f, 10.0) >= 0);
	assert_int_equal(f.be[0].conns[BCONN_CONNECTING].n, 4);
	assert_int_equal(f.be[1].conns[BCONN_CONNECTING].n, 2);
	assert_int_equal(f.be[2].conns[BCONN_CONNECTING].n, 6);

	/* Equal weights, equal loads: ties take turns. */
	fake_init(&f, 3, CFG_BALANCE_LEAST_CONN);
	for (int i = 0; i < 6; i++)
		assert_int_equal(pool_pick_connect(&f.p, 10.0), i % 3);
}

static void test_connect_skips_backoff(void **state)
{
	(void)state;
	struct fake f;
	fake_init(&f, 3, CFG_BALANCE_ROUND_ROBIN);
	f.be[1].connect_failures = 2;
	f.be[1].next_attempt = 15.0;
	set_idle(&f, 0, 5); /* 1 would be the least loaded */
	set_idle(&f, 2, 5);
	for (int i = 0; i < 6; i++)
		assert_int_not_equal(connect_one(&f, 10.0), 1);
	/* Once its delay has passed it is tried again. */
	assert_int_equal(pool_pick_connect(&f.p, 15.0), 1);
	/* Backoff applies even with no failure counted. */
	f.be[1].connect_failures = 0;
	assert_int_not_equal(pool_pick_connect(&f.p, 14.9), 1);
}

static void test_connect_one_probe_while_failing(void **state)
{
	(void)state;
	struct fake f;
	fake_init(&f, 2, CFG_BALANCE_ROUND_ROBIN);
	f.be[0].connect_failures = 1;
	f.be[0].next_attempt = 1.0;
	set_idle(&f, 1, 9);
	assert_int_equal(pool_pick_connect(&f.p, 2.0), 0);
	f.be[0].n_unproven = 1; /* the probe is in flight (or connected, not yet proven) */
	assert_int_equal(pool_pick_connect(&f.p, 2.0), 1);
	assert_int_equal(pool_pick_connect(&f.p, 2.0), 1);
	/* A healthy backend is not limited that way. */
	f.be[0].connect_failures = 0;
	f.be[0].n_unproven = 3;
	assert_int_equal(pool_pick_connect(&f.p, 2.0), 0);
}

static void test_connect_max_connecting(void **state)
{
	(void)state;
	struct fake f;
	for (int b = CFG_BALANCE_ROUND_ROBIN; b <= CFG_BALANCE_LEAST_CONN; b++) {
		fake_init(&f, 2, (enum cfg_balance)b);
		f.cfg.max_connecting = 2;
		set_idle(&f, 1, 10);
		assert_int_equal(connect_one(&f, 1.0), 0);
		assert_int_equal(connect_one(&f, 1.0), 0);
		/* 0 has two in flight: the next goes to the busier 1. */
		assert_int_equal(connect_one(&f, 1.0), 1);
		assert_int_equal(connect_one(&f, 1.0), 1);
		assert_int_equal(pool_pick_connect(&f.p, 1.0), -1);
		set_connecting(&f, 1, 1);
		assert_int_equal(pool_pick_connect(&f.p, 1.0), 1);
	}

	/* first waits for its backend rather than spill to the next one. */
	fake_init(&f, 2, CFG_BALANCE_FIRST);
	f.cfg.max_connecting = 2;
	assert_int_equal(connect_one(&f, 1.0), 0);
	assert_int_equal(connect_one(&f, 1.0), 0);
	assert_int_equal(pool_pick_connect(&f.p, 1.0), -1);
	assert_int_equal(f.be[1].conns[BCONN_CONNECTING].n, 0);
	set_connecting(&f, 0, 1);
	assert_int_equal(pool_pick_connect(&f.p, 1.0), 0);
}

static void test_connect_first_in_order(void **state)
{
	(void)state;
	struct fake f;
	fake_init(&f, 3, CFG_BALANCE_FIRST);
	set_idle(&f, 0, 20); /* load does not matter */
	f.p.rr = 2;          /* nor the cursor */
	for (int i = 0; i < 3; i++)
		assert_int_equal(connect_one(&f, 5.0), 0);
	/* In backoff: the next one in order, until the delay has passed. */
	f.be[0].connect_failures = 1;
	f.be[0].next_attempt = 6.0;
	assert_int_equal(pool_pick_connect(&f.p, 5.0), 1);
	f.be[1].next_attempt = 7.0;
	assert_int_equal(pool_pick_connect(&f.p, 5.0), 2);
	assert_int_equal(pool_pick_connect(&f.p, 6.0), 0);
	/* Failing with its one probe in flight: the next one too. */
	f.be[0].n_unproven = 1;
	assert_int_equal(pool_pick_connect(&f.p, 6.0), 2);
	/* Down: skipped as well. */
	f.be[0].connect_failures = 0;
	f.be[0].n_unproven = 0;
	f.be[0].state = BACKEND_DOWN;
	fake_recount(&f);
	assert_int_equal(pool_pick_connect(&f.p, 8.0), 1);
}

static void test_connect_never_unavailable_backend(void **state)
{
	(void)state;
	static const enum backend_state bad[] = {BACKEND_DOWN, BACKEND_DRAINING, BACKEND_DISABLED};
	for (int b = CFG_BALANCE_ROUND_ROBIN; b <= CFG_BALANCE_FIRST; b++) {
		struct fake f;
		fake_init(&f, 4, (enum cfg_balance)b);
		for (size_t i = 0; i < 3; i++) {
			f.be[i].state = bad[i];
			f.bcfg[i].weight = 100;
		}
		set_active(&f, 3, 50);
		fake_recount(&f);
		for (int i = 0; i < 5; i++)
			assert_int_equal(connect_one(&f, 1.0), 3);
		f.be[3].state = BACKEND_DRAINING;
		fake_recount(&f);
		assert_int_equal(pool_pick_connect(&f.p, 1.0), -1);
	}
}

static void test_connect_backups_only_without_primary(void **state)
{
	(void)state;
	for (int b = CFG_BALANCE_ROUND_ROBIN; b <= CFG_BALANCE_FIRST; b++) {
		struct fake f;
		fake_init(&f, 2, (enum cfg_balance)b);
		f.bcfg[0].backup = true;
		set_active(&f, 1, 30);
		fake_recount(&f);
		for (int i = 0; i < 3; i++)
			assert_int_equal(connect_one(&f, 1.0), 1);
		/* The primary is up but in backoff: wait for it, not the backup. */
		f.be[1].connect_failures = 1;
		f.be[1].next_attempt = 2.0;
		assert_int_equal(pool_pick_connect(&f.p, 1.0), -1);
		/* No primary up: the backup. */
		f.be[1].state = BACKEND_DOWN;
		fake_recount(&f);
		assert_int_equal(pool_pick_connect(&f.p, 3.0), 0);
	}
}

static void test_connect_none_qualifies(void **state)
{
	(void)state;
	struct fake f;
	fake_init(&f, 3, CFG_BALANCE_ROUND_ROBIN);
	f.be[0].next_attempt = 100.0;
	f.be[1].connect_failures = 1;
	f.be[1].n_unproven = 1;
	f.be[2].state = BACKEND_DOWN;
	fake_recount(&f);
	f.p.rr = 1;
	assert_int_equal(pool_pick_connect(&f.p, 50.0), -1);
	assert_int_equal(f.p.rr, 1); /* the cursor only moves on a pick */
}

/* A backend that closes idle connections after about 0.3 s: a connection
 * idle 75% of that is not handed out, while the observation is recent. */
/* A TLS pool defers the refill of what a burst took to the first lull. */
static void test_tls_refill_waits_for_a_lull(void **state)
{
	(void)state;
	struct cfg_pool cfg;
	struct pool p;
	memset(&cfg, 0, sizeof cfg);
	memset(&p, 0, sizeof p);
	p.cfg = &cfg;
	cfg.tls.enabled = true;
	p.last_handout = 100.0;
	struct pool_counts c = {.idle = 10, .min_idle = 16, .max_connections = 64};
	/* Half a lull after a handout: wait until the lull ends. */
	assert_true(pool_refill_after(&p, &c, 100.0 + REFILL_LULL / 2) == 100.0 + REFILL_LULL);
	/* The lull came: refill now. */
	assert_true(pool_refill_after(&p, &c, 100.0 + REFILL_LULL) == 0);
	/* Down to a quarter of the floor (4 of 16): refill now, burst or not. */
	c.idle = 3;
	assert_true(pool_refill_after(&p, &c, 100.0) == 0);
	c.idle = 2;
	c.connecting = 2; /* connecting ones count: 4 on the way */
	assert_true(pool_refill_after(&p, &c, 100.0) > 0);
	/* A client waits: its connection is on the critical path. */
	c.waiting = 1;
	assert_true(pool_refill_after(&p, &c, 100.0) == 0);
	c.waiting = 0;
	/* Plain TCP: a connect costs microseconds, the floor is kept eagerly. */
	cfg.tls.enabled = false;
	assert_true(pool_refill_after(&p, &c, 100.0) == 0);
}

static void test_near_backend_idle_close(void **state)
{
	(void)state;
	struct backend be;
	struct bconn b;
	memset(&be, 0, sizeof be);
	memset(&b, 0, sizeof b);
	b.be = &be;
	ev_tstamp now = 1000.0;
	b.idle_since = now - 0.29;
	assert_false(bconn_near_backend_close(&b, now)); /* nothing learned yet */
	be.idle_close_age = 0.3;
	be.idle_close_seen = now - 1.0;
	b.idle_since = now - 0.2;
	assert_false(bconn_near_backend_close(&b, now));
	b.idle_since = now - 0.225;
	assert_true(bconn_near_backend_close(&b, now));
	b.idle_since = now - 0.29;
	assert_true(bconn_near_backend_close(&b, now));
	be.idle_close_seen = now - 61.0; /* a minute without such a close: forgotten */
	assert_false(bconn_near_backend_close(&b, now));
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
	    cmocka_unit_test(test_plan_other_counts_in_total_not_floor),
	    cmocka_unit_test(test_serves_states_and_backups),
	    cmocka_unit_test(test_handout_rr_equal_weights_alternate),
	    cmocka_unit_test(test_handout_wrr_3_to_1),
	    cmocka_unit_test(test_handout_wrr_2_to_1_interleaves),
	    cmocka_unit_test(test_handout_skips_backends_without_idle),
	    cmocka_unit_test(test_handout_least_conn_fewest_per_weight),
	    cmocka_unit_test(test_handout_least_conn_ties_rotate),
	    cmocka_unit_test(test_handout_first_lowest_index_with_idle),
	    cmocka_unit_test(test_handout_never_unavailable_backend),
	    cmocka_unit_test(test_handout_backups_only_without_primary),
	    cmocka_unit_test(test_handout_empty_pool),
	    cmocka_unit_test(test_connect_fewest_per_weight),
	    cmocka_unit_test(test_connect_spreads_floor_by_weight),
	    cmocka_unit_test(test_connect_skips_backoff),
	    cmocka_unit_test(test_connect_one_probe_while_failing),
	    cmocka_unit_test(test_connect_max_connecting),
	    cmocka_unit_test(test_connect_first_in_order),
	    cmocka_unit_test(test_connect_never_unavailable_backend),
	    cmocka_unit_test(test_connect_backups_only_without_primary),
	    cmocka_unit_test(test_connect_none_qualifies),
	    cmocka_unit_test(test_near_backend_idle_close),
	    cmocka_unit_test(test_tls_refill_waits_for_a_lull),
	};
	return cmocka_run_group_tests_name("pool", tests, NULL, NULL);
}
