/*
 * tests/backend/wpbackend.c — the test and demo backend for warmpool.
 *
 * One process, one libev loop, one listening TCP socket. Each accepted
 * connection behaves according to --mode:
 *   echo    every byte read is written back (fixed buffer, backpressure: no
 *           reading while the buffer is full); after the peer's EOF the
 *           pending bytes are flushed and the connection is closed.
 *   reset   accepted and closed at once with an RST (SO_LINGER 0).
 *   sink    input is read and discarded; closed after the peer's EOF.
 *   source  input is read and discarded; the peer's first byte starts an
 *           output stream (a warm pool keeps connections idle, so the stream
 *           must wait for a client). The stream is the little-endian
 *           splitmix64 sequence from --seed, --source-bytes long (0 = endless),
 *           followed by shutdown(SHUT_WR).
 * With --sink-verify SEED (for the benchmark, tests/bench/), a sink checks its
 * input against the stream a source with --seed SEED sends and, after the
 * peer's EOF, answers one line before closing:
 *   sink bytes=<bytes_in> ok            every byte matched
 *   sink bytes=<bytes_in> bad at=<off>  the first wrong byte's offset
 * (a short or long stream is "ok" with the wrong count: the peer compares).
 * A greeting (--greeting, optionally after --greeting-delay-ms) is sent before
 * anything else; --idle-close-ms closes connections that saw no bytes for a
 * while. --events appends one line per accept/close, each with one write(2):
 *   accept <id> <CLOCK_MONOTONIC usec> <peer>
 *   close <id> <usec> <bytes_in> <bytes_out> <reason> crc32=<hex of bytes_in>
 * (the CRC is computed only when --events is given: nothing else reads it).
 * Reasons: eof, idle, reset (mode reset), peer_reset, error, limit, shutdown.
 * With --slow MAX_MS (echo mode), a read that starts with a whole line
 *   SLOW <ms> <text>\n        (ms <= MAX_MS, text < LATE_MAX bytes)
 * is not echoed: "<text>\n" is queued <ms> ms later (one pending per
 * connection; the rest of that read is echoed at once), with the event line
 *   late <id> <usec> <bytes>
 * — a backend whose reply arrives late, after its client may have gone.
 * SIGTERM/SIGINT close everything (reason shutdown) and exit 0. SIGUSR1
 * closes every open connection (reason usr1) and keeps listening: a test's
 * way to make connections die at a moment it chooses.
 *
 * TLS (--tls-cert FILE --tls-key FILE, optionally --tls-version 1.2|1.3 to
 * pin one version): every accepted connection is a TLS server connection
 * (OpenSSL 3, non-blocking, in the same loop) and every mode behaves as
 * above on the decrypted bytes, once the handshake is done; the greeting
 * follows the handshake. "shutdown(SHUT_WR)" becomes a close_notify, a
 * peer's close_notify (or a bare EOF: the benchmark's peers do not all send
 * one) is the EOF, and a connection closed after its work is done sends a
 * close_notify first. A failed handshake closes with reason tls_error (the
 * first few are explained on stderr). Session resumption (the server's
 * session cache, TLS 1.2 IDs and tickets, TLS 1.3 tickets) is OpenSSL's
 * default: proxies that resume their sessions to the backend may do so.
 */
#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <ev.h>

#include "escape.h"
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
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CONN_BUF     65536 /* echo buffer per connection */
#define SOURCE_CHUNK 16384 /* bytes generated per source write */
#define MAX_GREETING 1048576
#define LATE_MAX     256 /* --slow: the longest late reply, newline included */
#define TLS_ERRORS_SHOWN 10 /* failed handshakes explained on stderr; the rest only counted */

enum mode { MODE_ECHO, MODE_RESET, MODE_SINK, MODE_SOURCE };

struct conn {
	struct conn *prev, *next; /* on the global list */
	uint64_t id;
	int fd;
	SSL *ssl;                    /* TLS mode: the server connection, else NULL */
	unsigned hs_done : 1;        /* TLS: the handshake is complete */
	unsigned tls_want_write : 1; /* TLS: an SSL call is waiting for the socket to be writable */
	ev_io rio, wio;
	ev_timer idle;            /* --idle-close-ms, restarted on every byte */
	ev_timer greet;           /* --greeting-delay-ms */
	ev_timer late;            /* --slow: fires when late_buf is due */
	unsigned char late_buf[LATE_MAX];
	size_t late_len;
	size_t greet_off;         /* greeting bytes already sent */
	unsigned greet_ready : 1; /* the greeting may be sent (delay elapsed) */
	unsigned rd_eof : 1;
	unsigned wr_shut : 1;   /* source finished: shutdown(SHUT_WR) done */
	unsigned triggered : 1; /* source: the peer's first byte arrived */
	uint64_t bytes_in, bytes_out;
	uint32_t crc_in;           /* CRC-32 of every byte read */
	uint64_t src_sent;         /* source bytes produced so far */
	uint64_t src_state;        /* splitmix64 state */
	size_t out_off, out_len;   /* pending bytes in buf[out_off .. out_off+out_len) */
	uint64_t vfy_state;        /* --sink-verify: splitmix64 state of the expected stream */
	unsigned char vfy_word[8]; /* --sink-verify: the current expected word */
	unsigned vfy_used;         /* --sink-verify: bytes of vfy_word already compared */
	uint64_t vfy_bad;          /* --sink-verify: 1 + offset of the first wrong byte, 0 = none */
	unsigned char buf[CONN_BUF];
};

