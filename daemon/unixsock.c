/* daemon/unixsock.c — see unixsock.h. */
#include <string.h>

#include "log.h"
#include "unixsock.h"

int unix_listen(const char *path, mode_t mode, int type, struct sock_unix *us, char *err, size_t errlen)
{
	if (sock_unix_listen(path, mode, type, us, err, errlen) < 0)
		return -1;
	if (us->stale_removed)
		log_info("%s: removed stale socket file", path);
	return 0;
}

static void unix_resume_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)revents;
	ev_io_start(loop, w->data);
}

void unix_accept_init(ev_io *io, ev_timer *pause, void (*cb)(struct ev_loop *, ev_io *, int), int fd)
{
	ev_io_init(io, cb, fd, EV_READ);
	ev_timer_init(pause, unix_resume_cb, UNIX_ACCEPT_PAUSE, 0.);
}

void unix_accept(struct ev_loop *loop, ev_io *io, ev_timer *pause, sock_accept_fn fn, void *arg,
                 const char *pool, const char *what, const char *where)
{
	int e;
	enum sock_accept st = sock_accept_batch(io->fd, SOCK_ACCEPT_BATCH, fn, arg, &e);
	if (st == SOCK_ACCEPT_DRAINED || st == SOCK_ACCEPT_BUDGET)
		return;
	/* Out of descriptors or memory (or an error that would repeat): the
	 * socket stays readable, so pause rather than spin on it. */
	int prio = st == SOCK_ACCEPT_PAUSE ? LOG_WARNING : LOG_ERR;
	if (pool)
		log_msg(prio, "pool=%s: accept on %s: %s; pausing accepts for %.0fms", pool, where,
		        strerror(e), UNIX_ACCEPT_PAUSE * 1000);
	else
		log_msg(prio, "%s: accept on %s: %s; pausing accepts for %.0fms", what, where, strerror(e),
		        UNIX_ACCEPT_PAUSE * 1000);
	ev_io_stop(loop, io);
	/* Which watcher to restart is set here, not at init: a listener array
	 * may be realloc'ed between init and start, never while a watcher runs. */
	pause->data = io;
	ev_timer_set(pause, UNIX_ACCEPT_PAUSE, 0.); /* a one-shot timer needs its delay again */
	ev_timer_start(loop, pause);
}
