/*
 * config/errors.c — the loader's errors: every problem becomes one finished
 * line "file:line:col: key.path: message" (libyaml marks are 0-based; we add
 * 1), at most CFG_MAX_ERRORS of them, each value quoted bounded and escaped
 * (show, desc). hand_over() sorts them by position and gives them to the
 * caller. Nothing here logs.
 */
#include "loader.h"

#include "addr.h"
#include "escape.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <math.h>
#include <netdb.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <yaml.h>

/* ------------------------------------------------------------------ */
/* Error collection                                                    */

struct cfg_pos mark_pos(yaml_mark_t m)
{
	struct cfg_pos p = {
	    .line = m.line >= UINT32_MAX ? UINT32_MAX : (unsigned)m.line + 1,
	    .col = m.column >= UINT32_MAX ? UINT32_MAX : (unsigned)m.column + 1,
	};
	return p;
}

struct cfg_pos node_pos(const yaml_node_t *n)
{
	return mark_pos(n->start_mark);
}

void add_errv(struct ld *ld, struct cfg_pos pos, const char *path, const char *fmt, va_list ap)
{
	char *body = NULL, *line = NULL;
	int r;

	if (ld->n_errs >= CFG_MAX_ERRORS) {
		ld->truncated++;
		return;
	}
	if (vasprintf(&body, fmt, ap) < 0) {
		ld->oom = true;
		return;
	}
	if (pos.line)
		r = asprintf(&line, "%s:%u:%u: %s%s%s", ld->file, pos.line, pos.col, path ? path : "",
		             path && *path ? ": " : "", body);
	else
		r = asprintf(&line, "%s: %s%s%s", ld->file, path ? path : "", path && *path ? ": " : "",
		             body);
	free(body);
	if (r < 0) {
		ld->oom = true;
		return;
	}
	if (ld->n_errs == ld->cap_errs) {
		size_t cap = ld->cap_errs ? ld->cap_errs * 2 : 8;
		struct err_item *v = realloc(ld->errs, cap * sizeof *v);
		if (!v) {
			free(line);
			ld->oom = true;
			return;
		}
		ld->errs = v;
		ld->cap_errs = cap;
	}
	ld->errs[ld->n_errs] = (struct err_item){pos.line, pos.col, ld->n_errs, line};
	ld->n_errs++;
}

void add_err(struct ld *ld, struct cfg_pos pos, const char *path, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	add_errv(ld, pos, path, fmt, ap);
	va_end(ap);
}

/* add_err, unless the very same line was collected before: a value from
 * defaults: that several pools inherit is reported once. */
void add_err_once(struct ld *ld, struct cfg_pos pos, const char *path, const char *fmt, ...)
{
	size_t before = ld->n_errs;
	va_list ap;

	va_start(ap, fmt);
	add_errv(ld, pos, path, fmt, ap);
	va_end(ap);
	if (ld->n_errs != before + 1)
		return;
	for (size_t i = 0; i < before; i++) {
		if (strcmp(ld->errs[i].msg, ld->errs[before].msg) == 0) {
			free(ld->errs[before].msg);
			ld->n_errs = before;
			return;
		}
	}
}

/* A line "file:line:col: path: warning: ..." in cfg->warnings (once, at
 * most CFG_MAX_ERRORS of them): a valid config that is likely not what was
 * meant. */
void add_warning(struct ld *ld, struct cfg_pos pos, const char *path, const char *fmt, ...)
{
	struct cfg_errors *w = &ld->cfg->warnings;
	char *body = NULL, *line = NULL, **v;
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = vasprintf(&body, fmt, ap);
	va_end(ap);
	if (r < 0 || asprintf(&line, "%s:%u:%u: %s: warning: %s", ld->file, pos.line, pos.col, path, body) < 0) {
		free(body);
		ld->oom = true;
		return;
	}
	free(body);
	for (size_t i = 0; i < w->n; i++) {
		if (strcmp(w->msg[i], line) == 0) {
			free(line);
			return;
		}
	}
	if (w->n >= CFG_MAX_ERRORS) {
		w->truncated++;
		free(line);
		return;
	}
	if (!(v = realloc(w->msg, (w->n + 1) * sizeof *v))) {
		free(line);
		ld->oom = true;
		return;
	}
	w->msg = v;
	v[w->n++] = line;
}

