/*
 * tests/fuzz/fuzz_config.c — libFuzzer target for the configuration loader
 * (config/config.c, cfg_load_buffer): the input is a whole YAML file.
 *
 * Besides what ASan/UBSan catch, it checks the loader's contract: a success
 * has no errors and a config within the documented limits; a failure has no
 * config and at least one error, and every error is one printable line that
 * starts with "fuzz.yaml:" and, unless it concerns the whole file, carries a
 * positive line:col inside the document.
 *
 * Name lookups are made hermetic (no DNS, no NSS modules, so the fuzzer
 * neither waits on the network nor depends on the machine): getaddrinfo()
 * (and getaddrinfo_a(), through it) accepts numeric hosts and "localhost" only, and getpwnam_r()/getgrnam_r()
 * know a fixed table of names (and ask for a bigger buffer first, so the
 * loader's ERANGE loop runs).
 */
#include <dlfcn.h>
#include <errno.h>
#include <grp.h>
#include <netdb.h>
#include <pwd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "config.h"

#define NAME "fuzz.yaml"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- hermetic name lookups (these definitions win over libc's) ---------- */

typedef int (*gai_fn)(const char *, const char *, const struct addrinfo *, struct addrinfo **);

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints, struct addrinfo **res)
{
	static gai_fn real;
	if (!real)
		real = (gai_fn)dlsym(RTLD_NEXT, "getaddrinfo");
	if (!real)
		abort();
	struct addrinfo h = {0};
	if (hints)
		h = *hints;
	h.ai_flags |= AI_NUMERICHOST;
	if (node && strcmp(node, "localhost") == 0)
		node = "127.0.0.1";
	return real(node, service, &h, res);
}

/* The loader resolves names with getaddrinfo_a() (bounded wait); glibc's
 * helper threads call its internal getaddrinfo, past the override above, so
 * this stand-in answers every request at once through that override. The
 * result goes where glibc's own gai_error() reads it (__return), so the
 * loader's gai_error/gai_suspend calls work unchanged (none is queued). */
int getaddrinfo_a(int mode, struct gaicb *list[], int n, struct sigevent *sev)
{
	(void)mode;
	(void)sev;
	for (int i = 0; i < n; i++)
		if (list[i])
			list[i]->__return = getaddrinfo(list[i]->ar_name, list[i]->ar_service, list[i]->ar_request,
			                                &list[i]->ar_result);
	return 0;
}

struct fake_id {
	const char *name;
	unsigned id;
};
static const struct fake_id fake_users[] = {{"root", 0}, {"daemon", 1}, {"nobody", 65534}, {"app", 1001}};
static const struct fake_id fake_groups[] = {{"root", 0}, {"daemon", 1}, {"nogroup", 65534}, {"app", 1001}};
#define FAKE_BUF_NEED 2048 /* the loader starts with 1024: one ERANGE round first */

static const struct fake_id *fake_find(const struct fake_id *t, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(t[i].name, name) == 0)
			return &t[i];
	return NULL;
}

int getpwnam_r(const char *name, struct passwd *pw, char *buf, size_t buflen, struct passwd **result)
{
	*result = NULL;
	if (buflen < FAKE_BUF_NEED)
		return ERANGE;
	const struct fake_id *f = fake_find(fake_users, sizeof fake_users / sizeof *fake_users, name);
	if (!f)
		return 0;
	snprintf(buf, buflen, "%s", f->name);
	*pw = (struct passwd){.pw_name = buf, .pw_passwd = (char *)"x", .pw_uid = f->id, .pw_gid = f->id,
	                      .pw_gecos = (char *)"", .pw_dir = (char *)"/", .pw_shell = (char *)"/bin/false"};
	*result = pw;
	return 0;
}

int getgrnam_r(const char *name, struct group *gr, char *buf, size_t buflen, struct group **result)
{
	static char *no_members[] = {NULL};
	*result = NULL;
	if (buflen < FAKE_BUF_NEED)
		return ERANGE;
	const struct fake_id *f = fake_find(fake_groups, sizeof fake_groups / sizeof *fake_groups, name);
	if (!f)
		return 0;
	snprintf(buf, buflen, "%s", f->name);
	*gr = (struct group){.gr_name = buf, .gr_passwd = (char *)"x", .gr_gid = f->id, .gr_mem = no_members};
	*result = gr;
	return 0;
}

/* ---- the target ---------------------------------------------------------- */

