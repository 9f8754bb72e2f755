/*
 * daemon/bconn.c — the backend connection state machine.
 *
 * The lifecycle of a backend connection (struct bconn):
 *
 *   pool_refill() ──connect()──▶ CONNECTING ──established──▶ IDLE ──checkout──▶ ACTIVE ──▶ CLOSED
 *                                     │ refused/timeout          │ EOF/RST while idle      (reuse:
 *                                     ▼                          ▼                   RESETTING ─▶ IDLE)
 *                          bconn_attempt_failed()          closed, refilled
 *
 * Every arrow, and the birth (BCONN_NEW: bconn_new(), then connect() or a
 * checkin) and the death (CLOSED: the graveyard, freed by bconn_reap()), goes
 * through bconn_set_state(), which moves the connection between its
 * backend's lists and logs "old -> new" at debug. Lines about a connection
 * are logged with bconn_log(), which prints "pool= backend= conn=".
 *
 * Idle sockets stay in the loop (EV_READ), so a backend closing one is
 * noticed at once; bytes a backend sends unprompted (a greeting) are kept
 * and delivered first to the client that gets the connection, but only on a
 * connection fresh from connect(): on one that carried a session (reuse:)
 * they are a late reply of that session, and the connection is closed
 * (bconn_idle_cb). The idle list's front holds the most recent sign of
 * life: a connection whose greeting just arrived moves there; a freshly
 * established one goes to the front too (LIFO) unless some idle connection
 * of its backend has a greeting already, in which case it waits at the back
 * until it has said something, so a client does not wait for a handshake
 * another connection has done.
 *
 * A connection that dies within BCONN_SETTLE of being established counts as
 * a failed attempt: a backend that accepts and resets at once (out of
 * clients, or a balancer with nothing behind it) is backed off like one that
 * refuses. One that lives longer is proven and resets the backend's backoff;
 * when it closes later (a server's idle timeout) it is simply replaced.
 *
 * With reuse:, a connection whose session ended cleanly goes through
 * RESETTING (bconn_reuse) before it is idle again.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "backoff.h"
#include "engine.h"
#include "log.h"

static const char *const bconn_state_names[] = {"connecting", "idle", "active", "resetting", "closed", "new"};
_Static_assert(sizeof bconn_state_names / sizeof *bconn_state_names == BCONN_NEW + 1, "a name per state");

/* ---- connection state machine ----------------------------------------- */

void bconn_vlog(const struct bconn *b, const struct session *s, int prio, const char *fmt, va_list ap)
{
	if (!log_enabled(prio))
		return;
	char ctx[LOG_CTX_MAX];
	int n = snprintf(ctx, sizeof ctx, "pool=%s backend=%s conn=%llu", b->pool->name, b->be->name,
	                 (unsigned long long)b->id);
	if (s && n > 0 && (size_t)n < sizeof ctx)
		snprintf(ctx + n, sizeof ctx - (size_t)n, " client=%llu", (unsigned long long)s->id);
	log_vmsg(prio, ctx, fmt, ap);
}

void bconn_log(const struct bconn *b, int prio, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	bconn_vlog(b, NULL, prio, fmt, ap);
	va_end(ap);
}

void bconn_log_for(const struct bconn *b, const struct session *s, int prio, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	bconn_vlog(b, s, prio, fmt, ap);
	va_end(ap);
}

/* A connection to `be` on `fd` (connecting, or just checked in), on no list
 * yet: the caller's bconn_set_state() is its birth. NULL on no memory. */
struct bconn *bconn_new(struct pool *p, struct backend *be, int fd)
{
	struct bconn *b = calloc(1, sizeof *b);
	if (!b)
		return NULL;
	b->state = BCONN_NEW;
	b->pool = p;
	b->be = be;
	b->id = engine_next_id(p->eng);
	b->fd = fd;
	b->jitter = (float)engine_random(p->eng);
	ev_init(&b->io, NULL);
	ev_init(&b->timer, NULL);
	ev_init(&b->settle, NULL);
	return b;
}

