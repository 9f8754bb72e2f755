/*
 * config/keys.c — the key table (see keys.h) and what is read straight off
 * it: key lists, `warmpoold --dump-schema`, the names of enum values.
 *
 * Adding a key: one row below (in the place where it should be listed in
 * "unknown key, expected one of ..." messages; a key of a block right after
 * the block's other keys), the field in config.h, and its documentation in
 * config/warmpool.yaml and packaging/man/warmpool.yaml.5.scd. A plain value
 * (integer, duration, number, boolean, name) needs nothing else: config.c
 * parses it with the row's range, merges it from defaults:, reload compares
 * it (diff.c) and the limit tests find it in --dump-schema. A value with a
 * new structure also needs its parser in config.c and, when it holds
 * pointers, its copy there and its comparison in diff.c.
 */
#include "keys.h"

#include <limits.h>
#include <openssl/tls1.h>
#include <stdio.h>
#include <string.h>

#define MS_S 1000ULL
#define MS_M (60 * MS_S)
#define MS_H (60 * MS_M)
#define MS_D (24 * MS_H)

#define CLIENTS_LIMIT 1000000 /* max_clients upper bound */
#define KEEPALIVE_MAX 32767   /* seconds: the kernel's TCP_KEEPIDLE / TCP_KEEPINTVL bound */

static const char *const balance_names[] = {
    [CFG_BALANCE_ROUND_ROBIN] = "round_robin",
    [CFG_BALANCE_LEAST_CONN] = "least_connections",
    [CFG_BALANCE_FIRST] = "first",
};
static const char *const check_names[] = {
    [CFG_CHECK_NONE] = "none",
    [CFG_CHECK_CONNECT] = "connect",
    [CFG_CHECK_SEND_EXPECT] = "send_expect",
    [CFG_CHECK_REDIS] = "redis",
    [CFG_CHECK_MEMCACHED] = "memcached",
    [CFG_CHECK_HTTP] = "http",
    [CFG_CHECK_POSTGRES] = "postgres",
    [CFG_CHECK_MYSQL] = "mysql",
    [CFG_CHECK_SMTP] = "smtp",
    [CFG_CHECK_POSTGRES_PRIMARY] = "postgres_primary",
    [CFG_CHECK_REDIS_MASTER] = "redis_master",
};
static const char *const tls_version_names[] = {"1.2", "1.3"};
static const int tls_version_values[] = {TLS1_2_VERSION, TLS1_3_VERSION};
static const char *const starttls_names[] = {
    [CFG_STARTTLS_NONE] = "none",
    [CFG_STARTTLS_POSTGRES] = "postgres",
};
#define SERVER_NAME_MAX 253 /* bytes of a DNS name (RFC 1035), the longest SNI */
#define CIPHERS_MAX     4096 /* bytes of a cipher list or ciphersuites */
static const char *const dns_family_names[] = {
    [CFG_DNS_ANY] = "any",
    [CFG_DNS_IPV4] = "ipv4",
    [CFG_DNS_IPV6] = "ipv6",
};
static const char *const dns_mode_names[] = {
    [CFG_DNS_ALL] = "all",
    [CFG_DNS_FIRST] = "first",
};
static const char *const fd_store_names[] = {
    [CFG_FD_STORE_AUTO] = "auto",
    [CFG_FD_STORE_OFF] = "off",
};
static const char *const log_level_names[] = {"debug", "info", "notice", "warning", "error"};
static const int log_level_values[] = {CFG_LOG_DEBUG, CFG_LOG_INFO, CFG_LOG_NOTICE, CFG_LOG_WARNING, CFG_LOG_ERROR};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))
#define FIELD(type, item_, f) .item = (item_), .off = offsetof(type, f), .size = sizeof(((type *)0)->f)
#define POOL(f)    FIELD(struct cfg_pool, CFG_ITEM_POOL, f)
#define DAEMON(f)  FIELD(struct cfg_daemon, CFG_ITEM_DAEMON, f)
#define LISTEN(f)  FIELD(struct cfg_listen, CFG_ITEM_LISTEN, f)
#define BACKEND(f) FIELD(struct cfg_backend, CFG_ITEM_BACKEND, f)
#define BYTES(f)   POOL(f), .len_off = offsetof(struct cfg_pool, f##_len)
#define ENUM(a)    .names = (a), .n_names = COUNT(a)

