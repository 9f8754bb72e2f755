/*
 * tests/unit/test_config.c — the configuration loader (config/config.c).
 *
 * Valid forms are checked field by field. Error cases live in one table:
 * each gives a document and the exact, complete list of error lines it must
 * produce (position, key path and message), so a case also proves that no
 * error is lost and none is invented. Cases that need generated documents or
 * files are separate functions. Runs from the repository root.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <regex.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/ssl.h>
#include <sys/types.h>

#include "addr.h"
#include "config.h"

#define NAME "t.yaml"

/* A valid pool `p` on lines 2-4; cases append its other keys from line 5. */
#define HEAD                                                                                                 \
	"pools:\n"                                                                                           \
	"  p:\n"                                                                                             \
	"    listen: /tmp/wp-test/p.sock\n"                                                                  \
	"    backends: 127.0.0.1:6379\n"

static char tmpdir[64]; /* per-run scratch directory for the file cases */

/* ------------------------------------------------------------------ */
/* Helpers                                                             */

static void dump_errors(const struct cfg_errors *e)
{
	for (size_t i = 0; i < e->n; i++)
		print_message("  got: %s\n", e->msg[i]);
	if (e->truncated)
		print_message("  (+%zu truncated)\n", e->truncated);
}

static struct wp_config *load_ok(const char *yaml)
{
	struct wp_config *cfg = NULL;
	struct cfg_errors e = {0};

	if (cfg_load_buffer(NAME, yaml, strlen(yaml), &cfg, &e) != 0) {
		dump_errors(&e);
		cfg_errors_free(&e);
		fail_msg("expected the document to load");
	}
	assert_non_null(cfg);
	assert_int_equal(e.n, 0);
	assert_int_equal(e.truncated, 0);
	return cfg;
}

/* Load, expect failure, and return the errors (caller frees). */
static void load_bad_len(const char *yaml, size_t len, struct cfg_errors *e)
{
	struct wp_config *cfg = (struct wp_config *)1;

	assert_int_equal(cfg_load_buffer(NAME, yaml, len, &cfg, e), -1);
	assert_null(cfg);
}

static void load_bad(const char *yaml, struct cfg_errors *e)
{
	load_bad_len(yaml, strlen(yaml), e);
}

static bool has_error(const struct cfg_errors *e, const char *line)
{
	for (size_t i = 0; i < e->n; i++) {
		if (strcmp(e->msg[i], line) == 0)
			return true;
	}
	return false;
}

static void assert_has_error(const struct cfg_errors *e, const char *line)
{
	if (!has_error(e, line)) {
		dump_errors(e);
		fail_msg("missing error line: %s", line);
	}
}

/* Exactly these lines, in this order. */
static void assert_errors(const struct cfg_errors *e, const char *const *want)
{
	size_t n = 0;

	while (want[n])
		n++;
	if (e->n != n || e->truncated) {
		for (size_t i = 0; i < n; i++)
			print_message("  want: %s\n", want[i]);
		dump_errors(e);
		fail_msg("expected %zu error lines, got %zu", n, e->n);
	}
	for (size_t i = 0; i < n; i++) {
		if (strcmp(e->msg[i], want[i]) != 0) {
			dump_errors(e);
			fail_msg("line %zu:\n  want: %s\n  got:  %s", i, want[i], e->msg[i]);
		}
	}
}

static void write_file(const char *path, const char *data, size_t len)
{
	FILE *f = fopen(path, "wb");

	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

static uint16_t port_of(const struct cfg_backend *b)
{
	if (b->addr.ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)&b->addr)->sin_port);
	return ntohs(((const struct sockaddr_in6 *)&b->addr)->sin6_port);
}

static void assert_backend(const struct cfg_backend *b, const char *name, const char *formatted)
{
	char buf[WP_ADDR_STRLEN];

	assert_string_equal(b->name, name);
	assert_true(wp_addr_format((const struct sockaddr *)&b->addr, buf, sizeof buf) > 0);
	assert_string_equal(buf, formatted);
	assert_int_equal(b->addrlen, b->addr.ss_family == AF_INET ? sizeof(struct sockaddr_in)
	                                                          : sizeof(struct sockaddr_in6));
}

static void assert_dns_builtin(const struct cfg_dns *d);

/* Grow-only string for generated documents. */
struct sbuf {
	char *s;
	size_t n, cap;
};

static void sb_add(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sb_add(struct sbuf *b, const char *fmt, ...)
{
	va_list ap;
	int need;

	va_start(ap, fmt);
	need = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	assert_true(need >= 0);
	if (b->n + (size_t)need + 1 > b->cap) {
		b->cap = (b->n + (size_t)need + 1) * 2;
		b->s = realloc(b->s, b->cap);
		assert_non_null(b->s);
	}
	va_start(ap, fmt);
	vsnprintf(b->s + b->n, b->cap - b->n, fmt, ap);
	va_end(ap);
	b->n += (size_t)need;
}

/* The built-in values of the issue-4 keys (health checks, balance, hygiene). */
static void assert_new_key_defaults(const struct cfg_pool *p)
{
	assert_int_equal(p->balance, CFG_BALANCE_ROUND_ROBIN);
	assert_int_equal(p->max_connecting, 8);
	assert_false(p->fail_fast);
	assert_int_equal(p->health.type, CFG_CHECK_NONE);
	assert_null(p->health.send);
	assert_null(p->health.expect);
	assert_null(p->health.expect_re);
	assert_null(p->health.path);
	assert_int_equal(p->health.interval_ms, 2000);
	assert_int_equal(p->health.timeout_ms, 1000);
	assert_int_equal(p->health.fast_interval_ms, 500);
	assert_int_equal(p->health.down_interval_ms, 2000);
	assert_int_equal(p->health.rise, 2);
	assert_int_equal(p->health.fall, 3);
	assert_true(p->keepalive.enabled);
	assert_int_equal(p->keepalive.idle_s, 30);
	assert_int_equal(p->keepalive.interval_s, 10);
	assert_int_equal(p->keepalive.count, 3);
	assert_int_equal(p->tcp_user_timeout_ms, 30000);
	assert_int_equal(p->max_lifetime_ms, 0);
	assert_int_equal(p->idle_timeout_ms, 600000);
	assert_int_equal(p->max_idle_time_ms, 0);
}

static void assert_bytes(const unsigned char *got, size_t got_len, const char *want, size_t want_len)
{
	assert_non_null(got);
	assert_int_equal(got_len, want_len);
	assert_memory_equal(got, want, want_len);
}

/* ------------------------------------------------------------------ */
/* Valid forms                                                         */

static void test_reuse_and_handoff(void **state)
{
	struct wp_config *cfg;
	const struct cfg_pool *p;

	(void)state;
	cfg = load_ok(HEAD "    reuse: true\n    handoff: {listen: /tmp/wp-test/p.handoff}\n");
	p = &cfg->pools[0];
	assert_true(p->reuse.enabled);
	assert_null(p->reuse.reset_send);
	assert_int_equal(p->reuse.reset_timeout_ms, 100);
	assert_string_equal(p->handoff.path, "/tmp/wp-test/p.handoff");
	assert_int_equal(p->handoff.mode, 0660);
	cfg_free(cfg);

	cfg = load_ok(HEAD "    reuse: {reset_send: 'RESET\\r\\n', reset_expect: '+RESET\\r\\n'}\n");
	p = &cfg->pools[0];
	assert_true(p->reuse.enabled);
	assert_int_equal(p->reuse.reset_send_len, 7);
	assert_memory_equal(p->reuse.reset_send, "RESET\r\n", 7);
	assert_int_equal(p->reuse.reset_expect_len, 8);
	assert_memory_equal(p->reuse.reset_expect, "+RESET\r\n", 8);
	assert_int_equal(p->reuse.reset_timeout_ms, 1000);
	/* A reset without {nonce}: a client can forge its answer; said at load. */
	assert_int_equal(cfg->warnings.n, 1);
	assert_non_null(strstr(cfg->warnings.msg[0], "t.yaml:5:52: pools.p.reuse.reset_expect: warning: without {nonce}"));
	cfg_free(cfg);

	cfg = load_ok(HEAD "    reuse: {reset_send: 'RESET\\r\\nECHO {nonce}\\r\\n', "
	                   "reset_expect: '+RESET\\r\\n$32\\r\\n{nonce}\\r\\n'}\n");
	p = &cfg->pools[0];
	assert_int_equal(cfg->warnings.n, 0);
	assert_int_equal(cfg_nonce_count(p->reuse.reset_send, p->reuse.reset_send_len), 1);
	assert_int_equal(cfg_nonce_count(p->reuse.reset_expect, p->reuse.reset_expect_len), 1);
	assert_int_equal(cfg_nonce_count((const unsigned char *)"{nonce}{nonce}{nonc", 19), 2);
	cfg_free(cfg);

	cfg = load_ok(HEAD "    reuse: false\n");
	assert_false(cfg->pools[0].reuse.enabled);
	assert_null(cfg->pools[0].handoff.path);
	cfg_free(cfg);
}

static void test_daemon_admin_and_metrics(void **state)
{
	struct wp_config *cfg;
	const struct sockaddr_in *sin;

	(void)state;
	cfg = load_ok("daemon:\n  admin_socket: /tmp/wp-test/admin.sock\n  admin_socket_mode: \"0660\"\n"
	              "  admin_socket_readonly: /tmp/wp-test/ro.sock\n  metrics_listen: 127.0.0.1:9470\n" HEAD);
	assert_string_equal(cfg->daemon.admin.path, "/tmp/wp-test/admin.sock");
	assert_int_equal(cfg->daemon.admin.mode, 0660);
	assert_string_equal(cfg->daemon.admin_ro.path, "/tmp/wp-test/ro.sock");
	assert_int_equal(cfg->daemon.admin_ro.mode, 0660);
	assert_string_equal(cfg->daemon.metrics.name, "127.0.0.1:9470");
	sin = (const struct sockaddr_in *)&cfg->daemon.metrics.addr;
	assert_int_equal(sin->sin_family, AF_INET);
	assert_int_equal(ntohs(sin->sin_port), 9470);
	cfg_free(cfg);

	cfg = load_ok("daemon:\n  admin_socket: false\n" HEAD);
	assert_null(cfg->daemon.admin.path);
	cfg_free(cfg);
}

static void test_builtin_defaults(void **state)
{
	struct wp_config *cfg;
	const struct cfg_pool *p;

	(void)state;
	cfg = load_ok(HEAD);
	assert_string_equal(cfg->path, NAME);
	assert_int_equal(cfg->daemon.log_level, CFG_LOG_INFO);
	assert_int_equal(cfg->daemon.shutdown_timeout_ms, 30000);
	assert_string_equal(cfg->daemon.admin.path, "/run/warmpool/admin.sock");
	assert_int_equal(cfg->daemon.admin.mode, 0600);
	assert_null(cfg->daemon.admin_ro.path);
	assert_null(cfg->daemon.metrics.name);
	assert_int_equal(cfg->n_pools, 1);
	p = &cfg->pools[0];
	assert_string_equal(p->name, "p");
	assert_int_equal(p->pos.line, 2);
	assert_int_equal(p->pos.col, 3);
	assert_int_equal(p->min_idle, 2);
	assert_int_equal(p->max_connections, 64);
	assert_int_equal(p->max_clients, 4096);
	assert_int_equal(p->connect_timeout_ms, 2000);
	assert_int_equal(p->queue_timeout_ms, 5000);
	assert_int_equal(p->backoff.initial_ms, 500);
	assert_int_equal(p->backoff.max_ms, 30000);
	assert_true(p->backoff.multiplier == 1.6);
	assert_true(p->backoff.jitter == 0.2);
	assert_int_equal(p->n_listen, 1);
	assert_string_equal(p->listen[0].path, "/tmp/wp-test/p.sock");
	assert_int_equal(p->listen[0].mode, 0660);
	assert_int_equal(p->listen[0].pos.line, 3);
	assert_int_equal(p->listen[0].pos.col, 13);
	assert_int_equal(p->n_backends, 1);
	assert_backend(&p->backends[0], "127.0.0.1:6379", "127.0.0.1:6379");
	assert_int_equal(p->backends[0].pos.line, 4);
	assert_int_equal(p->backends[0].pos.col, 15);
	assert_int_equal(p->backends[0].weight, 1);
	assert_false(p->backends[0].backup);
	assert_new_key_defaults(p);
	cfg_free(cfg);
}

static void test_daemon_section(void **state)
{
	static const struct {
		const char *name;
		int level;
	} levels[] = {{"debug", CFG_LOG_DEBUG},
	              {"info", CFG_LOG_INFO},
	              {"notice", CFG_LOG_NOTICE},
	              {"warning", CFG_LOG_WARNING},
	              {"error", CFG_LOG_ERROR}};
	char yaml[512];

	(void)state;
	for (size_t i = 0; i < sizeof levels / sizeof levels[0]; i++) {
		struct wp_config *cfg;
		snprintf(yaml, sizeof yaml, "daemon:\n  log_level: %s\n  shutdown_timeout: 0s\n" HEAD,
		         levels[i].name);
		cfg = load_ok(yaml);
		assert_int_equal(cfg->daemon.log_level, levels[i].level);
		assert_int_equal(cfg->daemon.shutdown_timeout_ms, 0);
		assert_string_equal(cfg_log_level_name(levels[i].level), levels[i].name);
		cfg_free(cfg);
	}
	assert_null(cfg_log_level_name(0));
	assert_null(cfg_log_level_name(8));
}

static void test_empty_sections(void **state)
{
	struct wp_config *cfg;

	(void)state;
	/* An empty value where a mapping is expected means "nothing set". */
	cfg = load_ok("daemon:\ndefaults: ~\n" HEAD "    backoff:\n");
	assert_int_equal(cfg->daemon.log_level, CFG_LOG_INFO);
	assert_int_equal(cfg->pools[0].backoff.initial_ms, 500);
	assert_int_equal(cfg->pools[0].min_idle, 2);
	cfg_free(cfg);
}

static void test_defaults_override_builtins(void **state)
{
	struct wp_config *cfg;

	(void)state;
	cfg = load_ok("defaults:\n"
	              "  min_idle: 0\n"
	              "  max_connections: 8\n"
	              "  max_clients: 100\n"
	              "  connect_timeout: 250ms\n"
	              "  queue_timeout: 1m\n"
	              "  backoff: {initial: 1s, max: 2m, multiplier: 2, jitter: 0}\n" HEAD "  q:\n"
	              "    listen: /tmp/wp-test/q.sock\n"
	              "    backends: 127.0.0.1:6380\n");
	assert_int_equal(cfg->n_pools, 2);
	for (size_t i = 0; i < 2; i++) {
		const struct cfg_pool *p = &cfg->pools[i];
		assert_int_equal(p->min_idle, 0);
		assert_int_equal(p->max_connections, 8);
		assert_int_equal(p->max_clients, 100);
		assert_int_equal(p->connect_timeout_ms, 250);
		assert_int_equal(p->queue_timeout_ms, 60000);
		assert_int_equal(p->backoff.initial_ms, 1000);
		assert_int_equal(p->backoff.max_ms, 120000);
		assert_true(p->backoff.multiplier == 2.0);
		assert_true(p->backoff.jitter == 0.0);
	}
	assert_string_equal(cfg->pools[1].name, "q");
	cfg_free(cfg);
}

static void test_pool_overrides_defaults(void **state)
{
	struct wp_config *cfg;
	const struct cfg_pool *p, *q;

	(void)state;
	cfg = load_ok("defaults:\n"
	              "  min_idle: 5\n"
	              "  max_clients: 10\n"
	              "  backoff: {max: 1m, jitter: 0.5}\n" HEAD "    min_idle: 1\n"
	              "    max_connections: 3\n"
	              "    queue_timeout: 250ms\n"
	              "    backoff:\n"
	              "      initial: 2s\n"
	              "      jitter: 0.1\n"
	              "  q:\n"
	              "    listen: /tmp/wp-test/q.sock\n"
	              "    backends: 127.0.0.1:6380\n");
	p = &cfg->pools[0];
	q = &cfg->pools[1];
	/* p: its own values win, the rest comes from defaults, then built-ins */
	assert_int_equal(p->min_idle, 1);
	assert_int_equal(p->max_connections, 3);
	assert_int_equal(p->max_clients, 10);
	assert_int_equal(p->queue_timeout_ms, 250);
	assert_int_equal(p->connect_timeout_ms, 2000);
	assert_int_equal(p->backoff.initial_ms, 2000);
	assert_int_equal(p->backoff.max_ms, 60000);
	assert_true(p->backoff.multiplier == 1.6);
	assert_true(p->backoff.jitter == 0.1);
	/* q: defaults only */
	assert_int_equal(q->min_idle, 5);
	assert_int_equal(q->max_connections, 64);
	assert_int_equal(q->max_clients, 10);
	assert_int_equal(q->queue_timeout_ms, 5000);
	assert_int_equal(q->backoff.initial_ms, 500);
	assert_int_equal(q->backoff.max_ms, 60000);
	assert_true(q->backoff.jitter == 0.5);
	cfg_free(cfg);
}

static void test_listen_forms(void **state)
{
	struct wp_config *cfg;
	const struct cfg_pool *p;

	(void)state;
	cfg = load_ok("pools:\n"
	              "  one:\n"
	              "    listen: /tmp/wp-test/one.sock\n"
	              "    backends: 127.0.0.1:1\n"
	              "  list:\n"
	              "    listen: [/tmp/wp-test/a.sock, \"/tmp/wp-test/b.sock\"]\n"
	              "    backends: 127.0.0.1:1\n"
	              "  maps:\n"
	              "    listen:\n"
	              "      - path: /tmp/wp-test/m1.sock\n"
	              "        mode: \"0600\"\n"
	              "      - {path: /tmp/wp-test/m2.sock, mode: 0777}\n"
	              "      - {path: /tmp/wp-test/m3.sock}\n"
	              "      - /tmp/wp-test/m4.sock\n"
	              "      - {path: /tmp/wp-test/m5.sock, mode: \"0\"}\n"
	              "    backends: 127.0.0.1:1\n");
	assert_int_equal(cfg->n_pools, 3);
	p = &cfg->pools[0];
	assert_int_equal(p->n_listen, 1);
	assert_string_equal(p->listen[0].path, "/tmp/wp-test/one.sock");
	assert_int_equal(p->listen[0].mode, 0660);

	p = &cfg->pools[1];
	assert_int_equal(p->n_listen, 2);
	assert_string_equal(p->listen[0].path, "/tmp/wp-test/a.sock");
	assert_string_equal(p->listen[1].path, "/tmp/wp-test/b.sock");
	assert_int_equal(p->listen[1].mode, 0660);
	assert_int_equal(p->listen[1].pos.line, 6);
	assert_int_equal(p->listen[1].pos.col, 35);

	p = &cfg->pools[2];
	assert_int_equal(p->n_listen, 5);
	assert_string_equal(p->listen[0].path, "/tmp/wp-test/m1.sock");
	assert_int_equal(p->listen[0].mode, 0600);
	assert_int_equal(p->listen[0].pos.line, 10);
	assert_int_equal(p->listen[0].pos.col, 9);
	assert_int_equal(p->listen[1].mode, 0777);
	assert_int_equal(p->listen[2].mode, 0660);
	assert_string_equal(p->listen[3].path, "/tmp/wp-test/m4.sock");
	assert_int_equal(p->listen[3].mode, 0660);
	assert_int_equal(p->listen[4].mode, 0);
	cfg_free(cfg);
}

static void test_backend_forms(void **state)
{
	struct wp_config *cfg;
	const struct cfg_pool *p;

	(void)state;
	cfg = load_ok("pools:\n"
	              "  a:\n"
	              "    listen: /tmp/wp-test/a.sock\n"
	              "    backends: \"[::1]:6380\"\n"
	              "  b:\n"
	              "    listen: /tmp/wp-test/b.sock\n"
	              "    backends: [\"127.0.0.1:6379\", \"[::1]:6380\", \"db.example:6381\"]\n"
	              "  c:\n"
	              "    listen: /tmp/wp-test/c.sock\n"
	              "    backends:\n"
	              "      - 127.0.0.2:7000\n"
	              "      - localhost:7001\n"
	              "      - DB.LocalHost.:7002\n");
	p = &cfg->pools[0];
	assert_int_equal(p->n_backends, 1);
	assert_backend(&p->backends[0], "[::1]:6380", "[::1]:6380");

	p = &cfg->pools[1];
	assert_int_equal(p->n_backends, 3);
	assert_backend(&p->backends[0], "127.0.0.1:6379", "127.0.0.1:6379");
	assert_backend(&p->backends[1], "[::1]:6380", "[::1]:6380");
	assert_int_equal(p->backends[1].addr.ss_family, AF_INET6);
	assert_false(p->backends[0].is_name);
	assert_int_equal(p->backends[0].port, 6379);
	assert_string_equal(p->backends[2].name, "db.example:6381");
	/* A host name is the daemon's to resolve (issue 15): no address at load. */
	assert_true(p->backends[2].is_name);
	assert_string_equal(p->backends[2].host, "db.example");
	assert_int_equal(p->backends[2].port, 6381);
	assert_int_equal(p->backends[2].addrlen, 0);
	assert_int_equal(p->backends[2].pos.line, 7);
	assert_int_equal(p->backends[2].pos.col, 48);

	p = &cfg->pools[2];
	assert_int_equal(p->n_backends, 3);
	assert_backend(&p->backends[0], "127.0.0.2:7000", "127.0.0.2:7000");
	/* localhost names are the IPv4 loopback (RFC 6761), never looked up;
	 * the host stays as written (TLS verifies it). */
	assert_false(p->backends[1].is_name);
	assert_backend(&p->backends[1], "localhost:7001", "127.0.0.1:7001");
	assert_string_equal(p->backends[1].host, "localhost");
	assert_false(p->backends[2].is_name);
	assert_backend(&p->backends[2], "DB.LocalHost.:7002", "127.0.0.1:7002");
	assert_int_equal(p->backends[1].pos.line, 12);
	assert_int_equal(p->backends[1].pos.col, 9);
	cfg_free(cfg);
}

static void test_durations(void **state)
{
	struct wp_config *cfg;
	const struct cfg_pool *p;

	(void)state;
	cfg = load_ok("daemon:\n"
	              "  shutdown_timeout: 1h\n" HEAD "    connect_timeout: 250ms\n"
	              "    queue_timeout: 1.5s\n"
	              "    backoff:\n"
	              "      initial: 0.001s\n"
	              "      max: 2.5m\n"
	              "  q:\n"
	              "    listen: /tmp/wp-test/q.sock\n"
	              "    backends: 127.0.0.1:1\n"
	              "    connect_timeout: 5m\n"
	              "    queue_timeout: 0.25h\n"
	              "    backoff: {initial: 1ms, max: 1.50s}\n");
	assert_int_equal(cfg->daemon.shutdown_timeout_ms, 3600000);
	p = &cfg->pools[0];
	assert_int_equal(p->connect_timeout_ms, 250);
	assert_int_equal(p->queue_timeout_ms, 1500);
	assert_int_equal(p->backoff.initial_ms, 1);
	assert_int_equal(p->backoff.max_ms, 150000);
	p = &cfg->pools[1];
	assert_int_equal(p->connect_timeout_ms, 300000);
	assert_int_equal(p->queue_timeout_ms, 900000);
	assert_int_equal(p->backoff.initial_ms, 1);
	assert_int_equal(p->backoff.max_ms, 1500);
	cfg_free(cfg);
}

static void test_numbers_at_limits(void **state)
{
	struct wp_config *cfg;
	const struct cfg_pool *p;

	(void)state;
	cfg = load_ok(HEAD "    min_idle: 100000\n"
	                   "    max_connections: 100000\n"
	                   "    max_clients: 1000000\n"
	                   "    backoff: {multiplier: 100, jitter: 0.999}\n"
	                   "  q:\n"
	                   "    listen: /tmp/wp-test/q.sock\n"
	                   "    backends: 127.0.0.1:1\n"
	                   "    min_idle: 0\n"
	                   "    max_connections: 1\n"
	                   "    max_clients: 1\n"
	                   "    backoff: {initial: 1h, max: 1h, multiplier: 1.0, jitter: 0}\n");
	p = &cfg->pools[0];
	assert_int_equal(p->min_idle, 100000);
	assert_int_equal(p->max_connections, 100000);
	assert_int_equal(p->max_clients, 1000000);
	assert_true(p->backoff.multiplier == 100.0);
	assert_true(p->backoff.jitter == 0.999);
	p = &cfg->pools[1];
	assert_int_equal(p->min_idle, 0);
	assert_int_equal(p->max_connections, 1);
	assert_int_equal(p->max_clients, 1);
	assert_int_equal(p->backoff.initial_ms, 3600000);
	cfg_free(cfg);
}

static void test_pool_names(void **state)
{
	struct sbuf b = {0};
	struct wp_config *cfg;
	char name64[CFG_MAX_NAME + 1];

	(void)state;
	memset(name64, 'n', CFG_MAX_NAME);
	name64[CFG_MAX_NAME] = '\0';
	sb_add(&b, "pools:\n  %s: {listen: /tmp/wp-test/1, backends: 127.0.0.1:1}\n", name64);
	sb_add(&b, "  A-z_0.9: {listen: /tmp/wp-test/2, backends: 127.0.0.1:1}\n");
	sb_add(&b, "  \"7\": {listen: /tmp/wp-test/3, backends: 127.0.0.1:1}\n");
	cfg = load_ok(b.s);
	assert_int_equal(cfg->n_pools, 3);
	assert_string_equal(cfg->pools[0].name, name64);
	assert_string_equal(cfg->pools[1].name, "A-z_0.9");
	assert_string_equal(cfg->pools[2].name, "7");
	cfg_free(cfg);
	free(b.s);
}

static void test_sample_file(void **state)
{
	struct wp_config *cfg = NULL;
	struct cfg_errors e = {0};
	struct cfg_pool *p;

	(void)state;
	if (cfg_load_file("config/warmpool.yaml", &cfg, &e) != 0) {
		dump_errors(&e);
		cfg_errors_free(&e);
		fail_msg("config/warmpool.yaml does not load");
	}
	/* The sample shows the built-in values: it must agree with them. */
	assert_int_equal(cfg->daemon.log_level, CFG_LOG_INFO);
	assert_int_equal(cfg->daemon.shutdown_timeout_ms, 30000);
	assert_int_equal(cfg->n_pools, 1);
	p = &cfg->pools[0];
	assert_string_equal(p->name, "redis");
	assert_int_equal(p->min_idle, 2);
	assert_int_equal(p->max_connections, 64);
	assert_int_equal(p->max_clients, 4096);
	assert_int_equal(p->connect_timeout_ms, 2000);
	assert_int_equal(p->queue_timeout_ms, 5000);
	assert_int_equal(p->backoff.initial_ms, 500);
	assert_int_equal(p->backoff.max_ms, 30000);
	assert_true(p->backoff.multiplier == 1.6);
	assert_true(p->backoff.jitter == 0.2);
	assert_int_equal(p->n_listen, 2);
	assert_int_equal(p->listen[0].mode, 0660);
	assert_int_equal(p->listen[1].mode, 0600);
	assert_int_equal(p->n_backends, 3);
	assert_int_equal(p->backends[0].addr.ss_family, AF_INET);
	assert_false(p->backends[1].backup);
	assert_string_equal(p->backends[2].name, "127.0.0.1:6381");
	assert_int_equal(p->backends[2].weight, 1);
	assert_true(p->backends[2].backup);
	/* every issue-4 key at its built-in value, except the check type (connect
	 * in defaults:, redis in the pool) */
	assert_int_equal(p->health.type, CFG_CHECK_REDIS);
	p->health.type = CFG_CHECK_NONE;
	assert_new_key_defaults(p);
	assert_dns_builtin(&p->dns); /* its dns: block shows every built-in value */
	assert_dns_builtin(&p->backends[0].dns);
	cfg_free(cfg);
}

static void test_demo_file(void **state)
{
	struct wp_config *cfg = NULL;
	struct cfg_errors e = {0};
	const struct cfg_pool *p;

	(void)state;
	if (cfg_load_file("config/demo.yaml", &cfg, &e) != 0) {
		dump_errors(&e);
		cfg_errors_free(&e);
		fail_msg("config/demo.yaml does not load");
	}
	assert_string_equal(cfg->path, "config/demo.yaml");
	assert_int_equal(cfg->daemon.log_level, CFG_LOG_INFO);
	assert_int_equal(cfg->n_pools, 1);
	p = &cfg->pools[0];
	assert_string_equal(p->name, "echo");
	assert_int_equal(p->n_listen, 1);
	assert_string_equal(p->listen[0].path, "/tmp/warmpool-demo/echo.sock");
	assert_int_equal(p->n_backends, 1);
	assert_backend(&p->backends[0], "127.0.0.1:7000", "127.0.0.1:7000");
	assert_int_equal(p->min_idle, 4);
	assert_int_equal(p->max_connections, 32);
	cfg_free(cfg);
}

static void test_free_accepts_null(void **state)
{
	struct cfg_errors e = {0};
	struct wp_config *cfg = NULL;

	(void)state;
	cfg_free(NULL);
	cfg_errors_free(NULL);
	cfg_errors_free(&e);
	cfg_errors_free(&e); /* twice: freeing leaves it zeroed */
	/* errs may be NULL: the caller then only learns that it failed */
	assert_int_equal(cfg_load_buffer(NAME, "pools: 1\n", 9, &cfg, NULL), -1);
	assert_null(cfg);
	assert_int_equal(cfg_load_file("/nonexistent/warmpool.yaml", &cfg, NULL), -1);
	/* a NULL name stands in as "<config>" */
	load_bad_len("x", 1, &e);
	assert_int_equal(e.n, 1);
	cfg_errors_free(&e);
	assert_int_equal(cfg_load_buffer(NAME, NULL, 0, &cfg, &e), -1);
	assert_errors(
	    &e, (const char *[]){"t.yaml:1:1: expected a mapping with a pools: key, got an empty document",
	                         NULL});
	cfg_errors_free(&e);
	assert_int_equal(cfg_load_buffer(NULL, "x", 1, &cfg, &e), -1);
	assert_int_equal(e.n, 1);
	assert_string_equal(e.msg[0], "<config>:1:1: expected a mapping with a pools: key, got \"x\"");
	cfg_errors_free(&e);
	assert_null(e.msg);
	assert_int_equal(e.n, 0);
}

/* ------------------------------------------------------------------ */
/* Health checks, balance, backends and connection hygiene (issue 4)   */

static void test_new_keys_in_pool(void **state)
{
	struct wp_config *cfg;
	const struct cfg_pool *p;

	(void)state;
	cfg = load_ok(HEAD "    balance: least_connections\n"
	                   "    max_connecting: 1000\n"
	                   "    fail_fast: true\n"
	                   "    health_check:\n"
	                   "      type: http\n"
	                   "      path: /healthz?full=1\n"
	                   "      interval: 1h\n"
	                   "      timeout: 5m\n"
	                   "      fast_interval: 10ms\n"
	                   "      down_interval: 1.5s\n"
	                   "      rise: 100\n"
	                   "      fall: 1\n"
	                   "    keepalive: {idle: 32767s, interval: 1s, count: 127}\n"
	                   "    tcp_user_timeout: 1h\n"
	                   "    max_lifetime: 168h\n"
	                   "    idle_timeout: 1m\n"
	                   "    max_idle_time: 800ms\n");
	p = &cfg->pools[0];
	assert_int_equal(p->balance, CFG_BALANCE_LEAST_CONN);
	assert_int_equal(p->max_connecting, 1000);
	assert_true(p->fail_fast);
	assert_int_equal(p->health.type, CFG_CHECK_HTTP);
	assert_string_equal(p->health.path, "/healthz?full=1");
	assert_null(p->health.send);
	assert_null(p->health.expect);
	assert_null(p->health.expect_re);
	assert_int_equal(p->health.interval_ms, 3600000);
	assert_int_equal(p->health.timeout_ms, 300000);
	assert_int_equal(p->health.fast_interval_ms, 10);
	assert_int_equal(p->health.down_interval_ms, 1500);
	assert_int_equal(p->health.rise, 100);
	assert_int_equal(p->health.fall, 1);
	assert_true(p->keepalive.enabled);
	assert_int_equal(p->keepalive.idle_s, 32767);
	assert_int_equal(p->keepalive.interval_s, 1);
	assert_int_equal(p->keepalive.count, 127);
	assert_int_equal(p->tcp_user_timeout_ms, 3600000);
	assert_int_equal(p->max_lifetime_ms, 168 * 3600000ULL);
	assert_int_equal(p->idle_timeout_ms, 60000);
	assert_int_equal(p->max_idle_time_ms, 800);
	cfg_free(cfg);
}

static void test_new_keys_from_defaults(void **state)
{
	struct wp_config *cfg;
	const struct cfg_pool *p, *q;

	(void)state;
	cfg = load_ok("defaults:\n"
	              "  balance: first\n"
	              "  max_connecting: 2\n"
	              "  fail_fast: yes\n"
	              "  health_check:\n"
	              "    type: redis\n"
	              "    interval: 3s\n"
	              "    timeout: 300ms\n"
	              "    fast_interval: 100ms\n"
	              "    down_interval: 5s\n"
	              "    rise: 4\n"
	              "    fall: 5\n"
	              "  keepalive: {idle: 60s, count: 5}\n"
	              "  tcp_user_timeout: 10s\n"
	              "  max_lifetime: 30m\n"
	              "  idle_timeout: 0\n"
	              "  max_idle_time: 1m\n" HEAD "    balance: round_robin\n"
	              "    fail_fast: off\n"
	              "    health_check: {interval: 1s, fall: 2}\n"
	              "    keepalive: {interval: 20s}\n"
	              "    max_lifetime: 0s\n"
	              "  q:\n"
	              "    listen: /tmp/wp-test/q.sock\n"
	              "    backends: 127.0.0.1:6380\n");
	p = &cfg->pools[0];
	q = &cfg->pools[1];
	/* p: per key, its own values win and the rest comes from defaults */
	assert_int_equal(p->balance, CFG_BALANCE_ROUND_ROBIN);
	assert_int_equal(p->max_connecting, 2);
	assert_false(p->fail_fast);
	assert_int_equal(p->health.type, CFG_CHECK_REDIS); /* a block without type keeps the inherited one */
	assert_int_equal(p->health.interval_ms, 1000);
	assert_int_equal(p->health.timeout_ms, 300);
	assert_int_equal(p->health.fast_interval_ms, 100);
	assert_int_equal(p->health.down_interval_ms, 5000);
	assert_int_equal(p->health.rise, 4);
	assert_int_equal(p->health.fall, 2);
	assert_true(p->keepalive.enabled);
	assert_int_equal(p->keepalive.idle_s, 60);
	assert_int_equal(p->keepalive.interval_s, 20);
	assert_int_equal(p->keepalive.count, 5);
	assert_int_equal(p->tcp_user_timeout_ms, 10000);
	assert_int_equal(p->max_lifetime_ms, 0);
	assert_int_equal(p->idle_timeout_ms, 0);
	assert_int_equal(p->max_idle_time_ms, 60000);
	/* q: defaults only */
	assert_int_equal(q->balance, CFG_BALANCE_FIRST);
	assert_int_equal(q->max_connecting, 2);
	assert_true(q->fail_fast);
	assert_int_equal(q->health.type, CFG_CHECK_REDIS);
	assert_int_equal(q->health.interval_ms, 3000);
	assert_int_equal(q->health.rise, 4);
	assert_int_equal(q->health.fall, 5);
	assert_int_equal(q->keepalive.idle_s, 60);
	assert_int_equal(q->keepalive.interval_s, 10);
	assert_int_equal(q->keepalive.count, 5);
	assert_int_equal(q->max_lifetime_ms, 1800000);
	assert_int_equal(q->idle_timeout_ms, 0);
	cfg_free(cfg);
}

static void test_health_block_type(void **state)
{
	struct wp_config *cfg;

	(void)state;
	/* A block without type means connect; type: none keeps passive checks only. */
	cfg = load_ok(
	    "pools:\n"
	    "  a: {listen: /tmp/wp-test/a, backends: 127.0.0.1:1, health_check: {fall: 1}}\n"
	    "  b: {listen: /tmp/wp-test/b, backends: 127.0.0.1:1, health_check: {}}\n"
	    "  c:\n"
	    "    listen: /tmp/wp-test/c\n"
	    "    backends: 127.0.0.1:1\n"
	    "    health_check:\n"
	    "  d: {listen: /tmp/wp-test/d, backends: 127.0.0.1:1, health_check: {type: none, rise: 5}}\n");
	assert_int_equal(cfg->pools[0].health.type, CFG_CHECK_CONNECT);
	assert_int_equal(cfg->pools[0].health.fall, 1);
	assert_int_equal(cfg->pools[1].health.type, CFG_CHECK_CONNECT);
	assert_int_equal(cfg->pools[2].health.type, CFG_CHECK_CONNECT);
	assert_int_equal(cfg->pools[3].health.type, CFG_CHECK_NONE);
	assert_int_equal(cfg->pools[3].health.rise, 5);
	cfg_free(cfg);

	/* The type of a defaults: block (even none) is inherited by a pool block without type. */
	cfg =
	    load_ok("defaults:\n  health_check: {type: none, fall: 4}\n" HEAD "    health_check: {rise: 1}\n"
	            "  q: {listen: /tmp/wp-test/q, backends: 127.0.0.1:1, health_check: {type: smtp}}\n");
	assert_int_equal(cfg->pools[0].health.type, CFG_CHECK_NONE);
	assert_int_equal(cfg->pools[0].health.rise, 1);
	assert_int_equal(cfg->pools[0].health.fall, 4);
	assert_int_equal(cfg->pools[1].health.type, CFG_CHECK_SMTP);
	assert_int_equal(cfg->pools[1].health.fall, 4);
	cfg_free(cfg);

	cfg = load_ok("defaults:\n  health_check: {interval: 1s}\n" HEAD);
	assert_int_equal(cfg->pools[0].health.type, CFG_CHECK_CONNECT);
	assert_int_equal(cfg->pools[0].health.interval_ms, 1000);
	cfg_free(cfg);
}

static void test_check_presets(void **state)
{
	static const struct {
		const char *name;
		enum cfg_check_type type;
	} presets[] = {
	    {"none", CFG_CHECK_NONE},   {"connect", CFG_CHECK_CONNECT},
	    {"redis", CFG_CHECK_REDIS}, {"memcached", CFG_CHECK_MEMCACHED},
	    {"http", CFG_CHECK_HTTP},   {"postgres", CFG_CHECK_POSTGRES},
	    {"mysql", CFG_CHECK_MYSQL}, {"smtp", CFG_CHECK_SMTP},
	};
	char yaml[512];

	(void)state;
	for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++) {
		struct wp_config *cfg;
		const struct cfg_health *h;

		snprintf(yaml, sizeof yaml, HEAD "    health_check:\n      type: %s\n", presets[i].name);
		cfg = load_ok(yaml);
		h = &cfg->pools[0].health;
		assert_int_equal(h->type, presets[i].type);
		assert_string_equal(cfg_check_type_name(presets[i].type), presets[i].name);
		assert_null(h->send);
		assert_null(h->expect);
		assert_null(h->expect_re);
		if (presets[i].type == CFG_CHECK_HTTP)
			assert_string_equal(h->path, "/"); /* the default path */
		else
			assert_null(h->path);
		cfg_free(cfg);
	}
	assert_string_equal(cfg_check_type_name(CFG_CHECK_SEND_EXPECT), "send_expect");
	assert_null(cfg_check_type_name((enum cfg_check_type)99));
	assert_string_equal(cfg_balance_name(CFG_BALANCE_ROUND_ROBIN), "round_robin");
	assert_string_equal(cfg_balance_name(CFG_BALANCE_LEAST_CONN), "least_connections");
	assert_string_equal(cfg_balance_name(CFG_BALANCE_FIRST), "first");
	assert_null(cfg_balance_name((enum cfg_balance)3));
}

