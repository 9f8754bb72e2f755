/* lib/escape.c — see escape.h. */
#include "escape.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

int wp_hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* The bytes each style shows as a backslash and a letter. */
static const char named[WP_ESC_STYLE + 1][0x80] = {
    [WP_ESC_BYTES] = {['\r'] = 'r', ['\n'] = 'n', ['\t'] = 't', ['\0'] = '0', ['\\'] = '\\'},
    [WP_ESC_TEXT] = {['\n'] = 'n', ['\t'] = 't', ['"'] = '"', ['\\'] = '\\'},
};

/* The byte `letter` stands for after a backslash in the log style (the
 * escapes wp_unescape reads), or -1. */
static int named_byte(char letter)
{
	for (int c = 0; letter && c < 0x80; c++)
		if (named[WP_ESC_BYTES][c] == letter)
			return c;
	return -1;
}

ssize_t wp_unescape(const char *in, unsigned char *out, size_t cap)
{
	size_t n = 0;
	int c, hi, lo;
	while (*in) {
		if (n == cap)
			return -ENOSPC;
		if (in[0] == '\\' && (c = named_byte(in[1])) >= 0) {
			out[n++] = (unsigned char)c;
			in += 2;
		} else if (in[0] == '\\' && in[1] == 'x' && (hi = wp_hexval(in[2])) >= 0 &&
		           (lo = wp_hexval(in[3])) >= 0) {
			out[n++] = (unsigned char)(hi << 4 | lo);
			in += 4;
		} else {
			out[n++] = (unsigned char)*in++; /* a backslash that is no escape stays as written */
		}
	}
	return (ssize_t)n;
}

#define ESC_MAX 4 /* the longest way one byte is shown: \xHH */

/* Writes how c is shown in `style` into e (at most ESC_MAX bytes); returns
 * its length. */
static size_t escape_one(unsigned char c, unsigned style, char *e)
{
	static const char hex[] = "0123456789abcdef";
	if (c < 0x80 && named[style][c]) {
		e[0] = '\\';
		e[1] = named[style][c];
		return 2;
	}
	if ((c >= 0x20 && c < 0x7f) || (c >= 0x80 && (style == WP_ESC_TEXT || style == WP_ESC_LINE))) {
		e[0] = (char)c;
		return 1;
	}
	if (style == WP_ESC_MASK || style == WP_ESC_LINE) {
		e[0] = style == WP_ESC_MASK ? '?' : ' ';
		return 1;
	}
	e[0] = '\\';
	e[1] = 'x';
	e[2] = hex[c >> 4];
	e[3] = hex[c & 15];
	return 4;
}

/* Where a cut before in[i] goes: in the styles that keep UTF-8, back to
 * the start of the sequence in[i] continues. */
static size_t cut_at(const unsigned char *in, size_t i, unsigned style)
{
	if (style == WP_ESC_TEXT || style == WP_ESC_LINE)
		while (i > 0 && (in[i] & 0xc0) == 0x80)
			i--;
	return i;
}

size_t wp_escape_as(const unsigned char *in, size_t n, size_t max, char *out, size_t cap, unsigned how)
{
	unsigned style = how & WP_ESC_STYLE;
	size_t quotes = how & WP_ESC_QUOTE ? 2 : 0;
	size_t m = n > max ? cut_at(in, max, style) : n;
	size_t total = quotes, body = 0, room, i;
	char e[ESC_MAX];

	if (cap == 0)
		return 0;
	for (i = 0; i < m; i++)
		total += escape_one(in[i], style, e);
	/* All of it when it fits; otherwise as much as leaves room for "...". */
	bool cut = m < n || total >= cap;
	if (cap - 1 < quotes + (cut ? 3 : 0)) {
		out[0] = '\0';
		return 0;
	}
	room = cap - 1 - quotes - (cut ? 3 : 0);
	char *o = out + (quotes ? 1 : 0);
	for (i = 0; i < m; i++) {
		size_t len = escape_one(in[i], style, e);
		if (body + len > room)
			break;
		memcpy(o + body, e, len);
		body += len;
	}
	if (i < m)
		for (size_t keep = cut_at(in, i, style); i > keep;)
			body -= escape_one(in[--i], style, e);
	o += body;
	if (quotes) {
		out[0] = '"';
		*o++ = '"';
	}
	if (cut) {
		memcpy(o, "...", 3);
		o += 3;
	}
	*o = '\0';
	return i;
}

size_t wp_escape(const unsigned char *in, size_t n, char *out, size_t cap)
{
	return wp_escape_as(in, n, SIZE_MAX, out, cap, WP_ESC_BYTES);
}
