/*
 * daemon/unixsock.h — the daemon's side of the socket toolkit (lib/sock.h):
 * what the primitives leave to their caller, said once for every listening
 * socket the daemon owns (pools' listeners and handoff sockets, the admin
 * sockets and the metrics endpoint).
 *
 * Binding a Unix socket file is sock_unix_listen() (every check on the
 * directories and the mode is there); unix_listen() adds the log line for a
 * stale file it replaced. Accepting is one wake-up of sock_accept_batch()
 * (SOCK_ACCEPT_BATCH connections at most); when the process is out of file
 * descriptors or memory the socket stays readable, so the watcher is
 * stopped for UNIX_ACCEPT_PAUSE seconds instead of spinning the loop, with
 * one warning line per pause. Access rules and what to do with a client stay
 * with each caller (its accept callback).
 */
#ifndef WARMPOOL_UNIXSOCK_H
#define WARMPOOL_UNIXSOCK_H

#include <ev.h>
#include <stddef.h>
#include <sys/types.h>

#include "sock.h"

/* Seconds a listening socket is not watched after accept failed for want
 * of descriptors or memory: long enough for sessions to end and free some,
 * short enough that clients queued in the backlog barely notice. */
#define UNIX_ACCEPT_PAUSE 0.1

/* sock_unix_listen(), plus an info line when a stale socket file was
 * replaced; 0, or -1 with a message in err. */
int unix_listen(const char *path, mode_t mode, int type, struct sock_unix *us, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Set up a listening socket's watcher `io` on fd with callback cb (which
 * calls unix_accept()) and its pause timer, whose callback restarts `io`.
 * Neither is started; the timer must be stopped wherever io is (close, move). */
void unix_accept_init(ev_io *io, ev_timer *pause, void (*cb)(struct ev_loop *, ev_io *, int), int fd);

/*
 * Handle one wake-up of the listening watcher `io`: accept a batch from its
 * fd, handing each connection to fn(arg, fd). When accepting must pause, `io`
 * is stopped and the one-shot timer `pause` (unix_accept_init()) started
 * for UNIX_ACCEPT_PAUSE seconds,
 * with a warning "pool=POOL: accept on WHERE: WHY; pausing accepts for
 * 100ms" (or "WHAT: accept on ..." when pool is NULL).
 */
void unix_accept(struct ev_loop *loop, ev_io *io, ev_timer *pause, sock_accept_fn fn, void *arg,
                 const char *pool, const char *what, const char *where);

#endif
