/*
 * daemon/engine.h — the objects of the warmpoold engine and how they relate.
 *
 *   engine ─┬─ pool "redis" ─┬─ backend 127.0.0.1:6379 (state, health, backoff)
 *           │                │    ├─ conns[CONNECTING|IDLE|ACTIVE] (struct bconn, one list per state)
 *           │                │    └─ health check (its own short-lived connection)
 *           │                ├─ listener /run/warmpool/redis.sock
 *           │                ├─ waiting   (sessions queued for a connection, FIFO)
 *           │                └─ relaying  (sessions pairing a client with a bconn)
 *           └─ graveyard: bconns/sessions closed inside a callback, freed once
 *              per loop iteration from an ev_prepare watcher (DESIGN.md rule 5)
 *
 * One libev loop, one thread: no locks. Every struct that owns a socket owns
 * the watchers for it. A bconn's state is the list it sits on and changes only
 * in bconn_set_state(), a session's only in session_set_state() (births and
 * deaths included: PgBouncer's change_server_state()); the graveyard is
 * emptied by bconn_reap() and session_reap(). A backend's availability
 * changes only in backend_set_state(). Log lines about one of these objects
 * go through bconn_log(), session_log() or backend_log(), which print its
 * context ("pool=%s backend=%s conn=%llu ...").
 *
 * Calls go down the module picture in docs/ARCHITECTURE.md; the one cycle is
 * pool ↔ bconn ↔ session. Lower modules hand events up only through
 * function pointers their owner sets: listener.on_accept and the handoff
 * socket's on_client/on_checkin (clients and checkins for the pool),
 * backend.on_change (pool_backend_changed), and admin's reload
 * (engine_reload, given to admin_create).
 */
#ifndef WARMPOOL_ENGINE_H
#define WARMPOOL_ENGINE_H

#include <ev.h>
#include <stdarg.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/un.h>

#include "addr.h"
#include "config.h"
#include "dns.h"
#include "histogram.h"
#include "unixsock.h"
#include "list.h"
#include "pipes.h"
#include "tls.h"

struct engine;
struct pool;
struct session;

/* ---- backend connections (bconn.c) ------------------------------------ */

enum bconn_state {
	BCONN_CONNECTING,            /* non-blocking connect() in flight, connect_timeout armed */
	BCONN_IDLE,                  /* established, watched for EOF/errors and greeting bytes */
	BCONN_ACTIVE,                /* owned by a session */
	BCONN_RESETTING,             /* reuse: the session ended cleanly; reset exchange or quiet period */
	BCONN_NLISTS,                /* states above have a list in struct backend */
	BCONN_CLOSED = BCONN_NLISTS, /* fd closed, waiting in the graveyard (eng->dead_conns) */
	BCONN_NEW,                   /* being built: on no list yet (bconn_new) */
};

#define BCONN_GREETING_MAX 16384 /* unprompted backend bytes kept for the first client */
#define BCONN_SETTLE       0.2   /* seconds a new connection must live to count as a success */
#define LIFETIME_JITTER    0.2   /* max_lifetime / max_idle_time end up to this fraction early */
/* A TLS pool waits for this long without a handout before it replaces the
 * connections a burst of clients took (pool_refill): a refill's handshake
 * costs a millisecond of CPU, which a burst's next client would wait for. */
#define REFILL_LULL        0.001

struct bconn {
	struct list_node node; /* on be->conns[state] or the graveyard */
	enum bconn_state state; /* changed only by bconn_set_state() */
	struct pool *pool;
	struct backend *be;
	uint64_t id;
	int fd;
	ev_io io;                /* connecting: EV_WRITE; idle: EV_READ; active: the session's */
	ev_timer timer;          /* connect_timeout while connecting */
	ev_timer settle;         /* fires BCONN_SETTLE after connect: the connection is proven */
	ev_tstamp started_at;    /* connect() issued */
	ev_tstamp opened_at;     /* established (max_lifetime counts from here) */
	ev_tstamp idle_since;    /* became idle (idle_timeout, max_idle_time) */
	float jitter;            /* [0, 1): this connection's share of LIFETIME_JITTER */
	unsigned proven : 1;     /* survived the settle time: the backend's backoff was reset */
	unsigned greeted : 1;    /* idle with greeting bytes: counted in be->n_greeted_idle */
	unsigned had_greeting : 1; /* the backend greeted on this connection: never reused */
	unsigned foreign : 1;    /* came back from another process (checkin): that process may keep a
	                          * copy sharing this file description (O_NONBLOCK, SO_LINGER) */
	unsigned served : 1;     /* has carried a session: an unprompted byte now is a late reply of
	                          * that session, never a greeting (closed, bconn.c bconn_idle_cb) */
	uid_t owner_uid;         /* foreign: the uid that checked it in (its lease's); only a client of
	                          * that uid may get it, as that uid may still hold a copy */
	size_t reset_got;        /* resetting: bytes of reset_expect matched so far */
	unsigned char *reset_want; /* resetting with a {nonce}: reset_expect with this reset's nonce, or NULL */
	size_t reset_want_len;
	SSL *ssl;                /* tls: pools: the connection's TLS (tls.c), NULL for plain TCP */
	enum tls_phase tls_phase; /* connecting: how far the starttls preamble and handshake are */
	unsigned tls_sent;       /* starttls request bytes written */
	ev_tstamp tcp_at;        /* the TCP connect completed (handshake time counts from here) */
	ev_tstamp hs_at;         /* the TLS handshake completed */
	uint32_t tls_gen;        /* the pool's tls_gen when opened: an older one is recycled gradually */
	unsigned char *greeting; /* allocated on first unprompted byte */
	uint32_t greeting_len;
};

/* ---- backends (backend.c) --------------------------------------------- */

