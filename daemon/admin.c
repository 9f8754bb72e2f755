/*
 * daemon/admin.c — the control sockets: the admin socket (every command),
 * the read-only admin socket (`show`, `version`, `help` only) and the
 * optional HTTP metrics endpoint (GET /metrics).
 *
 * Admin protocol: one command per line (at most CTL_LINE_MAX bytes),
 * several per connection, answered in order. Each answer is zero or more
 * lines followed by one empty line; an error answer starts with "error: "
 * (a failed reload adds the file's error lines after it), or with --json is
 * one object {"error": ..., "details": [...]}. A line that is too long gets an error and the connection
 * is closed after it.
 *
 * One command at a time: a connection runs its next command only once the
 * previous answer is fully written, and at most one per loop iteration, so a
 * single write of 300 commands costs the loop 300 short turns rather than one
 * long stall, and holds one answer in memory rather than 300. Nothing is read
 * while an answer is pending or a buffered command waits its turn
 * (backpressure: the input buffer stays at CTL_LINE_MAX). Each answer is
 * bounded on its own (CTL_OUT_MAX), so one that is too large replaces only
 * itself. Buffered commands wait on admin->ready, served by one ev_check for
 * the whole module (it runs every iteration, busy or not, where an ev_idle
 * alone would starve under client traffic) plus one ev_idle whose only job is
 * to keep the poll from blocking while commands wait: two watchers whatever
 * the number of connections, not a timer armed per command (DESIGN.md: few
 * timers).
 *
 * Each listener has its own budget of connections (ctl_conns_max): the
 * unauthenticated metrics port and the read-only socket cannot take the
 * operator's room on the admin socket. More are accepted and closed at once,
 * and logged at most once a second per listener, with the count. An admin
 * connection has an inactivity timer (ev_timer_again); an HTTP connection has
 * one deadline from accept to its answer written (CTL_HTTP_DEADLINE), which
 * bytes trickled in do not push back. Nothing here blocks: commands only read
 * or change engine state in memory (reload reads the config file, which is a
 * local file read, as at startup).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "admin.h"
#include "buf.h"
#include "engine.h"
#include "escape.h"
#include "log.h"
#include "metrics.h"
#include "systemd.h"
#include "unixsock.h"
#include "upgrade.h"
#include "version.h"

#define CTL_LINE_MAX     4096
#define CTL_CONNS_ADMIN  32          /* admin socket: its mode keeps it to the operator */
#define CTL_CONNS_RO     32          /* read-only admin socket */
#define CTL_CONNS_HTTP   16          /* metrics endpoint: a scraper or two, but anyone who reaches the port */
#define CTL_OUT_MAX      (16u << 20) /* one answer (only one is held per connection) */
#define CTL_IDLE_TIMEOUT 60.0
/* Seconds from accept to the answer written on the metrics endpoint,
 * however the request trickles in: Prometheus' default scrape_timeout. */
#define CTL_HTTP_DEADLINE 10.0
/* At most one "too many connections" line per listener per this many seconds. */
#define CTL_REFUSED_LOG_EVERY 1.0
#define CTL_ARGS_MAX          8
/* Bytes of an unknown command echoed back in the error (then "..."). */
#define CTL_ECHO_MAX          40

enum ctl_kind { CTL_ADMIN, CTL_ADMIN_RO, CTL_HTTP, CTL_NKINDS };
static const char *const ctl_kind_name[CTL_NKINDS] = {"admin socket", "read-only admin socket",
                                                      "metrics endpoint"};
static const size_t ctl_conns_max[CTL_NKINDS] = {CTL_CONNS_ADMIN, CTL_CONNS_RO, CTL_CONNS_HTTP};

struct ctl_listener {
	struct admin *admin;
	enum ctl_kind kind;
	char where[128]; /* path or host:port: our own copy, a reload frees the config */
	int fd;
	ev_io io;
	ev_timer pause;        /* accept paused after EMFILE/ENFILE */
	struct sock_unix us;   /* Unix sockets we bound: removed at close */
	size_t n_conns;        /* open connections accepted here: at most ctl_conns_max[kind] */
	unsigned long refused; /* connections refused since the last "too many" line */
	ev_timer refused_log;  /* running while refusals are counted rather than logged one by one */
};

