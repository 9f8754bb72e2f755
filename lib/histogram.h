/*
 * lib/histogram.h — fixed-bucket histograms for Prometheus (`_bucket`,
 * `_sum`, `_count`). Observing is a short linear scan over at most
 * WP_HIST_MAX_BUCKETS upper bounds: no allocation, no logging.
 */
#ifndef WARMPOOL_HISTOGRAM_H
#define WARMPOOL_HISTOGRAM_H

#include <stddef.h>
#include <stdint.h>

#define WP_HIST_MAX_BUCKETS 24

struct wp_histogram {
	const double *bounds;                      /* upper bounds, strictly increasing; +Inf is implied */
	size_t n;                                  /* number of bounds */
	uint64_t counts[WP_HIST_MAX_BUCKETS + 1]; /* per bucket, not cumulative; [n] is (bounds[n-1], +Inf) */
	double sum;
	uint64_t count;
};

/* 0, or -EINVAL when there are too many bounds or they do not increase.
 * `bounds` must outlive the histogram. */
int wp_histogram_init(struct wp_histogram *h, const double *bounds, size_t n) __attribute__((warn_unused_result));
/* Count v in the first bucket whose bound is >= v (Prometheus `le`). */
void wp_histogram_observe(struct wp_histogram *h, double v);
/* Observations <= bounds[i] (i < n), or all of them (i == n): the `_bucket` value. */
uint64_t wp_histogram_cumulative(const struct wp_histogram *h, size_t i);

#endif
