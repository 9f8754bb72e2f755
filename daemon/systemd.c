/*
 * daemon/systemd.c — see systemd.h.
 *
 * The passed fds live in one process-wide table from systemd_listen_init()
 * to systemd_listen_done(): the LISTEN_FDS protocol is process-wide too, and
 * the table only serves the startup phase (the takers run once, in order,
 * before the loop starts). Each entry remembers what the fd is bound to, read
 * once with getsockname() and stat(), so matching a pool's listen path costs
 * no syscall on the fd itself.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "escape.h"
#include "log.h"
#include "systemd.h"

#define STATUS_MAX 1024 /* longer STATUS= texts are cut, ending in "..." */
#define NAME_SHOWN 80   /* an fd name as shown in messages, escaped */

/* ---- notifications ------------------------------------------------------- */

/* sd_notify() cannot be used from the loop: it sends on a blocking socket,
 * and a datagram socket whose reader is slow (PID 1 during a daemon-reload or
 * a boot storm; net.unix.max_dgram_qlen is 10) blocks the sender until the
 * reader drains its queue. So the daemon keeps one non-blocking datagram
 * socket of its own and a short queue of messages: each message is sent with
 * MSG_DONTWAIT at once if the reader has room, else it waits in the queue and
 * a timer retries (NOTIFY_RETRY_MIN doubling to NOTIFY_RETRY_MAX) until the
 * reader drains. Nothing is ever lost but what is superseded:
 *   - a STATUS=-only message is dropped when a newer message carries STATUS=;
 *   - a second WATCHDOG=1 is not queued while one waits;
 *   - when the queue is full, an older reload (RELOADING=1 and the READY=1
 *     that ended it) goes first, then the oldest STATUS=/WATCHDOG=1 message;
 *     READY=1, RELOADING=1 and STOPPING=1 otherwise stay in order. */

/* The fd store's messages (FDSTORE=1 / FDSTOREREMOVE=1, fdstore.c) wait in
 * a FIFO of their own: there is one per idle connection, so many may wait
 * at once (a refill of a large floor), and none may be dropped to make room
 * as a STATUS= may. A queued FDSTORE holds a dup of its fd (the caller may
 * close its own meanwhile); an FDSTOREREMOVE for a name whose FDSTORE is
 * still queued cancels both, closing the dup: the manager never saw it.
 * FDSTOREs are refused beyond FDSTORE_QUEUE_MAX waiting; removes are always
 * queued (each one is for a connection stored before, so they are bounded
 * by the connections that exist). */

#define NOTIFY_QUEUE_MAX 16     /* messages waiting for the reader (reloads while it is stuck) */
#define NOTIFY_MSG_MAX   (STATUS_MAX + 128) /* the longest message: a STATUS= plus its keys */
#define NOTIFY_RETRY_MIN 0.01   /* seconds before the first retry of a full queue */
#define NOTIFY_RETRY_MAX 0.5    /* seconds between retries at most */

#define FDSTORE_QUEUE_MAX 4096 /* FDSTORE=1 messages waiting (each holds a dup of its fd) */

enum notify_kind { NOTIFY_STATUS, NOTIFY_WATCHDOG, NOTIFY_READY, NOTIFY_RELOADING, NOTIFY_STOPPING, NOTIFY_MAINPID };

struct notify_msg {
	enum notify_kind kind;
	unsigned has_status : 1; /* carries STATUS= */
	size_t len;
	char text[NOTIFY_MSG_MAX];
};

struct fd_msg {
	int fd;                            /* FDSTORE: the dup to pass; -1: FDSTOREREMOVE */
	char name[SYSTEMD_FDNAME_MAX + 1]; /* FDNAME= */
};

static struct {
	int fd;                       /* -1: $NOTIFY_SOCKET unset or unusable: every call is a no-op */
	struct sockaddr_un addr;
	socklen_t addr_len;
	struct ev_loop *loop;         /* NULL until systemd_notify_start() */
	ev_timer retry;
	double delay;                 /* the next retry's delay */
	struct notify_msg q[NOTIFY_QUEUE_MAX];
	size_t n;
	int failing;                  /* the last send failed with this errno (logged once) */
	uint64_t dropped;             /* messages lost to a full queue (debug log) */
	struct fd_msg *fq;            /* fd store messages waiting, oldest first (fq_head..) */
	size_t fq_head, fq_n, fq_cap, fq_stores; /* fq_stores: FDSTOREs among them */
} notifier = {.fd = -1};