bool failed(const struct ld *ld)
{
	return ld->n_errs || ld->truncated || ld->oom;
}

/*
 * Quote `len` bytes for a message: printable text as is (UTF-8 included,
 * libyaml has validated it), '"' and '\' escaped, control bytes as \n, \t
 * or \xHH, at most SHOW_MAX bytes followed by "..." (lib/escape's text
 * style). `out` has SHOW_BUF bytes.
 */
void show(const char *s, size_t len, bool quotes, char *out)
{
	wp_escape_as((const unsigned char *)s, len, SHOW_MAX, out, SHOW_BUF,
	             WP_ESC_TEXT | (quotes ? WP_ESC_QUOTE : 0));
}

const char *sval(const yaml_node_t *n)
{
	return (const char *)n->data.scalar.value;
}

size_t slen(const yaml_node_t *n)
{
	return n->data.scalar.length;
}

/* What a node is, for "got ...": the quoted scalar, or its kind. */
const char *desc(const yaml_node_t *n, char *out)
{
	switch (n->type) {
	case YAML_SCALAR_NODE:
		if (slen(n) == 0 && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE)
			return "an empty value";
		show(sval(n), slen(n), true, out);
		return out;
	case YAML_MAPPING_NODE:
		return n->data.mapping.pairs.top == n->data.mapping.pairs.start ? "an empty mapping"
		                                                                : "a mapping";
	case YAML_SEQUENCE_NODE:
		return n->data.sequence.items.top == n->data.sequence.items.start ? "an empty list"
		                                                                  : "a list";
	default:
		return "nothing";
	}
}

/* "expected <what>, got <node>" at the node. */
void bad_value(struct ld *ld, const yaml_node_t *n, const char *path, const char *fmt, ...)
{
	char what[PATH_BUF], got[SHOW_BUF];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	add_err(ld, node_pos(n), path, "expected %s, got %s", what, desc(n, got));
}


/* ------------------------------------------------------------------ */
/* Entry points                                                        */

static int cmp_err(const void *a, const void *b)
{
	const struct err_item *x = a, *y = b;

	if (x->line != y->line)
		return x->line < y->line ? -1 : 1;
	if (x->col != y->col)
		return x->col < y->col ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Move the collected errors into `errs`, sorted by position. */
void hand_over(struct ld *ld, struct cfg_errors *errs)
{
	if (ld->oom && ld->n_errs < CFG_MAX_ERRORS)
		add_err(ld, (struct cfg_pos){0, 0}, NULL, "out of memory");
	errs->truncated = ld->truncated;
	if (ld->n_errs == 0)
		goto out;
	qsort(ld->errs, ld->n_errs, sizeof *ld->errs, cmp_err);
	errs->msg = calloc(ld->n_errs, sizeof *errs->msg);
	if (!errs->msg) {
		errs->truncated += ld->n_errs;
		for (size_t i = 0; i < ld->n_errs; i++)
			free(ld->errs[i].msg);
		goto out;
	}
	for (size_t i = 0; i < ld->n_errs; i++)
		errs->msg[i] = ld->errs[i].msg;
	errs->n = ld->n_errs;
out:
	if (errs->n == 0 && errs->truncated == 0)
		errs->truncated = 1; /* never report failure with nothing to show */
	free(ld->errs);
	ld->errs = NULL;
	ld->n_errs = 0;
}


void cfg_errors_free(struct cfg_errors *errs)
{
	if (!errs)
		return;
	for (size_t i = 0; i < errs->n; i++)
		free(errs->msg[i]);
	free(errs->msg);
	errs->msg = NULL;
	errs->n = 0;
	errs->truncated = 0;
}

