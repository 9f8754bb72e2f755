/*
 * tests/unit/test_dns.c — daemon/dns.c, a backend written as a name, against
 * a DNS server the test scripts.
 *
 * The server is in-process: a non-blocking UDP socket on 127.0.0.1:0 watched
 * by an ev_io in the engine's own loop, so c-ares' query and the scripted
 * answer cross the same loop the daemon runs (no thread, no child process).
 * Each query is answered by the script of the moment: A/AAAA/CNAME records
 * with their TTLs (an empty list is NODATA), an error rcode (NXDOMAIN,
 * SERVFAIL), or nothing at all (c-ares times out); every query is logged
 * (type and name), so a test can say which were asked and when. Responses
 * are built by hand (RFC 1035 §4.1: header, the question copied from the
 * query, answer records).
 *
 * The pool is the real one: engine_create() on a config text whose only
 * backend is `db.test:5432` with dns.servers at our port, then pool_start()
 * (no listener is opened, min_idle is 0 and there is no health check, so no
 * connection is ever made: what changes is only what dns.c applies). The
 * loop is driven with ev_run(EVRUN_ONCE) until a condition holds, bounded
 * by a count and a deadline; a repeating guard timer makes each iteration
 * return within GUARD_TICK. The daemon's log (stderr) is captured to a file
 * so the lines the issue specifies can be checked, and is shown when a test
 * fails.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "engine.h"
#include "log.h"

#define GUARD_TICK   0.02 /* seconds: the longest one ev_run(EVRUN_ONCE) may block */
#define STEPS_MAX    5000 /* loop iterations one wait may take (a bound besides the deadline) */
#define WAIT_SECS    3.0  /* the deadline of a wait for something that must happen */
#define MAX_RR       32   /* records in one scripted answer */
#define QLOG_MAX     512  /* queries remembered (more are counted, not kept) */
#define QUERY_MAX    1500 /* bytes of a query read (c-ares' are < 300) */
#define RESPONSE_MAX 512  /* a UDP answer without EDNS (RFC 1035 §4.2.1) */
#define RECV_BATCH   64   /* queries read per readiness (the rest at the next) */

#define T_A     1
#define T_CNAME 5
#define T_AAAA  28

#define NAME   "db.test"
#define PORT   "5432" /* nothing connects to it: min_idle 0, and CHECK_NEVER */
#define PORT_N 5432
/* A check that never runs within a test: without one, the pool itself
 * would probe a down backend with connections (pool_refill). */
#define CHECK_NEVER "    health_check: {type: connect, interval: 1h, fast_interval: 1h, down_interval: 1h}\n"

/* ---- the DNS server ------------------------------------------------------ */

enum reply {
	R_ANSWER, /* rcode 0 with the records of the query's type (and CNAMEs); none: NODATA */
	R_RCODE,  /* the rcode alone (3 NXDOMAIN, 2 SERVFAIL) */
	R_DROP,   /* no reply: the client times out */
};

struct rr {
	uint16_t type;
	uint32_t ttl;
	const char *owner; /* NULL: the question's name (a pointer to it) */
	const char *data;  /* an address (A, AAAA) or a name (CNAME) */
};

struct qlog {
	uint16_t type;
	char name[256];
	double at; /* monotonic seconds */
};

struct srv {
	int fd;
	uint16_t port;
	ev_io io;
	enum reply how;
	int rcode;
	struct rr rr[MAX_RR];
	size_t n_rr;
	struct qlog q[QLOG_MAX];
	size_t n_q;    /* queries received (all of them, even beyond QLOG_MAX) */
	size_t n_bad;  /* datagrams that were not a query we understand */
	char err[160]; /* what went wrong inside a callback, failed on outside the loop (srv_check) */
};

