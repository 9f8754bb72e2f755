/*
 * daemon/tls.c — TLS to backends: handshakes, sessions, non-blocking I/O.
 *
 *   TCP established ─▶ [starttls: request ─▶ 'S'] ─▶ handshake ─▶ verified ─▶ idle
 *                            └───── 'N', EOF, alert, verify error, timeout ─────┘ failed attempt
 *
 * A TLS connection is a bconn with an SSL: it is CONNECTING until the
 * handshake is complete and verified (connect_timeout covers the TCP
 * connect, the preamble and the handshake together), so only verified
 * connections are ever idle and handed out. Afterwards every byte goes
 * through tls_read/tls_write, which answer like recv/send with -errno, and
 * records that are not data (TLS 1.3 tickets, a key update) are processed
 * where they arrive without being mistaken for data or for death.
 *
 * Sessions: the backend keeps up to TLS_SESSIONS_MAX resumable sessions,
 * the newest last; a new connection takes the newest. A TLS 1.3 session
 * (a ticket) is taken out when used — servers may treat tickets as single
 * use, and reuse lets an observer link connections (RFC 8446 C.4); a TLS 1.2
 * session (id or ticket) stays, as 1.2 resumption issues no new one.
 * The cache is per backend, not per pool: a ticket is only good at the
 * server that issued it.
 *
 * Errors: OpenSSL reports through a thread-global queue; every call here
 * clears it first, so SSL_get_error() and the reason text read this call's.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "engine.h"
#include "tls.h"

/* The backend an SSL belongs to (for the new-session callback). */
static int tls_backend_idx = -1;
/* Set (non-NULL) on an SSL whose read-ahead records ended in a close_notify,
 * an alert or an error that tls_read has not reported yet (see there). */
static int tls_unreported_idx = -1;

static const char *const result_names[TLS_R_N] = {
    [TLS_R_FULL] = "full",
    [TLS_R_RESUMED] = "resumed",
    [TLS_R_VERIFY_FAILED] = "verify_failed",
    [TLS_R_FAILED] = "failed",
    [TLS_R_TIMEOUT] = "timeout",
    [TLS_R_STARTTLS_REFUSED] = "starttls_refused",
};

const char *tls_result_name(enum tls_result r)
{
	return (unsigned)r < TLS_R_N ? result_names[r] : "?";
}

int tls_init(void)
{
	if (tls_backend_idx >= 0)
		return 0;
	tls_backend_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
	tls_unreported_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
	return tls_backend_idx >= 0 && tls_unreported_idx >= 0 ? 0 : -1;
}

const char *tls_error_text(char *buf, size_t len)
{
	unsigned long e = ERR_peek_last_error();
	const char *r = e ? ERR_reason_error_string(e) : NULL;
	if (r)
		snprintf(buf, len, "%s", r);
	else if (e)
		ERR_error_string_n(e, buf, len);
	else
		snprintf(buf, len, "%s", "");
	return buf;
}

/* ---- the session cache ------------------------------------------------- */

static void tls_cache_drop(struct backend_tls *t, size_t i)
{
	SSL_SESSION_free(t->sessions[i]);
	memmove(&t->sessions[i], &t->sessions[i + 1], (t->n_sessions - i - 1) * sizeof *t->sessions);
	t->n_sessions--;
}

/* OpenSSL hands us each new session (after the handshake for TLS 1.2,
 * with each ticket for TLS 1.3): keep it. 1: we took the reference. */
static int tls_new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
	struct backend *be = SSL_get_ex_data(ssl, tls_backend_idx);
	if (!be || !SSL_SESSION_is_resumable(sess))
		return 0;
	struct backend_tls *t = &be->tls;
	if (t->n_sessions == TLS_SESSIONS_MAX)
		tls_cache_drop(t, 0); /* the oldest */
	t->sessions[t->n_sessions++] = sess;
	return 1;
}

void tls_ctx_prepare(SSL_CTX *ctx)
{
	if (ctx)
		SSL_CTX_sess_set_new_cb(ctx, tls_new_session_cb);
}

void tls_backend_forget(struct backend *be)
{
	struct backend_tls *t = &be->tls;
	while (t->n_sessions)
		tls_cache_drop(t, t->n_sessions - 1);
}

