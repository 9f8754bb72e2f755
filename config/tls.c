/*
 * config/tls.c — a pool's tls: block once merged (config.c, finish_tls):
 * every file it names is read and hashed, and the client SSL_CTX the daemon
 * connects with is built here, at load, so that --check-config and a reload
 * fail exactly where the daemon would, naming the value at fault.
 *
 * The context holds what is the same for every connection of the pool:
 * protocol floor, verification mode and trust anchors, client certificate
 * and key, cipher lists, ALPN, session cache mode and the modes the
 * non-blocking relay needs (partial writes, moving buffers, buffers released
 * while quiet; no renegotiation). What differs per connection (SNI and the
 * host name checked, the session to resume, callbacks) is the daemon's
 * (daemon/tls.c).
 *
 * The digest is a SHA-256 over every setting and the full contents of every
 * file read (ca_file, cert_file, key_file; for ca_path the directory's entry
 * names and the contents of its files, bounded by CFG_MAX_TLS_DIR_*): two
 * loads with equal digests build the same TLS, so a reload that changes a
 * file's contents but no key's text is still seen as a change (diff.c), and
 * the daemon recycles warm connections made with the old settings.
 *
 * Files must be regular (checked before they are opened: opening a device
 * can act), are opened non-blocking and read up to CFG_MAX_TLS_FILE bytes. OpenSSL reads them again from
 * their paths; its error queue is drained after each call and its reason
 * text (ERR_reason_error_string) ends up in our message. Nothing here logs.
 */
#include "loader.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *const tls_key_names[TK_N] = {
    [TK_TLS] = "tls",
    [TK_VERIFY] = "verify",
    [TK_CA_FILE] = "ca_file",
    [TK_CA_PATH] = "ca_path",
    [TK_SERVER_NAME] = "server_name",
    [TK_CERT_FILE] = "cert_file",
    [TK_KEY_FILE] = "key_file",
    [TK_MIN_VERSION] = "min_version",
    [TK_CIPHERS] = "ciphers",
    [TK_CIPHERSUITES] = "ciphersuites",
    [TK_ALPN] = "alpn",
    [TK_SESSION_RESUMPTION] = "session_resumption",
    [TK_STARTTLS] = "starttls",
};

#define READ_CHUNK 65536 /* bytes read (and hashed) at a time */
/* OpenSSL's read buffer with read-ahead: four full records, so one read(2)
 * brings what fills the relay's 64 KiB copy buffer (daemon/engine.h). */
#define TLS_READ_AHEAD (4 * (SSL3_RT_HEADER_LENGTH + SSL3_RT_MAX_ENCRYPTED_LENGTH))

/* One load's work on one tls: block. */
struct build {
	struct ld *ld;
	const struct origin *o;
	EVP_MD_CTX *md;
	bool ok; /* nothing reported for this block yet */
};

/* An error about key `k`, at the value it came from (once for all pools
 * inheriting it from defaults:). */
