/* lib/buf.c — see buf.h. */
#include "buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void wp_buf_init(struct wp_buf *b, size_t max)
{
	memset(b, 0, sizeof *b);
	b->max = max;
}

void wp_buf_free(struct wp_buf *b)
{
	free(b->data);
	memset(b, 0, sizeof *b);
}

void wp_buf_reset(struct wp_buf *b)
{
	b->len = 0;
	b->failed = false;
	if (b->data)
		b->data[0] = '\0';
}

/* Room for n more bytes plus a NUL. */
static bool wp_buf_reserve(struct wp_buf *b, size_t n)
{
	if (b->failed)
		return false;
	if (n > b->max || b->len > b->max - n) {
		b->failed = true;
		return false;
	}
	if (b->len + n + 1 <= b->cap)
		return true;
	size_t cap = b->cap ? b->cap : 256;
	while (cap < b->len + n + 1)
		cap *= 2;
	char *d = realloc(b->data, cap);
	if (!d) {
		b->failed = true;
		return false;
	}
	b->data = d;
	b->cap = cap;
	return true;
}

void wp_buf_add(struct wp_buf *b, const void *p, size_t n)
{
	if (!wp_buf_reserve(b, n))
		return;
	memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
}

void wp_buf_printf(struct wp_buf *b, const char *fmt, ...)
{
	va_list ap;
	char small[256];
	va_start(ap, fmt);
	int n = vsnprintf(small, sizeof small, fmt, ap);
	va_end(ap);
	if (n < 0) {
		b->failed = true;
		return;
	}
	if ((size_t)n < sizeof small) {
		wp_buf_add(b, small, (size_t)n);
		return;
	}
	if (!wp_buf_reserve(b, (size_t)n))
		return;
	va_start(ap, fmt);
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

void wp_buf_json_str(struct wp_buf *b, const char *s)
{
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			wp_buf_printf(b, "\\%c", c);
		else if (c < 0x20)
			wp_buf_printf(b, "\\u%04x", c);
		else
			wp_buf_add(b, s, 1);
	}
}

void wp_buf_label(struct wp_buf *b, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\' || *s == '"')
			wp_buf_printf(b, "\\%c", *s);
		else if (*s == '\n')
			wp_buf_add(b, "\\n", 2);
		else
			wp_buf_add(b, s, 1);
	}
}