/* Parse $NOTIFY_SOCKET: a path, or "@name" for the abstract namespace
 * (what systemd 252 passes); 0 or -1 with a message. */
static int notify_address(const char *e)
{
	size_t len = strlen(e);
	if ((e[0] != '/' && e[0] != '@') || len < 2 || len > sizeof notifier.addr.sun_path) {
		log_warning("notify: $NOTIFY_SOCKET \"%.*s\" is not a Unix socket path or @name: not notifying",
		            80, e);
		return -1;
	}
	memset(&notifier.addr, 0, sizeof notifier.addr);
	notifier.addr.sun_family = AF_UNIX;
	memcpy(notifier.addr.sun_path, e, len);
	if (e[0] == '@')
		notifier.addr.sun_path[0] = '\0';
	/* A path's terminating NUL is counted (as sd_notify does); an abstract name's is not. */
	notifier.addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + (e[0] == '/'));
	return 0;
}

static void notify_drop(size_t i)
{
	memmove(&notifier.q[i], &notifier.q[i + 1], (notifier.n - i - 1) * sizeof notifier.q[0]);
	notifier.n--;
}

/* A send's outcome: 0 sent (or lost for good: logged once per cause), 1
 * the reader is full (try again later). */
static int notify_sent(ssize_t r)
{
	if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS))
		return 1;
	if (r < 0) {
		if (notifier.failing != errno)
			log_warning("notify: sending to $NOTIFY_SOCKET: %s (messages are dropped until it works)",
			            strerror(errno));
		notifier.failing = errno;
	} else {
		if (notifier.failing)
			log_info("notify: $NOTIFY_SOCKET takes messages again");
		notifier.failing = 0;
	}
	return 0;
}

/* Send one fd store message, with its fd (SCM_RIGHTS) when it has one. */
static ssize_t fd_msg_send(const struct fd_msg *m)
{
	char text[sizeof m->name + 32];
	int len = snprintf(text, sizeof text, "%s\nFDNAME=%s", m->fd >= 0 ? "FDSTORE=1" : "FDSTOREREMOVE=1", m->name);
	struct iovec iov = {.iov_base = text, .iov_len = (size_t)len};
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} ctl;
	struct msghdr mh = {.msg_name = &notifier.addr, .msg_namelen = notifier.addr_len, .msg_iov = &iov, .msg_iovlen = 1};
	if (m->fd >= 0) {
		memset(&ctl, 0, sizeof ctl);
		mh.msg_control = ctl.buf;
		mh.msg_controllen = sizeof ctl.buf;
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &m->fd, sizeof(int));
	}
	ssize_t r;
	do
		r = sendmsg(notifier.fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
	while (r < 0 && errno == EINTR);
	return r;
}

static struct fd_msg *fq_at(size_t i)
{
	return &notifier.fq[(notifier.fq_head + i) % notifier.fq_cap];
}

/* Forget the fd queue's head (sent, or lost for good): its dup is closed. */
static void fq_pop(void)
{
	struct fd_msg *m = fq_at(0);
	if (m->fd >= 0) {
		close(m->fd);
		notifier.fq_stores--;
	}
	notifier.fq_head = (notifier.fq_head + 1) % notifier.fq_cap;
	notifier.fq_n--;
}

/* Send the fd queue's head messages; 1 when something is left. */
static int fq_flush(void)
{
	while (notifier.fq_n > 0) {
		if (notify_sent(fd_msg_send(fq_at(0))))
			return 1;
		fq_pop();
	}
	return 0;
}

/* Send the queue's head messages until it is empty or the reader is full;
 * 1 when something is left. */
