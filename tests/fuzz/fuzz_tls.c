/*
 * tests/fuzz/fuzz_tls.c — libFuzzer target for a pool's tls: block
 * (config/config.c parse_tls and finish_tls, config/tls.c tls_build: the
 * merge with defaults:, every key's parser, the files read and hashed, the
 * SSL_CTX built from them).
 *
 * The input's first byte chooses the document's shape, the rest is the body
 * of a tls: block, each line indented by 6 spaces, so that every input stays
 * inside the block:
 *   bit 0  the block is under defaults: (pool p inherits it), else in pool p
 *   bit 1  pool p also has a handoff socket (tls with handoff is an error)
 *   bit 2  a second pool q with tls: false
 * Inputs with a line break other than \n (\r, NEL, LS, PS) are skipped:
 * libyaml would end the line there and the rest could leave the block.
 * Files named in the seeds live in tests/fuzz/tls/files/ (paths relative to
 * the repository root, where `make fuzz` runs); its ca.pem also stands for
 * OpenSSL's default verify paths (see below).
 *
 * Besides what ASan/UBSan catch, it checks the contract of config.h's
 * struct cfg_tls: a pool with TLS has its SSL_CTX and a non-zero digest, one
 * without has neither and no settings; the ALPN list is in wire format;
 * verify: false is warned about; tls never comes with handoff; loading the
 * same document twice gives the same digest. A failure has no config and
 * only error lines "fuzz.yaml:L:C: ..." inside the document (or about the
 * whole file).
 */
#include <openssl/ssl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

#define NAME "fuzz.yaml"
#define INDENT "      "
#define BODY_MAX 4096 /* bytes of block body: a tls: block is short */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Hermetic and fast: OpenSSL's default paths would parse the system's CA
 * bundle (tens of ms, more under ASan) for every input that names no CA;
 * this definition wins over libssl's for the loader linked in here. */
int SSL_CTX_set_default_verify_paths(SSL_CTX *ctx)
{
	return SSL_CTX_load_verify_locations(ctx, "tests/fuzz/tls/files/ca.pem", NULL);
}

static void fail(const char *what, const char *detail)
{
	fprintf(stderr, "fuzz_tls: contract broken: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
	abort();
}

/* A line break libyaml knows other than \n: \r, NEL (C2 85), LS/PS (E2 80 A8/A9). */
static bool other_break(const uint8_t *d, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (d[i] == '\r' || (d[i] == 0xc2 && i + 1 < n && d[i + 1] == 0x85) ||
		    (d[i] == 0xe2 && i + 2 < n && d[i + 1] == 0x80 && (d[i + 2] == 0xa8 || d[i + 2] == 0xa9)))
			return true;
	}
	return false;
}

/* The document for flags and body; *lines is its line count. */
static char *build(unsigned flags, const uint8_t *body, size_t n, size_t *len, unsigned long *lines)
{
	size_t cap = 512 + n * 7 + 8, o = 0;
	char *doc = malloc(cap);

	if (!doc)
		return NULL;
#define PUT(s) (memcpy(doc + o, (s), strlen(s)), o += strlen(s))
	if (flags & 1)
		PUT("defaults:\n  tls:\n");
	if (flags & 1) {
		PUT(INDENT);
		for (size_t i = 0; i < n; i++) {
			doc[o++] = (char)body[i];
			if (body[i] == '\n')
				PUT(INDENT);
		}
		PUT("\n");
	}
	PUT("pools:\n  p:\n    listen: /tmp/wp-fuzz-tls/p.sock\n    backends: 127.0.0.1:6379\n");
	if (flags & 2)
		PUT("    handoff: {listen: /tmp/wp-fuzz-tls/h.sock}\n");
	if (!(flags & 1)) {
		PUT("    tls:\n" INDENT);
		for (size_t i = 0; i < n; i++) {
			doc[o++] = (char)body[i];
			if (body[i] == '\n')
				PUT(INDENT);
		}
		PUT("\n");
	}
	if (flags & 4)
		PUT("  q:\n    listen: /tmp/wp-fuzz-tls/q.sock\n    backends: 127.0.0.1:6380\n    tls: false\n");
#undef PUT
	*len = o;
	*lines = 1;
	for (size_t i = 0; i < o; i++)
		*lines += doc[i] == '\n';
	return doc;
}

static void check_alpn(const struct cfg_tls *t)
{
	size_t i = 0;

	if (!t->alpn != !t->alpn_len)
		fail("alpn and alpn_len disagree", NULL);
	while (i < t->alpn_len) {
		if (t->alpn[i] == 0)
			fail("alpn has an empty protocol name", NULL);
		i += 1 + t->alpn[i];
	}
	if (i != t->alpn_len)
		fail("alpn is not in wire format", NULL);
}

