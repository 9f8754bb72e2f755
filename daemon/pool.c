/*
 * daemon/pool.c — a pool: its warm backend connections and its clients.
 *
 * The lifecycle of a backend connection (struct bconn):
 *
 *   pool_refill() ──connect()──▶ CONNECTING ──established──▶ IDLE ──checkout──▶ ACTIVE ──▶ CLOSED
 *                                     │ refused/timeout          │ EOF/RST while idle      (reuse:
 *                                     ▼                          ▼                   RESETTING ─▶ IDLE)
 *                          backend_attempt_failed()        closed, refilled
 *
 * Every arrow, and the birth (BCONN_NEW: bconn_new(), then connect() or a
 * checkin) and the death (CLOSED: the graveyard, freed by bconn_reap()), goes
 * through bconn_set_state(), which moves the connection between its
 * backend's lists and logs "old -> new" at debug. Lines about a connection
 * are logged with bconn_log(), which prints "pool= backend= conn=".
 *
 * The pool keeps at least min_idle connections IDLE while nothing is
 * happening, plus one CONNECTING per waiting client, never more than
 * max_connections in all. Each backend holds its own lists; which backend a
 * new connection goes to and which backend's idle connection a client gets
 * follow the pool's balance (round_robin by weight, least_connections,
 * first), among the backends that serve: up, and backups only while no
 * primary is up. Only connections on preferred backends count toward the
 * floor, so when a primary (or, for `first`, an earlier backend) is usable
 * again, new connections go there and the others are handed back (closed)
 * once the floor is met there. Idle sockets stay in the loop (EV_READ), so a
 * backend closing one is noticed at once; bytes a backend sends unprompted
 * (a greeting) are kept and delivered first to the client that gets the
 * connection, but only on a connection fresh from connect(): on one that
 * carried a session (reuse:) they are a late reply of that session, and the
 * connection is closed (bconn_idle_cb). Checkout takes the connection at the front of the idle list
 * and re-checks it without blocking (MSG_PEEK, SO_ERROR) before handing it
 * out. The front holds the most recent sign of life: a connection whose
 * greeting just arrived moves there; a freshly established one goes to the
 * front too (LIFO) unless some idle connection of its backend has a greeting
 * already, in which case it waits at the back until it has said something,
 * so a client does not wait for a handshake another connection has done.
 *
 * A connection that dies within BCONN_SETTLE of being established counts as
 * a failed attempt: a backend that accepts and resets at once (out of
 * clients, or a balancer with nothing behind it) is backed off like one that
 * refuses. One that lives longer is proven and resets the backend's backoff;
 * when it closes later (a server's idle timeout) it is simply replaced.
 *
 * One janitor timer per pool (DESIGN.md rule 6) recycles idle connections
 * past max_lifetime (spaced apart) or max_idle_time, closes those above the
 * floor idle for idle_timeout, and hands back misplaced ones. Both lifetimes
 * end up to LIFETIME_JITTER early, by a random share fixed per connection,
 * so connections opened together do not expire together.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine.h"
#include "log.h"

static const char *const bconn_state_names[] = {"connecting", "idle", "active", "resetting", "closed", "new"};
_Static_assert(sizeof bconn_state_names / sizeof *bconn_state_names == BCONN_NEW + 1, "a name per state");

#define JANITOR_PERIOD   1.0   /* seconds between sweeps when no deadline is nearer */
#define JANITOR_MIN_WAIT 0.001 /* never re-arm closer than this */
#define RECYCLE_GAP_MAX  1.0   /* seconds: cap on the spacing of max_lifetime closes */

static void pool_janitor_soon(struct pool *p, ev_tstamp at);

/* ---- pure accounting (unit-tested) ------------------------------------ */

size_t pool_plan_connects(const struct pool_counts *c)
{
	size_t total = c->idle + c->active + c->connecting + c->other;
	size_t want = (size_t)c->min_idle + c->waiting;
	size_t have = c->idle + c->connecting;
	if (want <= have || total >= c->max_connections)
		return 0;
	size_t need = want - have;
	size_t room = c->max_connections - total;
	return need < room ? need : room;
}

int pool_backend_serves(const struct pool *p, const struct backend *be)
{
	if (be->state != BACKEND_UP)
		return 0;
	return be->cfg->backup ? p->n_up_primary == 0 : 1;
}

/* For `first`: the index of the first serving backend that is usable right
 * now (no failures counted); backends after it are not preferred. */
