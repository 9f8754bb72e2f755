/*
 * daemon/unixsock.h — binding a listening Unix socket file the careful way,
 * for pools' listeners and the admin sockets.
 *
 * A socket file left by a previous run is replaced only when nothing answers
 * on it (connect() is refused); a live one, or a path that is not a socket,
 * is an error naming the path. Missing parent directories are created
 * with mode 0755 whatever the umask. The directory the socket goes into
 * must be owned by root or the daemon's euid and writable by neither group
 * nor others, and each directory above it owned by root or the euid and
 * sticky if others may write it: anyone else could swap the socket (or the
 * directory holding it) for one of their own. The mode is given to the socket before bind (fchmod on the
 * socket, and the umask), so the file is born with exactly that mode and is
 * never chmod'ed by path: a path may be a symlink by the time we look. A
 * later mode change (reload) goes through unix_chmod_ours(), which checks
 * the file is still the one we bound. At close the file is removed only if
 * it is still the one we bound (same device and inode).
 */
#ifndef WARMPOOL_UNIXSOCK_H
#define WARMPOOL_UNIXSOCK_H

#include <stddef.h>
#include <sys/types.h>

struct unix_sock {
	int fd;
	const char *path; /* not owned */
	dev_t dev;        /* identity of the file we created */
	ino_t ino;
	unsigned created : 1;
};

/* Bind and listen (non-blocking, close-on-exec); 0, or -1 with a message in err. */
int unix_listen(const char *path, mode_t mode, struct unix_sock *us, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/* The same for another socket type (SOCK_SEQPACKET for handoff sockets). */
int unix_listen_type(const char *path, mode_t mode, int type, struct unix_sock *us, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/* Change the mode of the socket file we bound (reload), only if the path
 * still names that very file (same device and inode, not followed through a
 * symlink); 0, or -1 with a message in err and the mode left alone. */
int unix_chmod_ours(const struct unix_sock *us, mode_t mode, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/* Remove the socket file if we created it and it is still ours. Does not close the fd. */
void unix_unlink_ours(struct unix_sock *us);

#endif
