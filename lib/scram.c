/*
 * lib/scram.c — SCRAM-SHA-256 client steps and PostgreSQL's md5 password
 * hash (see scram.h). Each step checks the one before it ran (s->step), so a
 * server that sends its messages out of order gets an error, never a
 * computation on uninitialised state.
 */
#include "scram.h"

#include <errno.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define GS2_HEADER    "n,,"  /* no channel binding, no authzid */
#define GS2_HEADER_64 "biws" /* base64("n,,"): the c= attribute */
#define STR_(x)       #x
#define STR(x)        STR_(x)

/* Base64 of n bytes (plus NUL) fits in b64_len(n) + 1. */
static size_t b64_len(size_t n)
{
	return (n + 2) / 3 * 4;
}

/* Decode base64 text[0..len) into out (cap bytes). The length, or -1 when
 * malformed (EVP_DecodeBlock counts the padding as zero bytes: removed). */
static int b64_decode(const char *text, size_t len, unsigned char *out, size_t cap)
{
	unsigned char tmp[WP_SCRAM_MSG_MAX];
	int n, pad = 0;

	if (len == 0 || len % 4 != 0 || len / 4 * 3 > sizeof tmp)
		return -1;
	for (size_t i = 0; i < len; i++) {
		char c = text[i];
		bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
		          c == '/' || (c == '=' && i >= len - 2);
		if (!ok || (pad && c != '='))
			return -1;
		pad += c == '=';
	}
	n = EVP_DecodeBlock(tmp, (const unsigned char *)text, (int)len);
	if (n < pad || (size_t)(n - pad) > cap) {
		OPENSSL_cleanse(tmp, sizeof tmp);
		return -1;
	}
	memcpy(out, tmp, (size_t)(n - pad));
	OPENSSL_cleanse(tmp, sizeof tmp);
	return n - pad;
}

/* A nonce: printable ASCII but ',' (RFC 5802's "printable"). */
static bool nonce_ok(const char *s, size_t len)
{
	if (len == 0)
		return false;
	for (size_t i = 0; i < len; i++)
		if (s[i] < 0x21 || s[i] > 0x7e || s[i] == ',')
			return false;
	return true;
}

int wp_scram_client_first(struct wp_scram *s, const char *user, const char *nonce, char *out, size_t cap)
{
	char made[b64_len(WP_SCRAM_NONCE_RAW) + 1];
	unsigned char raw[WP_SCRAM_NONCE_RAW];
	size_t o = 0;

	memset(s, 0, sizeof *s);
	if (!nonce) {
		if (RAND_bytes(raw, sizeof raw) != 1)
			return -EIO;
		EVP_EncodeBlock((unsigned char *)made, raw, sizeof raw);
		nonce = made;
	}
	if (!nonce_ok(nonce, strlen(nonce)))
		return -EINVAL;
	/* client-first-message-bare: n=saslname,r=nonce */
	s->first_bare[o++] = 'n';
	s->first_bare[o++] = '=';
	for (const char *u = user; *u; u++) {
		const char *esc = *u == ',' ? "=2C" : *u == '=' ? "=3D" : NULL;
		size_t n = esc ? 3 : 1;
		if (o + n >= sizeof s->first_bare)
			return -ENOSPC;
		memcpy(s->first_bare + o, esc ? esc : u, n);
		o += n;
	}
	int n = snprintf(s->first_bare + o, sizeof s->first_bare - o, ",r=%s", nonce);
	if (n < 0 || (size_t)n >= sizeof s->first_bare - o)
		return -ENOSPC;
	s->first_bare_len = o + (size_t)n;
	s->nonce_len = strlen(nonce);
	n = snprintf(out, cap, "%s%s", GS2_HEADER, s->first_bare);
	if (n < 0 || (size_t)n >= cap)
		return -ENOSPC;
	s->step = 1;
	return n;
}

/* The value of attribute `a` ("r=...") starting at p (up to the next ',' or
 * end), or NULL when p does not start with it. */
static const char *attr(const char *p, const char *end, char a, size_t *vlen)
{
	const char *comma;

	if (end - p < 2 || p[0] != a || p[1] != '=')
		return NULL;
	p += 2;
	comma = memchr(p, ',', (size_t)(end - p));
	*vlen = (size_t)((comma ? comma : end) - p);
	return p;
}

