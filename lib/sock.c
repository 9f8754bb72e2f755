/* lib/sock.c — the socket toolkit; see sock.h. */
#include "sock.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* ---- accepting ----------------------------------------------------------- */

enum sock_accept sock_accept_batch(int lfd, int max, sock_accept_fn fn, void *arg, int *err)
{
	*err = 0;
	for (int i = 0; i < max; i++) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd >= 0) {
			if (fn(arg, fd))
				return SOCK_ACCEPT_BUDGET;
			continue;
		}
		switch (errno) {
		case EAGAIN:
#if EWOULDBLOCK != EAGAIN
		case EWOULDBLOCK:
#endif
			return SOCK_ACCEPT_DRAINED;
		case EINTR:
		case ECONNABORTED:
		case EPROTO:
			continue; /* that client is gone (or a signal): take the next */
		case EMFILE:
		case ENFILE:
		case ENOBUFS:
		case ENOMEM:
			*err = errno;
			return SOCK_ACCEPT_PAUSE;
		default:
			*err = errno;
			return SOCK_ACCEPT_ERROR;
		}
	}
	return SOCK_ACCEPT_BUDGET;
}

/* ---- waiting and connecting ---------------------------------------------- */

long long sock_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int sock_wait(int fd, short events, long long deadline)
{
	for (;;) {
		long long left = deadline - sock_now_ms();
		if (left <= 0)
			return -ETIMEDOUT;
		struct pollfd p = {.fd = fd, .events = events};
		int r = poll(&p, 1, left > 0x7fffffff ? 0x7fffffff : (int)left);
		if (r > 0)
			return 0;
		if (r < 0 && errno != EINTR)
			return -errno;
	}
}

/* Set the socket's send timeout (which also bounds a blocking connect())
 * to ms milliseconds; 0 means none. 0 or -errno. */
static int set_sndtimeo(int fd, long long ms)
{
	struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000};
	return setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) < 0 ? -errno : 0;
}

/*
 * A non-blocking connect() to a Unix listener whose backlog is full fails
 * with EAGAIN and leaves the socket unconnected: poll() then reports it
 * writable at once, and nothing ever tells it that room appeared. Only a
 * blocking connect() waits for room (unix_wait_for_peer in the kernel),
 * bounded by the socket's send timeout. So the socket connects blocking,
 * with SO_SNDTIMEO set to what is left of the deadline, and is made
 * non-blocking (send timeout cleared) once connected. Client programs only:
 * the daemon's loop never calls this.
 */
int sock_unix_connect(const char *path, int type, long long deadline)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof sa.sun_path)
		return -ENAMETOOLONG;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	int r;
	for (;;) {
		long long left = deadline - sock_now_ms();
		if (left <= 0) {
			r = -ETIMEDOUT;
			break;
		}
		r = set_sndtimeo(fd, left);
		if (r < 0)
			break;
		r = connect(fd, (const struct sockaddr *)&sa, sizeof sa);
		if (r == 0)
			break;
		r = -errno;
		/* EAGAIN: the send timeout ran out with the backlog still full */
		if (r != -EAGAIN && r != -EINTR)
			break;
	}
	int fl;
	if (r == 0 && (r = set_sndtimeo(fd, 0)) == 0 &&
	    ((fl = fcntl(fd, F_GETFL)) < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0))
		r = -errno;
	if (r < 0) {
		close(fd);
		return r;
	}
	return fd;
}

/* ---- the quiet-socket test ----------------------------------------------- */

enum sock_peek sock_peek(int fd)
{
	char c;
	ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
	if (n > 0)
		return SOCK_DATA;
	if (n == 0)
		return SOCK_EOF;
	return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? SOCK_QUIET : SOCK_ERROR;
}

/* ---- Unix socket files --------------------------------------------------- */

/* The mode of a directory we create for a socket: others must be able to
 * reach the socket inside (its own mode decides who may connect). Set with
 * fchmod after mkdir, so a restrictive umask (systemd's UMask=0077) does not
 * leave it 0700. */
#define UNIX_DIR_MODE 0755

#define SUN_PATH_SIZE sizeof(((struct sockaddr_un *)0)->sun_path)

