/*
 * daemon/admin.c — the control sockets: the admin socket (every command),
 * the read-only admin socket (`show`, `version`, `help` only) and the
 * optional HTTP metrics endpoint (GET /metrics).
 *
 * Admin protocol: one command per line (at most CTL_LINE_MAX bytes),
 * several per connection, answered in order. Each answer is zero or more
 * lines followed by one empty line; an error answer starts with "error: "
 * (a failed reload adds the file's error lines after it). A line that is too long gets an error and the connection
 * is closed after it. While an answer is being written nothing more is read
 * (backpressure), and answers are bounded (CTL_OUT_MAX).
 *
 * Every connection has an inactivity timer (ev_timer_again), at most
 * CTL_CONNS_MAX are open at once (more are accepted and closed at once), and
 * nothing here blocks: commands only read or change engine state in memory
 * (reload reads the config file, which is a local file read, as at startup).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "admin.h"
#include "buf.h"
#include "engine.h"
#include "log.h"
#include "metrics.h"
#include "systemd.h"
#include "unixsock.h"
#include "version.h"

#define CTL_LINE_MAX     4096
#define CTL_CONNS_MAX    32
#define CTL_OUT_MAX      (16u << 20)
#define CTL_IDLE_TIMEOUT 60.0
#define CTL_ARGS_MAX     8
#define CTL_ACCEPT_PAUSE 0.1 /* seconds without accepting after EMFILE and the like */

enum ctl_kind { CTL_ADMIN, CTL_ADMIN_RO, CTL_HTTP, CTL_NKINDS };
static const char *const ctl_kind_name[CTL_NKINDS] = {"admin socket", "read-only admin socket",
                                                      "metrics endpoint"};

struct ctl_listener {
	struct admin *admin;
	enum ctl_kind kind;
	char where[128]; /* path or host:port: our own copy, a reload frees the config */
	int fd;
	ev_io io;
	ev_timer pause;      /* accept paused after EMFILE/ENFILE */
	struct unix_sock us; /* Unix sockets we bound: removed at close */
};

struct ctl_conn {
	struct list_node node;
	struct admin *admin;
	enum ctl_kind kind;
	int fd;
	ev_io io;
	ev_timer timer;
	char in[CTL_LINE_MAX + 1];
	size_t in_len;
	struct wp_buf out;
	size_t out_off;
	unsigned close_after_flush : 1;
};

struct admin {
	struct engine *eng;
	struct ctl_listener l[CTL_NKINDS];
	struct list conns;
};

/* ---- connections -------------------------------------------------------- */

static void ctl_conn_close(struct ctl_conn *c)
{
	struct ev_loop *loop = c->admin->eng->loop;
	ev_io_stop(loop, &c->io);
	ev_timer_stop(loop, &c->timer);
	close(c->fd);
	list_remove(&c->admin->conns, &c->node);
	wp_buf_free(&c->out);
	free(c);
}

static void ctl_conn_watch(struct ctl_conn *c)
{
	struct ev_loop *loop = c->admin->eng->loop;
	int want = c->out_off < c->out.len ? EV_WRITE : EV_READ;
	if (ev_is_active(&c->io) && (c->io.events & (EV_READ | EV_WRITE)) == want)
		return;
	ev_io_stop(loop, &c->io);
	ev_io_set(&c->io, c->fd, want);
	ev_io_start(loop, &c->io);
}

