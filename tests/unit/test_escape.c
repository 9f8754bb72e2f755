/* tests/unit/test_escape.c — lib/escape: the command-line byte-string escapes,
 * decoded (wp_unescape) and shown in log lines (wp_escape), config messages,
 * admin replies and sd_notify status lines (wp_escape_as). */
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

/* ---- wp_escape_as: the styles of the one sanitiser ---------------------- */

/* Like check_esc, for wp_escape_as with an input limit and a style. */
static void check_as(const void *in, size_t n, size_t max, size_t cap, unsigned how, const char *want,
                     size_t want_shown)
{
	char out[1100];
	assert_true(cap < sizeof out);
	memset(out, CANARY, sizeof out);
	size_t shown = wp_escape_as(in, n, max, out, cap, how);
	for (size_t i = cap; i < sizeof out; i++)
		if (out[i] != CANARY)
			fail_msg("cap %zu: byte %zu written", cap, i);
	assert_int_equal(shown, want_shown);
	if (cap == 0) {
		assert_string_equal(want, ""); /* nothing written at all */
		return;
	}
	assert_non_null(memchr(out, '\0', cap));
	assert_string_equal(out, want);
}

/* The config's messages (config/errors.c show()): UTF-8 text kept, '"' and
 * '\' after a backslash, only \n and \t named, other control bytes \xHH. */
static void test_text_style(void **state)
{
	(void)state;
	const unsigned T = WP_ESC_TEXT, TQ = WP_ESC_TEXT | WP_ESC_QUOTE;
	check_as("many", 4, 60, 256, TQ, "\"many\"", 4);
	check_as("many", 4, 60, 256, T, "many", 4);
	check_as("", 0, 60, 256, TQ, "\"\"", 0);
	check_as("a\"b\\c", 5, 60, 256, TQ, "\"a\\\"b\\\\c\"", 5);
	check_as("a\"b", 3, 60, 256, T, "a\\\"b", 3); /* '"' escaped without quotes too */
	check_as("a\nb\tc", 5, 60, 256, TQ, "\"a\\nb\\tc\"", 5);
	/* \r and \0 are not named in this style, unlike the log style. */
	check_as("\r\0\x01\x1f\x7f", 5, 60, 256, T, "\\x0d\\x00\\x01\\x1f\\x7f", 5);
	check_as("caf\xc3\xa9 \xe2\x82\xac", 9, 60, 256, TQ, "\"caf\xc3\xa9 \xe2\x82\xac\"", 9);
}

/* At most `max` input bytes, then "..." after the closing quote; the cut
 * never splits a UTF-8 sequence. */
static void test_text_input_limit(void **state)
{
	(void)state;
	const unsigned TQ = WP_ESC_TEXT | WP_ESC_QUOTE;
	check_as("abcdef", 6, 6, 256, TQ, "\"abcdef\"", 6);
	check_as("abcdefg", 7, 6, 256, TQ, "\"abcdef\"...", 6);
	check_as("abcdefg", 7, 6, 256, WP_ESC_TEXT, "abcdef...", 6);
	/* "ab" then é (2 bytes) then € (3 bytes): a limit inside either backs off. */
	static const char u[] = "ab\xc3\xa9\xe2\x82\xac!";
	check_as(u, 8, 3, 256, TQ, "\"ab\"...", 2);
	check_as(u, 8, 4, 256, TQ, "\"ab\xc3\xa9\"...", 4);
	check_as(u, 8, 5, 256, TQ, "\"ab\xc3\xa9\"...", 4);
	check_as(u, 8, 6, 256, TQ, "\"ab\xc3\xa9\"...", 4);
	check_as(u, 8, 7, 256, TQ, "\"ab\xc3\xa9\xe2\x82\xac\"...", 7);
	/* The config's own sizes: 60 bytes of \xHH, quotes and "..." fit in 256. */
	unsigned char ctl[100];
	memset(ctl, 0x01, sizeof ctl);
	char out[256];
	assert_int_equal(wp_escape_as(ctl, sizeof ctl, 60, out, sizeof out, TQ), 60);
	assert_int_equal(strlen(out), 1 + 60 * 4 + 1 + 3);
	assert_memory_equal(out + strlen(out) - 4, "\"...", 4);
}

/* A cap cut keeps the frame whole: opening quote, what fits, closing quote,
 * "..."; in the text style it backs off to the start of a UTF-8 sequence. */
static void test_cap_cut_with_quotes_and_utf8(void **state)
{
	(void)state;
	const unsigned TQ = WP_ESC_TEXT | WP_ESC_QUOTE;
	check_as("abcdef", 6, SIZE_MAX, 9, TQ, "\"abcdef\"", 6);
	check_as("abcdef", 6, SIZE_MAX, 8, TQ, "\"ab\"...", 2);
	check_as("abcdef", 6, SIZE_MAX, 7, TQ, "\"a\"...", 1);
	check_as("abcdef", 6, SIZE_MAX, 6, TQ, "\"\"...", 0);
	check_as("abcdef", 6, SIZE_MAX, 5, TQ, "", 0); /* no room for the frame */
	check_as("abcdef", 6, SIZE_MAX, 1, TQ, "", 0);
	check_as("abcdef", 6, SIZE_MAX, 0, TQ, "", 0);
	/* é is two bytes shown as two: room for one of them is room for neither. */
	check_as("a\xc3\xa9zzzz", 7, SIZE_MAX, 8, TQ, "\"a\"...", 1);
	check_as("a\xc3\xa9zzzz", 7, SIZE_MAX, 9, TQ, "\"a\xc3\xa9\"...", 3);
	/* The log style has no sequences to keep: \xc3 alone is a whole escape. */
	check_as("a\xc3\xa9zzzz", 7, SIZE_MAX, 10, WP_ESC_BYTES, "a\\xc3...", 2);
	check_as("a\"b", 3, SIZE_MAX, 64, WP_ESC_BYTES | WP_ESC_QUOTE, "\"a\"b\"", 3);
}

