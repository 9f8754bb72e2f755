/*
 * lib/scram.h — the client side of the password exchanges a health check
 * may have to pass: SCRAM-SHA-256 (RFC 5802 with RFC 7677's hash) without
 * channel binding (gs2 header "n,,"), and PostgreSQL's md5 password hash.
 *
 * Pure computation on bytes, built on OpenSSL's primitives (EVP digests,
 * HMAC, PKCS5_PBKDF2_HMAC, RAND_bytes, EVP_EncodeBlock/DecodeBlock): no I/O,
 * no logging. Errors are a negative errno plus, for what a server sent, a
 * static phrase in *why the caller prints. Everything the server controls is
 * bounded by the constants below; secrets on the stack are cleansed.
 *
 * One exchange, in order (the caller moves the messages):
 *   wp_scram_client_first      -> client-first-message
 *   wp_scram_server_first      <- server-first-message (nonce, salt, iterations)
 *   wp_scram_salted_password      PBKDF2 (the expensive step: callers may keep
 *                                 its result for the same password, salt and count)
 *   wp_scram_client_final      -> client-final-message (with the proof)
 *   wp_scram_server_final      <- server-final-message: the server's signature,
 *                                 verified (a server that does not know the
 *                                 password cannot produce it)
 * Passwords are used as the bytes given (no SASLprep): for ASCII passwords,
 * which SASLprep leaves alone, that is the same thing.
 */
#ifndef WARMPOOL_SCRAM_H
#define WARMPOOL_SCRAM_H

#include <stddef.h>

#define WP_SCRAM_KEY_LEN     32     /* SHA-256 output: SaltedPassword, keys, signatures */
#define WP_SCRAM_NONCE_RAW   18     /* random bytes in a client nonce (24 base64 characters; libpq's size) */
#define WP_SCRAM_MSG_MAX     1024   /* longest SCRAM message either way, bytes (a server's is refused beyond) */
#define WP_SCRAM_SALT_MAX    128    /* decoded salt bytes accepted (PostgreSQL's are 16) */
/* PBKDF2 rounds accepted from a server: each is two HMACs computed in the
 * caller's thread (an event loop). PostgreSQL's default is 4096. */
#define WP_SCRAM_MAX_ITERATIONS 100000
#define WP_MD5_PASSWORD_LEN  35     /* "md5" and 32 hex digits */

/* One exchange's state; zero it (or let wp_scram_client_first do it) first. */
struct wp_scram {
	char first_bare[WP_SCRAM_MSG_MAX];   /* client-first-message-bare "n=...,r=..." */
	size_t first_bare_len;
	size_t nonce_len;                    /* of the client nonce, at the end of first_bare */
	char server_first[WP_SCRAM_MSG_MAX]; /* as received (part of AuthMessage) */
	size_t server_first_len;
	size_t snonce_off, snonce_len;       /* the combined nonce inside server_first */
	unsigned char salt[WP_SCRAM_SALT_MAX];
	size_t salt_len;
	unsigned iterations;
	unsigned char server_signature[WP_SCRAM_KEY_LEN]; /* expected in server-final (set by client_final) */
	int step;                            /* 0 new, 1 client-first made, 2 server-first read, 3 client-final made */
};

/*
 * Start an exchange: reset *s and write the client-first-message
 * "n,,n=<user>,r=<nonce>" into out (cap bytes, NUL-terminated). `user` is
 * escaped as RFC 5802 says (',' as =2C, '=' as =3D; PostgreSQL ignores it:
 * pass ""). `nonce` NULL: WP_SCRAM_NONCE_RAW bytes from RAND_bytes, base64;
 * else that text (tests; printable ASCII without ','). Returns the message
 * length, -ENOSPC when it does not fit, -EINVAL for a bad nonce or -EIO when
 * the random generator failed.
 */
int wp_scram_client_first(struct wp_scram *s, const char *user, const char *nonce, char *out, size_t cap)
    __attribute__((warn_unused_result));

/*
 * Read the server-first-message msg[0..len): "r=<nonce>,s=<salt>,i=<n>"
 * (extensions after are ignored; a mandatory one, "m=", is refused). The
 * nonce must extend the client's; the salt is base64 of at most
 * WP_SCRAM_SALT_MAX bytes; i is 1..WP_SCRAM_MAX_ITERATIONS. Returns 0
 * (s->salt, salt_len, iterations set), or -EPROTO with *why set, or -EINVAL
 * when called out of order.
 */
int wp_scram_server_first(struct wp_scram *s, const char *msg, size_t len, const char **why)
    __attribute__((warn_unused_result));

/* SaltedPassword = PBKDF2-HMAC-SHA-256(password, salt, iterations) into out.
 * 0, or -EINVAL (bad sizes, iterations 0) or -EIO (OpenSSL failed). */
int wp_scram_salted_password(const char *password, size_t pwlen, const unsigned char *salt, size_t salt_len,
                             unsigned iterations, unsigned char out[WP_SCRAM_KEY_LEN])
    __attribute__((warn_unused_result));

/*
 * Write the client-final-message "c=biws,r=<nonce>,p=<proof>" into out (cap
 * bytes, NUL-terminated) from the SaltedPassword, and keep the server
 * signature it must answer with. Returns the length, -ENOSPC, -EINVAL out of
 * order, or -EIO (OpenSSL failed).
 */
int wp_scram_client_final(struct wp_scram *s, const unsigned char salted[WP_SCRAM_KEY_LEN], char *out, size_t cap)
    __attribute__((warn_unused_result));

/*
 * Check the server-final-message msg[0..len): "v=<signature>" must be the
 * one client_final computed (compared in constant time). Returns 0 when it
 * is; -EACCES when the server sent "e=<error>" (it rejected our proof);
 * -EBADMSG when the signature differs (the server does not know the
 * password: not the server we meant); -EPROTO malformed; -EINVAL out of
 * order. *why is set on every error.
 */
int wp_scram_server_final(const struct wp_scram *s, const char *msg, size_t len, const char **why)
    __attribute__((warn_unused_result));

/* Forget the exchange's secrets (the server signature, the messages). */
void wp_scram_clear(struct wp_scram *s);

/*
 * PostgreSQL's md5 password answer: "md5" + hex(md5(hex(md5(password +
 * user)) + salt)), NUL-terminated, into out. 0, or -EIO (OpenSSL failed) /
 * -EINVAL (an absurd length).
 */
int wp_md5_password(const char *user, const char *password, size_t pwlen, const unsigned char salt[4],
                    char out[WP_MD5_PASSWORD_LEN + 1]) __attribute__((warn_unused_result));

#endif
