/*
 * config/config.h — the warmpool configuration schema as plain C structs.
 *
 * The YAML file is loaded in three phases (config/: scan.c, then value.c,
 * keys.c and config.c, then check.c; config/loader.h maps the files):
 *   1. YAML syntax: libyaml builds a document tree; nesting depth, file size
 *      and aliases are bounded/rejected here.
 *   2. Typed fields: each mapping is walked against the key table
 *      (config/keys.c: one row per key with its type, range, default, the
 *      sections it may appear in and its reload class); every value is
 *      converted to its C type, defaults come from `defaults:` and then from
 *      the table's built-in values, documented in config/warmpool.yaml. User
 *      and group names of allow: blocks are resolved here (getpwnam_r,
 *      getgrnam_r).
 *   3. Cross-checks: unique pool names and socket paths, min_idle fitting
 *      max_connections, metrics_listen's host name resolved with
 *      getaddrinfo_a() (backend host names are the daemon's to resolve).
 * Every error is collected (never only the first) as a finished line:
 *   "file:line:col: pools.redis.min_idle: expected an integer >= 0, got \"many\""
 *
 * The loader never logs and keeps no globals; the daemon prints the errors.
 */
#ifndef WARMPOOL_CONFIG_H
#define WARMPOOL_CONFIG_H

#include <regex.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "backoff.h"
#include "version.h"

#define CFG_DEFAULT_PATH "/etc/warmpool/warmpool.yaml"

/* Hard limits on what a config file may ask for (DESIGN.md rule 9). */
#define CFG_MAX_FILE_SIZE   (1024 * 1024) /* bytes */
#define CFG_MAX_DEPTH       32            /* nested mappings/sequences */
#define CFG_MAX_POOLS       1024
#define CFG_MAX_BACKENDS    256 /* per pool */
#define CFG_MAX_LISTEN      16  /* socket paths per pool */
#define CFG_MAX_CONNECTIONS 100000
#define CFG_MAX_NAME        64  /* pool name length */
#define CFG_MAX_ERRORS      100 /* stop collecting after this many */
/* metrics_listen's host name is resolved within this time: a reload runs
 * inside the event loop, which a hanging DNS server would otherwise stop
 * for resolv.conf's timeout x attempts x servers. Backend names are never
 * resolved by a load. */
#define CFG_RESOLVE_TIMEOUT_MS 2000
#define CFG_MAX_WEIGHT      1000
#define CFG_MAX_CHECK_BYTES 1024 /* health_check send / expect, after unescaping */
#define CFG_MAX_CHECK_PATH  1024 /* health_check path (http) */
#define CFG_MAX_CHECK_USER  255  /* health_check user and database, bytes (PostgreSQL keeps 63) */
#define CFG_MAX_PASSWORD    1024 /* bytes of the password in health_check.password_file */
#define CFG_MAX_ALLOW       256  /* entries in each list of an allow: block */
/* TLS (config/tls.c): every file the loader reads for a pool's tls: block is
 * bounded, so a path pointing at a huge file or directory cannot stall a
 * reload or exhaust memory. A system CA bundle is about 200 KiB; /etc/ssl/certs
 * holds a few hundred entries. */
#define CFG_MAX_TLS_FILE        (8 * 1024 * 1024)  /* bytes of ca_file, cert_file or key_file */
#define CFG_MAX_TLS_DIR_ENTRIES 4096               /* names in a ca_path directory */
#define CFG_MAX_TLS_DIR_BYTES   (64 * 1024 * 1024) /* bytes of all files of a ca_path together */
#define CFG_MAX_ALPN            32                 /* protocol names in tls.alpn */

/* Where a value came from in the file, for messages after loading. */
struct cfg_pos {
	unsigned line; /* 1-based */
	unsigned col;  /* 1-based */
};

/*
 * Who may use a socket, checked with SO_PEERCRED when a client is accepted.
 * users: and groups: are resolved to ids when the file is loaded. A client
 * is allowed when its uid is in uids or its gid (the primary group
 * SO_PEERCRED reports; supplementary groups are not consulted) is in gids.
 * uid 0 is not allowed unless listed.
 */
