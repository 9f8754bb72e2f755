/*
 * daemon/health.c — active health checks, one backend at a time.
 *
 *   WAITING ──timer──▶ CONNECTING ─[tls: HANDSHAKING]─▶ SENDING ──▶ READING ──match──▶ WAITING
 *                          └──────── timeout, refused, reset, TLS, bad reply ──┘
 *
 * Each check opens its own short-lived connection (never one a client may
 * get), sends the request if the type has one and reads until the reply
 * matches, cannot match any more, fills HEALTH_REPLY_MAX, or the check's
 * `timeout` (which covers connect and exchange) expires. In a tls: pool the
 * check connection does the starttls preamble and a verified handshake
 * first (a `connect` check is then a full handshake, and the postgres
 * preset, whose probe is the SSLRequest, is the preamble and handshake
 * themselves); the probe and its reply go through TLS. The outcome goes to
 * backend_health_ok()/backend_health_failed(), which own rise/fall.
 *
 * Scheduling: the first check of each backend starts at a random point of
 * the first `interval`, and every later delay is jittered by HEALTH_JITTER,
 * so many backends are never probed in lockstep. The delay is `interval`
 * while a backend is steady, `fast_interval` while it is changing state
 * (some failures while up, or some successes while down) and
 * `down_interval` while it is down.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "engine.h"
#include "escape.h"
#include "log.h"

#define HEALTH_JITTER 0.05 /* each delay is scaled by a random factor in 1 ± this */

static const struct cfg_health *health_cfg(const struct backend *be)
{
	return &be->pool->cfg->health;
}

/* ---- matching (pure) ---------------------------------------------------- */

/* The reply starts with `want`: 1, could still: 0, cannot: -1. */
static int match_prefix(const unsigned char *r, size_t len, const void *want, size_t n)
{
	if (memcmp(r, want, len < n ? len : n) != 0)
		return -1;
	return len >= n ? 1 : 0;
}

static int is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

/* "HTTP/1.x NNN" with a 2xx or 3xx status. */
static int match_http(const unsigned char *r, size_t len)
{
	static const char pre[] = "HTTP/1.";
	int m = match_prefix(r, len, pre, sizeof pre - 1);
	if (m <= 0)
		return m;
	if (len < 12)
		return 0;
	if (!is_digit(r[7]) || r[8] != ' ' || !is_digit(r[9]) || !is_digit(r[10]) || !is_digit(r[11]))
		return -1;
	return r[9] == '2' || r[9] == '3' ? 1 : -1;
}

int health_match(const struct cfg_health *h, const unsigned char *r, size_t len)
{
	switch (h->type) {
	case CFG_CHECK_SEND_EXPECT:
		if (h->expect_re) {
			/* REG_STARTEND: the reply is bytes, not a C string. */
			regmatch_t m = {.rm_so = 0, .rm_eo = (regoff_t)len};
			return regexec(h->expect_re, (const char *)r, 1, &m, REG_STARTEND) == 0;
		}
		return match_prefix(r, len, h->expect, h->expect_len);
	case CFG_CHECK_REDIS:
		return match_prefix(r, len, "+PONG", 5);
	case CFG_CHECK_MEMCACHED:
		return match_prefix(r, len, "VERSION ", 8);
	case CFG_CHECK_SMTP:
		return match_prefix(r, len, "220", 3);
	case CFG_CHECK_HTTP:
		return match_http(r, len);
	case CFG_CHECK_POSTGRES: /* the answer to SSLRequest: S (TLS ok) or N */
		if (len < 1)
			return 0;
		return r[0] == 'S' || r[0] == 'N' ? 1 : -1;
	case CFG_CHECK_MYSQL: /* packet header (3-byte length, sequence 0), protocol 10 */
		if (len < 5)
			return 0;
		return r[3] == 0 && r[4] == 10 ? 1 : -1;
	case CFG_CHECK_NONE:
	case CFG_CHECK_CONNECT:
		break;
	}
	return 1;
}

/* ---- the request ------------------------------------------------------- */

static int health_set_request(struct health *hc, const void *req, size_t len)
{
	if (len == 0)
		return 0;
	hc->send = malloc(len);
	if (!hc->send)
		return -1;
	memcpy(hc->send, req, len);
	hc->send_len = len;
	return 0;
}

