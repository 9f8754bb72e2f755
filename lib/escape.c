/* lib/escape.c — see escape.h. */
#include "escape.h"

#include <errno.h>
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

ssize_t wp_unescape(const char *in, unsigned char *out, size_t cap)
{
	size_t n = 0;
	while (*in) {
		if (n == cap)
			return -ENOSPC;
		if (in[0] != '\\' || !in[1]) {
			out[n++] = (unsigned char)*in++;
			continue;
		}
		int hi, lo;
		switch (in[1]) {
		case 'r':
			out[n++] = '\r';
			break;
		case 'n':
			out[n++] = '\n';
			break;
		case 't':
			out[n++] = '\t';
			break;
		case '0':
			out[n++] = '\0';
			break;
		case '\\':
			out[n++] = '\\';
			break;
		case 'x':
			if ((hi = wp_hexval(in[2])) >= 0 && (lo = wp_hexval(in[3])) >= 0) {
				out[n++] = (unsigned char)(hi << 4 | lo);
				in += 4;
				continue;
			}
			__attribute__((fallthrough)); /* not an escape after all */
		default:
			out[n++] = '\\'; /* kept as written; the next char follows */
			in++;
			continue;
		}
		in += 2;
	}
	return (ssize_t)n;
}

/* Writes the escape for c into e (at most 4 bytes); returns its length. */
static size_t escape_one(unsigned char c, char *e)
{
	static const char hex[] = "0123456789abcdef";
	static const char named[] = {['\r'] = 'r', ['\n'] = 'n', ['\t'] = 't', ['\0'] = '0', ['\\'] = '\\'};
	if (c < sizeof named && named[c]) {
		e[0] = '\\';
		e[1] = named[c];
		return 2;
	}
	if (c >= 0x20 && c < 0x7f) {
		e[0] = (char)c;
		return 1;
	}
	e[0] = '\\';
	e[1] = 'x';
	e[2] = hex[c >> 4];
	e[3] = hex[c & 15];
	return 4;
}

size_t wp_escape(const unsigned char *in, size_t n, char *out, size_t cap)
{
	char e[4];
	size_t total = 0, o = 0, i;
	if (cap == 0)
		return 0;
	for (i = 0; i < n; i++)
		total += escape_one(in[i], e);
	/* All of it when it fits; otherwise as much as leaves room for "...". */
	size_t limit = total < cap ? cap : (cap > 3 ? cap - 3 : 0);
	for (i = 0; i < n; i++) {
		size_t len = escape_one(in[i], e);
		if (o + len >= limit)
			break;
		memcpy(out + o, e, len);
		o += len;
	}
	if (i < n && o + 3 < cap) {
		memcpy(out + o, "...", 3);
		o += 3;
	}
	out[o] = '\0';
	return i;
}