/* Write what is pending; returns -1 if the connection was closed. */
static int ctl_conn_flush(struct ctl_conn *c)
{
	while (c->out_off < c->out.len) {
		ssize_t n = send(c->fd, c->out.data + c->out_off, c->out.len - c->out_off, MSG_NOSIGNAL);
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

/* "POOL/BACKEND" -> the backend, or NULL with an error written. */
static struct backend *find_backend(struct engine *eng, char *arg, struct wp_buf *out)
{
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
		if (strcmp(p->backends[i].name, slash + 1) == 0)
			return &p->backends[i];
	reply_error(out, "pool %s has no backend \"%s\"", p->name, slash + 1);
	return NULL;
}

static void cmd_help(struct wp_buf *out, int readonly)
{
	wp_buf_printf(out, "commands:\n"
	                   "  show pools [--json]\n"
	                   "  show backends [POOL] [--json]\n"
	                   "  show stats [--json]\n"
	                   "  show metrics\n"
	                   "  where POOL\n"
	                   "  version\n");
	if (!readonly)
		wp_buf_printf(out, "  drain POOL/BACKEND\n"
		                   "  disable POOL/BACKEND [--kill]\n"
		                   "  enable POOL/BACKEND\n"
		                   "  reload\n");
}

static void cmd_show(struct engine *eng, char **argv, int argc, int json, struct wp_buf *out)
{
	if (argc < 2) {
		reply_error(out, "show what? pools, backends, stats or metrics");
	} else if (strcmp(argv[1], "pools") == 0 && argc == 2) {
		metrics_show_pools(eng, out, json);
	} else if (strcmp(argv[1], "backends") == 0 && argc <= 3) {
		struct pool *p = NULL;
		if (argc == 3 && !(p = find_pool(eng, argv[2]))) {
			reply_error(out, "no pool named \"%s\"", argv[2]);
			return;
		}
		metrics_show_backends(eng, p, out, json);
	} else if (strcmp(argv[1], "stats") == 0 && argc == 2) {
		metrics_show_stats(eng, out, json);
	} else if (strcmp(argv[1], "metrics") == 0 && argc == 2) {
		metrics_render(eng, out);
	} else {
		reply_error(out, "unknown show command; try: show pools|backends [POOL]|stats|metrics");
	}
}

static void cmd_backend(struct engine *eng, const char *verb, char *arg, int kill, struct wp_buf *out)
{
	struct backend *be = find_backend(eng, arg, out);
	if (!be)
		return;
	enum backend_state st = strcmp(verb, "drain") == 0     ? BACKEND_DRAINING
	                        : strcmp(verb, "disable") == 0 ? BACKEND_DISABLED
	                                                       : BACKEND_UP;
	size_t killed = backend_admin(be, st, kill);
	wp_buf_printf(out, "%s/%s: %s", be->pool->name, be->name, backend_state_str(be->state));
	if (kill)
		wp_buf_printf(out, " (%zu sessions closed)", killed);
	wp_buf_add(out, "\n", 1);
}

/* Run one command line; the answer (without its final empty line) goes to out
 * (admin.h). */
void admin_exec(struct engine *eng, int readonly, char *line, struct wp_buf *out)
{
	char *argv[CTL_ARGS_MAX + 1];
	int argc = 0, json = 0, kill = 0;
	char *save = NULL;

	for (char *t = strtok_r(line, " \t\r", &save); t; t = strtok_r(NULL, " \t\r", &save)) {
		if (strcmp(t, "--json") == 0) {
			json = 1;
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
		cmd_show(eng, argv, argc, json, out);
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
				engine_reload(eng, out);
		} else if (argc != 2 || (kill && strcmp(cmd, "disable") != 0)) {
			reply_error(out, "usage: %s POOL/BACKEND%s", cmd, strcmp(cmd, "disable") == 0 ? " [--kill]" : "");
		} else {
			log_notice("admin: %s %s%s", cmd, argv[1], kill ? " --kill" : "");
			cmd_backend(eng, cmd, argv[1], kill, out);
		}
	} else {
		char shown[64];
		snprintf(shown, sizeof shown, "%.40s%s", cmd, strlen(cmd) > 40 ? "..." : "");
		for (char *p = shown; *p; p++)
			if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
				*p = '?';
		reply_error(out, "unknown command \"%s\"; try: help", shown);
	}
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

/* Answer every complete line (or the HTTP request) in c->in. */
static void ctl_process(struct ctl_conn *c)
{
	if (c->kind == CTL_HTTP) {
		c->in[c->in_len] = '\0';
		if (strstr(c->in, "\r\n\r\n") || strstr(c->in, "\n\n"))
			http_answer(c);
		else if (c->in_len == CTL_LINE_MAX) {
			wp_buf_printf(&c->out, "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\n"
			                       "Connection: close\r\n\r\n");
			c->close_after_flush = 1;
		}
		return;
	}
	char *start = c->in;
	char *nl;
	while (!c->close_after_flush && (nl = memchr(start, '\n', c->in_len - (size_t)(start - c->in)))) {
		*nl = '\0';
		admin_exec(c->admin->eng, c->kind == CTL_ADMIN_RO, start, &c->out);
		if (c->out.failed) {
			wp_buf_reset(&c->out);
			reply_error(&c->out, "answer too large");
		}
		wp_buf_add(&c->out, "\n", 1); /* the empty line that ends an answer */
		start = nl + 1;
	}
	size_t rest = c->in_len - (size_t)(start - c->in);
	memmove(c->in, start, rest);
	c->in_len = rest;
	if (c->in_len == CTL_LINE_MAX) {
		reply_error(&c->out, "line too long (at most %d bytes); closing", CTL_LINE_MAX);
		wp_buf_add(&c->out, "\n", 1);
		c->close_after_flush = 1;
	}
}

static void ctl_conn_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct ctl_conn *c = container_of(w, struct ctl_conn, io);
	ev_timer_again(loop, &c->timer);
	if (revents & EV_WRITE) {
		if (ctl_conn_flush(c) < 0)
			return;
		if (c->in_len && c->kind != CTL_HTTP) /* lines read before the answer was written */
			ctl_process(c);
	} else if (revents & EV_READ) {
		ssize_t n = recv(c->fd, c->in + c->in_len, CTL_LINE_MAX - c->in_len, 0);
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
			return;
		if (n <= 0) {
			/* EOF: answer what is complete, then close once written. */
			c->close_after_flush = 1;
			if (c->out.len == 0) {
				ctl_conn_close(c);
				return;
			}
		} else {
			c->in_len += (size_t)n;
			ctl_process(c);
		}
	}
	if (c->out_off < c->out.len && ctl_conn_flush(c) < 0)
		return;
	if (c->close_after_flush && c->out.len == 0) {
		ctl_conn_close(c);
		return;
	}
	ctl_conn_watch(c);
}

static void ctl_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	ctl_conn_close(container_of(w, struct ctl_conn, timer));
}

static void ctl_accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)revents;
	struct ctl_listener *l = container_of(w, struct ctl_listener, io);
	struct admin *a = l->admin;
	for (int i = 0; i < 16; i++) {
		int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			/* Out of fds or memory: the socket stays readable, so pause
			 * rather than spin (as pools' listeners do). */
			log_warning("%s %s: accept: %s; pausing accepts for %.0fms", ctl_kind_name[l->kind], l->where,
			            strerror(errno), CTL_ACCEPT_PAUSE * 1000);
			ev_io_stop(loop, &l->io);
			ev_timer_set(&l->pause, CTL_ACCEPT_PAUSE, 0.); /* a one-shot timer needs its delay again */
			ev_timer_start(loop, &l->pause);
			return;
		}
		struct ctl_conn *c = a->conns.n < CTL_CONNS_MAX ? calloc(1, sizeof *c) : NULL;
		if (!c) {
			log_warning("%s %s: %s, closing a new connection", ctl_kind_name[l->kind], l->where,
			            a->conns.n < CTL_CONNS_MAX ? "out of memory" : "too many connections");
			close(fd);
			continue;
		}
		c->admin = a;
		c->kind = l->kind;
		c->fd = fd;
		wp_buf_init(&c->out, CTL_OUT_MAX);
		list_push_back(&a->conns, &c->node);
		ev_io_init(&c->io, ctl_conn_cb, fd, EV_READ);
		ev_init(&c->timer, ctl_timeout_cb);
		c->timer.repeat = CTL_IDLE_TIMEOUT;
		ev_timer_again(loop, &c->timer);
		ev_io_start(loop, &c->io);
	}
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

