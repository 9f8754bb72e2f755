/*
 * daemon/tls.h — TLS to backends in user space (OpenSSL 3), for bconn.c,
 * health.c and relay.c.
 *
 * The client SSL_CTX of a pool is built by the loader (config/tls.c) from
 * its tls: settings, so the files were read and checked before the daemon
 * sees them. This module adds what belongs to one connection or one backend:
 * SNI and the host name checked, the backend's cache of resumable sessions,
 * the non-blocking starttls preamble and handshake, and the counters and the
 * newest connection's facts that metrics and `show backends` report.
 *
 * Every I/O call here is non-blocking and answers in the relay's terms
 * (bytes, 0 at a clean end, -EAGAIN, -errno), so relay.c moves TLS bytes
 * through the same loop as plain ones. This is the one interface a kernel
 * TLS path would replace (docs/TLS.md).
 */
#ifndef WARMPOOL_TLS_H
#define WARMPOOL_TLS_H

#include <ev.h>
#include <openssl/ssl.h>
#include <sys/types.h>

#include "sock.h"

struct backend;

/* Outcomes of a handshake, as counted per backend (metrics: result=). */
enum tls_result {
	TLS_R_FULL,             /* a full handshake */
	TLS_R_RESUMED,          /* resumed from the backend's session cache */
	TLS_R_VERIFY_FAILED,    /* the certificate chain or name did not verify */
	TLS_R_FAILED,           /* any other handshake failure (alert, protocol, closed) */
	TLS_R_TIMEOUT,          /* connect_timeout expired during the preamble or the handshake */
	TLS_R_STARTTLS_REFUSED, /* starttls: the server refused to switch to TLS */
	TLS_R_N,
};

/* The metrics label of each result. */
const char *tls_result_name(enum tls_result r);

/* Where a connection's handshake is (struct bconn / struct health). */
enum tls_phase {
	TLS_PH_STARTTLS_SEND, /* starttls: sending the request */
	TLS_PH_STARTTLS_READ, /* starttls: waiting for the one-byte answer */
	TLS_PH_HANDSHAKE,
	TLS_PH_TICKETS, /* TLS 1.3: handshake done, waiting for the server's first post-handshake record */
	TLS_PH_DONE,
};

/* TLS 1.3: a server may still refuse us after our side of the handshake
 * finished (a client certificate it rejects arrives as an alert, after its
 * tickets), so a connection (or a check that is only a handshake) waits for
 * the server's first record after the handshake, or this long (seconds)
 * for a server that sends none. */
#define TLS_TICKET_WAIT 0.1

/* A handshake step's answer: done, wait for readable/writable, or failed. */
enum tls_step { TLS_STEP_DONE, TLS_STEP_READ, TLS_STEP_WRITE, TLS_STEP_FAILED };

/* A new SSL for the TCP connection `fd` to `be` (its pool's tls: settings):
 * SNI and the name checked (server_name, else the backend's host; an IP is
 * checked as an IP, with no SNI), and a session from the backend's cache
 * when resumption is on. NULL with a message in err. *phase is set to the
 * first phase. */
SSL *tls_new(struct backend *be, int fd, enum tls_phase *phase, char *err, size_t errlen);
/* Drive the preamble and the handshake as far as the socket allows.
 * TLS_STEP_FAILED: *res says how (for the counters) and `why` says it in
 * OpenSSL's words ("certificate verify failed: ..."). *sent counts the
 * preamble's bytes written. */
enum tls_step tls_handshake(SSL *ssl, int fd, enum tls_phase *phase, unsigned *sent, enum tls_result *res,
                            char *why, size_t whylen);
/* A handshake finished after `took` seconds: count it (full or resumed),
 * observe the time, and keep the protocol, cipher and certificate expiry as
 * the backend's newest. */
void tls_handshake_done(struct backend *be, SSL *ssl, ev_tstamp took);
/* A handshake failed with `res`: count it. */
void tls_handshake_failed(struct backend *be, enum tls_result res);

/* TLS 1.3, after the handshake: is the server's first record (read now)
 * its consent (tickets, or data kept in the SSL: 0) or a refusal (an
 * alert, or EOF: -1, with OpenSSL's words in `why`)? */
int tls_first_record(SSL *ssl, int fd, char *why, size_t whylen);
/* Read decrypted bytes: >0, 0 at close_notify, -EAGAIN (nothing yet, or
 * only handshake records such as TLS 1.3 tickets), -ECONNABORTED when the
 * stream was truncated (EOF without close_notify), -EPROTO for a TLS error
 * (tls_error_text says which), or -errno from the socket. */
ssize_t tls_read(SSL *ssl, void *buf, size_t len);
/* Write: bytes taken (>0), -EAGAIN, -EPROTO or -errno. */
ssize_t tls_write(SSL *ssl, const void *buf, size_t len);
/* sock_peek() through TLS: records waiting at the socket are processed
 * first, so a ticket is neither data nor death, a close_notify is EOF, and
 * application data is SOCK_DATA (kept inside the SSL for the next read).
 * After SOCK_ERROR, tls_error_text() says why. */
enum sock_peek tls_peek(SSL *ssl, int fd);
/* Whether bytes wait inside the SSL (decrypted data, records read ahead, or
 * an end tls_read has yet to report): no socket event will say so. */
int tls_has_pending(SSL *ssl);
/* Send close_notify (once; the peer may still send, as TLS 1.3 allows).
 * 0, or -errno / -EPROTO. */
int tls_close_notify(SSL *ssl);
/* Close_notify when the connection is still healthy, then free. Accepts NULL. */
void tls_free(SSL *ssl);
/* The reason of the last TLS error, in OpenSSL's words ("" if none). */
const char *tls_error_text(char *buf, size_t len);

/* Set the daemon's callbacks on a pool's SSL_CTX (the session cache);
 * idempotent. */
void tls_ctx_prepare(SSL_CTX *ctx);
/* Drop the backend's cached sessions (its TLS settings changed, or it goes). */
void tls_backend_forget(struct backend *be);
/* Once per process, before any SSL: 0, or -1. */
int tls_init(void) __attribute__((warn_unused_result));

#endif
