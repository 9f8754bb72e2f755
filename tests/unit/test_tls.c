/*
 * tests/unit/test_tls.c — daemon/tls.c against a real OpenSSL server over a
 * socketpair: the handshake driver, verification failures in OpenSSL's
 * words, the starttls preamble, the per-backend session cache (TLS 1.3
 * tickets used once, TLS 1.2 sessions kept), and what tls_read/tls_peek
 * answer for tickets, data, close_notify and a truncated stream.
 * Certificates are made here (EC P-256) in a temporary directory; the
 * client SSL_CTX is built by the real loader from a tls: block.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "engine.h"
#include "tls.h"

#define STEPS_MAX 200 /* handshake round trips over the socketpair before giving up */

static char dir[64];
static char ca_pem[128], other_ca_pem[128], srv_pem[128];
static X509 *srv_cert;
static EVP_PKEY *srv_pkey;

/* ---- certificates -------------------------------------------------------- */

static void add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
	X509_EXTENSION *ex = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	assert_non_null(ex);
	assert_int_equal(X509_add_ext(cert, ex, -1), 1);
	X509_EXTENSION_free(ex);
}

/* A certificate for `cn` with `key`, signed by issuer/ikey (NULL: self-signed CA). */
static X509 *make_cert(const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *ikey, const char *san)
{
	X509 *c = X509_new();
	assert_non_null(c);
	X509_set_version(c, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(c), (long)(random() & 0x7fffffff));
	X509_gmtime_adj(X509_getm_notBefore(c), -60);
	X509_gmtime_adj(X509_getm_notAfter(c), 86400);
	X509_set_pubkey(c, key);
	X509_NAME *n = X509_get_subject_name(c);
	X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(c, issuer ? X509_get_subject_name(issuer) : n);
	if (!issuer) {
		add_ext(c, c, NID_basic_constraints, "critical,CA:TRUE");
		add_ext(c, c, NID_key_usage, "critical,keyCertSign,cRLSign");
	} else {
		add_ext(c, issuer, NID_subject_alt_name, san);
	}
	assert_true(X509_sign(c, ikey ? ikey : key, EVP_sha256()) > 0);
	return c;
}

static void write_cert(const char *path, X509 *c)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(PEM_write_X509(f, c), 1);
	assert_int_equal(fclose(f), 0);
}

