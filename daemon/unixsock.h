/*
 * daemon/unixsock.h — binding a listening Unix socket file the careful way,
 * for pools' listeners and the admin sockets.
 *
 * A socket file left by a previous run is replaced only when nothing answers
 * on it (connect() is refused); a live one, or a path that is not a socket,
 * is an error naming the path. Missing parent directories are created
 * (0755). The mode is applied while binding (umask) and again with chmod(),
 * so the socket never exists with wider access. At close the file is
 * removed only if it is still the one we bound (same device and inode).
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
/* Remove the socket file if we created it and it is still ours. Does not close the fd. */
void unix_unlink_ours(struct unix_sock *us);

#endif
