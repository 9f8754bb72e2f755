/*
 * lib/version.h — what every floor and the packaging agree on, said once,
 * below all of them: the version (the daemon, warmpoolctl, warmpool.pc,
 * packaging/build-deb.sh, the RPM spec and the packaging tests read it
 * here) and the admin socket's default path (the daemon binds it,
 * warmpoolctl connects to it).
 */
#ifndef WARMPOOL_VERSION_H
#define WARMPOOL_VERSION_H
#define WARMPOOL_VERSION "0.1.0"
#define WARMPOOL_ADMIN_SOCKET "/run/warmpool/admin.sock"
#endif