static size_t pool_first_cutoff(const struct pool *p)
{
	if (p->cfg->balance != CFG_BALANCE_FIRST)
		return p->n_backends;
	for (size_t i = 0; i < p->n_backends; i++)
		if (pool_backend_serves(p, &p->backends[i]) && p->backends[i].connect_failures == 0)
			return i;
	return p->n_backends;
}

/* Serves, and (for `first`) no earlier serving backend is usable right now:
 * its connections count toward the floor and are never handed back. */
static int pool_backend_preferred_at(const struct pool *p, const struct backend *be, size_t cutoff)
{
	return pool_backend_serves(p, be) && (size_t)(be - p->backends) <= cutoff;
}

static int pool_backend_preferred(const struct pool *p, const struct backend *be)
{
	return pool_backend_preferred_at(p, be, pool_first_cutoff(p));
}

static size_t backend_n_conns(const struct backend *be)
{
	return be->conns[BCONN_IDLE].n + be->conns[BCONN_ACTIVE].n + be->conns[BCONN_CONNECTING].n;
}

/* a/wa < b/wb, without division */
static int load_less(size_t a, uint32_t wa, size_t b, uint32_t wb)
{
	return (uint64_t)a * wb < (uint64_t)b * wa;
}

int pool_session_uid(struct session *s, uid_t *uid)
{
	if (!s->uid_read) {
		/* Read once, when first needed: only a foreign connection or a
		 * handout (its lease) asks, so a plain relayed client costs no
		 * syscall. A TCP peer has no credentials (Linux would report the
		 * overflow uid): only an AF_UNIX peer's uid is trusted. */
		struct ucred cr;
		socklen_t len = sizeof cr;
		int dom = 0;
		socklen_t dlen = sizeof dom;
		s->uid_read = 1;
		if (getsockopt(s->cfd, SOL_SOCKET, SO_DOMAIN, &dom, &dlen) == 0 && dom == AF_UNIX &&
		    getsockopt(s->cfd, SOL_SOCKET, SO_PEERCRED, &cr, &len) == 0 && len == sizeof cr) {
			s->uid = cr.uid;
			s->uid_known = 1;
		}
	}
	*uid = s->uid;
	return s->uid_known ? 0 : -1;
}

/* May the session `s` (NULL: anyone) get the connection `b`? A foreign
 * connection (checked in) only goes to a client of the uid that checked it
 * in: that process may still hold a copy of the socket, which the kernel
 * cannot take back, so a client of anyone else would share its session with
 * it. A client whose uid is unknown (TCP) never gets one. */
static int bconn_usable_by(const struct bconn *b, struct session *s)
{
	uid_t uid;
	return !b->foreign || !s || (pool_session_uid(s, &uid) == 0 && uid == b->owner_uid);
}

/* The first idle connection of `be` that `s` may get (the idle list's order:
 * greeted first, then the youngest), or NULL. Foreign connections are rare,
 * so this almost always stops at the first. */
static struct bconn *pool_conn_for(struct backend *be, struct session *s)
{
	const struct list *l = &be->conns[BCONN_IDLE];
	for (struct list_node *n = l->head.next; n != &l->head; n = n->next) {
		struct bconn *b = container_of(n, struct bconn, node);
		if (bconn_usable_by(b, s))
			return b;
	}
	return NULL;
}

long pool_pick_handout(struct pool *p)
{
	return pool_pick_handout_for(p, NULL);
}

long pool_pick_handout_for(struct pool *p, struct session *s)
{
	size_t n = p->n_backends;
	long best = -1;
	int64_t total = 0;
	for (size_t i = 0; i < n; i++) {
		size_t k = (p->rr + i) % n;
		struct backend *be = &p->backends[k];
		/* A backend whose idle connections are all foreign to `s` is, for
		 * `s`, a backend without idle connections: balance among the rest. */
		if (!be->conns[BCONN_IDLE].n || !pool_backend_serves(p, be) || (s && !pool_conn_for(be, s)))
			continue;
		const struct backend *b = best < 0 ? NULL : &p->backends[best];
		switch (p->cfg->balance) {
		case CFG_BALANCE_FIRST:
			if (!b || k < (size_t)best)
				best = (long)k;
			break;
		case CFG_BALANCE_LEAST_CONN:
			if (!b || load_less(be->conns[BCONN_ACTIVE].n, be->cfg->weight, b->conns[BCONN_ACTIVE].n,
			                    b->cfg->weight))
				best = (long)k;
			break;
		case CFG_BALANCE_ROUND_ROBIN:
			/* Smooth weighted round robin (as nginx): every candidate
			 * earns its weight, the richest is picked and pays the total. */
			be->wrr_current += be->cfg->weight;
			total += be->cfg->weight;
			if (!b || be->wrr_current > b->wrr_current)
				best = (long)k;
			break;
		}
	}
	if (best < 0)
		return -1;
	p->backends[best].wrr_current -= total;
	if (p->cfg->balance == CFG_BALANCE_LEAST_CONN)
		p->rr = ((size_t)best + 1) % n; /* equal loads take turns */
	return best;
}

