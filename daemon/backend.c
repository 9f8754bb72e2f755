/*
 * daemon/backend.c — a backend's availability, its health counters and its
 * reconnect backoff.
 *
 * Availability: `fall` failures in a row (failed checks or failed connection
 * attempts) take an up backend down; `rise` successes in a row bring it back.
 * A success is a passed check, or, when the pool has no active check, a
 * connection that stayed open BCONN_SETTLE (with a check, an accepted TCP
 * connection proves nothing: a frozen server's kernel still accepts). The
 * admin states draining and disabled are never left by health outcomes.
 *
 * Backoff is plain data on the backend (failures, next_attempt), never a
 * sleep: the pool's refill simply skips a backend whose next_attempt is in
 * the future and arms one timer for the earliest of them. While a backend is
 * failing, only one attempt at a time is made to it (a probe: connecting, or
 * connected but not yet proven), so a pool that wants many connections does
 * not storm a sick backend.
 */
#include <errno.h>
#include <limits.h>
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
    [REASON_BAD_REPLY] = "bad reply",
    [REASON_OTHER] = "error",
};

static const char *const state_str[] = {
    [BACKEND_UP] = "up",
    [BACKEND_DOWN] = "down",
    [BACKEND_DRAINING] = "draining",
    [BACKEND_DISABLED] = "disabled",
};

const char *backend_state_str(enum backend_state st)
{
	return (unsigned)st < sizeof state_str / sizeof state_str[0] ? state_str[st] : "?";
}

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
	struct pool *p = be->pool;
	enum backend_state old = be->state;
	if (old == st)
		return;
	be->state = st;
	if (old == BACKEND_UP)
		*(be->cfg->backup ? &p->n_up_backup : &p->n_up_primary) -= 1;
	if (st == BACKEND_UP) {
		*(be->cfg->backup ? &p->n_up_backup : &p->n_up_primary) += 1;
		be->went_up++;
		log_info("pool=%s backend=%s: backend %s -> up: %s", p->name, be->name, backend_state_str(old),
		         why);
	} else {
		if (st == BACKEND_DOWN)
			be->went_down++;
		log_warning("pool=%s backend=%s: backend %s -> %s: %s", p->name, be->name,
		            backend_state_str(old), backend_state_str(st), why);
	}
	engine_changed(p->eng);
	pool_backend_changed(p, be, old);
}

void backend_health_ok(struct backend *be, const char *how)
{
	char why[96];
	be->fails = 0;
	if (be->rises < UINT_MAX)
		be->rises++;
	if (be->state == BACKEND_DOWN && be->rises >= be->pool->cfg->health.rise) {
		snprintf(why, sizeof why, "%s (%u in a row)", how, be->rises);
		/* Healthy by its checks: connections may go at once, not after
		 * the backoff the failures before built up. */
		be->failures = 0;
		be->next_attempt = 0;
		be->backoff_ms = 0;
		backend_set_state(be, BACKEND_UP, why);
	}
}

void backend_health_failed(struct backend *be, const char *why)
{
	char msg[sizeof be->why + 32];
	be->rises = 0;
	if (be->fails < UINT_MAX)
		be->fails++;
	if (why != be->why)
		snprintf(be->why, sizeof be->why, "%s", why);
	if (be->state == BACKEND_UP && be->fails >= be->pool->cfg->health.fall) {
		snprintf(msg, sizeof msg, "%s (%u failures in a row)", be->why, be->fails);
		backend_set_state(be, BACKEND_DOWN, msg);
	}
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
	/* <=: attempts started in the same loop iteration as the failure that
	 * was counted (one ev_now) belong to its round too. */
	if (be->failures > 0 && started <= be->failed_at) {
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
	snprintf(be->why, sizeof be->why, "connect failed: %s", what);
	backend_health_failed(be, be->why);
}

void backend_attempt_succeeded(struct backend *be)
{
	if (be->failures)
		log_info("pool=%s backend=%s: connected after %u failed attempts, backoff reset",
		         be->pool->name, be->name, be->failures);
	be->failures = 0;
	be->backoff_ms = 0;
	be->next_attempt = 0;
	be->reason = REASON_NONE;
	if (be->pool->cfg->health.type == CFG_CHECK_NONE)
		backend_health_ok(be, "connection proven");
}

size_t backend_admin(struct backend *be, enum backend_state st, int kill)
{
	struct pool *p = be->pool;
	size_t killed = 0;
	if (st == BACKEND_UP) {
		/* Enabled again: health starts from scratch (checks resume; with
		 * none, its own connections tell). */
		be->fails = be->rises = 0;
		be->why[0] = '\0';
		int was_disabled = be->state == BACKEND_DISABLED;
		backend_set_state(be, BACKEND_UP, "enabled by admin");
		if (was_disabled)
			health_start(be);
		return 0;
	}
	backend_set_state(be, st, st == BACKEND_DRAINING ? "drained by admin" : "disabled by admin");
	if (kill) {
		struct list_node *pos, *tmp;
		list_for_each_safe (pos, tmp, &be->conns[BCONN_ACTIVE]) {
			struct bconn *b = container_of(pos, struct bconn, node);
			session_close(b->io.data, "backend disabled by admin (--kill)");
			killed++;
		}
		log_notice("pool=%s backend=%s: %zu sessions closed by admin", p->name, be->name, killed);
	}
	return killed;
}
