/*
 * daemon/session.c — one local client, from accept to close.
 *
 * A session waits on pool->waiting (FIFO, queue_timeout armed) until the pool
 * hands it an idle connection, then relays bytes both ways (on
 * pool->relaying); closed, it waits in the graveyard for session_reap().
 * Every such move, birth and death included, goes through
 * session_set_state() (session_move()), which logs "old -> new" at debug.
 *
 *   client ──up──▶ backend        backend ──down──▶ client
 *
 * The bytes themselves are moved by relay.c (copy or splice, buffers,
 * half-close); this file decides what the outcome means. A side is read only
 * while its direction has nothing pending, so a slow reader stops the other
 * side (backpressure) and memory per session is bounded.
 * EOF is passed on as shutdown(SHUT_WR) once everything before it is
 * delivered (half-close); the session ends when both directions have passed
 * EOF on, or at the first error, closing both sides. A client that closed
 * its socket outright (not a half-close: it can read no answer) ends the
 * session at once; close() then delivers what was sent and a FIN, as the
 * client's own close() would on a direct connection. The backend connection
 * is then closed, unless reuse: returns it, and the pool refills.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "engine.h"
#include "handoff_proto.h"
#include "log.h"
#include "sock.h"

/* A greeting's buffer becomes the down direction's pending bytes; it is freed
 * once drained, before relay_fill() could want a SESSION_BUF buffer there. */
_Static_assert(BCONN_GREETING_MAX <= SESSION_BUF, "a greeting must fit the relay's buffered path");

static const char *const session_state_names[] = {"waiting", "relaying", "closed", "new"};
_Static_assert(sizeof session_state_names / sizeof *session_state_names == SESSION_NEW + 1, "a name per state");

void session_log(const struct session *s, int prio, const char *fmt, ...)
{
	if (!log_enabled(prio))
		return;
	char ctx[LOG_CTX_MAX];
	snprintf(ctx, sizeof ctx, "pool=%s client=%llu", s->pool->name, (unsigned long long)s->id);
	va_list ap;
	va_start(ap, fmt);
	log_vmsg(prio, ctx, fmt, ap);
	va_end(ap);
}

/* The list a session in state `st` of pool `p` sits on (NULL: none). */
static struct list *session_list(struct pool *p, enum session_state st)
{
	switch (st) {
	case SESSION_WAITING:
		return &p->waiting;
	case SESSION_RELAYING:
		return &p->relaying;
	case SESSION_CLOSED:
		return &p->eng->dead_sessions;
	case SESSION_NEW:
		break;
	}
	return NULL;
}

/* The one transition: leave the list of the current state (in s->pool),
 * join the one of `st` in `to`; `front` puts it at the head (a retried
 * client keeps its place in the queue). */
static void session_move(struct session *s, struct pool *to, enum session_state st, int front)
{
	struct list *from = session_list(s->pool, s->state);
	if (s->state == st && s->pool == to)
		return;
	if (to != s->pool)
		session_log(s, LOG_DEBUG, "%s -> %s, moved to pool %s", session_state_names[s->state],
		            session_state_names[st], to->name);
	else
		session_log(s, LOG_DEBUG, "%s -> %s", session_state_names[s->state], session_state_names[st]);
	if (from)
		list_remove(from, &s->node);
	s->pool = to;
	s->state = st;
	struct list *l = session_list(to, st);
	if (l && front)
		list_push_front(l, &s->node);
	else if (l)
		list_push_back(l, &s->node);
	engine_changed(to->eng);
}

void session_set_state(struct session *s, enum session_state st)
{
	session_move(s, s->pool, st, 0);
}

void session_move_to(struct session *s, struct pool *to)
{
	session_move(s, to, SESSION_WAITING, 0);
}

static void session_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	struct session *s = container_of(w, struct session, timer);
	struct pool *p = s->pool;
	p->stats.clients_timed_out++;
	session_log(s, LOG_WARNING, "no backend connection within queue_timeout (%.3fs), closing client",
	            (double)p->cfg->queue_timeout_ms / 1000.0);
	session_close(s, "queue_timeout");
}

/* A waiting client's socket is readable: has the client hung up? Only an
 * error, or EOF from a peer that closed the socket entirely, say so. A
 * client that sent bytes before its connection came is not gone (they go to
 * the backend once it is paired: a send-and-close client still has its
 * request delivered, as on a direct connection), nor is one that only
 * half-closed (it may still read a greeting). In both cases the watcher
 * stops, as a level-triggered readable socket would wake the loop forever.
 * 1 when the session was closed, else 0. */
