/*
 * daemon/session.c — one local client, from accept to close.
 *
 * A session waits on pool->waiting (FIFO, queue_timeout armed) until the pool
 * hands it an idle connection, then relays bytes both ways:
 *
 *   client ──up──▶ [buf] ──▶ backend        backend ──down──▶ [buf] ──▶ client
 *
 * Each direction has one fixed buffer. A side is read only while its
 * direction's buffer is empty, so a slow reader stops the other side
 * (backpressure) and memory per session is bounded by 2 × SESSION_BUF.
 * EOF is passed on as shutdown(SHUT_WR) once the buffer has drained
 * (half-close); the session ends when both directions have passed EOF on, or
 * at the first error, closing both sides. The backend connection is then
 * closed, never reused, and the pool refills.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "engine.h"
#include "log.h"

_Static_assert(BCONN_GREETING_MAX <= SESSION_BUF, "a greeting must fit the down buffer");

static void session_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	struct session *s = container_of(w, struct session, timer);
	struct pool *p = s->pool;
	p->stats.clients_timed_out++;
	log_warning("pool=%s client=%llu: no backend connection within queue_timeout (%.3fs), closing client",
	            p->name, (unsigned long long)s->id, (double)p->cfg->queue_timeout_ms / 1000.0);
	session_close(s, "queue_timeout");
}

struct session *session_new(struct pool *p, int cfd)
{
	struct ev_loop *loop = p->eng->loop;
	struct session *s = calloc(1, sizeof *s);
	if (!s)
		return NULL;
	s->pool = p;
	s->id = engine_next_id(p->eng);
	s->cfd = cfd;
	s->state = SESSION_WAITING;
	s->accepted_at = ev_now(loop);
	ev_io_init(&s->cio, NULL, cfd, EV_READ);
	s->cio.data = s;
	ev_timer_init(&s->timer, session_timeout_cb, (double)p->cfg->queue_timeout_ms / 1000.0, 0.);
	ev_timer_start(loop, &s->timer);
	list_push_back(&p->waiting, &s->node);
	engine_changed(p->eng);
	return s;
}

/* Watch exactly `events` on w; never touches an active watcher's fd. */
static void io_want(struct ev_loop *loop, ev_io *w, int events)
{
	int cur = ev_is_active(w) ? (w->events & (EV_READ | EV_WRITE)) : 0;
	if (cur == events)
		return;
	ev_io_stop(loop, w);
	if (events) {
		ev_io_modify(w, events);
		ev_io_start(loop, w);
	}
}

static void session_update_watchers(struct session *s)
{
	struct ev_loop *loop = s->pool->eng->loop;
	int cev = 0, bev = 0;
	if (!s->up.len && !s->up.eof)
		cev |= EV_READ;
	if (s->down.len)
		cev |= EV_WRITE;
	if (!s->down.len && !s->down.eof)
		bev |= EV_READ;
	if (s->up.len)
		bev |= EV_WRITE;
	io_want(loop, &s->cio, cev);
	io_want(loop, &s->b->io, bev);
}

/* Read once from src into an empty direction buffer. 0, or -errno. */
static int relay_read(struct relay_dir *d, int src)
{
	if (d->len || d->eof)
		return 0;
	ssize_t n = recv(src, d->buf, SESSION_BUF, 0);
	if (n > 0) {
		d->off = 0;
		d->len = (uint32_t)n;
		return 0;
	}
	if (n == 0) {
		d->eof = 1;
		return 0;
	}
	return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -errno;
}

