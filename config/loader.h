/*
 * config/loader.h — what the files of the loader share (internal to config/).
 *
 * The loader (cfg_load_file, cfg_load_buffer) is split by phase, each file
 * with its essay:
 *   errors.c  collecting finished "file:line:col: key.path: message" lines,
 *             quoting values in them, sorting and handing them over;
 *   scan.c    phase 1, YAML syntax: libyaml events, nesting depth, aliases;
 *   value.c   the values: nodes and key paths, integers, durations, enums,
 *             escapes, hex, the regex guard, modes, the table's defaults and
 *             its generic parser get_key;
 *   keys.c    the key table (keys.h);
 *   config.c  the spine: blocks (pools, listen, backends, allow, health
 *             checks), the merge of defaults:, relations inside a pool, load();
 *   tls.c     a pool's tls: block after merging: its files read and hashed,
 *             the client SSL_CTX built (cfg_tls.ctx, .digest);
 *   check.c   phase 3, cross-checks: unique socket paths, name resolution,
 *             warnings;
 *   diff.c    what a reload must do with a changed pool (cfg_pool_diff).
 * Nothing here is part of the daemon's interface (config.h is).
 */
#ifndef WARMPOOL_CONFIG_LOADER_H
#define WARMPOOL_CONFIG_LOADER_H

#include "config.h"
#include "keys.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/un.h>
#include <yaml.h>

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
	struct tls_store *stores; /* tls.c: trust stores built by this load, shared by pools alike */
};


/* ---- Error collection and quoting (errors.c) */

void add_errv(struct ld *ld, struct cfg_pos pos, const char *path, const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0)));
void add_err(struct ld *ld, struct cfg_pos pos, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void add_err_once(struct ld *ld, struct cfg_pos pos, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void add_warning(struct ld *ld, struct cfg_pos pos, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void bad_value(struct ld *ld, const yaml_node_t *n, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
struct cfg_pos mark_pos(yaml_mark_t m);
struct cfg_pos node_pos(const yaml_node_t *n);
bool failed(const struct ld *ld);
void show(const char *s, size_t len, bool quotes, char *out);
const char *sval(const yaml_node_t *n);
size_t slen(const yaml_node_t *n);
const char *desc(const yaml_node_t *n, char *out);
void hand_over(struct ld *ld, struct cfg_errors *errs);

/* ---- Phase 1: YAML syntax (scan.c) */

void syntax_error(struct ld *ld, const yaml_parser_t *p);
bool scan_events(struct ld *ld);

/* ---- Values: nodes, key paths, plain values, bytes, regex, modes (value.c) */

void key_defaults(unsigned where, enum cfg_item item, void *base);
void builtin_pool(struct cfg_pool *p);
yaml_node_t *node_at(yaml_document_t *doc, int index);
bool is_null(const yaml_node_t *n);
void path_key(char *out, const char *parent, const char *key, size_t keylen);
void path_index(char *out, const char *parent, size_t i);
void walk_map(struct ld *ld, yaml_document_t *doc, const yaml_node_t *map, const char *path,
                     const char *const *keys, size_t nkeys, size_t listed, yaml_node_t **vals,
                     yaml_node_t **knodes);
bool want_map(struct ld *ld, const yaml_node_t *n, const char *path, const char *what);
bool want_text(struct ld *ld, const yaml_node_t *n, const char *path, const char *what);
bool get_u32(struct ld *ld, const yaml_node_t *n, const char *path, uint32_t lo, uint32_t hi,
                    uint32_t *out);
const char *fmt_ms(uint64_t ms, char *buf, size_t sz);
bool get_bool(struct ld *ld, const yaml_node_t *n, const char *path, const char *what, bool *out);
unsigned char *dup_bytes(struct ld *ld, const void *src, size_t len);
bool get_escaped(struct ld *ld, const yaml_node_t *n, const char *path, bool nonempty,
                        unsigned char **out, size_t *len);
bool get_hex(struct ld *ld, const yaml_node_t *n, const char *path, bool nonempty, unsigned char **out,
                    size_t *len);
regex_t *compile_regex(const char *src);
void free_regex(regex_t *re);
bool get_regex(struct ld *ld, const yaml_node_t *n, const char *path, char **src);
bool get_http_path(struct ld *ld, const yaml_node_t *n, const char *path, char **out);
bool get_key(struct ld *ld, const struct cfg_key *k, const yaml_node_t *n, const char *path, void *base);
bool get_alpn(struct ld *ld, yaml_document_t *doc, const struct cfg_key *k, const yaml_node_t *n,
              const char *path, unsigned char **out, size_t *len);
bool get_mode(struct ld *ld, const yaml_node_t *n, const char *path, const char *example, mode_t *out);

/* ---- TLS (tls.c) */

/* The keys of a tls: block, in the order of the key table. */
enum tls_key {
	TK_TLS, /* the tls: key itself */
	TK_VERIFY,
	TK_CA_FILE,
	TK_CA_PATH,
	TK_SERVER_NAME,
	TK_CERT_FILE,
	TK_KEY_FILE,
	TK_MIN_VERSION,
	TK_CIPHERS,
	TK_CIPHERSUITES,
	TK_ALPN,
	TK_SESSION_RESUMPTION,
	TK_STARTTLS,
	TK_N
};
extern const char *const tls_key_names[TK_N]; /* "tls", "verify", "ca_file", ... */

/* Where one setting of a merged block came from, for a message about it:
 * the pool's own value, else the one of defaults:. */
struct origin {
	struct cfg_pos pos;  /* the value (the tls: key for TK_TLS); line 0: a built-in value */
	char path[PATH_BUF]; /* "pools.p.tls.ca_file" or "defaults.tls.ca_file" */
};

void tls_build(struct ld *ld, struct cfg_tls *t, const struct origin *o);
void tls_ctx_free(struct cfg_tls *t);
void tls_done(struct ld *ld); /* drop the load's trust stores (contexts keep their references) */

/* ---- Phase 3: cross-checks (check.c) */

bool refs_add(struct ld *ld, struct refs *r, const char *label, const char *text, struct cfg_pos pos,
                     struct cfg_backend *be, const char *pool);
void refs_free(struct refs *r);
void check_sockets(struct ld *ld);
void resolve_backends(struct ld *ld);
void collect_warnings(struct ld *ld);

#endif