static void test_check_bytes(void **state)
{
	struct wp_config *cfg;
	const struct cfg_health *h;

	(void)state;
	cfg = load_ok("pools:\n"
	              "  a:\n"
	              "    listen: /tmp/wp-test/a\n"
	              "    backends: 127.0.0.1:1\n"
	              "    health_check:\n"
	              "      type: send_expect\n"
	              "      send: 'PING\\r\\n'\n"
	              "      expect: '+PONG\\r\\n'\n"
	              "  b:\n"
	              "    listen: /tmp/wp-test/b\n"
	              "    backends: 127.0.0.1:1\n"
	              "    health_check:\n"
	              "      type: send_expect\n"
	              "      send_hex: \"50 49 4e 47 0D0a\"\n"
	              "      expect_hex: 2b504f4e47\n"
	              "  c:\n"
	              "    listen: /tmp/wp-test/c\n"
	              "    backends: 127.0.0.1:1\n"
	              "    health_check:\n"
	              "      type: send_expect\n"
	              "      send: \"PING\\r\\n\"\n" /* YAML's own escapes give the same bytes */
	              "      expect_regex: '^\\+PONG|^-LOADING'\n"
	              "  d:\n"
	              "    listen: /tmp/wp-test/d\n"
	              "    backends: 127.0.0.1:1\n"
	              "    health_check:\n"
	              "      type: send_expect\n"
	              "      send: ''\n" /* nothing to send: read the banner */
	              "      expect: '\\x00\\0\\t\\\\\\q\\x4'\n");
	h = &cfg->pools[0].health;
	assert_int_equal(h->type, CFG_CHECK_SEND_EXPECT);
	assert_bytes(h->send, h->send_len, "PING\r\n", 6);
	assert_bytes(h->expect, h->expect_len, "+PONG\r\n", 7);
	assert_null(h->expect_re);
	assert_null(h->path);

	h = &cfg->pools[1].health;
	assert_bytes(h->send, h->send_len, "PING\r\n", 6);
	assert_bytes(h->expect, h->expect_len, "+PONG", 5);

	h = &cfg->pools[2].health;
	assert_bytes(h->send, h->send_len, "PING\r\n", 6);
	assert_null(h->expect);
	assert_non_null(h->expect_re);
	assert_int_equal(regexec(h->expect_re, "+PONG\r\n", 0, NULL, 0), 0);
	assert_int_equal(regexec(h->expect_re, "-LOADING Redis is loading", 0, NULL, 0), 0);
	assert_int_equal(regexec(h->expect_re, "-ERR", 0, NULL, 0), REG_NOMATCH);

	h = &cfg->pools[3].health;
	assert_non_null(h->send); /* present, even when empty */
	assert_int_equal(h->send_len, 0);
	/* unknown escapes and \x without two hex digits keep their backslash */
	assert_bytes(h->expect, h->expect_len, "\0\0\t\\\\q\\x4", 9);
	cfg_free(cfg);
}

static void test_check_bytes_nul_and_limits(void **state)
{
	struct sbuf b = {0};
	struct wp_config *cfg;
	const struct cfg_health *h;

	(void)state;
	/* A NUL written with YAML's own "\0" is kept; the parts around it are decoded. */
	cfg = load_ok(HEAD "    health_check: {type: send_expect, send: \"a\\0b\\\\x41\", expect: x}\n");
	h = &cfg->pools[0].health;
	assert_bytes(h->send, h->send_len, "a\0bA", 4);
	cfg_free(cfg);

	/* CFG_MAX_CHECK_BYTES after decoding: 1024 "\x41" escapes (4096 characters) fit. */
	sb_add(&b, HEAD "    health_check:\n      type: send_expect\n      expect: x\n      send: '");
	for (int i = 0; i < CFG_MAX_CHECK_BYTES; i++)
		sb_add(&b, "\\x41");
	sb_add(&b, "'\n");
	cfg = load_ok(b.s);
	assert_int_equal(cfg->pools[0].health.send_len, CFG_MAX_CHECK_BYTES);
	assert_int_equal(cfg->pools[0].health.send[CFG_MAX_CHECK_BYTES - 1], 'A');
	cfg_free(cfg);
	free(b.s);
}

static void test_check_bytes_too_long(void **state)
{
	struct sbuf b = {0}, want = {0};
	struct cfg_errors e = {0};

	(void)state;
	/* One byte over CFG_MAX_CHECK_BYTES after decoding; the message quotes 60 bytes of the text. */
	sb_add(&b, HEAD "    health_check:\n      type: send_expect\n      expect: x\n      send: '");
	for (int i = 0; i <= CFG_MAX_CHECK_BYTES; i++)
		sb_add(&b, "\\x41");
	sb_add(&b, "'\n");
	load_bad(b.s, &e);
	sb_add(&want, "t.yaml:8:13: pools.p.health_check.send: expected at most 1024 bytes once escapes are "
	              "decoded, got \"");
	for (int i = 0; i < 15; i++)
		sb_add(&want, "\\\\x41");
	sb_add(&want, "\"...");
	assert_errors(&e, (const char *[]){want.s, NULL});
	cfg_errors_free(&e);
	free(b.s);
	free(want.s);

	b = (struct sbuf){0};
	sb_add(&b, HEAD "    health_check:\n      type: send_expect\n      send: x\n      expect_hex: \"");
	for (int i = 0; i <= CFG_MAX_CHECK_BYTES; i++)
		sb_add(&b, "%s41", i ? " " : "");
	sb_add(&b, "\"\n");
	load_bad(b.s, &e);
	assert_errors(
	    &e, (const char *[]){"t.yaml:8:19: pools.p.health_check.expect_hex: expected at most 1024 "
	                         "bytes, got \"41 41 41 41 41 41 41 41 41 41 41 41 41 41 41 41 41 41 41 "
	                         "41 \"...",
	                         NULL});
	cfg_errors_free(&e);
	free(b.s);
}

