/*
 * tests/unit/test_health.c — health_match(): does a check's reply so far
 * match (1), may it still match with more bytes (0), or never (-1)?
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <regex.h>

#include "engine.h"

static struct cfg_health preset(enum cfg_check_type type)
{
	struct cfg_health h;
	memset(&h, 0, sizeof h);
	h.type = type;
	return h;
}

/* Match a reply given as a C string (no NUL bytes). */
static int match_str(const struct cfg_health *h, const char *reply)
{
	return health_match(h, (const unsigned char *)reply, strlen(reply));
}

static void test_send_expect_prefix(void **state)
{
	(void)state;
	static const char want[] = "+OK ready";
	struct cfg_health h = preset(CFG_CHECK_SEND_EXPECT);
	h.expect = (unsigned char *)want;
	h.expect_len = sizeof want - 1;
	assert_int_equal(match_str(&h, ""), 0);
	assert_int_equal(match_str(&h, "+"), 0);
	assert_int_equal(match_str(&h, "+OK re"), 0);
	assert_int_equal(match_str(&h, "+OK ready"), 1);
	assert_int_equal(match_str(&h, "+OK ready\r\nmore lines\r\n"), 1);
	assert_int_equal(match_str(&h, "-"), -1);
	assert_int_equal(match_str(&h, "+OK rea!"), -1);
	assert_int_equal(match_str(&h, "-ERR not ready\r\n"), -1);
	assert_int_equal(match_str(&h, "+OK READY"), -1); /* bytes, not case-insensitive */
}

static void test_send_expect_binary_prefix(void **state)
{
	(void)state;
	static const unsigned char want[] = {0x00, 0x01, 0xff, 'O', 'K'};
	static const unsigned char ok[] = {0x00, 0x01, 0xff, 'O', 'K', 0x00, 0x7f};
	static const unsigned char bad[] = {0x00, 0x02, 0xff, 'O', 'K'};
	struct cfg_health h = preset(CFG_CHECK_SEND_EXPECT);
	h.expect = (unsigned char *)want;
	h.expect_len = sizeof want;
	assert_int_equal(health_match(&h, ok, 1), 0); /* a NUL is not the end of the reply */
	assert_int_equal(health_match(&h, ok, 4), 0);
	assert_int_equal(health_match(&h, ok, 5), 1);
	assert_int_equal(health_match(&h, ok, sizeof ok), 1);
	assert_int_equal(health_match(&h, bad, 2), -1);
	assert_int_equal(health_match(&h, bad, sizeof bad), -1);
}

static void test_send_expect_regex(void **state)
{
	(void)state;
	regex_t re;
	assert_int_equal(regcomp(&re, "role:(master|slave)\r\n", REG_EXTENDED), 0);
	struct cfg_health h = preset(CFG_CHECK_SEND_EXPECT);
	h.expect_re = &re;
	assert_int_equal(match_str(&h, ""), 0);
	assert_int_equal(match_str(&h, "$120\r\n# Replication\r\nrole:mas"), 0);
	assert_int_equal(match_str(&h, "$120\r\n# Replication\r\nrole:master\r\n"), 1);
	assert_int_equal(match_str(&h, "role:slave\r\nconnected_slaves:0\r\n"), 1);
	assert_int_equal(match_str(&h, "role:sentinel\r\n"), 0); /* a regex never says never */
	/* Only `len` bytes are the reply: a match past them does not count. */
	static const char longer[] = "role:master\r\n";
	assert_int_equal(health_match(&h, (const unsigned char *)longer, sizeof longer - 2), 0);
	assert_int_equal(health_match(&h, (const unsigned char *)longer, sizeof longer - 1), 1);

	/* A NUL byte before the matching part: REG_STARTEND reads past it. */
	static const unsigned char bin[] = "\x00\x01junk\x00role:slave\r\n";
	assert_int_equal(health_match(&h, bin, sizeof bin - 1), 1);
	assert_int_equal(health_match(&h, bin, 12), 0);
	regfree(&re);

	/* An anchored expression anchors at the start of the reply. */
	assert_int_equal(regcomp(&re, "^OK [0-9]+", REG_EXTENDED), 0);
	h.expect_re = &re;
	assert_int_equal(match_str(&h, "OK 42"), 1);
	assert_int_equal(match_str(&h, "NOT OK 42"), 0);
	regfree(&re);
}

static void test_redis(void **state)
{
	(void)state;
	struct cfg_health h = preset(CFG_CHECK_REDIS);
	assert_int_equal(match_str(&h, "+PONG\r\n"), 1);
	assert_int_equal(match_str(&h, "+PONG"), 1);
	assert_int_equal(match_str(&h, "+PO"), 0);
	assert_int_equal(match_str(&h, ""), 0);
	assert_int_equal(match_str(&h, "-ERR unknown command\r\n"), -1);
	assert_int_equal(match_str(&h, "-"), -1);
	assert_int_equal(match_str(&h, "+OK\r\n"), -1);
}

static void test_memcached(void **state)
{
	(void)state;
	struct cfg_health h = preset(CFG_CHECK_MEMCACHED);
	assert_int_equal(match_str(&h, "VERSION 1.6.18\r\n"), 1);
	assert_int_equal(match_str(&h, "VERSION "), 1);
	assert_int_equal(match_str(&h, "VERSION"), 0); /* the space is part of it */
	assert_int_equal(match_str(&h, "VER"), 0);
	assert_int_equal(match_str(&h, "ERROR\r\n"), -1);
	assert_int_equal(match_str(&h, "SERVER_ERROR out of memory\r\n"), -1);
}

