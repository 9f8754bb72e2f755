/*
 * daemon/reload.c — apply a new configuration as a diff (SIGHUP, `reload`).
 *
 * The file is read and validated first; an invalid one changes nothing (the
 * errors go to the log and to the admin's answer, STATUS= says so). A valid
 * one is compared pool by pool, by name:
 *
 *   unchanged  the pool object stays: warm connections, sessions, backend
 *              states and counters untouched; it only points at the new
 *              config's copy of its settings.
 *   changed    same listen paths and the same backend addresses in the same
 *              order: changed in place (limits, timeouts, balance, weights,
 *              backups, health checks, lifetimes, reuse, idle timeouts),
 *              warm connections kept. Health checks restart only if their
 *              settings changed.
 *   replaced   listen paths or the backend list changed: a new pool object
 *              starts warming; it takes over the listening sockets whose
 *              paths stay (no moment without a listener) and the waiting
 *              clients. The old one retires: no new clients, idle
 *              connections closed, running sessions finish.
 *   removed    retires the same way; its socket files are removed, its
 *              waiting clients closed.
 *   added      created, bound and started.
 * New listening sockets are bound before anything is committed, so a path
 * that cannot be bound fails the reload with the old config intact. No
 * active session is ever cut. A retired pool is freed by the reaper once its
 * last session ended, and the old config with the last pool that used it.
 * This file only applies: telling systemd (RELOADING=1, then READY=1 with
 * the new STATUS=) is engine_reload()'s, in engine.c, around reload_run().
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "engine.h"
#include "log.h"

enum pool_change { POOL_ADDED, POOL_UNCHANGED, POOL_CHANGED, POOL_REPLACED };

/* ---- comparing pool configs --------------------------------------------- */

/* What the key table (config/keys.c, cfg_pool_diff) says a changed value
 * costs: the change classes of this file, counted in the summary. */
static enum pool_change classify(const struct cfg_pool *old, const struct cfg_pool *cur, int *health_changed)
{
	bool health = false;

	switch (cfg_pool_diff(old, cur, &health)) {
	case CFG_RELOAD_SAME:
		return POOL_UNCHANGED;
	case CFG_RELOAD_IN_PLACE:
		*health_changed = health;
		return POOL_CHANGED;
	default: /* no pool key is restart-only: a new pool object is the dearest */
		return POOL_REPLACED;
	}
}

static struct pool *find_old(struct engine *eng, const char *name)
{
	for (size_t i = 0; i < eng->n_pools; i++)
		if (strcmp(eng->pools[i]->name, name) == 0)
			return eng->pools[i];
	return NULL;
}

/* ---- the plan ------------------------------------------------------------ */

struct plan_item {
	const struct cfg_pool *cfg; /* in the new config */
	struct pool *old;           /* NULL when added */
	struct pool *fresh;         /* added or replaced: the new object */
	enum pool_change change;
	int health_changed; /* changed in place: its health checks restart */
};

/* Create the new pool objects and bind their new sockets; on failure undo
 * all of it and return -1 with the message in err. */
static int plan_prepare(struct engine *eng, struct plan_item *items, size_t n, char *err, size_t errlen)
{
	for (size_t i = 0; i < n; i++) {
		struct plan_item *it = &items[i];
		if (it->change != POOL_ADDED && it->change != POOL_REPLACED)
			continue;
		it->fresh = pool_create(eng, it->cfg);
		if (!it->fresh) {
			snprintf(err, errlen, "pool %s: out of memory", it->cfg->name);
			goto fail;
		}
		/* Sockets an old pool (this one's predecessor, or a removed or
		 * renamed pool) has at the same path are taken over at commit;
		 * only the others are bound now. */
		if (it->change == POOL_REPLACED && listener_reserve_extras(it->fresh, it->old, pool_client_arrived, err, errlen) < 0)
			goto fail; /* sockets systemd passed beyond the listen paths move too */
		if (pool_open_listeners_except(it->fresh, eng->pools, eng->n_pools, err, errlen) < 0)
			goto fail;
	}
	return 0;
fail:
	for (size_t i = 0; i < n; i++) {
		pool_destroy(items[i].fresh);
		items[i].fresh = NULL;
	}
	return -1;
}

/* The previous config stays alive while a retired pool still uses it. */
static void retire(struct engine *eng, struct pool *p, struct pool *successor, struct old_cfg *oc)
{
	pool_retire(p, successor);
	p->old_cfg = oc;
	oc->pools++;
	list_push_back(&eng->retired, &p->node);
}

static void reload_failed(struct engine *eng, struct wp_buf *out, const char *what, const struct cfg_errors *errs)
{
	eng->reloads_failed++;
	eng->reload_failed = 1;
	log_error("reload failed: %s; still running the previous configuration", what);
	wp_buf_printf(out, "error: reload failed: %s; still running the previous configuration\n", what);
	for (size_t i = 0; errs && i < errs->n; i++) {
		log_error("%s", errs->msg[i]);
		wp_buf_printf(out, "%s\n", errs->msg[i]);
	}
}