static struct {
	enum mode mode;
	char *greeting;
	size_t greeting_len;
	double greeting_delay; /* seconds */
	double idle_close;     /* seconds, 0 = never */
	uint64_t source_bytes; /* 0 = endless */
	uint64_t seed;
	int sink_verify; /* --sink-verify given */
	uint64_t sink_seed;
	unsigned long long slow_max_ms; /* --slow: 0 = SLOW lines are echoed like any bytes */
	unsigned max_conns;
	int events_fd;
	int lfd;
	ev_io lio;
	ev_timer lpause; /* accept paused after EMFILE/ENFILE */
	struct conn *conns;
	unsigned n_conns;
	uint64_t next_id;
	uint32_t crc_table[256];
	SSL_CTX *tls; /* --tls-cert/--tls-key given: the server context, else NULL */
	unsigned long tls_errors; /* failed handshakes and TLS stream errors */
} g = {.events_fd = -1, .lfd = -1, .max_conns = 4096, .seed = 1};

static void conn_close(struct ev_loop *loop, struct conn *c, const char *reason);
static void conn_pump(struct ev_loop *loop, struct conn *c);

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("wpbackend: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(2);
}

static uint64_t now_usec(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
		g.crc_table[i] = c;
	}
}

/* zlib-compatible: crc = crc_update(crc, ...) starting from 0. */
static uint32_t crc_update(uint32_t crc, const unsigned char *p, size_t n)
{
	crc = ~crc;
	while (n--)
		crc = g.crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

static uint64_t splitmix64(uint64_t *state)
{
	uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

/* One line, one write(2), O_APPEND: lines from one process never interleave. */
static void event_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void event_line(const char *fmt, ...)
{
	char line[512];
	va_list ap;
	int n;

	if (g.events_fd < 0)
		return;
	va_start(ap, fmt);
	n = vsnprintf(line, sizeof line - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof line - 2)
		n = sizeof line - 2;
	line[n++] = '\n';
	if (write(g.events_fd, line, (size_t)n) < 0)
		fprintf(stderr, "wpbackend: events: %s\n", strerror(errno));
}

static void format_addr(const struct sockaddr *sa, char *out, size_t len)
{
	char host[INET6_ADDRSTRLEN] = "?";
	unsigned port = 0;

	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
		port = ntohs(in->sin_port);
		snprintf(out, len, "%s:%u", host, port);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
		port = ntohs(in6->sin6_port);
		snprintf(out, len, "[%s]:%u", host, port);
	} else {
		snprintf(out, len, "unknown");
	}
}

/* ---- connections ------------------------------------------------------- */

static int greeting_pending(const struct conn *c)
{
	return c->greet_off < g.greeting_len;
}

/* Explain a TLS failure on stderr (the first TLS_ERRORS_SHOWN of them). */
static void tls_report(const struct conn *c, const char *what, int ssl_err)
{
	char buf[256];
	unsigned long e = ERR_peek_error();

	if (g.tls_errors++ >= TLS_ERRORS_SHOWN)
		return;
	if (e)
		ERR_error_string_n(e, buf, sizeof buf);
	else
		snprintf(buf, sizeof buf, "SSL_get_error %d, errno %s", ssl_err, strerror(errno));
	fprintf(stderr, "wpbackend: conn %" PRIu64 ": tls %s: %s\n", c->id, what, buf);
}

/*
 * The outcome of an SSL_read/SSL_write/SSL_shutdown that returned r <= 0, in
 * recv()'s terms: 0 at the peer's close_notify (a bare EOF counts: the
 * context ignores unexpected EOFs), else -1 with errno EAGAIN (try again when
 * the socket is ready: tls_want_write says which way) or the error.
 */
static ssize_t tls_outcome(struct conn *c, int r, const char *what)
{
	int e = SSL_get_error(c->ssl, r);

	switch (e) {
	case SSL_ERROR_ZERO_RETURN:
		return 0;
	case SSL_ERROR_WANT_READ:
		errno = EAGAIN;
		return -1;
	case SSL_ERROR_WANT_WRITE:
		c->tls_want_write = 1;
		errno = EAGAIN;
		return -1;
	case SSL_ERROR_SYSCALL:
		if (errno == 0 || errno == EAGAIN)
			errno = EPROTO;
		if (errno != ECONNRESET && errno != EPIPE)
			tls_report(c, what, e);
		return -1;
	default:
		tls_report(c, what, e);
		errno = EPROTO;
		return -1;
	}
}

/* recv() of the connection's bytes, decrypted in TLS mode. */
static ssize_t conn_recv(struct conn *c, void *buf, size_t n)
{
	int r;

	if (!c->ssl)
		return recv(c->fd, buf, n, 0);
	ERR_clear_error();
	r = SSL_read(c->ssl, buf, n > INT_MAX ? INT_MAX : (int)n);
	return r > 0 ? r : tls_outcome(c, r, "read");
}

/* send() of the connection's bytes, encrypted in TLS mode (partial writes allowed). */
static ssize_t conn_send(struct conn *c, const void *p, size_t n)
{
	int r;

	if (!c->ssl)
		return send(c->fd, p, n, MSG_NOSIGNAL);
	ERR_clear_error();
	r = SSL_write(c->ssl, p, n > INT_MAX ? INT_MAX : (int)n);
	if (r > 0)
		return r;
	r = (int)tls_outcome(c, r, "write");
	if (r == 0) { /* a write cannot meet the peer's close_notify: call it a reset */
		errno = EPIPE;
		r = -1;
	}
	return r;
}

/* shutdown(SHUT_WR), a close_notify in TLS mode: 0, or -1 with errno (EAGAIN: retry). */
static int conn_shut_wr(struct conn *c)
{
	int r;

	if (!c->ssl)
		return shutdown(c->fd, SHUT_WR);
	ERR_clear_error();
	r = SSL_shutdown(c->ssl);
	if (r >= 0)
		return 0;
	return tls_outcome(c, r, "shutdown") == 0 ? 0 : -1;
}

/* Arm exactly the watchers the connection's state calls for. */
static void conn_update(struct ev_loop *loop, struct conn *c)
{
	int want_read = !c->rd_eof;
	int want_write = 0;

	if (g.mode == MODE_ECHO && c->out_len == CONN_BUF)
		want_read = 0; /* backpressure: the peer is not reading its echo */
	if (greeting_pending(c)) {
		want_write = c->greet_ready;
	} else if (g.mode == MODE_ECHO) {
		want_write = c->out_len > 0;
	} else if (g.mode == MODE_SOURCE) {
		want_write = c->triggered && !c->wr_shut;
	} else if (g.mode == MODE_SINK) {
		want_write = c->out_len > 0; /* the --sink-verify verdict */
	}
	want_write |= c->tls_want_write;
	if (want_read)
		ev_io_start(loop, &c->rio);
	else
		ev_io_stop(loop, &c->rio);
	if (want_write)
		ev_io_start(loop, &c->wio);
	else
		ev_io_stop(loop, &c->wio);
	/* decrypted bytes waiting inside OpenSSL make the socket no more readable */
	if (want_read && c->ssl && SSL_pending(c->ssl) > 0)
		ev_feed_event(loop, &c->rio, EV_READ);
}

static void conn_activity(struct ev_loop *loop, struct conn *c)
{
	if (g.idle_close > 0)
		ev_timer_again(loop, &c->idle);
}

/*
 * Write what may be written now. Returns 0, or -1 after closing the
 * connection on a write error.
 */
static int conn_flush(struct ev_loop *loop, struct conn *c)
{
	for (;;) {
		const unsigned char *p;
		size_t n;

		if (greeting_pending(c)) {
			if (!c->greet_ready)
				return 0;
			p = (const unsigned char *)g.greeting + c->greet_off;
			n = g.greeting_len - c->greet_off;
		} else if ((g.mode == MODE_ECHO || g.mode == MODE_SINK) && c->out_len > 0) {
			p = c->buf + c->out_off;
			n = c->out_len;
		} else if (g.mode == MODE_SOURCE && c->triggered && !c->wr_shut) {
			if (c->out_len == 0) {
				uint64_t left = g.source_bytes ? g.source_bytes - c->src_sent : SOURCE_CHUNK;
				size_t chunk = left < SOURCE_CHUNK ? (size_t)left : SOURCE_CHUNK;
				if (chunk == 0) {
					if (conn_shut_wr(c) < 0 && errno == EAGAIN)
						return 0; /* the close_notify waits for room */
					c->wr_shut = 1;
					return 0;
				}
				for (size_t i = 0; i < chunk; i += 8) {
					uint64_t v = splitmix64(&c->src_state);
					if (i + 8 <= chunk) {
						uint64_t le = htole64(v);
						memcpy(c->buf + i, &le, 8);
						continue;
					}
					for (size_t k = 0; i + k < chunk; k++)
						c->buf[i + k] = (unsigned char)(v >> (8 * k));
				}
				c->out_off = 0;
				c->out_len = chunk;
				c->src_sent += chunk;
			}
			p = c->buf + c->out_off;
			n = c->out_len;
		} else {
			return 0;
		}

		ssize_t w = conn_send(c, p, n);
		if (w < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			if (errno == EINTR)
				continue;
			conn_close(loop, c, (errno == EPIPE || errno == ECONNRESET) ? "peer_reset" : "error");
			return -1;
		}
		c->bytes_out += (uint64_t)w;
		conn_activity(loop, c);
		if (greeting_pending(c)) {
			c->greet_off += (size_t)w;
		} else {
			c->out_off += (size_t)w;
			c->out_len -= (size_t)w;
			if (c->out_len == 0)
				c->out_off = 0;
		}
	}
}

/* --sink-verify: compare n input bytes with the expected stream. */
static void sink_verify(struct conn *c, const unsigned char *p, size_t n)
{
	uint64_t off = c->bytes_in - n; /* stream offset of p[0] */
	size_t i = 0;

	if (c->vfy_bad)
		return;
	while (i < n) {
		if (c->vfy_used == 8) {
			/* fast path: whole words while they match */
			for (; n - i >= 8; i += 8) {
				uint64_t want = htole64(splitmix64(&c->vfy_state)), got;
				memcpy(&got, p + i, 8);
				if (got != want) {
					memcpy(c->vfy_word, &want, 8);
					c->vfy_used = 0;
					break;
				}
			}
			if (i == n)
				return;
			if (c->vfy_used == 8) {
				uint64_t want = htole64(splitmix64(&c->vfy_state));
				memcpy(c->vfy_word, &want, 8);
				c->vfy_used = 0;
			}
		}
		if (p[i] != c->vfy_word[c->vfy_used]) {
			c->vfy_bad = off + i + 1;
			return;
		}
		i++;
		c->vfy_used++;
	}
}

/* --sink-verify: queue the one-line verdict, sent before the close. */
static void sink_verdict(struct conn *c)
{
	int n;

	if (c->vfy_bad)
		n = snprintf((char *)c->buf, CONN_BUF, "sink bytes=%" PRIu64 " bad at=%" PRIu64 "\n",
		             c->bytes_in, c->vfy_bad - 1);
	else
		n = snprintf((char *)c->buf, CONN_BUF, "sink bytes=%" PRIu64 " ok\n", c->bytes_in);
	c->out_off = 0;
	c->out_len = (size_t)n;
}

/* --slow: `n` bytes just read into `p` (the echo buffer): a leading
 * "SLOW <ms> <text>\n" is taken out and its text queued for later. Returns
 * how many bytes are left to echo at p. */
static size_t slow_command(struct ev_loop *loop, struct conn *c, unsigned char *p, size_t n)
{
	char line[LATE_MAX + 32], *end;
	const unsigned char *nl = g.slow_max_ms ? memchr(p, '\n', n) : NULL;
	size_t len = nl ? (size_t)(nl - p) : 0;

	if (!nl || len < 5 || memcmp(p, "SLOW ", 5) != 0 || len >= sizeof line || ev_is_active(&c->late))
		return n;
	memcpy(line, p, len);
	line[len] = '\0';
	errno = 0;
	unsigned long long ms = strtoull(line + 5, &end, 10);
	if (errno || end == line + 5 || *end != ' ' || ms > g.slow_max_ms ||
	    len - (size_t)(end + 1 - line) + 1 > LATE_MAX)
		return n;
	c->late_len = len - (size_t)(end + 1 - line);
	memcpy(c->late_buf, end + 1, c->late_len);
	c->late_buf[c->late_len++] = '\n';
	ev_timer_set(&c->late, (double)ms / 1000.0, 0.);
	ev_timer_start(loop, &c->late);
	memmove(p, nl + 1, n - len - 1);
	return n - len - 1;
}

static void conn_late_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct conn *c = w->data;

	(void)revents;
	if (c->out_off + c->out_len + c->late_len > CONN_BUF) {
		memmove(c->buf, c->buf + c->out_off, c->out_len);
		c->out_off = 0;
	}
	if (c->out_len + c->late_len > CONN_BUF) {
		fprintf(stderr, "wpbackend: conn %" PRIu64 ": no room for the late reply, dropped\n", c->id);
	} else {
		memcpy(c->buf + c->out_off + c->out_len, c->late_buf, c->late_len);
		c->out_len += c->late_len;
		event_line("late %" PRIu64 " %" PRIu64 " %zu", c->id, now_usec(), c->late_len);
	}
	conn_pump(loop, c);
}