struct ctl_conn {
	struct list_node node;
	struct list_node ready_node; /* on admin->ready while a buffered command waits its turn */
	struct admin *admin;
	enum ctl_kind kind;
	int fd;
	ev_io io;
	ev_timer timer; /* inactivity (admin) or the request's deadline (HTTP) */
	char in[CTL_LINE_MAX + 1];
	size_t in_len;
	struct wp_buf out; /* at most one answer: the next command runs once it is written */
	size_t out_off;
	unsigned int ran_in; /* ev_iteration() of the last command run: one per iteration */
	unsigned close_after_flush : 1;
	unsigned ready : 1; /* on admin->ready */
	unsigned upgrading : 1; /* its `upgrade` runs: answered when it ends (admin_upgrade_done) */
};

/* The admin connection whose command runs now (ctl_run_one), NULL for
 * admin_exec() called without one: `upgrade` answers it later. */
static struct ctl_conn *running;

struct admin {
	struct engine *eng;
	admin_reload_fn *reload; /* the `reload` command: the engine's, set by admin_create */
	struct ctl_listener l[CTL_NKINDS];
	struct list conns;
	struct list ready; /* connections with a buffered command, nothing pending to write */
	ev_check turn;     /* runs one command of each ready connection per loop iteration */
	ev_idle spin;      /* active with turn: the poll must not block while commands wait */
};

/* ---- connections -------------------------------------------------------- */

static void ctl_unready(struct ctl_conn *c)
{
	if (!c->ready)
		return;
	list_remove(&c->admin->ready, &c->ready_node);
	c->ready = 0;
}

static void ctl_conn_close(struct ctl_conn *c)
{
	struct ev_loop *loop = c->admin->eng->loop;
	ev_io_stop(loop, &c->io);
	ev_timer_stop(loop, &c->timer);
	close(c->fd);
	ctl_unready(c);
	c->admin->l[c->kind].n_conns--;
	list_remove(&c->admin->conns, &c->node);
	wp_buf_free(&c->out);
	free(c);
}

/* Watch the socket for `want`: EV_READ, EV_WRITE, or 0 for nothing. */
static void ctl_conn_watch(struct ctl_conn *c, int want)
{
	struct ev_loop *loop = c->admin->eng->loop;
	if (ev_is_active(&c->io) && (c->io.events & (EV_READ | EV_WRITE)) == want)
		return;
	ev_io_stop(loop, &c->io);
	if (!want)
		return;
	ev_io_set(&c->io, c->fd, want);
	ev_io_start(loop, &c->io);
}

