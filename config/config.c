/*
 * config/config.c — load warmpool.yaml into struct wp_config (see config.h).
 *
 * Three phases over one in-memory copy of the file:
 *   1. Syntax (scan_events): libyaml's event parser walks the whole stream
 *      once before any tree exists. It finds syntax errors, anchors and
 *      aliases (rejected: a loaded alias is a shared node, even a cycle),
 *      nesting deeper than CFG_MAX_DEPTH (libyaml 0.2.5 has no limit of its
 *      own) and more than one document. Only a stream that passes is handed
 *      to yaml_parser_load() for the document tree.
 *   2. Typed fields (walk_root): every mapping is matched against a key
 *      table (walk_map), which reports unknown and duplicate keys. Values
 *      are converted to C types; a pool starts from the built-in values,
 *      then takes what `defaults:` gave, then its own keys (struct level),
 *      key by key, blocks (backoff, health_check, keepalive) included;
 *      `allow:` is the exception: it replaces as a whole block, and a listen
 *      item's own `allow:` replaces the pool's. The defaults level is applied
 *      to each pool anew, so every pool owns its copies of health-check
 *      bytes, path, compiled regex and allowed ids. User and group names in
 *      `allow:` are resolved as they are read (getpwnam_r, getgrnam_r).
 *   3. Cross-checks (check_sockets, resolve_backends): socket paths unique
 *      across pools, host names resolved within CFG_RESOLVE_TIMEOUT_MS for
 *      all of them (getaddrinfo_a). A valid config may still earn warnings
 *      (collect_warnings), handed over in cfg->warnings.
 * Relations inside one pool (min_idle <= max_connections, backoff max >=
 * initial, the keys a health-check type needs or excludes) are checked as
 * soon as the pool is merged, and blamed on the most specific value that
 * took part, so one bad `defaults:` value yields one error rather than one
 * per pool. A pool needs one backend that is not `backup: true`.
 *
 * Every error becomes one finished line "file:line:col: key.path: message"
 * (libyaml marks are 0-based; we add 1). All of them are collected, sorted
 * by position, and handed to the caller. Nothing here logs; the only state
 * kept between calls is the list of abandoned name lookups (see
 * resolve_backends).
 */
#include "config.h"

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

#define CLIENTS_LIMIT 1000000 /* max_clients upper bound */
#define SHOW_MAX      60      /* value bytes quoted in a message before "..." */
#define SHOW_BUF      256     /* SHOW_MAX bytes escaped as \xHH, plus quotes and "..." */
#define PATH_BUF      512     /* "pools.<name>.listen[15].mode" with an escaped name */
#define SUN_PATH_MAX  (sizeof(((struct sockaddr_un *)0)->sun_path) - 1)
#define NSS_BUF_MAX   (1024 * 1024) /* getpwnam_r/getgrnam_r buffer, grown on ERANGE up to this */

#define MS_S 1000ULL
#define MS_M (60 * MS_S)
#define MS_H (60 * MS_M)
#define MS_D (24 * MS_H)

/* One collected error, kept with its position so the list can be sorted. */
struct err_item {
	unsigned line, col; /* 0 when the error concerns the whole file */
	size_t seq;         /* collection order, keeps the sort stable */
	char *msg;          /* the finished line */
};

/* A socket path or backend remembered for the phase-3 checks. */
struct ref {
	char *label;      /* key path for messages, e.g. "pools.redis.listen[1]" */
	const char *text; /* the path or "host:port", owned by the config */
	struct cfg_pos pos;
	size_t seq;             /* document order */
	struct cfg_backend *be; /* backends only: where the address goes */
	const char *pool;       /* sockets only: pool name for "first used by" */
};

struct refs {
	struct ref *v;
	size_t n, cap;
};

/* Loader state for one cfg_load_* call. */
struct ld {
	const char *file;
	const char *buf; /* the document text, for byte offsets and tab detection */
	size_t len;
	struct err_item *errs;
	size_t n_errs, cap_errs;
	size_t truncated;
	bool oom;
	struct refs sockets;
	struct refs backends;
	struct wp_config *cfg;
};

/* Values given at one level: `defaults:` or one pool. */
enum field {
	F_MIN_IDLE,
	F_MAX_CONN,
	F_MAX_CLIENTS,
	F_CONNECT_TO,
	F_QUEUE_TO,
	F_BO_INITIAL,
	F_BO_MAX,
	F_BO_MULT,
	F_BO_JITTER,
	F_BALANCE,
	F_MAX_CONNECTING,
	F_FAIL_FAST,
	F_USER_TO,
	F_LIFETIME,
	F_IDLE_TO,
	F_MAX_IDLE,
	F_CLIENT_IDLE,
	F_SERVER_IDLE,
	F_HC_TYPE,
	F_HC_SEND,   /* send or send_hex */
	F_HC_EXPECT, /* expect, expect_hex or expect_regex */
	F_HC_PATH,
	F_HC_INTERVAL,
	F_HC_TIMEOUT,
	F_HC_FAST,
	F_HC_DOWN,
	F_HC_RISE,
	F_HC_FALL,
	F_KA_ENABLED,
	F_KA_IDLE,
	F_KA_INTERVAL,
	F_KA_COUNT,
	F_ALLOW, /* the whole allow: block */
	F_N,
};

struct level {
	uint32_t min_idle, max_connections, max_clients;
	uint64_t connect_timeout_ms, queue_timeout_ms;
	struct wp_backoff backoff;
	enum cfg_balance balance;
	uint32_t max_connecting;
	bool fail_fast;
	uint64_t tcp_user_timeout_ms, max_lifetime_ms, idle_timeout_ms, max_idle_time_ms;
	uint64_t client_idle_timeout_ms, server_idle_timeout_ms;
	struct cfg_health health; /* send, expect and path owned here; expect_re unused */
	char *expect_regex;       /* source of `expect_regex`, checked to compile */
	struct cfg_keepalive keepalive;
	struct cfg_allow allow;       /* uids and gids owned here */
	uint64_t set;                 /* 1 << F_*: a valid value was given here */
	const yaml_node_t *node[F_N]; /* where each value was written */
	const char *key[F_N];         /* its key path below the level, for messages */
};

#define BIT(f) (1ULL << (f))

/* Keys of a pool; `defaults:` accepts the same minus the first three. */
enum pool_key {
	K_LISTEN,
	K_BACKENDS,
	K_HANDOFF,
	K_REUSE,
	K_MIN_IDLE,
	K_MAX_CONN,
	K_MAX_CLIENTS,
	K_CONNECT_TO,
	K_QUEUE_TO,
	K_BACKOFF,
	K_BALANCE,
	K_MAX_CONNECTING,
	K_FAIL_FAST,
	K_HEALTH,
	K_KEEPALIVE,
	K_USER_TO,
	K_LIFETIME,
	K_IDLE_TO,
	K_MAX_IDLE,
	K_CLIENT_IDLE,
	K_SERVER_IDLE,
	K_ALLOW,
	K_POOL_N,
};
static const char *const pool_keys[K_POOL_N] = {
    "listen",          "backends",      "handoff",   "reuse",            "min_idle",         "max_connections",  "max_clients",
    "connect_timeout", "queue_timeout", "backoff",   "balance",          "max_connecting",
    "fail_fast",       "health_check",  "keepalive", "tcp_user_timeout", "max_lifetime",
    "idle_timeout",    "max_idle_time", "client_idle_timeout", "server_idle_timeout", "allow",
};

enum backoff_key { B_INITIAL, B_MAX, B_MULT, B_JITTER, B_N };
static const char *const backoff_keys[B_N] = {"initial", "max", "multiplier", "jitter"};

enum health_key {
	H_TYPE,
	H_SEND,
	H_SEND_HEX,
	H_EXPECT,
	H_EXPECT_HEX,
	H_EXPECT_RE,
	H_PATH,
	H_INTERVAL,
	H_TIMEOUT,
	H_FAST,
	H_DOWN,
	H_RISE,
	H_FALL,
	H_N,
};
static const char *const health_keys[H_N] = {
    "type",     "send",    "send_hex",      "expect",        "expect_hex", "expect_regex", "path",
    "interval", "timeout", "fast_interval", "down_interval", "rise",       "fall",
};
/* The same below the level, as key paths in messages. */
static const char *const health_paths[H_N] = {
    "health_check.type",          "health_check.send",          "health_check.send_hex",
    "health_check.expect",        "health_check.expect_hex",    "health_check.expect_regex",
    "health_check.path",          "health_check.interval",      "health_check.timeout",
    "health_check.fast_interval", "health_check.down_interval", "health_check.rise",
    "health_check.fall",
};

enum keepalive_key { KA_IDLE, KA_INTERVAL, KA_COUNT, KA_N };
static const char *const keepalive_keys[KA_N] = {"idle", "interval", "count"};
static const char *const keepalive_paths[KA_N] = {"keepalive.idle", "keepalive.interval", "keepalive.count"};

enum backend_key { BE_ADDRESS, BE_WEIGHT, BE_BACKUP, BE_N };
static const char *const backend_keys[BE_N] = {"address", "weight", "backup"};

enum top_key { T_DAEMON, T_DEFAULTS, T_POOLS, T_N };
static const char *const top_keys[T_N] = {"daemon", "defaults", "pools"};

enum daemon_key { D_LOG_LEVEL, D_SHUTDOWN_TO, D_ADMIN, D_ADMIN_MODE, D_ADMIN_RO, D_METRICS, D_N };
static const char *const daemon_keys[D_N] = {"log_level",          "shutdown_timeout",      "admin_socket",
                                             "admin_socket_mode",  "admin_socket_readonly", "metrics_listen"};

enum listen_key { L_PATH, L_MODE, L_ALLOW, L_N };
static const char *const listen_keys[L_N] = {"path", "mode", "allow"};

enum allow_key { A_USERS, A_GROUPS, A_UIDS, A_GIDS, A_N };
static const char *const allow_keys[A_N] = {"users", "groups", "uids", "gids"};

/* Names as written in YAML, indexed by the enums of config.h. */
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
};
#define N_BALANCE (sizeof balance_names / sizeof balance_names[0])
#define N_CHECK   (sizeof check_names / sizeof check_names[0])

static const struct {
	const char *name;
	int level;
} log_levels[] = {
    {"debug", CFG_LOG_DEBUG},     {"info", CFG_LOG_INFO},   {"notice", CFG_LOG_NOTICE},
    {"warning", CFG_LOG_WARNING}, {"error", CFG_LOG_ERROR},
};

static const struct wp_backoff builtin_backoff = {
    .initial_ms = 500,
    .max_ms = 30 * MS_S,
    .multiplier = 1.6,
    .jitter = 0.2,
};

static void builtin_pool(struct cfg_pool *p)
{
	p->min_idle = 2;
	p->max_connections = 64;
	p->max_clients = 4096;
	p->connect_timeout_ms = 2 * MS_S;
	p->queue_timeout_ms = 5 * MS_S;
	p->backoff = builtin_backoff;
	p->balance = CFG_BALANCE_ROUND_ROBIN;
	p->max_connecting = 8;
	p->fail_fast = false;
	p->health = (struct cfg_health){
	    .type = CFG_CHECK_NONE,
	    .interval_ms = 2 * MS_S,
	    .timeout_ms = 1 * MS_S,
	    .fast_interval_ms = 500,
	    .down_interval_ms = 2 * MS_S,
	    .rise = 2,
	    .fall = 3,
	};
	p->keepalive = (struct cfg_keepalive){.enabled = true, .idle_s = 30, .interval_s = 10, .count = 3};
	p->tcp_user_timeout_ms = 30 * MS_S;
	p->max_lifetime_ms = 0;
	p->idle_timeout_ms = 10 * MS_M;
	p->max_idle_time_ms = 0;
}

/* ------------------------------------------------------------------ */
/* Error collection                                                    */

static struct cfg_pos mark_pos(yaml_mark_t m)
{
	struct cfg_pos p = {
	    .line = m.line >= UINT32_MAX ? UINT32_MAX : (unsigned)m.line + 1,
	    .col = m.column >= UINT32_MAX ? UINT32_MAX : (unsigned)m.column + 1,
	};
	return p;
}

static struct cfg_pos node_pos(const yaml_node_t *n)
{
	return mark_pos(n->start_mark);
}

static void add_errv(struct ld *ld, struct cfg_pos pos, const char *path, const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0)));

static void add_errv(struct ld *ld, struct cfg_pos pos, const char *path, const char *fmt, va_list ap)
{
	char *body = NULL, *line = NULL;
	int r;

	if (ld->n_errs >= CFG_MAX_ERRORS) {
		ld->truncated++;
		return;
	}
	if (vasprintf(&body, fmt, ap) < 0) {
		ld->oom = true;
		return;
	}
	if (pos.line)
		r = asprintf(&line, "%s:%u:%u: %s%s%s", ld->file, pos.line, pos.col, path ? path : "",
		             path && *path ? ": " : "", body);
	else
		r = asprintf(&line, "%s: %s%s%s", ld->file, path ? path : "", path && *path ? ": " : "",
		             body);
	free(body);
	if (r < 0) {
		ld->oom = true;
		return;
	}
	if (ld->n_errs == ld->cap_errs) {
		size_t cap = ld->cap_errs ? ld->cap_errs * 2 : 8;
		struct err_item *v = realloc(ld->errs, cap * sizeof *v);
		if (!v) {
			free(line);
			ld->oom = true;
			return;
		}
		ld->errs = v;
		ld->cap_errs = cap;
	}
	ld->errs[ld->n_errs] = (struct err_item){pos.line, pos.col, ld->n_errs, line};
	ld->n_errs++;
}