/* Read what may be read now. Returns 0, or -1 after closing on an error. */
static int conn_read(struct ev_loop *loop, struct conn *c)
{
	unsigned char scratch[16384];

	while (!c->rd_eof) {
		unsigned char *dst;
		size_t room;

		if (g.mode == MODE_ECHO) {
			if (c->out_off > 0 && c->out_off + c->out_len == CONN_BUF) {
				memmove(c->buf, c->buf + c->out_off, c->out_len);
				c->out_off = 0;
			}
			room = CONN_BUF - (c->out_off + c->out_len);
			if (room == 0)
				return 0; /* full: conn_update stops reading */
			dst = c->buf + c->out_off + c->out_len;
		} else {
			dst = scratch;
			room = sizeof scratch;
		}
		ssize_t r = conn_recv(c, dst, room);
		if (r < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			if (errno == EINTR)
				continue;
			conn_close(loop, c, errno == ECONNRESET ? "peer_reset" : c->ssl ? "tls_error" : "error");
			return -1;
		}
		if (r == 0) {
			c->rd_eof = 1;
			if (g.mode == MODE_SINK && g.sink_verify)
				sink_verdict(c);
			return 0;
		}
		c->bytes_in += (uint64_t)r;
		if (g.events_fd >= 0)
			c->crc_in = crc_update(c->crc_in, dst, (size_t)r);
		if (g.mode == MODE_SINK && g.sink_verify)
			sink_verify(c, dst, (size_t)r);
		conn_activity(loop, c);
		if (g.mode == MODE_ECHO)
			c->out_len += slow_command(loop, c, dst, (size_t)r);
		else if (g.mode == MODE_SOURCE)
			c->triggered = 1;
		if (g.mode == MODE_ECHO && !greeting_pending(c))
			return 0; /* write before reading more */
	}
	return 0;
}

