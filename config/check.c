/*
 * config/check.c — phase 3, cross-checks over the whole merged document:
 * socket paths unique across pools (check_sockets), the host name of
 * metrics_listen resolved within CFG_RESOLVE_TIMEOUT_MS (resolve_backends,
 * getaddrinfo_a), and the warnings a valid config may still earn
 * (collect_warnings). Backend host names are not resolved by a load: the
 * daemon resolves them in its loop (daemon/dns.c); cfg_resolve_names()
 * looks them up for `warmpoold --check-config --resolve` only.
 */
#include "loader.h"

#include "addr.h"
#include "escape.h"

#include <ares.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <math.h>
#include <netdb.h>
#include <poll.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <yaml.h>

bool refs_add(struct ld *ld, struct refs *r, const char *label, const char *text, struct cfg_pos pos,
                     struct cfg_backend *be, const char *pool)
{
	char *l;

	if (r->n == r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 16;
		struct ref *v = realloc(r->v, cap * sizeof *v);
		if (!v)
			goto oom;
		r->v = v;
		r->cap = cap;
	}
	l = strdup(label);
	if (!l)
		goto oom;
	r->v[r->n] = (struct ref){l, text, pos, r->n, be, pool};
	r->n++;
	return true;
oom:
	ld->oom = true;
	return false;
}

void refs_free(struct refs *r)
{
	for (size_t i = 0; i < r->n; i++)
		free(r->v[i].label);
	free(r->v);
	r->v = NULL;
	r->n = r->cap = 0;
}


/* ------------------------------------------------------------------ */
/* Phase 3: cross-checks                                               */

