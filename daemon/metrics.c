/*
 * daemon/metrics.c — what the engine's state and counters say, rendered for
 * the admin socket: Prometheus text exposition format 0.0.4 (`show
 * metrics`, GET /metrics) and the `show pools|backends|stats` tables and
 * JSON. Rendering only reads; nothing here changes engine state.
 *
 * Names follow Prometheus conventions: warmpool_<object>_<what>[_<unit>],
 * `_total` for counters, base units (seconds, bytes), labels pool= and
 * backend=, and an enum as one series per value (state="up" 1, others 0).
 */
#include <stdio.h>
#include <string.h>

#include "buf.h"
#include <time.h>

#include "engine.h"
#include "fdstore.h"
#include "metrics.h"
#include "version.h"

/* Label values of enum backend_reason in checks_total{result=...}. */
static const char *const reason_label[REASON_N] = {
    [REASON_NONE] = "ok",         [REASON_REFUSED] = "refused",         [REASON_TIMEOUT] = "timeout",
    [REASON_RESET] = "reset",     [REASON_CLOSED] = "closed",           [REASON_UNREACHABLE] = "unreachable",
    [REASON_BAD_REPLY] = "bad_reply", [REASON_TLS] = "tls", [REASON_DNS] = "dns", [REASON_OTHER] = "error",
};

/* The pool counters, once for both `show stats` (key) and Prometheus
 * (warmpool_pool_<key>_total). */
static const struct {
	const char *key;
	const char *help;
	size_t off; /* in struct pool_stats */
} pool_counters[] = {
#define PC(key, field, help) {key, help, offsetof(struct pool_stats, field)}
    PC("clients_accepted", clients_accepted, "Clients accepted."),
    PC("clients_served", clients_served, "Clients paired with a connection."),
    PC("clients_refused", clients_refused, "Clients closed at once: max_clients."),
    PC("clients_timed_out", clients_timed_out, "Clients closed after waiting queue_timeout."),
    PC("clients_gone", clients_gone, "Clients that hung up while waiting: dropped, never served."),
    PC("clients_failed_fast", clients_failed_fast, "Clients closed at once because no backend was up (fail_fast)."),
    PC("clients_retried", clients_retried, "Clients re-paired because their connection died before any byte."),
    PC("sessions_idle_closed", sessions_idle_closed,
       "Sessions closed by client_idle_timeout or server_idle_timeout."),
    PC("clients_denied", clients_denied, "Clients closed at accept: their uid and gid are not allowed (allow:)."),
    PC("handouts", handouts, "Connections handed to clients."),
    PC("handoffs", handoffs, "Backend sockets handed to libwarmpool clients (handoff socket)."),
    PC("connections_reused", conns_reused, "Connections returned to idle after a clean session end (reuse)."),
    PC("connections_reuse_refused", conns_reuse_refused,
       "Connections closed instead of reused: unread bytes, a failed reset, a backend that spoke."),
    PC("stale_discarded", stale_at_checkout, "Idle connections found dead (or near the backend's own idle close) at checkout and discarded."),
    PC("connections_opened", conns_opened, "Backend connections established."),
    PC("connections_failed", conns_failed, "Failed connection attempts."),
    PC("connections_recycled", conns_recycled, "Idle connections replaced by max_lifetime or max_idle_time."),
    PC("connections_idle_closed", conns_idle_closed, "Idle connections above min_idle closed by idle_timeout."),
    PC("connections_handed_back", conns_handed_back,
       "Idle connections on backups or later backends closed once preferred ones were warm."),
    PC("connections_lost", idle_lost, "Idle connections closed or reset by the backend."),
#undef PC
};

static uint64_t counter_value(const struct pool_stats *st, size_t c)
{
	uint64_t v;
	memcpy(&v, (const char *)st + pool_counters[c].off, sizeof v);
	return v;
}

static const enum backend_state all_states[] = {BACKEND_UNKNOWN, BACKEND_UP, BACKEND_DOWN, BACKEND_DRAINING,
                                                BACKEND_DISABLED};

/* ---- Prometheus --------------------------------------------------------- */

