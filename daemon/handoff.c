/*
 * daemon/handoff.c — a pool's handoff socket: libwarmpool clients get the
 * warm backend socket itself.
 *
 * The socket is SOCK_SEQPACKET (so libwarmpool tells it from a proxy
 * socket by type, and every request and answer is one message). An
 * accepted client first sends its request (lib/handoff_proto.h), within
 * HANDOFF_REQ_TIMEOUT; at most HANDOFF_REQ_MAX wait for theirs at once.
 *
 * A checkout makes the client a session like any other (max_clients,
 * fail_fast, FIFO queue, queue_timeout), marked `handoff`: when the pool pairs it with a
 * liveness-checked idle connection, session_hand_off() sends one message
 * (lib/handoff_proto.h) carrying the backend fd (SCM_RIGHTS) and the
 * greeting bytes read so far, then closes the daemon's copies. The backend
 * sees nothing of it: the TCP connection simply continues in the client.
 * The pool's `allow:` is checked at accept, as on its listen sockets.
 *
 * A checkin hands a socket back. Any local user who may use the socket can
 * send any fd, so it is taken only if it is the very socket this handoff
 * socket handed out, to a client of the same uid, not yet checked in: at
 * handout the socket's kernel cookie (SO_COOKIE, unique for the boot and
 * never reused, unlike an fd number or an inode) is leased to the client's
 * uid (SO_PEERCRED), and a checkin must present a socket whose cookie has a
 * lease of its uid; the lease is then gone, so a second checkin of it (or
 * of a dup) is refused. A socket made by the client itself (even one that
 * looks connected to a backend, made in a network namespace of its own)
 * has no lease. Then the pool has to have `reuse:` on, and the socket goes
 * through the same checks and reset as a relayed connection (bconn_reuse)
 * before it is idle again, marked foreign and owned by that uid: the one
 * who checked it in may have kept a copy, so only its own uid's clients
 * may get it again (pool_dispatch). Otherwise it is closed.
 *
 * Pending requests are bounded per uid (HANDOFF_REQ_PER_UID) within the
 * total (HANDOFF_REQ_MAX), so one user's silent connections cannot take
 * every slot and lock the others out of checkouts.
 *
 * An upgrade (upgrade.h) passes the listening socket to the new process
 * (named SYSTEMD_HANDOFF_FDNAME), which takes it instead of binding the
 * path: its file stays the one clients know, never unlinked nor re-created.
 * The new process checks it (a listening AF_UNIX seqpacket socket bound to
 * exactly the configured path) and owns the file only once it serves
 * (handoff_start): a start that fails before leaves the file to the old
 * process, which goes on serving. Once the new process is ready the old one
 * closes its copy without unlinking (handoff_handover). Leases stay in the
 * process that handed the socket out: a client checking one in after the
 * switch reaches the new process, which has no lease for it, and refuses
 * it (closed, counted in connections_reuse_refused) as any unknown socket.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <stddef.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "engine.h"
#include "handoff_proto.h"
#include "log.h"
#include "systemd.h"
#include "upgrade.h"

#define HANDOFF_REQ_TIMEOUT 5.0 /* seconds a connected client has to send its request */
#define HANDOFF_REQ_MAX     256 /* clients waiting to send their request, per handoff socket */
#define HANDOFF_REQ_PER_UID 16  /* of those, from one uid: a user's silent connections cannot take
                                 * the slots of others (a request already sent at accept takes none) */

struct handoff_req {
	struct list_node node;
	struct handoff *h;
	int fd;
	uid_t uid; /* the client's (SO_PEERCRED at accept) */
	pid_t pid;
	ev_io io;
	ev_timer timer;
};

/* A socket handed out that may come back (handoff_lease). */
struct handoff_lease {
	struct list_node node; /* on h->leases, oldest handout first */
	uint64_t cookie;       /* SO_COOKIE: the socket's identity for the boot */
	ino_t ino;             /* its inode: a cross-check */
	uid_t uid;             /* the client it was handed to: the only one that may hand it back */
	ev_tstamp opened_at;   /* the connection's (max_lifetime) */
};