/* Write what is pending; returns -1 if the connection was closed. */
static int ctl_conn_flush(struct ctl_conn *c)
{
	while (c->out_off < c->out.len) {
		ssize_t n = send(c->fd, c->out.data + c->out_off, c->out.len - c->out_off, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		if (n <= 0) {
			ctl_conn_close(c);
			return -1;
		}
		c->out_off += (size_t)n;
	}
	wp_buf_reset(&c->out);
	c->out_off = 0;
	if (c->close_after_flush) {
		ctl_conn_close(c);
		return -1;
	}
	return 0;
}

/* ---- admin commands ----------------------------------------------------- */

static void reply_error(struct wp_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reply_error(struct wp_buf *b, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	wp_buf_printf(b, "error: %s\n", msg);
}

static struct pool *find_pool(struct engine *eng, const char *name)
{
	for (size_t i = 0; i < eng->n_pools; i++)
		if (strcmp(eng->pools[i]->name, name) == 0)
			return eng->pools[i];
	return NULL;
}

/* "POOL/BACKEND" -> the backend, or NULL with an error written. When
 * BACKEND is a name the pool resolves (db.internal:5432), *name is set to
 * it instead and NULL returned with nothing written. */
static struct backend *find_backend(struct engine *eng, char *arg, struct wp_buf *out, struct dns_name **name)
{
	*name = NULL;
	char *slash = arg ? strchr(arg, '/') : NULL;
	if (!slash) {
		reply_error(out, "expected POOL/BACKEND, e.g. redis/127.0.0.1:6379");
		return NULL;
	}
	*slash = '\0';
	struct pool *p = find_pool(eng, arg);
	if (!p) {
		reply_error(out, "no pool named \"%s\"", arg);
		return NULL;
	}
	for (size_t i = 0; i < p->n_backends; i++)
		if (!p->backends[i]->gone && strcmp(p->backends[i]->name, slash + 1) == 0)
			return p->backends[i];
	for (size_t i = 0; i < p->n_names; i++)
		if (strcmp(dns_name_str(p->names[i]), slash + 1) == 0) {
			*name = p->names[i];
			return NULL;
		}
	for (size_t i = 0; i < p->n_backends; i++)
		if (strcmp(p->backends[i]->name, slash + 1) == 0) {
			reply_error(out, "%s/%s was removed by dns and is draining", p->name, slash + 1);
			return NULL;
		}
	reply_error(out, "pool %s has no backend \"%s\"", p->name, slash + 1);
	return NULL;
}

static void cmd_help(struct wp_buf *out, int readonly)
{
	wp_buf_printf(out, "commands:\n"
	                   "  show pools [--json]\n"
	                   "  show backends [POOL] [--json]\n"
	                   "  show clients [POOL] [--json]\n"
	                   "  show dns [POOL] [--json]\n"
	                   "  show stats [--json]\n"
	                   "  show metrics\n"
	                   "  where POOL\n"
	                   "  version\n");
	if (!readonly)
		wp_buf_printf(out, "  drain POOL/BACKEND\n"
		                   "  disable POOL/BACKEND [--kill]\n"
		                   "  enable POOL/BACKEND\n"
		                   "  reload\n"
		                   "  upgrade [PATH]\n");
}

static void cmd_show(struct engine *eng, char **argv, int argc, int json, struct wp_buf *out)
{
	if (argc < 2) {
		reply_error(out, "show what? pools, backends, clients, dns, stats or metrics");
	} else if (strcmp(argv[1], "pools") == 0 && argc == 2) {
		metrics_show_pools(eng, out, json);
	} else if ((strcmp(argv[1], "backends") == 0 || strcmp(argv[1], "clients") == 0 ||
	            strcmp(argv[1], "dns") == 0) && argc <= 3) {
		struct pool *p = NULL;
		if (argc == 3 && !(p = find_pool(eng, argv[2]))) {
			reply_error(out, "no pool named \"%s\"", argv[2]);
			return;
		}
		if (argv[1][0] == 'b')
			metrics_show_backends(eng, p, out, json);
		else if (argv[1][0] == 'd')
			metrics_show_dns(eng, p, out, json);
		else
			metrics_show_clients(eng, p, out, json);
	} else if (strcmp(argv[1], "stats") == 0 && argc == 2) {
		metrics_show_stats(eng, out, json);
	} else if (strcmp(argv[1], "metrics") == 0 && argc == 2) {
		metrics_render(eng, out);
	} else {
		reply_error(out, "unknown show command; try: show pools|backends [POOL]|clients [POOL]|dns [POOL]|stats|metrics");
	}
}

static void cmd_backend(struct engine *eng, const char *verb, char *arg, int kill, struct wp_buf *out)
{
	struct dns_name *n = NULL;
	struct backend *be = find_backend(eng, arg, out, &n);
	enum backend_state st = strcmp(verb, "drain") == 0     ? BACKEND_DRAINING
	                        : strcmp(verb, "disable") == 0 ? BACKEND_DISABLED
	                                                       : BACKEND_UP;
	if (n) {
		/* Every address of the name, and those its later answers add. */
		struct pool *p = n->pool;
		size_t killed = 0, count = 0;
		n->admin_state = st == BACKEND_UP ? BACKEND_UNKNOWN : st;
		for (size_t i = 0; i < p->n_backends; i++) {
			struct backend *b = p->backends[i];
			if (b->dns != n || b->gone)
				continue;
			killed += pool_backend_admin(b, st, kill);
			count++;
		}
		wp_buf_printf(out, "%s/%s: %s (%zu address%s", p->name, dns_name_str(n),
		              st == BACKEND_UP ? "enabled" : backend_state_str(st), count, count == 1 ? "" : "es");
		if (kill)
			wp_buf_printf(out, ", %zu sessions closed", killed);
		wp_buf_add(out, ")\n", 2);
		return;
	}
	if (!be)
		return;
	size_t killed = pool_backend_admin(be, st, kill);
	wp_buf_printf(out, "%s/%s: %s", be->pool->name, be->name, backend_state_str(be->state));
	if (kill)
		wp_buf_printf(out, " (%zu sessions closed)", killed);
	wp_buf_add(out, "\n", 1);
}

static void ctl_conn_settle(struct ctl_conn *c);

/* The upgrade ended: every connection that asked for it gets its answer. */
static void admin_upgrade_done(void *arg, int ok, const char *msg)
{
	struct admin *a = arg;
	struct list_node *pos, *tmp;
	list_for_each_safe (pos, tmp, &a->conns) {
		struct ctl_conn *c = container_of(pos, struct ctl_conn, node);
		if (!c->upgrading)
			continue;
		c->upgrading = 0;
		wp_buf_printf(&c->out, "%s%s\n\n", ok ? "" : "error: ", msg);
		ctl_conn_settle(c);
	}
}

/* `upgrade [PATH]`: answered when the new process is ready or has failed
 * (upgrade.c), which takes up to its UPGRADE_READY_TIMEOUT. */
static void cmd_upgrade(struct engine *eng, int readonly, char **argv, int argc, struct wp_buf *out)
{
	char err[512], shown[256];
	if (readonly) {
		reply_error(out, "permission denied: this socket is read-only");
		return;
	}
	if (argc > 2) {
		reply_error(out, "usage: upgrade [PATH]");
		return;
	}
	if (!running) { /* no connection to answer later (the fuzz target) */
		reply_error(out, "upgrade is only run from the admin socket");
		return;
	}
	wp_escape((const unsigned char *)(argc == 2 ? argv[1] : "(the running binary)"),
	          strlen(argc == 2 ? argv[1] : "(the running binary)"), shown, sizeof shown);
	log_notice("admin: upgrade %s", shown);
	if (upgrade_start(eng, argc == 2 ? argv[1] : NULL, admin_upgrade_done, running->admin, err,
	                  sizeof err) < 0) {
		reply_error(out, "upgrade refused: %s", err);
		return;
	}
	running->upgrading = 1;
}

/* Run one command line; the answer (without its final empty line) goes to
 * out, *json set when the line asked for JSON. */
static void admin_run(struct engine *eng, int readonly, char *line, struct wp_buf *out, int *json)
{
	char *argv[CTL_ARGS_MAX + 1];
	int argc = 0, kill = 0;
	char *save = NULL;

	for (char *t = strtok_r(line, " \t\r", &save); t; t = strtok_r(NULL, " \t\r", &save)) {
		if (strcmp(t, "--json") == 0) {
			*json = 1;
		} else if (strcmp(t, "--kill") == 0) {
			kill = 1;
		} else if (argc == CTL_ARGS_MAX) {
			reply_error(out, "too many arguments");
			return;
		} else {
			argv[argc++] = t;
		}
	}
	if (argc == 0) {
		reply_error(out, "empty command; try: help");
		return;
	}
	const char *cmd = argv[0];
	if (strcmp(cmd, "help") == 0) {
		cmd_help(out, readonly);
	} else if (strcmp(cmd, "where") == 0) {
		struct pool *p = argc == 2 ? find_pool(eng, argv[1]) : NULL;
		if (!p) {
			reply_error(out, argc == 2 ? "no pool named \"%s\"" : "usage: where POOL", argc == 2 ? argv[1] : "");
			return;
		}
		if (p->handoff)
			wp_buf_printf(out, "handoff %s\n", handoff_path(p->handoff));
		for (size_t i = 0; i < p->n_listeners; i++)
			if (p->listeners[i].fd >= 0)
				wp_buf_printf(out, "listen %s\n", p->listeners[i].cfg->path);
	} else if (strcmp(cmd, "version") == 0) {
		wp_buf_printf(out, "warmpoold %s\n", WARMPOOL_VERSION);
	} else if (strcmp(cmd, "show") == 0) {
		cmd_show(eng, argv, argc, *json, out);
	} else if (strcmp(cmd, "upgrade") == 0) {
		cmd_upgrade(eng, readonly, argv, argc, out);
	} else if (strcmp(cmd, "drain") == 0 || strcmp(cmd, "disable") == 0 || strcmp(cmd, "enable") == 0 ||
	           strcmp(cmd, "reload") == 0) {
		if (readonly) {
			reply_error(out, "permission denied: this socket is read-only");
			return;
		}
		if (strcmp(cmd, "reload") == 0) {
			if (argc != 1)
				reply_error(out, "reload takes no arguments");
			else
				eng->admin->reload(eng, out);
		} else if (argc != 2 || (kill && strcmp(cmd, "disable") != 0)) {
			reply_error(out, "usage: %s POOL/BACKEND%s", cmd, strcmp(cmd, "disable") == 0 ? " [--kill]" : "");
		} else {
			/* The argument is the peer's bytes: escaped (control bytes,
			 * invalid UTF-8) and cut at sizeof shown before the log. */
			char shown[256];
			wp_escape((const unsigned char *)argv[1], strlen(argv[1]), shown, sizeof shown);
			log_notice("admin: %s %s%s", cmd, shown, kill ? " --kill" : "");
			cmd_backend(eng, cmd, argv[1], kill, out);
		}
	} else {
		char shown[CTL_ECHO_MAX + sizeof "..."];
		wp_escape_as((const unsigned char *)cmd, strlen(cmd), CTL_ECHO_MAX, shown, sizeof shown,
		             WP_ESC_MASK);
		reply_error(out, "unknown command \"%s\"; try: help", shown);
	}
}

/* With --json, an error answer is a JSON object too, so that a script's
 * parser never meets plain text: {"error":"...","details":[...]} (details:
 * the lines after the first, e.g. a refused reload's file errors). */
static void error_as_json(struct wp_buf *out, size_t start)
{
	struct wp_buf j;
	wp_buf_init(&j, CTL_OUT_MAX);
	/* out->data is NUL-terminated (wp_buf); the lines are the answer's. */
	char *msg = out->data + start + sizeof "error: " - 1;
	char *nl = strchr(msg, '\n');
	if (nl)
		*nl = '\0';
	wp_buf_add(&j, "{\"error\":\"", 10);
	wp_buf_json_str(&j, msg);
	wp_buf_add(&j, "\",\"details\":[", 13);
	for (char *ln = nl ? nl + 1 : NULL, *end; ln && *ln; ln = end ? end + 1 : NULL) {
		end = strchr(ln, '\n');
		if (end)
			*end = '\0';
		wp_buf_printf(&j, "%s\"", ln == nl + 1 ? "" : ",");
		wp_buf_json_str(&j, ln);
		wp_buf_add(&j, "\"", 1);
	}
	wp_buf_add(&j, "]}\n", 3);
	out->len = start;
	if (out->data)
		out->data[start] = '\0';
	wp_buf_add(out, j.data ? j.data : "", j.len);
	out->failed = out->failed || j.failed;
	wp_buf_free(&j);
}

void admin_exec(struct engine *eng, int readonly, char *line, struct wp_buf *out)
{
	size_t start = out->len;
	int json = 0;
	admin_run(eng, readonly, line, out, &json);
	if (json && !out->failed && out->len - start >= sizeof "error: " - 1 &&
	    memcmp(out->data + start, "error: ", sizeof "error: " - 1) == 0)
		error_as_json(out, start);
}

/* ---- HTTP metrics ------------------------------------------------------- */

static void http_answer(struct ctl_conn *c)
{
	struct engine *eng = c->admin->eng;
	struct wp_buf body;
	const char *status = "200 OK", *type = "text/plain; version=0.0.4; charset=utf-8";
	char method[8] = "", target[64] = "";

	wp_buf_init(&body, CTL_OUT_MAX);
	if (sscanf(c->in, "%7s %63s HTTP/1.", method, target) != 2) {
		status = "400 Bad Request";
	} else if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
		status = "405 Method Not Allowed";
	} else if (strcmp(target, "/metrics") != 0 && strncmp(target, "/metrics?", 9) != 0) {
		status = "404 Not Found";
	}
	if (strcmp(status, "200 OK") == 0)
		metrics_render(eng, &body);
	else
		wp_buf_printf(&body, "%s\n", status);
	if (body.failed) {
		wp_buf_reset(&body);
		status = "500 Internal Server Error";
		wp_buf_printf(&body, "metrics too large\n");
	}
	if (strcmp(status, "200 OK") != 0)
		type = "text/plain; charset=utf-8";
	wp_buf_printf(&c->out, "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
	              status, type, body.len);
	if (strcmp(method, "HEAD") != 0)
		wp_buf_add(&c->out, body.data ? body.data : "", body.len);
	wp_buf_free(&body);
	c->close_after_flush = 1;
}

/* ---- input -------------------------------------------------------------- */

/* An HTTP connection's input: answer once the request head is complete. */
static void http_process(struct ctl_conn *c)
{
	c->in[c->in_len] = '\0';
	if (strstr(c->in, "\r\n\r\n") || strstr(c->in, "\n\n"))
		http_answer(c);
	else if (c->in_len == CTL_LINE_MAX) {
		wp_buf_printf(&c->out, "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\n"
		                       "Connection: close\r\n\r\n");
		c->close_after_flush = 1;
	}
}

/* An admin connection has something to run: a complete line, or a full
 * buffer without one (answered with an error). */
static int ctl_has_command(const struct ctl_conn *c)
{
	return c->kind != CTL_HTTP && !c->close_after_flush &&
	       (c->in_len == CTL_LINE_MAX || memchr(c->in, '\n', c->in_len));
}

/* Run the first buffered command of an admin connection, or refuse a line
 * that cannot end within CTL_LINE_MAX. c->out is empty before (every earlier
 * answer is written), so an answer too large replaces only itself. */
static void ctl_run_one(struct ctl_conn *c)
{
	char *nl = memchr(c->in, '\n', c->in_len);
	c->ran_in = ev_iteration(c->admin->eng->loop);
	if (!nl) {
		reply_error(&c->out, "line too long (at most %d bytes); closing", CTL_LINE_MAX);
		wp_buf_add(&c->out, "\n", 1);
		c->close_after_flush = 1;
		return;
	}
	*nl = '\0';
	running = c;
	admin_exec(c->admin->eng, c->kind == CTL_ADMIN_RO, c->in, &c->out);
	running = NULL;
	if (c->out.failed) {
		wp_buf_reset(&c->out);
		reply_error(&c->out, "answer too large");
	}
	if (!c->upgrading)
		wp_buf_add(&c->out, "\n", 1); /* the empty line that ends an answer */
	size_t used = (size_t)(nl + 1 - c->in);
	memmove(c->in, nl + 1, c->in_len - used);
	c->in_len -= used;
}

/* After anything happened on c: write what is pending and wait for the peer
 * to take the rest (reading nothing meanwhile), or queue its next buffered
 * command for a later loop iteration, or read more. c may be closed. */
static void ctl_conn_settle(struct ctl_conn *c)
{
	struct admin *a = c->admin;
	struct ev_loop *loop = a->eng->loop;
	if (c->upgrading) { /* nothing read or written until the upgrade's answer */
		ctl_unready(c);
		ctl_conn_watch(c, 0);
		return;
	}
	if (c->out_off < c->out.len && ctl_conn_flush(c) < 0)
		return;
	if (c->out.len) {
		ctl_unready(c);
		ctl_conn_watch(c, EV_WRITE);
	} else if (c->close_after_flush) {
		ctl_conn_close(c);
	} else if (ctl_has_command(c)) {
		ctl_conn_watch(c, 0);
		if (!c->ready) {
			list_push_back(&a->ready, &c->ready_node);
			c->ready = 1;
		}
		if (!ev_is_active(&a->turn)) {
			ev_check_start(loop, &a->turn);
			ev_idle_start(loop, &a->spin);
		}
	} else {
		ctl_unready(c);
		ctl_conn_watch(c, EV_READ);
	}
}

static void ctl_conn_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct ctl_conn *c = container_of(w, struct ctl_conn, io);
	if (c->kind != CTL_HTTP)
		ev_timer_again(loop, &c->timer); /* an HTTP request has a deadline instead */
	if (revents & EV_READ) {
		/* Watched only with nothing to write and no complete command
		 * buffered, so there is room and nothing to answer at EOF. */
		ssize_t n = recv(c->fd, c->in + c->in_len, CTL_LINE_MAX - c->in_len, MSG_DONTWAIT);
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
			return;
		if (n <= 0) {
			ctl_conn_close(c); /* EOF or error: a partial line is dropped */
			return;
		}
		c->in_len += (size_t)n;
		if (c->kind == CTL_HTTP)
			http_process(c);
		else if (ctl_has_command(c))
			ctl_run_one(c);
	}
	ctl_conn_settle(c);
}