struct cfg_allow {
	bool enabled;       /* an allow: block applies; false: anyone who can open the socket file */
	uid_t *uids;        /* from users: and uids:, sorted, without repeats; NULL when none */
	size_t n_uids;
	gid_t *gids;        /* from groups: and gids:, sorted, without repeats; NULL when none */
	size_t n_gids;
	struct cfg_pos pos; /* the allow: block that applies (listen item, pool or defaults:) */
};

struct cfg_listen {
	char *path;  /* absolute Unix socket path (< sizeof sun_path) */
	mode_t mode; /* permission bits applied after bind, default 0660 */
	struct cfg_pos pos;
	struct cfg_allow allow; /* pools: the item's own allow:, else a copy of the pool's */
};

/* Name resolution of backends written as host names (dns:, per pool and
 * under defaults:, and per backend in the mapping form {address:, dns:},
 * merged key by key: backend over pool over defaults over built-in). The
 * daemon resolves names with c-ares inside its event loop (daemon/dns.c);
 * the loader never resolves a backend name (cfg_resolve_names does, for
 * --check-config --resolve only). */
enum cfg_dns_family {
	CFG_DNS_ANY,  /* A and AAAA, in the resolver's order (default) */
	CFG_DNS_IPV4, /* A only */
	CFG_DNS_IPV6, /* AAAA only */
};
enum cfg_dns_mode {
	CFG_DNS_ALL,   /* every address of the answer is a backend (Envoy STRICT_DNS; default) */
	CFG_DNS_FIRST, /* one backend: the first address of each answer (LOGICAL_DNS) */
};
#define CFG_MAX_DNS_SERVERS 8 /* dns.servers entries */
struct cfg_dns {
	uint64_t refresh_ms;  /* re-resolve this often, default 5000 (respect_ttl may replace it) */
	bool respect_ttl;     /* true: the answer's lowest TTL, clamped to [min_ttl, max_ttl], default false */
	uint64_t min_ttl_ms;  /* default 1000; also the least gap between two early re-resolutions */
	uint64_t max_ttl_ms;  /* default 300000 */
	uint64_t timeout_ms;  /* per query attempt, default 2000 */
	uint32_t tries;       /* query attempts per lookup, default 3 */
	uint64_t hold_ms;     /* keep the last good addresses this long while lookups fail, default 300000 */
	enum cfg_dns_family family;
	enum cfg_dns_mode mode;
	char **servers;       /* "ip:port" / "[v6]:port" / "ip" (port 53) literals overriding resolv.conf, or NULL */
	size_t n_servers;     /* 0..CFG_MAX_DNS_SERVERS */
};

struct cfg_backend {
	char *name;                   /* as written: "host:port" or "[v6]:port" (the address: key of a map item) */
	uint32_t weight;              /* 1..CFG_MAX_WEIGHT, default 1 */
	bool backup;                  /* used only while no primary backend of the pool is up */
	char *host;                   /* the host part of name, without [] (TLS: SNI and the name verified) */
	uint16_t port;                /* the port part of name */
	bool is_name;                 /* host is a DNS name, not an IP literal: addr is unset, the daemon
	                               * resolves it (daemon/dns.c) with `dns` */
	struct cfg_dns dns;           /* the settings that apply to this name (meaningful when is_name) */
	struct sockaddr_storage addr; /* the IP literal's address (is_name false) */
	socklen_t addrlen;            /* 0 when is_name */
	struct cfg_pos pos;
};

enum cfg_balance {
	CFG_BALANCE_ROUND_ROBIN,   /* weighted round robin (default) */
	CFG_BALANCE_LEAST_CONN,    /* fewest active sessions per unit of weight */
	CFG_BALANCE_FIRST,         /* ordered failover: the first usable backend in list order */
};

/* Active health checks. The presets are protocol exchanges built into the
 * daemon (daemon/health.c); the loader only records which one. */
