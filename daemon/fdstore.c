/*
 * daemon/fdstore.c — see fdstore.h.
 *
 * The name is the whole description of a stored connection, so nothing
 * else needs storing (no memfd):
 *
 *   wp1,<pool>,<backend>,<cookie>,<opened>,<greeting>
 *
 *   pool      the pool's name (A-Z a-z 0-9 _ . -: no comma, no colon)
 *   backend   the backend as configured ("10.0.0.5_6379": ':' becomes '_',
 *             systemd refuses ':' in a name); for people reading
 *             `systemd-analyze dump` only: adoption goes by the socket's
 *             real peer address
 *   cookie    the socket's SO_COOKIE in hex: unique for the boot, so two
 *             stored fds never share a name, across restarts too
 *   opened    when it was connected, Unix time in ms (max_lifetime counts
 *             from there after the restart too)
 *   greeting  the bytes the backend sent unprompted that we read already
 *             (they are no longer in the socket), %XX-escaped but for
 *             printable ASCII other than ',' ':' '%' and space; empty when
 *             none. A connection whose name would pass SYSTEMD_FDNAME_MAX
 *             with them is not stored.
 *
 * A name with a comma is ours: systemd.c hands those to fdstore_adopt()
 * instead of treating them as listening sockets.
 *
 * Adoption checks, in order, and refuses at the first failure (closed,
 * FDSTOREREMOVE'd, counted by reason): the name parses; the fd is a socket,
 * a TCP stream, not listening, without SO_ERROR, ESTABLISHED (TCP_INFO: a
 * backend that closed while we were down leaves CLOSE_WAIT); a pool of that
 * name exists without tls:; the peer address is one of the pool's backends
 * now (a named backend only once its name has resolved: at startup it has
 * not, so those are refused); nothing is waiting to be read (bytes the
 * backend sent while no process read them cannot be told from a reply to a
 * request of a session the restart cut: only the greeting already read,
 * carried by the name, is given to the next client); younger than
 * max_lifetime; the pool below max_connections. An adopted connection is
 * marked as having served (bconn.served): a byte it sends unprompted from
 * now on closes it, as on a reused connection.
 *
 * Leaving idle removes it from the store: a crash mid-session must not
 * hand the half-used connection to the next process. (One window remains:
 * the remove is sent at checkout without waiting; if the manager has no
 * room for it then, it waits in systemd.c's queue, and a crash before it is
 * sent leaves the connection stored. The next process refuses it if the
 * backend's reply is already there, and otherwise adopts a connection
 * whose last request may still be answered: the reply then reaches the next
 * client as unprompted bytes and closes the connection, since an adopted
 * connection counts as served. A reply slower than the next client's first
 * request cannot be told from its answer.) Closing one removes
 * it and shuts it down first: the manager's copy would otherwise keep the
 * TCP connection open after our close(), and a shut-down socket is also
 * one the manager drops by itself (it polls stored fds for POLLHUP) should
 * the remove be lost. A stopping daemon (SIGTERM, SIGINT, the end of a
 * failed start) closes its idle connections without either: the store
 * keeps them for the next start, and systemd closes them if the unit stops
 * for good (FileDescriptorStorePreserve= needs systemd 254).
 *
 * The records of stored connections are found by fd (a connection's fd
 * does not change while it lives, and an fd belongs to one connection at
 * a time): an array indexed by fd, grown to the largest stored fd.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "escape.h"
#include "fdstore.h"
#include "log.h"
#include "systemd.h"
#include "upgrade.h"

#define FDSTORE_MAGIC  "wp1," /* the first field: the name format's version */
#define FDSTORE_FIELDS 6      /* wp1, pool, backend, cookie, opened, greeting */
#define NAME_SHOWN     80     /* a refused fd's name as logged, escaped */

