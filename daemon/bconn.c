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
 *
 * In a pool with tls:, CONNECTING also covers the starttls preamble and the
 * TLS handshake (tls.c; connect_timeout bounds all of it): a connection is
 * idle only once it is verified. Its bytes then go through bconn_recv /
 * bconn_send / bconn_peek, which look the same for both kinds. A reload
 * that changes the TLS settings bumps the pool's tls_gen: connections made
 * before are not reused and the janitor replaces the idle ones one by one.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "backoff.h"
#include "engine.h"
#include "fdstore.h"
#include "log.h"

#define BCONN_WARMING_PRI (-1) /* libev priority of a connection being made (clients' watchers: 0) */
#define IDLE_CLOSE_MIN    0.05 /* s: an idle close sooner than this teaches nothing (not a timeout) */
#define IDLE_CLOSE_MARGIN 0.25 /* not handed out once idle (1 - this) of the backend's idle close age */
#define IDLE_CLOSE_MEMORY 60.0 /* s: forget the learned age when no idle close was seen for this long */

static const char *const bconn_state_names[] = {"connecting", "idle", "active", "resetting", "closed", "new"};
_Static_assert(sizeof bconn_state_names / sizeof *bconn_state_names == BCONN_NEW + 1, "a name per state");

/* ---- connection state machine ----------------------------------------- */

void bconn_vlog(const struct bconn *b, const struct session *s, int prio, const char *fmt, va_list ap)
{
	if (!log_enabled(prio))
		return;
	char ctx[LOG_CTX_MAX];
	int n = backend_ctx(b->be, ctx, sizeof ctx);
	if (n > 0 && (size_t)n < sizeof ctx)
		n += snprintf(ctx + n, sizeof ctx - (size_t)n, " conn=%llu", (unsigned long long)b->id);
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
	b->tls_gen = p->tls_gen;
	ev_init(&b->io, NULL);
	ev_init(&b->timer, NULL);
	ev_init(&b->settle, NULL);
	return b;
}

