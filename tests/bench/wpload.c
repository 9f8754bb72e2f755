/*
 * tests/bench/wpload.c — the load generator of warmpool's benchmark.
 *
 * One process, one thread. The target is a Unix socket (--unix PATH: warmpool
 * or a peer proxy), a TCP address (--tcp HOST:PORT: the backend directly) or
 * a pool's handoff socket (--handoff PATH: libwarmpool's wp_checkout() hands
 * over the warm backend TCP socket itself, and the workload runs on that
 * socket; rtt, bulk-up and bulk-down only). Bytes the daemon had read from
 * the backend before the handoff (lease.greeting) are consumed first, as
 * though they had arrived on the socket, so the greeting and every stream
 * are checked the same way for every target.
 * Every byte it receives is checked; a wrong byte, a short stream or a failed
 * session makes it exit 1. It prints exactly one JSON line on stdout.
 *
 * Modes (--mode):
 *   setup      N sessions (or as many as start within --duration), C at a
 *              time (epoll, non-blocking): connect, read an L-byte greeting,
 *              one 64-byte round trip, close. Latency is the whole session,
 *              from socket() to close(). With --trace FILE, one line per
 *              finished session: "<start ns> <end ns> ok" or "<start ns>
 *              <end ns> <error kind>" (CLOCK_MONOTONIC, the clock of
 *              wpbackend's --events and of Python's time.monotonic_ns(): the
 *              benchmark's restart workload places each session against the
 *              moment it switched the proxy). With --fail-pause-ms MS, a client
 *              whose session failed waits MS before its next one (a client
 *              that retries at once would spin on a refused connect and take
 *              the CPU the restarting proxy needs).
 *   rtt        one session (blocking I/O with timeouts): K sequential 64-byte
 *              round trips after the greeting and W untimed warm-up trips.
 *   bulk-up    stream B bytes of the splitmix64 sequence of --seed to a
 *              `wpbackend --mode sink --sink-verify SEED` backend, then
 *              shutdown(SHUT_WR); the sink answers one line, "sink bytes=N ok"
 *              or "... bad at=OFF", and closes. Timed from connect to EOF.
 *   bulk-down  send one trigger byte to a `wpbackend --mode source
 *              --source-bytes B --seed S` backend and check every byte of the
 *              stream against the same sequence, then EOF. Timed likewise.
 *   hold       open N sessions (C set-ups in flight at a time), one round trip
 *              on each, then hold them all: write --ready-file, wait for
 *              SIGUSR1 or --hold-seconds, do a second round trip on each (so a
 *              session dropped while held counts as failed; C at a time
 *              again, trip2_seconds is how long they all took), close them
 *              all.
 *
 * The splitmix64 stream is the one wpbackend's source mode sends: each state
 * step yields 8 bytes, little-endian.
 *
 * TLS (--tls-ca FILE, with --tcp only: the benchmark's direct-tls target):
 * wpload itself is the TLS client of a `wpbackend --tls-cert ...` backend.
 * Every connection handshakes in full (no session resumption, as a program
 * that connects per request without a session cache does), verifying the
 * chain against FILE and the name --tls-name (default: the --tcp host) as
 * SNI and subject name; the handshake is part of the session's time. Every
 * mode runs on the decrypted bytes; bulk-up's shutdown(SHUT_WR) is a
 * close_notify, the backend's close_notify is the EOF, and an EOF without one
 * is an error (a truncated stream). The negotiated version of the first
 * connection is printed as "tls_version".
 */
#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "escape.h"
#include "warmpool.h"

#define MSG_LEN          64
#define MAX_GREETING     65536
#define BULK_CHUNK       (256 * 1024)
#define MAX_ERRORS_SHOWN 5

enum mode { M_SETUP, M_RTT, M_BULK_UP, M_BULK_DOWN, M_HOLD };
static const char *const mode_names[] = {"setup", "rtt", "bulk-up", "bulk-down", "hold"};

enum err_kind { E_CONNECT, E_TIMEOUT, E_EOF, E_RESET, E_IO, E_MISMATCH, E_N };
static const char *const err_names[] = {"connect", "timeout", "eof", "reset", "io", "mismatch"};

static struct {
	enum mode mode;
	struct sockaddr_storage addr;
	socklen_t addrlen;
	int is_tcp;
	const char *handoff; /* --handoff PATH: connections come from wp_checkout() */
	const char *target;  /* as given, for messages */
	unsigned long sessions, concurrency, count, warmup;
	uint64_t bytes, seed;
	size_t greeting_len;
	char greeting[MAX_GREETING];
	int greeting_given; /* verify the greeting's content */
	double hold_seconds, timeout_s, deadline_s;
	double duration_s; /* setup: start sessions for this long (0 = until --sessions) */
	const char *ready_file;
	FILE *trace;          /* setup --trace: one line per finished session */
	double fail_pause_s;  /* setup --fail-pause-ms: a failed session's slot waits this long */
	enum err_kind last_kind; /* the kind fail() counted last: the session's, when it fails */
	unsigned long errors[E_N];
	unsigned long errors_shown;
	unsigned long connect_retries;
	uint64_t msg_state; /* splitmix64 state for request payloads */
	SSL_CTX *tls;          /* --tls-ca: every connection speaks TLS, else NULL */
	const char *tls_name;  /* SNI and the verified name */
	char tls_version[32];  /* negotiated by the first connection */
} o = {
    .mode = M_SETUP,
    .sessions = 1000,
    .concurrency = 1,
    .count = 20000,
    .warmup = 200,
    .bytes = 1ull << 30,
    .seed = 1,
    .hold_seconds = 5,
    .timeout_s = 10,
    .deadline_s = 900,
    .msg_state = 0x5EED,
};

static volatile sig_atomic_t got_usr1;

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("wpload: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(2);
}