static const char *const refusal_names[] = {
    [FDSTORE_R_OFF] = "fd_store is off",
    [FDSTORE_R_NAME] = "not a name warmpoold writes",
    [FDSTORE_R_NOT_SOCKET] = "not a socket",
    [FDSTORE_R_NOT_TCP] = "not a TCP stream socket",
    [FDSTORE_R_LISTENING] = "a listening socket, not a connection",
    [FDSTORE_R_ERROR] = "socket error pending",
    [FDSTORE_R_CLOSED] = "not established (closed by the backend while warmpoold was down)",
    [FDSTORE_R_NO_POOL] = "no pool of that name",
    [FDSTORE_R_TLS] = "the pool uses tls:",
    [FDSTORE_R_NO_BACKEND] = "not connected to a backend of the pool (removed, or its name not resolved yet)",
    [FDSTORE_R_PENDING] = "unread bytes or EOF from the backend",
    [FDSTORE_R_EXPIRED] = "past max_lifetime",
    [FDSTORE_R_FULL] = "the pool is at max_connections",
    [FDSTORE_R_NOMEM] = "out of memory",
    [FDSTORE_R_NOT_LISTENING] = "not a listening Unix stream socket",
    [FDSTORE_R_NO_LISTENER] = "no pool listens at its path now (or the path names another file)",
};
_Static_assert(sizeof refusal_names / sizeof *refusal_names == FDSTORE_R_N, "a text per refusal");

/* The metric label of each refusal. */
static const char *const refusal_labels[] = {
    [FDSTORE_R_OFF] = "off",
    [FDSTORE_R_NAME] = "name",
    [FDSTORE_R_NOT_SOCKET] = "not_socket",
    [FDSTORE_R_NOT_TCP] = "not_tcp",
    [FDSTORE_R_LISTENING] = "listening",
    [FDSTORE_R_ERROR] = "error",
    [FDSTORE_R_CLOSED] = "closed",
    [FDSTORE_R_NO_POOL] = "no_pool",
    [FDSTORE_R_TLS] = "tls",
    [FDSTORE_R_NO_BACKEND] = "no_backend",
    [FDSTORE_R_PENDING] = "pending",
    [FDSTORE_R_EXPIRED] = "expired",
    [FDSTORE_R_FULL] = "full",
    [FDSTORE_R_NOMEM] = "nomem",
    [FDSTORE_R_NOT_LISTENING] = "not_listening",
    [FDSTORE_R_NO_LISTENER] = "no_listener",
};
_Static_assert(sizeof refusal_labels / sizeof *refusal_labels == FDSTORE_R_N, "a label per refusal");

/* A connection in the store (or on its way there, queued in systemd.c). */
struct stored {
	const struct bconn *b;
	char name[SYSTEMD_FDNAME_MAX + 1];
};

static struct {
	int on;
	struct engine *eng;
	struct stored **by_fd; /* by_fd[fd]: the stored connection on fd, or NULL */
	size_t cap;
	size_t held; /* connections in the store now */
	uint64_t adopted;
	uint64_t refused[FDSTORE_R_N];
	uint64_t not_stored; /* idle connections that could not be stored (queue full, name too long) */
} fs;

/* ---- records ------------------------------------------------------------ */

static struct stored *rec_of(const struct bconn *b)
{
	if (b->fd < 0 || (size_t)b->fd >= fs.cap)
		return NULL;
	struct stored *s = fs.by_fd[b->fd];
	return s && s->b == b ? s : NULL;
}

/* A record for b under `name`; NULL on no memory. */
static struct stored *rec_add(const struct bconn *b, const char *name)
{
	size_t fd = (size_t)b->fd;
	if (fd >= fs.cap) {
		size_t cap = fs.cap ? fs.cap : 64;
		while (cap <= fd)
			cap *= 2;
		struct stored **v = realloc(fs.by_fd, cap * sizeof *v);
		if (!v)
			return NULL;
		memset(v + fs.cap, 0, (cap - fs.cap) * sizeof *v);
		fs.by_fd = v;
		fs.cap = cap;
	}
	struct stored *s = calloc(1, sizeof *s);
	if (!s)
		return NULL;
	s->b = b;
	snprintf(s->name, sizeof s->name, "%s", name);
	fs.by_fd[fd] = s;
	fs.held++;
	return s;
}

static void rec_drop(struct stored *s)
{
	fs.by_fd[s->b->fd] = NULL;
	fs.held--;
	free(s);
}

/* ---- names -------------------------------------------------------------- */