#define LEVEL (CFG_IN_DEFAULTS | CFG_IN_POOL) /* a pool setting defaults: may give */
#define KEEP  CFG_RELOAD_IN_PLACE
#define NEW   CFG_RELOAD_REPLACE
#define LATER CFG_RELOAD_RESTART

const struct cfg_key cfg_keys[] = {
    /* pools.NAME: the pool's shape */
    {"listen[].path", CFG_T_SOCKET, CFG_IN_POOL, NEW, LISTEN(path)},
    {"listen[].mode", CFG_T_MODE, CFG_IN_POOL, NEW, LISTEN(mode), .def = 0660},
    {"listen[].allow", CFG_T_ALLOW, CFG_IN_POOL, KEEP, LISTEN(allow)},
    {"backends[].address", CFG_T_ADDRESS, CFG_IN_POOL, NEW, BACKEND(name)},
    {"backends[].weight", CFG_T_U32, CFG_IN_POOL, KEEP, BACKEND(weight), .min = 1, .max = CFG_MAX_WEIGHT, .def = 1},
    {"backends[].backup", CFG_T_BOOL, CFG_IN_POOL, KEEP, BACKEND(backup), .what = "true or false"},
    /* the backend's own dns: (the dns.* keys), merged over the pool's into cfg_backend.dns */
    {"backends[].dns", CFG_T_DNS, CFG_IN_POOL, KEEP, BACKEND(dns)},
    {"handoff.listen", CFG_T_SOCKET, CFG_IN_POOL, NEW, POOL(handoff.path)},
    {"handoff.mode", CFG_T_MODE, CFG_IN_POOL, NEW, POOL(handoff.mode), .def = 0660},
    /* reuse: also from defaults:, as a whole block (a pool's own reuse: replaces it) */
    {"reuse", CFG_T_BOOL, LEVEL, KEEP, POOL(reuse.enabled),
     .what = "true, false or a mapping of reset_send, reset_expect, reset_timeout"},
    {"reuse.reset_send", CFG_T_BYTES, LEVEL, KEEP, BYTES(reuse.reset_send)},
    {"reuse.reset_expect", CFG_T_BYTES, LEVEL, KEEP, BYTES(reuse.reset_expect)},
    /* 100ms: the quiet period without a reset exchange; with one, RESET_TIMEOUT_EXCHANGE in config.c */
    {"reuse.reset_timeout", CFG_T_DURATION, LEVEL, KEEP, POOL(reuse.reset_timeout_ms), .min = 1,
     .max = 5 * MS_M, .def = 100},
    /* pools.NAME and defaults: */
    {"min_idle", CFG_T_U32, LEVEL, KEEP, POOL(min_idle), .min = 0, .max = CFG_MAX_CONNECTIONS, .def = 2},
    {"max_connections", CFG_T_U32, LEVEL, KEEP, POOL(max_connections), .min = 1, .max = CFG_MAX_CONNECTIONS,
     .def = 64},
    {"max_clients", CFG_T_U32, LEVEL, KEEP, POOL(max_clients), .min = 1, .max = CLIENTS_LIMIT, .def = 4096},
    {"connect_timeout", CFG_T_DURATION, LEVEL, KEEP, POOL(connect_timeout_ms), .min = 1, .max = 5 * MS_M,
     .def = 2 * MS_S},
    {"queue_timeout", CFG_T_DURATION, LEVEL, KEEP, POOL(queue_timeout_ms), .min = 1, .max = MS_H,
     .def = 5 * MS_S},
    {"backoff.initial", CFG_T_DURATION, LEVEL, KEEP, POOL(backoff.initial_ms), .min = 1, .max = MS_H,
     .def = 500},
    {"backoff.max", CFG_T_DURATION, LEVEL, KEEP, POOL(backoff.max_ms), .min = 1, .max = MS_H, .def = 30 * MS_S},
    {"backoff.multiplier", CFG_T_NUMBER, LEVEL, KEEP, POOL(backoff.multiplier), .def_num = 1.6},
    {"backoff.jitter", CFG_T_NUMBER, LEVEL, KEEP, POOL(backoff.jitter), .def_num = 0.2},
    {"balance", CFG_T_ENUM, LEVEL, KEEP, POOL(balance), ENUM(balance_names), .def = CFG_BALANCE_ROUND_ROBIN},
    {"max_connecting", CFG_T_U32, LEVEL, KEEP, POOL(max_connecting), .min = 1, .max = 1000, .def = 8},
    {"fail_fast", CFG_T_BOOL, LEVEL, KEEP, POOL(fail_fast), .what = "true or false"},
    /* a block without type: is type connect (config.c, parse_health) */
    {"health_check.type", CFG_T_ENUM, LEVEL, KEEP, POOL(health.type), ENUM(check_names), .def = CFG_CHECK_NONE},
    {"health_check.send", CFG_T_BYTES, LEVEL, KEEP, BYTES(health.send)},
    {"health_check.send_hex", CFG_T_BYTES, LEVEL, KEEP, BYTES(health.send), .alias = true},
    {"health_check.expect", CFG_T_BYTES, LEVEL, KEEP, BYTES(health.expect)},
    {"health_check.expect_hex", CFG_T_BYTES, LEVEL, KEEP, BYTES(health.expect), .alias = true},
    {"health_check.expect_regex", CFG_T_REGEX, LEVEL, KEEP, POOL(health.expect_regex)},
    {"health_check.path", CFG_T_TEXT, LEVEL, KEEP, POOL(health.path), .def_text = "/"},
    {"health_check.interval", CFG_T_DURATION, LEVEL, KEEP, POOL(health.interval_ms), .min = 10, .max = MS_H,
     .def = 2 * MS_S},
    {"health_check.timeout", CFG_T_DURATION, LEVEL, KEEP, POOL(health.timeout_ms), .min = 10, .max = 5 * MS_M,
     .def = 1 * MS_S},
    {"health_check.fast_interval", CFG_T_DURATION, LEVEL, KEEP, POOL(health.fast_interval_ms), .min = 10,
     .max = MS_H, .def = 500},
    {"health_check.down_interval", CFG_T_DURATION, LEVEL, KEEP, POOL(health.down_interval_ms), .min = 10,
     .max = MS_H, .def = 2 * MS_S},
    {"health_check.rise", CFG_T_U32, LEVEL, KEEP, POOL(health.rise), .min = 1, .max = 100, .def = 2},
    {"health_check.fall", CFG_T_U32, LEVEL, KEEP, POOL(health.fall), .min = 1, .max = 100, .def = 3},
    /* postgres_primary / redis_master: who logs in (config.c, parse_health and load_password) */
    {"health_check.user", CFG_T_STRING, LEVEL, KEEP, POOL(health.user), .min = 1, .max = CFG_MAX_CHECK_USER},
    {"health_check.database", CFG_T_STRING, LEVEL, KEEP, POOL(health.database), .min = 1,
     .max = CFG_MAX_CHECK_USER},
    {"health_check.password_file", CFG_T_PATH, LEVEL, KEEP, POOL(health.password_file), .min = 1, .max = PATH_MAX},
    {"keepalive", CFG_T_BOOL, LEVEL, KEEP, POOL(keepalive.enabled), .def = true,
     .what = "true, false or a mapping of idle, interval, count"},
    {"keepalive.idle", CFG_T_SECONDS, LEVEL, KEEP, POOL(keepalive.idle_s), .min = 1, .max = KEEPALIVE_MAX,
     .def = 30},
    {"keepalive.interval", CFG_T_SECONDS, LEVEL, KEEP, POOL(keepalive.interval_s), .min = 1,
     .max = KEEPALIVE_MAX, .def = 10},
    {"keepalive.count", CFG_T_U32, LEVEL, KEEP, POOL(keepalive.count), .min = 1, .max = 127, .def = 3},
    /* tls: a block that turns TLS on (or true/false); every key in place:
     * the daemon recycles warm connections gradually when tls.digest differs */
    {"tls", CFG_T_BOOL, LEVEL, KEEP, POOL(tls.enabled),
     .what = "true, false or a mapping of verify, ca_file, ca_path, server_name, cert_file, key_file, "
             "min_version, ciphers, ciphersuites, alpn, session_resumption, starttls"},
    {"tls.verify", CFG_T_BOOL, LEVEL, KEEP, POOL(tls.verify), .def = true, .what = "true or false"},
    {"tls.ca_file", CFG_T_PATH, LEVEL, KEEP, POOL(tls.ca_file), .min = 1, .max = PATH_MAX},
    {"tls.ca_path", CFG_T_PATH, LEVEL, KEEP, POOL(tls.ca_path), .min = 1, .max = PATH_MAX},
    {"tls.server_name", CFG_T_STRING, LEVEL, KEEP, POOL(tls.server_name), .min = 1, .max = SERVER_NAME_MAX},
    {"tls.cert_file", CFG_T_PATH, LEVEL, KEEP, POOL(tls.cert_file), .min = 1, .max = PATH_MAX},
    {"tls.key_file", CFG_T_PATH, LEVEL, KEEP, POOL(tls.key_file), .min = 1, .max = PATH_MAX},
    {"tls.min_version", CFG_T_ENUM, LEVEL, KEEP, POOL(tls.min_version), ENUM(tls_version_names),
     .values = tls_version_values, .def = TLS1_2_VERSION},
    {"tls.ciphers", CFG_T_STRING, LEVEL, KEEP, POOL(tls.ciphers), .min = 1, .max = CIPHERS_MAX},
    {"tls.ciphersuites", CFG_T_STRING, LEVEL, KEEP, POOL(tls.ciphersuites), .min = 1, .max = CIPHERS_MAX},
    {"tls.alpn", CFG_T_ALPN, LEVEL, KEEP, POOL(tls.alpn), .len_off = offsetof(struct cfg_pool, tls.alpn_len),
     .min = 1, .max = CFG_MAX_ALPN},
    {"tls.session_resumption", CFG_T_BOOL, LEVEL, KEEP, POOL(tls.session_resumption), .def = true,
     .what = "true or false"},
    {"tls.starttls", CFG_T_ENUM, LEVEL, KEEP, POOL(tls.starttls), ENUM(starttls_names), .def = CFG_STARTTLS_NONE},
    /* dns: how backend host names are resolved (daemon/dns.c), merged key by
     * key: a backend's own dns: over the pool's over defaults:. Every key in
     * place: the daemon's resolver takes them from the new config at its
     * next lookup, and a name's addresses are diffed as after any answer.
     * refresh and the TTL bounds from 100ms (a name is not worth more
     * queries than that) to a day; timeout 10ms..1m per attempt. */
    {"dns.refresh", CFG_T_DURATION, LEVEL, KEEP, POOL(dns.refresh_ms), .min = 100, .max = MS_D, .def = 5 * MS_S},
    {"dns.respect_ttl", CFG_T_BOOL, LEVEL, KEEP, POOL(dns.respect_ttl), .what = "true or false"},
    {"dns.min_ttl", CFG_T_DURATION, LEVEL, KEEP, POOL(dns.min_ttl_ms), .min = 100, .max = MS_D, .def = MS_S},
    {"dns.max_ttl", CFG_T_DURATION, LEVEL, KEEP, POOL(dns.max_ttl_ms), .min = 100, .max = MS_D, .def = 5 * MS_M},
    {"dns.timeout", CFG_T_DURATION, LEVEL, KEEP, POOL(dns.timeout_ms), .min = 10, .max = MS_M, .def = 2 * MS_S},
    {"dns.tries", CFG_T_U32, LEVEL, KEEP, POOL(dns.tries), .min = 1, .max = 10, .def = 3},
    {"dns.hold", CFG_T_DURATION_OR_0, LEVEL, KEEP, POOL(dns.hold_ms), .min = 0, .max = MS_D, .def = 5 * MS_M},
    {"dns.family", CFG_T_ENUM, LEVEL, KEEP, POOL(dns.family), ENUM(dns_family_names), .def = CFG_DNS_ANY},
    {"dns.mode", CFG_T_ENUM, LEVEL, KEEP, POOL(dns.mode), ENUM(dns_mode_names), .def = CFG_DNS_ALL},
    {"dns.servers", CFG_T_SERVERS, LEVEL, KEEP, POOL(dns.servers), .len_off = offsetof(struct cfg_pool, dns.n_servers),
     .min = 0, .max = CFG_MAX_DNS_SERVERS},
    {"tcp_user_timeout", CFG_T_DURATION_OR_0, LEVEL, KEEP, POOL(tcp_user_timeout_ms), .min = 0, .max = MS_H,
     .def = 30 * MS_S},
    {"max_lifetime", CFG_T_DURATION_OR_0, LEVEL, KEEP, POOL(max_lifetime_ms), .min = 100, .max = 7 * MS_D},
    {"idle_timeout", CFG_T_DURATION_OR_0, LEVEL, KEEP, POOL(idle_timeout_ms), .min = 0, .max = 7 * MS_D,
     .def = 10 * MS_M},
    {"max_idle_time", CFG_T_DURATION_OR_0, LEVEL, KEEP, POOL(max_idle_time_ms), .min = 10, .max = 7 * MS_D},
    {"client_idle_timeout", CFG_T_DURATION_OR_0, LEVEL, KEEP, POOL(client_idle_timeout_ms), .min = 10,
     .max = 7 * MS_D},
    {"server_idle_timeout", CFG_T_DURATION_OR_0, LEVEL, KEEP, POOL(server_idle_timeout_ms), .min = 10,
     .max = 7 * MS_D},
    {"allow", CFG_T_ALLOW, LEVEL, KEEP, POOL(allow)},
    {"allow.users", CFG_T_NAMES, LEVEL, KEEP, POOL(allow.uids)},
    {"allow.groups", CFG_T_NAMES, LEVEL, KEEP, POOL(allow.gids)},
    /* (uid_t)-1 and (gid_t)-1 mean "no change" to the kernel: never an id */
    {"allow.uids", CFG_T_IDS, LEVEL, KEEP, POOL(allow.uids), .min = 0, .max = UINT32_MAX - 1},
    {"allow.gids", CFG_T_IDS, LEVEL, KEEP, POOL(allow.gids), .min = 0, .max = UINT32_MAX - 1},
    /* daemon: */
    {"log_level", CFG_T_ENUM, CFG_IN_DAEMON, KEEP, DAEMON(log_level), ENUM(log_level_names),
     .values = log_level_values, .def = CFG_LOG_INFO},
    {"shutdown_timeout", CFG_T_DURATION, CFG_IN_DAEMON, KEEP, DAEMON(shutdown_timeout_ms), .min = 0, .max = MS_H,
     .def = 30 * MS_S},
    {"fd_store", CFG_T_ENUM, CFG_IN_DAEMON, LATER, DAEMON(fd_store), ENUM(fd_store_names), .def = CFG_FD_STORE_AUTO},
    {"admin_socket", CFG_T_SOCKET, CFG_IN_DAEMON, LATER, DAEMON(admin.path), .def_text = CFG_DEFAULT_ADMIN_SOCKET},
    {"admin_socket_mode", CFG_T_MODE, CFG_IN_DAEMON, LATER, DAEMON(admin.mode), .def = 0600},
    {"admin_socket_readonly", CFG_T_SOCKET, CFG_IN_DAEMON, LATER, DAEMON(admin_ro.path)},
    {"metrics_listen", CFG_T_ADDRESS, CFG_IN_DAEMON, LATER, DAEMON(metrics.name)},
};
const size_t cfg_n_keys = COUNT(cfg_keys);