static void add_err(struct ld *ld, struct cfg_pos pos, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void add_err(struct ld *ld, struct cfg_pos pos, const char *path, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	add_errv(ld, pos, path, fmt, ap);
	va_end(ap);
}

static bool failed(const struct ld *ld)
{
	return ld->n_errs || ld->truncated || ld->oom;
}

/*
 * Quote `len` bytes for a message: printable text as is (UTF-8 included,
 * libyaml has validated it), '"' and '\' escaped, control bytes as \n, \t
 * or \xHH, at most SHOW_MAX bytes followed by "...". `out` has SHOW_BUF bytes.
 */
static void show(const char *s, size_t len, bool quotes, char *out)
{
	size_t o = 0, n = len;

	if (n > SHOW_MAX) {
		n = SHOW_MAX;
		while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
			n--; /* do not cut a UTF-8 sequence */
	}
	if (quotes)
		out[o++] = '"';
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '"' || c == '\\') {
			out[o++] = '\\';
			out[o++] = (char)c;
		} else if (c == '\n') {
			out[o++] = '\\';
			out[o++] = 'n';
		} else if (c == '\t') {
			out[o++] = '\\';
			out[o++] = 't';
		} else if (c < 0x20 || c == 0x7f) {
			o += (size_t)snprintf(out + o, SHOW_BUF - o, "\\x%02x", c);
		} else {
			out[o++] = (char)c;
		}
	}
	if (quotes)
		out[o++] = '"';
	if (n < len) {
		memcpy(out + o, "...", 3);
		o += 3;
	}
	out[o] = '\0';
}

static const char *sval(const yaml_node_t *n)
{
	return (const char *)n->data.scalar.value;
}

static size_t slen(const yaml_node_t *n)
{
	return n->data.scalar.length;
}

/* What a node is, for "got ...": the quoted scalar, or its kind. */
static const char *desc(const yaml_node_t *n, char *out)
{
	switch (n->type) {
	case YAML_SCALAR_NODE:
		if (slen(n) == 0 && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE)
			return "an empty value";
		show(sval(n), slen(n), true, out);
		return out;
	case YAML_MAPPING_NODE:
		return n->data.mapping.pairs.top == n->data.mapping.pairs.start ? "an empty mapping"
		                                                                : "a mapping";
	case YAML_SEQUENCE_NODE:
		return n->data.sequence.items.top == n->data.sequence.items.start ? "an empty list"
		                                                                  : "a list";
	default:
		return "nothing";
	}
}

/* "expected <what>, got <node>" at the node. */
static void bad_value(struct ld *ld, const yaml_node_t *n, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void bad_value(struct ld *ld, const yaml_node_t *n, const char *path, const char *fmt, ...)
{
	char what[PATH_BUF], got[SHOW_BUF];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	add_err(ld, node_pos(n), path, "expected %s, got %s", what, desc(n, got));
}

/* ------------------------------------------------------------------ */
/* Phase 1: syntax                                                     */

/* Byte offset of a libyaml mark (whose column counts characters). */
static size_t mark_offset(const struct ld *ld, yaml_mark_t m)
{
	size_t off = 0, line = 0, col = 0;

	while (off < ld->len && line < m.line) {
		if (ld->buf[off++] == '\n')
			line++;
	}
	while (off < ld->len && col < m.column && ld->buf[off] != '\n') {
		off++;
		while (off < ld->len && ((unsigned char)ld->buf[off] & 0xc0) == 0x80)
			off++;
		col++;
	}
	return off;
}

/* The position of a byte offset, counted the way libyaml counts. */
static struct cfg_pos offset_pos(const struct ld *ld, size_t offset)
{
	struct cfg_pos p = {1, 1};

	for (size_t i = 0; i < offset && i < ld->len; i++) {
		unsigned char c = (unsigned char)ld->buf[i];
		if (c == '\n') {
			p.line++;
			p.col = 1;
		} else if ((c & 0xc0) != 0x80) {
			p.col++;
		}
	}
	return p;
}

static void syntax_error(struct ld *ld, const yaml_parser_t *p)
{
	struct cfg_pos pos;
	const char *problem = p->problem ? p->problem : "unknown error";

	if (p->error == YAML_MEMORY_ERROR) {
		ld->oom = true;
		return;
	}
	if (p->error == YAML_READER_ERROR) {
		pos = offset_pos(ld, p->problem_offset);
		if (p->problem_value != -1)
			add_err(ld, pos, NULL, "syntax error: %s (byte 0x%02x)", problem,
			        p->problem_value & 0xff);
		else
			add_err(ld, pos, NULL, "syntax error: %s", problem);
		return;
	}
	pos = mark_pos(p->problem_mark);
	{
		size_t off = mark_offset(ld, p->problem_mark);
		if (off < ld->len && ld->buf[off] == '\t') {
			add_err(ld, pos, NULL, "syntax error: tabs are not allowed for indentation");
			return;
		}
	}
	if (p->context) {
		struct cfg_pos c = mark_pos(p->context_mark);
		add_err(ld, pos, NULL, "syntax error: %s (%s at line %u, column %u)", problem, p->context,
		        c.line, c.col);
	} else {
		add_err(ld, pos, NULL, "syntax error: %s", problem);
	}
}

static void anchor_error(struct ld *ld, yaml_mark_t m, char sigil, const yaml_char_t *name)
{
	char shown[SHOW_BUF];
	char text[SHOW_MAX + 2];

	snprintf(text, sizeof text, "%c%s", sigil, (const char *)name);
	show(text, strlen(text), true, shown);
	add_err(ld, mark_pos(m), NULL, "anchors and aliases are not supported, got %s", shown);
}

/*
 * Walk the event stream once. Returns true when the stream may be loaded
 * as a tree: one document, no anchors or aliases, bounded depth.
 */
static bool scan_events(struct ld *ld)
{
	yaml_parser_t p;
	yaml_event_t ev;
	size_t before = ld->n_errs + ld->truncated;
	int depth = 0, docs = 0;
	bool done = false, ok = true;

	if (!yaml_parser_initialize(&p)) {
		ld->oom = true;
		return false;
	}
	yaml_parser_set_input_string(&p, (const unsigned char *)ld->buf, ld->len);
	while (!done) {
		if (!yaml_parser_parse(&p, &ev)) {
			syntax_error(ld, &p);
			ok = false;
			break;
		}
		switch (ev.type) {
		case YAML_STREAM_END_EVENT:
			done = true;
			break;
		case YAML_DOCUMENT_START_EVENT:
			if (++docs > 1) {
				add_err(ld, mark_pos(ev.start_mark), NULL,
				        "multiple documents are not supported");
				done = true;
			}
			break;
		case YAML_ALIAS_EVENT:
			anchor_error(ld, ev.start_mark, '*', ev.data.alias.anchor);
			break;
		case YAML_SCALAR_EVENT:
			if (ev.data.scalar.anchor)
				anchor_error(ld, ev.start_mark, '&', ev.data.scalar.anchor);
			break;
		case YAML_SEQUENCE_START_EVENT:
		case YAML_MAPPING_START_EVENT: {
			const yaml_char_t *anchor = ev.type == YAML_SEQUENCE_START_EVENT
			                                ? ev.data.sequence_start.anchor
			                                : ev.data.mapping_start.anchor;
			if (anchor)
				anchor_error(ld, ev.start_mark, '&', anchor);
			if (++depth > CFG_MAX_DEPTH) {
				add_err(ld, mark_pos(ev.start_mark), NULL,
				        "nesting deeper than %d levels is not supported", CFG_MAX_DEPTH);
				done = true;
			}
			break;
		}
		case YAML_SEQUENCE_END_EVENT:
		case YAML_MAPPING_END_EVENT:
			depth--;
			break;
		default:
			break;
		}
		yaml_event_delete(&ev);
	}
	yaml_parser_delete(&p);
	if (ok && docs == 0) {
		add_err(ld, (struct cfg_pos){1, 1}, NULL,
		        "expected a mapping with a pools: key, got an empty document");
	}
	return ok && docs == 1 && ld->n_errs + ld->truncated == before && !ld->oom;
}

/* ------------------------------------------------------------------ */
/* Phase 2: typed fields                                               */

static yaml_node_t *node_at(yaml_document_t *doc, int index)
{
	return yaml_document_get_node(doc, index);
}

static bool is_null(const yaml_node_t *n)
{
	if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return false;
	return slen(n) == 0 || strcmp(sval(n), "~") == 0 || strcmp(sval(n), "null") == 0 ||
	       strcmp(sval(n), "Null") == 0 || strcmp(sval(n), "NULL") == 0;
}

/* Key paths are bounded; a path that does not fit ends in "...". */
static void path_fit(char *out, int n)
{
	if (n < 0 || n >= PATH_BUF)
		memcpy(out + PATH_BUF - 4, "...", 4);
}

static void path_key(char *out, const char *parent, const char *key, size_t keylen)
{
	char shown[SHOW_BUF];

	show(key, keylen, false, shown);
	if (parent && *parent)
		path_fit(out, snprintf(out, PATH_BUF, "%s.%s", parent, shown));
	else
		path_fit(out, snprintf(out, PATH_BUF, "%s", shown));
}

static void path_index(char *out, const char *parent, size_t i)
{
	path_fit(out, snprintf(out, PATH_BUF, "%s[%zu]", parent, i));
}

/*
 * Match the keys of mapping `map` against keys[0..nkeys). vals[i]/knodes[i]
 * receive the value and key node of keys[i], or NULL. Unknown keys, keys
 * that are not scalars and repeated keys are reported; the message lists
 * keys[listed..nkeys) as the allowed ones.
 */
static void walk_map(struct ld *ld, yaml_document_t *doc, const yaml_node_t *map, const char *path,
                     const char *const *keys, size_t nkeys, size_t listed, yaml_node_t **vals,
                     yaml_node_t **knodes)
{
	char kpath[PATH_BUF], got[SHOW_BUF];

	for (size_t i = 0; i < nkeys; i++)
		vals[i] = knodes[i] = NULL;
	if (map->type != YAML_MAPPING_NODE)
		return;
	for (yaml_node_pair_t *pair = map->data.mapping.pairs.start; pair < map->data.mapping.pairs.top;
	     pair++) {
		yaml_node_t *k = node_at(doc, pair->key), *v = node_at(doc, pair->value);
		size_t i;

		if (!k || !v)
			continue;
		if (k->type != YAML_SCALAR_NODE) {
			add_err(ld, node_pos(k), path, "expected a key name, got %s", desc(k, got));
			continue;
		}
		path_key(kpath, path, sval(k), slen(k));
		for (i = 0; i < nkeys; i++) {
			if (strlen(keys[i]) == slen(k) && memcmp(keys[i], sval(k), slen(k)) == 0)
				break;
		}
		if (i == nkeys) {
			char list[PATH_BUF];
			size_t o = 0;
			for (size_t j = listed; j < nkeys && o < sizeof list; j++)
				o += (size_t)snprintf(list + o, sizeof list - o, "%s%s",
				                      j > listed ? ", " : "", keys[j]);
			add_err(ld, node_pos(k), kpath, "unknown key, expected one of %s", list);
			continue;
		}
		if (vals[i]) {
			add_err(ld, node_pos(k), kpath, "duplicate key, first given at line %u",
			        node_pos(knodes[i]).line);
			continue;
		}
		vals[i] = v;
		knodes[i] = k;
	}
}

/* A mapping section (daemon:, defaults:, backoff:); an empty value counts as {}. */
static bool want_map(struct ld *ld, const yaml_node_t *n, const char *path, const char *what)
{
	if (n->type == YAML_MAPPING_NODE)
		return true;
	if (!is_null(n))
		bad_value(ld, n, path, "%s", what);
	return false;
}

/* A scalar as text without NUL bytes; reports `what` otherwise. */
static bool want_text(struct ld *ld, const yaml_node_t *n, const char *path, const char *what)
{
	if (n->type != YAML_SCALAR_NODE) {
		bad_value(ld, n, path, "%s", what);
		return false;
	}
	if (strlen(sval(n)) != slen(n)) {
		bad_value(ld, n, path, "%s without NUL bytes", what);
		return false;
	}
	return true;
}

/* Decimal digits only: no sign, no spaces, no 0x. Saturates instead of wrapping. */
static bool parse_uint(const char *s, uint64_t *out)
{
	uint64_t v = 0;

	if (*s == '\0')
		return false;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return false;
		if (v > (UINT64_MAX - 9) / 10)
			v = UINT64_MAX;
		else
			v = v * 10 + (uint64_t)(*s - '0');
	}
	*out = v;
	return true;
}

static bool get_u32(struct ld *ld, const yaml_node_t *n, const char *path, uint32_t lo, uint32_t hi,
                    uint32_t *out)
{
	uint64_t v;

	if (n->type != YAML_SCALAR_NODE || strlen(sval(n)) != slen(n) || !parse_uint(sval(n), &v) || v < lo) {
		bad_value(ld, n, path, "an integer >= %u", lo);
		return false;
	}
	if (v > hi) {
		bad_value(ld, n, path, "an integer <= %u", hi);
		return false;
	}
	*out = (uint32_t)v;
	return true;
}

/*
 * "250ms", "5s", "1.5m", "2h" to milliseconds. Returns 0, -EINVAL for a bad
 * form (no unit, sign, spaces), -EDOM for a fraction of a millisecond and
 * -ERANGE when it does not fit 64 bits.
 */
static int parse_duration(const char *s, uint64_t *ms)
{
	uint64_t whole = 0, frac = 0, scale = 1, unit;
	bool big = false;
	const char *p = s;

	if (*p < '0' || *p > '9')
		return -EINVAL;
	for (; *p >= '0' && *p <= '9'; p++) {
		if (whole > (UINT64_MAX - 9) / 10)
			big = true;
		else
			whole = whole * 10 + (uint64_t)(*p - '0');
	}
	if (*p == '.') {
		p++;
		if (*p < '0' || *p > '9')
			return -EINVAL;
		for (; *p >= '0' && *p <= '9'; p++) {
			if (scale >= 1000000000ULL) { /* beyond 9 digits only zeros are exact */
				if (*p != '0')
					return -EDOM;
				continue;
			}
			frac = frac * 10 + (uint64_t)(*p - '0');
			scale *= 10;
		}
	}
	if (strcmp(p, "ms") == 0)
		unit = 1;
	else if (strcmp(p, "s") == 0)
		unit = MS_S;
	else if (strcmp(p, "m") == 0)
		unit = MS_M;
	else if (strcmp(p, "h") == 0)
		unit = MS_H;
	else
		return -EINVAL;
	if ((frac * unit) % scale != 0) /* frac < 1e9, unit <= 3.6e6: no overflow */
		return -EDOM;
	if (big || whole > (UINT64_MAX - frac * unit / scale) / unit)
		return -ERANGE;
	*ms = whole * unit + frac * unit / scale;
	return 0;
}

