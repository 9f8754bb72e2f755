/*
 * daemon/fdstore.h — warm connections that survive a restart, through
 * systemd's file descriptor store (FileDescriptorStoreMax=, sd_notify(3)).
 *
 * While warmpoold runs, every idle plain-TCP connection it made is also held
 * by the service manager: FDSTORE=1 with a unique FDNAME= when the
 * connection becomes idle, FDSTOREREMOVE=1 when it leaves idle (handed to a
 * client: its protocol state is the session's from then on) or is closed.
 * On the next start of the service (systemctl restart, Restart=on-failure)
 * systemd passes them back (LISTEN_FDS/LISTEN_FDNAMES) and
 * fdstore_adopt() checks each one and puts it on its pool's idle list
 * before READY=1, so the pool starts warm and its backends see no
 * reconnect. fdstore.c says what is checked and what the name holds.
 *
 * Each listening socket a pool bound itself is stored too, and adopted at
 * the next start instead of binding its path again, so clients that
 * connect while no process runs wait in its backlog instead of being
 * refused. Not stored: sockets systemd passed (socket activation: it keeps
 * those anyway), the admin and handoff sockets (bound again).
 *
 * Never stored: TLS connections (their state is in this process), sockets
 * checked in by another process (foreign), connections still connecting.
 *
 * On: daemon.fd_store is `auto` (the default), $NOTIFY_SOCKET names a
 * socket, $INVOCATION_ID is set (systemd runs us as a service) and $FDSTORE
 * is unset (systemd < 254 does not say) or above 0. Off, nothing is sent;
 * fds the store passes anyway are closed and removed from it.
 *
 * In a process an upgrade started (upgrade.h), the fds the old process
 * passed are adopted with the same checks whether the store is on or not;
 * with the store off they are not recorded as stored.
 */
#ifndef WARMPOOL_FDSTORE_H
#define WARMPOOL_FDSTORE_H

#include "engine.h"

struct wp_buf;

/* Why a passed fd was not adopted (each counted, logged once per start). */
enum fdstore_refusal {
	FDSTORE_R_OFF,        /* daemon.fd_store is off (or not under systemd) */
	FDSTORE_R_NAME,       /* its FDNAME= is not one we write */
	FDSTORE_R_NOT_SOCKET, /* not a socket (a pipe, a file) */
	FDSTORE_R_NOT_TCP,    /* a socket, but not a TCP stream socket */
	FDSTORE_R_LISTENING,  /* a listening socket where a connection was stored */
	FDSTORE_R_ERROR,      /* SO_ERROR set */
	FDSTORE_R_CLOSED,     /* not ESTABLISHED: the backend closed it while we were down */
	FDSTORE_R_NO_POOL,    /* no pool of that name now */
	FDSTORE_R_TLS,        /* the pool has tls: now (a plain connection would be wrong) */
	FDSTORE_R_NO_BACKEND, /* its peer is no backend of the pool (removed, or a name not resolved yet) */
	FDSTORE_R_PENDING,    /* unread bytes from the backend (or EOF) */
	FDSTORE_R_EXPIRED,    /* older than the pool's max_lifetime */
	FDSTORE_R_FULL,       /* the pool is at max_connections */
	FDSTORE_R_NOMEM,
	FDSTORE_R_NOT_LISTENING, /* stored as a listening socket, but not a listening Unix stream socket */
	FDSTORE_R_NO_LISTENER,   /* no pool listens at its path now, or the path names another file */
	FDSTORE_R_N,
};

/* Decide whether the store is on (once, at startup), then take every fd
 * systemd passed back from it (systemd_take_stored_fd), check each and
 * make the good ones idle connections of their pools (owned by the pool
 * as if it had connected them: not foreign). Every other one is closed,
 * removed from the store (FDSTOREREMOVE) and counted by reason; one line
 * per reason is logged with its count. Call after systemd_listen_init()
 * and before systemd_check_unclaimed() and the pools' start (their first
 * refill then counts the adopted connections). */
void fdstore_adopt(struct engine *eng);

/* Hooks of the connection state machine (bconn.c). */
/* After bconn_set_state() moved `b` from `old`: becoming idle stores it,
 * leaving idle for anything but closed removes it. */
void fdstore_conn_state(struct bconn *b, enum bconn_state old);
/* Greeting bytes arrived on the idle `b`: store it again under a name
 * that carries them (or remove it when they do not fit in a name). */
void fdstore_conn_greeted(struct bconn *b);
/* bconn_close(), before close(): a stored connection is removed from the
 * store and shut down (so the manager's copy dies with ours), unless the
 * daemon is stopping: then the store keeps it for the next start. */
void fdstore_conn_closing(struct bconn *b);

/* Pools' listening sockets (listener.c). */
/* A listener just bound its socket file: store it (FDNAME names the path
 * and the file's device and inode). */
void fdstore_listener_opened(const struct listener *l);
/* listener_close(), before close(): 1 when the socket stays in the store
 * for the next start (the daemon is stopping): its file must then be kept;
 * else it is removed from the store and 0 is returned. */
int fdstore_listener_closing(const struct listener *l);

/* An upgrade (upgrade.c) passes the same fds under the same names: */
/* the name of the idle connection b (plain TCP, not foreign, the name
 * fits SYSTEMD_FDNAME_MAX); 0 with it in name[cap], else -1. */
int fdstore_conn_pass_name(const struct bconn *b, char *name, size_t cap) __attribute__((warn_unused_result));
/* The name of the pool listener l when it bound its own socket file (a
 * socket systemd passed goes by its pool's name); 0, else -1. */
int fdstore_listener_pass_name(const struct listener *l, char *name, size_t cap)
    __attribute__((warn_unused_result));

/* The warmpool_fdstore_* series for `show metrics` (metrics_render). */
void fdstore_metrics(struct wp_buf *out);

/* (listener.c) A listening socket passed back from the store, bound at
 * l->cfg->path to the file with device `dev` and inode `ino` (checked):
 * l serves it as if it had bound it (the file is ours: removed when the
 * listener closes for good). */
void listener_adopt_stored(struct listener *l, int fd, dev_t dev, ino_t ino);

/* (bconn.c) An adopted connection (bconn_new, proven, opened_at and any
 * greeting set) becomes idle as a fresh one does, its greeting counted as
 * one that arrived. */
void bconn_adopt_idle(struct bconn *b);

#endif
