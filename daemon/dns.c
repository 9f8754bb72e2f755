/*
 * daemon/dns.c — names of backends, resolved with c-ares in the event loop.
 *
 * A backend written as "db.internal:5432" is not one backend but as many as
 * its name has addresses, and they change: managed databases fail over by
 * moving a name. Each such entry has a struct dns_name (dns.h) with its own
 * c-ares channel. c-ares does the protocol (UDP, TCP on truncation, retries,
 * CNAME chains, search domains, /etc/hosts); we give it the loop, the way
 * PgBouncer glues it to libevent:
 *   - the socket-state callback starts, changes or stops an ev_io per
 *     socket c-ares opens; a ready socket goes to ares_process_fd();
 *   - one ev_timer: while a lookup runs it fires at ares_timeout() (c-ares
 *     then retries or gives up), otherwise at the next refresh.
 * Nothing here blocks: ares_getaddrinfo() only sends.
 *
 * An answer is applied as a diff (dns_apply): an address new to the name
 * becomes a backend (warmed, checked and balanced like any other, its
 * metrics labelled by address, its log lines by address and name); one that
 * left drains (pool_backend_depart: idle connections closed at once, active
 * sessions finish); an unchanged answer changes nothing. A lookup that fails
 * keeps the last good set for dns.hold (state held), then the name's
 * backends go down with reason dns until it answers again. A failure of a
 * named backend (first of a streak) looks the name up at once, at most once
 * per dns.min_ttl, so a failover is followed in one DNS round trip.
 */
#include "dns.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "log.h"

static const char *const state_names[] = {
    [DNS_NEW] = "new", [DNS_FAILING] = "failing", [DNS_GOOD] = "ok", [DNS_HELD] = "held", [DNS_EXPIRED] = "expired"};
static const char *const result_names[] = {[DNS_OK] = "ok",           [DNS_NODATA] = "nodata",
                                           [DNS_NXDOMAIN] = "nxdomain", [DNS_TIMEOUT] = "timeout",
                                           [DNS_SERVFAIL] = "servfail", [DNS_ERROR] = "error"};

const char *dns_state_str(enum dns_state st)
{
	return (size_t)st < sizeof state_names / sizeof *state_names ? state_names[st] : "?";
}

const char *dns_result_str(enum dns_result r)
{
	return (size_t)r < sizeof result_names / sizeof *result_names ? result_names[r] : "?";
}

const char *dns_name_str(const struct dns_name *n)
{
	return n->cfg->name;
}

static void dns_log(const struct dns_name *n, int prio, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void dns_log(const struct dns_name *n, int prio, const char *fmt, ...)
{
	if (!log_enabled(prio))
		return;
	char ctx[LOG_CTX_MAX];
	snprintf(ctx, sizeof ctx, "pool=%s name=%s", n->pool->name, n->cfg->name);
	va_list ap;
	va_start(ap, fmt);
	log_vmsg(prio, ctx, fmt, ap);
	va_end(ap);
}

int dns_library_init(void)
{
	return ares_library_init(ARES_LIB_INIT_ALL) == ARES_SUCCESS ? 0 : -1;
}

void dns_library_cleanup(void)
{
	ares_library_cleanup();
}

static struct ev_loop *dns_loop(const struct dns_name *n)
{
	return n->pool->eng->loop;
}

/* ---- c-ares <-> libev ---------------------------------------------------- */

/* While a lookup runs, the timer follows c-ares' own next timeout. */
static void dns_arm_query_timer(struct dns_name *n)
{
	struct timeval tv;
	ev_timer_stop(dns_loop(n), &n->timer);
	if (!ares_timeout(n->channel, NULL, &tv))
		return; /* nothing pending */
	ev_timer_set(&n->timer, (double)tv.tv_sec + (double)tv.tv_usec / 1e6, 0.);
	ev_timer_start(dns_loop(n), &n->timer);
}

static void dns_sock_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)loop;
	struct dns_sock *ds = container_of(w, struct dns_sock, io);
	struct dns_name *n = ds->n;
	int fd = ds->fd; /* the state callback may free the slot during processing */
	ares_process_fd(n->channel, (revents & EV_READ) ? fd : ARES_SOCKET_BAD,
	                (revents & EV_WRITE) ? fd : ARES_SOCKET_BAD);
	if (n->querying)
		dns_arm_query_timer(n);
}