static double mono(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void script(struct srv *s, enum reply how, int rcode)
{
	s->how = how;
	s->rcode = rcode;
	s->n_rr = 0;
}

static void script_rr(struct srv *s, uint16_t type, uint32_t ttl, const char *owner, const char *data)
{
	assert_true(s->n_rr < MAX_RR);
	s->rr[s->n_rr++] = (struct rr){.type = type, .ttl = ttl, .owner = owner, .data = data};
}

/* An answer of A records (ttl 60) for the question's name, NULL-terminated. */
static void script_a(struct srv *s, ...)
{
	va_list ap;
	script(s, R_ANSWER, 0);
	va_start(ap, s);
	for (const char *a; (a = va_arg(ap, const char *));)
		script_rr(s, T_A, 60, NULL, a);
	va_end(ap);
}

/* When the `nth` (0: first) query of `type` for `name` arrived (monotonic
 * seconds); fails when there is none. */
static double query_at(const struct srv *s, uint16_t type, const char *name, size_t nth)
{
	for (size_t i = 0, k = 0; i < s->n_q && i < QLOG_MAX; i++)
		if (s->q[i].type == type && strcasecmp(s->q[i].name, name) == 0 && k++ == nth)
			return s->q[i].at;
	fail_msg("no query #%zu of type %u for %s", nth, (unsigned)type, name);
	return 0;
}

/* How many queries of `type` for `name` arrived since query number `from`. */
static size_t queries(const struct srv *s, size_t from, uint16_t type, const char *name)
{
	size_t k = 0;
	for (size_t i = from; i < s->n_q && i < QLOG_MAX; i++)
		if (s->q[i].type == type && strcasecmp(s->q[i].name, name) == 0)
			k++;
	return k;
}

/* A response being built; `bad` when something did not fit or parse
 * (these run inside the loop, where a cmocka failure must not jump out). */
struct out {
	unsigned char b[RESPONSE_MAX];
	size_t len;
	int bad;
};

static void put(struct out *o, const void *p, size_t n)
{
	if (o->len + n > sizeof o->b) {
		o->bad = 1;
		return;
	}
	memcpy(o->b + o->len, p, n);
	o->len += n;
}

static void put16(struct out *o, uint16_t v)
{
	unsigned char b[2] = {(unsigned char)(v >> 8), (unsigned char)v};
	put(o, b, 2);
}

static void put32(struct out *o, uint32_t v)
{
	put16(o, (uint16_t)(v >> 16));
	put16(o, (uint16_t)v);
}

/* A name as labels (RFC 1035 §3.1), uncompressed. */
static void put_name(struct out *o, const char *name)
{
	while (*name) {
		const char *dot = strchr(name, '.');
		size_t n = dot ? (size_t)(dot - name) : strlen(name);
		if (n == 0 || n > 63) {
			o->bad = 1;
			return;
		}
		unsigned char len = (unsigned char)n;
		put(o, &len, 1);
		put(o, name, n);
		name += n + (dot ? 1 : 0);
	}
	put(o, "", 1);
}

/* One record of the answer section (§4.1.3), class IN. */
static void put_rr(struct out *o, const struct rr *r)
{
	if (r->owner)
		put_name(o, r->owner);
	else
		put16(o, 0xC000 | 12); /* a pointer to the question's name, right after the header */
	put16(o, r->type);
	put16(o, 1);
	put32(o, r->ttl);
	if (r->type == T_CNAME) {
		struct out rd = {.len = 0, .bad = 0};
		put_name(&rd, r->data);
		o->bad |= rd.bad;
		put16(o, (uint16_t)rd.len);
		put(o, rd.b, rd.len);
		return;
	}
	unsigned char a[16];
	int af = r->type == T_A ? AF_INET : AF_INET6;
	if (inet_pton(af, r->data, a) != 1) {
		o->bad = 1;
		return;
	}
	put16(o, af == AF_INET ? 4 : 16);
	put(o, a, af == AF_INET ? 4 : 16);
}

/* Parse the question of `q` (header §4.1.1, question §4.1.2): its end
 * offset, or 0 when it is not a query we understand. */
static size_t parse_question(const unsigned char *q, size_t len, char *name, size_t namelen, uint16_t *type)
{
	if (len < 12 || (q[2] & 0x80) || ((q[4] << 8) | q[5]) != 1)
		return 0;
	size_t at = 12, n = 0;
	name[0] = '\0';
	while (at < len && q[at]) {
		size_t l = q[at];
		if (l > 63 || at + 1 + l > len || n + l + 2 > namelen)
			return 0; /* no compression in a question we sent; names are short */
		if (n)
			name[n++] = '.';
		memcpy(name + n, q + at + 1, l);
		n += l;
		name[n] = '\0';
		at += 1 + l;
	}
	if (at + 5 > len)
		return 0;
	*type = (uint16_t)((q[at + 1] << 8) | q[at + 2]);
	return at + 5;
}

static void srv_answer(struct srv *s, const unsigned char *q, size_t qend, uint16_t qtype,
                       const struct sockaddr_in *to)
{
	struct out o = {.len = 0, .bad = 0};
	size_t n = 0;
	for (size_t i = 0; s->how == R_ANSWER && i < s->n_rr; i++)
		n += s->rr[i].type == qtype || s->rr[i].type == T_CNAME;
	put16(&o, (uint16_t)((q[0] << 8) | q[1])); /* the query's ID */
	/* QR, its opcode, AA, its RD; RA, the rcode */
	put16(&o, (uint16_t)(((0x80 | (q[2] & 0x78) | 0x04 | (q[2] & 0x01)) << 8) | 0x80 |
	                     (s->how == R_RCODE ? s->rcode : 0)));
	put16(&o, 1);           /* QDCOUNT */
	put16(&o, (uint16_t)n); /* ANCOUNT */
	put16(&o, 0);           /* NSCOUNT */
	put16(&o, 0);           /* ARCOUNT */
	put(&o, q + 12, qend - 12);
	for (size_t i = 0; s->how == R_ANSWER && i < s->n_rr; i++)
		if (s->rr[i].type == qtype || s->rr[i].type == T_CNAME)
			put_rr(&o, &s->rr[i]);
	if (o.bad) {
		snprintf(s->err, sizeof s->err,
		         "the scripted response does not fit %d bytes or has a bad record", RESPONSE_MAX);
		return;
	}
	ssize_t w = sendto(s->fd, o.b, o.len, MSG_DONTWAIT, (const struct sockaddr *)to, sizeof *to);
	if (w != (ssize_t)o.len)
		snprintf(s->err, sizeof s->err, "sendto: %zd (%s)", w, strerror(errno));
}

static void srv_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)loop;
	(void)revents;
	struct srv *s = container_of(w, struct srv, io);
	for (int i = 0; i < RECV_BATCH; i++) {
		unsigned char q[QUERY_MAX];
		struct sockaddr_in from;
		socklen_t fl = sizeof from;
		ssize_t r = recvfrom(s->fd, q, sizeof q, MSG_DONTWAIT, (struct sockaddr *)&from, &fl);
		if (r < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
				snprintf(s->err, sizeof s->err, "recvfrom: %s", strerror(errno));
			return;
		}
		char name[256];
		uint16_t type = 0;
		size_t qend = parse_question(q, (size_t)r, name, sizeof name, &type);
		if (!qend) {
			s->n_bad++;
			continue;
		}
		if (s->n_q < QLOG_MAX) {
			struct qlog *l = &s->q[s->n_q];
			l->type = type;
			snprintf(l->name, sizeof l->name, "%s", name);
			l->at = mono();
		}
		s->n_q++;
		if (s->how != R_DROP)
			srv_answer(s, q, qend, type, &from);
	}
}

static void srv_open(struct srv *s)
{
	memset(s, 0, sizeof *s);
	s->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	assert_true(s->fd >= 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(s->fd, (struct sockaddr *)&a, sizeof a), 0);
	socklen_t al = sizeof a;
	assert_int_equal(getsockname(s->fd, (struct sockaddr *)&a, &al), 0);
	s->port = ntohs(a.sin_port);
	ev_io_init(&s->io, srv_cb, s->fd, EV_READ);
	script(s, R_DROP, 0);
}

/* ---- the fixture: a server, an engine with one pool, the captured log ---- */

