/* daemon/systemd.c — see systemd.h. */
#include <systemd/sd-daemon.h>

#include "systemd.h"

void systemd_ready(const char *status)
{
	(void)sd_notifyf(0, "READY=1\nSTATUS=%s", status);
}

void systemd_status(const char *status)
{
	(void)sd_notifyf(0, "STATUS=%s", status);
}

void systemd_stopping(const char *status)
{
	(void)sd_notifyf(0, "STOPPING=1\nSTATUS=%s", status);
}
