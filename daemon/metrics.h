/*
 * daemon/metrics.h — rendering the engine's state for the admin socket and
 * the metrics endpoint (Prometheus text format 0.0.4, tables, JSON).
 */
#ifndef WARMPOOL_METRICS_H
#define WARMPOOL_METRICS_H

#include "buf.h"

struct engine;
struct pool;

void metrics_render(const struct engine *eng, struct wp_buf *b);
void metrics_show_pools(const struct engine *eng, struct wp_buf *b, int json);
/* Every pool's backends, or only those of `only` when it is not NULL. */
void metrics_show_backends(const struct engine *eng, const struct pool *only, struct wp_buf *b, int json);
void metrics_show_stats(const struct engine *eng, struct wp_buf *b, int json);
/* Every backend name (or those of `only`): state, addresses, lookups. */
void metrics_show_dns(const struct engine *eng, const struct pool *only, struct wp_buf *b, int json);
/* One row per client (waiting or relaying) of every pool or of `only`: at
 * most SHOW_CLIENTS_MAX rows, then a count of the rest. Reads each client's
 * SO_PEERCRED the first time (kept on the session, as pool_session_uid
 * does): the one thing rendering writes. */
void metrics_show_clients(const struct engine *eng, const struct pool *only, struct wp_buf *b, int json);

#endif
