/*
 * lib/escape.h — the backslash escapes our tools and the config accept for
 * byte strings (greetings, health check requests and replies): \r \n \t \0
 * \\ and \xHH; and the one way bytes from outside are shown in our own
 * messages, log lines and replies (wp_escape_as).
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

/*
 * Showing bytes someone else chose (a peer, a config file) in a line of ours:
 * the one sanitiser, in four styles. `how` is one style, optionally with
 * WP_ESC_QUOTE:
 *   WP_ESC_BYTES  log lines: printable ASCII as is, \r \n \t \0 \\ and \xHH
 *                 for the rest (what wp_unescape reads back);
 *   WP_ESC_TEXT   config messages: UTF-8 text as is (the caller has validated
 *                 it), '"' and '\' after a backslash, \n \t, and \xHH for the
 *                 other control bytes;
 *   WP_ESC_MASK   replies to a peer: printable ASCII as is, every other byte
 *                 as '?', so nothing in the reply reads as an escape;
 *   WP_ESC_LINE   one line of a newline-separated protocol (sd_notify's
 *                 STATUS=): control bytes as ' ', everything else as is;
 *   WP_ESC_QUOTE  between double quotes.
 * The styles that keep bytes >= 0x80 (TEXT, LINE) never cut inside a UTF-8
 * sequence.
 */
enum {
	WP_ESC_BYTES = 0,
	WP_ESC_TEXT = 1,
	WP_ESC_MASK = 2,
	WP_ESC_LINE = 3,
	WP_ESC_STYLE = 3, /* the bits that name the style */
	WP_ESC_QUOTE = 4,
};

/* Show in[0..n) in the style `how` into out: at most `max` input bytes (a
 * cut input ends in "...") and at most cap output bytes including the NUL;
 * when the shown bytes do not fit, as much as fits followed by "..." (after
 * the closing quote), and an escape is never split. A cap too small for the
 * quotes and "..." gives "", cap 0 writes nothing. Returns the number of
 * input bytes shown. */
size_t wp_escape_as(const unsigned char *in, size_t n, size_t max, char *out, size_t cap, unsigned how);

/* wp_escape_as in the log style, no input limit: the one most callers want. */
size_t wp_escape(const unsigned char *in, size_t n, char *out, size_t cap);

#endif
