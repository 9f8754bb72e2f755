/* lib/histogram.c — see histogram.h. */
#include "histogram.h"

#include <errno.h>
#include <string.h>

int wp_histogram_init(struct wp_histogram *h, const double *bounds, size_t n)
{
	if (n == 0 || n > WP_HIST_MAX_BUCKETS)
		return -EINVAL;
	for (size_t i = 1; i < n; i++)
		if (!(bounds[i] > bounds[i - 1]))
			return -EINVAL;
	memset(h, 0, sizeof *h);
	h->bounds = bounds;
	h->n = n;
	return 0;
}

void wp_histogram_observe(struct wp_histogram *h, double v)
{
	size_t i = 0;
	while (i < h->n && v > h->bounds[i])
		i++;
	h->counts[i]++;
	h->sum += v;
	h->count++;
}

uint64_t wp_histogram_cumulative(const struct wp_histogram *h, size_t i)
{
	uint64_t c = 0;
	for (size_t k = 0; k <= i && k <= h->n; k++)
		c += h->counts[k];
	return c;
}
