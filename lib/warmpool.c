/* lib/warmpool.c — the client library; see warmpool.h. */
#include "warmpool.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "handoff_proto.h"
#include "sock.h"

#define WP_API           __attribute__((visibility("default")))
#define DEFAULT_TIMEOUT  10000 /* ms */

static int set_blocking(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0)
		return -errno;
	return 0;
}

/*
 * The daemon's answer as recvmsg() left it: n (>= 0) bytes scattered over
 * msg's two iovecs (the header, then lease->greeting_buf_), the backend fd
 * in the control data. 0 with the lease filled, or -EAGAIN (no message: no
 * connection for us) or -EPROTO; a received fd is closed on -EPROTO. Kept
 * apart from the socket I/O for the fuzz target (tests/fuzz/fuzz_handoff.c).
 */
static int parse_handoff(struct msghdr *msg, ssize_t n, struct wp_lease *lease)
{
	const struct wp_handoff_hdr *hdr = msg->msg_iov[0].iov_base;
	int fd = -1;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR(msg, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS && c->cmsg_len == CMSG_LEN(sizeof(int)))
			memcpy(&fd, CMSG_DATA(c), sizeof fd);
	if (n == 0) { /* closed without a connection for us; an fd on an empty message is not ours either */
		if (fd >= 0)
			close(fd);
		return -EAGAIN;
	}
	uint32_t glen = (size_t)n >= sizeof *hdr ? ntohl(hdr->greeting_len) : 0;
	if ((size_t)n < sizeof *hdr || memcmp(hdr->magic, WP_HANDOFF_MAGIC, 4) != 0 || hdr->status != WP_HANDOFF_OK ||
	    fd < 0 || (msg->msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || glen != (size_t)n - sizeof *hdr) {
		if (fd >= 0)
			close(fd);
		return -EPROTO;
	}
	lease->fd = fd;
	lease->direct = 1;
	lease->greeting_len = glen;
	return 0;
}

/* Read the daemon's one message: the backend fd and the greeting. */
static int receive_handoff(int hfd, long long deadline, struct wp_lease *lease)
{
	struct wp_handoff_hdr hdr;
	union wp_fd_cmsg ctl;
	struct iovec iov[2] = {{&hdr, sizeof hdr}, {lease->greeting_buf_, sizeof lease->greeting_buf_}};
	struct msghdr msg = {.msg_iov = iov, .msg_iovlen = 2, .msg_control = ctl.buf, .msg_controllen = sizeof ctl.buf};
	ssize_t n;
	for (;;) {
		int r = sock_wait(hfd, POLLIN, deadline);
		if (r < 0)
			return r;
		n = recvmsg(hfd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
		if (n >= 0)
			break;
		if (errno != EAGAIN && errno != EINTR)
			return -errno;
	}
	return parse_handoff(&msg, n, lease);
}

/* Send the one request message (with `fd` attached when >= 0). 0 or -errno. */
static int send_request(int hfd, char op, int fd)
{
	struct wp_handoff_req req = {.magic = WP_HANDOFF_REQ_MAGIC, .op = (uint8_t)op};
	union wp_fd_cmsg ctl = {0};
	struct iovec iov = {&req, sizeof req};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
	if (fd >= 0)
		wp_msg_attach_fd(&msg, &ctl, fd);
	ssize_t n;
	do
		n = sendmsg(hfd, &msg, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	return n == (ssize_t)sizeof req ? 0 : n < 0 ? -errno : -EPROTO;
}

WP_API int wp_checkout(const char *where, int timeout_ms, struct wp_lease *lease)
{
	if (!where || !lease)
		return -EINVAL;
	lease->fd = -1;
	lease->direct = 0;
	lease->greeting = lease->greeting_buf_;
	lease->greeting_len = 0;
	lease->where_[0] = '\0';
	long long deadline = sock_now_ms() + (timeout_ms < 0 ? DEFAULT_TIMEOUT : timeout_ms);

	int fd = sock_unix_connect(where, SOCK_SEQPACKET, deadline);
	if (fd >= 0) {
		int r = send_request(fd, WP_HANDOFF_CHECKOUT, -1);
		if (r == 0)
			r = receive_handoff(fd, deadline, lease);
		close(fd);
		if (r < 0)
			return r;
		if (strlen(where) < sizeof lease->where_)
			memcpy(lease->where_, where, strlen(where) + 1);
	} else if (fd == -EPROTOTYPE) {
		/* A stream socket: the pool's proxy. */
		fd = sock_unix_connect(where, SOCK_STREAM, deadline);
		if (fd < 0)
			return fd;
		lease->fd = fd;
	} else {
		return fd;
	}
	int r = set_blocking(lease->fd);
	if (r < 0) {
		wp_release(lease);
		return r;
	}
	return 0;
}

WP_API int wp_checkin(struct wp_lease *lease)
{
	if (!lease || lease->fd < 0)
		return -EBADF;
	int r = 0;
	if (lease->direct && lease->where_[0] && lease->greeting_len == 0) {
		long long deadline = sock_now_ms() + DEFAULT_TIMEOUT;
		int hfd = sock_unix_connect(lease->where_, SOCK_SEQPACKET, deadline);
		r = hfd < 0 ? hfd : send_request(hfd, WP_HANDOFF_CHECKIN, lease->fd);
		if (r == 0) {
			/* Wait for the answer: the daemon holds its copy by then. */
			struct wp_handoff_hdr hdr;
			r = sock_wait(hfd, POLLIN, deadline);
			if (r == 0) {
				ssize_t n = recv(hfd, &hdr, sizeof hdr, 0);
				r = n == (ssize_t)sizeof hdr && memcmp(hdr.magic, WP_HANDOFF_MAGIC, 4) == 0 ? 0
				    : n < 0                                                            ? -errno
				                                                                       : -EPROTO;
			}
		}
		if (hfd >= 0)
			close(hfd);
	}
	wp_release(lease);
	return r;
}

WP_API void wp_release(struct wp_lease *lease)
{
	if (!lease || lease->fd < 0)
		return;
	close(lease->fd);
	lease->fd = -1;
	lease->greeting_len = 0;
}

WP_API const char *wp_strerror(int err)
{
	switch (-err) {
	case 0:
		return "success";
	case EAGAIN:
		return "the pool had no connection to hand out (queue_timeout, max_clients, fail_fast or shutdown)";
	case ETIMEDOUT:
		return "timed out waiting for the daemon";
	case EPROTO:
		return "the daemon's answer was not understood";
	case ENOENT:
		return "no such socket (is warmpoold running with this pool?)";
	case ECONNREFUSED:
		return "connection refused (no warmpoold listening on this socket)";
	default:
		return strerror(-err);
	}
}
