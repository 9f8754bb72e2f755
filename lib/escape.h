/*
 * lib/escape.h — the backslash escapes our tools and the config accept for
 * byte strings (greetings, health check requests and replies): \r \n \t \0
 * \\ and \xHH.
 */
#ifndef WARMPOOL_ESCAPE_H
#define WARMPOOL_ESCAPE_H

#include <stddef.h>
#include <sys/types.h>

/* Decode `in` into out (at most cap bytes; NUL bytes allowed). An unknown
 * escape, or \x without two hex digits, keeps its backslash as written.
 * Returns the decoded length, or -ENOSPC when it does not fit in cap. */
ssize_t wp_unescape(const char *in, unsigned char *out, size_t cap) __attribute__((warn_unused_result));

/* The value of one hex digit (either case), or -1. */
int wp_hexval(char c);

/* The reverse, for showing bytes in a log line: printable ASCII as is, \r \n
 * \t \0 \\ and \xHH for the rest. Writes at most cap bytes including the
 * NUL; when `in` does not fit, as much as fits followed by "...". Returns the
 * number of input bytes shown. */
size_t wp_escape(const unsigned char *in, size_t n, char *out, size_t cap);

#endif