_Static_assert(COUNT(cfg_keys) <= CFG_MAX_KEYS, "struct level has a flag per row: raise CFG_MAX_KEYS");

/* Rows of a pool are found in CFG_IN_POOL, daemon: rows in CFG_IN_DAEMON. */
static bool in_section(const struct cfg_key *k, unsigned where)
{
	return (k->where & where) != 0;
}

int cfg_key_find(unsigned where, const char *path)
{
	for (size_t i = 0; i < cfg_n_keys; i++)
		if (in_section(&cfg_keys[i], where) && strcmp(cfg_keys[i].path, path) == 0)
			return (int)i;
	return -1;
}

/* Length of the parent part of a path: "health_check" of "health_check.rise",
 * "listen[]" of "listen[].mode", 0 at the top. */
static size_t parent_len(const char *path)
{
	const char *dot = strrchr(path, '.');

	return dot ? (size_t)(dot - path) : 0;
}

const char *cfg_key_name(const struct cfg_key *k)
{
	size_t p = parent_len(k->path);

	return p ? k->path + p + 1 : k->path;
}

bool cfg_key_under(const struct cfg_key *k, const char *prefix)
{
	size_t p = parent_len(k->path);

	return p == strlen(prefix) && strncmp(k->path, prefix, p) == 0;
}