struct handoff {
	struct pool *pool;
	listener_accept_fn *on_client;  /* a checkout request: a client for the pool */
	handoff_checkin_fn *on_checkin; /* a checkin: a connection for the pool */
	struct sock_unix us;   /* us.fd -1 once an upgrade's new process took over */
	unsigned adopted : 1;  /* passed by an upgrade: the file becomes ours at handoff_start */
	char path[128]; /* own copy: the file's name outlives a reload's config */
	ev_io io;
	ev_timer pause;        /* accept paused after EMFILE/ENFILE */
	struct peer_gate gate; /* denials by the pool's allow: */
	struct peer_gate full_gate;   /* clients closed: too many requests pending (log rate limit) */
	struct peer_gate refuse_gate; /* checkins refused (log rate limit) */
	struct list reqs;      /* struct handoff_req: accepted, request not read yet */
	struct list leases;    /* struct handoff_lease, at most HANDOFF_LEASES_MAX */
};

/* May a line be logged now through gate g (at most one per
 * PEER_GATE_LOG_EVERY)? 1, with *left set to the lines left out since the
 * previous one; 0 when this one is left out (counted). */
static int gate_pass(struct peer_gate *g, ev_tstamp now, uint64_t *left)
{
	if (now - g->logged_at < PEER_GATE_LOG_EVERY) {
		g->unlogged++;
		return 0;
	}
	*left = g->unlogged;
	g->unlogged = 0;
	g->logged_at = now;
	return 1;
}

/* The fd of libev's epoll set, found in /proc/self/fd: libev 4.33 has no
 * public accessor for it, and nothing else in this process makes an epoll
 * instance (the sole "anon_inode:[eventpoll]" is the loop's). -1 when not
 * exactly one is found. Called rarely: the result is cached by the caller. */
static int find_epoll_fd(void)
{
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		return -1;
	int found = -1, n = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		char path[300], link[64];
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
		ssize_t k = readlink(path, link, sizeof link - 1);
		if (k < 0)
			continue;
		link[k] = 0;
		if (strcmp(link, "anon_inode:[eventpoll]") == 0 && atoi(e->d_name) != dirfd(d)) {
			found = atoi(e->d_name);
			n++;
		}
	}
	closedir(d);
	return n == 1 ? found : -1;
}

void handoff_forget_fd(struct ev_loop *loop, int fd)
{
	/* libev has no call for this: it removes an fd from epoll lazily, and
	 * not at all once the fd is closed (it assumes the kernel dropped it),
	 * handling a later stray event by rebuilding the whole set. Removing it
	 * ourselves is safe: a watcher started on this fd number later goes
	 * through ev_io_set, and libev retries an EPOLL_CTL_MOD that fails with
	 * ENOENT as an ADD. ENOENT here (it was never registered) is fine. A
	 * cached epoll fd that is not one any more (libev recreated its set
	 * under another number) fails with EBADF or EINVAL: look again, once. */
	static int epfd = -1;
	static unsigned warned;
	if (ev_backend(loop) != EVBACKEND_EPOLL)
		return;
	struct epoll_event unused = {0}; /* pre-2.6.9 kernels want a pointer */
	for (int attempt = 0; attempt < 2; attempt++) {
		if (epfd < 0 && (epfd = find_epoll_fd()) < 0)
			break;
		if (epoll_ctl(epfd, EPOLL_CTL_DEL, fd, &unused) == 0 || errno == ENOENT)
			return;
		if (errno != EBADF && errno != EINVAL)
			break;
		epfd = -1;
	}
	if (!warned++)
		log_warning("handing out fd %d: cannot remove it from the event loop's epoll set (%s); libev will "
		            "rebuild its set on the socket's events", fd, epfd < 0 ? "epoll fd not found" : strerror(errno));
}

static void lease_free(struct handoff *h, struct handoff_lease *l)
{
	list_remove(&h->leases, &l->node);
	free(l);
}

int handoff_lease(struct handoff *h, int fd, uid_t uid, ev_tstamp opened_at)
{
	const struct cfg_pool *cfg = h->pool->cfg;
	ev_tstamp now = ev_now(h->pool->eng->loop);
	uint64_t cookie;
	socklen_t len = sizeof cookie;
	struct stat st;
	if (getsockopt(fd, SOL_SOCKET, SO_COOKIE, &cookie, &len) < 0 || len != sizeof cookie || fstat(fd, &st) < 0)
		return -1;
	/* Leases past max_lifetime are worthless (a checkin would be closed
	 * anyway); beyond the bound the oldest goes. */
	struct list_node *n;
	while ((n = list_first(&h->leases))) {
		struct handoff_lease *old = container_of(n, struct handoff_lease, node);
		if (h->leases.n < HANDOFF_LEASES_MAX &&
		    !(cfg->max_lifetime_ms && now >= old->opened_at + (double)cfg->max_lifetime_ms / 1000.0))
			break;
		lease_free(h, old);
	}
	struct handoff_lease *l = malloc(sizeof *l);
	if (!l)
		return -1;
	l->cookie = cookie;
	l->ino = st.st_ino;
	l->uid = uid;
	l->opened_at = opened_at;
	list_push_back(&h->leases, &l->node);
	return 0;
}