long pool_pick_connect(struct pool *p, ev_tstamp now)
{
	size_t n = p->n_backends;
	long best = -1;
	for (size_t i = 0; i < n; i++) {
		/* `first` walks the list in order; the others rotate for ties. */
		size_t k = p->cfg->balance == CFG_BALANCE_FIRST ? i : (p->rr + i) % n;
		const struct backend *be = &p->backends[k];
		if (!pool_backend_serves(p, be) || !backend_can_connect(be, now))
			continue;
		if (be->conns[BCONN_CONNECTING].n >= p->cfg->max_connecting) {
			if (p->cfg->balance == CFG_BALANCE_FIRST)
				return -1; /* wait for it rather than spill to the next */
			continue;
		}
		if (p->cfg->balance == CFG_BALANCE_FIRST)
			return (long)k;
		/* New connections go where there are fewest per unit of weight,
		 * so the warm floor is spread as the weights say. */
		const struct backend *b = best < 0 ? NULL : &p->backends[best];
		if (!b || load_less(backend_n_conns(be), be->cfg->weight, backend_n_conns(b), b->cfg->weight))
			best = (long)k;
	}
	if (best >= 0)
		p->rr = ((size_t)best + 1) % n;
	return best;
}

static struct pool_counts pool_counts(const struct pool *p)
{
	struct pool_counts c = {
	    .active = p->n_conns[BCONN_ACTIVE],
	    .waiting = p->waiting.n,
	    .min_idle = p->cfg->min_idle,
	    .max_connections = p->cfg->max_connections,
	};
	size_t cutoff = pool_first_cutoff(p);
	for (size_t i = 0; i < p->n_backends; i++) {
		const struct backend *be = &p->backends[i];
		if (pool_backend_preferred_at(p, be, cutoff)) {
			c.idle += be->conns[BCONN_IDLE].n;
			c.connecting += be->conns[BCONN_CONNECTING].n;
		}
	}
	c.other = p->n_conns[BCONN_IDLE] + p->n_conns[BCONN_CONNECTING] - c.idle - c.connecting +
	          p->n_conns[BCONN_RESETTING];
	return c;
}

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
static struct bconn *bconn_new(struct pool *p, struct backend *be, int fd)
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

static void bconn_failed(struct bconn *b, enum backend_reason reason, int err)
{
	struct pool *p = b->pool;
	if (p->eng->stopping) { /* shutting down: nothing to retry or report */
		bconn_close(b);
		return;
	}
	backend_attempt_failed(b, reason, err);
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
	pool_janitor_soon(p, bconn_idle_deadline(b));
	if (p->may_hand_back && pool_backend_preferred(p, b->be))
		pool_janitor_soon(p, b->idle_since); /* maybe the floor is met here: hand back the others */
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
static int bconn_connect(struct pool *p, struct backend *be)
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

static int same_addr(const struct sockaddr_storage *a, socklen_t alen, const struct cfg_backend *c)
{
	if (a->ss_family != c->addr.ss_family)
		return 0;
	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *x = (const void *)a, *y = (const void *)&c->addr;
		return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	if (a->ss_family == AF_INET6) {
		const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)&c->addr;
		return x->sin6_port == y->sin6_port && !memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr);
	}
	(void)alen;
	return 0;
}

void pool_checkin(struct pool *p, int fd, uid_t owner, ev_tstamp opened_at)
{
	struct sockaddr_storage sa;
	socklen_t len = sizeof sa;
	int type = 0;
	socklen_t tlen = sizeof type;
	struct backend *be = NULL;
	const char *why = NULL;

	if (!p->cfg->reuse.enabled)
		why = "the pool does not reuse connections";
	else if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) < 0 || type != SOCK_STREAM ||
	         getpeername(fd, (struct sockaddr *)&sa, &len) < 0)
		why = "not a connected stream socket";
	for (size_t i = 0; !why && !be && i < p->n_backends; i++)
		if (same_addr(&sa, len, p->backends[i].cfg))
			be = &p->backends[i];
	struct pool_counts c = pool_counts(p);
	if (!why && !be)
		why = "not connected to one of the pool's backends";
	else if (!why && c.idle + c.active + c.connecting + c.other >= p->cfg->max_connections)
		why = "max_connections reached";
	struct bconn *b = why ? NULL : bconn_new(p, be, fd);
	if (!why && !b)
		why = "out of memory";
	if (why) {
		p->stats.conns_reuse_refused++;
		log_debug("pool=%s: a socket checked in is closed: %s", p->name, why);
		close(fd);
		return;
	}
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		bconn_log(b, LOG_WARNING, "O_NONBLOCK on a socket checked in: %s", strerror(errno));
	b->proven = 1;
	b->foreign = 1;
	b->owner_uid = owner;
	b->opened_at = opened_at; /* from the lease: max_lifetime still counts from the connect */
	bconn_log(b, LOG_DEBUG, "checked in by uid %u", (unsigned)owner);
	/* Born active, as the connection it was when it left, so it goes
	 * through the same reset (or quiet period) as any session's end. */
	bconn_set_state(b, BCONN_ACTIVE);
	bconn_reuse(b);
}