static int setup_certs(void **state)
{
	(void)state;
	snprintf(dir, sizeof dir, "/tmp/wp-test-tls-XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	snprintf(ca_pem, sizeof ca_pem, "%s/ca.pem", dir);
	snprintf(other_ca_pem, sizeof other_ca_pem, "%s/other.pem", dir);
	snprintf(srv_pem, sizeof srv_pem, "%s/srv.pem", dir);
	EVP_PKEY *ca_key = EVP_EC_gen("P-256"), *other_key = EVP_EC_gen("P-256");
	srv_pkey = EVP_EC_gen("P-256");
	if (!ca_key || !other_key || !srv_pkey)
		return -1;
	X509 *ca = make_cert("test ca", ca_key, NULL, NULL, NULL);
	X509 *other = make_cert("other ca", other_key, NULL, NULL, NULL);
	srv_cert = make_cert("localhost", srv_pkey, ca, ca_key, "IP:127.0.0.1,DNS:localhost");
	write_cert(ca_pem, ca);
	write_cert(other_ca_pem, other);
	write_cert(srv_pem, srv_cert);
	X509_free(ca);
	X509_free(other);
	EVP_PKEY_free(ca_key);
	EVP_PKEY_free(other_key);
	return tls_init();
}

static int teardown_certs(void **state)
{
	(void)state;
	unlink(ca_pem);
	unlink(other_ca_pem);
	unlink(srv_pem);
	rmdir(dir);
	X509_free(srv_cert);
	EVP_PKEY_free(srv_pkey);
	return 0;
}

/* ---- a pool, a backend and a server ---------------------------------------- */

struct fixture {
	struct wp_config *cfg;
	struct pool pool;
	struct backend be;
	SSL_CTX *server;
};

/* A pool with one backend at `backend` and the tls: block `tls` (YAML flow
 * mapping), loaded by the real loader; a server context for TLS `version`. */
static void fixture_init(struct fixture *f, const char *backend, const char *tls, int version)
{
	char yaml[1024];
	struct cfg_errors errs = {0};
	memset(f, 0, sizeof *f);
	snprintf(yaml, sizeof yaml, "pools:\n  t:\n    listen: %s/t.sock\n    backends: [\"%s\"]\n    tls: %s\n", dir,
	         backend, tls);
	int r = cfg_load_buffer("test.yaml", yaml, strlen(yaml), &f->cfg, &errs);
	for (size_t i = 0; i < errs.n; i++)
		fprintf(stderr, "%s\n", errs.msg[i]);
	assert_int_equal(r, 0);
	cfg_errors_free(&errs);
	f->pool.cfg = &f->cfg->pools[0];
	f->pool.name = "t";
	f->be.pool = &f->pool;
	f->be.cfg = &f->cfg->pools[0].backends[0];
	f->be.name = f->be.cfg->name;
	static const double bounds[] = {0.001, 1};
	assert_int_equal(wp_histogram_init(&f->be.tls.h_handshake, bounds, 2), 0);
	tls_ctx_prepare(f->cfg->pools[0].tls.ctx);
	f->server = SSL_CTX_new(TLS_server_method());
	assert_non_null(f->server);
	assert_int_equal(SSL_CTX_use_certificate(f->server, srv_cert), 1);
	assert_int_equal(SSL_CTX_use_PrivateKey(f->server, srv_pkey), 1);
	SSL_CTX_set_min_proto_version(f->server, version);
	SSL_CTX_set_max_proto_version(f->server, version);
}

static void fixture_free(struct fixture *f)
{
	tls_backend_forget(&f->be);
	SSL_CTX_free(f->server);
	cfg_free(f->cfg);
}

/* One connection: a non-blocking socketpair, our client SSL on one end
 * (tls_new), the server's on the other. */
struct conn {
	int cfd, sfd;
	SSL *c, *s;
	enum tls_phase phase;
	unsigned sent;
};

static void conn_open(struct fixture *f, struct conn *k)
{
	int sv[2];
	char err[160];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
	k->cfd = sv[0];
	k->sfd = sv[1];
	k->sent = 0;
	k->c = tls_new(&f->be, k->cfd, &k->phase, err, sizeof err);
	assert_non_null(k->c);
	k->s = SSL_new(f->server);
	assert_non_null(k->s);
	SSL_set_fd(k->s, k->sfd);
	SSL_set_accept_state(k->s);
}

static void conn_close(struct conn *k)
{
	tls_free(k->c);
	SSL_free(k->s);
	close(k->cfd);
	close(k->sfd);
}

/* Drive both ends until the client's handshake ends: its last step. */
static enum tls_step conn_handshake(struct conn *k, enum tls_result *res, char *why, size_t whylen)
{
	enum tls_step st = TLS_STEP_FAILED;
	for (int i = 0; i < STEPS_MAX; i++) {
		st = tls_handshake(k->c, k->cfd, &k->phase, &k->sent, res, why, whylen);
		if (st == TLS_STEP_DONE || st == TLS_STEP_FAILED)
			break;
		ERR_clear_error();
		(void)SSL_do_handshake(k->s);
	}
	/* The server's side finishes (and, TLS 1.3, sends its tickets). */
	for (int i = 0; st == TLS_STEP_DONE && i < 4 && !SSL_is_init_finished(k->s); i++) {
		ERR_clear_error();
		(void)SSL_do_handshake(k->s);
	}
	ERR_clear_error();
	return st;
}

static void conn_up(struct fixture *f, struct conn *k)
{
	enum tls_result res = TLS_R_N;
	char why[200] = "";
	conn_open(f, k);
	enum tls_step st = conn_handshake(k, &res, why, sizeof why);
	if (st != TLS_STEP_DONE)
		fprintf(stderr, "handshake: %s\n", why);
	assert_int_equal(st, TLS_STEP_DONE);
	tls_handshake_done(&f->be, k->c, 0.0005);
}

/* ---- tests --------------------------------------------------------------- */

static void test_tls13_tickets_are_used_once(void **state)
{
	(void)state;
	struct fixture f;
	struct conn a, b;
	unsigned char buf[64];
	char tls[256];
	snprintf(tls, sizeof tls, "{ca_file: \"%s\"}", ca_pem);
	fixture_init(&f, "127.0.0.1:9", tls, TLS1_3_VERSION);
	conn_up(&f, &a);
	assert_false(SSL_session_reused(a.c));
	assert_string_equal(f.be.tls.version, "TLSv1.3");
	/* The tickets are records, not data: read, nothing to deliver. */
	assert_int_equal(tls_read(a.c, buf, sizeof buf), -EAGAIN);
	size_t tickets = f.be.tls.n_sessions;
	assert_true(tickets >= 1);
	const SSL_SESSION *newest = f.be.tls.sessions[tickets - 1];
	conn_up(&f, &b);
	assert_true(SSL_session_reused(b.c));
	/* The ticket b used (the newest) left the cache; b's own tickets join it. */
	assert_int_equal(f.be.tls.n_sessions, tickets - 1);
	assert_int_equal(tls_read(b.c, buf, sizeof buf), -EAGAIN);
	assert_true(f.be.tls.n_sessions > tickets - 1);
	for (size_t i = 0; i < f.be.tls.n_sessions; i++)
		assert_ptr_not_equal(f.be.tls.sessions[i], newest);
	assert_int_equal(f.be.tls.handshakes[TLS_R_FULL], 1);
	assert_int_equal(f.be.tls.handshakes[TLS_R_RESUMED], 1);
	assert_true(f.be.tls.cert_expiry > 0);
	conn_close(&a);
	conn_close(&b);
	fixture_free(&f);
}

static void test_tls12_session_is_kept(void **state)
{
	(void)state;
	struct fixture f;
	struct conn a, b;
	char tls[256];
	snprintf(tls, sizeof tls, "{ca_file: \"%s\"}", ca_pem);
	fixture_init(&f, "127.0.0.1:9", tls, TLS1_2_VERSION);
	conn_up(&f, &a);
	assert_string_equal(f.be.tls.version, "TLSv1.2");
	assert_int_equal(f.be.tls.n_sessions, 1);
	conn_up(&f, &b);
	assert_true(SSL_session_reused(b.c));
	assert_int_equal(f.be.tls.n_sessions, 1); /* 1.2 resumption issues no new session: it stays */
	conn_close(&a);
	conn_close(&b);
	fixture_free(&f);
}

static void test_no_resumption_when_off(void **state)
{
	(void)state;
	struct fixture f;
	struct conn a, b;
	char tls[256];
	unsigned char buf[8];
	snprintf(tls, sizeof tls, "{ca_file: \"%s\", session_resumption: false}", ca_pem);
	fixture_init(&f, "127.0.0.1:9", tls, TLS1_3_VERSION);
	conn_up(&f, &a);
	(void)tls_read(a.c, buf, sizeof buf);
	assert_int_equal(f.be.tls.n_sessions, 0);
	conn_up(&f, &b);
	assert_false(SSL_session_reused(b.c));
	conn_close(&a);
	conn_close(&b);
	fixture_free(&f);
}

static void test_read_and_peek(void **state)
{
	(void)state;
	struct fixture f;
	struct conn a;
	char tls[256];
	unsigned char buf[64];
	snprintf(tls, sizeof tls, "{ca_file: \"%s\"}", ca_pem);
	fixture_init(&f, "127.0.0.1:9", tls, TLS1_3_VERSION);
	conn_up(&f, &a);
	assert_int_equal(tls_peek(a.c, a.cfd), SOCK_QUIET); /* tickets only: neither data nor death */
	assert_int_equal(SSL_write(a.s, "hello", 5), 5);
	assert_int_equal(tls_peek(a.c, a.cfd), SOCK_DATA);
	assert_true(tls_has_pending(a.c)); /* decrypted and kept: no socket event will say so */
	assert_int_equal(tls_peek(a.c, a.cfd), SOCK_DATA);
	assert_int_equal(tls_read(a.c, buf, sizeof buf), 5);
	assert_memory_equal(buf, "hello", 5);
	assert_int_equal(tls_read(a.c, buf, sizeof buf), -EAGAIN);
	/* Ours: 6 bytes the server reads. */
	assert_int_equal(tls_write(a.c, "world!", 6), 6);
	assert_int_equal(SSL_read(a.s, buf, sizeof buf), 6);
	/* The server's close_notify is EOF, seen by peek and read. */
	assert_int_equal(SSL_shutdown(a.s), 0);
	assert_int_equal(tls_peek(a.c, a.cfd), SOCK_EOF);
	assert_int_equal(tls_read(a.c, buf, sizeof buf), 0);
	conn_close(&a);
	fixture_free(&f);
}

static void test_truncation_is_not_eof(void **state)
{
	(void)state;
	struct fixture f;
	struct conn a;
	char tls[256];
	unsigned char buf[64];
	snprintf(tls, sizeof tls, "{ca_file: \"%s\"}", ca_pem);
	fixture_init(&f, "127.0.0.1:9", tls, TLS1_3_VERSION);
	conn_up(&f, &a);
	assert_int_equal(SSL_write(a.s, "part", 4), 4);
	assert_int_equal(shutdown(a.sfd, SHUT_WR), 0); /* a FIN, no close_notify */
	assert_int_equal(tls_read(a.c, buf, sizeof buf), 4);
	assert_int_equal(tls_read(a.c, buf, sizeof buf), -ECONNABORTED);
	conn_close(&a);
	fixture_free(&f);
}

/* A handshake to a backend at `backend` with the tls: block `tls` fails
 * verification, in these words. */
static void expect_verify_failure(const char *backend, const char *tls, const char *words)
{
	struct fixture f;
	struct conn a;
	char why[200];
	enum tls_result res = TLS_R_N;
	fixture_init(&f, backend, tls, TLS1_3_VERSION);
	conn_open(&f, &a);
	assert_int_equal(conn_handshake(&a, &res, why, sizeof why), TLS_STEP_FAILED);
	assert_int_equal(res, TLS_R_VERIFY_FAILED);
	assert_string_equal(why, words);
	conn_close(&a);
	fixture_free(&f);
}

static void test_verify_failures_say_why(void **state)
{
	(void)state;
	struct fixture f;
	struct conn a;
	char tls[256];
	/* A CA that did not sign the server's certificate. */
	snprintf(tls, sizeof tls, "{ca_file: \"%s\"}", other_ca_pem);
	expect_verify_failure("127.0.0.1:9", tls, "tls: certificate verify failed: unable to get local issuer certificate");
	/* The right CA, the wrong name. */
	snprintf(tls, sizeof tls, "{ca_file: \"%s\", server_name: db.example}", ca_pem);
	expect_verify_failure("127.0.0.1:9", tls, "tls: certificate verify failed: hostname mismatch");
	/* An IP is checked as an IP: 127.0.0.2 is not in it. */
	snprintf(tls, sizeof tls, "{ca_file: \"%s\"}", ca_pem);
	expect_verify_failure("127.0.0.2:9", tls, "tls: certificate verify failed: IP address mismatch");
	/* The name as written: "localhost" is in the certificate, and so is 127.0.0.1. */
	fixture_init(&f, "localhost:9", tls, TLS1_3_VERSION);
	conn_up(&f, &a);
	conn_close(&a);
	fixture_free(&f);
}

/* starttls: postgres: the SSLRequest goes first; 'N' is a refusal, 'S' the
 * handshake. */
static void test_starttls_postgres(void **state)
{
	(void)state;
	static const unsigned char req[] = {0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f};
	struct fixture f;
	struct conn a;
	char tls[256], why[200];
	unsigned char got[16];
	enum tls_result res = TLS_R_N;
	snprintf(tls, sizeof tls, "{ca_file: \"%s\", starttls: postgres}", ca_pem);
	fixture_init(&f, "127.0.0.1:9", tls, TLS1_3_VERSION);

	conn_open(&f, &a);
	assert_int_equal(tls_handshake(a.c, a.cfd, &a.phase, &a.sent, &res, why, sizeof why), TLS_STEP_READ);
	assert_int_equal(read(a.sfd, got, sizeof got), 8);
	assert_memory_equal(got, req, 8);
	assert_int_equal(write(a.sfd, "N", 1), 1);
	assert_int_equal(tls_handshake(a.c, a.cfd, &a.phase, &a.sent, &res, why, sizeof why), TLS_STEP_FAILED);
	assert_int_equal(res, TLS_R_STARTTLS_REFUSED);
	assert_string_equal(why, "tls: starttls: the server refused TLS");
	conn_close(&a);

	conn_open(&f, &a);
	assert_int_equal(tls_handshake(a.c, a.cfd, &a.phase, &a.sent, &res, why, sizeof why), TLS_STEP_READ);
	assert_int_equal(read(a.sfd, got, sizeof got), 8);
	assert_int_equal(write(a.sfd, "S", 1), 1);
	assert_int_equal(conn_handshake(&a, &res, why, sizeof why), TLS_STEP_DONE);
	conn_close(&a);
	fixture_free(&f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_tls13_tickets_are_used_once),
	    cmocka_unit_test(test_tls12_session_is_kept),
	    cmocka_unit_test(test_no_resumption_when_off),
	    cmocka_unit_test(test_read_and_peek),
	    cmocka_unit_test(test_truncation_is_not_eof),
	    cmocka_unit_test(test_verify_failures_say_why),
	    cmocka_unit_test(test_starttls_postgres),
	};
	return cmocka_run_group_tests(tests, setup_certs, teardown_certs);
}
