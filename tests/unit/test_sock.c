/*
 * tests/unit/test_sock.c — lib/sock: the accept batch and why it stops, the
 * Unix connect with a deadline against a full backlog, the quiet-socket
 * test. Real sockets in a private directory under /tmp.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <cmocka.h>

#include "sock.h"

#define MAX_TAKEN 16

struct taken {
	int fds[MAX_TAKEN];
	int n;
	int stop_after; /* the callback asks to stop once it has this many (0: never) */
};

static int take(void *arg, int fd)
{
	struct taken *t = arg;
	assert_true(t->n < MAX_TAKEN);
	t->fds[t->n++] = fd;
	return t->stop_after && t->n >= t->stop_after;
}

static void taken_close(struct taken *t)
{
	for (int i = 0; i < t->n; i++)
		close(t->fds[i]);
	t->n = 0;
}

struct dir {
	char path[64];
	char sock[96];
};

static void dir_make(struct dir *d)
{
	snprintf(d->path, sizeof d->path, "/tmp/wp-test-sock-XXXXXX");
	assert_non_null(mkdtemp(d->path));
	snprintf(d->sock, sizeof d->sock, "%s/s.sock", d->path);
}

static void dir_remove(struct dir *d)
{
	unlink(d->sock);
	rmdir(d->path);
}

/* A listening socket of ours in a fresh directory, mode 0600. */
static void listen_in(struct dir *d, struct sock_unix *us)
{
	char err[256];
	dir_make(d);
	if (sock_unix_listen(d->sock, 0600, SOCK_STREAM, us, err, sizeof err) < 0)
		fail_msg("%s", err);
}

static void listen_done(struct dir *d, struct sock_unix *us)
{
	sock_unix_unlink_ours(us);
	close(us->fd);
	dir_remove(d);
}

/* A client connection to path (blocking connect: it lands in the backlog). */
static int client(const char *path)
{
	int fd = sock_unix_connect(path, SOCK_STREAM, sock_now_ms() + 5000);
	assert_true(fd >= 0);
	return fd;
}

static void test_accept_batch_budget_then_drained(void **state)
{
	(void)state;
	struct dir d;
	struct sock_unix us;
	listen_in(&d, &us);
	struct stat st;
	assert_int_equal(stat(d.sock, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600); /* the mode asked for, whatever the umask */
	int c[5];
	for (int i = 0; i < 5; i++)
		c[i] = client(d.sock);

	struct taken t = {0};
	int e = -1;
	assert_int_equal(sock_accept_batch(us.fd, 3, take, &t, &e), SOCK_ACCEPT_BUDGET);
	assert_int_equal(t.n, 3);
	assert_int_equal(e, 0);
	for (int i = 0; i < t.n; i++) {
		assert_true(fcntl(t.fds[i], F_GETFL) & O_NONBLOCK);
		assert_true(fcntl(t.fds[i], F_GETFD) & FD_CLOEXEC);
	}
	/* The rest, then the backlog is empty. */
	assert_int_equal(sock_accept_batch(us.fd, SOCK_ACCEPT_BATCH, take, &t, &e), SOCK_ACCEPT_DRAINED);
	assert_int_equal(t.n, 5);
	assert_int_equal(sock_accept_batch(us.fd, SOCK_ACCEPT_BATCH, take, &t, &e), SOCK_ACCEPT_DRAINED);
	assert_int_equal(t.n, 5);
	taken_close(&t);

	/* The callback stops the batch. */
	int c2 = client(d.sock), c3 = client(d.sock);
	t.stop_after = 1;
	assert_int_equal(sock_accept_batch(us.fd, SOCK_ACCEPT_BATCH, take, &t, &e), SOCK_ACCEPT_BUDGET);
	assert_int_equal(t.n, 1);
	t.stop_after = 0;
	assert_int_equal(sock_accept_batch(us.fd, SOCK_ACCEPT_BATCH, take, &t, &e), SOCK_ACCEPT_DRAINED);
	assert_int_equal(t.n, 2);
	taken_close(&t);

	for (int i = 0; i < 5; i++)
		close(c[i]);
	close(c2);
	close(c3);
	listen_done(&d, &us);
}

/* Out of descriptors: the batch says pause (EMFILE) and the client stays
 * in the backlog for later. */
static void test_accept_batch_pauses_on_emfile(void **state)
{
	(void)state;
	struct dir d;
	struct sock_unix us;
	listen_in(&d, &us);
	int c = client(d.sock);

	struct rlimit old, low;
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
	int probe = dup(0); /* the lowest free descriptor: the limit makes it the first refused */
	assert_true(probe >= 0);
	close(probe);
	low = old;
	low.rlim_cur = (rlim_t)probe;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
	struct taken t = {0};
	int e = 0;
	enum sock_accept st = sock_accept_batch(us.fd, SOCK_ACCEPT_BATCH, take, &t, &e);
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
	assert_int_equal(st, SOCK_ACCEPT_PAUSE);
	assert_int_equal(e, EMFILE);
	assert_int_equal(t.n, 0);

	assert_int_equal(sock_accept_batch(us.fd, SOCK_ACCEPT_BATCH, take, &t, &e), SOCK_ACCEPT_DRAINED);
	assert_int_equal(t.n, 1);
	taken_close(&t);
	close(c);
	listen_done(&d, &us);
}

/* Accepting on what is no listening socket is an error to report, not a pause. */
static void test_accept_batch_error_on_a_socketpair(void **state)
{
	(void)state;
	int sp[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sp), 0);
	struct taken t = {0};
	int e = 0;
	assert_int_equal(sock_accept_batch(sp[0], SOCK_ACCEPT_BATCH, take, &t, &e), SOCK_ACCEPT_ERROR);
	assert_int_equal(e, EINVAL);
	assert_int_equal(t.n, 0);
	close(sp[0]);
	close(sp[1]);
}

