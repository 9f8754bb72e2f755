/*
 * daemon/engine.c — the loop, its signals, and the order of shutdown.
 *
 * SIGTERM: stop accepting (listeners closed, socket files removed, except
 * those systemd's fd store keeps for the next start: fdstore.c), close
 * idle connections (the stored ones stay in the store) and waiting clients, let relaying sessions finish for up
 * to shutdown_timeout, then exit 0. A second SIGTERM, or SIGINT at any time,
 * closes everything at once and exits 0. SIGHUP reloads the configuration
 * (reload.c), as the admin `reload` command does. SIGUSR2 upgrades in
 * place (upgrade.c), as the admin `upgrade` command does; once the new
 * process is ready this one drains as after SIGTERM (engine_drain), without
 * telling systemd.
 *
 * Objects closed inside callbacks are freed by the reaper (an ev_prepare
 * watcher, so after every callback of the iteration has run). The reaper
 * also runs deferred floor refills (after the iteration's client I/O) and
 * ends the loop when a drain has finished, and frees pools a reload retired
 * once their last session ended. STATUS= is rebuilt at most once a second,
 * and sent only when it changed.
 *
 * The engine owns the configuration it runs (and, after reloads, the older
 * ones retired pools still use).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "admin.h"
#include "buf.h"
#include "engine.h"
#include "fdstore.h"
#include "log.h"
#include "systemd.h"
#include "upgrade.h"

#define STATUS_INTERVAL 1.0

static size_t engine_active_sessions(const struct engine *eng)
{
	size_t n = 0;
	struct list_node *pos, *tmp;
	for (size_t i = 0; i < eng->n_pools; i++)
		n += eng->pools[i]->relaying.n;
	list_for_each_safe (pos, tmp, &eng->retired)
		n += container_of(pos, struct pool, node)->relaying.n;
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
	if (eng->reload_failed && off < len)
		off += (size_t)snprintf(buf + off, len - off, " (last reload failed: see the log)");
	if (off >= len && len > 4)
		memcpy(buf + len - 4, "...", 4);
}

void engine_refresh_status(struct engine *eng)
{
	eng->status_dirty = 0;
	engine_format_status(eng, eng->status, sizeof eng->status);
}

void engine_update_status(struct engine *eng, int force)
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

/* The loop never blocks, so this timer firing proves the loop is alive. */
static void watchdog_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
	systemd_watchdog();
}

/* Free what callbacks closed during this iteration. */
static void engine_reap(struct engine *eng)
{
	bconn_reap(eng);
	session_reap(eng);
	for (size_t i = 0; i < eng->n_pools; i++)
		pool_reap_gone(eng->pools[i]);
}

static void reaper_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
	(void)revents;
	struct engine *eng = container_of(w, struct engine, reaper);
	pool_run_deferred_refills(eng);
	engine_reap(eng);
	reload_reap_retired(eng);
	if (eng->stopping && engine_active_sessions(eng) == 0) {
		log_info("drained: no active sessions left, exiting");
		ev_break(loop, EVBREAK_ALL);
	}
}

static void shutdown_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)revents;
	struct engine *eng = container_of(w, struct engine, shutdown_timer);
	size_t n = engine_active_sessions(eng);
	log_warning("shutdown_timeout: closing %zu session%s still active", n, n == 1 ? "" : "s");
	ev_break(loop, EVBREAK_ALL);
}

static void sigterm_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	(void)revents;
	struct engine *eng = container_of(w, struct engine, sig_term);
	if (eng->stopping) {
		size_t n = engine_active_sessions(eng);
		log_notice("SIGTERM again: closing %zu active session%s now", n, n == 1 ? "" : "s");
		ev_break(loop, EVBREAK_ALL);
		return;
	}
	engine_drain(eng, "SIGTERM", 0);
}

void engine_drain(struct engine *eng, const char *why, int quiet)
{
	char cancel[80];
	snprintf(cancel, sizeof cancel, "the daemon is stopping (%s)", why);
	upgrade_cancel(eng, cancel); /* an upgrade running: its held connections come back first */
	eng->stopping = 1;
	double limit = (double)eng->cfg->daemon.shutdown_timeout_ms / 1000.0;
	size_t n = engine_active_sessions(eng);
	log_notice("%s: shutting down: no new clients, draining %zu active session%s for up to %.1fs", why, n,
	           n == 1 ? "" : "s", limit);
	for (size_t i = 0; i < eng->n_pools; i++)
		pool_stop(eng->pools[i]);
	engine_refresh_status(eng); /* sent with STOPPING=1, in one message */
	if (!quiet && !upgrade_handed_over()) /* else the new process is the main pid: not stopping */
		systemd_stopping(eng->status);
	ev_timer_set(&eng->shutdown_timer, limit, 0.);
	ev_timer_start(eng->loop, &eng->shutdown_timer);
}

static void sigint_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	(void)revents;
	struct engine *eng = container_of(w, struct engine, sig_int);
	size_t n = engine_active_sessions(eng);
	log_notice("SIGINT: closing everything and exiting (%zu active session%s)", n, n == 1 ? "" : "s");
	eng->stopping = 1;
	systemd_stopping("stopping: SIGINT");
	ev_break(loop, EVBREAK_ALL);
}