static void test_check_bytes_inherited(void **state)
{
	struct wp_config *cfg;
	const struct cfg_health *a, *b, *c, *d;

	(void)state;
	/* Every pool owns its copy of what defaults: gave (ASan checks the frees). */
	cfg = load_ok("defaults:\n"
	              "  health_check:\n"
	              "    type: send_expect\n"
	              "    send: 'PING\\r\\n'\n"
	              "    expect_regex: '^\\+PONG'\n"
	              "pools:\n"
	              "  a: {listen: /tmp/wp-test/a, backends: 127.0.0.1:1}\n"
	              "  b: {listen: /tmp/wp-test/b, backends: 127.0.0.1:1, health_check: {expect: '+OK'}}\n"
	              "  c: {listen: /tmp/wp-test/c, backends: 127.0.0.1:1, health_check: {type: redis}}\n"
	              "  d: {listen: /tmp/wp-test/d, backends: 127.0.0.1:1,\n"
	              "      health_check: {type: http, path: /ping}}\n");
	a = &cfg->pools[0].health;
	b = &cfg->pools[1].health;
	c = &cfg->pools[2].health;
	d = &cfg->pools[3].health;
	assert_int_equal(a->type, CFG_CHECK_SEND_EXPECT);
	assert_bytes(a->send, a->send_len, "PING\r\n", 6);
	assert_non_null(a->expect_re);
	assert_null(a->expect);
	/* b replaces the regex with a prefix and keeps the inherited send */
	assert_int_equal(b->type, CFG_CHECK_SEND_EXPECT);
	assert_bytes(b->send, b->send_len, "PING\r\n", 6);
	assert_true(b->send != a->send);
	assert_null(b->expect_re);
	assert_bytes(b->expect, b->expect_len, "+OK", 3);
	/* another type drops what only send_expect uses */
	assert_int_equal(c->type, CFG_CHECK_REDIS);
	assert_null(c->send);
	assert_null(c->expect);
	assert_null(c->expect_re);
	assert_int_equal(d->type, CFG_CHECK_HTTP);
	assert_string_equal(d->path, "/ping");
	assert_null(d->send);
	cfg_free(cfg);

	cfg = load_ok("defaults:\n  health_check: {type: http, path: /status}\n" HEAD
	              "  q: {listen: /tmp/wp-test/q, backends: 127.0.0.1:1, health_check: {type: mysql}}\n");
	assert_string_equal(cfg->pools[0].health.path, "/status");
	assert_true(cfg->pools[0].health.path != NULL);
	assert_null(cfg->pools[1].health.path);
	cfg_free(cfg);
}

static void test_backend_map_forms(void **state)
{
	struct wp_config *cfg;
	const struct cfg_pool *p;

	(void)state;
	cfg = load_ok("pools:\n"
	              "  p:\n"
	              "    listen: /tmp/wp-test/p\n"
	              "    balance: first\n"
	              "    backends:\n"
	              "      - 127.0.0.1:7000\n"
	              "      - address: 127.0.0.1:7001\n"
	              "        weight: 1000\n"
	              "      - {address: \"[::1]:7002\", backup: true, weight: 3}\n"
	              "      - {address: localhost:7003, backup: no}\n"
	              "  q:\n"
	              "    listen: /tmp/wp-test/q\n"
	              "    backends: [{address: 127.0.0.1:7004, backup: false}, {address: 127.0.0.1:7005, "
	              "backup: on}]\n");
	p = &cfg->pools[0];
	assert_int_equal(p->balance, CFG_BALANCE_FIRST);
	assert_int_equal(p->n_backends, 4);
	assert_backend(&p->backends[0], "127.0.0.1:7000", "127.0.0.1:7000");
	assert_int_equal(p->backends[0].weight, 1);
	assert_false(p->backends[0].backup);
	assert_backend(&p->backends[1], "127.0.0.1:7001", "127.0.0.1:7001");
	assert_int_equal(p->backends[1].weight, 1000);
	assert_false(p->backends[1].backup);
	assert_int_equal(p->backends[1].pos.line, 7);
	assert_int_equal(p->backends[1].pos.col, 18);
	assert_backend(&p->backends[2], "[::1]:7002", "[::1]:7002");
	assert_int_equal(p->backends[2].weight, 3);
	assert_true(p->backends[2].backup);
	assert_string_equal(p->backends[3].name, "localhost:7003");
	assert_false(p->backends[3].is_name); /* the loopback, RFC 6761 */
	assert_backend(&p->backends[3], "localhost:7003", "127.0.0.1:7003");
	assert_int_equal(p->backends[3].port, 7003);
	assert_false(p->backends[3].backup);
	p = &cfg->pools[1];
	assert_int_equal(p->n_backends, 2);
	assert_false(p->backends[0].backup);
	assert_true(p->backends[1].backup);
	assert_int_equal(p->backends[1].weight, 1);
	cfg_free(cfg);
}

static void test_keepalive_forms(void **state)
{
	static const struct {
		const char *value;
		bool enabled;
	} bools[] = {{"false", false}, {"off", false}, {"no", false},
	             {"true", true},   {"on", true},   {"yes", true}};
	struct wp_config *cfg;
	char yaml[512];

	(void)state;
	for (size_t i = 0; i < sizeof bools / sizeof bools[0]; i++) {
		snprintf(yaml, sizeof yaml, HEAD "    keepalive: %s\n    fail_fast: %s\n", bools[i].value,
		         bools[i].value);
		cfg = load_ok(yaml);
		assert_int_equal(cfg->pools[0].keepalive.enabled, bools[i].enabled);
		assert_int_equal(cfg->pools[0].fail_fast, bools[i].enabled);
		assert_int_equal(cfg->pools[0].keepalive.idle_s, 30);
		cfg_free(cfg);
	}
	/* A mapping (even an empty one) turns keepalive on and keeps the other values. */
	cfg = load_ok("defaults:\n  keepalive: false\n" HEAD "    keepalive: {count: 9}\n"
	              "  q: {listen: /tmp/wp-test/q, backends: 127.0.0.1:1}\n"
	              "  r: {listen: /tmp/wp-test/r, backends: 127.0.0.1:1, keepalive: {}}\n"
	              "  s: {listen: /tmp/wp-test/s, backends: 127.0.0.1:1, keepalive: {idle: 2m}}\n");
	assert_true(cfg->pools[0].keepalive.enabled);
	assert_int_equal(cfg->pools[0].keepalive.count, 9);
	assert_int_equal(cfg->pools[0].keepalive.idle_s, 30);
	assert_false(cfg->pools[1].keepalive.enabled);
	assert_true(cfg->pools[2].keepalive.enabled);
	assert_int_equal(cfg->pools[3].keepalive.idle_s, 120);
	assert_int_equal(cfg->pools[3].keepalive.interval_s, 10);
	cfg_free(cfg);

	/* true keeps the values a defaults: mapping gave */
	cfg = load_ok("defaults:\n  keepalive: {idle: 5s}\n" HEAD "    keepalive: true\n");
	assert_true(cfg->pools[0].keepalive.enabled);
	assert_int_equal(cfg->pools[0].keepalive.idle_s, 5);
	cfg_free(cfg);
}

static void test_zero_durations(void **state)
{
	struct wp_config *cfg;
	const struct cfg_pool *p;

	(void)state;
	/* A bare 0 (or 0s) turns these off. */
	cfg = load_ok(HEAD "    tcp_user_timeout: 0\n"
	                   "    max_lifetime: 0\n"
	                   "    idle_timeout: 0\n"
	                   "    max_idle_time: 0\n"
	                   "  q:\n"
	                   "    listen: /tmp/wp-test/q\n"
	                   "    backends: 127.0.0.1:1\n"
	                   "    tcp_user_timeout: 0ms\n"
	                   "    max_lifetime: 100ms\n"
	                   "    idle_timeout: 1ms\n"
	                   "    max_idle_time: 10ms\n"
	                   "  r:\n"
	                   "    listen: /tmp/wp-test/r\n"
	                   "    backends: 127.0.0.1:1\n"
	                   "    max_lifetime: 0s\n"
	                   "    idle_timeout: 168h\n"
	                   "    max_idle_time: 168h\n");
	p = &cfg->pools[0];
	assert_int_equal(p->tcp_user_timeout_ms, 0);
	assert_int_equal(p->max_lifetime_ms, 0);
	assert_int_equal(p->idle_timeout_ms, 0);
	assert_int_equal(p->max_idle_time_ms, 0);
	p = &cfg->pools[1];
	assert_int_equal(p->tcp_user_timeout_ms, 0);
	assert_int_equal(p->max_lifetime_ms, 100);
	assert_int_equal(p->idle_timeout_ms, 1);
	assert_int_equal(p->max_idle_time_ms, 10);
	p = &cfg->pools[2];
	assert_int_equal(p->max_lifetime_ms, 0);
	assert_int_equal(p->idle_timeout_ms, 168 * 3600000ULL);
	assert_int_equal(p->max_idle_time_ms, 168 * 3600000ULL);
	cfg_free(cfg);
}

/* ------------------------------------------------------------------ */
/* allow: (access control)                                             */

static void assert_ids(const void *got, size_t n, const uint32_t *want, size_t want_n)
{
	assert_int_equal(n, want_n);
	if (want_n == 0) {
		assert_null(got);
		return;
	}
	assert_non_null(got);
	assert_memory_equal(got, want, want_n * sizeof *want);
}

static void assert_allow(const struct cfg_allow *a, const uint32_t *uids, size_t n_uids, const uint32_t *gids,
                         size_t n_gids, unsigned line, unsigned col)
{
	assert_true(a->enabled);
	assert_ids(a->uids, a->n_uids, uids, n_uids);
	assert_ids(a->gids, a->n_gids, gids, n_gids);
	assert_int_equal(a->pos.line, line);
	assert_int_equal(a->pos.col, col);
}

static void assert_no_allow(const struct cfg_allow *a)
{
	assert_false(a->enabled);
	assert_null(a->uids);
	assert_null(a->gids);
	assert_int_equal(a->n_uids, 0);
	assert_int_equal(a->n_gids, 0);
}

static void test_allow_forms(void **state)
{
	static const uint32_t p_uids[] = {0, 7, 1001}, p_gids[] = {0, 50}, q_uids[] = {4294967294u};
	struct wp_config *cfg;
	const struct cfg_pool *p;

	(void)state;
	/* Names and ids, a single item or a list; ids sorted, repeats dropped;
	 * users: root and uids: 0 are the same uid. */
	cfg = load_ok(HEAD "    allow: {users: root, groups: [root], uids: [1001, 7, 1001, 0], gids: 50}\n"
	                   "  q:\n"
	                   "    listen: /tmp/wp-test/q.sock\n"
	                   "    backends: 127.0.0.1:1\n"
	                   "    allow:\n"
	                   "      uids: 4294967294\n"
	                   "  r:\n"
	                   "    listen: /tmp/wp-test/r.sock\n"
	                   "    backends: 127.0.0.1:1\n");
	p = &cfg->pools[0];
	assert_allow(&p->allow, p_uids, 3, p_gids, 2, 5, 12);
	/* the listen item holds its own copy of the pool's rule */
	assert_allow(&p->listen[0].allow, p_uids, 3, p_gids, 2, 5, 12);
	assert_ptr_not_equal(p->listen[0].allow.uids, p->allow.uids);
	p = &cfg->pools[1];
	assert_allow(&p->allow, q_uids, 1, NULL, 0, 10, 7);
	assert_allow(&p->listen[0].allow, q_uids, 1, NULL, 0, 10, 7);
	/* no allow: anyone who can open the socket file */
	p = &cfg->pools[2];
	assert_no_allow(&p->allow);
	assert_no_allow(&p->listen[0].allow);
	cfg_free(cfg);
}

/* Names resolve through NSS like getpwnam(3) and getgrnam(3) do. */
static void test_allow_names_resolved(void **state)
{
	const struct passwd *pw = getpwnam("nobody");
	const struct group *gr = getgrnam("daemon");
	struct wp_config *cfg;
	uint32_t uid, gid;

	(void)state;
	if (!pw || !gr)
		skip();
	uid = (uint32_t)pw->pw_uid;
	gid = (uint32_t)gr->gr_gid;
	cfg = load_ok(HEAD "    allow:\n      users: [nobody]\n      groups: daemon\n");
	assert_allow(&cfg->pools[0].allow, &uid, 1, &gid, 1, 6, 7);
	cfg_free(cfg);
}

static void test_allow_merge(void **state)
{
	static const uint32_t d_uids[] = {1, 2}, d_gids[] = {3}, own_gids[] = {9}, root[] = {0};
	struct wp_config *cfg;
	const struct cfg_pool *p;

	(void)state;
	cfg = load_ok("defaults:\n"
	              "  allow: {uids: [2, 1], gids: 3}\n"
	              "pools:\n"
	              "  p:\n"
	              "    listen:\n"
	              "      - /tmp/wp-test/p1.sock\n"
	              "      - {path: /tmp/wp-test/p2.sock, allow: {gids: [9]}}\n"
	              "      - path: /tmp/wp-test/p3.sock\n"
	              "        mode: \"0666\"\n"
	              "        allow:\n"
	              "          users: root\n"
	              "    backends: 127.0.0.1:1\n"
	              "  q:\n"
	              "    listen: /tmp/wp-test/q.sock\n"
	              "    backends: 127.0.0.1:1\n"
	              "    allow: {users: root}\n");
	/* p: the defaults' block; each listen item's own block replaces it */
	p = &cfg->pools[0];
	assert_allow(&p->allow, d_uids, 2, d_gids, 1, 2, 10);
	assert_allow(&p->listen[0].allow, d_uids, 2, d_gids, 1, 2, 10);
	assert_allow(&p->listen[1].allow, NULL, 0, own_gids, 1, 7, 45);
	assert_allow(&p->listen[2].allow, root, 1, NULL, 0, 11, 11);
	assert_int_equal(p->listen[2].mode, 0666);
	/* q: its own block replaces the defaults' as a whole (no gid 3) */
	p = &cfg->pools[1];
	assert_allow(&p->allow, root, 1, NULL, 0, 16, 12);
	assert_allow(&p->listen[0].allow, root, 1, NULL, 0, 16, 12);
	cfg_free(cfg);

	/* A listen item's block applies even when the pool has none. */
	cfg = load_ok("pools:\n  p:\n    listen: [{path: /tmp/wp-test/p.sock, allow: {uids: 0}}, /tmp/wp-test/o.sock]\n"
	              "    backends: 127.0.0.1:1\n");
	p = &cfg->pools[0];
	assert_no_allow(&p->allow);
	assert_allow(&p->listen[0].allow, root, 1, NULL, 0, 3, 49);
	assert_no_allow(&p->listen[1].allow);
	cfg_free(cfg);

	/* The handoff socket takes the pool's rule too. */
	cfg = load_ok(HEAD "    handoff: {listen: /tmp/wp-test/p.handoff}\n    allow: {uids: 0}\n");
	p = &cfg->pools[0];
	assert_allow(&p->handoff.allow, root, 1, NULL, 0, 6, 12);
	assert_ptr_not_equal(p->handoff.allow.uids, p->allow.uids);
	cfg_free(cfg);
}

/* At most CFG_MAX_ALLOW entries in each list. */
static void test_allow_too_many(void **state)
{
	struct sbuf b = {0};
	struct cfg_errors e = {0};
	struct wp_config *cfg;
	static const char *const want[] = {
	    "t.yaml:5:19: pools.p.allow.uids: expected at most 256 uids, got 257",
	    NULL,
	};

	(void)state;
	sb_add(&b, HEAD "    allow: {uids: [");
	for (int i = 0; i < CFG_MAX_ALLOW; i++)
		sb_add(&b, "%s%d", i ? ", " : "", i);
	sb_add(&b, "]}\n");
	cfg = load_ok(b.s);
	assert_int_equal(cfg->pools[0].allow.n_uids, CFG_MAX_ALLOW);
	cfg_free(cfg);
	b.n = 0;
	sb_add(&b, HEAD "    allow: {uids: [");
	for (int i = 0; i <= CFG_MAX_ALLOW; i++)
		sb_add(&b, "%s%d", i ? ", " : "", i);
	sb_add(&b, "]}\n");
	load_bad(b.s, &e);
	assert_errors(&e, want);
	cfg_errors_free(&e);
	free(b.s);
}

/* ------------------------------------------------------------------ */
/* Error table                                                         */

struct err_case {
	const char *name;
	const char *yaml;
	const char *want[16]; /* NULL-terminated */
};