static int session_check_gone(struct session *s)
{
	struct pool *p = s->pool;
	struct ev_loop *loop = p->eng->loop;
	switch (sock_peek(s->cfd)) {
	case SOCK_QUIET:
		return 0;
	case SOCK_DATA:
		ev_io_stop(loop, &s->cio);
		return 0;
	case SOCK_EOF:
		if (!relay_peer_gone(s->cfd)) {
			ev_io_stop(loop, &s->cio);
			return 0;
		}
		break;
	case SOCK_ERROR:
		break;
	}
	p->stats.clients_gone++;
	session_log(s, LOG_INFO, "client hung up after waiting %.3fs, dropped from the queue",
	            ev_now(loop) - s->accepted_at);
	session_close(s, "client gone");
	return 1;
}

static void session_waiting_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)loop;
	(void)revents;
	session_check_gone(w->data);
}

int session_gone_now(struct session *s)
{
	struct ev_loop *loop = s->pool->eng->loop;
	if (!ev_is_pending(&s->cio))
		return 0;
	ev_clear_pending(loop, &s->cio);
	return session_check_gone(s);
}

/* While waiting, watch the client for a hang-up (a retried client only if
 * it has sent nothing yet: one that has spoken is not gone, see above). */
static void session_watch_waiting(struct session *s)
{
	struct ev_loop *loop = s->pool->eng->loop;
	ev_io_stop(loop, &s->cio);
	if (s->up.read || s->up.eof)
		return;
	ev_set_cb(&s->cio, session_waiting_cb);
	ev_io_modify(&s->cio, EV_READ);
	ev_io_start(loop, &s->cio);
}

struct session *session_new(struct pool *p, int cfd)
{
	struct ev_loop *loop = p->eng->loop;
	struct session *s = calloc(1, sizeof *s);
	if (!s)
		return NULL;
	s->state = SESSION_NEW;
	s->pool = p;
	s->id = engine_next_id(p->eng);
	s->cfd = cfd;
	s->accepted_at = ev_now(loop);
	ev_io_init(&s->cio, session_waiting_cb, cfd, EV_READ);
	s->cio.data = s;
	ev_timer_init(&s->timer, session_timeout_cb, (double)p->cfg->queue_timeout_ms / 1000.0, 0.);
	ev_timer_start(loop, &s->timer);
	session_set_state(s, SESSION_WAITING);
	session_watch_waiting(s);
	return s;
}

static void session_update_watchers(struct session *s)
{
	struct ev_loop *loop = s->pool->eng->loop;
	int cev = 0, bev = 0;
	if (!relay_pending(&s->up) && !s->up.eof)
		cev |= EV_READ;
	if (relay_pending(&s->down))
		cev |= EV_WRITE;
	if (!relay_pending(&s->down) && !s->down.eof)
		bev |= EV_READ;
	if (relay_pending(&s->up))
		bev |= EV_WRITE;
	engine_io_want(loop, &s->cio, cev);
	engine_io_want(loop, &s->b->io, bev);
	/* Bytes OpenSSL decrypted already (e.g. a record read by the checkout
	 * check) raise no socket event: deliver the wake-up ourselves. */
	if ((bev & EV_READ) && s->b->ssl && tls_has_pending(s->b->ssl))
		ev_feed_event(loop, &s->b->io, EV_READ);
}

/* The pool returns connections of cleanly ended sessions (reuse:). */
static int session_reuses(const struct session *s)
{
	return s->pool->cfg->reuse.enabled;
}

/* Before any byte has crossed either way (and before the client half-closed),
 * a dead backend connection has cost the client nothing: it may be given
 * another one, at most SESSION_RETRIES times. */
static int session_can_retry(const struct session *s)
{
	/* A pool retired by a reload opens no connections: nothing to retry with. */
	return s->up.bytes == 0 && s->down.bytes == 0 && !s->up.eof && s->retries < SESSION_RETRIES &&
	       !s->pool->retiring;
}

/* Put the session back at the head of the queue and bury its connection.
 * Client bytes read but never delivered stay pending for the next one; the
 * dead connection's undelivered greeting is dropped. */