static void tls_err(struct build *b, enum tls_key k, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void tls_err(struct build *b, enum tls_key k, const char *fmt, ...)
{
	char msg[PATH_BUF + SHOW_BUF];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	add_err_once(b->ld, b->o[k].pos, b->o[k].path, "%s", msg);
	b->ok = false;
}

/* OpenSSL's reason for the oldest error in its queue (the cause; later
 * entries say where it surfaced), and the queue emptied. */
static const char *ssl_reason(void)
{
	unsigned long e = ERR_peek_error();
	const char *why = e ? ERR_reason_error_string(e) : NULL;

	ERR_clear_error();
	return why ? why : "no reason given by OpenSSL";
}

/* Hash a length-prefixed field, so that no two settings hash alike. */
static void hash_bytes(struct build *b, const void *p, size_t len)
{
	uint64_t n = len;

	EVP_DigestUpdate(b->md, &n, sizeof n);
	if (len)
		EVP_DigestUpdate(b->md, p, len);
}

static void hash_str(struct build *b, const char *s)
{
	if (s)
		hash_bytes(b, s, strlen(s) + 1); /* the NUL tells "" from none */
	else
		hash_bytes(b, NULL, 0);
}

/* Every setting, in the order of the key table. */
static void hash_settings(struct build *b, const struct cfg_tls *t)
{
	int v[] = {t->verify, t->min_version, t->session_resumption, (int)t->starttls};

	hash_bytes(b, "warmpool tls 1", 14);
	hash_bytes(b, v, sizeof v);
	hash_str(b, t->ca_file);
	hash_str(b, t->ca_path);
	hash_str(b, t->server_name);
	hash_str(b, t->cert_file);
	hash_str(b, t->key_file);
	hash_str(b, t->ciphers);
	hash_str(b, t->ciphersuites);
	hash_bytes(b, t->alpn, t->alpn_len);
}

/* Hash the contents of the open regular file fd, then its length, adding
 * the length to *total; -1 with errno on a read error, EFBIG when it holds
 * more than `max` bytes. Secrets (a key file) are wiped from the buffer. */
static int hash_fd(struct build *b, int fd, size_t max, size_t *total)
{
	unsigned char buf[READ_CHUNK];
	size_t got = 0;
	ssize_t n;
	int e;

	for (;;) {
		n = read(fd, buf, sizeof buf);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			break;
		if (n == 0)
			break;
		got += (size_t)n;
		if (got > max) {
			errno = EFBIG;
			n = -1;
			break;
		}
		EVP_DigestUpdate(b->md, buf, (size_t)n);
	}
	e = errno;
	OPENSSL_cleanse(buf, sizeof buf);
	if (n < 0) {
		errno = e;
		return -1;
	}
	hash_bytes(b, &got, sizeof got);
	*total += got;
	return 0;
}

/* Open `path` (relative to dirfd) for reading if it is a regular file:
 * checked before opening, since opening a device can act (a watchdog, a
 * tape), and again after, on what was opened; non-blocking, so a FIFO
 * swapped in meanwhile cannot stall a reload. The fd, else -1 with errno
 * (EINVAL: not a regular file). */
static int open_regular(int dirfd, const char *path)
{
	struct stat st;
	int fd, e;

	if (fstatat(dirfd, path, &st, 0) < 0)
		return -1;
	if (!S_ISREG(st.st_mode)) {
		errno = EINVAL;
		return -1;
	}
	fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return -1;
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode))
		return fd;
	e = S_ISREG(st.st_mode) ? errno : EINVAL;
	close(fd);
	errno = e;
	return -1;
}

/* The file of key k read into the digest; false when it was reported. */
static bool hash_file(struct build *b, enum tls_key k, const char *path)
{
	char shown[SHOW_BUF];
	size_t total = 0;
	int fd, r;

	show(path, strlen(path), true, shown);
	hash_str(b, path);
	fd = open_regular(AT_FDCWD, path);
	if (fd < 0) {
		tls_err(b, k, "expected a readable file (%s), got %s",
		        errno == EINVAL ? "not a regular file" : strerror(errno), shown);
		return false;
	}
	r = hash_fd(b, fd, CFG_MAX_TLS_FILE, &total);
	if (r < 0 && errno == EFBIG)
		tls_err(b, k, "expected a file of at most %d bytes, got %s", CFG_MAX_TLS_FILE, shown);
	else if (r < 0)
		tls_err(b, k, "expected a readable file (%s), got %s", strerror(errno), shown);
	close(fd);
	return r == 0;
}

static int cmp_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A ca_path directory: its entry names, sorted, and the contents of its
 * regular files (through symlinks, as OpenSSL follows them) into the
 * digest. Entries OpenSSL could not read either are hashed by name only. */
