/*
 * daemon/systemd.h — the sd_notify protocol (libsystemd).
 *
 * Every call is a no-op when $NOTIFY_SOCKET is unset, so the same binary runs
 * outside systemd. Return values of sd_notify are ignored on purpose
 * (sd_notify(3): "generally recommended to ignore the return value").
 */
#ifndef WARMPOOL_SYSTEMD_H
#define WARMPOOL_SYSTEMD_H

void systemd_ready(const char *status);
void systemd_status(const char *status);
void systemd_stopping(const char *status);

#endif
