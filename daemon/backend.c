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
 * A backend starts `unknown`: it is tried as if up (nothing else can tell),
 * but shown and counted as up only once one success proved it (a passed
 * check; without checks, a completed connect, as a connect check counts it);
 * `fall` failures take it down as they would an up one.
 *
 * Backoff is plain data on the backend (failures, next_attempt), counted
 * by bconn.c when an attempt fails (bconn_attempt_failed), never a sleep: the pool's refill simply skips a backend whose next_attempt is in
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
    [REASON_TLS] = "tls",
    [REASON_DNS] = "dns",
    [REASON_OTHER] = "error",
};

static const char *const state_str[] = {
    [BACKEND_UP] = "up",
    [BACKEND_DOWN] = "down",
    [BACKEND_DRAINING] = "draining",
    [BACKEND_DISABLED] = "disabled",
    [BACKEND_UNKNOWN] = "unknown",
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

int backend_ctx(const struct backend *be, char *buf, size_t len)
{
	if (be->dns)
		return snprintf(buf, len, "pool=%s backend=%s name=%s", be->pool->name, be->name, dns_name_str(be->dns));
	return snprintf(buf, len, "pool=%s backend=%s", be->pool->name, be->name);
}

void backend_log(const struct backend *be, int prio, const char *fmt, ...)
{
	if (!log_enabled(prio))
		return;
	char ctx[LOG_CTX_MAX];
	backend_ctx(be, ctx, sizeof ctx);
	va_list ap;
	va_start(ap, fmt);
	log_vmsg(prio, ctx, fmt, ap);
	va_end(ap);
}

void backend_set_state(struct backend *be, enum backend_state st, const char *why)
{
	struct pool *p = be->pool;
	enum backend_state old = be->state;
	if (old == st)
		return;
	be->state = st;
	be->changed_at = ev_now(p->eng->loop);
	if (backend_available(old))
		*(be->cfg->backup ? &p->n_up_backup : &p->n_up_primary) -= 1;
	if (backend_available(st))
		*(be->cfg->backup ? &p->n_up_backup : &p->n_up_primary) += 1;
	if (st == BACKEND_UP) {
		if (old != BACKEND_UNKNOWN) /* proving a new backend is no recovery */
			be->went_up++;
		backend_log(be, LOG_INFO, "backend %s -> up: %s", backend_state_str(old), why);
	} else {
		if (st == BACKEND_DOWN && backend_available(old)) /* not an admin's enable */
			be->went_down++;
		/* An admin's drain, disable or enable is an operator's act, not a
		 * fault: notice, not warning. */
		int by_admin = st == BACKEND_DRAINING || st == BACKEND_DISABLED || old == BACKEND_DRAINING ||
		               old == BACKEND_DISABLED;
		backend_log(be, by_admin ? LOG_NOTICE : LOG_WARNING, "backend %s -> %s: %s", backend_state_str(old),
		            backend_state_str(st), why);
	}
	engine_changed(p->eng);
	be->on_change(p, be, old);
}

void backend_health_ok(struct backend *be, const char *how)
{
	char why[96];
	be->health_fails = 0;
	if (be->health_rises < UINT_MAX)
		be->health_rises++;
	if (be->dns_down || be->gone)
		return; /* its name no longer leads here: it answers, but is not the name's */
	if (be->state == BACKEND_UNKNOWN) {
		snprintf(why, sizeof why, "%s", how); /* nothing to recover from: one proof is enough */
		backend_set_state(be, BACKEND_UP, why);
	} else if (be->state == BACKEND_DOWN && be->health_rises >= be->pool->cfg->health.rise) {
		snprintf(why, sizeof why, "%s (%u in a row)", how, be->health_rises);
		/* Healthy by its checks: connections may go at once, not after
		 * the backoff the failures before built up. */
		be->connect_failures = 0;
		be->next_attempt = 0;
		be->backoff_ms = 0;
		backend_set_state(be, BACKEND_UP, why);
	}
}

void backend_health_failed(struct backend *be, const char *why)
{
	char msg[sizeof be->last_error + 32];
	be->health_rises = 0;
	if (be->health_fails < UINT_MAX)
		be->health_fails++;
	if (why != be->last_error)
		snprintf(be->last_error, sizeof be->last_error, "%s", why);
	be->error_at = ev_now(be->pool->eng->loop);
	if (be->dns && be->health_fails == 1)
		dns_backend_failed(be); /* a failover moves the name: follow it now, not at the next refresh */
	if (backend_available(be->state) && be->health_fails >= be->pool->cfg->health.fall) {
		snprintf(msg, sizeof msg, "%s (%u failures in a row)", be->last_error, be->health_fails);
		backend_set_state(be, BACKEND_DOWN, msg);
	}
}

int backend_can_connect(const struct backend *be, ev_tstamp now)
{
	if (now < be->next_attempt)
		return 0;
	if (be->connect_failures > 0 && be->n_unproven > 0)
		return 0; /* one probe at a time while failing */
	return 1;
}

void backend_attempt_succeeded(struct backend *be)
{
	if (be->connect_failures)
		backend_log(be, LOG_INFO, "connected after %u failed attempts, backoff reset", be->connect_failures);
	be->connect_failures = 0;
	be->backoff_ms = 0;
	be->next_attempt = 0;
	be->last_reason = REASON_NONE;
	if (be->pool->cfg->health.type == CFG_CHECK_NONE)
		backend_health_ok(be, "connection proven");
}
