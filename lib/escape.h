/*
 * lib/escape.h — the backslash escapes our tools accept on the command line
 * for byte strings (greetings, expected replies): \r \n \t \0 \\ and \xHH.
 */
#ifndef WARMPOOL_ESCAPE_H
#define WARMPOOL_ESCAPE_H

#include <stddef.h>
#include <sys/types.h>

/* Decode `in` into out (at most cap bytes; NUL bytes allowed). An unknown
 * escape, or \x without two hex digits, keeps its backslash as written.
 * Returns the decoded length, or -ENOSPC when it does not fit in cap. */
ssize_t wp_unescape(const char *in, unsigned char *out, size_t cap) __attribute__((warn_unused_result));

#endif