static int cmp_socket_ref(const void *a, const void *b)
{
	const struct ref *x = a, *y = b;
	int c = strcmp(x->text, y->text);

	if (c)
		return c;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

void check_sockets(struct ld *ld)
{
	struct refs *r = &ld->sockets;
	char shown[SHOW_BUF], name[SHOW_BUF];

	if (r->n < 2)
		return;
	qsort(r->v, r->n, sizeof *r->v, cmp_socket_ref);
	for (size_t i = 1, first = 0; i < r->n; i++) {
		if (strcmp(r->v[i].text, r->v[first].text) != 0) {
			first = i;
			continue;
		}
		show(r->v[i].text, strlen(r->v[i].text), true, shown);
		show(r->v[first].pool, strlen(r->v[first].pool), false, name);
		add_err(ld, r->v[i].pos, r->v[i].label,
		        "expected a socket path no other listener uses (%s%s has it at line %u), got %s",
		        strcmp(r->v[first].pool, "daemon") ? "pool " : "", name, r->v[first].pos.line, shown);
	}
}

/*
 * The host name of daemon.metrics_listen (the refs in ld->backends: backend
 * names are the daemon's to resolve, IP literals got their address in phase
 * 2) is resolved with getaddrinfo_a() (glibc runs each lookup in a
 * helper thread) and polled with gai_error() until one deadline for
 * the whole load, CFG_RESOLVE_TIMEOUT_MS: a reload runs inside the event
 * loop, and a DNS server that never answers must not stop it for
 * resolv.conf's timeout x attempts x servers. Numeric addresses skip all
 * that (AI_NUMERICHOST answers at once).
 *
 * A lookup still running at the deadline is cancelled; one glibc cannot
 * cancel (its thread is inside the resolver) keeps writing into its request
 * until it returns, so the request is not freed but parked on `abandoned`
 * and freed by a later load once finished. This list is the only state the
 * loader keeps between calls; it is bounded by the names of the loads that
 * timed out while their lookups hang.
 *
 * Two glibc 2.36 races shape this (both seen as a crash in the helper
 * thread's __gai_notify, about one load in 15 under ASan): the thread stores
 * a request's result before it takes the lock under which it notifies the
 * waiters and dequeues it. So gai_suspend() is not used (a caller it wakes
 * may see the result, skip removing its waiter record, which lives on the
 * caller's stack, and return: the thread then writes through it), and a
 * finished request is freed only once gai_cancel() (which takes that lock)
 * says EAI_ALLDONE; until then it is parked like a hanging one.
 */
struct resolve_req {
	struct gaicb cb; /* first: cb.ar_name etc. point into this struct */
	struct addrinfo hints;
	char host[NI_MAXHOST];
	char port[8];
	struct resolve_req *next; /* on `abandoned` */
};

static struct resolve_req *abandoned;

/* Has glibc's helper thread let go of `q` (done, notified, dequeued)? */
static bool resolve_released(struct resolve_req *q)
{
	return gai_error(&q->cb) != EAI_INPROGRESS && gai_cancel(&q->cb) == EAI_ALLDONE;
}

/* Free the parked requests whose lookups have returned. */
static void reap_abandoned(void)
{
	for (struct resolve_req **pp = &abandoned; *pp;) {
		struct resolve_req *q = *pp;
		if (!resolve_released(q)) {
			pp = &q->next;
			continue;
		}
		*pp = q->next;
		if (q->cb.ar_result)
			freeaddrinfo(q->cb.ar_result);
		free(q);
	}
}

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#define RESOLVE_NAP_MIN_US 100   /* first pause between polls: a cached answer comes back this fast */
#define RESOLVE_NAP_MAX_US 10000 /* pauses double up to this: a wait, not a spin */

/* Wait until every request in v[0..n) is done or the deadline passes,
 * polling gai_error() (not gai_suspend(): see above). */
static void resolve_wait(struct gaicb **v, size_t n, int64_t deadline)
{
	long nap = RESOLVE_NAP_MIN_US;
	for (;;) {
		size_t k = 0;
		for (size_t i = 0; i < n; i++)
			if (gai_error(v[i]) == EAI_INPROGRESS)
				k++;
		int64_t left = deadline - mono_ms();
		if (!k || left <= 0)
			return;
		long us = left * 1000 < nap ? (long)(left * 1000) : nap;
		struct timespec ts = {.tv_sec = 0, .tv_nsec = us * 1000};
		(void)nanosleep(&ts, NULL); /* EINTR: look again */
		nap = nap * 2 > RESOLVE_NAP_MAX_US ? RESOLVE_NAP_MAX_US : nap * 2;
	}
}

static void resolve_store(struct ld *ld, const struct ref *r, int e, const struct addrinfo *res)
{
	char shown[SHOW_BUF];

	if (e == 0 && res && res->ai_addrlen <= sizeof r->be->addr) {
		memcpy(&r->be->addr, res->ai_addr, res->ai_addrlen);
		r->be->addrlen = res->ai_addrlen;
		return;
	}
	show(r->text, strlen(r->text), true, shown);
	if (e == EAI_MEMORY)
		ld->oom = true;
	else if (e == EAI_INPROGRESS)
		add_err(ld, r->pos, r->label, "name resolution of %s timed out (%d ms for all host names)", shown,
		        CFG_RESOLVE_TIMEOUT_MS);
	else
		add_err(ld, r->pos, r->label, "expected a host name that resolves (%s), got %s",
		        e == EAI_SYSTEM ? "system error" : e ? gai_strerror(e) : "no address", shown);
}

void resolve_backends(struct ld *ld)
{
	size_t n = ld->backends.n, k = 0;
	struct resolve_req **reqs = calloc(n ? n : 1, sizeof *reqs);
	struct gaicb **list = calloc(n ? n : 1, sizeof *list);
	size_t *which = calloc(n ? n : 1, sizeof *which);

	reap_abandoned();
	if (!reqs || !list || !which) {
		ld->oom = true;
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		const struct ref *r = &ld->backends.v[i];
		struct addrinfo hints = {
		    .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
		struct addrinfo *res = NULL;
		char host[NI_MAXHOST], port_s[8];
		const char *why = NULL;
		uint16_t port;

		if (wp_addr_split(r->text, host, sizeof host, &port, &why) < 0)
			continue; /* reported in phase 2 */
		if (r->text[0] == '[')
			hints.ai_family = AF_INET6;
		snprintf(port_s, sizeof port_s, "%u", (unsigned)port);
		hints.ai_flags |= AI_NUMERICHOST;
		int e = getaddrinfo(host, port_s, &hints, &res);
		if (e != EAI_NONAME || r->text[0] == '[') { /* numeric (or [v6] that is not): done */
			resolve_store(ld, r, e, res);
			if (res)
				freeaddrinfo(res);
			continue;
		}
		struct resolve_req *q = calloc(1, sizeof *q);
		if (!q) {
			ld->oom = true;
			goto out;
		}
		q->hints = hints;
		q->hints.ai_flags &= ~AI_NUMERICHOST;
		memcpy(q->host, host, sizeof q->host);
		memcpy(q->port, port_s, sizeof q->port);
		q->cb = (struct gaicb){.ar_name = q->host, .ar_service = q->port, .ar_request = &q->hints};
		reqs[k] = q;
		list[k] = &q->cb;
		which[k++] = i;
	}
	if (k == 0)
		goto out;
	/* On failure some requests may still have been queued: wait for those;
	 * one never queued reads as finished without a result. */
	int e = getaddrinfo_a(GAI_NOWAIT, list, (int)k, NULL);
	resolve_wait(list, k, mono_ms() + CFG_RESOLVE_TIMEOUT_MS);
	for (size_t j = 0; j < k; j++) {
		struct resolve_req *q = reqs[j];
		const struct ref *r = &ld->backends.v[which[j]];
		int st = gai_error(&q->cb);
		if (st == EAI_INPROGRESS) {
			int c = gai_cancel(&q->cb);
			if (c == EAI_NOTCANCELED) { /* its thread still writes into q */
				resolve_store(ld, r, EAI_INPROGRESS, NULL);
				q->next = abandoned;
				abandoned = q;
				reqs[j] = NULL;
				continue;
			}
			st = c == EAI_ALLDONE ? gai_error(&q->cb) : EAI_INPROGRESS; /* cancelled: timed out */
		}
		if (st == 0 && !q->cb.ar_result && e != 0)
			st = e;
		resolve_store(ld, r, st, q->cb.ar_result);
		if (!resolve_released(q)) { /* finished, but its thread has not let go yet */
			q->next = abandoned;
			abandoned = q;
			reqs[j] = NULL;
		}
	}
out:
	for (size_t j = 0; reqs && j < k; j++) {
		if (reqs[j] && reqs[j]->cb.ar_result)
			freeaddrinfo(reqs[j]->cb.ar_result);
		free(reqs[j]);
	}
	free(reqs);
	free(list);
	free(which);
}

/* A pool whose listen items carry an ACL while its handoff socket has none
 * (the handoff socket has no allow: of its own: it takes the pool's). Any
 * local user who can reach the handoff file then gets warm connections
 * (checkout) the listeners would refuse them. Valid, but almost certainly
 * not meant: a warning, with the fix. */
void collect_warnings(struct ld *ld)
{
	char name[SHOW_BUF], path[PATH_BUF];

	for (size_t i = 0; i < ld->cfg->n_pools; i++) {
		const struct cfg_pool *p = &ld->cfg->pools[i];
		size_t with = p->n_listen;
		if (!p->handoff.path || p->handoff.allow.enabled)
			continue;
		for (size_t j = 0; j < p->n_listen && with == p->n_listen; j++)
			if (p->listen[j].allow.enabled)
				with = j;
		if (with == p->n_listen)
			continue;
		show(p->name, strlen(p->name), false, name);
		snprintf(path, sizeof path, "pools.%s.handoff", name);
		add_warning(ld, p->handoff.pos, path,
		            "the handoff socket %s has no allow: while listen[%zu] has one: any user who can reach "
		            "the socket file can take connections; put allow: on the pool itself, which covers the "
		            "handoff socket and every listen item",
		            p->handoff.path, with);
	}
}

/* ------------------------------------------------------------------ */
/* --check-config --resolve                                            */

/*
 * cfg_resolve_names() asks for every backend name the way the daemon does
 * (daemon/dns.c): c-ares, with the name's merged dns: settings (servers,
 * else /etc/resolv.conf's; family; timeout and tries), so that the check
 * sees what the daemon will see, /etc/hosts included as c-ares reads it.
 * It blocks, which a command-line check may. Each name has its own channel
 * (its settings are its own); RESOLVE_PARALLEL of them run at once in one
 * poll() loop, each cut at its own deadline, timeout x tries after it
 * started (c-ares doubles the timeout of later rounds: the deadline is the
 * bound the man page promises).
 */
#define RESOLVE_PARALLEL 64 /* channels at once: each holds a socket per server it asked */
#define RESOLVE_CSV_MAX  (CFG_MAX_DNS_SERVERS * (INET6_ADDRSTRLEN + 9)) /* "[v6]:65535," per server */

struct rname {
	const struct cfg_backend *be;
	char label[PATH_BUF]; /* "pools.P.backends[i]" */
	ares_channel ch;
	int64_t deadline; /* ms, CLOCK_MONOTONIC */
	bool done;
	int status; /* ARES_SUCCESS, or why not */
};

static void rname_answer(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
	struct rname *r = arg;
	size_t n = 0;

	(void)timeouts;
	for (const struct ares_addrinfo_node *a = res ? res->nodes : NULL; a; a = a->ai_next)
		n++;
	if (res)
		ares_freeaddrinfo(res);
	if (r->done) /* ares_destroy() of a channel already answered */
		return;
	r->done = true;
	r->status = status == ARES_SUCCESS && n == 0 ? ARES_ENODATA : status;
}

/* The reason words of the daemon's log lines (daemon/dns.c), c-ares' own otherwise. */
static const char *rname_reason(int status)
{
	switch (status) {
	case ARES_ENOTFOUND:
	case ARES_ENONAME:
		return "no such name (NXDOMAIN)";
	case ARES_ENODATA:
		return "no address (NODATA)";
	case ARES_ETIMEOUT:
	case ARES_ECANCELLED: /* cut at the deadline */
		return "timeout";
	case ARES_ESERVFAIL:
		return "server failure";
	default:
		return ares_strerror(status);
	}
}

/* Start r's lookup on a channel of its own; false (r->status set) when it cannot. */
static bool rname_start(struct rname *r)
{
	const struct cfg_dns *d = &r->be->dns;
	struct ares_options o = {.timeout = (int)d->timeout_ms, .tries = (int)d->tries};
	struct ares_addrinfo_hints hints = {
	    .ai_flags = ARES_AI_NUMERICSERV | ARES_AI_NOSORT,
	    .ai_family = d->family == CFG_DNS_IPV4 ? AF_INET : d->family == CFG_DNS_IPV6 ? AF_INET6 : AF_UNSPEC,
	    .ai_socktype = SOCK_STREAM,
	};
	char csv[RESOLVE_CSV_MAX], port[8];
	size_t off = 0;
	int e;

	e = ares_init_options(&r->ch, &o, ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES);
	if (e != ARES_SUCCESS) {
		r->ch = NULL;
		r->status = e;
		return false;
	}
	for (size_t i = 0; i < d->n_servers && off < sizeof csv; i++)
		off += (size_t)snprintf(csv + off, sizeof csv - off, "%s%s", i ? "," : "", d->servers[i]);
	if (d->n_servers && (e = ares_set_servers_ports_csv(r->ch, csv)) != ARES_SUCCESS) {
		r->status = e;
		return false;
	}
	r->deadline = mono_ms() + (int64_t)(d->timeout_ms * d->tries);
	snprintf(port, sizeof port, "%u", (unsigned)r->be->port);
	ares_getaddrinfo(r->ch, r->be->host, port, &hints, rname_answer, r); /* may answer at once (/etc/hosts) */
	return true;
}

/* Run the lookups of v[0..n) (all started) until each is done or cut at its deadline. */
static void rname_wait(struct rname *v, size_t n)
{
	struct pollfd pfd[RESOLVE_PARALLEL * ARES_GETSOCK_MAXNUM];
	struct rname *owner[RESOLVE_PARALLEL * ARES_GETSOCK_MAXNUM];

	for (;;) {
		int64_t now = mono_ms(), wait = -1;
		size_t m = 0, busy = 0;

		for (size_t i = 0; i < n; i++) {
			struct rname *r = &v[i];
			ares_socket_t socks[ARES_GETSOCK_MAXNUM];
			struct timeval tv, *tp;
			unsigned bits;

			if (r->done || !r->ch)
				continue;
			if (now >= r->deadline) {
				ares_cancel(r->ch); /* answers ARES_ECANCELLED */
				if (!r->done) {
					r->done = true;
					r->status = ARES_ETIMEOUT;
				}
				continue;
			}
			busy++;
			/* ARES_GETSOCK_WRITABLE() shifts a signed 1 into the sign bit for the last socket */
			bits = (unsigned)ares_getsock(r->ch, socks, ARES_GETSOCK_MAXNUM);
			for (unsigned j = 0; j < ARES_GETSOCK_MAXNUM; j++) {
				short ev = (short)((bits & (1u << j) ? POLLIN : 0) |
				                   (bits & (1u << (j + ARES_GETSOCK_MAXNUM)) ? POLLOUT : 0));
				if (!ev)
					continue;
				pfd[m] = (struct pollfd){.fd = socks[j], .events = ev};
				owner[m++] = r;
			}
			int64_t left = r->deadline - now;
			if ((tp = ares_timeout(r->ch, NULL, &tv))) { /* c-ares' next retry */
				int64_t retry = (int64_t)tp->tv_sec * 1000 + (tp->tv_usec + 999) / 1000;
				left = retry < left ? retry : left;
			}
			if (wait < 0 || left < wait)
				wait = left;
		}
		if (!busy)
			return;
		int k = poll(pfd, m, (int)(wait > 0 ? wait : 0));
		if (k < 0 && errno != EINTR)
			return; /* cannot wait: every name left is cut below by the caller */
		for (size_t j = 0; k > 0 && j < m; j++) {
			if (!pfd[j].revents)
				continue;
			ares_process_fd(owner[j]->ch, pfd[j].revents & (POLLIN | POLLERR | POLLHUP) ? pfd[j].fd : ARES_SOCKET_BAD,
			                pfd[j].revents & POLLOUT ? pfd[j].fd : ARES_SOCKET_BAD);
		}
		for (size_t i = 0; i < n; i++) /* timeouts and retries */
			if (!v[i].done && v[i].ch)
				ares_process_fd(v[i].ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	}
}

/* Report the finished lookups of v[0..n) and free their channels. */
static void rname_finish(struct ld *ld, struct rname *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct rname *r = &v[i];

		if (!r->done) { /* its start failed (status set), or poll() did */
			r->done = true;
			r->status = r->status ? r->status : ARES_ETIMEOUT;
		}
		if (r->ch)
			ares_destroy(r->ch); /* a lookup still queued answers ARES_EDESTRUCTION: ignored (done) */
		if (r->status != ARES_SUCCESS)
			add_err(ld, r->be->pos, r->label, "%s: does not resolve: %s", r->be->name, rname_reason(r->status));
	}
}

int cfg_resolve_names(const struct wp_config *cfg, struct cfg_errors *errs)
{
	struct ld ld = {.file = cfg->path};
	struct rname *v = calloc(RESOLVE_PARALLEL, sizeof *v);
	struct cfg_errors scratch = {0};
	size_t n = 0;
	char pool[PATH_BUF], list[PATH_BUF];

	if (!errs)
		errs = &scratch;
	*errs = (struct cfg_errors){0};
	if (!v || ares_library_init(ARES_LIB_INIT_ALL) != ARES_SUCCESS) {
		ld.oom = !v;
		if (v)
			add_err(&ld, (struct cfg_pos){0, 0}, NULL, "cannot start the resolver library");
		goto out;
	}
	for (size_t i = 0; i < cfg->n_pools; i++) {
		const struct cfg_pool *p = &cfg->pools[i];

		path_key(pool, "pools", p->name, strlen(p->name));
		path_key(list, pool, "backends", 8);
		for (size_t j = 0; j < p->n_backends; j++) {
			struct rname *r = &v[n];

			if (!p->backends[j].is_name)
				continue;
			*r = (struct rname){.be = &p->backends[j]};
			path_index(r->label, list, j);
			if (rname_start(r))
				n++;
			else
				rname_finish(&ld, r, 1); /* reported at once */
			if (n == RESOLVE_PARALLEL) {
				rname_wait(v, n);
				rname_finish(&ld, v, n);
				n = 0;
			}
		}
	}
	rname_wait(v, n);
	rname_finish(&ld, v, n);
	ares_library_cleanup();
out:
	free(v);
	if (!failed(&ld))
		return 0;
	hand_over(&ld, errs);
	cfg_errors_free(&scratch);
	return -1;
}
