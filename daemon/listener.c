/*
 * daemon/listener.c — a pool's Unix listening socket.
 *
 * Binding: a socket file left by a previous run is replaced only when nothing
 * answers on it (connect() is refused); a live one, or a path that is not a
 * socket, makes startup fail with the path in the message. Missing parent
 * directories are created (0755). The mode is applied while binding (umask)
 * and again with chmod(), so the socket never exists with wider access.
 *
 * Accepting: accept4(SOCK_NONBLOCK|SOCK_CLOEXEC) until EAGAIN, at most
 * ACCEPT_BATCH per wake-up so one busy pool cannot starve the rest. Out of
 * file descriptors (EMFILE/ENFILE) pauses accepting for ACCEPT_PAUSE seconds
 * instead of spinning on a readable socket we cannot accept from.
 */
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "engine.h"
#include "log.h"

#define ACCEPT_BATCH 64
#define ACCEPT_PAUSE 0.1

static int mkdir_parents(const char *path, char *err, size_t errlen)
{
	char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
	snprintf(dir, sizeof dir, "%s", path);
	char *d = dirname(dir);
	struct stat st;
	if (stat(d, &st) == 0)
		return 0;
	for (char *p = d + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(d, 0755) < 0 && errno != EEXIST) {
			snprintf(err, errlen, "%s: cannot create directory '%s': %s", path, d,
			         strerror(errno));
			return -1;
		}
		*p = '/';
	}
	if (mkdir(d, 0755) < 0 && errno != EEXIST) {
		snprintf(err, errlen, "%s: cannot create directory '%s': %s", path, d, strerror(errno));
		return -1;
	}
	return 0;
}

/* A socket file is already at the path: remove it if it is stale. */
static int clear_stale(const char *path, const struct sockaddr_un *sa, char *err, size_t errlen)
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
	if (r == 0 || e == EAGAIN || e == EINPROGRESS) {
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
	log_info("%s: removed stale socket file", path);
	return 0;
}

static void listener_accept_cb(struct ev_loop *loop, ev_io *w, int revents);

static void listener_resume_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)revents;
	struct listener *l = container_of(w, struct listener, pause);
	if (l->fd >= 0)
		ev_io_start(loop, &l->io);
}

int listener_open(struct listener *l, char *err, size_t errlen)
{
	const char *path = l->cfg->path;
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof sa.sun_path) {
		snprintf(err, errlen, "%s: path too long for a Unix socket", path);
		return -1;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	if (mkdir_parents(path, err, errlen) < 0 || clear_stale(path, &sa, err, errlen) < 0)
		return -1;

	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "%s: socket: %s", path, strerror(errno));
		return -1;
	}
	mode_t old = umask(~l->cfg->mode & 0777);
	int r = bind(fd, (const struct sockaddr *)&sa, sizeof sa);
	int e = errno;
	umask(old);
	if (r < 0) {
		snprintf(err, errlen, "%s: bind: %s", path, strerror(e));
		close(fd);
		return -1;
	}
	struct stat st;
	if (chmod(path, l->cfg->mode) < 0 || stat(path, &st) < 0) {
		snprintf(err, errlen, "%s: chmod: %s", sa.sun_path, strerror(errno));
		close(fd);
		unlink(path);
		return -1;
	}
	l->dev = st.st_dev;
	l->ino = st.st_ino;
	l->created = 1;
	if (listen(fd, SOMAXCONN) < 0) {
		snprintf(err, errlen, "%s: listen: %s", path, strerror(errno));
		close(fd);
		unlink(path);
		l->created = 0;
		return -1;
	}
	l->fd = fd;
	ev_io_init(&l->io, listener_accept_cb, fd, EV_READ);
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
	if (l->created) {
		/* Remove the file only if it is still the one we bound. */
		struct stat st;
		if (lstat(l->cfg->path, &st) == 0 && st.st_dev == l->dev && st.st_ino == l->ino)
			unlink(l->cfg->path);
		l->created = 0;
	}
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
