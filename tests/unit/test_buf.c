/*
 * tests/unit/test_buf.c — lib/buf: growth, the hard cap, escaping.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "buf.h"

static void test_add_and_printf_grow(void **state)
{
	(void)state;
	struct wp_buf b;
	wp_buf_init(&b, 1 << 20);
	for (int i = 0; i < 1000; i++)
		wp_buf_printf(&b, "%04d,", i);
	assert_false(b.failed);
	assert_int_equal(b.len, 5000);
	assert_int_equal(strlen(b.data), 5000);
	assert_memory_equal(b.data + 4995, "0999,", 5);
	/* A formatted piece longer than printf's small stack buffer. */
	char big[1000];
	memset(big, 'x', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	wp_buf_printf(&b, "[%s]", big);
	assert_int_equal(b.len, 5000 + 1001);
	assert_int_equal(b.data[b.len - 1], ']');
	wp_buf_reset(&b);
	assert_int_equal(b.len, 0);
	assert_string_equal(b.data, "");
	wp_buf_free(&b);
}

static void test_cap_sets_failed_and_drops(void **state)
{
	(void)state;
	struct wp_buf b;
	wp_buf_init(&b, 10);
	wp_buf_add(&b, "0123456789", 10);
	assert_false(b.failed);
	wp_buf_add(&b, "x", 1);
	assert_true(b.failed);
	assert_int_equal(b.len, 10);
	wp_buf_printf(&b, "%d", 5); /* stays failed, nothing appended */
	assert_int_equal(b.len, 10);
	wp_buf_reset(&b);
	assert_false(b.failed);
	wp_buf_free(&b);
}

static void test_json_and_label_escapes(void **state)
{
	(void)state;
	struct wp_buf b;
	wp_buf_init(&b, 1024);
	wp_buf_json_str(&b, "a\"b\\c\nd\x01");
	assert_string_equal(b.data, "a\\\"b\\\\c\\u000ad\\u0001");
	wp_buf_reset(&b);
	wp_buf_label(&b, "p\"o\\o\nl");
	assert_string_equal(b.data, "p\\\"o\\\\o\\nl");
	wp_buf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_add_and_printf_grow),
	    cmocka_unit_test(test_cap_sets_failed_and_drops),
	    cmocka_unit_test(test_json_and_label_escapes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
