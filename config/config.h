/*
 * config/config.h — the warmpool configuration schema as plain C structs.
 *
 * The YAML file is loaded in three phases (config.c):
 *   1. YAML syntax: libyaml builds a document tree; nesting depth, file size
 *      and aliases are bounded/rejected here.
 *   2. Typed fields: each mapping is walked against a key table; every value
 *      is converted to its C type, defaults come from `defaults:` and then
 *      from the built-in values documented in config/warmpool.yaml.
 *   3. Cross-checks: unique pool names and socket paths, min_idle fitting
 *      max_connections, host names resolved with getaddrinfo().
 * Every error is collected (never only the first) as a finished line:
 *   "file:line:col: pools.redis.min_idle: expected an integer >= 0, got \"many\""
 *
 * The loader never logs and keeps no globals; the daemon prints the errors.
 */
#ifndef WARMPOOL_CONFIG_H
#define WARMPOOL_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "backoff.h"

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

/* Where a value came from in the file, for messages after loading. */
struct cfg_pos {
	unsigned line; /* 1-based */
	unsigned col;  /* 1-based */
};

struct cfg_listen {
	char *path;  /* absolute or relative Unix socket path (< sizeof sun_path) */
	mode_t mode; /* permission bits applied after bind, default 0660 */
	struct cfg_pos pos;
};

struct cfg_backend {
	char *name;                   /* as written: "host:port" or "[v6]:port" */
	struct sockaddr_storage addr; /* first getaddrinfo() result, resolved at load */
	socklen_t addrlen;
	struct cfg_pos pos;
};

struct cfg_pool {
	char *name; /* [A-Za-z0-9_.-]+, at most CFG_MAX_NAME bytes */
	struct cfg_listen *listen;
	size_t n_listen;
	struct cfg_backend *backends;
	size_t n_backends;
	uint32_t min_idle;           /* warm floor kept while idle (default 2) */
	uint32_t max_connections;    /* idle+active+connecting cap (default 64) */
	uint32_t max_clients;        /* clients relayed or waiting (default 4096) */
	uint64_t connect_timeout_ms; /* default 2000 */
	uint64_t queue_timeout_ms;   /* longest a client waits for a connection, default 5000 */
	struct wp_backoff backoff;   /* default {500ms, 30s, 1.6, 0.2} */
	struct cfg_pos pos;          /* the pool's key in pools: */
};

enum cfg_log_level {
	CFG_LOG_ERROR = 3, /* values are syslog priorities */
	CFG_LOG_WARNING = 4,
	CFG_LOG_NOTICE = 5,
	CFG_LOG_INFO = 6,
	CFG_LOG_DEBUG = 7,
};

struct cfg_daemon {
	int log_level;                /* enum cfg_log_level, default CFG_LOG_INFO */
	uint64_t shutdown_timeout_ms; /* SIGTERM drain limit, default 30000 */
};

struct wp_config {
	char *path; /* file it was loaded from (or the name given to cfg_load_buffer) */
	struct cfg_daemon daemon;
	struct cfg_pool *pools;
	size_t n_pools;
};

/* A list of finished, printable error lines. */
struct cfg_errors {
	char **msg;
	size_t n;
	size_t truncated; /* errors dropped beyond CFG_MAX_ERRORS */
};

/*
 * Load and validate the file at `path`. On success returns 0 and sets *out
 * (free with cfg_free). On failure returns -1, *out stays NULL and `errs`
 * holds every problem found (free with cfg_errors_free). Resolves host names
 * with blocking getaddrinfo(): call at startup or reload, never from the loop.
 */
int cfg_load_file(const char *path, struct wp_config **out, struct cfg_errors *errs)
    __attribute__((warn_unused_result));

/* The same for an in-memory document; `name` stands for the file in messages. */
int cfg_load_buffer(const char *name, const char *buf, size_t len, struct wp_config **out,
                    struct cfg_errors *errs) __attribute__((warn_unused_result));

void cfg_free(struct wp_config *cfg);          /* accepts NULL */
void cfg_errors_free(struct cfg_errors *errs); /* accepts a zeroed struct */

/* "info" etc. for a level, or NULL. */
const char *cfg_log_level_name(int level);

#endif
