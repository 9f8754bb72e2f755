/* tests/unit/test_addr.c — lib/addr: host:port splitting and sockaddr formatting. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/un.h>

#include "addr.h"

static void split_ok(const char *s, const char *want_host, uint16_t want_port)
{
	char host[256];
	uint16_t port = 0;
	const char *why = NULL;

	assert_int_equal(wp_addr_split(s, host, sizeof host, &port, &why), 0);
	assert_string_equal(host, want_host);
	assert_int_equal(port, want_port);
}

static void split_bad(const char *s, int want_rc, const char *want_why)
{
	char host[256];
	uint16_t port = 0;
	const char *why = NULL;

	assert_int_equal(wp_addr_split(s, host, sizeof host, &port, &why), want_rc);
	assert_non_null(why);
	assert_string_equal(why, want_why);
}

static void test_split_forms(void **state)
{
	(void)state;
	split_ok("127.0.0.1:6379", "127.0.0.1", 6379);
	split_ok("db.internal:5432", "db.internal", 5432);
	split_ok("localhost:1", "localhost", 1);
	split_ok("h:65535", "h", 65535);
	split_ok("[::1]:6380", "::1", 6380);
	split_ok("[2001:db8::7]:80", "2001:db8::7", 80);
	split_ok("[fe80::1%eth0]:22", "fe80::1%eth0", 22);
	split_ok("a:007", "a", 7); /* decimal, leading zeros allowed */
}

static void test_split_errors(void **state)
{
	(void)state;
	split_bad(NULL, -EINVAL, "empty address");
	split_bad("", -EINVAL, "empty address");
	split_bad("localhost", -EINVAL, "missing port");
	split_bad("localhost:", -EINVAL, "missing port");
	split_bad(":6379", -EINVAL, "missing host");
	split_bad("a:0", -EINVAL, "port must be between 1 and 65535");
	split_bad("a:65536", -EINVAL, "port must be between 1 and 65535");
	split_bad("a:99999999999999999999999", -EINVAL, "port must be between 1 and 65535");
	split_bad("a:-1", -EINVAL, "port must be a number");
	split_bad("a:+1", -EINVAL, "port must be a number");
	split_bad("a:80x", -EINVAL, "port must be a number");
	split_bad("a:http", -EINVAL, "port must be a number");
	split_bad("a: 80", -EINVAL, "port must be a number");
	split_bad("::1:6379", -EINVAL, "IPv6 addresses need brackets, like [::1]:6379");
	split_bad("[::1:6379", -EINVAL, "missing ']'");
	split_bad("[::1]", -EINVAL, "missing port");
	split_bad("[::1]:", -EINVAL, "missing port");
	split_bad("[::1]6379", -EINVAL, "expected ':' after ']'");
	split_bad("[]:80", -EINVAL, "brackets are only for IPv6 addresses");
	split_bad("[127.0.0.1]:80", -EINVAL, "brackets are only for IPv6 addresses");
	split_bad("[[::1]]:80", -EINVAL, "unbalanced brackets");
	split_bad("::1]:80", -EINVAL, "unbalanced brackets");
	split_bad("a]:80", -EINVAL, "unbalanced brackets");
	split_bad("a b:80", -EINVAL, "host contains a space or control character");
	split_bad("a\tb:80", -EINVAL, "host contains a space or control character");
}

static void test_split_host_too_long(void **state)
{
	char host[8];
	uint16_t port;
	const char *why = NULL;

	(void)state;
	assert_int_equal(wp_addr_split("1234567:1", host, sizeof host, &port, &why), 0);
	assert_string_equal(host, "1234567");
	assert_int_equal(wp_addr_split("12345678:1", host, sizeof host, &port, &why), -ENAMETOOLONG);
	assert_string_equal(why, "host name too long");
	assert_int_equal(wp_addr_split("[::1:2:3:4]:1", host, sizeof host, &port, &why), -ENAMETOOLONG);
}

static void test_format_v4(void **state)
{
	struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons(6379)};
	char buf[WP_ADDR_STRLEN];

	(void)state;
	assert_int_equal(inet_pton(AF_INET, "127.0.0.1", &in.sin_addr), 1);
	assert_int_equal(wp_addr_format((struct sockaddr *)&in, buf, sizeof buf), 14);
	assert_string_equal(buf, "127.0.0.1:6379");
}

static void test_format_v6(void **state)
{
	struct sockaddr_in6 in6 = {.sin6_family = AF_INET6, .sin6_port = htons(6380)};
	char buf[WP_ADDR_STRLEN];

	(void)state;
	assert_int_equal(inet_pton(AF_INET6, "::1", &in6.sin6_addr), 1);
	assert_int_equal(wp_addr_format((struct sockaddr *)&in6, buf, sizeof buf), 10);
	assert_string_equal(buf, "[::1]:6380");

	in6.sin6_scope_id = 2;
	assert_int_equal(inet_pton(AF_INET6, "fe80::1", &in6.sin6_addr), 1);
	assert_true(wp_addr_format((struct sockaddr *)&in6, buf, sizeof buf) > 0);
	assert_string_equal(buf, "[fe80::1%2]:6380");
}

static void test_format_longest_fits(void **state)
{
	struct sockaddr_in6 in6 = {
	    .sin6_family = AF_INET6, .sin6_port = htons(65535), .sin6_scope_id = UINT32_MAX};
	char buf[WP_ADDR_STRLEN];

	(void)state;
	assert_int_equal(inet_pton(AF_INET6, "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255", &in6.sin6_addr),
	                 1);
	assert_true(wp_addr_format((struct sockaddr *)&in6, buf, sizeof buf) > 0);
	assert_true(strlen(buf) < WP_ADDR_STRLEN);
}

static void test_format_errors(void **state)
{
	struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons(6379)};
	struct sockaddr_un un = {.sun_family = AF_UNIX};
	char buf[WP_ADDR_STRLEN];

	(void)state;
	in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(wp_addr_format((struct sockaddr *)&in, buf, 14), -ENOSPC);
	assert_string_equal(buf, "");
	assert_int_equal(wp_addr_format((struct sockaddr *)&in, buf, 15), 14);
	assert_int_equal(wp_addr_format((struct sockaddr *)&in, NULL, 0), -ENOSPC);
	strcpy(buf, "x");
	assert_int_equal(wp_addr_format((struct sockaddr *)&un, buf, sizeof buf), -EAFNOSUPPORT);
	assert_string_equal(buf, "");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_split_forms),         cmocka_unit_test(test_split_errors),
	    cmocka_unit_test(test_split_host_too_long), cmocka_unit_test(test_format_v4),
	    cmocka_unit_test(test_format_v6),           cmocka_unit_test(test_format_longest_fits),
	    cmocka_unit_test(test_format_errors),
	};
	return cmocka_run_group_tests_name("addr", tests, NULL, NULL);
}