int reload_run(struct engine *eng, struct wp_buf *out)
{
	struct wp_config *nc = NULL;
	struct cfg_errors errs = {0};
	char err[512];
	const char *path = eng->cfg->path; /* the old config's: not used after the commit */

	log_notice("reloading %s", path);
	if (cfg_load_file(path, &nc, &errs) < 0) {
		size_t n = errs.n + errs.truncated;
		snprintf(err, sizeof err, "%s: configuration is invalid (%zu error%s)", path, n, n == 1 ? "" : "s");
		reload_failed(eng, out, err, &errs);
		cfg_errors_free(&errs);
		return -1;
	}
	cfg_errors_free(&errs);
	for (size_t i = 0; i < nc->warnings.n; i++) {
		log_warning("%s", nc->warnings.msg[i]);
		wp_buf_printf(out, "%s\n", nc->warnings.msg[i]);
	}

	size_t n = nc->n_pools;
	struct plan_item *items = calloc(n ? n : 1, sizeof *items);
	struct pool **pools = calloc(n ? n : 1, sizeof *pools);
	struct old_cfg *oc = calloc(1, sizeof *oc);
	if (!items || !pools || !oc) {
		free(items);
		free(pools);
		free(oc);
		cfg_free(nc);
		reload_failed(eng, out, "out of memory", NULL);
		return -1;
	}
	size_t counts[4] = {0};
	for (size_t i = 0; i < n; i++) {
		struct plan_item *it = &items[i];
		it->cfg = &nc->pools[i];
		it->old = find_old(eng, it->cfg->name);
		it->change = it->old ? classify(it->old->cfg, it->cfg, &it->health_changed) : POOL_ADDED;
		counts[it->change]++;
	}
	if (plan_prepare(eng, items, n, err, sizeof err) < 0) {
		free(items);
		free(pools);
		free(oc);
		cfg_free(nc);
		reload_failed(eng, out, err, NULL);
		return -1;
	}

	/* Commit: nothing below can fail. New pools take their sockets from
	 * the old ones first, before any old pool closes what it still has. */
	oc->cfg = eng->cfg;
	for (size_t i = 0; i < n; i++) {
		if (items[i].fresh)
			pool_take_listeners(items[i].fresh, eng->pools, eng->n_pools);
		if (items[i].change == POOL_REPLACED)
			listener_take_extras(items[i].fresh, items[i].old);
	}
	size_t removed = 0;
	for (size_t i = 0; i < eng->n_pools; i++) {
		struct pool *p = eng->pools[i];
		const struct plan_item *it = NULL;
		for (size_t k = 0; k < n && !it; k++)
			if (items[k].old == p)
				it = &items[k];
		if (!it) {
			log_notice("pool=%s: removed by reload; draining %zu sessions", p->name, p->relaying.n);
			retire(eng, p, NULL, oc);
			removed++;
		}
	}
	for (size_t i = 0; i < n; i++) {
		struct plan_item *it = &items[i];
		switch (it->change) {
		case POOL_UNCHANGED:
			pool_rebind(it->old, it->cfg, 0);
			pools[i] = it->old;
			break;
		case POOL_CHANGED:
			log_notice("pool=%s: settings changed, applied in place", it->cfg->name);
			pool_rebind(it->old, it->cfg, it->health_changed);
			pools[i] = it->old;
			break;
		case POOL_REPLACED:
			log_notice("pool=%s: sockets or backends changed: a new pool takes over, the old one drains "
			           "%zu sessions",
			           it->cfg->name, it->old->relaying.n);
			retire(eng, it->old, it->fresh, oc);
			pools[i] = it->fresh;
			break;
		case POOL_ADDED:
			log_notice("pool=%s: added", it->cfg->name);
			pools[i] = it->fresh;
			break;
		}
	}
	const struct cfg_daemon *od = &eng->cfg->daemon, *nd = &nc->daemon;
	if (cfg_daemon_diff(od, nd) == CFG_RELOAD_RESTART)
		log_warning("reload: admin_socket, admin_socket_readonly, metrics_listen and fd_store changes take effect at "
		            "the next restart");
	log_set_level(nd->log_level);

	free(eng->pools);
	eng->pools = pools;
	eng->n_pools = n;
	eng->cfg = nc;
	if (oc->pools == 0) {
		cfg_free(oc->cfg);
		free(oc);
	} else {
		list_push_back(&eng->old_cfgs, &oc->node);
	}
	for (size_t i = 0; i < n; i++) {
		if (items[i].change == POOL_REPLACED)
			pool_seed_names(items[i].fresh, items[i].old);
		if (items[i].change == POOL_ADDED || items[i].change == POOL_REPLACED)
			pool_start(items[i].fresh);
	}
	free(items);

	eng->reloads_ok++;
	eng->reload_failed = 0;
	snprintf(err, sizeof err,
	         "reloaded %s: %zu pool%s (%zu unchanged, %zu changed in place, %zu replaced, %zu added, %zu removed)",
	         eng->cfg->path, n, n == 1 ? "" : "s", counts[POOL_UNCHANGED], counts[POOL_CHANGED], counts[POOL_REPLACED], counts[POOL_ADDED],
	         removed);
	log_notice("%s", err);
	wp_buf_printf(out, "%s\n", err);
	return 0;
}

/* A retired pool whose last session ended: free it, and its config with
 * the last pool that used it. Called from the reaper. */
void reload_reap_retired(struct engine *eng)
{
	struct list_node *pos, *tmp;
	list_for_each_safe (pos, tmp, &eng->retired) {
		struct pool *p = container_of(pos, struct pool, node);
		if (p->relaying.n || p->n_conns[BCONN_ACTIVE])
			continue;
		list_remove(&eng->retired, &p->node);
		struct old_cfg *oc = p->old_cfg;
		log_info("pool=%s: retired pool drained and freed", p->name);
		pool_destroy(p);
		if (oc && --oc->pools == 0) {
			list_remove(&eng->old_cfgs, &oc->node);
			cfg_free(oc->cfg);
			free(oc);
		}
	}
}