static int notify_flush(void)
{
	if (fq_flush())
		return 1;
	while (notifier.n > 0) {
		struct notify_msg *m = &notifier.q[0];
		ssize_t r = sendto(notifier.fd, m->text, m->len, MSG_DONTWAIT | MSG_NOSIGNAL,
		                   (const struct sockaddr *)&notifier.addr, notifier.addr_len);
		if (r < 0 && errno == EINTR)
			continue;
		/* Full: the timer tries again. Nobody listens (ECONNREFUSED,
		 * ENOENT): as sd_notify, the message is lost (said once per cause). */
		if (notify_sent(r))
			return 1;
		notify_drop(0);
	}
	return 0;
}

static void notify_schedule(void)
{
	if (!notifier.loop)
		return;
	if (notifier.n == 0 && notifier.fq_n == 0) {
		ev_timer_stop(notifier.loop, &notifier.retry);
		notifier.delay = NOTIFY_RETRY_MIN;
		return;
	}
	if (ev_is_active(&notifier.retry))
		return;
	ev_timer_set(&notifier.retry, notifier.delay, 0.);
	ev_timer_start(notifier.loop, &notifier.retry);
	notifier.delay = notifier.delay * 2 < NOTIFY_RETRY_MAX ? notifier.delay * 2 : NOTIFY_RETRY_MAX;
}

static void notify_retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
	notify_flush();
	notify_schedule();
}

/* Room for one more message: drop what the newest ones make redundant. */
static void notify_make_room(void)
{
	if (notifier.n < NOTIFY_QUEUE_MAX)
		return;
	notifier.dropped++;
	/* An older reload: the manager ends up "ready" either way. */
	for (size_t i = 0; i < notifier.n; i++) {
		if (notifier.q[i].kind != NOTIFY_RELOADING)
			continue;
		for (size_t j = i + 1; j < notifier.n; j++)
			if (notifier.q[j].kind == NOTIFY_READY) {
				notify_drop(j);
				notify_drop(i);
				return;
			}
	}
	for (size_t i = 0; i < notifier.n; i++)
		if (notifier.q[i].kind == NOTIFY_STATUS || notifier.q[i].kind == NOTIFY_WATCHDOG) {
			notify_drop(i);
			return;
		}
	log_warning("notify: $NOTIFY_SOCKET has not been read for a while; dropping an old message");
	notify_drop(0);
}

