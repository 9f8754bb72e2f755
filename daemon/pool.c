/*
 * daemon/pool.c — a pool: its warm backend connections and its clients.
 *
 * The pool keeps at least min_idle connections IDLE while nothing is
 * happening, plus one CONNECTING per waiting client, never more than
 * max_connections in all (refill). Each backend holds its own lists of
 * connections (bconn.c drives each connection through its states); which
 * backend is picked for a connect or a handout is balance.c's pure policy,
 * and one janitor timer per pool (janitor.c) does the lifetimes, idle sweeps
 * and hand-back. This file holds what ties them together: checkout
 * (pool_dispatch: a waiting client gets an idle connection), checkin of a
 * foreign socket, the refill, a backend's availability changes, client
 * arrival, and the pool's lifecycle across start, reload and stop.
 * Checkout takes the connection at the front of the idle list and re-checks
 * it without blocking (MSG_PEEK, SO_ERROR) before handing it out.
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
#include "upgrade.h"

int pool_same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return 0;
	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
		return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	if (a->ss_family == AF_INET6) {
		const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
		return x->sin6_port == y->sin6_port && !memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr) &&
		       x->sin6_scope_id == y->sin6_scope_id;
	}
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
		if (!p->backends[i]->gone && pool_same_addr(&sa, &p->backends[i]->addr))
			be = p->backends[i];
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
	switch (bconn_peek(b)) {
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
		struct backend *be = p->backends[i];
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
		if (session_gone_now(s))
			continue; /* hung up in this loop iteration: no connection spent on it */
		long k = pool_pick_handout_for(p, s);
		if (k < 0) {
			/* One per call: the refill below opens its replacement, whose
			 * arrival dispatches again (and closes another if still needed). */
			pool_close_foreign_for(p, s);
			break;
		}
		struct backend *be = p->backends[k];
		struct bconn *b = pool_conn_for(be, s);
		if (!bconn_alive(b)) {
			p->stats.stale_at_checkout++;
			bconn_log(b, LOG_INFO, "dead at checkout, discarded");
			bconn_close(b);
			continue;
		}
		if (bconn_near_backend_close(b, ev_now(p->eng->loop))) {
			p->stats.stale_at_checkout++;
			bconn_log(b, LOG_DEBUG, "idle %.3fs, near the backend's own idle close: replaced, not handed out",
			          ev_now(p->eng->loop) - b->idle_since);
			bconn_close(b);
			continue;
		}
		p->last_handout = ev_now(p->eng->loop);
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

/* The counts a refill plans from: while an upgrade hands this process's
 * warm connections to its successor, no floor (the successor has it), only
 * the clients waiting here. */
static struct pool_counts pool_refill_counts(const struct pool *p)
{
	struct pool_counts c = pool_counts(p);
	if (upgrade_keeps_no_floor())
		c.min_idle = 0;
	return c;
}

/* The pool is at max_connections and the down backend `be` (no active
 * check) is due a probe: close one idle connection to make room, and say
 * whether one was closed. Without this the probe waits for a slot that may
 * never free: the floor held on other backends (min_idle = max_connections),
 * or the probe before it, proven and idle on `be` while it is still down
 * (max_connections below rise). `be`'s own go first: they serve no client
 * until it is up, and they have counted toward rise already; else the oldest
 * idle connection of the backend holding the most, whose floor the refill
 * restores once the probe is done. Active sessions are never touched. */
static int pool_make_room_for_probe(struct pool *p, struct backend *be)
{
	struct backend *from = be;
	for (size_t i = 0; !be->conns[BCONN_IDLE].n && i < p->n_backends; i++)
		if (p->backends[i]->conns[BCONN_IDLE].n > from->conns[BCONN_IDLE].n)
			from = p->backends[i];
	if (!from->conns[BCONN_IDLE].n)
		return 0;
	/* The idle list's back: the least recent sign of life. */
	struct bconn *b = container_of(from->conns[BCONN_IDLE].head.prev, struct bconn, node);
	char ctx[LOG_CTX_MAX];
	backend_ctx(be, ctx, sizeof ctx);
	bconn_log(b, from == be ? LOG_DEBUG : LOG_INFO, "closed: max_connections (%u) reached, room for a probe (%s)",
	          p->cfg->max_connections, ctx);
	bconn_close(b);
	return 1;
}

