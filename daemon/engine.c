/*
 * daemon/engine.c — the loop, its signals, and the order of shutdown.
 *
 * SIGTERM: stop accepting (listeners closed, socket files removed), close
 * idle connections and waiting clients, let relaying sessions finish for up
 * to shutdown_timeout, then exit 0. A second SIGTERM, or SIGINT at any time,
 * closes everything at once and exits 0. SIGHUP is logged and ignored until
 * live reload exists (it must not kill the daemon, as its default would).
 *
 * Objects closed inside callbacks are freed by the reaper (an ev_prepare
 * watcher, so after every callback of the iteration has run). The reaper
 * also runs deferred floor refills (after the iteration's client I/O) and
 * ends the loop when a drain has finished. STATUS= is rebuilt at most
 * once a second, and sent only when it changed.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "engine.h"
#include "log.h"
#include "systemd.h"

#define STATUS_INTERVAL 1.0

uint64_t engine_next_id(struct engine *eng)
{
	return ++eng->next_id;
}

/* xorshift64*: plenty for jitter, and no process-global state. */
double engine_random(void *ctx)
{
	struct engine *eng = ctx;
	uint64_t x = eng->rng;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	eng->rng = x;
	return (double)((x * 0x2545F4914F6CDD1DULL) >> 11) / 9007199254740992.0; /* [0, 1) */
}

void engine_changed(struct engine *eng)
{
	eng->status_dirty = 1;
}

static size_t engine_active_sessions(const struct engine *eng)
{
	size_t n = 0;
	for (size_t i = 0; i < eng->n_pools; i++)
		n += eng->pools[i]->relaying.n;
	return n;
}

static void engine_format_status(const struct engine *eng, char *buf, size_t len)
{
	size_t off = 0;
	if (eng->stopping)
		off += (size_t)snprintf(buf, len, "stopping: ");
	for (size_t i = 0; i < eng->n_pools && off < len; i++) {
		const struct pool *p = eng->pools[i];
		off += (size_t)snprintf(buf + off, len - off, "%s%s: %zu idle, %zu active, %zu waiting",
		                        i ? "; " : "", p->name, p->n_conns[BCONN_IDLE], p->relaying.n,
		                        p->waiting.n);
	}
	if (off >= len && len > 4)
		memcpy(buf + len - 4, "...", 4);
}

static void engine_update_status(struct engine *eng, int force)
{
	if (!eng->status_dirty && !force)
		return;
	eng->status_dirty = 0;
	char buf[sizeof eng->status];
	engine_format_status(eng, buf, sizeof buf);
	if (!force && strcmp(buf, eng->status) == 0)
		return;
	memcpy(eng->status, buf, sizeof buf);
	systemd_status(eng->status);
}

static void status_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	engine_update_status(container_of(w, struct engine, status_timer), 0);
}

/* Free what callbacks closed during this iteration. */
static void engine_reap(struct engine *eng)
{
	struct list_node *pos, *tmp;
	list_for_each_safe (pos, tmp, &eng->dead_conns) {
		list_remove(&eng->dead_conns, pos);
		bconn_free(container_of(pos, struct bconn, node));
	}
	list_for_each_safe (pos, tmp, &eng->dead_sessions) {
		list_remove(&eng->dead_sessions, pos);
		session_free(container_of(pos, struct session, node));
	}
}

static void reaper_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
	(void)revents;
	struct engine *eng = container_of(w, struct engine, reaper);
	pool_run_deferred_refills(eng);
	engine_reap(eng);
	if (eng->stopping && engine_active_sessions(eng) == 0) {
		log_info("drained: no active sessions left, exiting");
		ev_break(loop, EVBREAK_ALL);
	}
}

static void shutdown_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)revents;
	struct engine *eng = container_of(w, struct engine, shutdown_timer);
	log_warning("shutdown_timeout: closing %zu sessions still active", engine_active_sessions(eng));
	ev_break(loop, EVBREAK_ALL);
}

static void sigterm_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	(void)revents;
	struct engine *eng = container_of(w, struct engine, sig_term);
	if (eng->stopping) {
		log_notice("SIGTERM again: closing %zu active sessions now", engine_active_sessions(eng));
		ev_break(loop, EVBREAK_ALL);
		return;
	}
	eng->stopping = 1;
	double limit = (double)eng->cfg->daemon.shutdown_timeout_ms / 1000.0;
	log_notice("SIGTERM: shutting down: no new clients, draining %zu active sessions for up to %.1fs",
	           engine_active_sessions(eng), limit);
	for (size_t i = 0; i < eng->n_pools; i++)
		pool_stop(eng->pools[i]);
	engine_update_status(eng, 1);
	systemd_stopping(eng->status);
	ev_timer_set(&eng->shutdown_timer, limit, 0.);
	ev_timer_start(loop, &eng->shutdown_timer);
}