/* ---- checkout ---------------------------------------------------------- */

/* Is this idle connection still usable? Never blocks. Bytes waiting in the
 * socket are fine on a fresh connection (more greeting), but not on one
 * that carried a session (a late reply, bconn_idle_cb: it arrived in this
 * loop iteration, before the idle watcher ran); EOF or an error never are.
 * A pending socket error (SO_ERROR) is what recv() reports first, so one
 * call checks both. */
static int bconn_alive(struct bconn *b)
{
	switch (sock_peek(b->fd)) {
	case SOCK_QUIET:
		return 1;
	case SOCK_DATA:
		return !b->served;
	default:
		return 0;
	}
}

/* The first waiting client can get none of the idle connections: those
 * left are foreign (checked in by another uid). Close one of them (the
 * oldest on the first serving backend that has one) so that the refill
 * opens a fresh connection in its place: a client never waits for a
 * connection it could never be given. Touches no balance state. */
static void pool_close_foreign_for(struct pool *p, struct session *s)
{
	for (size_t i = 0; i < p->n_backends; i++) {
		struct backend *be = &p->backends[i];
		if (!pool_backend_serves(p, be))
			continue;
		const struct list *l = &be->conns[BCONN_IDLE];
		for (struct list_node *n = l->head.prev; n != &l->head; n = n->prev) { /* the oldest first */
			struct bconn *b = container_of(n, struct bconn, node);
			if (bconn_usable_by(b, s))
				continue;
			uid_t uid = 0;
			long shown = pool_session_uid(s, &uid) == 0 ? (long)uid : -1L; /* -1: not known (TCP) */
			p->stats.conns_reuse_refused++;
			bconn_log_for(b, s, LOG_INFO, "closed: checked in by uid %u, not for the waiting client (uid %ld)",
			              (unsigned)b->owner_uid, shown);
			/* Its owner may hold a copy: out of epoll before our fd goes. */
			ev_io_stop(p->eng->loop, &b->io);
			handoff_forget_fd(p->eng->loop, b->fd);
			bconn_close(b);
			return;
		}
	}
}

void pool_dispatch(struct pool *p)
{
	while (!list_empty(&p->waiting)) {
		struct session *s = container_of(list_first(&p->waiting), struct session, node);
		long k = pool_pick_handout_for(p, s);
		if (k < 0) {
			/* One per call: the refill below opens its replacement, whose
			 * arrival dispatches again (and closes another if still needed). */
			pool_close_foreign_for(p, s);
			break;
		}
		struct backend *be = &p->backends[k];
		struct bconn *b = pool_conn_for(be, s);
		if (!bconn_alive(b)) {
			p->stats.stale_at_checkout++;
			bconn_log(b, LOG_INFO, "dead at checkout, discarded");
			bconn_close(b);
			continue;
		}
		session_start(s, b);
	}
	pool_refill_soon(p);
}

/* ---- refill ------------------------------------------------------------ */

static void pool_refill_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	struct pool *p = container_of(w, struct pool, refill_timer);
	pool_refill(p);
}