/* Once per loop iteration while connections wait on admin->ready: one
 * command each (those queued now, not those queued again meanwhile). */
static void ctl_turn_cb(struct ev_loop *loop, ev_check *w, int revents)
{
	(void)revents;
	struct admin *a = container_of(w, struct admin, turn);
	unsigned int now = ev_iteration(loop);
	for (size_t n = a->ready.n; n > 0 && a->ready.n > 0; n--) {
		struct ctl_conn *c = container_of(list_first(&a->ready), struct ctl_conn, ready_node);
		ctl_unready(c);
		if (c->ran_in == now) { /* its read ran one this iteration already */
			list_push_back(&a->ready, &c->ready_node);
			c->ready = 1;
			continue;
		}
		ev_timer_again(loop, &c->timer);
		ctl_run_one(c);
		ctl_conn_settle(c);
	}
	if (a->ready.n == 0) {
		ev_check_stop(loop, &a->turn);
		ev_idle_stop(loop, &a->spin);
	}
}

static void ctl_spin_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents; /* nothing to do: being active keeps the poll from blocking */
}

static void ctl_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	struct ctl_conn *c = container_of(w, struct ctl_conn, timer);
	if (c->kind == CTL_HTTP && c->out.len == 0) {
		/* The deadline came before the request head: tell the client,
		 * best effort (one non-blocking send; its result does not matter,
		 * the connection is closed either way). */
		static const char msg[] =
		    "HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
		ssize_t n = send(c->fd, msg, sizeof msg - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
		(void)n;
	}
	ctl_conn_close(c);
}