bool cfg_key_owned(const struct cfg_key *k)
{
	return k->item == CFG_ITEM_POOL && (k->type == CFG_T_STRING || k->type == CFG_T_PATH || k->type == CFG_T_ALPN ||
	                                    k->type == CFG_T_SERVERS);
}

bool cfg_key_scalar(const struct cfg_key *k)
{
	switch (k->type) {
	case CFG_T_U32:
	case CFG_T_DURATION:
	case CFG_T_DURATION_OR_0:
	case CFG_T_SECONDS:
	case CFG_T_NUMBER:
	case CFG_T_BOOL:
	case CFG_T_ENUM:
		return true;
	default:
		return false;
	}
}

void cfg_key_children(unsigned where, const char *prefix, struct cfg_keyset *ks)
{
	size_t plen = strlen(prefix), o = 0;

	ks->n = 0;
	ks->listed = 0;
	for (size_t i = 0; i < cfg_n_keys; i++) {
		const struct cfg_key *k = &cfg_keys[i];
		const char *s = k->path;
		size_t len;

		if (!in_section(k, where))
			continue;
		if (plen) {
			if (strncmp(s, prefix, plen) != 0 || s[plen] != '.')
				continue;
			s += plen + 1;
		}
		len = strcspn(s, ".[");
		if (ks->n && strlen(ks->v[ks->n - 1]) == len && strncmp(ks->v[ks->n - 1], s, len) == 0)
			continue; /* the rows of one block are adjacent */
		if (ks->n == CFG_MAX_CHILD || o + len + 1 > sizeof ks->buf)
			break; /* cannot happen with the table above; keys beyond are unknown */
		memcpy(ks->buf + o, s, len);
		ks->buf[o + len] = '\0';
		ks->v[ks->n] = ks->buf + o;
		if (ks->listed == ks->n && !(k->where & CFG_IN_DEFAULTS) && where == CFG_IN_POOL && !plen)
			ks->listed = ks->n + 1; /* keys before the first defaults: key are not listed there */
		ks->n++;
		o += len + 1;
	}
}