static const struct err_case err_cases[] = {
    /* --- phase 1: syntax, aliases, depth, documents --- */
    {"syntax_unclosed_flow",
     "pools: [\n",
     {"t.yaml:2:1: syntax error: did not find expected node content (while parsing a flow node at line 2, "
      "column 1)"}},
    {"syntax_bad_indent",
     "pools:\n  a: 1\n b: 2\n",
     {"t.yaml:3:2: syntax error: did not find expected key (while parsing a block mapping at line 1, column "
      "1)"}},
    {"syntax_unclosed_quote",
     "pools: \"abc\n",
     {"t.yaml:2:1: syntax error: found unexpected end of stream (while scanning a quoted scalar at line 1, "
      "column 8)"}},
    {"syntax_tab_indent",
     "pools:\n\tp: 1\n",
     {"t.yaml:2:1: syntax error: tabs are not allowed for indentation"}},
    {"syntax_bad_utf8",
     "pools: \"\xff\"\n",
     {"t.yaml:1:9: syntax error: invalid leading UTF-8 octet (byte 0xff)"}},
    {"syntax_control_char",
     "pools: \x01\n",
     {"t.yaml:1:8: syntax error: control characters are not allowed (byte 0x01)"}},
    {"alias_and_anchor",
     "defaults: &d\n  min_idle: 1\npools:\n  p: *d\n",
     {"t.yaml:1:11: anchors and aliases are not supported, got \"&d\"",
      "t.yaml:4:6: anchors and aliases are not supported, got \"*d\""}},
    {"anchor_alone",
     HEAD "    min_idle: &n 3\n",
     {"t.yaml:5:15: anchors and aliases are not supported, got \"&n\""}},
    {"nesting_too_deep",
     "pools: [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]\n",
     {"t.yaml:1:39: nesting deeper than 32 levels is not supported"}},
    {"nesting_at_limit", /* root + 31 lists = 32 levels: allowed, fails only on type */
     "pools: [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]\n",
     {"t.yaml:1:8: pools: expected a mapping of pool names to pool settings, got a list"}},
    {"multiple_documents", HEAD "---\npools: {}\n", {"t.yaml:5:1: multiple documents are not supported"}},
    {"empty_document", "", {"t.yaml:1:1: expected a mapping with a pools: key, got an empty document"}},
    {"only_comments",
     "# nothing here\n\n",
     {"t.yaml:1:1: expected a mapping with a pools: key, got an empty document"}},
    {"only_marker", "---\n", {"t.yaml:2:1: expected a mapping with a pools: key, got an empty document"}},
    {"root_list", "- pools\n", {"t.yaml:1:1: expected a mapping with a pools: key, got a list"}},
    {"root_scalar", "pools\n", {"t.yaml:1:1: expected a mapping with a pools: key, got \"pools\""}},

    /* --- unknown keys --- */
    {"unknown_top_key",
     "pool: 1\n" HEAD,
     {"t.yaml:1:1: pool: unknown key, did you mean pools?"}},
    {"unknown_pool_key",
     HEAD "    min_idel: 3\n",
     {"t.yaml:5:5: pools.p.min_idel: unknown key, did you mean min_idle?"}},
    {"backends_as_one_string",
     "pools:\n  p:\n    listen: /tmp/wp-test/p.sock\n    backends: \"127.0.0.1:1, 127.0.0.1:2\"\n",
     {"t.yaml:4:15: pools.p.backends: expected a list of addresses, like [\"127.0.0.1:1\", \"127.0.0.1:2\"], "
      "got \"127.0.0.1:1, 127.0.0.1:2\""}},
    {"relative_socket_paths",
     "daemon:\n  admin_socket: admin.sock\npools:\n  p:\n    listen: [x.sock]\n    backends: [\"127.0.0.1:1\"]\n",
     {"t.yaml:2:17: daemon.admin_socket: expected an absolute socket path (a relative one resolves against the "
      "directory warmpoold starts in, / under systemd), got \"admin.sock\"",
      "t.yaml:5:14: pools.p.listen[0]: expected an absolute socket path (a relative one resolves against the "
      "directory warmpoold starts in, / under systemd), got \"x.sock\""}},
    {"unknown_daemon_key",
     "daemon:\n  level: info\n" HEAD,
     {"t.yaml:2:3: daemon.level: unknown key, expected one of log_level, shutdown_timeout, fd_store, admin_socket, admin_socket_mode, admin_socket_readonly, metrics_listen"}},
    {"regex_expansion_bounded",
     HEAD "    health_check: {type: send_expect, send: x, expect_regex: '(a{10}){101}'}\n",
     {"t.yaml:5:62: pools.p.health_check.expect_regex: expected a regular expression whose repeats, nested, "
      "expand to at most 1000 (e.g. a{1,1000}), got \"(a{10}){101}\""}},
    {"reuse_send_without_expect",
     HEAD "    reuse: {reset_send: x}\n",
     {"t.yaml:5:12: pools.p.reuse.reset_expect: missing key, expected reset_send and reset_expect together"}},
    {"reuse_nonce_in_send_only",
     HEAD "    reuse: {reset_send: 'ECHO {nonce}', reset_expect: 'x'}\n",
     {"t.yaml:5:55: pools.p.reuse.reset_expect: expected {nonce} in reset_send and reset_expect together (the "
      "answer must carry back the nonce the reset sent)"}},
    {"reuse_nonce_in_expect_only",
     HEAD "    reuse: {reset_send: x, reset_expect: '{nonce}'}\n",
     {"t.yaml:5:25: pools.p.reuse.reset_send: expected {nonce} in reset_send and reset_expect together (the "
      "answer must carry back the nonce the reset sent)"}},
    {"reuse_bad",
     HEAD "    reuse: maybe\n",
     {"t.yaml:5:12: pools.p.reuse: expected true, false or a mapping of reset_send, reset_expect, "
      "reset_timeout, got \"maybe\""}},
    {"handoff_without_listen",
     HEAD "    handoff: {mode: \"0600\"}\n",
     {"t.yaml:5:14: pools.p.handoff.listen: missing key, expected a socket path"}},
    {"handoff_same_as_listen",
     HEAD "    handoff: {listen: /tmp/wp-test/p.sock}\n",
     {"t.yaml:5:23: pools.p.handoff.listen: expected a socket path no other listener uses (pool p has it at "
      "line 3), got \"/tmp/wp-test/p.sock\""}},
    {"admin_socket_same_as_pool",
     "daemon:\n  admin_socket: /tmp/wp-test/p.sock\n" HEAD,
     {"t.yaml:5:13: pools.p.listen: expected a socket path no other listener uses (daemon has it at line 2), "
      "got \"/tmp/wp-test/p.sock\""}},
    {"admin_socket_mode_bad",
     "daemon:\n  admin_socket_mode: rw\n" HEAD,
     {"t.yaml:2:22: daemon.admin_socket_mode: expected an octal mode like \"0600\", at most 0777, got \"rw\""}},
    {"admin_socket_empty",
     "daemon:\n  admin_socket: \"\"\n" HEAD,
     {"t.yaml:2:17: daemon.admin_socket: expected a socket path of 1 to 107 bytes, or false, got \"\""}},
    {"metrics_listen_bad",
     "daemon:\n  metrics_listen: localhost\n" HEAD,
     {"t.yaml:2:19: daemon.metrics_listen: expected an address host:port, [v6]:port or a.b.c.d:port (missing "
      "port), got \"localhost\""}},
    {"unknown_defaults_key",
     "defaults:\n  min: 1\n" HEAD,
     {"t.yaml:2:3: defaults.min: unknown key, expected one of reuse, min_idle, max_connections, max_clients, "
      "connect_timeout, queue_timeout, backoff, balance, max_connecting, fail_fast, health_check, keepalive, "
      "tls, dns, tcp_user_timeout, max_lifetime, idle_timeout, max_idle_time, client_idle_timeout, server_idle_timeout, "
      "allow"}},
    {"unknown_backoff_key",
     HEAD "    backoff: {initial: 1s, factor: 2}\n",
     {"t.yaml:5:28: pools.p.backoff.factor: unknown key, expected one of initial, max, multiplier, jitter"}},
    {"unknown_listen_key",
     "pools:\n  p:\n    listen:\n      - {path: /tmp/a, perm: 1}\n    backends: 127.0.0.1:1\n",
     {"t.yaml:4:24: pools.p.listen[0].perm: unknown key, expected one of path, mode, allow"}},
    {"defaults_listen_backends",
     "defaults:\n  listen: /x\n  backends: 127.0.0.1:1\n" HEAD,
     {"t.yaml:2:3: defaults.listen: not allowed in defaults, set it in each pool",
      "t.yaml:3:3: defaults.backends: not allowed in defaults, set it in each pool"}},

    /* --- wrong types --- */
    {"pools_is_list",
     "pools:\n  - p\n",
     {"t.yaml:2:3: pools: expected a mapping of pool names to pool settings, got a list"}},
    {"pool_is_scalar",
     "pools:\n  p: 5\n",
     {"t.yaml:2:6: pools.p: expected a mapping with listen: and backends:, got \"5\""}},
    {"pool_is_empty",
     "pools:\n  p:\n",
     {"t.yaml:2:5: pools.p: expected a mapping with listen: and backends:, got an empty value"}},
    {"daemon_is_list",
     "daemon: [1]\n" HEAD,
     {"t.yaml:1:9: daemon: expected a mapping of log_level, shutdown_timeout, fd_store, admin_socket, admin_socket_mode, admin_socket_readonly, metrics_listen, got a list"}},
    {"defaults_is_scalar",
     "defaults: 5\n" HEAD,
     {"t.yaml:1:11: defaults: expected a mapping of pool settings, got \"5\""}},
    {"listen_is_map",
     "pools:\n  p:\n    listen: {path: /a}\n    backends: 127.0.0.1:1\n",
     {"t.yaml:3:13: pools.p.listen: expected a socket path or a list of them, got a mapping"}},
    {"listen_item_is_list",
     "pools:\n  p:\n    listen: [[/a]]\n    backends: 127.0.0.1:1\n",
     {"t.yaml:3:14: pools.p.listen[0]: expected a socket path or a {path, mode, allow} mapping, got a list"}},
    {"backends_is_map",
     "pools:\n  p:\n    listen: /a\n    backends: {a: 1}\n",
     {"t.yaml:4:15: pools.p.backends: expected an address host:port or a list of them, got a mapping"}},
    {"backend_item_is_list",
     "pools:\n  p:\n    listen: /a\n    backends: [[a:1]]\n",
     {"t.yaml:4:16: pools.p.backends[0]: expected an address host:port or a {address, weight, backup, dns} "
      "mapping, got a list"}},
    {"number_is_list",
     HEAD "    min_idle: [1]\n",
     {"t.yaml:5:15: pools.p.min_idle: expected an integer >= 0, got a list"}},
    {"number_is_empty",
     HEAD "    max_clients:\n",
     {"t.yaml:5:17: pools.p.max_clients: expected an integer >= 1, got an empty value"}},
    {"duration_is_map",
     HEAD "    queue_timeout: {s: 1}\n",
     {"t.yaml:5:20: pools.p.queue_timeout: expected a duration with a unit (ms, s, m, h), got a mapping"}},
    {"backoff_is_scalar",
     HEAD "    backoff: fast\n",
     {"t.yaml:5:14: pools.p.backoff: expected a mapping of initial, max, multiplier, jitter, got \"fast\""}},
    {"key_is_list", HEAD "    [a]: 1\n", {"t.yaml:5:5: pools.p: expected a key name, got a list"}},
    {"log_level_unknown",
     "daemon:\n  log_level: verbose\n" HEAD,
     {"t.yaml:2:14: daemon.log_level: expected one of debug, info, notice, warning, error, got \"verbose\""}},
    {"log_level_case",
     "daemon:\n  log_level: INFO\n" HEAD,
     {"t.yaml:2:14: daemon.log_level: expected one of debug, info, notice, warning, error, got \"INFO\""}},
    {"log_level_list",
     "daemon:\n  log_level: [info]\n" HEAD,
     {"t.yaml:2:14: daemon.log_level: expected one of debug, info, notice, warning, error, got a list"}},

    /* --- integers --- */
    {"integer_word",
     HEAD "    min_idle: many\n",
     {"t.yaml:5:15: pools.p.min_idle: expected an integer >= 0, got \"many\""}},
    {"integers_malformed",
     HEAD "    min_idle: -1\n"
          "    max_connections: +5\n"
          "    max_clients: 10k\n"
          "  q:\n"
          "    listen: /tmp/wp-test/q.sock\n"
          "    backends: 127.0.0.1:6379\n"
          "    min_idle: 1.0\n"
          "    max_connections: 0x10\n"
          "    max_clients: \" 5\"\n",
     {"t.yaml:5:15: pools.p.min_idle: expected an integer >= 0, got \"-1\"",
      "t.yaml:6:22: pools.p.max_connections: expected an integer >= 1, got \"+5\"",
      "t.yaml:7:18: pools.p.max_clients: expected an integer >= 1, got \"10k\"",
      "t.yaml:11:15: pools.q.min_idle: expected an integer >= 0, got \"1.0\"",
      "t.yaml:12:22: pools.q.max_connections: expected an integer >= 1, got \"0x10\"",
      "t.yaml:13:18: pools.q.max_clients: expected an integer >= 1, got \" 5\""}},
    {"integers_out_of_range",
     HEAD "    min_idle: 100001\n"
          "    max_connections: 0\n"
          "    max_clients: 1000001\n"
          "  q:\n"
          "    listen: /tmp/wp-test/q.sock\n"
          "    backends: 127.0.0.1:6379\n"
          "    max_connections: 100001\n"
          "    max_clients: 0\n"
          "    min_idle: 99999999999999999999999999\n",
     {"t.yaml:5:15: pools.p.min_idle: expected an integer <= 100000, got \"100001\"",
      "t.yaml:6:22: pools.p.max_connections: expected an integer >= 1, got \"0\"",
      "t.yaml:7:18: pools.p.max_clients: expected an integer <= 1000000, got \"1000001\"",
      "t.yaml:11:22: pools.q.max_connections: expected an integer <= 100000, got \"100001\"",
      "t.yaml:12:18: pools.q.max_clients: expected an integer >= 1, got \"0\"",
      "t.yaml:13:15: pools.q.min_idle: expected an integer <= 100000, got \"99999999999999999999999999\""}},

    /* --- floats --- */
    {"multiplier_junk",
     HEAD "    backoff:\n      multiplier: 1.5x\n",
     {"t.yaml:6:19: pools.p.backoff.multiplier: expected a number, got \"1.5x\""}},
    {"multiplier_nan",
     HEAD "    backoff:\n      multiplier: nan\n",
     {"t.yaml:6:19: pools.p.backoff.multiplier: expected a number, got \"nan\""}},
    {"multiplier_inf",
     HEAD "    backoff:\n      multiplier: inf\n",
     {"t.yaml:6:19: pools.p.backoff.multiplier: expected a number, got \"inf\""}},
    {"multiplier_huge",
     HEAD "    backoff:\n      multiplier: 1e999\n",
     {"t.yaml:6:19: pools.p.backoff.multiplier: expected a number, got \"1e999\""}},
    {"multiplier_hex",
     HEAD "    backoff:\n      multiplier: 0x2\n",
     {"t.yaml:6:19: pools.p.backoff.multiplier: expected a number, got \"0x2\""}},
    {"multiplier_empty",
     HEAD "    backoff:\n      multiplier: \"\"\n",
     {"t.yaml:6:19: pools.p.backoff.multiplier: expected a number, got \"\""}},
    {"multiplier_low",
     HEAD "    backoff:\n      multiplier: 0.5\n",
     {"t.yaml:6:19: pools.p.backoff.multiplier: multiplier must be between 1.0 and 100.0, got \"0.5\""}},
    {"multiplier_high",
     HEAD "    backoff:\n      multiplier: 101\n",
     {"t.yaml:6:19: pools.p.backoff.multiplier: multiplier must be between 1.0 and 100.0, got \"101\""}},
    {"jitter_one",
     HEAD "    backoff:\n      jitter: 1\n",
     {"t.yaml:6:15: pools.p.backoff.jitter: jitter must be a fraction in [0, 1), got \"1\""}},
    {"jitter_negative",
     HEAD "    backoff:\n      jitter: -0.1\n",
     {"t.yaml:6:15: pools.p.backoff.jitter: jitter must be a fraction in [0, 1), got \"-0.1\""}},
    {"jitter_word",
     HEAD "    backoff:\n      jitter: some\n",
     {"t.yaml:6:15: pools.p.backoff.jitter: expected a number, got \"some\""}},

    /* --- durations --- */
    {"duration_bare_number",
     HEAD "    connect_timeout: 5\n",
     {"t.yaml:5:22: pools.p.connect_timeout: expected a duration with a unit (ms, s, m, h), got \"5\""}},
    {"durations_malformed",
     "daemon:\n"
     "  shutdown_timeout: 5sec\n"
     "defaults:\n"
     "  connect_timeout: -1s\n" HEAD "    connect_timeout: 5 s\n"
     "    queue_timeout: s\n"
     "    backoff: {initial: .5s, max: 1.s}\n",
     {"t.yaml:2:21: daemon.shutdown_timeout: expected a duration with a unit (ms, s, m, h), got \"5sec\"",
      "t.yaml:4:20: defaults.connect_timeout: expected a duration with a unit (ms, s, m, h), got \"-1s\"",
      "t.yaml:9:22: pools.p.connect_timeout: expected a duration with a unit (ms, s, m, h), got \"5 s\"",
      "t.yaml:10:20: pools.p.queue_timeout: expected a duration with a unit (ms, s, m, h), got \"s\"",
      "t.yaml:11:24: pools.p.backoff.initial: expected a duration with a unit (ms, s, m, h), got \".5s\"",
      "t.yaml:11:34: pools.p.backoff.max: expected a duration with a unit (ms, s, m, h), got \"1.s\""}},
    {"duration_sub_millisecond",
     HEAD "    connect_timeout: 1.5ms\n    queue_timeout: 0.0001s\n",
     {"t.yaml:5:22: pools.p.connect_timeout: expected a duration in whole milliseconds, got \"1.5ms\"",
      "t.yaml:6:20: pools.p.queue_timeout: expected a duration in whole milliseconds, got \"0.0001s\""}},
    {"durations_out_of_range",
     "daemon:\n"
     "  shutdown_timeout: 61m\n" HEAD "    connect_timeout: 5.001m\n"
     "    queue_timeout: 0ms\n"
     "    backoff: {initial: 0s, max: 99999999999999999999h}\n",
     {"t.yaml:2:21: daemon.shutdown_timeout: expected a duration between 0s and 1h, got \"61m\"",
      "t.yaml:7:22: pools.p.connect_timeout: expected a duration between 1ms and 5m, got \"5.001m\"",
      "t.yaml:8:20: pools.p.queue_timeout: expected a duration between 1ms and 1h, got \"0ms\"",
      "t.yaml:9:24: pools.p.backoff.initial: expected a duration between 1ms and 1h, got \"0s\"",
      "t.yaml:9:33: pools.p.backoff.max: expected a duration between 1ms and 1h, got "
      "\"99999999999999999999h\""}},

    /* --- missing / empty --- */
    {"missing_listen",
     "pools:\n  p:\n    backends: 127.0.0.1:1\n",
     {"t.yaml:2:3: pools.p.listen: missing key, expected a socket path or a list of them"}},
    {"missing_backends",
     "pools:\n  p:\n    listen: /a\n",
     {"t.yaml:2:3: pools.p.backends: missing key, expected an address host:port or a list of them"}},
    {"missing_both",
     "pools:\n  p: {}\n",
     {"t.yaml:2:3: pools.p.listen: missing key, expected a socket path or a list of them",
      "t.yaml:2:3: pools.p.backends: missing key, expected an address host:port or a list of them"}},
    {"missing_pools",
     "daemon:\n  log_level: info\n",
     {"t.yaml:1:1: pools: missing key, expected a mapping of pool names to pool settings"}},
    {"pools_empty_map",
     "pools: {}\n",
     {"t.yaml:1:8: pools: expected at least one pool, got an empty mapping"}},
    {"pools_empty_value", "pools:\n", {"t.yaml:1:7: pools: expected at least one pool, got an empty value"}},
    {"pools_null", "pools: ~\n", {"t.yaml:1:8: pools: expected at least one pool, got \"~\""}},
    {"listen_and_backends_empty",
     "pools:\n  p:\n    listen: []\n    backends: []\n",
     {"t.yaml:3:13: pools.p.listen: expected at least one socket path, got an empty list",
      "t.yaml:4:15: pools.p.backends: expected at least one backend address, got an empty list"}},

    /* --- duplicates --- */
    {"duplicate_pool_names",
     "pools:\n"
     "  p:\n"
     "    listen: /tmp/a\n"
     "    backends: 127.0.0.1:1\n"
     "  q: {listen: /tmp/q, backends: 127.0.0.1:1}\n"
     "  p:\n"
     "    listen: /tmp/b\n"
     "    backends: 127.0.0.1:1\n",
     {"t.yaml:6:3: pools.p: duplicate pool name, first defined at line 2"}},
    {"duplicate_socket_paths",
     "pools:\n"
     "  p:\n"
     "    listen: /tmp/a\n"
     "    backends: 127.0.0.1:1\n"
     "  q:\n"
     "    listen: [/tmp/b, /tmp/a, /tmp/b]\n"
     "    backends: 127.0.0.1:1\n"
     "    min_idle: x\n",
     {"t.yaml:6:22: pools.q.listen[1]: expected a socket path no other listener uses (pool p has it at line "
      "3), "
      "got \"/tmp/a\"",
      "t.yaml:6:30: pools.q.listen[2]: expected a socket path no other listener uses (pool q has it at line "
      "6), "
      "got \"/tmp/b\"",
      "t.yaml:8:15: pools.q.min_idle: expected an integer >= 0, got \"x\""}},
    {"duplicate_keys",
     "daemon:\n"
     "  log_level: info\n"
     "  log_level: debug\n" HEAD "    min_idle: 1\n"
     "    min_idle: 1\n"
     "    backoff: {max: 1s, max: 2s}\n"
     "    listen: /tmp/other\n"
     "  q:\n"
     "    listen: {path: /tmp/q, path: /tmp/r}\n"
     "    backends: 127.0.0.1:1\n"
     "pools: {}\n",
     {"t.yaml:3:3: daemon.log_level: duplicate key, first given at line 2",
      "t.yaml:9:5: pools.p.min_idle: duplicate key, first given at line 8",
      "t.yaml:10:24: pools.p.backoff.max: duplicate key, first given at line 10",
      "t.yaml:11:5: pools.p.listen: duplicate key, first given at line 6",
      "t.yaml:13:13: pools.q.listen: expected a socket path or a list of them, got a mapping",
      "t.yaml:15:1: pools: duplicate key, first given at line 4"}},
    {"duplicate_keys_in_listen_map",
     "pools:\n  p:\n    listen: [{path: /tmp/q, path: /tmp/r}]\n    backends: 127.0.0.1:1\n",
     {"t.yaml:3:29: pools.p.listen[0].path: duplicate key, first given at line 3"}},

    /* --- addresses --- */
    {"bad_addresses",
     "pools:\n"
     "  p:\n"
     "    listen: /tmp/a\n"
     "    backends:\n"
     "      - localhost\n"
     "      - \"a:0\"\n"
     "      - a:65536\n"
     "      - \"[::1:80\"\n"
     "      - \"[::1]x\"\n"
     "      - \"::1:80\"\n"
     "      - a b:1\n"
     "      - \":80\"\n"
     "      - \"a:\"\n"
     "      - \"[127.0.0.1]:80\"\n"
     "      - a:http\n",
     {"t.yaml:5:9: pools.p.backends[0]: expected an address host:port, [v6]:port or a.b.c.d:port (missing "
      "port), got \"localhost\"",
      "t.yaml:6:9: pools.p.backends[1]: expected an address host:port, [v6]:port or a.b.c.d:port (port must "
      "be "
      "between 1 and 65535), got \"a:0\"",
      "t.yaml:7:9: pools.p.backends[2]: expected an address host:port, [v6]:port or a.b.c.d:port (port must "
      "be "
      "between 1 and 65535), got \"a:65536\"",
      "t.yaml:8:9: pools.p.backends[3]: expected an address host:port, [v6]:port or a.b.c.d:port (missing "
      "']'), "
      "got \"[::1:80\"",
      "t.yaml:9:9: pools.p.backends[4]: expected an address host:port, [v6]:port or a.b.c.d:port (expected "
      "':' "
      "after ']'), got \"[::1]x\"",
      "t.yaml:10:9: pools.p.backends[5]: expected an address host:port, [v6]:port or a.b.c.d:port (IPv6 "
      "addresses need brackets, like [::1]:6379), got \"::1:80\"",
      "t.yaml:11:9: pools.p.backends[6]: expected an address host:port, [v6]:port or a.b.c.d:port (host "
      "contains a space or control character), got \"a b:1\"",
      "t.yaml:12:9: pools.p.backends[7]: expected an address host:port, [v6]:port or a.b.c.d:port (missing "
      "host), got \":80\"",
      "t.yaml:13:9: pools.p.backends[8]: expected an address host:port, [v6]:port or a.b.c.d:port (missing "
      "port), got \"a:\"",
      "t.yaml:14:9: pools.p.backends[9]: expected an address host:port, [v6]:port or a.b.c.d:port (brackets "
      "are only for IPv6 addresses), got \"[127.0.0.1]:80\"",
      "t.yaml:15:9: pools.p.backends[10]: expected an address host:port, [v6]:port or a.b.c.d:port (port "
      "must "
      "be a number), got \"a:http\""}},
    {"bad_address_single",
     "pools:\n  p:\n    listen: /tmp/a\n    backends: db.internal\n",
     {"t.yaml:4:15: pools.p.backends: expected an address host:port, [v6]:port or a.b.c.d:port (missing "
      "port), "
      "got \"db.internal\""}},

    /* --- relations --- */
    {"min_idle_above_max",
     HEAD "    min_idle: 10\n    max_connections: 5\n",
     {"t.yaml:5:15: pools.p.min_idle: expected an integer <= max_connections (5), got \"10\""}},
    {"min_idle_above_builtin_max_in_defaults",
     "defaults:\n  min_idle: 100\n" HEAD "  q:\n    listen: /tmp/q\n    backends: 127.0.0.1:1\n",
     {"t.yaml:2:13: defaults.min_idle: expected an integer <= max_connections (64), got \"100\""}},
    {"max_below_inherited_min_idle",
     "defaults:\n  min_idle: 10\n" HEAD "    max_connections: 5\n",
     {"t.yaml:7:22: pools.p.max_connections: expected an integer >= min_idle (10), got \"5\""}},
    {"backoff_max_below_initial",
     HEAD "    backoff: {initial: 5s, max: 1s}\n",
     {"t.yaml:5:33: pools.p.backoff.max: expected a duration >= initial (5s), got \"1s\""}},
    {"backoff_initial_above_builtin_max",
     HEAD "    backoff: {initial: 1m}\n",
     {"t.yaml:5:24: pools.p.backoff.initial: expected a duration <= max (30s), got \"1m\""}},
    {"backoff_initial_above_defaults_max",
     "defaults:\n  backoff: {max: 2s}\n" HEAD "    backoff: {initial: 2.5s}\n",
     {"t.yaml:7:24: pools.p.backoff.initial: expected a duration <= max (2s), got \"2.5s\""}},
    {"backoff_defaults_max_below_builtin_initial",
     "defaults:\n  backoff: {max: 100ms}\n" HEAD "    backoff: {jitter: 0.1}\n",
     {"t.yaml:2:18: defaults.backoff.max: expected a duration >= initial (500ms), got \"100ms\""}},

    /* --- pool names --- */
    {"bad_pool_names",
     "pools:\n"
     "  bad name: {listen: /tmp/1, backends: 127.0.0.1:1}\n"
     "  a/b: {listen: /tmp/2, backends: 127.0.0.1:1}\n"
     "  \"\": {listen: /tmp/3, backends: 127.0.0.1:1}\n"
     "  n\xc3\xa4me: {listen: /tmp/4, backends: 127.0.0.1:1}\n"
     "  nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn: {listen: /tmp/5, backends: "
     "127.0.0.1:1}\n",
     {"t.yaml:2:3: pools.bad name: expected a pool name of 1 to 64 characters from A-Z a-z 0-9 _ . -, got "
      "\"bad name\"",
      "t.yaml:3:3: pools.a/b: expected a pool name of 1 to 64 characters from A-Z a-z 0-9 _ . -, got \"a/b\"",
      "t.yaml:4:3: pools.: expected a pool name of 1 to 64 characters from A-Z a-z 0-9 _ . -, got \"\"",
      "t.yaml:5:3: pools.n\xc3\xa4me: expected a pool name of 1 to 64 characters from A-Z a-z 0-9 _ . -, got "
      "\"n\xc3\xa4me\"",
      /* key paths quote at most 60 bytes of a name, like values */
      "t.yaml:6:3: pools.nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn...: expected a pool "
      "name "
      "of 1 to 64 characters from A-Z a-z 0-9 _ . -, got "
      "\"nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn\"..."}},

    /* --- listen entries --- */
    {"bad_modes",
     "pools:\n"
     "  p:\n"
     "    backends: 127.0.0.1:1\n"
     "    listen:\n"
     "      - {path: /tmp/m0, mode: \"0800\"}\n"
     "      - {path: /tmp/m1, mode: \"1000\"}\n"
     "      - {path: /tmp/m2, mode: rw-rw}\n"
     "      - {path: /tmp/m3, mode: \"\"}\n"
     "      - {path: /tmp/m4, mode: [6]}\n"
     "      - {path: /tmp/m5, mode: -1}\n",
     {"t.yaml:5:31: pools.p.listen[0].mode: expected an octal mode like \"0660\", at most 0777, got \"0800\"",
      "t.yaml:6:31: pools.p.listen[1].mode: expected an octal mode like \"0660\", at most 0777, got \"1000\"",
      "t.yaml:7:31: pools.p.listen[2].mode: expected an octal mode like \"0660\", at most 0777, got "
      "\"rw-rw\"",
      "t.yaml:8:31: pools.p.listen[3].mode: expected an octal mode like \"0660\", at most 0777, got \"\"",
      "t.yaml:9:31: pools.p.listen[4].mode: expected an octal mode like \"0660\", at most 0777, got a list",
      "t.yaml:10:31: pools.p.listen[5].mode: expected an octal mode like \"0660\", at most 0777, got "
      "\"-1\""}},
    {"listen_map_without_path",
     "pools:\n  p:\n    backends: 127.0.0.1:1\n    listen:\n      - {mode: \"0600\"}\n",
     {"t.yaml:5:9: pools.p.listen[0].path: missing key, expected a socket path"}},
    {"listen_bad_paths",
     "pools:\n"
     "  p:\n"
     "    backends: 127.0.0.1:1\n"
     "    listen:\n"
     "      - \"\"\n"
     "      - \"a\\0b\"\n"
     "      - path: [x]\n"
     "      -\n"
     "      - ~\n",
     {"t.yaml:5:9: pools.p.listen[0]: expected a socket path, got \"\"",
      "t.yaml:6:9: pools.p.listen[1]: expected a socket path without NUL bytes, got \"a\\x00b\"",
      "t.yaml:7:15: pools.p.listen[2].path: expected a socket path, got a list",
      "t.yaml:8:8: pools.p.listen[3]: expected a socket path, got an empty value",
      "t.yaml:9:9: pools.p.listen[4]: expected a socket path, got \"~\""}},

    /* --- balance, max_connecting, fail_fast --- */
    {"balance_unknown",
     HEAD "    balance: random\n",
     {"t.yaml:5:14: pools.p.balance: expected one of round_robin, least_connections, first, got \"random\""}},
    {"fail_fast_not_boolean",
     "defaults:\n  fail_fast: TRUE\n" HEAD "    fail_fast: maybe\n",
     {"t.yaml:2:14: defaults.fail_fast: expected true or false, got \"TRUE\"",
      "t.yaml:7:16: pools.p.fail_fast: expected true or false, got \"maybe\""}},
    {"max_connecting_out_of_range",
     "defaults:\n  max_connecting: 1001\n" HEAD "    max_connecting: 0\n",
     {"t.yaml:2:19: defaults.max_connecting: expected an integer <= 1000, got \"1001\"",
      "t.yaml:7:21: pools.p.max_connecting: expected an integer >= 1, got \"0\""}},

    /* --- health checks --- */
    {"check_type_unknown", /* the send: that only send_expect takes is not blamed as well */
     HEAD "    health_check:\n      type: redsi\n      send: x\n",
     {"t.yaml:6:13: pools.p.health_check.type: expected one of none, connect, send_expect, redis, memcached, "
      "http, postgres, mysql, smtp, postgres_primary, redis_master, got \"redsi\""}},
    {"check_rise_zero_fall_101",
     HEAD "    health_check: {rise: 0, fall: 101}\n",
     {"t.yaml:5:26: pools.p.health_check.rise: expected an integer >= 1, got \"0\"",
      "t.yaml:5:35: pools.p.health_check.fall: expected an integer <= 100, got \"101\""}},
    {"check_durations_out_of_range",
     HEAD "    health_check:\n"
          "      interval: 5ms\n"
          "      timeout: 6m\n"
          "      fast_interval: 2h\n"
          "      down_interval: 0s\n",
     {"t.yaml:6:17: pools.p.health_check.interval: expected a duration between 10ms and 1h, got \"5ms\"",
      "t.yaml:7:16: pools.p.health_check.timeout: expected a duration between 10ms and 5m, got \"6m\"",
      "t.yaml:8:22: pools.p.health_check.fast_interval: expected a duration between 10ms and 1h, got \"2h\"",
      "t.yaml:9:22: pools.p.health_check.down_interval: expected a duration between 10ms and 1h, got "
      "\"0s\""}},
    {"check_is_scalar",
     HEAD "    health_check: connect\n",
     {"t.yaml:5:19: pools.p.health_check: expected a mapping of type, interval, timeout, rise, fall and the "
      "type's keys, got \"connect\""}},
    {"check_unknown_key",
     HEAD "    health_check: {type: connect, retries: 3}\n",
     {"t.yaml:5:35: pools.p.health_check.retries: unknown key, expected one of type, send, send_hex, expect, "
      "expect_hex, expect_regex, path, interval, timeout, fast_interval, down_interval, rise, fall, user, "
      "database, password_file"}},
    {"postgres_primary_without_user",
     HEAD "    health_check: {type: postgres_primary, database: db}\n",
     {"t.yaml:5:26: pools.p.health_check.type: expected user for type postgres_primary (the role the check "
      "logs in as)"}},
    {"login_keys_with_other_types",
     HEAD "    health_check: {type: redis_master, database: db}\n"
          "  q:\n    listen: /tmp/wp-test-q.sock\n    backends: 127.0.0.1:6379\n"
          "    health_check: {type: redis_master, user: u}\n",
     {"t.yaml:5:50: pools.p.health_check.database: expected only with type: postgres_primary (type is "
      "redis_master)",
      "t.yaml:9:46: pools.q.health_check.user: expected password_file with user for type redis_master (AUTH "
      "needs a password)"}},
    {"send_expect_without_send",
     HEAD "    health_check:\n      type: send_expect\n      expect: \"+PONG\"\n",
     {"t.yaml:6:13: pools.p.health_check.type: expected send or send_hex for type send_expect"}},
    {"send_expect_without_send_or_expect",
     HEAD "    health_check: {type: send_expect}\n",
     {"t.yaml:5:26: pools.p.health_check.type: expected send or send_hex for type send_expect",
      "t.yaml:5:26: pools.p.health_check.type: expected expect, expect_hex or expect_regex for type "
      "send_expect"}},
    {"send_expect_incomplete_in_defaults_reported_once",
     "defaults:\n  health_check:\n    type: send_expect\n    send_hex: 00\n" HEAD
     "  q: {listen: /tmp/wp-test/q, backends: 127.0.0.1:1}\n",
     {"t.yaml:3:11: defaults.health_check.type: expected expect, expect_hex or expect_regex for type "
      "send_expect"}},
    {"send_with_type_redis",
     HEAD "    health_check:\n      type: redis\n      send: PING\n",
     {"t.yaml:7:13: pools.p.health_check.send: expected only with type: send_expect (type is redis)"}},
    {"expect_without_type_is_connect",
     HEAD "    health_check:\n      expect_hex: 2b\n",
     {"t.yaml:6:19: pools.p.health_check.expect_hex: expected only with type: send_expect (type is "
      "connect)"}},
    {"send_with_type_from_defaults",
     "defaults:\n  health_check: {type: redis}\n" HEAD "    health_check: {send: PING}\n",
     {"t.yaml:7:26: pools.p.health_check.send: expected only with type: send_expect (type is redis)"}},
    {"path_with_type_redis",
     HEAD "    health_check: {type: redis, path: /ping}\n",
     {"t.yaml:5:39: pools.p.health_check.path: expected only with type: http (type is redis)"}},
    {"send_and_send_hex_and_expects",
     HEAD "    health_check:\n"
          "      type: send_expect\n"
          "      send_hex: 0d0a\n"
          "      send: x\n"
          "      expect: y\n"
          "      expect_regex: z\n"
          "      expect_hex: 00\n",
     {"t.yaml:8:7: pools.p.health_check.send: expected only one of send, send_hex",
      "t.yaml:10:7: pools.p.health_check.expect_regex: expected only one of expect, expect_hex, expect_regex",
      "t.yaml:11:7: pools.p.health_check.expect_hex: expected only one of expect, expect_hex, expect_regex"}},
    {"bad_regex",
     HEAD "    health_check:\n      type: send_expect\n      send: x\n      expect_regex: '+PONG'\n"
          "  q:\n"
          "    listen: /tmp/wp-test/q\n"
          "    backends: 127.0.0.1:1\n"
          "    health_check: {type: send_expect, send: x, expect_regex: \"a(\"}\n",
     {"t.yaml:8:21: pools.p.health_check.expect_regex: expected a POSIX extended regular expression (Invalid "
      "preceding regular expression), got \"+PONG\"",
      "t.yaml:12:62: pools.q.health_check.expect_regex: expected a POSIX extended regular expression "
      "(Unmatched ( or \\(), got \"a(\""}},
    {"bad_hex",
     HEAD "    health_check:\n"
          "      type: send_expect\n"
          "      send_hex: 0d0\n"
          "      expect_hex: \"0 d\"\n"
          "  q: {listen: /tmp/wp-test/q, backends: 127.0.0.1:1,\n"
          "      health_check: {type: send_expect, send_hex: zz, expect_hex: \"\"}}\n",
     {"t.yaml:7:17: pools.p.health_check.send_hex: expected pairs of hex digits, optionally separated by "
      "spaces, like \"0d 0a\", got \"0d0\"",
      "t.yaml:8:19: pools.p.health_check.expect_hex: expected pairs of hex digits, optionally separated by "
      "spaces, like \"0d 0a\", got \"0 d\"",
      "t.yaml:10:51: pools.q.health_check.send_hex: expected pairs of hex digits, optionally separated by "
      "spaces, like \"0d 0a\", got \"zz\"",
      "t.yaml:10:67: pools.q.health_check.expect_hex: expected at least one byte, got \"\""}},
    {"expect_empty",
     HEAD "    health_check: {type: send_expect, send: x, expect: \"\"}\n",
     {"t.yaml:5:56: pools.p.health_check.expect: expected at least one byte, got \"\""}},
    {"bad_http_paths",
     HEAD "    health_check:\n      type: http\n      path: health\n"
          "  q:\n"
          "    listen: /tmp/wp-test/q\n"
          "    backends: 127.0.0.1:1\n"
          "    health_check: {type: http, path: \"/a b\"}\n",
     {"t.yaml:7:13: pools.p.health_check.path: expected a request path starting with /, got \"health\"",
      "t.yaml:11:38: pools.q.health_check.path: expected a request path without spaces or control "
      "characters, got \"/a b\""}},

    /* --- keepalive and connection hygiene --- */
    {"keepalive_errors",
     HEAD "    keepalive: {idle: 1.5s, interval: 0s, count: 0}\n"
          "  q:\n"
          "    listen: /tmp/wp-test/q\n"
          "    backends: 127.0.0.1:1\n"
          "    keepalive: {idle: 32768s, count: 128}\n"
          "  r:\n"
          "    listen: /tmp/wp-test/r\n"
          "    backends: 127.0.0.1:1\n"
          "    keepalive: maybe\n"
          "  s:\n"
          "    listen: /tmp/wp-test/s\n"
          "    backends: 127.0.0.1:1\n"
          "    keepalive: {idle: 30, probes: 3}\n",
     {"t.yaml:5:23: pools.p.keepalive.idle: expected a whole number of seconds from 1s to 32767s, got "
      "\"1.5s\"",
      "t.yaml:5:39: pools.p.keepalive.interval: expected a whole number of seconds from 1s to 32767s, got "
      "\"0s\"",
      "t.yaml:5:50: pools.p.keepalive.count: expected an integer >= 1, got \"0\"",
      "t.yaml:9:23: pools.q.keepalive.idle: expected a whole number of seconds from 1s to 32767s, got "
      "\"32768s\"",
      "t.yaml:9:38: pools.q.keepalive.count: expected an integer <= 127, got \"128\"",
      "t.yaml:13:16: pools.r.keepalive: expected true, false or a mapping of idle, interval, count, got "
      "\"maybe\"",
      "t.yaml:17:23: pools.s.keepalive.idle: expected a duration with a unit (ms, s, m, h), got \"30\"",
      "t.yaml:17:27: pools.s.keepalive.probes: unknown key, expected one of idle, interval, count"}},
    {"hygiene_durations_out_of_range",
     HEAD "    tcp_user_timeout: 2h\n"
          "    max_lifetime: 50ms\n"
          "    idle_timeout: 169h\n"
          "    max_idle_time: 5ms\n"
          "  q:\n"
          "    listen: /tmp/wp-test/q\n"
          "    backends: 127.0.0.1:1\n"
          "    tcp_user_timeout: 5\n"
          "    max_lifetime: 00\n",
     {"t.yaml:5:23: pools.p.tcp_user_timeout: expected a duration between 0s and 1h, got \"2h\"",
      "t.yaml:6:19: pools.p.max_lifetime: expected 0 or a duration between 100ms and 168h, got \"50ms\"",
      "t.yaml:7:19: pools.p.idle_timeout: expected a duration between 0s and 168h, got \"169h\"",
      "t.yaml:8:20: pools.p.max_idle_time: expected 0 or a duration between 10ms and 168h, got \"5ms\"",
      "t.yaml:12:23: pools.q.tcp_user_timeout: expected a duration with a unit (ms, s, m, h), got \"5\"",
      "t.yaml:13:19: pools.q.max_lifetime: expected a duration with a unit (ms, s, m, h), got \"00\""}},

    /* --- backend mappings --- */
    {"backend_map_errors",
     "pools:\n"
     "  p:\n"
     "    listen: /tmp/a\n"
     "    backends:\n"
     "      - {address: 127.0.0.1:1, weight: 0}\n"
     "      - {address: 127.0.0.1:2, weight: x}\n"
     "      - {address: 127.0.0.1:3, weight: 1001, backup: maybe}\n"
     "      - {weight: 2}\n"
     "      - {address: 127.0.0.1:4, port: 5}\n"
     "      - {address: localhost}\n",
     {"t.yaml:5:40: pools.p.backends[0].weight: expected an integer >= 1, got \"0\"",
      "t.yaml:6:40: pools.p.backends[1].weight: expected an integer >= 1, got \"x\"",
      "t.yaml:7:40: pools.p.backends[2].weight: expected an integer <= 1000, got \"1001\"",
      "t.yaml:7:54: pools.p.backends[2].backup: expected true or false, got \"maybe\"",
      "t.yaml:8:9: pools.p.backends[3].address: missing key, expected an address host:port",
      "t.yaml:9:32: pools.p.backends[4].port: unknown key, expected one of address, weight, backup, dns",
      "t.yaml:10:19: pools.p.backends[5].address: expected an address host:port, [v6]:port or a.b.c.d:port "
      "(missing port), got \"localhost\""}},
    /* --- dns: and backends by name (issue 15) --- */
    {"dns_bad_values",
     HEAD "    dns:\n"
     "      refresh: 50ms\n"
     "      respect_ttl: maybe\n"
     "      min_ttl: 25h\n"
     "      max_ttl: 5\n"
     "      timeout: 5ms\n"
     "      tries: 0\n"
     "      hold: 1441m\n"
     "      family: ipv5\n"
     "      mode: some\n"
     "      ttl: 1s\n",
     {"t.yaml:6:16: pools.p.dns.refresh: expected a duration between 100ms and 24h, got \"50ms\"",
      "t.yaml:7:20: pools.p.dns.respect_ttl: expected true or false, got \"maybe\"",
      "t.yaml:8:16: pools.p.dns.min_ttl: expected a duration between 100ms and 24h, got \"25h\"",
      "t.yaml:9:16: pools.p.dns.max_ttl: expected a duration with a unit (ms, s, m, h), got \"5\"",
      "t.yaml:10:16: pools.p.dns.timeout: expected a duration between 10ms and 1m, got \"5ms\"",
      "t.yaml:11:14: pools.p.dns.tries: expected an integer >= 1, got \"0\"",
      "t.yaml:12:13: pools.p.dns.hold: expected a duration between 0s and 24h, got \"1441m\"",
      "t.yaml:13:15: pools.p.dns.family: expected one of any, ipv4, ipv6, got \"ipv5\"",
      "t.yaml:14:13: pools.p.dns.mode: expected one of all, first, got \"some\"",
      "t.yaml:15:7: pools.p.dns.ttl: unknown key, expected one of refresh, respect_ttl, min_ttl, max_ttl, timeout, "
      "tries, hold, family, mode, servers"}},
    {"dns_more_bad_values",
     "defaults:\n  dns: {tries: 11}\n" HEAD "    dns: 5s\n",
     {"t.yaml:2:16: defaults.dns.tries: expected an integer <= 10, got \"11\"",
      "t.yaml:7:10: pools.p.dns: expected a mapping of refresh, respect_ttl, min_ttl, max_ttl, timeout, tries, hold, "
      "family, mode, servers, got \"5s\""}},
    {"dns_servers",
     HEAD "    dns:\n      servers:\n"
     "        - dns.google\n"
     "        - dns.google:53\n"
     "        - \"[zz::1]:53\"\n"
     "        - 1.2.3.4:0\n"
     "        - \"[fe80::1%eth0]:53\"\n"
     "        - [1.2.3.4]\n"
     "        - 10.0.0.1\n"
     "        - 10.0.0.1:x\n"
     "  q:\n    listen: /tmp/wp-test/q.sock\n    backends: 127.0.0.1:1\n"
     "    dns: {servers: {a: 1}}\n"
     "  r:\n    listen: /tmp/wp-test/r.sock\n    backends: 127.0.0.1:1\n"
     "    dns: {servers: [1.1.1.1, 1.1.1.2, 1.1.1.3, 1.1.1.4, 1.1.1.5, 1.1.1.6, 1.1.1.7, 1.1.1.8, 1.1.1.9]}\n",
     {"t.yaml:7:11: pools.p.dns.servers[0]: expected an IP address, ip:port or [v6]:port (a server is not looked up "
      "by name), got \"dns.google\"",
      "t.yaml:8:11: pools.p.dns.servers[1]: expected an IP address, ip:port or [v6]:port (a server is not looked up "
      "by name), got \"dns.google:53\"",
      "t.yaml:9:11: pools.p.dns.servers[2]: expected an IP address, ip:port or [v6]:port (a server is not looked "
      "up by name), got \"[zz::1]:53\"",
      "t.yaml:10:11: pools.p.dns.servers[3]: expected an IP address, ip:port or [v6]:port (port must be between 1 "
      "and 65535), got \"1.2.3.4:0\"",
      "t.yaml:11:11: pools.p.dns.servers[4]: expected an IP address, ip:port or [v6]:port (a server is not looked "
      "up by name), got \"[fe80::1%eth0]:53\"",
      "t.yaml:12:11: pools.p.dns.servers[5]: expected an IP address, ip:port or [v6]:port, got a list",
      "t.yaml:14:11: pools.p.dns.servers[7]: expected an IP address, ip:port or [v6]:port (port must be a number), "
      "got \"10.0.0.1:x\"",
      "t.yaml:18:20: pools.q.dns.servers: expected a list of IP addresses (ip, ip:port or [v6]:port), got a mapping",
      "t.yaml:22:20: pools.r.dns.servers: expected at most 8 servers, got 9"}},
    {"dns_min_ttl_over_max_ttl",
     "defaults:\n  dns: {max_ttl: 500ms}\n"
     "pools:\n"
     "  p:\n    listen: /tmp/wp-test/p.sock\n    backends: 127.0.0.1:1\n"
     "  q:\n    listen: /tmp/wp-test/q.sock\n    backends: 127.0.0.1:1\n    dns: {min_ttl: 2s, max_ttl: 1s}\n"
     "  r:\n    listen: /tmp/wp-test/r.sock\n    dns: {max_ttl: 1h}\n    backends:\n"
     "      - {address: db.test:1, dns: {min_ttl: 2h}}\n"
     "      - {address: db.test:2, dns: {max_ttl: 100ms, min_ttl: 200ms}}\n"
     "      - {address: db.test:3, dns: {max_ttl: 2h}}\n",
     {"t.yaml:2:18: defaults.dns.max_ttl: expected a duration >= min_ttl (1s), got \"500ms\"",
      "t.yaml:10:33: pools.q.dns.max_ttl: expected a duration >= min_ttl (2s), got \"1s\"",
      "t.yaml:15:45: pools.r.backends[0].dns.min_ttl: expected a duration <= max_ttl (1h), got \"2h\"",
      "t.yaml:16:45: pools.r.backends[1].dns.max_ttl: expected a duration >= min_ttl (200ms), got \"100ms\""}},
    {"backend_hosts",
     "pools:\n  p:\n    listen: /tmp/a\n    backends:\n"
     "      - \"[zz::1]:1\"\n"
     "      - 999.0.0.1:1\n"
     "      - bad_host!:1\n"
     "      - a..b:1\n"
     "      - .a:1\n"
     "      - " "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.b:1\n"
     "      - {address: 127.0.0.1:1, dns: {tries: x}}\n"
     "      - {dns: {mode: x}}\n",
     {"t.yaml:5:9: pools.p.backends[0]: expected an address host:port, [v6]:port or a.b.c.d:port (not an IPv6 "
      "address in the brackets), got \"[zz::1]:1\"",
      "t.yaml:6:9: pools.p.backends[1]: expected an address host:port, [v6]:port or a.b.c.d:port (not an IP "
      "address), got \"999.0.0.1:1\"",
      "t.yaml:7:9: pools.p.backends[2]: expected an address host:port, [v6]:port or a.b.c.d:port (a host name has "
      "only letters, digits, '-', '_' and dots), got \"bad_host!:1\"",
      "t.yaml:8:9: pools.p.backends[3]: expected an address host:port, [v6]:port or a.b.c.d:port (empty label in "
      "the host name), got \"a..b:1\"",
      "t.yaml:9:9: pools.p.backends[4]: expected an address host:port, [v6]:port or a.b.c.d:port (empty label in "
      "the host name), got \".a:1\"",
      "t.yaml:10:9: pools.p.backends[5]: expected an address host:port, [v6]:port or a.b.c.d:port (a label of a "
      "host name has at most 63 bytes), got \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"...",
      "t.yaml:11:45: pools.p.backends[6].dns.tries: expected an integer >= 1, got \"x\"",
      "t.yaml:12:9: pools.p.backends[7].address: missing key, expected an address host:port",
      "t.yaml:12:22: pools.p.backends[7].dns.mode: expected one of all, first, got \"x\""}},
    {"backend_name_twice",
     "pools:\n  p:\n    listen: /tmp/a\n    backends:\n"
     "      - db.test:1\n"
     "      - DB.Test.:1\n"
     "      - db.test:2\n"
     "      - {address: db.test:1, weight: 2}\n"
     "      - 127.0.0.1:1\n"
     "  q:\n    listen: /tmp/b\n    backends: [db.test:1]\n",
     {"t.yaml:6:9: pools.p.backends[1]: expected a name the pool does not list already (line 5 has it), got "
      "\"DB.Test.:1\"",
      "t.yaml:8:19: pools.p.backends[3]: expected a name the pool does not list already (line 5 has it), got "
      "\"db.test:1\""}},
    {"backup_on_only_backend",
     "pools:\n  p:\n    listen: /tmp/a\n    backends:\n      - {address: 127.0.0.1:1, backup: true}\n",
     {"t.yaml:5:40: pools.p.backends[0].backup: expected at least one backend without backup: true"}},
    {"all_backends_backup",
     "pools:\n"
     "  p:\n"
     "    listen: /tmp/a\n"
     "    backends:\n"
     "      - address: 127.0.0.1:1\n"
     "        backup: yes\n"
     "      - {address: 127.0.0.1:2, backup: true}\n",
     {"t.yaml:6:17: pools.p.backends[0].backup: expected at least one backend without backup: true"}},

    /* --- allow: --- */
    {"allow_empty_mapping",
     HEAD "    allow: {}\n",
     {"t.yaml:5:12: pools.p.allow: expected at least one of users, groups, uids, gids, got an empty mapping"}},
    {"allow_empty_value",
     HEAD "    allow:\n    min_idle: 1\n",
     {"t.yaml:5:11: pools.p.allow: expected at least one of users, groups, uids, gids, got an empty value"}},
    {"allow_not_a_mapping",
     HEAD "    allow: [root]\n",
     {"t.yaml:5:12: pools.p.allow: expected a mapping of users, groups, uids, gids, got a list"}},
    {"allow_unknown_and_repeated_keys",
     HEAD "    allow: {user: root, uids: 1, uids: 2}\n",
     {"t.yaml:5:13: pools.p.allow.user: unknown key, did you mean users?",
      "t.yaml:5:34: pools.p.allow.uids: duplicate key, first given at line 5"}},
    {"allow_unknown_names",
     HEAD "    allow:\n"
          "      users: [root, wp-no-such-user-7f3a, \"\"]\n"
          "      groups: wp-no-such-group-7f3a\n",
     {"t.yaml:6:21: pools.p.allow.users[1]: expected an existing user name, got \"wp-no-such-user-7f3a\"",
      "t.yaml:6:43: pools.p.allow.users[2]: expected a user name, got \"\"",
      "t.yaml:7:15: pools.p.allow.groups: expected an existing group name, got \"wp-no-such-group-7f3a\""}},
    {"allow_bad_ids",
     HEAD "    allow:\n"
          "      uids: [-1, 4294967295, x, 1]\n"
          "      gids: []\n"
          "      users: {a: b}\n",
     {"t.yaml:6:14: pools.p.allow.uids[0]: expected an integer >= 0, got \"-1\"",
      "t.yaml:6:18: pools.p.allow.uids[1]: expected an integer <= 4294967294, got \"4294967295\"",
      "t.yaml:6:30: pools.p.allow.uids[2]: expected an integer >= 0, got \"x\"",
      "t.yaml:7:13: pools.p.allow.gids: expected at least one group id, got an empty list",
      "t.yaml:8:14: pools.p.allow.users: expected a user name or a list of them, got a mapping"}},
    {"allow_in_defaults_reported_once",
     "defaults:\n  allow: {groups: [wp-no-such-group-7f3a]}\n" HEAD "  q:\n    listen: /tmp/q\n    backends: 127.0.0.1:1\n",
     {"t.yaml:2:20: defaults.allow.groups[0]: expected an existing group name, got \"wp-no-such-group-7f3a\""}},
    {"allow_on_listen_items",
     "pools:\n"
     "  p:\n"
     "    listen:\n"
     "      - {path: /tmp/a, allow: {}}\n"
     "      - {allow: {uids: 1}}\n"
     "      - {path: /tmp/c, mode: \"0999\", allow: {gid: 1}}\n"
     "    backends: 127.0.0.1:1\n",
     {"t.yaml:4:31: pools.p.listen[0].allow: expected at least one of users, groups, uids, gids, got an empty mapping",
      "t.yaml:5:9: pools.p.listen[1].path: missing key, expected a socket path",
      "t.yaml:6:30: pools.p.listen[2].mode: expected an octal mode like \"0660\", at most 0777, got \"0999\"",
      "t.yaml:6:46: pools.p.listen[2].allow.gid: unknown key, did you mean gids?"}},

    /* --- collection --- */
    {"three_errors_three_lines",
     "daemon:\n  log_level: loud\n" HEAD "    min_idle: many\n    connect_timeout: 5\n",
     {"t.yaml:2:14: daemon.log_level: expected one of debug, info, notice, warning, error, got \"loud\"",
      "t.yaml:7:15: pools.p.min_idle: expected an integer >= 0, got \"many\"",
      "t.yaml:8:22: pools.p.connect_timeout: expected a duration with a unit (ms, s, m, h), got \"5\""}},

    /* --- tls: (issue 14); errors about files' contents are in test_tls_file_errors --- */
    {"tls_not_a_bool",
     HEAD "    tls: maybe\n",
     {"t.yaml:5:10: pools.p.tls: expected true, false or a mapping of verify, ca_file, ca_path, server_name, "
      "cert_file, key_file, min_version, ciphers, ciphersuites, alpn, session_resumption, starttls, got \"maybe\""}},
    {"tls_unknown_key",
     HEAD "    tls: {verfy: false}\n",
     {"t.yaml:5:11: pools.p.tls.verfy: unknown key, did you mean verify?"}},
    {"tls_min_version",
     HEAD "    tls:\n      min_version: \"1.1\"\n",
     {"t.yaml:6:20: pools.p.tls.min_version: expected one of 1.2, 1.3, got \"1.1\""}},
    {"tls_starttls",
     HEAD "    tls: {starttls: mysql}\n",
     {"t.yaml:5:21: pools.p.tls.starttls: expected one of none, postgres, got \"mysql\""}},
    {"tls_verify_not_bool",
     HEAD "    tls: {verify: 0}\n",
     {"t.yaml:5:19: pools.p.tls.verify: expected true or false, got \"0\""}},
    {"tls_bad_ciphers",
     HEAD "    tls: {ciphers: 'NOPE:ALSO-NOT'}\n",
     {"t.yaml:5:20: pools.p.tls.ciphers: expected an OpenSSL cipher list for TLS 1.2 (no cipher match), got "
      "\"NOPE:ALSO-NOT\""}},
    {"tls_bad_ciphersuites",
     HEAD "    tls: {ciphersuites: TLS_NOPE}\n",
     {"t.yaml:5:25: pools.p.tls.ciphersuites: expected TLS 1.3 cipher suites like TLS_AES_128_GCM_SHA256 (no "
      "cipher match), got \"TLS_NOPE\""}},
    {"tls_empty_strings",
     HEAD "    tls: {server_name: '', ciphers: ''}\n",
     {"t.yaml:5:24: pools.p.tls.server_name: expected a string of 1 to 253 bytes, got \"\"",
      "t.yaml:5:37: pools.p.tls.ciphers: expected a string of 1 to 4096 bytes, got \"\""}},
    {"tls_alpn_items",
     HEAD "    tls:\n      alpn: [h2, '', [x]]\n",
     {"t.yaml:6:18: pools.p.tls.alpn[1]: expected a protocol name of 1 to 255 bytes, got \"\"",
      "t.yaml:6:22: pools.p.tls.alpn[2]: expected a protocol name of 1 to 255 bytes, got a list"}},
    {"tls_alpn_empty_list",
     HEAD "    tls: {alpn: []}\n",
     {"t.yaml:5:17: pools.p.tls.alpn: expected a list of 1 to 32 protocol names, got an empty list"}},
    {"tls_ca_file_missing",
     HEAD "    tls:\n      ca_file: /nonexistent/wp-ca.pem\n",
     {"t.yaml:6:16: pools.p.tls.ca_file: expected a readable file (No such file or directory), got "
      "\"/nonexistent/wp-ca.pem\""}},
    {"tls_ca_file_a_directory",
     HEAD "    tls:\n      ca_file: /\n",
     {"t.yaml:6:16: pools.p.tls.ca_file: expected a readable file (not a regular file), got \"/\""}},
    {"tls_ca_path_missing",
     HEAD "    tls:\n      ca_path: /nonexistent/wp-certs\n",
     {"t.yaml:6:16: pools.p.tls.ca_path: expected a readable directory (No such file or directory), got "
      "\"/nonexistent/wp-certs\""}},
    {"tls_cert_without_key",
     HEAD "    tls:\n      cert_file: /nonexistent/c.pem\n",
     {"t.yaml:6:18: pools.p.tls.key_file: missing key, expected cert_file and key_file together",
      "t.yaml:6:18: pools.p.tls.cert_file: expected a readable file (No such file or directory), got "
      "\"/nonexistent/c.pem\""}},
    {"tls_key_without_cert_from_defaults",
     "defaults:\n  tls: {key_file: /nonexistent/c.key}\n" HEAD "    tls: true\n"
     "  q:\n    listen: /tmp/wp-test/q.sock\n    backends: 127.0.0.1:6379\n",
     {"t.yaml:2:19: defaults.tls.cert_file: missing key, expected cert_file and key_file together",
      "t.yaml:2:19: defaults.tls.key_file: expected a readable file (No such file or directory), got "
      "\"/nonexistent/c.key\""}},
    {"tls_with_handoff",
     HEAD "    handoff: {listen: /tmp/wp-test/p.handoff}\n    tls: true\n",
     {"t.yaml:6:5: pools.p.tls: tls cannot be used with handoff: a TLS connection's state lives in warmpoold "
      "and cannot be handed to another process"}},
    {"tls_from_defaults_with_handoff",
     "defaults:\n  tls: {verify: true}\n" HEAD "    handoff: {listen: /tmp/wp-test/p.handoff}\n",
     {"t.yaml:7:5: pools.p.handoff: tls cannot be used with handoff: a TLS connection's state lives in "
      "warmpoold and cannot be handed to another process"}},
    {"handoff_in_defaults",
     "defaults:\n  handoff: {listen: /tmp/wp-test/d.handoff}\n" HEAD,
     {"t.yaml:2:3: defaults.handoff: not allowed in defaults, set it in each pool"}},
};