static bool hash_dir(struct build *b, const char *path)
{
	char shown[SHOW_BUF], **names = NULL;
	size_t n = 0, total = 0;
	struct dirent *de;
	bool ok = true;
	DIR *d;

	show(path, strlen(path), true, shown);
	hash_str(b, path);
	if (!(d = opendir(path))) {
		tls_err(b, TK_CA_PATH, "expected a readable directory (%s), got %s", strerror(errno), shown);
		return false;
	}
	if (!(names = calloc(CFG_MAX_TLS_DIR_ENTRIES, sizeof *names))) {
		b->ld->oom = true;
		ok = false;
		goto out;
	}
	errno = 0;
	while ((de = readdir(d))) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (n == CFG_MAX_TLS_DIR_ENTRIES) {
			tls_err(b, TK_CA_PATH, "expected a directory of at most %d entries, got %s",
			        CFG_MAX_TLS_DIR_ENTRIES, shown);
			ok = false;
			goto out;
		}
		if (!(names[n++] = strdup(de->d_name))) {
			b->ld->oom = true;
			ok = false;
			goto out;
		}
	}
	if (errno) {
		tls_err(b, TK_CA_PATH, "expected a readable directory (%s), got %s", strerror(errno), shown);
		ok = false;
		goto out;
	}
	qsort(names, n, sizeof *names, cmp_name);
	for (size_t i = 0; i < n && ok; i++) {
		int fd = open_regular(dirfd(d), names[i]);

		hash_str(b, names[i]);
		if (fd < 0)
			continue;
		if (hash_fd(b, fd, CFG_MAX_TLS_DIR_BYTES - total, &total) < 0 && errno == EFBIG) {
			tls_err(b, TK_CA_PATH, "expected a directory whose files hold at most %d bytes together, got %s",
			        CFG_MAX_TLS_DIR_BYTES, shown);
			ok = false;
		}
		close(fd);
	}
out:
	for (size_t i = 0; names && i < n; i++)
		free(names[i]);
	free(names);
	closedir(d);
	return ok;
}

/*
 * Trust stores already built by this load, by (ca_file, ca_path): parsing
 * a CA bundle costs tens of milliseconds (OpenSSL's default paths: the
 * whole system bundle, ~34 ms here), and a reload runs inside the event
 * loop, so pools with the same trust anchors share one X509_STORE
 * (reference counted; SSL_CTX_set1_cert_store). At most one per pool.
 */
struct tls_store {
	char *ca_file, *ca_path; /* as the pool wrote them; both NULL: OpenSSL's default paths */
	X509_STORE *store;       /* a reference of ours */
	struct tls_store *next;
};

