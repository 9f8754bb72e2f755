/*
 * daemon/log.h — one line per event on stderr.
 *
 * Under systemd (when $JOURNAL_STREAM names our stderr) each line starts with
 * a "<N>" syslog priority prefix and nothing else, since the journal adds
 * time and PID; otherwise "YYYY-MM-DD HH:MM:SS.mmm level: ". Each line is
 * written with a single write(2). Only daemon code logs (DESIGN.md).
 */
#ifndef WARMPOOL_LOG_H
#define WARMPOOL_LOG_H

#include <stdarg.h>
#include <syslog.h>

void log_init(int max_level);
void log_set_level(int max_level);
int log_enabled(int prio);
void log_msg(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The same with a context ("pool=redis backend=… conn=17") and ": " before
 * the message: for the per-object helpers (bconn_log, session_log,
 * backend_log in engine.h), so no call site types the context by hand. */
#define LOG_CTX_MAX 512 /* bytes of such a context: a pool name (CFG_MAX_NAME), a host:port, ids */
void log_vmsg(int prio, const char *ctx, const char *fmt, va_list ap) __attribute__((format(printf, 3, 0)));

#define log_error(...)   log_msg(LOG_ERR, __VA_ARGS__)
#define log_warning(...) log_msg(LOG_WARNING, __VA_ARGS__)
#define log_notice(...)  log_msg(LOG_NOTICE, __VA_ARGS__)
#define log_info(...)    log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...)   (log_enabled(LOG_DEBUG) ? log_msg(LOG_DEBUG, __VA_ARGS__) : (void)0)

#endif