void pool_refill(struct pool *p)
{
	struct engine *eng = p->eng;
	if (eng->stopping || p->retiring)
		return;
	struct pool_counts c = pool_refill_counts(p);
	size_t need = pool_plan_connects(&c);
	ev_tstamp now = ev_now(eng->loop);
	ev_tstamp lull = need ? pool_refill_after(p, &c, now) : 0;
	if (lull)
		need = 0;
	int local_failure = 0;
	while (need > 0) {
		long k = pool_pick_connect(p, now);
		if (k < 0)
			break;
		if (bconn_connect(p, p->backends[k]) < 0) {
			local_failure = 1; /* out of sockets: retried by the timer below */
			break;
		}
		c = pool_refill_counts(p);
		need = pool_plan_connects(&c);
	}
	/* Failing backends (down, or up with failures counted) with no active
	 * check are probed by the pool itself, one connection at a time, when
	 * their backoff allows, wanted or not: the floor may be full elsewhere,
	 * and they must still come back (or reach `fall`). A down one at
	 * max_connections gets room (pool_make_room_for_probe). */
	int probing = 0;
	for (size_t i = 0; i < p->n_backends && !local_failure; i++) {
		struct backend *be = p->backends[i];
		int failing = be->state == BACKEND_DOWN || (backend_available(be->state) && be->connect_failures > 0);
		if (!failing || p->cfg->health.type != CFG_CHECK_NONE || be->n_unproven || be->dns_down || be->gone)
			continue;
		probing = 1;
		if (now < be->next_attempt)
			continue;
		c = pool_counts(p);
		if (c.idle + c.active + c.connecting + c.other >= p->cfg->max_connections &&
		    (be->state != BACKEND_DOWN || !pool_make_room_for_probe(p, be)))
			continue; /* up with failures: it serves meanwhile; else no idle one: the timer retries */
		if (bconn_connect(p, be) < 0)
			local_failure = 1;
	}
	/* Still short, or a probe to schedule? Wake when the earliest backend
	 * leaves backoff (or in 1 s after a local failure such as EMFILE). */
	ev_timer_stop(eng->loop, &p->refill_timer);
	if (need == 0 && !probing && !lull)
		return;
	ev_tstamp wake = lull ? lull : now + 1.0;
	for (size_t i = 0; i < p->n_backends && !local_failure; i++) {
		const struct backend *be = p->backends[i];
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
	if (backend_available(old) && !backend_available(be->state)) {
		size_t n = pool_close_idle(be);
		if (n)
			backend_log(be, LOG_INFO, "closed %zu idle connection%s", n, n == 1 ? "" : "s");
		if (!be->cfg->backup && p->n_up_primary == 0 && p->n_up_backup > 0)
			log_warning("pool=%s: no primary backend up, using %u backup(s)", p->name,
			            p->n_up_backup);
	} else if (!backend_available(old) && be->state == BACKEND_UP && !be->cfg->backup && p->n_up_primary == 1 &&
	           p->n_up_backup > 0) {
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
		janitor_soon(p, ev_now(p->eng->loop));
	pool_dispatch(p); /* new candidates for waiting clients; refills */
}

size_t pool_backend_admin(struct backend *be, enum backend_state st, int kill)
{
	size_t killed = 0;
	if (st == BACKEND_UP) {
		/* Enabled again: health starts from scratch, down until `rise`
		 * successes (checks resume; with none, the pool's probes tell), as
		 * any down backend comes back: taking it as up at once would move
		 * traffic off a backup to a backend nothing has proved (it may have
		 * been disabled for being dead). Up, down or unknown: no change. */
		if (be->state != BACKEND_DRAINING && be->state != BACKEND_DISABLED)
			return 0;
		be->health_fails = be->health_rises = 0;
		be->last_error[0] = '\0';
		be->error_at = 0;
		be->next_attempt = 0; /* the admin asked: the first probe need not wait out old backoff */
		int was_disabled = be->state == BACKEND_DISABLED;
		backend_set_state(be, BACKEND_DOWN, "enabled by admin, up after rise successes");
		if (was_disabled)
			health_start(be);
		pool_refill_soon(be->pool); /* without a check, the pool's probe starts it */
		return 0;
	}
	backend_set_state(be, st, st == BACKEND_DRAINING ? "drained by admin" : "disabled by admin");
	if (kill)
		killed = pool_kill_sessions(be, "backend disabled by admin (--kill)");
	return killed;
}

size_t pool_kill_sessions(struct backend *be, const char *why)
{
	size_t killed = 0;
	struct list_node *pos, *tmp;
	list_for_each_safe (pos, tmp, &be->conns[BCONN_ACTIVE]) {
		struct bconn *b = container_of(pos, struct bconn, node);
		session_close(b->io.data, why);
		killed++;
	}
	backend_log(be, LOG_NOTICE, "%zu session%s closed by admin", killed, killed == 1 ? "" : "s");
	return killed;
}

/* ---- clients ----------------------------------------------------------- */

/* A client of a listener (`handoff` 0) or of the handoff socket (1). */
static void pool_client_arrived_as(struct pool *p, int cfd, int handoff)
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

void pool_client_arrived(struct pool *p, int cfd)
{
	pool_client_arrived_as(p, cfd, 0);
}

/* The handoff socket's on_client: a checkout request. */
static void pool_handoff_arrived(struct pool *p, int cfd)
{
	pool_client_arrived_as(p, cfd, 1);
}

/* ---- backends: made at load (IP literals) or by answers (names) -------- */

/* Renumber the slots from `from` on (after an insert or a removal). */
static void pool_renumber(struct pool *p, size_t from)
{
	for (size_t i = from; i < p->n_backends; i++)
		p->backends[i]->slot = i;
}

/* The array keeps config order (target), then answer order within a name:
 * `balance: first` walks it. Room for every literal, DNS_MAX_ADDRS per name
 * and the departed ones still draining is made as needed. */
static int pool_insert_backend(struct pool *p, struct backend *be)
{
	if (p->n_backends == p->cap_backends) {
		size_t cap = p->cap_backends ? 2 * p->cap_backends : 8;
		struct backend **v = realloc(p->backends, cap * sizeof *v);
		if (!v)
			return -1;
		p->backends = v;
		p->cap_backends = cap;
	}
	size_t at = p->n_backends;
	while (at > 0 && p->backends[at - 1]->target > be->target)
		at--;
	memmove(&p->backends[at + 1], &p->backends[at], (p->n_backends - at) * sizeof *p->backends);
	p->backends[at] = be;
	p->n_backends++;
	pool_renumber(p, at);
	return 0;
}

static void pool_backend_free(struct backend *be)
{
	if (!be)
		return;
	health_destroy(be);
	tls_backend_forget(be);
	free(be);
}

struct backend *pool_backend_add(struct pool *p, size_t target, struct dns_name *n, const struct sockaddr_storage *sa,
                                 socklen_t len)
{
	const struct cfg_backend *c = &p->cfg->backends[target];
	struct backend *be = calloc(1, sizeof *be);
	if (!be)
		return NULL;
	/* Bounds in seconds: a loopback handshake (~1 ms) to connect_timeout's range. */
	static const double hs_bounds[] = {0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5};
	if (wp_histogram_init(&be->tls.h_handshake, hs_bounds, sizeof hs_bounds / sizeof *hs_bounds) < 0) {
		free(be);
		return NULL;
	}
	be->pool = p;
	be->on_change = pool_backend_changed;
	be->cfg = c;
	be->target = target;
	be->dns = n;
	memcpy(&be->addr, sa, len);
	be->addrlen = len;
	if (n) {
		if (wp_addr_format((const struct sockaddr *)sa, be->addr_name, sizeof be->addr_name) < 0)
			snprintf(be->addr_name, sizeof be->addr_name, "?");
		be->name = be->addr_name;
	} else {
		be->name = c->name;
	}
	be->state = BACKEND_UNKNOWN; /* until a check or a connection proves it */
	be->changed_at = ev_now(p->eng->loop);
	for (int k = 0; k < BCONN_NLISTS; k++)
		list_init(&be->conns[k]);
	be->hc.fd = -1;
	if (health_init(be) < 0 || pool_insert_backend(p, be) < 0) {
		pool_backend_free(be);
		return NULL;
	}
	*(c->backup ? &p->n_up_backup : &p->n_up_primary) += 1;
	p->may_hand_back |= c->backup || p->cfg->balance == CFG_BALANCE_FIRST;
	return be;
}

void pool_backend_depart(struct backend *be, const char *why)
{
	struct pool *p = be->pool;
	size_t idle = be->conns[BCONN_IDLE].n, active = be->conns[BCONN_ACTIVE].n;
	be->gone = 1;
	health_stop(be);
	/* Draining: no handouts and no new connections; leaving `up` closes
	 * the idle ones (pool_backend_changed), the rest are closed here;
	 * active sessions run to their end, then pool_reap_gone forgets it. */
	backend_set_state(be, BACKEND_DRAINING, why);
	pool_close_idle(be);
	static const enum bconn_state other[] = {BCONN_CONNECTING, BCONN_RESETTING};
	for (size_t k = 0; k < sizeof other / sizeof *other; k++) {
		struct list_node *pos, *tmp;
		list_for_each_safe (pos, tmp, &be->conns[other[k]])
			bconn_close(container_of(pos, struct bconn, node));
	}
	backend_log(be, LOG_INFO, "%s: %zu idle closed, %zu active session(s) finish", why, idle, active);
	p->has_gone = 1;
}

void pool_backend_return(struct backend *be)
{
	be->gone = 0;
	be->health_fails = be->health_rises = 0;
	be->connect_failures = 0;
	be->next_attempt = 0;
	backend_set_state(be, BACKEND_UNKNOWN, "back in the name's answer");
	health_stop(be); /* a check still in flight from before is dropped, not re-initialised under libev */
	health_start(be);
}

void pool_reap_gone(struct pool *p)
{
	if (!p->has_gone)
		return;
	p->has_gone = 0;
	for (size_t i = 0; i < p->n_backends;) {
		struct backend *be = p->backends[i];
		size_t n = 0;
		for (int k = 0; k < BCONN_NLISTS; k++)
			n += be->conns[k].n;
		if (!be->gone || n) {
			p->has_gone |= be->gone;
			i++;
			continue;
		}
		backend_log(be, LOG_DEBUG, "its last connection ended: forgotten");
		memmove(&p->backends[i], &p->backends[i + 1], (p->n_backends - i - 1) * sizeof *p->backends);
		p->n_backends--;
		pool_renumber(p, i);
		if (p->rr >= p->n_backends)
			p->rr = 0;
		pool_backend_free(be);
		engine_changed(p->eng);
	}
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
	ev_timer_init(&p->janitor, janitor_cb, 0., 0.);
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
	p->listeners = calloc(cfg->n_listen, sizeof *p->listeners);
	p->names = calloc(cfg->n_backends ? cfg->n_backends : 1, sizeof *p->names);
	if (!p->listeners || !p->names) {
		pool_destroy(p);
		return NULL;
	}
	p->may_hand_back = cfg->balance == CFG_BALANCE_FIRST;
	tls_ctx_prepare(cfg->tls.ctx);
	for (size_t i = 0; i < cfg->n_backends; i++) {
		const struct cfg_backend *c = &cfg->backends[i];
		char err[160];
		if (c->is_name) {
			/* Its backends come with its answers (dns.c -> pool_dns_apply). */
			p->names[p->n_names] = dns_name_new(p, i, err, sizeof err);
			if (!p->names[p->n_names]) {
				log_error("pool=%s name=%s: dns: %s", cfg->name, c->name, err);
				pool_destroy(p);
				return NULL;
			}
			p->n_names++;
			p->may_hand_back |= c->backup;
		} else if (!pool_backend_add(p, i, NULL, &c->addr, c->addrlen)) {
			pool_destroy(p);
			return NULL;
		}
	}
	p->n_listeners = cfg->n_listen;
	for (size_t i = 0; i < cfg->n_listen; i++) {
		p->listeners[i].pool = p;
		p->listeners[i].on_accept = pool_client_arrived;
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
	    !(p->handoff = handoff_open(p, &p->cfg->handoff, pool_handoff_arrived, pool_checkin, err, errlen)))
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

/* Did a reload change how the pool's TLS connections are made (a setting, or
 * a file's contents: the digest covers both)? */
static int pool_tls_changed(const struct cfg_tls *old, const struct cfg_tls *cur)
{
	return old->enabled != cur->enabled ||
	       (cur->enabled && memcmp(old->digest, cur->digest, sizeof cur->digest) != 0);
}

void pool_rebind(struct pool *p, const struct cfg_pool *cfg, int health_changed)
{
	if (pool_tls_changed(&p->cfg->tls, &cfg->tls)) {
		/* New connections use the new settings; warm ones made with the old
		 * are replaced by the janitor one at a time, active ones at the end
		 * of their session (bconn_reuse). Sessions cached under the old
		 * settings (another CA, another client certificate) are dropped:
		 * resuming one would skip the new verification. */
		p->tls_gen++;
		for (size_t i = 0; i < p->n_backends; i++)
			tls_backend_forget(p->backends[i]);
		log_info("pool=%s: TLS settings changed: warm connections are replaced gradually", cfg->name);
	}
	tls_ctx_prepare(cfg->tls.ctx);
	p->cfg = cfg;
	p->name = cfg->name;
	p->n_up_primary = p->n_up_backup = 0;
	p->may_hand_back = cfg->balance == CFG_BALANCE_FIRST;
	for (size_t i = 0; i < p->n_names; i++)
		dns_name_rebind(p->names[i], &cfg->backends[p->names[i]->target], p->names[i]->target);
	for (size_t i = 0; i < p->n_backends; i++) {
		struct backend *be = p->backends[i];
		be->cfg = &cfg->backends[be->target];
		if (!be->dns)
			be->name = be->cfg->name;
		be->wrr_current = 0;
		p->may_hand_back |= be->cfg->backup;
		if (backend_available(be->state))
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
	janitor_soon(p, ev_now(p->eng->loop));
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

void pool_seed_names(struct pool *p, const struct pool *old)
{
	for (size_t i = 0; i < p->n_names; i++)
		for (size_t k = 0; k < old->n_names; k++)
			if (strcmp(dns_name_str(p->names[i]), dns_name_str(old->names[k])) == 0) {
				dns_name_seed(p->names[i], old->names[k]);
				break;
			}
}

void pool_start(struct pool *p)
{
	for (size_t i = 0; i < p->n_listeners; i++)
		listener_start(&p->listeners[i]);
	handoff_start(p->handoff);
	for (size_t i = 0; i < p->n_backends; i++)
		health_start(p->backends[i]);
	for (size_t i = 0; i < p->n_names; i++)
		dns_name_start(p->names[i]);
	janitor_start(p);
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
	for (size_t i = 0; i < p->n_names; i++)
		dns_name_stop(p->names[i]);
	list_for_each_safe (pos, tmp, &p->waiting)
		session_close(container_of(pos, struct session, node), "shutting down");
	for (size_t i = 0; i < p->n_backends; i++) {
		struct backend *be = p->backends[i];
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
		pool_backend_free(p->backends[i]);
	free(p->backends);
	for (size_t i = 0; p->names && i < p->n_names; i++)
		dns_name_free(p->names[i]);
	free(p->names);
	free(p->listeners);
	free(p);
}