/* Count an error; show the first few on stderr. */
static void fail(enum err_kind k, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(enum err_kind k, const char *fmt, ...)
{
	va_list ap;

	o.errors[k]++;
	o.last_kind = k;
	if (o.errors_shown++ >= MAX_ERRORS_SHOWN)
		return;
	va_start(ap, fmt);
	fprintf(stderr, "wpload: %s: %s: ", o.target, err_names[k]);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

static unsigned long total_errors(void)
{
	unsigned long n = 0;
	for (int k = 0; k < E_N; k++)
		n += o.errors[k];
	return n;
}

static enum err_kind errno_kind(int e)
{
	if (e == ECONNRESET || e == EPIPE)
		return E_RESET;
	if (e == EAGAIN || e == EWOULDBLOCK || e == ETIMEDOUT)
		return E_TIMEOUT;
	return E_IO;
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t splitmix64(uint64_t *state)
{
	uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

/* ---- the byte stream ---------------------------------------------------- */

struct stream {
	uint64_t state;
	unsigned char word[8];
	unsigned used; /* bytes of word[] already handed out; 8 = none left */
};

static void stream_init(struct stream *s, uint64_t seed)
{
	s->state = seed;
	s->used = 8;
}

/* The next n bytes of the stream. */
static void stream_fill(struct stream *s, unsigned char *p, size_t n)
{
	while (n && s->used < 8) {
		*p++ = s->word[s->used++];
		n--;
	}
	while (n >= 8) {
		uint64_t v = htole64(splitmix64(&s->state));
		memcpy(p, &v, 8);
		p += 8;
		n -= 8;
	}
	if (n) {
		uint64_t v = htole64(splitmix64(&s->state));
		memcpy(s->word, &v, 8);
		s->used = 0;
		while (n--)
			*p++ = s->word[s->used++];
	}
}

static void next_message(unsigned char *msg)
{
	for (int i = 0; i < MSG_LEN; i += 8) {
		uint64_t v = splitmix64(&o.msg_state);
		memcpy(msg + i, &v, 8);
	}
}

/* ---- sockets ----------------------------------------------------------- */

static void parse_target_tcp(const char *spec)
{
	char host[256];
	const char *colon = strrchr(spec, ':');
	struct addrinfo hints = {0}, *res;
	size_t hl;
	int err;

	if (!colon || colon[1] == '\0')
		die("--tcp %s: expected HOST:PORT", spec);
	hl = (size_t)(colon - spec);
	if (spec[0] == '[' && hl >= 2 && spec[hl - 1] == ']') {
		spec++;
		hl -= 2;
	}
	if (hl >= sizeof host)
		die("--tcp %s: host too long", spec);
	memcpy(host, spec, hl);
	host[hl] = '\0';
	hints.ai_socktype = SOCK_STREAM;
	err = getaddrinfo(host, colon + 1, &hints, &res);
	if (err)
		die("--tcp %s: %s", spec, gai_strerror(err));
	memcpy(&o.addr, res->ai_addr, res->ai_addrlen);
	o.addrlen = res->ai_addrlen;
	o.is_tcp = 1;
	freeaddrinfo(res);
}

static void parse_target_unix(const char *path)
{
	struct sockaddr_un *un = (struct sockaddr_un *)&o.addr;

	if (strlen(path) >= sizeof un->sun_path)
		die("--unix %s: path too long", path);
	un->sun_family = AF_UNIX;
	strcpy(un->sun_path, path);
	o.addrlen = (socklen_t)sizeof *un;
	o.is_tcp = 0;
}

static int new_socket(int nonblock)
{
	int fd = socket(o.addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);
	int one = 1;

	if (fd >= 0 && o.is_tcp)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	return fd;
}

static void set_timeouts(int fd, double secs)
{
	struct timeval tv = {.tv_sec = (time_t)secs,
	                     .tv_usec = (suseconds_t)((secs - (double)(time_t)secs) * 1e6)};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

/* ---- TLS ---------------------------------------------------------------- */

/* OpenSSL's reason for the last failure, for an error message. */
static const char *tls_reason(int ssl_err)
{
	static char buf[256];
	unsigned long e = ERR_peek_last_error();

	if (e)
		ERR_error_string_n(e, buf, sizeof buf);
	else if (ssl_err == SSL_ERROR_SYSCALL)
		snprintf(buf, sizeof buf, "%s", errno ? strerror(errno) : "EOF without close_notify");
	else
		snprintf(buf, sizeof buf, "SSL_get_error %d", ssl_err);
	return buf;
}

/* Why a handshake failed: OpenSSL's reason, and the verification's when it failed. */
static const char *tls_handshake_reason(SSL *ssl, int ssl_err)
{
	static char buf[512];
	long v = SSL_get_verify_result(ssl);

	if (v == X509_V_OK)
		return tls_reason(ssl_err);
	snprintf(buf, sizeof buf, "%s: %s", tls_reason(ssl_err), X509_verify_cert_error_string(v));
	return buf;
}

/* A client TLS connection on fd, not yet handshaken, or NULL (error counted). */
static SSL *tls_new(int fd)
{
	SSL *ssl = SSL_new(o.tls);

	if (!ssl || SSL_set_fd(ssl, fd) != 1 || SSL_set1_host(ssl, o.tls_name) != 1 ||
	    SSL_set_tlsext_host_name(ssl, o.tls_name) != 1) {
		fail(E_CONNECT, "tls: setting up the connection: %s", tls_reason(SSL_ERROR_SSL));
		SSL_free(ssl);
		ERR_clear_error();
		return NULL;
	}
	SSL_set_connect_state(ssl);
	return ssl;
}

static void tls_note_version(SSL *ssl)
{
	if (!o.tls_version[0])
		snprintf(o.tls_version, sizeof o.tls_version, "%s", SSL_get_version(ssl));
}

/*
 * An SSL_read/SSL_write that returned r <= 0, in recv()'s terms: 0 at the
 * peer's close_notify, else -1 with errno: EAGAIN when the socket is not
 * ready (or a blocking socket's timeout passed), EPROTO for a TLS error or a
 * stream cut without close_notify (*why says which).
 */
static ssize_t tls_outcome(SSL *ssl, int r, const char **why)
{
	int e = SSL_get_error(ssl, r);

	*why = NULL;
	if (e == SSL_ERROR_ZERO_RETURN)
		return 0;
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
		errno = EAGAIN;
		return -1;
	}
	if (e == SSL_ERROR_SYSCALL && errno != 0 && errno != EAGAIN)
		return -1; /* errno says it (reset, ...) */
	*why = tls_reason(e);
	ERR_clear_error();
	errno = EPROTO;
	return -1;
}

static ssize_t tls_recv(SSL *ssl, void *buf, size_t n, const char **why)
{
	int r;

	ERR_clear_error();
	r = SSL_read(ssl, buf, n > INT_MAX ? INT_MAX : (int)n);
	return r > 0 ? r : tls_outcome(ssl, r, why);
}

static ssize_t tls_send(SSL *ssl, const void *p, size_t n, const char **why)
{
	ssize_t r;

	ERR_clear_error();
	r = SSL_write(ssl, p, n > INT_MAX ? INT_MAX : (int)n);
	if (r > 0)
		return r;
	r = tls_outcome(ssl, (int)r, why);
	if (r == 0) {
		errno = EPIPE; /* the peer's close_notify: no more writing */
		r = -1;
	}
	return r;
}

/* Best effort close_notify (unless the stream already failed), then free. */
static void tls_close(SSL *ssl)
{
	if (!ssl)
		return;
	if (!(SSL_get_shutdown(ssl) & SSL_SENT_SHUTDOWN)) {
		ERR_clear_error();
		(void)SSL_shutdown(ssl);
	}
	SSL_free(ssl);
	ERR_clear_error();
}

static void tls_setup(const char *ca_file)
{
	char err[256];

	if (!o.is_tcp || o.handoff)
		die("--tls-ca: TLS is spoken only to a --tcp target");
	o.tls = SSL_CTX_new(TLS_client_method());
	if (!o.tls)
		die("SSL_CTX_new failed");
	if (SSL_CTX_load_verify_locations(o.tls, ca_file, NULL) != 1) {
		ERR_error_string_n(ERR_get_error(), err, sizeof err);
		die("--tls-ca %s: %s", ca_file, err);
	}
	SSL_CTX_set_verify(o.tls, SSL_VERIFY_PEER, NULL);
	SSL_CTX_set_min_proto_version(o.tls, TLS1_2_VERSION);
	/* every session a full handshake: see the top of this file */
	SSL_CTX_set_session_cache_mode(o.tls, SSL_SESS_CACHE_OFF);
	if (!o.tls_name) {
		static char host[256];
		const char *colon = strrchr(o.target, ':');
		size_t hl = colon ? (size_t)(colon - o.target) : 0;
		const char *h = o.target;
		if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
			h++;
			hl -= 2;
		}
		if (hl == 0 || hl >= sizeof host)
			die("--tls-name: cannot take the name from \"%s\"", o.target);
		memcpy(host, h, hl);
		host[hl] = '\0';
		o.tls_name = host;
	}
}

/*
 * --handoff: the lease of the blocking connection, and the bytes the daemon
 * read from the backend before handing it over (lease.greeting), not yet
 * consumed. conn_recv() returns them before anything from the socket, so
 * they are checked as if they had arrived on it. One blocking connection at
 * a time (rtt, bulk).
 */
static struct wp_lease lease = {.fd = -1};
static const unsigned char *pre;
static size_t pre_len;
static SSL *bssl; /* --tls-ca: the TLS connection of the blocking connection */
static const char *bssl_why; /* the TLS reason of its last failure, or NULL */

/* recv(), but the handed-over greeting bytes come first (TLS: decrypted). */
static ssize_t conn_recv(int fd, void *buf, size_t n)
{
	if (pre_len) {
		size_t k = n < pre_len ? n : pre_len;
		memcpy(buf, pre, k);
		pre += k;
		pre_len -= k;
		return (ssize_t)k;
	}
	if (bssl)
		return tls_recv(bssl, buf, n, &bssl_why);
	return recv(fd, buf, n, 0);
}

/* send() (TLS: encrypted). */
static ssize_t conn_send(int fd, const void *p, size_t n)
{
	if (bssl)
		return tls_send(bssl, p, n, &bssl_why);
	return send(fd, p, n, MSG_NOSIGNAL);
}

/* The error text of the last failed conn_recv/conn_send. */
static const char *conn_strerror(int e)
{
	return bssl && bssl_why ? bssl_why : strerror(e);
}

static void conn_close(int fd)
{
	pre_len = 0;
	tls_close(bssl);
	bssl = NULL;
	if (o.handoff && fd == lease.fd)
		wp_release(&lease); /* closes fd */
	else
		close(fd);
}

/* --handoff: a connection from the pool's handoff socket, or -1 (error counted). */
static int handoff_connect(void)
{
	int one = 1;
	int timeout_ms = (int)(o.timeout_s * 1000);
	int r = wp_checkout(o.handoff, timeout_ms > 0 ? timeout_ms : 1, &lease);

	if (r < 0) {
		fail(r == -ETIMEDOUT ? E_TIMEOUT : E_CONNECT, "wp_checkout: %s", wp_strerror(r));
		return -1;
	}
	if (!lease.direct) {
		/* the path was a proxy socket: this target is meant to measure a handoff */
		fail(E_CONNECT, "wp_checkout: got a relayed connection, not a handed-off backend socket");
		wp_release(&lease);
		return -1;
	}
	setsockopt(lease.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* as for --tcp */
	set_timeouts(lease.fd, o.timeout_s);
	pre = lease.greeting;
	pre_len = lease.greeting_len;
	return lease.fd;
}

/* A blocking connection with send/receive timeouts, or -1 (error counted). */
static int blocking_connect(void)
{
	int fd;

	if (o.handoff)
		return handoff_connect();
	fd = new_socket(0);
	if (fd < 0) {
		fail(E_CONNECT, "socket: %s", strerror(errno));
		return -1;
	}
	set_timeouts(fd, o.timeout_s);
	if (connect(fd, (struct sockaddr *)&o.addr, o.addrlen) < 0) {
		fail(E_CONNECT, "connect: %s", strerror(errno));
		close(fd);
		return -1;
	}
	if (o.tls) {
		int r;

		bssl = tls_new(fd);
		if (!bssl) {
			close(fd);
			return -1;
		}
		ERR_clear_error();
		r = SSL_connect(bssl);
		if (r != 1) {
			int e = SSL_get_error(bssl, r);
			fail(e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? E_TIMEOUT : E_CONNECT,
			     "tls handshake: %s", tls_handshake_reason(bssl, e));
			SSL_free(bssl);
			bssl = NULL;
			ERR_clear_error();
			close(fd);
			return -1;
		}
		tls_note_version(bssl);
	}
	return fd;
}

/* Read exactly n bytes; 0, or -1 with the error counted. */
static int read_full(int fd, unsigned char *p, size_t n, const char *what)
{
	size_t got = 0;

	while (got < n) {
		ssize_t r = conn_recv(fd, p + got, n - got);
		if (r > 0) {
			got += (size_t)r;
		} else if (r == 0) {
			fail(E_EOF, "%s: EOF after %zu of %zu bytes", what, got, n);
			return -1;
		} else if (errno != EINTR) {
			fail(errno_kind(errno), "%s: %s after %zu of %zu bytes", what, conn_strerror(errno), got,
			     n);
			return -1;
		}
	}
	return 0;
}

static int write_full(int fd, const unsigned char *p, size_t n, const char *what)
{
	size_t put = 0;

	while (put < n) {
		ssize_t w = conn_send(fd, p + put, n - put);
		if (w > 0) {
			put += (size_t)w;
		} else if (w < 0 && errno != EINTR) {
			fail(errno_kind(errno), "%s: %s after %zu of %zu bytes", what, conn_strerror(errno), put,
			     n);
			return -1;
		}
	}
	return 0;
}

static int check_greeting(const unsigned char *got)
{
	if (o.greeting_given && memcmp(got, o.greeting, o.greeting_len) != 0) {
		fail(E_MISMATCH, "greeting differs from the expected one");
		return -1;
	}
	return 0;
}

/* ---- statistics -------------------------------------------------------- */

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted v[0..n), in microseconds. */
static double pct_us(const uint64_t *v, size_t n, double p)
{
	size_t rank;

	if (n == 0)
		return 0;
	rank = (size_t)((p / 100.0) * (double)n + 0.999999);
	if (rank < 1)
		rank = 1;
	if (rank > n)
		rank = n;
	return (double)v[rank - 1] / 1000.0;
}

static double mean_us(const uint64_t *v, size_t n)
{
	double s = 0;
	for (size_t i = 0; i < n; i++)
		s += (double)v[i];
	return n ? s / (double)n / 1000.0 : 0;
}

static void print_errors_json(void)
{
	if (o.tls)
		printf("\"tls_version\":\"%s\",", o.tls_version[0] ? o.tls_version : "none");
	printf("\"errors\":%lu,\"error_kinds\":{", total_errors());
	for (int k = 0; k < E_N; k++)
		printf("%s\"%s\":%lu", k ? "," : "", err_names[k], o.errors[k]);
	printf("}");
}

/* ---- rtt --------------------------------------------------------------- */

static int run_rtt(void)
{
	unsigned char msg[MSG_LEN], echo[MSG_LEN], greet[MAX_GREETING];
	uint64_t *lat = calloc(o.count ? o.count : 1, sizeof *lat);
	unsigned long done = 0;
	uint64_t t_start;
	int fd;

	if (!lat)
		die("out of memory");
	t_start = now_ns();
	fd = blocking_connect();
	if (fd >= 0 && o.greeting_len && read_full(fd, greet, o.greeting_len, "greeting") == 0)
		check_greeting(greet);
	for (unsigned long i = 0; fd >= 0 && !total_errors() && i < o.warmup + o.count; i++) {
		uint64_t t0;

		next_message(msg);
		t0 = now_ns();
		if (write_full(fd, msg, MSG_LEN, "request") < 0 || read_full(fd, echo, MSG_LEN, "echo") < 0)
			break;
		if (i >= o.warmup)
			lat[done++] = now_ns() - t0;
		if (memcmp(msg, echo, MSG_LEN) != 0) {
			fail(E_MISMATCH, "round trip %lu: echo differs from the request", i);
			break;
		}
	}
	if (fd >= 0)
		conn_close(fd);
	double secs = (double)(now_ns() - t_start) / 1e9;
	qsort(lat, done, sizeof *lat, cmp_u64);
	printf("{\"mode\":\"rtt\",\"target\":\"%s\",\"count\":%lu,\"done\":%lu,\"seconds\":%.3f,"
	       "\"p50_us\":%.2f,\"p99_us\":%.2f,\"p999_us\":%.2f,\"mean_us\":%.2f,\"min_us\":%.2f,\"max_us\":"
	       "%.2f,",
	       o.target, o.count, done, secs, pct_us(lat, done, 50), pct_us(lat, done, 99),
	       pct_us(lat, done, 99.9), mean_us(lat, done), done ? (double)lat[0] / 1000 : 0,
	       done ? (double)lat[done - 1] / 1000 : 0);
	if (done != o.count && !total_errors())
		fail(E_IO, "only %lu of %lu round trips", done, o.count);
	print_errors_json();
	printf("}\n");
	free(lat);
	return total_errors() ? 1 : 0;
}

/* ---- bulk -------------------------------------------------------------- */

static void print_bulk(const char *mode, uint64_t moved, double secs)
{
	printf("{\"mode\":\"%s\",\"target\":\"%s\",\"bytes\":%" PRIu64 ",\"moved\":%" PRIu64
	       ",\"seed\":%" PRIu64 ",\"seconds\":%.4f,\"MBps\":%.1f,",
	       mode, o.target, o.bytes, moved, o.seed, secs, secs > 0 ? (double)moved / secs / 1e6 : 0);
	print_errors_json();
	printf("}\n");
}

static int run_bulk_up(void)
{
	unsigned char *buf = malloc(BULK_CHUNK);
	char reply[256];
	size_t rlen = 0;
	struct stream s;
	uint64_t sent = 0, t0;
	int fd;

	if (!buf)
		die("out of memory");
	stream_init(&s, o.seed);
	t0 = now_ns();
	fd = blocking_connect();
	if (fd < 0)
		goto out;
	while (sent < o.bytes) {
		size_t n = o.bytes - sent < BULK_CHUNK ? (size_t)(o.bytes - sent) : BULK_CHUNK;
		stream_fill(&s, buf, n);
		if (write_full(fd, buf, n, "bulk send") < 0)
			goto out;
		sent += n;
		if ((double)(now_ns() - t0) / 1e9 > o.deadline_s) {
			fail(E_TIMEOUT, "deadline of %.0f s passed after %" PRIu64 " bytes", o.deadline_s,
			     sent);
			goto out;
		}
	}
	if (bssl) {
		ERR_clear_error();
		if (SSL_shutdown(bssl) < 0) { /* the close_notify, after the last byte */
			fail(E_IO, "tls shutdown: %s", tls_reason(SSL_get_error(bssl, -1)));
			goto out;
		}
	} else if (shutdown(fd, SHUT_WR) < 0) {
		fail(E_IO, "shutdown: %s", strerror(errno));
		goto out;
	}
	for (;;) {
		ssize_t r = conn_recv(fd, reply + rlen, sizeof reply - 1 - rlen);
		if (r > 0) {
			rlen += (size_t)r;
			if (rlen == sizeof reply - 1) {
				fail(E_MISMATCH, "sink reply too long");
				goto out;
			}
		} else if (r == 0) {
			break;
		} else if (errno != EINTR) {
			fail(errno_kind(errno), "waiting for the sink's verdict: %s", conn_strerror(errno));
			goto out;
		}
	}
	reply[rlen] = '\0';
	{
		char expect[128];
		snprintf(expect, sizeof expect, "sink bytes=%" PRIu64 " ok\n", o.bytes);
		if (strcmp(reply, expect) != 0)
			fail(E_MISMATCH, "sink says \"%.*s\", expected \"sink bytes=%" PRIu64 " ok\"",
			     (int)strcspn(reply, "\n"), reply, o.bytes);
	}
out : {
	double secs = (double)(now_ns() - t0) / 1e9;
	if (fd >= 0)
		conn_close(fd);
	print_bulk("bulk-up", sent, secs);
}
	free(buf);
	return total_errors() ? 1 : 0;
}

static int run_bulk_down(void)
{
	unsigned char *buf = malloc(BULK_CHUNK), *want = malloc(BULK_CHUNK);
	struct stream s;
	uint64_t got = 0, t0;
	int fd;

	if (!buf || !want)
		die("out of memory");
	stream_init(&s, o.seed);
	t0 = now_ns();
	fd = blocking_connect();
	if (fd < 0)
		goto out;
	if (write_full(fd, (const unsigned char *)"!", 1, "trigger") < 0)
		goto out;
	for (;;) {
		ssize_t r = conn_recv(fd, buf, BULK_CHUNK);
		if (r == 0)
			break;
		if (r < 0) {
			if (errno == EINTR)
				continue;
			fail(errno_kind(errno), "bulk receive: %s after %" PRIu64 " bytes", conn_strerror(errno),
			     got);
			goto out;
		}
		if (got + (uint64_t)r > o.bytes) {
			fail(E_MISMATCH, "more than the %" PRIu64 " bytes expected", o.bytes);
			goto out;
		}
		stream_fill(&s, want, (size_t)r);
		if (memcmp(buf, want, (size_t)r) != 0) {
			size_t i = 0;
			while (buf[i] == want[i])
				i++;
			fail(E_MISMATCH, "stream differs at byte %" PRIu64, got + i);
			goto out;
		}
		got += (uint64_t)r;
		if ((double)(now_ns() - t0) / 1e9 > o.deadline_s) {
			fail(E_TIMEOUT, "deadline of %.0f s passed after %" PRIu64 " bytes", o.deadline_s,
			     got);
			goto out;
		}
	}
	if (got != o.bytes)
		fail(E_EOF, "EOF after %" PRIu64 " of %" PRIu64 " bytes", got, o.bytes);
out : {
	double secs = (double)(now_ns() - t0) / 1e9;
	if (fd >= 0)
		conn_close(fd);
	print_bulk("bulk-down", got, secs);
}
	free(buf);
	free(want);
	return total_errors() ? 1 : 0;
}

/* ---- setup and hold: many sessions on one epoll ------------------------- */

enum sstate {
	S_IDLE,       /* not started */
	S_WAIT_RETRY, /* unix connect got EAGAIN (backlog full): retry soon */
	S_CONNECTING, /* TCP connect in progress */
	S_HANDSHAKE,  /* --tls-ca: TLS handshake in progress */
	S_GREETING,   /* reading the greeting */
	S_ECHO,       /* request sent, reading the echo */
	S_HELD,       /* hold: first round trip done, nothing expected */
	S_DONE,
	S_FAILED,
};

struct sess {
	int fd;
	SSL *ssl; /* --tls-ca: the session's TLS connection */
	enum sstate st;
	unsigned trips;          /* round trips completed */
	size_t got;              /* bytes of the greeting/echo read so far */
	uint64_t t0;             /* session start */
	uint64_t deadline;       /* for the current step */
	uint64_t retry_at;       /* S_WAIT_RETRY: when to try connecting again */
	unsigned retries;        /* connects refused with EAGAIN so far */
	struct sess *next_retry; /* on m.retry_list while in S_WAIT_RETRY */
	unsigned char msg[MSG_LEN];
	unsigned char in[MSG_LEN];
};

/*
 * Sessions live in slots: hold keeps one slot per session; setup recycles
 * `concurrency` slots, so a long --duration run needs no more memory.
 */
static struct {
	int ep;
	struct sess *s;
	unsigned long nslots;
	unsigned long *free_slots; /* stack of free slot indices */
	unsigned long nfree;
	unsigned long started;  /* sessions started so far */
	uint64_t stop_at;       /* setup --duration: start no session after this */
	unsigned long inflight; /* sessions between start and done/held/failed */
	unsigned long finished; /* done + failed */
	unsigned long held;
	struct sess *retry_list; /* sessions in S_WAIT_RETRY */
	struct sess *pause_list; /* setup --fail-pause-ms: free slots not to be used before retry_at */
	uint64_t *lat;
	unsigned long nlat, lat_cap;
	unsigned char scratch[MAX_GREETING];
} m;

static uint64_t step_deadline(void)
{
	return now_ns() + (uint64_t)(o.timeout_s * 1e9);
}

static void sess_close(struct sess *s)
{
	tls_close(s->ssl);
	s->ssl = NULL;
	if (s->fd >= 0) {
		close(s->fd); /* also removes it from the epoll set */
		s->fd = -1;
	}
}

/* setup: a finished session's slot takes the next session */
static void slot_recycle(struct sess *s)
{
	if (o.mode != M_SETUP)
		return;
	memset(s, 0, sizeof *s);
	s->fd = -1;
	s->st = S_IDLE;
	m.free_slots[m.nfree++] = (unsigned long)(s - m.s);
}

static void sess_fail(struct sess *s)
{
	sess_close(s);
	if (s->st != S_HELD)
		m.inflight--;
	else
		m.held--;
	s->st = S_FAILED;
	m.finished++;
	if (o.mode == M_SETUP && o.trace)
		fprintf(o.trace, "%" PRIu64 " %" PRIu64 " %s\n", s->t0, now_ns(), err_names[o.last_kind]);
	if (o.mode == M_SETUP && o.fail_pause_s > 0) {
		/* the slot is free, but not before the pause: drive() frees it then */
		memset(s, 0, sizeof *s);
		s->fd = -1;
		s->st = S_IDLE;
		s->retry_at = now_ns() + (uint64_t)(o.fail_pause_s * 1e9);
		s->next_retry = m.pause_list;
		m.pause_list = s;
		return;
	}
	slot_recycle(s);
}

/* setup --fail-pause-ms: paused slots whose pause is over become free. */
static void pause_due(void)
{
	uint64_t now = now_ns();
	struct sess **pp = &m.pause_list;

	while (*pp) {
		struct sess *s = *pp;
		if (s->retry_at <= now) {
			*pp = s->next_retry;
			s->next_retry = NULL;
			m.free_slots[m.nfree++] = (unsigned long)(s - m.s);
		} else {
			pp = &s->next_retry;
		}
	}
}

static void sess_watch(struct sess *s, uint32_t events, int op)
{
	struct epoll_event ev = {.events = events, .data.ptr = s};
	if (epoll_ctl(m.ep, op, s->fd, &ev) < 0)
		die("epoll_ctl: %s", strerror(errno));
}

/* Send a fresh 64-byte request and wait for its echo. */
static void sess_send(struct sess *s)
{
	ssize_t w;

	const char *why = NULL;

	next_message(s->msg);
	w = s->ssl ? tls_send(s->ssl, s->msg, MSG_LEN, &why) : send(s->fd, s->msg, MSG_LEN, MSG_NOSIGNAL);
	if (w != MSG_LEN) {
		/* 64 bytes always fit an empty socket buffer: anything else is an error */
		fail(w < 0 ? errno_kind(errno) : E_IO, "request: %s",
		     w < 0 ? (why ? why : strerror(errno)) : "short send");
		sess_fail(s);
		return;
	}
	s->st = S_ECHO;
	s->got = 0;
	s->deadline = step_deadline();
}

/* The connection is up (TLS: handshaken): read the greeting, or send the request. */
static void sess_ready(struct sess *s)
{
	s->deadline = step_deadline();
	s->got = 0;
	if (o.greeting_len)
		s->st = S_GREETING;
	else
		sess_send(s);
}

/* --tls-ca: advance the handshake; on completion the session goes on. */
static void sess_handshake(struct sess *s)
{
	int r, e;

	ERR_clear_error();
	r = SSL_do_handshake(s->ssl);
	if (r == 1) {
		tls_note_version(s->ssl);
		sess_watch(s, EPOLLIN, EPOLL_CTL_MOD);
		sess_ready(s);
		return;
	}
	e = SSL_get_error(s->ssl, r);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
		sess_watch(s, e == SSL_ERROR_WANT_READ ? EPOLLIN : EPOLLOUT, EPOLL_CTL_MOD);
		return;
	}
	fail(E_CONNECT, "tls handshake: %s", tls_handshake_reason(s->ssl, e));
	ERR_clear_error();
	SSL_free(s->ssl); /* no close_notify on a failed handshake */
	s->ssl = NULL;
	sess_fail(s);
}

/* The TCP connection is up and watched (op was ADD or MOD). */
static void sess_connected(struct sess *s, int op)
{
	if (!o.tls) {
		sess_watch(s, EPOLLIN, op);
		sess_ready(s);
		return;
	}
	s->ssl = tls_new(s->fd);
	if (!s->ssl) {
		sess_fail(s);
		return;
	}
	sess_watch(s, EPOLLOUT, op); /* the ClientHello goes out at once; MOD follows */
	s->st = S_HANDSHAKE;
	s->deadline = step_deadline();
	sess_handshake(s);
}

static void sess_start(struct sess *s)
{
	if (s->st == S_IDLE)
		s->t0 = now_ns();
	s->fd = new_socket(1);
	if (s->fd < 0) {
		fail(E_CONNECT, "socket: %s", strerror(errno));
		sess_fail(s);
		return;
	}
	if (connect(s->fd, (struct sockaddr *)&o.addr, o.addrlen) < 0) {
		if (errno == EINPROGRESS) {
			s->st = S_CONNECTING;
			s->deadline = step_deadline();
			sess_watch(s, EPOLLOUT, EPOLL_CTL_ADD);
			return;
		}
		if (errno == EAGAIN && !o.is_tcp && now_ns() < s->deadline) {
			/*
			 * A Unix listener's backlog is full. A blocking client would
			 * sleep until there is room: back off (50 µs doubling to
			 * 6.4 ms) rather than spin and steal the CPU the proxy needs.
			 */
			unsigned shift = s->retries < 7 ? s->retries : 7;
			o.connect_retries++;
			s->retries++;
			s->retry_at = now_ns() + (50000ull << shift);
			sess_close(s);
			s->st = S_WAIT_RETRY;
			s->next_retry = m.retry_list;
			m.retry_list = s;
			return;
		}
		fail(E_CONNECT, "connect: %s", strerror(errno));
		sess_fail(s);
		return;
	}
	sess_connected(s, EPOLL_CTL_ADD);
}

static void sess_begin(struct sess *s)
{
	m.inflight++;
	s->deadline = step_deadline();
	sess_start(s);
}

/* The echo of the current request is complete and correct. */
static void sess_trip_done(struct sess *s)
{
	s->trips++;
	if (o.mode == M_HOLD && s->trips == 1) {
		s->st = S_HELD;
		m.inflight--;
		m.held++;
		return;
	}
	sess_close(s);
	s->st = S_DONE;
	if (o.mode == M_SETUP) {
		if (m.nlat == m.lat_cap) {
			m.lat_cap = m.lat_cap ? 2 * m.lat_cap : 65536;
			m.lat = realloc(m.lat, m.lat_cap * sizeof *m.lat);
			if (!m.lat)
				die("out of memory");
		}
		uint64_t end = now_ns();
		m.lat[m.nlat++] = end - s->t0;
		if (o.trace)
			fprintf(o.trace, "%" PRIu64 " %" PRIu64 " ok\n", s->t0, end);
	}
	m.inflight--;
	m.finished++;
	slot_recycle(s);
}

static void sess_event(struct sess *s, uint32_t events)
{
	if (s->st == S_CONNECTING) {
		int err = 0;
		socklen_t len = sizeof err;
		getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len);
		if (err) {
			fail(E_CONNECT, "connect: %s", strerror(err));
			sess_fail(s);
			return;
		}
		sess_connected(s, EPOLL_CTL_MOD);
		return;
	}
	if (s->st == S_HANDSHAKE) {
		sess_handshake(s);
		return;
	}
	if (!(events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
		return;
	if (s->st == S_HELD) {
		unsigned char b;
		const char *why = NULL;
		ssize_t r = s->ssl ? tls_recv(s->ssl, &b, 1, &why) : recv(s->fd, &b, 1, 0);
		if (r == 0)
			fail(E_EOF, "held session closed by the peer");
		else if (r > 0)
			fail(E_MISMATCH, "unexpected byte on a held session");
		else if (errno == EAGAIN || errno == EINTR)
			return; /* TLS: a record that carried no data (a session ticket) */
		else
			fail(errno_kind(errno), "held session: %s", why ? why : strerror(errno));
		sess_fail(s);
		return;
	}
	for (;;) {
		unsigned char *dst;
		size_t want;

		if (s->st == S_GREETING) {
			dst = m.scratch; /* checked against the expected slice as it arrives */
			want = o.greeting_len - s->got;
		} else if (s->st == S_ECHO) {
			dst = s->in + s->got;
			want = MSG_LEN - s->got;
		} else {
			return;
		}
		const char *why = NULL;
		ssize_t r = s->ssl ? tls_recv(s->ssl, dst, want, &why) : recv(s->fd, dst, want, 0);
		if (r < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return;
			fail(errno_kind(errno), "%s: %s", s->st == S_GREETING ? "greeting" : "echo",
			     why ? why : strerror(errno));
			sess_fail(s);
			return;
		}
		if (r == 0) {
			fail(E_EOF, "%s: EOF after %zu bytes", s->st == S_GREETING ? "greeting" : "echo",
			     s->got);
			sess_fail(s);
			return;
		}
		if (s->st == S_GREETING && o.greeting_given &&
		    memcmp(dst, o.greeting + s->got, (size_t)r) != 0) {
			fail(E_MISMATCH, "greeting differs from the expected one");
			sess_fail(s);
			return;
		}
		s->got += (size_t)r;
		if (s->st == S_GREETING && s->got == o.greeting_len) {
			sess_send(s);
			if (s->st != S_ECHO)
				return;
		} else if (s->st == S_ECHO && s->got == MSG_LEN) {
			if (memcmp(s->in, s->msg, MSG_LEN) != 0) {
				fail(E_MISMATCH, "echo differs from the request");
				sess_fail(s);
				return;
			}
			sess_trip_done(s);
			return;
		}
	}
}

/* Retry the connects that found a full backlog and whose time has come. */
static void retry_due(void)
{
	uint64_t now = now_ns();
	struct sess **pp = &m.retry_list;

	while (*pp) {
		struct sess *s = *pp;
		if (s->retry_at <= now) {
			*pp = s->next_retry;
			s->next_retry = NULL;
			sess_start(s); /* may put it back on the list */
		} else {
			pp = &s->next_retry;
		}
	}
}

/* Time out steps that overran. */
static void sweep(unsigned long lo, unsigned long hi)
{
	uint64_t now = now_ns();

	for (unsigned long i = lo; i < hi; i++) {
		struct sess *s = &m.s[i];
		if ((s->st == S_CONNECTING || s->st == S_HANDSHAKE || s->st == S_GREETING || s->st == S_ECHO) &&
		    now > s->deadline) {
			fail(E_TIMEOUT, "%s: no progress for %.1f s",
			     s->st == S_CONNECTING  ? "connect"
			     : s->st == S_HANDSHAKE ? "tls handshake"
			     : s->st == S_GREETING  ? "greeting"
			                            : "echo",
			     o.timeout_s);
			sess_fail(s);
		}
	}
}

/* Run the loop, starting sessions (up to the concurrency) if start_new, until done(). */
static int more_to_start(void)
{
	return m.started < o.sessions && (!m.stop_at || now_ns() < m.stop_at);
}

/* Start sessions (at most `concurrency` being set up) until none is left to start or in flight. */
static void drive(void)
{
	struct epoll_event evs[256];
	uint64_t last_sweep = now_ns();

	for (;;) {
		if (m.pause_list)
			pause_due();
		while (m.inflight < o.concurrency && m.nfree > 0 && more_to_start()) {
			m.started++;
			sess_begin(&m.s[m.free_slots[--m.nfree]]);
		}
		if (m.inflight == 0 && !more_to_start())
			break;
		int n = epoll_wait(m.ep, evs, 256, m.retry_list || m.pause_list ? 1 : 20);
		if (n < 0 && errno != EINTR)
			die("epoll_wait: %s", strerror(errno));
		for (int i = 0; i < n; i++)
			sess_event(evs[i].data.ptr, evs[i].events);
		uint64_t now = now_ns();
		if (m.retry_list)
			retry_due();
		if (now - last_sweep > 100000000u) {
			sweep(0, m.nslots);
			last_sweep = now;
		}
	}
}

static int run_setup(void)
{
	uint64_t t0;
	double secs;

	t0 = now_ns();
	if (o.duration_s > 0)
		m.stop_at = t0 + (uint64_t)(o.duration_s * 1e9);
	drive();
	secs = (double)(now_ns() - t0) / 1e9;
	qsort(m.lat, m.nlat, sizeof *m.lat, cmp_u64);
	printf(
	    "{\"mode\":\"setup\",\"target\":\"%s\",\"sessions\":%lu,\"concurrency\":%lu,\"greeting_len\":%zu,"
	    "\"ok\":%lu,\"seconds\":%.3f,\"sessions_per_s\":%.1f,\"p50_us\":%.1f,\"p99_us\":%.1f,"
	    "\"mean_us\":%.1f,\"max_us\":%.1f,\"connect_retries\":%lu,",
	    o.target, m.started, o.concurrency, o.greeting_len, m.nlat, secs,
	    secs > 0 ? (double)m.nlat / secs : 0, pct_us(m.lat, m.nlat, 50), pct_us(m.lat, m.nlat, 99),
	    mean_us(m.lat, m.nlat), m.nlat ? (double)m.lat[m.nlat - 1] / 1000 : 0, o.connect_retries);
	print_errors_json();
	printf("}\n");
	free(m.lat);
	if (o.trace && fclose(o.trace) != 0)
		die("--trace: %s", strerror(errno));
	o.trace = NULL;
	return (total_errors() || m.nlat != m.started || m.nlat == 0) ? 1 : 0;
}

static void on_usr1(int sig)
{
	(void)sig;
	got_usr1 = 1;
}

static void write_ready(unsigned long ok, unsigned long failed)
{
	char tmp[4200];
	FILE *f;

	if (!o.ready_file)
		return;
	snprintf(tmp, sizeof tmp, "%s.tmp", o.ready_file);
	f = fopen(tmp, "we");
	if (!f)
		die("%s: %s", tmp, strerror(errno));
	fprintf(f, "%lu %lu %ld\n", ok, failed, (long)getpid());
	if (fclose(f) != 0 || rename(tmp, o.ready_file) < 0)
		die("%s: %s", o.ready_file, strerror(errno));
}

static int run_hold(void)
{
	struct epoll_event evs[256];
	unsigned long opened;
	uint64_t t0, t_open, t_hold;
	double open_s, hold_s;

	signal(SIGUSR1, on_usr1);
	t0 = now_ns();
	drive();
	t_open = now_ns();
	open_s = (double)(t_open - t0) / 1e9;
	opened = m.held;
	write_ready(m.held, m.finished);
	fprintf(stderr, "wpload: hold: %lu of %lu sessions open in %.2f s; holding\n", m.held, o.sessions,
	        open_s);

	/* hold: nothing may arrive on a held session */
	while (!got_usr1 && (double)(now_ns() - t_open) / 1e9 < o.hold_seconds) {
		int n = epoll_wait(m.ep, evs, 256, 50);
		if (n < 0 && errno != EINTR)
			die("epoll_wait: %s", strerror(errno));
		for (int i = 0; i < n; i++)
			sess_event(evs[i].data.ptr, evs[i].events);
	}
	t_hold = now_ns();
	hold_s = (double)(t_hold - t_open) / 1e9;

	/* the second round trip on each held session, `concurrency` at a time like the first */
	{
		unsigned long idx = 0;
		uint64_t last_sweep = now_ns();

		for (;;) {
			while (m.inflight < o.concurrency && idx < o.sessions) {
				struct sess *s = &m.s[idx++];
				if (s->st != S_HELD)
					continue;
				m.held--;
				m.inflight++;
				s->st = S_ECHO; /* sess_send fails it as in flight, or sends */
				sess_send(s);
			}
			if (idx == o.sessions && m.inflight == 0)
				break;
			int n = epoll_wait(m.ep, evs, 256, 20);
			if (n < 0 && errno != EINTR)
				die("epoll_wait: %s", strerror(errno));
			for (int i = 0; i < n; i++)
				sess_event(evs[i].data.ptr,
				           evs[i].events); /* done in sess_trip_done, trips == 2 */
			if (now_ns() - last_sweep > 100000000u) {
				sweep(0, o.sessions);
				last_sweep = now_ns();
			}
		}
	}
	double trip2_s = (double)(now_ns() - t_hold) / 1e9;
	unsigned long ok = 0;
	for (unsigned long i = 0; i < o.sessions; i++)
		ok += m.s[i].st == S_DONE;
	printf("{\"mode\":\"hold\",\"target\":\"%s\",\"sessions\":%lu,\"concurrency\":%lu,\"opened\":%lu,"
	       "\"ok\":%lu,\"failed\":%lu,\"open_seconds\":%.3f,\"hold_seconds\":%.3f,\"trip2_seconds\":%.3f,"
	       "\"connect_retries\":%lu,",
	       o.target, o.sessions, o.concurrency, opened, ok, o.sessions - ok, open_s, hold_s, trip2_s,
	       o.connect_retries);
	print_errors_json();
	printf("}\n");
	return (ok != o.sessions || total_errors()) ? 1 : 0;
}

/* ---- main -------------------------------------------------------------- */

static unsigned long long parse_num(const char *opt, const char *s, unsigned long long min,
                                    unsigned long long max)
{
	char *end;
	unsigned long long v;
	unsigned long long mult = 1;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (*end == 'K' || *end == 'k')
		mult = 1024, end++;
	else if (*end == 'M')
		mult = 1024 * 1024, end++;
	else if (*end == 'G')
		mult = 1024ull * 1024 * 1024, end++;
	if (errno || end == s || *end || s[0] == '-' || v > max / mult || v * mult < min)
		die("%s: expected an integer %llu..%llu (K, M, G suffixes allowed), got \"%s\"", opt, min,
		    max, s);
	return v * mult;
}

static double parse_secs(const char *opt, const char *s)
{
	char *end;
	double v = strtod(s, &end);
	if (end == s || *end || !(v > 0) || v > 86400)
		die("%s: expected seconds > 0, got \"%s\"", opt, s);
	return v;
}

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: wpload (--unix PATH | --tcp HOST:PORT | --handoff PATH) --mode MODE [options]\n"
	        "modes: setup, rtt, bulk-up, bulk-down, hold (see the top of wpload.c)\n"
	        "  --handoff PATH          get each connection with wp_checkout() from a pool's handoff\n"
	        "                          socket and use the backend socket itself (rtt, bulk only)\n"
	        "  -n, --sessions N        setup/hold: sessions (default 1000)\n"
	        "  --duration SECS         setup: start sessions for SECS, at most N (then use a large N)\n"
	        "  -c, --concurrency C     setup/hold: sessions being set up at once (default 1)\n"
	        "  --greeting-len L        read an L-byte greeting first (default 0)\n"
	        "  --greeting STRING       expected greeting (\\r \\n \\t \\\\ \\0 \\xHH); sets L\n"
	        "  -k, --count K           rtt: timed round trips (default 20000)\n"
	        "  --warmup W              rtt: untimed round trips first (default 200)\n"
	        "  -b, --bytes B           bulk: stream length, K/M/G suffixes (default 1G)\n"
	        "  --seed S                bulk: splitmix64 seed (default 1)\n"
	        "  --hold-seconds T        hold: longest hold; SIGUSR1 ends it sooner (default 5)\n"
	        "  --ready-file FILE       hold: written \"OK FAILED PID\" once all sessions are open\n"
	        "  --timeout SECS          longest wait for any single step (default 10)\n"
	        "  --trace FILE            setup: one line per session, \"START_NS END_NS ok|KIND\"\n"
	        "  --fail-pause-ms MS      setup: a failed session's client waits MS before its next\n"
	        "  --deadline SECS         bulk: longest whole transfer (default 900)\n"
	        "  --tls-ca FILE           (--tcp only) speak TLS, verifying the backend against FILE\n"
	        "  --tls-name NAME         the name sent as SNI and verified (default: the --tcp host)\n"
	        "Prints one JSON line; exits 0, 1 if any byte or session failed, 2 on usage errors.\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"unix", required_argument, NULL, 'u'},
	    {"tcp", required_argument, NULL, 't'},
	    {"handoff", required_argument, NULL, 'o'},
	    {"mode", required_argument, NULL, 'm'},
	    {"sessions", required_argument, NULL, 'n'},
	    {"concurrency", required_argument, NULL, 'c'},
	    {"greeting-len", required_argument, NULL, 'L'},
	    {"greeting", required_argument, NULL, 'g'},
	    {"count", required_argument, NULL, 'k'},
	    {"warmup", required_argument, NULL, 'w'},
	    {"bytes", required_argument, NULL, 'b'},
	    {"seed", required_argument, NULL, 's'},
	    {"hold-seconds", required_argument, NULL, 'H'},
	    {"ready-file", required_argument, NULL, 'r'},
	    {"timeout", required_argument, NULL, 'T'},
	    {"deadline", required_argument, NULL, 'D'},
	    {"duration", required_argument, NULL, 'd'},
	    {"tls-ca", required_argument, NULL, 'A'},
	    {"tls-name", required_argument, NULL, 'N'},
	    {"trace", required_argument, NULL, 'R'},
	    {"fail-pause-ms", required_argument, NULL, 'P'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	int opt, have_target = 0, rc;
	const char *tls_ca = NULL;
	long greeting_len = -1;
	struct rlimit rl;

	while ((opt = getopt_long(argc, argv, "n:c:k:b:h", opts, NULL)) != -1) {
		switch (opt) {
		case 'u':
			parse_target_unix(optarg);
			o.target = optarg;
			have_target++;
			break;
		case 't':
			parse_target_tcp(optarg);
			o.target = optarg;
			have_target++;
			break;
		case 'o':
			o.handoff = optarg;
			o.target = optarg;
			o.is_tcp = 1; /* the handed-over socket is the backend's TCP connection */
			have_target++;
			break;
		case 'm': {
			size_t i;
			for (i = 0; i < sizeof mode_names / sizeof *mode_names; i++)
				if (!strcmp(optarg, mode_names[i]))
					break;
			if (i == sizeof mode_names / sizeof *mode_names)
				die("--mode: expected setup|rtt|bulk-up|bulk-down|hold, got \"%s\"", optarg);
			o.mode = (enum mode)i;
			break;
		}
		case 'n':
			o.sessions = (unsigned long)parse_num("--sessions", optarg, 1, 10000000);
			break;
		case 'c':
			o.concurrency = (unsigned long)parse_num("--concurrency", optarg, 1, 1000000);
			break;
		case 'L':
			greeting_len = (long)parse_num("--greeting-len", optarg, 0, MAX_GREETING);
			break;
		case 'g': {
			ssize_t glen = wp_unescape(optarg, (unsigned char *)o.greeting, sizeof o.greeting);
			if (glen < 0)
				die("--greeting: longer than %d bytes", MAX_GREETING);
			o.greeting_len = (size_t)glen;
			o.greeting_given = 1;
			break;
		}
		case 'k':
			o.count = (unsigned long)parse_num("--count", optarg, 1, 100000000);
			break;
		case 'w':
			o.warmup = (unsigned long)parse_num("--warmup", optarg, 0, 100000000);
			break;
		case 'b':
			o.bytes = parse_num("--bytes", optarg, 1, 1ull << 50);
			break;
		case 's':
			o.seed = parse_num("--seed", optarg, 0, UINT64_MAX);
			break;
		case 'H':
			o.hold_seconds = parse_secs("--hold-seconds", optarg);
			break;
		case 'r':
			o.ready_file = optarg;
			break;
		case 'T':
			o.timeout_s = parse_secs("--timeout", optarg);
			break;
		case 'D':
			o.deadline_s = parse_secs("--deadline", optarg);
			break;
		case 'd':
			o.duration_s = parse_secs("--duration", optarg);
			break;
		case 'A':
			tls_ca = optarg;
			break;
		case 'N':
			o.tls_name = optarg;
			break;
		case 'R':
			o.trace = fopen(optarg, "we");
			if (!o.trace)
				die("--trace %s: %s", optarg, strerror(errno));
			/* a line per session: buffered, flushed at the end, not on the clock */
			if (setvbuf(o.trace, NULL, _IOFBF, 1 << 20) != 0)
				die("--trace: setvbuf failed");
			break;
		case 'P':
			o.fail_pause_s = (double)parse_num("--fail-pause-ms", optarg, 0, 60000) / 1000.0;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc || have_target != 1) {
		usage(stderr);
		return 2;
	}
	if (tls_ca)
		tls_setup(tls_ca);
	else if (o.tls_name)
		die("--tls-name needs --tls-ca");
	if (o.handoff && (o.mode == M_SETUP || o.mode == M_HOLD))
		die("--mode %s is not supported with --handoff (rtt, bulk-up and bulk-down are)",
		    mode_names[o.mode]);
	if (greeting_len >= 0) {
		if (o.greeting_given && (size_t)greeting_len != o.greeting_len)
			die("--greeting-len %ld disagrees with --greeting (%zu bytes)", greeting_len,
			    o.greeting_len);
		o.greeting_len = (size_t)greeting_len;
	}
	signal(SIGPIPE, SIG_IGN);
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if ((o.mode == M_SETUP || o.mode == M_HOLD) && getrlimit(RLIMIT_NOFILE, &rl) == 0 &&
	    (o.mode == M_HOLD ? o.sessions : o.concurrency) + 16 > rl.rlim_cur)
		die("RLIMIT_NOFILE %llu is too low for %lu sessions", (unsigned long long)rl.rlim_cur,
		    o.mode == M_HOLD ? o.sessions : o.concurrency);

	switch (o.mode) {
	case M_RTT:
		rc = run_rtt();
		break;
	case M_BULK_UP:
		rc = run_bulk_up();
		break;
	case M_BULK_DOWN:
		rc = run_bulk_down();
		break;
	default:
		m.ep = epoll_create1(EPOLL_CLOEXEC);
		if (m.ep < 0)
			die("epoll_create1: %s", strerror(errno));
		m.nslots = o.mode == M_SETUP && o.concurrency < o.sessions ? o.concurrency : o.sessions;
		m.s = calloc(m.nslots, sizeof *m.s);
		m.free_slots = calloc(m.nslots, sizeof *m.free_slots);
		if (!m.s || !m.free_slots)
			die("out of memory");
		for (unsigned long i = 0; i < m.nslots; i++) {
			m.s[i].fd = -1;
			m.free_slots[m.nfree++] = m.nslots - 1 - i; /* slot 0 first */
		}
		rc = o.mode == M_SETUP ? run_setup() : run_hold();
		free(m.s);
		free(m.free_slots);
		close(m.ep);
		break;
	}
	fflush(stdout);
	SSL_CTX_free(o.tls);
	return rc;
}
