/*
 * daemon/admin.h — the admin sockets and the metrics endpoint (admin.c).
 */
#ifndef WARMPOOL_ADMIN_H
#define WARMPOOL_ADMIN_H

#include <stddef.h>

#include "config.h"

struct engine;
struct admin;

struct wp_buf;
/* What the `reload` command runs (engine_reload: the engine tells systemd
 * around it); passed in so that admin.c does not call up into the engine. */
typedef int admin_reload_fn(struct engine *eng, struct wp_buf *out);
struct admin *admin_create(struct engine *eng, admin_reload_fn *reload);
/* Bind/listen on what cfg_daemon asks for (or adopt systemd's "admin" fd);
 * 0, or -1 with a message in err. */
int admin_open(struct admin *a, const struct cfg_daemon *d, char *err, size_t errlen)
    __attribute__((warn_unused_result));
void admin_start(struct admin *a);
/* Answer one admin command line (NUL-terminated, without its newline; it is
 * modified) as the admin socket would: the answer's lines are appended to
 * out, without the empty line that ends an answer on the socket. For the
 * fuzz target and tests as much as for the socket. */
void admin_exec(struct engine *eng, int readonly, char *line, struct wp_buf *out);
/* Close every connection and listener (removing socket files we made). Accepts NULL. */
void admin_destroy(struct admin *a);

#endif