static bool has_warning(const struct wp_config *cfg, const char *what)
{
	for (size_t i = 0; i < cfg->warnings.n; i++)
		if (strstr(cfg->warnings.msg[i], what))
			return true;
	return false;
}

static void check_pool(const struct wp_config *cfg, const struct cfg_pool *p)
{
	static const unsigned char zero[32];
	const struct cfg_tls *t = &p->tls;
	const char *const strs[] = {t->ca_file, t->ca_path, t->server_name, t->cert_file, t->key_file,
	                            t->ciphers, t->ciphersuites};

	for (size_t j = 0; j < p->n_backends; j++)
		if (!p->backends[j].host || !*p->backends[j].host)
			fail("backend without its host", p->backends[j].name);
	if (!t->enabled) {
		if (t->ctx || memcmp(t->digest, zero, sizeof zero) != 0 || t->alpn)
			fail("a pool without tls has a context, a digest or an alpn list", p->name);
		for (size_t i = 0; i < sizeof strs / sizeof *strs; i++)
			if (strs[i])
				fail("a pool without tls keeps a tls setting", strs[i]);
		return;
	}
	if (!t->ctx)
		fail("a pool with tls has no SSL_CTX", p->name);
	if (memcmp(t->digest, zero, sizeof zero) == 0)
		fail("a pool with tls has no digest", p->name);
	if (p->handoff.path)
		fail("tls loaded together with handoff", p->name);
	if (t->min_version != 0x0303 && t->min_version != 0x0304)
		fail("min_version neither TLS 1.2 nor 1.3", p->name);
	if (t->starttls != CFG_STARTTLS_NONE && t->starttls != CFG_STARTTLS_POSTGRES)
		fail("starttls out of range", p->name);
	if (!!t->cert_file != !!t->key_file)
		fail("cert_file without key_file or the reverse", p->name);
	for (size_t i = 0; i < sizeof strs / sizeof *strs; i++)
		if (strs[i] && !*strs[i])
			fail("an empty tls setting", p->name);
	check_alpn(t);
	if (!t->verify && !has_warning(cfg, "tls.verify: warning: false: backend certificates are not verified"))
		fail("verify: false without its warning", p->name);
}

/* "fuzz.yaml:L:C: ..." with 1 <= L <= lines, or "fuzz.yaml: ..." (the whole file). */
static void check_error(const char *m, unsigned long lines)
{
	const size_t nl = strlen(NAME);
	unsigned long line, col;
	char *end;

	if (strncmp(m, NAME ":", nl + 1) != 0 || strchr(m, '\n'))
		fail("error line does not start with the file name or has a line break", m);
	if (m[nl + 1] == ' ')
		return;
	line = strtoul(m + nl + 1, &end, 10);
	if (*end != ':')
		fail("error line has no line:col", m);
	col = strtoul(end + 1, &end, 10);
	if (*end != ':' || line == 0 || col == 0 || line > lines)
		fail("error position outside the document", m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct wp_config *cfg = NULL, *again = NULL;
	struct cfg_errors errs = {0};
	unsigned long lines;
	size_t len;
	char *doc;
	int r;

	if (size < 1 || size > BODY_MAX + 1 || other_break(data + 1, size - 1))
		return 0;
	if (!(doc = build(data[0], data + 1, size - 1, &len, &lines)))
		return 0;
	r = cfg_load_buffer(NAME, doc, len, &cfg, &errs);
	if (r == 0) {
		if (!cfg || errs.n || errs.truncated)
			fail("success without a config or with errors", errs.n ? errs.msg[0] : NULL);
		for (size_t i = 0; i < cfg->n_pools; i++)
			check_pool(cfg, &cfg->pools[i]);
		/* Same document, same files: same digests, no change to reload. */
		if (cfg_load_buffer(NAME, doc, len, &again, NULL) != 0)
			fail("the same document failed to load a second time", NULL);
		for (size_t i = 0; i < cfg->n_pools; i++) {
			if (memcmp(cfg->pools[i].tls.digest, again->pools[i].tls.digest, 32) != 0)
				fail("the same settings and files gave another digest", cfg->pools[i].name);
			if (cfg_pool_diff(&cfg->pools[i], &again->pools[i], NULL) != CFG_RELOAD_SAME)
				fail("the same document differs from itself", cfg->pools[i].name);
		}
		cfg_free(again);
		cfg_free(cfg);
	} else {
		if (r != -1 || cfg)
			fail("a failure returned a config or not -1", NULL);
		if (errs.n == 0 && errs.truncated == 0)
			fail("failure without an error", NULL);
		for (size_t i = 0; i < errs.n; i++)
			check_error(errs.msg[i], lines);
	}
	cfg_errors_free(&errs);
	free(doc);
	return 0;
}
