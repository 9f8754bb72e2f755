/*
 * daemon/admin.h — the admin sockets and the metrics endpoint (admin.c).
 */
#ifndef WARMPOOL_ADMIN_H
#define WARMPOOL_ADMIN_H

#include <stddef.h>

#include "config.h"

struct engine;
struct admin;

struct admin *admin_create(struct engine *eng);
/* Bind/listen on what cfg_daemon asks for (or adopt systemd's "admin" fd);
 * 0, or -1 with a message in err. */
int admin_open(struct admin *a, const struct cfg_daemon *d, char *err, size_t errlen)
    __attribute__((warn_unused_result));
void admin_start(struct admin *a);
/* Close every connection and listener (removing socket files we made). Accepts NULL. */
void admin_destroy(struct admin *a);

#endif
