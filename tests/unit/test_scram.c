/* tests/unit/test_scram.c — lib/scram: the SCRAM-SHA-256 client steps
 * against RFC 7677's example exchange (user "user", password "pencil"), what
 * a hostile or wrong server sends refused, and PostgreSQL's md5 password
 * hash against a known answer (computed independently with Python's
 * hashlib). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "scram.h"

/* RFC 7677, section 3. */
#define CNONCE       "rOprNGfwEbeRWgbNEkqO"
#define CLIENT_FIRST "n,,n=user,r=" CNONCE
#define SERVER_FIRST "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
#define CLIENT_FINAL                                                                                             \
	"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
#define SERVER_FINAL "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="

/* The RFC's exchange up to client-final; returns its length. */
static int run_to_final(struct wp_scram *s, const char *password, char *out, size_t cap)
{
	unsigned char salted[WP_SCRAM_KEY_LEN];
	const char *why = NULL;
	int n = wp_scram_client_first(s, "user", CNONCE, out, cap);

	assert_int_equal(n, (int)strlen(CLIENT_FIRST));
	assert_string_equal(out, CLIENT_FIRST);
	assert_int_equal(wp_scram_server_first(s, SERVER_FIRST, strlen(SERVER_FIRST), &why), 0);
	assert_int_equal(s->iterations, 4096);
	assert_int_equal(s->salt_len, 16);
	assert_int_equal(wp_scram_salted_password(password, strlen(password), s->salt, s->salt_len, s->iterations,
	                                          salted),
	                 0);
	return wp_scram_client_final(s, salted, out, cap);
}

static void test_rfc7677_exchange(void **state)
{
	(void)state;
	struct wp_scram s;
	char out[WP_SCRAM_MSG_MAX];
	const char *why = NULL;

	assert_int_equal(run_to_final(&s, "pencil", out, sizeof out), (int)strlen(CLIENT_FINAL));
	assert_string_equal(out, CLIENT_FINAL);
	assert_int_equal(wp_scram_server_final(&s, SERVER_FINAL, strlen(SERVER_FINAL), &why), 0);
	wp_scram_clear(&s);
}

static void test_wrong_password_gives_another_proof_and_signature(void **state)
{
	(void)state;
	struct wp_scram s;
	char out[WP_SCRAM_MSG_MAX];
	const char *why = NULL;

	assert_true(run_to_final(&s, "pencil2", out, sizeof out) > 0);
	assert_string_not_equal(out, CLIENT_FINAL);
	/* The real server's signature does not verify for a client that used
	 * another password: a server that does not know ours cannot pass. */
	assert_int_equal(wp_scram_server_final(&s, SERVER_FINAL, strlen(SERVER_FINAL), &why), -EBADMSG);
	assert_non_null(strstr(why, "does not verify"));
}

static void test_server_final_refusals(void **state)
{
	(void)state;
	struct wp_scram s;
	char out[WP_SCRAM_MSG_MAX];
	const char *why = NULL;
	static const char *const bad[] = {
	    "",
	    "x=1",
	    "v=",
	    "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4",   /* not a multiple of 4 */
	    "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl9",      /* too short */
	    "v=6rri*RBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=", /* not base64 */
	};

	assert_true(run_to_final(&s, "pencil", out, sizeof out) > 0);
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		why = NULL;
		assert_int_equal(wp_scram_server_final(&s, bad[i], strlen(bad[i]), &why), -EPROTO);
		assert_non_null(why);
	}
	assert_int_equal(wp_scram_server_final(&s, "e=invalid-proof", 15, &why), -EACCES);
	/* The first byte changed: a different signature. */
	assert_int_equal(wp_scram_server_final(&s, "v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=", 46, &why),
	                 -EBADMSG);
}