/* A connection refused for want of budget: the first of a burst is logged at
 * once, later ones are counted and summed up every CTL_REFUSED_LOG_EVERY
 * while they last (a flood of connections must not become a flood of log
 * lines: 33,807 in 3 s before this). */
static void ctl_refused(struct ctl_listener *l)
{
	if (ev_is_active(&l->refused_log)) {
		l->refused++;
		return;
	}
	log_warning("%s %s: too many connections, closing a new connection (at most %zu at once)",
	            ctl_kind_name[l->kind], l->where, ctl_conns_max[l->kind]);
	ev_timer_again(l->admin->eng->loop, &l->refused_log); /* repeats every CTL_REFUSED_LOG_EVERY */
}

static void ctl_refused_log_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)revents;
	struct ctl_listener *l = container_of(w, struct ctl_listener, refused_log);
	if (l->refused == 0) {
		ev_timer_stop(loop, w); /* a quiet period: the next refusal is logged at once */
		return;
	}
	log_warning("%s %s: too many connections, closed %lu more new connections in the last %.0fs "
	            "(at most %zu at once)",
	            ctl_kind_name[l->kind], l->where, l->refused, CTL_REFUSED_LOG_EVERY,
	            ctl_conns_max[l->kind]);
	l->refused = 0;
}