#define TLS_SESSIONS_MAX 8 /* resumable TLS sessions kept per backend (tls.c) */

/* A backend's TLS: its cache of sessions, counters, and its newest
 * connection's protocol, cipher and certificate expiry (tls.c). */
struct backend_tls {
	SSL_SESSION *sessions[TLS_SESSIONS_MAX]; /* the newest last */
	size_t n_sessions;
	uint64_t handshakes[TLS_R_N];  /* by result */
	struct wp_histogram h_handshake; /* seconds from TCP established to a verified handshake */
	char version[16];  /* e.g. "TLSv1.3"; "" before the first handshake */
	char cipher[64];
	int64_t cert_expiry; /* the server certificate's notAfter (Unix time), 0 before one */
};

enum backend_state {
	BACKEND_UP,       /* takes handouts and new connections */
	BACKEND_DOWN,     /* `fall` failures in a row: no handouts; probed until `rise` successes */
	BACKEND_DRAINING, /* admin: no new handouts or connections; sessions run to their end */
	BACKEND_DISABLED, /* admin: as draining, and not health-checked */
	BACKEND_UNKNOWN,  /* nothing proved it yet (no check passed, no connection lived BCONN_SETTLE):
	                   * serves as up does, since trying it is the only way to learn, but is not
	                   * counted or shown as up; `fall` failures take it down, one proof up */
};

/* May a backend in state `st` be tried (up, or not yet proven either way)?
 * The pool's failover (backups, fail_fast) counts these as available. */
static inline int backend_available(enum backend_state st)
{
	return st == BACKEND_UP || st == BACKEND_UNKNOWN;
}

/* Why a connection attempt or a check failed (relayd's enum host_error model). */
enum backend_reason {
	REASON_NONE,
	REASON_REFUSED, /* ECONNREFUSED */
	REASON_TIMEOUT, /* connect_timeout (or the check's timeout) expired */
	REASON_RESET,   /* reset by the backend before the connection was proven */
	REASON_CLOSED,  /* closed by the backend before the connection was proven */
	REASON_UNREACHABLE,
	REASON_BAD_REPLY, /* a health check's reply did not match */
	REASON_TLS,       /* the TLS preamble, handshake or verification failed (the log line says why) */
	REASON_DNS,       /* its name stopped resolving for longer than dns.hold */
	REASON_OTHER,     /* any other errno: see the log line */
	REASON_N,
};

/* A backend's active health check (health.c): one short-lived connection at a
 * time, never one a client may get. */
#define HEALTH_REPLY_MAX 512 /* reply bytes kept for matching and for the log */

enum health_phase { HC_WAITING, HC_CONNECTING, HC_HANDSHAKING, HC_SENDING, HC_READING };

struct health {
	enum health_phase phase;
	ev_timer timer;      /* next check, then the running check's timeout */
	ev_io io;            /* the check connection: EV_WRITE to connect/send, EV_READ for the reply */
	int fd;              /* -1 between checks */
	size_t sent;         /* request bytes written so far */
	unsigned char *send; /* the request for this backend (presets: built at start) */
	size_t send_len;
	unsigned char *reply; /* HEALTH_REPLY_MAX bytes while a check runs */
	SSL *ssl;             /* tls: pools: the check's TLS (a check is a full handshake) */
	enum tls_phase tls_phase;
	unsigned tls_sent;
	ev_tstamp tcp_at;
	size_t reply_len;
	ev_tstamp began_at;  /* the running (or last) check started */
	uint64_t n_ok;
	uint64_t n_failed[REASON_N]; /* by reason */
	unsigned done : 1;           /* a check has finished: the three fields below are set */
	enum backend_reason last;    /* the last finished check's result (REASON_NONE: passed) */
	ev_tstamp last_at;           /* when it finished (ev_now time) */
	ev_tstamp last_took;         /* seconds it took */
	struct health_role *role;    /* postgres_primary, redis_master: the exchange's state and the
	                              * SCRAM key kept between checks (health.c); NULL for other types */
};

/* What a backend tells its pool when its state changed (from `old`): set by
 * the pool that creates it, so backend.c does not call up into pool.c. */
struct backend;
typedef void backend_changed_fn(struct pool *p, struct backend *be, enum backend_state old);

struct backend {
	struct pool *pool;
	backend_changed_fn *on_change; /* pool_backend_changed, set by pool_create */
	const struct cfg_backend *cfg; /* its entry in the pool's backends: (weight, backup, host) */
	size_t target;    /* that entry's index, to find it again in a reloaded config */
	const char *name; /* "host:port" as configured, or the address of a named backend (addr_name) */
	struct dns_name *dns; /* the name whose answer it came from, or NULL (an IP literal) */
	struct sockaddr_storage addr; /* where its connections go */
	socklen_t addrlen;
	char addr_name[WP_ADDR_STRLEN]; /* "ip:port" / "[v6]:port" of a named backend */
	size_t slot;      /* its index in pool->backends */
	unsigned gone : 1;  /* its address left the name's answer: draining until its last connection ends */
	unsigned dns_down : 1; /* its name's lookups failed for longer than hold: down until it answers */
	enum backend_state state;
	struct list conns[BCONN_NLISTS]; /* this backend's connections, one list per state */
	size_t n_greeted_idle;           /* idle connections whose greeting has arrived (at the front) */
	unsigned health_rises, health_fails; /* consecutive health successes / failures (checks, or
	                                      * connects without a check): `rise` and `fall` count these */
	uint64_t went_up, went_down;     /* transitions, for metrics */
	int64_t wrr_current;             /* smooth weighted round robin credit */
	char last_error[160];            /* the last failure, as logged (bad replies show their bytes) */
	ev_tstamp error_at;              /* when last_error was set (ev_now time; 0: never) */
	ev_tstamp changed_at;            /* the last state change (ev_now time; the pool's start at first) */
	struct health hc;
	enum backend_reason last_reason; /* of the last failed connection attempt */
	unsigned connect_failures;  /* consecutive failed connection attempts since the last success (backoff) */
	ev_tstamp next_attempt;     /* no new connect before this (ev_now time) */
	ev_tstamp failed_at;        /* when the last failure was counted */
	uint64_t backoff_ms;        /* the delay chosen after the last failure */
	unsigned n_unproven;        /* connecting, or established less than BCONN_SETTLE ago */
	uint64_t connects_ok, connects_failed; /* established / failed attempts */
	struct backend_tls tls;
	/* The backend closes idle connections itself (a server idle timeout,
	 * close_notify or FIN): the longest idle time seen at such a close, and
	 * when. While recent, a connection idle nearly that long is not handed
	 * out: the client's request would cross the backend's close. */
	ev_tstamp idle_close_age, idle_close_seen;
};