/* A backend that accepts and keeps what it accepted (ACCEPT_MAX). */
#define ACCEPT_MAX 64
struct acceptor {
	ev_io io;
	int fds[ACCEPT_MAX];
	size_t n;
};

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)loop;
	(void)revents;
	struct acceptor *a = container_of(w, struct acceptor, io);
	for (int fd;
	     a->n < ACCEPT_MAX && (fd = accept4(w->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0;)
		a->fds[a->n++] = fd;
}

struct fx {
	char dir[64];
	char sock[128];
	char logpath[128];
	int saved_stderr; /* the real stderr while the daemon's log goes to logpath */
	int passed;       /* set at the end of a test body: the log is shown otherwise */
	struct srv srv;
	uint16_t tcp_port; /* 0, or a backend listening here (no CHECK_NEVER then) */
	int tcp_fd;
	struct acceptor acc; /* accepting on tcp_fd */
	struct engine *eng;
	struct ev_loop *loop;
	struct pool *p;
	struct dns_name *n;
	ev_timer guard;
};

static void guard_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents; /* only there to make ev_run(EVRUN_ONCE) return */
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof *f);
	if (!f)
		return -1;
	f->saved_stderr = -1;
	f->tcp_fd = -1;
	snprintf(f->dir, sizeof f->dir, "/tmp/wp-test-dns-XXXXXX");
	if (!mkdtemp(f->dir)) {
		free(f);
		return -1;
	}
	snprintf(f->sock, sizeof f->sock, "%s/t.sock", f->dir);
	snprintf(f->logpath, sizeof f->logpath, "%s/log", f->dir);
	int lfd = open(f->logpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	f->saved_stderr = dup(STDERR_FILENO);
	if (lfd < 0 || f->saved_stderr < 0 || dup2(lfd, STDERR_FILENO) < 0) {
		if (lfd >= 0)
			close(lfd);
		if (f->saved_stderr >= 0)
			close(f->saved_stderr);
		unlink(f->logpath);
		rmdir(f->dir);
		free(f);
		return -1;
	}
	close(lfd);
	log_init(LOG_DEBUG);
	srv_open(&f->srv);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	if (f->eng) {
		ev_io_stop(f->loop, &f->srv.io);
		ev_io_stop(f->loop, &f->acc.io);
		ev_timer_stop(f->loop, &f->guard);
		engine_destroy(f->eng);
	}
	close(f->srv.fd);
	if (f->tcp_fd >= 0)
		close(f->tcp_fd);
	for (size_t i = 0; i < f->acc.n; i++)
		close(f->acc.fds[i]);
	/* The real stderr back; the daemon's log shown when the test failed. */
	dup2(f->saved_stderr, STDERR_FILENO);
	close(f->saved_stderr);
	if (!f->passed) {
		FILE *l = fopen(f->logpath, "r");
		char line[1024];
		fprintf(stderr, "---- the daemon's log ----\n");
		while (l && fgets(line, sizeof line, l))
			fputs(line, stderr);
		if (l)
			fclose(l);
		fprintf(stderr, "---- %zu queries, %zu not understood ----\n", f->srv.n_q, f->srv.n_bad);
	}
	unlink(f->logpath);
	unlink(f->sock);
	rmdir(f->dir);
	free(f);
	return 0;
}

/* An engine whose pool `t` has the one backend NAME:PORT with
 * dns: {servers: [our server], timeout: 100ms, tries: 1, <dns>}, started:
 * its first lookup is on its way when this returns. */
static void fx_start(struct fx *f, const char *dns)
{
	char yaml[1024];
	snprintf(yaml, sizeof yaml,
	         "pools:\n"
	         "  t:\n"
	         "    listen: %s\n"
	         "    min_idle: 0\n"
	         "%s"
	         "    backends: [\"" NAME ":%u\"]\n"
	         "    dns: {servers: [\"127.0.0.1:%u\"], timeout: 100ms, tries: 1%s%s}\n",
	         f->sock, f->tcp_port ? "" : CHECK_NEVER,
	         f->tcp_port ? (unsigned)f->tcp_port : (unsigned)PORT_N, (unsigned)f->srv.port,
	         *dns ? ", " : "", dns);
	struct wp_config *cfg = NULL;
	struct cfg_errors errs = {0};
	int r = cfg_load_buffer("test.yaml", yaml, strlen(yaml), &cfg, &errs);
	for (size_t i = 0; i < errs.n; i++)
		print_message("%s\n", errs.msg[i]);
	cfg_errors_free(&errs);
	assert_int_equal(r, 0);
	f->eng = engine_create(cfg);
	assert_non_null(f->eng);
	assert_int_equal(f->eng->n_pools, 1);
	f->loop = f->eng->loop;
	f->p = f->eng->pools[0];
	assert_int_equal(f->p->n_names, 1);
	f->n = f->p->names[0];
	char want[64];
	snprintf(want, sizeof want, NAME ":%u", f->tcp_port ? (unsigned)f->tcp_port : (unsigned)PORT_N);
	assert_string_equal(dns_name_str(f->n), want);
	ev_io_start(f->loop, &f->srv.io);
	ev_timer_init(&f->guard, guard_cb, GUARD_TICK, GUARD_TICK);
	ev_timer_start(f->loop, &f->guard);
	pool_start(f->p);
}

/* Fail on what the server met inside the loop. */
static void srv_check(const struct srv *s)
{
	if (s->err[0])
		fail_msg("dns server: %s", s->err);
}

/* Run the loop until `cond` holds: at most STEPS_MAX iterations and `secs`
 * seconds, then fail naming the condition. */
