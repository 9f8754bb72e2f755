/*
 * lib/buf.h — a growable byte buffer with a hard size cap, for building
 * replies (admin answers, metrics pages). Appending past the cap or out of
 * memory sets `failed` and drops the bytes, so a caller checks once at the
 * end instead of after every append.
 */
#ifndef WARMPOOL_BUF_H
#define WARMPOOL_BUF_H

#include <stdbool.h>
#include <stddef.h>

struct wp_buf {
	char *data; /* NUL-terminated while len < cap */
	size_t len, cap;
	size_t max; /* never grows beyond this many bytes */
	bool failed;
};

void wp_buf_init(struct wp_buf *b, size_t max);
void wp_buf_free(struct wp_buf *b);
void wp_buf_reset(struct wp_buf *b); /* empty again, keeps the memory */
void wp_buf_add(struct wp_buf *b, const void *p, size_t n);
void wp_buf_printf(struct wp_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Append s as the inside of a JSON string (quotes not included). */
void wp_buf_json_str(struct wp_buf *b, const char *s);
/* Append s escaped as a Prometheus label value (\\, \" and \n). */
void wp_buf_label(struct wp_buf *b, const char *s);

#endif
