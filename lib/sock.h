/*
 * lib/sock.h — the socket toolkit: small primitives every part of warmpool
 * shares (Redis's anet.c is the model). They never log and hold no state:
 * each reports what happened (a status, -errno, or a message in the caller's
 * error buffer) and the caller, which knows the context, decides and logs.
 *
 *   sock_accept_batch    accept up to N connections (non-blocking, close-on-exec)
 *                        and say why it stopped: drained, budget used, or out
 *                        of descriptors/memory (the caller pauses its watcher)
 *   sock_unix_listen     bind a Unix socket file the careful way (below)
 *   sock_unix_connect    non-blocking connect with a deadline that waits for
 *                        room in a full backlog
 *   sock_wait            poll one fd until a deadline
 *   sock_peek            is a socket quiet, or has it bytes, EOF or an error?
 *
 * Unix socket files (sock_unix_listen): a file left by a previous run is
 * replaced only when nothing answers on it (connect() is refused); a live
 * one, or a path that is not a socket, is an error naming the path. Missing
 * parent directories are created with mode 0755 whatever the umask. The
 * directory the socket goes into must be owned by root or the process's
 * euid and writable by neither group nor others, and each directory above
 * it owned by root or the euid and sticky if others may write it: anyone
 * else could swap the socket (or the directory holding it) for one of their
 * own. The mode is given to the socket before bind (fchmod on the socket,
 * and the umask), so the file is born with exactly that mode and is never
 * chmod'ed by path: a path may be a symlink by the time we look. A later
 * mode change (reload) goes through sock_unix_chmod_ours(), which checks the
 * file is still the one we bound. At close the file is removed only if it is
 * still the one we bound (same device and inode).
 *
 * Deadlines are CLOCK_MONOTONIC milliseconds (sock_now_ms()).
 */
#ifndef WARMPOOL_SOCK_H
#define WARMPOOL_SOCK_H

#include <stddef.h>
#include <sys/types.h>

/* Connections accepted per wake-up of a listening socket: enough to drain a
 * burst in few loop iterations, few enough that one busy socket cannot
 * starve the others (and the sessions) sharing the loop. */
#define SOCK_ACCEPT_BATCH 64

/* Why sock_accept_batch() stopped. */
enum sock_accept {
	SOCK_ACCEPT_DRAINED, /* the backlog is empty (EAGAIN): wait for the next wake-up */
	SOCK_ACCEPT_BUDGET,  /* `max` accepted, or the callback said stop: more may wait */
	SOCK_ACCEPT_PAUSE,   /* out of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM):
	                      * the socket stays readable, so the caller must stop watching it
	                      * for a while rather than spin; *err holds the errno */
	SOCK_ACCEPT_ERROR,   /* any other error (*err holds the errno): also pause, and log louder */
};

/* Called with each accepted fd, which it now owns (it must close it or keep
 * it). Return 0 to go on accepting, non-zero to stop (e.g. the listener was
 * closed from inside). */
typedef int (*sock_accept_fn)(void *arg, int fd);

/*
 * Accept up to `max` connections on the listening socket `lfd`, each
 * non-blocking and close-on-exec, handing each to fn(arg, fd). Transient
 * errors (EINTR, ECONNABORTED, EPROTO: a client gone before we took it) are
 * skipped. Returns why it stopped; for SOCK_ACCEPT_PAUSE and
 * SOCK_ACCEPT_ERROR *err is the errno (else 0).
 */
enum sock_accept sock_accept_batch(int lfd, int max, sock_accept_fn fn, void *arg, int *err);

/* A Unix socket file bound by sock_unix_listen(). */
struct sock_unix {
	int fd;
	const char *path; /* not owned */
	dev_t dev;        /* identity of the file we created */
	ino_t ino;
	unsigned created : 1;
	unsigned stale_removed : 1; /* a stale socket file was removed first (the caller may say so) */
};

/*
 * Bind and listen on a Unix socket of `type` (SOCK_STREAM, SOCK_SEQPACKET)
 * at `path`, non-blocking and close-on-exec, the file with mode `mode`
 * exactly (see above for the checks on the directories). 0 with *us filled,
 * or -1 with a message naming the path in err. Changes the process's umask
 * for the duration of bind(): call it from one thread only.
 */
int sock_unix_listen(const char *path, mode_t mode, int type, struct sock_unix *us, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Change the mode of the socket file we bound (reload), only if the path
 * still names that very file (same device and inode, not followed through a
 * symlink); 0, or -1 with a message in err and the mode left alone. */
int sock_unix_chmod_ours(const struct sock_unix *us, mode_t mode, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Remove the socket file if we created it and it is still ours. Does not close the fd. */
void sock_unix_unlink_ours(struct sock_unix *us);

/* The CLOCK_MONOTONIC time in milliseconds, the clock of every deadline here. */
long long sock_now_ms(void);

/* Wait until fd is ready for `events` (POLLIN, POLLOUT) or the deadline
 * passes: 0 ready, -ETIMEDOUT, or -errno from poll(). EINTR is retried. */
int sock_wait(int fd, short events, long long deadline) __attribute__((warn_unused_result));

/*
 * Connect a close-on-exec Unix socket of `type` to `path` before
 * `deadline`. When the listener's backlog is full, wait for room until the
 * deadline rather than fail at once (this blocks the calling thread: for
 * client programs, never for an event loop). Returns the connected fd,
 * non-blocking, or -errno: -ENAMETOOLONG, -ETIMEDOUT, -ENOENT,
 * -ECONNREFUSED, ...
 */
int sock_unix_connect(const char *path, int type, long long deadline) __attribute__((warn_unused_result));

/* What a connected socket has for us right now, without reading it. */
enum sock_peek {
	SOCK_QUIET, /* nothing to read, no error */
	SOCK_DATA,  /* at least one byte waits */
	SOCK_EOF,   /* the peer closed */
	SOCK_ERROR, /* a socket error (pending SO_ERROR included: recv() reports it first) */
};

/* Classify the socket with one non-blocking recv(MSG_PEEK); never consumes
 * a byte and never blocks. */
enum sock_peek sock_peek(int fd);

#endif