int health_init(struct backend *be)
{
	static const unsigned char ssl_request[] = {0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f}; /* 80877103 */
	const struct cfg_health *h = health_cfg(be);
	struct health *hc = &be->hc;
	char http[CFG_MAX_CHECK_PATH + 256];
	int n;

	hc->fd = -1;
	switch (h->type) {
	case CFG_CHECK_SEND_EXPECT:
		return health_set_request(hc, h->send, h->send_len);
	case CFG_CHECK_REDIS:
		return health_set_request(hc, "PING\r\n", 6);
	case CFG_CHECK_MEMCACHED:
		return health_set_request(hc, "version\r\n", 9);
	case CFG_CHECK_POSTGRES:
		return health_set_request(hc, ssl_request, sizeof ssl_request);
	case CFG_CHECK_HTTP:
		n = snprintf(http, sizeof http,
		             "GET %s HTTP/1.0\r\nHost: %s\r\nUser-Agent: warmpool-health\r\nConnection: close\r\n\r\n",
		             h->path ? h->path : "/", be->name);
		if (n < 0 || (size_t)n >= sizeof http)
			return -1;
		return health_set_request(hc, http, (size_t)n);
	case CFG_CHECK_NONE:
	case CFG_CHECK_CONNECT:
	case CFG_CHECK_MYSQL:
	case CFG_CHECK_SMTP:
		break;
	}
	return 0;
}

void health_destroy(struct backend *be)
{
	health_stop(be);
	free(be->hc.send);
	be->hc.send = NULL;
}

/* ---- scheduling -------------------------------------------------------- */

static ev_tstamp health_next_delay(const struct backend *be)
{
	const struct cfg_health *h = health_cfg(be);
	uint64_t ms = h->interval_ms;
	if (be->state == BACKEND_DOWN)
		ms = be->health_rises ? h->fast_interval_ms : h->down_interval_ms;
	else if (be->health_fails)
		ms = h->fast_interval_ms;
	double f = 1.0 - HEALTH_JITTER + 2.0 * HEALTH_JITTER * engine_random(be->pool->eng);
	return (double)ms / 1000.0 * f;
}

static void health_schedule(struct backend *be, ev_tstamp delay)
{
	struct ev_loop *loop = be->pool->eng->loop;
	ev_timer_stop(loop, &be->hc.timer);
	if (health_cfg(be)->type == CFG_CHECK_NONE || be->state == BACKEND_DISABLED || be->pool->eng->stopping)
		return;
	ev_timer_set(&be->hc.timer, delay, 0.);
	ev_timer_start(loop, &be->hc.timer);
}

void health_stop(struct backend *be)
{
	struct health *hc = &be->hc;
	struct ev_loop *loop = be->pool->eng->loop;
	ev_timer_stop(loop, &hc->timer);
	ev_io_stop(loop, &hc->io);
	tls_free(hc->ssl);
	hc->ssl = NULL;
	if (hc->fd >= 0) {
		close(hc->fd);
		hc->fd = -1;
	}
	free(hc->reply);
	hc->reply = NULL;
	hc->reply_len = 0;
	hc->phase = HC_WAITING;
}

/* ---- one check --------------------------------------------------------- */

static void health_done(struct backend *be, enum backend_reason reason, const char *detail)
{
	struct health *hc = &be->hc;
	char msg[sizeof be->last_error];

	if (reason == REASON_BAD_REPLY) {
		char shown[96];
		wp_escape(hc->reply, hc->reply_len, shown, sizeof shown);
		snprintf(msg, sizeof msg, "check failed: bad reply \"%s\"", shown);
	} else if (reason != REASON_NONE) {
		snprintf(msg, sizeof msg, "check failed: %s", detail ? detail : backend_reason_str(reason));
	}
	health_stop(be);
	/* The outcome `show backends` reports (HAProxy's check_status, check_duration). */
	hc->done = 1;
	hc->last = reason < REASON_N ? reason : REASON_OTHER;
	hc->last_at = ev_now(be->pool->eng->loop);
	hc->last_took = hc->last_at - hc->began_at;
	if (reason == REASON_NONE) {
		hc->n_ok++;
		backend_log(be, LOG_DEBUG, "check passed");
		backend_health_ok(be, "check passed");
	} else {
		hc->n_failed[reason < REASON_N ? reason : REASON_OTHER]++;
		/* The first failure of a run at info, repeats while down at debug. */
		backend_log(be, be->health_fails == 0 ? LOG_INFO : LOG_DEBUG, "%s", msg);
		backend_health_failed(be, msg);
	}
	health_schedule(be, health_next_delay(be));
}

static void health_fail_errno(struct backend *be, int err)
{
	enum backend_reason reason = backend_reason_from_errno(err);
	health_done(be, reason, reason == REASON_OTHER || reason == REASON_UNREACHABLE ? strerror(err) : NULL);
}