/* Append to name[*off..cap) keeping a NUL; 0, or -1 when it does not fit. */
static int put(char *name, size_t cap, size_t *off, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int put(char *name, size_t cap, size_t *off, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(name + *off, cap - *off, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= cap - *off)
		return -1;
	*off += (size_t)n;
	return 0;
}

static int hexval(char c)
{
	return c >= '0' && c <= '9'   ? c - '0'
	       : c >= 'A' && c <= 'F' ? c - 'A' + 10
	       : c >= 'a' && c <= 'f' ? c - 'a' + 10
	                              : -1;
}

static int plain_byte(unsigned char c)
{
	return c > ' ' && c < 127 && c != ',' && c != ':' && c != '%';
}

/* Append bytes %XX-escaped but for plain_byte()s. */
static int put_escaped(char *name, size_t cap, size_t *off, const unsigned char *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((plain_byte(v[i]) ? put(name, cap, off, "%c", v[i])
		                      : put(name, cap, off, "%%%02X", v[i])) < 0)
			return -1;
	return 0;
}

/* Decode a put_escaped() field in place; its length, or -1. */
static ssize_t unescape(char *f)
{
	unsigned char *out = (unsigned char *)f;
	for (const char *c = f; *c; c++) {
		if (*c != '%') {
			*out++ = (unsigned char)*c;
			continue;
		}
		int hi = hexval(c[1]), lo = hi >= 0 ? hexval(c[2]) : -1;
		if (lo < 0)
			return -1;
		*out++ = (unsigned char)(hi << 4 | lo);
		c += 2;
	}
	*out = '\0';
	return (ssize_t)(out - (unsigned char *)f);
}

/* Split `buf` at its first n-1 commas into f[0..n); 0, or -1 when there are fewer. */
static int split(char *buf, char **f, int n)
{
	f[0] = buf;
	for (int i = 1; i < n; i++) {
		char *c = strchr(f[i - 1], ',');
		if (!c)
			return -1;
		*c = '\0';
		f[i] = c + 1;
	}
	return strchr(f[n - 1], ',') ? -1 : 0;
}

/* The name of b as the file comment describes it; 0, or -1 when it does
 * not fit in SYSTEMD_FDNAME_MAX (a long greeting). */
static int conn_name(const struct bconn *b, char *name, size_t cap)
{
	uint64_t cookie = 0;
	socklen_t len = sizeof cookie;
	size_t off = 0;
	if (cap > SYSTEMD_FDNAME_MAX + 1)
		cap = SYSTEMD_FDNAME_MAX + 1;
	if (put(name, cap, &off, "%s%s,", FDSTORE_MAGIC, b->pool->name) < 0)
		return -1;
	for (const char *c = b->be->name; *c;
	     c++) /* ':' and ',' are the separators of LISTEN_FDNAMES and ours */
		if (put(name, cap, &off, "%c", plain_byte((unsigned char)*c) ? *c : '_') < 0)
			return -1;
	if (getsockopt(b->fd, SOL_SOCKET, SO_COOKIE, &cookie, &len) < 0 || len != sizeof cookie)
		cookie = 0;
	/* Without a cookie, this process's pid and the connection id are unique too. */
	if ((cookie ? put(name, cap, &off, ",%" PRIx64, cookie)
	            : put(name, cap, &off, ",p%ld.%" PRIu64, (long)getpid(), b->id)) < 0 ||
	    put(name, cap, &off, ",%" PRIu64 ",", (uint64_t)(b->opened_at * 1000.0)) < 0)
		return -1;
	return put_escaped(name, cap, &off, b->greeting, b->greeting_len);
}

/* A parsed name. The strings point into `buf`. */
struct conn_desc {
	const char *pool;
	uint64_t opened_ms;
	unsigned char *greeting; /* decoded in place */
	size_t greeting_len;
};

/* Split `buf` (a copy of the name) into d; 0, or -1 when it is not ours. */
static int parse_name(char *buf, struct conn_desc *d)
{
	char *f[FDSTORE_FIELDS];
	if (strncmp(buf, FDSTORE_MAGIC, strlen(FDSTORE_MAGIC)) != 0 || split(buf, f, FDSTORE_FIELDS) < 0 ||
	    !*f[1])
		return -1;
	char *end;
	errno = 0;
	unsigned long long ms = strtoull(f[4], &end, 10);
	if (errno || end == f[4] || *end)
		return -1;
	d->pool = f[1];
	d->opened_ms = ms;
	ssize_t glen = unescape(f[5]); /* in place: it only shrinks */
	if (glen < 0)
		return -1;
	d->greeting = (unsigned char *)f[5];
	d->greeting_len = (size_t)glen;
	return 0;
}

/* ---- while running ---------------------------------------------------- */

static int storable(const struct bconn *b)
{
	const struct pool *p = b->pool;
	return fs.on && b->fd >= 0 && !b->ssl && !p->cfg->tls.enabled && !b->foreign && !p->eng->stopping &&
	       !p->retiring;
}

/* Put b in the store under its current name (it is in it under none now). */
static void conn_store(const struct bconn *b)
{
	char name[SYSTEMD_FDNAME_MAX + 1];
	if (conn_name(b, name, sizeof name) < 0) {
		fs.not_stored++;
		bconn_log(b, LOG_DEBUG,
		          "fd store: greeting too long for a name (%u bytes): not stored, "
		          "lost at a restart",
		          b->greeting_len);
		return;
	}
	struct stored *s = rec_add(b, name);
	if (!s || systemd_fdstore(b->fd, name) < 0) {
		if (s)
			rec_drop(s);
		fs.not_stored++;
		bconn_log(b, LOG_DEBUG, "fd store: not stored (queue full or out of memory)");
		return;
	}
	bconn_log(b, LOG_DEBUG, "fd store: stored as %s", name);
}

/* Take b out of the store; 1 when the manager had (or may have) it. */
static int conn_unstore(struct stored *s)
{
	int cancelled = systemd_fdstore_remove(s->name);
	bconn_log(s->b, LOG_DEBUG, "fd store: %s %s",
	          cancelled ? "not sent, cancelled:" : "removed:", s->name);
	rec_drop(s);
	return !cancelled;
}

void fdstore_conn_state(struct bconn *b, enum bconn_state old)
{
	if (!fs.on || old == b->state)
		return;
	struct stored *s = rec_of(b);
	if (b->state == BCONN_IDLE) {
		if (!s && storable(b))
			conn_store(b);
	} else if (s && b->state != BCONN_CLOSED) {
		conn_unstore(s); /* handed to a client (or resetting): its state is the session's */
	}
}

void fdstore_conn_greeted(struct bconn *b)
{
	if (!fs.on || b->state != BCONN_IDLE)
		return;
	struct stored *s = rec_of(b);
	if (s)
		conn_unstore(s); /* the old name lacks the bytes we just took out of the socket */
	if (storable(b))
		conn_store(b);
}

void fdstore_conn_closing(struct bconn *b)
{
	struct stored *s = rec_of(b);
	if (!s)
		return;
	if (b->pool->eng->stopping) {
		/* Kept for the next start: our close() leaves the manager's copy. */
		bconn_log(b, LOG_DEBUG, "fd store: left in the store for the next start");
		rec_drop(s);
		return;
	}
	if (conn_unstore(s) && shutdown(b->fd, SHUT_RDWR) < 0 && errno != ENOTCONN)
		bconn_log(b, LOG_WARNING, "fd store: shutdown before close: %s", strerror(errno));
}

/* ---- listening sockets ------------------------------------------------------ */

static int sockopt_int(int fd, int level, int opt, int *val)
{
	socklen_t len = sizeof *val;
	return getsockopt(fd, level, opt, val, &len) < 0 || len != sizeof *val ? -1 : 0;
}

/* wp1L,<dev>,<ino>,<cookie>,<path>: the socket file's device and inode (hex)
 * prove at adoption that the path still names the file this socket is
 * bound to; the path is %XX-escaped as a greeting is. */
#define FDSTORE_LISTEN_MAGIC  "wp1L,"
#define FDSTORE_LISTEN_FIELDS 5

struct stored_listener {
	struct stored_listener *next;
	int fd; /* a listener's fd stays the same when a reload moves it to another pool */
	char name[SYSTEMD_FDNAME_MAX + 1];
};

static struct stored_listener *stored_listeners;

static int listen_name(const struct listener *l, char *name, size_t cap)
{
	uint64_t cookie = 0;
	socklen_t len = sizeof cookie;
	size_t off = 0;
	if (cap > SYSTEMD_FDNAME_MAX + 1)
		cap = SYSTEMD_FDNAME_MAX + 1;
	if (getsockopt(l->fd, SOL_SOCKET, SO_COOKIE, &cookie, &len) < 0 || len != sizeof cookie)
		cookie = 0; /* dev and ino name it uniquely too */
	if (put(name, cap, &off, "%s%llx,%llx,%" PRIx64 ",", FDSTORE_LISTEN_MAGIC,
	        (unsigned long long)l->us.dev, (unsigned long long)l->us.ino, cookie) < 0)
		return -1;
	return put_escaped(name, cap, &off, (const unsigned char *)l->cfg->path, strlen(l->cfg->path));
}

static struct stored_listener **listener_rec(int fd)
{
	struct stored_listener **pp = &stored_listeners;
	while (*pp && (*pp)->fd != fd)
		pp = &(*pp)->next;
	return pp;
}

static int listener_rec_add(int fd, const char *name)
{
	struct stored_listener *s = calloc(1, sizeof *s);
	if (!s)
		return -1;
	s->fd = fd;
	snprintf(s->name, sizeof s->name, "%s", name);
	s->next = stored_listeners;
	stored_listeners = s;
	return 0;
}

static void listener_rec_drop(struct stored_listener **pp)
{
	struct stored_listener *s = *pp;
	*pp = s->next;
	free(s);
}

void fdstore_listener_opened(const struct listener *l)
{
	char name[SYSTEMD_FDNAME_MAX + 1];
	if (!fs.on || l->fd < 0 || !l->us.created || l->passed || *listener_rec(l->fd))
		return;
	if (listen_name(l, name, sizeof name) < 0) {
		log_info("pool=%s: fd store: the path %s is too long for a name: the socket is bound again "
		         "after a "
		         "restart",
		         l->pool->name, l->cfg->path);
		return;
	}
	if (listener_rec_add(l->fd, name) < 0 || systemd_fdstore(l->fd, name) < 0) {
		struct stored_listener **pp = listener_rec(l->fd);
		if (*pp)
			listener_rec_drop(pp);
		log_warning("pool=%s: fd store: cannot store the listening socket %s", l->pool->name,
		            l->cfg->path);
		return;
	}
	log_debug("pool=%s: fd store: stored the listening socket %s as %s", l->pool->name, l->cfg->path,
	          name);
}

int fdstore_listener_closing(const struct listener *l)
{
	struct stored_listener **pp = l->fd >= 0 ? listener_rec(l->fd) : NULL;
	if (!pp || !*pp)
		return 0;
	int keep = l->pool->eng->stopping || upgrade_handed_over(); /* kept for the next process */
	if (!keep)
		(void)systemd_fdstore_remove((*pp)->name);
	listener_rec_drop(pp);
	return keep;
}

/* Checks a stored listening socket and gives it to the pool listener at its
 * path; -1 adopted, else the refusal. */
static int adopt_listener(struct engine *eng, int fd, const char *name)
{
	char buf[SYSTEMD_FDNAME_MAX + 1], *f[FDSTORE_LISTEN_FIELDS], *end;
	struct stat st;
	int type = 0, domain = 0, listening = 0;
	if (!fs.on && !upgrade_is_child())
		return FDSTORE_R_OFF;
	if (strlen(name) >= sizeof buf)
		return FDSTORE_R_NAME;
	memcpy(buf, name, strlen(name) + 1);
	if (split(buf, f, FDSTORE_LISTEN_FIELDS) < 0)
		return FDSTORE_R_NAME;
	errno = 0;
	unsigned long long dev = strtoull(f[1], &end, 16);
	int bad = errno || end == f[1] || *end;
	unsigned long long ino = strtoull(f[2], &end, 16);
	bad |= errno || end == f[2] || *end;
	ssize_t plen = unescape(f[4]);
	if (bad || plen <= 0 || (size_t)plen != strlen(f[4]))
		return FDSTORE_R_NAME; /* a path has no NUL */
	const char *path = f[4];
	if (fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode))
		return FDSTORE_R_NOT_SOCKET;
	if (sockopt_int(fd, SOL_SOCKET, SO_TYPE, &type) < 0 || type != SOCK_STREAM ||
	    sockopt_int(fd, SOL_SOCKET, SO_DOMAIN, &domain) < 0 || domain != AF_UNIX ||
	    sockopt_int(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening) < 0 || !listening)
		return FDSTORE_R_NOT_LISTENING;
	struct sockaddr_un sun;
	socklen_t len = sizeof sun;
	memset(&sun, 0, sizeof sun);
	if (getsockname(fd, (struct sockaddr *)&sun, &len) < 0 ||
	    len <= offsetof(struct sockaddr_un, sun_path) ||
	    strncmp(sun.sun_path, path, sizeof sun.sun_path) != 0)
		return FDSTORE_R_NO_LISTENER;
	/* The path must still name the file this socket made: else clients
	 * would reach another socket (or none) through it. */
	if (lstat(path, &st) < 0 || !S_ISSOCK(st.st_mode) || (unsigned long long)st.st_dev != dev ||
	    (unsigned long long)st.st_ino != ino)
		return FDSTORE_R_NO_LISTENER;
	for (size_t i = 0; i < eng->n_pools; i++) {
		struct pool *p = eng->pools[i];
		for (size_t k = 0; k < p->n_listeners; k++) {
			struct listener *l = &p->listeners[k];
			if (l->fd >= 0 || l->cfg == &l->passed_cfg || strcmp(l->cfg->path, path) != 0)
				continue;
			int fl = fcntl(fd, F_GETFL), fdfl = fcntl(fd, F_GETFD);
			if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 || fdfl < 0 ||
			    fcntl(fd, F_SETFD, fdfl | FD_CLOEXEC) < 0)
				return FDSTORE_R_ERROR;
			if (fs.on && listener_rec_add(fd, name) < 0) /* still in the store under it */
				return FDSTORE_R_NOMEM;
			listener_adopt_stored(l, fd, st.st_dev, st.st_ino);
			return -1;
		}
	}
	/* No pool listens there now: the file is ours (its inode matched) and
	 * would only be a stale socket nobody answers on. */
	if (unlink(path) < 0)
		log_debug("fd store: unlink %s: %s", path, strerror(errno));
	return FDSTORE_R_NO_LISTENER;
}

