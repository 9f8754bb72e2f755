/*
 * config/value.c — reading values out of the document tree: nodes and key
 * paths, mappings matched against their keys (walk_map), and the plain
 * values: integers, durations, booleans, enum names, escaped and hex bytes,
 * the guard against regular expressions whose compiled form explodes, HTTP
 * paths, numbers and modes. get_key() reads any plain value of the key
 * table with its row's type and range; key_defaults() writes the table's
 * built-in values. Every refusal is reported with the key path and the
 * value quoted.
 */
#include "loader.h"

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

static void store_uint(void *dst, size_t size, uint64_t v)
{
	if (size == sizeof(uint64_t)) {
		memcpy(dst, &v, size);
	} else if (size == sizeof(uint32_t)) {
		uint32_t u = (uint32_t)v;
		memcpy(dst, &u, size);
	} else if (size == sizeof(bool)) {
		bool b = v != 0;
		memcpy(dst, &b, size);
	}
}

/* The built-in value of every plain row of `item` that `where` allows,
 * into base (a struct of that item). Pointers are left alone. */
void key_defaults(unsigned where, enum cfg_item item, void *base)
{
	for (size_t i = 0; i < cfg_n_keys; i++) {
		const struct cfg_key *k = &cfg_keys[i];
		char *dst = (char *)base + k->off;

		if (!(k->where & where) || k->item != item || k->alias)
			continue;
		if (k->type == CFG_T_NUMBER)
			memcpy(dst, &k->def_num, sizeof k->def_num);
		else if (cfg_key_scalar(k) || k->type == CFG_T_MODE)
			store_uint(dst, k->size, k->def);
	}
}

/* A pool before `defaults:` and its own keys: the table's built-in values. */
void builtin_pool(struct cfg_pool *p)
{
	memset(p, 0, sizeof *p);
	key_defaults(CFG_IN_POOL, CFG_ITEM_POOL, p);
}


/* ------------------------------------------------------------------ */
/* Phase 2: typed fields                                               */

yaml_node_t *node_at(yaml_document_t *doc, int index)
{
	return yaml_document_get_node(doc, index);
}

bool is_null(const yaml_node_t *n)
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

void path_key(char *out, const char *parent, const char *key, size_t keylen)
{
	char shown[SHOW_BUF];

	show(key, keylen, false, shown);
	if (parent && *parent)
		path_fit(out, snprintf(out, PATH_BUF, "%s.%s", parent, shown));
	else
		path_fit(out, snprintf(out, PATH_BUF, "%s", shown));
}

void path_index(char *out, const char *parent, size_t i)
{
	path_fit(out, snprintf(out, PATH_BUF, "%s[%zu]", parent, i));
}

/*
 * Match the keys of mapping `map` against keys[0..nkeys). vals[i]/knodes[i]
 * receive the value and key node of keys[i], or NULL. Unknown keys, keys
 * that are not scalars and repeated keys are reported; the message lists
 * keys[listed..nkeys) as the allowed ones.
 */
/* Typo distance (optimal string alignment: insertions, deletions,
 * substitutions and swaps of neighbours) between two short names. */
#define KEY_NEAR_MAX 64 /* longer names are not compared */
static size_t key_distance(const char *a, size_t la, const char *b, size_t lb)
{
	unsigned char d[KEY_NEAR_MAX + 1][KEY_NEAR_MAX + 1]; /* distances <= 2 * KEY_NEAR_MAX fit */
	for (size_t i = 0; i <= la; i++)
		d[i][0] = (unsigned char)i;
	for (size_t j = 0; j <= lb; j++)
		d[0][j] = (unsigned char)j;
	for (size_t i = 1; i <= la; i++)
		for (size_t j = 1; j <= lb; j++) {
			size_t v = d[i - 1][j - 1] + (size_t)(a[i - 1] != b[j - 1]);
			size_t del = (size_t)d[i - 1][j] + 1, ins = (size_t)d[i][j - 1] + 1;
			v = del < v ? del : v;
			v = ins < v ? ins : v;
			if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && (size_t)d[i - 2][j - 2] + 1 < v)
				v = (size_t)d[i - 2][j - 2] + 1;
			d[i][j] = (unsigned char)v;
		}
	return d[la][lb];
}

/* The one key `name` is most likely a typo of (at most 2 edits, and fewer
 * than half its letters), or NULL: then the message lists them all. */
