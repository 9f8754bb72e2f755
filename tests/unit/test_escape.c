/* tests/unit/test_escape.c — lib/escape: the command-line byte-string escapes,
 * decoded (wp_unescape) and shown in log lines (wp_escape). */
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

/* ---- wp_escape --------------------------------------------------------- */

#define CANARY 'Z'

/* Escape `n` bytes of `in` with capacity `cap` into a larger buffer, check
 * that nothing past cap was written, and compare with `want`. */
static void check_esc(const void *in, size_t n, size_t cap, const char *want, size_t want_shown)
{
	char out[1100];
	assert_true(cap < sizeof out);
	memset(out, CANARY, sizeof out);
	size_t shown = wp_escape(in, n, out, cap);
	for (size_t i = cap; i < sizeof out; i++)
		if (out[i] != CANARY)
			fail_msg("cap %zu: byte %zu written", cap, i);
	assert_non_null(memchr(out, '\0', cap));
	assert_string_equal(out, want);
	assert_int_equal(shown, want_shown);
}

static void test_escape_printable_unchanged(void **state)
{
	(void)state;
	check_esc("", 0, 8, "", 0);
	check_esc("hello world", 11, 64, "hello world", 11);
	/* Every printable ASCII byte but the backslash is itself. */
	char all[96];
	size_t n = 0;
	for (int c = 0x20; c < 0x7f; c++)
		if (c != '\\')
			all[n++] = (char)c;
	all[n] = '\0';
	check_esc(all, n, 128, all, n);
}

static void test_escape_specials(void **state)
{
	(void)state;
	check_esc("\r\n", 2, 64, "\\r\\n", 2);
	check_esc("a\tb", 3, 64, "a\\tb", 3);
	check_esc("\0", 1, 64, "\\0", 1);
	check_esc("x\\y", 3, 64, "x\\\\y", 3);
	check_esc("220 ready\r\n\0", 12, 64, "220 ready\\r\\n\\0", 12);
}

static void test_escape_hex(void **state)
{
	(void)state;
	check_esc("\x01\x1f\x7f", 3, 64, "\\x01\\x1f\\x7f", 3);
	check_esc("\x80\xab\xff", 3, 64, "\\x80\\xab\\xff", 3); /* lowercase */
	check_esc("\x0b\x0c\x1b[0m", 6, 64, "\\x0b\\x0c\\x1b[0m", 6);
	check_esc("-\xc3\xa9-", 4, 64, "-\\xc3\\xa9-", 4); /* UTF-8 is bytes too */
}

static void test_escape_truncates(void **state)
{
	(void)state;
	/* 8 bytes shown as 8 characters: 9 with the NUL. */
	static const char in[] = "abcdefgh";
	check_esc(in, 8, 64, "abcdefgh", 8);
	check_esc(in, 8, 11, "abcdefgh", 8);
	check_esc(in, 8, 8, "abcd...", 4); /* as much as fits, then "..." */
	check_esc(in, 8, 7, "abc...", 3);
	check_esc(in, 8, 5, "a...", 1);
	check_esc(in, 8, 4, "...", 0);
	/* An escape is never split. */
	check_esc("ab\xff", 3, 7, "ab\\xff", 3);
	check_esc("ab\xff", 3, 6, "ab...", 2);
	check_esc("ab\xff" "cd", 5, 8, "ab...", 2);
	check_esc("ab\xff" "cdef", 7, 10, "ab\\xff...", 3);
	check_esc("a\r\nbcd", 6, 8, "a\\r...", 2);
	check_esc("a\r\nb", 4, 6, "a...", 1);
}

static void test_escape_fits_without_dots(void **state)
{
	(void)state;
	/* When everything fits, nothing is cut to make room for a "..." that
	 * is not needed: cap 9 and 10 hold all 8 characters and the NUL. */
	check_esc("abcdefgh", 8, 9, "abcdefgh", 8);
	check_esc("abcdefgh", 8, 10, "abcdefgh", 8);
	check_esc("abcde", 5, 6, "abcde", 5);
	check_esc("a\nb", 3, 5, "a\\nb", 3);
	check_esc("ab\xff" "cd", 5, 9, "ab\\xffcd", 5);
}