int wp_scram_server_first(struct wp_scram *s, const char *msg, size_t len, const char **why)
{
	const char *end = msg + len, *p = msg, *v;
	const char *cnonce = s->first_bare + s->first_bare_len - s->nonce_len;
	unsigned long iter = 0;
	size_t vlen;
	int n;

	if (s->step != 1) {
		*why = "server-first-message out of order";
		return -EINVAL;
	}
	if (len == 0 || len >= sizeof s->server_first || memchr(msg, '\0', len)) {
		*why = len ? "server-first-message too long or with a NUL byte" : "empty server-first-message";
		return -EPROTO;
	}
	if (len >= 2 && msg[0] == 'm' && msg[1] == '=') {
		*why = "server-first-message asks for an extension we do not know (m=)";
		return -EPROTO;
	}
	if (!(v = attr(p, end, 'r', &vlen)) || !nonce_ok(v, vlen)) {
		*why = "server-first-message without a valid nonce (r=)";
		return -EPROTO;
	}
	if (vlen <= s->nonce_len || memcmp(v, cnonce, s->nonce_len) != 0) {
		*why = "the server's nonce does not extend ours";
		return -EPROTO;
	}
	memcpy(s->server_first, msg, len);
	s->server_first[len] = '\0';
	s->server_first_len = len;
	s->snonce_off = (size_t)(v - msg);
	s->snonce_len = vlen;
	p = v + vlen + 1;
	if (p > end || !(v = attr(p, end, 's', &vlen)) ||
	    (n = b64_decode(v, vlen, s->salt, sizeof s->salt)) <= 0) {
		*why = "server-first-message without a valid salt (s=)";
		return -EPROTO;
	}
	s->salt_len = (size_t)n;
	p = v + vlen + 1;
	if (p > end || !(v = attr(p, end, 'i', &vlen)) || vlen == 0 || vlen > 9) {
		*why = "server-first-message without a valid iteration count (i=)";
		return -EPROTO;
	}
	for (size_t i = 0; i < vlen; i++) {
		if (v[i] < '0' || v[i] > '9') {
			*why = "server-first-message without a valid iteration count (i=)";
			return -EPROTO;
		}
		iter = iter * 10 + (unsigned long)(v[i] - '0');
	}
	if (iter == 0 || iter > WP_SCRAM_MAX_ITERATIONS) {
		*why = "the server's iteration count (i=) is 0 or above " STR(WP_SCRAM_MAX_ITERATIONS);
		return -EPROTO;
	}
	s->iterations = (unsigned)iter;
	s->step = 2;
	return 0;
}

int wp_scram_salted_password(const char *password, size_t pwlen, const unsigned char *salt, size_t salt_len,
                             unsigned iterations, unsigned char out[WP_SCRAM_KEY_LEN])
{
	if (pwlen > INT_MAX || salt_len > INT_MAX || iterations == 0 || iterations > INT_MAX)
		return -EINVAL;
	if (PKCS5_PBKDF2_HMAC(password, (int)pwlen, salt, (int)salt_len, (int)iterations, EVP_sha256(),
	                      WP_SCRAM_KEY_LEN, out) != 1)
		return -EIO;
	return 0;
}

static bool hmac(const unsigned char *key, size_t klen, const void *data, size_t len,
                 unsigned char out[WP_SCRAM_KEY_LEN])
{
	unsigned int olen = 0;

	return HMAC(EVP_sha256(), key, (int)klen, data, len, out, &olen) != NULL && olen == WP_SCRAM_KEY_LEN;
}

