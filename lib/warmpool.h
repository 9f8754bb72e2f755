/*
 * warmpool.h — the warmpool client library (libwarmpool).
 *
 * A program gets a connection to a pool's backend from warmpoold in one
 * call. Two kinds of pool socket exist, and wp_checkout() takes either:
 *
 *   - a pool's handoff socket (`handoff: {listen: ...}` in warmpool.yaml):
 *     warmpoold hands over the warm, liveness-checked backend TCP socket
 *     itself (SCM_RIGHTS), with any bytes the backend sent before the
 *     checkout (a greeting). The program then talks to the backend directly:
 *     no relay, while the connect and handshake were paid ahead of time.
 *   - a pool's proxy socket (`listen:`): a connected stream socket relayed
 *     by warmpoold; its greeting, if any, arrives through the socket.
 *
 * The library tells them apart by socket type (a handoff socket is
 * SOCK_SEQPACKET), so callers need not care. Nothing here blocks longer
 * than the timeout given, keeps global state, or logs. Errors are negative
 * errno values; wp_strerror() describes them.
 */
#ifndef WARMPOOL_H
#define WARMPOOL_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define WP_GREETING_MAX 16384 /* greeting bytes a handoff can carry */

struct wp_lease {
	int fd;                        /* connected socket: the backend itself, or the pool's proxy */
	int direct;                    /* 1 when fd is the handed-off backend socket */
	const unsigned char *greeting; /* bytes the backend sent before the checkout (may be empty) */
	size_t greeting_len;
	/* private */
	char where_[108]; /* the handoff socket it came from, for wp_checkin() */
	unsigned char greeting_buf_[WP_GREETING_MAX];
};

/* Connect to `where` (a pool's handoff or proxy socket path) and fill
 * *lease. Waits at most timeout_ms (< 0: 10 s) for the daemon to hand a
 * connection over. 0, or -errno: -ENOENT/-ECONNREFUSED (no daemon there),
 * -ETIMEDOUT, -EAGAIN (the pool had no connection within its queue_timeout),
 * -EPROTO (an answer this library does not understand). */
int wp_checkout(const char *where, int timeout_ms, struct wp_lease *lease);

/* Done with a connection that may be reused. A handed-off socket goes back
 * to the daemon (over the handoff socket it came from), which returns it to
 * the pool's idle list if the pool has `reuse:` on and every check passes
 * (nothing unread, the reset exchange), and closes it otherwise; a socket
 * that came with a greeting, or a relayed one, is simply closed (the
 * daemon decides about relayed connections itself). The lease's fd is
 * closed here in every case. 0, or -errno if the daemon could not be
 * reached (the connection was closed, not returned). */
int wp_checkin(struct wp_lease *lease);

/* Close the connection without returning it. Accepts a lease whose fd is -1. */
void wp_release(struct wp_lease *lease);

/* A description of a wp_* error (a negative errno). */
const char *wp_strerror(int err);

#ifdef __cplusplus
}
#endif

#endif
