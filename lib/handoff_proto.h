/*
 * lib/handoff_proto.h — the message warmpoold sends on a pool's handoff
 * socket (SOCK_SEQPACKET), shared by the daemon and libwarmpool. Internal:
 * not installed.
 *
 * One message per connection: this header, then greeting_len greeting
 * bytes, with the backend socket attached (SCM_RIGHTS) when status is
 * WP_HANDOFF_OK. The daemon then closes the handoff connection; a
 * connection closed with no message means no connection could be had
 * (queue_timeout, max_clients, fail_fast, shutdown).
 */
#ifndef WARMPOOL_HANDOFF_PROTO_H
#define WARMPOOL_HANDOFF_PROTO_H

#include <stdint.h>

#define WP_HANDOFF_MAGIC "WPH1"
#define WP_HANDOFF_OK    0

struct wp_handoff_hdr {
	char magic[4];         /* WP_HANDOFF_MAGIC */
	uint8_t status;        /* WP_HANDOFF_OK */
	uint8_t reserved[3];   /* 0 */
	uint32_t greeting_len; /* network byte order */
};

#endif