/* Has the connection done everything it will do after the peer's EOF? */
static int conn_finished(const struct conn *c)
{
	if (!c->rd_eof || greeting_pending(c))
		return 0;
	switch (g.mode) {
	case MODE_ECHO:
		return c->out_len == 0 && !ev_is_active(&c->late);
	case MODE_SINK: /* out_len > 0 only while a --sink-verify verdict is pending */
		return c->out_len == 0;
	case MODE_SOURCE:
		/* a bounded stream is finished first; an endless one stops here */
		return !c->triggered || c->wr_shut || g.source_bytes == 0;
	default:
		return 1;
	}
}

/*
 * TLS: advance the handshake. 1 once it is done; 0 while it waits for the
 * socket (the watchers are set for that); -1 after closing on a failure.
 */
static int conn_handshake(struct ev_loop *loop, struct conn *c)
{
	int r, e;

	if (c->hs_done)
		return 1;
	ERR_clear_error();
	r = SSL_do_handshake(c->ssl);
	if (r == 1) {
		c->hs_done = 1;
		return 1;
	}
	e = SSL_get_error(c->ssl, r);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
		if (e == SSL_ERROR_WANT_READ)
			ev_io_start(loop, &c->rio);
		else
			ev_io_stop(loop, &c->rio);
		if (e == SSL_ERROR_WANT_WRITE)
			ev_io_start(loop, &c->wio);
		else
			ev_io_stop(loop, &c->wio);
		return 0;
	}
	if (!(e == SSL_ERROR_SYSCALL && (errno == 0 || errno == ECONNRESET || errno == EPIPE)))
		tls_report(c, "handshake", e);
	else
		g.tls_errors++; /* the peer went away mid-handshake: not worth a line */
	conn_close(loop, c, "tls_error");
	return -1;
}

