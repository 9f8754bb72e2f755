/*
 * config/config.c — load warmpool.yaml into struct wp_config (see config.h):
 * the loader's spine (load, walk_root) and the blocks of phase 2. The other
 * phases and pieces have their own files (config/loader.h lists them).
 *
 * Three phases over one in-memory copy of the file:
 *   1. Syntax (scan.c, scan_events): libyaml's event parser walks the whole stream
 *      once before any tree exists. It finds syntax errors, anchors and
 *      aliases (rejected: a loaded alias is a shared node, even a cycle),
 *      nesting deeper than CFG_MAX_DEPTH (libyaml 0.2.5 has no limit of its
 *      own) and more than one document. Only a stream that passes is handed
 *      to yaml_parser_load() for the document tree.
 *   2. Typed fields (walk_root, here; plain values in value.c): every mapping is matched against its keys
 *      in the key table (keys.c, cfg_key_children; walk_map reports unknown
 *      and duplicate keys). Plain values are converted by the table's rows
 *      (get_key: type and range), the others by their parsers here; a pool
 *      starts from the table's built-in values (builtin_pool), then takes
 *      what `defaults:` gave, then its own keys (struct level, merged row by
 *      row in apply_level), blocks (backoff, health_check, keepalive, tls,
 *      dns) included; a backend item's own dns: goes over its pool's (so
 *      a pool's own keys are merged before its backends are read). `allow:`
 *      and `reuse:` are the exceptions: each replaces as a
 *      whole block, and a listen item's own `allow:` replaces the pool's. The
 *      defaults level is applied to each pool anew, so every pool owns its
 *      copies of health-check bytes, path, compiled regex, allowed ids, reset
 *      bytes and tls strings. User and group names in `allow:` are resolved
 *      as they are read (getpwnam_r, getgrnam_r). A merged tls: block gets
 *      its SSL_CTX and digest (finish_tls; tls.c reads its files).
 *   3. Cross-checks (check.c: check_sockets, resolve_backends): socket paths unique
 *      across pools, metrics_listen's host name resolved within
 *      CFG_RESOLVE_TIMEOUT_MS (getaddrinfo_a). A backend's host is an IP
 *      literal, whose address is taken in phase 2 without a lookup, or a DNS
 *      name, never resolved by a load (is_name: the daemon resolves it in its
 *      loop, with the backend's merged dns: settings). A valid config may
 *      still earn warnings (collect_warnings), handed over in cfg->warnings.
 * Relations inside one pool (min_idle <= max_connections, backoff max >=
 * initial, the keys a health-check type needs or excludes) are checked as
 * soon as the pool is merged, and blamed on the most specific value that
 * took part, so one bad `defaults:` value yields one error rather than one
 * per pool. A pool needs one backend that is not `backup: true`.
 *
 * Every error becomes one finished line "file:line:col: key.path: message"
 * (errors.c; libyaml marks are 0-based, we add 1). All of them are collected, sorted
 * by position, and handed to the caller. Nothing here logs; the only state
 * kept between calls is the list of abandoned name lookups (see
 * resolve_backends).
 */
#include "loader.h"

#include "addr.h"
#include "escape.h"

#include <arpa/inet.h>
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
#include <strings.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <yaml.h>


/*
 * Values given at one level: `defaults:` or one pool. Plain values sit in
 * `v` at the key table's offsets; health-check bytes, path, expect_regex
 * (its source) and allow are owned here. Flags, nodes and key paths are kept
 * per row of cfg_keys (keys.h). The bytes of send/send_hex are flagged
 * under "health_check.send", those of expect/expect_hex/expect_regex under
 * "health_check.expect": the spellings replace each other.
 */
struct level {
	struct cfg_pool v;
	unsigned where;                       /* CFG_IN_DEFAULTS or CFG_IN_POOL: the rows it may give */
	bool set[CFG_MAX_KEYS];               /* a valid value was given here */
	const yaml_node_t *node[CFG_MAX_KEYS]; /* where each value was written */
	const char *key[CFG_MAX_KEYS];         /* its key path below the level, for messages */
};

/* The sections of the document; their keys come from the key table. */
enum top_key { T_DAEMON, T_DEFAULTS, T_POOLS, T_N };
static const char *const top_keys[T_N] = {"daemon", "defaults", "pools"};

/* The row of a pool key (a constant path of the table: a typo aborts every
 * load, which the unit tests would show at once). */
static int row(const char *path)
{
	int i = cfg_key_find(CFG_IN_POOL, path);

	if (i < 0)
		abort();
	return i;
}

/* The row of key `name` of the block `prefix` ("" for the pool itself). */
static int row_in(const char *prefix, const char *name)
{
	char path[64];

	snprintf(path, sizeof path, "%s%s%s", prefix, *prefix ? "." : "", name);
	return row(path);
}

/* Record what a level said about row r: where, under which key, and whether it was valid. */
static void mark(struct level *l, int r, const yaml_node_t *n, const char *key, bool ok)
{
	l->set[r] = ok;
	l->node[r] = n;
	l->key[r] = key;
}

/* A row that heads a block of its own (keepalive, reuse): parsed by the block. */
static bool is_block(size_t i)
{
	size_t len = strlen(cfg_keys[i].path);

	return i + 1 < cfg_n_keys && strncmp(cfg_keys[i + 1].path, cfg_keys[i].path, len) == 0 &&
	       cfg_keys[i + 1].path[len] == '.';
}

/*
 * Every plain value of block `prefix` ("" = the level itself) that
 * `defaults:` and pools may give: vals/ks come from walk_map over the
 * block's keys, `path` is the block's key path for messages.
 */
static void parse_rows(struct ld *ld, const char *prefix, const struct cfg_keyset *ks, yaml_node_t **vals,
                       const char *path, struct level *l)
{
	char kpath[PATH_BUF];

	for (size_t i = 0; i < cfg_n_keys; i++) {
		const struct cfg_key *k = &cfg_keys[i];
		const char *name = cfg_key_name(k);
		int j;

		if (!(k->where & l->where) || !cfg_key_scalar(k) || !cfg_key_under(k, prefix) || is_block(i))
			continue;
		j = cfg_keyset_find(ks, name);
		if (j < 0 || !vals[j])
			continue;
		path_key(kpath, path, name, strlen(name));
		mark(l, (int)i, vals[j], k->path, get_key(ld, k, vals[j], kpath, &l->v));
	}
}

/* The keys of block `prefix` of a pool, matched in mapping n. */
static void walk_block(struct ld *ld, yaml_document_t *doc, const yaml_node_t *n, const char *path,
                       const char *prefix, struct cfg_keyset *ks, yaml_node_t **vals, yaml_node_t **knodes)
{
	cfg_key_children(CFG_IN_POOL, prefix, ks);
	walk_map(ld, doc, n, path, ks->v, ks->n, 0, vals, knodes);
}

/* The value of key `name` in a walked block, or NULL. */
static yaml_node_t *val_of(const struct cfg_keyset *ks, yaml_node_t **vals, const char *name)
{
	int j = cfg_keyset_find(ks, name);

	return j < 0 ? NULL : vals[j];
}

static void parse_backoff(struct ld *ld, yaml_document_t *doc, const yaml_node_t *n, const char *path,
                          struct level *l)
{
	yaml_node_t *vals[CFG_MAX_CHILD], *knodes[CFG_MAX_CHILD];
	struct cfg_keyset ks;

	if (!want_map(ld, n, path, "a mapping of initial, max, multiplier, jitter"))
		return;
	walk_block(ld, doc, n, path, "backoff", &ks, vals, knodes);
	parse_rows(ld, "backoff", &ks, vals, path, l);
}

/* The first of names[0..n) given in the mapping, in document order; the
 * others are reported. Returns its index in ks, or -1 when none is given. */
static int pick_one(struct ld *ld, const struct cfg_keyset *ks, yaml_node_t **vals, yaml_node_t **knodes,
                    const char *const *names, size_t n, const char *path)
{
	char kpath[PATH_BUF], list[PATH_BUF];
	size_t o = 0;
	int first = -1, idx[4];

	for (size_t i = 0; i < n; i++) {
		idx[i] = cfg_keyset_find(ks, names[i]);
		if (idx[i] >= 0 && vals[idx[i]] &&
		    (first < 0 || knodes[idx[i]]->start_mark.index < knodes[first]->start_mark.index))
			first = idx[i];
	}
	for (size_t i = 0; i < n && o < sizeof list; i++)
		o += (size_t)snprintf(list + o, sizeof list - o, "%s%s", i ? ", " : "", names[i]);
	for (size_t i = 0; i < n; i++) {
		if (idx[i] < 0 || !vals[idx[i]] || idx[i] == first)
			continue;
		path_key(kpath, path, names[i], strlen(names[i]));
		add_err(ld, node_pos(knodes[idx[i]]), kpath, "expected only one of %s", list);
	}
	return first;
}