/* Milliseconds in the largest unit that divides them evenly. */
static const char *fmt_ms(uint64_t ms, char *buf, size_t sz)
{
	if (ms == 0)
		snprintf(buf, sz, "0s");
	else if (ms % MS_H == 0)
		snprintf(buf, sz, "%lluh", (unsigned long long)(ms / MS_H));
	else if (ms % MS_M == 0)
		snprintf(buf, sz, "%llum", (unsigned long long)(ms / MS_M));
	else if (ms % MS_S == 0)
		snprintf(buf, sz, "%llus", (unsigned long long)(ms / MS_S));
	else
		snprintf(buf, sz, "%llums", (unsigned long long)ms);
	return buf;
}

/* The duration in `n` (form errors reported); one too large for 64 bits reads as UINT64_MAX. */
static bool read_duration(struct ld *ld, const yaml_node_t *n, const char *path, uint64_t *out)
{
	int r;

	if (n->type != YAML_SCALAR_NODE || strlen(sval(n)) != slen(n)) {
		bad_value(ld, n, path, "a duration with a unit (ms, s, m, h)");
		return false;
	}
	r = parse_duration(sval(n), out);
	if (r == -EINVAL) {
		bad_value(ld, n, path, "a duration with a unit (ms, s, m, h)");
		return false;
	}
	if (r == -EDOM) {
		bad_value(ld, n, path, "a duration in whole milliseconds");
		return false;
	}
	if (r == -ERANGE)
		*out = UINT64_MAX;
	return true;
}

static bool get_duration(struct ld *ld, const yaml_node_t *n, const char *path, uint64_t lo, uint64_t hi,
                         uint64_t *out)
{
	char a[32], b[32];
	uint64_t v = 0;

	if (!read_duration(ld, n, path, &v))
		return false;
	if (v < lo || v > hi) {
		bad_value(ld, n, path, "a duration between %s and %s", fmt_ms(lo, a, sizeof a),
		          fmt_ms(hi, b, sizeof b));
		return false;
	}
	*out = v;
	return true;
}

/* A duration where 0 means "off": a bare `0` is accepted too, and a value
 * other than 0 must lie in lo..hi. */
static bool get_duration_or_0(struct ld *ld, const yaml_node_t *n, const char *path, uint64_t lo, uint64_t hi,
                              uint64_t *out)
{
	char a[32], b[32];
	uint64_t v = 0;

	if (n->type == YAML_SCALAR_NODE && slen(n) == 1 && sval(n)[0] == '0') {
		*out = 0;
		return true;
	}
	if (!read_duration(ld, n, path, &v))
		return false;
	if (v > hi || (v != 0 && v < lo)) {
		if (lo == 0)
			bad_value(ld, n, path, "a duration between 0s and %s", fmt_ms(hi, b, sizeof b));
		else
			bad_value(ld, n, path, "0 or a duration between %s and %s", fmt_ms(lo, a, sizeof a),
			          fmt_ms(hi, b, sizeof b));
		return false;
	}
	*out = v;
	return true;
}

/* TCP keepalive times: the kernel takes whole seconds up to 32767. */
static bool get_seconds(struct ld *ld, const yaml_node_t *n, const char *path, uint32_t *out)
{
	uint64_t v = 0;

	if (!read_duration(ld, n, path, &v))
		return false;
	if (v % MS_S != 0 || v < MS_S || v > 32767 * MS_S) {
		bad_value(ld, n, path, "a whole number of seconds from 1s to 32767s");
		return false;
	}
	*out = (uint32_t)(v / MS_S);
	return true;
}

/* true/yes/on or false/no/off, lower case; `what` names what else would do. */
static bool get_bool(struct ld *ld, const yaml_node_t *n, const char *path, const char *what, bool *out)
{
	static const char *const yes[] = {"true", "yes", "on"}, *const no[] = {"false", "no", "off"};

	if (n->type == YAML_SCALAR_NODE && strlen(sval(n)) == slen(n)) {
		for (size_t i = 0; i < 3; i++) {
			if (strcmp(sval(n), yes[i]) == 0 || strcmp(sval(n), no[i]) == 0) {
				*out = strcmp(sval(n), yes[i]) == 0;
				return true;
			}
		}
	}
	bad_value(ld, n, path, "%s", what);
	return false;
}

/* One of names[0..count) (NULL entries skipped); its index in *out. */
static bool get_enum(struct ld *ld, const yaml_node_t *n, const char *path, const char *const *names,
                     size_t count, int *out)
{
	char list[PATH_BUF];
	size_t o = 0;

	if (n->type == YAML_SCALAR_NODE && strlen(sval(n)) == slen(n)) {
		for (size_t i = 0; i < count; i++) {
			if (names[i] && strcmp(sval(n), names[i]) == 0) {
				*out = (int)i;
				return true;
			}
		}
	}
	for (size_t i = 0; i < count && o < sizeof list; i++) {
		if (names[i])
			o += (size_t)snprintf(list + o, sizeof list - o, "%s%s", o ? ", " : "", names[i]);
	}
	bad_value(ld, n, path, "one of %s", list);
	return false;
}

/* A copy of len bytes that is never NULL, even for len 0. */
static unsigned char *dup_bytes(struct ld *ld, const void *src, size_t len)
{
	unsigned char *p = malloc(len ? len : 1);

	if (!p) {
		ld->oom = true;
		return NULL;
	}
	if (len)
		memcpy(p, src, len);
	return p;
}

/*
 * A health-check byte string written with the escapes of lib/escape.h
 * (\r \n \t \0 \\ \xHH; any other backslash stays as written). NUL bytes
 * already in the scalar (a YAML "\0") are kept: each NUL-separated part is
 * decoded on its own.
 */
static bool get_escaped(struct ld *ld, const yaml_node_t *n, const char *path, bool nonempty,
                        unsigned char **out, size_t *len)
{
	unsigned char buf[CFG_MAX_CHECK_BYTES];
	size_t o = 0;

	if (n->type != YAML_SCALAR_NODE) {
		bad_value(ld, n, path, "a string");
		return false;
	}
	for (size_t off = 0; off <= slen(n);) {
		const char *part = sval(n) + off;
		ssize_t r = wp_unescape(part, buf + o, sizeof buf - o);

		if (r < 0 || (off + strlen(part) < slen(n) && o + (size_t)r == sizeof buf)) {
			bad_value(ld, n, path, "at most %d bytes once escapes are decoded",
			          CFG_MAX_CHECK_BYTES);
			return false;
		}
		o += (size_t)r;
		off += strlen(part) + 1;
		if (off <= slen(n))
			buf[o++] = '\0';
	}
	if (nonempty && o == 0) {
		bad_value(ld, n, path, "at least one byte");
		return false;
	}
	*out = dup_bytes(ld, buf, o);
	*len = o;
	return *out != NULL;
}

/* Pairs of hex digits, optionally separated by spaces: "50 49 4e 47 0d 0a". */
static bool get_hex(struct ld *ld, const yaml_node_t *n, const char *path, bool nonempty, unsigned char **out,
                    size_t *len)
{
	unsigned char buf[CFG_MAX_CHECK_BYTES];
	const char *s;
	size_t o = 0;

	if (n->type != YAML_SCALAR_NODE || strlen(sval(n)) != slen(n))
		goto bad;
	for (s = sval(n); *s;) {
		int hi, lo;
		if (*s == ' ') {
			s++;
			continue;
		}
		if ((hi = wp_hexval(s[0])) < 0 || (lo = wp_hexval(s[1])) < 0)
			goto bad;
		if (o == sizeof buf) {
			bad_value(ld, n, path, "at most %d bytes", CFG_MAX_CHECK_BYTES);
			return false;
		}
		buf[o++] = (unsigned char)(hi << 4 | lo);
		s += 2;
	}
	if (nonempty && o == 0) {
		bad_value(ld, n, path, "at least one byte");
		return false;
	}
	*out = dup_bytes(ld, buf, o);
	*len = o;
	return *out != NULL;
bad:
	bad_value(ld, n, path, "pairs of hex digits, optionally separated by spaces, like \"0d 0a\"");
	return false;
}

/* A new regex_t for `src` (already checked by get_regex), or NULL. */
static regex_t *compile_regex(const char *src)
{
	regex_t *re = malloc(sizeof *re);

	if (re && regcomp(re, src, REG_EXTENDED) != 0) {
		free(re);
		re = NULL;
	}
	return re;
}

static void free_regex(regex_t *re)
{
	if (re) {
		regfree(re);
		free(re);
	}
}

/*
 * glibc's regcomp expands bounded repeats: `a{1,32767}` takes seconds and
 * gigabytes, nested ones exhaust memory. Before compiling, the largest
 * expansion is bounded: each {m,n} bound times the bounds of the groups
 * around it must stay within REGEX_MAX_REPEAT. Bracket expressions and
 * escaped characters are skipped (their braces are literal).
 */
#define REGEX_MAX_REPEAT 1000

/* The bound of the repeat starting at s[i] ('{'), or 0 when there is none. */
static unsigned long repeat_bound(const char *s, size_t i, size_t *end)
{
	unsigned long m = 0, n;
	size_t k = i + 1;
	if (s[i] != '{' || s[k] < '0' || s[k] > '9')
		return 0;
	for (; s[k] >= '0' && s[k] <= '9'; k++)
		m = m > 100000 ? m : m * 10 + (unsigned long)(s[k] - '0');
	n = m;
	if (s[k] == ',') {
		n = s[k + 1] >= '0' && s[k + 1] <= '9' ? 0 : m; /* {m,} is a loop: its bound is m */
		for (k++; s[k] >= '0' && s[k] <= '9'; k++)
			n = n > 100000 ? n : n * 10 + (unsigned long)(s[k] - '0');
	}
	if (s[k] != '}')
		return 0;
	*end = k;
	return n > m ? n : m;
}

static bool regex_expansion_ok(const char *s)
{
	size_t len = strlen(s), depth = 0, open[CFG_MAX_CHECK_BYTES + 1];
	unsigned long mult[CFG_MAX_CHECK_BYTES + 1]; /* product of enclosing group bounds, by depth */
	size_t match[CFG_MAX_CHECK_BYTES + 1];       /* for each '(' the position of its ')' */
	if (len > CFG_MAX_CHECK_BYTES)
		return false;
	/* Pass 1: pair the parentheses. */
	for (size_t i = 0; i < len; i++) {
		match[i] = 0;
		if (s[i] == '\\') {
			i++;
		} else if (s[i] == '[') {
			for (i += 1 + (s[i + 1] == '^') + (s[i + 1 + (s[i + 1] == '^')] == ']'); i < len && s[i] != ']'; i++)
				;
		} else if (s[i] == '(') {
			open[depth++] = i;
		} else if (s[i] == ')' && depth) {
			match[open[--depth]] = i;
		}
	}
	/* Pass 2: walk again, multiplying group bounds on the way in. */
	depth = 0;
	mult[0] = 1;
	for (size_t i = 0, end; i < len; i++) {
		if (s[i] == '\\') {
			i++;
		} else if (s[i] == '[') {
			for (i += 1 + (s[i + 1] == '^') + (s[i + 1 + (s[i + 1] == '^')] == ']'); i < len && s[i] != ']'; i++)
				;
		} else if (s[i] == '(' && match[i]) {
			unsigned long b = repeat_bound(s, match[i] + 1, &end);
			unsigned long m = mult[depth] * (b ? b : 1);
			if (m > REGEX_MAX_REPEAT)
				return false;
			mult[++depth] = m;
		} else if (s[i] == ')' && depth) {
			depth--;
			repeat_bound(s, i + 1, &end) ? (void)(i = end) : (void)0;
		} else if (s[i] == '{') {
			unsigned long b = repeat_bound(s, i, &end);
			if (b && mult[depth] * b > REGEX_MAX_REPEAT)
				return false;
			if (b)
				i = end;
		}
	}
	return true;
}

/* An expect_regex: checked here, compiled again for each pool that uses it. */
static bool get_regex(struct ld *ld, const yaml_node_t *n, const char *path, char **src)
{
	char why[128], got[SHOW_BUF];
	regex_t re;
	int r;

	if (!want_text(ld, n, path, "a regular expression"))
		return false;
	if (slen(n) > CFG_MAX_CHECK_BYTES) {
		bad_value(ld, n, path, "a regular expression of at most %d bytes", CFG_MAX_CHECK_BYTES);
		return false;
	}
	if (!regex_expansion_ok(sval(n))) {
		bad_value(ld, n, path, "a regular expression whose repeats, nested, expand to at most %d (e.g. a{1,%d})",
		          REGEX_MAX_REPEAT, REGEX_MAX_REPEAT);
		return false;
	}
	r = regcomp(&re, sval(n), REG_EXTENDED);
	if (r != 0) {
		regerror(r, &re, why, sizeof why);
		add_err(ld, node_pos(n), path, "expected a POSIX extended regular expression (%s), got %s",
		        why, desc(n, got));
		return false;
	}
	regfree(&re);
	*src = strdup(sval(n));
	if (!*src)
		ld->oom = true;
	return *src != NULL;
}

/* An http check's request path: "/..." without spaces or control bytes. */
static bool get_http_path(struct ld *ld, const yaml_node_t *n, const char *path, char **out)
{
	const unsigned char *s;

	if (!want_text(ld, n, path, "a request path starting with /"))
		return false;
	s = (const unsigned char *)sval(n);
	if (s[0] != '/') {
		bad_value(ld, n, path, "a request path starting with /");
		return false;
	}
	for (; *s; s++) {
		if (*s <= ' ' || *s == 0x7f) {
			bad_value(ld, n, path, "a request path without spaces or control characters");
			return false;
		}
	}
	if (slen(n) > CFG_MAX_CHECK_PATH) {
		bad_value(ld, n, path, "a request path of at most %d bytes", CFG_MAX_CHECK_PATH);
		return false;
	}
	*out = strdup(sval(n));
	if (!*out)
		ld->oom = true;
	return *out != NULL;
}

/* A finite decimal number: strtod must consume it all; no hex, nan or inf. */
static bool get_double(struct ld *ld, const yaml_node_t *n, const char *path, double *out)
{
	const char *s;
	char *end;
	double v;

	if (n->type != YAML_SCALAR_NODE || strlen(sval(n)) != slen(n))
		goto bad;
	s = sval(n);
	if (!((*s >= '0' && *s <= '9') || *s == '.' || *s == '-' || *s == '+') || strpbrk(s, "xXpP"))
		goto bad;
	errno = 0;
	v = strtod(s, &end);
	if (end == s || *end != '\0' || errno == ERANGE || !isfinite(v))
		goto bad;
	*out = v;
	return true;
bad:
	bad_value(ld, n, path, "a number");
	return false;
}

