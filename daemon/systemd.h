/*
 * daemon/systemd.h — what warmpoold tells systemd and takes from it
 * (libsystemd's sd-daemon: sd_notify, the watchdog, socket activation).
 *
 * Notifications: every call is a no-op when $NOTIFY_SOCKET is unset, so the
 * same binary runs outside systemd. They never block the loop: sd_notify()
 * is not used (its socket blocks while the manager's queue is full); our own
 * non-blocking socket sends what the reader has room for and a timer retries
 * the rest in order, STATUS= coalesced to the newest (systemd.c). A failed
 * send is logged once and otherwise ignored, as sd_notify(3) recommends.
 * STATUS= texts are sent on one line: control characters become spaces.
 *
 * The service is Type=notify (Debian 12 ships systemd 252: no notify-reload).
 * The sequence systemd sees over a lifetime:
 *
 *   READY=1 + STATUS=            once the listeners are open (engine_run)
 *   STATUS=                      whenever the pools' counts change (≤ 1/s)
 *   RELOADING=1 + MONOTONIC_USEC= + STATUS=   a reload starts
 *   READY=1 + STATUS=            that reload ended (applied or rejected)
 *   WATCHDOG=1                   every half WATCHDOG_USEC, from a loop timer
 *   STOPPING=1 + STATUS=         SIGTERM/SIGINT: draining, then exit
 *   MAINPID=<new pid>            an upgrade's new process is ready (upgrade.h):
 *                                the old one sends it and then nothing more
 *
 * Socket activation: the fds systemd passes (LISTEN_FDS, names from
 * FileDescriptorName= in LISTEN_FDNAMES) are claimed by name during startup:
 *   - a pool named N takes every fd named N. One bound to a path the pool lists
 *     under listen: replaces binding that path (the file is systemd's: we
 *     neither chmod nor unlink it); any other becomes an extra listener of the
 *     pool. Pools take Unix stream sockets only.
 *   - the admin socket takes the fd named "admin" (systemd_take_listen_fd).
 *   - names beginning with '@' are an upgrade's own (upgrade.h; no pool
 *     name has one). SYSTEMD_HANDOFF_FDNAME is the one name whose fds are
 *     SOCK_SEQPACKET: a pool's handoff socket, taken by path (handoff.c).
 *   - any fd left unclaimed, or that is not a listening stream socket, makes
 *     startup fail with a message naming it.
 *   - an fd whose name has a comma is ours, back from the fd store
 *     (fdstore.c names them so; pool names and "admin" cannot have one):
 *     fdstore_adopt() takes each with systemd_take_stored_fd() and checks
 *     it; it is not required to be a listening socket.
 * The order is: systemd_listen_init(), then every taker, then
 * systemd_check_unclaimed(); systemd_listen_done() frees the table.
 *
 * The fd store (FDSTORE=1 / FDSTOREREMOVE=1 with FDNAME=, sd_pid_notify(3)):
 * the same non-blocking sender, with a FIFO of its own (systemd.c says how
 * a queued FDSTORE keeps its fd and how a remove cancels it).
 */
#ifndef WARMPOOL_SYSTEMD_H
#define WARMPOOL_SYSTEMD_H

#include <stddef.h>
#include <sys/types.h>

/* ---- notifications ------------------------------------------------------ */

struct ev_loop;
/* Open the notification socket when $NOTIFY_SOCKET names one (before the
 * first message); 0, also when there is none or it is unusable (logged),
 * -1 when no socket could be made. */
int systemd_notify_open(void) __attribute__((warn_unused_result));
/* Retry what the reader had no room for from a timer on `loop` (from the
 * start of engine_run; messages queued before wait for it). */
void systemd_notify_start(struct ev_loop *loop);
/* Stop retrying, try the queue once more without waiting, close the socket. */
void systemd_notify_close(void);
/* Messages waiting for the reader to drain its queue (for tests and `show`). */
size_t systemd_notify_pending(void);

/* READY=1 and STATUS=: at startup once listening, and again at the end of
 * every reload (after systemd_reloading()), whether it applied or not. */
void systemd_ready(const char *status);
/* STATUS= only: the one-line state shown by `systemctl status`. */
void systemd_status(const char *status);
/* RELOADING=1, MONOTONIC_USEC=<CLOCK_MONOTONIC now, µs> and STATUS=: first
 * thing when a reload starts (SIGHUP or the admin `reload` command). Must be
 * followed by systemd_ready() when it ends, or systemd (≥ 253, with
 * Type=notify-reload) keeps the unit in "reloading". Older managers ignore
 * MONOTONIC_USEC (sd_notify(3): unknown assignments are ignored). */