void pool_refill(struct pool *p)
{
	struct engine *eng = p->eng;
	if (eng->stopping || p->retiring)
		return;
	struct pool_counts c = pool_counts(p);
	size_t need = pool_plan_connects(&c);
	ev_tstamp now = ev_now(eng->loop);
	int local_failure = 0;
	while (need > 0) {
		long k = pool_pick_connect(p, now);
		if (k < 0)
			break;
		if (bconn_connect(p, &p->backends[k]) < 0) {
			local_failure = 1; /* out of sockets: retried by the timer below */
			break;
		}
		c = pool_counts(p);
		need = pool_plan_connects(&c);
	}
	/* Failing backends (down, or up with failures counted) with no active
	 * check are probed by the pool itself, one connection at a time, when
	 * their backoff allows, wanted or not: the floor may be full elsewhere,
	 * and they must still come back (or reach `fall`). */
	int probing = 0;
	for (size_t i = 0; i < p->n_backends && !local_failure; i++) {
		struct backend *be = &p->backends[i];
		int failing = be->state == BACKEND_DOWN || (be->state == BACKEND_UP && be->connect_failures > 0);
		if (!failing || p->cfg->health.type != CFG_CHECK_NONE || be->n_unproven)
			continue;
		probing = 1;
		c = pool_counts(p);
		if (now >= be->next_attempt &&
		    c.idle + c.active + c.connecting + c.other < p->cfg->max_connections &&
		    bconn_connect(p, be) < 0)
			local_failure = 1;
	}
	/* Still short, or a probe to schedule? Wake when the earliest backend
	 * leaves backoff (or in 1 s after a local failure such as EMFILE). */
	ev_timer_stop(eng->loop, &p->refill_timer);
	if (need == 0 && !probing)
		return;
	ev_tstamp wake = now + 1.0;
	for (size_t i = 0; i < p->n_backends && !local_failure; i++) {
		const struct backend *be = &p->backends[i];
		if (be->next_attempt > now && be->next_attempt < wake)
			wake = be->next_attempt;
	}
	ev_timer_set(&p->refill_timer, wake - now, 0.);
	ev_timer_start(eng->loop, &p->refill_timer);
}

void pool_refill_soon(struct pool *p)
{
	if (p->eng->stopping || p->retiring)
		return;
	if (p->waiting.n > p->n_conns[BCONN_CONNECTING]) {
		pool_refill(p); /* a client is waiting: this is its critical path */
		return;
	}
	if (p->refill_node.next == &p->refill_node) /* not queued yet */
		list_push_back(&p->eng->refill_soon, &p->refill_node);
}

void pool_run_deferred_refills(struct engine *eng)
{
	struct list_node *pos;
	while ((pos = list_first(&eng->refill_soon))) {
		list_remove(&eng->refill_soon, pos);
		pool_refill(container_of(pos, struct pool, refill_node));
	}
}

/* ---- janitor: lifetimes, idle sweeps, hand-back ------------------------ */

static void pool_janitor_soon(struct pool *p, ev_tstamp at)
{
	struct ev_loop *loop = p->eng->loop;
	if (!isfinite(at) || p->eng->stopping || p->retiring)
		return;
	ev_tstamp now = ev_now(loop);
	if (ev_is_active(&p->janitor) && now + ev_timer_remaining(loop, &p->janitor) <= at)
		return;
	ev_timer_stop(loop, &p->janitor);
	ev_timer_set(&p->janitor, fmax(at - now, JANITOR_MIN_WAIT), 0.);
	ev_timer_start(loop, &p->janitor);
}

static void pool_recycle(struct bconn *b, const char *why)
{
	struct pool *p = b->pool;
	p->stats.conns_recycled++;
	bconn_log(b, LOG_DEBUG, "%s, recycling", why);
	bconn_close(b);
}

/* One sweep over the idle connections; returns when to look again. */
static ev_tstamp pool_janitor_sweep(struct pool *p, ev_tstamp now)
{
	const struct cfg_pool *c = p->cfg;
	struct pool_counts counts = pool_counts(p);
	size_t idle = counts.idle; /* on preferred backends: the floor */
	ev_tstamp next = now + JANITOR_PERIOD;
	/* max_lifetime closes are spaced so a floor opened at once is not
	 * replaced at once: the jitter window shared by the open connections. */
	size_t n_open = p->n_conns[BCONN_IDLE] + p->n_conns[BCONN_ACTIVE];
	ev_tstamp gap = fmin((double)c->max_lifetime_ms / 1000.0 * LIFETIME_JITTER / (double)(n_open ? n_open : 1),
	                     RECYCLE_GAP_MAX);

	size_t cutoff = pool_first_cutoff(p);
	for (size_t i = 0; i < p->n_backends; i++) {
		struct backend *be = &p->backends[i];
		int preferred = pool_backend_preferred_at(p, be, cutoff);
		struct list_node *pos, *tmp;
		list_for_each_safe (pos, tmp, &be->conns[BCONN_IDLE]) {
			struct bconn *b = container_of(pos, struct bconn, node);
			ev_tstamp early = 1.0 - LIFETIME_JITTER * b->jitter, t;
			if (!preferred && be->state == BACKEND_UP && idle >= c->min_idle) {
				p->stats.conns_handed_back++;
				bconn_log(b, LOG_DEBUG, "preferred backends are warm, handing back");
				bconn_close(b);
				continue;
			}
			if (c->max_idle_time_ms) {
				t = b->idle_since + (double)c->max_idle_time_ms / 1000.0 * early;
				if (now >= t) {
					pool_recycle(b, "max_idle_time reached");
					idle -= preferred;
					continue;
				}
				next = fmin(next, t);
			}
			if (c->max_lifetime_ms) {
				t = b->opened_at + (double)c->max_lifetime_ms / 1000.0 * early;
				if (now >= t && now >= p->last_recycle + gap) {
					p->last_recycle = now;
					pool_recycle(b, "max_lifetime reached");
					idle -= preferred;
					continue;
				}
				next = fmin(next, fmax(t, p->last_recycle + gap));
			}
			if (c->idle_timeout_ms && preferred && idle > c->min_idle) {
				t = b->idle_since + (double)c->idle_timeout_ms / 1000.0;
				if (now >= t) {
					p->stats.conns_idle_closed++;
					bconn_log(b, LOG_DEBUG, "idle_timeout above the floor, closing");
					bconn_close(b);
					idle--;
					continue;
				}
				next = fmin(next, t);
			}
		}
	}
	return next;
}

