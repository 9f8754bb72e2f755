/*
 * daemon/balance.c — pure picks: which backend, how many connections.
 *
 * Which backend a new connection goes to and which backend's idle connection
 * a client gets follow the pool's balance (round_robin by weight,
 * least_connections, first), among the backends that serve: up or unknown
 * (not proven yet), and backups only while no primary is either. Only connections on preferred backends count
 * toward the floor (pool_counts), so when a primary (or, for `first`, an
 * earlier backend) is usable again, new connections go there and the others
 * are handed back by the janitor once the floor is met there.
 * Nothing here does I/O or changes a connection's state (the uid lookup
 * reads a socket option once): tests/unit/test_pool.c calls these directly.
 * The names keep their pool_ prefix: they are the pool's policy, and the
 * unit tests name them.
 */
#include <sys/socket.h>

#include "engine.h"

/* ---- pure accounting (unit-tested) ------------------------------------ */

size_t pool_plan_connects(const struct pool_counts *c)
{
	size_t total = c->idle + c->active + c->connecting + c->other;
	size_t want = (size_t)c->min_idle + c->waiting;
	size_t have = c->idle + c->connecting;
	if (want <= have || total >= c->max_connections)
		return 0;
	size_t need = want - have;
	size_t room = c->max_connections - total;
	return need < room ? need : room;
}

ev_tstamp pool_refill_after(const struct pool *p, const struct pool_counts *c, ev_tstamp now)
{
	if (!p->cfg->tls.enabled || c->waiting || c->idle + c->connecting < (c->min_idle + 3) / 4 ||
	    now >= p->last_handout + REFILL_LULL)
		return 0;
	return p->last_handout + REFILL_LULL;
}

int pool_backend_serves(const struct pool *p, const struct backend *be)
{
	if (!backend_available(be->state))
		return 0; /* unknown serves: trying it is how it becomes known */
	return be->cfg->backup ? p->n_up_primary == 0 : 1;
}

/* For `first`: the index of the first serving backend that is usable right
 * now (no failures counted); backends after it are not preferred. */
size_t pool_first_cutoff(const struct pool *p)
{
	if (p->cfg->balance != CFG_BALANCE_FIRST)
		return p->n_backends;
	for (size_t i = 0; i < p->n_backends; i++)
		if (pool_backend_serves(p, p->backends[i]) && p->backends[i]->connect_failures == 0)
			return i;
	return p->n_backends;
}

/* Serves, and (for `first`) no earlier serving backend is usable right now:
 * its connections count toward the floor and are never handed back. */
int pool_backend_preferred_at(const struct pool *p, const struct backend *be, size_t cutoff)
{
	return pool_backend_serves(p, be) && be->slot <= cutoff;
}

int pool_backend_preferred(const struct pool *p, const struct backend *be)
{
	return pool_backend_preferred_at(p, be, pool_first_cutoff(p));
}

static size_t backend_n_conns(const struct backend *be)
{
	return be->conns[BCONN_IDLE].n + be->conns[BCONN_ACTIVE].n + be->conns[BCONN_CONNECTING].n;
}

/* a/wa < b/wb, without division */
static int load_less(size_t a, uint32_t wa, size_t b, uint32_t wb)
{
	return (uint64_t)a * wb < (uint64_t)b * wa;
}

int pool_session_uid(struct session *s, uid_t *uid)
{
	if (!s->uid_read) {
		/* Read once, when first needed: only a foreign connection or a
		 * handout (its lease) asks, so a plain relayed client costs no
		 * syscall. A TCP peer has no credentials (Linux would report the
		 * overflow uid): only an AF_UNIX peer's uid is trusted. */
		struct ucred cr;
		socklen_t len = sizeof cr;
		int dom = 0;
		socklen_t dlen = sizeof dom;
		s->uid_read = 1;
		if (getsockopt(s->cfd, SOL_SOCKET, SO_DOMAIN, &dom, &dlen) == 0 && dom == AF_UNIX &&
		    getsockopt(s->cfd, SOL_SOCKET, SO_PEERCRED, &cr, &len) == 0 && len == sizeof cr) {
			s->uid = cr.uid;
			s->pid = cr.pid;
			s->uid_known = 1;
		}
	}
	*uid = s->uid;
	return s->uid_known ? 0 : -1;
}

/* May the session `s` (NULL: anyone) get the connection `b`? A foreign
 * connection (checked in) only goes to a client of the uid that checked it
 * in: that process may still hold a copy of the socket, which the kernel
 * cannot take back, so a client of anyone else would share its session with
 * it. A client whose uid is unknown (TCP) never gets one. */