/* Run wp_backoff_check() on the built-in backoff with one field replaced. */
static bool check_backoff_field(struct ld *ld, const yaml_node_t *n, const char *path, enum backoff_key k,
                                double v)
{
	struct wp_backoff probe = builtin_backoff;
	const char *why = "invalid value";
	char got[SHOW_BUF];

	if (k == B_MULT)
		probe.multiplier = v;
	else
		probe.jitter = v;
	if (wp_backoff_check(&probe, &why) == 0)
		return true;
	add_err(ld, node_pos(n), path, "%s, got %s", why, desc(n, got));
	return false;
}

static void parse_backoff(struct ld *ld, yaml_document_t *doc, const yaml_node_t *n, const char *path,
                          struct level *l)
{
	yaml_node_t *vals[B_N], *knodes[B_N];
	char kpath[PATH_BUF];
	double d;

	if (!want_map(ld, n, path, "a mapping of initial, max, multiplier, jitter"))
		return;
	walk_map(ld, doc, n, path, backoff_keys, B_N, 0, vals, knodes);
	if (vals[B_INITIAL]) {
		path_key(kpath, path, "initial", 7);
		if (get_duration(ld, vals[B_INITIAL], kpath, 1, MS_H, &l->backoff.initial_ms))
			l->set |= BIT(F_BO_INITIAL);
		l->node[F_BO_INITIAL] = vals[B_INITIAL];
	}
	if (vals[B_MAX]) {
		path_key(kpath, path, "max", 3);
		if (get_duration(ld, vals[B_MAX], kpath, 1, MS_H, &l->backoff.max_ms))
			l->set |= BIT(F_BO_MAX);
		l->node[F_BO_MAX] = vals[B_MAX];
	}
	if (vals[B_MULT]) {
		path_key(kpath, path, "multiplier", 10);
		if (get_double(ld, vals[B_MULT], kpath, &d) &&
		    check_backoff_field(ld, vals[B_MULT], kpath, B_MULT, d)) {
			l->backoff.multiplier = d;
			l->set |= BIT(F_BO_MULT);
		}
		l->node[F_BO_MULT] = vals[B_MULT];
	}
	if (vals[B_JITTER]) {
		path_key(kpath, path, "jitter", 6);
		if (get_double(ld, vals[B_JITTER], kpath, &d) &&
		    check_backoff_field(ld, vals[B_JITTER], kpath, B_JITTER, d)) {
			l->backoff.jitter = d;
			l->set |= BIT(F_BO_JITTER);
		}
		l->node[F_BO_JITTER] = vals[B_JITTER];
	}
}

/* Record what a level said about field f: where, under which key, and whether it was valid. */
static void mark(struct level *l, enum field f, const yaml_node_t *n, const char *key, bool ok)
{
	if (ok)
		l->set |= BIT(f);
	l->node[f] = n;
	l->key[f] = key;
}

/* The first of keys[idx[0..n)] given in the mapping, in document order; the
 * others are reported. Returns -1 when none is given. */
static int pick_one(struct ld *ld, yaml_node_t **vals, yaml_node_t **knodes, const int *idx, size_t n,
                    const char *const *keys, const char *path)
{
	char kpath[PATH_BUF], list[PATH_BUF];
	size_t o = 0;
	int first = -1;

	for (size_t i = 0; i < n; i++) {
		if (vals[idx[i]] &&
		    (first < 0 || knodes[idx[i]]->start_mark.index < knodes[first]->start_mark.index))
			first = idx[i];
	}
	for (size_t i = 0; i < n && o < sizeof list; i++)
		o += (size_t)snprintf(list + o, sizeof list - o, "%s%s", i ? ", " : "", keys[idx[i]]);
	for (size_t i = 0; i < n; i++) {
		if (!vals[idx[i]] || idx[i] == first)
			continue;
		path_key(kpath, path, keys[idx[i]], strlen(keys[idx[i]]));
		add_err(ld, node_pos(knodes[idx[i]]), kpath, "expected only one of %s", list);
	}
	return first;
}

/* send / send_hex, and expect / expect_hex / expect_regex. */
static void parse_check_bytes(struct ld *ld, yaml_node_t **vals, yaml_node_t **knodes, const char *path,
                              struct level *l)
{
	static const int sends[] = {H_SEND, H_SEND_HEX}, expects[] = {H_EXPECT, H_EXPECT_HEX, H_EXPECT_RE};
	struct cfg_health *h = &l->health;
	char kpath[PATH_BUF];
	bool ok;
	int k;

	k = pick_one(ld, vals, knodes, sends, 2, health_keys, path);
	if (k >= 0) {
		path_key(kpath, path, health_keys[k], strlen(health_keys[k]));
		ok = k == H_SEND ? get_escaped(ld, vals[k], kpath, false, &h->send, &h->send_len)
		                 : get_hex(ld, vals[k], kpath, false, &h->send, &h->send_len);
		mark(l, F_HC_SEND, vals[k], health_paths[k], ok);
	}
	k = pick_one(ld, vals, knodes, expects, 3, health_keys, path);
	if (k >= 0) {
		path_key(kpath, path, health_keys[k], strlen(health_keys[k]));
		if (k == H_EXPECT)
			ok = get_escaped(ld, vals[k], kpath, true, &h->expect, &h->expect_len);
		else if (k == H_EXPECT_HEX)
			ok = get_hex(ld, vals[k], kpath, true, &h->expect, &h->expect_len);
		else
			ok = get_regex(ld, vals[k], kpath, &l->expect_regex);
		mark(l, F_HC_EXPECT, vals[k], health_paths[k], ok);
	}
}

/*
 * health_check: a block without `type` means type connect, unless this level
 * inherits a block (from defaults:), whose type it keeps. An empty value is
 * an empty block.
 */
static void parse_health(struct ld *ld, yaml_document_t *doc, const yaml_node_t *n, const char *path,
                         bool inherited, struct level *l)
{
	static const struct {
		enum health_key k;
		enum field f;
		uint64_t lo, hi;
	} durations[] = {
	    {H_INTERVAL, F_HC_INTERVAL, 10, MS_H},
	    {H_TIMEOUT, F_HC_TIMEOUT, 10, 5 * MS_M},
	    {H_FAST, F_HC_FAST, 10, MS_H},
	    {H_DOWN, F_HC_DOWN, 10, MS_H},
	};
	uint64_t *dst[] = {&l->health.interval_ms, &l->health.timeout_ms, &l->health.fast_interval_ms,
	                   &l->health.down_interval_ms};
	yaml_node_t *vals[H_N], *knodes[H_N];
	char kpath[PATH_BUF];
	int type;

	if (n->type != YAML_MAPPING_NODE && !is_null(n)) {
		bad_value(ld, n, path,
		          "a mapping of type, interval, timeout, rise, fall and the type's keys");
		return;
	}
	walk_map(ld, doc, n, path, health_keys, H_N, 0, vals, knodes);
	if (vals[H_TYPE]) {
		path_key(kpath, path, "type", 4);
		bool ok = get_enum(ld, vals[H_TYPE], kpath, check_names, N_CHECK, &type);
		if (ok)
			l->health.type = (enum cfg_check_type)type;
		mark(l, F_HC_TYPE, vals[H_TYPE], health_paths[H_TYPE], ok);
	} else if (!inherited) {
		l->health.type = CFG_CHECK_CONNECT;
		mark(l, F_HC_TYPE, n, "health_check", true);
	}
	parse_check_bytes(ld, vals, knodes, path, l);
	if (vals[H_PATH]) {
		path_key(kpath, path, "path", 4);
		mark(l, F_HC_PATH, vals[H_PATH], health_paths[H_PATH],
		     get_http_path(ld, vals[H_PATH], kpath, &l->health.path));
	}
	for (size_t i = 0; i < sizeof durations / sizeof durations[0]; i++) {
		const yaml_node_t *v = vals[durations[i].k];
		if (!v)
			continue;
		path_key(kpath, path, health_keys[durations[i].k], strlen(health_keys[durations[i].k]));
		mark(l, durations[i].f, v, health_paths[durations[i].k],
		     get_duration(ld, v, kpath, durations[i].lo, durations[i].hi, dst[i]));
	}
	if (vals[H_RISE]) {
		path_key(kpath, path, "rise", 4);
		mark(l, F_HC_RISE, vals[H_RISE], health_paths[H_RISE],
		     get_u32(ld, vals[H_RISE], kpath, 1, 100, &l->health.rise));
	}
	if (vals[H_FALL]) {
		path_key(kpath, path, "fall", 4);
		mark(l, F_HC_FALL, vals[H_FALL], health_paths[H_FALL],
		     get_u32(ld, vals[H_FALL], kpath, 1, 100, &l->health.fall));
	}
}

/* keepalive: true/false, or a mapping (which turns it on) of idle, interval, count. */
static void parse_keepalive(struct ld *ld, yaml_document_t *doc, const yaml_node_t *n, const char *path,
                            struct level *l)
{
	yaml_node_t *vals[KA_N], *knodes[KA_N];
	uint32_t *secs[] = {&l->keepalive.idle_s, &l->keepalive.interval_s};
	char kpath[PATH_BUF];

	if (n->type != YAML_MAPPING_NODE && !is_null(n)) {
		mark(l, F_KA_ENABLED, n, "keepalive",
		     get_bool(ld, n, path, "true, false or a mapping of idle, interval, count",
		              &l->keepalive.enabled));
		return;
	}
	l->keepalive.enabled = true;
	mark(l, F_KA_ENABLED, n, "keepalive", true);
	walk_map(ld, doc, n, path, keepalive_keys, KA_N, 0, vals, knodes);
	for (int k = KA_IDLE; k <= KA_INTERVAL; k++) {
		if (!vals[k])
			continue;
		path_key(kpath, path, keepalive_keys[k], strlen(keepalive_keys[k]));
		mark(l, k == KA_IDLE ? F_KA_IDLE : F_KA_INTERVAL, vals[k], keepalive_paths[k],
		     get_seconds(ld, vals[k], kpath, secs[k]));
	}
	if (vals[KA_COUNT]) {
		path_key(kpath, path, "count", 5);
		mark(l, F_KA_COUNT, vals[KA_COUNT], keepalive_paths[KA_COUNT],
		     get_u32(ld, vals[KA_COUNT], kpath, 1, 127, &l->keepalive.count));
	}
}

/* ---- allow: {users, groups, uids, gids} ---------------------------------- */

_Static_assert(sizeof(uid_t) == sizeof(uint32_t) && sizeof(gid_t) == sizeof(uint32_t),
               "ids are read as 32-bit integers");

static size_t list_items(struct ld *ld, const yaml_node_t *n, const char *path, size_t max,
                         const char *expected, const char *nonempty, const char *noun);

static void allow_free(struct cfg_allow *a)
{
	free(a->uids);
	free(a->gids);
	*a = (struct cfg_allow){0};
}

/* `dst` (owning nothing) becomes a copy of `src`, never sharing its arrays. */
static void allow_copy(struct ld *ld, struct cfg_allow *dst, const struct cfg_allow *src)
{
	*dst = *src;
	dst->uids = NULL;
	dst->gids = NULL;
	if (src->n_uids && !(dst->uids = (uid_t *)dup_bytes(ld, src->uids, src->n_uids * sizeof *src->uids)))
		dst->n_uids = 0;
	if (src->n_gids && !(dst->gids = (gid_t *)dup_bytes(ld, src->gids, src->n_gids * sizeof *src->gids)))
		dst->n_gids = 0;
}

/*
 * A user's (is_group false) or group's id by name with getpwnam_r or
 * getgrnam_r: 1 found, 0 no such name, or a positive errno when the lookup
 * itself failed. glibc reports "not found" as 0 with no result; other NSS
 * modules use ENOENT, ESRCH, EBADF or EPERM (getpwnam_r(3)).
 */