/* One accepted connection: within the listener's budget, it gets its
 * buffers and deadline; beyond it, it is closed and counted. */
static int ctl_take(void *arg, int fd)
{
	struct ctl_listener *l = arg;
	struct admin *a = l->admin;
	struct ev_loop *loop = a->eng->loop;
	if (l->n_conns >= ctl_conns_max[l->kind]) {
		close(fd);
		ctl_refused(l);
		return 0;
	}
	struct ctl_conn *c = calloc(1, sizeof *c);
	if (!c) {
		log_warning("%s %s: out of memory, closing a new connection", ctl_kind_name[l->kind], l->where);
		close(fd);
		return 0;
	}
	c->admin = a;
	c->kind = l->kind;
	c->fd = fd;
	wp_buf_init(&c->out, CTL_OUT_MAX);
	list_push_back(&a->conns, &c->node);
	l->n_conns++;
	ev_io_init(&c->io, ctl_conn_cb, fd, EV_READ);
	if (c->kind == CTL_HTTP) {
		/* One deadline for the whole request, however it trickles in. */
		ev_timer_init(&c->timer, ctl_timeout_cb, CTL_HTTP_DEADLINE, 0.);
		ev_timer_start(loop, &c->timer);
	} else {
		ev_init(&c->timer, ctl_timeout_cb);
		c->timer.repeat = CTL_IDLE_TIMEOUT;
		ev_timer_again(loop, &c->timer);
	}
	ev_io_start(loop, &c->io);
	return 0;
}