/* c-ares opened, changed or closed one of its sockets. */
static void dns_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
	struct dns_name *n = data;
	struct ev_loop *loop = dns_loop(n);
	struct dns_sock *ds = NULL, *spare = NULL;
	for (size_t i = 0; i < DNS_MAX_SOCKS && !ds; i++) {
		if (n->socks[i].fd == fd)
			ds = &n->socks[i];
		else if (n->socks[i].fd < 0 && !spare)
			spare = &n->socks[i];
	}
	if (!readable && !writable) {
		if (ds) {
			ev_io_stop(loop, &ds->io);
			ds->fd = -1;
		}
		return;
	}
	if (!ds) {
		if (!spare) {
			/* Not watched: c-ares' timeout still ends the query. */
			dns_log(n, LOG_WARNING, "dns: more than %d resolver sockets at once; one is not watched",
			        DNS_MAX_SOCKS);
			return;
		}
		ds = spare;
		ds->fd = fd;
	}
	ev_io_stop(loop, &ds->io);
	ev_io_set(&ds->io, fd, (readable ? EV_READ : 0) | (writable ? EV_WRITE : 0));
	ev_io_start(loop, &ds->io);
}

/* ---- channel ------------------------------------------------------------- */

static int dns_channel_open(struct dns_name *n, char *err, size_t errlen)
{
	const struct cfg_dns *d = &n->cfg->dns;
	struct ares_options o = {0};
	o.sock_state_cb = dns_sock_state;
	o.sock_state_cb_data = n;
	o.timeout = (int)d->timeout_ms;
	o.tries = (int)d->tries;
	int mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES;
	int r = ares_init_options(&n->channel, &o, mask);
	if (r != ARES_SUCCESS) {
		n->channel = NULL;
		snprintf(err, errlen, "resolver: %s", ares_strerror(r));
		return -1;
	}
	if (d->n_servers) {
		char csv[CFG_MAX_DNS_SERVERS * 64] = "";
		size_t len = 0;
		for (size_t i = 0; i < d->n_servers && len < sizeof csv; i++)
			len += (size_t)snprintf(csv + len, sizeof csv - len, "%s%s", i ? "," : "", d->servers[i]);
		r = len < sizeof csv ? ares_set_servers_ports_csv(n->channel, csv) : ARES_EBADSTR;
		if (r != ARES_SUCCESS) {
			snprintf(err, errlen, "dns.servers: %s", ares_strerror(r));
			ares_destroy(n->channel);
			n->channel = NULL;
			return -1;
		}
	}
	return 0;
}

/* Cancels the running lookup (its callback sees ARES_EDESTRUCTION). */
static void dns_channel_close(struct dns_name *n)
{
	if (!n->channel)
		return;
	ares_channel ch = n->channel;
	ares_destroy(ch); /* closes its sockets through dns_sock_state */
	n->channel = NULL;
	n->querying = 0;
	for (size_t i = 0; i < DNS_MAX_SOCKS; i++) {
		ev_io_stop(dns_loop(n), &n->socks[i].io);
		n->socks[i].fd = -1;
	}
}

/* ---- applying an answer -------------------------------------------------- */

static int dns_in(const struct sockaddr_storage *a, const struct sockaddr_storage *set, size_t k)
{
	for (size_t i = 0; i < k; i++)
		if (pool_same_addr(a, &set[i]))
			return 1;
	return 0;
}

static void dns_addr_list(char *buf, size_t len, const char *sign, const struct sockaddr_storage *v, size_t k,
                          size_t *at)
{
	char a[WP_ADDR_STRLEN];
	for (size_t i = 0; i < k && *at < len; i++) {
		if (wp_addr_format((const struct sockaddr *)&v[i], a, sizeof a) < 0)
			snprintf(a, sizeof a, "?");
		*at += (size_t)snprintf(buf + *at, len - *at, "%s%s%s", *at ? ", " : "", sign, a);
	}
}

/* The name's backends take its slots in the answer's order (departed ones
 * last): `balance: first` walks the array, and its order is the answer's. */