static int lookup_id(const char *name, bool is_group, uint32_t *id)
{
	size_t sz = 1024;

	for (;;) {
		struct passwd pw, *pwr = NULL;
		struct group gr, *grr = NULL;
		char *buf = malloc(sz);
		int e;

		if (!buf)
			return ENOMEM;
		if (is_group) {
			e = getgrnam_r(name, &gr, buf, sz, &grr);
			if (e == 0 && grr)
				*id = (uint32_t)gr.gr_gid;
		} else {
			e = getpwnam_r(name, &pw, buf, sz, &pwr);
			if (e == 0 && pwr)
				*id = (uint32_t)pw.pw_uid;
		}
		free(buf);
		if (e == ERANGE && sz < NSS_BUF_MAX) {
			sz *= 2;
			continue;
		}
		if (e == 0)
			return (is_group ? grr != NULL : pwr != NULL) ? 1 : 0;
		if (e == ENOENT || e == ESRCH || e == EBADF || e == EPERM)
			return 0;
		return e;
	}
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

/* Sort and drop repeats; returns the new count. */
static size_t sort_unique(uint32_t *v, size_t n)
{
	size_t m = 0;

	if (n == 0)
		return 0;
	qsort(v, n, sizeof *v, cmp_u32);
	for (size_t i = 1; i < n; i++)
		if (v[i] != v[m])
			v[++m] = v[i];
	return m + 1;
}

/*
 * One list of an allow: block (a single item or a list of 1..CFG_MAX_ALLOW):
 * names resolved (by_name) or ids read, appended to ids[*n]. False when
 * anything was reported.
 */
static bool parse_allow_list(struct ld *ld, yaml_document_t *doc, const yaml_node_t *n, const char *path,
                             bool by_name, bool is_group, uint32_t *ids, size_t *n_ids)
{
	const char *what = is_group ? (by_name ? "a group name" : "a group id")
	                            : (by_name ? "a user name" : "a user id");
	char expected[64], nonempty[64], ipath[PATH_BUF], got[SHOW_BUF];
	size_t count;
	bool ok = true;

	snprintf(expected, sizeof expected, "%s or a list of them", what);
	snprintf(nonempty, sizeof nonempty, "at least one %s", what + 2);
	count = list_items(ld, n, path, CFG_MAX_ALLOW, expected, nonempty,
	                   is_group ? (by_name ? "groups" : "gids") : (by_name ? "users" : "uids"));
	if (!count)
		return false;
	if (n->type == YAML_SEQUENCE_NODE &&
	    (size_t)(n->data.sequence.items.top - n->data.sequence.items.start) > count)
		ok = false; /* too long: reported by list_items */
	for (size_t i = 0; i < count; i++) {
		const yaml_node_t *item = n;
		uint32_t id = 0;
		int r;

		if (n->type == YAML_SEQUENCE_NODE) {
			item = node_at(doc, n->data.sequence.items.start[i]);
			if (!item)
				continue;
			path_index(ipath, path, i);
		} else {
			snprintf(ipath, sizeof ipath, "%s", path);
		}
		if (!by_name) {
			/* (uid_t)-1 and (gid_t)-1 mean "no change" to the kernel: never an id */
			if (!get_u32(ld, item, ipath, 0, UINT32_MAX - 1, &id)) {
				ok = false;
				continue;
			}
			ids[(*n_ids)++] = id;
			continue;
		}
		if (!want_text(ld, item, ipath, what)) {
			ok = false;
			continue;
		}
		if (slen(item) == 0 || is_null(item)) {
			bad_value(ld, item, ipath, "%s", what);
			ok = false;
			continue;
		}
		r = lookup_id(sval(item), is_group, &id);
		if (r == 1) {
			ids[(*n_ids)++] = id;
			continue;
		}
		ok = false;
		if (r == ENOMEM)
			ld->oom = true;
		else if (r == 0)
			add_err(ld, node_pos(item), ipath, "expected an existing %s, got %s", what + 2,
			        desc(item, got));
		else
			add_err(ld, node_pos(item), ipath, "expected an existing %s (lookup failed: %s), got %s",
			        what + 2, strerror(r), desc(item, got));
	}
	return ok;
}

/*
 * allow: {users, groups, uids, gids}, each a name or id or a list of them,
 * at least one of the four given. On success *a holds the sorted ids and is
 * enabled; otherwise it is left empty and every problem was reported.
 */
static bool parse_allow(struct ld *ld, yaml_document_t *doc, const yaml_node_t *n, const char *path,
                        struct cfg_allow *a)
{
	yaml_node_t *vals[A_N], *knodes[A_N];
	char kpath[PATH_BUF];
	uint32_t *uids = NULL, *gids = NULL;
	size_t n_uids = 0, n_gids = 0;
	bool ok = true;

	*a = (struct cfg_allow){0};
	if (n->type != YAML_MAPPING_NODE) {
		bad_value(ld, n, path, "%s",
		          is_null(n) ? "at least one of users, groups, uids, gids"
		                     : "a mapping of users, groups, uids, gids");
		return false;
	}
	if (n->data.mapping.pairs.top == n->data.mapping.pairs.start) {
		bad_value(ld, n, path, "at least one of users, groups, uids, gids");
		return false;
	}
	walk_map(ld, doc, n, path, allow_keys, A_N, 0, vals, knodes);
	if (!vals[A_USERS] && !vals[A_GROUPS] && !vals[A_UIDS] && !vals[A_GIDS])
		return false; /* only unknown or repeated keys: reported by walk_map */
	uids = malloc(2 * CFG_MAX_ALLOW * sizeof *uids);
	gids = malloc(2 * CFG_MAX_ALLOW * sizeof *gids);
	if (!uids || !gids) {
		ld->oom = true;
		goto fail;
	}
	for (int k = A_USERS; k < A_N; k++) {
		bool group = k == A_GROUPS || k == A_GIDS, by_name = k == A_USERS || k == A_GROUPS;
		if (!vals[k])
			continue;
		path_key(kpath, path, allow_keys[k], strlen(allow_keys[k]));
		if (!parse_allow_list(ld, doc, vals[k], kpath, by_name, group, group ? gids : uids,
		                      group ? &n_gids : &n_uids))
			ok = false;
	}
	if (!ok || ld->oom)
		goto fail;
	n_uids = sort_unique(uids, n_uids);
	n_gids = sort_unique(gids, n_gids);
	a->enabled = true;
	a->pos = node_pos(n);
	if (n_uids) {
		a->uids = (uid_t *)dup_bytes(ld, uids, n_uids * sizeof *uids);
		a->n_uids = a->uids ? n_uids : 0;
	}
	if (n_gids) {
		a->gids = (gid_t *)dup_bytes(ld, gids, n_gids * sizeof *gids);
		a->n_gids = a->gids ? n_gids : 0;
	}
	free(uids);
	free(gids);
	return !ld->oom;
fail:
	free(uids);
	free(gids);
	return false;
}

/* One plain value of a level (a number, duration, name or boolean). */
static bool parse_field(struct ld *ld, const yaml_node_t *v, const char *kpath, enum field f, struct level *l)
{
	int i;

	switch (f) {
	case F_MIN_IDLE:
		return get_u32(ld, v, kpath, 0, CFG_MAX_CONNECTIONS, &l->min_idle);
	case F_MAX_CONN:
		return get_u32(ld, v, kpath, 1, CFG_MAX_CONNECTIONS, &l->max_connections);
	case F_MAX_CLIENTS:
		return get_u32(ld, v, kpath, 1, CLIENTS_LIMIT, &l->max_clients);
	case F_CONNECT_TO:
		return get_duration(ld, v, kpath, 1, 5 * MS_M, &l->connect_timeout_ms);
	case F_QUEUE_TO:
		return get_duration(ld, v, kpath, 1, MS_H, &l->queue_timeout_ms);
	case F_BALANCE:
		if (!get_enum(ld, v, kpath, balance_names, N_BALANCE, &i))
			return false;
		l->balance = (enum cfg_balance)i;
		return true;
	case F_MAX_CONNECTING:
		return get_u32(ld, v, kpath, 1, 1000, &l->max_connecting);
	case F_FAIL_FAST:
		return get_bool(ld, v, kpath, "true or false", &l->fail_fast);
	case F_USER_TO:
		return get_duration_or_0(ld, v, kpath, 0, MS_H, &l->tcp_user_timeout_ms);
	case F_LIFETIME:
		return get_duration_or_0(ld, v, kpath, 100, 7 * MS_D, &l->max_lifetime_ms);
	case F_IDLE_TO:
		return get_duration_or_0(ld, v, kpath, 0, 7 * MS_D, &l->idle_timeout_ms);
	case F_CLIENT_IDLE:
		return get_duration_or_0(ld, v, kpath, 10, 7 * MS_D, &l->client_idle_timeout_ms);
	case F_SERVER_IDLE:
		return get_duration_or_0(ld, v, kpath, 10, 7 * MS_D, &l->server_idle_timeout_ms);
	case F_MAX_IDLE:
		return get_duration_or_0(ld, v, kpath, 10, 7 * MS_D, &l->max_idle_time_ms);
	default:
		return false;
	}
}

/* The keys shared by `defaults:` and pools (everything but listen/backends).
 * `inherited`: a health_check block was given in defaults. */
static void parse_level(struct ld *ld, yaml_document_t *doc, yaml_node_t **vals, const char *path,
                        bool inherited, struct level *l)
{
	static const struct {
		enum pool_key key;
		enum field f;
	} map[] = {
	    {K_MIN_IDLE, F_MIN_IDLE},
	    {K_MAX_CONN, F_MAX_CONN},
	    {K_MAX_CLIENTS, F_MAX_CLIENTS},
	    {K_CONNECT_TO, F_CONNECT_TO},
	    {K_QUEUE_TO, F_QUEUE_TO},
	    {K_BALANCE, F_BALANCE},
	    {K_MAX_CONNECTING, F_MAX_CONNECTING},
	    {K_FAIL_FAST, F_FAIL_FAST},
	    {K_USER_TO, F_USER_TO},
	    {K_LIFETIME, F_LIFETIME},
	    {K_IDLE_TO, F_IDLE_TO},
	    {K_MAX_IDLE, F_MAX_IDLE},
	    {K_CLIENT_IDLE, F_CLIENT_IDLE},
	    {K_SERVER_IDLE, F_SERVER_IDLE},
	};
	char kpath[PATH_BUF];

	memset(l, 0, sizeof *l);
	for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
		const yaml_node_t *v = vals[map[i].key];
		const char *key = pool_keys[map[i].key];

		if (!v)
			continue;
		path_key(kpath, path, key, strlen(key));
		mark(l, map[i].f, v, key, parse_field(ld, v, kpath, map[i].f, l));
	}
	if (vals[K_BACKOFF]) {
		path_key(kpath, path, "backoff", 7);
		parse_backoff(ld, doc, vals[K_BACKOFF], kpath, l);
	}
	if (vals[K_HEALTH]) {
		path_key(kpath, path, "health_check", 12);
		parse_health(ld, doc, vals[K_HEALTH], kpath, inherited, l);
	}
	if (vals[K_KEEPALIVE]) {
		path_key(kpath, path, "keepalive", 9);
		parse_keepalive(ld, doc, vals[K_KEEPALIVE], kpath, l);
	}
	if (vals[K_ALLOW]) {
		path_key(kpath, path, "allow", 5);
		mark(l, F_ALLOW, vals[K_ALLOW], "allow",
		     parse_allow(ld, doc, vals[K_ALLOW], kpath, &l->allow));
	}
}

static void level_free(struct level *l)
{
	free(l->health.send);
	free(l->health.expect);
	free(l->health.path);
	free(l->expect_regex);
	allow_free(&l->allow);
	memset(l, 0, sizeof *l);
}

/* The owned parts of a pool's health check (free() and regfree()). */
static void health_free(struct cfg_health *h)
{
	free(h->send);
	free(h->expect);
	free(h->path);
	free_regex(h->expect_re);
	free(h->expect_regex);
	h->send = h->expect = NULL;
	h->path = NULL;
	h->expect_re = NULL;
	h->expect_regex = NULL;
	h->send_len = h->expect_len = 0;
}

static void apply_health(struct ld *ld, struct cfg_health *h, const struct level *l)
{
	const struct cfg_health *v = &l->health;

	if (l->set & BIT(F_HC_TYPE))
		h->type = v->type;
	if (l->set & BIT(F_HC_SEND)) {
		free(h->send);
		h->send = dup_bytes(ld, v->send, v->send_len);
		h->send_len = h->send ? v->send_len : 0;
	}
	if (l->set & BIT(F_HC_EXPECT)) { /* expect and expect_regex replace each other */
		free(h->expect);
		free_regex(h->expect_re);
		free(h->expect_regex);
		h->expect = NULL;
		h->expect_re = NULL;
		h->expect_regex = NULL;
		h->expect_len = 0;
		if (l->expect_regex) {
			h->expect_re = compile_regex(l->expect_regex);
			h->expect_regex = strdup(l->expect_regex);
			ld->oom |= !h->expect_re || !h->expect_regex;
		} else {
			h->expect = dup_bytes(ld, v->expect, v->expect_len);
			h->expect_len = h->expect ? v->expect_len : 0;
		}
	}
	if (l->set & BIT(F_HC_PATH)) {
		free(h->path);
		h->path = strdup(v->path);
		ld->oom |= !h->path;
	}
	if (l->set & BIT(F_HC_INTERVAL))
		h->interval_ms = v->interval_ms;
	if (l->set & BIT(F_HC_TIMEOUT))
		h->timeout_ms = v->timeout_ms;
	if (l->set & BIT(F_HC_FAST))
		h->fast_interval_ms = v->fast_interval_ms;
	if (l->set & BIT(F_HC_DOWN))
		h->down_interval_ms = v->down_interval_ms;
	if (l->set & BIT(F_HC_RISE))
		h->rise = v->rise;
	if (l->set & BIT(F_HC_FALL))
		h->fall = v->fall;
}

static void apply_keepalive(struct cfg_keepalive *k, const struct level *l)
{
	if (l->set & BIT(F_KA_ENABLED))
		k->enabled = l->keepalive.enabled;
	if (l->set & BIT(F_KA_IDLE))
		k->idle_s = l->keepalive.idle_s;
	if (l->set & BIT(F_KA_INTERVAL))
		k->interval_s = l->keepalive.interval_s;
	if (l->set & BIT(F_KA_COUNT))
		k->count = l->keepalive.count;
}

/* Merge the values level `l` gave into `p`; pointers are copied, never shared. */
static void apply_level(struct ld *ld, struct cfg_pool *p, const struct level *l)
{
	if (l->set & BIT(F_MIN_IDLE))
		p->min_idle = l->min_idle;
	if (l->set & BIT(F_MAX_CONN))
		p->max_connections = l->max_connections;
	if (l->set & BIT(F_MAX_CLIENTS))
		p->max_clients = l->max_clients;
	if (l->set & BIT(F_CONNECT_TO))
		p->connect_timeout_ms = l->connect_timeout_ms;
	if (l->set & BIT(F_QUEUE_TO))
		p->queue_timeout_ms = l->queue_timeout_ms;
	if (l->set & BIT(F_BO_INITIAL))
		p->backoff.initial_ms = l->backoff.initial_ms;
	if (l->set & BIT(F_BO_MAX))
		p->backoff.max_ms = l->backoff.max_ms;
	if (l->set & BIT(F_BO_MULT))
		p->backoff.multiplier = l->backoff.multiplier;
	if (l->set & BIT(F_BO_JITTER))
		p->backoff.jitter = l->backoff.jitter;
	if (l->set & BIT(F_BALANCE))
		p->balance = l->balance;
	if (l->set & BIT(F_MAX_CONNECTING))
		p->max_connecting = l->max_connecting;
	if (l->set & BIT(F_FAIL_FAST))
		p->fail_fast = l->fail_fast;
	if (l->set & BIT(F_USER_TO))
		p->tcp_user_timeout_ms = l->tcp_user_timeout_ms;
	if (l->set & BIT(F_LIFETIME))
		p->max_lifetime_ms = l->max_lifetime_ms;
	if (l->set & BIT(F_IDLE_TO))
		p->idle_timeout_ms = l->idle_timeout_ms;
	if (l->set & BIT(F_CLIENT_IDLE))
		p->client_idle_timeout_ms = l->client_idle_timeout_ms;
	if (l->set & BIT(F_SERVER_IDLE))
		p->server_idle_timeout_ms = l->server_idle_timeout_ms;
	if (l->set & BIT(F_MAX_IDLE))
		p->max_idle_time_ms = l->max_idle_time_ms;
	apply_health(ld, &p->health, l);
	apply_keepalive(&p->keepalive, l);
	if (l->set & BIT(F_ALLOW)) { /* a whole block: what defaults: said is replaced */
		allow_free(&p->allow);
		allow_copy(ld, &p->allow, &l->allow);
	}
}