static void run_err_case(void **state)
{
	const struct err_case *c = *state;
	struct cfg_errors e = {0};

	load_bad(c->yaml, &e);
	assert_errors(&e, c->want);
	cfg_errors_free(&e);
}

/* ------------------------------------------------------------------ */
/* tls: (issue 14): certificates and keys made by the openssl CLI         */

static char tlsdir[128]; /* tmpdir/tls while a TLS test runs */

/* Run a shell command (the openssl CLI), which must succeed. */
static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void sh(const char *fmt, ...)
{
	char cmd[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof cmd, fmt, ap);
	va_end(ap);
	if (system(cmd) != 0)
		fail_msg("command failed: %s", cmd);
}

/* A self-signed P-256 certificate name.pem with its key name.key. */
static void make_cert(const char *name)
{
	sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 -subj /CN=%s "
	   "-keyout %s/%s.key -out %s/%s.pem 2>/dev/null",
	   name, tlsdir, name, tlsdir, name);
}

/* tlsdir with: ca.pem/.key, client.pem/.key, other.pem/.key (P-256),
 * ed.key (Ed25519: another key type), garbage.txt, and certs/ holding
 * ca.pem. Removed by tls_files_remove. */
static void tls_files_make(void)
{
	snprintf(tlsdir, sizeof tlsdir, "%s/tls", tmpdir);
	assert_int_equal(mkdir(tlsdir, 0700), 0);
	make_cert("ca");
	make_cert("client");
	make_cert("other");
	sh("openssl genpkey -algorithm ed25519 -out %s/ed.key 2>/dev/null", tlsdir);
	sh("echo 'not PEM at all' > %s/garbage.txt && mkdir %s/certs && cp %s/ca.pem %s/certs/", tlsdir, tlsdir,
	   tlsdir, tlsdir);
}