/* ---- adoption ------------------------------------------------------------ */

static int decide(const struct engine *eng)
{
	if (eng->cfg->daemon.fd_store == CFG_FD_STORE_OFF)
		return 0;
	if (!systemd_fdstore_possible() || !getenv("INVOCATION_ID"))
		return 0;                    /* not a systemd service: nobody keeps the fds */
	const char *max = getenv("FDSTORE"); /* systemd >= 254: FileDescriptorStoreMax= */
	if (max && strtoul(max, NULL, 10) == 0) {
		log_info("fd store: $FDSTORE=%.20s: the unit has no fd store (FileDescriptorStoreMax=), "
		         "warm connections do not survive a restart",
		         max);
		return 0;
	}
	return 1;
}

static struct pool *pool_named(struct engine *eng, const char *name)
{
	for (size_t i = 0; i < eng->n_pools; i++)
		if (strcmp(eng->pools[i]->name, name) == 0)
			return eng->pools[i];
	return NULL;
}

/* What kind of fd it is: -1 a TCP connection, established, no error; else the refusal. */
static int check_socket(int fd)
{
	struct stat st;
	int type = 0, listening = 0, domain = 0, err = 0;
	if (fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode))
		return FDSTORE_R_NOT_SOCKET;
	if (sockopt_int(fd, SOL_SOCKET, SO_TYPE, &type) < 0 || type != SOCK_STREAM ||
	    sockopt_int(fd, SOL_SOCKET, SO_DOMAIN, &domain) < 0 || (domain != AF_INET && domain != AF_INET6))
		return FDSTORE_R_NOT_TCP;
	if (sockopt_int(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening) < 0 || listening)
		return FDSTORE_R_LISTENING;
	if (sockopt_int(fd, SOL_SOCKET, SO_ERROR, &err) < 0 || err)
		return FDSTORE_R_ERROR;
	struct tcp_info ti;
	socklen_t len = sizeof ti;
	memset(&ti, 0, sizeof ti);
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0)
		return FDSTORE_R_NOT_TCP;
	if (ti.tcpi_state != TCP_ESTABLISHED)
		return FDSTORE_R_CLOSED;
	return -1;
}