static void conn_pump(struct ev_loop *loop, struct conn *c)
{
	if (c->ssl && conn_handshake(loop, c) <= 0)
		return;
	c->tls_want_write = 0; /* set again by whichever SSL call still needs it */
	for (int round = 0; round < 64; round++) {
		uint64_t before_in = c->bytes_in, before_out = c->bytes_out;
		unsigned before_eof = c->rd_eof;

		if (conn_flush(loop, c) < 0)
			return;
		if (conn_read(loop, c) < 0)
			return;
		if (conn_flush(loop, c) < 0)
			return;
		if (conn_finished(c)) {
			conn_close(loop, c, "eof");
			return;
		}
		if (c->bytes_in == before_in && c->bytes_out == before_out && c->rd_eof == before_eof)
			break;
	}
	conn_update(loop, c);
}

static void conn_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)revents;
	conn_pump(loop, w->data);
}

static void conn_idle_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)revents;
	conn_close(loop, w->data, "idle");
}

static void conn_greet_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct conn *c = w->data;

	(void)revents;
	c->greet_ready = 1;
	conn_pump(loop, c);
}

static void conn_close(struct ev_loop *loop, struct conn *c, const char *reason)
{
	ev_io_stop(loop, &c->rio);
	ev_io_stop(loop, &c->wio);
	ev_timer_stop(loop, &c->idle);
	ev_timer_stop(loop, &c->greet);
	ev_timer_stop(loop, &c->late);
	if (c->ssl) {
		/* work done (or the operator's signal): say so with a close_notify, best effort */
		if (c->hs_done && (!strcmp(reason, "eof") || !strcmp(reason, "idle") ||
		                   !strcmp(reason, "usr1") || !strcmp(reason, "shutdown")) &&
		    !(SSL_get_shutdown(c->ssl) & SSL_SENT_SHUTDOWN)) {
			ERR_clear_error();
			(void)SSL_shutdown(c->ssl);
		}
		SSL_free(c->ssl);
		ERR_clear_error();
	}
	close(c->fd);
	event_line("close %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %s crc32=%08x", c->id, now_usec(),
	           c->bytes_in, c->bytes_out, reason, c->crc_in);
	if (c->prev)
		c->prev->next = c->next;
	else
		g.conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	g.n_conns--;
	free(c);
}