static void test_smtp(void **state)
{
	(void)state;
	struct cfg_health h = preset(CFG_CHECK_SMTP);
	assert_int_equal(match_str(&h, "220 mail ESMTP"), 1);
	assert_int_equal(match_str(&h, "220-mail ESMTP first line\r\n"), 1);
	assert_int_equal(match_str(&h, "22"), 0);
	assert_int_equal(match_str(&h, ""), 0);
	assert_int_equal(match_str(&h, "554 no"), -1);
	assert_int_equal(match_str(&h, "421 busy"), -1);
	assert_int_equal(match_str(&h, "2"), 0);
	assert_int_equal(match_str(&h, "25"), -1);
}

static void test_http(void **state)
{
	(void)state;
	struct cfg_health h = preset(CFG_CHECK_HTTP);
	assert_int_equal(match_str(&h, "HTTP/1.1 200 OK"), 1);
	assert_int_equal(match_str(&h, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), 1);
	assert_int_equal(match_str(&h, "HTTP/1.0 302 Found"), 1);
	assert_int_equal(match_str(&h, "HTTP/1.1 204"), 1); /* the 12 bytes decide */
	assert_int_equal(match_str(&h, "HTTP/1.1 399 x"), 1);
	assert_int_equal(match_str(&h, "HTTP/1.1 503 x"), -1);
	assert_int_equal(match_str(&h, "HTTP/1.1 404 Not Found"), -1);
	assert_int_equal(match_str(&h, "HTTP/1.1 100 Continue"), -1);
	assert_int_equal(match_str(&h, "HTTP/1.1 2x0 OK"), -1);
	assert_int_equal(match_str(&h, "HTTP/1.x 200 OK"), -1);
	assert_int_equal(match_str(&h, "HTTP/1.1200 OK"), -1);
	assert_int_equal(match_str(&h, "HTTP/1.1x200 OK"), -1);
	assert_int_equal(match_str(&h, "HTTP/1.1 20"), 0);
	assert_int_equal(match_str(&h, "HTTP/1.1"), 0);
	assert_int_equal(match_str(&h, "HTT"), 0);
	assert_int_equal(match_str(&h, ""), 0);
	assert_int_equal(match_str(&h, "SSH-2.0"), -1);
	assert_int_equal(match_str(&h, "SSH-2.0-OpenSSH_9.2p1\r\n"), -1);
	assert_int_equal(match_str(&h, "HTTP/2 200"), -1);
	assert_int_equal(match_str(&h, "http/1.1 200 OK"), -1);
}

static void test_postgres(void **state)
{
	(void)state;
	struct cfg_health h = preset(CFG_CHECK_POSTGRES);
	assert_int_equal(match_str(&h, "S"), 1);
	assert_int_equal(match_str(&h, "N"), 1);
	assert_int_equal(match_str(&h, "E"), -1); /* an ErrorResponse: too old, or too many clients */
	assert_int_equal(match_str(&h, "Exxxx"), -1);
	assert_int_equal(health_match(&h, (const unsigned char *)"", 0), 0);
	assert_int_equal(match_str(&h, "x"), -1);
}

static void test_mysql(void **state)
{
	(void)state;
	struct cfg_health h = preset(CFG_CHECK_MYSQL);
	/* A MySQL 8 greeting: length 0x4a, sequence 0, protocol 10, "8.0.36"... */
	static const unsigned char greeting[] = {0x4a, 0x00, 0x00, 0x00, 0x0a, '8', '.', '0', '.', '3', '6', 0x00};
	/* "Host is not allowed to connect": an error packet, 0xff. */
	static const unsigned char error[] = {0x17, 0x00, 0x00, 0x00, 0xff, 0x6a, 0x04, 'H', 'o', 's', 't'};
	/* Sequence 1: not the first packet of a connection. */
	static const unsigned char seq1[] = {0x4a, 0x00, 0x00, 0x01, 0x0a};
	assert_int_equal(health_match(&h, greeting, 5), 1);
	assert_int_equal(health_match(&h, greeting, sizeof greeting), 1);
	assert_int_equal(health_match(&h, error, 5), -1);
	assert_int_equal(health_match(&h, error, sizeof error), -1);
	assert_int_equal(health_match(&h, seq1, sizeof seq1), -1);
	assert_int_equal(health_match(&h, greeting, 4), 0);
	assert_int_equal(health_match(&h, greeting, 1), 0);
	assert_int_equal(health_match(&h, greeting, 0), 0);
}

static void test_connect_and_none_always_match(void **state)
{
	(void)state;
	struct cfg_health h = preset(CFG_CHECK_CONNECT);
	assert_int_equal(health_match(&h, (const unsigned char *)"", 0), 1);
	assert_int_equal(match_str(&h, "anything"), 1);
	h = preset(CFG_CHECK_NONE);
	assert_int_equal(health_match(&h, (const unsigned char *)"", 0), 1);
	assert_int_equal(match_str(&h, "-ERR"), 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_send_expect_prefix),
	    cmocka_unit_test(test_send_expect_binary_prefix),
	    cmocka_unit_test(test_send_expect_regex),
	    cmocka_unit_test(test_redis),
	    cmocka_unit_test(test_memcached),
	    cmocka_unit_test(test_smtp),
	    cmocka_unit_test(test_http),
	    cmocka_unit_test(test_postgres),
	    cmocka_unit_test(test_mysql),
	    cmocka_unit_test(test_connect_and_none_always_match),
	};
	return cmocka_run_group_tests_name("health", tests, NULL, NULL);
}