/* The admin socket's replies: printable ASCII as is, anything else '?', at
 * most 40 bytes echoed (then "..."). */
static void test_mask_style(void **state)
{
	(void)state;
	check_as("frobnicate", 10, 40, 44, WP_ESC_MASK, "frobnicate", 10);
	check_as("\x01\x02\xff\xfe\x7f", 5, 40, 44, WP_ESC_MASK, "?????", 5);
	check_as("a\\b\"c\td\xc3\xa9", 9, 40, 44, WP_ESC_MASK, "a\\b\"c?d??", 9);
	char in[50];
	memset(in, 'x', sizeof in);
	char want[50];
	memset(want, 'x', 40);
	want[40] = '\0';
	check_as(in, 40, 40, 44, WP_ESC_MASK, want, 40);
	strcpy(want + 40, "...");
	check_as(in, 41, 40, 44, WP_ESC_MASK, want, 40);
	check_as(in, 50, 40, 44, WP_ESC_MASK, want, 40);
	check_as(in, 50, 40, 8, WP_ESC_MASK, "xxxx...", 4);
}

static void test_bytes_style_is_wp_escape(void **state)
{
	(void)state;
	static const unsigned char in[] = "x\r\n\x01\\y\"\0\xfe end";
	size_t n = sizeof in - 1;
	char a[64], b[64];
	for (size_t cap = 0; cap < sizeof a; cap++) {
		memset(a, CANARY, sizeof a);
		memset(b, CANARY, sizeof b);
		assert_int_equal(wp_escape(in, n, a, cap),
		                 wp_escape_as(in, n, SIZE_MAX, b, cap, WP_ESC_BYTES));
		assert_memory_equal(a, b, sizeof a);
	}
	/* An input limit in the log style: the cut is marked like a cap's. */
	check_as("abcdef", 6, 3, 64, WP_ESC_BYTES, "abc...", 3);
	check_as("\r\n\r\n", 4, 2, 64, WP_ESC_BYTES, "\\r\\n...", 2);
	check_as("abc", 3, 0, 64, WP_ESC_BYTES, "...", 0);
	check_as("", 0, 0, 64, WP_ESC_BYTES, "", 0);
}

/* sd_notify's STATUS= (daemon/systemd.c): one line, control bytes as
 * spaces, nothing escaped; a cut ends in "..." within the cap. */
static void test_line_style(void **state)
{
	(void)state;
	check_as("3 pools, 12 idle", 16, SIZE_MAX, 64, WP_ESC_LINE, "3 pools, 12 idle", 16);
	check_as("a\nb\r\tc\x7f\x01" "d", 9, SIZE_MAX, 64, WP_ESC_LINE, "a b  c  d", 9);
	check_as("\\ \"q\" caf\xc3\xa9", 11, SIZE_MAX, 64, WP_ESC_LINE, "\\ \"q\" caf\xc3\xa9", 11);
	check_as("abcdefgh", 8, SIZE_MAX, 9, WP_ESC_LINE, "abcdefgh", 8);
	check_as("abcdefgh", 8, SIZE_MAX, 8, WP_ESC_LINE, "abcd...", 4);
	check_as("ab\ncdefgh", 9, SIZE_MAX, 8, WP_ESC_LINE, "ab c...", 4);
	/* Kept UTF-8 is never cut inside a sequence. */
	check_as("abc\xc3\xa9" "fgh", 8, SIZE_MAX, 8, WP_ESC_LINE, "abc...", 3);
}

/* For every style, frame and cap: a terminated prefix of the whole, cut
 * only between escapes, and "..." exactly when not everything was shown. */
static void test_every_style_every_cap(void **state)
{
	(void)state;
	static const unsigned char in[] = "x\r\n\x01\\y\"\0\xc3\xa9\xfe end";
	size_t n = sizeof in - 1;
	for (unsigned style = 0; style <= WP_ESC_STYLE; style++) {
		for (unsigned q = 0; q <= WP_ESC_QUOTE; q += WP_ESC_QUOTE) {
			char full[128], buf[128], part[128];
			assert_int_equal(wp_escape_as(in, n, SIZE_MAX, full, sizeof full, style | q), n);
			size_t full_len = strlen(full);
			for (size_t cap = 1; cap <= full_len + 1; cap++) {
				size_t shown = wp_escape_as(in, n, SIZE_MAX, buf, cap, style | q);
				size_t len = strlen(buf);
				assert_true(len < cap);
				if (shown == n) {
					assert_string_equal(buf, full);
					continue;
				}
				if (len == 0)
					continue; /* too small for the frame */
				assert_int_equal(wp_escape_as(in, shown, SIZE_MAX, part, sizeof part, style | q),
				                 shown);
				assert_true(len >= 3);
				assert_memory_equal(buf + len - 3, "...", 3);
				assert_int_equal(len - 3, strlen(part));
				assert_memory_equal(buf, part, len - 3);
			}
		}
	}
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
	    cmocka_unit_test(test_text_style),
	    cmocka_unit_test(test_text_input_limit),
	    cmocka_unit_test(test_cap_cut_with_quotes_and_utf8),
	    cmocka_unit_test(test_mask_style),
	    cmocka_unit_test(test_bytes_style_is_wp_escape),
	    cmocka_unit_test(test_line_style),
	    cmocka_unit_test(test_every_style_every_cap),
	};
	return cmocka_run_group_tests_name("escape", tests, NULL, NULL);
}
