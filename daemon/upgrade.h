/*
 * daemon/upgrade.h — in-place upgrade without systemd: `warmpoolctl upgrade
 * [BINARY]` (the admin command `upgrade [PATH]`) and SIGUSR2.
 *
 * The running warmpoold (the old process) forks and execs the binary at its
 * original path (/proc/self/exe as read at startup) or the one given, with
 * its own command line, passing as inherited fds 3.. the pools' listening
 * and handoff sockets, the admin sockets and the metrics endpoint, and every
 * idle plain-TCP connection, described by LISTEN_FDS, LISTEN_PID and
 * LISTEN_FDNAMES exactly as systemd's socket activation and fd store do
 * (the names are fdstore.c's): the new process takes them through the same
 * code (systemd_listen_init, fdstore_adopt, admin_open), which checks each
 * one as it checks the fd store's. LISTEN_PID is the child's pid: written by
 * the child itself between fork and exec, into a buffer prepared before the
 * fork. One more fd, named by WARMPOOL_UPGRADE_NOTIFY, is the write end of a
 * pipe: the new process writes "READY=1\n" to it where it tells systemd
 * READY=1 (engine_run), and closes it.
 *
 * upgrade.c says what the old process does meanwhile and afterwards.
 */
#ifndef WARMPOOL_UPGRADE_H
#define WARMPOOL_UPGRADE_H

#include <stddef.h>
#include <sys/types.h>

struct engine;
struct admin;
struct wp_buf;

#define UPGRADE_ENV_NOTIFY "WARMPOOL_UPGRADE_NOTIFY" /* the readiness pipe's fd, in the new process */

/* main(), before anything else runs: remember the binary and the command
 * line a later upgrade runs again, and, in a process an upgrade started,
 * take the readiness pipe from the environment (and remove the variable,
 * so nothing we start inherits it). */
void upgrade_init(int argc, char **argv);
/* Did an upgrade start this process (fdstore_adopt then adopts passed
 * connections even where systemd's fd store is off)? */
int upgrade_is_child(void);
/* engine_run, at READY=1: tell the old process we are ready (once). */
void upgrade_child_ready(void);

/* When an upgrade ends: ok 1 (the new process is ready, `msg` names its
 * pid) or 0 (`msg` says why it failed); the old process keeps serving on
 * failure. `arg` is upgrade_start's. */
typedef void upgrade_done_fn(void *arg, int ok, const char *msg);
/* Start an upgrade to `path` (NULL: the binary we were started from).
 * 0 started (`done` is called when it ends, from the loop), or -1 with
 * the reason in err (nothing was started: another upgrade runs, the daemon
 * is stopping, the file is not an executable regular file, fork failed). */
int upgrade_start(struct engine *eng, const char *path, upgrade_done_fn *done, void *arg, char *err,
                  size_t errlen) __attribute__((warn_unused_result));
/* engine_run: watch SIGUSR2 (an upgrade to the binary we were started from). */
void upgrade_watch(struct engine *eng);
/* An upgrade that runs fails now with `why` (SIGTERM: the daemon stops
 * instead); nothing when none runs. */
void upgrade_cancel(struct engine *eng, const char *why);
/* Has a new process taken over (this one drains)? Its listening sockets
 * and stored fds are the new process's then (fdstore.c leaves them). */
int upgrade_handed_over(void);
/* An upgrade is under way or done: the old process opens connections only
 * for clients waiting, not for its warm floor (the new process has the
 * warm connections; refilling here would be the reconnect storm the
 * upgrade avoids). */
int upgrade_keeps_no_floor(void);
/* engine_destroy: end a running upgrade (its child is killed, the
 * connections held for it closed) and stop watching SIGUSR2. */
void upgrade_destroy(struct engine *eng);

/* (engine.c) Stop accepting and drain as SIGTERM does (`why` for the log);
 * with `quiet`, nothing is told to systemd (the new process is its main
 * PID already). */
void engine_drain(struct engine *eng, const char *why, int quiet);

/* (admin.c) The admin listening sockets to pass: up to `max` fds and their
 * names ("@admin", "@admin-ro", "@metrics"); how many. */
size_t admin_listen_fds(const struct admin *a, int *fds, const char **names, size_t max);
/* (admin.c) The new process serves the admin sockets now: stop accepting on
 * them and close ours, leaving their files (they are the new process's). */
void admin_handover(struct admin *a);

struct handoff;
/* (handoff.c) The handoff socket's listening fd to pass (named
 * SYSTEMD_HANDOFF_FDNAME, taken by path in the new process), or -1 when
 * handed over already. */
int handoff_listen_fd(const struct handoff *h);
/* (handoff.c) The new process accepts on the handoff socket now: stop
 * accepting and close ours, leaving the file (the new process's). Requests
 * being read and leases stay here (a checkin reaching the new process
 * finds no lease and is refused). */
void handoff_handover(struct handoff *h);
/* Checkout requests accepted and not answered yet (0 for NULL): after a
 * handover the old process answers them before it exits. */
size_t handoff_pending(const struct handoff *h);

#endif