/* send / send_hex, and expect / expect_hex / expect_regex. */
static void parse_check_bytes(struct ld *ld, const struct cfg_keyset *ks, yaml_node_t **vals,
                              yaml_node_t **knodes, const char *path, struct level *l)
{
	static const char *const sends[] = {"send", "send_hex"}, *const expects[] = {"expect", "expect_hex",
	                                                                            "expect_regex"};
	struct cfg_health *h = &l->v.health;
	char kpath[PATH_BUF];
	const char *name;
	bool ok;
	int k;

	k = pick_one(ld, ks, vals, knodes, sends, 2, path);
	if (k >= 0) {
		name = ks->v[k];
		path_key(kpath, path, name, strlen(name));
		ok = strcmp(name, "send") == 0 ? get_escaped(ld, vals[k], kpath, false, &h->send, &h->send_len)
		                               : get_hex(ld, vals[k], kpath, false, &h->send, &h->send_len);
		mark(l, row("health_check.send"), vals[k], cfg_keys[row_in("health_check", name)].path, ok);
	}
	k = pick_one(ld, ks, vals, knodes, expects, 3, path);
	if (k >= 0) {
		name = ks->v[k];
		path_key(kpath, path, name, strlen(name));
		if (strcmp(name, "expect") == 0)
			ok = get_escaped(ld, vals[k], kpath, true, &h->expect, &h->expect_len);
		else if (strcmp(name, "expect_hex") == 0)
			ok = get_hex(ld, vals[k], kpath, true, &h->expect, &h->expect_len);
		else
			ok = get_regex(ld, vals[k], kpath, &h->expect_regex);
		mark(l, row("health_check.expect"), vals[k], cfg_keys[row_in("health_check", name)].path, ok);
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
	yaml_node_t *vals[CFG_MAX_CHILD], *knodes[CFG_MAX_CHILD], *v;
	struct cfg_keyset ks;
	char kpath[PATH_BUF];

	if (n->type != YAML_MAPPING_NODE && !is_null(n)) {
		bad_value(ld, n, path,
		          "a mapping of type, interval, timeout, rise, fall and the type's keys");
		return;
	}
	walk_block(ld, doc, n, path, "health_check", &ks, vals, knodes);
	if (!val_of(&ks, vals, "type") && !inherited) {
		l->v.health.type = CFG_CHECK_CONNECT;
		mark(l, row("health_check.type"), n, "health_check", true);
	}
	parse_check_bytes(ld, &ks, vals, knodes, path, l);
	if ((v = val_of(&ks, vals, "path"))) {
		path_key(kpath, path, "path", 4);
		mark(l, row("health_check.path"), v, "health_check.path", get_http_path(ld, v, kpath, &l->v.health.path));
	}
	/* Who a role-aware check logs in as (owned strings: merged, compared and
	 * freed from their rows); the password is read after merging. */
	static const char *const login[] = {"user", "database", "password_file"};
	for (size_t i = 0; i < 3; i++) {
		int r = row_in("health_check", login[i]);
		if (!(v = val_of(&ks, vals, login[i])))
			continue;
		path_key(kpath, path, login[i], strlen(login[i]));
		mark(l, r, v, cfg_keys[r].path, get_key(ld, &cfg_keys[r], v, kpath, &l->v));
	}
	parse_rows(ld, "health_check", &ks, vals, path, l);
}

/*
 * The head of a block that is also a switch (keepalive, tls; row r): true
 * or false sets *on; a mapping (or an empty value) turns it on, and only then
 * is true returned: its keys are to be walked. The row is marked at `at`.
 */
static bool switch_block(struct ld *ld, const yaml_node_t *n, const yaml_node_t *at, const char *path, int r,
                         bool *on, struct level *l)
{
	if (n->type != YAML_MAPPING_NODE && !is_null(n)) {
		mark(l, r, at, cfg_keys[r].path, get_bool(ld, n, path, cfg_keys[r].what, on));
		return false;
	}
	*on = true;
	mark(l, r, at, cfg_keys[r].path, true);
	return true;
}

/* keepalive: true/false, or a mapping (which turns it on) of idle, interval, count. */
static void parse_keepalive(struct ld *ld, yaml_document_t *doc, const yaml_node_t *n, const char *path,
                            struct level *l)
{
	yaml_node_t *vals[CFG_MAX_CHILD], *knodes[CFG_MAX_CHILD];
	struct cfg_keyset ks;

	if (!switch_block(ld, n, n, path, row("keepalive"), &l->v.keepalive.enabled, l))
		return;
	walk_block(ld, doc, n, path, "keepalive", &ks, vals, knodes);
	parse_rows(ld, "keepalive", &ks, vals, path, l);
}

/*
 * tls: true/false, or a mapping (which turns TLS on) of the tls rows' keys,
 * merged key by key with defaults: (apply_level). The tls row is marked at
 * its key, which messages about the block as a whole point at.
 */
static void parse_tls(struct ld *ld, yaml_document_t *doc, const yaml_node_t *key, const yaml_node_t *n,
                      const char *path, struct level *l)
{
	yaml_node_t *vals[CFG_MAX_CHILD], *knodes[CFG_MAX_CHILD], *v;
	struct cfg_keyset ks;
	char kpath[PATH_BUF];

	l->v.tls.pos = node_pos(key);
	if (!switch_block(ld, n, key, path, row("tls"), &l->v.tls.enabled, l))
		return;
	walk_block(ld, doc, n, path, "tls", &ks, vals, knodes);
	for (size_t i = 0; i < cfg_n_keys; i++) {
		const struct cfg_key *k = &cfg_keys[i];
		const char *name = cfg_key_name(k);
		char *base = (char *)&l->v;
		bool ok;

		if (!cfg_key_under(k, "tls") || !(v = val_of(&ks, vals, name)))
			continue;
		path_key(kpath, path, name, strlen(name));
		if (k->type == CFG_T_ALPN)
			ok = get_alpn(ld, doc, k, v, kpath, (unsigned char **)(void *)(base + k->off),
			              (size_t *)(void *)(base + k->len_off));
		else
			ok = get_key(ld, k, v, kpath, base);
		mark(l, (int)i, v, k->path, ok);
	}
}

/* ---- dns: {refresh, respect_ttl, ..., servers} ---------------------------- */

#define DNS_PORT 53 /* the port of a dns.servers entry written without one */

static void servers_free(char **v, size_t n);

/*
 * One dns.servers entry: an IP address with or without a port ("10.0.0.2",
 * "10.0.0.2:5353", "::1", "[::1]:5353"), stored as "ip:port" or "[v6]:port"
 * with the port always written and the address in its shortest form, the
 * list c-ares' ares_set_servers_ports_csv() takes as it is. A host name is
 * refused: finding the resolver would need a resolver. NULL when reported.
 */
static char *dns_server(struct ld *ld, const yaml_node_t *n, const char *path)
{
	static const char what[] = "an IP address, ip:port or [v6]:port";
	char host[NI_MAXHOST], text[INET6_ADDRSTRLEN], out[INET6_ADDRSTRLEN + 8];
	unsigned char bin[sizeof(struct in6_addr)];
	const char *why = NULL;
	uint16_t port = DNS_PORT;
	int af;
	char *r;

	if (!want_text(ld, n, path, what))
		return NULL;
	if (inet_pton(AF_INET6, sval(n), bin) == 1) { /* a bare IPv6 address: its colons are not a port's */
		af = AF_INET6;
	} else if (inet_pton(AF_INET, sval(n), bin) == 1) {
		af = AF_INET;
	} else if (!strchr(sval(n), ':')) { /* no port: it would have been an address above */
		bad_value(ld, n, path, "%s (a server is not looked up by name)", what);
		return NULL;
	} else if (wp_addr_split(sval(n), host, sizeof host, &port, &why) < 0) {
		bad_value(ld, n, path, "%s (%s)", what, why);
		return NULL;
	} else {
		af = sval(n)[0] == '[' ? AF_INET6 : AF_INET;
		if (inet_pton(af, host, bin) != 1) {
			bad_value(ld, n, path, "%s (a server is not looked up by name)", what);
			return NULL;
		}
	}
	if (!inet_ntop(af, bin, text, sizeof text)) { /* cannot fail with these sizes */
		bad_value(ld, n, path, "%s", what);
		return NULL;
	}
	snprintf(out, sizeof out, af == AF_INET6 ? "[%s]:%u" : "%s:%u", text, (unsigned)port);
	if (!(r = strdup(out)))
		ld->oom = true;
	return r;
}

/* dns.servers: one address or a list of 0..CFG_MAX_DNS_SERVERS (an empty
 * list, or an empty value, means /etc/resolv.conf's). False when anything
 * was reported; *out then holds nothing. */
static bool parse_servers(struct ld *ld, yaml_document_t *doc, const yaml_node_t *n, const char *path,
                          char ***out, size_t *n_out)
{
	char ipath[PATH_BUF];
	size_t count;
	char **v;
	bool ok = true;

	*out = NULL;
	*n_out = 0;
	if (is_null(n))
		return true;
	if (n->type == YAML_MAPPING_NODE) {
		bad_value(ld, n, path, "a list of IP addresses (ip, ip:port or [v6]:port)");
		return false;
	}
	count = n->type == YAML_SCALAR_NODE ? 1 : (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
	if (count > CFG_MAX_DNS_SERVERS) {
		add_err(ld, node_pos(n), path, "expected at most %d servers, got %zu", CFG_MAX_DNS_SERVERS, count);
		return false;
	}
	if (count == 0)
		return true;
	if (!(v = calloc(count, sizeof *v))) {
		ld->oom = true;
		return false;
	}
	for (size_t i = 0; i < count; i++) {
		const yaml_node_t *item = n;

		if (n->type == YAML_SEQUENCE_NODE) {
			item = node_at(doc, n->data.sequence.items.start[i]);
			path_index(ipath, path, i);
		} else {
			snprintf(ipath, sizeof ipath, "%s", path);
		}
		if (!item || !(v[i] = dns_server(ld, item, ipath)))
			ok = false;
	}
	if (!ok) {
		servers_free(v, count);
		return false;
	}
	*out = v;
	*n_out = count;
	return true;
}

/*
 * dns: a mapping of the dns.* rows' keys, at any level (defaults:, a pool,
 * a backend item): the plain values by the table, servers by its parser.
 * An empty value is an empty block.
 */
static void parse_dns(struct ld *ld, yaml_document_t *doc, const yaml_node_t *n, const char *path,
                      struct level *l)
{
	yaml_node_t *vals[CFG_MAX_CHILD], *knodes[CFG_MAX_CHILD], *v;
	char kpath[PATH_BUF], what[PATH_BUF];
	struct cfg_keyset ks;
	size_t o;

	cfg_key_children(CFG_IN_POOL, "dns", &ks);
	o = (size_t)snprintf(what, sizeof what, "a mapping of");
	for (size_t i = 0; i < ks.n && o < sizeof what; i++)
		o += (size_t)snprintf(what + o, sizeof what - o, "%s %s", i ? "," : "", ks.v[i]);
	if (!want_map(ld, n, path, what))
		return;
	walk_block(ld, doc, n, path, "dns", &ks, vals, knodes);
	parse_rows(ld, "dns", &ks, vals, path, l);
	if ((v = val_of(&ks, vals, "servers"))) {
		path_key(kpath, path, "servers", 7);
		mark(l, row("dns.servers"), v, "dns.servers",
		     parse_servers(ld, doc, v, kpath, &l->v.dns.servers, &l->v.dns.n_servers));
	}
}

/* ---- allow: {users, groups, uids, gids} ---------------------------------- */

_Static_assert(sizeof(uid_t) == sizeof(uint32_t) && sizeof(gid_t) == sizeof(uint32_t),
               "ids are read as 32-bit integers");

static size_t list_items(struct ld *ld, const yaml_node_t *n, const char *path, size_t max,
                         const char *expected, const char *nonempty, const char *noun);
static void parse_reuse(struct ld *ld, yaml_document_t *doc, const yaml_node_t *n, const char *path,
                        struct cfg_pool *p);

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
                             const struct cfg_key *k, bool is_group, uint32_t *ids, size_t *n_ids)
{
	bool by_name = k->type == CFG_T_NAMES;
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
			if (!get_u32(ld, item, ipath, (uint32_t)k->min, (uint32_t)k->max, &id)) {
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
	yaml_node_t *vals[CFG_MAX_CHILD], *knodes[CFG_MAX_CHILD];
	struct cfg_keyset ks;
	char kpath[PATH_BUF];
	uint32_t *uids = NULL, *gids = NULL;
	size_t n_uids = 0, n_gids = 0, given = 0;
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
	walk_block(ld, doc, n, path, "allow", &ks, vals, knodes);
	for (size_t k = 0; k < ks.n; k++)
		given += vals[k] != NULL;
	if (!given)
		return false; /* only unknown or repeated keys: reported by walk_map */
	uids = malloc(2 * CFG_MAX_ALLOW * sizeof *uids);
	gids = malloc(2 * CFG_MAX_ALLOW * sizeof *gids);
	if (!uids || !gids) {
		ld->oom = true;
		goto fail;
	}
	for (size_t k = 0; k < ks.n; k++) {
		bool group = strcmp(ks.v[k], "groups") == 0 || strcmp(ks.v[k], "gids") == 0;
		if (!vals[k])
			continue;
		path_key(kpath, path, ks.v[k], strlen(ks.v[k]));
		if (!parse_allow_list(ld, doc, vals[k], kpath, &cfg_keys[row_in("allow", ks.v[k])], group,
		                      group ? gids : uids, group ? &n_gids : &n_uids))
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

/* The settings of `defaults:` (where CFG_IN_DEFAULTS) or of a pool
 * (CFG_IN_POOL): the rows `where` allows, vals/knodes/ks from walk_map over
 * a pool's keys. `inherited`: a health_check block was given in defaults. */
static void parse_level(struct ld *ld, yaml_document_t *doc, yaml_node_t **vals, yaml_node_t **knodes,
                        const struct cfg_keyset *ks, const char *path, unsigned where, bool inherited,
                        struct level *l)
{
	char kpath[PATH_BUF];
	yaml_node_t *v;

	memset(l, 0, sizeof *l);
	l->where = where;
	parse_rows(ld, "", ks, vals, path, l);
	if ((v = val_of(ks, vals, "backoff"))) {
		path_key(kpath, path, "backoff", 7);
		parse_backoff(ld, doc, v, kpath, l);
	}
	if ((v = val_of(ks, vals, "health_check"))) {
		path_key(kpath, path, "health_check", 12);
		parse_health(ld, doc, v, kpath, inherited, l);
	}
	if ((v = val_of(ks, vals, "keepalive"))) {
		path_key(kpath, path, "keepalive", 9);
		parse_keepalive(ld, doc, v, kpath, l);
	}
	if ((v = val_of(ks, vals, "allow"))) {
		path_key(kpath, path, "allow", 5);
		mark(l, row("allow"), v, "allow", parse_allow(ld, doc, v, kpath, &l->v.allow));
	}
	if ((v = val_of(ks, vals, "reuse"))) {
		path_key(kpath, path, "reuse", 5);
		parse_reuse(ld, doc, v, kpath, &l->v);
		mark(l, row("reuse"), v, "reuse", true);
	}
	if ((v = val_of(ks, vals, "tls"))) {
		path_key(kpath, path, "tls", 3);
		parse_tls(ld, doc, knodes[cfg_keyset_find(ks, "tls")], v, kpath, l);
	}
	if ((v = val_of(ks, vals, "dns"))) {
		path_key(kpath, path, "dns", 3);
		parse_dns(ld, doc, v, kpath, l);
	}
}

/* A dns.servers list (each string and the array); accepts NULL. */
static void servers_free(char **v, size_t n)
{
	for (size_t i = 0; v && i < n; i++)
		free(v[i]);
	free(v);
}

/* A copy of servers v[0..n), NULL for none (or out of memory, flagged). */
static char **servers_dup(struct ld *ld, char *const *v, size_t n)
{
	char **c;

	if (!v || !n)
		return NULL;
	if (!(c = calloc(n, sizeof *c))) {
		ld->oom = true;
		return NULL;
	}
	for (size_t i = 0; i < n; i++) {
		if (!(c[i] = strdup(v[i]))) {
			servers_free(c, i);
			ld->oom = true;
			return NULL;
		}
	}
	return c;
}

/* The owned parts of a dns: block (its servers). */
static void dns_free(struct cfg_dns *d)
{
	servers_free(d->servers, d->n_servers);
	d->servers = NULL;
	d->n_servers = 0;
}

/* Free the owned values of `p` (cfg_key_owned rows) whose path starts with
 * `block` ("" for all of them). */
static void free_owned(struct cfg_pool *p, const char *block)
{
	for (size_t i = 0; i < cfg_n_keys; i++) {
		const struct cfg_key *k = &cfg_keys[i];
		void *ptr;

		if (!cfg_key_owned(k) || strncmp(k->path, block, strlen(block)) != 0)
			continue;
		memcpy(&ptr, (char *)p + k->off, sizeof ptr);
		if (k->type == CFG_T_SERVERS) {
			size_t n;
			memcpy(&n, (char *)p + k->len_off, sizeof n);
			servers_free(ptr, n);
		} else {
			free(ptr);
		}
		memset((char *)p + k->off, 0, sizeof ptr);
		if (k->type == CFG_T_ALPN || k->type == CFG_T_SERVERS)
			memset((char *)p + k->len_off, 0, sizeof(size_t));
	}
}

/* Row k's owned value of `src` copied into `dst` (whose own is freed). */
static void copy_owned(struct ld *ld, struct cfg_pool *dst, const struct cfg_pool *src, const struct cfg_key *k)
{
	void *from, *to = NULL, *old;
	size_t len = 0;

	memcpy(&from, (const char *)src + k->off, sizeof from);
	if (k->type == CFG_T_ALPN || k->type == CFG_T_SERVERS)
		memcpy(&len, (const char *)src + k->len_off, sizeof len);
	if (from && k->type == CFG_T_ALPN)
		to = dup_bytes(ld, from, len);
	else if (k->type == CFG_T_SERVERS)
		to = servers_dup(ld, from, len);
	else if (from && !(to = strdup(from)))
		ld->oom = true;
	memcpy(&old, (char *)dst + k->off, sizeof old);
	if (k->type == CFG_T_SERVERS) {
		size_t n_old;
		memcpy(&n_old, (char *)dst + k->len_off, sizeof n_old);
		servers_free(old, n_old);
	} else {
		free(old);
	}
	memcpy((char *)dst + k->off, &to, sizeof to);
	if (k->type == CFG_T_ALPN || k->type == CFG_T_SERVERS) {
		len = to ? len : 0;
		memcpy((char *)dst + k->len_off, &len, sizeof len);
	}
}

static void reuse_free(struct cfg_reuse *r)
{
	free(r->reset_send);
	free(r->reset_expect);
	r->reset_send = r->reset_expect = NULL;
	r->reset_send_len = r->reset_expect_len = 0;
}

/* A reuse: block replaces the one before as a whole. */
static void reuse_copy(struct ld *ld, struct cfg_reuse *dst, const struct cfg_reuse *src)
{
	reuse_free(dst);
	*dst = *src;
	dst->reset_send = src->reset_send ? dup_bytes(ld, src->reset_send, src->reset_send_len) : NULL;
	dst->reset_expect = src->reset_expect ? dup_bytes(ld, src->reset_expect, src->reset_expect_len) : NULL;
}

static void level_free(struct level *l)
{
	free(l->v.health.send);
	free(l->v.health.expect);
	free(l->v.health.path);
	free(l->v.health.expect_regex);
	allow_free(&l->v.allow);
	reuse_free(&l->v.reuse);
	free_owned(&l->v, "");
	memset(l, 0, sizeof *l);
}

/* The owned parts of a pool's health check (free() and regfree()). */
static void cfg_health_free(struct cfg_health *h)
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
	/* user, database and password_file are rows (free_owned); the password
	 * is not, and is wiped before its memory goes back to malloc. */
	if (h->password)
		explicit_bzero(h->password, h->password_len);
	free(h->password);
	h->password = NULL;
	h->password_len = 0;
}

/* The health-check values that are pointers (the plain ones are rows). */
static void apply_health(struct ld *ld, struct cfg_health *h, const struct level *l)
{
	const struct cfg_health *v = &l->v.health;

	if (l->set[row("health_check.send")]) {
		free(h->send);
		h->send = dup_bytes(ld, v->send, v->send_len);
		h->send_len = h->send ? v->send_len : 0;
	}
	if (l->set[row("health_check.expect")]) { /* expect and expect_regex replace each other */
		free(h->expect);
		free_regex(h->expect_re);
		free(h->expect_regex);
		h->expect = NULL;
		h->expect_re = NULL;
		h->expect_regex = NULL;
		h->expect_len = 0;
		if (v->expect_regex) {
			h->expect_re = compile_regex(v->expect_regex);
			h->expect_regex = strdup(v->expect_regex);
			ld->oom |= !h->expect_re || !h->expect_regex;
		} else {
			h->expect = dup_bytes(ld, v->expect, v->expect_len);
			h->expect_len = h->expect ? v->expect_len : 0;
		}
	}
	if (l->set[row("health_check.path")]) {
		free(h->path);
		h->path = strdup(v->path);
		ld->oom |= !h->path;
	}
}

/* Merge the values level `l` gave into `p`, row by row; pointers are
 * copied, never shared. */
static void apply_level(struct ld *ld, struct cfg_pool *p, const struct level *l)
{
	for (size_t i = 0; i < cfg_n_keys; i++) {
		const struct cfg_key *k = &cfg_keys[i];

		if (l->set[i] && k->item == CFG_ITEM_POOL && cfg_key_scalar(k))
			memcpy((char *)p + k->off, (const char *)&l->v + k->off, k->size);
	}
	apply_health(ld, &p->health, l);
	if (l->set[row("allow")]) { /* a whole block: what defaults: said is replaced */
		allow_free(&p->allow);
		allow_copy(ld, &p->allow, &l->v.allow);
	}
	if (l->set[row("reuse")]) /* a whole block too */
		reuse_copy(ld, &p->reuse, &l->v.reuse);
	for (size_t i = 0; i < cfg_n_keys; i++)
		if (l->set[i] && cfg_key_owned(&cfg_keys[i]))
			copy_owned(ld, p, &l->v, &cfg_keys[i]);
	if (l->set[row("tls")])
		p->tls.pos = l->v.tls.pos;
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
		h->path = strdup(cfg_keys[row("health_check.path")].def_text);
		ld->oom |= !h->path;
	}
	if (h->type != CFG_CHECK_POSTGRES_PRIMARY && h->type != CFG_CHECK_REDIS_MASTER) {
		free(h->user);
		free(h->password_file);
		h->user = h->password_file = NULL;
	}
	if (h->type != CFG_CHECK_POSTGRES_PRIMARY) {
		free(h->database);
		h->database = NULL;
	}
}

/*
 * The password of a role-aware check, read from health_check.password_file
 * (the pool's own, else the one of defaults:) here, at load, so a reload
 * reads it again and a file that cannot be read is an error at the key, as
 * for the tls: files. Opened only if a regular file, non-blocking (a FIFO
 * cannot stall a reload). One trailing newline ("\n" or "\r\n") is dropped;
 * what is left is the password: 1..CFG_MAX_PASSWORD bytes without NUL. The
 * password is never shown in a message, only the file's name.
 */
static void load_password(struct ld *ld, struct cfg_pool *p, const struct level *l, const struct level *dl,
                          const char *path)
{
	struct cfg_health *h = &p->health;
	int r = row("health_check.password_file"), fd = -1;
	const struct level *from = l->set[r] ? l : dl;
	char kpath[PATH_BUF], shown[SHOW_BUF], buf[CFG_MAX_PASSWORD + 3];
	const char *why = NULL;
	size_t len = 0;
	struct stat st;

	if (!h->password_file)
		return;
	path_key(kpath, from == dl ? "defaults" : path, cfg_keys[r].path, strlen(cfg_keys[r].path));
	show(h->password_file, strlen(h->password_file), true, shown);
	if (fstatat(AT_FDCWD, h->password_file, &st, 0) < 0)
		why = strerror(errno);
	else if (!S_ISREG(st.st_mode))
		why = "not a regular file";
	else if ((fd = open(h->password_file, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)) < 0)
		why = strerror(errno);
	else if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
		why = "not a regular file";
	while (!why && len < sizeof buf) {
		ssize_t n = read(fd, buf + len, sizeof buf - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			why = strerror(errno);
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	if (fd >= 0)
		close(fd);
	if (why) {
		add_err_once(ld, node_pos(from->node[r]), kpath, "expected a readable file (%s), got %s", why, shown);
		goto out;
	}
	if (len && buf[len - 1] == '\n')
		len -= len >= 2 && buf[len - 2] == '\r' ? 2 : 1;
	if (len == 0 || len > CFG_MAX_PASSWORD || memchr(buf, '\0', len)) {
		add_err_once(ld, node_pos(from->node[r]), kpath,
		             "expected a file holding a password of 1 to %d bytes without NUL and one optional "
		             "trailing newline, got %s",
		             CFG_MAX_PASSWORD, shown);
		goto out;
	}
	if (!(h->password = malloc(len + 1))) {
		ld->oom = true;
		goto out;
	}
	memcpy(h->password, buf, len);
	h->password[len] = '\0';
	h->password_len = len;
out:
	explicit_bzero(buf, sizeof buf);
}

/* An error at the value level `l` gave for row f. */
static void blame(struct ld *ld, const struct level *l, int f, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void blame(struct ld *ld, const struct level *l, int f, const char *path, const char *fmt, ...)
{
	char kpath[PATH_BUF];
	va_list ap;

	path_key(kpath, path, l->key[f], strlen(l->key[f]));
	va_start(ap, fmt);
	add_errv(ld, node_pos(l->node[f]), kpath, fmt, ap);
	va_end(ap);
}

/* The keys a check type needs or excludes, on the merged pool. */
static void check_health_login(struct ld *ld, const struct cfg_pool *p, const struct level *l, const char *path);

static void check_health(struct ld *ld, const struct cfg_pool *p, const struct level *l, const char *path)
{
	const struct cfg_health *h = &p->health;
	const char *type = cfg_check_type_name(h->type);
	int f_type = row("health_check.type"), f_send = row("health_check.send"), f_expect = row("health_check.expect"),
	    f_path = row("health_check.path");

	if (l->node[f_type] && !l->set[f_type])
		return; /* a bad type: reported, nothing to check against */
	if (h->type == CFG_CHECK_SEND_EXPECT && l->set[f_type]) {
		if (!h->send && !l->node[f_send])
			blame(ld, l, f_type, path, "expected send or send_hex for type send_expect");
		if (!h->expect && !h->expect_re && !l->node[f_expect])
			blame(ld, l, f_type, path,
			      "expected expect, expect_hex or expect_regex for type send_expect");
	}
	if (h->type != CFG_CHECK_SEND_EXPECT) {
		if (l->set[f_send])
			blame(ld, l, f_send, path, "expected only with type: send_expect (type is %s)", type);
		if (l->set[f_expect])
			blame(ld, l, f_expect, path, "expected only with type: send_expect (type is %s)", type);
	}
	if (h->type != CFG_CHECK_HTTP && l->set[f_path])
		blame(ld, l, f_path, path, "expected only with type: http (type is %s)", type);
	check_health_login(ld, p, l, path);
}

/* The login keys of the role-aware checks (user, database, password_file). */
static void check_health_login(struct ld *ld, const struct cfg_pool *p, const struct level *l, const char *path)
{
	const struct cfg_health *h = &p->health;
	const char *type = cfg_check_type_name(h->type);
	int f_type = row("health_check.type"), f_user = row("health_check.user"),
	    f_db = row("health_check.database"), f_pwf = row("health_check.password_file");
	bool role = h->type == CFG_CHECK_POSTGRES_PRIMARY || h->type == CFG_CHECK_REDIS_MASTER;

	if (h->type == CFG_CHECK_POSTGRES_PRIMARY && l->set[f_type] && !h->user && !l->node[f_user])
		blame(ld, l, f_type, path, "expected user for type postgres_primary (the role the check logs in as)");
	if (h->type == CFG_CHECK_REDIS_MASTER && l->set[f_user] && !h->password_file && !l->node[f_pwf])
		blame(ld, l, f_user, path, "expected password_file with user for type redis_master (AUTH needs a password)");
	if (!role) {
		if (l->set[f_user])
			blame(ld, l, f_user, path, "expected only with type: postgres_primary or redis_master (type is %s)",
			      type);
		if (l->set[f_pwf])
			blame(ld, l, f_pwf, path, "expected only with type: postgres_primary or redis_master (type is %s)",
			      type);
	}
	if (h->type != CFG_CHECK_POSTGRES_PRIMARY && l->set[f_db])
		blame(ld, l, f_db, path, "expected only with type: postgres_primary (type is %s)", type);
}

/*
 * min_ttl <= max_ttl in the merged dns: block `d`, checked when level `l`
 * (defaults:, a pool, a backend item) gave one of the two, and blamed on
 * the one it gave (max_ttl first).
 */
static void check_dns(struct ld *ld, const struct cfg_dns *d, const struct level *l, const char *path)
{
	int f_min = row("dns.min_ttl"), f_max = row("dns.max_ttl");
	char kpath[PATH_BUF], a[32];

	if ((!l->set[f_min] && !l->set[f_max]) || d->min_ttl_ms <= d->max_ttl_ms)
		return;
	if (l->set[f_max]) {
		path_key(kpath, path, "dns.max_ttl", 11);
		bad_value(ld, l->node[f_max], kpath, "a duration >= min_ttl (%s)", fmt_ms(d->min_ttl_ms, a, sizeof a));
	} else {
		path_key(kpath, path, "dns.min_ttl", 11);
		bad_value(ld, l->node[f_min], kpath, "a duration <= max_ttl (%s)", fmt_ms(d->max_ttl_ms, a, sizeof a));
	}
}

/* A relative socket path would resolve against whatever directory warmpoold
 * was started in (/ under systemd): refused, with the reason. */
#define RELATIVE_SOCKET "an absolute socket path (a relative one resolves against the directory warmpoold " \
                        "starts in, / under systemd)"

/*
 * Relations between values of the merged pool `p`, checked only when level
 * `l` gave one of the values involved (so an error inherited from defaults
 * is reported once, at defaults), and blamed on a value `l` gave.
 */
static void check_level(struct ld *ld, const struct cfg_pool *p, const struct level *l, const char *path)
{
	static const char *const backoff[] = {"backoff.initial", "backoff.max", "backoff.multiplier",
	                                      "backoff.jitter"};
	int f_min = row("min_idle"), f_max = row("max_connections"), f_init = row("backoff.initial"),
	    f_bmax = row("backoff.max");
	char kpath[PATH_BUF], a[32];
	const char *why = NULL;
	bool any = false;

	check_health(ld, p, l, path);
	check_dns(ld, &p->dns, l, path);
	if ((l->set[f_min] || l->set[f_max]) && p->min_idle > p->max_connections) {
		if (l->set[f_min]) {
			path_key(kpath, path, "min_idle", 8);
			bad_value(ld, l->node[f_min], kpath, "an integer <= max_connections (%u)", p->max_connections);
		} else {
			path_key(kpath, path, "max_connections", 15);
			bad_value(ld, l->node[f_max], kpath, "an integer >= min_idle (%u)", p->min_idle);
		}
	}
	for (size_t i = 0; i < 4; i++)
		any |= l->set[row(backoff[i])];
	if (!any)
		return;
	if (p->backoff.max_ms < p->backoff.initial_ms) {
		if (l->set[f_bmax]) {
			path_key(kpath, path, "backoff.max", 11);
			bad_value(ld, l->node[f_bmax], kpath, "a duration >= initial (%s)",
			          fmt_ms(p->backoff.initial_ms, a, sizeof a));
		} else if (l->set[f_init]) {
			path_key(kpath, path, "backoff.initial", 15);
			bad_value(ld, l->node[f_init], kpath, "a duration <= max (%s)",
			          fmt_ms(p->backoff.max_ms, a, sizeof a));
		}
		return;
	}
	/* The library has the last word; the per-field checks above mirror it. */
	if (wp_backoff_check(&p->backoff, &why) < 0) {
		const yaml_node_t *n = NULL;
		for (size_t i = 0; i < 4 && !n; i++)
			n = l->set[row(backoff[i])] ? l->node[row(backoff[i])] : NULL;
		path_key(kpath, path, "backoff", 7);
		add_err(ld, n ? node_pos(n) : (struct cfg_pos){1, 1}, kpath, "%s", why);
	}
}

static void parse_listen_item(struct ld *ld, yaml_document_t *doc, const yaml_node_t *n, const char *path,
                              struct cfg_pool *p)
{
	const yaml_node_t *pn = n;
	mode_t mode = (mode_t)cfg_keys[row("listen[].mode")].def;
	char kpath[PATH_BUF];
	struct cfg_allow own = {0}; /* the item's allow:, which replaces the pool's */
	struct cfg_listen *l;

	if (n->type == YAML_MAPPING_NODE) {
		yaml_node_t *vals[CFG_MAX_CHILD], *knodes[CFG_MAX_CHILD], *v;
		struct cfg_keyset ks;
		bool ok = true;

		walk_block(ld, doc, n, path, "listen[]", &ks, vals, knodes);
		if ((v = val_of(&ks, vals, "mode"))) {
			path_key(kpath, path, "mode", 4);
			if (!get_mode(ld, v, kpath, "0660", &mode))
				ok = false;
		}
		if ((v = val_of(&ks, vals, "allow"))) {
			path_key(kpath, path, "allow", 5);
			if (!parse_allow(ld, doc, v, kpath, &own))
				ok = false;
		}
		path_key(kpath, path, "path", 4);
		if (!(pn = val_of(&ks, vals, "path"))) {
			add_err(ld, node_pos(n), kpath, "missing key, expected a socket path");
			goto fail;
		}
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
	if (sval(pn)[0] != '/') {
		bad_value(ld, pn, kpath, "%s", RELATIVE_SOCKET);
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
static const yaml_node_t *parse_backend_opts(struct ld *ld, const struct cfg_keyset *ks, yaml_node_t **vals,
                                             const char *path, struct cfg_backend *be)
{
	char kpath[PATH_BUF];
	yaml_node_t *v;

	if ((v = val_of(ks, vals, "weight"))) {
		path_key(kpath, path, "weight", 6);
		get_key(ld, &cfg_keys[row("backends[].weight")], v, kpath, be);
	}
	if ((v = val_of(ks, vals, "backup"))) {
		path_key(kpath, path, "backup", 6);
		if (get_key(ld, &cfg_keys[row("backends[].backup")], v, kpath, be) && be->backup)
			return v;
	}
	return NULL;
}

#define DNS_NAME_MAX  253 /* bytes of a DNS name (RFC 1035) */
#define DNS_LABEL_MAX 63  /* bytes of one of its labels */

/*
 * A host that is not an IP literal must look like a DNS name, or no
 * resolver would ever answer for it: labels of letters, digits, '-' and '_'
 * (service labels like _pg), 1..DNS_LABEL_MAX bytes each, DNS_NAME_MAX in
 * all, an optional final dot. A last label of digits only is a mistyped IP
 * address (RFC 1123 2.1), not a name. NULL when fine, else the reason.
 */
static const char *dns_name_problem(const char *s)
{
	size_t len = strlen(s), label = 0;
	bool digits = true;

	if (len && s[len - 1] == '.')
		len--;
	if (len == 0 || len > DNS_NAME_MAX)
		return "a host name has 1 to 253 bytes";
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		if (c == '.') {
			if (label == 0)
				return "empty label in the host name";
			label = 0;
			digits = true;
			continue;
		}
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
		      c == '_'))
			return "a host name has only letters, digits, '-', '_' and dots";
		if (++label > DNS_LABEL_MAX)
			return "a label of a host name has at most 63 bytes";
		digits &= c >= '0' && c <= '9';
	}
	if (label == 0)
		return "empty label in the host name";
	return digits ? "not an IP address" : NULL;
}

/* "localhost", "db.localhost" (any case, a trailing dot allowed). */
static bool is_localhost(const char *host)
{
	size_t n = strlen(host);
	if (n && host[n - 1] == '.')
		n--;
	static const char tail[] = "localhost";
	size_t t = sizeof tail - 1;
	return n >= t && strncasecmp(host + n - t, tail, t) == 0 && (n == t || host[n - t - 1] == '.');
}

/*
 * The host of backend `be` (its port set): an IP literal gets its address
 * at once (getaddrinfo with AI_NUMERICHOST does no lookup), so does a
 * localhost name (127.0.0.1, RFC 6761); anything else is a DNS name, never
 * resolved here: the daemon resolves it in its loop
 * (daemon/dns.c), and --check-config --resolve with cfg_resolve_names().
 * False when reported.
 */
static bool backend_host(struct ld *ld, const yaml_node_t *an, const char *apath, const char *host,
                         struct cfg_backend *be)
{
	bool bracketed = sval(an)[0] == '[';
	struct addrinfo hints = {.ai_family = bracketed ? AF_INET6 : AF_UNSPEC,
	                         .ai_socktype = SOCK_STREAM,
	                         .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV};
	struct addrinfo *res = NULL;
	const char *why = NULL;
	char port_s[8];
	int e;

	snprintf(port_s, sizeof port_s, "%u", (unsigned)be->port);
	e = getaddrinfo(host, port_s, &hints, &res);
	if (e == 0 && res && res->ai_addrlen <= sizeof be->addr) {
		memcpy(&be->addr, res->ai_addr, res->ai_addrlen);
		be->addrlen = res->ai_addrlen;
		freeaddrinfo(res);
		return true;
	}
	if (res)
		freeaddrinfo(res);
	if (e == EAI_MEMORY) {
		ld->oom = true;
		return false;
	}
	if (bracketed)
		why = "not an IPv6 address in the brackets";
	else if (e != EAI_NONAME)
		why = e == EAI_SYSTEM ? "system error" : gai_strerror(e);
	else
		why = dns_name_problem(host);
	if (why) {
		bad_value(ld, an, apath, "an address host:port, [v6]:port or a.b.c.d:port (%s)", why);
		return false;
	}
	if (is_localhost(host)) {
		/* RFC 6761: localhost names are the loopback, never looked up. IPv4's:
		 * what servers listen on by default (memcached, redis, postgres). */
		struct sockaddr_in *sin = (struct sockaddr_in *)&be->addr;
		memset(&be->addr, 0, sizeof be->addr);
		sin->sin_family = AF_INET;
		sin->sin_port = htons(be->port);
		sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		be->addrlen = sizeof *sin;
		return true;
	}
	be->is_name = true;
	return true;
}

/* The keys the dns.* rows hold, copied from level `l` where it gave them
 * (a backend item's own dns: over its pool's). */
static void apply_dns(struct ld *ld, struct cfg_pool *p, const struct level *l)
{
	for (size_t i = 0; i < cfg_n_keys; i++) {
		const struct cfg_key *k = &cfg_keys[i];

		if (!l->set[i] || !cfg_key_under(k, "dns"))
			continue;
		if (cfg_key_scalar(k))
			memcpy((char *)p + k->off, (const char *)&l->v + k->off, k->size);
		else if (cfg_key_owned(k))
			copy_owned(ld, p, &l->v, k);
	}
}

/* be->dns: the pool's merged dns: with the item's own dns: (level `own`)
 * over it, checked at the item's path. */
static void backend_dns(struct ld *ld, const struct cfg_pool *p, const struct level *own, const char *path,
                        struct cfg_backend *be)
{
	struct cfg_pool m;

	memset(&m, 0, sizeof m);
	m.dns = p->dns;
	m.dns.servers = servers_dup(ld, p->dns.servers, p->dns.n_servers);
	m.dns.n_servers = m.dns.servers ? p->dns.n_servers : 0;
	apply_dns(ld, &m, own);
	check_dns(ld, &m.dns, own, path);
	be->dns = m.dns; /* moved: cfg_free frees its servers */
}

/* One backend: "host:port" or {address, weight, backup, dns}. Returns the
 * backup: node when the item is a backup, for the check that one is not.
 * The pool's own settings are merged already: the item's dns: goes over
 * the pool's. */
static const yaml_node_t *parse_backend(struct ld *ld, yaml_document_t *doc, const yaml_node_t *n,
                                        const char *path, struct cfg_pool *p)
{
	const yaml_node_t *an = n, *backup_node = NULL, *dn;
	char host[NI_MAXHOST], apath[PATH_BUF], dpath[PATH_BUF];
	const char *why = NULL;
	struct cfg_backend *be, opts = {0};
	struct level own; /* the item's dns: */
	uint16_t port;

	memset(&own, 0, sizeof own);
	own.where = CFG_IN_POOL;
	key_defaults(CFG_IN_POOL, CFG_ITEM_BACKEND, &opts);
	snprintf(apath, sizeof apath, "%s", path);
	if (n->type == YAML_MAPPING_NODE) {
		yaml_node_t *vals[CFG_MAX_CHILD], *knodes[CFG_MAX_CHILD];
		struct cfg_keyset ks;

		walk_block(ld, doc, n, path, "backends[]", &ks, vals, knodes);
		backup_node = parse_backend_opts(ld, &ks, vals, path, &opts);
		if ((dn = val_of(&ks, vals, "dns"))) {
			path_key(dpath, path, "dns", 3);
			parse_dns(ld, doc, dn, dpath, &own);
		}
		path_key(apath, path, "address", 7);
		if (!(an = val_of(&ks, vals, "address"))) {
			add_err(ld, node_pos(n), apath, "missing key, expected an address host:port");
			goto out;
		}
	} else if (n->type != YAML_SCALAR_NODE) {
		bad_value(ld, n, path, "an address host:port or a {address, weight, backup, dns} mapping");
		return NULL;
	}
	if (!want_text(ld, an, apath, "an address host:port"))
		goto out;
	if (wp_addr_split(sval(an), host, sizeof host, &port, &why) < 0) {
		bad_value(ld, an, apath, "an address host:port, [v6]:port or a.b.c.d:port (%s)", why);
		goto out;
	}
	be = &p->backends[p->n_backends];
	memset(be, 0, sizeof *be);
	be->port = port;
	if (!backend_host(ld, an, apath, host, be))
		goto out;
	be->name = strdup(sval(an));
	be->host = strdup(host);
	if (!be->name || !be->host) {
		free(be->name);
		free(be->host);
		memset(be, 0, sizeof *be);
		ld->oom = true;
		goto out;
	}
	be->weight = opts.weight;
	be->backup = opts.backup;
	be->pos = node_pos(an);
	backend_dns(ld, p, &own, path, be);
	p->n_backends++;
out:
	level_free(&own);
	return backup_node;
}

#define LIST_HINT_MAX 160 /* bytes of a list hint in a message */

/* "a:1, b:2" written as the YAML list it was meant to be: "\"a:1\", \"b:2\"",
 * cut to fit `out` (LIST_HINT_MAX bytes), for a message. */
static const char *list_hint(const char *s, size_t len, char out[LIST_HINT_MAX])
{
	size_t o = 0;
	const size_t room = LIST_HINT_MAX - 8; /* a loop step adds 4 at most; then a quote, "..." and NUL */
	int open = 0;
	for (size_t i = 0; i < len && o < room; i++) {
		char c = s[i];
		if (c == ',') {
			if (open)
				out[o++] = '"';
			open = 0;
			continue;
		}
		if (c == ' ' || c == '\t' || (unsigned char)c < 0x20 || c == '"' || c == '\\')
			continue;
		if (!open) {
			if (o && o + 2 < room) {
				out[o++] = ',';
				out[o++] = ' ';
			}
			out[o++] = '"';
			open = 1;
		}
		out[o++] = c;
	}
	if (open)
		out[o++] = '"';
	if (o >= room)
		memcpy(out + o, "...", 3), o += 3;
	out[o] = 0;
	return out;
}

/* Host names compare without case and without a final dot. */
static bool same_host(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);

	la -= la && a[la - 1] == '.';
	lb -= lb && b[lb - 1] == '.';
	return la == lb && strncasecmp(a, b, la) == 0;
}

/*
 * The pool's last backend, when it is a name, against the names before it:
 * a name listed twice would be resolved twice and give each of its
 * addresses two backends (and `disable P/name`, the metrics of the name, two
 * owners). An error at the second.
 */
static void check_name_twice(struct ld *ld, const struct cfg_pool *p, const char *path)
{
	const struct cfg_backend *b = &p->backends[p->n_backends - 1];
	char shown[SHOW_BUF];

	if (!b->is_name)
		return;
	for (size_t i = 0; i + 1 < p->n_backends; i++) {
		const struct cfg_backend *a = &p->backends[i];
		if (a->is_name && a->port == b->port && same_host(a->host, b->host)) {
			show(b->name, strlen(b->name), true, shown);
			add_err(ld, b->pos, path, "expected a name the pool does not list already (line %u has it), got %s",
			        a->pos.line, shown);
			return;
		}
	}
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
		if (memchr(sval(n), ',', slen(n))) { /* "a:1, b:2": a list was meant */
			char hint[LIST_HINT_MAX];
			bad_value(ld, n, path, "a list of addresses, like [%s]", list_hint(sval(n), slen(n), hint));
			return;
		}
		parse_backend(ld, doc, n, path, p);
		return;
	}
	for (size_t i = 0; i < count; i++) {
		const yaml_node_t *item = node_at(doc, n->data.sequence.items.start[i]), *b;
		if (!item)
			continue;
		path_index(ipath, path, i);
		size_t before = p->n_backends;
		b = parse_backend(ld, doc, item, ipath, p);
		if (p->n_backends > before)
			check_name_twice(ld, p, ipath);
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
	if (sval(v)[0] != '/') {
		bad_value(ld, v, path, "%s", RELATIVE_SOCKET);
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

size_t cfg_nonce_count(const unsigned char *b, size_t len)
{
	size_t n = 0, t = sizeof CFG_NONCE - 1;
	for (size_t i = 0; i + t <= len; i++)
		if (memcmp(b + i, CFG_NONCE, t) == 0) {
			n++;
			i += t - 1;
		}
	return n;
}

/* reuse: false | true | {reset_send, reset_expect, reset_timeout}. */
#define RESET_TIMEOUT_EXCHANGE 1000 /* ms: reset_timeout's default with a reset exchange */
static void parse_reuse(struct ld *ld, yaml_document_t *doc, const yaml_node_t *n, const char *path,
                        struct cfg_pool *p)
{
	const struct cfg_key *k_to = &cfg_keys[row("reuse.reset_timeout")];
	struct cfg_reuse *r = &p->reuse;
	yaml_node_t *vals[CFG_MAX_CHILD], *knodes[CFG_MAX_CHILD], *send, *expect, *to;
	struct cfg_keyset ks;
	char kpath[PATH_BUF];

	r->reset_timeout_ms = k_to->def; /* the quiet period, without a reset exchange */
	if (n->type != YAML_MAPPING_NODE) {
		get_key(ld, &cfg_keys[row("reuse")], n, path, p);
		return;
	}
	r->enabled = true;
	walk_block(ld, doc, n, path, "reuse", &ks, vals, knodes);
	if ((send = val_of(&ks, vals, "reset_send"))) {
		path_key(kpath, path, "reset_send", 10);
		get_escaped(ld, send, kpath, true, &r->reset_send, &r->reset_send_len);
	}
	if ((expect = val_of(&ks, vals, "reset_expect"))) {
		path_key(kpath, path, "reset_expect", 12);
		get_escaped(ld, expect, kpath, true, &r->reset_expect, &r->reset_expect_len);
	}
	if (!send != !expect) {
		path_key(kpath, path, send ? "reset_expect" : "reset_send", send ? 12 : 10);
		add_err(ld, node_pos(n), kpath, "missing key, expected reset_send and reset_expect together");
	}
	if (send && expect && r->reset_send && r->reset_expect) {
		r->reset_timeout_ms = RESET_TIMEOUT_EXCHANGE;
		size_t ns = cfg_nonce_count(r->reset_send, r->reset_send_len),
		       ne = cfg_nonce_count(r->reset_expect, r->reset_expect_len);
		if (!ns != !ne) {
			path_key(kpath, path, ns ? "reset_expect" : "reset_send", ns ? 12 : 10);
			add_err(ld, node_pos(ns ? expect : send), kpath,
			        "expected " CFG_NONCE " in reset_send and reset_expect together (the answer must carry "
			        "back the nonce the reset sent)");
		} else if (!ns) {
			path_key(kpath, path, "reset_expect", 12);
			add_warning(ld, node_pos(expect), kpath,
			            "without " CFG_NONCE " a client can pipeline a fake answer to the reset and have its "
			            "later replies reach the next client; e.g. reset_send: 'RESET\\r\\nECHO " CFG_NONCE
			            "\\r\\n', reset_expect: '+RESET\\r\\n$32\\r\\n" CFG_NONCE "\\r\\n'");
		}
	}
	if ((to = val_of(&ks, vals, "reset_timeout"))) {
		path_key(kpath, path, "reset_timeout", 13);
		get_key(ld, k_to, to, kpath, p);
	}
}

/* handoff: {listen: PATH, mode: "0660"} — a SOCK_SEQPACKET socket handing
 * the warm backend socket itself to libwarmpool clients. */
static void parse_handoff(struct ld *ld, yaml_document_t *doc, const yaml_node_t *n, const char *path,
                          struct cfg_pool *p)
{
	yaml_node_t *vals[CFG_MAX_CHILD], *knodes[CFG_MAX_CHILD], *v;
	struct cfg_keyset ks;
	char kpath[PATH_BUF];

	if (!want_map(ld, n, path, "a mapping of listen, mode"))
		return;
	walk_block(ld, doc, n, path, "handoff", &ks, vals, knodes);
	p->handoff.mode = (mode_t)cfg_keys[row("handoff.mode")].def;
	if ((v = val_of(&ks, vals, "mode"))) {
		path_key(kpath, path, "mode", 4);
		get_mode(ld, v, kpath, "0660", &p->handoff.mode);
	}
	path_key(kpath, path, "listen", 6);
	if (!(v = val_of(&ks, vals, "listen"))) {
		add_err(ld, node_pos(n), kpath, "missing key, expected a socket path");
		return;
	}
	socket_path(ld, v, kpath, &p->handoff, p->name, "");
}

/*
 * After merging: a pool without TLS holds no TLS settings; one with TLS
 * cannot have a handoff socket, and gets its SSL_CTX and digest (tls.c),
 * each problem blamed on the value that caused it: the pool's own, else the
 * one of defaults: (reported once for all the pools that inherit it).
 */
static void finish_tls(struct ld *ld, struct cfg_pool *p, const struct level *l, const struct level *dl,
                       const char *path, const yaml_node_t *handoff_key)
{
	static const char no_handoff[] = "tls cannot be used with handoff: a TLS connection's state lives in "
	                                 "warmpoold and cannot be handed to another process";
	int r_tls = row("tls");
	struct origin o[TK_N];
	struct cfg_pool builtin;
	char kpath[PATH_BUF];

	if (!p->tls.enabled) {
		free_owned(p, "tls.");
		builtin_pool(&builtin);
		p->tls = builtin.tls;
		return;
	}
	if (p->handoff.path && l->set[r_tls]) {
		path_key(kpath, path, "tls", 3);
		add_err(ld, node_pos(l->node[r_tls]), kpath, "%s", no_handoff);
	} else if (p->handoff.path && handoff_key) {
		path_key(kpath, path, "handoff", 7);
		add_err(ld, node_pos(handoff_key), kpath, "%s", no_handoff);
	}
	for (int t = 0; t < TK_N; t++) {
		int r = t == TK_TLS ? r_tls : row_in("tls", tls_key_names[t]);
		const struct level *from = l->set[r] ? l : dl->set[r] ? dl : NULL;

		o[t].pos = from ? node_pos(from->node[r]) : (struct cfg_pos){0, 0};
		path_key(o[t].path, from == dl ? "defaults" : path, cfg_keys[r].path, strlen(cfg_keys[r].path));
	}
	tls_build(ld, &p->tls, o);
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
	yaml_node_t *vals[CFG_MAX_CHILD], *knodes[CFG_MAX_CHILD], *v;
	char path[PATH_BUF], kpath[PATH_BUF];
	struct cfg_keyset ks;
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
	walk_block(ld, doc, val, path, "", &ks, vals, knodes);
	/* Its own settings first: a backend item's dns: is merged over the pool's. */
	parse_level(ld, doc, vals, knodes, &ks, path, CFG_IN_POOL, dl->set[row("health_check.type")], &l);
	apply_level(ld, p, &l);
	path_key(kpath, path, "listen", 6);
	if ((v = val_of(&ks, vals, "listen")))
		parse_listen(ld, doc, v, kpath, p);
	else
		add_err(ld, p->pos, kpath, "missing key, expected a socket path or a list of them");
	path_key(kpath, path, "backends", 8);
	if ((v = val_of(&ks, vals, "backends")))
		parse_backends(ld, doc, v, kpath, p);
	else
		add_err(ld, p->pos, kpath, "missing key, expected an address host:port or a list of them");
	if ((v = val_of(&ks, vals, "handoff"))) {
		path_key(kpath, path, "handoff", 7);
		parse_handoff(ld, doc, v, kpath, p);
	}
	check_level(ld, p, &l, path);
	finish_health(ld, &p->health);
	load_password(ld, p, &l, dl, path);
	finish_tls(ld, p, &l, dl, path, knodes[cfg_keyset_find(&ks, "handoff")]);
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

/* The row of daemon key `name`. */
static const struct cfg_key *daemon_row(const char *name)
{
	int i = cfg_key_find(CFG_IN_DAEMON, name);

	if (i < 0)
		abort(); /* a constant of this file: cannot happen */
	return &cfg_keys[i];
}

static void parse_daemon(struct ld *ld, yaml_document_t *doc, const yaml_node_t *n)
{
	yaml_node_t *vals[CFG_MAX_CHILD], *knodes[CFG_MAX_CHILD], *v;
	struct cfg_daemon *d = &ld->cfg->daemon;
	struct cfg_keyset ks;
	char kpath[PATH_BUF];

	if (!want_map(ld, n, "daemon",
	              "a mapping of log_level, shutdown_timeout, fd_store, admin_socket, admin_socket_mode, "
	              "admin_socket_readonly, metrics_listen"))
		return;
	cfg_key_children(CFG_IN_DAEMON, "", &ks);
	walk_map(ld, doc, n, "daemon", ks.v, ks.n, 0, vals, knodes);
	for (size_t i = 0; i < cfg_n_keys; i++) { /* plain values: log_level, shutdown_timeout */
		const struct cfg_key *k = &cfg_keys[i];
		if (k->item == CFG_ITEM_DAEMON && cfg_key_scalar(k) && (v = val_of(&ks, vals, k->path))) {
			path_key(kpath, "daemon", k->path, strlen(k->path));
			get_key(ld, k, v, kpath, d);
		}
	}
	if ((v = val_of(&ks, vals, "admin_socket_mode")))
		get_mode(ld, v, "daemon.admin_socket_mode", "0600", &d->admin.mode);
	if ((v = val_of(&ks, vals, "admin_socket"))) {
		bool on = true;
		if (v->type == YAML_SCALAR_NODE && v->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
		    (strcmp(sval(v), "false") == 0 || strcmp(sval(v), "off") == 0 || strcmp(sval(v), "no") == 0))
			on = false;
		free(d->admin.path);
		d->admin.path = NULL;
		if (on)
			socket_path(ld, v, "daemon.admin_socket", &d->admin, "daemon", ", or false");
	}
	if ((v = val_of(&ks, vals, "admin_socket_readonly")))
		socket_path(ld, v, "daemon.admin_socket_readonly", &d->admin_ro, "daemon", "");
	if ((v = val_of(&ks, vals, "metrics_listen"))) {
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
		d->metrics.host = strdup(host);
		if (!d->metrics.name || !d->metrics.host) {
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
	cfg_health_free(&merged.health);
	allow_free(&merged.allow);
	reuse_free(&merged.reuse);
	free_owned(&merged, "");
}

static void walk_root(struct ld *ld, yaml_document_t *doc)
{
	yaml_node_t *root = yaml_document_get_root_node(doc);
	yaml_node_t *vals[T_N], *knodes[T_N];
	yaml_node_t *dvals[CFG_MAX_CHILD], *dknodes[CFG_MAX_CHILD];
	char kpath[PATH_BUF];
	struct cfg_pool base;
	struct cfg_keyset ks;
	struct level dl;

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
	memset(&dl, 0, sizeof dl);
	if (vals[T_DEFAULTS] && want_map(ld, vals[T_DEFAULTS], "defaults", "a mapping of pool settings")) {
		/* A pool's keys are known here; those not listed (before the first
		 * defaults: key: listen, backends, handoff, which name each pool's
		 * own sockets and backends) are reported. */
		cfg_key_children(CFG_IN_POOL, "", &ks);
		walk_map(ld, doc, vals[T_DEFAULTS], "defaults", ks.v, ks.n, ks.listed, dvals, dknodes);
		for (size_t k = 0; k < ks.listed; k++) {
			if (dknodes[k]) {
				path_key(kpath, "defaults", ks.v[k], strlen(ks.v[k]));
				add_err(ld, node_pos(dknodes[k]), kpath, "not allowed in defaults, set it in each pool");
			}
		}
		parse_level(ld, doc, dvals, dknodes, &ks, "defaults", CFG_IN_DEFAULTS, false, &dl);
		check_defaults(ld, &base, &dl);
	}
	if (vals[T_POOLS])
		parse_pools(ld, doc, vals[T_POOLS], &base, &dl);
	else
		add_err(ld, node_pos(root), "pools",
		        "missing key, expected a mapping of pool names to pool settings");
	level_free(&dl);
}

static void ld_done(struct ld *ld)
{
	refs_free(&ld->sockets);
	refs_free(&ld->backends);
	tls_done(ld);
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
	key_defaults(CFG_IN_DAEMON, CFG_ITEM_DAEMON, &ld.cfg->daemon);
	ld.cfg->daemon.admin_ro.mode = 0660; /* read access is handed out by group */
	ld.cfg->daemon.admin.path = strdup(daemon_row("admin_socket")->def_text);
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
		for (size_t j = 0; j < p->n_backends; j++) {
			free(p->backends[j].name);
			free(p->backends[j].host);
			dns_free(&p->backends[j].dns);
		}
		free(p->backends);
		free(p->handoff.path);
		reuse_free(&p->reuse);
		allow_free(&p->handoff.allow);
		cfg_health_free(&p->health);
		allow_free(&p->allow);
		tls_ctx_free(&p->tls);
		free_owned(p, "");
	}
	free(cfg->pools);
	free(cfg->daemon.admin.path);
	free(cfg->daemon.admin_ro.path);
	free(cfg->daemon.metrics.name);
	free(cfg->daemon.metrics.host);
	free(cfg->path);
	cfg_errors_free(&cfg->warnings);
	free(cfg);
}