void bconn_set_state(struct bconn *b, enum bconn_state st)
{
	struct pool *p = b->pool;
	if (b->state == st)
		return;
	bconn_log(b, LOG_DEBUG, "%s -> %s", bconn_state_names[b->state], bconn_state_names[st]);
	if (b->state < BCONN_NLISTS) {
		list_remove(&b->be->conns[b->state], &b->node);
		p->n_conns[b->state]--;
	}
	if (b->greeted) { /* leaving idle */
		b->greeted = 0;
		b->be->n_greeted_idle--;
	}
	b->state = st;
	if (st < BCONN_NLISTS) {
		list_push_back(&b->be->conns[st], &b->node);
		p->n_conns[st]++;
	} else if (st == BCONN_CLOSED) {
		list_push_back(&p->eng->dead_conns, &b->node);
	}
	engine_changed(p->eng);
}

/* The only reordering within a state's list: an idle connection that just
 * greeted, or a fresh one while none has, goes to the front (the file
 * comment says why). */
static void bconn_move_front(struct bconn *b)
{
	struct list *l = &b->be->conns[b->state];
	list_remove(l, &b->node);
	list_push_front(l, &b->node);
}

/* A foreign socket's SO_LINGER is whatever the process that checked it in
 * set on its copy: with a linger time, the close() that drops the last
 * reference waits (inet_release ignores O_NONBLOCK) until unsent bytes are
 * acknowledged, up to that time, which a backend that stopped reading makes
 * the whole linger time. Switched off, close() returns at once and the
 * kernel still delivers what is queued, then the FIN. (A copy still open
 * after this keeps the socket alive past our close(): then its own close()
 * is the last, and lingers in that process, not here.) */
static void bconn_unlinger(struct bconn *b)
{
	struct linger off = {.l_onoff = 0, .l_linger = 0};
	if (setsockopt(b->fd, SOL_SOCKET, SO_LINGER, &off, sizeof off) < 0)
		bconn_log(b, LOG_WARNING, "cannot switch SO_LINGER off before close: %s", strerror(errno));
}

void bconn_close(struct bconn *b)
{
	struct ev_loop *loop = b->pool->eng->loop;
	if (b->state == BCONN_CLOSED)
		return;
	ev_io_stop(loop, &b->io);
	ev_timer_stop(loop, &b->timer);
	ev_timer_stop(loop, &b->settle);
	if (b->fd >= 0) {
		if (b->foreign) {
			/* Another process may hold this description open: closing our
			 * fd would leave it in epoll, and its events would make libev
			 * rebuild the whole set. */
			handoff_forget_fd(loop, b->fd);
			bconn_unlinger(b);
		}
		close(b->fd);
		b->fd = -1;
	}
	if (!b->proven)
		b->be->n_unproven--;
	bconn_set_state(b, BCONN_CLOSED);
}

static void bconn_free(struct bconn *b)
{
	if (!b)
		return;
	free(b->greeting);
	free(b);
}

void bconn_reap(struct engine *eng)
{
	/* closed -> freed: the graveyard is left only here. No line is logged:
	 * at shutdown the pool a connection names is freed already. */
	struct list_node *pos;
	while ((pos = list_first(&eng->dead_conns))) {
		list_remove(&eng->dead_conns, pos);
		bconn_free(container_of(pos, struct bconn, node));
	}
}

/* The connection attempt `b` failed: count it for its backend, pick the next
 * delay (the backend's backoff), log. Attempts that were already in flight
 * when an earlier failure was counted belong to the same round and do not
 * grow the backoff again. Here rather than in backend.c because its lines
 * are about the connection (bconn_log). */