enum cfg_check_type {
	CFG_CHECK_NONE,        /* no health_check block (or type: none): passive only */
	CFG_CHECK_CONNECT,     /* a TCP connect within timeout (default type of a block) */
	CFG_CHECK_SEND_EXPECT, /* send bytes, the reply must start with expect / match expect_regex */
	CFG_CHECK_REDIS,       /* PING -> +PONG */
	CFG_CHECK_MEMCACHED,   /* version -> VERSION */
	CFG_CHECK_HTTP,        /* GET path -> HTTP/1.x 2xx or 3xx */
	CFG_CHECK_POSTGRES,    /* SSLRequest -> one byte, S or N */
	CFG_CHECK_MYSQL,       /* server greeting packet (sequence 0, protocol 10) */
	CFG_CHECK_SMTP,        /* 220 banner */
	CFG_CHECK_POSTGRES_PRIMARY, /* log in as user, SELECT pg_is_in_recovery() -> f (a standby fails) */
	CFG_CHECK_REDIS_MASTER,     /* [AUTH] ROLE -> master (a replica fails) */
};

struct cfg_health {
	enum cfg_check_type type;
	unsigned char *send;    /* send_expect: `send` (escapes decoded) or `send_hex`; may be empty */
	size_t send_len;
	unsigned char *expect;  /* send_expect: prefix the reply must start with (`expect`/`expect_hex`) */
	size_t expect_len;
	regex_t *expect_re;     /* send_expect: compiled `expect_regex` (POSIX ERE), or NULL */
	char *expect_regex;     /* its source (to compare configs on reload), or NULL */
	char *path;             /* http: request path, default "/" */
	uint64_t interval_ms;      /* between checks while up and steady, default 2000 */
	uint64_t timeout_ms;       /* connect + exchange, default 1000 */
	uint64_t fast_interval_ms; /* while a backend is changing state, default 500 */
	uint64_t down_interval_ms; /* while down, default 2000 */
	uint32_t rise;             /* consecutive successes to go up, default 2, >= 1 */
	uint32_t fall;             /* consecutive failures (checks or connects) to go down, default 3, >= 1 */
	char *user;                /* postgres_primary (required), redis_master (AUTH user): who logs in */
	char *database;            /* postgres_primary: NULL = the server's default (the user's name) */
	char *password_file;       /* postgres_primary, redis_master: the file the password is read from */
	char *password;            /* its contents at load (one trailing newline dropped), or NULL; never
	                            * logged, wiped when the config is freed */
	size_t password_len;
};

/* TLS to the backends of a pool (tls:, merged key by key with defaults:).
 * The loader builds the client SSL_CTX from these settings (config/tls.c),
 * reading every file, so --check-config and a reload fail exactly where the
 * daemon would; the daemon adds its per-connection parts (SNI, host check,
 * session callbacks). */
enum cfg_starttls {
	CFG_STARTTLS_NONE,     /* the handshake starts at once (default) */
	CFG_STARTTLS_POSTGRES, /* SSLRequest first; the server answers 'S', then the handshake */
};

struct cfg_tls {
	bool enabled;             /* tls: present (a mapping, or true) */
	bool verify;              /* chain and host name, default true (false: warned at load) */
	char *ca_file;            /* NULL: OpenSSL's default verify paths (unless ca_path is set) */
	char *ca_path;            /* hashed directory, or NULL */
	char *server_name;        /* SNI and the name verified; NULL: each backend's host (an IP: no SNI) */
	char *cert_file;          /* client certificate (mTLS) and its key: both or neither */
	char *key_file;
	int min_version;          /* TLS1_2_VERSION (default) or TLS1_3_VERSION (OpenSSL's values) */
	char *ciphers;            /* OpenSSL cipher list (TLS <= 1.2), or NULL: OpenSSL's default */
	char *ciphersuites;       /* TLS 1.3 suites, or NULL: OpenSSL's default */
	unsigned char *alpn;      /* ALPN protocol list in wire format (length-prefixed), or NULL */
	size_t alpn_len;
	bool session_resumption;  /* default true: a per-backend session cache (daemon/tls.c) */
	enum cfg_starttls starttls;
	void *ctx;                /* SSL_CTX * built at load from the above (owned, freed by cfg_free), NULL unless enabled */
	unsigned char digest[32]; /* SHA-256 of the settings and of every file's contents: equal digests, same TLS */
	struct cfg_pos pos;       /* the tls: key that applies (pool or defaults:) */
};

struct cfg_keepalive {
	bool enabled;         /* default true; `keepalive: false` turns it off */
	uint32_t idle_s;      /* TCP_KEEPIDLE, default 30 */
	uint32_t interval_s;  /* TCP_KEEPINTVL, default 10 */
	uint32_t count;       /* TCP_KEEPCNT, default 3 */
};