static void session_retry(struct session *s, enum backend_reason reason, int err)
{
	struct pool *p = s->pool;
	struct ev_loop *loop = p->eng->loop;
	struct bconn *b = s->b;
	s->retries++;
	p->stats.clients_retried++;
	bconn_log_for(b, s, LOG_INFO,
	              "connection %s before any byte was exchanged, pairing the client with another (retry %u)",
	              err ? strerror(err) : backend_reason_str(reason), s->retries);
	s->b = NULL;
	ev_io_stop(loop, &s->cio);
	relay_dir_release(p->eng, &s->down);
	memset(&s->down, 0, sizeof s->down);
	session_move(s, p, SESSION_WAITING, 1); /* first in line again: it was served before */
	ev_timer_stop(loop, &s->timer); /* it may be the idle timer */
	ev_set_cb(&s->timer, session_timeout_cb);
	ev_timer_set(&s->timer, (double)p->cfg->queue_timeout_ms / 1000.0, 0.);
	ev_timer_start(loop, &s->timer);
	session_watch_waiting(s);
	bconn_lost(b, reason, err); /* closes it; a client is waiting, so the refill starts now */
	pool_dispatch(p);
}

/* A side failed: which one decides whether the backend is to blame. */
static void session_fail(struct session *s, int backend_side, int err)
{
	if (!backend_side) {
		session_log(s, LOG_DEBUG, "client error: %s", strerror(err));
		session_close(s, "client error");
		return;
	}
	if (session_can_retry(s)) {
		session_retry(s, backend_reason_from_errno(err), err);
		return;
	}
	struct bconn *b = s->b;
	char tls_why[128];
	if (b->ssl && err == ECONNABORTED)
		bconn_log_for(b, s, LOG_INFO, "TLS stream truncated by the backend (no close_notify)");
	else if (b->ssl && err == EPROTO)
		bconn_log_for(b, s, LOG_INFO, "backend TLS error during session: %s",
		              tls_error_text(tls_why, sizeof tls_why));
	else
		bconn_log_for(b, s, LOG_INFO, "backend error during session: %s", strerror(err));
	s->b = NULL;
	session_close(s, "backend error");
	bconn_lost(b, backend_reason_from_errno(err), err);
}

/* A connection that carried an earlier session (reuse:) has nothing to say
 * before this client's first byte reaches it: anything it sends then is a
 * late reply of that session (one that came after the connection was
 * handed out, so the idle check in bconn.c did not see it), and must not
 * reach this client. The connection is closed and counted with the refused
 * reuses; the client, which has lost nothing, is paired with another (or
 * closed when it cannot be). Returns 1 when it did that, else 0. (Once the
 * client has spoken, a late reply is indistinguishable from the answer:
 * the reset exchange, on a protocol that answers in order, is what keeps
 * earlier replies from coming after it.) */
static int session_stray_reply(struct session *s)
{
	struct pool *p = s->pool;
	struct bconn *b = s->b;
	if (bconn_peek(b) != SOCK_DATA)
		return 0; /* nothing, or EOF / an error: the relay handles those */
	p->stats.conns_reuse_refused++;
	bconn_log_for(b, s, LOG_INFO, "a reused connection spoke before the client did "
	                              "(a late reply of its last session?): closed, its bytes never passed on");
	if (session_can_retry(s)) {
		session_retry(s, REASON_BAD_REPLY, 0);
		return 1;
	}
	s->b = NULL;
	session_close(s, "reused connection spoke first");
	bconn_close(b);
	pool_refill_soon(p);
	return 1;
}

/* Before the client's first byte goes to a backend that is known to close
 * connections by itself (TLS: a close_notify; or a backend seen closing idle
 * connections), look once more: a close that arrived since the handout would
 * otherwise cross the request, and then the client could not be re-paired.
 * Returns 1 when the session was re-paired (or closed). */
static int session_backend_left(struct session *s)
{
	struct bconn *b = s->b;
	if (!b->ssl && b->be->idle_close_age <= 0)
		return 0; /* plain TCP to a backend never seen closing idle ones: the checkout check suffices */
	enum sock_peek k = bconn_peek(b);
	if ((k != SOCK_EOF && k != SOCK_ERROR) || !session_can_retry(s))
		return 0;
	session_retry(s, k == SOCK_EOF ? REASON_CLOSED : REASON_RESET, 0);
	return 1;
}