static void conn_new(struct ev_loop *loop, int fd, uint64_t id)
{
	struct conn *c = calloc(1, sizeof *c);
	int one = 1;

	if (!c) {
		close(fd);
		event_line("close %" PRIu64 " %" PRIu64 " 0 0 error crc32=00000000", id, now_usec());
		return;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	if (g.tls) {
		c->ssl = SSL_new(g.tls);
		if (!c->ssl || SSL_set_fd(c->ssl, fd) != 1) {
			SSL_free(c->ssl);
			free(c);
			close(fd);
			event_line("close %" PRIu64 " %" PRIu64 " 0 0 error crc32=00000000", id, now_usec());
			return;
		}
		SSL_set_accept_state(c->ssl);
	}
	c->id = id;
	c->fd = fd;
	c->src_state = g.seed;
	c->vfy_state = g.sink_seed;
	c->vfy_used = 8;
	c->greet_ready = g.greeting_delay <= 0;
	ev_io_init(&c->rio, conn_io_cb, fd, EV_READ);
	ev_io_init(&c->wio, conn_io_cb, fd, EV_WRITE);
	ev_timer_init(&c->idle, conn_idle_cb, 0., g.idle_close);
	ev_timer_init(&c->greet, conn_greet_cb, g.greeting_delay, 0.);
	ev_timer_init(&c->late, conn_late_cb, 0., 0.);
	c->rio.data = c->wio.data = c->idle.data = c->greet.data = c->late.data = c;
	c->next = g.conns;
	if (g.conns)
		g.conns->prev = c;
	g.conns = c;
	g.n_conns++;
	if (g.idle_close > 0)
		ev_timer_again(loop, &c->idle);
	if (!c->greet_ready && g.greeting_len > 0)
		ev_timer_start(loop, &c->greet);
	else
		c->greet_ready = 1;
	conn_pump(loop, c);
}

/* ---- listening --------------------------------------------------------- */

static void listen_pause_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)w;
	(void)revents;
	ev_io_start(loop, &g.lio);
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)revents;
	for (;;) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof ss;
		char peer[INET6_ADDRSTRLEN + 16];
		int fd = accept4(w->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
				fprintf(stderr, "wpbackend: accept: %s (pausing 100ms)\n", strerror(errno));
				ev_io_stop(loop, &g.lio);
				ev_timer_set(&g.lpause, 0.1, 0.);
				ev_timer_start(loop, &g.lpause);
			} else if (errno != EAGAIN && errno != EWOULDBLOCK) {
				fprintf(stderr, "wpbackend: accept: %s\n", strerror(errno));
			}
			return;
		}
		uint64_t id = ++g.next_id;
		format_addr((struct sockaddr *)&ss, peer, sizeof peer);
		event_line("accept %" PRIu64 " %" PRIu64 " %s", id, now_usec(), peer);
		if (g.mode == MODE_RESET) {
			struct linger lg = {.l_onoff = 1, .l_linger = 0};
			setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
			close(fd);
			event_line("close %" PRIu64 " %" PRIu64 " 0 0 reset crc32=00000000", id, now_usec());
			continue;
		}
		if (g.n_conns >= g.max_conns) {
			close(fd);
			event_line("close %" PRIu64 " %" PRIu64 " 0 0 limit crc32=00000000", id, now_usec());
			continue;
		}
		conn_new(loop, fd, id);
	}
}

/* "HOST:PORT" or "[V6]:PORT" → a bound, listening, non-blocking socket. */
static int open_listener(const char *spec, char *bound, size_t boundlen)
{
	char host[256];
	const char *port;
	struct addrinfo hints = {0}, *res = NULL, *ai;
	int fd = -1, err, one = 1;

	if (spec[0] == '[') {
		const char *end = strchr(spec, ']');
		if (!end || end[1] != ':' || (size_t)(end - spec - 1) >= sizeof host)
			die("--listen %s: expected [V6ADDR]:PORT", spec);
		memcpy(host, spec + 1, (size_t)(end - spec - 1));
		host[end - spec - 1] = '\0';
		port = end + 2;
	} else {
		const char *colon = strrchr(spec, ':');
		if (!colon || (size_t)(colon - spec) >= sizeof host)
			die("--listen %s: expected HOST:PORT", spec);
		memcpy(host, spec, (size_t)(colon - spec));
		host[colon - spec] = '\0';
		port = colon + 1;
	}
	if (!*port)
		die("--listen %s: missing port", spec);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	err = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
	if (err)
		die("--listen %s: %s", spec, gai_strerror(err));
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
		if (fd < 0)
			continue;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
		if (ai->ai_family == AF_INET6)
			setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 1024) == 0)
			break;
		err = errno;
		close(fd);
		fd = -1;
		errno = err;
	}
	if (fd < 0) {
		int e = errno;
		freeaddrinfo(res);
		die("--listen %s: %s", spec, strerror(e));
	}
	freeaddrinfo(res);

	struct sockaddr_storage ss;
	socklen_t sl = sizeof ss;
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
		die("getsockname: %s", strerror(errno));
	format_addr((struct sockaddr *)&ss, bound, boundlen);
	return fd;
}