const char *backend_reason_str(enum backend_reason r);
const char *backend_state_str(enum backend_state st);
enum backend_reason backend_reason_from_errno(int err);
/* The one place availability changes; logs only when it does, and applies
 * the effects: leaving `up` closes the backend's idle connections and may
 * switch the pool to its backups; coming up starts a refill. */
void backend_set_state(struct backend *be, enum backend_state st, const char *why);
/* One health outcome: a check's, or a connection attempt's (see health_counts_connects).
 * `rise` successes in a row bring a down backend up, `fall` failures take an up
 * (or unknown) one down; the first success proves an unknown one up. */
void backend_health_ok(struct backend *be, const char *how);
void backend_health_failed(struct backend *be, const char *why);
/* A connection was proven: reset the backoff. */
void backend_attempt_succeeded(struct backend *be);
/* May a new connection be started to this backend at time `now` (backoff
 * and the one-probe rule; not its state)? */
int backend_can_connect(const struct backend *be, ev_tstamp now);
/* Write the backend's log context, "pool=P backend=B" (and " name=N" for a
 * named backend) into buf; snprintf's result. */
int backend_ctx(const struct backend *be, char *buf, size_t len);
/* Log "pool=%s backend=%s: " and the message at `prio`. */
void backend_log(const struct backend *be, int prio, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* ---- health checks (health.c) ------------------------------------------ */

/* Prepare the backend's check (builds the preset request); -1 on no memory. */
int health_init(struct backend *be) __attribute__((warn_unused_result));
/* Schedule the first check at a random offset within `interval` (no-op when
 * the pool has no active check or the backend is disabled). */
void health_start(struct backend *be);
/* Stop and close the running check, if any. */
void health_stop(struct backend *be);
/* health_init's undo: stop the check and free its request (the backend stays). */
void health_destroy(struct backend *be);
/* Does the pool's reply matcher accept `reply` (pure, unit-tested)? 1 yes,
 * 0 not yet (read more), -1 never. */
int health_match(const struct cfg_health *h, const unsigned char *reply, size_t len);

/* ---- listeners (listener.c) ------------------------------------------- */

/* Denials of one socket's allow: rule, for rate-limited logging. */
struct peer_gate {
	ev_tstamp logged_at; /* when the last denial was logged */
	uint64_t unlogged;   /* denials since then that were not logged */
};

#define PEER_GATE_LOG_EVERY 1.0 /* seconds: at most one denial line per socket per this */

/* May the client accepted as `cfd` on socket `path` of pool `p` use it?
 * Nothing is checked when `allow` is not enabled. Otherwise the peer's
 * SO_PEERCRED uid, or its gid (the primary group only), must be listed; uid
 * 0 is not special. Returns 1 when allowed; 0 when denied, or when the
 * credentials cannot be read: then cfd is closed, counted in clients_denied
 * and logged (info with uid, gid and pid; warning when SO_PEERCRED failed),
 * at most one line per PEER_GATE_LOG_EVERY per gate, each line counting
 * the denials left out since the previous one. For every socket clients
 * connect to (listeners; handoff sockets should call it too). */
int listener_admit(struct pool *p, const struct cfg_allow *allow, struct peer_gate *g, const char *path,
                   int cfd) __attribute__((warn_unused_result));

/* What a listener or the handoff socket does with a client it admitted, and
 * the handoff socket with a connection checked in: the owning pool sets
 * them when it creates the listener, so listener.c and handoff.c hand
 * clients up without calling into pool.c. */
typedef void listener_accept_fn(struct pool *p, int cfd);
typedef void handoff_checkin_fn(struct pool *p, int fd, uid_t owner, ev_tstamp opened_at);

struct listener {
	struct pool *pool;
	listener_accept_fn *on_accept; /* called with `pool` for each admitted client */
	const struct cfg_listen *cfg;
	int fd;
	ev_io io;
	ev_timer pause;      /* accept paused after EMFILE/ENFILE */
	struct sock_unix us; /* the socket file we created (removed at close if still ours) */
	unsigned passed : 1; /* passed by systemd (socket activation): never chmod'ed or unlinked */
	struct peer_gate gate; /* denials by allow: (the pool's allow: for a passed extra socket) */
	/* A passed socket at a path the pool does not list: cfg points at
	 * passed_cfg (so this struct must not move once cfg is set). */
	struct cfg_listen passed_cfg;
	char passed_path[sizeof(((struct sockaddr_un *)0)->sun_path) + 2];
};

/* Bind and listen; 0 or -errno with a message in err. */
int listener_open(struct listener *l, char *err, size_t errlen) __attribute__((warn_unused_result));
void listener_start(struct listener *l);
void listener_close(struct listener *l); /* stops, closes, removes our socket file */
/* Hand an open listening socket to another pool's listener (reload). */
void listener_move(struct listener *dst, struct listener *src);
/* Reload of a pool with extra passed sockets (at paths no listen: names):
 * reserve, in the new pool, one slot per extra of the old pool (can fail:
 * call it while preparing, before dst's listeners start, since the array
 * moves), then, when committing, move them over (cannot fail). Extras sit
 * after the configured listeners: index < cfg->n_listen is configured. */
int listener_reserve_extras(struct pool *dst, const struct pool *src, listener_accept_fn *on_accept,
                            char *err, size_t errlen)
    __attribute__((warn_unused_result));
void listener_take_extras(struct pool *dst, struct pool *src);
/* Socket activation, before pool_open_listeners(): take the fds systemd
 * passed under the pool's name (systemd.h). One at a listen path replaces
 * binding it; others become extra listeners appended to p->listeners,
 * handing their clients to `on_accept`. */
int listener_adopt_passed(struct pool *p, listener_accept_fn *on_accept, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* ---- handoff sockets (handoff.c) ---------------------------------------- */

struct handoff;
#define HANDOFF_LEASES_MAX 4096 /* sockets handed out that may come back, per handoff socket: the
                                 * oldest lease is dropped beyond (its socket can no longer come back) */
/* A lease: the backend socket `fd` is about to be handed to a client of
 * `uid`; remember its identity (SO_COOKIE: unique for the boot, never
 * reused) so that this socket, and only it, can be checked in once, by the
 * same uid (handoff.c's checkin looks it up and removes it). `opened_at` is
 * the connection's (max_lifetime still counts from it after a checkin).
 * Returns 0, or -1 when the socket's identity cannot be read or memory is
 * short (then the socket simply cannot be checked in). */
int handoff_lease(struct handoff *h, int fd, uid_t uid, ev_tstamp opened_at) __attribute__((warn_unused_result));
/* `fd` is about to leave the process (sent to a client) while still open
 * elsewhere: with every watcher on it stopped, remove it from the loop's
 * epoll set now. Epoll registers the open file description, so closing our
 * fd leaves the registration alive while the client holds the socket; its
 * events then reach libev for an fd it no longer knows, and libev rebuilds
 * its whole epoll set each time. A no-op on other backends. */
void handoff_forget_fd(struct ev_loop *loop, int fd);
/* Bind the pool's SOCK_SEQPACKET handoff socket; NULL with a message in err.
 * Checkout requests go to `on_client`, checkins to `on_checkin`, with the
 * socket's pool (which handoff_move changes). */
struct handoff *handoff_open(struct pool *p, const struct cfg_listen *cfg, listener_accept_fn *on_client,
                             handoff_checkin_fn *on_checkin, char *err, size_t errlen);
void handoff_start(struct handoff *h);
const char *handoff_path(const struct handoff *h);
/* A reload's new pool takes the socket over (start it again after). */
void handoff_move(struct handoff *h, struct pool *to);
/* Stop, close, remove the socket file if still ours. Accepts NULL. */
void handoff_close(struct handoff *h);

/* ---- the byte mover (relay.c) ------------------------------------------ */

#define SESSION_BUF  16384 /* a copied read: at most this much; a full one makes the direction bulk */
#define RELAY_COPY_BUF 65536 /* a read of a direction that never splices (TLS, foreign): at most this much */
#define RELAY_ROUNDS 4     /* reads per direction per wake-up, for fairness */
/* Reset nonces drawn from OpenSSL's CSPRNG per RAND_bytes call: each call
 * checks for a fork with getpid(), a system call per reused session
 * otherwise. 32 × 16 bytes. */
#define NONCE_BATCH  32

/* One direction of a session. Reads are copied (recv into the engine's
 * scratch buffer, send straight on) until one fills SESSION_BUF: from then
 * on the direction is bulk and moves through a borrowed pipe with splice.
 * Small messages cost less copied than spliced. Bytes that the destination
 * could not take at once (and a greeting) wait in a buffer of their own.
 * Pipe and buffer are released the moment they are empty, so an idle
 * session holds neither. */
struct relay_dir {
	unsigned char *buf;   /* pending bytes: malloc'd, or the engine's scratch while `scratch` */
	uint32_t off, len;    /* pending buffered bytes: buf[off .. off+len) */
	struct pipes_pipe *pipe; /* borrowed while in_pipe > 0 */
	uint32_t in_pipe;     /* spliced in, not yet spliced out */
	unsigned eof : 1;     /* the source said EOF */
	unsigned shut : 1;    /* EOF passed on: shutdown(dst, SHUT_WR) done */
	unsigned bulk : 1;    /* a read filled SESSION_BUF: splice from now on */
	unsigned scratch : 1; /* buf is the engine's scratch (only inside relay_flow) */
	unsigned copy : 1;    /* never splice: the backend socket is foreign (splice waits by the
	                       * file's O_NONBLOCK, which another process may clear) */
	uint64_t bytes;       /* delivered in this direction */
	uint64_t read;        /* read from the source (client_/server_idle_timeout activity) */
};

/* One side of a relay: its socket, and its TLS when bytes are encrypted in
 * user space (tls.c; NULL: plain). A TLS side is never spliced: this is
 * the one seam a kernel TLS path would change (docs/TLS.md). */
struct relay_end {
	int fd;
	SSL *tls;
};

/* Whether d has bytes not yet delivered (buffered or in its pipe). */
int relay_pending(const struct relay_dir *d);
/* Send what is pending in d to dst: the buffer first (it holds older bytes,
 * e.g. the greeting), then the pipe; both are given back once empty.
 * 0, or -errno from dst. */
int relay_flush(struct engine *eng, struct relay_dir *d, struct relay_end dst);
/* Which side a relay_flow() error came from. */
enum relay_side { RELAY_SIDE_SRC, RELAY_SIDE_DST };
/* relay_flow()'s `hold_eof`: pass EOF on, keep it back while no byte went
 * this way (the caller may re-pair instead), or always keep it (reuse:). */
enum { RELAY_HOLD_NONE, RELAY_HOLD_IF_EMPTY, RELAY_HOLD_ALWAYS };
/* relay_flow()'s answer when `src_gone` and the source is gone both ways. */
#define RELAY_SRC_GONE 1
/* Move bytes src -> dst (at most RELAY_ROUNDS reads), then pass EOF on per
 * `hold_eof` (not when `last`: the caller closes, close() sends the FIN).
 * Nothing is left in the engine's scratch on return. 0, RELAY_SRC_GONE, or
 * -errno with *side set (-ENOMEM: no buffer for undelivered bytes). */
int relay_flow(struct engine *eng, struct relay_dir *d, struct relay_end src, struct relay_end dst, int last,
               int hold_eof, int src_gone, enum relay_side *side);
/* Give back d's pipe (reusable only if empty) and free its buffer. */
void relay_dir_release(struct engine *eng, struct relay_dir *d);
/* Whether the peer of the socket `fd` closed it entirely (POLLHUP), not just
 * half-closed it (it may still read an answer then). */
int relay_peer_gone(int fd);

/* ---- sessions (session.c) --------------------------------------------- */

#define SESSION_RETRIES 3 /* re-pairings per client when a connection dies before any byte */

enum session_state {
	SESSION_WAITING,  /* on pool->waiting: queue_timeout armed */
	SESSION_RELAYING, /* on pool->relaying: paired with a bconn */
	SESSION_CLOSED,   /* in the graveyard (eng->dead_sessions) */
	SESSION_NEW,      /* being built: on no list yet (session_new) */
};

struct session {
	struct list_node node;    /* on the list its state names */
	enum session_state state; /* changed only by session_set_state() */
	struct pool *pool;
	uint64_t id;
	int cfd; /* the local client */
	ev_io cio;
	ev_timer timer; /* queue_timeout while waiting; client_/server_idle_timeout while relaying */
	ev_tstamp client_active, backend_active; /* a byte last moved from or to that side */
	ev_tstamp accepted_at;
	ev_tstamp started_at; /* first paired with a connection (session duration) */
	struct bconn *b;
	unsigned retries;      /* re-paired after a connection died before any byte (SESSION_RETRIES) */
	unsigned handoff : 1;  /* from the handoff socket: gets the backend fd itself, no relay */
	unsigned uid_read : 1; /* uid below was looked up (SO_PEERCRED, lazily: pool_session_uid) */
	unsigned uid_known : 1; /* ... and is the peer's (a Unix socket that told): else no foreign conn */
	uid_t uid;             /* the client's uid, once uid_known */
	pid_t pid;             /* ... and the pid that connected (show clients), once uid_known */
	struct relay_dir up;   /* client -> backend */
	struct relay_dir down; /* backend -> client */
};

/* A new waiting session for the accepted client `cfd` (queue_timeout
 * armed), or NULL on no memory (cfd is then still the caller's). */
struct session *session_new(struct pool *p, int cfd);
/* The one place a session changes state, and so list: leaves the list of
 * its state, joins the one of `st` (waiting: at the back) and logs
 * "old -> new" at debug. */
void session_set_state(struct session *s, enum session_state st);
/* A reload retired the session's pool: the waiting session `s` moves to the
 * back of `to`'s queue (through the same transition). */
void session_move_to(struct session *s, struct pool *to);
/* Pair a waiting session with an idle, liveness-checked connection. */
void session_start(struct session *s, struct bconn *b);
/* Before a handout: if the waiting client's hang-up is already known to the
 * loop (its watcher's event is pending this iteration), handle it now:
 * returns 1 when the client was gone and is closed (counted clients_gone),
 * else 0. Costs no syscall when nothing is pending. */
int session_gone_now(struct session *s);
/* Close both sides and move the session to the graveyard. */
void session_close(struct session *s, const char *why);
/* Free the sessions in the graveyard (from the engine's reaper; touches no
 * pool, which may be gone already at shutdown). */
void session_reap(struct engine *eng);
/* Log "pool=%s client=%llu: " and the message at `prio` (a line about the
 * client and its connection: bconn_log_for). */
void session_log(const struct session *s, int prio, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* ---- pools (pool.c) ---------------------------------------------------- */

struct pool_stats {
	uint64_t clients_accepted;
	uint64_t clients_served;    /* paired with a connection */
	uint64_t clients_refused;   /* over max_clients */
	uint64_t clients_timed_out; /* waited queue_timeout */
	uint64_t clients_gone;      /* hung up while waiting: dropped, never served nor timed out */
	uint64_t sessions_idle_closed; /* closed by client_idle_timeout or server_idle_timeout */
	uint64_t clients_retried;   /* re-paired: their connection died before any byte */
	uint64_t clients_failed_fast; /* closed at once: no backend up and fail_fast set */
	uint64_t clients_denied;    /* closed at accept: not allowed by allow: (never counted as accepted) */
	uint64_t conns_opened, conns_failed;
	uint64_t stale_at_checkout; /* failed the liveness check at handout */
	uint64_t idle_lost;         /* idle connections closed or reset by the backend */
	uint64_t conns_recycled;    /* closed by max_lifetime or max_idle_time */
	uint64_t conns_idle_closed; /* closed by idle_timeout above the floor */
	uint64_t conns_handed_back; /* idle on a backup or lower-priority backend, closed once preferred ones were
	                             * warm (not a checkin: that is pool_checkin, counted in conns_reused or
	                             * conns_reuse_refused) */
	uint64_t handouts;          /* connections given to clients (first pairings and re-pairings) */
	uint64_t handoffs;          /* backend sockets handed to libwarmpool clients (SCM_RIGHTS) */
	uint64_t conns_reused;      /* returned to idle after a clean session end (reuse:) */
	uint64_t conns_reuse_refused; /* not reused: unread bytes, failed reset, backend spoke or closed */
	uint64_t bytes_up, bytes_down; /* relayed client -> backend, backend -> client */
};

/* A configuration replaced by a reload, kept while retired pools use it. */
struct old_cfg {
	struct list_node node; /* on eng->old_cfgs */
	struct wp_config *cfg;
	size_t pools; /* retired pools still pointing into it */
};

struct pool {
	struct list_node node; /* on eng->retired once retired by a reload */
	struct old_cfg *old_cfg; /* retired: the config it still points into */
	struct engine *eng;
	const struct cfg_pool *cfg;
	const char *name;
	struct backend **backends; /* IP literals first made, then named ones as their answers come */
	size_t n_backends, cap_backends;
	struct dns_name **names;   /* one per backends: entry written as a host name (dns.c) */
	size_t n_names;
	size_t rr;                 /* round-robin cursor over backends */
	size_t n_conns[BCONN_NLISTS]; /* connections per state, all backends */
	unsigned n_up_primary, n_up_backup; /* backends available (up or unknown: backend_available) */
	struct list waiting; /* FIFO */
	struct list relaying;
	struct listener *listeners;
	size_t n_listeners;
	struct handoff *handoff; /* the handoff socket, or NULL */
	ev_timer refill_timer;        /* armed while every backend is in backoff */
	ev_timer janitor;             /* lifetimes, idle sweeps, hand-back (DESIGN.md rule 6) */
	ev_tstamp last_recycle;       /* max_lifetime closes are spaced out from each other */
	ev_tstamp last_handout;       /* when a client last got a connection (a TLS pool refills in lulls) */
	struct list_node refill_node; /* on eng->refill_soon while a deferred refill is due */
	unsigned warm : 1;            /* the floor was reached since the last outage */
	unsigned may_hand_back : 1;   /* has backups or balance first: connections can be misplaced */
	unsigned retiring : 1;        /* replaced or removed by a reload: only its sessions run on */
	unsigned has_gone : 1;        /* a departed backend waits for its last connection (pool_reap_gone) */
	uint32_t tls_gen;             /* bumped when a reload changes the tls: settings or files (tls.digest) */
	struct pool_stats stats;
	struct wp_histogram h_wait;    /* seconds a client waited for its connection */
	struct wp_histogram h_connect; /* seconds a backend connect took */
	struct wp_histogram h_session; /* seconds a session lasted */
};

/* May `be` take handouts and new connections now? Up or unknown (it must
 * be tried to be known), and a backup only while no primary is either. */
int pool_backend_serves(const struct pool *p, const struct backend *be);
/* Pick the backend whose idle connection the next client gets (by the
 * pool's balance), or -1 when no serving backend has one. */
long pool_pick_handout(struct pool *p);
/* The same for the waiting session `s`: only backends with an idle
 * connection `s` may get (pool_conn_for); NULL: any idle connection. */
long pool_pick_handout_for(struct pool *p, struct session *s);
/* The client's uid (SO_PEERCRED, read once and kept on the session); 0 and
 * *uid set, or -1 when the peer is not a local process that tells (TCP). */
int pool_session_uid(struct session *s, uid_t *uid);
/* Pick the backend for the next new connection, or -1 (pure but for the
 * round-robin cursor; unit-tested). */
long pool_pick_connect(struct pool *p, ev_tstamp now);

/* The counts the refill plan is computed from (pure, unit-tested). */
struct pool_counts {
	size_t idle, active, connecting, waiting; /* idle and connecting: on preferred backends */
	uint32_t min_idle, max_connections;
	size_t other; /* idle or connecting elsewhere (backups, probes): in the total only */
};

/* How many new connections to start now: enough for the floor plus every
 * waiting client, never beyond max_connections in total. */
size_t pool_plan_connects(const struct pool_counts *c);
/* The counts of `p` now: idle and connecting on preferred backends. */
struct pool_counts pool_counts(const struct pool *p);
/* A TLS pool in a burst of handouts replaces what clients took only in the
 * first lull (REFILL_LULL without a handout), so that the handshakes, a
 * millisecond of CPU each, do not run between the burst's clients; unless
 * clients wait or the idle (and connecting) connections are down to a
 * quarter of the floor. 0 when the refill may run now, else the time it
 * may (pure, unit-tested). */
ev_tstamp pool_refill_after(const struct pool *p, const struct pool_counts *c, ev_tstamp now);
/* For `first`: the index of the first serving backend usable right now
 * (backends after it are not preferred); n_backends for other balances. */
size_t pool_first_cutoff(const struct pool *p);
/* Serves, and (for `first`) not after `cutoff`: its connections count
 * toward the floor and are never handed back. */
int pool_backend_preferred_at(const struct pool *p, const struct backend *be, size_t cutoff);
int pool_backend_preferred(const struct pool *p, const struct backend *be);
/* May session `s` (NULL: anyone) get connection `b`? Foreign connections
 * only go to a client of the uid that checked them in. */
int bconn_usable_by(const struct bconn *b, struct session *s);
/* The first idle connection of `be` that `s` may get, or NULL. */
struct bconn *pool_conn_for(struct backend *be, struct session *s);

/* ---- the janitor (janitor.c) --------------------------------------------- */

/* Make sure the pool's janitor runs no later than `at` (not for a stopping
 * engine or a retiring pool; an infinite `at` changes nothing). */
void janitor_soon(struct pool *p, ev_tstamp at);
/* A started pool's first sweep, JANITOR_PERIOD from now. */
void janitor_start(struct pool *p);
/* The janitor timer's callback (pool_create sets it): sweep, re-arm, refill. */
void janitor_cb(struct ev_loop *loop, ev_timer *w, int revents);

struct pool *pool_create(struct engine *eng, const struct cfg_pool *cfg);
void pool_destroy(struct pool *p);
int pool_open_listeners(struct pool *p, char *err, size_t errlen) __attribute__((warn_unused_result));
/* The same, except paths one of the `old` pools is listening on: those are
 * taken over with pool_take_listeners() when the reload commits. */
int pool_open_listeners_except(struct pool *p, struct pool **old, size_t n_old, char *err, size_t errlen)
    __attribute__((warn_unused_result));
void pool_take_listeners(struct pool *p, struct pool **old, size_t n_old);
/* Point an existing pool at its settings in a new config (same sockets and
 * backends); restart health checks when they changed. */
void pool_rebind(struct pool *p, const struct cfg_pool *cfg, int health_changed);
/* A reload replaced or removed the pool: stop it, hand waiting clients to
 * `successor` (or close them); its running sessions go on. */
void pool_retire(struct pool *p, struct pool *successor);
void pool_start(struct pool *p);
/* A reload replaced `old` by `p`: each name of p that old had too starts
 * from old's answer and schedule (no lookup burst, no reconnects). Before
 * pool_start(p). */
void pool_seed_names(struct pool *p, const struct pool *old);
/* Same family, address and port (and IPv6 scope). */
int pool_same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b);
/* A backend at `sa` for entry `target` of the pool's config, from name `n`
 * (NULL: the entry's IP literal); counted as available (unknown), in config
 * order. Health checks are not started. NULL when out of memory. */
struct backend *pool_backend_add(struct pool *p, size_t target, struct dns_name *n,
                                 const struct sockaddr_storage *sa, socklen_t len);
/* Its address left its name's answer: drain it (no handouts or new
 * connections, idle ones closed now, active sessions finish); it is freed
 * by pool_reap_gone once its last connection has ended. */
void pool_backend_depart(struct backend *be, const char *why);
/* A departed (or dns-down) backend is in its name's answer again: unknown,
 * checked from scratch. */
void pool_backend_return(struct backend *be);
/* Free departed backends whose last connection has ended (the reaper). */
void pool_reap_gone(struct pool *p);
/* Stop accepting and warming; close idle/connecting and waiting clients. */
void pool_stop(struct pool *p);
/* A client was accepted (the listeners' on_accept): admit it to the queue,
 * or close it (max_clients, fail_fast). */
void pool_client_arrived(struct pool *p, int cfd);
/* A handed-off socket came back (wp_checkin) from a client of `owner`
 * (its lease, handoff.c, was already checked and removed): reuse it if the
 * pool has reuse: on, it is connected to one of the pool's backends and
 * there is room; else close it. It is marked foreign, owned by `owner`: only
 * that uid's clients may get it again. `opened_at`: when it was opened.
 * Takes ownership of fd. */
void pool_checkin(struct pool *p, int fd, uid_t owner, ev_tstamp opened_at);
/* Start connections to reach the floor and serve waiters; arm the timer when all backends wait. */
void pool_refill(struct pool *p);
/* The same, but only after this loop iteration's other events (so warming the
 * floor never delays a client's bytes) — unless a client is waiting for it. */
void pool_refill_soon(struct pool *p);
/* Run the deferred refills (from the engine's reaper). */
void pool_run_deferred_refills(struct engine *eng);
/* Hand idle connections to waiting clients. */
void pool_dispatch(struct pool *p);
/* A backend's availability changed: apply it to connections and clients. */
void pool_backend_changed(struct pool *p, struct backend *be, enum backend_state old);
/* Close one backend's idle connections (it left `up`); returns how many. */
size_t pool_close_idle(struct backend *be);
/* The admin's drain / disable / enable of `be`: move to DRAINING, DISABLED
 * or (enable, from draining or disabled only) DOWN with fresh health
 * counters, so that it comes back through `rise` like any down backend
 * (never taking traffic from a backup before it proved itself), restarting
 * its health checks when it was disabled. With `kill`, sessions on the backend are closed too
 * (pool_kill_sessions); returns how many. */
size_t pool_backend_admin(struct backend *be, enum backend_state st, int kill);
/* Close every session relaying on `be` (the admin's --kill) with reason
 * `why`; their connections close with them. Returns how many. */
size_t pool_kill_sessions(struct backend *be, const char *why);

/* (bconn.c) The one place a connection changes state, and so list (births from
 * BCONN_NEW and deaths to BCONN_CLOSED included): leaves the list of its
 * state, joins the back of the one of `st` and logs "old -> new" at debug. */
void bconn_set_state(struct bconn *b, enum bconn_state st);
/* Close a connection (any state) and bury it. */
void bconn_close(struct bconn *b);
/* Free the connections in the graveyard (from the engine's reaper; touches
 * no pool, which may be gone already at shutdown). */
void bconn_reap(struct engine *eng);
/* Log "pool=%s backend=%s conn=%llu: " and the message at `prio`. */
void bconn_log(const struct bconn *b, int prio, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The same, naming a client the line is also about (`s`, NULL: none):
 * "pool=%s backend=%s conn=%llu client=%llu: ". */
void bconn_log_for(const struct bconn *b, const struct session *s, int prio, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void bconn_vlog(const struct bconn *b, const struct session *s, int prio, const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0)));
/* reuse: the connection's session ended cleanly; run the reset exchange (or
 * the quiet period) and return it to idle, or close it at the first doubt. */
void bconn_reuse(struct bconn *b);
/* Idle this long, is `b` likely to be closed by its backend any moment (it
 * closes idle connections after about be->idle_close_age)? */
int bconn_near_backend_close(const struct bconn *b, ev_tstamp now);
/* An established connection died (idle, or under a session): a failed
 * attempt for the backend if it was not yet proven, else just replaced. */
void bconn_lost(struct bconn *b, enum backend_reason reason, int err);
/* The connection's bytes, plain or TLS alike: recv/send with MSG_DONTWAIT,
 * or tls_read/tls_write. >0 bytes, 0 at EOF (recv; close_notify), -EAGAIN,
 * -ECONNABORTED (TLS truncated), -EPROTO (TLS error) or -errno. */
ssize_t bconn_recv(struct bconn *b, void *buf, size_t len);
ssize_t bconn_send(struct bconn *b, const void *buf, size_t len);
/* sock_peek() of the connection, through TLS for a TLS one (tls_peek). */
enum sock_peek bconn_peek(struct bconn *b);
/* A connection in BCONN_NEW for `fd` on `be` (not yet on a list), or NULL
 * when out of memory (fd untouched). */
struct bconn *bconn_new(struct pool *p, struct backend *be, int fd);
/* Start a non-blocking connect to `be`; the connection goes CONNECTING. 0,
 * or -1 when there was no socket or no memory for it (nothing counted). */
int bconn_connect(struct pool *p, struct backend *be);

/* ---- the engine (engine.c) --------------------------------------------- */

struct engine {
	struct ev_loop *loop;
	struct wp_config *cfg; /* owned: the configuration running now */
	struct pool **pools;
	size_t n_pools;
	ev_signal sig_term, sig_int, sig_hup;
	ev_timer shutdown_timer;
	ev_timer status_timer;
	ev_timer watchdog;      /* WATCHDOG=1 every half $WATCHDOG_USEC, when systemd asks for it */
	ev_prepare reaper;      /* frees the graveyard once per iteration */
	struct pipes pipes;     /* splice pipes lent to sessions while bytes are in flight */
	unsigned char scratch[RELAY_COPY_BUF]; /* copied reads pass through here (relay.c) */
	/* Random bytes for reset nonces, drawn NONCE_BATCH nonces at a time
	 * (bconn.c); the ones not taken yet are nonces[0 .. nonces_left). */
	unsigned char nonces[NONCE_BATCH][CFG_NONCE_LEN / 2];
	unsigned nonces_left;
	struct list dead_conns; /* struct bconn */
	struct list dead_sessions;
	struct list refill_soon; /* pools with a deferred refill (struct pool.refill_node) */
	struct list retired;     /* pools replaced or removed by a reload, draining */
	struct list old_cfgs;    /* struct old_cfg */
	struct admin *admin;     /* the admin sockets and metrics endpoint */
	unsigned reload_failed : 1; /* the last reload was rejected (STATUS= says so) */
	unsigned stopping : 1;   /* SIGTERM received: draining */
	unsigned status_dirty : 1;
	uint64_t next_id;
	ev_tstamp started_at;              /* Unix time (ev_now) */
	uint64_t reloads_ok, reloads_failed;
	uint64_t rng;     /* xorshift64* state for jitter */
	char status[256]; /* last STATUS= sent */
};

/* Takes ownership of cfg (freed by engine_destroy, or at once on failure). */
struct engine *engine_create(struct wp_config *cfg);
/* Bind every listener; 0, or -1 with a message in err. */
int engine_listen(struct engine *eng, char *err, size_t errlen) __attribute__((warn_unused_result));
/* READY=1, start warming, run the loop until shutdown; returns the exit code. */
int engine_run(struct engine *eng);
void engine_destroy(struct engine *eng);
/* The engine's services to every module below it. Inline: they are plain
 * data on struct engine, so using them is no call up into engine.c. */
/* A fresh id for a connection or a client (the conn= / client= in logs). */
static inline uint64_t engine_next_id(struct engine *eng)
{
	return ++eng->next_id;
}
/* xorshift64*: plenty for jitter, and no process-global state; a
 * wp_random_fn, in [0, 1). */
static inline double engine_random(void *ctx)
{
	struct engine *eng = ctx;
	uint64_t x = eng->rng;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	eng->rng = x;
	return (double)((x * 0x2545F4914F6CDD1DULL) >> 11) / 9007199254740992.0;
}
/* Watch exactly `events` (0: none) on w, whose fd is set already: no
 * libev call when that is what it watches. The fd is kept (ev_io_modify):
 * setting it again would make libev re-register it with epoll. */
static inline void engine_io_want(struct ev_loop *loop, ev_io *w, int events)
{
	int cur = ev_is_active(w) ? (w->events & (EV_READ | EV_WRITE)) : 0;
	if (cur == events)
		return;
	ev_io_stop(loop, w);
	if (events) {
		ev_io_modify(w, events);
		ev_io_start(loop, w);
	}
}
/* Mark STATUS= as stale (the loop recomputes it, and checks whether a
 * graceful drain just finished, once per iteration). */
static inline void engine_changed(struct engine *eng)
{
	eng->status_dirty = 1;
}
/* Re-read the config file and apply it (SIGHUP, the admin's `reload`):
 * RELOADING=1, reload_run(), then READY=1 with the new STATUS=; refused
 * without a word to systemd while stopping. Every error or the summary goes
 * to `out` as lines; 0 applied, -1 kept the old config. */
struct wp_buf;
int engine_reload(struct engine *eng, struct wp_buf *out);
/* (reload.c) Read, validate and apply the config file as a diff; the same
 * answer and lines as engine_reload, without telling systemd. */
int reload_run(struct engine *eng, struct wp_buf *out);
/* (reload.c) Free the retired pools whose last session ended, and the old
 * config with the last pool that used it (from the reaper). */
void reload_reap_retired(struct engine *eng);
/* Recompute STATUS= now (force: send it even if unchanged). */
void engine_update_status(struct engine *eng, int force);
/* Recompute eng->status without sending it, for a message that carries it
 * (systemd_ready/stopping/reloading): one datagram, not STATUS= then READY=1. */
void engine_refresh_status(struct engine *eng);

#endif