static void tls_files_remove(void)
{
	sh("rm -rf %s", tlsdir);
}

/* A document with pool p (HEAD) whose tls: block is `block` (lines from
 * line 6, each indented by 6 spaces), %s in it standing for tlsdir. */
/* `tmpl` with every %s replaced by tlsdir (a new string). */
static char *with_dir(const char *tmpl)
{
	struct sbuf b = {0};

	sb_add(&b, "%s", "");
	for (const char *p = tmpl, *q; *p; p = q + 2) {
		if (!(q = strstr(p, "%s"))) {
			sb_add(&b, "%s", p);
			break;
		}
		sb_add(&b, "%.*s%s", (int)(q - p), p, tlsdir);
	}
	return b.s;
}

static char *tls_doc(const char *block)
{
	struct sbuf b = {0};
	char *body = with_dir(block);

	sb_add(&b, HEAD "    tls:\n%s", body);
	free(body);
	return b.s;
}

static bool digest_zero(const unsigned char *d)
{
	static const unsigned char zero[32];

	return memcmp(d, zero, sizeof zero) == 0;
}

/* Every key, its value and what the SSL_CTX was built with. */
static void test_tls_every_key(void **state)
{
	struct wp_config *cfg;
	const struct cfg_tls *t;
	SSL_CTX *ctx;
	char *doc;

	(void)state;
	tls_files_make();
	doc = tls_doc("      verify: true\n"
	              "      ca_file: %s/ca.pem\n"
	              "      ca_path: %s/certs\n"
	              "      server_name: cache.internal\n"
	              "      cert_file: %s/client.pem\n"
	              "      key_file: %s/client.key\n"
	              "      min_version: \"1.3\"\n"
	              "      ciphers: 'ECDHE-ECDSA-AES128-GCM-SHA256'\n"
	              "      ciphersuites: TLS_AES_128_GCM_SHA256\n"
	              "      alpn: [h2, http/1.1]\n"
	              "      session_resumption: false\n"
	              "      starttls: postgres\n");
	cfg = load_ok(doc);
	t = &cfg->pools[0].tls;
	assert_true(t->enabled);
	assert_true(t->verify);
	assert_non_null(strstr(t->ca_file, "/tls/ca.pem"));
	assert_non_null(strstr(t->ca_path, "/tls/certs"));
	assert_string_equal(t->server_name, "cache.internal");
	assert_non_null(strstr(t->cert_file, "/tls/client.pem"));
	assert_non_null(strstr(t->key_file, "/tls/client.key"));
	assert_int_equal(t->min_version, TLS1_3_VERSION);
	assert_string_equal(t->ciphers, "ECDHE-ECDSA-AES128-GCM-SHA256");
	assert_string_equal(t->ciphersuites, "TLS_AES_128_GCM_SHA256");
	assert_bytes(t->alpn, t->alpn_len, "\x02h2\x08http/1.1", 12);
	assert_false(t->session_resumption);
	assert_int_equal(t->starttls, CFG_STARTTLS_POSTGRES);
	assert_int_equal(t->pos.line, 5);
	assert_int_equal(t->pos.col, 5);
	assert_false(digest_zero(t->digest));
	ctx = t->ctx;
	assert_non_null(ctx);
	assert_int_equal(SSL_CTX_get_min_proto_version(ctx), TLS1_3_VERSION);
	assert_int_equal(SSL_CTX_get_verify_mode(ctx), SSL_VERIFY_PEER);
	assert_int_equal(SSL_CTX_get_session_cache_mode(ctx), SSL_SESS_CACHE_OFF);
	assert_true(SSL_CTX_get_options(ctx) & SSL_OP_NO_TICKET);
	assert_true(SSL_CTX_get_options(ctx) & SSL_OP_NO_RENEGOTIATION);
	assert_int_equal(SSL_CTX_get_mode(ctx) & (SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
	                                          SSL_MODE_RELEASE_BUFFERS),
	                 SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
	assert_non_null(SSL_CTX_get0_certificate(ctx));
	assert_int_equal(SSL_CTX_check_private_key(ctx), 1);
	assert_int_equal(cfg->warnings.n, 0);
	cfg_free(cfg);
	free(doc);
	tls_files_remove();
}

/* tls: true is every default; no tls: is plain TCP; backends keep their host. */
static void test_tls_shorthand_and_hosts(void **state)
{
	struct wp_config *cfg;
	const struct cfg_tls *t;

	(void)state;
	cfg = load_ok("daemon:\n  metrics_listen: '[::1]:9100'\n"
	              "pools:\n  p:\n    listen: /tmp/wp-test/p.sock\n"
	              "    backends: ['127.0.0.1:6379', '[::1]:6380', 'localhost:6381']\n    tls: true\n"
	              "  q:\n    listen: /tmp/wp-test/q.sock\n    backends: 127.0.0.1:6379\n");
	t = &cfg->pools[0].tls;
	assert_true(t->enabled);
	assert_true(t->verify);
	assert_null(t->ca_file);
	assert_null(t->ca_path);
	assert_null(t->server_name);
	assert_null(t->cert_file);
	assert_null(t->alpn);
	assert_int_equal(t->min_version, TLS1_2_VERSION);
	assert_true(t->session_resumption);
	assert_int_equal(t->starttls, CFG_STARTTLS_NONE);
	assert_non_null(t->ctx);
	assert_int_equal(SSL_CTX_get_min_proto_version(t->ctx), TLS1_2_VERSION);
	assert_int_equal(SSL_CTX_get_verify_mode(t->ctx), SSL_VERIFY_PEER);
	assert_int_equal(SSL_CTX_get_session_cache_mode(t->ctx), SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
	assert_false(SSL_CTX_get_options(t->ctx) & SSL_OP_NO_TICKET);
	assert_false(digest_zero(t->digest));
	assert_string_equal(cfg->pools[0].backends[0].host, "127.0.0.1");
	assert_string_equal(cfg->pools[0].backends[1].host, "::1");
	assert_string_equal(cfg->pools[0].backends[2].host, "localhost");
	assert_string_equal(cfg->daemon.metrics.host, "::1");
	t = &cfg->pools[1].tls;
	assert_false(t->enabled);
	assert_null(t->ctx);
	assert_true(digest_zero(t->digest));
	assert_string_equal(cfg->pools[1].backends[0].host, "127.0.0.1");
	cfg_free(cfg);
}

/* defaults: tls merged key by key; tls: false switches it off; the
 * verify: false warning is given once, where it was written. */
static void test_tls_defaults_merge(void **state)
{
	struct wp_config *cfg;
	const struct cfg_pool *a, *b, *c, *d;

	(void)state;
	cfg = load_ok("defaults:\n"
	              "  tls:\n"
	              "    verify: false\n"
	              "    alpn: redis\n"
	              "    min_version: '1.3'\n"
	              "pools:\n"
	              "  a:\n    listen: /tmp/wp-test/a.sock\n    backends: 127.0.0.1:1\n    tls: true\n"
	              "  b:\n    listen: /tmp/wp-test/b.sock\n    backends: 127.0.0.1:1\n"
	              "    tls: {verify: true, server_name: b.internal}\n"
	              "  c:\n    listen: /tmp/wp-test/c.sock\n    backends: 127.0.0.1:1\n    tls: false\n"
	              "  d:\n    listen: /tmp/wp-test/d.sock\n    backends: 127.0.0.1:1\n");
	a = &cfg->pools[0], b = &cfg->pools[1], c = &cfg->pools[2], d = &cfg->pools[3];
	assert_true(a->tls.enabled);
	assert_false(a->tls.verify);
	assert_int_equal(SSL_CTX_get_verify_mode(a->tls.ctx), SSL_VERIFY_NONE);
	assert_bytes(a->tls.alpn, a->tls.alpn_len, "\x05redis", 6);
	assert_int_equal(a->tls.min_version, TLS1_3_VERSION);
	assert_int_equal(a->tls.pos.line, 10); /* the pool's own tls: key */
	assert_true(b->tls.verify);
	assert_string_equal(b->tls.server_name, "b.internal");
	assert_bytes(b->tls.alpn, b->tls.alpn_len, "\x05redis", 6);
	assert_ptr_not_equal(a->tls.alpn, b->tls.alpn);
	assert_int_equal(SSL_CTX_get_verify_mode(b->tls.ctx), SSL_VERIFY_PEER);
	assert_false(c->tls.enabled);
	assert_null(c->tls.ctx);
	assert_null(c->tls.alpn);
	assert_true(d->tls.enabled);
	assert_int_equal(d->tls.pos.line, 2); /* inherited: the tls: of defaults */
	assert_memory_equal(a->tls.digest, d->tls.digest, 32);
	assert_memory_not_equal(a->tls.digest, b->tls.digest, 32);
	/* The same trust anchors (here OpenSSL's default paths) are parsed once per load. */
	assert_ptr_equal(SSL_CTX_get_cert_store(a->tls.ctx), SSL_CTX_get_cert_store(b->tls.ctx));
	assert_ptr_equal(SSL_CTX_get_cert_store(a->tls.ctx), SSL_CTX_get_cert_store(d->tls.ctx));
	assert_int_equal(cfg->warnings.n, 1);
	assert_string_equal(cfg->warnings.msg[0],
	                    "t.yaml:3:13: defaults.tls.verify: warning: false: backend certificates are not verified");
	cfg_free(cfg);

	cfg = load_ok(HEAD "    tls:\n      verify: off\n");
	assert_int_equal(cfg->warnings.n, 1);
	assert_string_equal(cfg->warnings.msg[0],
	                    "t.yaml:6:15: pools.p.tls.verify: warning: false: backend certificates are not verified");
	cfg_free(cfg);
}

/* Errors that depend on the files' contents, with OpenSSL's reason. */
static void test_tls_file_errors(void **state)
{
	static const struct {
		const char *block;
		const char *want[4]; /* %s: tlsdir */
	} cases[] = {
	    {"      ca_file: %s/garbage.txt\n",
	     {"t.yaml:6:16: pools.p.tls.ca_file: expected a PEM file of CA certificates (no certificate or crl "
	      "found), got \"%s/garbage.txt\""}},
	    {"      ca_file: %s/ca.key\n",
	     {"t.yaml:6:16: pools.p.tls.ca_file: expected a PEM file of CA certificates (no certificate or crl "
	      "found), got \"%s/ca.key\""}},
	    {"      cert_file: %s/garbage.txt\n      key_file: %s/client.key\n",
	     {"t.yaml:6:18: pools.p.tls.cert_file: expected a PEM certificate file (no start line), got "
	      "\"%s/garbage.txt\""}},
	    {"      cert_file: %s/client.pem\n      key_file: %s/client.pem\n",
	     {"t.yaml:7:17: pools.p.tls.key_file: expected a PEM private key file (unsupported), got "
	      "\"%s/client.pem\""}},
	    {"      cert_file: %s/client.pem\n      key_file: %s/other.key\n",
	     {"t.yaml:7:17: pools.p.tls.key_file: expected the private key of cert_file (key values mismatch), got "
	      "\"%s/other.key\""}},
	    {"      cert_file: %s/client.pem\n      key_file: %s/ed.key\n",
	     {"t.yaml:7:17: pools.p.tls.key_file: expected the private key of cert_file (different key types), got "
	      "\"%s/ed.key\""}},
	    {"      key_file: %s/nothing.key\n",
	     {"t.yaml:6:17: pools.p.tls.cert_file: missing key, expected cert_file and key_file together",
	      "t.yaml:6:17: pools.p.tls.key_file: expected a readable file (No such file or directory), got "
	      "\"%s/nothing.key\""}},
	    {"      ca_path: %s/garbage.txt\n",
	     {"t.yaml:6:16: pools.p.tls.ca_path: expected a readable directory (Not a directory), got "
	      "\"%s/garbage.txt\""}},
	};
	char *want[4] = {0};

	(void)state;
	tls_files_make();
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct cfg_errors e = {0};
		char *doc = tls_doc(cases[i].block);
		size_t n = 0;

		print_message("  case: %s", cases[i].block);
		for (; cases[i].want[n]; n++)
			want[n] = with_dir(cases[i].want[n]);
		want[n] = NULL;
		load_bad(doc, &e);
		assert_errors(&e, (const char *const *)want);
		cfg_errors_free(&e);
		for (size_t j = 0; j < n; j++)
			free(want[j]);
		free(doc);
	}
	/* A key that cannot be read (not a permission test: root reads all):
	 * a FIFO is refused without blocking the load. */
	sh("mkfifo %s/fifo.key", tlsdir);
	{
		struct cfg_errors e = {0};
		char *doc = tls_doc("      cert_file: %s/client.pem\n      key_file: %s/fifo.key\n");
		char *line = NULL;

		assert_true(asprintf(&line, "t.yaml:7:17: pools.p.tls.key_file: expected a readable file (not a regular "
		                            "file), got \"%s/fifo.key\"", tlsdir) >= 0);
		load_bad(doc, &e);
		assert_has_error(&e, line);
		cfg_errors_free(&e);
		free(line);
		free(doc);
	}
	tls_files_remove();
}

/* The digest follows the files' contents: a reload that only replaces a
 * CA file (or a file of ca_path, or the client key) is a change. */
static void test_tls_digest_follows_files(void **state)
{
	struct wp_config *a, *b, *c, *d;
	char *doc;

	(void)state;
	tls_files_make();
	sh("cp %s/ca.pem %s/trust.pem && cp %s/client.key %s/mine.key", tlsdir, tlsdir, tlsdir, tlsdir);
	doc = tls_doc("      ca_file: %s/trust.pem\n      ca_path: %s/certs\n"
	              "      cert_file: %s/client.pem\n      key_file: %s/mine.key\n");
	a = load_ok(doc);
	b = load_ok(doc);
	assert_memory_equal(a->pools[0].tls.digest, b->pools[0].tls.digest, 32);
	assert_int_equal(cfg_pool_diff(&a->pools[0], &b->pools[0], NULL), CFG_RELOAD_SAME);

	sh("cp %s/other.pem %s/trust.pem", tlsdir, tlsdir); /* a new CA under the same name */
	c = load_ok(doc);
	assert_memory_not_equal(a->pools[0].tls.digest, c->pools[0].tls.digest, 32);
	assert_int_equal(cfg_pool_diff(&a->pools[0], &c->pools[0], NULL), CFG_RELOAD_IN_PLACE);
	assert_int_equal(cfg_pool_diff(&c->pools[0], &a->pools[0], NULL), CFG_RELOAD_IN_PLACE);

	sh("cp %s/other.pem %s/certs/extra.pem", tlsdir, tlsdir); /* one more file in ca_path */
	d = load_ok(doc);
	assert_memory_not_equal(c->pools[0].tls.digest, d->pools[0].tls.digest, 32);
	assert_int_equal(cfg_pool_diff(&c->pools[0], &d->pools[0], NULL), CFG_RELOAD_IN_PLACE);
	cfg_free(c);

	/* The key rewritten with the same bytes: the same digest. */
	sh("cp %s/client.key %s/mine.key", tlsdir, tlsdir);
	c = load_ok(doc);
	assert_memory_equal(c->pools[0].tls.digest, d->pools[0].tls.digest, 32);
	cfg_free(c);
	cfg_free(a);
	cfg_free(b);
	cfg_free(d);
	free(doc);
	tls_files_remove();
}

/* reuse: under defaults: applies to every pool, as a whole block (issue
 * 13 left it silently ignored); handoff: there is an error (a table case). */
static void test_reuse_from_defaults(void **state)
{
	struct wp_config *cfg;
	const struct cfg_pool *p, *q, *r;

	(void)state;
	cfg = load_ok("defaults:\n  reuse: {reset_send: 'R\\r\\n', reset_expect: '+OK\\r\\n', reset_timeout: 2s}\n"
	              HEAD "  q:\n    listen: /tmp/wp-test/q.sock\n    backends: 127.0.0.1:1\n    reuse: true\n"
	              "  r:\n    listen: /tmp/wp-test/r.sock\n    backends: 127.0.0.1:1\n    reuse: false\n");
	p = &cfg->pools[0], q = &cfg->pools[1], r = &cfg->pools[2];
	assert_true(p->reuse.enabled);
	assert_bytes(p->reuse.reset_send, p->reuse.reset_send_len, "R\r\n", 3);
	assert_bytes(p->reuse.reset_expect, p->reuse.reset_expect_len, "+OK\r\n", 5);
	assert_int_equal(p->reuse.reset_timeout_ms, 2000);
	assert_true(q->reuse.enabled); /* its own block replaces the one of defaults: */
	assert_null(q->reuse.reset_send);
	assert_int_equal(q->reuse.reset_timeout_ms, 100);
	assert_false(r->reuse.enabled);
	cfg_free(cfg);
}

/* ------------------------------------------------------------------ */
/* Errors that need generated documents or files                       */

/* ------------------------------------------------------------------ */
/* Backends by name and dns: (issue 15)                                */

static void assert_dns_builtin(const struct cfg_dns *d)
{
	assert_int_equal(d->refresh_ms, 5000);
	assert_false(d->respect_ttl);
	assert_int_equal(d->min_ttl_ms, 1000);
	assert_int_equal(d->max_ttl_ms, 300000);
	assert_int_equal(d->timeout_ms, 2000);
	assert_int_equal(d->tries, 3);
	assert_int_equal(d->hold_ms, 300000);
	assert_int_equal(d->family, CFG_DNS_ANY);
	assert_int_equal(d->mode, CFG_DNS_ALL);
	assert_null(d->servers);
	assert_int_equal(d->n_servers, 0);
}

static void assert_servers(const struct cfg_dns *d, const char *const *want)
{
	size_t n = 0;

	while (want[n])
		n++;
	assert_int_equal(d->n_servers, n);
	for (size_t i = 0; i < n; i++)
		assert_string_equal(d->servers[i], want[i]);
}

/* A name that does not resolve loads (it used to fail the load): the
 * daemon resolves it, in its loop. IP literals keep their address. */
static void test_backend_name_not_resolved_at_load(void **state)
{
	struct wp_config *cfg;
	const struct cfg_backend *b;

	(void)state;
	cfg = load_ok("pools:\n  p:\n    listen: /tmp/a\n    backends:\n      - 127.0.0.1:1\n"
	              "      - nonexistent.invalid:6379\n      - \"[::1]:1\"\n      - db-1.internal.:5432\n"
	              "      - _pg._tcp.example:5432\n");
	assert_int_equal(cfg->pools[0].n_backends, 5);
	b = &cfg->pools[0].backends[1];
	assert_string_equal(b->name, "nonexistent.invalid:6379");
	assert_string_equal(b->host, "nonexistent.invalid");
	assert_true(b->is_name);
	assert_int_equal(b->port, 6379);
	assert_int_equal(b->addrlen, 0);
	assert_int_equal(b->pos.line, 6);
	assert_int_equal(b->pos.col, 9);
	assert_dns_builtin(&b->dns);
	assert_backend(&cfg->pools[0].backends[0], "127.0.0.1:1", "127.0.0.1:1");
	assert_false(cfg->pools[0].backends[0].is_name);
	assert_backend(&cfg->pools[0].backends[2], "[::1]:1", "[::1]:1");
	assert_false(cfg->pools[0].backends[2].is_name);
	assert_int_equal(cfg->pools[0].backends[2].port, 1);
	assert_true(cfg->pools[0].backends[3].is_name);
	assert_string_equal(cfg->pools[0].backends[3].host, "db-1.internal.");
	assert_true(cfg->pools[0].backends[4].is_name);
	assert_dns_builtin(&cfg->pools[0].dns);
	cfg_free(cfg);
}

/* dns: merged key by key: a backend's own over its pool's over defaults:
 * over the built-in values; servers: [] switches a list off again. */
static void test_dns_merge(void **state)
{
	struct wp_config *cfg;
	const struct cfg_pool *p, *q, *r;
	const struct cfg_dns *d;

	(void)state;
	cfg = load_ok("defaults:\n"
	              "  dns:\n"
	              "    refresh: 10s\n"
	              "    tries: 5\n"
	              "    servers: [127.0.0.1:5353]\n"
	              "pools:\n"
	              "  p:\n"
	              "    listen: /tmp/wp-test/p\n"
	              "    dns: {refresh: 2s, family: ipv4, respect_ttl: true, min_ttl: 200ms, max_ttl: 1h}\n"
	              "    backends:\n"
	              "      - db.test:5432\n"
	              "      - address: db2.test:5432\n"
	              "        dns:\n"
	              "          refresh: 500ms\n"
	              "          mode: first\n"
	              "          hold: 0\n"
	              "          timeout: 10ms\n"
	              "          servers: [\"::1\", \"[::1]:5300\", 10.0.0.1, \"[0:0::2]:53\", \"10.0.0.2:1\"]\n"
	              "      - {address: 127.0.0.1:1, dns: {family: ipv6}}\n"
	              "  q:\n"
	              "    listen: /tmp/wp-test/q\n"
	              "    backends: cache.test:6379\n"
	              "  r:\n"
	              "    listen: /tmp/wp-test/r\n"
	              "    dns: {servers: [], hold: 24h, timeout: 1m, tries: 10, refresh: 100ms}\n"
	              "    backends: [{address: x.test:1, dns: {servers: \"192.0.2.1\", family: any}}]\n");
	p = &cfg->pools[0], q = &cfg->pools[1], r = &cfg->pools[2];

	d = &p->dns; /* the pool's own, over defaults: */
	assert_int_equal(d->refresh_ms, 2000);
	assert_int_equal(d->tries, 5);
	assert_int_equal(d->family, CFG_DNS_IPV4);
	assert_true(d->respect_ttl);
	assert_int_equal(d->min_ttl_ms, 200);
	assert_int_equal(d->max_ttl_ms, 3600000);
	assert_servers(d, (const char *[]){"127.0.0.1:5353", NULL});

	d = &p->backends[0].dns; /* no dns: of its own: the pool's */
	assert_int_equal(d->refresh_ms, 2000);
	assert_int_equal(d->tries, 5);
	assert_int_equal(d->family, CFG_DNS_IPV4);
	assert_int_equal(d->mode, CFG_DNS_ALL);
	assert_servers(d, (const char *[]){"127.0.0.1:5353", NULL});
	assert_ptr_not_equal(d->servers, p->dns.servers); /* a copy of its own */

	d = &p->backends[1].dns; /* its own keys over the pool's */
	assert_true(p->backends[1].is_name);
	assert_int_equal(d->refresh_ms, 500);
	assert_int_equal(d->mode, CFG_DNS_FIRST);
	assert_int_equal(d->hold_ms, 0);
	assert_int_equal(d->timeout_ms, 10);
	assert_int_equal(d->family, CFG_DNS_IPV4); /* the pool's */
	assert_int_equal(d->tries, 5);             /* defaults:' */
	assert_true(d->respect_ttl);
	assert_int_equal(d->max_ttl_ms, 3600000);
	/* Written back as ip:port / [v6]:port, the port always given, the address in its shortest form. */
	assert_servers(d, (const char *[]){"[::1]:53", "[::1]:5300", "10.0.0.1:53", "[::2]:53", "10.0.0.2:1", NULL});

	d = &p->backends[2].dns; /* an IP literal may carry dns: (unused) */
	assert_false(p->backends[2].is_name);
	assert_int_equal(d->family, CFG_DNS_IPV6);

	d = &q->backends[0].dns; /* defaults: over the built-in values */
	assert_int_equal(d->refresh_ms, 10000);
	assert_int_equal(d->tries, 5);
	assert_int_equal(d->min_ttl_ms, 1000);
	assert_int_equal(d->hold_ms, 300000);
	assert_int_equal(d->family, CFG_DNS_ANY);
	assert_servers(d, (const char *[]){"127.0.0.1:5353", NULL});
	assert_int_equal(q->dns.refresh_ms, 10000);

	assert_servers(&r->dns, (const char *[]){NULL}); /* servers: [] replaces defaults:' list */
	assert_int_equal(r->dns.hold_ms, 86400000);
	assert_int_equal(r->dns.timeout_ms, 60000);
	assert_int_equal(r->dns.tries, 10);
	assert_int_equal(r->dns.refresh_ms, 100);
	d = &r->backends[0].dns; /* one server, written as a scalar */
	assert_servers(d, (const char *[]){"192.0.2.1:53", NULL});
	assert_int_equal(d->hold_ms, 86400000);
	cfg_free(cfg);
}

/* The built-in values, for a pool and each of its backends. */
static void test_dns_builtin(void **state)
{
	struct wp_config *cfg;

	(void)state;
	cfg = load_ok("pools:\n  p:\n    listen: /tmp/a\n    dns:\n    backends: [db.test:1, {address: e.test:2, dns: {}}]\n");
	assert_dns_builtin(&cfg->pools[0].dns);
	assert_dns_builtin(&cfg->pools[0].backends[0].dns);
	assert_dns_builtin(&cfg->pools[0].backends[1].dns);
	cfg_free(cfg);
}

/*
 * --check-config --resolve: localhost resolves (/etc/hosts, as c-ares reads
 * it), an IP literal is not looked up, and a name asked of a server that
 * refuses (a closed UDP port on loopback) is one error at its line:col,
 * within its timeout x tries.
 */
static void test_resolve_names(void **state)
{
	struct wp_config *cfg;
	struct cfg_errors e = {0};
	const char *msg;

	(void)state;
	cfg = load_ok("pools:\n  p:\n    listen: /tmp/a\n    backends:\n      - localhost:6379\n"
	              "      - 127.0.0.1:1\n"
	              "      - {address: nosuch.test:1, dns: {servers: [\"127.0.0.1:1\"], timeout: 200ms, tries: 1}}\n"
	              "  q:\n    listen: /tmp/b\n    backends: [localhost:1]\n    dns: {family: ipv4}\n");
	assert_int_equal(cfg_resolve_names(cfg, &e), -1);
	if (e.n != 1)
		dump_errors(&e);
	assert_int_equal(e.n, 1);
	msg = e.msg[0];
	if (strncmp(msg, "t.yaml:7:19: pools.p.backends[2]: nosuch.test:1: does not resolve: ", 67) != 0)
		fail_msg("unexpected error line: %s", msg);
	cfg_errors_free(&e);
	cfg_free(cfg);

	cfg = load_ok("pools:\n  p:\n    listen: /tmp/a\n    backends: [localhost:6379, 127.0.0.1:1]\n");
	assert_int_equal(cfg_resolve_names(cfg, &e), 0);
	assert_int_equal(e.n, 0);
	assert_int_equal(cfg_resolve_names(cfg, NULL), 0);
	cfg_free(cfg);
}

static void test_socket_path_length(void **state)
{
	char path[200], yaml[512], want[512];
	size_t max = sizeof(((struct sockaddr_un *)0)->sun_path) - 1; /* 107 */
	struct wp_config *cfg;
	struct cfg_errors e = {0};

	(void)state;
	memset(path, 'a', sizeof path);
	path[0] = '/';
	path[max] = '\0';
	snprintf(yaml, sizeof yaml, "pools:\n  p:\n    listen: %s\n    backends: 127.0.0.1:1\n", path);
	cfg = load_ok(yaml);
	assert_int_equal(strlen(cfg->pools[0].listen[0].path), max);
	cfg_free(cfg);

	path[max] = 'a';
	path[max + 1] = '\0';
	snprintf(yaml, sizeof yaml, "pools:\n  p:\n    listen: %s\n    backends: 127.0.0.1:1\n", path);
	load_bad(yaml, &e);
	/* Long values are quoted up to 60 bytes, then "...". */
	snprintf(want, sizeof want,
	         "t.yaml:3:13: pools.p.listen: expected a socket path of at most %zu bytes, got \"%.60s\"...",
	         max, path);
	assert_errors(&e, (const char *[]){want, NULL});
	cfg_errors_free(&e);
}

static void test_too_many_pools(void **state)
{
	struct sbuf b = {0};
	struct wp_config *cfg;
	struct cfg_errors e = {0};

	(void)state;
	sb_add(&b, "pools:\n");
	for (int i = 0; i < CFG_MAX_POOLS; i++)
		sb_add(&b, "  p%d: {listen: /tmp/wp-test/%d, backends: 127.0.0.1:1}\n", i, i);
	cfg = load_ok(b.s);
	assert_int_equal(cfg->n_pools, CFG_MAX_POOLS);
	cfg_free(cfg);

	sb_add(&b, "  extra: {listen: /tmp/wp-test/extra, backends: 127.0.0.1:1}\n");
	load_bad(b.s, &e);
	assert_errors(&e, (const char *[]){"t.yaml:2:3: pools: expected at most 1024 pools, got 1025", NULL});
	cfg_errors_free(&e);
	free(b.s);
}

static void test_too_many_backends(void **state)
{
	struct sbuf b = {0};
	struct wp_config *cfg;
	struct cfg_errors e = {0};

	(void)state;
	sb_add(&b, "pools:\n  p:\n    listen: /tmp/a\n    backends:\n");
	for (int i = 0; i < CFG_MAX_BACKENDS; i++)
		sb_add(&b, "      - 127.0.0.1:%d\n", i + 1);
	cfg = load_ok(b.s);
	assert_int_equal(cfg->pools[0].n_backends, CFG_MAX_BACKENDS);
	assert_int_equal(port_of(&cfg->pools[0].backends[255]), 256);
	cfg_free(cfg);

	sb_add(&b, "      - 127.0.0.1:9999\n");
	load_bad(b.s, &e);
	assert_errors(&e, (const char *[]){
	                      "t.yaml:5:7: pools.p.backends: expected at most 256 backends, got 257", NULL});
	cfg_errors_free(&e);
	free(b.s);
}

static void test_too_many_listen(void **state)
{
	struct sbuf b = {0};
	struct wp_config *cfg;
	struct cfg_errors e = {0};

	(void)state;
	sb_add(&b, "pools:\n  p:\n    backends: 127.0.0.1:1\n    listen:\n");
	for (int i = 0; i < CFG_MAX_LISTEN; i++)
		sb_add(&b, "      - /tmp/wp-test/l%d\n", i);
	cfg = load_ok(b.s);
	assert_int_equal(cfg->pools[0].n_listen, CFG_MAX_LISTEN);
	cfg_free(cfg);

	sb_add(&b, "      - /tmp/wp-test/l99\n");
	load_bad(b.s, &e);
	assert_errors(&e, (const char *[]){
	                      "t.yaml:5:7: pools.p.listen: expected at most 16 socket paths, got 17", NULL});
	cfg_errors_free(&e);
	free(b.s);
}

static void test_errors_truncated(void **state)
{
	struct sbuf b = {0};
	struct cfg_errors e = {0};

	(void)state;
	sb_add(&b, HEAD);
	for (int i = 0; i < CFG_MAX_ERRORS + 50; i++)
		sb_add(&b, "k%d: 1\n", i);
	load_bad(b.s, &e);
	assert_int_equal(e.n, CFG_MAX_ERRORS);
	assert_int_equal(e.truncated, 50);
	assert_string_equal(e.msg[0], "t.yaml:5:1: k0: unknown key, expected one of daemon, defaults, pools");
	assert_string_equal(e.msg[CFG_MAX_ERRORS - 1],
	                    "t.yaml:104:1: k99: unknown key, expected one of daemon, defaults, pools");
	cfg_errors_free(&e);
	free(b.s);
}

static void test_buffer_too_large(void **state)
{
	size_t len = CFG_MAX_FILE_SIZE + 1;
	char *big = malloc(len);
	struct cfg_errors e = {0};

	(void)state;
	assert_non_null(big);
	memset(big, '#', len);
	load_bad_len(big, len, &e);
	assert_errors(&e, (const char *[]){"t.yaml: file too large, expected at most 1048576 bytes", NULL});
	cfg_errors_free(&e);
	free(big);
}

static void tmp_path(char *out, size_t sz, const char *name)
{
	snprintf(out, sz, "%s/%s", tmpdir, name);
}

static void test_file_limits(void **state)
{
	char path[128], want[256];
	size_t len = CFG_MAX_FILE_SIZE;
	char *data = malloc(len + 1);
	struct wp_config *cfg = NULL;
	struct cfg_errors e = {0};

	(void)state;
	assert_non_null(data);
	/* Exactly CFG_MAX_FILE_SIZE bytes: a valid config padded with comment lines. */
	memset(data, '#', len);
	memcpy(data, HEAD, strlen(HEAD));
	for (size_t i = strlen(HEAD) + 79; i < len; i += 80)
		data[i] = '\n';
	data[len - 1] = '\n';
	tmp_path(path, sizeof path, "max.yaml");
	write_file(path, data, len);
	assert_int_equal(cfg_load_file(path, &cfg, &e), 0);
	assert_int_equal(cfg->n_pools, 1);
	assert_string_equal(cfg->path, path);
	cfg_free(cfg);
	assert_int_equal(unlink(path), 0);

	/* One byte more. */
	data[len] = '\n';
	tmp_path(path, sizeof path, "big.yaml");
	write_file(path, data, len + 1);
	assert_int_equal(cfg_load_file(path, &cfg, &e), -1);
	assert_null(cfg);
	snprintf(want, sizeof want, "%s: file too large, expected at most 1048576 bytes", path);
	assert_errors(&e, (const char *[]){want, NULL});
	cfg_errors_free(&e);
	assert_int_equal(unlink(path), 0);
	free(data);
}

static void test_file_errors(void **state)
{
	char path[128], want[256];
	struct wp_config *cfg = NULL;
	struct cfg_errors e = {0};

	(void)state;
	tmp_path(path, sizeof path, "missing.yaml");
	assert_int_equal(cfg_load_file(path, &cfg, &e), -1);
	snprintf(want, sizeof want, "%s: cannot open: No such file or directory", path);
	assert_errors(&e, (const char *[]){want, NULL});
	cfg_errors_free(&e);

	assert_int_equal(cfg_load_file(tmpdir, &cfg, &e), -1);
	snprintf(want, sizeof want, "%s: cannot read: Is a directory", tmpdir);
	assert_errors(&e, (const char *[]){want, NULL});
	cfg_errors_free(&e);

	tmp_path(path, sizeof path, "empty.yaml");
	write_file(path, "", 0);
	assert_int_equal(cfg_load_file(path, &cfg, &e), -1);
	snprintf(want, sizeof want, "%s:1:1: expected a mapping with a pools: key, got an empty document",
	         path);
	assert_errors(&e, (const char *[]){want, NULL});
	cfg_errors_free(&e);
	assert_int_equal(unlink(path), 0);

	/* Errors from a file carry its name and positions like a buffer's. */
	tmp_path(path, sizeof path, "bad.yaml");
	write_file(path, HEAD "    min_idle: many\n", strlen(HEAD "    min_idle: many\n"));
	assert_int_equal(cfg_load_file(path, &cfg, &e), -1);
	snprintf(want, sizeof want, "%s:5:15: pools.p.min_idle: expected an integer >= 0, got \"many\"",
	         path);
	assert_errors(&e, (const char *[]){want, NULL});
	cfg_errors_free(&e);
	assert_int_equal(unlink(path), 0);
	assert_null(cfg);
}

static void test_errors_sorted_across_phases(void **state)
{
	struct cfg_errors e = {0};

	(void)state;
	/* The duplicate socket (phase 3) sits between two phase-2 errors. */
	load_bad("pools:\n"
	         "  p: {listen: /tmp/a, backends: 127.0.0.1:1, min_idle: x}\n"
	         "  q: {listen: /tmp/a, backends: 127.0.0.1:1}\n"
	         "  r: {listen: /tmp/r, backends: 127.0.0.1:1, min_idle: y}\n",
	         &e);
	assert_int_equal(e.n, 3);
	assert_has_error(&e, "t.yaml:2:56: pools.p.min_idle: expected an integer >= 0, got \"x\"");
	assert_string_equal(e.msg[1],
	                    "t.yaml:3:15: pools.q.listen: expected a socket path no other listener uses "
	                    "(pool p has it at line 2), got \"/tmp/a\"");
	assert_has_error(&e, "t.yaml:4:56: pools.r.min_idle: expected an integer >= 0, got \"y\"");
	cfg_errors_free(&e);
}

/* ------------------------------------------------------------------ */

static int group_setup(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof tmpdir, "/tmp/wp-test-config.XXXXXX");
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int group_teardown(void **state)
{
	(void)state;
	return rmdir(tmpdir);
}

/* ------------------------------------------------------------------ */
/* Reload's diff (cfg_pool_diff, cfg_daemon_diff): each key class        */

#define LISTEN_P   "    listen: /tmp/wp-test/p.sock\n"
#define BACKEND_P  "    backends: 127.0.0.1:6379\n"
#define POOL_P     "pools:\n  p:\n"

struct diff_case {
	const char *name;
	const char *old, *cur; /* whole documents with one pool p */
	enum cfg_reload want;
	bool health;           /* the health checks must restart */
};

static const struct diff_case diff_cases[] = {
    {"unchanged", HEAD, HEAD, CFG_RELOAD_SAME, false},
    {"unchanged with every block", HEAD "    reuse: {reset_send: a, reset_expect: b}\n    allow: {uids: [1, 2]}\n"
     "    health_check: {type: send_expect, send: x, expect_regex: '^y'}\n",
     HEAD "    reuse: {reset_send: a, reset_expect: b}\n    allow: {uids: [1, 2]}\n"
     "    health_check: {type: send_expect, send: x, expect_regex: '^y'}\n", CFG_RELOAD_SAME, false},
    {"min_idle", HEAD, HEAD "    min_idle: 3\n", CFG_RELOAD_IN_PLACE, false},
    {"reuse on", HEAD, HEAD "    reuse: true\n", CFG_RELOAD_IN_PLACE, false},
    {"reuse reset", HEAD "    reuse: true\n", HEAD "    reuse: {reset_send: a, reset_expect: b}\n",
     CFG_RELOAD_IN_PLACE, false},
    {"reuse reset_timeout", HEAD "    reuse: {reset_timeout: 1s}\n", HEAD "    reuse: {reset_timeout: 2s}\n",
     CFG_RELOAD_IN_PLACE, false},
    {"client_idle_timeout", HEAD, HEAD "    client_idle_timeout: 5s\n", CFG_RELOAD_IN_PLACE, false},
    {"server_idle_timeout", HEAD, HEAD "    server_idle_timeout: 5s\n", CFG_RELOAD_IN_PLACE, false},
    {"backoff jitter", HEAD, HEAD "    backoff: {jitter: 0.5}\n", CFG_RELOAD_IN_PLACE, false},
    {"keepalive off", HEAD, HEAD "    keepalive: false\n", CFG_RELOAD_IN_PLACE, false},
    {"balance", HEAD, HEAD "    balance: first\n", CFG_RELOAD_IN_PLACE, false},
    {"allow", HEAD, HEAD "    allow: {uids: 0}\n", CFG_RELOAD_IN_PLACE, false},
    {"allow ids", HEAD "    allow: {uids: 0}\n", HEAD "    allow: {uids: [0, 1]}\n", CFG_RELOAD_IN_PLACE, false},
    {"health interval", HEAD "    health_check: {interval: 1s}\n", HEAD "    health_check: {interval: 2s}\n",
     CFG_RELOAD_IN_PLACE, true},
    {"health on", HEAD, HEAD "    health_check: {type: redis}\n", CFG_RELOAD_IN_PLACE, true},
    {"health expect", HEAD "    health_check: {type: send_expect, send: a, expect: b}\n",
     HEAD "    health_check: {type: send_expect, send: a, expect_hex: '63'}\n", CFG_RELOAD_IN_PLACE, true},
    {"health regex", HEAD "    health_check: {type: send_expect, send: a, expect_regex: b}\n",
     HEAD "    health_check: {type: send_expect, send: a, expect_regex: c}\n", CFG_RELOAD_IN_PLACE, true},
    {"backend weight", HEAD, POOL_P LISTEN_P "    backends: [{address: 127.0.0.1:6379, weight: 2}]\n",
     CFG_RELOAD_IN_PLACE, false},
    {"backend backup", POOL_P LISTEN_P "    backends: [127.0.0.1:6379, 127.0.0.1:6380]\n",
     POOL_P LISTEN_P "    backends: [127.0.0.1:6379, {address: 127.0.0.1:6380, backup: true}]\n",
     CFG_RELOAD_IN_PLACE, false},
    {"listen item allow", HEAD, POOL_P "    listen: [{path: /tmp/wp-test/p.sock, allow: {uids: 0}}]\n" BACKEND_P,
     CFG_RELOAD_IN_PLACE, false},
    {"listen path", HEAD, POOL_P "    listen: /tmp/wp-test/q.sock\n" BACKEND_P, CFG_RELOAD_REPLACE, false},
    {"listen mode", HEAD, POOL_P "    listen: [{path: /tmp/wp-test/p.sock, mode: '0600'}]\n" BACKEND_P,
     CFG_RELOAD_REPLACE, false},
    {"listen added", HEAD, POOL_P "    listen: [/tmp/wp-test/p.sock, /tmp/wp-test/q.sock]\n" BACKEND_P,
     CFG_RELOAD_REPLACE, false},
    {"backend address", HEAD, POOL_P LISTEN_P "    backends: 127.0.0.1:6380\n", CFG_RELOAD_REPLACE, false},
    {"backend added", HEAD, POOL_P LISTEN_P "    backends: [127.0.0.1:6379, 127.0.0.1:6380]\n",
     CFG_RELOAD_REPLACE, false},
    {"handoff added", HEAD, HEAD "    handoff: {listen: /tmp/wp-test/h.sock}\n", CFG_RELOAD_REPLACE, false},
    {"handoff mode", HEAD "    handoff: {listen: /tmp/wp-test/h.sock}\n",
     HEAD "    handoff: {listen: /tmp/wp-test/h.sock, mode: '0600'}\n", CFG_RELOAD_REPLACE, false},
    {"replace beats in place", HEAD, POOL_P LISTEN_P "    backends: 127.0.0.1:6380\n    min_idle: 3\n",
     CFG_RELOAD_REPLACE, false},
    {"tls on", HEAD, HEAD "    tls: true\n", CFG_RELOAD_IN_PLACE, false},
    {"tls verify", HEAD "    tls: true\n", HEAD "    tls: {verify: false}\n", CFG_RELOAD_IN_PLACE, false},
    {"tls alpn", HEAD "    tls: {alpn: [h2]}\n", HEAD "    tls: {alpn: [h2, http/1.1]}\n", CFG_RELOAD_IN_PLACE,
     false},
    {"tls server_name", HEAD "    tls: true\n", HEAD "    tls: {server_name: x}\n", CFG_RELOAD_IN_PLACE, false},
    {"tls unchanged", HEAD "    tls: {alpn: h2, ciphersuites: TLS_AES_128_GCM_SHA256}\n",
     HEAD "    tls: {alpn: h2, ciphersuites: TLS_AES_128_GCM_SHA256}\n", CFG_RELOAD_SAME, false},
    {"reuse from defaults", HEAD, "defaults: {reuse: true}\n" HEAD, CFG_RELOAD_IN_PLACE, false},
    /* dns: (issue 15): every key in place, a pool's and a backend's own */
    {"dns refresh", HEAD, HEAD "    dns: {refresh: 1s}\n", CFG_RELOAD_IN_PLACE, false},
    {"dns from defaults", HEAD, "defaults: {dns: {hold: 0}}\n" HEAD, CFG_RELOAD_IN_PLACE, false},
    {"dns servers", HEAD "    dns: {servers: [127.0.0.1:53]}\n", HEAD "    dns: {servers: [127.0.0.1:54]}\n",
     CFG_RELOAD_IN_PLACE, false},
    {"dns servers added", HEAD "    dns: {servers: [127.0.0.1]}\n", HEAD "    dns: {servers: [127.0.0.1, '::1']}\n",
     CFG_RELOAD_IN_PLACE, false},
    {"dns servers spelled otherwise", HEAD "    dns: {servers: ['127.0.0.1', '::1']}\n",
     HEAD "    dns: {servers: ['127.0.0.1:53', '[0::1]:53']}\n", CFG_RELOAD_SAME, false},
    {"backend dns", POOL_P LISTEN_P "    backends: db.test:1\n",
     POOL_P LISTEN_P "    backends: [{address: db.test:1, dns: {mode: first}}]\n", CFG_RELOAD_IN_PLACE, false},
    {"backend dns servers", POOL_P LISTEN_P "    backends: [{address: db.test:1, dns: {servers: 10.0.0.1}}]\n",
     POOL_P LISTEN_P "    backends: [{address: db.test:1, dns: {servers: 10.0.0.2}}]\n", CFG_RELOAD_IN_PLACE, false},
    {"backend name unchanged", POOL_P LISTEN_P "    backends: db.test:1\n", POOL_P LISTEN_P "    backends: db.test:1\n",
     CFG_RELOAD_SAME, false},
    {"backend name", POOL_P LISTEN_P "    backends: db.test:1\n", POOL_P LISTEN_P "    backends: db2.test:1\n",
     CFG_RELOAD_REPLACE, false},
};

static void test_pool_diff(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof diff_cases / sizeof diff_cases[0]; i++) {
		const struct diff_case *c = &diff_cases[i];
		struct wp_config *a = load_ok(c->old), *b = load_ok(c->cur);
		bool health = !c->health;

		print_message("  case: %s\n", c->name);
		assert_int_equal(cfg_pool_diff(&a->pools[0], &b->pools[0], &health), c->want);
		if (c->want == CFG_RELOAD_IN_PLACE)
			assert_int_equal(health, c->health);
		/* Symmetric: the way back costs the same. */
		assert_int_equal(cfg_pool_diff(&b->pools[0], &a->pools[0], NULL), c->want);
		cfg_free(a);
		cfg_free(b);
	}
}