static void dns_order(struct dns_name *n, const struct sockaddr_storage *v, size_t k)
{
	struct pool *p = n->pool;
	size_t slots[DNS_MAX_ADDRS * 2], m = 0;
	struct backend *mine[DNS_MAX_ADDRS * 2];
	for (size_t i = 0; i < p->n_backends && m < DNS_MAX_ADDRS * 2; i++)
		if (p->backends[i]->dns == n)
			slots[m++] = i;
	size_t w = 0;
	for (size_t j = 0; j < k; j++)
		for (size_t i = 0; i < m; i++) {
			struct backend *be = p->backends[slots[i]];
			if (!be->gone && pool_same_addr(&be->addr, &v[j]))
				mine[w++] = be;
		}
	for (size_t i = 0; i < m; i++) {
		struct backend *be = p->backends[slots[i]];
		int placed = 0;
		for (size_t j = 0; j < w && !placed; j++)
			placed = mine[j] == be;
		if (!placed)
			mine[w++] = be;
	}
	for (size_t i = 0; i < m && i < w; i++) {
		p->backends[slots[i]] = mine[i];
		mine[i]->slot = slots[i];
	}
}

/* The diff: backends for new addresses, departures for those gone, the
 * name's down backends back when it answers again. */
static void dns_apply(struct dns_name *n, const struct sockaddr_storage *v, const socklen_t *lens, size_t k,
                      const char *next)
{
	struct pool *p = n->pool;
	struct sockaddr_storage added[DNS_MAX_ADDRS], removed[DNS_MAX_ADDRS];
	size_t n_added = 0, n_removed = 0;
	int first = n->last_good == 0; /* the name's first answer */
	for (size_t i = 0; i < p->n_backends; i++) {
		struct backend *be = p->backends[i];
		if (be->dns != n)
			continue;
		if (!dns_in(&be->addr, v, k)) {
			if (!be->gone) {
				if (n_removed < DNS_MAX_ADDRS)
					removed[n_removed++] = be->addr;
				pool_backend_depart(be, "removed by dns");
			}
			continue;
		}
		if (be->gone) {
			backend_log(be, LOG_INFO, "back in the answer of its name");
			pool_backend_return(be);
			if (n_added < DNS_MAX_ADDRS)
				added[n_added++] = be->addr;
		} else if (be->dns_down) {
			be->dns_down = 0;
			pool_backend_return(be);
		}
	}
	for (size_t i = 0; i < k; i++) {
		/* One backend per address in a pool: another entry (a literal, or
		 * another name) already at this address keeps it; its metrics
		 * and balance would otherwise count it twice. */
		const struct backend *other = NULL;
		for (size_t j = 0; j < p->n_backends && !other; j++)
			if (pool_same_addr(&p->backends[j]->addr, &v[i]))
				other = p->backends[j];
		if (other) {
			if (other->dns != n)
				dns_log(n, LOG_DEBUG, "dns: %s is already the pool's backend for %s", other->name,
				        other->dns ? dns_name_str(other->dns) : "its own entry");
			continue;
		}
		struct backend *be = pool_backend_add(p, n->target, n, &v[i], lens[i]);
		if (!be) {
			dns_log(n, LOG_ERR, "dns: out of memory for a backend");
			continue;
		}
		if (n_added < DNS_MAX_ADDRS)
			added[n_added++] = v[i];
		if (!first)
			backend_log(be, LOG_INFO, "added by dns");
		health_start(be);
		if (n->admin_state == BACKEND_DRAINING || n->admin_state == BACKEND_DISABLED)
			(void)pool_backend_admin(be, (enum backend_state)n->admin_state, 0);
	}
	dns_order(n, v, k);
	memcpy(n->addrs, v, k * sizeof *v);
	memcpy(n->addrlens, lens, k * sizeof *lens);
	n->n_addrs = k;
	char line[1024];
	size_t at = 0;
	line[0] = '\0';
	if (first) {
		dns_addr_list(line, sizeof line, "", v, k, &at);
		dns_log(n, LOG_INFO, "dns: resolved: %s (next in %s)", line, next);
	} else if (n_added || n_removed) {
		dns_addr_list(line, sizeof line, "+", added, n_added, &at);
		dns_addr_list(line, sizeof line, "-", removed, n_removed, &at);
		for (char *c = line; (c = strstr(c, ", ")); c++) /* "+a -b", not "+a, -b" */
			memmove(c, c + 1, strlen(c + 1) + 1);
		dns_log(n, LOG_INFO, "dns: changed: %s (next in %s)", line, next);
	}
	if (first || n_added || n_removed) {
		n->last_change = ev_now(dns_loop(n));
		engine_changed(p->eng);
		pool_dispatch(p); /* waiting clients may have a backend now; refills */
	}
}