void bconn_set_state(struct bconn *b, enum bconn_state st)
{
	struct pool *p = b->pool;
	enum bconn_state old = b->state;
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
	fdstore_conn_state(b, old); /* idle: in systemd's fd store; leaving idle: out (fdstore.h) */
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
	tls_free(b->ssl); /* close_notify first when the connection is sound */
	b->ssl = NULL;
	fdstore_conn_closing(b); /* out of the fd store before the fd goes (or kept there when stopping) */
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
	free(b->reset_want);
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
static void bconn_attempt_failed(const struct bconn *b, enum backend_reason reason, int err, const char *detail)
{
	struct backend *be = b->be;
	struct pool *p = be->pool;
	struct engine *eng = p->eng;
	ev_tstamp now = ev_now(eng->loop);
	if (be->dns && be->connect_failures == 0)
		dns_backend_failed(be); /* the first failure of a streak: has the name moved? */
	const char *what = detail                                                       ? detail
	                   : reason == REASON_OTHER || reason == REASON_UNREACHABLE ? strerror(err)
	                                                                             : backend_reason_str(reason);

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
	char line[sizeof be->last_error];
	snprintf(line, sizeof line, "connect failed: %s", what);
	/* A TLS failure (a bad certificate) repeats until someone acts: its
	 * warning is logged when the reason changes, the repeats at debug. */
	int repeat = reason == REASON_TLS && strcmp(line, be->last_error) == 0;
	bconn_log(b, repeat ? LOG_DEBUG : LOG_WARNING, "%s (attempt %u, next in %.1fs)", line, be->connect_failures,
	          (double)be->backoff_ms / 1000.0);
	memcpy(be->last_error, line, sizeof line);
	backend_health_failed(be, be->last_error);
}

/* The attempt failed (`detail`: its words when the reason alone does not
 * say it, e.g. OpenSSL's for a TLS failure; else NULL). */
static void bconn_failed_why(struct bconn *b, enum backend_reason reason, int err, const char *detail)
{
	struct pool *p = b->pool;
	if (p->eng->stopping) { /* shutting down: nothing to retry or report */
		bconn_close(b);
		return;
	}
	bconn_attempt_failed(b, reason, err, detail);
	bconn_close(b);
	pool_refill(p);
}

static void bconn_failed(struct bconn *b, enum backend_reason reason, int err)
{
	bconn_failed_why(b, reason, err, NULL);
}

int bconn_near_backend_close(const struct bconn *b, ev_tstamp now)
{
	const struct backend *be = b->be;
	return be->idle_close_age > 0 && now - be->idle_close_seen <= IDLE_CLOSE_MEMORY &&
	       now - b->idle_since >= be->idle_close_age * (1.0 - IDLE_CLOSE_MARGIN);
}

void bconn_lost(struct bconn *b, enum backend_reason reason, int err)
{
	struct pool *p = b->pool;
	if (!b->proven) {
		bconn_failed(b, reason, err);
		return;
	}
	if (b->state == BCONN_IDLE) {
		struct backend *be = b->be;
		ev_tstamp now = ev_now(p->eng->loop), age = now - b->idle_since;
		p->stats.idle_lost++;
		bconn_log(b, LOG_DEBUG, "idle connection %s after %.3fs idle, replacing", backend_reason_str(reason), age);
		/* Learn the backend's idle timeout: closes at a server timeout
		 * cluster at the largest idle age (older observations are forgotten). */
		if (age >= IDLE_CLOSE_MIN && (now - be->idle_close_seen > IDLE_CLOSE_MEMORY || age > be->idle_close_age)) {
			if (age > be->idle_close_age + IDLE_CLOSE_MIN || now - be->idle_close_seen > IDLE_CLOSE_MEMORY)
				backend_log(be, LOG_INFO, "closes idle connections itself after about %.3fs: "
				                          "connections idle %.0f%% of that are no longer handed out",
				            age, 100.0 * (1.0 - IDLE_CLOSE_MARGIN));
			be->idle_close_age = age;
		}
		if (age >= IDLE_CLOSE_MIN)
			be->idle_close_seen = now;
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
		log_info("pool=%s: warm: %zu idle connection%s", p->name, p->n_conns[BCONN_IDLE],
		         p->n_conns[BCONN_IDLE] == 1 ? "" : "s");
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

/* ---- bytes, plain or TLS ------------------------------------------------ */

ssize_t bconn_recv(struct bconn *b, void *buf, size_t len)
{
	if (b->ssl)
		return tls_read(b->ssl, buf, len);
	ssize_t n;
	do
		n = recv(b->fd, buf, len, MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	return n >= 0 ? n : errno == EWOULDBLOCK ? -EAGAIN : -errno;
}

ssize_t bconn_send(struct bconn *b, const void *buf, size_t len)
{
	if (b->ssl)
		return tls_write(b->ssl, buf, len);
	ssize_t n;
	do
		n = send(b->fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	return n >= 0 ? n : errno == EWOULDBLOCK ? -EAGAIN : -errno;
}

enum sock_peek bconn_peek(struct bconn *b)
{
	return b->ssl ? tls_peek(b->ssl, b->fd) : sock_peek(b->fd);
}

/* What a bconn_recv() error says about the connection, for bconn_lost(). */
static enum backend_reason bconn_recv_reason(ssize_t n)
{
	if (n == 0)
		return REASON_CLOSED;
	if (n == -ECONNABORTED || n == -EPROTO)
		return REASON_TLS;
	return backend_reason_from_errno((int)-n);
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
	ssize_t n = bconn_recv(b, tmp, BCONN_GREETING_MAX - b->greeting_len);
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
		fdstore_conn_greeted(b); /* the stored name carries the greeting the socket no longer has */
		if (b->greeting_len == BCONN_GREETING_MAX) {
			/* More unprompted bytes than we keep: leave the rest in the
			 * kernel for the session and stop watching (a hang-up is
			 * then caught by the checkout check). */
			ev_io_stop(loop, &b->io);
		} else if (b->ssl && tls_has_pending(b->ssl)) {
			ev_feed_event(loop, &b->io, EV_READ); /* decrypted bytes no socket event will announce */
		}
		return;
	}
	if (n == -EAGAIN)
		return; /* nothing, or only TLS records that are not data (a TLS 1.3 ticket) */
	if (n == -ECONNABORTED)
		bconn_log(b, LOG_INFO, "TLS stream truncated by the backend while idle (no close_notify)");
	if (n == -EPROTO && !b->proven) { /* e.g. an alert right after the handshake: say which */
		char why[sizeof b->be->last_error], text[128];
		snprintf(why, sizeof why, "tls: handshake failed: %s", tls_error_text(text, sizeof text));
		/* Counted as a failed handshake too (it was counted full when it
		 * looked done): an alert later than TLS_TICKET_WAIT, as under load. */
		tls_handshake_failed(b->be, TLS_R_FAILED);
		bconn_failed_why(b, REASON_TLS, EPROTO, why);
		return;
	}
	bconn_lost(b, bconn_recv_reason(n), n == 0 ? 0 : (int)-n);
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
	ev_set_priority(&b->io, 0); /* established: as urgent as any client */
	if (b->io.fd == b->fd)
		ev_io_modify(&b->io, EV_READ); /* same fd: ev_io_set would make libev register it anew */
	else
		ev_io_set(&b->io, b->fd, EV_READ);
	ev_io_start(loop, &b->io);
	b->idle_since = ev_now(loop);
	bconn_set_state(b, BCONN_IDLE);
	if (b->ssl && tls_has_pending(b->ssl))
		ev_feed_event(loop, &b->io, EV_READ); /* a greeting OpenSSL holds already */
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

void bconn_adopt_idle(struct bconn *b)
{
	bconn_become_idle(b);
	if (b->greeting_len) { /* read before the restart: as if it had just arrived */
		bconn_move_front(b);
		b->greeted = 1;
		b->had_greeting = 1;
		b->be->n_greeted_idle++;
	}
}

static void bconn_established(struct bconn *b)
{
	struct pool *p = b->pool;
	struct ev_loop *loop = p->eng->loop;
	ev_timer_stop(loop, &b->timer);
	p->stats.conns_opened++;
	b->be->connects_ok++;
	b->opened_at = ev_now(loop);
	wp_histogram_observe(&p->h_connect, (b->ssl ? b->tcp_at : b->opened_at) - b->started_at); /* TCP only */
	ev_timer_set(&b->settle, BCONN_SETTLE, 0.);
	ev_timer_start(loop, &b->settle);
	bconn_log(b, LOG_DEBUG, "connected");
	bconn_become_idle(b); /* placed in the idle list as the file comment says */
	/* Without an active check, a completed connect proves an unknown
	 * backend reachable, as a passed connect check would (with a check,
	 * only checks tell). Its settle time still counts for rise and backoff. */
	if (b->be->state == BACKEND_UNKNOWN && p->cfg->health.type == CFG_CHECK_NONE)
		backend_health_ok(b->be, "connected");
	pool_dispatch(p);
}

/* The handshake is verified (and, TLS 1.3, the server's first record after
 * it was processed): the connection is established. */
static void bconn_tls_verified(struct bconn *b)
{
	struct ev_loop *loop = b->pool->eng->loop;
	tls_handshake_done(b->be, b->ssl, b->hs_at - b->tcp_at);
	bconn_log(b, LOG_DEBUG, "TLS handshake done: %s %s%s", SSL_get_version(b->ssl), SSL_get_cipher_name(b->ssl),
	          SSL_session_reused(b->ssl) ? ", resumed" : "");
	ev_io_stop(loop, &b->io);
	b->tls_phase = TLS_PH_DONE;
	bconn_established(b);
}

/* TLS 1.3: the server may still refuse us after our handshake finished (a
 * client certificate it rejects arrives as an alert after its tickets), so
 * the first record after the handshake is read before the connection may
 * be handed out: tickets (nothing to read) or data (a greeting, kept in the
 * SSL) establish it, an alert or EOF fails the attempt. A server that sends
 * nothing is established after TLS_TICKET_WAIT. */

static void bconn_tickets_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	bconn_tls_verified(container_of(w, struct bconn, timer));
}

static void bconn_tls_tickets(struct bconn *b)
{
	char why[sizeof b->be->last_error];
	if (tls_first_record(b->ssl, b->fd, why, sizeof why) == 0) {
		bconn_tls_verified(b);
		return;
	}
	tls_handshake_failed(b->be, TLS_R_FAILED);
	bconn_failed_why(b, REASON_TLS, 0, why);
}

/* Drive the TLS preamble and handshake (still CONNECTING, connect_timeout
 * armed): verified, the connection is established; a failure is a failed
 * attempt in OpenSSL's words. */
static void bconn_tls_step(struct bconn *b)
{
	struct ev_loop *loop = b->pool->eng->loop;
	enum tls_result res = TLS_R_FAILED;
	char why[sizeof b->be->last_error];
	if (b->tls_phase == TLS_PH_TICKETS) {
		bconn_tls_tickets(b);
		return;
	}
	enum tls_step st = tls_handshake(b->ssl, b->fd, &b->tls_phase, &b->tls_sent, &res, why, sizeof why);
	switch (st) {
	case TLS_STEP_DONE:
		b->hs_at = ev_now(loop);
		if (SSL_version(b->ssl) < TLS1_3_VERSION) {
			bconn_tls_verified(b);
			return;
		}
		b->tls_phase = TLS_PH_TICKETS;
		ev_timer_stop(loop, &b->timer); /* connect_timeout is over: the handshake is */
		ev_set_cb(&b->timer, bconn_tickets_timeout_cb);
		ev_timer_set(&b->timer, TLS_TICKET_WAIT, 0.);
		ev_timer_start(loop, &b->timer);
		ev_io_stop(loop, &b->io);
		ev_io_set(&b->io, b->fd, EV_READ);
		ev_io_start(loop, &b->io);
		if (tls_has_pending(b->ssl))
			bconn_tls_tickets(b);
		return;
	case TLS_STEP_READ:
	case TLS_STEP_WRITE: {
		engine_io_want(loop, &b->io, st == TLS_STEP_READ ? EV_READ : EV_WRITE);
		return;
	}
	case TLS_STEP_FAILED:
		tls_handshake_failed(b->be, res);
		bconn_failed_why(b, REASON_TLS, 0, why);
		return;
	}
}

static void bconn_tls_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)loop;
	(void)revents;
	bconn_tls_step(container_of(w, struct bconn, io));
}

/* The TCP connection is up: established at once, or (tls:) after the
 * preamble and a verified handshake. */
static void bconn_tcp_up(struct bconn *b)
{
	struct pool *p = b->pool;
	if (!p->cfg->tls.enabled) {
		bconn_established(b);
		return;
	}
	char err[sizeof b->be->last_error];
	b->tcp_at = ev_now(p->eng->loop);
	b->ssl = tls_new(b->be, b->fd, &b->tls_phase, err, sizeof err);
	if (!b->ssl) {
		bconn_failed_why(b, REASON_OTHER, ENOMEM, err);
		return;
	}
	ev_io_stop(p->eng->loop, &b->io);
	ev_set_cb(&b->io, bconn_tls_cb);
	bconn_tls_step(b);
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
	bconn_tcp_up(b);
}

static void bconn_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	struct bconn *b = container_of(w, struct bconn, timer);
	if (b->ssl) {
		tls_handshake_failed(b->be, TLS_R_TIMEOUT);
		bconn_failed_why(b, REASON_TIMEOUT, ETIMEDOUT,
		                 b->tls_phase == TLS_PH_HANDSHAKE ? "connect timeout (TLS handshake)"
		                                                  : "connect timeout (starttls)");
		return;
	}
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
	int fd = socket(be->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
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
	/* Warming (the connect, and a TLS handshake's ~0.5 ms of CPU per step)
	 * runs after the clients' events of the same loop iteration. */
	ev_set_priority(&b->io, BCONN_WARMING_PRI);
	ev_timer_init(&b->timer, bconn_timeout_cb, (double)p->cfg->connect_timeout_ms / 1000.0, 0.);
	ev_timer_init(&b->settle, bconn_settle_cb, 0., 0.);
	be->n_unproven++;
	/* Account for the attempt before connect() so an immediate failure
	 * goes through the same path as a later one. */
	bconn_set_state(b, BCONN_CONNECTING);

	b->started_at = ev_now(loop);
	int r;
	do
		r = connect(b->fd, (const struct sockaddr *)&be->addr, be->addrlen);
	while (r < 0 && errno == EINTR);
	if (r == 0) {
		ev_timer_start(loop, &b->timer); /* TLS still has its handshake to do */
		bconn_tcp_up(b);
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

/* Bytes one read of a reset's answer asks for: more than any answer can
 * have left (reset_expect is at most CFG_MAX_CHECK_BYTES), so bytes that
 * follow the answer show up in the same read. */
#define REUSE_READ_MAX (CFG_MAX_CHECK_BYTES + 1)

static void bconn_reuse_refused(struct bconn *b, const char *why)
{
	struct pool *p = b->pool;
	p->stats.conns_reuse_refused++;
	bconn_log(b, LOG_DEBUG, "not reused: %s", why);
	bconn_close(b);
	pool_refill_soon(p);
}

/* The connection passed its reset (or quiet period): idle again. */
static void bconn_reuse_accept(struct bconn *b)
{
	struct pool *p = b->pool;
	ev_timer_stop(p->eng->loop, &b->timer);
	p->stats.conns_reused++;
	bconn_log(b, LOG_DEBUG, "reused");
	bconn_become_idle(b);
	pool_dispatch(p);
}

/* The quiet period passed (or, TLS, the reset's answer was read): nothing
 * may have come since, or it would be the next client's. */
static void bconn_reuse_done(struct bconn *b)
{
	if (bconn_peek(b) != SOCK_QUIET) {
		bconn_reuse_refused(b, "bytes or EOF after the reset");
		return;
	}
	bconn_reuse_accept(b);
}

/* The reset's answer, or (quiet period) any byte at all. Each read asks for
 * more than the answer's remainder (REUSE_READ_MAX), so bytes that came
 * after it, a late reply of the session included, arrive in the same read
 * and refuse the connection: a plain connection needs no second look (a
 * peek) once the answer is complete. Anything that comes later still is
 * caught idle (bconn_idle_cb: served connections keep no bytes), at
 * checkout, or before the next client's first byte (session_stray_reply). */
static void bconn_reuse_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)loop;
	(void)revents;
	struct bconn *b = container_of(w, struct bconn, io);
	const struct cfg_reuse *r = &b->pool->cfg->reuse;
	unsigned char buf[REUSE_READ_MAX];
	ssize_t n = bconn_recv(b, buf, sizeof buf);
	if (n == -EAGAIN)
		return;
	if (n <= 0) {
		bconn_reuse_refused(b, n == 0 ? "closed by the backend" : strerror((int)-n));
		return;
	}
	if (!r->reset_expect) {
		bconn_reuse_refused(b, "the backend sent bytes after the session ended");
		return;
	}
	const unsigned char *expect = b->reset_want ? b->reset_want : r->reset_expect;
	size_t expect_len = b->reset_want ? b->reset_want_len : r->reset_expect_len;
	size_t want = expect_len - b->reset_got;
	if ((size_t)n > want) {
		bconn_reuse_refused(b, "bytes after the reset's answer");
		return;
	}
	if (memcmp(buf, expect + b->reset_got, (size_t)n) != 0) {
		bconn_reuse_refused(b, "the reset's answer did not match");
		return;
	}
	b->reset_got += (size_t)n;
	if (b->reset_got < expect_len) {
		if (b->ssl && tls_has_pending(b->ssl))
			ev_feed_event(loop, &b->io, EV_READ); /* the rest is decrypted already */
		return;
	}
	if (b->ssl)
		bconn_reuse_done(b); /* a record after the answer's may hold more: OpenSSL's peek tells */
	else
		bconn_reuse_accept(b);
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

/* `src` with every CFG_NONCE replaced by `nonce` (CFG_NONCE_LEN chars), in
 * a new buffer; NULL when out of memory. */
static unsigned char *bconn_with_nonce(const unsigned char *src, size_t len, const char *nonce, size_t *out_len)
{
	size_t k = cfg_nonce_count(src, len), t = sizeof CFG_NONCE - 1;
	unsigned char *o = malloc(len + k * CFG_NONCE_LEN + 1), *w = o;
	if (!o)
		return NULL;
	for (size_t i = 0; i < len;) {
		if (i + t <= len && memcmp(src + i, CFG_NONCE, t) == 0) {
			memcpy(w, nonce, CFG_NONCE_LEN);
			w += CFG_NONCE_LEN;
			i += t;
		} else {
			*w++ = src[i++];
		}
	}
	*out_len = (size_t)(w - o);
	return o;
}

/* 128 fresh random bits for a reset nonce: OpenSSL's CSPRNG, NONCE_BATCH
 * nonces per call (the daemon forks only to exec, upgrade.c, so no other
 * process ever holds the same batch). Each is wiped from the batch when
 * taken. 0, or -1 when OpenSSL has no randomness to give. */
static int bconn_take_nonce(struct engine *eng, unsigned char out[CFG_NONCE_LEN / 2])
{
	if (!eng->nonces_left) {
		if (RAND_bytes(&eng->nonces[0][0], (int)sizeof eng->nonces) != 1)
			return -1;
		eng->nonces_left = NONCE_BATCH;
	}
	unsigned char *n = eng->nonces[--eng->nonces_left];
	memcpy(out, n, CFG_NONCE_LEN / 2);
	OPENSSL_cleanse(n, CFG_NONCE_LEN / 2);
	return 0;
}

/* Send the reset. With a {nonce}, a fresh one from OpenSSL's CSPRNG goes
 * into the request and the answer it must get (b->reset_want): a client
 * cannot know it, so it cannot pipeline a fake answer ahead of the real
 * one (the whole answer must match, and its replies would come first). */
static int bconn_send_reset(struct bconn *b, const struct cfg_reuse *r)
{
	free(b->reset_want);
	b->reset_want = NULL;
	if (!cfg_nonce_count(r->reset_send, r->reset_send_len))
		return bconn_send(b, r->reset_send, r->reset_send_len) == (ssize_t)r->reset_send_len ? 0 : -1;
	unsigned char raw[CFG_NONCE_LEN / 2];
	char nonce[CFG_NONCE_LEN + 1];
	if (bconn_take_nonce(b->pool->eng, raw) < 0)
		return -1;
	for (size_t i = 0; i < sizeof raw; i++)
		snprintf(nonce + 2 * i, 3, "%02x", raw[i]);
	OPENSSL_cleanse(raw, sizeof raw);
	size_t len = 0;
	unsigned char *msg = bconn_with_nonce(r->reset_send, r->reset_send_len, nonce, &len);
	b->reset_want = bconn_with_nonce(r->reset_expect, r->reset_expect_len, nonce, &b->reset_want_len);
	int ok = msg && b->reset_want && bconn_send(b, msg, len) == (ssize_t)len;
	free(msg);
	return ok ? 0 : -1;
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
	if (p->eng->stopping || p->retiring || !backend_available(b->be->state))
		why = "the pool or backend is going away";
	else if (b->had_greeting)
		why = "the backend greeted on it (the next client would miss the greeting)";
	else if (b->tls_gen != p->tls_gen)
		why = "made with TLS settings a reload replaced";
	else if (p->cfg->max_lifetime_ms &&
	         now >= b->opened_at + (double)p->cfg->max_lifetime_ms / 1000.0 * (1.0 - LIFETIME_JITTER * b->jitter))
		why = "past max_lifetime";
	else if (r->reset_send && bconn_send_reset(b, r) < 0)
		why = "the reset could not be sent";
	if (why) {
		bconn_reuse_refused(b, why);
		return;
	}
	b->reset_got = 0;
	ev_set_cb(&b->io, bconn_reuse_io_cb);
	ev_io_modify(&b->io, EV_READ); /* the session's fd: ev_io_set would make libev register it anew */
	ev_io_start(loop, &b->io);
	ev_timer_stop(loop, &b->timer);
	ev_timer_init(&b->timer, bconn_reuse_timer_cb, (double)r->reset_timeout_ms / 1000.0, 0.);
	ev_timer_start(loop, &b->timer);
}