struct cfg_pool {
	char *name; /* [A-Za-z0-9_.-]+, at most CFG_MAX_NAME bytes */
	struct cfg_listen *listen;
	size_t n_listen;
	struct cfg_backend *backends;
	size_t n_backends;
	struct cfg_listen handoff;   /* handoff: {listen, mode}: path NULL when the pool has none */
	/* reuse.reset_send / reset_expect may hold CFG_NONCE: each reset replaces every
	 * occurrence in both with the same fresh random token (CFG_NONCE_LEN hex
	 * characters), so no client can predict, and so forge, the answer. */
	struct cfg_reuse {
		bool enabled;               /* reuse: a cleanly ended session's connection goes back to idle */
		unsigned char *reset_send;  /* sent before reuse (escapes decoded), or NULL: a quiet period */
		size_t reset_send_len;
		unsigned char *reset_expect; /* the whole answer the reset must get, or NULL */
		size_t reset_expect_len;
		uint64_t reset_timeout_ms;  /* for the answer, or the quiet period; default 1000 / 100 */
	} reuse;
	uint32_t min_idle;           /* warm floor kept while idle (default 2) */
	uint32_t max_connections;    /* idle+active+connecting cap (default 64) */
	uint32_t max_clients;        /* clients relayed or waiting (default 4096) */
	uint64_t connect_timeout_ms; /* default 2000 */
	uint64_t queue_timeout_ms;   /* longest a client waits for a connection, default 5000 */
	struct wp_backoff backoff;   /* default {500ms, 30s, 1.6, 0.2} */
	enum cfg_balance balance;    /* default round_robin */
	uint32_t max_connecting;     /* connects in flight per backend, default 8 */
	bool fail_fast;              /* close a client at once while no backend is up, default false */
	struct cfg_health health;
	struct cfg_keepalive keepalive;
	struct cfg_tls tls;           /* tls: (enabled false: plain TCP) */
	struct cfg_dns dns;           /* dns: (pool over defaults: over built-in); each backend's own copy,
	                               * with its dns: merged over this, is cfg_backend.dns */
	uint64_t tcp_user_timeout_ms; /* TCP_USER_TIMEOUT, 0 = kernel default; default 30000 */
	uint64_t max_lifetime_ms;     /* recycle connections older than this (jittered), 0 = never (default) */
	uint64_t idle_timeout_ms;     /* close idle connections above min_idle after this, 0 = never; default 600000 */
	uint64_t max_idle_time_ms;    /* replace an idle connection idle this long even at the floor, 0 = never (default) */
	uint64_t client_idle_timeout_ms; /* close a session when nothing moved to or from its client this long, 0 = never */
	uint64_t server_idle_timeout_ms; /* the same for its backend side, 0 = never (both default 0) */
	struct cfg_allow allow;       /* the pool's own allow:, else the one of defaults: (a whole block) */
	struct cfg_pos pos;          /* the pool's key in pools: */
};

enum cfg_log_level {
	CFG_LOG_ERROR = 3, /* values are syslog priorities */
	CFG_LOG_WARNING = 4,
	CFG_LOG_NOTICE = 5,
	CFG_LOG_INFO = 6,
	CFG_LOG_DEBUG = 7,
};

#define CFG_DEFAULT_ADMIN_SOCKET WARMPOOL_ADMIN_SOCKET /* lib/version.h: warmpoolctl's default too */

/* daemon.fd_store: keep idle connections in systemd's fd store across restarts. */
enum cfg_fd_store { CFG_FD_STORE_AUTO, CFG_FD_STORE_OFF };

struct cfg_daemon {
	int log_level;                /* enum cfg_log_level, default CFG_LOG_INFO */
	uint64_t shutdown_timeout_ms; /* SIGTERM drain limit, default 30000 */
	int fd_store;                 /* enum cfg_fd_store, default CFG_FD_STORE_AUTO (daemon/fdstore.h) */
	struct cfg_listen admin;      /* admin_socket: path NULL when disabled (false); mode 0600 */
	struct cfg_listen admin_ro;   /* admin_socket_readonly: `show` commands only; path NULL = none */
	struct cfg_backend metrics;   /* metrics_listen "host:port" (name NULL = none), resolved at load */
};

