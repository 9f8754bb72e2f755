/*
 * tests/fuzz/fuzz_admin.c — libFuzzer target for the admin protocol
 * (daemon/admin.c, admin_exec): the input is what a client writes to the
 * admin socket, one command per line.
 *
 * A real engine is built once per process from a small config (two pools,
 * backups, weights, a health check, a handoff socket, reuse) with
 * engine_create(); nothing is bound and the loop never runs. Each line that
 * the socket would pass on (shorter than its 4096-byte limit) is given to
 * admin_exec() as an exact-size NUL-terminated copy, first as the read-only
 * socket would, then as the admin socket would. The engine keeps its state
 * across inputs (drained and disabled backends stay so), as a daemon would.
 * `reload` reads the config's path, which does not exist: it fails cleanly.
 *
 * Checks besides ASan/UBSan: an answer is whole lines, none of them empty (an
 * empty line ends an answer on the socket, so one inside would desynchronise
 * the client), within the socket's size cap; a read-only command changes no
 * backend state; an error answer is a single "error: " line (a failed reload
 * adds the config's error lines after it).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "buf.h"
#include "config.h"
#include "engine.h"
#include "log.h"

#define LINE_MAX_SOCKET 4096    /* CTL_LINE_MAX in admin.c: longer lines never reach admin_exec */
#define OUT_MAX         (16u << 20) /* CTL_OUT_MAX */
#define STATES_MAX      64

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char config_text[] =
    "daemon:\n"
    "  log_level: error\n"
    "  admin_socket: /nonexistent/warmpool-fuzz/admin.sock\n"
    "defaults:\n"
    "  connect_timeout: 100ms\n"
    "  health_check: {type: connect, interval: 1s}\n"
    "pools:\n"
    "  redis:\n"
    "    listen:\n"
    "      - /nonexistent/warmpool-fuzz/redis.sock\n"
    "      - {path: /nonexistent/warmpool-fuzz/redis2.sock, mode: \"0600\"}\n"
    "    handoff: {listen: /nonexistent/warmpool-fuzz/redis.handoff}\n"
    "    backends:\n"
    "      - 127.0.0.1:1\n"
    "      - {address: \"[::1]:2\", weight: 5}\n"
    "      - {address: 127.0.0.1:3, backup: true}\n"
    "    health_check: {type: redis}\n"
    "    reuse: {reset_send: 'RESET\\r\\n', reset_expect: '+OK\\r\\n'}\n"
    "    min_idle: 2\n"
    "    max_connections: 4\n"
    "  cache.v2:\n"
    "    listen: /nonexistent/warmpool-fuzz/cache.sock\n"
    "    backends: 127.0.0.1:4\n"
    "    balance: first\n"
    "    min_idle: 0\n"
    "    max_connections: 2\n"
    "    health_check: {type: none}\n";

static struct engine *eng;

static void fail(const char *what, const char *line, const struct wp_buf *out)
{
	fprintf(stderr, "fuzz_admin: contract broken: %s\ncommand: \"%s\"\nanswer (%zu bytes):\n%.*s\n", what,
	        line, out->len, (int)(out->len > 4096 ? 4096 : out->len), out->data ? out->data : "");
	abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	struct wp_config *cfg = NULL;
	struct cfg_errors errs = {0};
	log_init(-1); /* silent: the answers are what is checked */
	if (cfg_load_buffer("/nonexistent/warmpool-fuzz/warmpool.yaml", config_text, sizeof config_text - 1, &cfg,
	                    &errs) < 0) {
		for (size_t i = 0; i < errs.n; i++)
			fprintf(stderr, "%s\n", errs.msg[i]);
		abort();
	}
	cfg_errors_free(&errs);
	eng = engine_create(cfg); /* owns cfg now */
	if (!eng) {
		fprintf(stderr, "fuzz_admin: engine_create failed\n");
		abort();
	}
	return 0;
}

static size_t snapshot(int *states)
{
	size_t n = 0;
	for (size_t i = 0; i < eng->n_pools; i++)
		for (size_t j = 0; j < eng->pools[i]->n_backends && n < STATES_MAX; j++)
			states[n++] = (int)eng->pools[i]->backends[j]->state;
	return n;
}

static void check_answer(const char *line, const struct wp_buf *out)
{
	if (out->failed)
		return; /* the socket replaces it with "error: answer too large" */
	if (out->len > OUT_MAX)
		fail("answer beyond the cap", line, out);
	if (out->len == 0)
		return;
	if (out->data[out->len - 1] != '\n')
		fail("answer does not end with a newline", line, out);
	if (out->data[0] == '\n' || memmem(out->data, out->len, "\n\n", 2))
		fail("answer contains an empty line (ends the answer early on the socket)", line, out);
	if (memchr(out->data, '\0', out->len))
		fail("answer contains a NUL byte", line, out);
	/* One "error: " line, except that a failed reload lists the config's errors after it. */
	if (strncmp(out->data, "error: ", 7) == 0 && strncmp(out->data, "error: reload failed: ", 22) != 0 &&
	    memchr(out->data, '\n', out->len) != out->data + out->len - 1)
		fail("error answer longer than one line", line, out);
}

static void run_line(const uint8_t *p, size_t len)
{
	int before[STATES_MAX], after[STATES_MAX];
	struct wp_buf out;
	char *line = malloc(len + 1), *orig = malloc(len + 1);
	if (!line || !orig)
		abort();
	memcpy(orig, p, len);
	orig[len] = '\0';

	for (int readonly = 1; readonly >= 0; readonly--) {
		memcpy(line, orig, len + 1);
		size_t nb = snapshot(before);
		wp_buf_init(&out, OUT_MAX);
		admin_exec(eng, readonly, line, &out);
		check_answer(orig, &out);
		if (readonly) {
			size_t na = snapshot(after);
			if (na != nb || memcmp(before, after, nb * sizeof *before) != 0)
				fail("a read-only command changed a backend's state", orig, &out);
		}
		wp_buf_free(&out);
	}
	free(line);
	free(orig);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t start = 0;
	while (start < size) {
		const uint8_t *nl = memchr(data + start, '\n', size - start);
		size_t end = nl ? (size_t)(nl - data) : size;
		/* A line the socket would pass on: complete (or the last, cut by
		 * EOF, which the socket drops: give it anyway) and short enough. */
		if (end - start < LINE_MAX_SOCKET)
			run_line(data + start, end - start);
		start = end + 1;
	}
	return 0;
}