static void pool_janitor_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)revents;
	struct pool *p = container_of(w, struct pool, janitor);
	ev_tstamp now = ev_now(loop);
	ev_tstamp next = pool_janitor_sweep(p, now);
	pool_janitor_soon(p, next);
	pool_refill(p);
}

/* ---- backend availability ---------------------------------------------- */

size_t pool_close_idle(struct backend *be)
{
	size_t n = be->conns[BCONN_IDLE].n;
	struct list_node *pos, *tmp;
	list_for_each_safe (pos, tmp, &be->conns[BCONN_IDLE])
		bconn_close(container_of(pos, struct bconn, node));
	return n;
}

static void pool_fail_waiting(struct pool *p, const char *why)
{
	struct list_node *pos, *tmp;
	list_for_each_safe (pos, tmp, &p->waiting) {
		p->stats.clients_failed_fast++;
		session_close(container_of(pos, struct session, node), why);
	}
}

void pool_backend_changed(struct pool *p, struct backend *be, enum backend_state old)
{
	if (p->eng->stopping || p->retiring)
		return;
	if (old == BACKEND_UP) {
		size_t n = pool_close_idle(be);
		if (n)
			backend_log(be, LOG_INFO, "closed %zu idle connections", n);
		if (!be->cfg->backup && p->n_up_primary == 0 && p->n_up_backup > 0)
			log_warning("pool=%s: no primary backend up, using %u backup(s)", p->name,
			            p->n_up_backup);
	} else if (be->state == BACKEND_UP && !be->cfg->backup && p->n_up_primary == 1 && p->n_up_backup > 0) {
		log_info("pool=%s: a primary backend is up again, backups hand back", p->name);
	}
	if (be->state == BACKEND_DISABLED)
		health_stop(be);
	if (p->n_up_primary + p->n_up_backup == 0) {
		log_warning("pool=%s: no backend up", p->name);
		if (p->cfg->fail_fast && p->waiting.n) {
			log_info("pool=%s: fail_fast: closing %zu waiting clients", p->name, p->waiting.n);
			pool_fail_waiting(p, "no backend up (fail_fast)");
		}
	}
	if (p->may_hand_back)
		pool_janitor_soon(p, ev_now(p->eng->loop));
	pool_dispatch(p); /* new candidates for waiting clients; refills */
}

/* ---- clients ----------------------------------------------------------- */

void pool_client_arrived(struct pool *p, int cfd)
{
	pool_client_arrived_as(p, cfd, 0);
}

void pool_client_arrived_as(struct pool *p, int cfd, int handoff)
{
	p->stats.clients_accepted++;
	if (p->waiting.n + p->relaying.n >= p->cfg->max_clients) {
		p->stats.clients_refused++;
		log_warning("pool=%s: max_clients (%u) reached, closing new client", p->name,
		            p->cfg->max_clients);
		close(cfd);
		return;
	}
	if (p->cfg->fail_fast && p->n_up_primary + p->n_up_backup == 0) {
		p->stats.clients_failed_fast++;
		log_info("pool=%s: no backend up, closing new client (fail_fast)", p->name);
		close(cfd);
		return;
	}
	struct session *s = session_new(p, cfd);
	if (!s) {
		log_error("pool=%s: out of memory for a client", p->name);
		close(cfd);
		return;
	}
	s->handoff = handoff ? 1 : 0;
	pool_dispatch(p);
}

