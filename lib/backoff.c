/* lib/backoff.c — see backoff.h. */
#include "backoff.h"

#include <errno.h>
#include <math.h>

int wp_backoff_check(const struct wp_backoff *b, const char **why)
{
	if (b->initial_ms == 0) {
		*why = "initial must be greater than 0";
		return -EINVAL;
	}
	if (b->max_ms < b->initial_ms) {
		*why = "max must be at least initial";
		return -EINVAL;
	}
	if (!(b->multiplier >= 1.0 && b->multiplier <= 100.0)) {
		*why = "multiplier must be between 1.0 and 100.0";
		return -EINVAL;
	}
	if (!(b->jitter >= 0.0 && b->jitter < 1.0)) {
		*why = "jitter must be a fraction in [0, 1)";
		return -EINVAL;
	}
	return 0;
}

uint64_t wp_backoff_base(const struct wp_backoff *b, unsigned attempt)
{
	/* Closed form, so any attempt number costs the same; pow() going to
	 * infinity for huge attempts simply lands on the cap. */
	double cap = (double)b->max_ms;
	double d = (double)b->initial_ms * pow(b->multiplier, (double)attempt);
	if (!(d < cap))
		return b->max_ms; /* no double -> uint64 conversion out of range */
	return (uint64_t)d;
}

uint64_t wp_backoff_delay(const struct wp_backoff *b, unsigned attempt, wp_random_fn rnd, void *ctx)
{
	double base = (double)wp_backoff_base(b, attempt);
	if (!rnd || b->jitter <= 0.0)
		return (uint64_t)base;
	double u = rnd(ctx) * 2.0 - 1.0; /* [-1, 1) */
	double d = base * (1.0 + b->jitter * u);
	if (d < 1.0)
		d = 1.0;
	if (!(d < 18446744073709549568.0)) /* largest double below 2^64 */
		return UINT64_MAX;
	return (uint64_t)(d + 0.5);
}
