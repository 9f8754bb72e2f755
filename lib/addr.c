/* lib/addr.c — see addr.h. */
#include "addr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

/* Parse the text after the last colon: 1..65535, decimal digits only. */
static int parse_port(const char *p, uint16_t *port, const char **why)
{
	unsigned long v = 0;

	if (*p == '\0') {
		*why = "missing port";
		return -EINVAL;
	}
	for (const char *c = p; *c; c++) {
		if (*c < '0' || *c > '9') {
			*why = "port must be a number";
			return -EINVAL;
		}
		v = v * 10 + (unsigned long)(*c - '0');
		if (v > 65535) /* also stops overflow on long digit strings */
			break;
	}
	if (v == 0 || v > 65535) {
		*why = "port must be between 1 and 65535";
		return -EINVAL;
	}
	*port = (uint16_t)v;
	return 0;
}

static int copy_host(const char *h, size_t len, char *host, size_t hostsz, const char **why)
{
	if (len == 0) {
		*why = "missing host";
		return -EINVAL;
	}
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)h[i];
		if (c <= ' ' || c == 0x7f) {
			*why = "host contains a space or control character";
			return -EINVAL;
		}
	}
	if (len >= hostsz) {
		*why = "host name too long";
		return -ENAMETOOLONG;
	}
	memcpy(host, h, len);
	host[len] = '\0';
	return 0;
}

int wp_addr_split(const char *s, char *host, size_t hostsz, uint16_t *port, const char **why)
{
	const char *colon;
	int r;

	if (!s || *s == '\0') {
		*why = "empty address";
		return -EINVAL;
	}
	if (s[0] == '[') {
		const char *close = strchr(s, ']');
		if (!close) {
			*why = "missing ']'";
			return -EINVAL;
		}
		if (memchr(s + 1, '[', (size_t)(close - s - 1))) {
			*why = "unbalanced brackets";
			return -EINVAL;
		}
		if (memchr(s + 1, ':', (size_t)(close - s - 1)) == NULL) {
			*why = "brackets are only for IPv6 addresses";
			return -EINVAL;
		}
		if (close[1] != ':') {
			*why = close[1] == '\0' ? "missing port" : "expected ':' after ']'";
			return -EINVAL;
		}
		r = copy_host(s + 1, (size_t)(close - s - 1), host, hostsz, why);
		if (r < 0)
			return r;
		return parse_port(close + 2, port, why);
	}
	if (strpbrk(s, "[]")) {
		*why = "unbalanced brackets";
		return -EINVAL;
	}
	colon = strrchr(s, ':');
	if (!colon) {
		*why = "missing port";
		return -EINVAL;
	}
	if (memchr(s, ':', (size_t)(colon - s))) {
		*why = "IPv6 addresses need brackets, like [::1]:6379";
		return -EINVAL;
	}
	r = copy_host(s, (size_t)(colon - s), host, hostsz, why);
	if (r < 0)
		return r;
	return parse_port(colon + 1, port, why);
}

int wp_addr_format(const struct sockaddr *sa, char *buf, size_t bufsz)
{
	char ip[INET6_ADDRSTRLEN];
	int n;

	if (bufsz > 0)
		buf[0] = '\0';
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		if (!inet_ntop(AF_INET, &in->sin_addr, ip, sizeof ip))
			return -errno;
		n = snprintf(buf, bufsz, "%s:%u", ip, (unsigned)ntohs(in->sin_port));
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		if (!inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof ip))
			return -errno;
		if (in6->sin6_scope_id)
			n = snprintf(buf, bufsz, "[%s%%%u]:%u", ip, (unsigned)in6->sin6_scope_id,
			             (unsigned)ntohs(in6->sin6_port));
		else
			n = snprintf(buf, bufsz, "[%s]:%u", ip, (unsigned)ntohs(in6->sin6_port));
	} else {
		return -EAFNOSUPPORT;
	}
	if (n < 0 || (size_t)n >= bufsz) {
		if (bufsz > 0)
			buf[0] = '\0';
		return -ENOSPC;
	}
	return n;
}