/* A listener that takes no connections, its backlog filled: ours must wait
 * for room until its deadline, not fail at once with EAGAIN. */
static int full_listener(const char *path, int *fillers, int max, int *n)
{
	int lfd = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_true(lfd >= 0);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof sa), 0);
	assert_int_equal(listen(lfd, 0), 0);
	for (*n = 0; *n < max; (*n)++) {
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
		assert_true(fd >= 0);
		if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
			assert_int_equal(errno, EAGAIN);
			close(fd);
			return lfd;
		}
		fillers[*n] = fd;
	}
	fail_msg("the backlog never filled");
	return -1;
}

struct acceptor {
	int lfd;
	int delay_ms;
};

static void *accept_later(void *arg)
{
	struct acceptor *a = arg;
	poll(NULL, 0, a->delay_ms);
	int fd = accept(a->lfd, NULL, NULL);
	return (void *)(intptr_t)fd;
}

static void test_connect_waits_for_room_in_a_full_backlog(void **state)
{
	(void)state;
	struct dir d;
	dir_make(&d);
	int fillers[64], n;
	int lfd = full_listener(d.sock, fillers, 64, &n);

	/* No room until the deadline: timed out, after waiting for it. */
	long long t0 = sock_now_ms();
	assert_int_equal(sock_unix_connect(d.sock, SOCK_STREAM, t0 + 300), -ETIMEDOUT);
	assert_true(sock_now_ms() - t0 >= 290);

	/* Room appears while we wait: connected, to the listener. */
	struct acceptor a = {lfd, 200};
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, accept_later, &a), 0);
	t0 = sock_now_ms();
	int fd = sock_unix_connect(d.sock, SOCK_STREAM, t0 + 10000);
	long long waited = sock_now_ms() - t0;
	void *ret;
	assert_int_equal(pthread_join(th, &ret), 0);
	assert_true(fd >= 0);
	assert_true(waited >= 150); /* it waited for the room, rather than failing */
	assert_true(waited < 10000);
	assert_int_equal(send(fd, "x", 1, MSG_DONTWAIT | MSG_NOSIGNAL), 1); /* really connected */
	close((int)(intptr_t)ret);
	close(fd);

	/* Nothing listening at all: refused at once, and no path at all. */
	for (int i = 0; i < n; i++)
		close(fillers[i]);
	close(lfd);
	assert_int_equal(sock_unix_connect(d.sock, SOCK_STREAM, sock_now_ms() + 1000), -ECONNREFUSED);
	unlink(d.sock);
	assert_int_equal(sock_unix_connect(d.sock, SOCK_STREAM, sock_now_ms() + 1000), -ENOENT);
	char longpath[200];
	memset(longpath, 'a', sizeof longpath - 1);
	longpath[sizeof longpath - 1] = '\0';
	assert_int_equal(sock_unix_connect(longpath, SOCK_STREAM, sock_now_ms() + 1000), -ENAMETOOLONG);
	dir_remove(&d);
}

static void test_peek_quiet_data_eof(void **state)
{
	(void)state;
	int sp[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sp), 0);
	assert_int_equal(sock_peek(sp[0]), SOCK_QUIET); /* nothing, and it did not block */
	assert_int_equal(write(sp[1], "ab", 2), 2);
	assert_int_equal(sock_peek(sp[0]), SOCK_DATA);
	assert_int_equal(sock_peek(sp[0]), SOCK_DATA); /* peeking consumed nothing */
	char buf[2];
	assert_int_equal(read(sp[0], buf, 2), 2);
	assert_memory_equal(buf, "ab", 2);
	assert_int_equal(sock_peek(sp[0]), SOCK_QUIET);
	close(sp[1]);
	assert_int_equal(sock_peek(sp[0]), SOCK_EOF);
	close(sp[0]);
	/* Bytes then EOF: the bytes come first. */
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sp), 0);
	assert_int_equal(write(sp[1], "z", 1), 1);
	close(sp[1]);
	assert_int_equal(sock_peek(sp[0]), SOCK_DATA);
	close(sp[0]);
	/* Not a socket at all: an error, not "quiet". */
	int p[2];
	assert_int_equal(pipe(p), 0);
	assert_int_equal(sock_peek(p[0]), SOCK_ERROR);
	close(p[0]);
	close(p[1]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_accept_batch_budget_then_drained),
	    cmocka_unit_test(test_accept_batch_pauses_on_emfile),
	    cmocka_unit_test(test_accept_batch_error_on_a_socketpair),
	    cmocka_unit_test(test_connect_waits_for_room_in_a_full_backlog),
	    cmocka_unit_test(test_peek_quiet_data_eof),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
