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
 * The role-aware presets (postgres_primary, redis_master) hold a
 * conversation instead of one request and one reply: SENDING and READING
 * alternate, each server message parsed as soon as it is whole (lengths
 * bounded by HEALTH_ROLE_REPLY_MAX), until the server says whether it is the
 * primary/master. They log in first when asked to (PostgreSQL: trust,
 * cleartext, md5 or SCRAM-SHA-256 with the server's signature verified, the
 * pure steps in lib/scram.c; Redis: AUTH), with the password the loader read
 * from password_file, so a demoted node that still accepts connections is
 * taken down after a failover.
 *
 * Scheduling: the first check of each backend starts at a random point of
 * the first `interval`, and every later delay is jittered by HEALTH_JITTER,
 * so many backends are never probed in lockstep. The delay is `interval`
 * while a backend is steady, `fast_interval` while it is changing state
 * (some failures while up, or some successes while down) and
 * `down_interval` while it is down.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "engine.h"
#include "escape.h"
#include "log.h"
#include "scram.h"

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
	case CFG_CHECK_POSTGRES_PRIMARY: /* conversations, not one reply: role_input */
	case CFG_CHECK_REDIS_MASTER:
		break;
	}
	return 1;
}

/* ---- role-aware checks: postgres_primary, redis_master ------------------ */

/*
 * These checks are conversations, not one request and one reply: log in
 * (trust, a cleartext or md5 password, or SCRAM-SHA-256 whose server
 * signature is verified), ask the server whether it is the primary, judge
 * the answer. Each server message is parsed as soon as it is whole and
 * consumed; the next request goes out through the same SENDING phase (armed
 * for EV_WRITE, never sent from inside the parser). Every length the server
 * gives is checked against HEALTH_ROLE_REPLY_MAX before anything waits for
 * it, and the check's one timer (health_check.timeout) bounds the whole
 * conversation.
 */
#define HEALTH_ROLE_REPLY_MAX 8192 /* bytes of one server message (PostgreSQL) or of the replies up to the
                                    * role word (Redis); an ErrorResponse with DETAIL and HINT fits */
#define PG_PROTOCOL_3_0       196608 /* 3 << 16 */

enum role_step {
	PG_AUTH,       /* StartupMessage sent: an authentication request (or an error) */
	PG_PASSWORD,   /* a cleartext or md5 password sent: AuthenticationOk */
	PG_SASL_FIRST, /* SCRAM client-first sent: SASLContinue (server-first) */
	PG_SASL_FINAL, /* client-final sent: SASLFinal (the server's signature) */
	PG_SASL_DONE,  /* the server's signature verified: AuthenticationOk */
	PG_STARTING,   /* logged in: parameters until ReadyForQuery */
	PG_QUERY,      /* SELECT pg_is_in_recovery() sent: its row */
	RD_REPLY,      /* [AUTH and] ROLE sent: their replies */
};

static const char *const role_waiting[] = {
    [PG_AUTH] = "the authentication request",
    [PG_PASSWORD] = "the answer to the password",
    [PG_SASL_FIRST] = "the SCRAM server-first-message",
    [PG_SASL_FINAL] = "the SCRAM server-final-message",
    [PG_SASL_DONE] = "AuthenticationOk",
    [PG_STARTING] = "ReadyForQuery",
    [PG_QUERY] = "the answer to SELECT pg_is_in_recovery()",
    [RD_REPLY] = "the answer to ROLE",
};

struct health_role {
	enum role_step step;
	struct wp_scram scram; /* the running SCRAM exchange */
	/* SaltedPassword of the last exchange and what it was computed from:
	 * PBKDF2 costs `iterations` HMAC pairs in the loop, and a role's salt
	 * and count change only with its password, so a steady backend pays
	 * for it once, not every interval. */
	bool have_salted;
	unsigned char salted[WP_SCRAM_KEY_LEN];
	unsigned char salt[WP_SCRAM_SALT_MAX];
	size_t salt_len;
	unsigned iterations;
	char *pw; /* a copy of the password it was computed from (a reload may change it) */
	size_t pw_len;
};

static void health_done(struct backend *be, enum backend_reason reason, const char *detail);

static bool health_is_role(enum cfg_check_type t)
{
	return t == CFG_CHECK_POSTGRES_PRIMARY || t == CFG_CHECK_REDIS_MASTER;
}