int bconn_usable_by(const struct bconn *b, struct session *s)
{
	uid_t uid;
	return !b->foreign || !s || (pool_session_uid(s, &uid) == 0 && uid == b->owner_uid);
}

/* The first idle connection of `be` that `s` may get (the idle list's order:
 * greeted first, then the youngest), or NULL. Foreign connections are rare,
 * so this almost always stops at the first. */
struct bconn *pool_conn_for(struct backend *be, struct session *s)
{
	const struct list *l = &be->conns[BCONN_IDLE];
	for (struct list_node *n = l->head.next; n != &l->head; n = n->next) {
		struct bconn *b = container_of(n, struct bconn, node);
		if (bconn_usable_by(b, s))
			return b;
	}
	return NULL;
}

long pool_pick_handout(struct pool *p)
{
	return pool_pick_handout_for(p, NULL);
}

long pool_pick_handout_for(struct pool *p, struct session *s)
{
	size_t n = p->n_backends;
	long best = -1;
	int64_t total = 0;
	for (size_t i = 0; i < n; i++) {
		size_t k = (p->rr + i) % n;
		struct backend *be = p->backends[k];
		/* A backend whose idle connections are all foreign to `s` is, for
		 * `s`, a backend without idle connections: balance among the rest. */
		if (!be->conns[BCONN_IDLE].n || !pool_backend_serves(p, be) || (s && !pool_conn_for(be, s)))
			continue;
		const struct backend *b = best < 0 ? NULL : p->backends[best];
		switch (p->cfg->balance) {
		case CFG_BALANCE_FIRST:
			if (!b || k < (size_t)best)
				best = (long)k;
			break;
		case CFG_BALANCE_LEAST_CONN:
			if (!b || load_less(be->conns[BCONN_ACTIVE].n, be->cfg->weight, b->conns[BCONN_ACTIVE].n,
			                    b->cfg->weight))
				best = (long)k;
			break;
		case CFG_BALANCE_ROUND_ROBIN:
			/* Smooth weighted round robin (as nginx): every candidate
			 * earns its weight, the richest is picked and pays the total. */
			be->wrr_current += be->cfg->weight;
			total += be->cfg->weight;
			if (!b || be->wrr_current > b->wrr_current)
				best = (long)k;
			break;
		}
	}
	if (best < 0)
		return -1;
	p->backends[best]->wrr_current -= total;
	if (p->cfg->balance == CFG_BALANCE_LEAST_CONN)
		p->rr = ((size_t)best + 1) % n; /* equal loads take turns */
	return best;
}

long pool_pick_connect(struct pool *p, ev_tstamp now)
{
	size_t n = p->n_backends;
	long best = -1;
	for (size_t i = 0; i < n; i++) {
		/* `first` walks the list in order; the others rotate for ties. */
		size_t k = p->cfg->balance == CFG_BALANCE_FIRST ? i : (p->rr + i) % n;
		const struct backend *be = p->backends[k];
		if (!pool_backend_serves(p, be) || !backend_can_connect(be, now))
			continue;
		if (be->conns[BCONN_CONNECTING].n >= p->cfg->max_connecting) {
			if (p->cfg->balance == CFG_BALANCE_FIRST)
				return -1; /* wait for it rather than spill to the next */
			continue;
		}
		if (p->cfg->balance == CFG_BALANCE_FIRST)
			return (long)k;
		/* New connections go where there are fewest per unit of weight,
		 * so the warm floor is spread as the weights say. */
		const struct backend *b = best < 0 ? NULL : p->backends[best];
		if (!b || load_less(backend_n_conns(be), be->cfg->weight, backend_n_conns(b), b->cfg->weight))
			best = (long)k;
	}
	if (best >= 0)
		p->rr = ((size_t)best + 1) % n;
	return best;
}

struct pool_counts pool_counts(const struct pool *p)
{
	struct pool_counts c = {
	    .active = p->n_conns[BCONN_ACTIVE],
	    .waiting = p->waiting.n,
	    .min_idle = p->cfg->min_idle,
	    .max_connections = p->cfg->max_connections,
	};
	size_t cutoff = pool_first_cutoff(p);
	for (size_t i = 0; i < p->n_backends; i++) {
		const struct backend *be = p->backends[i];
		if (pool_backend_preferred_at(p, be, cutoff)) {
			c.idle += be->conns[BCONN_IDLE].n;
			c.connecting += be->conns[BCONN_CONNECTING].n;
		}
	}
	c.other = p->n_conns[BCONN_IDLE] + p->n_conns[BCONN_CONNECTING] - c.idle - c.connecting +
	          p->n_conns[BCONN_RESETTING];
	return c;
}
