/*
 * daemon/pool.c — a pool: its warm backend connections and its clients.
 *
 * The lifecycle of a backend connection (struct bconn):
 *
 *   pool_refill() ──connect()──▶ CONNECTING ──established──▶ IDLE ──checkout──▶ ACTIVE ──▶ closed
 *                                     │ refused/timeout          │ EOF/RST while idle
 *                                     ▼                          ▼
 *                          backend_attempt_failed()        closed, refilled
 *
 * The pool keeps at least min_idle connections IDLE while nothing is
 * happening, plus one CONNECTING per waiting client, never more than
 * max_connections in all. Idle sockets stay in the loop (EV_READ), so a
 * backend closing one is noticed at once; bytes a backend sends unprompted
 * (a greeting) are kept and delivered first to the client that gets the
 * connection. Checkout takes the connection at the front of the idle list
 * and re-checks it without blocking (MSG_PEEK, SO_ERROR) before handing it
 * out. The front holds the most recent sign of life: a connection whose
 * greeting just arrived moves there, while a freshly established one waits at
 * the back until it has said something (or the ones before it are used).
 *
 * A connection that dies within BCONN_SETTLE of being established counts as
 * a failed attempt: a backend that accepts and resets at once (out of
 * clients, or a balancer with nothing behind it) is backed off like one that
 * refuses. One that lives longer is proven and resets the backend's backoff;
 * when it closes later (a server's idle timeout) it is simply replaced.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "engine.h"
#include "log.h"

static const char *const bconn_state_names[] = {"connecting", "idle", "active", "closed"};

/* ---- pure accounting (unit-tested) ------------------------------------ */

size_t pool_plan_connects(const struct pool_counts *c)
{
	size_t total = c->idle + c->active + c->connecting;
	size_t want = (size_t)c->min_idle + c->waiting;
	size_t have = c->idle + c->connecting;
	if (want <= have || total >= c->max_connections)
		return 0;
	size_t need = want - have;
	size_t room = c->max_connections - total;
	return need < room ? need : room;
}

long pool_pick_backend(const struct backend *bs, size_t n, size_t *cursor, ev_tstamp now)
{
	for (size_t i = 0; i < n; i++) {
		size_t k = (*cursor + i) % n;
		if (backend_can_connect(&bs[k], now)) {
			*cursor = (k + 1) % n;
			return (long)k;
		}
	}
	return -1;
}

static struct pool_counts pool_counts(const struct pool *p)
{
	return (struct pool_counts){
	    .idle = p->conns[BCONN_IDLE].n,
	    .active = p->conns[BCONN_ACTIVE].n,
	    .connecting = p->conns[BCONN_CONNECTING].n,
	    .waiting = p->waiting.n,
	    .min_idle = p->cfg->min_idle,
	    .max_connections = p->cfg->max_connections,
	};
}

/* ---- connection state machine ----------------------------------------- */

void bconn_set_state(struct bconn *b, enum bconn_state st)
{
	struct pool *p = b->pool;
	if (b->state == st)
		return;
	log_debug("pool=%s backend=%s conn=%llu: %s -> %s", p->name, b->be->name, (unsigned long long)b->id,
	          bconn_state_names[b->state], bconn_state_names[st]);
	if (b->state < BCONN_NLISTS)
		list_remove(&p->conns[b->state], &b->node);
	b->state = st;
	if (st < BCONN_NLISTS)
		list_push_back(&p->conns[st], &b->node);
	else
		list_push_back(&p->eng->dead_conns, &b->node);
	engine_changed(p->eng);
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
		close(b->fd);
		b->fd = -1;
	}
	if (!b->proven)
		b->be->n_unproven--;
	bconn_set_state(b, BCONN_CLOSED);
}

void bconn_free(struct bconn *b)
{
	if (!b)
		return;
	free(b->greeting);
	free(b);
}

static void bconn_failed(struct bconn *b, enum backend_reason why, int err)
{
	struct pool *p = b->pool;
	if (p->eng->stopping) { /* shutting down: nothing to retry or report */
		bconn_close(b);
		return;
	}
	backend_attempt_failed(b->be, b->id, b->started_at, why, err);
	bconn_close(b);
	pool_refill(p);
}