static bool same_text(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static X509_STORE *store_find(const struct ld *ld, const struct cfg_tls *t)
{
	for (const struct tls_store *s = ld->stores; s; s = s->next)
		if (same_text(s->ca_file, t->ca_file) && same_text(s->ca_path, t->ca_path))
			return s->store;
	return NULL;
}

/* Remember ctx's store for the pools after this one (nothing on failure:
 * they build their own). */
static void store_add(struct ld *ld, const struct cfg_tls *t, SSL_CTX *ctx)
{
	struct tls_store *s = calloc(1, sizeof *s);
	X509_STORE *st = SSL_CTX_get_cert_store(ctx);

	if (!s || !st || (t->ca_file && !(s->ca_file = strdup(t->ca_file))) ||
	    (t->ca_path && !(s->ca_path = strdup(t->ca_path))) || X509_STORE_up_ref(st) != 1) {
		if (s) {
			free(s->ca_file);
			free(s->ca_path);
		}
		free(s);
		return;
	}
	s->store = st;
	s->next = ld->stores;
	ld->stores = s;
}

void tls_done(struct ld *ld)
{
	while (ld->stores) {
		struct tls_store *s = ld->stores;
		ld->stores = s->next;
		X509_STORE_free(s->store);
		free(s->ca_file);
		free(s->ca_path);
		free(s);
	}
}

/* Trust anchors: ca_file and ca_path, or OpenSSL's default paths; their
 * files hashed for every pool, their store built once per load. */
static void load_cas(struct build *b, SSL_CTX *ctx, const struct cfg_tls *t)
{
	char shown[SHOW_BUF];
	X509_STORE *st;
	bool ok = true;

	if (t->ca_file && !hash_file(b, TK_CA_FILE, t->ca_file))
		ok = false;
	if (t->ca_path && !hash_dir(b, t->ca_path))
		ok = false;
	if (!ok)
		return;
	if ((st = store_find(b->ld, t))) {
		SSL_CTX_set1_cert_store(ctx, st);
		return;
	}
	if (t->ca_file && SSL_CTX_load_verify_locations(ctx, t->ca_file, NULL) != 1) {
		show(t->ca_file, strlen(t->ca_file), true, shown);
		tls_err(b, TK_CA_FILE, "expected a PEM file of CA certificates (%s), got %s", ssl_reason(), shown);
		ok = false;
	}
	if (t->ca_path && SSL_CTX_load_verify_locations(ctx, NULL, t->ca_path) != 1) {
		show(t->ca_path, strlen(t->ca_path), true, shown);
		tls_err(b, TK_CA_PATH, "expected a directory of hashed CA certificates (%s), got %s", ssl_reason(),
		        shown);
		ok = false;
	}
	if (!t->ca_file && !t->ca_path && SSL_CTX_set_default_verify_paths(ctx) != 1) {
		tls_err(b, TK_TLS, "expected OpenSSL's default CA locations to load (%s)", ssl_reason());
		ok = false;
	}
	if (ok)
		store_add(b->ld, t, ctx);
}

/* The path of key `k` beside the one `o` names ("...tls.cert_file" ->
 * "...tls.key_file"). */
static void sibling(char *out, const char *path, enum tls_key k)
{
	const char *dot = strrchr(path, '.');
	int len = dot ? (int)(dot - path) : 0;

	snprintf(out, PATH_BUF, "%.*s%s%s", len, path, len ? "." : "", tls_key_names[k]);
}

/* The client certificate chain and its key (mTLS): both or neither. */
static void load_client_cert(struct build *b, SSL_CTX *ctx, const struct cfg_tls *t)
{
	char shown[SHOW_BUF], path[PATH_BUF];
	const char *why;
	X509 *leaf;
	bool ok;

	if (!t->cert_file != !t->key_file) {
		enum tls_key have = t->cert_file ? TK_CERT_FILE : TK_KEY_FILE;
		sibling(path, b->o[have].path, have == TK_CERT_FILE ? TK_KEY_FILE : TK_CERT_FILE);
		add_err_once(b->ld, b->o[have].pos, path, "missing key, expected cert_file and key_file together");
		b->ok = false;
		hash_file(b, have, have == TK_CERT_FILE ? t->cert_file : t->key_file); /* reported if unreadable */
		return;
	}
	if (!t->cert_file)
		return;
	ok = hash_file(b, TK_CERT_FILE, t->cert_file);
	if (!hash_file(b, TK_KEY_FILE, t->key_file) || !ok) /* both read: each reported */
		return;
	if (SSL_CTX_use_certificate_chain_file(ctx, t->cert_file) != 1) {
		show(t->cert_file, strlen(t->cert_file), true, shown);
		tls_err(b, TK_CERT_FILE, "expected a PEM certificate file (%s), got %s", ssl_reason(), shown);
		return;
	}
	/* OpenSSL drops the certificate when a key of another type follows it:
	 * keep the leaf to name the mismatch. */
	leaf = SSL_CTX_get0_certificate(ctx);
	if (!leaf || X509_up_ref(leaf) != 1) {
		b->ld->oom = true;
		return;
	}
	show(t->key_file, strlen(t->key_file), true, shown);
	if (SSL_CTX_use_PrivateKey_file(ctx, t->key_file, SSL_FILETYPE_PEM) != 1) {
		unsigned long e = ERR_peek_error();
		if (ERR_GET_LIB(e) == ERR_LIB_X509 && ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH)
			tls_err(b, TK_KEY_FILE, "expected the private key of cert_file (%s), got %s", ssl_reason(), shown);
		else
			tls_err(b, TK_KEY_FILE, "expected a PEM private key file (%s), got %s", ssl_reason(), shown);
	} else if (SSL_CTX_check_private_key(ctx) != 1) {
		ERR_clear_error(); /* "no certificate assigned": the leaf says why */
		why = X509_check_private_key(leaf, SSL_CTX_get0_privatekey(ctx)) == 1 ? "key values mismatch"
		                                                                       : ssl_reason();
		ERR_clear_error();
		tls_err(b, TK_KEY_FILE, "expected the private key of cert_file (%s), got %s", why, shown);
	}
	X509_free(leaf);
}

/* Protocol floor, cipher lists, ALPN, sessions and the relay's modes. */
static void set_protocol(struct build *b, SSL_CTX *ctx, const struct cfg_tls *t)
{
	char shown[SHOW_BUF];

	if (SSL_CTX_set_min_proto_version(ctx, t->min_version) != 1)
		tls_err(b, TK_MIN_VERSION, "expected 1.2 or 1.3 (%s)", ssl_reason());
	if (t->ciphers && SSL_CTX_set_cipher_list(ctx, t->ciphers) != 1) {
		show(t->ciphers, strlen(t->ciphers), true, shown);
		tls_err(b, TK_CIPHERS, "expected an OpenSSL cipher list for TLS 1.2 (%s), got %s", ssl_reason(), shown);
	}
	if (t->ciphersuites && SSL_CTX_set_ciphersuites(ctx, t->ciphersuites) != 1) {
		show(t->ciphersuites, strlen(t->ciphersuites), true, shown);
		tls_err(b, TK_CIPHERSUITES, "expected TLS 1.3 cipher suites like TLS_AES_128_GCM_SHA256 (%s), got %s",
		        ssl_reason(), shown);
	}
	if (t->alpn && SSL_CTX_set_alpn_protos(ctx, t->alpn, (unsigned)t->alpn_len) != 0) /* 0 is success */
		tls_err(b, TK_ALPN, "expected a list of protocol names (%s)", ssl_reason());
	if (t->session_resumption) {
		/* The daemon keeps the sessions itself (one per backend, each
		 * TLS 1.3 ticket used once): OpenSSL's internal store stays empty. */
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
	} else {
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
		SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
	}
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
	                          SSL_MODE_RELEASE_BUFFERS);
	/* Read-ahead: one read(2) takes up to TLS_READ_AHEAD bytes of records
	 * into OpenSSL's buffer instead of two per record (header, then body);
	 * daemon/tls.c decrypts what is buffered. The buffer exists only while
	 * it holds bytes (RELEASE_BUFFERS), so idle and quiet connections keep
	 * none. */
	SSL_CTX_set_read_ahead(ctx, 1);
	SSL_CTX_set_default_read_buffer_len(ctx, TLS_READ_AHEAD);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
}