/*
 * After merging: keep only what the check type uses, so send/expect/expect_re
 * are set only for send_expect and path only for http (default "/"). Values
 * inherited from defaults: for another type are dropped here; values given
 * at the pool's own level were reported by check_health.
 */
static void finish_health(struct ld *ld, struct cfg_health *h)
{
	if (h->type != CFG_CHECK_SEND_EXPECT) {
		free(h->send);
		free(h->expect);
		free_regex(h->expect_re);
		free(h->expect_regex);
		h->send = h->expect = NULL;
		h->expect_re = NULL;
		h->expect_regex = NULL;
		h->send_len = h->expect_len = 0;
	}
	if (h->type != CFG_CHECK_HTTP) {
		free(h->path);
		h->path = NULL;
	} else if (!h->path) {
		h->path = strdup("/");
		ld->oom |= !h->path;
	}
}

/* An error at the value level `l` gave for field f. */
static void blame(struct ld *ld, const struct level *l, enum field f, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void blame(struct ld *ld, const struct level *l, enum field f, const char *path, const char *fmt, ...)
{
	char kpath[PATH_BUF];
	va_list ap;

	path_key(kpath, path, l->key[f], strlen(l->key[f]));
	va_start(ap, fmt);
	add_errv(ld, node_pos(l->node[f]), kpath, fmt, ap);
	va_end(ap);
}

/* The keys a check type needs or excludes, on the merged pool. */
static void check_health(struct ld *ld, const struct cfg_pool *p, const struct level *l, const char *path)
{
	const struct cfg_health *h = &p->health;
	const char *type = cfg_check_type_name(h->type);

	if (l->node[F_HC_TYPE] && !(l->set & BIT(F_HC_TYPE)))
		return; /* a bad type: reported, nothing to check against */
	if (h->type == CFG_CHECK_SEND_EXPECT && (l->set & BIT(F_HC_TYPE))) {
		if (!h->send && !l->node[F_HC_SEND])
			blame(ld, l, F_HC_TYPE, path, "expected send or send_hex for type send_expect");
		if (!h->expect && !h->expect_re && !l->node[F_HC_EXPECT])
			blame(ld, l, F_HC_TYPE, path,
			      "expected expect, expect_hex or expect_regex for type send_expect");
	}
	if (h->type != CFG_CHECK_SEND_EXPECT) {
		if (l->set & BIT(F_HC_SEND))
			blame(ld, l, F_HC_SEND, path, "expected only with type: send_expect (type is %s)",
			      type);
		if (l->set & BIT(F_HC_EXPECT))
			blame(ld, l, F_HC_EXPECT, path, "expected only with type: send_expect (type is %s)",
			      type);
	}
	if (h->type != CFG_CHECK_HTTP && (l->set & BIT(F_HC_PATH)))
		blame(ld, l, F_HC_PATH, path, "expected only with type: http (type is %s)", type);
}

/*
 * Relations between values of the merged pool `p`, checked only when level
 * `l` gave one of the values involved (so an error inherited from defaults
 * is reported once, at defaults), and blamed on a value `l` gave.
 */
static void check_level(struct ld *ld, const struct cfg_pool *p, const struct level *l, const char *path)
{
	char kpath[PATH_BUF], a[32];
	const char *why = NULL;

	check_health(ld, p, l, path);
	if ((l->set & (BIT(F_MIN_IDLE) | BIT(F_MAX_CONN))) && p->min_idle > p->max_connections) {
		if (l->set & BIT(F_MIN_IDLE)) {
			path_key(kpath, path, "min_idle", 8);
			bad_value(ld, l->node[F_MIN_IDLE], kpath, "an integer <= max_connections (%u)",
			          p->max_connections);
		} else {
			path_key(kpath, path, "max_connections", 15);
			bad_value(ld, l->node[F_MAX_CONN], kpath, "an integer >= min_idle (%u)", p->min_idle);
		}
	}
	if (!(l->set & (BIT(F_BO_INITIAL) | BIT(F_BO_MAX) | BIT(F_BO_MULT) | BIT(F_BO_JITTER))))
		return;
	if (p->backoff.max_ms < p->backoff.initial_ms) {
		if (l->set & BIT(F_BO_MAX)) {
			path_key(kpath, path, "backoff.max", 11);
			bad_value(ld, l->node[F_BO_MAX], kpath, "a duration >= initial (%s)",
			          fmt_ms(p->backoff.initial_ms, a, sizeof a));
		} else if (l->set & BIT(F_BO_INITIAL)) {
			path_key(kpath, path, "backoff.initial", 15);
			bad_value(ld, l->node[F_BO_INITIAL], kpath, "a duration <= max (%s)",
			          fmt_ms(p->backoff.max_ms, a, sizeof a));
		}
		return;
	}
	/* The library has the last word; the per-field checks above mirror it. */
	if (wp_backoff_check(&p->backoff, &why) < 0) {
		const yaml_node_t *n = NULL;
		for (int f = F_BO_INITIAL; f <= F_BO_JITTER && !n; f++)
			n = (l->set & BIT(f)) ? l->node[f] : NULL;
		path_key(kpath, path, "backoff", 7);
		add_err(ld, n ? node_pos(n) : (struct cfg_pos){1, 1}, kpath, "%s", why);
	}
}

static bool refs_add(struct ld *ld, struct refs *r, const char *label, const char *text, struct cfg_pos pos,
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

static void refs_free(struct refs *r)
{
	for (size_t i = 0; i < r->n; i++)
		free(r->v[i].label);
	free(r->v);
	r->v = NULL;
	r->n = r->cap = 0;
}

/* Octal digits only, at most 0777. */
static bool parse_mode(const char *s, mode_t *out)
{
	unsigned long v = 0;

	if (*s == '\0')
		return false;
	for (; *s; s++) {
		if (*s < '0' || *s > '7')
			return false;
		v = v * 8 + (unsigned long)(*s - '0');
		if (v > 0777)
			return false;
	}
	*out = (mode_t)v;
	return true;
}

static void parse_listen_item(struct ld *ld, yaml_document_t *doc, const yaml_node_t *n, const char *path,
                              struct cfg_pool *p)
{
	const yaml_node_t *pn = n;
	mode_t mode = 0660;
	char kpath[PATH_BUF];
	struct cfg_allow own = {0}; /* the item's allow:, which replaces the pool's */
	struct cfg_listen *l;

	if (n->type == YAML_MAPPING_NODE) {
		yaml_node_t *vals[L_N], *knodes[L_N];
		bool ok = true;

		walk_map(ld, doc, n, path, listen_keys, L_N, 0, vals, knodes);
		if (vals[L_MODE]) {
			path_key(kpath, path, "mode", 4);
			if (vals[L_MODE]->type != YAML_SCALAR_NODE ||
			    strlen(sval(vals[L_MODE])) != slen(vals[L_MODE]) ||
			    !parse_mode(sval(vals[L_MODE]), &mode)) {
				bad_value(ld, vals[L_MODE], kpath,
				          "an octal mode like \"0660\", at most 0777");
				ok = false;
			}
		}
		if (vals[L_ALLOW]) {
			path_key(kpath, path, "allow", 5);
			if (!parse_allow(ld, doc, vals[L_ALLOW], kpath, &own))
				ok = false;
		}
		path_key(kpath, path, "path", 4);
		if (!vals[L_PATH]) {
			add_err(ld, node_pos(n), kpath, "missing key, expected a socket path");
			goto fail;
		}
		pn = vals[L_PATH];
		if (!ok)
			goto fail;
	} else {
		snprintf(kpath, sizeof kpath, "%s", path);
	}
	if (!want_text(ld, pn, kpath, "a socket path"))
		goto fail;
	if (slen(pn) == 0 || is_null(pn)) { /* ~ and null are YAML's null, not file names */
		bad_value(ld, pn, kpath, "a socket path");
		goto fail;
	}
	if (slen(pn) > SUN_PATH_MAX) {
		bad_value(ld, pn, kpath, "a socket path of at most %zu bytes", SUN_PATH_MAX);
		goto fail;
	}
	l = &p->listen[p->n_listen];
	l->path = strdup(sval(pn));
	if (!l->path) {
		ld->oom = true;
		goto fail;
	}
	l->mode = mode;
	l->pos = node_pos(n);
	l->allow = own; /* moved: cfg_free frees it */
	p->n_listen++;
	refs_add(ld, &ld->sockets, path, l->path, l->pos, NULL, p->name);
	return;
fail:
	allow_free(&own);
}

/* Listen items (and the handoff socket) without an allow: of their own take
 * a copy of the pool's, once the pool's levels are merged. */
static void inherit_allow(struct ld *ld, struct cfg_pool *p)
{
	if (!p->allow.enabled)
		return;
	for (size_t i = 0; i < p->n_listen; i++)
		if (!p->listen[i].allow.enabled)
			allow_copy(ld, &p->listen[i].allow, &p->allow);
	if (p->handoff.path && !p->handoff.allow.enabled)
		allow_copy(ld, &p->handoff.allow, &p->allow);
}

/* A key that takes one item or a list of 1..max items: how many items to
 * allocate (a scalar is one), or 0 once the problem has been reported. A list
 * longer than max is reported and cut to max, so the rest is still checked. */
static size_t list_items(struct ld *ld, const yaml_node_t *n, const char *path, size_t max,
                         const char *expected, const char *nonempty, const char *noun)
{
	if (n->type == YAML_SCALAR_NODE)
		return 1;
	if (n->type != YAML_SEQUENCE_NODE) {
		bad_value(ld, n, path, "%s", expected);
		return 0;
	}
	size_t count = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
	if (count == 0) {
		bad_value(ld, n, path, "%s", nonempty);
		return 0;
	}
	if (count > max) {
		add_err(ld, node_pos(n), path, "expected at most %zu %s, got %zu", max, noun, count);
		count = max;
	}
	return count;
}

static void parse_listen(struct ld *ld, yaml_document_t *doc, const yaml_node_t *n, const char *path,
                         struct cfg_pool *p)
{
	char ipath[PATH_BUF];
	size_t count;

	count = list_items(ld, n, path, CFG_MAX_LISTEN, "a socket path or a list of them",
	                   "at least one socket path", "socket paths");
	if (!count)
		return;
	p->listen = calloc(count, sizeof *p->listen);
	if (!p->listen) {
		ld->oom = true;
		return;
	}
	if (n->type == YAML_SCALAR_NODE) {
		parse_listen_item(ld, doc, n, path, p);
		return;
	}
	for (size_t i = 0; i < count; i++) {
		const yaml_node_t *item = node_at(doc, n->data.sequence.items.start[i]);
		if (!item)
			continue;
		path_index(ipath, path, i);
		if (item->type == YAML_SEQUENCE_NODE) {
			bad_value(ld, item, ipath, "a socket path or a {path, mode, allow} mapping");
			continue;
		}
		parse_listen_item(ld, doc, item, ipath, p);
	}
}

/* weight: and backup: of a backend mapping; returns the backup: node when it says true. */
static const yaml_node_t *parse_backend_opts(struct ld *ld, yaml_node_t **vals, const char *path,
                                             uint32_t *weight, bool *backup)
{
	char kpath[PATH_BUF];

	if (vals[BE_WEIGHT]) {
		path_key(kpath, path, "weight", 6);
		get_u32(ld, vals[BE_WEIGHT], kpath, 1, CFG_MAX_WEIGHT, weight);
	}
	if (vals[BE_BACKUP]) {
		path_key(kpath, path, "backup", 6);
		if (get_bool(ld, vals[BE_BACKUP], kpath, "true or false", backup) && *backup)
			return vals[BE_BACKUP];
	}
	return NULL;
}

/* One backend: "host:port" or {address, weight, backup}. Returns the
 * backup: node when the item is a backup, for the check that one is not. */
static const yaml_node_t *parse_backend(struct ld *ld, yaml_document_t *doc, const yaml_node_t *n,
                                        const char *path, struct cfg_pool *p)
{
	const yaml_node_t *an = n, *backup_node = NULL;
	char host[NI_MAXHOST], apath[PATH_BUF];
	const char *why = NULL;
	struct cfg_backend *be;
	uint32_t weight = 1;
	bool backup = false;
	uint16_t port;

	snprintf(apath, sizeof apath, "%s", path);
	if (n->type == YAML_MAPPING_NODE) {
		yaml_node_t *vals[BE_N], *knodes[BE_N];

		walk_map(ld, doc, n, path, backend_keys, BE_N, 0, vals, knodes);
		backup_node = parse_backend_opts(ld, vals, path, &weight, &backup);
		path_key(apath, path, "address", 7);
		if (!vals[BE_ADDRESS]) {
			add_err(ld, node_pos(n), apath, "missing key, expected an address host:port");
			return backup_node;
		}
		an = vals[BE_ADDRESS];
	} else if (n->type != YAML_SCALAR_NODE) {
		bad_value(ld, n, path, "an address host:port or a {address, weight, backup} mapping");
		return NULL;
	}
	if (!want_text(ld, an, apath, "an address host:port"))
		return backup_node;
	if (wp_addr_split(sval(an), host, sizeof host, &port, &why) < 0) {
		bad_value(ld, an, apath, "an address host:port, [v6]:port or a.b.c.d:port (%s)", why);
		return backup_node;
	}
	be = &p->backends[p->n_backends];
	be->name = strdup(sval(an));
	if (!be->name) {
		ld->oom = true;
		return backup_node;
	}
	be->weight = weight;
	be->backup = backup;
	be->pos = node_pos(an);
	p->n_backends++;
	refs_add(ld, &ld->backends, apath, be->name, be->pos, be, NULL);
	return backup_node;
}

static void parse_backends(struct ld *ld, yaml_document_t *doc, const yaml_node_t *n, const char *path,
                           struct cfg_pool *p)
{
	char ipath[PATH_BUF], bpath[PATH_BUF];
	const yaml_node_t *first_backup = NULL;
	bool primary = false;
	size_t count;

	count = list_items(ld, n, path, CFG_MAX_BACKENDS, "an address host:port or a list of them",
	                   "at least one backend address", "backends");
	if (!count)
		return;
	p->backends = calloc(count, sizeof *p->backends);
	if (!p->backends) {
		ld->oom = true;
		return;
	}
	if (n->type == YAML_SCALAR_NODE) {
		parse_backend(ld, doc, n, path, p);
		return;
	}
	for (size_t i = 0; i < count; i++) {
		const yaml_node_t *item = node_at(doc, n->data.sequence.items.start[i]), *b;
		if (!item)
			continue;
		path_index(ipath, path, i);
		b = parse_backend(ld, doc, item, ipath, p);
		if (!b) {
			primary = true;
		} else if (!first_backup) {
			first_backup = b;
			path_key(bpath, ipath, "backup", 6);
		}
	}
	if (first_backup && !primary)
		add_err(ld, node_pos(first_backup), bpath,
		        "expected at least one backend without backup: true");
}

/* A socket path that is not a listen item (handoff, admin): checked like
 * one, unique among all of them, and stored in l (its position too).
 * `expected` ends the message, e.g. ", or false" where false is allowed. */
static void socket_path(struct ld *ld, const yaml_node_t *v, const char *path, struct cfg_listen *l,
                        const char *owner, const char *expected)
{
	if (!want_text(ld, v, path, "a socket path"))
		return;
	if (slen(v) == 0 || is_null(v) || slen(v) > SUN_PATH_MAX) {
		bad_value(ld, v, path, "a socket path of 1 to %zu bytes%s", SUN_PATH_MAX, expected);
		return;
	}
	free(l->path);
	l->path = strdup(sval(v));
	if (!l->path) {
		ld->oom = true;
		return;
	}
	l->pos = node_pos(v);
	refs_add(ld, &ld->sockets, path, l->path, l->pos, NULL, owner);
}

/* reuse: false | true | {reset_send, reset_expect, reset_timeout}. */
static void parse_reuse(struct ld *ld, yaml_document_t *doc, const yaml_node_t *n, const char *path,
                        struct cfg_pool *p)
{
	static const char *const keys[] = {"reset_send", "reset_expect", "reset_timeout"};
	struct cfg_reuse *r = &p->reuse;
	yaml_node_t *vals[3], *knodes[3];
	char kpath[PATH_BUF];

	r->reset_timeout_ms = 100; /* the quiet period, without a reset exchange */
	if (n->type != YAML_MAPPING_NODE) {
		get_bool(ld, n, path, "true, false or a mapping of reset_send, reset_expect, reset_timeout",
		         &r->enabled);
		return;
	}
	r->enabled = true;
	walk_map(ld, doc, n, path, keys, 3, 0, vals, knodes);
	if (vals[0]) {
		path_key(kpath, path, "reset_send", 10);
		get_escaped(ld, vals[0], kpath, true, &r->reset_send, &r->reset_send_len);
	}
	if (vals[1]) {
		path_key(kpath, path, "reset_expect", 12);
		get_escaped(ld, vals[1], kpath, true, &r->reset_expect, &r->reset_expect_len);
	}
	if (!vals[0] != !vals[1]) {
		path_key(kpath, path, vals[0] ? "reset_expect" : "reset_send", vals[0] ? 12 : 10);
		add_err(ld, node_pos(n), kpath, "missing key, expected reset_send and reset_expect together");
	}
	if (vals[0] && vals[1])
		r->reset_timeout_ms = 1000;
	if (vals[2]) {
		path_key(kpath, path, "reset_timeout", 13);
		get_duration(ld, vals[2], kpath, 1, 5 * MS_M, &r->reset_timeout_ms);
	}
}

/* handoff: {listen: PATH, mode: "0660"} — a SOCK_SEQPACKET socket handing
 * the warm backend socket itself to libwarmpool clients. */
static void parse_handoff(struct ld *ld, yaml_document_t *doc, const yaml_node_t *n, const char *path,
                          struct cfg_pool *p)
{
	static const char *const keys[] = {"listen", "mode"};
	yaml_node_t *vals[2], *knodes[2];
	char kpath[PATH_BUF];

	if (!want_map(ld, n, path, "a mapping of listen, mode"))
		return;
	walk_map(ld, doc, n, path, keys, 2, 0, vals, knodes);
	p->handoff.mode = 0660;
	if (vals[1]) {
		path_key(kpath, path, "mode", 4);
		if (vals[1]->type != YAML_SCALAR_NODE || strlen(sval(vals[1])) != slen(vals[1]) ||
		    !parse_mode(sval(vals[1]), &p->handoff.mode))
			bad_value(ld, vals[1], kpath, "an octal mode like \"0660\", at most 0777");
	}
	path_key(kpath, path, "listen", 6);
	if (!vals[0]) {
		add_err(ld, node_pos(n), kpath, "missing key, expected a socket path");
		return;
	}
	socket_path(ld, vals[0], kpath, &p->handoff, p->name, "");
}

static bool valid_pool_name(const char *s, size_t len)
{
	if (len == 0 || len > CFG_MAX_NAME || strlen(s) != len)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '.' || c == '-'))
			return false;
	}
	return true;
}

