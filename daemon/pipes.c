/* daemon/pipes.c — see pipes.h. */
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "pipes.h"

static void pipe_close(struct pipes_pipe *p)
{
	close(p->rfd);
	close(p->wfd);
	free(p);
}

struct pipes_pipe *pipes_get(struct pipes *pp)
{
	struct pipes_pipe *p = pp->free;
	if (p) {
		pp->free = p->next;
		pp->n_free--;
		return p;
	}
	if (pp->n_total >= PIPES_MAX)
		return NULL;
	p = malloc(sizeof *p);
	if (!p)
		return NULL;
	int fds[2];
	if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0) {
		free(p);
		return NULL;
	}
	p->rfd = fds[0];
	p->wfd = fds[1];
	int size = fcntl(p->wfd, F_SETPIPE_SZ, PIPE_SIZE);
	if (size < 0)
		size = fcntl(p->wfd, F_GETPIPE_SZ);
	p->size = size > 0 ? (unsigned)size : 65536;
	pp->n_total++;
	return p;
}

void pipes_put(struct pipes *pp, struct pipes_pipe *p, int empty)
{
	if (!p)
		return;
	if (!empty || pp->n_free >= PIPES_KEEP) {
		pipe_close(p);
		pp->n_total--;
		return;
	}
	p->next = pp->free;
	pp->free = p;
	pp->n_free++;
}

void pipes_destroy(struct pipes *pp)
{
	while (pp->free) {
		struct pipes_pipe *p = pp->free;
		pp->free = p->next;
		pipe_close(p);
	}
	pp->n_free = 0;
	pp->n_total = 0;
}