static void health_read(struct backend *be)
{
	struct health *hc = &be->hc;
	for (;;) {
		ssize_t n;
		if (hc->ssl) {
			n = tls_read(hc->ssl, hc->reply + hc->reply_len, HEALTH_REPLY_MAX - hc->reply_len);
			if (n == -EAGAIN)
				return;
			if (n < 0) {
				char why[160], text[128];
				snprintf(why, sizeof why, "tls: %s",
				         n == -EPROTO ? tls_error_text(text, sizeof text)
				         : n == -ECONNABORTED ? "stream truncated (no close_notify)"
				                              : strerror((int)-n));
				health_done(be, REASON_TLS, why);
				return;
			}
		} else {
			n = recv(hc->fd, hc->reply + hc->reply_len, HEALTH_REPLY_MAX - hc->reply_len, MSG_DONTWAIT);
		}
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				health_fail_errno(be, errno);
			return;
		}
		if (n == 0) { /* EOF before a matching reply */
			health_done(be, hc->reply_len ? REASON_BAD_REPLY : REASON_CLOSED, NULL);
			return;
		}
		hc->reply_len += (size_t)n;
		int m = health_match(health_cfg(be), hc->reply, hc->reply_len);
		if (m > 0)
			health_done(be, REASON_NONE, NULL);
		else if (m < 0 || hc->reply_len == HEALTH_REPLY_MAX)
			health_done(be, REASON_BAD_REPLY, NULL);
		if (m != 0 || hc->phase != HC_READING)
			return;
	}
}

static void health_start_reading(struct backend *be)
{
	struct health *hc = &be->hc;
	struct ev_loop *loop = be->pool->eng->loop;
	hc->phase = HC_READING;
	engine_io_want(loop, &hc->io, EV_READ);
}

static void health_send(struct backend *be)
{
	struct health *hc = &be->hc;
	while (hc->sent < hc->send_len) {
		ssize_t n;
		if (hc->ssl) {
			n = tls_write(hc->ssl, hc->send + hc->sent, hc->send_len - hc->sent);
			if (n == -EAGAIN)
				return; /* EV_WRITE stays armed */
			if (n < 0) {
				health_fail_errno(be, n == -EPROTO ? EPROTO : (int)-n);
				return;
			}
		} else {
			n = send(hc->fd, hc->send + hc->sent, hc->send_len - hc->sent, MSG_NOSIGNAL | MSG_DONTWAIT);
		}
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				health_fail_errno(be, errno);
			return; /* EAGAIN: EV_WRITE stays armed */
		}
		hc->sent += (size_t)n;
	}
	health_start_reading(be);
}

static void health_exchange(struct backend *be)
{
	struct health *hc = &be->hc;
	enum cfg_check_type type = health_cfg(be)->type;
	if (type == CFG_CHECK_CONNECT || (hc->ssl && type == CFG_CHECK_POSTGRES)) {
		health_done(be, REASON_NONE, NULL);
		return;
	}
	hc->reply = malloc(HEALTH_REPLY_MAX);
	if (!hc->reply) {
		health_done(be, REASON_OTHER, "out of memory");
		return;
	}
	hc->reply_len = 0;
	hc->sent = 0;
	hc->phase = HC_SENDING;
	if (hc->ssl) { /* EV_WRITE while sending; health_start_reading switches to EV_READ */
		engine_io_want(be->pool->eng->loop, &hc->io, EV_WRITE);
	}
	health_send(be);
}

/* tls: drive the preamble and handshake; verified, the exchange follows. */
static void health_tls_step(struct backend *be)
{
	struct health *hc = &be->hc;
	struct ev_loop *loop = be->pool->eng->loop;
	enum tls_result res = TLS_R_FAILED;
	char why[sizeof be->last_error];
	if (hc->tls_phase == TLS_PH_TICKETS) { /* the server's first record after the handshake */
		if (tls_first_record(hc->ssl, hc->fd, why, sizeof why) == 0)
			health_exchange(be);
		else
			health_done(be, REASON_TLS, why);
		return;
	}
	enum tls_step st = tls_handshake(hc->ssl, hc->fd, &hc->tls_phase, &hc->tls_sent, &res, why, sizeof why);
	enum cfg_check_type type = health_cfg(be)->type;
	if (st == TLS_STEP_DONE) {
		tls_handshake_done(be, hc->ssl, ev_now(loop) - hc->tcp_at);
		if (SSL_version(hc->ssl) >= TLS1_3_VERSION && (type == CFG_CHECK_CONNECT || type == CFG_CHECK_POSTGRES)) {
			/* The check is the handshake: wait for the server's word on it. */
			hc->tls_phase = TLS_PH_TICKETS;
			ev_timer_stop(loop, &hc->timer);
			ev_timer_set(&hc->timer, TLS_TICKET_WAIT, 0.);
			ev_timer_start(loop, &hc->timer);
			engine_io_want(loop, &hc->io, EV_READ);
			return;
		}
		health_exchange(be);
		return;
	}
	if (st == TLS_STEP_FAILED) {
		tls_handshake_failed(be, res);
		health_done(be, REASON_TLS, why);
		return;
	}
	engine_io_want(loop, &hc->io, st == TLS_STEP_READ ? EV_READ : EV_WRITE);
}

