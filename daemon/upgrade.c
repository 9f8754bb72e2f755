/*
 * daemon/upgrade.c — see upgrade.h.
 *
 * The old process, from `upgrade` (or SIGUSR2) to its exit:
 *
 *   1. Checks: no upgrade running, not stopping, the binary an executable
 *      regular file.
 *   2. Everything to pass is named and dup'ed above the fds the child will
 *      use (so the child's dup2 plan never overwrites a source), the argv
 *      and environment are built: only async-signal-safe calls run between
 *      fork and exec (getpid, writing the pid into the prepared LISTEN_PID
 *      buffer, sigprocmask, dup2, execve, _exit).
 *   3. After the fork, the idle connections passed leave our idle list: they
 *      are held (state new, no watcher) so that neither process uses a
 *      connection the other may use, but are not closed, and the pools'
 *      janitors are stopped so that the gap left by them is not refilled
 *      while no client asks for it. We keep accepting: clients arriving now
 *      are served by us, with new connections if they need one.
 *   4. The child writes "READY=1\n" into the pipe. Then we stop accepting
 *      (our listening and handoff sockets are closed, their files left
 *      alone: the child serves the same sockets, so no connect is refused at
 *      any moment; a handoff socket goes under SYSTEMD_HANDOFF_FDNAME and
 *      the child takes it by path; the leases of the sockets we handed out
 *      stay with us, so the child refuses their checkins),
 *      close our copies of the held connections, send MAINPID=<child> to
 *      systemd when it watches us, answer the admin command, wait for the
 *      clients that are still waiting for a connection of ours to get one,
 *      and drain as SIGTERM does (engine_drain) up to shutdown_timeout, then
 *      exit 0.
 *   5. If the child exits, closes the pipe without READY=1, or is not ready
 *      within UPGRADE_READY_TIMEOUT (it is then killed), the held
 *      connections become idle again, the janitors restart, the error is
 *      logged and answered; nothing else changed.
 *
 * Systemd (Type=notify, NotifyAccess=main): the child's own READY=1 comes
 * from a pid that is not the unit's main pid yet and is ignored; the old
 * process's MAINPID= makes it the main pid; from then on only it speaks
 * (STATUS=, WATCHDOG=1, FDSTORE=...), and the old process sends nothing
 * more (no STOPPING=1: the unit is not stopping).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "admin.h"
#include "engine.h"
#include "fdstore.h"
#include "log.h"
#include "systemd.h"
#include "upgrade.h"

#define UPGRADE_READY_TIMEOUT 30.0  /* seconds for the new process to become ready */
#define UPGRADE_WAITING_POLL  0.01  /* seconds between looks at clients still waiting, after the switch */
#define UPGRADE_ADMIN_FDS     3     /* admin, read-only admin, metrics */
#define UPGRADE_PID_DIGITS    20    /* room for a pid in LISTEN_PID= */

extern char **environ;

static struct {
	/* how we were started */
	char exe[PATH_MAX];
	char **argv; /* a copy of main's argv array (getopt permutes it) */
	int argc;
	/* in a process an upgrade started */
	int is_child;
	int notify_fd; /* the readiness pipe, until READY=1 is written */
	/* in the old process */
	struct engine *eng;
	ev_signal sig;
	ev_child child;     /* active from the fork until the child is reaped */
	ev_io ready_io;     /* the pipe's read end */
	ev_timer deadline;  /* UPGRADE_READY_TIMEOUT */
	ev_timer waiting;   /* after the switch: until no client waits for a connection of ours */
	int running;        /* between the fork and READY=1 or the failure */
	int handed_over;    /* the new process serves; we drain */
	pid_t pid;
	char got[16];
	size_t got_len;
	struct bconn **held; /* idle connections passed, off our idle list */
	size_t n_held;
	upgrade_done_fn *done;
	void *arg;
} up = {.notify_fd = -1};

/* ---- both processes ------------------------------------------------------ */

