/*
 * daemon/listener.c — a pool's Unix listening socket.
 *
 * Binding is unix_listen() (unixsock.h, over lib/sock.h): a stale socket
 * file is replaced, a live one is an error naming the path, the mode is never
 * wider than asked.
 *
 * Socket activation (systemd.h): before binding, a pool takes the sockets
 * systemd passed under its name. One bound at a path the pool lists is used
 * instead of binding that path (so it is never bound twice); any other is an
 * extra listener of the pool. We did not create their files: their mode is
 * left as the .socket unit set it and they are never unlinked. A pool's
 * listen path that systemd passed under another name is an error, not a
 * bind that would find "another process" listening.
 *
 * Accepting: unix_accept() (unixsock.h), as for the handoff and admin
 * sockets: at most SOCK_ACCEPT_BATCH per wake-up so one busy pool cannot
 * starve the rest; out of file descriptors (EMFILE/ENFILE) pauses accepting
 * for UNIX_ACCEPT_PAUSE seconds instead of spinning on a readable socket we
 * cannot accept from.
 *
 * Access control (allow:): an accepted client's SO_PEERCRED credentials
 * (taken by the kernel at connect()) are checked before the pool sees it;
 * one not allowed is closed at once. Only the uid and the primary gid are
 * compared: supplementary groups would need getgrouplist() on the peer's
 * user name, a blocking NSS lookup the event loop cannot make. The rule of a
 * listen item is its own allow: or else the pool's (the loader copies it);
 * an extra socket systemd passed has no listen item and takes the pool's.
 * Denials are logged at most once a second per socket, and every line says
 * how many were left out since the previous one, so a client retrying in a
 * loop cannot flood the log; the clients_denied counter has them all.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "engine.h"
#include "fdstore.h"
#include "log.h"
#include "systemd.h"
#include "upgrade.h"

static void listener_accept_cb(struct ev_loop *loop, ev_io *w, int revents);

/* ---- access control -------------------------------------------------- */