/* Run one direction; on error close the session. 0 if it lives on. */
static int session_flow(struct session *s, struct relay_dir *d, int from_backend)
{
	enum relay_side side;
	struct relay_end client = {s->cfd, NULL}, backend = {s->b->fd, s->b->ssl};
	struct relay_end src = from_backend ? backend : client;
	struct relay_end dst = from_backend ? client : backend;
	const struct relay_dir *other = d == &s->up ? &s->down : &s->up;
	int hold = from_backend ? (session_can_retry(s) ? RELAY_HOLD_IF_EMPTY : RELAY_HOLD_NONE)
	                        : (session_reuses(s) ? RELAY_HOLD_ALWAYS : RELAY_HOLD_NONE);
	uint64_t before = d->bytes;
	if (from_backend && s->b->served && s->up.bytes == 0 && before == 0 && session_stray_reply(s))
		return -1;
	if (!from_backend && before == 0 && session_backend_left(s))
		return -1;
	/* The client going away entirely (not a half-close) ends the session
	 * at once; with reuse its EOF already does. */
	int r = relay_flow(s->pool->eng, d, src, dst, other->shut, hold, !from_backend && hold == RELAY_HOLD_NONE, &side);
	*(from_backend ? &s->pool->stats.bytes_down : &s->pool->stats.bytes_up) += d->bytes - before;
	if (from_backend && before == 0 && d->bytes && s->up.bytes == 0)
		s->b->had_greeting = 1; /* it spoke first: a greeting the next client would miss (reuse) */
	if (r == RELAY_SRC_GONE) {
		session_close(s, "client closed");
		return -1;
	}
	if (r == -ENOMEM) {
		/* bytes were dropped: neither side is to blame, and no retry */
		session_log(s, LOG_ERR, "out of memory buffering the relay, closing the session");
		session_close(s, "out of memory");
		return -1;
	}
	if (r < 0) {
		/* the backend's side is the source going down, the destination going up */
		session_fail(s, (side == RELAY_SIDE_SRC) == from_backend, -r);
		return -1;
	}
	if (hold && d->eof && d->bytes == 0) {
		session_retry(s, REASON_CLOSED, 0);
		return -1;
	}
	return 0;
}

static void session_after_io(struct session *s)
{
	/* reuse: the client is done and nothing is in flight either way: the
	 * connection goes to its reset (or quiet period) instead of closing. */
	if (session_reuses(s) && s->up.eof && !relay_pending(&s->up) && !relay_pending(&s->down)) {
		struct pool *p = s->pool;
		struct bconn *b = s->b;
		if (s->down.eof) { /* the backend closed too: nothing to reuse */
			session_close(s, NULL);
			return;
		}
		wp_histogram_observe(&p->h_session, ev_now(p->eng->loop) - s->started_at);
		s->b = NULL;
		ev_io_stop(p->eng->loop, &b->io);
		session_close(s, "client done");
		bconn_reuse(b);
		return;
	}
	if (s->up.shut && s->down.shut) {
		session_close(s, NULL);
		return;
	}
	session_update_watchers(s);
}

/* A side's readiness: readable moves the direction flowing out of it,
 * writable flushes (and then refills) the direction flowing into it. */
/* Bytes that moved from or to each side: their activity clocks. */
static uint64_t client_moved(const struct session *s)
{
	return s->up.read + s->down.bytes;
}

static uint64_t backend_moved(const struct session *s)
{
	return s->down.read + s->up.bytes;
}

static void session_io(struct session *s, int revents, int backend_side)
{
	struct relay_dir *out = backend_side ? &s->down : &s->up;
	struct relay_dir *in = backend_side ? &s->up : &s->down;
	uint64_t c0 = client_moved(s), b0 = backend_moved(s);
	ev_tstamp now = ev_now(s->pool->eng->loop);
	/* Read before the flows: they may close the session. */
	if ((revents & EV_READ) && session_flow(s, out, backend_side) < 0)
		return;
	if ((revents & EV_WRITE) && session_flow(s, in, !backend_side) < 0)
		return;
	if (client_moved(s) != c0)
		s->client_active = now;
	if (backend_moved(s) != b0)
		s->backend_active = now;
	session_after_io(s);
}

/* client_idle_timeout / server_idle_timeout: one lazy timer per session (the
 * libev manual's "be smart about timeouts"): I/O only records when a side
 * last moved a byte; the timer checks and re-arms for the nearer deadline. */