static const char *role_name(const struct backend *be)
{
	return health_cfg(be)->type == CFG_CHECK_POSTGRES_PRIMARY ? "postgres_primary" : "redis_master";
}

static void role_forget_salted(struct health_role *ro)
{
	if (ro->pw)
		explicit_bzero(ro->pw, ro->pw_len);
	free(ro->pw);
	ro->pw = NULL;
	ro->pw_len = 0;
	explicit_bzero(ro->salted, sizeof ro->salted);
	ro->have_salted = false;
}

static void role_free(struct health_role *ro)
{
	if (!ro)
		return;
	role_forget_salted(ro);
	wp_scram_clear(&ro->scram);
	free(ro);
}

/* hc->send := a copy of buf (the last request, which may hold a password, wiped). */
static int role_set_send(struct health *hc, const void *buf, size_t len)
{
	unsigned char *copy = malloc(len);
	if (!copy)
		return -1;
	memcpy(copy, buf, len);
	if (hc->send)
		explicit_bzero(hc->send, hc->send_len);
	free(hc->send);
	hc->send = copy;
	hc->send_len = len;
	hc->sent = 0;
	return 0;
}

/* PostgreSQL's Terminate, best effort, so the server logs a clean end rather
 * than an unexpected EOF: 5 bytes into an empty send buffer, never waited for. */
static void pg_terminate(struct backend *be)
{
	static const unsigned char x[] = {'X', 0, 0, 0, 4};
	struct health *hc = &be->hc;
	ssize_t n;

	if (health_cfg(be)->type != CFG_CHECK_POSTGRES_PRIMARY || hc->fd < 0 || hc->sent != hc->send_len)
		return;
	if (hc->ssl)
		n = tls_write(hc->ssl, x, sizeof x);
	else
		n = send(hc->fd, x, sizeof x, MSG_NOSIGNAL | MSG_DONTWAIT);
	(void)n; /* the check's outcome is known; the connection closes either way */
}

/* The outcome of a conversation (REASON_NONE: passed); always returns 1, the
 * parser's "finished" (the reply buffer is gone). */