static void notify_queue(enum notify_kind kind, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void notify_queue(enum notify_kind kind, const char *fmt, ...)
{
	if (notifier.fd < 0)
		return;
	int has_status = kind != NOTIFY_WATCHDOG && kind != NOTIFY_MAINPID; /* every other message carries STATUS= */
	for (size_t i = notifier.n; i-- > 0;) {
		const struct notify_msg *m = &notifier.q[i];
		if ((has_status && m->kind == NOTIFY_STATUS) || (kind == NOTIFY_WATCHDOG && m->kind == NOTIFY_WATCHDOG)) {
			if (kind == NOTIFY_WATCHDOG)
				return; /* one waiting keep-alive says as much as two */
			notify_drop(i);
		}
	}
	notify_make_room();
	struct notify_msg *m = &notifier.q[notifier.n];
	va_list ap;
	va_start(ap, fmt);
	int len = vsnprintf(m->text, sizeof m->text, fmt, ap);
	va_end(ap);
	if (len < 0)
		return;
	m->kind = kind;
	m->has_status = (unsigned)has_status;
	m->len = (size_t)len < sizeof m->text ? (size_t)len : sizeof m->text - 1;
	notifier.n++;
	notify_flush();
	notify_schedule();
}

int systemd_notify_open(void)
{
	const char *e = getenv("NOTIFY_SOCKET");
	if (!e || !*e || notifier.fd >= 0)
		return 0;
	if (notify_address(e) < 0)
		return 0;
	notifier.fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (notifier.fd < 0) {
		log_error("notify: socket: %s", strerror(errno));
		return -1;
	}
	notifier.delay = NOTIFY_RETRY_MIN;
	return 0;
}

void systemd_notify_start(struct ev_loop *loop)
{
	if (notifier.fd < 0 || notifier.loop)
		return;
	notifier.loop = loop;
	ev_timer_init(&notifier.retry, notify_retry_cb, NOTIFY_RETRY_MIN, 0.);
	notify_schedule();
}

void systemd_notify_close(void)
{
	if (notifier.fd < 0)
		return;
	if (notifier.loop)
		ev_timer_stop(notifier.loop, &notifier.retry);
	notifier.loop = NULL;
	notify_flush(); /* a last try, never a wait: the exit tells the manager the rest */
	if (notifier.n || notifier.fq_n)
		log_debug("notify: %zu messages not delivered at exit", notifier.n + notifier.fq_n);
	while (notifier.fq_n) /* an FDSTORE not sent: its dup closes, the manager never had it */
		fq_pop();
	free(notifier.fq);
	notifier.fq = NULL;
	notifier.fq_cap = notifier.fq_head = 0;
	if (notifier.dropped)
		log_debug("notify: %llu messages dropped to a full queue", (unsigned long long)notifier.dropped);
	notifier.n = 0;
	close(notifier.fd);
	notifier.fd = -1;
}

size_t systemd_notify_pending(void)
{
	return notifier.n + notifier.fq_n;
}

/* ---- the fd store ---------------------------------------------------------- */

int systemd_fdstore_possible(void)
{
	return notifier.fd >= 0;
}

int systemd_fdname_valid(const char *name)
{
	size_t n = 0;
	for (const char *c = name; *c; c++, n++)
		if ((unsigned char)*c < ' ' || (unsigned char)*c >= 127 || *c == ':')
			return 0;
	return n > 0 && n <= SYSTEMD_FDNAME_MAX;
}

/* Room for one more fd message (the ring grows by doubling). */
static int fq_reserve(void)
{
	if (notifier.fq_n < notifier.fq_cap)
		return 0;
	size_t cap = notifier.fq_cap ? 2 * notifier.fq_cap : 64;
	struct fd_msg *v = malloc(cap * sizeof *v);
	if (!v)
		return -1;
	for (size_t i = 0; i < notifier.fq_n; i++)
		v[i] = *fq_at(i);
	free(notifier.fq);
	notifier.fq = v;
	notifier.fq_cap = cap;
	notifier.fq_head = 0;
	return 0;
}

/* Queue (or, with nothing waiting, send at once) an fd message. */
static int fq_push(int fd, const char *name)
{
	struct fd_msg m = {.fd = fd};
	snprintf(m.name, sizeof m.name, "%s", name);
	if (notifier.fq_n == 0 && notifier.n == 0) {
		ssize_t r = fd_msg_send(&m);
		if (!notify_sent(r))
			return 0; /* sent (or lost for good, as any message then) */
	}
	if (fq_reserve() < 0)
		return -1;
	if (fd >= 0) {
		m.fd = fcntl(fd, F_DUPFD_CLOEXEC, 3); /* ours until sent: the caller may close fd */
		if (m.fd < 0)
			return -1;
		notifier.fq_stores++;
	}
	*fq_at(notifier.fq_n) = m;
	notifier.fq_n++;
	notify_schedule();
	return 0;
}

int systemd_fdstore(int fd, const char *name)
{
	if (notifier.fd < 0 || !systemd_fdname_valid(name) || notifier.fq_stores >= FDSTORE_QUEUE_MAX)
		return -1;
	return fq_push(fd, name);
}

int systemd_fdstore_remove(const char *name)
{
	if (notifier.fd < 0 || !systemd_fdname_valid(name))
		return 0;
	for (size_t i = notifier.fq_n; i-- > 0;) {
		struct fd_msg *m = fq_at(i);
		if (m->fd < 0 || strcmp(m->name, name) != 0)
			continue;
		/* Never sent: cancel it (the ring closes over the gap). */
		close(m->fd);
		notifier.fq_stores--;
		for (size_t j = i; j + 1 < notifier.fq_n; j++)
			*fq_at(j) = *fq_at(j + 1);
		notifier.fq_n--;
		return 1;
	}
	if (fq_push(-1, name) < 0) {
		/* No memory for the message: the caller shuts the socket down,
		 * which the manager sees (POLLHUP) and drops it for. */
		log_warning("notify: out of memory for FDSTOREREMOVE of %s", name);
	}
	return 0;
}

/* One line for STATUS=: a newline would start another assignment. */
static const char *one_line(const char *in, char *out, size_t cap)
{
	in = in ? in : "";
	wp_escape_as((const unsigned char *)in, strlen(in), SIZE_MAX, out, cap, WP_ESC_LINE);
	return out;
}

void systemd_ready(const char *status)
{
	char buf[STATUS_MAX];
	notify_queue(NOTIFY_READY, "READY=1\nSTATUS=%s", one_line(status, buf, sizeof buf));
}

void systemd_status(const char *status)
{
	char buf[STATUS_MAX];
	notify_queue(NOTIFY_STATUS, "STATUS=%s", one_line(status, buf, sizeof buf));
}

void systemd_reloading(const char *status)
{
	char buf[STATUS_MAX];
	struct timespec ts;
	one_line(status, buf, sizeof buf);
	/* CLOCK_MONOTONIC is the manager's clock too: it matches the
	 * timestamp against its own reload request (systemd ≥ 253). */
	if (clock_gettime(CLOCK_MONOTONIC, &ts) == 0)
		notify_queue(NOTIFY_RELOADING, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=%s",
		             (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000, buf);
	else
		notify_queue(NOTIFY_RELOADING, "RELOADING=1\nSTATUS=%s", buf);
}

void systemd_stopping(const char *status)
{
	char buf[STATUS_MAX];
	notify_queue(NOTIFY_STOPPING, "STOPPING=1\nSTATUS=%s", one_line(status, buf, sizeof buf));
}

void systemd_mainpid(pid_t pid)
{
	notify_queue(NOTIFY_MAINPID, "MAINPID=%ld", (long)pid);
}

/* ---- watchdog ------------------------------------------------------------ */

double systemd_watchdog_interval(void)
{
	uint64_t usec = 0;
	/* Keep the variables: a reload may ask again, and we start no children. */
	int r = sd_watchdog_enabled(0, &usec);
	if (r < 0) {
		log_warning("watchdog: invalid $WATCHDOG_USEC or $WATCHDOG_PID, ignoring: %s", strerror(-r));
		return 0;
	}
	if (r == 0 || usec == 0)
		return 0;
	return (double)usec / 2e6;
}

void systemd_watchdog(void)
{
	notify_queue(NOTIFY_WATCHDOG, "WATCHDOG=1");
}

/* ---- socket activation --------------------------------------------------- */

struct passed_fd {
	int fd;
	char *name;             /* from $LISTEN_FDNAMES ("unknown" when unnamed); owned */
	char shown[NAME_SHOWN]; /* name, escaped for messages */
	int family;             /* AF_UNIX, AF_INET, ... */
	char addr[sizeof(((struct sockaddr_un *)0)->sun_path) + 2]; /* for messages; a path for AF_UNIX */
	unsigned has_path : 1;  /* AF_UNIX bound to a file: addr is its path */
	unsigned has_inode : 1; /* dev/ino of that file, if it could be stat()ed at startup */
	unsigned claimed : 1;
	unsigned stored : 1;    /* from our fd store (a name with a comma): fdstore.c takes it */
	dev_t dev;
	ino_t ino;
};

static struct passed_fd *passed; /* SD_LISTEN_FDS_START + i is passed[i].fd */
static size_t n_passed;

static void describe(struct passed_fd *p)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof ss;
	snprintf(p->addr, sizeof p->addr, "?");
	memset(&ss, 0, sizeof ss);
	if (getsockname(p->fd, (struct sockaddr *)&ss, &len) < 0)
		return;
	p->family = ss.ss_family;
	if (ss.ss_family == AF_UNIX) {
		const struct sockaddr_un *sun = (const struct sockaddr_un *)&ss;
		size_t off = offsetof(struct sockaddr_un, sun_path);
		size_t n = len > off ? len - off : 0;
		if (n > sizeof sun->sun_path)
			n = sizeof sun->sun_path;
		if (n == 0) {
			snprintf(p->addr, sizeof p->addr, "(unnamed)");
		} else if (sun->sun_path[0] == '\0') {
			p->addr[0] = '@';
			wp_escape((const unsigned char *)sun->sun_path + 1, n - 1, p->addr + 1,
			          sizeof p->addr - 1);
		} else {
			size_t l = strnlen(sun->sun_path, n);
			memcpy(p->addr, sun->sun_path, l);
			p->addr[l] = '\0';
			p->has_path = 1;
			struct stat st;
			if (stat(p->addr, &st) == 0 && S_ISSOCK(st.st_mode)) {
				p->dev = st.st_dev;
				p->ino = st.st_ino;
				p->has_inode = 1;
			}
		}
	} else if (ss.ss_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)&ss;
		char ip[INET_ADDRSTRLEN];
		if (inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof ip))
			snprintf(p->addr, sizeof p->addr, "%s:%u", ip, (unsigned)ntohs(sin->sin_port));
	} else if (ss.ss_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&ss;
		char ip[INET6_ADDRSTRLEN];
		if (inet_ntop(AF_INET6, &sin6->sin6_addr, ip, sizeof ip))
			snprintf(p->addr, sizeof p->addr, "[%s]:%u", ip, (unsigned)ntohs(sin6->sin6_port));
	}
}

