/*
 * daemon/janitor.c — a pool's housekeeping timer.
 *
 * One janitor timer per pool (DESIGN.md rule 6) recycles idle connections
 * past max_lifetime (spaced apart) or max_idle_time, closes those above the
 * floor idle for idle_timeout, and hands back misplaced ones. Both lifetimes
 * end up to LIFETIME_JITTER early, by a random share fixed per connection,
 * so connections opened together do not expire together.
 * A misplaced connection is one on a backend that is no longer preferred
 * (balance.c): the sweep closes it once the floor is met on preferred ones.
 * After a reload changed the pool's TLS settings (pool.tls_gen), idle
 * connections made with the old ones are replaced one per TLS_RECYCLE_GAP,
 * so the backends never see the whole floor re-handshake at once.
 */
#include <math.h>

#include "engine.h"
#include "log.h"

#define JANITOR_PERIOD   1.0   /* seconds between sweeps when no deadline is nearer */
#define JANITOR_MIN_WAIT 0.001 /* never re-arm closer than this */
#define RECYCLE_GAP_MAX  1.0   /* seconds: cap on the spacing of max_lifetime closes */
#define TLS_RECYCLE_GAP  0.05  /* seconds between replacements of connections with old TLS settings */

/* ---- janitor: lifetimes, idle sweeps, hand-back ------------------------ */

void janitor_soon(struct pool *p, ev_tstamp at)
{
	struct ev_loop *loop = p->eng->loop;
	if (!isfinite(at) || p->eng->stopping || p->retiring)
		return;
	ev_tstamp now = ev_now(loop);
	if (ev_is_active(&p->janitor) && now + ev_timer_remaining(loop, &p->janitor) <= at)
		return;
	ev_timer_stop(loop, &p->janitor);
	ev_timer_set(&p->janitor, fmax(at - now, JANITOR_MIN_WAIT), 0.);
	ev_timer_start(loop, &p->janitor);
}

static void janitor_recycle(struct bconn *b, const char *why)
{
	struct pool *p = b->pool;
	p->stats.conns_recycled++;
	bconn_log(b, LOG_DEBUG, "%s, recycling", why);
	bconn_close(b);
}

/* One sweep over the idle connections; returns when to look again. */
static ev_tstamp janitor_sweep(struct pool *p, ev_tstamp now)
{
	const struct cfg_pool *c = p->cfg;
	struct pool_counts counts = pool_counts(p);
	size_t idle = counts.idle; /* on preferred backends: the floor */
	ev_tstamp next = now + JANITOR_PERIOD;
	/* max_lifetime closes are spaced so a floor opened at once is not
	 * replaced at once: the jitter window shared by the open connections. */
	size_t n_open = p->n_conns[BCONN_IDLE] + p->n_conns[BCONN_ACTIVE];
	ev_tstamp gap = fmin((double)c->max_lifetime_ms / 1000.0 * LIFETIME_JITTER / (double)(n_open ? n_open : 1),
	                     RECYCLE_GAP_MAX);

	size_t cutoff = pool_first_cutoff(p);
	for (size_t i = 0; i < p->n_backends; i++) {
		struct backend *be = p->backends[i];
		int preferred = pool_backend_preferred_at(p, be, cutoff);
		struct list_node *pos, *tmp;
		list_for_each_safe (pos, tmp, &be->conns[BCONN_IDLE]) {
			struct bconn *b = container_of(pos, struct bconn, node);
			ev_tstamp early = 1.0 - LIFETIME_JITTER * b->jitter, t;
			if (!preferred && backend_available(be->state) && idle >= c->min_idle) {
				p->stats.conns_handed_back++;
				bconn_log(b, LOG_DEBUG, "preferred backends are warm, handing back");
				bconn_close(b);
				continue;
			}
			if (b->tls_gen != p->tls_gen) {
				if (now >= p->last_recycle + TLS_RECYCLE_GAP) {
					p->last_recycle = now;
					janitor_recycle(b, "made with TLS settings a reload replaced");
					idle -= preferred;
					continue;
				}
				next = fmin(next, p->last_recycle + TLS_RECYCLE_GAP);
			}
			if (c->max_idle_time_ms) {
				t = b->idle_since + (double)c->max_idle_time_ms / 1000.0 * early;
				if (now >= t) {
					janitor_recycle(b, "max_idle_time reached");
					idle -= preferred;
					continue;
				}
				next = fmin(next, t);
			}
			if (c->max_lifetime_ms) {
				t = b->opened_at + (double)c->max_lifetime_ms / 1000.0 * early;
				if (now >= t && now >= p->last_recycle + gap) {
					p->last_recycle = now;
					janitor_recycle(b, "max_lifetime reached");
					idle -= preferred;
					continue;
				}
				next = fmin(next, fmax(t, p->last_recycle + gap));
			}
			if (c->idle_timeout_ms && preferred && idle > c->min_idle) {
				t = b->idle_since + (double)c->idle_timeout_ms / 1000.0;
				if (now >= t) {
					p->stats.conns_idle_closed++;
					bconn_log(b, LOG_DEBUG, "idle_timeout above the floor, closing");
					bconn_close(b);
					idle--;
					continue;
				}
				next = fmin(next, t);
			}
		}
	}
	return next;
}

void janitor_start(struct pool *p)
{
	janitor_soon(p, ev_now(p->eng->loop) + JANITOR_PERIOD);
}

void janitor_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)revents;
	struct pool *p = container_of(w, struct pool, janitor);
	ev_tstamp now = ev_now(loop);
	ev_tstamp next = janitor_sweep(p, now);
	janitor_soon(p, next);
	pool_refill(p);
}