static void sigint_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	(void)revents;
	struct engine *eng = container_of(w, struct engine, sig_int);
	log_notice("SIGINT: closing everything and exiting (%zu active sessions)",
	           engine_active_sessions(eng));
	eng->stopping = 1;
	systemd_stopping("stopping: SIGINT");
	ev_break(loop, EVBREAK_ALL);
}

static void sighup_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
	log_notice("SIGHUP: live reload is not available in this version; configuration unchanged");
}

struct engine *engine_create(const struct wp_config *cfg)
{
	struct engine *eng = calloc(1, sizeof *eng);
	if (!eng)
		return NULL;
	eng->cfg = cfg;
	list_init(&eng->dead_conns);
	list_init(&eng->dead_sessions);
	list_init(&eng->refill_soon);
	eng->loop = ev_default_loop(EVFLAG_AUTO);
	if (!eng->loop) {
		free(eng);
		return NULL;
	}
	if (getrandom(&eng->rng, sizeof eng->rng, GRND_NONBLOCK) != sizeof eng->rng || eng->rng == 0)
		eng->rng = ((uint64_t)time(NULL) << 20) ^ (uint64_t)getpid() ^ 0x9E3779B97F4A7C15ULL;
	ev_signal_init(&eng->sig_term, sigterm_cb, SIGTERM);
	ev_signal_init(&eng->sig_int, sigint_cb, SIGINT);
	ev_signal_init(&eng->sig_hup, sighup_cb, SIGHUP);
	ev_timer_init(&eng->shutdown_timer, shutdown_timer_cb, 0., 0.);
	ev_timer_init(&eng->status_timer, status_timer_cb, STATUS_INTERVAL, STATUS_INTERVAL);
	ev_prepare_init(&eng->reaper, reaper_cb);

	eng->pools = calloc(cfg->n_pools ? cfg->n_pools : 1, sizeof *eng->pools);
	if (!eng->pools) {
		engine_destroy(eng);
		return NULL;
	}
	for (size_t i = 0; i < cfg->n_pools; i++) {
		eng->pools[i] = pool_create(eng, &cfg->pools[i]);
		if (!eng->pools[i]) {
			engine_destroy(eng);
			return NULL;
		}
		eng->n_pools++;
	}
	return eng;
}

int engine_listen(struct engine *eng, char *err, size_t errlen)
{
	for (size_t i = 0; i < eng->n_pools; i++)
		if (pool_open_listeners(eng->pools[i], err, errlen) < 0)
			return -1;
	return 0;
}

int engine_run(struct engine *eng)
{
	struct ev_loop *loop = eng->loop;
	ev_signal_start(loop, &eng->sig_term);
	ev_signal_start(loop, &eng->sig_int);
	ev_signal_start(loop, &eng->sig_hup);
	ev_prepare_start(loop, &eng->reaper);
	ev_timer_start(loop, &eng->status_timer);
	for (size_t i = 0; i < eng->n_pools; i++)
		pool_start(eng->pools[i]);
	engine_update_status(eng, 1);
	systemd_ready(eng->status);
	log_info("ready: %zu pools", eng->n_pools);
	ev_run(loop, 0);
	return 0;
}

void engine_destroy(struct engine *eng)
{
	if (!eng)
		return;
	struct ev_loop *loop = eng->loop;
	eng->stopping = 1; /* closing sessions below must not start refills */
	for (size_t i = 0; i < eng->n_pools; i++)
		pool_destroy(eng->pools[i]);
	free(eng->pools);
	engine_reap(eng); /* what the pools just buried */
	pipes_destroy(&eng->pipes);
	if (loop) {
		ev_signal_stop(loop, &eng->sig_term);
		ev_signal_stop(loop, &eng->sig_int);
		ev_signal_stop(loop, &eng->sig_hup);
		ev_timer_stop(loop, &eng->shutdown_timer);
		ev_timer_stop(loop, &eng->status_timer);
		ev_prepare_stop(loop, &eng->reaper);
		ev_loop_destroy(loop);
	}
	free(eng);
}