void bconn_lost(struct bconn *b, enum backend_reason why, int err)
{
	struct pool *p = b->pool;
	if (!b->proven) {
		bconn_failed(b, why, err);
		return;
	}
	if (b->state == BCONN_IDLE) {
		p->stats.idle_lost++;
		log_debug("pool=%s backend=%s conn=%llu: idle connection %s, replacing", p->name, b->be->name,
		          (unsigned long long)b->id, backend_reason_str(why));
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
	/* "warm" once per start or outage, and only for connections that lived. */
	if (!p->warm && p->cfg->min_idle > 0 && p->conns[BCONN_IDLE].n >= p->cfg->min_idle) {
		p->warm = 1;
		log_info("pool=%s: warm: %zu idle connections", p->name, p->conns[BCONN_IDLE].n);
	}
}

/* Idle: the only expected events are a greeting, EOF or an error. The
 * greeting is kept in an exact-size allocation (a fixed 16 KiB one per
 * connection made glibc grow and trim its heap on every session). */
static void bconn_idle_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)revents;
	struct bconn *b = container_of(w, struct bconn, io);
	unsigned char tmp[BCONN_GREETING_MAX];
	ssize_t n = recv(b->fd, tmp, BCONN_GREETING_MAX - b->greeting_len, 0);
	if (n > 0) {
		unsigned char *g = realloc(b->greeting, b->greeting_len + (size_t)n);
		if (!g) {
			log_error("pool=%s conn=%llu: out of memory for greeting", b->pool->name,
			          (unsigned long long)b->id);
			bconn_lost(b, REASON_OTHER, ENOMEM);
			return;
		}
		memcpy(g + b->greeting_len, tmp, (size_t)n);
		b->greeting = g;
		if (b->greeting_len == 0) {
			/* First sign of life from the backend: hand this one out next. */
			list_remove(&b->pool->conns[BCONN_IDLE], &b->node);
			list_push_front(&b->pool->conns[BCONN_IDLE], &b->node);
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
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	bconn_lost(b, n == 0 ? REASON_CLOSED : backend_reason_from_errno(errno), n == 0 ? 0 : errno);
}

static void bconn_become_idle(struct bconn *b)
{
	struct ev_loop *loop = b->pool->eng->loop;
	ev_io_stop(loop, &b->io);
	ev_set_cb(&b->io, bconn_idle_cb);
	ev_io_set(&b->io, b->fd, EV_READ);
	ev_io_start(loop, &b->io);
	bconn_set_state(b, BCONN_IDLE);
}

static void bconn_established(struct bconn *b)
{
	struct pool *p = b->pool;
	struct ev_loop *loop = p->eng->loop;
	ev_timer_stop(loop, &b->timer);
	p->stats.conns_opened++;
	ev_timer_set(&b->settle, BCONN_SETTLE, 0.);
	ev_timer_start(loop, &b->settle);
	log_debug("pool=%s backend=%s conn=%llu: connected", p->name, b->be->name, (unsigned long long)b->id);
	/* Fresh connections queue at the back (bconn_set_state appends): for a
	 * protocol with a greeting, those whose greeting has already arrived
	 * (moved to the front by bconn_idle_cb) are handed out first, so the
	 * client does not wait for the backend's handshake. */
	bconn_become_idle(b);
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

/* Start one non-blocking connect to `be`. Returns 0, or -1 if no socket could
 * be made (a local problem, not the backend's: it is not backed off). */
static int bconn_connect(struct pool *p, struct backend *be)
{
	struct ev_loop *loop = p->eng->loop;
	struct bconn *b = calloc(1, sizeof *b);
	if (!b) {
		log_error("pool=%s: out of memory for a connection", p->name);
		return -1;
	}
	b->pool = p;
	b->be = be;
	b->id = engine_next_id(p->eng);
	b->fd = socket(be->cfg->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (b->fd < 0) {
		log_error("pool=%s backend=%s: socket: %s", p->name, be->name, strerror(errno));
		free(b);
		return -1;
	}
	int one = 1;
	if (setsockopt(b->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0)
		log_warning("pool=%s backend=%s: TCP_NODELAY: %s", p->name, be->name, strerror(errno));
	ev_io_init(&b->io, bconn_connect_cb, b->fd, EV_WRITE);
	ev_timer_init(&b->timer, bconn_timeout_cb, (double)p->cfg->connect_timeout_ms / 1000.0, 0.);
	ev_timer_init(&b->settle, bconn_settle_cb, 0., 0.);
	be->n_unproven++;
	/* Account for the attempt before connect() so an immediate failure
	 * goes through the same path as a later one. */
	b->state = BCONN_CONNECTING;
	list_push_back(&p->conns[BCONN_CONNECTING], &b->node);
	engine_changed(p->eng);

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

/* ---- checkout ---------------------------------------------------------- */

/* Is this idle connection still usable? Never blocks. Bytes waiting in the
 * socket are fine (more greeting); EOF or an error are not. A pending socket
 * error (SO_ERROR) is what recv() reports first, so one call checks both. */
static int bconn_alive(struct bconn *b)
{
	char c;
	ssize_t n = recv(b->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
	if (n > 0)
		return 1;
	if (n == 0)
		return 0;
	return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
}

void pool_dispatch(struct pool *p)
{
	while (!list_empty(&p->waiting) && !list_empty(&p->conns[BCONN_IDLE])) {
		struct bconn *b = container_of(list_first(&p->conns[BCONN_IDLE]), struct bconn, node);
		if (!bconn_alive(b)) {
			p->stats.stale_at_checkout++;
			log_info("pool=%s backend=%s conn=%llu: dead at checkout, discarded", p->name,
			         b->be->name, (unsigned long long)b->id);
			bconn_close(b);
			continue;
		}
		struct session *s = container_of(list_first(&p->waiting), struct session, node);
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
	if (eng->stopping)
		return;
	struct pool_counts c = pool_counts(p);
	size_t need = pool_plan_connects(&c);
	ev_tstamp now = ev_now(eng->loop);
	while (need > 0) {
		long k = pool_pick_backend(p->backends, p->n_backends, &p->rr, now);
		if (k < 0)
			break;
		if (bconn_connect(p, &p->backends[k]) < 0)
			break; /* out of sockets: retried by the timer below */
		c = pool_counts(p);
		need = pool_plan_connects(&c);
	}
	/* Still short? Wake when the earliest backend leaves backoff (or in
	 * 1 s after a local failure such as EMFILE). */
	ev_timer_stop(eng->loop, &p->refill_timer);
	if (need == 0)
		return;
	ev_tstamp wake = now + 1.0;
	for (size_t i = 0; i < p->n_backends; i++) {
		const struct backend *be = &p->backends[i];
		if (be->next_attempt > now && be->next_attempt < wake)
			wake = be->next_attempt;
	}
	ev_timer_set(&p->refill_timer, wake - now, 0.);
	ev_timer_start(eng->loop, &p->refill_timer);
}

void pool_refill_soon(struct pool *p)
{
	if (p->eng->stopping)
		return;
	if (p->waiting.n > p->conns[BCONN_CONNECTING].n) {
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

/* ---- clients ----------------------------------------------------------- */

void pool_client_arrived(struct pool *p, int cfd)
{
	p->stats.clients_accepted++;
	if (p->waiting.n + p->relaying.n >= p->cfg->max_clients) {
		p->stats.clients_refused++;
		log_warning("pool=%s: max_clients (%u) reached, closing new client", p->name,
		            p->cfg->max_clients);
		close(cfd);
		return;
	}
	struct session *s = session_new(p, cfd);
	if (!s) {
		log_error("pool=%s: out of memory for a client", p->name);
		close(cfd);
		return;
	}
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
	for (int i = 0; i < BCONN_NLISTS; i++)
		list_init(&p->conns[i]);
	list_init(&p->waiting);
	list_init(&p->relaying);
	ev_timer_init(&p->refill_timer, pool_refill_timer_cb, 0., 0.);
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
	for (size_t i = 0; i < p->n_listeners; i++)
		if (listener_open(&p->listeners[i], err, errlen) < 0)
			return -1;
	return 0;
}

void pool_start(struct pool *p)
{
	for (size_t i = 0; i < p->n_listeners; i++)
		listener_start(&p->listeners[i]);
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
	ev_timer_stop(p->eng->loop, &p->refill_timer);
	list_for_each_safe (pos, tmp, &p->waiting)
		session_close(container_of(pos, struct session, node), "shutting down");
	pool_close_list(&p->conns[BCONN_IDLE]);
	pool_close_list(&p->conns[BCONN_CONNECTING]);
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
	free(p->backends);
	free(p->listeners);
	free(p);
}