static void test_daemon_diff(void **state)
{
	static const struct {
		const char *old, *cur;
		enum cfg_reload want;
	} cases[] = {
	    {"", "", CFG_RELOAD_SAME},
	    {"", "daemon: {log_level: debug}\n", CFG_RELOAD_IN_PLACE},
	    {"", "daemon: {shutdown_timeout: 5s}\n", CFG_RELOAD_IN_PLACE},
	    {"", "daemon: {admin_socket: /tmp/wp-test/a.sock}\n", CFG_RELOAD_RESTART},
	    {"", "daemon: {admin_socket: false}\n", CFG_RELOAD_RESTART},
	    {"", "daemon: {admin_socket_mode: '0660'}\n", CFG_RELOAD_RESTART},
	    {"", "daemon: {admin_socket_readonly: /tmp/wp-test/r.sock}\n", CFG_RELOAD_RESTART},
	    {"", "daemon: {metrics_listen: '127.0.0.1:9100', log_level: debug}\n", CFG_RELOAD_RESTART},
	};
	char a_doc[512], b_doc[512];

	(void)state;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		snprintf(a_doc, sizeof a_doc, "%s%s", cases[i].old, HEAD);
		snprintf(b_doc, sizeof b_doc, "%s%s", cases[i].cur, HEAD);
		struct wp_config *a = load_ok(a_doc), *b = load_ok(b_doc);
		assert_int_equal(cfg_daemon_diff(&a->daemon, &b->daemon), cases[i].want);
		cfg_free(a);
		cfg_free(b);
	}
}