int wp_scram_client_final(struct wp_scram *s, const unsigned char salted[WP_SCRAM_KEY_LEN], char *out, size_t cap)
{
	unsigned char client_key[WP_SCRAM_KEY_LEN], stored_key[WP_SCRAM_KEY_LEN], sig[WP_SCRAM_KEY_LEN],
	    server_key[WP_SCRAM_KEY_LEN];
	char auth[3 * WP_SCRAM_MSG_MAX], proof64[b64_len(WP_SCRAM_KEY_LEN) + 1];
	unsigned int dlen = 0;
	int n, head, ret = -EIO;

	if (s->step != 2)
		return -EINVAL;
	/* client-final-message-without-proof, then AuthMessage =
	 * client-first-bare "," server-first "," client-final-without-proof */
	head = snprintf(out, cap, "c=%s,r=%.*s", GS2_HEADER_64, (int)s->snonce_len, s->server_first + s->snonce_off);
	if (head < 0 || (size_t)head >= cap)
		return -ENOSPC;
	n = snprintf(auth, sizeof auth, "%.*s,%s,%s", (int)s->first_bare_len, s->first_bare, s->server_first, out);
	if (n < 0 || (size_t)n >= sizeof auth)
		return -ENOSPC;
	if (!hmac(salted, WP_SCRAM_KEY_LEN, "Client Key", 10, client_key) ||
	    EVP_Digest(client_key, sizeof client_key, stored_key, &dlen, EVP_sha256(), NULL) != 1 ||
	    dlen != WP_SCRAM_KEY_LEN || !hmac(stored_key, sizeof stored_key, auth, (size_t)n, sig) ||
	    !hmac(salted, WP_SCRAM_KEY_LEN, "Server Key", 10, server_key) ||
	    !hmac(server_key, sizeof server_key, auth, (size_t)n, s->server_signature))
		goto out;
	for (size_t i = 0; i < WP_SCRAM_KEY_LEN; i++)
		client_key[i] ^= sig[i]; /* ClientProof = ClientKey XOR ClientSignature */
	EVP_EncodeBlock((unsigned char *)proof64, client_key, WP_SCRAM_KEY_LEN);
	n = snprintf(out + head, cap - (size_t)head, ",p=%s", proof64);
	if (n < 0 || (size_t)n >= cap - (size_t)head) {
		ret = -ENOSPC;
		goto out;
	}
	s->step = 3;
	ret = head + n;
out:
	OPENSSL_cleanse(client_key, sizeof client_key);
	OPENSSL_cleanse(stored_key, sizeof stored_key);
	OPENSSL_cleanse(server_key, sizeof server_key);
	OPENSSL_cleanse(sig, sizeof sig);
	return ret;
}

int wp_scram_server_final(const struct wp_scram *s, const char *msg, size_t len, const char **why)
{
	unsigned char got[WP_SCRAM_KEY_LEN + 3];
	const char *v;
	size_t vlen;
	int n;

	if (s->step != 3) {
		*why = "server-final-message out of order";
		return -EINVAL;
	}
	if (len >= WP_SCRAM_MSG_MAX || memchr(msg, '\0', len)) {
		*why = "server-final-message too long or with a NUL byte";
		return -EPROTO;
	}
	if (attr(msg, msg + len, 'e', &vlen)) {
		*why = "the server rejected the exchange (e=)";
		return -EACCES;
	}
	if (!(v = attr(msg, msg + len, 'v', &vlen))) {
		*why = "server-final-message without a signature (v=)";
		return -EPROTO;
	}
	n = b64_decode(v, vlen, got, sizeof got);
	if (n != WP_SCRAM_KEY_LEN) {
		*why = "server-final-message with a malformed signature (v=)";
		return -EPROTO;
	}
	if (CRYPTO_memcmp(got, s->server_signature, WP_SCRAM_KEY_LEN) != 0) {
		*why = "the server's SCRAM signature does not verify (it does not know the password)";
		return -EBADMSG;
	}
	return 0;
}

void wp_scram_clear(struct wp_scram *s)
{
	OPENSSL_cleanse(s, sizeof *s);
}

static void hex(const unsigned char *in, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * n] = '\0';
}

/* md5(a[0..alen) + b[0..blen)) as 32 hex digits into out. */
static bool md5_hex(const void *a, size_t alen, const void *b, size_t blen, char out[33])
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned char d[16];
	unsigned int dlen = 0;
	bool ok = ctx && EVP_DigestInit_ex(ctx, EVP_md5(), NULL) == 1 && EVP_DigestUpdate(ctx, a, alen) == 1 &&
	          EVP_DigestUpdate(ctx, b, blen) == 1 && EVP_DigestFinal_ex(ctx, d, &dlen) == 1 && dlen == 16;

	EVP_MD_CTX_free(ctx);
	if (ok)
		hex(d, 16, out);
	OPENSSL_cleanse(d, sizeof d);
	return ok;
}

int wp_md5_password(const char *user, const char *password, size_t pwlen, const unsigned char salt[4],
                    char out[WP_MD5_PASSWORD_LEN + 1])
{
	char inner[33];
	int ret = 0;

	if (pwlen > INT_MAX)
		return -EINVAL;
	memcpy(out, "md5", 3);
	if (!md5_hex(password, pwlen, user, strlen(user), inner) || !md5_hex(inner, 32, salt, 4, out + 3))
		ret = -EIO;
	OPENSSL_cleanse(inner, sizeof inner);
	return ret;
}
