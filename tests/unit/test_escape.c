/* tests/unit/test_escape.c — lib/escape: the command-line byte-string escapes. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "escape.h"

static void check(const char *in, const char *want, size_t want_len)
{
	unsigned char out[64];
	ssize_t n = wp_unescape(in, out, sizeof out);
	assert_int_equal(n, (ssize_t)want_len);
	assert_memory_equal(out, want, want_len);
}

static void test_plain_and_escapes(void **state)
{
	(void)state;
	check("", "", 0);
	check("hello", "hello", 5);
	check("220 ready\\r\\n", "220 ready\r\n", 11);
	check("a\\tb\\\\c", "a\tb\\c", 5);
	check("\\0x", "\0x", 2);
}

static void test_hex(void **state)
{
	(void)state;
	check("\\x41\\x7a\\xFF", "Az\xff", 3);
	check("\\x00\\x0a", "\0\n", 2);
}

static void test_not_escapes_kept(void **state)
{
	(void)state;
	check("\\q", "\\q", 2);     /* unknown escape */
	check("\\x4", "\\x4", 3);   /* one hex digit */
	check("\\x+1", "\\x+1", 4); /* not hex (strtoul would take it) */
	check("\\xg0", "\\xg0", 4);
	check("end\\", "end\\", 4); /* trailing backslash */
}

static void test_capacity(void **state)
{
	(void)state;
	unsigned char out[4];
	assert_int_equal(wp_unescape("abcd", out, 4), 4);
	assert_int_equal(wp_unescape("abcde", out, 4), -ENOSPC);
	assert_int_equal(wp_unescape("abc\\r\\n", out, 4), -ENOSPC);
	assert_int_equal(wp_unescape("", out, 0), 0);
	assert_int_equal(wp_unescape("a", out, 0), -ENOSPC);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_plain_and_escapes),
	    cmocka_unit_test(test_hex),
	    cmocka_unit_test(test_not_escapes_kept),
	    cmocka_unit_test(test_capacity),
	};
	return cmocka_run_group_tests_name("escape", tests, NULL, NULL);
}
