/*
 * config/check.c — phase 3, cross-checks over the whole merged document:
 * socket paths unique across pools (check_sockets), host names of backends
 * and metrics_listen resolved within CFG_RESOLVE_TIMEOUT_MS for all of them
 * together (resolve_backends, getaddrinfo_a), and the warnings a valid
 * config may still earn (collect_warnings).
 */
#include "loader.h"

#include "addr.h"
#include "escape.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <math.h>
#include <netdb.h>
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
 * Host names are resolved with getaddrinfo_a() (glibc runs each lookup in a
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