void upgrade_init(int argc, char **argv)
{
	ssize_t n = readlink("/proc/self/exe", up.exe, sizeof up.exe - 1);
	up.exe[n > 0 ? n : 0] = '\0';
	up.argv = calloc((size_t)argc + 1, sizeof *up.argv);
	if (up.argv) {
		memcpy(up.argv, argv, (size_t)argc * sizeof *argv);
		up.argc = argc;
	}
	const char *e = getenv(UPGRADE_ENV_NOTIFY);
	if (!e)
		return;
	char *end;
	errno = 0;
	long fd = strtol(e, &end, 10);
	struct stat st;
	int fl;
	if (!errno && end != e && !*end && fd >= 3 && fd < INT_MAX && fstat((int)fd, &st) == 0 &&
	    S_ISFIFO(st.st_mode) && (fl = fcntl((int)fd, F_GETFL)) >= 0 &&
	    fcntl((int)fd, F_SETFL, fl | O_NONBLOCK) == 0 && fcntl((int)fd, F_SETFD, FD_CLOEXEC) == 0) {
		up.notify_fd = (int)fd;
		up.is_child = 1;
	} else {
		log_warning("upgrade: $%s=\"%.20s\" is not a pipe: ignored", UPGRADE_ENV_NOTIFY, e);
	}
	unsetenv(UPGRADE_ENV_NOTIFY);
}

int upgrade_is_child(void)
{
	return up.is_child;
}

int upgrade_handed_over(void)
{
	return up.handed_over;
}

int upgrade_keeps_no_floor(void)
{
	return up.running || up.handed_over;
}

void upgrade_child_ready(void)
{
	static const char msg[] = "READY=1\n";
	if (up.notify_fd < 0)
		return;
	ssize_t r;
	do
		r = write(up.notify_fd, msg, sizeof msg - 1); /* 8 bytes into an empty pipe: never short */
	while (r < 0 && errno == EINTR);
	if (r != (ssize_t)(sizeof msg - 1))
		log_warning("upgrade: telling the old process we are ready: %s",
		            r < 0 ? strerror(errno) : "short write");
	close(up.notify_fd);
	up.notify_fd = -1;
}

/* ---- the old process --------------------------------------------------- */

static void held_free(void)
{
	free(up.held);
	up.held = NULL;
	up.n_held = 0;
}

/* The held connections go back to idle (or are closed when their backend
 * no longer takes them); the janitors run again. */
static void give_back(struct engine *eng)
{
	for (size_t i = 0; i < up.n_held; i++) {
		struct bconn *b = up.held[i];
		struct backend *be = b->be;
		/* Unproven: its settle timer was stopped with it; closing is simpler
		 * than proving it anew, and this is the rare case. */
		if (eng->stopping || be->gone || !backend_available(be->state) || !b->proven)
			bconn_close(b);
		else
			bconn_adopt_idle(b);
	}
	held_free();
	for (size_t i = 0; i < eng->n_pools; i++)
		if (!eng->stopping)
			janitor_start(eng->pools[i]);
}

static void finish(struct engine *eng, int ok, const char *msg)
{
	up.running = 0;
	ev_io_stop(eng->loop, &up.ready_io);
	if (up.ready_io.fd >= 0) {
		close(up.ready_io.fd);
		ev_io_set(&up.ready_io, -1, EV_READ);
	}
	ev_timer_stop(eng->loop, &up.deadline);
	upgrade_done_fn *done = up.done;
	void *arg = up.arg;
	up.done = NULL;
	up.arg = NULL;
	if (done)
		done(arg, ok, msg);
}

static void fail(struct engine *eng, const char *why)
{
	if (ev_is_active(&up.child) && kill(up.pid, SIGKILL) < 0 && errno != ESRCH)
		log_warning("upgrade: kill %d: %s", (int)up.pid, strerror(errno));
	give_back(eng);
	log_error("upgrade failed: %s; this process (pid %d) goes on serving", why, (int)getpid());
	char msg[300];
	snprintf(msg, sizeof msg, "upgrade failed: %s; pid %d goes on serving", why, (int)getpid());
	finish(eng, 0, msg);
}