/*
 * One pool: the built-ins (`base`, which holds no pointers), then what
 * `defaults:` gave (`dl`, applied again for each pool so that every pool owns
 * its copies), then its own keys.
 */
static void parse_pool(struct ld *ld, yaml_document_t *doc, const yaml_node_t *key, const yaml_node_t *val,
                       const struct cfg_pool *base, const struct level *dl, struct cfg_pool *p)
{
	yaml_node_t *vals[K_POOL_N], *knodes[K_POOL_N];
	char path[PATH_BUF], kpath[PATH_BUF];
	struct level l;

	*p = *base;
	apply_level(ld, p, dl);
	p->pos = node_pos(key);
	path_key(path, "pools", sval(key), slen(key));
	p->name = strndup(sval(key), slen(key));
	if (!p->name) {
		ld->oom = true;
		return;
	}
	if (!valid_pool_name(sval(key), slen(key))) {
		bad_value(ld, key, path, "a pool name of 1 to %d characters from A-Z a-z 0-9 _ . -",
		          CFG_MAX_NAME);
	}
	if (val->type != YAML_MAPPING_NODE) {
		bad_value(ld, val, path, "a mapping with listen: and backends:");
		return;
	}
	walk_map(ld, doc, val, path, pool_keys, K_POOL_N, 0, vals, knodes);
	path_key(kpath, path, "listen", 6);
	if (vals[K_LISTEN])
		parse_listen(ld, doc, vals[K_LISTEN], kpath, p);
	else
		add_err(ld, p->pos, kpath, "missing key, expected a socket path or a list of them");
	path_key(kpath, path, "backends", 8);
	if (vals[K_BACKENDS])
		parse_backends(ld, doc, vals[K_BACKENDS], kpath, p);
	else
		add_err(ld, p->pos, kpath, "missing key, expected an address host:port or a list of them");
	if (vals[K_HANDOFF]) {
		path_key(kpath, path, "handoff", 7);
		parse_handoff(ld, doc, vals[K_HANDOFF], kpath, p);
	}
	if (vals[K_REUSE]) {
		path_key(kpath, path, "reuse", 5);
		parse_reuse(ld, doc, vals[K_REUSE], kpath, p);
	}
	parse_level(ld, doc, vals, path, dl->set & BIT(F_HC_TYPE), &l);
	apply_level(ld, p, &l);
	check_level(ld, p, &l, path);
	finish_health(ld, &p->health);
	inherit_allow(ld, p);
	level_free(&l);
}

struct name_ref {
	const char *s;
	size_t len;
	size_t idx; /* pair index in pools: */
};