static struct backend *backend_at(struct pool *p, int fd)
{
	struct sockaddr_storage sa;
	socklen_t len = sizeof sa;
	memset(&sa, 0, sizeof sa);
	if (getpeername(fd, (struct sockaddr *)&sa, &len) < 0)
		return NULL;
	for (size_t i = 0; i < p->n_backends; i++)
		if (!p->backends[i]->gone && pool_same_addr(&sa, &p->backends[i]->addr))
			return p->backends[i];
	return NULL;
}

/* Checks fd as the file comment says and adopts it; -1 adopted, else the refusal. */
static int adopt_one(struct engine *eng, int fd, const char *name)
{
	char buf[SYSTEMD_FDNAME_MAX + 1];
	struct conn_desc d;
	if (!fs.on && !upgrade_is_child())
		return FDSTORE_R_OFF;
	if (strlen(name) >= sizeof buf)
		return FDSTORE_R_NAME;
	memcpy(buf, name, strlen(name) + 1);
	if (parse_name(buf, &d) < 0)
		return FDSTORE_R_NAME;
	int r = check_socket(fd);
	if (r >= 0)
		return r;
	struct pool *p = pool_named(eng, d.pool);
	if (!p)
		return FDSTORE_R_NO_POOL;
	if (p->cfg->tls.enabled)
		return FDSTORE_R_TLS;
	struct backend *be = backend_at(p, fd);
	if (!be)
		return FDSTORE_R_NO_BACKEND;
	if (sock_peek(fd) != SOCK_QUIET)
		return FDSTORE_R_PENDING;
	ev_tstamp now = ev_now(eng->loop);
	ev_tstamp opened = (double)d.opened_ms / 1000.0;
	if (opened > now)
		opened = now; /* the clock went back: count from now */
	if (p->cfg->max_lifetime_ms && now - opened >= (double)p->cfg->max_lifetime_ms / 1000.0)
		return FDSTORE_R_EXPIRED;
	struct pool_counts c = pool_counts(p);
	if (c.idle + c.active + c.connecting + c.other >= p->cfg->max_connections)
		return FDSTORE_R_FULL;
	int fl = fcntl(fd, F_GETFL), fdfl = fcntl(fd, F_GETFD);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 || fdfl < 0 ||
	    fcntl(fd, F_SETFD, fdfl | FD_CLOEXEC) < 0)
		return FDSTORE_R_ERROR;
	struct bconn *b = bconn_new(p, be, fd);
	if (!b)
		return FDSTORE_R_NOMEM;
	if (d.greeting_len) {
		b->greeting = malloc(d.greeting_len);
		if (!b->greeting) {
			free(b);
			return FDSTORE_R_NOMEM;
		}
		memcpy(b->greeting, d.greeting, d.greeting_len);
		b->greeting_len = (uint32_t)d.greeting_len;
	}
	/* Still in the store under its name: recorded first, so becoming idle
	 * does not store it again. Passed by an upgrade, it is not in the
	 * store (the old process removed it when it took it off its idle
	 * list): becoming idle stores it, when the store is on. */
	if (!upgrade_is_child() && !rec_add(b, name)) {
		free(b->greeting);
		free(b);
		return FDSTORE_R_NOMEM;
	}
	b->proven = 1; /* it lived through a restart: no settle time */
	b->served = 1; /* whatever it says unprompted from now on is not a greeting (file comment) */
	b->opened_at = opened;
	bconn_log(b, LOG_DEBUG, "fd store: adopted %s, connected %.3fs ago", name, now - opened);
	bconn_adopt_idle(b);
	return -1;
}