static size_t waiting_clients(const struct engine *eng)
{
	size_t n = 0;
	for (size_t i = 0; i < eng->n_pools; i++) /* queued, and handoff requests still being read */
		n += eng->pools[i]->waiting.n + handoff_pending(eng->pools[i]->handoff);
	return n;
}

static void waiting_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)revents;
	struct engine *eng = up.eng;
	if (!eng->stopping && waiting_clients(eng))
		return; /* each gets a connection, or its queue_timeout ends the wait */
	ev_timer_stop(loop, w);
	if (!eng->stopping) /* else a SIGTERM drains already */
		engine_drain(eng, "upgraded", 1);
}

static void succeed(struct engine *eng)
{
	char msg[200];
	up.handed_over = 1;
	for (size_t i = 0; i < up.n_held; i++)
		bconn_close(up.held[i]); /* our copy only: the new process has its own */
	held_free();
	/* Stop accepting: the sockets are the new process's now (same files). */
	for (size_t i = 0; i < eng->n_pools; i++) {
		struct pool *p = eng->pools[i];
		for (size_t k = 0; k < p->n_listeners; k++) {
			p->listeners[k].us.created = 0; /* its file is the new process's */
			listener_close(&p->listeners[k]);
		}
		if (p->handoff)
			handoff_handover(p->handoff);
	}
	admin_handover(eng->admin);
	systemd_mainpid(up.pid);
	log_notice("upgrade: pid %d is ready and serving; this process (pid %d) stops accepting and "
	           "drains",
	           (int)up.pid, (int)getpid());
	snprintf(msg, sizeof msg, "upgraded: pid %d serves now; pid %d drains and exits", (int)up.pid,
	         (int)getpid());
	finish(eng, 1, msg);
	ev_timer_init(&up.waiting, waiting_cb, 0., UPGRADE_WAITING_POLL);
	ev_timer_again(eng->loop, &up.waiting);
	waiting_cb(eng->loop, &up.waiting, 0);
}

static void ready_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)revents;
	struct engine *eng = up.eng;
	ssize_t n;
	do
		n = read(w->fd, up.got + up.got_len, sizeof up.got - 1 - up.got_len);
	while (n < 0 && errno == EINTR);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return;
	if (n > 0) {
		up.got_len += (size_t)n;
		up.got[up.got_len] = '\0';
		if (strstr(up.got, "READY=1\n")) {
			succeed(eng);
			return;
		}
		if (up.got_len < sizeof up.got - 1)
			return;
	}
	/* EOF, an error, or bytes that are not READY=1: the child's exit (or
	 * the deadline) says the rest. */
	ev_io_stop(loop, w);
}

static void deadline_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
	char why[120];
	snprintf(why, sizeof why, "the new process (pid %d) was not ready within %.0fs: killed", (int)up.pid,
	         UPGRADE_READY_TIMEOUT);
	fail(up.eng, why);
}

static void child_cb(struct ev_loop *loop, ev_child *w, int revents)
{
	(void)revents;
	int st = w->rstatus;
	ev_child_stop(loop, w);
	char why[120];
	if (WIFEXITED(st))
		snprintf(why, sizeof why, "the new process (pid %d) exited with status %d%s", (int)w->rpid,
		         WEXITSTATUS(st), WEXITSTATUS(st) == 127 ? " (it could not be executed)" : "");
	else
		snprintf(why, sizeof why, "the new process (pid %d) was killed by signal %d", (int)w->rpid,
		         WIFSIGNALED(st) ? WTERMSIG(st) : 0);
	if (up.running)
		fail(up.eng, why);
	else if (up.handed_over)
		log_warning("upgrade: %s", why);
}

/* The fds to pass and their names (pointers into `namebuf`, which has
 * room for `cap` names); how many, or -1 with err set. */