static void family(struct wp_buf *b, const char *name, const char *type, const char *help)
{
	wp_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void pool_labels(struct wp_buf *b, const struct pool *p)
{
	wp_buf_add(b, "{pool=\"", 7);
	wp_buf_label(b, p->name);
	wp_buf_add(b, "\"", 1);
}

static void backend_labels(struct wp_buf *b, const struct backend *be)
{
	pool_labels(b, be->pool);
	wp_buf_add(b, ",backend=\"", 10);
	wp_buf_label(b, be->name);
	wp_buf_add(b, "\"", 1);
}

/* One sample per pool: `name{pool="p"} value`. */
#define POOL_SERIES(b, eng, name, type, help, expr)                                                          \
	do {                                                                                                 \
		family(b, name, type, help);                                                                 \
		for (size_t i_ = 0; i_ < (eng)->n_pools; i_++) {                                             \
			const struct pool *p = (eng)->pools[i_];                                             \
			wp_buf_add(b, name, strlen(name));                                                   \
			pool_labels(b, p);                                                                   \
			wp_buf_printf(b, "} %llu\n", (unsigned long long)(expr));                            \
		}                                                                                            \
	} while (0)

/* One sample per backend of every pool. */
#define BACKEND_SERIES(b, eng, name, type, help, fmt, expr)                                                  \
	do {                                                                                                 \
		family(b, name, type, help);                                                                 \
		for (size_t i_ = 0; i_ < (eng)->n_pools; i_++)                                               \
			for (size_t k_ = 0; k_ < (eng)->pools[i_]->n_backends; k_++) {                       \
				const struct backend *be = (eng)->pools[i_]->backends[k_];                  \
				wp_buf_add(b, name, strlen(name));                                           \
				backend_labels(b, be);                                                       \
				wp_buf_printf(b, "} " fmt "\n", (expr));                                     \
			}                                                                                    \
	} while (0)

/* Writes `{label="..."` (no closing brace) for the object a series is about. */
typedef void labels_fn(struct wp_buf *b, const void *obj);

/* The samples of one histogram, labelled by `labels(b, obj)`. */
static void histogram_samples_by(struct wp_buf *b, const char *name, const struct wp_histogram *h, labels_fn *labels,
                                 const void *obj)
{
	for (size_t k = 0; k <= h->n; k++) {
		wp_buf_printf(b, "%s_bucket", name);
		labels(b, obj);
		if (k < h->n)
			wp_buf_printf(b, ",le=\"%g\"} %llu\n", h->bounds[k],
			              (unsigned long long)wp_histogram_cumulative(h, k));
		else
			wp_buf_printf(b, ",le=\"+Inf\"} %llu\n", (unsigned long long)h->count);
	}
	wp_buf_printf(b, "%s_sum", name);
	labels(b, obj);
	wp_buf_printf(b, "} %.9g\n%s_count", h->sum, name);
	labels(b, obj);
	wp_buf_printf(b, "} %llu\n", (unsigned long long)h->count);
}

static void pool_labels_of(struct wp_buf *b, const void *p)
{
	pool_labels(b, p);
}

static void backend_labels_of(struct wp_buf *b, const void *be)
{
	backend_labels(b, be);
}

/* The samples of one histogram; `be` NULL: labelled by pool `p` only. */
static void histogram_samples(struct wp_buf *b, const char *name, const struct wp_histogram *h,
                              const struct pool *p, const struct backend *be)
{
	if (be)
		histogram_samples_by(b, name, h, backend_labels_of, be);
	else
		histogram_samples_by(b, name, h, pool_labels_of, p);
}

static void histogram(struct wp_buf *b, const struct engine *eng, const char *name, const char *help,
                      size_t offset)
{
	family(b, name, "histogram", help);
	for (size_t i = 0; i < eng->n_pools; i++) {
		const struct pool *p = eng->pools[i];
		histogram_samples(b, name, (const struct wp_histogram *)((const char *)p + offset), p, NULL);
	}
}

/* The TLS series, for the backends of pools with tls: (none when no pool has it). */
static void backend_tls_series(struct wp_buf *b, const struct engine *eng)
{
	static const char hs[] = "warmpool_backend_tls_handshakes_total";
	static const char hist[] = "warmpool_backend_tls_handshake_seconds";
	static const char exp[] = "warmpool_backend_tls_cert_expiry_timestamp_seconds";
	int any = 0;
	for (size_t i = 0; i < eng->n_pools; i++)
		any |= eng->pools[i]->cfg->tls.enabled;
	if (!any)
		return;
	family(b, hs, "counter", "TLS handshakes to the backend by result (full, resumed, or why it failed).");
	for (size_t i = 0; i < eng->n_pools; i++)
		for (size_t k = 0; eng->pools[i]->cfg->tls.enabled && k < eng->pools[i]->n_backends; k++)
			for (int r = 0; r < TLS_R_N; r++) {
				wp_buf_add(b, hs, sizeof hs - 1);
				backend_labels(b, eng->pools[i]->backends[k]);
				wp_buf_printf(b, ",result=\"%s\"} %llu\n", tls_result_name((enum tls_result)r),
				              (unsigned long long)eng->pools[i]->backends[k]->tls.handshakes[r]);
			}
	family(b, hist, "histogram", "Time from TCP established to a verified TLS handshake.");
	for (size_t i = 0; i < eng->n_pools; i++)
		for (size_t k = 0; eng->pools[i]->cfg->tls.enabled && k < eng->pools[i]->n_backends; k++)
			histogram_samples(b, hist, &eng->pools[i]->backends[k]->tls.h_handshake, eng->pools[i],
			                  eng->pools[i]->backends[k]);
	family(b, exp, "gauge", "notAfter of the backend's certificate (its newest connection's), in Unix time.");
	for (size_t i = 0; i < eng->n_pools; i++)
		for (size_t k = 0; eng->pools[i]->cfg->tls.enabled && k < eng->pools[i]->n_backends; k++) {
			const struct backend *be = eng->pools[i]->backends[k];
			if (!be->tls.cert_expiry)
				continue; /* no handshake yet: no value rather than a false one */
			wp_buf_add(b, exp, sizeof exp - 1);
			backend_labels(b, be);
			wp_buf_printf(b, "} %lld\n", (long long)be->tls.cert_expiry);
		}
}

static void name_labels(struct wp_buf *b, const void *obj)
{
	const struct dns_name *n = obj;
	pool_labels(b, n->pool);
	wp_buf_add(b, ",name=\"", sizeof ",name=\"" - 1);
	wp_buf_label(b, dns_name_str(n));
	wp_buf_add(b, "\"", 1);
}

/* One sample per backend name of every pool. */
#define NAME_SERIES(b, eng, name, type, help, fmt, expr)                                                     \
	do {                                                                                                 \
		family(b, name, type, help);                                                                 \
		for (size_t i_ = 0; i_ < (eng)->n_pools; i_++)                                               \
			for (size_t k_ = 0; k_ < (eng)->pools[i_]->n_names; k_++) {                          \
				const struct dns_name *n = (eng)->pools[i_]->names[k_];                      \
				wp_buf_add(b, name, strlen(name));                                           \
				name_labels(b, n);                                                           \
				wp_buf_printf(b, "} " fmt "\n", (expr));                                     \
			}                                                                                    \
	} while (0)

/* The series of backends written as names (none when no pool has one). */
static void dns_series(struct wp_buf *b, const struct engine *eng)
{
	static const char lk[] = "warmpool_dns_lookups_total", ad[] = "warmpool_dns_addresses",
	                  ch[] = "warmpool_dns_last_change_timestamp_seconds", hist[] = "warmpool_dns_lookup_seconds",
	                  bn[] = "warmpool_backend_dns_name";
	int any = 0;
	for (size_t i = 0; i < eng->n_pools; i++)
		any |= eng->pools[i]->n_names > 0;
	if (!any)
		return;
	family(b, lk, "counter", "Lookups of a backend name by result.");
	for (size_t i = 0; i < eng->n_pools; i++)
		for (size_t k = 0; k < eng->pools[i]->n_names; k++)
			for (int r = 0; r < DNS_NRESULTS; r++) {
				wp_buf_add(b, lk, sizeof lk - 1);
				name_labels(b, eng->pools[i]->names[k]);
				wp_buf_printf(b, ",result=\"%s\"} %llu\n", dns_result_str((enum dns_result)r),
				              (unsigned long long)eng->pools[i]->names[k]->lookups[r]);
			}
	NAME_SERIES(b, eng, ad, "gauge", "Addresses the name resolves to now (each is a backend).", "%zu", n->n_addrs);
	NAME_SERIES(b, eng, ch, "gauge", "When the name's set of addresses last changed, in Unix time (0: never resolved).",
	            "%.3f", n->last_change);
	family(b, hist, "histogram", "Time a lookup of the name took (answered or failed).");
	for (size_t i = 0; i < eng->n_pools; i++)
		for (size_t k = 0; k < eng->pools[i]->n_names; k++)
			histogram_samples_by(b, hist, &eng->pools[i]->names[k]->h_lookup, name_labels, eng->pools[i]->names[k]);
	family(b, bn, "gauge", "1 for each backend made from a name: which name its address came from.");
	for (size_t i = 0; i < eng->n_pools; i++)
		for (size_t k = 0; k < eng->pools[i]->n_backends; k++) {
			const struct backend *be = eng->pools[i]->backends[k];
			if (!be->dns)
				continue;
			wp_buf_add(b, bn, sizeof bn - 1);
			backend_labels(b, be);
			wp_buf_add(b, ",name=\"", sizeof ",name=\"" - 1);
			wp_buf_label(b, dns_name_str(be->dns));
			wp_buf_add(b, "\"} 1\n", sizeof "\"} 1\n" - 1);
		}
}

static void backend_conn_gauge(struct wp_buf *b, const struct engine *eng)
{
	static const char *const names[BCONN_NLISTS] = {"connecting", "idle", "active", "resetting"};
	family(b, "warmpool_backend_connections", "gauge", "Connections to the backend by state.");
	for (size_t i = 0; i < eng->n_pools; i++)
		for (size_t k = 0; k < eng->pools[i]->n_backends; k++) {
			const struct backend *be = eng->pools[i]->backends[k];
			for (int s = 0; s < BCONN_NLISTS; s++) {
				wp_buf_add(b, "warmpool_backend_connections", 28);
				backend_labels(b, be);
				wp_buf_printf(b, ",state=\"%s\"} %zu\n", names[s], be->conns[s].n);
			}
		}
}

static void backend_enum_series(struct wp_buf *b, const struct engine *eng)
{
	family(b, "warmpool_backend_state", "gauge", "1 for the backend's current state, 0 for the others.");
	for (size_t i = 0; i < eng->n_pools; i++)
		for (size_t k = 0; k < eng->pools[i]->n_backends; k++) {
			const struct backend *be = eng->pools[i]->backends[k];
			for (size_t s = 0; s < sizeof all_states / sizeof *all_states; s++) {
				wp_buf_add(b, "warmpool_backend_state", 22);
				backend_labels(b, be);
				wp_buf_printf(b, ",state=\"%s\"} %d\n", backend_state_str(all_states[s]),
				              be->state == all_states[s]);
			}
		}
	family(b, "warmpool_backend_checks_total", "counter", "Active health checks by result.");
	for (size_t i = 0; i < eng->n_pools; i++)
		for (size_t k = 0; k < eng->pools[i]->n_backends; k++) {
			const struct backend *be = eng->pools[i]->backends[k];
			for (int r = 0; r < REASON_N; r++) {
				if (r == REASON_DNS)
					continue; /* the name's outcome, not a check's (warmpool_dns_lookups_total) */
				wp_buf_add(b, "warmpool_backend_checks_total", 29);
				backend_labels(b, be);
				wp_buf_printf(b, ",result=\"%s\"} %llu\n", reason_label[r],
				              (unsigned long long)(r == REASON_NONE ? be->hc.n_ok : be->hc.n_failed[r]));
			}
		}
	family(b, "warmpool_backend_transitions_total", "counter", "Times the backend went up or down.");
	for (size_t i = 0; i < eng->n_pools; i++)
		for (size_t k = 0; k < eng->pools[i]->n_backends; k++) {
			const struct backend *be = eng->pools[i]->backends[k];
			wp_buf_add(b, "warmpool_backend_transitions_total", 34);
			backend_labels(b, be);
			wp_buf_printf(b, ",to=\"up\"} %llu\n", (unsigned long long)be->went_up);
			wp_buf_add(b, "warmpool_backend_transitions_total", 34);
			backend_labels(b, be);
			wp_buf_printf(b, ",to=\"down\"} %llu\n", (unsigned long long)be->went_down);
		}
}

void metrics_render(const struct engine *eng, struct wp_buf *b)
{
	family(b, "warmpool_build_info", "gauge", "The running warmpoold's version.");
	wp_buf_printf(b, "warmpool_build_info{version=\"%s\"} 1\n", WARMPOOL_VERSION);
	family(b, "warmpool_start_time_seconds", "gauge", "When warmpoold started, in Unix time.");
	wp_buf_printf(b, "warmpool_start_time_seconds %.3f\n", eng->started_at);
	family(b, "warmpool_reloads_total", "counter", "Configuration reloads by result.");
	wp_buf_printf(b, "warmpool_reloads_total{result=\"ok\"} %llu\nwarmpool_reloads_total{result=\"failed\"} %llu\n",
	              (unsigned long long)eng->reloads_ok, (unsigned long long)eng->reloads_failed);

	POOL_SERIES(b, eng, "warmpool_pool_idle_connections", "gauge", "Idle warm connections.",
	            p->n_conns[BCONN_IDLE]);
	POOL_SERIES(b, eng, "warmpool_pool_active_connections", "gauge", "Connections in use by a client.",
	            p->n_conns[BCONN_ACTIVE]);
	POOL_SERIES(b, eng, "warmpool_pool_connecting_connections", "gauge", "Backend connects in flight.",
	            p->n_conns[BCONN_CONNECTING]);
	POOL_SERIES(b, eng, "warmpool_pool_waiting_clients", "gauge", "Clients queued for a connection.",
	            p->waiting.n);
	POOL_SERIES(b, eng, "warmpool_pool_min_idle", "gauge", "The configured warm floor.", p->cfg->min_idle);
	for (size_t c = 0; c < sizeof pool_counters / sizeof *pool_counters; c++) {
		char name[96];
		snprintf(name, sizeof name, "warmpool_pool_%s_total", pool_counters[c].key);
		POOL_SERIES(b, eng, name, "counter", pool_counters[c].help, counter_value(&p->stats, c));
	}
	family(b, "warmpool_pool_relayed_bytes_total", "counter", "Bytes relayed, by direction.");
	for (size_t i = 0; i < eng->n_pools; i++) {
		const struct pool *p = eng->pools[i];
		wp_buf_add(b, "warmpool_pool_relayed_bytes_total", 33);
		pool_labels(b, p);
		wp_buf_printf(b, ",direction=\"to_backend\"} %llu\n", (unsigned long long)p->stats.bytes_up);
		wp_buf_add(b, "warmpool_pool_relayed_bytes_total", 33);
		pool_labels(b, p);
		wp_buf_printf(b, ",direction=\"to_client\"} %llu\n", (unsigned long long)p->stats.bytes_down);
	}
	histogram(b, eng, "warmpool_pool_client_wait_seconds", "Time from accept to a warm connection.",
	          offsetof(struct pool, h_wait));
	histogram(b, eng, "warmpool_pool_backend_connect_seconds", "Time a backend TCP connect took.",
	          offsetof(struct pool, h_connect));
	histogram(b, eng, "warmpool_pool_session_duration_seconds", "Time from handout to session end.",
	          offsetof(struct pool, h_session));

	BACKEND_SERIES(b, eng, "warmpool_backend_up", "gauge", "1 while the backend is up.", "%d",
	               be->state == BACKEND_UP);
	backend_enum_series(b, eng);
	BACKEND_SERIES(b, eng, "warmpool_backend_weight", "gauge", "Configured weight.", "%u", be->cfg->weight);
	BACKEND_SERIES(b, eng, "warmpool_backend_backup", "gauge", "1 for a backup backend.", "%d",
	               be->cfg->backup ? 1 : 0);
	BACKEND_SERIES(b, eng, "warmpool_backend_consecutive_failures", "gauge",
	               "Failed checks or connects in a row (fall counts these).", "%u", be->health_fails);
	BACKEND_SERIES(b, eng, "warmpool_backend_failed_attempts", "gauge",
	               "Failed connection attempts since the last success (the backoff exponent).", "%u",
	               be->connect_failures);
	BACKEND_SERIES(b, eng, "warmpool_backend_backoff_seconds", "gauge", "The current reconnect delay.",
	               "%.3f", (double)be->backoff_ms / 1000.0);
	BACKEND_SERIES(b, eng, "warmpool_backend_next_attempt_timestamp_seconds", "gauge",
	               "No connect before this Unix time (0: none pending).", "%.3f", be->next_attempt);
	BACKEND_SERIES(b, eng, "warmpool_backend_connects_total", "counter", "Connections established.", "%llu",
	               (unsigned long long)be->connects_ok);
	BACKEND_SERIES(b, eng, "warmpool_backend_connect_failures_total", "counter", "Failed connection attempts.",
	               "%llu", (unsigned long long)be->connects_failed);
	backend_conn_gauge(b, eng);
	backend_tls_series(b, eng);
	dns_series(b, eng);
	fdstore_metrics(b);
}

/* ---- show pools | backends | stats --------------------------------------- */

/* Backends proven up (an unknown one is available, but not shown as up). */
static unsigned pool_backends_up(const struct pool *p)
{
	unsigned n = 0;
	for (size_t i = 0; i < p->n_backends; i++)
		n += p->backends[i]->state == BACKEND_UP;
	return n;
}

/* Seconds the oldest waiting client has waited (PgBouncer's maxwait), 0
 * with none waiting. The queue is bounded by max_clients. */
static double pool_maxwait(const struct pool *p, ev_tstamp now)
{
	double w = 0;
	for (const struct list_node *n = p->waiting.head.next; n != &p->waiting.head; n = n->next) {
		const struct session *s = container_of(n, struct session, node);
		if (now - s->accepted_at > w)
			w = now - s->accepted_at;
	}
	return w;
}

/* The width of a table's first column: its header, or the longest name
 * (pool names are up to 64 characters: a fixed width would break the
 * alignment of every column after it). */
static int pool_col_width(const struct engine *eng, const struct pool *only, const char *header)
{
	size_t w = strlen(header);
	for (size_t i = 0; i < eng->n_pools; i++)
		if ((!only || eng->pools[i] == only) && strlen(eng->pools[i]->name) > w)
			w = strlen(eng->pools[i]->name);
	for (const struct list_node *x = eng->retired.head.next; !only && x != &eng->retired.head; x = x->next)
		if (strlen(container_of(x, struct pool, node)->name) > w) /* show clients lists theirs */
			w = strlen(container_of(x, struct pool, node)->name);
	return (int)w;
}

void metrics_show_pools(const struct engine *eng, struct wp_buf *b, int json)
{
	ev_tstamp now = ev_now(eng->loop);
	int wn = pool_col_width(eng, NULL, "POOL");
	if (json)
		wp_buf_add(b, "{\"pools\":[", 10);
	else
		wp_buf_printf(b, "%-*s %6s %6s %10s %7s %7s %10s %6s %8s %9s %8s %8s %11s %11s\n", wn, "POOL", "IDLE",
		              "ACTIVE", "CONNECTING", "WAITING", "MAXWAIT", "SERVED", "GONE", "REFUSED", "TIMED_OUT",
		              "MIN_IDLE", "MAX_CONN", "MAX_CLIENTS", "BACKENDS_UP");
	for (size_t i = 0; i < eng->n_pools; i++) {
		const struct pool *p = eng->pools[i];
		double maxwait = pool_maxwait(p, now);
		if (json) {
			wp_buf_printf(b, "%s{\"name\":\"", i ? "," : "");
			wp_buf_json_str(b, p->name);
			wp_buf_printf(b,
			              "\",\"idle\":%zu,\"active\":%zu,\"connecting\":%zu,\"waiting\":%zu,"
			              "\"min_idle\":%u,\"max_connections\":%u,\"served\":%llu,\"refused\":%llu,"
			              "\"timed_out\":%llu,\"backends\":%zu,\"backends_up\":%u,\"max_clients\":%u,"
			              "\"maxwait\":%.3f,\"gone\":%llu}",
			              p->n_conns[BCONN_IDLE], p->n_conns[BCONN_ACTIVE], p->n_conns[BCONN_CONNECTING],
			              p->waiting.n, p->cfg->min_idle, p->cfg->max_connections,
			              (unsigned long long)p->stats.clients_served,
			              (unsigned long long)p->stats.clients_refused,
			              (unsigned long long)p->stats.clients_timed_out, p->n_backends, pool_backends_up(p),
			              p->cfg->max_clients, maxwait, (unsigned long long)p->stats.clients_gone);
		} else {
			char up[32];
			snprintf(up, sizeof up, "%u/%zu", pool_backends_up(p), p->n_backends);
			wp_buf_printf(b, "%-*s %6zu %6zu %10zu %7zu %6.1fs %10llu %6llu %8llu %9llu %8u %8u %11u %11s\n", wn,
			              p->name, p->n_conns[BCONN_IDLE], p->n_conns[BCONN_ACTIVE],
			              p->n_conns[BCONN_CONNECTING], p->waiting.n, maxwait,
			              (unsigned long long)p->stats.clients_served,
			              (unsigned long long)p->stats.clients_gone,
			              (unsigned long long)p->stats.clients_refused,
			              (unsigned long long)p->stats.clients_timed_out, p->cfg->min_idle,
			              p->cfg->max_connections, p->cfg->max_clients, up);
		}
	}
	if (json)
		wp_buf_add(b, "]}\n", 3);
}

/* show backends: under a TLS pool's backend, its newest connection's TLS. */
static void backend_tls_line(struct wp_buf *b, const struct backend *be)
{
	const struct backend_tls *t = &be->tls;
	char when[32] = "-";
	time_t exp = (time_t)t->cert_expiry;
	struct tm tm;
	if (t->cert_expiry && gmtime_r(&exp, &tm))
		strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
	wp_buf_printf(b, "%-20s   tls %s %s, certificate expires %s, handshakes %llu full %llu resumed\n", "",
	              t->version[0] ? t->version : "-", t->cipher[0] ? t->cipher : "-", when,
	              (unsigned long long)t->handshakes[TLS_R_FULL], (unsigned long long)t->handshakes[TLS_R_RESUMED]);
}

/* show backends --json: the backend's TLS, or null for a plain pool. */
static void backend_tls_json(struct wp_buf *b, const struct pool *p, const struct backend *be)
{
	const struct backend_tls *t = &be->tls;
	if (!p->cfg->tls.enabled) {
		wp_buf_add(b, "null", 4);
		return;
	}
	uint64_t failed = 0;
	for (int r = TLS_R_VERIFY_FAILED; r < TLS_R_N; r++)
		failed += t->handshakes[r];
	if (t->version[0]) {
		wp_buf_add(b, "{\"version\":\"", 12);
		wp_buf_json_str(b, t->version);
		wp_buf_add(b, "\",\"cipher\":\"", 12);
		wp_buf_json_str(b, t->cipher);
		wp_buf_add(b, "\",", 2);
	} else {
		wp_buf_add(b, "{\"version\":null,\"cipher\":null,", 30);
	}
	if (t->cert_expiry)
		wp_buf_printf(b, "\"cert_expiry\":%lld,", (long long)t->cert_expiry);
	else
		wp_buf_add(b, "\"cert_expiry\":null,", 19);
	wp_buf_printf(b, "\"handshakes_full\":%llu,\"handshakes_resumed\":%llu,\"handshakes_failed\":%llu}",
	              (unsigned long long)t->handshakes[TLS_R_FULL], (unsigned long long)t->handshakes[TLS_R_RESUMED],
	              (unsigned long long)failed);
}

/* Label of the last finished check, for `show backends`: "-" before one. */
static const char *backend_check_label(const struct backend *be)
{
	return be->hc.done ? reason_label[be->hc.last] : "-";
}

/* show backends: "12.3s", or "-" for a time that never was. */
static const char *ago(char *buf, size_t len, ev_tstamp now, ev_tstamp then)
{
	if (then <= 0)
		return "-";
	snprintf(buf, len, "%.1fs", now > then ? now - then : 0.0);
	return buf;
}

/* The JSON of a time in the past: seconds since, or null. */
static void json_age(struct wp_buf *b, const char *key, ev_tstamp now, ev_tstamp then)
{
	if (then <= 0)
		wp_buf_printf(b, ",\"%s\":null", key);
	else
		wp_buf_printf(b, ",\"%s\":%.3f", key, now > then ? now - then : 0.0);
}

static void backend_json(struct wp_buf *b, const struct pool *p, const struct backend *be, ev_tstamp now)
{
	double retry_in = be->next_attempt > now ? be->next_attempt - now : 0.0;
	wp_buf_add(b, "{\"pool\":\"", 9);
	wp_buf_json_str(b, p->name);
	wp_buf_add(b, "\",\"backend\":\"", 13);
	wp_buf_json_str(b, be->name);
	wp_buf_printf(b,
	              "\",\"state\":\"%s\",\"weight\":%u,\"backup\":%s,\"idle\":%zu,\"active\":%zu,"
	              "\"connecting\":%zu,\"consecutive_failures\":%u,\"failed_attempts\":%u,"
	              "\"backoff_ms\":%llu,\"retry_in_s\":%.3f,\"checks_ok\":%llu,\"last_error\":\"",
	              backend_state_str(be->state), be->cfg->weight, be->cfg->backup ? "true" : "false",
	              be->conns[BCONN_IDLE].n, be->conns[BCONN_ACTIVE].n, be->conns[BCONN_CONNECTING].n,
	              be->health_fails, be->connect_failures, (unsigned long long)be->backoff_ms, retry_in,
	              (unsigned long long)be->hc.n_ok);
	wp_buf_json_str(b, be->last_error);
	wp_buf_add(b, "\"", 1);
	json_age(b, "last_error_age_s", now, be->last_error[0] ? be->error_at : 0);
	json_age(b, "last_change_s", now, be->changed_at);
	if (be->hc.done)
		wp_buf_printf(b, ",\"last_check\":{\"result\":\"%s\",\"age_s\":%.3f,\"duration_ms\":%.1f}",
		              reason_label[be->hc.last], now > be->hc.last_at ? now - be->hc.last_at : 0.0,
		              be->hc.last_took * 1000.0);
	else
		wp_buf_add(b, ",\"last_check\":null", 18);
	wp_buf_add(b, ",\"tls\":", 7);
	backend_tls_json(b, p, be);
	if (be->dns) {
		wp_buf_add(b, ",\"name\":\"", sizeof ",\"name\":\"" - 1);
		wp_buf_json_str(b, dns_name_str(be->dns));
		wp_buf_printf(b, "\",\"removed_by_dns\":%s", be->gone ? "true" : "false");
	} else {
		wp_buf_add(b, ",\"name\":null,\"removed_by_dns\":false", sizeof ",\"name\":null,\"removed_by_dns\":false" - 1);
	}
	wp_buf_add(b, "}", 1);
}

/* The width of the BACKEND column: its header, or the longest name (a host
 * name may be long). Backends of retired pools are named in the new pools. */
static int backend_col_width(const struct engine *eng, const struct pool *only)
{
	size_t w = strlen("BACKEND");
	for (size_t i = 0; i < eng->n_pools; i++)
		for (size_t k = 0; (!only || eng->pools[i] == only) && k < eng->pools[i]->n_backends; k++)
			if (strlen(eng->pools[i]->backends[k]->name) > w)
				w = strlen(eng->pools[i]->backends[k]->name);
	return (int)w;
}

void metrics_show_backends(const struct engine *eng, const struct pool *only, struct wp_buf *b, int json)
{
	int first = 1;
	ev_tstamp now = ev_now(eng->loop);
	int wp = pool_col_width(eng, only, "POOL"), wb = backend_col_width(eng, only);
	if (json)
		wp_buf_add(b, "{\"backends\":[", 13);
	else
		wp_buf_printf(b, "%-*s %-*s %-9s %6s %6s %4s %6s %10s %5s %10s %10s %-11s %8s %10s  %s\n", wp, "POOL", wb,
		              "BACKEND", "STATE", "WEIGHT", "BACKUP", "IDLE", "ACTIVE", "CONNECTING", "FAILS", "RETRY_IN",
		              "LASTCHG", "CHECK", "CHECK_MS", "CHECKED", "LAST_ERROR");
	for (size_t i = 0; i < eng->n_pools; i++) {
		const struct pool *p = eng->pools[i];
		if (only && p != only)
			continue;
		for (size_t k = 0; k < p->n_backends; k++) {
			const struct backend *be = p->backends[k];
			if (json) {
				if (!first)
					wp_buf_add(b, ",", 1);
				backend_json(b, p, be, now);
				first = 0;
				continue;
			}
			double retry_in = be->next_attempt > now ? be->next_attempt - now : 0.0;
			char chg[32], checked[32], took[32] = "-";
			if (be->hc.done)
				snprintf(took, sizeof took, "%.1f", be->hc.last_took * 1000.0);
			wp_buf_printf(b, "%-*s %-*s %-9s %6u %6s %4zu %6zu %10zu %5u %9.1fs %10s %-11s %8s %10s  ", wp,
			              p->name, wb, be->name, backend_state_str(be->state), be->cfg->weight,
			              be->cfg->backup ? "yes" : "no", be->conns[BCONN_IDLE].n, be->conns[BCONN_ACTIVE].n,
			              be->conns[BCONN_CONNECTING].n, be->health_fails, retry_in,
			              ago(chg, sizeof chg, now, be->changed_at), backend_check_label(be), took,
			              ago(checked, sizeof checked, now, be->hc.done ? be->hc.last_at : 0));
			/* The error with its age: after a recovery it is visibly old. */
			if (be->last_error[0])
				wp_buf_printf(b, "%s (%s ago)\n", be->last_error, ago(chg, sizeof chg, now, be->error_at));
			else
				wp_buf_add(b, "-\n", 2);
			if (p->cfg->tls.enabled)
				backend_tls_line(b, be);
			if (be->dns)
				wp_buf_printf(b, "%-20s   name %s%s\n", "", dns_name_str(be->dns),
				              be->gone ? " (removed by dns: draining)" : "");
		}
	}
	if (json)
		wp_buf_add(b, "]}\n", 3);
}

/* show dns: each backend name, what it resolves to and how its lookups go. */
void metrics_show_dns(const struct engine *eng, const struct pool *only, struct wp_buf *b, int json)
{
	ev_tstamp now = ev_now(eng->loop);
	int first = 1;
	if (json)
		wp_buf_add(b, "{\"names\":[", sizeof "{\"names\":[" - 1);
	else
		wp_buf_printf(b, "%-*s %-30s %-8s %-9s %9s %9s %10s  %s\n", pool_col_width(eng, only, "POOL"), "POOL",
		              "NAME", "STATE", "RESULT", "LOOKED", "NEXT_IN", "CHANGED", "ADDRESSES");
	for (size_t i = 0; i < eng->n_pools; i++) {
		const struct pool *p = eng->pools[i];
		if (only && p != only)
			continue;
		for (size_t k = 0; k < p->n_names; k++) {
			const struct dns_name *n = p->names[k];
			double next_in = n->next_lookup > now ? n->next_lookup - now : 0.0;
			char addrs[DNS_MAX_ADDRS * (WP_ADDR_STRLEN + 2)] = "";
			size_t at = 0;
			for (size_t j = 0; j < n->n_addrs && at < sizeof addrs; j++) {
				char a[WP_ADDR_STRLEN];
				if (wp_addr_format((const struct sockaddr *)&n->addrs[j], a, sizeof a) < 0)
					snprintf(a, sizeof a, "?");
				if (json)
					at += (size_t)snprintf(addrs + at, sizeof addrs - at, "%s\"%s\"", j ? "," : "", a);
				else
					at += (size_t)snprintf(addrs + at, sizeof addrs - at, "%s%s", j ? " " : "", a);
			}
			if (json) {
				if (!first)
					wp_buf_add(b, ",", 1);
				first = 0;
				wp_buf_add(b, "{\"pool\":\"", 9);
				wp_buf_json_str(b, p->name);
				wp_buf_add(b, "\",\"name\":\"", sizeof "\",\"name\":\"" - 1);
				wp_buf_json_str(b, dns_name_str(n));
				wp_buf_printf(b, "\",\"state\":\"%s\",\"last_result\":\"%s\",\"last_error\":\"",
				              dns_state_str(n->state), dns_result_str(n->last_result));
				wp_buf_json_str(b, n->state == DNS_GOOD ? "" : n->last_error);
				wp_buf_printf(b, "\",\"addresses\":[%s],\"ttl_s\":%u,\"next_lookup_in_s\":%.3f,"
				              "\"querying\":%s,\"failed_in_a_row\":%u",
				              addrs, n->ttl, next_in, n->querying ? "true" : "false", n->fails);
				json_age(b, "last_lookup_age_s", now, n->last_lookup);
				json_age(b, "last_change_age_s", now, n->last_change);
				wp_buf_add(b, "}", 1);
				continue;
			}
			char looked[32], changed[32];
			wp_buf_printf(b, "%-*s %-30s %-8s %-9s %9s %8.1fs %10s  %s\n", pool_col_width(eng, only, "POOL"),
			              p->name, dns_name_str(n), dns_state_str(n->state), dns_result_str(n->last_result),
			              ago(looked, sizeof looked, now, n->last_lookup), next_in,
			              ago(changed, sizeof changed, now, n->last_change), n->n_addrs ? addrs : "-");
			if (n->state != DNS_GOOD && n->last_error[0])
				wp_buf_printf(b, "%-20s   last error: %s\n", "", n->last_error);
		}
	}
	if (json)
		wp_buf_add(b, "]}\n", 3);
}

/* show clients: at most this many rows, then one "... N more" line (the
 * answer stays far below CTL_OUT_MAX whatever max_clients allows). */
#define SHOW_CLIENTS_MAX 1000

/* One client's row (or JSON object). */
static void client_row(struct wp_buf *b, struct session *s, ev_tstamp now, int json, const int *w, int first)
{
	uid_t uid;
	int known = pool_session_uid(s, &uid) == 0; /* SO_PEERCRED once, kept on the session */
	const char *backend = s->b ? s->b->be->name : NULL;
	const char *state = s->state == SESSION_RELAYING ? "relaying" : "waiting";
	if (json) {
		wp_buf_printf(b, "%s{\"pool\":\"", first ? "" : ",");
		wp_buf_json_str(b, s->pool->name);
		wp_buf_printf(b, "\",\"id\":%llu,\"state\":\"%s\",\"backend\":", (unsigned long long)s->id, state);
		if (backend) {
			wp_buf_add(b, "\"", 1);
			wp_buf_json_str(b, backend);
			wp_buf_add(b, "\"", 1);
		} else {
			wp_buf_add(b, "null", 4);
		}
		wp_buf_printf(b, ",\"age_s\":%.3f,\"bytes_up\":%llu,\"bytes_down\":%llu,", now - s->accepted_at,
		              (unsigned long long)s->up.bytes, (unsigned long long)s->down.bytes);
		if (known)
			wp_buf_printf(b, "\"uid\":%u,\"pid\":%ld}", (unsigned)uid, (long)s->pid);
		else
			wp_buf_add(b, "\"uid\":null,\"pid\":null}", 22);
		return;
	}
	char ids[64] = "-", pids[32] = "-";
	if (known) {
		snprintf(ids, sizeof ids, "%u", (unsigned)uid);
		snprintf(pids, sizeof pids, "%ld", (long)s->pid);
	}
	wp_buf_printf(b, "%-*s %10llu %-8s %-*s %9.1fs %12llu %12llu %10s %10s\n", w[0], s->pool->name,
	              (unsigned long long)s->id, state, w[1], backend ? backend : "-", now - s->accepted_at,
	              (unsigned long long)s->up.bytes, (unsigned long long)s->down.bytes, ids, pids);
}

/* The rows of one pool's clients, relaying first, counted in *total and
 * listed while fewer than SHOW_CLIENTS_MAX are. */
static void pool_clients(struct wp_buf *b, const struct pool *p, ev_tstamp now, int json, const int *w,
                         size_t *total, size_t *shown)
{
	const struct list *lists[2] = {&p->relaying, &p->waiting};
	for (int l = 0; l < 2; l++)
		for (const struct list_node *x = lists[l]->head.next; x != &lists[l]->head; x = x->next) {
			++*total;
			if (*shown == SHOW_CLIENTS_MAX)
				continue;
			client_row(b, container_of(x, struct session, node), now, json, w, *shown == 0);
			++*shown;
		}
}

void metrics_show_clients(const struct engine *eng, const struct pool *only, struct wp_buf *b, int json)
{
	ev_tstamp now = ev_now(eng->loop);
	size_t total = 0, shown = 0;
	int w[2] = {pool_col_width(eng, only, "POOL"), backend_col_width(eng, only)}; /* POOL, BACKEND */
	if (json)
		wp_buf_add(b, "{\"clients\":[", 12);
	else
		wp_buf_printf(b, "%-*s %10s %-8s %-*s %10s %12s %12s %10s %10s\n", w[0], "POOL", "ID", "STATE", w[1],
		              "BACKEND", "AGE", "BYTES_UP", "BYTES_DOWN", "UID", "PID");
	for (size_t i = 0; i < eng->n_pools; i++)
		if (!only || eng->pools[i] == only)
			pool_clients(b, eng->pools[i], now, json, w, &total, &shown);
	/* Pools a reload retired (same names) still run their sessions. */
	for (const struct list_node *x = eng->retired.head.next; !only && x != &eng->retired.head; x = x->next)
		pool_clients(b, container_of(x, struct pool, node), now, json, w, &total, &shown);
	if (json)
		wp_buf_printf(b, "],\"more\":%zu}\n", total - shown);
	else if (total > shown)
		wp_buf_printf(b, "... %zu more clients (at most %d are listed)\n", total - shown, SHOW_CLIENTS_MAX);
}

void metrics_show_stats(const struct engine *eng, struct wp_buf *b, int json)
{
	if (json)
		wp_buf_add(b, "{\"pools\":{", 10);
	for (size_t i = 0; i < eng->n_pools; i++) {
		const struct pool *p = eng->pools[i];
		const struct pool_stats *st = &p->stats;
		if (json) {
			wp_buf_printf(b, "%s\"", i ? "," : "");
			wp_buf_json_str(b, p->name);
			wp_buf_add(b, "\":{", 3);
		} else {
			wp_buf_printf(b, "pool %s\n", p->name); /* no blank line: it would end the answer */
		}
		const struct {
			const char *key;
			uint64_t v;
		} bytes[] = {{"bytes_to_backend", st->bytes_up}, {"bytes_to_client", st->bytes_down}};
		size_t nc = sizeof pool_counters / sizeof *pool_counters;
		for (size_t r = 0; r < nc + 2; r++) {
			const char *key = r < nc ? pool_counters[r].key : bytes[r - nc].key;
			unsigned long long v = r < nc ? counter_value(st, r) : bytes[r - nc].v;
			if (json)
				wp_buf_printf(b, "%s\"%s\":%llu", r ? "," : "", key, v);
			else
				wp_buf_printf(b, "  %-26s %llu\n", key, v);
		}
		if (json)
			wp_buf_add(b, "}", 1);
	}
	if (json)
		wp_buf_add(b, "}}\n", 3);
}