static void bconn_attempt_failed(const struct bconn *b, enum backend_reason reason, int err)
{
	struct backend *be = b->be;
	struct pool *p = be->pool;
	struct engine *eng = p->eng;
	ev_tstamp now = ev_now(eng->loop);
	const char *what =
	    reason == REASON_OTHER || reason == REASON_UNREACHABLE ? strerror(err) : backend_reason_str(reason);

	be->connects_failed++;
	p->stats.conns_failed++;
	p->warm = 0;
	/* <=: attempts started in the same loop iteration as the failure that
	 * was counted (one ev_now) belong to its round too. */
	if (be->connect_failures > 0 && b->started_at <= be->failed_at) {
		bconn_log(b, LOG_INFO, "connect failed: %s (same round as attempt %u)", what, be->connect_failures);
		return;
	}
	be->connect_failures++;
	be->failed_at = now;
	be->last_reason = reason;
	be->backoff_ms = wp_backoff_delay(&p->cfg->backoff, be->connect_failures - 1, engine_random, eng);
	be->next_attempt = now + (double)be->backoff_ms / 1000.0;
	bconn_log(b, LOG_WARNING, "connect failed: %s (attempt %u, next in %.1fs)", what, be->connect_failures,
	          (double)be->backoff_ms / 1000.0);
	snprintf(be->last_error, sizeof be->last_error, "connect failed: %s", what);
	backend_health_failed(be, be->last_error);
}

static void bconn_failed(struct bconn *b, enum backend_reason reason, int err)
{
	struct pool *p = b->pool;
	if (p->eng->stopping) { /* shutting down: nothing to retry or report */
		bconn_close(b);
		return;
	}
	bconn_attempt_failed(b, reason, err);
	bconn_close(b);
	pool_refill(p);
}

void bconn_lost(struct bconn *b, enum backend_reason reason, int err)
{
	struct pool *p = b->pool;
	if (!b->proven) {
		bconn_failed(b, reason, err);
		return;
	}
	if (b->state == BCONN_IDLE) {
		p->stats.idle_lost++;
		bconn_log(b, LOG_DEBUG, "idle connection %s, replacing", backend_reason_str(reason));
	}
	bconn_close(b);
	pool_refill(p);
}

static void bconn_settle_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	struct bconn *b = container_of(w, struct bconn, settle);
	struct pool *p = b->pool;
	b->proven = 1;
	b->be->n_unproven--;
	backend_attempt_succeeded(b->be);
	if (b->be->state == BACKEND_DOWN)
		pool_refill_soon(p); /* a probe lived: the next one may go now */
	/* "warm" once per start or outage, and only for connections that lived. */
	if (!p->warm && p->cfg->min_idle > 0 && p->n_conns[BCONN_IDLE] >= p->cfg->min_idle) {
		p->warm = 1;
		log_info("pool=%s: warm: %zu idle connections", p->name, p->n_conns[BCONN_IDLE]);
	}
}

/* A connection that carried a session (reuse:) spoke while idle: these are
 * not a greeting but a late reply of its last session (or bytes a client
 * asked for to arrive after the reset, to forge the next client's replies).
 * They must reach no other client: the connection is closed, and counted
 * with the refused reuses (connections_reuse_refused). */
static void bconn_stray_bytes(struct bconn *b, size_t n)
{
	struct pool *p = b->pool;
	p->stats.conns_reuse_refused++;
	bconn_log(b, LOG_INFO,
	          "%zu%s unprompted bytes on a reused connection, idle for %.3fs "
	          "(a late reply of its last session?): closed, never passed to the next client",
	          n, n == BCONN_GREETING_MAX ? "+" : "", ev_now(p->eng->loop) - b->idle_since);
	bconn_close(b);
	pool_refill_soon(p);
}

/* Idle: the only expected events are a greeting, EOF or an error. The
 * greeting is kept in an exact-size allocation (a fixed 16 KiB one per
 * connection made glibc grow and trim its heap on every session). Only a
 * connection fresh from connect() may collect a greeting. */