static void health_connected(struct backend *be)
{
	struct health *hc = &be->hc;
	if (!be->pool->cfg->tls.enabled) {
		health_exchange(be);
		return;
	}
	char err[sizeof be->last_error];
	hc->tcp_at = ev_now(be->pool->eng->loop);
	hc->tls_sent = 0;
	hc->ssl = tls_new(be, hc->fd, &hc->tls_phase, err, sizeof err);
	if (!hc->ssl) {
		health_done(be, REASON_OTHER, err);
		return;
	}
	hc->phase = HC_HANDSHAKING;
	health_tls_step(be);
}

static void health_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)loop;
	(void)revents;
	struct backend *be = container_of(w, struct backend, hc.io);
	struct health *hc = &be->hc;
	int err = 0;
	socklen_t len = sizeof err;

	switch (hc->phase) {
	case HC_CONNECTING:
		if (getsockopt(hc->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
			err = errno;
		if (err == EINPROGRESS || err == EALREADY)
			return;
		if (err)
			health_fail_errno(be, err);
		else
			health_connected(be);
		break;
	case HC_HANDSHAKING:
		health_tls_step(be);
		break;
	case HC_SENDING:
		health_send(be);
		break;
	case HC_READING:
		health_read(be);
		break;
	case HC_WAITING:
		break;
	}
}

static void health_begin(struct backend *be)
{
	struct health *hc = &be->hc;
	struct pool *p = be->pool;
	struct ev_loop *loop = p->eng->loop;
	const struct cfg_backend *c = be->cfg;

	hc->fd = socket(c->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (hc->fd < 0) {
		/* Our problem (out of fds), not the backend's: try again later. */
		backend_log(be, LOG_ERR, "health check socket: %s", strerror(errno));
		health_schedule(be, health_next_delay(be));
		return;
	}
	hc->phase = HC_CONNECTING;
	hc->began_at = ev_now(loop);
	/* Each check has a new socket: set the fd now (libev registers it anew
	 * even if the number is the last check's); later phases change only
	 * the events (engine_io_want). */
	ev_io_set(&hc->io, hc->fd, EV_WRITE);
	ev_timer_set(&hc->timer, (double)health_cfg(be)->timeout_ms / 1000.0, 0.);
	ev_timer_start(loop, &hc->timer);
	int r;
	do
		r = connect(hc->fd, (const struct sockaddr *)&c->addr, c->addrlen);
	while (r < 0 && errno == EINTR);
	if (r == 0) {
		health_connected(be);
		return;
	}
	if (errno != EINPROGRESS) {
		health_fail_errno(be, errno);
		return;
	}
	ev_io_start(loop, &hc->io);
}

static void health_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	struct backend *be = container_of(w, struct backend, hc.timer);
	struct health *hc = &be->hc;
	switch (hc->phase) {
	case HC_WAITING:
		health_begin(be);
		break;
	case HC_CONNECTING:
		health_done(be, REASON_TIMEOUT, "connect timeout");
		break;
	case HC_HANDSHAKING:
		if (hc->tls_phase == TLS_PH_TICKETS) { /* the server sent nothing after the handshake: fine */
			health_exchange(be);
			break;
		}
		tls_handshake_failed(be, TLS_R_TIMEOUT);
		health_done(be, REASON_TIMEOUT, "connect timeout (TLS handshake)");
		break;
	case HC_SENDING:
	case HC_READING:
		/* Bytes that never completed a match are shown as what they are. */
		health_done(be, hc->reply_len ? REASON_BAD_REPLY : REASON_TIMEOUT,
		            hc->reply_len ? NULL : "timeout waiting for the reply");
		break;
	}
}

void health_start(struct backend *be)
{
	struct health *hc = &be->hc;
	ev_init(&hc->timer, health_timer_cb);
	ev_init(&hc->io, health_io_cb);
	/* The first round starts anywhere in the first interval. */
	health_schedule(be, (double)health_cfg(be)->interval_ms / 1000.0 * engine_random(be->pool->eng));
}