/* ---- lifecycle --------------------------------------------------------- */

struct pool *pool_create(struct engine *eng, const struct cfg_pool *cfg)
{
	struct pool *p = calloc(1, sizeof *p);
	if (!p)
		return NULL;
	p->eng = eng;
	p->cfg = cfg;
	p->name = cfg->name;
	list_init(&p->waiting);
	list_init(&p->relaying);
	ev_timer_init(&p->refill_timer, pool_refill_timer_cb, 0., 0.);
	ev_timer_init(&p->janitor, pool_janitor_cb, 0., 0.);
	/* Bounds in seconds: 100 µs (a warm handout) to 10 s; sessions to an hour. */
	static const double wait_bounds[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
	                                     0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,    10};
	static const double session_bounds[] = {0.001, 0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600};
	if (wp_histogram_init(&p->h_wait, wait_bounds, sizeof wait_bounds / sizeof *wait_bounds) < 0 ||
	    wp_histogram_init(&p->h_connect, wait_bounds, sizeof wait_bounds / sizeof *wait_bounds) < 0 ||
	    wp_histogram_init(&p->h_session, session_bounds, sizeof session_bounds / sizeof *session_bounds) < 0) {
		pool_destroy(p);
		return NULL;
	}
	p->refill_node.prev = p->refill_node.next = &p->refill_node;
	p->backends = calloc(cfg->n_backends, sizeof *p->backends);
	p->listeners = calloc(cfg->n_listen, sizeof *p->listeners);
	if (!p->backends || !p->listeners) {
		pool_destroy(p);
		return NULL;
	}
	p->n_backends = cfg->n_backends;
	for (size_t i = 0; i < cfg->n_backends; i++) {
		struct backend *be = &p->backends[i];
		be->pool = p;
		be->cfg = &cfg->backends[i];
		be->name = cfg->backends[i].name;
		be->state = BACKEND_UP;
		*(be->cfg->backup ? &p->n_up_backup : &p->n_up_primary) += 1;
		p->may_hand_back |= be->cfg->backup || cfg->balance == CFG_BALANCE_FIRST;
		for (int k = 0; k < BCONN_NLISTS; k++)
			list_init(&be->conns[k]);
		be->hc.fd = -1;
	}
	for (size_t i = 0; i < cfg->n_backends; i++) {
		if (health_init(&p->backends[i]) < 0) {
			pool_destroy(p);
			return NULL;
		}
	}
	p->n_listeners = cfg->n_listen;
	for (size_t i = 0; i < cfg->n_listen; i++) {
		p->listeners[i].pool = p;
		p->listeners[i].cfg = &cfg->listen[i];
		p->listeners[i].fd = -1;
	}
	return p;
}

int pool_open_listeners(struct pool *p, char *err, size_t errlen)
{
	return pool_open_listeners_except(p, NULL, 0, err, errlen);
}

/* The open listener at `path` among `pools`, or NULL. */
static struct listener *listener_at(struct pool **pools, size_t n, const char *path)
{
	for (size_t k = 0; k < n; k++)
		for (size_t i = 0; i < pools[k]->n_listeners; i++)
			if (pools[k]->listeners[i].fd >= 0 && strcmp(pools[k]->listeners[i].cfg->path, path) == 0)
				return &pools[k]->listeners[i];
	return NULL;
}

/* The old pool whose handoff socket is at `path`, or NULL. */
static struct pool *handoff_owner(struct pool **pools, size_t n, const char *path)
{
	for (size_t k = 0; k < n; k++)
		if (pools[k]->handoff && strcmp(handoff_path(pools[k]->handoff), path) == 0)
			return pools[k];
	return NULL;
}

int pool_open_listeners_except(struct pool *p, struct pool **old, size_t n_old, char *err, size_t errlen)
{
	for (size_t i = 0; i < p->n_listeners; i++)
		if (!listener_at(old, n_old, p->listeners[i].cfg->path) &&
		    listener_open(&p->listeners[i], err, errlen) < 0)
			return -1;
	if (p->cfg->handoff.path && !handoff_owner(old, n_old, p->cfg->handoff.path) &&
	    !(p->handoff = handoff_open(p, &p->cfg->handoff, err, errlen)))
		return -1;
	return 0;
}

