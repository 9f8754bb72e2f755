/*
 * daemon/backend.c — a backend's availability and its reconnect backoff.
 *
 * Backoff is plain data on the backend (failures, next_attempt), never a
 * sleep: the pool's refill simply skips a backend whose next_attempt is in
 * the future and arms one timer for the earliest of them. While a backend is
 * failing, only one attempt at a time is made to it (a probe: connecting, or
 * connected but not yet proven), so a pool that wants many connections does
 * not storm a sick backend.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "backoff.h"
#include "engine.h"
#include "log.h"

static const char *const reason_str[] = {
    [REASON_NONE] = "ok",
    [REASON_REFUSED] = "connection refused",
    [REASON_TIMEOUT] = "connect timeout",
    [REASON_RESET] = "reset by backend",
    [REASON_CLOSED] = "closed by backend",
    [REASON_UNREACHABLE] = "unreachable",
    [REASON_OTHER] = "error",
};

const char *backend_reason_str(enum backend_reason r)
{
	return (unsigned)r < sizeof reason_str / sizeof reason_str[0] ? reason_str[r] : "?";
}

enum backend_reason backend_reason_from_errno(int err)
{
	switch (err) {
	case ECONNREFUSED:
		return REASON_REFUSED;
	case ETIMEDOUT:
		return REASON_TIMEOUT;
	case ECONNRESET:
	case EPIPE:
		return REASON_RESET;
	case ENETUNREACH:
	case EHOSTUNREACH:
		return REASON_UNREACHABLE;
	default:
		return REASON_OTHER;
	}
}

void backend_set_state(struct backend *be, enum backend_state st, const char *why)
{
	if (be->state == st)
		return;
	be->state = st;
	if (st == BACKEND_DOWN)
		log_warning("pool=%s backend=%s: backend down: %s", be->pool->name, be->name, why);
	else
		log_info("pool=%s backend=%s: backend up: %s", be->pool->name, be->name, why);
	engine_changed(be->pool->eng);
}

int backend_can_connect(const struct backend *be, ev_tstamp now)
{
	if (now < be->next_attempt)
		return 0;
	if (be->failures > 0 && be->n_unproven > 0)
		return 0; /* one probe at a time while failing */
	return 1;
}

void backend_attempt_failed(struct backend *be, uint64_t conn_id, ev_tstamp started, enum backend_reason why,
                            int err)
{
	struct pool *p = be->pool;
	struct engine *eng = p->eng;
	ev_tstamp now = ev_now(eng->loop);
	const char *what =
	    why == REASON_OTHER || why == REASON_UNREACHABLE ? strerror(err) : backend_reason_str(why);

	be->connects_failed++;
	p->stats.conns_failed++;
	p->warm = 0;
	if (be->failures > 0 && started < be->failed_at) {
		log_info("pool=%s backend=%s conn=%llu: connect failed: %s (same round as attempt %u)",
		         p->name, be->name, (unsigned long long)conn_id, what, be->failures);
		return;
	}
	be->failures++;
	be->failed_at = now;
	be->reason = why;
	be->backoff_ms = wp_backoff_delay(&p->cfg->backoff, be->failures - 1, engine_random, eng);
	be->next_attempt = now + (double)be->backoff_ms / 1000.0;
	log_warning("pool=%s backend=%s conn=%llu: connect failed: %s (attempt %u, next in %.1fs)", p->name,
	            be->name, (unsigned long long)conn_id, what, be->failures,
	            (double)be->backoff_ms / 1000.0);
	backend_set_state(be, BACKEND_DOWN, what);
}

void backend_attempt_succeeded(struct backend *be)
{
	char why[64];
	be->connects_ok++;
	snprintf(why, sizeof why, "connected after %u failed attempts, backoff reset", be->failures);
	be->failures = 0;
	be->backoff_ms = 0;
	be->next_attempt = 0;
	be->reason = REASON_NONE;
	backend_set_state(be, BACKEND_UP, why);
}
