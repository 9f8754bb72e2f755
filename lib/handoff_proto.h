/*
 * lib/handoff_proto.h — the message warmpoold sends on a pool's handoff
 * socket (SOCK_SEQPACKET), shared by the daemon and libwarmpool. Internal:
 * not installed.
 *
 * The client speaks first, one request message (struct wp_handoff_req):
 *   WP_HANDOFF_CHECKOUT  give me a connection;
 *   WP_HANDOFF_CHECKIN   take this one back (the socket attached, SCM_RIGHTS).
 * The daemon answers one message: this header, then greeting_len greeting
 * bytes, with the backend socket attached (SCM_RIGHTS) for a checkout.
 * A checkin's answer has no fd and no greeting: the daemon took the socket
 * (it still closes it if its checks or the reset fail). The daemon then
 * closes the handoff connection; a connection closed with no message means
 * no connection could be had (queue_timeout, max_clients, fail_fast,
 * shutdown) or the request was not understood.
 */
#ifndef WARMPOOL_HANDOFF_PROTO_H
#define WARMPOOL_HANDOFF_PROTO_H

#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#define WP_HANDOFF_MAGIC     "WPH1" /* answers */
#define WP_HANDOFF_REQ_MAGIC "WPQ1" /* requests */
#define WP_HANDOFF_OK        0
#define WP_HANDOFF_CHECKOUT  'O'
#define WP_HANDOFF_CHECKIN   'I'

struct wp_handoff_req {
	char magic[4];       /* WP_HANDOFF_REQ_MAGIC */
	uint8_t op;          /* WP_HANDOFF_CHECKOUT or WP_HANDOFF_CHECKIN */
	uint8_t reserved[3]; /* 0 */
};

struct wp_handoff_hdr {
	char magic[4];         /* WP_HANDOFF_MAGIC */
	uint8_t status;        /* WP_HANDOFF_OK */
	uint8_t reserved[3];   /* 0 */
	uint32_t greeting_len; /* network byte order */
};

/* The control buffer of a message that carries one fd (SCM_RIGHTS). */
union wp_fd_cmsg {
	struct cmsghdr align;
	char buf[CMSG_SPACE(sizeof(int))];
};

/* Attach `fd` to `msg` through `ctl`. Zero `ctl` first: its padding after
 * the fd goes out too. */
static inline void wp_msg_attach_fd(struct msghdr *msg, union wp_fd_cmsg *ctl, int fd)
{
	msg->msg_control = ctl->buf;
	msg->msg_controllen = sizeof ctl->buf;
	struct cmsghdr *c = CMSG_FIRSTHDR(msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof fd);
}

#endif