static int collect(struct engine *eng, int *fds, char **names, char *namebuf, size_t cap, char *err,
                   size_t errlen)
{
	size_t n = 0;
	const char *an[UPGRADE_ADMIN_FDS];
	int af[UPGRADE_ADMIN_FDS];
	size_t na = admin_listen_fds(eng->admin, af, an, UPGRADE_ADMIN_FDS);
	for (size_t i = 0; i < na && n < cap; i++, n++) {
		fds[n] = af[i];
		names[n] = namebuf + n * (SYSTEMD_FDNAME_MAX + 1);
		snprintf(names[n], SYSTEMD_FDNAME_MAX + 1, "%s", an[i]);
	}
	for (size_t i = 0; i < eng->n_pools; i++) {
		struct pool *p = eng->pools[i];
		for (size_t k = 0; k < p->n_listeners; k++) {
			struct listener *l = &p->listeners[k];
			if (l->fd < 0)
				continue;
			if (n == cap)
				return -1;
			names[n] = namebuf + n * (SYSTEMD_FDNAME_MAX + 1);
			if (fdstore_listener_pass_name(l, names[n], SYSTEMD_FDNAME_MAX + 1) < 0) {
				if (!l->passed) {
					snprintf(err, errlen, "pool=%s: the socket path %s is too long to be passed",
					         p->name, l->cfg->path);
					return -1;
				}
				snprintf(names[n], SYSTEMD_FDNAME_MAX + 1, "%s", p->name); /* as systemd named it */
			}
			fds[n++] = l->fd;
		}
		int hfd = p->handoff ? handoff_listen_fd(p->handoff) : -1;
		if (hfd >= 0) {
			if (n == cap)
				return -1;
			names[n] = namebuf + n * (SYSTEMD_FDNAME_MAX + 1);
			snprintf(names[n], SYSTEMD_FDNAME_MAX + 1, "%s", SYSTEMD_HANDOFF_FDNAME);
			fds[n++] = hfd;
		}
	}
	up.n_held = 0;
	for (size_t i = 0; i < eng->n_pools; i++) {
		struct pool *p = eng->pools[i];
		for (size_t k = 0; k < p->n_backends; k++) {
			struct list_node *pos, *tmp;
			list_for_each_safe (pos, tmp, &p->backends[k]->conns[BCONN_IDLE]) {
				struct bconn *b = container_of(pos, struct bconn, node);
				if (n == cap)
					return -1;
				names[n] = namebuf + n * (SYSTEMD_FDNAME_MAX + 1);
				if (fdstore_conn_pass_name(b, names[n], SYSTEMD_FDNAME_MAX + 1) < 0)
					continue; /* TLS, foreign, unproven, a long greeting: stays here */
				fds[n++] = b->fd;
				up.held[up.n_held++] = b;
			}
		}
	}
	return (int)n;
}

/* Everything execve needs, built before the fork. */
struct plan {
	char **argv, **envp;
	char *fdnames;   /* LISTEN_FDNAMES=... */
	char listen_fds[32], notify[48];
	char listen_pid[sizeof "LISTEN_PID=" + UPGRADE_PID_DIGITS];
	int *staged;     /* staged[i] becomes fd 3 + i in the child */
	size_t n_staged;
};

static void plan_free(struct plan *pl)
{
	for (size_t i = 0; pl->staged && i < pl->n_staged; i++)
		if (pl->staged[i] >= 0)
			close(pl->staged[i]);
	free(pl->staged);
	free(pl->argv);
	free(pl->envp);
	free(pl->fdnames);
}

static int dropped_var(const char *e)
{
	static const char *const vars[] = {"LISTEN_FDS=", "LISTEN_PID=", "LISTEN_FDNAMES=",
	                                   UPGRADE_ENV_NOTIFY "="};
	for (size_t i = 0; i < sizeof vars / sizeof *vars; i++)
		if (strncmp(e, vars[i], strlen(vars[i])) == 0)
			return 1;
	return 0;
}