/* Offer the newest cached session; a TLS 1.3 one leaves the cache. */
static void tls_offer_session(struct backend *be, SSL *ssl)
{
	struct backend_tls *t = &be->tls;
	while (t->n_sessions) {
		size_t i = t->n_sessions - 1;
		SSL_SESSION *s = t->sessions[i];
		if (!SSL_SESSION_is_resumable(s)) { /* expired meanwhile */
			tls_cache_drop(t, i);
			continue;
		}
		int ok = SSL_set_session(ssl, s); /* takes its own reference */
		if (SSL_SESSION_get_protocol_version(s) >= TLS1_3_VERSION || !ok)
			tls_cache_drop(t, i);
		return;
	}
}

/* ---- a connection ------------------------------------------------------ */

/* Is `name` an IP address literal (checked as an IP, no SNI)? */
static int tls_is_ip(const char *name)
{
	unsigned char a[16];
	return inet_pton(AF_INET, name, a) == 1 || inet_pton(AF_INET6, name, a) == 1;
}

SSL *tls_new(struct backend *be, int fd, enum tls_phase *phase, char *err, size_t errlen)
{
	const struct cfg_tls *c = &be->pool->cfg->tls;
	const char *name = c->server_name ? c->server_name : be->cfg->host;
	char why[160];
	ERR_clear_error();
	SSL *ssl = SSL_new(c->ctx);
	if (!ssl)
		goto fail;
	/* Both ex_data slots are made now, so that setting one later cannot fail. */
	if (!SSL_set_fd(ssl, fd) || !SSL_set_ex_data(ssl, tls_backend_idx, be) ||
	    !SSL_set_ex_data(ssl, tls_unreported_idx, NULL))
		goto fail;
	if (name && c->verify) {
		if (tls_is_ip(name)) {
			if (!X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name))
				goto fail;
		} else if (!SSL_set1_host(ssl, name)) {
			goto fail;
		}
	}
	if (name && !tls_is_ip(name) && !SSL_set_tlsext_host_name(ssl, name))
		goto fail;
	if (c->session_resumption)
		tls_offer_session(be, ssl);
	SSL_set_connect_state(ssl);
	*phase = c->starttls == CFG_STARTTLS_POSTGRES ? TLS_PH_STARTTLS_SEND : TLS_PH_HANDSHAKE;
	return ssl;
fail:
	snprintf(err, errlen, "tls: cannot set up the connection: %s", tls_error_text(why, sizeof why));
	ERR_clear_error();
	SSL_free(ssl);
	return NULL;
}

/* PostgreSQL's SSLRequest: length 8, code 80877103. */
static const unsigned char pg_ssl_request[] = {0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f};

/* The starttls preamble: send the request, then read exactly the one-byte
 * answer (the server says nothing more before our ClientHello). */