#define WAIT_FOR(f, cond, secs)                                                                              \
	do {                                                                                                 \
		double dl_ = mono() + (secs);                                                                \
		for (unsigned st_ = 0; !(cond) && st_ < STEPS_MAX && mono() < dl_; st_++)                    \
			ev_run((f)->loop, EVRUN_ONCE);                                                       \
		srv_check(&(f)->srv);                                                                        \
		if (!(cond))                                                                                 \
			fail_msg("line %d: not within %gs: %s", __LINE__, (double)(secs), #cond);            \
	} while (0)

/* Run the loop for `secs` (to see that something does NOT happen). */
static void run_for(struct fx *f, double secs)
{
	double dl = mono() + secs;
	for (unsigned st = 0; st < STEPS_MAX && mono() < dl; st++)
		ev_run(f->loop, EVRUN_ONCE);
	srv_check(&f->srv);
}

/* The pool's backend named `addr` ("127.0.0.2:5432"), or NULL. */
static struct backend *be_at(const struct pool *p, const char *addr)
{
	for (size_t i = 0; i < p->n_backends; i++)
		if (strcmp(p->backends[i]->name, addr) == 0)
			return p->backends[i];
	return NULL;
}

static size_t n_gone(const struct pool *p)
{
	size_t k = 0;
	for (size_t i = 0; i < p->n_backends; i++)
		k += p->backends[i]->gone;
	return k;
}

/* A backend the name made at `addr`, fresh: unknown, not gone, not down. */
static struct backend *expect_be(struct fx *f, const char *addr)
{
	struct backend *be = be_at(f->p, addr);
	if (!be)
		fail_msg("no backend %s (the pool has %zu)", addr, f->p->n_backends);
	assert_ptr_equal(be->dns, f->n);
	assert_ptr_equal(be->cfg, &f->p->cfg->backends[0]);
	assert_false(be->gone);
	assert_false(be->dns_down);
	assert_int_equal(be->state, BACKEND_UNKNOWN);
	return be;
}

/* The pool's counts of available backends match its backends (every
 * add, departure, return and reap keeps them). */
static void check_counts(const struct fx *f)
{
	unsigned prim = 0, backup = 0;
	for (size_t i = 0; i < f->p->n_backends; i++) {
		const struct backend *be = f->p->backends[i];
		assert_int_equal(be->slot, i);
		if (backend_available(be->state))
			*(be->cfg->backup ? &backup : &prim) += 1;
	}
	assert_int_equal(f->p->n_up_primary, prim);
	assert_int_equal(f->p->n_up_backup, backup);
}

static int log_has(const struct fx *f, const char *text)
{
	FILE *l = fopen(f->logpath, "r");
	assert_non_null(l);
	char line[2048];
	int found = 0;
	while (!found && fgets(line, sizeof line, l))
		found = strstr(line, text) != NULL;
	fclose(l);
	return found;
}

#define ASSERT_LOG(f, text)                                                                                  \
	do {                                                                                                 \
		if (!log_has((f), (text)))                                                                   \
			fail_msg("line %d: no log line has \"%s\"", __LINE__, (text));                       \
	} while (0)

/* ---- the cases ------------------------------------------------------------ */

/* First answer: a backend per address, named by it; the same answer again
 * changes nothing (the same objects); one address replaced: one added, one
 * gone (draining, freed by the reaper as it has no connection). */
static void test_answer_applied_as_diff(void **state)
{
	struct fx *f = *state;
	script_a(&f->srv, "127.0.0.2", "127.0.0.3", NULL);
	fx_start(f, "refresh: 200ms");
	WAIT_FOR(f, f->n->lookups[DNS_OK] >= 1, WAIT_SECS);
	assert_int_equal(f->p->n_backends, 2);
	struct backend *b2 = expect_be(f, "127.0.0.2:" PORT), *b3 = expect_be(f, "127.0.0.3:" PORT);
	assert_int_equal(f->n->state, DNS_GOOD);
	assert_int_equal(f->n->n_addrs, 2);
	assert_int_equal(f->n->last_result, DNS_OK);
	assert_int_equal(f->n->ttl, 60);
	assert_true(f->n->last_change > 0);
	/* family any: both types asked, for the name as written */
	assert_true(queries(&f->srv, 0, T_A, NAME) >= 1);
	assert_true(queries(&f->srv, 0, T_AAAA, NAME) >= 1);
	ASSERT_LOG(f, "pool=t name=" NAME ":" PORT ": dns: resolved: 127.0.0.2:" PORT ", 127.0.0.3:" PORT
	              " (next in 0.2s)");
	double changed = f->n->last_change;

	/* the same answer at the next refresh */
	WAIT_FOR(f, f->n->lookups[DNS_OK] >= 2, WAIT_SECS);
	assert_int_equal(f->p->n_backends, 2);
	assert_ptr_equal(be_at(f->p, "127.0.0.2:" PORT), b2);
	assert_ptr_equal(be_at(f->p, "127.0.0.3:" PORT), b3);
	assert_int_equal(n_gone(f->p), 0);
	assert_false(f->p->has_gone);
	assert_true(f->n->last_change == changed);
	assert_int_equal(b2->state, BACKEND_UNKNOWN);

	/* 127.0.0.2 replaced by 127.0.0.4 */
	script_a(&f->srv, "127.0.0.3", "127.0.0.4", NULL);
	uint64_t ok = f->n->lookups[DNS_OK];
	WAIT_FOR(f, f->n->lookups[DNS_OK] > ok, WAIT_SECS);
	assert_int_equal(f->p->n_backends, 3);
	assert_ptr_equal(be_at(f->p, "127.0.0.2:" PORT), b2);
	assert_true(b2->gone);
	assert_int_equal(b2->state, BACKEND_DRAINING);
	assert_ptr_equal(expect_be(f, "127.0.0.3:" PORT), b3);
	struct backend *b4 = expect_be(f, "127.0.0.4:" PORT);
	assert_true(b4 != b2 && b4 != b3);
	assert_int_equal(n_gone(f->p), 1);
	assert_true(f->p->has_gone);
	assert_int_equal(f->n->n_addrs, 2);
	ASSERT_LOG(f, "pool=t name=" NAME ":" PORT ": dns: changed: +127.0.0.4:" PORT " -127.0.0.2:" PORT);
	ASSERT_LOG(f, "pool=t backend=127.0.0.4:" PORT " name=" NAME ":" PORT ": added by dns");
	ASSERT_LOG(f, "pool=t backend=127.0.0.2:" PORT " name=" NAME ":" PORT
	              ": removed by dns: 0 idle closed, 0 active session(s) finish");
	/* no connection left on it: the reaper forgets it */
	pool_reap_gone(f->p);
	assert_int_equal(f->p->n_backends, 2);
	assert_null(be_at(f->p, "127.0.0.2:" PORT));
	assert_ptr_equal(be_at(f->p, "127.0.0.3:" PORT), b3);
	assert_ptr_equal(be_at(f->p, "127.0.0.4:" PORT), b4);
	assert_false(f->p->has_gone);
	check_counts(f);
	f->passed = 1;
}

/* An address that left the answer comes back while its backend still
 * drains (an active session kept it): the same backend, serving again. */
static void test_departed_address_returns(void **state)
{
	struct fx *f = *state;
	script_a(&f->srv, "127.0.0.2", "127.0.0.3", NULL);
	fx_start(f, "refresh: 200ms");
	WAIT_FOR(f, f->n->lookups[DNS_OK] >= 1, WAIT_SECS);
	struct backend *b2 = expect_be(f, "127.0.0.2:" PORT);
	check_counts(f);
	script_a(&f->srv, "127.0.0.3", NULL);
	WAIT_FOR(f, b2->gone, WAIT_SECS);
	assert_int_equal(b2->state, BACKEND_DRAINING);
	assert_int_equal(f->n->n_addrs, 1);
	check_counts(f);
	/* not reaped (as if a session still ran on it): back in the answer */
	script_a(&f->srv, "127.0.0.3", "127.0.0.2", NULL);
	WAIT_FOR(f, !b2->gone, WAIT_SECS);
	assert_int_equal(f->p->n_backends, 2);
	assert_ptr_equal(expect_be(f, "127.0.0.2:" PORT), b2);
	assert_int_equal(f->n->n_addrs, 2);
	check_counts(f);
	ASSERT_LOG(f, "pool=t backend=127.0.0.2:" PORT " name=" NAME ":" PORT
	              ": back in the answer of its name");
	ASSERT_LOG(f, "pool=t name=" NAME ":" PORT ": dns: changed: +127.0.0.2:" PORT " (next in 0.2s)");
	/* the reaper leaves it alone now */
	pool_reap_gone(f->p);
	assert_int_equal(f->p->n_backends, 2);
	assert_ptr_equal(be_at(f->p, "127.0.0.2:" PORT), b2);
	f->passed = 1;
}

/* A name that does not resolve at startup: no backends, state failing, retried (not at the
 * refresh: every min_ttl, backing off), NODATA likewise; a later answer
 * makes them. */
static void test_nxdomain_then_nodata_then_answer(void **state)
{
	struct fx *f = *state;
	script(&f->srv, R_RCODE, 3);
	fx_start(f, "refresh: 1h, min_ttl: 100ms");
	WAIT_FOR(f, f->n->lookups[DNS_NXDOMAIN] >= 1, WAIT_SECS);
	assert_int_equal(f->p->n_backends, 0);
	assert_int_equal(f->n->state, DNS_FAILING);
	assert_int_equal(f->n->last_result, DNS_NXDOMAIN);
	assert_int_equal(f->n->n_addrs, 0);
	assert_int_equal(f->n->lookups[DNS_OK], 0);
	ASSERT_LOG(f, "pool=t name=" NAME ":" PORT ": dns: lookup failed: no such name (NXDOMAIN)");
	/* retried well before the refresh of 1h */
	WAIT_FOR(f, f->n->lookups[DNS_NXDOMAIN] >= 2, WAIT_SECS);
	assert_int_equal(f->p->n_backends, 0);
	assert_int_equal(f->n->state, DNS_FAILING);

	/* an empty NOERROR answer: NODATA */
	script(&f->srv, R_ANSWER, 0);
	WAIT_FOR(f, f->n->lookups[DNS_NODATA] >= 1, WAIT_SECS);
	assert_int_equal(f->p->n_backends, 0);
	assert_int_equal(f->n->state, DNS_FAILING);
	assert_int_equal(f->n->last_result, DNS_NODATA);
	ASSERT_LOG(f, "pool=t name=" NAME ":" PORT ": dns: lookup failed: no address (NODATA)");

	script_a(&f->srv, "127.0.0.2", "127.0.0.3", NULL);
	WAIT_FOR(f, f->n->lookups[DNS_OK] >= 1, WAIT_SECS);
	assert_int_equal(f->p->n_backends, 2);
	expect_be(f, "127.0.0.2:" PORT);
	expect_be(f, "127.0.0.3:" PORT);
	assert_int_equal(f->n->state, DNS_GOOD);
	assert_int_equal(f->n->fails, 0);
	f->passed = 1;
}

/* Failures after a good answer keep its backends for hold (held), then
 * they go down with reason dns (expired); an answer brings them back. */
static void test_hold_then_expire_then_back(void **state)
{
	struct fx *f = *state;
	script_a(&f->srv, "127.0.0.2", "127.0.0.3", NULL);
	fx_start(f, "refresh: 200ms, min_ttl: 100ms, hold: 500ms");
	WAIT_FOR(f, f->n->lookups[DNS_OK] >= 1, WAIT_SECS);
	struct backend *b2 = expect_be(f, "127.0.0.2:" PORT), *b3 = expect_be(f, "127.0.0.3:" PORT);

	script(&f->srv, R_RCODE, 3); /* NXDOMAIN */
	WAIT_FOR(f, f->n->lookups[DNS_NXDOMAIN] >= 1, WAIT_SECS);
	assert_int_equal(f->n->state, DNS_HELD);
	assert_int_equal(f->n->last_result, DNS_NXDOMAIN);
	assert_int_equal(f->n->n_addrs, 2);
	assert_int_equal(f->p->n_backends, 2);
	assert_ptr_equal(expect_be(f, "127.0.0.2:" PORT), b2); /* kept, and still usable */
	assert_ptr_equal(expect_be(f, "127.0.0.3:" PORT), b3);
	ASSERT_LOG(
	    f, "pool=t name=" NAME ":" PORT
	       ": dns: lookup failed: no such name (NXDOMAIN) (keeping 2 addresses until hold ends in 0.5s)");

	/* the server stops answering: timeouts, until hold ends */
	script(&f->srv, R_DROP, 0);
	WAIT_FOR(f, f->n->state == DNS_EXPIRED, WAIT_SECS);
	/* not before hold (a timer's slack aside) */
	assert_true(ev_now(f->loop) - f->n->held_since >= 0.5 - 0.01);
	WAIT_FOR(f, f->n->lookups[DNS_TIMEOUT] >= 1, WAIT_SECS);
	assert_int_equal(f->p->n_backends, 2);
	for (size_t i = 0; i < 2; i++) {
		struct backend *be = f->p->backends[i];
		assert_true(be == b2 || be == b3);
		assert_int_equal(be->state, BACKEND_DOWN);
		assert_true(be->dns_down);
		assert_false(be->gone);
		assert_int_equal(be->last_reason, REASON_DNS);
		assert_true(strncmp(be->last_error, "dns: ", 5) == 0);
	}
	assert_int_equal(f->p->n_up_primary, 0);
	check_counts(f);
	ASSERT_LOG(f, "pool=t name=" NAME ":" PORT ": dns: hold expired: the name's backends are down");

	/* it answers again: the same backends, unknown (to be proven) again */
	script_a(&f->srv, "127.0.0.2", "127.0.0.3", NULL);
	uint64_t ok = f->n->lookups[DNS_OK];
	WAIT_FOR(f, f->n->lookups[DNS_OK] > ok, WAIT_SECS);
	assert_int_equal(f->n->state, DNS_GOOD);
	assert_int_equal(f->p->n_backends, 2);
	assert_ptr_equal(expect_be(f, "127.0.0.2:" PORT), b2);
	assert_ptr_equal(expect_be(f, "127.0.0.3:" PORT), b3);
	assert_int_equal(f->p->n_up_primary, 2);
	check_counts(f);
	f->passed = 1;
}

/* hold: 0 — the first failure after a good answer takes the backends down. */
static void test_hold_zero_expires_at_once(void **state)
{
	struct fx *f = *state;
	script_a(&f->srv, "127.0.0.2", NULL);
	fx_start(f, "refresh: 200ms, min_ttl: 100ms, hold: 0");
	WAIT_FOR(f, f->n->lookups[DNS_OK] >= 1, WAIT_SECS);
	struct backend *b2 = expect_be(f, "127.0.0.2:" PORT);
	script(&f->srv, R_RCODE, 3);
	WAIT_FOR(f, f->n->lookups[DNS_NXDOMAIN] >= 1, WAIT_SECS);
	assert_int_equal(f->n->state, DNS_EXPIRED);
	assert_int_equal(b2->state, BACKEND_DOWN);
	assert_true(b2->dns_down);
	assert_int_equal(b2->last_reason, REASON_DNS);
	assert_string_equal(b2->last_error, "dns: no such name (NXDOMAIN)");
	f->passed = 1;
}

/* A SERVFAIL answer is counted and logged as a server failure (the
 * issue's reason words and the metrics' result="servfail"), not as c-ares'
 * generic words. */
static void test_servfail_is_server_failure(void **state)
{
	struct fx *f = *state;
	script_a(&f->srv, "127.0.0.2", NULL);
	fx_start(f, "refresh: 200ms, min_ttl: 100ms, hold: 5s, family: ipv4");
	WAIT_FOR(f, f->n->lookups[DNS_OK] >= 1, WAIT_SECS);
	script(&f->srv, R_RCODE, 2);
	size_t q0 = f->srv.n_q;
	WAIT_FOR(f, f->n->state == DNS_HELD, WAIT_SECS);
	assert_true(f->srv.n_q > q0); /* it did ask, and got the SERVFAIL */
	if (f->n->last_result != DNS_SERVFAIL)
		fail_msg("SERVFAIL counted as \"%s\" (%s), want \"servfail\"",
		         dns_result_str(f->n->last_result), f->n->last_error);
	assert_int_equal(f->n->lookups[DNS_SERVFAIL], 1);
	/* c-ares 1.18 ends a query every server answered with SERVFAIL (or
	 * REFUSED) as ECONNREFUSED unless ARES_FLAG_NOCHECKRESP, which would stop
	 * it trying the next server: dns.c keeps the retries and names both. */
	assert_string_equal(f->n->last_error, "server failure (SERVFAIL or refused)");
	f->passed = 1;
}

/* mode: first — one backend, the answer's first address; an answer that
 * still has it (rotated) moves nothing; one without it moves it. */
static void test_mode_first(void **state)
{
	struct fx *f = *state;
	script_a(&f->srv, "127.0.0.2", "127.0.0.3", "127.0.0.4", NULL);
	fx_start(f, "refresh: 200ms, mode: first");
	WAIT_FOR(f, f->n->lookups[DNS_OK] >= 1, WAIT_SECS);
	assert_int_equal(f->p->n_backends, 1);
	struct backend *b2 = expect_be(f, "127.0.0.2:" PORT);
	assert_int_equal(f->n->n_addrs, 1);

	script_a(&f->srv, "127.0.0.3", "127.0.0.4", "127.0.0.2", NULL);
	uint64_t ok = f->n->lookups[DNS_OK];
	WAIT_FOR(f, f->n->lookups[DNS_OK] >= ok + 2, WAIT_SECS);
	assert_int_equal(f->p->n_backends, 1);
	assert_ptr_equal(expect_be(f, "127.0.0.2:" PORT), b2);
	assert_int_equal(n_gone(f->p), 0);

	script_a(&f->srv, "127.0.0.4", "127.0.0.3", NULL);
	ok = f->n->lookups[DNS_OK];
	WAIT_FOR(f, f->n->lookups[DNS_OK] > ok, WAIT_SECS);
	assert_int_equal(f->p->n_backends, 2);
	assert_true(b2->gone);
	expect_be(f, "127.0.0.4:" PORT);
	assert_int_equal(f->n->n_addrs, 1);
	f->passed = 1;
}

/* family: ipv4 asks A only: the AAAA records the server has are not used. */
static void test_family_ipv4(void **state)
{
	struct fx *f = *state;
	script_a(&f->srv, "127.0.0.2", NULL);
	script_rr(&f->srv, T_AAAA, 60, NULL, "fd00::2");
	fx_start(f, "refresh: 1h, family: ipv4");
	WAIT_FOR(f, f->n->lookups[DNS_OK] >= 1, WAIT_SECS);
	assert_int_equal(f->p->n_backends, 1);
	expect_be(f, "127.0.0.2:" PORT);
	assert_int_equal(queries(&f->srv, 0, T_A, NAME), 1);
	assert_int_equal(queries(&f->srv, 0, T_AAAA, NAME), 0);
	f->passed = 1;
}

/* family: any uses both; family: ipv6 asks AAAA only. IPv6 backends are
 * named [v6]:port. */
static void test_family_any_and_ipv6(void **state)
{
	struct fx *f = *state;
	script_a(&f->srv, "127.0.0.2", NULL);
	script_rr(&f->srv, T_AAAA, 60, NULL, "fd00::2");
	fx_start(f, "refresh: 1h");
	WAIT_FOR(f, f->n->lookups[DNS_OK] >= 1, WAIT_SECS);
	assert_int_equal(f->p->n_backends, 2);
	expect_be(f, "127.0.0.2:" PORT);
	struct backend *b6 = expect_be(f, "[fd00::2]:" PORT);
	assert_int_equal(b6->addr.ss_family, AF_INET6);
	assert_int_equal(ntohs(((struct sockaddr_in6 *)&b6->addr)->sin6_port), 5432);
	f->passed = 1;
}

static void test_family_ipv6(void **state)
{
	struct fx *f = *state;
	script_a(&f->srv, "127.0.0.2", NULL);
	script_rr(&f->srv, T_AAAA, 60, NULL, "fd00::2");
	script_rr(&f->srv, T_AAAA, 60, NULL, "fd00::3");
	fx_start(f, "refresh: 1h, family: ipv6");
	WAIT_FOR(f, f->n->lookups[DNS_OK] >= 1, WAIT_SECS);
	assert_int_equal(f->p->n_backends, 2);
	expect_be(f, "[fd00::2]:" PORT);
	expect_be(f, "[fd00::3]:" PORT);
	assert_int_equal(queries(&f->srv, 0, T_A, NAME), 0);
	assert_int_equal(queries(&f->srv, 0, T_AAAA, NAME), 1);
	f->passed = 1;
}

/* respect_ttl: the answer's TTL (1 s, the least min_ttl allows by default)
 * schedules the next lookup, not the refresh of 1 h. */
static void test_respect_ttl(void **state)
{
	struct fx *f = *state;
	script(&f->srv, R_ANSWER, 0);
	script_rr(&f->srv, T_A, 1, NULL, "127.0.0.2");
	fx_start(f, "refresh: 1h, respect_ttl: true, family: ipv4");
	WAIT_FOR(f, f->n->lookups[DNS_OK] >= 1, WAIT_SECS);
	assert_int_equal(f->n->ttl, 1);
	assert_int_equal(queries(&f->srv, 0, T_A, NAME), 1);
	WAIT_FOR(f, queries(&f->srv, 0, T_A, NAME) >= 2, WAIT_SECS);
	double gap = query_at(&f->srv, T_A, NAME, 1) - query_at(&f->srv, T_A, NAME, 0);
	if (gap < 0.9 || gap > 2.0)
		fail_msg("the next lookup came %.3fs after the first, want about 1s", gap);
	f->passed = 1;
}

/* respect_ttl clamps: a TTL below min_ttl waits min_ttl. */
static void test_respect_ttl_clamped(void **state)
{
	struct fx *f = *state;
	script(&f->srv, R_ANSWER, 0);
	script_rr(&f->srv, T_A, 0, NULL, "127.0.0.2");
	fx_start(f, "refresh: 1h, respect_ttl: true, min_ttl: 500ms, family: ipv4");
	WAIT_FOR(f, queries(&f->srv, 0, T_A, NAME) >= 2, WAIT_SECS);
	double gap = query_at(&f->srv, T_A, NAME, 1) - query_at(&f->srv, T_A, NAME, 0);
	if (gap < 0.45 || gap > 1.5)
		fail_msg("the next lookup came %.3fs after the first, want about 0.5s", gap);
	f->passed = 1;
}

/* A CNAME chain: the address at its end is used. */
static void test_cname_chain(void **state)
{
	struct fx *f = *state;
	script(&f->srv, R_ANSWER, 0);
	script_rr(&f->srv, T_CNAME, 30, NULL, "a.test");
	script_rr(&f->srv, T_CNAME, 30, "a.test", "b.test");
	script_rr(&f->srv, T_A, 60, "b.test", "127.0.0.9");
	fx_start(f, "refresh: 1h");
	WAIT_FOR(f, f->n->lookups[DNS_OK] >= 1, WAIT_SECS);
	assert_int_equal(f->p->n_backends, 1);
	expect_be(f, "127.0.0.9:" PORT);
	assert_int_equal(f->n->ttl, 30); /* the lowest TTL along the chain */
	f->passed = 1;
}

/* An answer longer than DNS_MAX_ADDRS is cut there. */
static void test_answer_cut(void **state)
{
	struct fx *f = *state;
	static char addrs[DNS_MAX_ADDRS + 4][24];
	script(&f->srv, R_ANSWER, 0);
	for (int i = 0; i < DNS_MAX_ADDRS + 4; i++) {
		snprintf(addrs[i], sizeof addrs[i], "127.0.1.%d", i + 1);
		script_rr(&f->srv, T_A, 60, NULL, addrs[i]);
	}
	fx_start(f, "refresh: 1h, family: ipv4");
	WAIT_FOR(f, f->n->lookups[DNS_OK] >= 1, WAIT_SECS);
	assert_int_equal(f->n->n_addrs, DNS_MAX_ADDRS);
	assert_int_equal(f->p->n_backends, DNS_MAX_ADDRS);
	for (int i = 0; i < DNS_MAX_ADDRS; i++) {
		char a[sizeof addrs + 8]; /* gcc cannot tell a row from the whole array */
		snprintf(a, sizeof a, "%s:" PORT, addrs[i]);
		expect_be(f, a);
	}
	assert_true(f->n->cut_said);
	ASSERT_LOG(f, "dns: the answer has 4 more addresses than the 16 used");
	f->passed = 1;
}

/* A failed backend looks its name up at once (and the new answer is
 * applied); again within min_ttl: no query; after min_ttl: a query. */
static void test_backend_failed_resolves_early(void **state)
{
	struct fx *f = *state;
	script_a(&f->srv, "127.0.0.2", NULL);
	fx_start(f, "refresh: 1h, min_ttl: 300ms, family: ipv4");
	WAIT_FOR(f, f->n->lookups[DNS_OK] >= 1, WAIT_SECS);
	struct backend *b2 = expect_be(f, "127.0.0.2:" PORT);
	/* The name moved; the failure comes within min_ttl of the first lookup:
	 * not asked at once, but as soon as min_ttl ends (not at the 1h refresh). */
	script_a(&f->srv, "127.0.0.4", NULL);
	size_t q0 = f->srv.n_q;
	double last = f->n->last_lookup;
	dns_backend_failed(b2);
	assert_false(f->n->querying);
	run_for(f, 0.1);
	assert_int_equal(f->srv.n_q, q0);
	WAIT_FOR(f, f->n->lookups[DNS_OK] >= 2, WAIT_SECS);
	assert_true(f->n->last_lookup - last >= 0.3 - 0.01);
	assert_int_equal(f->srv.n_q, q0 + 1);
	assert_true(b2->gone);
	struct backend *b4 = expect_be(f, "127.0.0.4:" PORT);
	ASSERT_LOG(f, "pool=t name=" NAME ":" PORT ": dns: re-resolving early (in ");

	/* Two more failures within min_ttl of that lookup: one deferred query. */
	dns_backend_failed(b4);
	dns_backend_failed(b4);
	assert_false(f->n->querying);
	run_for(f, 0.15);
	assert_int_equal(f->srv.n_q, q0 + 1);
	WAIT_FOR(f, f->n->lookups[DNS_OK] >= 3, WAIT_SECS);
	run_for(f, 0.1);
	assert_int_equal(f->srv.n_q, q0 + 2);

	/* A gone backend's failure never asks. */
	last = f->n->last_lookup;
	WAIT_FOR(f, ev_now(f->loop) - last >= 0.3 + 0.02, WAIT_SECS);
	dns_backend_failed(b2);
	assert_false(f->n->querying);
	run_for(f, 0.1);
	assert_int_equal(f->srv.n_q, q0 + 2);
	/* Past min_ttl: at once. */
	dns_backend_failed(b4);
	assert_true(f->n->querying);
	WAIT_FOR(f, f->n->lookups[DNS_OK] >= 4, WAIT_SECS);
	assert_int_equal(f->srv.n_q, q0 + 3);
	ASSERT_LOG(f, "pool=t name=" NAME ":" PORT ": dns: re-resolving early: backend 127.0.0.4:" PORT " failed");
	f->passed = 1;
}

/* Expired: the backend is down because its name no longer answers, and
 * its address is not the name's anymore: nothing connects to it (a probe
 * could not bring it up: backend_health_ok ignores a dns-down backend). */
static void test_expired_backend_is_not_probed(void **state)
{
	struct fx *f = *state;
	struct acceptor *acc = &f->acc;
	f->tcp_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	assert_true(f->tcp_fd >= 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
	assert_int_equal(inet_pton(AF_INET, "127.0.0.2", &a.sin_addr), 1);
	assert_int_equal(bind(f->tcp_fd, (struct sockaddr *)&a, sizeof a), 0);
	assert_int_equal(listen(f->tcp_fd, 64), 0);
	socklen_t al = sizeof a;
	assert_int_equal(getsockname(f->tcp_fd, (struct sockaddr *)&a, &al), 0);
	f->tcp_port = ntohs(a.sin_port);

	script_a(&f->srv, "127.0.0.2", NULL);
	fx_start(f, "refresh: 200ms, min_ttl: 100ms, hold: 200ms, family: ipv4");
	ev_io_init(&acc->io, accept_cb, f->tcp_fd, EV_READ);
	ev_io_start(f->loop, &acc->io);
	WAIT_FOR(f, f->n->lookups[DNS_OK] >= 1, WAIT_SECS);
	assert_int_equal(f->p->n_backends, 1);
	struct backend *be = f->p->backends[0];
	script(&f->srv, R_RCODE, 3);
	WAIT_FOR(f, f->n->state == DNS_EXPIRED, WAIT_SECS);
	assert_true(be->dns_down);
	assert_int_equal(be->state, BACKEND_DOWN);
	size_t before = acc->n;
	run_for(f, 1.5);
	size_t conns = 0;
	for (int k = 0; k < BCONN_NLISTS; k++)
		conns += be->conns[k].n;
	if (acc->n != before)
		fail_msg(
		    "a dns-down backend got %zu connection(s) in 1.5s (%zu still open in the pool, state %s)",
		    acc->n - before, conns, backend_state_str(be->state));
	f->passed = 1;
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    T(test_answer_applied_as_diff),
	    T(test_departed_address_returns),
	    T(test_nxdomain_then_nodata_then_answer),
	    T(test_hold_then_expire_then_back),
	    T(test_hold_zero_expires_at_once),
	    T(test_servfail_is_server_failure),
	    T(test_mode_first),
	    T(test_family_ipv4),
	    T(test_family_any_and_ipv6),
	    T(test_family_ipv6),
	    T(test_respect_ttl),
	    T(test_respect_ttl_clamped),
	    T(test_cname_chain),
	    T(test_answer_cut),
	    T(test_backend_failed_resolves_early),
	    T(test_expired_backend_is_not_probed),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