static int plan_make(struct plan *pl, const char *path, const int *fds, char **names, size_t n, int wfd)
{
	size_t len = sizeof "LISTEN_FDNAMES=";
	for (size_t i = 0; i < n; i++)
		len += strlen(names[i]) + 1;
	pl->fdnames = malloc(len);
	pl->argv = calloc((size_t)up.argc + 2, sizeof *pl->argv);
	size_t ne = 0;
	while (environ && environ[ne])
		ne++;
	pl->envp = calloc(ne + 5, sizeof *pl->envp);
	pl->staged = calloc(n + 1, sizeof *pl->staged);
	if (!pl->fdnames || !pl->argv || !pl->envp || !pl->staged)
		return -1;
	size_t off = (size_t)snprintf(pl->fdnames, len, "LISTEN_FDNAMES=");
	for (size_t i = 0; i < n; i++)
		off += (size_t)snprintf(pl->fdnames + off, len - off, "%s%s", i ? ":" : "", names[i]);
	pl->argv[0] = (char *)path;
	for (int i = 1; i < up.argc; i++)
		pl->argv[i] = up.argv[i];
	size_t k = 0;
	for (size_t i = 0; i < ne; i++)
		if (!dropped_var(environ[i]))
			pl->envp[k++] = environ[i];
	snprintf(pl->listen_fds, sizeof pl->listen_fds, "LISTEN_FDS=%zu", n);
	snprintf(pl->notify, sizeof pl->notify, "%s=%zu", UPGRADE_ENV_NOTIFY, 3 + n);
	memset(pl->listen_pid, 0, sizeof pl->listen_pid);
	memcpy(pl->listen_pid, "LISTEN_PID=", sizeof "LISTEN_PID=" - 1); /* the child writes its pid */
	pl->envp[k++] = pl->listen_fds;
	pl->envp[k++] = pl->fdnames;
	pl->envp[k++] = pl->notify;
	pl->envp[k++] = pl->listen_pid;
	/* Dup'ed above every target fd (3 .. 3+n), close-on-exec: the child's
	 * dup2(staged[i], 3 + i) never overwrites a source. */
	for (size_t i = 0; i <= n; i++)
		pl->staged[i] = -1;
	pl->n_staged = n + 1;
	for (size_t i = 0; i <= n; i++) {
		pl->staged[i] = fcntl(i < n ? fds[i] : wfd, F_DUPFD_CLOEXEC, (int)(4 + n));
		if (pl->staged[i] < 0)
			return -1;
	}
	return 0;
}

/* Between fork and exec: async-signal-safe calls only. */
static void __attribute__((noreturn)) child_exec(struct plan *pl, const char *path)
{
	char digits[UPGRADE_PID_DIGITS];
	unsigned long v = (unsigned long)getpid();
	size_t nd = 0;
	do
		digits[nd++] = (char)('0' + v % 10);
	while ((v /= 10) && nd < sizeof digits);
	char *p = pl->listen_pid + sizeof "LISTEN_PID=" - 1;
	while (nd)
		*p++ = digits[--nd];
	*p = '\0';
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL); /* libev may block the signals it watches */
	for (size_t i = 0; i < pl->n_staged; i++)
		if (dup2(pl->staged[i], (int)(3 + i)) < 0) /* the copy is not close-on-exec */
			_exit(126);
	execve(path, pl->argv, pl->envp);
	_exit(127);
}