static void bconn_idle_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)revents;
	struct bconn *b = container_of(w, struct bconn, io);
	unsigned char tmp[BCONN_GREETING_MAX];
	ssize_t n = recv(b->fd, tmp, BCONN_GREETING_MAX - b->greeting_len, MSG_DONTWAIT);
	if (n > 0 && b->served) {
		bconn_stray_bytes(b, (size_t)n);
		return;
	}
	if (n > 0) {
		unsigned char *g = realloc(b->greeting, b->greeting_len + (size_t)n);
		if (!g) {
			bconn_log(b, LOG_ERR, "out of memory for greeting");
			bconn_lost(b, REASON_OTHER, ENOMEM);
			return;
		}
		memcpy(g + b->greeting_len, tmp, (size_t)n);
		b->greeting = g;
		if (b->greeting_len == 0) {
			/* First sign of life from the backend: hand this one out next. */
			bconn_move_front(b);
			b->greeted = 1;
			b->had_greeting = 1;
			b->be->n_greeted_idle++;
		}
		b->greeting_len += (uint32_t)n;
		if (b->greeting_len == BCONN_GREETING_MAX) {
			/* More unprompted bytes than we keep: leave the rest in the
			 * kernel for the session and stop watching (a hang-up is
			 * then caught by the checkout check). */
			ev_io_stop(loop, &b->io);
		}
		return;
	}
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	bconn_lost(b, n == 0 ? REASON_CLOSED : backend_reason_from_errno(errno), n == 0 ? 0 : errno);
}

/* When the janitor must look at an idle connection next. */
static ev_tstamp bconn_idle_deadline(const struct bconn *b)
{
	const struct cfg_pool *c = b->pool->cfg;
	ev_tstamp t = INFINITY, early = 1.0 - LIFETIME_JITTER * b->jitter;
	if (c->max_lifetime_ms)
		t = fmin(t, b->opened_at + (double)c->max_lifetime_ms / 1000.0 * early);
	if (c->max_idle_time_ms)
		t = fmin(t, b->idle_since + (double)c->max_idle_time_ms / 1000.0 * early);
	if (c->idle_timeout_ms)
		t = fmin(t, b->idle_since + (double)c->idle_timeout_ms / 1000.0);
	return t;
}

static void bconn_become_idle(struct bconn *b)
{
	struct pool *p = b->pool;
	struct ev_loop *loop = p->eng->loop;
	ev_io_stop(loop, &b->io);
	ev_set_cb(&b->io, bconn_idle_cb);
	ev_io_set(&b->io, b->fd, EV_READ);
	ev_io_start(loop, &b->io);
	b->idle_since = ev_now(loop);
	bconn_set_state(b, BCONN_IDLE);
	if (!b->be->n_greeted_idle) {
		/* No greeting to prefer: the youngest goes first (LIFO), so the
		 * oldest age at the back, where a server's idle timeout or
		 * max_idle_time replaces them without a client near. */
		bconn_move_front(b);
	}
	janitor_soon(p, bconn_idle_deadline(b));
	if (p->may_hand_back && pool_backend_preferred(p, b->be))
		janitor_soon(p, b->idle_since); /* maybe the floor is met here: hand back the others */
}

static void bconn_established(struct bconn *b)
{
	struct pool *p = b->pool;
	struct ev_loop *loop = p->eng->loop;
	ev_timer_stop(loop, &b->timer);
	p->stats.conns_opened++;
	b->be->connects_ok++;
	b->opened_at = ev_now(loop);
	wp_histogram_observe(&p->h_connect, b->opened_at - b->started_at);
	ev_timer_set(&b->settle, BCONN_SETTLE, 0.);
	ev_timer_start(loop, &b->settle);
	bconn_log(b, LOG_DEBUG, "connected");
	bconn_become_idle(b); /* placed in the idle list as the file comment says */
	pool_dispatch(p);
}