/* Lookups failed for longer than hold: the name's backends are down. */
static void dns_expire(struct dns_name *n)
{
	struct pool *p = n->pool;
	n->state = DNS_EXPIRED;
	dns_log(n, LOG_WARNING, "dns: hold expired: the name's backends are down");
	char why[sizeof ((struct backend *)0)->last_error];
	snprintf(why, sizeof why, "dns: %s", n->last_error);
	for (size_t i = 0; i < p->n_backends; i++) {
		struct backend *be = p->backends[i];
		if (be->dns != n || be->gone)
			continue;
		be->dns_down = 1;
		be->last_reason = REASON_DNS;
		snprintf(be->last_error, sizeof be->last_error, "%s", why);
		be->error_at = ev_now(dns_loop(n));
		if (be->state != BACKEND_DRAINING && be->state != BACKEND_DISABLED)
			backend_set_state(be, BACKEND_DOWN, why);
	}
}

static void dns_hold_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	struct dns_name *n = container_of(w, struct dns_name, hold_timer);
	if (n->state == DNS_HELD)
		dns_expire(n);
}

static void dns_schedule(struct dns_name *n, double delay)
{
	struct ev_loop *loop = dns_loop(n);
	ev_timer_stop(loop, &n->timer);
	n->next_lookup = ev_now(loop) + delay;
	ev_timer_set(&n->timer, delay, 0.);
	ev_timer_start(loop, &n->timer);
}

static enum dns_result dns_result_of(int status)
{
	switch (status) {
	case ARES_SUCCESS:
		return DNS_OK;
	case ARES_ENODATA:
		return DNS_NODATA;
	case ARES_ENOTFOUND:
	case ARES_ENONAME:
		return DNS_NXDOMAIN;
	case ARES_ETIMEOUT:
		return DNS_TIMEOUT;
	case ARES_ESERVFAIL:
	case ARES_ECONNREFUSED: /* c-ares 1.18's word when every server answered SERVFAIL or REFUSED */
		return DNS_SERVFAIL;
	default:
		return DNS_ERROR;
	}
}

static const char *dns_reason(enum dns_result r, int status)
{
	switch (r) {
	case DNS_NODATA:
		return "no address (NODATA)";
	case DNS_NXDOMAIN:
		return "no such name (NXDOMAIN)";
	case DNS_TIMEOUT:
		return "timeout";
	case DNS_SERVFAIL:
		return status == ARES_ECONNREFUSED ? "server failure (SERVFAIL or refused)" : "server failure";
	default:
		return ares_strerror(status);
	}
}

static void dns_failed(struct dns_name *n, enum dns_result r, int status)
{
	struct ev_loop *loop = dns_loop(n);
	const struct cfg_dns *d = &n->cfg->dns;
	int again = n->fails > 0 && n->last_result == r;
	n->last_result = r;
	snprintf(n->last_error, sizeof n->last_error, "%s", dns_reason(r, status));
	if (n->fails < 64)
		n->fails++;
	/* Retry sooner than the refresh (a name that does not resolve yet may
	 * at any moment), backing off from min_ttl, never beyond refresh. */
	double retry = (double)d->min_ttl_ms / 1000.0;
	for (unsigned i = 1; i < n->fails && retry < DNS_RETRY_MAX; i++)
		retry *= 2;
	double refresh = (double)d->refresh_ms / 1000.0;
	if (retry > refresh)
		retry = refresh;
	if (retry > DNS_RETRY_MAX)
		retry = DNS_RETRY_MAX;
	char next[32];
	snprintf(next, sizeof next, "%gs", retry);
	if (n->state == DNS_GOOD && n->n_addrs && d->hold_ms > 0) {
		n->state = DNS_HELD;
		n->held_since = ev_now(loop);
		ev_timer_stop(loop, &n->hold_timer);
		ev_timer_set(&n->hold_timer, (double)d->hold_ms / 1000.0, 0.);
		ev_timer_start(loop, &n->hold_timer);
		dns_log(n, LOG_WARNING, "dns: lookup failed: %s (keeping %zu address%s until hold ends in %gs)",
		        n->last_error, n->n_addrs, n->n_addrs == 1 ? "" : "es", (double)d->hold_ms / 1000.0);
	} else if (n->state == DNS_GOOD) { /* hold: 0, or an empty set */
		n->held_since = ev_now(loop);
		dns_log(n, LOG_WARNING, "dns: lookup failed: %s (hold is 0)", n->last_error);
		dns_expire(n);
	} else if (!again) {
		dns_log(n, LOG_WARNING, "dns: lookup failed: %s (next try in %s)", n->last_error, next);
	}
	if (n->state == DNS_NEW)
		n->state = DNS_FAILING; /* never answered yet */
	dns_schedule(n, retry);
}

