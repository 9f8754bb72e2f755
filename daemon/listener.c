/*
 * daemon/listener.c — a pool's Unix listening socket.
 *
 * Binding is unix_listen() (unixsock.h): a stale socket file is replaced, a
 * live one is an error naming the path, the mode is never wider than asked.
 *
 * Socket activation (systemd.h): before binding, a pool takes the sockets
 * systemd passed under its name. One bound at a path the pool lists is used
 * instead of binding that path (so it is never bound twice); any other is an
 * extra listener of the pool. We did not create their files: their mode is
 * left as the .socket unit set it and they are never unlinked. A pool's
 * listen path that systemd passed under another name is an error, not a
 * bind that would find "another process" listening.
 *
 * Accepting: accept4(SOCK_NONBLOCK|SOCK_CLOEXEC) until EAGAIN, at most
 * ACCEPT_BATCH per wake-up so one busy pool cannot starve the rest. Out of
 * file descriptors (EMFILE/ENFILE) pauses accepting for ACCEPT_PAUSE seconds
 * instead of spinning on a readable socket we cannot accept from.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "engine.h"
#include "log.h"
#include "systemd.h"

#define ACCEPT_BATCH 64
#define ACCEPT_PAUSE 0.1

static void listener_accept_cb(struct ev_loop *loop, ev_io *w, int revents);

static void listener_resume_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)revents;
	struct listener *l = container_of(w, struct listener, pause);
	if (l->fd >= 0)
		ev_io_start(loop, &l->io);
}

/* Use a socket systemd passed (already listening, non-blocking, close-on-exec). */
static void listener_adopt(struct listener *l, int fd)
{
	l->fd = fd;
	l->passed = 1;
	l->us.created = 0;
	ev_io_init(&l->io, listener_accept_cb, fd, EV_READ);
	ev_timer_init(&l->pause, listener_resume_cb, ACCEPT_PAUSE, 0.);
	log_info("pool=%s: listening on %s (passed by systemd)", l->pool->name, l->cfg->path);
}

int listener_adopt_passed(struct pool *p, char *err, size_t errlen)
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
	struct listener *ls = realloc(p->listeners, (p->n_listeners + extra) * sizeof *ls);
	if (!ls) {
		snprintf(err, errlen, "pool=%s: out of memory for %zu passed sockets", p->name, extra);
		return -1;
	}
	p->listeners = ls;
	for (size_t k = 0; k < extra; k++) {
		int fd = systemd_take_listen_fd(p->name);
		if (fd < 0)
			break; /* cannot happen: counted above */
		struct listener *l = &p->listeners[p->n_listeners++];
		memset(l, 0, sizeof *l);
		l->pool = p;
		snprintf(l->passed_path, sizeof l->passed_path, "%s", systemd_listen_fd_address(fd));
		l->passed_cfg.path = l->passed_path;
		l->cfg = &l->passed_cfg;
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
	if (unix_listen(path, l->cfg->mode, &l->us, err, errlen) < 0)
		return -1;
	l->fd = l->us.fd;
	ev_io_init(&l->io, listener_accept_cb, l->fd, EV_READ);
	ev_timer_init(&l->pause, listener_resume_cb, ACCEPT_PAUSE, 0.);
	log_info("pool=%s: listening on %s (mode %04o)", l->pool->name, path, (unsigned)l->cfg->mode);
	return 0;
}

void listener_start(struct listener *l)
{
	if (l->fd >= 0)
		ev_io_start(l->pool->eng->loop, &l->io);
}

void listener_close(struct listener *l)
{
	struct ev_loop *loop = l->pool->eng->loop;
	if (l->fd >= 0) {
		ev_io_stop(loop, &l->io);
		ev_timer_stop(loop, &l->pause);
		close(l->fd);
		l->fd = -1;
	}
	unix_unlink_ours(&l->us);
}

static void listener_accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)revents;
	struct listener *l = container_of(w, struct listener, io);
	for (int i = 0; i < ACCEPT_BATCH && l->fd >= 0; i++) {
		int cfd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (cfd >= 0) {
			pool_client_arrived(l->pool, cfd);
			continue;
		}
		switch (errno) {
		case EAGAIN:
#if EWOULDBLOCK != EAGAIN
		case EWOULDBLOCK:
#endif
			return;
		case EINTR:
		case ECONNABORTED:
		case EPROTO:
			continue;
		case EMFILE:
		case ENFILE:
		case ENOBUFS:
		case ENOMEM:
			log_warning("pool=%s: accept on %s: %s; pausing accepts for %.0fms", l->pool->name,
			            l->cfg->path, strerror(errno), ACCEPT_PAUSE * 1000);
			ev_io_stop(loop, &l->io);
			ev_timer_start(loop, &l->pause);
			return;
		default:
			log_error("pool=%s: accept on %s: %s", l->pool->name, l->cfg->path, strerror(errno));
			return;
		}
	}
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
	ev_io_init(&dst->io, listener_accept_cb, dst->fd, EV_READ);
	ev_timer_init(&dst->pause, listener_resume_cb, ACCEPT_PAUSE, 0.);
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

int listener_reserve_extras(struct pool *dst, const struct pool *src, char *err, size_t errlen)
{
	size_t extra = 0;
	for (size_t i = 0; i < src->n_listeners; i++)
		extra += is_passed_extra(&src->listeners[i]);
	if (extra == 0)
		return 0;
	struct listener *ls = realloc(dst->listeners, (dst->n_listeners + extra) * sizeof *ls);
	if (!ls) {
		snprintf(err, errlen, "pool=%s: out of memory for %zu passed sockets", dst->name, extra);
		return -1;
	}
	memset(ls + dst->n_listeners, 0, extra * sizeof *ls);
	for (size_t i = dst->n_listeners; i < dst->n_listeners + extra; i++) {
		ls[i].pool = dst;
		ls[i].fd = -1;
		ls[i].cfg = &ls[i].passed_cfg; /* path set when taken; an untaken one is never opened */
		ls[i].passed_cfg.path = ls[i].passed_path;
	}
	dst->listeners = ls;
	dst->n_listeners += extra;
	return 0;
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