void pool_take_listeners(struct pool *p, struct pool **old, size_t n_old)
{
	struct pool *from_pool = p->cfg->handoff.path ? handoff_owner(old, n_old, p->cfg->handoff.path) : NULL;
	if (!p->handoff && from_pool) {
		p->handoff = from_pool->handoff;
		from_pool->handoff = NULL;
		handoff_move(p->handoff, p);
	}
	for (size_t i = 0; i < p->n_listeners; i++) {
		struct listener *l = &p->listeners[i];
		struct listener *from = listener_at(old, n_old, l->cfg->path);
		if (l->fd >= 0 || !from)
			continue;
		listener_move(l, from);
		char err[512];
		/* Never chmod(path): the path may be a symlink renamed over our socket. */
		if (l->us.created && from->cfg->mode != l->cfg->mode &&
		    sock_unix_chmod_ours(&l->us, l->cfg->mode, err, sizeof err) < 0)
			log_warning("pool=%s: cannot apply mode %04o: %s", p->name, (unsigned)l->cfg->mode, err);
	}
}

void pool_rebind(struct pool *p, const struct cfg_pool *cfg, int health_changed)
{
	p->cfg = cfg;
	p->name = cfg->name;
	p->n_up_primary = p->n_up_backup = 0;
	p->may_hand_back = cfg->balance == CFG_BALANCE_FIRST;
	for (size_t i = 0; i < p->n_backends; i++) {
		struct backend *be = &p->backends[i];
		be->cfg = &cfg->backends[i];
		be->name = cfg->backends[i].name;
		be->wrr_current = 0;
		p->may_hand_back |= be->cfg->backup;
		if (be->state == BACKEND_UP)
			*(be->cfg->backup ? &p->n_up_backup : &p->n_up_primary) += 1;
		if (health_changed) {
			health_destroy(be);
			if (health_init(be) < 0)
				backend_log(be, LOG_ERR, "out of memory for its health check");
			else
				health_start(be);
		}
	}
	for (size_t i = 0; i < cfg->n_listen; i++) { /* extra passed sockets follow: they keep their cfg */
		p->listeners[i].cfg = &cfg->listen[i];
		p->listeners[i].us.path = cfg->listen[i].path; /* the old config is about to be freed */
	}
	pool_janitor_soon(p, ev_now(p->eng->loop));
	pool_dispatch(p);
}

void pool_retire(struct pool *p, struct pool *successor)
{
	struct list_node *pos, *tmp;
	p->retiring = 1;
	/* Clients still waiting go to the pool taking over, or are closed. */
	list_for_each_safe (pos, tmp, &p->waiting) {
		struct session *s = container_of(pos, struct session, node);
		if (!successor) {
			session_close(s, "pool removed by reload");
			continue;
		}
		session_move_to(s, successor);
	}
	pool_stop(p);
}

void pool_start(struct pool *p)
{
	for (size_t i = 0; i < p->n_listeners; i++)
		listener_start(&p->listeners[i]);
	handoff_start(p->handoff);
	for (size_t i = 0; i < p->n_backends; i++)
		health_start(&p->backends[i]);
	pool_janitor_soon(p, ev_now(p->eng->loop) + JANITOR_PERIOD);
	pool_refill(p);
}

static void pool_close_list(struct list *l)
{
	struct list_node *pos, *tmp;
	list_for_each_safe (pos, tmp, l)
		bconn_close(container_of(pos, struct bconn, node));
}

void pool_stop(struct pool *p)
{
	struct list_node *pos, *tmp;
	for (size_t i = 0; i < p->n_listeners; i++)
		listener_close(&p->listeners[i]);
	handoff_close(p->handoff);
	p->handoff = NULL;
	ev_timer_stop(p->eng->loop, &p->refill_timer);
	ev_timer_stop(p->eng->loop, &p->janitor);
	list_for_each_safe (pos, tmp, &p->waiting)
		session_close(container_of(pos, struct session, node), "shutting down");
	for (size_t i = 0; i < p->n_backends; i++) {
		struct backend *be = &p->backends[i];
		health_stop(be);
		pool_close_list(&be->conns[BCONN_IDLE]);
		pool_close_list(&be->conns[BCONN_CONNECTING]);
		pool_close_list(&be->conns[BCONN_RESETTING]);
	}
}

void pool_destroy(struct pool *p)
{
	if (!p)
		return;
	struct list_node *pos, *tmp;
	if (p->eng && p->listeners) {
		pool_stop(p);
		/* Closing a session closes its active connection too. */
		list_for_each_safe (pos, tmp, &p->relaying)
			session_close(container_of(pos, struct session, node), "shutting down");
	}
	if (p->refill_node.next != &p->refill_node)
		list_remove(&p->eng->refill_soon, &p->refill_node);
	for (size_t i = 0; p->backends && i < p->n_backends; i++)
		health_destroy(&p->backends[i]);
	free(p->backends);
	free(p->listeners);
	free(p);
}