static int role_end(struct backend *be, enum backend_reason reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int role_end(struct backend *be, enum backend_reason reason, const char *fmt, ...)
{
	char detail[sizeof be->last_error];
	va_list ap;

	if (fmt) {
		va_start(ap, fmt);
		vsnprintf(detail, sizeof detail, fmt, ap);
		va_end(ap);
	}
	pg_terminate(be);
	health_done(be, reason, fmt ? detail : NULL);
	return 1;
}

/* Queue the next request of the conversation: sent when the socket is writable. */
static int role_send(struct backend *be, const void *buf, size_t len)
{
	struct health *hc = &be->hc;
	if (role_set_send(hc, buf, len) < 0)
		return role_end(be, REASON_OTHER, "out of memory");
	hc->phase = HC_SENDING;
	engine_io_want(be->pool->eng->loop, &hc->io, EV_WRITE);
	return 0;
}

static uint32_t get32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

/* A PostgreSQL message: type, length, the body in up to two parts. */
static int pg_send(struct backend *be, char type, const void *a, size_t alen, const void *b, size_t blen)
{
	size_t len = 5 + alen + blen;
	unsigned char *msg = malloc(len);
	int r;

	if (!msg)
		return role_end(be, REASON_OTHER, "out of memory");
	msg[0] = (unsigned char)type;
	put32(msg + 1, (uint32_t)(len - 1));
	if (alen)
		memcpy(msg + 5, a, alen);
	if (blen)
		memcpy(msg + 5 + alen, b, blen);
	r = role_send(be, msg, len);
	explicit_bzero(msg, len);
	free(msg);
	return r;
}

/* StartupMessage (protocol 3.0) as the configured user: the conversation's
 * first request, put in hc->send. */
static int pg_startup(struct backend *be)
{
	const struct cfg_health *h = health_cfg(be);
	unsigned char msg[2 * CFG_MAX_CHECK_USER + 128];
	size_t o = 8;
	const char *kv[6] = {"user", h->user, "database", h->database, "application_name", "warmpool-health"};

	if (!h->user)
		return -1; /* the loader requires it */
	for (size_t i = 0; i < 6; i += 2) {
		if (!kv[i + 1])
			continue;
		size_t k = strlen(kv[i]) + 1, v = strlen(kv[i + 1]) + 1;
		if (o + k + v + 1 > sizeof msg)
			return -1;
		memcpy(msg + o, kv[i], k);
		memcpy(msg + o + k, kv[i + 1], v);
		o += k + v;
	}
	msg[o++] = 0;
	put32(msg, (uint32_t)o);
	put32(msg + 4, PG_PROTOCOL_3_0);
	return role_set_send(&be->hc, msg, o);
}

/* ErrorResponse: the server's own words (severity, message, SQLSTATE),
 * shown escaped like any bytes a peer chose. */
static int pg_error(struct backend *be, const unsigned char *b, size_t n)
{
	const unsigned char *sev = NULL, *msg = NULL, *code = NULL;
	size_t sevl = 0, msgl = 0, codel = 0, i = 0;
	char s_sev[24], s_msg[sizeof be->last_error], s_code[16];

	while (i < n && b[i]) {
		unsigned char f = b[i++];
		const unsigned char *v = b + i, *z = memchr(v, 0, n - i);
		if (!z)
			break;
		size_t l = (size_t)(z - v);
		if (f == 'V' || (f == 'S' && !sev)) /* V: the severity never translated */
			sev = v, sevl = l;
		else if (f == 'M')
			msg = v, msgl = l;
		else if (f == 'C')
			code = v, codel = l;
		i += l + 1;
	}
	wp_escape(sev ? sev : (const unsigned char *)"ERROR", sev ? sevl : 5, s_sev, sizeof s_sev);
	wp_escape(msg ? msg : (const unsigned char *)"(no message)", msg ? msgl : 12, s_msg, sizeof s_msg);
	wp_escape(code ? code : (const unsigned char *)"?", code ? codel : 1, s_code, sizeof s_code);
	/* The SQLSTATE before the message: a long message is what gets cut. */
	return role_end(be, REASON_BAD_REPLY, "postgres_primary: %s %s: %s", s_sev, s_code, s_msg);
}

static int pg_unexpected(struct backend *be, unsigned char type)
{
	char shown[8];
	wp_escape(&type, 1, shown, sizeof shown);
	return role_end(be, REASON_BAD_REPLY, "postgres_primary: unexpected message '%s' while waiting for %s", shown,
	                role_waiting[be->hc.role->step]);
}

/* SaltedPassword for the running exchange: the kept one when salt, count
 * and password are the same, else computed (and kept). */
static int role_salted(struct health_role *ro, const struct cfg_health *h, unsigned char out[WP_SCRAM_KEY_LEN])
{
	const struct wp_scram *s = &ro->scram;
	int r;

	if (ro->have_salted && ro->iterations == s->iterations && ro->salt_len == s->salt_len &&
	    memcmp(ro->salt, s->salt, s->salt_len) == 0 && ro->pw_len == h->password_len &&
	    memcmp(ro->pw, h->password, h->password_len) == 0) {
		memcpy(out, ro->salted, WP_SCRAM_KEY_LEN);
		return 0;
	}
	r = wp_scram_salted_password(h->password, h->password_len, s->salt, s->salt_len, s->iterations, out);
	if (r < 0)
		return r;
	role_forget_salted(ro);
	if ((ro->pw = malloc(h->password_len + 1))) { /* no memory: not kept, no harm */
		memcpy(ro->pw, h->password, h->password_len);
		ro->pw_len = h->password_len;
		memcpy(ro->salted, out, WP_SCRAM_KEY_LEN);
		memcpy(ro->salt, s->salt, s->salt_len);
		ro->salt_len = s->salt_len;
		ro->iterations = s->iterations;
		ro->have_salted = true;
	}
	return 0;
}

/* AuthenticationSASL: the mechanisms offered, NUL-terminated names ending
 * with an empty one; SCRAM-SHA-256 without channel binding is ours. */
static int pg_sasl_start(struct backend *be, const unsigned char *b, size_t n)
{
	static const char mech[] = "SCRAM-SHA-256";
	struct health_role *ro = be->hc.role;
	unsigned char body[sizeof mech + 4 + WP_SCRAM_MSG_MAX];
	bool offered = false;
	char first[WP_SCRAM_MSG_MAX];
	int len;

	for (size_t i = 0; i < n && b[i];) {
		const unsigned char *z = memchr(b + i, 0, n - i);
		if (!z)
			break;
		offered |= (size_t)(z - (b + i)) == sizeof mech - 1 && memcmp(b + i, mech, sizeof mech - 1) == 0;
		i = (size_t)(z - b) + 1;
	}
	if (!offered)
		return role_end(be, REASON_BAD_REPLY,
		                "postgres_primary: the server offers no SASL mechanism the check speaks (SCRAM-SHA-256 "
		                "without channel binding)");
	len = wp_scram_client_first(&ro->scram, "", NULL, first, sizeof first); /* PostgreSQL takes the user
	                                                                          * from the StartupMessage */
	if (len < 0)
		return role_end(be, REASON_OTHER, "postgres_primary: SCRAM client-first-message: %s", strerror(-len));
	memcpy(body, mech, sizeof mech);
	put32(body + sizeof mech, (uint32_t)len);
	memcpy(body + sizeof mech + 4, first, (size_t)len);
	ro->step = PG_SASL_FIRST;
	return pg_send(be, 'p', body, sizeof mech + 4 + (size_t)len, NULL, 0);
}

static int pg_sasl_continue(struct backend *be, const unsigned char *b, size_t n)
{
	struct health_role *ro = be->hc.role;
	unsigned char salted[WP_SCRAM_KEY_LEN];
	char final[WP_SCRAM_MSG_MAX];
	const char *why = "?";
	int len;

	if (wp_scram_server_first(&ro->scram, (const char *)b, n, &why) < 0)
		return role_end(be, REASON_BAD_REPLY, "postgres_primary: SCRAM: %s", why);
	if ((len = role_salted(ro, health_cfg(be), salted)) < 0 ||
	    (len = wp_scram_client_final(&ro->scram, salted, final, sizeof final)) < 0) {
		explicit_bzero(salted, sizeof salted);
		return role_end(be, REASON_OTHER, "postgres_primary: SCRAM client-final-message: %s", strerror(-len));
	}
	explicit_bzero(salted, sizeof salted);
	ro->step = PG_SASL_FINAL;
	return pg_send(be, 'p', final, (size_t)len, NULL, 0);
}

/* An Authentication message (R): its code, then what the code carries. */
static int pg_auth(struct backend *be, const unsigned char *b, size_t n)
{
	const struct cfg_health *h = health_cfg(be);
	struct health_role *ro = be->hc.role;
	char md5[WP_MD5_PASSWORD_LEN + 1];
	const char *why = "?";
	uint32_t code;

	if (n < 4)
		return pg_unexpected(be, 'R');
	code = get32(b);
	if ((code == 3 || code == 5 || code == 10) && ro->step != PG_AUTH)
		return pg_unexpected(be, 'R');
	if ((code == 3 || code == 5 || code == 10) && !h->password)
		return role_end(be, REASON_BAD_REPLY,
		                "postgres_primary: the server asks for a password (%s) and no password_file is set",
		                code == 3 ? "cleartext" : code == 5 ? "md5" : "SASL");
	switch (code) {
	case 0: /* AuthenticationOk */
		if (ro->step == PG_SASL_FIRST || ro->step == PG_SASL_FINAL)
			return role_end(be, REASON_BAD_REPLY,
			                "postgres_primary: the server ended SCRAM without proving it knows the password");
		if (ro->step != PG_AUTH && ro->step != PG_PASSWORD && ro->step != PG_SASL_DONE)
			return pg_unexpected(be, 'R');
		ro->step = PG_STARTING;
		return 0;
	case 3: /* AuthenticationCleartextPassword */
		ro->step = PG_PASSWORD;
		return pg_send(be, 'p', h->password, h->password_len, "", 1);
	case 5: /* AuthenticationMD5Password: a 4-byte salt */
		if (n != 8)
			return pg_unexpected(be, 'R');
		if (wp_md5_password(h->user, h->password, h->password_len, b + 4, md5) < 0)
			return role_end(be, REASON_OTHER, "postgres_primary: md5 failed (OpenSSL)");
		ro->step = PG_PASSWORD;
		return pg_send(be, 'p', md5, sizeof md5, NULL, 0);
	case 10: /* AuthenticationSASL */
		return pg_sasl_start(be, b + 4, n - 4);
	case 11: /* AuthenticationSASLContinue */
		if (ro->step != PG_SASL_FIRST)
			return pg_unexpected(be, 'R');
		return pg_sasl_continue(be, b + 4, n - 4);
	case 12: /* AuthenticationSASLFinal */
		if (ro->step != PG_SASL_FINAL)
			return pg_unexpected(be, 'R');
		if (wp_scram_server_final(&ro->scram, (const char *)b + 4, n - 4, &why) < 0)
			return role_end(be, REASON_BAD_REPLY, "postgres_primary: SCRAM: %s", why);
		ro->step = PG_SASL_DONE;
		return 0;
	default:
		return role_end(be, REASON_BAD_REPLY,
		                "postgres_primary: the server asks for authentication method %u, which the check does "
		                "not speak (trust, password, md5, SCRAM-SHA-256)",
		                code);
	}
}

/* The DataRow of SELECT pg_is_in_recovery(): one column, "f" or "t". */
static int pg_row(struct backend *be, const unsigned char *b, size_t n)
{
	if (n != 7 || b[0] != 0 || b[1] != 1 || get32(b + 2) != 1 || (b[6] != 'f' && b[6] != 't'))
		return role_end(be, REASON_BAD_REPLY, "postgres_primary: pg_is_in_recovery() returned no boolean");
	if (b[6] == 't')
		return role_end(be, REASON_BAD_REPLY, "postgres_primary: the server is a standby (in recovery)");
	return role_end(be, REASON_NONE, NULL);
}

/* One whole message: 0 to go on, 1 when the check finished. */
static int pg_message(struct backend *be, unsigned char type, const unsigned char *b, size_t n)
{
	static const char query[] = "SELECT pg_is_in_recovery()";
	struct health_role *ro = be->hc.role;

	switch (type) {
	case 'E':
		return pg_error(be, b, n);
	case 'N': /* NoticeResponse, ParameterStatus, BackendKeyData: not ours to judge */
	case 'S':
	case 'K':
		return 0;
	case 'R':
		return pg_auth(be, b, n);
	case 'Z':
		if (ro->step == PG_STARTING) {
			ro->step = PG_QUERY;
			return pg_send(be, 'Q', query, sizeof query, NULL, 0);
		}
		if (ro->step == PG_QUERY)
			return role_end(be, REASON_BAD_REPLY, "postgres_primary: pg_is_in_recovery() returned no row");
		break;
	case 'T': /* RowDescription, CommandComplete */
	case 'C':
		if (ro->step == PG_QUERY)
			return 0;
		break;
	case 'D':
		if (ro->step == PG_QUERY)
			return pg_row(be, b, n);
		break;
	}
	return pg_unexpected(be, type);
}

/* The whole messages in the reply buffer, each consumed once handled. */
static void pg_input(struct backend *be)
{
	struct health *hc = &be->hc;
	size_t off = 0;

	while (hc->phase == HC_READING && hc->reply_len - off >= 5) {
		unsigned char type = hc->reply[off];
		uint32_t len = get32(hc->reply + off + 1);
		if (len < 4 || len > HEALTH_ROLE_REPLY_MAX - 1) {
			char shown[8];
			wp_escape(&type, 1, shown, sizeof shown);
			role_end(be, REASON_BAD_REPLY,
			         "postgres_primary: message '%s' of %u bytes (more than %d, or malformed)", shown, len,
			         HEALTH_ROLE_REPLY_MAX - 1);
			return;
		}
		if (hc->reply_len - off < 1 + (size_t)len)
			break;
		if (pg_message(be, type, hc->reply + off + 5, len - 4))
			return; /* finished: the buffer is gone */
		off += 1 + (size_t)len;
	}
	memmove(hc->reply, hc->reply + off, hc->reply_len - off);
	hc->reply_len -= off;
}

/* A RESP line starting at r[off] (without its CRLF): its length, or -1
 * while it is incomplete. */
static ssize_t resp_line(const unsigned char *r, size_t len, size_t off)
{
	for (size_t i = off; i + 1 < len; i++)
		if (r[i] == '\r' && r[i + 1] == '\n')
			return (ssize_t)(i - off);
	return -1;
}

/* A RESP length "N" of at most 6 digits (the header after * or $). */
static long resp_count(const unsigned char *s, size_t n)
{
	long v = 0;
	if (n == 0 || n > 6)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return v;
}

/* The replies to [AUTH and] ROLE, parsed from the start each time more
 * arrives (they are short): +OK, then an array whose first element is the
 * role: master passes, slave (or replica) fails. */
static void redis_input(struct backend *be)
{
	struct health *hc = &be->hc;
	const unsigned char *r = hc->reply;
	size_t len = hc->reply_len, off = 0;
	char shown[112];
	ssize_t n;
	long count;

	if (health_cfg(be)->password) {
		if ((n = resp_line(r, len, 0)) < 0)
			return;
		if (n >= 1 && r[0] == '-') {
			wp_escape(r + 1, (size_t)n - 1, shown, sizeof shown);
			role_end(be, REASON_BAD_REPLY, "redis_master: AUTH failed: %s", shown);
			return;
		}
		if (n != 3 || memcmp(r, "+OK", 3) != 0) {
			role_end(be, REASON_BAD_REPLY, NULL);
			return;
		}
		off = (size_t)n + 2;
	}
	if ((n = resp_line(r, len, off)) < 0)
		return;
	if (n >= 1 && r[off] == '-') {
		wp_escape(r + off + 1, (size_t)n - 1, shown, sizeof shown);
		role_end(be, REASON_BAD_REPLY, "redis_master: ROLE failed: %s", shown);
		return;
	}
	if (n < 2 || r[off] != '*' || resp_count(r + off + 1, (size_t)n - 1) < 1) {
		role_end(be, REASON_BAD_REPLY, NULL);
		return;
	}
	off += (size_t)n + 2;
	if ((n = resp_line(r, len, off)) < 0)
		return;
	if (n < 2 || r[off] != '$' || (count = resp_count(r + off + 1, (size_t)n - 1)) < 1 || count > 64) {
		role_end(be, REASON_BAD_REPLY, NULL);
		return;
	}
	off += (size_t)n + 2;
	if (len < off + (size_t)count + 2)
		return;
	const unsigned char *word = r + off;
	if (count == 6 && memcmp(word, "master", 6) == 0)
		role_end(be, REASON_NONE, NULL);
	else if ((count == 5 && memcmp(word, "slave", 5) == 0) || (count == 7 && memcmp(word, "replica", 7) == 0))
		role_end(be, REASON_BAD_REPLY, "redis_master: the server is a replica");
	else {
		wp_escape(word, (size_t)count, shown, sizeof shown);
		role_end(be, REASON_BAD_REPLY, "redis_master: the server's role is \"%s\"", shown);
	}
}

/* [AUTH [user] password and] ROLE, as RESP arrays (a password may hold any
 * byte), sent together: the first request of redis_master. */
static int redis_request(struct backend *be)
{
	const struct cfg_health *h = health_cfg(be);
	size_t ulen = h->user ? strlen(h->user) : 0, cap = ulen + h->password_len + 128, o = 0;
	char *req = malloc(cap);
	int n, r;

	if (!req)
		return -1;
	if (h->password && h->user)
		n = snprintf(req, cap, "*3\r\n$4\r\nAUTH\r\n$%zu\r\n%s\r\n$%zu\r\n", ulen, h->user, h->password_len);
	else if (h->password)
		n = snprintf(req, cap, "*2\r\n$4\r\nAUTH\r\n$%zu\r\n", h->password_len);
	else
		n = 0;
	if (n < 0 || (size_t)n >= cap) {
		free(req);
		return -1;
	}
	o = (size_t)n;
	if (h->password) {
		memcpy(req + o, h->password, h->password_len);
		memcpy(req + o + h->password_len, "\r\n", 2);
		o += h->password_len + 2;
	}
	memcpy(req + o, "*1\r\n$4\r\nROLE\r\n", 14);
	o += 14;
	r = role_set_send(&be->hc, req, o);
	explicit_bzero(req, cap);
	free(req);
	return r;
}

/* A new conversation: its first request in hc->send. -1: no memory. */
static int role_begin(struct backend *be)
{
	struct health_role *ro = be->hc.role;

	wp_scram_clear(&ro->scram);
	if (health_cfg(be)->type == CFG_CHECK_POSTGRES_PRIMARY) {
		ro->step = PG_AUTH;
		return pg_startup(be);
	}
	ro->step = RD_REPLY;
	return redis_request(be);
}

/* New bytes (or bytes left from before the last request) in hc->reply. */
static void role_input(struct backend *be)
{
	if (health_cfg(be)->type == CFG_CHECK_POSTGRES_PRIMARY)
		pg_input(be);
	else
		redis_input(be);
}

/* The server closed the connection in the middle of the conversation. */
static void role_closed(struct backend *be)
{
	role_end(be, REASON_CLOSED, "%s: closed by the server while waiting for %s", role_name(be),
	         role_waiting[be->hc.role->step]);
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
	case CFG_CHECK_POSTGRES_PRIMARY: /* requests built at each check, from the config of the moment */
	case CFG_CHECK_REDIS_MASTER:
		hc->role = calloc(1, sizeof *hc->role);
		return hc->role ? 0 : -1;
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
	be->hc.send_len = 0;
	role_free(be->hc.role);
	be->hc.role = NULL;
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
	if (hc->role && hc->send) { /* the conversation's last request may hold the password */
		explicit_bzero(hc->send, hc->send_len);
		free(hc->send);
		hc->send = NULL;
		hc->send_len = hc->sent = 0;
	}
}

/* ---- one check --------------------------------------------------------- */

static void health_done(struct backend *be, enum backend_reason reason, const char *detail)
{
	struct health *hc = &be->hc;
	char msg[sizeof be->last_error];

	if (reason == REASON_BAD_REPLY && !detail) {
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

/* Bytes kept for the reply while a check runs. */
static size_t health_reply_cap(const struct health *hc)
{
	return hc->role ? HEALTH_ROLE_REPLY_MAX : HEALTH_REPLY_MAX;
}

static void health_read(struct backend *be)
{
	struct health *hc = &be->hc;
	size_t cap = health_reply_cap(hc);
	for (;;) {
		ssize_t n;
		if (hc->ssl) {
			n = tls_read(hc->ssl, hc->reply + hc->reply_len, cap - hc->reply_len);
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
			n = recv(hc->fd, hc->reply + hc->reply_len, cap - hc->reply_len, MSG_DONTWAIT);
		}
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				health_fail_errno(be, errno);
			return;
		}
		if (n == 0 && hc->role) {
			role_closed(be);
			return;
		}
		if (n == 0) { /* EOF before a matching reply */
			health_done(be, hc->reply_len ? REASON_BAD_REPLY : REASON_CLOSED, NULL);
			return;
		}
		hc->reply_len += (size_t)n;
		if (hc->role) { /* whole messages are consumed: a full buffer is one too long */
			role_input(be);
			if (hc->phase != HC_READING)
				return;
			if (hc->reply_len == cap) {
				health_done(be, REASON_BAD_REPLY, NULL);
				return;
			}
			continue;
		}
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
	if (!hc->role)
		return;
	/* A conversation's next reply may be here already: bytes left in the
	 * buffer, or records a TLS read took in with the last ones. */
	if (hc->reply_len)
		role_input(be);
	if (hc->phase == HC_READING)
		health_read(be);
}

static void health_exchange(struct backend *be)
{
	struct health *hc = &be->hc;
	enum cfg_check_type type = health_cfg(be)->type;
	if (type == CFG_CHECK_CONNECT || (hc->ssl && type == CFG_CHECK_POSTGRES)) {
		health_done(be, REASON_NONE, NULL);
		return;
	}
	hc->reply = malloc(health_reply_cap(hc));
	if (!hc->reply || (health_is_role(type) && (!hc->role || role_begin(be) < 0))) {
		health_done(be, REASON_OTHER, "out of memory");
		return;
	}
	hc->reply_len = 0;
	hc->sent = 0;
	hc->phase = HC_SENDING;
	if (hc->ssl || hc->role) { /* EV_WRITE while sending; health_start_reading switches to EV_READ */
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

	hc->fd = socket(be->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
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
		r = connect(hc->fd, (const struct sockaddr *)&be->addr, be->addrlen);
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
		/* A backend its name no longer leads to (dns: hold expired, or
		 * the address left the answer) is not checked: no result could
		 * bring it up (backend_health_ok), so the connection would be
		 * spent for nothing. The round is skipped, not the schedule: the
		 * name answering again brings the checks back at once. */
		if (be->dns_down || be->gone) {
			health_schedule(be, health_next_delay(be));
			break;
		}
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
		if (hc->role) {
			role_end(be, REASON_TIMEOUT, "timeout waiting for %s (%s)", role_waiting[hc->role->step],
			         role_name(be));
			break;
		}
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