static void ctl_accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)revents;
	struct ctl_listener *l = container_of(w, struct ctl_listener, io);
	unix_accept(loop, &l->io, &l->pause, ctl_take, l, NULL, ctl_kind_name[l->kind], l->where);
}

/* ---- listeners ---------------------------------------------------------- */

static int ctl_listen_tcp(struct ctl_listener *l, const struct cfg_backend *addr, char *err, size_t errlen)
{
	int fd = socket(addr->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int one = 1;
	if (fd < 0) {
		snprintf(err, errlen, "metrics_listen %s: socket: %s", addr->name, strerror(errno));
		return -1;
	}
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
	    bind(fd, (const struct sockaddr *)&addr->addr, addr->addrlen) < 0 || listen(fd, 64) < 0) {
		snprintf(err, errlen, "metrics_listen %s: %s", addr->name, strerror(errno));
		close(fd);
		return -1;
	}
	l->fd = fd;
	return 0;
}

/* The names an upgrade passes the listening sockets under ('@' is in no
 * pool name), by kind. */
static const char *const upgrade_names[CTL_NKINDS] = {"@admin", "@admin-ro", "@metrics"};

size_t admin_listen_fds(const struct admin *a, int *fds, const char **names, size_t max)
{
	size_t n = 0;
	for (int k = 0; k < CTL_NKINDS && n < max; k++) {
		const struct ctl_listener *l = &a->l[k];
		if (l->fd < 0)
			continue;
		fds[n] = l->fd;
		/* An admin socket systemd passed goes as systemd named it. */
		names[n++] = k == CTL_ADMIN && !l->us.created ? "admin" : upgrade_names[k];
	}
	return n;
}

void admin_handover(struct admin *a)
{
	for (int k = 0; k < CTL_NKINDS; k++) {
		struct ctl_listener *l = &a->l[k];
		if (l->fd < 0)
			continue;
		ev_io_stop(a->eng->loop, &l->io);
		ev_timer_stop(a->eng->loop, &l->pause);
		close(l->fd);
		l->fd = -1;
		l->us.created = 0; /* the file is the new process's */
	}
}

