/* lib/escape.c — see escape.h. */
#include "escape.h"

#include <errno.h>

static int hexval(char c)
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
			if ((hi = hexval(in[2])) >= 0 && (lo = hexval(in[3])) >= 0) {
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