int cfg_keyset_find(const struct cfg_keyset *ks, const char *name)
{
	for (size_t i = 0; i < ks->n; i++)
		if (strcmp(ks->v[i], name) == 0)
			return (int)i;
	return -1;
}

/* ---- --dump-schema ---------------------------------------------------------- */

static const char *type_name(enum cfg_type t)
{
	static const char *const names[] = {
	    [CFG_T_U32] = "integer",      [CFG_T_DURATION] = "duration", [CFG_T_DURATION_OR_0] = "duration_or_0",
	    [CFG_T_SECONDS] = "seconds",  [CFG_T_NUMBER] = "number",     [CFG_T_BOOL] = "boolean",
	    [CFG_T_ENUM] = "enum",        [CFG_T_BYTES] = "bytes",       [CFG_T_REGEX] = "regex",
	    [CFG_T_TEXT] = "text",        [CFG_T_ALLOW] = "allow",       [CFG_T_IDS] = "ids",
	    [CFG_T_NAMES] = "names",      [CFG_T_MODE] = "mode",         [CFG_T_SOCKET] = "socket",
	    [CFG_T_ADDRESS] = "address",  [CFG_T_STRING] = "string",    [CFG_T_PATH] = "path",
	    [CFG_T_ALPN] = "alpn",        [CFG_T_SERVERS] = "servers",  [CFG_T_DNS] = "dns",
	};
	return names[t];
}

