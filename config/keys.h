/*
 * config/keys.h — the key table: every configuration key declared once
 * (internal to config/; the daemon sees only cfg_pool_diff, cfg_daemon_diff
 * and cfg_dump_schema in config.h).
 *
 * A row says what a key is (name, type, range, default), where it lives in
 * the structs of config.h (offsetof), where it may be written (daemon:,
 * defaults:, a pool) and what a reload does when its value changes (in
 * place, replace the pool, only at the next restart). From the table come:
 *   - the key lists each mapping is matched against (walk_map), in table
 *     order, so "unknown key, expected one of ..." lists them as declared;
 *   - the parsing of every plain value (integers, durations, numbers,
 *     booleans, names) with the row's range in its message;
 *   - the built-in defaults and the merge of `defaults:` into each pool;
 *   - reload's diff (diff.c) and `warmpoold --dump-schema` (keys.c), from
 *     which tests/integration/test_limits.py generates its cases.
 * Values with structure (socket paths, addresses, health-check bytes, allow:
 * blocks) have a row too, for the lists, the diff and the schema; their
 * parsers in config.c know their shape. Strings, paths, ALPN lists and
 * dns.servers of a pool (CFG_T_STRING, CFG_T_PATH, CFG_T_ALPN,
 * CFG_T_SERVERS) are owned copies that the merge, the diff and cfg_free
 * handle from the table alone.
 *
 * Paths are below the section: "min_idle", "health_check.rise",
 * "listen[].mode" (a field of each listen item), "log_level" (daemon:).
 */
#ifndef WARMPOOL_CONFIG_KEYS_H
#define WARMPOOL_CONFIG_KEYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

enum cfg_type {
	CFG_T_U32,          /* uint32_t, min..max */
	CFG_T_DURATION,     /* uint64_t ms, "250ms", "5s", min..max */
	CFG_T_DURATION_OR_0,/* the same, 0 (also a bare 0) means off; others min..max */
	CFG_T_SECONDS,      /* uint32_t whole seconds written as a duration, min..max s */
	CFG_T_NUMBER,       /* double, checked by wp_backoff_check (backoff only) */
	CFG_T_BOOL,         /* bool: true/yes/on, false/no/off */
	CFG_T_ENUM,         /* int (or an enum): one of names[], stored as values[i] or i */
	CFG_T_BYTES,        /* unsigned char * + size_t at len_off: escapes or hex */
	CFG_T_REGEX,        /* char * source of a POSIX ERE */
	CFG_T_TEXT,         /* char * (http path) */
	CFG_T_ALLOW,        /* struct cfg_allow: a whole block */
	CFG_T_IDS,          /* allow: uids/gids, ids min..max: part of the allow block */
	CFG_T_NAMES,        /* allow: users/groups, names resolved at load: part of the block */
	CFG_T_MODE,         /* mode_t, octal text, at most 0777 */
	CFG_T_SOCKET,       /* char * socket path (the path of a struct cfg_listen) */
	CFG_T_ADDRESS,      /* char * "host:port" (the name of a struct cfg_backend) */
	CFG_T_STRING,       /* char * text of 1..max bytes without NUL (server name, cipher lists) */
	CFG_T_PATH,         /* char * a file or directory path of 1..max bytes, read at load (tls) */
	CFG_T_ALPN,         /* unsigned char * + size_t at len_off: a list of 1..max names, in ALPN wire format */
	CFG_T_SERVERS,      /* char ** + size_t at len_off: dns.servers, 0..max IP literals "ip:port" */
	CFG_T_DNS,          /* struct cfg_dns: a backend's whole merged dns: block (its keys are the dns.* rows) */
};

/* Where a key may be written (bits). */
#define CFG_IN_DAEMON   1u /* daemon: */
#define CFG_IN_DEFAULTS 2u /* defaults: (then merged into every pool) */
#define CFG_IN_POOL     4u /* pools.NAME */

/* The struct a row's offset points into. */
enum cfg_item {
	CFG_ITEM_POOL,    /* struct cfg_pool */
	CFG_ITEM_DAEMON,  /* struct cfg_daemon */
	CFG_ITEM_LISTEN,  /* struct cfg_listen, one per pools.NAME.listen item */
	CFG_ITEM_BACKEND, /* struct cfg_backend, one per pools.NAME.backends item */
};

struct cfg_key {
	const char *path;       /* below the section, see above */
	enum cfg_type type;
	unsigned where;         /* CFG_IN_* */
	enum cfg_reload reload; /* what a changed value costs at reload */
	enum cfg_item item;
	size_t off, size;       /* the field: offsetof and sizeof in `item`'s struct */
	size_t len_off;         /* CFG_T_BYTES: offset of its size_t length */
	uint64_t min, max;      /* U32, durations (ms), SECONDS (s); STRING, PATH: bytes; ALPN: names */
	uint64_t def;           /* integer-like types: the built-in value */
	double def_num;         /* NUMBER: the built-in value */
	const char *def_text;   /* SOCKET, TEXT: the built-in value, or NULL */
	const char *const *names; /* ENUM: the words accepted (NULL entries skipped) */
	const int *values;      /* ENUM: the value stored for names[i], or NULL for i */
	size_t n_names;
	const char *what;       /* BOOL: the message's "expected ..." words */
	bool alias;             /* another spelling of the row before (send_hex): same field */
};

extern const struct cfg_key cfg_keys[];
extern const size_t cfg_n_keys;

#define CFG_MAX_KEYS  128 /* rows; struct level keeps a flag per row */
#define CFG_MAX_CHILD 32 /* keys of one mapping */

/* The row of `path` in section `where` (CFG_IN_DAEMON, or a pool's
 * CFG_IN_POOL); -1 when there is none. */
int cfg_key_find(unsigned where, const char *path);

/* The keys of one mapping: prefix "" is a pool (or daemon:), "backoff",
 * "health_check", "listen[]"..., in table order without repeats. */
struct cfg_keyset {
	const char *v[CFG_MAX_CHILD];
	size_t n;
	size_t listed;                      /* first one valid in defaults: (for the message) */
	char buf[CFG_MAX_CHILD * 32];
};
void cfg_key_children(unsigned where, const char *prefix, struct cfg_keyset *ks);
/* Index of `name` in ks, or -1. */
int cfg_keyset_find(const struct cfg_keyset *ks, const char *name);

/* The last component of a row's path ("rise" of "health_check.rise"). */
const char *cfg_key_name(const struct cfg_key *k);
/* true when the row's parent is `prefix` ("" = top of the section). */
bool cfg_key_under(const struct cfg_key *k, const char *prefix);
/* A value parsed by the table's generic parser (get_key in config.c). */
bool cfg_key_scalar(const struct cfg_key *k);
/* A pool field the loader allocates from the row alone (STRING, PATH, ALPN, SERVERS). */
bool cfg_key_owned(const struct cfg_key *k);

#endif