/* Keep an address of the answer: the pool's family, no repeats, at most
 * DNS_MAX_ADDRS. */
static size_t dns_collect(struct dns_name *n, const struct ares_addrinfo *ai, struct sockaddr_storage *v,
                          socklen_t *lens, uint32_t *ttl)
{
	size_t k = 0, cut = 0;
	*ttl = UINT32_MAX;
	for (const struct ares_addrinfo_node *a = ai ? ai->nodes : NULL; a; a = a->ai_next) {
		if ((a->ai_family != AF_INET && a->ai_family != AF_INET6) || a->ai_addrlen > sizeof *v)
			continue;
		struct sockaddr_storage ss;
		memset(&ss, 0, sizeof ss);
		memcpy(&ss, a->ai_addr, a->ai_addrlen);
		if (dns_in(&ss, v, k))
			continue;
		if (k == DNS_MAX_ADDRS) {
			cut++;
			continue;
		}
		v[k] = ss;
		lens[k] = a->ai_addrlen;
		k++;
		if (a->ai_ttl >= 0 && (uint32_t)a->ai_ttl < *ttl)
			*ttl = (uint32_t)a->ai_ttl;
	}
	for (const struct ares_addrinfo_cname *c = ai ? ai->cnames : NULL; c; c = c->next)
		if (c->ttl >= 0 && (uint32_t)c->ttl < *ttl)
			*ttl = (uint32_t)c->ttl;
	if (cut && !n->cut_said) {
		n->cut_said = 1;
		dns_log(n, LOG_WARNING, "dns: the answer has %zu more addresses than the %d used", cut, DNS_MAX_ADDRS);
	}
	if (*ttl == UINT32_MAX)
		*ttl = 0;
	return k;
}

static void dns_answer_cb(void *arg, int status, int timeouts, struct ares_addrinfo *ai)
{
	(void)timeouts;
	struct dns_name *n = arg;
	if (status == ARES_EDESTRUCTION || status == ARES_ECANCELLED) {
		ares_freeaddrinfo(ai);
		return; /* the channel is being closed: n is being stopped or freed */
	}
	struct ev_loop *loop = dns_loop(n);
	const struct cfg_dns *d = &n->cfg->dns;
	ev_tstamp now = ev_now(loop);
	n->querying = 0;
	ev_timer_stop(loop, &n->timer);
	n->last_lookup = now;
	wp_histogram_observe(&n->h_lookup, now - n->started);
	struct sockaddr_storage v[DNS_MAX_ADDRS];
	socklen_t lens[DNS_MAX_ADDRS];
	uint32_t ttl = 0;
	size_t k = status == ARES_SUCCESS ? dns_collect(n, ai, v, lens, &ttl) : 0;
	ares_freeaddrinfo(ai);
	enum dns_result r = status == ARES_SUCCESS && k == 0 ? DNS_NODATA : dns_result_of(status);
	n->lookups[r]++;
	if (r != DNS_OK) {
		dns_failed(n, r, status);
		return;
	}
	if (d->mode == CFG_DNS_FIRST && k > 1) {
		/* One address: the current one while the answer still has it
		 * (a rotating answer moves nothing), else the answer's first. */
		size_t keep = 0;
		for (size_t i = 0; n->n_addrs == 1 && i < k; i++)
			if (pool_same_addr(&v[i], &n->addrs[0]))
				keep = i;
		v[0] = v[keep];
		lens[0] = lens[keep];
		k = 1;
	}
	double delay = (double)d->refresh_ms / 1000.0;
	if (d->respect_ttl) {
		double t = ttl, lo = (double)d->min_ttl_ms / 1000.0, hi = (double)d->max_ttl_ms / 1000.0;
		delay = t < lo ? lo : t > hi ? hi : t;
	}
	char next[32];
	snprintf(next, sizeof next, "%gs", delay);
	n->ttl = ttl;
	if (n->state != DNS_GOOD && n->state != DNS_NEW)
		dns_log(n, LOG_INFO, "dns: answers again after %u failed lookup%s", n->fails, n->fails == 1 ? "" : "s");
	ev_timer_stop(loop, &n->hold_timer);
	dns_apply(n, v, lens, k, next);
	n->state = DNS_GOOD;
	n->fails = 0;
	n->last_result = DNS_OK;
	n->last_good = now;
	dns_schedule(n, delay);
}

