/*
 * tools/warmpoolctl.c — the admin client: sends one command to warmpoold's
 * admin socket and prints the answer. It stands on lib/ alone (the socket
 * toolkit, buffers, the client library), never on config/ or daemon/.
 *
 *   warmpoolctl [-s SOCKET] [--json] [-T SECONDS] COMMAND [ARG...]
 *
 * Options may come anywhere on the line (`show pools --json`); the other
 * arguments are joined into one command line (see daemon/admin.c for the
 * protocol: an answer ends with an empty line; an error answer starts with
 * "error: ", or with --json is a JSON object {"error": ...}). With --json,
 * warmpoolctl's own errors (no daemon, no answer) are such an object too,
 * on stdout. Exit status: 0 success, 1 error answer, 2 usage error or the
 * daemon could not be reached or did not answer in time.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "buf.h"
#include "sock.h"
#include "version.h"
#include "warmpool.h"

#define EXIT_ERROR_ANSWER 1
#define EXIT_USAGE        2
#define LINE_MAX_BYTES    4096
#define ANSWER_MAX        (64u << 20)
/* The default wait for `upgrade`'s answer: longer than the daemon's own
 * limit for the new process to become ready (30 s, daemon/upgrade.c). */
#define UPGRADE_TIMEOUT 40.0

/* --json: errors go to stdout as {"error": "..."} instead of text on stderr,
 * so that a script's JSON parser always gets JSON. */
static int json_errors;

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fail(const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (!json_errors) {
		fprintf(stderr, "warmpoolctl: %s\n", msg);
		return;
	}
	struct wp_buf b;
	wp_buf_init(&b, sizeof msg * 8);
	wp_buf_add(&b, "{\"error\":\"", 10);
	wp_buf_json_str(&b, msg);
	wp_buf_add(&b, "\"}\n", 3);
	fwrite(b.data, 1, b.len, stdout);
	wp_buf_free(&b);
}

static void usage(FILE *f)
{
	fprintf(f, "usage: warmpoolctl [-s SOCKET] [--json] [-T SECONDS] COMMAND [ARG...]\n"
	           "\n"
	           "  -s, --socket PATH   admin socket (default %s)\n"
	           "      --json          machine-readable answers (show pools|backends|clients|stats)\n"
	           "                      and errors ({\"error\": ...})\n"
	           "  -T, --timeout SECS  give up after this long (default 10; upgrade: 40)\n"
	           "  -V, --version       print the version\n"
	           "  -h, --help          this text\n"
	           "Options may come before or after the command.\n"
	           "\n"
	           "commands: show pools | show backends [POOL] | show clients [POOL] | show stats |\n"
	           "          show metrics | drain POOL/BACKEND | disable POOL/BACKEND [--kill] |\n"
	           "          enable POOL/BACKEND | reload | upgrade [BINARY] | where POOL | connect POOL |\n"
	           "          version | help\n"
	           "\n"
	           "connect POOL bridges stdin/stdout to a connection from the pool (its handoff\n"
	           "socket when it has one, as libwarmpool's wp_checkout does).\n",
	           WARMPOOL_ADMIN_SOCKET);
}

/* Send one command line and read its answer (without the final empty line)
 * into ans. 0, or -1 after printing why. */
static int ask(const char *path, const struct wp_buf *line, int timeout_ms, struct wp_buf *ans)
{
	int rc = -1;
	long long deadline = sock_now_ms() + timeout_ms;
	/* A daemon whose admin backlog is full is waited for, up to the deadline. */
	int fd = sock_unix_connect(path, SOCK_STREAM, deadline);
	if (fd < 0) {
		fail("cannot connect to %s: %s", path, strerror(-fd));
		goto out;
	}
	for (size_t off = 0; off < line->len;) {
		if (sock_wait(fd, POLLOUT, deadline) < 0) {
			fail("%s: timed out sending the command", path);
			goto out;
		}
		ssize_t n = send(fd, line->data + off, line->len - off, MSG_NOSIGNAL);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (n < 0) {
			fail("%s: %s", path, strerror(errno));
			goto out;
		}
		off += (size_t)n;
	}
	/* Read until the empty line that ends the answer. */
	while (!(ans->len >= 2 && memcmp(ans->data + ans->len - 2, "\n\n", 2) == 0) &&
	       !(ans->len == 1 && ans->data[0] == '\n')) {
		char chunk[65536];
		int w = sock_wait(fd, POLLIN, deadline);
		if (w < 0) {
			fail("%s: %s", path, w == -ETIMEDOUT ? "no answer in time" : strerror(-w));
			goto out;
		}
		ssize_t n = recv(fd, chunk, sizeof chunk, 0);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (n <= 0) {
			fail("%s: connection closed before the answer ended", path);
			goto out;
		}
		wp_buf_add(ans, chunk, (size_t)n);
		if (ans->failed) {
			fail("answer larger than %u bytes", ANSWER_MAX);
			goto out;
		}
	}
	ans->len--; /* drop the terminating empty line */
	ans->data[ans->len] = '\0';
	rc = 0;
out:
	if (fd >= 0)
		close(fd);
	return rc;
}

/* Write all of buf to fd (blocking). 0 or -1. */
static int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* `connect POOL`: the answer to `where POOL` names the pool's sockets; take
 * a connection (the handoff socket when the pool has one) and bridge
 * stdin/stdout to it until both directions ended. */