static const char *reload_name(enum cfg_reload r)
{
	static const char *const names[] = {
	    [CFG_RELOAD_SAME] = "same",
	    [CFG_RELOAD_IN_PLACE] = "in_place",
	    [CFG_RELOAD_REPLACE] = "replace",
	    [CFG_RELOAD_RESTART] = "restart",
	};
	return names[r];
}

/* The row's default as a JSON value. */
static void dump_default(FILE *f, const struct cfg_key *k)
{
	switch (k->type) {
	case CFG_T_NUMBER:
		fprintf(f, "%g", k->def_num);
		break;
	case CFG_T_BOOL:
		fputs(k->def ? "true" : "false", f);
		break;
	case CFG_T_ENUM:
		for (size_t i = 0; i < k->n_names; i++)
			if ((k->values ? (uint64_t)k->values[i] : i) == k->def)
				fprintf(f, "\"%s\"", k->names[i]);
		break;
	case CFG_T_SERVERS:
		fputs("[]", f); /* none: /etc/resolv.conf's */
		break;
	case CFG_T_MODE:
		fprintf(f, "\"%04llo\"", (unsigned long long)k->def);
		break;
	case CFG_T_SOCKET:
	case CFG_T_TEXT:
		if (k->def_text)
			fprintf(f, "\"%s\"", k->def_text); /* our own constants: nothing to escape */
		else
			fputs("null", f);
		break;
	case CFG_T_U32:
	case CFG_T_DURATION:
	case CFG_T_DURATION_OR_0:
	case CFG_T_SECONDS:
		fprintf(f, "%llu", (unsigned long long)k->def);
		break;
	default:
		fputs("null", f);
	}
}

