/*
 * config/diff.c — what a reload must do with a pool (or daemon:) whose
 * settings changed: compare two loaded configs row by row of the key table
 * (keys.h), each row carrying its own reload class. There is no list of
 * fields here to keep in step with config.h: a new row is compared as soon
 * as it is declared. Types with pointers compare what they point to. One
 * value is not a key: the TLS digest, which changes with the contents of the
 * files a tls: block names.
 */
#include "keys.h"

#include <string.h>

static bool bytes_equal(const void *a, size_t an, const void *b, size_t bn)
{
	return an == bn && (an == 0 || memcmp(a, b, an) == 0);
}

static bool str_equal(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static bool allow_equal(const struct cfg_allow *a, const struct cfg_allow *b)
{
	return a->enabled == b->enabled &&
	       bytes_equal(a->uids, a->n_uids * sizeof *a->uids, b->uids, b->n_uids * sizeof *b->uids) &&
	       bytes_equal(a->gids, a->n_gids * sizeof *a->gids, b->gids, b->n_gids * sizeof *b->gids);
}

static bool servers_equal(char *const *a, size_t an, char *const *b, size_t bn)
{
	if (an != bn)
		return false;
	for (size_t i = 0; i < an; i++)
		if (strcmp(a[i], b[i]) != 0)
			return false;
	return true;
}

/* A backend's merged dns: block: the plain fields, then the servers (the
 * same list in the same order: c-ares asks them in that order). */
static bool dns_equal(const struct cfg_dns *a, const struct cfg_dns *b)
{
	return a->refresh_ms == b->refresh_ms && a->respect_ttl == b->respect_ttl && a->min_ttl_ms == b->min_ttl_ms &&
	       a->max_ttl_ms == b->max_ttl_ms && a->timeout_ms == b->timeout_ms && a->tries == b->tries &&
	       a->hold_ms == b->hold_ms && a->family == b->family && a->mode == b->mode &&
	       servers_equal(a->servers, a->n_servers, b->servers, b->n_servers);
}

/* The field of row k in two structs of its item type. */
static bool field_equal(const struct cfg_key *k, const void *a, const void *b)
{
	const char *fa = (const char *)a + k->off, *fb = (const char *)b + k->off;

	switch (k->type) {
	case CFG_T_BYTES:
	case CFG_T_ALPN: {
		const unsigned char *pa, *pb;
		size_t la, lb;
		memcpy(&pa, fa, sizeof pa);
		memcpy(&pb, fb, sizeof pb);
		memcpy(&la, (const char *)a + k->len_off, sizeof la);
		memcpy(&lb, (const char *)b + k->len_off, sizeof lb);
		return (!pa && !pb) || (pa && pb && bytes_equal(pa, la, pb, lb));
	}
	case CFG_T_REGEX:
	case CFG_T_TEXT:
	case CFG_T_STRING:
	case CFG_T_PATH:
	case CFG_T_SOCKET:
	case CFG_T_ADDRESS: {
		const char *sa, *sb;
		memcpy(&sa, fa, sizeof sa);
		memcpy(&sb, fb, sizeof sb);
		if (!str_equal(sa, sb))
			return false;
		if (k->type == CFG_T_ADDRESS && k->item == CFG_ITEM_BACKEND) { /* IP literals; a name has none */
			const struct cfg_backend *ba = a, *bb = b;
			return bytes_equal(&ba->addr, ba->addrlen, &bb->addr, bb->addrlen);
		}
		return true;
	}
	case CFG_T_SERVERS: {
		char **va, **vb;
		size_t la, lb;
		memcpy(&va, fa, sizeof va);
		memcpy(&vb, fb, sizeof vb);
		memcpy(&la, (const char *)a + k->len_off, sizeof la);
		memcpy(&lb, (const char *)b + k->len_off, sizeof lb);
		return servers_equal(va, la, vb, lb);
	}
	case CFG_T_DNS:
		return dns_equal((const struct cfg_dns *)fa, (const struct cfg_dns *)fb);
	case CFG_T_ALLOW:
		return allow_equal((const struct cfg_allow *)fa, (const struct cfg_allow *)fb);
	case CFG_T_IDS:
	case CFG_T_NAMES:
		return true; /* compared as part of their allow: block */
	default:
		return memcmp(fa, fb, k->size) == 0; /* plain values: integers, enums, bools, doubles */
	}
}

/* The items row k is a field of in pool p: where they start, how many, and
 * the size of one; the pool itself for a pool row. */
static const char *items_of(const struct cfg_key *k, const struct cfg_pool *p, size_t *n, size_t *stride)
{
	switch (k->item) {
	case CFG_ITEM_LISTEN:
		*n = p->n_listen, *stride = sizeof *p->listen;
		return (const char *)p->listen;
	case CFG_ITEM_BACKEND:
		*n = p->n_backends, *stride = sizeof *p->backends;
		return (const char *)p->backends;
	default:
		*n = 1, *stride = sizeof *p;
		return (const char *)p;
	}
}

/* Row k of two pools: for a per-item row, every item (a different count is
 * a different shape: the pool is replaced). */
static bool row_equal(const struct cfg_key *k, const struct cfg_pool *a, const struct cfg_pool *b)
{
	size_t na, nb, stride;
	const char *ia = items_of(k, a, &na, &stride), *ib = items_of(k, b, &nb, &stride);

	if (na != nb)
		return false;
	for (size_t i = 0; i < na; i++)
		if (!field_equal(k, ia + i * stride, ib + i * stride))
			return false;
	return true;
}

enum cfg_reload cfg_pool_diff(const struct cfg_pool *old, const struct cfg_pool *cur, bool *health_changed)
{
	enum cfg_reload how = CFG_RELOAD_SAME;
	bool health = false;

	if ((old->n_listen != cur->n_listen) || (old->n_backends != cur->n_backends))
		how = CFG_RELOAD_REPLACE; /* also caught by the rows, whatever their class */
	for (size_t i = 0; i < cfg_n_keys; i++) {
		const struct cfg_key *k = &cfg_keys[i];

		if (!(k->where & CFG_IN_POOL) || row_equal(k, old, cur))
			continue;
		if (k->reload > how)
			how = k->reload;
		if (strncmp(k->path, "health_check.", 13) == 0)
			health = true;
	}
	if (old->handoff.path && cur->handoff.path && !allow_equal(&old->handoff.allow, &cur->handoff.allow) &&
	    how < CFG_RELOAD_IN_PLACE)
		how = CFG_RELOAD_IN_PLACE; /* a copy of the pool's allow: (inherit_allow), compared for safety */
	/* The same tls settings may read files whose contents changed (a new CA,
	 * a renewed client certificate): the digest covers both. */
	if (memcmp(old->tls.digest, cur->tls.digest, sizeof old->tls.digest) != 0 && how < CFG_RELOAD_IN_PLACE)
		how = CFG_RELOAD_IN_PLACE;
	/* The same password_file with a new password in it: the checks restart
	 * with it (they read it from the config at each check anyway). */
	if (!bytes_equal(old->health.password, old->health.password_len, cur->health.password,
	                 cur->health.password_len)) {
		health = true;
		if (how < CFG_RELOAD_IN_PLACE)
			how = CFG_RELOAD_IN_PLACE;
	}
	if (health_changed)
		*health_changed = health;
	return how;
}

enum cfg_reload cfg_daemon_diff(const struct cfg_daemon *old, const struct cfg_daemon *cur)
{
	enum cfg_reload how = CFG_RELOAD_SAME;

	for (size_t i = 0; i < cfg_n_keys; i++) {
		const struct cfg_key *k = &cfg_keys[i];

		if (k->item == CFG_ITEM_DAEMON && !field_equal(k, old, cur) && k->reload > how)
			how = k->reload;
	}
	return how;
}