static void fail(const char *what, const char *detail)
{
	fprintf(stderr, "fuzz_config: contract broken: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
	abort();
}

/* "fuzz.yaml:L:C: ..." with 1 <= L <= lines, 1 <= C, or "fuzz.yaml: ..." (the whole file). */
static void check_error_line(const char *m, unsigned long lines)
{
	const size_t nl = strlen(NAME);
	if (strncmp(m, NAME ":", nl + 1) != 0)
		fail("error line does not start with the file name", m);
	for (const unsigned char *p = (const unsigned char *)m; *p; p++)
		if (*p == '\n' || *p == '\r')
			fail("error line contains a line break", m);
	const char *p = m + nl + 1;
	if (*p == ' ')
		return; /* whole-file error */
	char *end;
	unsigned long line = strtoul(p, &end, 10), col;
	if (end == p || *end != ':')
		fail("error line has no line:col", m);
	p = end + 1;
	col = strtoul(p, &end, 10);
	if (end == p || *end != ':' || end[1] != ' ')
		fail("error line has no line:col", m);
	if (line == 0 || col == 0 || line > lines)
		fail("error position outside the document", m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct wp_config *cfg = (struct wp_config *)1;
	struct cfg_errors errs = {0};
	/* An exact-size copy: ASan sees any read past the document. */
	char *buf = malloc(size ? size : 1);
	if (!buf)
		return 0;
	memcpy(buf, data, size);

	int r = cfg_load_buffer(NAME, buf, size, &cfg, &errs);
	if (r == 0) {
		if (!cfg)
			fail("success without a config", NULL);
		if (errs.n || errs.truncated)
			fail("success with errors", errs.n ? errs.msg[0] : NULL);
		if (cfg->n_pools > CFG_MAX_POOLS)
			fail("more pools than CFG_MAX_POOLS", NULL);
		for (size_t i = 0; i < cfg->n_pools; i++) {
			const struct cfg_pool *p = &cfg->pools[i];
			if (!p->name || !*p->name || strlen(p->name) > CFG_MAX_NAME)
				fail("pool name empty or too long", p->name);
			if (p->n_backends < 1 || p->n_backends > CFG_MAX_BACKENDS)
				fail("backend count out of range", p->name);
			if (p->n_listen < 1 || p->n_listen > CFG_MAX_LISTEN)
				fail("listen count out of range", p->name);
			if (p->min_idle > p->max_connections || p->max_connections > CFG_MAX_CONNECTIONS)
				fail("min_idle/max_connections out of range", p->name);
			for (size_t j = 0; j < p->n_backends; j++) {
				const struct cfg_backend *b = &p->backends[j];
				const struct cfg_dns *d = &b->dns;
				/* an IP literal has its address; a name has none (the daemon resolves it) */
				if (b->is_name != (b->addrlen == 0) || b->port == 0 || !b->host || !*b->host ||
				    b->weight < 1 || b->weight > CFG_MAX_WEIGHT)
					fail("backend address, name or weight out of range", b->name);
				if (d->min_ttl_ms > d->max_ttl_ms || d->tries < 1 || d->tries > 10 ||
				    d->n_servers > CFG_MAX_DNS_SERVERS || (d->n_servers && !d->servers) ||
				    d->refresh_ms < 100 || d->timeout_ms < 10)
					fail("backend dns settings out of range", b->name);
				for (size_t k = 0; k < d->n_servers; k++)
					if (!d->servers[k] || !*d->servers[k])
						fail("dns server empty", b->name);
			}
			for (size_t j = 0; j < p->n_listen; j++)
				if (!p->listen[j].path || !*p->listen[j].path ||
				    strlen(p->listen[j].path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
					fail("listen path empty or too long", p->listen[j].path);
		}
		cfg_free(cfg);
	} else {
		if (r != -1)
			fail("return value neither 0 nor -1", NULL);
		if (cfg)
			fail("failure left a config", NULL);
		if (errs.n == 0 && errs.truncated == 0)
			fail("failure without an error", NULL);
		if (errs.n > CFG_MAX_ERRORS)
			fail("more errors than CFG_MAX_ERRORS", NULL);
		unsigned long lines = 1;
		for (size_t i = 0; i < size; i++)
			lines += data[i] == '\n';
		/* libyaml also breaks lines at \r, \r\n, NEL, LS and PS: allow for them. */
		for (size_t i = 0; i < size; i++)
			lines += data[i] == '\r' || data[i] == 0x85 || data[i] == 0xe2;
		for (size_t i = 0; i < errs.n; i++)
			check_error_line(errs.msg[i], lines + 1);
	}
	cfg_errors_free(&errs);
	free(buf);
	return 0;
}