static void bconn_connect_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)loop;
	(void)revents;
	struct bconn *b = container_of(w, struct bconn, io);
	int err = 0;
	socklen_t len = sizeof err;
	if (getsockopt(b->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err == EINPROGRESS || err == EALREADY)
		return;
	if (err) {
		bconn_failed(b, backend_reason_from_errno(err), err);
		return;
	}
	bconn_established(b);
}

static void bconn_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	struct bconn *b = container_of(w, struct bconn, timer);
	bconn_failed(b, REASON_TIMEOUT, ETIMEDOUT);
}

static void set_opt(const struct backend *be, int fd, int level, int opt, int val, const char *name)
{
	if (setsockopt(fd, level, opt, &val, sizeof val) < 0)
		backend_log(be, LOG_WARNING, "%s: %s", name, strerror(errno));
}

/* TCP_NODELAY, keepalive and TCP_USER_TIMEOUT: a dead peer or path is found
 * even on a connection that sits idle, and unacknowledged data is not
 * retried for the kernel's 15 minutes. */
static void bconn_set_options(const struct pool *p, const struct backend *be, int fd)
{
	const struct cfg_keepalive *ka = &p->cfg->keepalive;
	set_opt(be, fd, IPPROTO_TCP, TCP_NODELAY, 1, "TCP_NODELAY");
	if (ka->enabled) {
		set_opt(be, fd, SOL_SOCKET, SO_KEEPALIVE, 1, "SO_KEEPALIVE");
		set_opt(be, fd, IPPROTO_TCP, TCP_KEEPIDLE, (int)ka->idle_s, "TCP_KEEPIDLE");
		set_opt(be, fd, IPPROTO_TCP, TCP_KEEPINTVL, (int)ka->interval_s, "TCP_KEEPINTVL");
		set_opt(be, fd, IPPROTO_TCP, TCP_KEEPCNT, (int)ka->count, "TCP_KEEPCNT");
	}
	if (p->cfg->tcp_user_timeout_ms)
		set_opt(be, fd, IPPROTO_TCP, TCP_USER_TIMEOUT, (int)p->cfg->tcp_user_timeout_ms,
		        "TCP_USER_TIMEOUT");
}

/* Start one non-blocking connect to `be`. Returns 0, or -1 if no socket could
 * be made (a local problem, not the backend's: it is not backed off). */
int bconn_connect(struct pool *p, struct backend *be)
{
	struct ev_loop *loop = p->eng->loop;
	int fd = socket(be->cfg->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		backend_log(be, LOG_ERR, "socket: %s", strerror(errno));
		return -1;
	}
	struct bconn *b = bconn_new(p, be, fd);
	if (!b) {
		log_error("pool=%s: out of memory for a connection", p->name);
		close(fd);
		return -1;
	}
	bconn_set_options(p, be, b->fd);
	ev_io_init(&b->io, bconn_connect_cb, b->fd, EV_WRITE);
	ev_timer_init(&b->timer, bconn_timeout_cb, (double)p->cfg->connect_timeout_ms / 1000.0, 0.);
	ev_timer_init(&b->settle, bconn_settle_cb, 0., 0.);
	be->n_unproven++;
	/* Account for the attempt before connect() so an immediate failure
	 * goes through the same path as a later one. */
	bconn_set_state(b, BCONN_CONNECTING);

	b->started_at = ev_now(loop);
	int r;
	do
		r = connect(b->fd, (const struct sockaddr *)&be->cfg->addr, be->cfg->addrlen);
	while (r < 0 && errno == EINTR);
	if (r == 0) {
		bconn_established(b);
		return 0;
	}
	if (errno != EINPROGRESS) {
		bconn_failed(b, backend_reason_from_errno(errno), errno);
		return 0;
	}
	ev_io_start(loop, &b->io);
	ev_timer_start(loop, &b->timer);
	return 0;
}

/* ---- reuse (reuse:) ----------------------------------------------------- */