static void write_port_file(const char *path, const char *bound)
{
	const char *colon = strrchr(bound, ':');
	char tmp[4096];
	FILE *f;

	if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= sizeof tmp)
		die("--port-file: path too long");
	f = fopen(tmp, "we");
	if (!f)
		die("%s: %s", tmp, strerror(errno));
	fprintf(f, "%s\n", colon ? colon + 1 : "0");
	if (fclose(f) != 0)
		die("%s: %s", tmp, strerror(errno));
	if (rename(tmp, path) < 0)
		die("rename %s: %s", path, strerror(errno));
}

static unsigned long long parse_num(const char *opt, const char *s, unsigned long long max)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-' || v > max)
		die("%s: expected an integer 0..%llu, got \"%s\"", opt, max, s);
	return v;
}

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: wpbackend --listen HOST:PORT [options]\n"
	        "  --listen HOST:PORT       address to listen on (port 0 = ephemeral; [::1]:PORT for IPv6)\n"
	        "  --port-file FILE         write the bound port to FILE (atomically) once listening\n"
	        "  --mode echo|reset|sink|source   (default echo)\n"
	        "  --greeting STRING        sent first on every connection (\\r \\n \\t \\\\ \\0 \\xHH)\n"
	        "  --greeting-delay-ms N    send the greeting N ms after accept\n"
	        "  --idle-close-ms N        close a connection that saw no bytes for N ms\n"
	        "  --source-bytes N         source: stream length, then shutdown(SHUT_WR) (0 = endless)\n"
	        "  --seed N                 source: splitmix64 seed (default 1)\n"
	        "  --sink-verify SEED       sink: check the input against the source stream of SEED and\n"
	        "                           answer \"sink bytes=N ok\" (or \"... bad at=OFFSET\") after EOF\n"
	        "  --slow MAX_MS            echo: a read starting \"SLOW <ms> <text>\\n\" (ms <= MAX_MS) is\n"
	        "                           answered \"<text>\\n\" <ms> ms later instead of echoed\n"
	        "  --max-conns N            connections beyond N are closed at once (default 4096)\n"
	        "  --events FILE            append one line per accept/close\n"
	        "  --tls-cert FILE          speak TLS (server side) with this PEM certificate chain\n"
	        "  --tls-key FILE           and this PEM private key (both required for TLS)\n"
	        "  --tls-version 1.2|1.3    accept only this TLS version (default: 1.2 and 1.3)\n");
}

/* The TLS server context, or die saying which file or setting is wrong. */
static SSL_CTX *tls_context(const char *cert, const char *key, const char *version)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	int v = 0;
	char err[256];

	if (!ctx)
		die("SSL_CTX_new failed");
	if (version) {
		if (!strcmp(version, "1.2"))
			v = TLS1_2_VERSION;
		else if (!strcmp(version, "1.3"))
			v = TLS1_3_VERSION;
		else
			die("--tls-version: expected 1.2 or 1.3, got \"%s\"", version);
	}
	if (!SSL_CTX_set_min_proto_version(ctx, v ? v : TLS1_2_VERSION) ||
	    (v && !SSL_CTX_set_max_proto_version(ctx, v)))
		die("--tls-version %s: not supported by this OpenSSL", version ? version : "1.2");
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
		ERR_error_string_n(ERR_get_error(), err, sizeof err);
		die("--tls-cert %s: %s", cert, err);
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
		ERR_error_string_n(ERR_get_error(), err, sizeof err);
		die("--tls-key %s: %s", key, err);
	}
	/* a peer's bare EOF is its EOF (not every proxy sends close_notify) */
	SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
	/* writes may be partial and retried from a moved buffer (echo compacts it) */
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"wpbackend", 9);
	return ctx;
}

static void usr1_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	(void)w;
	(void)revents;
	while (g.conns)
		conn_close(loop, g.conns, "usr1");
}