/*
 * Build t->ctx and t->digest from the merged settings of an enabled tls:
 * block; `o` (indexed by enum tls_key) says where each setting came from.
 * Every problem is collected as an error; a block that has any gets no
 * context (the load fails anyway). verify: false earns a warning.
 */
void tls_build(struct ld *ld, struct cfg_tls *t, const struct origin *o)
{
	struct build b = {.ld = ld, .o = o, .ok = true};
	SSL_CTX *ctx = NULL;

	if (!t->enabled)
		return;
	ERR_clear_error();
	if (!(b.md = EVP_MD_CTX_new()) || EVP_DigestInit_ex(b.md, EVP_sha256(), NULL) != 1 ||
	    !(ctx = SSL_CTX_new(TLS_client_method()))) {
		ERR_clear_error();
		ld->oom = true;
		goto out;
	}
	hash_settings(&b, t);
	SSL_CTX_set_verify(ctx, t->verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
	if (!t->verify)
		add_warning(ld, o[TK_VERIFY].pos, o[TK_VERIFY].path, "false: backend certificates are not verified");
	load_cas(&b, ctx, t);
	load_client_cert(&b, ctx, t);
	set_protocol(&b, ctx, t);
	if (EVP_DigestFinal_ex(b.md, t->digest, NULL) != 1) {
		ERR_clear_error();
		ld->oom = true;
	}
	if (b.ok && !ld->oom) {
		t->ctx = ctx;
		ctx = NULL;
	}
out:
	SSL_CTX_free(ctx);
	EVP_MD_CTX_free(b.md);
}

/* Free the context of a tls: block (cfg_free); the strings are the table's. */
void tls_ctx_free(struct cfg_tls *t)
{
	SSL_CTX_free(t->ctx);
	t->ctx = NULL;
}