/* Is `id` in the sorted array v[0..n)? */
static int id_listed(const uint32_t *v, size_t n, uint32_t id)
{
	size_t lo = 0, hi = n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (v[mid] == id)
			return 1;
		if (v[mid] < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return 0;
}

/* The rule of this listener: its listen item's (its own allow:, or the
 * pool's copied by the loader), or the pool's for a passed extra socket. */
static const struct cfg_allow *listener_allow(const struct listener *l)
{
	return l->cfg == &l->passed_cfg ? &l->pool->cfg->allow : &l->cfg->allow;
}

/* "; allow uids 0,1000 gids 50" for the "listening on" line, or "". */
static const char *allow_summary(const struct cfg_allow *a, char *buf, size_t sz)
{
	size_t o = 0;
	if (!a->enabled)
		return "";
	o += (size_t)snprintf(buf, sz, "; allow");
	for (int g = 0; g < 2 && o < sz; g++) {
		const uint32_t *v = g ? (const uint32_t *)a->gids : (const uint32_t *)a->uids;
		size_t n = g ? a->n_gids : a->n_uids;
		if (n)
			o += (size_t)snprintf(buf + o, sz - o, " %s ", g ? "gids" : "uids");
		for (size_t i = 0; i < n && o < sz; i++)
			o += (size_t)snprintf(buf + o, sz - o, "%s%" PRIu32, i ? "," : "", v[i]);
	}
	if (o >= sz && sz > 4)
		memcpy(buf + sz - 4, "...", 4);
	return buf;
}

/* One denial: counted always, logged unless one was logged less than
 * PEER_GATE_LOG_EVERY ago (then counted for the next line). */
static void deny(struct pool *p, struct peer_gate *g, int prio, const char *path, const char *what)
{
	ev_tstamp now = ev_now(p->eng->loop);
	p->stats.clients_denied++;
	if (g->logged_at > 0 && now - g->logged_at < PEER_GATE_LOG_EVERY) {
		g->unlogged++;
		return;
	}
	if (g->unlogged)
		log_msg(prio, "pool=%s: %s: %s, closed (%" PRIu64 " more denied since the last such line)",
		        p->name, path, what, g->unlogged);
	else
		log_msg(prio, "pool=%s: %s: %s, closed", p->name, path, what);
	g->logged_at = now;
	g->unlogged = 0;
}

int listener_admit(struct pool *p, const struct cfg_allow *allow, struct peer_gate *g, const char *path,
                   int cfd)
{
	struct ucred cr;
	socklen_t len = sizeof cr;
	char what[160];

	if (!allow->enabled)
		return 1;
	int r = getsockopt(cfd, SOL_SOCKET, SO_PEERCRED, &cr, &len);
	if (r < 0 || len != sizeof cr) {
		snprintf(what, sizeof what, "cannot read the client's credentials (SO_PEERCRED: %s)",
		         r < 0 ? strerror(errno) : "short answer");
		close(cfd);
		deny(p, g, LOG_WARNING, path, what);
		return 0;
	}
	if (id_listed((const uint32_t *)allow->uids, allow->n_uids, (uint32_t)cr.uid) ||
	    id_listed((const uint32_t *)allow->gids, allow->n_gids, (uint32_t)cr.gid))
		return 1;
	close(cfd);
	snprintf(what, sizeof what, "client uid=%u gid=%u pid=%d not allowed", (unsigned)cr.uid,
	         (unsigned)cr.gid, (int)cr.pid);
	deny(p, g, LOG_INFO, path, what);
	return 0;
}

/* ---- listening sockets --------------------------------------------------- */

/* Use a socket systemd passed (already listening, non-blocking, close-on-exec). */
static void listener_adopt(struct listener *l, int fd)
{
	l->fd = fd;
	l->passed = 1;
	l->us.created = 0;
	unix_accept_init(&l->io, &l->pause, listener_accept_cb, fd);
	char allow[200];
	log_info("pool=%s: listening on %s (passed by systemd%s)", l->pool->name, l->cfg->path,
	         allow_summary(listener_allow(l), allow, sizeof allow));
}

/* Grow p's listeners by `extra` slots for extra sockets systemd passed, each
 * closed (fd -1) with cfg at its own passed_cfg, whose path is set when a
 * socket is taken into it (an empty slot is never opened). The listeners
 * move: none may be started yet. 0, or -1 with a message in err. */
static int add_passed_slots(struct pool *p, size_t extra, listener_accept_fn *on_accept, char *err,
                            size_t errlen)
{
	struct listener *ls = realloc(p->listeners, (p->n_listeners + extra) * sizeof *ls);
	if (!ls) {
		snprintf(err, errlen, "pool=%s: out of memory for %zu passed sockets", p->name, extra);
		return -1;
	}
	memset(ls + p->n_listeners, 0, extra * sizeof *ls);
	for (size_t i = p->n_listeners; i < p->n_listeners + extra; i++) {
		ls[i].pool = p;
		ls[i].on_accept = on_accept;
		ls[i].fd = -1;
		ls[i].cfg = &ls[i].passed_cfg;
		ls[i].passed_cfg.path = ls[i].passed_path;
	}
	p->listeners = ls;
	p->n_listeners += extra;
	return 0;
}

int listener_adopt_passed(struct pool *p, listener_accept_fn *on_accept, char *err, size_t errlen)
{
	for (size_t i = 0; i < p->n_listeners; i++) {
		struct listener *l = &p->listeners[i];
		int fd = l->fd < 0 ? systemd_take_listen_fd_at(p->name, l->cfg->path) : -1;
		if (fd >= 0)
			listener_adopt(l, fd);
	}
	size_t extra = systemd_count_listen_fds(p->name);
	if (extra == 0)
		return 0;
	/* Nothing is started yet: moving the listeners is safe. */
	if (add_passed_slots(p, extra, on_accept, err, errlen) < 0)
		return -1;
	for (size_t i = p->n_listeners - extra; i < p->n_listeners; i++) {
		int fd = systemd_take_listen_fd(p->name);
		if (fd < 0)
			break; /* cannot happen: counted above */
		struct listener *l = &p->listeners[i];
		snprintf(l->passed_path, sizeof l->passed_path, "%s", systemd_listen_fd_address(fd));
		listener_adopt(l, fd); /* owned from here on: listener_close() closes it */
		if (!systemd_listen_fd_is_unix(fd)) {
			snprintf(err, errlen,
			         "socket activation: fd %d named \"%s\" (%s) is not a Unix socket "
			         "(pools listen on Unix sockets only)",
			         fd, p->name, l->passed_path);
			return -1;
		}
	}
	return 0;
}

int listener_open(struct listener *l, char *err, size_t errlen)
{
	if (l->fd >= 0 || l->cfg == &l->passed_cfg)
		return 0; /* passed by systemd, or a slot reserved for such a socket */
	const char *path = l->cfg->path;
	const char *name;
	int pfd = systemd_listen_fd_at(path, &name);
	if (pfd >= 0) {
		snprintf(
		    err, errlen,
		    "%s: systemd passed this socket as fd %d named \"%s\", but it is a listen path of pool "
		    "\"%s\": set FileDescriptorName=%s",
		    path, pfd, name, l->pool->name, l->pool->name);
		return -1;
	}
	if (unix_listen(path, l->cfg->mode, SOCK_STREAM, &l->us, err, errlen) < 0)
		return -1;
	l->fd = l->us.fd;
	unix_accept_init(&l->io, &l->pause, listener_accept_cb, l->fd);
	char allow[200];
	log_info("pool=%s: listening on %s (mode %04o%s)", l->pool->name, path, (unsigned)l->cfg->mode,
	         allow_summary(listener_allow(l), allow, sizeof allow));
	fdstore_listener_opened(l); /* kept by systemd across a restart (fdstore.h) */
	return 0;
}

void listener_adopt_stored(struct listener *l, int fd, dev_t dev, ino_t ino)
{
	char err[512], allow[200];
	l->fd = fd;
	l->passed = 0;
	l->us.fd = fd;
	l->us.path = l->cfg->path;
	l->us.dev = dev;
	l->us.ino = ino;
	l->us.created = 1; /* we bound it before the restart: ours to remove when it closes for good */
	unix_accept_init(&l->io, &l->pause, listener_accept_cb, fd);
	/* The mode may have changed in the file since: the file is the one we
	 * bound (fdstore.c checked its inode). */
	if (sock_unix_chmod_ours(&l->us, l->cfg->mode, err, sizeof err) < 0)
		log_warning("pool=%s: cannot apply mode %04o: %s", l->pool->name, (unsigned)l->cfg->mode, err);
	log_info("pool=%s: listening on %s (%s; mode %04o%s)", l->pool->name, l->cfg->path,
	         upgrade_is_child() ? "passed by the process upgraded"
	                            : "kept in systemd's fd store across the restart",
	         (unsigned)l->cfg->mode,
	         allow_summary(listener_allow(l), allow, sizeof allow));
}

void listener_start(struct listener *l)
{
	if (l->fd >= 0)
		ev_io_start(l->pool->eng->loop, &l->io);
}

void listener_close(struct listener *l)
{
	struct ev_loop *loop = l->pool->eng->loop;
	int kept = 0;
	if (l->fd >= 0) {
		ev_io_stop(loop, &l->io);
		ev_timer_stop(loop, &l->pause);
		kept = fdstore_listener_closing(l);
		close(l->fd);
		l->fd = -1;
	}
	if (kept)
		l->us.created = 0; /* systemd keeps the socket for the next start: its file stays */
	else
		sock_unix_unlink_ours(&l->us);
}

/* One accepted client: the pool's allow: first. Stops the batch when the
 * listener was closed meanwhile (the pool went away under the client). */
static int listener_take(void *arg, int cfd)
{
	struct listener *l = arg;
	if (listener_admit(l->pool, listener_allow(l), &l->gate, l->cfg->path, cfd))
		l->on_accept(l->pool, cfd);
	return l->fd < 0;
}

static void listener_accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)revents;
	struct listener *l = container_of(w, struct listener, io);
	unix_accept(loop, &l->io, &l->pause, listener_take, l, l->pool->name, NULL, l->cfg->path);
}