struct admin *admin_create(struct engine *eng, admin_reload_fn *reload)
{
	struct admin *a = calloc(1, sizeof *a);
	if (!a)
		return NULL;
	a->eng = eng;
	a->reload = reload;
	list_init(&a->conns);
	list_init(&a->ready);
	ev_check_init(&a->turn, ctl_turn_cb);
	ev_idle_init(&a->spin, ctl_spin_cb);
	for (int k = 0; k < CTL_NKINDS; k++) {
		a->l[k].admin = a;
		a->l[k].kind = (enum ctl_kind)k;
		a->l[k].fd = -1;
	}
	return a;
}

int admin_open(struct admin *a, const struct cfg_daemon *d, char *err, size_t errlen)
{
	const struct cfg_listen *paths[2] = {&d->admin, &d->admin_ro};
	for (int k = CTL_ADMIN; k <= CTL_ADMIN_RO; k++) {
		struct ctl_listener *l = &a->l[k];
		/* An upgrade's old process passes the sockets it bound (ours
		 * from now on: removed at exit), by path, before any bind. */
		int fd = paths[k]->path ? systemd_take_listen_fd_at(upgrade_names[k], paths[k]->path) : -1;
		if (fd >= 0) {
			struct stat st;
			l->fd = fd;
			snprintf(l->where, sizeof l->where, "%s", paths[k]->path);
			if (stat(l->where, &st) == 0 && S_ISSOCK(st.st_mode)) {
				l->us.fd = fd;
				l->us.path = l->where;
				l->us.dev = st.st_dev;
				l->us.ino = st.st_ino;
				l->us.created = 1;
			}
			log_info("%s: listening on %s (passed by the process upgraded)", ctl_kind_name[k], l->where);
			continue;
		}
		/* systemd may pass the admin socket (FileDescriptorName=admin). */
		fd = k == CTL_ADMIN ? systemd_take_listen_fd("admin") : -1;
		if (fd >= 0) {
			l->fd = fd;
			snprintf(l->where, sizeof l->where, "%s", systemd_listen_fd_address(fd));
			log_info("%s: listening on %s (passed by systemd)", ctl_kind_name[k], l->where);
			continue;
		}
		if (!paths[k]->path)
			continue;
		snprintf(l->where, sizeof l->where, "%s", paths[k]->path);
		if (unix_listen(l->where, paths[k]->mode, SOCK_STREAM, &l->us, err, errlen) < 0)
			return -1;
		l->fd = l->us.fd;
		log_info("%s: listening on %s (mode %04o)", ctl_kind_name[k], l->where, (unsigned)paths[k]->mode);
	}
	if (d->metrics.name) {
		int fd = systemd_take_listen_fd(upgrade_names[CTL_HTTP]); /* an upgrade's */
		if (fd >= 0)
			a->l[CTL_HTTP].fd = fd;
		else if (ctl_listen_tcp(&a->l[CTL_HTTP], &d->metrics, err, errlen) < 0)
			return -1;
		snprintf(a->l[CTL_HTTP].where, sizeof a->l[CTL_HTTP].where, "%s", d->metrics.name);
		log_info("metrics endpoint: listening on http://%s/metrics", d->metrics.name);
	}
	return 0;
}

void admin_start(struct admin *a)
{
	for (int k = 0; k < CTL_NKINDS; k++) {
		struct ctl_listener *l = &a->l[k];
		if (l->fd < 0)
			continue;
		unix_accept_init(&l->io, &l->pause, ctl_accept_cb, l->fd);
		ev_timer_init(&l->refused_log, ctl_refused_log_cb, CTL_REFUSED_LOG_EVERY, CTL_REFUSED_LOG_EVERY);
		ev_io_start(a->eng->loop, &l->io);
	}
}

void admin_destroy(struct admin *a)
{
	if (!a)
		return;
	struct list_node *pos, *tmp;
	list_for_each_safe (pos, tmp, &a->conns)
		ctl_conn_close(container_of(pos, struct ctl_conn, node));
	if (ev_is_active(&a->turn)) {
		ev_check_stop(a->eng->loop, &a->turn);
		ev_idle_stop(a->eng->loop, &a->spin);
	}
	for (int k = 0; k < CTL_NKINDS; k++) {
		struct ctl_listener *l = &a->l[k];
		if (l->fd < 0)
			continue;
		if (l->refused)
			log_warning("%s %s: too many connections, closed %lu more new connections (at most %zu at once)",
			            ctl_kind_name[k], l->where, l->refused, ctl_conns_max[k]);
		ev_io_stop(a->eng->loop, &l->io);
		ev_timer_stop(a->eng->loop, &l->pause);
		ev_timer_stop(a->eng->loop, &l->refused_log);
		close(l->fd);
		l->fd = -1;
		sock_unix_unlink_ours(&l->us);
	}
	free(a);
}