static void dns_lookup(struct dns_name *n)
{
	const struct cfg_backend *c = n->cfg;
	struct ares_addrinfo_hints h = {0};
	h.ai_family = c->dns.family == CFG_DNS_IPV4 ? AF_INET : c->dns.family == CFG_DNS_IPV6 ? AF_INET6 : AF_UNSPEC;
	h.ai_socktype = SOCK_STREAM;
	h.ai_flags = ARES_AI_NOSORT | ARES_AI_NUMERICSERV; /* the resolver's order; the port is a number */
	char port[8];
	snprintf(port, sizeof port, "%u", (unsigned)c->port);
	ev_timer_stop(dns_loop(n), &n->timer);
	n->querying = 1;
	n->started = ev_now(dns_loop(n));
	ares_getaddrinfo(n->channel, c->host, port, &h, dns_answer_cb, n); /* may answer at once */
	if (n->querying)
		dns_arm_query_timer(n);
}

static void dns_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	struct dns_name *n = container_of(w, struct dns_name, timer);
	if (n->querying) {
		ares_process_fd(n->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD); /* timeouts: retry or give up */
		if (n->querying)
			dns_arm_query_timer(n);
		return;
	}
	dns_lookup(n);
}

/* ---- lifecycle ----------------------------------------------------------- */

struct dns_name *dns_name_new(struct pool *p, size_t target, char *err, size_t errlen)
{
	struct dns_name *n = calloc(1, sizeof *n);
	if (!n) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	n->pool = p;
	n->target = target;
	n->cfg = &p->cfg->backends[target];
	ev_timer_init(&n->timer, dns_timer_cb, 0., 0.);
	ev_timer_init(&n->hold_timer, dns_hold_cb, 0., 0.);
	for (size_t i = 0; i < DNS_MAX_SOCKS; i++) {
		n->socks[i].fd = -1;
		n->socks[i].n = n;
		ev_io_init(&n->socks[i].io, dns_sock_cb, -1, EV_READ);
	}
	/* Bounds in seconds: a cached answer (~100 µs) to the retries of a dead server. */
	static const double b[] = {0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30};
	if (wp_histogram_init(&n->h_lookup, b, sizeof b / sizeof *b) < 0 || dns_channel_open(n, err, errlen) < 0) {
		if (!err[0])
			snprintf(err, errlen, "out of memory");
		free(n);
		return NULL;
	}
	return n;
}

void dns_name_start(struct dns_name *n)
{
	if (n->n_addrs && n->next_lookup > 0) { /* seeded by a reload */
		double d = n->next_lookup - ev_now(dns_loop(n));
		dns_schedule(n, d > 0 ? d : 0);
		if (n->state == DNS_HELD) {
			double left = n->held_since + (double)n->cfg->dns.hold_ms / 1000.0 - ev_now(dns_loop(n));
			ev_timer_set(&n->hold_timer, left > 0 ? left : 0, 0.);
			ev_timer_start(dns_loop(n), &n->hold_timer);
		}
		return;
	}
	dns_lookup(n);
}

void dns_name_stop(struct dns_name *n)
{
	if (!n)
		return;
	ev_timer_stop(dns_loop(n), &n->timer);
	ev_timer_stop(dns_loop(n), &n->hold_timer);
	if (n->querying) { /* a fresh channel, the lookup cancelled */
		char err[96];
		dns_channel_close(n);
		if (dns_channel_open(n, err, sizeof err) < 0)
			dns_log(n, LOG_ERR, "dns: %s", err);
	}
}