/* Create the directory `d` (mode UNIX_DIR_MODE exactly) unless it exists. */
static int mkdir_one(const char *path, const char *d, char *err, size_t errlen)
{
	if (mkdir(d, UNIX_DIR_MODE) < 0) {
		if (errno == EEXIST)
			return 0;
		snprintf(err, errlen, "%s: cannot create directory '%s': %s", path, d, strerror(errno));
		return -1;
	}
	/* Ours: fix the mode on a handle (never chmod by path: it follows a
	 * symlink someone could have put in its place). */
	int fd = open(d, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 || fchmod(fd, UNIX_DIR_MODE) < 0) {
		snprintf(err, errlen, "%s: cannot set mode %04o on directory '%s': %s", path, UNIX_DIR_MODE,
		         d, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

static int mkdir_parents(const char *path, char *err, size_t errlen)
{
	char dir[SUN_PATH_SIZE];
	snprintf(dir, sizeof dir, "%s", path);
	char *d = dirname(dir);
	struct stat st;
	if (stat(d, &st) == 0)
		return 0;
	for (char *p = d + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		int r = mkdir_one(path, d, err, errlen);
		*p = '/';
		if (r < 0)
			return -1;
	}
	return mkdir_one(path, d, err, errlen);
}

/* The directories above the socket's (of its real path, symlinks
 * resolved): whoever owns one of them, or may write one that is not sticky,
 * can rename the directory below it away, the socket with it, and put their
 * own in its place, with a socket of their own for our clients to find
 * (this happens when the daemon creates /tmp/theirs/sub/ itself). Each
 * must be owned by root or us, and be sticky if group or others may write
 * it (/tmp: others cannot rename what they do not own). */
static int check_ancestors(const char *path, const char *d, uid_t me, char *err, size_t errlen)
{
	char *real = realpath(d, NULL);
	if (!real) {
		snprintf(err, errlen, "%s: cannot resolve directory '%s': %s", path, d, strerror(errno));
		return -1;
	}
	int rc = 0;
	for (char *slash = strrchr(real, '/'); slash; slash = strrchr(real, '/')) {
		if (slash == real)
			slash[1] = '\0'; /* "/" itself, last */
		else
			*slash = '\0';
		struct stat st;
		if (lstat(real, &st) < 0) {
			snprintf(err, errlen, "%s: cannot check directory '%s': %s", path, real,
			         strerror(errno));
			rc = -1;
			break;
		}
		if ((st.st_uid != 0 && st.st_uid != me) ||
		    ((st.st_mode & (S_IWGRP | S_IWOTH)) && !(st.st_mode & S_ISVTX))) {
			snprintf(err, errlen,
			         "%s: refusing to create a socket below directory '%s' (owner uid %u, mode "
			         "%04o): it must "
			         "be owned by root or uid %u, and sticky if group or others may write it",
			         path, real, (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777),
			         (unsigned)me);
			rc = -1;
			break;
		}
		if (slash == real)
			break;
	}
	free(real);
	return rc;
}

/* The directory the socket goes into must be one only root or we can
 * change: owned by root or our euid, and writable by neither group nor
 * others (sticky or not: in a sticky /tmp another user's file can still
 * take a name first). Anyone else who can write there can rename a file or
 * symlink over our socket, or had the directory first and owns it. Checked
 * on an open handle (fstat), so the answer is about one directory, not a
 * path that changes between looks. Symlinks on the way are followed
 * (/var/run -> /run): the directory checked is the one the path reaches. */
static int check_parent(const char *path, char *err, size_t errlen)
{
	char dir[SUN_PATH_SIZE];
	snprintf(dir, sizeof dir, "%s", path);
	const char *d = dirname(dir);
	int fd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0) {
		snprintf(err, errlen, "%s: cannot open directory '%s': %s", path, d, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	close(fd);
	uid_t me = geteuid();
	if ((st.st_uid != 0 && st.st_uid != me) || (st.st_mode & (S_IWGRP | S_IWOTH))) {
		snprintf(
		    err, errlen,
		    "%s: refusing to create a socket in directory '%s' (owner uid %u, mode %04o): it must be "
		    "owned by root or uid %u and not writable by group or others",
		    path, d, (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777), (unsigned)me);
		return -1;
	}
	return check_ancestors(path, d, me, err, errlen);
}

/* A socket file is already at the path: remove it if it is stale. */
static int clear_stale(const char *path, const struct sockaddr_un *sa, struct sock_unix *us, char *err,
                       size_t errlen)
{
	struct stat st;
	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : (snprintf(err, errlen, "%s: %s", path, strerror(errno)), -1);
	if (!S_ISSOCK(st.st_mode)) {
		snprintf(err, errlen, "%s: exists and is not a socket; refusing to replace it", path);
		return -1;
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "%s: socket: %s", path, strerror(errno));
		return -1;
	}
	int r = connect(fd, (const struct sockaddr *)sa, sizeof *sa);
	int e = errno;
	close(fd);
	if (r == 0 || e == EAGAIN || e == EINPROGRESS ||
	    e == EPROTOTYPE) { /* EPROTOTYPE: a live socket of another type */
		snprintf(err, errlen, "%s: another process is listening on this socket", path);
		return -1;
	}
	if (e != ECONNREFUSED && e != ENOENT) {
		snprintf(err, errlen, "%s: cannot check existing socket: %s", path, strerror(e));
		return -1;
	}
	if (unlink(path) < 0 && errno != ENOENT) {
		snprintf(err, errlen, "%s: cannot remove stale socket: %s", path, strerror(errno));
		return -1;
	}
	us->stale_removed = 1;
	return 0;
}

int sock_unix_listen(const char *path, mode_t mode, int type, struct sock_unix *us, char *err, size_t errlen)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	us->fd = -1;
	us->path = path;
	us->created = 0;
	us->stale_removed = 0;
	mode &= 0777;
	if (strlen(path) >= sizeof sa.sun_path) {
		snprintf(err, errlen, "%s: path too long for a Unix socket", path);
		return -1;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	if (mkdir_parents(path, err, errlen) < 0 || check_parent(path, err, errlen) < 0 ||
	    clear_stale(path, &sa, us, err, errlen) < 0)
		return -1;

	int fd = socket(AF_UNIX, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "%s: socket: %s", path, strerror(errno));
		return -1;
	}
	/* The file bind() creates takes its mode from the socket's own inode
	 * (fchmod before bind, Linux) masked by the umask: both narrowed to
	 * `mode`, so the file is born with exactly that mode and is never
	 * chmod'ed by path afterwards (a path can be a symlink by then). The
	 * umask is process-wide; the daemon is single-threaded. */
	if (fchmod(fd, mode) < 0) {
		snprintf(err, errlen, "%s: fchmod: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	mode_t old = umask(~mode & 0777);
	int r = bind(fd, (const struct sockaddr *)&sa, sizeof sa);
	int e = errno;
	umask(old);
	if (r < 0) {
		snprintf(err, errlen, "%s: bind: %s", path, strerror(e));
		close(fd);
		return -1;
	}
	struct stat st;
	errno = 0;
	if (lstat(path, &st) < 0 || !S_ISSOCK(st.st_mode)) {
		snprintf(err, errlen, "%s: the socket file was replaced right after bind: %s", path,
		         errno ? strerror(errno) : "not a socket");
		close(fd);
		return -1;
	}
	if (listen(fd, SOMAXCONN) < 0) {
		snprintf(err, errlen, "%s: listen: %s", path, strerror(errno));
		close(fd);
		unlink(path);
		return -1;
	}
	us->fd = fd;
	us->dev = st.st_dev;
	us->ino = st.st_ino;
	us->created = 1;
	return 0;
}

int sock_unix_chmod_ours(const struct sock_unix *us, mode_t mode, char *err, size_t errlen)
{
	struct stat st;
	char proc[64];
	if (!us->created) {
		snprintf(err, errlen, "%s: not created by this process; mode left alone", us->path);
		return -1;
	}
	/* O_PATH|O_NOFOLLOW opens a symlink itself, never its target; the
	 * handle pins one inode, which fstat compares with the one we bound. */
	int fd = open(us->path, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		snprintf(err, errlen, "%s: cannot open the socket file: %s; mode left alone", us->path,
		         strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) < 0 || st.st_dev != us->dev || st.st_ino != us->ino || !S_ISSOCK(st.st_mode)) {
		snprintf(err, errlen,
		         "%s: is no longer the socket file this process created; mode left alone", us->path);
		close(fd);
		return -1;
	}
	/* fchmod() on an O_PATH handle is EBADF; the /proc link of the handle
	 * reaches exactly the pinned inode (glibc's fchmodat(AT_SYMLINK_NOFOLLOW)
	 * does the same). */
	snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
	int r = chmod(proc, mode & 0777);
	int e = errno;
	close(fd);
	if (r < 0) {
		snprintf(err, errlen, "%s: chmod: %s; mode left alone", us->path, strerror(e));
		return -1;
	}
	return 0;
}

void sock_unix_unlink_ours(struct sock_unix *us)
{
	struct stat st;
	if (!us->created)
		return;
	if (lstat(us->path, &st) == 0 && st.st_dev == us->dev && st.st_ino == us->ino)
		unlink(us->path);
	us->created = 0;
}