/* A list of finished, printable error lines. */
struct cfg_errors {
	char **msg;
	size_t n;
	size_t truncated; /* errors dropped beyond CFG_MAX_ERRORS */
};

struct wp_config {
	char *path; /* file it was loaded from (or the name given to cfg_load_buffer) */
	struct cfg_daemon daemon;
	struct cfg_pool *pools;
	size_t n_pools;
	/* Lines "file:line:col: key.path: warning: ..." about a valid config that
	 * is likely not what was meant (a handoff socket without the ACL its
	 * pool's listeners have); the caller prints or logs them. */
	struct cfg_errors warnings;
};

/*
 * Load and validate the file at `path`. On success returns 0 and sets *out
 * (free with cfg_free). On failure returns -1, *out stays NULL and `errs`
 * holds every problem found (free with cfg_errors_free). Resolves the host
 * of metrics_listen (getaddrinfo_a, within CFG_RESOLVE_TIMEOUT_MS, else the
 * error "name resolution of X timed out"; backend host names are not
 * resolved: is_name) and user and group names with blocking NSS lookups:
 * call at startup or
 * reload, never on a client's path. On success (*out)->warnings may hold
 * lines the caller should show.
 */
int cfg_load_file(const char *path, struct wp_config **out, struct cfg_errors *errs)
    __attribute__((warn_unused_result));

/*
 * --check-config --resolve: resolve every backend host name of `cfg` (those
 * with is_name) with the settings the daemon would use (dns.servers, family),
 * blocking, each within its dns.timeout x dns.tries. A name that does not
 * resolve is an error line "file:line:col: pools.P.backends[i]: db.x:5432:
 * does not resolve: <reason>". Returns 0 when all resolve, -1 otherwise.
 * Never called by the daemon (its lookups are asynchronous, daemon/dns.c).
 */
int cfg_resolve_names(const struct wp_config *cfg, struct cfg_errors *errs) __attribute__((warn_unused_result));

#define CFG_NONCE     "{nonce}"
#define CFG_NONCE_LEN 32 /* hex characters a {nonce} becomes: 128 random bits */
/* Occurrences of CFG_NONCE in b (not overlapping). */
size_t cfg_nonce_count(const unsigned char *b, size_t len);

/* The same for an in-memory document; `name` stands for the file in messages. */
int cfg_load_buffer(const char *name, const char *buf, size_t len, struct wp_config **out,
                    struct cfg_errors *errs) __attribute__((warn_unused_result));

void cfg_free(struct wp_config *cfg);          /* accepts NULL */
void cfg_errors_free(struct cfg_errors *errs); /* accepts a zeroed struct */

/*
 * What a reload does with a changed value (the key table's per-key column,
 * config/keys.c), from cheapest to dearest: nothing changed; applied to the
 * running pool; a new pool object takes over (sockets, backend addresses);
 * taken only at the next restart (daemon sockets).
 */
enum cfg_reload {
	CFG_RELOAD_SAME,
	CFG_RELOAD_IN_PLACE,
	CFG_RELOAD_REPLACE,
	CFG_RELOAD_RESTART,
};

/*
 * Compare two loaded pools key by key (every row of the key table that a
 * pool holds) and return the dearest reload class among the keys that
 * differ, CFG_RELOAD_SAME when none does. *health_changed (may be NULL) is
 * set when a health_check key differs: the checks must restart.
 */
enum cfg_reload cfg_pool_diff(const struct cfg_pool *old, const struct cfg_pool *cur, bool *health_changed);

/* The same for the daemon: section. */
enum cfg_reload cfg_daemon_diff(const struct cfg_daemon *old, const struct cfg_daemon *cur);

/*
 * Print the key table as JSON to `f` (warmpoold --dump-schema): the hard
 * limits of this header, then one object per key with its path, type, range,
 * default, where it may be written and what a reload does. Returns 0, or -1
 * when writing failed.
 */
int cfg_dump_schema(FILE *f) __attribute__((warn_unused_result));

/* "info" etc. for a level, or NULL. */
const char *cfg_log_level_name(int level);
/* "round_robin", "redis" etc., or NULL. */
const char *cfg_balance_name(enum cfg_balance b);
const char *cfg_check_type_name(enum cfg_check_type t);

#endif