static ev_tstamp session_idle_deadline(const struct session *s, const char **which)
{
	const struct cfg_pool *c = s->pool->cfg;
	ev_tstamp t = 0;
	*which = NULL;
	if (c->client_idle_timeout_ms) {
		t = s->client_active + (double)c->client_idle_timeout_ms / 1000.0;
		*which = "client_idle_timeout";
	}
	if (c->server_idle_timeout_ms) {
		ev_tstamp u = s->backend_active + (double)c->server_idle_timeout_ms / 1000.0;
		if (!*which || u < t) {
			t = u;
			*which = "server_idle_timeout";
		}
	}
	return t;
}

static void session_idle_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)revents;
	struct session *s = container_of(w, struct session, timer);
	const char *which;
	ev_tstamp at = session_idle_deadline(s, &which);
	if (!which)
		return;
	if (ev_now(loop) >= at) {
		struct pool *p = s->pool;
		p->stats.sessions_idle_closed++;
		session_log(s, LOG_INFO, "nothing moved on the %s side for %s, closing the session",
		            strcmp(which, "client_idle_timeout") == 0 ? "client" : "backend", which);
		session_close(s, which);
		return;
	}
	ev_timer_set(w, at - ev_now(loop), 0.);
	ev_timer_start(loop, w);
}

static void session_idle_start(struct session *s)
{
	struct ev_loop *loop = s->pool->eng->loop;
	const char *which;
	s->client_active = s->backend_active = ev_now(loop);
	ev_tstamp at = session_idle_deadline(s, &which);
	if (!which)
		return;
	ev_timer_stop(loop, &s->timer);
	ev_set_cb(&s->timer, session_idle_cb);
	ev_timer_set(&s->timer, at - ev_now(loop), 0.);
	ev_timer_start(loop, &s->timer);
}

static void session_client_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)loop;
	session_io(w->data, revents, 0);
}

static void session_backend_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)loop;
	session_io(w->data, revents, 1);
}

/* A handoff client: send it the backend socket itself and the greeting,
 * then let go of both (lib/handoff_proto.h). The message is small and the
 * socket fresh, so it goes out at once or not at all: if it cannot be sent
 * (the client left), the connection stays idle for the next client. */
static void session_hand_off(struct session *s, struct bconn *b)
{
	struct pool *p = s->pool;
	struct wp_handoff_hdr hdr = {.magic = WP_HANDOFF_MAGIC, .status = WP_HANDOFF_OK,
	                             .greeting_len = htonl(b->greeting_len)};
	union wp_fd_cmsg ctl = {0};
	struct iovec iov[2] = {{&hdr, sizeof hdr}, {b->greeting, b->greeting_len}};
	struct msghdr msg = {.msg_iov = iov, .msg_iovlen = b->greeting_len ? 2 : 1};
	wp_msg_attach_fd(&msg, &ctl, b->fd);
	/* Stop watching it and drop the kernel's registration before it leaves:
	 * once the client holds a copy, closing ours would not remove it from
	 * epoll (see handoff_forget_fd); and not after the send, when the client
	 * may already be using it. */
	ev_io_stop(p->eng->loop, &b->io);
	handoff_forget_fd(p->eng->loop, b->fd);
	ssize_t n;
	do
		n = sendmsg(s->cfd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		int err = errno;
		/* Still ours: watch it again. ev_io_set tells libev to register the
		 * fd anew (its cached state says it is in the set already). */
		ev_io_set(&b->io, b->fd, EV_READ);
		ev_io_start(p->eng->loop, &b->io);
		session_log(s, LOG_INFO, "handoff failed: %s; the connection stays idle", strerror(err));
		session_close(s, "handoff failed");
		return;
	}
	p->stats.handoffs++;
	p->stats.handouts++;
	p->stats.clients_served++;
	wp_histogram_observe(&p->h_wait, ev_now(p->eng->loop) - s->accepted_at);
	/* The lease: this socket, and only it, may come back (checkin), once,
	 * from a client of this uid. Without one it cannot come back. */
	uid_t uid;
	int leased = p->handoff && pool_session_uid(s, &uid) == 0 &&
	             handoff_lease(p->handoff, b->fd, uid, b->opened_at) == 0;
	bconn_log_for(b, s, LOG_DEBUG, "handed off (%u greeting bytes)%s", b->greeting_len,
	              leased ? "" : ", no lease: it cannot be checked in");
	bconn_set_state(b, BCONN_ACTIVE);
	bconn_close(b); /* our copy: the client holds the socket now */
	session_close(s, "handed off");
	pool_refill_soon(p);
}