static void handoff_req_free(struct handoff_req *r, int close_fd)
{
	struct ev_loop *loop = r->h->pool->eng->loop;
	ev_io_stop(loop, &r->io);
	ev_timer_stop(loop, &r->timer);
	if (close_fd)
		close(r->fd);
	list_remove(&r->h->reqs, &r->node);
	free(r);
}

/* A socket handed back by a client of uid/pid: answer (the daemon takes it
 * either way: it is kept or closed), check its lease, then let the pool
 * judge it. */
static void handoff_checkin(struct handoff *h, uid_t uid, pid_t pid, int cfd, int bfd)
{
	struct pool *p = h->pool;
	struct wp_handoff_hdr ok = {.magic = WP_HANDOFF_MAGIC, .status = WP_HANDOFF_OK};
	if (send(cfd, &ok, sizeof ok, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
		log_debug("pool=%s: checkin answer: %s", p->name, strerror(errno));

	uint64_t cookie;
	socklen_t len = sizeof cookie;
	struct stat st;
	struct handoff_lease *l = NULL;
	const char *why = NULL;
	if (getsockopt(bfd, SOL_SOCKET, SO_COOKIE, &cookie, &len) < 0 || len != sizeof cookie || fstat(bfd, &st) < 0)
		why = "not a socket";
	else {
		struct list_node *pos, *tmp;
		list_for_each_safe (pos, tmp, &h->leases) {
			struct handoff_lease *x = container_of(pos, struct handoff_lease, node);
			if (x->cookie == cookie && x->ino == st.st_ino) {
				l = x;
				break;
			}
		}
		if (!l)
			why = "not a socket handed out here, or already checked in";
		else if (l->uid != uid)
			why = "handed out to another uid";
	}
	if (why) {
		p->stats.conns_reuse_refused++;
		uint64_t left;
		if (gate_pass(&h->refuse_gate, ev_now(p->eng->loop), &left))
			log_info("pool=%s: %s: checkin from uid=%u pid=%ld refused: %s; closed (%llu more refusals "
			         "not logged)", p->name, h->path, (unsigned)uid, (long)pid, why, (unsigned long long)left);
		close(bfd);
		return;
	}
	ev_tstamp opened_at = l->opened_at;
	lease_free(h, l); /* once: a second checkin of this socket, or of a copy, finds no lease */
	h->on_checkin(p, bfd, uid, opened_at);
}

/* Read the client's request and act on it. 0 when it has not arrived yet
 * (r is untouched); 1 when r is done with (its fd handed on or closed; r
 * itself is the caller's to free, without closing the fd). */
static int handoff_req_read(struct handoff_req *r)
{
	struct handoff *h = r->h;
	struct wp_handoff_req req;
	union wp_fd_cmsg ctl;
	struct iovec iov = {&req, sizeof req};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof ctl.buf};
	ssize_t n = recvmsg(r->fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return 0;
	int bfd = -1;
	for (struct cmsghdr *c = n > 0 ? CMSG_FIRSTHDR(&msg) : NULL; c; c = CMSG_NXTHDR(&msg, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
			/* Take every fd passed, so none leaks; only a lone one is used. */
			size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			for (size_t i = 0; i < k; i++) {
				int fd;
				memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
				if (bfd >= 0)
					close(bfd);
				bfd = k == 1 ? fd : (close(fd), -1);
			}
		}
	int cfd = r->fd;
	int good = n == (ssize_t)sizeof req && !(msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) &&
	           memcmp(req.magic, WP_HANDOFF_REQ_MAGIC, 4) == 0;
	if (good && req.op == WP_HANDOFF_CHECKOUT && bfd < 0) {
		h->on_client(h->pool, cfd);
		return 1;
	}
	if (good && req.op == WP_HANDOFF_CHECKIN && bfd >= 0) {
		handoff_checkin(h, r->uid, r->pid, cfd, bfd);
		close(cfd);
		return 1;
	}
	if (n != 0)
		log_info("pool=%s: %s: a request that is not a checkout or a checkin, closed", h->pool->name, h->path);
	if (bfd >= 0)
		close(bfd);
	close(cfd);
	return 1;
}

static void handoff_req_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)loop;
	(void)revents;
	struct handoff_req *r = container_of(w, struct handoff_req, io);
	if (handoff_req_read(r))
		handoff_req_free(r, 0);
}

static void handoff_req_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	struct handoff_req *r = container_of(w, struct handoff_req, timer);
	log_info("pool=%s: %s: no request within %.0fs, closed", r->h->pool->name, r->h->path, HANDOFF_REQ_TIMEOUT);
	handoff_req_free(r, 1);
}