static void bconn_reuse_refused(struct bconn *b, const char *why)
{
	struct pool *p = b->pool;
	p->stats.conns_reuse_refused++;
	bconn_log(b, LOG_DEBUG, "not reused: %s", why);
	bconn_close(b);
	pool_refill_soon(p);
}

static void bconn_reuse_done(struct bconn *b)
{
	struct pool *p = b->pool;
	/* Nothing may follow the reset's answer: a later byte would be the next client's. */
	if (sock_peek(b->fd) != SOCK_QUIET) {
		bconn_reuse_refused(b, "bytes or EOF after the reset");
		return;
	}
	ev_timer_stop(p->eng->loop, &b->timer);
	p->stats.conns_reused++;
	bconn_log(b, LOG_DEBUG, "reused");
	bconn_become_idle(b);
	pool_dispatch(p);
}

static void bconn_reuse_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)loop;
	(void)revents;
	struct bconn *b = container_of(w, struct bconn, io);
	const struct cfg_reuse *r = &b->pool->cfg->reuse;
	unsigned char buf[256];
	size_t want = r->reset_expect ? r->reset_expect_len - b->reset_got : 1;
	ssize_t n = recv(b->fd, buf, want < sizeof buf ? want : sizeof buf, MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	if (n <= 0) {
		bconn_reuse_refused(b, n == 0 ? "closed by the backend" : strerror(errno));
		return;
	}
	if (!r->reset_expect) {
		bconn_reuse_refused(b, "the backend sent bytes after the session ended");
		return;
	}
	if (memcmp(buf, r->reset_expect + b->reset_got, (size_t)n) != 0) {
		bconn_reuse_refused(b, "the reset's answer did not match");
		return;
	}
	b->reset_got += (size_t)n;
	if (b->reset_got == r->reset_expect_len)
		bconn_reuse_done(b);
}

static void bconn_reuse_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	struct bconn *b = container_of(w, struct bconn, timer);
	if (b->pool->cfg->reuse.reset_expect)
		bconn_reuse_refused(b, "no answer to the reset in time");
	else
		bconn_reuse_done(b); /* the quiet period passed: nothing was still coming */
}

void bconn_reuse(struct bconn *b)
{
	struct pool *p = b->pool;
	struct ev_loop *loop = p->eng->loop;
	const struct cfg_reuse *r = &p->cfg->reuse;
	ev_tstamp now = ev_now(loop);

	ev_io_stop(loop, &b->io);
	bconn_set_state(b, BCONN_RESETTING);
	b->served = 1; /* from now on an unprompted byte is never a greeting */
	const char *why = NULL;
	if (p->eng->stopping || p->retiring || b->be->state != BACKEND_UP)
		why = "the pool or backend is going away";
	else if (b->had_greeting)
		why = "the backend greeted on it (the next client would miss the greeting)";
	else if (p->cfg->max_lifetime_ms &&
	         now >= b->opened_at + (double)p->cfg->max_lifetime_ms / 1000.0 * (1.0 - LIFETIME_JITTER * b->jitter))
		why = "past max_lifetime";
	else if (sock_peek(b->fd) != SOCK_QUIET)
		why = "unread bytes or EOF from the backend";
	else if (r->reset_send && send(b->fd, r->reset_send, r->reset_send_len, MSG_NOSIGNAL | MSG_DONTWAIT) !=
	                              (ssize_t)r->reset_send_len)
		why = "the reset could not be sent";
	if (why) {
		bconn_reuse_refused(b, why);
		return;
	}
	b->reset_got = 0;
	ev_set_cb(&b->io, bconn_reuse_io_cb);
	ev_io_set(&b->io, b->fd, EV_READ);
	ev_io_start(loop, &b->io);
	ev_timer_stop(loop, &b->timer);
	ev_timer_init(&b->timer, bconn_reuse_timer_cb, (double)r->reset_timeout_ms / 1000.0, 0.);
	ev_timer_start(loop, &b->timer);
}