void session_start(struct session *s, struct bconn *b)
{
	struct pool *p = s->pool;
	struct ev_loop *loop = p->eng->loop;
	if (s->handoff) {
		session_hand_off(s, b);
		return;
	}
	ev_timer_stop(loop, &s->timer);
	ev_io_stop(loop, &s->cio); /* the hang-up watch: the relay's watcher from here */
	ev_clear_pending(loop, &s->cio);
	session_set_state(s, SESSION_RELAYING);

	/* The connection's greeting goes out first: its buffer becomes the
	 * down direction's pending bytes, no copy. */
	if (b->greeting_len) {
		s->down.buf = b->greeting;
		s->down.len = b->greeting_len;
		b->greeting = NULL;
		b->greeting_len = 0;
	}
	free(b->greeting);
	b->greeting = NULL;

	ev_io_stop(loop, &b->io);
	ev_set_cb(&b->io, session_backend_cb);
	ev_io_modify(&b->io, 0);
	b->io.data = s;
	ev_set_cb(&s->cio, session_client_cb);
	ev_io_modify(&s->cio, 0);
	s->b = b;
	/* A foreign socket is never spliced (see relay.c). A retry onto one has
	 * no pipe pending: the retry needs up.bytes == 0, and up fills a pipe
	 * only after a full scratch read was entirely delivered. */
	s->up.copy = s->down.copy = b->foreign || b->ssl; /* TLS bytes pass through OpenSSL */
	bconn_set_state(b, BCONN_ACTIVE);
	p->stats.handouts++;
	if (!s->retries) {
		p->stats.clients_served++;
		s->started_at = ev_now(loop);
		wp_histogram_observe(&p->h_wait, s->started_at - s->accepted_at);
	}
	bconn_log_for(b, s, LOG_DEBUG, "session start (waited %.3fs)", ev_now(loop) - s->accepted_at);
	/* The greeting, optimistically: a new client socket almost always has
	 * room, which saves arming (and then disarming) write interest. */
	if (s->down.len) {
		uint64_t before = s->down.bytes;
		int r = relay_flush(p->eng, &s->down, (struct relay_end){s->cfd, NULL});
		p->stats.bytes_down += s->down.bytes - before;
		if (r < 0) {
			session_fail(s, 0, -r);
			return;
		}
	}
	session_idle_start(s);
	session_update_watchers(s);
}

void session_close(struct session *s, const char *why)
{
	struct pool *p = s->pool;
	struct engine *eng = p->eng;
	if (s->state == SESSION_CLOSED)
		return;
	ev_io_stop(eng->loop, &s->cio);
	ev_timer_stop(eng->loop, &s->timer);
	if (s->cfd >= 0) {
		close(s->cfd);
		s->cfd = -1;
	}
	relay_dir_release(eng, &s->up);
	relay_dir_release(eng, &s->down);
	session_set_state(s, SESSION_CLOSED);
	if (s->b) {
		wp_histogram_observe(&p->h_session, ev_now(eng->loop) - s->started_at);
		/* Not session_log(): this line's form (no backend=) is one that
		 * tests and users' scripts match. */
		log_debug("pool=%s conn=%llu client=%llu: session end (%s): %llu bytes up, %llu down",
		          p->name, (unsigned long long)s->b->id, (unsigned long long)s->id,
		          why ? why : "done", (unsigned long long)s->up.bytes,
		          (unsigned long long)s->down.bytes);
		bconn_close(s->b);
		s->b = NULL;
		pool_refill_soon(p);
	}
}

static void session_free(struct session *s)
{
	if (!s)
		return;
	free(s->up.buf); /* released at close already; kept for safety */
	free(s->down.buf);
	free(s);
}

void session_reap(struct engine *eng)
{
	/* closed -> freed: the graveyard is left only here. No line is logged:
	 * at shutdown the pool a session names is freed already. */
	struct list_node *pos;
	while ((pos = list_first(&eng->dead_sessions))) {
		list_remove(&eng->dead_sessions, pos);
		session_free(container_of(pos, struct session, node));
	}
}