/* A client connected: act on its request, which is usually there already;
 * else wait for it, within the budgets. */
static void handoff_wait_request(struct handoff *h, int fd)
{
	struct pool *p = h->pool;
	struct ucred cr;
	socklen_t len = sizeof cr;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0 || len != sizeof cr) {
		log_warning("pool=%s: %s: SO_PEERCRED: %s, closing a new client", p->name, h->path, strerror(errno));
		close(fd);
		return;
	}
	struct handoff_req *r = calloc(1, sizeof *r);
	if (!r) {
		log_warning("pool=%s: %s: out of memory, closing a new client", p->name, h->path);
		close(fd);
		return;
	}
	r->h = h;
	r->fd = fd;
	r->uid = cr.uid;
	r->pid = cr.pid;
	if (handoff_req_read(r)) {
		free(r);
		return;
	}
	size_t mine = 0;
	struct list_node *pos, *tmp;
	list_for_each_safe (pos, tmp, &h->reqs)
		mine += container_of(pos, struct handoff_req, node)->uid == cr.uid;
	if (h->reqs.n >= HANDOFF_REQ_MAX || mine >= HANDOFF_REQ_PER_UID) {
		uint64_t left;
		if (gate_pass(&h->full_gate, ev_now(p->eng->loop), &left))
			log_warning("pool=%s: %s: too many requests pending (%s), closing a new client uid=%u pid=%ld "
			            "(%llu more not logged)", p->name, h->path,
			            mine >= HANDOFF_REQ_PER_UID ? "from its uid" : "in all", (unsigned)cr.uid, (long)cr.pid,
			            (unsigned long long)left);
		close(fd);
		free(r);
		return;
	}
	list_push_back(&h->reqs, &r->node);
	ev_io_init(&r->io, handoff_req_cb, fd, EV_READ);
	ev_timer_init(&r->timer, handoff_req_timeout_cb, HANDOFF_REQ_TIMEOUT, 0.);
	ev_io_start(p->eng->loop, &r->io);
	ev_timer_start(p->eng->loop, &r->timer);
}

/* One accepted client: the pool's allow: applies here too (a copy in cfg->handoff). */
static int handoff_take(void *arg, int fd)
{
	struct handoff *h = arg;
	if (listener_admit(h->pool, &h->pool->cfg->handoff.allow, &h->gate, h->path, fd))
		handoff_wait_request(h, fd);
	return 0;
}

static void handoff_accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)revents;
	struct handoff *h = container_of(w, struct handoff, io);
	unix_accept(loop, &h->io, &h->pause, handoff_take, h, h->pool->name, NULL, h->path);
}

static int sockopt_is(int fd, int opt, int want)
{
	int v = 0;
	socklen_t len = sizeof v;
	return getsockopt(fd, SOL_SOCKET, opt, &v, &len) == 0 && len == sizeof v && v == want;
}

/* Take `fd`, the handoff socket an upgrade's old process passed, after
 * checking that it is what it must be: a listening AF_UNIX seqpacket socket
 * bound to exactly h->path, which still names a socket file (whose identity
 * we keep, to unlink it only while it is that file). 0, or -1 with a
 * message in err (the caller closes fd). */
static int handoff_adopt(struct handoff *h, int fd, char *err, size_t errlen)
{
	struct sockaddr_un sun;
	socklen_t len = sizeof sun;
	struct stat st;
	memset(&sun, 0, sizeof sun);
	if (!sockopt_is(fd, SO_TYPE, SOCK_SEQPACKET) || !sockopt_is(fd, SO_DOMAIN, AF_UNIX) ||
	    !sockopt_is(fd, SO_ACCEPTCONN, 1)) {
		snprintf(err, errlen,
		         "pool %s: the handoff socket passed for %s is not a listening Unix seqpacket socket",
		         h->pool->name, h->path);
		return -1;
	}
	size_t plen = strlen(h->path), off = offsetof(struct sockaddr_un, sun_path);
	/* Exactly the path (a trailing NUL or none), not a file it leads to. */
	if (plen >= sizeof sun.sun_path || getsockname(fd, (struct sockaddr *)&sun, &len) < 0 ||
	    len < off + plen || memcmp(sun.sun_path, h->path, plen) != 0 ||
	    (len > off + plen && sun.sun_path[plen] != '\0')) {
		snprintf(err, errlen, "pool %s: the handoff socket passed for %s is bound to another address",
		         h->pool->name, h->path);
		return -1;
	}
	if (lstat(h->path, &st) < 0 || !S_ISSOCK(st.st_mode)) { /* the file itself, as unlinking sees it */
		snprintf(err, errlen, "pool %s: the handoff socket passed for %s: the path names no socket",
		         h->pool->name, h->path);
		return -1;
	}
	h->us.fd = fd;
	h->us.path = h->path;
	h->us.dev = st.st_dev;
	h->us.ino = st.st_ino;
	h->us.created = 0; /* the old process's file until we serve (handoff_start) */
	h->adopted = 1;
	return 0;
}