static void test_escape_tiny_caps(void **state)
{
	(void)state;
	char out[4] = {CANARY, CANARY, CANARY, CANARY};
	/* cap 0: nothing written at all. */
	assert_int_equal(wp_escape((const unsigned char *)"abc", 3, out, 0), 0);
	assert_int_equal(out[0], CANARY);
	assert_int_equal(wp_escape((const unsigned char *)"", 0, out, 0), 0);
	assert_int_equal(out[0], CANARY);
	/* cap 1: only the NUL. */
	check_esc("abc", 3, 1, "", 0);
	check_esc("", 0, 1, "", 0);
	check_esc("\xff", 1, 1, "", 0);
	/* Too small for "...": still terminated within cap, and only what it
	 * says it shows. */
	for (size_t cap = 2; cap < 4; cap++) {
		char buf[8];
		memset(buf, CANARY, sizeof buf);
		size_t shown = wp_escape((const unsigned char *)"abcdef", 6, buf, cap);
		assert_non_null(memchr(buf, '\0', cap));
		assert_int_equal(buf[cap], CANARY);
		assert_true(shown < 6);
		assert_int_equal(strlen(buf), shown);
		assert_memory_equal(buf, "abcdef", shown);
	}
}

/* Whatever the cap, the output is a terminated prefix of the full escape
 * followed by "..." exactly when not everything was shown. */
static void test_escape_shown_matches_output(void **state)
{
	(void)state;
	static const unsigned char in[] = "x\r\n\x01\\y\0\xfe end";
	size_t n = sizeof in - 1;
	char full[128], buf[128];
	assert_int_equal(wp_escape(in, n, full, sizeof full), n);
	size_t full_len = strlen(full);
	for (size_t cap = 1; cap <= full_len + 1; cap++) {
		size_t shown = wp_escape(in, n, buf, cap);
		size_t len = strlen(buf);
		assert_true(len < cap);
		assert_true(shown <= n);
		if (shown == n) {
			assert_string_equal(buf, full);
			continue;
		}
		/* The shown bytes, escaped alone, are what precedes the "..." (if any). */
		char part[128];
		assert_int_equal(wp_escape(in, shown, part, sizeof part), shown);
		if (cap >= 4) {
			assert_true(len >= 3);
			assert_memory_equal(buf + len - 3, "...", 3);
			assert_int_equal(len - 3, strlen(part));
			assert_memory_equal(buf, part, len - 3);
		}
	}
}

static void test_escape_round_trip(void **state)
{
	(void)state;
	unsigned char in[256], back[256];
	char text[256 * 4 + 1];
	for (int i = 0; i < 256; i++)
		in[i] = (unsigned char)i;
	assert_int_equal(wp_escape(in, sizeof in, text, sizeof text), 256);
	assert_null(strstr(text, "..."));
	assert_int_equal(wp_unescape(text, back, sizeof back), 256);
	assert_memory_equal(back, in, 256);
	/* And in reverse order, so each byte has other neighbours. */
	for (int i = 0; i < 256; i++)
		in[i] = (unsigned char)(255 - i);
	assert_int_equal(wp_escape(in, sizeof in, text, sizeof text), 256);
	assert_int_equal(wp_unescape(text, back, sizeof back), 256);
	assert_memory_equal(back, in, 256);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_plain_and_escapes),
	    cmocka_unit_test(test_hex),
	    cmocka_unit_test(test_not_escapes_kept),
	    cmocka_unit_test(test_capacity),
	    cmocka_unit_test(test_escape_printable_unchanged),
	    cmocka_unit_test(test_escape_specials),
	    cmocka_unit_test(test_escape_hex),
	    cmocka_unit_test(test_escape_truncates),
	    cmocka_unit_test(test_escape_fits_without_dots),
	    cmocka_unit_test(test_escape_tiny_caps),
	    cmocka_unit_test(test_escape_shown_matches_output),
	    cmocka_unit_test(test_escape_round_trip),
	};
	return cmocka_run_group_tests_name("escape", tests, NULL, NULL);
}