static void dump_key(FILE *f, const struct cfg_key *k)
{
	static const char *const sections[] = {"daemon", "defaults", "pool"};
	bool ranged = k->type == CFG_T_U32 || k->type == CFG_T_DURATION || k->type == CFG_T_DURATION_OR_0 ||
	              k->type == CFG_T_SECONDS || k->type == CFG_T_IDS;
	const char *sep = "";

	fprintf(f, "    {\"path\": \"%s\", \"type\": \"%s\"", k->path, type_name(k->type));
	if (ranged)
		fprintf(f, ", \"min\": %llu, \"max\": %llu", (unsigned long long)k->min, (unsigned long long)k->max);
	if (k->type == CFG_T_STRING || k->type == CFG_T_PATH)
		fprintf(f, ", \"max_bytes\": %llu", (unsigned long long)k->max);
	else if (k->type == CFG_T_ALPN || k->type == CFG_T_SERVERS)
		fprintf(f, ", \"max_items\": %llu", (unsigned long long)k->max);
	if (k->type == CFG_T_DURATION || k->type == CFG_T_DURATION_OR_0)
		fputs(", \"unit\": \"ms\"", f);
	else if (k->type == CFG_T_SECONDS)
		fputs(", \"unit\": \"s\"", f);
	if (k->type == CFG_T_ENUM) {
		fputs(", \"values\": [", f);
		for (size_t i = 0; i < k->n_names; i++)
			fprintf(f, "%s\"%s\"", i ? ", " : "", k->names[i]);
		fputc(']', f);
	}
	fputs(", \"default\": ", f);
	dump_default(f, k);
	fputs(", \"where\": [", f);
	for (unsigned b = 0; b < 3; b++) {
		if (k->where & (1u << b)) {
			fprintf(f, "%s\"%s\"", sep, sections[b]);
			sep = ", ";
		}
	}
	fprintf(f, "], \"reload\": \"%s\"%s}", reload_name(k->reload), k->alias ? ", \"alias\": true" : "");
}

int cfg_dump_schema(FILE *f)
{
	fprintf(f,
	        "{\n  \"limits\": {\"file_size\": %d, \"depth\": %d, \"pools\": %d, \"backends\": %d, "
	        "\"listen\": %d, \"name\": %d, \"errors\": %d, \"weight\": %d, \"check_bytes\": %d, "
	        "\"check_path\": %d, \"allow\": %d},\n  \"keys\": [\n",
	        CFG_MAX_FILE_SIZE, CFG_MAX_DEPTH, CFG_MAX_POOLS, CFG_MAX_BACKENDS, CFG_MAX_LISTEN, CFG_MAX_NAME,
	        CFG_MAX_ERRORS, CFG_MAX_WEIGHT, CFG_MAX_CHECK_BYTES, CFG_MAX_CHECK_PATH, CFG_MAX_ALLOW);
	for (size_t i = 0; i < cfg_n_keys; i++) {
		dump_key(f, &cfg_keys[i]);
		fputs(i + 1 < cfg_n_keys ? ",\n" : "\n", f);
	}
	fputs("  ]\n}\n", f);
	return fflush(f) == 0 && !ferror(f) ? 0 : -1;
}

/* ---- names of enum values ---------------------------------------------------- */

const char *cfg_log_level_name(int level)
{
	for (size_t i = 0; i < COUNT(log_level_values); i++)
		if (log_level_values[i] == level)
			return log_level_names[i];
	return NULL;
}

const char *cfg_balance_name(enum cfg_balance b)
{
	return (size_t)b < COUNT(balance_names) ? balance_names[b] : NULL;
}

const char *cfg_check_type_name(enum cfg_check_type t)
{
	return (size_t)t < COUNT(check_names) ? check_names[t] : NULL;
}
