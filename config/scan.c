/*
 * config/scan.c — phase 1, YAML syntax. libyaml's event parser walks the
 * whole stream once before any tree exists (scan_events): it finds syntax
 * errors, anchors and aliases (rejected: a loaded alias is a shared node,
 * even a cycle), nesting deeper than CFG_MAX_DEPTH (libyaml 0.2.5 has no
 * limit of its own) and more than one document. Only a stream that passes
 * is handed to yaml_parser_load() for the document tree.
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
/* Phase 1: syntax                                                     */

/* Byte offset of a libyaml mark (whose column counts characters). */
static size_t mark_offset(const struct ld *ld, yaml_mark_t m)
{
	size_t off = 0, line = 0, col = 0;

	while (off < ld->len && line < m.line) {
		if (ld->buf[off++] == '\n')
			line++;
	}
	while (off < ld->len && col < m.column && ld->buf[off] != '\n') {
		off++;
		while (off < ld->len && ((unsigned char)ld->buf[off] & 0xc0) == 0x80)
			off++;
		col++;
	}
	return off;
}

/* The position of a byte offset, counted the way libyaml counts. */
static struct cfg_pos offset_pos(const struct ld *ld, size_t offset)
{
	struct cfg_pos p = {1, 1};

	for (size_t i = 0; i < offset && i < ld->len; i++) {
		unsigned char c = (unsigned char)ld->buf[i];
		if (c == '\n') {
			p.line++;
			p.col = 1;
		} else if ((c & 0xc0) != 0x80) {
			p.col++;
		}
	}
	return p;
}

void syntax_error(struct ld *ld, const yaml_parser_t *p)
{
	struct cfg_pos pos;
	const char *problem = p->problem ? p->problem : "unknown error";

	if (p->error == YAML_MEMORY_ERROR) {
		ld->oom = true;
		return;
	}
	if (p->error == YAML_READER_ERROR) {
		pos = offset_pos(ld, p->problem_offset);
		if (p->problem_value != -1)
			add_err(ld, pos, NULL, "syntax error: %s (byte 0x%02x)", problem,
			        p->problem_value & 0xff);
		else
			add_err(ld, pos, NULL, "syntax error: %s", problem);
		return;
	}
	pos = mark_pos(p->problem_mark);
	{
		size_t off = mark_offset(ld, p->problem_mark);
		if (off < ld->len && ld->buf[off] == '\t') {
			add_err(ld, pos, NULL, "syntax error: tabs are not allowed for indentation");
			return;
		}
	}
	if (p->context) {
		struct cfg_pos c = mark_pos(p->context_mark);
		add_err(ld, pos, NULL, "syntax error: %s (%s at line %u, column %u)", problem, p->context,
		        c.line, c.col);
	} else {
		add_err(ld, pos, NULL, "syntax error: %s", problem);
	}
}

static void anchor_error(struct ld *ld, yaml_mark_t m, char sigil, const yaml_char_t *name)
{
	char shown[SHOW_BUF];
	char text[SHOW_MAX + 2];

	snprintf(text, sizeof text, "%c%s", sigil, (const char *)name);
	show(text, strlen(text), true, shown);
	add_err(ld, mark_pos(m), NULL, "anchors and aliases are not supported, got %s", shown);
}

/*
 * Walk the event stream once. Returns true when the stream may be loaded
 * as a tree: one document, no anchors or aliases, bounded depth.
 */
bool scan_events(struct ld *ld)
{
	yaml_parser_t p;
	yaml_event_t ev;
	size_t before = ld->n_errs + ld->truncated;
	int depth = 0, docs = 0;
	bool done = false, ok = true;

	if (!yaml_parser_initialize(&p)) {
		ld->oom = true;
		return false;
	}
	yaml_parser_set_input_string(&p, (const unsigned char *)ld->buf, ld->len);
	while (!done) {
		if (!yaml_parser_parse(&p, &ev)) {
			syntax_error(ld, &p);
			ok = false;
			break;
		}
		switch (ev.type) {
		case YAML_STREAM_END_EVENT:
			done = true;
			break;
		case YAML_DOCUMENT_START_EVENT:
			if (++docs > 1) {
				add_err(ld, mark_pos(ev.start_mark), NULL,
				        "multiple documents are not supported");
				done = true;
			}
			break;
		case YAML_ALIAS_EVENT:
			anchor_error(ld, ev.start_mark, '*', ev.data.alias.anchor);
			break;
		case YAML_SCALAR_EVENT:
			if (ev.data.scalar.anchor)
				anchor_error(ld, ev.start_mark, '&', ev.data.scalar.anchor);
			break;
		case YAML_SEQUENCE_START_EVENT:
		case YAML_MAPPING_START_EVENT: {
			const yaml_char_t *anchor = ev.type == YAML_SEQUENCE_START_EVENT
			                                ? ev.data.sequence_start.anchor
			                                : ev.data.mapping_start.anchor;
			if (anchor)
				anchor_error(ld, ev.start_mark, '&', anchor);
			if (++depth > CFG_MAX_DEPTH) {
				add_err(ld, mark_pos(ev.start_mark), NULL,
				        "nesting deeper than %d levels is not supported", CFG_MAX_DEPTH);
				done = true;
			}
			break;
		}
		case YAML_SEQUENCE_END_EVENT:
		case YAML_MAPPING_END_EVENT:
			depth--;
			break;
		default:
			break;
		}
		yaml_event_delete(&ev);
	}
	yaml_parser_delete(&p);
	if (ok && docs == 0) {
		add_err(ld, (struct cfg_pos){1, 1}, NULL,
		        "expected a mapping with a pools: key, got an empty document");
	}
	return ok && docs == 1 && ld->n_errs + ld->truncated == before && !ld->oom;
}

