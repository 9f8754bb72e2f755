/* daemon/log.c — see log.h. */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int log_max = LOG_INFO;
static int log_journal; /* stderr is the journal: "<N>" prefixes, no timestamps */
static int log_socket;  /* stderr is a socket (the journal's stream): sent without blocking */

/* A socket reader that stops reading (journald stuck, a stalled pipe of
 * sockets) must not stop the loop. Lines go out with MSG_DONTWAIT; the tail
 * of a line the socket took only in part waits here (so lines never
 * interleave) and goes first next time; a line that finds the tail still
 * waiting is dropped and counted, and the count is logged once the socket
 * takes lines again. A file, pipe or terminal is written as before: making
 * those non-blocking would change the descriptor for whoever shares it (a
 * shell). */
#define LOG_TAIL_MAX 4096
static char log_tail[LOG_TAIL_MAX];
static size_t log_tail_len;
static unsigned long long log_dropped;

static const char *const level_names[] = {"emerg",   "alert",  "crit", "error",
                                          "warning", "notice", "info", "debug"};

/* $JOURNAL_STREAM is "DEV:INODE" of the stream systemd connected; only trust
 * it when it is really our stderr (a child may inherit the variable). */
static int stderr_is_journal(void)
{
	const char *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;
	if (!js || sscanf(js, "%llu:%llu", &dev, &ino) != 2)
		return 0;
	if (fstat(STDERR_FILENO, &st) < 0)
		return 0;
	return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void log_init(int max_level)
{
	struct stat st;
	log_max = max_level;
	log_journal = stderr_is_journal();
	log_socket = fstat(STDERR_FILENO, &st) == 0 && S_ISSOCK(st.st_mode);
}

/* Send without blocking; how much the socket took (0 when full), -1 when
 * it is gone. */
static ssize_t log_send(const char *p, size_t n)
{
	for (;;) {
		ssize_t w = send(STDERR_FILENO, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (w >= 0)
			return w;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return 0;
		if (errno == ENOTSOCK) /* stderr was replaced by something else */
			log_socket = 0;
		return -1;
	}
}

/* Send one whole line, or keep the part the socket did not take as the
 * tail; 0 when the socket took nothing (the line is not sent at all). */
static int log_emit(const char *line, size_t n)
{
	ssize_t w = log_send(line, n);
	if (w == 0)
		return 0;
	if (w > 0 && (size_t)w < n) {
		log_tail_len = n - (size_t)w < sizeof log_tail ? n - (size_t)w : sizeof log_tail;
		memcpy(log_tail, line + w, log_tail_len);
	}
	return 1; /* sent, tail kept, or the socket is gone (nothing to keep) */
}

/* Write one line to a socket stderr; never blocks. */
static void log_out_socket(const char *line, size_t n)
{
	if (log_tail_len) {
		ssize_t w = log_send(log_tail, log_tail_len);
		if (w < 0) {
			log_tail_len = 0;
		} else {
			memmove(log_tail, log_tail + w, log_tail_len - (size_t)w);
			log_tail_len -= (size_t)w;
		}
		if (log_tail_len) {
			log_dropped++;
			return;
		}
	}
	if (log_dropped) {
		char note[96];
		int k = snprintf(note, sizeof note, "%slog: %llu lines dropped: stderr was not being read\n",
		                 log_journal ? "<4>" : "", log_dropped);
		if (k <= 0 || !log_emit(note, (size_t)k)) {
			log_dropped++; /* nothing went out: this line is dropped too */
			return;
		}
		log_dropped = 0;
		if (log_tail_len) { /* the note went out in part: its rest goes first */
			log_dropped = 1;
			return;
		}
	}
	if (!log_emit(line, n))
		log_dropped++;
}

void log_set_level(int max_level)
{
	log_max = max_level;
}

int log_enabled(int prio)
{
	return prio <= log_max;
}

void log_msg(int prio, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_vmsg(prio, NULL, fmt, ap);
	va_end(ap);
}

void log_vmsg(int prio, const char *ctx, const char *fmt, va_list ap)
{
	if (prio > log_max)
		return;
	int saved_errno = errno;
	char line[2048];
	size_t n;
	if (log_journal) {
		n = (size_t)snprintf(line, sizeof line, "<%d>", prio);
	} else {
		struct timespec ts;
		struct tm tm;
		clock_gettime(CLOCK_REALTIME, &ts);
		localtime_r(&ts.tv_sec, &tm);
		n = strftime(line, sizeof line, "%Y-%m-%d %H:%M:%S", &tm);
		n += (size_t)snprintf(line + n, sizeof line - n, ".%03ld %s: ", ts.tv_nsec / 1000000L,
		                      level_names[prio & 7]);
	}
	if (ctx) {
		int c = snprintf(line + n, sizeof line - n - 1, "%s: ", ctx);
		if (c > 0)
			n += (size_t)c < sizeof line - n - 1 ? (size_t)c : sizeof line - n - 2;
	}
	int m = vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
	if (m < 0)
		m = 0;
	n += (size_t)m;
	if (n > sizeof line - 2)
		n = sizeof line - 2; /* truncated: still end the line */
	line[n++] = '\n';
	if (log_socket) {
		log_out_socket(line, n);
		errno = saved_errno;
		return;
	}
	/* A file or terminal: a short write is retried, EINTR too. */
	size_t off = 0;
	while (off < n) {
		ssize_t w = write(STDERR_FILENO, line + off, n - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			break;
		off += (size_t)w;
	}
	errno = saved_errno;
}