void fdstore_adopt(struct engine *eng)
{
	char *name = NULL;
	int fd;
	char example[FDSTORE_R_N][NAME_SHOWN];

	fs.eng = eng;
	fs.on = decide(eng);
	if (fs.on)
		log_info("fd store: on: idle plain-TCP connections are kept in systemd's fd store across "
		         "restarts");
	ev_now_update(eng->loop);
	memset(example, 0, sizeof example);
	uint64_t refused_before[FDSTORE_R_N];
	memcpy(refused_before, fs.refused, sizeof refused_before);
	while ((fd = systemd_take_stored_fd(&name)) >= 0) {
		const char *nm = name ? name : "";
		int listens = strncmp(nm, FDSTORE_LISTEN_MAGIC, strlen(FDSTORE_LISTEN_MAGIC)) == 0;
		int r = listens ? adopt_listener(eng, fd, nm) : adopt_one(eng, fd, nm);
		if (r < 0) {
			fs.adopted += !listens;
		} else {
			fs.refused[r]++;
			if (!example[r][0])
				wp_escape((const unsigned char *)nm, strlen(nm), example[r],
				          sizeof example[r]);
			if (close(fd) < 0)
				log_debug("fd store: close fd %d: %s", fd, strerror(errno));
			(void)systemd_fdstore_remove(nm); /* never passed again */
		}
		free(name);
		name = NULL;
	}
	for (size_t i = 0; i < eng->n_pools; i++) {
		size_t n =
		    eng->pools[i]->n_conns[BCONN_IDLE]; /* before the start, only adopted ones are idle */
		if (n)
			log_info("pool=%s: fd store: %zu warm connection%s adopted from before the %s",
			         eng->pools[i]->name, n, n == 1 ? "" : "s",
			         upgrade_is_child() ? "upgrade" : "restart");
	}
	for (int r = 0; r < FDSTORE_R_N; r++) {
		uint64_t n = fs.refused[r] - refused_before[r];
		if (n)
			log_warning("fd store: %" PRIu64 " passed fd%s closed, not used: %s (e.g. \"%s\")", n,
			            n == 1 ? "" : "s", refusal_names[r], example[r]);
	}
}