static int set_flags(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0))
		return -1;
	int fdfl = fcntl(fd, F_GETFD);
	if (fdfl < 0 || (!(fdfl & FD_CLOEXEC) && fcntl(fd, F_SETFD, fdfl | FD_CLOEXEC) < 0))
		return -1;
	return 0;
}

int systemd_listen_init(char *err, size_t errlen)
{
	char **names = NULL;
	systemd_listen_done();
	int n = sd_listen_fds_with_names(1, &names);
	if (n < 0) {
		snprintf(err, errlen, "socket activation: cannot read $LISTEN_FDS/$LISTEN_FDNAMES: %s",
		         strerror(-n));
		return -1;
	}
	if (n == 0) {
		free(names); /* NULL, or an empty list */
		return 0;
	}
	passed = calloc((size_t)n, sizeof *passed);
	if (!passed) {
		for (int i = 0; names && i < n; i++)
			free(names[i]);
		free(names);
		snprintf(err, errlen, "socket activation: out of memory for %d passed fds", n);
		return -1;
	}
	n_passed = (size_t)n;
	for (size_t i = 0; i < n_passed; i++) {
		struct passed_fd *p = &passed[i];
		p->fd = SD_LISTEN_FDS_START + (int)i;
		p->name = names ? names[i] : NULL; /* taken over: freed in systemd_listen_done() */
		const char *nm = p->name ? p->name : "unknown";
		wp_escape((const unsigned char *)nm, strlen(nm), p->shown, sizeof p->shown);
	}
	free(names); /* the array only: its strings are ours now */

	for (size_t i = 0; i < n_passed; i++) {
		struct passed_fd *p = &passed[i];
		if (p->name && strchr(p->name, ',')) {
			/* Ours, back from the fd store: anything at all until
			 * fdstore.c has validated it (no pool or "admin" has a comma). */
			p->stored = 1;
			continue;
		}
		/* A handoff socket an upgrade passes is SOCK_SEQPACKET; every
		 * other name stays a stream socket (pools, admin, metrics). */
		int seqpacket = p->name && strcmp(p->name, SYSTEMD_HANDOFF_FDNAME) == 0;
		int r = seqpacket ? sd_is_socket(p->fd, AF_UNIX, SOCK_SEQPACKET, 1)
		                  : sd_is_socket(p->fd, AF_UNSPEC, SOCK_STREAM, 1);
		if (r <= 0) {
			snprintf(err, errlen, "socket activation: fd %d named \"%s\" %s%s", p->fd, p->shown,
			         r < 0 ? "cannot be checked: "
			               : seqpacket ? "is not a listening Unix seqpacket socket"
			                           : "is not a listening stream socket",
			         r < 0 ? strerror(-r) : "");
			return -1;
		}
		if (set_flags(p->fd) < 0) {
			snprintf(err, errlen, "socket activation: fd %d named \"%s\": fcntl: %s", p->fd,
			         p->shown, strerror(errno));
			return -1;
		}
		describe(p);
		log_debug("socket activation: fd %d named \"%s\" is %s", p->fd, p->shown, p->addr);
	}
	return 0;
}

