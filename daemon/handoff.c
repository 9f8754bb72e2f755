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
 * A checkin hands a socket back: it is taken only if it is a TCP socket
 * connected to one of the pool's backends and the pool has `reuse:` on;
 * then it goes through the same checks and reset as a relayed connection
 * (bconn_reuse) before it is idle again. Otherwise it is closed.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "engine.h"
#include "handoff_proto.h"
#include "log.h"

#define HANDOFF_REQ_TIMEOUT 5.0 /* seconds a connected client has to send its request */
#define HANDOFF_REQ_MAX     64  /* clients waiting to send their request, per handoff socket */
#define HANDOFF_ACCEPT_PAUSE 0.1 /* seconds without accepting after EMFILE and the like */

struct handoff_req {
	struct list_node node;
	struct handoff *h;
	int fd;
	ev_io io;
	ev_timer timer;
};

struct handoff {
	struct pool *pool;
	struct unix_sock us;
	char path[128]; /* own copy: the file's name outlives a reload's config */
	ev_io io;
	ev_timer pause;        /* accept paused after EMFILE/ENFILE */
	struct peer_gate gate; /* denials by the pool's allow: */
	struct list reqs;      /* struct handoff_req: accepted, request not read yet */
};

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

/* A socket handed back: answer, then let the pool judge it. */
static void handoff_checkin(struct handoff *h, int cfd, int bfd)
{
	struct wp_handoff_hdr ok = {.magic = WP_HANDOFF_MAGIC, .status = WP_HANDOFF_OK};
	if (send(cfd, &ok, sizeof ok, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
		log_debug("pool=%s: checkin answer: %s", h->pool->name, strerror(errno));
	pool_take_back(h->pool, bfd);
}

static void handoff_req_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)loop;
	(void)revents;
	struct handoff_req *r = container_of(w, struct handoff_req, io);
	struct handoff *h = r->h;
	struct wp_handoff_req req;
	union wp_fd_cmsg ctl;
	struct iovec iov = {&req, sizeof req};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof ctl.buf};
	ssize_t n = recvmsg(r->fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
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
	handoff_req_free(r, 0);
	if (good && req.op == WP_HANDOFF_CHECKOUT && bfd < 0) {
		pool_client_arrived_as(h->pool, cfd, 1);
		return;
	}
	if (good && req.op == WP_HANDOFF_CHECKIN && bfd >= 0) {
		handoff_checkin(h, cfd, bfd);
		close(cfd);
		return;
	}
	if (n != 0)
		log_info("pool=%s: %s: a request that is not a checkout or a checkin, closed", h->pool->name, h->path);
	if (bfd >= 0)
		close(bfd);
	close(cfd);
}

static void handoff_req_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	struct handoff_req *r = container_of(w, struct handoff_req, timer);
	log_info("pool=%s: %s: no request within %.0fs, closed", r->h->pool->name, r->h->path, HANDOFF_REQ_TIMEOUT);
	handoff_req_free(r, 1);
}

/* A client connected: wait for its request. */
static void handoff_wait_request(struct handoff *h, int fd)
{
	struct handoff_req *r = h->reqs.n < HANDOFF_REQ_MAX ? calloc(1, sizeof *r) : NULL;
	if (!r) {
		log_warning("pool=%s: %s: %s, closing a new client", h->pool->name, h->path,
		            h->reqs.n < HANDOFF_REQ_MAX ? "out of memory" : "too many requests pending");
		close(fd);
		return;
	}
	r->h = h;
	r->fd = fd;
	list_push_back(&h->reqs, &r->node);
	ev_io_init(&r->io, handoff_req_cb, fd, EV_READ);
	ev_timer_init(&r->timer, handoff_req_timeout_cb, HANDOFF_REQ_TIMEOUT, 0.);
	ev_io_start(h->pool->eng->loop, &r->io);
	ev_timer_start(h->pool->eng->loop, &r->timer);
}

static void handoff_accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)loop;
	(void)revents;
	struct handoff *h = container_of(w, struct handoff, io);
	for (int i = 0; i < 64; i++) {
		int fd = accept4(h->us.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd >= 0) {
			/* The pool's allow: applies here too (a copy in cfg->handoff). */
			if (listener_admit(h->pool, &h->pool->cfg->handoff.allow, &h->gate, h->path, fd))
				handoff_wait_request(h, fd);
			continue;
		}
		if (errno == EINTR || errno == ECONNABORTED)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return;
		/* Out of fds or memory: pause rather than spin on a readable socket. */
		log_warning("pool=%s: accept on %s: %s; pausing accepts for %.0fms", h->pool->name, h->path,
		            strerror(errno), HANDOFF_ACCEPT_PAUSE * 1000);
		ev_io_stop(h->pool->eng->loop, &h->io);
		ev_timer_set(&h->pause, HANDOFF_ACCEPT_PAUSE, 0.); /* a one-shot timer needs its delay again */
		ev_timer_start(h->pool->eng->loop, &h->pause);
		return;
	}
}

static void handoff_resume_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)revents;
	struct handoff *h = container_of(w, struct handoff, pause);
	ev_io_start(loop, &h->io);
}

struct handoff *handoff_open(struct pool *p, const struct cfg_listen *cfg, char *err, size_t errlen)
{
	struct handoff *h = calloc(1, sizeof *h);
	if (!h) {
		snprintf(err, errlen, "pool %s: out of memory", p->name);
		return NULL;
	}
	h->pool = p;
	list_init(&h->reqs);
	snprintf(h->path, sizeof h->path, "%s", cfg->path);
	if (unix_listen_type(h->path, cfg->mode, SOCK_SEQPACKET, &h->us, err, errlen) < 0) {
		free(h);
		return NULL;
	}
	ev_io_init(&h->io, handoff_accept_cb, h->us.fd, EV_READ);
	ev_timer_init(&h->pause, handoff_resume_cb, HANDOFF_ACCEPT_PAUSE, 0.);
	log_info("pool=%s: handoff socket on %s (mode %04o)", p->name, h->path, (unsigned)cfg->mode);
	return h;
}

void handoff_start(struct handoff *h)
{
	if (h)
		ev_io_start(h->pool->eng->loop, &h->io);
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
	ev_io_stop(h->pool->eng->loop, &h->io);
	ev_timer_stop(h->pool->eng->loop, &h->pause);
	close(h->us.fd);
	h->us.path = h->path;
	unix_unlink_ours(&h->us);
	free(h);
}
