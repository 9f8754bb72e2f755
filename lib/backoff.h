/*
 * lib/backoff.h — jittered exponential backoff arithmetic (pure, no I/O).
 *
 * The delay before retry attempt n (n = 0 after the first failure) is
 *   base(n)  = min(max_ms, initial_ms * multiplier^n)
 *   delay(n) = base(n) * (1 + jitter * u),  u uniform in [-1, 1)
 * so consecutive retries of many backends that failed together disperse
 * (gRPC connection-backoff shape). State (the failure count) lives with the
 * caller; resetting after a success is setting that count back to 0.
 */
#ifndef WARMPOOL_BACKOFF_H
#define WARMPOOL_BACKOFF_H

#include <stdint.h>

struct wp_backoff {
	uint64_t initial_ms; /* > 0 */
	uint64_t max_ms;     /* >= initial_ms */
	double multiplier;   /* >= 1.0 */
	double jitter;       /* fraction in [0, 1) */
};

/* Returns a number uniform in [0, 1). */
typedef double (*wp_random_fn)(void *ctx);

/* Validate parameters: 0, or -EINVAL with *why set to a static phrase. */
int wp_backoff_check(const struct wp_backoff *b, const char **why) __attribute__((warn_unused_result));

/* The un-jittered delay for attempt n, capped at max_ms. */
uint64_t wp_backoff_base(const struct wp_backoff *b, unsigned attempt);

/* The jittered delay for attempt n; `rnd` may be NULL (then no jitter). */
uint64_t wp_backoff_delay(const struct wp_backoff *b, unsigned attempt, wp_random_fn rnd, void *ctx);

#endif