void dns_name_free(struct dns_name *n)
{
	if (!n)
		return;
	ev_timer_stop(dns_loop(n), &n->timer);
	ev_timer_stop(dns_loop(n), &n->hold_timer);
	dns_channel_close(n);
	free(n);
}

static int dns_channel_same(const struct cfg_dns *a, const struct cfg_dns *b)
{
	if (a->timeout_ms != b->timeout_ms || a->tries != b->tries || a->n_servers != b->n_servers)
		return 0;
	for (size_t i = 0; i < a->n_servers; i++)
		if (strcmp(a->servers[i], b->servers[i]) != 0)
			return 0;
	return 1;
}

void dns_name_rebind(struct dns_name *n, const struct cfg_backend *c, size_t target)
{
	const struct cfg_dns old = n->cfg->dns; /* its pointers stay valid until the old config is freed */
	int same = dns_channel_same(&old, &c->dns);
	n->cfg = c;
	n->target = target;
	if (same && old.refresh_ms == c->dns.refresh_ms && old.respect_ttl == c->dns.respect_ttl &&
	    old.family == c->dns.family && old.mode == c->dns.mode)
		return;
	dns_log(n, LOG_INFO, "dns: settings changed: looking the name up again");
	if (!same) {
		char err[160] = "";
		dns_channel_close(n);
		if (dns_channel_open(n, err, sizeof err) < 0) {
			dns_log(n, LOG_ERR, "dns: %s", err);
			return;
		}
	}
	if (!n->querying)
		dns_lookup(n);
}

void dns_name_seed(struct dns_name *n, const struct dns_name *old)
{
	n->state = old->state;
	n->admin_state = old->admin_state;
	n->last_result = old->last_result;
	memcpy(n->last_error, old->last_error, sizeof n->last_error);
	n->fails = old->fails;
	n->last_lookup = old->last_lookup;
	n->next_lookup = old->next_lookup > 0 ? old->next_lookup : ev_now(dns_loop(n));
	n->last_good = old->last_good;
	n->held_since = old->held_since;
	n->last_change = old->last_change;
	n->ttl = old->ttl;
	memcpy(n->lookups, old->lookups, sizeof n->lookups);
	n->h_lookup = old->h_lookup;
	if (!old->n_addrs)
		return;
	/* The backends, quietly: nothing changed for the name. */
	struct pool *p = n->pool;
	for (size_t i = 0; i < old->n_addrs; i++) {
		struct backend *be = pool_backend_add(p, n->target, n, &old->addrs[i], old->addrlens[i]);
		if (!be) {
			dns_log(n, LOG_ERR, "dns: out of memory for a backend");
			continue;
		}
		if (n->state == DNS_EXPIRED) {
			be->dns_down = 1;
			be->last_reason = REASON_DNS;
			snprintf(be->last_error, sizeof be->last_error, "dns: %s", n->last_error);
			backend_set_state(be, BACKEND_DOWN, be->last_error);
		}
	}
	memcpy(n->addrs, old->addrs, sizeof n->addrs);
	memcpy(n->addrlens, old->addrlens, sizeof n->addrlens);
	n->n_addrs = old->n_addrs;
}

void dns_backend_failed(struct backend *be)
{
	struct dns_name *n = be->dns;
	if (!n || be->gone || n->querying || !n->channel || n->pool->retiring || n->pool->eng->stopping)
		return;
	ev_tstamp now = ev_now(dns_loop(n));
	double gap = (double)n->cfg->dns.min_ttl_ms / 1000.0;
	ev_tstamp at = fmax(n->last_early, n->last_lookup) + gap;
	if (at > now) {
		/* Asked too recently: ask as soon as min_ttl allows, not at the
		 * next refresh (a failover right after a lookup is still followed). */
		if (at < n->next_lookup) {
			n->last_early = at;
			dns_log(n, LOG_INFO, "dns: re-resolving early (in %.3gs): backend %s failed", at - now, be->name);
			dns_schedule(n, at - now);
		}
		return;
	}
	n->last_early = now;
	dns_log(n, LOG_INFO, "dns: re-resolving early: backend %s failed", be->name);
	dns_lookup(n);
}