void systemd_reloading(const char *status);
/* STOPPING=1 and STATUS=: first thing on SIGTERM/SIGINT. */
void systemd_stopping(const char *status);

/* MAINPID=pid: an upgrade's new process is the service's main process now
 * (upgrade.c; sent by the old one, which then says nothing more). */
void systemd_mainpid(pid_t pid);

/* ---- the fd store ---------------------------------------------------------- */

#define SYSTEMD_FDNAME_MAX 255 /* systemd's FDNAME_MAX: longer names are refused */

/* Is there a notification socket to store fds through? */
int systemd_fdstore_possible(void);
/* Would systemd accept `name` as FDNAME= (fdname_is_valid: 1 to 255
 * printable ASCII characters, no ':')? */
int systemd_fdname_valid(const char *name);
/* FDSTORE=1 + FDNAME=name with fd attached (SCM_RIGHTS). Sent at once when
 * nothing waits and the reader has room, else queued with a dup of fd
 * (the caller keeps its own fd either way). 0, or -1 when it was not
 * queued (no notification socket, an invalid name, FDSTORE_QUEUE_MAX
 * waiting, no memory or no fd for the dup). */
int systemd_fdstore(int fd, const char *name) __attribute__((warn_unused_result));
/* FDSTOREREMOVE=1 + FDNAME=name; if an FDSTORE of that name is still
 * queued, both are dropped instead and 1 is returned (the manager never
 * held it), else 0. */
int systemd_fdstore_remove(const char *name);

/* ---- watchdog ------------------------------------------------------------ */

/* How often to send WATCHDOG=1, in seconds: half of $WATCHDOG_USEC (as
 * sd_watchdog_enabled(3) recommends), or 0 when the watchdog is off
 * ($WATCHDOG_USEC unset, or $WATCHDOG_PID names another process). An
 * unparsable value is logged and treated as off. */
double systemd_watchdog_interval(void);
/* WATCHDOG=1: the loop is alive. Sent from a libev timer, never elsewhere. */
void systemd_watchdog(void);

/* ---- socket activation --------------------------------------------------- */

/* The name an upgrade passes handoff sockets under: listening AF_UNIX
 * SOCK_SEQPACKET sockets, the only passed fds that are not stream sockets. */
#define SYSTEMD_HANDOFF_FDNAME "@handoff"

/* Take the fds systemd passed (sd_listen_fds_with_names, which also unsets
 * LISTEN_* so nothing we start inherits them). Each must be a listening
 * stream socket (one named SYSTEMD_HANDOFF_FDNAME: a listening Unix
 * seqpacket socket); each is made non-blocking and close-on-exec. 0 (also
 * when nothing was passed), or -1 with a message in err naming the bad fd. */
int systemd_listen_init(char *err, size_t errlen) __attribute__((warn_unused_result));
/* The next unclaimed passed fd named `name`, now claimed (its new owner
 * closes it), or -1 if there is none. The admin socket calls this with
 * "admin". */
int systemd_take_listen_fd(const char *name);
/* Like systemd_take_listen_fd(), but only an fd that is the Unix socket file
 * at `path` (same path, or same inode as what `path` names). */
int systemd_take_listen_fd_at(const char *name, const char *path);
/* How many unclaimed passed fds are named `name`. */
size_t systemd_count_listen_fds(const char *name);
/* A passed fd (claimed or not) that is the Unix socket file at `path`, or
 * -1; *name gets its name. For messages about a name that does not fit. */
int systemd_listen_fd_at(const char *path, const char **name);
/* A passed fd's address for messages: a path, "@abstract", "1.2.3.4:5",
 * "[::1]:5", or "?". Valid until systemd_listen_done(). */
const char *systemd_listen_fd_address(int fd);
/* Is the passed fd an AF_UNIX socket? */
int systemd_listen_fd_is_unix(int fd);
/* After every taker ran (pools' listeners AND the admin socket): 0 if every
 * passed fd was claimed, else -1 with a message naming the first one left
 * (e.g. `socket activation: fd 3 named "redsi" (/run/warmpool/redsi.sock)
 * matches no pool and is not "admin"`). */
int systemd_check_unclaimed(char *err, size_t errlen) __attribute__((warn_unused_result));
/* The next passed fd from our fd store (a name with a comma), now claimed,
 * or -1; *name gets its name, which the caller frees. */
int systemd_take_stored_fd(char **name);
/* Forget the passed fds, closing those nobody claimed. Idempotent. */
void systemd_listen_done(void);

#endif