static int cmp_name_ref(const void *a, const void *b)
{
	const struct name_ref *x = a, *y = b;
	size_t n = x->len < y->len ? x->len : y->len;
	int c = memcmp(x->s, y->s, n);

	if (c)
		return c;
	if (x->len != y->len)
		return x->len < y->len ? -1 : 1;
	return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* Pool names are keys of pools:, so repeated names are found by sorting them. */
static void check_pool_names(struct ld *ld, yaml_document_t *doc, const yaml_node_pair_t *pairs, size_t n)
{
	struct name_ref *v = calloc(n ? n : 1, sizeof *v);
	size_t m = 0;
	char path[PATH_BUF];

	if (!v) {
		ld->oom = true;
		return;
	}
	for (size_t i = 0; i < n; i++) {
		const yaml_node_t *k = node_at(doc, pairs[i].key);
		if (k && k->type == YAML_SCALAR_NODE)
			v[m++] = (struct name_ref){sval(k), slen(k), i};
	}
	qsort(v, m, sizeof *v, cmp_name_ref);
	for (size_t i = 1, first = 0; i < m; i++) {
		if (v[i].len != v[first].len || memcmp(v[i].s, v[first].s, v[i].len) != 0) {
			first = i;
			continue;
		}
		path_key(path, "pools", v[i].s, v[i].len);
		add_err(ld, node_pos(node_at(doc, pairs[v[i].idx].key)), path,
		        "duplicate pool name, first defined at line %u",
		        node_pos(node_at(doc, pairs[v[first].idx].key)).line);
	}
	free(v);
}

static void parse_pools(struct ld *ld, yaml_document_t *doc, const yaml_node_t *n,
                        const struct cfg_pool *base, const struct level *dl)
{
	yaml_node_pair_t *pairs;
	size_t count;
	char got[SHOW_BUF];

	if (n->type != YAML_MAPPING_NODE) {
		if (is_null(n))
			add_err(ld, node_pos(n), "pools", "expected at least one pool, got %s", desc(n, got));
		else
			bad_value(ld, n, "pools", "a mapping of pool names to pool settings");
		return;
	}
	pairs = n->data.mapping.pairs.start;
	count = (size_t)(n->data.mapping.pairs.top - pairs);
	if (count == 0) {
		bad_value(ld, n, "pools", "at least one pool");
		return;
	}
	if (count > CFG_MAX_POOLS) {
		add_err(ld, node_pos(n), "pools", "expected at most %d pools, got %zu", CFG_MAX_POOLS, count);
		count = CFG_MAX_POOLS;
	}
	check_pool_names(ld, doc, pairs, count);
	ld->cfg->pools = calloc(count, sizeof *ld->cfg->pools);
	if (!ld->cfg->pools) {
		ld->oom = true;
		return;
	}
	for (size_t i = 0; i < count; i++) {
		const yaml_node_t *k = node_at(doc, pairs[i].key), *v = node_at(doc, pairs[i].value);
		if (!k || !v)
			continue;
		if (k->type != YAML_SCALAR_NODE) {
			add_err(ld, node_pos(k), "pools", "expected a pool name, got %s", desc(k, got));
			continue;
		}
		parse_pool(ld, doc, k, v, base, dl, &ld->cfg->pools[ld->cfg->n_pools]);
		ld->cfg->n_pools++;
		if (ld->oom)
			return;
	}
}

static void parse_daemon(struct ld *ld, yaml_document_t *doc, const yaml_node_t *n)
{
	yaml_node_t *vals[D_N], *knodes[D_N];
	struct cfg_daemon *d = &ld->cfg->daemon;

	if (!want_map(ld, n, "daemon",
	              "a mapping of log_level, shutdown_timeout, admin_socket, admin_socket_mode, "
	              "admin_socket_readonly, metrics_listen"))
		return;
	walk_map(ld, doc, n, "daemon", daemon_keys, D_N, 0, vals, knodes);
	if (vals[D_LOG_LEVEL]) {
		const yaml_node_t *v = vals[D_LOG_LEVEL];
		size_t i = 0, nl = sizeof log_levels / sizeof log_levels[0];
		if (v->type == YAML_SCALAR_NODE)
			for (; i < nl && strcmp(sval(v), log_levels[i].name) != 0; i++)
				;
		if (v->type != YAML_SCALAR_NODE || i == nl || strlen(sval(v)) != slen(v))
			bad_value(ld, v, "daemon.log_level", "one of debug, info, notice, warning, error");
		else
			d->log_level = log_levels[i].level;
	}
	if (vals[D_SHUTDOWN_TO])
		get_duration(ld, vals[D_SHUTDOWN_TO], "daemon.shutdown_timeout", 0, MS_H,
		             &d->shutdown_timeout_ms);
	if (vals[D_ADMIN_MODE]) {
		const yaml_node_t *v = vals[D_ADMIN_MODE];
		if (v->type != YAML_SCALAR_NODE || strlen(sval(v)) != slen(v) || !parse_mode(sval(v), &d->admin.mode))
			bad_value(ld, v, "daemon.admin_socket_mode", "an octal mode like \"0600\", at most 0777");
	}
	if (vals[D_ADMIN]) {
		bool on = true;
		const yaml_node_t *v = vals[D_ADMIN];
		if (v->type == YAML_SCALAR_NODE && v->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
		    (strcmp(sval(v), "false") == 0 || strcmp(sval(v), "off") == 0 || strcmp(sval(v), "no") == 0))
			on = false;
		free(d->admin.path);
		d->admin.path = NULL;
		if (on)
			socket_path(ld, v, "daemon.admin_socket", &d->admin, "daemon", ", or false");
	}
	if (vals[D_ADMIN_RO])
		socket_path(ld, vals[D_ADMIN_RO], "daemon.admin_socket_readonly", &d->admin_ro, "daemon", "");
	if (vals[D_METRICS]) {
		const yaml_node_t *v = vals[D_METRICS];
		char host[NI_MAXHOST];
		const char *why = NULL;
		uint16_t port;
		if (!want_text(ld, v, "daemon.metrics_listen", "an address host:port"))
			return;
		if (wp_addr_split(sval(v), host, sizeof host, &port, &why) < 0) {
			bad_value(ld, v, "daemon.metrics_listen", "an address host:port, [v6]:port or a.b.c.d:port (%s)",
			          why);
			return;
		}
		d->metrics.name = strdup(sval(v));
		if (!d->metrics.name) {
			ld->oom = true;
			return;
		}
		d->metrics.pos = node_pos(v);
		refs_add(ld, &ld->backends, "daemon.metrics_listen", d->metrics.name, d->metrics.pos, &d->metrics,
		         NULL);
	}
}

/* Relations within `defaults:` on their own, so that each is reported once. */
static void check_defaults(struct ld *ld, const struct cfg_pool *base, const struct level *dl)
{
	struct cfg_pool merged = *base;

	apply_level(ld, &merged, dl);
	check_level(ld, &merged, dl, "defaults");
	health_free(&merged.health);
	allow_free(&merged.allow);
}

static void walk_root(struct ld *ld, yaml_document_t *doc)
{
	yaml_node_t *root = yaml_document_get_root_node(doc);
	yaml_node_t *vals[T_N], *knodes[T_N];
	yaml_node_t *dvals[K_POOL_N], *dknodes[K_POOL_N];
	struct cfg_pool base = {0};
	struct level dl = {0};

	if (!root || is_null(root)) {
		add_err(ld, root ? node_pos(root) : (struct cfg_pos){1, 1}, NULL,
		        "expected a mapping with a pools: key, got an empty document");
		return;
	}
	if (root->type != YAML_MAPPING_NODE) {
		bad_value(ld, root, NULL, "a mapping with a pools: key");
		return;
	}
	walk_map(ld, doc, root, NULL, top_keys, T_N, 0, vals, knodes);
	if (vals[T_DAEMON])
		parse_daemon(ld, doc, vals[T_DAEMON]);

	builtin_pool(&base);
	if (vals[T_DEFAULTS] && want_map(ld, vals[T_DEFAULTS], "defaults", "a mapping of pool settings")) {
		walk_map(ld, doc, vals[T_DEFAULTS], "defaults", pool_keys, K_POOL_N, K_MIN_IDLE, dvals,
		         dknodes);
		for (int k = K_LISTEN; k <= K_BACKENDS; k++) {
			if (dknodes[k])
				add_err(ld, node_pos(dknodes[k]),
				        k == K_LISTEN ? "defaults.listen" : "defaults.backends",
				        "not allowed in defaults, set it in each pool");
		}
		parse_level(ld, doc, dvals, "defaults", false, &dl);
		check_defaults(ld, &base, &dl);
	}
	if (vals[T_POOLS])
		parse_pools(ld, doc, vals[T_POOLS], &base, &dl);
	else
		add_err(ld, node_pos(root), "pools",
		        "missing key, expected a mapping of pool names to pool settings");
	level_free(&dl);
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

static void check_sockets(struct ld *ld)
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
 * helper thread) and waited for with gai_suspend() until one deadline for
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
 */
struct resolve_req {
	struct gaicb cb; /* first: cb.ar_name etc. point into this struct */
	struct addrinfo hints;
	char host[NI_MAXHOST];
	char port[8];
	struct resolve_req *next; /* on `abandoned` */
};

static struct resolve_req *abandoned;

/* Free the parked requests whose lookups have returned. */
static void reap_abandoned(void)
{
	for (struct resolve_req **pp = &abandoned; *pp;) {
		struct resolve_req *q = *pp;
		if (gai_error(&q->cb) == EAI_INPROGRESS) {
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

/* Wait until every request in v[0..n) is done or the deadline passes.
 * gai_suspend() returns at once when any request it is given has already
 * finished, so each round passes only the pending ones (in `pend`, n
 * slots), which keeps this a wait, not a spin. */
static void resolve_wait(struct gaicb **v, size_t n, struct gaicb **pend, int64_t deadline)
{
	for (;;) {
		size_t k = 0;
		for (size_t i = 0; i < n; i++)
			if (gai_error(v[i]) == EAI_INPROGRESS)
				pend[k++] = v[i];
		int64_t left = deadline - mono_ms();
		if (!k || left <= 0)
			return;
		struct timespec ts = {.tv_sec = left / 1000, .tv_nsec = (left % 1000) * 1000000};
		/* 0: one finished; EAI_AGAIN: timed out; EAI_INTR: a signal: look again. */
		(void)gai_suspend((const struct gaicb *const *)pend, (int)k, &ts);
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

static void resolve_backends(struct ld *ld)
{
	size_t n = ld->backends.n, k = 0;
	struct resolve_req **reqs = calloc(n ? n : 1, sizeof *reqs);
	struct gaicb **list = calloc(n ? n : 1, sizeof *list);
	struct gaicb **pend = calloc(n ? n : 1, sizeof *pend);
	size_t *which = calloc(n ? n : 1, sizeof *which);

	reap_abandoned();
	if (!reqs || !list || !pend || !which) {
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
	resolve_wait(list, k, pend, mono_ms() + CFG_RESOLVE_TIMEOUT_MS);
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
	}
out:
	for (size_t j = 0; reqs && j < k; j++) {
		if (reqs[j] && reqs[j]->cb.ar_result)
			freeaddrinfo(reqs[j]->cb.ar_result);
		free(reqs[j]);
	}
	free(reqs);
	free(list);
	free(pend);
	free(which);
}

/* A pool whose listen items carry an ACL while its handoff socket has none
 * (the handoff socket has no allow: of its own: it takes the pool's). Any
 * local user who can reach the handoff file then gets warm connections
 * (checkout) the listeners would refuse them. Valid, but almost certainly
 * not meant: a warning, with the fix. */
static void collect_warnings(struct ld *ld)
{
	struct cfg_errors *w = &ld->cfg->warnings;
	char name[SHOW_BUF];

	for (size_t i = 0; i < ld->cfg->n_pools; i++) {
		const struct cfg_pool *p = &ld->cfg->pools[i];
		size_t with = p->n_listen;
		if (!p->handoff.path || p->handoff.allow.enabled)
			continue;
		for (size_t j = 0; j < p->n_listen && with == p->n_listen; j++)
			if (p->listen[j].allow.enabled)
				with = j;
		if (with == p->n_listen || w->n >= CFG_MAX_ERRORS)
			continue;
		char **v = realloc(w->msg, (w->n + 1) * sizeof *v);
		if (!v) {
			ld->oom = true;
			return;
		}
		w->msg = v;
		show(p->name, strlen(p->name), false, name);
		if (asprintf(&v[w->n], "%s:%u:%u: pools.%s.handoff: warning: the handoff socket %s has no allow: "
		             "while listen[%zu] has one: any user who can reach the socket file can take "
		             "connections; put allow: on the pool itself, which covers the handoff socket and "
		             "every listen item",
		             ld->file, p->handoff.pos.line, p->handoff.pos.col, name, p->handoff.path, with) < 0) {
			ld->oom = true;
			return;
		}
		w->n++;
	}
}

/* ------------------------------------------------------------------ */
/* Entry points                                                        */

static int cmp_err(const void *a, const void *b)
{
	const struct err_item *x = a, *y = b;

	if (x->line != y->line)
		return x->line < y->line ? -1 : 1;
	if (x->col != y->col)
		return x->col < y->col ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Move the collected errors into `errs`, sorted by position. */
static void hand_over(struct ld *ld, struct cfg_errors *errs)
{
	if (ld->oom && ld->n_errs < CFG_MAX_ERRORS)
		add_err(ld, (struct cfg_pos){0, 0}, NULL, "out of memory");
	errs->truncated = ld->truncated;
	if (ld->n_errs == 0)
		goto out;
	qsort(ld->errs, ld->n_errs, sizeof *ld->errs, cmp_err);
	errs->msg = calloc(ld->n_errs, sizeof *errs->msg);
	if (!errs->msg) {
		errs->truncated += ld->n_errs;
		for (size_t i = 0; i < ld->n_errs; i++)
			free(ld->errs[i].msg);
		goto out;
	}
	for (size_t i = 0; i < ld->n_errs; i++)
		errs->msg[i] = ld->errs[i].msg;
	errs->n = ld->n_errs;
out:
	if (errs->n == 0 && errs->truncated == 0)
		errs->truncated = 1; /* never report failure with nothing to show */
	free(ld->errs);
	ld->errs = NULL;
	ld->n_errs = 0;
}

static void ld_done(struct ld *ld)
{
	refs_free(&ld->sockets);
	refs_free(&ld->backends);
	free(ld->errs);
}

static int load(const char *name, const char *buf, size_t len, struct wp_config **out,
                struct cfg_errors *errs)
{
	struct ld ld = {.file = name ? name : "<config>", .buf = buf, .len = len};
	yaml_document_t doc;
	bool have_doc = false;

	if (len > CFG_MAX_FILE_SIZE) {
		add_err(&ld, (struct cfg_pos){0, 0}, NULL, "file too large, expected at most %d bytes",
		        CFG_MAX_FILE_SIZE);
		goto fail;
	}
	ld.cfg = calloc(1, sizeof *ld.cfg);
	if (!ld.cfg || !(ld.cfg->path = strdup(ld.file))) {
		ld.oom = true;
		goto fail;
	}
	ld.cfg->daemon.log_level = CFG_LOG_INFO;
	ld.cfg->daemon.shutdown_timeout_ms = 30 * MS_S;
	ld.cfg->daemon.admin.mode = 0600;
	ld.cfg->daemon.admin_ro.mode = 0660; /* read access is handed out by group */
	ld.cfg->daemon.admin.path = strdup(CFG_DEFAULT_ADMIN_SOCKET);
	if (!ld.cfg->daemon.admin.path)
		ld.oom = true;

	/* Phase 1 */
	if (!scan_events(&ld))
		goto fail;
	{
		yaml_parser_t p;
		if (!yaml_parser_initialize(&p)) {
			ld.oom = true;
			goto fail;
		}
		yaml_parser_set_input_string(&p, (const unsigned char *)buf, len);
		have_doc = yaml_parser_load(&p, &doc);
		if (!have_doc)
			syntax_error(&ld, &p);
		yaml_parser_delete(&p);
		if (!have_doc)
			goto fail;
	}

	/* Phase 2 */
	walk_root(&ld, &doc);

	/* Phase 3 */
	if (!ld.oom) {
		check_sockets(&ld);
		resolve_backends(&ld);
	}
	if (!failed(&ld))
		collect_warnings(&ld);
	if (failed(&ld))
		goto fail;
	yaml_document_delete(&doc);
	ld_done(&ld);
	*out = ld.cfg;
	return 0;
fail:
	if (have_doc)
		yaml_document_delete(&doc);
	hand_over(&ld, errs);
	cfg_free(ld.cfg);
	ld_done(&ld);
	return -1;
}

int cfg_load_buffer(const char *name, const char *buf, size_t len, struct wp_config **out,
                    struct cfg_errors *errs)
{
	struct cfg_errors scratch = {0};
	int r;

	*out = NULL;
	if (!errs)
		errs = &scratch;
	*errs = (struct cfg_errors){0};
	if (!buf) /* libyaml asserts on a NULL input */
		buf = "", len = 0;
	r = load(name, buf, len, out, errs);
	cfg_errors_free(&scratch);
	return r;
}

int cfg_load_file(const char *path, struct wp_config **out, struct cfg_errors *errs)
{
	struct cfg_errors scratch = {0};
	struct ld ld = {.file = path};
	size_t len = 0, cap = 64 * 1024;
	char *buf = NULL;
	int fd, r;

	*out = NULL;
	if (!errs)
		errs = &scratch;
	*errs = (struct cfg_errors){0};
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		add_err(&ld, (struct cfg_pos){0, 0}, NULL, "cannot open: %s", strerror(errno));
		goto fail;
	}
	/* Read at most one byte past the limit: enough to know it is too big. */
	for (;;) {
		ssize_t n;
		if (len == cap || !buf) {
			char *nb;
			if (buf)
				cap = cap * 2 > CFG_MAX_FILE_SIZE + 1 ? CFG_MAX_FILE_SIZE + 1 : cap * 2;
			nb = realloc(buf, cap);
			if (!nb) {
				ld.oom = true;
				goto fail;
			}
			buf = nb;
		}
		n = read(fd, buf + len, cap - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			add_err(&ld, (struct cfg_pos){0, 0}, NULL, "cannot read: %s", strerror(errno));
			goto fail;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len > CFG_MAX_FILE_SIZE) {
			add_err(&ld, (struct cfg_pos){0, 0}, NULL,
			        "file too large, expected at most %d bytes", CFG_MAX_FILE_SIZE);
			goto fail;
		}
	}
	close(fd);
	fd = -1;
	r = load(path, buf, len, out, errs);
	free(buf);
	cfg_errors_free(&scratch);
	return r;
fail:
	if (fd >= 0)
		close(fd);
	free(buf);
	hand_over(&ld, errs);
	ld_done(&ld);
	cfg_errors_free(&scratch);
	return -1;
}

void cfg_free(struct wp_config *cfg)
{
	if (!cfg)
		return;
	for (size_t i = 0; i < cfg->n_pools; i++) {
		struct cfg_pool *p = &cfg->pools[i];
		free(p->name);
		for (size_t j = 0; j < p->n_listen; j++) {
			free(p->listen[j].path);
			allow_free(&p->listen[j].allow);
		}
		free(p->listen);
		for (size_t j = 0; j < p->n_backends; j++)
			free(p->backends[j].name);
		free(p->backends);
		free(p->handoff.path);
		free(p->reuse.reset_send);
		free(p->reuse.reset_expect);
		allow_free(&p->handoff.allow);
		health_free(&p->health);
		allow_free(&p->allow);
	}
	free(cfg->pools);
	free(cfg->daemon.admin.path);
	free(cfg->daemon.admin_ro.path);
	free(cfg->daemon.metrics.name);
	free(cfg->path);
	cfg_errors_free(&cfg->warnings);
	free(cfg);
}

void cfg_errors_free(struct cfg_errors *errs)
{
	if (!errs)
		return;
	for (size_t i = 0; i < errs->n; i++)
		free(errs->msg[i]);
	free(errs->msg);
	errs->msg = NULL;
	errs->n = 0;
	errs->truncated = 0;
}

const char *cfg_log_level_name(int level)
{
	for (size_t i = 0; i < sizeof log_levels / sizeof log_levels[0]; i++) {
		if (log_levels[i].level == level)
			return log_levels[i].name;
	}
	return NULL;
}

const char *cfg_balance_name(enum cfg_balance b)
{
	return (size_t)b < N_BALANCE ? balance_names[b] : NULL;
}

const char *cfg_check_type_name(enum cfg_check_type t)
{
	return (size_t)t < N_CHECK ? check_names[t] : NULL;
}