static enum tls_step tls_starttls(int fd, enum tls_phase *phase, unsigned *sent, enum tls_result *res, char *why,
                                  size_t whylen)
{
	while (*phase == TLS_PH_STARTTLS_SEND) {
		ssize_t n = send(fd, pg_ssl_request + *sent, sizeof pg_ssl_request - *sent, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return TLS_STEP_WRITE;
		if (n <= 0) {
			*res = TLS_R_FAILED;
			snprintf(why, whylen, "tls: starttls: %s", n < 0 ? strerror(errno) : "send failed");
			return TLS_STEP_FAILED;
		}
		*sent += (unsigned)n;
		if (*sent == sizeof pg_ssl_request)
			*phase = TLS_PH_STARTTLS_READ;
	}
	unsigned char c;
	ssize_t n;
	do
		n = recv(fd, &c, 1, MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return TLS_STEP_READ;
	if (n == 1 && c == 'S') {
		*phase = TLS_PH_HANDSHAKE;
		return TLS_STEP_WRITE; /* the ClientHello goes next: the socket is writable */
	}
	if (n == 1 && c == 'N') {
		*res = TLS_R_STARTTLS_REFUSED;
		snprintf(why, whylen, "tls: starttls: the server refused TLS");
	} else {
		*res = TLS_R_FAILED;
		if (n == 1)
			snprintf(why, whylen, "tls: starttls: unexpected answer 0x%02x", c);
		else
			snprintf(why, whylen, "tls: starttls: %s", n == 0 ? "closed by the backend" : strerror(errno));
	}
	return TLS_STEP_FAILED;
}

enum tls_step tls_handshake(SSL *ssl, int fd, enum tls_phase *phase, unsigned *sent, enum tls_result *res,
                            char *why, size_t whylen)
{
	if (*phase == TLS_PH_STARTTLS_SEND || *phase == TLS_PH_STARTTLS_READ) {
		enum tls_step st = tls_starttls(fd, phase, sent, res, why, whylen);
		if (st != TLS_STEP_WRITE || *phase != TLS_PH_HANDSHAKE)
			return st;
	}
	ERR_clear_error();
	int r = SSL_do_handshake(ssl);
	if (r == 1) {
		*phase = TLS_PH_DONE;
		return TLS_STEP_DONE;
	}
	int e = SSL_get_error(ssl, r);
	if (e == SSL_ERROR_WANT_READ)
		return TLS_STEP_READ;
	if (e == SSL_ERROR_WANT_WRITE)
		return TLS_STEP_WRITE;
	long v = SSL_get_verify_result(ssl);
	char text[160];
	if (v != X509_V_OK) {
		*res = TLS_R_VERIFY_FAILED;
		snprintf(why, whylen, "tls: certificate verify failed: %s", X509_verify_cert_error_string(v));
	} else if (e == SSL_ERROR_SYSCALL && ERR_peek_last_error() == 0) {
		*res = TLS_R_FAILED;
		snprintf(why, whylen, "tls: handshake failed: %s", errno ? strerror(errno) : "closed by the backend");
	} else {
		*res = TLS_R_FAILED;
		tls_error_text(text, sizeof text);
		/* OpenSSL 3 says "unexpected eof while reading" for a peer that closed */
		snprintf(why, whylen, "tls: handshake failed: %s",
		         strcmp(text, "unexpected eof while reading") == 0 ? "closed by the backend" : text);
	}
	ERR_clear_error();
	return TLS_STEP_FAILED;
}

/* notAfter of the server certificate, in Unix time; 0 when unknown. */
static int64_t tls_cert_expiry(SSL *ssl)
{
	X509 *cert = SSL_get0_peer_certificate(ssl);
	struct tm tm;
	if (!cert || !ASN1_TIME_to_tm(X509_get0_notAfter(cert), &tm))
		return 0;
	return (int64_t)timegm(&tm);
}

void tls_handshake_done(struct backend *be, SSL *ssl, ev_tstamp took)
{
	struct backend_tls *t = &be->tls;
	t->handshakes[SSL_session_reused(ssl) ? TLS_R_RESUMED : TLS_R_FULL]++;
	wp_histogram_observe(&t->h_handshake, took);
	snprintf(t->version, sizeof t->version, "%s", SSL_get_version(ssl));
	const char *cipher = SSL_get_cipher_name(ssl);
	snprintf(t->cipher, sizeof t->cipher, "%s", cipher ? cipher : "");
	int64_t exp = tls_cert_expiry(ssl);
	if (exp)
		t->cert_expiry = exp;
}

void tls_handshake_failed(struct backend *be, enum tls_result res)
{
	if ((unsigned)res < TLS_R_N)
		be->tls.handshakes[res]++;
}

/* ---- bytes ------------------------------------------------------------- */

/* What a failed SSL_read/SSL_write/SSL_peek means in -errno terms. */
static ssize_t tls_io_error(SSL *ssl, int r)
{
	int e = SSL_get_error(ssl, r);
	switch (e) {
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE:
		return -EAGAIN;
	case SSL_ERROR_ZERO_RETURN:
		return 0;
	case SSL_ERROR_SYSCALL:
		if (ERR_peek_last_error() == 0)
			return errno ? -errno : -ECONNABORTED;
		break;
	case SSL_ERROR_SSL:
		if (ERR_GET_REASON(ERR_peek_last_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING)
			return -ECONNABORTED;
		break;
	default:
		break;
	}
	return -EPROTO;
}

/* One SSL_read gives at most one record (16 KiB). With read-ahead (the
 * pool's SSL_CTX, config/tls.c) one read(2) brings several records into
 * OpenSSL's buffer, so the records already there are decrypted into `buf`
 * too: a bulk stream then costs one read(2) and one send(2) to the client
 * per buffer, not two reads (header, body) and a wake-up per record.
 * A close_notify, alert or error met after some bytes is reported by the
 * next call (OpenSSL answers the same again); until then the SSL is marked
 * so that tls_has_pending() asks for that call: the socket may never
 * become readable again to prompt it. */
ssize_t tls_read(SSL *ssl, void *buf, size_t len)
{
	size_t got = 0, more;
	if (SSL_get_ex_data(ssl, tls_unreported_idx))
		(void)SSL_set_ex_data(ssl, tls_unreported_idx, NULL);
	ERR_clear_error();
	int r = SSL_read_ex(ssl, buf, len, &got);
	if (r != 1)
		return tls_io_error(ssl, r);
	while (got < len && SSL_has_pending(ssl)) {
		ERR_clear_error();
		r = SSL_read_ex(ssl, (unsigned char *)buf + got, len - got, &more);
		if (r != 1) {
			int e = SSL_get_error(ssl, r);
			if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
				(void)SSL_set_ex_data(ssl, tls_unreported_idx, ssl); /* its slot exists (tls_new) */
			break;
		}
		got += more;
	}
	ERR_clear_error();
	return (ssize_t)got;
}

ssize_t tls_write(SSL *ssl, const void *buf, size_t len)
{
	size_t put = 0;
	ERR_clear_error();
	int r = SSL_write_ex(ssl, buf, len, &put);
	if (r == 1)
		return (ssize_t)put;
	ssize_t e = tls_io_error(ssl, r);
	return e == 0 ? -EPIPE : e;
}

enum sock_peek tls_peek(SSL *ssl, int fd)
{
	if (SSL_pending(ssl) > 0)
		return SOCK_DATA;
	/* Records read ahead (a close_notify, an alert, data) wait inside the
	 * SSL, where the socket's peek cannot see them. */
	if (!SSL_has_pending(ssl)) {
		enum sock_peek k = sock_peek(fd);
		if (k != SOCK_DATA)
			return k;
	}
	unsigned char c;
	size_t got = 0;
	ERR_clear_error();
	int r = SSL_peek_ex(ssl, &c, 1, &got);
	if (r == 1)
		return SOCK_DATA;
	ssize_t e = tls_io_error(ssl, r);
	if (e == -EAGAIN)
		return SOCK_QUIET; /* only handshake records (tickets), or half a record */
	return e == 0 ? SOCK_EOF : SOCK_ERROR;
}

int tls_first_record(SSL *ssl, int fd, char *why, size_t whylen)
{
	char text[128];
	switch (tls_peek(ssl, fd)) {
	case SOCK_QUIET:
	case SOCK_DATA:
		return 0;
	case SOCK_EOF:
		snprintf(why, whylen, "tls: handshake failed: closed by the backend");
		return -1;
	case SOCK_ERROR:
		break;
	}
	tls_error_text(text, sizeof text);
	snprintf(why, whylen, "tls: handshake failed: %s", text[0] ? text : errno ? strerror(errno) : "reset by the backend");
	ERR_clear_error();
	return -1;
}

int tls_has_pending(SSL *ssl)
{
	return SSL_has_pending(ssl) || SSL_get_ex_data(ssl, tls_unreported_idx) != NULL;
}

int tls_close_notify(SSL *ssl)
{
	ERR_clear_error();
	int r = SSL_shutdown(ssl);
	if (r >= 0)
		return 0;
	ssize_t e = tls_io_error(ssl, r);
	ERR_clear_error();
	/* -EAGAIN: the alert waits in OpenSSL's buffer and goes out with the next write */
	return e == -EAGAIN ? 0 : (int)(e ? e : -EPIPE);
}

void tls_free(SSL *ssl)
{
	if (!ssl)
		return;
	/* A clean end tells the backend this was no truncation; never after a
	 * fatal error (OpenSSL forbids it) or before the handshake finished. */
	if (SSL_is_init_finished(ssl) && !(SSL_get_shutdown(ssl) & SSL_SENT_SHUTDOWN)) {
		ERR_clear_error();
		(void)SSL_shutdown(ssl);
	}
	ERR_clear_error();
	SSL_free(ssl);
}