static void signal_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	(void)w;
	(void)revents;
	ev_break(loop, EVBREAK_ALL);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"listen", required_argument, NULL, 'l'},
	    {"port-file", required_argument, NULL, 'p'},
	    {"mode", required_argument, NULL, 'm'},
	    {"greeting", required_argument, NULL, 'g'},
	    {"greeting-delay-ms", required_argument, NULL, 'G'},
	    {"idle-close-ms", required_argument, NULL, 'i'},
	    {"source-bytes", required_argument, NULL, 'b'},
	    {"seed", required_argument, NULL, 's'},
	    {"max-conns", required_argument, NULL, 'c'},
	    {"slow", required_argument, NULL, 'S'},
	    {"sink-verify", required_argument, NULL, 'V'},
	    {"events", required_argument, NULL, 'e'},
	    {"tls-cert", required_argument, NULL, 'C'},
	    {"tls-key", required_argument, NULL, 'K'},
	    {"tls-version", required_argument, NULL, 'v'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *listen_spec = NULL, *port_file = NULL, *events = NULL;
	const char *tls_cert = NULL, *tls_key = NULL, *tls_version = NULL;
	char bound[INET6_ADDRSTRLEN + 16];
	struct ev_loop *loop;
	ev_signal sterm, sint, susr1;
	int opt;

	while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (opt) {
		case 'l':
			listen_spec = optarg;
			break;
		case 'p':
			port_file = optarg;
			break;
		case 'e':
			events = optarg;
			break;
		case 'C':
			tls_cert = optarg;
			break;
		case 'K':
			tls_key = optarg;
			break;
		case 'v':
			tls_version = optarg;
			break;
		case 'm':
			if (!strcmp(optarg, "echo"))
				g.mode = MODE_ECHO;
			else if (!strcmp(optarg, "reset"))
				g.mode = MODE_RESET;
			else if (!strcmp(optarg, "sink"))
				g.mode = MODE_SINK;
			else if (!strcmp(optarg, "source"))
				g.mode = MODE_SOURCE;
			else
				die("--mode: expected echo|reset|sink|source, got \"%s\"", optarg);
			break;
		case 'g': {
			size_t len = strlen(optarg);
			if (len > MAX_GREETING)
				die("--greeting: longer than %d bytes", MAX_GREETING);
			free(g.greeting);
			g.greeting = malloc(len + 1);
			if (!g.greeting)
				die("out of memory");
			ssize_t glen = wp_unescape(optarg, (unsigned char *)g.greeting, len + 1);
			if (glen < 0) /* cannot happen: decoding never lengthens */
				die("--greeting: does not fit");
			g.greeting_len = (size_t)glen;
			break;
		}
		case 'G':
			g.greeting_delay = (double)parse_num("--greeting-delay-ms", optarg, 86400000) / 1000.;
			break;
		case 'i':
			g.idle_close = (double)parse_num("--idle-close-ms", optarg, 86400000) / 1000.;
			break;
		case 'b':
			g.source_bytes = parse_num("--source-bytes", optarg, UINT64_MAX);
			break;
		case 's':
			g.seed = parse_num("--seed", optarg, UINT64_MAX);
			break;
		case 'V':
			g.sink_verify = 1;
			g.sink_seed = parse_num("--sink-verify", optarg, UINT64_MAX);
			break;
		case 'c':
			g.max_conns = (unsigned)parse_num("--max-conns", optarg, 1000000);
			break;
		case 'S':
			g.slow_max_ms = parse_num("--slow", optarg, 3600000);
			break;
		case 'h':
			usage(stdout);
			free(g.greeting);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc || !listen_spec) {
		usage(stderr);
		return 2;
	}

	if (!tls_cert != !tls_key || (tls_version && !tls_cert))
		die("--tls-cert and --tls-key go together (and --tls-version needs them)");
	signal(SIGPIPE, SIG_IGN);
	crc_init();
	if (tls_cert)
		g.tls = tls_context(tls_cert, tls_key, tls_version);
	if (events) {
		g.events_fd = open(events, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
		if (g.events_fd < 0)
			die("%s: %s", events, strerror(errno));
	}
	loop = ev_default_loop(EVFLAG_AUTO);
	if (!loop)
		die("cannot initialise libev");
	g.lfd = open_listener(listen_spec, bound, sizeof bound);
	ev_io_init(&g.lio, accept_cb, g.lfd, EV_READ);
	ev_timer_init(&g.lpause, listen_pause_cb, 0.1, 0.);
	ev_io_start(loop, &g.lio);
	ev_signal_init(&sterm, signal_cb, SIGTERM);
	ev_signal_init(&sint, signal_cb, SIGINT);
	ev_signal_start(loop, &sterm);
	ev_signal_start(loop, &sint);
	ev_signal_init(&susr1, usr1_cb, SIGUSR1);
	ev_signal_start(loop, &susr1);

	if (port_file)
		write_port_file(port_file, bound);
	printf("wpbackend listening on %s%s\n", bound, g.tls ? " (TLS)" : "");
	fflush(stdout);

	ev_run(loop, 0);

	while (g.conns)
		conn_close(loop, g.conns, "shutdown");
	ev_io_stop(loop, &g.lio);
	ev_timer_stop(loop, &g.lpause);
	ev_signal_stop(loop, &sterm);
	ev_signal_stop(loop, &sint);
	ev_signal_stop(loop, &susr1);
	close(g.lfd);
	if (g.events_fd >= 0)
		close(g.events_fd);
	free(g.greeting);
	SSL_CTX_free(g.tls);
	ev_loop_destroy(loop);
	return 0;
}
