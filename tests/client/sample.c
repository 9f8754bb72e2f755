/*
 * tests/client/sample.c — a minimal libwarmpool client, built by the tests
 * with `pkg-config --cflags --libs warmpool` the way a user would build one.
 *
 *   sample SOCKET MESSAGE
 *
 * Checks out a connection from SOCKET (a pool's handoff or proxy socket),
 * prints "direct=<0|1> greeting=<n>" and the greeting, sends MESSAGE, reads
 * as many bytes back (an echo backend) and prints them. Exit 0, or 1 with
 * the library's error.
 */
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <warmpool.h>

int main(int argc, char **argv)
{
	struct wp_lease lease;
	if (argc != 3) {
		fprintf(stderr, "usage: sample SOCKET MESSAGE\n");
		return 2;
	}
	int r = wp_checkout(argv[1], 5000, &lease);
	if (r < 0) {
		fprintf(stderr, "sample: %s: %s\n", argv[1], wp_strerror(r));
		return 1;
	}
	printf("direct=%d greeting=%zu\n", lease.direct, lease.greeting_len);
	fwrite(lease.greeting, 1, lease.greeting_len, stdout);
	size_t len = strlen(argv[2]), got = 0;
	char buf[4096];
	size_t want = len; /* an echo backend without a greeting, through a proxy socket */
	if (send(lease.fd, argv[2], len, MSG_NOSIGNAL) != (ssize_t)len) {
		perror("sample: send");
		wp_release(&lease);
		return 1;
	}
	while (got < want && got < sizeof buf) {
		ssize_t n = recv(lease.fd, buf + got, sizeof buf - got, 0);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	fwrite(buf, 1, got, stdout);
	printf("\n");
	return wp_checkin(&lease) < 0;
}