/* ---- an upgrade's names (upgrade.c) ---------------------------------------- */

int fdstore_conn_pass_name(const struct bconn *b, char *name, size_t cap)
{
	if (b->state != BCONN_IDLE || b->fd < 0 || b->ssl || b->pool->cfg->tls.enabled || b->foreign)
		return -1;
	return conn_name(b, name, cap);
}

int fdstore_listener_pass_name(const struct listener *l, char *name, size_t cap)
{
	if (l->fd < 0 || !l->us.created || l->passed)
		return -1;
	return listen_name(l, name, cap);
}

/* ---- metrics ------------------------------------------------------------- */

void fdstore_metrics(struct wp_buf *out)
{
	wp_buf_printf(
	    out,
	    "# HELP warmpool_fdstore_enabled Whether idle connections are kept in systemd's fd store.\n"
	    "# TYPE warmpool_fdstore_enabled gauge\nwarmpool_fdstore_enabled %d\n",
	    fs.on);
	wp_buf_printf(out,
	              "# HELP warmpool_fdstore_connections Idle connections in the fd store now.\n"
	              "# TYPE warmpool_fdstore_connections gauge\nwarmpool_fdstore_connections %zu\n",
	              fs.held);
	wp_buf_printf(out,
	              "# HELP warmpool_fdstore_adopted_total Connections passed back at start and adopted.\n"
	              "# TYPE warmpool_fdstore_adopted_total counter\nwarmpool_fdstore_adopted_total %" PRIu64
	              "\n",
	              fs.adopted);
	wp_buf_printf(
	    out, "# HELP warmpool_fdstore_refused_total Fds passed back at start and closed, by reason.\n"
	         "# TYPE warmpool_fdstore_refused_total counter\n");
	for (int r = 0; r < FDSTORE_R_N; r++)
		wp_buf_printf(out, "warmpool_fdstore_refused_total{reason=\"%s\"} %" PRIu64 "\n",
		              refusal_labels[r], fs.refused[r]);
	wp_buf_printf(
	    out,
	    "# HELP warmpool_fdstore_not_stored_total Idle connections that could not be stored "
	    "(a greeting too long for a name, a full queue).\n"
	    "# TYPE warmpool_fdstore_not_stored_total counter\nwarmpool_fdstore_not_stored_total %" PRIu64
	    "\n",
	    fs.not_stored);
}
