/*
 * daemon/handoff.c — a pool's handoff socket: libwarmpool clients get the
 * warm backend socket itself.
 *
 * The socket is SOCK_SEQPACKET (so libwarmpool tells it from a proxy
 * socket by type, and the answer is one message). An accepted client is a
 * session like any other (max_clients, fail_fast, FIFO queue,
 * queue_timeout), marked `handoff`: when the pool pairs it with a
 * liveness-checked idle connection, session_hand_off() sends one message
 * (lib/handoff_proto.h) carrying the backend fd (SCM_RIGHTS) and the
 * greeting bytes read so far, then closes the daemon's copies. The backend
 * sees nothing of it: the TCP connection simply continues in the client.
 * The pool's `allow:` is checked at accept, as on its listen sockets.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "engine.h"
#include "log.h"

struct handoff {
	struct pool *pool;
	struct unix_sock us;
	char path[128]; /* own copy: the file's name outlives a reload's config */
	ev_io io;
	struct peer_gate gate; /* denials by the pool's allow: */
};

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
				pool_client_arrived_as(h->pool, fd, 1);
			continue;
		}
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED)
			log_warning("pool=%s: accept on %s: %s", h->pool->name, h->path, strerror(errno));
		return;
	}
}

struct handoff *handoff_open(struct pool *p, const struct cfg_listen *cfg, char *err, size_t errlen)
{
	struct handoff *h = calloc(1, sizeof *h);
	if (!h) {
		snprintf(err, errlen, "pool %s: out of memory", p->name);
		return NULL;
	}
	h->pool = p;
	snprintf(h->path, sizeof h->path, "%s", cfg->path);
	if (unix_listen_type(h->path, cfg->mode, SOCK_SEQPACKET, &h->us, err, errlen) < 0) {
		free(h);
		return NULL;
	}
	ev_io_init(&h->io, handoff_accept_cb, h->us.fd, EV_READ);
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
	h->pool = to;
}

void handoff_close(struct handoff *h)
{
	if (!h)
		return;
	ev_io_stop(h->pool->eng->loop, &h->io);
	close(h->us.fd);
	h->us.path = h->path;
	unix_unlink_ours(&h->us);
	free(h);
}