static int connect_pool(const char *where, int timeout_ms)
{
	char path[256] = "";
	if (strncmp(where, "error: ", 7) == 0 || strncmp(where, "{\"error\":", 9) == 0) {
		fputs(where, stdout);
		return EXIT_ERROR_ANSWER;
	}
	if (sscanf(where, "handoff %255s", path) != 1 && sscanf(where, "listen %255s", path) != 1) {
		fail("the pool has no socket to connect to");
		return EXIT_ERROR_ANSWER;
	}
	struct wp_lease lease;
	int r = wp_checkout(path, timeout_ms, &lease);
	if (r < 0) {
		fail("%s: %s", path, wp_strerror(r));
		return EXIT_ERROR_ANSWER;
	}
	if (lease.greeting_len && write_all(1, lease.greeting, lease.greeting_len) < 0) {
		wp_release(&lease);
		return EXIT_ERROR_ANSWER;
	}
	int in_open = 1, rc = 0;
	for (;;) {
		struct pollfd p[2] = {{.fd = in_open ? 0 : -1, .events = POLLIN}, {.fd = lease.fd, .events = POLLIN}};
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			rc = EXIT_ERROR_ANSWER;
			break;
		}
		char buf[65536];
		if (p[0].revents) {
			ssize_t n = read(0, buf, sizeof buf);
			if (n > 0) {
				if (write_all(lease.fd, buf, (size_t)n) < 0) {
					rc = EXIT_ERROR_ANSWER;
					break;
				}
			} else if (n == 0 || errno != EINTR) {
				in_open = 0;
				shutdown(lease.fd, SHUT_WR);
			}
		}
		if (p[1].revents) {
			ssize_t n = read(lease.fd, buf, sizeof buf);
			if (n > 0 && write_all(1, buf, (size_t)n) == 0)
				continue;
			if (n < 0 && errno == EINTR)
				continue;
			rc = n < 0 ? EXIT_ERROR_ANSWER : 0;
			break;
		}
	}
	wp_release(&lease);
	return rc;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"socket", required_argument, NULL, 's'}, {"json", no_argument, NULL, 'j'},
	    {"timeout", required_argument, NULL, 'T'}, {"version", no_argument, NULL, 'V'},
	    {"help", no_argument, NULL, 'h'},         {"kill", no_argument, NULL, 'k'},
	    {NULL, 0, NULL, 0},
	};
	const char *path = WARMPOOL_ADMIN_SOCKET;
	double timeout = 10.0;
	int json = 0, kill = 0, timeout_set = 0, c;
	char *end;
	/* No "+": options may follow the command (getopt moves them before it). */
	while ((c = getopt_long(argc, argv, "s:T:Vh", opts, NULL)) != -1) {
		switch (c) {
		case 'k': /* the daemon's `disable ... --kill`: passed on as written */
			kill = 1;
			break;
		case 's':
			path = optarg;
			break;
		case 'j':
			json = json_errors = 1;
			break;
		case 'T':
			timeout = strtod(optarg, &end);
			timeout_set = 1;
			if (*end || !(timeout > 0)) {
				fail("--timeout: expected a number of seconds > 0");
				return EXIT_USAGE;
			}
			break;
		case 'V':
			printf("warmpoolctl %s\n", WARMPOOL_VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind == argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (!timeout_set && strcmp(argv[optind], "upgrade") == 0)
		timeout = UPGRADE_TIMEOUT;

	/* The command line: the arguments joined by spaces (`connect POOL`
	 * asks `where POOL` first). */
	struct wp_buf line;
	wp_buf_init(&line, LINE_MAX_BYTES);
	if (strcmp(argv[optind], "connect") == 0) {
		if (argc - optind != 2) {
			fail("usage: connect POOL");
			wp_buf_free(&line);
			return EXIT_USAGE;
		}
		wp_buf_add(&line, "where", 5);
	}
	for (int i = optind + (strcmp(argv[optind], "connect") == 0); i < argc; i++) {
		if (strpbrk(argv[i], " \t\r\n") || !*argv[i]) {
			fail("argument \"%s\": spaces and empty arguments are not allowed", argv[i]);
			wp_buf_free(&line);
			return EXIT_USAGE;
		}
		wp_buf_printf(&line, "%s%s", line.len ? " " : "", argv[i]);
	}
	if (kill)
		wp_buf_add(&line, " --kill", 7);
	if (json)
		wp_buf_add(&line, " --json", 7);
	wp_buf_add(&line, "\n", 1);
	if (line.failed) {
		fail("command longer than %d bytes", LINE_MAX_BYTES);
		wp_buf_free(&line);
		return EXIT_USAGE;
	}

	struct wp_buf ans;
	wp_buf_init(&ans, ANSWER_MAX);
	/* Milliseconds, as the client library takes them; a longer wait than
	 * INT_MAX ms (24 days) is as good as none. */
	int timeout_ms = timeout * 1000 >= INT_MAX ? INT_MAX : timeout * 1000 < 1 ? 1 : (int)(timeout * 1000);
	int rc = ask(path, &line, timeout_ms, &ans);
	if (rc == 0 && strcmp(argv[optind], "connect") == 0 && argc - optind == 2)
		rc = connect_pool(ans.data, timeout_ms);
	else if (rc == 0) {
		fwrite(ans.data, 1, ans.len, stdout);
		rc = strncmp(ans.data, "error: ", 7) == 0 || strncmp(ans.data, "{\"error\":", 9) == 0 ? EXIT_ERROR_ANSWER
		                                                                                   : 0;
	}
	wp_buf_free(&line);
	wp_buf_free(&ans);
	return rc == -1 ? EXIT_USAGE : rc;
}
