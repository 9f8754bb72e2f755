/*
 * daemon/relay.c — the byte mover: one direction of a session at a time.
 *
 *   client ──up──▶ backend        backend ──down──▶ client
 *
 * Small reads are copied: recv into the engine's one scratch buffer and sent
 * straight on, which costs less than two splices for a request or a reply.
 * A read that fills the scratch (SESSION_BUF) makes its direction bulk: from
 * then on bytes move with splice(2) through a pipe borrowed from the
 * engine's pool only while they are in flight, so they never enter user
 * space. Bytes the destination cannot take yet (and a greeting, read while
 * the connection was idle) wait in a buffer of the direction's own, freed as
 * soon as it drains, so a held, quiet session owns no buffer and no pipe.
 * Every recv/send says MSG_DONTWAIT rather than trusting O_NONBLOCK: a
 * socket that came back through checkin (bconn.foreign) shares its file
 * description, and so its O_NONBLOCK, with whatever copy the client kept,
 * and a client that cleared it would otherwise block the whole loop in
 * recv(). splice(2) has no such per-call flag for the socket side
 * (SPLICE_F_NONBLOCK is only about the pipe; tcp_splice_read and
 * sendpage wait by the file's O_NONBLOCK), so a foreign connection's
 * directions always copy (relay_dir.copy).
 * EOF is passed on as shutdown(SHUT_WR) once everything before it is
 * delivered (half-close), unless the caller holds it back (RELAY_HOLD_*).
 * A side with TLS in user space (relay_end.tls: a tls: pool's backend) is
 * read and written through tls.c and never spliced: its bytes must pass
 * through OpenSSL. Its EOF is a close_notify (tls_read returns 0), and EOF
 * passed on to it is a close_notify sent (TLS 1.3 lets the backend go on
 * sending); a stream cut without close_notify is an error (-ECONNABORTED),
 * never an EOF, so a truncated reply is not taken for a whole one.
 * This file knows sockets, pipes and buffers, not sessions or pools: what a
 * failure means (retry, blame the backend, close) is session.c's business.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "engine.h"
#include "pipes.h"
#include "tls.h"

int relay_pending(const struct relay_dir *d)
{
	return d->len || d->in_pipe;
}

/* Pending bytes still in the engine's scratch buffer get a buffer of their
 * own before relay_flow returns: the next read of any session reuses the
 * scratch. 0, or -ENOMEM. */
static int relay_own(struct relay_dir *d)
{
	if (!d->scratch)
		return 0;
	d->scratch = 0;
	if (!d->len) {
		d->buf = NULL;
		return 0;
	}
	unsigned char *b = malloc(d->len);
	if (!b) {
		d->buf = NULL;
		d->len = 0;
		return -ENOMEM;
	}
	memcpy(b, d->buf + d->off, d->len);
	d->buf = b;
	d->off = 0;
	return 0;
}

/* What a send or splice to the destination that moved nothing (n <= 0)
 * means: 1 try again (EINTR), 0 the destination is full for now, else
 * -errno (-EIO for a 0 that is not EAGAIN). */
static int relay_sent_nothing(ssize_t n)
{
	if (n < 0 && errno == EINTR)
		return 1;
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return 0;
	return n < 0 ? -errno : -EIO;
}

