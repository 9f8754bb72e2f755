/*
 * tests/fuzz/fuzz_handoff.c — libFuzzer target for the handoff protocol as
 * the client library parses it: the daemon's answer to a checkout
 * (lib/handoff_proto.h), given to lib/warmpool.c's parse_handoff() the way
 * receive_handoff()'s recvmsg() would leave it. lib/warmpool.c is included,
 * so the static function is reachable and instrumented.
 *
 * Input: one envelope byte, then the message bytes.
 *   envelope & 3   the control data: 0 none; 1 one SCM_RIGHTS fd (a real,
 *                  fresh fd); 2 the same with MSG_CTRUNC (more fds were sent
 *                  than fit); 3 the next CMSG_SPACE(sizeof(int)) input bytes
 *                  are the control buffer as is, except that any SCM_RIGHTS
 *                  message of one fd carries the real fd (never a number
 *                  from the input: the parser closes what it is given)
 *   envelope & 4   MSG_EOR set in msg_flags (must not matter)
 * The message is scattered over the header and the greeting buffer as the
 * kernel would; a longer one is cut and gets MSG_TRUNC.
 *
 * Checks besides ASan/UBSan: 0 only for a well-formed answer with the fd, the
 * lease then holding that fd and exactly the greeting bytes; otherwise
 * -EAGAIN or -EPROTO with the lease untouched, and the fd that came with the
 * message closed, never leaked.
 */
#include "../../lib/warmpool.c"

#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *what, int r)
{
	fprintf(stderr, "fuzz_handoff: contract broken: %s (parse_handoff returned %d)\n", what, r);
	abort();
}

static int fd_open(int fd)
{
	return fd >= 0 && fcntl(fd, F_GETFD) >= 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	unsigned env = data[0];
	data++;
	size--;

	static struct wp_lease lease; /* 16 KiB: not on the stack */
	lease.fd = -1;
	lease.direct = 0;
	lease.greeting = lease.greeting_buf_;
	lease.greeting_len = 0;
	lease.where_[0] = '\0';
	memset(lease.greeting_buf_, 0xa5, sizeof lease.greeting_buf_);

	struct wp_handoff_hdr hdr;
	memset(&hdr, 0xa5, sizeof hdr); /* uninitialised stack memory where nothing was received */
	union wp_fd_cmsg ctl;
	memset(&ctl, 0, sizeof ctl);
	struct iovec iov[2] = {{&hdr, sizeof hdr}, {lease.greeting_buf_, sizeof lease.greeting_buf_}};
	struct msghdr msg = {.msg_iov = iov, .msg_iovlen = 2, .msg_control = ctl.buf, .msg_controllen = 0};

	int fd = -1;
	switch (env & 3) {
	case 0:
		break;
	case 1:
	case 2: {
		fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			abort();
		wp_msg_attach_fd(&msg, &ctl, fd);
		if ((env & 3) == 2)
			msg.msg_flags |= MSG_CTRUNC;
		break;
	}
	case 3: {
		if (size < sizeof ctl.buf)
			return 0;
		memcpy(ctl.buf, data, sizeof ctl.buf);
		data += sizeof ctl.buf;
		size -= sizeof ctl.buf;
		msg.msg_controllen = sizeof ctl.buf;
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
			if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
			    c->cmsg_len == CMSG_LEN(sizeof(int))) {
				if (fd < 0 && (fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0)
					abort();
				memcpy(CMSG_DATA(c), &fd, sizeof fd);
			}
		}
		break;
	}
	}
	if (env & 4)
		msg.msg_flags |= MSG_EOR;

	/* recvmsg(): scatter, cut, flag. */
	size_t room = sizeof hdr + sizeof lease.greeting_buf_;
	size_t n = size < room ? size : room;
	size_t in_hdr = n < sizeof hdr ? n : sizeof hdr;
	memcpy(&hdr, data, in_hdr);
	memcpy(lease.greeting_buf_, data + in_hdr, n - in_hdr);
	if (size > room)
		msg.msg_flags |= MSG_TRUNC;

	int r = parse_handoff(&msg, (ssize_t)n, &lease);
	if (r == 0) {
		if (fd < 0 || lease.fd != fd || !lease.direct)
			fail("success without the fd that came with the message", r);
		if (n < sizeof hdr || memcmp(hdr.magic, WP_HANDOFF_MAGIC, 4) != 0 || hdr.status != WP_HANDOFF_OK)
			fail("success for a malformed header", r);
		if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC))
			fail("success for a truncated message", r);
		if (lease.greeting_len != n - sizeof hdr || lease.greeting_len > WP_GREETING_MAX ||
		    lease.greeting != lease.greeting_buf_ ||
		    memcmp(lease.greeting, data + sizeof hdr, lease.greeting_len) != 0)
			fail("greeting not exactly the bytes after the header", r);
		if (!fd_open(lease.fd))
			fail("the lease's fd is closed", r);
		close(lease.fd);
		return 0;
	}
	if (r != -EAGAIN && r != -EPROTO)
		fail("error other than -EAGAIN or -EPROTO", r);
	if (r == -EAGAIN && n != 0)
		fail("-EAGAIN for a non-empty message", r);
	if (lease.fd != -1 || lease.direct || lease.greeting_len)
		fail("a failed parse changed the lease", r);
	if (fd_open(fd)) {
		close(fd);
		fail("the fd that came with a rejected message was leaked (still open)", r);
	}
	return 0;
}