static int name_is(const struct passed_fd *p, const char *name)
{
	return !p->stored && strcmp(p->name ? p->name : "unknown", name) == 0;
}

int systemd_take_stored_fd(char **name)
{
	for (size_t i = 0; i < n_passed; i++) {
		struct passed_fd *p = &passed[i];
		if (p->claimed || !p->stored)
			continue;
		p->claimed = 1;
		*name = p->name; /* the caller's now */
		p->name = NULL;
		return p->fd;
	}
	return -1;
}

/* Is the passed socket the file at `path`? The same text, or the same inode
 * (a relative or symlinked listen path naming systemd's socket file). */
static int is_at(const struct passed_fd *p, const char *path)
{
	if (!p->has_path)
		return 0;
	if (strcmp(p->addr, path) == 0)
		return 1;
	struct stat st;
	return p->has_inode && stat(path, &st) == 0 && st.st_dev == p->dev && st.st_ino == p->ino;
}

int systemd_take_listen_fd(const char *name)
{
	for (size_t i = 0; i < n_passed; i++) {
		if (!passed[i].claimed && name_is(&passed[i], name)) {
			passed[i].claimed = 1;
			return passed[i].fd;
		}
	}
	return -1;
}

int systemd_take_listen_fd_at(const char *name, const char *path)
{
	for (size_t i = 0; i < n_passed; i++) {
		if (!passed[i].claimed && name_is(&passed[i], name) && is_at(&passed[i], path)) {
			passed[i].claimed = 1;
			return passed[i].fd;
		}
	}
	return -1;
}