static const char *nearest_key(const char *const *keys, size_t n, const char *name, size_t len)
{
	const char *best = NULL;
	size_t best_d = 3, ties = 0;
	if (len == 0 || len > KEY_NEAR_MAX)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		size_t kl = strlen(keys[i]);
		if (kl > KEY_NEAR_MAX)
			continue;
		size_t dist = key_distance(name, len, keys[i], kl);
		if (dist * 2 >= kl || dist > 2)
			continue;
		if (dist < best_d) {
			best = keys[i];
			best_d = dist;
			ties = 0;
		} else if (dist == best_d) {
			ties++;
		}
	}
	return ties ? NULL : best; /* two keys as near: no guess */
}

void walk_map(struct ld *ld, yaml_document_t *doc, const yaml_node_t *map, const char *path,
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
			const char *near = nearest_key(keys + listed, nkeys - listed, sval(k), slen(k));
			if (near) {
				add_err(ld, node_pos(k), kpath, "unknown key, did you mean %s?", near);
				continue;
			}
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
bool want_map(struct ld *ld, const yaml_node_t *n, const char *path, const char *what)
{
	if (n->type == YAML_MAPPING_NODE)
		return true;
	if (!is_null(n))
		bad_value(ld, n, path, "%s", what);
	return false;
}

/* A scalar as text without NUL bytes; reports `what` otherwise. */
bool want_text(struct ld *ld, const yaml_node_t *n, const char *path, const char *what)
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

bool get_u32(struct ld *ld, const yaml_node_t *n, const char *path, uint32_t lo, uint32_t hi,
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
const char *fmt_ms(uint64_t ms, char *buf, size_t sz)
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

/* TCP keepalive times: the kernel takes whole seconds (row k: k->min..k->max). */
static bool get_seconds(struct ld *ld, const yaml_node_t *n, const char *path, const struct cfg_key *k,
                        uint32_t *out)
{
	uint64_t v = 0;

	if (!read_duration(ld, n, path, &v))
		return false;
	if (v % MS_S != 0 || v < k->min * MS_S || v > k->max * MS_S) {
		bad_value(ld, n, path, "a whole number of seconds from %llus to %llus", (unsigned long long)k->min,
		          (unsigned long long)k->max);
		return false;
	}
	*out = (uint32_t)(v / MS_S);
	return true;
}

/* true/yes/on or false/no/off, lower case; `what` names what else would do. */
bool get_bool(struct ld *ld, const yaml_node_t *n, const char *path, const char *what, bool *out)
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
unsigned char *dup_bytes(struct ld *ld, const void *src, size_t len)
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
bool get_escaped(struct ld *ld, const yaml_node_t *n, const char *path, bool nonempty,
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
bool get_hex(struct ld *ld, const yaml_node_t *n, const char *path, bool nonempty, unsigned char **out,
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
regex_t *compile_regex(const char *src)
{
	regex_t *re = malloc(sizeof *re);

	if (re && regcomp(re, src, REG_EXTENDED) != 0) {
		free(re);
		re = NULL;
	}
	return re;
}

void free_regex(regex_t *re)
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
bool get_regex(struct ld *ld, const yaml_node_t *n, const char *path, char **src)
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
bool get_http_path(struct ld *ld, const yaml_node_t *n, const char *path, char **out)
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

/* Run wp_backoff_check() on the built-in backoff with the field of row k replaced. */
static bool check_backoff_field(struct ld *ld, const yaml_node_t *n, const char *path, const struct cfg_key *k,
                                double v)
{
	struct cfg_pool probe;
	const char *why = "invalid value";
	char got[SHOW_BUF];

	builtin_pool(&probe);
	memcpy((char *)&probe + k->off, &v, sizeof v);
	if (wp_backoff_check(&probe.backoff, &why) == 0)
		return true;
	add_err(ld, node_pos(n), path, "%s, got %s", why, desc(n, got));
	return false;
}

/* Text of k->min..k->max bytes without NUL into a new string at *dst (a
 * char *), for the rows of type STRING and PATH. */
static bool get_string(struct ld *ld, const struct cfg_key *k, const yaml_node_t *n, const char *path, void *dst)
{
	const char *what = k->type == CFG_T_PATH ? "a path" : "a string";
	char *copy;

	if (!want_text(ld, n, path, what))
		return false;
	if (slen(n) < k->min || slen(n) > k->max || is_null(n)) {
		bad_value(ld, n, path, "%s of %llu to %llu bytes", what, (unsigned long long)k->min,
		          (unsigned long long)k->max);
		return false;
	}
	copy = strdup(sval(n));
	if (!copy) {
		ld->oom = true;
		return false;
	}
	memcpy(dst, &copy, sizeof copy);
	return true;
}

/*
 * An ALPN protocol list (row k, type ALPN): one name or a list of
 * k->min..k->max names of 1..255 bytes each, stored in the wire format of
 * RFC 7301 (each name after its length byte) at *out, *len.
 */
bool get_alpn(struct ld *ld, yaml_document_t *doc, const struct cfg_key *k, const yaml_node_t *n,
              const char *path, unsigned char **out, size_t *len)
{
	unsigned char buf[CFG_MAX_ALPN * 256];
	char ipath[PATH_BUF];
	size_t count = 1, o = 0;
	bool ok = true;

	if (n->type == YAML_SEQUENCE_NODE)
		count = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
	else if (n->type != YAML_SCALAR_NODE || is_null(n))
		count = 0;
	if (count < k->min || count > k->max) {
		bad_value(ld, n, path, "a list of %llu to %llu protocol names", (unsigned long long)k->min,
		          (unsigned long long)k->max);
		return false;
	}
	for (size_t i = 0; i < count; i++) {
		const yaml_node_t *item = n;

		if (n->type == YAML_SEQUENCE_NODE) {
			if (!(item = node_at(doc, n->data.sequence.items.start[i])))
				continue;
			path_index(ipath, path, i);
		} else {
			snprintf(ipath, sizeof ipath, "%s", path);
		}
		if (item->type != YAML_SCALAR_NODE || slen(item) == 0 || slen(item) > 255) {
			bad_value(ld, item, ipath, "a protocol name of 1 to 255 bytes");
			ok = false;
			continue;
		}
		buf[o++] = (unsigned char)slen(item);
		memcpy(buf + o, sval(item), slen(item));
		o += slen(item);
	}
	if (!ok)
		return false;
	*out = dup_bytes(ld, buf, o);
	*len = o;
	return *out != NULL;
}

/* A plain value (cfg_key_scalar), or the text of a STRING or PATH row, of row k into its field of `base`, with the
 * row's range; false when it was reported. */
bool get_key(struct ld *ld, const struct cfg_key *k, const yaml_node_t *n, const char *path, void *base)
{
	void *dst = (char *)base + k->off;
	double d;
	int i;

	switch (k->type) {
	case CFG_T_U32:
		return get_u32(ld, n, path, (uint32_t)k->min, (uint32_t)k->max, dst);
	case CFG_T_DURATION:
		return get_duration(ld, n, path, k->min, k->max, dst);
	case CFG_T_DURATION_OR_0:
		return get_duration_or_0(ld, n, path, k->min, k->max, dst);
	case CFG_T_SECONDS:
		return get_seconds(ld, n, path, k, dst);
	case CFG_T_NUMBER:
		if (!get_double(ld, n, path, &d) || !check_backoff_field(ld, n, path, k, d))
			return false;
		memcpy(dst, &d, sizeof d);
		return true;
	case CFG_T_BOOL:
		return get_bool(ld, n, path, k->what, dst);
	case CFG_T_ENUM:
		if (!get_enum(ld, n, path, k->names, k->n_names, &i))
			return false;
		i = k->values ? k->values[i] : i;
		memcpy(dst, &i, sizeof i); /* enums are int-sized (checked below) */
		return true;
	case CFG_T_STRING:
	case CFG_T_PATH:
		return get_string(ld, k, n, path, dst);
	default:
		return false;
	}
}
_Static_assert(sizeof(enum cfg_balance) == sizeof(int) && sizeof(enum cfg_check_type) == sizeof(int) &&
                   sizeof(enum cfg_starttls) == sizeof(int) && sizeof(enum cfg_dns_family) == sizeof(int) &&
                   sizeof(enum cfg_dns_mode) == sizeof(int),
               "enum keys are stored as int");


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

/* A mode value; `example` is the mode the message shows ("0660"). */
bool get_mode(struct ld *ld, const yaml_node_t *n, const char *path, const char *example, mode_t *out)
{
	if (n->type == YAML_SCALAR_NODE && strlen(sval(n)) == slen(n) && parse_mode(sval(n), out))
		return true;
	bad_value(ld, n, path, "an octal mode like \"%s\", at most 0777", example);
	return false;
}