/* Write what is pending to dst, then pass EOF on if due. 0, or -errno. */
static int relay_write(struct relay_dir *d, int dst)
{
	while (d->len) {
		ssize_t n = send(dst, d->buf + d->off, d->len, MSG_NOSIGNAL);
		if (n > 0) {
			d->off += (uint32_t)n;
			d->len -= (uint32_t)n;
			d->bytes += (uint64_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		return n < 0 ? -errno : -EIO;
	}
	if (d->eof && !d->shut) {
		d->shut = 1;
		if (shutdown(dst, SHUT_WR) < 0 && errno != ENOTCONN)
			return -errno;
	}
	return 0;
}

/* A side failed: which one decides whether the backend is to blame. */
static void session_fail(struct session *s, int backend_side, int err)
{
	struct pool *p = s->pool;
	if (!backend_side) {
		log_debug("pool=%s client=%llu: client error: %s", p->name, (unsigned long long)s->id,
		          strerror(err));
		session_close(s, "client error");
		return;
	}
	struct bconn *b = s->b;
	log_info("pool=%s backend=%s conn=%llu client=%llu: backend error during session: %s", p->name,
	         b->be->name, (unsigned long long)b->id, (unsigned long long)s->id, strerror(err));
	s->b = NULL;
	session_close(s, "backend error");
	bconn_lost(b, err == ECONNRESET ? REASON_RESET : REASON_OTHER, err);
}

static void session_after_io(struct session *s)
{
	if (s->up.shut && s->down.shut) {
		session_close(s, NULL);
		return;
	}
	session_update_watchers(s);
}

static void session_client_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)loop;
	struct session *s = w->data;
	int cfd = s->cfd, bfd = s->b->fd, r;
	if (revents & EV_READ) {
		if ((r = relay_read(&s->up, cfd)) < 0)
			return session_fail(s, 0, -r);
		if ((r = relay_write(&s->up, bfd)) < 0) /* optimistic: usually room */
			return session_fail(s, 1, -r);
	}
	if (revents & EV_WRITE) {
		if ((r = relay_write(&s->down, cfd)) < 0)
			return session_fail(s, 0, -r);
	}
	session_after_io(s);
}

static void session_backend_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)loop;
	struct session *s = w->data;
	int cfd = s->cfd, bfd = s->b->fd, r;
	if (revents & EV_READ) {
		if ((r = relay_read(&s->down, bfd)) < 0)
			return session_fail(s, 1, -r);
		if ((r = relay_write(&s->down, cfd)) < 0)
			return session_fail(s, 0, -r);
	}
	if (revents & EV_WRITE) {
		if ((r = relay_write(&s->up, bfd)) < 0)
			return session_fail(s, 1, -r);
	}
	session_after_io(s);
}

void session_start(struct session *s, struct bconn *b)
{
	struct pool *p = s->pool;
	struct ev_loop *loop = p->eng->loop;
	unsigned char *bufs = malloc(2 * SESSION_BUF);
	if (!bufs) {
		log_error("pool=%s client=%llu: out of memory for relay buffers", p->name,
		          (unsigned long long)s->id);
		session_close(s, "out of memory");
		return;
	}
	ev_timer_stop(loop, &s->timer);
	list_remove(&p->waiting, &s->node);
	list_push_back(&p->relaying, &s->node);
	s->state = SESSION_RELAYING;
	s->up.buf = bufs;
	s->down.buf = bufs + SESSION_BUF;

	/* The connection's greeting goes out first. */
	if (b->greeting_len) {
		memcpy(s->down.buf, b->greeting, b->greeting_len);
		s->down.len = b->greeting_len;
	}
	free(b->greeting);
	b->greeting = NULL;
	b->greeting_len = 0;

	ev_io_stop(loop, &b->io);
	ev_set_cb(&b->io, session_backend_cb);
	ev_io_modify(&b->io, 0);
	b->io.data = s;
	ev_set_cb(&s->cio, session_client_cb);
	ev_io_modify(&s->cio, 0);
	s->b = b;
	bconn_set_state(b, BCONN_ACTIVE);
	p->stats.clients_served++;
	log_debug("pool=%s backend=%s conn=%llu client=%llu: session start (waited %.3fs)", p->name, b->be->name,
	          (unsigned long long)b->id, (unsigned long long)s->id, ev_now(loop) - s->accepted_at);
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
	list_remove(s->state == SESSION_WAITING ? &p->waiting : &p->relaying, &s->node);
	s->state = SESSION_CLOSED;
	list_push_back(&eng->dead_sessions, &s->node);
	if (s->b) {
		log_debug("pool=%s conn=%llu client=%llu: session end (%s): %llu bytes up, %llu down", p->name,
		          (unsigned long long)s->b->id, (unsigned long long)s->id, why ? why : "done",
		          (unsigned long long)s->up.bytes, (unsigned long long)s->down.bytes);
		bconn_close(s->b);
		s->b = NULL;
		pool_refill(p);
	}
	engine_changed(eng);
}

void session_free(struct session *s)
{
	if (!s)
		return;
	free(s->up.buf); /* one allocation for both directions */
	free(s);
}