struct admin *admin_create(struct engine *eng)
{
	struct admin *a = calloc(1, sizeof *a);
	if (!a)
		return NULL;
	a->eng = eng;
	list_init(&a->conns);
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
		/* systemd may pass the admin socket (FileDescriptorName=admin). */
		int fd = k == CTL_ADMIN ? systemd_take_listen_fd("admin") : -1;
		if (fd >= 0) {
			l->fd = fd;
			snprintf(l->where, sizeof l->where, "%s", systemd_listen_fd_address(fd));
			log_info("%s: listening on %s (passed by systemd)", ctl_kind_name[k], l->where);
			continue;
		}
		if (!paths[k]->path)
			continue;
		snprintf(l->where, sizeof l->where, "%s", paths[k]->path);
		if (unix_listen(l->where, paths[k]->mode, &l->us, err, errlen) < 0)
			return -1;
		l->fd = l->us.fd;
		log_info("%s: listening on %s (mode %04o)", ctl_kind_name[k], l->where, (unsigned)paths[k]->mode);
	}
	if (d->metrics.name) {
		if (ctl_listen_tcp(&a->l[CTL_HTTP], &d->metrics, err, errlen) < 0)
			return -1;
		snprintf(a->l[CTL_HTTP].where, sizeof a->l[CTL_HTTP].where, "%s", d->metrics.name);
		log_info("metrics endpoint: listening on http://%s/metrics", d->metrics.name);
	}
	return 0;
}

static void ctl_resume_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)revents;
	struct ctl_listener *l = container_of(w, struct ctl_listener, pause);
	if (l->fd >= 0)
		ev_io_start(loop, &l->io);
}

void admin_start(struct admin *a)
{
	for (int k = 0; k < CTL_NKINDS; k++) {
		struct ctl_listener *l = &a->l[k];
		if (l->fd < 0)
			continue;
		ev_io_init(&l->io, ctl_accept_cb, l->fd, EV_READ);
		ev_timer_init(&l->pause, ctl_resume_cb, CTL_ACCEPT_PAUSE, 0.);
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
	for (int k = 0; k < CTL_NKINDS; k++) {
		struct ctl_listener *l = &a->l[k];
		if (l->fd < 0)
			continue;
		ev_io_stop(a->eng->loop, &l->io);
		ev_timer_stop(a->eng->loop, &l->pause);
		close(l->fd);
		l->fd = -1;
		unix_unlink_ours(&l->us);
	}
	free(a);
}