/* --dump-schema is valid enough to parse: one object per key, and the
 * limits of config.h. */
static void test_dump_schema(void **state)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	(void)state;
	assert_non_null(f);
	assert_int_equal(cfg_dump_schema(f), 0);
	fclose(f);
	assert_non_null(strstr(text, "\"file_size\": 1048576"));
	assert_non_null(strstr(text, "{\"path\": \"client_idle_timeout\", \"type\": \"duration_or_0\", \"min\": 10, "
	                             "\"max\": 604800000, \"unit\": \"ms\", \"default\": 0, "
	                             "\"where\": [\"defaults\", \"pool\"], \"reload\": \"in_place\"}"));
	assert_non_null(strstr(text, "{\"path\": \"admin_socket\", \"type\": \"socket\", "
	                             "\"default\": \"/run/warmpool/admin.sock\", \"where\": [\"daemon\"], "
	                             "\"reload\": \"restart\"}"));
	assert_non_null(strstr(text, "{\"path\": \"listen[].path\", \"type\": \"socket\", \"default\": null, "
	                             "\"where\": [\"pool\"], \"reload\": \"replace\"}"));
	assert_non_null(strstr(text, "{\"path\": \"tls.ca_file\", \"type\": \"path\", \"max_bytes\": 4096, "
	                             "\"default\": null, \"where\": [\"defaults\", \"pool\"], \"reload\": \"in_place\"}"));
	assert_non_null(strstr(text, "{\"path\": \"tls.min_version\", \"type\": \"enum\", \"values\": [\"1.2\", "
	                             "\"1.3\"], \"default\": \"1.2\", \"where\": [\"defaults\", \"pool\"], "
	                             "\"reload\": \"in_place\"}"));
	assert_non_null(strstr(text, "{\"path\": \"dns.servers\", \"type\": \"servers\", \"max_items\": 8, "
	                             "\"default\": [], \"where\": [\"defaults\", \"pool\"], \"reload\": \"in_place\"}"));
	assert_non_null(strstr(text, "{\"path\": \"dns.hold\", \"type\": \"duration_or_0\", \"min\": 0, "
	                             "\"max\": 86400000, \"unit\": \"ms\", \"default\": 300000, "
	                             "\"where\": [\"defaults\", \"pool\"], \"reload\": \"in_place\"}"));
	assert_non_null(strstr(text, "{\"path\": \"dns.family\", \"type\": \"enum\", \"values\": [\"any\", "
	                             "\"ipv4\", \"ipv6\"], \"default\": \"any\", \"where\": [\"defaults\", \"pool\"], "
	                             "\"reload\": \"in_place\"}"));
	assert_non_null(strstr(text, "{\"path\": \"backends[].dns\", \"type\": \"dns\", \"default\": null, "
	                             "\"where\": [\"pool\"], \"reload\": \"in_place\"}"));
	free(text);
}

int main(void)
{
	static const struct CMUnitTest fixed[] = {
	    cmocka_unit_test(test_builtin_defaults),
	    cmocka_unit_test(test_daemon_admin_and_metrics),
	    cmocka_unit_test(test_reuse_and_handoff),
	    cmocka_unit_test(test_daemon_section),
	    cmocka_unit_test(test_empty_sections),
	    cmocka_unit_test(test_defaults_override_builtins),
	    cmocka_unit_test(test_pool_overrides_defaults),
	    cmocka_unit_test(test_listen_forms),
	    cmocka_unit_test(test_backend_forms),
	    cmocka_unit_test(test_durations),
	    cmocka_unit_test(test_numbers_at_limits),
	    cmocka_unit_test(test_pool_names),
	    cmocka_unit_test(test_sample_file),
	    cmocka_unit_test(test_demo_file),
	    cmocka_unit_test(test_free_accepts_null),
	    cmocka_unit_test(test_backend_name_not_resolved_at_load),
	    cmocka_unit_test(test_dns_merge),
	    cmocka_unit_test(test_dns_builtin),
	    cmocka_unit_test(test_resolve_names),
	    cmocka_unit_test(test_socket_path_length),
	    cmocka_unit_test(test_too_many_pools),
	    cmocka_unit_test(test_too_many_backends),
	    cmocka_unit_test(test_too_many_listen),
	    cmocka_unit_test(test_errors_truncated),
	    cmocka_unit_test(test_buffer_too_large),
	    cmocka_unit_test(test_file_limits),
	    cmocka_unit_test(test_file_errors),
	    cmocka_unit_test(test_errors_sorted_across_phases),
	    cmocka_unit_test(test_new_keys_in_pool),
	    cmocka_unit_test(test_new_keys_from_defaults),
	    cmocka_unit_test(test_health_block_type),
	    cmocka_unit_test(test_check_presets),
	    cmocka_unit_test(test_check_bytes),
	    cmocka_unit_test(test_check_bytes_nul_and_limits),
	    cmocka_unit_test(test_check_bytes_too_long),
	    cmocka_unit_test(test_check_bytes_inherited),
	    cmocka_unit_test(test_backend_map_forms),
	    cmocka_unit_test(test_keepalive_forms),
	    cmocka_unit_test(test_zero_durations),
	    cmocka_unit_test(test_allow_forms),
	    cmocka_unit_test(test_allow_names_resolved),
	    cmocka_unit_test(test_allow_merge),
	    cmocka_unit_test(test_allow_too_many),
	    cmocka_unit_test(test_pool_diff),
	    cmocka_unit_test(test_daemon_diff),
	    cmocka_unit_test(test_dump_schema),
	    cmocka_unit_test(test_tls_every_key),
	    cmocka_unit_test(test_tls_shorthand_and_hosts),
	    cmocka_unit_test(test_tls_defaults_merge),
	    cmocka_unit_test(test_tls_file_errors),
	    cmocka_unit_test(test_tls_digest_follows_files),
	    cmocka_unit_test(test_reuse_from_defaults),
	};
	size_t n_fixed = sizeof fixed / sizeof fixed[0];
	size_t n_cases = sizeof err_cases / sizeof err_cases[0];
	struct CMUnitTest *tests = calloc(n_fixed + n_cases, sizeof *tests);
	int rc;

	if (!tests)
		return 1;
	memcpy(tests, fixed, sizeof fixed);
	for (size_t i = 0; i < n_cases; i++) {
		tests[n_fixed + i] = (struct CMUnitTest){
		    .name = err_cases[i].name,
		    .test_func = run_err_case,
		    .initial_state = (void *)&err_cases[i],
		};
	}
	rc = _cmocka_run_group_tests("config", tests, n_fixed + n_cases, group_setup, group_teardown);
	free(tests);
	return rc;
}
