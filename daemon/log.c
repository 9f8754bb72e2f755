/* daemon/log.c — see log.h. */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int log_max = LOG_INFO;
static int log_journal; /* stderr is the journal: "<N>" prefixes, no timestamps */

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
	log_max = max_level;
	log_journal = stderr_is_journal();
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
	va_list ap;
	va_start(ap, fmt);
	int m = vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
	va_end(ap);
	if (m < 0)
		m = 0;
	n += (size_t)m;
	if (n > sizeof line - 2)
		n = sizeof line - 2; /* truncated: still end the line */
	line[n++] = '\n';
	/* stderr is blocking; a short write to a full pipe is retried, EINTR too. */
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