void listener_move(struct listener *dst, struct listener *src)
{
	struct ev_loop *loop = src->pool->eng->loop;
	ev_io_stop(loop, &src->io);
	ev_timer_stop(loop, &src->pause);
	dst->fd = src->fd;
	dst->us = src->us;
	dst->us.path = dst->cfg->path; /* the same path, owned by the new config */
	dst->passed = src->passed;
	src->fd = -1;
	src->us.created = 0;
	src->passed = 0;
	unix_accept_init(&dst->io, &dst->pause, listener_accept_cb, dst->fd);
}

/* An extra passed socket: open, and at a path no listen: of the config names. */
static int is_passed_extra(const struct listener *l)
{
	return l->fd >= 0 && l->cfg == &l->passed_cfg;
}

static int is_reserved(const struct listener *l)
{
	return l->cfg == &l->passed_cfg;
}

int listener_reserve_extras(struct pool *dst, const struct pool *src, listener_accept_fn *on_accept,
                            char *err, size_t errlen)
{
	size_t extra = 0;
	for (size_t i = 0; i < src->n_listeners; i++)
		extra += is_passed_extra(&src->listeners[i]);
	if (extra == 0)
		return 0;
	return add_passed_slots(dst, extra, on_accept, err, errlen);
}

void listener_take_extras(struct pool *dst, struct pool *src)
{
	size_t k = 0;
	for (size_t i = 0; i < src->n_listeners; i++) {
		struct listener *from = &src->listeners[i];
		if (!is_passed_extra(from))
			continue;
		while (k < dst->n_listeners &&
		       (dst->listeners[k].fd >= 0 || !is_reserved(&dst->listeners[k])))
			k++;
		if (k == dst->n_listeners)
			return; /* not reserved: the old pool keeps (and closes) it */
		struct listener *to = &dst->listeners[k];
		memcpy(to->passed_path, from->passed_path, sizeof to->passed_path);
		to->passed_cfg.mode = from->passed_cfg.mode;
		listener_move(to, from);
	}
}
