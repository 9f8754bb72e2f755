/*
 * lib/addr.h — TCP address text: split "host:port" and format a sockaddr.
 *
 * Pure string work with no I/O and no name resolution: the caller decides
 * when a blocking getaddrinfo() is acceptable (config load) and feeds it the
 * pieces wp_addr_split() returns. Accepted forms:
 *   host.name:6379    1.2.3.4:6379    [::1]:6379    [fe80::1%eth0]:6379
 * A bare IPv6 address without brackets is rejected: its last colon cannot
 * be told apart from a port separator.
 */
#ifndef WARMPOOL_ADDR_H
#define WARMPOOL_ADDR_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Room for the longest wp_addr_format() result: "[" v6 "%scope]:65535" + NUL. */
#define WP_ADDR_STRLEN 80

/*
 * Split `s` into a host (brackets removed) and a port in 1..65535.
 * On success returns 0, `host` holds the NUL-terminated host and *port the
 * port. On failure returns -EINVAL (malformed) or -ENAMETOOLONG (the host
 * does not fit in `hostsz` bytes) and sets *why to a static phrase such as
 * "missing port"; `host` and *port are then unspecified.
 */
int wp_addr_split(const char *s, char *host, size_t hostsz, uint16_t *port, const char **why)
    __attribute__((warn_unused_result));

/*
 * Write an AF_INET or AF_INET6 address as "127.0.0.1:6379" or "[::1]:6380"
 * (a non-zero IPv6 scope id is kept as "%N"). Returns the length written, or
 * -EAFNOSUPPORT for other families, or -ENOSPC when `bufsz` is too small
 * (WP_ADDR_STRLEN always suffices); on error `buf` holds "" if bufsz > 0.
 */
int wp_addr_format(const struct sockaddr *sa, char *buf, size_t bufsz) __attribute__((warn_unused_result));

#endif