int engine_reload(struct engine *eng, struct wp_buf *out)
{
	if (eng->stopping) { /* systemd already heard STOPPING=1: no RELOADING/READY now */
		log_warning("reload refused: shutting down");
		wp_buf_printf(out, "error: reload failed: shutting down\n");
		return -1;
	}
	systemd_reloading("reloading the configuration");
	int r = reload_run(eng, out);
	engine_refresh_status(eng);
	systemd_ready(eng->status); /* READY=1 with the new STATUS=, one message */
	return r;
}

static void sighup_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	(void)loop;
	(void)revents;
	struct engine *eng = container_of(w, struct engine, sig_hup);
	struct wp_buf out; /* the admin's answer; the log has the same lines */
	wp_buf_init(&out, 1 << 20);
	log_notice("SIGHUP: reloading");
	(void)engine_reload(eng, &out);
	wp_buf_free(&out);
}

struct engine *engine_create(struct wp_config *cfg)
{
	struct engine *eng = calloc(1, sizeof *eng);
	if (!eng) {
		cfg_free(cfg);
		return NULL;
	}
	if (tls_init() < 0) {
		log_error("cannot initialise OpenSSL");
		cfg_free(cfg);
		free(eng);
		return NULL;
	}
	eng->cfg = cfg;
	list_init(&eng->retired);
	list_init(&eng->old_cfgs);
	list_init(&eng->dead_conns);
	list_init(&eng->dead_sessions);
	list_init(&eng->refill_soon);
	eng->loop = ev_default_loop(EVFLAG_AUTO);
	if (!eng->loop || dns_library_init() < 0) {
		cfg_free(cfg);
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
	ev_timer_init(&eng->watchdog, watchdog_cb, 0., 0.);
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
	eng->admin = admin_create(eng, engine_reload);
	if (!eng->admin) {
		engine_destroy(eng);
		return NULL;
	}
	return eng;
}

int engine_listen(struct engine *eng, char *err, size_t errlen)
{
	/* Socket activation (systemd.h): pools take their passed fds first. */
	if (systemd_listen_init(err, errlen) < 0)
		return -1;
	for (size_t i = 0; i < eng->n_pools; i++)
		if (listener_adopt_passed(eng->pools[i], pool_client_arrived, err, errlen) < 0)
			return -1;
	/* Connections systemd kept in its fd store: idle again before the
	 * pools start (their first refill counts them) and before READY=1. */
	fdstore_adopt(eng);
	for (size_t i = 0; i < eng->n_pools; i++)
		if (pool_open_listeners(eng->pools[i], err, errlen) < 0)
			return -1;
	if (admin_open(eng->admin, &eng->cfg->daemon, err, errlen) < 0)
		return -1;
	/* Last: every taker (the pools above, the admin socket with "admin")
	 * must have run, so any passed fd left is one nobody wants. */
	if (systemd_check_unclaimed(err, errlen) < 0)
		return -1;
	systemd_listen_done();
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
	double wd = systemd_watchdog_interval();
	if (wd > 0) {
		ev_timer_set(&eng->watchdog, wd, wd);
		ev_timer_start(loop, &eng->watchdog);
		log_info("watchdog: every %gs", wd);
	}
	eng->started_at = ev_now(loop);
	systemd_notify_start(loop);
	admin_start(eng->admin);
	for (size_t i = 0; i < eng->n_pools; i++)
		pool_start(eng->pools[i]);
	engine_refresh_status(eng); /* sent with READY=1: the first message */
	systemd_ready(eng->status);
	upgrade_child_ready(); /* started by an upgrade: the old process stops accepting now */
	upgrade_watch(eng);    /* SIGUSR2 */
	log_info("ready: %zu pool%s", eng->n_pools, eng->n_pools == 1 ? "" : "s");
	ev_run(loop, 0);
	return 0;
}

void engine_destroy(struct engine *eng)
{
	if (!eng)
		return;
	struct ev_loop *loop = eng->loop;
	upgrade_destroy(eng); /* a running upgrade ends: its child killed, held connections closed */
	eng->stopping = 1; /* closing sessions below must not start refills */
	admin_destroy(eng->admin);
	for (size_t i = 0; i < eng->n_pools; i++)
		pool_destroy(eng->pools[i]);
	free(eng->pools);
	eng->pools = NULL;
	eng->n_pools = 0;
	struct list_node *pos, *tmp;
	list_for_each_safe (pos, tmp, &eng->retired) {
		list_remove(&eng->retired, pos);
		pool_destroy(container_of(pos, struct pool, node));
	}
	list_for_each_safe (pos, tmp, &eng->old_cfgs) {
		list_remove(&eng->old_cfgs, pos);
		cfg_free(container_of(pos, struct old_cfg, node)->cfg);
		free(container_of(pos, struct old_cfg, node));
	}
	engine_reap(eng); /* what the pools just buried */
	pipes_destroy(&eng->pipes);
	systemd_listen_done(); /* closes passed fds nobody claimed (a failed startup) */
	systemd_notify_close();
	dns_library_cleanup();
	if (loop) {
		ev_signal_stop(loop, &eng->sig_term);
		ev_signal_stop(loop, &eng->sig_int);
		ev_signal_stop(loop, &eng->sig_hup);
		ev_timer_stop(loop, &eng->shutdown_timer);
		ev_timer_stop(loop, &eng->status_timer);
		ev_timer_stop(loop, &eng->watchdog);
		ev_prepare_stop(loop, &eng->reaper);
		ev_loop_destroy(loop);
	}
	cfg_free(eng->cfg);
	OPENSSL_cleanse(eng->nonces, sizeof eng->nonces); /* reset nonces not used */
	free(eng);
}
