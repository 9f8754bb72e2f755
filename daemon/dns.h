/*
 * daemon/dns.h — backends written as host names: c-ares inside the loop.
 *
 * One struct dns_name per pool per backends: entry whose host is a name
 * (cfg_backend.is_name). It owns a c-ares channel (its dns: settings:
 * servers, timeout, tries), an ev_io per socket c-ares opens (through the
 * socket-state callback) and one ev_timer: c-ares' next timeout while a
 * lookup runs, the next refresh otherwise. Each answer is applied to the
 * pool as a diff (pool_dns_apply): a new address becomes a backend, one
 * that left stops being used and drains, an unchanged answer changes
 * nothing. No resolver call blocks, at startup either: a name that does not
 * resolve leaves the pool without its backends and is retried.
 */
#ifndef WARMPOOL_DNS_H
#define WARMPOOL_DNS_H

#include <ares.h>
#include <ev.h>
#include <stdint.h>
#include <sys/socket.h>

#include "histogram.h"

struct pool;
struct backend;
struct cfg_backend;

/* Addresses taken from one answer; a longer answer is cut (and said so
 * once): each address is a backend with its own connections. */
#define DNS_MAX_ADDRS 16
/* Sockets one channel may have open at once: a UDP and a TCP socket per
 * server (config.h allows CFG_MAX_DNS_SERVERS), and two spare. */
#define DNS_MAX_SOCKS 18
/* Lookups that fail in a row are retried no sooner than this (doubling
 * from dns.min_ttl): a dead DNS server is not asked in a tight loop. */
#define DNS_RETRY_MAX 30.0

enum dns_result { DNS_OK, DNS_NODATA, DNS_NXDOMAIN, DNS_TIMEOUT, DNS_SERVFAIL, DNS_ERROR, DNS_NRESULTS };
enum dns_state {
	DNS_NEW,     /* its first lookup has not finished */
	DNS_FAILING, /* it never answered: no addresses, lookups retried with backoff */
	DNS_GOOD,    /* the last lookup answered */
	DNS_HELD,    /* lookups fail; the last good addresses are kept until hold ends */
	DNS_EXPIRED, /* lookups failed for longer than hold (or never answered): its backends are down */
};

struct dns_sock {
	ev_io io;
	struct dns_name *n;
	int fd; /* -1: slot free */
};

struct dns_name {
	struct pool *pool;
	const struct cfg_backend *cfg; /* the backends: entry (rebound on an in-place reload) */
	size_t target;                 /* its index there */
	ares_channel channel;
	ev_timer timer;                /* c-ares' timeout while querying, else the next lookup */
	ev_timer hold_timer;           /* held: when dns.hold ends */
	struct dns_sock socks[DNS_MAX_SOCKS];
	unsigned querying : 1;
	unsigned cut_said : 1;         /* "answer cut to DNS_MAX_ADDRS" logged once */
	enum dns_state state;
	int admin_state;               /* enum backend_state: BACKEND_DRAINING or _DISABLED when an admin
	                                * applied it to the name (new addresses get it too); else unknown (0) */
	enum dns_result last_result;
	char last_error[96];           /* c-ares' words for the last failed lookup */
	unsigned fails;                /* lookups failed in a row */
	ev_tstamp started;             /* the running lookup's start (ev_now) */
	ev_tstamp last_lookup;         /* the last finished lookup (ev_now; 0: none) */
	ev_tstamp next_lookup;         /* the next scheduled one (ev_now) */
	ev_tstamp last_good;           /* the last answer with addresses (ev_now; 0: none) */
	ev_tstamp last_early;          /* the last early re-resolution (ev_now) */
	ev_tstamp held_since;          /* the first failed lookup after a good one (ev_now) */
	double last_change;            /* Unix time of the last change of the address set (0: none) */
	uint32_t ttl;                  /* the lowest TTL of the last answer, seconds */
	struct sockaddr_storage addrs[DNS_MAX_ADDRS]; /* the current set, in answer order */
	socklen_t addrlens[DNS_MAX_ADDRS];
	size_t n_addrs;
	uint64_t lookups[DNS_NRESULTS];
	struct wp_histogram h_lookup;  /* seconds a lookup took */
};

/* Once per process, before any channel (engine_create); 0 or -1. */
int dns_library_init(void) __attribute__((warn_unused_result));
void dns_library_cleanup(void);

/* Resolver state for entry `target` of p's config (a name). Nothing starts
 * until dns_name_start. NULL with a reason in err on failure. */
struct dns_name *dns_name_new(struct pool *p, size_t target, char *err, size_t errlen);
/* The first lookup, at once (or, seeded, at the old schedule). */
void dns_name_start(struct dns_name *n);
/* Cancel the running lookup and stop every watcher (the name stays). */
void dns_name_stop(struct dns_name *n);
/* Stop and free; accepts NULL. */
void dns_name_free(struct dns_name *n);
/* An in-place reload: the entry's settings may have changed (servers,
 * timeout, tries make a new channel; the schedule follows the new refresh). */
void dns_name_rebind(struct dns_name *n, const struct cfg_backend *c, size_t target);
/* A reload replaced the pool: take the old name's answer, state and
 * schedule, so an unchanged name causes no lookup burst and no reconnect. */
void dns_name_seed(struct dns_name *n, const struct dns_name *old);
/* A connection or health check to `be` (a named backend) failed: look the
 * name up again now, at most once per dns.min_ttl. */
void dns_backend_failed(struct backend *be);
/* The name as written ("db.internal:5432"). */
const char *dns_name_str(const struct dns_name *n);
const char *dns_state_str(enum dns_state st);
const char *dns_result_str(enum dns_result r);

#endif