int upgrade_start(struct engine *eng, const char *path, upgrade_done_fn *done, void *arg, char *err,
                  size_t errlen)
{
	struct stat st;
	if (up.running) {
		snprintf(err, errlen, "an upgrade is running already (new pid %d)", (int)up.pid);
		return -1;
	}
	if (eng->stopping || up.handed_over) {
		snprintf(err, errlen, "this process is shutting down");
		return -1;
	}
	if (!path)
		path = up.exe;
	if (!*path || !up.argv) {
		snprintf(err, errlen, "the binary this process runs is unknown (/proc/self/exe): give a path");
		return -1;
	}
	if (stat(path, &st) < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	if (!S_ISREG(st.st_mode) || access(path, X_OK) < 0) {
		snprintf(err, errlen, "%s: not an executable regular file", path);
		return -1;
	}
	size_t cap = UPGRADE_ADMIN_FDS;
	for (size_t i = 0; i < eng->n_pools; i++) /* + 1: its handoff socket */
		cap += eng->pools[i]->n_listeners + eng->pools[i]->n_conns[BCONN_IDLE] + 1;
	int *fds = calloc(cap, sizeof *fds);
	char **names = calloc(cap, sizeof *names);
	char *namebuf = malloc(cap * (SYSTEMD_FDNAME_MAX + 1));
	up.held = calloc(cap, sizeof *up.held);
	struct plan pl;
	memset(&pl, 0, sizeof pl);
	int pfd[2] = {-1, -1};
	int n = -1;
	if (!fds || !names || !namebuf || !up.held) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	err[0] = '\0';
	n = collect(eng, fds, names, namebuf, cap, err, errlen);
	if (n < 0) {
		if (!err[0])
			snprintf(err, errlen, "too many fds to pass");
		goto fail;
	}
	if (pipe2(pfd, O_CLOEXEC) < 0 || fcntl(pfd[0], F_SETFL, O_NONBLOCK) < 0 ||
	    plan_make(&pl, path, fds, names, (size_t)n, pfd[1]) < 0) {
		snprintf(err, errlen, "preparing the new process: %s", strerror(errno));
		goto fail;
	}
	pid_t pid = fork();
	if (pid < 0) {
		snprintf(err, errlen, "fork: %s", strerror(errno));
		goto fail;
	}
	if (pid == 0)
		child_exec(&pl, path);
	plan_free(&pl);
	close(pfd[1]);
	free(fds);
	free(names);
	free(namebuf);

	up.eng = eng;
	up.pid = pid;
	up.running = 1;
	up.got_len = 0;
	up.done = done;
	up.arg = arg;
	/* Ours no more until the child is ready or has failed: neither process
	 * may use a connection the other may use. */
	for (size_t i = 0; i < up.n_held; i++) {
		struct bconn *b = up.held[i];
		ev_io_stop(eng->loop, &b->io);
		ev_timer_stop(eng->loop, &b->timer);
		ev_timer_stop(eng->loop, &b->settle);
		bconn_set_state(b, BCONN_NEW);
	}
	for (size_t i = 0; i < eng->n_pools; i++)
		ev_timer_stop(eng->loop, &eng->pools[i]->janitor); /* no refill of their gap meanwhile */
	ev_child_init(&up.child, child_cb, pid, 0);
	ev_child_start(eng->loop, &up.child);
	ev_io_init(&up.ready_io, ready_cb, pfd[0], EV_READ);
	ev_io_start(eng->loop, &up.ready_io);
	ev_timer_init(&up.deadline, deadline_cb, UPGRADE_READY_TIMEOUT, 0.);
	ev_timer_start(eng->loop, &up.deadline);
	log_notice("upgrade: started %s as pid %d, passing %d fds (%zu idle connections)", path, (int)pid, n,
	           up.n_held);
	return 0;
fail:
	plan_free(&pl);
	if (pfd[0] >= 0)
		close(pfd[0]);
	if (pfd[1] >= 0)
		close(pfd[1]);
	free(fds);
	free(names);
	free(namebuf);
	held_free();
	log_error("upgrade refused: %s", err);
	return -1;
}

static void sigusr2_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
	char err[300];
	log_notice("SIGUSR2: upgrading in place");
	if (upgrade_start(up.eng, NULL, NULL, NULL, err, sizeof err) < 0)
		return; /* logged */
}

void upgrade_watch(struct engine *eng)
{
	up.eng = eng;
	ev_signal_init(&up.sig, sigusr2_cb, SIGUSR2);
	ev_signal_start(eng->loop, &up.sig);
	ev_init(&up.ready_io, ready_cb);
	up.ready_io.fd = -1;
}

void upgrade_cancel(struct engine *eng, const char *why)
{
	if (up.running)
		fail(eng, why);
}

void upgrade_destroy(struct engine *eng)
{
	if (!eng->loop)
		return;
	upgrade_cancel(eng, "the daemon is exiting");
	ev_signal_stop(eng->loop, &up.sig);
	ev_timer_stop(eng->loop, &up.waiting);
	ev_child_stop(eng->loop, &up.child);
	if (up.notify_fd >= 0) { /* a failed start of an upgraded process: the pipe closes, the old one sees it */
		close(up.notify_fd);
		up.notify_fd = -1;
	}
	free(up.argv);
	up.argv = NULL;
}