static void test_server_first_refusals(void **state)
{
	(void)state;
	static const char *const bad[] = {
	    "",
	    "m=ext,r=" CNONCE "xyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
	    "r=" CNONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",        /* the nonce not extended */
	    "r=other" CNONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",   /* not ours */
	    "r=" CNONCE "xyz,s=,i=4096",                              /* no salt */
	    "r=" CNONCE "xyz,s=W22ZaJ0SNY7soEsUEjb6gQ==",             /* no count */
	    "r=" CNONCE "xyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=0",
	    "r=" CNONCE "xyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=100001",    /* above WP_SCRAM_MAX_ITERATIONS */
	    "r=" CNONCE "xyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4x96",
	    "r=" CNONCE "xyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=99999999999",
	    "r=" CNONCE "x\x01z,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",  /* a control byte in the nonce */
	    "s=W22ZaJ0SNY7soEsUEjb6gQ==,r=" CNONCE "xyz,i=4096",     /* out of order */
	};

	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		struct wp_scram s;
		char out[WP_SCRAM_MSG_MAX];
		const char *why = NULL;
		assert_true(wp_scram_client_first(&s, "", CNONCE, out, sizeof out) > 0);
		assert_int_equal(wp_scram_server_first(&s, bad[i], strlen(bad[i]), &why), -EPROTO);
		assert_non_null(why);
	}
	/* A salt longer than WP_SCRAM_SALT_MAX bytes. */
	char big[WP_SCRAM_MSG_MAX];
	int o = snprintf(big, sizeof big, "r=%sxyz,s=", CNONCE);
	for (int i = 0; i < 4 * (WP_SCRAM_SALT_MAX / 3 + 2); i++)
		big[o++] = 'A';
	o += snprintf(big + o, sizeof big - (size_t)o, ",i=4096");
	struct wp_scram s;
	char out[WP_SCRAM_MSG_MAX];
	const char *why = NULL;
	assert_true(wp_scram_client_first(&s, "", CNONCE, out, sizeof out) > 0);
	assert_int_equal(wp_scram_server_first(&s, big, (size_t)o, &why), -EPROTO);
	/* Extensions after i= are allowed. */
	static const char ext[] = "r=" CNONCE "xyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,x=1";
	assert_true(wp_scram_client_first(&s, "", CNONCE, out, sizeof out) > 0);
	assert_int_equal(wp_scram_server_first(&s, ext, strlen(ext), &why), 0);
}

static void test_steps_in_order(void **state)
{
	(void)state;
	struct wp_scram s;
	unsigned char salted[WP_SCRAM_KEY_LEN] = {0};
	char out[WP_SCRAM_MSG_MAX];
	const char *why = NULL;

	memset(&s, 0, sizeof s);
	assert_int_equal(wp_scram_server_first(&s, SERVER_FIRST, strlen(SERVER_FIRST), &why), -EINVAL);
	assert_int_equal(wp_scram_client_final(&s, salted, out, sizeof out), -EINVAL);
	assert_int_equal(wp_scram_server_final(&s, SERVER_FINAL, strlen(SERVER_FINAL), &why), -EINVAL);
	assert_true(wp_scram_client_first(&s, "", CNONCE, out, sizeof out) > 0);
	assert_int_equal(wp_scram_client_final(&s, salted, out, sizeof out), -EINVAL);
}

static void test_client_first_user_escapes_and_random_nonce(void **state)
{
	(void)state;
	struct wp_scram s, t;
	char a[WP_SCRAM_MSG_MAX], b[WP_SCRAM_MSG_MAX];

	assert_true(wp_scram_client_first(&s, "a,b=c", "N", a, sizeof a) > 0);
	assert_string_equal(a, "n,,n=a=2Cb=3Dc,r=N");
	/* Random nonces: 24 base64 characters, different each time. */
	int n = wp_scram_client_first(&s, "", NULL, a, sizeof a);
	assert_int_equal(n, (int)strlen("n,,n=,r=") + 24);
	assert_true(wp_scram_client_first(&t, "", NULL, b, sizeof b) > 0);
	assert_string_not_equal(a, b);
	assert_null(strchr(a + 8, ','));
	/* A nonce with ',' or a message that does not fit are errors. */
	assert_int_equal(wp_scram_client_first(&s, "", "a,b", a, sizeof a), -EINVAL);
	assert_int_equal(wp_scram_client_first(&s, "", "abc", a, 8), -ENOSPC);
}

static void test_md5_known_answer(void **state)
{
	(void)state;
	static const unsigned char salt[4] = {1, 2, 3, 4};
	char out[WP_MD5_PASSWORD_LEN + 1];

	/* Python: inner = md5(b"pencil" + b"user").hexdigest();
	 *         "md5" + md5(inner.encode() + bytes([1, 2, 3, 4])).hexdigest() */
	assert_int_equal(wp_md5_password("user", "pencil", 6, salt, out), 0);
	assert_string_equal(out, "md54376eb6913b38f9aaff38dc7cf19ca76");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_rfc7677_exchange),
	    cmocka_unit_test(test_wrong_password_gives_another_proof_and_signature),
	    cmocka_unit_test(test_server_final_refusals),
	    cmocka_unit_test(test_server_first_refusals),
	    cmocka_unit_test(test_steps_in_order),
	    cmocka_unit_test(test_client_first_user_escapes_and_random_nonce),
	    cmocka_unit_test(test_md5_known_answer),
	};
	return cmocka_run_group_tests_name("scram", tests, NULL, NULL);
}
