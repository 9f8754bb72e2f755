/* daemon/unixsock.c — see unixsock.h. */
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"
#include "unixsock.h"

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
	if (r == 0 || e == EAGAIN || e == EINPROGRESS || e == EPROTOTYPE) { /* EPROTOTYPE: a live socket of another type */
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

int unix_listen(const char *path, mode_t mode, struct unix_sock *us, char *err, size_t errlen)
{
	return unix_listen_type(path, mode, SOCK_STREAM, us, err, errlen);
}

int unix_listen_type(const char *path, mode_t mode, int type, struct unix_sock *us, char *err, size_t errlen)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	us->fd = -1;
	us->path = path;
	us->created = 0;
	if (strlen(path) >= sizeof sa.sun_path) {
		snprintf(err, errlen, "%s: path too long for a Unix socket", path);
		return -1;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	if (mkdir_parents(path, err, errlen) < 0 || clear_stale(path, &sa, err, errlen) < 0)
		return -1;

	int fd = socket(AF_UNIX, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "%s: socket: %s", path, strerror(errno));
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
	if (chmod(path, mode) < 0 || stat(path, &st) < 0) {
		snprintf(err, errlen, "%s: chmod: %s", path, strerror(errno));
		close(fd);
		unlink(path);
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

void unix_unlink_ours(struct unix_sock *us)
{
	struct stat st;
	if (!us->created)
		return;
	if (lstat(us->path, &st) == 0 && st.st_dev == us->dev && st.st_ino == us->ino)
		unlink(us->path);
	us->created = 0;
}
