/*
 * tests/unit/test_warmpool.c — the client library against a stand-in for
 * warmpoold: a forked child that accepts on a handoff (SOCK_SEQPACKET) or
 * proxy (SOCK_STREAM) socket and answers as the daemon would, or not.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "handoff_proto.h"
#include "warmpool.h"

enum answer { ANSWER_HANDOFF, ANSWER_CLOSE, ANSWER_BAD_MAGIC, ANSWER_NOTHING };

struct fixture {
	char dir[64];
	char path[128];
	int lfd;
	pid_t child;
	int pair[2]; /* pair[0] is handed off; the test talks to pair[1] */
	int queued;   /* connections ahead of the library's in the backlog: the child takes and drops them first */
	int delay_ms; /* the child waits this long before accepting (a daemon busy elsewhere) */
};

static int listen_at(struct fixture *f, int type)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	assert_true(strlen(f->path) < sizeof sa.sun_path);
	memcpy(sa.sun_path, f->path, strlen(f->path) + 1);
	int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
	assert_int_equal(listen(fd, 8), 0);
	return fd;
}

/* The child: accept one client and answer. */
static void serve(struct fixture *f, enum answer a, const char *greeting)
{
	f->child = fork();
	assert_true(f->child >= 0);
	if (f->child > 0)
		return;
	poll(NULL, 0, f->delay_ms);
	for (int i = 0; i < f->queued; i++)
		close(accept(f->lfd, NULL, NULL));
	int c = accept(f->lfd, NULL, NULL);
	if (c < 0)
		_exit(1);
	struct wp_handoff_req req;
	if (recv(c, &req, sizeof req, 0) != sizeof req || memcmp(req.magic, WP_HANDOFF_REQ_MAGIC, 4) != 0 ||
	    req.op != WP_HANDOFF_CHECKOUT)
		_exit(3); /* the library must ask before anything is handed over */
	if (a == ANSWER_NOTHING) {
		pause(); /* killed by the test */
		_exit(0);
	}
	if (a == ANSWER_HANDOFF || a == ANSWER_BAD_MAGIC) {
		size_t glen = greeting ? strlen(greeting) : 0;
		struct wp_handoff_hdr hdr = {.magic = WP_HANDOFF_MAGIC, .greeting_len = htonl((uint32_t)glen)};
		if (a == ANSWER_BAD_MAGIC)
			hdr.magic[0] = 'X';
		union wp_fd_cmsg ctl = {0};
		struct iovec iov[2] = {{&hdr, sizeof hdr}, {(void *)greeting, glen}};
		struct msghdr msg = {.msg_iov = iov, .msg_iovlen = glen ? 2 : 1};
		wp_msg_attach_fd(&msg, &ctl, f->pair[0]);
		if (sendmsg(c, &msg, MSG_NOSIGNAL) < 0)
			_exit(2);
	}
	close(c);
	_exit(0);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof *f);
	snprintf(f->dir, sizeof f->dir, "/tmp/wp-unit-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof f->path, "%s/pool.sock", f->dir);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, f->pair), 0);
	f->lfd = -1;
	f->child = -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	if (f->child > 0) {
		kill(f->child, SIGKILL);
		waitpid(f->child, NULL, 0);
	}
	if (f->lfd >= 0)
		close(f->lfd);
	close(f->pair[0]);
	close(f->pair[1]);
	unlink(f->path);
	rmdir(f->dir);
	free(f);
	return 0;
}

static void test_handoff_gives_the_socket_and_greeting(void **state)
{
	struct fixture *f = *state;
	struct wp_lease lease;
	f->lfd = listen_at(f, SOCK_SEQPACKET);
	serve(f, ANSWER_HANDOFF, "+OK ready\r\n");
	assert_int_equal(wp_checkout(f->path, 5000, &lease), 0);
	assert_int_equal(lease.direct, 1);
	assert_int_equal(lease.greeting_len, 11);
	assert_memory_equal(lease.greeting, "+OK ready\r\n", 11);
	/* It is the very socket the daemon held: bytes reach the other end. */
	assert_int_equal(write(lease.fd, "ping", 4), 4);
	char buf[4];
	assert_int_equal(read(f->pair[1], buf, 4), 4);
	assert_memory_equal(buf, "ping", 4);
	/* Blocking and close-on-exec. */
	assert_int_equal(fcntl(lease.fd, F_GETFL) & O_NONBLOCK, 0);
	assert_true(fcntl(lease.fd, F_GETFD) & FD_CLOEXEC);
	assert_int_equal(wp_checkin(&lease), 0);
	assert_int_equal(lease.fd, -1);
}

/* wp_checkin of a handed-off socket sends it back with a checkin request;
 * the stand-in daemon checks the request and that the fd is the same socket. */