/* send() to a side, through TLS when it has it; the same answers. */
static ssize_t relay_send(struct relay_end dst, const void *buf, size_t len)
{
	if (!dst.tls)
		return send(dst.fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
	ssize_t n = tls_write(dst.tls, buf, len);
	if (n < 0) {
		errno = (int)-n;
		return -1;
	}
	return n;
}

/* Send what is pending in d to dst: the buffer first (it holds older bytes,
 * e.g. the greeting), then the pipe. Buffer and pipe are given back as soon
 * as they are empty. 0, or -errno from dst. */
int relay_flush(struct engine *eng, struct relay_dir *d, struct relay_end dst)
{
	int r;
	while (d->len) {
		ssize_t n = relay_send(dst, d->buf + d->off, d->len);
		if (n > 0) {
			d->off += (uint32_t)n;
			d->len -= (uint32_t)n;
			d->bytes += (uint64_t)n;
		} else if ((r = relay_sent_nothing(n)) <= 0) {
			return r;
		}
	}
	if (d->scratch) {
		d->scratch = 0;
		d->buf = NULL;
	} else if (d->buf) {
		free(d->buf);
		d->buf = NULL;
	}
	/* Never reached for a `copy` direction: relay_fill fills no pipe there. */
	while (d->in_pipe) {
		ssize_t n =
		    splice(d->pipe->rfd, NULL, dst.fd, NULL, d->in_pipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
		if (n > 0) {
			d->in_pipe -= (uint32_t)n;
			d->bytes += (uint64_t)n;
		} else if ((r = relay_sent_nothing(n)) <= 0) {
			return r;
		}
	}
	if (d->pipe) {
		pipes_put(&eng->pipes, d->pipe, 1);
		d->pipe = NULL;
	}
	return 0;
}

/* Read once from src: a bulk direction through a pooled pipe (zero-copy),
 * otherwise (or when no pipe can be had) into the engine's scratch buffer,
 * from which relay_flush sends it on; *cap is the most that one read could
 * have moved. Returns bytes read, 0 at EOF (d->eof set), -EAGAIN when src
 * has nothing, or -errno. */
static ssize_t relay_fill(struct engine *eng, struct relay_dir *d, struct relay_end src, size_t *cap)
{
	struct pipes_pipe *p = d->bulk && !d->copy ? pipes_get(&eng->pipes) : NULL;
	ssize_t n;
	if (p) {
		*cap = p->size;
		do
			n = splice(src.fd, NULL, p->wfd, NULL, p->size, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
		while (n < 0 && errno == EINTR);
		if (n > 0) {
			d->pipe = p;
			d->in_pipe = (uint32_t)n;
			d->read += (uint64_t)n;
			return n;
		}
		pipes_put(&eng->pipes, p, 1);
	} else {
		/* A direction that splices once bulk decides that with SESSION_BUF
		 * reads; one that never splices (TLS, foreign) reads more at once:
		 * fewer sends and wake-ups per byte, the only way it has to save. */
		*cap = d->copy ? sizeof eng->scratch : SESSION_BUF;
		if (src.tls) {
			n = tls_read(src.tls, eng->scratch, *cap);
			if (n < 0) {
				errno = (int)-n;
				n = -1;
			}
		} else {
			do
				n = recv(src.fd, eng->scratch, *cap, MSG_DONTWAIT);
			while (n < 0 && errno == EINTR);
		}
		if (n > 0) {
			d->buf = eng->scratch;
			d->scratch = 1;
			d->off = 0;
			d->len = (uint32_t)n;
			d->read += (uint64_t)n;
			if ((size_t)n >= SESSION_BUF)
				d->bulk = 1;
			return n;
		}
	}
	if (n == 0) {
		d->eof = 1;
		return 0;
	}
	return errno == EWOULDBLOCK ? -EAGAIN : -errno;
}

/* Whether a socket's peer has closed it entirely (POLLHUP: it can neither
 * send nor receive), as opposed to a half-close after which it still reads. */
int relay_peer_gone(int fd)
{
	struct pollfd pfd = {.fd = fd, .events = 0};
	int n;
	do
		n = poll(&pfd, 1, 0);
	while (n < 0 && errno == EINTR);
	return n == 1 && (pfd.revents & POLLHUP);
}

/* Move bytes src -> dst until src is drained, dst blocks, or RELAY_ROUNDS
 * reads (so one busy session cannot starve the loop); then pass EOF on once
 * everything before it is delivered. When the other direction is already
 * done (`last`), the session closes right after this and close() passes the
 * EOF on: both receive queues are drained by then, so it is a clean FIN.
 * With `hold_eof` RELAY_HOLD_IF_EMPTY, an EOF before any byte went this way is kept
 * back (the caller may re-pair the session instead); with RELAY_HOLD_ALWAYS any
 * EOF is (reuse: the backend connection must not be half-closed). With
 * `src_gone`, a source that closed outright instead of half-closing makes
 * it return RELAY_SRC_GONE, with nothing passed on. 0, or -errno with *side
 * set (-ENOMEM: no buffer for bytes the destination could not take). */
static int relay_flow_once(struct engine *eng, struct relay_dir *d, struct relay_end src, struct relay_end dst,
                           int last, int hold_eof, int src_gone, enum relay_side *side)
{
	int r;
	*side = RELAY_SIDE_DST;
	if ((r = relay_flush(eng, d, dst)) < 0)
		return r;
	for (int i = 0; i < RELAY_ROUNDS && !relay_pending(d) && !d->eof; i++) {
		size_t cap;
		ssize_t n = relay_fill(eng, d, src, &cap);
		if (n == -EAGAIN)
			break;
		if (n < 0) {
			*side = RELAY_SIDE_SRC;
			return (int)n;
		}
		if ((r = relay_flush(eng, d, dst)) < 0)
			return r;
		if (n > 0 && (size_t)n < cap / 2 && !(src.tls && tls_has_pending(src.tls)))
			break; /* a short read: src is most likely drained, skip the EAGAIN */
	}
	if (d->eof && !relay_pending(d) && !d->shut && hold_eof != RELAY_HOLD_ALWAYS &&
	    !(hold_eof == RELAY_HOLD_IF_EMPTY && d->bytes == 0)) {
		/* A source that closed outright will read no answer: the session
		 * can end now, which saves the half-close and the wake-ups that
		 * wait for the other side's EOF (close() sends the FIN). */
		if (src_gone && !last && relay_peer_gone(src.fd))
			return RELAY_SRC_GONE;
		d->shut = 1;
		if (!last && dst.tls)
			return tls_close_notify(dst.tls);
		if (!last && shutdown(dst.fd, SHUT_WR) < 0 && errno != ENOTCONN)
			return -errno;
	}
	return 0;
}

int relay_flow(struct engine *eng, struct relay_dir *d, struct relay_end src, struct relay_end dst, int last,
               int hold_eof, int src_gone, enum relay_side *side)
{
	int r = relay_flow_once(eng, d, src, dst, last, hold_eof, src_gone, side);
	/* Bytes the destination did not take stay pending (a retry hands the
	 * client's to the next connection): off the shared scratch first. */
	int o = relay_own(d);
	if (o < 0 && r == 0) {
		*side = RELAY_SIDE_DST;
		r = o;
	}
	return r;
}

void relay_dir_release(struct engine *eng, struct relay_dir *d)
{
	pipes_put(&eng->pipes, d->pipe, d->in_pipe == 0);
	d->pipe = NULL;
	d->in_pipe = 0;
	free(d->buf);
	d->buf = NULL;
	d->len = 0;
}