struct handoff *handoff_open(struct pool *p, const struct cfg_listen *cfg, listener_accept_fn *on_client,
                             handoff_checkin_fn *on_checkin, char *err, size_t errlen)
{
	struct handoff *h = calloc(1, sizeof *h);
	if (!h) {
		snprintf(err, errlen, "pool %s: out of memory", p->name);
		return NULL;
	}
	h->pool = p;
	h->on_client = on_client;
	h->on_checkin = on_checkin;
	list_init(&h->reqs);
	list_init(&h->leases);
	snprintf(h->path, sizeof h->path, "%s", cfg->path);
	/* An upgrade's old process passes the socket it serves: taken, never
	 * bound again (the old process holds the path meanwhile). */
	int fd = systemd_take_listen_fd_at(SYSTEMD_HANDOFF_FDNAME, h->path);
	if (fd >= 0) {
		if (handoff_adopt(h, fd, err, errlen) < 0) {
			close(fd);
			free(h);
			return NULL;
		}
		unix_accept_init(&h->io, &h->pause, handoff_accept_cb, h->us.fd);
		log_info("pool=%s: handoff socket on %s (passed by the process upgraded)", p->name, h->path);
		return h;
	}
	if (unix_listen(h->path, cfg->mode, SOCK_SEQPACKET, &h->us, err, errlen) < 0) {
		free(h);
		return NULL;
	}
	unix_accept_init(&h->io, &h->pause, handoff_accept_cb, h->us.fd);
	log_info("pool=%s: handoff socket on %s (mode %04o)", p->name, h->path, (unsigned)cfg->mode);
	return h;
}

void handoff_start(struct handoff *h)
{
	if (!h || h->us.fd < 0)
		return; /* handed over to an upgrade's new process */
	if (h->adopted) { /* we serve now: the file is ours to remove when it closes for good */
		h->us.created = 1;
		h->adopted = 0;
	}
	ev_io_start(h->pool->eng->loop, &h->io);
}

int handoff_listen_fd(const struct handoff *h)
{
	return h->us.fd;
}

size_t handoff_pending(const struct handoff *h)
{
	return h ? h->reqs.n : 0;
}

void handoff_handover(struct handoff *h)
{
	if (h->us.fd < 0)
		return;
	ev_io_stop(h->pool->eng->loop, &h->io);
	ev_timer_stop(h->pool->eng->loop, &h->pause);
	if (close(h->us.fd) < 0)
		log_debug("pool=%s: %s: close: %s", h->pool->name, h->path, strerror(errno));
	h->us.fd = -1;
	h->us.created = 0; /* the new process serves the same file */
	log_info("pool=%s: handoff socket %s: the new process accepts now; %zu requests being read and %zu "
	         "leases stay here", h->pool->name, h->path, h->reqs.n, h->leases.n);
}

const char *handoff_path(const struct handoff *h)
{
	return h->path;
}

void handoff_move(struct handoff *h, struct pool *to)
{
	ev_io_stop(h->pool->eng->loop, &h->io);
	ev_timer_stop(h->pool->eng->loop, &h->pause);
	h->pool = to; /* requests still being read go to the new pool too */
}

void handoff_close(struct handoff *h)
{
	if (!h)
		return;
	struct list_node *pos, *tmp;
	list_for_each_safe (pos, tmp, &h->reqs)
		handoff_req_free(container_of(pos, struct handoff_req, node), 1);
	list_for_each_safe (pos, tmp, &h->leases)
		lease_free(h, container_of(pos, struct handoff_lease, node));
	ev_io_stop(h->pool->eng->loop, &h->io);
	ev_timer_stop(h->pool->eng->loop, &h->pause);
	if (h->us.fd >= 0)
		close(h->us.fd);
	h->us.path = h->path;
	sock_unix_unlink_ours(&h->us);
	free(h);
}