static void test_checkin_sends_the_socket_back(void **state)
{
	struct fixture *f = *state;
	struct wp_lease lease;
	f->lfd = listen_at(f, SOCK_SEQPACKET);
	serve(f, ANSWER_HANDOFF, NULL);
	assert_int_equal(wp_checkout(f->path, 5000, &lease), 0);
	assert_int_equal(waitpid(f->child, NULL, 0), f->child);
	f->child = fork();
	assert_true(f->child >= 0);
	if (f->child == 0) {
		int c = accept(f->lfd, NULL, NULL);
		struct wp_handoff_req req;
		union wp_fd_cmsg ctl;
		struct iovec iov = {&req, sizeof req};
		struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
		                     .msg_controllen = sizeof ctl.buf};
		if (c < 0 || recvmsg(c, &msg, 0) != sizeof req || req.op != WP_HANDOFF_CHECKIN)
			_exit(1);
		int fd;
		struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
		if (!cm || cm->cmsg_type != SCM_RIGHTS)
			_exit(2);
		memcpy(&fd, CMSG_DATA(cm), sizeof fd);
		if (write(fd, "back", 4) != 4) /* the same socket: the test reads it on pair[1] */
			_exit(3);
		struct wp_handoff_hdr ok = {.magic = WP_HANDOFF_MAGIC};
		if (send(c, &ok, sizeof ok, 0) != sizeof ok)
			_exit(4);
		_exit(0);
	}
	assert_int_equal(wp_checkin(&lease), 0);
	assert_int_equal(lease.fd, -1);
	int st = -1;
	assert_int_equal(waitpid(f->child, &st, 0), f->child);
	f->child = -1;
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	char buf[4];
	assert_int_equal(read(f->pair[1], buf, 4), 4);
	assert_memory_equal(buf, "back", 4);
}

static void test_handoff_without_greeting(void **state)
{
	struct fixture *f = *state;
	struct wp_lease lease;
	f->lfd = listen_at(f, SOCK_SEQPACKET);
	serve(f, ANSWER_HANDOFF, NULL);
	assert_int_equal(wp_checkout(f->path, 5000, &lease), 0);
	assert_int_equal(lease.direct, 1);
	assert_int_equal(lease.greeting_len, 0);
	wp_release(&lease);
	wp_release(&lease); /* twice is harmless */
}

static void test_proxy_socket_is_used_as_is(void **state)
{
	struct fixture *f = *state;
	struct wp_lease lease;
	f->lfd = listen_at(f, SOCK_STREAM);
	assert_int_equal(wp_checkout(f->path, 5000, &lease), 0);
	assert_int_equal(lease.direct, 0);
	assert_int_equal(lease.greeting_len, 0);
	int c = accept(f->lfd, NULL, NULL);
	assert_true(c >= 0);
	assert_int_equal(write(lease.fd, "hi", 2), 2);
	char buf[2];
	assert_int_equal(read(c, buf, 2), 2);
	assert_memory_equal(buf, "hi", 2);
	close(c);
	wp_release(&lease);
}

static void test_closed_without_a_connection_is_eagain(void **state)
{
	struct fixture *f = *state;
	struct wp_lease lease;
	f->lfd = listen_at(f, SOCK_SEQPACKET);
	serve(f, ANSWER_CLOSE, NULL);
	assert_int_equal(wp_checkout(f->path, 5000, &lease), -EAGAIN);
	assert_int_equal(lease.fd, -1);
	assert_non_null(strstr(wp_strerror(-EAGAIN), "no connection"));
}

static void test_garbage_answer_is_eproto(void **state)
{
	struct fixture *f = *state;
	struct wp_lease lease;
	f->lfd = listen_at(f, SOCK_SEQPACKET);
	serve(f, ANSWER_BAD_MAGIC, "x");
	assert_int_equal(wp_checkout(f->path, 5000, &lease), -EPROTO);
	assert_int_equal(lease.fd, -1);
}

static void test_no_answer_times_out(void **state)
{
	struct fixture *f = *state;
	struct wp_lease lease;
	f->lfd = listen_at(f, SOCK_SEQPACKET);
	serve(f, ANSWER_NOTHING, NULL);
	assert_int_equal(wp_checkout(f->path, 100, &lease), -ETIMEDOUT);
	assert_int_equal(lease.fd, -1);
}

/* The daemon's handoff backlog is full for a moment: the library waits for
 * room (until its deadline), then gets its connection, rather than failing
 * at once or going on with a socket that never connected. */
static void test_full_backlog_waits_for_room(void **state)
{
	struct fixture *f = *state;
	struct wp_lease lease;
	int fillers[64];
	f->lfd = listen_at(f, SOCK_SEQPACKET);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	memcpy(sa.sun_path, f->path, strlen(f->path) + 1);
	for (f->queued = 0; f->queued < 64; f->queued++) {
		int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK, 0);
		assert_true(fd >= 0);
		if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
			assert_int_equal(errno, EAGAIN);
			close(fd);
			break;
		}
		fillers[f->queued] = fd;
	}
	assert_in_range(f->queued, 1, 63);
	f->delay_ms = 300;
	serve(f, ANSWER_HANDOFF, "hi");
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(wp_checkout(f->path, 10000, &lease), 0);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	long waited = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
	assert_true(waited >= 250); /* it did wait for the child to make room */
	assert_int_equal(lease.greeting_len, 2);
	assert_memory_equal(lease.greeting, "hi", 2);
	wp_release(&lease);
	for (int i = 0; i < f->queued; i++)
		close(fillers[i]);
}

static void test_no_socket(void **state)
{
	struct fixture *f = *state;
	struct wp_lease lease;
	assert_int_equal(wp_checkout(f->path, 100, &lease), -ENOENT);
	assert_int_equal(wp_checkout(NULL, 100, &lease), -EINVAL);
	assert_string_equal(wp_strerror(0), "success");
	assert_non_null(wp_strerror(-ECONNRESET));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_handoff_gives_the_socket_and_greeting, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_handoff_without_greeting, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_checkin_sends_the_socket_back, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_proxy_socket_is_used_as_is, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_closed_without_a_connection_is_eagain, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_garbage_answer_is_eproto, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_no_answer_times_out, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_full_backlog_waits_for_room, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_no_socket, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