size_t systemd_count_listen_fds(const char *name)
{
	size_t n = 0;
	for (size_t i = 0; i < n_passed; i++)
		n += !passed[i].claimed && name_is(&passed[i], name);
	return n;
}

int systemd_listen_fd_at(const char *path, const char **name)
{
	for (size_t i = 0; i < n_passed; i++) {
		if (!passed[i].stored && is_at(&passed[i], path)) {
			if (name)
				*name = passed[i].shown;
			return passed[i].fd;
		}
	}
	return -1;
}

static struct passed_fd *find_fd(int fd)
{
	size_t i = (size_t)(fd - SD_LISTEN_FDS_START);
	return fd >= SD_LISTEN_FDS_START && i < n_passed ? &passed[i] : NULL;
}

const char *systemd_listen_fd_address(int fd)
{
	const struct passed_fd *p = find_fd(fd);
	return p ? p->addr : "?";
}

int systemd_listen_fd_is_unix(int fd)
{
	const struct passed_fd *p = find_fd(fd);
	return p && p->family == AF_UNIX;
}

int systemd_check_unclaimed(char *err, size_t errlen)
{
	size_t left = 0;
	const struct passed_fd *first = NULL;
	for (size_t i = 0; i < n_passed; i++) {
		if (!passed[i].claimed) {
			left++;
			if (!first)
				first = &passed[i];
		}
	}
	if (!first)
		return 0;
	char more[64] = "";
	if (left > 1)
		snprintf(more, sizeof more, " (and %zu more unclaimed fds)", left - 1);
	if (name_is(first, "admin"))
		snprintf(
		    err, errlen,
		    "socket activation: fd %d named \"admin\" (%s) was not used: no admin socket is open%s",
		    first->fd, first->addr, more);
	else
		snprintf(err, errlen,
		         "socket activation: fd %d named \"%s\" (%s) matches no pool and is not \"admin\"; "
		         "FileDescriptorName= must be a pool name%s",
		         first->fd, first->shown, first->addr, more);
	return -1;
}

void systemd_listen_done(void)
{
	for (size_t i = 0; i < n_passed; i++) {
		if (!passed[i].claimed && close(passed[i].fd) < 0)
			log_debug("socket activation: close fd %d: %s", passed[i].fd, strerror(errno));
		free(passed[i].name);
	}
	free(passed);
	passed = NULL;
	n_passed = 0;
}
